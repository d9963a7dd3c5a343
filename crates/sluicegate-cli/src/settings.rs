//! Client settings from the command line (a `--config` file, the `KAFKA_*` environment,
//! `--set`, `--bootstrap` and every `-X KEY=VALUE`): the librdkafka configuration they make,
//! and how they are shown without their secrets.

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::ClientConfig;
use sluicegate::config::{ClientKind, ConsumerConfig, Purpose};
use sluicegate::interop::SecureContext;
use sluicegate::security::ClientSecurity;
use sluicegate::settings::Properties;
use sluicegate::ConsumerBuilder;

use crate::ConnectArgs;

pub use sluicegate::config::REDACTED;

/// `value` as it may be printed or logged: [`REDACTED`] when `key` names a secret (the
/// library's rule, [`sluicegate::config::is_secret_key`], which also redacts its own output).
pub fn shown_value<'a>(key: &str, value: &'a str) -> &'a str {
    if sluicegate::config::is_secret_key(key) {
        REDACTED
    } else {
        value
    }
}

/// `KEY=VALUE, ...` with secrets redacted, for logs and messages.
pub fn shown(settings: &[(String, String)]) -> String {
    settings
        .iter()
        .map(|(k, v)| format!("{k}={}", shown_value(k, v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a command's clients connect: the library's configuration (a file, the `KAFKA_*`
/// environment, `--set` overrides and `--bootstrap`, loaded with the library's
/// [`ConsumerConfig::resolve_for`]) and the command's `-X` librdkafka properties, applied last.
#[derive(Clone, Debug)]
pub struct Connection {
    config: ConsumerConfig,
    properties: Vec<(String, String)>,
}

impl Connection {
    /// Loads the configuration `args` name over `env` (the process's environment, in
    /// production): **file < environment < `--set` < `--bootstrap`**, then `properties` (`-X`)
    /// on every client. Only the bootstrap servers are required. Warnings (such as unknown
    /// `KAFKA_*` variables) are logged.
    pub fn load<K, V>(
        args: &ConnectArgs,
        env: impl IntoIterator<Item = (K, V)>,
        properties: &[(String, String)],
    ) -> Result<Self>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let yaml = match &args.config {
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                let hint = if path.to_string_lossy().contains('=') {
                    " (--config takes a configuration file; a librdkafka property is given \
                     with -X KEY=VALUE, a setting of the file with --set KEY=VALUE)"
                } else {
                    ""
                };
                format!(
                    "cannot read the configuration file `{}`{hint}",
                    path.display()
                )
            })?),
            None => None,
        };
        if let Some(bootstrap) = &args.bootstrap {
            if crate::reach::bootstrap_addresses(bootstrap).is_empty() {
                bail!("--bootstrap is empty: give host:port[,host:port...]");
            }
        }
        let mut overrides = args.set.clone();
        if let Some(bootstrap) = &args.bootstrap {
            overrides.push(("bootstrap_servers".into(), bootstrap.clone()));
        }
        let loaded =
            ConsumerConfig::resolve_for(Purpose::Clients, yaml.as_deref(), env, &overrides)
                .map_err(|errors| {
                    let from = match &args.config {
                        Some(path) => format!("`{}`", path.display()),
                        None => "the command line and environment".to_string(),
                    };
                    anyhow!(
                        "invalid configuration (from {from}; --bootstrap, a --config file, \
                     KAFKA_BOOTSTRAP_SERVERS or --set bootstrap_servers=ADDR gives the \
                     brokers):\n{errors}"
                    )
                })?;
        for w in &loaded.warnings {
            tracing::warn!("configuration: {w}");
        }
        Ok(Connection {
            config: loaded.config,
            properties: properties.to_vec(),
        })
    }

    /// A connection to `bootstrap` with no other setting than `properties` (the embedded
    /// broker's).
    pub fn to(bootstrap: &str, properties: &[(String, String)]) -> Self {
        let config = ConsumerConfig {
            bootstrap_servers: bootstrap.to_string(),
            ..ConsumerConfig::default()
        };
        Connection {
            config,
            properties: properties.to_vec(),
        }
    }

    /// The `bootstrap.servers` list (`-X bootstrap.servers` wins over the configuration).
    pub fn bootstrap(&self) -> &str {
        self.properties
            .iter()
            .rev()
            .find(|(k, _)| k == "bootstrap.servers")
            .map(|(_, v)| v.as_str())
            .unwrap_or(&self.config.bootstrap_servers)
    }

    /// The settings of a client of `kind`: the configuration's (the library's
    /// [`ConsumerConfig::client_config`]), then every `-X` (a property given twice: the last
    /// wins). Logs them, secrets redacted, at debug level.
    pub fn client_config(&self, kind: ClientKind) -> ClientConfig {
        let mut config = self.config.client_config(kind);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let all: Vec<(String, String)> = config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            tracing::debug!(?kind, settings = %shown(&all), "client settings");
        }
        config.to_rdkafka()
    }

    /// The security watch and token provider of a client made from `config` (one of
    /// [`client_config`](Self::client_config)'s, with whatever the command set on it).
    pub fn security(&self, config: &ClientConfig) -> ClientSecurity {
        self.config
            .client_security(&Properties::from_rdkafka(config))
    }

    /// `builder` (of a Sluicegate consumer the command runs) with the connection's consumer
    /// settings, `-X` included, but not the configuration's group, and its token provider;
    /// what the command sets afterwards wins.
    pub fn consumer(&self, mut builder: ConsumerBuilder) -> ConsumerBuilder {
        let config = self.client_config(ClientKind::Consumer);
        for (key, _) in config.config_map() {
            if !["group.id", "bootstrap.servers"].contains(&key) {
                if let Some(value) = config.get(key) {
                    builder = builder.set(key, value);
                }
            }
        }
        builder
            .bootstrap_servers(self.bootstrap())
            .token_provider_of(&self.security(&config))
    }

    /// A [`SecureContext`] for a client made from `config`.
    pub fn context(&self, config: &ClientConfig) -> SecureContext {
        SecureContext::new(self.security(config))
    }
}

