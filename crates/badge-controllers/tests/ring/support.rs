//! A server assembled as `badge server` assembles it, over SQLite in a temporary directory,
//! and a client that hands it requests directly.

use std::sync::Arc;
use std::time::Duration;

use badge_apiserver::ApiServer;
use badge_apiserver::handler::PeerIdentity;
use badge_apiserver::serviceaccount::{CacheTokenGetter, TokenConfig, TokenIssuer};
use badge_auth::UserInfo;
use badge_keys::{KeyType, ServiceAccountKeys, StoredRing};
use badge_registry::Registry;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

pub(crate) const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Who sends a request.
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    /// A verified client certificate.
    Cert(String, Vec<String>),
    /// An `Authorization` header value.
    Header(String),
    /// A client certificate and an `Authorization` header at once.
    CertAndHeader(String, Vec<String>, String),
    Anonymous,
}

impl Caller {
    pub(crate) fn admin() -> Caller {
        Caller::Cert("kubernetes-admin".into(), vec!["system:masters".into()])
    }

    pub(crate) fn user(name: &str) -> Caller {
        Caller::Cert(name.into(), Vec::new())
    }

    pub(crate) fn node(name: &str) -> Caller {
        Caller::Cert(format!("system:node:{name}"), vec!["system:nodes".into()])
    }

    pub(crate) fn bearer(token: &str) -> Caller {
        Caller::Header(format!("Bearer {token}"))
    }

    fn peer(&self) -> PeerIdentity {
        match self {
            Caller::Cert(name, groups) | Caller::CertAndHeader(name, groups, _) => {
                PeerIdentity(Some(UserInfo::from_certificate(name, groups)))
            }
            _ => PeerIdentity(None),
        }
    }

    fn authorization(&self) -> Option<&str> {
        match self {
            Caller::Header(h) | Caller::CertAndHeader(_, _, h) => Some(h),
            _ => None,
        }
    }
}

