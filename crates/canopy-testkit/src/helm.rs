//! Helm-chart applications in tests: the test Helm CLI and chart registries of
//! `scripts/helm.sh` ([`HelmTestEnv`]), pushing a fixture chart (`tests/fixtures/charts/`) to
//! a registry under a repository of the test's own, and creating a deployment package of one
//! Helm application through the catalog API ([`HelmPackage`]).
//!
//! ```ignore
//! let Some(env) = HelmTestEnv::from_env() else { return };
//! let root = env.push_chart("canopy-web", None, false);
//! HelmPackage::new("web", &root, "canopy-web", "0.1.0").create(&cp, "default").await;
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::TestControlPlane;

/// The test Helm CLI and chart registries (`CANOPY_TEST_HELM`, `CANOPY_TEST_CHART_REGISTRY`,
/// `CANOPY_TEST_CHART_REGISTRY_AUTH`, `..._USER`, `..._PASSWORD`).
#[derive(Debug, Clone)]
pub struct HelmTestEnv {
    pub helm: PathBuf,
    /// `host:port` of the registry without authentication.
    pub registry: String,
    /// `host:port` of the registry with basic authentication.
    pub registry_auth: String,
    pub user: String,
    pub password: String,
}

impl HelmTestEnv {
    /// The environment, or `None` (with a notice) when it is not set; under CI (`CI` set) a
    /// missing variable panics, so the coverage cannot silently disappear.
    pub fn from_env() -> Option<HelmTestEnv> {
        let var = |name: &str| match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Some(v),
            _ => {
                if std::env::var_os("CI").is_some() {
                    panic!("{name} not set but CI is: run scripts/helm.sh first");
                }
                eprintln!(
                    "skipping: {name} not set (run scripts/helm.sh and export what it prints)"
                );
                None
            }
        };
        Some(HelmTestEnv {
            helm: var("CANOPY_TEST_HELM")?.into(),
            registry: var("CANOPY_TEST_CHART_REGISTRY")?,
            registry_auth: var("CANOPY_TEST_CHART_REGISTRY_AUTH")?,
            user: var("CANOPY_TEST_CHART_REGISTRY_USER")?,
            password: var("CANOPY_TEST_CHART_REGISTRY_PASSWORD")?,
        })
    }

    /// `tests/fixtures/charts/`.
    pub fn charts_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/charts")
    }

    /// Packages the fixture chart `chart` (a directory under `tests/fixtures/charts/`, e.g.
    /// `canopy-web` or `refused/bad-cronjob`), as `version` when given, and pushes it to a
    /// repository of its own (`oci://REGISTRY/canopy-test-<random>`) of the plain registry, or
    /// of the one with authentication when `auth`. Returns that root URL (the HELM registry's
    /// `rootUrl`). Nothing of other tests is touched.
    pub fn push_chart(&self, chart: &str, version: Option<&str>, auth: bool) -> String {
        let host = if auth {
            &self.registry_auth
        } else {
            &self.registry
        };
        let repo = format!(
            "canopy-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let root = format!("oci://{host}/{repo}");
        self.push_chart_at(chart, version, &root, auth);
        root
    }

    /// Like [`HelmTestEnv::push_chart`], into the repository `root` (a root URL it returned):
    /// another version of a chart beside the first.
    pub fn push_chart_at(&self, chart: &str, version: Option<&str>, root: &str, auth: bool) {
        let host = root
            .trim_start_matches("oci://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let host = &host;
        let work = tempfile::tempdir().expect("temp dir");
        let helm = |args: &[&str]| {
            let out = Command::new(&self.helm)
                .args(args)
                .env("HOME", work.path())
                .env("HELM_CONFIG_HOME", work.path().join("config"))
                .env("HELM_CACHE_HOME", work.path().join("cache"))
                .stdin(Stdio::null())
                .output()
                .expect("helm runs");
            assert!(
                out.status.success(),
                "helm {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let dir = Self::charts_dir().join(chart);
        let dest = work.path().join("pkg");
        let mut args = vec![
            "package",
            dir.to_str().unwrap(),
            "-d",
            dest.to_str().unwrap(),
        ];
        if let Some(v) = version {
            args.extend(["--version", v]);
        }
        helm(&args);
        let tgz = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "tgz"))
            .expect("a packaged chart");
        let regconf = work.path().join("registry.json");
        if auth {
            let mut login = Command::new(&self.helm)
                .args(["registry", "login", host, "--insecure", "--username"])
                .arg(&self.user)
                .args(["--password-stdin", "--registry-config"])
                .arg(&regconf)
                .env("HOME", work.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("helm runs");
            use std::io::Write as _;
            login
                .stdin
                .take()
                .unwrap()
                .write_all(self.password.as_bytes())
                .unwrap();
            assert!(
                login.wait().unwrap().success(),
                "helm registry login {host}"
            );
        }
        let mut push = vec!["push", tgz.to_str().unwrap(), root, "--plain-http"];
        if auth {
            push.extend(["--registry-config", regconf.to_str().unwrap()]);
        }
        helm(&push);
    }
}

/// A deployment package of one Helm application, created through the catalog API: a HELM
/// registry (with credentials when set), the application (chart, profile values, parameter
/// templates, `ignoredResources`), and a package of the same name and version.
#[derive(Debug, Clone)]
pub struct HelmPackage {
    /// Application and package name.
    pub name: String,
    /// Application and package version.
    pub version: String,
    /// The HELM registry's `rootUrl` (from [`HelmTestEnv::push_chart`]).
    pub root_url: String,
    pub username: Option<String>,
    pub auth_token: Option<String>,
    pub chart_name: String,
    pub chart_version: String,
    /// The profile `default`'s `chartValues` (YAML).
    pub chart_values: String,
    /// The profile's parameter templates (reference JSON).
    pub parameter_templates: Vec<Value>,
    /// The application's `ignoredResources` (reference JSON).
    pub ignored_resources: Vec<Value>,
    /// The package's `defaultNamespaces` entry for the application.
    pub namespace: Option<String>,
    /// An IMAGE registry for the application (`rootUrl`, `username`, `authToken`): its
    /// credentials are what edges pull the chart's images with.
    pub image_registry: Option<(String, String, String)>,
}

impl HelmPackage {
    pub fn new(name: &str, root_url: &str, chart_name: &str, chart_version: &str) -> HelmPackage {
        HelmPackage {
            name: name.into(),
            version: "1.0.0".into(),
            root_url: root_url.into(),
            username: None,
            auth_token: None,
            chart_name: chart_name.into(),
            chart_version: chart_version.into(),
            chart_values: String::new(),
            parameter_templates: Vec::new(),
            ignored_resources: Vec::new(),
            namespace: None,
            image_registry: None,
        }
    }

    /// The registry's name in the catalog.
    pub fn registry_name(&self) -> String {
        format!("{}-charts", self.name)
    }

    /// Creates (or updates) the registry, then creates the application and the package; panics
    /// unless each is accepted.
    pub async fn create(&self, cp: &TestControlPlane, project: &str) {
        let mut registry = json!({
            "name": self.registry_name(),
            "rootUrl": self.root_url,
            "type": "HELM",
        });
        if let Some(u) = &self.username {
            registry["username"] = json!(u);
        }
        if let Some(t) = &self.auth_token {
            registry["authToken"] = json!(t);
        }
        let (s, b) = cp
            .post(&cp.catalog(project, "/registries"), &registry)
            .await;
        if s == StatusCode::CONFLICT {
            let (s, b) = cp
                .put(
                    &cp.catalog(project, &format!("/registries/{}", self.registry_name())),
                    &registry,
                )
                .await;
            assert!(s.is_success(), "update registry: {s} {b}");
        } else {
            assert!(s.is_success(), "create registry: {s} {b}");
        }
        if let Some((root, user, token)) = &self.image_registry {
            let images = json!({
                "name": format!("{}-images", self.name),
                "rootUrl": root,
                "type": "IMAGE",
                "username": user,
                "authToken": token,
            });
            let (s, b) = cp.post(&cp.catalog(project, "/registries"), &images).await;
            assert!(
                s.is_success() || s == StatusCode::CONFLICT,
                "create image registry: {s} {b}"
            );
        }
        let mut app = json!({
            "name": self.name,
            "version": self.version,
            "helmRegistryName": self.registry_name(),
            "chartName": self.chart_name,
            "chartVersion": self.chart_version,
            "defaultProfileName": "default",
            "profiles": [{
                "name": "default",
                "chartValues": self.chart_values,
                "parameterTemplates": self.parameter_templates,
            }],
            "ignoredResources": self.ignored_resources,
        });
        if self.image_registry.is_some() {
            app["imageRegistryName"] = json!(format!("{}-images", self.name));
        }
        let (s, b) = cp.post(&cp.catalog(project, "/applications"), &app).await;
        assert!(s.is_success(), "create application: {s} {b}");
        let mut pkg = json!({
            "name": self.name,
            "version": self.version,
            "applicationReferences": [{"name": self.name, "version": self.version}],
        });
        if let Some(ns) = &self.namespace {
            pkg["defaultNamespaces"] = json!({ &self.name: ns });
        }
        let (s, b) = cp
            .post(&cp.catalog(project, "/deployment_packages"), &pkg)
            .await;
        assert!(s.is_success(), "create package: {s} {b}");
    }
}
