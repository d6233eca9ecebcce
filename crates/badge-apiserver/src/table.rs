//! `meta.k8s.io/v1` Table responses for `kubectl get`; each resource's columns and cells
//! are its strategy's printer (`badge_registry::printers`).

use badge_api::Resource;
use badge_registry::printers::Printer;
use badge_registry::strategy;
use serde_json::{Value, json};

/// The `PartialObjectMetadata` a row carries.
fn row_object(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// How much of each object a row carries (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object in the rows.
    None,
    /// Each row carries its object's PartialObjectMetadata.
    Metadata,
    /// Each row carries its whole object.
    Object,
}

impl IncludeObject {
    /// The `includeObject` value given; Metadata when absent or unknown.
    pub fn parse(value: Option<&str>) -> IncludeObject {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn row(printer: &Printer, object: &Value, now: jiff::Timestamp, include: IncludeObject) -> Value {
    let mut row = json!({"cells": printer.cells(object, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = row_object(object),
        IncludeObject::Object => row["object"] = object.clone(),
    }
    row
}

fn column_definitions(printer: &Printer) -> Vec<Value> {
    printer
        .columns
        .iter()
        .map(|c| json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect()
}

/// A Table of objects. `with_columns` is false for watch events after the first.
pub fn table<'a>(
    resource: &Resource,
    objects: impl IntoIterator<Item = &'a Value>,
    list_meta: Value,
    with_columns: bool,
    include: IncludeObject,
) -> Value {
    let printer = strategy::of(resource).printer;
    let now = badge_api::clock::now();
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|o| row(printer, o, now, include))
        .collect();
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": rows,
    });
    if with_columns {
        table["columnDefinitions"] = json!(column_definitions(printer));
    } else {
        table["columnDefinitions"] = Value::Null;
    }
    table
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use badge_api::resources;

    #[test]
    fn serviceaccount_columns() {
        let sa = json!({"metadata":{"name":"sa","creationTimestamp":"2020-01-01T00:00:00Z"},"secrets":[{"name":"a"}]});
        let t = table(
            resources::SERVICEACCOUNTS,
            [&sa],
            json!({"resourceVersion":"5"}),
            true,
            IncludeObject::Metadata,
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["Name", "Secrets", "Age"]);
        assert_eq!(t["rows"][0]["cells"][0], "sa");
        assert_eq!(t["rows"][0]["cells"][1], 1);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn secret_columns() {
        let s = json!({"metadata":{"name":"s"},"type":"Opaque","data":{"a":"eA==","b":"eQ=="}});
        let t = table(resources::SECRETS, [&s], json!({}), true, IncludeObject::None);
        assert_eq!(t["rows"][0]["cells"][1], "Opaque");
        assert_eq!(t["rows"][0]["cells"][2], 2);
        assert!(t["rows"][0].get("object").is_none());
    }

    #[test]
    fn certificate_signing_request_columns() {
        let pending =
            json!({"metadata":{"name":"c"},"spec":{"signerName":"example.com/s","username":"alice"}});
        let issued = json!({"metadata":{"name":"d"},
            "spec":{"signerName":"example.com/s","username":"bob","expirationSeconds":3600},
            "status":{"certificate":"eA==","conditions":[{"type":"Approved","status":"True"},{"type":"Failed","status":"True"}]}});
        let denied = json!({"metadata":{"name":"e"},"spec":{},"status":{"conditions":[{"type":"Denied","status":"True"}]}});
        let t = table(
            resources::CERTIFICATESIGNINGREQUESTS,
            [&pending, &issued, &denied],
            json!({}),
            true,
            IncludeObject::None,
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            vec![
                "Name",
                "Age",
                "SignerName",
                "Requestor",
                "RequestedDuration",
                "Condition"
            ]
        );
        let cells = |i: usize| t["rows"][i]["cells"].as_array().unwrap()[2..].to_vec();
        assert_eq!(
            cells(0),
            vec![
                json!("example.com/s"),
                json!("alice"),
                json!("<none>"),
                json!("Pending")
            ]
        );
        assert_eq!(
            cells(1),
            vec![
                json!("example.com/s"),
                json!("bob"),
                json!("60m"),
                json!("Approved,Failed,Issued")
            ]
        );
        assert_eq!(
            cells(2),
            vec![json!("<none>"), json!(""), json!("<none>"), json!("Denied")]
        );
    }
}
