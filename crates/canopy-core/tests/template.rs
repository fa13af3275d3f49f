//! Native applications end to end: the examples of `docs/TEMPLATE-FORMAT.md` (they upload,
//! render, match the committed JSON Schema and the documented output), the `examples/edge-demo`
//! package (containers and a VM), upload and export of workload templates, upload errors,
//! snapshots of rendered containers and VMs, and properties (merging is idempotent; rendering
//! any text never panics).

use std::collections::BTreeMap;
use std::io::Read;

use canopy_core::catalog::Application;
use canopy_core::template::{self, RenderContext, SCHEMA_JSON, merge_values};
use canopy_core::upload::{FileSet, UploadError, UploadFile, export_package, parse_upload};
use canopy_proto::VmBoot;
use proptest::prelude::*;
use serde_json::{Value, json};

const DOC: &str = include_str!("../../../docs/TEMPLATE-FORMAT.md");

fn file(name: &str, content: impl AsRef<[u8]>) -> UploadFile {
    UploadFile {
        name: name.to_string(),
        content: content.as_ref().to_vec(),
    }
}

/// The fenced blocks of the format document, by their info string (`yaml file=web.yaml`).
fn doc_blocks() -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in DOC.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_string(), String::new())),
            (Some(_), Some("")) => blocks.push(current.take().unwrap()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(
        current.is_none(),
        "unclosed code block in TEMPLATE-FORMAT.md"
    );
    blocks
}

/// The example files of the document (`file=NAME` blocks without a `set=`) as an upload.
fn doc_files() -> Vec<UploadFile> {
    let files = doc_set(None);
    assert!(files.len() >= 5, "examples missing from TEMPLATE-FORMAT.md");
    files
}

/// The `file=NAME` blocks of the document in one example set (`set=NAME`; `None`: no `set=`).
fn doc_set(set: Option<&str>) -> Vec<UploadFile> {
    doc_blocks()
        .into_iter()
        .filter_map(|(info, body)| {
            let words: Vec<&str> = info.split_whitespace().collect();
            let in_set = words.iter().find_map(|w| w.strip_prefix("set="));
            if in_set != set {
                return None;
            }
            let name = words.iter().find_map(|w| w.strip_prefix("file="))?;
            Some(file(name, body))
        })
        .collect()
}

fn parse(files: &[UploadFile]) -> FileSet {
    let mut sets = parse_upload(files).unwrap_or_else(|e| panic!("{:#?}", e.messages));
    assert_eq!(sets.len(), 1);
    sets.remove(0)
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

fn schema() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(SCHEMA_JSON).unwrap();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .unwrap()
}

fn ctx() -> RenderContext {
    RenderContext {
        deployment_id: "3f2b1c6e-0000-4000-8000-000000000001".into(),
        deployment_name: "web-stack".into(),
        namespace: "web-stack".into(),
        project: "default".into(),
        image_registry_url: None,
        policy: None,
    }
}

/// Override values that give every mandatory parameter of a profile a value.
fn mandatory_overrides(app: &Application, profile: &str) -> Value {
    let mut o = serde_json::Map::new();
    for t in &app.profile(profile).unwrap().parameter_templates {
        if t.mandatory {
            let v = match t.param_type.as_str() {
                "number" => json!(1),
                "boolean" => json!(true),
                _ => json!("value"),
            };
            o.insert(t.name.clone(), v);
        }
    }
    Value::Object(o)
}

fn app<'a>(set: &'a FileSet, name: &str) -> &'a Application {
    set.applications.iter().find(|a| a.name == name).unwrap()
}

// ---- the format document

#[test]
fn doc_schema_is_the_committed_schema() {
    let block = doc_blocks()
        .into_iter()
        .find(|(info, _)| info == "json")
        .expect("no JSON Schema block in TEMPLATE-FORMAT.md")
        .1;
    let in_doc: Value = serde_json::from_str(&block).unwrap();
    let committed: Value = serde_json::from_str(SCHEMA_JSON).unwrap();
    assert_eq!(
        in_doc, committed,
        "TEMPLATE-FORMAT.md's schema differs from the committed one"
    );
}

