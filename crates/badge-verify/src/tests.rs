//! Replays of verifier bugs shipped elsewhere: keys rotated under a cached JWKS, tokens
//! without `aud`, algorithm confusion, issuer trailing slashes, leeway, an unreachable issuer;
//! and the signed revocation list: forged, mistyped, expired, stale during an outage.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use badge_token::claims::BoundClaims;
use badge_token::{Curve, SigningKey, TokenError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::*;

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "payments";

#[derive(Default)]
struct Published {
    keys: Vec<SigningKey>,
    max_age: Option<Duration>,
    unreachable: bool,
    fetches: usize,
    /// The signed revocation list, when the issuer publishes one.
    list: Option<String>,
    list_max_age: Option<Duration>,
    list_fetches: usize,
}

#[derive(Clone, Default)]
struct FakeIssuer(Arc<parking_lot::Mutex<Published>>);

impl FakeIssuer {
    fn publishing(keys: &[&SigningKey]) -> Self {
        let issuer = Self::default();
        issuer.publish(keys);
        issuer
    }
    fn publish(&self, keys: &[&SigningKey]) {
        self.0.lock().keys = keys.iter().map(|k| (*k).clone()).collect();
    }
    fn fetches(&self) -> usize {
        self.0.lock().fetches
    }
    fn publish_list(&self, list: String) {
        self.0.lock().list = Some(list);
    }
    fn list_fetches(&self) -> usize {
        self.0.lock().list_fetches
    }
}

impl KeySource for FakeIssuer {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let mut state = self.0.lock();
            state.fetches += 1;
            if state.unreachable {
                return Err("connection refused".to_string());
            }
            let keys: Vec<_> = state.keys.iter().map(|k| k.public().to_jwk()).collect();
            Ok(Fetched {
                jwks: serde_json::to_vec(&json!({ "keys": keys })).unwrap(),
                max_age: state.max_age,
            })
        })
    }

    fn fetch_revocations(&self) -> ListFuture<'_> {
        Box::pin(async move {
            let mut state = self.0.lock();
            state.list_fetches += 1;
            if state.unreachable {
                return Err("connection refused".to_string());
            }
            Ok(state.list.as_ref().map(|jwt| FetchedList {
                jwt: jwt.clone().into_bytes(),
                max_age: state.list_max_age,
            }))
        })
    }
}

fn verifier(issuer: &FakeIssuer) -> Verifier {
    Verifier::builder(ISSUER)
        .audience(AUDIENCE)
        .key_source(issuer.clone())
        .build()
        .unwrap()
}

fn rsa() -> SigningKey {
    SigningKey::generate_rsa(2048).unwrap()
}

fn claims(now: i64) -> Value {
    let mut claims = BoundClaims::new(
        ISSUER,
        vec![AUDIENCE.to_string()],
        "shop",
        ObjectRef::new("checkout", "sa-uid"),
        now,
        600,
    );
    claims.pod = Some(ObjectRef::new("checkout-7f9", "pod-uid"));
    claims.node = Some(NodeRef {
        name: "node-a".into(),
        uid: Some("node-uid".into()),
    });
    claims.to_value().unwrap()
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    badge_token::jwt::sign(key, claims).unwrap().into_exposed()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(start_paused = true)]
async fn a_valid_token_gives_typed_kubernetes_claims() {
    let key = rsa();
    let ec = SigningKey::generate_ec(Curve::P256).unwrap();
    let issuer = FakeIssuer::publishing(&[&key, &ec]);
    let v = verifier(&issuer);
    let now = unix_now();
    let id = v.verify(&sign(&key, &claims(now))).await.unwrap();
    assert_eq!(id.issuer.as_deref(), Some(ISSUER));
    assert_eq!(
        (id.namespace.as_str(), id.name.as_str(), id.uid.as_str()),
        ("shop", "checkout", "sa-uid")
    );
    assert_eq!(id.pod, Some(ObjectRef::new("checkout-7f9", "pod-uid")));
    assert_eq!(id.node.as_ref().map(|n| n.name.as_str()), Some("node-a"));
    assert_eq!(id.secret, None);
    assert_eq!(id.audiences, vec![AUDIENCE.to_string()]);
    assert_eq!(id.expires_at, Some(now + 600));
    assert!(id.credential_id.as_deref().unwrap().starts_with("JTI="));
    assert_eq!(id.username(), "system:serviceaccount:shop:checkout");
    // ES256 verifies too.
    assert_eq!(v.verify(&sign(&ec, &claims(now))).await.unwrap().name, "checkout");
    assert_eq!(issuer.fetches(), 1, "the second token used the cached keys");
}

