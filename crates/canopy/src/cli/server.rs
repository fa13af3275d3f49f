//! `canopy server`: runs the control plane in this process. Only translates flags into a
//! `canopy_server::ServerConfig` and sets up logging; everything else belongs to the server crate.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

/// Flags of `canopy server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Directory for the embedded database and other local state.
    #[arg(long, default_value = "./canopy-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL; when set, used instead of the embedded SQLite database.
    #[arg(
        long,
        env = "CANOPY_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub auth: super::server_auth::AuthArgs,
    #[command(flatten)]
    pub uploads: super::server_uploads::UploadArgs,
    /// The Helm CLI used to render Helm-chart applications (Helm 3.8+ or 4). Default: `helm`
    /// on PATH. Checked at start; without one, Helm-chart applications are refused with the
    /// reason (native applications are not affected).
    #[arg(long, env = "CANOPY_HELM_BIN", value_name = "PATH")]
    pub helm_bin: Option<PathBuf>,
    /// Start a new, empty instance even though the data directory holds the state of one that
    /// has run (secret.key, admin.token) while its database is missing or empty. Without it,
    /// that start is refused; the old admin.token is kept beside the new one.
    #[arg(long)]
    pub initialize: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464). Plain HTTP and
    /// no token: give a loopback address or one only the monitoring network reaches. Off by
    /// default (then no metrics are kept). See docs/OPERATIONS.md, Metrics.
    #[arg(long, env = "CANOPY_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// With several replicas on one PostgreSQL database: the URL the other replicas reach this
    /// one at, to relay tunnels (VNC, serial consoles, logs) whose agent connected elsewhere
    /// (`http://10.0.0.5:7070`; `https://` when this server serves HTTPS). Default: derived
    /// from --listen when it is a specific address (not 0.0.0.0 or [::]). See
    /// docs/OPERATIONS.md, "Tunnels across replicas".
    #[arg(long, env = "CANOPY_PEER_URL", value_name = "URL", value_parser = parse_peer_url)]
    pub peer_url: Option<String>,
}

/// An `http(s)://host:port` URL, nothing after the authority but an optional `/`.
fn parse_peer_url(s: &str) -> Result<String, String> {
    let url = parse_public_url(s)?;
    let parsed = reqwest::Url::parse(&url).map_err(|e| format!("not a URL: {e}"))?;
    if parsed.path() != "/" {
        return Err("no path: only scheme, host and port (replicas dial it directly)".into());
    }
    Ok(url)
}

/// How `canopy server` and `canopy up` serve: HTTPS with a self-signed certificate kept in the
/// data directory (the default), HTTPS with a given certificate, or plain HTTP.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this certificate (PEM, leaf first, then intermediates) instead of the
    /// self-signed one generated in the data directory. Needs --tls-key.
    #[arg(
        long,
        env = "CANOPY_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "insecure_http"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "CANOPY_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS. Traffic, tokens and credentials then travel
    /// unencrypted: only for loopback or a trusted network.
    #[arg(long)]
    pub insecure_http: bool,
    /// The URL users reach this server at when it is behind a reverse proxy or load balancer
    /// (`https://canopy.example.com` or with a path prefix); the addresses the server hands out
    /// (VM console WebSockets) use it. Default: the address each request came to.
    #[arg(long, env = "CANOPY_PUBLIC_URL", value_name = "URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
}

/// An `http(s)://host[:port][/prefix]` URL without query or fragment; the trailing `/` dropped.
fn parse_public_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected http://HOST[:PORT][/PREFIX] or https://...".into());
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("no query, fragment or user name: only scheme, host, port and path".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

impl TlsArgs {
    /// The server's TLS configuration; `None` for plain HTTP.
    pub fn server_tls(&self, data_dir: &std::path::Path) -> Option<canopy_tls::ServerTls> {
        if self.insecure_http {
            return None;
        }
        Some(match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => canopy_tls::ServerTls::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => canopy_tls::ServerTls::SelfSigned {
                dir: data_dir.to_owned(),
            },
        })
    }
}

