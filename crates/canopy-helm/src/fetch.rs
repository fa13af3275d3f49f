//! [`ChartFetcher`]: the one way charts are fetched. It answers from the cache while a resolved
//! version is fresh, asks the registry otherwise, falls back to the cached archive when the
//! registry is down, and coalesces concurrent fetches of the same chart: a deployment to
//! 10,000 edges, or 32 callers asking at once, cost one registry round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::archive::{self, ArchiveLimits, ChartMeta};
use crate::cache::{ChartCache, ChartDigest};
use crate::source::{ChartSource, Location, is_loopback};
use crate::{FetchError, http, oci, repo};

/// Bounds on fetching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchLimits {
    /// Time to connect to a registry.
    pub connect_timeout: Duration,
    /// Time for one request, body included.
    pub request_timeout: Duration,
    /// Largest `index.yaml` of a chart repository.
    pub max_index_bytes: u64,
    /// Rules for archives.
    pub archive: ArchiveLimits,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_index_bytes: 32 * 1024 * 1024,
            archive: ArchiveLimits::default(),
        }
    }
}

/// Which OCI registries are spoken to over plain HTTP (Helm's `--plain-http`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PlainHttp {
    /// Registries on this machine (`localhost`, 127.0.0.0/8, `::1`); HTTPS elsewhere.
    #[default]
    Loopback,
    /// HTTPS everywhere.
    Never,
    /// These `host[:port]`s, and loopback ones.
    Hosts(Vec<String>),
}

impl PlainHttp {
    fn applies(&self, host: &str) -> bool {
        match self {
            PlainHttp::Never => false,
            PlainHttp::Loopback => is_loopback(host),
            PlainHttp::Hosts(hosts) => is_loopback(host) || hosts.iter().any(|h| h == host),
        }
    }
}

/// Where a fetched chart came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Downloaded from the registry now.
    Registry,
    /// From the cache, resolved by the registry less than the cache's `ref_ttl` ago.
    Cache,
    /// From the cache because the registry could not be reached (the error says why).
    CacheDuringOutage { error: FetchError },
}

/// A chart archive, checked, with what its `Chart.yaml` says.
#[derive(Debug, Clone)]
pub struct FetchedChart {
    /// The application's `chartName`.
    pub chart_name: String,
    /// The application's `chartVersion`.
    pub chart_version: String,
    /// The archive's digest (what renders are keyed by).
    pub digest: ChartDigest,
    /// The archive (`.tgz`).
    pub archive: Arc<Vec<u8>>,
    /// Its `Chart.yaml`.
    pub meta: ChartMeta,
    pub origin: Origin,
}

impl FetchedChart {
    /// A chart archive from elsewhere than a registry (an upload, a file): checked against the
    /// same rules as fetched ones. `chart_name`'s last segment and `chart_version` must be what
    /// its `Chart.yaml` says.
    pub fn from_archive(
        chart_name: &str,
        chart_version: &str,
        archive: Vec<u8>,
        limits: &ArchiveLimits,
    ) -> Result<FetchedChart, FetchError> {
        let short = chart_name.rsplit('/').next().unwrap_or(chart_name);
        let meta = archive::inspect(&archive, limits, short, chart_version).map_err(|v| {
            FetchError::InvalidArchive {
                chart: chart_name.to_string(),
                version: chart_version.to_string(),
                entry: v.entry,
                reason: v.reason,
            }
        })?;
        Ok(FetchedChart {
            chart_name: chart_name.to_string(),
            chart_version: chart_version.to_string(),
            digest: ChartDigest::of(&archive),
            archive: Arc::new(archive),
            meta,
            origin: Origin::Registry,
        })
    }
}

/// Counters of a fetcher (for tests and metrics).
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Registry downloads started (index or manifest lookups included).
    pub registry_fetches: AtomicU64,
    /// Fetches answered from the cache.
    pub cache_hits: AtomicU64,
    /// Callers that joined a fetch already in flight.
    pub coalesced: AtomicU64,
}

