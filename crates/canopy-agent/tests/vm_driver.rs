//! The VM driver with real QEMU (TCG) and the tiny test VM of scripts/vm-image.sh (a Debian
//! kernel plus a busybox initramfs serving HTTP on port 80, printing a boot marker on the serial
//! console and powering off on the ACPI button), and the edge driver with Podman next to it.
//!
//! Needs `CANOPY_TEST_VM_KERNEL` and `CANOPY_TEST_VM_INITRD` (scripts/test.sh exports them);
//! the edge driver test also needs `CANOPY_TEST_DOCKER_HOST` (scripts/podman.sh). Without them
//! the tests print a notice and pass, except under CI (env `CI` set), where they panic so the
//! coverage cannot silently disappear. Each test has its own data directory, scope and ports.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use canopy_agent::Converger;
use canopy_agent::driver::{DockerDriver, EdgeDriver, VmDriver};
use canopy_agent::{DriverError, TunnelIo};
use canopy_proto::{
    AdminState, AppInstance, AppState, AppStatus, ContainerSpec, DeploymentInstance, DesiredState,
    Health, RestartPolicy, StatusKind, TunnelTarget, VmBoot, VmImage, VmPort, VmSpec,
    WorkloadControl, WorkloadKind, WorkloadStatus,
};
use canopy_vm::{Accel, Accelerator, VmHost};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MARKER: &str = "CANOPY-TEST-VM-BOOTED";
const DEADLINE: Duration = Duration::from_secs(180);
const ENGINE_ENV: &str = "CANOPY_TEST_DOCKER_HOST";
const IMAGE: &str = "localhost/busybox:canopy-test";

struct TestVm {
    kernel: VmImage,
    initrd: VmImage,
    dir: PathBuf,
}

fn image(var: &str) -> Option<(VmImage, PathBuf)> {
    let path = std::env::var(var).ok().filter(|p| !p.trim().is_empty())?;
    let sha256 = match std::env::var(format!("{var}_SHA256")) {
        Ok(sha) if !sha.trim().is_empty() => sha.trim().to_string(),
        _ => format!("{:x}", Sha256::digest(std::fs::read(&path).unwrap())),
    };
    let dir = Path::new(&path).parent().unwrap().to_path_buf();
    Some((
        VmImage {
            url: format!("file://{path}"),
            sha256,
        },
        dir,
    ))
}

fn skip_or_panic(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} not set but CI is: these tests must not be skipped");
    }
    eprintln!("skipping: {what} not set (see scripts/vm-image.sh, scripts/podman.sh)");
}

/// The container engine of the tests (`CANOPY_TEST_DOCKER_HOST`), or `None` after
/// [`skip_or_panic`].
fn engine_host() -> Option<String> {
    match std::env::var(ENGINE_ENV) {
        Ok(h) if !h.trim().is_empty() => Some(h),
        _ => {
            skip_or_panic(ENGINE_ENV);
            None
        }
    }
}

fn test_vm() -> Option<TestVm> {
    match (
        image("CANOPY_TEST_VM_KERNEL"),
        image("CANOPY_TEST_VM_INITRD"),
    ) {
        (Some((kernel, dir)), Some((initrd, _))) => Some(TestVm {
            kernel,
            initrd,
            dir,
        }),
        _ => {
            skip_or_panic("CANOPY_TEST_VM_KERNEL/CANOPY_TEST_VM_INITRD");
            None
        }
    }
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "canopy_agent=debug,canopy_vm=debug".into()),
        )
        .try_init();
}

fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!(
        "{prefix}{:08x}",
        nanos ^ std::process::id().rotate_left(16) ^ n.wrapping_mul(0x9e37_79b9)
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// TCG unless `CANOPY_VM_ACCEL` says otherwise: KVM is unusable on the CI machines.
fn host(dir: &Path) -> VmHost {
    let accel = if std::env::var_os(canopy_vm::ACCEL_ENV).is_some() {
        Accel::from_env()
    } else {
        Accel::Tcg
    };
    VmHost::new(dir).with_accel(accel)
}

async fn driver(data: &Path, scope: &str, images: &Path) -> VmDriver {
    VmDriver::for_host(host(data))
        .await
        .scoped(scope)
        .with_image_dirs(vec![images.to_path_buf()])
        .with_stop_timeout(Duration::from_secs(20))
}

fn kernel_vm(t: &TestVm, name: &str, host_port: u16) -> VmSpec {
    VmSpec {
        name: name.into(),
        cpus: 1,
        memory_mib: 96,
        boot: VmBoot::Kernel {
            kernel: t.kernel.clone(),
            initrd: Some(t.initrd.clone()),
            cmdline: "console=ttyS0 quiet".into(),
        },
        ports: vec![VmPort {
            guest_port: 80,
            host_port,
            host_ip: Some("127.0.0.1".into()),
        }],
        vnc: true,
        restart_policy: RestartPolicy::Always,
        ..VmSpec::default()
    }
}

fn vm_app(name: &str, vms: Vec<VmSpec>) -> AppInstance {
    AppInstance {
        name: name.into(),
        version: "1.0.0".into(),
        namespace: name.into(),
        spec_hash: "h1".into(),
        vms,
        ..AppInstance::default()
    }
}

fn desired(dep: &str, apps: Vec<AppInstance>, controls: Vec<WorkloadControl>) -> DesiredState {
    DesiredState {
        generation: canopy_proto::Generation(1),
        deployments: vec![DeploymentInstance {
            deployment_id: dep.into(),
            project: "p".into(),
            package: "pkg".into(),
            package_version: "1.0.0".into(),
            generation: 1,
            apps,
        }],
        controls,
    }
}

fn control(dep: &str, app: &str, vm: &str, running: bool, restarts: u64) -> WorkloadControl {
    WorkloadControl {
        deployment_id: dep.into(),
        app: app.into(),
        kind: WorkloadKind::Vm,
        workload: vm.into(),
        running,
        restarts,
    }
}

fn vm_status<'a>(statuses: &'a [AppStatus], app: &str) -> (&'a AppStatus, &'a WorkloadStatus) {
    let a = statuses
        .iter()
        .find(|s| s.app == app)
        .unwrap_or_else(|| panic!("no status of app {app}: {statuses:#?}"));
    let w = a
        .workloads
        .iter()
        .find(|w| w.kind == StatusKind::Vm)
        .unwrap_or_else(|| panic!("no vm workload in {a:#?}"));
    (a, w)
}

/// Applies until `done` holds, or panics at the deadline with the last statuses.
async fn apply_until<C: Converger>(
    c: &C,
    d: &DesiredState,
    what: &str,
    done: impl Fn(&[AppStatus]) -> bool,
) -> Vec<AppStatus> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = c.apply(d).await.expect("apply");
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: last statuses {s:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn http_ok(port: u16) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    matches!(client.get(format!("http://127.0.0.1:{port}/")).send().await, Ok(r) if r.status().is_success())
}

