//! Jobs: what to run next, decided from the attempts that exist. Pure.
//!
//! A Job's state lives in its pods: each attempt is a pod (`<job>-<suffix>`, slot = attempt
//! number) that is kept after it ends, with its exit code, until the Job's spec changes or the
//! app is removed. So an agent restart knows exactly how far the Job got, a Job that succeeded
//! is never run again, and a changed Job (a new template hash: new pods) runs again.
//!
//! Rules (Kubernetes' defaults are filled in by the control plane): at most `parallelism`
//! attempts run at once and no more than the completions still missing; a failed attempt is
//! retried after 10 s doubling to 6 min (Kubernetes' pod failure backoff); more than
//! `backoffLimit` failures, or running longer than `activeDeadlineSeconds`, fails the Job and
//! stops what still runs. `restartPolicy: OnFailure` retries as a new attempt too (the pod is
//! not restarted in place), counted against `backoffLimit` the same way.

use std::time::Duration;

use canopy_proto::pods::JobSpec;
use time::OffsetDateTime;

/// First delay after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// Longest delay between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(360);

/// How an attempt ended, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    Active,
    Succeeded,
    Failed,
}

/// One attempt (pod) of a Job, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub slot: u32,
    pub state: AttemptState,
    pub finished_at: Option<OffsetDateTime>,
    pub exit_code: Option<i64>,
}

/// Where the Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Active,
    Complete,
    /// With the reason (`BackoffLimitExceeded: ...`, `DeadlineExceeded: ...`).
    Failed(String),
}

/// What to do now.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Attempts (slots) to create now.
    pub start: Vec<u32>,
    /// Stop the attempts still running (the Job failed).
    pub stop_active: bool,
    /// When the next attempt may start, while backing off.
    pub retry_at: Option<OffsetDateTime>,
    /// One line for the app's status.
    pub summary: String,
}

