//! [`Message`]: the record a handler sees.

use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;

/// One Kafka record, as handed to a [`Handler`](crate::Handler).
///
/// Cloning is cheap (one reference count): the record's bytes are shared, not copied, so a
/// handler may keep or move a `Message` into spawned work freely.
#[derive(Clone)]
pub struct Message(Arc<Record>);

struct Record {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    /// Key and value in one allocation: `data[..key_len]` and `data[key_len..]`.
    data: Box<[u8]>,
    key_len: usize,
    has_key: bool,
    has_payload: bool,
    headers: Vec<Header>,
}

/// One record header. Kafka header values are raw bytes and may be absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The header name.
    pub key: String,
    /// The header value, `None` for a null value.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header named `key` with a copy of `value`.
    pub fn new(key: impl Into<String>, value: Option<&[u8]>) -> Self {
        Header {
            key: key.into(),
            value: value.map(Bytes::copy_from_slice),
        }
    }
}

impl Message {
    /// Builds a message by hand, for tests of handlers.
    ///
    /// ```
    /// use sluicegate::Message;
    /// let msg = Message::new("orders", 0, 42, Some(b"k".to_vec()), Some(b"{}".to_vec()));
    /// assert_eq!(msg.offset(), 42);
    /// ```
    pub fn new(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
    ) -> Self {
        Self::from_parts(
            Arc::from(topic),
            partition,
            offset,
            None,
            key.as_deref(),
            payload.as_deref(),
            Vec::new(),
        )
    }

    pub(crate) fn from_parts(
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Vec<Header>,
    ) -> Self {
        let key_len = key.map_or(0, <[u8]>::len);
        let mut data = Vec::with_capacity(key_len + payload.map_or(0, <[u8]>::len));
        data.extend_from_slice(key.unwrap_or_default());
        data.extend_from_slice(payload.unwrap_or_default());
        Message(Arc::new(Record {
            topic,
            partition,
            offset,
            timestamp,
            data: data.into_boxed_slice(),
            key_len,
            has_key: key.is_some(),
            has_payload: payload.is_some(),
            headers,
        }))
    }

    /// Returns a copy of this message with `headers` attached, for tests of handlers.
    pub fn with_headers(self, headers: Vec<Header>) -> Self {
        let r = &self.0;
        Self::from_parts(
            r.topic.clone(),
            r.partition,
            r.offset,
            r.timestamp,
            self.key(),
            self.payload(),
            headers,
        )
    }

    /// The topic the record was read from.
    pub fn topic(&self) -> &str {
        &self.0.topic
    }

    /// The partition the record was read from.
    pub fn partition(&self) -> i32 {
        self.0.partition
    }

    /// The record's offset within its partition.
    pub fn offset(&self) -> i64 {
        self.0.offset
    }

    /// The record's timestamp in milliseconds since the Unix epoch (create or log-append time,
    /// as the topic is configured), if the broker supplied one.
    pub fn timestamp(&self) -> Option<i64> {
        self.0.timestamp
    }

    /// How long before `now` the record's timestamp was (zero if it is in the future).
    pub(crate) fn age(&self, now: std::time::SystemTime) -> Option<std::time::Duration> {
        let ms = u64::try_from(self.timestamp()?).ok()?;
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        Some(now.duration_since(at).unwrap_or_default())
    }

    /// The record key, `None` for a null key.
    pub fn key(&self) -> Option<&[u8]> {
        let r = &self.0;
        r.has_key.then(|| &r.data[..r.key_len])
    }

    /// The record value, `None` for a null value (a tombstone).
    pub fn payload(&self) -> Option<&[u8]> {
        let r = &self.0;
        r.has_payload.then(|| &r.data[r.key_len..])
    }

    /// Whether the record has no value: a *tombstone*, which on a compacted topic deletes its
    /// key. Tombstones are handed to handlers like any record; [`json`](Self::json) and
    /// [`text`](Self::text) refuse them with a [`DecodeError`] that says so.
    ///
    /// ```
    /// use sluicegate::Message;
    ///
    /// let deleted = Message::new("prices", 0, 7, Some(b"apple".to_vec()), None);
    /// assert!(deleted.is_tombstone() && deleted.payload().is_none());
    /// let empty = Message::new("prices", 0, 8, Some(b"pear".to_vec()), Some(Vec::new()));
    /// assert!(!empty.is_tombstone(), "an empty value is a value");
    /// ```
    pub fn is_tombstone(&self) -> bool {
        !self.0.has_payload
    }

