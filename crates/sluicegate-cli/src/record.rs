//! A record as JSON, the one shape the CLI shows records in: `run`'s exec sink requests and
//! HTTP sink batches, and `consume --json` lines.
//!
//! Bytes (key, value, header values) are a JSON string when they are valid UTF-8, `null` when
//! absent, and `{"base64": "..."}` (standard alphabet, padded) otherwise.

use base64::Engine as _;
use rdkafka::message::{BorrowedMessage, Headers as _};
use rdkafka::Message as _;
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
    let headers = msg
        .headers()
        .iter()
        .map(|h| (h.key.as_str(), h.value.as_deref()));
    let place = (msg.topic(), msg.partition(), msg.offset());
    fields(place, msg.key(), msg.payload(), headers, msg.timestamp())
}

/// [`record_json`] of a record as rdkafka hands it over (`CreateTime` or `LogAppendTime`
/// alike as its timestamp).
pub fn borrowed_record_json(msg: &BorrowedMessage<'_>) -> Map<String, Value> {
    let headers = msg
        .headers()
        .into_iter()
        .flat_map(|hs| hs.iter().map(|h| (h.key, h.value)));
    let place = (msg.topic(), msg.partition(), msg.offset());
    fields(
        place,
        msg.key(),
        msg.payload(),
        headers,
        msg.timestamp().to_millis(),
    )
}

/// The JSON object of a record at `(topic, partition, offset)`.
fn fields<'a>(
    (topic, partition, offset): (&str, i32, i64),
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
    timestamp: Option<i64>,
) -> Map<String, Value> {
    let headers: Map<String, Value> = headers
        .map(|(name, value)| (name.to_string(), bytes_json(value)))
        .collect();
    let mut out = Map::new();
    out.insert("topic".into(), topic.into());
    out.insert("partition".into(), partition.into());
    out.insert("offset".into(), offset.into());
    out.insert("key".into(), bytes_json(key));
    out.insert("value".into(), bytes_json(value));
    out.insert("headers".into(), Value::Object(headers));
    out.insert(
        "timestamp".into(),
        timestamp.map_or(Value::Null, Value::from),
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
