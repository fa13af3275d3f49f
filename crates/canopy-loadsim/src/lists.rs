//! The resource manager's workload lists over a whole deployment, once it is RUNNING on every
//! edge: what `canopy workload list --deployment D` costs.
//!
//! 1. Canopy's deployment-wide list (`GET /canopy/v1/.../resource/workloads/deployments/{id}`),
//!    walked page by page at the largest page size, [`WALKS`] times: the time of a whole walk
//!    and of each page. Every walk must return exactly the workloads the deployment has
//!    (one per app on each edge: the simulated edges report apps, not their containers), or
//!    the run fails.
//! 2. The reference per app and edge calls (`GET /v1/.../resource/workloads/applications/
//!    {appId}/clusters/{edge}` and `.../resource/endpoints/...`), for [`SAMPLE`] (app, edge)
//!    pairs drawn from the list: one pair after the other, then [`CONCURRENCY`] pairs at a time
//!    with both calls of a pair together (what `canopy-client` does). The cost of a fleet-wide
//!    walk with them is extrapolated from the sample.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};

use crate::admin::{Admin, AppResource, ListedWorkload};
use crate::error::SimError;
use crate::procfs::{CpuSample, Proc};
use crate::report::{Latency, ListsReport, ms};

/// Page size of the deployment-wide list: the server's maximum (what the CLI asks for).
pub const PAGE_SIZE: usize = 500;
/// Whole walks of the deployment-wide list.
pub const WALKS: usize = 5;
/// (app, edge) pairs asked about with the reference calls.
pub const SAMPLE: usize = 200;
/// Pairs in flight at once in the concurrent pass (`canopy-client`'s `CONCURRENCY`).
pub const CONCURRENCY: usize = 8;

fn cpu(p: Option<Proc>) -> Option<CpuSample> {
    p.and_then(|p| p.cpu().ok())
}

fn cpu_seconds(a: Option<CpuSample>, b: Option<CpuSample>) -> Option<f64> {
    a.zip(b).map(|(a, b)| b.cpu_seconds - a.cpu_seconds)
}

/// One whole walk of the deployment-wide list.
struct Walk {
    elapsed: Duration,
    pages: Vec<Duration>,
    largest_page_bytes: usize,
    bytes: usize,
    throttled: u64,
    total: u64,
    items: Vec<ListedWorkload>,
}

async fn walk(admin: &Admin, deployment: &str) -> Result<Walk, SimError> {
    let started = Instant::now();
    let mut w = Walk {
        elapsed: Duration::ZERO,
        pages: Vec::new(),
        largest_page_bytes: 0,
        bytes: 0,
        throttled: 0,
        total: 0,
        items: Vec::new(),
    };
    loop {
        let page = admin
            .deployment_workloads_page(deployment, PAGE_SIZE, w.items.len())
            .await?;
        w.pages.push(page.latency);
        w.bytes += page.bytes;
        w.largest_page_bytes = w.largest_page_bytes.max(page.bytes);
        w.throttled += u64::from(page.throttled);
        w.total = page.value.total_elements;
        if page.value.workloads.is_empty() {
            break;
        }
        w.items.extend(page.value.workloads);
        if w.items.len() as u64 >= w.total {
            break;
        }
    }
    w.elapsed = started.elapsed();
    Ok(w)
}

/// Checks a walk returned every workload of the deployment once: `expected` in all, on `edges`
/// edges, each (edge, app) once.
fn check(w: &Walk, expected: usize, edges: usize) -> Result<(), SimError> {
    let per_edge = expected / edges.max(1);
    let fail = |detail: String| {
        Err(SimError::Check {
            phase: "resource lists".into(),
            detail,
        })
    };
    if w.total != expected as u64 || w.items.len() != expected {
        return fail(format!(
            "the deployment-wide list has totalElements {} and returned {} workloads over {} pages; expected {expected} ({per_edge} on each of {edges} edges)",
            w.total,
            w.items.len(),
            w.pages.len()
        ));
    }
    let on: HashSet<&str> = w.items.iter().map(|i| i.cluster_id.as_str()).collect();
    if on.len() != edges {
        return fail(format!(
            "the deployment-wide list names {} edges; expected {edges}",
            on.len()
        ));
    }
    let distinct: HashSet<&ListedWorkload> = w.items.iter().collect();
    if distinct.len() != expected {
        return fail(format!(
            "the deployment-wide list returned {} workloads but only {} distinct (edge, app) of them: pages overlap",
            expected,
            distinct.len()
        ));
    }
    Ok(())
}