    /// Decodes the record value as JSON into `T`. A null value (a tombstone) reads as JSON
    /// `null`, so `Option<T>` and [`serde_json::Value`] accept it and other types refuse it.
    ///
    /// The error names the record and what was wrong. Returned with `?` from a handler it is a
    /// [`ErrorKind::Decode`](crate::ErrorKind::Decode) failure: never retried, since the same
    /// bytes would fail the same way (see [`HandlerError`](crate::HandlerError)).
    ///
    /// ```
    /// use sluicegate::Message;
    ///
    /// let msg = Message::new("orders", 3, 1200, None, Some(b"not json".to_vec()));
    /// let err = msg.json::<serde_json::Value>().unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "cannot decode the value of orders/3 at offset 1200 as JSON (serde_json::value::Value): \
    ///      expected ident at line 1 column 2"
    /// );
    /// let tombstone = Message::new("orders", 3, 1201, None, None);
    /// assert_eq!(tombstone.json::<Option<u64>>().unwrap(), None);
    /// assert!(tombstone.json::<u64>().unwrap_err().is_tombstone());
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_slice(self.payload().unwrap_or(b"null")).map_err(|e| {
            self.decode_error(
                Format::Json(std::any::type_name::<T>()),
                DecodeCause::Json(e),
            )
        })
    }

    /// The record value as UTF-8 text. A null value (a tombstone) or bytes that are not UTF-8
    /// fail with a [`DecodeError`] naming the record, which `?` in a handler turns into a
    /// [`ErrorKind::Decode`](crate::ErrorKind::Decode) failure (never retried).
    ///
    /// ```
    /// use sluicegate::Message;
    ///
    /// let msg = Message::new("names", 0, 7, None, Some("Zoë".as_bytes().to_vec()));
    /// assert_eq!(msg.text().unwrap(), "Zoë");
    /// let bad = Message::new("names", 0, 8, None, Some(vec![0xff, 0xfe]));
    /// assert!(bad.text().unwrap_err().to_string().starts_with(
    ///     "cannot decode the value of names/0 at offset 8 as UTF-8 text: invalid utf-8"));
    /// ```
    pub fn text(&self) -> Result<&str, DecodeError> {
        let Some(bytes) = self.payload() else {
            return Err(self.decode_error(Format::Text, DecodeCause::Missing));
        };
        std::str::from_utf8(bytes)
            .map_err(|e| self.decode_error(Format::Text, DecodeCause::Utf8(e)))
    }

    /// A [`DecodeError`] for this record's value: what it was to be decoded as, and why not.
    pub(crate) fn decode_error(&self, format: Format, cause: DecodeCause) -> DecodeError {
        DecodeError {
            topic: self.0.topic.clone(),
            partition: self.partition(),
            offset: self.offset(),
            tombstone: !self.0.has_payload,
            format,
            cause,
        }
    }

    /// The record headers, in the order the producer wrote them.
    pub fn headers(&self) -> &[Header] {
        &self.0.headers
    }

    /// The value of the first header named `name`, if present and not null.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.0
            .headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value.as_deref())
    }

    /// The bytes this record holds in memory (key, value and headers); what buffer limits count.
    pub fn size(&self) -> usize {
        let r = &self.0;
        r.data.len()
            + r.headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
    }
}

/// A record value that could not be decoded as a handler asked: what [`Message::json`] and
/// [`Message::text`] return on bad input, naming the record (topic, partition, offset), what
/// it was to be decoded as, and why it could not be.
///
/// `?` on it in a handler makes a [`HandlerError`](crate::HandlerError) of kind
/// [`ErrorKind::Decode`](crate::ErrorKind::Decode): not retried, dead-lettered when a
/// dead-letter topic is configured, and otherwise the record stops its partition (see
/// [`ConsumerBuilder::dead_letter`](crate::ConsumerBuilder::dead_letter)).
#[derive(Debug)]
pub struct DecodeError {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    tombstone: bool,
    format: Format,
    cause: DecodeCause,
}

