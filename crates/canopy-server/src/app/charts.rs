//! The catalog's two chart operations: Helm chart import (`POST .../catalog/import`) and the
//! charts of a HELM registry (`GET .../catalog/charts`). Both talk to a chart registry on the
//! caller's behalf, so both are bounded here: at most [`ChartLimits::parallelism`] registry
//! operations run at once (a caller waits at most [`ChartLimits::queue_wait`] for a turn, then
//! gets 503 with `Retry-After`), each operation ends after [`ChartLimits::operation_timeout`],
//! and every request and archive stays within canopy-helm's [`FetchLimits`] (10 MiB archives,
//! per-request timeouts, bounded listings). Thirty-two hostile callers importing huge charts
//! therefore cost `parallelism` archives in memory (about 10 MiB each, plus a `values.yaml` of at
//! most 8 MiB), and the rest wait, then are refused.
//!
//! Import follows the reference (real-system.md "Import from Helm chart"): the chart is fetched
//! (through canopy-helm's [`ChartFetcher`]: archive checks, the chart cache), then the registry,
//! application and deployment package that `canopy_helm::import` builds are upserted with the
//! same rule functions as uploads, in one transaction. A system registry (one the server
//! creates in every project, `TenancyConfig::default_registries`) is never overwritten
//! (reference rule 10). Fetch failures are InvalidArgument (400), as in the reference; their
//! messages name the URL, chart and version, never the token.

use std::sync::Arc;
use std::time::Duration;

use canopy_core::catalog::Registry;
use canopy_core::list;
use canopy_helm::import::{self, ChartUrl, ImportOptions, ValuesSource};
use canopy_helm::{ChartFetcher, ChartSource, Credentials, FetchError, FetchLimits};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::catalog::{Changes, PutMode, put_application, put_package, put_registry};
use super::{Access, App, AppError, ChangeSummary, Ctx};

/// Longest `url` (the reference's rule).
const MAX_URL: usize = 1000;
/// Longest `username` (the reference's rule).
const MAX_USERNAME: usize = 1000;
/// Longest `authToken` (the reference's rule).
const MAX_AUTH_TOKEN: usize = 4500;
/// Longest `chartValues` (the reference's rule).
const MAX_CHART_VALUES: usize = 4_000_000;
/// Longest `namespace` (the reference's rule).
const MAX_NAMESPACE: usize = 40;
/// Most names a chart listing returns at once (the reference document's `maxItems`).
pub const MAX_CHART_PAGE: usize = 100;

/// What chart operations (import, listing) may cost. The chart cache and the fetch bounds are
/// the Helm configuration's ([`super::HelmConfig`]): imports and deployments share them.
#[derive(Debug, Clone)]
pub struct ChartLimits {
    /// Registry operations (imports, listings) running at once.
    pub parallelism: usize,
    /// How long a caller waits for a turn before 503.
    pub queue_wait: Duration,
    /// How long one operation (resolving the version, fetching, listing) may take in all.
    pub operation_timeout: Duration,
}

impl Default for ChartLimits {
    fn default() -> ChartLimits {
        ChartLimits {
            parallelism: 4,
            queue_wait: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(120),
        }
    }
}

/// The chart machinery of one app.
pub(crate) struct Charts {
    /// The Helm service's fetcher (its cache), or why there is none.
    fetcher: Result<ChartFetcher, String>,
    /// Bounds of archives read (values.yaml at import).
    fetch: FetchLimits,
    turns: Arc<Semaphore>,
    limits: ChartLimits,
}

impl Charts {
    pub(crate) fn new(
        limits: ChartLimits,
        helm: &super::helm::HelmService,
        config: &super::HelmConfig,
    ) -> Charts {
        Charts {
            fetcher: helm.fetcher().cloned().map_err(str::to_string),
            fetch: config.fetch.clone(),
            turns: Arc::new(Semaphore::new(limits.parallelism.max(1))),
            limits,
        }
    }
}

/// An import request: the reference's query parameters.
#[derive(Clone, Default)]
pub struct ChartImport {
    /// `oci://host/path/chart[:version]`.
    pub url: String,
    pub username: Option<String>,
    pub auth_token: Option<String>,
    pub chart_values: Option<String>,
    pub include_auth: bool,
    pub generate_default_values: bool,
    pub generate_default_parameters: bool,
    pub namespace: Option<String>,
}

