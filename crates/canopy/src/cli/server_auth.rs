//! Flags of `canopy server` / `canopy up` about identity, tenancy and abuse limits: an external
//! OIDC identity provider, session lifetime, the registries every new project gets, the
//! per-caller rate limit, and the login limits (attempts per address and user name, concurrent
//! password hashes, trusted reverse proxies).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use canopy_server::app::{AuthConfig, LoginLimits, TenancyConfig};

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
    /// Offer "Sign in with <provider>" on the web console's sign-in page: the client id of
    /// Canopy's console at the provider (standard flow, PKCE S256; register the redirect URI
    /// `<public-url>/ui/oidc/callback`). Roles are mapped exactly as for the API, from the
    /// access token of the sign-in.
    #[arg(
        long,
        env = "CANOPY_OIDC_CLIENT_ID",
        value_name = "ID",
        requires = "oidc_issuer"
    )]
    pub oidc_client_id: Option<String>,
    /// File holding the client secret, for a confidential client (else the secret may be given
    /// in the environment variable CANOPY_OIDC_CLIENT_SECRET; without either the client is
    /// public). Never logged nor shown.
    #[arg(
        long,
        env = "CANOPY_OIDC_CLIENT_SECRET_FILE",
        value_name = "FILE",
        requires = "oidc_client_id"
    )]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// The provider's name on the console's sign-in button (default: the issuer's host).
    #[arg(
        long,
        env = "CANOPY_OIDC_DISPLAY_NAME",
        value_name = "NAME",
        requires = "oidc_client_id"
    )]
    pub oidc_display_name: Option<String>,
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
    /// Login attempts per minute from one source address (an IPv4 address or IPv6 /64), in
    /// bursts of up to as many (0: no limit).
    #[arg(long, env = "CANOPY_LOGIN_RATE", value_name = "N", default_value_t = LoginLimits::default().per_address_per_minute)]
    pub login_rate: u32,
    /// Login attempts per minute for one user name, from anywhere, in bursts of up to as many
    /// (0: no limit).
    #[arg(long, env = "CANOPY_LOGIN_USER_RATE", value_name = "N", default_value_t = LoginLimits::default().per_user_per_minute)]
    pub login_user_rate: u32,
    /// Password hashes (argon2id, 19 MiB each) computed at once; more wait. Default: half the
    /// cores, 1 to 4.
    #[arg(long, env = "CANOPY_PASSWORD_HASH_CONCURRENCY", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub password_hash_concurrency: Option<u16>,
    /// A reverse proxy (address or CIDR range; repeatable) whose X-Forwarded-For header names
    /// the client for the login limits. Without one the header is ignored: the limits count
    /// the connection's peer.
    #[arg(long = "trusted-proxy", env = "CANOPY_TRUSTED_PROXIES", value_name = "ADDR|CIDR", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Sustained agent-protocol requests per second per edge (0: no limit).
    #[arg(long, env = "CANOPY_AGENT_RATE_LIMIT", value_name = "N", default_value_t = canopy_server::http::Limits::default().agent_requests_per_second)]
    pub agent_rate_limit: u32,
    /// Agent-protocol requests an edge may send at once after being idle.
    #[arg(long, env = "CANOPY_AGENT_RATE_BURST", value_name = "N", default_value_t = canopy_server::http::Limits::default().agent_burst)]
    pub agent_rate_burst: u32,
    /// Desired-state long-polls this process holds at once (one per connected agent); beyond
    /// it agents are answered 503 with a Retry-After of 5 to 30 s. With replicas, size it for
    /// the edges a replica takes over when another dies: at least the fleet divided by the
    /// replicas that survive (docs/OPERATIONS.md, Sizing).
    #[arg(long, env = "CANOPY_MAX_LONG_POLLS", value_name = "N", default_value_t = canopy_server::http::Limits::default().max_long_polls, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..=1_000_000), |n| n as usize))]
    pub max_long_polls: usize,
}

