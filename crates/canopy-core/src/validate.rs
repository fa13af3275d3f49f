//! Field rules of every catalog entity (reference `catalog.v3` constraints), checked without
//! looking at any other entity. Rules that need the rest of the catalog (uniqueness, references,
//! deployed-package locks) live in the server's app layer; the one cross-entity rule that is pure
//! given its inputs, [`check_package_profiles`], lives here so it can be unit-tested.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::catalog::*;
use crate::error::{Invalid, ResourceType};
use crate::names::{NameRule, check_display_name, check_namespace};

/// Allowed artifact MIME types.
pub const ARTIFACT_MIME_TYPES: &[&str] = &[
    "text/plain",
    "application/json",
    "application/yaml",
    "image/png",
    "image/jpeg",
];
/// Smallest and largest artifact content, in bytes.
pub const ARTIFACT_MIN_BYTES: usize = 4;
pub const ARTIFACT_MAX_BYTES: usize = 4_000_000;
/// Largest chart values text of one profile.
pub const CHART_VALUES_MAX: usize = 4_000_000;
/// Most items in any repeated field (profiles, references, ...).
pub const MAX_ITEMS: usize = 100;

struct Ctx {
    resource: ResourceType,
    key: String,
}

impl Ctx {
    fn err(&self, field: &str, msg: impl std::fmt::Display) -> Invalid {
        Invalid::field(self.resource, self.key.clone(), field, msg)
    }

    fn name(&self, field: &str, value: &str, rule: NameRule) -> Result<(), Invalid> {
        rule.check(value)
            .map_err(|e| self.err(field, format!("{value:?} {e}")))
    }

    fn max_len(&self, field: &str, value: &str, max: usize) -> Result<(), Invalid> {
        if value.chars().count() > max {
            return Err(self.err(field, format!("must be at most {max} characters")));
        }
        Ok(())
    }

    fn display(&self, field: &str, value: &str, max: usize) -> Result<(), Invalid> {
        check_display_name(value, max).map_err(|e| self.err(field, format!("{value:?} {e}")))
    }

    fn items<T>(&self, field: &str, v: &[T]) -> Result<(), Invalid> {
        if v.len() > MAX_ITEMS {
            return Err(self.err(
                field,
                format!("at most {MAX_ITEMS} items are allowed (got {})", v.len()),
            ));
        }
        Ok(())
    }
}

fn key(name: &str, version: &str) -> String {
    format!("{name}:{version}")
}

/// Checks a registry's fields.
pub fn registry(r: &Registry) -> Result<(), Invalid> {
    let c = Ctx {
        resource: ResourceType::Registry,
        key: r.name.clone(),
    };
    c.name("name", &r.name, NameRule::Name)?;
    c.display("displayName", &r.display_name, 40)?;
    c.max_len("description", &r.description, 1000)?;
    if r.root_url.is_empty() {
        return Err(c.err("rootUrl", "is required"));
    }
    c.max_len("rootUrl", &r.root_url, 1000)?;
    check_url(&r.root_url, &["http", "https", "oci"])
        .map_err(|e| c.err("rootUrl", format!("{:?} {e}", r.root_url)))?;
    if r.registry_type != "HELM" && r.registry_type != "IMAGE" {
        return Err(c.err(
            "type",
            format!("{:?} must be HELM or IMAGE", r.registry_type),
        ));
    }
    c.max_len("username", r.username.as_deref().unwrap_or(""), 1000)?;
    c.max_len("authToken", r.auth_token.as_deref().unwrap_or(""), 4500)?;
    c.max_len("cacerts", r.cacerts.as_deref().unwrap_or(""), 16384)?;
    c.max_len("apiType", &r.api_type, 16)?;
    c.max_len("inventoryUrl", &r.inventory_url, 1000)?;
    if !r.inventory_url.is_empty() {
        check_url(&r.inventory_url, &["http", "https"])
            .map_err(|e| c.err("inventoryUrl", format!("{:?} {e}", r.inventory_url)))?;
    }
    Ok(())
}

