//! Consoles and logs of edge workloads: the access rules and the audit trail around the tunnel
//! broker (`crate::tunnels`).
//!
//! Why here and not in the handlers: opening a VM's console hands its keyboard to the caller,
//! so it needs deployment write access (logs need read access) and every attempt is recorded
//! in the audit log with who, which workload on which edge, and the outcome. The HTTP layer's
//! audit middleware records only mutating methods and knows nothing of edges, so the record is
//! written here, once the outcome is known.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use canopy_proto::{TunnelRequest, TunnelTarget, WorkloadKind};

use super::{Access, AgentCtx, App, AppError, Ctx, WorkloadRef};
use crate::tunnels::peer::{LATE_NOTE_WAIT, PeerError};
use crate::tunnels::{Claim, Permit, Tunnel, TunnelError, TunnelStream};

/// Largest `tail` of a logs request.
pub const MAX_LOG_TAIL: u32 = 10_000;
/// `tail` of a logs request that names none.
pub const DEFAULT_LOG_TAIL: u32 = 100;

/// How often a waiting or open tunnel checks that its edge still exists.
const EDGE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// What a tunnel is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelKind {
    /// A VM's VNC display (RFB), both ways.
    Vnc,
    /// A VM's serial console, both ways.
    Serial,
    /// A container's or VM's log: the last `tail` lines, then new ones with `follow`.
    Logs { follow: bool, tail: u32 },
}

impl TunnelKind {
    /// The access the caller needs.
    pub fn access(self) -> Access {
        match self {
            TunnelKind::Vnc | TunnelKind::Serial => Access::FleetWrite,
            TunnelKind::Logs { .. } => Access::FleetRead,
        }
    }

    /// The audit log's action.
    fn action(self) -> &'static str {
        match self {
            TunnelKind::Vnc => "TUNNEL vnc",
            TunnelKind::Serial => "TUNNEL serial",
            TunnelKind::Logs { .. } => "TUNNEL logs",
        }
    }
}

/// An open tunnel and what ends it early.
pub struct OpenTunnel {
    /// The agent's connection: the workload's bytes.
    pub io: Tunnel,
    /// Resolves when the tunnel must close although neither end did: the control plane is
    /// shutting down or the edge was removed. The value says which.
    pub ended: Pin<Box<dyn Future<Output = &'static str> + Send>>,
}

impl std::fmt::Debug for OpenTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenTunnel").field("io", &self.io).finish()
    }
}

/// The agent's claim of a tunnel, as this replica answers it.
pub enum AgentClaim {
    /// The user waits in this process: hand it the agent's connection.
    Local(Claim),
    /// The user waits on another replica: splice the agent's connection to this one (the
    /// other replica's upgraded peer connection), counted against this process's limits.
    Relayed {
        peer: Box<dyn TunnelStream>,
        permit: Permit,
    },
}

impl std::fmt::Debug for AgentClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AgentClaim::Local(_) => "AgentClaim::Local",
            AgentClaim::Relayed { .. } => "AgentClaim::Relayed",
        })
    }
}

impl From<TunnelError> for AppError {
    fn from(e: TunnelError) -> Self {
        match e {
            TunnelError::Agent { .. } => AppError::FailedPrecondition(e.to_string()),
            TunnelError::EdgeGone { .. } => AppError::NotFound(e.to_string()),
            TunnelError::TooManyPending { .. }
            | TunnelError::TooManyOpen { .. }
            | TunnelError::ServerFull { .. }
            | TunnelError::TimedOut { .. }
            | TunnelError::Broken { .. } => AppError::Unavailable(e.to_string()),
        }
    }
}

/// The HTTP status an error becomes (for the audit record; `http::error` is the authority).
fn status_of(e: &AppError) -> u16 {
    match e {
        AppError::Invalid(_) | AppError::Upload(_) | AppError::FailedPrecondition(_) => 400,
        AppError::Unauthenticated(_) => 401,
        AppError::Forbidden(_) => 403,
        AppError::NotFound(_) => 404,
        AppError::AlreadyExists(_) | AppError::Aborted(_) => 409,
        AppError::TooLarge(_) => 413,
        AppError::Unprocessable(_) => 422,
        AppError::UnsupportedProtocol(_) => 426,
        AppError::RateLimited(_) | AppError::ResourceExhausted(_) => 429,
        AppError::Unavailable(_) | AppError::Busy { .. } => 503,
        AppError::Store(_) | AppError::Internal(_) => 500,
    }
}

