//! Podman's API service as `canopy up` runs it, when no Docker-API socket exists: on
//! `DATA_DIR/podman/podman.sock`, started from `/` (so no checkout is its working directory),
//! with the settings this host needs.
//!
//! **Settings.** Some hosts cannot start any container with Podman's defaults
//! (docs/HOST-SETUP.md): crun refuses hosts that mount cgroups v1 and v2 side by side, rootful
//! Podman gives containers more open files than a low hard limit allows, and without systemd
//! its cgroup manager and event log must be plain files. When the user has not chosen a
//! `containers.conf` (`CONTAINERS_CONF`), `canopy up` detects these and writes the settings to
//! `DATA_DIR/podman/containers.conf`, used by this service only, and says so.
//!
//! **One service per data directory.** Its pid is kept in `service.pid`, with the settings it
//! was started with in `service.settings`. When `canopy up` was killed (`SIGKILL`) and left the
//! service running, the next start finds it by that pid and its command line: a service that
//! answers with the same settings is reused, any other is stopped and a new one started.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tracing::{info, warn};

const PID_FILE: &str = "service.pid";
const SETTINGS_FILE: &str = "service.settings";
const CONF_FILE: &str = "containers.conf";
const LOG_FILE: &str = "podman-service.log";
/// Rootful Podman's default open-files limit for containers (and its process limit once open
/// files are capped): hosts whose hard limits are lower cannot start containers without caps.
const PODMAN_ULIMIT: u64 = 1_048_576;
/// The process limit Podman's own process runs with: containers get at most this.
const PODMAN_NPROC: u64 = 32_768;
/// How long a new service may take to open its socket (a loaded 2-core machine is slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a service gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Podman's API service, started (or reused) by `canopy up`; stopped by [`stop`](Self::stop)
/// and, if it was started here, when dropped.
pub struct PodmanService {
    /// `None` when an earlier run's service was reused.
    child: Option<tokio::process::Child>,
    pid: u32,
    dir: PathBuf,
    /// The socket, `DATA_DIR/podman/podman.sock` (absolute).
    pub socket: PathBuf,
    /// What `canopy up` prints about the service.
    pub summary: String,
}

