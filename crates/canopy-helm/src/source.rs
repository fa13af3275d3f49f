//! Where a chart comes from: an application's HELM registry (`rootUrl`, `username`,
//! `authToken`, `cacerts`) plus its `chartName` and `chartVersion`, checked and split into the
//! two kinds of registries the reference knows: OCI registries (`oci://host[:port]/path`) and
//! classic chart repositories (`https://host/path` with an `index.yaml`).

use std::fmt;

use reqwest::Url;

use crate::error::FetchError;

/// The registry credentials of a HELM registry, as the reference defines them. `Debug` never
/// shows them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// `username` (OCI and repository basic auth).
    pub username: Option<String>,
    /// `authToken`: the password or token that goes with `username`.
    pub auth_token: Option<String>,
    /// `cacerts`: PEM certificates trusted (instead of the built-in roots) for this registry.
    /// The reference's special value `use-dynamic-cacert` must be replaced by the caller with
    /// the control plane's own CA before it gets here.
    pub ca_pem: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username.as_ref().map(|_| "<set>"))
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<set>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Credentials {
    /// `(username, authToken)` when a username is set (a token alone is sent as the password of
    /// an empty user name, as Helm does).
    pub(crate) fn basic(&self) -> Option<(&str, &str)> {
        let user = self.username.as_deref().filter(|u| !u.is_empty());
        let token = self.auth_token.as_deref().filter(|t| !t.is_empty());
        match (user, token) {
            (None, None) => None,
            (u, t) => Some((u.unwrap_or(""), t.unwrap_or(""))),
        }
    }
}

/// One chart of one registry: what [`crate::ChartFetcher::fetch`] takes.
#[derive(Clone, PartialEq, Eq)]
pub struct ChartSource {
    /// The registry's `rootUrl` (`oci://...`, `https://...` or `http://...`).
    pub root_url: String,
    /// The application's `chartName` (appended to the root URL for OCI registries; the entry
    /// name in `index.yaml` for repositories).
    pub chart_name: String,
    /// The application's `chartVersion`.
    pub chart_version: String,
    /// The registry's credentials.
    pub credentials: Credentials,
}

impl fmt::Debug for ChartSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChartSource")
            .field("root_url", &display_url(&self.root_url))
            .field("chart_name", &self.chart_name)
            .field("chart_version", &self.chart_version)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// Where a chart is, once the source is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// An OCI registry: `host[:port]` and the repository path (root path + chart name).
    Oci {
        host: String,
        repository: String,
        /// The tag (the version with `+` written `_`, as Helm pushes it).
        tag: String,
    },
    /// A classic chart repository: the URL of its `index.yaml` and the base that relative chart
    /// URLs resolve against.
    Repo { index: Url, base: Url },
}

/// Longest chart name (the reference's `chartName` rule).
const MAX_CHART_NAME: usize = 200;
/// Longest chart version (the reference's `chartVersion` rule).
const MAX_CHART_VERSION: usize = 53;

impl ChartSource {
    /// The chart's own name: the last segment of `chartName` (`charts/web` → `web`), which is
    /// what its `Chart.yaml` must say.
    pub fn short_name(&self) -> &str {
        self.chart_name
            .rsplit('/')
            .next()
            .unwrap_or(&self.chart_name)
    }

    /// The root URL with any user information removed, for messages.
    pub fn display_root(&self) -> String {
        display_url(&self.root_url)
    }

    pub(crate) fn invalid(&self, message: impl Into<String>) -> FetchError {
        FetchError::InvalidSource {
            chart: self.chart_name.clone(),
            version: self.chart_version.clone(),
            message: message.into(),
        }
    }

