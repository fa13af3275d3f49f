//! The authorization matrix: every endpoint of the OpenAPI document (so a new endpoint is
//! covered the day it is added) against every kind of caller — no token, an expired token (OIDC
//! and built-in), a bad signature, `alg: none`, an edge's agent credential, roles on another
//! project only, read-only roles, write roles (catalog only, fleet only, both, by project UUID),
//! the machine-to-machine role and an administrator — over one real server with an OIDC
//! identity provider (`canopy_auth::testing::TestIssuer`).
//!
//! Expectations come from the role rules (`app::auth`), written out here independently:
//! invalid credentials are 401 everywhere (JSON body, no echo of the token); a caller without a
//! role on the target project gets exactly the answer a nonexistent project gets; read-only
//! callers read (200) and are refused every change (403); writers are never refused;
//! administrator-only endpoints are 403 for everybody else. A second test checks that another
//! project's resources (deployment, edge, enrollment token ids...) named under a project the
//! caller may use answer exactly like missing ones, and are left untouched.
//!
//! On failure the whole matrix (endpoint × credential → got/expected) is printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use canopy_auth::testing::TestIssuer;
use canopy_proto::{AppState, AppStatus, DesiredState, Generation, PROTOCOL_HEADER, StatusReport};
use canopy_testkit::{TestControlPlane, example};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The project under test.
const P1: &str = "p1";
/// Another tenant.
const P2: &str = "p2";
/// A project that does not exist: callers without a role on P1 must get the same answers here.
const MISSING: &str = "no-such-project";
/// A registry secret that no response may ever show, except sensitive reads by catalog writers.
const REGISTRY_SECRET: &str = "s3cret-registry-token-4711";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\nrest-of-png";

fn registry_yaml(name: &str) -> String {
    format!(
        "specSchema: Registry\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: {name}\ndescription: uploaded\ntype: HELM\nrootUrl: https://{name}.example.com\n"
    )
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ------------------------------------------------------------------ what each endpoint needs

/// What an endpoint requires of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    CatRead,
    CatWrite,
    FleetRead,
    FleetWrite,
    /// Any role on the project (the project's own tenancy record).
    See,
    /// Catalog or fleet write access on the project (its audit log).
    ProjectAudit,
    /// `canopy-admin` only: 403 for everybody else.
    Admin,
    /// Any authenticated caller.
    AnyUser,
    /// The `default` organization: visible to callers with a role on a project it owns.
    OrgVisible,
    /// Another user's API token: administrators only, 404 for everybody else.
    OwnerOrAdmin,
    /// Ends a built-in login session (200); the matrix's callers have none (API tokens, OIDC
    /// tokens): 400, and nothing is revoked.
    Logout,
}

