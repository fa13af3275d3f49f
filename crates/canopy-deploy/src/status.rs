//! Status folding (section 6, "Status aggregation rules", with edges in place of Fleet
//! clusters): what agents report per application → one [`Cluster`] per targeted edge → one
//! [`DeploymentStatus`] per deployment → the project-wide [`DeploymentsStatus`] summary.
//!
//! Everything here is a pure function of its input, so the server can re-run it on every report
//! or timer tick (re-runnable, order-independent) and only has to persist what changed.

use std::collections::BTreeMap;
use std::time::Duration;

use canopy_proto::{AppState, AppStatus};
use sha2::{Digest, Sha256};

use crate::model::{App, Cluster, DeploymentStatus, DeploymentsStatus, State, Summary};

/// `summary.type` of a deployment's status: counts of clusters (edges).
pub const CLUSTER_COUNTS: &str = "clusterCounts";
/// `summary.type` of a cluster's status: counts of apps.
pub const APP_COUNTS: &str = "appCounts";

/// How many edge names a deployment message lists before "and N more".
const NAMES_IN_MESSAGE: usize = 3;

/// One application of a deployment on one edge, with the agent's latest status for it.
#[derive(Debug, Clone, Copy)]
pub struct EdgeAppReport<'a> {
    pub app: &'a str,
    /// `None` when the agent has not reported this application yet.
    pub status: Option<&'a AppStatus>,
}

/// One edge targeted by a deployment.
#[derive(Debug, Clone)]
pub struct EdgeInput<'a> {
    pub edge_id: &'a str,
    pub edge_name: &'a str,
    /// False when the agent has not been heard from within the check-in window.
    pub alive: bool,
    /// Time since the agent was last heard from; `None` = never connected.
    pub last_seen_age: Option<Duration>,
    /// The applications of this deployment targeted at this edge.
    pub apps: Vec<EdgeAppReport<'a>>,
}