/// Flags of `canopy up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Directory for the embedded database, the local agent's state and other local state.
    #[arg(long, default_value = "./canopy-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Do not run a local edge agent (control plane only).
    #[arg(long)]
    pub no_agent: bool,
    /// Docker Engine API endpoint for the local agent. Default: DOCKER_HOST, a running Podman or
    /// Docker socket, else Podman's API service started by `canopy up` when podman is installed.
    #[arg(long, env = "DOCKER_HOST", value_name = "URL")]
    pub docker_host: Option<String>,
    /// Directory whose files the local agent's VM images may name with `file://` URLs
    /// (repeatable; without one, `file://` images are refused).
    #[arg(
        long = "vm-image-dir",
        env = "CANOPY_VM_IMAGE_DIRS",
        value_name = "DIR",
        value_delimiter = ','
    )]
    pub vm_image_dirs: Vec<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub auth: super::server_auth::AuthArgs,
    #[command(flatten)]
    pub uploads: super::server_uploads::UploadArgs,
    /// The Helm CLI used to render Helm-chart applications (Helm 3.8+ or 4). Default: `helm`
    /// on PATH. Checked at start; without one, Helm-chart applications are refused with the
    /// reason (native applications are not affected).
    #[arg(long, env = "CANOPY_HELM_BIN", value_name = "PATH")]
    pub helm_bin: Option<PathBuf>,
    /// Start a new, empty instance even though the data directory holds the state of one that
    /// has run (secret.key, admin.token) while its database is missing or empty.
    #[arg(long)]
    pub initialize: bool,
}

/// Name and labels of the local edge `canopy up` enrolls.
pub const LOCAL_EDGE: &str = "local";
pub const LOCAL_LABEL: (&str, &str) = ("host", "local");

