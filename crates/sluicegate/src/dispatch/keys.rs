//! [`KeyGate`]: per-key order inside a partition, with every key free to run in parallel.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::Message;

/// Lets a message run only when no earlier message of its key is running, and hands over the
/// key's next messages when it finishes. Keys never share a queue, so one slow key delays only
/// itself. Records with a null key form one key of their own.
///
/// With runs on (handlers that take one message at a time), the messages of a key that are
/// ready together go out as one *run*, which one lane handles in order: a key costs one trip
/// through the poll thread per run, not per message. A message whose key has a run not yet
/// sent joins it; one whose key is running waits, and everything that waited becomes the
/// key's next run when the running one ends.
///
/// No key is copied: each entry stands for its key by the last message let run (a shared
/// handle), so admitting and finishing a message allocates nothing but a waiting queue's room.
#[derive(Debug, Default)]
pub(crate) struct KeyGate {
    running: HashTable<Entry>,
    hasher: DefaultHashBuilder,
    runs: bool,
}

#[derive(Debug)]
struct Entry {
    /// The key's last message let run: the key is free when it finishes.
    last: Message,
    /// The key's messages waiting behind it, in offset order.
    waiting: VecDeque<Message>,
    /// The run of [`Ready`] that `last` is in, while that run is not yet sent:
    /// `(round, run)`.
    run: Option<(u64, u32)>,
}

impl KeyGate {
    /// A gate; `runs` lets a key's messages that are ready together go out as one run.
    pub fn new(runs: bool) -> Self {
        KeyGate {
            runs,
            ..KeyGate::default()
        }
    }

    /// A message arrives: it goes to `ready` if it may run now, or is kept until its key is
    /// free.
    pub fn admit(&mut self, message: Message, ready: &mut Ready) {
        let hash = self.hasher.hash_one(message.key());
        match self
            .running
            .find_mut(hash, |e| e.last.key() == message.key())
        {
            Some(entry) => match entry.run {
                Some((round, run)) if round == ready.round => {
                    entry.last = message.clone();
                    ready.push(message, Some(run));
                }
                _ => entry.waiting.push_back(message),
            },
            None => {
                let run = ready.push(message.clone(), None);
                let entry = Entry {
                    last: message,
                    waiting: VecDeque::new(),
                    run: self.runs.then_some((ready.round, run)),
                };
                let hasher = &self.hasher;
                self.running
                    .insert_unique(hash, entry, |e| hasher.hash_one(e.last.key()));
            }
        }
    }

    /// The running `message` finished: if it was its key's last one let run, the key's
    /// waiting messages go to `ready` (as one run, or the first of them without runs).
    pub fn finished(&mut self, message: &Message, ready: &mut Ready) {
        let hash = self.hasher.hash_one(message.key());
        // The key's entry, if this was its last message let run: offsets tell them apart
        // faster than keys.
        let Ok(mut entry) = self
            .running
            .find_entry(hash, |e| e.last.offset() == message.offset())
        else {
            return;
        };
        let e = entry.get_mut();
        let Some(first) = e.waiting.pop_front() else {
            entry.remove();
            return;
        };
        e.last = first.clone();
        let run = ready.push(first, None);
        e.run = self.runs.then_some((ready.round, run));
        if self.runs {
            for next in e.waiting.drain(..) {
                e.last = next.clone();
                ready.push(next, Some(run));
            }
        }
    }

    /// Takes every waiting message out (the partition is going away).
    pub fn drain(&mut self) -> impl Iterator<Item = Message> + '_ {
        self.running.drain().flat_map(|e| e.waiting)
    }
}

/// Messages ready to go to a partition's lanes, in runs: a run's messages share a key and one
/// lane handles them in order (see [`KeyGate`]). Without runs, each message is one.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    messages: Vec<Message>,
    /// For each of `messages`, its run, named by the index of the run's first message; left
    /// empty while every message is a run of its own (the common case costs nothing).
    run_of: Vec<u32>,
    /// Counts the takes: a run can be joined only until it is taken.
    round: u64,
}

