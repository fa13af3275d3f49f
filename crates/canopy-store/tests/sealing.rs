//! Secrets at rest, on every backend from [`fresh_stores`] (SQLite always, PostgreSQL when
//! `CANOPY_TEST_DATABASE_URL` is set, which CI requires): registry credentials and deployment
//! bodies never reach the database in plaintext when the store has a keyring, legacy plaintext
//! rows keep working, a key rotation (add a primary, `reseal_all`, drop the old key) loses
//! nothing, and a sealed body only opens in its own row.

use std::sync::Arc;

use canopy_core::catalog::Registry;
use canopy_core::list::{Entity, parse_query};
use canopy_core::names::ProjectName;
use canopy_seal::Keyring;
use canopy_store::testing::{fresh_stores, raw_body, set_raw_body};
use canopy_store::{DeploymentRow, Project, ResealReport, Store, StoreError};
use time::OffsetDateTime;

const KEY_A: &str = "key-a AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "key-b ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const KEY_C: &str = "key-c QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";

const TOKEN: &str = "tok-very-secret-4711";
const PARAM: &str = "db-password-0815";

fn ring(spec: &str) -> Arc<Keyring> {
    Arc::new(Keyring::from_env_value(spec).unwrap())
}

async fn project(store: &Store, name: &str) -> Project {
    store
        .ensure_project(&ProjectName::try_from(name).unwrap())
        .await
        .unwrap()
}

fn registry(name: &str) -> Registry {
    Registry {
        name: name.into(),
        display_name: format!("Registry {name}"),
        root_url: format!("oci://{name}.example.com/charts"),
        username: Some("robot".into()),
        auth_token: Some(TOKEN.into()),
        cacerts: Some("-----BEGIN CERTIFICATE-----".into()),
        registry_type: "HELM".into(),
        ..Default::default()
    }
}

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap()
}

