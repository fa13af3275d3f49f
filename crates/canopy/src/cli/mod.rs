//! The `canopy` command line: argument parsing (clap derive), the async runtime, and the one
//! place where errors become `error: ...` lines and exit codes.
//!
//! Commands are thin over `canopy-client`; each group lives in its own module. Everything writes
//! to the `out`/`err` writers it is given rather than to the process's streams, so tests drive the
//! whole CLI in-process ([`run_async`] against a test server) and read what a user would see.
//!
//! Exit codes: 0 success, 1 a failed command (the server refused, unreachable, bad file), 2 a
//! usage error (clap's default).

mod admin;
mod agent;
mod args;
mod audit;
mod auth;
mod catalog;
mod deployment;
mod edge;
mod enroll_token;
mod key;
mod logs;
mod output;
mod policy;
mod server;
mod server_auth;
mod server_uploads;
mod tenancy;
mod upload;
mod vm;
mod workload;

use std::ffi::OsString;
use std::io::{self, Write};

use canopy_client::{Client, ClientError};
use clap::{Parser, Subcommand};

pub use output::Format;

/// Canopy: an edge application orchestrator.
#[derive(Debug, Parser)]
#[command(name = "canopy", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where `canopy server` and `canopy up` listen by default (HTTPS unless `--insecure-http`).
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:7070";

/// Flags accepted by every subcommand.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// URL of the Canopy server.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CANOPY_SERVER",
        default_value = DEFAULT_SERVER,
        value_name = "URL"
    )]
    pub server: String,
    /// Trust the server's certificate if this CA certificate file (PEM) signed it, instead of
    /// the public roots (for a self-signed server, its own cert.pem works too).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CANOPY_CA_FILE",
        value_name = "FILE"
    )]
    pub ca_file: Option<std::path::PathBuf>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint (`sha256:...`, as
    /// `canopy server` and `canopy up` print it); wins over --ca-file.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CANOPY_SERVER_FINGERPRINT",
        value_name = "SHA256",
        value_parser = parse_fingerprint
    )]
    pub server_fingerprint: Option<canopy_tls::Fingerprint>,
    /// Project to act in.
    #[arg(
        long,
        short = 'p',
        global = true,
        help_heading = "Global options",
        env = "CANOPY_PROJECT",
        default_value = "default",
        value_name = "NAME"
    )]
    pub project: String,
    /// Output format.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_enum,
        default_value_t = Format::Table
    )]
    pub output: Format,
    /// Bearer token to authenticate with (default: the one `canopy login` saved for --server).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CANOPY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

fn parse_fingerprint(s: &str) -> Result<canopy_tls::Fingerprint, String> {
    canopy_tls::Fingerprint::parse(s).map_err(|e| e.to_string())
}

impl GlobalArgs {
    /// Whom to trust as the server: the pinned fingerprint, else the CA file, else the public
    /// roots.
    pub fn trust(&self) -> canopy_tls::ClientTrust {
        match (&self.server_fingerprint, &self.ca_file) {
            (Some(fp), _) => canopy_tls::ClientTrust::Pinned(*fp),
            (None, Some(ca)) => canopy_tls::ClientTrust::CaFile(ca.clone()),
            // The fingerprint `canopy up` or `canopy login` saved for this server.
            (None, None) => match auth::saved_fingerprint(&self.server) {
                Some(fp) => canopy_tls::ClientTrust::Pinned(fp),
                None => canopy_tls::ClientTrust::System,
            },
        }
    }

    /// The pinned fingerprint in use, if any (to pass on to agents).
    pub fn pinned_fingerprint(&self) -> Option<String> {
        match self.trust() {
            canopy_tls::ClientTrust::Pinned(fp) => Some(fp.to_string()),
            _ => None,
        }
    }

    /// A client of the server these flags name, without credentials.
    pub fn anonymous_client(&self) -> Result<Client, ClientError> {
        Client::with_trust(&self.server, &self.project, &self.trust())
    }

