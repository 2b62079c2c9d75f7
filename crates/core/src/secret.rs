//! Secrets that never print.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A secret value (password, token, key). `Debug` and `Display` print `***`, and it
/// serializes as `***`, so a secret cannot reach a log, an error or the state store by
/// accident. Use [`Secret::expose`] at the one place that needs the clear text.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a clear-text value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The clear text. Call it only where the value is sent to its destination.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the secret in `text` with `***`: as written, and
    /// percent- or form-encoded (the way it appears inside a URL).
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_owned();
        }
        let mut out = text.replace(&self.0, "***");
        for form in [
            crate::redact::percent_encode(&self.0),
            crate::redact::form_encode(&self.0),
        ] {
            if form != self.0 {
                out = out.replace(&form, "***");
            }
        }
        out
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_clear_text() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s.redact("token=hunter2&x=1"), "token=***&x=1");
        let at = Secret::new("hunter2@EXTRA x");
        assert_eq!(
            at.redact("a=hunter2%40EXTRA%20x b=hunter2%40EXTRA+x c=hunter2@EXTRA x"),
            "a=*** b=*** c=***"
        );
    }
}
