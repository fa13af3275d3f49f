//! What a pod's containers say, folded into the pod's phase, readiness and report (the
//! reference's Pod workload with its containers), and what that means for the app. Pure: the
//! engine-facing code gathers [`PodView`]s, this decides.

use canopy_proto::pods::RestartPolicy;
use canopy_proto::{AppState, Health, PodPhase, PortSpec, Protocol, StatusKind, WorkloadStatus};

use super::probe;

/// One (init) container of a pod, as observed.
#[derive(Debug, Clone, Default)]
pub struct MemberView {
    pub name: String,
    pub init: bool,
    pub image: String,
    /// Engine state (`running`, `exited`, ...); empty when the container does not exist.
    pub state: String,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub restarts: u32,
    pub created_at: String,
    /// When it last exited (RFC 3339), if it did.
    pub finished_at: String,
    /// Why it could not be made (pull, create, start), with Kubernetes' reason.
    pub failure: Option<(&'static str, String)>,
    /// Its probes' verdict, when it has probes and runs.
    pub probe: Option<probe::Status>,
    /// It has a readiness or startup probe (so it is not ready before the prober says so).
    pub probed: bool,
}

/// One pod, as observed.
#[derive(Debug, Clone, Default)]
pub struct PodView {
    pub name: String,
    pub owner_kind: &'static str,
    pub owner: String,
    pub restart_policy: Option<RestartPolicy>,
    pub infra_running: bool,
    pub created_at: String,
    pub ports: Vec<PortSpec>,
    /// Init containers first, in order, then the containers.
    pub members: Vec<MemberView>,
    /// Why it does not start yet (an earlier StatefulSet pod, a previous generation).
    pub waiting: Option<String>,
    /// Why the pod itself cannot be made.
    pub failure: Option<String>,
}

/// The verdict on a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    pub phase: PodPhase,
    pub ready: bool,
    /// What it means for its app (`Running` when all is well).
    pub state: AppState,
    /// Why it is not ready, for the app's message.
    pub message: Option<String>,
    pub report: WorkloadStatus,
}

