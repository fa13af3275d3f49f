//! Reading real `helm template` output of the fixture charts into what an edge runs: snapshots
//! of the [`AppModel`] (insta, `tests/snapshots/`), the same model from Helm 3 and Helm 4, and
//! the charts an edge refuses, each with an error naming the kind and the template file.

mod common;

use canopy_core::catalog::ResourceReference;
use canopy_helm::model::{IgnoredEffect, VolumeSource, WorkloadKind};
use canopy_helm::{
    AnalyzeOptions, AppModel, ChartValues, RenderLimits, RenderRequest, Renderer, analyze,
};
use common::*;
use serde_json::json;

async fn model_of(
    helm: &canopy_helm::HelmBinary,
    chart: &str,
    release: &str,
    namespace: &str,
    values: serde_json::Value,
    ignored: &[ResourceReference],
) -> Result<AppModel, canopy_helm::AnalyzeError> {
    let c = fixture(helm, chart);
    let out = Renderer::new(helm.clone(), RenderLimits::default())
        .render(RenderRequest {
            chart: &c,
            release,
            namespace,
            values: &ChartValues::from_value(values).unwrap(),
        })
        .await
        .unwrap_or_else(|e| panic!("{chart}: {e}"));
    analyze(
        &out.documents,
        &AnalyzeOptions {
            namespace,
            ignored_resources: ignored,
        },
    )
}

fn reference_values(package: &str, file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(reference_dir().join(package).join(file)).unwrap();
    canopy_core::yaml::parse_documents(&text).unwrap().remove(0)
}

#[tokio::test]
async fn fixture_charts_snapshots() {
    let Some(helm) = helm().await else {
        return;
    };
    let web = model_of(&helm, "canopy-web", "web", "demo", json!({}), &[])
        .await
        .unwrap();
    insta::assert_yaml_snapshot!("canopy-web", web);
    let pair = model_of(&helm, "canopy-pair", "pair", "demo", json!({}), &[])
        .await
        .unwrap();
    insta::assert_yaml_snapshot!("canopy-pair", pair);
    let stateful = model_of(&helm, "canopy-stateful", "st", "demo", json!({}), &[])
        .await
        .unwrap();
    insta::assert_yaml_snapshot!("canopy-stateful", stateful);
}

#[tokio::test]
async fn reference_sample_equivalents_snapshots() {
    let Some(helm) = helm().await else {
        return;
    };
    let server = model_of(
        &helm,
        "tutorial-server",
        "tutorial-server",
        "tutorial",
        reference_values(
            "developer-guide-tutorial",
            "tutorial-server-values-default.yaml",
        ),
        &[],
    )
    .await
    .unwrap();
    insta::assert_yaml_snapshot!("tutorial-server", server);
    let ui = model_of(
        &helm,
        "tutorial-web-ui",
        "tutorial-web-ui",
        "tutorial",
        reference_values("developer-guide-tutorial", "tutorial-web-ui-values.yaml"),
        &[],
    )
    .await
    .unwrap();
    insta::assert_yaml_snapshot!("tutorial-web-ui", ui);
    let httpbin = model_of(
        &helm,
        "httpbin",
        "httpbin",
        "httpbin-ns",
        reference_values("httpbin", "values-httpbin-envoy.yaml"),
        &[],
    )
    .await
    .unwrap();
    insta::assert_yaml_snapshot!("httpbin-with-envoy", httpbin);
}

#[tokio::test]
async fn the_pair_talks_by_service_name() {
    let Some(helm) = helm().await else {
        return;
    };
    let m = model_of(&helm, "canopy-pair", "pair", "demo", json!({}), &[])
        .await
        .unwrap();
    let backend = m
        .services
        .iter()
        .find(|s| s.name == "pair-backend")
        .unwrap();
    assert_eq!(backend.workloads, vec!["pair-backend".to_string()]);
    let frontend = m
        .workloads
        .iter()
        .find(|w| w.name == "pair-frontend")
        .unwrap();
    let fetcher = &frontend.containers[0];
    let url = fetcher
        .env
        .iter()
        .find(|e| e.name == "BACKEND_URL")
        .unwrap();
    // The Service's port (80), which the edge remaps to the container's (8080).
    assert_eq!(url.value.as_deref(), Some("pair-backend:80"));
    assert_eq!(backend.ports[0].port, 80);
    let token = fetcher.env.iter().find(|e| e.name == "API_TOKEN").unwrap();
    assert!(token.secret);
    let nodeport = m
        .services
        .iter()
        .find(|s| s.name == "pair-frontend")
        .unwrap();
    assert_eq!(nodeport.ports[0].node_port, Some(30081));
    assert_eq!(frontend.init_containers[0].name, "wait-for-backend");
}

