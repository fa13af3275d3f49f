//! Edge inventory and the agent side of the protocol: enrollment tokens, enrollment, edge
//! listing and labels, edge removal, desired-state long-polls and status reports.
//!
//! Secrets (enrollment tokens, edge credentials) are random, shown once, and stored only as
//! SHA-256 hashes; a presented secret is hashed and looked up, never compared in the clear.

use std::collections::BTreeMap;
use std::time::Duration;

use canopy_core::list::{Entity, Field, ListQuery};
use canopy_deploy::validate::check_labels;
use canopy_proto::{
    DesiredState, EnrollRequest, EnrollResponse, PROTOCOL_VERSION, StatusAck, StatusReport,
};
use canopy_store::{EdgeRow, EnrollmentTokenRow};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::fleet_tx::{FleetTx, HubOp};
use super::{Access, App, AppError, Ctx};
use crate::hub::{EdgeView, HubError, with_project};

/// Most labels on one edge (the reference's limit for a list's `labels` filter).
pub const MAX_EDGE_LABELS: usize = 20;
/// Default and longest lifetime of an enrollment token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// An enrollment token as lists show it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentToken {
    pub id: String,
    pub description: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub create_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expire_time: OffsetDateTime,
    /// `ACTIVE`, `EXPIRED`, `REVOKED` or `USED_UP`.
    pub state: String,
    pub uses: u64,
    /// 0 = unlimited.
    pub max_uses: u64,
}

/// A new enrollment token: its secret is in this response and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedEnrollmentToken {
    pub token: EnrollmentToken,
    /// Pass to `canopy agent --enroll-token`. Shown once.
    pub secret: String,
}

/// Body of an enrollment token create.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    #[serde(default)]
    pub description: String,
    /// Lifetime in seconds (default one day, at most one year).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// How many edges may enroll with it (0 or absent = unlimited until it expires).
    #[serde(default)]
    pub max_uses: u64,
}

/// An edge as Canopy's own API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub create_time: OffsetDateTime,
    /// `CONNECTED` (long-poll open or reported within two heartbeats), `DISCONNECTED`, or
    /// `NEVER_CONNECTED`.
    pub connection: String,
    /// `RUNNING` while seen within the edge timeout, else `UNKNOWN`.
    pub state: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<OffsetDateTime>,
    pub agent_version: String,
    pub capabilities: Vec<String>,
    pub engine: String,
    /// The edge's desired generation and the one its agent last reported applied.
    pub generation: u64,
    pub applied_generation: u64,
    /// Deployments targeting the edge.
    pub deployments: u32,
}

impl From<EdgeView> for Edge {
    fn from(v: EdgeView) -> Edge {
        let connection = if v.connected {
            "CONNECTED"
        } else if v.last_seen.is_none() {
            "NEVER_CONNECTED"
        } else {
            "DISCONNECTED"
        };
        Edge {
            id: v.id,
            name: v.name,
            labels: v.labels,
            create_time: v.create_time,
            connection: connection.into(),
            state: if v.alive { "RUNNING" } else { "UNKNOWN" }.into(),
            last_seen: v.last_seen,
            agent_version: v.agent.version,
            capabilities: v.agent.capabilities,
            engine: v.agent.engine,
            generation: v.generation,
            applied_generation: v.applied_generation,
            deployments: u32::try_from(v.deployments).unwrap_or(u32::MAX),
        }
    }
}

/// SHA-256 hex of a secret. On every agent request (the credential lookup), so it writes into
/// one buffer rather than allocating a string per byte.
pub(crate) fn hash_secret(secret: &str) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(2 * digest.len());
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// A fresh random secret with a recognizable prefix (244 random bits from the OS generator).
fn new_secret(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn token_state(t: &EnrollmentTokenRow, now: OffsetDateTime) -> &'static str {
    if t.revoke_time.is_some() {
        "REVOKED"
    } else if t.expire_time <= now {
        "EXPIRED"
    } else if t.max_uses > 0 && t.uses >= t.max_uses {
        "USED_UP"
    } else {
        "ACTIVE"
    }
}

