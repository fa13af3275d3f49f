//! The project policy: what a project's deployments may make its edges do, whatever the
//! templates and override values say. Set by an administrator per project; checked every time
//! apps are rendered for edges (deployment create, update, upgrade), after the template's own
//! checks, so a violation is a 400 naming the application, the field, the value and the rule,
//! and nothing is applied.
//!
//! Why: a catalog writer chooses images and VM file URLs, a deployer chooses override values
//! (host ports, sizes). Without a policy an edge pulls from any registry, downloads from any URL
//! (a request from inside the edge's network), publishes any host port and runs containers
//! without limits. The default policy allows all of that (what Canopy did before policies), so
//! existing deployments keep deploying; `docs/SECURITY.md` says what a careful operator sets.
//!
//! Patterns: an image registry is `host[:port][/path]` (the path a prefix at `/` boundaries),
//! a VM file host is `host[:port]`; a host may start with `*.` (any subdomain, not the domain
//! itself), and `*` alone allows everything. A pattern without a port matches only references
//! without one (registries) or the scheme's default port (URLs).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::template::{TemplateError, Workloads, parse_memory};

/// Most patterns in one list.
pub const MAX_PATTERNS: usize = 100;
/// Longest pattern.
pub const MAX_PATTERN_LEN: usize = 300;
/// How many patterns an error message lists.
const LISTED: usize = 10;

/// What a project's deployments may run. Fields left out take their default, which allows
/// everything (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectPolicy {
    /// Registries container images and the image registry's VM files may come from:
    /// `host[:port][/path]`, `*.domain`, or `*` for any. An image without a registry host
    /// (`busybox:1.36`) is `docker.io/library/busybox` unless the application's image registry
    /// resolves it. Default `["*"]`.
    #[serde(default = "any")]
    pub allowed_image_registries: Vec<String>,
    /// Host ports containers and VMs may publish. Default 1-65535.
    #[serde(default)]
    pub allowed_host_ports: PortRange,
    /// Limits given to a container whose template sets none. Default: none.
    #[serde(default)]
    pub default_resources: ResourceLimits,
    /// Most a container or VM may have (CPUs: a container's CPU limit, a VM's vCPUs; memory:
    /// a container's limit, a VM's memory). Setting one requires the same default. Default:
    /// none.
    #[serde(default)]
    pub max_resources: ResourceLimits,
    /// Hosts VM files (`http://`, `https://` URLs other than the application's image registry)
    /// may be downloaded from: `host[:port]`, `*.domain`, or `*` for any. Default `["*"]`.
    #[serde(default = "any")]
    pub allowed_vm_image_hosts: Vec<String>,
    /// Whether VM files may be `file://` paths on the edge. Default `true`.
    #[serde(default = "yes")]
    pub allow_file_urls: bool,
}

fn any() -> Vec<String> {
    vec!["*".to_string()]
}

fn yes() -> bool {
    true
}

impl Default for ProjectPolicy {
    fn default() -> ProjectPolicy {
        ProjectPolicy {
            allowed_image_registries: any(),
            allowed_host_ports: PortRange::default(),
            default_resources: ResourceLimits::default(),
            max_resources: ResourceLimits::default(),
            allowed_vm_image_hosts: any(),
            allow_file_urls: true,
        }
    }
}

/// Host ports `min` to `max`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl Default for PortRange {
    fn default() -> PortRange {
        PortRange { min: 1, max: 65535 }
    }
}

/// CPU and memory limits; an absent one is no limit.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// CPUs (cores, `0.5` is half of one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory: bytes, or a size such as `512Mi` or `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

impl ResourceLimits {
    fn memory_bytes(&self) -> Option<u64> {
        self.memory.as_deref().and_then(|m| parse_memory(m).ok())
    }
}

/// A policy that cannot be stored, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.into(),
        message: message.into(),
    }
}