#[test]
fn doc_examples_upload_render_and_match_the_schema() {
    let set = parse(&doc_files());
    assert_eq!(set.applications.len(), 2);
    assert_eq!(set.packages.len(), 1);
    let validator = schema();
    let mut rendered = 0;
    for a in &set.applications {
        assert!(a.is_native(), "{}", a.name);
        assert!(a.chart_name.is_empty() && a.helm_registry_name.is_empty());
        for p in &a.profiles {
            let overrides = mandatory_overrides(a, &p.name);
            let text = template::render_to_text(a, &p.name, &overrides, &ctx())
                .unwrap_or_else(|e| panic!("{e}"));
            let doc: Value = canopy_core::yaml::parse_one(&text).unwrap();
            let problems: Vec<String> = validator
                .iter_errors(&doc)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(
                problems.is_empty(),
                "{} {}: {problems:?}\n{text}",
                a.name,
                p.name
            );
            let workloads =
                template::render(a, &p.name, &overrides, &ctx()).unwrap_or_else(|e| panic!("{e}"));
            assert!(!workloads.containers.is_empty());
            assert!(workloads.vms.is_empty());
            rendered += 1;
        }
    }
    assert_eq!(rendered, 3);
    // The probe loops over its pollers and reaches the web server by name.
    let probes = template::render(
        app(&set, "probe"),
        "",
        &json!({"token": "t0k3n", "intervalSeconds": "30"}),
        &ctx(),
    )
    .unwrap()
    .containers;
    assert_eq!(
        probes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["probe-1", "probe-2"]
    );
    assert_eq!(probes[0].env["INTERVAL"], "30");
    assert_eq!(probes[0].env["TOKEN"], "t0k3n");
    assert_eq!(
        probes[0].restart_policy,
        canopy_proto::RestartPolicy::OnFailure
    );
}

#[test]
fn doc_rendered_output_is_what_renders() {
    let documented = doc_blocks()
        .into_iter()
        .find(|(info, body)| info == "yaml" && body.starts_with("containers:"))
        .expect("no rendered example in TEMPLATE-FORMAT.md")
        .1;
    let set = parse(&doc_files());
    let text = template::render_to_text(
        app(&set, "web"),
        "default",
        &json!({"port": "9090"}),
        &ctx(),
    )
    .unwrap();
    let actual: Value = canopy_core::yaml::parse_one(&text).unwrap();
    let documented: Value = canopy_core::yaml::parse_one(&documented).unwrap();
    assert_eq!(actual, documented, "rendered:\n{text}");
}

#[test]
fn rendered_containers_snapshot() {
    let set = parse(&doc_files());
    let mut c = ctx();
    c.image_registry_url = Some("https://registry.example.com/edge".into());
    let mut containers = template::render(app(&set, "web"), "public", &json!({"port": 8081}), &c)
        .unwrap()
        .containers;
    containers.extend(
        template::render(app(&set, "probe"), "default", &json!({"token": "t"}), &c)
            .unwrap()
            .containers,
    );
    insta::assert_yaml_snapshot!("rendered_containers", containers);
}

// ---- virtual machines: the document's example and examples/edge-demo

#[test]
fn doc_vm_example_uploads_and_renders() {
    let files = doc_set(Some("vm"));
    assert_eq!(files.len(), 3, "VM example missing from TEMPLATE-FORMAT.md");
    let set = parse(&files);
    let gateway = app(&set, "gateway");
    assert_eq!(gateway.image_registry_name, "images");
    let overrides = json!({
        "sshKey": "ssh-ed25519 AAAAC3Nza ops@example",
        "kernelUrl": "https://images.example.com/tiny/vmlinuz",
        "kernelSha256": "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789",
        "memory": "2Gi",
    });
    let mut c = ctx();
    c.image_registry_url = Some(set.registries[0].root_url.clone());
    let text = template::render_to_text(gateway, "", &overrides, &c).unwrap();
    let doc: Value = canopy_core::yaml::parse_one(&text).unwrap();
    let problems: Vec<String> = schema()
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(problems.is_empty(), "{problems:?}\n{text}");
    let w = template::render(gateway, "", &overrides, &c).unwrap();
    assert_eq!(w.containers.len(), 1);
    insta::assert_yaml_snapshot!("rendered_vms", w.vms);
    let VmBoot::Kernel { kernel, initrd, .. } = &w.vms[1].boot else {
        panic!("tiny boots from a kernel");
    };
    assert_eq!(
        kernel.sha256,
        "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
    );
    assert_eq!(
        initrd.as_ref().unwrap().url,
        "https://registry.example.com/edge/vms/tiny/initrd.img"
    );
    // The error the document shows.
    let mut bad = overrides.clone();
    bad["kernelSha256"] = json!("abc");
    let e = template::render(gateway, "", &bad, &c).unwrap_err();
    assert!(
        DOC.contains(&e.to_string()),
        "TEMPLATE-FORMAT.md does not show {e}"
    );
}

