//! The wall clock, read here only (`clippy.toml` refuses clock reads elsewhere), so the rest
//! of the agent takes the time as a value.

use std::time::SystemTime;

/// The current time.
#[allow(clippy::disallowed_methods, reason = "the clock module reads the clock")]
pub(crate) fn now() -> SystemTime {
    SystemTime::now()
}

/// The current time as a timestamp.
#[allow(clippy::disallowed_methods, reason = "the clock module reads the clock")]
pub(crate) fn timestamp() -> jiff::Timestamp {
    jiff::Timestamp::now()
}
