//! The console in a real browser: headless Chromium (Debian's `chromium`) driven over WebDriver
//! (`chromedriver`, through fantoccini) against a real control plane with a simulated edge.
//!
//! Needs `CANOPY_TEST_CHROMEDRIVER` and `CANOPY_TEST_CHROMIUM` (scripts/chromium.sh prints
//! them; scripts/test.sh exports them), else `chromedriver` and `chromium` on PATH; without
//! them the test is skipped with a notice, except under CI (`CI` set), where it fails.
//!
//! Screenshots of the sign-in, deployments and deployment pages are taken on every run and
//! checked to be PNGs; with `CANOPY_UPDATE_SCREENSHOTS=1` they are written to
//! `docs/screenshots/` (so a normal test run never changes the checkout).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use canopy_testkit::TestControlPlane;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// How long any one page condition may take on a busy 2-core machine.
const PAGE: Duration = Duration::from_secs(60);

/// `chromedriver` in a process group of its own, so the browsers it starts end with it.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group this test created (chromedriver and the Chromium it started), by its id.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

/// A program from the environment variable `var`, else `name` on PATH.
fn program(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Starts chromedriver on a free loopback port and a Chromium session through it; `None`
/// (with a notice) when neither is installed outside CI.
async fn browser() -> Option<(Driver, Client)> {
    let (Some(driver), Some(chromium)) = (
        program("CANOPY_TEST_CHROMEDRIVER", "chromedriver"),
        program("CANOPY_TEST_CHROMIUM", "chromium"),
    ) else {
        if std::env::var_os("CI").is_some() {
            panic!("chromedriver/chromium not found but CI is set: run scripts/chromium.sh first");
        }
        eprintln!("skipped: no chromedriver/chromium (run scripts/chromium.sh)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    use std::os::unix::process::CommandExt as _;
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", driver.display()));
    let profile = tempfile::tempdir().unwrap();
    let d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: profile,
    };
    // Wait until the driver answers its status endpoint.
    let deadline = tokio::time::Instant::now() + PAGE;
    loop {
        let ready = reqwest::get(format!("{}/status", d.url))
            .await
            .ok()
            .filter(|r| r.status().is_success());
        if ready.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1000,760",
                format!("--user-data-dir={}", d._profile.path().display()),
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&d.url)
        .await
        .expect("a Chromium session");
    Some((d, client))
}

/// Waits for the element `css` and returns it.
async fn element(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c.wait().at_most(PAGE).for_element(Locator::Css(css)).await {
        Ok(e) => e,
        Err(e) => {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let source = c.source().await.unwrap_or_default();
            panic!("{css} never appeared ({e}); the browser is at {url}:\n{source}")
        }
    }
}

/// Takes a screenshot named `name`: checks it is a PNG, writes it to docs/screenshots/ when
/// asked to (see the module doc).
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is a PNG");
    if std::env::var_os("CANOPY_UPDATE_SCREENSHOTS").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
    }
}

/// Fills the sign-in form and sends it.
async fn sign_in_as(c: &Client, cp: &TestControlPlane, user: &str, password: &str) {
    c.goto(&cp.at("/ui/login")).await.unwrap();
    let name = element(c, "#username").await;
    name.clear().await.unwrap();
    name.send_keys(user).await.unwrap();
    element(c, "#password")
        .await
        .send_keys(password)
        .await
        .unwrap();
    element(c, "#sign-in").await.click().await.unwrap();
}

