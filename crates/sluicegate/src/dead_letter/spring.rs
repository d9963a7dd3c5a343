//! Dead letters written by Spring Kafka's `DeadLetterPublishingRecoverer`, read back so that
//! teams moving to Sluicegate can inspect and replay them.
//!
//! Spring Kafka keeps the record's key, value and headers, and adds the [`headers`] below
//! (`KafkaHeaders.DLT_*`): texts as UTF-8, the partition as a 4-byte and the offset and
//! timestamp as 8-byte big-endian integers (Java's `ByteBuffer.putInt` / `putLong`).
//!
//! A record dead-lettered more than once (Spring's retry topics, or a replayed record that
//! failed again) may carry each `kafka_dlt-original-*` header several times, oldest first:
//! the first one names where the record was consumed first, which is where a replay sends it.
//! The exception headers are replaced at each hop by default; where several are kept, the last
//! one is the latest failure.

use crate::Header;

/// The header names Spring Kafka's `DeadLetterPublishingRecoverer` adds
/// (`org.springframework.kafka.support.KafkaHeaders.DLT_*`).
pub mod headers {
    /// The topic the record was consumed from (UTF-8).
    pub const ORIGINAL_TOPIC: &str = "kafka_dlt-original-topic";
    /// Its partition (4-byte big-endian integer).
    pub const ORIGINAL_PARTITION: &str = "kafka_dlt-original-partition";
    /// Its offset (8-byte big-endian integer).
    pub const ORIGINAL_OFFSET: &str = "kafka_dlt-original-offset";
    /// Its timestamp, ms since the epoch (8-byte big-endian integer).
    pub const ORIGINAL_TIMESTAMP: &str = "kafka_dlt-original-timestamp";
    /// Its timestamp's type, `CreateTime` or `LogAppendTime` (UTF-8).
    pub const ORIGINAL_TIMESTAMP_TYPE: &str = "kafka_dlt-original-timestamp-type";
    /// The consumer group that failed it (UTF-8), when Spring knew it.
    pub const ORIGINAL_CONSUMER_GROUP: &str = "kafka_dlt-original-consumer-group";
    /// The exception's class name (UTF-8), often Spring's
    /// `ListenerExecutionFailedException` wrapping the listener's own.
    pub const EXCEPTION_FQCN: &str = "kafka_dlt-exception-fqcn";
    /// The class name of the exception's cause (UTF-8), when it had one.
    pub const EXCEPTION_CAUSE_FQCN: &str = "kafka_dlt-exception-cause-fqcn";
    /// The exception's message (UTF-8), when it had one.
    pub const EXCEPTION_MESSAGE: &str = "kafka_dlt-exception-message";
    /// The exception's stack trace (UTF-8).
    pub const EXCEPTION_STACKTRACE: &str = "kafka_dlt-exception-stacktrace";
    /// The exception's class name when the key could not be deserialized (UTF-8).
    pub const KEY_EXCEPTION_FQCN: &str = "kafka_dlt-key-exception-fqcn";
    /// The exception's message when the key could not be deserialized (UTF-8).
    pub const KEY_EXCEPTION_MESSAGE: &str = "kafka_dlt-key-exception-message";
    /// The exception's stack trace when the key could not be deserialized (UTF-8).
    pub const KEY_EXCEPTION_STACKTRACE: &str = "kafka_dlt-key-exception-stacktrace";

    /// The prefix of every header above.
    pub const PREFIX: &str = "kafka_dlt-";
    /// The prefix of the headers Spring Kafka's retry topics add (`retry_topic-attempts`,
    /// `retry_topic-backoff-timestamp`, ...). A replayed record must not carry them: Spring
    /// would count its earlier attempts and could send it straight back to the dead-letter
    /// topic.
    pub const RETRY_TOPIC_PREFIX: &str = "retry_topic-";

    /// Whether `name` is one of the headers Spring Kafka adds on the way to a dead-letter
    /// topic (dead-letter or retry-topic headers), which a replay removes.
    pub fn is_added(name: &str) -> bool {
        name.starts_with(PREFIX) || name.starts_with(RETRY_TOPIC_PREFIX)
    }
}

/// A dead letter written by Spring Kafka, read back from its [`headers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpringDeadLetter {
    /// The topic it was first consumed from.
    pub original_topic: String,
    /// Its partition there, unless Spring was told not to write it.
    pub original_partition: Option<i32>,
    /// Its offset there, unless Spring was told not to write it.
    pub original_offset: Option<i64>,
    /// Its timestamp there (ms since the epoch), when written.
    pub original_timestamp: Option<i64>,
    /// The consumer group that failed it, when written.
    pub group: Option<String>,
    /// The latest exception's class name (of the value's exception, or else of the key's).
    pub exception_class: Option<String>,
    /// The class name of that exception's cause, when it had one.
    pub exception_cause_class: Option<String>,
    /// That exception's message (of the value's exception, or else of the key's).
    pub exception_message: Option<String>,
    /// The record's own headers: every header but the dead-letter and retry-topic ones
    /// (see [`headers::is_added`]).
    pub original_headers: Vec<Header>,
}

