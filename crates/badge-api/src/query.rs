//! Query strings, decoded once and the same way for routing, authorization and the handler:
//! `+` is a space, escapes are percent-decoded, and the first value of a repeated key wins,
//! as Go's `url.Values.Get` does.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;

/// The decoded parameters of a query string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryParams(BTreeMap<String, String>);

impl QueryParams {
    /// Decodes `query` (the raw text after `?`, if any).
    pub fn parse(query: Option<&str>) -> QueryParams {
        let mut map = BTreeMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            map.entry(decode(key)).or_insert_with(|| decode(value));
        }
        QueryParams(map)
    }

    /// The value of `key`, if the query has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether `watch` asks for a watch. Go's `strconv.ParseBool` decides, and a value it
    /// cannot parse counts as true unless it reads `false` or `0`, as upstream's request info
    /// falls back.
    pub fn watch(&self) -> bool {
        match self.get("watch") {
            None | Some("") => false,
            Some("1" | "t" | "T" | "TRUE" | "true" | "True") => true,
            Some("0" | "f" | "F" | "FALSE" | "false" | "False") => false,
            Some(other) => !matches!(other.to_ascii_lowercase().as_str(), "false" | "0"),
        }
    }
}

fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_plus_and_first_value() {
        let q = QueryParams::parse(Some("fieldSelector=metadata.name%3Dmine&a=x+y&a=z&flag"));
        assert_eq!(q.get("fieldSelector"), Some("metadata.name=mine"));
        assert_eq!(q.get("a"), Some("x y"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("missing"), None);
    }

    #[test]
    fn broken_escapes_never_panic() {
        for text in ["%", "%a", "%aé", "a=%zz", "%é=1", "k=%ff%fe"] {
            let _ = QueryParams::parse(Some(text));
        }
        assert_eq!(QueryParams::parse(Some("k=%aé")).get("k"), Some("%aé"));
    }

    #[test]
    fn watch_as_upstream() {
        for (text, want) in [
            ("watch=true", true),
            ("watch=1", true),
            ("watch=T", true),
            ("watch=yes", true),
            ("watch=false", false),
            ("watch=0", false),
            ("watch=FALSE", false),
            ("watch=", false),
            ("", false),
            ("watch=false&watch=true", false),
        ] {
            assert_eq!(QueryParams::parse(Some(text)).watch(), want, "{text}");
        }
    }
}
