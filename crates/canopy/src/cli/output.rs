//! Rendering of catalog, fleet and deployment entities for people (aligned tables and detail views) and for scripts
//! (JSON, YAML). Kept apart from the commands so every command shows an entity the same way and
//! so formatting is unit-testable without a server.
//!
//! Tables show the reference CLI's default columns; `json`/`yaml` print the API's own JSON
//! (lowerCamelCase fields), lists as plain arrays.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use canopy_client::{Edge, EnrollmentToken};
use canopy_core::catalog::{
    Application, Artifact, DeploymentPackage, DeploymentProfile, Profile, Registry, Timestamp,
};
use canopy_deploy::model::{
    Cluster, Deployment, DeploymentStatus, DeploymentsStatus, State, TargetClusters,
};
use canopy_proto::{AppState, AppStatus, WorkloadStatus};
use clap::ValueEnum;
use serde::Serialize;

/// How command results are printed (`--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// Aligned columns, or a field list for a single entity.
    #[default]
    Table,
    /// Pretty-printed JSON, as the API sends it.
    Json,
    /// YAML of the same structure as `json`.
    Yaml,
}

/// Serializes `value` as pretty JSON or YAML (with a trailing newline).
pub fn structured<T: Serialize>(format: Format, value: &T) -> anyhow::Result<String> {
    let mut text = match format {
        Format::Yaml => serde_saphyr::to_string(value)?,
        Format::Json | Format::Table => serde_json::to_string_pretty(value)?,
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// A table with a header row; columns are padded to their widest cell, measured in terminal
/// columns (a CJK character or an emoji takes two), laid out by `comfy-table` without borders.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Spaces between columns.
const GAP: u16 = 3;

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; cells are flattened to one line, cells beyond the headers dropped.
    pub fn push(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .iter()
                .take(self.headers.len())
                .map(|c| one_line(c))
                .collect(),
        );
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, every line prefixed with `indent`, without trailing spaces.
    pub fn render(&self, indent: &str) -> String {
        let mut t = comfy_table::Table::new();
        // No borders, no lines: columns separated by their padding alone.
        t.load_preset(comfy_table::presets::NOTHING)
            .set_header(self.headers.clone())
            .add_rows(self.rows.clone());
        let last = self.headers.len().saturating_sub(1);
        for c in t.column_iter_mut() {
            let right = if c.index == last { 0 } else { GAP };
            c.set_padding((0, right));
        }
        let mut out = String::new();
        for line in t.lines() {
            let line = format!("{indent}{line}");
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A single entity as `Label:  value` lines followed by titled sections (nested tables or
/// verbatim text such as chart values).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Details {
    fields: Vec<(String, String)>,
    sections: Vec<(String, Section)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Section {
    Table(Table),
    Text(String),
}

impl Details {
    pub fn field(mut self, label: &str, value: impl Into<String>) -> Details {
        self.fields.push((label.to_owned(), value.into()));
        self
    }

    /// Adds a nested table, or `(none)` when it has no rows.
    pub fn table(mut self, title: &str, table: Table) -> Details {
        self.sections
            .push((title.to_owned(), Section::Table(table)));
        self
    }

    /// Adds verbatim multi-line text; left out when empty.
    pub fn text(mut self, title: &str, text: &str) -> Details {
        if !text.trim().is_empty() {
            self.sections
                .push((title.to_owned(), Section::Text(text.to_owned())));
        }
        self
    }

    pub fn render(&self) -> String {
        let label_width = self
            .fields
            .iter()
            .map(|(l, _)| width(l) + 1)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (label, value) in &self.fields {
            let pad = label_width.saturating_sub(width(label) + 1);
            let line = format!("{label}:{}  {}", " ".repeat(pad), one_line(value));
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for (title, section) in &self.sections {
            let _ = writeln!(out, "{title}:");
            match section {
                Section::Table(t) if t.is_empty() => out.push_str("  (none)\n"),
                Section::Table(t) => out.push_str(&t.render("  ")),
                Section::Text(text) => {
                    for line in text.lines() {
                        let _ = writeln!(out, "{}", format!("  {line}").trim_end());
                    }
                }
            }
        }
        out
    }
}

/// Terminal columns `s` takes.
fn width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

/// Control characters (newlines, tabs) would break the columns.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Shortens long free text for a table cell to at most `max` terminal columns.
fn short(s: &str, max: usize) -> String {
    let s = one_line(s.trim());
    if width(&s) <= max {
        return s;
    }
    let mut cut = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        // One column is kept for the ellipsis.
        if used + w > max.saturating_sub(1) {
            break;
        }
        used += w;
        cut.push(c);
    }
    format!("{}…", cut.trim_end())
}

/// `1234` bytes as `1.2 KiB`.
pub fn human_size(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

fn time(t: &Timestamp) -> String {
    t.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_default()
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "" }.to_owned()
}

fn present(v: &Option<String>) -> String {
    match v.as_deref() {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => String::new(),
    }
}

// ---- registries ---------------------------------------------------------------------------

/// Name, Type, RootUrl, Description (plus Username, AuthToken, CaCerts when secrets were asked).
pub fn registries_table(items: &[Registry], sensitive: bool) -> Table {
    let mut headers = vec!["Name", "Type", "RootUrl", "Description"];
    if sensitive {
        headers.extend(["Username", "AuthToken", "CaCerts"]);
    }
    let mut t = Table::new(&headers);
    for r in items {
        let mut row = vec![
            r.name.clone(),
            r.registry_type.clone(),
            r.root_url.clone(),
            short(&r.description, 60),
        ];
        if sensitive {
            row.push(present(&r.username));
            row.push(present(&r.auth_token));
            row.push(yes(r.cacerts.as_deref().is_some_and(|c| !c.is_empty())));
        }
        t.push(row);
    }
    t
}

pub fn registry_details(r: &Registry) -> Details {
    let mut d = Details::default()
        .field("Name", &r.name)
        .field("DisplayName", &r.display_name)
        .field("Description", &r.description)
        .field("Type", &r.registry_type)
        .field("RootUrl", &r.root_url)
        .field("InventoryUrl", &r.inventory_url)
        .field("ApiType", &r.api_type);
    if r.username.is_some() || r.auth_token.is_some() || r.cacerts.is_some() {
        d = d
            .field("Username", present(&r.username))
            .field("AuthToken", present(&r.auth_token));
    }
    d.field("Created", time(&r.create_time))
        .field("Updated", time(&r.update_time))
        .text("CaCerts", r.cacerts.as_deref().unwrap_or(""))
}

// ---- applications and profiles ------------------------------------------------------------

/// Name, DisplayName, Version, Kind, ChartName, ChartVersion, HelmRegistry, DefaultProfile.
pub fn applications_table(items: &[Application]) -> Table {
    let mut t = Table::new(&[
        "Name",
        "DisplayName",
        "Version",
        "Kind",
        "ChartName",
        "ChartVersion",
        "HelmRegistry",
        "DefaultProfile",
    ]);
    for a in items {
        t.push(vec![
            a.name.clone(),
            a.display_name.clone(),
            a.version.clone(),
            a.kind.as_str().to_owned(),
            a.chart_name.clone(),
            a.chart_version.clone(),
            a.helm_registry_name.clone(),
            a.default_profile_name.clone(),
        ]);
    }
    t
}

/// A detail view of an application; `references` is how many packages use it, when known.
pub fn application_details(a: &Application, references: Option<u64>) -> Details {
    let mut d = Details::default()
        .field("Name", &a.name)
        .field("Version", &a.version)
        .field("DisplayName", &a.display_name)
        .field("Description", &a.description)
        .field("Kind", a.kind.as_str())
        .field("ChartName", &a.chart_name)
        .field("ChartVersion", &a.chart_version)
        .field("HelmRegistry", &a.helm_registry_name)
        .field("ImageRegistry", &a.image_registry_name)
        .field("DefaultProfile", &a.default_profile_name);
    if let Some(n) = references {
        d = d.field("UsedByPackages", n.to_string());
    }
    let mut ignored = Table::new(&["Name", "Kind", "Namespace"]);
    for r in &a.ignored_resources {
        ignored.push(vec![r.name.clone(), r.kind.clone(), r.namespace.clone()]);
    }
    d = d
        .field("Created", time(&a.create_time))
        .field("Updated", time(&a.update_time))
        .table("Profiles", profiles_table(a));
    if !ignored.is_empty() {
        d = d.table("IgnoredResources", ignored);
    }
    d
}

/// Name, DisplayName, Default, #Params, Description of an application's profiles.
pub fn profiles_table(a: &Application) -> Table {
    let mut t = Table::new(&["Name", "DisplayName", "Default", "#Params", "Description"]);
    for p in &a.profiles {
        t.push(vec![
            p.name.clone(),
            p.display_name.clone(),
            yes(p.name == a.default_profile_name),
            p.parameter_templates.len().to_string(),
            short(&p.description, 60),
        ]);
    }
    t
}

pub fn profile_details(a: &Application, p: &Profile) -> Details {
    let mut params = Table::new(&[
        "Name",
        "Type",
        "DisplayName",
        "Default",
        "Mandatory",
        "Secret",
    ]);
    for pt in &p.parameter_templates {
        params.push(vec![
            pt.name.clone(),
            pt.param_type.clone(),
            pt.display_name.clone(),
            pt.default.clone(),
            yes(pt.mandatory),
            yes(pt.secret),
        ]);
    }
    let mut reqs = Table::new(&["Package", "Version", "DeploymentProfile"]);
    for r in &p.deployment_requirement {
        reqs.push(vec![
            r.name.clone(),
            r.version.clone(),
            r.deployment_profile_name.clone(),
        ]);
    }
    let mut d = Details::default()
        .field("Name", &p.name)
        .field("Application", format!("{}:{}", a.name, a.version))
        .field("DisplayName", &p.display_name)
        .field("Description", &p.description)
        .field("Default", yes(p.name == a.default_profile_name))
        .table("ParameterTemplates", params);
    if !reqs.is_empty() {
        d = d.table("DeploymentRequirements", reqs);
    }
    d.text("ChartValues", &p.chart_values)
}

// ---- deployment packages and their profiles -----------------------------------------------

/// Name, DisplayName, Version, Kind, DefaultProfile, IsDeployed, #Apps.
pub fn packages_table(items: &[DeploymentPackage]) -> Table {
    let mut t = Table::new(&[
        "Name",
        "DisplayName",
        "Version",
        "Kind",
        "DefaultProfile",
        "IsDeployed",
        "#Apps",
    ]);
    for p in items {
        t.push(vec![
            p.name.clone(),
            p.display_name.clone(),
            p.version.clone(),
            p.kind.as_str().to_owned(),
            p.default_profile_name.clone(),
            p.is_deployed.to_string(),
            p.application_references.len().to_string(),
        ]);
    }
    t
}

pub fn package_details(p: &DeploymentPackage) -> Details {
    let apps: Vec<String> = p
        .application_references
        .iter()
        .map(|r| format!("{}:{}", r.name, r.version))
        .collect();
    let deps: Vec<String> = p
        .application_dependencies
        .iter()
        .map(|d| format!("{} requires {}", d.name, d.requires))
        .collect();
    let namespaces: Vec<String> = p
        .default_namespaces
        .iter()
        .map(|(app, ns)| format!("{app}={ns}"))
        .collect();
    let artifacts: Vec<String> = p
        .artifacts
        .iter()
        .map(|a| format!("{} ({})", a.name, a.purpose))
        .collect();
    let mut d = Details::default()
        .field("Name", &p.name)
        .field("Version", &p.version)
        .field("DisplayName", &p.display_name)
        .field("Description", &p.description)
        .field("Kind", p.kind.as_str())
        .field("IsDeployed", p.is_deployed.to_string())
        .field("IsVisible", p.is_visible.to_string())
        .field("Applications", apps.join(", "))
        .field("Dependencies", deps.join(", "))
        .field("DefaultNamespaces", namespaces.join(", "))
        .field("DefaultProfile", &p.default_profile_name);
    if !artifacts.is_empty() {
        d = d.field("Artifacts", artifacts.join(", "));
    }
    if p.forbids_multiple_deployments {
        d = d.field("ForbidsMultipleDeployments", "true");
    }
    d.field("Created", time(&p.create_time))
        .field("Updated", time(&p.update_time))
        .table("DeploymentProfiles", deployment_profiles_table(p))
}

fn app_profiles(dp: &DeploymentProfile) -> String {
    dp.application_profiles
        .iter()
        .map(|(app, profile)| format!("{app}={profile}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Name, DisplayName, Default, ApplicationProfiles of a package's deployment profiles.
pub fn deployment_profiles_table(p: &DeploymentPackage) -> Table {
    let mut t = Table::new(&["Name", "DisplayName", "Default", "ApplicationProfiles"]);
    for dp in &p.profiles {
        t.push(vec![
            dp.name.clone(),
            dp.display_name.clone(),
            yes(dp.name == p.default_profile_name),
            app_profiles(dp),
        ]);
    }
    t
}

pub fn deployment_profile_details(p: &DeploymentPackage, dp: &DeploymentProfile) -> Details {
    let mut map = Table::new(&["Application", "Profile"]);
    for (app, profile) in &dp.application_profiles {
        map.push(vec![app.clone(), profile.clone()]);
    }
    Details::default()
        .field("Name", &dp.name)
        .field("Package", format!("{}:{}", p.name, p.version))
        .field("DisplayName", &dp.display_name)
        .field("Description", &dp.description)
        .field("Default", yes(dp.name == p.default_profile_name))
        .table("ApplicationProfiles", map)
}

// ---- artifacts ----------------------------------------------------------------------------

/// Name, MimeType, Size.
pub fn artifacts_table(items: &[Artifact]) -> Table {
    let mut t = Table::new(&["Name", "MimeType", "Size"]);
    for a in items {
        t.push(vec![
            a.name.clone(),
            a.mime_type.clone(),
            human_size(a.artifact.len()),
        ]);
    }
    t
}

pub fn artifact_details(a: &Artifact) -> Details {
    Details::default()
        .field("Name", &a.name)
        .field("DisplayName", &a.display_name)
        .field("Description", &a.description)
        .field("MimeType", &a.mime_type)
        .field("Size", human_size(a.artifact.len()))
        .field("Created", time(&a.create_time))
        .field("Updated", time(&a.update_time))
}

// ---- fleet: enrollment tokens and edges ---------------------------------------------------

/// `k=v,k2=v2`, keys in order.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `uses/max`, or `uses/unlimited`.
fn uses(t: &EnrollmentToken) -> String {
    if t.max_uses == 0 {
        format!("{}/unlimited", t.uses)
    } else {
        format!("{}/{}", t.uses, t.max_uses)
    }
}

/// Id, State, Uses, Expires, Description.
pub fn tokens_table(items: &[EnrollmentToken]) -> Table {
    let mut t = Table::new(&["Id", "State", "Uses", "Expires", "Description"]);
    for tok in items {
        t.push(vec![
            tok.id.clone(),
            tok.state.clone(),
            uses(tok),
            time(&tok.expire_time),
            short(&tok.description, 60),
        ]);
    }
    t
}

pub fn token_details(t: &EnrollmentToken) -> Details {
    Details::default()
        .field("Id", &t.id)
        .field("Description", &t.description)
        .field("State", &t.state)
        .field("Uses", uses(t))
        .field("Created", time(&t.create_time))
        .field("Expires", time(&t.expire_time))
}

/// Name, Id, Connection, State, Labels, Deployments, LastSeen.
pub fn edges_table(items: &[Edge]) -> Table {
    let mut t = Table::new(&[
        "Name",
        "Id",
        "Connection",
        "State",
        "Labels",
        "Deployments",
        "LastSeen",
    ]);
    for e in items {
        t.push(vec![
            e.name.clone(),
            e.id.clone(),
            e.connection.clone(),
            e.state.clone(),
            labels_text(&e.labels),
            e.deployments.to_string(),
            time(&e.last_seen),
        ]);
    }
    t
}

pub fn edge_details(e: &Edge) -> Details {
    Details::default()
        .field("Name", &e.name)
        .field("Id", &e.id)
        .field("Labels", labels_text(&e.labels))
        .field("Connection", &e.connection)
        .field("State", &e.state)
        .field("Deployments", e.deployments.to_string())
        .field(
            "Generation",
            format!("{} (applied {})", e.generation, e.applied_generation),
        )
        .field("AgentVersion", &e.agent_version)
        .field("Engine", &e.engine)
        .field("Capabilities", e.capabilities.join(", "))
        .field("Created", time(&e.create_time))
        .field("LastSeen", time(&e.last_seen))
}

fn app_state(s: AppState) -> &'static str {
    match s {
        AppState::Deploying => "DEPLOYING",
        AppState::Running => "RUNNING",
        AppState::Down => "DOWN",
        AppState::Waiting => "WAITING",
    }
}

/// One row per container: Deployment, App, State, Container, Image, Status, Health, Restarts,
/// Message (an app without containers yet gets one row with the container columns empty).
pub fn workloads_table(apps: &[AppStatus]) -> Table {
    let mut t = Table::new(&[
        "Deployment",
        "App",
        "State",
        "Container",
        "Image",
        "Status",
        "Health",
        "Restarts",
        "Message",
    ]);
    for a in apps {
        let app = |w: Option<&WorkloadStatus>| {
            vec![
                a.deployment_id.clone(),
                a.app.clone(),
                app_state(a.state).to_owned(),
                w.map(|w| w.name.clone()).unwrap_or_default(),
                w.map(|w| w.image.clone()).unwrap_or_default(),
                w.map(|w| w.state.clone()).unwrap_or_default(),
                w.map(|w| w.health.to_string()).unwrap_or_default(),
                w.map(|w| w.restarts.to_string()).unwrap_or_default(),
                short(&a.message, 60),
            ]
        };
        if a.workloads.is_empty() {
            t.push(app(None));
        }
        for w in &a.workloads {
            t.push(app(Some(w)));
        }
    }
    t
}

// ---- deployments --------------------------------------------------------------------------

fn state_of(s: &Option<DeploymentStatus>) -> String {
    s.as_ref()
        .map(|s| s.state.as_str())
        .unwrap_or("")
        .to_owned()
}

/// `running/total` of a summary (edges of a deployment, apps of an edge).
fn running_of(s: &Option<DeploymentStatus>) -> String {
    match s.as_ref().and_then(|s| s.summary.as_ref()) {
        Some(sum) => format!("{}/{}", sum.running, sum.total),
        None => String::new(),
    }
}

/// Apps running on one edge of a deployment, `running/total`.
pub fn cluster_apps(c: &Cluster) -> String {
    match &c.status.summary {
        Some(sum) if sum.total > 0 || c.apps.is_empty() => format!("{}/{}", sum.running, sum.total),
        _ => {
            let running = c
                .apps
                .iter()
                .filter(|a| a.status.as_ref().is_some_and(|s| s.state == State::Running))
                .count();
            format!("{running}/{}", c.apps.len())
        }
    }
}

/// How a deployment picks its edges: `labels site=paris` or `edges e1, e2` (per app when the
/// targets differ between apps).
pub fn targets_text(d: &Deployment) -> String {
    let one = |t: &TargetClusters| {
        if !t.cluster_id.is_empty() {
            format!("edge {}", t.cluster_id)
        } else {
            format!("labels {}", labels_text(&t.labels))
        }
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(all) = &d.all_app_target_clusters {
        parts.push(one(all));
    }
    for t in &d.target_clusters {
        let text = if t.app_name.is_empty() {
            one(t)
        } else {
            format!("{}: {}", t.app_name, one(t))
        };
        if !parts.contains(&text) {
            parts.push(text);
        }
    }
    parts.join("; ")
}

/// DeployId, Name, DisplayName, Package, Profile, State, Edges (running/total).
pub fn deployments_table(items: &[Deployment]) -> Table {
    let mut t = Table::new(&[
        "DeployId",
        "Name",
        "DisplayName",
        "Package",
        "Profile",
        "State",
        "Edges",
    ]);
    for d in items {
        t.push(vec![
            d.deploy_id.clone(),
            d.name.clone(),
            d.display_name.clone(),
            format!("{}:{}", d.app_name, d.app_version),
            d.profile_name.clone(),
            state_of(&d.status),
            running_of(&d.status),
        ]);
    }
    t
}

/// Edge, Id, State, Apps (running/total), Message.
pub fn deployment_clusters_table(clusters: &[Cluster]) -> Table {
    let mut t = Table::new(&["Edge", "Id", "State", "Apps", "Message"]);
    for c in clusters {
        t.push(vec![
            c.name.clone(),
            c.id.clone(),
            c.status.state.as_str().to_owned(),
            cluster_apps(c),
            short(&c.status.message, 80),
        ]);
    }
    t
}

/// A deployment with its status, targets, override values and (when given) its edges.
pub fn deployment_details(d: &Deployment, clusters: &[Cluster]) -> Details {
    let status = d.status.clone().unwrap_or_default();
    let summary = status
        .summary
        .as_ref()
        .map(|s| {
            format!(
                "{} total, {} running, {} down, {} unknown",
                s.total, s.running, s.down, s.unknown
            )
        })
        .unwrap_or_default();
    let mut overrides = Table::new(&["App", "Namespace", "Values"]);
    for o in &d.override_values {
        overrides.push(vec![
            o.app_name.clone(),
            o.target_namespace.clone(),
            o.values
                .as_ref()
                .map(serde_json::Value::to_string)
                .unwrap_or_default(),
        ]);
    }
    let mut details = Details::default()
        .field("DeployId", &d.deploy_id)
        .field("Name", &d.name)
        .field("DisplayName", &d.display_name)
        .field("Package", format!("{}:{}", d.app_name, d.app_version))
        .field("Profile", &d.profile_name)
        .field("Type", &d.deployment_type)
        .field("Targets", targets_text(d))
        .field("State", status.state.as_str())
        .field("Message", &status.message)
        .field("EdgeCounts", summary)
        .field("Created", time(&d.create_time));
    if !overrides.is_empty() {
        details = details.table("OverrideValues", overrides);
    }
    if !d.warnings.is_empty() {
        // What Helm charts hold that edges do not run as Kubernetes would.
        let mut warnings = Table::new(&["App", "Kind", "Name", "Template", "Warning"]);
        for w in &d.warnings {
            warnings.push(vec![
                w.app_name.clone(),
                w.kind.clone(),
                w.name.clone(),
                w.template.clone(),
                w.message.clone(),
            ]);
        }
        details = details.table("Warnings", warnings);
    }
    details.table("Edges", deployment_clusters_table(clusters))
}

/// The `deployments_status` summary: edges counted per state.
pub fn deployments_status_details(s: &DeploymentsStatus) -> Details {
    Details::default()
        .field("Total", s.total.to_string())
        .field("Running", s.running.to_string())
        .field("Down", s.down.to_string())
        .field("Deploying", s.deploying.to_string())
        .field("Updating", s.updating.to_string())
        .field("Terminating", s.terminating.to_string())
        .field("Error", s.error.to_string())
        .field("Unknown", s.unknown.to_string())
}

// ---- workloads (resource manager) ---------------------------------------------------------

/// Edge, Deployment, App, Kind, Name, State, Ready, Restarts, Addresses, Id: one row per VM,
/// one per pod followed by one per container of it (the names `canopy logs` takes).
pub fn workload_list_table(items: &[canopy_client::EdgeWorkload]) -> Table {
    let mut t = Table::new(&[
        "Edge",
        "Deployment",
        "App",
        "Kind",
        "Name",
        "State",
        "Ready",
        "Restarts",
        "Addresses",
        "Id",
    ]);
    let ready = |b: bool| if b { "yes" } else { "no" }.to_owned();
    for w in items {
        let wl = &w.workload;
        let row = |kind: &str,
                   name: &str,
                   state: String,
                   ready: String,
                   restarts: u32,
                   addresses: Vec<String>,
                   id: &str| {
            vec![
                w.edge_name.clone(),
                w.deployment_name.clone(),
                w.app.clone(),
                kind.to_owned(),
                name.to_owned(),
                state,
                ready,
                restarts.to_string(),
                addresses.join(", "),
                id.to_owned(),
            ]
        };
        if let Some(vm) = &wl.virtual_machine {
            let mut state = wl.state().to_owned();
            if vm.admin_status.state == "STATE_DOWN" {
                state.push_str(" (admin DOWN)");
            }
            if !vm.status.message.is_empty() {
                state = format!("{state}: {}", short(&vm.status.message, 60));
            }
            t.push(row(
                "vm",
                &wl.name,
                state,
                ready(wl.workload_ready),
                wl.restarts(),
                w.addresses(),
                &wl.id,
            ));
            continue;
        }
        t.push(row(
            "pod",
            &wl.name,
            wl.state().to_owned(),
            ready(wl.workload_ready),
            wl.restarts(),
            Vec::new(),
            &wl.id,
        ));
        for c in wl.pod.iter().flat_map(|p| &p.containers) {
            let s = &c.status;
            let (state, is_ready) = if s.container_state_running.is_some() {
                ("running".to_owned(), true)
            } else if let Some(wt) = &s.container_state_waiting {
                (with_message(&wt.reason, &wt.message), false)
            } else if let Some(tm) = &s.container_state_terminated {
                (
                    with_message(
                        &format!("{} (exit {})", tm.reason, tm.exit_code),
                        &tm.message,
                    ),
                    false,
                )
            } else {
                (String::new(), false)
            };
            let addresses = w
                .endpoints
                .iter()
                .filter(|e| e.name == c.name)
                .flat_map(|e| e.addresses())
                .collect();
            t.push(row(
                if c.init_container {
                    "init container"
                } else {
                    "container"
                },
                &c.name,
                state,
                ready(is_ready),
                c.restart_count,
                addresses,
                "",
            ));
        }
    }
    t
}

/// `reason: message`, or the reason alone.
fn with_message(reason: &str, message: &str) -> String {
    if message.trim().is_empty() {
        reason.to_owned()
    } else {
        format!("{reason}: {}", short(message, 60))
    }
}

#[cfg(test)]
mod tests {
    use canopy_core::catalog::{ApplicationReference, Kind};

    use super::*;

    fn app(name: &str, version: &str) -> Application {
        Application {
            name: name.into(),
            version: version.into(),
            chart_name: "chart".into(),
            chart_version: "1.0.0".into(),
            helm_registry_name: "helm".into(),
            ..Default::default()
        }
    }

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let mut t = Table::new(&["Name", "Type", "RootUrl"]);
        t.push(vec![
            "a".into(),
            "HELM".into(),
            "oci://x.example.com".into(),
        ]);
        t.push(vec!["longer-name".into(), "".into(), "".into()]);
        assert_eq!(
            t.render(""),
            "Name          Type   RootUrl\n\
             a             HELM   oci://x.example.com\n\
             longer-name\n"
        );
    }

    #[test]
    fn wide_characters_line_up() {
        let mut t = Table::new(&["Name", "Description", "X"]);
        t.push(vec!["日本語".into(), "🌲 forest".into(), "1".into()]);
        t.push(vec!["abc".into(), "plain".into(), "2".into()]);
        t.push(vec!["é".into(), "e\u{301}clair".into(), "3".into()]);
        // CJK characters and emoji take two terminal columns, a combining accent none.
        assert_eq!(
            t.render(""),
            "Name     Description   X\n\
             日本語   🌲 forest     1\n\
             abc      plain         2\n\
             é        e\u{301}clair        3\n"
        );
        assert_eq!(short("日本語日本語", 5), "日本…");
        assert_eq!(short("abcdef", 5), "abcd…");
        assert_eq!(short("日本", 4), "日本");
    }

    #[test]
    fn table_cells_stay_on_one_line() {
        let mut t = Table::new(&["A", "B"]);
        t.push(vec!["x\ny".into(), "tab\there".into()]);
        assert_eq!(t.render("  "), "  A     B\n  x y   tab here\n");
    }

    #[test]
    fn applications_table_has_reference_columns() {
        let mut a = app("web", "0.1.0");
        a.kind = Kind::Addon;
        a.default_profile_name = "default".into();
        let text = applications_table(&[a]).render("");
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "Name",
                "DisplayName",
                "Version",
                "Kind",
                "ChartName",
                "ChartVersion",
                "HelmRegistry",
                "DefaultProfile"
            ]
        );
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            ["web", "0.1.0", "addon", "chart", "1.0.0", "helm", "default"]
        );
    }

    #[test]
    fn packages_table_counts_apps() {
        let p = DeploymentPackage {
            name: "stack".into(),
            version: "1.0".into(),
            application_references: vec![
                ApplicationReference {
                    name: "a".into(),
                    version: "1".into(),
                },
                ApplicationReference {
                    name: "b".into(),
                    version: "1".into(),
                },
            ],
            ..Default::default()
        };
        let text = packages_table(&[p]).render("");
        assert!(
            text.starts_with(
                "Name    DisplayName   Version   Kind     DefaultProfile   IsDeployed   #Apps\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "stack                 1.0       normal                    false        2\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn registries_table_shows_secrets_only_when_asked() {
        let r = Registry {
            name: "r".into(),
            root_url: "oci://x.example.com".into(),
            registry_type: "HELM".into(),
            username: Some("bob".into()),
            cacerts: Some("PEM".into()),
            ..Default::default()
        };
        assert!(
            !registries_table(std::slice::from_ref(&r), false)
                .render("")
                .contains("bob")
        );
        let text = registries_table(&[r], true).render("");
        assert!(
            text.lines()
                .next()
                .unwrap()
                .ends_with("Username   AuthToken   CaCerts")
        );
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .ends_with(&format!("bob{}yes", " ".repeat(20))),
            "{text}"
        );
    }

    #[test]
    fn artifact_sizes_are_human() {
        assert_eq!(human_size(12), "12 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024), "3.0 MiB");
        let a = Artifact {
            name: "icon".into(),
            mime_type: "image/png".into(),
            artifact: vec![0; 2048],
            ..Default::default()
        };
        assert_eq!(
            artifacts_table(&[a]).render(""),
            "Name   MimeType    Size\nicon   image/png   2.0 KiB\n"
        );
    }

    #[test]
    fn details_list_fields_then_sections() {
        let mut a = app("web", "0.1.0");
        a.profiles = vec![Profile {
            name: "default".into(),
            chart_values: "replicas: 2\nimage:\n  tag: x\n".into(),
            ..Default::default()
        }];
        a.default_profile_name = "default".into();
        let text = application_details(&a, Some(3)).render();
        assert!(
            text.starts_with("Name:            web\nVersion:         0.1.0\n"),
            "{text}"
        );
        assert!(text.contains("UsedByPackages:  3\n"), "{text}");
        assert!(text.contains("Profiles:\n  Name      DisplayName   Default   #Params   Description\n  default                 yes       0\n"), "{text}");
        let text = profile_details(&a, &a.profiles[0]).render();
        assert!(text.contains("ParameterTemplates:\n  (none)\n"), "{text}");
        assert!(
            text.ends_with("ChartValues:\n  replicas: 2\n  image:\n    tag: x\n"),
            "{text}"
        );
    }

    #[test]
    fn json_and_yaml_use_api_field_names() {
        let a = app("web", "0.1.0");
        let json = structured(Format::Json, &std::slice::from_ref(&a)).unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back[0]["chartName"], "chart");
        assert_eq!(back[0]["kind"], "KIND_NORMAL");
        assert!(json.ends_with("]\n"));
        let yaml = structured(Format::Yaml, &a).unwrap();
        assert!(yaml.contains("helmRegistryName: helm\n"), "{yaml}");
        let parsed: Application = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(parsed, a);
    }
}
