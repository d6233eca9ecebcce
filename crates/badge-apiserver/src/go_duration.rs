//! Go's duration syntax, as `time.ParseDuration` reads it (upstream src/time/format.go): the
//! syntax of kube-apiserver's duration flags and of a request's `?timeout=`. A possibly signed
//! sequence of decimal numbers, each with an optional fraction and a unit (`ns`, `us`, `µs`,
//! `μs`, `ms`, `s`, `m`, `h`): `300ms`, `-1.5h`, `2h45m`. No crate reads exactly this syntax
//! (fractions of any unit, Go's rounding and overflow bounds, Go's error text), so it is here.

use std::time::Duration;

/// Go's durations are signed 64-bit nanoseconds; this is one past the largest positive one
/// and the magnitude of the most negative one.
const LIMIT: u64 = 1 << 63;

/// Parses a Go duration; a negative one is zero. The error reads as Go's.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let nanos = parse_go_duration_nanos(text)?;
    Ok(u64::try_from(nanos).map_or(Duration::ZERO, Duration::from_nanos))
}

/// Parses a Go duration into signed nanoseconds, exactly as `time.ParseDuration` does.
pub(crate) fn parse_go_duration_nanos(text: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(text));
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        if !rest.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let (whole, after) = split_digits(rest);
        let whole_value = leading_int(whole).ok_or_else(invalid)?;
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => split_digits(after),
            None => ("", after),
        };
        // `5.s` and `.5s` are numbers, a lone `.` is not.
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per_unit: u64 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {}", go_quote(text))),
            other => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(other),
                    go_quote(text)
                ));
            }
        };
        if whole_value > LIMIT / nanos_per_unit {
            return Err(invalid());
        }
        let mut part = whole_value * nanos_per_unit;
        let (fraction_value, scale) = leading_fraction(fraction);
        if fraction_value > 0 {
            // In floating point, as Go does, so long fractions round as they do there.
            let fraction_nanos = fraction_value as f64 * (nanos_per_unit as f64 / scale);
            part = part.saturating_add(fraction_nanos as u64);
            if part > LIMIT {
                return Err(invalid());
            }
        }
        total = total
            .checked_add(part)
            .filter(|&t| t <= LIMIT)
            .ok_or_else(invalid)?;
        rest = after;
    }
    if negative {
        return Ok(i64::try_from(total).map_or(i64::MIN, |t| -t));
    }
    i64::try_from(total).map_err(|_| invalid())
}

/// The leading run of ASCII digits, and the rest.
fn split_digits(text: &str) -> (&str, &str) {
    text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()))
}

/// The value of a run of digits; `None` past Go's bound.
fn leading_int(digits: &str) -> Option<u64> {
    let mut value: u64 = 0;
    for digit in digits.bytes() {
        if value > LIMIT / 10 {
            return None;
        }
        value = value * 10 + u64::from(digit - b'0');
        if value > LIMIT {
            return None;
        }
    }
    Some(value)
}

/// The digits after the point as an integer and the power of ten it is scaled by; digits past
/// what 63 bits hold are dropped, as they cannot change the result.
fn leading_fraction(digits: &str) -> (u64, f64) {
    let mut value: u64 = 0;
    let mut scale = 1.0;
    for digit in digits.bytes() {
        if value > (LIMIT - 1) / 10 {
            break;
        }
        let next = value * 10 + u64::from(digit - b'0');
        if next > LIMIT {
            break;
        }
        value = next;
        scale *= 10.0;
    }
    (value, scale)
}

/// Quotes as Go's time package does in its errors: bytes that are not printable ASCII are
/// written as `\x` escapes.
fn go_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for byte in text.bytes() {
        match byte {
            b'"' | b'\\' => {
                quoted.push('\\');
                quoted.push(char::from(byte));
            }
            0x20..0x80 => quoted.push(char::from(byte)),
            _ => quoted.push_str(&format!("\\x{byte:02x}")),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: i64 = 1;
    const US: i64 = 1_000 * NS;
    const MS: i64 = 1_000 * US;
    const S: i64 = 1_000 * MS;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    /// Go's own table of valid durations (upstream src/time/time_test.go,
    /// `parseDurationTests`).
    #[test]
    fn parses_what_go_parses() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("10ns", 10 * NS),
            ("11us", 11 * US),
            ("12µs", 12 * US),
            ("12μs", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * S),
            ("15m", 15 * M),
            ("16h", 16 * H),
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
            ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            ("52763797000ns", 52_763_797_000 * NS),
            ("0.3333333333333333333h", 20 * M),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("0.100000000000000000000h", 6 * M),
            ("0.830103483285477580700h", 49 * M + 48 * S + 372_539_827 * NS),
            // The forms the flags are documented with.
            ("500ms", 500 * MS),
            ("1h30m", H + 30 * M),
            ("2.5h", 2 * H + 30 * M),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_go_duration_nanos(text), Ok(want), "{text}");
        }
    }

    /// Go's table of invalid durations (upstream `parseDurationErrorTests`), each error
    /// quoting the input as Go does; Go's invalid UTF-8 inputs cannot be a `&str`.
    #[test]
    fn refuses_what_go_refuses() {
        let cases: &[(&str, &str)] = &[
            ("", r#""""#),
            ("3", r#""3""#),
            ("-", r#""-""#),
            ("s", r#""s""#),
            (".", r#"".""#),
            ("-.", r#""-.""#),
            (".s", r#"".s""#),
            ("+.s", r#""+.s""#),
            ("1d", r#""1d""#),
            ("\u{FFFD}", r#""\xef\xbf\xbd""#),
            (
                "\u{FFFD} hello \u{FFFD} world",
                r#""\xef\xbf\xbd hello \xef\xbf\xbd world""#,
            ),
            ("9223372036854775810ns", r#""9223372036854775810ns""#),
            ("9223372036854775808ns", r#""9223372036854775808ns""#),
            ("-9223372036854775809ns", r#""-9223372036854775809ns""#),
            ("9223372036854776us", r#""9223372036854776us""#),
            ("3000000h", r#""3000000h""#),
            ("9223372036854775.808us", r#""9223372036854775.808us""#),
            ("9223372036854ms775us808ns", r#""9223372036854ms775us808ns""#),
        ];
        for &(text, quoted) in cases {
            let error = parse_go_duration_nanos(text).expect_err(text);
            assert!(error.contains(quoted), "{text}: {error}");
        }
    }

    #[test]
    fn errors_read_as_go_s() {
        assert_eq!(
            parse_go_duration("bogus").unwrap_err(),
            r#"time: invalid duration "bogus""#
        );
        assert_eq!(
            parse_go_duration("10").unwrap_err(),
            r#"time: missing unit in duration "10""#
        );
        assert_eq!(
            parse_go_duration("3x").unwrap_err(),
            r#"time: unknown unit "x" in duration "3x""#
        );
        assert_eq!(
            parse_go_duration("1µx").unwrap_err(),
            r#"time: unknown unit "\xc2\xb5x" in duration "1\xc2\xb5x""#
        );
    }

    #[test]
    fn durations_as_std_durations_negative_ones_zero() {
        assert_eq!(parse_go_duration("-5s"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("2h45m"), Ok(Duration::from_secs(9900)));
        assert_eq!(parse_go_duration("1µs"), Ok(Duration::from_micros(1)));
        assert!(parse_go_duration("9999999999h").is_err());
    }
}
