//! Values: merging profile and override values, parameter templates at their dotted paths
//! (coercion, mandatory, defaults) and secret masking.

use serde_json::{Map, Value};

use super::TemplateError;
use crate::catalog::{ParameterTemplate, Profile};
use crate::validate::coerce_parameter;

/// What a secret parameter's value is replaced with in every API response.
pub const SECRET_MASK: &str = "********";

/// Highest list index a parameter path may name (`a.b[1000]`): setting a value there fills
/// the list up to it, so the index is bounded.
const MAX_INDEX: usize = 1000;

/// One step of a parameter path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Parses a parameter name as a path into the values: keys separated by `.`, list indexes as
/// `[n]` (`a.b[0].c`, `a[1][2]`), `\` escaping the next character (`labels.app\.kubernetes\.io/name`).
pub fn parse_path(name: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    let mut key = String::new();
    // A key is expected: at the start and after a `.`.
    let mut want_key = true;
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(next) = chars.next() else {
                    return Err("ends with a lone '\\'".into());
                };
                key.push(next);
            }
            '.' => {
                if key.is_empty() {
                    return Err("has an empty key (\"..\", or '.' at the start)".into());
                }
                segs.push(Seg::Key(std::mem::take(&mut key)));
                want_key = true;
            }
            '[' => {
                if !key.is_empty() {
                    segs.push(Seg::Key(std::mem::take(&mut key)));
                } else if want_key {
                    return Err("has an index with no key before it".into());
                }
                let mut digits = String::new();
                loop {
                    match chars.next() {
                        Some(']') => break,
                        Some(d) if d.is_ascii_digit() => digits.push(d),
                        _ => return Err("has an index that is not [digits]".into()),
                    }
                }
                let index: usize = digits
                    .parse()
                    .map_err(|_| "has an index that is not [digits]".to_string())?;
                if index > MAX_INDEX {
                    return Err(format!("has an index above {MAX_INDEX}"));
                }
                segs.push(Seg::Index(index));
                want_key = false;
                // After `]`: end, `.`, or another `[`.
                let rest = chars.as_str();
                if !(rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')) {
                    return Err("needs '.' after ']'".into());
                }
                if let Some(r) = rest.strip_prefix('.') {
                    if r.is_empty() {
                        return Err("ends with '.'".into());
                    }
                    chars.next();
                    want_key = true;
                }
            }
            ']' => return Err("has a ']' without '['".into()),
            c => {
                key.push(c);
                want_key = false;
            }
        }
    }
    if !key.is_empty() {
        segs.push(Seg::Key(key));
    } else if want_key {
        return Err(if segs.is_empty() {
            "is empty".into()
        } else {
            "ends with '.'".into()
        });
    }
    Ok(segs)
}

pub(crate) fn get<'v>(v: &'v Value, path: &[Seg]) -> Option<&'v Value> {
    path.iter().try_fold(v, |cur, seg| match seg {
        Seg::Key(k) => cur.as_object()?.get(k),
        Seg::Index(i) => cur.as_array()?.get(*i),
    })
}

pub(crate) fn get_mut<'v>(v: &'v mut Value, path: &[Seg]) -> Option<&'v mut Value> {
    path.iter().try_fold(v, |cur, seg| match seg {
        Seg::Key(k) => cur.as_object_mut()?.get_mut(k),
        Seg::Index(i) => cur.as_array_mut()?.get_mut(*i),
    })
}

/// Sets the value at `path`, creating the mappings and lists on the way (`null`s become
/// them; lists are filled with `null` up to the index). Fails where a scalar is in the way.
pub fn set(v: &mut Value, path: &[Seg], new: Value) -> Result<(), String> {
    let mut cur = v;
    for (i, seg) in path.iter().enumerate() {
        match seg {
            Seg::Key(k) => {
                if cur.is_null() {
                    *cur = Value::Object(Map::new());
                }
                let Value::Object(map) = cur else {
                    return Err(format!("{} is not a mapping", describe_path(&path[..i])));
                };
                cur = map.entry(k.clone()).or_insert(Value::Null);
            }
            Seg::Index(idx) => {
                if cur.is_null() {
                    *cur = Value::Array(Vec::new());
                }
                let Value::Array(items) = cur else {
                    return Err(format!("{} is not a list", describe_path(&path[..i])));
                };
                if items.len() <= *idx {
                    items.resize(idx + 1, Value::Null);
                }
                cur = &mut items[*idx];
            }
        }
    }
    *cur = new;
    Ok(())
}