impl PodmanService {
    /// Starts `podman system service` on `DIR/podman.sock` and waits until it answers, or
    /// reuses the one an earlier run left there (see the module docs).
    pub async fn start(dir: &Path) -> anyhow::Result<PodmanService> {
        let dir = super::absolute(dir)?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let socket = dir.join("podman.sock");
        let url = format!("unix://{}", socket.display());
        let settings = Settings::for_this_host(&dir);
        let stamp = settings.stamp();

        if let Some(pid) = read_pid(&dir) {
            if is_our_service(pid, &url) {
                let same =
                    std::fs::read_to_string(dir.join(SETTINGS_FILE)).ok() == Some(stamp.clone());
                if same && answers(&url).await {
                    info!(pid, socket = %socket.display(), "reusing Podman's API service an earlier canopy up left running");
                    return Ok(PodmanService {
                        child: None,
                        pid,
                        summary: format!(
                            "{} (reused: pid {pid}, left running by an earlier canopy up)",
                            settings.summary(&url)
                        ),
                        dir,
                        socket,
                    });
                }
                let why = if same {
                    "it does not answer"
                } else {
                    "its settings differ"
                };
                info!(
                    pid,
                    "stopping Podman's API service an earlier canopy up left running ({why})"
                );
                stop_pid(pid).await;
            }
            let _ = std::fs::remove_file(dir.join(PID_FILE));
        }

        if let Some(conf) = &settings.written {
            canopy_fs::AtomicFile::new(&conf.path)
                .mode(0o644)
                .write(conf.text.as_bytes())
                .with_context(|| format!("cannot write {}", conf.path.display()))?;
            warn!(
                file = %conf.path.display(),
                "this host needs Podman settings ({}); canopy up starts Podman's API service \
                 with them. To run Podman yourself here, put them in \
                 /etc/containers/containers.conf (see docs/HOST-SETUP.md)",
                conf.reasons.join("; ")
            );
        }
        // A stale socket from a dead service would make `podman system service` fail.
        let _ = std::fs::remove_file(&socket);
        let log_path = dir.join(LOG_FILE);
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot write {}", log_path.display()))?;
        let mut command = tokio::process::Command::new("podman");
        command
            .args(["system", "service", "--time=0"])
            .arg(&url)
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(conf) = &settings.written {
            command.env("CONTAINERS_CONF", &conf.path);
        }
        let child = command
            .spawn()
            .context("cannot start `podman system service` (is podman installed?)")?;
        let pid = child.id().context("podman system service exited at once")?;
        for (name, content) in [
            (PID_FILE, format!("{pid}\n")),
            (SETTINGS_FILE, stamp.clone()),
        ] {
            let path = dir.join(name);
            canopy_fs::AtomicFile::new(&path)
                .write(content.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let mut svc = PodmanService {
            child: Some(child),
            pid,
            summary: settings.summary(&url),
            dir,
            socket,
        };
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if tokio::net::UnixStream::connect(&svc.socket).await.is_ok() {
                info!(pid, socket = %svc.socket.display(), "started Podman's API service");
                return Ok(svc);
            }
            if let Some(child) = svc.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!(
                    "podman system service exited ({status}); see {}",
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "podman system service did not open {} within {} s; see {}",
            svc.socket.display(),
            START_TIMEOUT.as_secs(),
            log_path.display()
        )
    }

    /// Stops the service (SIGTERM, then SIGKILL after a few seconds), started or reused.
    pub async fn stop(mut self) {
        match self.child.take() {
            Some(mut child) => {
                signal(self.pid, rustix::process::Signal::TERM);
                if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
            None => stop_pid(self.pid).await,
        }
        let _ = std::fs::remove_file(self.dir.join(PID_FILE));
    }
}

/// What the service is started with.
struct Settings {
    /// The user's own `CONTAINERS_CONF`, used as is.
    users: Option<String>,
    /// Ours, when this host needs settings and the user chose none.
    written: Option<WrittenConf>,
}

struct WrittenConf {
    path: PathBuf,
    text: String,
    /// Why, one per setting, for people.
    reasons: Vec<String>,
}

impl Settings {
    fn for_this_host(dir: &Path) -> Settings {
        if let Some(users) = std::env::var_os("CONTAINERS_CONF").filter(|v| !v.is_empty()) {
            return Settings {
                users: Some(users.to_string_lossy().into_owned()),
                written: None,
            };
        }
        let needs = HostNeeds::detect();
        Settings {
            users: None,
            written: needs.conf().map(|(text, reasons)| WrittenConf {
                path: dir.join(CONF_FILE),
                text,
                reasons,
            }),
        }
    }

    /// What identifies the settings (a reused service must have been started with the same).
    fn stamp(&self) -> String {
        match (&self.users, &self.written) {
            (Some(users), _) => format!("CONTAINERS_CONF={users}\n"),
            (None, Some(conf)) => format!("CONTAINERS_CONF={}\n{}", conf.path.display(), conf.text),
            (None, None) => "defaults\n".to_string(),
        }
    }

    /// One line for the banner.
    fn summary(&self, url: &str) -> String {
        match (&self.users, &self.written) {
            (Some(users), _) => format!("API service on {url} (CONTAINERS_CONF={users})"),
            (None, Some(conf)) => format!(
                "API service on {url}, with the settings this host needs ({}) in {}",
                conf.reasons.join("; "),
                conf.path.display()
            ),
            (None, None) => format!("API service on {url}"),
        }
    }
}

/// Podman settings this host needs (see the module docs).
#[derive(Debug, Default, PartialEq)]
struct HostNeeds {
    /// cgroups v1 and v2 side by side with controllers in v2: crun fails, runc works.
    hybrid_cgroups: bool,
    runc_installed: bool,
    /// Root with a hard open-files limit below Podman's default: the caps (open files,
    /// processes). Capping one alone raises the other to Podman's default.
    ulimit_caps: Option<(u64, u64)>,
    /// No systemd: cgroupfs and a file event log.
    no_systemd: bool,
}

impl HostNeeds {
    fn detect() -> HostNeeds {
        let hybrid_cgroups = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
            .is_ok_and(|c| !c.trim().is_empty());
        let root = rustix::process::geteuid().is_root();
        let hard = |r| {
            rustix::process::getrlimit(r)
                .maximum
                .unwrap_or(PODMAN_ULIMIT)
                .min(PODMAN_ULIMIT)
        };
        let nofile = hard(rustix::process::Resource::Nofile);
        // Podman 4 lowers its own process limit to 32768 (measured); containers cannot go over.
        let nproc = hard(rustix::process::Resource::Nproc).min(PODMAN_NPROC);
        HostNeeds {
            hybrid_cgroups,
            runc_installed: super::on_path("runc"),
            // Where root cannot give containers Podman's default of open files, cap them, and
            // processes with them (capping one alone raises the other to Podman's default).
            ulimit_caps: (root && nofile < PODMAN_ULIMIT).then_some((nofile, nproc)),
            no_systemd: !Path::new("/run/systemd/system").exists(),
        }
    }

    /// The containers.conf text and the reasons, or `None` when Podman's defaults work here.
    fn conf(&self) -> Option<(String, Vec<String>)> {
        let mut reasons = Vec::new();
        let mut containers = Vec::new();
        let mut engine = Vec::new();
        if self.hybrid_cgroups && self.runc_installed {
            engine.push("runtime = \"runc\"".to_string());
            reasons.push("runtime runc: crun cannot run containers with cgroups v1 and v2 mounted side by side".to_string());
        } else if self.hybrid_cgroups {
            warn!(
                "this host mounts cgroups v1 and v2 side by side, where crun cannot run \
                 containers: install runc (apt-get install -y runc) and run canopy up again"
            );
        }
        if let Some((nofile, nproc)) = self.ulimit_caps {
            containers.push(format!(
                "default_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]"
            ));
            reasons.push(format!(
                "open files and processes capped at {nofile} and {nproc}: this host's hard limits, \
                 below Podman's default of {PODMAN_ULIMIT}"
            ));
        }
        if self.no_systemd {
            engine.push("cgroup_manager = \"cgroupfs\"".to_string());
            engine.push("events_logger = \"file\"".to_string());
            reasons.push("cgroupfs and a file event log: no systemd".to_string());
        }
        if reasons.is_empty() {
            return None;
        }
        let mut text = String::from(
            "# Written by `canopy up` for the Podman API service it starts (CONTAINERS_CONF):\n\
             # the settings this host needs. See docs/HOST-SETUP.md.\n",
        );
        for r in &reasons {
            text.push_str(&format!("# - {r}\n"));
        }
        if !containers.is_empty() {
            text.push_str("[containers]\n");
            containers
                .iter()
                .for_each(|l| text.push_str(&format!("{l}\n")));
        }
        if !engine.is_empty() {
            text.push_str("[engine]\n");
            engine.iter().for_each(|l| text.push_str(&format!("{l}\n")));
        }
        Some((text, reasons))
    }
}

/// The pid recorded in `DIR/service.pid`.
fn read_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether process `pid` is alive and is `podman system service ... <url>`: a pid file alone
/// proves nothing (the pid may have been reused by anything since).
fn is_our_service(pid: u32, url: &str) -> bool {
    if !alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let has = |a: &[u8]| args.contains(&a);
    has(b"system") && has(b"service") && has(url.as_bytes())
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Stops a process that is not our child: SIGTERM, then SIGKILL if it is still there after
/// [`STOP_TIMEOUT`]; waits (bounded) until it is gone.
async fn stop_pid(pid: u32) {
    signal(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if alive(pid) {
        signal(pid, rustix::process::Signal::KILL);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether an engine answers a ping at `url`.
async fn answers(url: &str) -> bool {
    canopy_agent::DockerDriver::connect(Some(url)).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_what_this_host_needs_and_why() {
        assert_eq!(HostNeeds::default().conf(), None, "Podman's defaults work");
        let (text, reasons) = HostNeeds {
            hybrid_cgroups: true,
            runc_installed: true,
            ulimit_caps: Some((20000, 32768)),
            no_systemd: true,
        }
        .conf()
        .expect("settings");
        assert!(
            text.contains(
                "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n"
            ),
            "{text}"
        );
        assert!(text.contains("[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n"), "{text}");
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        let (text, _) = HostNeeds {
            ulimit_caps: Some((4096, 4096)),
            ..HostNeeds::default()
        }
        .conf()
        .expect("settings");
        assert!(!text.contains("[engine]"), "{text}");
    }

    #[test]
    fn a_pid_is_ours_only_with_our_command_line() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(!is_our_service(me, "unix:///nowhere/podman.sock"));
        assert!(!alive(u32::MAX - 1));
    }
}
