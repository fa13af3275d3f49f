//! The control plane's Prometheus metrics (docs/OPERATIONS.md, "Metrics", lists each one).
//!
//! Served only on a separate listener (`--metrics-listen ADDR`, off by default), never on the
//! API's address: `/metrics` needs no token, so who can reach it is decided by where it
//! listens (loopback, or an interface only the monitoring network reaches), as with most
//! Prometheus exporters. It must therefore reveal nothing of tenants, and no label carries a
//! project, edge, deployment or user name: HTTP requests are labelled by the matched **route
//! template** (`/v3/projects/{projectName}/catalog/registries`), the method (one of eight) and
//! the status code; anything the router did not match is `route="unmatched"`. So the number of
//! series is bounded by the routes of the build, whatever paths clients send.
//!
//! Cost: with no listener every handle is a no-op. With one, a request costs a read lock of
//! the route map, an uncontended read lock of the route's status codes and two atomic updates
//! (handles are registered once per route, method and code, then cached: no label string is
//! built per request). Fleet gauges (connected edges, open long-polls) are counted when
//! scraped, not kept on the agent paths.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use canopy_metrics::{Counter, Gauge, Histogram, Kind, Registry, Unit};

/// `route` of a request the router matched to no route (unknown paths).
pub const UNMATCHED: &str = "unmatched";

/// The methods labelled by name; any other is `other`.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
];

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The server's metrics. Cheap to share (`Arc`).
pub struct ServerMetrics {
    registry: Registry,
    routes: RwLock<HashMap<Arc<str>, Arc<RouteMetrics>>>,
    /// Status reports taken.
    pub reports_accepted: Counter,
    /// Status reports refused (bounds, unknown apps, a removed edge).
    pub reports_refused: Counter,
    edges: Gauge,
    connected: Gauge,
    long_polls: Gauge,
    deployments: Gauge,
}

/// One route's handles, per method.
struct RouteMetrics {
    route: Arc<str>,
    methods: [OnceLock<MethodMetrics>; METHODS.len()],
}

struct MethodMetrics {
    duration: Histogram,
    /// Request counters by status code (a handful per route: a scan is cheaper than a map).
    codes: RwLock<Vec<(u16, Counter)>>,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl ServerMetrics {
    /// Registers the server's metrics on `registry` (no-ops when it is disabled).
    pub fn new(registry: Registry) -> ServerMetrics {
        let r = &registry;
        r.describe(
            Kind::Counter,
            "canopy_http_requests_total",
            None,
            "HTTP requests answered, by route template, method and status code",
        );
        r.describe(
            Kind::Histogram,
            "canopy_http_request_duration_seconds",
            Some(Unit::Seconds),
            "Time to answer an HTTP request (to the response head), by route template and method",
        );
        r.describe(
            Kind::Counter,
            "canopy_agent_reports_total",
            None,
            "Agent status reports, by result (accepted, refused)",
        );
        r.describe(
            Kind::Gauge,
            "canopy_agent_long_polls",
            None,
            "Desired-state long-polls waiting",
        );
        r.describe(Kind::Gauge, "canopy_fleet_edges", None, "Edges enrolled");
        r.describe(
            Kind::Gauge,
            "canopy_fleet_edges_connected",
            None,
            "Edges connected: a long-poll open or a report within two heartbeats",
        );
        r.describe(Kind::Gauge, "canopy_fleet_deployments", None, "Deployments");
        r.describe(
            Kind::Histogram,
            "canopy_fleet_delivery_seconds",
            Some(Unit::Seconds),
            "Per edge: from a change of its desired state to the long-poll response handing it over",
        );
        r.describe(
            Kind::Histogram,
            "canopy_fleet_fanout_seconds",
            Some(Unit::Seconds),
            "Per deployment change: applying it to the fleet hub and waking every targeted edge",
        );
        r.describe(
            Kind::Histogram,
            "canopy_fleet_fanout_edges",
            None,
            "Per deployment change: edges woken",
        );
        r.describe(
            Kind::Histogram,
            "canopy_store_transaction_duration_seconds",
            Some(Unit::Seconds),
            "Database transactions, begin to commit or rollback, by kind (read, write, edges_seen)",
        );
        r.describe(
            Kind::Histogram,
            "canopy_feed_lag_seconds",
            Some(Unit::Seconds),
            "Change feed between replicas: from a change's commit on another replica to this replica applying it, by log (fleet: deployments, edges, labels, controls, projects; live: statuses, revocations)",
        );
        r.describe(
            Kind::Gauge,
            "canopy_feed_applied_revision",
            None,
            "Change feed: the last revision of each log this replica has applied",
        );
        r.describe(
            Kind::Counter,
            "canopy_feed_reloads_total",
            None,
            "Change feed: whole-fleet reloads (this replica fell behind the oldest change kept)",
        );
        r.describe(
            Kind::Gauge,
            "canopy_build_info",
            None,
            "Always 1; the version of the running server",
        );
        r.gauge(
            "canopy_build_info",
            &[("version", env!("CARGO_PKG_VERSION").into())],
        )
        .set(1.0);
        ServerMetrics {
            reports_accepted: r.counter(
                "canopy_agent_reports_total",
                &[("result", "accepted".into())],
            ),
            reports_refused: r.counter(
                "canopy_agent_reports_total",
                &[("result", "refused".into())],
            ),
            edges: r.gauge("canopy_fleet_edges", &[]),
            connected: r.gauge("canopy_fleet_edges_connected", &[]),
            long_polls: r.gauge("canopy_agent_long_polls", &[]),
            deployments: r.gauge("canopy_fleet_deployments", &[]),
            routes: RwLock::new(HashMap::new()),
            registry,
        }
    }

    /// The registry the metrics are on.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The fleet hub's handles.
    pub fn hub(&self) -> crate::hub::HubMetrics {
        let r = &self.registry;
        crate::hub::HubMetrics {
            delivery: r.histogram("canopy_fleet_delivery_seconds", &[]),
            fanout: r.histogram("canopy_fleet_fanout_seconds", &[]),
            fanout_edges: r.histogram("canopy_fleet_fanout_edges", &[]),
        }
    }

    /// The change feed's handles (see `app::feed`).
    pub fn feed(&self) -> FeedMetrics {
        let r = &self.registry;
        FeedMetrics {
            lag: r.histogram("canopy_feed_lag_seconds", &[("log", "fleet".into())]),
            live_lag: r.histogram("canopy_feed_lag_seconds", &[("log", "live".into())]),
            applied: r.gauge("canopy_feed_applied_revision", &[("log", "fleet".into())]),
            live_applied: r.gauge("canopy_feed_applied_revision", &[("log", "live".into())]),
            reloads: r.counter("canopy_feed_reloads_total", &[]),
        }
    }

    /// The store's handles.
    pub fn store(&self, backend: canopy_store::Backend) -> canopy_store::TxMetrics {
        let backend = match backend {
            canopy_store::Backend::Sqlite => "sqlite",
            canopy_store::Backend::Postgres => "postgres",
        };
        let h = |kind: &'static str| {
            self.registry.histogram(
                "canopy_store_transaction_duration_seconds",
                &[("kind", kind.into()), ("backend", backend.into())],
            )
        };
        canopy_store::TxMetrics {
            read: h("read"),
            write: h("write"),
            edges_seen: h("edges_seen"),
        }
    }

