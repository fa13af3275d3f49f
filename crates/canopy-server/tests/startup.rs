//! What a start does with the data directory: a first start on an empty directory just works;
//! a missing, empty or corrupt database beside the state of an instance that has run is refused
//! with the file and the fix named (and `admin.token` is never overwritten); `--initialize`
//! starts anew and keeps the old token; the directory is 0700 when Canopy creates it and the
//! database files 0600 (loose ones are tightened); one process holds a data directory at a time.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use canopy_server::{Server, ServerConfig, ServerError};

fn config(data_dir: &Path) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        database_url: None,
        tls: None,
        fleet: Default::default(),
        auth: Default::default(),
        tenancy: Default::default(),
        limits: Default::default(),
        audit_retention: canopy_server::DEFAULT_AUDIT_RETENTION,
        public_url: None,
        initialize: false,
        helm: Default::default(),
        metrics_listen: None,
        peer_url: None,
        uploads: Default::default(),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// Starts a server, makes it write (so the WAL files exist), stops it.
async fn start_and_stop(config: &ServerConfig) {
    let server = Server::bind(config).await.expect("server starts");
    server
        .app()
        .store()
        .put_org("acme", "written so the journal files exist", true)
        .await
        .unwrap();
    let files: Vec<PathBuf> = ["", "-wal", "-shm"]
        .iter()
        .map(|s| with_suffix(&config.data_dir.join("canopy.db"), s))
        .collect();
    for f in &files {
        assert!(f.exists(), "{} exists while the server runs", f.display());
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    server.run(async {}).await.unwrap();
}

async fn refused(config: &ServerConfig) -> ServerError {
    match Server::bind(config).await {
        Ok(_) => panic!("the start was not refused"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_first_start_on_an_empty_directory_needs_no_flag_and_keeps_files_private() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("canopy-data");
    let config = config(&dir);
    start_and_stop(&config).await;
    assert_eq!(
        mode(&dir),
        0o700,
        "a data directory Canopy creates is private"
    );
    assert_eq!(mode(&dir.join("admin.token")), 0o600);
    assert_eq!(mode(&dir.join("secret.key")), 0o600);
    assert_eq!(mode(&dir.join("canopy.db")), 0o600);
    // And starts again as it is.
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    start_and_stop(&config).await;
    assert_eq!(
        std::fs::read_to_string(dir.join("admin.token")).unwrap(),
        token
    );
}

#[tokio::test]
async fn database_files_readable_by_others_are_tightened_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    start_and_stop(&config).await;
    let db = dir.path().join("canopy.db");
    // As earlier versions left them.
    for f in [
        db.clone(),
        with_suffix(&db, "-wal"),
        with_suffix(&db, "-shm"),
    ] {
        if f.exists() {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    assert_eq!(mode(&db), 0o644);
    start_and_stop(&config).await;
    assert_eq!(mode(&db), 0o600);
}

#[tokio::test]
async fn a_missing_or_empty_database_beside_instance_state_is_refused_until_initialize() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    start_and_stop(&config).await;
    let db = dir.path().join("canopy.db");
    let token_file = dir.path().join("admin.token");
    let old_token = std::fs::read_to_string(&token_file).unwrap();

    // Missing (journal files and all: as if the file was never restored).
    for f in [
        db.clone(),
        with_suffix(&db, "-wal"),
        with_suffix(&db, "-shm"),
    ] {
        let _ = std::fs::remove_file(f);
    }
    let e = refused(&config).await;
    assert!(matches!(e, ServerError::DatabaseMissing { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&db.display().to_string()), "{msg}");
    assert!(
        msg.contains("admin.token") && msg.contains("secret.key"),
        "{msg}"
    );
    assert!(msg.contains("--initialize"), "{msg}");
    assert!(!db.exists(), "no new database was made");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), old_token);

    // Empty (a truncated file), with only the key left as state: refused as well.
    std::fs::write(&db, b"").unwrap();
    std::fs::remove_file(&token_file).unwrap();
    let e = refused(&config).await;
    assert!(e.to_string().contains("secret.key"), "{e}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
    std::fs::write(&token_file, &old_token).unwrap();

    // Told to: a new instance; the old token is kept beside the new one, not overwritten.
    config.initialize = true;
    start_and_stop(&config).await;
    let new_token = std::fs::read_to_string(&token_file).unwrap();
    assert_ne!(new_token, old_token);
    let kept: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("admin.token.")
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read_to_string(&kept[0]).unwrap(), old_token);
    // From then on a normal start.
    config.initialize = false;
    start_and_stop(&config).await;
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), new_token);
}

