//! The VM driver: converges the virtual machines of a [`DesiredState`] (`AppInstance.vms`) with
//! [`canopy_vm::VmHost`] under the agent's data directory, and reports them per app.
//!
//! Like the container driver it is a reconciler that remembers nothing it needs: each VM's
//! directory holds, next to canopy-vm's files, an ownership record (`canopy.json`: scope,
//! project, deployment, app, VM name, spec hash, the restart counter last acted on, whether the
//! agent meant it to run). After an agent restart a pass finds the running QEMU processes through
//! canopy-vm (same pid, guest untouched) and the records tell it what they are. What is kept in
//! memory only paces retries (image pull backoff, crash-loop backoff) and is safely lost.
//!
//! Host VM names are derived ([`VmDriver::vm_name`]): a hash of (scope, deployment, app, VM name)
//! makes them unique and stable, a readable suffix makes them recognisable in `ps`.
//!
//! Rules a user sees:
//! - **Memory**: a VM may ask for at most `MemTotal − max(256 MiB, MemTotal / 10)` (the rest is
//!   kept for the host, the agent and the container engine); more is `ERROR_UNSCHEDULABLE`.
//! - **Images**: `http(s)` URLs, or `file://` under the configured image directories only;
//!   checksum verified, size capped, nothing kept on failure (`ERROR_IMAGE_PULL`, then
//!   `ERROR_IMAGE_PULL_BACKOFF` while waiting to retry).
//! - **Supervision**: a VM that stops by itself is started again per its restart policy
//!   (`always`; `on-failure` unless the guest powered off cleanly, which Linux guests announce on
//!   the serial console as `reboot: Power down`; `never`); if it keeps stopping within
//!   [`CRASH_WINDOW`] of its start, restarts back off and it is `CRASH_LOOP_BACKOFF`.
//! - **Controls**: `running: false` powers the VM off (ACPI, then `quit`) and keeps it off
//!   (`STOPPED`, admin `DOWN`); a `restarts` count above the one last acted on reboots it once.
//! - **Accelerator**: decided once when the driver is built ([`VmHost::accelerator`]): KVM only
//!   when a probe guest runs under it, else TCG, with the reason in the log (a warning) and in
//!   the status of every VM that runs under TCG because of it.
//! - **Readiness**: QEMU running is not the guest running. A VM is `RUNNING` only once the guest
//!   showed it came up: output on its serial console since this start, or bytes from the guest
//!   on one of its published ports (QEMU's user networking accepts connections on them even for
//!   a dead guest, so an accepted connection is not enough). Until then it is `STARTING` (health
//!   `starting`) with what it waits for; after the boot timeout ([`DEFAULT_BOOT_TIMEOUT`],
//!   `CANOPY_VM_BOOT_TIMEOUT`) with no evidence it is an error (app `DOWN`, health `unhealthy`),
//!   and QEMU is left running: a guest that is only slow still becomes `RUNNING` when it speaks.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use canopy_proto::{
    Accelerator as WireAccelerator, AdminState, AppInstance, AppState, AppStatus,
    DeploymentInstance, DesiredState, Health, PortSpec, Protocol, RestartPolicy, StatusKind,
    VmBoot, VmImage, VmSpec, WorkloadControl, WorkloadKind, WorkloadStatus,
};
use canopy_vm::{AccelChoice, BasicAuth, ImageSource, SerialMark, VmError, VmHost, VmState};
use futures::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::{Instrument, info, info_span, warn};

use super::deps::{self, Reported};
use super::error::DriverError;
use super::names::slug;
use super::status::rank;
use crate::config::AgentConfig;
use crate::tunnel::TunnelIo;

/// The ownership record in each VM directory.
const OWNER_FILE: &str = "canopy.json";
/// How long a VM gets to power off (ACPI) before QEMU is told to quit. Default.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// A VM that stops within this time of its start is crash-looping.
pub const CRASH_WINDOW: Duration = Duration::from_secs(600);
/// First and longest wait before restarting a crash-looping VM, and before retrying a failed
/// image pull or start.
const BACKOFF_FIRST: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Memory kept for the host: at least this much, and at least a tenth of MemTotal.
const HOST_RESERVE_MIB: u64 = 256;
/// What a Linux guest prints on the serial console when it powers off cleanly.
const CLEAN_POWEROFF: &str = "reboot: Power down";
/// How long a started guest gets to show it came up before its VM is reported as an error.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Environment variable overriding [`DEFAULT_BOOT_TIMEOUT`], in seconds.
pub const BOOT_TIMEOUT_ENV: &str = "CANOPY_VM_BOOT_TIMEOUT";
/// How long the published ports of a silent guest are probed in one pass (all at once), and how
/// often at most: a guest that says nothing costs a pass this much, not more.
const PORT_PROBE_TIME: Duration = Duration::from_secs(2);
const PORT_PROBE_EVERY: Duration = Duration::from_secs(10);
/// How much of the serial log the logs tunnel reads back at most (the `tail` lines come from it).
const LOG_TAIL_BYTES: u64 = 1 << 20;
const LOG_POLL: Duration = Duration::from_millis(250);

/// Who a VM directory belongs to and what the agent last did with it (`canopy.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Owner {
    #[serde(default)]
    scope: Option<String>,
    project: String,
    deployment_id: String,
    app: String,
    vm: String,
    /// Hash of the VM spec it was last started with.
    spec_hash: String,
    /// The control's `restarts` counter last acted on.
    restarts_applied: u64,
    /// Reboots so far (supervision and restart controls).
    restarts: u32,
    /// The agent started it and means it to run (false after an operator's stop).
    started: bool,
    /// RFC 3339.
    created_at: String,
    /// Length of `serial.log` when it was last started: what the guest printed since is after
    /// it (to tell a clean power-off from a crash, and that the guest came up).
    #[serde(default)]
    serial_mark: u64,
    /// Inode of `serial.log` then (the start may rotate it).
    #[serde(default)]
    serial_ino: u64,
}

impl Owner {
    fn serial(&self) -> SerialMark {
        SerialMark {
            len: self.serial_mark,
            ino: self.serial_ino,
        }
    }
}

/// Retry pacing of one VM, in memory only.
#[derive(Debug, Clone, Default)]
struct Memo {
    /// The last failure to get the VM started (image pull, unschedulable, QEMU), and when to
    /// try again.
    failure: Option<Failure>,
    /// Consecutive stops within [`CRASH_WINDOW`] of a start.
    crashes: u32,
    last_start: Option<Instant>,
    next_restart: Option<Instant>,
    /// The QEMU process whose guest showed it came up.
    up: Option<i32>,
    /// When the published ports of the current QEMU were last probed (see [`PORT_PROBE_EVERY`]).
    ports_probed: Option<(i32, Instant)>,
}

#[derive(Debug, Clone)]
struct Failure {
    state: VmState,
    message: String,
    attempts: u32,
    retry_at: Instant,
}

/// Whether a running QEMU's guest came up (see the module's readiness rule).
enum Readiness {
    Up,
    /// No evidence yet; booting for this long.
    Waiting(Duration),
    /// No evidence within the boot timeout; booting for this long.
    TimedOut(Duration),
}

/// What one VM's convergence decided, before it is reported.
struct Outcome {
    state: Option<VmState>,
    message: String,
}

impl Outcome {
    fn look() -> Outcome {
        Outcome {
            state: None,
            message: String::new(),
        }
    }
    fn with(state: VmState, message: String) -> Outcome {
        Outcome {
            state: Some(state),
            message,
        }
    }
}

/// Whether a pass may change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply,
    Observe,
}