impl App {
    /// Opens a tunnel to a VM of an app on an edge (`vm_id` as workload lists show it): its
    /// VNC display, serial console or log. Checks access first; records the attempt.
    pub async fn open_vm_tunnel(
        &self,
        ctx: &Ctx,
        app_id: &str,
        cluster_id: &str,
        vm_id: &str,
        kind: TunnelKind,
    ) -> Result<OpenTunnel, AppError> {
        if let Err(e) = ctx.require(kind.access()) {
            let target = format!("applications/{app_id}/clusters/{cluster_id}/vms/{vm_id}");
            self.audit_tunnel(ctx, kind, &target, Err(&e)).await;
            return Err(e);
        }
        let vm = self.resolve_vm(ctx, app_id, cluster_id, vm_id)?;
        self.open_tunnel(ctx, &vm, kind).await
    }

    /// Opens a tunnel to a container's log (`follow`, `tail` lines) of an app on an edge.
    pub async fn open_container_logs(
        &self,
        ctx: &Ctx,
        app_id: &str,
        cluster_id: &str,
        container: &str,
        follow: bool,
        tail: u32,
    ) -> Result<OpenTunnel, AppError> {
        let kind = TunnelKind::Logs { follow, tail };
        if let Err(e) = ctx.require(kind.access()) {
            let target =
                format!("applications/{app_id}/clusters/{cluster_id}/containers/{container}");
            self.audit_tunnel(ctx, kind, &target, Err(&e)).await;
            return Err(e);
        }
        let c = self.resolve_container(ctx, app_id, cluster_id, container)?;
        self.open_tunnel(ctx, &c, kind).await
    }

    /// Opens a tunnel to a resolved workload: asks its edge's agent and waits for it to
    /// connect (at most the broker's claim timeout). Checks the access `kind` needs and that
    /// the workload can serve it; records the outcome in the audit log.
    pub async fn open_tunnel(
        &self,
        ctx: &Ctx,
        workload: &WorkloadRef,
        kind: TunnelKind,
    ) -> Result<OpenTunnel, AppError> {
        let noun = match workload.kind {
            WorkloadKind::Vm => "vms",
            WorkloadKind::Pod => "containers",
        };
        let target = format!(
            "edges/{}/deployments/{}/apps/{}/{noun}/{}",
            workload.edge_name, workload.deployment_id, workload.app, workload.name
        );
        let result = self.open_tunnel_unaudited(ctx, workload, kind).await;
        self.audit_tunnel(ctx, kind, &target, result.as_ref().map(|_| ()))
            .await;
        match &result {
            Ok(_) => tracing::info!(
                project = %ctx.project.name,
                edge = %workload.edge_name,
                deployment = %workload.deployment_id,
                app = %workload.app,
                workload = %workload.name,
                actor = %ctx.principal.actor,
                tunnel = kind.action(),
                "tunnel opened"
            ),
            Err(e) => tracing::info!(
                project = %ctx.project.name,
                edge = %workload.edge_name,
                workload = %workload.name,
                actor = %ctx.principal.actor,
                tunnel = kind.action(),
                error = %e,
                "tunnel refused"
            ),
        }
        result
    }

    async fn open_tunnel_unaudited(
        &self,
        ctx: &Ctx,
        workload: &WorkloadRef,
        kind: TunnelKind,
    ) -> Result<OpenTunnel, AppError> {
        ctx.require(kind.access())?;
        let target = match kind {
            TunnelKind::Vnc | TunnelKind::Serial if workload.kind != WorkloadKind::Vm => {
                return Err(AppError::Invalid(format!(
                    "workload {} of app {} on edge {} is a container: consoles exist for \
                     virtual machines only",
                    workload.name, workload.app, workload.edge_name
                )));
            }
            TunnelKind::Vnc => {
                if !self.vm_has_vnc(ctx, workload) {
                    return Err(AppError::FailedPrecondition(format!(
                        "virtual machine {} of app {} on edge {} has no VNC display (set \
                         `vnc: true` in its template)",
                        workload.name, workload.app, workload.edge_name
                    )));
                }
                TunnelTarget::Vnc {
                    deployment_id: workload.deployment_id.clone(),
                    app: workload.app.clone(),
                    vm: workload.name.clone(),
                }
            }
            TunnelKind::Serial => TunnelTarget::Serial {
                deployment_id: workload.deployment_id.clone(),
                app: workload.app.clone(),
                vm: workload.name.clone(),
            },
            TunnelKind::Logs { follow, tail } => {
                if tail > MAX_LOG_TAIL {
                    return Err(AppError::Invalid(format!(
                        "invalid tail {tail}: at most {MAX_LOG_TAIL} lines"
                    )));
                }
                TunnelTarget::Logs {
                    deployment_id: workload.deployment_id.clone(),
                    app: workload.app.clone(),
                    kind: workload.kind,
                    workload: workload.name.clone(),
                    follow,
                    tail,
                }
            }
        };
        let broker = self.tunnels();
        let timeout = broker.limits().claim_timeout;
        let edge_gone = self.edge_gone(ctx.project.id, workload.edge_id.clone());
        let shutdown = self.shutting_down();
        let io = tokio::select! {
            r = broker.request(&workload.edge_id, target, timeout) => r.map_err(|e| {
                // Name the edge as users know it, not by its id.
                AppError::from(e).renamed(&workload.edge_id, &workload.edge_name)
            })?,
            () = edge_gone => {
                return Err(AppError::NotFound(format!("edge {} was removed", workload.edge_name)));
            }
            () = shutdown => {
                return Err(AppError::Unavailable(
                    "the control plane is shutting down; retry in a moment".into(),
                ));
            }
        };
        let edge_gone = self.edge_gone(ctx.project.id, workload.edge_id.clone());
        let shutdown = self.shutting_down();
        Ok(OpenTunnel {
            io,
            ended: Box::pin(async move {
                tokio::select! {
                    () = edge_gone => "the edge was removed",
                    () = shutdown => "the control plane is shutting down",
                }
            }),
        })
    }