/// Fails, naming the setting and the path, when `key` names a file librdkafka reads (its
/// `*.location` settings and `sasl.kerberos.keytab`) and `value` is not a file this process can
/// open (`ssl.ca.location` may also be a directory, or `probe`): librdkafka's own error, given
/// only when a client is created, names neither.
pub fn check_file_setting(key: &str, value: &str) -> Result<(), String> {
    let names_a_file = key.ends_with(".location") || key == "sasl.kerberos.keytab";
    let ca = key == "ssl.ca.location";
    if !names_a_file || (ca && value == "probe") {
        return Ok(());
    }
    let cannot = |e: std::io::Error| format!("{key}: cannot read `{value}`: {e}");
    let meta = std::fs::metadata(value).map_err(cannot)?;
    if meta.is_dir() {
        return match ca {
            true => std::fs::read_dir(value).map(drop).map_err(cannot),
            false => Err(format!("{key}: `{value}` is a directory, not a file")),
        };
    }
    std::fs::File::open(value).map(drop).map_err(cannot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_settings_must_name_a_readable_file() {
        assert_eq!(check_file_setting("linger.ms", "/nonexistent"), Ok(()));
        assert_eq!(check_file_setting("ssl.ca.location", "probe"), Ok(()));
        assert_eq!(check_file_setting("ssl.ca.location", "/"), Ok(()));
        let missing = check_file_setting("ssl.key.location", "/nonexistent/k.pem").unwrap_err();
        assert!(
            missing.starts_with("ssl.key.location: cannot read `/nonexistent/k.pem`: "),
            "{missing}"
        );
        assert_eq!(
            check_file_setting("sasl.kerberos.keytab", "/"),
            Err("sasl.kerberos.keytab: `/` is a directory, not a file".to_string())
        );
    }

    #[test]
    fn secrets_are_redacted_and_other_values_shown() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "SASL.PASSWORD",
            "my.secret.thing",
        ] {
            assert_eq!(shown_value(key, "hunter2"), REDACTED, "{key}");
        }
        for key in [
            "security.protocol",
            "sasl.username",
            "sasl.mechanism",
            "ssl.ca.location",
            "ssl.key.location",
        ] {
            assert_eq!(shown_value(key, "plain"), "plain", "{key}");
        }
        let settings = vec![
            ("sasl.username".to_string(), "app".to_string()),
            ("sasl.password".to_string(), "hunter2".to_string()),
        ];
        assert_eq!(
            shown(&settings),
            "sasl.username=app, sasl.password=[redacted]"
        );
    }
}
