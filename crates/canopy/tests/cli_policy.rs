//! `canopy project policy get|set` against a real test server: the default printed as YAML,
//! set from the file `get` prints (edited), read back, refused with the server's reason, and
//! only by administrators.

use canopy_testkit::TestControlPlane;

async fn canopy(cp: &TestControlPlane, token: &str, args: &[&str]) -> (i32, String, String) {
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
async fn get_edit_set_get() {
    let cp = TestControlPlane::start().await;
    let admin = cp.admin_token().to_string();
    cp.create_project("shop").await;
    let (code, out, err) = canopy(
        &cp,
        &admin,
        &["project", "policy", "get", "--project", "shop"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("allowedImageRegistries:") && out.contains("allowFileUrls: true"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    let edited = out
        .replace("allowFileUrls: true", "allowFileUrls: false")
        .replace("min: 1\n", "min: 30000\n");
    std::fs::write(&file, &edited).unwrap();
    let path = file.to_str().unwrap();
    let (code, out, err) = canopy(
        &cp,
        &admin,
        &["-p", "shop", "project", "policy", "set", path],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("policy of project shop set"), "{err}");
    let (code, out, _) = canopy(
        &cp,
        &admin,
        &["-p", "shop", "--output", "json", "project", "policy", "get"],
    )
    .await;
    assert_eq!(code, 0);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["allowFileUrls"], false);
    assert_eq!(got["allowedHostPorts"]["min"], 30000);
    // The default project is untouched.
    let (_, out, _) = canopy(
        &cp,
        &admin,
        &["--output", "json", "project", "policy", "get"],
    )
    .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["allowFileUrls"],
        true
    );

    // The server's reason, naming the field.
    std::fs::write(
        &file,
        "allowedImageRegistries: [\"https://x.example.com\"]\n",
    )
    .unwrap();
    let (code, _, err) = canopy(
        &cp,
        &admin,
        &["-p", "shop", "project", "policy", "set", path],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("allowedImageRegistries[0]"), "{err}");
    // A typo in the file.
    std::fs::write(&file, "allowFileUrl: false\n").unwrap();
    let (code, _, err) = canopy(
        &cp,
        &admin,
        &["-p", "shop", "project", "policy", "set", path],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("allowFileUrl") && err.contains("policy.yaml"),
        "{err}"
    );

    // Readers read; only administrators set.
    let reader = cp.user_token("reader", &["shop_cat-rw"]).await;
    let (code, out, err) = canopy(&cp, &reader, &["-p", "shop", "project", "policy", "get"]).await;
    assert_eq!(code, 0, "{out}{err}");
    std::fs::write(&file, "{}\n").unwrap();
    let (code, _, err) = canopy(
        &cp,
        &reader,
        &["-p", "shop", "project", "policy", "set", path],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("canopy-admin"), "{err}");
}
