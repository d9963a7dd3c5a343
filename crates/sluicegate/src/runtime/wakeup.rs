//! [`Wakeup`]: how the poll loop waits for whichever comes first, something from librdkafka
//! (a message, a rebalance, a callback) or a report from the lanes.
//!
//! Blocking in `BaseConsumer::poll` would leave lane reports unseen until the poll's timeout:
//! a finished message would free its key, resume its partition or become committable only
//! then. Instead librdkafka tells a [`Wakeup`] when its consumer queue gets something
//! ([`QueueWatch`]), the lanes tell it when they report, and the loop polls without blocking.

use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};

/// A flag the poll loop waits on, raised by whoever has something for it.
#[derive(Debug, Default)]
pub(crate) struct Wakeup {
    state: Mutex<State>,
    raised: Condvar,
}

#[derive(Debug, Default)]
struct State {
    raised: bool,
    /// The loop waits: only then does raising need a system call.
    waiting: bool,
}

impl Wakeup {
    /// Raises the flag, waking the loop if it waits.
    pub fn raise(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.raised = true;
        if state.waiting {
            self.raised.notify_one();
        }
    }

    /// Waits until the flag is raised, or `timeout` has passed, and lowers it.
    pub fn wait(&self, timeout: Duration) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.raised {
            state.waiting = true;
            state = self
                .raised
                .wait_timeout_while(state, timeout, |s| !s.raised)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiting = false;
        }
        state.raised = false;
    }
}

/// librdkafka's queue that a consumer polls, set to raise a [`Wakeup`] whenever it goes from
/// empty to not empty. The one place the runtime calls librdkafka directly; dropping it (before
/// the consumer) undoes the setting.
pub(crate) struct QueueWatch {
    queue: *mut rd::rd_kafka_queue_t,
    wakeup: *const Wakeup,
}

// librdkafka's queues are thread-safe, and the wakeup is shared by an `Arc` the watch owns.
unsafe impl Send for QueueWatch {}
unsafe impl Sync for QueueWatch {}

impl QueueWatch {
    /// Watches the queue `consumer` polls: its consumer-group queue, or the main queue for a
    /// consumer without a group (as `BaseConsumer` chooses).
    pub fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>, wakeup: Arc<Wakeup>) -> Self {
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is a live client; each call returns a new reference to a queue (or
        // null), released in `drop`.
        let queue = unsafe {
            let group = rd::rd_kafka_queue_get_consumer(rk);
            if group.is_null() {
                rd::rd_kafka_queue_get_main(rk)
            } else {
                group
            }
        };
        let wakeup = Arc::into_raw(wakeup);
        // SAFETY: the callback only reads the wakeup, which stays alive until the callback is
        // removed in `drop`.
        unsafe { rd::rd_kafka_queue_cb_event_enable(queue, Some(raise), wakeup as *mut c_void) };
        QueueWatch { queue, wakeup }
    }

    /// Whether the queue holds nothing to serve right now.
    pub fn is_empty(&self) -> bool {
        // SAFETY: the queue reference is held until `drop`.
        unsafe { rd::rd_kafka_queue_length(self.queue) == 0 }
    }
}

impl Drop for QueueWatch {
    fn drop(&mut self) {
        // SAFETY: removing the callback takes the queue's lock, so no call of it is running
        // or can start after; only then is the wakeup let go.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rd::rd_kafka_queue_destroy(self.queue);
            drop(Arc::from_raw(self.wakeup));
        }
    }
}

/// Called by librdkafka, with the queue locked, when the queue gets an item while empty.
unsafe extern "C" fn raise(_rk: *mut rd::rd_kafka_t, wakeup: *mut c_void) {
    // SAFETY: `wakeup` is the `Arc` a `QueueWatch` keeps alive while the callback is set.
    unsafe { &*(wakeup as *const Wakeup) }.raise();
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_raise_before_the_wait_is_not_lost_and_is_used_once() {
        let wakeup = Wakeup::default();
        wakeup.raise();
        let started = Instant::now();
        wakeup.wait(Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5));
        // Lowered by that wait: the next one waits for its timeout.
        let started = Instant::now();
        wakeup.wait(Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_raise_from_another_thread_ends_the_wait() {
        let wakeup = Arc::new(Wakeup::default());
        let raiser = {
            let wakeup = wakeup.clone();
            std::thread::spawn(move || {
                // Raise once the main thread waits (or, at worst, a while later).
                let deadline = Instant::now() + Duration::from_secs(5);
                while !wakeup.state.lock().unwrap().waiting && Instant::now() < deadline {
                    std::thread::yield_now();
                }
                wakeup.raise();
            })
        };
        let started = Instant::now();
        wakeup.wait(Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(20));
        raiser.join().unwrap();
    }
}