fn edge_demo_files() -> Vec<UploadFile> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/edge-demo");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // What `canopy catalog upload DIR` picks up (not the README).
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".j2"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| file(n, std::fs::read(root.join(n)).unwrap()))
        .collect()
}

const KERNEL_SHA: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const INITRD_SHA: &str = "2222222222222222222222222222222222222222222222222222222222222222";

#[test]
fn edge_demo_uploads_and_renders_a_vm() {
    let set = parse(&edge_demo_files());
    assert_eq!(set.packages.len(), 1);
    let pkg = &set.packages[0];
    assert_eq!(
        (pkg.name.as_str(), pkg.version.as_str()),
        ("edge-demo", "1.0.0")
    );
    assert_eq!(set.applications.len(), 2);
    // The container app renders as it is.
    let web = template::render(app(&set, "edge-web"), "", &Value::Null, &ctx()).unwrap();
    assert_eq!(web.containers.len(), 1);
    assert!(web.vms.is_empty());
    assert_eq!(web.containers[0].ports[0].host_port, Some(18088));
    // The VM app needs its four mandatory values...
    let vm_app = app(&set, "vm");
    let e = template::render(vm_app, "", &Value::Null, &ctx()).unwrap_err();
    assert_eq!(e.field, "values.kernelUrl", "{e}");
    // ...given as `scripts/vm-image.sh` prints them.
    let overrides = json!({
        "kernelUrl": "file:///var/cache/canopy-test-vm/vmlinuz",
        "kernelSha256": KERNEL_SHA,
        "initrdUrl": "file:///var/cache/canopy-test-vm/initrd.img",
        "initrdSha256": INITRD_SHA,
    });
    let w = template::render(vm_app, "", &overrides, &ctx()).unwrap();
    assert!(w.containers.is_empty());
    let image = |url: &str, sha: &str| canopy_proto::VmImage {
        url: url.into(),
        sha256: sha.into(),
    };
    assert_eq!(
        w.vms,
        vec![canopy_proto::VmSpec {
            name: "tiny".into(),
            cpus: 1,
            memory_mib: 128,
            boot: VmBoot::Kernel {
                kernel: image("file:///var/cache/canopy-test-vm/vmlinuz", KERNEL_SHA),
                initrd: Some(image(
                    "file:///var/cache/canopy-test-vm/initrd.img",
                    INITRD_SHA
                )),
                cmdline: "console=ttyS0 quiet".into(),
            },
            extra_disks: vec![],
            ports: vec![canopy_proto::VmPort {
                guest_port: 80,
                host_port: 18090,
                host_ip: None,
            }],
            cloud_init: None,
            vnc: true,
            restart_policy: canopy_proto::RestartPolicy::Always,
        }]
    );
    // The host port is a parameter.
    let mut o = overrides.clone();
    o["port"] = json!("18099");
    let w = template::render(vm_app, "", &o, &ctx()).unwrap();
    assert_eq!(w.vms[0].ports[0].host_port, 18099);
    // A bad checksum given at deploy names the field and the value.
    o["initrdSha256"] = json!("not-a-checksum");
    let e = template::render(vm_app, "", &o, &ctx()).unwrap_err();
    assert_eq!(e.field, "vms[0].initrd.sha256");
    assert!(e.message.contains("\"not-a-checksum\""), "{e}");
}

#[test]
fn edge_demo_readme_deploys_with_the_mandatory_parameters() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/edge-demo");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for p in ["kernelUrl", "kernelSha256", "initrdUrl", "initrdSha256"] {
        assert!(
            readme.contains(&format!("--set vm.{p}=")),
            "README misses {p}"
        );
    }
    assert!(readme.contains("scripts/vm-image.sh"));
}

