//! When `--watch` stops before the deployment settles: an app fails on an edge in a way that
//! waiting will not fix. While a deployment rolls out the server keeps it `DEPLOYING` /
//! `UPDATING` whatever its apps report, so without this a watch of an image that cannot be
//! pulled would wait for its whole `--timeout`.
//!
//! Decided here, from what the server already serves (no new fields): the deployment's
//! clusters view says which edges have apps down; for a few of those per poll
//! ([`INSPECTED_EDGES`], round robin) the edge's last report (`GET .../edges/{id}/workloads`)
//! gives the agent's own state of each app (`AppState::Down` means the agent saw it fail, not
//! that it is still starting) and the state of each VM. An app that is down is:
//!
//! - **permanent** when its image cannot be pulled (a container's `cannot pull image ...`, a
//!   VM in `ERROR_IMAGE_PULL` / `ERROR_IMAGE_PULL_BACKOFF`) or the edge cannot run it (a VM in
//!   `ERROR_UNSCHEDULABLE`): the watch stops at once;
//! - **transient** when the message says something did not answer (a timeout, a refused or
//!   reset connection, a registry that is temporarily unavailable): the watch keeps waiting;
//! - otherwise a **failure** (a container that cannot start, exits, is unhealthy, a VM that
//!   keeps stopping): the watch stops when the agent has reported the same failure for
//!   `--fail-after` ([`FAIL_AFTER`] by default; numbers such as restart counts aside), that is
//!   after several of its attempts (it retries every few seconds).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use canopy_deploy::model::{Cluster, State};
use canopy_proto::{AppState, AppStatus};

use crate::cli::args::human_duration;

/// How long an app may report the same failure before the watch stops, by default.
pub const FAIL_AFTER: Duration = Duration::from_secs(60);
/// Most edges whose last report one poll fetches.
pub const INSPECTED_EDGES: usize = 10;
/// Most failing apps an error lists.
const SHOWN: usize = 10;

/// Words of failures that may pass by themselves (the engine, a registry or the network did
/// not answer), compared lowercased.
const TRANSIENT: &[&str] = &[
    "timeout",
    "timed out",
    "did not answer",
    "connection refused",
    "connection reset",
    "temporarily",
    "temporary failure",
    "try again",
    "tls handshake",
    "network is unreachable",
    "no route to host",
    "service unavailable",
    "too many requests",
    "unexpected eof",
    "broken pipe",
    "no container engine answers",
];

/// How bad a failing app is, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// May pass by itself: the watch keeps waiting.
    Transient,
    /// Stops the watch once reported the same for `--fail-after`.
    Failure,
    /// Waiting will not fix it (the reason, for people): stops the watch at once.
    Permanent(&'static str),
}

/// What one part of an agent's message (the agent joins its containers' messages with `; `)
/// says.
fn classify_part(part: &str) -> Class {
    let part = part.to_lowercase();
    if TRANSIENT.iter().any(|w| part.contains(w)) {
        Class::Transient
    } else if part.contains("cannot pull image") {
        Class::Permanent("the image cannot be pulled")
    } else {
        Class::Failure
    }
}

/// The class of an app as its edge last reported it; `None` unless the agent reports it down.
pub fn classify(app: &AppStatus) -> Option<Class> {
    if app.state != AppState::Down {
        return None;
    }
    let from_message = app
        .message
        .split("; ")
        .map(classify_part)
        .max()
        .unwrap_or(Class::Failure);
    let from_vms = app
        .workloads
        .iter()
        .filter(|w| classify_part(&w.message) != Class::Transient)
        .filter_map(|w| match w.state.as_str() {
            "ERROR_IMAGE_PULL" | "ERROR_IMAGE_PULL_BACKOFF" => Some(Class::Permanent(
                "the virtual machine's image cannot be fetched",
            )),
            "ERROR_UNSCHEDULABLE" => Some(Class::Permanent("the edge cannot run it")),
            _ => None,
        })
        .max();
    Some(from_message.max(from_vms.unwrap_or(Class::Transient)))
}

/// A message with its numbers blanked, so that a crash loop's growing restart count still
/// reads as the same failure.
fn shape(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_number = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            out.push(c);
            in_number = false;
        }
    }
    out
}

