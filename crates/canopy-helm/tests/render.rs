//! Rendering with the real Helm CLI (3 and 4): the fixture charts, a chart fetched over OCI with
//! a profile's values and parameter templates, and every bound: a chart Helm cannot render
//! (its message, secrets masked), time, memory and output size, and Helm missing or too old.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use canopy_core::catalog::{ParameterTemplate, Profile};
use canopy_helm::{
    ChartSource, ChartValues, Credentials, HelmBinary, HelmError, RenderError, RenderLimits,
    RenderRequest, Renderer, chart_values,
};
use common::*;
use serde_json::json;

fn values(v: serde_json::Value) -> ChartValues {
    ChartValues::from_value(v).unwrap()
}

#[tokio::test]
async fn helm_missing_or_unsupported_is_reported_clearly() {
    let e = HelmBinary::locate(Some(Path::new("/nonexistent/helm")))
        .await
        .unwrap_err();
    assert!(matches!(e, HelmError::NotFound { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("/nonexistent/helm") && text.contains("install Helm"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, script: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.path().join(name);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    // Something called helm that is Helm 2.
    let old = write("helm2", "#!/bin/sh\necho v2.17.0\n");
    let e = HelmBinary::locate(Some(&old)).await.unwrap_err();
    assert!(matches!(e, HelmError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("v2.17.0"), "{e}");
    // Something that is not Helm at all.
    let broken = write("broken", "#!/bin/sh\nexit 3\n");
    let e = HelmBinary::locate(Some(&broken)).await.unwrap_err();
    assert!(matches!(e, HelmError::NotRunnable { .. }), "{e}");
    let not_exec = dir.path().join("plain");
    std::fs::write(&not_exec, "x").unwrap();
    let e = HelmBinary::locate(Some(&not_exec)).await.unwrap_err();
    assert!(matches!(e, HelmError::NotRunnable { .. }), "{e}");
}

#[tokio::test]
async fn helm_3_and_4_render_the_fixture_charts_without_hooks_or_tests() {
    let (Some(h3), Some(h4)) = (helm().await, helm4().await) else {
        return;
    };
    assert_eq!(h3.version().major, 3);
    assert_eq!(h4.version().major, 4);
    for helm in [h3, h4] {
        let r = Renderer::new(helm.clone(), RenderLimits::default());
        for chart in ["canopy-web", "canopy-pair", "canopy-stateful"] {
            let c = fixture(&helm, chart);
            let out = r
                .render(RenderRequest {
                    chart: &c,
                    release: "demo",
                    namespace: "edge",
                    values: &values(json!({})),
                })
                .await
                .unwrap_or_else(|e| panic!("{} {chart}: {e}", helm.version()));
            assert!(!out.documents.is_empty());
            assert!(
                out.documents
                    .iter()
                    .all(|d| d.annotation("helm.sh/hook").is_none()),
                "no hook or test document is kept"
            );
            assert!(!out.manifest.contains("helm.sh/hook"), "{chart}");
            for d in &out.documents {
                assert!(
                    d.source.starts_with(&format!("{chart}/templates/")),
                    "{}",
                    d.source
                );
            }
        }
    }
}

#[tokio::test]
async fn a_fetched_chart_renders_with_profile_values_and_parameters() {
    let (Some(helm), Some(registry)) = (helm().await, env("CANOPY_TEST_CHART_REGISTRY")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), |_, _| {});
    let chart = f
        .fetch(&ChartSource {
            root_url: format!("oci://{registry}/charts"),
            chart_name: "tutorial-server".into(),
            chart_version: "0.1.0".into(),
            credentials: Credentials::default(),
        })
        .await
        .unwrap();
    // The reference sample's profile "alternate-pt" with its parameter templates.
    let pkg = reference_dir().join("developer-guide-tutorial");
    let profile = Profile {
        name: "alternate-pt".into(),
        chart_values: std::fs::read_to_string(pkg.join("tutorial-server-values-alternate-pt.yaml"))
            .unwrap(),
        parameter_templates: vec![
            ParameterTemplate {
                name: "tutorialServer.greeting".into(),
                param_type: "string".into(),
                default: "Deployed by Application Orchestration (pt)".into(),
                ..Default::default()
            },
            ParameterTemplate {
                name: "tutorialServer.initialCount".into(),
                param_type: "number".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let v = chart_values(
        Some(&profile),
        &json!({"tutorialServer": {"initialCount": "7"}, "image": {"repository": "localhost/tutorial-server-image"}}),
    )
    .unwrap();
    let r = Renderer::new(helm, RenderLimits::default());
    let out = r
        .render(RenderRequest {
            chart: &chart,
            release: "tutorial-server",
            namespace: "tutorial",
            values: &v,
        })
        .await
        .unwrap();
    let dep = out
        .documents
        .iter()
        .find(|d| d.kind() == "Deployment")
        .unwrap();
    let c = &dep.object["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "localhost/tutorial-server-image:0.1.0");
    assert_eq!(
        c["env"][0]["value"],
        "Deployed by Application Orchestration (alternate-pt)"
    );
    assert_eq!(
        c["env"][1]["value"], "7",
        "the override, coerced to a number, quoted by the chart"
    );
    assert_eq!(dep.namespace(), "");
    // Same inputs, same key; other values, another key.
    let again = r
        .render(RenderRequest {
            chart: &chart,
            release: "tutorial-server",
            namespace: "tutorial",
            values: &v,
        })
        .await
        .unwrap();
    assert_eq!(again.key, out.key);
    assert_eq!(again.manifest, out.manifest);
    let other = chart_values(
        Some(&profile),
        &json!({"tutorialServer": {"initialCount": 8}}),
    )
    .unwrap();
    let third = r
        .render(RenderRequest {
            chart: &chart,
            release: "tutorial-server",
            namespace: "tutorial",
            values: &other,
        })
        .await
        .unwrap();
    assert_ne!(third.key, out.key);
}

#[tokio::test]
async fn a_chart_that_fails_carries_helms_message_without_secrets() {
    let Some(helm) = helm().await else {
        return;
    };
    let r = Renderer::new(helm.clone(), RenderLimits::default());
    let bad = fixture(&helm, "refused/bad-yaml");
    let e = r
        .render(RenderRequest {
            chart: &bad,
            release: "bad",
            namespace: "edge",
            values: &values(json!({})),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, RenderError::Helm { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("chart bad-yaml:0.1.0 failed to render"),
        "{text}"
    );
    assert!(
        text.contains("bad-yaml/templates/broken.yaml"),
        "names the template: {text}"
    );

    let fails = fixture(&helm, "refused/fails");
    let profile = Profile {
        name: "p".into(),
        parameter_templates: vec![ParameterTemplate {
            name: "token".into(),
            param_type: "string".into(),
            secret: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let v = chart_values(Some(&profile), &json!({"token": "tok-5f3a9c"})).unwrap();
    let e = r
        .render(RenderRequest {
            chart: &fails,
            release: "f",
            namespace: "edge",
            values: &v,
        })
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("is not accepted by this chart"), "{text}");
    assert!(!text.contains("tok-5f3a9c"), "secret leaked: {text}");
    assert!(text.contains("********"), "{text}");

    for (release, namespace) in [
        ("--set", "edge"),
        ("ok", "Edge_1"),
        (&*"r".repeat(54), "edge"),
    ] {
        let e = r
            .render(RenderRequest {
                chart: &bad,
                release,
                namespace,
                values: &values(json!({})),
            })
            .await
            .unwrap_err();
        assert!(matches!(e, RenderError::Invalid { .. }), "{e}");
    }
}

#[tokio::test]
async fn a_render_that_takes_too_long_is_stopped() {
    let Some(helm) = helm().await else {
        return;
    };
    let slow = fixture(&helm, "refused/slow");
    let r = Renderer::new(
        helm,
        RenderLimits {
            timeout: Duration::from_secs(1),
            ..RenderLimits::default()
        },
    );
    let started = Instant::now();
    let e = r
        .render(RenderRequest {
            chart: &slow,
            release: "slow",
            namespace: "edge",
            values: &values(json!({})),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, RenderError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("did not render within 1 s"), "{e}");
    // Unbounded, the chart renders for about half a minute; stopped, it does not.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn oversized_output_and_memory_are_bounded() {
    let Some(helm) = helm().await else {
        return;
    };
    let huge = fixture(&helm, "refused/huge");
    let r = Renderer::new(
        helm.clone(),
        RenderLimits {
            max_output_bytes: 1024 * 1024,
            ..RenderLimits::default()
        },
    );
    let e = r
        .render(RenderRequest {
            chart: &huge,
            release: "huge",
            namespace: "edge",
            values: &values(json!({})),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e, RenderError::OutputTooLarge { limit: 1048576, .. }),
        "{e}"
    );
    // Under the bound, the same chart renders.
    let small = r
        .render(RenderRequest {
            chart: &huge,
            release: "huge",
            namespace: "edge",
            values: &values(json!({"size": 1000})),
        })
        .await
        .unwrap();
    assert_eq!(small.documents.len(), 1);

    let hungry = fixture(&helm, "refused/hungry");
    let r = Renderer::new(
        helm,
        RenderLimits {
            max_memory_bytes: 256 * 1024 * 1024,
            timeout: Duration::from_secs(120),
            ..RenderLimits::default()
        },
    );
    let e = r
        .render(RenderRequest {
            chart: &hungry,
            release: "hungry",
            namespace: "edge",
            values: &values(json!({})),
        })
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("ran out of memory (limit 256 MiB)"),
        "{e}"
    );
    // A modest allocation fits in the same bound.
    let fits = r
        .render(RenderRequest {
            chart: &hungry,
            release: "hungry",
            namespace: "edge",
            values: &values(json!({"count": 1000})),
        })
        .await
        .unwrap();
    assert_eq!(fits.documents[0].object["data"]["count"], "1000");
}
