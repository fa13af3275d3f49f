//! A secret parameter's value never appears in an error (issue 14, item 14): errors about a
//! secret parameter name the parameter and the expected type; errors that show the offending
//! value (the rendered document's checks, the template engine) show `********` where the value
//! came from a secret.

use canopy_core::catalog::{Application, ParameterTemplate, Profile};
use canopy_core::template::{self, RenderContext, TemplateError};
use serde_json::{Value, json};

/// The secret: with a quote, a backslash and a newline, so the escaped forms are checked too.
const SECRET: &str = "S3CR3T-\"q\\uote\"\nnext line";

fn ctx() -> RenderContext {
    RenderContext {
        deployment_id: "d-1".into(),
        deployment_name: "shop".into(),
        namespace: "shop".into(),
        project: "default".into(),
        image_registry_url: None,
        policy: None,
    }
}

fn param(name: &str, ty: &str, mandatory: bool) -> ParameterTemplate {
    ParameterTemplate {
        name: name.into(),
        param_type: ty.into(),
        secret: true,
        mandatory,
        ..Default::default()
    }
}

fn app(template: &str) -> Application {
    Application {
        name: "vault".into(),
        version: "1.0.0".into(),
        workload_template: template.into(),
        default_profile_name: "default".into(),
        profiles: vec![Profile {
            name: "default".into(),
            parameter_templates: vec![
                param("token", "string", true),
                param("pin", "number", false),
                param("on", "boolean", false),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[track_caller]
fn assert_hidden(e: &TemplateError, field: &str) {
    let shown = e.to_string();
    for part in ["S3CR3T", "q\\uote", "next line", "q\\\\uote"] {
        assert!(!shown.contains(part), "{part:?} shown in: {shown}");
    }
    assert_eq!(e.field, field, "{shown}");
    assert!(shown.contains("vault:1.0.0"), "{shown}");
}

fn render_err(template: &str, overrides: Value) -> TemplateError {
    template::render(&app(template), "", &overrides, &ctx()).unwrap_err()
}

const OK: &str =
    "containers:\n  - {name: a, image: busybox, env: {T: {{ values.token | tojson }}}}\n";

#[test]
fn coercion_errors_name_the_parameter_and_type_not_the_value() {
    for (name, value, ty) in [
        ("pin", json!(SECRET), "number"),
        ("pin", json!("SECRET-12x"), "number"),
        ("on", json!(SECRET), "boolean"),
    ] {
        let mut o = json!({"token": "t"});
        o[name] = value;
        let e = render_err(OK, o);
        assert_hidden(&e, &format!("values.{name}"));
        assert!(!e.to_string().contains("SECRET-12x"), "{e}");
        assert!(
            e.message.contains(&format!("secret parameter \"{name}\"")),
            "{e}"
        );
        assert!(e.message.contains(ty), "{e}");
    }
    // The same mistake on a parameter that is not secret does show the value.
    let mut plain = app(OK);
    plain.profiles[0].parameter_templates[1].secret = false;
    let e =
        template::render(&plain, "", &json!({"token": "t", "pin": "eighty"}), &ctx()).unwrap_err();
    assert!(e.message.contains("\"eighty\" is not a number"), "{e}");
}

#[test]
fn mandatory_and_shape_errors_do_not_show_the_value() {
    let e = render_err(OK, json!({"token": " \n "}));
    assert_hidden(&e, "values.token");
    assert!(e.message.contains("mandatory"), "{e}");
    let e = render_err(OK, json!({"token": {"nested": SECRET}}));
    assert_hidden(&e, "values.token");
    assert!(e.message.contains("not a mapping"), "{e}");
    let e = render_err(OK, json!({"token": [SECRET]}));
    assert_hidden(&e, "values.token");
}

#[test]
fn errors_about_the_rendered_document_mask_secret_values() {
    let o = json!({"token": SECRET, "pin": "70000"});
    for (template, field) in [
        (
            "containers:\n  - {name: a, image: busybox, ports: [{containerPort: 80, hostIp: {{ values.token | tojson }}}]}\n",
            "containers[0].ports[0].hostIp",
        ),
        (
            "containers:\n  - {name: a, image: \"busybox:{{ values.token }}\"}\n",
            "containers[0].image",
        ),
        (
            "containers:\n  - {name: \"{{ values.token }}\", image: busybox}\n",
            "containers[0].name",
        ),
        (
            "containers:\n  - {name: a, image: busybox, resources: {memory: \"{{ values.token }}\"}}\n",
            "containers[0].resources.memory",
        ),
        (
            "containers:\n  - {name: a, image: busybox, volumes: [{name: v, mountPath: \"/a/../{{ values.token }}\"}]}\n",
            "containers[0].volumes[0].mountPath",
        ),
        (
            "containers:\n  - {name: a, image: busybox, ports: [{containerPort: 80, hostPort: {{ values.pin }}}]}\n",
            "containers[0].ports[0].hostPort",
        ),
        (
            "vms:\n  - {name: v, memory: 64, kernel: {url: \"https://h.example/{{ values.token }}\", sha256: \"{{ values.token }}\"}}\n",
            "vms[0].kernel.sha256",
        ),
        (
            "vms:\n  - {name: v, memory: 64, image: {url: \"x://{{ values.token }}\", sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"}}\n",
            "vms[0].image.url",
        ),
        (
            "vms:\n  - {name: v, memory: \"{{ values.token }}\", image: {url: \"https://h.example/i\", sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"}}\n",
            "vms[0].memory",
        ),
        (
            "containers:\n  - {name: a, image: busybox, env: {\"{{ values.token }}\": 1, \"{{ values.token }}\": 2}}\n",
            "containers[0].env.********",
        ),
    ] {
        let e = render_err(template, o.clone());
        assert_hidden(&e, field);
        assert!(e.to_string().contains("********"), "{e}");
    }
}

#[test]
fn engine_errors_mask_secret_values() {
    let o = json!({"token": SECRET});
    for template in [
        "containers:\n  - {name: a, image: {{ values.token | int }}}\n",
        "containers:\n  - {name: a, image: {{ values.token.x }}}\n",
        "containers:\n  - {name: a, image: {{ values[values.token] }}}\n",
    ] {
        let e = render_err(template, o.clone());
        assert_hidden(&e, "workloadTemplate");
    }
}

#[test]
fn render_to_text_masks_too() {
    let e = template::render_to_text(&app(OK), "", &json!({"token": "t", "pin": SECRET}), &ctx())
        .unwrap_err();
    assert_hidden(&e, "values.pin");
}

#[test]
fn a_long_message_is_cut_after_secrets_are_masked() {
    // The schema quotes the whole list; item 274 starts at character 988 of it, so the
    // secret straddles the cut at 1000: masked first, the mask is whole.
    let t = "containers:\n  - name: a\n    image: busybox\n    args:\n{% for i in range(1001) %}\n      - {{ values.token if i == 274 else i }}\n{% endfor %}\n";
    let e = render_err(t, json!({"token": "SECRET-long-enough-to-be-cut-in-half"}));
    assert_eq!(e.field, "containers[0].args", "{e}");
    assert!(!e.to_string().contains("SECRET"), "{e}");
    assert!(e.message.contains("273,\"********\",27"), "{e}");
    assert!(e.message.ends_with('…'), "{e}");
}

#[test]
fn a_short_secret_is_masked_where_it_stands_alone() {
    let t = "containers:\n  - {name: a, image: busybox, ports: [{containerPort: 80, hostIp: \"{{ values.token }}\"}]}\n";
    let e = render_err(t, json!({"token": "t"}));
    assert_eq!(e.field, "containers[0].ports[0].hostIp");
    assert!(e.message.starts_with("\"********\" is not"), "{e}");
    assert!(e.message.contains("not an IPv4"), "{e}");
}
