//! The [`Handler`] trait, [`handler_fn`], and what a handler may answer.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::message::{DecodeCause, DecodeError, Format};
use crate::Message;

/// What a handler returns: `Ok(())` when the message is handled, or a [`HandlerError`]
/// that says what the runtime should do next.
pub type HandlerResult = Result<(), HandlerError>;

/// Handles one message at a time.
///
/// The runtime calls `handle` from Tokio tasks; a handler is shared between them, so it takes
/// `&self`. Implement it for a type that holds your clients and state, or wrap an async closure
/// with [`handler_fn`].
///
/// ```
/// use sluicegate::{Handler, HandlerResult, Message};
///
/// struct CountBytes;
///
/// impl Handler for CountBytes {
///     async fn handle(&self, msg: Message) -> HandlerResult {
///         let n = msg.payload().map_or(0, <[u8]>::len);
///         tracing::debug!(n, "got bytes");
///         Ok(())
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Handles `message`. The message is finished (and may be committed once all earlier
    /// offsets of its partition are finished) when the returned future resolves to `Ok(())`
    /// or to a skip; any other error goes to the retry policy.
    fn handle(&self, message: Message) -> impl Future<Output = HandlerResult> + Send;
}

/// A [`Handler`] made from an async closure; see [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F>(F);

/// Wraps an async closure `Fn(Message) -> Future<Output = HandlerResult>` as a [`Handler`].
///
/// ```
/// use sluicegate::{handler_fn, Message};
///
/// let handler = handler_fn(|msg: Message| async move {
///     let order: serde_json::Value = msg.json()?;
///     tracing::info!(%order, "order received");
///     Ok(())
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send,
{
    HandlerFn(f)
}

impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send,
{
    fn handle(&self, message: Message) -> impl Future<Output = HandlerResult> + Send {
        (self.0)(message)
    }
}

/// Handles messages a batch at a time: bulk database writes, bulk inference, one request for
/// many records.
///
/// The runtime calls `handle_batch` with batches cut by [`BatchLimits`](crate::BatchLimits).
/// `Ok(())` finishes every message of the batch. An error fails the whole batch, which goes to
/// the retry policy; once that gives up, the runtime isolates the failing records by
/// bisecting the batch (halves, then quarters, down to single records), so that only the
/// records that fail on their own are dead-lettered and the rest finish.
///
/// Handlers may be called again with records they saw in a failed batch; writes should be
/// idempotent (upserts) or go through the consumer's [`Output`](crate::Output).
///
/// ```
/// use sluicegate::{BatchHandler, HandlerResult, Message};
///
/// struct BulkInsert;
///
/// impl BatchHandler for BulkInsert {
///     async fn handle_batch(&self, batch: Vec<Message>) -> HandlerResult {
///         let rows: Vec<&[u8]> = batch.iter().filter_map(Message::payload).collect();
///         tracing::debug!(rows = rows.len(), "one insert");
///         Ok(())
///     }
/// }
/// ```
pub trait BatchHandler: Send + Sync + 'static {
    /// Handles `batch`: messages in offset order within each partition.
    fn handle_batch(&self, batch: Vec<Message>) -> impl Future<Output = HandlerResult> + Send;
}

/// A [`BatchHandler`] made from an async closure; see [`batch_handler_fn`].
#[derive(Clone)]
pub struct BatchHandlerFn<F>(F);

