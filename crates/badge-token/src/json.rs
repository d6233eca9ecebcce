//! A strict JSON reader for token headers and payloads (verification steps 3 and 7):
//! duplicate member names are refused rather than last-wins, nesting is bounded, and trailing
//! data is an error. Built on serde_json's parser, so strings are checked UTF-8 and lone
//! surrogates are refused there.
//!
//! The same reader serves request bodies (field validation), which report a repeated member
//! by its path instead of refusing it: [`parse_recording_duplicates`].

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a JSON document was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON, trailing data, or a number out of range.
    Syntax,
    /// Valid JSON, but not an object at the top.
    NotObject,
    /// A member name occurs twice in one object.
    Duplicate,
    /// Arrays/objects nested deeper than allowed.
    TooDeep,
}

/// Parses `bytes` as one JSON object with nesting at most `max_depth` (the top object is 1),
/// refusing any object that repeats a member name: two parsers that keep different
/// duplicates would disagree on what a signed document says.
pub fn parse_object(bytes: &[u8], max_depth: usize) -> Result<Map<String, Value>, JsonError> {
    let why = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Seed::top(max_depth, &why, None)
        .deserialize(&mut de)
        .map_err(|_| why.get().unwrap_or(JsonError::Syntax))?;
    de.end().map_err(|_| JsonError::Syntax)?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(JsonError::NotObject),
    }
}

/// Parses `bytes` as one JSON value with nesting at most `max_depth`, keeping the last of
/// repeated members and returning the path of each (`metadata.labels`, `items[0].name`), so
/// the caller can report them (upstream's strict decoding names them).
pub fn parse_recording_duplicates(
    bytes: &[u8],
    max_depth: usize,
) -> Result<(Value, Vec<String>), serde_json::Error> {
    let why = Cell::new(None);
    let duplicates = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Seed::top(max_depth, &why, Some(&duplicates)).deserialize(&mut de)?;
    de.end()?;
    Ok((value, duplicates.into_inner()))
}

#[derive(Clone)]
struct Seed<'a> {
    depth: usize,
    max_depth: usize,
    why: &'a Cell<Option<JsonError>>,
    /// Where repeated members are recorded; None refuses them.
    duplicates: Option<&'a RefCell<Vec<String>>>,
    /// The value's path, kept only while recording.
    path: String,
}

impl<'a> Seed<'a> {
    fn top(
        max_depth: usize,
        why: &'a Cell<Option<JsonError>>,
        duplicates: Option<&'a RefCell<Vec<String>>>,
    ) -> Self {
        Self {
            depth: 0,
            max_depth,
            why,
            duplicates,
            path: String::new(),
        }
    }

    fn nested<E: de::Error>(&self) -> Result<Self, E> {
        if self.depth >= self.max_depth {
            self.why.set(Some(JsonError::TooDeep));
            return Err(E::custom("nesting too deep"));
        }
        Ok(Self {
            depth: self.depth + 1,
            path: String::new(),
            ..*self
        })
    }

    /// The seed for a member or element at `path` (built only while recording).
    fn at(&self, path: impl FnOnce(&str) -> String) -> Self {
        Self {
            path: if self.duplicates.is_some() {
                path(&self.path)
            } else {
                String::new()
            },
            ..*self
        }
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        loop {
            let index = items.len();
            let seed = inner.at(|_| format!("{}[{index}]", self.path));
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => break,
            }
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let seed = inner.at(|_| {
                if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                }
            });
            let repeated = out.contains_key(&key);
            let Some(duplicates) = self.duplicates else {
                if repeated {
                    self.why.set(Some(JsonError::Duplicate));
                    return Err(de::Error::custom("duplicate member"));
                }
                let value = map.next_value_seed(seed)?;
                out.insert(key, value);
                continue;
            };
            let path = seed.path.clone();
            let value = map.next_value_seed(seed)?;
            if repeated {
                duplicates.borrow_mut().push(path);
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_objects() {
        let m = parse_object(br#"{"a":1,"b":[true,null,"x",-2,1.5],"c":{"d":{}}}"#, 8).unwrap();
        assert_eq!(
            Value::Object(m),
            serde_json::json!({"a":1,"b":[true,null,"x",-2,1.5],"c":{"d":{}}})
        );
    }

    #[test]
    fn refuses_duplicates_at_any_level() {
        assert_eq!(parse_object(br#"{"a":1,"a":2}"#, 8), Err(JsonError::Duplicate));
        assert_eq!(
            parse_object(br#"{"x":{"a":1,"a":1}}"#, 8),
            Err(JsonError::Duplicate)
        );
        assert_eq!(
            parse_object(br#"{"x":[{"a":1,"a":1}]}"#, 8),
            Err(JsonError::Duplicate)
        );
        // Escapes name the same member.
        assert_eq!(
            parse_object(br#"{"sub":1,"\u0073ub":2}"#, 8),
            Err(JsonError::Duplicate)
        );
        // Names are case-sensitive: these are two members.
        assert!(parse_object(br#"{"sub":1,"Sub":2}"#, 8).is_ok());
    }

    #[test]
    fn bounds_depth_cheaply() {
        assert!(parse_object(br#"{"a":{"b":1}}"#, 2).is_ok());
        assert_eq!(parse_object(br#"{"a":{"b":{}}}"#, 2), Err(JsonError::TooDeep));
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_object(deep.as_bytes(), 32), Err(JsonError::TooDeep));
    }

    #[test]
    fn recording_keeps_the_last_member_and_names_each_repeat() {
        let (value, duplicates) =
            parse_recording_duplicates(br#"{"a":1,"b":{"c":1,"c":2},"l":[{"x":1,"x":2}],"a":3}"#, 8).unwrap();
        assert_eq!(value, serde_json::json!({"a":3,"b":{"c":2},"l":[{"x":2}]}));
        assert_eq!(duplicates, vec!["b.c", "l[0].x", "a"]);
        // Any JSON value, not only objects; depth and syntax are still refused.
        assert_eq!(
            parse_recording_duplicates(b"[1]", 8).unwrap().0,
            serde_json::json!([1])
        );
        assert!(parse_recording_duplicates(br#"{"a":[[1]]}"#, 2).is_err());
        assert!(parse_recording_duplicates(b"{} {}", 8).is_err());
    }

    #[test]
    fn refuses_non_objects_and_junk() {
        assert_eq!(parse_object(b"[]", 8), Err(JsonError::NotObject));
        assert_eq!(parse_object(b"\"x\"", 8), Err(JsonError::NotObject));
        assert_eq!(parse_object(b"{} {}", 8), Err(JsonError::Syntax));
        assert_eq!(parse_object(b"{", 8), Err(JsonError::Syntax));
        assert_eq!(parse_object(b"", 8), Err(JsonError::Syntax));
        assert_eq!(parse_object(br#"{"a":1e400}"#, 8), Err(JsonError::Syntax));
        assert_eq!(parse_object(br#"{"a":"\ud800"}"#, 8), Err(JsonError::Syntax));
        assert_eq!(parse_object(b"{\"a\":\"\xff\"}", 8), Err(JsonError::Syntax));
        assert_eq!(parse_object(br#"{"a":NaN}"#, 8), Err(JsonError::Syntax));
    }
}
