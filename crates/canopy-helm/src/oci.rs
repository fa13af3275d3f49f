//! Pulling a chart from an OCI registry (the distribution API): the manifest of
//! `<repository>:<tag>`, then the one layer of type
//! `application/vnd.cncf.helm.chart.content.v1.tar+gzip`, checked against its digest.
//!
//! Written here rather than with the `oci-client` crate: its current version brings a second
//! HTTP stack (reqwest 0.13, whose rustls feature builds aws-lc-rs) beside the workspace's, the
//! one on reqwest 0.12 pulls an older JWT stack and `oci-spec`'s builders, and both read
//! manifests, token answers and tag lists whole without any bound. A chart pull needs three
//! requests and the token dance; every body here is read with a limit.
//!
//! Authentication follows the registry's `WWW-Authenticate` challenge: `Basic` (Debian's
//! `docker-registry` with htpasswd) sends the registry's username and authToken; `Bearer`
//! (Harbor, Docker Hub, GHCR) exchanges them at the token realm for a pull token.

use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::http::{error_text, read_bounded, transport};
use crate::source::ChartSource;
use crate::{FetchError, FetchLimits};

/// Media type of a Helm chart's OCI config.
pub const HELM_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";
/// Media type of a Helm chart's content layer.
pub const HELM_CHART_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// The content layer type of charts pushed by early Helm 3 versions.
const LEGACY_CHART_MEDIA_TYPE: &str = "application/tar+gzip";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Largest manifest accepted (the OCI distribution spec's suggested bound is 4 MiB; a chart's is
/// under 1 KiB).
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// Largest token answer accepted.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: String,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
}

/// One pull from one registry: its client and the authorization earned so far.
pub(crate) struct Session<'a> {
    src: &'a ChartSource,
    limits: &'a FetchLimits,
    client: reqwest::Client,
    /// `https://host[:port]` (or `http://` for plain-HTTP registries).
    base: String,
    /// For messages: `oci://host[:port]`.
    registry: String,
    repository: String,
    /// The token scope asked for at a `Bearer` realm.
    scope: String,
    auth: Option<HeaderValue>,
}

/// What the manifest says about the chart: the content layer's digest and size.
pub(crate) struct ChartLayer {
    pub digest: String,
    pub size: u64,
}

