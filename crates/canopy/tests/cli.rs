//! The CLI as a user drives it, in-process against a real test server: create a registry,
//! upload the reference packages, list, get, export and re-upload elsewhere, and see errors a
//! person can act on. Then the CLI as a process with a real agent on Podman: `--watch` stops on
//! an image that cannot be pulled.

#[path = "common/edge_support.rs"]
#[allow(dead_code, unused_imports)] // shared with edge_podman.rs, which uses the rest
mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use canopy_testkit::{TestControlPlane, reference_package};
use support::{AgentProcess, Cleanup, Engine, engine_host, eventually, unique};

async fn canopy(cp: &TestControlPlane, args: &[&str]) -> (i32, String, String) {
    let mut full = vec![
        "canopy",
        "--server",
        cp.url.as_str(),
        "--token",
        cp.admin_token(),
    ];
    full.extend_from_slice(args);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = canopy::cli::run_async(full, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[tokio::test]
async fn upload_list_export_round_trip() {
    let cp = TestControlPlane::start().await;
    for (name, kind) in [("harbor-helm-oci", "helm"), ("harbor-docker-oci", "image")] {
        let (code, out, err) = canopy(
            &cp,
            &[
                "catalog",
                "registry",
                "create",
                name,
                "--type",
                kind,
                "--root-url",
                "oci://registry.example.org/x",
                "--auth-token",
                "tok",
            ],
        )
        .await;
        assert_eq!(code, 0, "{out}{err}");
    }
    let dir = reference_package("developer-guide-tutorial");
    let (code, out, err) = canopy(&cp, &["catalog", "upload", dir.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("tutorial-server"), "{out}");

    let (code, out, _) = canopy(&cp, &["catalog", "application", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("tutorial-web-ui") && out.contains("2 of 2"),
        "{out}"
    );

    let (code, out, _) = canopy(
        &cp,
        &[
            "--output",
            "json",
            "catalog",
            "package",
            "get",
            "app-orch-tutorial-dp",
            "0.1.0",
        ],
    )
    .await;
    assert_eq!(code, 0);
    let pkg: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pkg["defaultProfileName"], "default-profile");

    let (code, out, _) = canopy(
        &cp,
        &[
            "--output",
            "json",
            "catalog",
            "registry",
            "get",
            "harbor-helm-oci",
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        !out.contains("tok"),
        "secret shown without --show-sensitive-info: {out}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dp.tar.gz");
    let (code, out, err) = canopy(
        &cp,
        &[
            "catalog",
            "export",
            "app-orch-tutorial-dp",
            "0.1.0",
            "-o",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    cp.create_project("copy").await;
    let (code, out, err) = canopy(
        &cp,
        &[
            "--project",
            "copy",
            "catalog",
            "upload",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = canopy(&cp, &["-p", "copy", "catalog", "package", "list"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("app-orch-tutorial-dp"), "{out}");
}

#[tokio::test]
async fn errors_are_actionable() {
    let cp = TestControlPlane::start().await;
    let (code, _, err) = canopy(&cp, &["catalog", "application", "get", "nope", "1.0.0"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("application nope:1.0.0 not found"), "{err}");

    let dir = reference_package("httpbin");
    let (code, _, err) = canopy(&cp, &["catalog", "upload", dir.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("harbor-helm-oci"),
        "the missing registry should be named: {err}"
    );

    let (code, _, err) = canopy(&cp, &["--project", "ghost", "catalog", "registry", "list"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("project ghost not found"), "{err}");

    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = canopy::cli::run_async(
        [
            "canopy",
            "--server",
            "http://127.0.0.1:9",
            "catalog",
            "registry",
            "list",
        ],
        &mut out,
        &mut err,
    )
    .await;
    let err = String::from_utf8(err).unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("127.0.0.1:9"), "{err}");
}

/// Runs the CLI with another caller's token.
async fn canopy_as(cp: &TestControlPlane, token: &str, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["canopy", "--server", cp.url.as_str(), "--token", token];
    full.extend_from_slice(args);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = canopy::cli::run_async(full, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[tokio::test]
async fn a_project_without_a_role_is_explained() {
    let cp = TestControlPlane::start().await;
    cp.create_project("shop").await;
    cp.create_project("depot").await;
    let alice = cp.user_token("alice", &["shop_cat-r", "shop_ao-r"]).await;

    // The server answers 404 for `default` (no role there, so its existence is not told); the
    // CLI says what may be missing and where alice can work.
    let (code, out, err) = canopy_as(&cp, &alice, &["catalog", "application", "list"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        err,
        "error: project default not found, or you have no role in it; you have roles in: shop \
         (use -p shop)\n"
    );
    // The same for a deployment command, and for a project that does not exist at all.
    let (code, _, err) = canopy_as(&cp, &alice, &["-p", "depot", "deployment", "list"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("project depot not found, or you have no role in it; you have roles in: shop (use -p shop)"),
        "{err}"
    );
    let (code, out, err) = canopy_as(
        &cp,
        &alice,
        &["-p", "shop", "catalog", "application", "list"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");

    // Someone with no role anywhere is told that, too.
    let bob = cp.user_token("bob", &[]).await;
    let (code, _, err) = canopy_as(&cp, &bob, &["edge", "list"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("you have no role in any project (an administrator grants roles such as default_cat-r or default_ao-rw)"),
        "{err}"
    );

    // The administrator sees every project: a missing one does not exist, and the others are
    // listed.
    let (code, _, err) = canopy(&cp, &["-p", "ghost", "catalog", "registry", "list"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "project ghost not found; the projects are: default, depot, shop (use -p NAME)"
        ),
        "{err}"
    );
    // A 404 about something else than the project is left alone.
    let (code, _, err) = canopy_as(
        &cp,
        &alice,
        &[
            "-p",
            "shop",
            "catalog",
            "application",
            "get",
            "nope",
            "1.0.0",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("application nope:1.0.0 not found"), "{err}");
    assert!(!err.contains("roles in"), "{err}");
}

// ------------------------------------------------------------------ the CLI as a process

/// Runs the `canopy` binary as the administrator of `cp` (credentials file under `home`, no
/// CANOPY_* variables of the caller's), bounded in time: exit code, standard output and error.
async fn canopy_process(
    cp: &TestControlPlane,
    home: &Path,
    args: &[&str],
) -> (i32, String, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["--server", cp.url.as_str(), "--token", cp.admin_token()])
        .args(args)
        .env_remove("CANOPY_SERVER")
        .env_remove("CANOPY_PROJECT")
        .env_remove("CANOPY_TOKEN")
        .env("CANOPY_CREDENTIALS", home.join("credentials.json"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .unwrap_or_else(|_| panic!("canopy {args:?} did not finish within 10 minutes"))
        .expect("canopy runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The registry `scripts/podman.sh` runs beside the engine (`registry.env` next to its socket):
/// `(host:port, user, password)`; `None` (outside CI) when there is none.
fn test_registry(engine: &str) -> Option<(String, String, String)> {
    let socket = engine.strip_prefix("unix://").unwrap_or(engine);
    let file = Path::new(socket).with_file_name("registry.env");
    let Ok(text) = std::fs::read_to_string(&file) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing but CI is set: run scripts/podman.sh",
            file.display()
        );
        eprintln!("skipping: no {}", file.display());
        return None;
    };
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{key} missing in {}", file.display()))
    };
    Some((
        get("CANOPY_TEST_REGISTRY"),
        get("CANOPY_TEST_REGISTRY_USER"),
        get("CANOPY_TEST_REGISTRY_PASSWORD"),
    ))
}

/// An app whose one container runs `values.image`, pulled with the registry `local`'s
/// credentials, and a package of it.
const BROKEN_APP: &str = r#"specSchema: Application
schemaVersion: "0.1"
$schema: "https://schema.intel.com/catalog.orchestrator/0.1/schema"
name: web
version: 1.0.0
description: One container running values.image
imageRegistry: local
defaultProfile: default
profiles:
  - name: default
    chartValues: |
      image: localhost/busybox:canopy-test
workloadTemplate: |
  containers:
    - name: web
      image: {{ values.image | tojson }}
      command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
"#;

const BROKEN_PACKAGE: &str = r#"specSchema: DeploymentPackage
schemaVersion: "0.1"
$schema: "https://schema.intel.com/catalog.orchestrator/0.1/schema"
name: pull-test
version: 1.0.0
description: The web app alone
applications:
  - {name: web, version: 1.0.0}
deploymentProfiles:
  - name: default
    applicationProfiles:
      - {application: web, profile: default}
defaultProfile: default
"#;

/// `canopy deployment create --watch` of an image the registry does not have: the real agent
/// on Podman reports the pull failure, and the watch stops at once with the edge, the app and
/// the engine's words (exit 1), instead of waiting for its 5-minute timeout. Changing the
/// image then is followed to RUNNING: the earlier generation's failure is not taken for the
/// new one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_stops_on_an_image_that_cannot_be_pulled() {
    let Some(host) = engine_host("watch_stops_on_an_image_that_cannot_be_pulled") else {
        return;
    };
    let Some((registry, user, password)) = test_registry(&host) else {
        return;
    };
    let run = unique();
    let project = format!("cli-{run}");
    let scope = format!("cli-{run}");
    let edge = format!("edge-{run}");
    let tmp = tempfile::tempdir().expect("temp dir");
    let logs = tmp.path().join("logs");
    let engine = Engine::new(&host);
    let _cleanup = Cleanup {
        engine,
        scopes: vec![scope.clone()],
        run: run.clone(),
        logs: logs.clone(),
    };
    let cp = TestControlPlane::start_fleet(canopy_server::hub::HubConfig {
        heartbeat: Duration::from_secs(1),
        edge_timeout: Duration::from_secs(10),
        no_target_grace: Duration::from_secs(10),
    })
    .await;
    cp.create_project(&project).await;
    let home = tmp.path();
    let canopy = async |args: &[&str]| {
        let mut full = vec!["-p", project.as_str()];
        full.extend_from_slice(args);
        canopy_process(&cp, home, &full).await
    };

    let root_url = format!("oci://{registry}");
    let (code, out, err) = canopy(&[
        "catalog",
        "registry",
        "create",
        "local",
        "--type",
        "image",
        "--root-url",
        &root_url,
        "--username",
        &user,
        "--auth-token",
        &password,
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let pkg = tmp.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("web.yaml"), BROKEN_APP).unwrap();
    std::fs::write(pkg.join("package.yaml"), BROKEN_PACKAGE).unwrap();
    let (code, out, err) = canopy(&["catalog", "upload", pkg.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");

    let (code, out, err) = canopy(&["--output", "json", "enroll-token", "create"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let token: serde_json::Value = serde_json::from_str(&out).unwrap();
    let label = format!("run={run}");
    let mut agent = AgentProcess::new(
        &edge,
        &cp.url,
        &host,
        &scope,
        &[("run", &run)],
        tmp.path(),
        &logs,
    );
    agent.start(Some(token["secret"].as_str().expect("secret")));
    eventually(&format!("{edge} connected"), async || {
        let (code, out, err) = canopy(&["--output", "json", "edge", "get", &edge]).await;
        let e: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if code == 0 && e["connection"] == "CONNECTED" {
            Ok(())
        } else {
            Err(format!("{out}{err}"))
        }
    })
    .await;

    // An image name the registry does not have.
    let missing = format!("{registry}/canopy/does-not-exist-{run}:1");
    let (code, out, err) = canopy(&[
        "deployment",
        "create",
        "pull-test:1.0.0",
        "--label",
        &label,
        "--set",
        &format!("web.image={missing}"),
        "--watch",
        "--timeout",
        "5m",
    ])
    .await;
    assert_eq!(code, 1, "{out}{err}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("created deployment "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no deployment id in {out}"))
        .to_owned();
    assert!(
        err.starts_with("error: deployment ") && err.contains(&format!(
            "({id}) is failing and waiting will not fix it: 1 app on 1 edge\n  {edge}, app web: \
             container web: cannot pull image {missing}"
        )),
        "{err}"
    );
    assert!(
        err.contains("manifest unknown"),
        "the engine's words: {err}"
    );
    assert!(err.contains("(the image cannot be pulled)\n"), "{err}");
    assert!(
        err.contains("\nhint: nothing was changed or undone"),
        "{err}"
    );
    assert!(!err.contains(&password), "{err}");
    assert!(!err.contains("gave up watching"), "{err}");

    // Fixed: the watch follows the update to RUNNING.
    let (code, out, err) = canopy(&[
        "deployment",
        "update",
        &id,
        "--set",
        "web.image=localhost/busybox:canopy-test",
        "--watch",
        "--timeout",
        "5m",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("({id}): RUNNING, 1/1 edges running")),
        "{out}"
    );

    let (code, out, err) =
        canopy(&["deployment", "delete", &id, "--watch", "--timeout", "5m"]).await;
    assert_eq!(code, 0, "{out}{err}");
    agent.kill().await;
}
