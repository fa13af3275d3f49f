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
        policy: None,
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
        let w =
            template::render(&a, "", &overrides, &ctx()).unwrap_or_else(|e| panic!("{what}: {e}"));
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

// ---- hostile values

/// Strings that would make YAML structure if pasted into the text.
const HOSTILE: &[&str] = &[
    "x\n  - name: evil\n    image: evil",
    "x\n    privileged: true",
    "a: b",
    "- item",
    "# not a comment",
    "\"quoted\"",
    "'single'",
    "{k: v}",
    "[1, 2]",
    "&anchor x",
    "*alias",
    "!!binary aGk=",
    "---\nb: 2",
    "...",
    "| block",
    "> folded",
    "%YAML 1.2",
    "@reserved `tick`",
    "key: \"a\nb\"\n---\n",
    "  leading and trailing  ",
    "x\u{E000}0000000000000000000\u{E001}y",
    "héllo wörld ✓ 日本",
    "",
];

/// A document printing one value everywhere an author may print it.
const EVERYWHERE: &str = r#"plain: {{ values.v }}
dq: "{{ values.v }}"
sq: 'a-{{ values.v }}'
cat: pre {{ values.v }} post
json: {{ values.v | tojson }}
literal: |
  line {{ values.v }}
folded: >-
  {{ values.v }}
flow: [{{ values.v }}, "{{ values.v }}", x]
map: {k: {{ values.v }}, "q": '{{ values.v }}'}
"key-{{ values.v }}": key
list:
  - {{ values.v }}
  - a{{ values.v }}
# a comment {{ values.v }}
pline:
  {{ values.v }}
qline:
  "{{ values.v }}"
tagged: !!str {{ values.v }}
end: {{ values.n }}
"#;