/// `^(https?|oci)://host(.host)+([/?]path)?$`-style check, written out so the message can say
/// which part is wrong.
fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("must start with {}://", schemes.join("://, ")));
    };
    if !schemes.contains(&scheme) {
        return Err(format!("scheme must be one of {}", schemes.join(", ")));
    }
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = &rest[..host_end];
    let host_no_port = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if host_no_port.is_empty() || !host_no_port.split('.').all(valid_label) {
        return Err("has an invalid host".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(())
}

/// Checks an application's fields, profiles and parameter templates.
pub fn application(a: &Application) -> Result<(), Invalid> {
    let c = Ctx {
        resource: ResourceType::Application,
        key: key(&a.name, &a.version),
    };
    c.name("name", &a.name, NameRule::AppName)?;
    c.name("version", &a.version, NameRule::Version)?;
    c.display("displayName", &a.display_name, 40)?;
    c.max_len("description", &a.description, 1000)?;
    // A native application (workload template) may have no chart; chart fields that are
    // given must still be valid.
    let native = a.is_native();
    if a.chart_name.is_empty() {
        if !native {
            return Err(c.err("chartName", "is required"));
        }
    } else {
        c.max_len("chartName", &a.chart_name, 200)?;
        if !a
            .chart_name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '/')
        {
            return Err(c.err(
                "chartName",
                format!(
                    "{:?} may contain only lowercase letters, digits, '-' and '/'",
                    a.chart_name
                ),
            ));
        }
    }
    if a.chart_version.is_empty() {
        if !native {
            return Err(c.err("chartVersion", "is required"));
        }
    } else {
        check_chart_version(&a.chart_version)
            .map_err(|e| c.err("chartVersion", format!("{:?} {e}", a.chart_version)))?;
    }
    if a.helm_registry_name.is_empty() && !native {
        return Err(c.err("helmRegistryName", "is required"));
    }
    if a.workload_template.len() > crate::template::TEMPLATE_MAX_BYTES {
        return Err(c.err(
            "workloadTemplate",
            format!(
                "must be at most {} bytes",
                crate::template::TEMPLATE_MAX_BYTES
            ),
        ));
    }
    c.items("profiles", &a.profiles)?;
    c.items("ignoredResources", &a.ignored_resources)?;
    let mut names = HashSet::new();
    let mut displays = HashSet::new();
    for (i, p) in a.profiles.iter().enumerate() {
        let f = |s: &str| format!("profiles[{i}].{s}");
        c.name(&f("name"), &p.name, NameRule::Name)?;
        if !names.insert(p.name.as_str()) {
            return Err(c.err(
                &f("name"),
                format!("profile {:?} is defined more than once", p.name),
            ));
        }
        c.display(&f("displayName"), &p.display_name, 40)?;
        if !p.display_name.is_empty() && !displays.insert(p.display_name.to_lowercase()) {
            return Err(c.err(
                &f("displayName"),
                format!("display name {:?} is not unique", p.display_name),
            ));
        }
        c.max_len(&f("description"), &p.description, 1000)?;
        if p.chart_values.len() > CHART_VALUES_MAX {
            return Err(c.err(
                &f("chartValues"),
                format!("must be at most {CHART_VALUES_MAX} bytes"),
            ));
        }
        c.items(&f("parameterTemplates"), &p.parameter_templates)?;
        c.items(&f("deploymentRequirement"), &p.deployment_requirement)?;
        let mut pt_names = HashSet::new();
        for (j, t) in p.parameter_templates.iter().enumerate() {
            parameter_template(&c, &f(&format!("parameterTemplates[{j}]")), t)?;
            if !pt_names.insert(t.name.as_str()) {
                return Err(c.err(
                    &f(&format!("parameterTemplates[{j}].name")),
                    format!("parameter template {:?} is defined more than once", t.name),
                ));
            }
        }
        for (j, r) in p.deployment_requirement.iter().enumerate() {
            let g = |s: &str| f(&format!("deploymentRequirement[{j}].{s}"));
            c.name(&g("name"), &r.name, NameRule::Name)?;
            c.name(&g("version"), &r.version, NameRule::Version)?;
            if !r.deployment_profile_name.is_empty() {
                c.name(
                    &g("deploymentProfileName"),
                    &r.deployment_profile_name,
                    NameRule::Name,
                )?;
            }
        }
    }
    if !a.profiles.is_empty() {
        if a.default_profile_name.is_empty() {
            return Err(c.err(
                "defaultProfileName",
                "is required when the application has profiles",
            ));
        }
        if a.profile(&a.default_profile_name).is_none() {
            return Err(c.err(
                "defaultProfileName",
                format!(
                    "{:?} is not one of the application's profiles",
                    a.default_profile_name
                ),
            ));
        }
    } else if !a.default_profile_name.is_empty() {
        return Err(c.err(
            "defaultProfileName",
            format!(
                "{:?} is not one of the application's profiles (it has none)",
                a.default_profile_name
            ),
        ));
    }
    let mut ignored = HashSet::new();
    for (i, r) in a.ignored_resources.iter().enumerate() {
        let f = |s: &str| format!("ignoredResources[{i}].{s}");
        if r.name.is_empty()
            || r.name.len() > 40
            || !r
                .name
                .starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            || !r.name.chars().all(|ch| {
                ch.is_ascii_lowercase()
                    || ch.is_ascii_digit()
                    || ch == '-'
                    || ch == '.'
                    || ch == '_'
            })
        {
            return Err(c.err(
                &f("name"),
                format!(
                    "{:?} must be 1-40 lowercase letters, digits, '-', '.' or '_'",
                    r.name
                ),
            ));
        }
        if r.kind.is_empty()
            || r.kind.len() > 40
            || !r
                .kind
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '_' || ch == '-')
        {
            return Err(c.err(
                &f("kind"),
                format!("{:?} must be 1-40 letters, digits, '.', '_' or '-'", r.kind),
            ));
        }
        if !r.namespace.is_empty() {
            check_namespace(&r.namespace)
                .map_err(|e| c.err(&f("namespace"), format!("{:?} {e}", r.namespace)))?;
        }
        if !ignored.insert((&r.name, &r.kind, &r.namespace)) {
            return Err(c.err(&f("name"), "the same resource is listed more than once"));
        }
    }
    if native {
        crate::template::check_template(a).map_err(|e| {
            let mut msg = String::from("workloadTemplate");
            if !e.profile.is_empty() {
                msg.push_str(&format!(" with profile {:?}", e.profile));
            }
            if !e.field.is_empty() && e.field != "workloadTemplate" {
                msg.push_str(&format!(": {}", e.field));
            }
            c.err(&msg, &e.message)
        })?;
    }
    Ok(())
}