    /// A client of the server these flags name, with the token of `--token` or the one saved
    /// for that server by `canopy login`.
    pub fn client(&self) -> anyhow::Result<Client> {
        let client = self.anonymous_client()?;
        Ok(
            match auth::resolve_token(client.base_url(), self.token.as_deref())? {
                Some(token) => {
                    auth::check_token_shape(&token)?;
                    client.with_token(token)
                }
                None => client,
            },
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start Canopy on this machine with embedded storage (the quickest way to try it).
    Up(server::UpArgs),
    /// Run the Canopy control plane.
    Server(server::ServerArgs),
    /// Run the edge agent: enroll once with a token, then keep this machine's workloads in
    /// step with the control plane.
    ///
    /// Several replicas of the control plane: give their URLs comma-separated, `--server
    /// https://cp1:7070,https://cp2:7070` (or `CANOPY_SERVER`). The agent sticks to one and
    /// moves to the next when it cannot reach it, with jittered backoff, resuming from the
    /// desired state it holds (nothing running is restarted). Behind one load balancer, give
    /// its URL alone.
    Agent(agent::AgentArgs),
    /// Manage the application catalog: registries, applications, packages, artifacts.
    Catalog(catalog::CatalogArgs),
    /// Deploy packages to edges; follow, change, upgrade and delete deployments.
    #[command(subcommand, visible_alias = "deployments")]
    Deployment(deployment::DeploymentCommand),
    /// The project's edges: list, show, label, remove, see their workloads.
    #[command(subcommand, visible_alias = "edges")]
    Edge(edge::EdgeCommand),
    /// Enrollment tokens, with which edges join the project.
    #[command(subcommand, visible_alias = "enroll-tokens")]
    EnrollToken(enroll_token::EnrollTokenCommand),
    /// The secret key that encrypts stored credentials: rotate it, re-encrypt with it.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Offline recovery on the server's machine: a new administrator token.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Log in to a server as a built-in user (or save an existing token for it).
    Login(auth::LoginArgs),
    /// Log out of a server (ends the session and forgets the saved token).
    Logout,
    /// Show who the server thinks you are, and your roles.
    Whoami,
    /// Built-in users (administrators).
    #[command(subcommand, visible_alias = "users")]
    User(auth::UserCommand),
    /// API tokens for automation.
    #[command(subcommand, visible_alias = "tokens")]
    Token(auth::TokenCommand),
    /// Organizations (administrators).
    #[command(subcommand, visible_alias = "orgs")]
    Org(tenancy::OrgCommand),
    /// Projects: create, list, delete (administrators create and delete).
    #[command(subcommand, visible_alias = "projects")]
    Project(tenancy::ProjectCommand),
    /// The audit log: who changed what, when, and how it ended.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// What runs on the edges: pods (containers) and virtual machines, per deployment and edge.
    #[command(subcommand, visible_alias = "workloads")]
    Workload(workload::WorkloadCommand),
    /// Virtual machines: start, stop, restart, open their console.
    #[command(subcommand, visible_alias = "vms")]
    Vm(vm::VmCommand),
    /// Stream a container's or a virtual machine's log.
    Logs(logs::LogsArgs),
}

/// Runs the CLI with process-style arguments (`args[0]` is the program name), printing results
/// to `out` and errors to standard error. Returns the exit code.
pub fn run<I, T>(args: I, out: &mut (dyn Write + Send)) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    deployment::detect_terminal();
    run_with_io(args, out, &mut io::stderr())
}

/// Like [`run`], with errors written to `err`. Builds its own async runtime; when called from
/// inside one (an async test), it runs on a separate thread so the runtimes do not nest.
pub fn run_with_io<I, T>(args: I, out: &mut (dyn Write + Send), err: &mut (dyn Write + Send)) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match parse(args, out, err) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let runtime = match cli.command {
        // The server wants every core; a client command needs one thread.
        Command::Server(_) | Command::Up(_) | Command::Agent(_) => {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
        }
        Command::Catalog(_)
        | Command::Deployment(_)
        | Command::Edge(_)
        | Command::EnrollToken(_)
        | Command::Login(_)
        | Command::Logout
        | Command::Whoami
        | Command::User(_)
        | Command::Token(_)
        | Command::Org(_)
        | Command::Project(_)
        | Command::Audit(_)
        | Command::Workload(_)
        | Command::Vm(_)
        | Command::Logs(_)
        | Command::Key(_)
        | Command::Admin(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(err, "error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            let handle = s.spawn(|| runtime.block_on(execute(cli, out, err)));
            match handle.join() {
                Ok(code) => code,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    } else {
        runtime.block_on(execute(cli, out, err))
    }
}

/// Runs the CLI on the caller's async runtime (for in-process tests against a test server).
pub async fn run_async<I, T>(
    args: I,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match parse(args, out, err) {
        // Boxed: the command futures are large in debug builds, and a test's own future holds
        // every one it awaits; on a 2 MiB test thread that once overflowed the stack.
        Ok(cli) => Box::pin(execute(cli, out, err)).await,
        Err(code) => code,
    }
}

/// Parses the arguments; on `--help`/`--version` or a usage error prints clap's text and
/// returns the exit code (0 or 2).
fn parse<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> Result<Cli, i32>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Cli::try_parse_from(args).map_err(|e| {
        let text = e.to_string();
        let _ = if e.use_stderr() {
            err.write_all(text.as_bytes())
        } else {
            out.write_all(text.as_bytes())
        };
        e.exit_code()
    })
}

async fn execute(cli: Cli, out: &mut (dyn Write + Send), err: &mut (dyn Write + Send)) -> i32 {
    let result = match cli.command {
        // The long-running commands hold a whole server or agent: boxed so that every other
        // command's future stays small.
        Command::Server(args) => Box::pin(server::run(args)).await,
        Command::Up(args) => Box::pin(server::up(args, out)).await,
        Command::Agent(args) => {
            Box::pin(agent::run(&cli.global.server, cli.global.trust(), args)).await
        }
        Command::Key(c) => key::run(c, out).await,
        Command::Admin(c) => admin::run(c, out).await,
        Command::Login(args) => match cli.global.anonymous_client() {
            Ok(client) => auth::login(args, client, cli.global.pinned_fingerprint(), out).await,
            Err(e) => Err(e.into()),
        },
        Command::Logout => match cli.global.anonymous_client() {
            Ok(client) => auth::logout(client, out).await,
            Err(e) => Err(e.into()),
        },
        Command::Whoami => {
            return with_client(&cli.global, out, err, async move |ctx| {
                auth::whoami(ctx).await
            })
            .await;
        }
        Command::User(c) => {
            return with_client(&cli.global, out, err, async move |ctx| {
                auth::user(c, ctx).await
            })
            .await;
        }
        Command::Token(c) => {
            return with_client(&cli.global, out, err, async move |ctx| {
                auth::token(c, ctx).await
            })
            .await;
        }
        Command::Org(c) => {
            return with_client(&cli.global, out, err, async move |ctx| {
                tenancy::org(c, ctx).await
            })
            .await;
        }
        Command::Audit(c) => {
            return with_client(&cli.global, out, err, async move |ctx| {
                audit::run(c, ctx).await
            })
            .await;
        }
        Command::Project(c) => {
            return with_client(&cli.global, out, err, async move |ctx| {
                tenancy::project(c, ctx).await
            })
            .await;
        }
        Command::Catalog(args) => match cli.global.client() {
            Ok(client) => {
                let mut ctx = Ctx {
                    client,
                    format: cli.global.output,
                    fingerprint: cli.global.pinned_fingerprint(),
                    out,
                    err,
                };
                let result = catalog::run(args, &mut ctx).await;
                let result = explain_missing_project(&ctx.client, result).await;
                let _ = ctx.out.flush();
                return report(result, ctx.err);
            }
            Err(e) => Err(e),
        },
        Command::Deployment(c) => {
            return with_client(&cli.global, out, err, async move |ctx| {
                deployment::run(c, ctx).await
            })
            .await;
        }
        Command::Edge(c) => {
            return with_client(&cli.global, out, err, async move |ctx| {
                edge::run(c, ctx).await
            })
            .await;
        }
        Command::EnrollToken(c) => {
            return with_client(&cli.global, out, err, async move |ctx| {
                enroll_token::run(c, ctx).await
            })
            .await;
        }
        Command::Workload(c) => {
            return with_client(&cli.global, out, err, async move |ctx| {
                workload::run(c, ctx).await
            })
            .await;
        }
        Command::Vm(c) => {
            return with_client(&cli.global, out, err, async move |ctx| {
                vm::run(c, ctx).await
            })
            .await;
        }
        Command::Logs(args) => {
            return with_client(&cli.global, out, err, async move |ctx| {
                logs::run(args, ctx).await
            })
            .await;
        }
    };
    report(result, err)
}

/// Runs a command against the server of the global flags, with output to `out` and errors to
/// `err`; returns the exit code.
async fn with_client(
    global: &GlobalArgs,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
    command: impl AsyncFnOnce(&mut Ctx<'_>) -> anyhow::Result<()>,
) -> i32 {
    let client = match global.client() {
        Ok(client) => client,
        Err(e) => return report(Err(e), err),
    };
    let mut ctx = Ctx {
        client,
        format: global.output,
        fingerprint: global.pinned_fingerprint(),
        out,
        err,
    };
    let result = command(&mut ctx).await;
    let result = explain_missing_project(&ctx.client, result).await;
    let _ = ctx.out.flush();
    report(result, ctx.err)
}

/// Most project names an error lists.
const PROJECTS_SHOWN: usize = 10;

/// The server answers 404 `project NAME not found` both for a project that does not exist and
/// for one the caller has no role on (so project names do not leak). When that is the answer
/// for the project the CLI was told to use (`--project`, `CANOPY_PROJECT`, else `default`), say
/// what may be missing and which projects the caller can use, from `whoami` and the projects
/// the caller sees. Any other result is returned as it is.
async fn explain_missing_project(
    client: &Client,
    result: anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Err(e) = result else { return result };
    let project = client.project();
    let expected = format!("project {} not found", project.escape_debug());
    let is_ours = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ClientError>(),
            Some(ClientError::Api { status, message, .. })
                if *status == reqwest::StatusCode::NOT_FOUND && *message == expected
        )
    });
    if !is_ours {
        return Err(e);
    }
    // Best effort: if the server cannot say more, the original error stands.
    let (Ok(me), Ok(projects)) = (client.whoami().await, client.list_projects().await) else {
        return Err(e);
    };
    Err(anyhow::anyhow!(missing_project_message(
        project,
        &me.roles,
        &projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>()
    )))
}

