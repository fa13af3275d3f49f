//! The storage conformance suite: every test runs against every backend from
//! [`fresh_stores`] (SQLite always; PostgreSQL when `CANOPY_TEST_DATABASE_URL` is set, which CI
//! requires), each on a fresh database. A backend passes only if it behaves exactly like the
//! others, so the app layer never needs to know which one it runs on.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use canopy_core::catalog::{
    Application, ApplicationReference, Artifact, ArtifactReference, DeploymentPackage,
    DeploymentProfile, Kind, Profile, Registry,
};
use canopy_core::list::{Entity, Field, FilterTerm, ListQuery, parse_query};
use canopy_core::names::ProjectName;
use canopy_store::testing::fresh_stores;
use canopy_store::{Backend, DisplayNameScope, Project, Store, StoreError, StoredUploadFile};

/// Runs `$body` (an async block using `$label: &str` and `$store: &Store`) on every backend.
macro_rules! on_every_backend {
    (|$label:ident, $store:ident| $body:block) => {{
        let stores = fresh_stores().await;
        assert!(!stores.is_empty());
        for (label, store, _dir) in stores {
            let $label: &str = label;
            let $store: &Store = &store;
            $body;
            store.close().await;
        }
    }};
}

async fn project(store: &Store, name: &str) -> Project {
    store
        .ensure_project(&ProjectName::try_from(name).unwrap())
        .await
        .unwrap()
}

fn registry(name: &str, display: &str) -> Registry {
    Registry {
        name: name.into(),
        display_name: display.into(),
        description: format!("registry {name}"),
        root_url: format!("https://{name}.example.com"),
        username: Some("robot".into()),
        auth_token: Some("s3cret".into()),
        registry_type: "HELM".into(),
        ..Default::default()
    }
}

fn app(name: &str, version: &str, display: &str) -> Application {
    Application {
        name: name.into(),
        version: version.into(),
        display_name: display.into(),
        description: format!("the {name} app"),
        chart_name: name.into(),
        chart_version: version.into(),
        helm_registry_name: "charts".into(),
        profiles: vec![Profile {
            name: "default".into(),
            chart_values: "replicas: 1\n".into(),
            ..Default::default()
        }],
        default_profile_name: "default".into(),
        ..Default::default()
    }
}

fn package(
    name: &str,
    version: &str,
    apps: &[(&str, &str)],
    artifacts: &[&str],
) -> DeploymentPackage {
    DeploymentPackage {
        name: name.into(),
        version: version.into(),
        display_name: format!("Package {name}"),
        application_references: apps
            .iter()
            .map(|(n, v)| ApplicationReference {
                name: (*n).into(),
                version: (*v).into(),
            })
            .collect(),
        is_visible: true,
        profiles: vec![DeploymentProfile {
            name: "default".into(),
            ..Default::default()
        }],
        default_profile_name: "default".into(),
        artifacts: artifacts
            .iter()
            .map(|a| ArtifactReference {
                name: (*a).into(),
                purpose: "icon".into(),
            })
            .collect(),
        ..Default::default()
    }
}

fn artifact(name: &str, display: &str) -> Artifact {
    Artifact {
        name: name.into(),
        display_name: display.into(),
        description: String::new(),
        mime_type: "image/png".into(),
        artifact: vec![0x89, b'P', b'N', b'G', 0, 255],
        ..Default::default()
    }
}

fn query(entity: Entity, raw: &str) -> ListQuery {
    parse_query(entity, raw).unwrap_or_else(|e| panic!("bad test query {raw:?}: {e}"))
}

fn names<T>(items: &[T], key: impl Fn(&T) -> String) -> Vec<String> {
    items.iter().map(key).collect()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn projects_are_created_once_and_found_by_name() {
    on_every_backend!(|label, store| {
        let a = project(store, "alpha").await;
        let again = project(store, "alpha").await;
        assert_eq!(a, again, "{label}: ensure_project is idempotent");
        let b = project(store, "beta").await;
        assert_ne!(a.id, b.id, "{label}");
        assert_eq!(
            store.project_by_name("alpha").await.unwrap(),
            Some(a.clone()),
            "{label}"
        );
        assert_eq!(
            store.project_by_name("nope").await.unwrap(),
            None,
            "{label}"
        );
        let all = store.list_projects().await.unwrap();
        assert_eq!(all, vec![a, b], "{label}: listed by name");
        let ghost = canopy_store::ProjectId(uuid::Uuid::new_v4());
        assert!(
            matches!(store.write(ghost).await, Err(StoreError::NoSuchProject(_))),
            "{label}"
        );
        assert!(
            matches!(store.read(ghost).await, Err(StoreError::NoSuchProject(_))),
            "{label}"
        );
    });
}

#[tokio::test]
async fn backend_is_reported_and_bad_urls_are_refused() {
    on_every_backend!(|label, store| {
        let expect = if label == "sqlite" {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        assert_eq!(store.backend(), expect);
    });
    assert!(matches!(
        Store::connect("mysql://localhost/x").await,
        Err(StoreError::UnsupportedUrl(_))
    ));
}

#[tokio::test]
async fn sqlite_file_is_created_and_reopened_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub dir#1").join("canopy.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let store = Store::open_sqlite(&path).await.unwrap();
    let p = project(&store, "keep").await;
    let mut tx = store.write(p.id).await.unwrap();
    tx.put_registry(&registry("charts", "Charts"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    store.close().await;
    assert!(path.exists());

    let url = format!("sqlite://{}", dir.path().join("other.db").display());
    let other = Store::connect(&url).await.unwrap();
    other.close().await;

    let store = Store::open_sqlite(&path).await.unwrap();
    assert_eq!(
        store.project_by_name("keep").await.unwrap(),
        Some(p.clone())
    );
    let mut tx = store.read(p.id).await.unwrap();
    assert!(tx.get_registry("charts").await.unwrap().is_some());
    drop(tx);
    store.close().await;
}

#[tokio::test]
async fn put_get_replace_keeps_create_time_and_bumps_update_time() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let mut tx = store.write(p.id).await.unwrap();
        let first = tx
            .put_registry(&registry("charts", "Charts"))
            .await
            .unwrap();
        let created = first.create_time.expect("createTime set");
        assert_eq!(
            first.update_time,
            Some(created),
            "{label}: first put: update == create"
        );
        assert_eq!(
            tx.get_registry("charts").await.unwrap(),
            Some(first.clone()),
            "{label}"
        );
        tx.commit().await.unwrap();

        let mut tx = store.write(p.id).await.unwrap();
        let mut changed = registry("charts", "Charts v2");
        changed.create_time = Some(time::macros::datetime!(2000-01-01 00:00 UTC)); // ignored
        let second = tx.put_registry(&changed).await.unwrap();
        assert_eq!(
            second.create_time,
            Some(created),
            "{label}: createTime kept"
        );
        assert!(
            second.update_time.unwrap() > first.update_time.unwrap(),
            "{label}: updateTime bumped"
        );
        tx.commit().await.unwrap();

        let mut tx = store.read(p.id).await.unwrap();
        let got = tx.get_registry("charts").await.unwrap().unwrap();
        assert_eq!(got, second, "{label}: get returns what put returned");
        assert_eq!(got.display_name, "Charts v2");
        assert_eq!(
            got.auth_token.as_deref(),
            Some("s3cret"),
            "{label}: secrets stored"
        );
        assert_eq!(tx.get_registry("missing").await.unwrap(), None);
    });
}

