//! The upload format end to end: the reference sample packages, round trips through export,
//! multi-document files, values files, and hostile input (each refused with a clear message,
//! never a panic).

use std::io::{Read, Write};
use std::path::Path;

use canopy_core::catalog::*;
use canopy_core::upload::{
    FileSet, MAX_FILE_BYTES, MAX_TAR_ENTRIES, UploadError, UploadFile, UploadReader,
    export_package, parse_upload, parse_upload_from,
};
use flate2::Compression;
use flate2::write::GzEncoder;

const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/reference-packages"
);

const APP_HEADER: &str = "specSchema: Application\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\n";

fn file(name: &str, content: impl AsRef<[u8]>) -> UploadFile {
    UploadFile {
        name: name.to_string(),
        content: content.as_ref().to_vec(),
    }
}

/// The files of a directory, named by their path relative to `root`, sorted.
fn dir_files(root: &Path, dir: &Path) -> Vec<UploadFile> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(dir_files(root, &p));
        } else {
            let name = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push(UploadFile {
                name,
                content: std::fs::read(&p).unwrap(),
            });
        }
    }
    out
}

fn reference_dirs() -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(REFERENCE)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 3,
        "reference packages missing from {REFERENCE}"
    );
    dirs
}

/// A `.tar.gz` of regular files.
fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A `.tar.gz` with one entry whose name bytes, type and link are written as given (the tar
/// crate's own setters refuse `..` and absolute paths, so the header is filled in by hand).
fn tgz_raw(name: &[u8], kind: tar::EntryType, data: &[u8], link: Option<&str>) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
    b.into_inner().unwrap().finish().unwrap()
}

