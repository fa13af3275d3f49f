//! The crate's single error type.
//!
//! It exists so callers (the HTTP server) can map every credential failure to
//! a response with one `match`. Display messages are written to be safe to log
//! and to return to clients: they never contain a token, password or key.

/// Why a credential was not accepted (or could not be checked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is longer than the 16 KiB we are willing to parse.
    #[error("token is too large")]
    TooLarge,
    /// The token is not a well-formed JWT, or lacks a claim we need.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token's `alg` is not one we accept (e.g. `none`, any HS*).
    #[error("unsupported token algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The token's `alg` does not fit the type of the key it names.
    #[error("token algorithm does not match the signing key")]
    AlgorithmMismatch,
    /// The signature does not verify against the provider's key.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is in the past (beyond the allowed leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the allowed leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iss` is missing or is not the configured issuer.
    #[error("token was issued by an unexpected issuer")]
    WrongIssuer,
    /// `aud` is missing or does not contain the configured audience.
    #[error("token is not intended for this audience")]
    WrongAudience,
    /// An ID token's `nonce` is missing or is not the one this sign-in sent
    /// (a replayed or substituted ID token).
    #[error("the ID token's nonce does not match this sign-in")]
    NonceMismatch,
    /// The token names a signing key the provider does not publish.
    #[error("unknown signing key")]
    UnknownKey,
    /// The identity provider (discovery document or JWKS) could not be
    /// reached or returned garbage. Not the caller's fault: map to 503.
    #[error("identity provider unavailable: {0}")]
    ProviderUnavailable(String),
    /// A new password does not meet the password policy.
    #[error("password rejected: {0}")]
    WeakPassword(&'static str),
    /// Hashing a password failed (bad parameters; not the password's fault).
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// Every password-hashing slot stayed taken for the whole wait (the server
    /// is under a login flood): not the caller's fault, map to 503.
    #[error("too many password checks at once; try again shortly")]
    Busy,
}

impl AuthError {
    /// True when the credential could not be checked because the identity
    /// provider is unavailable (a server-side problem, e.g. HTTP 503), as
    /// opposed to a credential that was checked and refused (HTTP 401).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuthError::ProviderUnavailable(_))
    }
}