#[tokio::test(start_paused = true)]
async fn keys_rotated_under_a_cached_jwks_refetch_once() {
    let old = rsa();
    let new = rsa();
    let issuer = FakeIssuer::publishing(&[&old]);
    issuer.0.lock().max_age = Some(Duration::from_secs(3600));
    let v = verifier(&issuer);
    let now = unix_now();
    v.verify(&sign(&old, &claims(now))).await.unwrap();
    assert_eq!(issuer.fetches(), 1);
    // The issuer rotates: the cached set (fresh for an hour) lacks the new kid.
    issuer.publish(&[&old, &new]);
    tokio::time::advance(Duration::from_secs(11)).await;
    let id = v.verify(&sign(&new, &claims(now))).await.unwrap();
    assert_eq!(id.name, "checkout");
    assert_eq!(issuer.fetches(), 2, "one refetch for the unknown kid");
    // A kid the issuer never published: one more fetch at most per interval, then refused.
    let stranger = rsa();
    let forged = sign(&stranger, &claims(now));
    tokio::time::advance(Duration::from_secs(11)).await;
    for _ in 0..5 {
        assert!(matches!(v.verify(&forged).await, Err(VerifyError::UnknownKey)));
    }
    assert_eq!(issuer.fetches(), 3, "unknown kids are rate-limited");
}