/// What a value was to be decoded as.
#[derive(Debug)]
pub(crate) enum Format {
    /// JSON, into the type named.
    Json(&'static str),
    /// UTF-8 text.
    Text,
}

/// Why a value could not be decoded.
#[derive(Debug)]
pub(crate) enum DecodeCause {
    Json(serde_json::Error),
    Utf8(std::str::Utf8Error),
    /// The record has no value (a tombstone).
    Missing,
}

impl DecodeError {
    /// The topic of the record.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition of the record.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The offset of the record.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Whether the record has no value at all (a tombstone).
    pub fn is_tombstone(&self) -> bool {
        self.tombstone
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot decode the value of {}/{} at offset {} as ",
            self.topic, self.partition, self.offset
        )?;
        match self.format {
            Format::Json(into) => write!(f, "JSON ({into}): ")?,
            Format::Text => f.write_str("UTF-8 text: ")?,
        }
        match (&self.cause, self.tombstone) {
            (DecodeCause::Json(e), true) => {
                write!(
                    f,
                    "the record has no value (a tombstone), read as JSON null: {e}"
                )
            }
            (DecodeCause::Json(e), false) => write!(f, "{e}"),
            (DecodeCause::Utf8(e), _) => write!(f, "{e}"),
            (DecodeCause::Missing, _) => f.write_str("the record has no value (a tombstone)"),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            DecodeCause::Json(e) => Some(e),
            DecodeCause::Utf8(e) => Some(e),
            DecodeCause::Missing => None,
        }
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Payloads may hold personal data: show where the record is, not what it says.
        f.debug_struct("Message")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("timestamp", &self.timestamp())
            .field("key_len", &self.key().map(<[u8]>::len))
            .field("payload_len", &self.payload().map(<[u8]>::len))
            .field("headers", &self.0.headers.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_empty_keys_and_values_stay_distinct() {
        let m = Message::new("t", 0, 1, None, Some(b"value".to_vec()));
        assert_eq!((m.key(), m.payload()), (None, Some(&b"value"[..])));
        let m = Message::new("t", 0, 1, Some(Vec::new()), None);
        assert_eq!((m.key(), m.payload()), (Some(&b""[..]), None));
        let m = Message::new("t", 0, 1, Some(b"k".to_vec()), Some(b"v".to_vec()));
        assert_eq!(
            (m.key(), m.payload(), m.size()),
            (Some(&b"k"[..]), Some(&b"v"[..]), 2)
        );
    }

    #[test]
    fn headers_are_found_by_name_and_json_decodes_the_value() {
        let m = Message::new("t", 0, 1, None, Some(br#"{"n":3}"#.to_vec())).with_headers(vec![
            Header {
                key: "trace".into(),
                value: Some(Bytes::from_static(b"abc")),
            },
        ]);
        assert_eq!(m.header("trace"), Some(&b"abc"[..]));
        assert_eq!(m.header("other"), None);
        assert_eq!(m.json::<serde_json::Value>().unwrap()["n"], 3);
        assert!(Message::new("t", 0, 1, None, Some(b"{".to_vec()))
            .json::<serde_json::Value>()
            .is_err());
    }

    #[test]
    fn decode_errors_name_the_record_the_target_and_the_cause() {
        #[derive(Debug, serde::Deserialize)]
        struct Order {
            #[allow(dead_code)]
            id: u64,
        }
        let wrong = Message::new("orders", 2, 40, None, Some(br#"{"id":"x"}"#.to_vec()));
        let e = wrong.json::<Order>().unwrap_err();
        assert_eq!((e.topic(), e.partition(), e.offset()), ("orders", 2, 40));
        assert!(!e.is_tombstone());
        let text = e.to_string();
        assert!(
            text.starts_with("cannot decode the value of orders/2 at offset 40 as JSON (")
                && text.contains("Order): invalid type: string \"x\", expected u64"),
            "{text}"
        );
        assert!(std::error::Error::source(&e).is_some());

        let tombstone = Message::new("orders", 2, 41, Some(b"k".to_vec()), None);
        let e = tombstone.json::<Order>().unwrap_err();
        assert!(e.is_tombstone());
        assert!(
            e.to_string().contains(
                "the record has no value (a tombstone), read as JSON null: invalid type: null"
            ),
            "{e}"
        );
        let e = tombstone.text().unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot decode the value of orders/2 at offset 41 as UTF-8 text: the record has no \
             value (a tombstone)"
        );
        assert!(Message::new("t", 0, 1, None, Some(vec![b'a', 0xc3]))
            .text()
            .unwrap_err()
            .to_string()
            .ends_with("incomplete utf-8 byte sequence from index 1"));
        assert_eq!(
            Message::new("t", 0, 1, None, Some(Vec::new()))
                .text()
                .unwrap(),
            ""
        );
    }
}
