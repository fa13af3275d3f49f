//! Whom a client (agent, CLI, test) trusts when it talks to the control plane over HTTPS.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::{Fingerprint, TlsError};

/// How a client decides that the server is the right one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClientTrust {
    /// The public web PKI roots built into the client (reqwest's defaults).
    #[default]
    System,
    /// Only the CA certificates of this PEM file (e.g. a private CA, or the server's own
    /// self-signed certificate). Host names are checked as usual.
    CaFile(PathBuf),
    /// Exactly the server certificate with this SHA-256 fingerprint, whoever signed it and
    /// whatever names or dates it carries (the pin is the trust, as with an SSH host key). The
    /// TLS handshake is still verified: the server must hold that certificate's private key.
    Pinned(Fingerprint),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `trust` (ALPN `h2`, `http/1.1`), or `None` for
/// [`ClientTrust::System`] (the HTTP client's own defaults apply).
///
/// TLS sessions are resumed: the configuration keeps rustls' in-memory session store (tickets
/// of up to 256 servers), so a client that keeps its configuration (an agent keeps its HTTP
/// client for its whole run) resumes its session when it must reconnect, instead of a full
/// handshake with the server's certificate chain.
pub fn client_config(trust: &ClientTrust) -> Result<Option<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let mut config = match trust {
        ClientTrust::System => return Ok(None),
        ClientTrust::CaFile(path) => {
            let what = "CA certificate file";
            let mut roots = rustls::RootCertStore::empty();
            for cert in crate::server::read_certs(path, what)? {
                roots.add(cert).map_err(|e| TlsError::BadFile {
                    what,
                    path: path.clone(),
                    reason: format!("a certificate in it cannot be a trust anchor ({e})"),
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        ClientTrust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: *pin,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(config))
}

/// Applies `trust` to a reqwest client builder: nothing for [`ClientTrust::System`], else a
/// preconfigured rustls configuration that trusts only the CA file's roots or only the pinned
/// certificate.
pub fn configure(
    builder: reqwest::ClientBuilder,
    trust: &ClientTrust,
) -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(match client_config(trust)? {
        None => builder,
        Some(config) => builder.use_preconfigured_tls(config),
    })
}

/// Accepts exactly the end-entity certificate whose SHA-256 is the pin.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Why a pinned client refused the server.
#[derive(Debug, thiserror::Error)]
#[error(
    "the server's certificate has fingerprint {presented}, not the pinned {pinned} \
     (check --server-fingerprint / CANOPY_SERVER_FINGERPRINT against the fingerprint the server \
     printed at startup)"
)]
struct PinMismatch {
    presented: Fingerprint,
    pinned: Fingerprint,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of_der(end_entity);
        if presented == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::Other(rustls::OtherError(Arc::new(
                PinMismatch {
                    presented,
                    pinned: self.pin,
                },
            ))))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
