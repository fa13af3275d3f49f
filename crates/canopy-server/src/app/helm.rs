//! Helm-chart applications on the control plane: the Helm CLI found and checked at start, the
//! chart fetcher (with its cache in the data directory), and rendering the
//! [`HelmRequest`]s a deployment yields into [`HelmRendered`]s (fetch, `helm template`,
//! translation, project policy).
//!
//! Why here and not in the deployment transaction: fetching and rendering a chart take network
//! and process time (up to the render timeout), and the deployment manager holds one writer
//! lock for the whole fleet. So deployments are rendered in two passes (`canopy_deploy::helm`):
//! the transaction that finds Helm applications without a result rolls back, the requests are
//! rendered here with no lock held, and the transaction runs again with the results. Results
//! are kept by request fingerprint in a bounded in-memory cache, so a deployment is rendered
//! once per (deployment, application, values) whatever the number of edges, and a retry or a
//! redeploy with equal inputs renders nothing.
//!
//! Without a usable Helm CLI the server still starts (native applications do not need it):
//! the reason is logged at start and every Helm application is refused with it.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use canopy_deploy::helm::{
    HelmRendered, HelmRenders, HelmRequest, check_chart_registry, enforce_policy,
};
use canopy_deploy::model::AppWarning;
use canopy_helm::{
    AnalyzeOptions, CacheConfig, ChartCache, ChartFetcher, ChartSource, Credentials, FetchError,
    FetchLimits, HelmBinary, Placeholders, PlainHttp, RenderError, RenderLimits, RenderRequest,
    Renderer, analyze, chart_values,
};

use super::AppError;

/// How the control plane runs Helm.
#[derive(Debug, Clone, Default)]
pub struct HelmConfig {
    /// The Helm CLI (`--helm-bin`); `None`: `helm` on PATH.
    pub helm_bin: Option<PathBuf>,
    /// The chart cache directory; `None`: a temporary directory removed at exit (the server
    /// passes `DATA_DIR/charts`).
    pub cache_dir: Option<PathBuf>,
    /// Most bytes of chart archives cached (0: the default, 1 GiB).
    pub cache_max_bytes: u64,
    /// Which OCI registries are spoken to over plain HTTP (default: loopback ones).
    pub plain_http: PlainHttp,
    /// Bounds on one `helm template` (time, memory, output, concurrency).
    pub render: RenderLimits,
    /// Bounds on fetching (timeouts, index and archive sizes).
    pub fetch: FetchLimits,
}

/// Most rendered applications kept in memory, and their manifests' total size.
const MAX_RESULTS: usize = 256;
const MAX_RESULT_BYTES: usize = 256 * 1024 * 1024;

/// The Helm side of the app: see the module doc.
pub(crate) struct HelmService {
    /// The renderer, or why there is none (no Helm CLI, an unsupported version).
    renderer: Result<Renderer, String>,
    fetcher: Result<ChartFetcher, String>,
    results: Mutex<Results>,
    /// Keeps a temporary cache directory alive.
    _tmp: Option<tempfile::TempDir>,
}

#[derive(Default)]
struct Results {
    by_fingerprint: BTreeMap<String, Arc<HelmRendered>>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Results {
    fn insert(&mut self, r: Arc<HelmRendered>) {
        if self.by_fingerprint.contains_key(&r.fingerprint) {
            return;
        }
        self.bytes += r.manifest.len();
        self.order.push_back(r.fingerprint.clone());
        self.by_fingerprint.insert(r.fingerprint.clone(), r);
        while self.order.len() > MAX_RESULTS || self.bytes > MAX_RESULT_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.by_fingerprint.remove(&old) {
                self.bytes -= gone.manifest.len();
            }
        }
    }
}