/// Removes the value at `path`, if there is one.
pub(crate) fn remove(v: &mut Value, path: &[Seg]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    match (get_mut(v, parent), last) {
        (Some(Value::Object(map)), Seg::Key(k)) => {
            map.remove(k);
        }
        (Some(Value::Array(items)), Seg::Index(i)) if *i < items.len() => {
            items.remove(*i);
        }
        _ => {}
    }
}

fn describe_path(path: &[Seg]) -> String {
    if path.is_empty() {
        return "the values".into();
    }
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Deep merge: mappings merge key by key (recursively); anything else in `overrides` replaces
/// what `profile_values` has. `overrides` = `null` (no override values) changes nothing.
pub fn merge_values(profile_values: &Value, overrides: &Value) -> Value {
    if overrides.is_null() {
        return profile_values.clone();
    }
    merge(profile_values, overrides)
}

fn merge(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                let merged = match b.get(k) {
                    Some(bv) => merge(bv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, o) => o.clone(),
    }
}

fn param_error(t: &ParameterTemplate, message: impl Into<String>) -> TemplateError {
    TemplateError::new(format!("values.{}", t.name), message)
}

fn path_of(t: &ParameterTemplate) -> Result<Vec<Seg>, TemplateError> {
    parse_path(&t.name).map_err(|e| param_error(t, format!("parameter name {:?} {e}", t.name)))
}

/// Applies a profile's parameter templates to a deployment's override values: the value at
/// each parameter's path (`a.b.c`, `a.b[0]`) is coerced to the parameter's type
/// ([`coerce_parameter`]: `"3"` → `3` for a number, `"true"` → `true` for a boolean, `3` →
/// `"3"` for a string); a mandatory parameter without a value (absent, `null` or blank) is an
/// error naming it. Values not named by a parameter are left alone. Idempotent.
pub fn apply_parameter_templates(
    templates: &[ParameterTemplate],
    overrides: &mut Value,
) -> Result<(), TemplateError> {
    for t in templates {
        let path = path_of(t)?;
        let slot = get_mut(overrides, &path).filter(|v| !v.is_null());
        let Some(slot) = slot else {
            if t.mandatory {
                return Err(param_error(
                    t,
                    format!(
                        "mandatory parameter {:?} has no value in the override values",
                        t.name
                    ),
                ));
            }
            continue;
        };
        let text = match &*slot {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(param_error(
                    t,
                    format!(
                        "parameter {:?} must be a {}, not a {}",
                        t.name,
                        t.param_type,
                        if slot.is_array() { "list" } else { "mapping" }
                    ),
                ));
            }
            Value::Null => continue,
        };
        if t.mandatory && text.trim().is_empty() {
            return Err(param_error(
                t,
                format!("mandatory parameter {:?} has an empty value", t.name),
            ));
        }
        if t.secret && text == SECRET_MASK {
            // The masked copy was passed instead of the real values: restore them first.
            continue;
        }
        *slot = coerce_parameter(&t.param_type, &text).map_err(|e| {
            if t.secret {
                // Never the value of a secret: only what was expected.
                param_error(
                    t,
                    format!(
                        "secret parameter {:?} must be a {} (its value is not shown)",
                        t.name, t.param_type
                    ),
                )
            } else {
                param_error(t, format!("parameter {:?}: {e}", t.name))
            }
        })?;
    }
    Ok(())
}

/// Replaces the value of every secret parameter present in `values` with [`SECRET_MASK`] (for
/// the copy of override values that is stored for display and returned by the API).
pub fn mask_secrets(templates: &[ParameterTemplate], values: &mut Value) {
    for t in templates.iter().filter(|t| t.secret) {
        let Ok(path) = parse_path(&t.name) else {
            continue;
        };
        if let Some(v) = get_mut(values, &path).filter(|v| !v.is_null()) {
            *v = Value::String(SECRET_MASK.into());
        }
    }
}

