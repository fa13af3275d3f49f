//! Reading one file set into entities: YAML documents → schema check → entity structs →
//! values files → field rules → duplicate check → apply order.

use std::collections::BTreeMap;

use super::FileSet;
use super::archive::{RawFile, RawSet};
use super::format::{YamlApplication, YamlArtifact, YamlPackage, YamlRegistry};
use super::schema::{self, EntityKind};
use super::tree::{self, Node, NodeValue};
use crate::catalog::{Application, Artifact, DeploymentPackage, Registry};

/// A parsed YAML file of the set.
struct Parsed<'a> {
    file: &'a RawFile,
    text: &'a str,
    docs: Vec<Node>,
}

/// Entities read so far, each with the label of the file (and document) it came from.
#[derive(Default)]
struct Found {
    registries: Vec<(Registry, String)>,
    applications: Vec<(Application, String)>,
    artifacts: Vec<(Artifact, String)>,
    packages: Vec<(DeploymentPackage, String)>,
}

/// Reads a file set; problems go to `errors` (the returned set then lacks the bad entities).
pub(crate) fn load_set(set: &RawSet, errors: &mut Vec<String>) -> FileSet {
    let mut parsed = Vec::new();
    for file in set.files.iter().filter(|f| f.yaml) {
        let text = match std::str::from_utf8(&file.bytes) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!(
                    "uploaded file {} is not valid UTF-8 text (invalid byte at offset {})",
                    file.display,
                    e.valid_up_to()
                ));
                continue;
            }
        };
        match tree::parse(text) {
            Ok(docs) => parsed.push(Parsed { file, text, docs }),
            Err(e) => errors.push(format!(
                "uploaded file {} is invalid YAML: {e}",
                file.display
            )),
        }
    }

    let mut found = Found::default();
    for p in &parsed {
        let multi = p.docs.len() > 1;
        for (i, doc) in p.docs.iter().enumerate() {
            let label = if multi {
                format!("{} (document {})", p.file.display, i + 1)
            } else {
                p.file.display.clone()
            };
            let Some(spec) = spec_schema(doc, p.text) else {
                continue; // not an entity: a values file, or anything else
            };
            let Some(kind) = EntityKind::from_spec_schema(&spec) else {
                errors.push(format!("uploaded file {label}: unhandled type {spec}"));
                continue;
            };
            if let Err(e) = read_entity(kind, doc, p, set, &label, &mut found) {
                errors.extend(e.into_iter().map(|m| format!("uploaded file {label}: {m}")));
            }
        }
    }
    finish(found, errors)
}

/// The `specSchema` of a document, if it is a mapping that has one.
fn spec_schema(doc: &Node, src: &str) -> Option<String> {
    if !matches!(doc.value, NodeValue::Map(_)) {
        return None;
    }
    let v = doc.get("specSchema", src)?;
    Some(
        v.scalar_text(src)
            .unwrap_or_else(|| v.to_json(src).to_string()),
    )
}

fn read_entity(
    kind: EntityKind,
    doc: &Node,
    p: &Parsed<'_>,
    set: &RawSet,
    label: &str,
    found: &mut Found,
) -> Result<(), Vec<String>> {
    let value = schema::check(kind, doc, p.text)
        .map_err(|issues| issues.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let one = |e: String| vec![e];
    let shape = |e: serde_json::Error| vec![format!("does not have the expected shape: {e}")];
    match kind {
        EntityKind::Registry => {
            let r = serde_json::from_value::<YamlRegistry>(value)
                .map_err(shape)?
                .into_registry();
            crate::validate::registry(&r).map_err(|e| one(e.to_string()))?;
            found.registries.push((r, label.to_string()));
        }
        EntityKind::Application => {
            let (mut app, pending) = serde_json::from_value::<YamlApplication>(value)
                .map_err(shape)?
                .into_application()
                .map_err(one)?;
            let mut problems = Vec::new();
            for (i, file_name) in pending.values {
                match resolve_file(set, &p.file.path, &file_name, NamedFile::Values) {
                    Ok(values) => app.profiles[i].chart_values = values,
                    Err(e) => problems.push(e),
                }
            }
            if let Some(file_name) = &pending.template {
                match resolve_file(set, &p.file.path, file_name, NamedFile::Template) {
                    Ok(template) if template.is_empty() => {
                        problems.push(format!("workload template file {file_name} is empty"))
                    }
                    Ok(template) => app.workload_template = template,
                    Err(e) => problems.push(e),
                }
            }
            if !problems.is_empty() {
                return Err(problems);
            }
            crate::validate::application(&app).map_err(|e| {
                let mut msg = e.to_string();
                if let Some(file_name) = &pending.template
                    && msg.contains("workloadTemplate")
                {
                    msg.push_str(&format!(" (workloadTemplate read from {file_name})"));
                }
                one(msg)
            })?;
            found.applications.push((app, label.to_string()));
        }
        EntityKind::DeploymentPackage => {
            let pkg = serde_json::from_value::<YamlPackage>(value)
                .map_err(shape)?
                .into_package()
                .map_err(one)?;
            crate::validate::deployment_package(&pkg).map_err(|e| one(e.to_string()))?;
            found.packages.push((pkg, label.to_string()));
        }
        EntityKind::Artifact => {
            let a = serde_json::from_value::<YamlArtifact>(value)
                .map_err(shape)?
                .into_artifact()
                .map_err(one)?;
            crate::validate::artifact(&a).map_err(|e| one(e.to_string()))?;
            found.artifacts.push((a, label.to_string()));
        }
    }
    Ok(())
}

/// Joins `base` (a directory path, may be empty) and a relative `name`, resolving `.` and `..`
/// lexically; `None` when the result would leave the file set or `name` is absolute.
fn join(base: &str, name: &str) -> Option<String> {
    let name = name.replace('\\', "/");
    if name.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

fn base_of(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, b)| b)
}