#[tokio::test]
async fn applications_packages_and_artifacts_round_trip() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let mut tx = store.write(p.id).await.unwrap();

        let a1 = tx
            .put_application(&app("web", "1.0.0", "Web"))
            .await
            .unwrap();
        let a2 = tx
            .put_application(&app("web", "1.1.0", "Web"))
            .await
            .unwrap();
        let profile = &a1.profiles[0];
        assert_eq!(
            profile.create_time, a1.create_time,
            "{label}: profile times follow the app"
        );
        assert_eq!(profile.update_time, a1.update_time, "{label}");
        assert_eq!(
            tx.get_application("web", "1.0.0").await.unwrap(),
            Some(a1.clone()),
            "{label}"
        );
        assert_eq!(
            tx.get_application("web", "9.9.9").await.unwrap(),
            None,
            "{label}"
        );
        assert_eq!(
            tx.application_versions("web").await.unwrap(),
            vec![a1.clone(), a2.clone()],
            "{label}"
        );

        let mut pkg = package("shop", "1.0.0", &[("web", "1.0.0")], &["icon"]);
        pkg.kind = Kind::Extension;
        let stored = tx.put_package(&pkg).await.unwrap();
        assert_eq!(
            stored.profiles[0].create_time, stored.create_time,
            "{label}"
        );
        assert_eq!(
            tx.get_package("shop", "1.0.0").await.unwrap(),
            Some(stored.clone()),
            "{label}"
        );
        assert_eq!(
            tx.package_versions("shop").await.unwrap(),
            vec![stored.clone()],
            "{label}"
        );

        let art = tx.put_artifact(&artifact("icon", "Icon")).await.unwrap();
        assert_eq!(
            tx.get_artifact("icon").await.unwrap(),
            Some(art.clone()),
            "{label}"
        );
        assert_eq!(
            art.artifact,
            vec![0x89, b'P', b'N', b'G', 0, 255],
            "{label}: bytes intact"
        );
        tx.commit().await.unwrap();

        let mut tx = store.write(p.id).await.unwrap();
        assert!(
            tx.delete_application("web", "1.1.0").await.unwrap(),
            "{label}"
        );
        assert!(
            !tx.delete_application("web", "1.1.0").await.unwrap(),
            "{label}: already gone"
        );
        assert!(tx.delete_artifact("icon").await.unwrap(), "{label}");
        assert!(tx.delete_package("shop", "1.0.0").await.unwrap(), "{label}");
        assert!(!tx.delete_registry("nothing").await.unwrap(), "{label}");
        tx.commit().await.unwrap();

        let mut tx = store.read(p.id).await.unwrap();
        assert_eq!(
            tx.application_versions("web").await.unwrap(),
            vec![a1],
            "{label}"
        );
        assert_eq!(tx.get_artifact("icon").await.unwrap(), None, "{label}");
        assert_eq!(
            tx.get_package("shop", "1.0.0").await.unwrap(),
            None,
            "{label}"
        );
    });
}

/// 25 applications `app-00`..`app-24`, display names alternating in case.
async fn seed_apps(store: &Store, p: &Project) {
    let mut tx = store.write(p.id).await.unwrap();
    for i in 0..25 {
        let mut a = app(
            &format!("app-{i:02}"),
            "1.0.0",
            &format!("{} {}", if i % 2 == 0 { "Even" } else { "odd" }, i),
        );
        a.kind = match i % 5 {
            0 => Kind::Addon,
            1 => Kind::Extension,
            _ => Kind::Normal,
        };
        tx.put_application(&a).await.unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn lists_page_with_total_elements() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        seed_apps(store, &p).await;
        let mut tx = store.read(p.id).await.unwrap();
        let mut seen = Vec::new();
        for offset in [0, 10, 20] {
            let (page, total) = tx
                .list_applications(&query(
                    Entity::Application,
                    &format!("pageSize=10&offset={offset}"),
                ))
                .await
                .unwrap();
            assert_eq!(total, 25, "{label}: totalElements at offset {offset}");
            assert_eq!(page.len(), if offset == 20 { 5 } else { 10 }, "{label}");
            seen.extend(names(&page, |a| a.name.clone()));
        }
        let expected: Vec<String> = (0..25).map(|i| format!("app-{i:02}")).collect();
        assert_eq!(
            seen, expected,
            "{label}: pages in name order, no overlap, nothing skipped"
        );

        let (page, total) = tx
            .list_applications(&query(Entity::Application, "pageSize=10&offset=100"))
            .await
            .unwrap();
        assert!(page.is_empty(), "{label}");
        assert_eq!(total, 25, "{label}: total even past the end");

        let (page, total) = tx.list_applications(&ListQuery::default()).await.unwrap();
        assert_eq!((page.len(), total), (20, 25), "{label}: default page size");
    });
}

