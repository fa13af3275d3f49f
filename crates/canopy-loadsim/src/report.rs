//! The results of a run: what `--json FILE` writes, and the Markdown summary printed at the end
//! (the same shape as the tables in `docs/BENCHMARKS.md`).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::procfs::Footprint;

/// Percentiles of a sorted list of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `sorted` (ascending).
    pub fn of(sorted: &[Duration]) -> Latency {
        let at = |p: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            ms(sorted[rank - 1])
        };
        Latency {
            count: sorted.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// Milliseconds, rounded to 0.1.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Enrolling the fleet.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollReport {
    pub edges: usize,
    pub seconds: f64,
    pub per_second: f64,
    /// Per enrollment request.
    pub latency: Latency,
    /// From the first enrollment until every edge had its first state and reported once.
    pub all_reported_seconds: f64,
}

/// The fleet connected and nothing changing: every edge parked in a long-poll, reporting every
/// heartbeat, re-polling when its long-poll times out.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleReport {
    pub window_seconds: f64,
    /// Server CPU over the window, % of one core; `None` when the server is not measured.
    pub server_cpu_percent: Option<f64>,
    pub server: Option<Footprint>,
    pub sim_cpu_percent: f64,
    pub sim: Footprint,
    /// Agent requests the server answered during the window.
    pub polls_per_second: f64,
    pub reports_per_second: f64,
    /// What the TLS agents' own connections carried (with `--tls-agents`).
    pub tls_agents: Option<crate::sockets::Traffic>,
    /// The further replicas (`--server` given several times, with their pids), each apart.
    pub replicas: Vec<ReplicaIdle>,
}

/// One further replica over the idle window.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaIdle {
    pub server: String,
    /// CPU over the window, % of one core (`None`: its process could not be read).
    pub cpu_percent: Option<f64>,
    pub footprint: Option<Footprint>,
}

/// A replica killed with SIGKILL, and its edges moving to the others.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverReport {
    pub killed_server: String,
    /// Edges that were connected to it.
    pub edges_moved: usize,
    /// Per moved edge, from the kill until a surviving replica first answered it.
    pub connected: Latency,
    /// Per moved edge, from the kill until a surviving replica acknowledged its status report.
    pub fresh: Latency,
    /// Desired states the moved edges received again (they resume from the generation they
    /// hold: 0 expected).
    pub redelivered: u64,
    /// Requests of the moved edges that failed meanwhile (those in flight at the kill, and
    /// retries before they moved).
    pub agent_errors: u64,
    /// Once every moved edge was fresh: until a deployment GET on the first replica said
    /// RUNNING on every edge.
    pub running_confirmed_ms: f64,
    /// The first replica's CPU seconds from the kill until then (`None`: not measured).
    pub survivor_cpu_seconds: Option<f64>,
}

/// One change and how it reached the fleet.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseReport {
    pub name: String,
    /// Edges the change should reach.
    pub edges_touched: usize,
    /// The operator request itself (create, update, relabel).
    pub request_ms: f64,
    /// Per touched edge: from just before the request until its long-poll returned the change.
    pub delivery: Latency,
    /// Edges woken that the change should not have touched.
    pub other_wakes: u64,
    /// From just before the request until a deployment GET said RUNNING with every targeted
    /// edge running (`None`: not reached in time).
    pub running_ms: Option<f64>,
    /// The deployment GETs made while waiting (every `--status-poll-ms`).
    pub status_get: Latency,
    /// Size of the last deployment GET body.
    pub status_body_kib: f64,
    /// Server CPU seconds from the request until RUNNING (`None`: not measured).
    pub server_cpu_seconds: Option<f64>,
    /// The simulator's own CPU seconds over the same time (it parses every desired state and
    /// sends every report: when it nears one core per worker thread, it is the bottleneck).
    pub sim_cpu_seconds: f64,
}