#[tokio::test]
async fn statefulset_claims_job_and_skipped_kinds() {
    let Some(helm) = helm().await else {
        return;
    };
    let m = model_of(
        &helm,
        "canopy-stateful",
        "st",
        "demo",
        json!({"replicas": 3}),
        &[],
    )
    .await
    .unwrap();
    let db = m
        .workloads
        .iter()
        .find(|w| w.kind == WorkloadKind::StatefulSet)
        .unwrap();
    assert_eq!(db.replicas, 3);
    assert!(db.volumes.iter().any(|v| matches!(
        &v.source,
        VolumeSource::ClaimTemplate { template, size_bytes: Some(b) } if template == "data" && *b == 64 * 1024 * 1024
    )));
    assert_eq!(
        db.stateful.as_ref().unwrap().service_name,
        "st-canopy-stateful-db"
    );
    let job = m
        .workloads
        .iter()
        .find(|w| w.kind == WorkloadKind::Job)
        .unwrap();
    assert_eq!(job.job.as_ref().unwrap().backoff_limit, 2);
    assert_eq!(m.claims[0].name, "st-canopy-stateful-shared");
    assert!(!m.claims[0].keep);
    let kept = model_of(
        &helm,
        "canopy-stateful",
        "st",
        "demo",
        json!({"keepShared": true}),
        &[],
    )
    .await
    .unwrap();
    assert!(kept.claims[0].keep, "helm.sh/resource-policy: keep");
    assert!(
        !m.workloads.iter().any(|w| w.name.ends_with("post-install")),
        "hooks are not run"
    );
    for kind in [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Ingress",
    ] {
        let w = m
            .warnings
            .iter()
            .find(|w| w.kind == kind)
            .unwrap_or_else(|| panic!("no warning for {kind}: {:?}", m.warnings));
        assert_eq!(w.template, "canopy-stateful/templates/skipped.yaml");
        assert!(w.message.starts_with("skipped: "), "{w}");
        assert_eq!(w.name, "st-canopy-stateful");
    }
}

#[tokio::test]
async fn helm_3_and_helm_4_output_read_the_same() {
    let (Some(h3), Some(h4)) = (helm().await, helm4().await) else {
        return;
    };
    for chart in [
        "canopy-pair",
        "canopy-stateful",
        "tutorial-web-ui",
        "httpbin",
    ] {
        let a = model_of(&h3, chart, "r", "ns", json!({}), &[])
            .await
            .unwrap();
        let b = model_of(&h4, chart, "r", "ns", json!({}), &[])
            .await
            .unwrap();
        assert_eq!(a, b, "{chart}");
    }
}

#[tokio::test]
async fn refused_charts_name_the_kind_and_the_template() {
    let Some(helm) = helm().await else {
        return;
    };
    let cases = [
        (
            "refused/bad-cronjob",
            "CronJob",
            "bad-cronjob/templates/cronjob.yaml",
            "CronJob is not supported",
        ),
        (
            "refused/bad-crd",
            "ServiceMonitor",
            "bad-crd/templates/monitor.yaml",
            "kind ServiceMonitor (monitoring.coreos.com/v1) is not supported",
        ),
        (
            "refused/bad-hostnetwork",
            "Pod",
            "bad-hostnetwork/templates/pod.yaml",
            "spec.hostNetwork: not supported",
        ),
    ];
    for (chart, kind, template, message) in cases {
        let e = model_of(&helm, chart, "r", "edge", json!({}), &[])
            .await
            .unwrap_err();
        assert_eq!(e.kind, kind, "{e}");
        assert_eq!(e.template, template, "{e}");
        let text = e.to_string();
        assert!(text.contains(message), "{text}");
        assert!(text.contains(template), "{text}");
    }
}

#[tokio::test]
async fn ignored_resources_are_honoured() {
    let Some(helm) = helm().await else {
        return;
    };
    let ignored = [
        ResourceReference {
            name: "pair-config".into(),
            kind: "ConfigMap".into(),
            namespace: String::new(),
        },
        ResourceReference {
            name: "pair-backend".into(),
            kind: "Deployment".into(),
            namespace: "demo".into(),
        },
    ];
    let m = model_of(&helm, "canopy-pair", "pair", "demo", json!({}), &ignored)
        .await
        .unwrap();
    assert_eq!(m.ignored.len(), 2);
    assert!(
        m.ignored
            .iter()
            .all(|i| i.effect == IgnoredEffect::ChangesIgnored)
    );
    let backend = m
        .workloads
        .iter()
        .find(|w| w.name == "pair-backend")
        .unwrap();
    assert!(backend.ignore_changes);
    let frontend = m
        .workloads
        .iter()
        .find(|w| w.name == "pair-frontend")
        .unwrap();
    assert!(!frontend.ignore_changes);

    // A kind the reference does not allow to ignore is an error, as in the reference.
    let e = model_of(
        &helm,
        "canopy-pair",
        "pair",
        "demo",
        json!({}),
        &[ResourceReference {
            name: "pair-backend".into(),
            kind: "Service".into(),
            namespace: String::new(),
        }],
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("kind Service cannot be ignored"),
        "{e}"
    );
}
