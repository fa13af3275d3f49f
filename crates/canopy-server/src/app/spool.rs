//! The upload spool: temporary files on disk that hold upload bodies while they are received
//! and processed, so that the server's memory does not grow with the number or size of the
//! uploads in flight.
//!
//! - **Bounded.** Every byte written counts against one budget for the whole process
//!   ([`Spool::budget`]); a write that would pass it fails with [`SpoolError::Full`], which the
//!   API answers with 503 and `Retry-After` (the spool empties as uploads finish).
//! - **Cleaned up on every path.** A [`SpoolFile`] deletes its file and returns its bytes to the
//!   budget when dropped: when the upload is done, when it fails, and when the client goes away
//!   (the request's future is dropped). Files are named `.canopy-upload-*`; a starting server
//!   deletes the ones a killed process left behind, and nothing else, so pointing the spool at
//!   a shared directory such as `/tmp` is safe.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use super::AppError;

/// Prefix of every spool file name (what a starting server cleans up).
const PREFIX: &str = ".canopy-upload-";

/// Seconds a client is asked to wait when the spool is full.
pub const SPOOL_FULL_RETRY_AFTER_SECS: u64 = 5;

/// Why a spool file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(
        "the server is receiving or processing as many uploads as its upload spool holds ({budget} bytes); retry in a few seconds"
    )]
    Full { budget: u64 },
    #[error("upload spool {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<SpoolError> for AppError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::Full { .. } => AppError::Busy {
                message: e.to_string(),
                retry_after: SPOOL_FULL_RETRY_AFTER_SECS,
            },
            SpoolError::Io { .. } => AppError::Internal(e.to_string()),
        }
    }
}

/// An I/O error from writing a spool file: a full spool (as raised by the writers here) stays
/// a [`SpoolError::Full`], anything else names the spool directory.
pub(crate) fn spool_io_error(dir: &Path, e: io::Error) -> SpoolError {
    let full = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<SpoolError>())
        .and_then(|s| match s {
            SpoolError::Full { budget } => Some(*budget),
            SpoolError::Io { .. } => None,
        });
    match full {
        Some(budget) => SpoolError::Full { budget },
        None => SpoolError::Io {
            dir: dir.to_path_buf(),
            source: e,
        },
    }
}

/// The spool of one process; cheap to clone.
#[derive(Clone, Debug)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    budget: u64,
    used: AtomicU64,
    /// A directory of our own when none was configured (removed with the last clone).
    _owned: Option<tempfile::TempDir>,
}

impl Spool {
    /// Opens the spool in `dir` (created if missing; spool files a previous process left
    /// there are deleted), or in a new temporary directory of its own when `dir` is `None`.
    pub fn open(dir: Option<&Path>, budget: u64) -> Result<Spool, SpoolError> {
        let (dir, owned) = match dir {
            Some(d) => {
                let io = |source| SpoolError::Io {
                    dir: d.to_path_buf(),
                    source,
                };
                std::fs::create_dir_all(d).map_err(io)?;
                let mut removed = 0u32;
                for entry in std::fs::read_dir(d).map_err(io)? {
                    let entry = entry.map_err(io)?;
                    if entry.file_name().to_string_lossy().starts_with(PREFIX)
                        && entry.file_type().is_ok_and(|t| t.is_file())
                    {
                        std::fs::remove_file(entry.path()).map_err(io)?;
                        removed += 1;
                    }
                }
                if removed > 0 {
                    tracing::info!(dir = %d.display(), files = removed, "removed upload spool files left by an earlier run");
                }
                (d.to_path_buf(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix(".canopy-upload-spool-")
                    .tempdir()
                    .map_err(|source| SpoolError::Io {
                        dir: std::env::temp_dir(),
                        source,
                    })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        Ok(Spool {
            inner: Arc::new(Inner {
                dir,
                budget,
                used: AtomicU64::new(0),
                _owned: owned,
            }),
        })
    }

    /// The directory spool files are written to.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Most bytes the spool holds at once.
    pub fn budget(&self) -> u64 {
        self.inner.budget
    }

    /// Bytes held right now.
    pub fn used(&self) -> u64 {
        self.inner.used.load(Ordering::Acquire)
    }

    /// Counts `n` more bytes against the budget, or refuses.
    fn reserve(&self, n: u64) -> Result<(), SpoolError> {
        let budget = self.inner.budget;
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= budget)
            })
            .map(|_| ())
            .map_err(|_| SpoolError::Full { budget })
    }

    fn release(&self, n: u64) {
        self.inner.used.fetch_sub(n, Ordering::AcqRel);
    }

    fn create_file(&self) -> Result<(std::fs::File, tempfile::TempPath), SpoolError> {
        let named = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempfile_in(&self.inner.dir)
            .map_err(|source| SpoolError::Io {
                dir: self.inner.dir.clone(),
                source,
            })?;
        Ok(named.into_parts())
    }

    /// A new, empty spool file written from async code.
    pub fn create_async(&self) -> Result<AsyncSpoolWriter, SpoolError> {
        let (file, path) = self.create_file()?;
        Ok(AsyncSpoolWriter {
            out: tokio::io::BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file)),
            file: SpoolFile {
                path,
                len: 0,
                reserved: 0,
                spool: self.clone(),
            },
        })
    }

    /// A new, empty spool file written from blocking code.
    pub fn create_blocking(&self) -> Result<SpoolWriter, SpoolError> {
        let (file, path) = self.create_file()?;
        Ok(SpoolWriter {
            out: io::BufWriter::with_capacity(WRITE_BUFFER, file),
            file: SpoolFile {
                path,
                len: 0,
                reserved: 0,
                spool: self.clone(),
            },
        })
    }
}