/// The resource manager's workload lists over the whole deployment, RUNNING on every edge
/// (`crate::lists`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListsReport {
    /// Workloads the deployment has (per edge, times the edges).
    pub expected_workloads: usize,
    /// Workloads one walk of the deployment-wide list returned (checked equal).
    pub workloads: usize,
    pub page_size: usize,
    pub pages_per_walk: usize,
    /// One whole walk of the deployment-wide list, every page one after the other.
    pub walk: Latency,
    /// One page request of those walks.
    pub page: Latency,
    /// Bodies of one walk, and the largest page.
    pub walk_kib: f64,
    pub largest_page_kib: f64,
    /// Server CPU seconds per walk (`None`: not measured).
    pub walk_server_cpu_seconds: Option<f64>,
    /// (app, edge) pairs of the deployment, and how many of them the reference calls asked.
    pub pairs: usize,
    pub sample: usize,
    /// The sample one pair after the other: each call, each pair (both calls), all of it.
    pub sequential_workloads: Latency,
    pub sequential_endpoints: Latency,
    pub sequential_pair: Latency,
    pub sequential_ms: f64,
    pub sequential_server_cpu_seconds: Option<f64>,
    /// The sample `sample_concurrency` pairs at a time, both calls of a pair together.
    pub sample_concurrency: usize,
    pub concurrent_workloads: Latency,
    pub concurrent_endpoints: Latency,
    pub concurrent_ms: f64,
    pub concurrent_server_cpu_seconds: Option<f64>,
    /// Every pair of the deployment with the reference calls, at the sample's pace.
    pub fleet_sequential_seconds: f64,
    pub fleet_concurrent_seconds: f64,
    /// 429 answers (the server's per-token rate limit) waited out, over the whole phase.
    pub throttled: u64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub edges: usize,
    /// The deployment package deployed (`web-demo`, or the Helm package and its chart).
    pub package: String,
    /// `http2` or `http1`.
    pub transport: String,
    /// HTTP clients (with HTTP/2: connections) the edges share.
    pub clients: usize,
    pub server_url: String,
    /// The server as started (before any edge).
    pub server_start: Option<Footprint>,
    pub enrollment: EnrollReport,
    pub idle: IdleReport,
    pub phases: Vec<PhaseReport>,
    /// The workload lists once the created deployment is RUNNING (before the update).
    pub resource_lists: Option<ListsReport>,
    /// With `--failover`: the last replica killed and its edges moving.
    pub failover: Option<FailoverReport>,
    /// The server at the end of the run (`peakRssMib` is the run's peak).
    pub server_end: Option<Footprint>,
    pub sim_end: Footprint,
    /// Failed requests of the simulated agents over the whole run.
    pub agent_errors: u64,
    /// Of those, refused with `Retry-After` (an edge over its rate or long-poll cap, or the
    /// server at capacity).
    pub agent_throttled: u64,
    pub agent_error_samples: Vec<String>,
    /// WARN/ERROR lines of the server's log (server child only).
    pub server_log_problems: Vec<String>,
    pub total_seconds: f64,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.digits$}"))
}