/// The VM driver of one agent data directory.
#[derive(Debug)]
pub struct VmDriver {
    host: VmHost,
    scope: Option<String>,
    image_dirs: Vec<PathBuf>,
    /// QEMU's version, or why QEMU cannot be used here.
    qemu: Result<String, String>,
    /// The accelerator decided at construction (`None` without QEMU).
    accel: Option<AccelChoice>,
    stop_timeout: Duration,
    boot_timeout: Duration,
    memo: Mutex<HashMap<String, Memo>>,
    /// Image downloads by checksum, run in the background so that a large image never holds
    /// up a pass (the edge's other apps, controls and reports go on meanwhile).
    downloads: Arc<Mutex<HashMap<String, Download>>>,
}

/// One background image download.
#[derive(Debug, Clone)]
enum Download {
    Running {
        url: String,
        since: Instant,
    },
    /// Failed; the next pass that asks reports it (and forgets it, so a later one retries).
    Failed(String),
}

/// Where a boot image is.
enum Fetched {
    Ready,
    /// Still downloading; the text says what and for how long.
    Pending(String),
}

impl VmDriver {
    /// VMs under `<data_dir>/vms`, images in `<data_dir>/cache`, accelerator from
    /// `CANOPY_VM_ACCEL`; probes QEMU (`qemu-system-x86_64 --version`). Without QEMU the driver
    /// still works: VM apps report that this edge cannot run them.
    pub async fn new(data_dir: &Path) -> VmDriver {
        VmDriver::for_host(VmHost::new(data_dir)).await
    }

    /// A driver over `host` (its directory, QEMU binary, accelerator and image cache); probes
    /// its QEMU and, once, its accelerator (bounded by [`canopy_vm::PROBE_TIMEOUT`]). The boot
    /// timeout comes from `CANOPY_VM_BOOT_TIMEOUT` (seconds), default
    /// [`DEFAULT_BOOT_TIMEOUT`].
    pub async fn for_host(host: VmHost) -> VmDriver {
        let qemu = host.qemu_version().await.map_err(|e| error_chain(&e));
        let accel = match &qemu {
            Ok(v) => {
                let choice = host.accelerator().await.clone();
                match &choice.fallback {
                    None => {
                        info!(qemu = %v, accelerator = %choice.accelerator, "QEMU available")
                    }
                    // canopy-vm warned already, with the reason.
                    Some(why) => info!(
                        qemu = %v,
                        accelerator = %choice.accelerator,
                        reason = %why,
                        "QEMU available; VMs run under TCG"
                    ),
                }
                Some(choice)
            }
            Err(why) => {
                warn!(reason = %why, "QEMU unavailable: this edge cannot run VMs");
                None
            }
        };
        VmDriver {
            host,
            scope: None,
            image_dirs: Vec::new(),
            qemu,
            accel,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            boot_timeout: boot_timeout_from_env(),
            memo: Mutex::new(HashMap::new()),
            downloads: Arc::default(),
        }
    }

    /// The driver [`AgentConfig`] describes: data dir, image directories, image size cap and
    /// scope.
    pub async fn from_config(config: &AgentConfig) -> VmDriver {
        let driver = VmDriver::new(&config.data_dir)
            .await
            .with_image_dirs(config.vm_image_dirs.clone())
            .with_cache_max_bytes(config.vm_cache_max_bytes);
        match &config.scope {
            Some(scope) => driver.scoped(scope),
            None => driver,
        }
    }

    /// Only touches VMs of this scope (and marks those it creates so), as
    /// [`DockerDriver::scoped`](super::DockerDriver::scoped) does with containers.
    pub fn scoped(mut self, scope: &str) -> VmDriver {
        self.scope = Some(scope.to_string());
        self
    }

    /// Directories `file://` image URLs may point into.
    pub fn with_image_dirs(mut self, dirs: Vec<PathBuf>) -> VmDriver {
        self.image_dirs = dirs;
        self
    }

    /// Caps the size of one image download.
    pub fn with_cache_max_bytes(mut self, max_bytes: u64) -> VmDriver {
        let cache = self.host.cache().clone().with_max_bytes(max_bytes);
        self.host = self.host.with_cache(cache);
        self
    }

    /// How long a VM gets to power off after the ACPI button before QEMU quits. Default 30 s.
    pub fn with_stop_timeout(mut self, timeout: Duration) -> VmDriver {
        self.stop_timeout = timeout;
        self
    }

    /// How long a started guest gets to show it came up (see the module's readiness rule)
    /// before its VM is an error. Default [`DEFAULT_BOOT_TIMEOUT`].
    pub fn with_boot_timeout(mut self, timeout: Duration) -> VmDriver {
        self.boot_timeout = timeout;
        self
    }

    /// The canopy-vm host (VM directories, serial logs, image cache).
    pub fn host(&self) -> &VmHost {
        &self.host
    }

    /// Whether QEMU can run here.
    pub fn available(&self) -> bool {
        self.qemu.is_ok()
    }

    /// `QEMU 7.2.0 (tcg)`, or `None` without QEMU.
    pub fn engine(&self) -> Option<String> {
        self.qemu
            .as_ref()
            .ok()
            .map(|v| format!("QEMU {v} ({})", self.accelerator()))
    }

