//! JSON patch (RFC 6902), applied the way the apiserver applies it (evanphx/json-patch v4
//! under `endpoints/handlers/patch.go`).
//!
//! Semantics are RFC 6902's, with two leniencies upstream has and clients may lean on:
//! negative array indices count from the end, and `replace` of a missing object member
//! adds it. Status codes are upstream's: a document that is not a list of operations is
//! 400, more than [`MAX_JSON_PATCH_OPERATIONS`] operations is 413, and any operation that
//! fails to apply (including an unknown `op`) is 422 with upstream's fixed message.

use std::io;

use serde_json::Value;

use crate::status::Status;

/// The most operations one JSON patch may hold (upstream's `maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The most bytes `copy` operations may add to a document in one patch (upstream's
/// `JSONPatchMaxCopyBytes`): `copy` is the only operation whose growth the request body
/// does not already bound (CVE-2019-1002100).
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;

/// Why a JSON patch failed, before it becomes a `Status`.
#[derive(Debug, PartialEq)]
pub(crate) enum JsonPatchError {
    /// The document is not a list of operations (400).
    Malformed(String),
    /// More than [`MAX_JSON_PATCH_OPERATIONS`] operations (413).
    TooManyOperations(usize),
    /// An operation did not apply (422); the text is evanphx's, kept for logs and tests.
    Apply(String),
}

impl JsonPatchError {
    pub(crate) fn into_status(self) -> Status {
        match self {
            JsonPatchError::Malformed(message) => Status::bad_request(message),
            JsonPatchError::TooManyOperations(count) => {
                let mut status = Status::request_entity_too_large(MAX_JSON_PATCH_OPERATIONS);
                status.message = format!(
                    "Request entity too large: The allowed maximum operations in a JSON patch is \
                     {MAX_JSON_PATCH_OPERATIONS}, got {count}"
                );
                status
            }
            // Upstream wraps the library error in NewGenericServerResponse(422), which keeps
            // only a fixed message; the detail is not sent.
            JsonPatchError::Apply(_) => super::unprocessable(),
        }
    }
}

/// Applies the RFC 6902 patch `ops` (a JSON array of operations) to `target`.
pub fn json_patch(target: &Value, ops: &Value) -> Result<Value, Status> {
    apply(target, ops).map_err(JsonPatchError::into_status)
}

/// [`json_patch`] with the failure kept apart from its `Status`.
pub(crate) fn apply(target: &Value, ops: &Value) -> Result<Value, JsonPatchError> {
    let ops = decode(ops)?;
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(JsonPatchError::TooManyOperations(ops.len()));
    }
    let mut doc = target.clone();
    let mut copied = 0usize;
    for op in &ops {
        apply_one(&mut doc, op, &mut copied)?;
    }
    Ok(doc)
}

/// One decoded operation; absent and `null` members are both `None`, as in Go.
#[derive(Debug, Default)]
struct Operation<'a> {
    op: Option<&'a str>,
    path: Option<&'a str>,
    from: Option<&'a str>,
    value: Option<&'a Value>,
}

/// Go's name for a JSON value's type in `json: cannot unmarshal` errors.
pub(crate) fn go_json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn decode(ops: &Value) -> Result<Vec<Operation<'_>>, JsonPatchError> {
    let items = match ops {
        // Go decodes `null` into an empty patch.
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => {
            return Err(JsonPatchError::Malformed(format!(
                "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
                go_json_type(other)
            )));
        }
    };
    items.iter().map(decode_one).collect()
}

fn decode_one(item: &Value) -> Result<Operation<'_>, JsonPatchError> {
    let map = match item {
        // A `null` operation decodes to an empty one, which fails as an unknown kind.
        Value::Null => return Ok(Operation::default()),
        Value::Object(map) => map,
        other => {
            return Err(JsonPatchError::Malformed(format!(
                "json: cannot unmarshal {} into Go value of type jsonpatch.Operation",
                go_json_type(other)
            )));
        }
    };
    // The apiserver decodes operations into a typed struct first (fieldValidation defaults
    // to Warn), so a member of the wrong type is a 400 there, not a failed operation.
    let string_member = |name: &str| -> Result<Option<&str>, JsonPatchError> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(JsonPatchError::Malformed(format!(
                "error decoding patch: json: cannot unmarshal {} into Go struct field \
                 jsonPatchOp.{name} of type string",
                go_json_type(other)
            ))),
        }
    };
    Ok(Operation {
        op: string_member("op")?,
        path: string_member("path")?,
        from: string_member("from")?,
        value: map.get("value"),
    })
}

