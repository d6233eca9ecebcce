//! Failed console logins, counted per client address: a few may fail in a row, then one
//! more attempt is allowed per refill period, so guessing credentials through the console
//! is slow while other addresses log in as usual.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failed logins an address may make before it is throttled.
pub const LOGIN_BURST: u32 = 5;
/// How long it takes an address to earn one more attempt.
pub const LOGIN_REFILL: Duration = Duration::from_secs(12);
/// More addresses than this and the ones with a clean record are forgotten first, bounding
/// memory.
const MAX_ADDRESSES: usize = 10_000;

/// The address of the client a console request came from; set by the console's server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl ClientAddress {
    /// The request's client address; requests that carry none share one record.
    pub fn of(extensions: &http::Extensions) -> IpAddr {
        extensions
            .get::<ClientAddress>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0)
    }
}

#[derive(Debug)]
struct Allowance {
    /// Attempts left, refilled over time up to the burst.
    attempts: f64,
    updated: Instant,
}

/// Failed login attempts by client address.
#[derive(Debug)]
pub struct LoginThrottle {
    allowances: Mutex<HashMap<IpAddr, Allowance>>,
    burst: u32,
    refill: Duration,
}

impl Default for LoginThrottle {
    fn default() -> LoginThrottle {
        LoginThrottle::new(LOGIN_BURST, LOGIN_REFILL)
    }
}

impl LoginThrottle {
    /// A throttle allowing `burst` failed logins per address, one more every `refill`.
    pub fn new(burst: u32, refill: Duration) -> LoginThrottle {
        LoginThrottle {
            allowances: Mutex::new(HashMap::new()),
            burst: burst.max(1),
            refill: refill.max(Duration::from_millis(1)),
        }
    }

    /// Whether `client` may try to log in at `now`; when not, how long until it may.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut allowances = self.allowances.lock();
        let Some(allowance) = allowances.get_mut(&client) else {
            return Ok(());
        };
        self.refilled(allowance, now);
        if allowance.attempts >= 1.0 {
            return Ok(());
        }
        Err(self.refill.mul_f64(1.0 - allowance.attempts))
    }

    /// Records a failed login of `client` at `now`.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        let mut allowances = self.allowances.lock();
        if !allowances.contains_key(&client) && allowances.len() >= MAX_ADDRESSES {
            self.make_room(&mut allowances, now);
        }
        let burst = f64::from(self.burst);
        let allowance = allowances.entry(client).or_insert(Allowance {
            attempts: burst,
            updated: now,
        });
        self.refilled(allowance, now);
        allowance.attempts = (allowance.attempts - 1.0).max(0.0);
    }

    fn refilled(&self, allowance: &mut Allowance, now: Instant) {
        let earned =
            now.saturating_duration_since(allowance.updated).as_secs_f64() / self.refill.as_secs_f64();
        allowance.attempts = (allowance.attempts + earned).min(f64::from(self.burst));
        allowance.updated = now;
    }

    /// Forgets addresses whose allowance has refilled; failing that, the one seen longest ago.
    fn make_room(&self, allowances: &mut HashMap<IpAddr, Allowance>, now: Instant) {
        let burst = f64::from(self.burst);
        let refill = self.refill.as_secs_f64();
        allowances.retain(|_, a| {
            a.attempts + now.saturating_duration_since(a.updated).as_secs_f64() / refill < burst
        });
        if allowances.len() >= MAX_ADDRESSES
            && let Some(oldest) = allowances
                .iter()
                .min_by_key(|(_, a)| a.updated)
                .map(|(ip, _)| *ip)
        {
            allowances.remove(&oldest);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn an_address_is_throttled_after_the_burst_and_earns_attempts_back_over_time() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(throttle.check(ip(1), start).is_ok());
            throttle.failed(ip(1), start);
        }
        assert_eq!(throttle.check(ip(1), start), Err(Duration::from_secs(10)));
        assert_eq!(
            throttle.check(ip(1), start + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
        assert!(throttle.check(ip(1), start + Duration::from_secs(10)).is_ok());
        throttle.failed(ip(1), start + Duration::from_secs(10));
        assert!(throttle.check(ip(1), start + Duration::from_secs(10)).is_err());
        // Another address is not affected.
        assert!(throttle.check(ip(2), start).is_ok());
    }

    #[test]
    fn the_allowance_never_grows_past_the_burst() {
        let throttle = LoginThrottle::new(2, Duration::from_secs(1));
        let start = Instant::now();
        throttle.failed(ip(1), start);
        let later = start + Duration::from_secs(3600);
        throttle.failed(ip(1), later);
        throttle.failed(ip(1), later);
        assert!(throttle.check(ip(1), later).is_err());
    }

    #[test]
    fn the_record_is_bounded() {
        let throttle = LoginThrottle::new(1, Duration::from_secs(3600));
        let start = Instant::now();
        for i in 0..=MAX_ADDRESSES as u32 {
            throttle.failed(
                IpAddr::V4(Ipv4Addr::from(i)),
                start + Duration::from_millis(u64::from(i)),
            );
        }
        assert_eq!(throttle.allowances.lock().len(), MAX_ADDRESSES);
        // The address seen longest ago made room.
        assert!(throttle.check(IpAddr::V4(Ipv4Addr::from(0)), start).is_ok());
    }
}
