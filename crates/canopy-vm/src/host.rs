//! [`VmHost`]: the VMs of one agent data directory, each a daemonized QEMU process.
//!
//! All state lives on disk under `<data dir>/vms/<name>/` (spec, overlay, disks, seed, pidfile,
//! QMP socket, logs) and in the running QEMU processes themselves; a `VmHost` holds nothing else
//! but its accelerator decision (probed once, see [`crate::AccelChoice`]).
//! That is what makes [`VmHost::adopt`] safe after an agent restart: QEMU runs daemonized (its own
//! session, not a child of the agent), and a new `VmHost` on the same directory finds it through
//! the pidfile and QMP, without touching the guest.
//!
//! Liveness is checked through `/proc/<pid>/cmdline` (the pid must still be a QEMU started with
//! this VM's pidfile, so a recycled pid is never mistaken for the VM, nor killed).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::OnceCell;

use crate::accel::{Accel, AccelChoice};
use crate::qmp::Qmp;
use crate::seed::{build_seed, run};
use crate::spec::validate_name;
use crate::{Boot, ImageCache, PortForward, VmError, VmSpec};

/// Serial logs larger than this are rotated (to `serial.log.1`) when the VM starts.
const SERIAL_ROTATE_BYTES: u64 = 1 << 20;
/// The serial console's Unix socket in a VM's directory (one client at a time).
const SERIAL_SOCKET: &str = "serial.sock";
/// How long `quit` and SIGKILL each get before the next step.
const QUIT_GRACE: Duration = Duration::from_secs(5);

/// VM states, named as the reference resource manager reports them
/// (`VirtualMachine.status.state`). [`VmHost::status`] produces `Stopped`, `Starting`,
/// `Running`, `Paused`, `Stopping`, `Migrating` and `Unspecified`; the others are for the agent
/// (e.g. `ErrorImagePull` when [`ImageCache::fetch`] fails, `Provisioning` while it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VmState {
    Unspecified,
    Stopped,
    Provisioning,
    Starting,
    Running,
    Paused,
    Stopping,
    Terminating,
    CrashLoopBackoff,
    Migrating,
    ErrorUnschedulable,
    ErrorImagePull,
    ErrorImagePullBackoff,
    ErrorPvcNotFound,
    ErrorDataVolume,
    WaitingForVolumeBinding,
}

impl VmState {
    /// Maps QMP `query-status` `status` values (QEMU's RunState).
    pub fn from_qmp(status: &str) -> VmState {
        match status {
            "running" => VmState::Running,
            "paused" | "suspended" | "debug" | "save-vm" | "watchdog" => VmState::Paused,
            "shutdown" => VmState::Stopping,
            "prelaunch" | "restore-vm" => VmState::Starting,
            "inmigrate" | "postmigrate" | "finish-migrate" | "colo" => VmState::Migrating,
            // internal-error, io-error, guest-panicked: the VM exists but is not healthy; the
            // raw status is in `VmStatus::qemu_status` for the agent to report.
            _ => VmState::Unspecified,
        }
    }
}

/// The state of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmStatus {
    pub name: String,
    pub state: VmState,
    /// QEMU's own run state (`query-status`), when QMP answered.
    pub qemu_status: Option<String>,
    /// The QEMU process, when alive.
    pub pid: Option<i32>,
}

/// A running VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmInfo {
    pub name: String,
    pub pid: i32,
    pub state: VmState,
    /// The accelerator in use, as QEMU reports it (`query-kvm`): `kvm` or `tcg`.
    pub accelerator: String,
    /// Where the VNC server listens, when the spec asked for one.
    pub vnc: Option<SocketAddr>,
    /// The published ports (from the spec).
    pub ports: Vec<PortForward>,
    /// The VM's directory.
    pub dir: PathBuf,
}

/// How [`VmHost::stop`] got the VM down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It was not running.
    AlreadyStopped,
    /// The guest powered off after the ACPI power button (`system_powerdown`).
    PoweredOff,
    /// The guest ignored the power button; QEMU was told to `quit`.
    Quit,
    /// QEMU did not answer; it was killed (SIGKILL).
    Killed,
}