fn check_chart_version(v: &str) -> Result<(), String> {
    if v.len() > 53 {
        return Err("must be at most 53 characters".into());
    }
    let b = v.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b[0]) || !b.iter().all(|&c| alnum(c) || c == b'-' || c == b'.') {
        return Err(
            "must be lowercase letters, digits, '-' and '.', starting with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

fn parameter_template(c: &Ctx, field: &str, t: &ParameterTemplate) -> Result<(), Invalid> {
    let f = |s: &str| format!("{field}.{s}");
    if t.name.is_empty() || t.name.len() > 4096 {
        return Err(c.err(&f("name"), "must be 1-4096 characters"));
    }
    if !t
        .name
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || "-/_[].\\".contains(ch))
    {
        return Err(c.err(
            &f("name"),
            format!("{:?} may contain only letters, digits and -/_[].\\", t.name),
        ));
    }
    c.display(&f("displayName"), &t.display_name, 100)?;
    c.max_len(&f("default"), &t.default, 4096)?;
    c.max_len(&f("validator"), &t.validator, 40)?;
    match t.param_type.as_str() {
        "string" | "number" | "boolean" => {}
        other => {
            return Err(c.err(
                &f("type"),
                format!("{other:?} must be string, number or boolean"),
            ));
        }
    }
    if (t.mandatory || t.secret) && !t.default.is_empty() {
        return Err(c.err(
            &f("default"),
            "must be empty when the parameter is mandatory or secret",
        ));
    }
    if !t.default.is_empty() {
        coerce_parameter(&t.param_type, &t.default).map_err(|e| c.err(&f("default"), e))?;
    }
    c.items(&f("suggestedValues"), &t.suggested_values)?;
    let mut seen = HashSet::new();
    for v in &t.suggested_values {
        if v.is_empty() || v.len() > 4096 {
            return Err(c.err(
                &f("suggestedValues"),
                "each value must be 1-4096 characters",
            ));
        }
        if !seen.insert(v) {
            return Err(c.err(
                &f("suggestedValues"),
                format!("{v:?} is listed more than once"),
            ));
        }
    }
    Ok(())
}

/// Converts a parameter value given as text to the JSON value of its template's type.
pub fn coerce_parameter(param_type: &str, value: &str) -> Result<serde_json::Value, String> {
    match param_type {
        "string" => Ok(serde_json::Value::String(value.to_string())),
        "number" => {
            if let Ok(i) = value.trim().parse::<i64>() {
                return Ok(i.into());
            }
            value
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(serde_json::Value::Number)
                .ok_or_else(|| format!("{value:?} is not a number"))
        }
        "boolean" => match value.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true.into()),
            "false" => Ok(false.into()),
            _ => Err(format!("{value:?} is not a boolean (true or false)")),
        },
        other => Err(format!("unknown parameter type {other:?}")),
    }
}