/// Server messages of an app that is on its way, not failing: the edge has not reported the
/// current generation yet, or the app waits for a dependency.
fn on_its_way(message: &str) -> bool {
    message == "not reported yet"
        || message.starts_with("waiting for the edge to apply generation")
        || message.starts_with("waiting for dependency")
}

/// The apps of `c` the server shows down with a message from the agent.
fn down_apps(c: &Cluster) -> impl Iterator<Item = (&str, &str)> {
    c.apps.iter().filter_map(|a| {
        let s = a.status.as_ref()?;
        (s.state == State::Down && !on_its_way(&s.message))
            .then_some((a.name.as_str(), s.message.as_str()))
    })
}

/// One app failing on one edge, as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Failing {
    pub edge: String,
    pub app: String,
    pub message: String,
    pub class: Class,
    /// Since when it has been reported with this shape and class.
    pub since: Instant,
}

/// What a watch has seen failing so far, per edge id and app.
#[derive(Debug)]
pub struct Failures {
    seen: BTreeMap<(String, String), Failing>,
    /// Round-robin position among the edges worth a look.
    next: usize,
    /// How long a [`Class::Failure`] may stay the same.
    fail_after: Duration,
}

impl Default for Failures {
    fn default() -> Failures {
        Failures::new(FAIL_AFTER)
    }
}

impl Failures {
    /// A watch that gives up on a failure reported the same for `fail_after`.
    pub fn new(fail_after: Duration) -> Failures {
        Failures {
            seen: BTreeMap::new(),
            next: 0,
            fail_after,
        }
    }

    /// Forgets apps that are no longer down (or whose edge left the view), then picks up to
    /// [`INSPECTED_EDGES`] of the edges with apps down to look at this poll.
    pub fn pick_edges<'c>(&mut self, clusters: &'c [Cluster]) -> Vec<&'c Cluster> {
        let by_id: BTreeMap<&str, &Cluster> = clusters.iter().map(|c| (c.id.as_str(), c)).collect();
        self.seen.retain(|(edge, app), _| {
            by_id.get(edge.as_str()).is_some_and(|c| {
                c.status.state == State::Down && down_apps(c).any(|(a, _)| a == app)
            })
        });
        let candidates: Vec<&Cluster> = clusters
            .iter()
            .filter(|c| c.status.state == State::Down && down_apps(c).next().is_some())
            .collect();
        if candidates.len() <= INSPECTED_EDGES {
            return candidates;
        }
        let start = self.next % candidates.len();
        self.next = start + INSPECTED_EDGES;
        candidates
            .iter()
            .cycle()
            .skip(start)
            .take(INSPECTED_EDGES)
            .copied()
            .collect()
    }

    /// Records what edge `c` last reported for the apps of deployment `deployment_id`. A report
    /// counts only when it is the one the clusters view shows (same message), so an older
    /// generation's failure is never taken for the current one's.
    pub fn observe(
        &mut self,
        c: &Cluster,
        reports: &[AppStatus],
        deployment_id: &str,
        now: Instant,
    ) {
        let shown: BTreeMap<&str, &str> = down_apps(c).collect();
        for r in reports.iter().filter(|r| r.deployment_id == deployment_id) {
            let key = (c.id.clone(), r.app.clone());
            let class = match shown.get(r.app.as_str()) {
                Some(m) if *m == r.message && !r.message.is_empty() => classify(r),
                _ => None,
            };
            let Some(class) = class else {
                self.seen.remove(&key);
                continue;
            };
            let same = self
                .seen
                .get(&key)
                .is_some_and(|f| f.class == class && shape(&f.message) == shape(&r.message));
            if same {
                if let Some(f) = self.seen.get_mut(&key) {
                    f.message.clone_from(&r.message);
                }
            } else {
                self.seen.insert(
                    key,
                    Failing {
                        edge: c.name.clone(),
                        app: r.app.clone(),
                        message: r.message.clone(),
                        class,
                        since: now,
                    },
                );
            }
        }
    }

    /// The failures that end the watch at `now`: every permanent one and every failure
    /// reported the same for `fail_after`; none means keep watching.
    pub fn verdict(&self, now: Instant) -> Vec<Failing> {
        let mut out: Vec<Failing> = self
            .seen
            .values()
            .filter(|f| match f.class {
                Class::Permanent(_) => true,
                Class::Failure => now.saturating_duration_since(f.since) >= self.fail_after,
                Class::Transient => false,
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| (&a.edge, &a.app).cmp(&(&b.edge, &b.app)));
        out
    }
}

