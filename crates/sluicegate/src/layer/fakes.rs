//! Stand-ins for the unit tests of the built-in layers: an inner attempt that answers as told
//! and counts its calls, and a scope that records what the layers tell it.

use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::dead_letter::Failure;
use crate::handler::{ErrorKind, HandlerResult, Outcome};
use crate::Message;

use super::attempt::{Attempt, Attempted, Scope, Stages};

/// `n` messages of partition 0 of `t`, at offsets 0 to n-1.
pub(crate) fn messages(n: usize) -> Vec<Message> {
    (0..n as i64)
        .map(|o| Message::new("t", 0, o, None, None))
        .collect()
}

/// An inner attempt that answers `answer(offsets of the call, number of the call)` and records
/// the offsets of each call.
pub(crate) struct Calls<F> {
    answer: F,
    pub calls: Mutex<Vec<Vec<i64>>>,
}

impl<F: Fn(&[i64], usize) -> HandlerResult + Send + Sync> Calls<F> {
    pub fn new(answer: F) -> Self {
        Calls {
            answer,
            calls: Mutex::new(Vec::new()),
        }
    }

    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl<F: Fn(&[i64], usize) -> HandlerResult + Send + Sync> Attempt for Calls<F> {
    async fn attempt(
        &self,
        messages: &[Message],
        _released: &[&CancellationToken],
        _stages: Stages,
    ) -> Option<Attempted> {
        let offsets: Vec<i64> = messages.iter().map(Message::offset).collect();
        let number = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(offsets.clone());
            calls.len()
        };
        Some(Attempted {
            result: (self.answer)(&offsets, number),
            ended: None,
        })
    }

    fn handler_ended(&self, _: &[Message], _: Option<quanta::Instant>) {}
}

/// What the layers told a [`Recorder`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Told {
    Settled(Vec<i64>, Option<Outcome>),
    Stuck(i64, ErrorKind, u32),
    Waiting(Duration),
}

/// A scope that records what it is told; with `halt_on_stuck`, stops the stack at a stuck
/// message (as an ordered lane does).
#[derive(Default)]
pub(crate) struct Recorder {
    pub told: Vec<Told>,
    pub halt_on_stuck: bool,
}

impl Recorder {
    /// The offsets settled with `outcome`, in the order told.
    pub fn settled(&self, outcome: Option<Outcome>) -> Vec<i64> {
        self.told
            .iter()
            .filter_map(|t| match t {
                Told::Settled(offsets, o) if *o == outcome => Some(offsets.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The offsets told stuck, in order.
    pub fn stuck(&self) -> Vec<i64> {
        self.told
            .iter()
            .filter_map(|t| match t {
                Told::Stuck(offset, ..) => Some(*offset),
                _ => None,
            })
            .collect()
    }

    /// Every offset settled or stuck, in the order told.
    pub fn finished_in_order(&self) -> Vec<i64> {
        self.told
            .iter()
            .flat_map(|t| match t {
                Told::Settled(offsets, _) => offsets.clone(),
                Told::Stuck(offset, ..) => vec![*offset],
                _ => Vec::new(),
            })
            .collect()
    }
}

impl Scope for Recorder {
    type Halt = ();

    fn settled(&mut self, messages: &[Message], outcome: Option<Outcome>) -> Result<(), ()> {
        let offsets = messages.iter().map(Message::offset).collect();
        self.told.push(Told::Settled(offsets, outcome));
        Ok(())
    }

    fn stuck(&mut self, message: &Message, failure: Failure) -> Result<(), ()> {
        self.told.push(Told::Stuck(
            message.offset(),
            failure.error.kind(),
            failure.attempts,
        ));
        if self.halt_on_stuck {
            return Err(());
        }
        Ok(())
    }

    fn waiting(&mut self, _: &[Message], delay: Duration) {
        self.told.push(Told::Waiting(delay));
    }
}