fn err(files: &[UploadFile]) -> UploadError {
    match parse_upload(files) {
        Ok(sets) => panic!("expected an error, got {sets:#?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_mentions(e: &UploadError, parts: &[&str]) {
    assert!(
        e.messages
            .iter()
            .any(|m| parts.iter().all(|p| m.contains(p))),
        "no message mentions all of {parts:?}: {:#?}",
        e.messages
    );
}

// ---- reference packages

#[test]
fn reference_packages_parse_unchanged() {
    for dir in reference_dirs() {
        let files = dir_files(&dir, &dir);
        let sets =
            parse_upload(&files).unwrap_or_else(|e| panic!("{}: {:#?}", dir.display(), e.messages));
        assert_eq!(sets.len(), 1, "{}", dir.display());
        assert_eq!(sets[0].packages.len(), 1, "{}", dir.display());
        assert!(!sets[0].applications.is_empty(), "{}", dir.display());
        for app in &sets[0].applications {
            for p in &app.profiles {
                assert!(
                    !p.chart_values.is_empty(),
                    "{} {}:{} profile {}",
                    dir.display(),
                    app.name,
                    app.version,
                    p.name
                );
            }
        }
    }
}

#[test]
fn reference_packages_as_tarballs() {
    for dir in reference_dirs() {
        let loose = parse_upload(&dir_files(&dir, &dir)).unwrap();
        // As `tar czf pkg.tgz <dir>` makes it: every path under the directory's name.
        let parent = dir.parent().unwrap();
        let files = dir_files(parent, &dir);
        let entries: Vec<(&str, &[u8])> = files
            .iter()
            .map(|f| (f.name.as_str(), f.content.as_slice()))
            .collect();
        let sets = parse_upload(&[file("pkg.tgz", tgz(&entries))]).unwrap();
        let strip = |v: Vec<FileSet>| v.into_iter().map(no_sources).collect::<Vec<_>>();
        assert_eq!(strip(sets), strip(loose.clone()), "{}", dir.display());
    }
}

#[test]
fn httpbin_maps_every_field() {
    let dir = Path::new(REFERENCE).join("httpbin");
    let sets = parse_upload(&dir_files(&dir, &dir)).unwrap();
    let set = &sets[0];
    let app = &set.applications[0];
    assert_eq!(
        (app.name.as_str(), app.version.as_str()),
        ("httpbin", "0.1.6")
    );
    assert_eq!(app.display_name, "HttpBin Go");
    assert_eq!(app.helm_registry_name, "harbor-helm-oci");
    assert_eq!(app.chart_name, "httpbin");
    assert_eq!(app.chart_version, "0.1.6");
    assert_eq!(
        app.default_profile_name, "without-envoy",
        "the first profile is the default"
    );
    let envoy = app.profile("with-envoy").unwrap();
    assert_eq!(
        envoy.chart_values,
        std::fs::read_to_string(dir.join("values-httpbin-envoy.yaml")).unwrap()
    );
    let pkg = &set.packages[0];
    assert_eq!(
        (pkg.name.as_str(), pkg.version.as_str()),
        ("httpbin", "2.3.3")
    );
    assert_eq!(
        pkg.application_references,
        vec![ApplicationReference {
            name: "httpbin".into(),
            version: "0.1.6".into()
        }]
    );
    assert_eq!(pkg.default_profile_name, "default");
    assert_eq!(
        pkg.profile("default").unwrap().application_profiles["httpbin"],
        "with-envoy"
    );
    assert_eq!(pkg.default_namespaces["httpbin"], "httpbin-ns");
    assert!(pkg.is_visible);
    assert!(!pkg.is_deployed);
    assert_eq!(pkg.kind, Kind::Normal);
}

#[test]
fn cirros_registry_and_tutorial_profiles() {
    let dir = Path::new(REFERENCE).join("cirros-vm");
    let set = &parse_upload(&dir_files(&dir, &dir)).unwrap()[0];
    let r = &set.registries[0];
    assert_eq!(r.name, "kubevirt-community-stack");
    assert_eq!(r.registry_type, "HELM");
    assert_eq!(
        r.root_url,
        "https://cloudymax.github.io/kubevirt-community-stack"
    );
    assert_eq!(r.username, None);

    let dir = Path::new(REFERENCE).join("developer-guide-tutorial");
    let set = &parse_upload(&dir_files(&dir, &dir)).unwrap()[0];
    let pkg = &set.packages[0];
    assert_eq!(pkg.profiles.len(), 3);
    assert_eq!(pkg.default_profile_name, "default-profile");
    let server = set
        .applications
        .iter()
        .find(|a| a.name == "tutorial-server")
        .unwrap();
    let pt = &server.profile("alternate-pt").unwrap().parameter_templates;
    assert_eq!(pt[1].name, "initialCount");
    assert_eq!(pt[1].default, "0");
    assert_eq!(server.image_registry_name, "harbor-docker-oci");
    // Sorted by key within the set.
    let names: Vec<&str> = set.applications.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["tutorial-server", "tutorial-web-ui"]);
}

// ---- round trip through export

/// Drops the record of which file defined what (file names differ between loose and tarball
/// uploads of the same content).
fn no_sources(set: FileSet) -> FileSet {
    FileSet {
        sources: Default::default(),
        ..set
    }
}

/// Clears what an export deliberately does not carry (credentials, timestamps, the deployed
/// lock) so that parse → export → parse can be compared.
fn comparable(mut set: FileSet) -> FileSet {
    set = no_sources(set);
    for r in &mut set.registries {
        *r = r.redacted();
    }
    for p in &mut set.packages {
        p.is_deployed = false;
    }
    set
}

fn export_set(set: &FileSet) -> Vec<u8> {
    assert_eq!(set.packages.len(), 1);
    export_package(
        &set.packages[0],
        &set.applications,
        &set.registries,
        &set.artifacts,
    )
    .unwrap()
}

const RICH: &str = r#"
specSchema: Registry
schemaVersion: "0.1"
$schema: "https://schema.intel.com/catalog.orchestrator/0.1/schema"
name: helm-repo
description: "charts"
registryType: HELM
rootUrl: "oci://registry.example.com/charts"
userName: robot
authToken: "s3cret"
caCerts: use-dynamic-cacert
apiType: harbor
inventoryUrl: "https://registry.example.com/api"
---
specSchema: Registry
schemaVersion: "0.1"
name: images
description: images
type: IMAGE
rootUrl: "https://images.example.com"
---
specSchema: Application
schemaVersion: "0.1"
name: web
version: 1.10
kind: extension
displayName: "Web"
description: "A web server"
registry: helm-repo
imageRegistry: images
chartName: charts/web
chartVersion: 2
defaultProfileName: tuned
profiles:
  - name: default
    valuesFileName: values/web-default.yaml
  - name: tuned
    displayName: Tuned
    description: "more workers"
    chartValues: "workers: 4\n"
    parameterTemplates:
      - name: image.tag
        displayName: Tag
        type: string
        default: 1.0
        suggestedValues: [1.0, 1.10]
      - name: auth.password
        type: string
        secret: true
        mandatory: true
    deploymentRequirements:
      - name: base
        version: 1.0.0
        deploymentProfileName: small
  - name: empty
ignoredResources:
  - {name: web-cfg, kind: ConfigMap}
  - {name: hook, kind: MutatingWebhookConfiguration}
---
specSchema: Artifact
schemaVersion: "0.1"
name: icon
description: "the icon"
mimeType: image/png
artifact: iVBORw0KGgowMDAw
---
specSchema: Deployment-Package
schemaVersion: "0.1"
name: web-stack
version: 0.2
kind: addon
description: "web stack"
displayName: Web stack
applications:
  - {name: web, version: 1.10}
  - {name: ui, version: "1.0"}
deploymentProfiles:
  - name: default
    description: "the usual"
    applicationProfiles:
      - {application: web, profile: default}
      - {application: "ui:1.0", profile: default}
  - name: tuned
    applicationProfiles:
      - {application: web, profile: tuned}
      - {application: ui, profile: default}
defaultProfileName: tuned
applicationDependencies:
  - {application: ui, dependsOn: web}
defaultNamespaces: {web: web-ns, ui: web-ns}
namespaces:
  - name: web-ns
    labels: {istio-injection: enabled}
    annotations: {owner: team-a}
extensions:
  - name: web-api
    version: "1"
    displayName: Web API
    endpoints:
      - {serviceName: web, externalPath: /api, internalPath: /, scheme: http, authType: insecure}
    uiExtension:
      label: Web
      serviceName: web
      description: The web UI
      fileName: remoteEntry.js
      appName: web
      moduleName: WebModule
artifactReferences:
  - {name: icon, purpose: icon}
isVisible: false
isDeployed: true
forbidsMultipleDeployments: true
---
specSchema: Application
schemaVersion: "0.1"
name: ui
version: "1.0"
description: ""
helmRegistry: helm-repo
chartName: ui
chartVersion: "1.0"
profiles:
  - name: default
    valuesFileName: ui.yaml
"#;

fn rich_upload() -> Vec<UploadFile> {
    vec![
        file("stack.yaml", RICH),
        file(
            "values/web-default.yaml",
            "# default values\nreplicas: 1\nimage:\n  tag: \"{{ .Values.tag }}\"\n",
        ),
        file("ui.yaml", "---\nui: {enabled: true}\n"),
    ]
}

#[test]
fn rich_package_reads_every_field() {
    let sets = parse_upload(&rich_upload()).unwrap_or_else(|e| panic!("{:#?}", e.messages));
    let set = &sets[0];
    let names: Vec<&str> = set.registries.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["helm-repo", "images"]);
    let r = &set.registries[0];
    assert_eq!(r.registry_type, "HELM");
    assert_eq!(r.username.as_deref(), Some("robot"));
    assert_eq!(r.auth_token.as_deref(), Some("s3cret"));
    assert_eq!(r.cacerts.as_deref(), Some("use-dynamic-cacert"));
    assert_eq!(r.api_type, "harbor");

    let web = set.applications.iter().find(|a| a.name == "web").unwrap();
    assert_eq!(web.version, "1.10", "a YAML float keeps its spelling");
    assert_eq!(web.chart_version, "2");
    assert_eq!(web.kind, Kind::Extension);
    assert_eq!(web.helm_registry_name, "helm-repo");
    assert_eq!(web.image_registry_name, "images");
    assert_eq!(web.default_profile_name, "tuned");
    assert!(
        web.profile("default")
            .unwrap()
            .chart_values
            .contains("{{ .Values.tag }}")
    );
    let tuned = web.profile("tuned").unwrap();
    assert_eq!(tuned.chart_values, "workers: 4\n");
    assert_eq!(tuned.parameter_templates[0].default, "1.0");
    assert_eq!(
        tuned.parameter_templates[0].suggested_values,
        ["1.0", "1.10"]
    );
    assert!(tuned.parameter_templates[1].secret && tuned.parameter_templates[1].mandatory);
    assert_eq!(
        tuned.deployment_requirement[0].deployment_profile_name,
        "small"
    );
    assert_eq!(web.profile("empty").unwrap().chart_values, "");
    assert_eq!(web.ignored_resources.len(), 2);

    let pkg = &set.packages[0];
    assert_eq!(pkg.version, "0.2");
    assert_eq!(pkg.kind, Kind::Addon);
    assert_eq!(pkg.default_profile_name, "tuned");
    assert_eq!(
        pkg.application_dependencies,
        vec![ApplicationDependency {
            name: "ui".into(),
            requires: "web".into()
        }]
    );
    assert_eq!(pkg.artifacts[0].purpose, "icon");
    assert_eq!(pkg.namespaces[0].annotations["owner"], "team-a");
    assert_eq!(
        pkg.extensions[0].ui_extension.as_ref().unwrap().module_name,
        "WebModule"
    );
    assert_eq!(
        pkg.profile("default").unwrap().application_profiles["ui:1.0"],
        "default"
    );
    assert!(!pkg.is_visible && pkg.is_deployed && pkg.forbids_multiple_deployments);

    assert_eq!(set.artifacts[0].artifact, b"\x89PNG\r\n\x1a\n0000");
}

