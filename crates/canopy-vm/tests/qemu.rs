//! Real QEMU (TCG) with the tiny test VM of scripts/vm-image.sh: a Debian kernel plus a busybox
//! initramfs that serves HTTP on port 80, prints a boot marker and powers off on the ACPI button.
//!
//! Needs `CANOPY_TEST_VM_KERNEL` and `CANOPY_TEST_VM_INITRD` (the lines vm-image.sh prints;
//! scripts/test.sh exports them). Without them the QEMU tests print a notice and pass, except
//! under CI (env `CI` set), where they panic so the coverage cannot silently disappear.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use canopy_vm::{
    Accel, AccelChoice, Accelerator, Boot, CloudInit, ExtraDisk, ImageSource, PortForward,
    StopOutcome, VmError, VmHost, VmSpec, VmState,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

const MARKER: &str = "CANOPY-TEST-VM-BOOTED";
const BOOT_DEADLINE: Duration = Duration::from_secs(120);

struct TestVm {
    kernel: ImageSource,
    initrd: ImageSource,
}

fn file_source(var: &str) -> Option<ImageSource> {
    let path = std::env::var(var).ok().filter(|p| !p.trim().is_empty())?;
    let sha256 = match std::env::var(format!("{var}_SHA256")) {
        Ok(sha) if !sha.trim().is_empty() => sha.trim().to_string(),
        _ => format!("{:x}", Sha256::digest(std::fs::read(&path).unwrap())),
    };
    Some(ImageSource {
        url: format!("file://{path}"),
        sha256,
    })
}

/// The test VM images, or `None` (with a notice) when the environment does not provide them.
fn test_vm() -> Option<TestVm> {
    match (
        file_source("CANOPY_TEST_VM_KERNEL"),
        file_source("CANOPY_TEST_VM_INITRD"),
    ) {
        (Some(kernel), Some(initrd)) => Some(TestVm { kernel, initrd }),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CANOPY_TEST_VM_KERNEL/CANOPY_TEST_VM_INITRD are not set but CI is: the QEMU \
                     tests must not be skipped. Run scripts/vm-image.sh and export its lines."
                );
            }
            eprintln!(
                "skipping QEMU test: CANOPY_TEST_VM_KERNEL/CANOPY_TEST_VM_INITRD unset \
                 (run scripts/vm-image.sh and export its lines)"
            );
            None
        }
    }
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kernel_spec(vm: &TestVm, name: &str, host_port: u16) -> VmSpec {
    VmSpec {
        name: name.into(),
        cpus: 1,
        memory_mib: 96,
        boot: Boot::Kernel {
            kernel: vm.kernel.clone(),
            initrd: Some(vm.initrd.clone()),
            cmdline: "console=ttyS0 quiet".into(),
        },
        extra_disks: Vec::new(),
        ports: vec![PortForward {
            guest_port: 80,
            host_port,
            host_ip: None,
        }],
        cloud_init: None,
        vnc: true,
    }
}

/// GET / through the forwarded port until the guest's httpd answers.
async fn wait_http(port: u16) -> String {
    let deadline = Instant::now() + BOOT_DEADLINE;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    loop {
        if let Ok(resp) = client.get(format!("http://127.0.0.1:{port}/")).send().await
            && resp.status().is_success()
        {
            return resp.text().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "guest HTTP on port {port} did not answer within {BOOT_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn markers(host: &VmHost, name: &str) -> usize {
    host.serial_tail(name, 1 << 20)
        .await
        .unwrap()
        .matches(MARKER)
        .count()
}

fn alive(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// Removes the VM even when an assertion fails, so no QEMU outlives the test.
struct Cleanup(PathBuf, &'static str);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let dir = self.0.clone();
        let name = self.1;
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let _ = VmHost::new(&dir).remove(name, Duration::from_secs(1)).await;
            });
        })
        .join();
    }
}

