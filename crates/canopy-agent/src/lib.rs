//! Canopy's edge agent: it receives an edge's desired state from the control plane and converges
//! the edge's workloads to it, then reports per-app status back.
//!
//! Why a crate of its own: the agent runs on edge devices, apart from the control plane, so it
//! depends only on the wire contract ([`canopy_proto`]) and on the engines it drives, never on
//! the server, the store or the catalog (`canopy-core`). What the agent does is shaped by the
//! edge: the network to the control plane may be gone for days, and the agent may restart at
//! any moment, so each pass re-reads what exists and converges again, adopting what an earlier
//! run created instead of remembering it.
//!
//! For now this is the container driver ([`driver::DockerDriver`], over the Docker Engine API,
//! for Docker and Podman); the sync loop and the command line come later.

pub mod driver;

pub use driver::{DockerDriver, DriverError};
