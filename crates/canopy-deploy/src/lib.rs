//! Canopy's deployment rules, shared by the server's deployment manager and its tests.
//!
//! Why a crate of its own: what a deployment *means* — which edges it targets, what each edge
//! must run, and how the statuses edges report fold into one deployment state — is pure logic
//! over the catalog and the wire contract. Keeping it free of I/O makes the state machine and the
//! targeting rules testable in isolation, and keeps the server's deployment manager a thin
//! orchestration of store, fleet hub and these functions.
//!
//! - [`error`]: [`DeployError`], the one error type (a kind and a message naming the field).
//! - [`model`]: the reference `deployment.v1` REST types (JSON field names of
//!   `deployment-manager.yaml`).
//! - [`validate`]: request rules (field formats, targets, override values).
//! - [`target`]: label-set targeting (AND within a set, OR across sets) and per-edge matching.
//! - [`render`]: a deployment package + profile + overrides → the rendered apps every targeted
//!   edge runs ([`canopy_proto::DeploymentInstance`]).
//! - [`helm`]: what a Helm application's render depends on ([`helm::HelmRequest`]), its
//!   result, the project policy on translated workloads.
//! - [`status`]: per-app edge statuses → per-cluster status → deployment state (section 6 of the
//!   reference: the state machine, UNKNOWN and NO_TARGET_CLUSTERS timing, summaries).

pub mod error;
pub mod helm;
pub mod model;
pub mod render;
pub mod status;
pub mod target;
pub mod validate;

pub use error::{DeployError, ErrorKind};
