//! Catalog entities as they travel over the REST API (JSON, lowerCamelCase field names of the
//! reference `catalog.v3` API). The same structs are stored (as JSON bodies) and produced by the
//! YAML upload loader, so there is exactly one definition of each entity.
//!
//! Output-only fields (`createTime`, `updateTime`) are accepted on input and ignored, so a client
//! can PUT back what it got from a GET. Unknown fields are refused (`deny_unknown_fields`).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// Output-only timestamp, RFC 3339 on the wire.
pub type Timestamp = Option<OffsetDateTime>;

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_true() -> bool {
    true
}

/// Kind of an application or deployment package (`KIND_NORMAL` when unspecified).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord, ToSchema)]
pub enum Kind {
    #[default]
    #[schema(rename = "KIND_NORMAL")]
    Normal,
    #[schema(rename = "KIND_EXTENSION")]
    Extension,
    #[schema(rename = "KIND_ADDON")]
    Addon,
}

impl Kind {
    /// The REST enum spelling (`KIND_NORMAL`, ...).
    pub fn as_api(self) -> &'static str {
        match self {
            Kind::Normal => "KIND_NORMAL",
            Kind::Extension => "KIND_EXTENSION",
            Kind::Addon => "KIND_ADDON",
        }
    }

    /// The YAML / storage spelling (`normal`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::Extension => "extension",
            Kind::Addon => "addon",
        }
    }

    /// Parses any accepted spelling: `KIND_NORMAL`, `normal`, `KIND_UNSPECIFIED` (= normal), ...
    pub fn parse(s: &str) -> Option<Kind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kind_normal" | "normal" | "kind_unspecified" | "unspecified" | "" => {
                Some(Kind::Normal)
            }
            "kind_extension" | "extension" => Some(Kind::Extension),
            "kind_addon" | "addon" => Some(Kind::Addon),
            _ => None,
        }
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_api())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Kind::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid kind {s:?}: expected KIND_NORMAL, KIND_EXTENSION or KIND_ADDON"
            ))
        })
    }
}

/// A Helm or image registry (unique per project by `name`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registry {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    pub root_url: String,
    /// Sensitive: omitted from responses unless `showSensitiveInfo=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Sensitive: omitted from responses unless `showSensitiveInfo=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// `HELM` or `IMAGE`.
    #[serde(rename = "type")]
    pub registry_type: String,
    /// Sensitive: omitted from responses unless `showSensitiveInfo=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cacerts: Option<String>,
    #[serde(default)]
    pub api_type: String,
    #[serde(default)]
    pub inventory_url: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, read_only)]
    pub create_time: Timestamp,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, read_only)]
    pub update_time: Timestamp,
}

impl Registry {
    /// A copy without the sensitive fields (what responses carry by default).
    pub fn redacted(&self) -> Registry {
        Registry {
            username: None,
            auth_token: None,
            cacerts: None,
            ..self.clone()
        }
    }
}

/// A parameter that a deployment may (or must) set in an application profile's values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParameterTemplate {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub default: String,
    /// `string`, `number` or `boolean`.
    #[serde(rename = "type")]
    pub param_type: String,
    #[serde(default)]
    pub validator: String,
    #[serde(default)]
    pub suggested_values: Vec<String>,
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub mandatory: bool,
}

/// A deployment package that must be deployed before an application profile can be.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentRequirement {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub deployment_profile_name: String,
}

/// A Kubernetes resource to ignore during deployment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceReference {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
}

/// A named set of values for an application (unique per application by `name`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    /// Raw YAML values.
    #[serde(default)]
    pub chart_values: String,
    #[serde(default)]
    pub parameter_templates: Vec<ParameterTemplate>,
    #[serde(default)]
    pub deployment_requirement: Vec<DeploymentRequirement>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, read_only)]
    pub create_time: Timestamp,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, read_only)]
    pub update_time: Timestamp,
}

/// An application (unique per project by `(name, version)`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Application {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub kind: Kind,
    #[serde(default)]
    pub chart_name: String,
    #[serde(default)]
    pub chart_version: String,
    #[serde(default)]
    pub helm_registry_name: String,
    #[serde(default)]
    pub image_registry_name: String,
    /// Canopy extension: the workload template of a native application (raw template text,
    /// see `docs/TEMPLATE-FORMAT.md`). When set, the chart fields are optional.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload_template: String,
    #[serde(default)]
    pub profiles: Vec<Profile>,
    #[serde(default)]
    pub default_profile_name: String,
    #[serde(default)]
    pub ignored_resources: Vec<ResourceReference>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, read_only)]
    pub create_time: Timestamp,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, read_only)]
    pub update_time: Timestamp,
}

