//! The reference's Helm chart import (`POST .../catalog/import`, real-system.md "Import from
//! Helm chart"), the part that needs no database: reading the chart URL, choosing the version
//! when the URL names none, and turning a fetched chart into the three catalog entities the
//! reference generates — a HELM registry `<name>-registry`, an application `<name>` with one
//! profile `default`, and a deployment package `<name>` with one deployment profile `default`.
//!
//! The rules are the reference's, kept exactly so an import gives the same catalog on both:
//! a chart name longer than 30 characters becomes its first 25 (without trailing `-`); the
//! registry carries credentials only with `includeAuth` (and only when both a username and a
//! token were given); `chartValues` and `generateDefaultValues` exclude each other; parameter
//! templates are generated from the string leaves of the values (dotted paths, type `string`,
//! the value as default unless it is 100 characters or longer, holds `{{` or a line break).
//! Canopy adds only what the reference leaves to chance: parameters come in document order
//! (the reference's come in Go map order), and too many parameters is an error naming the
//! chart instead of a profile validation failure.

use std::collections::BTreeMap;

use canopy_core::catalog::{Application, Kind};
use canopy_core::catalog::{
    ApplicationReference, DeploymentPackage, DeploymentProfile, ParameterTemplate, Profile,
    Registry,
};

/// Chart names longer than this are shortened (the reference's rule).
pub const MAX_NAME_BEFORE_TRUNCATION: usize = 30;
/// What a too-long chart name is shortened to.
pub const TRUNCATED_NAME: usize = 25;
/// The profile and deployment profile the import creates.
pub const PROFILE: &str = "default";
/// Most parameter templates of one profile (the reference's profile rule).
pub const MAX_PARAMETERS: usize = 100;
/// String values this long or longer get no default (the reference's rule).
const MAX_DEFAULT_CHARS: usize = 100;
/// Longest description kept from `Chart.yaml` (the catalog's description rule).
const MAX_DESCRIPTION_CHARS: usize = 1000;

/// Why an import cannot be built (before anything is written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The `url` parameter is not an `oci://host/path/chart[:version]` URL.
    #[error("url {url:?}: {reason}")]
    Url { url: String, reason: String },
    /// Both `chartValues` and `generateDefaultValues` were given.
    #[error(
        "chartValues and generateDefaultValues cannot be used together: give the values, or \
         ask for the chart's values.yaml"
    )]
    BothValues,
    /// `generateDefaultValues` on a chart without `values.yaml`.
    #[error("chart {chart}:{version} has no values.yaml to use as default values")]
    NoChartValues { chart: String, version: String },
    /// The values are not a YAML mapping.
    #[error("{what} of chart {chart}:{version} is not valid YAML values (a mapping): {reason}")]
    InvalidValues {
        what: &'static str,
        chart: String,
        version: String,
        reason: String,
    },
    /// `generateDefaultParameters` found more string values than a profile may have
    /// parameters.
    #[error(
        "generateDefaultParameters: the values of chart {chart}:{version} give {count} \
         parameters, more than the {MAX_PARAMETERS} a profile may have; import without \
         generateDefaultParameters, or give chartValues with fewer string values"
    )]
    TooManyParameters {
        chart: String,
        version: String,
        count: usize,
    },
    /// The registry has no version of the chart that reads as a semantic version.
    #[error(
        "chart {chart} in {registry} has no version that is a semantic version (tags: {tags}); \
         name one in the url (oci://.../{chart}:VERSION)"
    )]
    NoVersion {
        chart: String,
        registry: String,
        tags: String,
    },
}

/// An import URL, read: `oci://host[:port]/path/chart[:version]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartUrl {
    /// The registry's root URL: `oci://host[:port]/path` (the chart's repository without its
    /// last segment).
    pub root_url: String,
    /// The chart's name: the repository's last segment.
    pub chart_name: String,
    /// The version (tag) the URL names, if any.
    pub version: Option<String>,
}

