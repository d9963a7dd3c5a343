//! [`Wakeup`]: how the poll loop waits for whichever comes first, something from librdkafka
//! (a message, a rebalance, a callback) or a report from the lanes.
//!
//! Blocking in `BaseConsumer::poll` would leave lane reports unseen until the poll's timeout:
//! a finished message would free its key, resume its partition or become committable only
//! then. Instead librdkafka raises a [`Wakeup`] when the consumer's queue goes from empty to
//! not empty (`BaseConsumer::set_nonempty_callback`), the lanes raise it when they report, and
//! the loop polls without blocking.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
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