#[tokio::test]
async fn lists_order_by_several_fields() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let mut tx = store.write(p.id).await.unwrap();
        for (name, version, display) in [
            ("b", "1.0.0", "Zeta"),
            ("a", "2.0.0", "alpha"),
            ("a", "1.0.0", "alpha"),
            ("c", "1.0.0", "Beta"),
        ] {
            tx.put_application(&app(name, version, display))
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();

        let mut tx = store.read(p.id).await.unwrap();
        let key = |a: &Application| format!("{}:{}", a.name, a.version);
        let (page, _) = tx
            .list_applications(&query(
                Entity::Application,
                "orderBy=name%20desc,version%20desc",
            ))
            .await
            .unwrap();
        assert_eq!(
            names(&page, key),
            ["c:1.0.0", "b:1.0.0", "a:2.0.0", "a:1.0.0"],
            "{label}"
        );

        // Display names order case-insensitively; ties broken by name, version.
        let (page, _) = tx
            .list_applications(&query(Entity::Application, "orderBy=displayName"))
            .await
            .unwrap();
        assert_eq!(
            names(&page, key),
            ["a:1.0.0", "a:2.0.0", "c:1.0.0", "b:1.0.0"],
            "{label}"
        );

        let (page, _) = tx
            .list_applications(&query(
                Entity::Application,
                "orderBy=displayName%20desc,version%20desc",
            ))
            .await
            .unwrap();
        assert_eq!(
            names(&page, key),
            ["b:1.0.0", "c:1.0.0", "a:2.0.0", "a:1.0.0"],
            "{label}"
        );

        let (page, _) = tx
            .list_applications(&query(Entity::Application, "orderBy=createTime%20desc"))
            .await
            .unwrap();
        assert_eq!(
            names(&page, key),
            ["c:1.0.0", "a:1.0.0", "a:2.0.0", "b:1.0.0"],
            "{label}: newest first"
        );
    });
}

#[tokio::test]
async fn list_filters_or_terms_wildcards_and_case() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        seed_apps(store, &p).await;
        let mut tx = store.read(p.id).await.unwrap();
        let mut names_for = async |raw: &str| -> (Vec<String>, u64) {
            let (page, total) = tx
                .list_applications(&query(Entity::Application, &format!("pageSize=100&{raw}")))
                .await
                .unwrap_or_else(|e| panic!("{label}: {raw}: {e}"));
            (names(&page, |a| a.name.clone()), total)
        };

        let (n, total) = names_for("filter=name%3Dapp-1").await;
        assert_eq!(total, 10, "{label}: substring match: {n:?}");
        let (n, _) = names_for("filter=name%3Dapp-03%20OR%20name%3Dapp-17").await;
        assert_eq!(n, ["app-03", "app-17"], "{label}: OR terms");
        let (n, _) = names_for("filter=displayName%3DEVEN%202").await;
        assert_eq!(
            n,
            ["app-02", "app-20", "app-22", "app-24"],
            "{label}: case-insensitive"
        );
        let (n, _) = names_for("filter=displayName%3Dodd*3").await;
        assert_eq!(n, ["app-03", "app-13", "app-23"], "{label}: * wildcard");
        let (n, _) = names_for("filter=displayName%3D%22even%201%22%20OR%20name%3Dapp-0*").await;
        assert_eq!(n.len(), 10 + 5, "{label}: quoted value OR wildcard: {n:?}");
        let (_, total) = names_for("filter=description%3D*").await;
        assert_eq!(total, 25, "{label}: lone * matches all");
        let (_, total) = names_for("filter=createTime%3D20").await;
        assert_eq!(total, 25, "{label}: timestamps filter as text");
        let (_, total) = names_for("filter=createTime%3Dt").await;
        assert_eq!(total, 25, "{label}: ... case-insensitively");
        let (n, _) = names_for("filter=chartName%3Dapp-24").await;
        assert_eq!(n, ["app-24"], "{label}");
    });
}