impl ChartUrl {
    /// Reads an import URL. Only `oci://` URLs are accepted (the reference's rule); the URL
    /// must not carry credentials (they go in `username`/`authToken`), a query or a fragment.
    pub fn parse(url: &str) -> Result<ChartUrl, ImportError> {
        let bad = |reason: &str| ImportError::Url {
            url: crate::source::display_url(url),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("oci://")
            .ok_or_else(|| bad("must start with oci:// (an OCI chart reference)"))?;
        if rest.contains(['?', '#']) {
            return Err(bad("must not have a query or a fragment"));
        }
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("has no chart path after the host"))?;
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        if host.contains('@') {
            return Err(bad(
                "must not carry credentials; give them as username and authToken",
            ));
        }
        // The version is after the last ':' of the path (the host's port is before the path).
        let (path, version) = match path.rsplit_once(':') {
            Some((p, v)) => (p, Some(v)),
            None => (path, None),
        };
        let path = path.trim_matches('/');
        if path.is_empty() {
            return Err(bad("has no chart path after the host"));
        }
        let (dir, chart) = match path.rsplit_once('/') {
            Some((d, c)) => (Some(d), c),
            None => (None, path),
        };
        if chart.is_empty() {
            return Err(bad("has an empty chart name"));
        }
        let version = match version {
            Some("") => return Err(bad("has an empty version after ':'")),
            Some(v) => Some(v.to_string()),
            None => None,
        };
        let root_url = match dir {
            Some(d) => format!("oci://{host}/{d}"),
            None => format!("oci://{host}"),
        };
        Ok(ChartUrl {
            root_url,
            chart_name: chart.to_string(),
            version,
        })
    }
}

/// The highest semantic version among a chart's versions (the reference's choice when the URL
/// names none; versions that are not semantic versions are ignored). OCI tags write `+` as
/// `_`; pass versions with `+` (as [`crate::ChartFetcher::list_versions`] returns them).
pub fn latest_version(versions: &[String]) -> Option<String> {
    versions
        .iter()
        .filter_map(|v| semver::Version::parse(v).ok().map(|s| (s, v)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v.clone())
}

/// The catalog name of a chart (the reference's truncation rule).
pub fn import_name(chart_name: &str) -> String {
    if chart_name.chars().count() <= MAX_NAME_BEFORE_TRUNCATION {
        return chart_name.to_string();
    }
    let short: String = chart_name.chars().take(TRUNCATED_NAME).collect();
    short.trim_end_matches('-').to_string()
}

/// Where the `default` profile's values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValuesSource {
    /// No values (an empty profile).
    None,
    /// The caller's `chartValues`.
    Given(String),
    /// The chart's own `values.yaml` (`generateDefaultValues`).
    ChartDefaults,
}

impl ValuesSource {
    /// From the request's `chartValues` and `generateDefaultValues`.
    pub fn from_request(
        chart_values: Option<String>,
        generate_default_values: bool,
    ) -> Result<ValuesSource, ImportError> {
        match (
            chart_values.filter(|v| !v.is_empty()),
            generate_default_values,
        ) {
            (Some(_), true) => Err(ImportError::BothValues),
            (Some(v), false) => Ok(ValuesSource::Given(v)),
            (None, true) => Ok(ValuesSource::ChartDefaults),
            (None, false) => Ok(ValuesSource::None),
        }
    }
}

/// What the import was asked for, besides the URL.
#[derive(Clone, Default)]
pub struct ImportOptions {
    /// `username`: used to fetch, stored only with `include_auth`.
    pub username: Option<String>,
    /// `authToken`: used to fetch, stored only with `include_auth`.
    pub auth_token: Option<String>,
    /// `includeAuth`.
    pub include_auth: bool,
    /// `generateDefaultParameters`.
    pub generate_default_parameters: bool,
    /// `namespace`: the package's default namespace for the application.
    pub namespace: Option<String>,
}

impl std::fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("username", &self.username.as_ref().map(|_| "<set>"))
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<set>"))
            .field("include_auth", &self.include_auth)
            .field(
                "generate_default_parameters",
                &self.generate_default_parameters,
            )
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// The three entities an import writes.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedEntities {
    pub registry: Registry,
    pub application: Application,
    pub package: DeploymentPackage,
}

