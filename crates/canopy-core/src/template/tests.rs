use serde_json::json;

use super::*;
use crate::catalog::ParameterTemplate;

const WEB: &str = r#"containers:
  - name: web
    image: "busybox:{{ values.image.tag }}"
    command: ["httpd", "-f", "-p", "80"]
    args: []
    env: {GREETING: "{{ values.greeting }}", PORT: {{ values.port }}}
    ports: [{containerPort: 80, hostPort: {{ values.port }}, protocol: tcp, hostIp: 127.0.0.1}]
    volumes: [{name: data, mountPath: /data, readOnly: false}]
    healthCheck: {command: ["wget", "-q", "-O-", "http://localhost/"], intervalSeconds: 5, timeoutSeconds: 3, retries: 3, startPeriodSeconds: 0}
    restartPolicy: always
    resources: {cpus: 0.5, memory: 64Mi}
vms: []
"#;

fn web_app(template: &str) -> Application {
    Application {
        name: "web".into(),
        version: "1.0.0".into(),
        workload_template: template.into(),
        default_profile_name: "default".into(),
        profiles: vec![Profile {
            name: "default".into(),
            chart_values: "image:\n  tag: \"1.36\"\ngreeting: hello\nport: 8080\n".into(),
            parameter_templates: vec![ParameterTemplate {
                name: "port".into(),
                param_type: "number".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(super) fn ctx() -> RenderContext {
    RenderContext {
        deployment_id: "d-1".into(),
        deployment_name: "shop".into(),
        namespace: "shop".into(),
        project: "default".into(),
        image_registry_url: None,
        policy: None,
    }
}

/// Renders YAML text (no template syntax needed) as the only profile-less app.
pub(super) fn workloads(doc: &str) -> Result<Workloads, TemplateError> {
    let app = Application {
        name: "x".into(),
        version: "1".into(),
        workload_template: doc.into(),
        ..Default::default()
    };
    render(&app, "", &Value::Null, &ctx())
}

/// Renders `containers:` YAML text (no template syntax needed) as the only profile-less app.
fn structure(doc: &str) -> Result<Vec<canopy_proto::ContainerSpec>, TemplateError> {
    workloads(doc).map(|w| w.containers)
}

#[track_caller]
pub(super) fn assert_err<T: std::fmt::Debug>(r: Result<T, TemplateError>, field: &str, says: &str) {
    let e = r.expect_err("expected an error");
    assert_eq!(e.field, field, "{e}");
    assert!(e.message.contains(says), "{e}");
}

#[test]
fn renders_the_example() {
    let app = web_app(WEB);
    check_template(&app).unwrap();
    let c = render(&app, "default", &json!({"port": "9090"}), &ctx())
        .unwrap()
        .containers;
    assert_eq!(c.len(), 1);
    let c = &c[0];
    assert_eq!(c.name, "web");
    assert_eq!(c.image, "busybox:1.36");
    assert_eq!(c.command, ["httpd", "-f", "-p", "80"]);
    assert_eq!(c.env["GREETING"], "hello");
    assert_eq!(c.env["PORT"], "9090");
    assert_eq!(c.ports[0].host_port, Some(9090));
    assert_eq!(c.ports[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(c.volumes[0].mount_path, "/data");
    let h = c.health_check.as_ref().unwrap();
    assert_eq!(
        (h.interval_seconds, h.timeout_seconds, h.retries),
        (5, 3, 3)
    );
    assert_eq!(c.restart_policy, canopy_proto::RestartPolicy::Always);
    assert_eq!(c.cpus, Some(0.5));
    assert_eq!(c.memory_bytes, Some(64 << 20));
    // The default profile is used when none is named.
    let d = render(&app, "", &Value::Null, &ctx()).unwrap().containers;
    assert_eq!(d[0].ports[0].host_port, Some(8080));
}

#[test]
fn context_variables() {
    let t = r#"containers:
  - name: "{{ app.name }}-{{ profile }}"
    image: img
    env:
      ID: "{{ deployment.id }}"
      DEP: "{{ deployment.name }}"
      NS: "{{ app.namespace }}"
      VER: "{{ app.version }}"
      PROJECT: "{{ project }}"
"#;
    let c = render(&web_app(t), "default", &Value::Null, &ctx())
        .unwrap()
        .containers;
    assert_eq!(c[0].name, "web-default");
    let env = &c[0].env;
    assert_eq!(
        (
            &env["ID"][..],
            &env["DEP"][..],
            &env["NS"][..],
            &env["VER"][..],
            &env["PROJECT"][..]
        ),
        ("d-1", "shop", "shop", "1.0.0", "default")
    );
}

#[test]
fn images_resolve_against_the_registry() {
    let t = "containers:\n  - {name: a, image: busybox}\n  - {name: b, image: quay.io/x/y:1}\n";
    let mut c = ctx();
    c.image_registry_url = Some("https://registry.example.com/apps".into());
    let out = render(&web_app(t), "", &Value::Null, &c)
        .unwrap()
        .containers;
    assert_eq!(out[0].image, "registry.example.com/apps/busybox");
    assert_eq!(out[1].image, "quay.io/x/y:1");
}

#[test]
fn defaults_and_values_merge() {
    let t = "containers:\n  - name: a\n    image: \"x:{{ values.image.tag }}\"\n    args: [\"{{ values.mode }}\", \"{{ values.workers }}\"]\n";
    let mut app = web_app(t);
    app.profiles[0].chart_values = "image: {tag: \"1\", pull: always}\nmode: fast\n".into();
    app.profiles[0].parameter_templates = vec![ParameterTemplate {
        name: "workers".into(),
        param_type: "number".into(),
        default: "4".into(),
        ..Default::default()
    }];
    let c = render(&app, "default", &json!({"image": {"tag": "2"}}), &ctx())
        .unwrap()
        .containers;
    assert_eq!(c[0].image, "x:2");
    assert_eq!(c[0].args, ["fast", "4"]);
    let c = render(&app, "default", &json!({"workers": "8"}), &ctx())
        .unwrap()
        .containers;
    assert_eq!(c[0].args, ["fast", "8"]);
}

#[test]
fn undefined_values_are_errors_naming_them() {
    let t = "containers:\n  - name: a\n    image: \"x:{{ values.image.tagg }}\"\n";
    let e = render(&web_app(t), "default", &Value::Null, &ctx()).unwrap_err();
    assert_eq!(e.application, "web:1.0.0");
    assert_eq!(e.profile, "default");
    assert_eq!(e.field, "workloadTemplate");
    assert!(e.message.contains("values.image.tagg"), "{e}");
    assert!(e.message.contains("line 3"), "{e}");
    // ... also at upload.
    let e = check_template(&web_app(t)).unwrap_err();
    assert!(e.message.contains("values.image.tagg"), "{e}");
    // `is defined` and `default` are the ways to handle optional values.
    let ok = "containers:\n  - name: a\n    image: \"x:{{ values.nope | default('latest') }}\"\n{% if values.extra is defined %}    args: [x]\n{% endif %}";
    let c = render(&web_app(ok), "default", &Value::Null, &ctx())
        .unwrap()
        .containers;
    assert_eq!(c[0].image, "x:latest");
    assert!(c[0].args.is_empty());
}

#[test]
fn syntax_errors_at_upload_name_app_and_profile() {
    let t = "containers:\n  - name: a\n    image: \"{{ values.image.tag \"\n";
    let e = check_template(&web_app(t)).unwrap_err();
    assert_eq!(e.application, "web:1.0.0");
    assert_eq!(e.profile, "default");
    assert_eq!(e.field, "workloadTemplate");
    assert!(e.message.starts_with("syntax error"), "{e}");
    assert!(e.message.contains("line 3"), "{e}");
    let e = check_template(&web_app("{% for c in values %}")).unwrap_err();
    assert!(e.message.starts_with("syntax error"), "{e}");
}

#[test]
fn structural_errors_name_the_field() {
    assert_err(
        structure(
            "containers:\n  - {name: a, image: x, ports: [{containerPort: 80, hostPort: 70000}]}\n",
        ),
        "containers[0].ports[0].hostPort",
        "65535",
    );
    assert_err(
        structure("containers:\n  - {name: a, image: x, ports: [{containerPort: 0}]}\n"),
        "containers[0].ports[0].containerPort",
        "minimum",
    );
    assert_err(
        structure("containers:\n  - {name: a, image: x, imagee: y}\n"),
        "containers[0].imagee",
        "unknown field",
    );
    assert_err(
        structure("containers:\n  - {name: a}\n"),
        "containers[0].image",
        "required",
    );
    assert_err(
        structure("containers:\n  - {name: a, image: \"\"}\n"),
        "containers[0].image",
        "",
    );
    assert_err(
        structure("containers:\n  - {name: Web, image: x}\n"),
        "containers[0].name",
        "DNS label",
    );
    assert_err(
        structure("containers:\n  - {name: a, image: x}\n  - {name: a, image: y}\n"),
        "containers[1].name",
        "containers[0]",
    );
    assert_err(
        structure(
            "containers:\n  - {name: a, image: x, ports: [{containerPort: 80, hostPort: 8080}]}\n  - {name: b, image: x, ports: [{containerPort: 81, hostPort: 8080}]}\n",
        ),
        "containers[1].ports[0].hostPort",
        "8080/tcp",
    );
    // Same host port over another protocol is fine.
    structure("containers:\n  - {name: a, image: x, ports: [{containerPort: 53, hostPort: 53}, {containerPort: 53, hostPort: 53, protocol: udp}]}\n").unwrap();
    assert_err(
        structure("containers:\n  - {name: a, image: x, env: {1BAD: x}}\n"),
        "containers[0].env",
        "environment variable",
    );
    assert_err(
        structure("containers:\n  - {name: a, image: x, volumes: [{name: Data, mountPath: /d}]}\n"),
        "containers[0].volumes[0].name",
        "DNS label",
    );
    assert_err(
        structure("containers:\n  - {name: a, image: x, volumes: [{name: d, mountPath: data}]}\n"),
        "containers[0].volumes[0].mountPath",
        "absolute",
    );
    assert_err(
        structure(
            "containers:\n  - {name: a, image: x, volumes: [{name: d, mountPath: /a/../b}]}\n",
        ),
        "containers[0].volumes[0].mountPath",
        "..",
    );
    assert_err(
        structure(
            "containers:\n  - {name: a, image: x, volumes: [{name: d, mountPath: /a}, {name: e, mountPath: /a/}]}\n",
        ),
        "containers[0].volumes[1].mountPath",
        "volumes[0]",
    );
    assert_err(
        structure("containers:\n  - {name: a, image: x, resources: {memory: 64MB}}\n"),
        "containers[0].resources.memory",
        "64Mi",
    );
    assert_err(
        structure("containers:\n  - {name: a, image: x, resources: {memory: 1Mi}}\n"),
        "containers[0].resources.memory",
        "6Mi",
    );
    assert_err(
        structure("containers:\n  - {name: a, image: x, resources: {cpus: 0}}\n"),
        "containers[0].resources.cpus",
        "",
    );
    assert_err(
        structure("containers:\n  - {name: a, image: x, restartPolicy: sometimes}\n"),
        "containers[0].restartPolicy",
        "",
    );
    assert_err(
        structure(
            "containers:\n  - {name: a, image: x, ports: [{containerPort: 80, hostIp: localhost}]}\n",
        ),
        "containers[0].ports[0].hostIp",
        "IPv4",
    );
    assert_err(
        structure("containers:\n  - {name: a, image: x, healthCheck: {command: []}}\n"),
        "containers[0].healthCheck.command",
        "",
    );
    assert_err(structure("containers: []\n"), "containers", "at least one");
    assert_err(structure("- a\n"), "", "mapping");
    assert_err(structure("{# nothing #}\n"), "workloadTemplate", "empty");
    assert_err(
        structure("a: 1\n---\nb: 2\n"),
        "workloadTemplate",
        "2 YAML documents",
    );
    assert_err(
        structure("containers: [\n"),
        "workloadTemplate",
        "valid YAML",
    );
    assert_err(structure("kontainers: []\n"), "kontainers", "unknown field");
}

#[test]
fn structural_errors_at_upload_name_profile_and_field() {
    let t = "containers:\n  - name: a\n    image: x\n    ports: [{containerPort: 80, hostPort: {{ values.port }}}]\n";
    let mut app = web_app(t);
    app.profiles.push(Profile {
        name: "big".into(),
        chart_values: "port: 99999\n".into(),
        ..Default::default()
    });
    let e = check_template(&app).unwrap_err();
    assert_eq!(e.profile, "big");
    assert_eq!(e.field, "containers[0].ports[0].hostPort");
    assert_eq!(
        e.to_string(),
        format!(
            "application web:1.0.0 profile big containers[0].ports[0].hostPort: {}",
            e.message
        )
    );
}

#[test]
fn empty_vms_are_no_vms() {
    let w = workloads("containers:\n  - {name: a, image: x}\nvms: []\n").unwrap();
    assert!(w.vms.is_empty());
    workloads("containers:\n  - {name: a, image: x}\nvms:\n").unwrap();
    assert_err(
        workloads("vms: []\ncontainers: []\n"),
        "containers",
        "neither containers nor vms",
    );
    assert_err(
        workloads("vms:\n"),
        "containers",
        "neither containers nor vms",
    );
}

#[test]
fn nulls_and_scalars() {
    let c = structure(
        "containers:\n  - name: a\n    image: x\n    args:\n    env: {EMPTY: , N: 3, B: true, F: 1.5}\n    command: [sh, -c, 1]\n    ports:\n    healthCheck: {command: [true]}\n",
    )
    .unwrap();
    assert!(c[0].args.is_empty() && c[0].ports.is_empty());
    assert_eq!(c[0].env["EMPTY"], "");
    assert_eq!(c[0].env["N"], "3");
    assert_eq!(c[0].env["B"], "true");
    assert_eq!(c[0].env["F"], "1.5");
    assert_eq!(c[0].command, ["sh", "-c", "1"]);
    let h = c[0].health_check.as_ref().unwrap();
    assert_eq!(h.command, ["true"]);
    assert_eq!(
        (
            h.interval_seconds,
            h.timeout_seconds,
            h.retries,
            h.start_period_seconds
        ),
        (10, 5, 3, 0)
    );
    assert_eq!(c[0].restart_policy, canopy_proto::RestartPolicy::Always);
}

#[test]
fn parameters_at_render() {
    let t = "containers:\n  - name: a\n    image: x\n    env: {PW: \"{{ values.db.password }}\", DEBUG: \"{{ values.debug }}\"}\n";
    let mut app = web_app(t);
    app.profiles[0].chart_values = "debug: false\n".into();
    app.profiles[0].parameter_templates = vec![
        ParameterTemplate {
            name: "db.password".into(),
            param_type: "string".into(),
            mandatory: true,
            secret: true,
            ..Default::default()
        },
        ParameterTemplate {
            name: "debug".into(),
            param_type: "boolean".into(),
            ..Default::default()
        },
    ];
    // At upload, the mandatory secret has a placeholder.
    check_template(&app).unwrap();
    let e = render(&app, "default", &Value::Null, &ctx()).unwrap_err();
    assert_eq!(e.field, "values.db.password");
    assert!(e.message.contains("mandatory"), "{e}");
    let e = render(
        &app,
        "default",
        &json!({"debug": "maybe", "db": {"password": "pw"}}),
        &ctx(),
    )
    .unwrap_err();
    assert!(e.message.contains("boolean"), "{e}");
    let c = render(
        &app,
        "default",
        &json!({"db": {"password": "pw"}, "debug": "TRUE"}),
        &ctx(),
    )
    .unwrap()
    .containers;
    assert_eq!(c[0].env["PW"], "pw");
    assert_eq!(c[0].env["DEBUG"], "true");
    // Booleans and none print the YAML way.
    let t = "containers:\n  - {name: a, image: x, env: {A: \"{{ true }}\", B: {{ false }}, C: \"{{ none }}\"}}\n";
    let c = structure(t).unwrap();
    assert_eq!(
        (&c[0].env["A"][..], &c[0].env["B"][..], &c[0].env["C"][..]),
        ("true", "false", "null")
    );
    // A masked copy is refused.
    let e = render(
        &app,
        "default",
        &json!({"db": {"password": SECRET_MASK}}),
        &ctx(),
    )
    .unwrap_err();
    assert!(e.message.contains("mask"), "{e}");
}

#[test]
fn unknown_profile_and_chart_apps() {
    let e = render(&web_app(WEB), "nope", &Value::Null, &ctx()).unwrap_err();
    assert_eq!(e.field, "profile");
    let mut chart = web_app("");
    chart.chart_name = "c".into();
    assert!(render(&chart, "default", &Value::Null, &ctx()).is_err());
    check_template(&chart).unwrap();
}

#[test]
fn bounded_work_and_no_includes() {
    let e = structure(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    )
    .unwrap_err();
    assert!(e.message.contains("too much work"), "{e}");
    let e = structure("{% include 'other.yaml' %}").unwrap_err();
    assert!(e.message.contains("include"), "{e}");
    let e = structure("{{ 'x' * 10000000 }}").unwrap_err();
    assert_eq!(e.field, "workloadTemplate", "{e}");
}

#[test]
fn loops_render_clean_yaml() {
    let t = r#"containers:
{% for w in values.workers %}
  - name: "worker-{{ loop.index }}"
    image: "{{ w.image }}"
    env:
{% for k, v in w.env | items %}
      {{ k }}: {{ v | tojson }}
{% endfor %}
{% endfor %}
"#;
    let mut app = web_app(t);
    app.profiles[0].chart_values =
        "workers:\n  - {image: a, env: {X: \"1.10\"}}\n  - {image: b, env: {}}\n".into();
    let c = render(&app, "default", &Value::Null, &ctx())
        .unwrap()
        .containers;
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].env["X"], "1.10");
    assert!(c[1].env.is_empty());
}