/// `canopy up`: the control plane on embedded storage plus a local edge agent on this machine,
/// with a banner saying where it is and what to do next.
pub async fn up(args: UpArgs, out: &mut (dyn std::io::Write + Send)) -> anyhow::Result<()> {
    init_logging();
    // Everything below derives paths from it, some handed to other processes (Podman's socket).
    let data_dir = super::agent::absolute(&args.data_dir)?;
    let config = canopy_server::ServerConfig {
        listen: args.listen,
        data_dir: data_dir.clone(),
        database_url: None,
        tls: args.tls.server_tls(&data_dir),
        fleet: Default::default(),
        auth: args.auth.auth_config()?,
        tenancy: args.auth.tenancy_config()?,
        limits: args.auth.limits(),
        audit_retention: canopy_server::DEFAULT_AUDIT_RETENTION,
        public_url: args.tls.public_url.clone(),
        uploads: args.uploads.upload_limits(),
        initialize: args.initialize,
        helm: canopy_server::app::HelmConfig {
            helm_bin: args.helm_bin.clone(),
            ..Default::default()
        },
        metrics_listen: None,
        peer_url: None,
    };
    let server = canopy_server::Server::bind(&config)
        .await?
        .with_console(canopy_web::router());
    let url = server.url()?;
    // The CLI on this machine acts as the administrator of the server it just started.
    let admin_token =
        std::fs::read_to_string(config.data_dir.join(canopy_server::app::ADMIN_TOKEN_FILE))
            .with_context(|| {
                format!(
                    "cannot read the administrator token in {}",
                    config.data_dir.display()
                )
            })?;
    let fingerprint = server
        .tls_certificate()
        .map(|c| c.fingerprint_sha256.clone());
    let credentials = super::auth::save_token(&url, &admin_token, "admin", fingerprint.as_deref())?;
    let certificate = server.tls_certificate().cloned();
    // The local agent trusts exactly this server's certificate.
    let trust = match &certificate {
        Some(cert) => canopy_tls::ClientTrust::Pinned(cert.fingerprint()),
        None => canopy_tls::ClientTrust::System,
    };
    let app = server.app().clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    let server_task = tokio::spawn(server.run(stopped()));

    // The local agent: an engine socket, an enrollment (first start only), the sync loop.
    let mut podman: Option<super::agent::PodmanService> = None;
    let mut agent_task = None;
    let mut agent_note = String::from("no local agent (--no-agent)");
    if !args.no_agent {
        let agent_dir = data_dir.join("agent");
        let docker_host = match args.docker_host.clone() {
            Some(h) => Some(h),
            None => match super::agent::find_engine_socket() {
                Some(p) => Some(format!("unix://{}", p.display())),
                None if super::agent::podman_installed() => {
                    let svc = super::agent::PodmanService::start(&data_dir.join("podman")).await?;
                    let host = format!("unix://{}", svc.socket.display());
                    podman = Some(svc);
                    Some(host)
                }
                None => None,
            },
        };
        match docker_host {
            None => {
                agent_note = "no local agent: no container engine found (install podman, then run `canopy up` again)".into();
            }
            Some(host) => {
                let enrolled = agent_dir.join("credential").exists();
                let token = if enrolled {
                    None
                } else {
                    let ctx = app
                        .context(
                            canopy_server::app::Principal::system(),
                            canopy_server::app::DEFAULT_PROJECT,
                            "canopy-up".into(),
                        )
                        .await?;
                    let created = app
                        .create_enrollment_token(
                            &ctx,
                            canopy_server::app::CreateEnrollmentToken {
                                description: "canopy up: local agent".into(),
                                ttl_seconds: Some(600),
                                max_uses: 1,
                            },
                        )
                        .await?;
                    Some(created.secret)
                };
                // Name and labels are enrollment settings: given only to enroll (a later start
                // would only be told they are ignored).
                let (name, labels) = if enrolled {
                    (None, Default::default())
                } else {
                    (
                        Some(LOCAL_EDGE.to_string()),
                        [(LOCAL_LABEL.0.to_string(), LOCAL_LABEL.1.to_string())].into(),
                    )
                };
                let mut cfg = super::agent::agent_config(
                    &url,
                    agent_dir,
                    token,
                    name,
                    labels,
                    Some(host.clone()),
                    &trust,
                )?;
                cfg.vm_image_dirs = args
                    .vm_image_dirs
                    .iter()
                    .map(|d| super::agent::absolute(d))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let stop = stopped();
                agent_task = Some(tokio::spawn(async move {
                    if let Err(e) = canopy_agent::run(cfg, stop).await {
                        tracing::error!(error = %e, "local agent stopped");
                    }
                }));
                agent_note = format!(
                    "edge {LOCAL_EDGE:?} (label {}={}) on {host}",
                    LOCAL_LABEL.0, LOCAL_LABEL.1
                );
            }
        }
    }

    let server_flag = if url == super::DEFAULT_SERVER {
        String::new()
    } else {
        format!(" --server {url}")
    };
    let (tls_line, tls_note) = match &certificate {
        Some(cert) if args.tls.tls_cert.is_none() => (
            format!("self-signed certificate {}", cert.cert_file.display()),
            format!(
                "\nTLS certificate fingerprint: {fp}\n\
                 CLIs and agents trust this server with --server-fingerprint {fp}\n\
                 (or CANOPY_SERVER_FINGERPRINT), or with --ca-file {file}.\n",
                fp = cert.fingerprint_sha256,
                file = cert.cert_file.display(),
            ),
        ),
        Some(cert) => (
            format!(
                "certificate {} ({})",
                cert.cert_file.display(),
                cert.subject
            ),
            format!(
                "\nTLS certificate fingerprint: {fp}\n\
                 If its CA is not trusted here, CLIs and agents pin it with --server-fingerprint \
                 {fp}\n(or CANOPY_SERVER_FINGERPRINT), or pass that CA with --ca-file.\n",
                fp = cert.fingerprint_sha256,
            ),
        ),
        None => (
            "none (--insecure-http)".to_owned(),
            "\nWARNING: plain HTTP: traffic and credentials are unencrypted; use this only on \
             loopback or a trusted network.\n"
                .to_owned(),
        ),
    };
    let podman_line = match &podman {
        Some(svc) => format!("  Podman      {}\n", svc.summary),
        None => String::new(),
    };
    let helm_line = match app.helm_cli() {
        Ok((path, version)) => format!("  Helm        {} ({version})\n", path.display()),
        Err(why) => format!(
            "  Helm        none: Helm-chart applications will be refused ({why}; install Helm \
             3.8+ or 4, or pass --helm-bin)\n"
        ),
    };
    writeln!(
        out,
        "Canopy is up on embedded storage ({db}).\n\
         \n  Console     {url}/ (sign in with a user's password; `canopy user passwd admin` sets the administrator's)\n  API         {url}\n  OpenAPI     {url}/openapi.json\n  TLS         {tls_line}\n  Local edge  {agent_note}\n{podman_line}{helm_line}  Admin       token in {token_file} (this machine's CLI is logged in with it: {creds})\n\
         {tls_note}\
         \nNext, in another terminal (from the Canopy source tree; the CLI here already trusts\
         \nthis server and acts as its administrator):\n\
         \n  canopy{server_flag} catalog upload examples/web-demo\
         \n  canopy{server_flag} deployment create web-demo:1.0.0 --label {k}={v} --watch\
         \n  curl http://127.0.0.1:18080/      # the web app\
         \n  curl http://127.0.0.1:18081/      # the status app, which calls the web app\n\
         \nStop with Ctrl-C (deployed workloads keep running; `canopy deployment delete` removes them).",
        db = config.data_dir.join("canopy.db").display(),
        token_file = config
            .data_dir
            .join(canopy_server::app::ADMIN_TOKEN_FILE)
            .display(),
        creds = credentials.display(),
        k = LOCAL_LABEL.0,
        v = LOCAL_LABEL.1,
    )?;
    out.flush()?;
    canopy_server::shutdown_signal().await;
    let _ = stop_tx.send(true);
    if let Some(t) = agent_task {
        let _ = t.await;
    }
    server_task.await??;
    if let Some(p) = podman {
        p.stop().await;
    }
    Ok(())
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    init_logging();
    let data_dir = super::agent::absolute(&args.data_dir)?;
    let config = canopy_server::ServerConfig {
        listen: args.listen,
        tls: args.tls.server_tls(&data_dir),
        data_dir,
        database_url: args.database_url,
        fleet: Default::default(),
        auth: args.auth.auth_config()?,
        tenancy: args.auth.tenancy_config()?,
        limits: args.auth.limits(),
        audit_retention: canopy_server::DEFAULT_AUDIT_RETENTION,
        public_url: args.tls.public_url.clone(),
        uploads: args.uploads.upload_limits(),
        initialize: args.initialize,
        helm: canopy_server::app::HelmConfig {
            helm_bin: args.helm_bin.clone(),
            ..Default::default()
        },
        metrics_listen: args.metrics_listen,
        peer_url: args.peer_url.clone(),
    };
    // The server's errors name what failed (address, data directory, database).
    canopy_server::serve(config, Some(canopy_web::router())).await?;
    Ok(())
}