type InFlight = Shared<BoxFuture<'static, Result<FetchedChart, FetchError>>>;

/// Fetches charts through the cache (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct ChartFetcher {
    inner: Arc<Inner>,
}

struct Inner {
    cache: ChartCache,
    limits: FetchLimits,
    plain_http: PlainHttp,
    in_flight: Mutex<HashMap<String, InFlight>>,
    stats: FetchStats,
}

impl ChartFetcher {
    /// A fetcher over this cache.
    pub fn new(cache: ChartCache, limits: FetchLimits, plain_http: PlainHttp) -> ChartFetcher {
        ChartFetcher {
            inner: Arc::new(Inner {
                cache,
                limits,
                plain_http,
                in_flight: Mutex::new(HashMap::new()),
                stats: FetchStats::default(),
            }),
        }
    }

    /// The cache underneath.
    pub fn cache(&self) -> &ChartCache {
        &self.inner.cache
    }

    /// The counters.
    pub fn stats(&self) -> &FetchStats {
        &self.inner.stats
    }

    /// The chart archive for `src`: from the cache when fresh, else from the registry (then
    /// cached), else — when the registry is unreachable — from the cache however old. One
    /// fetch per chart at a time: concurrent callers share its result.
    pub async fn fetch(&self, src: &ChartSource) -> Result<FetchedChart, FetchError> {
        src.location()?;
        let key = self.inner.cache.ref_key(src);
        let fut = {
            let mut map = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(f) = map.get(&key) {
                self.inner.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                f.clone()
            } else {
                let inner = self.inner.clone();
                let src = src.clone();
                let k = key.clone();
                let f = async move { inner.fetch_once(&src, &k).await }
                    .boxed()
                    .shared();
                map.insert(key.clone(), f.clone());
                f
            }
        };
        let result = fut.clone().await;
        // The first caller to see the result retires the entry (only if it is still this one).
        let mut map = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map.get(&key).is_some_and(|f| f.ptr_eq(&fut)) {
            map.remove(&key);
        }
        result
    }
}

impl ChartFetcher {
    /// The versions of `src`'s chart the registry has (its `chart_version` is not used): an
    /// OCI repository's tags (with `_` written back as `+`), or the entries of a repository's
    /// `index.yaml`. Not cached: for listings (`catalog/charts`), not for deployments.
    pub async fn list_versions(&self, src: &ChartSource) -> Result<Vec<String>, FetchError> {
        let mut src = src.clone();
        if src.chart_version.is_empty() {
            src.chart_version = "0".into();
        }
        let inner = &self.inner;
        let client = http::client(&src, &src.credentials, &inner.limits)?;
        match src.location()? {
            Location::Oci {
                host, repository, ..
            } => {
                let plain = inner.plain_http.applies(&host);
                let mut s =
                    oci::Session::new(&src, &inner.limits, client, &host, &repository, plain);
                Ok(s.tags()
                    .await?
                    .into_iter()
                    .map(|t| t.replace('_', "+"))
                    .collect())
            }
            Location::Repo { index, base } => {
                repo::versions(&src, &inner.limits, &client, &index, &base).await
            }
        }
    }

    /// The names of the charts a registry holds (`src`'s chart name and version are not used):
    /// for an OCI registry, the repositories under its root path in the distribution API's
    /// `_catalog` (which some registries do not offer: [`FetchError::NotFound`] then says so);
    /// for a repository, the entries of its `index.yaml`. Not cached: for listings.
    pub async fn list_charts(&self, src: &ChartSource) -> Result<Vec<String>, FetchError> {
        let mut src = src.clone();
        // Placeholders that pass the source's checks; messages name the registry.
        src.chart_name = "chart".into();
        src.chart_version = "0".into();
        let inner = &self.inner;
        let client = http::client(&src, &src.credentials, &inner.limits)?;
        match src.location()? {
            Location::Oci {
                host, repository, ..
            } => {
                let plain = inner.plain_http.applies(&host);
                let root = repository
                    .strip_suffix(&src.chart_name)
                    .unwrap_or("")
                    .to_string();
                let s = oci::Session::new(&src, &inner.limits, client, &host, &repository, plain);
                let mut s = s.registry_wide();
                s.catalog(&root).await
            }
            Location::Repo { index, base } => {
                repo::names(&src, &inner.limits, &client, &index, &base).await
            }
        }
    }
}

