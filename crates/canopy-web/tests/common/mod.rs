//! What the console's tests share: users with passwords, a deployment on a simulated edge, and
//! a browserless sign-in (cookies handled by hand, so their flags can be asserted).

#![allow(dead_code, reason = "each test binary uses a part of these helpers")]

use canopy_proto::AppState;
use canopy_testkit::sim_agent::SimAgent;
use canopy_testkit::{TestControlPlane, example};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;

pub const P: &str = "default";
pub const PASSWORD: &str = "correct horse battery staple";

/// Creates a built-in user with a password and these roles.
pub async fn user(cp: &TestControlPlane, name: &str, roles: &[&str]) {
    let (s, b) = cp
        .post(
            &cp.at("/canopy/v1/users"),
            &json!({"name": name, "password": PASSWORD, "roles": roles}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "create user {name}: {b}");
}

/// Uploads the web-demo package once (idempotent uploads).
pub async fn upload_example(cp: &TestControlPlane) {
    let (s, b) = cp.upload_dir(P, &example("web-demo")).await;
    assert_eq!(s, StatusCode::OK, "upload web-demo: {b}");
}

/// A deployment of web-demo 1.0.0 named `display` on edges labelled `site=<site>`, through the
/// REST API as the administrator. Returns its id.
pub async fn deployment(cp: &TestControlPlane, display: &str, site: &str) -> String {
    let (s, b) = cp
        .post(
            &cp.at(&format!("/v1/projects/{P}/appdeployment/deployments")),
            &json!({
                "appName": "web-demo", "appVersion": "1.0.0", "displayName": display,
                "allAppTargetClusters": {"labels": {"site": site}}
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "create deployment {display}: {b}");
    b["deploymentId"].as_str().unwrap().to_string()
}

/// Whether the deployment exists, asked through the REST API.
pub async fn deployment_exists(cp: &TestControlPlane, id: &str) -> bool {
    let (s, b) = cp
        .get(&cp.at(&format!("/v1/projects/{P}/appdeployment/deployments/{id}")))
        .await;
    match s {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        other => panic!("GET deployment {id}: {other} {b}"),
    }
}

/// An edge `name` labelled `site=<site>` that has taken its deployments and reported them
/// RUNNING.
pub async fn running_edge(cp: &TestControlPlane, name: &str, site: &str) -> SimAgent {
    let (s, b) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"description": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let token = b["secret"].as_str().unwrap().to_string();
    let mut agent = SimAgent::enroll(cp, &token, name, &[("site", site)]).await;
    agent.poll(0).await;
    let (s, b) = agent.report(AppState::Running).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    agent
}

/// A client that follows no redirects and keeps no cookies (tests look at both).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The value of cookie `name` in the answer's `Set-Cookie` headers, with the whole header.
pub fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let first = v.split(';').next()?;
            let (n, value) = first.split_once('=')?;
            (n.trim() == name).then(|| (value.to_string(), v.to_string()))
        })
}

/// The value of the hidden form field `name` in a page (maud writes `name="..." value="..."`).
pub fn hidden(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &page[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

/// A browserless console session.
pub struct Signed {
    /// The session cookie's value: the session's secret.
    pub token: String,
    /// The whole `Set-Cookie` header that carried it.
    pub set_cookie: String,
}

impl Signed {
    /// The `Cookie` header of this session.
    pub fn cookie(&self) -> String {
        format!("canopy_session={}", self.token)
    }

    /// GETs a console path with this session: status, headers, body.
    pub async fn get(&self, cp: &TestControlPlane, path: &str) -> (StatusCode, HeaderMap, String) {
        let r = client()
            .get(cp.at(path))
            .header("cookie", self.cookie())
            .send()
            .await
            .unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        (s, h, r.text().await.unwrap())
    }

    /// This session's CSRF token, as a page's form carries it.
    pub async fn csrf(&self, cp: &TestControlPlane) -> String {
        let (s, _, page) = self.get(cp, &format!("/ui/projects/{P}/deployments")).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        hidden(&page, "csrf").expect("the sign-out form carries the CSRF token")
    }

    /// POSTs a form to a console path with this session and extra headers.
    pub async fn post(
        &self,
        cp: &TestControlPlane,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = client()
            .post(cp.at(path))
            .header("cookie", self.cookie())
            .form(form);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        (s, h, r.text().await.unwrap())
    }
}

impl Signed {
    /// POSTs the upload form of project `P` with this session: the CSRF part first (as the
    /// form sends it; `None` leaves it out), then `files`. Status, headers, body.
    pub async fn upload(
        &self,
        cp: &TestControlPlane,
        csrf: Option<&str>,
        files: Vec<(String, Vec<u8>)>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut form = reqwest::multipart::Form::new();
        if let Some(csrf) = csrf {
            form = form.text("csrf", csrf.to_string());
        }
        for (name, content) in files {
            form = form.part(
                "files",
                reqwest::multipart::Part::bytes(content).file_name(name),
            );
        }
        let r = client()
            .post(cp.at(&format!("/ui/projects/{P}/packages/upload")))
            .header("cookie", self.cookie())
            .multipart(form)
            .send()
            .await
            .unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        (s, h, r.text().await.unwrap())
    }
}

/// The sign-in form's answer to `user` and `password`: status, headers, body.
pub async fn try_sign_in(
    cp: &TestControlPlane,
    user: &str,
    password: &str,
) -> (StatusCode, HeaderMap, String) {
    let http = client();
    let r = http.get(cp.at("/ui/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (login_csrf, _) =
        set_cookie(r.headers(), "canopy_login_csrf").expect("the form sets its CSRF cookie");
    let page = r.text().await.unwrap();
    let field = hidden(&page, "csrf").expect("the form carries its CSRF value");
    let r = http
        .post(cp.at("/ui/login"))
        .header("cookie", format!("canopy_login_csrf={login_csrf}"))
        .form(&[("username", user), ("password", password), ("csrf", &field)])
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status(), r.headers().clone());
    (s, h, r.text().await.unwrap())
}

/// Signs `user` in through the sign-in form; panics unless it works.
pub async fn sign_in(cp: &TestControlPlane, user: &str) -> Signed {
    let (s, h, body) = try_sign_in(cp, user, PASSWORD).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "sign-in of {user}: {body}");
    assert_eq!(h.get(LOCATION).unwrap(), "/");
    let (token, set_cookie) = set_cookie(&h, "canopy_session").expect("a session cookie");
    Signed { token, set_cookie }
}

/// A secret parameter's value the tests type and look for.
pub const SECRET: &str = "s3cr3t-t0ken-value";

/// The web-demo package with two secret parameters on its `web` app: `token` (mandatory) and
/// `pin` (a number).
pub fn web_demo_with_secrets() -> Vec<(String, Vec<u8>)> {
    let mut files = canopy_testkit::read_dir_files(&canopy_testkit::example("web-demo"));
    let web = files.iter_mut().find(|(n, _)| n == "web.yaml").unwrap();
    let text = String::from_utf8(web.1.clone()).unwrap();
    let greeting = "      - {name: greeting, displayName: Greeting, type: string}\n";
    assert!(text.contains(greeting), "{text}");
    web.1 = text
        .replace(
            greeting,
            &format!(
                "{greeting}      - {{name: token, displayName: API token, type: string, secret: true, mandatory: true}}\n      - {{name: pin, type: number, secret: true}}\n"
            ),
        )
        .into_bytes();
    files
}
