//! The CLI as a user drives it, in-process against a real test server: create a registry,
//! upload the reference packages, list, get, export and re-upload elsewhere, and see errors a
//! person can act on.

use canopy_testkit::{TestControlPlane, reference_package};

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
