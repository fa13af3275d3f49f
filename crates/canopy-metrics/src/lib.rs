//! Canopy's Prometheus metrics: one [`Registry`] per server or agent instance, the process'
//! own metrics (RSS, CPU, open descriptors), and the `/metrics` listener ([`serve`]).
//!
//! Why `metrics` + `metrics-exporter-prometheus` (and not `prometheus-client`): the `metrics`
//! facade's handles ([`Counter`], [`Gauge`], [`Histogram`]) are plain `Arc`s over atomics, so a
//! crate that only records (the store, the agent's sync loop) depends on the small facade and
//! never on an exporter; recording is an atomic add (histograms append to a lock-free bucket
//! that the exporter folds into Prometheus buckets at scrape or upkeep time); `metrics-process`
//! plugs into the same facade for RSS, CPU and descriptors. It is also the project's listed
//! choice (`STYLE.md`, dependency choices).
//!
//! Why not the global recorder: one process can hold several instances (`canopy up` runs a
//! control plane and an agent; the test harness runs many control planes in one test binary),
//! and each instance's `/metrics` must show its own numbers. So a [`Registry`] owns a
//! `PrometheusRecorder` and hands out handles registered on it; nothing is installed globally.
//! A disabled registry ([`Registry::disabled`], the default when no `--metrics-listen` is
//! given) hands out no-op handles: recording then costs a branch.
//!
//! Cost on hot paths: callers register their handles once (at start, or once per bounded label
//! value, cached) and record through them; no label string is built per event.
//!
//! Must not depend on: anything of Canopy's but the HTTP connection loop (`canopy-tls`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use metrics::{Counter, Gauge, Histogram, Unit};
use metrics::{Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// The metadata every Canopy metric is registered with (the exporter ignores it).
static METADATA: Metadata<'static> = Metadata::new("canopy", metrics::Level::INFO, None);

/// Upper bounds (seconds) of latency histograms: 1 ms to 5 min (long-polls wait up to 60 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Upper bounds of size histograms (counts of things, e.g. edges woken by one change).
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0,
];

/// How often histogram samples are folded into their buckets between scrapes (so memory stays
/// bounded when nobody scrapes).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Scrapes within this long of each other share one rendering (what 32 clients scraping in a
/// loop cost is one rendering a second).
pub const RENDER_CACHE: Duration = Duration::from_secs(1);

/// One instance's metrics. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    /// Called before each rendering: values computed at scrape time (e.g. gauges counted from
    /// the fleet hub), so the hot paths need not keep them.
    before_render: Mutex<Vec<Arc<dyn Fn() + Send + Sync>>>,
    /// The last rendering and when it was made (see [`RENDER_CACHE`]).
    rendered: Mutex<Option<(Instant, Arc<str>)>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

