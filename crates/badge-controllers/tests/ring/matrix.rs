//! What is served is what was authorized, for every path form the router accepts and every
//! resource's scope. A recording authorizer allows one user everything and notes what each
//! request asked for; each reply must hold nothing outside that.

use std::sync::Arc;

use badge_api::resources::{RESOURCES, Resource, Storage};
use badge_auth::{Attributes, Authorizer, Decision};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::support::{Caller, Ring, event_names};

const PROBE: &str = "matrix-probe";

/// Allows [`PROBE`] everything and records what it was asked; everyone else goes to the
/// server's own authorizer.
struct Recording {
    inner: Box<dyn Authorizer>,
    asked: Arc<Mutex<Vec<Attributes>>>,
}

impl Authorizer for Recording {
    fn authorize(&self, attributes: &Attributes) -> Decision {
        if attributes.user.name == PROBE {
            self.asked.lock().push(attributes.clone());
            return Decision::Allow;
        }
        self.inner.authorize(attributes)
    }
}

/// A minimal valid object of `resource` named `name`.
fn object(resource: &Resource, namespace: &str, name: &str) -> Value {
    let mut object =
        json!({"apiVersion": resource.api_version(), "kind": resource.kind, "metadata": {"name": name}});
    let rest = match resource.plural {
        "configmaps" => json!({"data": {"k": "v"}}),
        "events" => json!({"involvedObject": {"kind": "Pod", "name": "p", "namespace": namespace},
                           "reason": "Probe", "message": "m"}),
        "namespaces" | "nodes" | "serviceaccounts" => json!({}),
        "pods" => json!({"spec": {"serviceAccountName": "default",
                                   "containers": [{"name": "c", "image": "i"}]}}),
        "secrets" => json!({"stringData": {"value": format!("secret-of-{name}")}}),
        "leases" => json!({"spec": {}}),
        "certificatesigningrequests" => json!({"spec": {
            "request": crate::support::certificate_request(name, &[]),
            "signerName": "example.com/matrix", "usages": ["client auth"]}}),
        "clusterroles" | "roles" => json!({"rules": []}),
        "issuedtokens" => json!({"spec": {"serviceAccountName": "default"}}),
        "serviceaccountusages" => json!({"status": {"liveTokens": 0}}),
        "tokenpolicies" => json!({"spec": {"maxExpirationSeconds": 3600}}),
        "clusterrolebindings" | "rolebindings" => json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "nobody"}]}),
        other => panic!("the matrix needs an object of {other}: add one"),
    };
    for (key, value) in rest.as_object().unwrap() {
        object[key] = value.clone();
    }
    object
}

fn prefix(resource: &Resource) -> String {
    if resource.group.is_empty() {
        format!("/api/{}", resource.version)
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    }
}

/// The collection path of `resource` in namespace `ns` (cluster-wide when empty).
fn collection(resource: &Resource, ns: &str) -> String {
    if ns.is_empty() {
        format!("{}/{}", prefix(resource), resource.plural)
    } else {
        format!("{}/namespaces/{ns}/{}", prefix(resource), resource.plural)
    }
}

struct Probe<'a> {
    ring: &'a Ring,
    asked: Arc<Mutex<Vec<Attributes>>>,
    resource: &'static Resource,
}

