//! Strategic merge patch, applied as the apiserver applies it
//! (`k8s.io/apimachinery/pkg/util/strategicpatch`, `StrategicMergeMapPatch`).
//!
//! A JSON merge patch in which lists are merged according to the Go struct tags
//! `patchStrategy`/`patchMergeKey` of the kind (supplied by a [`MergeSchema`]), plus the
//! directives kubectl sends: `$patch` (`replace`/`delete` on maps and list elements),
//! `$retainKeys`, `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>`.
//!
//! Errors: upstream answers a few malformed-patch errors with 400 and lists of lists with
//! 422; every other patch error reaches the client as a 500 with no reason. Those are the
//! client's fault, so they are 400 here, with upstream's wording.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::status::Status;

use super::json::go_json_type;

const DIRECTIVE_MARKER: &str = "$patch";
const DELETE_DIRECTIVE: &str = "delete";
const REPLACE_DIRECTIVE: &str = "replace";
const MERGE_DIRECTIVE: &str = "merge";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";

/// How a list field is patched: the `patchStrategy`/`patchMergeKey` tags of its Go field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStrategy<'a> {
    /// No `patchStrategy`: the patch's list replaces the whole list (the default).
    Replace,
    /// `patchStrategy:"merge"` with `patchMergeKey`: a list of objects merged by that key.
    MergeByKey(&'a str),
    /// `patchStrategy:"merge"` without a merge key: a set of primitives (`finalizers`).
    MergePrimitives,
}

impl<'a> ListStrategy<'a> {
    fn merges(self) -> bool {
        !matches!(self, ListStrategy::Replace)
    }

    /// The merge key, empty when there is none (as upstream's `GetPatchMergeKey`).
    fn merge_key(self) -> &'a str {
        match self {
            ListStrategy::MergeByKey(key) => key,
            _ => "",
        }
    }
}

/// The patch metadata of a kind, looked up by the path of field names from the object's
/// root (list elements add no step: `["spec", "containers", "env"]`).
pub trait MergeSchema {
    /// The strategy of the list field at `path`; [`ListStrategy::Replace`] if unknown.
    fn list_strategy(&self, path: &[&str]) -> ListStrategy<'_>;

    /// Whether the list field at `path` is tagged `retainKeys` (its elements may carry
    /// `$retainKeys`). Applying a patch honours `$retainKeys` wherever it appears, as
    /// upstream does; the tag matters to whoever builds patches.
    fn retain_keys(&self, path: &[&str]) -> bool {
        let _ = path;
        false
    }
}

/// Why a strategic merge patch failed, before it becomes a `Status`.
#[derive(Debug, PartialEq)]
pub(crate) enum SmpError {
    /// The patch is malformed (400).
    BadRequest(String),
    /// Upstream's 422 cases (lists of lists).
    Unprocessable(String),
}

impl SmpError {
    pub(crate) fn into_status(self) -> Status {
        match self {
            SmpError::BadRequest(message) => Status::bad_request(message),
            SmpError::Unprocessable(_) => super::unprocessable(),
        }
    }
}

fn bad(message: impl Into<String>) -> SmpError {
    SmpError::BadRequest(message.into())
}

/// Applies the strategic merge patch `patch` to `original`, with list semantics from
/// `schema`. A `null` patch changes nothing; a patch that is not an object is a 400.
pub fn strategic_merge_patch(
    original: &Value,
    patch: &Value,
    schema: &dyn MergeSchema,
) -> Result<Value, Status> {
    apply(original, patch, schema).map_err(SmpError::into_status)
}

/// [`strategic_merge_patch`] with the failure kept apart from its `Status`.
pub(crate) fn apply(original: &Value, patch: &Value, schema: &dyn MergeSchema) -> Result<Value, SmpError> {
    let patch = match patch {
        Value::Object(map) => map.clone(),
        // Go unmarshals `null` into a nil map, which patches nothing.
        Value::Null => return Ok(original.clone()),
        other => {
            return Err(bad(format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                go_json_type(other)
            )));
        }
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let mut merger = Merger {
        schema,
        path: Vec::new(),
    };
    merger.merge_map(original, patch).map(Value::Object)
}

/// The kind of a list's elements, as upstream compares Go types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ElementKind {
    Null,
    Bool,
    Int,
    Float,
    String,
    Object,
    Array,
}

fn element_kind(value: &Value) -> ElementKind {
    match value {
        Value::Null => ElementKind::Null,
        Value::Bool(_) => ElementKind::Bool,
        Value::Number(n) if n.is_f64() => ElementKind::Float,
        Value::Number(_) => ElementKind::Int,
        Value::String(_) => ElementKind::String,
        Value::Array(_) => ElementKind::Array,
        Value::Object(_) => ElementKind::Object,
    }
}