/// Builds the entities of an import of `url`'s chart at `version`, whose `Chart.yaml` says
/// `description`. `values` is the profile's values text (already chosen by
/// [`ValuesSource`]: the caller's, the chart's `values.yaml`, or empty).
pub fn entities(
    url: &ChartUrl,
    version: &str,
    description: &str,
    values: &str,
    values_what: &'static str,
    opts: &ImportOptions,
) -> Result<ImportedEntities, ImportError> {
    let chart = &url.chart_name;
    check_values(values, values_what, chart, version)?;
    let parameter_templates = if opts.generate_default_parameters {
        let pts = default_parameters(values).map_err(|reason| ImportError::InvalidValues {
            what: values_what,
            chart: chart.clone(),
            version: version.to_string(),
            reason,
        })?;
        if pts.len() > MAX_PARAMETERS {
            return Err(ImportError::TooManyParameters {
                chart: chart.clone(),
                version: version.to_string(),
                count: pts.len(),
            });
        }
        pts
    } else {
        Vec::new()
    };
    let name = import_name(chart);
    let registry_name = format!("{name}-registry");
    let (username, auth_token) = match (&opts.username, &opts.auth_token) {
        (Some(u), Some(t)) if opts.include_auth && !u.is_empty() && !t.is_empty() => {
            (Some(u.clone()), Some(t.clone()))
        }
        _ => (None, None),
    };
    let registry = Registry {
        name: registry_name.clone(),
        description: format!("OCI registry for {name}"),
        root_url: url.root_url.clone(),
        username,
        auth_token,
        registry_type: "HELM".into(),
        ..Registry::default()
    };
    let application = Application {
        name: name.clone(),
        version: version.to_string(),
        description: description.chars().take(MAX_DESCRIPTION_CHARS).collect(),
        kind: Kind::default(),
        chart_name: chart.clone(),
        chart_version: version.to_string(),
        helm_registry_name: registry_name,
        profiles: vec![Profile {
            name: PROFILE.into(),
            chart_values: values.to_string(),
            parameter_templates,
            ..Profile::default()
        }],
        default_profile_name: PROFILE.into(),
        ..Application::default()
    };
    let mut default_namespaces = BTreeMap::new();
    if let Some(ns) = opts.namespace.as_ref().filter(|n| !n.is_empty()) {
        default_namespaces.insert(name.clone(), ns.clone());
    }
    let package = DeploymentPackage {
        name: name.clone(),
        version: version.to_string(),
        application_references: vec![ApplicationReference {
            name: name.clone(),
            version: version.to_string(),
        }],
        profiles: vec![DeploymentProfile {
            name: PROFILE.into(),
            application_profiles: BTreeMap::from([(name.clone(), PROFILE.to_string())]),
            ..DeploymentProfile::default()
        }],
        default_profile_name: PROFILE.into(),
        default_namespaces,
        is_visible: true,
        ..DeploymentPackage::default()
    };
    Ok(ImportedEntities {
        registry,
        application,
        package,
    })
}

/// The values must be a YAML mapping (or empty), as the reference checks.
fn check_values(
    values: &str,
    what: &'static str,
    chart: &str,
    version: &str,
) -> Result<(), ImportError> {
    let invalid = |reason: String| ImportError::InvalidValues {
        what,
        chart: chart.to_string(),
        version: version.to_string(),
        reason,
    };
    let docs = canopy_core::yaml::parse_documents(values).map_err(invalid)?;
    match docs.as_slice() {
        [] => Ok(()),
        [v] if v.is_object() || v.is_null() => Ok(()),
        [_] => Err(invalid("the document is not a mapping".into())),
        _ => Err(invalid(format!(
            "{} documents; values are one document",
            docs.len()
        ))),
    }
}

/// The reference's `generateDefaultParameters`: one `string` parameter per string leaf of the
/// values (nested mappings give dotted names; lists, numbers and booleans give none), named and
/// displayed by its path, defaulting to the value unless that is 100 characters or longer,
/// holds `{{` or a line break. In document order.
pub fn default_parameters(values: &str) -> Result<Vec<ParameterTemplate>, String> {
    let docs = canopy_core::yaml::parse_documents_as::<Node>(values)?;
    let mut out = Vec::new();
    if let Some(Node::Map(entries)) = docs.first() {
        walk("", entries, &mut out);
    }
    Ok(out)
}

