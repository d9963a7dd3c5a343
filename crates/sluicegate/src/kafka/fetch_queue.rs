//! A queue that the poll loop takes fetched messages from in batches.
//!
//! rust-rdkafka hands out one message per `poll`, each wrapped in an event and a reference
//! count. librdkafka can do better: each partition's fetch queue can be forwarded to a queue
//! of the application's (it keeps that forward when the partition is assigned, see
//! `RD_KAFKA_Q_F_FWD_APP`), and `rd_kafka_consume_batch_queue` takes many messages from it in
//! one call. Rebalances, errors and statistics stay on the consumer's own queue, which the
//! poll loop still polls, so rust-rdkafka's callbacks run as before.
//!
//! This is the library's only `unsafe` code: the raw calls sit behind [`FetchQueue`] and
//! [`Fetched`], which are safe to use.
#![allow(unsafe_code)]

use std::ffi::{c_void, CStr, CString};
use std::ptr::NonNull;

use bytes::Bytes;
use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::types::RDKafkaErrorCode;

use super::error::client_error;
use crate::message::{Header, Message};
use crate::ClientError;

/// The most messages one [`FetchQueue::take`] returns.
const MAX_TAKE: usize = 512;

/// An error librdkafka hands out in place of a record.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// The end of a partition's log was reached (with `enable.partition.eof`).
    PartitionEnd(i32),
    /// The client cannot go on.
    Fatal(ClientError),
    /// Any other consumer error; librdkafka goes on by itself.
    Other(ClientError),
}

impl FetchError {
    pub(crate) fn of(e: KafkaError) -> Self {
        match e {
            KafkaError::PartitionEOF(p) => FetchError::PartitionEnd(p),
            e @ KafkaError::MessageConsumptionFatal(_) => FetchError::Fatal(client_error(e)),
            e => FetchError::Other(client_error(e)),
        }
    }
}

/// A fetched record, as the poll loop reads it before it decides to copy it: its place first,
/// the rest only for records it keeps.
pub(crate) trait Record {
    /// The topic's name, as bytes (no UTF-8 check per message).
    fn topic_bytes(&self) -> &[u8];
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    /// Copies the record into a [`Message`] of `topic` (the shared name of its topic).
    fn to_message(&self, topic: std::sync::Arc<str>) -> Message;
}

impl Record for BorrowedMessage<'_> {
    fn topic_bytes(&self) -> &[u8] {
        rdkafka::Message::topic(self).as_bytes()
    }

    fn partition(&self) -> i32 {
        rdkafka::Message::partition(self)
    }

    fn offset(&self) -> i64 {
        rdkafka::Message::offset(self)
    }

    fn to_message(&self, topic: std::sync::Arc<str>) -> Message {
        let headers = self.headers().map_or_else(Vec::new, |hs| {
            hs.iter()
                .map(|h| Header {
                    key: h.key.to_string(),
                    value: h.value.map(Bytes::copy_from_slice),
                })
                .collect()
        });
        Message::from_parts(
            topic,
            rdkafka::Message::partition(self),
            rdkafka::Message::offset(self),
            self.timestamp().to_millis(),
            self.key(),
            self.payload(),
            headers,
        )
    }
}

/// A queue of the application's that partitions' fetch queues are forwarded to.
pub(crate) struct FetchQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    /// Kept alive while librdkafka may call it (until `Drop` turns it off). Boxed twice
    /// because a `dyn Fn` pointer is fat and librdkafka keeps one thin pointer.
    _nonempty: Box<Box<dyn Fn() + Send + Sync>>,
}

// SAFETY: librdkafka's queues are thread safe; the queue handle is owned by this value alone.
unsafe impl Send for FetchQueue {}
// SAFETY: as above: every call on the handle takes librdkafka's own lock.
unsafe impl Sync for FetchQueue {}

impl FetchQueue {
    /// Creates an empty queue of `consumer`'s client; `nonempty` is called whenever the queue
    /// goes from empty to not empty, on whichever thread adds to it and under librdkafka's
    /// queue lock: it must be quick and must not call librdkafka.
    ///
    /// The queue must be dropped before the client is: see `RuntimeConsumer`, which keeps
    /// that order.
    pub fn new<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        nonempty: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        unsafe extern "C" fn on_nonempty(_: *mut rd::rd_kafka_t, opaque: *mut c_void) {
            let f = opaque as *const Box<dyn Fn() + Send + Sync>;
            // SAFETY: `opaque` is the boxed callback, alive until `Drop` turns this off.
            unsafe { (*f)() }
        }
        // SAFETY: the client pointer is valid for the consumer's life; a new queue is never
        // null (librdkafka aborts when out of memory).
        let queue = unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) };
        let queue = NonNull::new(queue).expect("rd_kafka_queue_new returns a queue");
        let nonempty: Box<Box<dyn Fn() + Send + Sync>> = Box::new(Box::new(nonempty));
        // SAFETY: the opaque pointer stays valid until `Drop` clears the callback.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(
                queue.as_ptr(),
                Some(on_nonempty),
                &*nonempty as *const Box<dyn Fn() + Send + Sync> as *mut c_void,
            );
        }
        FetchQueue {
            queue,
            _nonempty: nonempty,
        }
    }

    /// Sends the messages of `topic`/`partition` to this queue from now on. Done before the
    /// partition is assigned, so that none of its messages go to the consumer's queue first;
    /// librdkafka drops the forward when the partition's fetching stops (a revocation), so
    /// it is set again at each assignment. Returns `false` if librdkafka has no such partition
    /// (its messages then arrive on the consumer's queue, as without this queue).
    pub fn forward<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
    ) -> bool {
        let Ok(topic) = CString::new(topic) else {
            return false;
        };
        // SAFETY: valid client and topic pointers; the partition's queue handle is released
        // at once (the forward lives on the partition's queue, not on the handle).
        unsafe {
            let partition_queue = rd::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
            );
            if partition_queue.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(partition_queue, self.queue.as_ptr());
            rd::rd_kafka_queue_destroy(partition_queue);
        }
        true
    }

    /// Takes up to `max` (at most [`MAX_TAKE`]) messages waiting, without blocking, and gives
    /// each to `each` in the order fetched: a record, or the error librdkafka reported for its
    /// partition. Returns how many it took.
    pub fn take(&self, max: usize, mut each: impl FnMut(Result<Fetched<'_>, FetchError>)) -> usize {
        let mut taken = [std::ptr::null_mut::<rd::rd_kafka_message_t>(); MAX_TAKE];
        // SAFETY: `taken` has room for `max.min(MAX_TAKE)` pointers; a zero timeout never
        // blocks.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                0,
                taken.as_mut_ptr(),
                max.min(MAX_TAKE),
            )
        };
        let Ok(n) = usize::try_from(n) else {
            return 0;
        };
        // Destroys every message taken, also if `each` panics.
        let taken = Taken(&mut taken[..n]);
        for &message in taken.0.iter() {
            // Valid until `Taken` drops: librdkafka returned `n` messages.
            let message = Fetched(message, std::marker::PhantomData);
            each(match message.error() {
                None => Ok(message),
                Some(e) => Err(FetchError::of(e)),
            });
        }
        n
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: the queue is ours; the callback is turned off before its box is freed.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, std::ptr::null_mut());
            rd::rd_kafka_queue_destroy(self.queue.as_ptr());
        }
    }
}