/// The one element kind of all the given lists; `None` if they are all empty.
fn slice_element_kind(lists: &[&[Value]]) -> Result<Option<ElementKind>, SmpError> {
    let mut kind = None;
    for value in lists.iter().flat_map(|list| list.iter()) {
        let this = element_kind(value);
        match kind {
            None if this == ElementKind::Array => {
                return Err(SmpError::Unprocessable("lists of lists are not supported".into()));
            }
            None => kind = Some(this),
            Some(k) if k != this => {
                let rendered: Vec<String> = lists.iter().map(|l| go_fmt(&Value::Array(l.to_vec()))).collect();
                return Err(bad(format!(
                    "list element types are not identical: [{}]",
                    rendered.join(" ")
                )));
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

/// Renders a value as Go's `%v` renders the decoded `interface{}`, for error messages.
fn go_fmt(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_fmt).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}:{}", go_fmt(v))).collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// Go's type name of a decoded JSON value, for `expected a X, but received a Y`.
fn go_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "%!s(<nil>)",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn bad_arg_type(expected: &str, actual: &Value) -> SmpError {
    bad(format!(
        "expected a {expected}, but received a {}",
        go_type_name(actual)
    ))
}

const LIST_TYPE: &str = "[]interface {}";
const MAP_TYPE: &str = "map[string]interface {}";

fn no_merge_key(map: &Map<String, Value>, key: &str) -> SmpError {
    bad(format!(
        "map: {} does not contain declared merge key: {key}",
        go_fmt(&Value::Object(map.clone()))
    ))
}

fn bad_patch_type(directive: &Value, map: &Map<String, Value>) -> SmpError {
    bad(format!(
        "unknown patch type: {} in map: {}",
        go_fmt(directive),
        go_fmt(&Value::Object(map.clone()))
    ))
}

/// The field name after `<prefix>/` in a directive key.
fn extract_key(key: &str, prefix: &str) -> Result<String, SmpError> {
    match key.split_once('/') {
        Some((head, rest)) if head == prefix => Ok(rest.to_string()),
        _ if prefix == DELETE_FROM_PRIMITIVE_LIST_PREFIX => {
            Err(bad("invalid patch format of primitive list"))
        }
        _ => Err(bad("invalid patch format of setElementOrder list")),
    }
}

/// The identity of a list element for ordering and matching: its merge key's value for
/// objects, itself for primitives. Go compares these with `==`; the compact JSON text is
/// equal exactly when the decoded values are.
fn identity(item: &Value, merge_key: &str, kind: ElementKind) -> Option<String> {
    if kind == ElementKind::Object {
        item.as_object()
            .and_then(|m| m.get(merge_key))
            .map(Value::to_string)
    } else {
        Some(item.to_string())
    }
}

/// First positions of elements by identity, so ordering is linear rather than quadratic.
struct OrderIndex(HashMap<Option<String>, usize>);

impl OrderIndex {
    fn new(list: &[Value], merge_key: &str, kind: ElementKind) -> OrderIndex {
        let mut positions = HashMap::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            positions.entry(identity(item, merge_key, kind)).or_insert(i);
        }
        OrderIndex(positions)
    }

    fn position(&self, item: &Value, merge_key: &str, kind: ElementKind) -> Option<usize> {
        self.0.get(&identity(item, merge_key, kind)).copied()
    }
}

/// Drops every object carrying `$patch` (and the field or element holding it); `None` if
/// `value` itself is one.
fn remove_directives(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) => {
            if map.contains_key(DIRECTIVE_MARKER) {
                return None;
            }
            Some(Value::Object(
                map.into_iter()
                    .filter_map(|(k, v)| remove_directives(v).map(|v| (k, v)))
                    .collect(),
            ))
        }
        Value::Array(items) => Some(Value::Array(
            items.into_iter().filter_map(remove_directives).collect(),
        )),
        other => Some(other),
    }
}

/// Removes `null` members at every depth: a new value has nothing to delete.
fn discard_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(discard_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}

fn has_delete_directive(item: &Value) -> bool {
    item.get(DIRECTIVE_MARKER)
        .is_some_and(|d| d.as_str() == Some(DELETE_DIRECTIVE))
}

struct Merger<'s> {
    schema: &'s dyn MergeSchema,
    /// Field names from the root to the map being merged.
    path: Vec<String>,
}

