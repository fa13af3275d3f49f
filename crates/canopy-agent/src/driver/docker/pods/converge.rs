//! The engine-facing half of Helm apps: one bounded, re-runnable pass over an app's pods,
//! Jobs and Services (see the parent module for what runs how).
//!
//! A pass never waits for a container to finish: it starts the next init container, the
//! containers, or a Job's next attempt when the previous step is seen done, so a pod comes up
//! over a few passes (the agent applies every few seconds while an app is not `RUNNING`).
//! Replacing a pod removes it whole (containers, infra, its own volumes) before its successor is
//! made, so host ports and names are free: pods are recreated, not rolled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, ContainerSummary, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, DownloadFromContainerOptions,
    UploadToContainerOptions,
};
use canopy_proto::pods::{
    Container, PodApp, PodField, PullPolicy, RestartPolicy, VolumeSource, Workload, WorkloadKind,
};
use canopy_proto::{
    AppInstance, AppState, AppStatus, DeploymentInstance, PodPhase, WorkloadControl,
};
use futures::{StreamExt, TryStreamExt};
use tracing::{debug, info, warn};

use super::plan::{self, AppPlan, PodPlan, VolumeKind};
use super::report::{self, MemberView, PodView};
use super::{body, files, job, pause, probe, proxy};
use crate::driver::deps;
use crate::driver::docker::report::{parse_time, restarts};
use crate::driver::docker::{API_TIMEOUT, DockerDriver, Mode, PassCache, hints};
use crate::driver::names;
use crate::driver::status::rank;

/// Bound of importing the pause image.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// An existing pod's containers, from the engine's list.
#[derive(Debug, Default)]
struct Found {
    workload: String,
    slot: u32,
    hash: String,
    names: Vec<String>,
}

/// What converging one pod learnt.
struct Outcome {
    view: PodView,
    ip: Option<IpAddr>,
    probes: Vec<probe::Spec>,
}

/// The app-wide context of a pass over one Helm app.
struct Cx<'a> {
    dep: &'a DeploymentInstance,
    app: &'a AppInstance,
    pods: &'a PodApp,
    plan: &'a AppPlan,
    network: String,
    may_start: bool,
}