/// Write buffer of a spool file.
const WRITE_BUFFER: usize = 256 * 1024;

/// A finished spool file: deleted, and its bytes returned to the budget, when dropped.
#[derive(Debug)]
pub struct SpoolFile {
    path: tempfile::TempPath,
    len: u64,
    /// Bytes counted against the budget (at least `len`).
    reserved: u64,
    spool: Spool,
}

impl SpoolFile {
    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file for reading (blocking code).
    pub fn open(&self) -> Result<std::fs::File, SpoolError> {
        std::fs::File::open(&self.path).map_err(|source| SpoolError::Io {
            dir: self.spool.dir().to_path_buf(),
            source,
        })
    }

    /// Opens the file for reading (async code).
    pub async fn open_async(&self) -> Result<tokio::fs::File, SpoolError> {
        tokio::fs::File::open(&self.path)
            .await
            .map_err(|source| SpoolError::Io {
                dir: self.spool.dir().to_path_buf(),
                source,
            })
    }

    /// Counts `n` more bytes against the budget unless they already are.
    fn reserve_to(&mut self, total: u64) -> Result<(), SpoolError> {
        if total > self.reserved {
            self.spool.reserve(total - self.reserved)?;
            self.reserved = total;
        }
        Ok(())
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        self.spool.release(self.reserved);
        // The TempPath field deletes the file.
    }
}

/// Writes a spool file from async code (an upload body as it arrives, a session file read
/// back from the store). Implements [`AsyncWrite`]; every byte is counted against the budget
/// before it is written.
#[derive(Debug)]
pub struct AsyncSpoolWriter {
    out: tokio::io::BufWriter<tokio::fs::File>,
    file: SpoolFile,
}

impl AsyncSpoolWriter {
    /// Counts `n` bytes against the budget now (for content of a known size), so the writes
    /// that follow cannot fail for lack of room.
    pub fn reserve(&mut self, n: u64) -> Result<(), SpoolError> {
        self.file.reserve_to(self.file.len + n)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.file.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.file.len == 0
    }

    /// Writes the buffered rest and returns the finished file.
    pub async fn finish(mut self) -> Result<SpoolFile, SpoolError> {
        use tokio::io::AsyncWriteExt as _;
        self.out
            .flush()
            .await
            .map_err(|e| spool_io_error(self.file.spool.dir(), e))?;
        Ok(self.file)
    }
}

impl AsyncWrite for AsyncSpoolWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.file.reserve_to(this.file.len + buf.len() as u64) {
            return Poll::Ready(Err(io::Error::other(e)));
        }
        match Pin::new(&mut this.out).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.file.len += n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().out).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().out).poll_shutdown(cx)
    }
}

/// Writes a spool file from blocking code (a session upload's decoded content). Every byte is
/// counted against the budget before it is written.
#[derive(Debug)]
pub struct SpoolWriter {
    out: io::BufWriter<std::fs::File>,
    file: SpoolFile,
}

impl SpoolWriter {
    /// Writes the buffered rest and returns the finished file.
    pub fn finish(mut self) -> Result<SpoolFile, SpoolError> {
        self.out
            .flush()
            .map_err(|e| spool_io_error(self.file.spool.dir(), e))?;
        Ok(self.file)
    }
}

impl Write for SpoolWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file
            .reserve_to(self.file.len + buf.len() as u64)
            .map_err(io::Error::other)?;
        let n = self.out.write(buf)?;
        self.file.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_shared_and_returned_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(Some(dir.path()), 100).unwrap();
        let mut a = spool.create_blocking().unwrap();
        a.write_all(&[1; 60]).unwrap();
        let a = a.finish().unwrap();
        assert_eq!((a.len(), spool.used()), (60, 60));
        let mut b = spool.create_blocking().unwrap();
        let err = b.write_all(&[2; 50]).unwrap_err();
        assert!(matches!(
            spool_io_error(spool.dir(), err),
            SpoolError::Full { budget: 100 }
        ));
        let path = a.path().to_path_buf();
        assert!(path.exists());
        drop(a);
        drop(b);
        assert!(!path.exists(), "a dropped spool file is deleted");
        assert_eq!(spool.used(), 0, "and its bytes are returned");
    }

    #[test]
    fn leftovers_of_an_earlier_run_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".canopy-upload-abc123"), b"old").unwrap();
        std::fs::write(dir.path().join("unrelated.txt"), b"keep").unwrap();
        let _spool = Spool::open(Some(dir.path()), 100).unwrap();
        assert!(!dir.path().join(".canopy-upload-abc123").exists());
        assert!(dir.path().join("unrelated.txt").exists());
    }
}