impl Probe<'_> {
    /// The one authorization the last request asked for: (verb, namespace, name).
    fn last_asked(&self) -> (String, String, String) {
        let mut asked = self.asked.lock();
        assert_eq!(asked.len(), 1, "one authorization per request: {:?}", *asked);
        let a = asked.remove(0);
        assert_eq!(
            (a.resource.as_str(), a.api_group.as_str()),
            (self.resource.plural, self.resource.group)
        );
        (a.verb, a.namespace, a.name)
    }

    fn expect_asked(&self, path: &str, verb: &str, namespace: &str, name: &str) {
        assert_eq!(
            self.last_asked(),
            (verb.to_string(), namespace.to_string(), name.to_string()),
            "{path}"
        );
    }

    /// Every item lies inside what was authorized.
    fn check_served(&self, path: &str, items: &[Value], namespace: &str, name: &str) {
        for item in items {
            let meta = &item["metadata"];
            if !name.is_empty() {
                assert_eq!(meta["name"], name, "{path} served another object");
            }
            if !namespace.is_empty() && self.resource.namespaced && self.resource.plural != "namespaces" {
                assert_eq!(meta["namespace"], namespace, "{path} served another namespace");
            }
        }
    }

    async fn get(&self, path: &str, namespace: &str, name: &str) {
        let reply = self.ring.get(&Caller::user(PROBE), path).await;
        assert_eq!(reply.code, 200, "{path}: {}", reply.body);
        // A Namespace's path names its namespace too (`/api/v1/namespaces/NAME`).
        let asked_namespace = if self.resource.plural == "namespaces" {
            name
        } else {
            namespace
        };
        self.expect_asked(path, "get", asked_namespace, name);
        self.check_served(path, std::slice::from_ref(&reply.body), namespace, name);
        assert_eq!(reply.body["metadata"]["name"], name, "{path}");
    }

    /// A list; `want` items, or as many as the admin sees when None.
    async fn list(&self, path: &str, namespace: &str, name: &str, want: Option<usize>) {
        let want = match want {
            Some(n) => n,
            None => self.ring.get(&Caller::admin(), path).await.names().len(),
        };
        let reply = self.ring.get(&Caller::user(PROBE), path).await;
        assert_eq!(reply.code, 200, "{path}: {}", reply.body);
        self.expect_asked(path, "list", namespace, name);
        let items = reply.body["items"].as_array().cloned().unwrap_or_default();
        self.check_served(path, &items, namespace, name);
        assert_eq!(items.len(), want, "{path}: {:?}", reply.names());
    }

    /// Opens a watch, then changes `xy` and `x` in `namespace` as the admin: the watch must
    /// show `x` only (initial state included), and its change arrives after any of `xy`'s.
    async fn watch(&self, path: &str, namespace: &str, name: &str, changed_ns: &str) {
        let mut watch = match self.ring.watch(&Caller::user(PROBE), path).await {
            Ok(w) => w,
            Err(reply) => panic!("{path}: {} {}", reply.code, reply.body),
        };
        self.expect_asked(path, "watch", namespace, name);
        for changed in ["xy", "x"] {
            let named = if self.resource.namespaced {
                format!("{}/{changed}", collection(self.resource, changed_ns))
            } else {
                format!("{}/{changed}", collection(self.resource, ""))
            };
            let ns = if self.resource.namespaced { changed_ns } else { "" };
            touch(self.ring, self.resource, ns, changed, &named, json!("yes")).await;
        }
        let events = watch
            .until(|e| e["type"] == "MODIFIED" && e["object"]["metadata"]["name"] == "x")
            .await;
        let objects: Vec<Value> = events.iter().map(|e| e["object"].clone()).collect();
        self.check_served(path, &objects, namespace, name);
        assert!(
            event_names(&events).iter().all(|n| n == name),
            "{path}: {:?}",
            event_names(&events)
        );
        // Undo, so the next watch sees the change again.
        for changed in ["xy", "x"] {
            let named = format!(
                "{}/{changed}",
                collection(
                    self.resource,
                    if self.resource.namespaced { changed_ns } else { "" }
                )
            );
            let ns = if self.resource.namespaced { changed_ns } else { "" };
            touch(self.ring, self.resource, ns, changed, &named, Value::Null).await;
        }
    }
}

/// Sets (or with null removes) the `touched` label: through the API where clients may
/// patch the resource, else as the server writes its own records.
async fn touch(ring: &Ring, resource: &'static Resource, ns: &str, name: &str, path: &str, value: Value) {
    if resource.allows("patch") {
        let reply = ring
            .call(
                &Caller::admin(),
                "PATCH",
                path,
                Some(&json!({"metadata": {"labels": {"touched": value}}})),
            )
            .await;
        assert_eq!(reply.code, 200, "PATCH {path}: {}", reply.body);
        return;
    }
    ring.api
        .registry
        .update(resource, ns, name, "", &Default::default(), |current| {
            let mut object = current.clone();
            object["metadata"]["labels"] = json!({"touched": value});
            if value.is_null() {
                object["metadata"].as_object_mut().unwrap().remove("labels");
            }
            Ok(object)
        })
        .await
        .unwrap();
}