    /// The agent's long-poll for tunnel requests: those not handed out yet, waiting up to
    /// `wait` (capped at the protocol's longest) for one; empty at shutdown.
    pub async fn agent_tunnel_requests(
        &self,
        agent: &AgentCtx,
        wait: Duration,
    ) -> Vec<TunnelRequest> {
        let wait = wait.min(Duration::from_secs(u64::from(
            canopy_proto::MAX_WAIT_SECONDS,
        )));
        self.tunnels()
            .wait_requests(&agent.edge_id, wait, self.shutting_down())
            .await
    }

    /// The agent connects tunnel `id`: 404 unless it waits for this very edge, here or (with
    /// replicas) on the replica that announced it, which the claim is then relayed to.
    pub async fn agent_claim_tunnel(
        &self,
        agent: &AgentCtx,
        id: &str,
    ) -> Result<AgentClaim, AppError> {
        let broker = self.tunnels();
        if let Some(claim) = broker.claim(&agent.edge_id, id) {
            return Ok(AgentClaim::Local(claim));
        }
        let Some(replication) = broker.replication() else {
            return Err(no_such_tunnel(id));
        };
        // Counted before the request is taken: a refusal leaves it for a later claim.
        let permit = broker.relay_permit(&agent.edge_id)?;
        let Some(peer) = broker
            .take_remote_within(&agent.edge_id, id, LATE_NOTE_WAIT)
            .await
        else {
            drop(permit);
            return broker
                .claim(&agent.edge_id, id)
                .map(AgentClaim::Local)
                .ok_or_else(|| no_such_tunnel(id));
        };
        let io = replication
            .dial(&peer, id, &agent.edge_id)
            .await
            .map_err(|e| match e {
                PeerError::Refused { status: 404, .. } => no_such_tunnel(id),
                e => {
                    tracing::warn!(edge = %agent.edge_id, error = %e, "could not relay a tunnel to the replica holding its request");
                    // Its user is told now rather than at the timeout.
                    replication.failed(
                        id,
                        &agent.edge_id,
                        format!(
                            "its agent connected to another control plane replica, which could \
                             not reach this one: {e}"
                        ),
                    );
                    AppError::Unavailable(format!(
                        "the control plane replica holding this tunnel's request could not be                          reached: {e}"
                    ))
                }
            })?;
        Ok(AgentClaim::Relayed { peer: io, permit })
    }

    /// The agent could not open tunnel `id`; its user gets `message` (on whichever replica it
    /// waits).
    pub async fn agent_tunnel_error(
        &self,
        agent: &AgentCtx,
        id: &str,
        message: String,
    ) -> Result<(), AppError> {
        let broker = self.tunnels();
        if broker.report_error(&agent.edge_id, id, message.clone()) {
            return Ok(());
        }
        if let Some(replication) = broker.replication()
            && broker
                .take_remote_within(&agent.edge_id, id, LATE_NOTE_WAIT)
                .await
                .is_some()
        {
            replication.failed(id, &agent.edge_id, message);
            return Ok(());
        }
        if broker.report_error(&agent.edge_id, id, message) {
            return Ok(());
        }
        Err(no_such_tunnel(id))
    }