/// An address (a /32 or /128 range) or a CIDR range.
fn parse_proxy(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8)"))
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
        let console = match (&oidc, &self.oidc_client_id) {
            (Some(verifier), Some(client_id)) => Some(self.console_oidc(verifier, client_id)?),
            _ => None,
        };
        let defaults = LoginLimits::default();
        Ok(AuthConfig {
            oidc,
            console,
            session_ttl: Some(self.session_ttl),
            login: LoginLimits {
                per_address_per_minute: self.login_rate,
                address_burst: self.login_rate,
                per_user_per_minute: self.login_user_rate,
                user_burst: self.login_user_rate,
                hash_concurrency: self
                    .password_hash_concurrency
                    .map_or(defaults.hash_concurrency, usize::from),
                trusted_proxies: self.trusted_proxies.clone(),
                ..defaults
            },
        })
    }

    /// The console's OIDC sign-in (`--oidc-client-id` and its secret).
    fn console_oidc(
        &self,
        verifier: &canopy_auth::oidc::OidcVerifier,
        client_id: &str,
    ) -> anyhow::Result<canopy_server::app::ConsoleOidc> {
        use canopy_auth::oidc_login::{ClientSecret, LoginClient};
        let secret = match &self.oidc_client_secret_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "reading the OIDC client secret (--oidc-client-secret-file {})",
                        path.display()
                    )
                })?;
                anyhow::ensure!(
                    !text.trim().is_empty(),
                    "the OIDC client secret file {} is empty",
                    path.display()
                );
                Some(ClientSecret::new(text))
            }
            None => std::env::var("CANOPY_OIDC_CLIENT_SECRET")
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map(ClientSecret::new),
        };
        anyhow::ensure!(
            !client_id.trim().is_empty(),
            "--oidc-client-id must not be empty"
        );
        let label = match &self.oidc_display_name {
            Some(name) if !name.trim().is_empty() => name.trim().to_string(),
            _ => reqwest::Url::parse(&verifier.config().issuer)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "your identity provider".to_string()),
        };
        Ok(canopy_server::app::ConsoleOidc {
            client: LoginClient::new(verifier.clone(), client_id.trim(), secret),
            label,
        })
    }

    /// The HTTP API's abuse limits.
    pub fn limits(&self) -> canopy_server::http::Limits {
        canopy_server::http::Limits {
            requests_per_second: self.rate_limit,
            burst: self.rate_burst.max(1),
            agent_requests_per_second: self.agent_rate_limit,
            agent_burst: self.agent_rate_burst.max(1),
            max_long_polls: self.max_long_polls,
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
    fn login_limits_come_from_the_flags() {
        let w = Wrap::parse_from(["x"]);
        assert_eq!(w.auth.auth_config().unwrap().login, LoginLimits::default());
        let w = Wrap::parse_from([
            "x",
            "--login-rate",
            "0",
            "--login-user-rate",
            "5",
            "--password-hash-concurrency",
            "3",
            "--trusted-proxy",
            "10.0.0.0/8,::1",
            "--trusted-proxy",
            "192.0.2.7",
        ]);
        let login = w.auth.auth_config().unwrap().login;
        assert_eq!(login.per_address_per_minute, 0);
        assert_eq!((login.per_user_per_minute, login.user_burst), (5, 5));
        assert_eq!(login.hash_concurrency, 3);
        let proxies: Vec<String> = login
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]);
        assert!(Wrap::try_parse_from(["x", "--trusted-proxy", "proxy.example"]).is_err());
        assert!(Wrap::try_parse_from(["x", "--password-hash-concurrency", "0"]).is_err());
    }

    #[test]
    fn console_oidc_sign_in_options() {
        assert!(Wrap::try_parse_from(["x", "--oidc-client-id", "c"]).is_err());
        assert!(
            Wrap::try_parse_from([
                "x",
                "--oidc-issuer",
                "https://idp.example/realms/r",
                "--oidc-client-secret-file",
                "/nonexistent"
            ])
            .is_err()
        );
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret-value\n").unwrap();
        let w = Wrap::parse_from([
            "x",
            "--oidc-issuer",
            "https://idp.example/realms/r",
            "--oidc-client-id",
            "canopy-console",
            "--oidc-client-secret-file",
            secret.to_str().unwrap(),
        ]);
        let cfg = w.auth.auth_config().unwrap();
        let shown = format!("{cfg:?}");
        assert!(shown.contains("canopy-console"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let console = cfg.console.expect("console sign-in configured");
        assert_eq!(console.client.client_id(), "canopy-console");
        assert_eq!(console.label, "idp.example");
        // A missing secret file is an error naming it.
        let w = Wrap::parse_from([
            "x",
            "--oidc-issuer",
            "https://idp.example/realms/r",
            "--oidc-client-id",
            "c",
            "--oidc-client-secret-file",
            "/nonexistent/secret",
        ]);
        let err = w.auth.auth_config().unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/secret"),
            "{err:#}"
        );
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

    #[test]
    fn the_long_poll_cap_is_a_flag_for_replicas_that_take_over_a_fleet() {
        let w = Wrap::parse_from(["x", "--max-long-polls", "30000"]);
        assert_eq!(w.auth.limits().max_long_polls, 30_000);
        assert_eq!(
            Wrap::parse_from(["x"]).auth.limits().max_long_polls,
            canopy_server::http::Limits::default().max_long_polls
        );
        for bad in ["0", "2000000", "many"] {
            assert!(
                Wrap::try_parse_from(["x", "--max-long-polls", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