fn apply_one(doc: &mut Value, op: &Operation<'_>, copied: &mut usize) -> Result<(), JsonPatchError> {
    match op.op {
        Some("add") => {
            let path = required_path(op, "add")?;
            let value = required_value(op, "add")?;
            add(doc, path, value.clone()).map_err(|e| e.describe("add", path))
        }
        Some("remove") => {
            let path = required_path(op, "remove")?;
            remove(doc, path)
                .map(drop)
                .map_err(|e| e.describe("remove", path))
        }
        Some("replace") => {
            let path = required_path(op, "replace")?;
            let value = required_value(op, "replace")?;
            replace(doc, path, value.clone()).map_err(|e| e.describe("replace", path))
        }
        Some("move") => {
            let from = required_from(op, "move")?;
            let path = required_path(op, "move")?;
            let (from_tokens, path_tokens) = (pointer(from), pointer(path));
            if let (Some(f), Some(p)) = (&from_tokens, &path_tokens)
                && p.len() > f.len()
                && p.starts_with(f)
            {
                // RFC 6902 §4.4: a value cannot move into itself.
                return Err(JsonPatchError::Apply(format!(
                    "move operation does not apply: from path {from} is a prefix of path {path}"
                )));
            }
            let value = remove(doc, from).map_err(|e| e.describe("move", from))?;
            add(doc, path, value).map_err(|e| e.describe("move", path))
        }
        Some("copy") => {
            let from = required_from(op, "copy")?;
            let path = required_path(op, "copy")?;
            let source = get(doc, from).map_err(|e| e.describe("copy", from))?;
            // Measured before cloning, and only as far as the remaining budget.
            let budget = MAX_JSON_PATCH_COPY_BYTES.saturating_sub(*copied);
            *copied = copied.saturating_add(serialized_len(source, budget));
            if *copied > MAX_JSON_PATCH_COPY_BYTES {
                return Err(JsonPatchError::Apply(format!(
                    "Unable to complete the copy, the accumulated size increase of copy is {copied}, \
                     exceeding the limit {MAX_JSON_PATCH_COPY_BYTES}"
                )));
            }
            let value = source.clone();
            add(doc, path, value).map_err(|e| e.describe("copy", path))
        }
        Some("test") => {
            let path = required_path(op, "test")?;
            let failed = || JsonPatchError::Apply(format!("testing value {path} failed: test failed"));
            let expected = op.value.ok_or_else(failed)?;
            let actual = get(doc, path).map_err(|e| e.describe("test", path))?;
            if json_equal(actual, expected) {
                Ok(())
            } else {
                Err(failed())
            }
        }
        other => Err(JsonPatchError::Apply(format!(
            "Unexpected kind: {}",
            other.unwrap_or("unknown")
        ))),
    }
}

fn required_path<'a>(op: &Operation<'a>, kind: &str) -> Result<&'a str, JsonPatchError> {
    op.path.ok_or_else(|| {
        JsonPatchError::Apply(format!(
            "{kind} operation failed to decode path: operation missing path field"
        ))
    })
}

fn required_from<'a>(op: &Operation<'a>, kind: &str) -> Result<&'a str, JsonPatchError> {
    op.from.ok_or_else(|| {
        JsonPatchError::Apply(format!(
            "{kind} operation failed to decode from: operation, missing from field"
        ))
    })
}

fn required_value<'a>(op: &Operation<'a>, kind: &str) -> Result<&'a Value, JsonPatchError> {
    op.value
        .ok_or_else(|| JsonPatchError::Apply(format!("{kind} operation: operation, missing value field")))
}

/// Why a pointer did not resolve; worded into evanphx's messages by [`Self::describe`].
#[derive(Debug)]
enum PointerError {
    /// The pointer is malformed, or its parent does not exist.
    MissingPath,
    /// The parent exists but the last token names nothing in it.
    MissingKey(String),
    /// An array index that is not a number.
    BadIndex(String),
    /// An array index out of range.
    OutOfRange(i64),
    /// `replace` at the root with a value that is not an object or array.
    NotContainer,
}

