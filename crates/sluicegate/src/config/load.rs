//! Loading: the YAML file (every unknown key and every badly typed value reported, each with
//! its line and column), then the environment, then validation.

use std::fmt;
use std::path::Path;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use super::source::{property_path, Sources};
use super::ConsumerConfig;
use crate::config_error::{ConfigError, ConfigErrors, Source};

/// What a configuration is loaded for, which decides the settings it must have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Purpose {
    /// A consumer: the bootstrap servers, the group and the topics are required.
    #[default]
    Consumer,
    /// Other clients, made with [`ConsumerConfig::client_config`] (admin clients, producers,
    /// tools that read a group's offsets): only the bootstrap servers are required.
    Clients,
}

/// Free-form maps: their keys are not checked against the schema.
const FREE_MAPS: &[&str] = &["kafka.librdkafka"];

/// A parsed YAML node with the place it was written.
struct Node {
    value: Raw,
    line: u64,
    column: u64,
    /// Where the node's text is, in bytes.
    bytes: Option<(usize, usize)>,
    /// A plain scalar's text, as written (`y` for what YAML 1.1 reads as `true`).
    text: Option<String>,
}

enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Spanned<String>, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Raw>::deserialize(d)?;
        let span = spanned.referenced.span();
        let bytes = span
            .byte_offset()
            .zip(span.byte_len())
            .map(|(o, l)| (o as usize, l as usize));
        Ok(Node {
            value: spanned.value,
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
            bytes,
            text: None,
        })
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                Raw::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                Ok(Raw::UInt(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Node>()? {
                    items.push(item);
                }
                Ok(Raw::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Node>()?;
                    entries.push((key, value));
                }
                Ok(Raw::Map(entries))
            }
        }
        d.deserialize_any(RawVisitor)
    }
}

impl Node {
    /// Records the text of each plain scalar that YAML read as a boolean or a number.
    fn keep_text(&mut self, yaml: &str) {
        match &mut self.value {
            Raw::Bool(_) | Raw::Int(_) | Raw::UInt(_) | Raw::Float(_) => {
                self.text = self
                    .bytes
                    .and_then(|(o, l)| yaml.get(o..o + l))
                    .map(str::to_string);
            }
            Raw::Seq(items) => items.iter_mut().for_each(|n| n.keep_text(yaml)),
            Raw::Map(entries) => entries.iter_mut().for_each(|(_, n)| n.keep_text(yaml)),
            _ => {}
        }
    }

    /// The node as JSON with every plain scalar as the string written: for string settings
    /// given values like `no`, `1.0` or `y`.
    fn to_json_text(&self) -> Value {
        match (&self.value, &self.text) {
            (Raw::Seq(items), _) => Value::Array(items.iter().map(Node::to_json_text).collect()),
            (_, Some(text)) => Value::String(text.clone()),
            _ => self.to_json(),
        }
    }

