//! `token_provider=`: a Python function as the library's OAUTHBEARER [`TokenProvider`].
//!
//! librdkafka asks for a token when a client is created and when 80% of the last one's lifetime
//! has passed, so the function runs rarely. It runs on a blocking thread of the consumer's
//! runtime, which takes the GIL only for the call; no thread of the consumer waits for the GIL
//! otherwise. What it raises becomes a [`TokenError`] the library reports: logged, and asked
//! again 10 s later; a `sluicegate.PermanentError` (credentials refused) stops the consumer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use sluicegate::security::{OAuthToken, TokenError, TokenProvider};

/// A Python callable returning `sluicegate.OAuthToken(token, expires_at, principal)` or a
/// `(token, expires_at[, principal])` tuple, `expires_at` in seconds since the epoch.
pub(crate) struct PythonTokens(Arc<Py<PyAny>>);

impl PythonTokens {
    pub(crate) fn new(function: Py<PyAny>) -> Self {
        PythonTokens(Arc::new(function))
    }
}

impl TokenProvider for PythonTokens {
    async fn token(&self) -> Result<OAuthToken, TokenError> {
        let function = self.0.clone();
        tokio::task::spawn_blocking(move || Python::attach(|py| call(py, function.bind(py))))
            .await
            .unwrap_or_else(|e| {
                Err(TokenError::new(format!(
                    "the token provider did not return: {e}"
                )))
            })
    }
}

/// Calls the provider and reads what it returned.
fn call(py: Python<'_>, function: &Bound<'_, PyAny>) -> Result<OAuthToken, TokenError> {
    let returned = function.call0().map_err(|e| raised(py, e))?;
    read(&returned).map_err(|why| {
        TokenError::new(format!(
            "the token provider returned {}: {why}",
            returned
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into())
        ))
    })
}

/// The token error an exception of the provider stands for. Its message is the exception's
/// type and text (a provider must not put secrets there: it is logged).
fn raised(py: Python<'_>, e: PyErr) -> TokenError {
    let text = format!(
        "the token provider raised {}: {}",
        e.get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "an exception".into()),
        e.value(py)
    );
    let permanent = py
        .import("sluicegate._errors")
        .and_then(|m| m.getattr("PermanentError"))
        .is_ok_and(|class| e.is_instance(py, &class));
    if permanent {
        TokenError::rejected(text)
    } else {
        TokenError::new(text)
    }
}

/// `(token, expires_at, principal)` from an `OAuthToken` or a tuple.
fn read(v: &Bound<'_, PyAny>) -> Result<OAuthToken, String> {
    let (token, expires_at, principal) = if let Ok(t) = v.cast::<PyTuple>() {
        match t.len() {
            2 | 3 => (
                t.get_item(0).map_err(|e| e.to_string())?,
                t.get_item(1).map_err(|e| e.to_string())?,
                t.get_item(2).ok(),
            ),
            n => {
                return Err(format!(
                    "a tuple of {n}, not (token, expires_at[, principal])"
                ))
            }
        }
    } else {
        let get = |name: &str| {
            v.getattr(name).map_err(|_| {
                format!("no attribute {name:?}; expected a sluicegate.OAuthToken or a tuple")
            })
        };
        (get("token")?, get("expires_at")?, Some(get("principal")?))
    };
    let token: String = token
        .extract()
        .map_err(|_| "the token is not a string".to_string())?;
    let expires_at: f64 = expires_at
        .extract()
        .map_err(|_| "expires_at is not a number (seconds since the epoch)".to_string())?;
    let principal: String = match principal {
        Some(p) if !p.is_none() => p
            .extract()
            .map_err(|_| "the principal is not a string".to_string())?,
        _ => String::new(),
    };
    let expires_at = Duration::try_from_secs_f64(expires_at)
        .map(|d| SystemTime::UNIX_EPOCH + d)
        .map_err(|_| format!("expires_at {expires_at} is not a time (seconds since the epoch)"))?;
    Ok(OAuthToken::expiring_at(token, principal, expires_at))
}