    /// The accelerator VMs get here (`kvm` or `tcg`), empty without QEMU.
    pub fn accelerator(&self) -> &'static str {
        self.accel.as_ref().map_or("", |c| c.accelerator.as_str())
    }

    /// The same in the protocol's type, for the agent's reports.
    pub fn wire_accelerator(&self) -> Option<WireAccelerator> {
        self.accel.as_ref().map(|c| match c.accelerator {
            canopy_vm::Accelerator::Kvm => WireAccelerator::Kvm,
            canopy_vm::Accelerator::Tcg => WireAccelerator::Tcg,
        })
    }

    /// Why VMs here run under TCG although KVM was allowed (no `/dev/kvm`, or KVM failed its
    /// probe); `None` when they run under KVM, TCG was forced, or there is no QEMU.
    pub fn accelerator_fallback(&self) -> Option<&str> {
        self.accel.as_ref().and_then(|c| c.fallback.as_deref())
    }

    /// The host VM name of VM `vm` of `app` in deployment `deployment_id`: `<hash>-<app>-<vm>`,
    /// at most 63 characters of `[a-z0-9-]`. The hash (of scope, deployment, app and VM) keeps
    /// names unique; the suffix is for people reading `ps`.
    pub fn vm_name(&self, deployment_id: &str, app: &str, vm: &str) -> String {
        let mut h = Sha256::new();
        for part in [self.scope.as_deref().unwrap_or(""), deployment_id, app, vm] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let hash = format!("{:x}", h.finalize());
        let suffix: String = format!("{}-{}", slug(app), slug(vm))
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let mut name = format!("{}-{suffix}", &hash[..12]);
        name.truncate(63);
        name.trim_end_matches('-').to_string()
    }

    /// One convergence pass over every desired app's VMs: removes VMs of this scope that are no
    /// longer desired (and images no VM uses), then creates, starts, stops, reboots or adopts
    /// each desired VM. Returns one status per desired app, in order (an app without VMs is
    /// `RUNNING` with no workloads).
    pub async fn apply(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        self.pass(desired, &Reported::new(), Mode::Apply).await
    }

    /// [`apply`](Self::apply) next to the container driver: a dependency with containers must
    /// also be running in `reported`, the edge's last merged report.
    pub async fn apply_after(
        &self,
        desired: &DesiredState,
        reported: &Reported,
    ) -> Result<Vec<AppStatus>, DriverError> {
        self.pass(desired, reported, Mode::Apply).await
    }

    /// The status [`apply`](Self::apply) would report, changing nothing.
    pub async fn observe(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        self.pass(desired, &Reported::new(), Mode::Observe).await
    }

    /// [`observe`](Self::observe) next to the container driver (see
    /// [`apply_after`](Self::apply_after)).
    pub async fn observe_after(
        &self,
        desired: &DesiredState,
        reported: &Reported,
    ) -> Result<Vec<AppStatus>, DriverError> {
        self.pass(desired, reported, Mode::Observe).await
    }

    async fn pass(
        &self,
        desired: &DesiredState,
        reported: &Reported,
        mode: Mode,
    ) -> Result<Vec<AppStatus>, DriverError> {
        if mode == Mode::Apply && self.available() {
            self.collect(desired).await;
        }
        let mut out = Vec::new();
        for dep in &desired.deployments {
            // Dependencies first, as the container driver does: a VM starts only once the apps
            // it depends on run; one that already runs is left alone (adoption is not gated).
            let mut states: HashMap<&str, AppState> = HashMap::new();
            let mut statuses: Vec<Option<AppStatus>> = vec![None; dep.apps.len()];
            for (i, problem) in deps::order(&dep.apps) {
                let app = &dep.apps[i];
                let span = info_span!(
                    "vms",
                    project = %dep.project,
                    deployment = %dep.deployment_id,
                    app = %app.name
                );
                let waiting =
                    deps::waiting_on(dep, app, &states, reported, |a| !a.containers.is_empty());
                let may_start = problem.is_none() && waiting.is_empty();
                let mut status = self
                    .converge_app(dep, app, &desired.controls, mode, may_start)
                    .instrument(span)
                    .await;
                if let Some(p) = problem.filter(|_| !app.vms.is_empty()) {
                    status.state = AppState::Down;
                    status.message = format!("app {} {p}", app.name);
                } else if !waiting.is_empty() && status.state != AppState::Running {
                    status.state = AppState::Waiting;
                    status.message = deps::waiting_message(&waiting);
                }
                states.insert(&app.name, status.state);
                statuses[i] = Some(status);
            }
            out.extend(statuses.into_iter().flatten());
        }
        Ok(out)
    }

    async fn converge_app(
        &self,
        dep: &DeploymentInstance,
        app: &AppInstance,
        controls: &[WorkloadControl],
        mode: Mode,
        may_start: bool,
    ) -> AppStatus {
        let mut worst = AppState::Running;
        let mut messages: Vec<(AppState, String)> = Vec::new();
        let mut workloads = Vec::new();
        for vm in &app.vms {
            let control = controls.iter().find(|c| {
                c.kind == WorkloadKind::Vm
                    && c.deployment_id == dep.deployment_id
                    && c.app == app.name
                    && c.workload == vm.name
            });
            let w = self
                .converge_vm(dep, app, vm, control, mode, may_start)
                .await;
            let state = vm_app_state(&w);
            if rank(state) > rank(worst) {
                worst = state;
            }
            if state != AppState::Running {
                let why = if w.message.is_empty() {
                    format!("virtual machine {} is {}", vm.name, w.state)
                } else {
                    w.message.clone()
                };
                messages.push((state, why));
            }
            workloads.push(w);
        }
        let message = messages
            .into_iter()
            .filter(|(s, _)| *s == worst)
            .map(|(_, m)| m)
            .collect::<Vec<_>>()
            .join("; ");
        AppStatus {
            deployment_id: dep.deployment_id.clone(),
            app: app.name.clone(),
            state: worst,
            message,
            deployment_generation: dep.generation,
            workloads,
        }
    }

    async fn converge_vm(
        &self,
        dep: &DeploymentInstance,
        app: &AppInstance,
        vm: &VmSpec,
        control: Option<&WorkloadControl>,
        mode: Mode,
        may_start: bool,
    ) -> WorkloadStatus {
        let name = self.vm_name(&dep.deployment_id, &app.name, &vm.name);
        let admin_up = control.is_none_or(|c| c.running);
        let outcome = match &self.qemu {
            Err(why) => Outcome::with(
                VmState::ErrorUnschedulable,
                format!("this edge cannot run virtual machines: {why}"),
            ),
            Ok(_) if mode == Mode::Observe => self.pending(&name),
            // Held back by its dependencies: nothing starts or restarts (a stop still applies).
            Ok(_) if admin_up && !may_start => self.pending(&name),
            Ok(_) => self.act(dep, app, vm, &name, control, admin_up).await,
        };
        self.report(app, vm, &name, admin_up, outcome).await
    }

    /// A failure still waiting for its retry, as observation reports it.
    fn pending(&self, name: &str) -> Outcome {
        let memo = self.memo(name);
        match memo.failure {
            Some(f) => Outcome::with(f.state, f.message),
            None => Outcome::look(),
        }
    }

    /// The apply half of [`converge_vm`](Self::converge_vm): what to do, done.
    async fn act(
        &self,
        dep: &DeploymentInstance,
        app: &AppInstance,
        vm: &VmSpec,
        name: &str,
        control: Option<&WorkloadControl>,
        admin_up: bool,
    ) -> Outcome {
        let target = || format!("virtual machine {} of app {}", vm.name, app.name);
        let dir = self.host.vm_dir(name);
        let spec_hash = spec_hash(vm);
        let mut owner = read_owner(&dir).await;
        let running = match self.host.status(name).await {
            Ok(s) => s.pid.is_some(),
            Err(VmError::NotFound { .. }) => false,
            Err(e) => return Outcome::with(VmState::Unspecified, error_chain(&e)),
        };

        if !admin_up {
            self.forget_failure(name);
            if running {
                info!(vm = %name, "stopping virtual machine (control: running=false)");
                if let Err(e) = self.host.stop(name, self.stop_timeout).await {
                    return Outcome::with(
                        VmState::Unspecified,
                        format!("cannot stop {}: {}", target(), error_chain(&e)),
                    );
                }
            }
            if let Some(o) = owner.as_mut().filter(|o| o.started) {
                o.started = false;
                if let Err(e) = write_owner(&dir, o).await {
                    warn!(vm = %name, error = %e, "cannot record the stop");
                }
            }
            return Outcome::look();
        }

        let mut running = running;
        let changed = owner.as_ref().is_some_and(|o| o.spec_hash != spec_hash);
        let mut force_start = changed;
        if running && changed {
            info!(vm = %name, "virtual machine spec changed: stopping it to start it anew");
            if let Err(e) = self.host.stop(name, self.stop_timeout).await {
                return Outcome::with(
                    VmState::Unspecified,
                    format!("cannot stop {}: {}", target(), error_chain(&e)),
                );
            }
            running = false;
        }
        let wanted_restarts = control.map_or(0, |c| c.restarts);
        if let Some(o) = owner.as_mut()
            && wanted_restarts > o.restarts_applied
        {
            if running {
                info!(vm = %name, restarts = wanted_restarts, "rebooting virtual machine (control: restart)");
                if let Err(e) = self.host.stop(name, self.stop_timeout).await {
                    return Outcome::with(
                        VmState::Unspecified,
                        format!("cannot stop {}: {}", target(), error_chain(&e)),
                    );
                }
                running = false;
                o.restarts = o.restarts.saturating_add(1);
            }
            o.restarts_applied = wanted_restarts;
            force_start = true;
            if let Err(e) = write_owner(&dir, o).await {
                warn!(vm = %name, error = %e, "cannot record the restart");
            }
        }
        if running {
            self.forget_failure(name);
            return Outcome::look();
        }

        // Not running, meant to run. Stopped by itself (supervision) or never started here?
        let crashed = !force_start && owner.as_ref().is_some_and(|o| o.started);
        if crashed {
            let mark = owner.as_ref().map_or(0, |o| o.serial_mark);
            let clean = self.powered_off_cleanly(name, mark).await;
            let policy = vm.restart_policy;
            if policy == RestartPolicy::Never || (policy == RestartPolicy::OnFailure && clean) {
                let how = if clean {
                    "powered off"
                } else {
                    "stopped by itself"
                };
                return Outcome::with(
                    VmState::Stopped,
                    format!(
                        "{} {how} and its restart policy is {}",
                        target(),
                        policy_word(policy)
                    ),
                );
            }
            let now = Instant::now();
            let memo = self.memo(name);
            if let Some(at) = memo.next_restart
                && now < at
            {
                // `crashes` counts the stops that were followed by a restart; this stop (also
                // within CRASH_WINDOW of the last start, backoffs being shorter) is one more.
                return Outcome::with(
                    VmState::CrashLoopBackoff,
                    format!(
                        "{} keeps stopping ({} times in a row); next start in {} s",
                        target(),
                        memo.crashes + 1,
                        (at - now).as_secs()
                    ),
                );
            }
        }

        if let Some(f) = self.memo(name).failure
            && Instant::now() < f.retry_at
        {
            let state = match f.state {
                VmState::ErrorImagePull => VmState::ErrorImagePullBackoff,
                s => s,
            };
            return Outcome::with(state, f.message);
        }

        if crashed {
            info!(vm = %name, "virtual machine stopped by itself; starting it again");
        }
        let new = !dir.join("spec.json").exists();
        match self
            .start(
                dep,
                app,
                vm,
                name,
                owner,
                &spec_hash,
                wanted_restarts,
                crashed,
            )
            .await
        {
            Ok(()) => {
                let now = Instant::now();
                let mut memo = self.memo(name);
                memo.failure = None;
                if crashed {
                    // Crash-loop pacing: counted per restart, not per pass.
                    let quick = memo
                        .last_start
                        .is_some_and(|t| now.duration_since(t) < CRASH_WINDOW);
                    memo.crashes = if quick { memo.crashes + 1 } else { 1 };
                    memo.next_restart = (memo.crashes > 1).then(|| now + backoff(memo.crashes - 1));
                } else {
                    memo.crashes = 0;
                    memo.next_restart = None;
                }
                memo.last_start = Some(now);
                self.set_memo(name, memo);
                Outcome::look()
            }
            Err((VmState::Provisioning, message)) => Outcome::with(VmState::Provisioning, message),
            Err((state, message)) => {
                if new && dir.exists() {
                    // Leave nothing behind a VM that never ran.
                    if let Err(e) = self.host.remove(name, self.stop_timeout).await {
                        warn!(vm = %name, error = %error_chain(&e), "cannot remove the VM that failed to start");
                    } else {
                        let _ = tokio::fs::remove_dir_all(&dir).await;
                    }
                }
                warn!(vm = %name, state = ?state, reason = %message, "virtual machine not started");
                let mut memo = self.memo(name);
                let attempts = memo.failure.as_ref().map_or(0, |f| f.attempts) + 1;
                memo.failure = Some(Failure {
                    state,
                    message: message.clone(),
                    attempts,
                    retry_at: Instant::now() + backoff(attempts),
                });
                self.set_memo(name, memo);
                Outcome::with(state, message)
            }
        }
    }

    /// Checks, fetches, records ownership and starts. Fails with the state to report.
    #[expect(
        clippy::too_many_arguments,
        reason = "one VM's context, passed down once"
    )]
    async fn start(
        &self,
        dep: &DeploymentInstance,
        app: &AppInstance,
        vm: &VmSpec,
        name: &str,
        owner: Option<Owner>,
        spec_hash: &str,
        restarts_applied: u64,
        supervised_restart: bool,
    ) -> Result<(), (VmState, String)> {
        let target = format!("virtual machine {} of app {}", vm.name, app.name);
        let in_use = self.host.memory_in_use_mib(name).await.unwrap_or_else(|e| {
            warn!(vm = %name, error = %e, "cannot sum the memory of running VMs");
            0
        });
        if let Some(total_mib) = mem_total_mib() {
            memory_fits(vm.memory_mib, in_use, total_mib)
                .map_err(|m| (VmState::ErrorUnschedulable, format!("{target} {m}")))?;
        }
        let spec = vm_spec(name, vm).map_err(|m| (VmState::ErrorUnschedulable, m))?;
        check_ports(&spec, &target)
            .await
            .map_err(|m| (VmState::ErrorUnschedulable, m))?;
        let mut pending = Vec::new();
        for image in boot_images(vm) {
            let fetched = self
                .fetch(app, image)
                .await
                .map_err(|m| (VmState::ErrorImagePull, format!("{target}: {m}")))?;
            if let Fetched::Pending(what) = fetched {
                pending.push(what);
            }
        }
        if !pending.is_empty() {
            // Not a failure: `act` reports it without a retry delay.
            return Err((
                VmState::Provisioning,
                format!("{target}: {}", pending.join("; ")),
            ));
        }
        let dir = self.host.vm_dir(name);
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            (
                VmState::Unspecified,
                format!("{target}: cannot create {}: {e}", dir.display()),
            )
        })?;
        let mut owner = owner.unwrap_or_else(|| Owner {
            scope: self.scope.clone(),
            project: dep.project.clone(),
            deployment_id: dep.deployment_id.clone(),
            app: app.name.clone(),
            vm: vm.name.clone(),
            spec_hash: String::new(),
            restarts_applied,
            restarts: 0,
            started: false,
            created_at: now_rfc3339(),
            serial_mark: 0,
            serial_ino: 0,
        });
        owner.spec_hash = spec_hash.to_string();
        owner.started = true;
        let mark = self.host.serial_mark(name).await;
        owner.serial_mark = mark.len;
        owner.serial_ino = mark.ino;
        write_owner(&dir, &owner)
            .await
            .map_err(|e| (VmState::Unspecified, format!("{target}: {e}")))?;
        match self.host.start(&spec).await {
            Ok(info) => {
                info!(vm = %name, pid = info.pid, accelerator = %info.accelerator, "virtual machine started");
                if supervised_restart {
                    owner.restarts = owner.restarts.saturating_add(1);
                    if let Err(e) = write_owner(&dir, &owner).await {
                        warn!(vm = %name, error = %e, "cannot record the restart");
                    }
                }
                Ok(())
            }
            Err(e) => {
                let state = match &e {
                    VmError::InsufficientMemory { .. } => VmState::ErrorUnschedulable,
                    VmError::ChecksumMismatch { .. }
                    | VmError::Download { .. }
                    | VmError::HttpStatus { .. }
                    | VmError::TooLarge { .. }
                    | VmError::UnsupportedUrl { .. }
                    | VmError::InvalidChecksum { .. } => VmState::ErrorImagePull,
                    _ => VmState::Stopped,
                };
                Err((state, format!("cannot start {target}: {}", error_chain(&e))))
            }
        }
    }

    /// Gets one image into the cache, in the background: `file://` only under the allowed
    /// directories, the app's registry credentials for URLs under the registry's server. Ready
    /// when cached; else a download is started (or already runs) and the pass goes on; a failed
    /// download is answered once, as the error.
    async fn fetch(&self, app: &AppInstance, image: &VmImage) -> Result<Fetched, String> {
        let url = reqwest::Url::parse(&image.url)
            .map_err(|e| format!("image {}: invalid URL: {e}", image.url))?;
        if url.scheme() == "file" {
            let path = url
                .to_file_path()
                .map_err(|()| format!("image {}: not an absolute file path", image.url))?;
            let real = tokio::fs::canonicalize(&path)
                .await
                .map_err(|e| format!("image {}: cannot open {}: {e}", image.url, path.display()))?;
            let mut allowed = false;
            for dir in &self.image_dirs {
                if let Ok(dir) = tokio::fs::canonicalize(dir).await
                    && real.starts_with(&dir)
                {
                    allowed = true;
                }
            }
            if !allowed {
                return Err(format!(
                    "image {}: file:// images are allowed only under the agent's VM image \
                     directories ({}); add one with --vm-image-dir",
                    image.url,
                    if self.image_dirs.is_empty() {
                        "none configured".to_string()
                    } else {
                        self.image_dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ));
            }
        }
        let auth = app
            .registry_auth
            .as_ref()
            .filter(|a| auth_applies(&a.server, &url))
            .map(|a| BasicAuth {
                username: a.username.clone(),
                password: a.password.clone(),
            });
        let source = ImageSource {
            url: image.url.clone(),
            sha256: image.sha256.to_ascii_lowercase(),
        };
        let cache = self.host.cache().clone();
        if cache
            .cached(&source)
            .await
            .map_err(|e| error_chain(&e))?
            .is_some()
        {
            return Ok(Fetched::Ready);
        }
        let sha = source.sha256.clone();
        let mut downloads = self
            .downloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match downloads.get(&sha).cloned() {
            Some(Download::Running { url, since }) => {
                return Ok(Fetched::Pending(format!(
                    "downloading image {url} ({} s so far)",
                    since.elapsed().as_secs()
                )));
            }
            Some(Download::Failed(why)) => {
                downloads.remove(&sha);
                return Err(why);
            }
            None => {}
        }
        downloads.insert(
            sha.clone(),
            Download::Running {
                url: image.url.clone(),
                since: Instant::now(),
            },
        );
        drop(downloads);
        info!(url = %image.url, sha256 = %sha, "downloading image");
        let table = Arc::clone(&self.downloads);
        tokio::spawn(async move {
            let result = cache.fetch_with_auth(&source, auth.as_ref()).await;
            let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
            match result {
                Ok(_) => {
                    table.remove(&sha);
                }
                Err(e) => {
                    warn!(url = %source.url, error = %error_chain(&e), "image download failed");
                    table.insert(sha, Download::Failed(error_chain(&e)));
                }
            }
        });
        Ok(Fetched::Pending(format!("downloading image {}", image.url)))
    }

    /// The workload report of one VM: what QEMU says, unless the pass decided otherwise; a
    /// running QEMU is `RUNNING` only once its guest came up (see the module's readiness rule).
    async fn report(
        &self,
        app: &AppInstance,
        vm: &VmSpec,
        name: &str,
        admin_up: bool,
        outcome: Outcome,
    ) -> WorkloadStatus {
        let dir = self.host.vm_dir(name);
        let owner = read_owner(&dir).await;
        let mut w = WorkloadStatus {
            kind: StatusKind::Vm,
            name: vm.name.clone(),
            image: boot_url(vm).to_string(),
            admin_state: Some(if admin_up {
                AdminState::Up
            } else {
                AdminState::Down
            }),
            created_at: owner
                .as_ref()
                .map(|o| o.created_at.clone())
                .unwrap_or_default(),
            restarts: owner.as_ref().map_or(0, |o| o.restarts),
            ports: vm
                .ports
                .iter()
                .map(|p| PortSpec {
                    container_port: p.guest_port,
                    host_port: Some(p.host_port),
                    host_ip: p.host_ip.clone(),
                    protocol: Protocol::Tcp,
                })
                .collect(),
            message: outcome.message,
            ..WorkloadStatus::default()
        };
        let state = match outcome.state {
            Some(s) => s,
            None if !self.available() => VmState::ErrorUnschedulable,
            None => match self.host.status(name).await {
                Ok(s) if s.pid.is_some() => {
                    if let Ok(Some(info)) = self.host.running_info(name).await {
                        w.accelerator = WireAccelerator::non_empty(&info.accelerator);
                        w.vnc = info.vnc.is_some();
                    }
                    if s.state == VmState::Unspecified
                        && let Some(q) = &s.qemu_status
                    {
                        w.message = format!("virtual machine {} is {q}", vm.name);
                    }
                    match (s.state, s.pid) {
                        (VmState::Running, Some(pid)) => {
                            let readiness = self.readiness(vm, name, pid, owner.as_ref()).await;
                            self.ready_state(app, vm, &mut w, readiness)
                        }
                        (state, _) => state,
                    }
                }
                Ok(s) => {
                    if admin_up && w.message.is_empty() {
                        w.message = format!("virtual machine {} is stopped", vm.name);
                    }
                    s.state
                }
                Err(VmError::NotFound { .. }) => {
                    if admin_up {
                        VmState::Provisioning
                    } else {
                        VmState::Stopped
                    }
                }
                Err(e) => {
                    w.message = error_chain(&e);
                    VmState::Unspecified
                }
            },
        };
        w.state = state_word(state);
        w
    }

    /// Removes the VMs of this scope that no desired app has, then the images no VM uses.
    async fn collect(&self, desired: &DesiredState) {
        let wanted: HashSet<String> = desired
            .deployments
            .iter()
            .flat_map(|d| {
                d.apps.iter().flat_map(move |a| {
                    a.vms
                        .iter()
                        .map(move |v| self.vm_name(&d.deployment_id, &a.name, &v.name))
                })
            })
            .collect();
        let names = match self.host.list().await {
            Ok(names) => names,
            Err(e) => {
                warn!(error = %error_chain(&e), "cannot list virtual machines");
                return;
            }
        };
        let mut removed = false;
        for name in names.into_iter().filter(|n| !wanted.contains(n)) {
            let owner = read_owner(&self.host.vm_dir(&name)).await;
            let ours = match &owner {
                Some(o) => o.scope == self.scope,
                // No record: not made by this driver's start (or from before records), and
                // only an unscoped driver owns the whole directory.
                None => self.scope.is_none(),
            };
            if !ours {
                continue;
            }
            info!(vm = %name, app = owner.as_ref().map_or("", |o| o.app.as_str()), "removing virtual machine that is no longer desired");
            match self.host.remove(&name, self.stop_timeout).await {
                Ok(()) => {
                    removed = true;
                    self.memo
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&name);
                }
                Err(e) => {
                    warn!(vm = %name, error = %error_chain(&e), "cannot remove virtual machine yet")
                }
            }
        }
        if removed {
            self.gc_images(desired).await;
        }
    }

    /// Removes the cached images that neither a VM here nor a desired VM uses (a desired VM may
    /// not have started yet: its image just arrived, or it waits for a retry).
    async fn gc_images(&self, desired: &DesiredState) {
        match self.host.images_in_use().await {
            Ok(mut in_use) => {
                in_use.extend(
                    desired
                        .deployments
                        .iter()
                        .flat_map(|d| d.apps.iter().flat_map(|a| a.vms.iter()))
                        .flat_map(boot_images)
                        .map(|i| i.sha256.to_ascii_lowercase()),
                );
                let in_use: Vec<&str> = in_use.iter().map(String::as_str).collect();
                if let Err(e) = self.host.cache().gc(&in_use).await {
                    warn!(error = %error_chain(&e), "cannot collect unused images");
                }
            }
            Err(e) => warn!(error = %error_chain(&e), "cannot list the images in use"),
        }
    }

    /// Whether the guest announced a clean power-off on its serial console since its last
    /// start (`mark`: the log's length then; a shorter log was rotated and is read whole).
    async fn powered_off_cleanly(&self, name: &str, mark: u64) -> bool {
        let path = self.host.serial_log(name);
        let Ok(len) = tokio::fs::metadata(&path).await.map(|m| m.len()) else {
            return false;
        };
        let from = if len < mark { 0 } else { mark };
        let from = from.max(len.saturating_sub(64 << 10));
        read_at(&path, from, len - from)
            .await
            .is_ok_and(|b| String::from_utf8_lossy(&b).contains(CLEAN_POWEROFF))
    }

    /// Whether the guest of VM `name` (QEMU `pid`, running) came up: remembered once seen for
    /// that QEMU; else its serial log since the start, then (at most every
    /// [`PORT_PROBE_EVERY`], within [`PORT_PROBE_TIME`]) its published ports.
    async fn readiness(
        &self,
        vm: &VmSpec,
        name: &str,
        pid: i32,
        owner: Option<&Owner>,
    ) -> Readiness {
        let memo = self.memo(name);
        if memo.up == Some(pid) {
            return Readiness::Up;
        }
        let mark = owner.map(Owner::serial).unwrap_or_default();
        let mut evidence = None;
        if self.host.serial_output_since(name, mark).await {
            evidence = Some("output on its serial console".to_string());
        } else if !vm.ports.is_empty()
            && memo
                .ports_probed
                .is_none_or(|(p, at)| p != pid || at.elapsed() >= PORT_PROBE_EVERY)
        {
            let mut memo = self.memo(name);
            memo.ports_probed = Some((pid, Instant::now()));
            self.set_memo(name, memo);
            let probes = vm.ports.iter().filter_map(|p| {
                let addr = probe_addr(p.host_ip.as_deref(), p.host_port)?;
                Some(async move {
                    canopy_vm::port_answers(addr, PORT_PROBE_TIME)
                        .await
                        .then_some(p.host_port)
                })
            });
            if let Some(port) = futures::future::join_all(probes)
                .await
                .into_iter()
                .flatten()
                .next()
            {
                evidence = Some(format!("an answer on host port {port}"));
            }
        }
        if let Some(how) = evidence {
            info!(vm = %name, pid, evidence = %how, "the guest came up");
            let mut memo = self.memo(name);
            memo.up = Some(pid);
            self.set_memo(name, memo);
            return Readiness::Up;
        }
        let booting = match self.host.started_at(name).await {
            Some(t) => t.elapsed().unwrap_or_default(),
            None => Duration::ZERO,
        };
        if booting >= self.boot_timeout {
            Readiness::TimedOut(booting)
        } else {
            Readiness::Waiting(booting)
        }
    }

    /// The state, health and message of a running QEMU's workload by its guest's readiness.
    fn ready_state(
        &self,
        app: &AppInstance,
        vm: &VmSpec,
        w: &mut WorkloadStatus,
        readiness: Readiness,
    ) -> VmState {
        let target = format!("virtual machine {} of app {}", vm.name, app.name);
        // The fallback explains TCG only for a VM that runs under it (an adopted VM may have
        // been started under KVM by an earlier agent).
        let fallback = self
            .accelerator_fallback()
            .filter(|_| w.accelerator == Some(WireAccelerator::Tcg));
        let accel = match (&w.accelerator, fallback) {
            (None, _) => "accelerator unknown".to_string(),
            (Some(a), None) => format!("accelerator {a}"),
            (Some(a), Some(why)) => format!("accelerator {a}, software emulation: {why}"),
        };
        let ports = match vm.ports.as_slice() {
            [] => None,
            [p] => Some(format!("host port {}", p.host_port)),
            many => Some(format!(
                "host ports {}",
                many.iter()
                    .map(|p| p.host_port.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
        let (wanted, missing) = match &ports {
            None => (
                "output on its serial console".to_string(),
                "no output on its serial console".to_string(),
            ),
            Some(ports) => (
                format!("output on its serial console or an answer on {ports}"),
                format!("no output on its serial console and no answer on {ports}"),
            ),
        };
        let limit = self.boot_timeout.as_secs();
        match readiness {
            Readiness::Up => {
                w.health = Health::Healthy;
                if let Some(why) = fallback {
                    w.message = format!(
                        "{target} runs under TCG (software emulation, much slower than KVM): {why}"
                    );
                }
                VmState::Running
            }
            Readiness::Waiting(booting) => {
                w.health = Health::Starting;
                w.message = format!(
                    "{target} is booting ({accel}): waiting for the guest to show it came up \
                     ({wanted}), {} s of {limit} s",
                    booting.as_secs()
                );
                VmState::Starting
            }
            Readiness::TimedOut(booting) => {
                w.health = Health::Unhealthy;
                w.message = format!(
                    "{target} did not come up within {limit} s ({accel}): {missing} since it \
                     started {} s ago; QEMU keeps running it (see its serial log with `canopy \
                     logs`, its console with `canopy vm console`, or stop it)",
                    booting.as_secs()
                );
                VmState::Starting
            }
        }
    }

    fn memo(&self, name: &str) -> Memo {
        self.memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    fn set_memo(&self, name: &str, memo: Memo) {
        self.memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), memo);
    }

    fn forget_failure(&self, name: &str) {
        let mut memo = self.memo(name);
        memo.failure = None;
        self.set_memo(name, memo);
    }

    /// The desired VM a tunnel names, and its host name.
    fn find<'a>(
        &self,
        desired: &'a DesiredState,
        deployment_id: &str,
        app: &str,
        vm: &str,
    ) -> Result<(&'a VmSpec, String), DriverError> {
        desired
            .deployments
            .iter()
            .filter(|d| d.deployment_id == deployment_id)
            .flat_map(|d| d.apps.iter().filter(|a| a.name == app))
            .flat_map(|a| a.vms.iter().filter(|v| v.name == vm))
            .next()
            .map(|v| (v, self.vm_name(deployment_id, app, vm)))
            .ok_or_else(|| DriverError::NoSuchWorkload {
                what: format!("virtual machine {vm} of app {app} (deployment {deployment_id})"),
            })
    }

    /// A TCP connection to the VM's VNC server.
    pub async fn open_vnc(
        &self,
        desired: &DesiredState,
        deployment_id: &str,
        app: &str,
        vm: &str,
    ) -> Result<TunnelIo, DriverError> {
        let (spec, name) = self.find(desired, deployment_id, app, vm)?;
        let target = format!("the VNC console of virtual machine {vm} of app {app}");
        if !spec.vnc {
            return Err(DriverError::Unsupported {
                what: format!("{target} (its spec does not ask for vnc)"),
            });
        }
        let info = self
            .host
            .running_info(&name)
            .await
            .map_err(|source| DriverError::Vm {
                op: "query",
                target: format!("virtual machine {vm} of app {app}"),
                source,
            })?
            .ok_or_else(|| DriverError::NoSuchWorkload {
                what: format!("a running virtual machine {vm} of app {app}"),
            })?;
        let addr = info.vnc.ok_or_else(|| DriverError::Unsupported {
            what: format!("{target} (QEMU reports no VNC server)"),
        })?;
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map_err(|_| DriverError::Open {
            what: format!("{target} at {addr}"),
            source: std::io::ErrorKind::TimedOut.into(),
        })?
        .map_err(|source| DriverError::Open {
            what: format!("{target} at {addr}"),
            source,
        })?;
        Ok(TunnelIo::Duplex(Box::new(stream)))
    }

    /// The VM's interactive serial console (its Unix socket).
    pub async fn open_serial(
        &self,
        desired: &DesiredState,
        deployment_id: &str,
        app: &str,
        vm: &str,
    ) -> Result<TunnelIo, DriverError> {
        let (_, name) = self.find(desired, deployment_id, app, vm)?;
        let socket = self.host.serial_socket(&name);
        let stream = tokio::net::UnixStream::connect(&socket)
            .await
            .map_err(|source| DriverError::Open {
                what: format!(
                    "the serial console of virtual machine {vm} of app {app} ({}; is the VM running?)",
                    socket.display()
                ),
                source,
            })?;
        Ok(TunnelIo::Duplex(Box::new(stream)))
    }

    /// The VM's serial log: the last `tail` lines (0: all that is kept, up to 1 MiB) and, with
    /// `follow`, what the guest prints next, across log rotation, until the stream is dropped.
    pub async fn open_logs(
        &self,
        desired: &DesiredState,
        deployment_id: &str,
        app: &str,
        vm: &str,
        follow: bool,
        tail: u32,
    ) -> Result<TunnelIo, DriverError> {
        let (_, name) = self.find(desired, deployment_id, app, vm)?;
        let path = self.host.serial_log(&name);
        let what = || format!("the serial log of virtual machine {vm} of app {app}");
        let (head, ino, offset) =
            read_tail(&path, tail)
                .await
                .map_err(|source| DriverError::Open {
                    what: what(),
                    source,
                })?;
        let state = Follow {
            path,
            pending: (!head.is_empty()).then_some(head),
            follow,
            ino,
            offset,
        };
        Ok(TunnelIo::Source(follow_stream(state)))
    }
}

/// The last `tail` lines of a log (all of its last MiB when `tail` is 0), its inode and length.
async fn read_tail(path: &Path, tail: u32) -> std::io::Result<(Bytes, u64, u64)> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Bytes::new(), 0, 0)),
        Err(e) => return Err(e),
    };
    let meta = file.metadata().await?;
    let len = meta.len();
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut buf = Vec::new();
    (&mut file).take(len - start).read_to_end(&mut buf).await?;
    let offset = start + buf.len() as u64;
    if tail > 0 {
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let mut cut = 0;
        let mut seen = 0;
        for (i, b) in body.iter().enumerate().rev() {
            if *b == b'\n' {
                seen += 1;
                if seen == tail {
                    cut = i + 1;
                    break;
                }
            }
        }
        buf.drain(..cut);
    }
    Ok((Bytes::from(buf), meta.ino(), offset))
}