#[tokio::test]
async fn list_filters_treat_sql_wildcards_and_injection_literally() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let mut tx = store.write(p.id).await.unwrap();
        for (name, display) in [
            ("pct", "100% sure"),
            ("under", "a_b"),
            ("plain", "100 sure, axb"),
            ("slash", "back\\slash"),
        ] {
            tx.put_artifact(&artifact(name, display)).await.unwrap();
        }
        tx.commit().await.unwrap();

        let mut tx = store.read(p.id).await.unwrap();
        let mut list = async |raw: &str| -> Vec<String> {
            let (page, total) = tx
                .list_artifacts(&query(Entity::Artifact, raw))
                .await
                .unwrap_or_else(|e| panic!("{label}: {raw}: {e}"));
            assert_eq!(total as usize, page.len(), "{label}: {raw}");
            names(&page, |a| a.name.clone())
        };
        assert_eq!(
            list("filter=displayName%3D100%25").await,
            ["pct"],
            "{label}: % is literal"
        );
        assert_eq!(
            list("filter=displayName%3Da_b").await,
            ["under"],
            "{label}: _ is literal"
        );
        assert_eq!(
            list("filter=displayName%3Dk%5Cs").await,
            ["slash"],
            "{label}: \\ is literal"
        );
        // Built by hand: the query parser would split these values at their ` OR `.
        for evil in [
            "' OR 1=1 --",
            "'); DROP TABLE artifacts; --",
            "\" OR \"\"=\"",
            "\\' OR 'x'='x",
            "%' OR name LIKE '%",
        ] {
            let q = ListQuery {
                filter: vec![
                    FilterTerm {
                        field: Field::Name,
                        value: evil.into(),
                    },
                    FilterTerm {
                        field: Field::DisplayName,
                        value: evil.into(),
                    },
                ],
                ..Default::default()
            };
            let (page, total) = tx
                .list_artifacts(&q)
                .await
                .unwrap_or_else(|e| panic!("{label}: {evil:?}: {e}"));
            assert!(
                page.is_empty() && total == 0,
                "{label}: {evil:?} matches nothing"
            );
        }
        let mut list = async |raw: &str| -> Vec<String> {
            let (page, _) = tx
                .list_artifacts(&query(Entity::Artifact, raw))
                .await
                .unwrap();
            names(&page, |a| a.name.clone())
        };
        assert_eq!(list("orderBy=name").await.len(), 4, "{label}: table intact");
    });
}

#[tokio::test]
async fn list_filters_by_kind() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        seed_apps(store, &p).await;
        let mut tx = store.write(p.id).await.unwrap();
        let mut ext = package("ext", "1.0.0", &[], &[]);
        ext.kind = Kind::Extension;
        tx.put_package(&ext).await.unwrap();
        tx.put_package(&package("plain", "1.0.0", &[], &[]))
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let mut tx = store.read(p.id).await.unwrap();
        let (_, total) = tx
            .list_applications(&query(Entity::Application, "kinds=KIND_ADDON"))
            .await
            .unwrap();
        assert_eq!(total, 5, "{label}");
        let (page, total) = tx
            .list_applications(&query(
                Entity::Application,
                "kinds=KIND_ADDON,KIND_EXTENSION&pageSize=100",
            ))
            .await
            .unwrap();
        assert_eq!(total, 10, "{label}");
        assert!(page.iter().all(|a| a.kind != Kind::Normal), "{label}");
        let (_, total) = tx
            .list_applications(&query(Entity::Application, "kinds=KIND_NORMAL"))
            .await
            .unwrap();
        assert_eq!(total, 15, "{label}");
        let (page, _) = tx
            .list_packages(&query(Entity::DeploymentPackage, "kinds=KIND_NORMAL"))
            .await
            .unwrap();
        assert_eq!(names(&page, |p| p.name.clone()), ["plain"], "{label}");
        let (page, _) = tx.list_packages(&ListQuery::default()).await.unwrap();
        assert_eq!(page.len(), 2, "{label}: no kinds = all");
    });
}

#[tokio::test]
async fn list_refuses_fields_the_entity_lacks() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let mut tx = store.read(p.id).await.unwrap();
        // Not reachable through parse_query, but a hand-built query must fail cleanly.
        let mut q = query(Entity::Application, "orderBy=chartName");
        assert!(tx.list_applications(&q).await.is_ok(), "{label}");
        let err = tx.list_registries(&q).await.unwrap_err();
        assert!(
            matches!(err, StoreError::UnsupportedListField { .. }),
            "{label}: {err}"
        );
        q.order_by.clear();
        q.filter = query(Entity::Artifact, "filter=mimeType%3Dpng").filter;
        assert!(matches!(
            tx.list_packages(&q).await,
            Err(StoreError::UnsupportedListField { .. })
        ));
        assert_eq!(tx.list_artifacts(&q).await.unwrap().1, 0, "{label}");
    });
}

#[tokio::test]
async fn registries_and_artifacts_list_with_their_own_fields() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let mut tx = store.write(p.id).await.unwrap();
        tx.put_registry(&registry("charts", "Charts"))
            .await
            .unwrap();
        let mut images = registry("images", "Images");
        images.registry_type = "IMAGE".into();
        tx.put_registry(&images).await.unwrap();
        let mut svg = artifact("logo", "Logo");
        svg.mime_type = "image/svg+xml".into();
        tx.put_artifact(&svg).await.unwrap();
        tx.put_artifact(&artifact("icon", "Icon")).await.unwrap();
        tx.commit().await.unwrap();

        let mut tx = store.read(p.id).await.unwrap();
        let (page, total) = tx
            .list_registries(&query(Entity::Registry, "filter=type%3Dimage"))
            .await
            .unwrap();
        assert_eq!(
            (names(&page, |r| r.name.clone()), total),
            (vec!["images".to_string()], 1),
            "{label}"
        );
        let (page, _) = tx
            .list_registries(&query(Entity::Registry, "orderBy=type%20desc"))
            .await
            .unwrap();
        assert_eq!(
            names(&page, |r| r.name.clone()),
            ["images", "charts"],
            "{label}"
        );
        let (page, _) = tx
            .list_artifacts(&query(Entity::Artifact, "filter=mimeType%3DSVG"))
            .await
            .unwrap();
        assert_eq!(names(&page, |a| a.name.clone()), ["logo"], "{label}");
    });
}

