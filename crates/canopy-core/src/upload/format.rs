//! The YAML spelling of each entity, and the mapping to and from the catalog structs.
//!
//! The YAML keys differ from the REST/JSON ones in a few places (`userName`/`username`,
//! `caCerts`/`cacerts`, `helmRegistry`/`helmRegistryName`, `defaultProfile`/
//! `defaultProfileName`, `applications`/`applicationReferences`, deployment profiles'
//! `applicationProfiles` as a list of `{application, profile}` instead of a map, profile values
//! in a separate file named by `valuesFileName`; Canopy's extension `templateFileName` likewise
//! names the file of a native application's workload template). These structs are that spelling; reading goes
//! through them after the schema check (so their own deserialization is lenient), and writing
//! (export) serializes them. Aliases are already normalized by [`super::schema`].

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::catalog::{
    ApiExtension, Application, ApplicationDependency, ApplicationReference, Artifact,
    ArtifactReference, DeploymentPackage, DeploymentProfile, DeploymentRequirement, Kind,
    Namespace, ParameterTemplate, Profile, Registry, ResourceReference,
};

/// `schemaVersion` of every file Canopy writes (and the only one the schema accepts).
pub(crate) const SCHEMA_VERSION: &str = "0.1";
/// `$schema` of every file Canopy writes.
pub(crate) const SCHEMA_URL: &str = "https://schema.intel.com/catalog.orchestrator/0.1/schema";

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn default_true() -> bool {
    true
}

/// An entity document: the header keys, then the entity's own keys.
#[derive(Serialize)]
pub(crate) struct Doc<T> {
    #[serde(rename = "specSchema")]
    pub(crate) spec_schema: &'static str,
    #[serde(rename = "schemaVersion")]
    pub(crate) schema_version: &'static str,
    #[serde(rename = "$schema")]
    pub(crate) schema: &'static str,
    #[serde(flatten)]
    pub(crate) body: T,
}

impl<T> Doc<T> {
    pub(crate) fn new(spec_schema: &'static str, body: T) -> Doc<T> {
        Doc {
            spec_schema,
            schema_version: SCHEMA_VERSION,
            schema: SCHEMA_URL,
            body,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct YamlRegistry {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) display_name: String,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(rename = "type", default)]
    pub(crate) registry_type: String,
    #[serde(default)]
    pub(crate) root_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) inventory_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) api_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) auth_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_certs: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl YamlRegistry {
    pub(crate) fn into_registry(self) -> Registry {
        Registry {
            name: self.name,
            display_name: self.display_name,
            description: self.description,
            root_url: self.root_url,
            username: non_empty(self.user_name),
            auth_token: non_empty(self.auth_token),
            registry_type: if self.registry_type.is_empty() {
                "HELM".into()
            } else {
                self.registry_type
            },
            cacerts: non_empty(self.ca_certs),
            api_type: self.api_type,
            inventory_url: self.inventory_url,
            create_time: None,
            update_time: None,
        }
    }

    /// The exported form: never the credentials or CA certificates.
    pub(crate) fn from_registry(r: &Registry) -> YamlRegistry {
        YamlRegistry {
            name: r.name.clone(),
            display_name: r.display_name.clone(),
            description: r.description.clone(),
            registry_type: r.registry_type.clone(),
            root_url: r.root_url.clone(),
            inventory_url: r.inventory_url.clone(),
            api_type: r.api_type.clone(),
            user_name: None,
            auth_token: None,
            ca_certs: None,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct YamlParameterTemplate {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) display_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) default: String,
    #[serde(rename = "type", default)]
    pub(crate) param_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) validator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) suggested_values: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) secret: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) mandatory: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct YamlDeploymentRequirement {
    pub(crate) name: String,
    pub(crate) version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) deployment_profile_name: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct YamlResourceReference {
    pub(crate) name: String,
    pub(crate) kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) namespace: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct YamlProfile {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) display_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) values_file_name: Option<String>,
    /// Inline values (the schema allows them; Canopy writes a values file instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) chart_values: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) parameter_templates: Vec<YamlParameterTemplate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) deployment_requirement: Vec<YamlDeploymentRequirement>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct YamlApplication {
    pub(crate) name: String,
    pub(crate) version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) display_name: String,
    #[serde(default)]
    pub(crate) description: String,
    // Empty chart fields are left out of exports: only native applications have them empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) helm_registry: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) image_registry: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) chart_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) chart_version: String,
    /// Canopy extension: the file holding the workload template of a native application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) template_file_name: Option<String>,
    /// Canopy extension: the workload template inline (Canopy writes a file instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) workload_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) default_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) profiles: Vec<YamlProfile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) ignored_resources: Vec<YamlResourceReference>,
}

fn kind_from(s: Option<&str>) -> Result<Kind, String> {
    match s {
        None => Ok(Kind::Normal),
        Some(s) => {
            Kind::parse(s).ok_or_else(|| format!("/kind: {s:?} must be normal, extension or addon"))
        }
    }
}

fn kind_to(k: Kind) -> Option<String> {
    (k != Kind::Normal).then(|| k.as_str().to_string())
}

