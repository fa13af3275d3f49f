//! Canopy's answer to "who is this caller?".
//!
//! This crate verifies credentials and nothing else: it turns a bearer JWT from
//! an external OpenID Connect provider into [`oidc::Claims`], checks passwords
//! against argon2id hashes, and mints/parses the opaque tokens the server
//! issues itself. Deciding what a verified caller may do (authorization) is
//! deliberately left to the server.
//!
//! The `test-issuer` cargo feature adds `testing::TestIssuer`, a real OIDC
//! token issuer on loopback for other crates' tests.

mod error;
pub mod oidc;
pub mod oidc_login;
pub mod password;
#[cfg(feature = "test-issuer")]
pub mod testing;
pub mod token;

pub use error::AuthError;
pub use oidc::{Claims, OidcConfig, OidcVerifier};
