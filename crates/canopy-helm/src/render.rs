//! Rendering a chart with `helm template`, under limits:
//!
//! - the chart is the checked archive from the cache, written into a private temporary
//!   directory (0700) with the values file (0600); Helm gets only those paths, an empty
//!   environment (`HOME` and Helm's directories inside the temporary directory, proxies pointing
//!   at a closed port) and `--no-hooks --skip-tests`, so it has nothing to fetch and no
//!   configuration of the host to read;
//! - values go only through the values file (JSON), never `--set`;
//! - time is bounded (the process is killed on timeout), memory too (`RLIMIT_DATA` set on the
//!   child with `prlimit` right after it starts, `GOMEMLIMIT` so Go collects before that; not
//!   `RLIMIT_AS`, which Go's up-front address-space reservations exceed below ~600 MiB), the
//!   size of files it may write (`RLIMIT_FSIZE`), and the output (reading stops and the process
//!   is killed past the bound); at most [`RenderLimits::max_concurrent`] Helm processes run at
//!   once;
//! - a failure carries Helm's own message (bounded, secret values masked) naming the chart;
//! - documents still annotated `helm.sh/hook` are dropped (and listed).
//!
//! Renders are keyed by [`render_key`] (chart digest, values, release, namespace), so callers
//! can render once per (deployment, application, values) and share the result.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::fetch::FetchedChart;
use crate::helm::HelmBinary;
use crate::manifest::{self, Document, ManifestError};
use crate::values::ChartValues;

/// Bounds on one render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderLimits {
    /// Wall time of one `helm template`.
    pub timeout: Duration,
    /// Largest rendered output (bytes).
    pub max_output_bytes: usize,
    /// Data segment (heap) of the Helm process (bytes): `RLIMIT_DATA`.
    pub max_memory_bytes: u64,
    /// Most Helm processes at once (others wait their turn).
    pub max_concurrent: usize,
    /// Most bytes of Helm's error output kept for messages.
    pub max_message_bytes: usize,
}

impl Default for RenderLimits {
    fn default() -> Self {
        RenderLimits {
            timeout: Duration::from_secs(30),
            max_output_bytes: 16 * 1024 * 1024,
            max_memory_bytes: 1024 * 1024 * 1024,
            max_concurrent: 2,
            max_message_bytes: 4096,
        }
    }
}

/// Why a chart did not render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// Release name or namespace is not a DNS label.
    #[error("chart {chart}:{version}: {message}")]
    Invalid {
        chart: String,
        version: String,
        message: String,
    },
    /// Helm refused: its message (bounded, secrets masked).
    #[error("chart {chart}:{version} failed to render: {message}")]
    Helm {
        chart: String,
        version: String,
        message: String,
    },
    #[error("chart {chart}:{version} did not render within {seconds} s (stopped)")]
    Timeout {
        chart: String,
        version: String,
        seconds: u64,
    },
    #[error("chart {chart}:{version} rendered more than {limit} bytes (stopped)")]
    OutputTooLarge {
        chart: String,
        version: String,
        limit: usize,
    },
    /// The output is not Kubernetes YAML.
    #[error("chart {chart}:{version}: {error}")]
    Manifest {
        chart: String,
        version: String,
        error: ManifestError,
    },
    /// Running Helm failed (temporary files, process).
    #[error("chart {chart}:{version}: cannot run helm: {message}")]
    Run {
        chart: String,
        version: String,
        message: String,
    },
}

/// The key of a render: what it depends on, hashed.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct RenderKey(String);

