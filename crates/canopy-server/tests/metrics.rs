//! `/metrics` of a real control plane (SQLite and PostgreSQL) with simulated agents: the text
//! parses strictly as Prometheus' exposition format, counters and histograms move by what the
//! test did, fleet gauges match the live agents, no label names a tenant's things, unknown
//! paths do not create series, and the endpoint is only on its own listener.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use canopy_proto::AppState;
use canopy_testkit::sim_agent::SimAgent;
use canopy_testkit::{TestControlPlane, example};
use reqwest::StatusCode;
use serde_json::json;

const P: &str = "default";

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (version 0.0.4) strictly: every line is a `# HELP` or
/// `# TYPE` comment or a sample `name{label="value",...} value` (label values with the
/// format's escapes), every sample belongs to a family typed before it, and every histogram's
/// buckets are cumulative with `le="+Inf"` equal to its `_count`. Panics naming the first bad
/// line. (Written here: `prometheus-parse` reads no `}` inside a label value, and route
/// templates have them.)
fn parse_strict(text: &str) -> Vec<Sample> {
    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    /// `k="v",...}` -> labels and the rest after `}`.
    fn labels<'a>(mut rest: &'a str, line: &str) -> (BTreeMap<String, String>, &'a str) {
        let mut out = BTreeMap::new();
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                return (out, after);
            }
            let (k, after) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label in {line:?}"));
            assert!(is_name(k), "bad label name {k:?} in {line:?}");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => panic!("bad escape in {line:?}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line:?}"),
                }
            };
            assert!(
                out.insert(k.to_string(), value).is_none(),
                "label twice in {line:?}"
            );
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(t)) => {
                    assert!(is_name(name), "bad metric name in {line:?}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "bad type in {line:?}"
                    );
                    assert!(
                        typed.insert(name.to_string(), t.to_string()).is_none(),
                        "typed twice: {line:?}"
                    );
                }
                (Some("HELP"), Some(name), _) => assert!(is_name(name), "bad HELP {line:?}"),
                _ => panic!("bad comment line {line:?}"),
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let name = &line[..name_end];
        assert!(is_name(name), "bad metric name in {line:?}");
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(rest) => labels(rest, line),
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(typed.contains_key(family), "no # TYPE before {line:?}");
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: cumulative buckets, +Inf = _count, per series.
    for (family, _) in typed.iter().filter(|(_, t)| *t == "histogram") {
        let bucket = format!("{family}_bucket");
        // Labels but `le` -> (le, cumulative count) of each bucket.
        type Buckets = BTreeMap<Vec<(String, String)>, Vec<(f64, f64)>>;
        let mut series = Buckets::new();
        for s in samples.iter().filter(|s| s.name == bucket) {
            let le: f64 = match s.labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().expect("le is a number"),
            };
            let key = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "le")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            series.entry(key).or_default().push((le, s.value));
        }
        for (key, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "{family}{key:?}: buckets not cumulative"
            );
            let inf = buckets.last().expect("a bucket");
            assert!(inf.0.is_infinite(), "{family}{key:?}: no +Inf bucket");
            let count = samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count")
                        && key.iter().all(|(k, v)| s.labels.get(k) == Some(v))
                })
                .unwrap_or_else(|| panic!("{family}{key:?}: no _count"));
            assert_eq!(
                inf.1, count.value,
                "{family}{key:?}: +Inf bucket is not _count"
            );
        }
    }
    samples
}

/// The value of the sample `name` whose labels include `labels` (0 when there is none: a
/// counter not yet moved).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .find(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map_or(0.0, |s| s.value)
}

async fn scrape(url: &str) -> (String, Vec<Sample>) {
    let resp = reqwest::get(url).await.expect("metrics answer");
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = resp.text().await.unwrap();
    let samples = parse_strict(&text);
    (text, samples)
}

