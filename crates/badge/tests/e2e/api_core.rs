//! The API core over raw HTTPS: health, version, discovery, Status errors, bad input,
//! concurrency, paging and anonymous access.

use badge_testkit::Credential::{Admin, Anonymous};

use crate::server;

const SA_PATH: &str = "/api/v1/namespaces/default/serviceaccounts";

fn json_headers() -> Vec<(&'static str, &'static str)> {
    vec![("content-type", "application/json")]
}

#[test]
fn health_and_version_are_public() {
    let s = server();
    for path in ["/healthz", "/livez", "/readyz"] {
        let r = s.request("GET", path, None, &[], Anonymous).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()), "{path}");
    }
    let v = s.request("GET", "/version", None, &[], Anonymous).unwrap();
    assert_eq!(v.status, 200);
    assert_eq!(v.json()["major"], "1");
    assert!(v.header("content-type").starts_with("application/json"));
}

#[test]
fn anonymous_is_forbidden_and_bad_credentials_unauthorized() {
    let s = server();
    let r = s.request("GET", SA_PATH, None, &[], Anonymous).unwrap();
    assert_eq!(r.status, 403);
    let st = r.json();
    assert_eq!(st["reason"], "Forbidden");
    assert_eq!(
        st["message"],
        "serviceaccounts is forbidden: User \"system:anonymous\" cannot list resource \"serviceaccounts\" in API group \"\" in the namespace \"default\""
    );
    let api = s.request("GET", "/api", None, &[], Anonymous).unwrap();
    assert_eq!(api.status, 403);
    assert_eq!(
        api.json()["message"],
        "forbidden: User \"system:anonymous\" cannot get path \"/api\""
    );
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    let r = s
        .request(
            "GET",
            SA_PATH,
            None,
            &[],
            badge_testkit::Credential::Bearer(forged.into()),
        )
        .unwrap();
    assert_eq!(r.status, 401);
    let body = String::from_utf8_lossy(&r.body);
    assert!(!body.contains(forged), "the token must not be echoed: {body}");
    assert_eq!(r.json()["reason"], "Unauthorized");
}