#[tokio::test(start_paused = true)]
async fn concurrent_unknown_kids_share_one_fetch() {
    let key = rsa();
    let issuer = FakeIssuer::publishing(&[]);
    let v = verifier(&issuer);
    let now = unix_now();
    let token = sign(&key, &claims(now));
    assert!(matches!(v.verify(&token).await, Err(VerifyError::UnknownKey)));
    issuer.publish(&[&key]);
    tokio::time::advance(Duration::from_secs(11)).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (v, token) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&token).await.is_ok() })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn cache_control_max_age_is_honoured() {
    let key = rsa();
    let issuer = FakeIssuer::publishing(&[&key]);
    issuer.0.lock().max_age = Some(Duration::from_secs(120));
    let v = verifier(&issuer);
    let token = sign(&key, &claims(unix_now()));
    v.verify(&token).await.unwrap();
    tokio::time::advance(Duration::from_secs(100)).await;
    v.verify(&token).await.unwrap();
    assert_eq!(issuer.fetches(), 1, "still fresh");
    tokio::time::advance(Duration::from_secs(30)).await;
    v.verify(&token).await.unwrap();
    assert_eq!(issuer.fetches(), 2, "refetched once max-age passed");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_issuer_keeps_the_cached_keys_verifying() {
    let key = rsa();
    let issuer = FakeIssuer::publishing(&[&key]);
    issuer.0.lock().max_age = Some(Duration::from_secs(60));
    let v = verifier(&issuer);
    let token = sign(&key, &claims(unix_now()));
    v.verify(&token).await.unwrap();
    issuer.0.lock().unreachable = true;
    tokio::time::advance(Duration::from_secs(3600)).await;
    v.verify(&token).await.unwrap();
    assert_eq!(issuer.fetches(), 2, "a refresh was tried");
    // Without any cached keys, the verifier cannot decide: not a refusal of the token.
    let cold = verifier(&issuer);
    let err = cold.verify(&token).await.unwrap_err();
    assert!(matches!(err, VerifyError::KeysUnavailable(_)), "{err}");
    assert!(!err.is_refusal());
    // Requests during a refresh that hangs are served from the stale keys meanwhile.
    tokio::time::advance(Duration::from_secs(11)).await;
    let gate = v.inner.cache.hold_refresh_for_test().await;
    tokio::time::timeout(Duration::from_secs(5), v.verify(&token))
        .await
        .expect("a verification waited for the refresh in flight")
        .unwrap();
    drop(gate);
    assert_eq!(issuer.fetches(), 3, "no fetch while one is in flight");
}

#[tokio::test(start_paused = true)]
async fn a_token_without_aud_or_for_another_audience_is_refused() {
    let key = rsa();
    let v = verifier(&FakeIssuer::publishing(&[&key]));
    let now = unix_now();
    let mut without_aud = claims(now);
    without_aud.as_object_mut().unwrap().remove("aud");
    let err = v.verify(&sign(&key, &without_aud)).await.unwrap_err();
    assert!(
        matches!(err, VerifyError::Claims(TokenError::MissingClaim("aud"))),
        "{err}"
    );
    let mut other = claims(now);
    other["aud"] = json!(["billing"]);
    let err = v.verify(&sign(&key, &other)).await.unwrap_err();
    assert!(
        matches!(err, VerifyError::Claims(TokenError::AudienceMismatch { .. })),
        "{err}"
    );
    assert!(err.is_refusal());
    // An audience is required to build a verifier at all.
    let no_audience = Verifier::builder(ISSUER)
        .key_source(FakeIssuer::default())
        .build();
    assert!(matches!(no_audience, Err(VerifyError::Config(_))));
}

#[tokio::test(start_paused = true)]
async fn algorithm_confusion_is_refused() {
    let key = rsa();
    let ec = SigningKey::generate_ec(Curve::P256).unwrap();
    let v = verifier(&FakeIssuer::publishing(&[&key, &ec]));
    let payload = b64(claims(unix_now()).to_string().as_bytes());
    // HS256 MAC'd with the RSA public key (as PEM, as the attack uses it) for secret.
    let header = b64(json!({"alg": "HS256", "kid": key.kid()}).to_string().as_bytes());
    let input = format!("{header}.{payload}");
    let secret = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.public().to_pem().as_bytes());
    let mac = aws_lc_rs::hmac::sign(&secret, input.as_bytes());
    let hs256 = format!("{input}.{}", b64(mac.as_ref()));
    assert!(matches!(
        v.verify(&hs256).await,
        Err(VerifyError::UnsupportedAlgorithm)
    ));
    // alg none, with and without a signature segment.
    let none = b64(json!({"alg": "none"}).to_string().as_bytes());
    assert!(v.verify(&format!("{none}.{payload}.")).await.is_err());
    assert!(matches!(
        v.verify(&format!("{none}.{payload}.{}", b64(b"x"))).await,
        Err(VerifyError::UnsupportedAlgorithm)
    ));
    // An ES256 header naming the RSA key's kid.
    let es_header = b64(json!({"alg": "ES256", "kid": key.kid()}).to_string().as_bytes());
    let es_input = format!("{es_header}.{payload}");
    let es_token = format!("{es_input}.{}", b64(&ec.sign(es_input.as_bytes()).unwrap()));
    assert!(matches!(
        v.verify(&es_token).await,
        Err(VerifyError::AlgorithmMismatch)
    ));
    // The key in the header is never used.
    let jwk_header = b64(json!({"alg": "RS256", "jwk": key.public().to_jwk()})
        .to_string()
        .as_bytes());
    assert!(matches!(
        v.verify(&format!("{jwk_header}.{payload}.{}", b64(b"x"))).await,
        Err(VerifyError::Malformed(_))
    ));
    // A tampered payload.
    let good = sign(&key, &claims(unix_now()));
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut tampered = claims(unix_now());
    tampered["kubernetes.io"]["namespace"] = json!("kube-system");
    parts[1] = b64(tampered.to_string().as_bytes());
    assert!(matches!(
        v.verify(&parts.join(".")).await,
        Err(VerifyError::InvalidSignature)
    ));
}

#[tokio::test(start_paused = true)]
async fn issuers_compare_exactly_including_a_trailing_slash() {
    let key = rsa();
    let issuer = FakeIssuer::publishing(&[&key]);
    let now = unix_now();
    let mut slashed = claims(now);
    slashed["iss"] = json!(format!("{ISSUER}/"));
    let err = verifier(&issuer).verify(&sign(&key, &slashed)).await.unwrap_err();
    assert!(
        matches!(err, VerifyError::Claims(TokenError::InvalidIssuer)),
        "{err}"
    );
    let slash_verifier = Verifier::builder(format!("{ISSUER}/"))
        .audience(AUDIENCE)
        .key_source(issuer.clone())
        .build()
        .unwrap();
    slash_verifier.verify(&sign(&key, &slashed)).await.unwrap();
    assert!(slash_verifier.verify(&sign(&key, &claims(now))).await.is_err());
    // Both spellings find the same discovery document.
    assert_eq!(
        discovery_url_for(ISSUER),
        discovery_url_for(&format!("{ISSUER}/"))
    );
    assert_eq!(
        discovery_url_for("https://issuer.example/tenant/"),
        "https://issuer.example/tenant/.well-known/openid-configuration"
    );
}

