//! The values a chart is rendered with: the profile's `chartValues` deep-merged with the
//! deployment's `overrideValues`, the profile's parameter templates applied at their dotted
//! paths. The same steps, in the same order, as native workload templates
//! (`canopy_core::template`), so a parameter behaves alike in both kinds of application:
//!
//! 1. override values must be a mapping (or absent);
//! 2. each parameter's override is coerced to its type, a mandatory one must have a value
//!    ([`canopy_core::template::apply_parameter_templates`]);
//! 3. the overrides are deep-merged over the profile's values
//!    ([`canopy_core::template::merge_values`]);
//! 4. parameters still unset take their `default`; a secret still holding the mask
//!    `********` is refused.
//!
//! Steps 1 and 4 and the profile-values reader are written here because core keeps them
//! crate-private (and core is not this crate's to change); they follow core's text. Unlike
//! core's messages, no message here shows a secret parameter's value.
//!
//! The values reach Helm only as a values file (JSON, which is YAML) — never `--set`, whose
//! syntax would let a value add structure.

use canopy_core::catalog::{ParameterTemplate, Profile};
use canopy_core::template::{
    SECRET_MASK, Seg, apply_parameter_templates, merge_values, parse_path, set_path,
};
use canopy_core::validate::coerce_parameter;
use serde_json::{Map, Value};

/// Something wrong with the values: where (`chartValues`, `overrides`, `values.<parameter>`)
/// and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValuesError {
    pub field: String,
    pub message: String,
}

impl ValuesError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> ValuesError {
        ValuesError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The values of one render, and the secret parameter values in them (so that messages can be
/// scrubbed of them). `Debug` shows neither.
#[derive(Clone, PartialEq)]
pub struct ChartValues {
    values: Value,
    secrets: Vec<String>,
}

impl std::fmt::Debug for ChartValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartValues")
            .field("keys", &self.values.as_object().map(|m| m.len()))
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl ChartValues {
    /// Values used as they are (no profile, no parameters): for tests and tools.
    pub fn from_value(values: Value) -> Result<ChartValues, ValuesError> {
        match values {
            Value::Null => Ok(ChartValues {
                values: Value::Object(Map::new()),
                secrets: Vec::new(),
            }),
            v @ Value::Object(_) => Ok(ChartValues {
                values: v,
                secrets: Vec::new(),
            }),
            _ => Err(ValuesError::new("values", "must be a mapping")),
        }
    }

    /// The values (a mapping).
    pub fn values(&self) -> &Value {
        &self.values
    }

    /// The values of secret parameters (to scrub from messages).
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// Replaces the reference's deploy-time placeholders (`%ImageRegistryURL%`, `%OrgName%`, ...)
    /// in every string of the values ([`substitute_placeholders`]).
    pub fn substitute_placeholders(&mut self, p: &Placeholders) -> Result<(), ValuesError> {
        substitute_placeholders(&mut self.values, p)
    }

    /// Replaces every secret value in `text` with the mask.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets.iter().filter(|s| !s.is_empty()) {
            out = out.replace(s.as_str(), SECRET_MASK);
        }
        out
    }
}

