//! What the configuration's tests and the tests of the code that reads a configuration
//! share (compiled for tests only).

use super::{ConfigError, ConfigErrors, ConsumerConfig};

/// The least file a consumer can start from.
pub(crate) const BASE: &str =
    "kafka:\n  bootstrap_servers: localhost:9092\n  group_id: billing\n  topics: [orders]\n";

/// No environment.
pub(crate) fn no_env() -> std::iter::Empty<(String, String)> {
    std::iter::empty()
}

/// The errors of `yaml` (with `env`), which must fail.
pub(crate) fn errors_of(yaml: &str, env: &[(&str, &str)]) -> ConfigErrors {
    match ConsumerConfig::resolve(Some(yaml), env.iter().copied()) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e,
    }
}

/// Asserts one error at `path` whose display names the value and holds every `words`.
pub(crate) fn assert_error(errors: &ConfigErrors, path: &str, value: &str, words: &[&str]) {
    let found: Vec<&ConfigError> = errors.at(path).collect();
    assert!(!found.is_empty(), "no error at {path}; got:\n{errors}");
    let e = found[0];
    assert_eq!(e.value, value, "value of {path}: {e}");
    let line = e.to_string();
    assert!(line.starts_with(path), "{line}");
    for w in words {
        assert!(line.contains(w), "`{w}` missing from: {line}");
    }
}

/// Every setting of a configuration, as dotted paths (`librdkafka:` entries are free-form).
pub(crate) fn settings() -> Vec<String> {
    let mut out = Vec::new();
    setting_paths(
        &serde_json::to_value(ConsumerConfig::default()).expect("serializable"),
        "",
        &mut out,
    );
    out
}

/// The leaf settings under `value`, as dotted paths (`librdkafka:` entries are free-form).
fn setting_paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) if prefix != "librdkafka" => {
            for (key, value) in map {
                let path = match prefix {
                    "" => key.clone(),
                    _ => format!("{prefix}.{key}"),
                };
                setting_paths(value, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}