/// Where a followed log stands.
struct Follow {
    path: PathBuf,
    pending: Option<Bytes>,
    follow: bool,
    ino: u64,
    offset: u64,
}

type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Polls the file for growth; a new inode (rotated) or a shorter file (truncated) is read from
/// its start; a missing file is waited for.
fn follow_stream(state: Follow) -> ByteStream {
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        if let Some(b) = st.pending.take() {
            return Some((Ok(b), st));
        }
        if !st.follow {
            return None;
        }
        loop {
            match tokio::fs::metadata(&st.path).await {
                Ok(m) => {
                    if m.ino() != st.ino || m.len() < st.offset {
                        st.ino = m.ino();
                        st.offset = 0;
                    }
                    if m.len() > st.offset {
                        match read_at(&st.path, st.offset, m.len() - st.offset).await {
                            Ok(b) if !b.is_empty() => {
                                st.offset += b.len() as u64;
                                return Some((Ok(b), st));
                            }
                            Ok(_) => {}
                            Err(e) => {
                                st.follow = false;
                                return Some((Err(e), st));
                            }
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    st.follow = false;
                    return Some((Err(e), st));
                }
            }
            tokio::time::sleep(LOG_POLL).await;
        }
    }))
}

async fn read_at(path: &Path, offset: u64, len: u64) -> std::io::Result<Bytes> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    file.take(len.min(64 << 10)).read_to_end(&mut buf).await?;
    Ok(Bytes::from(buf))
}

