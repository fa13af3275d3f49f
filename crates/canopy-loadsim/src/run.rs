//! One simulation run, phase by phase:
//!
//! 1. the server (a child, or `--server`), an enrollment token, the example packages;
//! 2. enrollment of every edge (their loops start as each enrolls), until each holds its
//!    first desired state and has reported once;
//! 3. an idle window: server CPU and memory with every long-poll parked;
//! 4. a deployment of the package's `1.0.0` (`web-demo`, or the Helm package of
//!    [`crate::package`]) targeting every simulated edge by label: per-edge
//!    delivery time and the time until the deployment is RUNNING on all of them;
//! 5. the resource manager's workload lists over that deployment ([`crate::lists`]): the
//!    deployment-wide list, and the reference per app and edge calls for a sample;
//! 6. the same as 4 for an upgrade to `1.1.0`;
//! 7. a change touching one edge (it loses the target label, then gets it back), to show the
//!    work is proportional to the edges touched;
//! 8. with `failover` (replicas): the last replica killed with SIGKILL, and per edge it held,
//!    the time until another replica answered it and acknowledged its status report; then a
//!    deployment GET on the first replica must say RUNNING on every edge.
//!
//! Every phase is bounded by `phase_timeout`, the whole run by `duration`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_proto::DesiredState;
use serde_json::json;

use crate::admin::Admin;
use crate::config::{SimConfig, TLS_AGENT_SOURCE, Transport, Workload, check_loopback};
use crate::error::SimError;
use crate::fleet::{Fleet, PhaseResult, Tracker, Want};
use crate::package::Package;
use crate::procfs::{CpuSample, Proc};
use crate::report::{
    EnrollReport, FailoverReport, IdleReport, Latency, PhaseReport, ReplicaIdle, Report, ms,
};
use crate::server::ServerChild;
use crate::sockets::{Traffic, sockets_from};

/// Time for the edges' next long-polls to be parked before the idle window starts.
const SETTLE: Duration = Duration::from_secs(3);

/// Which server to load.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start `canopy server` from this binary as a child process (measured).
    Child { canopy_bin: PathBuf },
    /// A running server on loopback; measured only when its pid is given.
    Running {
        url: String,
        pid: Option<u32>,
        /// An API token with write access to the project.
        token: Option<String>,
    },
}

/// Runs the whole simulation against `target`, bounded by `cfg.duration`.
pub async fn run(cfg: &SimConfig, target: Target) -> Result<Report, SimError> {
    cfg.validate()?;
    if let Target::Running { url, .. } = &target {
        check_loopback(url)?;
        if cfg.tls_agents > 0 && !url.starts_with("https://") {
            return Err(SimError::Config(format!(
                "--tls-agents needs an https:// server (with --ca-file for a self-signed one), not {url}"
            )));
        }
    }
    let started = Instant::now();
    let mut cfg = cfg.clone();
    let (child, url, token, server_proc) = match target {
        Target::Child { canopy_bin } => {
            // TLS agents need TLS: the whole server then speaks HTTPS, as in production.
            let child = ServerChild::start(&canopy_bin, cfg.tls_agents > 0).await?;
            if child.ca_file.is_some() {
                cfg.ca_file.clone_from(&child.ca_file);
            }
            tracing::info!(url = %child.url, pid = child.pid, "server started");
            let url = child.url.clone();
            let token = Some(child.token.clone());
            let proc = Proc::pid(child.pid);
            (Some(child), url, token, Some(proc))
        }
        Target::Running { url, pid, token } => (None, url, token, pid.map(Proc::pid)),
    };
    let outcome = tokio::time::timeout(
        cfg.duration,
        phases(&cfg, &url, token.as_deref(), server_proc, child.is_none()),
    )
    .await;
    let mut report = match outcome {
        Ok(r) => r,
        Err(_) => Err(SimError::Timeout {
            phase: "the run".into(),
            seconds: cfg.duration.as_secs(),
            detail: "--duration reached".into(),
        }),
    };
    if let Some(child) = child {
        match &mut report {
            Ok(r) => r.server_log_problems = child.log_problems(20),
            Err(e) => {
                tracing::error!(error = %e, log = %child.log_tail(), "run failed; server log tail")
            }
        }
        child.stop().await;
    }
    if let Ok(r) = &mut report {
        r.total_seconds = started.elapsed().as_secs_f64().round();
    }
    report
}

