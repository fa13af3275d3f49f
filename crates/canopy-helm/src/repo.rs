//! Classic chart repositories: `<rootUrl>/index.yaml` names each chart's versions and the URL of
//! their archives (absolute, or relative to the repository). Credentials go as HTTP basic auth,
//! to the index and to archive URLs on the same origin only (Helm's default without
//! `--pass-credentials`).
//!
//! Index files of public repositories are large (tens of MB, hundreds of thousands of nodes),
//! beyond what the catalog's YAML reader accepts for user files, so they are read with their
//! own budget here: bounded bytes, nodes and depth, aliases limited as everywhere.

use std::collections::BTreeMap;

use base64::Engine as _;
use reqwest::header::AUTHORIZATION;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::http::{error_text, read_bounded, transport};
use crate::source::ChartSource;
use crate::{FetchError, FetchLimits};

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    entries: BTreeMap<String, Vec<Entry>>,
}

#[derive(Deserialize)]
pub(crate) struct Entry {
    #[serde(default)]
    pub(crate) version: String,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    digest: String,
}

/// Most YAML nodes read from an `index.yaml`.
const INDEX_MAX_NODES: usize = 4_000_000;

fn index_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = 32;
    budget.max_documents = 1;
    budget.max_nodes = INDEX_MAX_NODES;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_events = 4 * INDEX_MAX_NODES;
    budget.max_recorded_anchor_events = 100_000;
    budget.max_recorded_anchor_bytes = 4 * 1024 * 1024;
    let mut opts = serde_saphyr::Options::default();
    opts.budget = Some(budget);
    opts.alias_limits.max_total_replayed_events = 100_000;
    opts.alias_limits.max_replay_stack_depth = 16;
    opts.with_snippet = false;
    opts.emit_comments = false;
    opts
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The versions the repository's index lists for the chart.
pub(crate) async fn versions(
    src: &ChartSource,
    limits: &FetchLimits,
    client: &reqwest::Client,
    index_url: &Url,
    base: &Url,
) -> Result<Vec<String>, FetchError> {
    let (_, entries) = index_entries(src, limits, client, index_url, base).await?;
    Ok(entries.into_iter().map(|e| e.version).collect())
}

/// The error for an unsuccessful answer.
fn status_error(
    src: &ChartSource,
    registry: &str,
    with_credentials: bool,
    status: StatusCode,
    what: &str,
    text: String,
) -> FetchError {
    let (chart, version) = (src.chart_name.clone(), src.chart_version.clone());
    let registry = registry.to_string();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if with_credentials => {
            FetchError::CredentialsRefused {
                chart,
                version,
                registry,
            }
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => FetchError::AuthRequired {
            chart,
            version,
            registry,
        },
        StatusCode::NOT_FOUND => FetchError::NotFound {
            chart,
            version,
            registry,
            detail: format!("{what} not found"),
        },
        s if s.is_server_error() => FetchError::Unreachable {
            chart,
            version,
            registry,
            message: format!("{what} request answered {s}"),
        },
        s => FetchError::Protocol {
            chart,
            version,
            registry,
            message: format!("{what} request answered {s}: {text}"),
        },
    }
}

/// The names of the charts the repository's index lists.
pub(crate) async fn names(
    src: &ChartSource,
    limits: &FetchLimits,
    client: &reqwest::Client,
    index_url: &Url,
    base: &Url,
) -> Result<Vec<String>, FetchError> {
    let (_, index) = read_index(src, limits, client, index_url, base).await?;
    Ok(index.entries.into_keys().collect())
}

/// Reads the repository's index and returns the chart's entries (and the basic-auth header
/// used, for the archive request).
async fn index_entries(
    src: &ChartSource,
    limits: &FetchLimits,
    client: &reqwest::Client,
    index_url: &Url,
    base: &Url,
) -> Result<(Option<reqwest::header::HeaderValue>, Vec<Entry>), FetchError> {
    let (basic, index) = read_index(src, limits, client, index_url, base).await?;
    let Some(versions) = index
        .entries
        .into_iter()
        .find(|(k, _)| *k == src.chart_name)
        .map(|(_, v)| v)
    else {
        return Err(FetchError::NotFound {
            chart: src.chart_name.clone(),
            version: src.chart_version.clone(),
            registry: src.display_root(),
            detail: "no such chart in index.yaml".into(),
        });
    };
    Ok((basic, versions))
}

