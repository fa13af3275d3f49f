//! Headless Chromium over WebDriver for the console's browser tests (`canopy-web`'s and the
//! `canopy` crate's, which has the binary a real agent needs): `chromedriver` in a process group
//! of its own, a Chromium session, waiting for elements with a deadline, screenshots, sign-in,
//! keyboard-only navigation and a check for sideways scrolling at a phone's width. One copy,
//! so every browser test starts Chromium the same way.
//!
//! Needs `CANOPY_TEST_CHROMEDRIVER` and `CANOPY_TEST_CHROMIUM` (scripts/chromium.sh), else
//! `chromedriver` and `chromium` on PATH; without them [`browser`] returns `None` with a
//! notice, except under CI (`CI` set), where it panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// How long any one page condition may take on a busy 2-core machine.
pub const PAGE: Duration = Duration::from_secs(60);

/// `chromedriver` in a process group of its own, so the browsers it starts end with it (kill
/// on drop).
pub struct Driver {
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

/// Starts chromedriver on a free loopback port and a Chromium session through it; `None` (with
/// a notice) when neither is installed outside CI.
pub async fn browser() -> Option<(Driver, Client)> {
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
    let d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: tempfile::tempdir().unwrap(),
    };
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

/// Waits up to `within` for the element `css` and returns it.
pub async fn element_within(
    c: &Client,
    css: &str,
    within: Duration,
) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(within)
        .for_element(Locator::Css(css))
        .await
    {
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

/// Waits for the element `css` and returns it.
pub async fn element(c: &Client, css: &str) -> fantoccini::elements::Element {
    element_within(c, css, PAGE).await
}

/// Takes a screenshot named `name`: checks it is a PNG, writes it to docs/screenshots/ with
/// `CANOPY_UPDATE_SCREENSHOTS=1`.
pub async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is a PNG");
    if std::env::var_os("CANOPY_UPDATE_SCREENSHOTS").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
    }
}

/// Opens the sign-in page at `login_url` (e.g. `cp.at("/ui/login")`), fills the form and sends it.
pub async fn sign_in_as(c: &Client, login_url: &str, user: &str, password: &str) {
    c.goto(login_url).await.unwrap();
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

/// Presses Tab (at most `max` times) until the focused element matches `css`: the element is
/// reachable with the keyboard. Returns it.
pub async fn tab_to(c: &Client, css: &str, max: usize) -> fantoccini::elements::Element {
    for _ in 0..max {
        let focused = c.active_element().await.unwrap();
        let matches = c
            .execute(
                "return document.activeElement !== null && document.activeElement.matches(arguments[0]);",
                vec![json!(css)],
            )
            .await
            .unwrap();
        if matches == json!(true) {
            return focused;
        }
        focused.send_keys(&Key::Tab.to_string()).await.unwrap();
    }
    let source = c.source().await.unwrap_or_default();
    panic!("{css} not reached with {max} presses of Tab:\n{source}")
}

/// Presses Enter on the focused element.
pub async fn press_enter(c: &Client) {
    c.active_element()
        .await
        .unwrap()
        .send_keys(&Key::Enter.to_string())
        .await
        .unwrap();
}

/// Presses Enter on the focused element and waits for the page it leads to (a link followed or a
/// form sent). The page left is marked first, so nothing found afterwards can be an element of
/// the old page that the browser had not yet replaced (a stale element, or a wrong assertion).
pub async fn press_enter_for_next_page(c: &Client) {
    c.execute("document.documentElement.dataset.canopyLeft = '1';", vec![])
        .await
        .unwrap();
    press_enter(c).await;
    let deadline = std::time::Instant::now() + PAGE;
    loop {
        // While the browser navigates a script may fail or wait: only a `true` ends the loop.
        let arrived = c
            .execute(
                "return document.readyState !== 'loading' && document.documentElement.dataset.canopyLeft === undefined;",
                vec![],
            )
            .await;
        if matches!(arrived, Ok(ref v) if *v == json!(true)) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            panic!("Enter did not lead to a new page within {PAGE:?}; the browser is at {url}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that the page does not scroll sideways (what is wider than the window scrolls
/// inside its own box).
pub async fn fits_width(c: &Client, what: &str) {
    let r = c
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    let (content, window) = (r[0].as_u64().unwrap(), r[1].as_u64().unwrap());
    assert!(
        content <= window,
        "{what}: the page is {content} px wide in a {window} px window"
    );
}
