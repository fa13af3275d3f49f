//! The agent's Prometheus metrics (docs/OPERATIONS.md, "Metrics"), served by `canopy agent
//! --metrics-listen ADDR` (off by default; the binary serves them, see `canopy-metrics`).
//!
//! What an operator of one edge wants to see without the control plane: whether convergence
//! passes run and succeed, how many apps and workloads are in each state, which kinds of
//! engine errors happen, and when the control plane last took a report. Labels are bounded
//! words (pass kind, result, state, error kind): never an app, deployment or workload name.
//!
//! Cost: the handles are registered once at start; a pass records a few atomic updates.

use std::sync::Arc;

use canopy_metrics::{Counter, Gauge, Kind, Registry, Unit};
use canopy_proto::AppState;

use crate::driver::DriverError;

/// The app states, in the order of [`AgentMetrics::apps`].
const APP_STATES: [(AppState, &str); 4] = [
    (AppState::Deploying, "DEPLOYING"),
    (AppState::Running, "RUNNING"),
    (AppState::Down, "DOWN"),
    (AppState::Waiting, "WAITING"),
];

/// The workload states counted by name (a container's, a VM's, a pod's phase); any other is
/// `other`.
const WORKLOAD_STATES: [&str; 12] = [
    "created",
    "running",
    "restarting",
    "paused",
    "exited",
    "dead",
    "stopped",
    "Pending",
    "Running",
    "Succeeded",
    "Failed",
    "other",
];

/// The kinds of engine errors (one per [`DriverError`] variant).
const ERROR_KINDS: [&str; 8] = [
    "invalid_host",
    "unreachable",
    "engine",
    "unsupported",
    "no_such_workload",
    "vm",
    "open",
    "timeout",
];

fn error_kind(e: &DriverError) -> usize {
    match e {
        DriverError::InvalidHost { .. } => 0,
        DriverError::Unreachable { .. } => 1,
        DriverError::Engine { .. } => 2,
        DriverError::Unsupported { .. } => 3,
        DriverError::NoSuchWorkload { .. } => 4,
        DriverError::Vm { .. } => 5,
        DriverError::Open { .. } => 6,
        DriverError::Timeout { .. } => 7,
    }
}

/// The agent's metric handles (no-ops over a disabled registry). Cheap to share.
#[derive(Clone)]
pub struct AgentMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// Passes by kind (apply, observe) and result (ok, error).
    passes: [[Counter; 2]; 2],
    apps: [Gauge; APP_STATES.len()],
    workloads: [Gauge; WORKLOAD_STATES.len()],
    errors: [Counter; ERROR_KINDS.len()],
    last_report: Gauge,
    reports: Counter,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics")
            .field("registry", &self.inner.registry)
            .finish()
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics::new(Registry::disabled())
    }
}

impl AgentMetrics {
    /// Registers the agent's metrics on `registry`.
    pub fn new(registry: Registry) -> AgentMetrics {
        let r = &registry;
        r.describe(
            Kind::Counter,
            "canopy_agent_convergence_passes_total",
            None,
            "Convergence passes, by kind (apply: changes the edge; observe: only looks) and result",
        );
        r.describe(
            Kind::Gauge,
            "canopy_agent_apps",
            None,
            "Desired apps by state, as last reported",
        );
        r.describe(
            Kind::Gauge,
            "canopy_agent_workloads",
            None,
            "Workloads (containers, VMs, pods) by state, as last reported",
        );
        r.describe(
            Kind::Counter,
            "canopy_agent_engine_errors_total",
            None,
            "Convergence passes that failed on the engine, by kind of error",
        );
        r.describe(
            Kind::Gauge,
            "canopy_agent_last_report_timestamp_seconds",
            Some(Unit::Seconds),
            "When the control plane last accepted a status report (Unix time)",
        );
        r.describe(
            Kind::Counter,
            "canopy_agent_reports_sent_total",
            None,
            "Status reports the control plane accepted",
        );
        let pass = |kind: &'static str, result: &'static str| {
            r.counter(
                "canopy_agent_convergence_passes_total",
                &[("kind", kind.into()), ("result", result.into())],
            )
        };
        AgentMetrics {
            inner: Arc::new(Inner {
                passes: [
                    [pass("apply", "ok"), pass("apply", "error")],
                    [pass("observe", "ok"), pass("observe", "error")],
                ],
                apps: APP_STATES.map(|(_, s)| r.gauge("canopy_agent_apps", &[("state", s.into())])),
                workloads: WORKLOAD_STATES
                    .map(|s| r.gauge("canopy_agent_workloads", &[("state", s.into())])),
                errors: ERROR_KINDS
                    .map(|k| r.counter("canopy_agent_engine_errors_total", &[("kind", k.into())])),
                last_report: r.gauge("canopy_agent_last_report_timestamp_seconds", &[]),
                reports: r.counter("canopy_agent_reports_sent_total", &[]),
                registry,
            }),
        }
    }