/// Where to knock on a published port: its bound address, loopback when bound to all.
fn probe_addr(host_ip: Option<&str>, port: u16) -> Option<SocketAddr> {
    let ip = match host_ip {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(ip) => match ip.parse::<IpAddr>().ok()? {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        },
    };
    Some(SocketAddr::new(ip, port))
}

/// `CANOPY_VM_BOOT_TIMEOUT` in seconds (at least 1), else [`DEFAULT_BOOT_TIMEOUT`].
fn boot_timeout_from_env() -> Duration {
    let value = std::env::var(BOOT_TIMEOUT_ENV).ok();
    parse_boot_timeout(value.as_deref()).unwrap_or_else(|bad| {
        warn!(
            value = %bad,
            default_secs = DEFAULT_BOOT_TIMEOUT.as_secs(),
            "{BOOT_TIMEOUT_ENV} is not a number of seconds above 0; using the default"
        );
        DEFAULT_BOOT_TIMEOUT
    })
}

/// A boot timeout in seconds; unset is the default, anything but a number above 0 is returned
/// as the error.
fn parse_boot_timeout(value: Option<&str>) -> Result<Duration, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_BOOT_TIMEOUT),
        Some(v) => match v.parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
            _ => Err(v.to_string()),
        },
    }
}

/// The app state one VM's report stands for.
fn vm_app_state(w: &WorkloadStatus) -> AppState {
    match w.state.as_str() {
        "RUNNING" => AppState::Running,
        "STOPPED" if w.admin_state == Some(AdminState::Down) => AppState::Running,
        // Booting past the boot timeout without a sign of the guest: an error.
        "STARTING" if w.health == Health::Unhealthy => AppState::Down,
        "STARTING" | "PROVISIONING" | "STOPPING" | "MIGRATING" => AppState::Deploying,
        _ => AppState::Down,
    }
}

