//! [`Properties`]: librdkafka properties by name, as Sluicegate hands them to its Kafka adapter
//! and to clients of your own (see
//! [`ConsumerConfig::client_config`](crate::config::ConsumerConfig::client_config)). Secret
//! values never show in `Debug` or serialized output.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::secret::{is_secret_key, REDACTED};

/// librdkafka properties by name, in name order: the `librdkafka:` map of a configuration
/// (values may be written as YAML strings, numbers or booleans) and the settings of a client
/// ([`ConsumerConfig::client_config`](crate::config::ConsumerConfig::client_config)). The
/// values are kept as they are, secrets included, for the client that needs them; entries
/// whose names mark a secret (a password, a SASL or OAuth secret, a private key) print and
/// serialize as `[redacted]`.
///
/// ```
/// use sluicegate::settings::Properties;
///
/// let mut props = Properties::new();
/// props.set("sasl.username", "billing").set("sasl.password", "s3cret");
/// assert_eq!(props.get("sasl.password"), Some("s3cret"));
/// assert!(!format!("{props:?}").contains("s3cret"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties(pub BTreeMap<String, String>);

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Properties::default()
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Sets `key` to `value` (replacing any earlier value).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Unsets `key`.
    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.0.remove(key);
        self
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Every property, in name order, with **secrets exposed**.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of properties set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Properties(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<String>> Extend<(K, V)> for Properties {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        self.0
            .extend(iter.into_iter().map(|(k, v)| (k.into(), v.into())));
    }
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, shown(k, v))))
            .finish()
    }
}

impl Serialize for Properties {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, shown(k, v))))
    }
}

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Bool(bool),
            Int(i64),
            UInt(u64),
            Float(f64),
            Str(String),
        }
        let map = BTreeMap::<String, Scalar>::deserialize(d)?;
        Ok(Properties(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Scalar::Bool(b) => b.to_string(),
                        Scalar::Int(i) => i.to_string(),
                        Scalar::UInt(u) => u.to_string(),
                        Scalar::Float(f) => f.to_string(),
                        Scalar::Str(s) => s,
                    };
                    (k, v)
                })
                .collect(),
        ))
    }
}

/// `value`, or [`REDACTED`] when `key` names a secret.
pub(crate) fn shown<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret_key(key) {
        REDACTED
    } else {
        value
    }
}