impl DockerDriver {
    /// Converges one Helm app (see the module doc) and reports it.
    #[expect(
        clippy::too_many_arguments,
        reason = "one pass's context, passed down once"
    )]
    pub(in crate::driver::docker) async fn converge_pod_app(
        &self,
        dep: &DeploymentInstance,
        app: &AppInstance,
        pods: &PodApp,
        controls: &[WorkloadControl],
        problem: Option<String>,
        waiting_on: Vec<String>,
        existing: &[ContainerSummary],
        cache: &mut PassCache,
        mode: Mode,
    ) -> AppStatus {
        let owner = format!("{}/{}", dep.deployment_id, app.name);
        cache.pod_owners.insert(owner.clone());
        let plan = plan::plan(&plan::Context {
            scope: self.scope(),
            dep,
            app,
            pods,
            controls,
        });
        for n in &plan.notes {
            if self.note_once(&format!("{owner}: {n}")) {
                warn!(note = %n, "part of this Helm app cannot run as on Kubernetes");
            }
        }
        let may_start = mode == Mode::Apply && problem.is_none() && waiting_on.is_empty();
        let cx = Cx {
            dep,
            app,
            pods,
            plan: &plan,
            network: self.network_name(&dep.project, &app.namespace),
            may_start,
        };
        let mut problems: Vec<String> = plan.problems.clone();
        if let Some(p) = &problem {
            problems.push(format!("app {} {p}", app.name));
        }
        if may_start && let Err(why) = self.prepare_pods(&cx, cache).await {
            problems.push(why);
        }
        // Existing pods and service containers of this app.
        let mut found: BTreeMap<String, Found> = BTreeMap::new();
        let mut services: HashMap<String, String> = HashMap::new();
        for c in existing {
            let labels = c.labels.clone().unwrap_or_default();
            let name = super::super::summary_name(c);
            if labels.get(names::ROLE).map(String::as_str) == Some("service") {
                services.insert(
                    name,
                    labels.get(names::GENERATION).cloned().unwrap_or_default(),
                );
                continue;
            }
            let Some(pod) = labels.get(names::POD) else {
                continue;
            };
            let f = found.entry(pod.clone()).or_default();
            f.workload = labels.get(names::WORKLOAD).cloned().unwrap_or_default();
            f.slot = labels
                .get(names::SLOT)
                .and_then(|s| s.parse().ok())
                .unwrap_or_default();
            if labels.get(names::ROLE).map(String::as_str) == Some("infra") {
                f.hash = labels.get(names::GENERATION).cloned().unwrap_or_default();
            }
            f.names.push(name);
        }

        // Which existing pod each desired pod is (by name; by slot for `ignoreChanges`).
        let mut desired: Vec<PodPlan> = Vec::new();
        for p in &plan.pods {
            let w = &pods.workloads[p.workload];
            let adopted = if w.ignore_changes && !found.contains_key(&p.name) {
                found
                    .iter()
                    .find(|(_, f)| f.workload == w.name && f.slot == p.slot)
                    .map(|(n, f)| (n.clone(), f.hash.clone()))
            } else {
                None
            };
            desired.push(match adopted {
                Some((name, hash)) => PodPlan {
                    name: name.clone(),
                    hostname: name,
                    hash,
                    ..p.clone()
                },
                None => p.clone(),
            });
        }
        // A Job's attempts are the pods of its current template.
        let mut attempts: HashMap<usize, Vec<PodPlan>> = HashMap::new();
        for &j in &plan.jobs {
            let w = &pods.workloads[j];
            let t = &plan.templates[j];
            let mut list: Vec<PodPlan> = found
                .values()
                .filter(|f| f.workload == w.name && f.hash == t.hash)
                .map(|f| self.job_attempt(&cx, j, f.slot))
                .collect();
            list.sort_by_key(|p| p.slot);
            attempts.insert(j, list);
        }
        let keep: HashMap<&str, &str> = desired
            .iter()
            .chain(attempts.values().flatten())
            .map(|p| (p.name.as_str(), p.hash.as_str()))
            .collect();
        if mode == Mode::Apply {
            for (name, f) in &found {
                let stale = match keep.get(name.as_str()) {
                    None => true,
                    Some(hash) => !f.hash.is_empty() && f.hash != *hash,
                };
                if stale {
                    info!(pod = %name, "removing a pod that is no longer desired as it is");
                    self.remove_pod(&cx, name, &f.names).await;
                }
            }
            found.retain(|n, f| {
                keep.get(n.as_str())
                    .is_some_and(|h| f.hash.is_empty() || f.hash == *h)
            });
        }

        let mut verdicts: Vec<report::Verdict> = Vec::new();
        let mut endpoints: Vec<(usize, IpAddr, bool)> = Vec::new();
        let mut ready_pods: HashSet<String> = HashSet::new();
        for p in &desired {
            let exists = found.contains_key(&p.name);
            let waiting = match &p.after {
                Some(prev) if !exists && !ready_pods.contains(prev) => {
                    Some(format!("waiting for pod {prev} to be running and ready"))
                }
                _ => None,
            };
            let start = may_start && waiting.is_none();
            let o = self.converge_pod(&cx, p, exists, start, None, cache).await;
            let mut view = o.view;
            if !exists && view.waiting.is_none() {
                view.waiting = waiting;
            }
            let v = report::judge(&view);
            if v.ready {
                ready_pods.insert(p.name.clone());
            }
            if let Some(ip) = o.ip {
                endpoints.push((p.workload, ip, v.ready));
            }
            cache.probes.extend(o.probes);
            verdicts.push(v);
        }

        // Jobs.
        let mut job_lines: Vec<(AppState, String)> = Vec::new();
        for &j in &plan.jobs {
            let (state, line, mut job_verdicts) = self
                .converge_job(
                    &cx,
                    j,
                    attempts.remove(&j).unwrap_or_default(),
                    &found,
                    cache,
                )
                .await;
            job_lines.push((state, line));
            verdicts.append(&mut job_verdicts);
        }

        // Services.
        let proxy_errors = self
            .converge_services(&cx, &owner, &services, &endpoints, mode)
            .await;
        problems.extend(proxy_errors);

        // The app.
        let mut state = AppState::Running;
        let mut messages: Vec<(AppState, String)> = Vec::new();
        for p in &problems {
            messages.push((AppState::Down, p.clone()));
        }
        for v in &verdicts {
            if v.report.owner_kind == "Job" {
                continue;
            }
            if let Some(m) = &v.message {
                messages.push((v.state, m.clone()));
            }
            if rank(v.state) > rank(state) {
                state = v.state;
            }
        }
        for (s, line) in &job_lines {
            if *s != AppState::Running {
                messages.push((*s, line.clone()));
            }
        }
        for (s, _) in &messages {
            if rank(*s) > rank(state) {
                state = *s;
            }
        }
        let mut message: String = messages
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        if !waiting_on.is_empty() && state != AppState::Running && problem.is_none() {
            state = AppState::Waiting;
            message = deps::waiting_message(&waiting_on);
        }
        AppStatus {
            deployment_id: dep.deployment_id.clone(),
            app: app.name.clone(),
            state,
            message,
            deployment_generation: dep.generation,
            workloads: verdicts.into_iter().map(|v| v.report).collect(),
        }
    }

    fn job_attempt(&self, cx: &Cx<'_>, workload: usize, slot: u32) -> PodPlan {
        let pcx = plan::Context {
            scope: self.scope(),
            dep: cx.dep,
            app: cx.app,
            pods: cx.pods,
            controls: &[],
        };
        let mut p = cx.plan.job_pod(&pcx, workload, slot);
        // Attempts are never restarted by a pod delete: the template hash alone.
        p.hash = cx.plan.templates[workload].hash.clone();
        p
    }

    /// The app's network, the pause image and the claims' volumes.
    async fn prepare_pods(&self, cx: &Cx<'_>, cache: &mut PassCache) -> Result<(), String> {
        if !cache.networks.contains_key(&cx.network) {
            let r = self
                .ensure_network(&cx.network, &cx.dep.project, &cx.app.namespace)
                .await
                .map_err(|e| e.chain());
            cache.networks.insert(cx.network.clone(), r);
        }
        if let Some(Err(why)) = cache.networks.get(&cx.network) {
            return Err(why.clone());
        }
        self.ensure_pause().await?;
        for (volume, claim) in &cx.plan.claims {
            let workload = cx
                .pods
                .workloads
                .iter()
                .find(|w| {
                    w.volumes.iter().any(|v| {
                        matches!(&v.source, VolumeSource::ClaimTemplate { template, .. }
                            if claim.starts_with(&format!("{template}-{}-", w.name)))
                    })
                })
                .map(|w| w.name.as_str())
                .unwrap_or_default();
            let keep = cx.pods.claims.iter().any(|c| c.name == *claim && c.keep);
            let mut extra = vec![
                (names::VOLUME, claim.as_str()),
                (names::VOLUME_KIND, VolumeKind::Claim.label()),
                (names::WORKLOAD, workload),
            ];
            if keep {
                extra.push((names::KEEP, "true"));
            }
            let labels = names::pod_app_labels(self.scope(), cx.dep, cx.app, &extra);
            self.ensure_volume(volume, labels)
                .await
                .map_err(|e| e.chain())?;
        }
        Ok(())
    }

    /// Imports the pause image once, when the engine does not have it.
    async fn ensure_pause(&self) -> Result<(), String> {
        let mut ready = self.pods.pause_ready.lock().await;
        if *ready {
            return Ok(());
        }
        let target = format!("image {}", pause::IMAGE);
        match self
            .call(
                "inspect",
                &target,
                API_TIMEOUT,
                self.docker.inspect_image(pause::IMAGE),
            )
            .await
        {
            Ok(_) => {
                *ready = true;
                return Ok(());
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.chain()),
        }
        let rootfs = pause::rootfs(&self.pods.arch).ok_or_else(|| {
            format!(
                "Helm apps need the agent's pause image, which exists for amd64 and arm64 only; \
                 this engine runs on {}",
                self.pods.arch
            )
        })?;
        // The tag in `repo`: Podman ignores `tag` on imports.
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(pause::IMAGE.into()),
            ..Default::default()
        };
        let import = self
            .docker
            .create_image(Some(options), Some(bollard::body_full(rootfs.into())), None)
            .try_for_each(|_| futures::future::ready(Ok(())));
        self.call("import", &target, IMPORT_TIMEOUT, import)
            .await
            .map_err(|e| e.chain())?;
        self.call(
            "inspect",
            &target,
            API_TIMEOUT,
            self.docker.inspect_image(pause::IMAGE),
        )
        .await
        .map_err(|e| {
            format!(
                "the engine imported the pause image under another name: {}",
                e.chain()
            )
        })?;
        info!(image = pause::IMAGE, arch = %self.pods.arch, "imported the pause image of pods");
        *ready = true;
        Ok(())
    }

    /// Removes a pod: its containers (infra last), then its own volumes.
    async fn remove_pod(&self, cx: &Cx<'_>, pod: &str, containers: &[String]) {
        let infra =
            names::pod_container_name(self.scope(), &cx.dep.deployment_id, &cx.app.name, pod, None);
        for name in containers.iter().filter(|n| **n != infra) {
            if let Err(e) = self.stop_and_remove(name).await {
                warn!(container = %name, error = %e.chain(), "cannot remove a container of a pod yet");
            }
            self.failures.forget(name);
        }
        if let Err(e) = self.stop_and_remove(&infra).await {
            warn!(container = %infra, error = %e.chain(), "cannot remove a pod's infra container yet");
        }
        self.failures.forget(&infra);
        self.remove_pod_volumes(cx, pod).await;
    }

    async fn remove_pod_volumes(&self, cx: &Cx<'_>, pod: &str) {
        let extra = [
            (names::DEPLOYMENT, cx.dep.deployment_id.as_str()),
            (names::APP, cx.app.name.as_str()),
            (names::POD, pod),
        ];
        match self.list_volumes(&extra).await {
            Ok(list) => {
                for v in list {
                    if let Err(e) = self.remove_volume(&v).await {
                        warn!(volume = %v, error = %e.chain(), "cannot remove a pod's volume yet");
                    }
                }
            }
            Err(e) => debug!(error = %e.chain(), "cannot list a pod's volumes"),
        }
    }

    /// Brings one pod as far as it can go in this pass (see the module doc) and says where it
    /// stands. `job` is the Job start time label of an attempt.
    async fn converge_pod(
        &self,
        cx: &Cx<'_>,
        p: &PodPlan,
        exists: bool,
        may_start: bool,
        job: Option<&str>,
        cache: &mut PassCache,
    ) -> Outcome {
        let w = &cx.pods.workloads[p.workload];
        let t = &cx.plan.templates[p.workload];
        let infra = names::pod_container_name(
            self.scope(),
            &cx.dep.deployment_id,
            &cx.app.name,
            &p.name,
            None,
        );
        let member_name = |c: &str| {
            names::pod_container_name(
                self.scope(),
                &cx.dep.deployment_id,
                &cx.app.name,
                &p.name,
                Some(c),
            )
        };
        let policy = if w.kind == WorkloadKind::Job {
            RestartPolicy::Never
        } else {
            w.restart_policy
        };
        let mut view = PodView {
            name: p.name.clone(),
            owner_kind: kind_word(w.kind),
            owner: w.name.clone(),
            restart_policy: Some(policy),
            ports: report::ports(&t.published),
            ..Default::default()
        };
        let mut outcome_ip = None;

        let mut inspected = if exists {
            self.inspect(&infra).await.ok().flatten()
        } else {
            None
        };
        // A finished pod (restart policy other than Always) is left as it ended.
        let finished = policy != RestartPolicy::Always && exists && {
            let mut all_exited = !w.containers.is_empty();
            let mut all_zero = true;
            for c in &w.containers {
                let state = self
                    .inspect(&member_name(&c.name))
                    .await
                    .ok()
                    .flatten()
                    .and_then(|i| i.state)
                    .unwrap_or_default();
                let status = state.status.map(|s| s.to_string()).unwrap_or_default();
                all_exited &= matches!(status.as_str(), "exited" | "stopped" | "dead");
                all_zero &= state.exit_code == Some(0);
            }
            all_exited && (policy == RestartPolicy::Never || all_zero)
        };
        let infra_running = inspected
            .as_ref()
            .and_then(|i| i.state.as_ref())
            .and_then(|s| s.running)
            .unwrap_or(false);
        if finished {
            if infra_running && may_start {
                // Nothing runs in it any more: free its address.
                let _ = self.stop_container(&infra).await;
            }
        } else if inspected.is_some() && !infra_running && may_start {
            info!(pod = %p.name, "the pod's infra container is not running; recreating the pod");
            let list: Vec<String> = std::iter::once(infra.clone())
                .chain(
                    w.init_containers
                        .iter()
                        .chain(&w.containers)
                        .map(|c| member_name(&c.name)),
                )
                .collect();
            self.remove_pod(cx, &p.name, &list).await;
            inspected = None;
        }
        if inspected.is_none() && may_start {
            match self.create_pod(cx, p, &infra, job).await {
                Ok(()) => inspected = self.inspect(&infra).await.ok().flatten(),
                Err(why) => view.failure = Some(why),
            }
        } else if inspected.is_none()
            && let Some(why) = self.failures.last(&infra, &p.hash)
        {
            view.failure = Some(why);
        }
        if let Some(i) = &inspected {
            view.infra_running = i.state.as_ref().and_then(|s| s.running).unwrap_or(false);
            view.created_at = i.created.clone().unwrap_or_default();
            outcome_ip = i
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .and_then(|n| n.get(&cx.network))
                .and_then(|e| e.ip_address.as_deref())
                .and_then(|a| a.parse().ok());
            if finished {
                view.infra_running = true;
            }
        }
        let fields = self.pod_fields(p, outcome_ip, inspected.as_ref());
        let mountpoints = if may_start && inspected.is_some() && !finished {
            self.sub_path_mountpoints(w, p).await
        } else {
            HashMap::new()
        };
        let place = Place {
            cx,
            p,
            w,
            infra: &infra,
            fields: &fields,
            mountpoints: &mountpoints,
            policy,
        };

        // Init containers, in order.
        let mut initialized = view.infra_running;
        for c in &w.init_containers {
            let name = member_name(&c.name);
            let mut m = self.member_view(c, &name, true).await;
            if initialized && !finished {
                let done = m.state.as_str() == "exited" && m.exit_code == Some(0);
                if !done {
                    initialized = false;
                    if may_start && view.infra_running {
                        self.step_init(&place, c, &name, &mut m, cache).await;
                    } else if m.state.is_empty() {
                        m.failure = self
                            .failures
                            .last(&name, &p.hash)
                            .map(|w| ("Init:Error", w));
                    }
                }
            }
            view.members.push(m);
        }
        // The containers.
        let mut probes = Vec::new();
        for c in &w.containers {
            let name = member_name(&c.name);
            let mut m = self.member_view(c, &name, false).await;
            m.probed = c.readiness_probe.is_some() || c.startup_probe.is_some();
            if initialized && !finished && view.infra_running && may_start {
                self.step_container(&place, c, &name, &mut m, cache).await;
            } else if m.state.is_empty()
                && let Some(why) = self.failures.last(&name, &p.hash)
            {
                m.failure = Some(("CreateContainerError", why));
            }
            if m.state == "running" {
                let i = self.inspect(&name).await.ok().flatten();
                if let Some(spec) = i
                    .as_ref()
                    .and_then(|i| probe_spec(c, w, p, &name, outcome_ip, i))
                {
                    m.probe = self.pods.prober.status(&spec.id);
                    let by_probes = m.probe.as_ref().map_or(0, |s| s.restarts);
                    m.restarts = m.restarts.saturating_add(by_probes);
                    probes.push(spec);
                }
            }
            view.members.push(m);
        }
        Outcome {
            view,
            ip: outcome_ip,
            probes,
        }
    }

    /// Creates a pod's volumes and infra container (with its files), and starts it.
    async fn create_pod(
        &self,
        cx: &Cx<'_>,
        p: &PodPlan,
        infra: &str,
        job: Option<&str>,
    ) -> Result<(), String> {
        if let Some(why) = self.failures.backing_off(infra, &p.hash) {
            return Err(why);
        }
        let w = &cx.pods.workloads[p.workload];
        let t = &cx.plan.templates[p.workload];
        let result = async {
            // The pod's own volumes, fresh.
            for v in &p.volumes {
                let source = w
                    .volumes
                    .iter()
                    .find(|x| x.name == v.name)
                    .map(|x| &x.source);
                let labels = names::pod_app_labels(
                    self.scope(),
                    cx.dep,
                    cx.app,
                    &[
                        (names::POD, &p.name),
                        (names::VOLUME, &v.name),
                        (names::VOLUME_KIND, v.kind.label()),
                    ],
                );
                match (v.kind, source) {
                    (
                        VolumeKind::EmptyDir,
                        Some(VolumeSource::EmptyDir {
                            memory,
                            size_limit_bytes,
                        }),
                    ) => {
                        let mut opts = HashMap::new();
                        if *memory {
                            opts.insert("type".to_string(), "tmpfs".to_string());
                            opts.insert("device".to_string(), "tmpfs".to_string());
                            if let Some(size) = size_limit_bytes {
                                opts.insert("o".to_string(), format!("size={size}"));
                            }
                        }
                        self.remove_volume(&v.engine).await.map_err(|e| e.chain())?;
                        self.create_volume(&v.engine, labels, opts).await?;
                    }
                    (VolumeKind::Files, _) => {
                        self.remove_volume(&v.engine).await.map_err(|e| e.chain())?;
                        self.create_volume(&v.engine, labels, HashMap::new())
                            .await?;
                    }
                    _ => {}
                }
            }
            let staged: Vec<&plan::PodVolume> = p
                .volumes
                .iter()
                .filter(|v| {
                    v.kind == VolumeKind::Files
                        || w.init_containers.iter().chain(&w.containers).any(|c| {
                            c.volume_mounts.iter().any(|m| {
                                m.volume == v.name
                                    && m.sub_path.as_deref().is_some_and(|s| !s.is_empty())
                            })
                        })
                })
                .collect();
            let mut extra = vec![
                (names::POD, p.name.as_str()),
                (names::ROLE, "infra"),
                (names::WORKLOAD, w.name.as_str()),
                (names::GENERATION, p.hash.as_str()),
            ];
            let slot = p.slot.to_string();
            extra.push((names::SLOT, &slot));
            if let Some(start) = job {
                extra.push((names::JOB_START, start));
            }
            let labels = names::pod_app_labels(self.scope(), cx.dep, cx.app, &extra);
            let host_aliases = w
                .host_aliases
                .iter()
                .flat_map(|a| a.hostnames.iter().map(move |h| format!("{h}:{}", a.ip)))
                .collect();
            let request = body::infra(body::Infra {
                network: &cx.network,
                hostname: &p.hostname,
                aliases: &p.aliases,
                published: &t.published,
                labels,
                staged: staged.clone(),
                host_aliases,
            });
            self.create(infra, &cx.app.name, request).await?;
            // Files, then the subPath directories, through the infra container's mounts.
            for v in &staged {
                let Some(source) = w.volumes.iter().find(|x| x.name == v.name) else {
                    continue;
                };
                let path = format!("{}/{}", body::STAGING, v.name);
                if let VolumeSource::Files {
                    secret,
                    files: entries,
                    ..
                } = &source.source
                {
                    let owner = files_owner(w, &v.name);
                    let tar = files::archive(&v.name, entries, *secret, owner)?;
                    self.upload(infra, &path, tar).await?;
                } else {
                    let subs: Vec<&str> = w
                        .init_containers
                        .iter()
                        .chain(&w.containers)
                        .flat_map(|c| c.volume_mounts.iter())
                        .filter(|m| m.volume == v.name)
                        .filter_map(|m| m.sub_path.as_deref())
                        .filter(|s| !s.is_empty())
                        .collect();
                    for sub in subs {
                        if !body::sub_path_ok(sub) {
                            return Err(format!(
                                "volume {}: subPath {sub:?} must be relative, without `..`",
                                v.name
                            ));
                        }
                        let full = format!("{path}/{sub}");
                        if !self.path_exists(infra, &full).await {
                            self.upload(infra, &path, files::directory(sub)?).await?;
                        }
                    }
                }
            }
            self.start(infra, &cx.app.name)
                .await
                .map_err(|e| hints::explain(e.chain()))?;
            info!(pod = %p.name, "created pod");
            Ok(())
        }
        .await;
        if let Err(why) = &result {
            warn!(pod = %p.name, error = %why, "cannot create the pod; retried with backoff");
            self.discard(infra).await;
            self.remove_pod_volumes(cx, &p.name).await;
            return Err(self.failures.record(infra, &p.hash, why));
        }
        self.failures.forget(infra);
        result
    }

    /// One step of init container `c`: start it, retry it after a failure, or wait.
    async fn step_init(
        &self,
        place: &Place<'_>,
        c: &Container,
        name: &str,
        m: &mut MemberView,
        cache: &mut PassCache,
    ) {
        let hash = &place.p.hash;
        match m.state.as_str() {
            "" => {
                if let Some(why) = self.failures.backing_off(name, hash) {
                    m.failure = Some(("Init:CrashLoopBackOff", why));
                    return;
                }
                if let Err((reason, why)) = self.create_member(place, c, name, true, cache).await {
                    m.failure = Some((reason, why));
                    return;
                }
                *m = self.member_view(c, name, true).await;
            }
            "created" => {
                if let Err(e) = self.start(name, &place.cx.app.name).await {
                    let why = self.failures.record(name, hash, &hints::explain(e.chain()));
                    self.discard(name).await;
                    m.failure = Some(("Init:Error", why));
                }
            }
            "exited" | "stopped" | "dead" if m.exit_code != Some(0) => {
                if place.policy == RestartPolicy::Never {
                    return;
                }
                if let Some(why) = self.failures.backing_off(name, hash) {
                    m.failure = Some(("Init:CrashLoopBackOff", why));
                    return;
                }
                let why = self.failures.record(
                    name,
                    hash,
                    &format!("exited with code {}", m.exit_code.unwrap_or(-1)),
                );
                info!(container = %name, "init container failed; running it again after a backoff");
                let _ = self.stop_and_remove(name).await;
                m.failure = Some(("Init:CrashLoopBackOff", why));
            }
            _ => {}
        }
    }

    /// One step of container `c`: create and start it, or start it again when the engine
    /// did not (its restart policy says so).
    async fn step_container(
        &self,
        place: &Place<'_>,
        c: &Container,
        name: &str,
        m: &mut MemberView,
        cache: &mut PassCache,
    ) {
        let hash = &place.p.hash;
        let start_again = match m.state.as_str() {
            "created" => true,
            "exited" | "stopped" => match place.policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => m.exit_code != Some(0),
                RestartPolicy::Never => false,
            },
            _ => false,
        };
        if m.state.is_empty() {
            if let Some(why) = self.failures.backing_off(name, hash) {
                m.failure = Some(("CrashLoopBackOff", why));
                return;
            }
            if let Err((reason, why)) = self.create_member(place, c, name, false, cache).await {
                m.failure = Some((reason, why));
                return;
            }
            *m = self.member_view(c, name, false).await;
            m.probed = c.readiness_probe.is_some() || c.startup_probe.is_some();
        } else if start_again && self.pods.prober.restarting(name) {
            // Its liveness or startup probe failed and the engine is restarting it (stopping
            // it first): the engine starts it again, not us.
            debug!(container = %name, "being restarted for its probe: left to the engine");
        } else if start_again {
            if let Some(why) = self.failures.backing_off(name, hash) {
                m.failure = Some(("CrashLoopBackOff", why));
                return;
            }
            info!(container = %name, state = %m.state, "starting a pod's container again");
            if let Err(e) = self.start(name, &place.cx.app.name).await {
                let why = self.failures.record(name, hash, &hints::explain(e.chain()));
                m.failure = Some(("CrashLoopBackOff", why));
            }
        }
    }

    /// Creates and starts a pod's (init) container; the error carries Kubernetes' reason.
    async fn create_member(
        &self,
        place: &Place<'_>,
        c: &Container,
        name: &str,
        init: bool,
        cache: &mut PassCache,
    ) -> Result<(), (&'static str, String)> {
        let (cx, p, w) = (place.cx, place.p, place.w);
        let hash = &p.hash;
        self.ensure_pod_image(c, cx.app, cache)
            .await
            .map_err(|(reason, why)| (reason, self.failures.record(name, hash, &why)))?;
        if let Err(why) = self.check_non_root(c).await {
            return Err((
                "CreateContainerConfigError",
                self.failures.record(name, hash, &why),
            ));
        }
        let slot = p.slot.to_string();
        let labels = names::pod_app_labels(
            self.scope(),
            cx.dep,
            cx.app,
            &[
                (names::POD, &p.name),
                (names::ROLE, if init { "init" } else { "container" }),
                (names::WORKLOAD, &w.name),
                (names::SLOT, &slot),
                (names::GENERATION, hash),
                (names::CONTAINER, &c.name),
            ],
        );
        let request = body::member(
            c,
            body::Member {
                infra: place.infra,
                workload: w,
                labels,
                volumes: &p.volumes,
                mountpoints: place.mountpoints,
                fields: place.fields,
                restart: if init {
                    RestartPolicy::Never
                } else {
                    place.policy
                },
            },
        )
        .map_err(|why| {
            (
                "CreateContainerConfigError",
                self.failures.record(name, hash, &why),
            )
        })?;
        if let Err(why) = self.create(name, &cx.app.name, request).await {
            self.discard(name).await;
            return Err((
                "CreateContainerError",
                self.failures.record(name, hash, &why),
            ));
        }
        if let Err(e) = self.start(name, &cx.app.name).await {
            let why = hints::explain(e.chain());
            warn!(container = %name, error = %why, "start failed; removing the container to create it afresh next time");
            self.discard(name).await;
            return Err(("RunContainerError", self.failures.record(name, hash, &why)));
        }
        if !init {
            self.failures.forget(name);
        }
        info!(container = %name, image = %c.image, "created a pod's container");
        Ok(())
    }

    /// The image of `c` per its `imagePullPolicy` (pulls with the app's credentials).
    async fn ensure_pod_image(
        &self,
        c: &Container,
        app: &AppInstance,
        cache: &mut PassCache,
    ) -> Result<(), (&'static str, String)> {
        match c.image_pull_policy {
            PullPolicy::IfNotPresent => self
                .ensure_image(&c.image, &c.name, app, cache)
                .await
                .map_err(|why| ("ErrImagePull", why)),
            PullPolicy::Always => {
                let key = format!(
                    "always {} {}",
                    c.image,
                    app.registry_auth
                        .as_ref()
                        .map(|a| a.server.as_str())
                        .unwrap_or_default()
                );
                if let Some(r) = cache.images.get(&key) {
                    return r.clone().map_err(|why| ("ErrImagePull", why));
                }
                let target = format!("image {}", c.image);
                let r = self
                    .pull(&c.image, &target, app)
                    .await
                    .map_err(|e| e.chain());
                cache.images.insert(key, r.clone());
                r.map_err(|why| ("ErrImagePull", why))
            }
            PullPolicy::Never => {
                let target = format!("image {}", c.image);
                match self
                    .call(
                        "inspect",
                        &target,
                        API_TIMEOUT,
                        self.docker.inspect_image(&c.image),
                    )
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() => Err((
                        "ErrImageNeverPull",
                        format!(
                            "image {} is not present on this edge and its imagePullPolicy is Never",
                            c.image
                        ),
                    )),
                    Err(e) => Err(("ErrImagePull", e.chain())),
                }
            }
        }
    }

    /// `runAsNonRoot`: refused when the container would run as root.
    async fn check_non_root(&self, c: &Container) -> Result<(), String> {
        let s = &c.security;
        if !s.run_as_non_root {
            return Ok(());
        }
        match s.run_as_user {
            Some(0) => Err(format!(
                "container {}: runAsNonRoot is set but runAsUser is 0",
                c.name
            )),
            Some(_) => Ok(()),
            None => {
                let user = self
                    .docker
                    .inspect_image(&c.image)
                    .await
                    .ok()
                    .and_then(|i| i.config)
                    .and_then(|c| c.user)
                    .unwrap_or_default();
                let uid = user.split(':').next().unwrap_or_default();
                match uid {
                    "" | "0" | "root" => Err(format!(
                        "container {}: runAsNonRoot is set and image {} runs as root (set \
                         runAsUser)",
                        c.name, c.image
                    )),
                    u if u.parse::<u64>().is_err() => Err(format!(
                        "container {}: runAsNonRoot is set and image {} names its user ({u}), \
                         not a number the agent can check (set runAsUser)",
                        c.name, c.image
                    )),
                    _ => Ok(()),
                }
            }
        }
    }

    /// What an (init) container of a pod looks like now.
    async fn member_view(&self, c: &Container, name: &str, init: bool) -> MemberView {
        let mut m = MemberView {
            name: c.name.clone(),
            init,
            image: c.image.clone(),
            ..Default::default()
        };
        if let Ok(Some(i)) = self.inspect(name).await {
            let state = i.state.clone().unwrap_or_default();
            m.state = state.status.map(|s| s.to_string()).unwrap_or_default();
            m.exit_code = state.exit_code;
            m.oom_killed = state.oom_killed.unwrap_or(false);
            m.finished_at = state.finished_at.unwrap_or_default();
            m.restarts = restarts(&i);
            m.created_at = i.created.clone().unwrap_or_default();
        }
        m
    }

    /// Values of `fieldRef` env variables for this pod.
    fn pod_fields(
        &self,
        p: &PodPlan,
        ip: Option<IpAddr>,
        infra: Option<&ContainerInspectResponse>,
    ) -> HashMap<PodField, String> {
        use sha2::{Digest, Sha256};
        let id = infra.and_then(|i| i.id.clone()).unwrap_or_default();
        let h = Sha256::digest(format!("{id} {}", p.name).as_bytes());
        let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let uid = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        );
        HashMap::from([
            (PodField::PodName, p.name.clone()),
            (PodField::PodUid, uid),
            (
                PodField::PodIp,
                ip.map(|i| i.to_string()).unwrap_or_default(),
            ),
            (PodField::NodeName, crate::driver::hostname()),
            (
                PodField::HostIp,
                crate::driver::addresses()
                    .into_iter()
                    .next()
                    .unwrap_or_default(),
            ),
            (PodField::ServiceAccountName, "default".to_string()),
        ])
    }

    /// The engine's host paths of the pod's volumes that a mount uses with a `subPath`.
    async fn sub_path_mountpoints(&self, w: &Workload, p: &PodPlan) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for v in &p.volumes {
            let used = w.init_containers.iter().chain(&w.containers).any(|c| {
                c.volume_mounts.iter().any(|m| {
                    m.volume == v.name && m.sub_path.as_deref().is_some_and(|s| !s.is_empty())
                })
            });
            if !used {
                continue;
            }
            if let Ok(i) = self.docker.inspect_volume(&v.engine).await
                && !i.mountpoint.is_empty()
            {
                out.insert(v.engine.clone(), i.mountpoint);
            }
        }
        out
    }

    /// Runs (and ends) a Job's attempts; returns the Job's state for the app, its line, and its
    /// pods' verdicts.
    async fn converge_job(
        &self,
        cx: &Cx<'_>,
        j: usize,
        attempts: Vec<PodPlan>,
        found: &BTreeMap<String, Found>,
        cache: &mut PassCache,
    ) -> (AppState, String, Vec<report::Verdict>) {
        let w = &cx.pods.workloads[j];
        let spec = w.job.clone().unwrap_or(canopy_proto::pods::JobSpec {
            completions: 1,
            parallelism: 1,
            backoff_limit: 6,
            active_deadline_seconds: None,
            ttl_seconds_after_finished: None,
        });
        // The Job's start: kept on every attempt's infra container.
        let mut started: Option<String> = None;
        for a in &attempts {
            let infra = names::pod_container_name(
                self.scope(),
                &cx.dep.deployment_id,
                &cx.app.name,
                &a.name,
                None,
            );
            if let Ok(Some(i)) = self.inspect(&infra).await
                && let Some(s) = crate::driver::docker::report::label_of(&i, names::JOB_START)
            {
                started = Some(match started {
                    Some(old) if old.as_str() <= s => old,
                    _ => s.to_string(),
                });
            }
        }
        let mut verdicts = Vec::new();
        let mut observed = Vec::new();
        for a in &attempts {
            let exists = found.contains_key(&a.name);
            let o = self
                .converge_pod(cx, a, exists, cx.may_start, started.as_deref(), cache)
                .await;
            cache.probes.extend(o.probes);
            let v = report::judge(&o.view);
            let finished_at = o
                .view
                .members
                .iter()
                .filter(|m| !m.init)
                .filter_map(|m| parse_time(&m.finished_at))
                .max();
            let exit_code = o
                .view
                .members
                .iter()
                .filter(|m| m.exit_code.is_some_and(|c| c != 0))
                .find_map(|m| m.exit_code);
            let state = match v.phase {
                PodPhase::Succeeded => job::AttemptState::Succeeded,
                PodPhase::Failed => job::AttemptState::Failed,
                _ => job::AttemptState::Active,
            };
            observed.push(job::Attempt {
                slot: a.slot,
                state,
                finished_at,
                exit_code,
            });
            verdicts.push(v);
        }
        let now = time::OffsetDateTime::now_utc();
        let started_at = started.as_deref().and_then(parse_time);
        let decision = job::decide(&w.name, &spec, &observed, started_at, now);
        if cx.may_start {
            if decision.stop_active {
                for (a, o) in attempts.iter().zip(&observed) {
                    if o.state == job::AttemptState::Active {
                        info!(pod = %a.name, "stopping an attempt of a Job that failed");
                        for c in &w.containers {
                            let name = names::pod_container_name(
                                self.scope(),
                                &cx.dep.deployment_id,
                                &cx.app.name,
                                &a.name,
                                Some(&c.name),
                            );
                            let _ = self.stop_container(&name).await;
                        }
                    }
                }
            }
            let start = started.clone().unwrap_or_else(|| {
                now.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            });
            for slot in &decision.start {
                let a = self.job_attempt(cx, j, *slot);
                info!(job = %w.name, pod = %a.name, attempt = slot, "starting an attempt of a Job");
                let o = self
                    .converge_pod(cx, &a, false, true, Some(&start), cache)
                    .await;
                verdicts.push(report::judge(&o.view));
            }
        }
        let state = match decision.outcome {
            job::Outcome::Complete => AppState::Running,
            job::Outcome::Failed(_) => AppState::Down,
            job::Outcome::Active => {
                // An attempt that cannot even be created says why.
                if verdicts
                    .iter()
                    .any(|v| v.state == AppState::Down && v.phase == PodPhase::Pending)
                {
                    AppState::Down
                } else {
                    AppState::Deploying
                }
            }
        };
        let mut line = decision.summary;
        if state == AppState::Down
            && decision.outcome == job::Outcome::Active
            && let Some(m) = verdicts.iter().find_map(|v| v.message.clone())
        {
            line = format!("{line}: {m}");
        }
        (state, line, verdicts)
    }

    /// Service containers and listeners of the app; returns what cannot be served.
    async fn converge_services(
        &self,
        cx: &Cx<'_>,
        owner: &str,
        existing: &HashMap<String, String>,
        endpoints: &[(usize, IpAddr, bool)],
        mode: Mode,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let wanted_containers: HashSet<&str> = cx
            .plan
            .services
            .iter()
            .filter_map(|s| s.container.as_deref())
            .collect();
        if mode == Mode::Apply {
            for name in existing
                .keys()
                .filter(|n| !wanted_containers.contains(n.as_str()))
            {
                info!(container = %name, "removing a Service's container that is no longer desired");
                let _ = self.stop_and_remove(name).await;
            }
        }
        let mut wanted: Vec<proxy::Wanted> = Vec::new();
        let ready_of = |targets: &[(usize, u16)]| -> Vec<SocketAddr> {
            let mut out = Vec::new();
            for (w, port) in targets {
                for (ew, ip, ready) in endpoints {
                    if ew == w && *ready {
                        out.push(SocketAddr::new(*ip, *port));
                    }
                }
            }
            out
        };
        for s in &cx.plan.services {
            if let Some(container) = &s.container {
                if mode == Mode::Apply && cx.may_start {
                    let stale = existing.get(container).is_some_and(|h| *h != s.hash);
                    if stale {
                        let _ = self.stop_and_remove(container).await;
                    }
                    if (stale || !existing.contains_key(container))
                        && let Err(why) = self.create_service_container(cx, s, container).await
                    {
                        problems.push(format!("service {}: {why}", s.name));
                        continue;
                    }
                }
                let i = self.inspect(container).await.ok().flatten();
                let running = i
                    .as_ref()
                    .and_then(|i| i.state.as_ref())
                    .and_then(|s| s.running)
                    .unwrap_or(false);
                if mode == Mode::Apply && cx.may_start && !running && i.is_some() {
                    let _ = self.start(container, &cx.app.name).await;
                }
                let pid = i
                    .as_ref()
                    .and_then(|i| i.state.as_ref())
                    .and_then(|s| s.pid)
                    .filter(|p| *p > 0);
                let id = i.as_ref().and_then(|i| i.id.clone()).unwrap_or_default();
                if let Some(pid) = pid {
                    for port in &s.ports {
                        wanted.push(proxy::Wanted {
                            place: proxy::Place::Container {
                                id: id.clone(),
                                pid,
                            },
                            port: port.listen,
                            endpoints: ready_of(&port.targets),
                            what: format!("service {} port {}", s.name, port.listen),
                        });
                    }
                }
            }
            for port in &s.node_ports {
                wanted.push(proxy::Wanted {
                    place: proxy::Place::Host,
                    port: port.listen,
                    endpoints: ready_of(&port.targets),
                    what: format!("service {} nodePort {}", s.name, port.listen),
                });
            }
        }
        let errors = self.pods.proxy.reconcile(owner, wanted).await;
        let mut errors: Vec<String> = errors.into_values().collect();
        errors.sort();
        problems.extend(errors);
        problems
    }

    async fn create_service_container(
        &self,
        cx: &Cx<'_>,
        s: &plan::ServicePlan,
        container: &str,
    ) -> Result<(), String> {
        let labels = names::pod_app_labels(
            self.scope(),
            cx.dep,
            cx.app,
            &[
                (names::ROLE, "service"),
                (names::SERVICE, &s.name),
                (names::GENERATION, &s.hash),
            ],
        );
        let request = body::service(&cx.network, &s.aliases, labels);
        self.create(container, &cx.app.name, request).await?;
        self.start(container, &cx.app.name)
            .await
            .map_err(|e| hints::explain(e.chain()))?;
        info!(service = %s.name, container = %container, "created a Service's container");
        Ok(())
    }

    /// Creates container `name` from `request`.
    async fn create(
        &self,
        name: &str,
        app: &str,
        request: bollard::models::ContainerCreateBody,
    ) -> Result<(), String> {
        let target = format!("container {name} (app {app})");
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        match self
            .call(
                "create",
                &target,
                API_TIMEOUT,
                self.docker.create_container(Some(options), request),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status_code() == Some(409) || e.chain().contains("already in use") => {
                Err(format!(
                    "cannot create container {name}: the name is used by a container this agent \
                     does not manage (remove or rename it)"
                ))
            }
            Err(e) => Err(hints::explain(e.chain())),
        }
    }

    async fn create_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        driver_opts: HashMap<String, String>,
    ) -> Result<(), String> {
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels),
            driver_opts: (!driver_opts.is_empty()).then_some(driver_opts),
            ..Default::default()
        };
        let target = format!("volume {name}");
        self.call(
            "create",
            &target,
            API_TIMEOUT,
            self.docker.create_volume(request),
        )
        .await
        .map(drop)
        .map_err(|e| e.chain())
    }

    async fn upload(&self, container: &str, path: &str, tar: Vec<u8>) -> Result<(), String> {
        let target = format!("files into {path} of container {container}");
        let options = UploadToContainerOptions {
            path: path.to_string(),
            ..Default::default()
        };
        self.call(
            "write",
            &target,
            API_TIMEOUT,
            self.docker.upload_to_container(
                container,
                Some(options),
                bollard::body_full(tar.into()),
            ),
        )
        .await
        .map_err(|e| e.chain())
    }

    async fn path_exists(&self, container: &str, path: &str) -> bool {
        let options = DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let mut stream = self
            .docker
            .download_from_container(container, Some(options));
        matches!(
            tokio::time::timeout(API_TIMEOUT, stream.next()).await,
            Ok(Some(Ok(_)))
        )
    }

    async fn stop_container(&self, name: &str) -> Result<(), String> {
        let target = format!("container {name}");
        let options = bollard::query_parameters::StopContainerOptions {
            t: Some(i32::try_from(self.stop_timeout.as_secs()).unwrap_or(10)),
            ..Default::default()
        };
        match self
            .call(
                "stop",
                &target,
                API_TIMEOUT + self.stop_timeout,
                self.docker.stop_container(name, Some(options)),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.status_code(), Some(304 | 404)) => Ok(()),
            Err(e) => Err(e.chain()),
        }
    }
}

