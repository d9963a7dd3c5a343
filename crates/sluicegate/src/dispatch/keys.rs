//! [`KeyGate`]: per-key order inside a partition, with every key free to run in parallel.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::Message;

/// Lets a message run only when no earlier message of its key is running, and hands over the
/// key's next messages when it finishes. Keys never share a queue, so one slow key delays only
/// itself. Records with a null key form one key of their own.
///
/// Everything that waited behind a running key goes out as one *run* when it finishes, which
/// one lane handles in order: a key costs one trip through the poll thread per run, not per
/// message (on Apache Kafka, whose fetches bring a partition's backlog in large batches, that
/// trip set the pace).
///
/// No key is copied: each entry stands for its key by the last message let run (a shared
/// handle), so admitting and finishing a message allocates nothing but a waiting queue's room.
#[derive(Debug, Default)]
pub(crate) struct KeyGate {
    running: HashTable<Entry>,
    hasher: DefaultHashBuilder,
}

#[derive(Debug)]
struct Entry {
    /// The key's last message let run: the key is free when it finishes.
    last: Message,
    /// The key's messages waiting behind it, in offset order.
    waiting: VecDeque<Message>,
}

impl KeyGate {
    /// A message arrives: it goes to `ready` if its key is free, or waits until it is.
    pub fn admit(&mut self, message: Message, ready: &mut Ready) {
        let hash = self.hasher.hash_one(message.key());
        match self
            .running
            .find_mut(hash, |e| e.last.key() == message.key())
        {
            Some(entry) => entry.waiting.push_back(message),
            None => {
                let entry = Entry {
                    last: message.clone(),
                    waiting: VecDeque::new(),
                };
                let hasher = &self.hasher;
                self.running
                    .insert_unique(hash, entry, |e| hasher.hash_one(e.last.key()));
                ready.push(message);
            }
        }
    }

    /// The running `message` finished: if it was its key's last one let run, the key's
    /// waiting messages go to `ready`, as one run.
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
        match e.waiting.back() {
            None => {
                entry.remove();
            }
            Some(last) => {
                e.last = last.clone();
                ready.push_run(e.waiting.drain(..));
            }
        }
    }

    /// Takes every waiting message out (the partition is going away).
    pub fn drain(&mut self) -> impl Iterator<Item = Message> + '_ {
        self.running.drain().flat_map(|e| e.waiting)
    }
}

/// Messages ready to go to a partition's lanes, in runs: a run's messages share a key and one
/// lane handles them in order (see [`KeyGate`]). Every other message is a run of its own.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    messages: Vec<Message>,
    /// The `(start, end)` positions in `messages` of the runs of more than one message.
    runs: Vec<(u32, u32)>,
}

impl Ready {
    /// Adds a message as a run of its own.
    pub fn push(&mut self, message: Message) {
        self.messages.push(message);
    }

    /// Adds `run`, messages that one lane handles in order.
    pub fn push_run(&mut self, run: impl IntoIterator<Item = Message>) {
        let start = self.messages.len();
        self.messages.extend(run);
        let end = self.messages.len();
        if end - start > 1 {
            let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            self.runs.push((at(start), at(end)));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Takes the messages out, with the `(start, end)` of every run of more than one.
    pub fn take(&mut self) -> (Vec<Message>, Vec<(u32, u32)>) {
        (
            std::mem::take(&mut self.messages),
            std::mem::take(&mut self.runs),
        )
    }

    /// Takes every message out, unsent (the partition is going away).
    pub fn drain(&mut self) -> impl Iterator<Item = Message> + '_ {
        self.runs.clear();
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
        /// one run going at a time, each key's messages run in offset order, and every
        /// message runs once.
        #[test]
        fn one_run_per_key_at_a_time_in_offset_order(
            keys in prop::collection::vec(prop::option::weighted(0.9, 0u8..6), 1..200),
            steps in prop::collection::vec((0u8..4, any::<prop::sample::Index>()), 0..600),
        ) {
            let mut gate = KeyGate::default();
            let mut ready = Ready::default();
            // The runs lanes work on; each runs its front message.
            let mut going: Vec<VecDeque<Message>> = Vec::new();
            let mut ran: Vec<(Option<u8>, i64)> = Vec::new();
            let start = |ready: &mut Ready, going: &mut Vec<VecDeque<Message>>| -> Result<(), TestCaseError> {
                for run in take_runs(ready) {
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

    /// With a key running, what arrives for it waits, and goes out as one run when it ends.
    #[test]
    fn what_waited_behind_a_key_goes_as_one_run() {
        let mut gate = KeyGate::default();
        let mut ready = Ready::default();
        for (offset, key) in [(0, 1), (1, 2), (2, 1), (3, 1)] {
            gate.admit(msg(offset, Some(key)), &mut ready);
        }
        let (messages, runs) = ready.take();
        let offsets: Vec<i64> = messages.iter().map(Message::offset).collect();
        assert_eq!(offsets, [0, 1]);
        assert!(runs.is_empty());
        gate.finished(&msg(0, Some(1)), &mut ready);
        let (messages, runs) = ready.take();
        let offsets: Vec<i64> = messages.iter().map(Message::offset).collect();
        assert_eq!(offsets, [2, 3]);
        assert_eq!(runs, [(0, 2)]);
        gate.finished(&msg(2, Some(1)), &mut ready);
        assert!(ready.is_empty(), "the run of key 1 is not over");
        gate.finished(&msg(3, Some(1)), &mut ready);
        assert!(ready.is_empty(), "nothing waits");
    }
}