/// A stable id for an application of a deployment (`App.id`): `b-` and 16 hex digits of a hash
/// of both (the reference uses its Fleet bundle name, `b-` + 16 characters, the same way).
pub fn app_id(deployment_id: &str, app: &str) -> String {
    let digest = Sha256::digest(format!("{deployment_id}/{app}").as_bytes());
    let mut s = String::from("b-");
    for b in &digest[..8] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `3m12s`, `45s`, `2h05m`, `3d4h`: a short human duration.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn app_status(report: &EdgeAppReport<'_>, generation: u64) -> DeploymentStatus {
    let (state, message) = match report.status {
        None => (State::Down, "not reported yet".to_string()),
        Some(s) if s.deployment_generation != generation => (
            State::Down,
            format!(
                "waiting for the edge to apply generation {generation} (it reports generation {})",
                s.deployment_generation
            ),
        ),
        Some(s) => match s.state {
            AppState::Running => (State::Running, s.message.clone()),
            AppState::Waiting => (
                State::Down,
                if s.message.is_empty() {
                    "waiting for dependency to become healthy".to_string()
                } else if s.message.starts_with("waiting") {
                    s.message.clone()
                } else {
                    format!("waiting for dependency: {}", s.message)
                },
            ),
            AppState::Deploying => (
                State::Down,
                if s.message.is_empty() {
                    "deploying".to_string()
                } else {
                    s.message.clone()
                },
            ),
            AppState::Down => (
                State::Down,
                if s.message.is_empty() {
                    "down".to_string()
                } else {
                    s.message.clone()
                },
            ),
        },
    };
    DeploymentStatus {
        state,
        message,
        summary: None,
    }
}

/// The status of one edge for one deployment (a reference `DeploymentCluster`):
///
/// - each application is `RUNNING` when the agent reports it running for the deployment's
///   current `deployment_generation`, else `DOWN` with the agent's message (or "not reported
///   yet", "waiting for the edge to apply generation N", "waiting for dependency ...");
/// - the edge is `RUNNING` unless an application is down (`DOWN`, messages joined as
///   `app: message; ...`), and `UNKNOWN` when the agent is silent (`edge silent for 3m12s; last
///   known state: RUNNING`, or "edge never connected"), applications keeping their last known
///   statuses;
/// - the summary counts applications (`appCounts`). `App.id` comes from `app_ids` (see
///   [`app_id`]).
pub fn cluster_status(
    edge: &EdgeInput<'_>,
    deployment_generation: u64,
    app_ids: &BTreeMap<String, String>,
) -> Cluster {
    let mut apps = Vec::with_capacity(edge.apps.len());
    let mut summary = Summary {
        total: 0,
        running: 0,
        down: 0,
        unknown: 0,
        summary_type: APP_COUNTS.to_string(),
    };
    let mut problems = Vec::new();
    for report in &edge.apps {
        let status = app_status(report, deployment_generation);
        summary.total += 1;
        match status.state {
            State::Running => summary.running += 1,
            _ => {
                summary.down += 1;
                problems.push(format!("{}: {}", report.app, status.message));
            }
        }
        apps.push(App {
            id: app_ids.get(report.app).cloned().unwrap_or_default(),
            name: report.app.to_string(),
            status: Some(status),
        });
    }
    let (state, message) = if problems.is_empty() {
        (State::Running, String::new())
    } else {
        (State::Down, problems.join("; "))
    };
    let (state, message) = if edge.alive {
        (state, message)
    } else {
        let silent = match edge.last_seen_age {
            None => "edge never connected".to_string(),
            Some(age) => format!(
                "edge silent for {}; last known state: {state}",
                format_duration(age)
            ),
        };
        (State::Unknown, silent)
    };
    Cluster {
        apps,
        id: edge.edge_id.to_string(),
        name: edge.edge_name.to_string(),
        status: DeploymentStatus {
            state,
            message,
            summary: Some(summary),
        },
    }
}

/// What the deployment fold needs besides its clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldInput {
    /// The deployment's generation (1 = never updated).
    pub generation: u64,
    /// Set by every spec change; cleared once the deployment settles ([`deployment_status`]'s
    /// second result).
    pub deploy_in_progress: bool,
    /// The deployment is being deleted.
    pub terminating: bool,
    /// Time since the deployment was created.
    pub age: Duration,
    /// How long a deployment may match no edge before it is `NO_TARGET_CLUSTERS` (the reference
    /// uses 5 minutes).
    pub no_target_grace: Duration,
}

impl FoldInput {
    fn in_progress_state(&self) -> State {
        if self.generation <= 1 {
            State::Deploying
        } else {
            State::Updating
        }
    }
}

/// Up to [`NAMES_IN_MESSAGE`] names (sorted, so the message does not depend on order), then
/// "and N more".
fn name_list(mut names: Vec<&str>) -> String {
    names.sort_unstable();
    let n = names.len();
    let mut s = names
        .iter()
        .take(NAMES_IN_MESSAGE)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if n > NAMES_IN_MESSAGE {
        s.push_str(&format!(" and {} more", n - NAMES_IN_MESSAGE));
    }
    s
}

fn edge_label(c: &Cluster) -> &str {
    if c.name.is_empty() { &c.id } else { &c.name }
}