/// The error that ends a watch on failures waiting will not fix.
#[derive(Debug)]
pub struct WatchFailed {
    /// `name (id)` of the deployment.
    pub deployment: String,
    pub failing: Vec<Failing>,
    /// When the verdict was reached (for "the same for 1m").
    pub at: Instant,
}

impl fmt::Display for WatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let edges: std::collections::BTreeSet<&str> =
            self.failing.iter().map(|x| x.edge.as_str()).collect();
        let n = self.failing.len();
        write!(
            f,
            "deployment {} is failing and waiting will not fix it: {n} app{} on {} edge{}",
            self.deployment,
            if n == 1 { "" } else { "s" },
            edges.len(),
            if edges.len() == 1 { "" } else { "s" },
        )?;
        for x in self.failing.iter().take(SHOWN) {
            let why = match x.class {
                Class::Permanent(reason) => reason.to_owned(),
                _ => format!(
                    "reported the same for {}",
                    human_duration(Duration::from_secs(
                        self.at.saturating_duration_since(x.since).as_secs()
                    ))
                ),
            };
            write!(
                f,
                "\n  {}, app {}: {} ({why})",
                x.edge,
                x.app,
                x.message.trim()
            )?;
        }
        if n > SHOWN {
            write!(f, "\n  … and {} more", n - SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for WatchFailed {}

#[cfg(test)]
mod tests {
    use canopy_deploy::model::{App, DeploymentStatus};
    use canopy_proto::{StatusKind, WorkloadStatus};

    use super::*;

    fn report(app: &str, state: AppState, message: &str) -> AppStatus {
        AppStatus {
            deployment_id: "d1".into(),
            app: app.into(),
            state,
            message: message.into(),
            deployment_generation: 1,
            workloads: Vec::new(),
        }
    }

    fn vm(state: &str, message: &str) -> WorkloadStatus {
        WorkloadStatus {
            kind: StatusKind::Vm,
            name: "tiny".into(),
            state: state.into(),
            message: message.into(),
            ..Default::default()
        }
    }

    /// An edge whose apps the server shows with these states and messages.
    fn cluster(id: &str, apps: &[(&str, State, &str)]) -> Cluster {
        let down = apps.iter().any(|(_, s, _)| *s != State::Running);
        Cluster {
            id: id.into(),
            name: format!("edge-{id}"),
            apps: apps
                .iter()
                .map(|(name, state, message)| App {
                    id: format!("b-{name}"),
                    name: (*name).into(),
                    status: Some(DeploymentStatus {
                        state: *state,
                        message: (*message).into(),
                        summary: None,
                    }),
                })
                .collect(),
            status: DeploymentStatus {
                state: if down { State::Down } else { State::Running },
                message: String::new(),
                summary: None,
            },
        }
    }

    const PULL: &str = "container web: cannot pull image 127.0.0.1:55000/nope:1: initializing \
                        source docker://127.0.0.1:55000/nope:1: reading manifest 1 in \
                        127.0.0.1:55000/nope: manifest unknown";

    #[test]
    fn classes_of_failures() {
        let c = |state, m: &str| classify(&report("web", state, m));
        assert_eq!(
            c(AppState::Deploying, "container web is not created yet"),
            None
        );
        assert_eq!(c(AppState::Waiting, "waiting for db"), None);
        assert_eq!(c(AppState::Running, ""), None);
        assert_eq!(
            c(AppState::Down, PULL),
            Some(Class::Permanent("the image cannot be pulled"))
        );
        assert_eq!(
            c(
                AppState::Down,
                "container web: cannot pull image r.example/x:1: dial tcp: connection refused"
            ),
            Some(Class::Transient)
        );
        assert_eq!(
            c(
                AppState::Down,
                "container web: cannot pull image x: the engine did not answer within 300 s"
            ),
            Some(Class::Transient)
        );
        assert_eq!(
            c(
                AppState::Down,
                "container web exited with code 1 after 3 restarts; restarting"
            ),
            Some(Class::Failure)
        );
        // One container's permanent failure outweighs another's transient one.
        assert_eq!(
            c(
                AppState::Down,
                &format!("container a: cannot start container a: i/o timeout; {PULL}")
            ),
            Some(Class::Permanent("the image cannot be pulled"))
        );
        let mut r = report(
            "vm",
            AppState::Down,
            "virtual machine tiny of app vm: image http://x/a.img: HTTP 404",
        );
        r.workloads = vec![vm("ERROR_IMAGE_PULL_BACKOFF", &r.message)];
        assert_eq!(
            classify(&r),
            Some(Class::Permanent(
                "the virtual machine's image cannot be fetched"
            ))
        );
        r.workloads = vec![vm(
            "ERROR_IMAGE_PULL",
            "image http://x/a.img: connection refused",
        )];
        r.message =
            "virtual machine tiny of app vm: image http://x/a.img: connection refused".into();
        assert_eq!(classify(&r), Some(Class::Transient));
        r.workloads = vec![vm(
            "ERROR_UNSCHEDULABLE",
            "this edge cannot run virtual machines: no qemu",
        )];
        r.message = r.workloads[0].message.clone();
        assert_eq!(
            classify(&r),
            Some(Class::Permanent("the edge cannot run it"))
        );
        r.workloads = vec![vm("CRASH_LOOP_BACKOFF", "keeps stopping")];
        r.message =
            "virtual machine tiny keeps stopping (3 times in a row); next start in 20 s".into();
        assert_eq!(classify(&r), Some(Class::Failure));
    }

    #[test]
    fn a_permanent_failure_ends_the_watch_at_once() {
        let t0 = Instant::now();
        let mut f = Failures::default();
        let c = cluster(
            "1",
            &[("web", State::Down, PULL), ("db", State::Running, "")],
        );
        let picked = f.pick_edges(std::slice::from_ref(&c));
        assert_eq!(picked.len(), 1);
        f.observe(
            &c,
            &[
                report("web", AppState::Down, PULL),
                report("db", AppState::Running, ""),
            ],
            "d1",
            t0,
        );
        let v = f.verdict(t0);
        assert_eq!(v.len(), 1);
        let e = WatchFailed {
            deployment: "shop-abcde (d1)".into(),
            failing: v,
            at: t0,
        };
        assert_eq!(
            e.to_string(),
            format!(
                "deployment shop-abcde (d1) is failing and waiting will not fix it: 1 app on 1 \
                 edge\n  edge-1, app web: {PULL} (the image cannot be pulled)"
            )
        );
    }

    #[test]
    fn a_failure_ends_the_watch_once_it_stays_the_same() {
        let t0 = Instant::now();
        let mut f = Failures::default();
        let m = |n: u32| format!("container web exited with code 1 after {n} restarts; restarting");
        for (i, secs) in [0u64, 20, 40, 59].into_iter().enumerate() {
            let c = cluster("1", &[("web", State::Down, &m(i as u32))]);
            assert_eq!(f.pick_edges(std::slice::from_ref(&c)).len(), 1);
            f.observe(
                &c,
                &[report("web", AppState::Down, &m(i as u32))],
                "d1",
                t0 + Duration::from_secs(secs),
            );
            assert!(
                f.verdict(t0 + Duration::from_secs(secs)).is_empty(),
                "{secs}"
            );
        }
        let at = t0 + FAIL_AFTER;
        let v = f.verdict(at);
        assert_eq!(v.len(), 1, "a crash loop counts as one failure");
        let e = WatchFailed {
            deployment: "d (d1)".into(),
            failing: v,
            at,
        };
        assert!(
            e.to_string()
                .ends_with("restarting (reported the same for 1m)"),
            "{e}"
        );

        // Another failure starts the count again; so does recovery.
        let c = cluster("1", &[("web", State::Down, "container web is unhealthy")]);
        f.pick_edges(std::slice::from_ref(&c));
        f.observe(
            &c,
            &[report("web", AppState::Down, "container web is unhealthy")],
            "d1",
            at,
        );
        assert!(f.verdict(at + Duration::from_secs(30)).is_empty());
        let c = cluster("1", &[("web", State::Running, "")]);
        assert!(f.pick_edges(std::slice::from_ref(&c)).is_empty());
        assert!(f.verdict(at + FAIL_AFTER * 2).is_empty());
    }

    #[test]
    fn fail_after_is_the_callers_choice() {
        let t0 = Instant::now();
        let mut f = Failures::new(Duration::from_secs(300));
        let m = "container web is unhealthy: no answer on /healthz";
        let c = cluster("1", &[("web", State::Down, m)]);
        f.pick_edges(std::slice::from_ref(&c));
        f.observe(&c, &[report("web", AppState::Down, m)], "d1", t0);
        assert!(f.verdict(t0 + Duration::from_secs(299)).is_empty());
        assert_eq!(f.verdict(t0 + Duration::from_secs(300)).len(), 1);
    }

    #[test]
    fn transient_failures_and_progress_never_end_the_watch() {
        let t0 = Instant::now();
        let mut f = Failures::default();
        let refused =
            "container web: cannot pull image r/x:1: dial tcp 10.0.0.1:443: connection refused";
        let c = cluster("1", &[("web", State::Down, refused)]);
        f.pick_edges(std::slice::from_ref(&c));
        f.observe(&c, &[report("web", AppState::Down, refused)], "d1", t0);
        assert!(f.verdict(t0 + FAIL_AFTER * 10).is_empty());

        // The agent still starting it, or not on this generation yet: not even looked at.
        for m in [
            "not reported yet",
            "waiting for the edge to apply generation 3 (it reports generation 2)",
        ] {
            let c = cluster("1", &[("web", State::Down, m)]);
            assert!(f.pick_edges(std::slice::from_ref(&c)).is_empty(), "{m}");
        }
        let starting = "container web is not created yet";
        let c = cluster("1", &[("web", State::Down, starting)]);
        assert_eq!(f.pick_edges(std::slice::from_ref(&c)).len(), 1);
        f.observe(
            &c,
            &[report("web", AppState::Deploying, starting)],
            "d1",
            t0,
        );
        assert!(f.verdict(t0 + FAIL_AFTER * 10).is_empty());

        // A report that is not the one the clusters view shows (another generation's) is not
        // taken.
        let c = cluster(
            "1",
            &[(
                "web",
                State::Down,
                "container web is created, not started yet",
            )],
        );
        f.pick_edges(std::slice::from_ref(&c));
        f.observe(&c, &[report("web", AppState::Down, PULL)], "d1", t0);
        assert!(f.verdict(t0).is_empty());
        // Nor another deployment's.
        let c = cluster("1", &[("web", State::Down, PULL)]);
        let mut other = report("web", AppState::Down, PULL);
        other.deployment_id = "d2".into();
        f.observe(&c, &[other], "d1", t0);
        assert!(f.verdict(t0).is_empty());
    }

    #[test]
    fn large_fleets_are_looked_at_a_few_edges_per_poll() {
        let clusters: Vec<Cluster> = (0..25)
            .map(|i| cluster(&format!("{i:02}"), &[("web", State::Down, PULL)]))
            .collect();
        let mut f = Failures::default();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let picked = f.pick_edges(&clusters);
            assert_eq!(picked.len(), INSPECTED_EDGES);
            seen.extend(picked.iter().map(|c| c.id.clone()));
        }
        assert_eq!(seen.len(), 25, "every edge gets its turn");

        let now = Instant::now();
        for c in &clusters {
            f.observe(c, &[report("web", AppState::Down, PULL)], "d1", now);
        }
        let e = WatchFailed {
            deployment: "d (d1)".into(),
            failing: f.verdict(now),
            at: now,
        };
        let text = e.to_string();
        assert!(text.contains(": 25 apps on 25 edges\n"), "{text}");
        assert!(text.ends_with("\n  … and 15 more"), "{text}");
    }

    #[test]
    fn numbers_do_not_change_a_failure_shape() {
        assert_eq!(
            shape("exited with code 137 after 12 restarts"),
            "exited with code # after # restarts"
        );
        assert_ne!(shape("a 1"), shape("b 1"));
    }
}