/// The text of [`explain_missing_project`]: `roles` are the caller's, `visible` the projects
/// the caller sees.
fn missing_project_message(project: &str, roles: &[String], visible: &[&str]) -> String {
    // Administrators and machine-to-machine callers see every project: for them it does not
    // exist.
    let sees_all = roles
        .iter()
        .any(|r| r == "canopy-admin" || r == "ao-m2m-rw");
    let mut names: Vec<&str> = visible.to_vec();
    names.sort_unstable();
    names.dedup();
    let use_one = match names.as_slice() {
        [one] => format!("use -p {one}"),
        _ => "use -p NAME".to_owned(),
    };
    let mut list = names
        .iter()
        .take(PROJECTS_SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > PROJECTS_SHOWN {
        list.push_str(&format!(" and {} more", names.len() - PROJECTS_SHOWN));
    }
    if sees_all {
        if names.is_empty() {
            format!(
                "project {project} not found; there are no projects (create one with `canopy project create`)"
            )
        } else {
            format!("project {project} not found; the projects are: {list} ({use_one})")
        }
    } else if names.is_empty() {
        format!(
            "project {project} not found, or you have no role in it; you have no role in any \
             project (an administrator grants roles such as {project}_cat-r or {project}_ao-rw)"
        )
    } else {
        format!(
            "project {project} not found, or you have no role in it; you have roles in: {list} \
             ({use_one})"
        )
    }
}

/// What a client command works with.
pub(crate) struct Ctx<'a> {
    pub client: Client,
    pub format: Format,
    /// The server certificate fingerprint the CLI pins (printed agent commands pin it too).
    pub fingerprint: Option<String>,
    pub out: &'a mut (dyn Write + Send),
    pub err: &'a mut (dyn Write + Send),
}

