//! Checking one entity document against the reference JSON Schema
//! (`schema/catalog-upload-schema.yaml`, draft 2020-12).
//!
//! Before the schema sees a document, [`prepare`] walks it alongside the schema and
//! - renames the documented aliases the real loader accepts to the schema's spelling
//!   (`deploymentRequirements`, `registry`, `registryType`, `artifactReferences`,
//!   `defaultProfileName`, and `application`/`dependsOn` in dependencies);
//! - turns numbers and booleans into strings where the schema wants a string, using the text
//!   as written (`version: 1.10` becomes `"1.10"`, never `"1.1"`), and empty values (`key:`)
//!   into the empty string / list / map the schema wants;
//! - reports keys that no schema object there knows, one message per key with its path. The
//!   reference schema closes only the top level (`unevaluatedProperties: false`), so a typo
//!   such as `valuesFilename` in a profile would otherwise be dropped silently and the profile
//!   would deploy without its values; and at the top level, draft 2020-12 reports *every* key
//!   as unexpected as soon as any nested value is invalid, which buries the real error. So
//!   the schema's own unevaluated/additional-properties errors are dropped in favour of these.
//!
//! The schema's top level is a `oneOf` over the four entity types; validating against it would
//! only say "not valid under any of the schemas". So each branch is compiled on its own (once,
//! in a [`OnceLock`]) and a document is checked against the branch its `specSchema` names.

use std::sync::OnceLock;

use jsonschema::{Draft, Validator};
use serde_json::{Map, Value};

use super::tree::{Node, NodeValue};

/// The reference upload schema, embedded.
const SCHEMA_YAML: &str = include_str!("../../schema/catalog-upload-schema.yaml");

/// Most schema messages reported for one document (the rest are summarised).
const MAX_ISSUES_PER_DOCUMENT: usize = 20;
/// Longest single message; schema messages quote the offending value, which may be big.
const MAX_MESSAGE_CHARS: usize = 300;

/// The entity types of the upload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum EntityKind {
    Registry,
    Application,
    DeploymentPackage,
    Artifact,
}

impl EntityKind {
    /// Reads a `specSchema` value (including the legacy `Deployment-Package`).
    pub(crate) fn from_spec_schema(s: &str) -> Option<EntityKind> {
        match s {
            "Registry" => Some(EntityKind::Registry),
            "Application" => Some(EntityKind::Application),
            "DeploymentPackage" | "Deployment-Package" => Some(EntityKind::DeploymentPackage),
            "Artifact" => Some(EntityKind::Artifact),
            _ => None,
        }
    }

    /// The schema's spelling of the type (`$defs` name and `specSchema` value).
    pub(crate) fn name(self) -> &'static str {
        match self {
            EntityKind::Registry => "Registry",
            EntityKind::Application => "Application",
            EntityKind::DeploymentPackage => "DeploymentPackage",
            EntityKind::Artifact => "Artifact",
        }
    }

    const ALL: [EntityKind; 4] = [
        EntityKind::Registry,
        EntityKind::Application,
        EntityKind::DeploymentPackage,
        EntityKind::Artifact,
    ];
}

/// Key aliases, per schema definition: (alias, schema spelling).
const ALIASES: &[(&str, &[(&str, &str)])] = &[
    ("Registry", &[("registryType", "type")]),
    (
        "Application",
        &[
            ("registry", "helmRegistry"),
            ("defaultProfileName", "defaultProfile"),
        ],
    ),
    (
        "Profile",
        &[("deploymentRequirements", "deploymentRequirement")],
    ),
    (
        "DeploymentPackage",
        &[
            ("artifactReferences", "artifacts"),
            ("defaultProfileName", "defaultProfile"),
        ],
    ),
    (
        "ApplicationDependency",
        &[("application", "name"), ("dependsOn", "requires")],
    ),
];

/// Top-level fields whose values must never be echoed in messages.
const SENSITIVE: &[&str] = &["authToken", "userName", "caCerts"];

