//! CLI tests: flag parsing, exit codes, and a few commands end to end against a canned HTTP
//! responder (the real server is exercised by the harness tests of the server crate).

use std::sync::{Arc, Mutex};

use clap::error::ErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::cli::catalog::CatalogCommand;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("canopy").chain(args.iter().copied()))
}

fn catalog(args: &[&str]) -> CatalogCommand {
    let all: Vec<&str> = std::iter::once("catalog")
        .chain(args.iter().copied())
        .collect();
    match parse(&all).unwrap().command {
        Command::Catalog(c) => c.command,
        other => panic!("not a catalog command: {other:?}"),
    }
}

// ---- parsing ------------------------------------------------------------------------------

#[test]
fn global_flags_have_defaults_and_go_anywhere() {
    let cli = parse(&["catalog", "registry", "list"]).unwrap();
    if std::env::var_os("CANOPY_SERVER").is_none() {
        assert_eq!(cli.global.server, "https://127.0.0.1:7070");
    }
    if std::env::var_os("CANOPY_PROJECT").is_none() {
        assert_eq!(cli.global.project, "default");
    }
    assert_eq!(cli.global.output, Format::Table);
    let cli = parse(&[
        "catalog",
        "registry",
        "list",
        "--output",
        "yaml",
        "--server",
        "http://h:1",
        "-p",
        "p1",
    ])
    .unwrap();
    assert_eq!(cli.global.output, Format::Yaml);
    assert_eq!(cli.global.server, "http://h:1");
    assert_eq!(cli.global.project, "p1");
    assert!(parse(&["--output", "xml", "catalog", "registry", "list"]).is_err());
}