/// Messages taken from librdkafka, destroyed when this drops.
struct Taken<'a>(&'a mut [*mut rd::rd_kafka_message_t]);

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        for &message in self.0.iter() {
            // SAFETY: each was returned by `rd_kafka_consume_batch_queue` and is destroyed once.
            unsafe { rd::rd_kafka_message_destroy(message) }
        }
    }
}

/// One message taken from a [`FetchQueue`], valid for the call that reads it. A pointer, not a
/// reference: librdkafka writes to the message when it parses its headers.
pub(crate) struct Fetched<'a>(
    *const rd::rd_kafka_message_t,
    std::marker::PhantomData<&'a ()>,
);

impl Fetched<'_> {
    fn get(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: the message lives while `self` does (see `FetchQueue::take`), and nothing
        // writes to it while this borrow is used.
        unsafe { &*self.0 }
    }

    fn error(&self) -> Option<KafkaError> {
        use rd::rd_kafka_resp_err_t as E;
        match self.get().err {
            E::RD_KAFKA_RESP_ERR_NO_ERROR => None,
            E::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                Some(KafkaError::PartitionEOF(self.get().partition))
            }
            E::RD_KAFKA_RESP_ERR__FATAL => Some(KafkaError::MessageConsumptionFatal(
                RDKafkaErrorCode::from(self.get().err),
            )),
            code => Some(KafkaError::MessageConsumption(RDKafkaErrorCode::from(code))),
        }
    }

    /// `len` bytes at `ptr`, or `None` for a null pointer (a null key or value).
    fn bytes(&self, ptr: *const c_void, len: usize) -> Option<&[u8]> {
        // SAFETY: librdkafka's key and payload pointers are valid for their lengths while the
        // message lives, which outlives `self`.
        (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
    }

    fn timestamp(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a valid message and an out pointer to a local.
        let millis = unsafe { rd::rd_kafka_message_timestamp(self.0, &mut kind) };
        match kind {
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => None,
            _ => Some(millis),
        }
    }

    fn headers(&self) -> Vec<Header> {
        let mut headers = std::ptr::null_mut();
        // SAFETY: a valid message; librdkafka parses its headers on the first call, and
        // answers `NOENT` without parsing for a record that has none.
        let found = unsafe { rd::rd_kafka_message_headers(self.0, &mut headers) };
        if found != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
            return Vec::new();
        }
        let mut all = Vec::new();
        for i in 0.. {
            let mut name = std::ptr::null();
            let mut value = std::ptr::null();
            let mut len = 0;
            // SAFETY: `headers` belongs to the message; the pointers it sets stay valid while
            // the message lives.
            let got =
                unsafe { rd::rd_kafka_header_get_all(headers, i, &mut name, &mut value, &mut len) };
            if got != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                break;
            }
            // SAFETY: header names are NUL-terminated strings owned by the headers.
            let name = unsafe { CStr::from_ptr(name) };
            all.push(Header {
                key: String::from_utf8_lossy(name.to_bytes()).into_owned(),
                value: self.bytes(value, len).map(Bytes::copy_from_slice),
            });
        }
        all
    }
}

impl Record for Fetched<'_> {
    fn topic_bytes(&self) -> &[u8] {
        let topic = self.get().rkt;
        // A fetched message always has its topic; an error may not (it is not a `Fetched`).
        debug_assert!(!topic.is_null(), "a fetched message without a topic");
        // SAFETY: a message's topic handle and its NUL-terminated name live as long as it.
        unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(topic)) }.to_bytes()
    }

    fn partition(&self) -> i32 {
        self.get().partition
    }

    fn offset(&self) -> i64 {
        self.get().offset
    }

    fn to_message(&self, topic: std::sync::Arc<str>) -> Message {
        Message::from_parts(
            topic,
            self.get().partition,
            self.get().offset,
            self.timestamp(),
            self.bytes(self.get().key, self.get().key_len),
            self.bytes(self.get().payload, self.get().len),
            self.headers(),
        )
    }
}