impl Merger<'_> {
    fn strategy_of(&self, field: &str) -> ListStrategy<'_> {
        let mut path: Vec<&str> = self.path.iter().map(String::as_str).collect();
        path.push(field);
        self.schema.list_strategy(&path)
    }

    fn merge_map(
        &mut self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
    ) -> Result<Map<String, Value>, SmpError> {
        if let Some(directive) = patch.get(DIRECTIVE_MARKER) {
            return match directive.as_str() {
                Some(REPLACE_DIRECTIVE) => {
                    patch.remove(DIRECTIVE_MARKER);
                    Ok(patch)
                }
                Some(DELETE_DIRECTIVE) => Ok(Map::new()),
                _ => Err(bad_patch_type(directive, &patch)),
            };
        }
        apply_retain_keys(&mut original, &mut patch)?;
        self.merge_set_element_order(&mut original, &mut patch)?;

        // Keys are visited in sorted order, so `$deleteFromPrimitiveList/x` is applied
        // before `x` is merged (Go visits them in random order).
        for (key, patch_value) in patch {
            let (key, is_delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
                (extract_key(&key, DELETE_FROM_PRIMITIVE_LIST_PREFIX)?, true)
            } else {
                (key, false)
            };
            if patch_value.is_null() {
                original.remove(&key);
                continue;
            }
            let Some(current) = original.get_mut(&key) else {
                if !is_delete_list {
                    insert_new(&mut original, key, patch_value);
                }
                continue;
            };
            match (current, patch_value) {
                (Value::Object(current), Value::Object(patch_map)) => {
                    let current = std::mem::take(current);
                    self.path.push(key.clone());
                    let merged = self.merge_map(current, patch_map);
                    self.path.pop();
                    original.insert(key, Value::Object(merged?));
                }
                (Value::Array(current), Value::Array(patch_list)) => {
                    let current = std::mem::take(current);
                    let merged = self.merge_list_field(&key, current, patch_list, is_delete_list)?;
                    original.insert(key, Value::Array(merged));
                }
                // A value of another shape, or a primitive, replaces the current one; a
                // deletion list for a field that is not a list deletes nothing.
                (_, patch_value) => {
                    if !is_delete_list {
                        insert_new(&mut original, key, patch_value);
                    }
                }
            }
        }
        Ok(original)
    }

    /// Merges the list field `key` of the current map (`mergeSliceHandler`).
    fn merge_list_field(
        &mut self,
        key: &str,
        original: Vec<Value>,
        patch: Vec<Value>,
        is_delete_list: bool,
    ) -> Result<Vec<Value>, SmpError> {
        let strategy = self.strategy_of(key);
        if !(strategy.merges() || is_delete_list) {
            return Ok(patch);
        }
        let merge_key = strategy.merge_key().to_string();
        self.path.push(key.to_string());
        let merged = self.merge_list(original, patch, &merge_key, is_delete_list);
        self.path.pop();
        merged
    }

    /// `mergeSlice`: merges two lists of the field at `self.path`.
    fn merge_list(
        &mut self,
        original: Vec<Value>,
        patch: Vec<Value>,
        merge_key: &str,
        is_delete_list: bool,
    ) -> Result<Vec<Value>, SmpError> {
        let Some(kind) = slice_element_kind(&[&original, &patch])? else {
            return Ok(original);
        };
        let (original, patch, merged) = if kind != ElementKind::Object {
            if is_delete_list {
                let doomed: HashSet<String> = patch.iter().map(Value::to_string).collect();
                return Ok(original
                    .into_iter()
                    .filter(|v| !doomed.contains(&v.to_string()))
                    .collect());
            }
            let mut seen = HashSet::new();
            let merged: Vec<Value> = original
                .iter()
                .chain(&patch)
                .filter(|v| seen.insert(v.to_string()))
                .cloned()
                .collect();
            (original, patch, merged)
        } else {
            if merge_key.is_empty() {
                return Err(bad(format!(
                    "cannot merge lists without merge key for {}",
                    self.path.join(".")
                )));
            }
            let (original, patch) = merge_special_elements(original, patch, merge_key)?;
            let merged = self.merge_by_key(original.clone(), &patch, merge_key)?;
            (original, patch, merged)
        };
        let (patch_items, server_only) = partition(merged, &patch, merge_key)?;
        normalize_element_order(patch_items, server_only, &patch, &original, merge_key, kind)
    }

    /// `mergeSliceWithoutSpecialElements`: each patch element updates the element with
    /// the same merge key, or is appended.
    fn merge_by_key(
        &mut self,
        mut original: Vec<Value>,
        patch: &[Value],
        merge_key: &str,
    ) -> Result<Vec<Value>, SmpError> {
        let mut positions: HashMap<String, usize> = HashMap::new();
        for (i, item) in original.iter().enumerate() {
            if let Some(id) = item.get(merge_key) {
                positions.entry(id.to_string()).or_insert(i);
            }
        }
        for item in patch {
            let Value::Object(patch_map) = item else {
                return Err(bad_arg_type(MAP_TYPE, item));
            };
            let id = patch_map
                .get(merge_key)
                .ok_or_else(|| no_merge_key(patch_map, merge_key))?
                .to_string();
            match positions.get(&id) {
                Some(&i) => {
                    let current = match original.get_mut(i) {
                        Some(Value::Object(current)) => std::mem::take(current),
                        _ => Map::new(),
                    };
                    let merged = self.merge_map(current, patch_map.clone())?;
                    if let Some(slot) = original.get_mut(i) {
                        *slot = Value::Object(merged);
                    }
                }
                None => {
                    positions.insert(id, original.len());
                    original.push(item.clone());
                }
            }
        }
        Ok(original)
    }

    /// `mergePatchIntoOriginal`: merges each list named by a `$setElementOrder/<field>`
    /// directive and orders it by that list.
    fn merge_set_element_order(
        &mut self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
    ) -> Result<(), SmpError> {
        let directives: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(SET_ELEMENT_ORDER_PREFIX))
            .cloned()
            .collect();
        for directive in directives {
            let Some(order) = patch.remove(&directive) else {
                continue;
            };
            let Value::Array(order) = order else {
                return Err(bad_arg_type(LIST_TYPE, &order));
            };
            let field = extract_key(&directive, SET_ELEMENT_ORDER_PREFIX)?;
            let original_list = match original.get(&field) {
                None => None,
                Some(Value::Array(items)) => Some(items.clone()),
                Some(other) => return Err(bad_arg_type(LIST_TYPE, other)),
            };
            let patch_list = match patch.get(&field) {
                None => None,
                Some(Value::Array(items)) => Some(items.clone()),
                Some(other) => return Err(bad_arg_type(LIST_TYPE, other)),
            };
            let strategy = self.strategy_of(&field);
            let merge_key = strategy.merge_key().to_string();
            validate_patch_with_set_order_list(
                patch_list.as_deref().unwrap_or_default(),
                &order,
                &merge_key,
            )?;
            let original_items = original_list.clone().unwrap_or_default();
            let patch_items_raw = patch_list.clone().unwrap_or_default();
            let merged = match (original_list, patch_list) {
                (Some(current), None) => current,
                (None, Some(list)) => match remove_directives(Value::Array(list)) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                },
                (Some(current), Some(list)) => self.merge_list_field(&field, current, list, false)?,
                (None, None) => continue,
            };
            // Upstream fails on two empty lists ("no elements in any of the given
            // slices"); an empty result needs no ordering, so it is kept as is.
            let Some(kind) = slice_element_kind(&[&original_items, &patch_items_raw])? else {
                original.insert(field.clone(), Value::Array(merged));
                patch.remove(&field);
                continue;
            };
            let (in_order, server_only) = partition(merged, &order, &merge_key)?;
            let ordered =
                normalize_element_order(in_order, server_only, &order, &original_items, &merge_key, kind)?;
            original.insert(field.clone(), Value::Array(ordered));
            patch.remove(&field);
        }
        Ok(())
    }
}

