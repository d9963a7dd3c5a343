//! [`KeyGate`]: per-key order inside a partition, with every key free to run in parallel.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use crate::Message;

/// Lets a message run only when no earlier message of its key is running, and hands over the
/// key's next message when one finishes. Keys never share a queue, so one slow key delays only
/// itself. Records with a null key form one key of their own.
#[derive(Debug, Default)]
pub(crate) struct KeyGate {
    /// Keys with a message running, and their messages waiting behind it, in offset order.
    running: HashMap<Option<Box<[u8]>>, VecDeque<Message>>,
}

impl KeyGate {
    /// A message arrives: it is returned if it may run now, or kept until its key is free.
    pub fn admit(&mut self, message: Message) -> Option<Message> {
        match self.running.entry(message.key().map(Box::from)) {
            Entry::Occupied(mut waiting) => {
                waiting.get_mut().push_back(message);
                None
            }
            Entry::Vacant(free) => {
                free.insert(VecDeque::new());
                Some(message)
            }
        }
    }

    /// A message of `key` finished running: returns the key's next message, if one waits.
    pub fn finished(&mut self, key: Option<&[u8]>) -> Option<Message> {
        let lookup: Option<Box<[u8]>> = key.map(Box::from);
        let waiting = self.running.get_mut(&lookup)?;
        let next = waiting.pop_front();
        if next.is_none() {
            self.running.remove(&lookup);
        }
        next
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
                        if let Some(next) = gate.finished(k.map(|k| vec![k]).as_deref()) {
                            start(next, &mut running, &mut ran);
                        }
                    }
                }
            }
            // Finish everything left.
            while let Some((&o, &k)) = running.iter().next() {
                running.remove(&o);
                if let Some(next) = gate.finished(k.map(|k| vec![k]).as_deref()) {
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
