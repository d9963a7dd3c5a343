//! Environment overrides: one table of `KAFKA_*` variables, each mapped to one setting.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use super::source::Sources;
use super::ConsumerConfig;
use crate::config_error::{ConfigError, Source};
use crate::secret::{Secret, REDACTED};

/// One environment variable that overrides a setting.
#[derive(Clone, Copy, Debug)]
pub struct EnvVar {
    /// The variable's name.
    pub name: &'static str,
    /// The setting it overrides.
    pub path: &'static str,
    /// What its value looks like.
    pub format: &'static str,
    apply: fn(&mut ConsumerConfig, &str) -> Result<(), String>,
}

fn number<T: FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| "expected a whole number".to_string())
}

fn decimal(v: &str) -> Result<f64, String> {
    v.trim()
        .parse()
        .map_err(|_| "expected a number, like 2 or 0.5".to_string())
}

fn millis(v: &str) -> Result<Duration, String> {
    number::<u64>(v)
        .map(Duration::from_millis)
        .map_err(|_| "expected whole milliseconds, like 30000".to_string())
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn some(v: &str) -> Option<String> {
    Some(v.to_string())
}

macro_rules! var {
    ($name:literal, $path:literal, $format:literal, |$c:ident, $v:ident| $body:expr) => {
        EnvVar {
            name: $name,
            path: $path,
            format: $format,
            apply: |$c: &mut ConsumerConfig, $v: &str| -> Result<(), String> {
                $body;
                #[allow(unreachable_code)]
                Ok(())
            },
        }
    };
}

/// Every environment variable that overrides a setting, in the order they are applied (a
/// later one wins over an earlier one for the same setting). Empty values are ignored. Other
/// `KAFKA_*` and `SLUICEGATE_*` variables are ignored with a warning naming the closest known
/// one, except those of [`OTHER_VARS`].
///
/// | Variable | Setting | Value |
/// |---|---|---|
/// | `KAFKA_BOOTSTRAP_SERVERS` | `kafka.bootstrap_servers` | `host:port,host:port` |
/// | `KAFKA_GROUP_ID`, `KAFKA_CONSUMER_GROUP` | `kafka.group_id` | name (the second wins) |
/// | `KAFKA_GROUP_INSTANCE_ID` | `kafka.group_instance_id` | instance id (static membership) |
/// | `KAFKA_TOPIC` | `kafka.topics` | one topic |
/// | `KAFKA_TOPICS` | `kafka.topics` | comma-separated topics (wins over `KAFKA_TOPIC`) |
/// | `KAFKA_READ_FROM_BEGINNING` | `kafka.read_from_beginning` | `true`/`false` |
/// | `KAFKA_AUTO_OFFSET_RESET` | `kafka.auto_offset_reset` | `earliest`, `latest`, `error` |
/// | `KAFKA_ORDERING` | `kafka.ordering` | `partition`, `key`, `unordered` |
/// | `KAFKA_MAX_IN_FLIGHT` | `kafka.max_in_flight` | number |
/// | `KAFKA_MAX_IN_FLIGHT_PER_PARTITION` | `kafka.max_in_flight_per_partition` | number |
/// | `KAFKA_MAX_BATCHES_IN_FLIGHT` | `kafka.max_batches_in_flight` | number |
/// | `KAFKA_BATCH_SIZE` | `kafka.batch.max_messages` | number |
/// | `KAFKA_BATCH_TIMEOUT_MS` | `kafka.batch.max_wait` | milliseconds |
/// | `KAFKA_BATCH_MAX_BYTES` | `kafka.batch.max_bytes` | bytes |
/// | `KAFKA_MAX_RETRIES` | `kafka.retry.max_attempts` | retries after the first attempt: N sets N+1 attempts |
/// | `KAFKA_RETRY_MAX_ATTEMPTS` | `kafka.retry.max_attempts` | attempts in all (wins over `KAFKA_MAX_RETRIES`) |
/// | `KAFKA_RETRY_BACKOFF_MS` | `kafka.retry.initial_backoff` | milliseconds |
/// | `KAFKA_RETRY_BACKOFF_MAX_MS` | `kafka.retry.max_backoff` | milliseconds |
/// | `KAFKA_RETRY_MULTIPLIER` | `kafka.retry.multiplier` | number, like 2 or 1.5 |
/// | `KAFKA_RETRY_JITTER` | `kafka.retry.jitter` | number from 0 to 1 |
/// | `KAFKA_DLQ_TOPIC` | `kafka.dead_letter.topic` | topic; also sets `enabled: true` |
/// | `KAFKA_DLQ_ENABLED` | `kafka.dead_letter.enabled` | `true`/`false` (wins over `KAFKA_DLQ_TOPIC`) |
/// | `KAFKA_PROCESSING_TIMEOUT_MS` | `kafka.processing_timeout` | milliseconds |
/// | `KAFKA_COMMIT_INTERVAL_MS` | `kafka.commit_interval` | milliseconds |
/// | `KAFKA_DRAIN_TIMEOUT_MS` | `kafka.drain_timeout` | milliseconds |
/// | `KAFKA_GROUP_PROTOCOL` | `kafka.group_protocol` | `classic`, `consumer` |
/// | `KAFKA_SESSION_TIMEOUT_MS` | `kafka.session_timeout` | milliseconds |
/// | `KAFKA_HEARTBEAT_INTERVAL_MS` | `kafka.heartbeat_interval` | milliseconds |
/// | `KAFKA_MAX_POLL_INTERVAL_MS` | `kafka.max_poll_interval` | milliseconds |
/// | `KAFKA_FETCH_MIN_BYTES` | `kafka.fetch.min_bytes` | bytes |
/// | `KAFKA_FETCH_MAX_WAIT_MS` | `kafka.fetch.max_wait` | milliseconds |
/// | `KAFKA_MAX_PARTITION_FETCH_BYTES` | `kafka.fetch.max_partition_bytes` | bytes |
/// | `KAFKA_FETCH_MAX_BYTES` | `kafka.fetch.max_bytes` | bytes |
/// | `KAFKA_METRICS_ADDR` | `kafka.metrics_addr` | `ip:port` |
/// | `KAFKA_SECURITY_PROTOCOL` | `kafka.security.protocol` | `plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl` |
/// | `KAFKA_SASL_MECHANISM` | `kafka.security.sasl_mechanism` | `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER` |
/// | `KAFKA_SASL_USERNAME` | `kafka.security.sasl_username` | text |
/// | `KAFKA_SASL_PASSWORD` | `kafka.security.sasl_password` | text (secret) |
/// | `KAFKA_SSL_CA_LOCATION` | `kafka.security.ssl_ca_location` | path |
/// | `KAFKA_SSL_CERTIFICATE_LOCATION` | `kafka.security.ssl_certificate_location` | path |
/// | `KAFKA_SSL_KEY_LOCATION` | `kafka.security.ssl_key_location` | path |
/// | `KAFKA_SSL_KEY_PASSWORD` | `kafka.security.ssl_key_password` | text (secret) |
/// | `KAFKA_OAUTHBEARER_TOKEN_ENDPOINT` | `kafka.security.oauthbearer.token_endpoint` | URL |
/// | `KAFKA_OAUTHBEARER_CLIENT_ID` | `kafka.security.oauthbearer.client_id` | text |
/// | `KAFKA_OAUTHBEARER_CLIENT_SECRET` | `kafka.security.oauthbearer.client_secret` | text (secret) |
/// | `KAFKA_OAUTHBEARER_SCOPE` | `kafka.security.oauthbearer.scope` | space-separated scopes |
/// | `KAFKA_MSK_IAM_REGION` | `kafka.security.msk_iam.region` | AWS region, like `eu-west-1` |
/// | `KAFKA_MSK_IAM_PROFILE` | `kafka.security.msk_iam.profile` | AWS profile name |
pub const ENV_VARS: &[EnvVar] = &[
    var!(
        "KAFKA_BOOTSTRAP_SERVERS",
        "kafka.bootstrap_servers",
        "host:port,host:port",
        |c, v| c.bootstrap_servers = list(v).join(",")
    ),
    var!("KAFKA_GROUP_ID", "kafka.group_id", "name", |c, v| c
        .group_id =
        v.trim().into()),
    var!("KAFKA_CONSUMER_GROUP", "kafka.group_id", "name", |c, v| c
        .group_id =
        v.trim().into()),
    var!(
        "KAFKA_GROUP_INSTANCE_ID",
        "kafka.group_instance_id",
        "instance id",
        |c, v| c.group_instance_id = some(v.trim())
    ),
    var!("KAFKA_TOPIC", "kafka.topics", "topic", |c, v| c.topics =
        vec![v.trim().into()]),
    var!("KAFKA_TOPICS", "kafka.topics", "topic,topic", |c, v| c
        .topics =
        list(v)),
    var!(
        "KAFKA_READ_FROM_BEGINNING",
        "kafka.read_from_beginning",
        "true|false",
        |c, v| c.read_from_beginning = boolean(v)?
    ),
    var!(
        "KAFKA_AUTO_OFFSET_RESET",
        "kafka.auto_offset_reset",
        "earliest|latest|error",
        |c, v| c.auto_offset_reset = v.trim().parse()?
    ),
    var!(
        "KAFKA_ORDERING",
        "kafka.ordering",
        "partition|key|unordered",
        |c, v| c.ordering = v.trim().parse()?
    ),
    var!(
        "KAFKA_MAX_IN_FLIGHT",
        "kafka.max_in_flight",
        "number",
        |c, v| c.max_in_flight = number(v)?
    ),
    var!(
        "KAFKA_MAX_IN_FLIGHT_PER_PARTITION",
        "kafka.max_in_flight_per_partition",
        "number",
        |c, v| c.max_in_flight_per_partition = Some(number(v)?)
    ),
    var!(
        "KAFKA_MAX_BATCHES_IN_FLIGHT",
        "kafka.max_batches_in_flight",
        "number",
        |c, v| c.max_batches_in_flight = number(v)?
    ),
    var!(
        "KAFKA_BATCH_SIZE",
        "kafka.batch.max_messages",
        "number",
        |c, v| c.batch.max_messages = number(v)?
    ),
    var!(
        "KAFKA_BATCH_TIMEOUT_MS",
        "kafka.batch.max_wait",
        "milliseconds",
        |c, v| c.batch.max_wait = millis(v)?
    ),
    var!(
        "KAFKA_BATCH_MAX_BYTES",
        "kafka.batch.max_bytes",
        "bytes",
        |c, v| c.batch.max_bytes = number(v)?
    ),
    var!(
        "KAFKA_MAX_RETRIES",
        "kafka.retry.max_attempts",
        "retries after the first attempt",
        |c, v| c.retry.max_attempts = Some(number::<u32>(v)?.saturating_add(1))
    ),
    var!(
        "KAFKA_RETRY_MAX_ATTEMPTS",
        "kafka.retry.max_attempts",
        "attempts in all",
        |c, v| c.retry.max_attempts = Some(number(v)?)
    ),
    var!(
        "KAFKA_RETRY_BACKOFF_MS",
        "kafka.retry.initial_backoff",
        "milliseconds",
        |c, v| c.retry.initial_backoff = millis(v)?
    ),
    var!(
        "KAFKA_RETRY_BACKOFF_MAX_MS",
        "kafka.retry.max_backoff",
        "milliseconds",
        |c, v| c.retry.max_backoff = millis(v)?
    ),
    var!(
        "KAFKA_RETRY_MULTIPLIER",
        "kafka.retry.multiplier",
        "number",
        |c, v| c.retry.multiplier = decimal(v)?
    ),
    var!(
        "KAFKA_RETRY_JITTER",
        "kafka.retry.jitter",
        "number from 0 to 1",
        |c, v| c.retry.jitter = decimal(v)?
    ),
    var!(
        "KAFKA_DLQ_TOPIC",
        "kafka.dead_letter.topic",
        "topic",
        |c, v| {
            c.dead_letter.topic = some(v.trim());
            c.dead_letter.enabled = true
        }
    ),
    var!(
        "KAFKA_DLQ_ENABLED",
        "kafka.dead_letter.enabled",
        "true|false",
        |c, v| c.dead_letter.enabled = boolean(v)?
    ),
    var!(
        "KAFKA_PROCESSING_TIMEOUT_MS",
        "kafka.processing_timeout",
        "milliseconds",
        |c, v| c.processing_timeout = Some(millis(v)?)
    ),
    var!(
        "KAFKA_COMMIT_INTERVAL_MS",
        "kafka.commit_interval",
        "milliseconds",
        |c, v| c.commit_interval = millis(v)?
    ),
    var!(
        "KAFKA_DRAIN_TIMEOUT_MS",
        "kafka.drain_timeout",
        "milliseconds",
        |c, v| c.drain_timeout = millis(v)?
    ),
    var!(
        "KAFKA_GROUP_PROTOCOL",
        "kafka.group_protocol",
        "classic|consumer",
        |c, v| c.group_protocol = v.trim().parse()?
    ),
    var!(
        "KAFKA_SESSION_TIMEOUT_MS",
        "kafka.session_timeout",
        "milliseconds",
        |c, v| c.session_timeout = Some(millis(v)?)
    ),
    var!(
        "KAFKA_HEARTBEAT_INTERVAL_MS",
        "kafka.heartbeat_interval",
        "milliseconds",
        |c, v| c.heartbeat_interval = Some(millis(v)?)
    ),
    var!(
        "KAFKA_MAX_POLL_INTERVAL_MS",
        "kafka.max_poll_interval",
        "milliseconds",
        |c, v| c.max_poll_interval = Some(millis(v)?)
    ),
    var!(
        "KAFKA_FETCH_MIN_BYTES",
        "kafka.fetch.min_bytes",
        "bytes",
        |c, v| c.fetch.min_bytes = Some(number(v)?)
    ),
    var!(
        "KAFKA_FETCH_MAX_WAIT_MS",
        "kafka.fetch.max_wait",
        "milliseconds",
        |c, v| c.fetch.max_wait = Some(millis(v)?)
    ),
    var!(
        "KAFKA_MAX_PARTITION_FETCH_BYTES",
        "kafka.fetch.max_partition_bytes",
        "bytes",
        |c, v| c.fetch.max_partition_bytes = Some(number(v)?)
    ),
    var!(
        "KAFKA_FETCH_MAX_BYTES",
        "kafka.fetch.max_bytes",
        "bytes",
        |c, v| c.fetch.max_bytes = Some(number(v)?)
    ),
    var!(
        "KAFKA_METRICS_ADDR",
        "kafka.metrics_addr",
        "ip:port",
        |c, v| {
            c.metrics_addr = Some(
                v.trim()
                    .parse()
                    .map_err(|_| "expected an address like 0.0.0.0:9464".to_string())?,
            )
        }
    ),
    var!(
        "KAFKA_SECURITY_PROTOCOL",
        "kafka.security.protocol",
        "plaintext|ssl|sasl_plaintext|sasl_ssl",
        |c, v| c.security.protocol = Some(v.trim().parse()?)
    ),
    var!(
        "KAFKA_SASL_MECHANISM",
        "kafka.security.sasl_mechanism",
        "PLAIN|SCRAM-SHA-256|SCRAM-SHA-512|OAUTHBEARER",
        |c, v| c.security.sasl_mechanism = Some(v.trim().parse()?)
    ),
    var!(
        "KAFKA_SASL_USERNAME",
        "kafka.security.sasl_username",
        "text",
        |c, v| c.security.sasl_username = some(v)
    ),
    var!(
        "KAFKA_SASL_PASSWORD",
        "kafka.security.sasl_password",
        "text (secret)",
        |c, v| c.security.sasl_password = Some(Secret::new(v))
    ),
    var!(
        "KAFKA_SSL_CA_LOCATION",
        "kafka.security.ssl_ca_location",
        "path",
        |c, v| c.security.ssl_ca_location = some(v)
    ),
    var!(
        "KAFKA_SSL_CERTIFICATE_LOCATION",
        "kafka.security.ssl_certificate_location",
        "path",
        |c, v| c.security.ssl_certificate_location = some(v)
    ),
    var!(
        "KAFKA_SSL_KEY_LOCATION",
        "kafka.security.ssl_key_location",
        "path",
        |c, v| c.security.ssl_key_location = some(v)
    ),
    var!(
        "KAFKA_SSL_KEY_PASSWORD",
        "kafka.security.ssl_key_password",
        "text (secret)",
        |c, v| c.security.ssl_key_password = Some(Secret::new(v))
    ),
    var!(
        "KAFKA_OAUTHBEARER_TOKEN_ENDPOINT",
        "kafka.security.oauthbearer.token_endpoint",
        "URL",
        |c, v| c.security.oauthbearer.token_endpoint = some(v.trim())
    ),
    var!(
        "KAFKA_OAUTHBEARER_CLIENT_ID",
        "kafka.security.oauthbearer.client_id",
        "text",
        |c, v| c.security.oauthbearer.client_id = some(v.trim())
    ),
    var!(
        "KAFKA_OAUTHBEARER_CLIENT_SECRET",
        "kafka.security.oauthbearer.client_secret",
        "text (secret)",
        |c, v| c.security.oauthbearer.client_secret = Some(Secret::new(v))
    ),
    var!(
        "KAFKA_OAUTHBEARER_SCOPE",
        "kafka.security.oauthbearer.scope",
        "space-separated scopes",
        |c, v| c.security.oauthbearer.scope = some(v.trim())
    ),
    var!(
        "KAFKA_MSK_IAM_REGION",
        "kafka.security.msk_iam.region",
        "AWS region, like eu-west-1",
        |c, v| c.security.msk_iam.region = some(v.trim())
    ),
    var!(
        "KAFKA_MSK_IAM_PROFILE",
        "kafka.security.msk_iam.profile",
        "AWS profile name",
        |c, v| c.security.msk_iam.profile = some(v.trim())
    ),
];

impl ConsumerConfig {
    /// Overrides settings with the `KAFKA_*` variables among `env` (see [`ENV_VARS`]), in the
    /// table's order whatever the order of `env`, recording each in `sources`. Returns the
    /// variables whose values were refused (their settings are left as they were).
    pub fn apply_env<K, V>(
        &mut self,
        env: impl IntoIterator<Item = (K, V)>,
        sources: &mut Sources,
    ) -> Vec<ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let given: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.as_ref().starts_with("KAFKA_"))
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        let mut errors = Vec::new();
        for var in ENV_VARS {
            let Some((_, value)) = given.iter().rev().find(|(k, _)| k == var.name) else {
                continue;
            };
            if value.trim().is_empty() {
                continue;
            }
            match (var.apply)(self, value) {
                Ok(()) => {
                    sources.set(var.path, Source::Env(var.name.into()));
                    if var.name == "KAFKA_DLQ_TOPIC" {
                        sources.set("kafka.dead_letter.enabled", Source::Env(var.name.into()));
                    }
                }
                Err(reason) => {
                    let shown = if var.format.contains("(secret)") {
                        REDACTED.to_string()
                    } else {
                        value.clone()
                    };
                    let mut e = ConfigError::new(
                        var.path,
                        shown,
                        format!("{reason} (from {}: {})", var.name, var.format),
                    );
                    e.source = Some(Source::Env(var.name.into()));
                    errors.push(e);
                }
            }
        }
        errors
    }
}