#[tokio::test]
async fn display_name_owner_is_case_insensitive_and_excludes_self() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let mut tx = store.write(p.id).await.unwrap();
        tx.put_registry(&registry("charts", "My Charts"))
            .await
            .unwrap();
        tx.put_application(&app("web", "1.0.0", "Web Shop"))
            .await
            .unwrap();
        tx.put_application(&app("web", "2.0.0", "Web Shop"))
            .await
            .unwrap();
        tx.put_application(&app("quiet", "1.0.0", ""))
            .await
            .unwrap();
        tx.put_package(&package("shop", "1.0.0", &[], &[]))
            .await
            .unwrap();
        tx.put_artifact(&artifact("icon", "Ünïcode Icon"))
            .await
            .unwrap();

        use DisplayNameScope::*;
        let owner = tx
            .display_name_owner(Registry, "my charts", "other")
            .await
            .unwrap();
        assert_eq!(owner.as_deref(), Some("charts"), "{label}");
        assert_eq!(
            tx.display_name_owner(Registry, "MY CHARTS", "charts")
                .await
                .unwrap(),
            None,
            "{label}: self"
        );
        assert_eq!(
            tx.display_name_owner(Registry, "My Chart", "x")
                .await
                .unwrap(),
            None,
            "{label}: exact"
        );
        assert_eq!(
            tx.display_name_owner(Application, "WEB SHOP", "api")
                .await
                .unwrap()
                .as_deref(),
            Some("web"),
            "{label}"
        );
        assert_eq!(
            tx.display_name_owner(Application, "web shop", "web")
                .await
                .unwrap(),
            None,
            "{label}: all versions"
        );
        assert_eq!(
            tx.display_name_owner(Application, "", "x").await.unwrap(),
            None,
            "{label}: empty never conflicts"
        );
        assert_eq!(
            tx.display_name_owner(Application, "   ", "x")
                .await
                .unwrap(),
            None,
            "{label}"
        );
        assert_eq!(
            tx.display_name_owner(DeploymentPackage, "package SHOP", "x")
                .await
                .unwrap()
                .as_deref(),
            Some("shop"),
            "{label}"
        );
        assert_eq!(
            tx.display_name_owner(Artifact, "ünïcode icon", "x")
                .await
                .unwrap()
                .as_deref(),
            Some("icon"),
            "{label}: Unicode case folding"
        );
        assert_eq!(
            tx.display_name_owner(Artifact, "My Charts", "x")
                .await
                .unwrap(),
            None,
            "{label}: scoped by type"
        );
    });
}

#[tokio::test]
async fn registry_users_lists_helm_and_image_uses() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let mut tx = store.write(p.id).await.unwrap();
        let mut both = app("both", "1.0.0", "");
        both.helm_registry_name = "shared".into();
        both.image_registry_name = "shared".into();
        let mut helm_only = app("helm-only", "1.0.0", "");
        helm_only.helm_registry_name = "shared".into();
        let mut image_only = app("image-only", "2.0.0", "");
        image_only.image_registry_name = "shared".into();
        for a in [both, helm_only, image_only, app("unrelated", "1.0.0", "")] {
            tx.put_application(&a).await.unwrap();
        }
        let users = tx.registry_users("shared").await.unwrap();
        let expected: Vec<(String, String, &str)> = vec![
            ("both".into(), "1.0.0".into(), "helm"),
            ("both".into(), "1.0.0".into(), "image"),
            ("helm-only".into(), "1.0.0".into(), "helm"),
            ("image-only".into(), "2.0.0".into(), "image"),
        ];
        assert_eq!(users, expected, "{label}");
        assert!(
            tx.registry_users("nobody").await.unwrap().is_empty(),
            "{label}"
        );
    });
}

#[tokio::test]
async fn package_references_follow_put_and_delete() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let mut tx = store.write(p.id).await.unwrap();
        let v1 = tx
            .put_package(&package(
                "shop",
                "1.0.0",
                &[("web", "1.0.0"), ("db", "2.0.0"), ("web", "1.0.0")],
                &["icon", "icon"],
            ))
            .await
            .unwrap();
        tx.put_package(&package("shop", "1.1.0", &[("web", "1.0.0")], &["logo"]))
            .await
            .unwrap();

        let users: Vec<(String, String)> = tx
            .packages_using_application("web", "1.0.0")
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.version))
            .collect();
        assert_eq!(
            users,
            [
                ("shop".into(), "1.0.0".into()),
                ("shop".into(), "1.1.0".into())
            ],
            "{label}"
        );
        let db_users = tx.packages_using_application("db", "2.0.0").await.unwrap();
        assert_eq!(db_users, vec![v1], "{label}: whole packages returned");
        assert!(
            tx.packages_using_application("web", "9.0.0")
                .await
                .unwrap()
                .is_empty(),
            "{label}"
        );
        assert_eq!(
            tx.packages_using_artifact("icon").await.unwrap(),
            [("shop".into(), "1.0.0".into())],
            "{label}"
        );

        // Replacing the package replaces its references.
        tx.put_package(&package("shop", "1.0.0", &[("api", "1.0.0")], &[]))
            .await
            .unwrap();
        assert!(
            tx.packages_using_application("db", "2.0.0")
                .await
                .unwrap()
                .is_empty(),
            "{label}"
        );
        assert_eq!(
            tx.packages_using_application("api", "1.0.0")
                .await
                .unwrap()
                .len(),
            1,
            "{label}"
        );
        assert!(
            tx.packages_using_artifact("icon").await.unwrap().is_empty(),
            "{label}"
        );

        assert!(tx.delete_package("shop", "1.1.0").await.unwrap());
        assert!(
            tx.packages_using_artifact("logo").await.unwrap().is_empty(),
            "{label}"
        );
        assert_eq!(
            tx.packages_using_application("web", "1.0.0")
                .await
                .unwrap()
                .len(),
            0,
            "{label}: delete drops references"
        );
        tx.commit().await.unwrap();
    });
}

