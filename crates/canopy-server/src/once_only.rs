//! Background jobs that run on one replica at a time.
//!
//! Replicas of one instance share a PostgreSQL database. Jobs that act on the whole database
//! (reaping idle upload sessions, deleting expired tokens, pruning the audit log) run where
//! their [`canopy_store::Lease`] is held: every replica tries to take each job's lease every
//! [`LEASE_RETRY`], the one that gets it runs the job and checks its lease before every pass
//! and every [`LEASE_CHECK`], and a replica that dies (or loses its database session) loses its
//! leases with its session, so another replica takes the job over within [`LEASE_RETRY`] of the
//! session's end (at once when the process is killed, within
//! [`canopy_store::LEASE_DEAD_PEER_SECS`] when its host vanished). Jobs are idempotent, so the
//! one pass that may still be in flight when a lease is lost does no harm.
//!
//! Work about a replica's own connections (flushing the liveness of the agents connected to
//! it) is not gated: every replica does its own.
//!
//! On SQLite one process holds the instance, its leases are always granted, and the jobs run
//! as before.

use std::future::Future;
use std::time::Duration;

use canopy_store::{Backend, LeaseJob, Store};

/// How often a replica without a job's lease tries to take it: the longest a job waits for a
/// new holder once the old holder's database session has ended.
pub const LEASE_RETRY: Duration = Duration::from_secs(5);

/// How often the holder of a lease checks that it still holds it (between passes too).
pub const LEASE_CHECK: Duration = Duration::from_secs(5);

/// Runs `pass` every `period` while this replica holds `job`'s lease; forever (abort the task
/// to stop it). The first pass runs as soon as the lease is taken.
pub async fn run_once_only<F, Fut>(store: Store, job: LeaseJob, period: Duration, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let replicated = store.backend() == Backend::Postgres;
    loop {
        let mut lease = match store.try_lease(job).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tokio::time::sleep(LEASE_RETRY).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(job = %job, error = %e, "could not try the lease of background job {job}");
                tokio::time::sleep(LEASE_RETRY).await;
                continue;
            }
        };
        if replicated {
            tracing::info!(job = %job, "lease taken: this replica runs {job}");
        }
        let mut passes = tokio::time::interval(period);
        passes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checks = tokio::time::interval(LEASE_CHECK);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lost = loop {
            tokio::select! {
                _ = passes.tick() => {
                    if replicated && let Err(e) = lease.check().await {
                        break e;
                    }
                    pass().await;
                }
                // On SQLite the lease cannot be lost: no wake-ups for nothing.
                _ = checks.tick(), if replicated => {
                    if let Err(e) = lease.check().await {
                        break e;
                    }
                }
            }
        };
        tracing::warn!(job = %job, error = %lost, "lease lost: this replica stops running {job} (another replica takes it over)");
        drop(lease);
        tokio::time::sleep(LEASE_RETRY).await;
    }
}
