//! Rendering a native application's workload template (values put in as data, the document
//! read and checked): `cargo bench -p canopy-core --bench render`. Plain `main`: prints the
//! median of 7 batches per case. Numbers and their context: docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use canopy_core::catalog::{Application, Profile};
use canopy_core::template::{self, RenderContext};
use serde_json::{Value, json};

fn example(file: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../examples/web-demo/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Median time of one render over 7 batches of `n`.
fn time(app: &Application, overrides: &Value, ctx: &RenderContext, n: u32) -> Duration {
    for _ in 0..n.min(50) {
        template::render(app, "", overrides, ctx).unwrap();
    }
    let mut batches: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                template::render(app, "", overrides, ctx).unwrap();
            }
            t.elapsed() / n
        })
        .collect();
    batches.sort();
    batches[3]
}

fn main() {
    let ctx = RenderContext {
        deployment_id: "d".into(),
        deployment_name: "d".into(),
        namespace: "d".into(),
        project: "p".into(),
        ..Default::default()
    };
    let web = Application {
        name: "web".into(),
        version: "1.0.0".into(),
        workload_template: example("web.yaml.j2"),
        default_profile_name: "default".into(),
        profiles: vec![Profile {
            name: "default".into(),
            chart_values: example("web-values.yaml"),
            ..Default::default()
        }],
        ..Default::default()
    };
    let big = Application {
        name: "big".into(),
        version: "1.0.0".into(),
        workload_template: "containers:\n{% for i in range(100) %}\n  - name: c{{ i }}\n    image: \"busybox:{{ values.tag }}\"\n    env:\n{% for k, v in values.env | items %}\n      {{ k }}: {{ v | tojson }}\n{% endfor %}\n    ports: [{containerPort: 80, hostPort: {{ 20000 + i }}}]\n{% endfor %}\n".into(),
        ..Default::default()
    };
    let env: serde_json::Map<String, Value> = (0..10)
        .map(|i| (format!("K{i}"), json!(format!("value {i}"))))
        .collect();
    println!(
        "examples/web-demo web (1 container):      {:>10.1?} per render",
        time(&web, &json!({"port": 18080}), &ctx, 500)
    );
    println!(
        "100 containers x 10 env values (~1300 values): {:>10.1?} per render",
        time(&big, &json!({"tag": "1.36", "env": env}), &ctx, 20)
    );
}
