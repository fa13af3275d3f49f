//! OIDC sign-in in a real browser: headless Chromium (Debian's `chromium`, over chromedriver)
//! clicks "Sign in with Test IdP", signs in on the loopback test provider's own login page
//! (`canopy_auth::testing::TestIssuer`, standing in for Keycloak) and lands in the console.
//!
//! The console is opened as `http://localhost:PORT` while the provider is at `127.0.0.1`: two
//! different sites, so the provider's redirect back is a real cross-site navigation, and the
//! test shows that the `SameSite=Lax` pending cookie comes back with it and that the
//! `SameSite=Strict` session cookie is in use once the console is reached.
//!
//! Skipped with a notice when chromedriver/Chromium are missing (fails under CI), like
//! `tests/browser.rs`. The screenshot `sign-in-oidc` is written to `docs/screenshots/` with
//! `CANOPY_UPDATE_SCREENSHOTS=1`.

mod common;

use canopy_auth::oidc_login::LoginClient;
use canopy_auth::testing::{CLIENT_ID, TestIssuer};
use canopy_server::app::{AuthConfig, ConsoleOidc};
use canopy_testkit::TestControlPlane;
use canopy_testkit::chromium::{browser, element, screenshot};
use common::*;

#[tokio::test]
async fn sign_in_through_the_providers_page_in_chromium() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let issuer = TestIssuer::start().await;
    issuer.add_user("support", &["default_ao-r"]);
    let verifier = issuer.verifier();
    let client = LoginClient::new(verifier.clone(), CLIENT_ID, None);
    let cp = TestControlPlane::start_configured(|cfg| {
        cfg.auth = AuthConfig {
            oidc: Some(verifier),
            console: Some(ConsoleOidc {
                client,
                label: "Test IdP".into(),
            }),
            ..Default::default()
        };
    })
    .await;
    upload_example(&cp).await;
    let id = deployment(&cp, "shop-front", "paris").await;
    // The console on another site than the provider (see the module doc).
    let console = cp.at("").replace("127.0.0.1", "localhost");

    c.goto(&format!("{console}/ui/login")).await.unwrap();
    let button = element(&c, "#oidc-sign-in").await;
    assert_eq!(button.text().await.unwrap(), "Sign in with Test IdP");
    screenshot(&c, "sign-in-oidc").await;

    // The provider's own login page.
    button.click().await.unwrap();
    let name = element(&c, "#kc-form-login #username").await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .starts_with(&issuer.authorization_endpoint()),
        "the browser is at the provider"
    );
    name.send_keys("support").await.unwrap();
    element(&c, "#kc-login").await.click().await.unwrap();

    // Back at the console, signed in, on the deployments of the user's project.
    let table = element(&c, "table#deployments").await;
    let url = c.current_url().await.unwrap();
    assert_eq!(url.host_str(), Some("localhost"));
    assert_eq!(url.path(), "/ui/projects/default/deployments");
    assert!(table.text().await.unwrap().contains("shop-front"));
    assert_eq!(
        element(&c, "#user").await.text().await.unwrap(),
        "oidc:support"
    );
    // Read-only through the provider's roles: no delete control on the deployment's page.
    c.goto(&format!("{console}/ui/projects/default/deployments/{id}"))
        .await
        .unwrap();
    element(&c, "h1").await;
    let source = c.source().await.unwrap();
    assert!(source.contains("shop-front"));
    assert!(
        !source.contains(&format!("deployments/{id}/delete")),
        "{source}"
    );
    // The page's source holds no token of the sign-in.
    assert!(!source.contains("cnp_s_") && !source.contains("eyJ"));

    // Sign out: back on the sign-in page, and the console is closed again.
    element(&c, "form[action='/ui/logout'] button")
        .await
        .click()
        .await
        .unwrap();
    element(&c, "#oidc-sign-in").await;
    c.goto(&format!("{console}/ui/projects/default/deployments"))
        .await
        .unwrap();
    element(&c, "#oidc-sign-in").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/ui/login");

    // A denied sign-in: the provider's error, in place on the sign-in page.
    element(&c, "#oidc-sign-in").await.click().await.unwrap();
    element(&c, "#kc-deny").await.click().await.unwrap();
    let error = element(&c, "#login-error").await;
    assert_eq!(
        error.text().await.unwrap(),
        "the identity provider refused the sign-in: access_denied (The user denied the sign-in)"
    );
    c.close().await.unwrap();
}