/// The deployment's state from its clusters, in the reference controller's priority order:
///
/// 1. being deleted → `TERMINATING`;
/// 2. any edge `UNKNOWN` → `UNKNOWN`;
/// 3. no edge at all → `NO_TARGET_CLUSTERS` once `age ≥ no_target_grace`, before that
///    `DEPLOYING` (`UPDATING` after an update);
/// 4. any edge `DOWN` → `DEPLOYING` (generation 1) / `UPDATING` (later) while
///    `deploy_in_progress`, else `DOWN`;
/// 5. otherwise `RUNNING` — and only then is the deployment *settled* (the second result: the
///    caller clears `deploy_in_progress`).
///
/// The summary counts edges (`clusterCounts`). Messages say how many edges run it and name the
/// ones that do not (sorted, so the result does not depend on the order of `clusters`).
pub fn deployment_status(clusters: &[Cluster], input: &FoldInput) -> (DeploymentStatus, bool) {
    let mut summary = Summary {
        total: 0,
        running: 0,
        down: 0,
        unknown: 0,
        summary_type: CLUSTER_COUNTS.to_string(),
    };
    let mut down: Vec<&Cluster> = Vec::new();
    let mut unknown: Vec<&Cluster> = Vec::new();
    for c in clusters {
        summary.total += 1;
        match c.status.state {
            State::Running => summary.running += 1,
            State::Unknown => {
                summary.unknown += 1;
                unknown.push(c);
            }
            _ => {
                summary.down += 1;
                down.push(c);
            }
        }
    }
    let total = summary.total;
    let running = summary.running;
    let of = |n: u32| {
        format!(
            "{n} of {total} edge{} running",
            if total == 1 { "" } else { "s" }
        )
    };
    let detail = |cs: &[&Cluster]| -> String {
        // The first (by name) edge's message gives the reason; the rest are listed.
        let mut sorted: Vec<&Cluster> = cs.to_vec();
        sorted.sort_by(|a, b| edge_label(a).cmp(edge_label(b)).then(a.id.cmp(&b.id)));
        let first = sorted[0];
        let mut s = format!("{}: {}", edge_label(first), first.status.message);
        if sorted.len() > 1 {
            s.push_str(&format!(
                " (also {})",
                name_list(sorted[1..].iter().map(|c| edge_label(c)).collect())
            ));
        }
        s
    };

    let (state, message, settled) = if input.terminating {
        (
            State::Terminating,
            format!(
                "removing from {total} edge{}",
                if total == 1 { "" } else { "s" }
            ),
            false,
        )
    } else if !unknown.is_empty() {
        (
            State::Unknown,
            format!(
                "{}; {} not reporting: {}",
                of(running),
                unknown.len(),
                detail(&unknown)
            ),
            false,
        )
    } else if total == 0 {
        if input.age >= input.no_target_grace {
            (
                State::NoTargetClusters,
                "no edge matches the deployment's target clusters".to_string(),
                false,
            )
        } else {
            (
                input.in_progress_state(),
                "waiting for edges matching the deployment's target clusters".to_string(),
                false,
            )
        }
    } else if !down.is_empty() {
        let state = if input.deploy_in_progress {
            input.in_progress_state()
        } else {
            State::Down
        };
        (state, format!("{}; {}", of(running), detail(&down)), false)
    } else {
        (State::Running, of(running), true)
    };
    (
        DeploymentStatus {
            state,
            message,
            summary: Some(summary),
        },
        settled,
    )
}