// ---- upload and export

fn tar_entries(tgz: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        out.insert(path, text);
    }
    out
}

#[test]
fn native_apps_round_trip_through_export() {
    let before = parse(&doc_files());
    let tgz = export_package(&before.packages[0], &before.applications, &[], &[]).unwrap();
    let entries = tar_entries(&tgz);
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert!(
        names.contains(&"web-stack-1.0.0/template-web-1.0.0.yaml.j2"),
        "{names:?}"
    );
    assert!(
        names.contains(&"web-stack-1.0.0/template-probe-1.0.0.yaml.j2"),
        "{names:?}"
    );
    // The template is written verbatim and named by templateFileName; no chart keys.
    assert_eq!(
        entries["web-stack-1.0.0/template-web-1.0.0.yaml.j2"],
        app(&before, "web").workload_template
    );
    let web_yaml = &entries["web-stack-1.0.0/application-web-1.0.0.yaml"];
    assert!(
        web_yaml.contains("templateFileName: template-web-1.0.0.yaml.j2"),
        "{web_yaml}"
    );
    for key in [
        "chartName",
        "chartVersion",
        "helmRegistry",
        "workloadTemplate",
    ] {
        assert!(!web_yaml.contains(key), "{key} in {web_yaml}");
    }
    let after = parse(&[file("export.tgz", &tgz)]);
    let without_sources = |s: &FileSet| FileSet {
        sources: Default::default(),
        ..s.clone()
    };
    assert_eq!(without_sources(&after), without_sources(&before));
    // And again: exports are stable.
    let again = export_package(&after.packages[0], &after.applications, &[], &[]).unwrap();
    assert_eq!(again, tgz);
}

const NATIVE_APP: &str = "specSchema: Application\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: web\nversion: 1.0.0\ndescription: d\n";

const SIMPLE_TEMPLATE: &str =
    "containers:\n  - name: web\n    image: \"busybox:{{ values.tag }}\"\n";

