//! Override values from the command line: `--set APP.PATH=VALUE`, `--values APP=FILE.yaml` and
//! `--namespace APP=NS`, folded into a deployment's `overrideValues` (one entry per app).
//!
//! Paths are written as the template format's parameter paths: keys joined by `.`, list items as
//! `[n]`, `\` escaping a character that is part of a key (`web.labels.app\.kubernetes\.io/name`).
//! Values are JSON-ish: `true`/`false`, `null` and numbers are typed, a JSON string, list or
//! mapping (`'"007"'`, `[1,2]`, `{"a":1}`) is taken as JSON, anything else is a string. The
//! server coerces parameter-template values to their declared types anyway. `APP.PATH=VALUE`
//! itself is split by Canopy's one `key=value` reader (`canopy_core::kv`): at the first `=`,
//! spaces around both sides dropped, neither side empty.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use canopy_core::kv::PairError;
use canopy_core::template::{Seg, parse_path, set_path};
use canopy_deploy::model::OverrideValues;
use serde_json::{Map, Value};

use crate::cli::args::read_text;

/// `--set APP.PATH=VALUE`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct SetValue {
    pub app: String,
    pub path: Vec<Seg>,
    pub value: Value,
    /// As typed, for messages.
    pub raw: String,
}

/// Parses `APP.PATH=VALUE`.
pub fn set_value(s: &str) -> Result<SetValue, String> {
    let usage =
        |why: &str| format!("expected APP.PATH=VALUE (like web.greeting=hi), got {s:?}: {why}");
    // The one `key=value` reader (canopy_core::kv), in this flag's words.
    let (key, value) = canopy_core::kv::parse_pair(s).map_err(|e| match e {
        PairError::NoEquals { .. } => usage("no '='"),
        PairError::EmptyKey { .. } => usage("the path is empty"),
        PairError::EmptyValue { .. } => {
            usage("the value after '=' is empty (write '\"\"' for an empty string)")
        }
        other => usage(&other.to_string()),
    })?;
    let segs = parse_path(&key).map_err(|e| usage(&format!("the path {e}")))?;
    let mut segs = segs.into_iter();
    let app = match segs.next() {
        Some(Seg::Key(app)) => app,
        _ => return Err(usage("it must start with the application's name")),
    };
    let path: Vec<Seg> = segs.collect();
    if path.is_empty() {
        return Err(usage(
            "give a path inside the application's values after its name",
        ));
    }
    Ok(SetValue {
        app,
        path,
        value: scalar(&value),
        raw: s.to_owned(),
    })
}

/// A value typed on the command line.
pub fn scalar(s: &str) -> Value {
    match s {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "null" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::from(i);
    }
    let numeric = s
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && s.chars().any(|c| c.is_ascii_digit());
    if numeric
        && let Ok(f) = s.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    if s.starts_with(['{', '[', '"'])
        && let Ok(v) = serde_json::from_str::<Value>(s)
    {
        return v;
    }
    Value::String(s.to_owned())
}

/// Deep merge: mappings key by key, anything else replaces.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The override flags of `create` and `update`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OverrideArgs {
    /// Override one value of an application: APP.PATH=VALUE (`web.greeting=hi`,
    /// `web.ports[0].hostPort=8080`). Numbers, true/false and JSON are typed; the rest are
    /// strings (spaces around them dropped; `'""'` is the empty string). Repeatable; applied
    /// after --values.
    #[arg(long = "set", value_name = "APP.PATH=VALUE", value_parser = set_value)]
    pub sets: Vec<SetValue>,
    /// Override values of an application from a YAML file: APP=FILE (`-` for standard
    /// input). Replaces that application's override values; repeatable (merged in order).
    #[arg(long = "values", value_name = "APP=FILE", value_parser = app_file)]
    pub values: Vec<(String, PathBuf)>,
    /// Namespace an application runs in (containers of one namespace reach each other by
    /// name): APP=NS. Repeatable.
    #[arg(long = "namespace", value_name = "APP=NS", value_parser = crate::cli::args::key_value)]
    pub namespaces: Vec<(String, String)>,
}

/// `APP=FILE`.
fn app_file(s: &str) -> Result<(String, PathBuf), String> {
    let (app, file) = crate::cli::args::key_value(s)?;
    Ok((app, PathBuf::from(file)))
}