struct Schemas {
    /// The whole schema (for `$ref` resolution while walking), with `valuesFileName` added to
    /// `Profile` (the reference loader reads that key but its schema does not list it) and
    /// Canopy's extension keys added to `Application` (see [`add_canopy_extensions`]).
    root: Value,
    /// Per entity type: its index in the root `oneOf` and the compiled branch.
    validators: Vec<(EntityKind, usize, Validator)>,
}

fn schemas() -> Result<&'static Schemas, String> {
    static SCHEMAS: OnceLock<Result<Schemas, String>> = OnceLock::new();
    SCHEMAS.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Schemas, String> {
    let mut root = crate::yaml::parse_one::<Value>(SCHEMA_YAML)
        .map_err(|e| format!("upload schema does not parse: {e}"))?;
    if let Some(props) = root
        .pointer_mut("/$defs/Profile/properties")
        .and_then(Value::as_object_mut)
    {
        props.insert(
            "valuesFileName".into(),
            serde_json::json!({"type": "string", "minLength": 1, "maxLength": 1000}),
        );
    }
    add_canopy_extensions(&mut root)?;
    let branches = root
        .get("oneOf")
        .and_then(Value::as_array)
        .ok_or("upload schema has no oneOf")?;
    let mut validators = Vec::new();
    for kind in EntityKind::ALL {
        let want = format!("#/$defs/{}", kind.name());
        let (index, branch) = branches
            .iter()
            .enumerate()
            .find(|(_, b)| {
                b.pointer("/allOf/0/$ref").and_then(Value::as_str) == Some(want.as_str())
            })
            .ok_or_else(|| format!("upload schema has no branch for {}", kind.name()))?;
        // The branch, with the root's `$defs` (and `$id`) so its `$ref`s resolve locally.
        let mut schema = root.clone();
        let obj = schema
            .as_object_mut()
            .ok_or("upload schema is not an object")?;
        obj.remove("oneOf");
        if let Some(b) = branch.as_object() {
            for (k, v) in b {
                obj.insert(k.clone(), v.clone());
            }
        }
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .build(&schema)
            .map_err(|e| format!("upload schema for {} does not compile: {e}", kind.name()))?;
        validators.push((kind, index, validator));
    }
    Ok(Schemas { root, validators })
}

/// Canopy's extension of `Application`: a native application has a workload template, in a
/// file named by `templateFileName` or inline as `workloadTemplate`, and then needs no chart:
/// `chartName`, `chartVersion` and `helmRegistry` are required only when neither key is given.
fn add_canopy_extensions(root: &mut Value) -> Result<(), String> {
    let app = root
        .pointer_mut("/$defs/Application")
        .and_then(Value::as_object_mut)
        .ok_or("upload schema has no Application")?;
    if let Some(props) = app.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "templateFileName".into(),
            serde_json::json!({"type": "string", "minLength": 1, "maxLength": 1000}),
        );
        props.insert(
            "workloadTemplate".into(),
            serde_json::json!({"type": "string", "minLength": 1}),
        );
    }
    const CHART: [&str; 3] = ["chartName", "chartVersion", "helmRegistry"];
    if let Some(required) = app.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| !r.as_str().is_some_and(|r| CHART.contains(&r)));
    }
    app.insert(
        "if".into(),
        serde_json::json!({
            "anyOf": [{"required": ["templateFileName"]}, {"required": ["workloadTemplate"]}]
        }),
    );
    app.insert("else".into(), serde_json::json!({"required": CHART}));
    Ok(())
}

/// A problem found in a document: JSON-pointer path (empty for the document) and message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Issue {
    pub(crate) path: String,
    pub(crate) message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Normalizes a document (aliases, scalar coercion) and checks it against the schema branch