/// Builds the values of a render: `profile` (its `chartValues` and parameter templates; none =
/// empty) and the deployment's `overrides` for this application (`null` = none), which must
/// hold the real secret values (restored from the masked copy by the caller, as for native
/// applications).
pub fn chart_values(
    profile: Option<&Profile>,
    overrides: &Value,
) -> Result<ChartValues, ValuesError> {
    let templates = profile.map_or(&[][..], |p| &p.parameter_templates[..]);
    if !overrides.is_null() && !overrides.is_object() {
        return Err(ValuesError::new(
            "overrides",
            "override values must be a mapping",
        ));
    }
    let base = profile_values(profile)?;
    let mut overrides = overrides.clone();
    apply_parameter_templates(templates, &mut overrides).map_err(|e| {
        let secret = templates
            .iter()
            .find(|t| t.secret && e.field == format!("values.{}", t.name));
        match secret {
            // Core's coercion message quotes the value; a secret's never leaves here.
            Some(t) if !e.message.contains("mandatory") => ValuesError::new(
                e.field.clone(),
                format!(
                    "secret parameter {:?} must be a {} (its value is not shown)",
                    t.name, t.param_type
                ),
            ),
            _ => ValuesError::new(e.field, e.message),
        }
    })?;
    let mut merged = merge_values(&base, &overrides);
    fill_defaults(templates, &mut merged)?;
    let mut secrets = Vec::new();
    for t in templates.iter().filter(|t| t.secret) {
        let path = path_of(t)?;
        match get(&merged, &path) {
            Some(Value::String(s)) if s == SECRET_MASK => {
                return Err(ValuesError::new(
                    format!("values.{}", t.name),
                    format!(
                        "secret parameter {:?} holds the mask {SECRET_MASK}, not its value",
                        t.name
                    ),
                ));
            }
            Some(Value::String(s)) => secrets.push(s.clone()),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => secrets.push(v.to_string()),
            _ => {}
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    Ok(ChartValues {
        values: merged,
        secrets,
    })
}

fn path_of(t: &ParameterTemplate) -> Result<Vec<Seg>, ValuesError> {
    parse_path(&t.name).map_err(|e| {
        ValuesError::new(
            format!("values.{}", t.name),
            format!("parameter name {:?} {e}", t.name),
        )
    })
}

fn get<'v>(v: &'v Value, path: &[Seg]) -> Option<&'v Value> {
    path.iter().try_fold(v, |cur, seg| match seg {
        Seg::Key(k) => cur.as_object()?.get(k),
        Seg::Index(i) => cur.as_array()?.get(*i),
    })
}

/// Parameters still unset after the merge take their `default`, coerced to their type.
fn fill_defaults(templates: &[ParameterTemplate], merged: &mut Value) -> Result<(), ValuesError> {
    for t in templates.iter().filter(|t| !t.default.is_empty()) {
        let path = path_of(t)?;
        if get(merged, &path).is_some_and(|v| !v.is_null()) {
            continue;
        }
        let v = coerce_parameter(&t.param_type, &t.default).map_err(|e| {
            ValuesError::new(
                format!("values.{}", t.name),
                format!("default of parameter {:?}: {e}", t.name),
            )
        })?;
        set_path(merged, &path, v).map_err(|e| {
            ValuesError::new(
                format!("values.{}", t.name),
                format!("cannot set the default: {e}"),
            )
        })?;
    }
    Ok(())
}

/// A profile's `chartValues` (YAML, through the hardened reader) as a mapping; none = empty.
fn profile_values(profile: Option<&Profile>) -> Result<Value, ValuesError> {
    let text = profile.map_or("", |p| p.chart_values.as_str());
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let mut docs = canopy_core::yaml::parse_documents(text)
        .map_err(|e| ValuesError::new("chartValues", format!("is not valid YAML: {e}")))?;
    match docs.len() {
        0 => Ok(Value::Object(Map::new())),
        1 => match docs.remove(0) {
            Value::Null => Ok(Value::Object(Map::new())),
            v @ Value::Object(_) => Ok(v),
            _ => Err(ValuesError::new(
                "chartValues",
                "must be a mapping of values (key: value)",
            )),
        },
        n => Err(ValuesError::new(
            "chartValues",
            format!("must be one YAML document (it has {n})"),
        )),
    }
}

/// What the reference's deploy-time placeholders in profile values stand for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placeholders {
    /// `%ImageRegistryURL%`: the application's image registry `rootUrl` without its scheme
    /// (`None`: the application has no image registry, and the placeholder is an error).
    pub image_registry_url: Option<String>,
    /// `%GeneratedDockerCredential%`: the name of the pull credential (Canopy's agents use the
    /// image registry's credentials directly; the name only has to be a valid name).
    pub generated_docker_credential: String,
    /// `%PreHookCredential%`.
    pub pre_hook_credential: String,
    /// `%OrgName%`.
    pub org_name: String,
    /// `%ProjectName%`.
    pub project_name: String,
}