impl Report {
    /// A Markdown summary.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## {} edges over {} ({} client connections), server {}\n",
            self.edges, self.transport, self.clients, self.server_url
        );
        let _ = writeln!(s, "Package: {}\n", self.package);
        let e = &self.enrollment;
        let _ = writeln!(
            s,
            "Enrollment: {} edges in {:.1} s ({:.0}/s), request p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; all edges holding their first state and reported after {:.1} s.\n",
            e.edges,
            e.seconds,
            e.per_second,
            e.latency.p50_ms,
            e.latency.p99_ms,
            e.latency.max_ms,
            e.all_reported_seconds
        );
        let i = &self.idle;
        let _ = writeln!(s, "| idle ({:.0} s window) | value |", i.window_seconds);
        let _ = writeln!(s, "|---|---|");
        let _ = writeln!(
            s,
            "| server CPU (% of one core) | {} |",
            opt(i.server_cpu_percent, 2)
        );
        if let Some(f) = &i.server {
            let _ = writeln!(
                s,
                "| server RSS / peak (MiB) | {:.1} / {:.1} |",
                f.rss_mib, f.peak_rss_mib
            );
            let _ = writeln!(
                s,
                "| server sockets / threads | {} / {} |",
                f.sockets, f.threads
            );
        }
        let _ = writeln!(
            s,
            "| agent requests (polls/s, reports/s) | {:.1}, {:.1} |",
            i.polls_per_second, i.reports_per_second
        );
        for r in &i.replicas {
            let _ = writeln!(
                s,
                "| replica {} CPU (% of one core), RSS (MiB) | {}, {} |",
                r.server,
                opt(r.cpu_percent, 2),
                opt(r.footprint.map(|f| f.rss_mib), 1)
            );
        }
        if let Some(t) = &i.tls_agents {
            let _ = writeln!(
                s,
                "| TLS agents: connections at start / end, opened, closed | {} / {}, {}, {} |",
                t.connections_start, t.connections_end, t.opened, t.closed
            );
            let _ = writeln!(
                s,
                "| TLS agents: bytes sent / received (all {}), segments | {} / {}, {} |",
                t.agents, t.bytes_sent, t.bytes_received, t.segments
            );
            let _ = writeln!(
                s,
                "| TLS agents: KiB per edge per day (TCP payload / with headers) | {:.1} / {:.1} |",
                t.payload_kib_per_edge_per_day, t.wire_kib_per_edge_per_day
            );
        }
        let _ = writeln!(
            s,
            "| simulator CPU (% of one core), RSS (MiB), sockets | {:.2}, {:.1}, {} |\n",
            i.sim_cpu_percent, i.sim.rss_mib, i.sim.sockets
        );
        let _ = writeln!(
            s,
            "| change | edges | request ms | delivery p50 / p99 / max ms | other edges woken | RUNNING after ms | deployment GET p50 / max ms (body KiB) | CPU s server / sim |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for p in &self.phases {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} / {:.1} / {:.1} | {} | {} | {:.1} / {:.1} ({:.0}) | {} / {:.2} |",
                p.name,
                p.edges_touched,
                p.request_ms,
                p.delivery.p50_ms,
                p.delivery.p99_ms,
                p.delivery.max_ms,
                p.other_wakes,
                opt(p.running_ms, 0),
                p.status_get.p50_ms,
                p.status_get.max_ms,
                p.status_body_kib,
                opt(p.server_cpu_seconds, 2),
                p.sim_cpu_seconds
            );
        }
        if let Some(l) = &self.resource_lists {
            l.write_markdown(&mut s);
        }
        if let Some(f) = &self.failover {
            f.write_markdown(&mut s);
        }
        if let Some(f) = &self.server_end {
            let _ = writeln!(
                s,
                "\nServer at the end: RSS {:.1} MiB (peak {:.1}), {} sockets, {} threads.",
                f.rss_mib, f.peak_rss_mib, f.sockets, f.threads
            );
        }
        let _ = writeln!(
            s,
            "Simulated agent request errors: {} ({} refused with Retry-After).{}",
            self.agent_errors,
            self.agent_throttled,
            if self.agent_error_samples.is_empty() {
                String::new()
            } else {
                format!(" First: {}", self.agent_error_samples.join(" | "))
            }
        );
        if !self.server_log_problems.is_empty() {
            let _ = writeln!(
                s,
                "Server log warnings/errors ({} shown):",
                self.server_log_problems.len()
            );
            for l in &self.server_log_problems {
                let _ = writeln!(s, "    {l}");
            }
        }
        let _ = writeln!(s, "Total run time {:.0} s.", self.total_seconds);
        s
    }
}

