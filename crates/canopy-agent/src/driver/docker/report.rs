//! What an engine inspect says, in the terms of the status fold ([`Seen`]) and of the report to
//! the control plane ([`WorkloadStatus`]).

use bollard::models::{ContainerInspectResponse, HealthStatusEnum};
use canopy_proto::{AppInstance, Health, PortSpec, Protocol, StatusKind, WorkloadStatus};

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
        health: health.status.map(health_of).unwrap_or_default(),
        exit_code: state.exit_code.unwrap_or_default(),
        error: state.error.unwrap_or_default(),
        restarts: restarts(i),
        health_output: health_output.trim().chars().take(200).collect(),
    })
}

/// The engine's health check verdict in the protocol's words: the engine says `none` (or
/// nothing) without a health check, and both are [`Health::None`] (written `""`).
fn health_of(s: HealthStatusEnum) -> Health {
    match s {
        HealthStatusEnum::EMPTY | HealthStatusEnum::NONE => Health::None,
        HealthStatusEnum::STARTING => Health::Starting,
        HealthStatusEnum::HEALTHY => Health::Healthy,
        HealthStatusEnum::UNHEALTHY => Health::Unhealthy,
    }
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
        kind: StatusKind::Container,
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
            .map(health_of)
            .unwrap_or_default(),
        restarts: restarts(i),
        ports,
        ..WorkloadStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerState, Health as EngineHealth};

    use super::*;

    fn inspect(health: Option<HealthStatusEnum>) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(ContainerState {
                status: Some(bollard::models::ContainerStateStatusEnum::RUNNING),
                health: health.map(|status| EngineHealth {
                    status: Some(status),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The engine's `none` (no health check) is reported as the protocol's `""`, as it always
    /// was; the engine's other verdicts as the same words.
    #[test]
    fn the_engines_health_is_reported_in_the_protocols_words() {
        for (engine, wire) in [
            (None, ""),
            (Some(HealthStatusEnum::EMPTY), ""),
            (Some(HealthStatusEnum::NONE), ""),
            (Some(HealthStatusEnum::STARTING), "starting"),
            (Some(HealthStatusEnum::HEALTHY), "healthy"),
            (Some(HealthStatusEnum::UNHEALTHY), "unhealthy"),
        ] {
            let w = workload(&inspect(engine), "web", "img");
            let json = serde_json::to_value(&w).unwrap();
            assert_eq!(json["health"], wire, "{engine:?}");
            assert_eq!(json["kind"], "container");
        }
    }
}