/// Reads the repository's index (and returns the basic-auth header used).
async fn read_index(
    src: &ChartSource,
    limits: &FetchLimits,
    client: &reqwest::Client,
    index_url: &Url,
    base: &Url,
) -> Result<(Option<reqwest::header::HeaderValue>, Index), FetchError> {
    let registry = src.display_root();
    let chart = || (src.chart_name.clone(), src.chart_version.clone());
    let basic = src.credentials.basic().map(|(u, t)| {
        let raw = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{t}"));
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Basic {raw}"))
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
        v.set_sensitive(true);
        v
    });
    let get = |url: &Url| {
        let mut req = client.get(url.clone());
        if let Some(b) = &basic
            && same_origin(url, base)
        {
            req = req.header(AUTHORIZATION, b.clone());
        }
        req
    };
    let status_error = |status: StatusCode, what: &str, text: String| {
        status_error(src, &registry, basic.is_some(), status, what, text)
    };

    let resp = get(index_url)
        .send()
        .await
        .map_err(|e| transport(src, &registry, &e))?;
    if !resp.status().is_success() {
        let s = resp.status();
        return Err(status_error(s, "index.yaml", error_text(resp).await));
    }
    let body = read_bounded(src, &registry, resp, limits.max_index_bytes, "index.yaml").await?;
    let text = String::from_utf8(body).map_err(|_| {
        let (chart, version) = chart();
        FetchError::Protocol {
            chart,
            version,
            registry: registry.clone(),
            message: "index.yaml is not UTF-8".into(),
        }
    })?;
    let index: Index =
        serde_saphyr::from_str_with_options(&text, index_options()).map_err(|e| {
            let (chart, version) = chart();
            FetchError::Protocol {
                chart,
                version,
                registry: registry.clone(),
                message: format!(
                    "index.yaml is not a chart repository index: {}",
                    e.to_string().chars().take(300).collect::<String>()
                ),
            }
        })?;
    Ok((basic, index))
}

/// Fetches the chart's archive from a repository: the index, then the archive it names.
/// Returns the archive bytes.
pub(crate) async fn fetch(
    src: &ChartSource,
    limits: &FetchLimits,
    client: &reqwest::Client,
    index_url: &Url,
    base: &Url,
) -> Result<Vec<u8>, FetchError> {
    let registry = src.display_root();
    let chart = || (src.chart_name.clone(), src.chart_version.clone());
    let (basic, versions) = index_entries(src, limits, client, index_url, base).await?;
    let get = |url: &Url| {
        let mut req = client.get(url.clone());
        if let Some(b) = &basic
            && same_origin(url, base)
        {
            req = req.header(AUTHORIZATION, b.clone());
        }
        req
    };
    let status_error = |status: StatusCode, what: &str, text: String| {
        status_error(src, &registry, basic.is_some(), status, what, text)
    };
    let Some(entry) = versions.iter().find(|e| e.version == src.chart_version) else {
        let (chart, version) = chart();
        let known: Vec<&str> = versions
            .iter()
            .take(10)
            .map(|e| e.version.as_str())
            .collect();
        return Err(FetchError::NotFound {
            chart,
            version,
            registry,
            detail: format!("versions in index.yaml include: {}", known.join(", ")),
        });
    };
    let raw_url = entry.urls.first().ok_or_else(|| {
        let (chart, version) = chart();
        FetchError::Protocol {
            chart,
            version,
            registry: registry.clone(),
            message: "index.yaml entry has no urls".into(),
        }
    })?;
    let url = base.join(raw_url).map_err(|_| {
        let (chart, version) = chart();
        FetchError::Protocol {
            chart,
            version,
            registry: registry.clone(),
            message: "index.yaml entry has an invalid URL".into(),
        }
    })?;
    if !matches!(url.scheme(), "https" | "http") {
        let (chart, version) = chart();
        return Err(FetchError::Protocol {
            chart,
            version,
            registry,
            message: format!("chart URL scheme {:?} is not http(s)", url.scheme()),
        });
    }
    let resp = get(&url)
        .send()
        .await
        .map_err(|e| transport(src, &registry, &e))?;
    if !resp.status().is_success() {
        let s = resp.status();
        return Err(status_error(s, "chart archive", error_text(resp).await));
    }
    let body = read_bounded(
        src,
        &registry,
        resp,
        limits.archive.max_compressed_bytes,
        "chart archive",
    )
    .await?;
    let digest = entry.digest.trim().to_ascii_lowercase();
    let digest = digest.strip_prefix("sha256:").unwrap_or(&digest);
    if !digest.is_empty() {
        let actual = format!("{:x}", Sha256::digest(&body));
        if actual != digest {
            let (chart, version) = chart();
            return Err(FetchError::DigestMismatch {
                chart,
                version,
                expected: format!("sha256:{digest}"),
                actual: format!("sha256:{actual}"),
            });
        }
    }
    Ok(body)
}
