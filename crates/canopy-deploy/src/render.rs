//! A deployment package, a deployment profile and override values → what every targeted edge
//! runs: one [`canopy_proto::AppInstance`] per application (containers and virtual machines
//! rendered from the native workload template, namespace, ordering, pull credentials and a spec
//! hash that changes exactly when something the edge must act on changes).
//!
//! This is where section 6's create steps 5–6 happen for Canopy: the deployment profile picks
//! each application's profile, masked secrets sent back on update are restored, parameter
//! templates coerce and require values, and the reference's deploy-time rules pick the
//! namespace (`targetNamespace` › package `defaultNamespaces` › deployment name). Helm-chart
//! applications go through the same steps up to the values, then become a
//! [`crate::helm::HelmRequest`]: the control plane renders those outside its writers' lock and
//! renders the deployment again with the results ([`PackageInput::helm`]), see [`crate::helm`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use canopy_core::catalog::{Application, DeploymentPackage, DeploymentProfile, Profile, Registry};
use canopy_core::policy::ProjectPolicy;
use canopy_core::template::{self, RenderContext};
use canopy_proto::{AppInstance, DeploymentInstance};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::DeployError;
use crate::helm::{HelmRenders, HelmRequest};
use crate::model::{AppWarning, Deployment, OverrideValues};

/// What rendering needs from the catalog, already looked up by the server.
#[derive(Debug, Clone)]
pub struct PackageInput<'a> {
    pub package: &'a DeploymentPackage,
    /// The package's applications (those of `package.applicationReferences`).
    pub apps: Vec<&'a Application>,
    /// The project's registries by name, *with* their credentials.
    pub registries: &'a BTreeMap<String, Registry>,
    /// The project's name.
    pub project: &'a str,
    /// The project's policy, enforced on every app rendered (see [`ProjectPolicy::enforce`]).
    pub policy: &'a ProjectPolicy,
    /// The organization owning the project (`%OrgName%` of Helm chart values).
    pub org: &'a str,
    /// Helm applications already rendered, by [`HelmRequest::fingerprint`]; a Helm application
    /// without a result here is listed in [`Rendered::helm_pending`].
    pub helm: Option<&'a HelmRenders>,
}

/// A deployment package that must be deployed for this one (from the selected application
/// profiles' `deploymentRequirement`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    /// The (first) application whose profile requires it.
    pub app: String,
    pub package: String,
    pub version: String,
    /// The required package's deployment profile; empty = its default.
    pub profile: String,
}

/// The result of rendering a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The deployment profile used (the request's, or the package default; empty when the
    /// package has no deployment profiles).
    pub profile_name: String,
    /// One per application, in the package's order.
    pub apps: Vec<AppInstance>,
    /// The override values with real secret values and coerced types: what to store.
    pub override_values: Vec<OverrideValues>,
    /// The same with secret values replaced by `********`: what responses show.
    pub masked_override_values: Vec<OverrideValues>,
    /// Packages that must be deployed first (distinct by package, version and profile).
    pub requirements: Vec<Requirement>,
    /// Helm applications with no result in [`PackageInput::helm`]: render them and render the
    /// deployment again. While this is not empty, `apps` must not be handed to edges.
    pub helm_pending: Vec<HelmRequest>,
    /// What the Helm applications' charts hold that edges do not run as Kubernetes would.
    pub warnings: Vec<AppWarning>,
    /// The rendered manifests of the Helm applications, by application name.
    pub manifests: BTreeMap<String, Arc<str>>,
}

impl Rendered {
    /// The [`DeploymentInstance`] an edge runs, with only the applications in `only_apps`
    /// (those targeted at that edge).
    pub fn instance(
        &self,
        input: &PackageInput<'_>,
        deployment_id: &str,
        generation: u64,
        only_apps: &[String],
    ) -> DeploymentInstance {
        DeploymentInstance {
            deployment_id: deployment_id.to_string(),
            project: input.project.to_string(),
            package: input.package.name.clone(),
            package_version: input.package.version.clone(),
            generation,
            apps: self
                .apps
                .iter()
                .filter(|a| only_apps.contains(&a.name))
                .cloned()
                .collect(),
        }
    }
}