/// Replaces the reference's placeholders in every string of `values` (keys untouched).
pub fn substitute_placeholders(values: &mut Value, p: &Placeholders) -> Result<(), ValuesError> {
    fn walk(v: &mut Value, p: &Placeholders, path: &mut String) -> Result<(), ValuesError> {
        match v {
            Value::String(s) if s.contains('%') => {
                if s.contains("%ImageRegistryURL%") {
                    let Some(url) = &p.image_registry_url else {
                        return Err(ValuesError::new(
                            format!("chartValues.{path}"),
                            "uses %ImageRegistryURL% but the application has no image registry",
                        ));
                    };
                    let host_path = url
                        .split_once("://")
                        .map_or(url.as_str(), |(_, rest)| rest)
                        .trim_end_matches('/');
                    *s = s.replace("%ImageRegistryURL%", host_path);
                }
                *s = s
                    .replace(
                        "%GeneratedDockerCredential%",
                        &p.generated_docker_credential,
                    )
                    .replace("%PreHookCredential%", &p.pre_hook_credential)
                    .replace("%OrgName%", &p.org_name)
                    .replace("%ProjectName%", &p.project_name);
                Ok(())
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(item, p, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    walk(item, p, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(values, p, &mut String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param(name: &str, ty: &str) -> ParameterTemplate {
        ParameterTemplate {
            name: name.into(),
            param_type: ty.into(),
            ..Default::default()
        }
    }

    fn profile(values: &str, templates: Vec<ParameterTemplate>) -> Profile {
        Profile {
            name: "p".into(),
            chart_values: values.into(),
            parameter_templates: templates,
            ..Default::default()
        }
    }

    #[test]
    fn merge_coerce_default() {
        let mut port = param("service.port", "number");
        port.default = "8080".into();
        let mut greeting = param("tutorialServer.greeting", "string");
        greeting.default = "hello".into();
        let p = profile(
            "tutorialServer:\n  greeting: from-profile\n  initialCount: 3\nimage:\n  tag: \"1\"\n",
            vec![port, greeting, param("debug", "boolean")],
        );
        let v = chart_values(
            Some(&p),
            &json!({"debug": "TRUE", "image": {"pullPolicy": "Always"}}),
        )
        .unwrap();
        assert_eq!(
            v.values(),
            &json!({
                "tutorialServer": {"greeting": "from-profile", "initialCount": 3},
                "image": {"tag": "1", "pullPolicy": "Always"},
                "service": {"port": 8080},
                "debug": true
            })
        );
        let e = chart_values(Some(&p), &json!({"service": {"port": "eighty"}})).unwrap_err();
        assert_eq!(e.field, "values.service.port");
        let e = chart_values(Some(&p), &json!(["list"])).unwrap_err();
        assert_eq!(e.field, "overrides");
        assert!(chart_values(None, &Value::Null).unwrap().values() == &json!({}));
    }

    #[test]
    fn secrets_never_shown() {
        let mut pw = param("db.password", "number");
        pw.secret = true;
        let mut token = param("api.token", "string");
        token.secret = true;
        token.mandatory = true;
        let p = profile("", vec![pw, token]);
        let e = chart_values(
            Some(&p),
            &json!({"db": {"password": "SECRET-hunter2"}, "api": {"token": "t"}}),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("db.password"), "{e}");
        let e = chart_values(Some(&p), &json!({})).unwrap_err();
        assert!(e.message.contains("mandatory"), "{e}");
        let e = chart_values(Some(&p), &json!({"api": {"token": SECRET_MASK}})).unwrap_err();
        assert!(e.message.contains("mask"), "{e}");
        let v = chart_values(
            Some(&p),
            &json!({"api": {"token": "tok-123456"}, "db": {"password": 42}}),
        )
        .unwrap();
        assert_eq!(
            v.redact("Error: token tok-123456 and 42"),
            "Error: token ******** and ********"
        );
        assert!(!format!("{v:?}").contains("tok-123456"));
    }

    #[test]
    fn placeholders() {
        let mut v = json!({
            "image": {"repository": "%ImageRegistryURL%/web"},
            "imagePullSecrets": [{"name": "%GeneratedDockerCredential%"}],
            "labels": {"org": "%OrgName%-%ProjectName%"}
        });
        let p = Placeholders {
            image_registry_url: Some("oci://registry.example/proj/".into()),
            generated_docker_credential: "pull".into(),
            org_name: "acme".into(),
            project_name: "edge".into(),
            ..Default::default()
        };
        substitute_placeholders(&mut v, &p).unwrap();
        assert_eq!(
            v,
            json!({
                "image": {"repository": "registry.example/proj/web"},
                "imagePullSecrets": [{"name": "pull"}],
                "labels": {"org": "acme-edge"}
            })
        );
        let mut v = json!({"a": ["%ImageRegistryURL%"]});
        let e = substitute_placeholders(&mut v, &Placeholders::default()).unwrap_err();
        assert_eq!(e.field, "chartValues.a[0]");
    }
}