/// A host pattern: `*`, `host`, `*.domain`, optionally with `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    any: bool,
    /// `*.domain`: any subdomain of `host`.
    subdomains: bool,
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    fn parse(p: &str) -> Result<HostPattern, String> {
        if p == "*" {
            return Ok(HostPattern {
                any: true,
                subdomains: false,
                host: String::new(),
                port: None,
            });
        }
        let (subdomains, rest) = match p.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        let (host, port) = split_port(rest)?;
        let host = host.to_ascii_lowercase();
        let ipv6 = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
        let dns = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !host.starts_with('.')
            && !host.ends_with('.')
            && !host.contains("..");
        if !(dns || (ipv6 && !subdomains)) {
            return Err("is not a host name, an IP address, *.domain or *".into());
        }
        Ok(HostPattern {
            any: false,
            subdomains,
            host,
            port,
        })
    }

    /// Whether `host` (lower case) with `port` (`None`: none given / the default) matches.
    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        if self.any {
            return true;
        }
        let host_ok = if self.subdomains {
            host.strip_suffix(self.host.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            host == self.host
        };
        host_ok && port == self.port
    }
}

/// `host[:port]` → (host, port); a bracketed IPv6 address keeps its brackets.
fn split_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if s.starts_with('[') {
        match s.find(']') {
            Some(end) => {
                let (h, rest) = s.split_at(end + 1);
                (h, rest.strip_prefix(':'))
            }
            None => return Err("has an unclosed '['".into()),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("has a port {p:?} that is not 1-65535"))?,
        ),
    };
    Ok((host, port))
}

/// A registry pattern: a host pattern and a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RegistryPattern {
    host: HostPattern,
    path: Vec<String>,
}

impl RegistryPattern {
    fn parse(p: &str) -> Result<RegistryPattern, String> {
        if p.contains("://") {
            return Err("must be host[:port][/path], without a scheme".into());
        }
        let (host, path): (&str, Vec<String>) = match p.split_once('/') {
            Some((h, rest)) => (h, rest.split('/').map(str::to_string).collect()),
            None => (p, Vec::new()),
        };
        let host = HostPattern::parse(host)?;
        if host.any && !path.is_empty() {
            return Err("* allows every registry: give no path after it".into());
        }
        if path.iter().any(|s| {
            s.is_empty()
                || s == "."
                || s == ".."
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        }) {
            return Err(
                "has a path part that is empty or not letters, digits, '.', '_' and '-'".into(),
            );
        }
        Ok(RegistryPattern { host, path })
    }

    fn matches(&self, loc: &Location) -> bool {
        self.host.matches(&loc.host, loc.port)
            && loc.path.len() >= self.path.len()
            && self.path.iter().zip(&loc.path).all(|(a, b)| a == b)
    }
}

/// Where an image or a registry file is: registry host, port and path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    host: String,
    port: Option<u16>,
    path: Vec<String>,
}

impl Location {
    fn of_image(image: &str) -> Location {
        let (registry, rest) = match image.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            // What container engines do with a reference that names no registry.
            Some(_) => ("docker.io".to_string(), image.to_string()),
            None => ("docker.io".to_string(), format!("library/{image}")),
        };
        let rest = rest.split('@').next().unwrap_or("");
        let mut path: Vec<String> = rest.split('/').map(str::to_string).collect();
        if let Some(last) = path.last_mut()
            && let Some((name, _tag)) = last.split_once(':')
        {
            *last = name.to_string();
        }
        Location::at(&registry, path)
    }

    fn at(registry: &str, path: Vec<String>) -> Location {
        let (host, port) = split_port(registry).unwrap_or((registry, None));
        Location {
            host: host.to_ascii_lowercase(),
            port,
            path,
        }
    }
}

fn check_list(field: &str, list: &[String], registry: bool) -> Result<(), PolicyError> {
    if list.len() > MAX_PATTERNS {
        return Err(invalid(
            field,
            format!("has {} patterns, more than {MAX_PATTERNS}", list.len()),
        ));
    }
    for (i, p) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if p.is_empty() || p.len() > MAX_PATTERN_LEN {
            return Err(invalid(
                at,
                format!("must be 1-{MAX_PATTERN_LEN} characters"),
            ));
        }
        let parsed = if registry {
            RegistryPattern::parse(p).map(|_| ())
        } else {
            HostPattern::parse(p).map(|_| ())
        };
        parsed.map_err(|e| invalid(at, format!("{p:?} {e}")))?;
    }
    Ok(())
}

