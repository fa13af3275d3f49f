//! The one error type of this crate. Every variant names what it is about (the VM, the file, the
//! URL, the checksum) so a message read in an edge's log or a deployment status needs no other
//! context; underlying errors go in `#[source]`, not into the message.

use std::path::PathBuf;

/// What went wrong while caching an image or running a virtual machine.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The spec cannot be run as written.
    #[error("virtual machine {name}: invalid spec: {reason}")]
    InvalidSpec { name: String, reason: String },

    /// No VM of that name exists under this host's directory.
    #[error("virtual machine {name} does not exist")]
    NotFound { name: String },

    /// The VM asks for more memory than the host has available now.
    #[error(
        "virtual machine {name} asks for {requested_mib} MiB of memory but the host has only \
         {available_mib} MiB available (MemAvailable in /proc/meminfo)"
    )]
    InsufficientMemory {
        name: String,
        requested_mib: u64,
        available_mib: u64,
    },

    /// A checksum is not 64 lowercase hexadecimal digits.
    #[error("image {url}: sha256 {sha256:?} is not 64 hexadecimal digits")]
    InvalidChecksum { url: String, sha256: String },

    /// Only `http`, `https` and `file` URLs can be fetched.
    #[error("image {url}: unsupported URL (use http://, https:// or file:///absolute/path)")]
    UnsupportedUrl { url: String },

    /// The download failed (connection refused, DNS, timeout, broken transfer).
    #[error("image {url}: download failed")]
    Download {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The server answered with a non-success status.
    #[error("image {url}: server answered {status}")]
    HttpStatus { url: String, status: u16 },

    /// The content does not have the checksum the spec promised; nothing was kept.
    #[error("image {url}: sha256 mismatch: expected {expected}, got {actual} (download discarded)")]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },

    /// The image is larger than the cache accepts; nothing was kept.
    #[error(
        "image {url}: larger than the image size cap of {limit_bytes} bytes (download discarded)"
    )]
    TooLarge { url: String, limit_bytes: u64 },

    /// A file operation failed.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An external tool (qemu-img, genisoimage, ...) is missing or failed.
    #[error("virtual machine {name}: {tool} failed: {detail}")]
    Tool {
        name: String,
        tool: String,
        detail: String,
    },

    /// QEMU did not start; `log` is the end of what it printed.
    #[error("virtual machine {name}: qemu did not start: {log}")]
    QemuStart { name: String, log: String },

    /// The QMP conversation failed (socket missing, no answer, error reply).
    #[error("virtual machine {name}: QMP {command}: {detail}")]
    Qmp {
        name: String,
        command: String,
        detail: String,
    },

    /// The VM did not stop, even after `quit` and SIGKILL.
    #[error("virtual machine {name}: qemu process {pid} did not exit")]
    StopFailed { name: String, pid: i32 },
}

impl VmError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| VmError::Io {
            action,
            path,
            source,
        }
    }
}