impl Inner {
    fn cache_error(e: impl std::fmt::Display) -> FetchError {
        FetchError::Cache(e.to_string())
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, FetchError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(Self::cache_error)
    }

    async fn fetch_once(
        self: &Arc<Self>,
        src: &ChartSource,
        key: &str,
    ) -> Result<FetchedChart, FetchError> {
        let this = self.clone();
        let k = key.to_string();
        let cached = Self::blocking(move || {
            let r = this.cache.lookup(&k)?;
            let bytes = this.cache.read(&r.digest)?;
            Some((r, bytes))
        })
        .await?;
        if let Some((r, bytes)) = &cached
            && r.age() < self.cache.config().ref_ttl
        {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return self.checked(src, bytes.clone(), Origin::Cache).await;
        }
        self.stats.registry_fetches.fetch_add(1, Ordering::Relaxed);
        match self.download(src).await {
            Ok(bytes) => {
                let chart = self.checked(src, bytes, Origin::Registry).await?;
                let this = self.clone();
                let k = key.to_string();
                let archive = chart.archive.clone();
                let dir = self.cache.config().dir.display().to_string();
                Self::blocking(move || this.cache.insert(&k, &archive))
                    .await?
                    .map_err(|e| {
                        FetchError::Cache(format!("cannot store the chart in {dir}: {e}"))
                    })?;
                Ok(chart)
            }
            Err(e) if e.is_outage() => match cached {
                Some((_, bytes)) => {
                    tracing::warn!(
                        chart = %src.chart_name,
                        version = %src.chart_version,
                        error = %e,
                        "registry unreachable; using the cached chart"
                    );
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    self.checked(src, bytes, Origin::CacheDuringOutage { error: e })
                        .await
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Downloads the archive from the registry.
    async fn download(&self, src: &ChartSource) -> Result<Vec<u8>, FetchError> {
        let client = http::client(src, &src.credentials, &self.limits)?;
        match src.location()? {
            Location::Oci {
                host,
                repository,
                tag,
            } => {
                let plain = self.plain_http.applies(&host);
                let mut s = oci::Session::new(src, &self.limits, client, &host, &repository, plain);
                let layer = s.chart_layer(&tag).await?;
                s.blob(&layer).await
            }
            Location::Repo { index, base } => {
                repo::fetch(src, &self.limits, &client, &index, &base).await
            }
        }
    }

    /// Checks the archive against the rules (off the async runtime: decompression is work).
    async fn checked(
        &self,
        src: &ChartSource,
        bytes: Vec<u8>,
        origin: Origin,
    ) -> Result<FetchedChart, FetchError> {
        let limits = self.limits.archive.clone();
        let name = src.short_name().to_string();
        let version = src.chart_version.clone();
        let bytes = Arc::new(bytes);
        let b = bytes.clone();
        let meta = Self::blocking(move || archive::inspect(&b, &limits, &name, &version))
            .await?
            .map_err(|v| FetchError::InvalidArchive {
                chart: src.chart_name.clone(),
                version: src.chart_version.clone(),
                entry: v.entry,
                reason: v.reason,
            })?;
        Ok(FetchedChart {
            chart_name: src.chart_name.clone(),
            chart_version: src.chart_version.clone(),
            digest: ChartDigest::of(&bytes),
            archive: bytes,
            meta,
            origin,
        })
    }
}
