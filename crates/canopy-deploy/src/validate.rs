//! Request rules of a deployment create or update (section 6 of the reference, "Create
//! semantics" steps 2–4 and 7), everything that needs no catalog lookup: field formats, limits,
//! targets and the shape of override values.
//!
//! [`normalize_request`] is the one entry point the server calls; it returns the request as it
//! is stored (defaults filled, strings trimmed, output-only fields cleared), so everything after
//! it (targeting, rendering) can rely on those rules holding.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use canopy_core::names::NameRule;
use regex::Regex;

use crate::error::DeployError;
use crate::model::{AUTO_SCALING, Deployment, OverrideValues, TARGETED, TargetClusters};

/// Most `overrideValues` entries in one request.
pub const MAX_OVERRIDE_VALUES: usize = 100;
/// Most `targetClusters` entries in one request (the reference's OpenAPI says 100; its docs 50).
pub const MAX_TARGET_CLUSTERS: usize = 100;
/// Most label pairs in one target label set.
pub const MAX_TARGET_LABELS: usize = 10;
/// Longest `clusterId`.
pub const MAX_CLUSTER_ID: usize = 100;
/// Longest `displayName`.
pub const MAX_DISPLAY_NAME: usize = 40;
/// Longest `targetNamespace` (an RFC 1123 label).
pub const MAX_NAMESPACE: usize = 63;
/// Most items of the list query's `labels` parameter.
pub const MAX_LABEL_FILTERS: usize = canopy_core::kv::MAX_LABEL_FILTERS;

use canopy_core::kv::{LABEL_RULE, label_part_ok};

/// Checks a target label set: at most `max` pairs, every key and value 1–40 characters of the
/// reference pattern. `field` names the set in messages (`targetClusters[1].labels`).
pub fn check_labels(
    labels: &BTreeMap<String, String>,
    field: &str,
    max: usize,
) -> Result<(), DeployError> {
    if labels.len() > max {
        return Err(DeployError::invalid(format!(
            "{field}: at most {max} labels are allowed (got {})",
            labels.len()
        )));
    }
    for (k, v) in labels {
        if !label_part_ok(k) {
            return Err(DeployError::invalid(format!(
                "{field}: key {k:?} {LABEL_RULE}"
            )));
        }
        if !label_part_ok(v) {
            return Err(DeployError::invalid(format!(
                "{field}: value {v:?} of key {k:?} {LABEL_RULE}"
            )));
        }
    }
    Ok(())
}

fn display_name_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // The reference's `\w` is Go's, i.e. ASCII only.
    RE.get_or_init(|| {
        Regex::new(r"^([a-zA-Z0-9][a-zA-Z0-9_\- ./]{0,38}[a-zA-Z0-9]?|)$")
            .expect("display name pattern compiles")
    })
}

/// Checks a deployment's `displayName`: empty, or up to 40 ASCII letters, digits, spaces and
/// `_ - . /`, starting with a letter or digit (the reference pattern), without a trailing space.
pub fn check_display_name(s: &str) -> Result<(), DeployError> {
    let bad = |why: &str| Err(DeployError::invalid(format!("displayName {s:?}: {why}")));
    if s.chars().count() > MAX_DISPLAY_NAME {
        return bad(&format!("must be at most {MAX_DISPLAY_NAME} characters"));
    }
    if s.trim() != s {
        return bad("must not have leading or trailing spaces");
    }
    if !display_name_regex().is_match(s) {
        return bad(
            "may contain only letters, digits, spaces and _ - . /, starting with a letter or \
             digit (and, at 40 characters, ending with one)",
        );
    }
    Ok(())
}