#[test]
fn server_flags() {
    let cli = parse(&["server", "--listen", "0.0.0.0:9000", "--data-dir", "/tmp/x"]).unwrap();
    let Command::Server(s) = cli.command else {
        panic!("not server")
    };
    assert_eq!(s.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(s.data_dir, std::path::PathBuf::from("/tmp/x"));
    let e = parse(&["server", "--listen", "nowhere"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
}

#[test]
fn package_create_parses_pairs() {
    let cmd = catalog(&[
        "package",
        "create",
        "stack",
        "1.0",
        "--app",
        "web:0.1.0",
        "--app",
        "db:2.0",
        "--dependency",
        "web=db",
        "--default-namespace",
        "web=frontend",
        "--kind",
        "addon",
    ]);
    let dbg = format!("{cmd:?}");
    assert!(dbg.contains(r#"("web", "0.1.0"), ("db", "2.0")"#), "{dbg}");
    assert!(dbg.contains(r#"dependency: [("web", "db")]"#), "{dbg}");
    assert!(
        dbg.contains(r#"default_namespace: [("web", "frontend")]"#),
        "{dbg}"
    );
    assert!(dbg.contains(r#"default_profile_name: "default""#), "{dbg}");

    // The alias works, --app is required, and malformed pairs are usage errors.
    assert!(parse(&["catalog", "deployment-package", "list"]).is_ok());
    let e = parse(&["catalog", "package", "create", "s", "1"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
    let e = parse(&["catalog", "package", "create", "s", "1", "--app", "web"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
    assert!(e.to_string().contains("expected NAME:VERSION"), "{e}");
    let e = parse(&[
        "catalog",
        "package",
        "create",
        "s",
        "1",
        "--app",
        "a:1",
        "--dependency",
        "a",
    ])
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("'--dependency <APP=APP>': \"a\" is not KEY=VALUE: there is no '='"),
        "{e}"
    );
}

#[test]
fn package_update_takes_booleans() {
    let cmd = catalog(&[
        "package",
        "update",
        "s",
        "1",
        "--deployed",
        "true",
        "--visible",
        "false",
    ]);
    let dbg = format!("{cmd:?}");
    assert!(dbg.contains("deployed: Some(true)"), "{dbg}");
    assert!(dbg.contains("visible: Some(false)"), "{dbg}");
    assert!(
        parse(&[
            "catalog",
            "package",
            "update",
            "s",
            "1",
            "--deployed",
            "maybe"
        ])
        .is_err()
    );
    assert!(parse(&["catalog", "package", "delete", "s"]).is_ok());
}

#[test]
fn profile_flags_parse_templates() {
    let cmd = catalog(&[
        "profile",
        "create",
        "web",
        "1.0",
        "tuned",
        "--values-file",
        "-",
        "--parameter-template",
        "image.tag=string:Tag:1.2",
        "--parameter-template",
        "replicas=number",
        "--default",
    ]);
    let dbg = format!("{cmd:?}");
    assert!(
        dbg.contains(r#"name: "image.tag""#) && dbg.contains(r#"default: "1.2""#),
        "{dbg}"
    );
    assert!(dbg.contains(r#"name: "replicas""#), "{dbg}");
    assert!(dbg.contains("default: true"), "{dbg}");
    let e = parse(&[
        "catalog",
        "profile",
        "create",
        "web",
        "1.0",
        "p",
        "--parameter-template",
        "x=int",
    ])
    .unwrap_err();
    assert!(
        e.to_string().contains("expected string, number or boolean"),
        "{e}"
    );
}

#[test]
fn registry_and_list_flags() {
    let cmd = catalog(&[
        "registry",
        "create",
        "r",
        "--root-url",
        "oci://x.example.com",
        "--type",
        "IMAGE",
    ]);
    assert!(format!("{cmd:?}").contains("registry_type: Image"));
    let e = parse(&["catalog", "registry", "create", "r"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
    let cmd = catalog(&[
        "application",
        "list",
        "--kind",
        "normal,addon",
        "--filter",
        "name=web",
        "--order-by",
        "name desc",
        "--page-size",
        "5",
        "--offset",
        "10",
        "--all",
    ]);
    let dbg = format!("{cmd:?}");
    assert!(dbg.contains("kind: [Normal, Addon]"), "{dbg}");
    assert!(
        dbg.contains("page_size: Some(5)") && dbg.contains("all: true"),
        "{dbg}"
    );
    assert!(parse(&["catalog", "app", "ls", "--page-size", "-1"]).is_err());
}

// ---- exit codes ---------------------------------------------------------------------------

fn run_sync(args: &[&str]) -> (i32, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = run_with_io(
        std::iter::once("canopy").chain(args.iter().copied()),
        &mut out,
        &mut err,
    );
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn help_is_success_and_usage_errors_exit_2() {
    let (code, out, _) = run_sync(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("catalog"), "{out}");
    let (code, _, err) = run_sync(&["catalog", "frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("unrecognized subcommand"), "{err}");
}

#[test]
fn unreachable_server_is_explained() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (code, out, err) = run_sync(&["--server", &url, "catalog", "registry", "list"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.starts_with(&format!(
            "error: could not reach the Canopy server at {url} ("
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: start a server with `canopy server` (or `canopy up`)"),
        "{err}"
    );
}

#[test]
fn bad_server_url_is_explained() {
    let (code, _, err) = run_sync(&["--server", "localhost:7070", "catalog", "app", "ls"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: invalid server URL \"localhost:7070\""),
        "{err}"
    );
    assert!(err.contains("hint: --server"), "{err}");
}

#[test]
fn error_chains_do_not_repeat_causes() {
    let io = io::Error::new(io::ErrorKind::AddrInUse, "Address already in use");
    let e =
        anyhow::Error::new(io).context("cannot listen on 127.0.0.1:7070: Address already in use");
    assert_eq!(
        chain_message(&e),
        "cannot listen on 127.0.0.1:7070: Address already in use"
    );
    let e = anyhow::anyhow!("root cause").context("reading x failed");
    assert_eq!(chain_message(&e), "reading x failed: root cause");
}

#[tokio::test]
async fn run_with_io_works_inside_a_runtime() {
    let (code, out, _) = run_sync(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("canopy "), "{out}");
}

// ---- commands against a canned server -----------------------------------------------------

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    body: Vec<u8>,
}

type Routes = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

async fn fake(
    routes: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let routes: Routes = Arc::new(routes);
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let routes = routes.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let mut first = head.split_whitespace();
                let seen = Seen {
                    method: first.next().unwrap_or("").to_owned(),
                    target: first.next().unwrap_or("").to_owned(),
                    body: buf[head_end..].to_vec(),
                };
                log.lock().unwrap().push(seen.clone());
                let (status, body) = routes(&seen);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, seen)
}

async fn cli(url: &str, args: &[&str]) -> (i32, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = run_async(
        ["canopy", "--server", url, "--project", "p"]
            .into_iter()
            .chain(args.iter().copied()),
        &mut out,
        &mut err,
    )
    .await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

const APP: &str = r#"{"name":"web","version":"0.1.0","chartName":"web","chartVersion":"1.0.0","helmRegistryName":"helm","defaultProfileName":"default","profiles":[{"name":"default"}]}"#;

#[tokio::test]
async fn list_shows_a_table_and_the_total() {
    let (url, seen) = fake(|_| {
        (
            200,
            format!(r#"{{"applications":[{APP}],"totalElements":7}}"#),
        )
    })
    .await;
    let (code, out, err) = cli(
        &url,
        &["catalog", "application", "list", "--page-size", "1"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("Name   DisplayName   Version   Kind"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("web                  0.1.0     normal   web"),
        "{out}"
    );
    assert_eq!(lines[2], "1 of 7 (next page: --offset 1; every one: --all)");
    assert_eq!(
        seen.lock().unwrap()[0].target,
        "/v3/projects/p/catalog/applications?pageSize=1"
    );

    let (code, out, _) = cli(&url, &["--output", "json", "catalog", "app", "ls"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["name"], "web");
}

#[tokio::test]
async fn server_errors_are_printed_verbatim() {
    let (url, _) = fake(|_| {
        (
            400,
            r#"{"code":9,"message":"cannot delete registry helm while in use by application web:0.1.0","details":[]}"#.to_owned(),
        )
    })
    .await;
    let (code, out, err) = cli(&url, &["catalog", "registry", "delete", "helm"]).await;
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(
        err,
        "error: cannot delete registry helm while in use by application web:0.1.0\n"
    );
}

#[tokio::test]
async fn package_create_maps_apps_to_default_profiles() {
    let (url, seen) = fake(|s| match s.method.as_str() {
        "GET" => (200, format!(r#"{{"application":{APP}}}"#)),
        _ => (
            200,
            r#"{"deploymentPackage":{"name":"stack","version":"1.0"}}"#.to_owned(),
        ),
    })
    .await;
    let (code, out, err) = cli(
        &url,
        &[
            "catalog",
            "package",
            "create",
            "stack",
            "1.0",
            "--app",
            "web:0.1.0",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "created deployment-package stack:1.0 with deployment profile default\n"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0].target,
        "/v3/projects/p/catalog/applications/web/versions/0.1.0"
    );
    let body: serde_json::Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(body["defaultProfileName"], "default");
    assert_eq!(body["profiles"][0]["applicationProfiles"]["web"], "default");
    assert_eq!(body["applicationReferences"][0]["version"], "0.1.0");
    assert_eq!(body["isVisible"], true);
}

#[tokio::test]
async fn profile_create_is_read_modify_write() {
    let (url, seen) = fake(|s| match s.method.as_str() {
        "GET" => (200, format!(r#"{{"application":{APP}}}"#)),
        _ => (200, "{}".to_owned()),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("v.yaml");
    std::fs::write(&values, "replicas: 3\n").unwrap();
    let (code, out, err) = cli(
        &url,
        &[
            "catalog",
            "profile",
            "create",
            "web",
            "0.1.0",
            "tuned",
            "--values-file",
            values.to_str().unwrap(),
            "--parameter-template",
            "replicas=number:Replicas:1",
            "--default",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "created profile tuned of application web:0.1.0\n");
    let put = seen.lock().unwrap()[1].clone();
    assert_eq!(put.method, "PUT");
    let body: serde_json::Value = serde_json::from_slice(&put.body).unwrap();
    assert_eq!(body["defaultProfileName"], "tuned");
    assert_eq!(body["profiles"][1]["chartValues"], "replicas: 3\n");
    assert_eq!(
        body["profiles"][1]["parameterTemplates"][0]["displayName"],
        "Replicas"
    );

    // Deleting the default while others remain is refused with a way out.
    let two = APP.replace(
        r#"[{"name":"default"}]"#,
        r#"[{"name":"default"},{"name":"tuned"}]"#,
    );
    let (url, _) = fake(move |_| (200, format!(r#"{{"application":{two}}}"#))).await;
    let (code, _, err) = cli(
        &url,
        &["catalog", "profile", "delete", "web", "0.1.0", "default"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("is the default profile of application web:0.1.0"),
        "{err}"
    );
}

#[tokio::test]
async fn upload_reports_what_the_server_changed() {
    let (url, seen) = fake(|_| {
        (
            200,
            r#"[{"sessionId":"s","uploadNumber":1},{"sessionId":"s","uploadNumber":2,"changes":[{"action":"unchanged","kind":"registry","key":"helm"},{"action":"created","kind":"application","key":"web:0.1.0"}]}]"#.to_owned(),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("values")).unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        "specSchema: Application\nname: web\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("values/v.yaml"), "a: 1\n").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "a: 1\n").unwrap();
    let (code, out, err) = cli(&url, &["catalog", "upload", dir.path().to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "unchanged registry helm\ncreated application web:0.1.0\nuploaded 2 files to project p\n"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/v3/projects/p/catalog/upload");
    let body = String::from_utf8_lossy(&seen[0].body);
    assert!(body.contains(r#"filename="values/v.yaml""#), "{body}");
    assert!(body.contains(r#"filename="app.yaml""#), "{body}");
    assert!(!body.contains(".hidden"), "{body}");
}

#[tokio::test]
async fn upload_falls_back_to_what_the_files_define() {
    let (url, _) = fake(|_| (200, r#"[{"sessionId":"s","uploadNumber":1}]"#.to_owned())).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        "specSchema: Application\nname: web\nversion: 0.1.0\n---\nspecSchema: Registry\nname: helm\n",
    )
    .unwrap();
    let (code, out, err) = cli(
        &url,
        &[
            "--output",
            "json",
            "catalog",
            "upload",
            dir.path().to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["files"][0], "app.yaml");
    assert_eq!(v["changes"][0]["kind"], "registry");
    assert_eq!(v["changes"][1]["key"], "web:0.1.0");
    assert_eq!(v["changes"][1]["action"], "created or updated");
}

#[tokio::test]
async fn upload_rejection_prints_each_message() {
    let (url, _) = fake(|_| {
        (
            400,
            r#"{"code":3,"message":"a; b","details":[],"errorMessages":["uploaded file app.yaml: chart values file v.yaml not found in uploads","uploaded file dp.yaml: bad"]}"#.to_owned(),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), "a: 1\n").unwrap();
    let (code, out, err) = cli(&url, &["catalog", "upload", dir.path().to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err,
        "error: uploaded file app.yaml: chart values file v.yaml not found in uploads\n\
         error: uploaded file dp.yaml: bad\n\
         upload of 1 file failed; nothing was applied\n"
    );
}

#[tokio::test]
async fn upload_failure_prints_each_message() {
    let (url, _) = fake(|_| {
        (
            200,
            r#"[{"sessionId":"s","uploadNumber":1,"errorMessages":["app.yaml: chart values file v.yaml not found in uploads","app.yaml: bad"]}]"#.to_owned(),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        "specSchema: Application\nname: web\nversion: 1\n",
    )
    .unwrap();
    let (code, out, err) = cli(&url, &["catalog", "upload", dir.path().to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err,
        "error: app.yaml: chart values file v.yaml not found in uploads\n\
         error: app.yaml: bad\n\
         upload of 1 file failed; nothing was applied\n"
    );
}

#[tokio::test]
async fn upload_refuses_more_than_100_files() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..101 {
        std::fs::write(dir.path().join(format!("f{i:03}.yaml")), "a: 1\n").unwrap();
    }
    let (code, _, err) = cli(
        "http://127.0.0.1:9",
        &["catalog", "upload", dir.path().to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: found 101 files to upload; one upload takes at most 100"),
        "{err}"
    );
}

#[tokio::test]
async fn package_delete_without_version_reports_each() {
    let (url, _) = fake(|s| match (s.method.as_str(), s.target.as_str()) {
        ("GET", _) => (
            200,
            r#"{"deploymentPackages":[{"name":"stack","version":"1"},{"name":"stack","version":"2"}]}"#.to_owned(),
        ),
        ("DELETE", t) if t.ends_with("/2") => (
            400,
            r#"{"code":9,"message":"cannot modify deployed package stack:2"}"#.to_owned(),
        ),
        _ => (200, "{}".to_owned()),
    })
    .await;
    let (code, out, err) = cli(&url, &["catalog", "package", "delete", "stack"]).await;
    assert_eq!(code, 1);
    assert_eq!(out, "deleted deployment-package stack:1\n");
    assert_eq!(err, "error: cannot modify deployed package stack:2\n");
}

#[tokio::test]
async fn export_writes_the_tarball() {
    let (url, seen) = fake(|_| (200, "TARBALL".to_owned())).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("x.tgz");
    let (code, out, err) = cli(
        &url,
        &[
            "catalog",
            "export",
            "stack",
            "1.0",
            "-o",
            target.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("exported deployment-package stack:1.0 to "),
        "{out}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"TARBALL");
    let (code, out, _) = cli(&url, &["catalog", "export", "stack", "1.0", "-o", "-"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "TARBALL");
    assert_eq!(
        seen.lock().unwrap()[0].target,
        "/v3/projects/p/catalog/deployment_packages/stack/versions/1.0/download"
    );
}