/// `n` of `items`, drawn without replacement by a fixed xorshift (the same sample every run).
fn sample<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    let mut idx: Vec<usize> = (0..items.len()).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let n = n.min(items.len());
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = i + (x % (idx.len() - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx[..n].iter().map(|&i| items[i].clone()).collect()
}

/// What one (app, edge) pair's two reference calls cost.
struct Pair {
    workloads: Duration,
    endpoints: Duration,
    /// Both calls, from the first request to the last answer.
    elapsed: Duration,
    throttled: u64,
}

async fn pair(
    admin: &Admin,
    app_id: &str,
    edge: &str,
    expected: usize,
    together: bool,
) -> Result<Pair, SimError> {
    let started = Instant::now();
    let (w, e) = if together {
        futures::try_join!(
            admin.app_resource(AppResource::Workloads, app_id, edge),
            admin.app_resource(AppResource::Endpoints, app_id, edge)
        )?
    } else {
        let w = admin
            .app_resource(AppResource::Workloads, app_id, edge)
            .await?;
        let e = admin
            .app_resource(AppResource::Endpoints, app_id, edge)
            .await?;
        (w, e)
    };
    let elapsed = started.elapsed();
    if w.value != expected {
        return Err(SimError::Check {
            phase: "resource lists".into(),
            detail: format!(
                "app {app_id} on edge {edge}: the per app call lists {} workloads, the deployment-wide list {expected}",
                w.value
            ),
        });
    }
    Ok(Pair {
        workloads: w.latency,
        endpoints: e.latency,
        elapsed,
        throttled: u64::from(w.throttled + e.throttled),
    })
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

/// Measures both ways of listing the workloads of `deployment`, RUNNING on `edges` edges with
/// `apps` apps each (`examples/web-demo` has two, `web` and `status`).
pub async fn measure(
    admin: &Admin,
    deployment: &str,
    edges: usize,
    apps: usize,
    server: Option<Proc>,
) -> Result<ListsReport, SimError> {
    let expected = apps * edges;

    // 1. The deployment-wide list.
    let mut walks = Vec::new();
    let mut pages = Vec::new();
    let mut throttled = 0;
    let cpu0 = cpu(server);
    for _ in 0..WALKS {
        let w = walk(admin, deployment).await?;
        check(&w, expected, edges)?;
        pages.extend(w.pages.iter().copied());
        throttled += w.throttled;
        walks.push(w);
    }
    let walk_cpu = cpu_seconds(cpu0, cpu(server)).map(|s| s / WALKS as f64);
    let first = &walks[0];
    let mut report = ListsReport {
        expected_workloads: expected,
        workloads: first.items.len(),
        page_size: PAGE_SIZE,
        pages_per_walk: first.pages.len(),
        walk: Latency::of(&sorted(walks.iter().map(|w| w.elapsed).collect())),
        page: Latency::of(&sorted(pages)),
        walk_kib: first.bytes as f64 / 1024.0,
        largest_page_kib: walks
            .iter()
            .map(|w| w.largest_page_bytes)
            .max()
            .unwrap_or(0) as f64
            / 1024.0,
        walk_server_cpu_seconds: walk_cpu,
        sample_concurrency: CONCURRENCY,
        ..Default::default()
    };

    // 2. The reference calls, for a sample of (app, edge) pairs of the list.
    let mut per_pair: HashMap<(&str, &str), usize> = HashMap::new();
    for i in &first.items {
        *per_pair
            .entry((i.app_id.as_str(), i.cluster_id.as_str()))
            .or_default() += 1;
    }
    let mut all: Vec<((&str, &str), usize)> = per_pair.into_iter().collect();
    all.sort_unstable();
    report.pairs = all.len();
    let picked = sample(&all, SAMPLE);
    report.sample = picked.len();

    let cpu0 = cpu(server);
    let started = Instant::now();
    let mut seq = Vec::new();
    for ((app_id, edge), n) in &picked {
        seq.push(pair(admin, app_id, edge, *n, false).await?);
    }
    let seq_elapsed = started.elapsed();
    report.sequential_server_cpu_seconds = cpu_seconds(cpu0, cpu(server));
    report.sequential_ms = ms(seq_elapsed);

    let cpu0 = cpu(server);
    let started = Instant::now();
    let conc: Vec<Pair> = futures::stream::iter(picked.iter())
        .map(|((app_id, edge), n)| pair(admin, app_id, edge, *n, true))
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    let conc_elapsed = started.elapsed();
    report.concurrent_server_cpu_seconds = cpu_seconds(cpu0, cpu(server));
    report.concurrent_ms = ms(conc_elapsed);

    let lat =
        |v: &[Pair], f: fn(&Pair) -> Duration| Latency::of(&sorted(v.iter().map(f).collect()));
    report.sequential_workloads = lat(&seq, |p| p.workloads);
    report.sequential_endpoints = lat(&seq, |p| p.endpoints);
    report.sequential_pair = lat(&seq, |p| p.elapsed);
    report.concurrent_workloads = lat(&conc, |p| p.workloads);
    report.concurrent_endpoints = lat(&conc, |p| p.endpoints);
    throttled += seq.iter().chain(&conc).map(|p| p.throttled).sum::<u64>();
    report.throttled = throttled;

    // A fleet-wide walk with the reference calls: every pair, at the sample's pace.
    let per_pair = |d: Duration| d.as_secs_f64() / report.sample.max(1) as f64;
    report.fleet_sequential_seconds = per_pair(seq_elapsed) * report.pairs as f64;
    report.fleet_concurrent_seconds = per_pair(conc_elapsed) * report.pairs as f64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_distinct_fixed_and_bounded() {
        let items: Vec<usize> = (0..1_000).collect();
        let a = sample(&items, 200);
        assert_eq!(a.len(), 200);
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), 200);
        assert_eq!(a, sample(&items, 200));
        assert_eq!(sample(&items[..5], 200).len(), 5);
        assert!(sample::<usize>(&[], 3).is_empty());
    }
}
