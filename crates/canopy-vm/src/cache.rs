//! A content-addressed store of VM images (`<dir>/sha256/<hex>`).
//!
//! Images are named by the sha256 the spec promises, so two VMs (or two deployments) using the same
//! image share one file, and a file in the cache is always the content that was verified: the
//! checksum is computed while streaming into a temporary file that is renamed into place only when
//! it matches, and removed otherwise (also when the size cap is hit). Cached files are made
//! read-only; VMs write to qcow2 overlays on top of them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{ImageSource, VmError};

/// The default size cap for one image: 8 GiB.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 8 << 30;

/// Temporary files start with this; `gc` removes old ones (left by a crash mid-download).
const PARTIAL_PREFIX: &str = ".partial-";
const PARTIAL_STALE_AFTER: Duration = Duration::from_secs(3600);

/// HTTP basic credentials for image downloads. `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"********")
            .finish()
    }
}

/// The image cache of one edge.
#[derive(Debug, Clone)]
pub struct ImageCache {
    dir: PathBuf,
    max_bytes: u64,
    client: reqwest::Client,
}

impl ImageCache {
    /// A cache rooted at `dir` (created on first use), with the default 8 GiB cap per image.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Per read, not for the whole (possibly multi-GiB) transfer.
            .read_timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client with rustls builds");
        ImageCache {
            dir: dir.into(),
            max_bytes: DEFAULT_MAX_IMAGE_BYTES,
            client,
        }
    }

    /// Caps the size of one image; larger downloads fail and leave nothing behind.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the image with this checksum lives (whether or not it is cached yet).
    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join("sha256").join(sha256)
    }

    /// The image's path when it is in the cache already (its checksum checked first, as
    /// [`fetch`](Self::fetch) does); `None` when it still has to be fetched.
    pub async fn cached(&self, source: &ImageSource) -> Result<Option<PathBuf>, VmError> {
        let path = self.path_for(&checked_sha(source)?);
        Ok(tokio::fs::try_exists(&path)
            .await
            .unwrap_or(false)
            .then_some(path))
    }

    /// The image's path in the cache, downloading or copying it first when missing.
    pub async fn fetch(&self, source: &ImageSource) -> Result<PathBuf, VmError> {
        self.fetch_with_auth(source, None).await
    }

    /// [`fetch`](Self::fetch), sending HTTP basic credentials with an `http(s)` download (a
    /// private registry serving VM images). Never logged.
    pub async fn fetch_with_auth(
        &self,
        source: &ImageSource,
        auth: Option<&BasicAuth>,
    ) -> Result<PathBuf, VmError> {
        let sha = checked_sha(source)?;
        let path = self.path_for(&sha);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        let store = self.dir.join("sha256");
        tokio::fs::create_dir_all(&store)
            .await
            .map_err(VmError::io("cannot create image cache directory", &store))?;
        let partial = store.join(format!(
            "{PARTIAL_PREFIX}{sha}-{}-{}",
            std::process::id(),
            unique()
        ));
        let result = self.fetch_into(source, &sha, &partial, auth).await;
        match result {
            Ok(()) => {
                tokio::fs::rename(&partial, &path)
                    .await
                    .map_err(VmError::io("cannot move downloaded image to", &path))?;
                tracing::info!(url = %source.url, sha256 = %sha, "image cached");
                Ok(path)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(e)
            }
        }
    }

    async fn fetch_into(
        &self,
        source: &ImageSource,
        sha: &str,
        partial: &Path,
        auth: Option<&BasicAuth>,
    ) -> Result<(), VmError> {
        let url = &source.url;
        let mut out = tokio::fs::File::create(partial)
            .await
            .map_err(VmError::io("cannot create", partial))?;
        let mut sink = Sink {
            url,
            hasher: Sha256::new(),
            written: 0,
            max: self.max_bytes,
            out: &mut out,
            path: partial,
        };
        let parsed =
            reqwest::Url::parse(url).map_err(|_| VmError::UnsupportedUrl { url: url.clone() })?;
        match parsed.scheme() {
            "http" | "https" => {
                let download = |source| VmError::Download {
                    url: url.clone(),
                    source,
                };
                let mut request = self.client.get(parsed);
                if let Some(auth) = auth {
                    request = request.basic_auth(&auth.username, Some(&auth.password));
                }
                let mut response = request.send().await.map_err(download)?;
                if !response.status().is_success() {
                    return Err(VmError::HttpStatus {
                        url: url.clone(),
                        status: response.status().as_u16(),
                    });
                }
                if response
                    .content_length()
                    .is_some_and(|n| n > self.max_bytes)
                {
                    return Err(sink.too_large());
                }
                while let Some(chunk) = response.chunk().await.map_err(download)? {
                    sink.write(&chunk).await?;
                }
            }
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|()| VmError::UnsupportedUrl { url: url.clone() })?;
                let mut file = tokio::fs::File::open(&path)
                    .await
                    .map_err(VmError::io("cannot open image", &path))?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = file
                        .read(&mut buf)
                        .await
                        .map_err(VmError::io("cannot read image", &path))?;
                    if n == 0 {
                        break;
                    }
                    sink.write(&buf[..n]).await?;
                }
            }
            _ => return Err(VmError::UnsupportedUrl { url: url.clone() }),
        }
        let actual = format!("{:x}", sink.hasher.finalize());
        if actual != sha {
            return Err(VmError::ChecksumMismatch {
                url: url.clone(),
                expected: sha.to_string(),
                actual,
            });
        }
        out.flush()
            .await
            .map_err(VmError::io("cannot write", partial))?;
        out.sync_all()
            .await
            .map_err(VmError::io("cannot sync", partial))?;
        let mut perms = out
            .metadata()
            .await
            .map_err(VmError::io("cannot stat", partial))?
            .permissions();
        perms.set_readonly(true);
        tokio::fs::set_permissions(partial, perms)
            .await
            .map_err(VmError::io("cannot make read-only", partial))?;
        Ok(())
    }

    /// Removes cached images whose checksum is not in `in_use` (and stale partial downloads).
    /// Returns the removed checksums.
    pub async fn gc(&self, in_use: &[&str]) -> Result<Vec<String>, VmError> {
        let store = self.dir.join("sha256");
        let mut entries = match tokio::fs::read_dir(&store).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(VmError::io("cannot list", &store)(e)),
        };
        let mut removed = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(VmError::io("cannot list", &store))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(PARTIAL_PREFIX) {
                let old = entry
                    .metadata()
                    .await
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > PARTIAL_STALE_AFTER);
                if old {
                    let _ = tokio::fs::remove_file(&path).await;
                }
                continue;
            }
            if in_use.iter().any(|sha| sha.eq_ignore_ascii_case(&name)) {
                continue;
            }
            tokio::fs::remove_file(&path)
                .await
                .map_err(VmError::io("cannot remove cached image", &path))?;
            tracing::info!(sha256 = %name, "unused image removed from cache");
            removed.push(name);
        }
        removed.sort();
        Ok(removed)
    }
}

/// Hashes, counts and writes one download.
struct Sink<'a> {
    url: &'a str,
    hasher: Sha256,
    written: u64,
    max: u64,
    out: &'a mut tokio::fs::File,
    path: &'a Path,
}

impl Sink<'_> {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), VmError> {
        self.written += chunk.len() as u64;
        if self.written > self.max {
            return Err(self.too_large());
        }
        self.hasher.update(chunk);
        self.out
            .write_all(chunk)
            .await
            .map_err(VmError::io("cannot write", self.path))
    }

    fn too_large(&self) -> VmError {
        VmError::TooLarge {
            url: self.url.to_string(),
            limit_bytes: self.max,
        }
    }
}

fn checked_sha(source: &ImageSource) -> Result<String, VmError> {
    let sha = source.sha256.to_ascii_lowercase();
    if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha)
    } else {
        Err(VmError::InvalidChecksum {
            url: source.url.clone(),
            sha256: source.sha256.clone(),
        })
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
