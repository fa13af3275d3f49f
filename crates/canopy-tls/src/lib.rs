//! TLS for Canopy, in one place so the control plane, the agent and the CLI agree on it.
//!
//! Why a crate of its own: the server needs a certificate (given as files, or self-signed and
//! generated on first start), every client needs to decide whom it trusts (the system's roots,
//! a CA file, or one pinned certificate fingerprint), and the HTTP(S) accept loop needs the
//! limits that keep slow or abusive clients from exhausting the server. Keeping these together
//! means one crypto provider (rustls with *ring*, the one reqwest already uses), one fingerprint
//! format and one error type with messages that name the file at fault.
//!
//! - Server side: [`ServerTls`] says where the certificate comes from; [`load_server_config`]
//!   turns it into a rustls [`rustls::ServerConfig`] (ALPN `h2` and `http/1.1`) plus a
//!   [`CertInfo`] to log (fingerprint, expiry, subject).
//! - Client side: [`ClientTrust`] says whom to trust; [`configure`] applies it to a
//!   `reqwest::ClientBuilder`. A pinned [`Fingerprint`] accepts exactly one end-entity
//!   certificate (like SSH's known host key), which is how agents trust a self-signed server.
//! - [`serve`] / [`serve_with`]: the accept loop replacing `axum::serve`, plain HTTP (HTTP/1.1
//!   and h2c) or HTTPS (HTTP/1.1 and HTTP/2 by ALPN), with a TLS handshake timeout, a request
//!   header timeout, HTTP/2 keep-alive pings, a cap on open connections and a bounded graceful
//!   shutdown.
//!
//! Fingerprint format: `sha256:` followed by the 64 lowercase hex digits of the SHA-256 of the
//! certificate's DER encoding (what [`Fingerprint`]'s `Display` prints). [`Fingerprint::parse`]
//! also accepts the colon-separated form that `openssl x509 -fingerprint -sha256` prints
//! (`AB:CD:...`), any case, with or without the `sha256:` / `SHA256 Fingerprint=` prefix.

mod client;
mod fingerprint;
mod serve;
mod server;

use std::path::PathBuf;

pub use client::{ClientTrust, client_config, configure};
pub use fingerprint::Fingerprint;
pub use serve::{ServeOptions, serve, serve_with};
pub use server::{CertInfo, ServerTls, load_server_config};

/// Re-exported so callers can name the configuration types without depending on rustls.
pub use rustls;

/// Everything that can go wrong setting up TLS. Messages name the file involved and, where it
/// helps, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file (or directory) could not be written.
    #[error("cannot write {what} {}: {source}", path.display())]
    Write {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{what} {} is not usable: {reason}", path.display())]
    BadFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The certificate and the key do not make a usable server identity (e.g. they do not
    /// belong together).
    #[error(
        "the TLS certificate {} and key {} cannot be used together: {source}",
        cert.display(),
        key.display()
    )]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The self-signed certificate directory holds a certificate without its key.
    #[error(
        "{} exists but its private key {} is missing; restore the key, or delete the \
         certificate to generate a new one (agents and CLIs pinned to the old fingerprint must \
         then be given the new one)",
        cert.display(),
        key.display()
    )]
    MissingKey { cert: PathBuf, key: PathBuf },
    /// Generating the self-signed certificate failed.
    #[error("cannot generate a self-signed TLS certificate: {0}")]
    Generate(String),
    /// A certificate fingerprint given by the user is malformed.
    #[error(
        "invalid certificate fingerprint {input:?}: {reason} (expected sha256: followed by 64 \
         hex digits, or 32 colon-separated hex bytes)"
    )]
    Fingerprint { input: String, reason: String },
    /// rustls refused the configuration (e.g. no protocol version in common with the provider).
    #[error("TLS configuration failed: {0}")]
    Config(#[source] rustls::Error),
}