    /// Another replica relays an agent's claim of tunnel `id` of `edge` (see
    /// `crate::tunnels::peer`): checks the peer's MAC, then claims the request waiting here.
    /// Returns the claim and the MAC to answer with. 401 for a peer without the shared key
    /// (or on a process that is not one of several replicas).
    pub fn peer_claim_tunnel(
        &self,
        id: &str,
        edge: &str,
        time: &str,
        nonce: &str,
        mac: &str,
    ) -> Result<(Claim, String), AppError> {
        let Some(replication) = self.tunnels().replication() else {
            return Err(AppError::Unauthenticated(
                "this server is not one of several replicas: it takes no peer connections".into(),
            ));
        };
        let accept = replication
            .verify_claim(id, edge, time, nonce, mac)
            .map_err(|e| {
                tracing::warn!(error = %e, "refused a peer connection");
                AppError::Unauthenticated(e.to_string())
            })?;
        let claim = self
            .tunnels()
            .claim(edge, id)
            .ok_or_else(|| no_such_tunnel(id))?;
        Ok((claim, accept))
    }

    /// Resolves once edge `edge_id` of `project` no longer exists.
    fn edge_gone(
        &self,
        project: canopy_store::ProjectId,
        edge_id: String,
    ) -> impl Future<Output = ()> + Send + use<> {
        let app = self.clone();
        async move {
            let mut every = tokio::time::interval(EDGE_CHECK_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if app.hub().edge(project, &edge_id).is_none() {
                    app.tunnels().fail_edge(&edge_id);
                    return;
                }
            }
        }
    }

    /// Records one tunnel attempt in the audit log (a store failure is logged, not returned:
    /// an audit outage must not take consoles down with it).
    async fn audit_tunnel(
        &self,
        ctx: &Ctx,
        kind: TunnelKind,
        target: &str,
        outcome: Result<(), &AppError>,
    ) {
        let (result, status) = match outcome {
            Ok(()) => ("ok".to_string(), 200),
            Err(e) => {
                let status = status_of(e);
                let reason = axum::http::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("error");
                (reason.to_string(), status)
            }
        };
        let record = canopy_store::NewAuditRecord {
            at: time::OffsetDateTime::now_utc(),
            actor: ctx.principal.actor.clone(),
            project: ctx.project.name.as_str().to_string(),
            action: kind.action().to_string(),
            target: target.to_string(),
            result,
            status,
            request_id: ctx.request_id.clone(),
        };
        if let Err(e) = self.store().append_audit(&record).await {
            tracing::warn!(
                error = %e,
                action = %record.action,
                request_id = %record.request_id,
                "could not write the audit record of a tunnel"
            );
        }
    }
}

fn no_such_tunnel(id: &str) -> AppError {
    let mut shown: String = id.chars().take(80).collect();
    shown.retain(|c| !c.is_control());
    AppError::NotFound(format!(
        "tunnel {shown} does not wait for this edge (unknown, already connected, or withdrawn)"
    ))
}

impl AppError {
    /// The same error with an edge's id replaced by its name in the message.
    fn renamed(self, id: &str, name: &str) -> AppError {
        match self {
            AppError::FailedPrecondition(m) => AppError::FailedPrecondition(m.replace(id, name)),
            AppError::NotFound(m) => AppError::NotFound(m.replace(id, name)),
            AppError::Unavailable(m) => AppError::Unavailable(m.replace(id, name)),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consoles_need_write_access_and_logs_read_access() {
        assert_eq!(TunnelKind::Vnc.access(), Access::FleetWrite);
        assert_eq!(TunnelKind::Serial.access(), Access::FleetWrite);
        assert_eq!(
            TunnelKind::Logs {
                follow: true,
                tail: 1
            }
            .access(),
            Access::FleetRead
        );
    }

    #[test]
    fn broker_errors_map_to_statuses() {
        let edge = || "e".to_string();
        for (e, status) in [
            (
                TunnelError::TimedOut {
                    edge: edge(),
                    after: Duration::from_secs(15),
                },
                503,
            ),
            (
                TunnelError::Agent {
                    edge: edge(),
                    message: "m".into(),
                },
                400,
            ),
            (TunnelError::EdgeGone { edge: edge() }, 404),
            (TunnelError::ServerFull { max: 1 }, 503),
            (
                TunnelError::TooManyPending {
                    edge: edge(),
                    max: 1,
                },
                503,
            ),
        ] {
            assert_eq!(status_of(&AppError::from(e)), status);
        }
    }
}
