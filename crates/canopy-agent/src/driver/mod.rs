//! Drivers turn the apps of a [`DesiredState`](canopy_proto::DesiredState) into running
//! workloads and report what runs. Containers only for now ([`DockerDriver`]); virtual machines
//! come later behind the same shape: `apply` (one bounded, re-runnable convergence pass),
//! `observe` (status only) and `remove_deployment`.
//!
//! The driver owns exactly what it labelled (`io.canopy.managed=true`, see [`names`]): it adopts
//! those objects after a restart, replaces them when their generation changes and removes them
//! when they are no longer desired, and never touches anything else on the engine.

mod deps;
mod docker;
mod error;
pub mod names;
mod podman;
mod spec;
mod status;

pub use docker::DockerDriver;
pub use error::DriverError;
