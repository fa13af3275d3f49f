//! Rendering of catalog entities for people (aligned tables and detail views) and for scripts
//! (JSON, YAML). Kept apart from the commands so every command shows an entity the same way and
//! so formatting is unit-testable without a server.
//!
//! Tables show the reference CLI's default columns; `json`/`yaml` print the API's own JSON
//! (lowerCamelCase fields), lists as plain arrays.

use std::fmt::Write as _;

use canopy_core::catalog::{
    Application, Artifact, DeploymentPackage, DeploymentProfile, Profile, Registry, Timestamp,
};
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

/// A table with a header row; columns are padded to their widest cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Space between columns.
const GAP: &str = "   ";

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; cells are flattened to one line.
    pub fn push(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| one_line(c)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, every line prefixed with `indent`, without trailing spaces.
    pub fn render(&self, indent: &str) -> String {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::from(indent);
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                line.push_str(cell);
                if i + 1 < cols {
                    line.push_str(&" ".repeat(w - width(cell)));
                    line.push_str(GAP);
                }
            }
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
            let label = format!("{label}:");
            let line = format!("{label:<label_width$}  {}", one_line(value));
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

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Control characters (newlines, tabs) would break the columns.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Shortens long free text for a table cell.
fn short(s: &str, max: usize) -> String {
    let s = one_line(s.trim());
    if width(&s) <= max {
        s
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{}…", cut.trim_end())
    }
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
