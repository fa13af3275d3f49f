//! End-to-end OIDC verification against the loopback [`TestIssuer`].

use std::time::Duration;

use canopy_auth::testing::{Algorithm, Kid, TestIssuer, TokenSpec, now};
use canopy_auth::{AuthError, OidcConfig, OidcVerifier};
use serde_json::json;

fn verifier_for(issuer: &TestIssuer) -> OidcVerifier {
    issuer.verifier()
}

#[tokio::test]
async fn valid_rs256_token() {
    let idp = TestIssuer::start().await;
    let verifier = verifier_for(&idp);
    let claims = verifier
        .verify(&idp.token("alice", &["admin", "viewer"]))
        .await
        .unwrap();
    assert_eq!(claims.subject, "alice");
    assert_eq!(claims.username.as_deref(), Some("alice"));
    assert_eq!(claims.roles, ["admin", "viewer"]);
    assert!((claims.expires_at - now() - 300).abs() <= 5);
    // Discovery was used (no jwks_url configured), once.
    assert_eq!(idp.discovery_fetches(), 1);
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn valid_es256_token() {
    let idp = TestIssuer::start().await;
    let claims = verifier_for(&idp)
        .verify(&idp.token_es256("bob", &["operator"]))
        .await
        .unwrap();
    assert_eq!(claims.subject, "bob");
    assert_eq!(claims.roles, ["operator"]);
}

#[tokio::test]
async fn missing_roles_and_username_are_fine() {
    let idp = TestIssuer::start().await;
    let token = idp.token_with(TokenSpec {
        username: None,
        roles: None,
        ..idp.spec("svc")
    });
    let claims = verifier_for(&idp).verify(&token).await.unwrap();
    assert_eq!(claims.username, None);
    assert!(claims.roles.is_empty());
}

#[tokio::test]
async fn keys_are_cached() {
    let idp = TestIssuer::start().await;
    let verifier = verifier_for(&idp);
    let clone = verifier.clone();
    for _ in 0..3 {
        verifier.verify(&idp.token("a", &[])).await.unwrap();
        clone.verify(&idp.token_es256("b", &[])).await.unwrap();
    }
    assert_eq!(idp.jwks_fetches(), 1);
    assert_eq!(idp.discovery_fetches(), 1);
}

#[tokio::test]
async fn expired_token() {
    let idp = TestIssuer::start().await;
    let err = verifier_for(&idp)
        .verify(&idp.expired_token("alice"))
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::Expired);
}

#[tokio::test]
async fn expiry_leeway() {
    let idp = TestIssuer::start().await;
    let verifier = verifier_for(&idp);
    // 10 s ago is within the default 30 s leeway; 120 s ago is not.
    let recent = idp.token_with(TokenSpec {
        exp: Some(now() - 10),
        ..idp.spec("alice")
    });
    assert!(verifier.verify(&recent).await.is_ok());
    let old = idp.token_with(TokenSpec {
        exp: Some(now() - 120),
        ..idp.spec("alice")
    });
    assert_eq!(verifier.verify(&old).await.unwrap_err(), AuthError::Expired);
}

#[tokio::test]
async fn missing_exp_is_refused() {
    let idp = TestIssuer::start().await;
    let token = idp.token_with(TokenSpec {
        exp: None,
        ..idp.spec("alice")
    });
    assert!(matches!(
        verifier_for(&idp).verify(&token).await,
        Err(AuthError::Malformed(_))
    ));
}

#[tokio::test]
async fn not_yet_valid() {
    let idp = TestIssuer::start().await;
    let token = idp.token_with(TokenSpec {
        nbf: Some(now() + 3600),
        ..idp.spec("alice")
    });
    assert_eq!(
        verifier_for(&idp).verify(&token).await.unwrap_err(),
        AuthError::NotYetValid
    );
}