/// of `kind`. Returns the normalized JSON when there is nothing wrong.
pub(crate) fn check(kind: EntityKind, doc: &Node, src: &str) -> Result<Value, Vec<Issue>> {
    let schemas = schemas().map_err(|e| {
        vec![Issue {
            path: String::new(),
            message: format!("internal error: {e}"),
        }]
    })?;
    let Some((_, index, validator)) = schemas.validators.iter().find(|(k, _, _)| *k == kind) else {
        return Err(vec![Issue {
            path: String::new(),
            message: format!("internal error: no schema for {}", kind.name()),
        }]);
    };
    let branch: Vec<&Value> = schemas
        .root
        .get("oneOf")
        .and_then(|b| b.get(*index))
        .into_iter()
        .collect();
    let mut walker = Walker {
        root: &schemas.root,
        src,
        issues: Vec::new(),
    };
    let mut value = walker.walk(doc, &branch, &mut Vec::new());
    // The schema's enum knows only the current spelling of the package type.
    if let Some(obj) = value.as_object_mut()
        && kind == EntityKind::DeploymentPackage
        && obj.get("specSchema").and_then(Value::as_str) == Some("Deployment-Package")
    {
        obj.insert(
            "specSchema".into(),
            Value::String("DeploymentPackage".into()),
        );
    }
    let mut issues = walker.issues;
    for e in validator.iter_errors(&value) {
        // Unknown keys are reported by the walker, one per key with its path. The schema's
        // own report is worse: when any nested value fails, draft 2020-12 counts none of
        // the properties as evaluated and lists every key of the document as unexpected.
        if matches!(
            e.kind().keyword(),
            "unevaluatedProperties" | "additionalProperties"
        ) {
            continue;
        }
        let path = e.instance_path().to_string();
        let sensitive = path
            .split('/')
            .nth(1)
            .is_some_and(|first| SENSITIVE.contains(&first));
        let message = if sensitive {
            e.masked().to_string()
        } else {
            e.to_string()
        };
        issues.push(Issue {
            path,
            message: truncate(&message),
        });
    }
    if issues.is_empty() {
        return Ok(value);
    }
    if issues.len() > MAX_ISSUES_PER_DOCUMENT {
        let more = issues.len() - MAX_ISSUES_PER_DOCUMENT;
        issues.truncate(MAX_ISSUES_PER_DOCUMENT);
        issues.push(Issue {
            path: String::new(),
            message: format!("... and {more} more problems in this document"),
        });
    }
    Err(issues)
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= MAX_MESSAGE_CHARS {
        return s.to_string();
    }
    let mut out: String = s.chars().take(MAX_MESSAGE_CHARS).collect();
    out.push_str("...");
    out
}

/// Escapes a key for a JSON pointer (RFC 6901).
fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

struct Walker<'a> {
    root: &'a Value,
    src: &'a str,
    issues: Vec<Issue>,
}

/// A schema that applies at some place of the document, with the `$defs` name it came from.
type Applicable<'a> = (&'a Value, Option<&'a str>);

