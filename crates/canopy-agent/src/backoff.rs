//! Exponential backoff with full jitter, for retrying the control plane.
//!
//! Why full jitter (a delay drawn uniformly between zero and the current ceiling) rather than a
//! fixed doubling: when a control plane restarts, every edge of the fleet lost it at the same
//! moment; spreading their retries over the whole window keeps them from arriving together.

use std::time::Duration;

use rand::{Rng, RngExt};

/// The protocol's retry schedule: a ceiling that starts at `initial`, doubles after every
/// failure up to `max`, and goes back to `initial` after a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Default for Backoff {
    /// 1 s doubling to 60 s, as `docs/AGENT-PROTOCOL.md` says.
    fn default() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Backoff {
    /// A schedule from `initial` doubling to `max` (`max` is raised to `initial` if smaller).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            ceiling: initial,
        }
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// The delay before the next retry (uniform in `[0, ceiling]`), doubling the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::rng())
    }

    /// [`next_delay`](Self::next_delay) with a given random source (for tests).
    pub fn next_delay_with<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = ceiling.saturating_mul(2).min(self.max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }

    /// The delay before retrying after `error`: [`next_delay`](Self::next_delay), but never
    /// shorter than the control plane's `Retry-After`.
    pub fn delay_for(&mut self, error: &crate::error::AgentError) -> Duration {
        let delay = self.next_delay();
        error.retry_after().map_or(delay, |wait| delay.max(wait))
    }

    /// A delay uniform in `[0, initial]`, leaving the ceiling as it is: for trying another
    /// address of the control plane right after one failed.
    pub fn initial_delay(&self) -> Duration {
        let nanos = u64::try_from(self.initial.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// Back to the initial ceiling, after a success.
    pub fn reset(&mut self) {
        self.ceiling = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn the_ceiling_doubles_to_the_maximum_and_resets() {
        let mut b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            ceilings.push(b.ceiling().as_secs());
            b.next_delay_with(&mut rng);
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn delays_are_full_jitter_below_the_ceiling() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut delays = Vec::new();
        for _ in 0..200 {
            // At the top of the schedule: the ceiling stays at 60 s.
            let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
            let d = b.next_delay_with(&mut rng);
            assert!(d <= Duration::from_secs(60), "{d:?}");
            delays.push(d);
        }
        let mut distinct = delays.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 190, "delays are not jittered: {delays:?}");
        // Spread over the whole window, not bunched near the ceiling.
        let below_half = delays.iter().filter(|d| d.as_secs() < 30).count();
        assert!(
            (60..=140).contains(&below_half),
            "{below_half} of 200 below 30 s"
        );
        let mean = delays.iter().map(Duration::as_secs_f64).sum::<f64>() / 200.0;
        assert!((20.0..40.0).contains(&mean), "mean {mean}");
    }

    #[test]
    fn delays_grow_with_the_ceiling() {
        // Each delay is bounded by its own ceiling: 1, 2, 4, ... s.
        let mut b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(1);
        for bound in [1, 2, 4, 8, 16, 32, 60, 60] {
            let d = b.next_delay_with(&mut rng);
            assert!(d <= Duration::from_secs(bound), "{d:?} > {bound} s");
        }
        // With the operating system's randomness too.
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(40));
        for bound in [10, 20, 40, 40] {
            assert!(b.next_delay() <= Duration::from_millis(bound));
        }
    }

    #[test]
    fn a_maximum_below_the_start_is_the_start() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        b.next_delay();
        assert_eq!(b.ceiling(), Duration::from_secs(5));
    }

    #[test]
    fn retry_after_is_a_floor_of_the_delay() {
        use crate::error::AgentError;
        let throttled = AgentError::Throttled {
            request: "status report",
            reason: "the control plane answered 429".into(),
            retry_after: Duration::from_secs(7),
        };
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..5 {
            assert!(b.delay_for(&throttled) >= Duration::from_secs(7));
        }
        let transient = AgentError::Transient {
            request: "status report",
            reason: "connection refused".into(),
        };
        assert!(b.delay_for(&transient) <= Duration::from_secs(1));
    }
}
