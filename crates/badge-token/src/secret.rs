//! Secret material that is not a token: Secret data bytes, a bearer credential borrowed from a
//! request. `Debug` is redacted and there is no `Display`, so a log line or an error built
//! with `{:?}` cannot print it; reading it is an explicit [`Secret::expose`].

use std::fmt;

/// A value that must never be printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value` so that it cannot be printed.
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The value, for the one place that must compare or send it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let bytes = Secret::new(b"hunter2".to_vec());
        let text = Secret::new("eyJhbGciOi.payload.sig");
        let shown = format!("{bytes:?} {text:?} {:?}", Some(&bytes));
        assert!(
            !shown.contains("hunter2") && !shown.contains("payload"),
            "{shown}"
        );
        assert_eq!(bytes.expose(), b"hunter2");
    }
}