/// A short id for this run's edge names and labels (lowercase hex).
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:06x}", (nanos / 1_000) & 0xff_ffff)
}

fn cpu(p: Option<Proc>) -> Option<CpuSample> {
    p.and_then(|p| p.cpu().ok())
}

async fn phases(
    cfg: &SimConfig,
    url: &str,
    token: Option<&str>,
    server: Option<Proc>,
    cleanup: bool,
) -> Result<Report, SimError> {
    let admin = Admin::new(url, &cfg.project, token, &crate::fleet::trust(cfg))?;
    let run = run_id();
    let me = Proc::current();
    let mut report = Report {
        edges: cfg.edges,
        transport: match cfg.transport {
            Transport::Http2 => "http2",
            Transport::Http1 => "http1",
        }
        .into(),
        clients: cfg.clients(),
        server_url: url.to_string(),
        server_start: server.and_then(|p| p.footprint().ok()),
        ..Default::default()
    };

    let token = admin
        .create_token(&format!("canopy-loadsim run {run}"))
        .await?;
    let package = Package::of(&cfg.workload);
    package.prepare(cfg, &admin).await?;
    let (name, version, upgrade) = (package.name.as_str(), package.version, package.upgrade);
    report.package = match &cfg.workload {
        Workload::Native => name.to_string(),
        Workload::Helm {
            registry,
            chart,
            chart_version,
        } => format!("{name} (Helm chart {chart}:{chart_version} from {registry})"),
    };

    // --- enrollment -----------------------------------------------------------------------
    tracing::info!(edges = cfg.edges, run = %run, "enrolling");
    let enroll_started = Instant::now();
    let (fleet, stats) = bounded(
        "enrollment",
        cfg.phase_timeout,
        Fleet::enroll(cfg, url, &token, &run),
    )
    .await??;
    let tracker = Arc::clone(fleet.tracker());
    tracing::info!(
        seconds = stats.elapsed.as_secs_f64(),
        "enrolled; waiting for every first report"
    );
    if !tracker.wait_all_reported(cfg.phase_timeout).await {
        return Err(SimError::Timeout {
            phase: "first reports".into(),
            seconds: cfg.phase_timeout.as_secs(),
            detail: format!(
                "{} of {} edges reported; agent errors: {:?}",
                tracker.reported(),
                cfg.edges,
                tracker.error_samples()
            ),
        });
    }
    report.enrollment = EnrollReport {
        edges: cfg.edges,
        seconds: stats.elapsed.as_secs_f64(),
        per_second: cfg.edges as f64 / stats.elapsed.as_secs_f64().max(1e-9),
        latency: Latency::of(&stats.latencies),
        all_reported_seconds: enroll_started.elapsed().as_secs_f64(),
    };

    // --- idle -----------------------------------------------------------------------------
    tokio::time::sleep(SETTLE).await;
    tracing::info!(seconds = cfg.idle.as_secs(), "idle window");
    let tls_sockets = || -> Result<_, SimError> {
        (cfg.tls_agents > 0)
            .then(|| sockets_from(TLS_AGENT_SOURCE))
            .transpose()
    };
    let replicas: Vec<Proc> = cfg.more_server_pids.iter().map(|p| Proc::pid(*p)).collect();
    let replica_cpu = || replicas.iter().map(|p| p.cpu().ok()).collect::<Vec<_>>();
    let (s0, m0, c0, t0, r0) = (
        cpu(server),
        me.cpu().ok(),
        tracker.counters(),
        tls_sockets()?,
        replica_cpu(),
    );
    let idle_started = Instant::now();
    tokio::time::sleep(cfg.idle).await;
    let (s1, m1, c1, t1, r1) = (
        cpu(server),
        me.cpu().ok(),
        tracker.counters(),
        tls_sockets()?,
        replica_cpu(),
    );
    let window = cfg.idle.as_secs_f64();
    let tls_window = idle_started.elapsed().as_secs_f64();
    report.idle = IdleReport {
        window_seconds: window,
        server_cpu_percent: s0.zip(s1).map(|(a, b)| b.percent_since(&a)),
        server: server.and_then(|p| p.footprint().ok()),
        sim_cpu_percent: m0.zip(m1).map_or(0.0, |(a, b)| b.percent_since(&a)),
        sim: me.footprint().unwrap_or_default(),
        polls_per_second: ((c1.polls_changed + c1.polls_timed_out)
            - (c0.polls_changed + c0.polls_timed_out)) as f64
            / window,
        reports_per_second: (c1.reports - c0.reports) as f64 / window,
        tls_agents: t0
            .zip(t1)
            .map(|(a, b)| Traffic::between(&a, &b, cfg.tls_agents, tls_window)),
        replicas: (cfg.more_servers.iter().zip(&replicas))
            .zip(r0.into_iter().zip(r1))
            .map(|((url, p), (a, b))| ReplicaIdle {
                server: url.clone(),
                cpu_percent: a.zip(b).map(|(a, b)| b.percent_since(&a)),
                footprint: p.footprint().ok(),
            })
            .collect(),
    };

    // --- deploy ---------------------------------------------------------------------------
    let n = cfg.edges;
    let display = format!("loadsim-{run}");
    let targets = json!({"labels": {"sim": "yes", "run": run}});
    let create = json!({
        "appName": name, "appVersion": version, "displayName": display,
        "allAppTargetClusters": targets,
        "overrideValues": [{"appName": package.app,
                            "values": package.override_values(&cfg.workload, &run)}],
    });
    let probe = Probe {
        admin: &admin,
        tracker: &tracker,
        server,
        cfg,
    };
    tracing::info!("deploying {name}:{version} to every edge");
    let (phase, dep) = probe
        .change(
            "create deployment (1.0.0)",
            n,
            package.holds(version),
            n,
            None,
            || {
                let admin = admin.clone();
                let create = create.clone();
                async move { Ok(Some(admin.create_deployment(&create).await?)) }
            },
        )
        .await?;
    report.phases.push(phase);
    let dep = dep.unwrap_or_default();

    // The server writes the statuses of the change 5 s after it: not during the lists.
    tokio::time::sleep(cfg.pause).await;
    tracing::info!("resource lists");
    let lists = bounded(
        "resource lists",
        cfg.phase_timeout,
        crate::lists::measure(&admin, &dep, n, package.apps, server),
    )
    .await??;
    tracing::info!(
        walk_p50_ms = lists.walk.p50_ms,
        page_p50_ms = lists.page.p50_ms,
        page_p99_ms = lists.page.p99_ms,
        fleet_concurrent_seconds = lists.fleet_concurrent_seconds,
        "resource lists done"
    );
    report.resource_lists = Some(lists);

    tracing::info!("upgrading to {upgrade}");
    let update = json!({
        "appName": name, "appVersion": upgrade, "displayName": display,
        "allAppTargetClusters": targets,
    });
    let (phase, _) = probe
        .change(
            "update deployment (1.0.0 → 1.1.0)",
            n,
            package.holds(upgrade),
            n,
            Some(&dep),
            || {
                let admin = admin.clone();
                let update = update.clone();
                let dep = dep.clone();
                async move {
                    admin.update_deployment(&dep, &update).await?;
                    Ok(None)
                }
            },
        )
        .await?;
    report.phases.push(phase);

    // One edge loses the target label, then gets it back.
    let k = n / 2;
    let edge = fleet.edges[k].name.clone();
    tracing::info!(edge = %edge, "relabelling one edge out of the target");
    let out: Want = Box::new(move |i, d: &DesiredState| i == k && d.deployments.is_empty());
    let (phase, _) = probe
        .change(
            "relabel 1 edge (loses it)",
            1,
            out,
            n - 1,
            Some(&dep),
            || {
                let admin = admin.clone();
                let edge = edge.clone();
                async move {
                    admin.set_edge_labels(&edge, &[("sim", "no")]).await?;
                    Ok(None)
                }
            },
        )
        .await?;
    report.phases.push(phase);
    let back: Want = Box::new(move |i, d: &DesiredState| {
        i == k && d.deployments.iter().any(|x| x.package_version == upgrade)
    });
    let (phase, _) = probe
        .change("relabel 1 edge (gains it)", 1, back, n, Some(&dep), || {
            let admin = admin.clone();
            let edge = edge.clone();
            async move {
                admin.set_edge_labels(&edge, &[("sim", "yes")]).await?;
                Ok(None)
            }
        })
        .await?;
    report.phases.push(phase);

    if cfg.failover {
        report.failover = Some(failover(&probe, &fleet, &dep).await?);
    }

    report.server_end = server.and_then(|p| p.footprint().ok());
    let counters = tracker.counters();
    report.agent_errors = counters.errors;
    report.agent_throttled = counters.throttled;
    report.agent_error_samples = tracker.error_samples();
    let edges: Vec<String> = fleet.edges.iter().map(|e| e.name.clone()).collect();
    fleet.stop().await;
    report.sim_end = me.footprint().unwrap_or_default();
    if cleanup {
        // A server we did not start is left as we found it: no deployment, no edges.
        tracing::info!("removing the deployment and the simulated edges");
        admin.delete_deployment(&dep).await?;
        use futures::StreamExt as _;
        let mut removals = futures::stream::iter(edges)
            .map(|e| {
                let admin = admin.clone();
                async move { admin.remove_edge(&e).await }
            })
            .buffer_unordered(cfg.enroll_concurrency);
        while let Some(r) = removals.next().await {
            r?;
        }
    }
    Ok(report)
}