#[tokio::test]
async fn dropped_transaction_leaves_nothing() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let mut tx = store.write(p.id).await.unwrap();
        tx.put_registry(&registry("charts", "")).await.unwrap();
        tx.put_application(&app("web", "1.0.0", "")).await.unwrap();
        tx.put_package(&package("shop", "1.0.0", &[("web", "1.0.0")], &["icon"]))
            .await
            .unwrap();
        let session = tx.create_upload_session().await.unwrap();
        drop(tx); // no commit

        let mut tx = store.read(p.id).await.unwrap();
        assert_eq!(tx.get_registry("charts").await.unwrap(), None, "{label}");
        assert_eq!(
            tx.get_application("web", "1.0.0").await.unwrap(),
            None,
            "{label}"
        );
        assert_eq!(
            tx.get_package("shop", "1.0.0").await.unwrap(),
            None,
            "{label}"
        );
        assert!(
            tx.packages_using_application("web", "1.0.0")
                .await
                .unwrap()
                .is_empty(),
            "{label}"
        );
        assert!(!tx.upload_session_exists(session).await.unwrap(), "{label}");
        drop(tx);

        // The next writer is not blocked by the abandoned one.
        let mut tx = store.write(p.id).await.unwrap();
        tx.put_registry(&registry("charts", "")).await.unwrap();
        tx.commit().await.unwrap();
    });
}

#[tokio::test]
async fn multi_entity_write_is_all_or_nothing() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        // Something committed before, which the failed change must not disturb.
        let mut tx = store.write(p.id).await.unwrap();
        let before = tx
            .put_application(&app("web", "1.0.0", "Before"))
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let mut tx = store.write(p.id).await.unwrap();
        tx.put_application(&app("web", "1.0.0", "After"))
            .await
            .unwrap();
        tx.put_application(&app("api", "1.0.0", "")).await.unwrap();
        tx.put_artifact(&artifact("icon", "")).await.unwrap();
        tx.put_package(&package(
            "shop",
            "1.0.0",
            &[("web", "1.0.0"), ("api", "1.0.0")],
            &["icon"],
        ))
        .await
        .unwrap();
        // Visible inside the transaction...
        assert_eq!(
            tx.list_applications(&ListQuery::default()).await.unwrap().1,
            2,
            "{label}"
        );
        drop(tx); // ...and gone without commit.

        let mut tx = store.read(p.id).await.unwrap();
        assert_eq!(
            tx.get_application("web", "1.0.0").await.unwrap(),
            Some(before),
            "{label}"
        );
        assert_eq!(
            tx.get_application("api", "1.0.0").await.unwrap(),
            None,
            "{label}"
        );
        assert_eq!(tx.get_artifact("icon").await.unwrap(), None, "{label}");
        assert_eq!(
            tx.get_package("shop", "1.0.0").await.unwrap(),
            None,
            "{label}"
        );
        assert_eq!(
            tx.list_packages(&ListQuery::default()).await.unwrap().1,
            0,
            "{label}"
        );
    });
}

#[tokio::test]
async fn read_transactions_refuse_writes() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let mut tx = store.read(p.id).await.unwrap();
        assert!(
            matches!(
                tx.put_registry(&registry("r", "")).await,
                Err(StoreError::ReadOnly)
            ),
            "{label}"
        );
        assert!(
            matches!(
                tx.delete_application("a", "1").await,
                Err(StoreError::ReadOnly)
            ),
            "{label}"
        );
        assert!(
            matches!(tx.create_upload_session().await, Err(StoreError::ReadOnly)),
            "{label}"
        );
        assert_eq!(tx.project(), p.id);
    });
}