/// Everything creating a pod's container needs.
struct Place<'a> {
    cx: &'a Cx<'a>,
    p: &'a PodPlan,
    w: &'a Workload,
    infra: &'a str,
    fields: &'a HashMap<PodField, String>,
    mountpoints: &'a HashMap<String, String>,
    policy: RestartPolicy,
}

/// Owner of a files volume's files: the user of the containers that mount it (if they agree),
/// the pod's `fsGroup` (else their group).
fn files_owner(w: &Workload, volume: &str) -> files::Owner {
    let users: Vec<(Option<i64>, Option<i64>)> = w
        .init_containers
        .iter()
        .chain(&w.containers)
        .filter(|c| c.volume_mounts.iter().any(|m| m.volume == volume))
        .map(|c| (c.security.run_as_user, c.security.run_as_group))
        .collect();
    let uid = match users.first() {
        Some((Some(u), _)) if users.iter().all(|(x, _)| *x == Some(*u)) => *u,
        _ => 0,
    };
    let gid = w
        .security
        .fs_group
        .or_else(|| users.first().and_then(|(_, g)| *g))
        .unwrap_or(0);
    files::Owner {
        uid: u64::try_from(uid).unwrap_or(0),
        gid: u64::try_from(gid).unwrap_or(0),
        group_readable: w.security.fs_group.is_some(),
    }
}