#[test]
fn round_trip_rich_package() {
    let before = parse_upload(&rich_upload()).unwrap().remove(0);
    let tgz = export_set(&before);
    let after = parse_upload(&[file("web-stack-0.2.tar.gz", &tgz)])
        .unwrap_or_else(|e| panic!("{:#?}", e.messages));
    assert_eq!(after.len(), 1);
    assert_eq!(no_sources(after[0].clone()), comparable(before));
}

#[test]
fn round_trip_reference_packages() {
    for dir in reference_dirs() {
        let before = parse_upload(&dir_files(&dir, &dir)).unwrap().remove(0);
        let tgz = export_set(&before);
        let after = parse_upload(&[file("export.tgz", &tgz)])
            .unwrap_or_else(|e| panic!("{}: {:#?}", dir.display(), e.messages));
        let after: Vec<FileSet> = after.into_iter().map(no_sources).collect();
        assert_eq!(after, vec![comparable(before)], "{}", dir.display());
    }
}

fn tar_listing(tgz: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            format!(
                "{} {:o} {}",
                e.path().unwrap().display(),
                h.mode().unwrap(),
                h.mtime().unwrap()
            )
        })
        .collect()
}

fn tar_file(tgz: &[u8], path: &str) -> String {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(path) {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            return s;
        }
    }
    panic!("{path} not in the archive")
}