#[tokio::test]
async fn projects_are_isolated() {
    on_every_backend!(|label, store| {
        let red = project(store, "red").await;
        let blue = project(store, "blue").await;
        for (p, display) in [(&red, "Red"), (&blue, "Blue")] {
            let mut tx = store.write(p.id).await.unwrap();
            tx.put_registry(&registry("charts", display)).await.unwrap();
            tx.put_application(&app("web", "1.0.0", display))
                .await
                .unwrap();
            tx.put_artifact(&artifact("icon", display)).await.unwrap();
            tx.put_package(&package("shop", "1.0.0", &[("web", "1.0.0")], &["icon"]))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let mut tx = store.write(red.id).await.unwrap();
        tx.put_application(&app("only-red", "1.0.0", ""))
            .await
            .unwrap();
        assert!(tx.delete_package("shop", "1.0.0").await.unwrap());
        let red_session = tx.create_upload_session().await.unwrap();
        tx.commit().await.unwrap();

        let mut tx = store.read(blue.id).await.unwrap();
        assert_eq!(
            tx.get_registry("charts")
                .await
                .unwrap()
                .unwrap()
                .display_name,
            "Blue",
            "{label}"
        );
        assert_eq!(
            tx.get_application("web", "1.0.0")
                .await
                .unwrap()
                .unwrap()
                .display_name,
            "Blue",
            "{label}"
        );
        assert_eq!(
            tx.get_application("only-red", "1.0.0").await.unwrap(),
            None,
            "{label}"
        );
        assert!(
            tx.get_package("shop", "1.0.0").await.unwrap().is_some(),
            "{label}: red's delete didn't touch blue"
        );
        assert_eq!(
            tx.packages_using_application("web", "1.0.0")
                .await
                .unwrap()
                .len(),
            1,
            "{label}"
        );
        assert_eq!(
            tx.packages_using_artifact("icon").await.unwrap().len(),
            1,
            "{label}"
        );
        assert_eq!(
            tx.list_applications(&ListQuery::default()).await.unwrap().1,
            1,
            "{label}"
        );
        assert_eq!(
            tx.display_name_owner(DisplayNameScope::Application, "red", "x")
                .await
                .unwrap(),
            None,
            "{label}"
        );
        assert_eq!(
            tx.registry_users("charts").await.unwrap().len(),
            1,
            "{label}"
        );
        assert!(
            !tx.upload_session_exists(red_session).await.unwrap(),
            "{label}"
        );
        assert!(matches!(
            tx.upload_session_bytes(red_session).await,
            Err(StoreError::NoSuchUploadSession(_))
        ));
        drop(tx);

        let mut tx = store.read(red.id).await.unwrap();
        assert_eq!(
            tx.list_applications(&ListQuery::default()).await.unwrap().1,
            2,
            "{label}"
        );
        assert!(
            tx.packages_using_artifact("icon").await.unwrap().is_empty(),
            "{label}"
        );
    });
}

#[tokio::test]
async fn upload_sessions_hold_files_until_taken() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let other = project(store, "other").await;
        let mut tx = store.write(p.id).await.unwrap();
        let session = tx.create_upload_session().await.unwrap();
        assert!(tx.upload_session_exists(session).await.unwrap(), "{label}");
        assert_eq!(
            tx.upload_session_bytes(session).await.unwrap(),
            0,
            "{label}"
        );
        tx.commit().await.unwrap();

        let files: Vec<StoredUploadFile> = ["b.yaml", "a.yaml", "c.bin"]
            .iter()
            .enumerate()
            .map(|(i, name)| StoredUploadFile {
                name: (*name).into(),
                content: vec![i as u8; 10 * (i + 1)],
            })
            .collect();
        for (i, f) in files.iter().enumerate() {
            let mut tx = store.write(p.id).await.unwrap();
            assert_eq!(
                tx.add_upload_file(session, f).await.unwrap(),
                i as u32 + 1,
                "{label}"
            );
            tx.commit().await.unwrap();
        }

        let mut tx = store.write(other.id).await.unwrap();
        assert!(
            !tx.upload_session_exists(session).await.unwrap(),
            "{label}: scoped by project"
        );
        assert!(matches!(
            tx.add_upload_file(session, &files[0]).await,
            Err(StoreError::NoSuchUploadSession(_))
        ));
        assert!(matches!(
            tx.take_upload_files(session).await,
            Err(StoreError::NoSuchUploadSession(_))
        ));
        drop(tx);

        let mut tx = store.write(p.id).await.unwrap();
        assert_eq!(
            tx.upload_session_bytes(session).await.unwrap(),
            60,
            "{label}"
        );
        assert_eq!(
            tx.take_upload_files(session).await.unwrap(),
            files,
            "{label}: upload order"
        );
        assert!(
            !tx.upload_session_exists(session).await.unwrap(),
            "{label}: taken = deleted"
        );
        tx.commit().await.unwrap();

        // Abandoned sessions expire.
        let mut tx = store.write(p.id).await.unwrap();
        let stale = tx.create_upload_session().await.unwrap();
        tx.add_upload_file(stale, &files[0]).await.unwrap();
        tx.commit().await.unwrap();
        let cutoff = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
        assert_eq!(
            store.expire_upload_sessions(cutoff).await.unwrap(),
            1,
            "{label}"
        );
        let mut tx = store.read(p.id).await.unwrap();
        assert!(!tx.upload_session_exists(stale).await.unwrap(), "{label}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_a_project_serialize() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let mut tx = store.write(p.id).await.unwrap();
        tx.put_registry(&registry("counter", "0")).await.unwrap();
        tx.commit().await.unwrap();

        // Two tasks each increment a counter 20 times by read-modify-write. Without
        // serialization updates would be lost (or one backend would report a conflict).
        const ROUNDS: usize = 20;
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let store = store.clone();
            let id = p.id;
            tasks.push(tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    let mut tx = store.write(id).await?;
                    let mut r = tx.get_registry("counter").await?.expect("counter exists");
                    let n: usize = r.display_name.parse().expect("number");
                    tokio::task::yield_now().await;
                    r.display_name = (n + 1).to_string();
                    tx.put_registry(&r).await?;
                    tokio::task::yield_now().await;
                    tx.commit().await?;
                }
                Ok::<_, StoreError>(())
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("writers finish")
                .expect("task ran")
                .unwrap_or_else(|e| panic!("{label}: writer failed: {e}"));
        }
        let mut tx = store.read(p.id).await.unwrap();
        let r = tx.get_registry("counter").await.unwrap().unwrap();
        assert_eq!(
            r.display_name,
            (2 * ROUNDS).to_string(),
            "{label}: no lost updates"
        );
    });
}

#[tokio::test]
async fn readers_see_a_snapshot_and_are_not_blocked_by_a_writer() {
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let mut w = store.write(p.id).await.unwrap();
        w.put_registry(&registry("pending", "")).await.unwrap();

        // A reader runs while the writer holds its lock, and does not see uncommitted rows.
        let mut r = tokio::time::timeout(Duration::from_secs(10), store.read(p.id))
            .await
            .expect("read does not wait for the writer")
            .unwrap();
        assert_eq!(r.get_registry("pending").await.unwrap(), None, "{label}");
        w.commit().await.unwrap();
        drop(r);

        let mut r = store.read(p.id).await.unwrap();
        assert!(
            r.get_registry("pending").await.unwrap().is_some(),
            "{label}"
        );
    });
}