#[test]
fn status_errors_for_bad_input() {
    let s = server();
    let post = |body: &[u8], headers: &[(&str, &str)], query: &str| {
        s.request(
            "POST",
            &format!("{SA_PATH}{query}"),
            Some(body.to_vec()),
            headers,
            Admin,
        )
        .unwrap()
    };
    let malformed = post(b"{\"metadata\":", &json_headers(), "");
    assert_eq!(
        (malformed.status, malformed.json()["reason"].as_str()),
        (400, Some("BadRequest"))
    );
    let yaml = post(
        b"metadata: [unclosed",
        &[("content-type", "application/yaml")],
        "",
    );
    assert_eq!(yaml.status, 400);
    let wrong_type = post(
        br#"{"metadata":{"name":"w"},"automountServiceAccountToken":"yes"}"#,
        &json_headers(),
        "",
    );
    assert_eq!(wrong_type.status, 400);
    let unknown = post(
        br#"{"metadata":{"name":"u"},"bogus":1}"#,
        &json_headers(),
        "?fieldValidation=Strict",
    );
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.json()["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"bogus\"")
    );
    let warned = post(
        br#"{"metadata":{"name":"u"},"bogus":1}"#,
        &json_headers(),
        "?fieldValidation=Warn",
    );
    assert_eq!(warned.status, 201);
    assert!(
        warned.header("warning").contains("unknown field \\\"bogus\\\""),
        "{:?}",
        warned.headers
    );
    let media = post(b"x", &[("content-type", "text/plain")], "");
    assert_eq!(
        (media.status, media.json()["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    let huge = vec![b' '; 3 * 1024 * 1024 + 10];
    let too_large = post(&huge, &json_headers(), "");
    assert_eq!(
        (too_large.status, too_large.json()["reason"].as_str()),
        (413, Some("RequestEntityTooLarge"))
    );
    let invalid = post(br#"{"metadata":{"name":"Bad_Name"}}"#, &json_headers(), "");
    assert_eq!(invalid.status, 422);
    let st = invalid.json();
    assert_eq!(st["reason"], "Invalid");
    assert_eq!(st["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(st["details"]["kind"], "ServiceAccount");
    let method = s
        .request(
            "PUT",
            "/api/v1/namespaces/default/serviceaccounts",
            Some(b"{}".to_vec()),
            &json_headers(),
            Admin,
        )
        .unwrap();
    assert_eq!(method.status, 405);
    let unknown_path = s.request("GET", "/api/v1/widgets", None, &[], Admin).unwrap();
    assert_eq!(
        (unknown_path.status, unknown_path.json()["reason"].as_str()),
        (404, Some("NotFound"))
    );
    // A namespaced path to a cluster-scoped kind names nothing.
    let scoped = s
        .request("GET", "/api/v1/namespaces/default/nodes", None, &[], Admin)
        .unwrap();
    assert_eq!(scoped.status, 404);
    // Nothing of the refused writes was stored.
    let list = s.request("GET", SA_PATH, None, &[], Admin).unwrap().json();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["default", "u"]);
}

#[test]
fn stale_updates_conflict_and_concurrent_writers_lose_nothing() {
    let s = server();
    let created = s
        .request(
            "POST",
            SA_PATH,
            Some(br#"{"metadata":{"name":"c","labels":{"n":"0"}}}"#.to_vec()),
            &json_headers(),
            Admin,
        )
        .unwrap();
    assert_eq!(created.status, 201);
    let object = created.json();
    let path = format!("{SA_PATH}/c");
    let mut first = object.clone();
    first["metadata"]["labels"]["n"] = "1".into();
    let ok = s
        .request(
            "PUT",
            &path,
            Some(serde_json::to_vec(&first).unwrap()),
            &json_headers(),
            Admin,
        )
        .unwrap();
    assert_eq!(ok.status, 200);
    let mut stale = object.clone();
    stale["metadata"]["labels"]["n"] = "2".into();
    let conflict = s
        .request(
            "PUT",
            &path,
            Some(serde_json::to_vec(&stale).unwrap()),
            &json_headers(),
            Admin,
        )
        .unwrap();
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.json()["reason"], "Conflict");
    assert!(
        conflict.json()["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );

    // Eight writers each add their own annotation with merge patches and no
    // resourceVersion: the server retries its compare-and-swap, so all survive.
    std::thread::scope(|scope| {
        for i in 0..8 {
            let s = &s;
            let path = &path;
            scope.spawn(move || {
                for j in 0..5 {
                    let patch = format!(r#"{{"metadata":{{"annotations":{{"w{i}-{j}":"x"}}}}}}"#);
                    let r = s
                        .request(
                            "PATCH",
                            path,
                            Some(patch.into_bytes()),
                            &[("content-type", "application/merge-patch+json")],
                            Admin,
                        )
                        .unwrap();
                    assert_eq!(r.status, 200);
                }
            });
        }
    });
    let final_object = s.request("GET", &path, None, &[], Admin).unwrap().json();
    assert_eq!(
        final_object["metadata"]["annotations"].as_object().unwrap().len(),
        40
    );
}

#[test]
fn paging_with_limit_and_continue() {
    let s = server();
    for i in 0..7 {
        let body = format!(r#"{{"metadata":{{"name":"p{i}"}}}}"#);
        assert_eq!(
            s.request("POST", SA_PATH, Some(body.into_bytes()), &json_headers(), Admin)
                .unwrap()
                .status,
            201
        );
    }
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let path = if token.is_empty() {
            format!("{SA_PATH}?limit=3")
        } else {
            format!("{SA_PATH}?limit=3&continue={token}")
        };
        let page = s.request("GET", &path, None, &[], Admin).unwrap().json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        names.extend(
            items
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => break,
        }
    }
    assert_eq!(names, vec!["default", "p0", "p1", "p2", "p3", "p4", "p5", "p6"]);

    // Pages continue one snapshot: changes made between pages do not show.
    let first = s
        .request("GET", &format!("{SA_PATH}?limit=3"), None, &[], Admin)
        .unwrap()
        .json();
    assert_eq!(first["metadata"]["remainingItemCount"], 5);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    let create = s
        .request(
            "POST",
            SA_PATH,
            Some(br#"{"metadata":{"name":"p9"}}"#.to_vec()),
            &json_headers(),
            Admin,
        )
        .unwrap();
    assert_eq!(create.status, 201);
    let delete = s
        .request("DELETE", &format!("{SA_PATH}/p5"), None, &[], Admin)
        .unwrap();
    assert_eq!(delete.status, 200);
    let rest = s
        .request(
            "GET",
            &format!("{SA_PATH}?limit=10&continue={token}"),
            None,
            &[],
            Admin,
        )
        .unwrap()
        .json();
    let rest: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        rest,
        vec!["p2", "p3", "p4", "p5", "p6"],
        "the snapshot of the first page"
    );
    let bad = s
        .request(
            "GET",
            &format!("{SA_PATH}?limit=3&continue=garbage"),
            None,
            &[],
            Admin,
        )
        .unwrap();
    assert_eq!(bad.status, 400);
}

#[test]
fn secrets_types_and_immutability() {
    let s = server();
    let path = "/api/v1/namespaces/default/secrets";
    let tls = s
        .request(
            "POST",
            path,
            Some(
                br#"{"metadata":{"name":"t"},"type":"kubernetes.io/tls","data":{"tls.crt":"eA=="}}"#.to_vec(),
            ),
            &json_headers(),
            Admin,
        )
        .unwrap();
    assert_eq!(tls.status, 422);
    assert_eq!(tls.json()["details"]["causes"][0]["field"], "data[tls.key]");
    let created = s
        .request(
            "POST",
            path,
            Some(br#"{"metadata":{"name":"i"},"immutable":true,"stringData":{"a":"b"}}"#.to_vec()),
            &json_headers(),
            Admin,
        )
        .unwrap();
    assert_eq!(created.status, 201);
    let object = created.json();
    assert_eq!(object["data"]["a"], "Yg==");
    assert_eq!(object["type"], "Opaque");
    let patch = s
        .request(
            "PATCH",
            &format!("{path}/i"),
            Some(br#"{"data":{"a":"Yw=="}}"#.to_vec()),
            &[("content-type", "application/merge-patch+json")],
            Admin,
        )
        .unwrap();
    assert_eq!(patch.status, 422);
    assert!(
        patch.json()["message"]
            .as_str()
            .unwrap()
            .contains("field is immutable when `immutable` is set")
    );
}

#[test]
fn watch_resumes_from_history_and_expired_revisions_are_gone() {
    let s = badge_testkit::TestServer::start_with(
        env!("CARGO_BIN_EXE_badge"),
        &["--default-watch-cache-size", "10"],
    );
    let first = s
        .request(
            "POST",
            SA_PATH,
            Some(br#"{"metadata":{"name":"w0"}}"#.to_vec()),
            &json_headers(),
            Admin,
        )
        .unwrap();
    let rv: i64 = first.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let second = s
        .request(
            "POST",
            SA_PATH,
            Some(br#"{"metadata":{"name":"w1"}}"#.to_vec()),
            &json_headers(),
            Admin,
        )
        .unwrap();
    assert_eq!(second.status, 201);
    // Resuming from the first write's revision replays exactly what came after it.
    let r = s
        .request(
            "GET",
            &format!("{SA_PATH}?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
            None,
            &[],
            Admin,
        )
        .unwrap();
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&r.body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "w1");
    // Push the first revision out of a ten-event history: 410 Expired as an ERROR event.
    for i in 2..20 {
        let body = format!(r#"{{"metadata":{{"name":"w{i}"}}}}"#);
        assert_eq!(
            s.request("POST", SA_PATH, Some(body.into_bytes()), &json_headers(), Admin)
                .unwrap()
                .status,
            201
        );
    }
    let r = s
        .request(
            "GET",
            &format!("{SA_PATH}?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
            None,
            &[],
            Admin,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let line: serde_json::Value =
        serde_json::from_slice(r.body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["type"], "ERROR");
    assert_eq!(line["object"]["code"], 410);
    assert_eq!(line["object"]["reason"], "Expired");
}

#[test]
fn protobuf_bodies_are_decoded() {
    let s = server();
    // ServiceAccount{metadata{name:"pb"}} in the runtime.Unknown envelope.
    let object: Vec<u8> = vec![0x0a, 0x04, 0x0a, 0x02, b'p', b'b'];
    let mut type_meta = vec![0x0a, 0x02, b'v', b'1', 0x12, 0x0e];
    type_meta.extend_from_slice(b"ServiceAccount");
    let mut unknown = vec![0x0a, type_meta.len() as u8];
    unknown.extend_from_slice(&type_meta);
    unknown.push(0x12);
    unknown.push(object.len() as u8);
    unknown.extend_from_slice(&object);
    let mut body = b"k8s\0".to_vec();
    body.extend_from_slice(&unknown);
    let r = s
        .request(
            "POST",
            SA_PATH,
            Some(body),
            &[
                ("content-type", "application/vnd.kubernetes.protobuf"),
                ("accept", "application/vnd.kubernetes.protobuf,application/json"),
            ],
            Admin,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.json()["metadata"]["name"], "pb");
}

#[test]
fn aggregated_discovery_and_openapi() {
    let s = server();
    let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let r = s
        .request("GET", "/apis", None, &[("accept", accept)], Admin)
        .unwrap();
    assert_eq!(
        r.header("content-type"),
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(r.json()["kind"], "APIGroupDiscoveryList");
    let legacy = s.request("GET", "/api/v1", None, &[], Admin).unwrap().json();
    assert_eq!(legacy["kind"], "APIResourceList");
    let index = s.request("GET", "/openapi/v3", None, &[], Admin).unwrap().json();
    let url = index["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let doc = s.request("GET", &url, None, &[], Admin).unwrap().json();
    assert!(doc["components"]["schemas"]["io.k8s.api.core.v1.ServiceAccount"].is_object());
}

#[test]
fn watch_list_sends_every_object_then_the_initial_events_bookmark() {
    let s = server();
    let ns = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"watch-list"}}"#;
    assert_eq!(
        s.request(
            "POST",
            "/api/v1/namespaces",
            Some(ns.into()),
            &json_headers(),
            Admin
        )
        .unwrap()
        .status,
        201
    );
    let path = "/api/v1/namespaces/watch-list/configmaps";
    // Enough data that the initial events span several chunks.
    let filler = "x".repeat(1000);
    let mut last_rv = 0i64;
    for i in 0..150 {
        let body = format!(r#"{{"metadata":{{"name":"cm-{i:03}"}},"data":{{"filler":"{filler}"}}}}"#);
        let r = s
            .request("POST", path, Some(body.into_bytes()), &json_headers(), Admin)
            .unwrap();
        assert_eq!(r.status, 201);
        last_rv = r.json()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    }
    let watch = "?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1";
    let refused = s
        .request("GET", &format!("{path}{watch}"), None, &[], Admin)
        .unwrap();
    assert_eq!(refused.status, 422);
    assert_eq!(refused.json()["reason"], "Invalid");
    let r = s
        .request(
            "GET",
            &format!("{path}{watch}&allowWatchBookmarks=true"),
            None,
            &[],
            Admin,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    let lines: Vec<&str> = body.lines().collect();
    let (end, added) = lines.split_last().unwrap();
    let mut names = Vec::new();
    for line in added {
        // Upstream's field order: the type leads.
        assert!(line.starts_with(r#"{"type":"ADDED","object":"#), "{line:.80}");
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = event["object"]["metadata"]["name"].as_str().unwrap().to_string();
        // The namespace's kube-root-ca.crt, published by the controllers, may be there too.
        if name != "kube-root-ca.crt" {
            assert_eq!(event["object"]["data"]["filler"], filler);
            names.push(name);
        }
    }
    let expected: Vec<String> = (0..150).map(|i| format!("cm-{i:03}")).collect();
    assert_eq!(names, expected, "every object once, in key order");
    let end: serde_json::Value = serde_json::from_str(end).unwrap();
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(end["object"]["kind"], "ConfigMap");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    let bookmark_rv: i64 = end["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bookmark_rv >= last_rv, "{bookmark_rv} < {last_rv}");
}