/// Kills the replica of the last further address and measures its edges moving (module docs,
/// step 8).
async fn failover(probe: &Probe<'_>, fleet: &Fleet, dep: &str) -> Result<FailoverReport, SimError> {
    let cfg = probe.cfg;
    let home = cfg.more_servers.len();
    let (Some(killed), Some(pid)) = (cfg.more_servers.last(), cfg.more_server_pids.last()) else {
        return Err(SimError::Config(
            "--failover needs a second --server and its --server-pid".into(),
        ));
    };
    let moved: Vec<bool> = fleet.edges.iter().map(|e| e.home == home).collect();
    let edges_moved = moved.iter().filter(|m| **m).count();
    tokio::time::sleep(cfg.pause).await;
    tracing::info!(server = %killed, pid, edges = edges_moved, "killing a replica");
    let cpu0 = cpu(probe.server);
    probe.tracker.begin_failover(killed, moved);
    kill_replica(*pid)?;
    let all = probe.tracker.wait_failed_over(cfg.phase_timeout).await;
    let fresh_at = Instant::now();
    let result = probe.tracker.finish_failover();
    if !all {
        return Err(SimError::Timeout {
            phase: "failover".into(),
            seconds: cfg.phase_timeout.as_secs(),
            detail: format!(
                "of {} edges of {killed}, {} answered by another replica, {} with a fresh status; agent errors: {:?}",
                result.expected,
                result.connected.len(),
                result.fresh.len(),
                probe.tracker.error_samples()
            ),
        });
    }
    let status = probe
        .wait_running(dep, cfg.edges, fresh_at, cfg.phase_timeout)
        .await?;
    let Some(confirmed) = status.running_after else {
        return Err(SimError::Timeout {
            phase: "failover: RUNNING on the survivors".into(),
            seconds: cfg.phase_timeout.as_secs(),
            detail: format!(
                "last state {} with {} of {} running",
                status.last_state, status.last_running, cfg.edges
            ),
        });
    };
    let cpu1 = cpu(probe.server);
    let report = FailoverReport {
        killed_server: killed.clone(),
        edges_moved,
        connected: Latency::of(&result.connected),
        fresh: Latency::of(&result.fresh),
        redelivered: result.redelivered,
        agent_errors: result.errors,
        running_confirmed_ms: ms(confirmed),
        survivor_cpu_seconds: cpu0.zip(cpu1).map(|(a, b)| b.cpu_seconds - a.cpu_seconds),
    };
    tracing::info!(
        connected_max_ms = report.connected.max_ms,
        fresh_max_ms = report.fresh.max_ms,
        redelivered = report.redelivered,
        "failover done"
    );
    Ok(report)
}

