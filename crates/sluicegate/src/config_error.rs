//! Problems with settings ([`ConfigError`], [`ConfigErrors`]) and where a setting's value came
//! from ([`Source`]): below [`Error`](crate::Error), which carries them, and the configuration,
//! which finds them. Re-exported from [`config`](crate::config).

use std::fmt;

/// One problem with one setting: its path (like `kafka.retry.max_attempts`), the value given
/// (secrets redacted), what is wrong and what is allowed, and where the value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting, as a path from the file's root.
    pub path: String,
    /// The value given, as written (empty where there is none); secrets are redacted.
    pub value: String,
    /// What is wrong, and what is allowed.
    pub reason: String,
    /// Where the value came from, when known.
    pub source: Option<Source>,
}

impl ConfigError {
    pub(crate) fn new(
        path: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError {
            path: path.into(),
            value: value.into(),
            reason: reason.into(),
            source: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if !self.value.is_empty() {
            write!(f, " = `{}`", self.value)?;
        }
        match &self.source {
            Some(Source::File { line, column }) => write!(f, " (line {line}, column {column})")?,
            // A variable's own problem (an unknown variable) is already named by its path.
            Some(Source::Env(var)) if *var != self.path => write!(f, " (from {var})")?,
            _ => {}
        }
        write!(f, ": {}", self.reason)
    }
}

/// Every problem found in a configuration, one per line when displayed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// The errors about the setting at `path`.
    pub fn at<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a ConfigError> + 'a {
        self.0.iter().filter(move |e| e.path == path)
    }
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Not set: the default.
    Default,
    /// The configuration file, at this line and column (1-based).
    File {
        /// The line.
        line: u64,
        /// The column.
        column: u64,
    },
    /// This environment variable.
    Env(String),
    /// An override by path (see [`ConsumerConfig::resolve_for`](crate::config::ConsumerConfig::resolve_for)), as it was given: the
    /// `sluicegate` CLI's `--set KEY=VALUE`.
    Override(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File { line, column } => write!(f, "file, line {line}, column {column}"),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Override(key) => write!(f, "override {key}"),
        }
    }
}