#[tokio::test]
async fn a_kernel_vm_serves_http_is_adopted_without_reboot_stops_restarts_and_is_removed() {
    let Some(vm) = test_vm() else { return };
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(tmp.path().to_path_buf(), "web");
    let host1 = host(tmp.path());
    let port = free_port();
    let spec = kernel_spec(&vm, "web", port);

    let info = host1.start(&spec).await.unwrap();
    assert_eq!(info.accelerator, "tcg");
    assert!(alive(info.pid));
    let body = wait_http(port).await;
    assert!(body.contains("canopy test vm"), "{body}");
    eprintln!("booted and served HTTP after {:?}", started.elapsed());
    let status = host1.status("web").await.unwrap();
    assert_eq!(status.state, VmState::Running);
    assert_eq!(status.qemu_status.as_deref(), Some("running"));

    // VNC answers with an RFB banner.
    let vnc = info.vnc.expect("vnc address");
    assert!(vnc.ip().is_loopback(), "{vnc}");
    let mut conn = tokio::net::TcpStream::connect(vnc).await.unwrap();
    let mut banner = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut banner))
        .await
        .expect("VNC banner in time")
        .unwrap();
    let banner = String::from_utf8_lossy(&banner).into_owned();
    assert!(banner.starts_with("RFB 003.00"), "{banner:?}");
    drop(conn);

    // Starting again while it runs changes nothing.
    let again = host1.start(&spec).await.unwrap();
    assert_eq!(again.pid, info.pid);
    assert_eq!(markers(&host1, "web").await, 1);

    // An agent restart: a new host on the same directory adopts the VM, without rebooting it.
    drop(host1);
    let host2 = host(tmp.path());
    let adopted = host2.adopt().await.unwrap();
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    assert_eq!(adopted[0].name, "web");
    assert_eq!(adopted[0].pid, info.pid);
    assert_eq!(adopted[0].accelerator, "tcg");
    assert_eq!(adopted[0].vnc, info.vnc);
    assert_eq!(wait_http(port).await, body);
    assert_eq!(markers(&host2, "web").await, 1, "adopting must not reboot");

    // Stop: the guest powers off on the ACPI button; QEMU exits.
    let outcome = host2.stop("web", Duration::from_secs(30)).await.unwrap();
    assert_eq!(outcome, StopOutcome::PoweredOff);
    assert!(!alive(info.pid));
    assert_eq!(host2.status("web").await.unwrap().state, VmState::Stopped);
    assert!(host2.adopt().await.unwrap().is_empty());
    assert_eq!(
        host2.stop("web", Duration::from_secs(1)).await.unwrap(),
        StopOutcome::AlreadyStopped
    );

    // Start the existing VM again (from its stored spec).
    let info2 = host2.start_existing("web").await.unwrap();
    assert_ne!(info2.pid, info.pid);
    wait_http(port).await;
    assert_eq!(host2.status("web").await.unwrap().state, VmState::Running);
    assert_eq!(
        markers(&host2, "web").await,
        2,
        "the serial log is appended to"
    );

    // Remove: process gone, directory gone.
    host2.remove("web", Duration::from_secs(30)).await.unwrap();
    assert!(!alive(info2.pid));
    assert!(!tmp.path().join("vms/web").exists());
    assert!(matches!(
        host2.status("web").await,
        Err(VmError::NotFound { .. })
    ));
    eprintln!("lifecycle test took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_disk_vm_runs_on_an_overlay_with_a_seed_and_extra_disk_and_the_base_is_untouched() {
    let Some(_) = test_vm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(tmp.path().to_path_buf(), "disky");
    // A raw base that boots nothing: SeaBIOS keeps the VM running, which is all this test needs.
    let base = tmp.path().join("base.raw");
    let content = vec![0u8; 1 << 20];
    std::fs::write(&base, &content).unwrap();
    let base_sha = format!("{:x}", Sha256::digest(&content));
    let host = host(tmp.path());
    let spec = VmSpec {
        name: "disky".into(),
        cpus: 1,
        memory_mib: 64,
        boot: Boot::Disk {
            image: ImageSource {
                url: format!("file://{}", base.display()),
                sha256: base_sha.clone(),
            },
        },
        extra_disks: vec![ExtraDisk { size_gib: 1 }],
        ports: Vec::new(),
        cloud_init: Some(CloudInit {
            user_data: "#cloud-config\nhostname: disky\n".into(),
            meta_data: None,
        }),
        vnc: false,
    };
    let info = host.start(&spec).await.unwrap();
    assert_eq!(info.vnc, None);
    assert_eq!(host.status("disky").await.unwrap().state, VmState::Running);

    let dir = tmp.path().join("vms/disky");
    let cached = host.cache().path_for(&base_sha);
    let overlay = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(dir.join("overlay.qcow2"))
        .output()
        .unwrap();
    let overlay: serde_json::Value = serde_json::from_slice(&overlay.stdout).unwrap();
    assert_eq!(overlay["format"], "qcow2");
    assert_eq!(overlay["backing-filename"], cached.display().to_string());
    assert_eq!(overlay["backing-filename-format"], "raw");
    assert!(dir.join("disk-0.qcow2").exists());
    // The seed is labelled cidata (ISO 9660 volume id, sector 16 offset 40) and holds the data.
    let seed = std::fs::read(dir.join("seed.img")).unwrap();
    assert_eq!(&seed[16 * 2048 + 40..16 * 2048 + 46], b"cidata");
    let seed_text = String::from_utf8_lossy(&seed);
    assert!(seed_text.contains("hostname: disky"));
    assert!(seed_text.contains("instance-id: disky"));

    // No OS answers the power button: stop falls back to QMP quit.
    let outcome = host.stop("disky", Duration::from_secs(2)).await.unwrap();
    assert_eq!(outcome, StopOutcome::Quit);
    assert!(!alive(info.pid));
    let after = std::fs::read(&cached).unwrap();
    assert_eq!(
        format!("{:x}", Sha256::digest(&after)),
        base_sha,
        "base modified"
    );

    assert_eq!(host.images_in_use().await.unwrap(), vec![base_sha.clone()]);
    host.remove("disky", Duration::from_secs(2)).await.unwrap();
    assert!(!dir.exists());
    assert_eq!(host.cache().gc(&[]).await.unwrap(), vec![base_sha]);
}