fn markers(vms: &VmDriver, name: &str) -> usize {
    std::fs::read_to_string(vms.host().serial_log(name))
        .unwrap_or_default()
        .matches(MARKER)
        .count()
}

fn pid(vms: &VmDriver, name: &str) -> Option<i32> {
    let p: i32 = std::fs::read_to_string(vms.host().vm_dir(name).join("qemu.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    std::fs::read(format!("/proc/{p}/cmdline"))
        .is_ok_and(|c| !c.is_empty())
        .then_some(p)
}

/// Reads a duplex tunnel until `needle` shows up.
async fn read_until(io: &mut Box<dyn canopy_agent::tunnel::TunnelDuplex>, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, io.read(&mut buf)).await {
            Ok(Ok(0)) => panic!(
                "tunnel closed before {needle:?}: {}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("tunnel read failed: {e}"),
            Err(_) => panic!(
                "no {needle:?} within 60 s: {}",
                String::from_utf8_lossy(&seen)
            ),
        }
        let text = String::from_utf8_lossy(&seen);
        if text.contains(needle) {
            return text.into_owned();
        }
    }
}

/// Stops every QEMU of a data directory when dropped (also when the test panics).
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let dir = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let host = VmHost::new(&dir);
                for name in host.list().await.unwrap_or_default() {
                    let _ = host.remove(&name, Duration::from_secs(5)).await;
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_runs_is_controlled_supervised_adopted_and_removed() {
    let Some(t) = test_vm() else { return };
    init_logs();
    let data = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(data.path().to_path_buf());
    let scope = unique("vmt");
    let vms = driver(data.path(), &scope, &t.dir).await;
    assert!(vms.available(), "QEMU must be usable here");
    let dep = unique("d");
    let port = free_port();
    let app = vm_app("web", vec![kernel_vm(&t, "vm1", port)]);
    let name = vms.vm_name(&dep, "web", "vm1");
    let d = desired(&dep, vec![app.clone()], vec![]);

    // Runs, answers HTTP on the host port, reports itself fully.
    let s = apply_until(&vms, &d, "VM running", |s| s[0].state == AppState::Running).await;
    let (_, w) = vm_status(&s, "web");
    assert_eq!(w.state, "RUNNING");
    assert_eq!(w.admin_state, Some(AdminState::Up));
    assert_eq!(w.accelerator, Some(canopy_proto::Accelerator::Tcg));
    assert!(w.vnc);
    assert_eq!(w.name, "vm1");
    assert_eq!(w.image, t.kernel.url);
    assert_eq!(w.ports[0].container_port, 80);
    assert_eq!(w.ports[0].host_port, Some(port));
    assert!(!w.created_at.is_empty());
    wait_for("guest HTTP", async || http_ok(port).await).await;
    wait_for("boot marker", async || markers(&vms, &name) == 1).await;
    let first_pid = pid(&vms, &name).expect("qemu runs");

    // Tunnels: VNC banner, interactive serial console, serial log.
    let TunnelIo::Duplex(mut vnc) = vms.open_vnc(&d, &dep, "web", "vm1").await.unwrap() else {
        panic!("VNC is a duplex tunnel")
    };
    read_until(&mut vnc, "RFB 003.008").await;
    drop(vnc);
    let TunnelIo::Source(mut logs) = vms
        .open_logs(&d, &dep, "web", "vm1", false, 0)
        .await
        .unwrap()
    else {
        panic!("logs are a source")
    };
    let mut text = Vec::new();
    while let Some(chunk) = logs.next().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&text).contains(MARKER));
    let err = vms.open_vnc(&d, &dep, "web", "nope").await.unwrap_err();
    assert!(matches!(err, DriverError::NoSuchWorkload { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");

    // A restart control reboots once: the marker appears again, with a new QEMU.
    let d = desired(
        &dep,
        vec![app.clone()],
        vec![control(&dep, "web", "vm1", true, 1)],
    );
    let s = apply_until(&vms, &d, "rebooted", |s| s[0].state == AppState::Running).await;
    assert_eq!(vm_status(&s, "web").1.restarts, 1);
    wait_for("second boot marker", async || markers(&vms, &name) == 2).await;
    let second_pid = pid(&vms, &name).expect("qemu runs again");
    assert_ne!(first_pid, second_pid);
    // The same control again changes nothing.
    vms.apply(&d).await.unwrap();
    assert_eq!(pid(&vms, &name), Some(second_pid));

    // A new driver on the same directory adopts the VM: same QEMU, no reboot.
    let adopted = driver(data.path(), &scope, &t.dir).await;
    let s = adopted.apply(&d).await.unwrap();
    assert_eq!(vm_status(&s, "web").1.state, "RUNNING", "{s:#?}");
    assert_eq!(pid(&adopted, &name), Some(second_pid));
    assert_eq!(markers(&adopted, &name), 2);
    let vms = adopted;

    // running=false: powered off and kept off; the app counts as running (intended).
    let off = desired(
        &dep,
        vec![app.clone()],
        vec![control(&dep, "web", "vm1", false, 1)],
    );
    let s = vms.apply(&off).await.unwrap();
    let (a, w) = vm_status(&s, "web");
    assert_eq!(
        (w.state.as_str(), &w.admin_state),
        ("STOPPED", &Some(AdminState::Down)),
        "{s:#?}"
    );
    assert_eq!(a.state, AppState::Running);
    assert_eq!(pid(&vms, &name), None);
    assert!(!vms.host().vm_dir(&name).join("qmp.sock").exists());
    let s = vms.apply(&off).await.unwrap();
    assert_eq!(vm_status(&s, "web").1.state, "STOPPED");
    assert_eq!(
        pid(&vms, &name),
        None,
        "supervision must not restart a stopped VM"
    );

    // running=true again: started.
    let s = apply_until(&vms, &d, "started again", |s| {
        s[0].state == AppState::Running
    })
    .await;
    assert_eq!(vm_status(&s, "web").1.admin_state, Some(AdminState::Up));
    wait_for("third boot marker", async || markers(&vms, &name) == 3).await;

    // Killed behind the agent's back: restarted (policy always), counted.
    let restarts_before = vm_status(&s, "web").1.restarts;
    let victim = pid(&vms, &name).unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    wait_for("qemu gone", async || pid(&vms, &name).is_none()).await;
    let s = apply_until(&vms, &d, "restarted after a crash", |s| {
        s[0].state == AppState::Running
    })
    .await;
    assert_eq!(
        vm_status(&s, "web").1.restarts,
        restarts_before + 1,
        "{s:#?}"
    );
    assert_ne!(pid(&vms, &name), Some(victim));

    // No longer desired: stopped, directory removed, image collected.
    let cache = data.path().join("cache/sha256");
    assert!(cache.join(&t.kernel.sha256).exists());
    let s = vms.apply(&desired(&dep, vec![], vec![])).await.unwrap();
    assert!(s.is_empty());
    assert!(!vms.host().vm_dir(&name).exists());
    assert!(!cache.join(&t.kernel.sha256).exists());
    assert!(!cache.join(&t.initrd.sha256).exists());
}

/// The test VM's init runs no shell on its console, so this VM boots busybox `sh` as its init,
/// on ttyS0, straight from the kernel command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serial_console_is_interactive_and_its_log_follows() {
    let Some(t) = test_vm() else { return };
    init_logs();
    let data = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(data.path().to_path_buf());
    let scope = unique("vms");
    let vms = driver(data.path(), &scope, &t.dir).await;
    let dep = unique("d");
    let mut vm = kernel_vm(&t, "console", free_port());
    vm.boot = VmBoot::Kernel {
        kernel: t.kernel.clone(),
        initrd: Some(t.initrd.clone()),
        cmdline: "console=ttyS0 quiet rdinit=/bin/busybox -- sh -c \"mount -t devtmpfs d /dev; \
                  echo console-shell-ready; exec sh -i </dev/ttyS0 >/dev/ttyS0 2>&1\""
            .into(),
    };
    vm.ports.clear();
    vm.vnc = false;
    let d = desired(&dep, vec![vm_app("shell", vec![vm])], vec![]);
    let name = vms.vm_name(&dep, "shell", "console");
    apply_until(&vms, &d, "VM running", |s| s[0].state == AppState::Running).await;

    // Follow the serial log from now on, then type into the console.
    let TunnelIo::Source(mut follow) = vms
        .open_logs(&d, &dep, "shell", "console", true, 1)
        .await
        .unwrap()
    else {
        panic!("logs are a source")
    };
    wait_for("the console shell", async || {
        std::fs::read_to_string(vms.host().serial_log(&name))
            .unwrap_or_default()
            .contains("console-shell-ready")
    })
    .await;
    let TunnelIo::Duplex(mut serial) = vms.open_serial(&d, &dep, "shell", "console").await.unwrap()
    else {
        panic!("serial is a duplex tunnel")
    };
    serial.write_all(b"echo canopy-$((6*7))\n").await.unwrap();
    read_until(&mut serial, "canopy-42").await;
    drop(serial);

    // The followed log sees the command's output too (serial.log keeps everything).
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&seen).contains("canopy-42") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, follow.next()).await {
            Ok(Some(chunk)) => seen.extend_from_slice(&chunk.unwrap()),
            other => panic!(
                "followed log ended or stalled ({}): {}",
                other.is_ok(),
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

#[tokio::test]
async fn image_and_resource_failures_are_reported_and_leave_nothing_behind() {
    let Some(t) = test_vm() else { return };
    init_logs();
    let data = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(data.path().to_path_buf());
    let scope = unique("vmf");
    let images = tempfile::tempdir().unwrap();
    let vms = driver(data.path(), &scope, &t.dir)
        .await
        .with_image_dirs(vec![t.dir.clone(), images.path().to_path_buf()])
        .with_cache_max_bytes(64 << 20);
    let dep = unique("d");

    let with_boot = |name: &str, kernel: VmImage| {
        let mut vm = kernel_vm(&t, name, free_port());
        vm.boot = VmBoot::Kernel {
            kernel,
            initrd: None,
            cmdline: String::new(),
        };
        vm
    };
    let wrong_sum = with_boot(
        "badsum",
        VmImage {
            url: t.kernel.url.clone(),
            sha256: "0".repeat(64),
        },
    );
    let closed = free_port();
    let unreachable_url = format!("http://127.0.0.1:{closed}/vmlinuz");
    let unreachable = with_boot(
        "unreachable",
        VmImage {
            url: unreachable_url.clone(),
            sha256: t.kernel.sha256.clone(),
        },
    );
    let big = images.path().join("big.img");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    let outside = with_boot(
        "outside",
        VmImage {
            url: "file:///etc/hostname".into(),
            sha256: "1".repeat(64),
        },
    );
    let mut greedy = kernel_vm(&t, "greedy", free_port());
    greedy.memory_mib = 100_000_000;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let taken = kernel_vm(&t, "taken", busy_port);

    // Over the cap: a 65 MiB (sparse) file, the cap being 64 MiB.
    let too_big = with_boot(
        "big",
        VmImage {
            url: format!("file://{}", big.display()),
            sha256: "2".repeat(64),
        },
    );
    let apps = vec![
        vm_app("a-sum", vec![wrong_sum]),
        vm_app("a-net", vec![unreachable]),
        vm_app("a-out", vec![outside]),
        vm_app("a-mem", vec![greedy]),
        vm_app("a-port", vec![taken]),
        vm_app("a-big", vec![too_big]),
    ];
    let d = desired(&dep, apps, vec![]);
    // Downloads run in the background: passes report PROVISIONING until each one has ended.
    let s = apply_until(&vms, &d, "every download ended", |s| {
        s.iter()
            .flat_map(|a| &a.workloads)
            .all(|w| w.state != "PROVISIONING")
    })
    .await;
    let expect = |app: &str, state: &str, words: &[&str]| {
        let (a, w) = vm_status(&s, app);
        assert_eq!(a.state, AppState::Down, "{a:#?}");
        // A failure found before the last pass is in its retry delay by now (…_BACKOFF).
        assert!(
            w.state == state || w.state == format!("{state}_BACKOFF"),
            "{a:#?}"
        );
        for word in words {
            assert!(
                w.message.contains(word),
                "{app}: {:?} lacks {word:?}",
                w.message
            );
            assert!(
                a.message.contains(word),
                "{app}: {:?} lacks {word:?}",
                a.message
            );
        }
    };
    expect(
        "a-sum",
        "ERROR_IMAGE_PULL",
        &[&t.kernel.url, "sha256 mismatch"],
    );
    expect(
        "a-net",
        "ERROR_IMAGE_PULL",
        &[&unreachable_url, "download failed"],
    );
    expect(
        "a-out",
        "ERROR_IMAGE_PULL",
        &["file:///etc/hostname", "--vm-image-dir"],
    );
    expect(
        "a-mem",
        "ERROR_UNSCHEDULABLE",
        &["100000000 MiB", "this edge has"],
    );
    expect(
        "a-port",
        "ERROR_UNSCHEDULABLE",
        &[&busy_port.to_string(), "not free"],
    );
    expect(
        "a-big",
        "ERROR_IMAGE_PULL",
        &["big.img", "larger than the image size cap"],
    );

    // Nothing behind: no VM directory, no cached or partial image.
    let vms_dir = data.path().join("vms");
    let left: Vec<_> = std::fs::read_dir(&vms_dir)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", vms_dir.display());
    let cached: Vec<_> = std::fs::read_dir(data.path().join("cache/sha256"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(cached.is_empty(), "left in the cache: {cached:?}");

    // The next pass backs off instead of downloading again.
    let s = vms.apply(&d).await.unwrap();
    assert_eq!(vm_status(&s, "a-sum").1.state, "ERROR_IMAGE_PULL_BACKOFF");
    assert!(vm_status(&s, "a-sum").1.message.contains("sha256 mismatch"));
    let s = vms.observe(&d).await.unwrap();
    assert_eq!(vm_status(&s, "a-net").1.state, "ERROR_IMAGE_PULL");
    drop(busy);
}

/// A download that never ends (the server sends headers and a few bytes, then nothing) does
/// not hold up the pass: the VM is PROVISIONING with what it waits for, and passes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_image_download_does_not_hold_up_passes() {
    let Some(t) = test_vm() else { return };
    init_logs();
    let data = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(data.path().to_path_buf());
    let vms = driver(data.path(), &unique("vms"), &t.dir).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 2048];
            let _ = conn.read(&mut request).await;
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nMZ")
                .await;
            held.push(conn);
        }
    });
    let url = format!("http://127.0.0.1:{port}/stalled.img");
    let mut vm = kernel_vm(&t, "vm", free_port());
    vm.boot = VmBoot::Kernel {
        kernel: VmImage {
            url: url.clone(),
            sha256: "3".repeat(64),
        },
        initrd: None,
        cmdline: String::new(),
    };
    let d = desired(&unique("d"), vec![vm_app("slow", vec![vm])], vec![]);
    for pass in 0..2 {
        let s = tokio::time::timeout(Duration::from_secs(20), vms.apply(&d))
            .await
            .expect("a pass returns while the download stalls")
            .unwrap();
        let (a, w) = vm_status(&s, "slow");
        assert_eq!(w.state, "PROVISIONING", "{a:#?}");
        assert_eq!(a.state, AppState::Deploying, "{a:#?}");
        assert!(
            w.message.contains(&format!("downloading image {url}")),
            "{}",
            w.message
        );
        if pass == 1 {
            assert!(w.message.contains("s so far"), "{}", w.message);
        }
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_driver_runs_containers_without_qemu_restarts_pods_and_tunnels_their_logs() {
    let Some(host) = engine_host() else { return };
    init_logs();
    let data = tempfile::tempdir().unwrap();
    let scope = unique("edge");
    let docker = DockerDriver::connect(Some(&host))
        .await
        .unwrap()
        .with_stop_timeout(Duration::from_secs(1));
    let vms =
        VmDriver::for_host(VmHost::new(data.path()).with_qemu("/nonexistent/qemu-system-x86_64"))
            .await;
    let edge = EdgeDriver::new(docker, vms).scoped(&scope);
    assert_eq!(edge.capabilities(), vec!["containers".to_string()]);
    assert!(!edge.engine().contains("QEMU"), "{}", edge.engine());
    assert_eq!(edge.accelerator(), None);

    let dep = unique("d");
    let mut app = vm_app("mixed", vec![]);
    app.containers = vec![ContainerSpec {
        name: "echo".into(),
        image: IMAGE.into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo hello-from-canopy; exec sleep 3600".into(),
        ],
        ..ContainerSpec::default()
    }];
    let only_containers = desired(&dep, vec![app.clone()], vec![]);
    let guard = EdgeCleanup(&edge);
    let s = apply_until(&edge, &only_containers, "container running", |s| {
        s[0].state == AppState::Running
    })
    .await;
    assert_eq!(s[0].workloads.len(), 1);

    // A VM in the same app: the app is DOWN saying why, the container keeps running.
    let mut with_vm = app.clone();
    with_vm.vms = vec![VmSpec {
        name: "vm".into(),
        cpus: 1,
        memory_mib: 64,
        ..VmSpec::default()
    }];
    let d = desired(&dep, vec![with_vm], vec![]);
    let s = edge.apply(&d).await.unwrap();
    assert_eq!(s[0].state, AppState::Down, "{s:#?}");
    assert!(
        s[0].message
            .contains("this edge cannot run virtual machines"),
        "{}",
        s[0].message
    );
    let container = s[0]
        .workloads
        .iter()
        .find(|w| w.kind == StatusKind::Container)
        .unwrap();
    assert_eq!(container.state, "running");
    let created = container.created_at.clone();

    // Container logs through the tunnel.
    let target = TunnelTarget::Logs {
        deployment_id: dep.clone(),
        app: "mixed".into(),
        kind: WorkloadKind::Pod,
        workload: "echo".into(),
        follow: false,
        tail: 10,
    };
    // The container may be running a moment before its first line reaches the engine's log.
    wait_for("the container's line in its logs", async || {
        let TunnelIo::Source(mut logs) = edge.open_tunnel(&d, &target).await.unwrap() else {
            panic!("logs are a source")
        };
        let mut text = Vec::new();
        while let Some(chunk) = logs.next().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        String::from_utf8_lossy(&text).contains("hello-from-canopy")
    })
    .await;
    let missing = TunnelTarget::Logs {
        deployment_id: dep.clone(),
        app: "mixed".into(),
        kind: WorkloadKind::Pod,
        workload: "nope".into(),
        follow: false,
        tail: 0,
    };
    let err = edge.open_tunnel(&d, &missing).await.unwrap_err();
    assert!(matches!(err, DriverError::NoSuchWorkload { .. }), "{err}");

    // A pod restart control recreates the containers once.
    let restart = WorkloadControl {
        deployment_id: dep.clone(),
        app: "mixed".into(),
        kind: WorkloadKind::Pod,
        workload: String::new(),
        running: true,
        restarts: 1,
    };
    let d = desired(&dep, vec![app.clone()], vec![restart]);
    let s = apply_until(&edge, &d, "recreated", |s| {
        s[0].state == AppState::Running && s[0].workloads[0].created_at != created
    })
    .await;
    let recreated = s[0].workloads[0].created_at.clone();
    let s = edge.apply(&d).await.unwrap();
    assert_eq!(
        s[0].workloads[0].created_at, recreated,
        "recreated only once"
    );
    drop(guard);
}

/// `dependsOn` across kinds: a container app waits for a VM app, and a VM app waits for that
/// container app; nothing of a dependent starts before its dependency runs as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_cross_between_containers_and_vms() {
    let Some(t) = test_vm() else { return };
    let Some(engine) = engine_host() else { return };
    init_logs();
    let data = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(data.path().to_path_buf());
    let scope = unique("dep");
    let docker = DockerDriver::connect(Some(&engine))
        .await
        .unwrap()
        .with_stop_timeout(Duration::from_secs(1))
        .scoped(&scope);
    let edge = EdgeDriver::new(docker, driver(data.path(), &scope, &t.dir).await);
    let dep = unique("d");
    let late_port = free_port();
    let db = vm_app("db", vec![kernel_vm(&t, "vm", free_port())]);
    let mut web = vm_app("web", vec![]);
    web.depends_on = vec!["db".into()];
    web.containers = vec![ContainerSpec {
        name: "web".into(),
        image: IMAGE.into(),
        command: vec!["sleep".into(), "3600".into()],
        ..ContainerSpec::default()
    }];
    let mut late = vm_app("late", vec![kernel_vm(&t, "vm", late_port)]);
    late.depends_on = vec!["web".into()];
    let d = desired(&dep, vec![late, web, db], vec![]);
    let guard = EdgeCleanup(&edge);
    let late_vm = edge.vms().vm_name(&dep, "late", "vm");
    let app = |s: &[AppStatus], name: &str| -> AppStatus {
        s.iter().find(|a| a.app == name).cloned().unwrap()
    };

    let first = edge.apply(&d).await.unwrap();
    let (w, l) = (app(&first, "web"), app(&first, "late"));
    assert_eq!(w.state, AppState::Waiting, "{w:#?}");
    assert!(w.message.contains("waiting for app db"), "{}", w.message);
    assert!(w.workloads.iter().all(|c| c.state != "running"), "{w:#?}");
    assert_eq!(l.state, AppState::Waiting, "{l:#?}");
    assert!(l.message.contains("waiting for app web"), "{}", l.message);
    assert_eq!(l.workloads[0].state, "PROVISIONING");
    assert!(
        pid(edge.vms(), &late_vm).is_none(),
        "late's VM started early"
    );

    // Until web runs, its container does not; the pass where it first runs still holds late.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = edge.apply(&d).await.unwrap();
        let (w, l) = (app(&s, "web"), app(&s, "late"));
        if w.state == AppState::Running {
            assert_eq!(app(&s, "db").state, AppState::Running, "{s:#?}");
            assert_eq!(l.state, AppState::Waiting, "{l:#?}");
            break;
        }
        assert!(w.workloads.iter().all(|c| c.state != "running"), "{s:#?}");
        assert!(
            pid(edge.vms(), &late_vm).is_none(),
            "late's VM started early"
        );
        assert!(Instant::now() < deadline, "web never ran: {s:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    apply_until(&edge, &d, "every app running", |s| {
        s.iter().all(|a| a.state == AppState::Running)
    })
    .await;
    wait_for("late's VM serving HTTP", async || http_ok(late_port).await).await;

    // Memory is summed: a VM that would fit alone does not fit next to the two running ones.
    let total_mib = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        / 1024;
    let for_vms = total_mib - 256u64.max(total_mib / 10);
    let mut big = kernel_vm(&t, "vm", free_port());
    big.memory_mib = for_vms - 100;
    let mut with_big = d.clone();
    with_big.deployments[0].apps.push(vm_app("big", vec![big]));
    let s = edge.apply(&with_big).await.unwrap();
    let (b, w) = vm_status(&s, "big");
    assert_eq!(b.state, AppState::Down, "{b:#?}");
    assert_eq!(w.state, "ERROR_UNSCHEDULABLE", "{w:#?}");
    assert!(
        w.message
            .contains("192 MiB of which the VMs already running here hold"),
        "{}",
        w.message
    );
    assert!(
        s.iter()
            .filter(|a| a.app != "big")
            .all(|a| a.state == AppState::Running),
        "{s:#?}"
    );
    drop(guard);
}

