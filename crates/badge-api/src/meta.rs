//! Reading and writing `metadata` on objects held as JSON.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

fn meta(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

/// `metadata`, created if absent or not an object.
pub fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let Value::Object(obj) = object else {
        unreachable!("made an object above")
    };
    // Looked up before it is inserted: an entry would allocate its key at every call.
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj.insert("metadata".into(), Value::Object(Map::new()));
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("made an object above"),
    }
}

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    meta(object)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.name`, "" when absent.
pub fn name(object: &Value) -> &str {
    meta_str(object, "name")
}

/// `metadata.generateName`, "" when absent.
pub fn generate_name(object: &Value) -> &str {
    meta_str(object, "generateName")
}

/// `metadata.namespace`, "" when absent.
pub fn namespace(object: &Value) -> &str {
    meta_str(object, "namespace")
}

/// `metadata.uid`, "" when absent.
pub fn uid(object: &Value) -> &str {
    meta_str(object, "uid")
}

/// `metadata.resourceVersion`, "" when absent.
pub fn resource_version(object: &Value) -> &str {
    meta_str(object, "resourceVersion")
}

/// `metadata.creationTimestamp`, "" when absent.
pub fn creation_timestamp(object: &Value) -> &str {
    meta_str(object, "creationTimestamp")
}

/// `metadata.deletionTimestamp`, when set.
pub fn deletion_timestamp(object: &Value) -> Option<&str> {
    meta(object)
        .and_then(|m| m.get("deletionTimestamp"))
        .and_then(Value::as_str)
}

/// A string map under metadata (`labels`, `annotations`).
pub fn string_map(object: &Value, field: &str) -> BTreeMap<String, String> {
    meta(object)
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.labels` with string values.
pub fn labels(object: &Value) -> BTreeMap<String, String> {
    string_map(object, "labels")
}