/// Wraps an async closure `Fn(Vec<Message>) -> Future<Output = HandlerResult>` as a
/// [`BatchHandler`].
///
/// ```
/// use sluicegate::{batch_handler_fn, Message};
///
/// let handler = batch_handler_fn(|batch: Vec<Message>| async move {
///     tracing::info!(n = batch.len(), "batch");
///     Ok(())
/// });
/// # let _ = handler;
/// ```
pub fn batch_handler_fn<F, Fut>(f: F) -> BatchHandlerFn<F>
where
    F: Fn(Vec<Message>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send,
{
    BatchHandlerFn(f)
}

impl<F, Fut> BatchHandler for BatchHandlerFn<F>
where
    F: Fn(Vec<Message>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send,
{
    fn handle_batch(&self, batch: Vec<Message>) -> impl Future<Output = HandlerResult> + Send {
        (self.0)(batch)
    }
}

/// A [`BatchHandler`] as the consumer runs it; made by
/// [`ConsumerBuilder::build_batch`](crate::ConsumerBuilder::build_batch).
pub struct Batched<B>(pub(crate) B);

/// What a consumer runs: a [`Handler`], or a [`BatchHandler`] (as [`Batched`]). Sealed.
pub trait Work: sealed::Sealed + Send + Sync + 'static {
    #[doc(hidden)]
    fn call(&self, messages: &[Message]) -> impl Future<Output = HandlerResult> + Send;
}

mod sealed {
    pub trait Sealed {}
    impl<H: super::Handler> Sealed for H {}
    impl<B: super::BatchHandler> Sealed for super::Batched<B> {}
}

impl<H: Handler> Work for H {
    fn call(&self, messages: &[Message]) -> impl Future<Output = HandlerResult> + Send {
        // A message is a shared handle: no copy, and no list to allocate per call.
        let message = messages
            .first()
            .cloned()
            .expect("a handler is called with one message");
        self.handle(message)
    }
}

impl<B: BatchHandler> Work for Batched<B> {
    fn call(&self, messages: &[Message]) -> impl Future<Output = HandlerResult> + Send {
        self.0.handle_batch(messages.to_vec())
    }
}

/// A [`Handler`] that decodes each payload as JSON into `T` before calling `f(value, message)`;
/// see [`json_handler`].
pub struct JsonHandler<T, F> {
    f: F,
    _input: PhantomData<fn() -> T>,
}

/// Wraps an async closure `Fn(T, Message) -> Future<Output = HandlerResult>` that takes the
/// payload decoded from JSON. A payload that does not decode, or is missing (a tombstone, even
/// for an `Option<T>`), fails with [`ErrorKind::Decode`] and a [`DecodeError`] naming the
/// record: it is not retried, and goes to the dead-letter topic when one is configured, with
/// the decode error in its headers (without one, it stops its partition: see
/// [`ConsumerBuilder::dead_letter`](crate::ConsumerBuilder::dead_letter)).
///
/// ```
/// use serde::Deserialize;
/// use sluicegate::{json_handler, Message};
///
/// #[derive(Deserialize)]
/// struct Order { id: u64, amount_cents: i64 }
///
/// let handler = json_handler(|order: Order, _msg: Message| async move {
///     tracing::info!(order.id, order.amount_cents, "order");
///     Ok(())
/// });
/// # let _ = handler;
/// ```
pub fn json_handler<T, F, Fut>(f: F) -> JsonHandler<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(T, Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send,
{
    JsonHandler {
        f,
        _input: PhantomData,
    }
}

impl<T, F, Fut> Handler for JsonHandler<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(T, Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send,
{
    async fn handle(&self, message: Message) -> HandlerResult {
        if message.payload().is_none() {
            let format = Format::Json(std::any::type_name::<T>());
            return Err(HandlerError::decode(
                message.decode_error(format, DecodeCause::Missing),
            ));
        }
        let value = message.json::<T>()?;
        (self.f)(value, message).await
    }
}

/// How the runtime treats a failed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A transient failure (a timeout, an unavailable service): retry with backoff.
    Retryable,
    /// A failure that retrying cannot fix (a record the handler refuses): do not retry.
    Permanent,
    /// Not a failure: the handler chose not to process this message. It is finished as is.
    Skip,
    /// The handler panicked. Treated as retryable.
    Panic,
    /// The handler ran longer than the consumer's handler timeout and was cancelled. Treated
    /// as retryable.
    Timeout,
    /// The payload could not be decoded into the handler's input type: a [`DecodeError`] of
    /// [`Message::json`] or [`Message::text`], a `serde_json` or UTF-8 error returned with `?`,
    /// [`HandlerError::decode`], or [`json_handler`]'s decoding. Never retried: the same bytes
    /// would fail the same way.
    Decode,
}

impl ErrorKind {
    /// A stable lower-case name, as used in logs and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Retryable => "retryable",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Skip => "skip",
            ErrorKind::Panic => "panic",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Decode => "decode",
        }
    }

    /// Whether retrying may help: `false` for permanent and decode errors (and skips).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Retryable | ErrorKind::Panic | ErrorKind::Timeout
        )
    }
}

impl std::str::FromStr for ErrorKind {
    type Err = String;

    /// Parses the name given by [`ErrorKind::as_str`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ErrorKind::Retryable,
            ErrorKind::Permanent,
            ErrorKind::Skip,
            ErrorKind::Panic,
            ErrorKind::Timeout,
            ErrorKind::Decode,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| {
            format!("unknown error kind `{s}`; expected retryable, permanent, skip, panic, timeout or decode")
        })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A handler's failure, with the [`ErrorKind`] that decides what happens next.