/// Files an application names, still to be found among the upload's files.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Profiles whose values are in a file: (profile index, `valuesFileName`).
    pub(crate) values: Vec<(usize, String)>,
    /// `templateFileName`, when the workload template is in a file.
    pub(crate) template: Option<String>,
}

impl YamlApplication {
    /// The application, and the values and template files it names (to be resolved by the
    /// caller against the files of the upload). The default profile is the first one when not
    /// given.
    pub(crate) fn into_application(self) -> Result<(Application, Pending), String> {
        let kind = kind_from(self.kind.as_deref())?;
        let mut pending = Pending::default();
        let workload_template = match (self.template_file_name, self.workload_template) {
            (Some(_), Some(_)) => {
                return Err(
                    "/templateFileName: give either templateFileName or workloadTemplate, not both"
                        .to_string(),
                );
            }
            (Some(file), None) => {
                pending.template = Some(file);
                String::new()
            }
            (None, inline) => inline.unwrap_or_default(),
        };
        let mut profiles = Vec::new();
        for (i, p) in self.profiles.into_iter().enumerate() {
            let chart_values = match (p.values_file_name, p.chart_values) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "/profiles/{i}: give either valuesFileName or chartValues, not both"
                    ));
                }
                (Some(file), None) => {
                    pending.values.push((i, file));
                    String::new()
                }
                (None, values) => values.unwrap_or_default(),
            };
            profiles.push(Profile {
                name: p.name,
                display_name: p.display_name,
                description: p.description,
                chart_values,
                parameter_templates: p
                    .parameter_templates
                    .into_iter()
                    .map(|t| ParameterTemplate {
                        name: t.name,
                        display_name: t.display_name,
                        default: t.default,
                        param_type: t.param_type,
                        validator: t.validator,
                        suggested_values: t.suggested_values,
                        secret: t.secret,
                        mandatory: t.mandatory,
                    })
                    .collect(),
                deployment_requirement: p
                    .deployment_requirement
                    .into_iter()
                    .map(|r| DeploymentRequirement {
                        name: r.name,
                        version: r.version,
                        deployment_profile_name: r.deployment_profile_name,
                    })
                    .collect(),
                create_time: None,
                update_time: None,
            });
        }
        let default_profile_name = match self.default_profile.filter(|d| !d.is_empty()) {
            Some(d) => d,
            None => profiles.first().map(|p| p.name.clone()).unwrap_or_default(),
        };
        let app = Application {
            name: self.name,
            version: self.version,
            display_name: self.display_name,
            description: self.description,
            kind,
            chart_name: self.chart_name,
            chart_version: self.chart_version,
            helm_registry_name: self.helm_registry,
            image_registry_name: self.image_registry,
            workload_template,
            profiles,
            default_profile_name,
            ignored_resources: self
                .ignored_resources
                .into_iter()
                .map(|r| ResourceReference {
                    name: r.name,
                    kind: r.kind,
                    namespace: r.namespace,
                })
                .collect(),
            create_time: None,
            update_time: None,
        };
        Ok((app, pending))
    }

    /// The exported form; `values_file` gives the values file name of each profile that has
    /// values (`None`: no values, no `valuesFileName`), `template_file` the file name of the
    /// workload template of a native application.
    pub(crate) fn from_application(
        a: &Application,
        values_file: impl Fn(&Profile) -> Option<String>,
        template_file: Option<String>,
    ) -> YamlApplication {
        YamlApplication {
            name: a.name.clone(),
            version: a.version.clone(),
            kind: kind_to(a.kind),
            display_name: a.display_name.clone(),
            description: a.description.clone(),
            helm_registry: a.helm_registry_name.clone(),
            image_registry: a.image_registry_name.clone(),
            chart_name: a.chart_name.clone(),
            chart_version: a.chart_version.clone(),
            template_file_name: template_file,
            workload_template: None,
            default_profile: Some(a.default_profile_name.clone()).filter(|d| !d.is_empty()),
            profiles: a
                .profiles
                .iter()
                .map(|p| YamlProfile {
                    name: p.name.clone(),
                    display_name: p.display_name.clone(),
                    description: p.description.clone(),
                    values_file_name: values_file(p),
                    chart_values: None,
                    parameter_templates: p
                        .parameter_templates
                        .iter()
                        .map(|t| YamlParameterTemplate {
                            name: t.name.clone(),
                            display_name: t.display_name.clone(),
                            default: t.default.clone(),
                            param_type: t.param_type.clone(),
                            validator: t.validator.clone(),
                            suggested_values: t.suggested_values.clone(),
                            secret: t.secret,
                            mandatory: t.mandatory,
                        })
                        .collect(),
                    deployment_requirement: p
                        .deployment_requirement
                        .iter()
                        .map(|r| YamlDeploymentRequirement {
                            name: r.name.clone(),
                            version: r.version.clone(),
                            deployment_profile_name: r.deployment_profile_name.clone(),
                        })
                        .collect(),
                })
                .collect(),
            ignored_resources: a
                .ignored_resources
                .iter()
                .map(|r| YamlResourceReference {
                    name: r.name.clone(),
                    kind: r.kind.clone(),
                    namespace: r.namespace.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct YamlApplicationProfile {
    pub(crate) application: String,
    pub(crate) profile: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct YamlDeploymentProfile {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) display_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) application_profiles: Vec<YamlApplicationProfile>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct YamlPackage {
    pub(crate) name: String,
    pub(crate) version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) display_name: String,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) applications: Vec<ApplicationReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) deployment_profiles: Vec<YamlDeploymentProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) default_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) application_dependencies: Vec<ApplicationDependency>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) default_namespaces: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) namespaces: Vec<Namespace>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) extensions: Vec<ApiExtension>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) artifacts: Vec<ArtifactReference>,
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub(crate) is_visible: bool,
    /// Read (the schema has it) but never exported: it is the source orchestrator's lock on
    /// the package, and carrying it over would lock an undeployed package on the target.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) is_deployed: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) forbids_multiple_deployments: bool,
}