#[tokio::test]
async fn lists_stay_fast_at_ten_thousand_applications() {
    on_every_backend!(|label, store| {
        let p = project(store, "big").await;
        let started = Instant::now();
        let mut tx = store.write(p.id).await.unwrap();
        for i in 0..10_000 {
            let mut a = app(
                &format!("app-{i:05}"),
                "1.0.0",
                &format!("Application {}", (i * 7919) % 10_000),
            );
            a.description = "x".repeat(200);
            tx.put_application(&a).await.unwrap();
        }
        tx.commit().await.unwrap();
        eprintln!(
            "{label}: inserted 10,000 applications in {:?}",
            started.elapsed()
        );

        let mut tx = store.read(p.id).await.unwrap();
        for raw in [
            "pageSize=20",
            "pageSize=20&offset=9980",
            "pageSize=20&orderBy=displayName%20desc",
            "pageSize=100&orderBy=description,updateTime%20desc&offset=5000",
            "pageSize=20&filter=displayName%3Dapplication%2099*",
            "pageSize=20&filter=name%3Dapp-0*1%20OR%20description%3Dnope&orderBy=createTime%20desc",
        ] {
            let q = query(Entity::Application, raw);
            let t = Instant::now();
            let (page, total) = tx.list_applications(&q).await.unwrap();
            let took = t.elapsed();
            eprintln!("{label}: {raw}: {} rows of {total} in {took:?}", page.len());
            assert!(!page.is_empty(), "{label}: {raw}");
            assert!(
                took < Duration::from_secs(2),
                "{label}: {raw} took {took:?}"
            );
        }
        let (page, total) = tx
            .list_applications(&query(Entity::Application, "pageSize=20&offset=9990"))
            .await
            .unwrap();
        assert_eq!((page.len(), total), (10, 10_000), "{label}");
        let distinct: BTreeSet<_> = page.iter().map(|a| a.name.clone()).collect();
        assert_eq!(distinct.len(), 10, "{label}");
    });
}

// ---- upload quotas and chunked session files

#[tokio::test]
async fn upload_files_are_stored_in_chunks_and_counted() {
    use canopy_store::{UPLOAD_CHUNK_BYTES, UploadUsage};
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let q = project(store, "q").await;
        // Two and a half chunks, with a pattern that shows any reordering.
        let big: Vec<u8> = (0..UPLOAD_CHUNK_BYTES * 5 / 2)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut tx = store.write(p.id).await.unwrap();
        let session = tx.create_upload_session().await.unwrap();
        let info = tx
            .add_upload_file_from(session, "big.bin", big.as_slice())
            .await
            .unwrap();
        assert_eq!((info.files, info.bytes), (1, big.len() as u64), "{label}");
        let info = tx
            .add_upload_file_from(session, "empty.yaml", &b""[..])
            .await
            .unwrap();
        assert_eq!((info.files, info.bytes), (2, big.len() as u64), "{label}");
        tx.commit().await.unwrap();
        let mut tx = store.write(q.id).await.unwrap();
        let other = tx.create_upload_session().await.unwrap();
        tx.add_upload_file_from(other, "a.yaml", &b"a: 1\n"[..])
            .await
            .unwrap();
        // What each project's sessions hold, and the server's.
        let usage = tx.lock_upload_usage().await.unwrap();
        assert_eq!(
            usage.project,
            UploadUsage {
                sessions: 1,
                bytes: 5
            },
            "{label}"
        );
        assert_eq!(
            usage.server,
            UploadUsage {
                sessions: 2,
                bytes: big.len() as u64 + 5
            },
            "{label}"
        );
        tx.commit().await.unwrap();

        // Read back file by file, in upload order.
        let mut tx = store.read(p.id).await.unwrap();
        let files = tx.upload_files(session).await.unwrap();
        let names: Vec<(u32, &str, u64)> = files
            .iter()
            .map(|f| (f.seq, f.name.as_str(), f.size))
            .collect();
        assert_eq!(
            names,
            vec![(1, "big.bin", big.len() as u64), (2, "empty.yaml", 0)],
            "{label}"
        );
        let mut back = Vec::new();
        assert_eq!(
            tx.read_upload_file(session, 1, &mut back).await.unwrap(),
            big.len() as u64,
            "{label}"
        );
        assert!(back == big, "{label}: content differs after the chunks");
        drop(tx);

        // Deleting a session takes its files and chunks; the other project's stays.
        let mut tx = store.write(p.id).await.unwrap();
        assert!(tx.delete_upload_session(session).await.unwrap(), "{label}");
        assert!(!tx.delete_upload_session(session).await.unwrap(), "{label}");
        tx.commit().await.unwrap();
        assert_eq!(
            store.upload_usage().await.unwrap(),
            UploadUsage {
                sessions: 1,
                bytes: 5
            },
            "{label}"
        );
        let mut tx = store.read(p.id).await.unwrap();
        let mut back = Vec::new();
        assert!(
            matches!(
                tx.upload_files(session).await,
                Err(StoreError::NoSuchUploadSession(_))
            ),
            "{label}"
        );
        assert_eq!(
            tx.read_upload_file(session, 1, &mut back).await.unwrap(),
            0,
            "{label}: no chunk left behind"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_quota_is_counted_one_adder_at_a_time() {
    // Adders of two different projects: the second one's count must wait for the first to
    // commit, and then include what it added (else both could pass a server-wide cap).
    on_every_backend!(|label, store| {
        let p = project(store, "p").await;
        let q = project(store, "q").await;
        let mut first = store.write(p.id).await.unwrap();
        let before = first.lock_upload_usage().await.unwrap();
        assert_eq!(before.server.sessions, 0, "{label}");
        let session = first.create_upload_session().await.unwrap();
        first
            .add_upload_file_from(session, "a.bin", &[7u8; 1000][..])
            .await
            .unwrap();
        let mut second = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.write(q.id).await.unwrap();
                let usage = tx.lock_upload_usage().await.unwrap();
                tx.commit().await.unwrap();
                usage
            })
        };
        // While the first holds the quota, the second cannot count.
        if let Ok(done) = tokio::time::timeout(Duration::from_millis(500), &mut second).await {
            panic!("{label}: counted while another adder held the quota: {done:?}");
        }
        first.commit().await.unwrap();
        let after = tokio::time::timeout(Duration::from_secs(30), second)
            .await
            .expect("the second adder goes on once the first commits")
            .unwrap();
        assert_eq!(
            (after.server.sessions, after.server.bytes),
            (1, 1000),
            "{label}: the second adder sees what the first added"
        );
        assert_eq!(after.project.sessions, 0, "{label}");
    });
}