#[tokio::test]
async fn wrong_audience() {
    let idp = TestIssuer::start().await;
    let verifier = verifier_for(&idp);
    let other = idp.token_with(TokenSpec {
        aud: Some(json!("someone-else")),
        ..idp.spec("alice")
    });
    assert_eq!(
        verifier.verify(&other).await.unwrap_err(),
        AuthError::WrongAudience
    );
    let missing = idp.token_with(TokenSpec {
        aud: None,
        ..idp.spec("alice")
    });
    assert_eq!(
        verifier.verify(&missing).await.unwrap_err(),
        AuthError::WrongAudience
    );
    // An array containing our audience is fine.
    let array = idp.token_with(TokenSpec {
        aud: Some(json!(["account", "canopy"])),
        ..idp.spec("alice")
    });
    assert_eq!(verifier.verify(&array).await.unwrap().subject, "alice");
}

#[tokio::test]
async fn wrong_issuer() {
    let idp = TestIssuer::start().await;
    let verifier = verifier_for(&idp);
    for iss in [
        Some("https://evil.example/realms/canopy".to_owned()),
        Some(format!("{}/", idp.issuer())),
        None,
    ] {
        let token = idp.token_with(TokenSpec {
            iss: iss.clone(),
            ..idp.spec("alice")
        });
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            AuthError::WrongIssuer,
            "{iss:?}"
        );
    }
    // An array issuer is not an exact match, even if it contains ours.
    let mut spec = idp.spec("alice");
    spec.extra.insert("iss".to_owned(), json!([idp.issuer()]));
    assert_eq!(
        verifier.verify(&idp.token_with(spec)).await.unwrap_err(),
        AuthError::WrongIssuer
    );
}

#[tokio::test]
async fn missing_subject_is_refused() {
    let idp = TestIssuer::start().await;
    let mut spec = idp.spec("alice");
    spec.extra.insert("sub".to_owned(), json!(""));
    assert!(matches!(
        verifier_for(&idp).verify(&idp.token_with(spec)).await,
        Err(AuthError::Malformed(_))
    ));
}

#[tokio::test]
async fn tampered_token_has_bad_signature() {
    let idp = TestIssuer::start().await;
    assert_eq!(
        verifier_for(&idp)
            .verify(&idp.tampered_token("alice"))
            .await
            .unwrap_err(),
        AuthError::BadSignature
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let idp = TestIssuer::start().await;
    assert_eq!(
        verifier_for(&idp)
            .verify(&idp.alg_none_token("alice"))
            .await
            .unwrap_err(),
        AuthError::UnsupportedAlgorithm("none".to_owned())
    );
    // Nothing was fetched for it.
    assert_eq!(idp.jwks_fetches(), 0);
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let idp = TestIssuer::start().await;
    let verifier = verifier_for(&idp);
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = idp.token_with(TokenSpec {
            alg,
            ..idp.spec("mallory")
        });
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            AuthError::UnsupportedAlgorithm(format!("{alg:?}"))
        );
    }
}

#[tokio::test]
async fn algorithm_must_match_the_key_type() {
    let idp = TestIssuer::start().await;
    let verifier = verifier_for(&idp);
    // An RSA signature that names the EC key.
    let token = idp.token_with(TokenSpec {
        kid: Kid::Named(idp.ec_kid()),
        ..idp.spec("alice")
    });
    assert_eq!(
        verifier.verify(&token).await.unwrap_err(),
        AuthError::AlgorithmMismatch
    );
    // An ES256 signature that names the RSA key.
    let token = idp.token_with(TokenSpec {
        alg: Algorithm::ES256,
        kid: Kid::Named(idp.rsa_kid()),
        ..idp.spec("alice")
    });
    assert_eq!(
        verifier.verify(&token).await.unwrap_err(),
        AuthError::AlgorithmMismatch
    );
}

#[tokio::test]
async fn other_rsa_algorithms_work_and_ps384_is_refused() {
    let idp = TestIssuer::start().await;
    let verifier = verifier_for(&idp);
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let token = idp.token_with(TokenSpec {
            alg,
            ..idp.spec("alice")
        });
        assert_eq!(
            verifier.verify(&token).await.unwrap().subject,
            "alice",
            "{alg:?}"
        );
    }
    let token = idp.token_with(TokenSpec {
        alg: Algorithm::PS384,
        ..idp.spec("alice")
    });
    assert_eq!(
        verifier.verify(&token).await.unwrap_err(),
        AuthError::UnsupportedAlgorithm("PS384".to_owned())
    );
}