    /// The node as JSON (for serde's typing), with its locations dropped.
    fn to_json(&self) -> Value {
        match &self.value {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(*b),
            Raw::Int(i) => Value::from(*i),
            Raw::UInt(u) => Value::from(*u),
            Raw::Float(f) => Value::from(*f),
            Raw::Str(s) => Value::String(s.clone()),
            Raw::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Raw::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.value.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    fn source(&self) -> Source {
        Source::File {
            line: self.line,
            column: self.column,
        }
    }

    /// The value as it is shown in an error.
    fn shown(&self) -> String {
        match (&self.value, &self.text) {
            (Raw::Str(s), _) | (_, Some(s)) => s.clone(),
            _ => self.to_json().to_string(),
        }
    }
}

/// The schema: the default configuration as JSON, every key present.
fn schema() -> Value {
    serde_json::to_value(ConsumerConfig::default()).unwrap_or(Value::Null)
}

/// Parses `yaml` (a `kafka:` document) into a configuration. Every problem is reported, each
/// with its place; settings with a problem keep their defaults.
/// `None` when the YAML itself cannot be read.
pub(crate) fn parse(yaml: &str) -> (Option<ConsumerConfig>, Sources, Vec<ConfigError>) {
    let mut sources = Sources::default();
    let mut errors = Vec::new();
    let root: Node = match serde_saphyr::from_str::<Node>(yaml) {
        Ok(mut node) => {
            node.keep_text(yaml);
            node
        }
        Err(e) => {
            let source = e.location().map(|l| Source::File {
                line: l.line(),
                column: l.column(),
            });
            let message = e.without_snippet().to_string();
            // The place is shown by the error itself; keep serde-saphyr's words only.
            let message = match message.split_once(": ") {
                Some((place, rest)) if place.contains("line") => rest.to_string(),
                _ => message,
            };
            let message = message.lines().next().unwrap_or_default().to_string();
            let mut err = ConfigError::new("kafka", "", format!("not valid YAML: {message}"));
            err.source = source;
            errors.push(err);
            return (None, sources, errors);
        }
    };
    let kafka = match &root.value {
        Raw::Null => None,
        Raw::Map(entries) => {
            let mut kafka = None;
            for (key, value) in entries {
                if key.value == "kafka" {
                    kafka = Some(value);
                } else {
                    errors.push(unknown_key("", &key.value, &["kafka"], key));
                }
            }
            kafka
        }
        _ => {
            errors.push(at(
                ConfigError::new(
                    "kafka",
                    root.shown(),
                    "the file must be a mapping with a `kafka:` section",
                ),
                &root,
            ));
            None
        }
    };
    let mut accepted = Map::new();
    if let Some(kafka) = kafka {
        let schema = schema();
        walk(
            "kafka",
            kafka,
            &schema,
            &mut Vec::new(),
            &mut accepted,
            &mut sources,
            &mut errors,
        );
    }
    let config = match serde_json::from_value::<ConsumerConfig>(Value::Object(accepted)) {
        Ok(config) => config,
        Err(e) => {
            // Each value was accepted on its own; this is not expected.
            errors.push(ConfigError::new("kafka", "", e.to_string()));
            ConsumerConfig::default()
        }
    };
    (Some(config), sources, errors)
}

fn at(mut error: ConfigError, node: &Node) -> ConfigError {
    error.source = Some(node.source());
    error
}

fn unknown_key(parent: &str, key: &str, known: &[&str], span: &Spanned<String>) -> ConfigError {
    let path = if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    };
    let mut reason = format!("unknown key `{key}`");
    if let Some(best) = suggestion(key, known) {
        reason.push_str(&format!("; did you mean `{best}`?"));
    }
    reason.push_str(&format!("; allowed here: {}", known.join(", ")));
    let mut error = ConfigError::new(path, "", reason);
    error.source = Some(Source::File {
        line: span.referenced.line(),
        column: span.referenced.column(),
    });
    error
}

/// The known key closest to `key`, when it is close enough to be a likely typo.
pub(crate) fn suggestion<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let key = key.to_ascii_lowercase().replace('-', "_");
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(&key, k), *k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// Checks the mapping `node` at `path` against `schema`, adding each key it accepts to `out`
/// (at `trail` below the root).
fn walk(
    path: &str,
    node: &Node,
    schema: &Value,
    trail: &mut Vec<String>,
    out: &mut Map<String, Value>,
    sources: &mut Sources,
    errors: &mut Vec<ConfigError>,
) {
    let (Raw::Map(entries), Value::Object(fields)) = (&node.value, schema) else {
        leaf(path, node, trail, out, sources, errors);
        return;
    };
    let known: Vec<&str> = fields.keys().map(String::as_str).collect();
    for (key, value) in entries {
        let Some(sub) = fields.get(&key.value) else {
            errors.push(unknown_key(path, &key.value, &known, key));
            continue;
        };
        let sub_path = format!("{path}.{}", key.value);
        trail.push(key.value.clone());
        if sub.is_object() && matches!(value.value, Raw::Null) {
            // An empty section (`retry:` with nothing under it): the defaults.
        } else if FREE_MAPS.contains(&sub_path.as_str()) {
            properties(&sub_path, value, trail, out, sources, errors);
        } else if sub.is_object() {
            walk(&sub_path, value, sub, trail, out, sources, errors);
        } else {
            leaf(&sub_path, value, trail, out, sources, errors);
        }
        trail.pop();
    }
}

/// A `librdkafka:` map: every value must be a scalar.
fn properties(
    path: &str,
    node: &Node,
    trail: &mut [String],
    out: &mut Map<String, Value>,
    sources: &mut Sources,
    errors: &mut Vec<ConfigError>,
) {
    let Raw::Map(entries) = &node.value else {
        if !matches!(node.value, Raw::Null) {
            errors.push(at(
                ConfigError::new(
                    path,
                    node.shown(),
                    "must be a mapping of librdkafka property names to values",
                ),
                node,
            ));
        }
        return;
    };
    let mut accepted = Map::new();
    for (key, value) in entries {
        let entry_path = property_path(&key.value);
        match &value.value {
            Raw::Seq(_) | Raw::Map(_) | Raw::Null => errors.push(at(
                ConfigError::new(
                    entry_path,
                    value.shown(),
                    "must be a single value (a string, number or boolean)",
                ),
                value,
            )),
            _ => {
                sources.set(entry_path, value.source());
                accepted.insert(key.value.clone(), value.to_json_text());
            }
        }
    }
    insert(out, trail, Value::Object(accepted));
}

/// One typed setting: accepted when serde takes it on its own.
fn leaf(
    path: &str,
    node: &Node,
    trail: &[String],
    out: &mut Map<String, Value>,
    sources: &mut Sources,
    errors: &mut Vec<ConfigError>,
) {
    let accepts = |value: &Value| {
        let mut alone = Map::new();
        insert(&mut alone, trail, value.clone());
        serde_json::from_value::<ConsumerConfig>(Value::Object(alone))
    };
    let value = node.to_json();
    let result = match accepts(&value) {
        Err(e) => {
            let as_text = node.to_json_text();
            match accepts(&as_text) {
                Ok(_) => Ok(as_text),
                Err(_) => Err(e),
            }
        }
        Ok(_) => Ok(value),
    };
    match result {
        Ok(value) => {
            sources.set(path, node.source());
            insert(out, trail, value);
        }
        Err(e) => errors.push(at(
            ConfigError::new(path, node.shown(), type_reason(&e.to_string())),
            node,
        )),
    }
}

/// serde's message, in the words of the configuration.
fn type_reason(message: &str) -> String {
    message
        .replace("expected usize", "expected a whole number")
        .replace("expected u64", "expected a whole number")
        .replace("expected u32", "expected a whole number")
        .replace("expected f64", "expected a number")
        .replace(
            "invalid socket address syntax",
            "expected an address like 0.0.0.0:9464",
        )
}

/// Sets `value` at `trail` in `map`, creating the mappings on the way.
fn insert(map: &mut Map<String, Value>, trail: &[String], value: Value) {
    let Some((last, parents)) = trail.split_last() else {
        return;
    };
    let mut cur = map;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        cur = next;
    }
    cur.insert(last.clone(), value);
}

