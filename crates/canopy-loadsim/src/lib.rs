//! A load simulator for the Canopy fleet: up to [`config::MAX_EDGES`] simulated edges that
//! speak the real agent protocol (they are [`canopy_agent::AgentClient`]s: enroll, long-poll
//! the desired state, report status) against a real control plane, and the measurements of
//! what that fleet costs the server (`docs/BENCHMARKS.md`, "Fleet").
//!
//! Why a separate process for the server: its CPU time, memory and sockets must be measured
//! apart from the simulator's, and one process can hold only about 19,990 sockets here. By
//! default [`server::ServerChild`] starts `canopy server` as a child on a free loopback port
//! over a temporary data directory; `--server URL` (loopback only) uses a running one instead.
//!
//! Why HTTP/2 by default: 10,000 parked long-polls over HTTP/1.1 need 10,000 sockets in each
//! process, plus one more per concurrent status report. Over HTTP/2 (cleartext, prior
//! knowledge) a bounded number of connections each multiplexes [`config::SimConfig`]'s
//! `edges_per_connection` edges, so sockets grow with N / that number. Real agents connect
//! otherwise (HTTPS, one long-lived connection each): `--tls-agents N` runs the first N edges
//! that way and counts the bytes their sockets carry while idle ([`sockets`]).
//!
//! What is deployed is the native `web-demo` example, or a Helm-chart package around a chart
//! of the caller's registry ([`package`]).
//!
//! Everything is bounded: the number of edges, every phase (a timeout each), and the addresses
//! (loopback only, checked by [`config::check_loopback`]). Nothing here runs a container.
//!
//! This crate talks to the server over HTTP only: it must not depend on `canopy-server` or
//! the store (the smoke test uses the in-process test harness, as a dev-dependency).

pub mod admin;
pub mod config;
pub mod error;
pub mod fleet;
pub mod lists;
pub mod package;
pub mod procfs;
pub mod report;
pub mod run;
pub mod server;
pub mod sockets;

pub use config::SimConfig;
pub use error::SimError;
pub use report::Report;
pub use run::run;