fn token_view(t: &EnrollmentTokenRow, now: OffsetDateTime) -> EnrollmentToken {
    EnrollmentToken {
        id: t.id.clone(),
        description: t.description.clone(),
        create_time: t.create_time,
        expire_time: t.expire_time,
        state: token_state(t, now).into(),
        uses: t.uses,
        max_uses: t.max_uses,
    }
}

/// Checks an edge name: a DNS label (1–63 of `a-z0-9-`, starting and ending alphanumeric).
fn check_edge_name(name: &str) -> Result<(), AppError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(AppError::Invalid(format!(
            "edge name {name:?} is invalid: use 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        )))
    }
}

/// Checks the protocol version an agent speaks.
pub fn check_protocol(version: Option<&str>) -> Result<(), AppError> {
    let Some(v) = version else {
        return Err(AppError::UnsupportedProtocol(format!(
            "missing header {}: this server speaks agent protocol version {PROTOCOL_VERSION}",
            canopy_proto::PROTOCOL_HEADER
        )));
    };
    match v.trim().parse::<u32>() {
        Ok(PROTOCOL_VERSION) => Ok(()),
        _ => Err(AppError::UnsupportedProtocol(format!(
            "agent protocol version {v} is not supported by this server (it speaks {PROTOCOL_VERSION}); upgrade the agent or the control plane so they match"
        ))),
    }
}

impl From<HubError> for AppError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::EdgeGone(_) => AppError::Unauthenticated(e.to_string()),
            HubError::BadReport(m) => AppError::Unprocessable(m),
        }
    }
}

/// An authenticated agent: its edge and project.
#[derive(Debug, Clone)]
pub struct AgentCtx {
    pub edge_id: String,
    pub project: canopy_store::ProjectId,
}

impl App {
    // --- enrollment tokens -------------------------------------------------------------------

    pub async fn create_enrollment_token(
        &self,
        ctx: &Ctx,
        req: CreateEnrollmentToken,
    ) -> Result<CreatedEnrollmentToken, AppError> {
        ctx.require(Access::FleetWrite)?;
        let ttl = match req.ttl_seconds {
            None | Some(0) => DEFAULT_TOKEN_TTL,
            Some(s) => Duration::from_secs(s),
        };
        if ttl > MAX_TOKEN_TTL {
            return Err(AppError::Invalid(format!(
                "ttlSeconds {} is too long: at most {} (one year)",
                ttl.as_secs(),
                MAX_TOKEN_TTL.as_secs()
            )));
        }
        if req.description.chars().count() > 200 || req.description.chars().any(char::is_control) {
            return Err(AppError::Invalid(
                "description must be at most 200 characters, without control characters".into(),
            ));
        }
        let now = OffsetDateTime::now_utc();
        let secret = new_secret("cnt_");
        let row = EnrollmentTokenRow {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: ctx.project.id,
            secret_hash: hash_secret(&secret),
            description: req.description,
            create_time: now,
            expire_time: now + ttl,
            revoke_time: None,
            max_uses: req.max_uses,
            uses: 0,
        };
        let mut tx = self.store().write(ctx.project.id).await?;
        tx.insert_enrollment_token(&row).await?;
        tx.commit().await?;
        tracing::info!(project = %ctx.project.name, token = %row.id, "enrollment token created");
        Ok(CreatedEnrollmentToken {
            token: token_view(&row, now),
            secret,
        })
    }

    pub async fn list_enrollment_tokens(
        &self,
        ctx: &Ctx,
    ) -> Result<Vec<EnrollmentToken>, AppError> {
        // Enrollment tokens are how edges join: seeing them is for those who may make them
        // (ao-rw), not for read-only site support staff (ao-r).
        ctx.require(Access::FleetWrite)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        let now = OffsetDateTime::now_utc();
        Ok(tx
            .list_enrollment_tokens()
            .await?
            .iter()
            .map(|t| token_view(t, now))
            .collect())
    }