/// A configuration with where each of its settings came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The effective configuration.
    pub config: ConsumerConfig,
    /// Where each setting came from.
    pub sources: Sources,
    /// What was ignored or is probably not meant: unknown `KAFKA_*` and `SLUICEGATE_*`
    /// variables, and the [configuration's warnings](ConsumerConfig::warnings).
    pub warnings: Vec<ConfigError>,
}

/// Logs each of `warnings` (a loaded configuration's) as a warning.
fn log_warnings(warnings: &[ConfigError]) {
    for w in warnings {
        tracing::warn!("configuration: {w}");
    }
}

impl ConsumerConfig {
    /// Parses and validates a YAML document (see the [module documentation](super)); the
    /// environment is not read. Every problem is reported (see [`ConfigErrors`]).
    pub fn from_yaml_str(yaml: &str) -> Result<Self, ConfigErrors> {
        Self::load_str(yaml, std::iter::empty::<(String, String)>())
    }

    /// Reads, parses and validates a YAML file; the environment is not read.
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Self, ConfigErrors> {
        Self::load(path, std::iter::empty::<(String, String)>())
    }

    /// Parses a YAML document, overrides it with the `KAFKA_*` variables among `env` (see
    /// [`ENV_VARS`](super::ENV_VARS)), and validates the result. Warnings (unknown variables,
    /// settings probably not meant; see [`Loaded::warnings`]) are logged.
    pub fn load_str<K, V>(
        yaml: &str,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigErrors>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let loaded = Self::resolve(Some(yaml), env)?;
        log_warnings(&loaded.warnings);
        Ok(loaded.config)
    }

