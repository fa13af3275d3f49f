//! Bad input and attacks, each refused clearly with nothing leaked: forged, expired and
//! unsigned tokens; garbage `Authorization` headers; path traversal, control characters and
//! lookalike characters in names; injection-shaped list filters; oversized bodies; reuse of a
//! revoked enrollment token; revoked API tokens and deleted users; login probing.

use std::time::Duration;

use canopy_auth::testing::{Algorithm, Kid, TestIssuer, TokenSpec, now};
use canopy_proto::PROTOCOL_HEADER;
use canopy_testkit::{TestControlPlane, example};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const P: &str = "default";

/// An answer: status, JSON body (`Null` when not JSON), raw text, `WWW-Authenticate`.
struct Answer {
    status: u16,
    body: Value,
    text: String,
    www_authenticate: Option<String>,
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let www_authenticate = resp
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
        www_authenticate,
    }
}

/// GET `path` with exactly this `Authorization` header value (raw bytes).
async fn get_with(cp: &TestControlPlane, path: &str, auth: &[u8]) -> Answer {
    let value = HeaderValue::from_bytes(auth).expect("a header value reqwest can send");
    answer(
        cp.anonymous_http()
            .get(cp.at(path))
            .header(AUTHORIZATION, value)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn message(a: &Answer) -> &str {
    a.body["message"].as_str().unwrap_or_default()
}

/// A 401 in the API's error shape, with a message, that does not repeat the credential.
fn assert_refused(what: &str, a: &Answer, secret: &str) {
    assert_eq!(a.status, 401, "{what}: {}", a.text);
    assert_eq!(a.body["code"], 16, "{what}: {}", a.text);
    assert!(!message(a).is_empty(), "{what}: no message: {}", a.text);
    assert!(a.www_authenticate.is_some(), "{what}: no WWW-Authenticate");
    let echoed = std::iter::once(secret)
        .chain(secret.split(['.', ' ']))
        .filter(|part| part.len() >= 8)
        .any(|part| a.text.contains(part));
    assert!(
        !echoed,
        "{what}: the answer echoes the credential: {}",
        a.text
    );
}

/// A refusal of bad input: 400 or 404 with a message, never a server error. (Messages repeat
/// the name as given; the JSON encoding escapes any control character in it.)
fn assert_rejected(what: &str, a: &Answer) {
    assert!(
        a.status == 400 || a.status == 404,
        "{what}: expected 400 or 404, got {}: {}",
        a.status,
        a.text
    );
    let m = message(a);
    assert!(!m.is_empty(), "{what}: no message: {}", a.text);
}

async fn start_with_oidc() -> (TestControlPlane, TestIssuer) {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier();
    let cp = TestControlPlane::start_configured(move |c| c.auth.oidc = Some(verifier)).await;
    (cp, issuer)
}

// ------------------------------------------------------------------ tokens and headers

#[tokio::test]
async fn forged_expired_and_unsigned_tokens_are_refused_without_echo() {
    let (cp, issuer) = start_with_oidc().await;
    let admin = ["canopy-admin"];
    // Sanity: a good token of the same issuer works.
    let good = issuer.token("alice", &admin);
    let a = get_with(
        &cp,
        "/canopy/v1/whoami",
        format!("Bearer {good}").as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);

    let spec = || TokenSpec {
        roles: Some(admin.iter().map(|r| r.to_string()).collect()),
        ..issuer.spec("mallory")
    };
    let cases = [
        ("expired", issuer.expired_token("mallory")),
        ("tampered payload", issuer.tampered_token("mallory")),
        ("alg none", issuer.alg_none_token("mallory")),
        (
            "HS256 signed with the public key",
            issuer.token_with(TokenSpec {
                alg: Algorithm::HS256,
                ..spec()
            }),
        ),
        (
            "wrong audience",
            issuer.token_with(TokenSpec {
                aud: Some(json!("someone-else")),
                ..spec()
            }),
        ),
        (
            "wrong issuer",
            issuer.token_with(TokenSpec {
                iss: Some("https://evil.example.com/realms/canopy".into()),
                ..spec()
            }),
        ),
        (
            "unknown kid",
            issuer.token_with(TokenSpec {
                kid: Kid::Named("no-such-key".into()),
                ..spec()
            }),
        ),
        (
            "not yet valid",
            issuer.token_with(TokenSpec {
                nbf: Some(now() + 3600),
                ..spec()
            }),
        ),
        (
            "no expiry",
            issuer.token_with(TokenSpec {
                exp: None,
                ..spec()
            }),
        ),
        ("signature of another token", {
            // A real signature, over a payload without roles, under a payload granting admin.
            let real = issuer.token("mallory", &[]);
            let forged = issuer.token_with(spec());
            let (h, rest) = real.split_once('.').unwrap();
            let sig = rest.split_once('.').unwrap().1;
            let payload = forged.split('.').nth(1).unwrap();
            format!("{h}.{payload}.{sig}")
        }),
        ("signature stripped", {
            let t = issuer.token("mallory", &admin);
            t[..t.rfind('.').unwrap() + 1].to_string()
        }),
    ];
    for (what, token) in &cases {
        for path in [
            "/canopy/v1/whoami",
            "/v3/projects/default/catalog/registries",
            "/canopy/v1/users",
        ] {
            let a = get_with(&cp, path, format!("Bearer {token}").as_bytes()).await;
            assert_refused(&format!("{what} on {path}"), &a, token);
        }
    }
}

#[tokio::test]
async fn garbage_authorization_headers_are_refused() {
    let (cp, _issuer) = start_with_oidc().await;
    let path = "/v3/projects/default/catalog/registries";
    let long = "A".repeat(20 * 1024);
    let headers: Vec<(&str, Vec<u8>)> = vec![
        (
            "non-UTF-8 bytes",
            b"Bearer \xff\xfe\xfd\xc3\x28garbage".to_vec(),
        ),
        (
            "only non-UTF-8",
            b"\x80\x81\x82\x83\x84\x85\x86\x87".to_vec(),
        ),
        ("Basic", b"Basic YWRtaW46YWRtaW4tcGFzc3dvcmQ=".to_vec()),
        ("scheme only", b"Bearer".to_vec()),
        ("scheme and spaces", b"Bearer    ".to_vec()),
        ("token with spaces", b"Bearer abcdefgh ijklmnop".to_vec()),
        ("token with a tab", b"Bearer abcdefgh\tijklmnop".to_vec()),
        (
            "two tokens",
            b"Bearer cnp_a_aaaaaaaaaaaa, Bearer cnp_a_bbbbbbbbbbbb".to_vec(),
        ),
        ("no scheme", b"cnp_a_aaaaaaaaaaaaaaaaaaaa".to_vec()),
        ("other scheme", b"Token cnp_a_aaaaaaaaaaaaaaaaaaaa".to_vec()),
        ("empty", b"".to_vec()),
        ("20 KB token", format!("Bearer {long}").into_bytes()),
        (
            "20 KB canopy token",
            format!("Bearer cnp_a_{long}").into_bytes(),
        ),
        (
            "20 KB JWT-shaped token",
            format!("Bearer {long}.{long}.{long}").into_bytes(),
        ),
        (
            "20 KB JWT-shaped header",
            format!("Bearer eyJ{long}.e30.AAAA").into_bytes(),
        ),
        (
            "unknown canopy token",
            b"Bearer cnp_a_0123456789abcdef0123456789abcdef".to_vec(),
        ),
        (
            "edge credential",
            b"Bearer cne_0123456789abcdef0123456789abcdef".to_vec(),
        ),
        (
            "enrollment token",
            b"Bearer cnt_0123456789abcdef0123456789abcdef".to_vec(),
        ),
    ];
    for (what, value) in &headers {
        let a = get_with(&cp, path, value).await;
        let secret = String::from_utf8_lossy(value).into_owned();
        assert_refused(what, &a, &secret);
    }

    // Control characters hyper's parser refuses before the server sees them: a 400 from the
    // HTTP layer (or a 401), never a success or a server error, and no echo.
    for (what, value) in [
        ("NUL", &b"Bearer abc\x00defghijkl"[..]),
        (
            "CR LF injection",
            &b"Bearer abcdefghijkl\r\nX-Roles: canopy-admin"[..],
        ),
        ("bell", &b"Bearer abc\x07defghijkl"[..]),
        ("DEL", &b"Bearer abc\x7fdefghijkl"[..]),
    ] {
        let (status, text) = raw_get(&cp, path, value).await;
        assert!(
            status == 400 || status == 401,
            "{what}: expected 400 or 401, got {status}: {text}"
        );
        assert!(!text.contains("defghijkl"), "{what}: echoed: {text}");
    }
}

/// Sends a GET with an arbitrary `Authorization` header over a raw connection (reqwest refuses
/// to send control characters); returns the status and the whole answer.
async fn raw_get(cp: &TestControlPlane, path: &str, auth: &[u8]) -> (u16, String) {
    let addr = cp.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: ")
            .into_bytes();
    req.extend_from_slice(auth);
    req.extend_from_slice(b"\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

// ------------------------------------------------------------------ names

#[tokio::test]
async fn traversal_control_and_lookalike_characters_in_names_are_refused() {
    let cp = TestControlPlane::start().await;
    let (s, b) = cp.upload_dir(P, &example("web-demo")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    cp.create_project("shop").await;
    let reader = cp.user_token("reader", &["shop_cat-r"]).await;
    let (s, b) = cp
        .post(&cp.catalog(P, "/registries"), &registry("helm"))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let before = inventory(&cp).await;
    let http = cp.http();

    // Names in paths: project, registry, application, version, user. Percent-encoded so the
    // client does not normalize them away.
    let bad_segments = [
        "..%2F..%2Fetc",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2E%2E%2F%2E%2E%2Fetc",
        "..%5C..%5Cwindows",
        "shop%00",
        "shop%00.json",
        "shop%0A",
        "shop%0D%0AX-Injected:%201",
        "%D1%95hop",     // Cyrillic ѕ
        "%EF%BD%93hop",  // fullwidth ｓ
        "sh%C3%B6p",     // ö
        "shop%E2%80%8B", // zero-width space
        "SHOP",
        "%20shop",
        "a%2Fb",
        "%25",
        "*",
    ];
    for seg in bad_segments {
        for (method, path, body) in [
            ("PUT", format!("/v1/projects/{seg}"), Some(json!({}))),
            ("GET", format!("/v1/projects/{seg}"), None),
            ("DELETE", format!("/v1/projects/{seg}"), None),
            ("PUT", format!("/v1/orgs/{seg}"), Some(json!({}))),
            (
                "GET",
                format!("/v3/projects/{seg}/catalog/registries"),
                None,
            ),
            (
                "POST",
                format!("/v3/projects/{seg}/catalog/registries"),
                Some(registry("fine")),
            ),
            (
                "GET",
                format!("/v3/projects/{P}/catalog/registries/{seg}"),
                None,
            ),
            (
                "PUT",
                format!("/v3/projects/{P}/catalog/registries/{seg}"),
                Some(registry("fine")),
            ),
            (
                "DELETE",
                format!("/v3/projects/{P}/catalog/registries/{seg}"),
                None,
            ),
            (
                "GET",
                format!("/v3/projects/{P}/catalog/applications/{seg}/versions"),
                None,
            ),
            (
                "GET",
                format!("/v3/projects/{P}/catalog/applications/web/versions/{seg}"),
                None,
            ),
            (
                "DELETE",
                format!("/v3/projects/{P}/catalog/applications/{seg}/versions/1.0.0"),
                None,
            ),
            (
                "GET",
                format!(
                    "/v3/projects/{P}/catalog/deployment_packages/{seg}/versions/1.0.0/download"
                ),
                None,
            ),
            ("GET", format!("/canopy/v1/projects/{P}/edges/{seg}"), None),
            ("GET", format!("/canopy/v1/users/{seg}"), None),
            (
                "PATCH",
                format!("/canopy/v1/users/{seg}"),
                Some(json!({"roles": ["canopy-admin"]})),
            ),
            ("DELETE", format!("/canopy/v1/users/{seg}"), None),
            ("DELETE", format!("/canopy/v1/tokens/{seg}"), None),
        ] {
            let mut req = http.request(method.parse().unwrap(), cp.at(&path));
            if let Some(b) = &body {
                req = req.json(b);
            }
            let a = answer(req.send().await.unwrap()).await;
            assert_rejected(&format!("{method} {path}"), &a);
        }
    }

    // Names in bodies.
    let bad_names = [
        "../etc",
        "..",
        "a/b",
        "a\\b",
        "a\u{0}b",
        "a\nb",
        "a\r\nb",
        "web\u{200b}",
        "w\u{0435}b", // Cyrillic е
        "ｗｅｂ",
        "WEB",
        " web",
        "web%00",
        "",
        &"x".repeat(300),
    ];
    for name in bad_names {
        for (path, body) in [
            (cp.catalog(P, "/registries"), registry(name)),
            (
                cp.catalog(P, "/applications"),
                json!({"name": name, "version": "1.0.0", "chartName": "x", "chartVersion": "1.0.0",
                       "helmRegistryName": "helm", "profiles": [{"name": "p", "chartValues": "a: 1\n"}],
                       "defaultProfileName": "p"}),
            ),
            (
                cp.catalog(P, "/artifacts"),
                json!({"name": name, "mimeType": "text/plain", "artifact": "aGk="}),
            ),
            (
                cp.at("/canopy/v1/users"),
                json!({"name": name, "roles": []}),
            ),
            (
                cp.at("/canopy/v1/tokens"),
                json!({"name": "t", "user": name}),
            ),
        ] {
            let a = answer(http.post(&path).json(&body).send().await.unwrap()).await;
            assert_rejected(&format!("POST {path} named {name:?}"), &a);
        }
        // Roles naming a project with such a name (upper case is fine: project UUIDs).
        if name != "WEB" {
            let role = format!("{name}_cat-rw");
            let a = answer(
                http.post(cp.at("/canopy/v1/users"))
                    .json(&json!({"name": "bob", "roles": [role]}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_rejected(&format!("a role on project {name:?}"), &a);
        }
        // An application version with such a name.
        let a = answer(
            http.post(cp.catalog(P, "/applications"))
                .json(
                    &json!({"name": "x", "version": name, "chartName": "x", "chartVersion": "1.0.0",
                              "helmRegistryName": "helm", "profiles": []}),
                )
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_rejected(&format!("application version {name:?}"), &a);
    }

    // A login with such a user name is an ordinary wrong login.
    for name in ["../admin", "admin\u{0}", "\u{0430}dmin", "admin\n", "ADMIN"] {
        let a = answer(
            cp.anonymous_http()
                .post(cp.at("/canopy/v1/login"))
                .json(&json!({"username": name, "password": "whatever-password"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 401, "login as {name:?}: {}", a.text);
        assert_eq!(message(&a), "wrong user name or password", "{}", a.text);
    }

    // A lookalike of an existing project does not reach it.
    let a = answer(
        cp.anonymous_http()
            .get(cp.at("/v3/projects/%D1%95hop/catalog/registries"))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_rejected("Cyrillic lookalike of shop", &a);

    assert_eq!(
        inventory(&cp).await,
        before,
        "nothing was created, changed or removed"
    );
}

fn registry(name: &str) -> Value {
    json!({"name": name, "rootUrl": "oci://registry.example.com/x", "type": "HELM"})
}

/// Projects, users, and the default project's catalog, as names.
async fn inventory(cp: &TestControlPlane) -> Vec<String> {
    let mut out = Vec::new();
    let (_, projects) = cp.get(&cp.at("/v1/projects")).await;
    let (_, orgs) = cp.get(&cp.at("/v1/orgs")).await;
    let (_, users) = cp.get(&cp.at("/canopy/v1/users")).await;
    for (kind, list) in [
        ("project", projects.as_array().cloned().unwrap_or_default()),
        ("org", orgs.as_array().cloned().unwrap_or_default()),
        (
            "user",
            users["users"].as_array().cloned().unwrap_or_default(),
        ),
    ] {
        for x in list {
            out.push(format!("{kind} {} {}", x["name"], x["roles"]));
        }
    }
    for kind in [
        "registries",
        "applications",
        "deployment_packages",
        "artifacts",
    ] {
        let (s, b) = cp
            .get(&cp.catalog(P, &format!("/{kind}?pageSize=500")))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        out.push(format!("{kind}: {}", b["totalElements"]));
        for x in b[kind_field(kind)].as_array().cloned().unwrap_or_default() {
            out.push(format!(
                "{kind} {} {} {}",
                x["name"], x["version"], x["description"]
            ));
        }
    }
    out.sort();
    out
}

fn kind_field(kind: &str) -> &str {
    match kind {
        "deployment_packages" => "deploymentPackages",
        other => other,
    }
}

// ------------------------------------------------------------------ list filters

#[tokio::test]
async fn injection_shaped_filters_are_refused_or_match_literally() {
    for cp in TestControlPlane::all().await {
        let b = cp.backend;
        let (s, body) = cp.upload_dir(P, &example("web-demo")).await;
        assert_eq!(s, StatusCode::OK, "{b}: {body}");
        let (s, body) = cp
            .post(&cp.catalog(P, "/registries"), &registry("helm"))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}: {body}");
        let (_, t) = cp
            .post(
                &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
                &json!({}),
            )
            .await;
        let enrolled = cp
            .anonymous_http()
            .post(cp.at("/canopy/v1/agent/enroll"))
            .header(PROTOCOL_HEADER, "1")
            .json(&json!({"protocolVersion": 1, "token": t["secret"], "name": "edge-1", "labels": {"site": "a"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(enrolled.status(), StatusCode::CREATED, "{b}");
        let edge: Value = enrolled.json().await.unwrap();
        let edge = edge["edgeId"].as_str().unwrap().to_string();
        let (s, d) = cp
            .post(
                &cp.at(&format!("/v1/projects/{P}/appdeployment/deployments")),
                &json!({"appName": "web-demo", "appVersion": "1.0.0",
                        "allAppTargetClusters": {"labels": {"site": "a"}}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}: {d}");
        let depl = d["deploymentId"].as_str().unwrap().to_string();
        let before = inventory(&cp).await;

        // (name of the items field, URL, whether totalElements counts after `filter`: the
        // deployment manager's lists count before it, as the reference does).
        let lists = [
            ("registries", cp.catalog(P, "/registries"), true),
            ("applications", cp.catalog(P, "/applications"), true),
            (
                "deploymentPackages",
                cp.catalog(P, "/deployment_packages"),
                true,
            ),
            ("artifacts", cp.catalog(P, "/artifacts"), true),
            (
                "edges",
                cp.at(&format!("/canopy/v1/projects/{P}/edges")),
                true,
            ),
            (
                "deployments",
                cp.at(&format!("/v1/projects/{P}/appdeployment/deployments")),
                false,
            ),
            (
                "clusters",
                cp.at(&format!("/v1/projects/{P}/appdeployment/clusters")),
                false,
            ),
            (
                "deploymentInstancesCluster",
                cp.at(&format!("/v1/projects/{P}/deployments/clusters/{edge}")),
                false,
            ),
            (
                "clusters",
                cp.at(&format!(
                    "/v1/projects/{P}/appdeployment/deployments/{depl}/clusters"
                )),
                false,
            ),
        ];
        // Each either refused (400) or matched literally: no fixture name contains any of
        // these characters, so a literal match finds nothing (and `totalElements` is 0).
        // A NUL would end SQLite's LIKE pattern early (matching everything): filter values with
        // control characters are refused when the query is parsed.
        let queries = [
            "filter=name%3D%27x%27%20OR%201%3D1--",
            "filter=name%3Dx%27%20OR%20%271%27%3D%271",
            "filter=name%3D%27%3B%20DROP%20TABLE%20applications%3B%20--",
            "filter=name%3D%25",
            "filter=name%3D%25%25",
            "filter=name%3D_",
            "filter=name%3D__",
            "filter=name%3D%5C",
            "filter=name%3D%5C%25",
            "filter=name%3Dweb%5C",
            "filter=name%3D%27",
            "filter=name%3D%22",
            "filter=name%3D%5B%5D",
            "filter=name%3D%00",
            "orderBy=name%3BDROP%20TABLE%20applications",
            "orderBy=name%3B%20DROP%20TABLE%20applications%3B--",
            "orderBy=(select%201)",
            "orderBy=name%20desc%2C%20(SELECT%20sqlite_version())",
            "orderBy=1",
            "orderBy=name%20--",
            "labels=site%3D%27%20OR%201%3D1--",
        ];
        let mut problems = Vec::new();
        for (field, url, counts_filtered) in &lists {
            for q in queries {
                let target = format!("{url}?{q}");
                let (s, body) = cp.get(&target).await;
                let fine = match s {
                    StatusCode::BAD_REQUEST => {
                        !body["message"].as_str().unwrap_or_default().is_empty()
                    }
                    StatusCode::OK => {
                        (body["totalElements"] == 0 || !counts_filtered)
                            && body[*field].as_array().map(Vec::len) == Some(0)
                    }
                    _ => false,
                };
                if !fine {
                    problems.push(format!("{b}: {target}: {s} {body}"));
                }
            }
        }
        // The audit log's text filters too.
        for q in [
            "actor=%27%20OR%201%3D1--",
            "actor=%25",
            "actor=%00",
            "action=%25%25",
            "action=%5F%5F%5F%5F%5F%5F%5F%5F%5F%5F",
            "action=%00",
            "action=%27%3B%20DROP%20TABLE%20audit_log%3B--",
            "project=%25",
        ] {
            let target = cp.at(&format!("/canopy/v1/audit?{q}"));
            let (s, body) = cp.get(&target).await;
            let fine = s == StatusCode::BAD_REQUEST
                || s == StatusCode::NOT_FOUND
                || (s == StatusCode::OK && body["totalElements"] == 0);
            if !fine {
                problems.push(format!("{b}: {target}: {s} {:.300}", body.to_string()));
            }
        }
        // Everything is still there.
        assert_eq!(inventory(&cp).await, before, "{b}");
        let (_, apps) = cp
            .get(&cp.catalog(P, "/applications?filter=name%3Dweb"))
            .await;
        assert_eq!(apps["totalElements"], 1, "{b}: {apps}");
        assert!(
            problems.is_empty(),
            "{} filters were not refused nor matched literally:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
}

// ------------------------------------------------------------------ sizes

/// Sends `method url` with a body of `len` bytes as the administrator; returns the answer.
async fn big(
    cp: &TestControlPlane,
    method: &str,
    url: &str,
    content_type: &str,
    len: usize,
) -> Answer {
    let body = if content_type.starts_with("multipart/") {
        // One real file part, larger than the limit.
        let mut b = b"--xyz\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.yaml\"\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        b.resize(b.len() + len, b'#');
        b.extend_from_slice(b"\r\n--xyz--\r\n");
        b
    } else {
        vec![b' '; len]
    };
    let resp = cp
        .http()
        .request(method.parse().unwrap(), url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    answer(resp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_413() {
    let cp = TestControlPlane::start().await;
    let before = inventory(&cp).await;
    let json_limit = canopy_server::http::MAX_JSON_BODY;
    let upload_limit = canopy_server::http::MAX_UPLOAD_BODY;
    let json = "application/json";
    let multipart = "multipart/form-data; boundary=xyz";
    let over = json_limit + 1024;
    #[rustfmt::skip]
    let cases = [
        ("POST", cp.catalog(P, "/registries"), json, json_limit + 1),
        ("POST", cp.catalog(P, "/artifacts"), json, over),
        ("PUT", cp.catalog(P, "/registries/helm"), json, over),
        ("POST", cp.at(&format!("/v1/projects/{P}/appdeployment/deployments")), json, over),
        ("POST", cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")), json, over),
        // The tenancy PUTs read an optional body themselves: their 413 is the API's JSON too.
        ("PUT", cp.at(&format!("/v1/projects/{P}")), json, over),
        ("PUT", cp.at("/v1/orgs/acme"), json, over),
        ("POST", cp.at("/canopy/v1/users"), json, over),
        ("POST", cp.at("/canopy/v1/tokens"), json, over),
        ("POST", cp.at("/canopy/v1/login"), json, over),
        // Agent routes have smaller limits of their own (64 KiB; status reports 4 MiB): an
        // enrollment is read before anything else. A status report's edge credential is
        // checked first (401/426 before its body); `tests/agent_limits.rs` covers its 413.
        ("POST", cp.at("/canopy/v1/agent/enroll"), json, over),
        // The upload routes allow more, up to their own limit.
        ("POST", cp.catalog(P, "/uploads"), json, upload_limit + 1024),
        ("POST", cp.catalog(P, "/upload"), multipart, upload_limit + 1024),
    ];
    let mut problems = Vec::new();
    for (method, url, content_type, len) in cases {
        let a = big(&cp, method, &url, content_type, len).await;
        if a.status != 413 || message(&a).is_empty() {
            problems.push(format!(
                "{method} {url} with {len} bytes: {} (want 413 with a JSON message): {:.200}",
                a.status, a.text
            ));
        }
    }
    // Just under the JSON limit is not refused for its size.
    let body = json!({"name": "big", "rootUrl": "oci://r.example.com/x", "type": "HELM",
                      "description": "x".repeat(json_limit - 200)});
    let a = answer(
        cp.http()
            .post(cp.catalog(P, "/registries"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_ne!(a.status, 413, "{:.300}", a.text);
    assert_ne!(a.status, 500, "{:.300}", a.text);
    if a.status == 200 {
        cp.delete(&cp.catalog(P, "/registries/big")).await;
    }
    assert_eq!(inventory(&cp).await, before, "nothing was created");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------------ credentials that end

#[tokio::test]
async fn revoked_used_up_and_expired_enrollment_tokens_are_refused() {
    let cp = TestControlPlane::start().await;
    let enroll = |token: String, name: &'static str| {
        let cp = &cp;
        async move {
            answer(
                cp.anonymous_http()
                    .post(cp.at("/canopy/v1/agent/enroll"))
                    .header(PROTOCOL_HEADER, "1")
                    .json(&json!({"protocolVersion": 1, "token": token, "name": name}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let create = |body: Value| {
        let cp = &cp;
        async move {
            let (s, b) = cp
                .post(
                    &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
                    &body,
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            (
                b["secret"].as_str().unwrap().to_string(),
                b["token"]["id"].as_str().unwrap().to_string(),
            )
        }
    };

    // Revoked.
    let (secret, id) = create(json!({"description": "store"})).await;
    let first = enroll(secret.clone(), "store-1").await;
    assert_eq!(first.status, 201, "{}", first.text);
    let cred = first.body["credential"].as_str().unwrap().to_string();
    let (s, b) = cp
        .delete(&cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens/{id}")))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["enrollmentToken"]["state"], "REVOKED", "{b}");
    let again = enroll(secret.clone(), "store-2").await;
    assert_refused("a revoked enrollment token", &again, &secret);
    assert!(message(&again).contains("revoked"), "{}", again.text);
    // The edge it enrolled keeps its own credential.
    let poll = cp
        .anonymous_http()
        .get(cp.at("/canopy/v1/agent/desired-state?waitSeconds=0"))
        .header(PROTOCOL_HEADER, "1")
        .bearer_auth(&cred)
        .send()
        .await
        .unwrap();
    assert!(poll.status().is_success(), "{}", poll.status());
    let (_, edges) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/edges")))
        .await;
    assert_eq!(edges["totalElements"], 1, "no edge was created: {edges}");

    // Used up.
    let (secret, _) = create(json!({"description": "one", "maxUses": 1})).await;
    assert_eq!(enroll(secret.clone(), "once-1").await.status, 201);
    let again = enroll(secret.clone(), "once-2").await;
    assert_refused("a used-up enrollment token", &again, &secret);
    assert!(message(&again).contains("maximum"), "{}", again.text);

    // Expired.
    let (secret, _) = create(json!({"description": "short", "ttlSeconds": 1})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = enroll(secret.clone(), "late-1").await;
    assert_refused("an expired enrollment token", &late, &secret);
    assert!(message(&late).contains("expired"), "{}", late.text);

    // Made up, or another kind of credential.
    for token in [
        "cnt_0123456789abcdef0123456789abcdef".to_string(),
        cred.clone(),
        cp.admin_token().to_string(),
        String::new(),
    ] {
        let a = enroll(token.clone(), "nope").await;
        assert_refused("not an enrollment token", &a, &token);
    }
    let (_, edges) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/edges")))
        .await;
    assert_eq!(edges["totalElements"], 2, "{edges}");
}

async fn works(cp: &TestControlPlane, token: &str) -> u16 {
    answer(
        cp.anonymous_http()
            .get(cp.catalog(P, "/registries"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
    .status
}

#[tokio::test]
async fn a_revoked_api_token_stops_working_at_once() {
    let cp = TestControlPlane::start().await;
    let token = cp.user_token("ci-bot", &["default_cat-rw"]).await;
    let other = cp.user_token("ci-bot-2", &["default_cat-rw"]).await;
    // Used first, so the lookup is cached.
    assert_eq!(works(&cp, &token).await, 200);
    assert_eq!(works(&cp, &other).await, 200);
    let (_, list) = cp.get(&cp.at("/canopy/v1/tokens?all=true")).await;
    let id = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"] == "ci-bot")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !list.to_string().contains(&token),
        "token secrets are never listed"
    );

    let (s, b) = cp.delete(&cp.at(&format!("/canopy/v1/tokens/{id}"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let a = get_with(
        &cp,
        &format!("/v3/projects/{P}/catalog/registries"),
        format!("Bearer {token}").as_bytes(),
    )
    .await;
    assert_refused("a revoked API token", &a, &token);
    assert_eq!(works(&cp, &other).await, 200, "other tokens keep working");

    // A user revokes their own token; it fails on the next call.
    let (_, mine) = cp
        .send(
            cp.anonymous_http()
                .get(cp.at("/canopy/v1/tokens"))
                .bearer_auth(&other),
        )
        .await;
    let own_id = mine["tokens"][0]["id"].as_str().unwrap().to_string();
    let (s, b) = cp
        .send(
            cp.anonymous_http()
                .delete(cp.at(&format!("/canopy/v1/tokens/{own_id}")))
                .bearer_auth(&other),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(works(&cp, &other).await, 401);
}

#[tokio::test]
async fn deleting_a_user_ends_all_their_tokens_at_once() {
    let cp = TestControlPlane::start().await;
    let password = "correct horse battery staple";
    let (s, b) = cp
        .post(
            &cp.at("/canopy/v1/users"),
            &json!({"name": "bob", "password": password, "roles": ["default_cat-rw"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let login = answer(
        cp.anonymous_http()
            .post(cp.at("/canopy/v1/login"))
            .json(&json!({"username": "bob", "password": password}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.text);
    let session = login.body["token"].as_str().unwrap().to_string();
    let mut tokens = vec![session];
    for name in ["ci", "laptop"] {
        let (s, b) = cp
            .post(
                &cp.at("/canopy/v1/tokens"),
                &json!({"name": name, "user": "bob"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        tokens.push(b["token"].as_str().unwrap().to_string());
    }
    for t in &tokens {
        assert_eq!(works(&cp, t).await, 200);
    }
    let (s, b) = cp.delete(&cp.at("/canopy/v1/users/bob")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for t in &tokens {
        let a = get_with(
            &cp,
            &format!("/v3/projects/{P}/catalog/registries"),
            format!("Bearer {t}").as_bytes(),
        )
        .await;
        assert_refused("a deleted user's token", &a, t);
    }
    // A new user of the same name does not inherit them.
    let _ = cp.user_token("bob", &["canopy-admin"]).await;
    for t in &tokens {
        assert_eq!(works(&cp, t).await, 401);
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_answer_the_same() {
    let cp = TestControlPlane::start().await;
    let password = "correct horse battery staple";
    let (s, b) = cp
        .post(
            &cp.at("/canopy/v1/users"),
            &json!({"name": "carol", "password": password, "roles": []}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let login = |user: &str, pw: &str| {
        let req = cp
            .anonymous_http()
            .post(cp.at("/canopy/v1/login"))
            .json(&json!({"username": user, "password": pw}));
        async move { answer(req.send().await.unwrap()).await }
    };
    let good = login("carol", password).await;
    assert_eq!(good.status, 200, "{}", good.text);

    let wrong = login("carol", "not the right password").await;
    let unknown = login("nobody-here", "not the right password").await;
    let tokenless = login("carol-tokens-only", password).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert_eq!(wrong.status, unknown.status);
    assert_eq!(
        wrong.body, unknown.body,
        "the answers must not tell users apart"
    );
    assert_eq!(wrong.body, tokenless.body);
    assert_eq!(wrong.www_authenticate, unknown.www_authenticate);
    assert!(!wrong.text.contains("not the right password"));
    assert!(!wrong.text.contains("carol") && !unknown.text.contains("nobody-here"));
    // A user without a password (API tokens only) cannot log in either, with the same answer.
    let _ = cp.user_token("dave", &[]).await;
    let no_password = login("dave", "").await;
    assert_eq!(no_password.body, wrong.body, "{}", no_password.text);
    let huge = login(&"x".repeat(5000), &"y".repeat(5000)).await;
    assert_eq!(
        (huge.status, &huge.body),
        (401, &wrong.body),
        "{}",
        huge.text
    );
}
