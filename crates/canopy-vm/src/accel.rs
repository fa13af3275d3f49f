//! Which accelerator QEMU runs guests with, and the probe that decides it.
//!
//! Why a probe: `/dev/kvm` opening is no proof that KVM works. On some hosts (nested or
//! emulated virtualization) the device opens, QEMU accepts `-accel kvm` and QMP says `running`,
//! yet the guest crawls a thousand times slower than TCG and never gets through its boot: an
//! empty serial log and 100 % CPU. QEMU's own fallback (`-accel kvm -accel tcg`) only covers
//! KVM failing to *initialize*, so it cannot help.
//!
//! The probe runs a guest that needs no disk, no firmware and no network: a 64 KiB BIOS image
//! ([`probe_bios`]) whose reset vector counts a register down from 2^25 and then writes to
//! QEMU's `isa-debug-exit` port, which ends QEMU with exit status 85. Under working KVM that
//! takes milliseconds (about a second under TCG); where KVM is broken QEMU either fails (exit
//! status, message) or does not finish within [`PROBE_TIMEOUT`] and is killed. Either way VMs
//! run under TCG and the reason is kept ([`AccelChoice::fallback`]), for the log and for each
//! VM's status. A [`crate::VmHost`] probes at most once, at its first need (so once per agent
//! start), and never when the accelerator is forced.

use std::path::Path;
use std::time::{Duration, Instant};

/// Environment variable that forces the accelerator: `kvm`, `tcg` or `auto` (the default).
pub const ACCEL_ENV: &str = "CANOPY_VM_ACCEL";

/// How long the probe guest gets under KVM (QEMU's start included) before KVM is declared
/// unusable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Iterations of the probe guest's loop: milliseconds under KVM, about a second under TCG,
/// over a minute where KVM crawls.
const PROBE_LOOPS: u32 = 1 << 25;
/// `isa-debug-exit` turns a write of `v` into exit status `(v << 1) | 1`; the guest writes 42.
const PROBE_EXIT_STATUS: i32 = (42 << 1) | 1;
/// The I/O port of `isa-debug-exit` (QEMU's default).
const DEBUG_EXIT_PORT: u16 = 0x501;

/// Which accelerator QEMU is asked for (the setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM when it works (the probe runs a guest under it), else TCG with a warning.
    Auto,
    /// KVM only, unprobed: the VM fails to start without it.
    Kvm,
    /// TCG (software emulation) only: slow but works everywhere.
    Tcg,
}

impl Accel {
    /// `CANOPY_VM_ACCEL` (kvm, tcg, auto), or `Auto` when unset or unknown.
    pub fn from_env() -> Accel {
        match std::env::var(ACCEL_ENV).as_deref().map(str::trim) {
            Ok("kvm") => Accel::Kvm,
            Ok("tcg") => Accel::Tcg,
            Ok("auto") | Ok("") | Err(_) => Accel::Auto,
            Ok(other) => {
                tracing::warn!(value = other, "unknown {ACCEL_ENV}; using auto");
                Accel::Auto
            }
        }
    }
}

/// An accelerator QEMU can run a guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    /// The kernel's hardware virtualization.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl Accelerator {
    /// `kvm` or `tcg`, as QEMU's `-accel` and Canopy's reports spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for Accelerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The accelerator VMs get on a host, and why it is not KVM when KVM was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    pub accelerator: Accelerator,
    /// With [`Accel::Auto`] and TCG chosen: why KVM is not used (no `/dev/kvm`, or the probe
    /// guest failed or crawled). `None` when the accelerator was forced or KVM works.
    pub fallback: Option<String>,
}

impl AccelChoice {
    /// Decides for `setting`: forced settings as they are, `Auto` by probing KVM with `qemu`.
    pub(crate) async fn decide(setting: Accel, qemu: &Path) -> AccelChoice {
        let forced = |accelerator| AccelChoice {
            accelerator,
            fallback: None,
        };
        match setting {
            Accel::Kvm => forced(Accelerator::Kvm),
            Accel::Tcg => forced(Accelerator::Tcg),
            Accel::Auto => {
                let why = match std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/kvm")
                {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        "this host has no /dev/kvm (no hardware virtualization)".to_string()
                    }
                    Err(e) => format!("/dev/kvm cannot be opened: {e}"),
                    Ok(_) => match probe_guest(qemu, Accelerator::Kvm).await {
                        Ok(took) => {
                            tracing::info!(
                                took_ms = took.as_millis() as u64,
                                "KVM works: VMs run under KVM"
                            );
                            return forced(Accelerator::Kvm);
                        }
                        Err(why) => format!("/dev/kvm is present but KVM does not work: {why}"),
                    },
                };
                tracing::warn!(
                    reason = %why,
                    "KVM is not usable: VMs run under TCG (software emulation, much slower)"
                );
                AccelChoice {
                    accelerator: Accelerator::Tcg,
                    fallback: Some(why),
                }
            }
        }
    }
}