/// Logs to standard error, `info` and up unless `RUST_LOG` says otherwise. Does nothing when a
/// subscriber is already installed (e.g. a second run in one test process).
pub(crate) fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod public_url_tests {
    use super::parse_public_url;

    #[test]
    fn public_urls_are_checked_and_normalized() {
        assert_eq!(
            parse_public_url("https://canopy.example.com/").unwrap(),
            "https://canopy.example.com"
        );
        assert_eq!(
            parse_public_url("https://canopy.example.com:8443/api/").unwrap(),
            "https://canopy.example.com:8443/api"
        );
        for bad in [
            "canopy.example.com",
            "ftp://canopy.example.com",
            "https://canopy.example.com/?x=1",
            "https://user@canopy.example.com",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod peer_url_tests {
    use super::parse_peer_url;

    #[test]
    fn peer_urls_are_scheme_host_and_port_only() {
        assert_eq!(
            parse_peer_url("https://10.0.0.5:7070/").unwrap(),
            "https://10.0.0.5:7070"
        );
        assert_eq!(
            parse_peer_url("http://replica-b:7070").unwrap(),
            "http://replica-b:7070"
        );
        for bad in [
            "10.0.0.5:7070",
            "ftp://10.0.0.5",
            "https://10.0.0.5:7070/prefix",
            "https://10.0.0.5:7070/?x=1",
        ] {
            assert!(parse_peer_url(bad).is_err(), "{bad}");
        }
    }
}
