//! The web-admin pages in a real browser (headless Chromium over WebDriver, see
//! `canopy_testkit::chromium`), **at a phone's width (380 px) and with the keyboard only** (Tab to
//! each control, Enter to follow or send; no clicks): create an enrollment token and read its
//! one-time secret and agent command, edit an edge's labels (a bad label's error in place
//! first), and browse the audit log with a filter. Screenshots as in `browser.rs`
//! (`CANOPY_UPDATE_SCREENSHOTS=1` writes them to `docs/screenshots/`).

mod common;

use canopy_testkit::TestControlPlane;
use canopy_testkit::chromium::*;
use common::*;
use fantoccini::Locator;

/// Tab presses allowed to reach a control (the header and navigation come first).
const TABS: usize = 40;

#[tokio::test]
async fn tokens_labels_and_audit_with_the_keyboard_at_phone_width_in_chromium() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let cp = TestControlPlane::start().await;
    let _edge = running_edge(&cp, "paris-1", "paris").await;
    user(&cp, "alice", &["canopy-admin"]).await;
    c.set_window_size(380, 800).await.unwrap();
    sign_in_as(&c, &cp.at("/ui/login"), "alice", PASSWORD).await;
    element(&c, "#summary").await;
    let width = c
        .execute("return window.innerWidth;", vec![])
        .await
        .unwrap();
    assert!(width.as_u64().unwrap() <= 380, "a phone's width: {width}");

    // Enrollment tokens: from the navigation, with the keyboard.
    tab_to(&c, "a[href='/ui/projects/default/enrollment-tokens']", TABS).await;
    press_enter_for_next_page(&c).await;
    element(&c, "#new-token").await;
    fits_width(&c, "enrollment tokens").await;
    tab_to(&c, "#description", TABS)
        .await
        .send_keys("store 12 rollout")
        .await
        .unwrap();
    tab_to(&c, "#create-token", 5).await;
    press_enter_for_next_page(&c).await;
    let command = element(&c, "#agent-command").await.text().await.unwrap();
    let secret = element(&c, "#token-secret").await.text().await.unwrap();
    assert!(secret.starts_with("cnt_"), "{secret}");
    assert_eq!(
        command,
        format!(
            "canopy agent --server {} --enroll-token {secret} --data-dir /var/lib/canopy-agent",
            cp.at("").trim_end_matches('/')
        )
    );
    assert!(!c.current_url().await.unwrap().as_str().contains(&secret));
    fits_width(&c, "the created token").await;
    screenshot(&c, "enrollment-token").await;
    // Shown once: the list, reloaded, has the token but not its secret.
    c.goto(&cp.at("/ui/projects/default/enrollment-tokens"))
        .await
        .unwrap();
    let rows = element(&c, "table#tokens").await.text().await.unwrap();
    assert!(rows.contains("store 12 rollout"), "{rows}");
    assert!(!c.source().await.unwrap().contains(&secret));

    // The edge's labels: from its page, a bad key first (the server's error in place), then
    // a good change.
    c.goto(&cp.at("/ui/projects/default/edges")).await.unwrap();
    tab_to(&c, "table#edges a", TABS).await;
    press_enter_for_next_page(&c).await;
    element(&c, "#edge-title").await;
    tab_to(&c, "#edit-labels", TABS).await;
    press_enter_for_next_page(&c).await;
    let labels = element(&c, "#labels").await;
    fits_width(&c, "the labels form").await;
    tab_to(&c, "#labels", TABS).await;
    labels.clear().await.unwrap();
    labels.send_keys("site=paris\nbad key!=x").await.unwrap();
    tab_to(&c, "#save-labels", 3).await;
    press_enter_for_next_page(&c).await;
    let error = element(&c, "#labels-error").await.text().await.unwrap();
    assert!(error.contains("bad key!"), "{error}");
    fits_width(&c, "the labels error").await;
    screenshot(&c, "edge-labels").await;
    let labels = element(&c, "#labels").await;
    tab_to(&c, "#labels", TABS).await;
    labels.clear().await.unwrap();
    labels.send_keys("site=paris\nzone=z1").await.unwrap();
    tab_to(&c, "#save-labels", 3).await;
    press_enter_for_next_page(&c).await;
    element(&c, "#edge-title").await;
    let facts = element(&c, "dl.facts").await.text().await.unwrap();
    assert!(
        facts.contains("site=paris") && facts.contains("zone=z1"),
        "{facts}"
    );

    // The audit log: Administration, then its tab, then a filter typed and sent with Enter.
    tab_to(&c, "#admin-link", TABS).await;
    press_enter_for_next_page(&c).await;
    element(&c, "table#orgs").await;
    fits_width(&c, "administration").await;
    tab_to(&c, "nav.tabs a[href='/ui/admin/audit']", TABS).await;
    press_enter_for_next_page(&c).await;
    element(&c, "#audit-filter").await;
    tab_to(&c, "#f-action", TABS)
        .await
        .send_keys("labels")
        .await
        .unwrap();
    press_enter_for_next_page(&c).await;
    let table = element(&c, "table#audit").await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .contains("action=labels")
    );
    let count = element(&c, "#audit-count").await.text().await.unwrap();
    assert!(count.starts_with("2 calls match"), "{count}");
    let rows = table.text().await.unwrap();
    assert!(
        rows.contains("POST /ui/projects/{project}/edges/{id}/labels")
            && rows.contains("400 Bad Request")
            && rows.contains("ok")
            && rows.contains("alice"),
        "{rows}"
    );
    fits_width(&c, "the audit log").await;
    // The documentation's picture at a desktop's width (the table is below the fold on a phone).
    c.set_window_size(1100, 760).await.unwrap();
    element(&c, "table#audit").await;
    screenshot(&c, "audit-log").await;
    // The filter stays in the form.
    let kept = c
        .find(Locator::Css("#f-action"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("labels"));

    // Every other page this work added, at a phone's width: nothing scrolls sideways, and the
    // page's main control is reached with Tab.
    upload_example(&cp).await;
    let (s, b) = cp
        .post(
            &cp.at("/v3/projects/default/catalog/registries"),
            &serde_json::json!({"name": "imgs", "type": "IMAGE", "rootUrl": "https://images.example.com"}),
        )
        .await;
    assert!(s.is_success(), "{b}");
    c.set_window_size(380, 800).await.unwrap();
    for (path, control) in [
        ("/ui/admin/users", "#create-user"),
        ("/ui/admin/users/alice", "#save-password"),
        ("/ui/tokens", "#create-api-token"),
        ("/ui/admin/tokens", "#create-api-token"),
        ("/ui/admin", "#new-project button"),
        ("/ui/projects/default/new-registry", "#save-registry"),
        (
            "/ui/projects/default/registries/imgs/edit",
            "#save-registry",
        ),
        (
            "/ui/projects/default/registries/imgs/delete",
            "#confirm-delete",
        ),
        (
            "/ui/projects/default/packages/web-demo/1.0.0/delete",
            "#confirm-delete",
        ),
        (
            "/ui/projects/default/applications/web/1.0.0/delete",
            "#confirm-delete",
        ),
        (
            "/ui/projects/default/packages/web-demo/1.0.0",
            "#export-link",
        ),
        ("/ui/no/such/page", "main a[href='/']"),
    ] {
        c.goto(&cp.at(path)).await.unwrap();
        element(&c, "main").await;
        fits_width(&c, path).await;
        tab_to(&c, control, 80).await;
    }
    c.close().await.unwrap();
}