impl Registry {
    /// A registry that records: histograms with [`LATENCY_BUCKETS`] (names ending in
    /// `_seconds`) or [`COUNT_BUCKETS`] (others), process metrics included.
    pub fn new() -> Registry {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets(COUNT_BUCKETS))
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let process = metrics_process::Collector::default();
        metrics::with_local_recorder(&recorder, || process.describe());
        Registry {
            inner: Some(Arc::new(Inner {
                recorder,
                handle,
                process,
                before_render: Mutex::new(Vec::new()),
                rendered: Mutex::new(None),
            })),
        }
    }

    /// A registry that records nothing: every handle it gives is a no-op.
    pub fn disabled() -> Registry {
        Registry { inner: None }
    }

    /// Whether this registry records.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    fn key(name: &'static str, labels: &[(&'static str, SharedString)]) -> Key {
        Key::from_parts(
            name,
            labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.clone()))
                .collect::<Vec<_>>(),
        )
    }

    /// The counter `name` with `labels` (static or bounded values: see the module docs).
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, SharedString)]) -> Counter {
        match &self.inner {
            Some(i) => i
                .recorder
                .register_counter(&Self::key(name, labels), &METADATA),
            None => Counter::noop(),
        }
    }

    /// The gauge `name` with `labels`.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, SharedString)]) -> Gauge {
        match &self.inner {
            Some(i) => i
                .recorder
                .register_gauge(&Self::key(name, labels), &METADATA),
            None => Gauge::noop(),
        }
    }

    /// The histogram `name` with `labels`.
    pub fn histogram(
        &self,
        name: &'static str,
        labels: &[(&'static str, SharedString)],
    ) -> Histogram {
        match &self.inner {
            Some(i) => i
                .recorder
                .register_histogram(&Self::key(name, labels), &METADATA),
            None => Histogram::noop(),
        }
    }

    /// Sets the `# HELP` text (and unit) of a metric.
    pub fn describe(&self, kind: Kind, name: &'static str, unit: Option<Unit>, help: &'static str) {
        let Some(i) = &self.inner else { return };
        let name = KeyName::from_const_str(name);
        let help = SharedString::const_str(help);
        match kind {
            Kind::Counter => i.recorder.describe_counter(name, unit, help),
            Kind::Gauge => i.recorder.describe_gauge(name, unit, help),
            Kind::Histogram => i.recorder.describe_histogram(name, unit, help),
        }
    }

    /// Runs `f` before each rendering (values computed at scrape time).
    pub fn before_render(&self, f: impl Fn() + Send + Sync + 'static) {
        if let Some(i) = &self.inner {
            i.before_render
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::new(f));
        }
    }

    /// The Prometheus text exposition of every metric (empty when disabled). Renderings within
    /// [`RENDER_CACHE`] of each other are shared.
    pub fn render(&self) -> Arc<str> {
        let Some(i) = &self.inner else {
            return Arc::from("");
        };
        let mut cached = i.rendered.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, text)) = cached.as_ref()
            && at.elapsed() < RENDER_CACHE
        {
            return Arc::clone(text);
        }
        let hooks: Vec<_> = i
            .before_render
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for hook in hooks {
            hook();
        }
        metrics::with_local_recorder(&i.recorder, || i.process.collect());
        let text: Arc<str> = Arc::from(i.handle.render());
        *cached = Some((Instant::now(), Arc::clone(&text)));
        text
    }

    /// Folds histogram samples into buckets every [`UPKEEP_EVERY`] until dropped (the task is
    /// aborted with the returned guard). `None` when disabled.
    pub fn spawn_upkeep(&self) -> Option<AbortOnDrop> {
        let i = Arc::clone(self.inner.as_ref()?);
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                i.handle.run_upkeep();
            }
        });
        Some(AbortOnDrop(task))
    }
}

/// What kind of metric a [`Registry::describe`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Aborts a background task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `/metrics` router: `GET /metrics` renders `registry`; every other path is 404.
pub fn router(registry: Registry) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let text = tokio::task::spawn_blocking(move || registry.render())
                    .await
                    .unwrap_or_else(|_| Arc::from(""));
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    text.to_string(),
                )
            }
        }),
    )
}

/// Most connections the metrics listener holds at once (scrapers are few).
pub const MAX_CONNECTIONS: usize = 64;

/// Serves [`router`] on `listener` (plain HTTP, meant for loopback or a private interface, see
/// docs/OPERATIONS.md) until `shutdown` completes, with the connection loop's header timeouts
/// and at most [`MAX_CONNECTIONS`] connections.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let options = canopy_tls::ServeOptions {
        max_connections: MAX_CONNECTIONS,
        shutdown_grace: Duration::from_secs(2),
        ..Default::default()
    };
    canopy_tls::serve_with(listener, router(registry), None, options, shutdown).await
}

/// Binds the metrics listener, naming the address when it cannot.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for metrics on {addr}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_registry_renders_nothing_and_hands_out_no_ops() {
        let r = Registry::disabled();
        r.counter("canopy_test_total", &[]).increment(1);
        assert_eq!(&*r.render(), "");
    }

    #[test]
    fn renders_parseable_text_with_histogram_buckets() {
        let r = Registry::new();
        r.describe(Kind::Counter, "canopy_test_total", None, "a test counter");
        r.counter("canopy_test_total", &[("route", "/a".into())])
            .increment(3);
        r.histogram("canopy_test_seconds", &[]).record(0.2);
        let text = r.render();
        assert!(text.contains("# TYPE canopy_test_total counter"), "{text}");
        assert!(text.contains("canopy_test_total{route=\"/a\"} 3"), "{text}");
        assert!(
            text.contains("canopy_test_seconds_bucket{le=\"0.25\"} 1"),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