/// Creates an object: through the API where clients may, else as the server does.
async fn seed(ring: &Ring, resource: &'static Resource, ns: &str, object: Value) {
    if resource.allows("create") {
        ring.create(&collection(resource, ns), object).await;
    } else {
        ring.api
            .registry
            .create(resource, ns, object, &Default::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn every_path_form_serves_exactly_what_was_authorized() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let recorder = asked.clone();
    let ring = Ring::build(move |mut api| {
        let inner = std::mem::replace(
            &mut api.authorizer,
            Box::new(badge_auth::authorizer::PrivilegedGroups),
        );
        api.authorizer = Box::new(Recording {
            inner,
            asked: recorder,
        });
        api
    })
    .await;
    for ns in ["a", "b"] {
        ring.namespace(ns).await;
        ring.service_account(ns, "default").await;
    }
    let mut covered = 0;
    for resource in RESOURCES.iter().filter(|r| r.storage == Storage::Stored) {
        let probe = Probe {
            ring: &ring,
            asked: asked.clone(),
            resource,
        };
        let names = ["x", "xy"];
        if resource.namespaced {
            for ns in ["a", "b"] {
                for name in names {
                    if !(resource.plural == "serviceaccounts" && name == "default") {
                        seed(&ring, resource, ns, object(resource, ns, name)).await;
                    }
                }
            }
        } else {
            for name in names {
                seed(&ring, resource, "", object(resource, "", name)).await;
            }
        }
        let ns = if resource.namespaced { "a" } else { "" };
        let base = collection(resource, ns);
        let p = prefix(resource);
        let watch_base = if resource.namespaced {
            format!("{p}/watch/namespaces/a/{}", resource.plural)
        } else {
            format!("{p}/watch/{}", resource.plural)
        };
        // Named reads, plain, percent-encoded, and with a `watch` parameter (a get, as upstream).
        probe.get(&format!("{base}/x"), ns, "x").await;
        probe.get(&format!("{base}/%78"), ns, "x").await;
        probe.get(&format!("{base}/x?watch=true"), ns, "x").await;
        // Lists: the collection, and named by an exact field selector.
        probe.list(&base, ns, "", None).await;
        probe
            .list(
                &format!("{base}?fieldSelector=metadata.name%3Dx"),
                ns,
                "x",
                Some(1),
            )
            .await;
        probe
            .list(
                &format!("{base}?fieldSelector=metadata.name%3D%3Dx,metadata.name%3Dx"),
                ns,
                "x",
                Some(1),
            )
            .await;
        if resource.namespaced {
            // Across namespaces, named: both namespaces' `x`.
            probe
                .list(
                    &format!("{}?fieldSelector=metadata.name%3Dx", collection(resource, "")),
                    "",
                    "x",
                    Some(2),
                )
                .await;
        }
        // Watches named three ways.
        let named_ns = if resource.plural == "namespaces" { "x" } else { ns };
        probe.watch(&format!("{watch_base}/x"), named_ns, "x", "a").await;
        probe
            .watch(
                &format!("{base}?watch=true&fieldSelector=metadata.name%3Dx"),
                ns,
                "x",
                "a",
            )
            .await;
        probe
            .watch(
                &format!("{base}?watch=1&fieldSelector=metadata.name%3Dx"),
                ns,
                "x",
                "a",
            )
            .await;
        // A named watch path whose selector names another object is refused.
        let reply = ring
            .get(
                &Caller::user(PROBE),
                &format!("{watch_base}/x?fieldSelector=metadata.name%3Dxy"),
            )
            .await;
        assert_eq!(reply.code, 400, "{}", reply.body);
        assert_eq!(
            reply.body["message"],
            "fieldSelector metadata.name doesn't match requested name"
        );
        asked.lock().clear();
        // Writes through the legacy watch prefix are refused.
        let reply = ring
            .call(&Caller::user(PROBE), "DELETE", &format!("{watch_base}/x"), None)
            .await;
        assert_eq!(reply.code, 405, "{}", reply.body);
        asked.lock().clear();
        // A cluster-scoped kind under a namespace path names nothing, for every verb.
        if !resource.namespaced {
            let scoped = format!("{p}/namespaces/a/{}", resource.plural);
            let body = object(resource, "", "z");
            for (method, path, body) in [
                ("GET", scoped.clone(), None),
                ("GET", format!("{scoped}/x"), None),
                ("GET", format!("{scoped}?watch=true"), None),
                ("GET", format!("{p}/watch/namespaces/a/{}", resource.plural), None),
                ("POST", scoped.clone(), Some(&body)),
                ("PUT", format!("{scoped}/x"), Some(&body)),
                ("PATCH", format!("{scoped}/x"), Some(&body)),
                ("DELETE", format!("{scoped}/x"), None),
                ("DELETE", scoped.clone(), None),
            ] {
                let reply = ring.call(&Caller::user(PROBE), method, &path, body).await;
                assert_eq!(reply.code, 404, "{method} {path}: {}", reply.body);
            }
            asked.lock().clear();
            // Nothing was created cluster-wide.
            let reply = ring.get(&Caller::admin(), &format!("{base}/z")).await;
            assert_eq!(reply.code, 404, "{}", reply.body);
        } else if !resource.allows("deletecollection") {
            // Records the server keeps are not deleted by clients.
            let reply = ring
                .call(
                    &Caller::user(PROBE),
                    "DELETE",
                    &format!("{base}?fieldSelector=metadata.name%3Dx"),
                    None,
                )
                .await;
            assert_eq!(reply.code, 405, "{}", reply.body);
            asked.lock().clear();
            let left = ring.get(&Caller::admin(), &format!("{base}/x")).await;
            assert_eq!(left.code, 200, "{}", left.body);
        } else {
            // deletecollection by name deletes that name only.
            let reply = ring
                .call(
                    &Caller::user(PROBE),
                    "DELETE",
                    &format!("{base}?fieldSelector=metadata.name%3Dx"),
                    None,
                )
                .await;
            assert!(reply.code == 200, "{}", reply.body);
            probe.expect_asked("deletecollection", "deletecollection", ns, "");
            for (name, code) in [("x", 404), ("xy", 200)] {
                let left = ring.get(&Caller::admin(), &format!("{base}/{name}")).await;
                assert_eq!(left.code, code, "{name} after deleting x: {}", left.body);
            }
        }
        covered += 1;
    }
    assert_eq!(
        covered,
        RESOURCES.iter().filter(|r| r.storage == Storage::Stored).count()
    );
}

#[tokio::test]
async fn a_grant_on_one_secret_serves_that_secret_only() {
    let ring = Ring::new().await;
    ring.namespace("a").await;
    for name in ["mine", "mine2", "other"] {
        ring.secret("a", name).await;
    }
    ring.grant(
        "a",
        "reader",
        json!([{"apiGroups": [""], "resources": ["secrets"],
        "resourceNames": ["mine"], "verbs": ["get", "list", "watch"]}]),
    )
    .await;
    let reader = Caller::user("reader");
    let code = |path: &'static str| {
        let ring = &ring;
        let reader = reader.clone();
        async move { ring.get(&reader, path).await }
    };
    // Allowed: the object itself, however it is named.
    for path in [
        "/api/v1/namespaces/a/secrets/mine",
        "/api/v1/namespaces/a/secrets/mi%6Ee",
        "/api/v1/namespaces/a/secrets/mine?watch=true",
    ] {
        let reply = code(path).await;
        assert_eq!(
            (reply.code, reply.body["metadata"]["name"].as_str()),
            (200, Some("mine")),
            "{path}"
        );
    }
    let reply = code("/api/v1/namespaces/a/secrets?fieldSelector=metadata.name%3Dmine").await;
    assert_eq!((reply.code, reply.names()), (200, vec!["mine".to_string()]));
    // Refused: other names, prefixes of the name, the collection, all namespaces.
    for path in [
        "/api/v1/namespaces/a/secrets/other",
        "/api/v1/namespaces/a/secrets/mine2",
        "/api/v1/namespaces/a/secrets",
        "/api/v1/namespaces/a/secrets?watch=true",
        "/api/v1/watch/namespaces/a/secrets",
        "/api/v1/watch/namespaces/a/secrets?fieldSelector=metadata.name%3Dmine",
        "/api/v1/namespaces/a/secrets?fieldSelector=metadata.name%3Dother",
        "/api/v1/namespaces/a/secrets?fieldSelector=metadata.name!%3Dother",
        "/api/v1/secrets?fieldSelector=metadata.name%3Dmine",
        "/api/v1/watch/namespaces/a/secrets/mine2",
    ] {
        assert_eq!(code(path).await.code, 403, "{path}");
    }
    let reply = ring
        .call(
            &reader,
            "DELETE",
            "/api/v1/namespaces/a/secrets?fieldSelector=metadata.name%3Dmine",
            None,
        )
        .await;
    assert_eq!(reply.code, 403);
    // Watches, named by path and by selector, show `mine` and nothing else.
    for path in [
        "/api/v1/watch/namespaces/a/secrets/mine",
        "/api/v1/namespaces/a/secrets?watch=true&fieldSelector=metadata.name%3Dmine",
    ] {
        let mut watch = ring.watch(&reader, path).await.unwrap();
        for name in ["mine2", "other", "mine"] {
            ring.call(
                &Caller::admin(),
                "PATCH",
                &format!("/api/v1/namespaces/a/secrets/{name}"),
                Some(&json!({"metadata": {"labels": {"seen": path.len().to_string()}}})),
            )
            .await;
        }
        let events = watch
            .until(|e| e["type"] == "MODIFIED" && e["object"]["metadata"]["name"] == "mine")
            .await;
        assert!(
            event_names(&events).iter().all(|n| n == "mine"),
            "{path}: {:?}",
            event_names(&events)
        );
        assert!(!events.iter().any(|e| e.to_string().contains("secret-of-other")));
    }
}

#[tokio::test]
async fn namespaced_paths_to_namespaces_are_not_found_whatever_rbac_allowed() {
    let ring = Ring::new().await;
    ring.namespace("a").await;
    ring.grant(
        "a",
        "ns-admin",
        json!([{"apiGroups": [""], "resources": ["namespaces"],
        "verbs": ["get", "list", "watch", "create", "delete", "update", "patch"]}]),
    )
    .await;
    let user = Caller::user("ns-admin");
    for (method, path) in [
        ("GET", "/api/v1/namespaces/a/namespaces"),
        ("GET", "/api/v1/namespaces/a/namespaces/a"),
        ("GET", "/api/v1/namespaces/a/namespaces?watch=true"),
        ("GET", "/api/v1/watch/namespaces/a/namespaces"),
        ("DELETE", "/api/v1/namespaces/a/namespaces/kube-system"),
    ] {
        let reply = ring.call(&user, method, path, None).await;
        assert_eq!(reply.code, 404, "{method} {path}: {}", reply.body);
    }
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "escaped"}});
    let reply = ring
        .call(&user, "POST", "/api/v1/namespaces/a/namespaces", Some(&body))
        .await;
    assert_eq!(reply.code, 404, "{}", reply.body);
    assert_eq!(
        ring.get(&Caller::admin(), "/api/v1/namespaces/escaped")
            .await
            .code,
        404
    );
    // The Namespace object itself, and its subresources, are still reachable as such.
    assert_eq!(ring.get(&Caller::admin(), "/api/v1/namespaces/a").await.code, 200);
    assert_eq!(
        ring.get(&Caller::admin(), "/api/v1/namespaces/a/status")
            .await
            .code,
        200
    );
}

