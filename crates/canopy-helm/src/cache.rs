//! The chart cache on disk, content-addressed by the archive's sha256:
//!
//! ```text
//! <dir>/blobs/sha256/<hex>   a chart archive, checked (archive rules, digest) before it lands
//! <dir>/refs/<key>           {"digest", "fetchedAt"}: which archive a (registry, chart, version,
//!                            credentials) resolved to, and when
//! <dir>/tmp/                 files being written (renamed into place when complete)
//! <dir>/salt                 random bytes mixed into ref keys (credentials never hash alone)
//! ```
//!
//! A ref key covers the credentials, so a chart fetched with one project's credentials is never
//! served to a caller without them. Archives are shared by digest. The total size of the
//! archives is bounded: after each insertion the least recently used ones (by modification time,
//! which every read refreshes) are removed until the total is under the bound, and refs left
//! without their archive go with them. Reads check the digest again; a corrupt file is removed
//! and counts as a miss.
//!
//! Blocking file I/O: callers on an async runtime run these through `spawn_blocking`
//! ([`crate::ChartFetcher`] does).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::source::ChartSource;

/// The chart cache's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// The cache directory (created, mode 0700).
    pub dir: PathBuf,
    /// Most bytes of chart archives kept.
    pub max_bytes: u64,
    /// How long a resolved version is used without asking the registry again. After that the
    /// registry is asked; when it cannot be reached, the cached archive is still used (and the
    /// fetch says so).
    pub ref_ttl: Duration,
}

impl CacheConfig {
    /// Defaults: 1 GiB, versions re-checked after 10 minutes.
    pub fn new(dir: impl Into<PathBuf>) -> CacheConfig {
        CacheConfig {
            dir: dir.into(),
            max_bytes: 1024 * 1024 * 1024,
            ref_ttl: Duration::from_secs(600),
        }
    }
}

/// The digest of a chart archive: `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChartDigest(String);

impl ChartDigest {
    /// The digest of these bytes.
    pub fn of(bytes: &[u8]) -> ChartDigest {
        ChartDigest(format!("sha256:{:x}", Sha256::digest(bytes)))
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn hex(&self) -> &str {
        self.0.strip_prefix("sha256:").unwrap_or(&self.0)
    }

    fn parse(s: &str) -> Option<ChartDigest> {
        let hex = s.strip_prefix("sha256:")?;
        (hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| ChartDigest(s.to_string()))
    }
}

impl std::fmt::Display for ChartDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a ref file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RefEntry {
    pub digest: ChartDigest,
    /// Seconds since the Unix epoch when the registry last confirmed it.
    pub fetched_at: u64,
}

impl RefEntry {
    pub(crate) fn age(&self) -> Duration {
        Duration::from_secs(unix_now().saturating_sub(self.fetched_at))
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a garbage collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_archives: usize,
    pub removed_bytes: u64,
    pub removed_refs: usize,
    /// Bytes of archives left.
    pub total_bytes: u64,
}

/// The chart cache (see the module doc).
#[derive(Debug)]
pub struct ChartCache {
    config: CacheConfig,
    salt: [u8; 32],
    /// Serializes insertions and collections (reads need no lock: files are renamed into
    /// place whole, and a reader that loses a race with a removal sees a miss).
    lock: Mutex<()>,
}

fn mkdir_private(p: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p)
}

impl ChartCache {
    /// Opens (creating) the cache directory; leftovers of interrupted writes are removed.
    pub fn open(config: CacheConfig) -> io::Result<ChartCache> {
        mkdir_private(&config.dir)?;
        mkdir_private(&config.dir.join("blobs/sha256"))?;
        mkdir_private(&config.dir.join("refs"))?;
        let tmp = config.dir.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        mkdir_private(&tmp)?;
        let salt_path = config.dir.join("salt");
        let salt = match fs::read(&salt_path) {
            Ok(s) if s.len() == 32 => s,
            _ => {
                let mut s = [0u8; 32];
                let mut f = fs::File::open("/dev/urandom")?;
                io::Read::read_exact(&mut f, &mut s)?;
                write_atomic(&config.dir, &salt_path, &s)?;
                s.to_vec()
            }
        };
        let mut fixed = [0u8; 32];
        fixed.copy_from_slice(&salt);
        Ok(ChartCache {
            config,
            salt: fixed,
            lock: Mutex::new(()),
        })
    }