impl ConsumerConfig {
    /// Overrides settings by path (see [`resolve_for`](Self::resolve_for)): each of
    /// `overrides` is a setting's path, with or without the leading `kafka.`
    /// (`security.sasl_username`, `kafka.bootstrap_servers`), and its value written as its
    /// `KAFKA_*` variable takes it, except that durations may also be written as in the file
    /// (`30s`). Any setting with a variable in [`ENV_VARS`] can be overridden; for the paths of
    /// two variables, the one named like the setting (`KAFKA_TOPICS`,
    /// `KAFKA_RETRY_MAX_ATTEMPTS`, `KAFKA_CONSUMER_GROUP`). Applied in the order given (a later
    /// override of the same setting wins), each recorded in `sources` as
    /// [`Source::Override`]. Returns an error for each unknown path or refused value.
    pub(crate) fn apply_overrides<K, V>(
        &mut self,
        overrides: impl IntoIterator<Item = (K, V)>,
        sources: &mut Sources,
    ) -> Vec<ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut errors = Vec::new();
        for (key, value) in overrides {
            let (key, value) = (key.as_ref().trim(), value.as_ref());
            let path = format!("kafka.{}", key.strip_prefix("kafka.").unwrap_or(key));
            let source = Source::Override(key.to_string());
            let Some(var) = ENV_VARS.iter().rev().find(|v| v.path == path) else {
                let mut e = ConfigError::new(
                    path.clone(),
                    "",
                    format!(
                        "`{key}` cannot be overridden: not a setting with a KAFKA_* variable; \
                         those that can be: {} (librdkafka properties are set as they are, \
                         e.g. with the CLI's -X)",
                        overridable().join(", ")
                    ),
                );
                e.source = Some(source);
                errors.push(e);
                continue;
            };
            let shown = if var.path.contains("password") {
                REDACTED.to_string()
            } else {
                value.to_string()
            };
            let value = match var.format {
                "milliseconds" if value.trim().parse::<u64>().is_err() => {
                    match super::human::parse(value) {
                        Ok(d) => d.as_millis().to_string(),
                        Err(reason) => {
                            let mut e = ConfigError::new(var.path, shown, reason);
                            e.source = Some(source);
                            errors.push(e);
                            continue;
                        }
                    }
                }
                _ => value.to_string(),
            };
            match (var.apply)(self, &value) {
                Ok(()) => {
                    sources.set(var.path, source.clone());
                    if var.name == "KAFKA_DLQ_TOPIC" {
                        sources.set("kafka.dead_letter.enabled", source);
                    }
                }
                Err(reason) => {
                    let mut e = ConfigError::new(
                        var.path,
                        shown,
                        format!("{reason} (expected: {})", var.format),
                    );
                    e.source = Some(source);
                    errors.push(e);
                }
            }
        }
        errors
    }
}