fn deployment(p: &Project, id: &str) -> DeploymentRow {
    DeploymentRow {
        id: id.into(),
        project_id: p.id,
        name: format!("deployment-{id}"),
        body: format!(r#"{{"overrideValues":{{"db":{{"password":"{PARAM}"}}}}}}"#),
        create_time: now(),
        update_time: now(),
    }
}

/// Writes registry `reg` and deployment `dep` into project `p`.
async fn write_rows(store: &Store, p: &Project, reg: &str, dep: &str) {
    let mut tx = store.write(p.id).await.unwrap();
    tx.put_registry(&registry(reg)).await.unwrap();
    tx.insert_deployment(&deployment(p, dep)).await.unwrap();
    tx.commit().await.unwrap();
}

/// Reads every registry and deployment of `p` back through every read path and checks the
/// secrets survived.
async fn assert_readable(label: &str, store: &Store, p: &Project, reg: &str, dep: &str) {
    let mut tx = store.read(p.id).await.unwrap();
    let got = tx.get_registry(reg).await.unwrap().unwrap();
    assert_eq!(got.auth_token.as_deref(), Some(TOKEN), "{label}");
    assert_eq!(got.username.as_deref(), Some("robot"), "{label}");
    let (all, _) = tx
        .list_registries(&parse_query(Entity::Registry, "").unwrap())
        .await
        .unwrap();
    assert!(
        all.iter()
            .any(|r| r.name == reg && r.auth_token.as_deref() == Some(TOKEN)),
        "{label}"
    );
    let rows = tx.list_deployment_rows().await.unwrap();
    let row = rows.iter().find(|d| d.id == dep).unwrap();
    assert!(row.body.contains(PARAM), "{label}: {}", row.body);
    drop(tx);
    let snap = store.load_fleet().await.unwrap();
    let row = snap.deployments.iter().find(|d| d.id == dep).unwrap();
    assert!(row.body.contains(PARAM), "{label}");
}

/// The sealing error of a failed read, checked to name the row and not leak the secret.
fn sealed_error(label: &str, e: StoreError, table: &str, row: &str) -> String {
    let text = e.to_string();
    assert!(matches!(e, StoreError::Sealed { .. }), "{label}: {text}");
    assert!(
        text.contains(table) && text.contains(row),
        "{label}: {text}"
    );
    assert!(
        !text.contains(TOKEN) && !text.contains(PARAM),
        "{label}: {text}"
    );
    text
}

#[tokio::test]
async fn secrets_are_sealed_in_the_database_and_read_back() {
    for (label, store, _dir) in fresh_stores().await {
        let store = store.with_keyring(ring(KEY_A));
        let p = project(&store, "alpha").await;
        write_rows(&store, &p, "harbor", "d1").await;

        let raw = raw_body(&store, "registries", p.id, "harbor")
            .await
            .unwrap();
        assert!(raw.starts_with("cnpenc:v1:key-a:"), "{label}: {raw}");
        assert!(!raw.contains(TOKEN) && !raw.contains("robot"), "{label}");
        let raw = raw_body(&store, "deployments", p.id, "d1").await.unwrap();
        assert!(raw.starts_with("cnpenc:v1:key-a:"), "{label}: {raw}");
        assert!(!raw.contains(PARAM), "{label}");
        assert_readable(label, &store, &p, "harbor", "d1").await;

        // Updates are sealed too.
        let mut tx = store.write(p.id).await.unwrap();
        let changed = format!(r#"{{"password":"{PARAM}-2"}}"#);
        assert!(tx.update_deployment("d1", &changed, now()).await.unwrap());
        let mut r = registry("harbor");
        r.auth_token = Some(format!("{TOKEN}-2"));
        tx.put_registry(&r).await.unwrap();
        tx.commit().await.unwrap();
        let raw = raw_body(&store, "deployments", p.id, "d1").await.unwrap();
        assert!(
            canopy_seal::is_sealed(&raw) && !raw.contains(PARAM),
            "{label}"
        );
        let raw = raw_body(&store, "registries", p.id, "harbor")
            .await
            .unwrap();
        assert!(
            canopy_seal::is_sealed(&raw) && !raw.contains(TOKEN),
            "{label}"
        );
        let mut tx = store.read(p.id).await.unwrap();
        assert_eq!(
            tx.list_deployment_rows().await.unwrap()[0].body,
            changed,
            "{label}"
        );
        let got = tx.get_registry("harbor").await.unwrap().unwrap();
        assert_eq!(got.auth_token, r.auth_token, "{label}");
        drop(tx);

        // Nothing left to reseal.
        assert_eq!(store.reseal_all().await.unwrap(), ResealReport::default());
        store.close().await;
    }
}

#[tokio::test]
async fn legacy_plaintext_rows_still_read_and_reseal_encrypts_them() {
    for (label, store, _dir) in fresh_stores().await {
        // Written by a store without a keyring: what a database from before sealing holds.
        let plain = store.clone();
        let p = project(&plain, "alpha").await;
        write_rows(&plain, &p, "harbor", "d1").await;
        // More rows than one reseal batch.
        let mut tx = plain.write(p.id).await.unwrap();
        for i in 0..450 {
            tx.put_registry(&registry(&format!("r{i:03}")))
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let raw = raw_body(&plain, "registries", p.id, "harbor")
            .await
            .unwrap();
        assert!(raw.contains(TOKEN), "{label}: legacy rows are plaintext");
        assert!(matches!(
            plain.reseal_all().await,
            Err(StoreError::NoKeyring)
        ));

        let sealed = store.with_keyring(ring(KEY_A));
        assert_readable(label, &sealed, &p, "harbor", "d1").await;
        assert_readable(label, &plain, &p, "harbor", "d1").await;

        let report = sealed.reseal_all().await.unwrap();
        assert_eq!(
            report,
            ResealReport {
                registries: 451,
                deployments: 1
            },
            "{label}"
        );
        for (table, key) in [
            ("registries", "harbor"),
            ("registries", "r449"),
            ("deployments", "d1"),
        ] {
            let raw = raw_body(&sealed, table, p.id, key).await.unwrap();
            assert!(raw.starts_with("cnpenc:v1:key-a:"), "{label} {table} {key}");
        }
        assert_readable(label, &sealed, &p, "harbor", "d1").await;
        // Idempotent.
        assert_eq!(sealed.reseal_all().await.unwrap(), ResealReport::default());

        // Now the keyless store cannot read them, and says why.
        let mut tx = plain.read(p.id).await.unwrap();
        let text = sealed_error(
            label,
            tx.get_registry("harbor").await.unwrap_err(),
            "registries",
            "harbor",
        );
        assert!(text.contains("no secret key"), "{label}: {text}");
        drop(tx);
        sealed_error(
            label,
            plain.load_fleet().await.unwrap_err(),
            "deployments",
            "d1",
        );
        sealed.close().await;
    }
}

#[tokio::test]
async fn rotation_keeps_everything_readable() {
    for (label, store, _dir) in fresh_stores().await {
        let with_a = store.clone().with_keyring(ring(KEY_A));
        let p = project(&with_a, "alpha").await;
        let q = project(&with_a, "beta").await;
        write_rows(&with_a, &p, "harbor", "d1").await;
        write_rows(&with_a, &q, "harbor", "d2").await;

        // Step 1: a new primary in front of the old key.
        let with_b_a = store
            .clone()
            .with_keyring(ring(&format!("{KEY_B}\n{KEY_A}")));
        assert_readable(label, &with_b_a, &p, "harbor", "d1").await;
        // New writes already use the new primary.
        write_rows(&with_b_a, &p, "quay", "d3").await;
        let raw = raw_body(&store, "registries", p.id, "quay").await.unwrap();
        assert!(raw.starts_with("cnpenc:v1:key-b:"), "{label}");

        // Step 2: reseal everything under the new primary.
        let report = with_b_a.reseal_all().await.unwrap();
        assert_eq!(
            report,
            ResealReport {
                registries: 2,
                deployments: 2
            },
            "{label}: only the rows still under key-a"
        );

        // Step 3: the old key is gone.
        let with_b = store.clone().with_keyring(ring(KEY_B));
        for (project, reg, dep) in [
            (&p, "harbor", "d1"),
            (&q, "harbor", "d2"),
            (&p, "quay", "d3"),
        ] {
            assert_readable(label, &with_b, project, reg, dep).await;
        }
        assert_eq!(with_b.reseal_all().await.unwrap(), ResealReport::default());

        // A server left on the old key alone cannot read the resealed rows, and says which key
        // it lacks.
        let mut tx = with_a.read(p.id).await.unwrap();
        let text = sealed_error(
            label,
            tx.get_registry("harbor").await.unwrap_err(),
            "registries",
            "harbor",
        );
        assert!(text.contains("key-b"), "{label}: {text}");
        drop(tx);
        store.close().await;
    }
}

#[tokio::test]
async fn a_wrong_key_is_a_clear_error_naming_the_row() {
    for (label, store, _dir) in fresh_stores().await {
        let with_a = store.clone().with_keyring(ring(KEY_A));
        let p = project(&with_a, "alpha").await;
        write_rows(&with_a, &p, "harbor", "d1").await;

        // Another key that happens to carry the same id: the values do not open.
        let impostor = ring(&format!("key-a {}", KEY_C.split_once(' ').unwrap().1));
        let wrong = store.clone().with_keyring(impostor);
        let mut tx = wrong.read(p.id).await.unwrap();
        let text = sealed_error(
            label,
            tx.get_registry("harbor").await.unwrap_err(),
            "registries",
            "harbor",
        );
        assert!(text.contains("altered"), "{label}: {text}");
        let e = tx
            .list_registries(&parse_query(Entity::Registry, "").unwrap())
            .await
            .unwrap_err();
        sealed_error(label, e, "registries", "harbor");
        let e = tx.list_deployment_rows().await.unwrap_err();
        sealed_error(label, e, "deployments", "d1");
        drop(tx);
        let text = sealed_error(
            label,
            wrong.load_fleet().await.unwrap_err(),
            "deployments",
            "d1",
        );
        assert!(text.contains(&p.id.to_string()), "{label}: {text}");

        // An unrelated key: the error names the key id that is missing.
        let other = store.clone().with_keyring(ring(KEY_C));
        let mut tx = other.read(p.id).await.unwrap();
        let text = sealed_error(
            label,
            tx.get_registry("harbor").await.unwrap_err(),
            "registries",
            "harbor",
        );
        assert!(text.contains("\"key-a\""), "{label}: {text}");
        drop(tx);
        // reseal_all cannot proceed either, and changes nothing.
        sealed_error(
            label,
            other.reseal_all().await.unwrap_err(),
            "registries",
            "harbor",
        );
        assert_readable(label, &with_a, &p, "harbor", "d1").await;
        store.close().await;
    }
}

#[tokio::test]
async fn a_sealed_body_copied_to_another_row_is_refused() {
    for (label, store, _dir) in fresh_stores().await {
        let store = store.with_keyring(ring(KEY_A));
        let p = project(&store, "alpha").await;
        let q = project(&store, "beta").await;
        write_rows(&store, &p, "harbor", "d1").await;
        write_rows(&store, &p, "quay", "d2").await;
        write_rows(&store, &q, "harbor", "d3").await;

        // Same project, another row.
        let body = raw_body(&store, "registries", p.id, "harbor")
            .await
            .unwrap();
        set_raw_body(&store, "registries", p.id, "quay", &body).await;
        let body = raw_body(&store, "deployments", p.id, "d1").await.unwrap();
        set_raw_body(&store, "deployments", p.id, "d2", &body).await;
        let mut tx = store.read(p.id).await.unwrap();
        let text = sealed_error(
            label,
            tx.get_registry("quay").await.unwrap_err(),
            "registries",
            "quay",
        );
        assert!(text.contains("another record"), "{label}: {text}");
        assert!(
            tx.get_registry("harbor").await.unwrap().is_some(),
            "{label}"
        );
        sealed_error(
            label,
            tx.list_deployment_rows().await.unwrap_err(),
            "deployments",
            "d2",
        );
        drop(tx);

        // Same row key, another project.
        let body = raw_body(&store, "registries", p.id, "harbor")
            .await
            .unwrap();
        set_raw_body(&store, "registries", q.id, "harbor", &body).await;
        let mut tx = store.read(q.id).await.unwrap();
        let text = sealed_error(
            label,
            tx.get_registry("harbor").await.unwrap_err(),
            "registries",
            "harbor",
        );
        assert!(text.contains(&q.id.to_string()), "{label}: {text}");
        drop(tx);
        store.close().await;
    }
}
