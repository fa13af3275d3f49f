//! What failed to start, remembered between passes (STYLE.md's "remember what failed").
//!
//! A container whose create or start failed is removed at once (see `DockerDriver::start_fresh`):
//! what the engine made of it keeps the settings it was created with (runtime, ulimits, ports),
//! so starting it again would never pick up a fix to the host, and a half-set-up leftover could
//! itself become the next failure's cause. Without the container, the engine no longer says
//! why the app is down; this memory does, per container and generation, and paces the retries:
//! the next attempt creates the container afresh from the current spec after a delay doubling
//! from [`FIRST_RETRY`] to [`MAX_RETRY`]. A new generation (a new spec) is tried at once.
//!
//! In memory only: an agent restart tries again at once, which is what a restart is for.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Delay before the first retry of a container that failed.
pub(super) const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest delay between two attempts.
pub(super) const MAX_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Failure {
    /// The generation (`spec_hash`) that failed; another one is tried at once.
    generation: String,
    attempts: u32,
    retry_at: Instant,
    /// The cause, as reported (with the time of the next attempt).
    message: String,
}

/// Failed containers by engine name.
#[derive(Debug, Default)]
pub(super) struct Failures(Mutex<HashMap<String, Failure>>);

impl Failures {
    /// Records a failed attempt of `generation` of container `name`; returns the message to
    /// report: `cause` and when the next attempt is.
    pub(super) fn record(&self, name: &str, generation: &str, cause: &str) -> String {
        let mut map = self.lock();
        let attempts = match map.get(name) {
            Some(f) if f.generation == generation => f.attempts.saturating_add(1),
            _ => 1,
        };
        let delay = FIRST_RETRY
            .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(16)))
            .min(MAX_RETRY);
        let message = format!(
            "{cause} (attempt {attempts}; next in {} s)",
            delay.as_secs()
        );
        map.insert(
            name.to_string(),
            Failure {
                generation: generation.to_string(),
                attempts,
                retry_at: Instant::now() + delay,
                message: message.clone(),
            },
        );
        message
    }

    /// The reported message while the next attempt of `generation` of `name` is not due yet.
    pub(super) fn backing_off(&self, name: &str, generation: &str) -> Option<String> {
        let map = self.lock();
        let f = map.get(name)?;
        (f.generation == generation && Instant::now() < f.retry_at).then(|| f.message.clone())
    }

    /// The last failure of `generation` of `name`, due or not (for passes that only observe).
    pub(super) fn last(&self, name: &str, generation: &str) -> Option<String> {
        let map = self.lock();
        let f = map.get(name)?;
        (f.generation == generation).then(|| f.message.clone())
    }

    /// `name` started: nothing to remember.
    pub(super) fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Forgets the containers for which `keep` is false: those no longer desired (bounds the
    /// memory).
    pub(super) fn retain_where(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|name, _| keep(name));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failure>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_per_generation_and_a_new_spec_goes_at_once() {
        let f = Failures::default();
        assert_eq!(f.backing_off("c", "g1"), None);
        let first = f.record("c", "g1", "cannot start container c: boom");
        assert!(
            first.contains("boom") && first.contains("attempt 1; next in 2 s"),
            "{first}"
        );
        assert_eq!(f.backing_off("c", "g1").as_deref(), Some(first.as_str()));
        assert_eq!(
            f.backing_off("c", "g2"),
            None,
            "a new spec is tried at once"
        );
        let second = f.record("c", "g1", "boom");
        assert!(second.contains("attempt 2; next in 4 s"), "{second}");
        for _ in 0..10 {
            f.record("c", "g1", "boom");
        }
        let capped = f.record("c", "g1", "boom");
        assert!(capped.contains("next in 60 s"), "{capped}");
        assert_eq!(f.last("c", "g1").as_deref(), Some(capped.as_str()));
        let other = f.record("c", "g2", "boom");
        assert!(other.contains("attempt 1;"), "{other}");
        f.forget("c");
        assert_eq!(f.last("c", "g2"), None);
        f.record("a", "g", "x");
        f.record("b", "g", "x");
        f.retain_where(|name| name == "a");
        assert!(f.last("a", "g").is_some() && f.last("b", "g").is_none());
    }
}