    /// Reads a YAML file, overrides it with the `KAFKA_*` variables among `env`, and
    /// validates the result; warnings are logged. [`load_from_env`](Self::load_from_env)
    /// takes the process's environment.
    pub fn load<K, V>(
        path: impl AsRef<Path>,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigErrors>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let yaml = read(path.as_ref())?;
        Self::load_str(&yaml, env)
    }

    /// [`load`](Self::load) with the process's environment: file < environment.
    pub fn load_from_env(path: impl AsRef<Path>) -> Result<Self, ConfigErrors> {
        Self::load(path, std::env::vars())
    }

    /// The configuration from `yaml` (none: defaults) overridden by the `KAFKA_*` variables
    /// among `env`, validated, with where each setting came from and the warnings (nothing is
    /// logged). Errors carry their place. librdkafka's own view is not asked: see
    /// [`check_client`](Self::check_client).
    pub fn resolve<K, V>(
        yaml: Option<&str>,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Loaded, ConfigErrors>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Self::resolve_for(Purpose::Consumer, yaml, env, &[])
    }

    /// [`resolve`](Self::resolve) for `purpose`, with `overrides` by setting path applied over
    /// the environment: **file < environment < overrides**. Each override is a path, with or
    /// without `kafka.` (`security.sasl_username`), and a value written as the setting's
    /// `KAFKA_*` variable takes it ([`ENV_VARS`](super::ENV_VARS): every setting there can be
    /// overridden; durations may also be written like `30s`). An unknown path or a refused
    /// value is an error naming it. This is how the `sluicegate` CLI loads `--config FILE`, the
    /// environment and `--set KEY=VALUE` for its commands ([`Purpose::Clients`]).
    ///
    /// ```
    /// use sluicegate::config::{ConsumerConfig, Purpose, Source};
    ///
    /// let yaml = "kafka:\n  bootstrap_servers: kafka:9092\n  \
    ///             security: { protocol: sasl_plaintext, sasl_mechanism: SCRAM-SHA-256 }\n";
    /// let env = [("KAFKA_SASL_USERNAME", "from-env"), ("KAFKA_SASL_PASSWORD", "pw")];
    /// let overrides = [("security.sasl_username".to_string(), "ops".to_string())];
    /// // No group or topics: not needed by an admin client.
    /// let loaded = ConsumerConfig::resolve_for(Purpose::Clients, Some(yaml), env, &overrides)
    ///     .unwrap();
    /// assert_eq!(loaded.config.security.sasl_username.as_deref(), Some("ops"));
    /// assert_eq!(
    ///     loaded.sources.of("kafka.security.sasl_username"),
    ///     Source::Override("security.sasl_username".into())
    /// );
    /// assert!(ConsumerConfig::resolve_for(Purpose::Consumer, Some(yaml), env, &overrides).is_err());
    /// ```
    pub fn resolve_for<K, V>(
        purpose: Purpose,
        yaml: Option<&str>,
        env: impl IntoIterator<Item = (K, V)>,
        overrides: &[(String, String)],
    ) -> Result<Loaded, ConfigErrors>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let (config, sources, errors, unknown_vars) = gather(purpose, yaml, env, overrides);
        match config {
            Some(config) if errors.is_empty() => {
                let mut warnings = config.warnings();
                for w in &mut warnings {
                    sources.annotate(w);
                }
                warnings.extend(unknown_vars);
                Ok(Loaded {
                    config,
                    sources,
                    warnings,
                })
            }
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// Checks everything about a configuration and reports it all, for tools like
    /// `sluicegate config check`: the YAML (none: defaults) overridden by `env`, every rule,
    /// and librdkafka's view of the properties (see [`check_client`](Self::check_client)).
    pub fn check<K, V>(yaml: Option<&str>, env: impl IntoIterator<Item = (K, V)>) -> Report
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let (config, sources, mut errors, unknown_vars) = gather(Purpose::Consumer, yaml, env, &[]);
        let Some(config) = config else {
            return Report {
                config: None,
                sources,
                errors,
                warnings: unknown_vars,
            };
        };
        if let Err(refused) = config.check_client() {
            let known: Vec<String> = errors.iter().map(|e| e.path.clone()).collect();
            errors.extend(refused.0.into_iter().filter(|e| !known.contains(&e.path)));
        }
        let mut warnings = config.warnings();
        for e in errors.iter_mut().chain(warnings.iter_mut()) {
            sources.annotate(e);
        }
        warnings.extend(unknown_vars);
        Report {
            config: Some(config),
            sources,
            errors,
            warnings,
        }
    }
}

