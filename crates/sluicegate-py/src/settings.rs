//! The Python settings objects (`sluicegate.CircuitBreaker`, `Reconnect`, `Security`) as the
//! library's types, read attribute by attribute. A value of the wrong type or out of range is
//! refused here naming it as Python does (`circuit_breaker.cool_down`); every other rule is the
//! library's, checked when the consumer is built.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use sluicegate::config::{ConsumerConfig, SaslMechanism, Secret, SecurityConfig, SecurityProtocol};
use sluicegate::policy::{Backoff, CircuitBreaker, Reconnect};

use crate::ConfigError;

/// Attribute `name` of `obj`, the value of argument `arg`.
fn attr<'py>(obj: &Bound<'py, PyAny>, arg: &str, name: &str) -> PyResult<Bound<'py, PyAny>> {
    obj.getattr(name)
        .map_err(|_| ConfigError::new_err(format!("{arg}: has no attribute {name:?}")))
}

/// The value's `repr`, for an error message.
fn shown(v: &Bound<'_, PyAny>) -> String {
    v.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A count (0 is left to the library, which says what it needs).
fn count(obj: &Bound<'_, PyAny>, arg: &str, name: &str) -> PyResult<u32> {
    let v = attr(obj, arg, name)?;
    v.extract::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            ConfigError::new_err(format!(
                "{arg}.{name}: expected a whole number from 0 to {}, got {}",
                u32::MAX,
                shown(&v)
            ))
        })
}

fn number(obj: &Bound<'_, PyAny>, arg: &str, name: &str) -> PyResult<f64> {
    let v = attr(obj, arg, name)?;
    v.extract::<f64>().map_err(|_| {
        ConfigError::new_err(format!(
            "{arg}.{name}: expected a number, got {}",
            shown(&v)
        ))
    })
}

/// A duration given in seconds.
fn seconds(obj: &Bound<'_, PyAny>, arg: &str, name: &str) -> PyResult<Duration> {
    crate::seconds(&format!("{arg}.{name}"), number(obj, arg, name)?)
}

/// A duration given in seconds, or `None`.
fn optional_seconds(obj: &Bound<'_, PyAny>, arg: &str, name: &str) -> PyResult<Option<Duration>> {
    if attr(obj, arg, name)?.is_none() {
        return Ok(None);
    }
    seconds(obj, arg, name).map(Some)
}

fn optional_text(obj: &Bound<'_, PyAny>, arg: &str, name: &str) -> PyResult<Option<String>> {
    let v = attr(obj, arg, name)?;
    if v.is_none() {
        return Ok(None);
    }
    v.extract::<String>().map(Some).map_err(|_| {
        // A password's value is not shown, only its type.
        let given = if name.contains("password") {
            v.get_type()
                .name()
                .map(|n| format!("a {n}"))
                .unwrap_or_else(|_| "another type".into())
        } else {
            shown(&v)
        };
        ConfigError::new_err(format!("{arg}.{name}: expected a string, got {given}"))
    })
}

/// `circuit_breaker=sluicegate.CircuitBreaker(...)` as the library's [`CircuitBreaker`].
pub(crate) fn circuit_breaker(obj: &Bound<'_, PyAny>) -> PyResult<CircuitBreaker> {
    const ARG: &str = "circuit_breaker";
    Ok(CircuitBreaker::default()
        .with_consecutive_failures(count(obj, ARG, "consecutive_failures")?)
        .with_failure_rate(
            number(obj, ARG, "failure_rate")?,
            seconds(obj, ARG, "window")?,
            count(obj, ARG, "min_calls")?,
        )
        .with_cool_down(seconds(obj, ARG, "cool_down")?))
}

/// `reconnect=sluicegate.Reconnect(...)` as the library's [`Reconnect`].
pub(crate) fn reconnect(obj: &Bound<'_, PyAny>) -> PyResult<Reconnect> {
    const ARG: &str = "reconnect";
    Ok(Reconnect {
        unreachable_after: optional_seconds(obj, ARG, "unreachable_after")?,
        on_fatal: attr(obj, ARG, "on_fatal")?.is_truthy()?,
        backoff: Backoff {
            initial: seconds(obj, ARG, "initial_backoff")?,
            max: seconds(obj, ARG, "max_backoff")?,
            multiplier: number(obj, ARG, "multiplier")?,
            jitter: number(obj, ARG, "jitter")?,
        },
        max_fenced: count(obj, ARG, "max_fenced")?,
    })
}