/// Judges a pod (see the module doc and `docs/HELM.md`).
pub fn judge(p: &PodView) -> Verdict {
    let policy = p.restart_policy.unwrap_or(RestartPolicy::Always);
    let mut containers: Vec<WorkloadStatus> = Vec::new();
    let mut down: Vec<String> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut failed = false;
    let inits: Vec<&MemberView> = p.members.iter().filter(|m| m.init).collect();
    let apps: Vec<&MemberView> = p.members.iter().filter(|m| !m.init).collect();
    let pod = &p.name;

    if let Some(f) = &p.failure {
        down.push(format!("pod {pod}: {f}"));
    } else if let Some(w) = &p.waiting {
        pending.push(format!("pod {pod}: {w}"));
    } else if !p.infra_running {
        pending.push(format!("pod {pod} is being created"));
    }

    // Init containers run in order: the first one not done decides.
    let mut initialized = true;
    for (i, m) in inits.iter().enumerate() {
        let mut report = container_report(m);
        if !initialized {
            containers.push(report);
            continue;
        }
        let step = format!("Init:{i}/{}", inits.len());
        match (m.failure.as_ref(), m.state.as_str(), m.exit_code) {
            (Some((reason, why)), _, _) => {
                report.reason = (*reason).into();
                report.message = why.clone();
                down.push(format!("pod {pod}: init container {}: {why}", m.name));
                initialized = false;
            }
            (None, "exited" | "stopped" | "dead", Some(0)) => {}
            (None, "exited" | "stopped" | "dead", code) => {
                let code = code.unwrap_or(-1);
                report.reason = "Error".into();
                if policy == RestartPolicy::Never {
                    failed = true;
                    down.push(format!(
                        "pod {pod} failed: init container {} exited with code {code}",
                        m.name
                    ));
                } else {
                    down.push(format!(
                        "pod {pod}: init container {} exited with code {code}; retried",
                        m.name
                    ));
                }
                initialized = false;
            }
            (None, "running", _) => {
                pending.push(format!(
                    "pod {pod}: init container {} is running ({step})",
                    m.name
                ));
                initialized = false;
            }
            (None, _, _) => {
                report.state = "waiting".into();
                report.reason = "PodInitializing".into();
                if p.failure.is_none() && p.waiting.is_none() && p.infra_running {
                    pending.push(format!("pod {pod}: initializing ({step})"));
                }
                initialized = false;
            }
        }
        containers.push(report);
    }

    let mut all_ready = initialized && p.infra_running && p.failure.is_none();
    let (mut running, mut succeeded) = (0, 0);
    for m in &apps {
        let mut report = container_report(m);
        let what = format!("container {} of pod {pod}", m.name);
        let mut ready = false;
        if let Some((reason, why)) = &m.failure {
            report.reason = (*reason).into();
            report.message = why.clone();
            down.push(format!("{what}: {why}"));
        } else {
            match m.state.as_str() {
                "" => {
                    report.state = "waiting".into();
                    report.reason = if initialized {
                        "ContainerCreating"
                    } else {
                        "PodInitializing"
                    }
                    .into();
                    if initialized && p.infra_running && p.waiting.is_none() {
                        pending.push(format!("{what} is being created"));
                    }
                }
                "running" => {
                    running += 1;
                    ready = true;
                    match &m.probe {
                        Some(s) => {
                            if !s.started {
                                ready = false;
                                pending.push(with_last(
                                    format!("{what}: startup probe has not passed yet"),
                                    s,
                                    probe::Kind::Startup,
                                ));
                            } else if let Some(why) = &s.not_ready {
                                ready = false;
                                down.push(format!("{what} is not ready: {why}"));
                            } else if !s.ready {
                                ready = false;
                                pending.push(with_last(
                                    format!("{what} is not ready yet"),
                                    s,
                                    probe::Kind::Readiness,
                                ));
                            }
                            if s.restarts > 0 && !s.last_restart.is_empty() {
                                report.message = format!(
                                    "restarted {} times by the agent: {}",
                                    s.restarts, s.last_restart
                                );
                            }
                        }
                        None if m.probed => {
                            ready = false;
                            pending.push(format!("{what} is running; not probed yet"));
                        }
                        None => {}
                    }
                    report.health = if ready {
                        Health::Healthy
                    } else {
                        Health::Starting
                    };
                    if let Some(why) = m.probe.as_ref().and_then(|s| s.not_ready.as_ref()) {
                        report.health = Health::Unhealthy;
                        // The container's own line says why (the resource manager shows it).
                        report.message = why.clone();
                    }
                }
                "created" | "configured" | "initialized" => {
                    report.reason = "ContainerCreating".into();
                    pending.push(format!("{what} is created, not started yet"));
                }
                "restarting" => {
                    report.reason = "CrashLoopBackOff".into();
                    down.push(format!(
                        "{what} keeps exiting (code {}, {} restarts)",
                        m.exit_code.unwrap_or(-1),
                        m.restarts
                    ));
                }
                "exited" | "stopped" | "dead" => {
                    let code = m.exit_code.unwrap_or(-1);
                    report.reason = if m.oom_killed {
                        "OOMKilled"
                    } else if code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    }
                    .into();
                    match (policy, code) {
                        (RestartPolicy::Always, _) => {
                            if m.restarts > 0 {
                                report.reason = "CrashLoopBackOff".into();
                            }
                            down.push(format!(
                                "{what} exited with code {code}{}",
                                restarts_note(m.restarts)
                            ));
                        }
                        (_, 0) => succeeded += 1,
                        (RestartPolicy::OnFailure, _) => down.push(format!(
                            "{what} exited with code {code}{}",
                            restarts_note(m.restarts)
                        )),
                        (RestartPolicy::Never, _) => {
                            failed = true;
                            down.push(format!("pod {pod} failed: {what} exited with code {code}"));
                        }
                    }
                }
                other => {
                    pending.push(format!("{what} is {other}"));
                }
            }
        }
        report.ready = Some(ready);
        all_ready &= ready;
        containers.push(report);
    }

    let phase = if failed {
        PodPhase::Failed
    } else if !apps.is_empty() && succeeded == apps.len() {
        PodPhase::Succeeded
    } else if p.infra_running && initialized && running > 0 {
        PodPhase::Running
    } else {
        PodPhase::Pending
    };
    let ready = phase == PodPhase::Running && all_ready;
    let (state, message) = if !down.is_empty() {
        (AppState::Down, Some(down.join("; ")))
    } else if phase == PodPhase::Succeeded {
        (AppState::Running, None)
    } else if !ready {
        let m = if pending.is_empty() {
            format!("pod {pod} is not ready yet")
        } else {
            pending.join("; ")
        };
        (AppState::Deploying, Some(m))
    } else {
        (AppState::Running, None)
    };
    let report = WorkloadStatus {
        kind: StatusKind::Pod,
        name: p.name.clone(),
        image: apps.first().map(|m| m.image.clone()).unwrap_or_default(),
        state: phase.to_string(),
        message: message.clone().unwrap_or_default(),
        created_at: p.created_at.clone(),
        health: match state {
            AppState::Running => Health::Healthy,
            AppState::Down => Health::Unhealthy,
            _ => Health::Starting,
        },
        restarts: containers.iter().map(|c| c.restarts).sum(),
        ports: p.ports.clone(),
        ready: Some(ready),
        owner_kind: p.owner_kind.into(),
        owner: p.owner.clone(),
        containers,
        ..WorkloadStatus::default()
    };
    Verdict {
        phase,
        ready,
        state,
        message,
        report,
    }
}

