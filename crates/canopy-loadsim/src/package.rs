//! What a run deploys: the native `web-demo` example (the default), or a Helm-chart package the
//! simulator writes itself around a chart in a HELM registry (`--helm-registry`).
//!
//! Why the simulator writes the Helm package rather than shipping one under `examples/`: the
//! package must name a registry, and which registry holds the chart differs on every machine;
//! the simulator creates that registry in the catalog from the URL it is given, then uploads an
//! application and two deployment package versions in the reference upload format. The two
//! versions use the same chart with different profile values, so the upgrade makes the control
//! plane render the chart again, as a values change does for users.
//!
//! Simulated edges run nothing: for a Helm package the run measures the control plane's side
//! (fetch, render, translation, fan-out of the pods to every edge, status folding).

use canopy_proto::DesiredState;
use serde_json::{Value, json};

use crate::admin::Admin;
use crate::config::{SimConfig, Workload};
use crate::error::SimError;
use crate::fleet::Want;

/// The catalog name of the HELM registry the simulator creates.
const HELM_REGISTRY: &str = "loadsim-charts";

/// The deployment package of a run, its two versions and the application whose values the
/// create request overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Deployment package name.
    pub name: String,
    /// The version the deployment is created with.
    pub version: &'static str,
    /// The version it is upgraded to.
    pub upgrade: &'static str,
    /// The application the create request gives override values to.
    pub app: String,
    /// How many applications the package has (workloads listed per edge).
    pub apps: usize,
    /// Helm: the replicas the profile of `version`, then of `upgrade`, asks for (what an edge
    /// must be sent is then checked: pods, rendered, at that count).
    pub helm_replicas: Option<[u32; 2]>,
}

impl Package {
    /// The package `workload` deploys.
    pub fn of(workload: &Workload) -> Package {
        match workload {
            Workload::Native => Package {
                name: "web-demo".into(),
                version: "1.0.0",
                upgrade: "1.1.0",
                app: "web".into(),
                apps: 2,
                helm_replicas: None,
            },
            Workload::Helm { .. } => Package {
                name: "loadsim-helm".into(),
                version: "1.0.0",
                upgrade: "1.1.0",
                app: "loadsim-web".into(),
                apps: 1,
                helm_replicas: Some([1, 2]),
            },
        }
    }

    /// What an edge holding `version` of the package has: the deployment at that version, and
    /// for Helm its app's pods rendered at that version's replica count.
    pub fn holds(&self, version: &'static str) -> Want {
        let name = self.name.clone();
        let replicas = self
            .helm_replicas
            .map(|[first, then]| if version == self.version { first } else { then });
        Box::new(move |_, d: &DesiredState| {
            d.deployments.iter().any(|x| {
                x.package == name
                    && x.package_version == version
                    && replicas.is_none_or(|want| {
                        x.apps.iter().any(|a| {
                            a.pods.as_ref().is_some_and(|p| {
                                p.workloads.iter().map(|w| w.replicas).sum::<u32>() == want
                            })
                        })
                    })
            })
        })
    }

    /// Override values for the create request, unique to the run `run` (so every run renders
    /// and delivers something new).
    pub fn override_values(&self, workload: &Workload, run: &str) -> Value {
        match workload {
            Workload::Native => json!({"greeting": format!("loadsim {run}")}),
            Workload::Helm { .. } => json!({"podAnnotations": {"loadsim-run": run}}),
        }
    }