impl<'a> Walker<'a> {
    /// All schemas that apply at a place: the given ones plus what their `$ref`s and `allOf`s
    /// lead to (bounded, so a cyclic `$ref` cannot loop).
    fn expand(&self, schemas: &[&'a Value]) -> Vec<Applicable<'a>> {
        let mut out = Vec::new();
        let mut todo: Vec<(&'a Value, Option<&'a str>, usize)> =
            schemas.iter().map(|s| (*s, None, 0)).collect();
        while let Some((s, name, depth)) = todo.pop() {
            if depth > 16 || out.len() > 64 {
                continue;
            }
            out.push((s, name));
            if let Some(r) = s.get("$ref").and_then(Value::as_str)
                && let Some(def) = r.strip_prefix("#/$defs/")
                && let Some(target) = self.root.pointer(&format!("/$defs/{def}"))
            {
                let def_name = self
                    .root
                    .get("$defs")
                    .and_then(Value::as_object)
                    .and_then(|m| m.get_key_value(def))
                    .map(|(k, _)| k.as_str());
                todo.push((target, def_name, depth + 1));
            }
            for key in ["allOf", "anyOf", "oneOf"] {
                for sub in s.get(key).and_then(Value::as_array).into_iter().flatten() {
                    todo.push((sub, None, depth + 1));
                }
            }
        }
        out
    }

    fn issue(&mut self, path: &[String], message: String) {
        self.issues.push(Issue {
            path: path.iter().map(|p| format!("/{p}")).collect(),
            message,
        });
    }

    fn walk(&mut self, node: &Node, schemas: &[&'a Value], path: &mut Vec<String>) -> Value {
        let applicable = self.expand(schemas);
        let types: Vec<&str> = applicable
            .iter()
            .filter_map(|(s, _)| s.get("type").and_then(Value::as_str))
            .collect();
        let wants = |t: &str| types.contains(&t);
        match &node.value {
            NodeValue::Map(entries) => self.walk_map(entries, &applicable, path),
            NodeValue::Seq(items) => {
                let item_schemas: Vec<&'a Value> = applicable
                    .iter()
                    .filter_map(|(s, _)| s.get("items"))
                    .collect();
                Value::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, n)| {
                            path.push(i.to_string());
                            let v = self.walk(n, &item_schemas, path);
                            path.pop();
                            v
                        })
                        .collect(),
                )
            }
            NodeValue::Bool(_) | NodeValue::Number(_)
                if wants("string")
                    && !wants("number")
                    && !wants("integer")
                    && !wants("boolean") =>
            {
                Value::String(node.scalar_text(self.src).unwrap_or_default())
            }
            NodeValue::Null if wants("string") => Value::String(String::new()),
            NodeValue::Null if wants("array") => Value::Array(Vec::new()),
            NodeValue::Null if wants("object") => Value::Object(Map::new()),
            _ => node.to_json(self.src),
        }
    }