/// Decides for Job `name` (see the module doc). `started` is when its first attempt was
/// created (none yet: not started).
pub fn decide(
    name: &str,
    spec: &JobSpec,
    attempts: &[Attempt],
    started: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Decision {
    let count = |s: AttemptState| attempts.iter().filter(|a| a.state == s).count() as u32;
    let (succeeded, failed, active) = (
        count(AttemptState::Succeeded),
        count(AttemptState::Failed),
        count(AttemptState::Active),
    );
    let completions = spec.completions.max(1);
    let done = |outcome, stop_active, summary| Decision {
        outcome,
        start: Vec::new(),
        stop_active,
        retry_at: None,
        summary,
    };
    if succeeded >= completions {
        return done(
            Outcome::Complete,
            false,
            format!("job {name} succeeded ({succeeded}/{completions} completions)"),
        );
    }
    if failed > spec.backoff_limit {
        let last = attempts
            .iter()
            .filter(|a| a.state == AttemptState::Failed)
            .max_by_key(|a| a.slot)
            .and_then(|a| a.exit_code)
            .map(|c| format!("; the last attempt exited with code {c}"))
            .unwrap_or_default();
        let why = format!(
            "BackoffLimitExceeded: {failed} failed attempts (backoffLimit {}){last}",
            spec.backoff_limit
        );
        return done(
            Outcome::Failed(why.clone()),
            active > 0,
            format!("job {name} failed: {why}"),
        );
    }
    if let (Some(deadline), Some(started)) = (spec.active_deadline_seconds, started)
        && now - started > time::Duration::seconds(deadline)
    {
        let why = format!("DeadlineExceeded: active longer than activeDeadlineSeconds {deadline}");
        return done(
            Outcome::Failed(why.clone()),
            active > 0,
            format!("job {name} failed: {why}"),
        );
    }
    let missing = completions - succeeded;
    let want = spec.parallelism.max(1).min(missing);
    let mut decision = Decision {
        outcome: Outcome::Active,
        start: Vec::new(),
        stop_active: false,
        retry_at: None,
        summary: format!(
            "job {name} is running ({active} active, {succeeded}/{completions} completions{})",
            if failed > 0 {
                format!(", {failed} failed attempts")
            } else {
                String::new()
            }
        ),
    };
    if active >= want {
        return decision;
    }
    if failed > 0 {
        let last = attempts
            .iter()
            .filter(|a| a.state == AttemptState::Failed)
            .filter_map(|a| a.finished_at)
            .max()
            .unwrap_or(now);
        let delay = FIRST_BACKOFF
            .saturating_mul(2u32.saturating_pow((failed - 1).min(16)))
            .min(MAX_BACKOFF);
        let at = last + delay;
        if now < at {
            decision.retry_at = Some(at);
            decision.summary = format!(
                "job {name}: {failed} failed attempts (backoffLimit {}); next attempt in {} s",
                spec.backoff_limit,
                (at - now).whole_seconds().max(1)
            );
            return decision;
        }
    }
    let next = attempts.iter().map(|a| a.slot + 1).max().unwrap_or(0);
    decision.start = (next..next + (want - active)).collect();
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(completions: u32, parallelism: u32, backoff_limit: u32) -> JobSpec {
        JobSpec {
            completions,
            parallelism,
            backoff_limit,
            active_deadline_seconds: None,
            ttl_seconds_after_finished: None,
        }
    }

    fn attempt(slot: u32, state: AttemptState, ago: i64, now: OffsetDateTime) -> Attempt {
        Attempt {
            slot,
            state,
            finished_at: (state != AttemptState::Active)
                .then(|| now - time::Duration::seconds(ago)),
            exit_code: match state {
                AttemptState::Succeeded => Some(0),
                AttemptState::Failed => Some(3),
                AttemptState::Active => None,
            },
        }
    }

    #[test]
    fn a_job_runs_until_its_completions_then_never_again() {
        let now = OffsetDateTime::now_utc();
        let s = spec(2, 1, 6);
        let d = decide("seed", &s, &[], None, now);
        assert_eq!(
            (d.outcome.clone(), d.start.clone()),
            (Outcome::Active, vec![0])
        );
        let one = [attempt(0, AttemptState::Succeeded, 1, now)];
        assert_eq!(decide("seed", &s, &one, Some(now), now).start, vec![1]);
        let both = [
            attempt(0, AttemptState::Succeeded, 5, now),
            attempt(1, AttemptState::Succeeded, 1, now),
        ];
        let d = decide("seed", &s, &both, Some(now), now);
        assert_eq!(d.outcome, Outcome::Complete);
        assert!(d.start.is_empty());
        assert_eq!(d.summary, "job seed succeeded (2/2 completions)");
        // Parallelism: at most that many at once, and no more than what is missing.
        let wide = spec(3, 5, 6);
        assert_eq!(decide("w", &wide, &[], None, now).start, vec![0, 1, 2]);
        let running = [attempt(0, AttemptState::Active, 0, now)];
        assert_eq!(
            decide("w", &wide, &running, Some(now), now).start,
            vec![1, 2]
        );
    }

    #[test]
    fn failures_back_off_then_fail_the_job_past_the_limit() {
        let now = OffsetDateTime::now_utc();
        let s = spec(1, 1, 2);
        let failed_now = [attempt(0, AttemptState::Failed, 1, now)];
        let d = decide("seed", &s, &failed_now, Some(now), now);
        assert!(d.start.is_empty() && d.retry_at.is_some(), "{d:?}");
        assert!(d.summary.contains("next attempt in 9 s"), "{}", d.summary);
        let failed_long_ago = [attempt(0, AttemptState::Failed, 11, now)];
        assert_eq!(
            decide("seed", &s, &failed_long_ago, Some(now), now).start,
            vec![1]
        );
        // The second failure waits 20 s.
        let two = [
            attempt(0, AttemptState::Failed, 30, now),
            attempt(1, AttemptState::Failed, 15, now),
        ];
        assert!(decide("seed", &s, &two, Some(now), now).start.is_empty());
        let three = [
            attempt(0, AttemptState::Failed, 60, now),
            attempt(1, AttemptState::Failed, 40, now),
            attempt(2, AttemptState::Failed, 1, now),
        ];
        let d = decide("seed", &s, &three, Some(now), now);
        assert!(matches!(d.outcome, Outcome::Failed(_)));
        assert_eq!(
            d.summary,
            "job seed failed: BackoffLimitExceeded: 3 failed attempts (backoffLimit 2); the last \
             attempt exited with code 3"
        );
    }

    #[test]
    fn the_deadline_fails_the_job_and_stops_what_runs() {
        let now = OffsetDateTime::now_utc();
        let s = JobSpec {
            active_deadline_seconds: Some(60),
            ..spec(1, 1, 6)
        };
        let running = [attempt(0, AttemptState::Active, 0, now)];
        let d = decide(
            "j",
            &s,
            &running,
            Some(now - time::Duration::seconds(61)),
            now,
        );
        assert!(d.stop_active);
        assert!(d.summary.contains("DeadlineExceeded"), "{}", d.summary);
        let d = decide(
            "j",
            &s,
            &running,
            Some(now - time::Duration::seconds(30)),
            now,
        );
        assert_eq!(d.outcome, Outcome::Active);
    }
}
