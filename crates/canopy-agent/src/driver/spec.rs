//! Translation of a rendered [`ContainerSpec`] into the Engine API's create request. Pure, so
//! what the engine is asked for can be checked without an engine.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType,
    NetworkingConfig, PortBinding, RestartPolicy as EngineRestart, RestartPolicyNameEnum,
};
use canopy_proto::{ContainerSpec, HealthCheck, Protocol, RestartPolicy};

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Everything a container needs besides its spec: where it lives and how it is labelled.
pub struct Placement<'a> {
    pub network: &'a str,
    pub aliases: Vec<String>,
    pub labels: HashMap<String, String>,
    /// Engine volume name for each of the spec's volume names.
    pub volumes: &'a HashMap<String, String>,
}

/// The create request for `spec`.
pub fn create_body(spec: &ContainerSpec, place: Placement<'_>) -> ContainerCreateBody {
    let (entrypoint, cmd) = command_line(spec);
    let exposed: Vec<String> = spec.ports.iter().map(port_key).collect();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in spec.ports.iter().filter(|p| p.host_port.is_some()) {
        bindings
            .entry(port_key(p))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_default()
            .push(PortBinding {
                host_ip: Some(p.host_ip.clone().unwrap_or_default()),
                host_port: p.host_port.map(|h| h.to_string()),
            });
    }
    let mounts: Vec<Mount> = spec
        .volumes
        .iter()
        .map(|v| Mount {
            target: Some(v.mount_path.clone()),
            source: Some(
                place
                    .volumes
                    .get(&v.name)
                    .cloned()
                    .unwrap_or_else(|| v.name.clone()),
            ),
            typ: Some(MountType::VOLUME),
            read_only: Some(v.read_only),
            ..Default::default()
        })
        .collect();
    let host_config = HostConfig {
        network_mode: Some(place.network.to_string()),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        mounts: (!mounts.is_empty()).then_some(mounts),
        restart_policy: Some(restart_policy(spec.restart_policy)),
        nano_cpus: spec
            .cpus
            .filter(|c| *c > 0.0)
            .map(|c| (c * NANOS_PER_SEC as f64).round() as i64),
        memory: spec
            .memory_bytes
            .filter(|m| *m > 0)
            .map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
        ..Default::default()
    };
    let endpoint = EndpointSettings {
        aliases: Some(place.aliases),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: (!spec.env.is_empty())
            .then(|| spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        entrypoint,
        cmd,
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck: spec.health_check.as_ref().and_then(health_config),
        labels: Some(place.labels),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(place.network.to_string(), endpoint)])),
        }),
        ..Default::default()
    }
}

/// `command` replaces the image's entrypoint and `args` its command (as in Kubernetes). With a
/// command, the command is always sent (empty when there are no args), so the image's own
/// arguments are never appended to an entrypoint they were not written for.
fn command_line(spec: &ContainerSpec) -> (Option<Vec<String>>, Option<Vec<String>>) {
    match (spec.command.is_empty(), spec.args.is_empty()) {
        (true, true) => (None, None),
        (true, false) => (None, Some(spec.args.clone())),
        (false, _) => (Some(spec.command.clone()), Some(spec.args.clone())),
    }
}

/// `80/tcp`.
pub fn port_key(p: &canopy_proto::PortSpec) -> String {
    let proto = match p.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!("{}/{proto}", p.container_port)
}

fn restart_policy(p: RestartPolicy) -> EngineRestart {
    let name = match p {
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        RestartPolicy::Never => RestartPolicyNameEnum::NO,
    };
    EngineRestart {
        name: Some(name),
        maximum_retry_count: None,
    }
}

/// The engine's health check; `None` for an empty command. A command that starts with the
/// engine's own keywords (`CMD`, `CMD-SHELL`, `NONE`) is passed as is, anything else runs as an
/// exec-form `CMD`.
pub fn health_config(h: &HealthCheck) -> Option<HealthConfig> {
    let first = h.command.first()?;
    let test = if matches!(first.as_str(), "CMD" | "CMD-SHELL" | "NONE") {
        h.command.clone()
    } else {
        std::iter::once("CMD".to_string())
            .chain(h.command.iter().cloned())
            .collect()
    };
    let ns = |secs: u32| i64::from(secs) * NANOS_PER_SEC;
    Some(HealthConfig {
        test: Some(test),
        interval: Some(ns(h.interval_seconds.max(1))),
        timeout: Some(ns(h.timeout_seconds.max(1))),
        retries: Some(i64::from(h.retries.max(1))),
        start_period: Some(ns(h.start_period_seconds)),
        start_interval: None,
    })
}