/// The probe spec of a running container with probes.
fn probe_spec(
    c: &Container,
    w: &Workload,
    p: &PodPlan,
    name: &str,
    ip: Option<IpAddr>,
    i: &ContainerInspectResponse,
) -> Option<probe::Spec> {
    if c.liveness_probe.is_none() && c.readiness_probe.is_none() && c.startup_probe.is_none() {
        return None;
    }
    let state = i.state.as_ref()?;
    let started_at = state.started_at.clone().unwrap_or_default();
    let running_for = parse_time(&started_at)
        .map(|t| time::OffsetDateTime::now_utc() - t)
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default();
    Some(probe::Spec {
        id: i.id.clone()?,
        name: name.to_string(),
        label: format!("container {} of pod {}", c.name, p.name),
        started_at,
        running_for,
        ip,
        startup: c.startup_probe.clone(),
        liveness: c.liveness_probe.clone(),
        readiness: c.readiness_probe.clone(),
        grace: Duration::from_secs(
            u64::try_from(w.termination_grace_period_seconds.max(1)).unwrap_or(1),
        ),
    })
}

fn kind_word(k: WorkloadKind) -> &'static str {
    match k {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
        WorkloadKind::DaemonSet => "DaemonSet",
        WorkloadKind::Pod => "Pod",
        WorkloadKind::Job => "Job",
    }
}
