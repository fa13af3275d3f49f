//! Credentials and identity commands: `canopy login` / `logout` / `whoami`, built-in users
//! (`canopy user ...`) and API tokens (`canopy token ...`).
//!
//! The CLI sends a bearer token on every request. It comes from `--token` / `CANOPY_TOKEN`,
//! else from the credentials file, where `canopy login` (and `canopy up`, for the server it
//! starts) saves one token per server URL. The file is `$CANOPY_CREDENTIALS`, else
//! `$XDG_CONFIG_HOME/canopy/credentials.json`, else `~/.config/canopy/credentials.json`, and is
//! written with mode 0600. Tokens are never printed except the one a `token create` makes.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use canopy_client::Client;
use clap::Subcommand;
use serde::{Deserialize, Serialize};

use super::Ctx;
use super::args::duration;
use super::output::Table;

/// One saved credential.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Saved {
    pub token: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The server certificate's fingerprint, pinned for this server from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// The credentials file: a token per server URL.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub servers: BTreeMap<String, Saved>,
}

/// Where the credentials file is.
pub fn credentials_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CANOPY_CREDENTIALS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("canopy").join("credentials.json"))
}

/// The key a server's credential is saved under.
fn key(server: &str) -> String {
    server.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl Credentials {
    /// Reads the file (missing = empty).
    pub fn load(path: &Path) -> anyhow::Result<Credentials> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a Canopy credentials file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the file, readable by its owner only, atomically and durably (`canopy-fs`).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        canopy_fs::AtomicFile::new(path)
            .mode(0o600)
            .write(&serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The token saved for `server`.
    pub fn token_for(&self, server: &str) -> Option<&str> {
        self.servers.get(&key(server)).map(|s| s.token.as_str())
    }
}

/// Saves `token` (and the certificate fingerprint to pin, if any) as the credential for
/// `server`; returns the file written.
pub fn save_token(
    server: &str,
    token: &str,
    user: &str,
    fingerprint: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let path = credentials_path()
        .context("cannot tell where to save credentials: set CANOPY_CREDENTIALS or HOME")?;
    let mut creds = Credentials::load(&path)?;
    creds.servers.insert(
        key(server),
        Saved {
            token: token.trim().to_string(),
            user: user.to_string(),
            fingerprint: fingerprint.map(str::to_string),
        },
    );
    creds.save(&path)?;
    Ok(path)
}

/// The certificate fingerprint saved for `server` (unreadable files and bad values count as
/// none: the TLS handshake then says what is wrong).
pub fn saved_fingerprint(server: &str) -> Option<canopy_tls::Fingerprint> {
    let creds = Credentials::load(&credentials_path()?).ok()?;
    let fp = creds.servers.get(&key(server))?.fingerprint.as_deref()?;
    canopy_tls::Fingerprint::parse(fp).ok()
}

/// The token to use with `server`: the explicit one, else the saved one.
pub fn resolve_token(server: &str, explicit: Option<&str>) -> anyhow::Result<Option<String>> {
    if let Some(t) = explicit.filter(|t| !t.trim().is_empty()) {
        return Ok(Some(t.trim().to_string()));
    }
    let Some(path) = credentials_path() else {
        return Ok(None);
    };
    Ok(Credentials::load(&path)?
        .token_for(server)
        .map(str::to_string))
}

/// Reads a secret: the first line of standard input with `--password-stdin`, else a prompt on
/// the terminal without echo.
fn read_secret(prompt: &str, from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    rpassword::prompt_password(prompt)
        .context("cannot read a password from the terminal (use --password-stdin)")
}

/// Reads a new password: from standard input as [`read_secret`], or prompted twice on the
/// terminal, so a typo is caught before it becomes the password.
fn read_new_secret(prompt: &str, from_stdin: bool) -> anyhow::Result<String> {
    let first = read_secret(prompt, from_stdin)?;
    if !from_stdin {
        let again = read_secret("repeat it: ", false)?;
        if again != first {
            anyhow::bail!("the two passwords differ: nothing was changed");
        }
    }
    Ok(first)
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Built-in user to log in as.
    #[arg(long, short = 'u', default_value = "admin", value_name = "NAME")]
    pub user: String,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// Save an existing token instead of logging in with a password (e.g. the bootstrap
    /// administrator token, or an API token).
    #[arg(long, value_name = "FILE", conflicts_with = "password_stdin")]
    pub token_file: Option<PathBuf>,
}

/// `canopy login`.
pub async fn login(
    args: LoginArgs,
    client: Client,
    fingerprint: Option<String>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let server = client.base_url().to_string();
    let (token, user) = match args.token_file {
        Some(file) => {
            let token = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let token = token.trim().to_string();
            let who = client
                .with_token(token.clone())
                .whoami()
                .await
                .context("the server does not accept that token")?;
            (token, who.actor)
        }
        None => {
            let password = read_secret(
                &format!("password for {}: ", args.user),
                args.password_stdin,
            )?;
            let issued = client.login(&args.user, &password).await?;
            (issued.token.clone(), issued.user.clone())
        }
    };
    let path = save_token(&server, &token, &user, fingerprint.as_deref())?;
    writeln!(
        out,
        "logged in to {server} as {user} (credentials saved in {})",
        path.display()
    )?;
    Ok(())
}

/// `canopy logout`: ends a login session and forgets the saved credential.
pub async fn logout(client: Client, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let server = client.base_url().to_string();
    let path = credentials_path().context("no credentials file location (set HOME)")?;
    let mut creds = Credentials::load(&path)?;
    let Some(saved) = creds.servers.remove(&key(&server)) else {
        writeln!(out, "not logged in to {server}")?;
        return Ok(());
    };
    let session = saved.token.starts_with("cnp_s_");
    if session {
        // A session ends at the server too; other tokens stay valid (the server's logout ends
        // sessions only).
        let _ = client.with_token(saved.token).logout().await;
    }
    creds.save(&path)?;
    if session {
        writeln!(out, "logged out of {server}")?;
    } else {
        writeln!(
            out,
            "logged out of {server}: forgot the saved token, which was not a login session and \
             stays valid (revoke an API token with `canopy token revoke ID`)"
        )?;
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a built-in user.
    Create {
        name: String,
        /// A role: canopy-admin, ao-m2m-rw, <project>_cat-r, <project>_cat-rw,
        /// <project>_ao-rw, <project>_ao-r. Repeatable.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Set a password (prompted, or read from standard input with --password-stdin). Without
        /// one the user works with API tokens only.
        #[arg(long)]
        password: bool,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long, requires = "password")]
        password_stdin: bool,
    },
    /// List built-in users.
    #[command(visible_alias = "ls")]
    List,
    /// Replace a user's roles.
    SetRoles {
        name: String,
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Set a user's password (your own, or anyone's as an administrator). Changing your own
    /// asks for your current password first.
    Passwd {
        name: String,
        /// Read the password from standard input: the new one on the first line, or, when you
        /// change your own, the current one on the first line and the new one on the second.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user and all their tokens.
    #[command(visible_alias = "rm")]
    Delete { name: String },
}

pub async fn user(cmd: UserCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create {
            name,
            roles,
            password,
            password_stdin,
        } => {
            let pw = if password {
                Some(read_new_secret(
                    &format!("password for {name}: "),
                    password_stdin,
                )?)
            } else {
                None
            };
            let u = ctx.client.create_user(&name, pw.as_deref(), &roles).await?;
            ctx.print_item(&u, || {
                format!(
                    "created user {} with roles [{}]",
                    u.name,
                    u.roles.join(", ")
                )
            })
        }
        UserCommand::List => {
            let users = ctx.client.list_users().await?;
            let mut t = Table::new(&["NAME", "ROLES", "PASSWORD", "CREATED"]);
            for u in &users {
                t.push(vec![
                    u.name.clone(),
                    u.roles.join(","),
                    if u.has_password { "yes" } else { "no" }.into(),
                    u.create_time.clone(),
                ]);
            }
            ctx.print_table(&users, t)
        }
        UserCommand::SetRoles { name, roles } => {
            let u = ctx.client.update_user(&name, Some(&roles), None).await?;
            ctx.print_item(&u, || {
                format!("user {} now has roles [{}]", u.name, u.roles.join(", "))
            })
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            // Your own password (when you have one) needs the current one: a token alone must
            // not be enough to take an account over.
            let me = ctx.client.whoami().await?;
            let own = me.kind == "user" && me.actor == name;
            let current = if own && ctx.client.get_user(&name).await?.has_password {
                Some(read_secret(
                    &format!("current password for {name}: "),
                    password_stdin,
                )?)
            } else {
                None
            };
            let pw = read_new_secret(&format!("new password for {name}: "), password_stdin)?;
            ctx.client
                .set_password(&name, &pw, current.as_deref())
                .await?;
            writeln!(ctx.out, "password of {name} changed")?;
            Ok(())
        }
        UserCommand::Delete { name } => {
            ctx.client.delete_user(&name).await?;
            writeln!(ctx.out, "deleted user {name} and its tokens")?;
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for automation; prints it once.
    Create {
        /// What the token is for (shown in lists).
        name: String,
        /// Lifetime: 1h, 30d, ... (default: does not expire).
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        ttl: Option<Duration>,
        /// Administrators: the user the token acts as (default: you).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// List your tokens (or everyone's with --all, administrators).
    #[command(visible_alias = "ls")]
    List {
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token: it stops working at once.
    #[command(visible_alias = "rm")]
    Revoke { id: String },
}

pub async fn token(cmd: TokenCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { name, ttl, user } => {
            let t = ctx
                .client
                .create_api_token(&name, ttl.map(|d| d.as_secs().max(1)), user.as_deref())
                .await?;
            if ctx.format != super::Format::Table {
                ctx.out
                    .write_all(super::output::structured(ctx.format, &t)?.as_bytes())?;
                return Ok(());
            }
            writeln!(ctx.out, "created API token {} for {}", t.id, t.user)?;
            writeln!(ctx.out, "token (shown only now; keep it safe): {}", t.token)?;
            Ok(())
        }
        TokenCommand::List { all } => {
            let tokens = ctx.client.list_api_tokens(all).await?;
            let mut t = Table::new(&["ID", "NAME", "USER", "KIND", "CREATED", "EXPIRES"]);
            for k in &tokens {
                t.push(vec![
                    k.id.clone(),
                    k.name.clone(),
                    k.user.clone(),
                    k.kind.clone(),
                    k.create_time.clone(),
                    if k.expire_time.is_empty() {
                        "never".into()
                    } else {
                        k.expire_time.clone()
                    },
                ]);
            }
            ctx.print_table(&tokens, t)
        }
        TokenCommand::Revoke { id } => {
            ctx.client.revoke_api_token(&id).await?;
            writeln!(ctx.out, "revoked token {id}")?;
            Ok(())
        }
    }
}

/// `canopy whoami`.
pub async fn whoami(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let w = ctx.client.whoami().await?;
    let server = ctx.client.base_url().to_string();
    ctx.print_item(&w, || {
        format!(
            "{} ({}) on {server}\nroles: {}",
            w.actor,
            w.kind,
            if w.roles.is_empty() {
                "(none)".to_string()
            } else {
                w.roles.join(", ")
            }
        )
    })
}

/// Refuses an obviously unusable token early, with the fix.
pub fn check_token_shape(token: &str) -> anyhow::Result<()> {
    if token.chars().any(|c| c.is_control() || c == ' ') {
        bail!("the token contains spaces or control characters; paste only the token");
    }
    Ok(())
}