/// Runs the probe guest under `accelerator` with `qemu`: how long it took, or why it did not
/// finish (QEMU's exit status and last message, or the timeout).
pub async fn probe_guest(qemu: &Path, accelerator: Accelerator) -> Result<Duration, String> {
    let bios = tokio::task::spawn_blocking(|| -> std::io::Result<tempfile::TempPath> {
        let mut file = tempfile::Builder::new()
            .prefix("canopy-accel-probe-")
            .suffix(".bin")
            .tempfile()?;
        std::io::Write::write_all(&mut file, &probe_bios())?;
        Ok(file.into_temp_path())
    })
    .await
    .map_err(|e| format!("cannot write the probe guest: {e}"))?
    .map_err(|e| format!("cannot write the probe guest: {e}"))?;
    let started = Instant::now();
    let child = tokio::process::Command::new(qemu)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-accel",
            accelerator.as_str(),
            "-machine",
            "pc",
            "-m",
            "16",
            "-device",
            &format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=2"),
            "-bios",
        ])
        .arg(&*bios)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    // On timeout the future (and the child with it) is dropped: kill_on_drop ends QEMU.
    let out = tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "a test guest that runs in about a second under TCG did not finish within {} s \
                 under {accelerator} (guests would crawl)",
                PROBE_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("waiting for {}: {e}", qemu.display()))?;
    drop(bios);
    if out.status.code() == Some(PROBE_EXIT_STATUS) {
        return Ok(started.elapsed());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    Err(format!(
        "qemu -accel {accelerator} ended with {} instead of running the test guest: {last}",
        out.status
    ))
}

/// The probe guest: a 64 KiB BIOS image (QEMU wants a multiple of 64 KiB) filled with `hlt`,
/// whose reset vector (the last 16 bytes, run in real mode at `F000:FFF0`) jumps to this code
/// at offset `0xFF00`:
///
/// ```text
/// 66 B9 nn nn nn nn   mov ecx, PROBE_LOOPS
/// 66 49               dec ecx
/// 75 FC               jnz (back to dec)
/// B0 2A               mov al, 42
/// BA 01 05            mov dx, 0x501        ; isa-debug-exit
/// EE                  out dx, al           ; QEMU exits with (42 << 1) | 1 = 85
/// F4                  hlt
/// EB FD               jmp (back to hlt)
/// ```
pub fn probe_bios() -> Vec<u8> {
    const SIZE: usize = 64 << 10;
    const CODE_AT: usize = 0xFF00;
    const RESET_AT: usize = 0xFFF0;
    let mut image = vec![0xF4u8; SIZE];
    let mut code = vec![0x66, 0xB9];
    code.extend_from_slice(&PROBE_LOOPS.to_le_bytes());
    code.extend_from_slice(&[0x66, 0x49, 0x75, 0xFC, 0xB0, 42, 0xBA]);
    code.extend_from_slice(&DEBUG_EXIT_PORT.to_le_bytes());
    code.extend_from_slice(&[0xEE, 0xF4, 0xEB, 0xFD]);
    image[CODE_AT..CODE_AT + code.len()].copy_from_slice(&code);
    // jmp near rel16, relative to the next instruction (RESET_AT + 3).
    let rel = (CODE_AT as i32 - (RESET_AT as i32 + 3)) as i16;
    image[RESET_AT] = 0xE9;
    image[RESET_AT + 1..RESET_AT + 3].copy_from_slice(&rel.to_le_bytes());
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_bios_jumps_from_the_reset_vector_to_its_loop() {
        let bios = probe_bios();
        assert_eq!(bios.len(), 65536);
        // jmp near 0xFF00 from 0xFFF3.
        assert_eq!(&bios[0xFFF0..0xFFF3], &[0xE9, 0x0D, 0xFF]);
        assert_eq!(&bios[0xFF00..0xFF02], &[0x66, 0xB9]);
        assert_eq!(
            u32::from_le_bytes(bios[0xFF02..0xFF06].try_into().unwrap()),
            PROBE_LOOPS
        );
        // out dx, al with dx = 0x501 after the loop.
        assert_eq!(&bios[0xFF0C..0xFF10], &[0xBA, 0x01, 0x05, 0xEE]);
        assert_eq!(PROBE_EXIT_STATUS, 85);
    }

    #[test]
    fn accelerators_are_spelled_as_qemu_spells_them() {
        assert_eq!(Accelerator::Kvm.to_string(), "kvm");
        assert_eq!(Accelerator::Tcg.as_str(), "tcg");
    }
}
