//! The real `canopy server` binary serves the web console (canopy-web) at `/`: a browser that
//! opens the server's address lands on the sign-in page, with the console's headers. The
//! console itself is tested in crates/canopy-web/tests (plain HTTP and Chromium).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canopy_server_serves_the_console_at_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_canopy"))
            .arg("server")
            .arg("--insecure-http")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("CANOPY_DATABASE_URL")
            .env_remove("CANOPY_SECRET_KEY")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("canopy server starts"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let root = loop {
        if let Ok(r) = http.get(format!("{url}/")).send().await {
            break r;
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(root.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(root.headers()["location"], "/ui/login");
    let login = http.get(format!("{url}/ui/login")).send().await.unwrap();
    assert_eq!(login.status(), reqwest::StatusCode::OK);
    assert!(
        login.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let page = login.text().await.unwrap();
    assert!(page.contains("Sign in to Canopy"), "{page}");
}
