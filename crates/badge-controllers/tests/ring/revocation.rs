//! Revoking one token: `spec.revoked` on its IssuedToken reaches the authenticator through
//! the watch cache, on cache hits too, and the revocation list carries it.

use base64::Engine;
use serde_json::{Value, json};

use crate::support::{Caller, Ring, jti_of};

async fn whoami_code(ring: &Ring, token: &str) -> u16 {
    ring.use_token(token, &[]).await.code
}

fn list_claims(list: &str) -> Value {
    let payload = list.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_revoked_token_is_refused_and_listed_while_its_sibling_works() {
    let ring = Ring::new().await;
    ring.namespace("demo").await;
    ring.service_account("demo", "app").await;
    let token = ring.token("demo", "app", json!({})).await;
    let sibling = ring.token("demo", "app", json!({})).await;
    // Both verified and cached before the revocation.
    assert_eq!(whoami_code(&ring, &token).await, 201);
    assert_eq!(whoami_code(&ring, &sibling).await, 201);
    ring.api.flush_usage().await;
    let jti = jti_of(&token);
    let path = format!("/apis/identity.badge.dev/v1/namespaces/demo/issuedtokens/{jti}");
    let reply = ring
        .call(
            &Caller::admin(),
            "PATCH",
            &path,
            Some(&json!({"spec": {"revoked": true}})),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);

    let mut code = 0;
    for _ in 0..500 {
        code = whoami_code(&ring, &token).await;
        if code == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(code, 401, "the revoked token, from the verified cache");
    assert_eq!(whoami_code(&ring, &sibling).await, 201);
    assert_eq!(
        ring.api
            .metrics
            .token_revocations
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    let list = ring
        .call(&Caller::admin(), "GET", "/openid/v1/revocations", None)
        .await;
    assert_eq!(list.code, 200, "{}", list.body);
    let claims = list_claims(list.body.as_str().unwrap());
    assert_eq!(claims["iss"], crate::support::ISSUER);
    let revoked = claims["revoked"].as_array().unwrap();
    assert_eq!(revoked.len(), 1, "{claims}");
    assert_eq!(revoked[0]["jti"], jti.as_str());
    assert_eq!(revoked[0]["namespace"], "demo");

    // Un-revoking (an admin's update) restores the token.
    let reply = ring
        .call(
            &Caller::admin(),
            "PATCH",
            &path,
            Some(&json!({"spec": {"revoked": false}})),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    for _ in 0..500 {
        code = whoami_code(&ring, &token).await;
        if code == 201 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(code, 201);
}

#[tokio::test]
async fn discovery_points_at_the_list() {
    let ring = Ring::new().await;
    let doc = ring
        .call(&Caller::admin(), "GET", "/.well-known/openid-configuration", None)
        .await;
    assert_eq!(doc.code, 200, "{}", doc.body);
    assert_eq!(
        doc.body["revocation_list_uri"],
        "https://127.0.0.1/openid/v1/revocations"
    );
}