    /// Checks the source and says where the chart is.
    pub(crate) fn location(&self) -> Result<Location, FetchError> {
        let name = &self.chart_name;
        if name.is_empty() || name.len() > MAX_CHART_NAME {
            return Err(self.invalid(format!(
                "chartName must be 1 to {MAX_CHART_NAME} characters"
            )));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '/')
            || name.starts_with('/')
            || name.ends_with('/')
            || name.contains("//")
        {
            return Err(self.invalid(format!(
                "chartName {name:?} must be lowercase letters, digits, '-' and single '/' \
                 between segments"
            )));
        }
        let version = &self.chart_version;
        if version.is_empty()
            || version.len() > MAX_CHART_VERSION
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'))
            || version.starts_with(['.', '-'])
        {
            return Err(self.invalid(format!(
                "chartVersion {version:?} must be 1 to {MAX_CHART_VERSION} letters, digits, \
                 '.', '-', '+' or '_'"
            )));
        }
        let url = Url::parse(self.root_url.trim()).map_err(|e| {
            self.invalid(format!(
                "rootUrl {:?} is not a URL: {e}",
                self.display_root()
            ))
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.invalid(
                "rootUrl must not carry credentials; use the registry's username and authToken",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.invalid("rootUrl must not have a query or a fragment"));
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(self.invalid("rootUrl has no host"));
        };
        match url.scheme() {
            "oci" => {
                let host = match url.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host.to_string(),
                };
                let root = url.path().trim_matches('/');
                let repository = if root.is_empty() {
                    name.clone()
                } else {
                    format!("{root}/{name}")
                };
                if !repository.chars().all(|c| {
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || matches!(c, '-' | '/' | '.' | '_')
                }) {
                    return Err(self.invalid(format!(
                        "OCI repository {repository:?} must be lowercase (OCI distribution rule)"
                    )));
                }
                Ok(Location::Oci {
                    host,
                    repository,
                    tag: version.replace('+', "_"),
                })
            }
            "https" | "http" => {
                let mut base = url.clone();
                if !base.path().ends_with('/') {
                    let p = format!("{}/", base.path());
                    base.set_path(&p);
                }
                let index = base
                    .join("index.yaml")
                    .map_err(|e| self.invalid(format!("rootUrl: {e}")))?;
                Ok(Location::Repo { index, base })
            }
            other => Err(self.invalid(format!(
                "rootUrl scheme {other:?} is not supported (oci://, https:// or http://)"
            ))),
        }
    }
}

/// A URL without its user information, for messages (never echo credentials).
pub(crate) fn display_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => url.chars().take(200).collect(),
    }
}

/// Whether a `host[:port]` names this machine (plain HTTP is used there by default).
pub(crate) fn is_loopback(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(root: &str, name: &str, version: &str) -> ChartSource {
        ChartSource {
            root_url: root.into(),
            chart_name: name.into(),
            chart_version: version.into(),
            credentials: Credentials::default(),
        }
    }

    #[test]
    fn oci_locations() {
        assert_eq!(
            src("oci://127.0.0.1:5000/charts", "web", "1.0.0+b1")
                .location()
                .unwrap(),
            Location::Oci {
                host: "127.0.0.1:5000".into(),
                repository: "charts/web".into(),
                tag: "1.0.0_b1".into()
            }
        );
        assert_eq!(
            src("oci://registry.example/", "team/web", "0.1.0")
                .location()
                .unwrap(),
            Location::Oci {
                host: "registry.example".into(),
                repository: "team/web".into(),
                tag: "0.1.0".into()
            }
        );
    }

    #[test]
    fn repo_locations() {
        let Location::Repo { index, base } = src("https://charts.example/stable", "web", "1.0.0")
            .location()
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(index.as_str(), "https://charts.example/stable/index.yaml");
        assert_eq!(base.as_str(), "https://charts.example/stable/");
    }

    #[test]
    fn refused_sources() {
        for (root, name, version) in [
            ("ftp://x.example", "web", "1.0.0"),
            ("oci://user:pw@x.example/c", "web", "1.0.0"),
            ("oci://x.example/c", "../web", "1.0.0"),
            ("oci://x.example/c", "Web", "1.0.0"),
            ("oci://x.example/c", "web", ""),
            ("oci://x.example/c", "web", "-1"),
            ("oci://x.example/c", "web", "1.0/../../x"),
            ("not a url", "web", "1.0.0"),
            ("https://x.example/c?x=1", "web", "1.0.0"),
        ] {
            let e = src(root, name, version).location().unwrap_err();
            let text = e.to_string();
            assert!(!text.contains("pw@"), "{text}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:5000",
            "localhost:1",
            "[::1]:5000",
            "127.1.2.3",
            "localhost",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1:5000", "registry.example", "[2001:db8::1]:443"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn debug_hides_credentials() {
        let mut s = src("oci://x.example/c", "web", "1.0.0");
        s.credentials.username = Some("robot".into());
        s.credentials.auth_token = Some("s3cret-token".into());
        let text = format!("{s:?}");
        assert!(
            !text.contains("robot") && !text.contains("s3cret"),
            "{text}"
        );
    }
}