impl<'a> Session<'a> {
    pub(crate) fn new(
        src: &'a ChartSource,
        limits: &'a FetchLimits,
        client: reqwest::Client,
        host: &str,
        repository: &str,
        plain_http: bool,
    ) -> Session<'a> {
        let scheme = if plain_http { "http" } else { "https" };
        Session {
            src,
            limits,
            client,
            base: format!("{scheme}://{host}"),
            registry: format!("oci://{host}"),
            repository: repository.to_string(),
            scope: format!("repository:{repository}:pull"),
            auth: None,
        }
    }

    /// A session for the registry as a whole (its `_catalog`), not one repository.
    pub(crate) fn registry_wide(mut self) -> Self {
        self.scope = "registry:catalog:*".to_string();
        self
    }

    fn chart(&self) -> (String, String) {
        (self.src.chart_name.clone(), self.src.chart_version.clone())
    }

    fn protocol(&self, message: impl Into<String>) -> FetchError {
        let (chart, version) = self.chart();
        FetchError::Protocol {
            chart,
            version,
            registry: self.registry.clone(),
            message: message.into(),
        }
    }

    fn refused(&self) -> FetchError {
        let (chart, version) = self.chart();
        if self.src.credentials.basic().is_some() {
            FetchError::CredentialsRefused {
                chart,
                version,
                registry: self.registry.clone(),
            }
        } else {
            FetchError::AuthRequired {
                chart,
                version,
                registry: self.registry.clone(),
            }
        }
    }

    fn basic_header(&self) -> Option<HeaderValue> {
        let (user, token) = self.src.credentials.basic()?;
        let raw = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
        let mut v = HeaderValue::from_str(&format!("Basic {raw}")).ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    /// GET `path` (relative to `/v2/<repository>/`), answering the registry's challenge once.
    async fn get(&mut self, path: &str, accept: &str) -> Result<reqwest::Response, FetchError> {
        let full = format!("{}/{path}", self.repository);
        self.get_v2(&full, accept).await
    }

    /// GET `path` (relative to `/v2/`), answering the registry's challenge once.
    async fn get_v2(&mut self, path: &str, accept: &str) -> Result<reqwest::Response, FetchError> {
        let url = format!("{}/v2/{path}", self.base);
        for attempt in 0..2 {
            let mut req = self.client.get(&url).header(ACCEPT, accept);
            if let Some(a) = &self.auth {
                req = req.header(AUTHORIZATION, a.clone());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| transport(self.src, &self.registry, &e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if attempt == 1 || self.auth.is_some() {
                return Err(self.refused());
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            self.auth = Some(self.answer(&challenge).await?);
        }
        Err(self.refused())
    }

    /// The `Authorization` header that answers a `WWW-Authenticate` challenge.
    async fn answer(&self, challenge: &str) -> Result<HeaderValue, FetchError> {
        let challenges = http_auth::parse_challenges(challenge)
            .map_err(|_| self.protocol("unreadable WWW-Authenticate challenge"))?;
        if let Some(bearer) = challenges
            .iter()
            .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        {
            let param = |name: &str| {
                bearer
                    .params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            let realm =
                param("realm").ok_or_else(|| self.protocol("Bearer challenge without a realm"))?;
            return self.token(&realm, param("service")).await;
        }
        if challenges
            .iter()
            .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
        {
            return self.basic_header().ok_or_else(|| self.refused());
        }
        Err(self.protocol("registry asks for an unsupported authentication scheme"))
    }

    /// Exchanges the credentials (or nothing, for anonymous pulls) for a pull token.
    async fn token(&self, realm: &str, service: Option<String>) -> Result<HeaderValue, FetchError> {
        let mut url =
            reqwest::Url::parse(realm).map_err(|_| self.protocol("Bearer realm is not a URL"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(self.protocol("Bearer realm is not an http(s) URL"));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", &s);
            }
            q.append_pair("scope", &self.scope);
        }
        let mut req = self.client.get(url);
        if let Some(basic) = self.basic_header() {
            req = req.header(AUTHORIZATION, basic);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport(self.src, &self.registry, &e))?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(self.refused()),
            s if s.is_server_error() => return Err(self.unavailable(s)),
            s => {
                let text = error_text(resp).await;
                return Err(self.protocol(format!("token request answered {s}: {text}")));
            }
        }
        let body = read_bounded(
            self.src,
            &self.registry,
            resp,
            MAX_TOKEN_BYTES,
            "token answer",
        )
        .await?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| self.protocol("token answer is not the expected JSON"))?;
        let token = if answer.token.is_empty() {
            answer.access_token
        } else {
            answer.token
        };
        if token.is_empty() {
            return Err(self.protocol("token answer holds no token"));
        }
        let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| self.protocol("token is not a valid header value"))?;
        v.set_sensitive(true);
        Ok(v)
    }

    fn unavailable(&self, status: StatusCode) -> FetchError {
        let (chart, version) = self.chart();
        FetchError::Unreachable {
            chart,
            version,
            registry: self.registry.clone(),
            message: format!("answered {status}"),
        }
    }

    fn not_found(&self, detail: String) -> FetchError {
        let (chart, version) = self.chart();
        FetchError::NotFound {
            chart,
            version,
            registry: self.registry.clone(),
            detail,
        }
    }

    /// Reads the manifest of `tag` and finds the chart's content layer in it.
    pub(crate) async fn chart_layer(&mut self, tag: &str) -> Result<ChartLayer, FetchError> {
        let resp = self.get(&format!("manifests/{tag}"), OCI_MANIFEST).await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => {
                return Err(self.not_found(format!("no tag {tag} in {}", self.repository)));
            }
            StatusCode::FORBIDDEN => return Err(self.refused()),
            s if s.is_server_error() => return Err(self.unavailable(s)),
            s => {
                let text = error_text(resp).await;
                return Err(self.protocol(format!("manifest request answered {s}: {text}")));
            }
        }
        let body = read_bounded(
            self.src,
            &self.registry,
            resp,
            MAX_MANIFEST_BYTES,
            "manifest",
        )
        .await?;
        let m: Manifest = serde_json::from_slice(&body)
            .map_err(|e| self.protocol(format!("manifest is not an OCI image manifest: {e}")))?;
        if !m.media_type.is_empty() && m.media_type != OCI_MANIFEST {
            return Err(self.protocol(format!(
                "manifest has media type {:?}, not an OCI image manifest",
                m.media_type
            )));
        }
        if m.config.media_type != HELM_CONFIG_MEDIA_TYPE {
            return Err(self.protocol(format!(
                "{}:{tag} is not a Helm chart (config media type {:?})",
                self.repository, m.config.media_type
            )));
        }
        let mut layers = m.layers.into_iter().filter(|l| {
            l.media_type == HELM_CHART_MEDIA_TYPE || l.media_type == LEGACY_CHART_MEDIA_TYPE
        });
        let layer = layers
            .next()
            .ok_or_else(|| self.protocol("manifest has no Helm chart content layer"))?;
        if layers.next().is_some() {
            return Err(self.protocol("manifest has more than one chart content layer"));
        }
        check_digest_syntax(&layer.digest).map_err(|m| self.protocol(m))?;
        if layer.size > self.limits.archive.max_compressed_bytes {
            let (chart, version) = self.chart();
            return Err(FetchError::TooLarge {
                chart,
                version,
                what: format!("chart archive ({} bytes)", layer.size),
                limit: self.limits.archive.max_compressed_bytes,
            });
        }
        Ok(ChartLayer {
            digest: layer.digest,
            size: layer.size,
        })
    }

    /// Downloads the content layer and checks its digest. Returns the archive bytes.
    pub(crate) async fn blob(&mut self, layer: &ChartLayer) -> Result<Vec<u8>, FetchError> {
        let resp = self.get(&format!("blobs/{}", layer.digest), "*/*").await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => {
                return Err(self.not_found(format!("blob {} missing", layer.digest)));
            }
            StatusCode::FORBIDDEN => return Err(self.refused()),
            s if s.is_server_error() => return Err(self.unavailable(s)),
            s => {
                let text = error_text(resp).await;
                return Err(self.protocol(format!("blob request answered {s}: {text}")));
            }
        }
        let body = read_bounded(
            self.src,
            &self.registry,
            resp,
            layer.size.min(self.limits.archive.max_compressed_bytes),
            "chart archive",
        )
        .await?;
        let actual = format!("sha256:{:x}", Sha256::digest(&body));
        if actual != layer.digest {
            let (chart, version) = self.chart();
            return Err(FetchError::DigestMismatch {
                chart,
                version,
                expected: layer.digest.clone(),
                actual,
            });
        }
        Ok(body)
    }
}