impl OverrideArgs {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.values.is_empty() && self.namespaces.is_empty()
    }

    /// Reads the values files, checks every application named is one of `apps` (those of
    /// `package`), and folds everything into `overrides`: files replace an app's values,
    /// `--set` then sets paths in them (masked secrets and other existing values stay as they
    /// are), `--namespace` sets its target namespace.
    pub async fn apply(
        &self,
        package: &str,
        apps: &[String],
        overrides: &mut Vec<OverrideValues>,
    ) -> anyhow::Result<()> {
        let check = |app: &str, flag: &str| -> anyhow::Result<()> {
            if apps.iter().any(|a| a == app) {
                Ok(())
            } else {
                bail!(
                    "{flag}: deployment package {package} has no application {app:?} (it has {})",
                    apps.join(", ")
                )
            }
        };
        let mut files: BTreeMap<&str, Value> = BTreeMap::new();
        for (app, path) in &self.values {
            check(app, &format!("--values {app}={}", path.display()))?;
            let v = read_values(path).await?;
            merge(files.entry(app).or_insert(Value::Null), v);
        }
        for s in &self.sets {
            check(&s.app, &format!("--set {}", s.raw))?;
        }
        for (app, _) in &self.namespaces {
            check(app, &format!("--namespace {app}"))?;
        }
        fn entry<'o>(overrides: &'o mut Vec<OverrideValues>, app: &str) -> &'o mut OverrideValues {
            let i = match overrides.iter().position(|o| o.app_name == app) {
                Some(i) => i,
                None => {
                    overrides.push(OverrideValues {
                        app_name: app.to_owned(),
                        ..Default::default()
                    });
                    overrides.len() - 1
                }
            };
            &mut overrides[i]
        }
        for (app, v) in files {
            entry(overrides, app).values = Some(v);
        }
        for s in &self.sets {
            let o = entry(overrides, &s.app);
            let values = o.values.get_or_insert(Value::Object(Map::new()));
            set_path(values, &s.path, s.value.clone())
                .map_err(|e| anyhow::anyhow!("--set {}: {e} in the override values", s.raw))?;
        }
        for (app, ns) in &self.namespaces {
            entry(overrides, app).target_namespace = ns.clone();
        }
        Ok(())
    }
}

