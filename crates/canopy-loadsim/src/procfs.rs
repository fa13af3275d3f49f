//! What a process costs, read from `/proc` (Linux): CPU time, resident memory, sockets.
//! Used on the server child (by pid) and on the simulator itself.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// A process observed through `/proc/<pid>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pid: Option<u32>,
}

/// CPU time of a process at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    /// User + system CPU seconds since the process started.
    pub cpu_seconds: f64,
    pub at: Instant,
}

impl CpuSample {
    /// CPU used since `earlier`, as a percentage of one core.
    pub fn percent_since(&self, earlier: &CpuSample) -> f64 {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        100.0 * (self.cpu_seconds - earlier.cpu_seconds) / wall
    }
}

/// Memory and sockets of a process at one instant.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Footprint {
    /// Resident memory (`VmRSS`), MiB.
    pub rss_mib: f64,
    /// Peak resident memory so far (`VmHWM`), MiB.
    pub peak_rss_mib: f64,
    pub threads: u64,
    /// Open file descriptors that are sockets.
    pub sockets: u64,
}

impl Proc {
    /// The process `pid`.
    pub fn pid(pid: u32) -> Proc {
        Proc { pid: Some(pid) }
    }

    /// This process.
    pub fn current() -> Proc {
        Proc { pid: None }
    }

    fn dir(&self) -> PathBuf {
        match self.pid {
            Some(p) => PathBuf::from(format!("/proc/{p}")),
            None => PathBuf::from("/proc/self"),
        }
    }

    /// User + system CPU seconds so far (`utime` + `stime` of `/proc/<pid>/stat`).
    pub fn cpu(&self) -> std::io::Result<CpuSample> {
        let text = std::fs::read_to_string(self.dir().join("stat"))?;
        let at = Instant::now();
        // The command name (field 2) is in parentheses and may contain spaces: count fields
        // after its closing parenthesis, where field 3 (state) is index 0.
        let rest = text
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| std::io::Error::other("unreadable /proc stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> std::io::Result<u64> {
            fields
                .get(n - 3)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("no field {n} in /proc stat")))
        };
        let ticks = field(14)? + field(15)?;
        Ok(CpuSample {
            cpu_seconds: ticks as f64 / clock_ticks(),
            at,
        })
    }

    /// Resident memory, peak, threads and sockets right now.
    pub fn footprint(&self) -> std::io::Result<Footprint> {
        let status = std::fs::read_to_string(self.dir().join("status"))?;
        let kib = |key: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let threads = kib("Threads:") as u64;
        let mut sockets = 0;
        for entry in std::fs::read_dir(self.dir().join("fd"))?.flatten() {
            if std::fs::read_link(entry.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
            {
                sockets += 1;
            }
        }
        Ok(Footprint {
            rss_mib: kib("VmRSS:") / 1024.0,
            peak_rss_mib: kib("VmHWM:") / 1024.0,
            threads,
            sockets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_measured() {
        let me = Proc::current();
        let a = me.cpu().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let b = me.cpu().unwrap();
        assert!(b.cpu_seconds >= a.cpu_seconds);
        let f = me.footprint().unwrap();
        assert!(f.rss_mib > 1.0, "{f:?}");
        assert!(f.peak_rss_mib >= f.rss_mib, "{f:?}");
        assert!(f.threads >= 1);
    }
}
