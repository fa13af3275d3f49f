//! Once-only background jobs between two replicas' stores on one PostgreSQL database: the job
//! runs on one of them at a time; when the holder's lease session is terminated (a replica cut
//! off from the database, or an administrator moving the job), the holder stops, and the job
//! goes on on one replica (the other, or the same one again once it has a new session).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canopy_server::once_only::run_once_only;
use canopy_store::{LEASE_LOCK_CLASS, LeaseJob, Store};

/// Which replica ran each pass, in order.
type Passes = Arc<Mutex<Vec<char>>>;

/// Starts the job on `store` as replica `who`, recording its passes.
fn start(store: &Store, who: char, passes: &Passes) -> tokio::task::JoinHandle<()> {
    let passes = passes.clone();
    tokio::spawn(run_once_only(
        store.clone(),
        LeaseJob::UploadReaper,
        Duration::from_millis(100),
        move || {
            let passes = passes.clone();
            async move {
                passes.lock().unwrap().push(who);
            }
        },
    ))
}

async fn wait_for_passes(passes: &Passes, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while passes.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "the job ran {} passes, not {n}, within {within:?}",
            passes.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many times the replica running the job changed along `passes`.
fn handovers(passes: &[char]) -> usize {
    passes.windows(2).filter(|w| w[0] != w[1]).count()
}

#[tokio::test]
async fn the_job_runs_on_one_replica_at_a_time_and_goes_on_when_the_holders_session_ends() {
    let Some(url) = canopy_store::testing::fresh_postgres().await else {
        eprintln!("skipped: CANOPY_TEST_DATABASE_URL is not set");
        return;
    };
    let a = Store::connect(&url).await.expect("replica A");
    let b = Store::connect(&url).await.expect("replica B");
    let admin = Store::connect(&url).await.expect("administrator");
    let passes: Passes = Arc::default();

    let task_a = start(&a, 'A', &passes);
    wait_for_passes(&passes, 3, Duration::from_secs(30)).await;
    let task_b = start(&b, 'B', &passes);
    // B tries at once and every 5 s while A runs: 60 passes (6 s) more, all A's.
    wait_for_passes(&passes, 63, Duration::from_secs(60)).await;
    assert!(
        passes.lock().unwrap().iter().all(|&who| who == 'A'),
        "B ran while A held the lease: {:?}",
        passes.lock().unwrap()
    );

    // A's lease session ends (as when A is cut off from the database).
    let before = passes.lock().unwrap().len();
    canopy_store::testing::execute_raw(
        &admin,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
             AND classid = {LEASE_LOCK_CLASS} AND objid = {} AND objsubid = 2 AND granted",
            LeaseJob::UploadReaper.key()
        ),
    )
    .await;
    // The job goes on (on B, or on A with a new session: whichever tries first; B tries
    // within 5 s) ...
    wait_for_passes(&passes, before + 100, Duration::from_secs(90)).await;
    let passes = passes.lock().unwrap().clone();
    // ... on one replica at a time: at most one handover, never back and forth.
    assert!(
        handovers(&passes) <= 1,
        "the job ran on both replicas at once: {passes:?}"
    );
    task_a.abort();
    task_b.abort();
}
