//! When to refresh a token and how long to wait after a failure, as pure functions
//! (`requiresRefresh` in pkg/kubelet/token/token_manager.go; the shape of linkerd's
//! `certify.rs` `refresh_in`), so the schedule is tested without clocks.

use std::time::{Duration, SystemTime};

/// The earliest a refresh is scheduled after issue, so a tiny fraction cannot spin.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

/// The upper bound of the jitter the kubelet subtracts (uniform in [0, 10 s)).
pub const MAX_JITTER: Duration = Duration::from_secs(10);

/// When a token issued at `issued` and reported to expire at `expires` (the TokenRequest's
/// `status.expirationTimestamp`, not the JWT's `exp`, which is a year out for extended
/// tokens) must be replaced: once `fraction` of its lifetime has passed or it is `max`
/// old, whichever is sooner, minus `jitter` so a node's pods do not refresh together.
/// Never earlier than `MIN_REFRESH` after issue; `now` when that moment has passed.
pub fn refresh_at(
    issued: SystemTime,
    expires: SystemTime,
    now: SystemTime,
    fraction: f64,
    max: Duration,
    jitter: Duration,
) -> SystemTime {
    let lifetime = expires.duration_since(issued).unwrap_or_default();
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let wait = lifetime.mul_f64(fraction).min(max);
    // The jitter is at most a tenth of the wait: for short test lifetimes the kubelet's
    // ten seconds would be the whole lifetime.
    let jitter = jitter.min(MAX_JITTER).min(wait / 10);
    let wait = wait.saturating_sub(jitter).max(MIN_REFRESH);
    (issued + wait).max(now)
}

/// The delay before retry number `failures` (1 = first failure): 1 s doubling, capped.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(cap)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;
    const DAY: Duration = Duration::from_secs(86_400);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn refreshes_at_the_fraction_of_the_lifetime() {
        let at = refresh_at(T0, T0 + secs(3600), T0, 0.8, DAY, Duration::ZERO);
        assert_eq!(at, T0 + secs(2880));
    }

    #[test]
    fn admission_tokens_refresh_by_expiration_timestamp_not_the_year_long_exp() {
        // 3607 s reported: the kubelet refreshes about every 48 minutes.
        let at = refresh_at(T0, T0 + secs(3607), T0, 0.8, DAY, Duration::ZERO);
        assert_eq!(at.duration_since(T0).unwrap().as_secs(), 2885);
    }

    #[test]
    fn long_tokens_refresh_within_max() {
        let at = refresh_at(T0, T0 + DAY * 365, T0, 0.8, DAY, Duration::ZERO);
        assert_eq!(at, T0 + DAY);
    }

    #[test]
    fn jitter_makes_it_earlier_but_bounded() {
        let at = refresh_at(T0, T0 + secs(3600), T0, 0.8, DAY, secs(7));
        assert_eq!(at, T0 + secs(2873));
        // More than ten seconds is capped to ten.
        let at = refresh_at(T0, T0 + secs(3600), T0, 0.8, DAY, secs(60));
        assert_eq!(at, T0 + secs(2870));
        // And to a tenth of the wait for short lifetimes.
        let at = refresh_at(T0, T0 + secs(100), T0, 0.5, DAY, secs(9));
        assert_eq!(at, T0 + secs(45));
    }

    #[test]
    fn never_before_now_and_never_immediately_after_issue() {
        let now = T0 + secs(5000);
        assert_eq!(
            refresh_at(T0, T0 + secs(3600), now, 0.8, DAY, Duration::ZERO),
            now
        );
        assert_eq!(
            refresh_at(T0, T0 + secs(3600), T0, 0.0, DAY, Duration::ZERO),
            T0 + MIN_REFRESH
        );
        // Already expired (or a clock step backwards): at least MIN_REFRESH after issue.
        assert_eq!(refresh_at(T0, T0, T0, 0.8, DAY, Duration::ZERO), T0 + MIN_REFRESH);
        assert_eq!(
            refresh_at(T0, T0 + secs(3600), T0, f64::NAN, DAY, Duration::ZERO),
            T0 + secs(3600)
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let cap = secs(60);
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n, cap).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX, cap), cap);
    }
}