impl FailoverReport {
    fn write_markdown(&self, s: &mut String) {
        let lat = |l: &Latency| format!("{:.1} / {:.1} / {:.1}", l.p50_ms, l.p99_ms, l.max_ms);
        let _ = writeln!(
            s,
            "\n| failover: {} killed (SIGKILL), {} edges moved | p50 / p99 / max ms |",
            self.killed_server, self.edges_moved
        );
        let _ = writeln!(s, "|---|---|");
        let _ = writeln!(
            s,
            "| answered by another replica | {} |",
            lat(&self.connected)
        );
        let _ = writeln!(
            s,
            "| status report acknowledged there (fresh) | {} |",
            lat(&self.fresh)
        );
        let _ = writeln!(
            s,
            "\nDesired states sent again to moved edges: {}; their failed requests: {}; deployment RUNNING on every edge confirmed {:.0} ms after the last edge was fresh; first replica CPU {} s.",
            self.redelivered,
            self.agent_errors,
            self.running_confirmed_ms,
            opt(self.survivor_cpu_seconds, 2)
        );
    }
}

impl ListsReport {
    fn write_markdown(&self, s: &mut String) {
        let lat = |l: &Latency| format!("{:.1} / {:.1} / {:.1}", l.p50_ms, l.p99_ms, l.max_ms);
        let _ = writeln!(
            s,
            "\n| resource lists ({} workloads, {} (app, edge) pairs) | p50 / p99 / max ms | other |",
            self.workloads, self.pairs
        );
        let _ = writeln!(s, "|---|---|---|");
        let _ = writeln!(
            s,
            "| deployment-wide list, whole walk at pageSize {} ({} walks) | {} | {} pages, {:.0} KiB; server CPU {} s per walk |",
            self.page_size,
            self.walk.count,
            lat(&self.walk),
            self.pages_per_walk,
            self.walk_kib,
            opt(self.walk_server_cpu_seconds, 3)
        );
        let _ = writeln!(
            s,
            "| deployment-wide list, one page | {} | largest page {:.0} KiB |",
            lat(&self.page),
            self.largest_page_kib
        );
        let _ = writeln!(
            s,
            "| per app and edge, one pair after the other: workloads call | {} | {} pairs in {:.0} ms; server CPU {} s |",
            lat(&self.sequential_workloads),
            self.sample,
            self.sequential_ms,
            opt(self.sequential_server_cpu_seconds, 3)
        );
        let _ = writeln!(
            s,
            "| per app and edge, one pair after the other: endpoints call | {} | |",
            lat(&self.sequential_endpoints)
        );
        let _ = writeln!(
            s,
            "| per app and edge, one pair after the other: both calls | {} | |",
            lat(&self.sequential_pair)
        );
        let _ = writeln!(
            s,
            "| per app and edge, {} pairs at a time: workloads call | {} | {} pairs in {:.0} ms; server CPU {} s |",
            self.sample_concurrency,
            lat(&self.concurrent_workloads),
            self.sample,
            self.concurrent_ms,
            opt(self.concurrent_server_cpu_seconds, 3)
        );
        let _ = writeln!(
            s,
            "| per app and edge, {} pairs at a time: endpoints call | {} | |",
            self.sample_concurrency,
            lat(&self.concurrent_endpoints)
        );
        let _ = writeln!(
            s,
            "\nWhole deployment with the per app and edge calls ({} pairs, extrapolated from the sample): {:.1} s one pair after the other, {:.1} s {} at a time; with the deployment-wide list: {:.2} s (p50 of {} walks). 429 answers waited out: {}.",
            self.pairs,
            self.fleet_sequential_seconds,
            self.fleet_concurrent_seconds,
            self.sample_concurrency,
            self.walk.p50_ms / 1000.0,
            self.walk.count,
            self.throttled
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&v);
        assert_eq!(
            (l.count, l.p50_ms, l.p99_ms, l.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        let one = Latency::of(&[Duration::from_micros(1500)]);
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (1.5, 1.5, 1.5));
        assert_eq!(Latency::of(&[]), Latency::default());
    }
}
