//! The wall clock. Everything else takes the time as a value, so it can be tested at any
//! instant; `clippy.toml` refuses clock reads outside the clock modules.

/// The current time.
#[allow(clippy::disallowed_methods, reason = "the clock module reads the clock")]
pub fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}
