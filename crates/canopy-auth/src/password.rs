//! Password hashing for Canopy's local accounts.
//!
//! Operators who do not come through an OIDC provider log in with a password.
//! We only ever store an argon2id PHC string (algorithm, parameters, random
//! salt and hash in one self-describing string), so parameters can be raised
//! later without invalidating existing hashes. Hashing is deliberately slow
//! and memory-hard: call these functions from `spawn_blocking` in async code.

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::AuthError;

/// Shortest password [`check_password_policy`] accepts, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password [`check_password_policy`] accepts, in characters.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Degree of parallelism (lanes).
    pub parallelism: u32,
}

impl HashParams {
    /// OWASP's recommendation for argon2id: 19 MiB, 2 passes, 1 lane.
    pub const OWASP: HashParams = HashParams {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    /// Cheapest parameters argon2 allows. For tests only: never for
    /// passwords that protect anything.
    pub const INSECURE_FAST_FOR_TESTS: HashParams = HashParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams::OWASP
    }
}

/// Hashes a password with argon2id ([`HashParams::OWASP`]) and a random salt.
/// Returns a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    hash_password_with(password, HashParams::OWASP)
}

/// [`hash_password`] with explicit cost parameters.
pub fn hash_password_with(password: &str, params: HashParams) -> Result<String, AuthError> {
    let params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(|e| AuthError::Hashing(e.to_string()))?;
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .map_err(|e| AuthError::Hashing(e.to_string()))?;
    Ok(hash.to_string())
}

/// Checks a password against a stored PHC string, in constant time with
/// respect to the hash. Any malformed or non-argon2 hash yields `false`.
/// The cost parameters are taken from the PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// The policy for new passwords: 12 to 1024 characters. No composition rules
/// (NIST SP 800-63B): length is what matters.
pub fn check_password_policy(password: &str) -> Result<(), AuthError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(AuthError::WeakPassword("must be at least 12 characters"));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(AuthError::WeakPassword("must be at most 1024 characters"));
    }
    if password.trim().is_empty() {
        return Err(AuthError::WeakPassword("must not be only whitespace"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: HashParams = HashParams::INSECURE_FAST_FOR_TESTS;

    #[test]
    fn roundtrip() {
        let phc = hash_password_with("correct horse battery staple", FAST).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("correct horse battery stapler", &phc));
        assert!(!verify_password("", &phc));
    }

    #[test]
    fn salts_are_random() {
        let a = hash_password_with("same password here", FAST).unwrap();
        let b = hash_password_with("same password here", FAST).unwrap();
        assert_ne!(a, b);
        assert!(verify_password("same password here", &a));
        assert!(verify_password("same password here", &b));
    }

    #[test]
    fn default_params_are_owasp() {
        let phc = hash_password("a reasonably long password").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("a reasonably long password", &phc));
    }

    #[test]
    fn malformed_hashes_are_false() {
        let phc = hash_password_with("some password 123", FAST).unwrap();
        for bad in [
            "",
            "not a hash",
            "$argon2id$",
            "$argon2id$v=19$m=8,t=1,p=1$",
            &phc[..phc.len() - 4],
            &phc.replace("argon2id", "scrypt"),
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        ] {
            assert!(!verify_password("some password 123", bad), "{bad}");
        }
    }

    #[test]
    fn policy() {
        assert!(check_password_policy("short").is_err());
        assert!(check_password_policy("elevenchars").is_err());
        assert!(check_password_policy("twelve chars").is_ok());
        // Characters, not bytes.
        assert!(check_password_policy("ééééééééééé").is_err());
        assert!(check_password_policy("éééééééééééé").is_ok());
        assert!(check_password_policy(&"x".repeat(1024)).is_ok());
        assert!(check_password_policy(&"x".repeat(1025)).is_err());
        assert!(check_password_policy(&" ".repeat(20)).is_err());
        let err = check_password_policy("hunter2").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }
}
