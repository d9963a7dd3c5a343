//! The HTTP sink: each message POSTed to a URL (its value as the body, the rest as request
//! headers), or each batch as a JSON array. The status decides the outcome: 2xx done; 429, 5xx,
//! connection errors and timeouts retryable; any other status permanent.

use anyhow::{Context, Result};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Client, RequestBuilder, StatusCode, Url};
use serde_json::Value;
use sluicegate::{BatchHandler, Handler, HandlerError, HandlerResult, Message};

use super::reply::Replies;
use super::sink::HttpSettings;
use crate::record::{base64_text, record_json};

/// How much of an error response's body goes into the error (and so into the dead-letter
/// record's `sluicegate.error.message` header).
const BODY_START: usize = 256;

/// Posts messages to one URL through a pool of connections.
#[derive(Clone)]
pub struct HttpSink {
    client: Client,
    url: Url,
    /// Where a 2xx response's body goes, if anywhere (`sink.reply_to`).
    replies: Option<Replies>,
}

impl HttpSink {
    /// A sink for `settings`: the pool, the per-request timeout, the default headers and the
    /// TLS settings.
    pub fn new(settings: &HttpSettings, replies: Option<Replies>) -> Result<Self> {
        let mut builder = Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .default_headers(settings.headers.clone())
            // A redirect is answered as any other status: a POST is not replayed elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sluicegate/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &settings.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .context("sink.http.tls.ca_file: not PEM certificates")?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(pem) = &settings.identity_pem {
            let identity = reqwest::Identity::from_pem(pem).context(
                "sink.http.tls: cert_file and key_file are not a PEM certificate and its key",
            )?;
            builder = builder.identity(identity);
        }
        let client = builder.build().context("cannot make the HTTP client")?;
        Ok(HttpSink {
            client,
            url: settings.url.clone(),
            replies,
        })
    }

    /// Sends `request` and turns the answer into an outcome.
    /// Sends `request`; on a 2xx answer, returns its body when replies are written.
    async fn send(&self, request: RequestBuilder) -> Result<Option<Vec<u8>>, HandlerError> {
        let response = match request.send().await {
            Ok(r) => r,
            // Connection refused or reset, timeouts: the service may come back.
            Err(e) => {
                return Err(HandlerError::retryable(format!(
                    "POST {}: {}",
                    self.url,
                    chain(&e)
                )))
            }
        };
        let status = response.status();
        if status.is_success() {
            if self.replies.is_none() {
                return Ok(None);
            }
            return match response.bytes().await {
                Ok(body) => Ok(Some(body.to_vec())),
                Err(e) => Err(HandlerError::retryable(format!(
                    "POST {}: the answer's body could not be read: {}",
                    self.url,
                    chain(&e)
                ))),
            };
        }
        let start = body_start(response).await;
        let error = format!("POST {} answered HTTP {status}: {start}", self.url);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(HandlerError::retryable(error))
        } else {
            Err(HandlerError::permanent(error))
        }
    }
}

/// The first `BODY_START` bytes of the answer's body, as text; the rest is not read.
async fn body_start(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < BODY_START {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(BODY_START);
    String::from_utf8_lossy(&body).into_owned()
}

/// An error with its causes: reqwest's own message names only the step that failed.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// `value` as a header value when it is printable ASCII.
fn printable(value: &[u8]) -> Option<HeaderValue> {
    if value.iter().all(|b| (0x20..0x7f).contains(b)) {
        HeaderValue::from_bytes(value).ok()
    } else {
        None
    }
}

/// The request headers of `msg`: `Sluicegate-Topic`, `-Partition`, `-Offset`, `-Timestamp`,
/// `-Key` (or `-Key-Base64`), and `Kafka-Header-<name>` (or `-Base64`) for each record header.
pub fn message_headers(msg: &Message) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = vec![
        (name("Sluicegate-Topic"), text(msg.topic())),
        (
            name("Sluicegate-Partition"),
            text(&msg.partition().to_string()),
        ),
        (name("Sluicegate-Offset"), text(&msg.offset().to_string())),
    ];
    if let Some(ts) = msg.timestamp() {
        out.push((name("Sluicegate-Timestamp"), text(&ts.to_string())));
    }
    let mut bytes = |base: String, value: &[u8]| match printable(value) {
        Some(v) => out.push((name(&base), v)),
        None => out.push((name(&format!("{base}-Base64")), text(&base64_text(value)))),
    };
    if let Some(key) = msg.key() {
        bytes("Sluicegate-Key".into(), key);
    }
    for h in msg.headers() {
        if let Some(value) = &h.value {
            bytes(format!("Kafka-Header-{}", header_token(&h.key)), value);
        }
    }
    out
}

fn name(s: &str) -> HeaderName {
    // Every name built here is a token: fixed names, and record header names made tokens.
    HeaderName::from_bytes(s.as_bytes()).unwrap_or(HeaderName::from_static("sluicegate-invalid"))
}

fn text(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

/// A record header name as an HTTP token: bytes outside the token characters percent-encoded.
fn header_token(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        let token = b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b);
        if token {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Handler for HttpSink {
    async fn handle(&self, message: Message) -> HandlerResult {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/octet-stream");
        for (k, v) in message_headers(&message) {
            request = request.header(k, v);
        }
        let body = message.payload().map(<[u8]>::to_vec).unwrap_or_default();
        let answer = self.send(request.body(body)).await?;
        if let (Some(replies), Some(answer)) = (&self.replies, answer) {
            replies.write(&message, answer).await?;
        }
        Ok(())
    }
}

impl BatchHandler for HttpSink {
    async fn handle_batch(&self, batch: Vec<Message>) -> HandlerResult {
        let records: Vec<Value> = batch
            .iter()
            .map(|m| Value::Object(record_json(m)))
            .collect();
        let body = serde_json::to_vec(&records).map_err(HandlerError::permanent)?;
        let request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("Sluicegate-Batch-Size", batch.len().to_string())
            .body(body);
        // `reply_to` is refused with batches (see `run`): one answer cannot be split up.
        self.send(request).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluicegate::Header;

    #[test]
    fn message_fields_become_request_headers() {
        let msg = Message::new("orders", 3, 42, Some(b"k-1".to_vec()), Some(b"{}".to_vec()))
            .with_headers(vec![
                Header::new("trace id", Some(b"abc")),
                Header::new("bin", Some(&[0xff][..])),
                Header::new("null", None),
            ]);
        let shown: Vec<(String, String)> = message_headers(&msg)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let want = [
            ("sluicegate-topic", "orders"),
            ("sluicegate-partition", "3"),
            ("sluicegate-offset", "42"),
            ("sluicegate-key", "k-1"),
            ("kafka-header-trace%20id", "abc"),
            ("kafka-header-bin-base64", "/w=="),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(shown, want);
        let odd_key = Message::new("t", 0, 0, Some("é".as_bytes().to_vec()), None);
        let names: Vec<String> = message_headers(&odd_key)
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert!(
            names.contains(&"sluicegate-key-base64".to_string()),
            "{names:?}"
        );
    }
}
