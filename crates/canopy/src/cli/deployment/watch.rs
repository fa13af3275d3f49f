//! `--watch`: follow a deployment until it settles, polling once a second (every poll is an
//! ordinary API request with its own timeout; the whole watch is bounded by `--timeout`).
//!
//! On a terminal the view is redrawn in place (cursor up, clear to the end of the screen, with
//! line wrapping off while drawing so every line takes exactly one row); it shows at most
//! [`TTY_ROWS`] edges, those needing attention first, so a large fleet does not scroll the view
//! off the screen. When the output is a pipe or a file (scripts, CI logs, tests) only lines that
//! changed are printed, so the log reads as a history of transitions rather than a wall of
//! repeated frames.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, IsTerminal as _, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::bail;
use canopy_client::{ClientError, ListParams};
use canopy_deploy::model::{Cluster, Deployment, State};
use clap::Args;
use tokio::time::Instant;

use crate::cli::Ctx;
use crate::cli::args::{duration, human_duration};
use crate::cli::output::{Table, cluster_apps};

use super::failures::{Failures, WatchFailed};

/// How often the watch polls.
const POLL: Duration = Duration::from_secs(1);
/// Most edges a terminal view lists.
pub const TTY_ROWS: usize = 20;
/// Most edges one poll fetches (one page): the header's counts cover every edge anyway.
const WATCHED_EDGES: u32 = canopy_client::MAX_PAGE_SIZE;

/// Set once by [`detect_terminal`] when the process's standard output is a terminal.
static STDOUT_IS_TERMINAL: AtomicBool = AtomicBool::new(false);

/// Records whether standard output is an interactive terminal (called by the binary's entry
/// point only: in-process callers such as tests always get the plain, line-per-change output).
pub fn detect_terminal() {
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    STDOUT_IS_TERMINAL.store(io::stdout().is_terminal() && !dumb, Ordering::Relaxed);
}

/// `--watch`, `--timeout` and `--fail-after`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Follow the deployment until it runs (exit 0) or fails (exit 1): DOWN, ERROR,
    /// NO_TARGET_CLUSTERS, or an app failing on an edge in a way waiting will not fix (an
    /// image that cannot be pulled, at once; any other failure the agent reports the same for
    /// --fail-after). Failures that may pass (timeouts, refused connections) are waited through.
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Give up watching after this long (exit 1): 90s, 10m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "10m", requires = "watch")]
    pub timeout: Duration,
    /// Stop watching (exit 1) when an app has reported the same failure this long (an image
    /// that cannot be pulled stops it at once; timeouts and refused connections never do).
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "1m", requires = "watch")]
    pub fail_after: Duration,
}

/// One line of a view: `key` identifies it across frames, `label` names it, `cells` fill the
/// terminal table and `line` is what a pipe gets when it changes. Rows needing `attention` are
/// listed first when a terminal view cannot show them all.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: String,
    pub label: String,
    pub cells: Vec<String>,
    pub line: String,
    pub attention: bool,
}

/// What one poll shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub header: String,
    pub columns: &'static [&'static str],
    pub rows: Vec<Row>,
    /// Shown under the header on a terminal when there are no rows.
    pub empty: &'static str,
    /// Rows that exist but were not fetched.
    pub unfetched: u64,
}

/// A view redrawn frame after frame.
#[derive(Debug, Default)]
pub struct Live {
    tty: bool,
    /// Lines of the last frame on screen (terminal).
    drawn: usize,
    /// Last header and lines printed (pipe).
    header: Option<String>,
    shown: BTreeMap<String, (String, String)>,
}

impl Live {
    pub fn new(tty: bool) -> Live {
        Live {
            tty,
            ..Default::default()
        }
    }

