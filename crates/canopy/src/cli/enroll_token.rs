//! `canopy enroll-token ...`: the tokens edges enroll with. A token's secret is shown once, at
//! creation, together with the exact `canopy agent` command to run on the edge; the server keeps
//! only its hash, so a lost secret means a new token.

use std::time::Duration;

use canopy_client::{CreatedEnrollmentToken, NewEnrollmentToken};
use clap::Subcommand;
use serde::Serialize;

use super::Ctx;
use super::args::{duration, human_duration};
use super::output::{token_details, tokens_table};

/// Where the printed agent command keeps the agent's state (credential, desired state).
pub const AGENT_DATA_DIR: &str = "/var/lib/canopy-agent";

#[derive(Debug, Subcommand)]
pub enum EnrollTokenCommand {
    /// Create a token; prints its secret (once) and the command that enrolls an edge with it.
    Create {
        /// What the token is for (shown in lists).
        #[arg(long, default_value = "", value_name = "TEXT")]
        description: String,
        /// How long the token can enroll edges: 90s, 10m, 24h, 7d (server default 24h, at most
        /// 365d).
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        ttl: Option<Duration>,
        /// How many edges may enroll with it (default: unlimited until it expires).
        #[arg(long, value_name = "N", default_value_t = 0)]
        max_uses: u64,
    },
    /// List the project's tokens (never their secrets).
    #[command(visible_alias = "ls")]
    List,
    /// Revoke a token: no further edge can enroll with it (enrolled edges keep working).
    #[command(visible_alias = "rm")]
    Revoke { id: String },
}

/// What `create` prints for scripts: the token, its secret and the agent command.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created<'a> {
    #[serde(flatten)]
    created: &'a CreatedEnrollmentToken,
    agent_command: String,
}

/// Quotes `s` for a POSIX shell when it holds anything but plainly safe characters.
fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command that enrolls an edge with `secret` against `server` (pinning the server's
/// certificate when the CLI pins it).
pub fn agent_command(server: &str, fingerprint: Option<&str>, secret: &str) -> String {
    let pin = fingerprint
        .map(|fp| format!(" --server-fingerprint {}", shell_quote(fp)))
        .unwrap_or_default();
    format!(
        "canopy agent --server {}{pin} --enroll-token {} --data-dir {AGENT_DATA_DIR}",
        shell_quote(server),
        shell_quote(secret)
    )
}

/// True when `url` names this machine only (an edge elsewhere cannot reach it).
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub async fn run(cmd: EnrollTokenCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        EnrollTokenCommand::Create {
            description,
            ttl,
            max_uses,
        } => {
            let created = ctx
                .client
                .create_enrollment_token(&NewEnrollmentToken {
                    description,
                    ttl,
                    max_uses,
                })
                .await?;
            let server = ctx.client.base_url().to_owned();
            let command = agent_command(&server, ctx.fingerprint.as_deref(), &created.secret);
            if ctx.structured() {
                let shown = Created {
                    created: &created,
                    agent_command: command,
                };
                return ctx.print_one(&shown, token_details(&created.token));
            }
            let t = &created.token;
            let expires = match (t.create_time, t.expire_time) {
                (Some(c), Some(e)) if e > c => {
                    format!(
                        "valid for {}",
                        human_duration(Duration::from_secs(
                            u64::try_from((e - c).whole_seconds()).unwrap_or(0)
                        ))
                    )
                }
                _ => "valid".to_owned(),
            };
            let uses = if t.max_uses == 0 {
                "any number of edges".to_owned()
            } else if t.max_uses == 1 {
                "1 edge".to_owned()
            } else {
                format!("{} edges", t.max_uses)
            };
            writeln!(
                ctx.out,
                "created enrollment token {} ({expires}, {uses})",
                t.id
            )?;
            writeln!(
                ctx.out,
                "secret (shown only now; keep it safe): {}",
                created.secret
            )?;
            writeln!(ctx.out)?;
            writeln!(ctx.out, "to enroll an edge, run on it:")?;
            writeln!(ctx.out, "  {command}")?;
            writeln!(
                ctx.out,
                "(add --name NAME and --label KEY=VALUE to name and label the edge)"
            )?;
            if is_loopback(&server) {
                writeln!(
                    ctx.out,
                    "note: {server} is this machine's loopback address; an edge elsewhere needs an address of this server it can reach"
                )?;
            }
            Ok(())
        }
        EnrollTokenCommand::List => {
            let tokens = ctx.client.list_enrollment_tokens().await?;
            ctx.print_list(&tokens, tokens_table(&tokens), None)
        }
        EnrollTokenCommand::Revoke { id } => {
            let t = ctx.client.revoke_enrollment_token(&id).await?;
            if ctx.structured() {
                ctx.print_one(&t, token_details(&t))
            } else {
                ctx.done(format_args!(
                    "revoked enrollment token {}; edges it enrolled keep working",
                    t.id
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_command_is_copy_pasteable() {
        assert_eq!(
            agent_command("http://10.0.0.5:7070", None, "cnt_abc"),
            "canopy agent --server http://10.0.0.5:7070 --enroll-token cnt_abc --data-dir /var/lib/canopy-agent"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn loopback_servers_are_noticed() {
        assert!(is_loopback("http://127.0.0.1:7070"));
        assert!(is_loopback("http://localhost:7070/x"));
        assert!(is_loopback("http://[::1]:7070"));
        assert!(!is_loopback("http://10.0.0.5:7070"));
        assert!(!is_loopback("https://cp.example.com"));
    }
}
