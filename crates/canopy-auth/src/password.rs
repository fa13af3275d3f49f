//! Password hashing for Canopy's local accounts.
//!
//! Operators who do not come through an OIDC provider log in with a password.
//! We only ever store an argon2id PHC string (algorithm, parameters, random
//! salt and hash in one self-describing string), so parameters can be raised
//! later without invalidating existing hashes.
//!
//! Hashing is deliberately slow and memory-hard (19 MiB per hash), which makes
//! it the most expensive thing an anonymous caller can ask of the server. So:
//!
//! - [`Hasher`] bounds how many hashes run at once in the process (a small
//!   semaphore, acquired asynchronously: a request abandoned while it waits
//!   costs nothing) and runs each on the blocking pool. Peak memory for hashing
//!   is therefore `permits × 19 MiB`, whatever the number of callers.
//! - Each hash gets its own work area, reserved a little larger than glibc's
//!   largest dynamic mmap threshold (32 MiB on 64-bit). glibc raises its mmap
//!   threshold to the size of any mmapped block that is freed, up to that
//!   maximum; a freed 19 MiB block would make the next ones come from the
//!   heap, where they stay after use (arenas are trimmed rarely). A 33 MiB
//!   reservation is always mmapped and always unmapped when freed, so the
//!   memory goes back to the system as soon as a hash ends; the part beyond
//!   19 MiB is never touched and never becomes resident.
//!
//! The free functions are synchronous and slow: call them from the blocking
//! pool, or use [`Hasher`].

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::AuthError;

/// Shortest password [`check_password_policy`] accepts, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password [`check_password_policy`] accepts, in characters.
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// Largest memory cost a stored hash may ask for (KiB); a hash asking for more
/// does not verify (Canopy writes 19 MiB ones).
pub const MAX_MEMORY_KIB: u32 = 256 * 1024;

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

/// Blocks (1 KiB each) reserved for any work area: 32 MiB and 64 KiB, just
/// above glibc's `DEFAULT_MMAP_THRESHOLD_MAX` (see the module doc).
const RESERVED_BLOCKS: usize = 32 * 1024 + 64;

/// A zeroed work area of `blocks` blocks inside a reservation of at least
/// [`RESERVED_BLOCKS`]: only the first `blocks` are touched.
fn work_area(blocks: usize) -> Vec<Block> {
    let mut area = Vec::with_capacity(blocks.max(RESERVED_BLOCKS));
    area.resize(blocks, Block::new());
    area
}

/// Hashes a password with argon2id ([`HashParams::OWASP`]) and a random salt.
/// Returns a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    hash_password_with(password, HashParams::OWASP)
}

/// [`hash_password`] with explicit cost parameters.
pub fn hash_password_with(password: &str, params: HashParams) -> Result<String, AuthError> {
    let failed = |e: &dyn std::fmt::Display| AuthError::Hashing(e.to_string());
    let params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(|e| failed(&e))?;
    let salt = argon2::password_hash::try_generate_salt().map_err(|e| failed(&e))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let mut area = work_area(params.block_count());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut area[..])
        .map_err(|e| failed(&e))?;
    drop(area);
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| failed(&e))?),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Checks a password against a stored PHC string, in constant time with
/// respect to the hash. Any malformed or non-argon2 hash (or one asking for
/// more than [`MAX_MEMORY_KIB`]) yields `false`. The cost parameters are taken
/// from the PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    verify(password, phc).unwrap_or(false)
}

fn verify(password: &str, phc: &str) -> Option<bool> {
    let hash = PasswordHash::new(phc).ok()?;
    let algorithm = Algorithm::try_from(hash.algorithm.as_str()).ok()?;
    let version = match hash.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(&hash).ok()?;
    if params.m_cost() > MAX_MEMORY_KIB {
        return None;
    }
    let (salt, expected) = (hash.salt?, hash.hash?);
    let mut out = vec![0u8; expected.len()];
    let mut area = work_area(params.block_count());
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut area[..])
        .ok()?;
    drop(area);
    // `Output`'s equality is constant-time.
    Some(Output::new(&out).ok()? == expected)
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

