//! Where each setting came from ([`Sources`]) and how a `librdkafka:` entry is named: shared by
//! the file loader, the environment and the validation, below all three.

use std::collections::BTreeMap;

use crate::config_error::{ConfigError, Source};

/// Where each setting that is not a default came from, by path (`kafka.retry.max_attempts`,
/// `kafka.librdkafka["fetch.error.backoff.ms"]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources(pub BTreeMap<String, Source>);

impl Sources {
    /// Where the setting at `path` came from ([`Source::Default`] when it was not set).
    pub fn of(&self, path: &str) -> Source {
        self.0.get(path).cloned().unwrap_or(Source::Default)
    }

    /// Records that the setting at `path` came from `source`.
    pub(crate) fn set(&mut self, path: impl Into<String>, source: Source) {
        self.0.insert(path.into(), source);
    }

    /// Adds to `error` where its value came from, when it is known.
    pub(crate) fn annotate(&self, error: &mut ConfigError) {
        if error.source.is_none() {
            error.source = self.0.get(&error.path).cloned();
        }
    }
}

/// The path of a `librdkafka:` entry.
pub(crate) fn property_path(key: &str) -> String {
    format!("kafka.librdkafka[\"{key}\"]")
}
