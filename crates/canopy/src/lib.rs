//! The `canopy` binary as a library: the command line lives in [`cli`] so that tests can drive
//! it in-process (against a test server) exactly as a user would, and `main.rs` stays a
//! one-line wrapper.
//!
//! This crate is the outermost layer: it may use every other Canopy crate, and none uses it.

pub mod cli;
