//! `sluicegate config check FILE`: loads a consumer configuration file, applies the
//! environment, checks every rule and librdkafka's view of the properties, and prints the
//! effective configuration (secrets redacted) with where each value came from, or every
//! error, one per line. A `sluicegate run` file's `sink:` section is checked too.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use sluicegate::config::{ConfigError, ConsumerConfig, Report, Source, Sources};

use crate::commands::run::sink::{self as run_sink, RunFile};
use crate::settings::shown_value;
use crate::ConfigCheckArgs;

/// One error or warning, as printed with `--json`.
#[derive(Debug, Serialize)]
struct Problem {
    path: String,
    value: String,
    reason: String,
    /// `file`, `env` or absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<String>,
    /// The whole line, as printed without `--json`.
    message: String,
}

impl From<&ConfigError> for Problem {
    fn from(e: &ConfigError) -> Self {
        let (source, line, column, env) = match &e.source {
            Some(Source::File { line, column }) => (Some("file"), Some(*line), Some(*column), None),
            Some(Source::Env(var)) => (Some("env"), None, None, Some(var.clone())),
            _ => (None, None, None, None),
        };
        Problem {
            path: e.path.clone(),
            value: e.value.clone(),
            reason: e.reason.clone(),
            source: source.map(String::from),
            line,
            column,
            env,
            message: e.to_string(),
        }
    }
}

/// `config check`, as printed with `--json`.
#[derive(Debug, Serialize)]
struct Checked {
    file: String,
    environment_applied: bool,
    ok: bool,
    /// The effective configuration, secrets redacted (absent when the YAML is unreadable).
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<Value>,
    /// Where each setting came from: `file:LINE:COLUMN`, `env:VAR` or `default`.
    sources: BTreeMap<String, String>,
    /// The librdkafka properties the configuration sets (derived and passed through),
    /// secrets redacted. The runtime adds its own (such as `enable.auto.commit=false`).
    librdkafka: BTreeMap<String, String>,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

fn source_tag(source: &Source) -> String {
    match source {
        Source::Default => "default".into(),
        Source::File { line, column } => format!("file:{line}:{column}"),
        Source::Env(var) => format!("env:{var}"),
        Source::Override(key) => format!("set:{key}"),
    }
}

/// Every leaf path of `value` (below `path`) with where it came from.
fn leaf_sources(path: &str, value: &Value, sources: &Sources, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let sub = if path == "kafka.librdkafka" {
                    format!("{path}[\"{k}\"]")
                } else {
                    format!("{path}.{k}")
                };
                leaf_sources(&sub, v, sources, out);
            }
        }
        _ => {
            out.insert(path.to_string(), source_tag(&sources.of(path)));
        }
    }
}

/// A YAML scalar (or flow sequence) for `value`: JSON's notation is valid YAML.
fn scalar(value: &Value) -> String {
    value.to_string()
}

/// The configuration as YAML, each value followed by where it came from.
fn render_yaml(value: &Value, path: &str, indent: usize, sources: &Sources, out: &mut String) {
    let Value::Object(map) = value else { return };
    for (k, v) in map {
        let key = k;
        let sub = if path == "kafka.librdkafka" {
            format!("{path}[\"{k}\"]")
        } else {
            format!("{path}.{k}")
        };
        let pad = "  ".repeat(indent);
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push_str(&format!("{pad}{key}:\n"));
                render_yaml(v, &sub, indent + 1, sources, out);
            }
            _ => {
                out.push_str(&format!(
                    "{pad}{key}: {}  # {}\n",
                    scalar(v),
                    sources.of(&sub)
                ));
            }
        }
    }
}

/// The effective configuration as JSON with every secret redacted: typed secrets by their own
/// serialization, pass-through properties by [`shown_value`].
fn redacted(config: &ConsumerConfig) -> Result<Value> {
    let mut value = serde_json::to_value(config).context("cannot show the configuration")?;
    if let Some(Value::Object(props)) = value.get_mut("librdkafka") {
        for (k, v) in props.iter_mut() {
            if let Value::String(s) = v {
                *s = shown_value(k, s).to_string();
            }
        }
    }
    Ok(value)
}

/// A problem of a `sink:` section (`run`'s message, `PATH: REASON`) as a configuration error.
fn sink_problem(message: &str) -> ConfigError {
    let (path, reason) = match message.split_once(": ") {
        Some((path, reason)) if path.starts_with("sink") && !path.contains(' ') => (path, reason),
        _ => ("sink", message),
    };
    ConfigError {
        path: path.to_string(),
        value: String::new(),
        reason: reason.to_string(),
        source: None,
    }
}

/// Runs `config check`; `Ok(false)` when the configuration has errors.
pub fn check(args: ConfigCheckArgs) -> Result<bool> {
    let yaml = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let env: Vec<(String, String)> = if args.no_env {
        Vec::new()
    } else {
        std::env::vars().collect()
    };
    // A `sluicegate run` file: its `sink:` section is checked as `run` checks it, the rest as
    // a consumer configuration.
    let mut sink = None;
    let mut sink_error = None;
    let yaml = if run_sink::has_sink(&yaml) {
        match RunFile::parse(&yaml) {
            Ok(file) => sink = Some(file.sink.describe()),
            Err(e) => sink_error = Some(sink_problem(&format!("{e:#}"))),
        }
        run_sink::without_sink(&yaml)
    } else {
        yaml
    };
    let mut report: Report = ConsumerConfig::check(Some(&yaml), env);
    report.errors.extend(sink_error);
    let config = report.config.as_ref().map(redacted).transpose()?;
    let mut sources = BTreeMap::new();
    if let Some(c) = &config {
        leaf_sources("kafka", c, &report.sources, &mut sources);
    }
    let librdkafka: BTreeMap<String, String> = report
        .config
        .as_ref()
        .map(|c| {
            c.client_properties()
                .into_iter()
                .map(|(k, v)| {
                    let shown = shown_value(&k, &v).to_string();
                    (k, shown)
                })
                .collect()
        })
        .unwrap_or_default();
    let ok = report.errors.is_empty();
    let file = args.file.display().to_string();
    if args.json {
        let checked = Checked {
            file,
            environment_applied: !args.no_env,
            ok,
            config,
            sources,
            librdkafka,
            errors: report.errors.iter().map(Problem::from).collect(),
            warnings: report.warnings.iter().map(Problem::from).collect(),
        };
        println!("{}", serde_json::to_string(&checked)?);
        return Ok(ok);
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if !ok {
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        eprintln!(
            "{file}: {} error{}{}",
            report.errors.len(),
            if report.errors.len() == 1 { "" } else { "s" },
            if yaml.trim().is_empty() {
                " (the file is empty)"
            } else {
                ""
            }
        );
        return Ok(false);
    }
    let mut out = format!(
        "# {file}: valid (environment {}). Secrets are redacted; each value is followed by \
         where it came from.\nkafka:\n",
        if args.no_env { "ignored" } else { "applied" }
    );
    if let Some(c) = &config {
        render_yaml(c, "kafka", 1, &report.sources, &mut out);
    }
    if let Some(sink) = &sink {
        out.push_str(&format!("# sink: {sink}\n"));
    }
    out.push_str("# librdkafka properties it sets:\n");
    for (k, v) in &librdkafka {
        out.push_str(&format!("#   {k}={v}\n"));
    }
    print!("{out}");
    Ok(true)
}