#[tokio::test]
async fn a_vm_asking_for_more_memory_than_available_is_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host(tmp.path());
    let spec = VmSpec {
        name: "huge".into(),
        cpus: 1,
        memory_mib: 1 << 30, // 1 PiB
        boot: Boot::Kernel {
            kernel: ImageSource {
                url: "http://127.0.0.1:9/never-fetched".into(),
                sha256: "0".repeat(64),
            },
            initrd: None,
            cmdline: String::new(),
        },
        extra_disks: Vec::new(),
        ports: Vec::new(),
        cloud_init: None,
        vnc: false,
    };
    let err = host.start(&spec).await.unwrap_err();
    assert!(
        matches!(err, VmError::InsufficientMemory { requested_mib, .. } if requested_mib == 1 << 30),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("huge") && msg.contains("MemAvailable"),
        "{msg}"
    );
    assert!(!tmp.path().join("vms/huge").exists());
    assert!(!tmp.path().join("cache").exists());
}

#[tokio::test]
async fn qemu_failing_to_start_is_reported_with_its_log() {
    let Some(vm) = test_vm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let host = host(tmp.path());
    // Another process holds the host port: QEMU refuses the forward.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut spec = kernel_spec(&vm, "clash", port);
    spec.vnc = false;
    let err = host.start(&spec).await.unwrap_err();
    assert!(matches!(err, VmError::QemuStart { .. }), "{err:?}");
    assert!(err.to_string().contains("clash"), "{err}");
    assert_eq!(host.status("clash").await.unwrap().state, VmState::Stopped);
    host.remove("clash", Duration::from_secs(1)).await.unwrap();
}

/// The accelerator probe's guest runs to its end under TCG (so a failure under KVM is KVM's, not
/// the probe's), and `Auto` decides once: KVM exactly when the probe guest runs under it, else
/// TCG with the reason. On a host where `/dev/kvm` opens but KVM crawls (the CI machines), that
/// is TCG with "KVM does not work", decided within the probe's timeout.
#[tokio::test]
async fn auto_picks_kvm_only_when_a_probe_guest_runs_under_it_and_decides_once() {
    let dir = tempfile::tempdir().unwrap();
    let host = VmHost::new(dir.path()).with_accel(Accel::Auto);
    if host.qemu_version().await.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "qemu-system-x86_64 is missing but CI is set"
        );
        eprintln!("skipping: qemu-system-x86_64 is not installed");
        return;
    }
    let qemu = Path::new("qemu-system-x86_64");
    let took = canopy_vm::probe_guest(qemu, Accelerator::Tcg)
        .await
        .expect("the probe guest runs under TCG");
    assert!(took < Duration::from_secs(30), "{took:?}");

    let started = Instant::now();
    let choice = host.accelerator().await.clone();
    let decided_in = started.elapsed();
    assert!(
        decided_in < canopy_vm::PROBE_TIMEOUT + Duration::from_secs(5),
        "the probe took {decided_in:?}"
    );
    let kvm = canopy_vm::probe_guest(qemu, Accelerator::Kvm).await;
    match (&kvm, &choice) {
        (
            Ok(_),
            AccelChoice {
                accelerator: Accelerator::Kvm,
                fallback: None,
            },
        ) => {}
        (
            Err(why),
            AccelChoice {
                accelerator: Accelerator::Tcg,
                fallback: Some(reason),
            },
        ) => {
            eprintln!("KVM unusable here: {why}; the host says: {reason}");
            if std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok()
            {
                assert!(reason.contains("KVM does not work"), "{reason}");
            } else {
                assert!(reason.contains("/dev/kvm"), "{reason}");
            }
        }
        _ => panic!("probe {kvm:?} but the host chose {choice:?}"),
    }
    // Decided once: the clone shares it, and asking again does not probe again.
    let clone = host.clone();
    let again = Instant::now();
    assert_eq!(clone.accelerator().await, &choice);
    assert!(again.elapsed() < Duration::from_millis(100));
    // Forced settings are not probed.
    let forced = VmHost::new(dir.path()).with_accel(Accel::Tcg);
    assert_eq!(
        forced.accelerator().await,
        &AccelChoice {
            accelerator: Accelerator::Tcg,
            fallback: None
        }
    );
}
