//! Canopy's edge agent: it receives an edge's desired state from the control plane and converges
//! the edge's workloads to it, then reports per-app status back.
//!
//! Why a crate of its own: the agent runs on edge devices, apart from the control plane, so it
//! depends only on the wire contract ([`canopy_proto`]) and on the engines it drives, never on
//! the server, the store or the catalog (`canopy-core`). What the agent does is shaped by the
//! edge: the network to the control plane may be gone for days, and the agent may restart at
//! any moment, so each pass re-reads what exists and converges again, adopting what an earlier
//! run created instead of remembering it; and what it must remember (credential, last desired
//! state, status sequence) it keeps in its data directory ([`DataDir`]).
//!
//! The pieces, from the top:
//!
//! - [`run`]: the whole agent ([`sync`] describes the loop), configured by [`AgentConfig`];
//! - [`AgentClient`]: the protocol over HTTP (enroll, long-poll, report), usable alone, e.g. by
//!   a load simulator without any container engine;
//! - [`Converger`]: what the loop needs of a driver, implemented by [`driver::EdgeDriver`],
//!   which runs containers ([`driver::DockerDriver`], over the Docker Engine API, for Docker and
//!   Podman) and virtual machines ([`driver::VmDriver`], QEMU through `canopy-vm`) side by side;
//! - [`tunnel`]: consoles and log streams the agent opens outbound on request;
//! - [`Backoff`]: the retry schedule (exponential, full jitter).

pub mod backoff;
pub mod client;
pub mod config;
pub mod converger;
pub mod driver;
pub mod error;
pub mod metrics;
pub mod state;
pub mod sync;
pub mod tunnel;

pub use backoff::Backoff;
pub use client::{AgentClient, Credential};
pub use config::AgentConfig;
pub use converger::Converger;
pub use driver::{DockerDriver, DriverError};
pub use error::AgentError;
pub use metrics::AgentMetrics;
pub use state::{AgentState, DataDir, EdgeRecord};
pub use sync::{run, run_with};
pub use tunnel::TunnelIo;
