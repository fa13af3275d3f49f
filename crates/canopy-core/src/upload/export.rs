//! Writing a deployment package out as a `.tar.gz` in the upload format, so that it can be
//! uploaded unchanged into another Canopy (or the reference catalog).
//!
//! Layout (everything under `<package>-<version>/`):
//! - `deployment-package.yaml`
//! - `application-<name>-<version>.yaml` per application, with each profile's values in
//!   `values-<app>-<version>-<profile>.yaml` named by `valuesFileName` (no file and no
//!   `valuesFileName` for a profile without values); the values are written verbatim, so
//!   comments survive;
//! - `template-<app>-<version>.yaml.j2` per native application, its workload template verbatim,
//!   named by the Canopy extension key `templateFileName`;
//! - `registry-<name>.yaml` per registry the applications use, **without** `userName`,
//!   `authToken` and `caCerts` (credentials never leave through an export);
//! - `artifact-<name>.yaml` per artifact the package uses (content as base64).
//!
//! The archive is reproducible: entries sorted by path, fixed mode, owner and mtime, gzip
//! header without a timestamp. Exporting the same package twice gives the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;

use super::format::{Doc, YamlApplication, YamlArtifact, YamlPackage, YamlRegistry};
use crate::catalog::{Application, Artifact, DeploymentPackage, Registry};

/// Modification time of every entry (2024-01-01T00:00:00Z): fixed, so exports are reproducible.
const EXPORT_MTIME: u64 = 1_704_067_200;

/// Only these characters make it into a file name; anything else becomes `_`. Names and
/// versions are validated long before, so this only guards against a malformed store.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

fn to_yaml<T: Serialize>(doc: &T) -> Result<Vec<u8>, String> {
    serde_saphyr::to_string(doc)
        .map(String::into_bytes)
        .map_err(|e| format!("cannot write YAML: {e}"))
}

/// Files of the export, by path; a taken path gets `-2`, `-3`, ... before its extension.
#[derive(Default)]
struct Files(BTreeMap<String, Vec<u8>>);

impl Files {
    fn add(&mut self, dir: &str, stem: &str, content: Vec<u8>) -> String {
        self.add_ext(dir, stem, "yaml", content)
    }

    fn add_ext(&mut self, dir: &str, stem: &str, ext: &str, content: Vec<u8>) -> String {
        let mut name = format!("{stem}.{ext}");
        let mut n = 2;
        while self.0.contains_key(&format!("{dir}/{name}")) {
            name = format!("{stem}-{n}.{ext}");
            n += 1;
        }
        self.0.insert(format!("{dir}/{name}"), content);
        name
    }
}

/// Writes `pkg` with the given applications, registries and artifacts as a `.tar.gz` in the
/// upload format (see the module docs). Every application the package references must be in
/// `apps`; registries and artifacts are written when given and used (a registry that is not
/// given is assumed to exist on the target, like the system registries).
pub fn export_package(
    pkg: &DeploymentPackage,
    apps: &[Application],
    registries: &[Registry],
    artifacts: &[Artifact],
) -> Result<Vec<u8>, String> {
    export_packages(pkg, &[], apps, registries, artifacts)
}

/// Like [`export_package`], plus the packages `pkg` requires through its applications'
/// deployment requirements (written as `deployment-package-<name>-<version>.yaml` beside it,
/// with their applications), so the archive uploads into a project that has none of them.
pub fn export_packages(
    pkg: &DeploymentPackage,
    required: &[DeploymentPackage],
    apps: &[Application],
    registries: &[Registry],
    artifacts: &[Artifact],
) -> Result<Vec<u8>, String> {
    let dir = safe(&format!("{}-{}", pkg.name, pkg.version));
    if dir.is_empty() {
        return Err("the package has no name".into());
    }
    let mut files = Files::default();
    let mut used_registries = BTreeSet::new();
    let mut seen_apps = BTreeSet::new();
    let mut used_artifacts: BTreeSet<&str> = BTreeSet::new();
    for (i, pkg) in std::iter::once(pkg).chain(required).enumerate() {
        let stem = if i == 0 {
            "deployment-package".to_string()
        } else {
            safe(&format!("deployment-package-{}-{}", pkg.name, pkg.version))
        };
        files.add(
            &dir,
            &stem,
            to_yaml(&Doc::new(
                "DeploymentPackage",
                YamlPackage::from_package(pkg),
            ))?,
        );
        used_artifacts.extend(pkg.artifacts.iter().map(|a| a.name.as_str()));
        for r in &pkg.application_references {
            if !seen_apps.insert((&r.name, &r.version)) {
                continue;
            }
            let app = apps
                .iter()
                .find(|a| a.name == r.name && a.version == r.version)
                .ok_or_else(|| {
                    format!(
                        "application {}:{} of the package was not given",
                        r.name, r.version
                    )
                })?;
            used_registries.insert(app.helm_registry_name.as_str());
            used_registries.insert(app.image_registry_name.as_str());
            let mut values_files = BTreeMap::new();
            for p in app.profiles.iter().filter(|p| !p.chart_values.is_empty()) {
                let stem = safe(&format!("values-{}-{}-{}", app.name, app.version, p.name));
                let name = files.add(&dir, &stem, p.chart_values.clone().into_bytes());
                values_files.insert(p.name.clone(), name);
            }
            let template_file = app.is_native().then(|| {
                let stem = safe(&format!("template-{}-{}", app.name, app.version));
                files.add_ext(
                    &dir,
                    &stem,
                    "yaml.j2",
                    app.workload_template.clone().into_bytes(),
                )
            });
            let yaml = YamlApplication::from_application(
                app,
                |p| values_files.get(&p.name).cloned(),
                template_file,
            );
            files.add(
                &dir,
                &safe(&format!("application-{}-{}", app.name, app.version)),
                to_yaml(&Doc::new("Application", yaml))?,
            );
        }
    }

    let mut seen = BTreeSet::new();
    for r in registries
        .iter()
        .filter(|r| used_registries.contains(r.name.as_str()))
    {
        if seen.insert(&r.name) {
            let doc = Doc::new("Registry", YamlRegistry::from_registry(r));
            files.add(&dir, &safe(&format!("registry-{}", r.name)), to_yaml(&doc)?);
        }
    }
    let mut seen = BTreeSet::new();
    for a in artifacts
        .iter()
        .filter(|a| used_artifacts.contains(a.name.as_str()))
    {
        if seen.insert(&a.name) {
            let doc = Doc::new("Artifact", YamlArtifact::from_artifact(a));
            files.add(&dir, &safe(&format!("artifact-{}", a.name)), to_yaml(&doc)?);
        }
    }
    write_tar_gz(&dir, &files.0).map_err(|e| format!("cannot write the archive: {e}"))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(EXPORT_MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn write_tar_gz(dir: &str, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<Vec<u8>> {
    // GzEncoder writes mtime 0 and no file name in the gzip header: reproducible.
    let gz = GzEncoder::new(Vec::new(), Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, format!("{dir}/"), std::io::empty())?;
    for (path, content) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, content.len() as u64);
        tar.append_data(&mut h, path, content.as_slice())?;
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()
}