/// Everything known about a configuration: the effective settings (when the YAML could be
/// read), where each came from, every error (rules and librdkafka's view) and warnings.
#[derive(Clone, Debug)]
pub struct Report {
    /// The effective configuration; `None` when the YAML itself could not be read.
    pub config: Option<ConsumerConfig>,
    /// Where each setting came from.
    pub sources: Sources,
    /// Every problem, each with its place where known. Empty when the configuration is valid.
    pub errors: Vec<ConfigError>,
    /// Settings that are legal but probably not what is meant, and unknown `KAFKA_*` and
    /// `SLUICEGATE_*` variables (ignored).
    pub warnings: Vec<ConfigError>,
}

/// The configuration from `yaml` and `env` with every problem the rules find (`None` when
/// the YAML cannot be read: then the rules would only report everything as missing), and the
/// warnings about unknown variables among `env`.
fn gather<K, V>(
    purpose: Purpose,
    yaml: Option<&str>,
    env: impl IntoIterator<Item = (K, V)>,
    overrides: &[(String, String)],
) -> (
    Option<ConsumerConfig>,
    Sources,
    Vec<ConfigError>,
    Vec<ConfigError>,
)
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let env: Vec<(K, V)> = env.into_iter().collect();
    let unknown_vars = super::env::unknown_vars(env.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
    let (config, mut sources, mut errors) = match yaml {
        Some(yaml) => parse(yaml),
        None => (
            Some(ConsumerConfig::default()),
            Sources::default(),
            Vec::new(),
        ),
    };
    let Some(mut config) = config else {
        return (None, sources, errors, unknown_vars);
    };
    errors.extend(config.apply_env(env, &mut sources));
    errors.extend(config.apply_overrides(overrides.iter().cloned(), &mut sources));
    let failed: Vec<String> = errors.iter().map(|e| e.path.clone()).collect();
    // Rules on settings that already failed to load would only repeat the news.
    errors.extend(
        config
            .problems_for(purpose)
            .into_iter()
            .filter(|e| !failed.contains(&e.path)),
    );
    for e in &mut errors {
        sources.annotate(e);
    }
    (Some(config), sources, errors, unknown_vars)
}

/// Reads a configuration file.
pub(crate) fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            "kafka",
            path.display().to_string(),
            format!("cannot read the configuration file: {e}"),
        )])
    })
}
