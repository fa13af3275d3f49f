//! Built-in identity storage conformance: the offline administrator recovery
//! ([`Store::reset_admin`]) on every backend from [`fresh_stores`] (SQLite always, PostgreSQL
//! when `CANOPY_TEST_DATABASE_URL` is set): the user is created when missing and given its role
//! back when it lost it, only its bootstrap tokens are revoked, other users and tokens stay.

use canopy_store::testing::fresh_stores;
use canopy_store::{Store, TokenRow};
use time::OffsetDateTime;
use uuid::Uuid;

fn token(kind: &str, user_id: Uuid) -> TokenRow {
    TokenRow {
        id: Uuid::new_v4(),
        token_hash: format!("hash-{}", Uuid::new_v4()),
        user_id,
        name: kind.into(),
        kind: kind.into(),
        create_time: OffsetDateTime::now_utc(),
        expire_time: None,
    }
}

async fn kinds_of(store: &Store, user: Uuid) -> Vec<String> {
    let mut k: Vec<String> = store
        .list_tokens(Some(user))
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.kind)
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn reset_admin_restores_the_administrator_and_only_its_bootstrap_tokens() {
    for (backend, store, _keep) in fresh_stores().await {
        eprintln!("backend {backend}");
        // Missing: created with the role, the new token stored.
        let first = token("bootstrap", Uuid::nil());
        let done = store
            .reset_admin("admin", "canopy-admin", first.clone())
            .await
            .unwrap();
        assert!(
            done.created && !done.role_restored && done.revoked == 0,
            "{done:?}"
        );
        let admin = store.user_by_name("admin").await.unwrap().unwrap();
        assert_eq!(admin.id, done.user_id);
        assert_eq!(admin.roles, ["canopy-admin"]);
        let (t, u) = store
            .token_by_hash(&first.token_hash)
            .await
            .unwrap()
            .expect("the new token is stored");
        assert_eq!((t.kind.as_str(), u.name.as_str()), ("bootstrap", "admin"));

        // Lost its role (kept another), has a session and an API token; another user too.
        store
            .update_user("admin", Some(&["shop_cat-r".to_string()]), None)
            .await
            .unwrap();
        store
            .insert_token(&token("session", admin.id))
            .await
            .unwrap();
        store.insert_token(&token("api", admin.id)).await.unwrap();
        let bob = store
            .create_user("bob", None, &["canopy-admin".to_string()])
            .await
            .unwrap()
            .unwrap();
        store
            .insert_token(&token("bootstrap", bob.id))
            .await
            .unwrap();

        let second = token("bootstrap", Uuid::nil());
        let done = store
            .reset_admin("admin", "canopy-admin", second.clone())
            .await
            .unwrap();
        assert!(
            !done.created && done.role_restored && done.revoked == 1,
            "{done:?}"
        );
        let admin = store.user_by_name("admin").await.unwrap().unwrap();
        assert_eq!(admin.roles, ["canopy-admin", "shop_cat-r"]);
        assert!(
            store
                .token_by_hash(&first.token_hash)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .token_by_hash(&second.token_hash)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            kinds_of(&store, admin.id).await,
            ["api", "bootstrap", "session"]
        );
        assert_eq!(
            kinds_of(&store, bob.id).await,
            ["bootstrap"],
            "other users untouched"
        );

        // Nothing to restore: only the token is replaced.
        let done = store
            .reset_admin("admin", "canopy-admin", token("bootstrap", Uuid::nil()))
            .await
            .unwrap();
        assert!(
            !done.created && !done.role_restored && done.revoked == 1,
            "{done:?}"
        );
    }
}