    /// Puts both versions in the catalog (for Helm, the registry first). Whatever is there
    /// already (a reused `--server`) is kept.
    pub async fn prepare(&self, cfg: &SimConfig, admin: &Admin) -> Result<(), SimError> {
        match &cfg.workload {
            Workload::Native => {
                for dir in [self.name.clone(), format!("{}-{}", self.name, self.upgrade)] {
                    admin.upload_dir(&cfg.examples.join(dir)).await?;
                }
                Ok(())
            }
            Workload::Helm {
                registry,
                chart,
                chart_version,
            } => {
                admin
                    .create_registry(&json!({
                        "name": HELM_REGISTRY, "type": "HELM", "rootUrl": registry,
                        "description": "charts of canopy-loadsim runs",
                    }))
                    .await?;
                let [first, then] = self.helm_replicas.unwrap_or([1, 2]);
                for (version, app_version, replicas) in [
                    (self.version, "0.1.0", first),
                    (self.upgrade, "0.1.1", then),
                ] {
                    let files = helm_package_files(
                        &self.name,
                        version,
                        &self.app,
                        app_version,
                        chart,
                        chart_version,
                        replicas,
                    );
                    admin
                        .upload_files(&format!("{}:{version}", self.name), files)
                        .await?;
                }
                Ok(())
            }
        }
    }
}

/// The upload files of one version of the Helm package: an application on `chart` with one
/// profile (`replicaCount: replicas`), and a deployment package of that application.
fn helm_package_files(
    package: &str,
    version: &str,
    app: &str,
    app_version: &str,
    chart: &str,
    chart_version: &str,
    replicas: u32,
) -> Vec<(String, Vec<u8>)> {
    let header = "specSchema: \"{kind}\"\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\n";
    let values_file = format!("values-{app}-{app_version}.yaml");
    let application = format!(
        "{}name: {app}\nversion: {app_version}\ndescription: \"canopy-loadsim: {chart} {chart_version}\"\nhelmRegistry: {HELM_REGISTRY}\nchartName: {chart}\nchartVersion: \"{chart_version}\"\nprofiles:\n  - name: default\n    valuesFileName: {values_file}\n",
        header.replace("{kind}", "Application")
    );
    let values = format!("replicaCount: {replicas}\nserviceAccount:\n  create: false\n");
    let deployment_package = format!(
        "{}name: {package}\nversion: \"{version}\"\ndescription: \"canopy-loadsim Helm package\"\napplications:\n  - name: {app}\n    version: {app_version}\ndeploymentProfiles:\n  - name: default\n    applicationProfiles:\n      - application: {app}\n        profile: default\n",
        header.replace("{kind}", "DeploymentPackage")
    );
    vec![
        (format!("app-{app}-{app_version}.yaml"), application.into()),
        (values_file, values.into()),
        (
            format!("dp-{package}-{version}.yaml"),
            deployment_package.into(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_package_files_are_the_reference_upload_format() {
        let files = helm_package_files(
            "loadsim-helm",
            "1.0.0",
            "loadsim-web",
            "0.1.0",
            "canopy-web",
            "0.1.0",
            1,
        );
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "app-loadsim-web-0.1.0.yaml",
                "values-loadsim-web-0.1.0.yaml",
                "dp-loadsim-helm-1.0.0.yaml"
            ]
        );
        // Canopy's own upload parser reads them as users' files are read.
        let files: Vec<canopy_core::upload::UploadFile> = files
            .into_iter()
            .map(|(name, content)| canopy_core::upload::UploadFile { name, content })
            .collect();
        let sets = canopy_core::upload::parse_upload(&files)
            .unwrap_or_else(|e| panic!("{:#?}", e.messages));
        assert_eq!(sets.len(), 1);
        let app = &sets[0].applications[0];
        assert_eq!(
            (app.name.as_str(), app.version.as_str()),
            ("loadsim-web", "0.1.0")
        );
        assert_eq!(app.helm_registry_name, HELM_REGISTRY);
        assert_eq!(
            (app.chart_name.as_str(), app.chart_version.as_str()),
            ("canopy-web", "0.1.0")
        );
        assert_eq!(
            app.profiles[0].chart_values.trim(),
            "replicaCount: 1\nserviceAccount:\n  create: false"
        );
        let dp = &sets[0].packages[0];
        assert_eq!(
            (dp.name.as_str(), dp.version.as_str()),
            ("loadsim-helm", "1.0.0")
        );
    }
}
