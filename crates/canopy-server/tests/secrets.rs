//! Secrets at rest through the running server: registry credentials are encrypted in the
//! database, returned only when asked for, and survive a key rotation done the documented way
//! (add a key to `DATA_DIR/secret.key`, restart, remove the old key, restart).

use canopy_store::testing::raw_body;
use canopy_testkit::TestControlPlane;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn registry_credentials_are_encrypted_and_survive_key_rotation() {
    let cp = TestControlPlane::start().await;
    let (s, b) = cp
        .post(
            &cp.catalog("default", "/registries"),
            &json!({"name": "private", "rootUrl": "https://r.example", "type": "IMAGE",
                    "username": "robot", "authToken": "s3cret-token-value"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(!b.to_string().contains("s3cret"), "not echoed: {b}");
    let (_, plain) = cp.get(&cp.catalog("default", "/registries/private")).await;
    assert!(plain["registry"].get("authToken").is_none(), "{plain}");

    let project = cp
        .app()
        .store()
        .project_by_name("default")
        .await
        .unwrap()
        .unwrap();
    let raw = raw_body(cp.app().store(), "registries", project.id, "private")
        .await
        .unwrap();
    assert!(raw.starts_with("cnpenc:v1:"), "{raw}");
    assert!(!raw.contains("s3cret") && !raw.contains("robot"));

    // Rotate: a new primary key, restart (the server re-encrypts), drop the old key, restart.
    let stopped = cp.stop_keep_data().await;
    let key_file = stopped.data_dir().join("secret.key");
    let old_id = canopy_seal::Keyring::load_file(&key_file)
        .unwrap()
        .primary_id()
        .to_string();
    let new_id = canopy_seal::add_primary_key_to_file(&key_file).unwrap();
    assert_ne!(old_id, new_id);
    let cp = stopped.start_again().await;
    let raw = raw_body(cp.app().store(), "registries", project.id, "private")
        .await
        .unwrap();
    assert!(raw.starts_with(&format!("cnpenc:v1:{new_id}:")), "{raw}");
    let stopped = cp.stop_keep_data().await;
    let text = std::fs::read_to_string(&key_file).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with(&format!("{old_id} ")))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(kept, text, "the old key line was removed");
    std::fs::write(&key_file, kept).unwrap();
    let cp = stopped.start_again().await;
    let (s, r) = cp
        .get(&cp.catalog("default", "/registries/private?showSensitiveInfo=true"))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["registry"]["authToken"], "s3cret-token-value");
    assert_eq!(r["registry"]["username"], "robot");
}
