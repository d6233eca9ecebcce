//! Server-side apply and `managedFields` (`k8s.io/apimachinery/pkg/util/managedfields`,
//! structured-merge-diff): each manager owns a set of fields; applying makes the applied
//! fields the manager's, refuses to take fields another manager set to a different value
//! unless forced, and removes fields the manager applied before but no longer does when no
//! one else owns them. Other writes move the fields they change to their manager
//! (operation `Update`).
//!
//! Field sets are paths through the object: map fields, list elements by merge key, set
//! elements by value, with atomic lists as one leaf, as the kind's merge schema says —
//! encoded as upstream's `fieldsV1` (`f:`, `k:`, `v:`, and `.` for a keyed element itself).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::patch::{CoreSchema, ListStrategy, MergeSchema, strategic_merge_patch};
use crate::status::{Status, StatusCause, StatusDetails};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Field(String),
    /// A list element identified by its merge key(s), as canonical JSON.
    Key(String),
    /// A set element, as JSON.
    Value(String),
}

type FieldPath = Vec<Step>;
type FieldSet = BTreeSet<FieldPath>;

/// Metadata the server owns: never part of a field set.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "name",
    "namespace",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

fn collect(
    value: &Value,
    path: &mut FieldPath,
    names: &mut Vec<String>,
    schema: Option<&CoreSchema>,
    out: &mut FieldSet,
) {
    let Value::Object(map) = value else {
        out.insert(path.clone());
        return;
    };
    if map.is_empty() && !path.is_empty() {
        out.insert(path.clone());
        return;
    }
    for (k, v) in map {
        if path.is_empty() && (k == "apiVersion" || k == "kind" || k == "status") {
            continue;
        }
        if path.len() == 1
            && path[0] == Step::Field("metadata".into())
            && SERVER_METADATA.contains(&k.as_str())
        {
            continue;
        }
        path.push(Step::Field(k.clone()));
        names.push(k.clone());
        match v {
            Value::Array(items) => {
                let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
                match schema.map_or(ListStrategy::Replace, |s| s.list_strategy(&names_ref)) {
                    ListStrategy::MergeByKey(key) => {
                        for item in items {
                            let id = json!({key: item.get(key).cloned().unwrap_or(Value::Null)}).to_string();
                            path.push(Step::Key(id));
                            out.insert(path.clone());
                            collect(item, path, names, schema, out);
                            path.pop();
                        }
                    }
                    ListStrategy::MergePrimitives => {
                        for item in items {
                            path.push(Step::Value(item.to_string()));
                            out.insert(path.clone());
                            path.pop();
                        }
                    }
                    ListStrategy::Replace => {
                        out.insert(path.clone());
                    }
                }
            }
            Value::Object(_) => collect(v, path, names, schema, out),
            _ => {
                out.insert(path.clone());
            }
        }
        names.pop();
        path.pop();
    }
}

fn field_set(object: &Value, kind: &str) -> FieldSet {
    let mut out = FieldSet::new();
    collect(
        object,
        &mut Vec::new(),
        &mut Vec::new(),
        CoreSchema::for_kind(kind),
        &mut out,
    );
    out
}

/// The value a path names in `object`, if present.
fn value_at<'a>(object: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut current = object;
    for step in path {
        current = match step {
            Step::Field(name) => current.get(name)?,
            Step::Key(id) => {
                let key: Map<String, Value> = serde_json::from_str(id).ok()?;
                current
                    .as_array()?
                    .iter()
                    .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))?
            }
            Step::Value(v) => {
                let wanted: Value = serde_json::from_str(v).ok()?;
                current.as_array()?.iter().find(|item| **item == wanted)?
            }
        };
    }
    Some(current)
}