fn state_word(s: VmState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "UNSPECIFIED".into())
}

fn policy_word(p: RestartPolicy) -> &'static str {
    match p {
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "never",
    }
}

fn backoff(attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(10);
    (BACKOFF_FIRST * factor).min(BACKOFF_MAX)
}

/// Hash of everything in the VM spec: a change means stop and start anew.
fn spec_hash(vm: &VmSpec) -> String {
    let json = serde_json::to_vec(vm).expect("VM spec serializes");
    format!("{:x}", Sha256::digest(json))
}

fn boot_images(vm: &VmSpec) -> Vec<&VmImage> {
    match &vm.boot {
        VmBoot::Disk { image } => vec![image],
        VmBoot::Kernel { kernel, initrd, .. } => {
            std::iter::once(kernel).chain(initrd.as_ref()).collect()
        }
    }
}

fn boot_url(vm: &VmSpec) -> &str {
    match &vm.boot {
        VmBoot::Disk { image } => &image.url,
        VmBoot::Kernel { kernel, .. } => &kernel.url,
    }
}

fn source(i: &VmImage) -> ImageSource {
    ImageSource {
        url: i.url.clone(),
        sha256: i.sha256.clone(),
    }
}

/// The canopy-vm spec of a desired VM, under its host name. Ports without a host address are
/// published on all addresses, as container ports are.
fn vm_spec(name: &str, vm: &VmSpec) -> Result<canopy_vm::VmSpec, String> {
    let mut ports = Vec::new();
    for p in &vm.ports {
        let ip = match &p.host_ip {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(ip) => ip.parse().map_err(|_| {
                format!(
                    "virtual machine {}: hostIp {ip:?} is not an IP address",
                    vm.name
                )
            })?,
        };
        ports.push(canopy_vm::PortForward {
            guest_port: p.guest_port,
            host_port: p.host_port,
            host_ip: Some(ip),
        });
    }
    Ok(canopy_vm::VmSpec {
        name: name.to_string(),
        cpus: vm.cpus,
        memory_mib: vm.memory_mib,
        boot: match &vm.boot {
            VmBoot::Disk { image } => canopy_vm::Boot::Disk {
                image: source(image),
            },
            VmBoot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => canopy_vm::Boot::Kernel {
                kernel: source(kernel),
                initrd: initrd.as_ref().map(source),
                cmdline: cmdline.clone(),
            },
        },
        extra_disks: vm
            .extra_disks
            .iter()
            .map(|d| canopy_vm::ExtraDisk {
                size_gib: d.size_gib,
            })
            .collect(),
        ports,
        cloud_init: vm.cloud_init.as_ref().map(|c| canopy_vm::CloudInit {
            user_data: c.user_data.clone(),
            meta_data: c.meta_data.clone(),
        }),
        vnc: vm.vnc,
    })
}