/// Runs password hashes for an async server, at most `permits` at once (see
/// the module doc). Cheap to clone; clones share the permits.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<tokio::sync::Semaphore>,
    concurrency: usize,
    params: HashParams,
    max_wait: Duration,
    /// A hash of a random password with `params`: unknown users are checked
    /// against it, so they cost what known ones do.
    dummy: Arc<tokio::sync::OnceCell<String>>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("concurrency", &self.concurrency)
            .field("params", &self.params)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// How long a hash waits for a permit before [`AuthError::Busy`].
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(10);

    /// At most `concurrency` (at least 1) hashes at once with `params`.
    pub fn new(concurrency: usize, params: HashParams) -> Hasher {
        let concurrency = concurrency.max(1);
        Hasher {
            permits: Arc::new(tokio::sync::Semaphore::new(concurrency)),
            concurrency,
            params,
            max_wait: Self::DEFAULT_MAX_WAIT,
            dummy: Default::default(),
        }
    }

    /// Waits at most `max_wait` for a free permit before [`AuthError::Busy`].
    pub fn with_max_wait(mut self, max_wait: Duration) -> Hasher {
        self.max_wait = max_wait;
        self
    }

    /// The default number of concurrent hashes: half the cores, 1 to 4.
    pub fn default_concurrency() -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / 2).clamp(1, 4)
    }

    /// How many hashes may run at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The cost parameters of new hashes.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// Hashes a new password (the policy is not checked here).
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        let params = self.params;
        self.run(move || hash_password_with(&password, params))
            .await?
    }

    /// Checks `password` against `phc`; with `None` (an unknown user, or one
    /// without a password) spends the same work on a dummy hash and answers
    /// `false`.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, AuthError> {
        let (phc, real) = match phc {
            Some(h) => (h, true),
            None => (self.dummy().await?, false),
        };
        let ok = self.run(move || verify_password(&password, &phc)).await?;
        Ok(ok && real)
    }

    async fn dummy(&self) -> Result<String, AuthError> {
        self.dummy
            .get_or_try_init(|| async {
                let secret = crate::token::generate(crate::token::TokenKind::Session);
                let params = self.params;
                self.run(move || hash_password_with(&secret, params))
                    .await?
            })
            .await
            .cloned()
    }

    /// Runs `work` on the blocking pool once a permit is free. Waiting is
    /// cancellable (dropping the future gives the place up); once started,
    /// the work holds its permit until it ends, even if nobody waits for it
    /// any more, so the bound holds for abandoned requests too.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(|_| AuthError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|e| AuthError::Hashing(e.to_string()))
    }
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
    fn hashes_interoperate_with_the_argon2_crates_own() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        // Stored by earlier Canopy versions (argon2's own hasher): still verify.
        let params = Params::new(FAST.memory_kib, FAST.iterations, FAST.parallelism, None).unwrap();
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"stored before this change")
            .unwrap()
            .to_string();
        assert!(verify_password("stored before this change", &theirs));
        assert!(!verify_password("stored before this chang", &theirs));
        // Ours verify with argon2's own verifier.
        let ours = hash_password_with("written by this version", FAST).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"written by this version", ours.as_str())
                .is_ok()
        );
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

    #[tokio::test]
    async fn the_hasher_verifies_and_spends_the_same_work_on_unknown_users() {
        let h = Hasher::new(2, FAST);
        let phc = h.hash("a password for the hasher".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{phc}");
        assert!(
            h.verify("a password for the hasher".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(
            !h.verify("another password".into(), Some(phc))
                .await
                .unwrap()
        );
        // No stored hash: false, after a real check against the dummy hash (which is a hash
        // with the same parameters, so it costs the same).
        assert!(
            !h.verify("a password for the hasher".into(), None)
                .await
                .unwrap()
        );
        let dummy = h.dummy.get().expect("the dummy hash was made");
        assert!(dummy.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{dummy}");
    }

    #[tokio::test]
    async fn hashes_beyond_the_permits_wait_and_give_up_when_it_takes_too_long() {
        let h = Hasher::new(1, FAST).with_max_wait(Duration::from_millis(50));
        // Hold the only permit, as a long hash would.
        let held = h.permits.clone().acquire_owned().await.unwrap();
        let err = h.hash("a password that waits".into()).await.unwrap_err();
        assert_eq!(err, AuthError::Busy);
        // A caller that gives up while waiting takes nothing with it.
        let waiting = tokio::spawn({
            let h = h.clone().with_max_wait(Duration::from_secs(60));
            async move { h.hash("abandoned while waiting".into()).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        drop(held);
        assert_eq!(h.permits.available_permits(), 1);
        assert!(h.hash("a password that gets its turn".into()).await.is_ok());
    }

    #[test]
    fn work_areas_are_reserved_above_the_mmap_threshold_maximum() {
        let area = work_area(HashParams::OWASP.memory_kib as usize);
        assert_eq!(area.len(), 19 * 1024);
        // Bytes reserved: more than glibc's DEFAULT_MMAP_THRESHOLD_MAX (32 MiB on 64-bit), so
        // the block is mmapped and unmapped when freed, never kept in a heap arena.
        assert!(area.capacity() * Block::SIZE > 32 * 1024 * 1024);
        // Cheap parameters do not reserve less (the same rule for every hash).
        assert!(work_area(8).capacity() >= RESERVED_BLOCKS);
    }

    #[test]
    fn hashes_asking_for_too_much_memory_do_not_verify() {
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(!verify_password("whatever it is", huge));
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