/// Removes what a path names from `object`.
fn remove_at(object: &mut Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = object;
    for step in parents {
        let next = match step {
            Step::Field(name) => current.get_mut(name),
            Step::Key(id) => {
                let Ok(key) = serde_json::from_str::<Map<String, Value>>(id) else {
                    return;
                };
                current.as_array_mut().and_then(|a| {
                    a.iter_mut()
                        .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
                })
            }
            Step::Value(_) => None,
        };
        let Some(next) = next else { return };
        current = next;
    }
    match last {
        Step::Field(name) => {
            if let Some(map) = current.as_object_mut() {
                map.remove(name);
            }
        }
        Step::Key(id) => {
            if let (Ok(key), Some(items)) = (
                serde_json::from_str::<Map<String, Value>>(id),
                current.as_array_mut(),
            ) {
                items.retain(|item| !key.iter().all(|(k, v)| item.get(k) == Some(v)));
            }
        }
        Step::Value(v) => {
            if let (Ok(wanted), Some(items)) = (serde_json::from_str::<Value>(v), current.as_array_mut()) {
                items.retain(|item| *item != wanted);
            }
        }
    }
}

/// `fieldsV1` for a set.
fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Value::Object(Map::new());
    for path in set {
        let mut node = &mut root;
        for step in path {
            let key = match step {
                Step::Field(name) => format!("f:{name}"),
                Step::Key(id) => format!("k:{id}"),
                Step::Value(v) => format!("v:{v}"),
            };
            let Value::Object(map) = node else { break };
            node = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
        }
        // A keyed element owned as a whole carries ".".
        if matches!(path.last(), Some(Step::Key(_)))
            && let Value::Object(map) = node
        {
            map.insert(".".into(), Value::Object(Map::new()));
        }
    }
    root
}

fn from_fields_v1(value: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    let Value::Object(map) = value else { return };
    if map.is_empty() && !path.is_empty() {
        out.insert(path.clone());
        return;
    }
    for (k, v) in map {
        let step = if k == "." {
            out.insert(path.clone());
            continue;
        } else if let Some(name) = k.strip_prefix("f:") {
            Step::Field(name.to_string())
        } else if let Some(id) = k.strip_prefix("k:") {
            Step::Key(id.to_string())
        } else if let Some(v) = k.strip_prefix("v:") {
            Step::Value(v.to_string())
        } else {
            continue;
        };
        path.push(step);
        from_fields_v1(v, path, out);
        path.pop();
    }
}

struct Entry {
    raw: Value,
    manager: String,
    operation: String,
    fields: FieldSet,
}

fn entries(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|raw| {
                    let mut fields = FieldSet::new();
                    if let Some(v1) = raw.get("fieldsV1") {
                        from_fields_v1(v1, &mut Vec::new(), &mut fields);
                    }
                    Entry {
                        manager: raw
                            .get("manager")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        operation: raw
                            .get("operation")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        fields,
                        raw: raw.clone(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn render_entries(entries: &[Entry]) -> Value {
    Value::Array(
        entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .map(|e| {
                let mut raw = e.raw.clone();
                raw["fieldsV1"] = to_fields_v1(&e.fields);
                raw
            })
            .collect(),
    )
}

fn set_managed_fields(object: &mut Value, entries: &[Entry]) {
    let rendered = render_entries(entries);
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if rendered.as_array().is_some_and(Vec::is_empty) {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), rendered);
        }
    }
}

fn entry(manager: &str, operation: &str, api_version: &str, now: &str) -> Entry {
    Entry {
        raw: json!({"manager": manager, "operation": operation, "apiVersion": api_version, "time": now, "fieldsType": "FieldsV1"}),
        manager: manager.to_string(),
        operation: operation.to_string(),
        fields: FieldSet::new(),
    }
}

/// Renders a path like upstream's conflict messages: `.spec.containers[name="c"].image`.
fn render_path(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            Step::Key(id) => {
                let key: Map<String, Value> = serde_json::from_str(id).unwrap_or_default();
                let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Step::Value(v) => out.push_str(&format!("[={v}]")),
        }
    }
    out
}

/// Fields another manager owns with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyConflict {
    /// (manager, field path) pairs.
    pub conflicts: Vec<(String, String)>,
    /// The apiVersion the conflicting managers applied with.
    pub api_version: String,
}

