//! Turning the uploaded files into file sets: loose files form one set, each `.tar.gz`/`.tgz`
//! is extracted (in memory, never to disk) into a set of its own. Files come as streams: a
//! tarball is inflated as it is read, so only its extracted entries are held, never its
//! compressed bytes.
//!
//! Everything here assumes the input is hostile. Sizes are checked before anything is read
//! into memory where the archive says how big an entry is, and counted while reading where it
//! does not; the gzip stream is read through a counting reader that fails as soon as the
//! decompressed total passes the budget, so a decompression bomb costs at most
//! [`MAX_TOTAL_BYTES`] of inflating. Only regular files and directories are accepted; links,
//! devices and fifos are refused (even though nothing is ever written to disk, an archive with
//! them is not a package). Paths must be relative and must not climb out with `..`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Component, Path};
use std::rc::Rc;

use flate2::read::GzDecoder;

use super::{MAX_FILE_BYTES, MAX_TAR_ENTRIES, MAX_TOTAL_BYTES, UploadReader};

/// One file of a file set.
#[derive(Debug, Clone)]
pub(crate) struct RawFile {
    /// Path inside the file set (`/`-separated, relative, no `.` or `..`), used to resolve
    /// `valuesFileName`.
    pub(crate) path: String,
    /// How messages name the file: the upload name, or `<tarball>:<entry path>`.
    pub(crate) display: String,
    pub(crate) bytes: Vec<u8>,
    /// Whether the file is read for entities (every loose file but workload templates
    /// (`.j2`, `.jinja`, `.jinja2`); `.yaml`/`.yml` in tarballs).
    pub(crate) yaml: bool,
}

/// The files of one file set.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawSet {
    pub(crate) files: Vec<RawFile>,
}

/// Whether an upload is a tarball, by its name.
pub(crate) fn is_tarball(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".tar.gz") || lower.ends_with(".tgz")
}

fn mib(n: u64) -> String {
    format!("{} MiB", n / (1024 * 1024))
}

/// Splits an upload into file sets (loose files first, then one per tarball in upload order).
/// Problems are pushed to `errors`; a refused tarball contributes no set.
pub(crate) fn collect(files: Vec<UploadReader<'_>>, errors: &mut Vec<String>) -> Vec<RawSet> {
    let mut total: u64 = 0;
    let mut loose = RawSet::default();
    let mut tarballs = Vec::new();
    let mut loose_names: BTreeMap<String, usize> = BTreeMap::new();
    let mut over_total = false;
    for f in files {
        let size = f.len;
        if is_tarball(&f.name) {
            if size > MAX_TOTAL_BYTES {
                errors.push(format!(
                    "uploaded file {} is too large ({size} bytes; an upload may hold at most {})",
                    f.name,
                    mib(MAX_TOTAL_BYTES)
                ));
                continue;
            }
            let budget = MAX_TOTAL_BYTES.saturating_sub(total);
            match extract(&f.name, f.reader, budget) {
                Ok((set, used)) => {
                    total += used;
                    tarballs.push(set);
                }
                Err(e) => errors.push(e),
            }
            continue;
        }
        if size > MAX_FILE_BYTES {
            errors.push(format!(
                "uploaded file {} is too large ({size} bytes; the limit is {} per file)",
                f.name,
                mib(MAX_FILE_BYTES)
            ));
            continue;
        }
        total += size;
        if total > MAX_TOTAL_BYTES {
            if !over_total {
                errors.push(format!(
                    "uploaded file {}: the upload is too large (more than {} in total, after decompression)",
                    f.name,
                    mib(MAX_TOTAL_BYTES)
                ));
            }
            over_total = true;
            continue;
        }
        // Read whole (it is YAML or a values file), never past the per-file limit whatever
        // the stream turns out to hold.
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        if let Err(e) = f.reader.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
            errors.push(format!("uploaded file {} cannot be read: {e}", f.name));
            continue;
        }
        if bytes.len() as u64 > MAX_FILE_BYTES {
            errors.push(format!(
                "uploaded file {} is too large (more than {} per file)",
                f.name,
                mib(MAX_FILE_BYTES)
            ));
            continue;
        }
        let path = loose_path(&f.name);
        if let Some(&i) = loose_names.get(&path) {
            let same: &RawFile = &loose.files[i];
            if same.bytes != bytes {
                errors.push(format!(
                    "uploaded file {} is uploaded twice with different content",
                    f.name
                ));
            }
            continue;
        }
        loose_names.insert(path.clone(), loose.files.len());
        // Workload templates are YAML only once rendered.
        let yaml = !is_template_name(&path);
        loose.files.push(RawFile {
            path,
            display: f.name.clone(),
            bytes,
            yaml,
        });
    }
    let mut sets = Vec::new();
    if !loose.files.is_empty() {
        sets.push(loose);
    }
    sets.extend(tarballs);
    sets
}

/// The path of a loose file inside its set: the name with `\` as `/`, without `./` parts.
/// Loose names are only labels (nothing is written anywhere), so odd ones are kept as given.
fn loose_path(name: &str) -> String {
    let unified = name.replace('\\', "/");
    let parts: Vec<&str> = unified
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        unified
    } else {
        parts.join("/")
    }
}