#[tokio::test]
async fn subresources_and_reviews_are_authorized_as_what_they_serve() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let recorder = asked.clone();
    let ring = Ring::build(move |mut api| {
        let inner = std::mem::replace(
            &mut api.authorizer,
            Box::new(badge_auth::authorizer::PrivilegedGroups),
        );
        api.authorizer = Box::new(Recording {
            inner,
            asked: recorder,
        });
        api
    })
    .await;
    ring.namespace("a").await;
    ring.service_account("a", "default").await;
    ring.service_account("a", "x").await;
    let pod = RESOURCES.iter().find(|r| r.plural == "pods").unwrap();
    for name in ["x", "xy"] {
        ring.create("/api/v1/namespaces/a/pods", object(pod, "a", name))
            .await;
    }
    let probe = Caller::user(PROBE);
    let take = || {
        let mut asked = asked.lock();
        assert_eq!(asked.len(), 1, "{:?}", *asked);
        let a = asked.remove(0);
        (a.verb, a.namespace, a.resource, a.subresource, a.name)
    };
    let tuple = |v: &str, ns: &str, r: &str, s: &str, n: &str| {
        (
            v.to_string(),
            ns.to_string(),
            r.to_string(),
            s.to_string(),
            n.to_string(),
        )
    };
    // Status subresources serve the named object.
    for (path, resource, ns) in [
        ("/api/v1/namespaces/a/pods/x/status", "pods", "a"),
        ("/api/v1/namespaces/x/status", "namespaces", "x"),
    ] {
        if resource == "namespaces" {
            ring.namespace("x").await;
            asked.lock().clear();
        }
        let reply = ring.get(&probe, path).await;
        assert_eq!(reply.code, 200, "{path}: {}", reply.body);
        assert_eq!(reply.body["metadata"]["name"], "x", "{path}");
        assert_eq!(take(), tuple("get", ns, resource, "status", "x"), "{path}");
    }
    // TokenRequest is a create on serviceaccounts/token for that ServiceAccount.
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}});
    let reply = ring
        .call(
            &probe,
            "POST",
            "/api/v1/namespaces/a/serviceaccounts/x/token",
            Some(&body),
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    assert_eq!(take(), tuple("create", "a", "serviceaccounts", "token", "x"));
    let claims = reply.body["status"]["token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_string();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "system:serviceaccount:a:x");
    // Subresources a kind does not have, and verbs a subresource does not take.
    for (method, path, code) in [
        ("GET", "/api/v1/namespaces/a/secrets/x/status", 404),
        ("GET", "/api/v1/namespaces/a/pods/x/exec", 404),
        ("GET", "/api/v1/namespaces/a/serviceaccounts/x/token", 405),
        ("DELETE", "/api/v1/namespaces/a/pods/x/status", 405),
    ] {
        let reply = ring.call(&probe, method, path, None).await;
        assert_eq!(reply.code, code, "{method} {path}: {}", reply.body);
        asked.lock().clear();
    }
    // Reviews: a create on the review resource, in the namespace only when it is namespaced;
    // a cluster-scoped review under a namespace path is not found.
    for resource in RESOURCES.iter().filter(|r| r.storage == Storage::Virtual) {
        let body = json!({"apiVersion": resource.api_version(), "kind": resource.kind,
            "spec": {"token": "t", "resourceAttributes": {"verb": "get", "resource": "pods"}, "user": "u", "namespace": "a"}});
        let path = collection(resource, if resource.namespaced { "a" } else { "" });
        let reply = ring.call(&probe, "POST", &path, Some(&body)).await;
        assert!(
            reply.code == 201 || reply.code == 400 || reply.code == 422,
            "{path}: {} {}",
            reply.code,
            reply.body
        );
        // The first authorization is the request's; access reviews then ask their own.
        let first = asked.lock().remove(0);
        asked.lock().clear();
        let (verb, ns, plural, sub, name) = (
            first.verb,
            first.namespace,
            first.resource,
            first.subresource,
            first.name,
        );
        assert_eq!(
            (
                verb.as_str(),
                ns.as_str(),
                plural.as_str(),
                sub.as_str(),
                name.as_str()
            ),
            (
                "create",
                if resource.namespaced { "a" } else { "" },
                resource.plural,
                "",
                ""
            ),
            "{path}"
        );
        if !resource.namespaced {
            let scoped = format!("{}/namespaces/a/{}", prefix(resource), resource.plural);
            let reply = ring.call(&probe, "POST", &scoped, Some(&body)).await;
            assert_eq!(reply.code, 404, "{scoped}: {}", reply.body);
            asked.lock().clear();
        }
        // Reviews take no reads.
        let reply = ring.get(&probe, &path).await;
        assert_eq!(reply.code, 405, "GET {path}: {}", reply.body);
        asked.lock().clear();
    }
}

#[tokio::test]
async fn a_body_cannot_name_another_object_than_the_path() {
    let ring = Ring::new().await;
    for ns in ["a", "b"] {
        ring.namespace(ns).await;
    }
    ring.secret("a", "x").await;
    ring.grant(
        "a",
        "writer",
        json!([{"apiGroups": [""], "resources": ["secrets"],
        "resourceNames": ["x"], "verbs": ["get", "update", "patch"]}]),
    )
    .await;
    let writer = Caller::user("writer");
    let put = |name: &str, namespace: &str| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": name, "namespace": namespace},
               "stringData": {"value": "overwritten"}})
    };
    // Authorized for `x` in `a`: a body naming `y`, or namespace `b`, writes nothing else.
    for (body, message) in [
        (
            put("y", "a"),
            "the name of the object (y) does not match the name on the URL (x)",
        ),
        (
            put("x", "b"),
            "the namespace of the provided object does not match the namespace sent on the request",
        ),
    ] {
        let reply = ring
            .call(&writer, "PUT", "/api/v1/namespaces/a/secrets/x", Some(&body))
            .await;
        assert_eq!(reply.code, 400, "{}", reply.body);
        assert_eq!(reply.body["message"], message);
    }
    let reply = ring
        .call(
            &writer,
            "PATCH",
            "/api/v1/namespaces/a/secrets/x",
            Some(&json!({"metadata": {"name": "y"}})),
        )
        .await;
    assert_eq!(reply.code, 400, "{}", reply.body);
    for path in ["/api/v1/namespaces/a/secrets/y", "/api/v1/namespaces/b/secrets/x"] {
        assert_eq!(ring.get(&Caller::admin(), path).await.code, 404, "{path}");
    }
}