/// Checks a deployment package's own fields (not the applications it references).
pub fn deployment_package(p: &DeploymentPackage) -> Result<(), Invalid> {
    let c = Ctx {
        resource: ResourceType::DeploymentPackage,
        key: key(&p.name, &p.version),
    };
    c.name("name", &p.name, NameRule::Name)?;
    c.name("version", &p.version, NameRule::Version)?;
    c.display("displayName", &p.display_name, 40)?;
    c.max_len("description", &p.description, 1000)?;
    c.items("applicationReferences", &p.application_references)?;
    c.items("profiles", &p.profiles)?;
    c.items("extensions", &p.extensions)?;
    c.items("artifacts", &p.artifacts)?;
    if p.application_references.is_empty() {
        return Err(c.err(
            "applicationReferences",
            "at least one application is required",
        ));
    }
    let mut app_names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut refs = HashSet::new();
    for (i, r) in p.application_references.iter().enumerate() {
        c.name(
            &format!("applicationReferences[{i}].name"),
            &r.name,
            NameRule::AppName,
        )?;
        c.name(
            &format!("applicationReferences[{i}].version"),
            &r.version,
            NameRule::Version,
        )?;
        if !refs.insert((&r.name, &r.version)) {
            return Err(c.err(
                &format!("applicationReferences[{i}]"),
                format!(
                    "application {}:{} is listed more than once",
                    r.name, r.version
                ),
            ));
        }
        *app_names.entry(r.name.as_str()).or_default() += 1;
    }
    let in_package = |name: &str| app_names.contains_key(name);

    let mut names = HashSet::new();
    let mut displays = HashSet::new();
    for (i, dp) in p.profiles.iter().enumerate() {
        let f = |s: &str| format!("profiles[{i}].{s}");
        c.name(&f("name"), &dp.name, NameRule::Name)?;
        if !names.insert(dp.name.as_str()) {
            return Err(c.err(
                &f("name"),
                format!("deployment profile {:?} is defined more than once", dp.name),
            ));
        }
        c.display(&f("displayName"), &dp.display_name, 40)?;
        if !dp.display_name.is_empty() && !displays.insert(dp.display_name.to_lowercase()) {
            return Err(c.err(
                &f("displayName"),
                format!("display name {:?} is not unique", dp.display_name),
            ));
        }
        c.max_len(&f("description"), &dp.description, 1000)?;
        if dp.application_profiles.is_empty() {
            return Err(c.err(&f("applicationProfiles"), "is required"));
        }
    }
    if !p.profiles.is_empty() {
        if p.default_profile_name.is_empty() {
            return Err(c.err(
                "defaultProfileName",
                "is required when the package has deployment profiles",
            ));
        }
        if p.profile(&p.default_profile_name).is_none() {
            return Err(c.err(
                "defaultProfileName",
                format!(
                    "{:?} is not one of the package's deployment profiles",
                    p.default_profile_name
                ),
            ));
        }
    } else if !p.default_profile_name.is_empty() {
        return Err(c.err(
            "defaultProfileName",
            format!(
                "{:?} is not one of the package's deployment profiles (it has none)",
                p.default_profile_name
            ),
        ));
    }

    let mut deps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (i, d) in p.application_dependencies.iter().enumerate() {
        let f = |s: &str| format!("applicationDependencies[{i}].{s}");
        c.name(&f("name"), &d.name, NameRule::AppName)?;
        c.name(&f("requires"), &d.requires, NameRule::AppName)?;
        if !in_package(&d.name) {
            return Err(c.err(
                &f("name"),
                format!("application {:?} is not part of the package", d.name),
            ));
        }
        if !in_package(&d.requires) {
            return Err(c.err(
                &f("requires"),
                format!("application {:?} is not part of the package", d.requires),
            ));
        }
        if d.name == d.requires {
            return Err(c.err(
                &f("requires"),
                format!("application {:?} cannot depend on itself", d.name),
            ));
        }
        deps.entry(d.name.as_str())
            .or_default()
            .push(d.requires.as_str());
    }
    if let Some(cycle) = find_cycle(&deps) {
        return Err(c.err(
            "applicationDependencies",
            format!("dependency cycle: {}", cycle.join(" -> ")),
        ));
    }

    for (app, ns) in &p.default_namespaces {
        if !in_package(app) {
            return Err(c.err(
                "defaultNamespaces",
                format!("application {app:?} is not part of the package"),
            ));
        }
        check_namespace(ns)
            .map_err(|e| c.err(&format!("defaultNamespaces.{app}"), format!("{ns:?} {e}")))?;
    }
    let mut ns_names = HashSet::new();
    for (i, ns) in p.namespaces.iter().enumerate() {
        check_namespace(&ns.name).map_err(|e| {
            c.err(
                &format!("namespaces[{i}].name"),
                format!("{:?} {e}", ns.name),
            )
        })?;
        if !ns_names.insert(ns.name.as_str()) {
            return Err(c.err(
                &format!("namespaces[{i}].name"),
                format!("namespace {:?} is defined more than once", ns.name),
            ));
        }
    }
    let mut art = HashSet::new();
    for (i, a) in p.artifacts.iter().enumerate() {
        c.name(&format!("artifacts[{i}].name"), &a.name, NameRule::Name)?;
        if a.purpose.is_empty() || a.purpose.len() > 20 {
            return Err(c.err(
                &format!("artifacts[{i}].purpose"),
                "must be 1-20 characters",
            ));
        }
        if !art.insert((&a.name, &a.purpose)) {
            return Err(c.err(
                &format!("artifacts[{i}]"),
                format!(
                    "artifact {:?} is listed more than once for {:?}",
                    a.name, a.purpose
                ),
            ));
        }
    }
    let mut ext = HashSet::new();
    for (i, e) in p.extensions.iter().enumerate() {
        let f = |s: &str| format!("extensions[{i}].{s}");
        c.name(&f("name"), &e.name, NameRule::Name)?;
        c.name(&f("version"), &e.version, NameRule::Version)?;
        c.display(&f("displayName"), &e.display_name, 40)?;
        c.max_len(&f("description"), &e.description, 1000)?;
        if !ext.insert(&e.name) {
            return Err(c.err(
                &f("name"),
                format!("extension {:?} is defined more than once", e.name),
            ));
        }
        c.items(&f("endpoints"), &e.endpoints)?;
        for (j, ep) in e.endpoints.iter().enumerate() {
            let g = |s: &str| f(&format!("endpoints[{j}].{s}"));
            c.name(&g("serviceName"), &ep.service_name, NameRule::Name)?;
            for (fname, v) in [
                ("externalPath", &ep.external_path),
                ("internalPath", &ep.internal_path),
            ] {
                if v.is_empty() || v.len() > 128 {
                    return Err(c.err(&g(fname), "must be 1-128 characters"));
                }
            }
            if !ep.scheme.is_empty() && NameRule::Name.check(&ep.scheme).is_err() {
                return Err(c.err(
                    &g("scheme"),
                    format!("{:?} is not a valid scheme", ep.scheme),
                ));
            }
            if ep.auth_type.len() > 16 || !ep.auth_type.chars().all(|ch| ch.is_ascii_lowercase()) {
                return Err(c.err(
                    &g("authType"),
                    format!("{:?} must be at most 16 lowercase letters", ep.auth_type),
                ));
            }
            c.max_len(&g("appName"), &ep.app_name, 40)?;
        }
        if let Some(ui) = &e.ui_extension {
            let g = |s: &str| f(&format!("uiExtension.{s}"));
            c.max_len(&g("label"), &ui.label, 40)?;
            c.max_len(&g("description"), &ui.description, 1000)?;
            for (fname, v) in [
                ("serviceName", &ui.service_name),
                ("fileName", &ui.file_name),
                ("appName", &ui.app_name),
                ("moduleName", &ui.module_name),
            ] {
                if v.is_empty() || v.len() > 40 {
                    return Err(c.err(&g(fname), "must be 1-40 characters"));
                }
            }
        }
    }
    Ok(())
}