    fn walk_map(
        &mut self,
        entries: &[(Node, Node)],
        applicable: &[Applicable<'a>],
        path: &mut Vec<String>,
    ) -> Value {
        let defs: Vec<&str> = applicable.iter().filter_map(|(_, n)| *n).collect();
        let aliases: Vec<(&str, &str)> = ALIASES
            .iter()
            .filter(|(def, _)| defs.contains(def))
            .flat_map(|(_, list)| list.iter().copied())
            .collect();
        let keys: Vec<String> = entries
            .iter()
            .map(|(k, _)| k.key_string(self.src))
            .collect();
        let described = applicable
            .iter()
            .any(|(s, _)| s.get("properties").is_some());
        let open = applicable.iter().any(|(s, _)| {
            s.get("additionalProperties")
                .is_some_and(|a| a != &Value::Bool(false))
        });
        let mut out = Map::new();
        for ((_, value), key) in entries.iter().zip(&keys) {
            let mut key = key.clone();
            if let Some((alias, canonical)) = aliases.iter().find(|(a, _)| *a == key) {
                if keys.iter().any(|k| k == canonical) {
                    path.push(pointer_segment(alias));
                    self.issue(
                        path,
                        format!(
                            "both {alias:?} and {canonical:?} are given; use only {canonical:?}"
                        ),
                    );
                    path.pop();
                    continue;
                }
                key = canonical.to_string();
            }
            let mut child: Vec<&'a Value> = applicable
                .iter()
                .filter_map(|(s, _)| s.get("properties").and_then(|p| p.get(&key)))
                .collect();
            if child.is_empty() {
                child = applicable
                    .iter()
                    .filter_map(|(s, _)| s.get("additionalProperties").filter(|a| a.is_object()))
                    .collect();
            }
            path.push(pointer_segment(&key));
            if child.is_empty() && described && !open {
                self.issue(path, format!("unknown field {key:?}"));
            }
            let v = self.walk(value, &child, path);
            path.pop();
            if out.insert(key.clone(), v).is_some() {
                path.push(pointer_segment(&key));
                self.issue(path, format!("field {key:?} is given more than once"));
                path.pop();
            }
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree;
    use super::*;

    fn run(kind: EntityKind, src: &str) -> Result<Value, Vec<Issue>> {
        let docs = tree::parse(src).unwrap();
        check(kind, &docs[0], src)
    }

    const HEADER: &str = "specSchema: Application\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\n";

    #[test]
    fn schema_compiles() {
        schemas().unwrap();
    }

    #[test]
    fn numbers_become_strings_as_written() {
        let src = format!(
            "{HEADER}name: web\nversion: 1.10\ndescription: d\nhelmRegistry: h\nchartName: web\nchartVersion: 2\nprofiles:\n  - name: a\n    parameterTemplates:\n      - {{name: x, type: number, default: 0, suggestedValues: [1, 2.50]}}\n"
        );
        let v = run(EntityKind::Application, &src).unwrap();
        assert_eq!(v["version"], "1.10");
        assert_eq!(v["chartVersion"], "2");
        let pt = &v["profiles"][0]["parameterTemplates"][0];
        assert_eq!(pt["default"], "0");
        assert_eq!(pt["suggestedValues"][1], "2.50");
    }

    #[test]
    fn aliases_are_normalized() {
        let src = format!(
            "{HEADER}name: web\nversion: \"1\"\ndescription: d\nregistry: h\nchartName: web\nchartVersion: \"1\"\ndefaultProfileName: a\nprofiles:\n  - name: a\n    deploymentRequirements:\n      - {{name: x, version: \"1\"}}\n"
        );
        let v = run(EntityKind::Application, &src).unwrap();
        assert_eq!(v["helmRegistry"], "h");
        assert_eq!(v["defaultProfile"], "a");
        assert_eq!(v["profiles"][0]["deploymentRequirement"][0]["name"], "x");
    }

    #[test]
    fn both_alias_and_name_refused() {
        let src = format!(
            "{HEADER}name: web\nversion: \"1\"\ndescription: d\nregistry: h\nhelmRegistry: h\nchartName: web\nchartVersion: \"1\"\n"
        );
        let e = run(EntityKind::Application, &src).unwrap_err();
        assert!(
            e[0].to_string()
                .contains("both \"registry\" and \"helmRegistry\""),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_nested_and_top_level_fields() {
        let src = format!(
            "{HEADER}name: web\nversion: \"1\"\ndescription: d\nhelmRegistry: h\nchartName: web\nchartVersion: \"1\"\nbogus: 1\nprofiles:\n  - name: a\n    valuesFilename: x.yaml\n"
        );
        let e = run(EntityKind::Application, &src).unwrap_err();
        let all: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert!(
            all.iter()
                .any(|m| m.starts_with("/profiles/0/valuesFilename: unknown field")),
            "{all:?}"
        );
        assert!(all.iter().any(|m| m.contains("bogus")), "{all:?}");
    }

    #[test]
    fn wrong_types_and_patterns_name_the_path() {
        let src = format!(
            "{HEADER}name: Web\nversion: \"1\"\ndescription: d\nhelmRegistry: h\nchartName: web\nchartVersion: \"1\"\nprofiles: {{a: 1}}\n"
        );
        let e = run(EntityKind::Application, &src).unwrap_err();
        let all: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert!(all.iter().any(|m| m.starts_with("/name: ")), "{all:?}");
        assert!(
            all.iter()
                .any(|m| m.starts_with("/profiles: ") && m.contains("array")),
            "{all:?}"
        );
    }

    #[test]
    fn secrets_are_not_echoed() {
        let src = "specSchema: Registry\nschemaVersion: \"0.1\"\nname: r\ndescription: d\ntype: HELM\nrootUrl: https://x.example.com\nauthToken: \"s3cr3t\\u0007\"\n";
        let e = run(EntityKind::Registry, src).unwrap_err();
        let all = e
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(all.contains("/authToken"), "{all}");
        assert!(!all.contains("s3cr3t"), "{all}");
    }
}