/// The virtual machines of one agent data directory.
#[derive(Debug, Clone)]
pub struct VmHost {
    vms_dir: PathBuf,
    cache: ImageCache,
    accel: Accel,
    /// The accelerator decided for `accel` (probed once, at the first need; shared by clones).
    choice: Arc<OnceCell<AccelChoice>>,
    qemu: PathBuf,
    qemu_img: PathBuf,
}

impl VmHost {
    /// VMs under `<data_dir>/vms/`, images in `<data_dir>/cache/`, accelerator from
    /// `CANOPY_VM_ACCEL`.
    pub fn new(data_dir: impl AsRef<Path>) -> VmHost {
        let data_dir = data_dir.as_ref();
        VmHost {
            vms_dir: data_dir.join("vms"),
            cache: ImageCache::new(data_dir.join("cache")),
            accel: Accel::from_env(),
            choice: Arc::default(),
            qemu: PathBuf::from("qemu-system-x86_64"),
            qemu_img: PathBuf::from("qemu-img"),
        }
    }

    /// Uses another image cache (shared, or with another size cap).
    pub fn with_cache(mut self, cache: ImageCache) -> VmHost {
        self.cache = cache;
        self
    }

    /// Runs another QEMU binary (default: `qemu-system-x86_64` from `PATH`).
    pub fn with_qemu(mut self, qemu: impl Into<PathBuf>) -> VmHost {
        self.qemu = qemu.into();
        self.choice = Arc::default();
        self
    }

    /// Sets the accelerator (overrides `CANOPY_VM_ACCEL`).
    pub fn with_accel(mut self, accel: Accel) -> VmHost {
        self.accel = accel;
        self.choice = Arc::default();
        self
    }

    /// The accelerator setting VMs are started with.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The accelerator VMs start with: the forced one, or with [`Accel::Auto`] KVM when a probe
    /// guest runs under it within [`crate::PROBE_TIMEOUT`], else TCG (with the reason, logged
    /// as a warning). Decided at the first call and kept: this host (and its clones) probes at
    /// most once.
    pub async fn accelerator(&self) -> &AccelChoice {
        self.choice
            .get_or_init(|| AccelChoice::decide(self.accel, &self.qemu))
            .await
    }

    /// `qemu-system-x86_64 --version`, e.g. `7.2.0`: whether (and which) QEMU can run here.
    pub async fn qemu_version(&self) -> Result<String, VmError> {
        let tool = |detail: String| VmError::Tool {
            name: "-".into(),
            tool: self.qemu.display().to_string(),
            detail,
        };
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(&self.qemu)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .output(),
        )
        .await
        .map_err(|_| tool("--version did not answer within 10 s".into()))?
        .map_err(|e| tool(format!("cannot run it: {e}")))?;
        if !out.status.success() {
            return Err(tool(format!("--version: {}", out.status)));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // "QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u7)"
        let version = text
            .split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
            .unwrap_or("unknown");
        Ok(version.to_string())
    }

    /// The Unix socket of the VM's serial console (exists while the VM runs; one client at a
    /// time; everything the guest prints also goes to `serial.log`).
    pub fn serial_socket(&self, name: &str) -> PathBuf {
        self.vm_dir(name).join(SERIAL_SOCKET)
    }

    /// The serial console log (all the guest printed since the log was last rotated).
    pub fn serial_log(&self, name: &str) -> PathBuf {
        self.vm_dir(name).join("serial.log")
    }

    /// The info of VM `name` when it runs (QMP answers), `None` when it does not run.
    pub async fn running_info(&self, name: &str) -> Result<Option<VmInfo>, VmError> {
        validate_name(name)?;
        let Some(pid) = self.running_pid(name).await else {
            return Ok(None);
        };
        let spec = self.spec(name).await?;
        self.info(&spec, pid).await.map(Some)
    }

    /// The image cache.
    pub fn cache(&self) -> &ImageCache {
        &self.cache
    }

    /// The directory of VM `name` (whether or not it exists).
    pub fn vm_dir(&self, name: &str) -> PathBuf {
        self.vms_dir.join(name)
    }

