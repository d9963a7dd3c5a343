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
    key: Option<Bytes>,
    payload: Option<Bytes>,
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
            key.map(Bytes::from),
            payload.map(Bytes::from),
            Vec::new(),
        )
    }

    pub(crate) fn from_parts(
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<Bytes>,
        payload: Option<Bytes>,
        headers: Vec<Header>,
    ) -> Self {
        Message(Arc::new(Record {
            topic,
            partition,
            offset,
            timestamp,
            key,
            payload,
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
            r.key.clone(),
            r.payload.clone(),
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

    /// The record key, `None` for a null key.
    pub fn key(&self) -> Option<&[u8]> {
        self.0.key.as_deref()
    }

    /// The record value, `None` for a null value (a tombstone).
    pub fn payload(&self) -> Option<&[u8]> {
        self.0.payload.as_deref()
    }

    /// The record value as shared bytes, without copying.
    pub fn payload_bytes(&self) -> Option<Bytes> {
        self.0.payload.clone()
    }

    /// Decodes the record value as JSON into `T`. A null value decodes as JSON `null`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.payload().unwrap_or(b"null"))
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
        r.key.as_ref().map_or(0, Bytes::len)
            + r.payload.as_ref().map_or(0, Bytes::len)
            + r.headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
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