#[test]
fn export_is_reproducible_and_keeps_secrets_out() {
    let set = parse_upload(&rich_upload()).unwrap().remove(0);
    let a = export_set(&set);
    let b = export_set(&set);
    assert_eq!(a, b, "two exports of the same package differ");
    insta::assert_yaml_snapshot!("export_listing", tar_listing(&a));
    insta::assert_snapshot!(
        "export_application",
        tar_file(&a, "web-stack-0.2/application-web-1.10.yaml")
    );
    insta::assert_snapshot!(
        "export_package",
        tar_file(&a, "web-stack-0.2/deployment-package.yaml")
    );
    insta::assert_snapshot!(
        "export_registry",
        tar_file(&a, "web-stack-0.2/registry-helm-repo.yaml")
    );

    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(a.as_slice()));
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        for secret in [
            "s3cret",
            "robot",
            "use-dynamic-cacert",
            "authToken",
            "userName",
            "caCerts",
            "isDeployed",
        ] {
            assert!(
                !s.contains(secret),
                "{} contains {secret}:\n{s}",
                e.path().unwrap().display()
            );
        }
    }
}

#[test]
fn export_requires_the_package_applications() {
    let set = parse_upload(&rich_upload()).unwrap().remove(0);
    let e = export_package(&set.packages[0], &set.applications[..1], &[], &[]).unwrap_err();
    assert!(e.contains("was not given"), "{e}");
}

#[test]
fn export_writes_values_files_only_for_profiles_with_values() {
    let set = parse_upload(&rich_upload()).unwrap().remove(0);
    let listing = tar_listing(&export_set(&set));
    let values: Vec<&String> = listing.iter().filter(|l| l.contains("/values-")).collect();
    assert_eq!(values.len(), 3, "{listing:#?}"); // web default + tuned, ui default; not web empty
}

// ---- multi-document files and values files

#[test]
fn multi_document_file_with_values_document() {
    let text = format!(
        "{APP_HEADER}name: a\nversion: \"1\"\ndescription: d\nhelmRegistry: h\nchartName: a\nchartVersion: \"1\"\n\
         profiles: [{{name: p, valuesFileName: v.yaml}}]\n---\n# a values document in the same file is not an entity\nx: \"{{{{ .Values.y }}}}\"\n---\n{APP_HEADER}name: b\nversion: \"1\"\ndescription: d\nhelmRegistry: h\nchartName: b\nchartVersion: \"1\"\n"
    );
    let sets = parse_upload(&[file("apps.yaml", text), file("v.yaml", "k: v\n")]).unwrap();
    let names: Vec<&str> = sets[0]
        .applications
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(sets[0].applications[0].profiles[0].chart_values, "k: v\n");
}

