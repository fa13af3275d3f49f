//! Finding the Helm CLI and checking its version. The control plane calls
//! [`HelmBinary::locate`] at start, so a missing or unsupported Helm is reported then, with
//! what to do, rather than at the first deployment of a chart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Oldest Helm 3 release accepted (`helm template --skip-tests` and `--no-hooks` behave as
/// documented from there on).
pub const MIN_HELM3_MINOR: u32 = 8;

/// How to install Helm, for error messages.
pub const INSTALL_HINT: &str = "install Helm 3 (3.8 or later) or Helm 4 \
     (https://helm.sh/docs/intro/install/, or scripts/helm.sh in a Canopy checkout) and put \
     `helm` on PATH, or give Canopy its path";

/// Why the Helm CLI cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelmError {
    #[error("the Helm CLI was not found ({searched}); {INSTALL_HINT}")]
    NotFound { searched: String },
    #[error("the Helm CLI at {path} could not be run: {message}; {INSTALL_HINT}")]
    NotRunnable { path: String, message: String },
    #[error(
        "the Helm CLI at {path} is version {version}, which Canopy does not support; {INSTALL_HINT}"
    )]
    Unsupported { path: String, version: String },
}

/// A Helm version (`v3.18.0` → 3, 18, 0).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HelmVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for HelmVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl HelmVersion {
    /// Reads `v3.18.0` (a `+build` or `-pre` suffix is ignored).
    pub fn parse(text: &str) -> Option<HelmVersion> {
        let t = text.trim().strip_prefix('v').unwrap_or(text.trim());
        let core = t.split(['+', '-']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        Some(HelmVersion {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next().flatten().unwrap_or(0),
        })
    }

    /// Whether Canopy renders with this version.
    pub fn is_supported(&self) -> bool {
        (self.major == 3 && self.minor >= MIN_HELM3_MINOR) || self.major == 4
    }
}

/// A checked Helm CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmBinary {
    path: PathBuf,
    version: HelmVersion,
}

impl HelmBinary {
    /// Finds Helm (`explicit`, else `helm` on PATH), runs `helm version` (20 s at most) and
    /// checks the version.
    pub async fn locate(explicit: Option<&Path>) -> Result<HelmBinary, HelmError> {
        let path = match explicit {
            Some(p) => {
                if !p.exists() {
                    return Err(HelmError::NotFound {
                        searched: format!("{} does not exist", p.display()),
                    });
                }
                p.to_path_buf()
            }
            None => which::which("helm").map_err(|_| HelmError::NotFound {
                searched: "no `helm` on PATH".into(),
            })?,
        };
        let shown = path.display().to_string();
        let not_runnable = |message: String| HelmError::NotRunnable {
            path: shown.clone(),
            message,
        };
        let home = tempfile::tempdir().map_err(|e| not_runnable(e.to_string()))?;
        let mut child = tokio::process::Command::new(&path)
            .args(["version", "--template", "{{.Version}}"])
            .env_clear()
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| not_runnable(e.to_string()))?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut out = Vec::new();
        let run = async {
            (&mut stdout)
                .take(4096)
                .read_to_end(&mut out)
                .await
                .map_err(|e| e.to_string())?;
            child.wait().await.map_err(|e| e.to_string())
        };
        let status = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .map_err(|_| not_runnable("`helm version` did not answer within 20 s".into()))?
            .map_err(not_runnable)?;
        if !status.success() {
            return Err(not_runnable(format!("`helm version` exited with {status}")));
        }
        let text = String::from_utf8_lossy(&out).trim().to_string();
        let version = HelmVersion::parse(&text).ok_or_else(|| HelmError::Unsupported {
            path: shown.clone(),
            version: format!("{:?}", text.chars().take(60).collect::<String>()),
        })?;
        if !version.is_supported() {
            return Err(HelmError::Unsupported {
                path: shown,
                version: version.to_string(),
            });
        }
        Ok(HelmBinary { path, version })
    }

    /// The binary's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its version.
    pub fn version(&self) -> &HelmVersion {
        &self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = HelmVersion::parse("v3.18.0").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (3, 18, 0));
        assert!(v.is_supported());
        assert!(
            HelmVersion::parse("v4.1.4+g05fa379")
                .unwrap()
                .is_supported()
        );
        assert!(!HelmVersion::parse("v3.7.2").unwrap().is_supported());
        assert!(!HelmVersion::parse("v2.17.0").unwrap().is_supported());
        assert!(!HelmVersion::parse("v5.0.0").unwrap().is_supported());
        assert!(HelmVersion::parse("nonsense").is_none());
    }
}