    /// Shows `frame`: redrawn over the previous one on a terminal, else only what changed.
    pub fn show(&mut self, out: &mut dyn Write, frame: &Frame) -> io::Result<()> {
        if self.tty {
            let mut text = format!("{}\n", frame.header);
            let picked = pick(&frame.rows, TTY_ROWS);
            if picked.is_empty() {
                text.push_str(&format!("  {}\n", frame.empty));
            } else {
                let mut t = Table::new(frame.columns);
                for r in &picked {
                    t.push(r.cells.clone());
                }
                text.push_str(&t.render("  "));
            }
            let more = (frame.rows.len() - picked.len()) as u64 + frame.unfetched;
            if more > 0 {
                text.push_str(&format!("  … and {more} more\n"));
            }
            if self.drawn > 0 {
                // Up to the first line of the previous frame, then clear to the end of screen.
                write!(out, "\x1b[{}A\r\x1b[J", self.drawn)?;
            }
            // Auto-wrap off while drawing: a long line is cut at the edge of the screen instead
            // of taking two rows, so the next redraw goes up exactly as many rows as it drew.
            write!(out, "\x1b[?7l{text}\x1b[?7h")?;
            self.drawn = text.lines().count();
        } else {
            if self.header.as_deref() != Some(frame.header.as_str()) {
                writeln!(out, "{}", frame.header)?;
                self.header = Some(frame.header.clone());
            }
            let keys: BTreeSet<&str> = frame.rows.iter().map(|r| r.key.as_str()).collect();
            let gone: Vec<String> = self
                .shown
                .keys()
                .filter(|k| !keys.contains(k.as_str()))
                .cloned()
                .collect();
            for k in gone {
                if let Some((label, _)) = self.shown.remove(&k) {
                    writeln!(out, "  {label}: no longer listed")?;
                }
            }
            for r in &frame.rows {
                if self.shown.get(&r.key).map(|(_, l)| l) != Some(&r.line) {
                    writeln!(out, "{}", r.line)?;
                    self.shown
                        .insert(r.key.clone(), (r.label.clone(), r.line.clone()));
                }
            }
        }
        out.flush()
    }
}

/// Up to `max` rows, those needing attention first, in their original order.
fn pick(rows: &[Row], max: usize) -> Vec<&Row> {
    let mut chosen: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].attention)
        .take(max)
        .collect();
    let room = max - chosen.len();
    chosen.extend((0..rows.len()).filter(|&i| !rows[i].attention).take(room));
    chosen.sort_unstable();
    chosen.into_iter().map(|i| &rows[i]).collect()
}

/// States a watch stops at; `Some(true)` for success.
pub fn settled(state: State) -> Option<bool> {
    match state {
        State::Running => Some(true),
        State::Down | State::Error | State::InternalError | State::NoTargetClusters => Some(false),
        _ => None,
    }
}

/// The frame of a deployment and (some of) its edges; `listed` edges exist in all.
pub fn deployment_frame(d: &Deployment, clusters: &[Cluster], listed: u64) -> Frame {
    let status = d.status.clone().unwrap_or_default();
    let (running, total) = status
        .summary
        .as_ref()
        .map(|s| (s.running, s.total))
        .unwrap_or((0, 0));
    let mut header = format!(
        "deployment {} ({}): {}, {running}/{total} edges running",
        d.name, d.deploy_id, status.state
    );
    // A running deployment's message only repeats the counts.
    if status.state != State::Running && !status.message.trim().is_empty() {
        header.push_str(&format!(" ({})", status.message.trim()));
    }
    let rows = clusters
        .iter()
        .map(|c| {
            let apps = cluster_apps(c);
            let message = c.status.message.trim().to_owned();
            let mut line = format!("  {}: {}, {apps} apps running", c.name, c.status.state);
            if !message.is_empty() {
                line.push_str(&format!(" ({message})"));
            }
            Row {
                key: c.id.clone(),
                label: c.name.clone(),
                cells: vec![
                    c.name.clone(),
                    c.status.state.as_str().to_owned(),
                    apps,
                    message,
                ],
                line,
                attention: c.status.state != State::Running,
            }
        })
        .collect();
    Frame {
        header,
        columns: &["Edge", "State", "Apps", "Message"],
        rows,
        empty: "(no edges yet)",
        unfetched: listed.saturating_sub(clusters.len() as u64),
    }
}

fn sleep_until_next(deadline: Instant) -> tokio::time::Sleep {
    let next = (Instant::now() + POLL).min(deadline);
    tokio::time::sleep_until(next)
}