/// Whether the app's registry credentials (`server`: the registry's `host[:port]`) go with a
/// download of `url`: an `http(s)` URL on exactly that host and port (the scheme's default port
/// when `server` names none), never a look-alike host.
fn auth_applies(server: &str, url: &reqwest::Url) -> bool {
    if !matches!(url.scheme(), "http" | "https") || server.is_empty() {
        return false;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    let (server_host, server_port) = match server.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && (!h.starts_with('[') || h.ends_with(']')) => {
            match p.parse::<u16>() {
                Ok(port) => (h, Some(port)),
                Err(_) => (server, None),
            }
        }
        _ => (server, None),
    };
    host.eq_ignore_ascii_case(server_host)
        && match server_port {
            Some(port) => url.port_or_known_default() == Some(port),
            None => url.port().is_none(),
        }
}

/// Refuses a VM when it and the VMs already running here (`in_use_mib`) would be given more
/// than `MemTotal − max(256 MiB, MemTotal / 10)`: guests are not overcommitted.
fn memory_fits(requested_mib: u64, in_use_mib: u64, total_mib: u64) -> Result<(), String> {
    let limit = total_mib.saturating_sub(HOST_RESERVE_MIB.max(total_mib / 10));
    if requested_mib.saturating_add(in_use_mib) <= limit {
        return Ok(());
    }
    let running = if in_use_mib > 0 {
        format!(", {in_use_mib} MiB of which the VMs already running here hold")
    } else {
        String::new()
    };
    Err(format!(
        "asks for {requested_mib} MiB of memory but this edge has {total_mib} MiB in all \
         (at most {limit} MiB can go to VMs: max(256 MiB, 10%) stays with the host{running})"
    ))
}