/// Checks an RFC 1123 DNS label of at most 63 characters.
fn check_dns_label(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let end = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || b.len() > MAX_NAMESPACE {
        return Err(format!("must be 1-{MAX_NAMESPACE} characters"));
    }
    if !end(b[0]) || !end(b[b.len() - 1]) || !b.iter().all(|&c| end(c) || c == b'-') {
        return Err(
            "must be an RFC 1123 label: lowercase letters, digits and '-', starting and ending \
             with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

/// The deployment type as stored: `targeted`, or `auto-scaling` for anything else (including
/// empty and unknown values, as the reference does).
pub fn deployment_type(s: &str) -> &'static str {
    if s == TARGETED {
        TARGETED
    } else {
        AUTO_SCALING
    }
}

/// Normalizes and checks a create or update request (everything that needs no catalog):
///
/// - `appName` (a `NAME`) and `appVersion` (a `VERSION`) are required;
/// - `deploymentType` becomes `auto-scaling` unless it is `targeted`;
/// - `displayName` follows [`check_display_name`];
/// - there must be `targetClusters` or `allAppTargetClusters`; each target needs an `appName`
///   (not `allAppTargetClusters`) and labels (auto-scaling, checked by [`check_labels`]) or a
///   `clusterId` (targeted, at most 100 characters). The field the type does not use is cleared
///   (labels of a targeted target, `clusterId` of an auto-scaling one; the reference likewise
///   replaces a targeted target's labels), and so is `allAppTargetClusters.appName`;
/// - at most 100 `targetClusters` and 100 `overrideValues`;
/// - each override value has its `appName` (a `NAME`) and `targetNamespace` trimmed, names an
///   application at most once, has `values` (a JSON object) or a `targetNamespace` (an RFC 1123
///   label). String values *inside* `values` are kept verbatim (a secret may well end in a
///   space); numbers and booleans given as text are trimmed when their parameter template
///   coerces them at render time;
/// - output-only fields (`apps`, `status`, `createTime`, `name`, `deployId`,
///   `defaultProfileName`) are cleared.
///
/// Returns the normalized copy.
pub fn normalize_request(d: &Deployment) -> Result<Deployment, DeployError> {
    let mut out = d.clone();
    out.apps.clear();
    out.status = None;
    out.create_time = None;
    out.name.clear();
    out.deploy_id.clear();
    out.default_profile_name.clear();
    out.warnings.clear();

    out.app_name = out.app_name.trim().to_string();
    out.app_version = out.app_version.trim().to_string();
    out.profile_name = out.profile_name.trim().to_string();
    if out.app_name.is_empty() {
        return Err(DeployError::invalid(
            "appName: missing (the deployment package name)",
        ));
    }
    NameRule::Name
        .check(&out.app_name)
        .map_err(|e| DeployError::invalid(format!("appName {:?}: {e}", out.app_name)))?;
    if out.app_version.is_empty() {
        return Err(DeployError::invalid(
            "appVersion: missing (the deployment package version)",
        ));
    }
    NameRule::Version
        .check(&out.app_version)
        .map_err(|e| DeployError::invalid(format!("appVersion {:?}: {e}", out.app_version)))?;
    if !out.profile_name.is_empty() {
        NameRule::Name.check(&out.profile_name).map_err(|e| {
            DeployError::invalid(format!("profileName {:?}: {e}", out.profile_name))
        })?;
    }

    out.deployment_type = deployment_type(&out.deployment_type).to_string();
    let targeted = out.deployment_type == TARGETED;
    check_display_name(&out.display_name)?;

    if out.target_clusters.is_empty() && out.all_app_target_clusters.is_none() {
        return Err(DeployError::invalid(
            "missing targetClusters in request: give targetClusters (per application) or \
             allAppTargetClusters",
        ));
    }
    if out.target_clusters.len() > MAX_TARGET_CLUSTERS {
        return Err(DeployError::invalid(format!(
            "targetClusters: at most {MAX_TARGET_CLUSTERS} entries are allowed (got {})",
            out.target_clusters.len()
        )));
    }
    for (i, t) in out.target_clusters.iter_mut().enumerate() {
        let field = format!("targetClusters[{i}]");
        t.app_name = t.app_name.trim().to_string();
        if t.app_name.is_empty() {
            return Err(DeployError::invalid(format!(
                "{field}.appName: missing (the application of the package this target is for)"
            )));
        }
        normalize_target(t, &field, targeted)?;
    }
    if let Some(t) = out.all_app_target_clusters.as_mut() {
        t.app_name.clear();
        normalize_target(t, "allAppTargetClusters", targeted)?;
    }

    if out.override_values.len() > MAX_OVERRIDE_VALUES {
        return Err(DeployError::invalid(format!(
            "overrideValues: at most {MAX_OVERRIDE_VALUES} entries are allowed (got {})",
            out.override_values.len()
        )));
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, ov) in out.override_values.iter_mut().enumerate() {
        normalize_override(ov, i)?;
        if let Some(j) = seen.insert(ov.app_name.clone(), i) {
            return Err(DeployError::invalid(format!(
                "overrideValues[{i}].appName: application {} already has overrideValues[{j}]; \
                 give one entry per application",
                ov.app_name
            )));
        }
    }
    Ok(out)
}

fn normalize_target(
    t: &mut TargetClusters,
    field: &str,
    targeted: bool,
) -> Result<(), DeployError> {
    t.cluster_id = t.cluster_id.trim().to_string();
    if targeted {
        if t.cluster_id.is_empty() {
            return Err(DeployError::invalid(format!(
                "{field}.clusterId: deployment type is targeted but clusterId is missing"
            )));
        }
        if t.cluster_id.chars().count() > MAX_CLUSTER_ID {
            return Err(DeployError::invalid(format!(
                "{field}.clusterId: must be at most {MAX_CLUSTER_ID} characters"
            )));
        }
        if t.cluster_id.chars().any(char::is_control) {
            return Err(DeployError::invalid(format!(
                "{field}.clusterId: must not contain control characters"
            )));
        }
        t.labels.clear();
    } else {
        if t.labels.is_empty() {
            return Err(DeployError::invalid(format!(
                "{field}.labels: deployment type is auto-scaling but labels are missing"
            )));
        }
        check_labels(&t.labels, &format!("{field}.labels"), MAX_TARGET_LABELS)?;
        t.cluster_id.clear();
    }
    Ok(())
}

fn normalize_override(ov: &mut OverrideValues, i: usize) -> Result<(), DeployError> {
    let field = format!("overrideValues[{i}]");
    ov.app_name = ov.app_name.trim().to_string();
    ov.target_namespace = ov.target_namespace.trim().to_string();
    if ov.app_name.is_empty() {
        return Err(DeployError::invalid(format!(
            "{field}.appName: missing (the application of the package these values are for)"
        )));
    }
    NameRule::Name
        .check(&ov.app_name)
        .map_err(|e| DeployError::invalid(format!("{field}.appName {:?}: {e}", ov.app_name)))?;
    if ov.values.as_ref().is_some_and(serde_json::Value::is_null) {
        ov.values = None;
    }
    if ov.values.is_none() && ov.target_namespace.is_empty() {
        return Err(DeployError::invalid(format!(
            "{field}: missing targetNamespace or values for application {}",
            ov.app_name
        )));
    }
    if let Some(v) = &ov.values
        && !v.is_object()
    {
        let kind = match v {
            serde_json::Value::Array(_) => "a list",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            _ => "a boolean",
        };
        return Err(DeployError::invalid(format!(
            "{field}.values: must be a JSON object of values (key: value), not {kind}"
        )));
    }
    if !ov.target_namespace.is_empty() {
        check_dns_label(&ov.target_namespace).map_err(|e| {
            DeployError::invalid(format!(
                "{field}.targetNamespace {:?}: {e}",
                ov.target_namespace
            ))
        })?;
    }
    Ok(())
}

/// Parses the list query's `labels` parameter: at most 20 items, each `k=v[,k=v]` (read by
/// [`canopy_core::kv::parse_label_filters`]). Returns the distinct `(key, value)` pairs.
pub fn parse_label_filters(filters: &[String]) -> Result<BTreeSet<(String, String)>, DeployError> {
    let items = canopy_core::kv::parse_label_filters(filters).map_err(DeployError::invalid)?;
    Ok(items.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use proptest::prelude::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn request() -> Deployment {
        Deployment {
            app_name: "web".into(),
            app_version: "1.0.0".into(),
            target_clusters: vec![TargetClusters {
                app_name: "server".into(),
                labels: labels(&[("site", "a")]),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn err(d: &Deployment) -> String {
        let e = normalize_request(d).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        e.message
    }

    #[test]
    fn label_rules() {
        assert!(check_labels(&labels(&[("site", "a")]), "l", 10).is_ok());
        assert!(check_labels(&labels(&[("a.b/c-d_e", "x=y,z")]), "l", 10).is_ok());
        assert!(check_labels(&labels(&[("a", "0")]), "l", 10).is_ok());
        let e = check_labels(&labels(&[("Bad", "a")]), "targetClusters[1].labels", 10).unwrap_err();
        assert!(
            e.message
                .starts_with("targetClusters[1].labels: key \"Bad\""),
            "{e}"
        );
        let e = check_labels(&labels(&[("k", "")]), "f", 10).unwrap_err();
        assert!(e.message.contains("value \"\" of key \"k\""), "{e}");
        for bad in ["-a", "a-", "a b", &"a".repeat(41), "é", "a:b"] {
            assert!(
                check_labels(&labels(&[(bad, "v")]), "f", 10).is_err(),
                "{bad}"
            );
        }
        assert!(check_labels(&labels(&[(&"a".repeat(40), "v")]), "f", 10).is_ok());
        let many: BTreeMap<String, String> = (0..11)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        let e = check_labels(&many, "f", 10).unwrap_err();
        assert!(e.message.contains("at most 10 labels"), "{e}");
    }

    proptest! {
        /// The hand-written label check accepts exactly what the reference pattern accepts.
        #[test]
        fn label_rule_matches_reference(s in "[a-z0-9A-Z_.=,/ :-]{0,42}") {
            let re = Regex::new(r"^[a-z0-9]([-_.=,a-z0-9/]{0,38}[a-z0-9])?$").unwrap();
            prop_assert_eq!(label_part_ok(&s), re.is_match(&s));
        }
    }

    #[test]
    fn display_names() {
        for ok in ["", "a", "Web UI 2", "my_app-1.0/x", &"a".repeat(40), "ab_"] {
            assert!(check_display_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            " a",
            "a ",
            "_a",
            "é",
            &"a".repeat(41),
            &format!("a{}", "_".repeat(39)),
            "a!b",
        ] {
            let e = check_display_name(bad).unwrap_err();
            assert!(e.message.starts_with("displayName "), "{e}");
        }
        assert!(
            check_display_name("a ")
                .unwrap_err()
                .message
                .contains("trailing")
        );
    }

    #[test]
    fn defaults_and_output_fields() {
        let mut d = request();
        d.name = "deployment-x".into();
        d.deploy_id = "id".into();
        d.default_profile_name = "p".into();
        d.apps = vec![Default::default()];
        d.status = Some(Default::default());
        d.create_time = Some(time::OffsetDateTime::UNIX_EPOCH);
        d.deployment_type = "whatever".into();
        d.app_name = " web ".into();
        let n = normalize_request(&d).unwrap();
        assert_eq!(n.deployment_type, AUTO_SCALING);
        assert_eq!(n.app_name, "web");
        assert!(n.name.is_empty() && n.deploy_id.is_empty() && n.default_profile_name.is_empty());
        assert!(n.apps.is_empty() && n.status.is_none() && n.create_time.is_none());
        d.deployment_type = String::new();
        assert_eq!(normalize_request(&d).unwrap().deployment_type, AUTO_SCALING);
        // Idempotent.
        assert_eq!(normalize_request(&n).unwrap(), n);
    }

    #[test]
    fn required_fields() {
        let mut d = request();
        d.app_name = String::new();
        assert!(err(&d).starts_with("appName: missing"));
        let mut d = request();
        d.app_version = "  ".into();
        assert!(err(&d).starts_with("appVersion: missing"));
        let mut d = request();
        d.app_name = "Web".into();
        assert!(err(&d).starts_with("appName \"Web\""));
        let mut d = request();
        d.app_version = "1.0.0_x".into();
        assert!(err(&d).starts_with("appVersion \"1.0.0_x\""));
        let mut d = request();
        d.profile_name = "Bad Profile".into();
        assert!(err(&d).starts_with("profileName"));
        let mut d = request();
        d.display_name = " x".into();
        assert!(err(&d).starts_with("displayName"));
    }

    #[test]
    fn target_rules() {
        let mut d = request();
        d.target_clusters.clear();
        assert!(err(&d).contains("missing targetClusters"));

        let mut d = request();
        d.target_clusters[0].app_name = " ".into();
        assert_eq!(
            err(&d),
            "targetClusters[0].appName: missing (the application of the package this target is for)"
        );

        let mut d = request();
        d.target_clusters[0].labels.clear();
        d.target_clusters[0].cluster_id = "edge-1".into();
        assert!(err(&d).contains("targetClusters[0].labels: deployment type is auto-scaling"));

        let mut d = request();
        d.target_clusters.push(TargetClusters {
            app_name: "db".into(),
            labels: labels(&[("Bad", "x")]),
            ..Default::default()
        });
        assert!(err(&d).starts_with("targetClusters[1].labels: key \"Bad\""));

        let mut d = request();
        d.deployment_type = TARGETED.into();
        assert!(err(&d).contains("targetClusters[0].clusterId: deployment type is targeted"));
        d.target_clusters[0].cluster_id = "x".repeat(101);
        assert!(err(&d).contains("at most 100"));
        d.target_clusters[0].cluster_id = " edge-1 ".into();
        let n = normalize_request(&d).unwrap();
        assert_eq!(n.target_clusters[0].cluster_id, "edge-1");
        assert!(
            n.target_clusters[0].labels.is_empty(),
            "targeted labels cleared"
        );

        let mut d = request();
        d.target_clusters[0].cluster_id = "ignored".into();
        let n = normalize_request(&d).unwrap();
        assert!(n.target_clusters[0].cluster_id.is_empty());

        let mut d = request();
        d.target_clusters = vec![d.target_clusters[0].clone(); 101];
        assert!(err(&d).starts_with("targetClusters: at most 100"));
        d.target_clusters.truncate(100);
        assert!(normalize_request(&d).is_ok());
    }

    #[test]
    fn all_app_target() {
        let mut d = request();
        d.target_clusters.clear();
        d.all_app_target_clusters = Some(TargetClusters {
            app_name: "ignored".into(),
            ..Default::default()
        });
        assert!(
            err(&d).starts_with("allAppTargetClusters.labels: deployment type is auto-scaling")
        );
        d.all_app_target_clusters.as_mut().unwrap().labels = labels(&[("site", "a")]);
        let n = normalize_request(&d).unwrap();
        assert_eq!(n.all_app_target_clusters.unwrap().app_name, "");
        d.deployment_type = TARGETED.into();
        assert!(err(&d).starts_with("allAppTargetClusters.clusterId"));
    }

    #[test]
    fn override_rules() {
        let ov = |app: &str, ns: &str, values: Option<serde_json::Value>| OverrideValues {
            app_name: app.into(),
            target_namespace: ns.into(),
            values,
        };
        let mut d = request();
        d.override_values = vec![ov(" server ", " web ", None)];
        let n = normalize_request(&d).unwrap();
        assert_eq!(n.override_values[0].app_name, "server");
        assert_eq!(n.override_values[0].target_namespace, "web");

        d.override_values = vec![ov("", "", Some(json!({})))];
        assert!(err(&d).starts_with("overrideValues[0].appName: missing"));
        d.override_values = vec![ov("server", "", None)];
        assert_eq!(
            err(&d),
            "overrideValues[0]: missing targetNamespace or values for application server"
        );
        d.override_values = vec![ov("server", "", Some(serde_json::Value::Null))];
        assert!(err(&d).contains("missing targetNamespace or values"));
        d.override_values = vec![ov("server", "", Some(json!([1])))];
        assert!(err(&d).starts_with("overrideValues[0].values: must be a JSON object"));
        d.override_values = vec![ov("server", "Web_NS", None)];
        assert!(err(&d).starts_with("overrideValues[0].targetNamespace \"Web_NS\""));
        d.override_values = vec![ov("server", &"a".repeat(64), None)];
        assert!(err(&d).contains("1-63"));
        d.override_values = vec![ov("server", &"a".repeat(63), None)];
        assert!(normalize_request(&d).is_ok());
        d.override_values = vec![
            ov("server", "a", None),
            ov("server", "", Some(json!({"a": 1}))),
        ];
        assert!(err(&d).contains("overrideValues[1].appName: application server already has"));
        d.override_values = vec![ov("server", "", Some(json!({"p": " x "})))];
        let n = normalize_request(&d).unwrap();
        assert_eq!(
            n.override_values[0].values,
            Some(json!({"p": " x "})),
            "kept verbatim"
        );
        d.override_values = vec![ov("server", "a", None); 101];
        assert!(err(&d).starts_with("overrideValues: at most 100"));
    }

    #[test]
    fn label_filters() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = parse_label_filters(&f(&["a=1,b=2", "c=3"])).unwrap();
        assert_eq!(p.len(), 3);
        assert!(p.contains(&("b".into(), "2".into())));
        assert!(
            parse_label_filters(&f(&["a"]))
                .unwrap_err()
                .message
                .contains("labels[0]")
        );
        assert!(parse_label_filters(&f(&["=1"])).is_err());
        let many = vec!["a=1".to_string(); 21];
        assert!(
            parse_label_filters(&many)
                .unwrap_err()
                .message
                .contains("at most 20")
        );
    }
}