/// What [`EVERYWHERE`] renders to: the YAML of the document (values as data), read back.
fn everywhere(v: &str) -> Result<Value, template::TemplateError> {
    let a = app(EVERYWHERE, "n: 7\n", vec![]);
    let text = template::render_to_text(&a, "", &json!({"v": v}), &ctx())?;
    Ok(canopy_core::yaml::parse_one(&text).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

/// True when YAML could read `v` as anything but this very string in a plain scalar, and so
/// a plain `{{ v }}` must give the string itself. Not for the words a plain scalar types: `""`
/// and `~` are null there by design, as `null`, `true` and numbers are typed (see
/// `template::data`); proptest found `~` once.
fn could_be_structure(v: &str) -> bool {
    !matches!(v, "" | "~")
        && !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.' | '_'))
}

#[track_caller]
fn assert_data_everywhere(v: &str) {
    let doc = everywhere(v).unwrap_or_else(|e| panic!("{v:?}: {e}"));
    let m = doc.as_object().expect("a mapping");
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    let mut expected = vec![
        "plain", "dq", "sq", "cat", "json", "literal", "folded", "flow", "map", "list", "pline",
        "qline", "tagged", "end",
    ];
    let key = format!("key-{v}");
    expected.push(&key);
    expected.sort_unstable();
    assert_eq!(keys, expected, "{v:?}");
    let s = |x: &str| Value::String(x.to_string());
    assert!(!m["plain"].is_array() && !m["plain"].is_object(), "{v:?}");
    for plain in ["plain", "pline"] {
        assert!(!m[plain].is_array() && !m[plain].is_object(), "{v:?}");
        if could_be_structure(v) {
            assert_eq!(m[plain], s(v));
        } else if v == "~" {
            assert_eq!(m[plain], Value::Null, "{v:?}");
        }
    }
    assert_eq!(m["qline"], s(v));
    assert_eq!(m["tagged"], s(v));
    assert_eq!(m["dq"], s(v));
    assert_eq!(m["sq"], s(&format!("a-{v}")));
    assert_eq!(m["cat"], s(&format!("pre {v} post")));
    assert_eq!(m["json"], s(v));
    assert_eq!(m["literal"], s(&format!("line {v}\n")));
    assert_eq!(m["folded"], s(v));
    let flow = m["flow"].as_array().unwrap();
    assert_eq!(flow.len(), 3);
    assert_eq!((&flow[1], &flow[2]), (&s(v), &s("x")));
    assert_eq!(m["map"]["q"], s(v));
    assert_eq!(m["map"].as_object().unwrap().len(), 2);
    assert_eq!(m["list"].as_array().unwrap().len(), 2);
    assert_eq!(m["list"][1], s(&format!("a{v}")));
    assert_eq!(m[&key], s("key"));
    assert_eq!(m["end"], json!(7));
}

#[test]
fn hostile_values_are_data_everywhere() {
    for v in HOSTILE {
        assert_data_everywhere(v);
    }
}

#[test]
fn hostile_values_snapshot() {
    let shown: Vec<(String, Value)> = HOSTILE
        .iter()
        .map(|v| (v.to_string(), everywhere(v).unwrap()))
        .collect();
    insta::assert_yaml_snapshot!("hostile_everywhere", shown);
}

/// The attack of issue 14: a label with newlines added a second container.
const LABELLED: &str = "containers:\n  - name: web\n    image: busybox\n    env:\n      X: {{ values.label }}\n      Y: \"{{ values.label }}\"\n    command: [sh, -c, 'echo {{ values.label }}']\n    args:\n      - {{ values.label }}\n";

#[test]
fn a_value_cannot_add_a_container() {
    let a = app(LABELLED, "", vec![]);
    let label = "x\n  - name: evil\n    image: evil.example.com/miner\n    ports: [{containerPort: 22, hostPort: 22}]";
    let w = template::render(&a, "", &json!({"label": label}), &ctx()).unwrap();
    assert_eq!(w.containers.len(), 1);
    assert_eq!(w.containers[0].env["X"], label);
    assert_eq!(w.containers[0].env["Y"], label);
    assert_eq!(w.containers[0].command[2], format!("echo {label}"));
    assert_eq!(w.containers[0].args, [label]);
    assert!(w.containers[0].ports.is_empty());
    insta::assert_yaml_snapshot!("labelled", w);
}

#[test]
fn control_flow_sees_the_values_and_macros_print_values() {
    let t = "{% macro m(x) %}\n  - name: {{ x }}\n{% endmacro %}\ncontainers:\n{% for l in values.labels %}\n{% if l == \"a\\nb\" %}\n  - name: c{{ loop.index }}\n    image: busybox\n    env: {L: {{ l }}, M: {{ m(l) }}}\n{% endif %}\n{% endfor %}\n";
    let a = app(t, "", vec![]);
    let w = template::render(&a, "", &json!({"labels": ["a\nb", "c", "a\nb"]}), &ctx()).unwrap();
    let names: Vec<&str> = w.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["c1", "c3"]);
    assert_eq!(w.containers[0].env["L"], "a\nb");
    // A macro's output printed with {{ }} is one value (its own values put in as text).
    assert_eq!(w.containers[0].env["M"], "  - name: a\nb\n");
}

#[test]
fn values_typed_by_parameters_keep_their_type() {
    let t = "containers:\n  - name: a\n    image: x\n    ports: [{containerPort: 80, hostPort: {{ values.port }}}]\n    env: {V: {{ values.version }}}\n";
    let params = vec![
        ParameterTemplate {
            name: "port".into(),
            param_type: "number".into(),
            ..Default::default()
        },
        ParameterTemplate {
            name: "version".into(),
            param_type: "string".into(),
            ..Default::default()
        },
    ];
    let a = app(t, "version: v1\n", params);
    let w = template::render(&a, "", &json!({"port": "9090", "version": "1.10"}), &ctx()).unwrap();
    assert_eq!(w.containers[0].ports[0].host_port, Some(9090));
    // A string printed plain is typed as YAML types a plain scalar (as when values were
    // pasted into the text): quote it or use tojson to keep "1.10".
    assert_eq!(w.containers[0].env["V"], "1.1");
}

#[test]
fn a_filter_cutting_a_captured_value_is_an_error() {
    let t = "{% set x %}{{ values.v }}{% endset %}containers:\n  - {name: a, image: \"{{ x[:-1] }}\"}\n";
    let e = template::render(&app(t, "", vec![]), "", &json!({"v": "abcdef"}), &ctx()).unwrap_err();
    assert_eq!(e.field, "workloadTemplate", "{e}");
    assert!(e.message.contains("cut or changed"), "{e}");
}

#[test]
fn values_count_toward_the_output_limit() {
    let t = "containers:\n  - {name: a, image: x, env: {A: \"{{ values.big }}\", B: \"{{ values.big }}\"}}\n";
    let a = app(t, "", vec![]);
    let big = "x".repeat(400_000);
    template::render(&a, "", &json!({"big": big}), &ctx()).unwrap();
    let big = "x".repeat(600_000);
    let e = template::render(&a, "", &json!({"big": big}), &ctx()).unwrap_err();
    assert_eq!(e.field, "workloadTemplate", "{e}");
    assert!(e.message.contains("more than 1000000"), "{e}");
    // Many small values: the tokens make the text longer than the document, which is allowed.
    let many = "containers:\n{% for c in range(40) %}\n  - name: c{{ c }}\n    image: x\n    args:\n{% for i in range(1000) %}\n      - {{ i % 10 }}\n{% endfor %}\n{% endfor %}\n";
    let w = template::render(&app(many, "", vec![]), "", &Value::Null, &ctx()).unwrap();
    assert_eq!(w.containers.len(), 40);
    assert_eq!(w.containers[39].args.len(), 1000);
    // Too many: the schema's message quotes the list, shortened.
    let e = template::render(
        &app(&many.replace("1000", "1001"), "", vec![]),
        "",
        &Value::Null,
        &ctx(),
    )
    .unwrap_err();
    assert_eq!(e.field, "containers[0].args", "{e}");
    assert!(
        e.message.chars().count() <= 1001 && e.message.ends_with('…'),
        "{e}"
    );
}

fn hostile_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "\\PC{0,4}",
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("\t".to_string()),
        Just(": ".to_string()),
        Just("- ".to_string()),
        Just(" #".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("\\".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(",".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("!!str ".to_string()),
        Just("---".to_string()),
        Just("...".to_string()),
        Just("|".to_string()),
        Just(">".to_string()),
        Just("%".to_string()),
        Just("\u{E000}".to_string()),
        Just("\u{E001}".to_string()),
        "[0-9]{1,3}",
        Just("日本".to_string()),
    ];
    proptest::collection::vec(piece, 0..10).prop_map(|v| v.concat())
}

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_value_is_data_everywhere(v in hostile_string()) {
        assert_data_everywhere(&v);
    }

    #[test]
    fn any_label_leaves_one_container(label in hostile_string()) {
        // Printed plain, these are null (as YAML reads them), and args cannot hold null.
        prop_assume!(!matches!(label.as_str(), "" | "~" | "null" | "Null" | "NULL"));
        let a = app(LABELLED, "", vec![]);
        let w = template::render(&a, "", &json!({"label": label}), &ctx()).unwrap();
        prop_assert_eq!(w.containers.len(), 1);
        prop_assert_eq!(w.containers[0].env.len(), 2);
        prop_assert_eq!(&w.containers[0].env["Y"], &label);
        prop_assert_eq!(&w.containers[0].command[2], &format!("echo {label}"));
        prop_assert_eq!(w.containers[0].args.len(), 1);
        if could_be_structure(&label) {
            prop_assert_eq!(&w.containers[0].env["X"], &label);
            prop_assert_eq!(&w.containers[0].args[0], &label);
        }
    }
}
