//! Durable, atomic file writes: the one way Canopy writes a file that must hold either its old
//! content or its new content after a crash or a power cut, never a mix and never nothing
//! (credentials, keys, certificates, an agent's desired state, VM specs).
//!
//! Every write takes the same steps, in this order:
//!
//! 1. a temporary file with a fresh name **in the target's directory** (so the rename stays
//!    within one file system), created with the final mode (0600 for secrets: the content is
//!    never readable by others, not even for a moment, and no leftover can lend it another mode);
//! 2. the content written, then `fsync` of the file;
//! 3. `rename` over the target ([`AtomicFile::write`]), or a link that fails when the target
//!    exists ([`AtomicFile::create`]: an existing file is never replaced);
//! 4. `fsync` of the directory, so the new name itself survives a crash.
//!
//! A failure at any step leaves the target as it was and removes the temporary file.
//! [`AtomicFile::stage`] splits the steps so a caller can prepare the file, do other work
//! (a database transaction), then put it in place.
//!
//! Caches whose entries are verified when read (canopy-helm's chart cache, canopy-vm's image
//! cache) do not need this and stream their downloads their own way.
//!
//! Depends on nothing of Canopy's: every crate may use it.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// A file to write atomically; see the crate documentation.
#[derive(Debug, Clone)]
pub struct AtomicFile {
    path: PathBuf,
    mode: u32,
    keep_owner: bool,
}

impl AtomicFile {
    /// The file at `path`, written with mode 0600 unless [`AtomicFile::mode`] says otherwise.
    pub fn new(path: impl Into<PathBuf>) -> AtomicFile {
        AtomicFile {
            path: path.into(),
            mode: 0o600,
            keep_owner: false,
        }
    }

    /// The file's permission bits (Unix), set exactly (not reduced by the umask).
    pub fn mode(mut self, mode: u32) -> AtomicFile {
        self.mode = mode;
        self
    }

    /// When replacing an existing file, give the new one its owner and group (a file rotated by
    /// root stays readable by the service's user). Needs the privilege to change owners; when
    /// the owner is already the caller, it costs nothing.
    pub fn keep_owner(mut self, keep: bool) -> AtomicFile {
        self.keep_owner = keep;
        self
    }

    /// The target path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `content`, replacing the file if it exists.
    pub fn write(&self, content: &[u8]) -> io::Result<()> {
        self.stage(content)?.commit()
    }

    /// Writes `content` only if the file does not exist yet; an existing file is an
    /// [`io::ErrorKind::AlreadyExists`] error and stays as it is.
    pub fn create(&self, content: &[u8]) -> io::Result<()> {
        self.stage(content)?.commit_new()
    }

    /// [`AtomicFile::write`] off the async runtime's threads.
    pub async fn write_async(&self, content: Vec<u8>) -> io::Result<()> {
        let file = self.clone();
        tokio::task::spawn_blocking(move || file.write(&content))
            .await
            .map_err(io::Error::other)?
    }

    /// Steps 1 and 2: the content in a synced temporary file beside the target, not yet in
    /// place. Dropping the [`Staged`] file removes it.
    pub fn stage(&self, content: &[u8]) -> io::Result<Staged> {
        let dir = parent(&self.path);
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(self.mode));
        let mut tmp = builder.tempfile_in(&dir)?;
        // The umask may have taken bits away at creation: set exactly what was asked.
        #[cfg(unix)]
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(self.mode))?;
        #[cfg(unix)]
        if self.keep_owner {
            use std::os::unix::fs::MetadataExt as _;
            match std::fs::metadata(&self.path) {
                Ok(m) => std::os::unix::fs::fchown(tmp.as_file(), Some(m.uid()), Some(m.gid()))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        tmp.write_all(content)?;
        tmp.as_file().sync_all()?;
        Ok(Staged {
            tmp,
            path: self.path.clone(),
            dir,
        })
    }
}

/// A written and synced temporary file waiting to be put in place ([`AtomicFile::stage`]).
#[derive(Debug)]
pub struct Staged {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
    dir: PathBuf,
}

impl Staged {
    /// Steps 3 and 4: renames it over the target, then syncs the directory.
    pub fn commit(self) -> io::Result<()> {
        self.tmp.persist(&self.path).map_err(|e| e.error)?;
        sync_dir(&self.dir)
    }

    /// Like [`Staged::commit`], but an existing target is an [`io::ErrorKind::AlreadyExists`]
    /// error and stays as it is.
    pub fn commit_new(self) -> io::Result<()> {
        self.tmp
            .persist_noclobber(&self.path)
            .map_err(|e| e.error)?;
        sync_dir(&self.dir)
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `fsync` of a directory: makes the names in it (a rename, a new file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes the temporary files a crash left in `dir` (hidden names ending in `.tmp`, as
/// [`AtomicFile`] and earlier versions of Canopy name them) and returns how many. Only for a
/// directory one process owns (behind a lock): another writer's temporary file would be
/// taken from under it.
pub fn remove_leftovers(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") && entry.file_type()?.is_file() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn leftovers_of_a_crash_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            ".a.json.tmp",
            ".a.json.x1Yz.tmp",
            "a.json",
            ".hidden",
            "b.tmp",
        ] {
            std::fs::write(dir.path().join(n), "x").unwrap();
        }
        std::fs::create_dir(dir.path().join(".d.tmp")).unwrap();
        assert_eq!(remove_leftovers(dir.path()).unwrap(), 2);
        assert_eq!(names(dir.path()), [".d.tmp", ".hidden", "a.json", "b.tmp"]);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_replace_with_the_mode_asked_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        AtomicFile::new(&path).write(b"one").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        #[cfg(unix)]
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        AtomicFile::new(&path).mode(0o644).write(b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(names(dir.path()), ["token"]);
    }

    #[test]
    fn create_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        AtomicFile::new(&path).create(b"first").unwrap();
        let e = AtomicFile::new(&path).create(b"second").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(names(dir.path()), ["admin.token"]);
    }

    #[test]
    fn a_staged_file_is_invisible_until_committed_and_gone_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let staged = AtomicFile::new(&path).stage(b"{}").unwrap();
        assert!(!path.exists());
        drop(staged);
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
        AtomicFile::new(&path)
            .stage(b"{}")
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
    }

    #[test]
    fn a_relative_path_in_the_current_directory_works() {
        // `Path::parent` of a bare name is "", which is not a directory to create files in.
        assert_eq!(parent(Path::new("credentials.json")), PathBuf::from("."));
        assert_eq!(parent(Path::new("/a/b")), PathBuf::from("/a"));
    }

    #[tokio::test]
    async fn async_writes_run_off_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.json");
        AtomicFile::new(&path)
            .mode(0o644)
            .write_async(b"{\"a\":1}".to_vec())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}");
    }
}