/// A reader that counts what passes through and fails once more than `cap` bytes have.
struct Capped<R> {
    inner: R,
    count: Rc<Cell<u64>>,
    cap: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.count.get() > self.cap {
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        // Never ask for more than one byte past the cap, so inflating stops right there.
        let room = (self.cap - self.count.get()).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.count.set(self.count.get() + n as u64);
        if self.count.get() > self.cap {
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        Ok(n)
    }
}

/// Checks a tar entry path and returns it normalized (`a/./b` → `a/b`); `None` for the
/// archive root itself (`./`).
fn entry_path(path: &Path) -> Result<Option<String>, String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => {
                let p = p.to_str().ok_or("has a path that is not UTF-8")?;
                parts.push(p.to_string());
            }
            Component::CurDir => {}
            Component::ParentDir => {
                return Err("has a path with '..' (it would escape the archive)".into());
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("has an absolute path (only relative paths are allowed)".into());
            }
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Workload template files (`.j2`, `.jinja`, `.jinja2`): never read for entities.
fn is_template_name(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".j2") || lower.ends_with(".jinja") || lower.ends_with(".jinja2")
}

fn is_yaml_name(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

/// Extracts a tarball into a file set, within `budget` decompressed bytes. Returns the set and
/// the decompressed bytes used, or one message naming the tarball (and entry) that was refused.
fn extract(name: &str, content: impl Read, budget: u64) -> Result<(RawSet, u64), String> {
    let count = Rc::new(Cell::new(0u64));
    let over = |count: &Rc<Cell<u64>>| count.get() > budget;
    let bomb = || {
        format!(
            "uploaded file {name}: the upload decompresses to more than {} (the limit); refusing it as a possible decompression bomb",
            mib(MAX_TOTAL_BYTES)
        )
    };
    let reader = Capped {
        inner: GzDecoder::new(content),
        count: Rc::clone(&count),
        cap: budget,
    };
    let mut archive = tar::Archive::new(reader);
    let mut set = RawSet::default();
    let mut seen = BTreeMap::new();
    {
        let entries = archive.entries().map_err(|e| {
            if over(&count) {
                bomb()
            } else {
                format!("uploaded file {name} is not a valid tar.gz archive: {e}")
            }
        })?;
        for (i, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|e| {
                if over(&count) {
                    bomb()
                } else {
                    format!("uploaded file {name} is not a valid tar.gz archive: {e}")
                }
            })?;
            if i >= MAX_TAR_ENTRIES {
                return Err(format!(
                    "uploaded file {name} has more than {MAX_TAR_ENTRIES} entries"
                ));
            }
            let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let entry_err = |what: &str| format!("uploaded file {name}: entry {raw_path:?} {what}");
            let path = entry
                .path()
                .map_err(|e| entry_err(&format!("has an invalid path ({e})")))
                .and_then(|p| entry_path(&p).map_err(|e| entry_err(&e)))?;
            let kind = entry.header().entry_type();
            if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
                continue;
            }
            if kind.is_dir() {
                continue;
            }
            if !(kind.is_file() || kind.is_contiguous()) {
                let what = if kind.is_symlink() {
                    "a symbolic link"
                } else if kind.is_hard_link() {
                    "a hard link"
                } else if kind.is_character_special() || kind.is_block_special() {
                    "a device"
                } else if kind.is_fifo() {
                    "a fifo"
                } else {
                    "of an unsupported type"
                };
                return Err(entry_err(&format!(
                    "is {what}; only regular files and directories are allowed"
                )));
            }
            let Some(path) = path else {
                return Err(entry_err("is a file without a name"));
            };
            let size = entry.size();
            if size > MAX_FILE_BYTES {
                return Err(entry_err(&format!(
                    "is too large ({size} bytes; the limit is {} per file)",
                    mib(MAX_FILE_BYTES)
                )));
            }
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MAX_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| {
                    if over(&count) {
                        bomb()
                    } else {
                        entry_err(&format!("cannot be read: {e}"))
                    }
                })?;
            if bytes.len() as u64 > MAX_FILE_BYTES {
                return Err(entry_err(&format!(
                    "is larger than {} per file",
                    mib(MAX_FILE_BYTES)
                )));
            }
            if seen.insert(path.clone(), ()).is_some() {
                return Err(entry_err("appears twice in the archive"));
            }
            let base = path.rsplit('/').next().unwrap_or(&path);
            // macOS tar adds `._name` resource-fork files next to each file: metadata, skip.
            if base.starts_with("._") {
                continue;
            }
            set.files.push(RawFile {
                yaml: is_yaml_name(&path),
                display: format!("{name}:{path}"),
                path,
                bytes,
            });
        }
    }
    // Read the rest of the gzip stream (padding after the end of the archive) so its checksum
    // is verified and anything hidden after the archive still counts against the budget.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| {
        if over(&count) {
            bomb()
        } else {
            format!("uploaded file {name} is not a valid tar.gz archive: {e}")
        }
    })?;
    Ok((set, count.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        assert_eq!(
            entry_path(Path::new("./a/./b.yaml")).unwrap().unwrap(),
            "a/b.yaml"
        );
        assert_eq!(entry_path(Path::new("./")).unwrap(), None);
        assert!(
            entry_path(Path::new("a/../../evil"))
                .unwrap_err()
                .contains("..")
        );
        assert!(
            entry_path(Path::new("/etc/passwd"))
                .unwrap_err()
                .contains("absolute")
        );
    }

    #[test]
    fn loose_paths() {
        assert_eq!(loose_path("./dir//app.yaml"), "dir/app.yaml");
        assert_eq!(loose_path("dir\\app.yaml"), "dir/app.yaml");
    }

    #[test]
    fn capped_reader_stops() {
        let data = vec![0u8; 1000];
        let mut r = Capped {
            inner: &data[..],
            count: Rc::new(Cell::new(0)),
            cap: 100,
        };
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
        assert!(out.len() <= 101);
    }
}