/// Where progress goes: the output for people, standard error when the output is for scripts
/// (which then get the final entity alone).
fn progress<'c>(ctx: &'c mut Ctx<'_>) -> &'c mut dyn Write {
    if ctx.structured() {
        &mut *ctx.err
    } else {
        &mut *ctx.out
    }
}

/// True for failures worth polling through (the server restarting, a slow answer, a rate
/// limit).
fn transient(e: &ClientError) -> bool {
    e.is_unreachable()
        || e.status()
            .is_some_and(|s| s.is_server_error() || s == reqwest::StatusCode::TOO_MANY_REQUESTS)
}

/// Polls deployment `id` and its edges until it settles or `--timeout` passes. Returns the last
/// deployment seen; fails when it settles in a failed state, an app fails for good (see
/// [`super::failures`]) or time runs out.
pub async fn watch_deployment(
    ctx: &mut Ctx<'_>,
    id: &str,
    args: &WatchArgs,
) -> anyhow::Result<Deployment> {
    let timeout = args.timeout;
    let tty = STDOUT_IS_TERMINAL.load(Ordering::Relaxed) && !ctx.structured();
    let mut live = Live::new(tty);
    let deadline = Instant::now() + timeout;
    let mut last: Option<Deployment> = None;
    let mut failures = Failures::new(args.fail_after);
    loop {
        let polled = async {
            let d = ctx.client.get_deployment(id).await?;
            let page = ListParams {
                page_size: Some(WATCHED_EDGES),
                ..Default::default()
            };
            let clusters = ctx.client.deployment_clusters(id, &page).await?;
            Ok::<_, ClientError>((d, clusters))
        }
        .await;
        match polled {
            Ok((d, clusters)) => {
                let frame = deployment_frame(&d, &clusters.items, clusters.total);
                live.show(progress(ctx), &frame)?;
                let state = d.status.as_ref().map(|s| s.state).unwrap_or_default();
                match settled(state) {
                    Some(true) => return Ok(d),
                    Some(false) => {
                        let message = d
                            .status
                            .as_ref()
                            .map(|s| s.message.trim())
                            .filter(|m| !m.is_empty())
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default();
                        bail!("deployment {} is {state}{message}", d.deploy_id);
                    }
                    None => {
                        // Still rolling out: is anything failing for good?
                        let now = std::time::Instant::now();
                        for c in failures.pick_edges(&clusters.items) {
                            // Best effort: an edge that cannot be read now (gone, a
                            // moment's outage, the rate limit) is looked at another time.
                            if let Ok(reports) = ctx.client.edge_workloads(&c.id).await {
                                failures.observe(c, &reports, id, now);
                            }
                        }
                        let failing = failures.verdict(now);
                        if !failing.is_empty() {
                            return Err(WatchFailed {
                                deployment: format!("{} ({})", d.name, d.deploy_id),
                                failing,
                                at: now,
                            }
                            .into());
                        }
                        last = Some(d);
                    }
                }
            }
            Err(e) if transient(&e) => {
                writeln!(progress(ctx), "  ({e}; retrying)")?;
            }
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            let state = last
                .as_ref()
                .and_then(|d| d.status.as_ref())
                .map(|s| s.state.as_str())
                .unwrap_or("unknown");
            bail!(
                "gave up watching after {}: deployment {id} is still {state} (watch longer with --timeout)",
                human_duration(timeout)
            );
        }
        sleep_until_next(deadline).await;
    }
}

/// An edge a deleted deployment ran on.
#[derive(Debug, Clone)]
pub struct EdgeRef {
    pub id: String,
    pub name: String,
}