impl SpringDeadLetter {
    /// Whether `message_headers` hold any of Spring Kafka's dead-letter headers.
    pub fn is_spring(message_headers: &[Header]) -> bool {
        message_headers
            .iter()
            .any(|h| h.key.starts_with(headers::PREFIX))
    }

    /// Reads Spring Kafka's dead-letter headers. `kafka_dlt-original-topic` is required; the
    /// error names the first header that is missing or malformed.
    pub fn from_headers(message_headers: &[Header]) -> Result<Self, String> {
        let values = |name: &'static str| {
            message_headers
                .iter()
                .filter(move |h| h.key == name)
                .filter_map(|h| h.value.as_deref())
        };
        let first = |name: &'static str| values(name).next();
        let last = |name: &'static str| values(name).last();
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let original_topic = first(headers::ORIGINAL_TOPIC)
            .map(text)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("header `{}` is missing", headers::ORIGINAL_TOPIC))?;
        let exception_class = last(headers::EXCEPTION_FQCN)
            .or_else(|| last(headers::KEY_EXCEPTION_FQCN))
            .map(text);
        let exception_message = last(headers::EXCEPTION_MESSAGE)
            .or_else(|| last(headers::KEY_EXCEPTION_MESSAGE))
            .map(text);
        Ok(SpringDeadLetter {
            original_topic,
            original_partition: first(headers::ORIGINAL_PARTITION)
                .map(|v| big_endian(headers::ORIGINAL_PARTITION, v).map(i32::from_be_bytes))
                .transpose()?,
            original_offset: first(headers::ORIGINAL_OFFSET)
                .map(|v| big_endian(headers::ORIGINAL_OFFSET, v).map(i64::from_be_bytes))
                .transpose()?,
            original_timestamp: first(headers::ORIGINAL_TIMESTAMP)
                .map(|v| big_endian(headers::ORIGINAL_TIMESTAMP, v).map(i64::from_be_bytes))
                .transpose()?,
            group: first(headers::ORIGINAL_CONSUMER_GROUP).map(text),
            exception_class,
            exception_cause_class: last(headers::EXCEPTION_CAUSE_FQCN).map(text),
            exception_message,
            original_headers: message_headers
                .iter()
                .filter(|h| !headers::is_added(&h.key))
                .cloned()
                .collect(),
        })
    }

    /// Whether the exception or its cause is of class `class`, given by its full name
    /// (`java.lang.IllegalStateException`) or its simple name (`IllegalStateException`; for a
    /// nested class also `Outer$Inner` or `Inner`).
    ///
    /// ```
    /// use sluicegate::dead_letter::spring::SpringDeadLetter;
    /// use sluicegate::Header;
    ///
    /// let record = SpringDeadLetter::from_headers(&[
    ///     Header::new("kafka_dlt-original-topic", Some(b"orders")),
    ///     Header::new("kafka_dlt-exception-fqcn",
    ///         Some(b"org.springframework.kafka.listener.ListenerExecutionFailedException")),
    ///     Header::new("kafka_dlt-exception-cause-fqcn", Some(b"com.acme.Billing$Declined")),
    /// ]).unwrap();
    /// assert!(record.failed_with("ListenerExecutionFailedException"));
    /// assert!(record.failed_with("com.acme.Billing$Declined"));
    /// assert!(record.failed_with("Billing$Declined") && record.failed_with("Declined"));
    /// assert!(!record.failed_with("Billing") && !record.failed_with("acme.Billing$Declined"));
    /// ```
    pub fn failed_with(&self, class: &str) -> bool {
        [&self.exception_class, &self.exception_cause_class]
            .into_iter()
            .flatten()
            .any(|name| class_matches(name, class))
    }
}

/// Whether the Java class `name` (fully qualified) is `class`: the same full name, or the
/// same simple name.
fn class_matches(name: &str, class: &str) -> bool {
    if class.is_empty() {
        return false;
    }
    let simple = name.rsplit('.').next().unwrap_or(name);
    let innermost = simple.rsplit('$').next().unwrap_or(simple);
    name == class || simple == class || innermost == class
}

