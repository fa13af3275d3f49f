//! The files of a pod's ConfigMap and Secret volumes, as the tar archive the engine extracts
//! into the pod's volume (`PUT /containers/{infra}/archive`): no host path is involved, so it
//! works wherever the engine runs.
//!
//! Modes are the chart's (`defaultMode`, `items[].mode`), with two rules of Kubernetes' and
//! one of Canopy's: with an `fsGroup` the files belong to that group and are group-readable;
//! and a Secret's files are never readable by others (world bits cleared). Contents are never
//! logged; errors name the volume and the file, never what is in it.

use base64::Engine as _;
use canopy_proto::pods::FileEntry;

/// Ownership and permission rules for one volume's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
    /// An `fsGroup` is set: files are group-readable.
    pub group_readable: bool,
}

/// The mode a file gets (see the module doc).
pub fn mode(entry_mode: u32, secret: bool, owner: Owner) -> u32 {
    let mut m = entry_mode & 0o777;
    if owner.group_readable {
        m |= 0o040;
    }
    if secret {
        m &= !0o007;
    }
    m
}

/// The archive of `files` for volume `volume` (paths relative to the volume's root). Refuses
/// a path that is absolute or climbs out (`..`), and content that is not valid base64 when it
/// says it is.
pub fn archive(
    volume: &str,
    files: &[FileEntry],
    secret: bool,
    owner: Owner,
) -> Result<Vec<u8>, String> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let dir_mode = if secret { 0o750 } else { 0o755 };
    for f in files {
        let path = std::path::Path::new(&f.path);
        let bad = f.path.is_empty()
            || path.is_absolute()
            || path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)));
        if bad {
            return Err(format!(
                "volume {volume}: file path {:?} must be relative, without `..`",
                f.path
            ));
        }
        let content = if f.base64 {
            base64::engine::general_purpose::STANDARD
                .decode(f.content.trim())
                .map_err(|_| format!("volume {volume}: file {} is not valid base64", f.path))?
        } else {
            f.content.as_bytes().to_vec()
        };
        // Parent directories first (tar extraction would make them root's, 0755 otherwise).
        let mut parent = std::path::PathBuf::new();
        let parents: Vec<_> = path
            .parent()
            .into_iter()
            .flat_map(|p| p.components())
            .collect();
        for c in parents {
            parent.push(c);
            let key = parent.to_string_lossy().into_owned();
            if dirs.insert(key.clone()) {
                let mut h = header(owner, dir_mode, 0);
                h.set_entry_type(tar::EntryType::Directory);
                h.set_cksum();
                tar.append_data(&mut h, format!("{key}/"), std::io::empty())
                    .map_err(|e| format!("volume {volume}: {e}"))?;
            }
        }
        let mut h = header(owner, mode(f.mode, secret, owner), content.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append_data(&mut h, &f.path, content.as_slice())
            .map_err(|e| format!("volume {volume}: file {}: {e}", f.path))?;
    }
    tar.into_inner()
        .map_err(|e| format!("volume {volume}: {e}"))
}

/// An archive holding one empty directory `path` (a `subPath` to create in a volume).
pub fn directory(path: &str) -> Result<Vec<u8>, String> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = header(Owner::default(), 0o755, 0);
    h.set_entry_type(tar::EntryType::Directory);
    h.set_cksum();
    tar.append_data(
        &mut h,
        format!("{}/", path.trim_end_matches('/')),
        std::io::empty(),
    )
    .map_err(|e| format!("subPath {path}: {e}"))?;
    tar.into_inner().map_err(|e| format!("subPath {path}: {e}"))
}

fn header(owner: Owner, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(owner.uid);
    h.set_gid(owner.gid);
    h.set_mtime(0);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, content: &str, mode: u32) -> FileEntry {
        FileEntry {
            path: path.into(),
            content: content.into(),
            base64: false,
            mode,
        }
    }

    fn listing(tar: &[u8]) -> Vec<(String, u32, u64, Vec<u8>)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut body).unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                    e.header().gid().unwrap(),
                    body,
                )
            })
            .collect()
    }

    #[test]
    fn secrets_are_never_world_readable_and_fs_group_reads() {
        let plain = Owner::default();
        assert_eq!(mode(0o644, false, plain), 0o644);
        assert_eq!(mode(0o644, true, plain), 0o640);
        assert_eq!(mode(0o400, true, plain), 0o400);
        let group = Owner {
            uid: 0,
            gid: 2000,
            group_readable: true,
        };
        assert_eq!(mode(0o400, true, group), 0o440);
        assert_eq!(mode(0o4755, false, plain), 0o755, "no set-id bits");
    }

    #[test]
    fn archives_hold_the_files_with_their_modes_and_parents() {
        let b64 = FileEntry {
            base64: true,
            ..entry("bin/key", "aGVsbG8=", 0o600)
        };
        let tar = archive(
            "cfg",
            &[entry("a.conf", "x=1\n", 0o644), b64],
            true,
            Owner {
                uid: 0,
                gid: 7,
                group_readable: true,
            },
        )
        .unwrap();
        let l = listing(&tar);
        assert_eq!(l[0], ("a.conf".into(), 0o640, 7, b"x=1\n".to_vec()));
        assert_eq!((l[1].0.as_str(), l[1].1), ("bin/", 0o750));
        assert_eq!(l[2], ("bin/key".into(), 0o640, 7, b"hello".to_vec()));
    }

    #[test]
    fn paths_that_climb_out_are_refused_without_showing_content() {
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            let e =
                archive("v", &[entry(bad, "SECRET", 0o644)], true, Owner::default()).unwrap_err();
            assert!(e.contains("volume v") && !e.contains("SECRET"), "{e}");
        }
        let e = archive(
            "v",
            &[FileEntry {
                base64: true,
                ..entry("k", "not base64!", 0o644)
            }],
            true,
            Owner::default(),
        )
        .unwrap_err();
        assert!(e.contains("file k is not valid base64"), "{e}");
        assert_eq!(listing(&directory("data/").unwrap())[0].0, "data/");
    }
}