#[tokio::test(start_paused = true)]
async fn expiry_is_checked_with_and_without_leeway() {
    let key = rsa();
    let issuer = FakeIssuer::publishing(&[&key]);
    let now = unix_now();
    let mut expired_30s = claims(now - 700);
    expired_30s["exp"] = json!(now - 30);
    let token = sign(&key, &expired_30s);
    verifier(&issuer).verify(&token).await.unwrap();
    let strict = Verifier::builder(ISSUER)
        .audience(AUDIENCE)
        .leeway(Duration::ZERO)
        .key_source(issuer.clone())
        .build()
        .unwrap();
    let err = strict.verify(&token).await.unwrap_err();
    assert!(matches!(err, VerifyError::Claims(TokenError::Expired)), "{err}");
    let mut expired_long = claims(now - 700);
    expired_long["exp"] = json!(now - 61);
    assert!(matches!(
        verifier(&issuer).verify(&sign(&key, &expired_long)).await,
        Err(VerifyError::Claims(TokenError::Expired))
    ));
    let mut future = claims(now + 300);
    future["nbf"] = json!(now + 300);
    assert!(matches!(
        verifier(&issuer).verify(&sign(&key, &future)).await,
        Err(VerifyError::Claims(TokenError::NotYetValid))
    ));
    // A leeway above kube-apiserver's 60 s is not granted.
    let lax = Verifier::builder(ISSUER)
        .audience(AUDIENCE)
        .leeway(Duration::from_secs(3600))
        .key_source(issuer)
        .build()
        .unwrap();
    assert!(lax.verify(&sign(&key, &expired_long)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn legacy_secret_tokens_are_refused() {
    let key = rsa();
    let v = verifier(&FakeIssuer::publishing(&[&key]));
    let legacy = json!({
        "iss": "kubernetes/serviceaccount",
        "aud": [AUDIENCE],
        "sub": "system:serviceaccount:shop:checkout",
        "kubernetes.io/serviceaccount/namespace": "shop",
        "kubernetes.io/serviceaccount/secret.name": "checkout-token",
        "kubernetes.io/serviceaccount/service-account.name": "checkout",
        "kubernetes.io/serviceaccount/service-account.uid": "sa-uid",
    });
    assert!(matches!(
        v.verify(&sign(&key, &legacy)).await,
        Err(VerifyError::Claims(TokenError::InvalidIssuer))
    ));
}

#[test]
fn bearer_header_values() {
    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("bearer  abc "), Some("abc"));
    assert_eq!(bearer_token("Basic abc"), None);
    assert_eq!(bearer_token("Bearer "), None);
}

// === the signed revocation list ===

/// A list as badge's server signs it, naming bound tokens by jti and legacy ones by Secret.
fn list_claims(now: i64, jtis: &[&str], secrets: &[(&str, &str)]) -> Value {
    let mut revoked: Vec<Value> = jtis
        .iter()
        .map(|jti| json!({"namespace": "shop", "jti": jti, "exp": now + 600}))
        .collect();
    revoked.extend(
        secrets
            .iter()
            .map(|(ns, secret)| json!({"namespace": ns, "secret": secret})),
    );
    json!({"iss": ISSUER, "iat": now, "exp": now + 300, "revoked": revoked})
}

fn sign_list(key: &SigningKey, claims: &Value) -> String {
    badge_token::jwt::sign_typed(key, LIST_TYPE, claims)
        .unwrap()
        .into_exposed()
}

fn jti_of(token: &str) -> String {
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    payload["jti"].as_str().unwrap().to_string()
}

fn unavailable(result: Result<ServiceAccountIdentity, VerifyError>) -> String {
    match result {
        Err(VerifyError::RevocationsUnavailable(why)) => why,
        other => panic!("expected the list to be unavailable, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_listed_token_is_revoked_and_its_sibling_accepted() {
    let key = rsa();
    let issuer = FakeIssuer::publishing(&[&key]);
    let now = unix_now();
    let revoked = sign(&key, &claims(now));
    let sibling = sign(&key, &claims(now));
    issuer.publish_list(sign_list(&key, &list_claims(now, &[&jti_of(&revoked)], &[])));
    let v = verifier(&issuer);
    let err = v.verify(&revoked).await.unwrap_err();
    assert!(matches!(err, VerifyError::Revoked), "{err}");
    assert!(err.is_refusal());
    assert_eq!(v.verify(&sibling).await.unwrap().name, "checkout");
    // The same jti in another namespace is another token.
    let mut elsewhere = claims(now);
    elsewhere["kubernetes.io"]["namespace"] = json!("other");
    elsewhere["sub"] = json!("system:serviceaccount:other:checkout");
    elsewhere["jti"] = json!(jti_of(&revoked));
    v.verify(&sign(&key, &elsewhere)).await.unwrap();
    assert_eq!(issuer.list_fetches(), 1, "the list is cached");
}

#[tokio::test(start_paused = true)]
async fn a_legacy_token_is_revoked_by_its_secret_name_in_its_namespace() {
    let key = rsa();
    let issuer = FakeIssuer::publishing(&[&key]);
    let now = unix_now();
    issuer.publish_list(sign_list(
        &key,
        &list_claims(now, &[], &[("shop", "checkout-token")]),
    ));
    let v = Verifier::builder(ISSUER)
        .audience(AUDIENCE)
        .accept_legacy_tokens(true)
        .key_source(issuer.clone())
        .build()
        .unwrap();
    let legacy = |namespace: &str, secret: &str| {
        badge_token::LegacyClaims {
            namespace: namespace.into(),
            service_account: ObjectRef::new("checkout", "sa-uid"),
            secret_name: secret.into(),
        }
        .to_value()
    };
    let err = v
        .verify(&sign(&key, &legacy("shop", "checkout-token")))
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::Revoked), "{err}");
    let other = v
        .verify(&sign(&key, &legacy("shop", "checkout-token-2")))
        .await
        .unwrap();
    assert_eq!(other.secret, Some(ObjectRef::new("checkout-token-2", "")));
    v.verify(&sign(&key, &legacy("billing", "checkout-token")))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_forged_list_is_never_trusted() {
    let key = rsa();
    let issuer = FakeIssuer::publishing(&[&key]);
    let now = unix_now();
    let token = sign(&key, &claims(now));
    let genuine = sign_list(&key, &list_claims(now, &[&jti_of(&token)], &[]));
    // The entry removed from a genuine list: the signature no longer matches.
    let mut parts: Vec<String> = genuine.split('.').map(str::to_string).collect();
    parts[1] = b64(list_claims(now, &[], &[]).to_string().as_bytes());
    let stripped = parts.join(".");
    issuer.publish_list(stripped.clone());
    let why = unavailable(verifier(&issuer).verify(&token).await);
    assert!(why.contains("invalid signature"), "{why}");
    // Signed by a key the issuer never published.
    issuer.publish_list(sign_list(&rsa(), &list_claims(now, &[], &[])));
    let why = unavailable(verifier(&issuer).verify(&token).await);
    assert!(why.contains("no key of the issuer"), "{why}");
    // A forged list does not replace a genuine one held.
    issuer.publish_list(genuine);
    issuer.0.lock().list_max_age = Some(Duration::from_secs(60));
    let v = verifier(&issuer);
    assert!(matches!(v.verify(&token).await, Err(VerifyError::Revoked)));
    issuer.publish_list(stripped);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(matches!(v.verify(&token).await, Err(VerifyError::Revoked)));
    assert_eq!(
        issuer.list_fetches(),
        4,
        "the forged list was fetched and refused"
    );
}

#[tokio::test(start_paused = true)]
async fn a_list_of_another_type_or_issuer_or_expired_is_refused() {
    let key = rsa();
    let issuer = FakeIssuer::publishing(&[&key]);
    let now = unix_now();
    let token = sign(&key, &claims(now));
    // Signed as a token (no typ): a token can never pass for a list.
    issuer.publish_list(sign(&key, &list_claims(now, &[], &[])));
    let why = unavailable(verifier(&issuer).verify(&token).await);
    assert!(why.contains("typ"), "{why}");
    // Nor a list for a token.
    let list = sign_list(&key, &list_claims(now, &[], &[]));
    assert!(matches!(
        verifier(&FakeIssuer::publishing(&[&key])).verify(&list).await,
        Err(VerifyError::Malformed(_))
    ));
    let mut other_issuer = list_claims(now, &[], &[]);
    other_issuer["iss"] = json!("https://elsewhere.example");
    issuer.publish_list(sign_list(&key, &other_issuer));
    let why = unavailable(verifier(&issuer).verify(&token).await);
    assert!(why.contains("issuer"), "{why}");
    let mut expired = list_claims(now - 1000, &[], &[]);
    expired["exp"] = json!(now - 120);
    issuer.publish_list(sign_list(&key, &expired));
    let why = unavailable(verifier(&issuer).verify(&token).await);
    assert!(why.contains("expired"), "{why}");
    // An older list than the one held is a replay: kept out.
    let v = verifier(&issuer);
    issuer.publish_list(sign_list(&key, &list_claims(now, &[&jti_of(&token)], &[])));
    assert!(matches!(v.verify(&token).await, Err(VerifyError::Revoked)));
    issuer.publish_list(sign_list(&key, &list_claims(now - 30, &[], &[])));
    tokio::time::advance(Duration::from_secs(301)).await;
    assert!(matches!(v.verify(&token).await, Err(VerifyError::Revoked)));
}

#[tokio::test(start_paused = true)]
async fn the_list_is_cached_for_its_max_age_and_kept_only_within_the_trust_window() {
    let key = rsa();
    let issuer = FakeIssuer::publishing(&[&key]);
    issuer.0.lock().list_max_age = Some(Duration::from_secs(60));
    let now = unix_now();
    let first = sign(&key, &claims(now));
    let second = sign(&key, &claims(now));
    issuer.publish_list(sign_list(&key, &list_claims(now, &[], &[])));
    let v = Verifier::builder(ISSUER)
        .audience(AUDIENCE)
        .key_source(issuer.clone())
        .revocation_policy(RevocationPolicy {
            max_stale: Duration::from_secs(120),
        })
        .build()
        .unwrap();
    v.verify(&first).await.unwrap();
    // Revoked at the issuer: seen once the cached list's max-age has passed.
    issuer.publish_list(sign_list(&key, &list_claims(now + 1, &[&jti_of(&first)], &[])));
    tokio::time::advance(Duration::from_secs(30)).await;
    v.verify(&first).await.unwrap();
    assert_eq!(issuer.list_fetches(), 1, "still fresh");
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(matches!(v.verify(&first).await, Err(VerifyError::Revoked)));
    assert_eq!(issuer.list_fetches(), 2);

    // The issuer goes away: the last good list is used within the trust window.
    issuer.0.lock().unreachable = true;
    tokio::time::advance(Duration::from_secs(61 + 100)).await;
    assert!(matches!(v.verify(&first).await, Err(VerifyError::Revoked)));
    v.verify(&second).await.unwrap();
    assert!(issuer.list_fetches() > 2, "a refresh was tried");
    // Past it, every token fails closed: the verifier cannot tell a revoked one.
    tokio::time::advance(Duration::from_secs(21)).await;
    let err = v.verify(&second).await.unwrap_err();
    assert!(matches!(err, VerifyError::RevocationsUnavailable(_)), "{err}");
    assert!(!err.is_refusal());
    // The issuer is back: the next refresh restores verification.
    issuer.0.lock().unreachable = false;
    tokio::time::advance(Duration::from_secs(11)).await;
    v.verify(&second).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_issuer_without_a_list_is_not_checked_even_when_unreachable() {
    let key = rsa();
    let issuer = FakeIssuer::publishing(&[&key]);
    let v = verifier(&issuer);
    let token = sign(&key, &claims(unix_now()));
    v.verify(&token).await.unwrap();
    issuer.0.lock().unreachable = true;
    tokio::time::advance(Duration::from_secs(3600)).await;
    v.verify(&token).await.unwrap();
}
