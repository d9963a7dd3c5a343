//! A second way in: the consumer's messages as a [`Stream`] ([`Messages`]), for programs that
//! write their own loop (`while let Some(m) = messages.next().await`), with every promise of
//! a handler kept.
//!
//! It is a handler underneath: each call hands a [`Delivery`] to the stream and waits for it
//! to be finished. So the dispatch (ordering modes, in-flight limits, pause-based
//! backpressure), the policies (retry, dead-letter, circuit breaker, timeout, user layers),
//! the offset tracking and the commits are the ones of [`Consumer::run`](super::Consumer::run).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::handler::{Handler, HandlerError, HandlerResult};
use crate::{Error, Message};

use super::ConsumerHandle;

/// A message of a [`Messages`] stream, with what it came to still to say.
///
/// [`finish`](Self::finish) it with the outcome of its processing: `Ok(())` marks it done
/// (committed once every message before it in its partition is done too); an error goes
/// through the consumer's policies as a handler's error would (a retryable one is retried,
/// and the message comes out of the stream again after the back-off; a permanent one is
/// dead-lettered, or stops its partition without a dead-letter topic; see
/// [`ErrorKind`](crate::ErrorKind)). Dropping it unfinished counts as success (dropping it
/// while the thread panics, as a failure of kind [`Panic`](crate::ErrorKind::Panic)). So an
/// early return drops it *as done*: rather than `work(&delivery)?`, hand the error over with
/// `delivery.finish(work(&delivery).map_err(HandlerError::from))`.
///
/// It reads as the [`Message`] it holds (`Deref`).
#[derive(Debug)]
pub struct Delivery {
    message: Message,
    reply: Option<oneshot::Sender<HandlerResult>>,
    /// Whether the stream gave it out: one dropped before (with the stream) says nothing.
    handed_out: bool,
}

impl Delivery {
    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Says what processing the message came to (see [`Delivery`]).
    pub fn finish(mut self, result: HandlerResult) {
        if let Some(reply) = self.reply.take() {
            // The consumer stopped waiting (it aborted, or the partition's drain timed
            // out): the message is not done and will be delivered again.
            let _ = reply.send(result);
        }
    }

    /// Marks the message done: `finish(Ok(()))`.
    pub fn ack(self) {
        self.finish(Ok(()));
    }
}

impl std::ops::Deref for Delivery {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.message
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take().filter(|_| self.handed_out) {
            let result = match std::thread::panicking() {
                true => Err(HandlerError::panic(
                    "the program panicked while holding the delivery".into(),
                )),
                false => Ok(()),
            };
            let _ = reply.send(result);
        }
    }
}

/// The handler behind a [`Messages`] stream: hands each message to the stream and waits for
/// its outcome. [Layers](crate::layer) given to the builder wrap it as they wrap any handler.
pub struct StreamHandler(mpsc::Sender<Delivery>);

impl Handler for StreamHandler {
    async fn handle(&self, message: Message) -> HandlerResult {
        let (reply, outcome) = oneshot::channel();
        let delivery = Delivery {
            message,
            reply: Some(reply),
            handed_out: false,
        };
        let _ = self.0.send(delivery).await;
        match outcome.await {
            Ok(result) => result,
            // The stream was dropped before giving the message out, and the consumer is
            // stopping (see `Messages`' drop): the message stays unfinished, to be delivered
            // again.
            Err(_) => std::future::pending().await,
        }
    }
}

/// How many deliveries wait in the stream for the program to take them.
const WAITING: usize = 64;

/// A stream's two ends: the handler to build the consumer with, and the receiving end for
/// [`Messages::new`].
pub(crate) fn channel() -> (StreamHandler, mpsc::Receiver<Delivery>) {
    let (send, receive) = mpsc::channel(WAITING);
    (StreamHandler(send), receive)
}

/// The consumer's messages as a [`Stream`] of [`Delivery`]s, from
/// [`ConsumerBuilder::messages`](crate::ConsumerBuilder::messages).
///
/// The consumer runs while the stream lives; the stream ends when the consumer stops: after
/// [`shutdown`](Self::shutdown) (call it on SIGINT/SIGTERM, say), or on a fatal error,
/// which is then the stream's last item. Dropping the stream shuts the consumer down in the
/// background: what finished is committed, what did not is delivered again next time (the
/// drain waits up to the drain timeout for deliveries that will not come). To stop and wait
/// for the final commit, call [`shutdown`](Self::shutdown) and take the stream to its end.
///
/// How many deliveries are out at once is what the ordering mode allows: in
/// [`Ordering::Partition`](crate::Ordering::Partition) (the default) one per partition, so a
/// partition's next message comes out once the one before it is finished; in key order one
/// per key; unordered up to the in-flight limit.
pub struct Messages {
    received: mpsc::Receiver<Delivery>,
    handle: ConsumerHandle,
    /// Set once the consumer has stopped: the stream then yields its error, if any, and ends.
    stopped: Option<Result<(), Error>>,
}

impl Messages {
    pub(crate) fn new(received: mpsc::Receiver<Delivery>, handle: ConsumerHandle) -> Self {
        Messages {
            received,
            handle,
            stopped: None,
        }
    }

    /// The running consumer: its status, health, seeks.
    pub fn handle(&self) -> &ConsumerHandle {
        &self.handle
    }

    /// Asks for a graceful shutdown (see [`ConsumerHandle::shutdown`]): keep taking and
    /// finishing deliveries until the stream ends, so that the work in flight is finished
    /// and committed.
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }
}

impl Stream for Messages {
    type Item = Result<Delivery, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(stopped) = &mut this.stopped {
                // The consumer's error, once; then the end.
                return Poll::Ready(std::mem::replace(stopped, Ok(())).err().map(Err));
            }
            if let Poll::Ready(Some(mut delivery)) = this.received.poll_recv(cx) {
                delivery.handed_out = true;
                return Poll::Ready(Some(Ok(delivery)));
            }
            match Pin::new(&mut this.handle.done).poll(cx) {
                Poll::Ready(result) => {
                    this.stopped = Some(result.unwrap_or(Err(Error::PollThreadLost)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}
