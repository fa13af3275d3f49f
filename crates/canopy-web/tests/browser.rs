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

use canopy_testkit::TestControlPlane;
use canopy_testkit::chromium::{PAGE, browser, element, screenshot, sign_in_as};
use common::*;
use fantoccini::Locator;
use serde_json::json;

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
    sign_in_as(&c, &cp.at("/ui/login"), "alice", "not the password at all").await;
    let error = element(&c, "#login-error").await;
    assert_eq!(error.text().await.unwrap(), "wrong user name or password");

    // The right one lands on the deployments, which list what the API created.
    sign_in_as(&c, &cp.at("/ui/login"), "alice", PASSWORD).await;
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
    sign_in_as(&c, &cp.at("/ui/login"), "support", PASSWORD).await;
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

    sign_in_as(&c, &cp.at("/ui/login"), "alice", PASSWORD).await;
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
    // The live count under the field, as typed (assets/matching.js).
    c.wait()
        .at_most(PAGE)
        .for_element(Locator::XPath(
            "//*[@id='labels-matching'][starts-with(normalize-space(.), '1 edge match now')]",
        ))
        .await
        .expect("the live count of matching edges");
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
