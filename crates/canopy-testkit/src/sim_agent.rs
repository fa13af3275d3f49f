//! A **simulated edge agent**: a small client speaking the real agent protocol (enroll,
//! long-poll, status reports) without running any workload. It stands in for edges in tests of
//! targeting, status folding and the resource manager; `crates/canopy/tests` run the real agent.

use std::collections::BTreeMap;

use canopy_proto::{
    AppState, AppStatus, DesiredState, EnrollResponse, PROTOCOL_HEADER, StatusReport,
    WorkloadStatus,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::TestControlPlane;

/// A simulated edge agent.
pub struct SimAgent {
    http: reqwest::Client,
    url: String,
    /// The edge's credential (`cne_...`).
    pub cred: String,
    /// The edge's id.
    pub id: String,
    /// The last status sequence number used.
    pub seq: u64,
    /// The last desired state received.
    pub held: DesiredState,
}

impl SimAgent {
    /// Enrolls with an enrollment token's secret; panics unless it is accepted.
    pub async fn enroll(
        cp: &TestControlPlane,
        token: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> SimAgent {
        let (status, body) = enroll_raw(cp, token, name, labels).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let r: EnrollResponse = serde_json::from_value(body).unwrap();
        SimAgent {
            http: reqwest::Client::new(),
            url: cp.url.clone(),
            cred: r.credential,
            id: r.edge_id,
            seq: 0,
            held: DesiredState::default(),
        }
    }

    /// One long-poll; keeps what it got. `None` on 204.
    pub async fn poll(&mut self, wait: u32) -> Option<DesiredState> {
        let resp = self
            .http
            .get(format!(
                "{}/canopy/v1/agent/desired-state?after={}&waitSeconds={wait}",
                self.url, self.held.generation.0
            ))
            .header(PROTOCOL_HEADER, "1")
            .bearer_auth(&self.cred)
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::NO_CONTENT => None,
            StatusCode::OK => {
                let d: DesiredState = resp.json().await.unwrap();
                assert!(d.generation > self.held.generation, "generations only grow");
                self.held = d.clone();
                Some(d)
            }
            s => panic!("long-poll answered {s}: {}", resp.text().await.unwrap()),
        }
    }

    /// Reports every held app in `state` at the held generation, without workloads.
    pub async fn report(&mut self, state: AppState) -> (StatusCode, Value) {
        self.report_with(|_, _| (state, Vec::new())).await
    }

    /// Reports every held app with the state and workloads `f(deployment id, app name)` gives.
    pub async fn report_with(
        &mut self,
        f: impl Fn(&str, &canopy_proto::AppInstance) -> (AppState, Vec<WorkloadStatus>),
    ) -> (StatusCode, Value) {
        let mut apps = Vec::new();
        for d in &self.held.deployments {
            for a in &d.apps {
                let (state, workloads) = f(&d.deployment_id, a);
                apps.push(AppStatus {
                    deployment_id: d.deployment_id.clone(),
                    app: a.name.clone(),
                    state,
                    message: String::new(),
                    deployment_generation: d.generation,
                    workloads,
                });
            }
        }
        self.seq += 1;
        let report = StatusReport {
            protocol_version: 1,
            seq: self.seq,
            generation: self.held.generation,
            apps,
            agent: None,
        };
        self.send(&report).await
    }

    /// Sends a status report as it is.
    pub async fn send(&self, report: &StatusReport) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}/canopy/v1/agent/status", self.url))
            .header(PROTOCOL_HEADER, "1")
            .bearer_auth(&self.cred)
            .json(report)
            .send()
            .await
            .unwrap();
        let s = resp.status();
        (s, resp.json().await.unwrap_or(Value::Null))
    }

    /// The ids of the deployments held.
    pub fn deployments(&self) -> Vec<String> {
        self.held
            .deployments
            .iter()
            .map(|d| d.deployment_id.clone())
            .collect()
    }
}

/// An enrollment request as it is: the status and body of the answer.
pub async fn enroll_raw(
    cp: &TestControlPlane,
    token: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> (StatusCode, Value) {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let resp = cp
        .http()
        .post(cp.at("/canopy/v1/agent/enroll"))
        .header(PROTOCOL_HEADER, "1")
        .json(&json!({"protocolVersion": 1, "token": token, "name": name, "labels": labels}))
        .send()
        .await
        .unwrap();
    let s = resp.status();
    (s, resp.json().await.unwrap_or(Value::Null))
}