impl Ready {
    /// Adds `message`, to `run` or as a run of its own; returns its run.
    pub fn push(&mut self, message: Message, run: Option<u32>) -> u32 {
        let own = u32::try_from(self.messages.len()).unwrap_or(u32::MAX);
        self.messages.push(message);
        match run {
            None => {
                if !self.run_of.is_empty() {
                    self.run_of.push(own);
                }
                own
            }
            Some(run) => {
                if self.run_of.is_empty() {
                    // Every message so far was a run of its own.
                    self.run_of.extend(0..own);
                }
                self.run_of.push(run);
                run
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Takes the messages out, each run's messages next to each other and in the order they
    /// came, runs in the order of their first messages; with the `(start, end)` of every run
    /// of more than one message.
    pub fn take(&mut self) -> (Vec<Message>, Vec<(u32, u32)>) {
        self.round += 1;
        let messages = std::mem::take(&mut self.messages);
        if self.run_of.is_empty() {
            return (messages, Vec::new());
        }
        let run_of = std::mem::take(&mut self.run_of);
        let mut order: Vec<u32> = (0..u32::try_from(messages.len()).unwrap_or(u32::MAX)).collect();
        // Stable: a run keeps its messages' order.
        order.sort_by_key(|&i| run_of[i as usize]);
        let mut slots: Vec<Option<Message>> = messages.into_iter().map(Some).collect();
        let mut runs = Vec::new();
        let mut start = 0;
        for (at, pair) in order.windows(2).enumerate() {
            if run_of[pair[0] as usize] != run_of[pair[1] as usize] {
                let end = at as u32 + 1;
                if end - start > 1 {
                    runs.push((start, end));
                }
                start = end;
            }
        }
        let end = order.len() as u32;
        if end - start > 1 {
            runs.push((start, end));
        }
        let messages = order
            .iter()
            .map(|&i| {
                slots[i as usize]
                    .take()
                    .expect("each message is taken once")
            })
            .collect();
        (messages, runs)
    }

    /// Takes every message out, unsent (the partition is going away).
    pub fn drain(&mut self) -> impl Iterator<Item = Message> + '_ {
        self.round += 1;
        self.run_of.clear();
        self.messages.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn msg(offset: i64, key: Option<u8>) -> Message {
        Message::new("t", 0, offset, key.map(|k| vec![k]), None)
    }

    /// Cuts what `ready` holds into the runs a lane would get.
    fn take_runs(ready: &mut Ready) -> Vec<VecDeque<Message>> {
        let (messages, runs) = ready.take();
        let mut out = Vec::new();
        let mut runs = runs.into_iter().peekable();
        let mut messages = messages.into_iter().enumerate().peekable();
        while let Some((i, m)) = messages.next() {
            let mut run = VecDeque::from([m]);
            if let Some(&(start, end)) = runs.peek() {
                if start as usize == i {
                    runs.next();
                    for _ in start + 1..end {
                        run.push_back(messages.next().expect("a run is inside its chunk").1);
                    }
                }
            }
            out.push(run);
        }
        out
    }

    proptest! {
        /// Whatever the arrival, send and completion order: a key's messages are in at most
        /// one run going at a time, each key's messages run in offset order, every message
        /// runs once, and without runs every run is one message.
        #[test]
        fn one_run_per_key_at_a_time_in_offset_order(
            runs_on in any::<bool>(),
            keys in prop::collection::vec(prop::option::weighted(0.9, 0u8..6), 1..200),
            steps in prop::collection::vec((0u8..4, any::<prop::sample::Index>()), 0..600),
        ) {
            let mut gate = KeyGate::new(runs_on);
            let mut ready = Ready::default();
            // The runs lanes work on; each runs its front message.
            let mut going: Vec<VecDeque<Message>> = Vec::new();
            let mut ran: Vec<(Option<u8>, i64)> = Vec::new();
            let start = |ready: &mut Ready, going: &mut Vec<VecDeque<Message>>| -> Result<(), TestCaseError> {
                for run in take_runs(ready) {
                    prop_assert!(runs_on || run.len() == 1, "a run of {} without runs", run.len());
                    let key = run[0].key().map(<[u8]>::to_vec);
                    prop_assert!(run.iter().all(|m| m.key().map(<[u8]>::to_vec) == key));
                    prop_assert!(
                        going.iter().all(|g| g[0].key().map(<[u8]>::to_vec) != key),
                        "key {:?} in two runs at once", key
                    );
                    going.push(run);
                }
                Ok(())
            };
            let finish = |pick: Option<prop::sample::Index>, gate: &mut KeyGate, ready: &mut Ready,
                              going: &mut Vec<VecDeque<Message>>, ran: &mut Vec<(Option<u8>, i64)>| {
                if going.is_empty() {
                    return;
                }
                let i = pick.map_or(0, |p| p.index(going.len()));
                let m = going[i].pop_front().expect("runs going are not empty");
                ran.push((m.key().map(|k| k[0]), m.offset()));
                if going[i].is_empty() {
                    going.swap_remove(i);
                }
                gate.finished(&m, ready);
            };
            let mut arriving = keys.iter().enumerate();
            for (what, pick) in steps {
                match what {
                    0 | 1 => {
                        if let Some((offset, key)) = arriving.next() {
                            gate.admit(msg(offset as i64, *key), &mut ready);
                        }
                    }
                    2 => start(&mut ready, &mut going)?,
                    _ => finish(Some(pick), &mut gate, &mut ready, &mut going, &mut ran),
                }
            }
            // Everything left arrives, then runs to the end.
            for (offset, key) in arriving {
                gate.admit(msg(offset as i64, *key), &mut ready);
            }
            let mut bound = 0;
            loop {
                start(&mut ready, &mut going)?;
                if going.is_empty() {
                    break;
                }
                finish(None, &mut gate, &mut ready, &mut going, &mut ran);
                bound += 1;
                prop_assert!(bound <= 10 * keys.len(), "does not end");
            }
            let all: BTreeSet<i64> = ran.iter().map(|(_, o)| *o).collect();
            prop_assert_eq!(all.len(), keys.len());
            prop_assert_eq!(ran.len(), keys.len());
            let mut last: BTreeMap<Option<u8>, i64> = BTreeMap::new();
            for (k, o) in ran {
                if let Some(prev) = last.insert(k, o) {
                    prop_assert!(prev < o, "key {:?}: {} ran after {}", k, o, prev);
                }
            }
            prop_assert_eq!(gate.drain().count(), 0);
        }
    }

    /// Messages of a key ready together go out as one run; with a key running, the rest wait
    /// and go out as one run when it finishes.
    #[test]
    fn a_key_ready_together_goes_as_one_run() {
        let mut gate = KeyGate::new(true);
        let mut ready = Ready::default();
        for (offset, key) in [(0, 1), (1, 2), (2, 1), (3, 1)] {
            gate.admit(msg(offset, Some(key)), &mut ready);
        }
        let (messages, runs) = ready.take();
        let offsets: Vec<i64> = messages.iter().map(Message::offset).collect();
        assert_eq!(offsets, [0, 2, 3, 1]);
        assert_eq!(runs, [(0, 3)]);
        for (offset, key) in [(4, 1), (5, 1)] {
            gate.admit(msg(offset, Some(key)), &mut ready);
        }
        assert!(ready.is_empty(), "key 1 is running");
        gate.finished(&msg(2, Some(1)), &mut ready);
        assert!(ready.is_empty(), "the run of key 1 is not over");
        gate.finished(&msg(3, Some(1)), &mut ready);
        let (messages, runs) = ready.take();
        let offsets: Vec<i64> = messages.iter().map(Message::offset).collect();
        assert_eq!(offsets, [4, 5]);
        assert_eq!(runs, [(0, 2)]);
    }
}