#[test]
fn document_errors_name_file_document_and_field() {
    let text = format!(
        "{APP_HEADER}name: a\nversion: \"1\"\ndescription: d\nhelmRegistry: h\nchartName: a\nchartVersion: \"1\"\n---\n{APP_HEADER}name: b\nversion: \"1\"\ndescription: d\nhelmRegistry: h\nchartName: b\nchartVersion: \"1\"\nprofiles: [{{name: Bad}}]\n"
    );
    let e = err(&[file("app.yaml", text)]);
    assert_mentions(
        &e,
        &[
            "uploaded file app.yaml (document 2): /profiles/0/name: ",
            "Bad",
        ],
    );
    assert_eq!(e.messages.len(), 1, "{:#?}", e.messages);
}

#[test]
fn values_file_in_a_subdirectory() {
    let app = format!(
        "{APP_HEADER}name: a\nversion: \"1\"\ndescription: d\nhelmRegistry: h\nchartName: a\nchartVersion: \"1\"\n\
         profiles:\n  - {{name: rel, valuesFileName: values/a.yaml}}\n  - {{name: up, valuesFileName: ../shared/b.yaml}}\n  - {{name: base, valuesFileName: c.yaml}}\n"
    );
    let tgz = tgz(&[
        ("pkg/apps/app.yaml", app.as_bytes()),
        ("pkg/apps/values/a.yaml", b"a: 1\n"),
        ("pkg/shared/b.yaml", b"b: 2\n"),
        ("pkg/deep/er/c.yaml", b"c: 3\n"),
        ("pkg/README.md", b"# not YAML, not read\n"),
    ]);
    let sets =
        parse_upload(&[file("pkg.tar.gz", tgz)]).unwrap_or_else(|e| panic!("{:#?}", e.messages));
    let app = &sets[0].applications[0];
    assert_eq!(app.profile("rel").unwrap().chart_values, "a: 1\n");
    assert_eq!(app.profile("up").unwrap().chart_values, "b: 2\n");
    assert_eq!(app.profile("base").unwrap().chart_values, "c: 3\n");

    // Loose files named with a directory work the same way.
    let loose = parse_upload(&[
        file("apps/app.yaml", app_with_values("values/a.yaml")),
        file("apps/values/a.yaml", "a: 1\n"),
    ])
    .unwrap();
    assert_eq!(loose[0].applications[0].profiles[0].chart_values, "a: 1\n");
}

fn app_with_values(values: &str) -> String {
    format!(
        "{APP_HEADER}name: a\nversion: \"1\"\ndescription: d\nhelmRegistry: h\nchartName: a\nchartVersion: \"1\"\nprofiles: [{{name: p, valuesFileName: \"{values}\"}}]\n"
    )
}

#[test]
fn missing_and_ambiguous_values_files() {
    let e = err(&[file("app.yaml", app_with_values("nope.yaml"))]);
    assert_mentions(
        &e,
        &["uploaded file app.yaml: chart values file nope.yaml not found in uploads"],
    );

    let e = err(&[
        file("app.yaml", app_with_values("v.yaml")),
        file("x/v.yaml", "a: 1"),
        file("y/v.yaml", "a: 2"),
    ]);
    assert_mentions(
        &e,
        &["app.yaml", "v.yaml is ambiguous", "x/v.yaml", "y/v.yaml"],
    );

    // A tarball is its own file set: loose values files are not visible from it.
    let tgz = tgz(&[("app.yaml", app_with_values("v.yaml").as_bytes())]);
    let e = err(&[file("pkg.tgz", tgz), file("v.yaml", "a: 1")]);
    assert_mentions(
        &e,
        &["uploaded file pkg.tgz:app.yaml: chart values file v.yaml not found"],
    );
}

#[test]
fn each_tarball_is_its_own_file_set() {
    let one = tgz(&[
        ("app.yaml", app_with_values("v.yaml").as_bytes()),
        ("v.yaml", b"a: 1\n"),
    ]);
    let sets = parse_upload(&[
        file("one.tgz", &one),
        file("two.tgz", &one),
        file("v.yaml", "a: 1\n"),
    ])
    .unwrap();
    assert_eq!(sets.len(), 3, "loose set first, then one per tarball");
    assert!(sets[0].applications.is_empty());
    assert_eq!(no_sources(sets[1].clone()), no_sources(sets[2].clone()));
}

#[test]
fn same_key_twice_in_a_set_names_both_files() {
    let a = app_with_values("v.yaml");
    let e = err(&[
        file("one.yaml", &a),
        file("two.yaml", &a),
        file("v.yaml", "a: 1"),
    ]);
    assert_mentions(
        &e,
        &["two.yaml", "application a:1 is also defined in one.yaml"],
    );
}

