//! Flags of `canopy server` / `canopy up` about identity, tenancy and abuse limits: an external
//! OIDC identity provider, session lifetime, the registries every new project gets, and the
//! per-caller rate limit.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use canopy_server::app::{AuthConfig, TenancyConfig};

use super::args::duration;

/// Identity and tenancy flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Accept bearer JWTs from this OIDC identity provider (e.g.
    /// https://keycloak.example.com/realms/master), besides Canopy's own tokens. Roles are read
    /// from `realm_access.roles`.
    #[arg(long, env = "CANOPY_OIDC_ISSUER", value_name = "URL")]
    pub oidc_issuer: Option<String>,
    /// The audience (`aud`) tokens must carry.
    #[arg(
        long,
        env = "CANOPY_OIDC_AUDIENCE",
        value_name = "AUD",
        default_value = "canopy",
        requires = "oidc_issuer"
    )]
    pub oidc_audience: String,
    /// JWKS URL of the provider (default: discovered from the issuer's
    /// /.well-known/openid-configuration).
    #[arg(
        long,
        env = "CANOPY_OIDC_JWKS_URL",
        value_name = "URL",
        requires = "oidc_issuer"
    )]
    pub oidc_jwks_url: Option<String>,
    /// Lifetime of a `canopy login` session: 30m, 8h, ...
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "1h")]
    pub session_ttl: Duration,
    /// Registries created in every new project: a JSON or YAML list of registries in the
    /// catalog's registry format (name, rootUrl, type, ...).
    #[arg(long, env = "CANOPY_DEFAULT_REGISTRIES", value_name = "FILE")]
    pub default_registries: Option<PathBuf>,
    /// Sustained API requests per second per token or identity (0: no limit).
    #[arg(long, env = "CANOPY_RATE_LIMIT", value_name = "N", default_value_t = canopy_server::http::Limits::default().requests_per_second)]
    pub rate_limit: u32,
    /// Requests a caller may send at once after being idle.
    #[arg(long, env = "CANOPY_RATE_BURST", value_name = "N", default_value_t = canopy_server::http::Limits::default().burst)]
    pub rate_burst: u32,
    /// Sustained agent-protocol requests per second per edge (0: no limit).
    #[arg(long, env = "CANOPY_AGENT_RATE_LIMIT", value_name = "N", default_value_t = canopy_server::http::Limits::default().agent_requests_per_second)]
    pub agent_rate_limit: u32,
    /// Agent-protocol requests an edge may send at once after being idle.
    #[arg(long, env = "CANOPY_AGENT_RATE_BURST", value_name = "N", default_value_t = canopy_server::http::Limits::default().agent_burst)]
    pub agent_rate_burst: u32,
}

impl AuthArgs {
    /// The server's authentication configuration.
    pub fn auth_config(&self) -> anyhow::Result<AuthConfig> {
        let oidc = match &self.oidc_issuer {
            None => None,
            Some(issuer) => {
                let mut cfg = canopy_auth::oidc::OidcConfig::new(
                    issuer.trim_end_matches('/'),
                    self.oidc_audience.clone(),
                );
                if let Some(url) = &self.oidc_jwks_url {
                    cfg = cfg.with_jwks_url(url.clone());
                }
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .context("building the HTTP client for the identity provider")?;
                Some(canopy_auth::oidc::OidcVerifier::new(cfg, http))
            }
        };
        Ok(AuthConfig {
            oidc,
            session_ttl: Some(self.session_ttl),
        })
    }

    /// The HTTP API's abuse limits.
    pub fn limits(&self) -> canopy_server::http::Limits {
        canopy_server::http::Limits {
            requests_per_second: self.rate_limit,
            burst: self.rate_burst.max(1),
            agent_requests_per_second: self.agent_rate_limit,
            agent_burst: self.agent_rate_burst.max(1),
            ..Default::default()
        }
    }

    /// What new projects get.
    pub fn tenancy_config(&self) -> anyhow::Result<TenancyConfig> {
        let default_registries = match &self.default_registries {
            None => Vec::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let list: Vec<canopy_core::catalog::Registry> = serde_saphyr::from_str(&text)
                    .with_context(|| {
                        format!(
                            "{} is not a list of registries (name, rootUrl, type, ...)",
                            path.display()
                        )
                    })?;
                for r in &list {
                    canopy_core::validate::registry(r).map_err(|e| {
                        anyhow::anyhow!("{}: registry {}: {e}", path.display(), r.name)
                    })?;
                }
                list
            }
        };
        Ok(TenancyConfig {
            default_registries,
            delete_grace: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        auth: AuthArgs,
    }

    #[test]
    fn default_registries_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("registries.yaml");
        std::fs::write(
            &good,
            "- name: company-images\n  rootUrl: https://registry.example.com\n  type: IMAGE\n",
        )
        .unwrap();
        let w = Wrap::parse_from(["x", "--default-registries", good.to_str().unwrap()]);
        let t = w.auth.tenancy_config().unwrap();
        assert_eq!(t.default_registries.len(), 1);
        assert_eq!(t.default_registries[0].name, "company-images");

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "- name: Bad Name\n  rootUrl: x\n  type: IMAGE\n").unwrap();
        let w = Wrap::parse_from(["x", "--default-registries", bad.to_str().unwrap()]);
        let e = w.auth.tenancy_config().unwrap_err().to_string();
        assert!(e.contains("bad.yaml") && e.contains("Bad Name"), "{e}");
    }

    #[test]
    fn oidc_needs_an_issuer() {
        assert!(Wrap::try_parse_from(["x", "--oidc-audience", "a"]).is_err());
        let w = Wrap::parse_from(["x", "--oidc-issuer", "https://idp.example/realms/r/"]);
        assert_eq!(w.auth.limits(), canopy_server::http::Limits::default());
        let cfg = w.auth.auth_config().unwrap();
        let oidc = cfg.oidc.expect("configured");
        assert_eq!(oidc.config().issuer, "https://idp.example/realms/r");
        assert_eq!(oidc.config().audience, "canopy");
    }
}