/// A values file: one YAML mapping (empty = no values).
async fn read_values(path: &Path) -> anyhow::Result<Value> {
    let text = read_text(path).await?;
    let v: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        canopy_core::yaml::parse_one(&text)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("{} is not valid YAML", path.display()))?
    };
    match v {
        Value::Object(_) => Ok(v),
        Value::Null => Ok(Value::Object(Map::new())),
        _ => bail!(
            "{} must hold a YAML mapping of values (key: value)",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(k: &str) -> Seg {
        Seg::Key(k.into())
    }

    #[test]
    fn parses_paths() {
        assert_eq!(parse_path("a.b"), Ok(vec![key("a"), key("b")]));
        assert_eq!(
            parse_path("a.b[0].c"),
            Ok(vec![key("a"), key("b"), Seg::Index(0), key("c")])
        );
        assert_eq!(
            parse_path("a[1][2]"),
            Ok(vec![key("a"), Seg::Index(1), Seg::Index(2)])
        );
        assert_eq!(
            parse_path(r"l.app\.kubernetes\.io/name"),
            Ok(vec![key("l"), key("app.kubernetes.io/name")])
        );
        for bad in [
            "", ".a", "a..b", "a.", "[0]", "a[x]", "a]", "a[0]b", "a[1001]", "a\\",
        ] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_set_flags() {
        let s = set_value("web.greeting=hi there").unwrap();
        assert_eq!(s.app, "web");
        assert_eq!(s.path, vec![key("greeting")]);
        assert_eq!(s.value, json!("hi there"));
        assert_eq!(set_value("web.port=8080").unwrap().value, json!(8080));
        assert_eq!(set_value("web.x=a=b").unwrap().value, json!("a=b"));
        assert_eq!(set_value(r#"web.x="""#).unwrap().value, json!(""));
        assert_eq!(set_value(" web.x = 1 ").unwrap().value, json!(1));
        for (bad, why) in [
            ("web.greeting", "no '='"),
            ("web=hi", "give a path inside"),
            ("=hi", "the path is empty"),
            ("web.x=", "the value after '=' is empty"),
            ("web.x=  ", "write '\"\"' for an empty string"),
            ("[0].x=1", "the path has an index"),
            ("web..x=1", "the path has an empty key"),
        ] {
            let e = set_value(bad).unwrap_err();
            assert!(e.starts_with("expected APP.PATH=VALUE"), "{bad}: {e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn scalars_are_json_ish() {
        assert_eq!(scalar("true"), json!(true));
        assert_eq!(scalar("false"), json!(false));
        assert_eq!(scalar("null"), Value::Null);
        assert_eq!(scalar("42"), json!(42));
        assert_eq!(scalar("-3"), json!(-3));
        assert_eq!(scalar("0.5"), json!(0.5));
        assert_eq!(scalar("1e3"), json!(1000.0));
        assert_eq!(scalar(r#""007""#), json!("007"));
        assert_eq!(scalar("[1, 2]"), json!([1, 2]));
        assert_eq!(scalar(r#"{"a": 1}"#), json!({"a": 1}));
        for s in [
            "hi", "True", "inf", "NaN", "1.2.3", "[oops", "e", "-", "1.0.0",
        ] {
            assert_eq!(scalar(s), json!(s), "{s}");
        }
    }

    #[tokio::test]
    async fn folds_flags_into_override_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("web.yaml");
        std::fs::write(&file, "greeting: from file\nimage:\n  tag: \"1.36\"\n").unwrap();
        let args = OverrideArgs {
            sets: vec![
                set_value("web.image.tag=1.37").unwrap(),
                set_value("db.ports[1]=5432").unwrap(),
            ],
            values: vec![("web".into(), file.clone())],
            namespaces: vec![("db".into(), "data".into())],
        };
        let apps = vec!["web".to_owned(), "db".to_owned()];
        let mut overrides = vec![OverrideValues {
            app_name: "web".into(),
            target_namespace: "front".into(),
            values: Some(json!({"password": "********"})),
        }];
        args.apply("stack:1.0", &apps, &mut overrides)
            .await
            .unwrap();
        assert_eq!(overrides.len(), 2);
        assert_eq!(overrides[0].target_namespace, "front");
        assert_eq!(
            overrides[0].values,
            Some(json!({"greeting": "from file", "image": {"tag": 1.37}}))
        );
        assert_eq!(overrides[1].app_name, "db");
        assert_eq!(overrides[1].target_namespace, "data");
        assert_eq!(overrides[1].values, Some(json!({"ports": [null, 5432]})));

        // --set alone keeps what is there (a masked secret included).
        let mut kept = vec![OverrideValues {
            app_name: "web".into(),
            values: Some(json!({"password": "********"})),
            ..Default::default()
        }];
        let only_set = OverrideArgs {
            sets: vec![set_value("web.greeting=hi").unwrap()],
            ..Default::default()
        };
        only_set.apply("stack:1.0", &apps, &mut kept).await.unwrap();
        assert_eq!(
            kept[0].values,
            Some(json!({"password": "********", "greeting": "hi"}))
        );

        // Unknown applications and paths through scalars are named.
        let e = OverrideArgs {
            sets: vec![set_value("api.x=1").unwrap()],
            ..Default::default()
        }
        .apply("stack:1.0", &apps, &mut Vec::new())
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--set api.x=1: deployment package stack:1.0 has no application \"api\" (it has web, db)"
        );
        let e = OverrideArgs {
            sets: vec![set_value("web.greeting.x=1").unwrap()],
            ..Default::default()
        }
        .apply("stack:1.0", &apps, &mut kept)
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--set web.greeting.x=1: greeting is not a mapping in the override values"
        );

        // A values file must be a mapping.
        std::fs::write(&file, "- a\n- b\n").unwrap();
        let e = OverrideArgs {
            values: vec![("web".into(), file.clone())],
            ..Default::default()
        }
        .apply("stack:1.0", &apps, &mut Vec::new())
        .await
        .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("must hold a YAML mapping of values (key: value)"),
            "{e}"
        );
    }
}