impl HelmService {
    /// Finds and checks the Helm CLI and opens the chart cache; logs what it found. Never
    /// fails: what is missing is remembered and reported when a Helm application is deployed.
    pub(crate) async fn start(config: &HelmConfig) -> HelmService {
        let renderer = match HelmBinary::locate(config.helm_bin.as_deref()).await {
            Ok(helm) => {
                tracing::info!(
                    path = %helm.path().display(),
                    version = %helm.version(),
                    "Helm CLI found: Helm-chart applications can be deployed"
                );
                Ok(Renderer::new(helm, config.render.clone()))
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "no usable Helm CLI: Helm-chart applications will be refused (native \
                     applications are not affected); install Helm 3.8+ or 4 and restart, or \
                     pass --helm-bin PATH"
                );
                Err(e.to_string())
            }
        };
        let (dir, tmp) = match &config.cache_dir {
            Some(d) => (Ok(d.clone()), None),
            None => match tempfile::Builder::new().prefix("canopy-charts-").tempdir() {
                Ok(t) => (Ok(t.path().to_path_buf()), Some(t)),
                Err(e) => (
                    Err(format!("cannot create a chart cache directory: {e}")),
                    None,
                ),
            },
        };
        let fetcher = dir.and_then(|dir| {
            let mut cache = CacheConfig::new(&dir);
            if config.cache_max_bytes > 0 {
                cache.max_bytes = config.cache_max_bytes;
            }
            ChartCache::open(cache)
                .map(|c| ChartFetcher::new(c, config.fetch.clone(), config.plain_http.clone()))
                .map_err(|e| format!("cannot open the chart cache {}: {e}", dir.display()))
        });
        if let Err(e) = &fetcher {
            tracing::warn!(error = %e, "Helm-chart applications will be refused");
        }
        HelmService {
            renderer,
            fetcher,
            results: Mutex::default(),
            _tmp: tmp,
        }
    }

    /// The chart fetcher (and its cache), or why there is none.
    pub(crate) fn fetcher(&self) -> Result<&ChartFetcher, &str> {
        self.fetcher.as_ref().map_err(String::as_str)
    }

    /// The Helm CLI in use (path and version), or why there is none.
    pub(crate) fn status(&self) -> Result<&HelmBinary, &str> {
        self.renderer
            .as_ref()
            .map(Renderer::helm)
            .map_err(String::as_str)
    }

    /// The results in memory (cheap: shared pointers), for a deployment's first pass.
    pub(crate) fn snapshot(&self) -> HelmRenders {
        let r = self.results.lock().unwrap_or_else(|p| p.into_inner());
        r.by_fingerprint.clone()
    }

    /// Renders `requests` (distinct by fingerprint; at most the renderer's concurrency at
    /// once), the first error refusing them all.
    pub(crate) async fn render_all(
        &self,
        requests: Vec<HelmRequest>,
    ) -> Result<HelmRenders, AppError> {
        let mut distinct: BTreeMap<String, HelmRequest> = BTreeMap::new();
        for r in requests {
            distinct.entry(r.fingerprint()).or_insert(r);
        }
        let mut out = HelmRenders::new();
        let renders = distinct.into_iter().map(|(fp, req)| async move {
            let cached = {
                let r = self.results.lock().unwrap_or_else(|p| p.into_inner());
                r.by_fingerprint.get(&fp).cloned()
            };
            match cached {
                Some(done) => Ok(done),
                None => self.render_one(fp, &req).await.map(Arc::new),
            }
        });
        for done in futures::future::join_all(renders).await {
            let done = done?;
            self.results
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(Arc::clone(&done));
            out.insert(done.fingerprint.clone(), done);
        }
        Ok(out)
    }

    async fn render_one(
        &self,
        fingerprint: String,
        req: &HelmRequest,
    ) -> Result<HelmRendered, AppError> {
        let app = req.app_key();
        let chart = format!("{}:{}", req.chart_name, req.chart_version);
        let refused = |why: &str| {
            AppError::FailedPrecondition(format!(
                "application {app} is a Helm chart application (chart {chart}) and this server \
                 cannot render charts: {why}"
            ))
        };
        let renderer = self.renderer.as_ref().map_err(|e| {
            refused(&format!(
                "{e}; install Helm 3.8+ or 4 and restart the server (or pass --helm-bin PATH)"
            ))
        })?;
        let fetcher = self.fetcher.as_ref().map_err(|e| refused(e))?;
        check_chart_registry(
            &req.policy,
            &req.helm_registry.root_url,
            &req.chart_name,
            &req.chart_version,
        )
        .map_err(|e| AppError::Invalid(format!("application {app}: {e}")))?;

        let profile = if req.profile_name.is_empty() {
            String::new()
        } else {
            format!(" (profile {})", req.profile_name)
        };
        let mut values = chart_values(req.profile.as_ref(), &req.overrides)
            .map_err(|e| AppError::Invalid(format!("application {app}{profile}: {e}")))?;
        values
            .substitute_placeholders(&Placeholders {
                image_registry_url: req.image_registry.as_ref().map(|r| r.root_url.clone()),
                generated_docker_credential: format!("{}-pull", req.release),
                pre_hook_credential: format!("{}-pre-hook", req.release),
                org_name: req.org.clone(),
                project_name: req.project.clone(),
            })
            .map_err(|e| AppError::Invalid(format!("application {app}{profile}: {e}")))?;

        // `use-dynamic-cacert` names the reference's own CA, which Canopy does not have: the
        // system roots are used then.
        let ca_pem = req
            .helm_registry
            .cacerts
            .clone()
            .filter(|c| !c.trim().is_empty() && c.trim() != "use-dynamic-cacert");
        let source = ChartSource {
            root_url: req.helm_registry.root_url.clone(),
            chart_name: req.chart_name.clone(),
            chart_version: req.chart_version.clone(),
            credentials: Credentials {
                username: req.helm_registry.username.clone(),
                auth_token: req.helm_registry.auth_token.clone(),
                ca_pem,
            },
        };
        let fetched = fetcher.fetch(&source).await.map_err(|e| {
            let message = format!(
                "application {app}: helm registry {}: {e}",
                req.helm_registry.name
            );
            match e {
                FetchError::Unreachable { .. }
                | FetchError::Protocol { .. }
                | FetchError::Cache(_) => AppError::Unavailable(message),
                _ => AppError::FailedPrecondition(message),
            }
        })?;
        let rendered = renderer
            .render(RenderRequest {
                chart: &fetched,
                release: &req.release,
                namespace: &req.namespace,
                values: &values,
            })
            .await
            .map_err(|e| {
                let message = format!("application {app}{profile}: {e}");
                match e {
                    RenderError::Run { .. } => AppError::Unavailable(message),
                    _ => AppError::Invalid(message),
                }
            })?;
        let model = analyze(
            &rendered.documents,
            &AnalyzeOptions {
                namespace: &req.namespace,
                ignored_resources: &req.ignored_resources,
            },
        )
        .map_err(|e| {
            AppError::Invalid(format!(
                "application {app}: chart {chart} cannot run on a Canopy edge: {e}"
            ))
        })?;
        let mut pods = model.pods();
        enforce_policy(
            &req.policy,
            &mut pods,
            req.image_registry.as_ref().map(|r| r.root_url.as_str()),
        )
        .map_err(|e| {
            AppError::Invalid(format!(
                "application {app}{profile}, chart {chart}: {e} (project policy)"
            ))
        })?;
        let mut warnings: Vec<AppWarning> = model
            .warnings
            .iter()
            .map(|w| AppWarning {
                app_name: req.app.clone(),
                kind: w.kind.clone(),
                name: w.name.clone(),
                template: w.template.clone(),
                message: w.message.clone(),
            })
            .collect();
        for h in &rendered.dropped_hooks {
            warnings.push(AppWarning {
                app_name: req.app.clone(),
                kind: h.kind.clone(),
                name: h.name.clone(),
                template: h.template.clone(),
                message: format!("chart hook ({}) not run on edges", h.hook),
            });
        }
        tracing::info!(
            app = %app,
            chart = %chart,
            digest = %fetched.digest.as_str(),
            workloads = pods.workloads.len(),
            warnings = warnings.len(),
            "Helm application rendered"
        );
        Ok(HelmRendered {
            fingerprint,
            pods,
            warnings,
            manifest: Arc::from(rendered.manifest.as_str()),
            chart_digest: fetched.digest.as_str().to_string(),
            render_key: rendered.key.as_str().to_string(),
        })
    }
}