/// Sends SIGKILL to `pid`, once it is known to be a `canopy server` process (a wrong pid must
/// not kill something else).
fn kill_replica(pid: u32) -> Result<(), SimError> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|source| SimError::Io {
        what: format!("reading the command line of replica process {pid}"),
        source,
    })?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let is_canopy = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "canopy");
    if !is_canopy || !args.iter().any(|a| a == "server") {
        return Err(SimError::Config(format!(
            "process {pid} is not a `canopy server` ({}): refusing to kill it",
            args.join(" ")
        )));
    }
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| SimError::Config(format!("{pid} is not a process id")))?;
    rustix::process::kill_process(target, rustix::process::Signal::KILL).map_err(|e| SimError::Io {
        what: format!("killing replica process {pid}"),
        source: e.into(),
    })
}

async fn bounded<T>(
    phase: &str,
    limit: Duration,
    f: impl std::future::Future<Output = T>,
) -> Result<T, SimError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| SimError::Timeout {
            phase: phase.to_string(),
            seconds: limit.as_secs(),
            detail: "--phase-timeout reached".into(),
        })
}

/// Runs one change and measures how it reaches the fleet.
struct Probe<'a> {
    admin: &'a Admin,
    tracker: &'a Tracker,
    server: Option<Proc>,
    cfg: &'a SimConfig,
}