#[test]
fn all_errors_are_collected() {
    let e = err(&[
        file("one.yaml", "specSchema: Widget\n"),
        file("two.yaml", app_with_values("missing.yaml")),
        file("three.yaml", "a: [unclosed\n"),
    ]);
    assert_eq!(e.messages.len(), 3, "{:#?}", e.messages);
    assert_mentions(&e, &["uploaded file one.yaml: unhandled type Widget"]);
    assert_mentions(&e, &["two.yaml", "missing.yaml not found"]);
    assert_mentions(&e, &["uploaded file three.yaml is invalid YAML"]);
}

// ---- schema and rule errors

#[test]
fn unknown_spec_schema() {
    let e = err(&[file(
        "x.yaml",
        "specSchema: Widget\nschemaVersion: \"0.1\"\n",
    )]);
    assert_eq!(e.messages, ["uploaded file x.yaml: unhandled type Widget"]);
}

#[test]
fn unknown_fields_refused() {
    let e = err(&[
        file(
            "a.yaml",
            format!("{}colour: blue\n", app_with_values("v.yaml")),
        ),
        file("v.yaml", "a: 1"),
    ]);
    assert_mentions(&e, &["uploaded file a.yaml", "colour"]);
    let typo = app_with_values("v.yaml").replace("valuesFileName", "valuesFilename");
    let e = err(&[file("a.yaml", typo)]);
    assert_mentions(
        &e,
        &["uploaded file a.yaml: /profiles/0/valuesFilename: unknown field"],
    );
}

#[test]
fn wrong_types_refused() {
    let text = format!(
        "{APP_HEADER}name: a\nversion: \"1\"\ndescription: d\nhelmRegistry: h\nchartName: a\nchartVersion: \"1\"\nprofiles: oops\nignoredResources: [{{name: x}}]\n"
    );
    let e = err(&[file("a.yaml", text)]);
    assert_mentions(&e, &["uploaded file a.yaml: /profiles: ", "array"]);
    assert_mentions(&e, &["/ignoredResources/0", "kind"]);

    let dp = "specSchema: DeploymentPackage\nschemaVersion: \"0.1\"\nname: p\nversion: \"1\"\ndescription: d\napplications: [{name: a, version: \"1\"}]\nisVisible: maybe\n";
    let e = err(&[file("dp.yaml", dp)]);
    assert_mentions(&e, &["uploaded file dp.yaml: /isVisible: ", "boolean"]);

    let missing = "specSchema: Registry\nschemaVersion: \"0.1\"\nname: r\ntype: HELM\nrootUrl: https://r.example.com\n";
    let e = err(&[file("r.yaml", missing)]);
    assert_mentions(
        &e,
        &[
            "uploaded file r.yaml: ",
            "\"description\" is a required property",
        ],
    );
}

#[test]
fn field_rules_after_the_schema() {
    // The schema allows it; the catalog rule (default profile must exist) does not.
    let text = format!("{}defaultProfile: nope\n", app_with_values("v.yaml"));
    let e = err(&[file("a.yaml", text), file("v.yaml", "a: 1")]);
    assert_mentions(
        &e,
        &[
            "uploaded file a.yaml: application a:1 defaultProfileName",
            "nope",
        ],
    );
}

#[test]
fn invalid_base64_artifact() {
    let text = "specSchema: Artifact\nschemaVersion: \"0.1\"\nname: i\ndescription: d\nmimeType: text/plain\nartifact: \"!!!\"\n";
    let e = err(&[file("i.yaml", text)]);
    assert_mentions(&e, &["uploaded file i.yaml: /artifact: not valid base64"]);
}

// ---- hostile input

#[test]
fn oversized_loose_file() {
    let big = vec![b'a'; MAX_FILE_BYTES as usize + 1];
    let e = err(&[file("big.yaml", big)]);
    assert_mentions(&e, &["uploaded file big.yaml is too large"]);
}

#[test]
fn oversized_tar_entry() {
    let big = vec![b'a'; MAX_FILE_BYTES as usize + 1];
    let e = err(&[file("p.tgz", tgz(&[("big.yaml", &big)]))]);
    assert_mentions(
        &e,
        &["uploaded file p.tgz: entry \"big.yaml\" is too large"],
    );
}