impl PointerError {
    fn describe(self, kind: &str, path: &str) -> JsonPatchError {
        JsonPatchError::Apply(match self {
            PointerError::MissingPath => {
                format!("{kind} operation does not apply: doc is missing path: \"{path}\": missing value")
            }
            PointerError::MissingKey(key) if kind == "remove" || kind == "move" => format!(
                "error in {kind} for path: '{path}': Unable to remove nonexistent key: {key}: missing value"
            ),
            PointerError::MissingKey(_) => {
                format!("{kind} operation does not apply: doc is missing key: {path}: missing value")
            }
            PointerError::BadIndex(token) => {
                format!("error in {kind} for path: '{path}': value was not a proper array index: '{token}'")
            }
            PointerError::OutOfRange(index) => format!(
                "error in {kind} for path: '{path}': Unable to access invalid index: {index}: \
                 invalid index referenced"
            ),
            PointerError::NotContainer => {
                format!("{kind} operation value must be object or array")
            }
        })
    }
}

/// Splits an RFC 6901 pointer into unescaped tokens; `None` if it is malformed.
fn pointer(path: &str) -> Option<Vec<String>> {
    if path.is_empty() {
        return Some(Vec::new());
    }
    let rest = path.strip_prefix('/')?;
    // `~1` first, then `~0`, so `~01` becomes `~1` and not `/` (RFC 6901 §4).
    Some(
        rest.split('/')
            .map(|token| token.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// An array index as Go's `strconv.Atoi` reads it (sign and leading zeros allowed).
fn parse_index(token: &str) -> Result<i64, PointerError> {
    token
        .parse::<i64>()
        .map_err(|_| PointerError::BadIndex(token.to_string()))
}

/// The position of an existing element; negative indices count from the end.
fn existing_index(token: &str, len: usize) -> Result<usize, PointerError> {
    let index = parse_index(token)?;
    let len_i = i64::try_from(len).unwrap_or(i64::MAX);
    let resolved = if index < 0 { index + len_i } else { index };
    if resolved < 0 || resolved >= len_i {
        return Err(PointerError::OutOfRange(index));
    }
    usize::try_from(resolved).map_err(|_| PointerError::OutOfRange(index))
}

/// The container the pointer's last token lives in, and that token.
fn parent_mut<'d>(doc: &'d mut Value, path: &str) -> Result<(&'d mut Value, String), PointerError> {
    let mut tokens = pointer(path).ok_or(PointerError::MissingPath)?;
    let last = tokens.pop().ok_or(PointerError::MissingPath)?;
    let mut current = doc;
    for token in &tokens {
        current = match current {
            Value::Object(map) => map.get_mut(token).ok_or(PointerError::MissingPath)?,
            Value::Array(items) => {
                let index = existing_index(token, items.len()).map_err(|_| PointerError::MissingPath)?;
                items.get_mut(index).ok_or(PointerError::MissingPath)?
            }
            _ => return Err(PointerError::MissingPath),
        };
    }
    Ok((current, last))
}

fn get<'d>(doc: &'d Value, path: &str) -> Result<&'d Value, PointerError> {
    let tokens = pointer(path).ok_or(PointerError::MissingPath)?;
    let mut current = doc;
    for (i, token) in tokens.iter().enumerate() {
        let last = i + 1 == tokens.len();
        current = match current {
            Value::Object(map) => match map.get(token) {
                Some(v) => v,
                None if last => return Err(PointerError::MissingKey(token.clone())),
                None => return Err(PointerError::MissingPath),
            },
            Value::Array(items) => {
                let index = existing_index(token, items.len());
                match index {
                    Ok(index) => items.get(index).ok_or(PointerError::OutOfRange(0))?,
                    Err(e) if last => return Err(e),
                    Err(_) => return Err(PointerError::MissingPath),
                }
            }
            _ => return Err(PointerError::MissingPath),
        };
    }
    Ok(current)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PointerError> {
    if path.is_empty() {
        // RFC 6902 §4.1: adding at the root replaces the whole document.
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_mut(doc, path)?;
    match parent {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) => {
            if last == "-" {
                items.push(value);
                return Ok(());
            }
            let index = parse_index(&last)?;
            // One past the end is allowed; negatives count from the new length.
            let new_len = i64::try_from(items.len()).unwrap_or(i64::MAX) + 1;
            let resolved = if index < 0 { index + new_len } else { index };
            if resolved < 0 || resolved >= new_len {
                return Err(PointerError::OutOfRange(index));
            }
            let at = usize::try_from(resolved).map_err(|_| PointerError::OutOfRange(index))?;
            items.insert(at, value);
            Ok(())
        }
        _ => Err(PointerError::MissingPath),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PointerError> {
    let (parent, last) = parent_mut(doc, path)?;
    match parent {
        Value::Object(map) => map.remove(&last).ok_or(PointerError::MissingKey(last)),
        Value::Array(items) => {
            let index = existing_index(&last, items.len())?;
            Ok(items.remove(index))
        }
        _ => Err(PointerError::MissingPath),
    }
}

fn replace(doc: &mut Value, path: &str, value: Value) -> Result<(), PointerError> {
    if path.is_empty() {
        if !(value.is_object() || value.is_array()) {
            return Err(PointerError::NotContainer);
        }
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_mut(doc, path)?;
    match parent {
        // Upstream sets a missing member instead of failing; kept for compatibility.
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) => {
            let index = existing_index(&last, items.len())?;
            if let Some(slot) = items.get_mut(index) {
                *slot = value;
            }
            Ok(())
        }
        _ => Err(PointerError::MissingPath),
    }
}

/// RFC 6902 §4.6 equality: numbers compare by value, objects ignore member order.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                // One signed and one unsigned integer that fit no common type differ.
                false
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Counts serialized bytes, giving up once past a limit so a huge value costs no more
/// than the limit to measure.
struct ByteCounter {
    count: usize,
    limit: usize,
}

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.count = self.count.saturating_add(buf.len());
        if self.count > self.limit {
            return Err(io::Error::other("size limit exceeded"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The compact JSON size of `value`, or something above `limit` if it is larger.
fn serialized_len(value: &Value, limit: usize) -> usize {
    let mut counter = ByteCounter { count: 0, limit };
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.count,
        Err(_) => counter.count.max(limit.saturating_add(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(target: Value, ops: Value) -> Value {
        match apply(&target, &ops) {
            Ok(v) => v,
            Err(e) => panic!("patch {ops} failed: {e:?}"),
        }
    }

    fn apply_err(target: Value, ops: Value) -> String {
        match apply(&target, &ops) {
            Err(JsonPatchError::Apply(message)) => message,
            other => panic!("patch {ops}: expected an apply error, got {other:?}"),
        }
    }

    // RFC 6902 Appendix A, every example (A.13 needs the raw bytes; see patch.rs tests).
    #[test]
    fn rfc6902_a1_add_object_member() {
        assert_eq!(
            ok(
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux"}])
            ),
            json!({"baz":"qux","foo":"bar"})
        );
    }

    #[test]
    fn rfc6902_a2_add_array_element() {
        assert_eq!(
            ok(
                json!({"foo":["bar","baz"]}),
                json!([{"op":"add","path":"/foo/1","value":"qux"}])
            ),
            json!({"foo":["bar","qux","baz"]})
        );
    }

    #[test]
    fn rfc6902_a3_remove_object_member() {
        assert_eq!(
            ok(
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"remove","path":"/baz"}])
            ),
            json!({"foo":"bar"})
        );
    }

    #[test]
    fn rfc6902_a4_remove_array_element() {
        assert_eq!(
            ok(
                json!({"foo":["bar","qux","baz"]}),
                json!([{"op":"remove","path":"/foo/1"}])
            ),
            json!({"foo":["bar","baz"]})
        );
    }

    #[test]
    fn rfc6902_a5_replace_value() {
        assert_eq!(
            ok(
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"replace","path":"/baz","value":"boo"}])
            ),
            json!({"baz":"boo","foo":"bar"})
        );
    }

    #[test]
    fn rfc6902_a6_move_value() {
        assert_eq!(
            ok(
                json!({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}),
                json!([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}])
            ),
            json!({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}})
        );
    }

    #[test]
    fn rfc6902_a7_move_array_element() {
        assert_eq!(
            ok(
                json!({"foo":["all","grass","cows","eat"]}),
                json!([{"op":"move","from":"/foo/1","path":"/foo/3"}])
            ),
            json!({"foo":["all","cows","eat","grass"]})
        );
    }

    #[test]
    fn rfc6902_a8_test_success() {
        let doc = json!({"baz":"qux","foo":["a",2,"c"]});
        assert_eq!(
            ok(
                doc.clone(),
                json!([
                    {"op":"test","path":"/baz","value":"qux"},
                    {"op":"test","path":"/foo/1","value":2}
                ])
            ),
            doc
        );
    }

    #[test]
    fn rfc6902_a9_test_error() {
        let message = apply_err(
            json!({"baz":"qux"}),
            json!([{"op":"test","path":"/baz","value":"bar"}]),
        );
        assert_eq!(message, "testing value /baz failed: test failed");
    }

    #[test]
    fn rfc6902_a10_add_nested_member_object() {
        assert_eq!(
            ok(
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/child","value":{"grandchild":{}}}])
            ),
            json!({"foo":"bar","child":{"grandchild":{}}})
        );
    }

    #[test]
    fn rfc6902_a11_ignore_unrecognized_elements() {
        assert_eq!(
            ok(
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux","xyz":123}])
            ),
            json!({"foo":"bar","baz":"qux"})
        );
    }

    #[test]
    fn rfc6902_a12_add_to_nonexistent_target() {
        let message = apply_err(
            json!({"foo":"bar"}),
            json!([{"op":"add","path":"/baz/bat","value":"qux"}]),
        );
        assert!(message.contains("doc is missing path"), "{message}");
    }

    #[test]
    fn rfc6902_a14_escape_ordering() {
        let doc = json!({"/":9,"~1":10});
        assert_eq!(
            ok(doc.clone(), json!([{"op":"test","path":"/~01","value":10}])),
            doc
        );
    }

    #[test]
    fn rfc6902_a15_strings_and_numbers_differ() {
        apply_err(
            json!({"/":9,"~1":10}),
            json!([{"op":"test","path":"/~01","value":"10"}]),
        );
    }

    #[test]
    fn rfc6902_a16_add_array_value() {
        assert_eq!(
            ok(
                json!({"foo":["bar"]}),
                json!([{"op":"add","path":"/foo/-","value":["abc","def"]}])
            ),
            json!({"foo":["bar",["abc","def"]]})
        );
    }

    #[test]
    fn pointer_escapes_and_array_end() {
        assert_eq!(
            ok(
                json!({"a/b":{"c~d":[1]}}),
                json!([
                    {"op":"add","path":"/a~1b/c~0d/-","value":2},
                    {"op":"copy","from":"/a~1b/c~0d/0","path":"/a~1b/first"}
                ])
            ),
            json!({"a/b":{"c~d":[1,2],"first":1}})
        );
    }

    #[test]
    fn negative_indices_count_from_the_end() {
        assert_eq!(
            ok(
                json!({"l":[1,2,3]}),
                json!([
                    {"op":"remove","path":"/l/-1"},
                    {"op":"add","path":"/l/-1","value":9},
                    {"op":"replace","path":"/l/-3","value":0}
                ])
            ),
            json!({"l":[0,2,9]})
        );
    }

    #[test]
    fn replace_of_missing_member_adds_it_like_upstream() {
        assert_eq!(
            ok(
                json!({"metadata":{}}),
                json!([{"op":"replace","path":"/metadata/labels","value":{"a":"b"}}])
            ),
            json!({"metadata":{"labels":{"a":"b"}}})
        );
    }

    #[test]
    fn failures_of_each_operation() {
        let doc = json!({"a":{"b":[1,2]},"s":"x"});
        let cases = [
            json!([{"op":"remove","path":"/nope"}]),
            json!([{"op":"remove","path":"/a/b/2"}]),
            json!([{"op":"remove","path":"/a/b/-"}]),
            json!([{"op":"replace","path":"/a/b/5","value":1}]),
            json!([{"op":"add","path":"/a/b/3","value":1}]),
            json!([{"op":"add","path":"/a/b/x","value":1}]),
            json!([{"op":"add","path":"/s/x","value":1}]),
            json!([{"op":"add","path":"a","value":1}]),
            json!([{"op":"add","path":"/x"}]),
            json!([{"op":"add","value":1}]),
            json!([{"op":"move","from":"/nope","path":"/x"}]),
            json!([{"op":"move","from":"/a","path":"/a/c"}]),
            json!([{"op":"copy","from":"/nope","path":"/x"}]),
            json!([{"op":"copy","path":"/x"}]),
            json!([{"op":"test","path":"/nope","value":null}]),
            json!([{"op":"test","path":"/a"}]),
            json!([{"op":"remove","path":""}]),
            json!([{"op":"frobnicate","path":"/a"}]),
            json!([{"path":"/a"}]),
            json!([null]),
        ];
        for ops in cases {
            apply_err(doc.clone(), ops);
        }
        assert_eq!(apply_err(doc, json!([{"op":"bogus"}])), "Unexpected kind: bogus");
    }

    #[test]
    fn operations_apply_in_order_and_stop_at_the_first_failure() {
        let doc = json!({"a":1});
        let ops = json!([{"op":"add","path":"/b","value":2},{"op":"test","path":"/a","value":2}]);
        apply_err(doc.clone(), ops);
        assert_eq!(
            ok(
                doc,
                json!([{"op":"move","from":"/a","path":"/b"},{"op":"test","path":"/b","value":1.0}])
            ),
            json!({"b":1})
        );
    }

    #[test]
    fn root_operations() {
        assert_eq!(
            ok(
                json!({"a":1}),
                json!([{"op":"replace","path":"","value":{"b":2}}])
            ),
            json!({"b":2})
        );
        assert_eq!(
            ok(json!({"a":1}), json!([{"op":"test","path":"","value":{"a":1}}])),
            json!({"a":1})
        );
        apply_err(json!({"a":1}), json!([{"op":"replace","path":"","value":3}]));
    }

    #[test]
    fn malformed_documents_are_bad_requests() {
        for ops in [
            json!({"op":"add"}),
            json!("add"),
            json!([1]),
            json!([{"op":5,"path":"/a"}]),
            json!([{"op":"add","path":["a"],"value":1}]),
        ] {
            let status = match json_patch(&json!({}), &ops) {
                Err(s) => s,
                Ok(v) => panic!("{ops} applied: {v}"),
            };
            assert_eq!(
                (status.code, status.reason.as_str()),
                (400, "BadRequest"),
                "{ops}"
            );
        }
        // `null` is an empty patch to Go's decoder.
        assert_eq!(
            json_patch(&json!({"a":1}), &Value::Null).ok(),
            Some(json!({"a":1}))
        );
    }

    #[test]
    fn failed_operations_are_upstreams_generic_422() {
        let status = match json_patch(&json!({"a":1}), &json!([{"op":"test","path":"/a","value":2}])) {
            Err(s) => s,
            Ok(v) => panic!("applied: {v}"),
        };
        assert_eq!(status.code, 422);
        assert_eq!(status.reason, "Invalid");
        assert_eq!(
            status.message,
            "the server rejected our request due to an error in our request"
        );
        let json = serde_json::to_value(&status).unwrap_or_default();
        assert_eq!(json["details"], json!({}));
    }

    #[test]
    fn too_many_operations_is_413() {
        let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
            .map(|_| json!({"op":"test","path":"/a","value":1}))
            .collect();
        let status = match json_patch(&json!({"a":1}), &Value::Array(ops)) {
            Err(s) => s,
            Ok(v) => panic!("applied: {v}"),
        };
        assert_eq!(status.code, 413);
        assert_eq!(status.reason, "RequestEntityTooLarge");
        assert_eq!(
            status.message,
            "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
        let at_limit: Vec<Value> = (0..MAX_JSON_PATCH_OPERATIONS)
            .map(|_| json!({"op":"test","path":"/a","value":1}))
            .collect();
        assert!(json_patch(&json!({"a":1}), &Value::Array(at_limit)).is_ok());
    }

    #[test]
    fn copy_amplification_is_capped() {
        // Each copy doubles the document: 64 KiB grows past 3 MiB within a handful of ops.
        let doc = json!({"a": "x".repeat(64 * 1024)});
        let mut ops = vec![json!({"op":"copy","from":"/a","path":"/b"})];
        for i in 0..40 {
            ops.push(json!({"op":"copy","from":"","path":format!("/c{i}")}));
        }
        let message = apply_err(doc.clone(), Value::Array(ops));
        assert!(message.starts_with("Unable to complete the copy"), "{message}");
        // Below the cap copies work.
        let small = ok(doc, json!([{"op":"copy","from":"/a","path":"/b"}]));
        assert_eq!(small["a"], small["b"]);
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_equal(&json!(1), &json!(1.0)));
        assert!(json_equal(&json!({"a":[1,{"b":2}]}), &json!({"a":[1.0,{"b":2}]})));
        assert!(!json_equal(&json!(1), &json!("1")));
        assert!(!json_equal(&json!({"a":1}), &json!({"a":1,"b":2})));
    }
}