    fn ensure_dirs(&self) -> io::Result<()> {
        for d in ["blobs/sha256", "refs", "tmp"] {
            mkdir_private(&self.config.dir.join(d))?;
        }
        Ok(())
    }

    /// The cache's settings.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The ref key of a source: registry URL, chart, version and credentials, salted.
    pub(crate) fn ref_key(&self, src: &ChartSource) -> String {
        let mut h = Sha256::new();
        h.update(self.salt);
        for part in [
            src.root_url.trim().trim_end_matches('/'),
            &src.chart_name,
            &src.chart_version,
            src.credentials.username.as_deref().unwrap_or(""),
            src.credentials.auth_token.as_deref().unwrap_or(""),
            src.credentials.ca_pem.as_deref().unwrap_or(""),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        format!("{:x}", h.finalize())
    }

    fn blob_path(&self, d: &ChartDigest) -> PathBuf {
        self.config.dir.join("blobs/sha256").join(d.hex())
    }

    fn ref_path(&self, key: &str) -> PathBuf {
        self.config.dir.join("refs").join(key)
    }

    /// The ref for a key, if any.
    pub(crate) fn lookup(&self, key: &str) -> Option<RefEntry> {
        let bytes = fs::read(self.ref_path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The archive with this digest, if cached and intact (its use time is refreshed).
    pub(crate) fn read(&self, d: &ChartDigest) -> Option<Vec<u8>> {
        let path = self.blob_path(d);
        let bytes = fs::read(&path).ok()?;
        if ChartDigest::of(&bytes) != *d {
            tracing::warn!(digest = %d, "corrupt chart archive in the cache; removing it");
            let _ = fs::remove_file(&path);
            return None;
        }
        if let Ok(f) = fs::File::options().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(bytes)
    }

    /// Stores an archive (already checked) and the ref that resolved to it, then collects
    /// garbage down to the size bound (never the archive just stored).
    pub(crate) fn insert(&self, key: &str, bytes: &[u8]) -> io::Result<ChartDigest> {
        let digest = ChartDigest::of(bytes);
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        // The directories may have been removed under a running server (a cleanup of /var/tmp):
        // make them again rather than fail every fetch.
        self.ensure_dirs()?;
        let blob = self.blob_path(&digest);
        if blob.exists() {
            if let Ok(f) = fs::File::options().write(true).open(&blob) {
                let _ = f.set_modified(SystemTime::now());
            }
        } else {
            write_atomic(&self.config.dir, &blob, bytes)?;
        }
        self.touch_ref(key, &digest)?;
        self.collect(Some(&digest))?;
        Ok(digest)
    }

    /// Records that the registry confirmed `key` → `digest` now.
    pub(crate) fn touch_ref(&self, key: &str, digest: &ChartDigest) -> io::Result<()> {
        let entry = RefEntry {
            digest: digest.clone(),
            fetched_at: unix_now(),
        };
        let json = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        write_atomic(&self.config.dir, &self.ref_path(key), &json)
    }

    /// Removes least recently used archives until the total is within the bound, and refs
    /// whose archive is gone.
    pub fn gc(&self) -> io::Result<GcReport> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.collect(None)
    }

    /// Bytes of archives in the cache now.
    pub fn total_bytes(&self) -> io::Result<u64> {
        Ok(self.archives()?.iter().map(|(_, len, _)| len).sum())
    }

    fn archives(&self) -> io::Result<Vec<(PathBuf, u64, SystemTime)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.config.dir.join("blobs/sha256"))? {
            let e = e?;
            let md = match e.metadata() {
                Ok(m) if m.is_file() => m,
                _ => continue,
            };
            out.push((e.path(), md.len(), md.modified().unwrap_or(UNIX_EPOCH)));
        }
        Ok(out)
    }