/// On update: where a secret parameter's new value is [`SECRET_MASK`] (a client sent back what
/// it read), puts back the previous real value; when there is none, removes the mask (so a
/// mandatory secret is then reported missing rather than deployed as `********`).
pub fn unmask_secrets(templates: &[ParameterTemplate], new: &mut Value, previous: &Value) {
    for t in templates.iter().filter(|t| t.secret) {
        let Ok(path) = parse_path(&t.name) else {
            continue;
        };
        if get(new, &path).and_then(Value::as_str) != Some(SECRET_MASK) {
            continue;
        }
        match get(previous, &path).filter(|v| !v.is_null()) {
            Some(old) if old.as_str() != Some(SECRET_MASK) => {
                let old = old.clone();
                if let Some(slot) = get_mut(new, &path) {
                    *slot = old;
                }
            }
            _ => remove(new, &path),
        }
    }
}

/// The texts of the secret parameters' values in `sources` (override values, profile values),
/// as given and as coerced, for [`super::TemplateError::redact`].
pub(crate) fn secret_texts(templates: &[ParameterTemplate], sources: &[&Value]) -> Vec<String> {
    let mut out = Vec::new();
    for t in templates.iter().filter(|t| t.secret) {
        let Ok(path) = parse_path(&t.name) else {
            continue;
        };
        for source in sources {
            let text = match get(source, &path) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => continue,
            };
            if let Ok(coerced) = coerce_parameter(&t.param_type, &text) {
                match coerced {
                    Value::String(s) => out.push(s),
                    Value::Number(n) => out.push(n.to_string()),
                    _ => {}
                }
            }
            out.push(text);
        }
    }
    out.retain(|s| !s.is_empty() && s != SECRET_MASK);
    out
}

/// Parameters that are still unset after the merge take their `default` (coerced).
pub(crate) fn fill_defaults(
    templates: &[ParameterTemplate],
    merged: &mut Value,
) -> Result<(), TemplateError> {
    for t in templates.iter().filter(|t| !t.default.is_empty()) {
        let path = path_of(t)?;
        if get(merged, &path).is_some_and(|v| !v.is_null()) {
            continue;
        }
        let v = coerce_parameter(&t.param_type, &t.default)
            .map_err(|e| param_error(t, format!("default of parameter {:?}: {e}", t.name)))?;
        set(merged, &path, v)
            .map_err(|e| param_error(t, format!("cannot set the default: {e}")))?;
    }
    Ok(())
}

/// Refuses to render with a secret that is still masked.
pub(crate) fn refuse_masked(
    templates: &[ParameterTemplate],
    merged: &Value,
) -> Result<(), TemplateError> {
    for t in templates.iter().filter(|t| t.secret) {
        let path = path_of(t)?;
        if get(merged, &path).and_then(Value::as_str) == Some(SECRET_MASK) {
            return Err(param_error(
                t,
                format!(
                    "secret parameter {:?} holds the mask {SECRET_MASK}, not its value",
                    t.name
                ),
            ));
        }
    }
    Ok(())
}

/// A profile's values (`chartValues`, YAML) as a mapping; none = empty.
pub(crate) fn profile_values(profile: Option<&Profile>) -> Result<Value, TemplateError> {
    let text = profile.map_or("", |p| p.chart_values.as_str());
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let mut docs = crate::yaml::parse_documents(text)
        .map_err(|e| TemplateError::new("chartValues", format!("is not valid YAML: {e}")))?;
    match docs.len() {
        0 => Ok(Value::Object(Map::new())),
        1 => match docs.remove(0) {
            Value::Null => Ok(Value::Object(Map::new())),
            v @ Value::Object(_) => Ok(v),
            _ => Err(TemplateError::new(
                "chartValues",
                "must be a mapping of values (key: value)",
            )),
        },
        n => Err(TemplateError::new(
            "chartValues",
            format!("must be one YAML document (it has {n})"),
        )),
    }
}