fn find_cycle<'a>(deps: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(pos) = stack.iter().position(|s| *s == n) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(n);
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n);
        for m in deps.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, deps, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n);
        None
    }
    let mut done = BTreeSet::new();
    for n in deps.keys() {
        if let Some(c) = visit(n, deps, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn find_app<'a>(apps: &'a [Application], name: &str, version: &str) -> Option<&'a Application> {
    apps.iter().find(|a| a.name == name && a.version == version)
}

/// Checks that every deployment profile maps applications of the package to profiles those
/// applications own ("application profiles are incongruent" otherwise). `apps` must hold the
/// referenced applications; a missing one is reported as such.
pub fn check_package_profiles(p: &DeploymentPackage, apps: &[Application]) -> Result<(), Invalid> {
    let k = key(&p.name, &p.version);
    let mut by_name: BTreeMap<&str, Vec<&ApplicationReference>> = BTreeMap::new();
    for r in &p.application_references {
        if find_app(apps, &r.name, &r.version).is_none() {
            return Err(Invalid::new(
                ResourceType::DeploymentPackage,
                k,
                format!("application {}:{} not found", r.name, r.version),
            ));
        }
        by_name.entry(r.name.as_str()).or_default().push(r);
    }
    for dp in &p.profiles {
        let incongruent = |why: String| {
            Invalid::new(
                ResourceType::DeploymentPackage,
                k.clone(),
                format!(
                    "application profiles are incongruent: deployment profile {:?}: {why}",
                    dp.name
                ),
            )
        };
        for (app_key, profile) in &dp.application_profiles {
            let (name, version) = match app_key.split_once(':') {
                Some((n, v)) => (n, Some(v)),
                None => (app_key.as_str(), None),
            };
            let candidates = by_name.get(name).cloned().unwrap_or_default();
            let chosen: Vec<&&ApplicationReference> = candidates
                .iter()
                .filter(|r| version.is_none_or(|v| r.version == v))
                .collect();
            if chosen.is_empty() {
                return Err(incongruent(format!(
                    "application {app_key:?} is not part of the package"
                )));
            }
            if chosen.len() > 1 {
                return Err(incongruent(format!(
                    "application {app_key:?} is ambiguous: the package has several versions; use name:version"
                )));
            }
            let r = chosen[0];
            let app = find_app(apps, &r.name, &r.version).expect("checked above");
            if app.profile(profile).is_none() {
                return Err(incongruent(format!(
                    "application {}:{} has no profile {profile:?}",
                    r.name, r.version
                )));
            }
        }
        for (name, refs) in &by_name {
            let covered = refs.iter().all(|r| {
                dp.application_profiles.contains_key(*name)
                    || dp
                        .application_profiles
                        .contains_key(&format!("{}:{}", r.name, r.version))
            });
            let needs_profile = refs.iter().any(|r| {
                find_app(apps, &r.name, &r.version).is_some_and(|a| !a.profiles.is_empty())
            });
            if !covered && needs_profile {
                return Err(incongruent(format!(
                    "application {name:?} has no profile assigned"
                )));
            }
        }
    }
    Ok(())
}

