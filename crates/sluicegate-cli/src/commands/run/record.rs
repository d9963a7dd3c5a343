//! A message as JSON, the one shape both sinks send: the exec sink's requests and the HTTP
//! sink's batches.
//!
//! Bytes (key, value, header values) are a JSON string when they are valid UTF-8, `null` when
//! absent, and `{"base64": "..."}` (standard alphabet, padded) otherwise.

use base64::Engine as _;
use serde_json::{Map, Value};
use sluicegate::Message;

/// `bytes` by the rule of the module documentation.
pub fn bytes_json(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => {
                let mut wrapped = Map::new();
                wrapped.insert("base64".into(), base64_text(b).into());
                Value::Object(wrapped)
            }
        },
    }
}

/// `bytes` in standard, padded base64.
pub fn base64_text(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `{"topic", "partition", "offset", "key", "value", "headers": {name: value}, "timestamp"}`;
/// `timestamp` is milliseconds since the epoch, or `null`. A header name given twice keeps
/// its last value.
pub fn record_json(msg: &Message) -> Map<String, Value> {
    let mut headers = Map::new();
    for h in msg.headers() {
        headers.insert(h.key.clone(), bytes_json(h.value.as_deref()));
    }
    let mut out = Map::new();
    out.insert("topic".into(), msg.topic().into());
    out.insert("partition".into(), msg.partition().into());
    out.insert("offset".into(), msg.offset().into());
    out.insert("key".into(), bytes_json(msg.key()));
    out.insert("value".into(), bytes_json(msg.payload()));
    out.insert("headers".into(), Value::Object(headers));
    out.insert(
        "timestamp".into(),
        msg.timestamp().map_or(Value::Null, Value::from),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluicegate::Header;

    #[test]
    fn text_stays_text_and_other_bytes_are_base64() {
        let msg = Message::new(
            "t",
            2,
            7,
            Some(vec![0xff, 0x00]),
            Some(b"{\"a\":1}".to_vec()),
        )
        .with_headers(vec![
            Header::new("trace", Some(b"abc")),
            Header::new("none", None),
        ]);
        let json = Value::Object(record_json(&msg));
        assert_eq!(
            json,
            serde_json::json!({
                "topic": "t", "partition": 2, "offset": 7,
                "key": {"base64": "/wA="}, "value": "{\"a\":1}",
                "headers": {"trace": "abc", "none": null},
                "timestamp": null,
            })
        );
    }
}
