//! The workloads pages over plain HTTP: a deployment's and an edge's containers and VMs (from a
//! simulated edge's report), VM start / stop / restart and pod delete (authorized by the app
//! layer, behind CSRF and the origin check), the console WebSockets' Origin check, the logs
//! pages, and the vendored noVNC files against their recorded hashes.

mod common;

use canopy_proto::{AppState, StatusKind, WorkloadStatus};
use canopy_testkit::sim_agent::SimAgent;
use canopy_testkit::{TestControlPlane, example};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// An edge `name` (label `site=<site>`) running edge-demo (a pod `edge-web` with container
/// `httpd`, a VM `tiny` with VNC) as a simulated agent reports it; the deployment's id.
async fn demo(cp: &TestControlPlane, name: &str, site: &str) -> (SimAgent, String) {
    let (s, b) = cp.upload_dir(P, &example("edge-demo")).await;
    assert_eq!(s, StatusCode::OK, "upload edge-demo: {b}");
    let zeros = "0".repeat(64);
    let (s, d) = cp
        .post(
            &cp.at(&format!("/v1/projects/{P}/appdeployment/deployments")),
            &json!({"appName": "edge-demo", "appVersion": "1.0.0", "displayName": "demo",
                    "allAppTargetClusters": {"labels": {"site": site}},
                    "overrideValues": [{"appName": "vm", "values": {
                        "kernelUrl": "http://images.invalid/vmlinuz", "kernelSha256": zeros,
                        "initrdUrl": "http://images.invalid/initrd.img", "initrdSha256": zeros}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "deploy edge-demo: {d}");
    let id = d["deploymentId"].as_str().unwrap().to_string();
    let mut agent = running_edge(cp, name, site).await;
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (s, b) = agent
        .report_with(|_, a| {
            let w = if a.name == "vm" {
                WorkloadStatus {
                    kind: StatusKind::Vm,
                    name: "tiny".into(),
                    state: "RUNNING".into(),
                    vnc: true,
                    restarts: 2,
                    created_at: created.clone(),
                    ..Default::default()
                }
            } else {
                WorkloadStatus {
                    kind: StatusKind::Container,
                    name: "httpd".into(),
                    image: "localhost/busybox:canopy-test".into(),
                    state: "running".into(),
                    restarts: 1,
                    created_at: created.clone(),
                    ..Default::default()
                }
            };
            (AppState::Running, vec![w])
        })
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    (agent, id)
}

/// The deployment's workloads as the API lists them (as the administrator).
async fn api_workloads(cp: &TestControlPlane, id: &str) -> Vec<Value> {
    let (s, b) = cp
        .get(&cp.at(&format!(
            "/canopy/v1/projects/{P}/resource/workloads/deployments/{id}"
        )))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["workloads"].as_array().cloned().unwrap()
}

/// The VM's (app id, edge id, VM id) and the pod's (namespace, name).
async fn ids(cp: &TestControlPlane, id: &str) -> ((String, String, String), (String, String)) {
    let all = api_workloads(cp, id).await;
    let vm = all
        .iter()
        .find(|w| w["workload"]["type"] == "TYPE_VIRTUAL_MACHINE")
        .expect("a VM");
    let pod = all
        .iter()
        .find(|w| w["workload"]["type"] == "TYPE_POD")
        .expect("a pod");
    let s = |v: &Value| v.as_str().unwrap().to_string();
    (
        (
            s(&vm["appId"]),
            s(&vm["clusterId"]),
            s(&vm["workload"]["id"]),
        ),
        (
            s(&pod["workload"]["namespace"]),
            s(&pod["workload"]["name"]),
        ),
    )
}

/// The VM's admin state as the API shows it (`STATE_UP` / `STATE_DOWN`).
async fn vm_admin(cp: &TestControlPlane, id: &str) -> String {
    api_workloads(cp, id)
        .await
        .iter()
        .find(|w| w["workload"]["type"] == "TYPE_VIRTUAL_MACHINE")
        .map(|w| {
            w["workload"]["virtualMachine"]["adminStatus"]["state"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .unwrap()
}

fn vm_base(app_id: &str, edge: &str, vm: &str) -> String {
    format!("/ui/projects/{P}/workloads/{app_id}/{edge}/vms/{vm}")
}

#[tokio::test]
async fn workloads_pages_list_vms_and_pods_and_show_writers_their_actions() {
    let cp = TestControlPlane::start().await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    user(&cp, "support", &["default_ao-r"]).await;
    let (_agent, id) = demo(&cp, "edge-a", "wl1").await;
    let ((app_id, edge, vm), (_ns, pod)) = ids(&cp, &id).await;
    let ops = sign_in(&cp, "ops").await;
    let support = sign_in(&cp, "support").await;

    // The deployment page and the edge page lead to the workloads.
    let (s, _, page) = ops
        .get(&cp, &format!("/ui/projects/{P}/deployments/{id}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(
        page.contains(&format!("/ui/projects/{P}/deployments/{id}/workloads")),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "/ui/projects/{P}/edges/{edge}/workloads?deployment={id}"
        )),
        "the edge's row links to its workloads: {page}"
    );
    let (s, _, page) = ops
        .get(&cp, &format!("/ui/projects/{P}/edges/{edge}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(
        page.contains(&format!("/ui/projects/{P}/edges/{edge}/workloads")),
        "{page}"
    );

    for path in [
        format!("/ui/projects/{P}/deployments/{id}/workloads"),
        format!("/ui/projects/{P}/edges/{edge}/workloads"),
        format!("/ui/projects/{P}/edges/{edge}/workloads?deployment={id}"),
    ] {
        let (s, _, page) = ops.get(&cp, &path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {page}");
        for want in [
            "tiny",
            &pod,
            "httpd",
            "state-RUNNING",
            "(UP)",
            ">2<",
            "s ago",
            "vm-start",
            "vm-stop",
            "vm-restart",
            "vm-console",
            "vm-serial",
            "pod-delete",
            "container-logs",
            &format!("{}/console", vm_base(&app_id, &edge, &vm)),
        ] {
            assert!(page.contains(want), "{path} shows {want}: {page}");
        }
        // A read-only user sees the same workloads, and only the logs.
        let (s, _, page) = support.get(&cp, &path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {page}");
        assert!(page.contains("tiny") && page.contains(&pod), "{page}");
        assert!(
            page.contains("vm-logs") && page.contains("container-logs"),
            "{page}"
        );
        for absent in [
            "vm-start",
            "vm-stop",
            "vm-restart",
            "vm-console",
            "vm-serial",
            "pod-delete",
        ] {
            assert!(
                !page.contains(absent),
                "{path}: a reader sees no {absent}: {page}"
            );
        }
    }

    // An unknown deployment or edge: the app layer's 404 and message.
    let (s, _, page) = ops
        .get(&cp, &format!("/ui/projects/{P}/deployments/nope/workloads"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{page}");
    assert!(page.contains("nope"), "{page}");
}

#[tokio::test]
async fn vm_actions_and_pod_delete_are_authorized_by_the_app_layer_behind_csrf_and_origin() {
    let cp = TestControlPlane::start().await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    user(&cp, "support", &["default_ao-r"]).await;
    let (_agent, id) = demo(&cp, "edge-b", "wl2").await;
    let ((app_id, edge, vm), (ns, pod)) = ids(&cp, &id).await;
    let ops = sign_in(&cp, "ops").await;
    let support = sign_in(&cp, "support").await;
    let ops_csrf = ops.csrf(&cp).await;
    let support_csrf = support.csrf(&cp).await;
    let stop = format!("{}/stop", vm_base(&app_id, &edge, &vm));
    let back = format!("/ui/projects/{P}/deployments/{id}/workloads");
    assert_eq!(vm_admin(&cp, &id).await, "STATE_UP");

    // No token, another session's token, another site: refused before anything is done.
    let (s, _, page) = ops.post(&cp, &stop, &[("back", &back)], &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{page}");
    let (s, _, page) = ops
        .post(&cp, &stop, &[("csrf", &support_csrf), ("back", &back)], &[])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{page}");
    let (s, _, page) = ops
        .post(
            &cp,
            &stop,
            &[("csrf", &ops_csrf), ("back", &back)],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("another site"), "{page}");
    assert_eq!(vm_admin(&cp, &id).await, "STATE_UP", "nothing was done");

    // A read-only user: no confirmation page, and a forged POST gets the app layer's 403.
    let (s, _, page) = support.get(&cp, &stop).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{page}");
    let (s, _, page) = support
        .post(&cp, &stop, &[("csrf", &support_csrf), ("back", &back)], &[])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{page}");
    assert!(
        page.contains("action-error") && page.contains("support"),
        "the server's message in place: {page}"
    );
    assert_eq!(vm_admin(&cp, &id).await, "STATE_UP", "nothing was done");
    let pod_delete = format!("/ui/projects/{P}/edges/{edge}/pods/{ns}/{pod}/delete");
    let (s, _, page) = support
        .post(&cp, &pod_delete, &[("csrf", &support_csrf)], &[])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{page}");

    // A writer: the confirmation, then the action, and back to the list with a notice.
    let (s, _, page) = ops.get(&cp, &format!("{stop}?back={back}")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(
        page.contains("confirm-action") && page.contains("Stop VM tiny?"),
        "{page}"
    );
    let (s, h, page) = ops
        .post(&cp, &stop, &[("csrf", &ops_csrf), ("back", &back)], &[])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{page}");
    let to = h.get("location").unwrap().to_str().unwrap().to_string();
    assert!(to.starts_with(&format!("{back}?done=")), "{to}");
    assert_eq!(vm_admin(&cp, &id).await, "STATE_DOWN", "stopped");
    let (_, _, page) = ops.get(&cp, &to).await;
    assert!(page.contains("Asked the edge to stop VM tiny"), "{page}");
    assert!(page.contains("(DOWN)"), "{page}");
    let start = format!("{}/start", vm_base(&app_id, &edge, &vm));
    let (s, _, page) = ops
        .post(
            &cp,
            &start,
            &[("csrf", &ops_csrf), ("back", "https://evil.example/")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{page}");
    assert_eq!(vm_admin(&cp, &id).await, "STATE_UP", "started");
    let restart = format!("{}/restart", vm_base(&app_id, &edge, &vm));
    let (s, h, page) = ops
        .post(
            &cp,
            &restart,
            &[("csrf", &ops_csrf), ("back", "https://evil.example/")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{page}");
    assert!(
        h.get("location")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("/ui/projects/"),
        "no redirect off the console: {h:?}"
    );

    // The server's error in place: an unknown VM.
    let (s, _, page) = ops
        .post(
            &cp,
            &format!("{}/stop", vm_base(&app_id, &edge, "no-such-vm")),
            &[("csrf", &ops_csrf)],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{page}");
    assert!(page.contains("no-such-vm"), "{page}");

    // Pod delete: confirmation, then done; an unknown pod is the app layer's 404.
    let (s, _, page) = ops.get(&cp, &pod_delete).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("confirm-action"), "{page}");
    let (s, h, page) = ops
        .post(
            &cp,
            &pod_delete,
            &[("csrf", &ops_csrf), ("back", &back)],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{page}");
    assert!(
        h.get("location")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("done=")
    );
    let (s, _, page) = ops
        .post(
            &cp,
            &format!("/ui/projects/{P}/edges/{edge}/pods/{ns}/nope-pod/delete"),
            &[("csrf", &ops_csrf)],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{page}");
    assert!(
        page.contains("action-error") && page.contains("nope-pod"),
        "{page}"
    );
}

/// A WebSocket handshake to a console path with `origin` (if any) and this session's cookie.
async fn ws_handshake(
    cp: &TestControlPlane,
    session: &Signed,
    path: &str,
    origin: Option<&str>,
) -> (StatusCode, String) {
    let mut req = client()
        .get(cp.at(path))
        .header("cookie", session.cookie())
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let r = req.send().await.unwrap();
    let s = r.status();
    (s, r.text().await.unwrap())
}

#[tokio::test]
async fn console_websockets_need_this_servers_origin_and_write_access() {
    let cp = TestControlPlane::start().await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    user(&cp, "support", &["default_ao-r"]).await;
    let (_agent, id) = demo(&cp, "edge-c", "wl3").await;
    let ((app_id, edge, vm), _) = ids(&cp, &id).await;
    let ops = sign_in(&cp, "ops").await;
    let support = sign_in(&cp, "support").await;
    let own = cp.url.trim_end_matches('/').to_string();
    for socket in ["vnc", "serial/ws"] {
        let path = format!("{}/{socket}", vm_base(&app_id, &edge, &vm));
        // A page on another site, with the user's cookie: refused before any tunnel.
        let (s, body) = ws_handshake(&cp, &ops, &path, Some("https://evil.example")).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.contains("another site"), "{body}");
        let (s, body) = ws_handshake(&cp, &ops, &path, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path} without Origin: {body}");
        // This server's origin, a read-only user: the app layer's 403.
        let (s, body) = ws_handshake(&cp, &support, &path, Some(&own)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.contains("support"), "{body}");
    }
    // The console pages: writers only.
    for page in ["console", "serial"] {
        let path = format!("{}/{page}", vm_base(&app_id, &edge, &vm));
        let (s, _, body) = support.get(&cp, &path).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {body}");
        let (s, h, body) = ops.get(&cp, &path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(
            body.contains("<script type=\"module\" src=\"/ui/static/"),
            "{body}"
        );
        assert!(!body.contains(&ops.token), "no secret in the page");
    }
    let (_, _, body) = ops
        .get(&cp, &format!("{}/console", vm_base(&app_id, &edge, &vm)))
        .await;
    assert!(body.contains("data-novnc=\"/ui/static/novnc/"), "{body}");
}

#[tokio::test]
async fn logs_pages_are_for_readers_and_take_the_apis_limits() {
    let cp = TestControlPlane::start().await;
    user(&cp, "support", &["default_ao-r"]).await;
    let (_agent, id) = demo(&cp, "edge-d", "wl4").await;
    let ((app_id, edge, vm), _) = ids(&cp, &id).await;
    let support = sign_in(&cp, "support").await;
    let vm_logs = format!("{}/logs", vm_base(&app_id, &edge, &vm));
    let (s, _, page) = support.get(&cp, &vm_logs).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(
        page.contains(&format!("data-stream=\"{vm_logs}/stream\"")),
        "{page}"
    );
    let (s, _, page) = support
        .get(&cp, &format!("{vm_logs}/stream?tail=10001&follow=true"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("tail"), "the API's message: {page}");
    let (s, _, page) = support.get(&cp, &format!("{vm_logs}/stream?since=1")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    // A container's log page (the VM's app has no container `httpd`: 404).
    let web_app = api_workloads(&cp, &id)
        .await
        .iter()
        .find(|w| w["workload"]["type"] == "TYPE_POD")
        .map(|w| w["appId"].as_str().unwrap().to_string())
        .unwrap();
    let (s, _, page) = support
        .get(
            &cp,
            &format!("/ui/projects/{P}/workloads/{web_app}/{edge}/containers/httpd/logs"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let (s, _, page) = support
        .get(
            &cp,
            &format!("/ui/projects/{P}/workloads/{app_id}/{edge}/containers/httpd/logs"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{page}");
}

/// `assets/vendor/novnc`: every file is listed in SHA256SUMS with its hash (nothing drifts or is
/// added silently), the README names the tarball and its hash, and the server serves every
/// JavaScript file of the list byte for byte under the versioned path.
#[tokio::test]
async fn vendored_novnc_matches_its_recorded_hashes_and_is_served() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/vendor/novnc");
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let mut listed = Vec::new();
    for line in sums.lines() {
        let (hash, file) = line.split_once("  ").expect("sha256sum lines");
        let content = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let got: String = Sha256::digest(&content)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, hash, "{file} differs from the vendored noVNC");
        listed.push(file.to_string());
    }
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut on_disk = Vec::new();
    for sub in ["core", "vendor"] {
        walk(&dir, &dir.join(sub), &mut on_disk);
    }
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        on_disk, sorted,
        "every vendored file is listed in SHA256SUMS"
    );
    let readme = std::fs::read_to_string(dir.join("README")).unwrap();
    assert!(
        readme.contains("https://registry.npmjs.org/@novnc/novnc/-/novnc-")
            && readme.contains("SHA-256: "),
        "{readme}"
    );
    assert!(dir.join("LICENSE.txt").is_file());

    let cp = TestControlPlane::start().await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    let (_agent, id) = demo(&cp, "edge-e", "wl5").await;
    let ((app_id, edge, vm), _) = ids(&cp, &id).await;
    let ops = sign_in(&cp, "ops").await;
    let (_, _, page) = ops
        .get(&cp, &format!("{}/console", vm_base(&app_id, &edge, &vm)))
        .await;
    let at = page.find("data-novnc=\"").unwrap() + "data-novnc=\"".len();
    let rfb = &page[at..at + page[at..].find('"').unwrap()];
    let base = rfb.strip_suffix("core/rfb.js").expect("the RFB module");
    let js: Vec<&String> = listed.iter().filter(|f| f.ends_with(".js")).collect();
    assert!(js.iter().any(|f| *f == "core/rfb.js"));
    for file in js {
        let r = client()
            .get(cp.at(&format!("{base}{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{file}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript"),
            "{file}"
        );
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable"),
            "{file}"
        );
        let body = r.bytes().await.unwrap();
        let want = std::fs::read(dir.join(file)).unwrap();
        assert!(body == want, "{file} is served as vendored");
    }
    let r = client()
        .get(cp.at(&format!("{base}core/nope.js")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