/// The annotation `key`, when set.
pub fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    meta(object)
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// `metadata.finalizers`.
pub fn finalizers(object: &Value) -> Vec<String> {
    meta(object)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Sets `metadata.<field>`, creating `metadata` when absent.
pub fn set(object: &mut Value, field: &str, value: impl Into<Value>) {
    meta_mut(object).insert(field.into(), value.into());
}

/// Removes `metadata.<field>`.
pub fn remove(object: &mut Value, field: &str) {
    meta_mut(object).remove(field);
}

/// Sets one annotation, creating the map.
pub fn set_annotation(object: &mut Value, key: &str, value: &str) {
    let meta = meta_mut(object);
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(a) = annotations {
        a.insert(key.into(), Value::String(value.into()));
    } else {
        *annotations = serde_json::json!({ key: value });
    }
}

/// A timestamp in the API's format: RFC 3339, UTC, whole seconds. Written without a
/// formatter: every object created carries one and every IssuedToken record a few, and
/// `strftime` costs several times the arithmetic.
pub fn format_time(at: jiff::Timestamp) -> String {
    let seconds = at.as_second();
    // 1970-01-01 to 9999-12-31: four-digit years; anything else as the formatter writes it.
    if !(0..=253_402_300_799).contains(&seconds) || (seconds == 0 && at.subsec_nanosecond() < 0) {
        return formatted(at);
    }
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = String::with_capacity(20);
    for (n, after) in [
        (year / 100, None),
        (year % 100, Some('-')),
        (month, Some('-')),
        (day, Some('T')),
        (of_day / 3600, Some(':')),
        (of_day / 60 % 60, Some(':')),
        (of_day % 60, Some('Z')),
    ] {
        text.push(digit(n / 10));
        text.push(digit(n % 10));
        text.extend(after);
    }
    text
}

/// The decimal digit of `n` (0 to 9).
fn digit(n: i64) -> char {
    char::from_digit(u32::try_from(n).unwrap_or(0), 10).unwrap_or('0')
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), for days that are not negative.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// [`format_time`] through jiff's formatter: for years outside 1970–9999.
fn formatted(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses an API timestamp.
pub fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

/// Human age like kubectl's `AGE` column (`45s`, `5m`, `3h`, `2d`), as
/// `duration.HumanDuration` formats it.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let minutes = s / 60;
    if minutes < 10 {
        let rem = s % 60;
        return if rem == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{rem}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = s / 3600;
    if hours < 8 {
        let rem = minutes % 60;
        return if rem == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{rem}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let rem = hours % 24;
        return if rem == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{rem}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if years < 8 {
        let rem = days % 365;
        return if rem == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{rem}d")
        };
    }
    format!("{years}y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_the_formatter_writes_them() {
        let mut seconds: Vec<i64> = vec![
            0,
            1,
            59,
            86_399,
            86_400,
            951_782_400, // 2000-02-29
            951_868_800,
            4_107_542_400, // 2100-03-01
            4_107_456_000,
            1_796_454_000,
            1_796_457_600,
            253_402_300_799, // 9999-12-31T23:59:59
            253_402_300_800,
            -1,
            -86_401,
        ];
        // And a spread of others, each a different time of day.
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            seconds.push((state % 253_402_300_800) as i64);
        }
        for second in seconds {
            for nanos in [0, 1, 999_999_999] {
                let Ok(at) = jiff::Timestamp::new(second, if second < 0 { -nanos } else { nanos }) else {
                    continue;
                };
                assert_eq!(format_time(at), formatted(at), "{second}.{nanos}");
            }
        }
        let half_before_epoch = jiff::Timestamp::new(0, -500_000_000).unwrap();
        assert_eq!(format_time(half_before_epoch), formatted(half_before_epoch));
    }

    /// `meta_mut` as first written, through the map's entry.
    fn meta_mut_by_entry(object: &mut Value) -> &mut Map<String, Value> {
        if !object.is_object() {
            *object = Value::Object(Map::new());
        }
        let Value::Object(obj) = object else {
            unreachable!("made an object above")
        };
        let entry = obj.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        match entry {
            Value::Object(m) => m,
            _ => unreachable!("made an object above"),
        }
    }

    #[test]
    fn metadata_is_made_as_the_entry_made_it() {
        let objects = [
            serde_json::json!({"metadata": {"name": "a"}, "spec": {}}),
            serde_json::json!({"metadata": {}}),
            serde_json::json!({"metadata": "text", "kind": "K"}),
            serde_json::json!({"metadata": null}),
            serde_json::json!({"kind": "K"}),
            serde_json::json!([1]),
            Value::Null,
        ];
        for object in objects {
            let (mut fast, mut general) = (object.clone(), object.clone());
            meta_mut(&mut fast).insert("uid".into(), "u".into());
            meta_mut_by_entry(&mut general).insert("uid".into(), "u".into());
            assert_eq!(fast, general, "{object}");
        }
    }

    #[test]
    fn reads_and_writes() {
        let mut o = serde_json::json!({"metadata":{"name":"a","labels":{"x":"y"}}});
        assert_eq!(name(&o), "a");
        assert_eq!(labels(&o).get("x").map(String::as_str), Some("y"));
        set(&mut o, "resourceVersion", "5");
        assert_eq!(resource_version(&o), "5");
        set_annotation(&mut o, "k", "v");
        assert_eq!(annotation(&o, "k"), Some("v"));
        let mut bare = serde_json::json!({});
        set(&mut bare, "uid", "u");
        assert_eq!(uid(&bare), "u");
    }

    #[test]
    fn ages() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 5), "3h");
        assert_eq!(human_duration(50 * 3600), "2d2h");
    }

    #[test]
    fn times() {
        let t = jiff::Timestamp::from_second(1_700_000_000).unwrap_or_default();
        assert_eq!(format_time(t), "2023-11-14T22:13:20Z");
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(t));
    }
}
