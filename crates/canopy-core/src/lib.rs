//! Canopy's domain: catalog entities and their rules, list query parsing, the YAML upload format
//! and the export format.
//!
//! This crate is pure: no async runtime, no network, no database. Everything here can be tested
//! with plain unit and property tests, and every other crate builds on it (never the reverse).

pub mod catalog;
pub mod error;
pub mod kv;
pub mod list;
pub mod names;
pub mod policy;
pub mod template;
pub mod upload;
pub mod validate;
pub mod yaml;

pub use error::{Invalid, ResourceType};