/// An edge with QEMU and no container engine: the VM app runs, the container app is DOWN with
/// the engine's error and the edge claims VMs only; once the engine answers (here: its socket
/// appears), a later pass connects it and the container app runs too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_without_a_container_engine_runs_its_vms_and_connects_the_engine_later() {
    let Some(t) = test_vm() else { return };
    let Some(engine) = engine_host() else { return };
    let socket = engine
        .strip_prefix("unix://")
        .expect("the test engine listens on a unix socket (scripts/podman.sh)")
        .to_string();
    init_logs();
    let data = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(data.path().to_path_buf());
    let scope = unique("noeng");
    let sockets = tempfile::tempdir().unwrap();
    let later = sockets.path().join("engine.sock");
    let edge = EdgeDriver::without_engine(
        Some(format!("unix://{}", later.display())),
        "no engine at start".into(),
        driver(data.path(), &scope, &t.dir).await,
    )
    .scoped(&scope);
    assert_eq!(edge.capabilities(), vec!["vms".to_string()]);
    assert!(
        edge.engine().starts_with("no container engine; QEMU"),
        "{}",
        edge.engine()
    );

    let dep = unique("d");
    let vm_port = free_port();
    let mut web = vm_app("web", vec![]);
    web.containers = vec![ContainerSpec {
        name: "web".into(),
        image: IMAGE.into(),
        command: vec!["sleep".into(), "3600".into()],
        ..ContainerSpec::default()
    }];
    let d = desired(
        &dep,
        vec![vm_app("vm", vec![kernel_vm(&t, "vm", vm_port)]), web],
        vec![],
    );
    let guard = EdgeCleanup(&edge);
    let app = |s: &[AppStatus], name: &str| -> AppStatus {
        s.iter().find(|a| a.app == name).cloned().unwrap()
    };
    let s = apply_until(&edge, &d, "the VM running", |s| {
        app(s, "vm").state == AppState::Running
    })
    .await;
    let w = app(&s, "web");
    assert_eq!(w.state, AppState::Down, "{w:#?}");
    assert!(
        w.message.contains("this edge cannot run containers now"),
        "{}",
        w.message
    );
    wait_for("the VM serving HTTP", async || http_ok(vm_port).await).await;

    // The engine appears; within a reconnect interval the container app runs.
    std::os::unix::fs::symlink(&socket, &later).unwrap();
    apply_until(
        &edge,
        &d,
        "the container running once the engine answers",
        |s| s.iter().all(|a| a.state == AppState::Running),
    )
    .await;
    assert_eq!(
        edge.capabilities(),
        vec!["containers".to_string(), "vms".to_string()]
    );
    assert!(edge.engine().contains("; QEMU"), "{}", edge.engine());
    assert!(
        !edge.engine().starts_with("no container engine"),
        "{}",
        edge.engine()
    );
    drop(guard);
}