impl ApplyConflict {
    /// Upstream's 409.
    pub fn to_status(&self, group: &str, resource: &str, name: &str) -> Status {
        let describe = |m: &str| format!("conflict with \"{m}\" using {}", self.api_version);
        let message = match self.conflicts.as_slice() {
            [(m, field)] => format!("Apply failed with 1 conflict: {}: {field}", describe(m)),
            many => {
                let lines: Vec<String> = many
                    .iter()
                    .map(|(m, f)| format!("{}: {f}", describe(m)))
                    .collect();
                format!("Apply failed with {} conflicts: {}", many.len(), lines.join("\n"))
            }
        };
        let mut status = Status::conflict(crate::GroupResource { group, resource }, name, "");
        status.message = message;
        status.details = Some(StatusDetails {
            name: name.into(),
            group: group.into(),
            kind: resource.into(),
            causes: self
                .conflicts
                .iter()
                .map(|(m, f)| StatusCause {
                    reason: "FieldManagerConflict".into(),
                    message: describe(m),
                    field: f.clone(),
                })
                .collect(),
            ..Default::default()
        });
        status
    }
}

/// Applies `applied` (the user's configuration) over `live` for `manager`.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    kind: &str,
    now: &str,
) -> Result<Result<Value, ApplyConflict>, Status> {
    if applied
        .pointer("/metadata/managedFields")
        .is_some_and(|v| !v.is_null())
    {
        return Err(Status::bad_request("metadata.managedFields must be nil"));
    }
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let applied_set = field_set(applied, kind);
    let Some(live) = live else {
        let mut object = applied.clone();
        let mut e = entry(manager, "Apply", &api_version, now);
        e.fields = applied_set;
        set_managed_fields(&mut object, &[e]);
        return Ok(Ok(object));
    };
    let mut managers = entries(live);
    let mut conflicts = Vec::new();
    for e in managers
        .iter_mut()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
    {
        let contested: Vec<FieldPath> = e
            .fields
            .intersection(&applied_set)
            .filter(|p| value_at(live, p) != value_at(applied, p))
            .cloned()
            .collect();
        if force {
            for p in &contested {
                e.fields.remove(p);
            }
        } else {
            conflicts.extend(contested.iter().map(|p| (e.manager.clone(), render_path(p))));
        }
    }
    if !conflicts.is_empty() {
        return Ok(Err(ApplyConflict {
            conflicts,
            api_version,
        }));
    }
    let schema = CoreSchema::for_kind(kind);
    let mut merged = match schema {
        Some(s) => strategic_merge_patch(live, applied, s as &dyn MergeSchema)?,
        None => {
            let mut m = live.clone();
            crate::patch::merge_patch(&mut m, applied);
            m
        }
    };
    let previous: FieldSet = managers
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply")
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = managers
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    // Deepest first, so an element goes before the list it is in is considered.
    let mut dropped: Vec<FieldPath> = previous
        .difference(&applied_set)
        .filter(|p| !others.contains(*p))
        .cloned()
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in dropped {
        // A field whose children someone still owns stays.
        if others
            .iter()
            .any(|o| o.len() > path.len() && o.starts_with(&path))
        {
            continue;
        }
        remove_at(&mut merged, &path);
    }
    match managers
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Apply")
    {
        Some(e) => {
            e.fields = applied_set;
            e.raw["time"] = json!(now);
            e.raw["apiVersion"] = json!(api_version);
        }
        None => {
            let mut e = entry(manager, "Apply", &api_version, now);
            e.fields = applied_set;
            managers.push(e);
        }
    }
    set_managed_fields(&mut merged, &managers);
    Ok(Ok(merged))
}