    /// The registry the metrics are on.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// One convergence pass and its outcome.
    pub(crate) fn pass(&self, applied: bool, result: Result<(), &DriverError>) {
        let kind = usize::from(!applied);
        match result {
            Ok(()) => self.inner.passes[kind][0].increment(1),
            Err(e) => {
                self.inner.passes[kind][1].increment(1);
                self.inner.errors[error_kind(e)].increment(1);
            }
        }
    }

    /// Sets the app and workload gauges from a pass's statuses.
    pub(crate) fn states(&self, apps: &[canopy_proto::AppStatus]) {
        let mut by_app = [0u32; APP_STATES.len()];
        let mut by_workload = [0u32; WORKLOAD_STATES.len()];
        for a in apps {
            if let Some(i) = APP_STATES.iter().position(|(s, _)| *s == a.state) {
                by_app[i] += 1;
            }
            for w in &a.workloads {
                let i = WORKLOAD_STATES
                    .iter()
                    .position(|s| *s == w.state)
                    .unwrap_or(WORKLOAD_STATES.len() - 1);
                by_workload[i] += 1;
            }
        }
        for (g, n) in self.inner.apps.iter().zip(by_app) {
            g.set(f64::from(n));
        }
        for (g, n) in self.inner.workloads.iter().zip(by_workload) {
            g.set(f64::from(n));
        }
    }

    /// A status report the control plane accepted.
    pub(crate) fn reported(&self) {
        self.inner.reports.increment(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.inner.last_report.set(now.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_proto::{AppStatus, WorkloadStatus};

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn passes_errors_and_states_are_counted_by_bounded_labels() {
        let m = AgentMetrics::new(Registry::new());
        let apps = vec![
            AppStatus {
                app: "web".into(),
                state: AppState::Running,
                workloads: vec![WorkloadStatus {
                    state: "running".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            AppStatus {
                app: "db".into(),
                state: AppState::Down,
                workloads: vec![WorkloadStatus {
                    state: "someday-a-new-state".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ];
        m.pass(true, Ok(()));
        m.states(&apps);
        let unreachable = DriverError::Timeout {
            op: "inspect",
            target: "container web of deployment d".into(),
            timeout: std::time::Duration::from_secs(30),
        };
        m.pass(false, Err(&unreachable));
        m.pass(false, Err(&unreachable));
        m.reported();
        let text = m.registry().render();
        let at = |s| sample(&text, s);
        assert_eq!(
            at("canopy_agent_convergence_passes_total{kind=\"apply\",result=\"ok\"}"),
            Some(1.0)
        );
        assert_eq!(
            at("canopy_agent_convergence_passes_total{kind=\"observe\",result=\"error\"}"),
            Some(2.0)
        );
        assert_eq!(
            at("canopy_agent_engine_errors_total{kind=\"timeout\"}"),
            Some(2.0)
        );
        assert_eq!(
            at("canopy_agent_engine_errors_total{kind=\"engine\"}"),
            Some(0.0)
        );
        assert_eq!(at("canopy_agent_apps{state=\"RUNNING\"}"), Some(1.0));
        assert_eq!(at("canopy_agent_apps{state=\"DOWN\"}"), Some(1.0));
        assert_eq!(at("canopy_agent_workloads{state=\"running\"}"), Some(1.0));
        assert_eq!(at("canopy_agent_workloads{state=\"other\"}"), Some(1.0));
        assert_eq!(at("canopy_agent_reports_sent_total"), Some(1.0));
        assert!(at("canopy_agent_last_report_timestamp_seconds").unwrap() > 1.7e9);
        assert!(!text.contains("web") && !text.contains("someday"), "{text}");
    }
}