/// The library's defaults of [`CircuitBreaker`] and [`Reconnect`], by the Python names, so
/// that the Python classes show the same numbers: `{"circuit_breaker": {...}, "reconnect":
/// {...}}` (durations in seconds).
#[pyfunction]
pub(crate) fn _defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let b = CircuitBreaker::default();
    let breaker = PyDict::new(py);
    breaker.set_item("consecutive_failures", b.consecutive_failures)?;
    breaker.set_item("failure_rate", b.failure_rate)?;
    breaker.set_item("window", b.window.as_secs_f64())?;
    breaker.set_item("min_calls", b.min_calls)?;
    breaker.set_item("cool_down", b.cool_down.as_secs_f64())?;
    let r = Reconnect::default();
    let reconnect = PyDict::new(py);
    reconnect.set_item(
        "unreachable_after",
        r.unreachable_after.map(|d| d.as_secs_f64()),
    )?;
    reconnect.set_item("on_fatal", r.on_fatal)?;
    reconnect.set_item("initial_backoff", r.backoff.initial.as_secs_f64())?;
    reconnect.set_item("max_backoff", r.backoff.max.as_secs_f64())?;
    reconnect.set_item("multiplier", r.backoff.multiplier)?;
    reconnect.set_item("jitter", r.backoff.jitter)?;
    reconnect.set_item("max_fenced", r.max_fenced)?;
    let d = PyDict::new(py);
    d.set_item("circuit_breaker", breaker)?;
    d.set_item("reconnect", reconnect)?;
    Ok(d)
}

/// `security=sluicegate.Security(...)` as librdkafka properties, checked by the rules of the
/// library's `security:` configuration section (each problem named `security.<field>`).
pub(crate) fn security(obj: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    const ARG: &str = "security";
    let text = |name: &str| optional_text(obj, ARG, name);
    let protocol = match text("protocol")? {
        None => None,
        Some(p) => Some(
            p.parse::<SecurityProtocol>()
                .map_err(|e| ConfigError::new_err(format!("{ARG}.protocol: {p:?}: {e}")))?,
        ),
    };
    let sasl_mechanism = match text("sasl_mechanism")? {
        None => None,
        Some(m) => Some(
            m.parse::<SaslMechanism>()
                .map_err(|e| ConfigError::new_err(format!("{ARG}.sasl_mechanism: {m:?}: {e}")))?,
        ),
    };
    let section = SecurityConfig {
        protocol,
        sasl_mechanism,
        sasl_username: text("sasl_username")?,
        sasl_password: text("sasl_password")?.map(Secret::new),
        ssl_ca_location: text("ssl_ca_location")?,
        ssl_certificate_location: text("ssl_certificate_location")?,
        ssl_key_location: text("ssl_key_location")?,
        ssl_key_password: text("ssl_key_password")?.map(Secret::new),
        ..SecurityConfig::default()
    };
    // The section's rules are the configuration file's: checked in a configuration that has
    // only this section of its own (the placeholders pass their own rules).
    let config = ConsumerConfig {
        bootstrap_servers: "localhost:9092".into(),
        group_id: "group".into(),
        topics: vec!["topic".into()],
        security: section,
        ..ConsumerConfig::default()
    };
    if let Err(errors) = config.validate() {
        let ours: Vec<String> = errors
            .0
            .iter()
            .filter(|e| e.path.starts_with("kafka.security"))
            .map(|e| e.to_string().replace("kafka.security.", "security."))
            .collect();
        if !ours.is_empty() {
            return Err(ConfigError::new_err(ours.join("\n")));
        }
    }
    Ok(config
        .client_properties()
        .into_iter()
        .filter(|(k, _)| {
            ["security.", "sasl.", "ssl."]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .collect())
}
