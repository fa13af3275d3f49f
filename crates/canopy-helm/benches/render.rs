//! Cost of a Helm application's render on the control plane, with the real Helm CLI and the
//! chart registry of scripts/helm.sh:
//!
//! - `cold`: an empty cache, so a fetch over OCI (manifest + blob), the archive check, the cache
//!   write, `helm template` and the analysis;
//! - `cached`: the chart from the cache (resolved less than `ref_ttl` ago), `helm template` and
//!   the analysis: what a second deployment of the same chart costs;
//! - `analyze`: reading the rendered manifests into the edge model alone.
//!
//! Run: `eval "$(scripts/helm.sh | sed 's/^/export /')"; cargo bench -p canopy-helm --bench render`.
//! Without `CANOPY_TEST_HELM` and `CANOPY_TEST_CHART_REGISTRY` it prints a notice and measures
//! nothing.

use std::path::Path;

use canopy_helm::{
    AnalyzeOptions, CacheConfig, ChartCache, ChartFetcher, ChartSource, ChartValues, Credentials,
    FetchLimits, HelmBinary, PlainHttp, RenderLimits, RenderRequest, Renderer, analyze,
};
use criterion::{Criterion, criterion_group, criterion_main};

const CHART: &str = "canopy-pair";

fn source(registry: &str) -> ChartSource {
    ChartSource {
        root_url: format!("oci://{registry}/charts"),
        chart_name: CHART.into(),
        chart_version: "0.1.0".into(),
        credentials: Credentials::default(),
    }
}

fn fetcher(dir: &Path) -> ChartFetcher {
    ChartFetcher::new(
        ChartCache::open(CacheConfig::new(dir)).unwrap(),
        FetchLimits::default(),
        PlainHttp::Loopback,
    )
}

async fn render_and_read(
    renderer: &Renderer,
    chart: &canopy_helm::FetchedChart,
    values: &ChartValues,
) -> usize {
    let out = renderer
        .render(RenderRequest {
            chart,
            release: "pair",
            namespace: "bench",
            values,
        })
        .await
        .unwrap();
    let model = analyze(
        &out.documents,
        &AnalyzeOptions {
            namespace: "bench",
            ignored_resources: &[],
        },
    )
    .unwrap();
    model.workloads.len()
}

fn bench(c: &mut Criterion) {
    let (Ok(helm), Ok(registry)) = (
        std::env::var("CANOPY_TEST_HELM"),
        std::env::var("CANOPY_TEST_CHART_REGISTRY"),
    ) else {
        eprintln!(
            "CANOPY_TEST_HELM / CANOPY_TEST_CHART_REGISTRY not set (scripts/helm.sh): nothing measured"
        );
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let helm = rt
        .block_on(HelmBinary::locate(Some(Path::new(&helm))))
        .unwrap();
    let renderer = Renderer::new(helm, RenderLimits::default());
    let values = ChartValues::from_value(serde_json::json!({"backend": {"replicas": 3}})).unwrap();
    let src = source(&registry);

    let mut g = c.benchmark_group("helm_render");
    g.sample_size(20);
    g.bench_function("cold", |b| {
        b.to_async(&rt).iter(|| async {
            let dir = tempfile::tempdir().unwrap();
            let chart = fetcher(dir.path()).fetch(&src).await.unwrap();
            render_and_read(&renderer, &chart, &values).await
        })
    });
    let warm_dir = tempfile::tempdir().unwrap();
    let warm = fetcher(warm_dir.path());
    rt.block_on(warm.fetch(&src)).unwrap();
    g.bench_function("cached", |b| {
        b.to_async(&rt).iter(|| async {
            let chart = warm.fetch(&src).await.unwrap();
            assert_eq!(chart.origin, canopy_helm::Origin::Cache);
            render_and_read(&renderer, &chart, &values).await
        })
    });
    let chart = rt.block_on(warm.fetch(&src)).unwrap();
    let out = rt
        .block_on(renderer.render(RenderRequest {
            chart: &chart,
            release: "pair",
            namespace: "bench",
            values: &values,
        }))
        .unwrap();
    g.bench_function("analyze", |b| {
        b.iter(|| {
            analyze(
                &out.documents,
                &AnalyzeOptions {
                    namespace: "bench",
                    ignored_resources: &[],
                },
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