/// Polls until `GET` of the deleted deployment answers 404, then until none of `edges`
/// reports apps of any of `deleted` any more (or `timeout` passes).
pub async fn watch_delete(
    ctx: &mut Ctx<'_>,
    id: &str,
    deleted: &BTreeSet<String>,
    edges: &[EdgeRef],
    timeout: Duration,
) -> anyhow::Result<()> {
    let tty = STDOUT_IS_TERMINAL.load(Ordering::Relaxed) && !ctx.structured();
    let deadline = Instant::now() + timeout;
    let gave_up = |what: &str| {
        anyhow::anyhow!(
            "gave up watching after {}: {what} (watch longer with --timeout)",
            human_duration(timeout)
        )
    };
    // The deployment itself: gone at once here, but a server may keep it while terminating.
    loop {
        match ctx.client.get_deployment(id).await {
            Err(e) if e.is_not_found() => break,
            Err(e) if transient(&e) => writeln!(progress(ctx), "  ({e}; retrying)")?,
            Err(e) => return Err(e.into()),
            Ok(d) => {
                let state = d.status.map(|s| s.state).unwrap_or_default();
                writeln!(progress(ctx), "deployment {id} is {state}")?;
            }
        }
        if Instant::now() >= deadline {
            return Err(gave_up(&format!("deployment {id} still exists")));
        }
        sleep_until_next(deadline).await;
    }
    let mut live = Live::new(tty);
    let mut pending: Vec<EdgeRef> = edges.to_vec();
    let mut targets: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    loop {
        let mut rows = Vec::new();
        let mut still = Vec::new();
        for e in &pending {
            // Done when the edge's agent has applied a generation without the deployment (its
            // workloads are then removed) and reports none of its apps.
            let applied = match ctx.client.get_edge(&e.id).await {
                // An edge that never connected runs nothing; a silent one removes the apps
                // when it reconnects (its desired state no longer has them): neither is waited on.
                Ok(edge) if edge.last_seen.is_none() || edge.state == "UNKNOWN" => true,
                Ok(edge) => {
                    let target = *targets.entry(e.id.clone()).or_insert(edge.generation);
                    edge.applied_generation >= target
                }
                Err(err) if err.is_not_found() => true,
                Err(err) if transient(&err) => {
                    writeln!(progress(ctx), "  ({err}; retrying)")?;
                    still.push(e.clone());
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            let left = match ctx.client.edge_workloads(&e.id).await {
                Ok(apps) => apps
                    .iter()
                    .filter(|a| deleted.contains(&a.deployment_id))
                    .count(),
                // A removed edge runs nothing Canopy can see.
                Err(err) if err.is_not_found() => 0,
                Err(err) if transient(&err) => {
                    writeln!(progress(ctx), "  ({err}; retrying)")?;
                    still.push(e.clone());
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            let left = if applied { left } else { left.max(1) };
            let status = if left == 0 {
                "apps removed".to_owned()
            } else if !applied {
                "removing (the agent has not applied the change yet)".to_owned()
            } else {
                format!("{left} apps still reported")
            };
            rows.push(Row {
                key: e.id.clone(),
                label: e.name.clone(),
                cells: vec![e.name.clone(), status.clone()],
                line: format!("  {}: {status}", e.name),
                attention: left > 0,
            });
            if left > 0 {
                still.push(e.clone());
            }
        }
        let frame = Frame {
            header: format!(
                "deployment {id} deleted: {} of {} edges still run its apps",
                still.len(),
                edges.len()
            ),
            columns: &["Edge", "Apps"],
            rows,
            empty: "(no edges ran it)",
            unfetched: 0,
        };
        live.show(progress(ctx), &frame)?;
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let names: Vec<&str> = still.iter().map(|e| e.name.as_str()).collect();
            return Err(gave_up(&format!(
                "edges {} still report apps of deployment {id}",
                names.join(", ")
            )));
        }
        pending = still;
        sleep_until_next(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use canopy_deploy::model::{App, DeploymentStatus, Summary};

    use super::*;

    fn cluster(id: &str, state: State, running: u32, total: u32, message: &str) -> Cluster {
        Cluster {
            apps: Vec::new(),
            id: id.into(),
            name: format!("edge-{id}"),
            status: DeploymentStatus {
                state,
                message: message.into(),
                summary: Some(Summary {
                    total,
                    running,
                    summary_type: "appCounts".into(),
                    ..Default::default()
                }),
            },
        }
    }

    fn deployment(state: State, running: u32, total: u32) -> Deployment {
        Deployment {
            deploy_id: "d1".into(),
            name: "deployment-abcde".into(),
            status: Some(DeploymentStatus {
                state,
                message: String::new(),
                summary: Some(Summary {
                    total,
                    running,
                    summary_type: "clusterCounts".into(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn settles_on_running_and_failures() {
        assert_eq!(settled(State::Running), Some(true));
        for s in [State::Down, State::Error, State::NoTargetClusters] {
            assert_eq!(settled(s), Some(false), "{s}");
        }
        for s in [
            State::Deploying,
            State::Updating,
            State::Unknown,
            State::Terminating,
        ] {
            assert_eq!(settled(s), None, "{s}");
        }
    }

    #[test]
    fn pipes_get_only_changed_lines() {
        let mut live = Live::new(false);
        let mut out = Vec::new();
        let d = deployment(State::Deploying, 0, 2);
        let a = cluster("1", State::Deploying, 0, 2, "");
        let b = cluster("2", State::Deploying, 0, 2, "");
        live.show(&mut out, &deployment_frame(&d, &[a.clone(), b.clone()], 2))
            .unwrap();
        // Nothing changed: nothing printed.
        live.show(&mut out, &deployment_frame(&d, &[a.clone(), b.clone()], 2))
            .unwrap();
        let a2 = cluster("1", State::Running, 2, 2, "");
        live.show(&mut out, &deployment_frame(&d, &[a2.clone(), b.clone()], 2))
            .unwrap();
        let d2 = deployment(State::Running, 2, 2);
        let b2 = cluster("2", State::Running, 2, 2, "");
        live.show(&mut out, &deployment_frame(&d2, &[a2, b2], 2))
            .unwrap();
        live.show(&mut out, &deployment_frame(&d2, &[], 0)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "deployment deployment-abcde (d1): DEPLOYING, 0/2 edges running\n\
             \x20 edge-1: DEPLOYING, 0/2 apps running\n\
             \x20 edge-2: DEPLOYING, 0/2 apps running\n\
             \x20 edge-1: RUNNING, 2/2 apps running\n\
             deployment deployment-abcde (d1): RUNNING, 2/2 edges running\n\
             \x20 edge-2: RUNNING, 2/2 apps running\n\
             \x20 edge-1: no longer listed\n\
             \x20 edge-2: no longer listed\n"
        );
    }

    #[test]
    fn terminals_get_the_frame_redrawn_in_place() {
        let mut live = Live::new(true);
        let mut out = Vec::new();
        let d = deployment(State::Deploying, 0, 0);
        live.show(&mut out, &deployment_frame(&d, &[], 0)).unwrap();
        let mut c = cluster("1", State::Down, 0, 1, "image not found");
        c.apps = vec![App {
            id: "a".into(),
            name: "web".into(),
            status: None,
        }];
        live.show(&mut out, &deployment_frame(&d, &[c], 1)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "\x1b[?7ldeployment deployment-abcde (d1): DEPLOYING, 0/0 edges running\n\
             \x20 (no edges yet)\n\x1b[?7h\
             \x1b[2A\r\x1b[J\
             \x1b[?7ldeployment deployment-abcde (d1): DEPLOYING, 0/0 edges running\n\
             \x20 Edge     State   Apps   Message\n\
             \x20 edge-1   DOWN    0/1    image not found\n\x1b[?7h"
        );
        assert_eq!(live.drawn, 3);
    }

    #[test]
    fn terminals_show_edges_needing_attention_first() {
        let d = deployment(State::Deploying, 0, 0);
        let mut clusters: Vec<Cluster> = (0..30)
            .map(|i| cluster(&format!("{i:02}"), State::Running, 1, 1, ""))
            .collect();
        clusters[25].status.state = State::Down;
        let frame = deployment_frame(&d, &clusters, 40);
        let picked = pick(&frame.rows, TTY_ROWS);
        assert_eq!(picked.len(), TTY_ROWS);
        assert_eq!(picked[0].label, "edge-00");
        assert_eq!(
            picked[19].label, "edge-25",
            "the DOWN edge is kept, in order"
        );
        let mut live = Live::new(true);
        let mut out = Vec::new();
        live.show(&mut out, &frame).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("  … and 20 more\n\x1b[?7h"), "{text}");
        assert_eq!(live.drawn, 1 + 1 + TTY_ROWS + 1);
    }
}
