//! The YAML package format (reference `catalog-upload-schema.yaml` plus Canopy's extension keys):
//! reading uploads (loose files, multi-document YAML, tar.gz bundles) into catalog entities, and
//! writing a package back out as a tar.gz that uploads unchanged.
//!
//! Untrusted input is bounded here: file and total sizes, tar entry paths and types, decompressed
//! size, UTF-8, YAML nesting and aliases (see [`crate::yaml`]).

use crate::catalog::{Application, Artifact, DeploymentPackage, Registry};

/// One uploaded file as received (a YAML file or a `.tar.gz`/`.tgz` bundle).
#[derive(Debug, Clone)]
pub struct UploadFile {
    pub name: String,
    pub content: Vec<u8>,
}

/// The entities of one file set, in the order they must be applied: registries, then
/// applications and artifacts, then deployment packages (each group sorted by key).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileSet {
    pub registries: Vec<Registry>,
    pub applications: Vec<Application>,
    pub artifacts: Vec<Artifact>,
    pub packages: Vec<DeploymentPackage>,
}

/// Everything wrong with an upload; each message names the file (and document and field where
/// known). Nothing of an upload with errors is applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", messages.join("; "))]
pub struct UploadError {
    pub messages: Vec<String>,
}
