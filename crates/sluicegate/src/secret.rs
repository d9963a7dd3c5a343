//! Secret values: which librdkafka properties hold one, and [`Secret`], which never shows its
//! value. Re-exported from [`config`](crate::config).

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// What is shown instead of a secret value.
pub const REDACTED: &str = "[redacted]";

/// Key fragments that mark a librdkafka property as secret: passwords, SASL secrets, OAuth
/// bearer settings (client secrets, tokens) and TLS private keys.
const SECRET_KEY_PARTS: &[&str] = &["password", "secret", "sasl.oauthbearer"];

/// Whether the librdkafka property `key` holds a secret (its value must never be shown).
///
/// ```
/// use sluicegate::config::is_secret_key;
/// assert!(is_secret_key("sasl.password"));
/// assert!(is_secret_key("sasl.oauthbearer.client.secret"));
/// assert!(!is_secret_key("sasl.username"));
/// assert!(is_secret_key("ssl.key.pem") && !is_secret_key("ssl.key.location"));
/// ```
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    // A `*.pem` setting is a key or certificate itself; `*.location` only a path.
    SECRET_KEY_PARTS.iter().any(|part| key.contains(part)) || key.ends_with(".pem")
}

/// A secret setting (a password). Its `Debug`, `Display` and `Serialize` show [`REDACTED`];
/// [`expose`](Self::expose) gives the value to whoever must use it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself: hand it to the client that needs it, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}