/// The paths (without `kafka.`) that overrides can set.
fn overridable() -> Vec<&'static str> {
    let mut paths: Vec<&str> = ENV_VARS
        .iter()
        .map(|v| v.path.strip_prefix("kafka.").unwrap_or(v.path))
        .collect();
    paths.dedup();
    paths
}

/// Variables that share the prefixes Sluicegate reads but belong to other programs, or to
/// Sluicegate's tools rather than to a consumer: never applied, never warned about.
///
/// - Apache Kafka's scripts and container images (`kafka-run-class.sh`, `kafka-storage.sh`):
///   the installation, JVM and logging options and the KRaft cluster id;
/// - the `sluicegate` CLI's `SLUICEGATE_LOG_FORMAT`, and the variables of Sluicegate's own
///   tests and scripts (`SLUICEGATE_TEST_BOOTSTRAP`, ...).
///
/// Broker settings given as variables by broker images (`KAFKA_ADVERTISED_LISTENERS`,
/// `KAFKA_CFG_*`) are not listed: they have no effect on a consumer, and are warned about.
pub const OTHER_VARS: &[&str] = &[
    "KAFKA_HOME",
    "KAFKA_OPTS",
    "KAFKA_HEAP_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_DEBUG",
    "KAFKA_CLUSTER_ID",
    "KAFKA_VERSION",
    "KAFKA_JMX_PORT",
    "KAFKA_JMX_HOSTNAME",
    "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL",
    "SLUICEGATE_LOG_FORMAT",
    "SLUICEGATE_TEST_BOOTSTRAP",
    "SLUICEGATE_TEST_CONFIG",
    "SLUICEGATE_KAFKA_HOME",
    "SLUICEGATE_KAFKA_SERVER_PROPERTIES",
    "SLUICEGATE_JAVA",
    "SLUICEGATE_TANSU",
    "SLUICEGATE_SKIP_TANSU",
    "SLUICEGATE_PROMTOOL",
    "SLUICEGATE_LEDGER_BIN",
    "SLUICEGATE_TRANSFORM_BIN",
    "SLUICEGATE_QUICKSTART_CHILD",
    "SLUICEGATE_LONG",
    "SLUICEGATE_SOAK_SECS",
    "SLUICEGATE_SOAK_BROKER",
];