/// Checks an artifact's fields and that its content matches its MIME type.
pub fn artifact(a: &Artifact) -> Result<(), Invalid> {
    let c = Ctx {
        resource: ResourceType::Artifact,
        key: a.name.clone(),
    };
    c.name("name", &a.name, NameRule::Name)?;
    c.display("displayName", &a.display_name, 40)?;
    c.max_len("description", &a.description, 1000)?;
    if !ARTIFACT_MIME_TYPES.contains(&a.mime_type.as_str()) {
        return Err(c.err(
            "mimeType",
            format!(
                "{:?} is not allowed; use one of {}",
                a.mime_type,
                ARTIFACT_MIME_TYPES.join(", ")
            ),
        ));
    }
    let n = a.artifact.len();
    if !(ARTIFACT_MIN_BYTES..=ARTIFACT_MAX_BYTES).contains(&n) {
        return Err(c.err(
            "artifact",
            format!("must be {ARTIFACT_MIN_BYTES} to {ARTIFACT_MAX_BYTES} bytes (got {n})"),
        ));
    }
    check_content(&a.mime_type, &a.artifact).map_err(|e| {
        c.err(
            "artifact",
            format!("content is not valid {}: {e}", a.mime_type),
        )
    })
}

fn check_content(mime: &str, bytes: &[u8]) -> Result<(), String> {
    match mime {
        "image/png" => {
            if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
                Ok(())
            } else {
                Err("missing PNG signature".into())
            }
        }
        "image/jpeg" => {
            if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
                Ok(())
            } else {
                Err("missing JPEG signature".into())
            }
        }
        _ => {
            let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text ({e})"))?;
            match mime {
                "application/json" => serde_json::from_str::<serde_json::Value>(text)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                "application/yaml" => crate::yaml::parse_documents(text).map(|_| ()),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, profiles: &[&str]) -> Application {
        Application {
            name: name.into(),
            version: "1.0.0".into(),
            chart_name: "c".into(),
            chart_version: "1.0.0".into(),
            helm_registry_name: "h".into(),
            default_profile_name: profiles.first().map(|s| s.to_string()).unwrap_or_default(),
            profiles: profiles
                .iter()
                .map(|p| Profile {
                    name: p.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn pkg(apps: &[&str], profile: &[(&str, &str)]) -> DeploymentPackage {
        DeploymentPackage {
            name: "p".into(),
            version: "1.0.0".into(),
            application_references: apps
                .iter()
                .map(|a| ApplicationReference {
                    name: a.to_string(),
                    version: "1.0.0".into(),
                })
                .collect(),
            profiles: vec![DeploymentProfile {
                name: "default".into(),
                application_profiles: profile
                    .iter()
                    .map(|(a, p)| (a.to_string(), p.to_string()))
                    .collect(),
                ..Default::default()
            }],
            default_profile_name: "default".into(),
            is_visible: true,
            ..Default::default()
        }
    }

    #[test]
    fn profiles_congruent() {
        let apps = vec![app("a", &["x"]), app("b", &["y"])];
        let p = pkg(&["a", "b"], &[("a", "x"), ("b:1.0.0", "y")]);
        deployment_package(&p).unwrap();
        check_package_profiles(&p, &apps).unwrap();
        let bad = pkg(&["a", "b"], &[("a", "x"), ("b", "nope")]);
        let e = check_package_profiles(&bad, &apps).unwrap_err();
        assert!(
            e.to_string()
                .contains("application profiles are incongruent"),
            "{e}"
        );
        let stranger = pkg(&["a"], &[("a", "x"), ("zzz", "x")]);
        assert!(check_package_profiles(&stranger, &apps).is_err());
    }

    #[test]
    fn dependency_cycles_refused() {
        let mut p = pkg(&["a", "b"], &[("a", "x"), ("b", "y")]);
        p.application_dependencies = vec![
            ApplicationDependency {
                name: "a".into(),
                requires: "b".into(),
            },
            ApplicationDependency {
                name: "b".into(),
                requires: "a".into(),
            },
        ];
        let e = deployment_package(&p).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
    }

    #[test]
    fn parameter_rules() {
        let mut a = app("a", &["x"]);
        a.profiles[0].parameter_templates = vec![ParameterTemplate {
            name: "image.tag".into(),
            param_type: "string".into(),
            secret: true,
            default: "v".into(),
            ..Default::default()
        }];
        let e = application(&a).unwrap_err();
        assert!(
            e.to_string()
                .contains("profiles[0].parameterTemplates[0].default"),
            "{e}"
        );
        assert_eq!(
            coerce_parameter("number", "3").unwrap(),
            serde_json::json!(3)
        );
        assert_eq!(
            coerce_parameter("boolean", "TRUE").unwrap(),
            serde_json::json!(true)
        );
        assert!(coerce_parameter("number", "x").is_err());
    }

    #[test]
    fn native_applications_need_no_chart() {
        let mut a = app("web", &["default"]);
        a.chart_name.clear();
        a.chart_version.clear();
        a.helm_registry_name.clear();
        let e = application(&a).unwrap_err();
        assert!(e.to_string().contains("chartName: is required"), "{e}");
        a.workload_template = "containers:\n  - {name: web, image: busybox}\n".into();
        application(&a).unwrap();
        // Chart fields that are given must still be valid.
        a.chart_version = "1.0.0".into();
        application(&a).unwrap();
        a.chart_name = "Bad Name".into();
        let e = application(&a).unwrap_err();
        assert!(e.to_string().contains("chartName"), "{e}");
        a.chart_name.clear();
        a.chart_version = "-1".into();
        assert!(application(&a).is_err());
        a.chart_version.clear();
        // The template is checked: syntax, then structure with each profile's values.
        a.workload_template = "containers:\n  - {name: web, image: {{ values.tag }\n".into();
        let e = application(&a).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "application web:1.0.0 workloadTemplate with profile \"default\": syntax error"
            ),
            "{e}"
        );
        a.workload_template = "containers:\n  - {name: web, image: busybox, ports: [{containerPort: {{ values.port }}}]}\n".into();
        a.profiles[0].chart_values = "port: 0\n".into();
        let e = application(&a).unwrap_err();
        assert!(
            e.to_string().contains(
                "workloadTemplate with profile \"default\": containers[0].ports[0].containerPort: 0 is less than the minimum of 1"
            ),
            "{e}"
        );
        a.workload_template = "x".repeat(crate::template::TEMPLATE_MAX_BYTES + 1);
        let e = application(&a).unwrap_err();
        assert!(
            e.to_string().contains("workloadTemplate: must be at most"),
            "{e}"
        );
    }

    #[test]
    fn artifacts_checked_against_mime() {
        let mut a = Artifact {
            name: "icon".into(),
            mime_type: "image/png".into(),
            artifact: b"not a png".to_vec(),
            ..Default::default()
        };
        assert!(artifact(&a).is_err());
        a.artifact = b"\x89PNG\r\n\x1a\n0000".to_vec();
        artifact(&a).unwrap();
        a.mime_type = "application/json".into();
        a.artifact = b"{\"a\": 1}".to_vec();
        artifact(&a).unwrap();
        a.artifact = b"{nope".to_vec();
        assert!(artifact(&a).is_err());
        a.mime_type = "application/x-sh".into();
        assert!(artifact(&a).is_err());
    }

    #[test]
    fn registry_urls() {
        let mut r = Registry {
            name: "r".into(),
            root_url: "oci://registry-1.docker.io/bitnamicharts".into(),
            registry_type: "HELM".into(),
            ..Default::default()
        };
        registry(&r).unwrap();
        r.root_url = "ftp://x.y".into();
        assert!(registry(&r).is_err());
        r.root_url = "https://localhost:5000/x".into();
        registry(&r).unwrap();
        r.registry_type = "helm".into();
        assert!(registry(&r).is_err());
    }
}