/// The `/summary/deployments_status` counts over deployments (the reference's rules): an
/// `ERROR` deployment counts all its edges as error, a `TERMINATING` one all as terminating;
/// any other adds its running edges to `running` and its down edges to `deploying`
/// (`DEPLOYING`), `updating` (`UPDATING`) or `down` (anything else), except `UNKNOWN`, which
/// adds its unknown edges to `unknown`. `total` is the sum of every deployment's edges.
pub fn summarize(statuses: &[DeploymentStatus]) -> DeploymentsStatus {
    let mut out = DeploymentsStatus::default();
    for s in statuses {
        let zero = Summary::default();
        let sum = s.summary.as_ref().unwrap_or(&zero);
        out.total = out.total.saturating_add(sum.total);
        match s.state {
            State::Error => out.error = out.error.saturating_add(sum.total),
            State::Terminating => out.terminating = out.terminating.saturating_add(sum.total),
            state => {
                out.running = out.running.saturating_add(sum.running);
                match state {
                    State::Deploying => out.deploying = out.deploying.saturating_add(sum.down),
                    State::Updating => out.updating = out.updating.saturating_add(sum.down),
                    State::Unknown => out.unknown = out.unknown.saturating_add(sum.unknown),
                    _ => out.down = out.down.saturating_add(sum.down),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn st(app: &str, state: AppState, generation: u64, message: &str) -> AppStatus {
        AppStatus {
            deployment_id: "d".into(),
            app: app.into(),
            state,
            message: message.into(),
            deployment_generation: generation,
            workloads: vec![],
        }
    }

    fn edge<'a>(apps: Vec<EdgeAppReport<'a>>) -> EdgeInput<'a> {
        EdgeInput {
            edge_id: "e1",
            edge_name: "edge-one",
            alive: true,
            last_seen_age: Some(Duration::from_secs(5)),
            apps,
        }
    }

    fn ids() -> BTreeMap<String, String> {
        [("web".to_string(), app_id("d", "web"))].into()
    }

    #[test]
    fn app_ids_are_stable_and_distinct() {
        let a = app_id("d1", "web");
        assert_eq!(a, app_id("d1", "web"));
        assert_eq!(a.len(), 18);
        assert!(a.starts_with("b-"));
        assert_ne!(a, app_id("d2", "web"));
        assert_ne!(a, app_id("d1", "api"));
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(format_duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(format_duration(Duration::from_secs(273600)), "3d4h");
    }

    #[test]
    fn running_cluster() {
        let s = st("web", AppState::Running, 2, "");
        let c = cluster_status(
            &edge(vec![EdgeAppReport {
                app: "web",
                status: Some(&s),
            }]),
            2,
            &ids(),
        );
        assert_eq!(c.status.state, State::Running);
        assert_eq!(c.status.message, "");
        assert_eq!(c.id, "e1");
        assert_eq!(c.name, "edge-one");
        assert_eq!(c.apps[0].id, app_id("d", "web"));
        assert_eq!(c.apps[0].status.as_ref().unwrap().state, State::Running);
        let sum = c.status.summary.unwrap();
        assert_eq!((sum.total, sum.running, sum.down), (1, 1, 0));
        assert_eq!(sum.summary_type, APP_COUNTS);
    }

    #[test]
    fn app_down_reasons() {
        let old = st("web", AppState::Running, 1, "");
        let waiting = st("db", AppState::Waiting, 2, "");
        let waiting_msg = st("db", AppState::Waiting, 2, "api is not healthy");
        let deploying = st("web", AppState::Deploying, 2, "");
        let failed = st("web", AppState::Down, 2, "image pull failed");
        let bare_down = st("web", AppState::Down, 2, "");
        let case = |status: Option<&AppStatus>| {
            let c = cluster_status(&edge(vec![EdgeAppReport { app: "web", status }]), 2, &ids());
            assert_eq!(c.status.state, State::Down);
            assert_eq!(c.apps[0].status.as_ref().unwrap().state, State::Down);
            c.status.message
        };
        assert_eq!(case(None), "web: not reported yet");
        assert_eq!(
            case(Some(&old)),
            "web: waiting for the edge to apply generation 2 (it reports generation 1)"
        );
        assert_eq!(
            case(Some(&waiting)),
            "web: waiting for dependency to become healthy"
        );
        assert_eq!(
            case(Some(&waiting_msg)),
            "web: waiting for dependency: api is not healthy"
        );
        assert_eq!(case(Some(&deploying)), "web: deploying");
        assert_eq!(case(Some(&failed)), "web: image pull failed");
        assert_eq!(case(Some(&bare_down)), "web: down");
    }

    #[test]
    fn down_messages_appended() {
        let ok = st("web", AppState::Running, 1, "");
        let bad = st("db", AppState::Down, 1, "exited 1");
        let c = cluster_status(
            &edge(vec![
                EdgeAppReport {
                    app: "web",
                    status: Some(&ok),
                },
                EdgeAppReport {
                    app: "db",
                    status: Some(&bad),
                },
                EdgeAppReport {
                    app: "cache",
                    status: None,
                },
            ]),
            1,
            &ids(),
        );
        assert_eq!(c.status.state, State::Down);
        assert_eq!(c.status.message, "db: exited 1; cache: not reported yet");
        let sum = c.status.summary.unwrap();
        assert_eq!((sum.total, sum.running, sum.down), (3, 1, 2));
        assert_eq!(c.apps[1].id, "", "no id given");
    }

    #[test]
    fn silent_edge_is_unknown() {
        let ok = st("web", AppState::Running, 1, "");
        let mut e = edge(vec![EdgeAppReport {
            app: "web",
            status: Some(&ok),
        }]);
        e.alive = false;
        e.last_seen_age = Some(Duration::from_secs(192));
        let c = cluster_status(&e, 1, &ids());
        assert_eq!(c.status.state, State::Unknown);
        assert_eq!(
            c.status.message,
            "edge silent for 3m12s; last known state: RUNNING"
        );
        assert_eq!(
            c.apps[0].status.as_ref().unwrap().state,
            State::Running,
            "last known"
        );
        e.last_seen_age = None;
        e.apps[0].status = None;
        let c = cluster_status(&e, 1, &ids());
        assert_eq!(c.status.message, "edge never connected");
    }

    fn cluster(name: &str, state: State, message: &str) -> Cluster {
        Cluster {
            apps: vec![],
            id: format!("id-{name}"),
            name: name.into(),
            status: DeploymentStatus {
                state,
                message: message.into(),
                summary: None,
            },
        }
    }

    fn fold(generation: u64, in_progress: bool) -> FoldInput {
        FoldInput {
            generation,
            deploy_in_progress: in_progress,
            terminating: false,
            age: Duration::from_secs(600),
            no_target_grace: Duration::from_secs(300),
        }
    }

    #[test]
    fn fold_running_settles() {
        let cs = [
            cluster("a", State::Running, ""),
            cluster("b", State::Running, ""),
        ];
        let (s, settled) = deployment_status(&cs, &fold(1, true));
        assert_eq!(s.state, State::Running);
        assert!(settled);
        assert_eq!(s.message, "2 of 2 edges running");
        let sum = s.summary.unwrap();
        assert_eq!(
            (sum.total, sum.running, sum.down, sum.unknown),
            (2, 2, 0, 0)
        );
        assert_eq!(sum.summary_type, CLUSTER_COUNTS);
    }

    #[test]
    fn fold_terminating_first() {
        let cs = [cluster("a", State::Unknown, "")];
        let mut input = fold(1, true);
        input.terminating = true;
        let (s, settled) = deployment_status(&cs, &input);
        assert_eq!(s.state, State::Terminating);
        assert!(!settled);
        assert_eq!(s.message, "removing from 1 edge");
    }

    #[test]
    fn fold_unknown_before_down() {
        let cs = [
            cluster("b", State::Down, "web: x"),
            cluster(
                "a",
                State::Unknown,
                "edge silent for 3m12s; last known state: RUNNING",
            ),
            cluster("c", State::Running, ""),
        ];
        let (s, settled) = deployment_status(&cs, &fold(1, true));
        assert_eq!(s.state, State::Unknown);
        assert!(!settled);
        assert_eq!(
            s.message,
            "1 of 3 edges running; 1 not reporting: a: edge silent for 3m12s; last known state: RUNNING"
        );
        let sum = s.summary.unwrap();
        assert_eq!(
            (sum.total, sum.running, sum.down, sum.unknown),
            (3, 1, 1, 1)
        );
    }

    #[test]
    fn fold_no_targets() {
        let (s, _) = deployment_status(&[], &fold(1, true));
        assert_eq!(s.state, State::NoTargetClusters);
        let mut young = fold(1, true);
        young.age = Duration::from_secs(10);
        let (s, settled) = deployment_status(&[], &young);
        assert_eq!(s.state, State::Deploying);
        assert!(!settled);
        young.generation = 2;
        assert_eq!(deployment_status(&[], &young).0.state, State::Updating);
        let sum = deployment_status(&[], &young).0.summary.unwrap();
        assert_eq!(sum.total, 0);
    }

    #[test]
    fn fold_down_states() {
        let cs = [
            cluster("c", State::Down, "web: exited 1"),
            cluster("a", State::Running, ""),
            cluster("b", State::Down, "web: not reported yet"),
            cluster("", State::Down, "db: x"),
            cluster("e", State::Down, "x"),
            cluster("f", State::Down, "x"),
        ];
        let (s, settled) = deployment_status(&cs, &fold(1, true));
        assert_eq!(s.state, State::Deploying);
        assert!(!settled);
        assert_eq!(
            s.message,
            "1 of 6 edges running; b: web: not reported yet (also c, e, f and 1 more)"
        );
        assert_eq!(
            deployment_status(&cs, &fold(3, true)).0.state,
            State::Updating
        );
        assert_eq!(deployment_status(&cs, &fold(1, false)).0.state, State::Down);
        assert_eq!(deployment_status(&cs, &fold(3, false)).0.state, State::Down);
        let single = [cluster("a", State::Down, "web: x")];
        assert_eq!(
            deployment_status(&single, &fold(1, false)).0.message,
            "0 of 1 edge running; a: web: x"
        );
    }

    fn with_summary(
        state: State,
        total: u32,
        running: u32,
        down: u32,
        unknown: u32,
    ) -> DeploymentStatus {
        DeploymentStatus {
            state,
            message: String::new(),
            summary: Some(Summary {
                total,
                running,
                down,
                unknown,
                summary_type: CLUSTER_COUNTS.into(),
            }),
        }
    }

    #[test]
    fn summary_rules() {
        let s = summarize(&[
            with_summary(State::Error, 3, 1, 1, 1),
            with_summary(State::Terminating, 2, 2, 0, 0),
            with_summary(State::Running, 4, 4, 0, 0),
            with_summary(State::Deploying, 5, 2, 3, 0),
            with_summary(State::Updating, 2, 1, 1, 0),
            with_summary(State::Unknown, 3, 1, 1, 1),
            with_summary(State::Down, 2, 0, 2, 0),
            with_summary(State::NoTargetClusters, 0, 0, 0, 0),
            DeploymentStatus::default(),
        ]);
        assert_eq!(
            s,
            DeploymentsStatus {
                total: 21,
                running: 8,
                down: 2,
                deploying: 3,
                updating: 1,
                terminating: 2,
                error: 3,
                unknown: 1,
            }
        );
        assert_eq!(summarize(&[]), DeploymentsStatus::default());
    }

    fn state_strategy() -> impl Strategy<Value = State> {
        prop_oneof![
            Just(State::Running),
            Just(State::Down),
            Just(State::Unknown)
        ]
    }

    proptest! {
        /// Folding does not depend on the order in which clusters are listed.
        #[test]
        fn fold_is_order_independent(
            states in prop::collection::vec((state_strategy(), "[a-d]{1,2}", "[xy]{0,2}"), 0..8),
            generation in 1u64..4,
            in_progress: bool,
            terminating: bool,
            age in 0u64..600,
            seed in any::<u64>(),
        ) {
            let clusters: Vec<Cluster> = states
                .iter()
                .enumerate()
                .map(|(i, (s, name, msg))| Cluster {
                    apps: vec![],
                    id: format!("id{i}"),
                    name: name.clone(),
                    status: DeploymentStatus { state: *s, message: msg.clone(), summary: None },
                })
                .collect();
            let input = FoldInput {
                generation,
                deploy_in_progress: in_progress,
                terminating,
                age: Duration::from_secs(age),
                no_target_grace: Duration::from_secs(300),
            };
            let mut shuffled = clusters.clone();
            // A deterministic permutation from the seed.
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let a = deployment_status(&clusters, &input);
            let b = deployment_status(&shuffled, &input);
            prop_assert_eq!(a, b);
        }

        /// Summary counts always add up to the number of clusters.
        #[test]
        fn fold_counts_add_up(states in prop::collection::vec(state_strategy(), 0..10)) {
            let clusters: Vec<Cluster> = states.iter().enumerate()
                .map(|(i, s)| cluster(&format!("e{i}"), *s, "m"))
                .collect();
            let (s, settled) = deployment_status(&clusters, &fold(1, false));
            let sum = s.summary.unwrap();
            prop_assert_eq!(sum.total as usize, clusters.len());
            prop_assert_eq!(sum.running + sum.down + sum.unknown, sum.total);
            prop_assert_eq!(settled, s.state == State::Running);
        }
    }
}