/// A reply, its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub(crate) struct Reply {
    pub code: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub(crate) fn names(&self) -> Vec<String> {
        self.body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| i["metadata"]["name"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One server and its store.
pub(crate) struct Ring {
    pub api: Arc<ApiServer>,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

impl Ring {
    pub(crate) async fn new() -> Ring {
        Ring::build(|api| api).await
    }

    /// A server whose assembly `finish` may change (an authorizer, an audit sink).
    pub(crate) async fn build(finish: impl FnOnce(ApiServer) -> ApiServer) -> Ring {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn badge_store::Store> =
            Arc::new(badge_store::sqlite::SqliteStore::open(&dir.path().join("store.db")).unwrap());
        Ring::build_over(store, dir, finish).await
    }

    /// [`Ring::build`] over `store`, which lives in `dir`.
    pub(crate) async fn build_over(
        store: Arc<dyn badge_store::Store>,
        dir: tempfile::TempDir,
        finish: impl FnOnce(ApiServer) -> ApiServer,
    ) -> Ring {
        let registry = Registry::start(store.clone(), 1000).await;
        badge_controllers::ensure_system_namespaces(&registry)
            .await
            .unwrap();
        badge_apiserver::rbac::reconcile_defaults(&registry)
            .await
            .unwrap();
        let rbac = badge_apiserver::rbac::Rbac::start(registry.clone());
        badge_controllers::clusterroleaggregation::spawn(registry.clone(), None);
        aggregated(&registry, &rbac).await;
        let keys = ServiceAccountKeys::load(
            store,
            StoredRing::new(&[7; 32]),
            KeyType::Es256,
            None,
            None,
            Vec::new(),
            3600 + 60,
        )
        .await
        .unwrap();
        let audiences = vec![ISSUER.to_string()];
        let revoked = Arc::new(badge_auth::revocation::RevokedTokens::new());
        let authenticator = badge_auth::serviceaccount::ServiceAccountAuthenticator {
            keys: keys.published().clone(),
            issuers: audiences.clone(),
            api_audiences: audiences.clone(),
            getter: Arc::new(CacheTokenGetter(registry.clone())),
            clock: badge_auth::serviceaccount::now,
            cache: badge_auth::serviceaccount::VerifiedCache::new().unwrap(),
            revoked: revoked.clone(),
        };
        let issuer = TokenIssuer {
            keys,
            config: TokenConfig {
                issuers: audiences.clone(),
                api_audiences: audiences.clone(),
                max_expiration: 0,
                min_expiration: badge_apiserver::serviceaccount::MIN_TOKEN_SECONDS,
                extend_expiration: true,
                jwks_uri: "https://127.0.0.1/openid/v1/jwks".into(),
            },
        };
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let api = ApiServer::new(registry.clone(), true, shutdown_rx)
            .with_rbac(rbac)
            .with_revocations(revoked)
            .with_tokens(Arc::new(authenticator), audiences, Arc::new(issuer));
        Ring {
            api: Arc::new(finish(api)),
            _dir: dir,
            _shutdown: shutdown,
        }
    }

    fn request(caller: &Caller, method: &str, path: &str, body: Option<&Value>) -> Request<Full<Bytes>> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .body(Full::new(Bytes::from(bytes)))
            .unwrap();
        let headers = request.headers_mut();
        if body.is_some() {
            let content_type = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        if let Some(value) = caller.authorization() {
            headers.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        request
    }

    /// Sends a request with extra headers, reading the whole reply.
    pub(crate) async fn call_with(
        &self,
        caller: &Caller,
        method: &str,
        path: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut request = Ring::request(caller, method, path, body);
        for (name, value) in extra {
            let name = http::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
            let value = HeaderValue::from_str(value).unwrap();
            // A body has one type: a given Content-Type replaces the default one.
            if name == http::header::CONTENT_TYPE {
                request.headers_mut().insert(name, value);
            } else {
                request.headers_mut().append(name, value);
            }
        }
        let response = self.api.clone().handle(request, Arc::new(caller.peer())).await;
        let code = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body =
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        Reply { code, headers, body }
    }

    /// A SelfSubjectReview by `token`, sent with `headers`: a use of the token.
    pub(crate) async fn use_token(&self, token: &str, headers: &[(&str, &str)]) -> Reply {
        let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
        self.call_with(
            &Caller::bearer(token),
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(&review),
            headers,
        )
        .await
    }

    pub(crate) async fn call(
        &self,
        caller: &Caller,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Reply {
        self.call_with(caller, method, path, body, &[]).await
    }

    pub(crate) async fn get(&self, caller: &Caller, path: &str) -> Reply {
        self.call(caller, "GET", path, None).await
    }

    /// Creates an object as the admin, asserting success.
    pub(crate) async fn create(&self, path: &str, body: Value) -> Value {
        let reply = self.call(&Caller::admin(), "POST", path, Some(&body)).await;
        assert_eq!(reply.code, 201, "POST {path}: {}", reply.body);
        reply.body
    }

    pub(crate) async fn namespace(&self, name: &str) {
        self.create(
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .await;
    }

    pub(crate) async fn secret(&self, namespace: &str, name: &str) -> Value {
        self.create(
            &format!("/api/v1/namespaces/{namespace}/secrets"),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                   "stringData": {"value": format!("secret-of-{name}")}}),
        )
        .await
    }

    pub(crate) async fn service_account(&self, namespace: &str, name: &str) -> Value {
        self.create(
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
        )
        .await
    }

    /// A Role with `rules` in `namespace`, bound to `user`.
    pub(crate) async fn grant(&self, namespace: &str, user: &str, rules: Value) {
        let name = format!("{user}-{}", rules.to_string().len());
        self.create(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": name}, "rules": rules}),
        )
        .await;
        self.create(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": name},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
        )
        .await;
    }

    /// A ClusterRole with `rules`, bound cluster-wide to `user`.
    pub(crate) async fn grant_cluster(&self, user: &str, rules: Value) {
        let name = format!("{user}-{}", rules.to_string().len());
        self.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": name}, "rules": rules}),
        )
        .await;
        self.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": name},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
        )
        .await;
    }

    /// A token for a ServiceAccount, from TokenRequest as the admin.
    pub(crate) async fn token(&self, namespace: &str, name: &str, spec: Value) -> String {
        let reply = self
            .call(
                &Caller::admin(),
                "POST",
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"),
                Some(
                    &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
                ),
            )
            .await;
        assert_eq!(reply.code, 201, "{}", reply.body);
        reply.body["status"]["token"].as_str().unwrap().to_string()
    }

    /// Opens a watch; the events come from [`Watch::next`].
    pub(crate) async fn watch(&self, caller: &Caller, path: &str) -> Result<Watch, Reply> {
        let request = Ring::request(caller, "GET", path, None);
        let response = self.api.clone().handle(request, Arc::new(caller.peer())).await;
        if response.status() != 200 {
            let code = response.status().as_u16();
            let headers = response.headers().clone();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            return Err(Reply {
                code,
                headers,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            });
        }
        Ok(Watch {
            body: response.into_body(),
            buffer: Vec::new(),
        })
    }
}

/// An open watch.
pub(crate) struct Watch {
    body: badge_apiserver::response::Body,
    buffer: Vec<u8>,
}

impl Watch {
    /// The next event; panics when none comes within a generous bound (a hang, not a
    /// timing assertion).
    pub(crate) async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return serde_json::from_slice(&line).unwrap();
            }
            let frame = tokio::time::timeout(Duration::from_secs(20), self.body.frame())
                .await
                .expect("no watch event within 20 s")
                .expect("the watch ended")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }

    /// Events until one satisfies `done`, returning every event read.
    pub(crate) async fn until(&mut self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let event = self.next().await;
            let stop = done(&event);
            events.push(event);
            if stop {
                return events;
            }
        }
    }
}

/// The object names an event list carries.
pub(crate) fn event_names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// A certificate request (PEM, base64 as `spec.request` holds it) for a new key with
/// subject CN `common_name` and one O per organization.
pub(crate) fn certificate_request(common_name: &str, organizations: &[&str]) -> String {
    use base64::Engine;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    for o in organizations {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    base64::engine::general_purpose::STANDARD.encode(pem)
}

/// Waits until the aggregated default ClusterRoles hold their rules and the RBAC index has
/// seen them: until then binding `admin` escalates nothing, as on a fresh upstream cluster.
async fn aggregated(registry: &Registry, rbac: &badge_apiserver::rbac::Rbac) {
    let resource = badge_api::resources::lookup("rbac.authorization.k8s.io", "v1", "clusterroles").unwrap();
    for name in ["admin", "edit", "view"] {
        let revision = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(role) = registry
                    .get(resource, "", name, badge_registry::ReadFrom::Latest)
                    .await
                    && role["rules"].as_array().is_some_and(|rules| !rules.is_empty())
                {
                    let version = role["metadata"]["resourceVersion"].as_str().unwrap_or("0");
                    return version.parse::<i64>().unwrap_or(0);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the aggregated ClusterRoles were never filled");
        rbac.wait_for(revision).await;
    }
}

/// The `jti` claim of a token (read, not verified).
pub(crate) fn jti_of(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_string()
}
