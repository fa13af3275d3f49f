//! Drivers turn the apps of a [`DesiredState`](canopy_proto::DesiredState) into running
//! workloads and report what runs: containers ([`DockerDriver`]) and virtual machines
//! ([`VmDriver`]), both of the same shape (`apply`: one bounded, re-runnable convergence pass;
//! `observe`: status only), combined per app by [`EdgeDriver`], which the agent runs.
//!
//! The driver owns exactly what it labelled (`io.canopy.managed=true`, see [`names`]): it adopts
//! those objects after a restart, replaces them when their generation changes and removes them
//! when they are no longer desired, and never touches anything else on the engine.

mod deps;
mod docker;
mod edge;
mod error;
mod hostinfo;
pub mod names;
mod podman;
mod spec;
mod status;
mod vm;

pub use deps::Reported;
pub use docker::DockerDriver;
pub use edge::EdgeDriver;
pub use error::DriverError;
pub use hostinfo::{addresses, hostname};
pub use vm::VmDriver;