/// What a file named by an application holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NamedFile {
    /// Chart values (`valuesFileName`): YAML.
    Values,
    /// A workload template (`templateFileName`): template text, YAML only once rendered.
    Template,
}

impl NamedFile {
    fn describe(self) -> &'static str {
        match self {
            NamedFile::Values => "chart values file",
            NamedFile::Template => "workload template file",
        }
    }
}

/// Finds the file `name` named by the application file at `app_path`: by path from the file
/// set's root, then from the application file's directory, then by base name if only one file
/// has it. Returns its text.
fn resolve_file(
    set: &RawSet,
    app_path: &str,
    name: &str,
    what: NamedFile,
) -> Result<String, String> {
    let desc = what.describe();
    let by_path = |path: Option<String>| path.and_then(|p| set.files.iter().find(|f| f.path == p));
    let file = match by_path(join("", name)).or_else(|| by_path(join(dir_of(app_path), name))) {
        Some(f) => f,
        None => {
            let base = base_of(name.trim_end_matches('/'));
            let same: Vec<&RawFile> = set
                .files
                .iter()
                .filter(|f| base_of(&f.path) == base)
                .collect();
            match same.as_slice() {
                [one] => *one,
                [] => return Err(format!("{desc} {name} not found in uploads")),
                many => {
                    let paths: Vec<&str> = many.iter().map(|f| f.path.as_str()).collect();
                    return Err(format!(
                        "{desc} {name} is ambiguous: it matches {}; give its path",
                        paths.join(", ")
                    ));
                }
            }
        }
    };
    let text = std::str::from_utf8(&file.bytes)
        .map_err(|_| format!("{desc} {} is not valid UTF-8 text", file.display))?;
    // YAML files were parsed (and reported) on their own; other values files are checked
    // here. Templates are checked by the application's rules (syntax, then rendering).
    if !file.yaml && what == NamedFile::Values {
        tree::parse(text)
            .map_err(|e| format!("chart values file {} is invalid YAML: {e}", file.display))?;
    }
    Ok(text.to_string())
}

/// Refuses keys defined twice in the set and sorts each group by key; remembers which file
/// defined each entity (`FileSet::sources`) so later errors can name it.
fn finish(found: Found, errors: &mut Vec<String>) -> FileSet {
    fn dedupe<T, K: Ord + Clone>(
        items: Vec<(T, String)>,
        key: impl Fn(&T) -> K,
        describe: impl Fn(&K) -> String,
        errors: &mut Vec<String>,
        sources: &mut BTreeMap<String, String>,
    ) -> Vec<T> {
        let mut by_key: BTreeMap<K, (T, String)> = BTreeMap::new();
        for (item, label) in items {
            let k = key(&item);
            if let Some((_, first)) = by_key.get(&k) {
                errors.push(format!(
                    "uploaded file {label}: {} is also defined in {first}",
                    describe(&k)
                ));
                continue;
            }
            sources.insert(describe(&k), label.clone());
            by_key.insert(k, (item, label));
        }
        by_key.into_values().map(|(item, _)| item).collect()
    }
    let nv = |(n, v): &(String, String)| format!("{n}:{v}");
    let mut sources = BTreeMap::new();
    let registries = dedupe(
        found.registries,
        |r| r.name.clone(),
        |k| format!("registry {k}"),
        errors,
        &mut sources,
    );
    let applications = dedupe(
        found.applications,
        |a| (a.name.clone(), a.version.clone()),
        |k| format!("application {}", nv(k)),
        errors,
        &mut sources,
    );
    let artifacts = dedupe(
        found.artifacts,
        |a| a.name.clone(),
        |k| format!("artifact {k}"),
        errors,
        &mut sources,
    );
    let packages = dedupe(
        found.packages,
        |p| (p.name.clone(), p.version.clone()),
        |k| format!("deployment-package {}", nv(k)),
        errors,
        &mut sources,
    );
    FileSet {
        registries,
        applications,
        artifacts,
        packages,
        sources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins() {
        assert_eq!(join("", "values.yaml").unwrap(), "values.yaml");
        assert_eq!(join("pkg", "./values/x.yaml").unwrap(), "pkg/values/x.yaml");
        assert_eq!(
            join("pkg/apps", "../values.yaml").unwrap(),
            "pkg/values.yaml"
        );
        assert_eq!(join("", "../values.yaml"), None);
        assert_eq!(join("pkg", "/etc/passwd"), None);
    }
}