impl RenderKey {
    /// Hex sha256.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key of rendering `chart_digest` with `values` as `release` in `namespace`: equal inputs,
/// equal keys, whatever the order of the values' mappings.
pub fn render_key(
    chart_digest: &crate::ChartDigest,
    values: &Value,
    release: &str,
    namespace: &str,
) -> RenderKey {
    let mut h = Sha256::new();
    for part in [
        "canopy-helm-render/1",
        chart_digest.as_str(),
        release,
        namespace,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let mut canon = Vec::new();
    canonical_json(values, &mut canon);
    h.update(&canon);
    RenderKey(format!("{:x}", h.finalize()))
}

/// JSON with mapping keys sorted at every level (serde_json's map order depends on features
/// other crates turn on).
fn canonical_json(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            out.push(b'{');
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
                out.push(b':');
                canonical_json(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// A document that Helm still rendered with a `helm.sh/hook` annotation, dropped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DroppedHook {
    pub kind: String,
    pub name: String,
    pub template: String,
    pub hook: String,
}

/// A rendered chart.
#[derive(Debug, Clone)]
pub struct RenderedChart {
    /// What it was rendered from ([`render_key`]).
    pub key: RenderKey,
    /// Helm's output as it is (without hooks and tests): what a Kubernetes edge would apply.
    pub manifest: String,
    /// The objects, hooks removed.
    pub documents: Vec<Document>,
    /// Hook documents removed.
    pub dropped_hooks: Vec<DroppedHook>,
}

/// One request to render.
#[derive(Debug, Clone, Copy)]
pub struct RenderRequest<'a> {
    pub chart: &'a FetchedChart,
    /// The release name (`.Release.Name`): a DNS label of at most 53 characters.
    pub release: &'a str,
    /// The namespace (`.Release.Namespace`): a DNS label.
    pub namespace: &'a str,
    pub values: &'a ChartValues,
}

/// Renders charts with one Helm binary. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Renderer {
    helm: HelmBinary,
    limits: RenderLimits,
    slots: Arc<Semaphore>,
}

fn dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Renderer {
    pub fn new(helm: HelmBinary, limits: RenderLimits) -> Renderer {
        let slots = Arc::new(Semaphore::new(limits.max_concurrent.max(1)));
        Renderer {
            helm,
            limits,
            slots,
        }
    }

    /// The Helm binary used.
    pub fn helm(&self) -> &HelmBinary {
        &self.helm
    }

    /// Renders one chart (see the module doc).
    pub async fn render(&self, req: RenderRequest<'_>) -> Result<RenderedChart, RenderError> {
        let chart = || {
            (
                req.chart.chart_name.clone(),
                req.chart.chart_version.clone(),
            )
        };
        let run_err = |e: std::io::Error| {
            let (chart, version) = chart();
            RenderError::Run {
                chart,
                version,
                message: e.to_string(),
            }
        };
        if !dns_label(req.release, 53) {
            let (chart, version) = chart();
            return Err(RenderError::Invalid {
                chart,
                version,
                message: format!(
                    "release name {:?} must be a DNS label (lowercase letters, digits, '-') of at \
                     most 53 characters",
                    req.release
                ),
            });
        }
        if !dns_label(req.namespace, 63) {
            let (chart, version) = chart();
            return Err(RenderError::Invalid {
                chart,
                version,
                message: format!("namespace {:?} must be a DNS label", req.namespace),
            });
        }
        let key = render_key(
            &req.chart.digest,
            req.values.values(),
            req.release,
            req.namespace,
        );
        let _slot = self.slots.acquire().await.map_err(|e| {
            let (chart, version) = chart();
            RenderError::Run {
                chart,
                version,
                message: e.to_string(),
            }
        })?;

        let dir = tempfile::Builder::new()
            .prefix("canopy-helm-")
            .tempdir()
            .map_err(run_err)?;
        let chart_path = dir.path().join("chart.tgz");
        let values_path = dir.path().join("values.json");
        tokio::fs::write(&chart_path, req.chart.archive.as_slice())
            .await
            .map_err(run_err)?;
        {
            let mut f = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&values_path)
                .await
                .map_err(run_err)?;
            f.write_all(&serde_json::to_vec(req.values.values()).unwrap_or_default())
                .await
                .map_err(run_err)?;
            f.flush().await.map_err(run_err)?;
        }
        let home = dir.path().join("home");
        tokio::fs::create_dir(&home).await.map_err(run_err)?;
        let gomemlimit = (self.limits.max_memory_bytes / 2).max(64 * 1024 * 1024);
        let mut cmd = tokio::process::Command::new(self.helm.path());
        cmd.arg("template")
            .arg(req.release)
            .arg(&chart_path)
            .args(["--namespace", req.namespace, "--no-hooks", "--skip-tests"])
            .arg("--values")
            .arg(&values_path)
            .env_clear()
            .env("HOME", &home)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env("HELM_PLUGINS", home.join("plugins"))
            .env("KUBECONFIG", home.join("kubeconfig"))
            // Nothing should need the network; if something tries, it goes nowhere.
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("NO_PROXY", "")
            .env("GOMEMLIMIT", gomemlimit.to_string())
            .env("GOMAXPROCS", "2")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(run_err)?;
        if let Some(pid) = child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        {
            let limit = |n: u64| rustix::process::Rlimit {
                current: Some(n),
                maximum: Some(n),
            };
            if let Err(e) = rustix::process::prlimit(
                Some(pid),
                rustix::process::Resource::Data,
                limit(self.limits.max_memory_bytes),
            ) {
                tracing::warn!(error = %e, "could not bound helm's memory");
            }
            let _ = rustix::process::prlimit(
                Some(pid),
                rustix::process::Resource::Fsize,
                limit(64 * 1024 * 1024),
            );
        }
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let max_out = self.limits.max_output_bytes;
        let max_err = self.limits.max_message_bytes;

        enum Outcome {
            Done(std::io::Result<std::process::ExitStatus>),
            TooLarge,
        }
        let mut out = Vec::new();
        let mut err = Vec::new();
        let io = async {
            let mut out_open = true;
            let mut err_open = true;
            let mut b1 = vec![0u8; 64 * 1024];
            let mut b2 = vec![0u8; 8 * 1024];
            while out_open || err_open {
                tokio::select! {
                    r = stdout.read(&mut b1), if out_open => match r {
                        Ok(0) | Err(_) => out_open = false,
                        Ok(n) => {
                            if out.len() + n > max_out {
                                return Outcome::TooLarge;
                            }
                            out.extend_from_slice(&b1[..n]);
                        }
                    },
                    r = stderr.read(&mut b2), if err_open => match r {
                        Ok(0) | Err(_) => err_open = false,
                        Ok(n) => {
                            let room = (max_err + 1).saturating_sub(err.len());
                            err.extend_from_slice(&b2[..n.min(room)]);
                        }
                    },
                }
            }
            Outcome::Done(child.wait().await)
        };
        let outcome = tokio::time::timeout(self.limits.timeout, io).await;
        let (chart_name, version) = chart();
        let status = match outcome {
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(RenderError::Timeout {
                    chart: chart_name,
                    version,
                    seconds: self.limits.timeout.as_secs().max(1),
                });
            }
            Ok(Outcome::TooLarge) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(RenderError::OutputTooLarge {
                    chart: chart_name,
                    version,
                    limit: max_out,
                });
            }
            Ok(Outcome::Done(status)) => status.map_err(run_err)?,
        };
        if !status.success() {
            let mut message = String::from_utf8_lossy(&err[..err.len().min(max_err)]).to_string();
            if err.len() > max_err {
                message.push_str(" …");
            }
            let message = req
                .values
                .redact(message.trim().trim_start_matches("Error: "));
            let message = if message.is_empty() {
                format!("helm exited with {status}")
            } else if message.contains("out of memory") {
                format!(
                    "helm ran out of memory (limit {} MiB): {}",
                    self.limits.max_memory_bytes / (1024 * 1024),
                    message.lines().next().unwrap_or_default()
                )
            } else {
                message
            };
            return Err(RenderError::Helm {
                chart: chart_name,
                version,
                message,
            });
        }
        let text = String::from_utf8(out).map_err(|_| RenderError::Manifest {
            chart: chart_name.clone(),
            version: version.clone(),
            error: ManifestError::InvalidYaml {
                template: String::new(),
                message: "output is not UTF-8".into(),
            },
        })?;
        let all = manifest::parse(&text).map_err(|error| RenderError::Manifest {
            chart: chart_name.clone(),
            version: version.clone(),
            error: match error {
                ManifestError::InvalidYaml { template, message } => ManifestError::InvalidYaml {
                    template,
                    message: req.values.redact(&message),
                },
                e => e,
            },
        })?;
        let (documents, dropped_hooks) = drop_hooks(all);
        Ok(RenderedChart {
            key,
            manifest: text,
            documents,
            dropped_hooks,
        })
    }
}