#[tokio::test]
async fn token_without_kid_needs_a_single_key() {
    let idp = TestIssuer::start().await;
    let token = idp.token_with(TokenSpec {
        kid: Kid::Omit,
        ..idp.spec("alice")
    });
    // The test issuer publishes two keys, so a kid-less token is ambiguous.
    assert_eq!(
        verifier_for(&idp).verify(&token).await.unwrap_err(),
        AuthError::UnknownKey
    );
}

#[tokio::test]
async fn malformed_and_oversized_tokens() {
    let idp = TestIssuer::start().await;
    let verifier = verifier_for(&idp);
    for token in ["", "garbage", "a.b.c", "....", "Bearer x.y.z"] {
        assert!(
            matches!(verifier.verify(token).await, Err(AuthError::Malformed(_))),
            "{token:?}"
        );
    }
    let valid = idp.token("alice", &[]);
    let mut huge = valid.clone();
    huge.push_str(&"A".repeat(16 * 1024));
    assert_eq!(
        verifier.verify(&huge).await.unwrap_err(),
        AuthError::TooLarge
    );
    // A big claim set pushes a validly signed token over the limit too.
    let mut spec = idp.spec("alice");
    spec.extra
        .insert("padding".to_owned(), json!("x".repeat(16 * 1024)));
    assert_eq!(
        verifier.verify(&idp.token_with(spec)).await.unwrap_err(),
        AuthError::TooLarge
    );
    assert_eq!(idp.jwks_fetches(), 0);
}

#[tokio::test]
async fn rotation_triggers_exactly_one_refetch() {
    let idp = TestIssuer::start().await;
    let verifier = verifier_for(&idp);
    let old = idp.token("alice", &[]);
    verifier.verify(&old).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 1);

    idp.rotate_key();
    let new = idp.token("alice", &[]);
    assert_ne!(idp.rsa_kid(), "rsa-1");
    verifier.verify(&new).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 2);
    verifier.verify(&new).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 2);

    // The old key is gone from the JWKS, so tokens naming it now fail
    // (and, within the cooldown, without another fetch).
    assert_eq!(
        verifier.verify(&old).await.unwrap_err(),
        AuthError::UnknownKey
    );
    assert_eq!(idp.jwks_fetches(), 2);
    assert_eq!(idp.discovery_fetches(), 1);
}

#[tokio::test]
async fn unknown_kid_flood_is_rate_limited() {
    let idp = TestIssuer::start().await;
    let verifier = verifier_for(&idp);
    verifier.verify(&idp.token("alice", &[])).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 1);

    let mut tasks = Vec::new();
    for i in 0..50 {
        let token = idp.token_with(TokenSpec {
            kid: Kid::Named(format!("random-{i}")),
            ..idp.spec("mallory")
        });
        let verifier = verifier.clone();
        tasks.push(tokio::spawn(async move { verifier.verify(&token).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err(), AuthError::UnknownKey);
    }
    // One refetch for the whole flood.
    assert_eq!(idp.jwks_fetches(), 2);
    // Known keys keep working without fetching.
    verifier.verify(&idp.token_es256("bob", &[])).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test]
async fn unknown_kid_refetch_again_after_the_cooldown() {
    let idp = TestIssuer::start().await;
    let config = OidcConfig {
        refetch_cooldown: Duration::from_millis(200),
        ..idp.config()
    };
    let verifier = OidcVerifier::new(config, reqwest::Client::new());
    let stranger = idp.token_with(TokenSpec {
        kid: Kid::Named("stranger".to_owned()),
        ..idp.spec("mallory")
    });
    // First contact fetches; the unknown kid is not refetched right away
    // because the keys are brand new.
    assert_eq!(
        verifier.verify(&stranger).await.unwrap_err(),
        AuthError::UnknownKey
    );
    assert_eq!(idp.jwks_fetches(), 1);
    assert_eq!(
        verifier.verify(&stranger).await.unwrap_err(),
        AuthError::UnknownKey
    );
    assert_eq!(idp.jwks_fetches(), 2);
    assert_eq!(
        verifier.verify(&stranger).await.unwrap_err(),
        AuthError::UnknownKey
    );
    assert_eq!(idp.jwks_fetches(), 2);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        verifier.verify(&stranger).await.unwrap_err(),
        AuthError::UnknownKey
    );
    assert_eq!(idp.jwks_fetches(), 3);
}