/// A non-apply write by `manager`: the fields it changed become its own (`Update`).
pub fn track_update(old: Option<&Value>, new: &mut Value, manager: &str, kind: &str, now: &str) {
    let mut managers = old.map(entries).unwrap_or_default();
    let new_set = field_set(new, kind);
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| old.is_none_or(|o| value_at(o, p) != value_at(new, p)))
        .cloned()
        .collect();
    if !changed.is_empty() && !manager.is_empty() {
        for e in managers.iter_mut() {
            e.fields.retain(|p| !changed.contains(p));
        }
        let api_version = new
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match managers
            .iter_mut()
            .find(|e| e.manager == manager && e.operation == "Update")
        {
            Some(e) => {
                e.fields.extend(changed);
                e.raw["time"] = json!(now);
            }
            None => {
                let mut e = entry(manager, "Update", &api_version, now);
                e.fields = changed;
                managers.push(e);
            }
        }
    }
    // Fields that are gone are owned by no one.
    for e in managers.iter_mut() {
        e.fields.retain(|p| value_at(new, p).is_some());
    }
    set_managed_fields(new, &managers);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}, "data": data})
    }

    fn apply_ok(live: Option<&Value>, applied: &Value, manager: &str, force: bool) -> Value {
        apply(live, applied, manager, force, "ConfigMap", "2026-01-01T00:00:00Z")
            .unwrap()
            .unwrap()
    }

    #[test]
    fn create_then_drop_a_field() {
        let v1 = apply_ok(None, &cm(json!({"a": "1", "b": "2"})), "alice", false);
        assert_eq!(
            v1["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:data": {"f:a": {}, "f:b": {}}})
        );
        let v2 = apply_ok(Some(&v1), &cm(json!({"a": "1"})), "alice", false);
        assert_eq!(v2["data"], json!({"a": "1"}));
    }

    #[test]
    fn conflicts_between_managers_and_force() {
        let v1 = apply_ok(None, &cm(json!({"a": "1"})), "alice", false);
        let err = apply(Some(&v1), &cm(json!({"a": "2"})), "bob", false, "ConfigMap", "t")
            .unwrap()
            .unwrap_err();
        let status = err.to_status("", "configmaps", "c");
        assert_eq!(status.code, 409);
        assert_eq!(
            status.message,
            "Apply failed with 1 conflict: conflict with \"alice\" using v1: .data.a"
        );
        assert_eq!(status.details.unwrap().causes[0].reason, "FieldManagerConflict");
        let forced = apply_ok(Some(&v1), &cm(json!({"a": "2"})), "bob", true);
        assert_eq!(forced["data"]["a"], "2");
        let managers: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, vec!["bob"], "alice lost her only field");
    }

    #[test]
    fn shared_ownership_is_not_a_conflict_and_survives_one_owner_leaving() {
        let v1 = apply_ok(None, &cm(json!({"a": "1", "b": "x"})), "alice", false);
        let v2 = apply_ok(Some(&v1), &cm(json!({"a": "1"})), "bob", false);
        let v3 = apply_ok(Some(&v2), &cm(json!({"b": "x"})), "alice", false);
        assert_eq!(v3["data"], json!({"a": "1", "b": "x"}), "bob still owns a");
    }

    #[test]
    fn keyed_lists_merge_and_encode_like_upstream() {
        let pod = |image: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": image}]}})
        };
        let v1 = apply(None, &pod("a"), "m", false, "Pod", "t").unwrap().unwrap();
        assert_eq!(
            v1["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:containers"],
            json!({"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}})
        );
        let mut live = v1.clone();
        live["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        let v2 = apply(Some(&live), &pod("b"), "m", false, "Pod", "t")
            .unwrap()
            .unwrap();
        assert_eq!(v2["spec"]["containers"][0]["image"], "b");
        assert_eq!(
            v2["spec"]["containers"][0]["imagePullPolicy"], "Always",
            "unowned fields stay"
        );
    }

    #[test]
    fn updates_take_ownership_of_what_they_change() {
        let v1 = apply_ok(None, &cm(json!({"a": "1"})), "alice", false);
        let mut v2 = v1.clone();
        v2["data"]["a"] = json!("9");
        track_update(Some(&v1), &mut v2, "kubectl-edit", "ConfigMap", "t");
        let err = apply(
            Some(&v2),
            &cm(json!({"a": "1"})),
            "alice",
            false,
            "ConfigMap",
            "t",
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(err.conflicts[0].0, "kubectl-edit");
    }

    #[test]
    fn managed_fields_in_the_configuration_are_refused() {
        let mut bad = cm(json!({}));
        bad["metadata"]["managedFields"] = json!([]);
        assert_eq!(
            apply(None, &bad, "m", false, "ConfigMap", "t").unwrap_err().code,
            400
        );
    }
}
