//! Client settings from the command line (`--bootstrap` and every `-X KEY=VALUE`): the
//! librdkafka configuration they make, and how they are shown without their secrets.

use rdkafka::ClientConfig;

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

/// The configuration of a client of `bootstrap` with every `-X` setting applied (a setting
/// given twice: the last wins). Logs the settings, secrets redacted, at debug level.
pub fn client_config(bootstrap: &str, settings: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in settings {
        config.set(key, value);
    }
    tracing::debug!(
        bootstrap,
        settings = %shown(settings),
        "client settings"
    );
    config
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
