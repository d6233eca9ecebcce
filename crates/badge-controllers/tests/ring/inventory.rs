//! The identity.badge.dev inventory: IssuedTokens written from TokenRequests and token use
//! in batches, never per request; read-only for clients but for `spec.revoked`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use badge_store::Store;
use badge_store::intercept::{Call, Hook, Intercepted};
use serde_json::json;

use crate::support::{Caller, Ring, jti_of};

const TOKENS: &str = "/apis/identity.badge.dev/v1/namespaces/demo/issuedtokens";
const USAGES: &str = "/apis/identity.badge.dev/v1/namespaces/demo/serviceaccountusages";

async fn ring_with_token() -> (Ring, String) {
    let ring = Ring::new().await;
    ring.namespace("demo").await;
    ring.service_account("demo", "app").await;
    let token = ring.token("demo", "app", json!({})).await;
    (ring, token)
}

/// Binds `user` to a default ClusterRole in `demo`.
async fn bind(ring: &Ring, user: &str, cluster_role: &str) {
    ring.create(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/demo/rolebindings",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": format!("{user}-{cluster_role}")},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
    )
    .await;
}

#[tokio::test]
async fn token_requests_and_uses_land_in_the_records_at_the_flush() {
    let (ring, token) = ring_with_token().await;
    let admin = Caller::admin();
    let jti = jti_of(&token);
    assert!(
        ring.get(&admin, TOKENS).await.names().is_empty(),
        "nothing is written on the request path"
    );
    let report = ring.api.flush_usage().await;
    assert_eq!(report.created, 1, "{report:?}");

    let record = ring.get(&admin, &format!("{TOKENS}/{jti}")).await;
    assert_eq!(record.code, 200, "{}", record.body);
    let spec = &record.body["spec"];
    assert_eq!(spec["serviceAccountName"], "app");
    assert_eq!(spec["requester"]["username"], "kubernetes-admin");
    assert_eq!(spec["audiences"], json!([crate::support::ISSUER]));
    // Written only once true: every live token's record would otherwise carry it.
    assert!(spec.get("revoked").is_none(), "{spec}");
    assert!(!spec["keyID"].as_str().unwrap().is_empty());
    assert!(spec["expiresAt"].as_str().unwrap() > spec["issuedAt"].as_str().unwrap());
    let selected = |selector: &str| {
        let path = format!("{TOKENS}?{selector}");
        let ring = &ring;
        async move { ring.get(&Caller::admin(), &path).await.names() }
    };
    assert_eq!(
        selected("labelSelector=identity.badge.dev/service-account=app").await,
        std::slice::from_ref(&jti)
    );
    assert!(
        selected("labelSelector=identity.badge.dev/service-account=other")
            .await
            .is_empty()
    );
    assert_eq!(
        selected("fieldSelector=spec.serviceAccountName=app").await,
        std::slice::from_ref(&jti)
    );

    // A TokenReview is a use; then an API request with the token is the latest one.
    let review = ring
        .call(
            &admin,
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            Some(
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                         "spec": {"token": token}}),
            ),
        )
        .await;
    assert_eq!(review.body["status"]["authenticated"], true, "{}", review.body);
    let who = ring.use_token(&token, &[("user-agent", "ring-test/1")]).await;
    assert_eq!(who.code, 201, "{}", who.body);
    let unused = ring.get(&admin, &format!("{TOKENS}/{jti}")).await;
    assert!(unused.body.get("status").is_none(), "{}", unused.body);

    let report = ring.api.flush_usage().await;
    assert_eq!(report.updated, 1, "{report:?}");
    let record = ring.get(&admin, &format!("{TOKENS}/{jti}")).await;
    let status = &record.body["status"];
    assert_eq!(status["useCount"], 2, "{}", record.body);
    assert_eq!(status["lastUsed"]["userAgent"], "ring-test/1");
    assert!(status["lastUsed"]["time"].as_str().is_some());

    let usage = ring.get(&admin, &format!("{USAGES}/app")).await;
    assert_eq!(usage.code, 200, "{}", usage.body);
    let status = &usage.body["status"];
    assert_eq!(status["lastAuthenticated"]["credentialID"], format!("JTI={jti}"));
    assert_eq!(status["lastAuthenticated"]["userAgent"], "ring-test/1");
    assert!(status["lastTokenIssued"].as_str().is_some());
    assert_eq!(status["liveTokens"], 1);

    // What the store and the watch cache keep per record, used and with its status.
    let key = format!("/registry/issuedtokens/demo/{jti}");
    let (stored, _) = ring.api.registry.store().get(&key).await.unwrap();
    let bytes = stored.unwrap().value.len();
    assert!(bytes < 1024, "an IssuedToken takes {bytes} bytes");

    // Nothing new: a flush writes nothing.
    assert_eq!(ring.api.flush_usage().await, Default::default());
}