impl std::fmt::Debug for ChartImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartImport")
            .field("url", &self.url)
            .field("username", &self.username.as_ref().map(|_| "<set>"))
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<set>"))
            .field("chart_values", &self.chart_values.as_ref().map(String::len))
            .field("include_auth", &self.include_auth)
            .field("generate_default_values", &self.generate_default_values)
            .field(
                "generate_default_parameters",
                &self.generate_default_parameters,
            )
            .field("namespace", &self.namespace)
            .finish()
    }
}

fn too_long(field: &str, max: usize) -> AppError {
    AppError::Invalid(format!("{field} is longer than {max} characters"))
}

fn printable(field: &str, v: &str) -> Result<(), AppError> {
    if v.chars().any(char::is_control) {
        return Err(AppError::Invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

impl ChartImport {
    /// Reads the query string (strictly: unknown parameters are refused).
    pub fn from_query(raw: Option<&str>) -> Result<ChartImport, AppError> {
        let mut r = ChartImport::default();
        for (k, v) in list::form_pairs(raw.unwrap_or(""))? {
            match k.as_str() {
                "url" => r.url = v,
                "username" => r.username = Some(v),
                "authToken" => r.auth_token = Some(v),
                "chartValues" => r.chart_values = Some(v),
                "includeAuth" => r.include_auth = list::parse_bool("includeAuth", &v)?,
                "generateDefaultValues" => {
                    r.generate_default_values = list::parse_bool("generateDefaultValues", &v)?
                }
                "generateDefaultParameters" => {
                    r.generate_default_parameters =
                        list::parse_bool("generateDefaultParameters", &v)?
                }
                "namespace" => r.namespace = Some(v),
                other => {
                    return Err(AppError::Invalid(format!(
                        "unknown query parameter {:?}",
                        other.chars().take(100).collect::<String>()
                    )));
                }
            }
        }
        Ok(r)
    }

    fn check(&self) -> Result<(), AppError> {
        if self.url.trim().is_empty() {
            return Err(AppError::Invalid(
                "url is required: the chart to import, oci://host/path/chart[:version]".into(),
            ));
        }
        if self.url.chars().count() > MAX_URL {
            return Err(too_long("url", MAX_URL));
        }
        for (field, v, max) in [
            ("username", &self.username, MAX_USERNAME),
            ("authToken", &self.auth_token, MAX_AUTH_TOKEN),
        ] {
            if let Some(v) = v {
                if v.chars().count() > max {
                    return Err(too_long(field, max));
                }
                printable(field, v)?;
            }
        }
        if self
            .chart_values
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_CHART_VALUES)
        {
            return Err(too_long("chartValues", MAX_CHART_VALUES));
        }
        if let Some(ns) = self.namespace.as_ref().filter(|n| !n.is_empty()) {
            if ns.chars().count() > MAX_NAMESPACE {
                return Err(too_long("namespace", MAX_NAMESPACE));
            }
            canopy_core::names::check_namespace(ns)
                .map_err(|e| AppError::Invalid(format!("namespace {ns:?}: {e}")))?;
        }
        Ok(())
    }
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    /// The registry, application and package written (or left unchanged).
    pub changes: Vec<ChangeSummary>,
}

/// A page of chart names or versions.
#[derive(Debug, Clone)]
pub struct ChartList {
    pub items: Vec<String>,
    /// How many there are in all.
    pub total: usize,
}

/// A chart listing request: the reference's `registry` and `chart`, plus Canopy's paging.
#[derive(Debug, Clone, Default)]
pub struct ChartQuery {
    pub registry: String,
    pub chart: Option<String>,
    pub page_size: Option<usize>,
    pub offset: usize,
}

impl ChartQuery {
    /// Reads the query string (strictly).
    pub fn from_query(raw: Option<&str>) -> Result<ChartQuery, AppError> {
        let mut q = ChartQuery::default();
        for (k, v) in list::form_pairs(raw.unwrap_or(""))? {
            match k.as_str() {
                "registry" => q.registry = v,
                "chart" => q.chart = Some(v).filter(|c| !c.is_empty()),
                "pageSize" => {
                    let n: i64 = v.parse().map_err(|_| {
                        AppError::Invalid(format!("pageSize {v:?} is not a number"))
                    })?;
                    if !(0..=MAX_CHART_PAGE as i64).contains(&n) {
                        return Err(AppError::Invalid(format!(
                            "pageSize must be between 0 and {MAX_CHART_PAGE} (0: the default, \
                             {MAX_CHART_PAGE})"
                        )));
                    }
                    q.page_size = (n > 0).then_some(n as usize);
                }
                "offset" => {
                    q.offset = v
                        .parse()
                        .map_err(|_| AppError::Invalid(format!("offset {v:?} must be >= 0")))?;
                }
                other => {
                    return Err(AppError::Invalid(format!(
                        "unknown query parameter {:?}",
                        other.chars().take(100).collect::<String>()
                    )));
                }
            }
        }
        if q.registry.is_empty() {
            return Err(AppError::Invalid(
                "registry is required: the HELM registry whose charts to list".into(),
            ));
        }
        Ok(q)
    }
}

/// Fetch errors of an import: InvalidArgument, as the reference answers (its message names
/// the chart and registry; tokens are never in it). A broken cache is the server's fault.
fn import_error(e: FetchError) -> AppError {
    match e {
        FetchError::Cache(_) => AppError::Internal(e.to_string()),
        other => AppError::Invalid(other.to_string()),
    }
}

/// Fetch errors of a listing: the registry or chart missing is 404, a registry that cannot be
/// reached 503, credentials or content it refuses 400.
fn listing_error(e: FetchError) -> AppError {
    match e {
        FetchError::NotFound { .. } => AppError::NotFound(e.to_string()),
        FetchError::Unreachable { .. } => AppError::Unavailable(e.to_string()),
        FetchError::Cache(_) => AppError::Internal(e.to_string()),
        FetchError::AuthRequired { .. } | FetchError::CredentialsRefused { .. } => {
            AppError::FailedPrecondition(e.to_string())
        }
        other => AppError::Invalid(other.to_string()),
    }
}

fn import_rule(e: import::ImportError) -> AppError {
    AppError::Invalid(e.to_string())
}

/// Versions newest first (semantic versions by precedence, then the rest by text).
fn sort_versions(versions: &mut Vec<String>) {
    versions.sort_by(
        |a, b| match (semver::Version::parse(a), semver::Version::parse(b)) {
            (Ok(x), Ok(y)) => y.cmp(&x),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            (Err(_), Err(_)) => a.cmp(b),
        },
    );
    versions.dedup();
}

impl App {
    fn charts(&self) -> &Charts {
        &self.inner.charts
    }

    /// The chart fetcher (shared with Helm deployments), or why there is none.
    fn chart_fetcher(&self) -> Result<&ChartFetcher, AppError> {
        self.charts()
            .fetcher
            .as_ref()
            .map_err(|why| AppError::FailedPrecondition(format!("charts cannot be fetched: {why}")))
    }

    /// Waits for a turn to talk to a chart registry (see the module doc).
    async fn chart_turn(&self) -> Result<OwnedSemaphorePermit, AppError> {
        let c = self.charts();
        match tokio::time::timeout(c.limits.queue_wait, c.turns.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(AppError::Internal("the chart queue is closed".into())),
            Err(_) => Err(AppError::Busy {
                message: format!(
                    "{} chart registry operations (imports, chart listings) are running; \
                     retry later",
                    c.limits.parallelism
                ),
                retry_after: 5,
            }),
        }
    }

    /// Runs one registry operation under the time bound.
    async fn chart_operation<T>(
        &self,
        what: impl FnOnce() -> String,
        op: impl std::future::Future<Output = Result<T, AppError>>,
    ) -> Result<T, AppError> {
        let limit = self.charts().limits.operation_timeout;
        tokio::time::timeout(limit, op).await.map_err(|_| {
            AppError::Unavailable(format!(
                "{} took longer than {} s; the registry is too slow",
                what(),
                limit.as_secs()
            ))
        })?
    }

    /// `POST /catalog/import`: fetches the chart and upserts its registry, application and
    /// deployment package in one transaction (see the module doc).
    /// `query` is the request's query string (the reference's parameters), read only once the
    /// caller is known to be allowed. `body`, when not empty, is `chartValues` (Canopy
    /// extension: a query string holds at most about 64 KiB).
    pub async fn import_chart(
        &self,
        ctx: &Ctx,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<ImportOutcome, AppError> {
        ctx.require(Access::CatalogWrite)?;
        let mut req = ChartImport::from_query(query)?;
        if !body.is_empty() {
            if req.chart_values.is_some() {
                return Err(AppError::Invalid(
                    "chartValues given twice: in the query string and as the request body".into(),
                ));
            }
            let text = std::str::from_utf8(body).map_err(|_| {
                AppError::Invalid("the request body (chartValues) is not UTF-8 text".into())
            })?;
            req.chart_values = Some(text.to_string());
        }
        req.check()?;
        let url = ChartUrl::parse(req.url.trim()).map_err(import_rule)?;
        let values_source =
            ValuesSource::from_request(req.chart_values.clone(), req.generate_default_values)
                .map_err(import_rule)?;
        let credentials = Credentials {
            username: req.username.clone().filter(|u| !u.is_empty()),
            auth_token: req.auth_token.clone().filter(|t| !t.is_empty()),
            ca_pem: None,
        };
        let turn = self.chart_turn().await?;
        let shown = canopy_helm::import::ChartUrl {
            version: None,
            ..url.clone()
        };
        let fetched = self
            .chart_operation(
                || format!("importing {}/{}", shown.root_url, shown.chart_name),
                async {
                    let mut src = ChartSource {
                        root_url: url.root_url.clone(),
                        chart_name: url.chart_name.clone(),
                        chart_version: url.version.clone().unwrap_or_default(),
                        credentials,
                    };
                    if url.version.is_none() {
                        let versions = self
                            .chart_fetcher()?
                            .list_versions(&src)
                            .await
                            .map_err(import_error)?;
                        src.chart_version = import::latest_version(&versions).ok_or_else(|| {
                            import_rule(import::ImportError::NoVersion {
                                chart: url.chart_name.clone(),
                                registry: url.root_url.clone(),
                                tags: versions
                                    .iter()
                                    .take(10)
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            })
                        })?;
                    }
                    self.chart_fetcher()?
                        .fetch(&src)
                        .await
                        .map_err(import_error)
                },
            )
            .await?;
        let version = fetched.chart_version.clone();
        let (values, what) = match values_source {
            ValuesSource::None => (String::new(), "chartValues"),
            ValuesSource::Given(v) => (v, "chartValues"),
            ValuesSource::ChartDefaults => {
                let archive = fetched.archive.clone();
                let limits = self.charts().fetch.archive.clone();
                let bytes = tokio::task::spawn_blocking(move || {
                    canopy_helm::archive::read_file(&archive, &limits, "values.yaml")
                })
                .await
                .map_err(|e| AppError::Internal(e.to_string()))?
                .map_err(|v| {
                    AppError::Invalid(format!(
                        "chart {}:{version}: values.yaml: {} {}",
                        url.chart_name, v.entry, v.reason
                    ))
                })?
                .ok_or_else(|| {
                    import_rule(import::ImportError::NoChartValues {
                        chart: url.chart_name.clone(),
                        version: version.clone(),
                    })
                })?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    AppError::Invalid(format!(
                        "chart {}:{version}: values.yaml is not UTF-8 text",
                        url.chart_name
                    ))
                })?;
                (text, "values.yaml")
            }
        };
        let opts = ImportOptions {
            username: req.username.clone(),
            auth_token: req.auth_token.clone(),
            include_auth: req.include_auth,
            generate_default_parameters: req.generate_default_parameters,
            namespace: req.namespace.clone(),
        };
        let entities = import::entities(
            &url,
            &version,
            &fetched.meta.description,
            &values,
            what,
            &opts,
        )
        .map_err(import_rule)?;
        drop(turn);
        let changes = self.write_import(ctx, entities).await?;
        tracing::info!(
            project = %ctx.project.name,
            chart = %url.chart_name,
            version = %version,
            registry = %url.root_url,
            request_id = %ctx.request_id,
            "imported a Helm chart"
        );
        Ok(ImportOutcome { changes })
    }

    /// Writes an import's entities in one transaction (nothing on any error).
    async fn write_import(
        &self,
        ctx: &Ctx,
        e: import::ImportedEntities,
    ) -> Result<Vec<ChangeSummary>, AppError> {
        let import::ImportedEntities {
            registry,
            application,
            mut package,
        } = e;
        let mut tx = self.store().write(ctx.project.id).await?;
        let mut changes = Changes::default();
        if self
            .inner
            .tenancy
            .default_registries
            .iter()
            .any(|r| r.name == registry.name)
            && tx.get_registry(&registry.name).await?.is_some()
        {
            return Err(AppError::FailedPrecondition(format!(
                "registry {} is a system registry (created with every project): import does \
                 not overwrite it",
                registry.name
            )));
        }
        put_registry(&mut tx, ctx, &mut changes, registry, PutMode::Upsert).await?;
        put_application(&mut tx, ctx, &mut changes, application, PutMode::Upsert).await?;
        // Importing again must not undeploy a deployed package: isDeployed is the catalog's
        // record of deployments, not part of what the chart says.
        if let Some(old) = tx.get_package(&package.name, &package.version).await? {
            package.is_deployed = old.is_deployed;
        }
        put_package(&mut tx, ctx, &mut changes, package, PutMode::Upsert).await?;
        self.commit(ctx, tx, changes).await
    }

    /// `GET /catalog/charts`: the chart names of a HELM registry, or the versions of one chart
    /// (newest first), using the registry's own credentials and CA certificates.
    pub async fn registry_charts(
        &self,
        ctx: &Ctx,
        query: Option<&str>,
    ) -> Result<ChartList, AppError> {
        ctx.require(Access::CatalogRead)?;
        let q = ChartQuery::from_query(query)?;
        let registry = {
            let mut tx = self.store().read(ctx.project.id).await?;
            tx.get_registry(&q.registry)
                .await?
                .ok_or_else(|| AppError::NotFound(format!("registry {} not found", q.registry)))?
        };
        let src = chart_source(&registry, q.chart.as_deref())?;
        let turn = self.chart_turn().await?;
        let what = || match &q.chart {
            Some(c) => format!(
                "listing the versions of chart {c} in registry {}",
                q.registry
            ),
            None => format!("listing the charts of registry {}", q.registry),
        };
        let mut items = self
            .chart_operation(what, async {
                match &q.chart {
                    Some(_) => self
                        .chart_fetcher()?
                        .list_versions(&src)
                        .await
                        .map_err(listing_error),
                    None => self
                        .chart_fetcher()?
                        .list_charts(&src)
                        .await
                        .map_err(listing_error),
                }
            })
            .await?;
        drop(turn);
        if q.chart.is_some() {
            sort_versions(&mut items);
        } else {
            items.sort();
            items.dedup();
        }
        let total = items.len();
        let size = q.page_size.unwrap_or(MAX_CHART_PAGE);
        let items = items.into_iter().skip(q.offset).take(size).collect();
        Ok(ChartList { items, total })
    }
}

/// The chart source of a listing: the registry's root URL and secrets.
fn chart_source(r: &Registry, chart: Option<&str>) -> Result<ChartSource, AppError> {
    if r.registry_type != "HELM" {
        return Err(AppError::Invalid(format!(
            "registry {} is of type {}: charts are listed from HELM registries",
            r.name, r.registry_type
        )));
    }
    let ca_pem = match r.cacerts.as_deref() {
        Some("use-dynamic-cacert") => {
            return Err(AppError::FailedPrecondition(format!(
                "registry {} cacerts is use-dynamic-cacert, which Canopy does not resolve; put \
                 the registry's CA certificates (PEM) in cacerts",
                r.name
            )));
        }
        other => other.filter(|c| !c.trim().is_empty()).map(str::to_string),
    };
    Ok(ChartSource {
        root_url: r.root_url.clone(),
        chart_name: chart.unwrap_or("chart").to_string(),
        chart_version: String::new(),
        credentials: Credentials {
            username: r.username.clone().filter(|u| !u.is_empty()),
            auth_token: r.auth_token.clone().filter(|t| !t.is_empty()),
            ca_pem,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_newest_first() {
        let mut v: Vec<String> = ["0.9.0", "latest", "0.10.0", "0.10.0-rc.1", "0.9.0", "main"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        sort_versions(&mut v);
        assert_eq!(
            v,
            ["0.10.0", "0.10.0-rc.1", "0.9.0", "latest", "main"].map(String::from)
        );
    }

    #[test]
    fn import_query_is_strict_and_hides_the_token() {
        let r = ChartImport::from_query(Some(
            "url=oci%3A%2F%2Fh.example%2Fc%2Fweb%3A1.0.0&username=u&authToken=s3cret\
             &includeAuth=true&generateDefaultParameters=true&namespace=web",
        ))
        .unwrap();
        assert_eq!(r.url, "oci://h.example/c/web:1.0.0");
        assert!(r.include_auth && r.generate_default_parameters && !r.generate_default_values);
        assert!(!format!("{r:?}").contains("s3cret"));
        let e = ChartImport::from_query(Some("url=x&chartvalues=a")).unwrap_err();
        assert!(e.to_string().contains("chartvalues"), "{e}");
        let e = ChartImport::from_query(Some(""))
            .unwrap()
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("url is required"), "{e}");
    }

    #[test]
    fn chart_query() {
        let q = ChartQuery::from_query(Some("registry=r&chart=web&pageSize=5&offset=2")).unwrap();
        assert_eq!(q.registry, "r");
        assert_eq!(q.chart.as_deref(), Some("web"));
        assert_eq!((q.page_size, q.offset), (Some(5), 2));
        assert!(ChartQuery::from_query(Some("chart=web")).is_err());
        assert!(ChartQuery::from_query(Some("registry=r&pageSize=101")).is_err());
        assert!(ChartQuery::from_query(Some("registry=r&offset=-1")).is_err());
    }
}