#[tokio::test]
async fn a_database_with_no_users_beside_an_admin_token_is_refused() {
    // A database that exists but has no users (a schema-only copy, a wrong file): the token in
    // the directory is from another database and must not be replaced.
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let store = canopy_store::Store::open_sqlite(&dir.path().join("canopy.db"))
        .await
        .unwrap();
    store.close().await;
    std::fs::write(dir.path().join("admin.token"), "cnp_b_from-another-life\n").unwrap();
    let e = refused(&config).await;
    assert!(matches!(e, ServerError::FreshDatabase { .. }), "{e:?}");
    assert!(e.to_string().contains("--initialize"), "{e}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("admin.token")).unwrap(),
        "cnp_b_from-another-life\n"
    );
}

#[tokio::test]
async fn a_corrupt_database_names_the_file_and_sqlites_own_cause() {
    // A directory of an instance whose database file was overwritten with something else.
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let db = dir.path().join("canopy.db");
    std::fs::write(&db, vec![0x5a; 64 * 1024]).unwrap();
    std::fs::write(dir.path().join("admin.token"), "cnp_b_kept\n").unwrap();
    let e = refused(&config).await;
    let msg = e.to_string();
    assert!(matches!(e, ServerError::Database { .. }), "{e:?}");
    assert!(msg.contains(&db.display().to_string()), "{msg}");
    assert!(msg.contains("file is not a database"), "{msg}");
    assert!(!msg.contains("timed out"), "{msg}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        vec![0x5a; 64 * 1024],
        "left as it was"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("admin.token")).unwrap(),
        "cnp_b_kept\n"
    );
}

#[tokio::test]
async fn one_process_holds_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let first = Server::bind(&config).await.unwrap();
    let e = refused(&config).await;
    assert!(matches!(e, ServerError::InUse { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(msg.contains("canopy.lock"), "{msg}");
    // The offline recovery refuses too.
    let e = canopy_server::reset_admin_token(dir.path(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ServerError::InUse { .. }), "{e:?}");
    first.run(async {}).await.unwrap();
    // Once stopped, the directory is free.
    Server::bind(&config)
        .await
        .unwrap()
        .run(async {})
        .await
        .unwrap();
}

#[tokio::test]
async fn a_fresh_postgres_database_beside_an_admin_token_is_refused() {
    let Some(url) = canopy_store::testing::fresh_postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.database_url = Some(url.clone());
    // A first start on a new database and an empty directory: fine.
    Server::bind(&config)
        .await
        .unwrap()
        .run(async {})
        .await
        .unwrap();
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    // The same directory pointed at another, empty database (a wrong --database-url).
    config.database_url = canopy_store::testing::fresh_postgres().await;
    let e = refused(&config).await;
    assert!(matches!(e, ServerError::FreshDatabase { .. }), "{e:?}");
    assert!(
        !e.to_string().contains("postgres://"),
        "no URL (it may carry a password): {e}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("admin.token")).unwrap(),
        token
    );
    // Back on the right database: starts.
    config.database_url = Some(url);
    Server::bind(&config)
        .await
        .unwrap()
        .run(async {})
        .await
        .unwrap();
}

#[tokio::test]
async fn the_self_signed_certificate_goes_into_a_private_data_directory() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("canopy-data");
    let mut config = config(&dir);
    config.tls = Some(canopy_tls::ServerTls::SelfSigned { dir: dir.clone() });
    Server::bind(&config)
        .await
        .unwrap()
        .run(async {})
        .await
        .unwrap();
    assert!(dir.join("tls").is_dir());
    assert_eq!(
        mode(&dir),
        0o700,
        "created by Canopy before the certificate"
    );
}