impl Ctx<'_> {
    /// Prints one item: `text()` for people, the item itself as JSON/YAML for scripts.
    pub(crate) fn print_item<T: serde::Serialize>(
        &mut self,
        item: &T,
        text: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        match self.format {
            Format::Table => writeln!(self.out, "{}", text())?,
            f => self
                .out
                .write_all(output::structured(f, item)?.as_bytes())?,
        }
        Ok(())
    }

    /// Prints a list: the table for people, the items as JSON/YAML for scripts.
    pub(crate) fn print_table<T: serde::Serialize>(
        &mut self,
        items: &[T],
        table: output::Table,
    ) -> anyhow::Result<()> {
        match self.format {
            Format::Table => self.out.write_all(table.render("").as_bytes())?,
            f => self
                .out
                .write_all(output::structured(f, &items)?.as_bytes())?,
        }
        Ok(())
    }
}

/// An error already shown to the user (e.g. each failed item of a batch): exit 1, print nothing
/// more.
#[derive(Debug)]
pub(crate) struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the command failed")
    }
}

impl std::error::Error for Reported {}

/// Prints a failed command's error (with the server's details and a hint where one helps) and
/// returns the exit code.
fn report(result: anyhow::Result<()>, err: &mut dyn Write) -> i32 {
    let Err(e) = result else { return 0 };
    if e.downcast_ref::<Reported>().is_some() {
        return 1;
    }
    if e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
    {
        // The reader of our output went away (`| head`); nothing useful to say.
        return 1;
    }
    let _ = write_error(&e, err);
    1
}

