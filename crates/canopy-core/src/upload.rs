//! The YAML package format (reference `catalog-upload-schema.yaml`; Canopy's own extension
//! keys, when they come, extend that schema): reading uploads (loose files, multi-document YAML,
//! tar.gz bundles) into catalog entities, and writing a package back out as a tar.gz that
//! uploads unchanged.
//!
//! Untrusted input is bounded here: file and total sizes, tar entry paths and types, decompressed
//! size, UTF-8, YAML nesting and aliases (see [`crate::yaml`]).
//!
//! Reading an upload ([`parse_upload`]) goes through these steps, each in its own module:
//! 1. `archive`: split the upload into file sets (all loose files form one, each tarball is
//!    extracted in memory into its own), enforcing [`MAX_FILE_BYTES`], [`MAX_TOTAL_BYTES`] and
//!    [`MAX_TAR_ENTRIES`] and refusing links, devices, absolute paths and `..`.
//! 2. `tree`: parse every YAML file (every document) through [`crate::yaml`]'s limits into a
//!    tree that remembers each scalar's source text. Documents with `specSchema` are entities;
//!    the others (Helm values files, even templated ones) are not.
//! 3. `schema`: accept the loader's documented key aliases, coerce numbers to strings where the
//!    schema wants text, refuse unknown keys, and validate against the reference JSON Schema.
//! 4. `format` + `load`: map the YAML spelling onto the catalog structs, read profile values
//!    from the files named by `valuesFileName`, apply the entity's [`crate::validate`] rules,
//!    refuse keys defined twice in one set, and sort each set into apply order.
//!
//! Every problem is collected (not only the first), each naming the file, the tar entry, the
//! document (in multi-document files) and the field where known. [`export_package`] (module
//! `export`) is the inverse for one deployment package.

use crate::catalog::{Application, Artifact, DeploymentPackage, Registry};

mod archive;
mod export;
mod format;
mod load;
mod schema;
mod tree;

pub use export::{export_package, export_packages};

/// Largest loose file, and largest file extracted from a tarball: 10 MiB. Values files, the
/// biggest legitimate content, are capped at 4,000,000 bytes by the catalog anyway.
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// Most bytes one upload may hold after decompression (loose files plus everything inflated
/// from tarballs, headers and padding included): 64 MiB. Inflating stops as soon as this is
/// passed, so a gzip bomb costs at most this much work and memory.
pub const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;
/// Most entries (files and directories) in one tarball.
pub const MAX_TAR_ENTRIES: usize = 1000;
/// Most messages an [`UploadError`] carries; the rest are counted in a last message.
pub const MAX_ERROR_MESSAGES: usize = 100;

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
    /// Which file defined each entity, keyed `registry NAME`, `application NAME:VERSION`,
    /// `artifact NAME`, `deployment-package NAME:VERSION` (for error messages at apply time).
    pub sources: std::collections::BTreeMap<String, String>,
}

/// Everything wrong with an upload; each message names the file (and document and field where
/// known). Nothing of an upload with errors is applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", messages.join("; "))]
pub struct UploadError {
    pub messages: Vec<String>,
}

/// Reads an upload into file sets: at most one for the loose files (first), then one per
/// tarball in upload order. Loose files are all read as YAML; in tarballs, `.yaml`/`.yml`
/// files are (other files can still be named as values files). Returns every problem found
/// if there is any.
pub fn parse_upload(files: &[UploadFile]) -> Result<Vec<FileSet>, UploadError> {
    // YAML nesting is capped (crate::yaml::MAX_DEPTH), but deserializing a document that deep
    // takes well over a megabyte of stack in a debug build, more than a caller's thread (an
    // async runtime worker, a test thread: 2 MiB) can be assumed to have left. So the work
    // runs on a thread of its own with a known stack; the caller just waits for it.
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("canopy-upload".into())
            .stack_size(PARSE_STACK_BYTES)
            .spawn_scoped(scope, || parse_files(files));
        match worker {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(UploadError {
                    messages: vec!["internal error: the upload parser failed".into()],
                })
            }),
            // No thread to be had: parse here, on the caller's stack.
            Err(_) => parse_files(files),
        }
    })
}

/// Stack of the parsing thread (reserved address space; only what is used is committed).
const PARSE_STACK_BYTES: usize = 32 * 1024 * 1024;

fn parse_files(files: &[UploadFile]) -> Result<Vec<FileSet>, UploadError> {
    let mut errors = Vec::new();
    let raw = archive::collect(files, &mut errors);
    let sets: Vec<FileSet> = raw.iter().map(|s| load::load_set(s, &mut errors)).collect();
    if errors.is_empty() {
        return Ok(sets);
    }
    if errors.len() > MAX_ERROR_MESSAGES {
        let more = errors.len() - MAX_ERROR_MESSAGES;
        errors.truncate(MAX_ERROR_MESSAGES);
        errors.push(format!("... and {more} more errors"));
    }
    Err(UploadError { messages: errors })
}
