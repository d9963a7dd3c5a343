//! [`KeyGate`]: per-key order inside a partition, with every key free to run in parallel.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::Message;

/// Lets a message run only when no earlier message of its key is running, and hands over the
/// key's next message when one finishes. Keys never share a queue, so one slow key delays only
/// itself. Records with a null key form one key of their own.
///
/// No key is copied: each entry stands for its key by the message of it that runs (a shared
/// handle), so admitting and finishing a message allocates nothing but a waiting queue's room.
#[derive(Debug, Default)]
pub(crate) struct KeyGate {
    /// For each key with a message running: that message, and the key's messages waiting
    /// behind it, in offset order.
    running: HashTable<(Message, VecDeque<Message>)>,
    hasher: DefaultHashBuilder,
}

impl KeyGate {
    /// A message arrives: it is returned if it may run now, or kept until its key is free.
    pub fn admit(&mut self, message: Message) -> Option<Message> {
        let hash = self.hasher.hash_one(message.key());
        match self
            .running
            .find_mut(hash, |(running, _)| running.key() == message.key())
        {
            Some((_, waiting)) => {
                waiting.push_back(message);
                None
            }
            None => {
                let hasher = &self.hasher;
                self.running
                    .insert_unique(hash, (message.clone(), VecDeque::new()), |(m, _)| {
                        hasher.hash_one(m.key())
                    });
                Some(message)
            }
        }
    }

    /// The running `message` finished: returns its key's next message, if one waits.
    pub fn finished(&mut self, message: &Message) -> Option<Message> {
        let hash = self.hasher.hash_one(message.key());
        // The entry whose running message this is: offsets tell them apart faster than keys.
        let Ok(mut entry) = self
            .running
            .find_entry(hash, |(running, _)| running.offset() == message.offset())
        else {
            return None;
        };
        let (running, waiting) = entry.get_mut();
        match waiting.pop_front() {
            Some(next) => {
                // The next message stands for the key now; the finished one is let go.
                *running = next.clone();
                Some(next)
            }
            None => {
                entry.remove();
                None
            }
        }
    }

    /// Takes every waiting message out (the partition is going away).
    pub fn drain(&mut self) -> impl Iterator<Item = Message> + '_ {
        self.running.drain().flat_map(|(_, waiting)| waiting)
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

    proptest! {
        /// Whatever the arrival and completion order: at most one message per key runs at a
        /// time, each key's messages run in offset order, and every message runs once.
        #[test]
        fn one_message_per_key_runs_at_a_time_in_offset_order(
            keys in prop::collection::vec(prop::option::weighted(0.9, 0u8..6), 1..200),
            finish_order in prop::collection::vec(any::<prop::sample::Index>(), 0..400),
        ) {
            let mut gate = KeyGate::default();
            let mut running: BTreeMap<i64, Option<u8>> = BTreeMap::new();
            let mut ran: Vec<(Option<u8>, i64)> = Vec::new();
            let start = |m: Message, running: &mut BTreeMap<i64, Option<u8>>, ran: &mut Vec<_>| {
                let key = m.key().map(|k| k[0]);
                assert!(running.values().all(|k| *k != key), "key {key:?} ran twice at once");
                running.insert(m.offset(), key);
                ran.push((key, m.offset()));
            };
            let mut picks = finish_order.into_iter();
            for (offset, key) in keys.iter().enumerate() {
                if let Some(m) = gate.admit(msg(offset as i64, *key)) {
                    start(m, &mut running, &mut ran);
                }
                // Now and then, finish a running message.
                if let Some(pick) = picks.next() {
                    if !running.is_empty() {
                        let o = *running.keys().nth(pick.index(running.len())).unwrap();
                        let k = running.remove(&o).unwrap();
                        if let Some(next) = gate.finished(&msg(o, k)) {
                            start(next, &mut running, &mut ran);
                        }
                    }
                }
            }
            // Finish everything left.
            while let Some((&o, &k)) = running.iter().next() {
                running.remove(&o);
                if let Some(next) = gate.finished(&msg(o, k)) {
                    start(next, &mut running, &mut ran);
                }
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
}