///
/// Any `std::error::Error` converts into a `HandlerError`, so `?` works in handlers. The
/// error's type decides its kind:
///
/// | error returned with `?` | kind |
/// |---|---|
/// | [`DecodeError`] (from [`Message::json`], [`Message::text`]) | [`ErrorKind::Decode`] |
/// | `serde_json::Error` (except an I/O error of a reader) | [`ErrorKind::Decode`] |
/// | `std::str::Utf8Error`, `std::string::FromUtf8Error` | [`ErrorKind::Decode`] |
/// | any other `std::error::Error` | [`ErrorKind::Retryable`] |
///
/// Decode errors are never retried. For other formats (Avro, Protobuf, ...) return
/// [`HandlerError::decode`]`(e)`, and [`HandlerError::permanent`]`(e)` for records the handler
/// refuses for good. Like `anyhow::Error`, this type does not itself implement
/// `std::error::Error`, which is what makes the blanket conversion possible.
///
/// ```
/// use sluicegate::{ErrorKind, HandlerError, HandlerResult, Message};
///
/// fn handle(msg: &Message) -> HandlerResult {
///     let _order: serde_json::Value = msg.json()?;
///     Ok(())
/// }
/// let bad = Message::new("orders", 0, 5, None, Some(b"{oops".to_vec()));
/// assert_eq!(handle(&bad).unwrap_err().kind(), ErrorKind::Decode);
///
/// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "database timed out");
/// assert_eq!(HandlerError::from(io).kind(), ErrorKind::Retryable);
/// ```
pub struct HandlerError {
    kind: ErrorKind,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl HandlerError {
    fn with_kind(
        kind: ErrorKind,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        HandlerError {
            kind,
            source: error.into(),
        }
    }

    /// A transient failure: the message will be retried.
    pub fn retryable(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::with_kind(ErrorKind::Retryable, error)
    }

    /// A failure that retrying cannot fix.
    pub fn permanent(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::with_kind(ErrorKind::Permanent, error)
    }

    /// Finishes the message on purpose without handling it; `reason` is logged.
    pub fn skip(reason: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::with_kind(ErrorKind::Skip, reason)
    }

    /// The payload could not be decoded; never retried.
    pub fn decode(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::with_kind(ErrorKind::Decode, error)
    }

    pub(crate) fn panic(message: String) -> Self {
        Self::with_kind(ErrorKind::Panic, message)
    }

    pub(crate) fn timeout(limit: std::time::Duration) -> Self {
        Self::with_kind(
            ErrorKind::Timeout,
            format!("handler did not finish within {limit:?}"),
        )
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The underlying error.
    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl<E> From<E> for HandlerError
where
    E: std::error::Error + Send + Sync + 'static,
{
    /// A [`ErrorKind::Decode`] failure for decoding errors (see the table above), else a
    /// [`ErrorKind::Retryable`] one.
    fn from(error: E) -> Self {
        let error: Box<dyn std::error::Error + Send + Sync> = Box::new(error);
        let kind = if is_decode_error(&*error) {
            ErrorKind::Decode
        } else {
            ErrorKind::Retryable
        };
        HandlerError::with_kind(kind, error)
    }
}

/// Whether `error` is one of the types that mean the bytes could not be decoded.
fn is_decode_error(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    error.is::<DecodeError>()
        || error.is::<std::str::Utf8Error>()
        || error.is::<std::string::FromUtf8Error>()
        // A reader's I/O error may pass; malformed or mistyped JSON will not.
        || error
            .downcast_ref::<serde_json::Error>()
            .is_some_and(|e| !e.is_io())
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind, self.source)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

/// How a message left its lane (told by the lanes to the poll loop and counted by the
/// metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handler succeeded, after this many attempts.
    Handled { attempts: u32 },
    /// The handler skipped the message on purpose.
    Skipped,
    /// The handler gave up after this many attempts and the broker acknowledged the message's
    /// dead-letter write.
    DeadLettered { attempts: u32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_mark_converts_std_errors_to_retryable() {
        fn parse(s: &str) -> HandlerResult {
            let _: i32 = s.parse()?;
            Ok(())
        }
        let err = parse("x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Retryable);
        assert!(err.to_string().contains("invalid digit"), "{err}");
    }

    #[test]
    fn question_mark_makes_decoding_errors_decode_failures() {
        let bad = Message::new("orders", 1, 9, None, Some(b"{\"id\": }".to_vec()));
        let via_message = |m: &Message| -> HandlerResult {
            let _: serde_json::Value = m.json()?;
            Ok(())
        };
        let err = via_message(&bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert!(
            err.to_string()
                .starts_with("decode error: cannot decode the value of orders/1 at offset 9"),
            "{err}"
        );
        let text = |m: &Message| -> HandlerResult {
            m.text()?;
            Ok(())
        };
        let not_utf8 = Message::new("t", 0, 0, None, Some(vec![0xff]));
        assert_eq!(text(&not_utf8).unwrap_err().kind(), ErrorKind::Decode);
        let direct = |bytes: &[u8]| -> HandlerResult {
            let _: u64 = serde_json::from_slice(bytes)?;
            let _ = String::from_utf8(bytes.to_vec())?;
            Ok(())
        };
        assert_eq!(direct(b"-").unwrap_err().kind(), ErrorKind::Decode);
        assert_eq!(direct(b"12\xff").unwrap_err().kind(), ErrorKind::Decode);
        let io = serde_json::Error::io(std::io::Error::other("connection reset"));
        assert_eq!(HandlerError::from(io).kind(), ErrorKind::Retryable);
    }

    #[tokio::test]
    async fn json_handler_refuses_tombstones_and_bad_json_as_decode_errors() {
        let handler = json_handler(|_: Option<u64>, _| async { Ok(()) });
        for payload in [None, Some(b"x".to_vec())] {
            let msg = Message::new("t", 0, 3, None, payload);
            let err = handler.handle(msg).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
            assert!(err.to_string().contains("t/0 at offset 3"), "{err}");
        }
        let ok = Message::new("t", 0, 4, None, Some(b"7".to_vec()));
        assert!(handler.handle(ok).await.is_ok());
    }

    #[test]
    fn constructors_set_the_kind() {
        assert_eq!(HandlerError::permanent("bad").kind(), ErrorKind::Permanent);
        assert_eq!(HandlerError::skip("not mine").kind(), ErrorKind::Skip);
    }
}
