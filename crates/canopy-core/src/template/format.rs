//! The rendered document: reading it (schema, then typed structs), the rules a schema cannot
//! say, and the conversion into the agent's [`ContainerSpec`]s and [`VmSpec`]s.
//!
//! Containers and VMs of one app are checked together because they share the edge host: a
//! host port may be published once, whichever kind publishes it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::OnceLock;

use canopy_proto::{
    ContainerSpec, HealthCheck, PortSpec, Protocol, RestartPolicy, VmBoot, VmCloudInit, VmDisk,
    VmImage, VmPort, VmSpec, VolumeMount,
};
use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, Validator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{SCHEMA_JSON, TemplateError};
use crate::catalog::Registry;

/// Smallest memory limit container engines accept (Docker and Podman: 6 MiB).
const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;
/// Smallest VM memory (what the agent's VM driver accepts).
pub const VM_MIN_MEMORY_MIB: u64 = 16;
/// Largest VM memory (1 TiB): anything more is a typo on an edge host.
pub const VM_MAX_MEMORY_MIB: u64 = 1 << 20;
/// Largest cloud-init `userData` and `metaData` (bytes each).
pub const CLOUD_INIT_MAX_BYTES: usize = 64 * 1024;

/// What a workload template renders to: the app's containers and virtual machines.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workloads {
    pub containers: Vec<ContainerSpec>,
    pub vms: Vec<VmSpec>,
}

/// The rendered document.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadDocument {
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub vms: Vec<VmTemplate>,
}

/// A virtual machine of the rendered document. Boots from `image`, or from `kernel` (with
/// `initrd` and `cmdline`): exactly one of the two.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmTemplate {
    pub name: String,
    #[serde(default)]
    pub cpus: Option<u32>,
    /// MiB (a number or a string of digits) or a size such as `512Mi` (see [`vm_memory_mib`]).
    pub memory: Value,
    #[serde(default)]
    pub image: Option<VmSourceTemplate>,
    #[serde(default)]
    pub kernel: Option<VmSourceTemplate>,
    #[serde(default)]
    pub initrd: Option<VmSourceTemplate>,
    #[serde(default)]
    pub cmdline: Option<String>,
    #[serde(default)]
    pub extra_disks: Vec<VmDiskTemplate>,
    #[serde(default)]
    pub ports: Vec<VmPortTemplate>,
    #[serde(default)]
    pub cloud_init: Option<VmCloudInitTemplate>,
    #[serde(default)]
    pub vnc: bool,
    #[serde(default)]
    pub restart_policy: Option<RestartPolicy>,
}