    /// Revokes a token: no further enrollment with it. Edges it enrolled keep their own
    /// credentials.
    pub async fn revoke_enrollment_token(
        &self,
        ctx: &Ctx,
        id: &str,
    ) -> Result<EnrollmentToken, AppError> {
        ctx.require(Access::FleetWrite)?;
        let mut tx = self.store().write(ctx.project.id).await?;
        if !tx.revoke_enrollment_token(id).await? {
            return Err(AppError::NotFound(format!(
                "enrollment token {id} not found"
            )));
        }
        let row = tx
            .get_enrollment_token(id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("token {id} vanished")))?;
        tx.commit().await?;
        tracing::info!(project = %ctx.project.name, token = %id, "enrollment token revoked");
        Ok(token_view(&row, OffsetDateTime::now_utc()))
    }

    // --- enrollment ----------------------------------------------------------------------------

    /// Enrolls an edge with an enrollment token: a new edge in the token's project, with its
    /// own credential.
    pub async fn enroll(&self, mut req: EnrollRequest) -> Result<EnrollResponse, AppError> {
        if req.protocol_version != PROTOCOL_VERSION {
            check_protocol(Some(&req.protocol_version.to_string()))?;
        }
        req.agent
            .bound("agent")
            .map_err(|e| AppError::Invalid(format!("enrollment refused: {e}")))?;
        let invalid = || AppError::Unauthenticated("invalid enrollment token".into());
        if !req.token.starts_with("cnt_") || req.token.len() > 200 {
            return Err(invalid());
        }
        let token = self
            .store()
            .enrollment_token_by_hash(&hash_secret(&req.token))
            .await?
            .ok_or_else(invalid)?;
        check_labels(&req.labels, "labels", MAX_EDGE_LABELS)?;
        let name = if req.name.trim().is_empty() {
            format!("edge-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
        } else {
            req.name.trim().to_string()
        };
        check_edge_name(&name)?;

        let hub = self.hub();
        let mut tx = FleetTx::open(self, token.project_id).await?;
        // Re-read inside the transaction: a revocation may have just committed.
        let token = tx
            .get_enrollment_token(&token.id)
            .await?
            .ok_or_else(invalid)?;
        let now = OffsetDateTime::now_utc();
        match token_state(&token, now) {
            "ACTIVE" => {}
            "REVOKED" => {
                return Err(AppError::Unauthenticated(
                    "enrollment token was revoked".into(),
                ));
            }
            "EXPIRED" => {
                return Err(AppError::Unauthenticated(format!(
                    "enrollment token expired at {}",
                    token
                        .expire_time
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default()
                )));
            }
            _ => {
                return Err(AppError::Unauthenticated(format!(
                    "enrollment token was used its maximum {} times",
                    token.max_uses
                )));
            }
        }
        if tx.edge_name_taken(&name).await? {
            return Err(AppError::AlreadyExists(format!(
                "an edge named {name} already exists in this project; choose another --name"
            )));
        }
        let credential = new_secret("cne_");
        let row = EdgeRow {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: token.project_id,
            name: name.clone(),
            labels: req.labels.clone(),
            credential_hash: hash_secret(&credential),
            token_id: token.id.clone(),
            create_time: now,
            agent: serde_json::to_string(&req.agent).unwrap_or_else(|_| "{}".into()),
            last_seen: None,
            last_status: None,
        };
        tx.insert_edge(&row).await?;
        tx.use_enrollment_token(&token.id).await?;
        let edge_id = row.id.clone();
        tx.record(HubOp::AddEdge(row));
        tx.commit().await?;
        let project = self.project_name(token.project_id).await?;
        tracing::info!(project = %project, edge = %edge_id, name = %name, "edge enrolled");
        Ok(EnrollResponse {
            edge_id,
            edge_name: name,
            project,
            credential,
            heartbeat_seconds: u32::try_from(hub.config().heartbeat.as_secs()).unwrap_or(30),
        })
    }

    /// Authenticates an agent by its bearer credential.
    pub fn agent_ctx(&self, bearer: Option<&str>) -> Result<AgentCtx, AppError> {
        let Some(cred) = bearer.filter(|c| c.starts_with("cne_") && c.len() <= 200) else {
            return Err(AppError::Unauthenticated(
                "missing or malformed edge credential (Authorization: Bearer cne_...)".into(),
            ));
        };
        let (edge_id, project) = self
            .hub()
            .edge_by_credential(&hash_secret(cred))
            .ok_or_else(|| {
                AppError::Unauthenticated(
                    "edge credential is not valid (the edge was removed or never enrolled here); enroll the agent again".into(),
                )
            })?;
        Ok(AgentCtx { edge_id, project })
    }

    /// The agent long-poll.
    pub async fn agent_desired_state(
        &self,
        agent: &AgentCtx,
        after: u64,
        wait: Duration,
    ) -> Result<Option<DesiredState>, AppError> {
        let wait = wait.min(Duration::from_secs(u64::from(
            canopy_proto::MAX_WAIT_SECONDS,
        )));
        let got = self
            .hub()
            .desired_state(&agent.edge_id, after, wait, self.shutting_down())
            .await?;
        match got {
            Some(d) => {
                let project = self.project_name(agent.project).await?;
                Ok(Some(with_project(d, &project)))
            }
            None => Ok(None),
        }
    }

    /// A status report from an agent: bounded first (`canopy_proto::bounds`: messages cut,
    /// anything else over a bound refused with 400 naming the field), then taken by the hub.
    pub fn agent_status(
        &self,
        agent: &AgentCtx,
        mut report: StatusReport,
    ) -> Result<StatusAck, AppError> {
        if report.protocol_version != PROTOCOL_VERSION {
            check_protocol(Some(&report.protocol_version.to_string()))?;
        }
        // Bounds first: a refused report changes nothing, not even "last seen".
        let taken = report
            .bound()
            .map_err(|e| {
                AppError::Invalid(format!(
                    "status report refused (nothing of it was applied): {e}"
                ))
            })
            .and_then(|()| Ok(self.hub().report(&agent.edge_id, report)?));
        match &taken {
            Ok(_) => self.metrics().reports_accepted.increment(1),
            Err(_) => self.metrics().reports_refused.increment(1),
        }
        taken
    }

    // --- inventory -----------------------------------------------------------------------------

    /// Edges of the project, filtered, ordered and paged (`labels`: an edge matches when it has
    /// every `k=v` of any one item).
    pub fn list_edges(&self, ctx: &Ctx, q: &ListQuery) -> Result<(Vec<Edge>, u64), AppError> {
        ctx.require(Access::FleetRead)?;
        let filters = parse_label_filters(&q.labels)?;
        let mut edges: Vec<Edge> = self
            .hub()
            .edges(ctx.project.id)
            .into_iter()
            .filter(|e| labels_match(&filters, &e.labels))
            .map(Edge::from)
            .collect();
        edges.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(q.page_in_memory(edges, |e, f| match f {
            Field::Name => e.name.clone(),
            Field::Id => e.id.clone(),
            Field::CreateTime => fmt_time(Some(e.create_time)),
            Field::LastSeen => fmt_time(e.last_seen),
            Field::Connection => e.connection.clone(),
            _ => String::new(),
        }))
    }

    pub fn get_edge(&self, ctx: &Ctx, id_or_name: &str) -> Result<Edge, AppError> {
        ctx.require(Access::FleetRead)?;
        self.hub()
            .edge(ctx.project.id, id_or_name)
            .map(Edge::from)
            .ok_or_else(|| edge_not_found(id_or_name))
    }

    /// Changes an edge's labels: `set` adds or replaces, `remove` deletes keys. The edge gains
    /// and loses deployments accordingly, at once.
    pub async fn label_edge(
        &self,
        ctx: &Ctx,
        id_or_name: &str,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    ) -> Result<Edge, AppError> {
        ctx.require(Access::FleetWrite)?;
        let hub = self.hub();
        let mut tx = FleetTx::open(self, ctx.project.id).await?;
        let edge = hub
            .edge(ctx.project.id, id_or_name)
            .ok_or_else(|| edge_not_found(id_or_name))?;
        let mut labels = edge.labels.clone();
        for k in &remove {
            labels.remove(k);
        }
        labels.extend(set);
        check_labels(&labels, "labels", MAX_EDGE_LABELS)?;
        if !tx.set_edge_labels(&edge.id, &labels).await? {
            return Err(edge_not_found(id_or_name));
        }
        tx.record(HubOp::SetLabels {
            edge: edge.id.clone(),
            labels,
        });
        tx.commit().await?;
        tracing::info!(project = %ctx.project.name, edge = %edge.id, "edge labels changed");
        self.get_edge(ctx, &edge.id)
    }

    /// Removes an edge: its credential stops working at once. Its workloads are left as they
    /// are (the agent can no longer be told anything); remove deployments first to clean up.
    pub async fn remove_edge(&self, ctx: &Ctx, id_or_name: &str) -> Result<(), AppError> {
        ctx.require(Access::FleetWrite)?;
        let hub = self.hub();
        let mut tx = FleetTx::open(self, ctx.project.id).await?;
        let edge = hub
            .edge(ctx.project.id, id_or_name)
            .ok_or_else(|| edge_not_found(id_or_name))?;
        if !tx.delete_edge(&edge.id).await? {
            return Err(edge_not_found(id_or_name));
        }
        // Applying it also fails the edge's tunnels.
        tx.record(HubOp::RemoveEdge(edge.id.clone()));
        tx.commit().await?;
        tracing::info!(project = %ctx.project.name, edge = %edge.id, name = %edge.name, "edge removed");
        Ok(())
    }

    /// The apps an edge last reported (Canopy's own view: workloads with their state).
    pub fn edge_workloads(
        &self,
        ctx: &Ctx,
        id_or_name: &str,
    ) -> Result<Vec<canopy_proto::AppStatus>, AppError> {
        ctx.require(Access::FleetRead)?;
        let hub = self.hub();
        let id = hub
            .resolve_edge(ctx.project.id, id_or_name)
            .ok_or_else(|| edge_not_found(id_or_name))?;
        Ok(hub.edge_statuses(ctx.project.id, &id))
    }
}

