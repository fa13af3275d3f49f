//! Canopy's own fleet API (`/canopy/v1/projects/{project}/...`): enrollment tokens and the edge
//! inventory (list, get, labels, removal, reported workloads).
//!
//! The edge and token types are the server's JSON shapes, mirrored here because the client must
//! not depend on the server crate. They are lenient (missing fields take defaults, unknown ones
//! are ignored) so a newer server does not break an older CLI.

use std::collections::BTreeMap;
use std::time::Duration;

use canopy_proto::AppStatus;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Client, ClientError, ListParams, Page, collect_all, take, take_list};

/// An enrollment token as lists show it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentToken {
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub create_time: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expire_time: Option<OffsetDateTime>,
    /// `ACTIVE`, `EXPIRED`, `REVOKED` or `USED_UP`.
    #[serde(default)]
    pub state: String,
    /// Edges enrolled with it so far.
    #[serde(default)]
    pub uses: u64,
    /// How many edges may enroll with it; 0 = unlimited until it expires.
    #[serde(default)]
    pub max_uses: u64,
}

/// A new enrollment token with its secret, which the server shows this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedEnrollmentToken {
    pub token: EnrollmentToken,
    /// `cnt_...`: what `canopy agent --enroll-token` takes.
    pub secret: String,
}

/// What to create an enrollment token with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewEnrollmentToken {
    pub description: String,
    /// Lifetime (whole seconds; the server's default, one day, when `None`).
    #[serde(
        rename = "ttlSeconds",
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_secs"
    )]
    pub ttl: Option<Duration>,
    /// How many edges may enroll with it; 0 = unlimited until it expires.
    pub max_uses: u64,
}

fn ser_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_secs()),
        None => s.serialize_none(),
    }
}

/// An edge of the project's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub create_time: Option<OffsetDateTime>,
    /// `CONNECTED`, `DISCONNECTED` or `NEVER_CONNECTED`.
    #[serde(default)]
    pub connection: String,
    /// `RUNNING` while seen within the server's edge timeout, else `UNKNOWN`.
    #[serde(default)]
    pub state: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    #[serde(default)]
    pub agent_version: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The container engine the agent drives, when it said.
    #[serde(default)]
    pub engine: String,
    /// The edge's desired generation.
    #[serde(default)]
    pub generation: u64,
    /// The generation its agent last reported applied.
    #[serde(default)]
    pub applied_generation: u64,
    /// How many deployments target the edge.
    #[serde(default)]
    pub deployments: u32,
}

/// Body of a label change.
#[derive(Serialize)]
struct LabelChange<'a> {
    set: &'a BTreeMap<String, String>,
    remove: &'a [String],
}

impl Client {
    // ---- enrollment tokens ------------------------------------------------------------------

    /// `POST /enrollment-tokens`: a new token and its secret (shown only in this answer).
    pub async fn create_enrollment_token(
        &self,
        token: &NewEnrollmentToken,
    ) -> Result<CreatedEnrollmentToken, ClientError> {
        let url = self.canopy_url(&["enrollment-tokens"]);
        let req = self.request(Method::POST, &url).json(token);
        let body = self.execute_json(req, &url).await?;
        serde_json::from_value(body).map_err(|e| crate::decode_err(&url, e))
    }

    /// `GET /enrollment-tokens`: every token of the project (no secrets), across pages.
    pub async fn list_enrollment_tokens(&self) -> Result<Vec<EnrollmentToken>, ClientError> {
        let url = self.canopy_url(&["enrollment-tokens"]);
        let mut all = Vec::new();
        loop {
            let req = self.request(Method::GET, &url).query(&[
                ("pageSize", crate::MAX_PAGE_SIZE.to_string()),
                ("offset", all.len().to_string()),
            ]);
            let mut body = self.execute_json(req, &url).await?;
            let page: Vec<EnrollmentToken> = take_list(&url, &mut body, &["enrollmentTokens"])?;
            let total = body
                .get("totalElements")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            let got = page.len();
            all.extend(page);
            if got == 0 || all.len() as u64 >= total {
                return Ok(all);
            }
        }
    }

    /// `DELETE /enrollment-tokens/{id}`: no edge can enroll with it any more (edges it enrolled
    /// keep working). Returns the token as revoked.
    pub async fn revoke_enrollment_token(&self, id: &str) -> Result<EnrollmentToken, ClientError> {
        let url = self.canopy_url(&["enrollment-tokens", id]);
        let body = self
            .execute_json(self.request(Method::DELETE, &url), &url)
            .await?;
        take(&url, body, &["enrollmentToken"])
    }

    // ---- edges ------------------------------------------------------------------------------

    /// `GET /edges`: one page (`params.labels` filters by label).
    pub async fn list_edges(&self, params: &ListParams) -> Result<Page<Edge>, ClientError> {
        self.get_page(&self.canopy_url(&["edges"]), "edges", params)
            .await
    }

    /// Every edge from `params.offset` on, across pages.
    pub async fn list_all_edges(&self, params: &ListParams) -> Result<Vec<Edge>, ClientError> {
        collect_all(params, async |p: &ListParams| self.list_edges(p).await).await
    }

    /// `GET /edges/{edge}`, by id or name.
    pub async fn get_edge(&self, edge: &str) -> Result<Edge, ClientError> {
        let url = self.canopy_url(&["edges", edge]);
        let body = self
            .execute_json(self.request(Method::GET, &url), &url)
            .await?;
        take(&url, body, &["edge"])
    }

    /// `PATCH /edges/{edge}/labels`: `set` adds or replaces, `remove` deletes keys. Returns the
    /// edge as changed (it gains and loses deployments accordingly).
    pub async fn label_edge(
        &self,
        edge: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<Edge, ClientError> {
        let url = self.canopy_url(&["edges", edge, "labels"]);
        let req = self
            .request(Method::PATCH, &url)
            .json(&LabelChange { set, remove });
        let body = self.execute_json(req, &url).await?;
        take(&url, body, &["edge"])
    }

    /// `DELETE /edges/{edge}`: its credential stops working at once; its workloads are left
    /// running as they are.
    pub async fn remove_edge(&self, edge: &str) -> Result<(), ClientError> {
        let url = self.canopy_url(&["edges", edge]);
        self.execute(self.request(Method::DELETE, &url), self.timeout)
            .await?;
        Ok(())
    }

    /// `GET /edges/{edge}/workloads`: the apps the edge last reported, with their containers.
    pub async fn edge_workloads(&self, edge: &str) -> Result<Vec<AppStatus>, ClientError> {
        let url = self.canopy_url(&["edges", edge, "workloads"]);
        let mut body = self
            .execute_json(self.request(Method::GET, &url), &url)
            .await?;
        take_list(&url, &mut body, &["apps"])
    }
}