fn check_limits(field: &str, l: &ResourceLimits) -> Result<(), PolicyError> {
    if let Some(c) = l.cpus
        && !(c.is_finite() && c > 0.0 && c <= 1024.0)
    {
        return Err(invalid(
            format!("{field}.cpus"),
            format!("{c} must be more than 0 and at most 1024"),
        ));
    }
    if let Some(m) = &l.memory {
        let bytes = parse_memory(m)
            .map_err(|e| invalid(format!("{field}.memory"), format!("{m:?} {e}")))?;
        if bytes < 6 << 20 {
            return Err(invalid(
                format!("{field}.memory"),
                format!(
                    "{m:?} is less than 6Mi, the smallest memory limit container engines accept"
                ),
            ));
        }
    }
    Ok(())
}

/// Patterns as an error message lists them.
fn listed(list: &[String]) -> String {
    if list.is_empty() {
        return "empty (nothing is allowed)".to_string();
    }
    let mut s = list
        .iter()
        .take(LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > LISTED {
        s.push_str(&format!(" and {} more", list.len() - LISTED));
    }
    s
}

impl ProjectPolicy {
    /// Checks the policy itself (before it is stored).
    pub fn check(&self) -> Result<(), PolicyError> {
        check_list(
            "allowedImageRegistries",
            &self.allowed_image_registries,
            true,
        )?;
        check_list("allowedVmImageHosts", &self.allowed_vm_image_hosts, false)?;
        let r = self.allowed_host_ports;
        if r.min == 0 || r.min > r.max {
            return Err(invalid(
                "allowedHostPorts",
                format!(
                    "{}-{} must be a range within 1-65535 (min at most max)",
                    r.min, r.max
                ),
            ));
        }
        check_limits("defaultResources", &self.default_resources)?;
        check_limits("maxResources", &self.max_resources)?;
        let (d, m) = (&self.default_resources, &self.max_resources);
        if let Some(max) = m.cpus {
            match d.cpus {
                None => {
                    return Err(invalid(
                        "defaultResources.cpus",
                        "is required when maxResources.cpus is set (containers that give none get it)",
                    ));
                }
                Some(c) if c > max => {
                    return Err(invalid(
                        "defaultResources.cpus",
                        format!("{c} is more than maxResources.cpus {max}"),
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(max) = m.memory_bytes() {
            match d.memory_bytes() {
                None => {
                    return Err(invalid(
                        "defaultResources.memory",
                        "is required when maxResources.memory is set (containers that give none get it)",
                    ));
                }
                Some(b) if b > max => {
                    return Err(invalid(
                        "defaultResources.memory",
                        format!(
                            "{} is more than maxResources.memory {}",
                            d.memory.as_deref().unwrap_or(""),
                            m.memory.as_deref().unwrap_or("")
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn registry_allowed(&self, loc: &Location) -> bool {
        self.allowed_image_registries
            .iter()
            .any(|p| RegistryPattern::parse(p).is_ok_and(|p| p.matches(loc)))
    }

    fn host_allowed(&self, host: &str, port: Option<u16>) -> bool {
        self.allowed_vm_image_hosts
            .iter()
            .any(|p| HostPattern::parse(p).is_ok_and(|p| p.matches(host, port)))
    }

    fn port_allowed(&self, port: u16) -> Result<(), String> {
        let r = self.allowed_host_ports;
        if (r.min..=r.max).contains(&port) {
            Ok(())
        } else {
            Err(format!(
                "host port {port} is not allowed by the project policy: allowedHostPorts is {}-{}",
                r.min, r.max
            ))
        }
    }

    fn registries_rule(&self) -> String {
        format!(
            "is not allowed by the project policy: allowedImageRegistries is {}",
            listed(&self.allowed_image_registries)
        )
    }

    /// Checks a VM file URL (already resolved against the image registry, `registry_url`).
    fn vm_url_allowed(&self, url: &str, registry_url: Option<&str>) -> Result<(), String> {
        if url.starts_with("file://") {
            if self.allow_file_urls {
                return Ok(());
            }
            return Err(format!(
                "{url:?} is not allowed by the project policy: allowFileUrls is false"
            ));
        }
        // A file of the application's image registry: the registry rule.
        if let Some(root) = registry_url {
            let prefix = crate::template::registry_prefix(root);
            let scheme = if root.starts_with("http://") {
                "http"
            } else {
                "https"
            };
            if let Some(rest) = url.strip_prefix(&format!("{scheme}://{prefix}/")) {
                let (registry, base) = prefix.split_once('/').unwrap_or((prefix.as_str(), ""));
                let mut path: Vec<String> = base
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                path.extend(rest.split('/').map(str::to_string));
                let loc = Location::at(registry, path);
                if self.registry_allowed(&loc) {
                    return Ok(());
                }
                return Err(format!(
                    "{url:?} (image registry {prefix}) {}",
                    self.registries_rule()
                ));
            }
        }
        let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let host = parsed.host_str().unwrap_or("").to_ascii_lowercase();
        if self.host_allowed(&host, parsed.port()) {
            return Ok(());
        }
        let shown = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        Err(format!(
            "{url:?} (host {shown}) is not allowed by the project policy: allowedVmImageHosts is {}",
            listed(&self.allowed_vm_image_hosts)
        ))
    }

    /// Applies the policy to an app's rendered workloads: containers without limits get the
    /// defaults, then every image, host port, limit and VM file must be allowed. `registry_url`
    /// is the `rootUrl` of the application's image registry, if it has one. The first
    /// violation is an error naming the field, the value and the rule.
    pub fn enforce(
        &self,
        w: &mut Workloads,
        registry_url: Option<&str>,
    ) -> Result<(), TemplateError> {
        let d = &self.default_resources;
        let m = &self.max_resources;
        let (max_cpus, max_memory) = (m.cpus, m.memory_bytes());
        for (i, c) in w.containers.iter_mut().enumerate() {
            let at = |s: &str| format!("containers[{i}].{s}");
            if !self.registry_allowed(&Location::of_image(&c.image)) {
                return Err(TemplateError::new(
                    at("image"),
                    format!("{:?} {}", c.image, self.registries_rule()),
                ));
            }
            for (j, p) in c.ports.iter().enumerate() {
                if let Some(hp) = p.host_port {
                    self.port_allowed(hp)
                        .map_err(|e| TemplateError::new(at(&format!("ports[{j}].hostPort")), e))?;
                }
            }
            if c.cpus.is_none() {
                c.cpus = d.cpus;
            }
            if c.memory_bytes.is_none() {
                c.memory_bytes = d.memory_bytes();
            }
            if let Some(max) = max_cpus
                && c.cpus.is_none_or(|cpus| cpus > max)
            {
                return Err(TemplateError::new(
                    at("resources.cpus"),
                    format!(
                        "{} is more than the project policy allows: maxResources.cpus is {max}",
                        c.cpus.map_or("no limit".to_string(), |c| c.to_string())
                    ),
                ));
            }
            if let Some(max) = max_memory
                && c.memory_bytes.is_none_or(|b| b > max)
            {
                return Err(TemplateError::new(
                    at("resources.memory"),
                    format!(
                        "{} is more than the project policy allows: maxResources.memory is {}",
                        c.memory_bytes
                            .map_or("no limit".to_string(), |b| format!("{b} bytes")),
                        m.memory.as_deref().unwrap_or("")
                    ),
                ));
            }
        }
        for (i, vm) in w.vms.iter().enumerate() {
            let at = |s: &str| format!("vms[{i}].{s}");
            let files = match &vm.boot {
                canopy_proto::VmBoot::Disk { image } => vec![("image", image)],
                canopy_proto::VmBoot::Kernel { kernel, initrd, .. } => {
                    let mut f = vec![("kernel", kernel)];
                    if let Some(i) = initrd {
                        f.push(("initrd", i));
                    }
                    f
                }
            };
            for (key, file) in files {
                self.vm_url_allowed(&file.url, registry_url)
                    .map_err(|e| TemplateError::new(at(&format!("{key}.url")), e))?;
            }
            for (j, p) in vm.ports.iter().enumerate() {
                self.port_allowed(p.host_port)
                    .map_err(|e| TemplateError::new(at(&format!("ports[{j}].hostPort")), e))?;
            }
            if let Some(max) = max_cpus
                && f64::from(vm.cpus) > max
            {
                return Err(TemplateError::new(
                    at("cpus"),
                    format!(
                        "{} vCPUs is more than the project policy allows: maxResources.cpus is {max}",
                        vm.cpus
                    ),
                ));
            }
            if let Some(max) = max_memory
                && vm.memory_mib.saturating_mul(1 << 20) > max
            {
                return Err(TemplateError::new(
                    at("memory"),
                    format!(
                        "{} MiB is more than the project policy allows: maxResources.memory is {}",
                        vm.memory_mib,
                        m.memory.as_deref().unwrap_or("")
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(image: &str) -> Location {
        Location::of_image(image)
    }

    #[test]
    fn image_locations() {
        let l = loc("busybox:1.36");
        assert_eq!((l.host.as_str(), l.port), ("docker.io", None));
        assert_eq!(l.path, ["library", "busybox"]);
        let l = loc("team/web:2");
        assert_eq!(l.path, ["team", "web"]);
        let l = loc("Registry.Example.com:5000/edge/web@sha256:abc");
        assert_eq!(
            (l.host.as_str(), l.port),
            ("registry.example.com", Some(5000))
        );
        assert_eq!(l.path, ["edge", "web"]);
        let l = loc("localhost/busybox:canopy-test");
        assert_eq!((l.host.as_str(), l.port), ("localhost", None));
    }

    #[test]
    fn registry_patterns() {
        let m = |p: &str, image: &str| RegistryPattern::parse(p).unwrap().matches(&loc(image));
        assert!(m("*", "anything.example.com/x"));
        assert!(m("docker.io/library", "busybox"));
        assert!(!m("docker.io/library", "team/web"));
        assert!(m("registry.example.com", "registry.example.com/a/b:1"));
        assert!(!m("registry.example.com", "registry.example.com:5000/a"));
        assert!(m("localhost:5000", "localhost:5000/a"));
        assert!(m(
            "registry.example.com/edge",
            "registry.example.com/edge/web:1"
        ));
        assert!(!m(
            "registry.example.com/edge",
            "registry.example.com/edgex/web:1"
        ));
        assert!(m("*.example.com", "a.b.example.com/x"));
        assert!(!m("*.example.com", "example.com/x"));
        assert!(!m("*.example.com", "evil-example.com/x"));
        for bad in [
            "https://r.example.com",
            "r.example.com/",
            "r .com",
            "*/x",
            "a:0",
            "a:99999",
            "*.",
            "r.example.com/a//b",
        ] {
            assert!(RegistryPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn host_patterns() {
        let m =
            |p: &str, h: &str, port: Option<u16>| HostPattern::parse(p).unwrap().matches(h, port);
        assert!(m("images.example.com", "images.example.com", None));
        assert!(!m("images.example.com", "images.example.com", Some(8443)));
        assert!(m(
            "images.example.com:8443",
            "images.example.com",
            Some(8443)
        ));
        assert!(m("[::1]:8080", "[::1]", Some(8080)));
        assert!(m("10.0.0.5", "10.0.0.5", None));
        assert!(!m("*.example.com", "example.com", None));
    }

    #[test]
    fn the_default_allows_everything_and_checks() {
        let p = ProjectPolicy::default();
        p.check().unwrap();
        assert_eq!(serde_json::from_str::<ProjectPolicy>("{}").unwrap(), p);
    }

    #[test]
    fn policy_checks_name_the_field() {
        let bad = |json: &str, field: &str| {
            let p: ProjectPolicy = serde_json::from_str(json).unwrap();
            let e = p.check().unwrap_err();
            assert_eq!(e.field, field, "{e}");
        };
        bad(
            r#"{"allowedImageRegistries": ["ok.example.com", "https://x"]}"#,
            "allowedImageRegistries[1]",
        );
        bad(
            r#"{"allowedVmImageHosts": ["a/b"]}"#,
            "allowedVmImageHosts[0]",
        );
        bad(
            r#"{"allowedHostPorts": {"min": 2000, "max": 1000}}"#,
            "allowedHostPorts",
        );
        bad(
            r#"{"allowedHostPorts": {"min": 0, "max": 1000}}"#,
            "allowedHostPorts",
        );
        bad(
            r#"{"defaultResources": {"cpus": 0}}"#,
            "defaultResources.cpus",
        );
        bad(
            r#"{"defaultResources": {"memory": "1Mi"}}"#,
            "defaultResources.memory",
        );
        bad(
            r#"{"maxResources": {"memory": "1Gi"}}"#,
            "defaultResources.memory",
        );
        bad(
            r#"{"maxResources": {"cpus": 1}, "defaultResources": {"cpus": 2}}"#,
            "defaultResources.cpus",
        );
        assert!(serde_json::from_str::<ProjectPolicy>(r#"{"allowedHostPort": {}}"#).is_err());
    }
}
