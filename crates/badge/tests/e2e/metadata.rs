//! Metadata-only reads (`as=PartialObjectMetadata[List]`), as client-go's metadata client
//! and controller-runtime's metadata caches send them, and Accept negotiation's 406s.

use badge_testkit::Credential::Admin;
use badge_testkit::{RawResponse, TestServer};
use serde_json::Value;

use crate::server;

const SECRETS: &str = "/api/v1/namespaces/meta/secrets";
/// base64 of the one value every test Secret holds; it must never show in metadata.
const SECRET_VALUE: &str = "c3VwZXItc2VjcmV0LXZhbHVl";
const METADATA: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
const METADATA_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
/// client-go's metadata client: protobuf first, then JSON.
const CLIENT_GO_LIST: &str = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
const CLIENT_GO_WATCH: &str = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
const MEDIA_TYPES_406: &str = "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf";

fn get(s: &TestServer, path: &str, accept: &str) -> RawResponse {
    s.request("GET", path, None, &[("accept", accept)], Admin)
        .unwrap()
}

fn body(r: &RawResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// A namespace `meta` holding Secrets `s0`..`s{count-1}`; returns the last write's revision.
fn secrets(s: &TestServer, count: usize) -> String {
    let ns = s
        .request(
            "POST",
            "/api/v1/namespaces",
            Some(br#"{"metadata":{"name":"meta"}}"#.to_vec()),
            &[("content-type", "application/json")],
            Admin,
        )
        .unwrap();
    assert_eq!(ns.status, 201, "{}", body(&ns));
    let mut rv = String::new();
    for i in 0..count {
        let secret = format!(
            r#"{{"metadata":{{"name":"s{i}","labels":{{"app":"meta"}}}},"type":"Opaque","data":{{"password":"{SECRET_VALUE}"}}}}"#
        );
        let r = s
            .request(
                "POST",
                SECRETS,
                Some(secret.into_bytes()),
                &[("content-type", "application/json")],
                Admin,
            )
            .unwrap();
        assert_eq!(r.status, 201, "{}", body(&r));
        rv = r.json()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
    }
    rv
}

/// A PartialObjectMetadata of the given version: kind, apiVersion and metadata, nothing else.
fn assert_partial(object: &Value, api_version: &str) {
    assert_eq!(object["kind"], "PartialObjectMetadata", "{object}");
    assert_eq!(object["apiVersion"], api_version, "{object}");
    let keys: Vec<&str> = object.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 3, "only kind, apiVersion and metadata: {object}");
    assert!(object["metadata"]["name"].is_string(), "{object}");
    assert!(object["metadata"]["uid"].is_string(), "{object}");
}

fn assert_no_secret_data(r: &RawResponse) {
    let text = body(r);
    assert!(!text.contains(SECRET_VALUE), "Secret data leaked: {text}");
    assert!(!text.contains("\"data\""), "Secret data leaked: {text}");
}

fn assert_not_acceptable(r: &RawResponse, message: &str) {
    assert_eq!(r.status, 406, "{}", body(r));
    let status = r.json();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NotAcceptable");
    assert_eq!(status["code"], 406);
    assert_eq!(status["message"], message);
}

fn events(r: &RawResponse) -> Vec<Value> {
    body(r)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn get_returns_the_metadata_of_a_secret() {
    let s = server();
    secrets(&s, 1);
    let full = get(&s, &format!("{SECRETS}/s0"), "application/json");
    assert_eq!(full.json()["data"]["password"], SECRET_VALUE);
    for accept in [METADATA, CLIENT_GO_WATCH] {
        let r = get(&s, &format!("{SECRETS}/s0"), accept);
        assert_eq!(r.status, 200, "{}", body(&r));
        // Written in JSON (also where protobuf was preferred), and labelled so.
        assert_eq!(r.header("content-type"), "application/json");
        assert_no_secret_data(&r);
        let partial = r.json();
        assert_partial(&partial, "meta.k8s.io/v1");
        assert_eq!(partial["metadata"], full.json()["metadata"]);
    }
    let beta = get(
        &s,
        &format!("{SECRETS}/s0"),
        "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1beta1",
    );
    assert_partial(&beta.json(), "meta.k8s.io/v1beta1");
    // A list conversion of one object is refused after the read, not skipped.
    let refused = get(
        &s,
        &format!("{SECRETS}/s0"),
        &format!("{METADATA_LIST}, application/json"),
    );
    assert_not_acceptable(
        &refused,
        "you requested PartialObjectMetadataList, but the requested object is not a list (*core.Secret)",
    );
    // A missing object is still 404: conversion comes after the read.
    let missing = get(&s, &format!("{SECRETS}/nope"), METADATA_LIST);
    assert_eq!(missing.status, 404);
}

#[test]
fn list_returns_metadata_pages() {
    let s = server();
    secrets(&s, 3);
    let first = get(&s, &format!("{SECRETS}?limit=2"), CLIENT_GO_LIST);
    assert_eq!(first.status, 200, "{}", body(&first));
    assert_eq!(first.header("content-type"), "application/json");
    assert_no_secret_data(&first);
    let page = first.json();
    assert_eq!(page["kind"], "PartialObjectMetadataList");
    assert_eq!(page["apiVersion"], "meta.k8s.io/v1");
    let rv = page["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    assert!(rv.parse::<u64>().is_ok(), "{page}");
    assert_eq!(page["metadata"]["remainingItemCount"], 1);
    let token = page["metadata"]["continue"].as_str().unwrap();
    assert!(!token.is_empty());
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        assert_partial(item, "meta.k8s.io/v1");
        assert_eq!(item["metadata"]["labels"]["app"], "meta");
    }
    let rest = get(&s, &format!("{SECRETS}?limit=2&continue={token}"), METADATA_LIST);
    assert_no_secret_data(&rest);
    let rest = rest.json();
    assert_eq!(rest["kind"], "PartialObjectMetadataList");
    // The continued page is read at the first page's revision.
    assert_eq!(rest["metadata"]["resourceVersion"], rv.as_str());
    assert!(rest["metadata"].get("continue").is_none(), "{rest}");
    let mut names: Vec<&str> = items
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["s0", "s1", "s2"]);

    // v1beta1 items carry their own version.
    let beta = get(
        &s,
        SECRETS,
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1",
    )
    .json();
    assert_eq!(beta["apiVersion"], "meta.k8s.io/v1beta1");
    assert_partial(&beta["items"][0], "meta.k8s.io/v1beta1");
    // An empty list is built afresh upstream: its items are null.
    let empty = get(&s, &format!("{SECRETS}?labelSelector=app%3Dnone"), METADATA_LIST).json();
    assert_eq!(empty["kind"], "PartialObjectMetadataList");
    assert!(empty["items"].is_null(), "{empty}");
    // A single-object conversion of a list is refused, even with a fallback clause.
    let refused = get(&s, SECRETS, &format!("{METADATA}, application/json"));
    assert_not_acceptable(
        &refused,
        "you requested PartialObjectMetadata, but the requested object is a list (*core.SecretList)",
    );
}

#[test]
fn watch_events_carry_metadata_only() {
    let s = server();
    let rv = secrets(&s, 1);
    let labelled = s
        .request(
            "PATCH",
            &format!("{SECRETS}/s0"),
            Some(br#"{"metadata":{"labels":{"changed":"yes"}},"data":{"more":"bW9yZQ=="}}"#.to_vec()),
            &[("content-type", "application/merge-patch+json")],
            Admin,
        )
        .unwrap();
    assert_eq!(labelled.status, 200, "{}", body(&labelled));
    let deleted = s
        .request("DELETE", &format!("{SECRETS}/s0"), None, &[], Admin)
        .unwrap();
    assert_eq!(deleted.status, 200);

    // Replayed from the creation's revision: the update and the delete.
    let r = get(
        &s,
        &format!("{SECRETS}?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        CLIENT_GO_WATCH,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/json");
    assert_no_secret_data(&r);
    assert!(!body(&r).contains("bW9yZQ=="));
    let replayed = events(&r);
    let kinds: Vec<&str> = replayed.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["MODIFIED", "DELETED"], "{replayed:?}");
    for event in &replayed {
        assert_partial(&event["object"], "meta.k8s.io/v1");
    }
    assert_eq!(replayed[0]["object"]["metadata"]["labels"]["changed"], "yes");

    // A WatchList: the current state as ADDED, then the initial-events-end bookmark, all
    // as PartialObjectMetadata.
    secrets_again(&s);
    let r = get(
        &s,
        &format!(
            "{SECRETS}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"
        ),
        METADATA,
    );
    assert_no_secret_data(&r);
    let listed = events(&r);
    let (end, added) = listed.split_last().unwrap();
    assert_eq!(added.len(), 1, "{listed:?}");
    assert_eq!(added[0]["type"], "ADDED");
    assert_partial(&added[0]["object"], "meta.k8s.io/v1");
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(end["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(end["object"]["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );

    // Upstream cannot write a single object as a list in a watch: the stream ends at the
    // first event, having sent nothing.
    let r = get(
        &s,
        &format!("{SECRETS}?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        METADATA_LIST,
    );
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "{}", body(&r));
}

/// Creates Secret `again` with data in the `meta` namespace.
fn secrets_again(s: &TestServer) {
    let secret = format!(r#"{{"metadata":{{"name":"again"}},"data":{{"password":"{SECRET_VALUE}"}}}}"#);
    let r = s
        .request(
            "POST",
            SECRETS,
            Some(secret.into_bytes()),
            &[("content-type", "application/json")],
            Admin,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", body(&r));
}

#[test]
fn unservable_accept_headers_are_406() {
    let s = server();
    secrets(&s, 1);
    let one = format!("{SECRETS}/s0");
    for accept in [
        "application/xml",
        "text/html",
        "application/json;as=Foo;g=meta.k8s.io;v=v1",
        "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1alpha1",
        "application/vnd.kubernetes.protobuf;as=Table;g=meta.k8s.io;v=v1",
    ] {
        assert_not_acceptable(&get(&s, &one, accept), MEDIA_TYPES_406);
        assert_not_acceptable(&get(&s, SECRETS, accept), MEDIA_TYPES_406);
        assert_not_acceptable(
            &get(&s, &format!("{SECRETS}?watch=true"), accept),
            MEDIA_TYPES_406,
        );
    }
    // Negotiation comes first: even a missing object is 406.
    assert_not_acceptable(
        &get(&s, &format!("{SECRETS}/nope"), "application/xml"),
        MEDIA_TYPES_406,
    );
    // One servable clause is enough, wherever its q puts it.
    for accept in ["application/xml, application/json;q=0.1", "text/html, */*;q=0.8"] {
        let r = get(&s, &one, accept);
        assert_eq!(r.status, 200, "{accept}: {}", body(&r));
        assert_eq!(r.json()["data"]["password"], SECRET_VALUE);
    }
    // YAML and protobuf are upstream's choices; badge answers them in JSON.
    for accept in ["application/yaml", "application/vnd.kubernetes.protobuf"] {
        let r = get(&s, &one, accept);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.json()["kind"], "Secret");
    }
    // YAML cannot frame a watch.
    assert_not_acceptable(
        &get(
            &s,
            &format!("{SECRETS}?watch=true&timeoutSeconds=1"),
            "application/yaml",
        ),
        "only the following media types are accepted: application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch",
    );
    // A write no Accept clause can answer is refused before it happens.
    let refused = s
        .request(
            "POST",
            SECRETS,
            Some(br#"{"metadata":{"name":"unwritten"}}"#.to_vec()),
            &[
                ("content-type", "application/json"),
                ("accept", "application/xml"),
            ],
            Admin,
        )
        .unwrap();
    assert_not_acceptable(&refused, MEDIA_TYPES_406);
    assert_eq!(
        get(&s, &format!("{SECRETS}/unwritten"), "application/json").status,
        404
    );
    // A write answered with metadata.
    let created = s
        .request(
            "POST",
            SECRETS,
            Some(
                format!(r#"{{"metadata":{{"name":"written"}},"data":{{"k":"{SECRET_VALUE}"}}}}"#)
                    .into_bytes(),
            ),
            &[("content-type", "application/json"), ("accept", METADATA)],
            Admin,
        )
        .unwrap();
    assert_eq!(created.status, 201);
    assert_no_secret_data(&created);
    assert_partial(&created.json(), "meta.k8s.io/v1");
}

#[test]
fn tables_and_kubectl_still_work() {
    let s = server();
    secrets(&s, 2);
    let table = s.kubectl_ok(&["get", "secrets", "-n", "meta"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "DATA", "AGE"], "{table}");
    assert!(
        table.contains("s0") && table.contains("s1") && table.contains("Opaque"),
        "{table}"
    );
    let yaml = s.kubectl_ok(&["get", "secret", "s0", "-n", "meta", "-o", "yaml"]);
    assert!(yaml.contains(SECRET_VALUE), "{yaml}");
    let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let r = get(&s, &format!("{SECRETS}?limit=500"), kubectl);
    assert_eq!(
        r.header("content-type"),
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    );
    let t = r.json();
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_no_secret_data(&r);
}