pub(crate) fn edge_not_found(id: &str) -> AppError {
    AppError::NotFound(format!("edge {id} not found"))
}

pub(crate) fn fmt_time(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_default()
}

/// Whether an edge's labels pass `labels` list filters: every pair of any one item (no filter
/// passes everything).
pub(crate) fn labels_match(
    filters: &[BTreeMap<String, String>],
    labels: &BTreeMap<String, String>,
) -> bool {
    filters.is_empty()
        || filters
            .iter()
            .any(|f| f.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Parses `labels` list filters (`k=v[,k=v]` each, read by [`canopy_core::kv`]).
pub(crate) fn parse_label_filters(
    items: &[String],
) -> Result<Vec<BTreeMap<String, String>>, AppError> {
    let items = canopy_core::kv::parse_label_filters(items).map_err(AppError::Invalid)?;
    Ok(items
        .into_iter()
        .map(|pairs| pairs.into_iter().collect())
        .collect())
}

/// Parses a list query for `entity`.
pub(crate) fn list_query(entity: Entity, raw: Option<&str>) -> Result<ListQuery, AppError> {
    Ok(canopy_core::list::parse_query(entity, raw.unwrap_or(""))?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_hash_to_lowercase_sha256_hex() {
        assert_eq!(
            super::hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