/// A request body template: `{param}` placeholders are filled from the fixture.
#[derive(Debug, Clone, Copy)]
enum Tpl {
    None,
    Json(&'static str),
    /// A multipart upload of one registry YAML.
    Multipart,
}

/// An explicit entry: every mutating endpoint and every endpoint outside a project needs one
/// (project-scoped reads are derived: see [`derived_need`]).
struct Entry {
    method: &'static str,
    path: &'static str,
    query: &'static str,
    need: Need,
    body: Tpl,
    /// The status the first permitted caller gets, when not 2xx.
    ok: Option<u16>,
}

const fn e(method: &'static str, path: &'static str, need: Need, body: Tpl) -> Entry {
    Entry {
        method,
        path,
        query: "",
        need,
        body,
        ok: None,
    }
}

/// Bodies (valid ones: authorization, not validation, must decide) and needs.
#[rustfmt::skip]
fn entries() -> Vec<Entry> {
    use Need::*;
    use Tpl::{Json, None as NoBody};
    const CAT: &str = "/v3/projects/{projectName}/catalog";
    let cat = |rest: &str| -> &'static str { Box::leak(format!("{CAT}{rest}").into_boxed_str()) };
    vec![
        // Catalog.
        e("post", cat("/registries"), CatWrite, Json(r#"{"name":"reg-new","rootUrl":"oci://registry.example.com/new","type":"HELM"}"#)),
        e("put", cat("/registries/{registryName}"), CatWrite, Json(r#"{"name":"{registryName}","rootUrl":"oci://registry.example.com/changed","type":"HELM","description":"changed"}"#)),
        e("delete", cat("/registries/{registryName}"), CatWrite, NoBody),
        e("post", cat("/applications"), CatWrite, Json(r#"{"name":"app-new","version":"1.0.0","chartName":"app-new","chartVersion":"1.0.0","helmRegistryName":"helm","profiles":[{"name":"p","chartValues":"a: 1\n"}],"defaultProfileName":"p"}"#)),
        e("put", cat("/applications/{applicationName}/versions/{version}"), CatWrite, Json(r#"{"name":"{applicationName}","version":"{version}","chartName":"{applicationName}","chartVersion":"{version}","helmRegistryName":"helm","description":"changed","profiles":[{"name":"p","chartValues":"a: 2\n"}],"defaultProfileName":"p"}"#)),
        e("delete", cat("/applications/{applicationName}/versions/{version}"), CatWrite, NoBody),
        e("post", cat("/deployment_packages"), CatWrite, Json(r#"{"name":"pkg-new","version":"1.0.0","applicationReferences":[{"name":"web","version":"1.0.0"}],"profiles":[{"name":"default","applicationProfiles":{"web":"default"}}],"defaultProfileName":"default"}"#)),
        e("put", cat("/deployment_packages/{deploymentPackageName}/versions/{version}"), CatWrite, Json(r#"{"name":"{deploymentPackageName}","version":"{version}","description":"changed","applicationReferences":[{"name":"{applicationName}","version":"{version}"}],"profiles":[{"name":"default","applicationProfiles":{"{applicationName}":"p"}}],"defaultProfileName":"default"}"#)),
        e("delete", cat("/deployment_packages/{deploymentPackageName}/versions/{version}"), CatWrite, NoBody),
        e("post", cat("/artifacts"), CatWrite, Json(r#"{"name":"icon-new","mimeType":"image/png","artifact":"{png}"}"#)),
        e("put", cat("/artifacts/{artifactName}"), CatWrite, Json(r#"{"name":"{artifactName}","mimeType":"image/png","description":"changed","artifact":"{png}"}"#)),
        e("delete", cat("/artifacts/{artifactName}"), CatWrite, NoBody),
        e("post", cat("/upload"), CatWrite, Tpl::Multipart),
        Entry { query: "lastUpload=true", ..e("post", cat("/uploads"), CatWrite, Json(r#"{"fileName":"up.yaml","artifact":"{registryYaml}"}"#)) },
        // Helm charts: a permitted caller gets as far as the registry (none listens on port 9:
        // 400 naming it) or the missing `registry` parameter (400).
        Entry { query: "url=oci%3A%2F%2F127.0.0.1%3A9%2Fcharts%2Fweb%3A1.0.0", ok: Some(400), ..e("post", cat("/import"), CatWrite, NoBody) },
        Entry { query: "chart=web", ok: Some(400), ..e("get", cat("/charts"), CatRead, NoBody) },
        // Deployments.
        e("post", "/v1/projects/{projectName}/appdeployment/deployments", FleetWrite, Json(r#"{"appName":"web-demo","appVersion":"1.0.0","displayName":"authz-new","allAppTargetClusters":{"labels":{"site":"nowhere"}}}"#)),
        e("put", "/v1/projects/{projectName}/appdeployment/deployments/{deplId}", FleetWrite, Json(r#"{"appName":"web-demo","appVersion":"1.0.0","displayName":"authz-changed","allAppTargetClusters":{"labels":{"site":"{projectName}"}}}"#)),
        e("delete", "/v1/projects/{projectName}/appdeployment/deployments/{deplId}", FleetWrite, NoBody),
        // Fleet.
        e("post", "/canopy/v1/projects/{projectName}/enrollment-tokens", FleetWrite, Json(r#"{"description":"authz"}"#)),
        // Listing them too: enrollment tokens are for those who may enroll edges (not `ao-r`).
        e("get", "/canopy/v1/projects/{projectName}/enrollment-tokens", FleetWrite, NoBody),
        e("delete", "/canopy/v1/projects/{projectName}/enrollment-tokens/{tokenId}", FleetWrite, NoBody),
        e("delete", "/canopy/v1/projects/{projectName}/edges/{edge}", FleetWrite, NoBody),
        e("patch", "/canopy/v1/projects/{projectName}/edges/{edge}/labels", FleetWrite, Json(r#"{"set":{"tier":"gold"}}"#)),
        // Resource manager: every action needs fleet write access (the VNC address too: it
        // opens a console).
        e("put", "/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/virtual-machines/{virtualMachineId}/start", FleetWrite, Json("{}")),
        e("put", "/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/virtual-machines/{virtualMachineId}/stop", FleetWrite, Json("{}")),
        e("put", "/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/virtual-machines/{virtualMachineId}/restart", FleetWrite, Json("{}")),
        e("get", "/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/virtual-machines/{virtualMachineId}/vnc", FleetWrite, NoBody),
        e("put", "/v1/projects/{projectName}/resource/workloads/pods/clusters/{clusterId}/namespaces/{namespace}/pods/{podName}/delete", FleetWrite, Json("{}")),
        e("get", "/canopy/v1/projects/{projectName}/resource/workloads/deployments/{deplId}", FleetRead, NoBody),
        // A Helm application's rendered manifest: the fixture's deployment has no Helm
        // application, so a permitted caller gets 404 naming it (tests/helm.rs covers 200).
        Entry { ok: Some(404), ..e("get", "/canopy/v1/projects/{projectName}/deployments/{deplId}/apps/{appName}/manifest", FleetRead, NoBody) },
        // Consoles and logs (tunnels). Without `Upgrade: websocket` a permitted caller gets 400
        // (after the project and access checks); the fixture's edge has no agent, so a permitted
        // log read waits for the (shortened) claim timeout and gets 503; the fixture's `appId`
        // is the VM app, which has no container `httpd`: 404 naming the container.
        Entry { ok: Some(400), ..e("get", "/vnc/{projectName}/{appId}/{clusterId}/{vmId}", FleetWrite, NoBody) },
        Entry { ok: Some(400), ..e("get", "/canopy/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/virtual-machines/{vmId}/serial", FleetWrite, NoBody) },
        Entry { ok: Some(503), ..e("get", "/canopy/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/virtual-machines/{vmId}/logs", FleetRead, NoBody) },
        Entry { ok: Some(404), ..e("get", "/canopy/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/containers/{containerName}/logs", FleetRead, NoBody) },
        // Audit: everything for administrators (a project's own log is derived: ProjectAudit).
        e("get", "/canopy/v1/audit", Admin, NoBody),
        // Tenancy.
        e("get", "/v1/orgs", AnyUser, NoBody),
        e("get", "/v1/orgs/{org}", OrgVisible, NoBody),
        e("get", "/v1/orgs/{org}/status", OrgVisible, NoBody),
        e("put", "/v1/orgs/{org}", Admin, Json(r#"{"description":"authz"}"#)),
        // The default organization owns projects: even an administrator cannot delete it.
        Entry { ok: Some(400), ..e("delete", "/v1/orgs/{org}", Admin, NoBody) },
        e("get", "/v1/projects", AnyUser, NoBody),
        e("put", "/v1/projects/{projectName}", Admin, Json(r#"{"description":"authz"}"#)),
        e("delete", "/v1/projects/{projectName}", Admin, NoBody),
        // The project policy: read by any role on the project (it says why a deployment is
        // refused), set by administrators only (it restricts catalog writers and deployers).
        e("get", "/canopy/v1/projects/{projectName}/policy", See, NoBody),
        e("put", "/canopy/v1/projects/{projectName}/policy", Admin, Json(r#"{"allowedImageRegistries":["*"],"allowedHostPorts":{"min":1,"max":65535}}"#)),
        // Identity.
        e("post", "/canopy/v1/logout", Logout, NoBody),
        e("get", "/canopy/v1/whoami", AnyUser, NoBody),
        e("get", "/canopy/v1/users", Admin, NoBody),
        e("post", "/canopy/v1/users", Admin, Json(r#"{"name":"newbie","roles":["p1_cat-r"]}"#)),
        e("get", "/canopy/v1/users/{user}", Admin, NoBody),
        e("patch", "/canopy/v1/users/{user}", Admin, Json(r#"{"roles":["p2_cat-r","p2_ao-r"]}"#)),
        e("delete", "/canopy/v1/users/{user}", Admin, NoBody),
        e("get", "/canopy/v1/tokens", AnyUser, NoBody),
        e("post", "/canopy/v1/tokens", Admin, Json(r#"{"name":"authz","user":"{user}"}"#)),
        e("delete", "/canopy/v1/tokens/{id}", OwnerOrAdmin, NoBody),
    ]
}

/// Public endpoints: not in the matrix (they take no user token); each gets its own
/// assertions (agent endpoints below, login in `attacks.rs`, the health check here).
const SKIP: &[(&str, &str, &str)] = &[
    (
        "get",
        "/healthz",
        "public liveness probe (asserted to answer without a token)",
    ),
    (
        "post",
        "/canopy/v1/login",
        "public: exchanges a password for a token (attacks.rs)",
    ),
    (
        "post",
        "/canopy/v1/agent/enroll",
        "agent protocol: enrollment token in the body (agent checks below)",
    ),
    (
        "get",
        "/canopy/v1/agent/desired-state",
        "agent protocol: edge credential only (agent checks below)",
    ),
    (
        "post",
        "/canopy/v1/agent/status",
        "agent protocol: edge credential only (agent checks below)",
    ),
    (
        "get",
        "/canopy/v1/agent/tunnels",
        "agent protocol: edge credential only (agent checks below)",
    ),
    (
        "get",
        "/canopy/v1/agent/tunnels/{tunnelId}",
        "agent protocol: edge credential only, and only the edge the tunnel was asked of (tunnels.rs)",
    ),
    (
        "post",
        "/canopy/v1/agent/tunnels/{tunnelId}/error",
        "agent protocol: edge credential only, and only the edge the tunnel was asked of (tunnels.rs)",
    ),
    (
        "get",
        "/canopy/v1/peer/tunnels/{tunnelId}",
        "between replicas: a MAC under the key replicas share, no user token (tunnels_replicas.rs)",
    ),
];

/// Variants of documented endpoints (query parameters that change the access needed) and
/// undocumented aliases the router also serves.
const EXTRA: &[(&str, &str, &str, Need)] = &[
    (
        "get",
        "/v3/projects/{projectName}/catalog/registries",
        "showSensitiveInfo=true",
        Need::CatWrite,
    ),
    (
        "get",
        "/v3/projects/{projectName}/catalog/registries/{registryName}",
        "showSensitiveInfo=true",
        Need::CatWrite,
    ),
    ("get", "/canopy/v1/tokens", "all=true", Need::Admin),
    (
        "get",
        "/canopy/v1/audit",
        "project={projectName}",
        Need::ProjectAudit,
    ),
    (
        "get",
        "/v1/projects/{projectName}/appdeployment/deployments/clusters/{clusterId}",
        "",
        Need::FleetRead,
    ),
    (
        "get",
        "/v1/projects/{projectName}/appdeployment/summary/deployments_status",
        "",
        Need::FleetRead,
    ),
];

/// Project-scoped reads need read access of their area.
fn derived_need(method: &str, path: &str) -> Option<Need> {
    if method != "get" || !path.contains("{projectName}") {
        return None;
    }
    Some(
        if path == "/v1/projects/{projectName}" || path == "/v1/projects/{projectName}/status" {
            Need::See
        } else if path.ends_with("/audit") {
            Need::ProjectAudit
        } else if path.starts_with("/v3/") || path.contains("/catalog/") {
            Need::CatRead
        } else {
            Need::FleetRead
        },
    )
}

/// One request of the matrix.
#[derive(Debug, Clone)]
struct Case {
    method: Method,
    path: &'static str,
    query: &'static str,
    need: Need,
    body: Tpl,
    ok: Option<u16>,
}

impl Case {
    fn label(&self) -> String {
        let q = if self.query.is_empty() {
            String::new()
        } else {
            format!("?{}", self.query)
        };
        format!("{} {}{q}", self.method, self.path)
    }

    fn project_scoped(&self) -> bool {
        self.path.contains("{projectName}") || self.query.contains("{projectName}")
    }

    /// Deletes run last, in an order that lets each succeed (dependents first, the project
    /// itself at the very end).
    fn rank(&self) -> u8 {
        if self.method != Method::DELETE {
            return 0;
        }
        let p = self.path;
        [
            "/canopy/v1/tokens/",
            "/enrollment-tokens/",
            "/deployments/",
            "/deployment_packages/",
            "/applications/",
            "/artifacts/",
            "/registries/",
            "/edges/",
            "/canopy/v1/users/",
            "/v1/orgs/",
        ]
        .iter()
        .position(|s| p.contains(s))
        .map_or(
            if p == "/v1/projects/{projectName}" {
                20
            } else {
                10
            },
            |i| 1 + i as u8,
        )
    }
}

/// Every (method, path) of the document as matrix cases; problems if an endpoint has neither
/// an entry nor a skip reason, or an entry names an endpoint the document lacks.
fn cases(doc: &Value) -> (Vec<Case>, Vec<String>) {
    let entries = entries();
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let mut documented = Vec::new();
    let paths = doc["paths"].as_object().expect("the document has paths");
    for (path, item) in paths {
        let path: &'static str = Box::leak(path.clone().into_boxed_str());
        for method in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            if item.get(method).is_none() {
                continue;
            }
            documented.push((method, path));
            if SKIP.iter().any(|(m, p, _)| *m == method && *p == path) {
                continue;
            }
            let entry = entries
                .iter()
                .find(|e| e.method == method && e.path == path);
            let (need, body, query, ok) = match (entry, derived_need(method, path)) {
                (Some(e), _) => (e.need, e.body, e.query, e.ok),
                (None, Some(need)) => (need, Tpl::None, "", None),
                (None, None) => {
                    problems.push(format!(
                        "{} {path} is in the OpenAPI document but not in the authorization matrix: \
                         add it to `entries()` (with a valid request body when it changes something, \
                         and the access it needs) or to SKIP with a reason",
                        method.to_uppercase()
                    ));
                    continue;
                }
            };
            out.push(Case {
                method: Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                path,
                query,
                need,
                body,
                ok,
            });
        }
    }
    for e in &entries {
        if !documented.contains(&(e.method, e.path)) {
            problems.push(format!(
                "matrix entry {} {} is not in the OpenAPI document any more: remove or fix it",
                e.method.to_uppercase(),
                e.path
            ));
        }
    }
    for (m, p, _) in SKIP {
        if !documented.contains(&(*m, *p)) {
            problems.push(format!(
                "SKIP entry {} {p} is not in the OpenAPI document any more",
                m.to_uppercase()
            ));
        }
    }
    for (m, p, q, need) in EXTRA {
        out.push(Case {
            method: Method::from_bytes(m.to_uppercase().as_bytes()).unwrap(),
            path: p,
            query: q,
            need: *need,
            body: Tpl::None,
            ok: None,
        });
    }
    (out, problems)
}

// ------------------------------------------------------------------ callers

#[derive(Debug, Clone)]
enum Who {
    /// Invalid credentials of some kind: 401 everywhere.
    Unauth,
    /// An OIDC identity with these roles.
    Oidc(Vec<String>),
    /// A built-in user (API token) with these roles.
    BuiltIn { user: String, roles: Vec<String> },
}

#[derive(Debug, Clone)]
struct Row {
    name: &'static str,
    /// The whole `Authorization` header value, if any.
    auth: Option<String>,
    who: Who,
}

impl Row {
    fn roles(&self) -> &[String] {
        match &self.who {
            Who::Unauth => &[],
            Who::Oidc(r) => r,
            Who::BuiltIn { roles, .. } => roles,
        }
    }

    /// The secret this row sends (what a 401 must not echo).
    fn secret(&self) -> Option<&str> {
        self.auth
            .as_deref()
            .map(|a| a.strip_prefix("Bearer ").unwrap_or(a))
    }
}

/// What a cell must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exactly this status.
    Status(u16),
    /// Not refused: neither 401 nor 403, nor "project not found", nor a server error (reads:
    /// exactly 200).
    Allowed,
    /// This status, and exactly the answer the same request gets for a missing project.
    Hidden(u16),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Status(s) => write!(f, "{s}"),
            Expect::Allowed => write!(f, "ok"),
            Expect::Hidden(s) => write!(f, "{s}=missing"),
        }
    }
}

/// The role rules, independently of the server's code.
struct Model {
    p1_uuid: String,
}

impl Model {
    fn p1_suffixes<'a>(&'a self, row: &'a Row) -> impl Iterator<Item = &'a str> + 'a {
        row.roles().iter().filter_map(|r| {
            let (prefix, suffix) = r.rsplit_once('_')?;
            ((prefix == P1 || prefix.eq_ignore_ascii_case(&self.p1_uuid))
                && matches!(suffix, "cat-r" | "cat-rw" | "ao-r" | "ao-rw"))
            .then_some(suffix)
        })
    }

    fn has(row: &Row, role: &str) -> bool {
        row.roles().iter().any(|r| r == role)
    }

    fn admin(row: &Row) -> bool {
        Self::has(row, "canopy-admin")
    }

    fn sees_p1(&self, row: &Row) -> bool {
        Self::admin(row) || Self::has(row, "ao-m2m-rw") || self.p1_suffixes(row).next().is_some()
    }

    fn may(&self, row: &Row, suffixes: &[&str]) -> bool {
        Self::admin(row)
            || Self::has(row, "ao-m2m-rw")
            || self.p1_suffixes(row).any(|s| suffixes.contains(&s))
    }

    /// Both fixture projects belong to the default organization: a caller with a role on
    /// either (or on every project) sees it.
    fn sees_default_org(&self, row: &Row) -> bool {
        Self::admin(row)
            || Self::has(row, "ao-m2m-rw")
            || row.roles().iter().any(|r| {
                r.rsplit_once('_').is_some_and(|(p, _)| {
                    p == P1 || p == P2 || p.eq_ignore_ascii_case(&self.p1_uuid)
                })
            })
    }

    fn expect(&self, row: &Row, case: &Case) -> Expect {
        if matches!(row.who, Who::Unauth) {
            return Expect::Status(401);
        }
        let admin = Self::admin(row);
        let scoped = case.project_scoped();
        if scoped && case.need != Need::Admin && !self.sees_p1(row) {
            return Expect::Hidden(404);
        }
        let allow = |ok: bool| {
            if ok {
                Expect::Allowed
            } else {
                Expect::Status(403)
            }
        };
        match case.need {
            Need::CatRead => allow(self.may(row, &["cat-r", "cat-rw"])),
            Need::CatWrite => allow(self.may(row, &["cat-rw"])),
            Need::FleetRead => allow(self.may(row, &["ao-r", "ao-rw"])),
            Need::FleetWrite => allow(self.may(row, &["ao-rw"])),
            Need::See | Need::AnyUser => Expect::Allowed,
            Need::ProjectAudit => allow(self.may(row, &["cat-rw", "ao-rw"])),
            Need::Admin if admin => Expect::Allowed,
            Need::Admin if scoped && !self.sees_p1(row) => Expect::Hidden(403),
            Need::Admin => Expect::Status(403),
            Need::OrgVisible if self.sees_default_org(row) => Expect::Allowed,
            Need::OrgVisible => Expect::Status(404),
            Need::OwnerOrAdmin if admin => Expect::Allowed,
            Need::OwnerOrAdmin => Expect::Status(404),
            // Logout ends sessions only: an API token or an OIDC token is not one.
            Need::Logout => Expect::Status(400),
        }
    }
}

// ------------------------------------------------------------------ HTTP

#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    body: Value,
    text: String,
    www_authenticate: Option<String>,
}

#[derive(Debug, Clone)]
enum Body {
    None,
    Json(Value),
    Multipart(Vec<(String, Vec<u8>)>),
}

async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    auth: Option<&str>,
    body: &Body,
    extra_headers: &[(&str, &str)],
) -> Resp {
    let mut req = http.request(method, url).timeout(Duration::from_secs(20));
    if let Some(a) = auth {
        req = req.header(
            AUTHORIZATION,
            HeaderValue::from_str(a).expect("header value"),
        );
    }
    for (k, v) in extra_headers {
        req = req.header(*k, *v);
    }
    req = match body {
        Body::None => req,
        Body::Json(v) => req.json(v),
        Body::Multipart(files) => {
            let mut form = reqwest::multipart::Form::new();
            for (name, content) in files {
                form = form.part(
                    "files",
                    reqwest::multipart::Part::bytes(content.clone()).file_name(name.clone()),
                );
            }
            req.multipart(form)
        }
    };
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let www_authenticate = resp
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let streaming = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    // An event stream never ends: its status and headers are the answer.
    let text = if streaming {
        String::new()
    } else {
        let bytes = resp.bytes().await.unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Resp {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
        www_authenticate,
    }
}

type Params = BTreeMap<&'static str, String>;

/// Fills `{name}` placeholders of a path or query; unknown ones are an error.
fn fill_path(tpl: &str, params: &Params) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = tpl;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unbalanced {{ in {tpl}"))?
            + start;
        let name = &rest[start + 1..end];
        let value = params.get(name).ok_or_else(|| {
            format!(
                "no fixture value for path parameter {{{name}}} of {tpl}: add one to the params"
            )
        })?;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn fill_body(tpl: Tpl, params: &Params) -> Body {
    match tpl {
        Tpl::None => Body::None,
        Tpl::Multipart => Body::Multipart(vec![(
            "reg.yaml".into(),
            registry_yaml("up-reg").into_bytes(),
        )]),
        Tpl::Json(t) => {
            let mut s = t.to_string();
            for (k, v) in params {
                s = s.replace(&format!("{{{k}}}"), v);
            }
            Body::Json(serde_json::from_str(&s).unwrap_or_else(|e| panic!("body {s}: {e}")))
        }
    }
}

fn url(cp: &TestControlPlane, case: &Case, params: &Params) -> Result<String, String> {
    let path = fill_path(case.path, params)?;
    let query = fill_path(case.query, params)?;
    Ok(if query.is_empty() {
        cp.at(&path)
    } else {
        cp.at(&format!("{path}?{query}"))
    })
}

// ------------------------------------------------------------------ fixture

/// Names of one tenant's catalog objects and its fleet.
struct Tenant {
    name: &'static str,
    registry: &'static str,
    app: &'static str,
    package: &'static str,
    artifact: &'static str,
    enrollment_token_id: String,
    edge_id: String,
    edge_name: String,
    edge_cred: String,
    deployment: String,
    /// The VM app of an edge-demo deployment on the edge: `App.id`, the VM's id, and the
    /// container app's pod (namespace, name).
    vm_app_id: String,
    vm_id: String,
    pod_namespace: String,
    pod_name: String,
}

struct Fixture {
    cp: TestControlPlane,
    issuer: TestIssuer,
    p1_uuid: String,
    p1: Tenant,
    p2: Tenant,
    /// A built-in user's API token id (for `/canopy/v1/tokens/{id}`) and the token.
    victim_token_id: String,
    victim_token: String,
}

async fn ok(_cp: &TestControlPlane, what: &str, r: (StatusCode, Value)) -> Value {
    assert!(r.0.is_success(), "fixture: {what}: {} {}", r.0, r.1);
    r.1
}

async fn tenant(cp: &TestControlPlane, name: &'static str, names: [&'static str; 4]) -> Tenant {
    let [registry, app, package, artifact] = names;
    cp.create_project(name).await;
    let cat = |rest: &str| cp.catalog(name, rest);
    ok(
        cp,
        "upload web-demo",
        cp.upload_dir(name, &example("web-demo")).await,
    )
    .await;
    ok(
        cp,
        "helm registry",
        cp.post(
            &cat("/registries"),
            &json!({"name": "helm", "rootUrl": "oci://registry.example.com/helm", "type": "HELM"}),
        )
        .await,
    )
    .await;
    ok(cp, "registry", cp.post(&cat("/registries"), &json!({"name": registry, "rootUrl": "oci://registry.example.com/x", "type": "HELM", "username": "robot", "authToken": REGISTRY_SECRET})).await).await;
    ok(cp, "application", cp.post(&cat("/applications"), &json!({"name": app, "version": "1.0.0", "chartName": app, "chartVersion": "1.0.0", "helmRegistryName": "helm", "profiles": [{"name": "p", "chartValues": "a: 1\n"}], "defaultProfileName": "p"})).await).await;
    ok(cp, "package", cp.post(&cat("/deployment_packages"), &json!({"name": package, "version": "1.0.0", "applicationReferences": [{"name": app, "version": "1.0.0"}], "profiles": [{"name": "default", "applicationProfiles": {app: "p"}}], "defaultProfileName": "default"})).await).await;
    ok(
        cp,
        "artifact",
        cp.post(
            &cat("/artifacts"),
            &json!({"name": artifact, "mimeType": "image/png", "artifact": b64(PNG)}),
        )
        .await,
    )
    .await;
    let t = ok(
        cp,
        "enrollment token",
        cp.post(
            &cp.at(&format!("/canopy/v1/projects/{name}/enrollment-tokens")),
            &json!({"description": "fixture"}),
        )
        .await,
    )
    .await;
    let secret = t["secret"].as_str().unwrap().to_string();
    let enrollment_token_id = t["token"]["id"].as_str().unwrap().to_string();
    let edge_name = format!("edge-{name}");
    let enrolled = send(
        &cp.anonymous_http(),
        Method::POST,
        &cp.at("/canopy/v1/agent/enroll"),
        None,
        &Body::Json(json!({"protocolVersion": 1, "token": secret, "name": edge_name, "labels": {"site": name}})),
        &[(PROTOCOL_HEADER, "1")],
    )
    .await;
    assert_eq!(enrolled.status, 201, "fixture: enroll: {}", enrolled.text);
    let d = ok(
        cp,
        "deployment",
        cp.post(
            &cp.at(&format!("/v1/projects/{name}/appdeployment/deployments")),
            &json!({"appName": "web-demo", "appVersion": "1.0.0", "displayName": "fixture",
                    "allAppTargetClusters": {"labels": {"site": name}}}),
        )
        .await,
    )
    .await;
    // A container and a VM (edge-demo) for the resource manager's paths.
    ok(
        cp,
        "upload edge-demo",
        cp.upload_dir(name, &example("edge-demo")).await,
    )
    .await;
    let sha = "0".repeat(64);
    let demo = ok(
        cp,
        "edge-demo deployment",
        cp.post(
            &cp.at(&format!("/v1/projects/{name}/appdeployment/deployments")),
            &json!({"appName": "edge-demo", "appVersion": "1.0.0", "displayName": "fixture-vm",
                    "allAppTargetClusters": {"labels": {"site": name}},
                    "overrideValues": [{"appName": "vm", "values": {
                        "kernelUrl": "https://images.example.com/k", "kernelSha256": sha,
                        "initrdUrl": "https://images.example.com/i", "initrdSha256": sha}}]}),
        )
        .await,
    )
    .await;
    let demo_id = demo["deploymentId"].as_str().unwrap();
    let clusters = ok(
        cp,
        "edge-demo clusters",
        cp.get(&cp.at(&format!(
            "/v1/projects/{name}/appdeployment/deployments/{demo_id}/clusters"
        )))
        .await,
    )
    .await;
    let app_id = |app: &str| -> String {
        clusters["clusters"][0]["apps"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == app))
            .and_then(|a| a["id"].as_str())
            .unwrap_or_else(|| panic!("fixture: app {app} in {clusters}"))
            .to_string()
    };
    let (vm_app_id, web_app_id) = (app_id("vm"), app_id("edge-web"));
    let edge_id = enrolled.body["edgeId"].as_str().unwrap().to_string();
    let workload = |app: &str| {
        cp.at(&format!(
            "/v1/projects/{name}/resource/workloads/applications/{app}/clusters/{edge_id}"
        ))
    };
    let vm = ok(cp, "vm workloads", cp.get(&workload(&vm_app_id)).await).await;
    let pod = ok(cp, "pod workloads", cp.get(&workload(&web_app_id)).await).await;
    let field = |v: &Value, f: &str| v["appWorkloads"][0][f].as_str().unwrap().to_string();
    Tenant {
        vm_id: field(&vm, "id"),
        pod_namespace: field(&pod, "namespace"),
        pod_name: field(&pod, "name"),
        vm_app_id,
        name,
        registry,
        app,
        package,
        artifact,
        enrollment_token_id,
        edge_id,
        edge_name,
        edge_cred: enrolled.body["credential"].as_str().unwrap().to_string(),
        deployment: d["deploymentId"].as_str().unwrap().to_string(),
    }
}

async fn fixture() -> Fixture {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier();
    let cp = TestControlPlane::start_configured(move |c| {
        c.auth.oidc = Some(verifier);
        c.tenancy.delete_grace = Some(Duration::from_secs(1));
    })
    .await;
    // No agent runs in the fixture: tunnels fail fast instead of after 15 s.
    cp.app()
        .tunnels()
        .set_limits(canopy_server::tunnels::TunnelLimits {
            claim_timeout: Duration::from_millis(200),
            ..Default::default()
        });
    let p1 = tenant(&cp, P1, ["spare-reg", "helm-app", "pkg", "icon"]).await;
    let p2 = tenant(
        &cp,
        P2,
        ["reg-only-b", "app-only-b", "pkg-only-b", "icon-only-b"],
    )
    .await;
    let project = ok(
        &cp,
        "p1",
        cp.get(&cp.at(&format!("/v1/projects/{P1}"))).await,
    )
    .await;
    let p1_uuid = project["status"]["projectStatus"]["uID"]
        .as_str()
        .expect("project uID")
        .to_string();
    let _ = cp.user_token("victim", &["p2_cat-r"]).await;
    let t = ok(
        &cp,
        "victim token",
        cp.post(
            &cp.at("/canopy/v1/tokens"),
            &json!({"name": "victims", "user": "victim"}),
        )
        .await,
    )
    .await;
    Fixture {
        victim_token_id: t["id"].as_str().unwrap().to_string(),
        victim_token: t["token"].as_str().unwrap().to_string(),
        cp,
        issuer,
        p1_uuid,
        p1,
        p2,
    }
}

impl Fixture {
    /// Path parameters naming P1's own resources.
    fn params(&self) -> Params {
        let t = &self.p1;
        let mut p = Params::new();
        p.insert("projectName", t.name.to_string());
        p.insert("registryName", t.registry.to_string());
        p.insert("applicationName", t.app.to_string());
        p.insert("deploymentPackageName", t.package.to_string());
        p.insert("artifactName", t.artifact.to_string());
        p.insert("version", "1.0.0".to_string());
        p.insert("deplId", t.deployment.clone());
        p.insert("clusterId", t.edge_id.clone());
        p.insert("appId", t.vm_app_id.clone());
        p.insert("virtualMachineId", t.vm_id.clone());
        p.insert("vmId", t.vm_id.clone());
        p.insert("containerName", "httpd".to_string());
        p.insert("namespace", t.pod_namespace.clone());
        p.insert("podName", t.pod_name.clone());
        p.insert("appName", "web".to_string());
        p.insert("edge", t.edge_id.clone());
        p.insert("tokenId", t.enrollment_token_id.clone());
        p.insert("org", "default".to_string());
        p.insert("user", "victim".to_string());
        p.insert("id", self.victim_token_id.clone());
        p.insert("png", b64(PNG));
        p.insert("registryYaml", b64(registry_yaml("up-reg-2").as_bytes()));
        p
    }

    fn oidc(&self, sub: &str, roles: &[&str]) -> String {
        format!("Bearer {}", self.issuer.token(sub, roles))
    }

    /// An API token for a new built-in user.
    async fn builtin(&self, user: &str, roles: &[&str]) -> String {
        format!("Bearer {}", self.cp.user_token(user, roles).await)
    }
}

// ------------------------------------------------------------------ checks

/// Everything wrong with one answer (empty: as expected).
/// `read`: the status a permitted read must answer (200 unless its entry says otherwise).
fn check(
    row: &Row,
    expect: Expect,
    r: &Resp,
    twin: Option<&Resp>,
    read: Option<u16>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if r.status >= 400 && r.body["message"].as_str().is_none_or(str::is_empty) {
        problems.push(format!(
            "error {} without a JSON message: {:.200}",
            r.status, r.text
        ));
    }
    if r.status >= 500 && read != Some(r.status) {
        problems.push(format!("server error {}: {:.300}", r.status, r.text));
    }
    match expect {
        Expect::Status(s) => {
            if r.status != s {
                problems.push(format!("got {} expected {s}: {:.300}", r.status, r.text));
            }
            // A refusal names the role to grant with the project's own name (`p1_ao-rw`),
            // never a placeholder.
            if s == 403 && r.text.contains("<project>") {
                problems.push(format!("403 names a placeholder role: {:.300}", r.text));
            }
            if s == 401 {
                if r.body["code"] != 16 {
                    problems.push(format!("401 body code is not 16: {:.200}", r.text));
                }
                if r.www_authenticate.is_none() {
                    problems.push("401 without WWW-Authenticate".into());
                }
                if let Some(secret) = row.secret() {
                    let echoed = std::iter::once(secret)
                        .chain(secret.split('.'))
                        .filter(|part| part.len() >= 8)
                        .any(|part| r.text.contains(part));
                    if echoed {
                        problems.push(format!("401 body echoes the credential: {:.300}", r.text));
                    }
                }
            }
        }
        Expect::Allowed => {
            let project_missing = r.status == 404
                && r.body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("project "));
            if r.status == 401 || r.status == 403 || project_missing {
                problems.push(format!("refused ({}): {:.300}", r.status, r.text));
            } else if let Some(want) = read
                && r.status != want
            {
                problems.push(format!(
                    "read answered {} not {want}: {:.300}",
                    r.status, r.text
                ));
            }
        }
        Expect::Hidden(s) => {
            if r.status != s {
                problems.push(format!("got {} expected {s}: {:.300}", r.status, r.text));
            }
            let twin = twin.expect("hidden cells have a twin");
            let mut normalized = twin.body.clone();
            if let Some(m) = normalized["message"].as_str() {
                normalized["message"] = Value::String(m.replace(MISSING, P1));
            }
            if twin.status != r.status || normalized != r.body {
                problems.push(format!(
                    "differs from a missing project: {} {:.200} vs {} {:.200}",
                    r.status, r.text, twin.status, twin.text
                ));
            }
        }
    }
    problems
}

struct Cell {
    case: usize,
    row: usize,
    got: u16,
    expect: Expect,
    problems: Vec<String>,
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let cut: String = s.chars().take(n - 1).collect();
        format!("{cut}…")
    }
}

/// The matrix as text: one line per endpoint, one column per credential; a cell is the status
/// got, or `got≠expected` (marked `!`) where it is wrong.
fn render(cases: &[Case], rows: &[Row], cells: &[Cell]) -> String {
    let mut out = String::new();
    let w = 66;
    let _ = write!(out, "{:w$}", "endpoint ({p} = projectName) \\ credential");
    for r in rows {
        let _ = write!(out, " {:>9}", short(r.name, 9));
    }
    out.push('\n');
    for (ci, c) in cases.iter().enumerate() {
        let label = c.label().replace("{projectName}", "{p}");
        let _ = write!(out, "{:w$}", short(&label, w));
        for ri in 0..rows.len() {
            let cell = cells.iter().find(|x| x.case == ci && x.row == ri);
            let text = match cell {
                None => "-".to_string(),
                Some(x) if x.problems.is_empty() => x.got.to_string(),
                Some(x) => format!("!{}≠{}", x.got, x.expect),
            };
            let _ = write!(out, " {:>9}", short(&text, 9));
        }
        out.push('\n');
    }
    out
}

// ------------------------------------------------------------------ the matrix

struct Matrix<'a> {
    f: &'a Fixture,
    http: reqwest::Client,
    model: Model,
    cases: Vec<Case>,
    rows: Vec<Row>,
    params: Params,
    missing_params: Params,
    cells: Vec<Cell>,
}

impl Matrix<'_> {
    async fn run(&mut self, ci: usize, ri: usize, read: bool) -> Cell {
        let case = self.cases[ci].clone();
        let row = self.rows[ri].clone();
        let expect = self.model.expect(&row, &case);
        let target = url(&self.f.cp, &case, &self.params).expect("url");
        let body = fill_body(case.body, &self.params);
        // Should logout end the credential anyway (it must not), only a throwaway one of the
        // same user is lost.
        let auth = match (&row.who, case.need) {
            (Who::BuiltIn { user, .. }, Need::Logout) => Some(format!(
                "Bearer {}",
                ok(
                    &self.f.cp,
                    "throwaway token",
                    self.f
                        .cp
                        .post(
                            &self.f.cp.at("/canopy/v1/tokens"),
                            &json!({"name": "throwaway", "user": user}),
                        )
                        .await,
                )
                .await["token"]
                    .as_str()
                    .unwrap()
            )),
            _ => row.auth.clone(),
        };
        let r = send(
            &self.http,
            case.method.clone(),
            &target,
            auth.as_deref(),
            &body,
            &[],
        )
        .await;
        let twin = match expect {
            Expect::Hidden(_) => {
                let target = url(&self.f.cp, &case, &self.missing_params).expect("url");
                let body = fill_body(case.body, &self.missing_params);
                Some(
                    send(
                        &self.http,
                        case.method.clone(),
                        &target,
                        auth.as_deref(),
                        &body,
                        &[],
                    )
                    .await,
                )
            }
            _ => None,
        };
        let mut problems = check(
            &row,
            expect,
            &r,
            twin.as_ref(),
            read.then(|| case.ok.unwrap_or(200)),
        );
        // No answer shows a registry's secret, except sensitive reads by catalog writers.
        if r.text.contains(REGISTRY_SECRET) && !case.query.contains("showSensitiveInfo=true") {
            problems.push("the answer shows a registry's authToken".into());
        }
        // Lists of projects and organizations are filtered by role.
        let names: Vec<&str> = r
            .body
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        let listed = |name: &str| names.contains(&name);
        if r.status == 200 && case.method == Method::GET && case.query.is_empty() {
            if case.path == "/v1/projects" && listed(P1) != self.model.sees_p1(&row) {
                problems.push(format!("project list wrong for this caller: {}", r.text));
            }
            if case.path == "/v1/orgs" && listed("default") != self.model.sees_default_org(&row) {
                problems.push(format!(
                    "organization list wrong for this caller: {}",
                    r.text
                ));
            }
        }
        Cell {
            case: ci,
            row: ri,
            got: r.status,
            expect,
            problems,
        }
    }
}

/// The callers of the matrix, from the invalid to the administrator.
async fn rows(f: &Fixture, expired_api: String) -> Vec<Row> {
    let bearer = |t: String| Some(format!("Bearer {t}"));
    let unauth = |name, auth| Row {
        name,
        auth,
        who: Who::Unauth,
    };
    let oidc = |name, sub: &str, roles: &[&str]| Row {
        name,
        auth: bearer(f.issuer.token(sub, roles)),
        who: Who::Oidc(roles.iter().map(|s| s.to_string()).collect()),
    };
    let builtin = |name, user: &str, roles: &[&str], token: String| Row {
        name,
        auth: Some(token),
        who: Who::BuiltIn {
            user: user.to_string(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
        },
    };
    let by_uuid = [
        format!("{}_cat-rw", f.p1_uuid),
        format!("{}_ao-rw", f.p1_uuid),
    ];
    let by_uuid: Vec<&str> = by_uuid.iter().map(String::as_str).collect();
    let ro = ["p1_cat-r", "p1_ao-r"];
    vec![
        unauth("none", None),
        unauth("exp-oidc", bearer(f.issuer.expired_token("late-oidc"))),
        unauth("exp-api", Some(expired_api)),
        unauth("bad-sig", bearer(f.issuer.tampered_token("mallory"))),
        unauth("alg-none", bearer(f.issuer.alg_none_token("mallory"))),
        unauth("agent", bearer(f.p1.edge_cred.clone())),
        oidc("no-role", "nobody", &[]),
        oidc("other-prj", "tenant-b", &["p2_cat-rw", "p2_ao-rw"]),
        oidc("read-only", "reader-oidc", &ro),
        builtin("ro-api", "reader", &ro, f.builtin("reader", &ro).await),
        oidc("cat-rw", "cataloguer", &["p1_cat-rw"]),
        oidc("ao-rw", "operator", &["p1_ao-rw"]),
        oidc("write", "writer", &["p1_cat-rw", "p1_ao-rw"]),
        oidc("rw-uuid", "writer-uuid", &by_uuid),
        oidc("m2m", "robot", &["ao-m2m-rw"]),
        builtin(
            "admin",
            "root",
            &["canopy-admin"],
            f.builtin("root", &["canopy-admin"]).await,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_against_every_credential() {
    let started = Instant::now();
    let f = fixture().await;
    let cp = &f.cp;

    // Credentials.
    let expired_api = {
        let _ = cp.user_token("late", &["p1_cat-rw", "p1_ao-rw"]).await;
        let t = ok(
            cp,
            "short-lived token",
            cp.post(
                &cp.at("/canopy/v1/tokens"),
                &json!({"name": "short", "user": "late", "expiresInSeconds": 1}),
            )
            .await,
        )
        .await;
        let token = format!("Bearer {}", t["token"].as_str().unwrap());
        // It works while valid (and is cached then): expiry must still win.
        let r = send(
            &cp.anonymous_http(),
            Method::GET,
            &cp.at("/canopy/v1/whoami"),
            Some(&token),
            &Body::None,
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "a fresh short-lived token works: {}", r.text);
        token
    };
    let expired_at = Instant::now() + Duration::from_millis(1500);
    let rows = rows(&f, expired_api).await;

    // Endpoints, from the document the server serves.
    let (s, doc) = cp.get(&cp.at("/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    let (cases, mut problems) = cases(&doc);
    let params = f.params();
    for c in &cases {
        if let Err(e) = url(cp, c, &params) {
            problems.push(e);
        }
    }
    assert!(
        problems.is_empty(),
        "the matrix does not cover the API:\n{}",
        problems.join("\n")
    );
    let mut missing_params = params.clone();
    missing_params.insert("projectName", MISSING.to_string());

    // Public endpoints answer without a token.
    let anon = cp.anonymous_http();
    for path in ["/healthz", "/openapi.json"] {
        let r = send(&anon, Method::GET, &cp.at(path), None, &Body::None, &[]).await;
        assert_eq!(r.status, 200, "{path} is public: {}", r.text);
    }

    tokio::time::sleep_until(expired_at.into()).await;
    let mut m = Matrix {
        f: &f,
        http: anon.clone(),
        model: Model {
            p1_uuid: f.p1_uuid.clone(),
        },
        cases,
        rows,
        params,
        missing_params,
        cells: Vec::new(),
    };
    let n_rows = m.rows.len();
    let mut order: Vec<usize> = (0..m.cases.len()).collect();
    order.sort_by_key(|&i| (m.cases[i].rank(), m.cases[i].method != Method::GET));
    let reads: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| m.cases[i].method == Method::GET)
        .collect();
    let writes: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| m.cases[i].method != Method::GET)
        .collect();

    // 1. Every read, every caller (nothing changes yet, so permitted reads are 200).
    for &ci in &reads {
        for ri in 0..n_rows {
            let cell = m.run(ci, ri, true).await;
            m.cells.push(cell);
        }
    }

    // 2. The agent protocol (the edge and its deployment exist).
    let mut other = agent_checks(&f, &m.rows).await;

    // 3. Every change by every caller refused it (nothing changes), then 4. by the permitted
    //    callers, deletes last in dependency order (the project itself at the very end).
    for &ci in &writes {
        for ri in 0..n_rows {
            if m.model.expect(&m.rows[ri], &m.cases[ci]) != Expect::Allowed {
                let cell = m.run(ci, ri, false).await;
                m.cells.push(cell);
            }
        }
    }
    for &ci in &writes {
        let mut first = true;
        for ri in 0..n_rows {
            if m.model.expect(&m.rows[ri], &m.cases[ci]) != Expect::Allowed {
                continue;
            }
            let mut cell = m.run(ci, ri, false).await;
            // The first permitted caller succeeds: the body is valid, so a refusal elsewhere in
            // this line is authorization's doing, not validation's.
            if first {
                let want_ok = match m.cases[ci].ok {
                    Some(s) => cell.got == s,
                    None => (200..300).contains(&cell.got),
                };
                if !want_ok {
                    cell.problems.push(format!(
                        "the first permitted caller should succeed (got {}{})",
                        cell.got,
                        m.cases[ci]
                            .ok
                            .map(|s| format!(", expected {s}"))
                            .unwrap_or_default()
                    ));
                }
                first = false;
            }
            m.cells.push(cell);
        }
    }

    // 5. The project is gone: its writers get the missing-project answer, its edge is gone.
    let write = m.rows.iter().find(|r| r.name == "write").unwrap();
    let r = send(
        &anon,
        Method::GET,
        &cp.catalog(P1, "/registries"),
        write.auth.as_deref(),
        &Body::None,
        &[],
    )
    .await;
    if r.status != 404 {
        other.push(format!(
            "after deleting {P1}, its registries answer {}: {}",
            r.status, r.text
        ));
    }

    let failed: Vec<&Cell> = m.cells.iter().filter(|c| !c.problems.is_empty()).collect();
    let summary = format!(
        "authorization matrix: {} endpoint variants × {} credentials = {} cells in {:.1?}",
        m.cases.len(),
        n_rows,
        m.cells.len(),
        started.elapsed()
    );
    println!("{summary}");
    if !failed.is_empty() || !other.is_empty() {
        let mut report = render(&m.cases, &m.rows, &m.cells);
        report.push_str("\nfailures:\n");
        for c in &failed {
            let _ = writeln!(
                report,
                "  {} as {}: {}",
                m.cases[c.case].label(),
                m.rows[c.row].name,
                c.problems.join("; ")
            );
        }
        for o in &other {
            let _ = writeln!(report, "  {o}");
        }
        panic!(
            "{summary}\n{report}\n{} failing cells, {} other problems",
            failed.len(),
            other.len()
        );
    }
}

/// The agent endpoints: only an edge credential works there, and only for its own edge.
async fn agent_checks(f: &Fixture, rows: &[Row]) -> Vec<String> {
    let cp = &f.cp;
    let http = cp.anonymous_http();
    let mut problems = Vec::new();
    let proto = [(PROTOCOL_HEADER, "1")];
    let report = |seq: u64, generation: u64, deployment: &str| {
        Body::Json(
            serde_json::to_value(StatusReport {
                protocol_version: 1,
                seq,
                generation: Generation(generation),
                apps: vec![AppStatus {
                    deployment_id: deployment.to_string(),
                    app: "web".into(),
                    state: AppState::Running,
                    message: String::new(),
                    deployment_generation: 1,
                    workloads: vec![],
                }],
                agent: None,
            })
            .unwrap(),
        )
    };
    let desired = cp.at("/canopy/v1/agent/desired-state?after=0&waitSeconds=0");
    let status = cp.at("/canopy/v1/agent/status");

    // User, administrator and OIDC tokens do not work on the agent endpoints.
    let mut not_agents: Vec<(String, String)> = rows
        .iter()
        .filter(|r| !matches!(r.who, Who::Unauth) || r.name == "none")
        .map(|r| (r.name.to_string(), r.auth.clone().unwrap_or_default()))
        .collect();
    not_agents.push((
        "bootstrap admin".into(),
        format!("Bearer {}", cp.admin_token()),
    ));
    not_agents.push(("an enrollment token".into(), "Bearer cnt_nope".into()));
    for (name, auth) in &not_agents {
        let auth = (!auth.is_empty()).then_some(auth.as_str());
        for (method, target, body) in [
            (Method::GET, &desired, Body::None),
            (Method::POST, &status, report(1, 0, &f.p1.deployment)),
        ] {
            let r = send(&http, method.clone(), target, auth, &body, &proto).await;
            let row = Row {
                name: "x",
                auth: auth.map(str::to_string),
                who: Who::Unauth,
            };
            for p in check(&row, Expect::Status(401), &r, None, None) {
                problems.push(format!("{method} {target} as {name}: {p}"));
            }
        }
    }
    // Nor as an enrollment token.
    for (name, token) in [
        ("p1's edge credential", f.p1.edge_cred.clone()),
        ("the administrator's token", cp.admin_token().to_string()),
        ("an OIDC token", f.issuer.token("writer", &["canopy-admin"])),
    ] {
        let r = send(
            &http,
            Method::POST,
            &cp.at("/canopy/v1/agent/enroll"),
            None,
            &Body::Json(json!({"protocolVersion": 1, "token": token, "name": "sneaky"})),
            &proto,
        )
        .await;
        if r.status != 401 || r.text.contains(&token) {
            problems.push(format!(
                "enroll with {name} as the token: {} {}",
                r.status, r.text
            ));
        }
    }

    // P1's edge credential works for P1's edge: it sees P1's deployment and nothing of P2.
    let cred = format!("Bearer {}", f.p1.edge_cred);
    let r = send(
        &http,
        Method::GET,
        &desired,
        Some(&cred),
        &Body::None,
        &proto,
    )
    .await;
    let generation = if r.status == 200 {
        let d: DesiredState = serde_json::from_value(r.body.clone()).expect("desired state");
        let ids: Vec<&str> = d
            .deployments
            .iter()
            .map(|d| d.deployment_id.as_str())
            .collect();
        if !ids.contains(&f.p1.deployment.as_str()) || r.text.contains(&f.p2.deployment) {
            problems.push(format!("p1's edge is given {ids:?}"));
        }
        if d.deployments.iter().any(|d| d.project != P1) {
            problems.push(format!(
                "p1's edge is given another project's deployment: {}",
                r.text
            ));
        }
        d.generation.0
    } else {
        problems.push(format!(
            "p1's edge credential on desired-state: {} {}",
            r.status, r.text
        ));
        0
    };
    // ...and cannot report status for P2's deployment (refused, nothing applied).
    let r = send(
        &http,
        Method::POST,
        &status,
        Some(&cred),
        &report(1, generation, &f.p2.deployment),
        &proto,
    )
    .await;
    if r.status != 422 {
        problems.push(format!(
            "p1's edge reporting p2's deployment: {} {}",
            r.status, r.text
        ));
    }
    let (_, clusters) = cp
        .get(&cp.at(&format!(
            "/v1/projects/{P2}/appdeployment/deployments/{}/clusters",
            f.p2.deployment
        )))
        .await;
    if clusters.to_string().contains(&f.p1.edge_id) {
        problems.push(format!("p1's edge shows up in p2's deployment: {clusters}"));
    }
    // Its own deployment it may report.
    let r = send(
        &http,
        Method::POST,
        &status,
        Some(&cred),
        &report(2, generation, &f.p1.deployment),
        &proto,
    )
    .await;
    if r.status != 200 {
        problems.push(format!(
            "p1's edge reporting its own deployment: {} {}",
            r.status, r.text
        ));
    }
    problems
}

// ------------------------------------------------------------------ cross-project resources

/// Another project's resources, named under a project the caller may use, answer exactly like
/// resources that do not exist — for reads and for changes — and are left untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_projects_resources_answer_like_missing_ones() {
    let f = fixture().await;
    let cp = &f.cp;
    let (_, doc) = cp.get(&cp.at("/openapi.json")).await;
    let (cases, problems) = cases(&doc);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // P2's resources under P1's paths, and resources that exist nowhere.
    let mut foreign = f.params();
    let t = &f.p2;
    foreign.insert("registryName", t.registry.to_string());
    foreign.insert("applicationName", t.app.to_string());
    foreign.insert("deploymentPackageName", t.package.to_string());
    foreign.insert("artifactName", t.artifact.to_string());
    foreign.insert("deplId", t.deployment.clone());
    foreign.insert("clusterId", t.edge_id.clone());
    foreign.insert("edge", t.edge_id.clone());
    foreign.insert("tokenId", t.enrollment_token_id.clone());
    let mut missing = f.params();
    let ghost = "00000000-0000-4000-8000-00000000dead".to_string();
    missing.insert("registryName", "no-such-registry".into());
    missing.insert("applicationName", "no-such-app".into());
    missing.insert("deploymentPackageName", "no-such-package".into());
    missing.insert("artifactName", "no-such-artifact".into());
    missing.insert("deplId", ghost.clone());
    missing.insert("clusterId", ghost.clone());
    missing.insert("edge", ghost.clone());
    missing.insert("tokenId", ghost.clone());
    let resource_params = [
        "registryName",
        "applicationName",
        "deploymentPackageName",
        "artifactName",
        "deplId",
        "clusterId",
        "edge",
        "tokenId",
    ];
    // Edge names too: P2's edge name under P1.
    let mut by_name = foreign.clone();
    by_name.insert("edge", t.edge_name.clone());
    by_name.insert("clusterId", t.edge_name.clone());

    let http = cp.anonymous_http();
    let callers = [
        ("write", f.oidc("writer", &["p1_cat-rw", "p1_ao-rw"])),
        ("admin", f.builtin("root", &["canopy-admin"]).await),
    ];
    let secrets = [
        t.deployment.as_str(),
        t.edge_id.as_str(),
        t.edge_name.as_str(),
        t.enrollment_token_id.as_str(),
    ];
    let mut problems = Vec::new();
    let mut checked = 0;
    for case in cases
        .iter()
        .filter(|c| c.path.starts_with("/v") || c.path.starts_with("/canopy/v1/projects/"))
    {
        let names_resource = resource_params
            .iter()
            .any(|p| case.path.contains(&format!("{{{p}}}")));
        if !case.project_scoped() || !names_resource {
            continue;
        }
        let body_tpl = match case.body {
            Tpl::Json(t) => t,
            _ => "",
        };
        let used: Vec<&str> = resource_params
            .iter()
            .copied()
            .filter(|p| {
                let p = format!("{{{p}}}");
                case.path.contains(&p) || case.query.contains(&p) || body_tpl.contains(&p)
            })
            .collect();
        for (who, auth) in &callers {
            for foreign in [&foreign, &by_name] {
                let a = send(
                    &http,
                    case.method.clone(),
                    &url(cp, case, foreign).unwrap(),
                    Some(auth),
                    &fill_body(case.body, foreign),
                    &[],
                )
                .await;
                let b = send(
                    &http,
                    case.method.clone(),
                    &url(cp, case, &missing).unwrap(),
                    Some(auth),
                    &fill_body(case.body, &missing),
                    &[],
                )
                .await;
                checked += 1;
                let mut normalized = b.body.clone();
                if let Some(msg) = normalized["message"].as_str() {
                    let mut msg = msg.to_string();
                    for p in &used {
                        msg = msg.replace(&missing[p], &foreign[p]);
                    }
                    normalized["message"] = Value::String(msg);
                }
                let leaks =
                    (200..300).contains(&a.status) && secrets.iter().any(|s| a.text.contains(s));
                if a.status != b.status || normalized != a.body || leaks || a.status >= 500 {
                    problems.push(format!(
                        "{} as {who}: p2's resource {} {:.200} / missing one {} {:.200}",
                        case.label(),
                        a.status,
                        a.text,
                        b.status,
                        b.text
                    ));
                }
            }
        }
    }

    // Identity: another user's API token is not found, exactly like a missing one, and keeps
    // working.
    let alice = f.builtin("alice", &["p1_cat-rw"]).await;
    let a = send(
        &http,
        Method::DELETE,
        &cp.at(&format!("/canopy/v1/tokens/{}", f.victim_token_id)),
        Some(&alice),
        &Body::None,
        &[],
    )
    .await;
    let b = send(
        &http,
        Method::DELETE,
        &cp.at(&format!("/canopy/v1/tokens/{ghost}")),
        Some(&alice),
        &Body::None,
        &[],
    )
    .await;
    if a.status != 404 || b.status != 404 || a.text.replace(&f.victim_token_id, &ghost) != b.text {
        problems.push(format!(
            "revoking another user's token: {} {} / missing: {} {}",
            a.status, a.text, b.status, b.text
        ));
    }
    let r = send(
        &http,
        Method::GET,
        &cp.at("/canopy/v1/whoami"),
        Some(&format!("Bearer {}", f.victim_token)),
        &Body::None,
        &[],
    )
    .await;
    if r.status != 200 {
        problems.push(format!(
            "victim's token stopped working: {} {}",
            r.status, r.text
        ));
    }

    // P2 is untouched.
    let cat = |rest: &str| cp.catalog(P2, rest);
    for (what, target) in [
        ("registry", cat(&format!("/registries/{}", t.registry))),
        (
            "application",
            cat(&format!("/applications/{}/versions/1.0.0", t.app)),
        ),
        (
            "package",
            cat(&format!(
                "/deployment_packages/{}/versions/1.0.0",
                t.package
            )),
        ),
        ("artifact", cat(&format!("/artifacts/{}", t.artifact))),
        (
            "deployment",
            cp.at(&format!(
                "/v1/projects/{P2}/appdeployment/deployments/{}",
                t.deployment
            )),
        ),
        (
            "edge",
            cp.at(&format!("/canopy/v1/projects/{P2}/edges/{}", t.edge_id)),
        ),
    ] {
        let (s, b) = cp.get(&target).await;
        let text = b.to_string();
        if s != StatusCode::OK || text.contains("changed") || text.contains("gold") {
            problems.push(format!("p2's {what} was changed or removed: {s} {b}"));
        }
    }
    let (_, tokens) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P2}/enrollment-tokens")))
        .await;
    let token = tokens["enrollmentTokens"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == t.enrollment_token_id.as_str()))
        .cloned()
        .unwrap_or(Value::Null);
    if token["state"] != "ACTIVE" {
        problems.push(format!(
            "p2's enrollment token was revoked or removed: {token}"
        ));
    }
    let (_, d) = cp
        .get(&cp.at(&format!(
            "/v1/projects/{P2}/appdeployment/deployments/{}",
            t.deployment
        )))
        .await;
    if d["deployment"]["displayName"] != "fixture" {
        problems.push(format!("p2's deployment changed: {d}"));
    }
    println!("cross-project: {checked} requests compared");
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The guard itself: an endpoint the matrix does not know fails it, and so does an entry for
/// an endpoint that is gone.
#[test]
fn an_endpoint_without_an_entry_fails_the_matrix() {
    let mut paths = serde_json::Map::new();
    for e in entries() {
        let item = paths.entry(e.path.to_string()).or_insert_with(|| json!({}));
        item[e.method] = json!({});
    }
    for (m, p, _) in SKIP {
        let item = paths.entry(p.to_string()).or_insert_with(|| json!({}));
        item[*m] = json!({});
    }
    let complete = json!({ "paths": paths.clone() });
    assert_eq!(cases(&complete).1, Vec::<String>::new());

    // A new mutating endpoint, a new endpoint outside any project: refused until classified.
    // A new project-scoped read is derived (catalog or fleet read access).
    let mut grown = paths.clone();
    grown.insert(
        "/canopy/v1/projects/{projectName}/widgets".into(),
        json!({"get": {}, "post": {}}),
    );
    grown.insert("/canopy/v1/gadgets".into(), json!({"get": {}}));
    let problems = cases(&json!({ "paths": grown })).1;
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("POST /canopy/v1/projects/{projectName}/widgets")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("GET /canopy/v1/gadgets")),
        "{problems:#?}"
    );

    let mut shrunk = paths;
    shrunk.remove("/canopy/v1/whoami");
    let problems = cases(&json!({ "paths": shrunk })).1;
    assert!(
        problems.len() == 1 && problems[0].contains("/canopy/v1/whoami"),
        "{problems:#?}"
    );
}