/// Sets a field the original lacks (or whose shape changes): nulls and directives in a
/// new value mean nothing and are dropped.
fn insert_new(original: &mut Map<String, Value>, key: String, mut value: Value) {
    discard_nulls(&mut value);
    match remove_directives(value) {
        Some(value) => {
            original.insert(key, value);
        }
        None => {
            original.remove(&key);
        }
    }
}

/// `applyRetainKeysDirective`: clears the fields of `original` not listed in the
/// patch's `$retainKeys`, after checking the patch sets no field outside the list.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), SmpError> {
    let Some(retain) = patch.remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(bad("invalid patch format of retainKeys"));
    };
    let keep: HashSet<&str> = retain.iter().filter_map(Value::as_str).collect();
    for (key, value) in patch.iter() {
        if value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
        {
            continue;
        }
        if !keep.contains(key.as_str()) {
            return Err(bad("invalid patch format of retainKeys"));
        }
    }
    original.retain(|key, _| keep.contains(key.as_str()));
    Ok(())
}

/// `mergeSliceWithSpecialElements`: applies the `$patch` elements of a list of objects
/// and returns the original and the patch without them.
fn merge_special_elements(
    original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>), SmpError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut doomed: HashSet<String> = HashSet::new();
    let mut replace = false;
    for item in patch {
        let Some(directive) = item.get(DIRECTIVE_MARKER) else {
            plain.push(item);
            continue;
        };
        let Value::Object(map) = &item else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some(DELETE_DIRECTIVE) => {
                let id = map.get(merge_key).ok_or_else(|| no_merge_key(map, merge_key))?;
                doomed.insert(id.to_string());
            }
            // Keeps scanning so the remaining directive elements are dropped too.
            Some(REPLACE_DIRECTIVE) => replace = true,
            Some(MERGE_DIRECTIVE) => {
                return Err(bad("merging lists cannot yet be specified in the patch"));
            }
            _ => return Err(bad_patch_type(directive, map)),
        }
    }
    if replace {
        return Ok((plain, Vec::new()));
    }
    let original = if doomed.is_empty() {
        original
    } else {
        original
            .into_iter()
            .filter(|item| {
                item.get(merge_key)
                    .is_none_or(|id| !doomed.contains(&id.to_string()))
            })
            .collect()
    };
    Ok((original, plain))
}