/// Applies an empty desired state when dropped: the scoped drivers remove what the test made.
struct EdgeCleanup<'a>(&'a EdgeDriver);
impl Drop for EdgeCleanup<'_> {
    fn drop(&mut self) {
        let edge = self.0;
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let _ = edge.apply(&DesiredState::default()).await;
            })
        });
    }
}

/// Kills a VM's QEMU with SIGKILL: a crash behind the agent's back.
fn kill_qemu(pid: i32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid}: {status}");
}

/// A kernel command line booting busybox `sh` as init on ttyS0 (as in
/// `the_serial_console_is_interactive_and_its_log_follows`) that first prints the boot marker.
/// The backslash keeps the marker itself out of the command line, which the kernel may echo.
const SHELL_CMDLINE: &str = r#"console=ttyS0 quiet rdinit=/bin/busybox -- sh -c "mount -t devtmpfs d /dev; echo CANOPY-TEST-VM-B\OOTED; exec sh -i </dev/ttyS0 >/dev/ttyS0 2>&1""#;

/// Restart policies decide what becomes of a VM that stops by itself: `never` keeps a killed VM
/// stopped, pass after pass; `on-failure` keeps a VM stopped whose guest powered off cleanly
/// (`poweroff -f` typed on its serial console), yet restarts it when it is killed, also when an
/// earlier boot's clean power-off is still in its serial log (only the output since the last
/// start counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_never_and_on_failure_decide_on_stopped_vms() {
    let Some(t) = test_vm() else { return };
    init_logs();
    let data = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(data.path().to_path_buf());
    let scope = unique("vmp");
    let vms = driver(data.path(), &scope, &t.dir).await;
    let dep = unique("d");
    let mut never = kernel_vm(&t, "vm", free_port());
    never.restart_policy = RestartPolicy::Never;
    let mut on_failure = kernel_vm(&t, "vm", free_port());
    on_failure.restart_policy = RestartPolicy::OnFailure;
    on_failure.boot = VmBoot::Kernel {
        kernel: t.kernel.clone(),
        initrd: Some(t.initrd.clone()),
        cmdline: SHELL_CMDLINE.into(),
    };
    on_failure.ports.clear();
    on_failure.vnc = false;
    let apps = vec![
        vm_app("never", vec![never]),
        vm_app("onfail", vec![on_failure]),
    ];
    let d = desired(&dep, apps.clone(), vec![]);
    let never_vm = vms.vm_name(&dep, "never", "vm");
    let onfail_vm = vms.vm_name(&dep, "onfail", "vm");
    apply_until(&vms, &d, "both VMs running", |s| {
        s.iter().all(|a| a.state == AppState::Running)
    })
    .await;
    wait_for("both boot markers", async || {
        markers(&vms, &never_vm) == 1 && markers(&vms, &onfail_vm) == 1
    })
    .await;

    // never: killed, it stays stopped pass after pass, and says why.
    kill_qemu(pid(&vms, &never_vm).expect("never's qemu runs"));
    wait_for("never's qemu gone", async || pid(&vms, &never_vm).is_none()).await;
    for _ in 0..3 {
        let s = vms.apply(&d).await.unwrap();
        let (a, w) = vm_status(&s, "never");
        assert_eq!(
            (w.state.as_str(), &w.admin_state),
            ("STOPPED", &Some(AdminState::Up)),
            "{a:#?}"
        );
        assert_eq!(a.state, AppState::Down, "{a:#?}");
        assert!(
            w.message
                .contains("stopped by itself and its restart policy is never"),
            "{}",
            w.message
        );
        assert_eq!(w.restarts, 0, "{a:#?}");
        assert_eq!(pid(&vms, &never_vm), None, "restarted despite policy never");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(markers(&vms, &never_vm), 1);

    // on-failure: the guest powers itself off cleanly (typed on its serial console): stopped.
    let TunnelIo::Duplex(mut serial) = vms.open_serial(&d, &dep, "onfail", "vm").await.unwrap()
    else {
        panic!("serial is a duplex tunnel")
    };
    serial.write_all(b"echo shell-$((6*7))\n").await.unwrap();
    read_until(&mut serial, "shell-42").await;
    serial.write_all(b"poweroff -f\n").await.unwrap();
    wait_for("the guest's power-off", async || {
        pid(&vms, &onfail_vm).is_none()
    })
    .await;
    drop(serial);
    let log = std::fs::read_to_string(vms.host().serial_log(&onfail_vm)).unwrap();
    assert!(log.contains("reboot: Power down"), "{log}");
    for _ in 0..3 {
        let s = vms.apply(&d).await.unwrap();
        let (a, w) = vm_status(&s, "onfail");
        assert_eq!(w.state, "STOPPED", "{a:#?}");
        assert!(
            w.message
                .contains("powered off and its restart policy is on-failure"),
            "{}",
            w.message
        );
        assert_eq!(
            pid(&vms, &onfail_vm),
            None,
            "restarted after a clean power-off"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(markers(&vms, &onfail_vm), 1);

    // A restart control starts it again; killed then, it is restarted: that power-off was
    // before this start.
    let d = desired(&dep, apps, vec![control(&dep, "onfail", "vm", true, 1)]);
    let s = apply_until(&vms, &d, "on-failure VM started by the control", |s| {
        vm_status(s, "onfail").1.state == "RUNNING"
    })
    .await;
    wait_for("the on-failure VM's second boot", async || {
        markers(&vms, &onfail_vm) == 2
    })
    .await;
    let restarts = vm_status(&s, "onfail").1.restarts;
    let victim = pid(&vms, &onfail_vm).expect("on-failure VM runs");
    kill_qemu(victim);
    wait_for("on-failure qemu gone", async || {
        pid(&vms, &onfail_vm).is_none()
    })
    .await;
    let s = vms.apply(&d).await.unwrap();
    let (a, w) = vm_status(&s, "onfail");
    // Restarted in this pass: booting (RUNNING only once the guest printed something).
    assert!(
        ["STARTING", "RUNNING"].contains(&w.state.as_str()),
        "not restarted after a kill: {a:#?}"
    );
    assert_eq!(w.restarts, restarts + 1, "{a:#?}");
    let restarted = pid(&vms, &onfail_vm).expect("on-failure VM restarted");
    assert_ne!(restarted, victim);
    wait_for("the on-failure VM's third boot", async || {
        markers(&vms, &onfail_vm) == 3
    })
    .await;
    // never is still stopped.
    assert_eq!(vm_status(&s, "never").1.state, "STOPPED");
    assert_eq!(pid(&vms, &never_vm), None);
}

/// Policy always: a VM killed right after each restart is restarted at once twice, then backs
/// off (`CRASH_LOOP_BACKOFF`, counting the stops, with no QEMU meanwhile) and is started again
/// when, and not before, the backoff ends; each restart is counted. Before that, a changed spec
/// (memory) stops the running VM and boots it anew with the new spec, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loops_back_off_and_spec_changes_recreate_the_vm() {
    let Some(t) = test_vm() else { return };
    init_logs();
    let data = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(data.path().to_path_buf());
    let scope = unique("vmc");
    let vms = driver(data.path(), &scope, &t.dir).await;
    let dep = unique("d");
    let port = free_port();
    let vm = kernel_vm(&t, "vm", port);
    let name = vms.vm_name(&dep, "web", "vm");
    let d = desired(&dep, vec![vm_app("web", vec![vm.clone()])], vec![]);
    apply_until(&vms, &d, "VM running", |s| s[0].state == AppState::Running).await;
    wait_for("boot marker", async || markers(&vms, &name) == 1).await;
    let first = pid(&vms, &name).expect("qemu runs");

    // More memory: stopped and started anew with it, booting again, serving again.
    let mut bigger = vm.clone();
    bigger.memory_mib = 112;
    let d = desired(&dep, vec![vm_app("web", vec![bigger])], vec![]);
    let s = apply_until(&vms, &d, "VM recreated", |s| {
        s[0].state == AppState::Running
    })
    .await;
    assert_eq!(vm_status(&s, "web").1.restarts, 0, "{s:#?}");
    let second = pid(&vms, &name).expect("qemu runs again");
    assert_ne!(first, second, "the spec change did not recreate the VM");
    let args = std::fs::read(format!("/proc/{second}/cmdline")).unwrap();
    let args: Vec<&[u8]> = args.split(|b| *b == 0).collect();
    assert!(
        args.windows(2).any(|w| w == [&b"-m"[..], &b"112"[..]]),
        "qemu does not have the new memory size: {:?}",
        String::from_utf8_lossy(&args.join(&b' '))
    );
    wait_for("boot marker of the new VM", async || {
        markers(&vms, &name) == 2
    })
    .await;
    wait_for("guest HTTP after the spec change", async || {
        http_ok(port).await
    })
    .await;
    vms.apply(&d).await.unwrap();
    assert_eq!(pid(&vms, &name), Some(second), "recreated twice");

    // Killed right after each restart: two restarts at once, then a backoff.
    let mut kills = 0u32;
    let mut victim = second;
    let (before, message) = loop {
        kill_qemu(victim);
        kills += 1;
        wait_for("qemu gone", async || pid(&vms, &name).is_none()).await;
        let before = Instant::now();
        let s = vms.apply(&d).await.unwrap();
        let (a, w) = vm_status(&s, "web");
        if w.state == "CRASH_LOOP_BACKOFF" {
            assert_eq!(a.state, AppState::Down, "{a:#?}");
            assert!(a.message.contains("keeps stopping"), "{a:#?}");
            break (before, w.message.clone());
        }
        assert!(kills < 3, "no backoff after {kills} quick stops: {a:#?}");
        // Restarted in this pass: booting (RUNNING only once the guest printed something).
        assert!(
            ["STARTING", "RUNNING"].contains(&w.state.as_str()),
            "not restarted after kill {kills}: {a:#?}"
        );
        let now = pid(&vms, &name).expect("restarted");
        assert_ne!(now, victim);
        victim = now;
    };
    assert_eq!(kills, 3, "backed off after {kills} stops: {message}");
    let prefix = format!("keeps stopping ({kills} times in a row); next start in ");
    let secs: u64 = message
        .split_once(&prefix)
        .and_then(|(_, rest)| rest.strip_suffix(" s")?.parse().ok())
        .unwrap_or_else(|| panic!("{message:?} lacks {prefix:?}"));
    assert!((1..=10).contains(&secs), "{message}");

    // No QEMU during the backoff, pass after pass.
    for _ in 0..3 {
        let s = vms.apply(&d).await.unwrap();
        let (a, w) = vm_status(&s, "web");
        assert_eq!(w.state, "CRASH_LOOP_BACKOFF", "{a:#?}");
        assert_eq!(pid(&vms, &name), None, "started during the backoff");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Started again once the backoff is over, not before; every restart counted.
    let s = apply_until(&vms, &d, "started after the backoff", |s| {
        s[0].state == AppState::Running
    })
    .await;
    let waited = before.elapsed();
    assert!(
        waited >= Duration::from_secs(secs),
        "started after {waited:?}, announced {secs} s"
    );
    assert_eq!(vm_status(&s, "web").1.restarts, kills, "{s:#?}");
    assert_ne!(pid(&vms, &name), Some(victim));
    assert!(pid(&vms, &name).is_some());
}

/// Whether `/dev/kvm` opens read-write here (it does on the CI machines, where KVM crawls).
fn kvm_device_opens() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// The accelerator on automatic (overriding the tests' `CANOPY_VM_ACCEL=tcg`): the driver
/// probes KVM once and picks it only when a guest runs under it. On a host where `/dev/kvm`
/// opens but KVM crawls (this machine), that is TCG with a warning saying why, and the VM comes
/// up under TCG, reporting `tcg` and the reason. Whatever the host, the VM is `STARTING` (saying
/// what it waits for, under which accelerator) until its guest printed on the serial console,
/// and only then `RUNNING`; the guest then really serves. Before the probe, `auto` meant
/// `-accel kvm -accel tcg`: here KVM, a guest that never printed a byte, and `RUNNING` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_auto_the_accelerator_is_probed_and_a_vm_is_ready_only_once_its_guest_spoke() {
    let Some(t) = test_vm() else { return };
    init_logs();
    let data = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(data.path().to_path_buf());
    let scope = unique("vma");
    // What the host can do, found independently of the driver.
    let kvm = canopy_vm::probe_guest(Path::new("qemu-system-x86_64"), Accelerator::Kvm).await;
    let expected = if kvm.is_ok() { "kvm" } else { "tcg" };
    let vms = VmDriver::for_host(VmHost::new(data.path()).with_accel(Accel::Auto))
        .await
        .scoped(&scope)
        .with_image_dirs(vec![t.dir.clone()])
        .with_stop_timeout(Duration::from_secs(20));
    assert_eq!(vms.accelerator(), expected, "KVM probe: {kvm:?}");
    assert!(vms.engine().unwrap().ends_with(&format!("({expected})")));
    let fallback = vms.accelerator_fallback().map(str::to_string);
    match (expected, kvm_device_opens()) {
        ("kvm", _) => assert_eq!(fallback, None),
        (_, true) => {
            let why = fallback.as_deref().expect("a reason to fall back");
            assert!(why.contains("KVM does not work"), "{why}");
        }
        (_, false) => assert!(fallback.as_deref().is_some_and(|w| w.contains("/dev/kvm"))),
    }

    let dep = unique("d");
    let port = free_port();
    let d = desired(
        &dep,
        vec![vm_app("web", vec![kernel_vm(&t, "vm1", port)])],
        vec![],
    );
    let name = vms.vm_name(&dep, "web", "vm1");
    let mut booting = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    let (app, running) = loop {
        let s = vms.apply(&d).await.unwrap();
        let (a, w) = vm_status(&s, "web");
        let serial = std::fs::metadata(vms.host().serial_log(&name)).map_or(0, |m| m.len());
        match w.state.as_str() {
            "RUNNING" => {
                assert!(serial > 0, "RUNNING with an empty serial log: {a:#?}");
                break (a.clone(), w.clone());
            }
            "STARTING" => {
                assert_eq!(a.state, AppState::Deploying, "{a:#?}");
                booting.push(w.clone());
            }
            "PROVISIONING" => {}
            other => panic!("unexpected state {other}: {a:#?}"),
        }
        assert!(Instant::now() < deadline, "never RUNNING: {s:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Booting: says what it waits for and under which accelerator (and why not KVM). Under
    // TCG the guest takes seconds to print; only real KVM may be quicker than one pass.
    match booting.first() {
        None => assert_eq!(expected, "kvm", "never seen STARTING under TCG"),
        Some(w) => {
            assert_eq!(w.health, Health::Starting, "{w:#?}");
            assert_eq!(w.accelerator, Some(expected.into()), "{w:#?}");
            assert!(
                w.message
                    .contains("waiting for the guest to show it came up")
                    && w.message.contains("serial console")
                    && w.message.contains(&format!("host port {port}"))
                    && w.message.contains(&format!("accelerator {expected}")),
                "{}",
                w.message
            );
            if let Some(why) = &fallback {
                assert!(w.message.contains(why.as_str()), "{}", w.message);
            }
        }
    }
    // Up: the accelerator it got, and the warning when that is a fallback.
    assert_eq!(app.state, AppState::Running);
    assert_eq!(running.accelerator, Some(expected.into()), "{running:#?}");
    assert_eq!(running.health, Health::Healthy);
    match &fallback {
        Some(why) => assert!(
            running.message.contains("runs under TCG") && running.message.contains(why.as_str()),
            "{}",
            running.message
        ),
        None => assert_eq!(running.message, ""),
    }
    wait_for("guest HTTP", async || http_ok(port).await).await;
    wait_for("boot marker", async || markers(&vms, &name) == 1).await;
}

/// A guest that never shows it came up: a disk whose boot sector loops forever (`jmp $`), so
/// nothing ever reaches the serial console, and a published port that QEMU's user networking
/// accepts connections on although no guest answers. It is never `RUNNING`: `STARTING` with what
/// it waits for, then, past the boot timeout, an error (app `DOWN`, health `unhealthy`) that
/// says so with the accelerator; QEMU is left running (a slow guest may still speak).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_never_shows_it_came_up_is_never_ready_and_an_error_after_the_boot_timeout() {
    let Some(t) = test_vm() else { return };
    init_logs();
    let data = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(data.path().to_path_buf());
    let images = tempfile::tempdir().unwrap();
    let disk = images.path().join("hang.img");
    let mut mbr = vec![0u8; 1 << 20];
    mbr[..2].copy_from_slice(&[0xEB, 0xFE]);
    mbr[510..512].copy_from_slice(&[0x55, 0xAA]);
    std::fs::write(&disk, &mbr).unwrap();
    let timeout = Duration::from_secs(20);
    let vms = driver(data.path(), &unique("vmh"), &t.dir)
        .await
        .with_image_dirs(vec![images.path().to_path_buf()])
        .with_boot_timeout(timeout);
    let dep = unique("d");
    let port = free_port();
    let vm = VmSpec {
        name: "mute".into(),
        cpus: 1,
        memory_mib: 32,
        boot: VmBoot::Disk {
            image: VmImage {
                url: format!("file://{}", disk.display()),
                sha256: format!("{:x}", Sha256::digest(&mbr)),
            },
        },
        ports: vec![VmPort {
            guest_port: 80,
            host_port: port,
            host_ip: Some("127.0.0.1".into()),
        }],
        restart_policy: RestartPolicy::Always,
        ..VmSpec::default()
    };
    let d = desired(&dep, vec![vm_app("mute", vec![vm])], vec![]);
    let name = vms.vm_name(&dep, "mute", "mute");

    // QEMU runs the guest: STARTING, waiting, while the port accepts connections (QEMU's).
    let s = apply_until(&vms, &d, "QEMU started", |s| {
        vm_status(s, "mute").1.state == "STARTING"
    })
    .await;
    let (a, w) = vm_status(&s, "mute");
    assert_eq!(a.state, AppState::Deploying, "{a:#?}");
    assert_eq!(
        (&w.health, &w.accelerator),
        (&Health::Starting, &Some(canopy_proto::Accelerator::Tcg))
    );
    assert!(
        w.message
            .contains("waiting for the guest to show it came up")
            && w.message.contains(&format!("host port {port}"))
            && w.message.contains("of 20 s"),
        "{}",
        w.message
    );
    let qemu = pid(&vms, &name).expect("qemu runs");
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("QEMU's user networking accepts connections for the guest");

    // Never RUNNING; past the boot timeout, an error.
    let s = apply_until(&vms, &d, "the boot timeout", |s| {
        let (a, w) = vm_status(s, "mute");
        assert_ne!(w.state, "RUNNING", "a mute guest reported ready: {a:#?}");
        a.state != AppState::Deploying
    })
    .await;
    let (a, w) = vm_status(&s, "mute");
    assert_eq!(a.state, AppState::Down, "{a:#?}");
    assert_eq!(
        (w.state.as_str(), &w.health),
        ("STARTING", &Health::Unhealthy)
    );
    for words in [
        "virtual machine mute of app mute did not come up within 20 s",
        "accelerator tcg",
        &format!("no output on its serial console and no answer on host port {port}"),
        "QEMU keeps running it",
    ] {
        assert!(w.message.contains(words), "{:?} lacks {words:?}", w.message);
        assert!(a.message.contains(words), "{:?} lacks {words:?}", a.message);
    }
    assert_eq!(
        pid(&vms, &name),
        Some(qemu),
        "QEMU was restarted or stopped"
    );
    assert_eq!(
        std::fs::metadata(vms.host().serial_log(&name)).map_or(0, |m| m.len()),
        0,
        "the guest printed after all"
    );
    // Observing says the same.
    let s = vms.observe(&d).await.unwrap();
    assert_eq!(vm_status(&s, "mute").0.state, AppState::Down);
}