/// The override values used to check a template at upload: each mandatory parameter gets the
/// profile's own value when it has one, or a placeholder of its type (a distinct number per
/// parameter, so placeholders used as host ports do not collide). Also returns the
/// placeholders used (not the profile's own values), so the reader can tell them apart.
pub(crate) fn check_overrides(
    profile: Option<&Profile>,
) -> Result<(Value, Vec<Value>), TemplateError> {
    let mut overrides = Value::Object(Map::new());
    let mut placeholders = Vec::new();
    let Some(p) = profile else {
        return Ok((overrides, placeholders));
    };
    let base = profile_values(profile)?;
    for (j, t) in p.parameter_templates.iter().enumerate() {
        if !t.mandatory {
            continue;
        }
        let path = path_of(t)?;
        let value = match get(&base, &path).filter(|v| !v.is_null()) {
            Some(v) => v.clone(),
            None => {
                let placeholder = match t.param_type.as_str() {
                    "number" => Value::from(30000 + j as u64),
                    "boolean" => Value::Bool(false),
                    _ => Value::String("placeholder".into()),
                };
                if !placeholder.is_boolean() && !placeholders.contains(&placeholder) {
                    placeholders.push(placeholder.clone());
                }
                placeholder
            }
        };
        set(&mut overrides, &path, value).map_err(|e| param_error(t, e))?;
    }
    Ok((overrides, placeholders))
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

    #[test]
    fn paths() {
        use Seg::*;
        let k = |s: &str| Key(s.into());
        assert_eq!(parse_path("a").unwrap(), vec![k("a")]);
        assert_eq!(parse_path("a.b.c").unwrap(), vec![k("a"), k("b"), k("c")]);
        assert_eq!(
            parse_path("a.b[0].c").unwrap(),
            vec![k("a"), k("b"), Index(0), k("c")]
        );
        assert_eq!(
            parse_path("a[1][2]").unwrap(),
            vec![k("a"), Index(1), Index(2)]
        );
        assert_eq!(
            parse_path(r"labels.app\.kubernetes\.io/name").unwrap(),
            vec![k("labels"), k("app.kubernetes.io/name")]
        );
        for bad in [
            "", ".", "a.", ".a", "a..b", "[0]", "a[x]", "a[1", "a]", "a[0]b", "a[0].", "a\\",
            "a[1001]",
        ] {
            assert!(parse_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn get_set_remove() {
        let mut v = json!({"a": {"b": [1, {"c": 2}]}});
        let p = parse_path("a.b[1].c").unwrap();
        assert_eq!(get(&v, &p), Some(&json!(2)));
        set(&mut v, &parse_path("x.y[2]").unwrap(), json!("z")).unwrap();
        assert_eq!(v["x"]["y"], json!([null, null, "z"]));
        assert!(set(&mut v, &parse_path("a.b[0].q").unwrap(), json!(1)).is_err());
        remove(&mut v, &p);
        assert_eq!(v["a"]["b"][1], json!({}));
    }

    #[test]
    fn merge_rules() {
        let base = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {"f": 1}});
        let over = json!({"a": {"c": [3], "g": true}, "d": {"n": 1}, "e": null});
        assert_eq!(
            merge_values(&base, &over),
            json!({"a": {"b": 1, "c": [3], "g": true}, "d": {"n": 1}, "e": null})
        );
        assert_eq!(merge_values(&base, &Value::Null), base);
        assert_eq!(merge_values(&base, &base), base);
        assert_eq!(merge_values(&json!({}), &over), over);
    }

    #[test]
    fn coercion_at_paths() {
        let templates = vec![
            param("port", "number"),
            param("debug", "boolean"),
            param("image.tag", "string"),
            param("list[1]", "number"),
            param("ratio", "number"),
        ];
        let mut v = json!({
            "port": "8080", "debug": "TRUE", "image": {"tag": 1.5},
            "list": ["a", " 7 "], "ratio": "0.25", "other": "3"
        });
        apply_parameter_templates(&templates, &mut v).unwrap();
        assert_eq!(
            v,
            json!({
                "port": 8080, "debug": true, "image": {"tag": "1.5"},
                "list": ["a", 7], "ratio": 0.25, "other": "3"
            })
        );
        // Idempotent.
        let again = v.clone();
        apply_parameter_templates(&templates, &mut v).unwrap();
        assert_eq!(v, again);

        let mut bad = json!({"port": "eighty"});
        let e = apply_parameter_templates(&templates, &mut bad).unwrap_err();
        assert_eq!(e.field, "values.port");
        assert!(e.message.contains("not a number"), "{e}");
        let mut bad = json!({"debug": "yes"});
        assert!(apply_parameter_templates(&templates, &mut bad).is_err());
        let mut bad = json!({"image": {"tag": {"x": 1}}});
        let e = apply_parameter_templates(&templates, &mut bad).unwrap_err();
        assert!(e.message.contains("not a mapping"), "{e}");
    }

    #[test]
    fn mandatory_parameters() {
        let mut t = param("auth.password", "string");
        t.mandatory = true;
        let templates = vec![t];
        for missing in [
            Value::Null,
            json!({}),
            json!({"auth": {}}),
            json!({"auth": {"password": null}}),
            json!({"auth": {"password": "  "}}),
            json!({"auth": "flat"}),
        ] {
            let mut v = missing.clone();
            let e = apply_parameter_templates(&templates, &mut v).unwrap_err();
            assert_eq!(e.field, "values.auth.password", "{missing}");
            assert!(e.message.contains("mandatory"), "{e}");
            assert!(e.to_string().contains("auth.password"), "{e}");
        }
        let mut ok = json!({"auth": {"password": "pw"}});
        apply_parameter_templates(&templates, &mut ok).unwrap();
    }

    #[test]
    fn masking_and_unmasking() {
        let mut secret = param("db.password", "string");
        secret.secret = true;
        let mut token = param("tokens[0]", "string");
        token.secret = true;
        let templates = vec![secret, token, param("db.user", "string")];
        let real = json!({"db": {"password": "s3cret", "user": "app"}, "tokens": ["t0"]});
        let mut shown = real.clone();
        mask_secrets(&templates, &mut shown);
        assert_eq!(
            shown,
            json!({"db": {"password": SECRET_MASK, "user": "app"}, "tokens": [SECRET_MASK]})
        );
        // Absent secrets stay absent.
        let mut none = json!({"db": {"user": "app"}});
        mask_secrets(&templates, &mut none);
        assert_eq!(none, json!({"db": {"user": "app"}}));

        // An update that sends back the masked copy keeps the real values...
        let mut update = shown.clone();
        update["db"]["user"] = json!("admin");
        unmask_secrets(&templates, &mut update, &real);
        assert_eq!(
            update,
            json!({"db": {"password": "s3cret", "user": "admin"}, "tokens": ["t0"]})
        );
        // ...a new value replaces them...
        let mut changed = json!({"db": {"password": "n3w"}});
        unmask_secrets(&templates, &mut changed, &real);
        assert_eq!(changed["db"]["password"], "n3w");
        // ...and a mask with nothing behind it is dropped.
        let mut orphan = json!({"db": {"password": SECRET_MASK}});
        unmask_secrets(&templates, &mut orphan, &json!({}));
        assert_eq!(orphan, json!({"db": {}}));
    }

    #[test]
    fn defaults_fill_gaps_only() {
        let mut t = param("replicas", "number");
        t.default = "2".into();
        let mut u = param("image.tag", "string");
        u.default = "1.0".into();
        let templates = vec![t, u];
        let mut v = json!({"replicas": 5});
        fill_defaults(&templates, &mut v).unwrap();
        assert_eq!(v, json!({"replicas": 5, "image": {"tag": "1.0"}}));
    }

    #[test]
    fn profile_values_shapes() {
        let p = |values: &str| Profile {
            name: "p".into(),
            chart_values: values.into(),
            ..Default::default()
        };
        assert_eq!(profile_values(None).unwrap(), json!({}));
        assert_eq!(profile_values(Some(&p("  \n"))).unwrap(), json!({}));
        assert_eq!(
            profile_values(Some(&p("---\na: 1\n"))).unwrap(),
            json!({"a": 1})
        );
        assert!(profile_values(Some(&p("- 1\n"))).is_err());
        assert!(profile_values(Some(&p("a: 1\n---\nb: 2\n"))).is_err());
        let e = profile_values(Some(&p("a: [\n"))).unwrap_err();
        assert_eq!(e.field, "chartValues");
    }
}