impl Probe<'_> {
    /// Starts a phase expecting `touched` edges to receive a state `want` accepts, makes the
    /// change (`request`, which may name the deployment it created), then waits for delivery
    /// and for the deployment (given, or the one created) to be RUNNING on `running` edges.
    async fn change<F, Fut>(
        &self,
        name: &str,
        touched: usize,
        want: Want,
        running: usize,
        deployment: Option<&str>,
        request: F,
    ) -> Result<(PhaseReport, Option<String>), SimError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, SimError>>,
    {
        let limit = self.cfg.phase_timeout;
        tokio::time::sleep(self.cfg.pause).await;
        tracing::info!(phase = name, "change");
        self.tracker.begin(touched, want);
        let cpu0 = cpu(self.server);
        let me0 = Proc::current().cpu().ok();
        let t0 = Instant::now();
        let created = request().await?;
        let request_ms = ms(t0.elapsed());
        let id = created
            .clone()
            .or_else(|| deployment.map(str::to_string))
            .unwrap_or_default();
        let (delivered, status) = tokio::join!(
            self.tracker.wait_delivered(limit),
            self.wait_running(&id, running, t0, limit)
        );
        let cpu1 = cpu(self.server);
        let me1 = Proc::current().cpu().ok();
        let result: PhaseResult = self.tracker.finish();
        let status = status?;
        if !delivered {
            return Err(SimError::Timeout {
                phase: format!("{name}: delivery"),
                seconds: limit.as_secs(),
                detail: format!(
                    "{} of {} edges received the change; agent errors: {:?}",
                    result.latencies.len(),
                    touched,
                    self.tracker.error_samples()
                ),
            });
        }
        let Some(running_after) = status.running_after else {
            return Err(SimError::Timeout {
                phase: format!("{name}: RUNNING"),
                seconds: limit.as_secs(),
                detail: format!(
                    "last state {} with {} of {} running",
                    status.last_state, status.last_running, running
                ),
            });
        };
        let report = PhaseReport {
            name: name.to_string(),
            edges_touched: touched,
            request_ms,
            delivery: Latency::of(&result.latencies),
            other_wakes: result.other_wakes,
            running_ms: Some(ms(running_after)),
            status_get: Latency::of(&status.gets),
            status_body_kib: status.last_bytes as f64 / 1024.0,
            server_cpu_seconds: cpu0.zip(cpu1).map(|(a, b)| b.cpu_seconds - a.cpu_seconds),
            sim_cpu_seconds: me0
                .zip(me1)
                .map_or(0.0, |(a, b)| b.cpu_seconds - a.cpu_seconds),
        };
        tracing::info!(
            phase = name,
            delivery_p50_ms = report.delivery.p50_ms,
            delivery_p99_ms = report.delivery.p99_ms,
            running_ms = running_after.as_millis() as u64,
            "phase done"
        );
        Ok((report, created))
    }

    /// Reads the deployment every `status_poll` until it is RUNNING with `expect` edges, all
    /// running.
    async fn wait_running(
        &self,
        id: &str,
        expect: usize,
        t0: Instant,
        limit: Duration,
    ) -> Result<Running, SimError> {
        let mut out = Running::default();
        let deadline = t0 + limit;
        let expect = expect as u64;
        loop {
            let s = self.admin.deployment_state(id).await?;
            out.gets.push(s.latency);
            out.last_bytes = s.bytes;
            out.last_running = s.running;
            let done = s.state == "RUNNING" && s.total == expect && s.running == expect;
            out.last_state = s.state;
            if done {
                out.running_after = Some(t0.elapsed());
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(self.cfg.status_poll).await;
        }
        out.gets.sort();
        Ok(out)
    }
}

#[derive(Default)]
struct Running {
    running_after: Option<Duration>,
    gets: Vec<Duration>,
    last_bytes: usize,
    last_state: String,
    last_running: u64,
}