/// Scrapes until `ok` holds (renderings are cached for a second), within a generous deadline.
async fn scrape_until(
    url: &str,
    what: &str,
    ok: impl Fn(&[Sample]) -> bool,
) -> (String, Vec<Sample>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (text, samples) = scrape(url).await;
        if ok(&samples) {
            return (text, samples);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn with_metrics(c: &mut canopy_server::ServerConfig) {
    c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    // The 1,000 unknown paths below go as fast as the machine allows: past the per-caller rate
    // limit (100/s, bursts of 400) on a quick one, and a 429 is not what they are there to count.
    c.limits.requests_per_second = 0;
}

async fn exercise(cp: TestControlPlane) {
    let metrics = cp.metrics_url.clone().expect("a metrics listener");
    let backend = cp.backend;

    // Not on the API's address: refused without a token, not found with one.
    let anon = reqwest::get(cp.at("/metrics")).await.unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let (s, _) = cp.get(&cp.at("/metrics")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    for dir in ["web-demo", "web-demo-1.1.0"] {
        let (s, b) = cp.upload_dir(P, &example(dir)).await;
        assert_eq!(s, StatusCode::OK, "upload {dir}: {b}");
    }
    let (s, t) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"description": "metrics"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let token = t["secret"].as_str().unwrap().to_string();
    let names = ["metrics-edge-1", "metrics-edge-2", "metrics-edge-3"];
    let mut agents = Vec::new();
    for name in names {
        let mut a = SimAgent::enroll(&cp, &token, name, &[("site", "metrics")]).await;
        a.poll(0).await;
        agents.push(a);
    }
    let (_, before) = scrape_until(&metrics, "three connected edges", |s| {
        value(s, "canopy_fleet_edges_connected", &[]) == 3.0
    })
    .await;

    let (s, b) = cp
        .post(
            &cp.at(&format!("/v1/projects/{P}/appdeployment/deployments")),
            &json!({"appName": "web-demo", "appVersion": "1.0.0",
                    "allAppTargetClusters": {"labels": {"site": "metrics"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let deployment = b["deploymentId"].as_str().unwrap().to_string();
    for a in &mut agents {
        let got = a.poll(20).await.expect("the deployment reaches the agent");
        assert_eq!(got.deployments.len(), 1);
        let (s, b) = a.report(AppState::Running).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    // One more long-poll stays open (nothing newer to get).
    let mut waiting = agents.pop().unwrap();
    let poll = tokio::spawn(async move { waiting.poll(30).await });

    let delta = |after: &[Sample], name: &str, labels: &[(&str, &str)]| {
        value(after, name, labels) - value(&before, name, labels)
    };
    let status_200 = [
        ("route", "/canopy/v1/agent/status"),
        ("method", "POST"),
        ("code", "200"),
    ];
    let (text, after) = scrape_until(&metrics, "the reports and the open long-poll", |s| {
        delta(s, "canopy_http_requests_total", &status_200) == 3.0
            && value(s, "canopy_agent_long_polls", &[]) == 1.0
    })
    .await;
    assert_eq!(
        delta(
            &after,
            "canopy_agent_reports_total",
            &[("result", "accepted")]
        ),
        3.0
    );
    assert_eq!(
        delta(
            &after,
            "canopy_http_requests_total",
            &[
                ("route", "/canopy/v1/agent/desired-state"),
                ("method", "GET"),
                ("code", "200")
            ]
        ),
        3.0
    );
    assert_eq!(
        delta(
            &after,
            "canopy_http_requests_total",
            &[
                (
                    "route",
                    "/v1/projects/{projectName}/appdeployment/deployments"
                ),
                ("method", "POST"),
                ("code", "200")
            ]
        ),
        1.0
    );
    assert!(
        delta(
            &after,
            "canopy_http_request_duration_seconds_count",
            &[("route", "/canopy/v1/agent/status"), ("method", "POST")]
        ) == 3.0,
        "{text}"
    );
    // Each agent received the change once; one change woke three edges.
    assert_eq!(
        delta(&after, "canopy_fleet_delivery_seconds_count", &[]),
        3.0
    );
    assert_eq!(
        delta(
            &after,
            "canopy_fleet_delivery_seconds_bucket",
            &[("le", "+Inf")]
        ),
        3.0
    );
    assert_eq!(delta(&after, "canopy_fleet_fanout_seconds_count", &[]), 1.0);
    assert_eq!(delta(&after, "canopy_fleet_fanout_edges_sum", &[]), 3.0);
    assert_eq!(value(&after, "canopy_fleet_edges", &[]), 3.0);
    assert_eq!(value(&after, "canopy_fleet_edges_connected", &[]), 3.0);
    assert_eq!(value(&after, "canopy_fleet_deployments", &[]), 1.0);
    assert!(
        delta(
            &after,
            "canopy_store_transaction_duration_seconds_count",
            &[("kind", "write"), ("backend", backend)]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        value(&after, "process_resident_memory_bytes", &[]) > 0.0,
        "{text}"
    );
    assert!(value(&after, "process_open_fds", &[]) > 0.0, "{text}");

    // Nothing of the tenant's: no edge name or id, no deployment id.
    for secret in names
        .iter()
        .map(|n| n.to_string())
        .chain(agents.iter().map(|a| a.id.clone()))
        .chain([deployment.clone()])
    {
        assert!(!text.contains(&secret), "{secret} in /metrics:\n{text}");
    }

    // 1,000 unknown paths (with and without a token) make no new series.
    let series = |s: &[Sample]| {
        s.iter()
            .filter(|s| s.name == "canopy_http_requests_total")
            .count()
    };
    let routes_before = series(&after);
    for i in 0..1000 {
        let url = cp.at(&format!("/no/such/path-{i}"));
        let (s, _) = if i % 2 == 0 {
            cp.get(&url).await
        } else {
            let r = reqwest::get(&url).await.unwrap();
            (r.status(), serde_json::Value::Null)
        };
        assert!(
            s == StatusCode::NOT_FOUND || s == StatusCode::UNAUTHORIZED,
            "{s}"
        );
    }
    let (text, end) = scrape_until(&metrics, "the unknown paths counted", |s| {
        let unmatched: f64 = s
            .iter()
            .filter(|s| {
                s.name == "canopy_http_requests_total"
                    && s.labels.get("route").map(String::as_str) == Some("unmatched")
            })
            .map(|s| s.value)
            .sum();
        unmatched >= 1000.0
    })
    .await;
    assert!(
        series(&end) <= routes_before + 2,
        "{} series before, {} after:\n{text}",
        routes_before,
        series(&end)
    );
    assert!(!text.contains("path-"), "{text}");

    drop(poll);
}

#[tokio::test]
async fn metrics_follow_a_deployment_to_simulated_agents_sqlite() {
    exercise(TestControlPlane::start_configured(with_metrics).await).await;
}

#[tokio::test]
async fn metrics_follow_a_deployment_to_simulated_agents_postgres() {
    let Some(cp) = TestControlPlane::start_postgres_configured(with_metrics).await else {
        return;
    };
    exercise(cp).await;
}

#[tokio::test]
async fn no_metrics_listener_by_default() {
    let cp = TestControlPlane::start().await;
    assert!(cp.metrics_url.is_none());
    let (s, _) = cp.get(&cp.at("/metrics")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