fn mem_total_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map(|kib| kib / 1024)
}

/// Refuses host ports something else listens on (QEMU would fail later with a vaguer message).
/// A port still held for a moment (a QEMU that was just killed is still closing its sockets)
/// gets two seconds to become free.
async fn check_ports(spec: &canopy_vm::VmSpec, target: &str) -> Result<(), String> {
    for p in &spec.ports {
        let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let mut tries = 0;
        loop {
            match std::net::TcpListener::bind((ip, p.host_port)) {
                Ok(_) => break,
                Err(_) if tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return Err(format!(
                        "{target}: host port {} (on {ip}) is not free: {e}",
                        p.host_port
                    ));
                }
            }
        }
    }
    Ok(())
}

async fn read_owner(dir: &Path) -> Option<Owner> {
    let bytes = tokio::fs::read(dir.join(OWNER_FILE)).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn write_owner(dir: &Path, owner: &Owner) -> Result<(), String> {
    let path = dir.join(OWNER_FILE);
    let json = serde_json::to_vec_pretty(owner).expect("owner record serializes");
    canopy_fs::AtomicFile::new(&path)
        .mode(0o600)
        .write_async(json)
        .await
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// An error with its sources, for status messages.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn driver(scope: Option<&str>) -> VmDriver {
        // TCG forced: no accelerator probe for tests that start no VM.
        let host = VmHost::new("/nonexistent/canopy-test").with_accel(canopy_vm::Accel::Tcg);
        let d = VmDriver::for_host(host).await;
        match scope {
            Some(s) => d.scoped(s),
            None => d,
        }
    }

    #[tokio::test]
    async fn vm_names_are_valid_stable_and_distinct() {
        let d = driver(None).await;
        let long = "x".repeat(40);
        for (dep, app, vm) in [
            ("d1", "web", "vm"),
            ("0b6f9c3e-6f0e-4a4e-9d3b-1c2d3e4f5a6b", &long[..], &long[..]),
            ("d1", "Web_App", "v.m"),
        ] {
            let n = d.vm_name(dep, app, vm);
            assert!(n.len() <= 63, "{n}");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{n}"
            );
            assert!(!n.ends_with('-') && !n.starts_with('-'), "{n}");
            assert_eq!(n, d.vm_name(dep, app, vm));
        }
        assert_ne!(d.vm_name("d1", "a-b", "c"), d.vm_name("d1", "a", "b-c"));
        assert!(d.vm_name("d1", "web", "vm").ends_with("-web-vm"));
        assert_ne!(
            driver(Some("s1")).await.vm_name("d1", "web", "vm"),
            d.vm_name("d1", "web", "vm")
        );
    }

    #[test]
    fn operator_stopped_vms_count_as_running_apps() {
        let w = |state: &str, admin: &str| WorkloadStatus {
            state: state.into(),
            admin_state: AdminState::non_empty(admin),
            ..WorkloadStatus::default()
        };
        assert_eq!(vm_app_state(&w("RUNNING", "UP")), AppState::Running);
        assert_eq!(vm_app_state(&w("STOPPED", "DOWN")), AppState::Running);
        assert_eq!(vm_app_state(&w("STOPPED", "UP")), AppState::Down);
        assert_eq!(vm_app_state(&w("STARTING", "UP")), AppState::Deploying);
        assert_eq!(vm_app_state(&w("ERROR_IMAGE_PULL", "UP")), AppState::Down);
        // Booting past the boot timeout without a sign of the guest is an error.
        let mut mute = w("STARTING", "UP");
        mute.health = Health::Unhealthy;
        assert_eq!(vm_app_state(&mute), AppState::Down);
        mute.health = Health::Starting;
        assert_eq!(vm_app_state(&mute), AppState::Deploying);
        assert_eq!(state_word(VmState::CrashLoopBackoff), "CRASH_LOOP_BACKOFF");
    }

    #[test]
    fn registry_credentials_go_only_to_the_registry() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(auth_applies(
            "registry.example.com",
            &url("https://registry.example.com/edge/vm.qcow2")
        ));
        assert!(auth_applies(
            "Registry.Example.com",
            &url("http://registry.example.com/x")
        ));
        assert!(auth_applies(
            "registry.example.com:8443",
            &url("https://registry.example.com:8443/x")
        ));
        assert!(auth_applies(
            "registry.example.com:443",
            &url("https://registry.example.com/x")
        ));
        assert!(auth_applies("[::1]:5000", &url("http://[::1]:5000/x")));
        for (server, u) in [
            (
                "registry.example.com",
                "https://registry.example.com.evil.org/x",
            ),
            (
                "registry.example.com",
                "https://evil.org/registry.example.com/x",
            ),
            (
                "registry.example.com",
                "https://registry.example.com:8443/x",
            ),
            (
                "registry.example.com:8443",
                "https://registry.example.com/x",
            ),
            ("registry.example.com", "file:///registry.example.com/x"),
            ("", "https://registry.example.com/x"),
        ] {
            assert!(!auth_applies(server, &url(u)), "{server} must not get {u}");
        }
    }

    #[test]
    fn vm_memory_is_summed_over_the_running_vms() {
        // 8 GiB: 819 MiB stay with the host, 7373 MiB can go to VMs.
        assert!(memory_fits(7373, 0, 8192).is_ok());
        let alone = memory_fits(7374, 0, 8192).unwrap_err();
        assert!(alone.contains("asks for 7374 MiB"), "{alone}");
        assert!(!alone.contains("already running"), "{alone}");
        assert!(memory_fits(4000, 3373, 8192).is_ok());
        let beside = memory_fits(4000, 3374, 8192).unwrap_err();
        assert!(
            beside.contains("3374 MiB of which the VMs already running"),
            "{beside}"
        );
        // Small hosts keep 256 MiB.
        assert!(memory_fits(768, 0, 1024).is_ok());
        assert!(memory_fits(769, 0, 1024).is_err());
    }

    #[test]
    fn published_ports_are_probed_where_they_are_bound() {
        let at = |ip: Option<&str>| probe_addr(ip, 8080).map(|a| a.to_string());
        assert_eq!(at(None).as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(at(Some("0.0.0.0")).as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(at(Some("::")).as_deref(), Some("[::1]:8080"));
        assert_eq!(at(Some("10.1.2.3")).as_deref(), Some("10.1.2.3:8080"));
        assert_eq!(at(Some("not-an-ip")), None);
    }

    #[test]
    fn the_boot_timeout_is_a_number_of_seconds() {
        assert_eq!(parse_boot_timeout(None), Ok(DEFAULT_BOOT_TIMEOUT));
        assert_eq!(parse_boot_timeout(Some(" ")), Ok(DEFAULT_BOOT_TIMEOUT));
        assert_eq!(parse_boot_timeout(Some("45")), Ok(Duration::from_secs(45)));
        assert_eq!(parse_boot_timeout(Some("0")), Err("0".into()));
        assert_eq!(parse_boot_timeout(Some("5m")), Err("5m".into()));
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }

    #[tokio::test]
    async fn log_tails_keep_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(read_tail(&path, 2).await.unwrap().0, "b\nc\n");
        assert_eq!(read_tail(&path, 0).await.unwrap().0, "a\nb\nc\n");
        assert_eq!(read_tail(&path, 9).await.unwrap().0, "a\nb\nc\n");
        assert_eq!(read_tail(&dir.path().join("none"), 2).await.unwrap().0, "");
    }
}