#[tokio::test]
async fn sign_in_browse_and_delete_in_chromium() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    let shop = deployment(&cp, "shop-front", "paris").await;
    let depot = deployment(&cp, "depot", "paris").await;
    let _edge = running_edge(&cp, "paris-1", "paris").await;
    user(&cp, "alice", &["canopy-admin"]).await;
    user(&cp, "support", &["default_ao-r"]).await;

    // Not signed in: the console sends the browser to the sign-in page.
    c.goto(&cp.at("/")).await.unwrap();
    element(&c, "#sign-in").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/ui/login");
    screenshot(&c, "sign-in").await;

    // A wrong password: the server's own error, in place.
    sign_in_as(&c, &cp, "alice", "not the password at all").await;
    let error = element(&c, "#login-error").await;
    assert_eq!(error.text().await.unwrap(), "wrong user name or password");

    // The right one lands on the deployments, which list what the API created.
    sign_in_as(&c, &cp, "alice", PASSWORD).await;
    let table = element(&c, "table#deployments").await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/ui/projects/default/deployments"
    );
    let rows = table.text().await.unwrap();
    assert!(
        rows.contains("shop-front") && rows.contains("depot"),
        "{rows}"
    );
    screenshot(&c, "deployments").await;

    // The deployment page: the edge, its apps' states, the age of its last report.
    c.find(Locator::LinkText("shop-front"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let edges = element(&c, "table#edges").await;
    let text = edges.text().await.unwrap();
    assert!(
        text.contains("paris-1") && text.contains("RUNNING"),
        "{text}"
    );
    assert!(text.contains("s ago"), "{text}");
    screenshot(&c, "deployment").await;

    // An administrator deletes it through the confirmation page.
    element(&c, "#delete").await.click().await.unwrap();
    element(&c, "#confirm-delete").await.click().await.unwrap();
    let notice = element(&c, "p.notice").await;
    assert!(notice.text().await.unwrap().contains("shop-front"));
    assert!(
        !deployment_exists(&cp, &shop).await,
        "deleted on the server"
    );
    let rows = element(&c, "table#deployments").await.text().await.unwrap();
    assert!(
        !rows.contains("shop-front") && rows.contains("depot"),
        "{rows}"
    );

    // Sign out: back to the sign-in page.
    c.find(Locator::XPath("//button[text()='Sign out']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    element(&c, "#sign-in").await;

    // A read-only user sees the deployment but no delete control.
    sign_in_as(&c, &cp, "support", PASSWORD).await;
    element(&c, "table#deployments").await;
    c.goto(&cp.at(&format!("/ui/projects/default/deployments/{depot}")))
        .await
        .unwrap();
    element(&c, "#deployment-title").await;
    let delete = c.find(Locator::Css("#delete")).await;
    assert!(
        delete.as_ref().is_err_and(|e| e.is_no_such_element()),
        "no delete control for a read-only user"
    );
    assert!(deployment_exists(&cp, &depot).await);
    c.close().await.unwrap();
}

#[tokio::test]
async fn upload_a_package_and_deploy_it_with_a_secret_in_chromium() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let cp = TestControlPlane::start().await;
    let _edge = running_edge(&cp, "paris-1", "paris").await;
    user(&cp, "alice", &["canopy-admin"]).await;
    // The package's files on disk, as a user would pick them.
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, content) in web_demo_with_secrets() {
        let p = dir.path().join(&name);
        std::fs::write(&p, content).unwrap();
        paths.push(p.display().to_string());
    }

    sign_in_as(&c, &cp, "alice", PASSWORD).await;
    element(&c, "#summary").await;
    c.goto(&cp.at("/ui/projects/default/packages"))
        .await
        .unwrap();
    element(&c, "#upload-link").await.click().await.unwrap();
    // Several files at once into the `multiple` file input (WebDriver: one path per line).
    element(&c, "#files")
        .await
        .send_keys(&paths.join("\n"))
        .await
        .unwrap();
    element(&c, "#upload").await.click().await.unwrap();
    let done = element(&c, "#upload-done").await.text().await.unwrap();
    assert!(done.contains("web.yaml"), "{done}");
    screenshot(&c, "upload").await;

    // From what was created to the package, and its wizard.
    c.find(Locator::LinkText("web-demo:1.0.0"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    element(&c, "#deploy-link").await.click().await.unwrap();
    element(&c, "#display_name")
        .await
        .send_keys("browser web")
        .await
        .unwrap();
    element(&c, "#labels")
        .await
        .send_keys("site=paris")
        .await
        .unwrap();
    element(&c, "#review").await.click().await.unwrap();
    let matching = element(&c, "#matching").await.text().await.unwrap();
    assert!(matching.starts_with("1: paris-1"), "{matching}");
    element(&c, "[name='param:web:token']")
        .await
        .send_keys(SECRET)
        .await
        .unwrap();
    screenshot(&c, "deploy-review").await;
    element(&c, "#create").await.click().await.unwrap();
    let title = element(&c, "#deployment-title").await.text().await.unwrap();
    assert_eq!(title, "browser web");
    assert!(!c.source().await.unwrap().contains(SECRET));
    assert!(!c.current_url().await.unwrap().as_str().contains(SECRET));

    // In the deployments list.
    c.find(Locator::LinkText("← Deployments"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let rows = element(&c, "table#deployments").await.text().await.unwrap();
    assert!(rows.contains("browser web"), "{rows}");

    // Drag and drop onto the upload form: the script is allowed by the CSP and runs (it marks
    // the form), and files dropped on the form become the file input's files.
    c.goto(&cp.at("/ui/projects/default/packages/upload"))
        .await
        .unwrap();
    element(&c, "form#upload-form.droppable").await;
    let dropped = c
        .execute(
            "const dt = new DataTransfer();
             dt.items.add(new File(['name: x'], 'dropped.yaml'));
             document.getElementById('upload-form').dispatchEvent(
               new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
             const f = document.getElementById('files').files;
             return [f.length, f[0].name, document.getElementById('dropped').textContent];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        dropped,
        json!([1, "dropped.yaml", "1 file(s): dropped.yaml"])
    );
    c.close().await.unwrap();
}