impl Session<'_> {
    /// The repository's tags (a chart's versions, `_` standing for `+`), following the
    /// registry's pagination for at most 20 pages of 1,000.
    pub(crate) async fn tags(&mut self) -> Result<Vec<String>, FetchError> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut out = Vec::new();
        let mut path = "tags/list?n=1000".to_string();
        for _ in 0..20 {
            let resp = self.get(&path, "application/json").await?;
            match resp.status() {
                s if s.is_success() => {}
                StatusCode::NOT_FOUND => {
                    return Err(self.not_found(format!("no repository {}", self.repository)));
                }
                StatusCode::FORBIDDEN => return Err(self.refused()),
                s if s.is_server_error() => return Err(self.unavailable(s)),
                s => {
                    let text = error_text(resp).await;
                    return Err(self.protocol(format!("tag list request answered {s}: {text}")));
                }
            }
            // `Link: </v2/<repo>/tags/list?n=1000&last=x>; rel="next"`
            let next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.split_once('<'))
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(url, _)| url.to_string());
            let body = read_bounded(
                self.src,
                &self.registry,
                resp,
                MAX_MANIFEST_BYTES,
                "tag list",
            )
            .await?;
            let tags: Tags = serde_json::from_slice(&body)
                .map_err(|_| self.protocol("tag list is not the expected JSON"))?;
            out.extend(tags.tags.unwrap_or_default());
            let prefix = format!("/v2/{}/", self.repository);
            match next.as_deref().and_then(|n| n.strip_prefix(&prefix)) {
                Some(rest) => path = rest.to_string(),
                None => break,
            }
        }
        Ok(out)
    }
}

impl Session<'_> {
    /// The repositories of the registry under `prefix` (`charts/` for a root URL
    /// `oci://host/charts`; empty for the whole registry), with the prefix removed, from the
    /// distribution API's `_catalog`, following its pagination for at most 20 pages of 1,000.
    /// A registry that does not offer `_catalog` (404, or 401/403 with credentials that work for
    /// pulls) answers [`FetchError::NotFound`] with a detail saying so.
    pub(crate) async fn catalog(&mut self, prefix: &str) -> Result<Vec<String>, FetchError> {
        #[derive(Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let mut out = Vec::new();
        let mut path = "_catalog?n=1000".to_string();
        for _ in 0..20 {
            let resp = self.get_v2(&path, "application/json").await?;
            match resp.status() {
                s if s.is_success() => {}
                StatusCode::NOT_FOUND => {
                    return Err(self.not_found(
                        "the registry does not list its repositories (no _catalog)".into(),
                    ));
                }
                StatusCode::FORBIDDEN => return Err(self.refused()),
                s if s.is_server_error() => return Err(self.unavailable(s)),
                s => {
                    let text = error_text(resp).await;
                    return Err(self.protocol(format!("catalog request answered {s}: {text}")));
                }
            }
            let next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.split_once('<'))
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(url, _)| url.to_string());
            let body = read_bounded(
                self.src,
                &self.registry,
                resp,
                MAX_MANIFEST_BYTES,
                "repository catalog",
            )
            .await?;
            let page: Catalog = serde_json::from_slice(&body)
                .map_err(|_| self.protocol("repository catalog is not the expected JSON"))?;
            out.extend(
                page.repositories
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| r.strip_prefix(prefix).map(str::to_string))
                    .filter(|r| !r.is_empty()),
            );
            match next.as_deref().and_then(|n| n.strip_prefix("/v2/")) {
                Some(rest) => path = rest.to_string(),
                None => break,
            }
        }
        Ok(out)
    }
}

/// Only `sha256:<64 lowercase hex>` digests are accepted (what Helm and every registry use).
fn check_digest_syntax(d: &str) -> Result<(), String> {
    match d.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            Ok(())
        }
        _ => Err(format!("layer digest {d:?} is not a sha256 digest")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_syntax() {
        assert!(check_digest_syntax(&format!("sha256:{}", "a".repeat(64))).is_ok());
        for bad in [
            "sha512:aa",
            "sha256:../../x",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
        ] {
            assert!(check_digest_syntax(bad).is_err(), "{bad}");
        }
    }
}
