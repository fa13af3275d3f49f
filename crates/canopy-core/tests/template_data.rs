//! Values are data (docs/TEMPLATE-FORMAT.md, "Values are data"): whatever a template author
//! wrote around `{{ }}`, a value can only ever be one value in the rendered document, never
//! structure.
//!
//! - `benign_templates_render_as_before` and `examples_render_as_before`: snapshots of templates
//!   and values that rendered fine before values became data (taken with the text-pasting
//!   renderer, unchanged since), so existing templates keep rendering the same;
//! - hostile values (newlines, `: `, `- `, `#`, quotes, brackets, anchors, tags, document
//!   markers, unicode) in every place an author may print them: snapshots of what they render
//!   to, and properties over arbitrary strings.

use canopy_core::catalog::{Application, ParameterTemplate, Profile};
use canopy_core::template::{self, RenderContext};
use canopy_core::upload::{UploadFile, parse_upload};
use serde_json::{Value, json};

fn ctx() -> RenderContext {
    RenderContext {
        deployment_id: "3f2b1c6e-0000-4000-8000-000000000001".into(),
        deployment_name: "shop".into(),
        namespace: "shop".into(),
        project: "default".into(),
        image_registry_url: None,
    }
}

fn app(template: &str, chart_values: &str, params: Vec<ParameterTemplate>) -> Application {
    Application {
        name: "a".into(),
        version: "1.0.0".into(),
        workload_template: template.into(),
        default_profile_name: "default".into(),
        profiles: vec![Profile {
            name: "default".into(),
            chart_values: chart_values.into(),
            parameter_templates: params,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Templates and values that rendered before values became data, with what they mean.
fn benign() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "a number given as a string, printed plain, is a number",
            "containers:\n  - name: a\n    image: x\n    ports: [{containerPort: 80, hostPort: {{ values.port }}}]\n",
            json!({"port": "8080"}),
        ),
        (
            "a boolean given as a string, printed plain, is a boolean",
            "vms:\n  - name: v\n    memory: 64\n    image: {url: \"https://h.example/i\", sha256: \"{{ values.sha }}\"}\n    vnc: {{ values.vnc }}\n",
            json!({"vnc": "true", "sha": "1111111111111111111111111111111111111111111111111111111111111111"}),
        ),
        (
            "plain, quoted, single-quoted, concatenated and tojson",
            "containers:\n  - name: \"{{ values.name }}-x\"\n    image: {{ values.image | tojson }}\n    env:\n      PLAIN: {{ values.s }}\n      DQ: \"{{ values.s }}\"\n      SQ: '{{ values.s }}'\n      CAT: pre-{{ values.s }}-post\n      NUM: {{ values.n }}\n      QNUM: \"{{ values.n }}\"\n      FLOAT: {{ values.f }}\n      VER: {{ values.ver }}\n      QVER: \"{{ values.ver }}\"\n      JVER: {{ values.ver | tojson }}\n      T: {{ true }}\n      QT: \"{{ false }}\"\n      N: {{ none }}\n      EMPTY: {{ values.empty }}\n",
            json!({"name": "web", "image": "busybox:1.36", "s": "hello", "n": 42, "f": 0.5, "ver": "1.10", "empty": ""}),
        ),
        (
            "mappings and lists printed whole",
            "containers:\n  - name: a\n    image: x\n    env: {{ values.env }}\n    args: {{ values.args }}\n    command: {{ values.cmd | tojson }}\n",
            json!({"env": {"A": "1", "B": 2}, "args": ["x", 1, true], "cmd": ["sh", "-c", "echo hi"]}),
        ),
        (
            "keys and values from a loop",
            "containers:\n  - name: a\n    image: x\n    env:\n{% for k, v in values.env | items %}\n      {{ k }}: {{ v | tojson }}\n{% endfor %}\n",
            json!({"env": {"A": "1.10", "B_C": "x y"}}),
        ),
        (
            "flow sequences and mappings",
            "containers:\n  - {name: {{ values.name }}, image: \"x:{{ values.tag }}\", command: [{{ values.a }}, \"{{ values.b }}\", {{ values.n }}]}\n",
            json!({"name": "web", "tag": "1.2", "a": "sh", "b": "-c", "n": 3}),
        ),
        (
            "block scalars",
            "vms:\n  - name: v\n    memory: {{ values.mem }}\n    image: {url: {{ values.url }}, sha256: {{ values.sha | tojson }}}\n    cloudInit:\n      userData: |\n        #cloud-config\n        hostname: {{ values.host }}\n        ssh_authorized_keys:\n          - {{ values.key }}\n          - {{ values.key | tojson }}\n      metaData: >\n        instance-id: {{ values.host }}\n        local-hostname: {{ values.host }}\n",
            json!({"mem": "1Gi", "url": "https://images.example.com/debian.qcow2", "sha": "2222222222222222222222222222222222222222222222222222222222222222", "host": "gw", "key": "ssh-ed25519 AAAA ops@example"}),
        ),
        (
            "numbers and sizes",
            "containers:\n  - name: a\n    image: x\n    resources: {cpus: {{ values.cpus }}, memory: {{ values.memory }}}\n    healthCheck: {command: [\"true\"], intervalSeconds: {{ values.interval }}}\n",
            json!({"cpus": 0.25, "memory": "64Mi", "interval": "7"}),
        ),
        (
            "loops over values, loop variables and conditions",
            "containers:\n{% for w in values.workers %}\n  - name: w-{{ loop.index }}\n    image: {{ w.image }}\n{% if w.port is defined %}\n    ports: [{containerPort: {{ w.port }}, hostPort: {{ w.port + 10000 }}}]\n{% endif %}\n{% endfor %}\n",
            json!({"workers": [{"image": "a:1", "port": 80}, {"image": "b:2"}]}),
        ),
        (
            "filters",
            "containers:\n  - name: {{ values.name | lower }}\n    image: {{ values.image | default('busybox') }}\n    args: [{{ values.list | join('-') }}, {{ values.name | upper }}]\n",
            json!({"name": "WEB", "list": ["a", "b"]}),
        ),
    ]
}

#[test]
fn benign_templates_render_as_before() {
    for (i, (what, template, overrides)) in benign().into_iter().enumerate() {
        let a = app(template, "", vec![]);
        let w = template::render(&a, "", &overrides, &ctx())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        insta::assert_yaml_snapshot!(format!("benign_{i:02}"), w, what);
    }
}

fn example_files(dir: &str) -> Vec<UploadFile> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".j2"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| UploadFile {
            name: n.clone(),
            content: std::fs::read(root.join(n)).unwrap(),
        })
        .collect()
}

/// Every application of `examples/`, with every profile, rendered with its mandatory values.
#[test]
fn examples_render_as_before() {
    for dir in ["web-demo", "web-demo-1.1.0", "edge-demo"] {
        let sets = parse_upload(&example_files(dir)).unwrap_or_else(|e| panic!("{e:?}"));
        for set in sets {
            for a in &set.applications {
                for p in &a.profiles {
                    let mut o = serde_json::Map::new();
                    for (j, t) in p.parameter_templates.iter().enumerate() {
                        if t.mandatory {
                            let v = if t.name.to_lowercase().contains("sha") {
                                json!(format!("{j}").repeat(64))
                            } else if t.name.to_lowercase().contains("url") {
                                json!(format!("file:///var/cache/canopy-test-vm/f{j}"))
                            } else {
                                json!(format!("v{j}"))
                            };
                            o.insert(t.name.clone(), v);
                        }
                    }
                    let w = template::render(a, &p.name, &Value::Object(o), &ctx())
                        .unwrap_or_else(|e| panic!("{dir} {}: {e}", a.name));
                    insta::assert_yaml_snapshot!(format!("example_{dir}_{}_{}", a.name, p.name), w);
                }
            }
        }
    }
}