impl YamlPackage {
    /// The package; the default deployment profile is the first one when not given.
    pub(crate) fn into_package(self) -> Result<DeploymentPackage, String> {
        let kind = kind_from(self.kind.as_deref())?;
        let mut profiles = Vec::new();
        for (i, dp) in self.deployment_profiles.into_iter().enumerate() {
            let mut map = BTreeMap::new();
            for (j, ap) in dp.application_profiles.into_iter().enumerate() {
                if map.insert(ap.application.clone(), ap.profile).is_some() {
                    return Err(format!(
                        "/deploymentProfiles/{i}/applicationProfiles/{j}: application {:?} is listed more than once",
                        ap.application
                    ));
                }
            }
            profiles.push(DeploymentProfile {
                name: dp.name,
                display_name: dp.display_name,
                description: dp.description,
                application_profiles: map,
                create_time: None,
                update_time: None,
            });
        }
        let default_profile_name = match self.default_profile.filter(|d| !d.is_empty()) {
            Some(d) => d,
            None => profiles.first().map(|p| p.name.clone()).unwrap_or_default(),
        };
        Ok(DeploymentPackage {
            name: self.name,
            version: self.version,
            display_name: self.display_name,
            description: self.description,
            kind,
            application_references: self.applications,
            is_deployed: self.is_deployed,
            is_visible: self.is_visible,
            profiles,
            default_profile_name,
            application_dependencies: self.application_dependencies,
            extensions: self.extensions,
            artifacts: self.artifacts,
            default_namespaces: self.default_namespaces,
            forbids_multiple_deployments: self.forbids_multiple_deployments,
            namespaces: self.namespaces,
            create_time: None,
            update_time: None,
        })
    }

    pub(crate) fn from_package(p: &DeploymentPackage) -> YamlPackage {
        YamlPackage {
            name: p.name.clone(),
            version: p.version.clone(),
            kind: kind_to(p.kind),
            display_name: p.display_name.clone(),
            description: p.description.clone(),
            applications: p.application_references.clone(),
            deployment_profiles: p
                .profiles
                .iter()
                .map(|dp| YamlDeploymentProfile {
                    name: dp.name.clone(),
                    display_name: dp.display_name.clone(),
                    description: dp.description.clone(),
                    application_profiles: dp
                        .application_profiles
                        .iter()
                        .map(|(a, p)| YamlApplicationProfile {
                            application: a.clone(),
                            profile: p.clone(),
                        })
                        .collect(),
                })
                .collect(),
            default_profile: Some(p.default_profile_name.clone()).filter(|d| !d.is_empty()),
            application_dependencies: p.application_dependencies.clone(),
            default_namespaces: p.default_namespaces.clone(),
            namespaces: p.namespaces.clone(),
            extensions: p.extensions.clone(),
            artifacts: p.artifacts.clone(),
            is_visible: p.is_visible,
            is_deployed: false,
            forbids_multiple_deployments: p.forbids_multiple_deployments,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct YamlArtifact {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) display_name: String,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) mime_type: String,
    /// Base64 of the content.
    #[serde(default)]
    pub(crate) artifact: String,
}

impl YamlArtifact {
    pub(crate) fn into_artifact(self) -> Result<Artifact, String> {
        // Long base64 is often wrapped over several lines; whitespace is not part of it.
        let compact: Vec<u8> = self
            .artifact
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let bytes = STANDARD
            .decode(&compact)
            .map_err(|e| format!("/artifact: not valid base64: {e}"))?;
        Ok(Artifact {
            name: self.name,
            display_name: self.display_name,
            description: self.description,
            mime_type: self.mime_type,
            artifact: bytes,
            create_time: None,
            update_time: None,
        })
    }

    pub(crate) fn from_artifact(a: &Artifact) -> YamlArtifact {
        YamlArtifact {
            name: a.name.clone(),
            display_name: a.display_name.clone(),
            description: a.description.clone(),
            mime_type: a.mime_type.clone(),
            artifact: STANDARD.encode(&a.artifact),
        }
    }
}
