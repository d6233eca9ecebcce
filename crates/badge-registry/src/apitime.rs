//! Timestamps in the API's format (RFC 3339, UTC, whole seconds) written without a
//! formatter: every object created and every IssuedToken record carries a few, and
//! `strftime` costs several times the arithmetic.

/// `at` as [`badge_api::meta::format_time`] writes it.
pub fn format_time(at: jiff::Timestamp) -> String {
    let seconds = at.as_second();
    // 1970-01-01 to 9999-12-31: four-digit years; anything else as the formatter writes it.
    if !(0..=253_402_300_799).contains(&seconds) || (seconds == 0 && at.subsec_nanosecond() < 0) {
        return badge_api::meta::format_time(at);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
                assert_eq!(
                    format_time(at),
                    badge_api::meta::format_time(at),
                    "{second}.{nanos}"
                );
            }
        }
        let half_before_epoch = jiff::Timestamp::new(0, -500_000_000).unwrap();
        assert_eq!(
            format_time(half_before_epoch),
            badge_api::meta::format_time(half_before_epoch)
        );
    }
}