impl Application {
    /// True for a native application (one with a workload template instead of a Helm chart).
    pub fn is_native(&self) -> bool {
        !self.workload_template.is_empty()
    }

    /// The profile of that name, if the application has one.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }
}

/// `(name, version)` of an application in a package.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationReference {
    pub name: String,
    pub version: String,
}

/// `name` requires `requires` (both applications of the same package).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationDependency {
    pub name: String,
    pub requires: String,
}

/// An artifact used by a package, with its purpose (`icon`, `thumbnail`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactReference {
    pub name: String,
    pub purpose: String,
}

/// A namespace created before the package's applications.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An API endpoint provided by an extension.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    pub service_name: String,
    pub external_path: String,
    pub internal_path: String,
    #[serde(default)]
    pub scheme: String,
    #[serde(default)]
    pub auth_type: String,
    #[serde(default)]
    pub app_name: String,
}

/// A UI extension provided by an extension package.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UiExtension {
    pub label: String,
    pub service_name: String,
    pub description: String,
    pub file_name: String,
    pub app_name: String,
    pub module_name: String,
}

/// An extension of the external API provided by a deployment package.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiExtension {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui_extension: Option<UiExtension>,
}

/// A named mapping of each application of a package to one of its profiles.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentProfile {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    /// Application name (or `name:version`) to application profile name.
    #[serde(default)]
    pub application_profiles: BTreeMap<String, String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, read_only)]
    pub create_time: Timestamp,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, read_only)]
    pub update_time: Timestamp,
}

/// A deployment package (unique per project by `(name, version)`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentPackage {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub kind: Kind,
    #[serde(default)]
    pub application_references: Vec<ApplicationReference>,
    #[serde(default)]
    pub is_deployed: bool,
    #[serde(default = "default_true")]
    pub is_visible: bool,
    #[serde(default)]
    pub profiles: Vec<DeploymentProfile>,
    #[serde(default)]
    pub default_profile_name: String,
    #[serde(default)]
    pub application_dependencies: Vec<ApplicationDependency>,
    #[serde(default)]
    pub extensions: Vec<ApiExtension>,
    #[serde(default)]
    pub artifacts: Vec<ArtifactReference>,
    #[serde(default)]
    pub default_namespaces: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub forbids_multiple_deployments: bool,
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, read_only)]
    pub create_time: Timestamp,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, read_only)]
    pub update_time: Timestamp,
}

impl DeploymentPackage {
    /// The deployment profile of that name, if any.
    pub fn profile(&self, name: &str) -> Option<&DeploymentProfile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// True when `self` and `other` differ only in the fields a deployed package may change
    /// (`isDeployed`, `kind`) or in output-only timestamps.
    pub fn same_content_as(&self, other: &DeploymentPackage) -> bool {
        let strip = |p: &DeploymentPackage| DeploymentPackage {
            is_deployed: false,
            kind: Kind::Normal,
            create_time: None,
            update_time: None,
            profiles: p
                .profiles
                .iter()
                .map(|dp| DeploymentProfile {
                    create_time: None,
                    update_time: None,
                    ..dp.clone()
                })
                .collect(),
            ..p.clone()
        };
        strip(self) == strip(other)
    }
}

/// A small file (icon, thumbnail, dashboard) stored in the catalog (unique per project by `name`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Artifact {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    pub mime_type: String,
    /// Content, base64 in JSON.
    #[serde(with = "base64_bytes")]
    #[schema(value_type = String, format = Byte)]
    pub artifact: Vec<u8>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, read_only)]
    pub create_time: Timestamp,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, read_only)]
    pub update_time: Timestamp,
}

/// Serde adapter: bytes as standard base64 strings.
pub mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD
            .decode(s.trim().as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("artifact is not valid base64: {e}")))
    }
}

impl Application {
    /// True when the two differ only in `kind` or output-only timestamps (the changes allowed to
    /// an application that is part of a deployed package).
    pub fn same_content_as(&self, other: &Application) -> bool {
        let strip = |a: &Application| Application {
            kind: Kind::Normal,
            create_time: None,
            update_time: None,
            profiles: a
                .profiles
                .iter()
                .map(|p| Profile {
                    create_time: None,
                    update_time: None,
                    ..p.clone()
                })
                .collect(),
            ..a.clone()
        };
        strip(self) == strip(other)
    }
}