#[tokio::test]
async fn clients_may_read_and_revoke_but_not_write_records() {
    let (ring, token) = ring_with_token().await;
    ring.api.flush_usage().await;
    let jti = jti_of(&token);
    let admin = Caller::admin();
    let path = format!("{TOKENS}/{jti}");

    let create = ring
        .call(
            &admin,
            "POST",
            TOKENS,
            Some(
                &json!({"apiVersion": "identity.badge.dev/v1", "kind": "IssuedToken",
                         "metadata": {"name": "forged"}, "spec": {"serviceAccountName": "app"}}),
            ),
        )
        .await;
    assert_eq!(create.code, 405, "{}", create.body);
    assert_eq!(create.body["reason"], "MethodNotAllowed");
    assert_eq!(
        create.body["message"],
        "create is not supported on resources of kind \"issuedtokens.identity.badge.dev\""
    );
    let delete = ring.call(&admin, "DELETE", &path, None).await;
    assert_eq!(delete.code, 405, "{}", delete.body);
    // Every other way to name the records: the collection, here and across namespaces.
    for collection in [
        TOKENS,
        "/apis/identity.badge.dev/v1/issuedtokens",
        USAGES,
        "/apis/identity.badge.dev/v1/serviceaccountusages",
    ] {
        let reply = ring.call(&admin, "DELETE", collection, None).await;
        assert_eq!(reply.code, 405, "DELETE {collection}: {}", reply.body);
        assert_eq!(reply.body["reason"], "MethodNotAllowed");
    }
    // No status subresource a client could write last uses through.
    for target in [path.clone(), format!("{USAGES}/app")] {
        for method in ["PATCH", "PUT"] {
            let reply = ring
                .call(
                    &admin,
                    method,
                    &format!("{target}/status"),
                    Some(&json!({"status": {"useCount": 1000}})),
                )
                .await;
            assert_eq!(reply.code, 404, "{method} {target}/status: {}", reply.body);
        }
    }
    let usage_patch = ring
        .call(
            &admin,
            "PATCH",
            &format!("{USAGES}/app"),
            Some(&json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await;
    assert_eq!(usage_patch.code, 405, "{}", usage_patch.body);

    let widen = ring
        .call(
            &admin,
            "PATCH",
            &path,
            Some(&json!({"spec": {"audiences": ["vault"]}})),
        )
        .await;
    assert_eq!(widen.code, 422, "{}", widen.body);
    assert_eq!(widen.body["reason"], "Invalid");
    assert!(
        widen.body["message"]
            .as_str()
            .unwrap()
            .contains("spec.audiences: Invalid value: [\"vault\"]: field is immutable"),
        "{}",
        widen.body
    );
    let forge_use = ring
        .call(
            &admin,
            "PATCH",
            &path,
            Some(&json!({"status": {"useCount": 1000}})),
        )
        .await;
    assert_eq!(forge_use.code, 200, "{}", forge_use.body);
    assert!(
        forge_use.body.get("status").is_none(),
        "a client's status is ignored: {}",
        forge_use.body
    );

    // The default roles: view reads, edit reads, admin may revoke.
    for (user, role) in [("vera", "view"), ("eddie", "edit"), ("ada", "admin")] {
        bind(&ring, user, role).await;
    }
    for user in ["vera", "eddie", "ada"] {
        let caller = Caller::user(user);
        // The aggregated roles and the bindings reach the RBAC index asynchronously.
        let mut code = 0;
        for _ in 0..500 {
            code = ring.get(&caller, TOKENS).await.code;
            if code == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(code, 200, "{user} lists");
        assert_eq!(ring.get(&caller, USAGES).await.code, 200, "{user} lists usages");
    }
    let revoke = json!({"spec": {"revoked": true}});
    for user in ["vera", "eddie"] {
        let reply = ring
            .call(&Caller::user(user), "PATCH", &path, Some(&revoke))
            .await;
        assert_eq!(reply.code, 403, "{user}: {}", reply.body);
    }
    let reply = ring
        .call(&Caller::user("ada"), "PATCH", &path, Some(&revoke))
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    assert_eq!(reply.body["spec"]["revoked"], true);
}

#[tokio::test]
async fn the_group_is_discovered_and_printed() {
    let (ring, _token) = ring_with_token().await;
    ring.api.flush_usage().await;
    let admin = Caller::admin();
    let group = ring.get(&admin, "/apis/identity.badge.dev/v1").await;
    assert_eq!(group.code, 200, "{}", group.body);
    let resources = group.body["resources"].as_array().unwrap();
    let tokens = resources.iter().find(|r| r["name"] == "issuedtokens").unwrap();
    assert_eq!(tokens["kind"], "IssuedToken");
    assert_eq!(tokens["namespaced"], true);
    assert_eq!(
        tokens["verbs"],
        json!(["get", "list", "patch", "update", "watch"])
    );
    let usages = resources
        .iter()
        .find(|r| r["name"] == "serviceaccountusages")
        .unwrap();
    assert_eq!(usages["verbs"], json!(["get", "list", "watch"]));
    let groups = ring.get(&admin, "/apis").await;
    assert!(
        groups.body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "identity.badge.dev"),
        "{}",
        groups.body
    );

    let table = ring
        .call_with(
            &admin,
            "GET",
            TOKENS,
            None,
            &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
        )
        .await;
    assert_eq!(table.code, 200, "{}", table.body);
    let columns: Vec<&str> = table.body["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Service Account",
            "Bound To",
            "Expires",
            "Last Used",
            "Uses",
            "Revoked",
            "Key ID",
            "Requester",
            "Age"
        ]
    );
    let cells = &table.body["rows"][0]["cells"];
    assert_eq!(cells[1], "app");
    assert_eq!(cells[4], "<never>");
    assert_eq!(cells[5], 0);
}

/// Counts the store transactions that write identity.badge.dev records: a batch, or a
/// single write of one.
#[derive(Default)]
struct IdentityWrites(AtomicUsize);

impl Hook for IdentityWrites {
    fn before(&self, call: &Call<'_>) -> badge_store::Result<()> {
        let identity = ["/registry/issuedtokens/", "/registry/serviceaccountusages/"];
        let written = call.written_keys();
        if written
            .iter()
            .any(|key| identity.iter().any(|prefix| key.starts_with(prefix)))
        {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_flush_of_new_records_and_uses_is_one_store_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let identity_writes = Arc::new(IdentityWrites::default());
    let sqlite = Arc::new(badge_store::sqlite::SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let store = Arc::new(Intercepted::new(sqlite, identity_writes.clone()));
    let ring = Ring::build_over(store, dir, |api| api).await;
    ring.namespace("demo").await;
    ring.service_account("demo", "app").await;
    ring.service_account("demo", "other").await;
    let mut used = Vec::new();
    for _ in 0..5 {
        used.push(ring.token("demo", "app", json!({})).await);
    }
    let report = ring.api.flush_usage().await;
    assert_eq!(report.created, 5, "{report:?}");

    // Ten new tokens, one of them used before its record is written, and the five older
    // ones used.
    let mut new = Vec::new();
    for i in 0..10 {
        let account = if i % 2 == 0 { "app" } else { "other" };
        new.push(ring.token("demo", account, json!({})).await);
    }
    for token in used.iter().chain(&new[..1]) {
        let who = ring.use_token(token, &[("user-agent", "ring-test/1")]).await;
        assert_eq!(who.code, 201, "{}", who.body);
    }
    let before = identity_writes.0.load(Ordering::SeqCst);
    let report = ring.api.flush_usage().await;
    assert_eq!(
        identity_writes.0.load(Ordering::SeqCst) - before,
        1,
        "one store transaction: {report:?}"
    );
    assert_eq!(
        (report.created, report.updated, report.deferred),
        (10, 6, 0),
        "{report:?}"
    );

    let admin = Caller::admin();
    for token in used.iter().chain(&new[..1]) {
        let record = ring.get(&admin, &format!("{TOKENS}/{}", jti_of(token))).await;
        assert_eq!(record.body["status"]["useCount"], 1, "{}", record.body);
        assert_eq!(record.body["status"]["lastUsed"]["userAgent"], "ring-test/1");
    }
    assert_eq!(ring.get(&admin, TOKENS).await.names().len(), 15);
    let app = ring.get(&admin, &format!("{USAGES}/app")).await;
    assert_eq!(app.body["status"]["liveTokens"], 10, "{}", app.body);
    assert!(app.body["status"]["lastAuthenticated"]["credentialID"].is_string());
    let other = ring.get(&admin, &format!("{USAGES}/other")).await;
    assert_eq!(other.body["status"]["liveTokens"], 5, "{}", other.body);
    assert!(other.body["status"]["lastTokenIssued"].is_string());
}

/// Not a check but a measurement: how many records per second a flush writes, batched and
/// over a store that takes one transaction per record (as flushes wrote before batches).
/// `BADGE_FLUSH_RECORDS` records are issued and flushed, then each used once and flushed.
/// Run with `cargo test --release -p badge-controllers --test ring -- --ignored
/// --nocapture flush_rate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn flush_rate() {
    /// SQLite without batches: every op of a batch is its own transaction.
    struct Unbatched;

    impl Hook for Unbatched {
        fn before(&self, _call: &Call<'_>) -> badge_store::Result<()> {
            Ok(())
        }

        fn batches(&self) -> bool {
            false
        }
    }

    let records: usize = std::env::var("BADGE_FLUSH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000);
    for batched in [false, true] {
        // On disk, not in memory: the cost measured is the fsync per transaction.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let sqlite = badge_store::sqlite::SqliteStore::open(&dir.path().join("store.db")).unwrap();
        let store: Arc<dyn Store> = if batched {
            Arc::new(sqlite)
        } else {
            Arc::new(Intercepted::new(Arc::new(sqlite), Unbatched))
        };
        let ring = Ring::build_over(store, dir, |api| api).await;
        ring.namespace("demo").await;
        let account = ring.service_account("demo", "app").await;
        let uid = account["metadata"]["uid"].as_str().unwrap().to_string();
        let now = badge_api::clock::now();
        let mut credentials = Vec::with_capacity(records);
        for i in 0..records {
            let jti = format!("jti-{i:08}");
            ring.api.usage.issued(badge_apiserver::usage::IssuedRecord::new(
                "demo",
                "app",
                &uid,
                &jti,
                "key-1",
                &[crate::support::ISSUER.to_string()],
                None,
                "kubernetes-admin",
                now.as_second(),
                now.as_second() + 3600,
            ));
            credentials.push(Arc::new(badge_auth::TokenCredential {
                namespace: "demo".into(),
                service_account: "app".into(),
                record: jti,
                legacy: false,
                expires_at: Some(now.as_second() + 3600),
            }));
        }
        let started = std::time::Instant::now();
        let report = ring.api.flush_usage().await;
        let created = started.elapsed();
        assert_eq!(report.created, records, "{report:?}");
        for credential in &credentials {
            ring.api
                .usage
                .record(credential, now, Some([10, 0, 0, 1].into()), "driver/1");
        }
        let started = std::time::Instant::now();
        let report = ring.api.flush_usage().await;
        let updated = started.elapsed();
        assert_eq!(report.updated, records, "{report:?}");
        let rate = |elapsed: std::time::Duration| records as f64 / elapsed.as_secs_f64();
        eprintln!(
            "{}: {records} new records in {created:.2?} ({:.0}/s), {records} uses in {updated:.2?} ({:.0}/s)",
            if batched {
                "batched"
            } else {
                "one transaction per record"
            },
            rate(created),
            rate(updated),
        );
    }
}

/// The live count reads each record's label and expiry from the cache: unexpired and legacy
/// records of the account count; expired ones and other accounts' do not.
#[tokio::test]
async fn live_tokens_count_the_unexpired_and_legacy_records_of_one_account() {
    let ring = Ring::new().await;
    ring.namespace("demo").await;
    let registry = &ring.api.registry;
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let at = |offset: i64| now.as_second() + offset;
    let records = [
        ("live-1", "app", Some(at(3600))),
        ("live-2", "app", Some(at(1))),
        ("expired", "app", Some(at(-1))),
        ("expires-now", "app", Some(at(0))),
        ("legacy", "app", None),
        ("elsewhere", "other", Some(at(3600))),
    ];
    for (name, account, expires) in records {
        let mut record = badge_apiserver::usage::IssuedRecord::new(
            "demo",
            account,
            "uid",
            name,
            "kid",
            &[],
            None,
            "admin",
            at(-7200),
            expires.unwrap_or(0),
        )
        .to_object();
        if expires.is_none() {
            record["spec"].as_object_mut().unwrap().remove("expiresAt");
        }
        registry
            .create(
                badge_api::resources::ISSUEDTOKENS,
                "demo",
                record,
                &badge_registry::WriteOptions::default(),
            )
            .await
            .unwrap();
    }
    registry.sync().await.unwrap();
    let live = |account: &'static str| badge_registry::identity::live_tokens(registry, "demo", account, now);
    assert_eq!(live("app").await.unwrap(), 3);
    assert_eq!(live("other").await.unwrap(), 1);
    assert_eq!(live("nobody").await.unwrap(), 0);
}

/// A ServiceAccount name may be 253 characters, a label value only 63: its tokens' records
/// are written without the ServiceAccount label, still found by `spec.serviceAccountName`
/// and counted as its live tokens, rather than refused at every flush.
#[tokio::test]
async fn a_service_account_named_past_a_label_values_length_still_gets_its_records() {
    let ring = Ring::new().await;
    ring.namespace("demo").await;
    let long = format!("a{}", "b".repeat(99));
    ring.service_account("demo", &long).await;
    let token = ring.token("demo", &long, json!({})).await;
    let jti = jti_of(&token);
    let report = ring.api.flush_usage().await;
    assert_eq!((report.created, report.dropped), (1, 0), "{report:?}");
    let admin = Caller::admin();
    let record = ring.get(&admin, &format!("{TOKENS}/{jti}")).await;
    assert_eq!(record.code, 200, "{}", record.body);
    assert_eq!(record.body["spec"]["serviceAccountName"], long.as_str());
    let labels = &record.body["metadata"]["labels"];
    assert!(
        labels.get("identity.badge.dev/service-account").is_none(),
        "{labels}"
    );
    assert_eq!(labels["identity.badge.dev/token-kind"], "bound");
    let selected = ring
        .get(
            &admin,
            &format!("{TOKENS}?fieldSelector=spec.serviceAccountName={long}"),
        )
        .await;
    assert_eq!(selected.names(), std::slice::from_ref(&jti));
    let usage = ring.get(&admin, &format!("{USAGES}/{long}")).await;
    assert_eq!(usage.code, 200, "{}", usage.body);
    assert_eq!(usage.body["status"]["liveTokens"], 1, "{}", usage.body);
    // Nothing is left over to be tried again.
    let again = ring.api.flush_usage().await;
    assert_eq!(
        (again.created, again.dropped, again.deferred),
        (0, 0, 0),
        "{again:?}"
    );
}

/// A record the store refuses for what it is (here too large: a TokenRequest's audiences
/// are not bounded, the store's values are) is given up at once, not tried again at every
/// flush; the records beside it in the batch are written.
#[tokio::test]
async fn a_record_the_store_refuses_as_too_large_is_dropped_not_retried() {
    const MAX_VALUE: usize = 32 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = badge_store::sqlite::SqliteStore::open(&dir.path().join("store.db"))
        .unwrap()
        .with_max_value_bytes(MAX_VALUE);
    let ring = Ring::build_over(Arc::new(sqlite), dir, |api| api).await;
    ring.namespace("demo").await;
    ring.service_account("demo", "app").await;
    let audiences: Vec<String> = (0..80).map(|i| format!("{i}-{}", "a".repeat(500))).collect();
    let large = ring.token("demo", "app", json!({"audiences": audiences})).await;
    let small = ring.token("demo", "app", json!({})).await;
    let who = ring.use_token(&small, &[]).await;
    assert_eq!(who.code, 201, "{}", who.body);

    let report = ring.api.flush_usage().await;
    assert_eq!((report.created, report.dropped), (1, 1), "{report:?}");
    let admin = Caller::admin();
    let refused = ring.get(&admin, &format!("{TOKENS}/{}", jti_of(&large))).await;
    assert_eq!(refused.code, 404, "{}", refused.body);
    let written = ring.get(&admin, &format!("{TOKENS}/{}", jti_of(&small))).await;
    assert_eq!(written.code, 200, "{}", written.body);
    assert_eq!(written.body["status"]["useCount"], 1, "{}", written.body);

    let again = ring.api.flush_usage().await;
    assert_eq!(again, Default::default(), "nothing is tried again: {again:?}");
}

/// A used token's status is written into its record as stored, everything else of it kept
/// byte for byte: what a client changed (a label of its own, an annotation) and what the
/// server wrote (uid, creation time).
#[tokio::test]
async fn a_use_rewrites_only_the_status_of_a_record() {
    let ring = Ring::new().await;
    ring.namespace("demo").await;
    ring.service_account("demo", "app").await;
    let token = ring.token("demo", "app", json!({})).await;
    assert_eq!(ring.api.flush_usage().await.created, 1);
    let admin = Caller::admin();
    let path = format!("{TOKENS}/{}", jti_of(&token));
    let labelled = ring
        .call(
            &admin,
            "PATCH",
            &path,
            Some(&json!({"metadata": {"labels": {"team": "blue"}, "annotations": {"note": "é\"x"}}})),
        )
        .await;
    assert_eq!(labelled.code, 200, "{}", labelled.body);
    for agent in ["ring-test/1", "ring-test/2"] {
        let review = ring.use_token(&token, &[("user-agent", agent)]).await;
        assert_eq!(review.code, 201, "{}", review.body);
        let report = ring.api.flush_usage().await;
        assert_eq!(report.updated, 1, "{report:?}");
    }
    let record = ring.get(&admin, &path).await;
    assert_eq!(record.body["status"]["useCount"], 2, "{}", record.body);
    assert_eq!(record.body["status"]["lastUsed"]["userAgent"], "ring-test/2");
    let mut expected = labelled.body.clone();
    let mut got = record.body.clone();
    for object in [&mut expected, &mut got] {
        let object = object.as_object_mut().unwrap();
        object.remove("status");
        object["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
    }
    assert_eq!(got, expected);
    assert_eq!(got["metadata"]["annotations"]["note"], "é\"x");
}
