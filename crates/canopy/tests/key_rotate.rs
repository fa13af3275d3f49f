//! `canopy key rotate` and `canopy key reseal`, run as the built binary against a data directory
//! with an embedded database: a registry's credentials written under the old key are readable
//! with only the new key afterwards, and no key material is ever printed.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use canopy_core::catalog::Registry;
use canopy_core::names::ProjectName;
use canopy_seal::{ENV_VAR, KEY_FILE_NAME, Keyring};
use canopy_store::{ResealReport, Store};

const TOKEN: &str = "tok-rotate-me-9931";

fn canopy(args: &[&str], env_key: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_canopy"));
    cmd.args(args)
        .env_remove(ENV_VAR)
        .env_remove("CANOPY_DATABASE_URL")
        .env("RUST_LOG", "warn");
    if let Some(v) = env_key {
        cmd.env(ENV_VAR, v);
    }
    cmd.output().expect("run the canopy binary")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The key lines of a key file, primary first.
fn key_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

async fn open(dir: &Path, keyring: Keyring) -> Store {
    Store::open_sqlite(&dir.join("canopy.db"))
        .await
        .unwrap()
        .with_keyring(Arc::new(keyring))
}

#[tokio::test]
async fn rotate_adds_a_primary_and_reseals_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let key_file = data.join(KEY_FILE_NAME);
    let old = Keyring::generate_file(&key_file).unwrap();
    let old_id = old.primary_id().to_string();

    let store = open(data, old).await;
    let project = store
        .ensure_project(&ProjectName::try_from("default").unwrap())
        .await
        .unwrap();
    let mut tx = store.write(project.id).await.unwrap();
    tx.put_registry(&Registry {
        name: "harbor".into(),
        root_url: "oci://harbor.example.com/charts".into(),
        username: Some("robot".into()),
        auth_token: Some(TOKEN.into()),
        registry_type: "HELM".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    store.close().await;

    let data_arg = data.to_str().unwrap();
    let run = canopy(&["key", "rotate", "--data-dir", data_arg], None);
    let (out, err) = text(&run);
    assert!(run.status.success(), "{out}{err}");

    let lines = key_lines(&key_file);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let new_id = lines[0].split_whitespace().next().unwrap().to_string();
    assert_ne!(new_id, old_id);
    assert!(lines[1].starts_with(&format!("{old_id} ")), "{lines:?}");
    assert!(
        out.contains(&new_id) && out.contains("1 registries"),
        "{out}"
    );
    for line in &lines {
        let material = line.split_whitespace().nth(1).unwrap();
        assert!(!out.contains(material) && !err.contains(material));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Only the new key: the registry still reads.
    let only_new = Keyring::from_env_value(&lines[0]).unwrap();
    assert_eq!(only_new.primary_id(), new_id);
    let store = open(data, only_new).await;
    let mut tx = store.read(project.id).await.unwrap();
    let got = tx.get_registry("harbor").await.unwrap().unwrap();
    assert_eq!(got.auth_token.as_deref(), Some(TOKEN));
    drop(tx);
    assert_eq!(store.reseal_all().await.unwrap(), ResealReport::default());
    store.close().await;

    // `reseal` again has nothing to do.
    let run = canopy(&["key", "reseal", "--data-dir", data_arg], None);
    let (out, err) = text(&run);
    assert!(run.status.success(), "{out}{err}");
    assert!(out.contains("0 registries, 0 deployments"), "{out}");

    // With the keys in the environment, rotate refuses and says what to do instead.
    let run = canopy(
        &["key", "rotate", "--data-dir", data_arg],
        Some(lines[0].as_str()),
    );
    let (out, err) = text(&run);
    assert_eq!(run.status.code(), Some(1), "{out}{err}");
    assert!(err.contains(ENV_VAR) && err.contains("prepend"), "{err}");
    assert_eq!(key_lines(&key_file).len(), 2, "the key file is left alone");

    // A wrong data directory gets no new database or key file.
    let empty = tempfile::tempdir().unwrap();
    let run = canopy(
        &[
            "key",
            "rotate",
            "--data-dir",
            empty.path().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}