fn walk(parent: &str, entries: &[(String, Node)], out: &mut Vec<ParameterTemplate>) {
    for (key, value) in entries {
        let full = if parent.is_empty() {
            key.clone()
        } else {
            format!("{parent}.{key}")
        };
        match value {
            Node::Str(s) => {
                let default = if s.chars().count() >= MAX_DEFAULT_CHARS
                    || s.contains("{{")
                    || s.contains('\n')
                {
                    String::new()
                } else {
                    s.clone()
                };
                out.push(ParameterTemplate {
                    name: full.clone(),
                    display_name: full,
                    default,
                    param_type: "string".into(),
                    ..ParameterTemplate::default()
                });
            }
            Node::Map(inner) => walk(&full, inner, out),
            Node::Other => {}
        }
    }
}

/// A values tree as far as parameter generation cares: strings, mappings in document order
/// (not `serde_json`'s map, whose order depends on the build's features), and everything else.
enum Node {
    Str(String),
    Map(Vec<(String, Node)>),
    Other,
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> serde::de::Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Node::Other)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            // Keys that are not strings (numbers, booleans) name no parameter.
            if let Node::Str(k) = key {
                entries.push((k, value));
            }
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            ChartUrl::parse("oci://127.0.0.1:55010/charts/canopy-web:0.1.0").unwrap(),
            ChartUrl {
                root_url: "oci://127.0.0.1:55010/charts".into(),
                chart_name: "canopy-web".into(),
                version: Some("0.1.0".into()),
            }
        );
        assert_eq!(
            ChartUrl::parse("oci://registry.example/a/b/web").unwrap(),
            ChartUrl {
                root_url: "oci://registry.example/a/b".into(),
                chart_name: "web".into(),
                version: None,
            }
        );
        assert_eq!(
            ChartUrl::parse("oci://registry.example:5000/web:1.2.3").unwrap(),
            ChartUrl {
                root_url: "oci://registry.example:5000".into(),
                chart_name: "web".into(),
                version: Some("1.2.3".into()),
            }
        );
        for bad in [
            "https://registry.example/web:1.0.0",
            "oci://registry.example",
            "oci://registry.example/",
            "oci:///web:1.0.0",
            "oci://registry.example/web:",
            "oci://u:secret@registry.example/web:1",
            "oci://registry.example/web:1?x=1",
        ] {
            let e = ChartUrl::parse(bad).unwrap_err();
            assert!(!e.to_string().contains("secret"), "{e}");
        }
    }

    #[test]
    fn latest_is_the_highest_semver() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            latest_version(&v(&["0.9.0", "0.10.0", "latest", "0.10.0-rc.1"])),
            Some("0.10.0".into())
        );
        assert_eq!(latest_version(&v(&["latest", "main"])), None);
    }

    #[test]
    fn names_are_truncated_like_the_reference() {
        assert_eq!(import_name("web"), "web");
        let thirty = "a".repeat(30);
        assert_eq!(import_name(&thirty), thirty);
        // 31 characters: the first 25, without a trailing '-'.
        assert_eq!(
            import_name("abcdefghijklmnopqrstuvwx-zabcdef"),
            "abcdefghijklmnopqrstuvwx"
        );
        assert_eq!(import_name(&"b".repeat(40)), "b".repeat(25));
    }

    #[test]
    fn values_source_rules() {
        assert_eq!(
            ValuesSource::from_request(Some("a: 1".into()), true),
            Err(ImportError::BothValues)
        );
        assert_eq!(
            ValuesSource::from_request(Some(String::new()), false),
            Ok(ValuesSource::None)
        );
        assert_eq!(
            ValuesSource::from_request(None, true),
            Ok(ValuesSource::ChartDefaults)
        );
    }

    #[test]
    fn default_parameters_follow_the_reference() {
        let values = "image:\n  repository: nginx\n  tag: \"1.25\"\n  pullPolicy: IfNotPresent\n\
                      replicaCount: 2\nenabled: true\nlist: [a, b]\n\
                      templated: \"{{ .Release.Name }}\"\nlong: \""
            .to_string()
            + &"x".repeat(100)
            + "\"\nmultiline: |\n  a\n  b\nempty: \"\"\n";
        let pts = default_parameters(&values).unwrap();
        let got: Vec<(&str, &str)> = pts
            .iter()
            .map(|p| (p.name.as_str(), p.default.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("image.repository", "nginx"),
                ("image.tag", "1.25"),
                ("image.pullPolicy", "IfNotPresent"),
                ("templated", ""),
                ("long", ""),
                ("multiline", ""),
                ("empty", ""),
            ]
        );
        assert!(pts.iter().all(|p| p.param_type == "string"
            && p.display_name == p.name
            && !p.secret
            && !p.mandatory));
    }

    fn url() -> ChartUrl {
        ChartUrl::parse("oci://127.0.0.1:5000/charts/web:0.1.0").unwrap()
    }

    #[test]
    fn entities_of_an_import() {
        let opts = ImportOptions {
            username: Some("robot".into()),
            auth_token: Some("s3cret".into()),
            include_auth: false,
            generate_default_parameters: true,
            namespace: Some("web-ns".into()),
        };
        let e = entities(
            &url(),
            "0.1.0",
            "A web chart",
            "a: x\n",
            "chartValues",
            &opts,
        )
        .unwrap();
        assert_eq!(e.registry.name, "web-registry");
        assert_eq!(e.registry.root_url, "oci://127.0.0.1:5000/charts");
        assert_eq!(e.registry.registry_type, "HELM");
        assert_eq!(e.registry.username, None);
        assert_eq!(e.registry.auth_token, None);
        assert_eq!(e.application.name, "web");
        assert_eq!(e.application.chart_name, "web");
        assert_eq!(e.application.chart_version, "0.1.0");
        assert_eq!(e.application.description, "A web chart");
        assert_eq!(e.application.helm_registry_name, "web-registry");
        assert_eq!(e.application.default_profile_name, "default");
        assert_eq!(e.application.profiles[0].chart_values, "a: x\n");
        assert_eq!(e.application.profiles[0].parameter_templates.len(), 1);
        assert_eq!(e.package.name, "web");
        assert_eq!(e.package.default_profile_name, "default");
        assert_eq!(
            e.package.profiles[0].application_profiles.get("web"),
            Some(&"default".to_string())
        );
        assert_eq!(
            e.package.default_namespaces.get("web"),
            Some(&"web-ns".to_string())
        );
        canopy_core::validate::registry(&e.registry).unwrap();
        canopy_core::validate::application(&e.application).unwrap();
        canopy_core::validate::deployment_package(&e.package).unwrap();
        canopy_core::validate::check_package_profiles(&e.package, &[e.application]).unwrap();

        let with_auth = ImportOptions {
            include_auth: true,
            ..opts
        };
        let e = entities(&url(), "0.1.0", "", "", "chartValues", &with_auth).unwrap();
        assert_eq!(e.registry.username.as_deref(), Some("robot"));
        assert_eq!(e.registry.auth_token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn bad_values_and_too_many_parameters() {
        let opts = ImportOptions::default();
        let e = entities(&url(), "0.1.0", "", "- a\n- b\n", "chartValues", &opts).unwrap_err();
        assert!(
            e.to_string().contains("chartValues of chart web:0.1.0"),
            "{e}"
        );
        let many: String = (0..101).map(|i| format!("k{i}: v\n")).collect();
        let opts = ImportOptions {
            generate_default_parameters: true,
            ..ImportOptions::default()
        };
        let e = entities(&url(), "0.1.0", "", &many, "values.yaml", &opts).unwrap_err();
        assert_eq!(
            e,
            ImportError::TooManyParameters {
                chart: "web".into(),
                version: "0.1.0".into(),
                count: 101
            }
        );
    }
}