#[test]
fn tar_path_escaping_with_dotdot() {
    let e = err(&[file(
        "p.tgz",
        tgz_raw(b"../evil.yaml", tar::EntryType::Regular, b"a: 1\n", None),
    )]);
    assert_mentions(&e, &["uploaded file p.tgz: entry \"../evil.yaml\"", ".."]);
    let e = err(&[file(
        "p.tgz",
        tgz_raw(
            b"ok/../../evil.yaml",
            tar::EntryType::Regular,
            b"a: 1\n",
            None,
        ),
    )]);
    assert_mentions(&e, &["ok/../../evil.yaml", ".."]);
}

#[test]
fn tar_absolute_path() {
    let e = err(&[file(
        "p.tgz",
        tgz_raw(b"/etc/evil.yaml", tar::EntryType::Regular, b"a: 1\n", None),
    )]);
    assert_mentions(
        &e,
        &["uploaded file p.tgz: entry \"/etc/evil.yaml\" has an absolute path"],
    );
}

#[test]
fn tar_links_and_special_files() {
    let cases = [
        (
            tar::EntryType::Symlink,
            Some("/etc/passwd"),
            "a symbolic link",
        ),
        (tar::EntryType::Link, Some("app.yaml"), "a hard link"),
        (tar::EntryType::Char, None, "a device"),
        (tar::EntryType::Block, None, "a device"),
        (tar::EntryType::Fifo, None, "a fifo"),
    ];
    for (kind, link, what) in cases {
        let e = err(&[file("p.tgz", tgz_raw(b"x.yaml", kind, b"", link))]);
        assert_mentions(
            &e,
            &[
                "uploaded file p.tgz: entry \"x.yaml\" is ",
                what,
                "only regular files and directories",
            ],
        );
    }
}

#[test]
fn too_many_tar_entries() {
    let names: Vec<String> = (0..=MAX_TAR_ENTRIES).map(|i| format!("f{i}.txt")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let e = err(&[file("p.tgz", tgz(&entries))]);
    assert_mentions(&e, &["uploaded file p.tgz has more than 1000 entries"]);
}

#[test]
fn not_a_tarball() {
    let e = err(&[file("p.tar.gz", b"this is not gzip")]);
    assert_mentions(
        &e,
        &["uploaded file p.tar.gz is not a valid tar.gz archive"],
    );
    // gzip, but not tar inside
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&[b'x'; 2000]).unwrap();
    let e = err(&[file("p.tgz", gz.finish().unwrap())]);
    assert_mentions(&e, &["uploaded file p.tgz is not a valid tar.gz archive"]);
}

/// Streams `n` zero bytes into a gzip encoder without holding them in memory.
fn gzip_zeros_into<W: Write>(w: &mut W, n: u64) {
    let chunk = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..k]).unwrap();
        left -= k as u64;
    }
}

#[test]
fn gzip_bomb_of_zeros() {
    // 200 MiB of zeros, gzip-compressed (about 200 KiB): nothing but padding as far as tar is
    // concerned; reading must stop at the upload limit instead of inflating it all.
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gzip_zeros_into(&mut gz, 200 << 20);
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
    let e = err(&[file("bomb.tar.gz", bomb)]);
    assert_mentions(
        &e,
        &[
            "uploaded file bomb.tar.gz: the upload decompresses to more than 64 MiB",
            "decompression bomb",
        ],
    );
}

#[test]
fn gzip_bomb_of_many_entries() {
    // Entries under the per-file limit whose sum passes the total limit.
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for i in 0..8 {
        let mut h = tar::Header::new_gnu();
        let size = MAX_FILE_BYTES - 1;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("f{i}.bin"), std::io::repeat(0).take(size))
            .unwrap();
    }
    let bomb = b.into_inner().unwrap().finish().unwrap();
    let e = err(&[file("bomb.tgz", bomb)]);
    assert_mentions(
        &e,
        &["uploaded file bomb.tgz: the upload decompresses to more than 64 MiB"],
    );
}

#[test]
fn gzip_bomb_claiming_a_huge_entry() {
    // A header announcing 200 MiB: refused from the header, before inflating the content.
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut h = tar::Header::new_gnu();
    h.set_size(200 << 20);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "huge.yaml", std::io::repeat(0).take(200 << 20))
        .unwrap();
    let bomb = b.into_inner().unwrap().finish().unwrap();
    let e = err(&[file("bomb.tgz", bomb)]);
    assert_mentions(
        &e,
        &["uploaded file bomb.tgz: entry \"huge.yaml\" is too large"],
    );
}

#[test]
fn invalid_utf8() {
    let e = err(&[file("bad.yaml", b"name: \xff\xfe\n")]);
    assert_mentions(&e, &["uploaded file bad.yaml is not valid UTF-8"]);
    let e = err(&[file("p.tgz", tgz(&[("dir/bad.yaml", b"a: \xc3\x28\n")]))]);
    assert_mentions(&e, &["uploaded file p.tgz:dir/bad.yaml is not valid UTF-8"]);
}