/// `value` as the `N` bytes of a big-endian integer, or an error naming the header.
fn big_endian<const N: usize>(name: &str, value: &[u8]) -> Result<[u8; N], String> {
    value.try_into().map_err(|_| {
        format!(
            "header `{name}` is not a big-endian integer of {N} bytes (it has {})",
            value.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(key: &str, value: &[u8]) -> Header {
        Header::new(key, Some(value))
    }

    #[test]
    fn reads_every_header_with_spring_encodings() {
        let r = SpringDeadLetter::from_headers(&[
            h("trace-id", b"t-1"),
            Header::new("null-header", None),
            h("kafka_dlt-original-topic", b"orders"),
            h("kafka_dlt-original-partition", &3i32.to_be_bytes()),
            h("kafka_dlt-original-offset", &4_294_967_298i64.to_be_bytes()),
            h(
                "kafka_dlt-original-timestamp",
                &1_700_000_000_123i64.to_be_bytes(),
            ),
            h("kafka_dlt-original-timestamp-type", b"CreateTime"),
            h("kafka_dlt-original-consumer-group", b"billing"),
            h(
                "kafka_dlt-exception-fqcn",
                b"java.lang.IllegalStateException",
            ),
            h("kafka_dlt-exception-message", "caf\u{e9} closed".as_bytes()),
            h(
                "kafka_dlt-exception-stacktrace",
                b"java.lang.IllegalStateException\n\tat ...",
            ),
            h("retry_topic-attempts", &2i32.to_be_bytes()),
        ])
        .unwrap();
        assert_eq!(r.original_topic, "orders");
        assert_eq!(r.original_partition, Some(3));
        assert_eq!(r.original_offset, Some(4_294_967_298));
        assert_eq!(r.original_timestamp, Some(1_700_000_000_123));
        assert_eq!(r.group.as_deref(), Some("billing"));
        assert_eq!(
            r.exception_class.as_deref(),
            Some("java.lang.IllegalStateException")
        );
        assert_eq!(r.exception_cause_class, None);
        assert_eq!(r.exception_message.as_deref(), Some("caf\u{e9} closed"));
        assert_eq!(
            r.original_headers,
            vec![h("trace-id", b"t-1"), Header::new("null-header", None)]
        );
    }

    #[test]
    fn the_first_original_and_the_last_exception_win() {
        let r = SpringDeadLetter::from_headers(&[
            h("kafka_dlt-original-topic", b"orders"),
            h("kafka_dlt-original-offset", &7i64.to_be_bytes()),
            h("kafka_dlt-exception-fqcn", b"a.First"),
            h("kafka_dlt-original-topic", b"orders-retry-0"),
            h("kafka_dlt-original-offset", &1i64.to_be_bytes()),
            h("kafka_dlt-exception-fqcn", b"a.Second"),
        ])
        .unwrap();
        assert_eq!(
            (r.original_topic.as_str(), r.original_offset),
            ("orders", Some(7))
        );
        assert_eq!(r.exception_class.as_deref(), Some("a.Second"));
        assert!(r.original_headers.is_empty());
    }

    #[test]
    fn a_key_exception_stands_in_for_a_value_exception() {
        let r = SpringDeadLetter::from_headers(&[
            h("kafka_dlt-original-topic", b"orders"),
            h("kafka_dlt-key-exception-fqcn", b"x.KeyBroken"),
            h("kafka_dlt-key-exception-message", b"bad key"),
        ])
        .unwrap();
        assert_eq!(r.exception_class.as_deref(), Some("x.KeyBroken"));
        assert_eq!(r.exception_message.as_deref(), Some("bad key"));
        assert_eq!((r.original_partition, r.original_offset), (None, None));
    }

    #[test]
    fn malformed_or_missing_headers_are_named() {
        let err = SpringDeadLetter::from_headers(&[
            h("kafka_dlt-original-topic", b"orders"),
            h("kafka_dlt-original-partition", b"3"),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            "header `kafka_dlt-original-partition` is not a big-endian integer of 4 bytes (it \
             has 1)"
        );
        let err = SpringDeadLetter::from_headers(&[
            h("kafka_dlt-original-topic", b"orders"),
            h("kafka_dlt-original-offset", &7i32.to_be_bytes()),
        ])
        .unwrap_err();
        assert!(
            err.contains("`kafka_dlt-original-offset` is not a big-endian integer of 8 bytes"),
            "{err}"
        );
        let err =
            SpringDeadLetter::from_headers(&[h("kafka_dlt-exception-fqcn", b"x.Y")]).unwrap_err();
        assert_eq!(err, "header `kafka_dlt-original-topic` is missing");
    }

    #[test]
    fn class_names_match_in_full_or_by_simple_name_only() {
        assert!(class_matches(
            "java.lang.IllegalStateException",
            "IllegalStateException"
        ));
        assert!(class_matches(
            "java.lang.IllegalStateException",
            "java.lang.IllegalStateException"
        ));
        assert!(!class_matches(
            "java.lang.IllegalStateException",
            "IllegalState"
        ));
        assert!(!class_matches(
            "java.lang.IllegalStateException",
            "lang.IllegalStateException"
        ));
        assert!(!class_matches("java.lang.IllegalStateException", ""));
        assert!(class_matches("Plain", "Plain"));
    }
}