#[tokio::test]
async fn stale_keys_are_refreshed() {
    let idp = TestIssuer::start().await;
    let config = OidcConfig {
        jwks_max_age: Duration::from_millis(100),
        ..idp.config()
    };
    let verifier = OidcVerifier::new(config, reqwest::Client::new());
    let old = idp.token("alice", &[]);
    verifier.verify(&old).await.unwrap();
    idp.rotate_key();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The refresh drops the removed key even though its kid is cached.
    assert_eq!(
        verifier.verify(&old).await.unwrap_err(),
        AuthError::UnknownKey
    );
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test]
async fn stale_keys_are_kept_when_the_provider_is_down() {
    let idp = TestIssuer::start().await;
    let config = OidcConfig {
        jwks_max_age: Duration::from_millis(100),
        ..idp.config()
    };
    let verifier = OidcVerifier::new(config, reqwest::Client::new());
    let token = idp.token("alice", &[]);
    verifier.verify(&token).await.unwrap();
    idp.stop().await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(verifier.verify(&token).await.unwrap().subject, "alice");
}

#[tokio::test]
async fn unreachable_jwks_is_provider_unavailable() {
    // A port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let idp = TestIssuer::start().await;
    let config = idp
        .config()
        .with_jwks_url(format!("http://127.0.0.1:{port}/certs"));
    let verifier = OidcVerifier::new(config, reqwest::Client::new());
    let token = idp.token("alice", &[]);
    let err = verifier.verify(&token).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!err.to_string().contains(&token));
    assert!(!err.to_string().contains(token.split('.').nth(1).unwrap()));
    // Repeated calls right away do not hammer the address.
    assert!(verifier.verify(&token).await.unwrap_err().is_unavailable());
}

#[tokio::test]
async fn stopped_issuer_is_provider_unavailable() {
    let idp = TestIssuer::start().await;
    let token = idp.token("alice", &[]);
    let verifier = verifier_for(&idp);
    idp.stop().await;
    let err = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(err, AuthError::ProviderUnavailable(_)), "{err:?}");
    assert!(err.is_unavailable());
    assert!(!AuthError::BadSignature.is_unavailable());
}

#[tokio::test]
async fn explicit_jwks_url_skips_discovery() {
    let idp = TestIssuer::start().await;
    let verifier = OidcVerifier::new(
        idp.config().with_jwks_url(idp.jwks_url()),
        reqwest::Client::new(),
    );
    verifier.verify(&idp.token("alice", &[])).await.unwrap();
    assert_eq!(idp.discovery_fetches(), 0);
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn discovery_with_trailing_slash_issuer_must_match_exactly() {
    let idp = TestIssuer::start().await;
    // Discovery URL is built fine from "…/", but the document names the
    // issuer without the slash, which is a configuration error.
    let config = OidcConfig::new(format!("{}/", idp.issuer()), "canopy");
    let verifier = OidcVerifier::new(config, reqwest::Client::new());
    let err = verifier.verify(&idp.token("alice", &[])).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("names issuer"), "{err}");
}

#[tokio::test]
async fn concurrent_first_use_fetches_once() {
    let idp = TestIssuer::start().await;
    let verifier = verifier_for(&idp);
    let token = idp.token("alice", &[]);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let verifier = verifier.clone();
            let token = token.clone();
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(idp.jwks_fetches(), 1);
    assert_eq!(idp.discovery_fetches(), 1);
}
