//! The pause image: what a pod's infra container runs.
//!
//! A pod's containers share one network namespace (they reach each other on 127.0.0.1, as in
//! Kubernetes), which must outlive any of them: a container that restarts, an init container
//! that exits. Kubernetes keeps it in a "pause" container that does nothing, forever. Canopy's
//! edges cannot pull such an image (an edge may reach no public registry), and the pod's own
//! images may not have a program that waits forever (distroless images have no `sleep`), so
//! the agent makes the image itself: a 129-byte static executable, written here instruction by
//! instruction, that loops on `pause(2)` (x86-64) or `ppoll(2)` with nothing to poll (arm64,
//! which has no `pause`). It is imported once per engine as [`IMAGE`] from a one-file tar
//! (`POST /images/create?fromSrc=-`), the same bytes every time.
//!
//! The process ignores every signal but SIGKILL (PID 1 of a PID namespace without handlers), so
//! the infra container is created with `StopSignal: SIGKILL`: stopping it is immediate.

use std::io::Write;

/// The image the agent imports and runs as every pod's infra container (its tag is bumped
/// whenever the executable changes).
pub const IMAGE: &str = "localhost/canopy-pause:1";
/// The executable's path in the image.
pub const ENTRYPOINT: &str = "/pause";

/// Where the executable is loaded (the usual base of static executables).
const BASE: u64 = 0x40_0000;
const EHDR: usize = 64;
const PHDR: usize = 56;

/// The machine code of the loop, and the ELF `e_machine`, for an engine architecture as the
/// engine's `/version` names it (`amd64`, `arm64`; Go's names, also `x86_64`/`aarch64`).
fn code(arch: &str) -> Option<(u16, Vec<u8>)> {
    match arch {
        "amd64" | "x86_64" => Some((
            0x3e,
            vec![
                0xb8, 0x22, 0x00, 0x00, 0x00, // mov eax, 34 (pause)
                0x0f, 0x05, // syscall
                0xeb, 0xf7, // jmp back to the mov
            ],
        )),
        "arm64" | "aarch64" => {
            let words: [u32; 7] = [
                0xd280_0000, // mov x0, #0 (no descriptors)
                0xd280_0001, // mov x1, #0 (none of them)
                0xd280_0002, // mov x2, #0 (no timeout: wait forever)
                0xd280_0003, // mov x3, #0 (no signal mask)
                0xd280_0928, // mov x8, #73 (ppoll)
                0xd400_0001, // svc #0
                0x17ff_fffa, // b back to the first mov
            ];
            Some((0xb7, words.iter().flat_map(|w| w.to_le_bytes()).collect()))
        }
        _ => None,
    }
}

/// The static executable for `arch`, or `None` for an architecture without one.
pub fn executable(arch: &str) -> Option<Vec<u8>> {
    let (machine, code) = code(arch)?;
    let total = (EHDR + PHDR + code.len()) as u64;
    let entry = BASE + (EHDR + PHDR) as u64;
    let mut elf = Vec::with_capacity(total as usize);
    // ELF header: 64-bit, little-endian, version 1, System V ABI.
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    elf.extend_from_slice(&entry.to_le_bytes());
    elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // program headers right after
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    elf.extend_from_slice(&(EHDR as u16).to_le_bytes());
    elf.extend_from_slice(&(PHDR as u16).to_le_bytes());
    elf.extend_from_slice(&1u16.to_le_bytes()); // one program header
    elf.extend_from_slice(&[0; 6]); // no section headers, no names
    // One loadable segment, read and execute: the whole file.
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // PF_R | PF_X
    elf.extend_from_slice(&0u64.to_le_bytes()); // from the start of the file
    elf.extend_from_slice(&BASE.to_le_bytes());
    elf.extend_from_slice(&BASE.to_le_bytes());
    elf.extend_from_slice(&total.to_le_bytes());
    elf.extend_from_slice(&total.to_le_bytes());
    elf.extend_from_slice(&0x1000u64.to_le_bytes());
    elf.extend_from_slice(&code);
    debug_assert_eq!(elf.len() as u64, total);
    Some(elf)
}

/// The image's root filesystem as a tar (the executable alone, mode 0755, timestamps zero so
/// the bytes are the same at every import).
pub fn rootfs(arch: &str) -> Option<Vec<u8>> {
    let elf = executable(arch)?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(elf.len() as u64);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append_data(&mut header, "pause", elf.as_slice()).ok()?;
    let mut bytes = tar.into_inner().ok()?;
    bytes.flush().ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executables_are_well_formed_elf() {
        for (arch, machine) in [("amd64", 0x3e_u16), ("arm64", 0xb7)] {
            let elf = executable(arch).unwrap();
            assert_eq!(&elf[..4], b"\x7fELF");
            assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), machine);
            let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
            assert_eq!(entry, BASE + 120, "{arch}: code right after the headers");
            let filesz = u64::from_le_bytes(elf[64 + 32..64 + 40].try_into().unwrap());
            assert_eq!(filesz, elf.len() as u64);
        }
        assert_eq!(executable("amd64").unwrap().len(), 129);
        assert!(executable("s390x").is_none());
        // The arm64 loop branches back to its first instruction (-6 instructions).
        let arm = executable("arm64").unwrap();
        let b = u32::from_le_bytes(arm[arm.len() - 4..].try_into().unwrap());
        assert_eq!(b >> 26, 0b000101);
        assert_eq!(((b & 0x03ff_ffff) as i32) << 6 >> 6, -6);
    }

    #[test]
    fn the_x86_64_executable_waits_forever_on_this_host() {
        if std::env::consts::ARCH != "x86_64" {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pause");
        std::fs::write(&path, executable("amd64").unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&path).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pause executable exited"
        );
        child.kill().unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "it ends only by SIGKILL");
    }

    #[test]
    fn the_rootfs_holds_the_executable_alone() {
        let tar = rootfs("amd64").unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                    e.header().size().unwrap(),
                )
            })
            .collect();
        assert_eq!(entries, vec![("pause".to_string(), 0o755, 129)]);
        assert_eq!(rootfs("amd64"), rootfs("amd64"), "the same bytes each time");
    }
}