fn container_report(m: &MemberView) -> WorkloadStatus {
    let exited = matches!(m.state.as_str(), "exited" | "stopped" | "dead");
    let reason = match (exited, m.exit_code) {
        (true, _) if m.oom_killed => "OOMKilled",
        (true, Some(0)) => "Completed",
        (true, _) => "Error",
        _ => "",
    };
    WorkloadStatus {
        reason: reason.into(),
        kind: StatusKind::Container,
        name: m.name.clone(),
        image: m.image.clone(),
        state: m.state.clone(),
        exit_code: m.exit_code.filter(|_| exited),
        created_at: m.created_at.clone(),
        restarts: m.restarts,
        init: m.init,
        ready: Some(false),
        ..WorkloadStatus::default()
    }
}

fn with_last(base: String, s: &probe::Status, kind: probe::Kind) -> String {
    match s.failing.iter().find(|(k, _)| *k == kind) {
        Some((_, why)) => format!("{base} ({why})"),
        None => base,
    }
}

fn restarts_note(n: u32) -> String {
    if n > 0 {
        format!(" after {n} restarts")
    } else {
        String::new()
    }
}

/// Published ports of a pod as reported (`PortSpec`s of the infra container's bindings).
pub fn ports(published: &[super::plan::Published]) -> Vec<PortSpec> {
    published
        .iter()
        .map(|p| PortSpec {
            container_port: p.container_port,
            host_port: Some(p.host_port),
            host_ip: p.host_ip.clone(),
            protocol: if p.udp { Protocol::Udp } else { Protocol::Tcp },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, init: bool, state: &str, code: Option<i64>) -> MemberView {
        MemberView {
            name: name.into(),
            init,
            image: "img".into(),
            state: state.into(),
            exit_code: code,
            ..Default::default()
        }
    }

    fn pod(members: Vec<MemberView>, policy: RestartPolicy) -> PodView {
        PodView {
            name: "web-0".into(),
            owner_kind: "StatefulSet",
            owner: "web".into(),
            restart_policy: Some(policy),
            infra_running: true,
            members,
            ..Default::default()
        }
    }

    #[test]
    fn running_and_ready_needs_inits_done_and_containers_ready() {
        let v = judge(&pod(
            vec![
                member("init", true, "exited", Some(0)),
                member("app", false, "running", None),
            ],
            RestartPolicy::Always,
        ));
        assert_eq!(
            (&v.phase, v.ready, v.state),
            (&PodPhase::Running, true, AppState::Running)
        );
        assert_eq!(v.report.kind, StatusKind::Pod);
        assert_eq!(v.report.pod_phase(), Some(PodPhase::Running));
        assert_eq!(v.report.containers.len(), 2);
        assert!(v.report.containers[0].init);
        assert_eq!(v.report.owner_kind, "StatefulSet");

        let initializing = judge(&pod(
            vec![
                member("init", true, "running", None),
                member("app", false, "", None),
            ],
            RestartPolicy::Always,
        ));
        assert_eq!(
            (initializing.phase, initializing.state),
            (PodPhase::Pending, AppState::Deploying)
        );
        assert!(
            initializing
                .message
                .unwrap()
                .contains("init container init is running (Init:0/1)")
        );
        assert_eq!(initializing.report.containers[1].reason, "PodInitializing");
    }

    #[test]
    fn readiness_gates_and_a_failing_probe_says_so() {
        let mut m = member("app", false, "running", None);
        m.probed = true;
        m.probe = Some(probe::Status {
            started: true,
            ready: false,
            not_ready: Some(
                "readiness probe failed: HTTP probe failed with statuscode: 404".into(),
            ),
            ..Default::default()
        });
        let v = judge(&pod(vec![m.clone()], RestartPolicy::Always));
        assert_eq!(
            (v.phase, v.ready, v.state),
            (PodPhase::Running, false, AppState::Down)
        );
        assert!(v.message.unwrap().contains("statuscode: 404"));
        assert_eq!(v.report.containers[0].health, Health::Unhealthy);
        assert_eq!(
            v.report.containers[0].message,
            "readiness probe failed: HTTP probe failed with statuscode: 404"
        );
        m.probe = None;
        let v = judge(&pod(vec![m], RestartPolicy::Always));
        assert_eq!(v.state, AppState::Deploying, "not probed yet");
    }

    #[test]
    fn terminated_pods_follow_their_restart_policy() {
        let done = judge(&pod(
            vec![member("job", false, "exited", Some(0))],
            RestartPolicy::Never,
        ));
        assert_eq!(
            (done.phase, done.state),
            (PodPhase::Succeeded, AppState::Running)
        );
        assert_eq!(done.report.containers[0].reason, "Completed");
        let failed = judge(&pod(
            vec![member("job", false, "exited", Some(3))],
            RestartPolicy::Never,
        ));
        assert_eq!(
            (failed.phase, failed.state),
            (PodPhase::Failed, AppState::Down)
        );
        assert!(failed.message.unwrap().contains("exited with code 3"));
        let mut crashing = member("web", false, "exited", Some(1));
        crashing.restarts = 4;
        let v = judge(&pod(vec![crashing], RestartPolicy::Always));
        assert_eq!(v.state, AppState::Down);
        assert_eq!(v.report.containers[0].reason, "CrashLoopBackOff");
        assert!(v.message.unwrap().contains("after 4 restarts"));
        let init_failed = judge(&pod(
            vec![
                member("init", true, "exited", Some(2)),
                member("app", false, "", None),
            ],
            RestartPolicy::Never,
        ));
        assert_eq!(init_failed.phase, PodPhase::Failed);
    }

    #[test]
    fn failures_and_waits_are_named() {
        let mut m = member("app", false, "", None);
        m.failure = Some(("ErrImagePull", "cannot pull image nope:1".into()));
        let v = judge(&pod(vec![m], RestartPolicy::Always));
        assert_eq!(v.state, AppState::Down);
        assert_eq!(v.report.containers[0].reason, "ErrImagePull");
        assert_eq!(
            v.message.unwrap(),
            "container app of pod web-0: cannot pull image nope:1"
        );
        let mut waiting = pod(vec![member("app", false, "", None)], RestartPolicy::Always);
        waiting.waiting = Some("waiting for pod web-0 to be ready".into());
        waiting.infra_running = false;
        let v = judge(&waiting);
        assert_eq!(v.state, AppState::Deploying);
        assert!(v.message.unwrap().contains("waiting for pod"));
    }
}