/// The prefixes of the variables whose names are checked.
const CHECKED_PREFIXES: [&str; 2] = ["KAFKA_", "SLUICEGATE_"];

/// One warning for each variable among `env` that starts with `KAFKA_` or `SLUICEGATE_`, has a
/// value, and is neither in [`ENV_VARS`] nor in [`OTHER_VARS`]: it is ignored, and the warning
/// says so and names the closest known variable when one is close (compared without the
/// prefix, so `SLUICEGATE_GROUP_ID` suggests `KAFKA_GROUP_ID`). Values are never shown: a
/// misspelled secret must not reach a log.
pub(crate) fn unknown_vars<K, V>(env: impl IntoIterator<Item = (K, V)>) -> Vec<ConfigError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let known = || {
        ENV_VARS
            .iter()
            .map(|v| v.name)
            .chain(OTHER_VARS.iter().copied())
    };
    let unknown: BTreeSet<String> = env
        .into_iter()
        .filter(|(k, v)| {
            let k = k.as_ref();
            CHECKED_PREFIXES.iter().any(|p| k.starts_with(p))
                && !v.as_ref().trim().is_empty()
                && !known().any(|n| n == k)
        })
        .map(|(k, _)| k.as_ref().to_string())
        .collect();
    unknown
        .into_iter()
        .map(|name| {
            let reason = match closest(&name, known()) {
                Some(best) => format!("unknown variable, ignored; did you mean `{best}`?"),
                None => "unknown variable, ignored (the variables Sluicegate reads are listed in \
                         its README, \"Configuration: file, environment, code\")"
                    .to_string(),
            };
            let mut warning = ConfigError::new(name.clone(), "", reason);
            warning.source = Some(Source::Env(name));
            warning
        })
        .collect()
}

/// The name among `known` closest to `name`, compared without their prefixes, when it is
/// close enough to be a likely slip.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let tail = |n: &str| {
        CHECKED_PREFIXES
            .iter()
            .find_map(|p| n.strip_prefix(p))
            .unwrap_or(n)
            .to_ascii_lowercase()
    };
    let given = tail(name);
    known
        .map(|k| (strsim::jaro_winkler(&given, &tail(k)), k))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}