    /// Creates (or updates the stored spec of) a VM and starts it. Starting a VM that already
    /// runs returns its info and leaves it alone; a changed spec takes effect at the next start.
    pub async fn start(&self, spec: &VmSpec) -> Result<VmInfo, VmError> {
        spec.validate()?;
        let dir = self.vm_dir(&spec.name);
        if let Some(pid) = self.running_pid(&spec.name).await {
            write_spec(&dir, spec).await?;
            return self.info(spec, pid).await;
        }
        check_memory(spec)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(VmError::io("cannot create VM directory", &dir))?;
        write_spec(&dir, spec).await?;
        self.launch(spec).await
    }

    /// Starts an existing VM from its stored spec (no-op when it runs).
    pub async fn start_existing(&self, name: &str) -> Result<VmInfo, VmError> {
        let spec = self.spec(name).await?;
        if let Some(pid) = self.running_pid(name).await {
            return self.info(&spec, pid).await;
        }
        check_memory(&spec)?;
        self.launch(&spec).await
    }

    /// Stops (as [`VmHost::stop`]) and starts again.
    pub async fn restart(&self, name: &str, timeout: Duration) -> Result<VmInfo, VmError> {
        self.stop(name, timeout).await?;
        self.start_existing(name).await
    }

    /// The stored spec of VM `name`.
    pub async fn spec(&self, name: &str) -> Result<VmSpec, VmError> {
        validate_name(name)?;
        let path = self.vm_dir(name).join("spec.json");
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VmError::NotFound {
                    name: name.to_string(),
                });
            }
            Err(e) => return Err(VmError::io("cannot read", &path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| VmError::InvalidSpec {
            name: name.to_string(),
            reason: format!("{}: {e}", path.display()),
        })
    }

    /// The names of all VMs (running or not) under this host's directory.
    pub async fn list(&self) -> Result<Vec<String>, VmError> {
        let mut names = Vec::new();
        let mut entries = match tokio::fs::read_dir(&self.vms_dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(VmError::io("cannot list", &self.vms_dir)(e)),
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(VmError::io("cannot list", &self.vms_dir))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if validate_name(&name).is_ok() && entry.path().join("spec.json").is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The checksums of the images the VMs here use, for [`ImageCache::gc`].
    pub async fn images_in_use(&self) -> Result<Vec<String>, VmError> {
        let mut shas = Vec::new();
        for name in self.list().await? {
            let spec = self.spec(&name).await?;
            shas.extend(
                spec.images()
                    .into_iter()
                    .map(|i| i.sha256.to_ascii_lowercase()),
            );
        }
        shas.sort();
        shas.dedup();
        Ok(shas)
    }

    /// The memory (MiB) given to the VMs here that run, `except` one of them: what a VM about
    /// to start must fit next to.
    pub async fn memory_in_use_mib(&self, except: &str) -> Result<u64, VmError> {
        let mut total = 0u64;
        for name in self.list().await? {
            if name == except || self.running_pid(&name).await.is_none() {
                continue;
            }
            total = total.saturating_add(self.spec(&name).await?.memory_mib);
        }
        Ok(total)
    }

    /// The VMs that run (their process is alive and QMP answers), found from disk alone: what an
    /// agent calls after a restart. The guests are not touched.
    pub async fn adopt(&self) -> Result<Vec<VmInfo>, VmError> {
        let mut found = Vec::new();
        for name in self.list().await? {
            let Some(pid) = self.running_pid(&name).await else {
                continue;
            };
            let spec = self.spec(&name).await?;
            match self.info(&spec, pid).await {
                Ok(info) => {
                    tracing::info!(vm = %name, pid, "adopted running VM");
                    found.push(info);
                }
                Err(e) => {
                    tracing::warn!(vm = %name, pid, error = %e, "VM process alive but QMP does not answer; not adopted")
                }
            }
        }
        Ok(found)
    }

    /// The VM's state: `Stopped` without a live process, else QEMU's run state.
    pub async fn status(&self, name: &str) -> Result<VmStatus, VmError> {
        validate_name(name)?;
        if !self.vm_dir(name).join("spec.json").is_file() {
            return Err(VmError::NotFound {
                name: name.to_string(),
            });
        }
        let Some(pid) = self.running_pid(name).await else {
            return Ok(VmStatus {
                name: name.to_string(),
                state: VmState::Stopped,
                qemu_status: None,
                pid: None,
            });
        };
        match self.query_status(name).await {
            Ok(status) => Ok(VmStatus {
                name: name.to_string(),
                state: VmState::from_qmp(&status),
                qemu_status: Some(status),
                pid: Some(pid),
            }),
            Err(e) => {
                tracing::debug!(vm = %name, error = %e, "QMP query-status failed");
                Ok(VmStatus {
                    name: name.to_string(),
                    state: VmState::Unspecified,
                    qemu_status: None,
                    pid: Some(pid),
                })
            }
        }
    }

    /// Stops the VM: ACPI power button (`system_powerdown`), then after `timeout` QMP `quit`,
    /// then SIGKILL. Stopping a stopped VM is fine.
    pub async fn stop(&self, name: &str, timeout: Duration) -> Result<StopOutcome, VmError> {
        validate_name(name)?;
        let dir = self.vm_dir(name);
        let Some(pid) = self.running_pid(name).await else {
            cleanup_runtime(&dir).await;
            return Ok(StopOutcome::AlreadyStopped);
        };
        let socket = dir.join("qmp.sock");
        let mut outcome = StopOutcome::PoweredOff;
        let powerdown = match Qmp::connect(name, &socket).await {
            Ok(mut qmp) => qmp.execute("system_powerdown").await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = &powerdown {
            tracing::warn!(vm = %name, error = %e, "system_powerdown failed");
        }
        if powerdown.is_err() || !self.wait_exit(name, pid, timeout).await {
            outcome = StopOutcome::Quit;
            if let Ok(mut qmp) = Qmp::connect(name, &socket).await {
                // QEMU may exit before answering `quit`; that is success too.
                let _ = qmp.execute("quit").await;
            }
            if !self.wait_exit(name, pid, QUIT_GRACE).await {
                outcome = StopOutcome::Killed;
                tracing::warn!(vm = %name, pid, "qemu ignored quit; sending SIGKILL");
                if let Some(p) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
                if !self.wait_exit(name, pid, QUIT_GRACE).await {
                    return Err(VmError::StopFailed {
                        name: name.to_string(),
                        pid,
                    });
                }
            }
        }
        cleanup_runtime(&dir).await;
        tracing::info!(vm = %name, ?outcome, "VM stopped");
        Ok(outcome)
    }

    /// Stops the VM and deletes everything it used: overlay, disks, seed, sockets, logs, spec.
    /// Cached base images stay (see [`ImageCache::gc`]). Removing a missing VM is fine.
    pub async fn remove(&self, name: &str, timeout: Duration) -> Result<(), VmError> {
        validate_name(name)?;
        let dir = self.vm_dir(name);
        if !dir.exists() {
            return Ok(());
        }
        self.stop(name, timeout).await?;
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(VmError::io("cannot remove VM directory", &dir))?;
        tracing::info!(vm = %name, "VM removed");
        Ok(())
    }

    /// The last `bytes` bytes of the VM's serial console log (lossy UTF-8).
    pub async fn serial_tail(&self, name: &str, bytes: u64) -> Result<String, VmError> {
        validate_name(name)?;
        let path = self.vm_dir(name).join("serial.log");
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
            Err(e) => return Err(VmError::io("cannot open", &path)(e)),
        };
        let len = file
            .metadata()
            .await
            .map_err(VmError::io("cannot stat", &path))?
            .len();
        file.seek(std::io::SeekFrom::Start(len.saturating_sub(bytes)))
            .await
            .map_err(VmError::io("cannot seek", &path))?;
        let mut buf = Vec::new();
        file.take(bytes)
            .read_to_end(&mut buf)
            .await
            .map_err(VmError::io("cannot read", &path))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    async fn launch(&self, spec: &VmSpec) -> Result<VmInfo, VmError> {
        let name = &spec.name;
        let dir = self.vm_dir(name);
        let mut args: Vec<String> = Vec::new();
        let mut arg = |a: &str| args.push(a.to_string());
        for a in [
            "-name",
            name,
            "-nodefaults",
            "-no-user-config",
            "-daemonize",
        ] {
            arg(a);
        }
        let accel = self.accelerator().await.accelerator;
        arg("-accel");
        arg(accel.as_str());
        arg("-m");
        arg(&spec.memory_mib.to_string());
        arg("-smp");
        arg(&spec.cpus.to_string());
        arg("-pidfile");
        arg(&qemu_path(&dir.join("qemu.pid")));
        arg("-qmp");
        arg(&format!(
            "unix:{},server=on,wait=off",
            qemu_path(&dir.join("qmp.sock"))
        ));
        // The serial port is a Unix socket (so a console tunnel can read and type) with a
        // logfile: QEMU writes everything the guest prints to serial.log too, connected or not.
        let serial = dir.join("serial.log");
        rotate(&serial).await;
        arg("-chardev");
        arg(&format!(
            "socket,id=serial0,path={},server=on,wait=off,logfile={},logappend=on",
            qemu_path(&dir.join(SERIAL_SOCKET)),
            qemu_path(&serial)
        ));
        arg("-serial");
        arg("chardev:serial0");

        let mut netdev = "user,id=n0".to_string();
        for port in &spec.ports {
            let ip = port.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let ip = match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            };
            netdev.push_str(&format!(
                ",hostfwd=tcp:{ip}:{}-:{}",
                port.host_port, port.guest_port
            ));
        }
        arg("-netdev");
        arg(&netdev);
        arg("-device");
        arg("virtio-net-pci,netdev=n0");

        match &spec.boot {
            Boot::Disk { image } => {
                let base = self.cache.fetch(image).await?;
                let overlay = self.overlay(name, &dir, &base, &image.sha256).await?;
                arg("-drive");
                arg(&format!(
                    "file={},format=qcow2,if=virtio",
                    qemu_path(&overlay)
                ));
            }
            Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                let kernel = self.cache.fetch(kernel).await?;
                arg("-kernel");
                arg(&kernel.display().to_string());
                if let Some(initrd) = initrd {
                    let initrd = self.cache.fetch(initrd).await?;
                    arg("-initrd");
                    arg(&initrd.display().to_string());
                }
                arg("-append");
                arg(cmdline);
            }
        }
        for (i, disk) in spec.extra_disks.iter().enumerate() {
            let path = dir.join(format!("disk-{i}.qcow2"));
            if !path.exists() {
                run(
                    name,
                    &self.qemu_img,
                    &[
                        "create".into(),
                        "-q".into(),
                        "-f".into(),
                        "qcow2".into(),
                        path.display().to_string(),
                        format!("{}G", disk.size_gib),
                    ],
                )
                .await?;
            }
            arg("-drive");
            arg(&format!("file={},format=qcow2,if=virtio", qemu_path(&path)));
        }
        if let Some(cloud_init) = &spec.cloud_init {
            let seed = build_seed(name, &dir, cloud_init).await?;
            arg("-drive");
            arg(&format!(
                "file={},format=raw,if=virtio,readonly=on",
                qemu_path(&seed)
            ));
        } else {
            let _ = tokio::fs::remove_file(dir.join("seed.img")).await;
        }
        if spec.vnc {
            let display = free_vnc_display().ok_or_else(|| VmError::QemuStart {
                name: name.clone(),
                log: "no free VNC display on 127.0.0.1 (ports 5900-5999 all taken)".into(),
            })?;
            arg("-vga");
            arg("std");
            arg("-vnc");
            arg(&format!("127.0.0.1:{display}"));
        } else {
            arg("-display");
            arg("none");
        }

        cleanup_runtime(&dir).await;
        let log_path = dir.join("qemu.log");
        let log =
            std::fs::File::create(&log_path).map_err(VmError::io("cannot create", &log_path))?;
        tracing::info!(vm = %name, %accel, "starting qemu");
        tracing::debug!(vm = %name, ?args, "qemu command line");
        let status = tokio::process::Command::new(&self.qemu)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .status()
            .await
            .map_err(|e| VmError::QemuStart {
                name: name.clone(),
                log: format!("cannot run {}: {e}", self.qemu.display()),
            })?;
        if !status.success() {
            let log = tokio::fs::read_to_string(&log_path)
                .await
                .unwrap_or_default();
            return Err(VmError::QemuStart {
                name: name.clone(),
                log: format!("{status}: {}", tail_lines(&log, 10)),
            });
        }
        let pid = self
            .running_pid(name)
            .await
            .ok_or_else(|| VmError::QemuStart {
                name: name.clone(),
                log: "qemu daemonized but its pidfile names no live qemu process".into(),
            })?;
        self.info(spec, pid).await
    }

    /// The overlay of a disk-booted VM: created once on top of the cached base image; recreated
    /// (losing the guest's writes) only when the spec's image changed.
    async fn overlay(
        &self,
        name: &str,
        dir: &Path,
        base: &Path,
        sha: &str,
    ) -> Result<PathBuf, VmError> {
        let overlay = dir.join("overlay.qcow2");
        let marker = dir.join("overlay.base");
        let current = tokio::fs::read_to_string(&marker).await.ok();
        if overlay.exists() && current.as_deref().map(str::trim) == Some(sha) {
            return Ok(overlay);
        }
        if overlay.exists() {
            tracing::warn!(vm = %name, "disk image changed; recreating the overlay (guest writes are lost)");
        }
        let info = run(
            name,
            &self.qemu_img,
            &[
                "info".into(),
                "--output=json".into(),
                base.display().to_string(),
            ],
        )
        .await?;
        let format = serde_json::from_str::<serde_json::Value>(&info)
            .ok()
            .and_then(|v| v["format"].as_str().map(str::to_string))
            .unwrap_or_else(|| "raw".into());
        if format != "qcow2" && format != "raw" {
            return Err(VmError::InvalidSpec {
                name: name.to_string(),
                reason: format!(
                    "disk image {} is {format}; only qcow2 and raw are supported",
                    base.display()
                ),
            });
        }
        let _ = tokio::fs::remove_file(&overlay).await;
        run(
            name,
            &self.qemu_img,
            &[
                "create".into(),
                "-q".into(),
                "-f".into(),
                "qcow2".into(),
                "-F".into(),
                format,
                "-b".into(),
                base.display().to_string(),
                overlay.display().to_string(),
            ],
        )
        .await?;
        tokio::fs::write(&marker, sha)
            .await
            .map_err(VmError::io("cannot write", &marker))?;
        Ok(overlay)
    }

    async fn info(&self, spec: &VmSpec, pid: i32) -> Result<VmInfo, VmError> {
        let socket = self.vm_dir(&spec.name).join("qmp.sock");
        let mut qmp = Qmp::connect(&spec.name, &socket).await?;
        let status = qmp.execute("query-status").await?;
        let kvm = qmp.execute("query-kvm").await?;
        let vnc = if spec.vnc {
            let v = qmp.execute("query-vnc").await?;
            match (v["host"].as_str(), v["service"].as_str()) {
                (Some(host), Some(port)) => format!("{host}:{port}").parse().ok(),
                _ => None,
            }
        } else {
            None
        };
        Ok(VmInfo {
            name: spec.name.clone(),
            pid,
            state: VmState::from_qmp(status["status"].as_str().unwrap_or("")),
            accelerator: if kvm["enabled"].as_bool() == Some(true) {
                "kvm".into()
            } else {
                "tcg".into()
            },
            vnc,
            ports: spec.ports.clone(),
            dir: self.vm_dir(&spec.name),
        })
    }

    async fn query_status(&self, name: &str) -> Result<String, VmError> {
        let socket = self.vm_dir(name).join("qmp.sock");
        let mut qmp = Qmp::connect(name, &socket).await?;
        let status = qmp.execute("query-status").await?;
        Ok(status["status"].as_str().unwrap_or("").to_string())
    }

    /// The pid of the VM's QEMU when it is alive: the pidfile's process must be a QEMU started
    /// with this very pidfile.
    async fn running_pid(&self, name: &str) -> Option<i32> {
        let pidfile = self.vm_dir(name).join("qemu.pid");
        let pid: i32 = tokio::fs::read_to_string(&pidfile)
            .await
            .ok()?
            .trim()
            .parse()
            .ok()?;
        is_our_qemu(pid, &pidfile).then_some(pid)
    }

    async fn wait_exit(&self, name: &str, pid: i32, timeout: Duration) -> bool {
        let pidfile = self.vm_dir(name).join("qemu.pid");
        let deadline = Instant::now() + timeout;
        loop {
            if !is_our_qemu(pid, &pidfile) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A zombie or exited process has an empty cmdline, so it is not "ours".
fn is_our_qemu(pid: i32, pidfile: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_qemu = args
        .first()
        .is_some_and(|a| String::from_utf8_lossy(a).contains("qemu-system"));
    let want = qemu_path(pidfile);
    is_qemu
        && args
            .windows(2)
            .any(|w| w[0] == b"-pidfile" && w[1] == want.as_bytes())
}

/// Refuses a VM asking for more memory than the host has available now.
fn check_memory(spec: &VmSpec) -> Result<(), VmError> {
    let Some(available_kib) = mem_available_kib() else {
        tracing::warn!(vm = %spec.name, "cannot read MemAvailable from /proc/meminfo; not checking memory");
        return Ok(());
    };
    let available_mib = available_kib / 1024;
    if spec.memory_mib > available_mib {
        return Err(VmError::InsufficientMemory {
            name: spec.name.clone(),
            requested_mib: spec.memory_mib,
            available_mib,
        });
    }
    Ok(())
}

fn mem_available_kib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The VM's spec (its cloud-init data may hold secrets: owner only), atomically and durably.
async fn write_spec(dir: &Path, spec: &VmSpec) -> Result<(), VmError> {
    let path = dir.join("spec.json");
    let json = serde_json::to_vec_pretty(spec).expect("spec serializes");
    canopy_fs::AtomicFile::new(&path)
        .mode(0o600)
        .write_async(json)
        .await
        .map_err(VmError::io("cannot write", &path))
}

/// Files of a previous run that would confuse the next (a stale socket, a stale pidfile).
async fn cleanup_runtime(dir: &Path) {
    for f in ["qmp.sock", SERIAL_SOCKET, "qemu.pid"] {
        let _ = tokio::fs::remove_file(dir.join(f)).await;
    }
}

async fn rotate(serial: &Path) {
    if let Ok(meta) = tokio::fs::metadata(serial).await
        && meta.len() > SERIAL_ROTATE_BYTES
    {
        let _ = tokio::fs::rename(serial, serial.with_extension("log.1")).await;
    }
}

/// A path inside a QEMU option string: commas are doubled.
fn qemu_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

fn free_vnc_display() -> Option<u16> {
    (0..100u16).find(|d| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 5900 + d)).is_ok())
}

fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmp_states_map_to_reference_states() {
        assert_eq!(VmState::from_qmp("running"), VmState::Running);
        assert_eq!(VmState::from_qmp("paused"), VmState::Paused);
        assert_eq!(VmState::from_qmp("shutdown"), VmState::Stopping);
        assert_eq!(VmState::from_qmp("prelaunch"), VmState::Starting);
        assert_eq!(VmState::from_qmp("inmigrate"), VmState::Migrating);
        assert_eq!(VmState::from_qmp("guest-panicked"), VmState::Unspecified);
        assert_eq!(
            serde_json::to_value(VmState::CrashLoopBackoff).unwrap(),
            "CRASH_LOOP_BACKOFF"
        );
    }

    #[test]
    fn commas_in_paths_are_escaped_for_qemu() {
        assert_eq!(qemu_path(Path::new("/a,b/c")), "/a,,b/c");
    }

    #[test]
    fn meminfo_is_readable_here() {
        assert!(mem_available_kib().is_some_and(|k| k > 0));
    }
}