/// Splits off the documents annotated `helm.sh/hook` (hooks and tests that `--no-hooks` and
/// `--skip-tests` did not remove).
pub(crate) fn drop_hooks(all: Vec<Document>) -> (Vec<Document>, Vec<DroppedHook>) {
    let mut documents = Vec::with_capacity(all.len());
    let mut dropped = Vec::new();
    for d in all {
        if let Some(hook) = d.annotation("helm.sh/hook") {
            dropped.push(DroppedHook {
                kind: d.kind().to_string(),
                name: d.name().to_string(),
                template: d.source.clone(),
                hook: hook.to_string(),
            });
        } else {
            documents.push(d);
        }
    }
    (documents, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hooks_are_dropped() {
        let docs = manifest::parse(
            "---\n# Source: c/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# Source: c/templates/t.yaml\napiVersion: v1\nkind: Pod\nmetadata:\n  name: t\n  annotations:\n    helm.sh/hook: test\n",
        )
        .unwrap();
        let (kept, dropped) = drop_hooks(docs);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].name(), "a");
        assert_eq!(
            dropped,
            vec![DroppedHook {
                kind: "Pod".into(),
                name: "t".into(),
                template: "c/templates/t.yaml".into(),
                hook: "test".into()
            }]
        );
    }

    #[test]
    fn keys_are_canonical_and_cover_every_input() {
        let d = crate::ChartDigest::of(b"chart");
        let a = render_key(
            &d,
            &json!({"a": 1, "b": {"c": [1, 2], "d": "x"}}),
            "r",
            "ns",
        );
        let b = render_key(
            &d,
            &json!({"b": {"d": "x", "c": [1, 2]}, "a": 1}),
            "r",
            "ns",
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            render_key(
                &d,
                &json!({"a": 2, "b": {"c": [1, 2], "d": "x"}}),
                "r",
                "ns"
            )
        );
        assert_ne!(
            a,
            render_key(
                &d,
                &json!({"a": 1, "b": {"c": [1, 2], "d": "x"}}),
                "r2",
                "ns"
            )
        );
        assert_ne!(
            a,
            render_key(
                &d,
                &json!({"a": 1, "b": {"c": [1, 2], "d": "x"}}),
                "r",
                "ns2"
            )
        );
        let d2 = crate::ChartDigest::of(b"other");
        assert_ne!(
            a,
            render_key(
                &d2,
                &json!({"a": 1, "b": {"c": [1, 2], "d": "x"}}),
                "r",
                "ns"
            )
        );
        // Release and namespace cannot be shifted into each other.
        assert_ne!(
            render_key(&d, &json!({}), "ab", "c"),
            render_key(&d, &json!({}), "a", "bc")
        );
    }

    #[test]
    fn dns_labels() {
        assert!(dns_label("web-1", 53));
        for bad in ["", "-x", "x-", "Web", "a_b", "--set", &"a".repeat(54)] {
            assert!(!dns_label(bad, 53), "{bad}");
        }
    }
}
