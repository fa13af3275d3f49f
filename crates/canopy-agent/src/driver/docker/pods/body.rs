//! Engine create requests for a pod's containers: the infra container (the pod's network
//! namespace, names and published ports), its init and app containers (which join that
//! namespace), and a Service's container. Pure, like `spec.rs` for native containers.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkingConfig,
    PortBinding, RestartPolicy as EngineRestart, RestartPolicyNameEnum,
};
use canopy_proto::pods::{Container, EnvVar, PodField, RestartPolicy, Workload};

use super::pause;
use super::plan::{PodVolume, Published, VolumeKind};

/// Where the infra container mounts the pod's volumes it fills (files, `subPath` directories).
pub const STAGING: &str = "/.canopy/volumes";
const NANOS_PER_MILLI_CPU: i64 = 1_000_000;

/// The infra container of a pod.
pub struct Infra<'a> {
    pub network: &'a str,
    pub hostname: &'a str,
    pub aliases: &'a [String],
    pub published: &'a [Published],
    pub labels: HashMap<String, String>,
    /// Volumes to stage (files, volumes with a `subPath` mount): mounted at
    /// `STAGING/<pod volume name>`.
    pub staged: Vec<&'a PodVolume>,
    pub host_aliases: Vec<String>,
}

/// The create request of a pod's infra container.
pub fn infra(p: Infra<'_>) -> ContainerCreateBody {
    let key = |x: &Published| format!("{}/{}", x.container_port, if x.udp { "udp" } else { "tcp" });
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for x in p.published {
        bindings
            .entry(key(x))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_default()
            .push(PortBinding {
                host_ip: Some(x.host_ip.clone().unwrap_or_default()),
                host_port: Some(x.host_port.to_string()),
            });
    }
    let mut exposed: Vec<String> = bindings.keys().cloned().collect();
    exposed.sort();
    let mounts: Vec<Mount> = p
        .staged
        .iter()
        .map(|v| Mount {
            target: Some(format!("{STAGING}/{}", v.name)),
            source: Some(v.engine.clone()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        })
        .collect();
    ContainerCreateBody {
        image: Some(pause::IMAGE.to_string()),
        entrypoint: Some(vec![pause::ENTRYPOINT.to_string()]),
        cmd: Some(Vec::new()),
        hostname: Some(p.hostname.to_string()),
        stop_signal: Some("SIGKILL".into()),
        labels: Some(p.labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            network_mode: Some(p.network.to_string()),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            mounts: (!mounts.is_empty()).then_some(mounts),
            extra_hosts: (!p.host_aliases.is_empty()).then_some(p.host_aliases),
            // The pause process never exits; after an engine restart the pod comes back.
            restart_policy: Some(EngineRestart {
                name: Some(RestartPolicyNameEnum::ALWAYS),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                p.network.to_string(),
                EndpointSettings {
                    aliases: Some(p.aliases.to_vec()),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

/// A Service's container: the pause image holding the Service's names.
pub fn service(
    network: &str,
    aliases: &[String],
    labels: HashMap<String, String>,
) -> ContainerCreateBody {
    infra(Infra {
        network,
        hostname: "service",
        aliases,
        published: &[],
        labels,
        staged: Vec::new(),
        host_aliases: Vec::new(),
    })
}

/// What a pod's container needs besides its spec.
pub struct Member<'a> {
    pub infra: &'a str,
    pub workload: &'a Workload,
    pub labels: HashMap<String, String>,
    /// The pod's volumes, by the pod's names for them.
    pub volumes: &'a [PodVolume],
    /// Host paths of volumes that some mount uses with a `subPath` (the engine's `Mountpoint`).
    pub mountpoints: &'a HashMap<String, String>,
    /// Values of the pod fields (pod name, address, ...).
    pub fields: &'a HashMap<PodField, String>,
    /// The engine restart policy (an init container's is always `no`).
    pub restart: RestartPolicy,
}

/// The create request of a pod's (init) container; the error names the mount that cannot be
/// made.
pub fn member(c: &Container, m: Member<'_>) -> Result<ContainerCreateBody, String> {
    let (entrypoint, cmd) = match (c.command.is_empty(), c.args.is_empty()) {
        (true, true) => (None, None),
        (true, false) => (None, Some(c.args.clone())),
        (false, _) => (Some(c.command.clone()), Some(c.args.clone())),
    };
    let mut mounts = Vec::new();
    for vm in &c.volume_mounts {
        let v = m
            .volumes
            .iter()
            .find(|v| v.name == vm.volume)
            .ok_or_else(|| {
                format!(
                    "container {}: volume {} is not a volume of the pod",
                    c.name, vm.volume
                )
            })?;
        let read_only = vm.read_only || v.kind == VolumeKind::Files;
        let mount = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            None => Mount {
                target: Some(vm.mount_path.clone()),
                source: Some(v.engine.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(read_only),
                ..Default::default()
            },
            Some(sub) => {
                if !sub_path_ok(sub) {
                    return Err(format!(
                        "container {}: subPath {sub:?} of volume {} must be relative, without `..`",
                        c.name, vm.volume
                    ));
                }
                let root = m.mountpoints.get(&v.engine).ok_or_else(|| {
                    format!(
                        "container {}: the engine gave no host path for volume {} (subPath \
                         needs a local volume)",
                        c.name, vm.volume
                    )
                })?;
                Mount {
                    target: Some(vm.mount_path.clone()),
                    source: Some(format!("{}/{}", root.trim_end_matches('/'), sub)),
                    typ: Some(MountType::BIND),
                    read_only: Some(read_only),
                    ..Default::default()
                }
            }
        };
        mounts.push(mount);
    }
    let s = &c.security;
    let user = match (s.run_as_user, s.run_as_group) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, _) => None,
    };
    let mut groups: Vec<String> = Vec::new();
    if let Some(g) = m.workload.security.fs_group {
        groups.push(g.to_string());
    }
    groups.extend(
        m.workload
            .security
            .supplemental_groups
            .iter()
            .map(i64::to_string),
    );
    if let (None, Some(g)) = (s.run_as_user, s.run_as_group) {
        groups.push(g.to_string());
    }
    groups.dedup();
    let restart = match m.restart {
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        RestartPolicy::Never => RestartPolicyNameEnum::NO,
    };
    let network = format!("container:{}", m.infra);
    Ok(ContainerCreateBody {
        image: Some(c.image.clone()),
        entrypoint,
        cmd,
        working_dir: c.working_dir.clone(),
        env: Some(env(&c.env, m.fields)),
        user,
        tty: c.tty.then_some(true),
        open_stdin: c.stdin.then_some(true),
        labels: Some(m.labels),
        stop_timeout: Some(m.workload.termination_grace_period_seconds.max(0)),
        host_config: Some(HostConfig {
            network_mode: Some(network.clone()),
            mounts: (!mounts.is_empty()).then_some(mounts),
            restart_policy: Some(EngineRestart {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            nano_cpus: c.resources.cpu_limit_millis.filter(|m| *m > 0).map(|m| {
                i64::try_from(m).unwrap_or(i64::MAX / NANOS_PER_MILLI_CPU) * NANOS_PER_MILLI_CPU
            }),
            memory: c
                .resources
                .memory_limit_bytes
                .filter(|m| *m > 0)
                .map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            readonly_rootfs: s.read_only_root_filesystem.then_some(true),
            security_opt: s
                .no_new_privileges
                .then(|| vec!["no-new-privileges".to_string()]),
            cap_add: (!s.capabilities_add.is_empty()).then(|| s.capabilities_add.clone()),
            cap_drop: (!s.capabilities_drop.is_empty()).then(|| s.capabilities_drop.clone()),
            group_add: (!groups.is_empty()).then_some(groups),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// `KEY=value` in order, a later name replacing an earlier one (Kubernetes' rule), fields
/// filled from the pod.
pub fn env(vars: &[EnvVar], fields: &HashMap<PodField, String>) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for v in vars {
        let value = match (&v.value, v.field) {
            (Some(value), _) => value.clone(),
            (None, Some(f)) => fields.get(&f).cloned().unwrap_or_default(),
            (None, None) => String::new(),
        };
        match out.iter_mut().find(|(k, _)| *k == v.name) {
            Some(slot) => slot.1 = value,
            None => out.push((v.name.clone(), value)),
        }
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// A `subPath` that stays inside its volume.
pub fn sub_path_ok(sub: &str) -> bool {
    let p = std::path::Path::new(sub);
    !p.is_absolute()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_proto::pods::{
        ContainerSecurity, Mount as PodMount, PodSecurity, PullPolicy, Resources, WorkloadKind,
    };
    use std::collections::BTreeMap;

    fn workload() -> Workload {
        Workload {
            kind: WorkloadKind::Deployment,
            name: "web".into(),
            template: "t".into(),
            replicas: 1,
            labels: BTreeMap::new(),
            restart_policy: RestartPolicy::Always,
            job: None,
            stateful: None,
            init_containers: vec![],
            containers: vec![],
            volumes: vec![],
            hostname: None,
            host_aliases: vec![],
            security: PodSecurity {
                fs_group: Some(2000),
                supplemental_groups: vec![3000],
            },
            termination_grace_period_seconds: 5,
            ignore_changes: false,
        }
    }

    fn container() -> Container {
        Container {
            name: "app".into(),
            image: "img".into(),
            image_pull_policy: PullPolicy::IfNotPresent,
            command: vec!["sh".into()],
            args: vec![],
            working_dir: Some("/w".into()),
            env: vec![
                EnvVar {
                    name: "A".into(),
                    value: Some("1".into()),
                    field: None,
                    from: None,
                    secret: false,
                },
                EnvVar {
                    name: "POD".into(),
                    value: None,
                    field: Some(PodField::PodName),
                    from: None,
                    secret: false,
                },
                EnvVar {
                    name: "A".into(),
                    value: Some("2".into()),
                    field: None,
                    from: None,
                    secret: false,
                },
            ],
            ports: vec![],
            liveness_probe: None,
            readiness_probe: None,
            startup_probe: None,
            resources: Resources {
                cpu_limit_millis: Some(250),
                memory_limit_bytes: Some(64 << 20),
                ..Default::default()
            },
            volume_mounts: vec![
                PodMount {
                    volume: "cfg".into(),
                    mount_path: "/etc/cfg".into(),
                    sub_path: None,
                    read_only: false,
                },
                PodMount {
                    volume: "data".into(),
                    mount_path: "/var/lib/db".into(),
                    sub_path: Some("db".into()),
                    read_only: false,
                },
            ],
            security: ContainerSecurity {
                run_as_user: Some(1000),
                run_as_group: Some(1000),
                read_only_root_filesystem: true,
                no_new_privileges: true,
                capabilities_drop: vec!["ALL".into()],
                ..Default::default()
            },
            tty: false,
            stdin: false,
        }
    }

    #[test]
    fn members_join_the_infra_with_mounts_limits_and_security() {
        let w = workload();
        let volumes = vec![
            PodVolume {
                name: "cfg".into(),
                engine: "v-cfg".into(),
                kind: VolumeKind::Files,
            },
            PodVolume {
                name: "data".into(),
                engine: "v-data".into(),
                kind: VolumeKind::Claim,
            },
        ];
        let mountpoints = HashMap::from([("v-data".to_string(), "/var/lib/v/_data".to_string())]);
        let fields = HashMap::from([(PodField::PodName, "web-0".to_string())]);
        let b = member(
            &container(),
            Member {
                infra: "pod-infra",
                workload: &w,
                labels: HashMap::new(),
                volumes: &volumes,
                mountpoints: &mountpoints,
                fields: &fields,
                restart: RestartPolicy::Always,
            },
        )
        .unwrap();
        assert_eq!(b.env.unwrap(), vec!["A=2", "POD=web-0"]);
        assert_eq!(b.entrypoint.unwrap(), vec!["sh"]);
        assert_eq!(b.cmd.unwrap(), Vec::<String>::new(), "command without args");
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        assert_eq!(b.stop_timeout, Some(5));
        let hc = b.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("container:pod-infra"));
        assert_eq!(hc.nano_cpus, Some(250_000_000));
        assert_eq!(hc.group_add.unwrap(), vec!["2000", "3000"]);
        assert_eq!(hc.readonly_rootfs, Some(true));
        let mounts = hc.mounts.unwrap();
        assert_eq!(mounts[0].read_only, Some(true), "files are read-only");
        assert_eq!(mounts[1].typ, Some(MountType::BIND));
        assert_eq!(mounts[1].source.as_deref(), Some("/var/lib/v/_data/db"));
        assert!(b.networking_config.is_none() && b.hostname.is_none());
    }

    #[test]
    fn bad_mounts_are_named() {
        let w = workload();
        let mut c = container();
        c.volume_mounts[1].sub_path = Some("../x".into());
        let volumes = vec![PodVolume {
            name: "data".into(),
            engine: "v".into(),
            kind: VolumeKind::Claim,
        }];
        let e = member(
            &c,
            Member {
                infra: "i",
                workload: &w,
                labels: HashMap::new(),
                volumes: &volumes,
                mountpoints: &HashMap::new(),
                fields: &HashMap::new(),
                restart: RestartPolicy::Never,
            },
        )
        .unwrap_err();
        assert_eq!(e, "container app: volume cfg is not a volume of the pod");
        assert!(!sub_path_ok("../x") && !sub_path_ok("/a") && sub_path_ok("a/b"));
    }

    #[test]
    fn the_infra_holds_names_ports_and_staging_mounts() {
        let v = PodVolume {
            name: "cfg".into(),
            engine: "v-cfg".into(),
            kind: VolumeKind::Files,
        };
        let b = infra(Infra {
            network: "net",
            hostname: "web-0",
            aliases: &["web".to_string(), "web.ns".to_string()],
            published: &[Published {
                host_ip: Some("127.0.0.1".into()),
                host_port: 30080,
                container_port: 80,
                udp: false,
            }],
            labels: HashMap::new(),
            staged: vec![&v],
            host_aliases: vec!["db.local:10.0.0.1".into()],
        });
        assert_eq!(b.image.as_deref(), Some(pause::IMAGE));
        assert_eq!(b.stop_signal.as_deref(), Some("SIGKILL"));
        let hc = b.host_config.unwrap();
        let bound = &hc.port_bindings.unwrap()["80/tcp"].clone().unwrap()[0];
        assert_eq!(bound.host_port.as_deref(), Some("30080"));
        assert_eq!(
            hc.mounts.unwrap()[0].target.as_deref(),
            Some("/.canopy/volumes/cfg")
        );
        assert_eq!(hc.extra_hosts.unwrap(), vec!["db.local:10.0.0.1"]);
        let aliases = b.networking_config.unwrap().endpoints_config.unwrap()["net"]
            .aliases
            .clone()
            .unwrap();
        assert_eq!(aliases, vec!["web", "web.ns"]);
    }
}