/// Splits an image reference into what the pull API wants: the repository and the tag (or
/// digest). Without either, `latest`: an empty tag would make the engine pull every tag.
pub fn pull_ref(image: &str) -> (String, String) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (
            image[..last_slash + i].to_string(),
            image[last_slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_proto::{PortSpec, VolumeMount};

    fn body(spec: &ContainerSpec) -> ContainerCreateBody {
        let volumes = HashMap::from([("data".to_string(), "canopy-d1-web-data".to_string())]);
        create_body(
            spec,
            Placement {
                network: "canopy-p-web",
                aliases: vec!["httpd".into(), "web-httpd".into()],
                labels: HashMap::new(),
                volumes: &volumes,
            },
        )
    }

    #[test]
    fn ports_mounts_limits_and_health_are_translated() {
        let spec = ContainerSpec {
            name: "httpd".into(),
            image: "localhost/busybox:t".into(),
            command: vec!["busybox".into(), "httpd".into()],
            args: vec!["-f".into()],
            ports: vec![
                PortSpec {
                    container_port: 80,
                    host_port: Some(8080),
                    host_ip: Some("127.0.0.1".into()),
                    protocol: Protocol::Tcp,
                },
                PortSpec {
                    container_port: 53,
                    protocol: Protocol::Udp,
                    ..Default::default()
                },
            ],
            volumes: vec![VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                read_only: true,
            }],
            health_check: Some(HealthCheck {
                command: vec!["true".into()],
                interval_seconds: 2,
                timeout_seconds: 1,
                retries: 3,
                start_period_seconds: 0,
            }),
            cpus: Some(0.5),
            memory_bytes: Some(64 << 20),
            restart_policy: RestartPolicy::Never,
            ..Default::default()
        };
        let b = body(&spec);
        assert_eq!(b.entrypoint.unwrap(), vec!["busybox", "httpd"]);
        assert_eq!(b.cmd.unwrap(), vec!["-f"]);
        let mut exposed = b.exposed_ports.unwrap();
        exposed.sort();
        assert_eq!(exposed, vec!["53/udp", "80/tcp"]);
        let hc = b.host_config.unwrap();
        let bindings = hc.port_bindings.unwrap();
        assert_eq!(
            bindings.len(),
            1,
            "only ports with a host port are published"
        );
        let bound = bindings["80/tcp"].as_ref().unwrap();
        assert_eq!(bound[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(bound[0].host_port.as_deref(), Some("8080"));
        let mount = &hc.mounts.unwrap()[0];
        assert_eq!(mount.source.as_deref(), Some("canopy-d1-web-data"));
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.memory, Some(64 << 20));
        assert_eq!(
            hc.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        let h = b.healthcheck.unwrap();
        assert_eq!(h.test.unwrap(), vec!["CMD", "true"]);
        assert_eq!(h.interval, Some(2_000_000_000));
        let endpoints = b.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(
            endpoints["canopy-p-web"].aliases.as_deref(),
            Some(&["httpd".to_string(), "web-httpd".to_string()][..])
        );
    }

    #[test]
    fn args_alone_replace_the_image_command() {
        let spec = ContainerSpec {
            args: vec!["sleep".into(), "1".into()],
            ..Default::default()
        };
        let b = body(&spec);
        assert_eq!(b.entrypoint, None);
        assert_eq!(b.cmd.unwrap(), vec!["sleep", "1"]);
        let plain = body(&ContainerSpec::default());
        assert_eq!((plain.entrypoint, plain.cmd), (None, None));
    }

    #[test]
    fn shell_health_checks_pass_through() {
        let h = HealthCheck {
            command: vec!["CMD-SHELL".into(), "wget -q -O- http://127.0.0.1/".into()],
            ..Default::default()
        };
        assert_eq!(health_config(&h).unwrap().test.unwrap()[0], "CMD-SHELL");
        assert!(health_config(&HealthCheck::default()).is_none());
    }

    #[test]
    fn pull_references_always_name_a_tag() {
        assert_eq!(pull_ref("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(
            pull_ref("localhost:5000/a/b:1.2"),
            ("localhost:5000/a/b".into(), "1.2".into())
        );
        assert_eq!(
            pull_ref("localhost:5000/a/b"),
            ("localhost:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            pull_ref("r/x@sha256:abc"),
            ("r/x".into(), "sha256:abc".into())
        );
    }
}
