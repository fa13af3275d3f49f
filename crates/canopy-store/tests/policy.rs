//! Project policies on every backend from [`fresh_stores`]: none until set, set and replaced
//! per project, read back as written, gone with the project, refused in read transactions.

use canopy_core::names::ProjectName;
use canopy_core::policy::{PortRange, ProjectPolicy, ResourceLimits};
use canopy_store::testing::fresh_stores;
use canopy_store::{Project, Store, StoreError};
use time::OffsetDateTime;

async fn project(store: &Store, name: &str) -> Project {
    store
        .ensure_project(&ProjectName::try_from(name).unwrap())
        .await
        .unwrap()
}

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap()
}

fn careful() -> ProjectPolicy {
    ProjectPolicy {
        allowed_image_registries: vec!["registry.example.com/edge".into()],
        allowed_host_ports: PortRange {
            min: 30000,
            max: 32767,
        },
        default_resources: ResourceLimits {
            cpus: Some(0.5),
            memory: Some("256Mi".into()),
        },
        max_resources: ResourceLimits {
            cpus: Some(2.0),
            memory: Some("2Gi".into()),
        },
        allowed_vm_image_hosts: vec!["images.example.com".into()],
        allow_file_urls: false,
    }
}

#[tokio::test]
async fn policies_round_trip_per_project_on_every_backend() {
    for (label, store, _dir) in fresh_stores().await {
        let a = project(&store, "alpha").await;
        let b = project(&store, "beta").await;
        let mut tx = store.read(a.id).await.unwrap();
        assert!(tx.get_project_policy().await.unwrap().is_none(), "{label}");
        assert!(
            matches!(
                tx.put_project_policy(&careful(), now()).await,
                Err(StoreError::ReadOnly)
            ),
            "{label}"
        );
        drop(tx);

        let t1 = now();
        let mut tx = store.write(a.id).await.unwrap();
        tx.put_project_policy(&careful(), t1).await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.read(a.id).await.unwrap();
        assert_eq!(
            tx.get_project_policy().await.unwrap(),
            Some((careful(), t1)),
            "{label}"
        );
        drop(tx);
        // Another project still has none.
        let mut tx = store.read(b.id).await.unwrap();
        assert!(tx.get_project_policy().await.unwrap().is_none(), "{label}");
        drop(tx);

        // Replaced, not added; a rolled-back change leaves the old one.
        let t2 = now();
        let mut tx = store.write(a.id).await.unwrap();
        tx.put_project_policy(&ProjectPolicy::default(), t2)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.write(a.id).await.unwrap();
        tx.put_project_policy(&careful(), now()).await.unwrap();
        drop(tx);
        let mut tx = store.read(a.id).await.unwrap();
        assert_eq!(
            tx.get_project_policy().await.unwrap(),
            Some((ProjectPolicy::default(), t2)),
            "{label}"
        );
        drop(tx);

        // Gone with the project.
        assert!(store.delete_project(a.id).await.unwrap(), "{label}");
        let again = project(&store, "alpha").await;
        let mut tx = store.read(again.id).await.unwrap();
        assert!(tx.get_project_policy().await.unwrap().is_none(), "{label}");
    }
}