#[test]
fn template_files_are_found_like_values_files() {
    let app = format!(
        "{NATIVE_APP}templateFileName: templates/web.j2\nprofiles:\n  - name: default\n    chartValues: \"tag: '1'\"\n"
    );
    // A loose `.j2` file next to the application file...
    let set = parse(&[
        file("pkg/app.yaml", &app),
        file("pkg/templates/web.j2", SIMPLE_TEMPLATE),
    ]);
    assert_eq!(set.applications[0].workload_template, SIMPLE_TEMPLATE);
    // ...or in a tarball, under any name.
    let tgz = {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, data) in [
            ("pkg/app.yaml", app.as_bytes()),
            ("pkg/templates/web.j2", SIMPLE_TEMPLATE.as_bytes()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    };
    let set = parse(&[file("pkg.tgz", tgz)]);
    assert_eq!(set.applications[0].workload_template, SIMPLE_TEMPLATE);
    // Chart fields may still be given, and must then be valid.
    let with_chart = format!("{app}chartName: web\nchartVersion: 1.0.0\nhelmRegistry: charts\n");
    let set = parse(&[
        file("pkg/app.yaml", &with_chart),
        file("pkg/templates/web.j2", SIMPLE_TEMPLATE),
    ]);
    assert_eq!(set.applications[0].chart_name, "web");
    let bad_chart = format!("{app}chartName: Web\n");
    let e = err(&[
        file("pkg/app.yaml", &bad_chart),
        file("pkg/templates/web.j2", SIMPLE_TEMPLATE),
    ]);
    assert_mentions(&e, &["pkg/app.yaml", "/chartName"]);
}

#[test]
fn template_upload_errors() {
    // Missing file.
    let app = format!("{NATIVE_APP}templateFileName: nope.j2\n");
    let e = err(&[file("app.yaml", &app)]);
    assert_mentions(
        &e,
        &["app.yaml", "workload template file nope.j2 not found"],
    );
    // Both keys.
    let app = format!("{NATIVE_APP}templateFileName: t.j2\nworkloadTemplate: \"containers: []\"\n");
    let e = err(&[file("app.yaml", &app), file("t.j2", SIMPLE_TEMPLATE)]);
    assert_mentions(
        &e,
        &["app.yaml", "either templateFileName or workloadTemplate"],
    );
    // Neither a chart nor a template.
    let e = err(&[file("app.yaml", NATIVE_APP)]);
    assert_mentions(&e, &["app.yaml", "chartName"]);
    // Unknown key next to the template (typo).
    let app = format!("{NATIVE_APP}templateFilename: t.j2\n");
    let e = err(&[file("app.yaml", &app), file("t.j2", SIMPLE_TEMPLATE)]);
    assert_mentions(&e, &["app.yaml", "templateFilename", "unknown field"]);
    // A syntax error names the file, the application, the profile and the template file.
    let app = format!(
        "{NATIVE_APP}templateFileName: t.j2\nprofiles:\n  - name: small\n    chartValues: \"tag: '1'\"\n"
    );
    let e = err(&[
        file("app.yaml", &app),
        file(
            "t.j2",
            "containers:\n  - name: web\n    image: \"{{ values.tag \"\n",
        ),
    ]);
    assert_mentions(
        &e,
        &[
            "uploaded file app.yaml",
            "application web:1.0.0",
            "profile \"small\"",
            "syntax error",
            "line 3",
            "t.j2",
        ],
    );
    // A structural error names the field in the rendered document.
    let e = err(&[
        file("app.yaml", &app),
        file(
            "t.j2",
            "containers:\n  - name: web\n    image: \"busybox:{{ values.tag }}\"\n    ports: [{containerPort: 80, hostPort: 99999}]\n",
        ),
    ]);
    assert_mentions(
        &e,
        &[
            "application web:1.0.0",
            "profile \"small\"",
            "containers[0].ports[0].hostPort",
        ],
    );
    // An undefined value names it.
    let e = err(&[
        file("app.yaml", &app),
        file(
            "t.j2",
            "containers:\n  - name: web\n    image: \"{{ values.tga }}\"\n",
        ),
    ]);
    assert_mentions(&e, &["values.tga", "undefined"]);
    // A VM error names the VM's field.
    let e = err(&[
        file("app.yaml", &app),
        file(
            "t.j2",
            "containers:\n  - {name: web, image: busybox}\nvms:\n  - {name: vm1, memory: 64}\n",
        ),
    ]);
    assert_mentions(
        &e,
        &[
            "application web:1.0.0",
            "profile \"small\"",
            "vms[0].image",
            "boots from a disk image",
        ],
    );
}

// ---- properties

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        "[a-z]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-c]{1,2}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn templatish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{%".to_string()),
        Just("%}".to_string()),
        Just("{#".to_string()),
        Just(" for x in values ".to_string()),
        Just(" endfor ".to_string()),
        Just(" if ".to_string()),
        Just(" values.a ".to_string()),
        Just("containers:\n".to_string()),
        Just("  - name: a\n    image: x\n".to_string()),
        Just("ports: [{containerPort: ".to_string()),
        Just("|tojson".to_string()),
        Just("range(".to_string()),
        Just(")".to_string()),
        Just("'".to_string()),
        Just("\n".to_string()),
        "[ -~]{0,8}",
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_idempotent(a in json_value()) {
        prop_assert_eq!(merge_values(&a, &a), a);
    }

    #[test]
    fn merging_keeps_override_scalars(a in json_value(), b in json_value()) {
        let m = merge_values(&a, &b);
        let maps_merge = a.is_object() && b.is_object();
        if !(b.is_null() || maps_merge) {
            prop_assert_eq!(m, b);
        }
    }

    #[test]
    fn rendering_any_text_never_panics(text in templatish(), values in json_value()) {
        let app = Application {
            name: "a".into(),
            version: "1".into(),
            workload_template: text,
            ..Default::default()
        };
        let _ = template::check_template(&app);
        let _ = template::render(&app, "", &json!({"a": values}), &ctx());
    }

    #[test]
    fn rendering_random_bytes_never_panics(text in "\\PC{0,200}") {
        let app = Application {
            name: "a".into(),
            version: "1".into(),
            workload_template: text,
            ..Default::default()
        };
        let _ = template::check_template(&app);
    }
}