    /// Sets the fleet gauges (called before each scrape).
    pub fn set_fleet(&self, g: crate::hub::FleetGauges) {
        self.edges.set(g.edges as f64);
        self.connected.set(g.connected as f64);
        self.long_polls.set(g.long_polls as f64);
        self.deployments.set(g.deployments as f64);
    }

    fn route(&self, route: &str) -> Arc<RouteMetrics> {
        if let Some(m) = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(route)
        {
            return Arc::clone(m);
        }
        // Routes are those of the build (plus `unmatched`): this map stops growing.
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let m = routes.entry(Arc::from(route)).or_insert_with_key(|k| {
            Arc::new(RouteMetrics {
                route: Arc::clone(k),
                methods: Default::default(),
            })
        });
        Arc::clone(m)
    }

    /// Records one answered request.
    fn record(&self, route: &str, method: &Method, code: u16, elapsed: std::time::Duration) {
        let r = self.route(route);
        let i = method_index(method);
        let m = r.methods[i].get_or_init(|| MethodMetrics {
            duration: self.registry.histogram(
                "canopy_http_request_duration_seconds",
                &[
                    ("route", r.route.to_string().into()),
                    ("method", METHODS[i].into()),
                ],
            ),
            codes: RwLock::new(Vec::new()),
        });
        m.duration.record(elapsed);
        let found = m
            .codes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, counter)| counter.clone());
        let counter = match found {
            Some(c) => c,
            None => {
                let mut codes = m.codes.write().unwrap_or_else(PoisonError::into_inner);
                match codes.iter().find(|(c, _)| *c == code) {
                    Some((_, c)) => c.clone(),
                    None => {
                        let c = self.registry.counter(
                            "canopy_http_requests_total",
                            &[
                                ("route", r.route.to_string().into()),
                                ("method", METHODS[i].into()),
                                ("code", code.to_string().into()),
                            ],
                        );
                        codes.push((code, c.clone()));
                        c
                    }
                }
            }
        };
        counter.increment(1);
    }
}

/// Middleware (outermost of the API's layers, so refusals by authentication and rate limits
/// count too): times and counts each request by route template, method and status; `next`
/// runs the rest of the stack (see `http::layers`).
pub(crate) async fn track<F, Fut>(metrics: &ServerMetrics, req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    if !metrics.registry.is_enabled() {
        return next(req).await;
    }
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = next(req).await;
    metrics.record(
        route.as_ref().map_or(UNMATCHED, MatchedPath::as_str),
        &method,
        response.status().as_u16(),
        start.elapsed(),
    );
    response
}

/// What the change feed records (see `app::feed`).
#[derive(Clone)]
pub struct FeedMetrics {
    /// Fleet changes of other replicas: commit there to applied here.
    pub lag: Histogram,
    /// Live changes (statuses, revocations) of other replicas: commit there to applied here.
    pub live_lag: Histogram,
    /// The fleet revision applied to this replica's hub.
    pub applied: Gauge,
    /// The live revision applied.
    pub live_applied: Gauge,
    /// Whole-fleet reloads.
    pub reloads: Counter,
}
