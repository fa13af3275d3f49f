//! `GET /canopy/v1/projects/{projectName}/catalog/events`: the project's catalog changes as
//! Server-Sent Events. On subscribe the current state is replayed (`op: replayed`, unless
//! `noReplay=true`), then every committed change follows as it happens. Each SSE message has
//! `event: <op>` and a JSON `data` line holding a [`CatalogEvent`]. A subscriber that falls more
//! than the channel capacity behind receives `event: resync` and the stream ends; it should
//! reconnect (and gets a fresh replay).

use std::convert::Infallible;

use axum::extract::{Path, RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt, stream};
use tokio_stream::wrappers::BroadcastStream;
use utoipa::IntoParams;

use super::Caller;
use crate::app::{App, AppError};
use crate::events::{CatalogEvent, EventKind};

/// Event stream query parameters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "documents the query string; parsed in the handler"
)]
pub struct EventParams {
    /// Comma-separated entity kinds: Registry, Application, DeploymentPackage, Artifact (default all).
    kinds: Option<String>,
    /// Skip the replay of current state.
    no_replay: Option<bool>,
}

fn sse(e: &CatalogEvent, op: &str) -> Event {
    Event::default()
        .event(op)
        .json_data(e)
        .unwrap_or_else(|_| Event::default().event("error"))
}

#[utoipa::path(get, path = "/canopy/v1/projects/{projectName}/catalog/events", tag = "Canopy",
    description = "Server-Sent Events stream of catalog changes of one project (created / updated / deleted), \
                   preceded by a replay of the current state (`replayed`). Each `data` line is a CatalogEvent.",
    params(("projectName" = String, Path), EventParams),
    responses((status = 200, description = "text/event-stream of CatalogEvent", content_type = "text/event-stream", body = CatalogEvent),
              (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn catalog_events(
    State(app): State<App>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let c = caller.ctx(&app, &project).await?;
    let mut kinds: Vec<EventKind> = Vec::new();
    let mut replay = true;
    for (k, v) in canopy_core::list::form_pairs(q.as_deref().unwrap_or(""))? {
        match k.as_str() {
            "kinds" => {
                for part in v.split(',').filter(|p| !p.trim().is_empty()) {
                    kinds.push(EventKind::parse(part).ok_or_else(|| {
                        AppError::Invalid(format!(
                            "invalid kinds value {part:?}: expected Registry, Application, DeploymentPackage or Artifact"
                        ))
                    })?);
                }
            }
            "noReplay" => replay = !canopy_core::list::parse_bool("noReplay", &v)?,
            other => {
                return Err(AppError::Invalid(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    if kinds.is_empty() {
        kinds = vec![
            EventKind::Registry,
            EventKind::Application,
            EventKind::DeploymentPackage,
            EventKind::Artifact,
        ];
    }
    c.require(crate::app::Access::CatalogRead)?;
    // Subscribe before reading the snapshot so no change falls between the two.
    let live = BroadcastStream::new(app.events().subscribe(c.project.id));
    let snapshot = if replay {
        app.replay(&c, &kinds).await?
    } else {
        Vec::new()
    };
    let replayed = stream::iter(snapshot.into_iter().map(|e| Ok(sse(&e, "replayed"))));
    let live = live
        .take_while(|r| futures::future::ready(r.is_ok()))
        .chain(stream::once(async {
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(0))
        }))
        .filter_map(move |r| {
            let kinds = kinds.clone();
            async move {
                match r {
                    Ok(e) if kinds.contains(&e.kind) => {
                        let op = serde_json::to_value(e.op).ok()?.as_str()?.to_string();
                        Some(Ok(sse(&e, &op)))
                    }
                    Ok(_) => None,
                    Err(_) => Some(Ok(Event::default()
                        .event("resync")
                        .data("subscriber fell behind; reconnect"))),
                }
            }
        });
    // The stream ends when the server shuts down, so graceful shutdown never waits on it.
    let stream = replayed.chain(live).take_until(app.shutting_down());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