/// Splits `merged` into the elements present in `by` and the rest, keeping their order.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>), SmpError> {
    let mut present = Vec::with_capacity(merged.len());
    let mut absent = Vec::with_capacity(merged.len());
    if merge_key.is_empty() {
        let wanted: HashSet<String> = by.iter().map(Value::to_string).collect();
        for item in merged {
            if wanted.contains(&item.to_string()) {
                present.push(item);
            } else {
                absent.push(item);
            }
        }
        return Ok((present, absent));
    }
    let mut wanted = HashSet::new();
    for (i, item) in by.iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(bad(format!("value for key {i} is not a map")));
        };
        if let Some(id) = map.get(merge_key) {
            wanted.insert(id.to_string());
        }
    }
    for item in merged {
        let Value::Object(map) = &item else {
            return Err(bad_arg_type(MAP_TYPE, &item));
        };
        let id = map.get(merge_key).ok_or_else(|| no_merge_key(map, merge_key))?;
        if wanted.contains(&id.to_string()) {
            present.push(item);
        } else {
            absent.push(item);
        }
    }
    Ok((present, absent))
}

/// `validatePatchWithSetOrderList`: the patch's elements (deletions aside) must appear in
/// the `$setElementOrder` list, in the same relative order.
fn validate_patch_with_set_order_list(
    patch: &[Value],
    order: &[Value],
    merge_key: &str,
) -> Result<(), SmpError> {
    if order.is_empty() || patch.is_empty() {
        return Ok(());
    }
    let mut kept = Vec::with_capacity(patch.len());
    for item in patch {
        if !merge_key.is_empty() {
            if !item.is_object() {
                return Err(bad_arg_type(MAP_TYPE, item));
            }
            if has_delete_directive(item) {
                continue;
            }
        }
        kept.push(item);
    }
    let (mut p, mut o) = (0, 0);
    while p < kept.len() && o < order.len() {
        if kept[p].get(DIRECTIVE_MARKER).is_some() {
            p += 1;
            continue;
        }
        if merge_key_value_equal(kept[p], &order[o], merge_key)? {
            p += 1;
        }
        o += 1;
    }
    if p < kept.len() && o >= order.len() {
        return Err(bad(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER_PREFIX} list:\n{}\n",
            go_fmt(&Value::Array(patch.to_vec())),
            go_fmt(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

fn merge_key_value_equal(left: &Value, right: &Value, merge_key: &str) -> Result<bool, SmpError> {
    if merge_key.is_empty() {
        return Ok(left == right);
    }
    let Value::Object(left) = left else {
        return Err(bad_arg_type(MAP_TYPE, left));
    };
    let Value::Object(right) = right else {
        return Err(bad_arg_type(MAP_TYPE, right));
    };
    let l = left.get(merge_key).ok_or_else(|| no_merge_key(left, merge_key))?;
    let r = right
        .get(merge_key)
        .ok_or_else(|| no_merge_key(right, merge_key))?;
    Ok(l == r)
}

/// `normalizeElementOrder`: orders the patch's elements as `patch_order` and the
/// server-only ones as `server_order`, then interleaves them keeping the live order where
/// both sides are known.
fn normalize_element_order(
    patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: &str,
    kind: ElementKind,
) -> Result<Vec<Value>, SmpError> {
    let patch = normalize_slice_order(patch, patch_order, merge_key, kind)?;
    let server_only = normalize_slice_order(server_only, server_order, merge_key, kind)?;
    Ok(merge_sorted(server_only, patch, server_order, merge_key, kind))
}

/// `normalizeSliceOrder`: a stable sort of `items` by their position in `order`;
/// elements marked for deletion go last.
fn normalize_slice_order(
    items: Vec<Value>,
    order: &[Value],
    merge_key: &str,
    kind: ElementKind,
) -> Result<Vec<Value>, SmpError> {
    let (mut items, doomed) = if kind == ElementKind::Object {
        for item in items.iter().chain(order) {
            let Value::Object(map) = item else {
                return Err(bad_arg_type(MAP_TYPE, item));
            };
            if !map.contains_key(merge_key) {
                return Err(no_merge_key(map, merge_key));
            }
        }
        items.into_iter().partition(|item| !has_delete_directive(item))
    } else {
        (items, Vec::new())
    };
    let index = OrderIndex::new(order, merge_key, kind);
    // Unknown elements cannot happen for well-formed input; they sort last.
    items.sort_by_key(|item| index.position(item, merge_key, kind).unwrap_or(usize::MAX));
    items.extend(doomed);
    Ok(items)
}

/// `mergeSortedSlice`: interleaves `left` (server-only) into `right` (patch elements).
/// A server-only element goes first only when both are in `server_order` and it comes
/// earlier there; so new elements land before the server-only ones that follow them.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    merge_key: &str,
    kind: ElementKind,
) -> Vec<Value> {
    let index = OrderIndex::new(server_order, merge_key, kind);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (index.position(l, merge_key, kind), index.position(r, merge_key, kind)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A schema from a table of (dotted path, strategy).
    struct Table(&'static [(&'static str, ListStrategy<'static>)]);

    impl MergeSchema for Table {
        fn list_strategy(&self, path: &[&str]) -> ListStrategy<'_> {
            self.0
                .iter()
                .find(|(p, _)| p.split('.').eq(path.iter().copied()))
                .map(|(_, s)| *s)
                .unwrap_or(ListStrategy::Replace)
        }
    }

    // The field names of upstream's strategicpatch test type.
    const TEST: Table = Table(&[
        ("mergingList", ListStrategy::MergeByKey("name")),
        ("mergingList.mergingList", ListStrategy::MergeByKey("name")),
        ("mergingIntList", ListStrategy::MergePrimitives),
        ("nonMergingList", ListStrategy::Replace),
        ("retainKeysMergingList", ListStrategy::MergeByKey("name")),
    ]);

    fn smp(original: Value, patch: Value) -> Value {
        match apply(&original, &patch, &TEST) {
            Ok(v) => v,
            Err(e) => panic!("patch {patch} failed: {e:?}"),
        }
    }

    fn smp_err(original: Value, patch: Value) -> SmpError {
        match apply(&original, &patch, &TEST) {
            Err(e) => e,
            Ok(v) => panic!("patch {patch} applied: {v}"),
        }
    }

    // Cases below are upstream's patch_test.go fixtures: the "Current" object, the
    // "ThreeWay" patch and the "Result".
    #[test]
    fn merge_lists_of_scalars_with_order() {
        assert_eq!(
            smp(
                json!({"mergingIntList":[1,2,4]}),
                json!({"$setElementOrder/mergingIntList":[1,2,3],"mergingIntList":[3]})
            ),
            json!({"mergingIntList":[1,2,3,4]})
        );
        assert_eq!(
            smp(
                json!({"mergingIntList":[1,4,2]}),
                json!({"$setElementOrder/mergingIntList":[3,1,2],"mergingIntList":[3]})
            ),
            json!({"mergingIntList":[3,1,4,2]})
        );
    }

    #[test]
    fn delete_from_primitive_list_with_order() {
        assert_eq!(
            smp(
                json!({"mergingIntList":[1,2,3]}),
                json!({"$setElementOrder/mergingIntList":[2,1],"$deleteFromPrimitiveList/mergingIntList":[3]})
            ),
            json!({"mergingIntList":[2,1]})
        );
    }

    #[test]
    fn delete_from_primitive_list_edge_cases() {
        // Nonexistent item, empty list, and missing list add nothing.
        assert_eq!(
            smp(
                json!({"mergingIntList":[1,2]}),
                json!({"$deleteFromPrimitiveList/mergingIntList":[5]})
            ),
            json!({"mergingIntList":[1,2]})
        );
        assert_eq!(
            smp(
                json!({"mergingIntList":[]}),
                json!({"$deleteFromPrimitiveList/mergingIntList":[5]})
            ),
            json!({"mergingIntList":[]})
        );
        assert_eq!(
            smp(json!({}), json!({"$deleteFromPrimitiveList/mergingIntList":[5]})),
            json!({})
        );
        // Deletion lists work whatever the field's strategy, and remove duplicates too.
        assert_eq!(
            smp(
                json!({"nonMergingList":["a","b","a"]}),
                json!({"$deleteFromPrimitiveList/nonMergingList":["a"]})
            ),
            json!({"nonMergingList":["b"]})
        );
    }

    #[test]
    fn merging_list_preserves_order_with_set_element_order() {
        // "add an item in a list and preserve order"
        assert_eq!(
            smp(
                json!({"mergingList":[{"name":1,"other":"a"},{"name":2,"value":2,"other":"b"}]}),
                json!({
                    "$setElementOrder/mergingList":[{"name":3},{"name":1},{"name":2}],
                    "mergingList":[{"name":3,"value":3}]
                })
            ),
            json!({"mergingList":[
                {"name":3,"value":3},{"name":1,"other":"a"},{"name":2,"value":2,"other":"b"}
            ]})
        );
        // "set elements order in a list with server-only items" 1 to 3
        let order = json!({
            "$setElementOrder/mergingList":[{"name":4},{"name":2},{"name":3},{"name":1}]
        });
        assert_eq!(
            smp(
                json!({"mergingList":[{"name":1},{"name":3},{"name":4},{"name":2},{"name":9}]}),
                order
            ),
            json!({"mergingList":[{"name":4},{"name":2},{"name":3},{"name":1},{"name":9}]})
        );
        let order = json!({
            "$setElementOrder/mergingList":[{"name":2},{"name":1},{"name":4},{"name":3}]
        });
        assert_eq!(
            smp(
                json!({"mergingList":[{"name":1},{"name":2},{"name":9},{"name":3},{"name":4}]}),
                order.clone()
            ),
            json!({"mergingList":[{"name":2},{"name":1},{"name":9},{"name":4},{"name":3}]})
        );
        assert_eq!(
            smp(
                json!({"mergingList":[
                    {"name":1},{"name":2},{"name":7},{"name":9},{"name":8},{"name":3},{"name":4}
                ]}),
                order
            ),
            json!({"mergingList":[
                {"name":2},{"name":1},{"name":7},{"name":9},{"name":8},{"name":4},{"name":3}
            ]})
        );
    }

    #[test]
    fn new_elements_without_order_go_first() {
        assert_eq!(
            smp(json!({"mergingIntList":[1,2]}), json!({"mergingIntList":[3,1]})),
            json!({"mergingIntList":[3,1,2]})
        );
        assert_eq!(
            smp(
                json!({"mergingList":[{"name":"a","v":1},{"name":"b"}]}),
                json!({"mergingList":[{"name":"c"},{"name":"a","w":2}]})
            ),
            json!({"mergingList":[{"name":"c"},{"name":"a","v":1,"w":2},{"name":"b"}]})
        );
    }

    #[test]
    fn list_element_directives() {
        let original = json!({"mergingList":[{"name":"a","v":1},{"name":"b","v":2}]});
        assert_eq!(
            smp(
                original.clone(),
                json!({"mergingList":[{"name":"a","$patch":"delete"}]})
            ),
            json!({"mergingList":[{"name":"b","v":2}]})
        );
        assert_eq!(
            smp(
                original.clone(),
                json!({"mergingList":[{"name":"z","$patch":"delete"}]})
            ),
            original
        );
        assert_eq!(
            smp(
                original.clone(),
                json!({"mergingList":[{"$patch":"replace"},{"name":"c","v":3}]})
            ),
            json!({"mergingList":[{"name":"c","v":3}]})
        );
        assert!(matches!(
            smp_err(original.clone(), json!({"mergingList":[{"name":"a","$patch":"merge"}]})),
            SmpError::BadRequest(m) if m == "merging lists cannot yet be specified in the patch"
        ));
        assert!(matches!(
            smp_err(original.clone(), json!({"mergingList":[{"name":"a","$patch":"nope"}]})),
            SmpError::BadRequest(m) if m.starts_with("unknown patch type: nope in map: map[$patch:nope name:a]")
        ));
        assert!(matches!(
            smp_err(original, json!({"mergingList":[{"$patch":"delete"}]})),
            SmpError::BadRequest(m) if m.ends_with("does not contain declared merge key: name")
        ));
    }

    #[test]
    fn map_directives() {
        let original = json!({"a":{"x":1,"y":{"z":2}},"b":1});
        assert_eq!(
            smp(original.clone(), json!({"a":{"$patch":"replace","q":3}})),
            json!({"a":{"q":3},"b":1})
        );
        // Upstream leaves an empty map behind a deleted one that existed...
        assert_eq!(
            smp(original.clone(), json!({"a":{"$patch":"delete"}})),
            json!({"a":{},"b":1})
        );
        // ...and adds nothing for one that did not.
        assert_eq!(smp(original.clone(), json!({"c":{"$patch":"delete"}})), original);
        assert!(matches!(
            smp_err(original.clone(), json!({"a":{"$patch":"merge"}})),
            SmpError::BadRequest(m) if m.starts_with("unknown patch type: merge")
        ));
        assert_eq!(smp(original, json!({"$patch":"delete"})), json!({}));
    }

    #[test]
    fn new_values_lose_nulls_and_directives() {
        assert_eq!(
            smp(
                json!({}),
                json!({"a":{"b":null,"c":{"d":null,"e":1},"f":{"$patch":"delete"}},"l":[{"x":null,"y":1},{"$patch":"delete"}]})
            ),
            json!({"a":{"c":{"e":1}},"l":[{"y":1}]})
        );
    }

    #[test]
    fn nested_merging_lists() {
        assert_eq!(
            smp(
                json!({"mergingList":[{"name":"a","mergingList":[{"name":"x","v":1},{"name":"y"}]}]}),
                json!({"mergingList":[{"name":"a","mergingList":[{"name":"x","v":null,"w":2}]}]})
            ),
            json!({"mergingList":[{"name":"a","mergingList":[{"name":"x","w":2},{"name":"y"}]}]})
        );
    }

    #[test]
    fn retain_keys() {
        // "retainKeys list of maps clears a field"
        assert_eq!(
            smp(
                json!({"retainKeysMergingList":[{"name":"foo","value":"a","other":"b"}]}),
                json!({"retainKeysMergingList":[{"name":"foo","$retainKeys":["name","value"]}]})
            ),
            json!({"retainKeysMergingList":[{"name":"foo","value":"a"}]})
        );
        // A field set outside the list is malformed.
        assert!(matches!(
            smp_err(json!({"m":{"a":1}}), json!({"m":{"$retainKeys":["a"],"b":2}})),
            SmpError::BadRequest(m) if m == "invalid patch format of retainKeys"
        ));
        assert!(matches!(
            smp_err(json!({"m":{"a":1}}), json!({"m":{"$retainKeys":"a"}})),
            SmpError::BadRequest(m) if m == "invalid patch format of retainKeys"
        ));
        // Nulls and other directives are allowed beside it.
        assert_eq!(
            smp(
                json!({"m":{"a":1,"b":2,"c":3}}),
                json!({"m":{"$retainKeys":["a","c"],"b":null,"c":4}})
            ),
            json!({"m":{"a":1,"c":4}})
        );
    }

    #[test]
    fn malformed_directives() {
        for (patch, want) in [
            (
                json!({"$deleteFromPrimitiveList":[1]}),
                "invalid patch format of primitive list",
            ),
            (
                json!({"$deleteFromPrimitiveListX/mergingIntList":[1]}),
                "invalid patch format of primitive list",
            ),
            (
                json!({"$setElementOrderX/mergingIntList":[1]}),
                "invalid patch format of setElementOrder list",
            ),
            (
                json!({"$setElementOrder/mergingIntList":"x"}),
                "expected a []interface {}, but received a string",
            ),
            (
                json!({"$setElementOrder/mergingIntList":[1],"mergingIntList":null}),
                "expected a []interface {}, but received a %!s(<nil>)",
            ),
        ] {
            match smp_err(json!({"mergingIntList":[1]}), patch.clone()) {
                SmpError::BadRequest(m) => assert_eq!(m, want, "{patch}"),
                other => panic!("{patch}: {other:?}"),
            }
        }
        assert!(matches!(
            smp_err(
                json!({"mergingList":[{"name":"a"},{"name":"b"}]}),
                json!({"$setElementOrder/mergingList":[{"name":"a"},{"name":"b"}],"mergingList":[{"name":"b"},{"name":"a"}]})
            ),
            SmpError::BadRequest(m) if m.starts_with("The order in patch list:")
        ));
    }

    #[test]
    fn list_shape_errors() {
        assert!(matches!(
            smp_err(json!({"mergingIntList":[[1]]}), json!({"mergingIntList":[[2]]})),
            SmpError::Unprocessable(_)
        ));
        assert!(matches!(
            smp_err(json!({"mergingIntList":[1]}), json!({"mergingIntList":["a"]})),
            SmpError::BadRequest(m) if m == "list element types are not identical: [[1] [a]]"
        ));
        assert!(matches!(
            smp_err(json!({"mergingIntList":[]}), json!({"mergingIntList":[{"a":1}]})),
            SmpError::BadRequest(m) if m == "cannot merge lists without merge key for mergingIntList"
        ));
        assert!(matches!(
            smp_err(json!({"mergingList":[]}), json!({"mergingList":[{"v":1}]})),
            SmpError::BadRequest(m) if m == "map: map[v:1] does not contain declared merge key: name"
        ));
        let status = SmpError::Unprocessable("lists of lists are not supported".into()).into_status();
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    }

    #[test]
    fn patch_must_be_an_object() {
        assert!(matches!(
            smp_err(json!({}), json!([1])),
            SmpError::BadRequest(m) if m == "json: cannot unmarshal array into Go value of type map[string]interface {}"
        ));
        assert_eq!(smp(json!({"a":1}), Value::Null), json!({"a":1}));
    }

    #[test]
    fn non_merging_lists_and_type_changes_replace() {
        assert_eq!(
            smp(
                json!({"nonMergingList":[1,2],"s":"x","o":{"a":1}}),
                json!({"nonMergingList":[3],"s":{"b":null,"c":1},"o":"y"})
            ),
            json!({"nonMergingList":[3],"s":{"c":1},"o":"y"})
        );
        // An unknown list is atomic.
        assert_eq!(
            smp(json!({"other":[1,2]}), json!({"other":[2]})),
            json!({"other":[2]})
        );
    }

    #[test]
    fn null_deletes_and_deletion_list_null_deletes_the_field() {
        assert_eq!(
            smp(
                json!({"a":1,"mergingIntList":[1]}),
                json!({"a":null,"$deleteFromPrimitiveList/mergingIntList":null})
            ),
            json!({})
        );
    }
}
