//! The console at scale: 10,000 ServiceAccounts and 100,000 IssuedTokens in one namespace,
//! handed to the watch cache as the store's first list when the server starts, and the
//! console's endpoints answering one filtered, bounded page at a time.

use std::sync::Arc;
use std::time::Instant;

use badge_apiserver::console::search::MAX_LIMIT;
use badge_apiserver::console::{ApiBackend, Console};
use badge_apiserver::handler::PeerIdentity;
use badge_apiserver::limits::{Limits, RequestFilters};
use badge_auth::UserInfo;
use badge_store::{KeyValue, ListOptions, ListResult, Revision, Store, WatchStream};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::support::Ring;

const NAMESPACE: &str = "scale";
const ACCOUNTS: usize = 10_000;
const TOKENS_PER_ACCOUNT: usize = 10;
const HOST: &str = "console.test:8443";

fn account(i: usize) -> String {
    format!("sa-{i:05}")
}

/// A store whose lists also hold a fixed snapshot of objects that were never written, so
/// the watch cache starts with them; everything else goes to the store beneath. Loading a
/// hundred thousand objects this way costs their encoding only.
struct Preloaded {
    inner: Arc<dyn Store>,
    /// By key, ascending.
    snapshot: Vec<KeyValue>,
}

#[async_trait::async_trait]
impl Store for Preloaded {
    async fn get(&self, key: &str) -> badge_store::Result<(Option<KeyValue>, Revision)> {
        let (found, revision) = self.inner.get(key).await?;
        let preloaded = || {
            self.snapshot
                .binary_search_by(|kv| kv.key.as_str().cmp(key))
                .ok()
                .map(|at| self.snapshot[at].clone())
        };
        Ok((found.or_else(preloaded), revision))
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> badge_store::Result<ListResult> {
        let mut stored = self
            .inner
            .list(
                prefix,
                ListOptions {
                    limit: 0,
                    ..options.clone()
                },
            )
            .await?;
        let after = options.start_after.as_deref().unwrap_or("");
        stored.items.extend(
            self.snapshot
                .iter()
                .filter(|kv| kv.key.starts_with(prefix) && kv.key.as_str() > after)
                .cloned(),
        );
        stored.items.sort_by(|a, b| a.key.cmp(&b.key));
        if options.limit > 0 && stored.items.len() > options.limit {
            stored.remaining = (stored.items.len() - options.limit) as u64;
            stored.items.truncate(options.limit);
        }
        Ok(stored)
    }

    async fn create(&self, key: &str, value: Bytes) -> badge_store::Result<Revision> {
        self.inner.create(key, value).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> badge_store::Result<Revision> {
        self.inner.update(key, value, expected).await
    }

    async fn delete(&self, key: &str, expected: Revision) -> badge_store::Result<Revision> {
        self.inner.delete(key, expected).await
    }

    async fn current_revision(&self) -> badge_store::Result<Revision> {
        self.inner.current_revision().await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> badge_store::Result<WatchStream> {
        self.inner.watch(prefix, after).await
    }

    async fn compact(&self, revision: Revision) -> badge_store::Result<()> {
        self.inner.compact(revision).await
    }

    async fn compacted_revision(&self) -> badge_store::Result<Revision> {
        self.inner.compacted_revision().await
    }
}

/// The namespace, the ServiceAccounts and their tokens' records, as stored objects.
fn snapshot() -> Vec<KeyValue> {
    let mut objects = Vec::with_capacity(1 + ACCOUNTS * (1 + TOKENS_PER_ACCOUNT));
    let mut put = |key: String, object: Value| {
        objects.push(KeyValue {
            key,
            value: Bytes::from(serde_json::to_vec(&object).unwrap()),
            create_revision: 1,
            mod_revision: 1,
        });
    };
    put(
        format!("/registry/namespaces/{NAMESPACE}"),
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": NAMESPACE, "uid": "uid-scale",
                            "creationTimestamp": "2026-01-01T00:00:00Z"},
               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
    );
    for i in 0..ACCOUNTS {
        let name = account(i);
        put(
            format!("/registry/serviceaccounts/{NAMESPACE}/{name}"),
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": name, "namespace": NAMESPACE, "uid": format!("uid-{name}"),
                                "creationTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        for t in 0..TOKENS_PER_ACCOUNT {
            let jti = format!("{name}-token-{t}");
            put(
                format!("/registry/issuedtokens/{NAMESPACE}/{jti}"),
                json!({"apiVersion": "identity.badge.dev/v1", "kind": "IssuedToken",
                       "metadata": {"name": jti, "namespace": NAMESPACE, "uid": format!("uid-{jti}"),
                                    "creationTimestamp": "2026-01-01T00:00:00Z",
                                    "labels": {"identity.badge.dev/service-account": name,
                                               "identity.badge.dev/token-kind": "bound"}},
                       "spec": {"serviceAccountName": name, "serviceAccountUID": format!("uid-{name}"),
                                "audiences": ["https://kubernetes.default.svc.cluster.local"],
                                "keyID": "k1", "issuedAt": "2026-01-01T00:00:00Z",
                                "expiresAt": "2099-01-01T00:00:00Z", "revoked": false}}),
            );
        }
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    objects
}

fn admin() -> Arc<PeerIdentity> {
    Arc::new(PeerIdentity(Some(UserInfo::from_certificate(
        "kubernetes-admin",
        &["system:masters".to_string()],
    ))))
}

async fn send(
    console: &Console<ApiBackend>,
    method: &str,
    path: &str,
    body: &str,
    cookie: Option<&str>,
) -> (StatusCode, http::HeaderMap, Value) {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, HOST);
    if method != "GET" {
        builder = builder
            .header(header::ORIGIN, format!("https://{HOST}"))
            .header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    let request = builder.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let response = console.handle(request, admin()).await;
    let code = response.status();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
    (code, parts.headers, value)
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_answers_filtered_bounded_pages_over_ten_thousand_accounts_and_a_hundred_thousand_tokens()
{
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Preloaded {
        inner: Arc::new(badge_store::sqlite::SqliteStore::open(&dir.path().join("store.db")).unwrap()),
        snapshot: snapshot(),
    });
    let ring = Ring::build_over(store, dir, |api| api).await;
    let loaded = started.elapsed();
    let console = Console::new(ApiBackend {
        api: ring.api.clone(),
        filters: RequestFilters::new(&Limits::default()),
    });
    let (code, headers, session) = send(
        &console,
        "POST",
        "/console/login",
        r#"{"certificate":true}"#,
        None,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{session}");
    let cookie = headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let get = |path: String| {
        let console = &console;
        let cookie = cookie.clone();
        async move {
            let started = Instant::now();
            let (code, _, body) = send(console, "GET", &path, "", Some(&cookie)).await;
            assert_eq!(code, StatusCode::OK, "{path}: {body}");
            (body, started.elapsed())
        }
    };
    let accounts = format!("/console/search/api/v1/namespaces/{NAMESPACE}/serviceaccounts");

    // A search the server filters: ten names of ten thousand.
    let (found, searched) = get(format!("{accounts}?contains=SA-0123&limit=50")).await;
    let expected: Vec<String> = (1230..1240).map(account).collect();
    assert_eq!(names(&found), expected);
    assert!(
        found["metadata"].get("continue").is_none(),
        "{}",
        found["metadata"]
    );

    // Unfiltered, one bounded page after another, in order and without repeats.
    let (first, first_page) = get(format!("{accounts}?limit=50")).await;
    assert_eq!(names(&first), (0..50).map(account).collect::<Vec<_>>());
    let next = first["metadata"]["continue"].as_str().unwrap();
    let (second, _) = get(format!("{accounts}?limit=50&continue={next}")).await;
    assert_eq!(names(&second), (50..100).map(account).collect::<Vec<_>>());
    // A page never holds more than the bound, whatever is asked for.
    let (big, _) = get(format!("{accounts}?limit=1000000")).await;
    assert_eq!(big["items"].as_array().unwrap().len(), MAX_LIMIT);
    assert!(big["metadata"]["continue"].is_string());

    // The tokens of the accounts on a page, selected by the API's label selector.
    let shown = (0..50).map(account).collect::<Vec<_>>().join(",");
    let selector = percent_encoding::utf8_percent_encode(
        &format!("identity.badge.dev/service-account in ({shown})"),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let (tokens, tokens_page) = get(format!(
        "/console/api/apis/identity.badge.dev/v1/namespaces/{NAMESPACE}/issuedtokens?limit=500&labelSelector={selector}"
    ))
    .await;
    assert_eq!(tokens["items"].as_array().unwrap().len(), 50 * TOKENS_PER_ACCOUNT);
    assert!(
        tokens["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["spec"]["serviceAccountName"].as_str().unwrap() < "sa-00050")
    );
    // The same page by name, through the search, as the page asks for usage records.
    let (by_name, _) = get(format!(
        "/console/search/apis/identity.badge.dev/v1/namespaces/{NAMESPACE}/issuedtokens?names=sa-00007-token-3,sa-09999-token-9"
    ))
    .await;
    assert_eq!(names(&by_name), ["sa-00007-token-3", "sa-09999-token-9"]);

    println!(
        "console at scale: {ACCOUNTS} ServiceAccounts and {} IssuedTokens loaded in {loaded:?}; \
         search over all accounts {searched:?}, first page {first_page:?}, tokens of a page {tokens_page:?}",
        ACCOUNTS * TOKENS_PER_ACCOUNT
    );
}
