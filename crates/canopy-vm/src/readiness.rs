//! Evidence that a guest came up, as opposed to QEMU merely running.
//!
//! QMP's `running` only says that QEMU executes the virtual CPU: a guest stuck in its firmware,
//! or crawling under a broken accelerator, is `running` too. And a published port is no proof
//! either: QEMU's user-mode networking accepts every connection on a forwarded host port itself,
//! before (and whether or not) the guest answers. What does prove the guest runs:
//!
//! - **Serial output**: the guest wrote to its serial console since this start
//!   ([`VmHost::serial_output_since`] against the [`SerialMark`] taken before the start).
//! - **A published port answered by the guest**: bytes came back on a forwarded port
//!   ([`port_answers`]): a banner the guest's service sends first (SSH, SMTP), or the answer to
//!   an HTTP `HEAD /` sent after a moment of silence. A connection that QEMU accepts and then
//!   closes, or that stays silent, is not evidence.
//!
//! The agent's VM driver applies the rule and its boot timeout; this module only measures.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::VmHost;

/// What is sent to a published port that stays silent: a request HTTP servers answer, and that
/// most other services answer with an error (which is an answer too).
const PROBE_REQUEST: &[u8] = b"HEAD / HTTP/1.0\r\n\r\n";

/// Where a VM's serial log stood just before a start: what the guest printed since is past it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SerialMark {
    /// The log's length then (0 when there was none).
    pub len: u64,
    /// Its inode then (0 when there was none): a start that rotates the log makes a new file.
    pub ino: u64,
}

impl VmHost {
    /// The mark of VM `name`'s serial log now; take it before starting the VM.
    pub async fn serial_mark(&self, name: &str) -> SerialMark {
        match tokio::fs::metadata(self.serial_log(name)).await {
            Ok(m) => SerialMark {
                len: m.len(),
                ino: m.ino(),
            },
            Err(_) => SerialMark::default(),
        }
    }

    /// Whether the guest wrote to its serial console since `mark`: the log grew past it, or it
    /// is another (rotated) file with something in it.
    pub async fn serial_output_since(&self, name: &str, mark: SerialMark) -> bool {
        match tokio::fs::metadata(self.serial_log(name)).await {
            Ok(m) if m.ino() == mark.ino || mark.ino == 0 => m.len() > mark.len,
            Ok(m) => m.len() > 0,
            Err(_) => false,
        }
    }

    /// When the running QEMU of VM `name` was launched: its pidfile's modification time (QEMU
    /// writes it at start; a stale one is removed before each start). `None` without one.
    pub async fn started_at(&self, name: &str) -> Option<SystemTime> {
        tokio::fs::metadata(self.vm_dir(name).join("qemu.pid"))
            .await
            .ok()?
            .modified()
            .ok()
    }
}

/// Whether something behind `addr` (a published port of a VM) sends bytes within `within`:
/// first without a word from us, then after an HTTP `HEAD /`. An accepted connection that is
/// closed or stays silent is `false`: that is QEMU's user-mode networking answering for a guest
/// that does not.
pub async fn port_answers(addr: SocketAddr, within: Duration) -> bool {
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; 64];
        let quiet = within / 3;
        match tokio::time::timeout(quiet, conn.read(&mut buf)).await {
            Ok(Ok(n)) => return Some(n > 0),
            Ok(Err(_)) => return Some(false),
            Err(_) => {}
        }
        conn.write_all(PROBE_REQUEST).await.ok()?;
        match conn.read(&mut buf).await {
            Ok(n) => Some(n > 0),
            Err(_) => Some(false),
        }
    };
    matches!(tokio::time::timeout(within, attempt).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_bytes_from_the_other_side_count_as_an_answer() {
        let within = Duration::from_millis(900);
        // Speaks first (a banner).
        let banner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let banner_addr = banner.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = banner.accept().await {
                let _ = c.write_all(b"SSH-2.0-test\r\n").await;
            }
        });
        assert!(port_answers(banner_addr, within).await);

        // Answers a request (HTTP).
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = http.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    if c.read(&mut buf).await.unwrap_or(0) > 0 {
                        let _ = c.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
                    }
                });
            }
        });
        assert!(port_answers(http_addr, within).await);

        // Accepts and closes (QEMU's user networking when the guest refuses), accepts and says
        // nothing (QEMU's user networking when the guest is dead), nobody listening.
        let closes = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closes_addr = closes.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((c, _)) = closes.accept().await {
                drop(c);
            }
        });
        assert!(!port_answers(closes_addr, within).await);
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((c, _)) = silent.accept().await {
                held.push(c);
            }
        });
        let started = std::time::Instant::now();
        assert!(!port_answers(silent_addr, within).await);
        assert!(started.elapsed() < within + Duration::from_millis(500));
        held.abort();
        let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let nobody_addr = nobody.local_addr().unwrap();
        drop(nobody);
        assert!(!port_answers(nobody_addr, within).await);
    }

    #[tokio::test]
    async fn serial_output_counts_from_the_mark_and_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let host = VmHost::new(dir.path());
        std::fs::create_dir_all(host.vm_dir("vm")).unwrap();
        let log = host.serial_log("vm");
        // No log yet: anything written later is new.
        let none = host.serial_mark("vm").await;
        assert_eq!(none, SerialMark::default());
        assert!(!host.serial_output_since("vm", none).await);
        std::fs::write(&log, "old boot\n").unwrap();
        assert!(host.serial_output_since("vm", none).await);
        // A mark after the old boot: nothing new until the log grows.
        let mark = host.serial_mark("vm").await;
        assert!(!host.serial_output_since("vm", mark).await);
        std::fs::write(&log, "old boot\nnew").unwrap();
        assert!(host.serial_output_since("vm", mark).await);
        // Rotated at the start: the new, empty file is silence; one byte is output.
        let mark = host.serial_mark("vm").await;
        std::fs::rename(&log, log.with_extension("log.1")).unwrap();
        std::fs::write(&log, "").unwrap();
        assert!(!host.serial_output_since("vm", mark).await);
        std::fs::write(&log, "x").unwrap();
        assert!(host.serial_output_since("vm", mark).await);
    }
}