/// Renders a deployment (`d` normalized by [`crate::validate::normalize_request`]) for the
/// package in `input`:
///
/// 1. deployment profile: `d.profileName`, or the package default; one the package does not
///    have → NotFound;
/// 2. each application's profile: the deployment profile's `applicationProfiles`
///    (`name:version` or `name` key), else the application's default profile;
/// 3. an override for an application not in the package → InvalidArgument;
/// 4. override values: masked secrets restored from `previous_overrides` (the real values of
///    the version being updated), parameter templates applied (types coerced; missing
///    mandatory ones → InvalidArgument naming application, profile and parameters);
/// 5. the workload template rendered (errors → InvalidArgument naming application, profile
///    and field), with `deployment_id`, `deployment_name`, the app's namespace, the project and
///    the app's image registry; a Helm application's result taken from `input.helm` (its
///    pods, warnings and manifest), or its request listed in `helm_pending`;
/// 6. the project policy applied to each app's workloads (default limits filled in; an image,
///    host port, limit or VM file it does not allow → InvalidArgument naming application,
///    profile, field, value and rule).
pub fn render_deployment(
    input: &PackageInput<'_>,
    d: &Deployment,
    deployment_id: &str,
    deployment_name: &str,
    previous_overrides: Option<&[OverrideValues]>,
) -> Result<Rendered, DeployError> {
    let pkg = input.package;
    let pkg_key = format!("{}:{}", pkg.name, pkg.version);
    let profile_name = if d.profile_name.is_empty() {
        pkg.default_profile_name.clone()
    } else {
        d.profile_name.clone()
    };
    let dp = if profile_name.is_empty() {
        None
    } else {
        Some(pkg.profile(&profile_name).ok_or_else(|| {
            DeployError::not_found(format!(
                "deployment profile {profile_name} not found in deployment package {pkg_key}"
            ))
        })?)
    };

    // The package's applications, in its order.
    let mut apps: Vec<&Application> = Vec::with_capacity(pkg.application_references.len());
    for r in &pkg.application_references {
        let app = input
            .apps
            .iter()
            .find(|a| a.name == r.name && a.version == r.version)
            .ok_or_else(|| {
                DeployError::not_found(format!(
                    "application {}:{} of deployment package {pkg_key} not found",
                    r.name, r.version
                ))
            })?;
        apps.push(app);
    }

    for (i, ov) in d.override_values.iter().enumerate() {
        if !apps.iter().any(|a| a.name == ov.app_name) {
            return Err(DeployError::invalid(format!(
                "overrideValues[{i}].appName: application {} is not part of deployment package \
                 {pkg_key} (its applications: {})",
                ov.app_name,
                apps.iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }

    let mut rendered_apps = Vec::with_capacity(apps.len());
    let mut stored = Vec::with_capacity(d.override_values.len());
    let mut masked = Vec::with_capacity(d.override_values.len());
    let mut requirements: Vec<Requirement> = Vec::new();
    let mut helm_pending = Vec::new();
    let mut warnings = Vec::new();
    let mut manifests = BTreeMap::new();

    for app in &apps {
        let app_key = format!("{}:{}", app.name, app.version);
        let app_profile_name = application_profile_name(dp, app);
        let profile: Option<&Profile> = if app_profile_name.is_empty() {
            None
        } else {
            Some(app.profile(&app_profile_name).ok_or_else(|| {
                DeployError::not_found(format!(
                    "application {app_key} has no profile {app_profile_name} (selected by \
                     deployment profile {profile_name:?} of deployment package {pkg_key})"
                ))
            })?)
        };
        let templates = profile.map_or(&[][..], |p| &p.parameter_templates[..]);

        let ov = d.override_values.iter().find(|o| o.app_name == app.name);
        let mut values = ov.and_then(|o| o.values.clone()).unwrap_or(Value::Null);
        let previous = previous_overrides
            .and_then(|p| p.iter().find(|o| o.app_name == app.name))
            .and_then(|o| o.values.as_ref())
            .unwrap_or(&Value::Null);
        template::unmask_secrets(templates, &mut values, previous);
        check_mandatory(templates, &values, &app_key, &app_profile_name)?;
        template::apply_parameter_templates(templates, &mut values)
            .map_err(|e| DeployError::invalid(e.in_app(app, &app_profile_name).to_string()))?;

        if let Some(ov) = ov {
            let mut shown = values.clone();
            template::mask_secrets(templates, &mut shown);
            let keep = ov.values.is_some();
            stored.push(OverrideValues {
                values: keep.then(|| values.clone()),
                ..ov.clone()
            });
            masked.push(OverrideValues {
                values: keep.then_some(shown),
                ..ov.clone()
            });
        }

        let namespace = ov
            .map(|o| o.target_namespace.clone())
            .filter(|n| !n.is_empty())
            .or_else(|| {
                pkg.default_namespaces
                    .get(&app.name)
                    .or_else(|| pkg.default_namespaces.get(&app_key))
                    .cloned()
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| deployment_name.to_string());

        let registry = if app.image_registry_name.is_empty() {
            None
        } else {
            Some(
                input
                    .registries
                    .get(&app.image_registry_name)
                    .ok_or_else(|| {
                        DeployError::not_found(format!(
                            "image registry {} of application {app_key} not found",
                            app.image_registry_name
                        ))
                    })?,
            )
        };
        let mut pods = None;
        let workloads = if app.is_native() {
            let ctx = RenderContext {
                deployment_id: deployment_id.to_string(),
                deployment_name: deployment_name.to_string(),
                namespace: namespace.clone(),
                project: input.project.to_string(),
                image_registry_url: registry.map(|r| r.root_url.clone()),
                policy: Some(input.policy.clone()),
            };
            template::render(app, &app_profile_name, &values, &ctx)
                .map_err(|e| DeployError::invalid(e.to_string()))?
        } else {
            let helm_registry = input
                .registries
                .get(&app.helm_registry_name)
                .ok_or_else(|| {
                    DeployError::not_found(format!(
                        "helm registry {:?} of application {app_key} not found",
                        app.helm_registry_name
                    ))
                })?;
            let req = HelmRequest {
                app: app.name.clone(),
                app_version: app.version.clone(),
                profile_name: app_profile_name.clone(),
                profile: profile.cloned(),
                overrides: values.clone(),
                namespace: namespace.clone(),
                release: crate::status::app_id(deployment_id, &app.name),
                org: input.org.to_string(),
                project: input.project.to_string(),
                helm_registry: helm_registry.clone(),
                image_registry: registry.cloned(),
                chart_name: app.chart_name.clone(),
                chart_version: app.chart_version.clone(),
                ignored_resources: app.ignored_resources.clone(),
                policy: input.policy.clone(),
            };
            match input.helm.and_then(|h| h.get(&req.fingerprint())) {
                Some(done) => {
                    pods = Some(done.pods.clone());
                    warnings.extend(done.warnings.iter().cloned());
                    manifests.insert(app.name.clone(), Arc::clone(&done.manifest));
                }
                None => helm_pending.push(req),
            }
            template::Workloads::default()
        };

        let mut depends_on: Vec<String> = Vec::new();
        for dep in pkg
            .application_dependencies
            .iter()
            .filter(|x| x.name == app.name)
        {
            if !depends_on.contains(&dep.requires) {
                depends_on.push(dep.requires.clone());
            }
        }
        let registry_auth = registry.and_then(template::image_registry_auth);

        let mut instance = AppInstance {
            name: app.name.clone(),
            version: app.version.clone(),
            namespace,
            depends_on,
            spec_hash: String::new(),
            containers: workloads.containers,
            vms: workloads.vms,
            pods,
            registry_auth,
        };
        instance.spec_hash = spec_hash(&instance);
        rendered_apps.push(instance);

        for r in profile.map_or(&[][..], |p| &p.deployment_requirement[..]) {
            let same = |x: &Requirement| {
                x.package == r.name
                    && x.version == r.version
                    && x.profile == r.deployment_profile_name
            };
            if !requirements.iter().any(same) {
                requirements.push(Requirement {
                    app: app.name.clone(),
                    package: r.name.clone(),
                    version: r.version.clone(),
                    profile: r.deployment_profile_name.clone(),
                });
            }
        }
    }

    Ok(Rendered {
        profile_name,
        apps: rendered_apps,
        override_values: stored,
        masked_override_values: masked,
        requirements,
        helm_pending,
        warnings,
        manifests,
    })
}

/// The profile of `app` that deployment profile `dp` selects: its `applicationProfiles` entry
/// for `name:version`, else for `name`, else the application's default profile (empty when it
/// has none).
pub fn application_profile_name(dp: Option<&DeploymentProfile>, app: &Application) -> String {
    let app_key = format!("{}:{}", app.name, app.version);
    dp.and_then(|dp| {
        dp.application_profiles
            .get(&app_key)
            .or_else(|| dp.application_profiles.get(&app.name))
    })
    .cloned()
    .unwrap_or_else(|| app.default_profile_name.clone())
}

/// Reports every mandatory parameter without a value at once (the reference's "application X
/// is missing mandatory override profile values"), naming the profile and the parameters.
fn check_mandatory(
    templates: &[canopy_core::catalog::ParameterTemplate],
    values: &Value,
    app_key: &str,
    profile: &str,
) -> Result<(), DeployError> {
    let mut missing = Vec::new();
    for t in templates.iter().filter(|t| t.mandatory) {
        let mut scratch = values.clone();
        if let Err(e) = template::apply_parameter_templates(std::slice::from_ref(t), &mut scratch)
            && e.message.contains("mandatory")
        {
            missing.push(e.field);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let profile = if profile.is_empty() {
        String::new()
    } else {
        format!(" (profile {profile})")
    };
    Err(DeployError::invalid(format!(
        "application {app_key} is missing mandatory override profile values: {}{profile}",
        missing.join(", ")
    )))
}

/// A stable hash of everything an edge acts on for one application: its containers, VMs,
/// namespace, dependencies and pull credentials (the registry server and username, and a hash
/// of the password so a credential change rolls out without the password being derivable from
/// the label). Hex SHA-256 over canonical JSON (object keys sorted), so it does not depend on
/// map ordering or serde features. VMs are hashed only when the app has some, so the hash of a
/// containers-only app is what it was before VMs existed (no needless restart on upgrade).
pub fn spec_hash(app: &AppInstance) -> String {
    let auth = app.registry_auth.as_ref().map(|a| {
        serde_json::json!({
            "server": a.server,
            "username": a.username,
            "passwordSha256": hex(&Sha256::digest(a.password.as_bytes())),
        })
    });
    let mut doc = serde_json::json!({
        "containers": app.containers,
        "namespace": app.namespace,
        "dependsOn": app.depends_on,
        "registryAuth": auth,
    });
    if !app.vms.is_empty() {
        doc["vms"] = serde_json::json!(app.vms);
    }
    // Likewise pods only for Helm applications.
    if let Some(pods) = &app.pods {
        doc["pods"] = serde_json::json!(pods);
    }
    let mut text = String::new();
    canonical_json(&doc, &mut text);
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// JSON text with object keys in sorted order at every level.
pub(crate) fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let keys: BTreeSet<&String> = map.keys().collect();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use canopy_core::catalog::{
        ApplicationDependency, ApplicationReference, DeploymentProfile, DeploymentRequirement,
        ParameterTemplate,
    };
    use canopy_core::template::SECRET_MASK;
    use serde_json::json;

    const TEMPLATE: &str = r#"containers:
  - name: web
    image: "team/web:{{ values.tag }}"
    env:
      PASSWORD: "{{ values.db.password }}"
      DEPLOYMENT: "{{ deployment.name }}"
      NAMESPACE: "{{ app.namespace }}"
      DEBUG: "{{ values.debug }}"
    ports:
      - containerPort: 80
        hostPort: {{ values.port }}
"#;

    fn param(name: &str, ty: &str) -> ParameterTemplate {
        ParameterTemplate {
            name: name.into(),
            param_type: ty.into(),
            ..Default::default()
        }
    }

    fn app(name: &str) -> Application {
        let mut port = param("port", "number");
        port.mandatory = true;
        let mut password = param("db.password", "string");
        password.secret = true;
        password.mandatory = true;
        let mut debug = param("debug", "boolean");
        debug.default = "false".into();
        Application {
            name: name.into(),
            version: "1.0.0".into(),
            image_registry_name: "hub".into(),
            workload_template: TEMPLATE.into(),
            default_profile_name: "default".into(),
            profiles: vec![
                Profile {
                    name: "default".into(),
                    chart_values: "tag: \"1.0\"\nport: 8080\n".into(),
                    parameter_templates: vec![port.clone(), password.clone(), debug.clone()],
                    ..Default::default()
                },
                Profile {
                    name: "big".into(),
                    chart_values: "tag: \"2.0\"\nport: 9090\ndb:\n  password: fromprofile\n".into(),
                    parameter_templates: vec![debug],
                    deployment_requirement: vec![
                        DeploymentRequirement {
                            name: "base".into(),
                            version: "1.0".into(),
                            deployment_profile_name: String::new(),
                        },
                        DeploymentRequirement {
                            name: "base".into(),
                            version: "1.0".into(),
                            deployment_profile_name: String::new(),
                        },
                    ],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn package() -> DeploymentPackage {
        DeploymentPackage {
            name: "shop".into(),
            version: "1.0".into(),
            application_references: vec![
                ApplicationReference {
                    name: "web".into(),
                    version: "1.0.0".into(),
                },
                ApplicationReference {
                    name: "api".into(),
                    version: "1.0.0".into(),
                },
            ],
            profiles: vec![
                DeploymentProfile {
                    name: "standard".into(),
                    ..Default::default()
                },
                DeploymentProfile {
                    name: "large".into(),
                    application_profiles: [
                        ("web".to_string(), "big".to_string()),
                        ("api:1.0.0".to_string(), "big".to_string()),
                    ]
                    .into(),
                    ..Default::default()
                },
            ],
            default_profile_name: "standard".into(),
            application_dependencies: vec![ApplicationDependency {
                name: "web".into(),
                requires: "api".into(),
            }],
            default_namespaces: [("api".to_string(), "backend".to_string())].into(),
            ..Default::default()
        }
    }

    fn registries() -> BTreeMap<String, Registry> {
        [(
            "hub".to_string(),
            Registry {
                name: "hub".into(),
                root_url: "https://registry.example.com/team-space".into(),
                registry_type: "IMAGE".into(),
                username: Some("robot".into()),
                auth_token: Some("t0ken".into()),
                ..Default::default()
            },
        )]
        .into()
    }

    fn overrides(port: Value, password: &str) -> Vec<OverrideValues> {
        ["web", "api"]
            .iter()
            .map(|a| OverrideValues {
                app_name: a.to_string(),
                target_namespace: String::new(),
                values: Some(json!({"port": port.clone(), "db": {"password": password}})),
            })
            .collect()
    }

    struct Fixture {
        package: DeploymentPackage,
        web: Application,
        api: Application,
        registries: BTreeMap<String, Registry>,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                package: package(),
                web: app("web"),
                api: app("api"),
                registries: registries(),
            }
        }

        fn run(
            &self,
            d: &Deployment,
            previous: Option<&[OverrideValues]>,
        ) -> Result<Rendered, DeployError> {
            self.run_previous(&ProjectPolicy::default(), d, previous)
        }

        fn run_with(
            &self,
            policy: &ProjectPolicy,
            d: &Deployment,
        ) -> Result<Rendered, DeployError> {
            self.run_previous(policy, d, None)
        }

        fn run_previous(
            &self,
            policy: &ProjectPolicy,
            d: &Deployment,
            previous: Option<&[OverrideValues]>,
        ) -> Result<Rendered, DeployError> {
            let input = PackageInput {
                package: &self.package,
                apps: vec![&self.web, &self.api],
                registries: &self.registries,
                project: "default",
                policy,
                org: "default",
                helm: None,
            };
            render_deployment(&input, d, "d-1", "deployment-abcde", previous)
        }
    }

    fn deployment(ov: Vec<OverrideValues>) -> Deployment {
        Deployment {
            app_name: "shop".into(),
            app_version: "1.0".into(),
            override_values: ov,
            ..Default::default()
        }
    }

    #[test]
    fn renders_with_coercion_namespaces_and_auth() {
        let f = Fixture::new();
        let mut ov = overrides(json!("8081"), "s3cret");
        ov[0].target_namespace = "front".into();
        let r = f.run(&deployment(ov), None).unwrap();
        assert_eq!(r.profile_name, "standard");
        assert_eq!(r.apps.len(), 2);
        let web = &r.apps[0];
        assert_eq!(web.name, "web");
        assert_eq!(web.namespace, "front", "targetNamespace wins");
        assert_eq!(
            r.apps[1].namespace, "backend",
            "package defaultNamespaces next"
        );
        assert_eq!(web.depends_on, vec!["api".to_string()]);
        assert!(r.apps[1].depends_on.is_empty());
        let c = &web.containers[0];
        assert_eq!(c.image, "registry.example.com/team-space/team/web:1.0");
        assert_eq!(c.ports[0].host_port, Some(8081), "coerced from a string");
        assert_eq!(c.env["PASSWORD"], "s3cret");
        assert_eq!(c.env["DEPLOYMENT"], "deployment-abcde");
        assert_eq!(c.env["NAMESPACE"], "front");
        assert_eq!(c.env["DEBUG"], "false", "parameter default");
        let auth = web.registry_auth.as_ref().unwrap();
        assert_eq!(auth.server, "registry.example.com");
        assert_eq!(auth.username, "robot");
        assert_eq!(auth.password, "t0ken");
        assert_eq!(web.spec_hash.len(), 64);
        // Stored values are the real, coerced ones; the masked copy hides the secret.
        assert_eq!(
            r.override_values[0].values,
            Some(json!({"port": 8081, "db": {"password": "s3cret"}}))
        );
        assert_eq!(
            r.masked_override_values[0].values,
            Some(json!({"port": 8081, "db": {"password": SECRET_MASK}}))
        );
        assert_eq!(r.masked_override_values[0].target_namespace, "front");
        assert!(r.requirements.is_empty());
        // Deterministic.
        let again = f
            .run(
                &deployment({
                    let mut ov = overrides(json!("8081"), "s3cret");
                    ov[0].target_namespace = "front".into();
                    ov
                }),
                None,
            )
            .unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn namespace_falls_back_to_deployment_name() {
        let mut f = Fixture::new();
        f.package.default_namespaces.clear();
        let r = f.run(&deployment(overrides(json!(1), "x")), None).unwrap();
        assert!(r.apps.iter().all(|a| a.namespace == "deployment-abcde"));
    }

    #[test]
    fn profile_selection() {
        let f = Fixture::new();
        let mut d = deployment(vec![]);
        d.profile_name = "large".into();
        let r = f.run(&d, None).unwrap();
        assert_eq!(r.profile_name, "large");
        assert_eq!(
            r.apps[0].containers[0].image,
            "registry.example.com/team-space/team/web:2.0"
        );
        assert_eq!(r.apps[1].containers[0].ports[0].host_port, Some(9090));
        assert_eq!(
            r.requirements,
            vec![Requirement {
                app: "web".into(),
                package: "base".into(),
                version: "1.0".into(),
                profile: String::new(),
            }],
            "deduplicated across profiles and apps"
        );
        assert!(r.override_values.is_empty());

        d.profile_name = "nope".into();
        let e = f.run(&d, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(
            e.message,
            "deployment profile nope not found in deployment package shop:1.0"
        );
    }

    #[test]
    fn mandatory_missing_names_app_profile_and_params() {
        let f = Fixture::new();
        let e = f.run(&deployment(vec![]), None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert_eq!(
            e.message,
            "application web:1.0.0 is missing mandatory override profile values: values.port, \
             values.db.password (profile default)"
        );
        let mut ov = overrides(json!(1), " ");
        ov.truncate(1);
        let e = f.run(&deployment(ov), None).unwrap_err();
        assert!(e.message.contains("values.db.password"), "{e}");
        assert!(!e.message.contains("values.port"), "{e}");
    }

    #[test]
    fn coercion_error_names_field() {
        let f = Fixture::new();
        let e = f
            .run(&deployment(overrides(json!("eighty"), "x")), None)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(
            e.message
                .starts_with("application web:1.0.0 profile default values.port:"),
            "{e}"
        );
        assert!(e.message.contains("not a number"), "{e}");
    }

    #[test]
    fn a_secret_parameters_value_is_not_in_its_coercion_error() {
        let mut f = Fixture::new();
        f.web.profiles[0].parameter_templates[0].secret = true;
        let e = f
            .run(&deployment(overrides(json!("SECRET-80"), "x")), None)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(!e.message.contains("SECRET-80"), "{e}");
        assert!(
            e.message
                .starts_with("application web:1.0.0 profile default values.port: secret parameter \"port\" must be a number"),
            "{e}"
        );
    }

    #[test]
    fn the_project_policy_applies_to_every_app() {
        let f = Fixture::new();
        let policy: ProjectPolicy = serde_json::from_value(json!({
            "allowedImageRegistries": ["registry.example.com/team-space"],
            "allowedHostPorts": {"min": 8000, "max": 8999},
            "defaultResources": {"cpus": 0.5, "memory": "128Mi"}
        }))
        .unwrap();
        let r = f
            .run_with(&policy, &deployment(overrides(json!(8081), "pw")))
            .unwrap();
        for a in &r.apps {
            assert_eq!(a.containers[0].cpus, Some(0.5), "{}", a.name);
            assert_eq!(a.containers[0].memory_bytes, Some(128 << 20), "{}", a.name);
            assert_eq!(spec_hash(a), a.spec_hash, "the hash covers the defaults");
        }
        let unlimited = f
            .run(&deployment(overrides(json!(8081), "pw")), None)
            .unwrap();
        assert_ne!(unlimited.apps[0].spec_hash, r.apps[0].spec_hash);
        // The second app breaks it: named, with its field, value and the rule.
        let mut ov = overrides(json!(8081), "pw");
        ov[1].values = Some(json!({"port": 9091, "db": {"password": "pw"}}));
        let e = f.run_with(&policy, &deployment(ov)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert_eq!(
            e.message,
            "application api:1.0.0 profile default containers[0].ports[0].hostPort: host port \
             9091 is not allowed by the project policy: allowedHostPorts is 8000-8999"
        );
        let strict: ProjectPolicy = serde_json::from_value(
            json!({"allowedImageRegistries": ["registry.example.com/other"]}),
        )
        .unwrap();
        let e = f
            .run_with(&strict, &deployment(overrides(json!(8081), "pw")))
            .unwrap_err();
        assert!(
            e.message.contains("containers[0].image: \"registry.example.com/team-space/team/web:1.0\" is not allowed by the project policy: allowedImageRegistries is registry.example.com/other"),
            "{e}"
        );
    }

    #[test]
    fn render_error_names_field() {
        let f = Fixture::new();
        let e = f
            .run(&deployment(overrides(json!(70000), "x")), None)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("application web:1.0.0"), "{e}");
        assert!(e.message.contains("hostPort"), "{e}");
    }

    #[test]
    fn secrets_unmasked_from_previous() {
        let f = Fixture::new();
        let first = f
            .run(&deployment(overrides(json!(1), "s3cret")), None)
            .unwrap();
        // A client GETs (masked) and PUTs it back with another port.
        let mut sent = first.masked_override_values.clone();
        for o in &mut sent {
            o.values.as_mut().unwrap()["port"] = json!(2);
        }
        let second = f
            .run(&deployment(sent.clone()), Some(&first.override_values))
            .unwrap();
        assert_eq!(second.apps[0].containers[0].env["PASSWORD"], "s3cret");
        assert_eq!(
            second.override_values[0].values,
            Some(json!({"port": 2, "db": {"password": "s3cret"}}))
        );
        assert_eq!(
            second.masked_override_values[0].values.as_ref().unwrap()["db"]["password"],
            SECRET_MASK
        );
        assert_ne!(first.apps[0].spec_hash, second.apps[0].spec_hash);
        // Without previous values, a mask is not a value: the mandatory secret is missing.
        let e = f.run(&deployment(sent), None).unwrap_err();
        assert!(e.message.contains("values.db.password"), "{e}");
    }

    #[test]
    fn unknown_override_app_refused() {
        let f = Fixture::new();
        let mut ov = overrides(json!(1), "x");
        ov.push(OverrideValues {
            app_name: "ghost".into(),
            target_namespace: "x".into(),
            values: None,
        });
        let e = f.run(&deployment(ov), None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(
            e.message.starts_with(
                "overrideValues[2].appName: application ghost is not part of deployment package shop:1.0"
            ),
            "{e}"
        );
    }

    #[test]
    fn helm_apps_are_rendered_in_two_passes() {
        use crate::helm::{HelmRendered, HelmRenders};
        let mut f = Fixture::new();
        f.api.workload_template.clear();
        f.api.chart_name = "api".into();
        f.api.chart_version = "0.1.0".into();
        f.api.helm_registry_name = "charts".into();
        f.registries.insert(
            "charts".into(),
            Registry {
                name: "charts".into(),
                root_url: "oci://127.0.0.1:5000/charts".into(),
                registry_type: "HELM".into(),
                ..Default::default()
            },
        );
        let d = deployment(overrides(json!("8080"), "pw"));
        // Pass 1: the Helm application is listed, with coerced values and the real secret.
        let first = f.run(&d, None).unwrap();
        assert_eq!(first.helm_pending.len(), 1);
        let req = &first.helm_pending[0];
        assert_eq!(req.app_key(), "api:1.0.0");
        assert_eq!(req.namespace, "backend");
        assert_eq!(req.release, crate::status::app_id("d-1", "api"));
        assert_eq!(req.overrides["port"], json!(8080));
        assert_eq!(req.overrides["db"]["password"], json!("pw"));
        assert!(first.apps[1].pods.is_none());

        // Pass 2 with the result: pods, warnings and manifest taken from it.
        let pods = canopy_proto::pods::PodApp::default();
        let done = HelmRendered {
            fingerprint: req.fingerprint(),
            pods: pods.clone(),
            warnings: vec![AppWarning {
                app_name: "api".into(),
                kind: "Ingress".into(),
                name: "api".into(),
                template: "templates/ingress.yaml".into(),
                message: "skipped".into(),
            }],
            manifest: Arc::from("kind: Pod\n"),
            chart_digest: "sha256:00".into(),
            render_key: "k".into(),
        };
        let renders: HelmRenders = [(done.fingerprint.clone(), Arc::new(done))].into();
        let policy = ProjectPolicy::default();
        let input = PackageInput {
            package: &f.package,
            apps: vec![&f.web, &f.api],
            registries: &f.registries,
            project: "default",
            policy: &policy,
            org: "default",
            helm: Some(&renders),
        };
        let second = render_deployment(&input, &d, "d-1", "deployment-abcde", None).unwrap();
        assert!(second.helm_pending.is_empty());
        assert_eq!(second.apps[1].pods, Some(pods));
        assert!(second.apps[1].containers.is_empty());
        assert_eq!(second.warnings.len(), 1);
        assert_eq!(&*second.manifests["api"], "kind: Pod\n");
        assert_ne!(first.apps[1].spec_hash, second.apps[1].spec_hash);

        // Other values: another request, so the old result is not used for them.
        let other = deployment(overrides(json!(9090), "pw"));
        let third = render_deployment(&input, &other, "d-1", "deployment-abcde", None).unwrap();
        assert_eq!(third.helm_pending.len(), 1);

        // A wrong override type is refused before anything is rendered.
        let e = f
            .run(&deployment(overrides(json!("eighty"), "pw")), None)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("values.port"), "{e}");
    }

    #[test]
    fn missing_catalog_pieces() {
        let mut f = Fixture::new();
        f.registries.clear();
        let e = f
            .run(&deployment(overrides(json!(1), "x")), None)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("image registry hub"), "{e}");

        let mut f = Fixture::new();
        f.api.version = "2.0.0".into();
        let e = f
            .run(&deployment(overrides(json!(1), "x")), None)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("application api:1.0.0"), "{e}");
    }

    #[test]
    fn hash_tracks_credentials_not_in_clear() {
        let f = Fixture::new();
        let a = f.run(&deployment(overrides(json!(1), "x")), None).unwrap();
        let mut g = Fixture::new();
        g.registries.get_mut("hub").unwrap().auth_token = Some("rotated".into());
        let b = g.run(&deployment(overrides(json!(1), "x")), None).unwrap();
        assert_ne!(a.apps[0].spec_hash, b.apps[0].spec_hash);
        assert_eq!(a.apps[0].containers, b.apps[0].containers);
        let mut app = a.apps[0].clone();
        assert_eq!(spec_hash(&app), app.spec_hash);
        app.depends_on.clear();
        assert_ne!(spec_hash(&app), a.apps[0].spec_hash);
    }

    /// The fixture's `api` with a VM next to its container (a registry path for its disk).
    fn with_vm(f: &mut Fixture) {
        f.api.workload_template = format!(
            "{TEMPLATE}vms:\n  - name: box\n    memory: {{{{ values.vmMemory | default(128) }}}}\n    image: {{url: vms/box.qcow2, sha256: \"{}\"}}\n    ports: [{{guestPort: 22, hostPort: {{{{ values.port + 1 }}}}}}]\n",
            "ab".repeat(32)
        );
    }

    #[test]
    fn renders_vms_next_to_containers() {
        let mut f = Fixture::new();
        with_vm(&mut f);
        let r = f
            .run(&deployment(overrides(json!(8000), "x")), None)
            .unwrap();
        let api = &r.apps[1];
        assert_eq!(api.containers.len(), 1);
        assert_eq!(api.vms.len(), 1);
        let vm = &api.vms[0];
        assert_eq!(vm.name, "box");
        assert_eq!(vm.memory_mib, 128);
        assert_eq!(vm.ports[0].host_port, 8001);
        assert_eq!(
            vm.boot,
            canopy_proto::VmBoot::Disk {
                image: canopy_proto::VmImage {
                    url: "https://registry.example.com/team-space/vms/box.qcow2".into(),
                    sha256: "ab".repeat(32),
                }
            },
            "registry path resolved against the app's image registry"
        );
        // The registry's credentials travel with the app (the agent uses them for the VM file).
        assert_eq!(
            api.registry_auth.as_ref().unwrap().server,
            "registry.example.com"
        );
        assert!(r.apps[0].vms.is_empty(), "web has no VMs");
        assert_eq!(spec_hash(api), api.spec_hash);
        let edge = r.instance(
            &PackageInput {
                package: &f.package,
                apps: vec![&f.web, &f.api],
                registries: &f.registries,
                project: "default",
                policy: &ProjectPolicy::default(),
                org: "default",
                helm: None,
            },
            "d-1",
            1,
            &["api".to_string()],
        );
        assert_eq!(edge.apps[0].vms, api.vms);
    }

    #[test]
    fn hash_tracks_vms() {
        let mut f = Fixture::new();
        with_vm(&mut f);
        let a = f
            .run(&deployment(overrides(json!(8000), "x")), None)
            .unwrap();
        // A VM field changed by override values: same containers, another hash.
        let mut ov = overrides(json!(8000), "x");
        ov[1].values.as_mut().unwrap()["vmMemory"] = json!(256);
        let b = f.run(&deployment(ov), None).unwrap();
        assert_eq!(b.apps[1].vms[0].memory_mib, 256);
        assert_eq!(a.apps[1].containers, b.apps[1].containers);
        assert_ne!(a.apps[1].spec_hash, b.apps[1].spec_hash);
        assert_eq!(a.apps[0].spec_hash, b.apps[0].spec_hash, "web unchanged");
        // Every VM field counts.
        let base = a.apps[1].clone();
        let changes: Vec<fn(&mut canopy_proto::VmSpec)> = vec![
            |v| v.cpus = 2,
            |v| v.vnc = true,
            |v| v.restart_policy = canopy_proto::RestartPolicy::Never,
            |v| v.extra_disks.push(canopy_proto::VmDisk { size_gib: 1 }),
            |v| v.ports[0].host_ip = Some("127.0.0.1".into()),
            |v| {
                v.cloud_init = Some(canopy_proto::VmCloudInit {
                    user_data: "#cloud-config\n".into(),
                    meta_data: None,
                })
            },
            |v| {
                if let canopy_proto::VmBoot::Disk { image } = &mut v.boot {
                    image.sha256 = "cd".repeat(32);
                }
            },
        ];
        for change in changes {
            let mut app = base.clone();
            change(&mut app.vms[0]);
            assert_ne!(spec_hash(&app), base.spec_hash, "{:?}", app.vms[0]);
        }
        // An app without VMs hashes as it did before VMs existed (no rollout on upgrade).
        let web = &a.apps[0];
        let mut text = String::new();
        let auth = web.registry_auth.as_ref().unwrap();
        canonical_json(
            &json!({
                "containers": web.containers,
                "namespace": web.namespace,
                "dependsOn": web.depends_on,
                "registryAuth": {
                    "server": auth.server,
                    "username": auth.username,
                    "passwordSha256": hex(&Sha256::digest(auth.password.as_bytes())),
                },
            }),
            &mut text,
        );
        assert_eq!(web.spec_hash, hex(&Sha256::digest(text.as_bytes())));
    }

    #[test]
    fn vm_errors_name_app_and_field() {
        let mut f = Fixture::new();
        with_vm(&mut f);
        let mut ov = overrides(json!(8000), "x");
        ov[1].values.as_mut().unwrap()["vmMemory"] = json!(8);
        let e = f.run(&deployment(ov), None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(
            e.message
                .starts_with("application api:1.0.0 profile default vms[0].memory: 8 is less"),
            "{e}"
        );
        // A registry path needs the app's image registry.
        f.api.image_registry_name.clear();
        let e = f
            .run(&deployment(overrides(json!(8000), "x")), None)
            .unwrap_err();
        assert!(e.message.contains("vms[0].image.url"), "{e}");
        assert!(e.message.contains("no image registry"), "{e}");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut s = String::new();
        canonical_json(&json!({"b": [1, {"d": 1, "c": "x"}], "a": null}), &mut s);
        assert_eq!(s, r#"{"a":null,"b":[1,{"c":"x","d":1}]}"#);
    }

    #[test]
    fn instance_for_edge() {
        let f = Fixture::new();
        let r = f.run(&deployment(overrides(json!(1), "x")), None).unwrap();
        let input = PackageInput {
            package: &f.package,
            apps: vec![&f.web, &f.api],
            registries: &f.registries,
            project: "default",
            policy: &ProjectPolicy::default(),
            org: "default",
            helm: None,
        };
        let i = r.instance(&input, "d-1", 3, &["api".to_string()]);
        assert_eq!(i.package, "shop");
        assert_eq!(i.generation, 3);
        assert_eq!(i.apps.len(), 1);
        assert_eq!(i.apps[0].name, "api");
    }
}