#[test]
fn deep_nesting() {
    let flow = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let e = err(&[file("deep.yaml", flow)]);
    assert_mentions(&e, &["uploaded file deep.yaml is invalid YAML"]);
    let block: String = (0..2_000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    let e = err(&[file("deep2.yaml", block)]);
    assert_mentions(&e, &["uploaded file deep2.yaml is invalid YAML"]);
}

#[test]
fn billion_laughs() {
    let mut s = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        s.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let e = err(&[file("lol.yaml", s)]);
    assert_mentions(&e, &["uploaded file lol.yaml is invalid YAML"]);
}

#[test]
fn empty_upload_and_values_only_upload() {
    assert_eq!(parse_upload(&[]).unwrap(), Vec::<FileSet>::new());
    let sets = parse_upload(&[file("values.yaml", "a: {{ .Values.x }}\n")]).unwrap();
    assert_eq!(sets, vec![FileSet::default()]);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn yamlish() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("specSchema: Application\n".to_string()),
            Just("specSchema: DeploymentPackage\n".to_string()),
            Just("specSchema: Registry\n".to_string()),
            Just("schemaVersion: \"0.1\"\n".to_string()),
            Just("---\n".to_string()),
            Just("name: a\n".to_string()),
            Just("version: 1.0\n".to_string()),
            Just("profiles:\n  - name: p\n    valuesFileName: v.yaml\n".to_string()),
            Just("  - ".to_string()),
            Just("&a ".to_string()),
            Just("*a".to_string()),
            Just("{".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(": ".to_string()),
            Just("\n".to_string()),
            Just("{{ .Values }}".to_string()),
            Just("!!binary ".to_string()),
            Just("? ".to_string()),
            "[a-zA-Z0-9 :\\-\"'#|>]{0,12}",
        ];
        proptest::collection::vec(token, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_upload(&[file("x.yaml", &bytes)]);
            let _ = parse_upload(&[file("x.tgz", &bytes)]);
        }

        #[test]
        fn random_yamlish_text_never_panics(text in yamlish()) {
            let _ = parse_upload(&[file("x.yaml", &text), file("v.yaml", &text)]);
            let _ = parse_upload(&[file("x.tgz", tgz(&[("d/x.yaml", text.as_bytes())]))]);
        }

        #[test]
        fn corrupted_tarballs_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let mut t = tgz(&[("p/app.yaml", app_with_values("v.yaml").as_bytes()), ("p/v.yaml", b"a: 1\n")]);
            for (i, b) in flips {
                let at = i.index(t.len());
                t[at] = b;
            }
            let _ = parse_upload(&[file("x.tgz", t)]);
        }
    }
}

/// A stream that hands out one byte per read, and counts what was read.
struct Trickle<'a> {
    data: &'a [u8],
    read: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.data.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.data[0];
        self.data = &self.data[1..];
        self.read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(1)
    }
}

#[test]
fn streams_parse_like_bytes() {
    // The server parses from spool files; the result must not depend on how reads are cut.
    let mut files = rich_upload();
    let entries: Vec<(&str, &[u8])> = files
        .iter()
        .map(|f| (f.name.as_str(), f.content.as_slice()))
        .collect();
    let bundle = tgz(&entries);
    files.push(file("bundle.tar.gz", &bundle));
    let from_bytes = parse_upload(&files).expect("parses");
    let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let readers = files
        .iter()
        .map(|f| UploadReader {
            name: f.name.clone(),
            len: f.content.len() as u64,
            reader: Box::new(Trickle {
                data: &f.content,
                read: read.clone(),
            }),
        })
        .collect();
    let from_streams = parse_upload_from(readers).expect("parses");
    assert_eq!(from_streams, from_bytes);
    // An oversized loose file is refused by its size, before anything of it is read.
    let before = read.load(std::sync::atomic::Ordering::Relaxed);
    let big = vec![b'a'; MAX_FILE_BYTES as usize + 1];
    let e = parse_upload_from(vec![UploadReader {
        name: "big.yaml".into(),
        len: big.len() as u64,
        reader: Box::new(Trickle {
            data: &big,
            read: read.clone(),
        }),
    }])
    .unwrap_err();
    assert!(e.messages[0].contains("big.yaml is too large"), "{e}");
    assert_eq!(read.load(std::sync::atomic::Ordering::Relaxed), before);
}
