//! What an engine inspect says, in the terms of the status fold ([`Seen`]) and of the report to
//! the control plane ([`WorkloadStatus`]).

use bollard::models::ContainerInspectResponse;
use canopy_proto::{AppInstance, PortSpec, Protocol, WorkloadStatus};

use crate::driver::names;
use crate::driver::status::{Observed, Seen};

/// A label of the inspected container.
pub(super) fn label_of<'a>(i: &'a ContainerInspectResponse, key: &str) -> Option<&'a str> {
    i.config
        .as_ref()?
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// An engine timestamp (RFC 3339 with nanoseconds).
pub(super) fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// What decides the app state, from an inspect.
pub(super) fn observed(i: &ContainerInspectResponse, app: &AppInstance) -> Seen {
    let state = i.state.clone().unwrap_or_default();
    let health = state.health.clone().unwrap_or_default();
    let health_output = health
        .log
        .as_ref()
        .and_then(|l| l.last())
        .and_then(|r| r.output.clone())
        .unwrap_or_default();
    Seen::Present(Observed {
        current: label_of(i, names::GENERATION) == Some(app.spec_hash.as_str()),
        state: state.status.map(|s| s.to_string()).unwrap_or_default(),
        health: health.status.map(|s| s.to_string()).unwrap_or_default(),
        exit_code: state.exit_code.unwrap_or_default(),
        error: state.error.unwrap_or_default(),
        restarts: restarts(i),
        health_output: health_output.trim().chars().take(200).collect(),
    })
}

/// The engine's restart count of the container.
pub(super) fn restarts(i: &ContainerInspectResponse) -> u32 {
    u32::try_from(i.restart_count.unwrap_or_default().max(0)).unwrap_or(u32::MAX)
}

/// The workload report (named as in the template): state, health, restarts and the host ports
/// actually bound.
pub(super) fn workload(i: &ContainerInspectResponse, name: &str, image: &str) -> WorkloadStatus {
    let state = i.state.clone().unwrap_or_default();
    let mut ports: Vec<PortSpec> = Vec::new();
    let bindings = i.network_settings.as_ref().and_then(|n| n.ports.as_ref());
    for (key, bound) in bindings.into_iter().flatten() {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse::<u16>() else {
            continue;
        };
        let protocol = if proto == "udp" {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        for b in bound.iter().flatten() {
            ports.push(PortSpec {
                container_port,
                host_port: b.host_port.as_deref().and_then(|p| p.parse().ok()),
                host_ip: b.host_ip.clone().filter(|ip| !ip.is_empty()),
                protocol,
            });
        }
    }
    ports.sort_by_key(|p| (p.container_port, p.host_port));
    let status = state.status.map(|s| s.to_string()).unwrap_or_default();
    let exit_code = state
        .exit_code
        .filter(|_| status == "exited" || status == "dead");
    WorkloadStatus {
        kind: "container".into(),
        name: name.to_string(),
        image: i
            .config
            .as_ref()
            .and_then(|c| c.image.clone())
            .unwrap_or_else(|| image.to_string()),
        state: status,
        message: state.error.clone().unwrap_or_default(),
        exit_code,
        created_at: i.created.clone().unwrap_or_default(),
        health: state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| s != "none")
            .unwrap_or_default(),
        restarts: restarts(i),
        ports,
        ..WorkloadStatus::default()
    }
}