pub(crate) fn write_error(e: &anyhow::Error, err: &mut dyn Write) -> io::Result<()> {
    writeln!(err, "error: {}", chain_message(e))?;
    let client_error = e.chain().find_map(|c| c.downcast_ref::<ClientError>());
    if let Some(ClientError::Api {
        details,
        error_messages,
        ..
    }) = client_error
    {
        for d in details.iter().chain(error_messages) {
            writeln!(err, "  {d}")?;
        }
    }
    if let Some(hint) = hint(e) {
        writeln!(err, "hint: {hint}")?;
    }
    Ok(())
}

/// The error and its causes joined by `: `, leaving out a cause whose text is already shown
/// (some errors repeat their source in their own message).
pub(crate) fn chain_message(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

/// What the user can do about an error, when the error alone does not say.
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    for cause in e.chain() {
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            return match client {
                ClientError::Unreachable { cause, .. } | ClientError::Transport { cause, .. }
                    if cause.contains("certificate") =>
                {
                    Some(
                        "the server's TLS certificate is not trusted: pass the fingerprint \
                         `canopy server` / `canopy up` printed as --server-fingerprint (or \
                         CANOPY_SERVER_FINGERPRINT), or its CA as --ca-file",
                    )
                }
                ClientError::Unreachable { cause, .. } | ClientError::Transport { cause, .. }
                    if cause.contains("corrupt message") =>
                {
                    Some(
                        "the server does not speak HTTPS (was it started with --insecure-http?); \
                         use an http:// URL",
                    )
                }
                ClientError::Unreachable { url, cause } | ClientError::Transport { url, cause }
                    if url.starts_with("http://") && cause.contains("invalid HTTP version") =>
                {
                    Some(
                        "the server may speak HTTPS (the default of `canopy server` and \
                         `canopy up`); use an https:// URL",
                    )
                }
                ClientError::Unreachable { .. } => Some(
                    "start a server with `canopy server` (or `canopy up`), \
                     or point --server / CANOPY_SERVER at a running one",
                ),
                ClientError::Timeout { .. } => Some("the server may be overloaded; try again"),
                ClientError::InvalidUrl { .. } => {
                    Some("--server / CANOPY_SERVER takes a URL such as https://127.0.0.1:7070")
                }
                _ => None,
            };
        }
        if cause.downcast_ref::<deployment::WatchFailed>().is_some() {
            return Some(
                "nothing was changed or undone, and the agent keeps retrying: fix the cause on the \
                 edge (an image it cannot pull, the engine) and it recovers by itself; for the \
                 package or its values, `canopy deployment update` or `upgrade` it (with \
                 --watch); or delete it",
            );
        }
        if let Some(canopy_server::ServerError::Listen { source, .. }) =
            cause.downcast_ref::<canopy_server::ServerError>()
            && source.kind() == io::ErrorKind::AddrInUse
        {
            return Some(
                "another process (perhaps another canopy server) uses that address; \
                 stop it or pick another with --listen",
            );
        }
    }
    None
}

#[cfg(test)]
mod fleet_tests;
#[cfg(test)]
mod resources_tests;
#[cfg(test)]
mod tests;