    fn collect(&self, keep: Option<&ChartDigest>) -> io::Result<GcReport> {
        let mut archives = self.archives()?;
        let mut total: u64 = archives.iter().map(|(_, len, _)| len).sum();
        let mut report = GcReport::default();
        if total > self.config.max_bytes {
            archives.sort_by_key(|(_, _, t)| *t);
            let keep_path = keep.map(|d| self.blob_path(d));
            for (path, len, _) in &archives {
                if total <= self.config.max_bytes {
                    break;
                }
                if Some(path) == keep_path.as_ref() {
                    continue;
                }
                match fs::remove_file(path) {
                    Ok(()) => {
                        total -= len;
                        report.removed_archives += 1;
                        report.removed_bytes += len;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if report.removed_archives > 0 {
            for e in fs::read_dir(self.config.dir.join("refs"))? {
                let e = e?;
                let gone = match fs::read(e.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<RefEntry>(&b).ok())
                {
                    Some(r) => !self.blob_path(&r.digest).exists(),
                    None => true,
                };
                if gone && fs::remove_file(e.path()).is_ok() {
                    report.removed_refs += 1;
                }
            }
        }
        report.total_bytes = total;
        if report.removed_archives > 0 {
            tracing::info!(
                removed = report.removed_archives,
                removed_bytes = report.removed_bytes,
                total_bytes = total,
                "chart cache collected"
            );
        }
        Ok(report)
    }

    /// Checks that a ref file names a valid digest (used by tests and tools).
    pub fn parse_digest(s: &str) -> Option<ChartDigest> {
        ChartDigest::parse(s)
    }
}

/// Writes a file completely under `<dir>/tmp`, then renames it into place.
fn write_atomic(dir: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tempfile::NamedTempFile::new_in(dir.join("tmp")).or_else(|_| {
        mkdir_private(&dir.join("tmp"))?;
        tempfile::NamedTempFile::new_in(dir.join("tmp"))
    })?;
    let mut f = tmp.as_file();
    f.write_all(bytes)?;
    f.sync_data()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Credentials;

    fn src(version: &str, token: Option<&str>) -> ChartSource {
        ChartSource {
            root_url: "oci://r.example/c".into(),
            chart_name: "web".into(),
            chart_version: version.into(),
            credentials: Credentials {
                username: token.map(|_| "u".into()),
                auth_token: token.map(Into::into),
                ca_pem: None,
            },
        }
    }

    #[test]
    fn keys_cover_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let c = ChartCache::open(CacheConfig::new(dir.path())).unwrap();
        assert_ne!(c.ref_key(&src("1", None)), c.ref_key(&src("1", Some("t"))));
        assert_ne!(
            c.ref_key(&src("1", Some("a"))),
            c.ref_key(&src("1", Some("b")))
        );
        assert_ne!(c.ref_key(&src("1", None)), c.ref_key(&src("2", None)));
        assert_eq!(c.ref_key(&src("1", None)), c.ref_key(&src("1", None)));
        // The salt persists: the same key after reopening.
        let k = c.ref_key(&src("1", None));
        drop(c);
        let c = ChartCache::open(CacheConfig::new(dir.path())).unwrap();
        assert_eq!(c.ref_key(&src("1", None)), k);
    }

    #[test]
    fn insert_read_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let c = ChartCache::open(CacheConfig::new(dir.path())).unwrap();
        let d = c.insert("k", b"archive-bytes").unwrap();
        assert_eq!(c.lookup("k").unwrap().digest, d);
        assert_eq!(c.read(&d).unwrap(), b"archive-bytes");
        fs::write(c.blob_path(&d), b"tampered").unwrap();
        assert!(c.read(&d).is_none());
        assert!(!c.blob_path(&d).exists());
    }

    #[test]
    fn collects_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = CacheConfig::new(dir.path());
        cfg.max_bytes = 2500;
        let c = ChartCache::open(cfg).unwrap();
        let a = c.insert("a", &[1u8; 1000]).unwrap();
        let b = c.insert("b", &[2u8; 1000]).unwrap();
        // Make `a` the oldest, then use it: `b` becomes least recently used.
        let old = SystemTime::now() - Duration::from_secs(100);
        for d in [&a, &b] {
            fs::File::options()
                .write(true)
                .open(c.blob_path(d))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        fs::File::options()
            .write(true)
            .open(c.blob_path(&b))
            .unwrap()
            .set_modified(old - Duration::from_secs(10))
            .unwrap();
        assert!(c.read(&a).is_some());
        let d = c.insert("c", &[3u8; 1000]).unwrap();
        assert!(c.read(&a).is_some(), "recently used archive kept");
        assert!(c.read(&d).is_some(), "new archive kept");
        assert!(c.read(&b).is_none(), "least recently used archive removed");
        assert!(c.lookup("b").is_none(), "its ref removed too");
        assert!(c.total_bytes().unwrap() <= 2500);
    }
}