/// A VM file (disk image, kernel, initrd): where it is and its SHA-256.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmSourceTemplate {
    pub url: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmDiskTemplate {
    pub size_gib: u32,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmPortTemplate {
    pub guest_port: u16,
    pub host_port: u16,
    /// Only `tcp` (the schema refuses anything else).
    #[serde(default)]
    pub protocol: Option<Protocol>,
    #[serde(default)]
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmCloudInitTemplate {
    pub user_data: String,
    #[serde(default)]
    pub meta_data: Option<String>,
}

/// A container of the rendered document. `command`, `args` and `env` values may be strings,
/// numbers or booleans (taken as their text).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub command: Vec<Value>,
    #[serde(default)]
    pub args: Vec<Value>,
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    #[serde(default)]
    pub ports: Vec<PortTemplate>,
    #[serde(default)]
    pub volumes: Vec<VolumeTemplate>,
    #[serde(default)]
    pub health_check: Option<HealthCheckTemplate>,
    #[serde(default)]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(default)]
    pub resources: Option<Resources>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTemplate {
    pub container_port: u16,
    #[serde(default)]
    pub host_port: Option<u16>,
    #[serde(default)]
    pub protocol: Option<Protocol>,
    #[serde(default)]
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeTemplate {
    pub name: String,
    pub mount_path: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckTemplate {
    pub command: Vec<Value>,
    #[serde(default)]
    pub interval_seconds: Option<u32>,
    #[serde(default)]
    pub timeout_seconds: Option<u32>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub start_period_seconds: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Bytes (a number) or a size such as `64Mi` (see [`parse_memory`]).
    #[serde(default)]
    pub memory: Option<Value>,
}

fn validator() -> Result<&'static Validator, String> {
    static VALIDATOR: OnceLock<Result<Validator, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            let schema: Value = serde_json::from_str(SCHEMA_JSON)
                .map_err(|e| format!("workload template schema does not parse: {e}"))?;
            jsonschema::options()
                .with_draft(Draft::Draft202012)
                .build(&schema)
                .map_err(|e| format!("workload template schema does not compile: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// How a rendered document is read: where relative images and VM files resolve, and (at upload)
/// which values stood in for mandatory parameters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadOptions<'a> {
    /// `rootUrl` of the app's image registry.
    pub image_registry_url: Option<&'a str>,
    /// The placeholders [`check_template`](super::check_template) gave mandatory parameters
    /// that have no value yet. A VM's `url`, `sha256`, `cpus`, `memory` or `sizeGib` that is
    /// exactly one of them stands for a value only known at deploy: it is replaced by a valid
    /// stand-in before the document is checked (everything else, and every real value, is
    /// checked as usual). Empty when rendering for a deployment.
    pub placeholders: &'a [Value],
}

/// Checks a rendered document (already parsed) and converts its containers and VMs.
pub(crate) fn workloads_from_value(
    mut doc: Value,
    opts: ReadOptions<'_>,
) -> Result<Workloads, TemplateError> {
    if !doc.is_object() {
        return Err(TemplateError::new(
            "",
            format!(
                "the rendered document must be a mapping with `containers` or `vms`, not {}",
                kind_of(&doc)
            ),
        ));
    }
    drop_nulls(&mut doc, false);
    if !opts.placeholders.is_empty() {
        stand_in_for_placeholders(&mut doc, opts.placeholders);
    }
    let validator =
        validator().map_err(|e| TemplateError::new("", format!("internal error: {e}")))?;
    if let Some(e) = validator.iter_errors(&doc).next() {
        let (field, message) = schema_error(&e);
        return Err(TemplateError::new(field, message));
    }
    let parsed: WorkloadDocument = serde_json::from_value(doc)
        .map_err(|e| TemplateError::new("", format!("does not have the expected shape: {e}")))?;
    convert(parsed, opts.image_registry_url)
}

/// A valid stand-in for each VM field that may hold a placeholder (see
/// [`ReadOptions::placeholders`]).
fn stand_in_for_placeholders(doc: &mut Value, placeholders: &[Value]) {
    let is_placeholder = |v: &Value| placeholders.contains(v);
    let Some(vms) = doc.get_mut("vms").and_then(Value::as_array_mut) else {
        return;
    };
    for vm in vms.iter_mut().filter_map(Value::as_object_mut) {
        for (key, stand_in) in [
            ("cpus", Value::from(1)),
            ("memory", Value::from(VM_MIN_MEMORY_MIB)),
        ] {
            if let Some(v) = vm.get_mut(key)
                && is_placeholder(v)
            {
                *v = stand_in;
            }
        }
        for key in ["image", "kernel", "initrd"] {
            let Some(source) = vm.get_mut(key).and_then(Value::as_object_mut) else {
                continue;
            };
            if let Some(v) = source.get_mut("url")
                && is_placeholder(v)
            {
                *v = Value::from("https://placeholder.invalid/placeholder");
            }
            if let Some(v) = source.get_mut("sha256")
                && is_placeholder(v)
            {
                *v = Value::from("0".repeat(64));
            }
        }
        if let Some(disks) = vm.get_mut("extraDisks").and_then(Value::as_array_mut) {
            for disk in disks.iter_mut().filter_map(Value::as_object_mut) {
                if let Some(v) = disk.get_mut("sizeGib")
                    && is_placeholder(v)
                {
                    *v = Value::from(1);
                }
            }
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Keys whose value is `null` count as absent (a template's `{% for %}` that yields nothing
/// leaves `key:` behind); in `env`, `null` is the empty string.
fn drop_nulls(v: &mut Value, in_env: bool) {
    match v {
        Value::Object(map) => {
            if in_env {
                for val in map.values_mut() {
                    if val.is_null() {
                        *val = Value::String(String::new());
                    }
                }
                return;
            }
            map.retain(|_, val| !val.is_null());
            for (k, val) in map.iter_mut() {
                drop_nulls(val, k == "env");
            }
        }
        Value::Array(items) => {
            for item in items {
                drop_nulls(item, false);
            }
        }
        _ => {}
    }
}

/// `/containers/0/ports/1/hostPort` → `containers[0].ports[1].hostPort`.
fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        push_segment(&mut out, &seg);
    }
    out
}

fn push_segment(out: &mut String, seg: &str) {
    if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
        out.push_str(&format!("[{seg}]"));
    } else if !seg.is_empty()
        && seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(seg);
    } else {
        out.push_str(&format!("[{}]", Value::String(seg.to_string())));
    }
}

fn with_segment(path: &str, seg: &str) -> String {
    let mut out = path.to_string();
    push_segment(&mut out, seg);
    out
}

/// A schema error as (field, message), in words where the schema's own are cryptic.
fn schema_error(e: &jsonschema::ValidationError<'_>) -> (String, String) {
    let path = field_path(&e.instance_path().to_string());
    let last = path
        .rsplit(['.', '['])
        .next()
        .unwrap_or("")
        .trim_end_matches(']');
    match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let key = unexpected.first().map(String::as_str).unwrap_or("");
            (
                with_segment(&path, key),
                "unknown field (see docs/TEMPLATE-FORMAT.md for the fields)".into(),
            )
        }
        ValidationErrorKind::Required { property } => {
            let key = property.as_str().unwrap_or("");
            (with_segment(&path, key), "is required".into())
        }
        ValidationErrorKind::PropertyNames { .. } => (
            path,
            "has a name that is not a valid environment variable name (letters, digits and '_', \
             not starting with a digit)"
                .into(),
        ),
        ValidationErrorKind::Pattern { .. } => {
            let value = e.instance().to_string();
            let in_vm = path.starts_with("vms[");
            let why = match last {
                "name" if in_vm => {
                    "must be 1-40 lowercase letters, digits and '-', starting and ending with a letter or digit"
                }
                "name" => {
                    "must be a DNS label: 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
                }
                "memory" if in_vm => "must be MiB or a size such as 512Mi or 1Gi",
                "sha256" => "must be the SHA-256 of the file: 64 hexadecimal digits",
                "url" => "must be a URL or a registry path without spaces",
                "cmdline" => "must be a single line (no control characters)",
                "image" => "is not an image reference (letters, digits and . _ / : @ -, no spaces)",
                "mountPath" => "must be an absolute path",
                "memory" => "must be bytes or a size such as 64Mi, 1Gi or 512M",
                _ => "has an invalid format",
            };
            (path, format!("{value} {why}"))
        }
        ValidationErrorKind::MaxLength { limit } => {
            let chars = e.instance().as_str().map_or(0, |t| t.chars().count());
            (
                path,
                format!("is {chars} characters long, more than the maximum of {limit}"),
            )
        }
        ValidationErrorKind::Enum { .. } if last == "protocol" && path.starts_with("vms[") => (
            path,
            format!("{} is not supported: VM ports are TCP only", e.instance()),
        ),
        // The schema's own words quote the offending value whole (a list of a thousand
        // items...): the message is shortened once secrets are masked in it.
        _ => (path, e.to_string()),
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn texts(items: &[Value]) -> Vec<String> {
    items.iter().map(text_of).collect()
}

fn convert(
    doc: WorkloadDocument,
    image_registry_url: Option<&str>,
) -> Result<Workloads, TemplateError> {
    if doc.containers.is_empty() && doc.vms.is_empty() {
        return Err(TemplateError::new(
            "containers",
            "the document has neither containers nor vms; at least one container or VM is required",
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut host_ports: HashMap<(u16, &str), String> = HashMap::new();
    let mut out = Vec::with_capacity(doc.containers.len());
    for (i, c) in doc.containers.iter().enumerate() {
        let at = |s: &str| format!("containers[{i}].{s}");
        if let Some(j) = names.insert(c.name.as_str(), i) {
            return Err(TemplateError::new(
                at("name"),
                format!("{:?} is also the name of containers[{j}]", c.name),
            ));
        }
        let mut ports = Vec::with_capacity(c.ports.len());
        for (j, p) in c.ports.iter().enumerate() {
            let protocol = p.protocol.unwrap_or_default();
            if let Some(ip) = &p.host_ip
                && ip.parse::<IpAddr>().is_err()
            {
                return Err(TemplateError::new(
                    at(&format!("ports[{j}].hostIp")),
                    format!("{ip:?} is not an IPv4 or IPv6 address"),
                ));
            }
            if let Some(hp) = p.host_port {
                let here = at(&format!("ports[{j}]"));
                if let Some(first) = host_ports.insert((hp, protocol_name(protocol)), here) {
                    return Err(TemplateError::new(
                        at(&format!("ports[{j}].hostPort")),
                        format!(
                            "host port {hp}/{} is already published by {first}",
                            protocol_name(protocol)
                        ),
                    ));
                }
            }
            ports.push(PortSpec {
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip.clone(),
                protocol,
            });
        }
        let mut mounts: HashMap<&str, usize> = HashMap::new();
        let mut vol_names: HashMap<&str, usize> = HashMap::new();
        let mut volumes = Vec::with_capacity(c.volumes.len());
        for (j, v) in c.volumes.iter().enumerate() {
            if v.mount_path.split('/').any(|s| s == "..") {
                return Err(TemplateError::new(
                    at(&format!("volumes[{j}].mountPath")),
                    format!("{:?} must not contain '..'", v.mount_path),
                ));
            }
            let norm = v.mount_path.trim_end_matches('/');
            if norm.is_empty() {
                return Err(TemplateError::new(
                    at(&format!("volumes[{j}].mountPath")),
                    "must not be the root directory",
                ));
            }
            if let Some(k) = mounts.insert(norm, j) {
                return Err(TemplateError::new(
                    at(&format!("volumes[{j}].mountPath")),
                    format!("{:?} is also mounted by volumes[{k}]", v.mount_path),
                ));
            }
            if let Some(k) = vol_names.insert(v.name.as_str(), j) {
                return Err(TemplateError::new(
                    at(&format!("volumes[{j}].name")),
                    format!("volume {:?} is already mounted by volumes[{k}]", v.name),
                ));
            }
            volumes.push(VolumeMount {
                name: v.name.clone(),
                mount_path: v.mount_path.clone(),
                read_only: v.read_only,
            });
        }
        let health_check = c.health_check.as_ref().map(|h| {
            let d = health_check_with(texts(&h.command));
            HealthCheck {
                interval_seconds: h.interval_seconds.unwrap_or(d.interval_seconds),
                timeout_seconds: h.timeout_seconds.unwrap_or(d.timeout_seconds),
                retries: h.retries.unwrap_or(d.retries),
                start_period_seconds: h.start_period_seconds.unwrap_or(d.start_period_seconds),
                command: d.command,
            }
        });
        let (cpus, memory_bytes) = match &c.resources {
            None => (None, None),
            Some(r) => {
                let memory = match &r.memory {
                    None => None,
                    Some(m) => Some(memory_value(m).map_err(|e| {
                        TemplateError::new(at("resources.memory"), format!("{m} {e}"))
                    })?),
                };
                (r.cpus, memory)
            }
        };
        out.push(ContainerSpec {
            name: c.name.clone(),
            image: resolve_image(&c.image, image_registry_url),
            command: texts(&c.command),
            args: texts(&c.args),
            env: c.env.iter().map(|(k, v)| (k.clone(), text_of(v))).collect(),
            ports,
            volumes,
            health_check,
            restart_policy: c.restart_policy.unwrap_or_default(),
            cpus,
            memory_bytes,
        });
    }
    let mut vms = Vec::with_capacity(doc.vms.len());
    let mut vm_names: HashMap<&str, usize> = HashMap::new();
    for (i, vm) in doc.vms.iter().enumerate() {
        if let Some(j) = vm_names.insert(vm.name.as_str(), i) {
            return Err(TemplateError::new(
                format!("vms[{i}].name"),
                format!("{:?} is also the name of vms[{j}]", vm.name),
            ));
        }
        vms.push(convert_vm(i, vm, image_registry_url, &mut host_ports)?);
    }
    Ok(Workloads {
        containers: out,
        vms,
    })
}

/// One VM of the document (`i` its index); `host_ports` are those the app publishes so far.
fn convert_vm(
    i: usize,
    vm: &VmTemplate,
    image_registry_url: Option<&str>,
    host_ports: &mut HashMap<(u16, &'static str), String>,
) -> Result<VmSpec, TemplateError> {
    let at = |s: &str| format!("vms[{i}].{s}");
    let memory_mib = vm_memory_mib(&vm.memory)
        .map_err(|e| TemplateError::new(at("memory"), format!("{} {e}", vm.memory)))?;
    let source = |key: &str, s: &VmSourceTemplate| -> Result<VmImage, TemplateError> {
        Ok(VmImage {
            url: vm_url(&s.url, image_registry_url).map_err(|e| {
                TemplateError::new(at(&format!("{key}.url")), format!("{:?} {e}", s.url))
            })?,
            sha256: s.sha256.to_ascii_lowercase(),
        })
    };
    let boot = match (&vm.image, &vm.kernel) {
        (Some(_), Some(_)) => {
            return Err(TemplateError::new(
                at("kernel"),
                "a VM boots either from a disk image (image) or from a kernel (kernel, initrd, cmdline), not both",
            ));
        }
        (None, None) => {
            return Err(TemplateError::new(
                at("image"),
                "is required: a VM boots from a disk image (image) or from a kernel (kernel, with optional initrd and cmdline)",
            ));
        }
        (Some(image), None) => {
            for (key, given) in [
                ("initrd", vm.initrd.is_some()),
                ("cmdline", vm.cmdline.is_some()),
            ] {
                if given {
                    return Err(TemplateError::new(
                        at(key),
                        "is only for VMs that boot from a kernel (kernel), not from a disk image",
                    ));
                }
            }
            VmBoot::Disk {
                image: source("image", image)?,
            }
        }
        (None, Some(kernel)) => VmBoot::Kernel {
            kernel: source("kernel", kernel)?,
            initrd: vm
                .initrd
                .as_ref()
                .map(|s| source("initrd", s))
                .transpose()?,
            cmdline: vm.cmdline.clone().unwrap_or_default(),
        },
    };
    let mut ports = Vec::with_capacity(vm.ports.len());
    for (j, p) in vm.ports.iter().enumerate() {
        if let Some(ip) = &p.host_ip
            && ip.parse::<IpAddr>().is_err()
        {
            return Err(TemplateError::new(
                at(&format!("ports[{j}].hostIp")),
                format!("{ip:?} is not an IPv4 or IPv6 address"),
            ));
        }
        let here = at(&format!("ports[{j}]"));
        if let Some(first) = host_ports.insert((p.host_port, "tcp"), here) {
            return Err(TemplateError::new(
                at(&format!("ports[{j}].hostPort")),
                format!(
                    "host port {}/tcp is already published by {first}",
                    p.host_port
                ),
            ));
        }
        ports.push(VmPort {
            guest_port: p.guest_port,
            host_port: p.host_port,
            host_ip: p.host_ip.clone(),
        });
    }
    let cloud_init = match &vm.cloud_init {
        None => None,
        Some(c) => {
            for (key, text) in [
                ("userData", Some(&c.user_data)),
                ("metaData", c.meta_data.as_ref()),
            ] {
                if let Some(text) = text
                    && text.len() > CLOUD_INIT_MAX_BYTES
                {
                    return Err(TemplateError::new(
                        at(&format!("cloudInit.{key}")),
                        format!(
                            "is {} bytes, more than the maximum of {CLOUD_INIT_MAX_BYTES}",
                            text.len()
                        ),
                    ));
                }
            }
            Some(VmCloudInit {
                user_data: c.user_data.clone(),
                meta_data: c.meta_data.clone(),
            })
        }
    };
    Ok(VmSpec {
        name: vm.name.clone(),
        cpus: vm.cpus.unwrap_or(1),
        memory_mib,
        boot,
        extra_disks: vm
            .extra_disks
            .iter()
            .map(|d| VmDisk {
                size_gib: d.size_gib,
            })
            .collect(),
        ports,
        cloud_init,
        vnc: vm.vnc,
        restart_policy: vm.restart_policy.unwrap_or_default(),
    })
}

/// VM memory in MiB: a number or a string of digits is MiB; a size with a unit (see
/// [`parse_memory`]) must be a whole number of MiB. 16 MiB to 1 TiB.
pub fn vm_memory_mib(v: &Value) -> Result<u64, String> {
    let mib = match v {
        Value::Number(n) => n.as_u64().ok_or("is not a whole number of MiB")?,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().map_err(|_| "is too large")?
        }
        Value::String(s) => {
            let bytes = parse_memory(s)?;
            if bytes % (1 << 20) != 0 {
                return Err(format!(
                    "is {bytes} bytes, not a whole number of MiB (M is 1000000 bytes; write Mi for MiB, e.g. 512Mi)"
                ));
            }
            bytes >> 20
        }
        _ => return Err("must be MiB or a size such as 512Mi or 1Gi".into()),
    };
    if mib < VM_MIN_MEMORY_MIB {
        return Err(format!(
            "is less than the smallest VM memory, {VM_MIN_MEMORY_MIB} MiB"
        ));
    }
    if mib > VM_MAX_MEMORY_MIB {
        return Err(format!(
            "is more than the largest VM memory, {VM_MAX_MEMORY_MIB} MiB (1 TiB)"
        ));
    }
    Ok(mib)
}

/// Checks a VM file's URL and resolves a registry reference (a relative path: no scheme)
/// against the app's image registry. Absolute URLs are `https://host/...`, `http://host/...`
/// or `file:///absolute/path` (the agent decides which directories it serves `file://` from).
/// A registry reference gets the registry's `rootUrl` in front: with its scheme when that is
/// `http` or `https`, else (`oci://`, none) as `https://host[:port]/path`.
pub fn vm_url(url: &str, image_registry_url: Option<&str>) -> Result<String, String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        return match scheme {
            "https" | "http" => {
                let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                if host.is_empty() || host.contains('@') {
                    Err(format!(
                        "has no host after {scheme}:// (or carries credentials)"
                    ))
                } else {
                    Ok(url.to_string())
                }
            }
            "file" => {
                if !rest.starts_with('/') || rest.starts_with("//") {
                    Err("must be file:///absolute/path (no host)".into())
                } else if rest.split('/').any(|s| s == "..") {
                    Err("must not contain '..'".into())
                } else {
                    Ok(url.to_string())
                }
            }
            other => Err(format!(
                "has the unsupported scheme {other:?} (use https://, http://, file:// or a path relative to the image registry)"
            )),
        };
    }
    // A registry reference.
    let first = url.split('/').next().unwrap_or("");
    if url.starts_with('/') || first.contains(':') {
        return Err(
            "is neither a URL (https://, http://, file://) nor a path relative to the image registry"
                .into(),
        );
    }
    if url
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err("is a registry path with an empty, '.' or '..' part".into());
    }
    let Some(root) = image_registry_url else {
        return Err(
            "is a path relative to the app's image registry, but the application has no image registry (give an https://, http:// or file:// URL, or set imageRegistry)"
                .into(),
        );
    };
    let scheme = match root.split_once("://") {
        Some(("http", _)) => "http",
        _ => "https",
    };
    let prefix = registry_prefix(root);
    if prefix.is_empty() {
        return Err(format!(
            "cannot be resolved: the image registry's rootUrl {root:?} has no host"
        ));
    }
    Ok(format!("{scheme}://{prefix}/{url}"))
}

/// The agent's health check defaults (its serde defaults) for a command.
fn health_check_with(command: Vec<String>) -> HealthCheck {
    serde_json::from_value(serde_json::json!({ "command": command })).unwrap_or(HealthCheck {
        command: Vec::new(),
        interval_seconds: 10,
        timeout_seconds: 5,
        retries: 3,
        start_period_seconds: 0,
    })
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn memory_value(v: &Value) -> Result<u64, String> {
    let bytes = match v {
        Value::String(s) => parse_memory(s)?,
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u,
            (None, Some(f)) if f.fract() == 0.0 && f >= 0.0 && f < u64::MAX as f64 => f as u64,
            _ => return Err("is not a whole number of bytes".into()),
        },
        _ => return Err("must be bytes or a size such as 64Mi".into()),
    };
    if bytes < MIN_MEMORY_BYTES {
        return Err(format!(
            "is below the smallest memory limit container engines accept ({MIN_MEMORY_BYTES} bytes, 6Mi)"
        ));
    }
    Ok(bytes)
}

/// Parses a memory size: plain bytes (`67108864`), or a number (fractions allowed) with a
/// binary unit `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024) or a decimal unit `k`/`K`, `M`, `G`,
/// `T` (powers of 1000): `64Mi`, `1Gi`, `512M`, `1.5Gi`. Fractions of a byte are dropped.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let multiplier: u128 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "has an unknown unit {other:?} (use Ki, Mi, Gi, Ti, k, M, G or T)"
            ));
        }
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits_ok = |d: &str| d.chars().all(|c| c.is_ascii_digit());
    if int.is_empty()
        || !digits_ok(int)
        || !digits_ok(frac)
        || (number.contains('.') && frac.is_empty())
    {
        return Err("is not a size (bytes, or a number with a unit such as 64Mi)".into());
    }
    let too_big = || "is too large".to_string();
    if int.len() > 20 || frac.len() > 18 {
        return Err(too_big());
    }
    let int: u128 = int.parse().map_err(|_| too_big())?;
    let mut bytes = int.checked_mul(multiplier).ok_or_else(too_big)?;
    if !frac.is_empty() {
        let f: u128 = frac.parse().map_err(|_| too_big())?;
        let scale = 10u128.pow(frac.len() as u32);
        bytes = bytes
            .checked_add(f.checked_mul(multiplier).ok_or_else(too_big)? / scale)
            .ok_or_else(too_big)?;
    }
    u64::try_from(bytes).map_err(|_| too_big())
}

/// `host[:port]/path` of a registry root URL: the scheme, query and trailing `/` removed.
pub(crate) fn registry_prefix(root_url: &str) -> String {
    let rest = root_url
        .split_once("://")
        .map_or(root_url, |(_, rest)| rest);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    rest.trim_end_matches('/').to_string()
}

/// True when the first path part of an image reference is a registry host (it has a `.` or a
/// `:`, or is `localhost`), as container engines decide it.
fn has_registry_host(image: &str) -> bool {
    match image.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// Resolves an image reference against the app's image registry: an image without a registry
/// host (`busybox:1.36`, `team/web:2`) gets the registry's `host[:port]/path` in front;
/// anything else (or without a registry) is left as it is.
pub fn resolve_image(image: &str, image_registry_url: Option<&str>) -> String {
    match image_registry_url.map(registry_prefix) {
        Some(prefix) if !prefix.is_empty() && !has_registry_host(image) => {
            format!("{prefix}/{image}")
        }
        _ => image.to_string(),
    }
}

/// Pull credentials for an app's images from its image registry (`server` is the registry's
/// `host[:port]`), when the registry has a username or token.
pub fn image_registry_auth(registry: &Registry) -> Option<canopy_proto::RegistryAuth> {
    let username = registry.username.clone().unwrap_or_default();
    let password = registry.auth_token.clone().unwrap_or_default();
    if username.is_empty() && password.is_empty() {
        return None;
    }
    let prefix = registry_prefix(&registry.root_url);
    let server = prefix.split('/').next().unwrap_or("").to_string();
    Some(canopy_proto::RegistryAuth {
        server,
        username,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("64Mi").unwrap(), 64 * 1024 * 1024);
        assert_eq!(parse_memory("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_memory("512M").unwrap(), 512_000_000);
        assert_eq!(parse_memory("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(parse_memory("100k").unwrap(), 100_000);
        assert_eq!(parse_memory("2T").unwrap(), 2_000_000_000_000);
        assert_eq!(parse_memory("67108864").unwrap(), 67_108_864);
        assert_eq!(parse_memory(" 10Ki ").unwrap(), 10_240);
        for bad in [
            "",
            "Mi",
            "64mi",
            "64 Mi",
            "1.Gi",
            ".5Gi",
            "-1",
            "1e9",
            "64MB",
            "1..2M",
            "99999999999999999999999Ti",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(memory_value(&json!(67108864)).unwrap(), 67_108_864);
        assert_eq!(memory_value(&json!(1e8)).unwrap(), 100_000_000);
        assert!(memory_value(&json!("1Mi")).unwrap_err().contains("6Mi"));
        assert!(memory_value(&json!(1.5)).is_err());
    }

    #[test]
    fn image_resolution() {
        let reg = Some("https://registry.example.com:5000/team/");
        assert_eq!(
            resolve_image("busybox:1.36", reg),
            "registry.example.com:5000/team/busybox:1.36"
        );
        assert_eq!(
            resolve_image("library/busybox@sha256:abc", reg),
            "registry.example.com:5000/team/library/busybox@sha256:abc"
        );
        for absolute in [
            "docker.io/library/busybox:1",
            "localhost/busybox:test",
            "localhost:5000/x",
            "quay.io/a/b",
        ] {
            assert_eq!(resolve_image(absolute, reg), absolute);
        }
        assert_eq!(resolve_image("busybox", None), "busybox");
        assert_eq!(
            resolve_image("busybox", Some("oci://images.example.com")),
            "images.example.com/busybox"
        );
        assert_eq!(
            resolve_image("busybox", Some("http://localhost:5000")),
            "localhost:5000/busybox"
        );
    }

    #[test]
    fn registry_auth_from_registry() {
        let mut r = Registry {
            name: "images".into(),
            root_url: "https://registry.example.com:5000/team".into(),
            registry_type: "IMAGE".into(),
            ..Default::default()
        };
        assert_eq!(image_registry_auth(&r), None);
        r.username = Some("robot".into());
        r.auth_token = Some("t0ken".into());
        let auth = image_registry_auth(&r).unwrap();
        assert_eq!(auth.server, "registry.example.com:5000");
        assert_eq!(auth.username, "robot");
        assert_eq!(auth.password, "t0ken");
    }

    #[test]
    fn field_paths() {
        assert_eq!(
            field_path("/containers/0/ports/1/hostPort"),
            "containers[0].ports[1].hostPort"
        );
        assert_eq!(field_path("/containers/0/env/A_B"), "containers[0].env.A_B");
        assert_eq!(
            field_path("/containers/0/env/a.b~1c"),
            "containers[0].env[\"a.b/c\"]"
        );
        assert_eq!(field_path(""), "");
    }

    #[test]
    fn the_schema_compiles() {
        validator().unwrap();
    }
}
