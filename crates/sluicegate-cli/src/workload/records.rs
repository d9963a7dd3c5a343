//! The records the demo, the bench and the library's reliability tests write, each generated
//! from its sequence number so that a run needs no random state and a check can predict it:
//! - the demo's events ([`event`]): shop orders and page clicks, keyed by user, some poison;
//! - the bench's records ([`bench_payload`], [`bench_key`]): JSON padded to a size;
//! - the reliability scenarios' records ([`scenario_record`], [`records`]): `r:ID:KEY:SEQ`, each
//!   key's records numbered in the order they are written, for the checker's key order;
//!
//! and when a record of a stream written at a steady rate is due ([`due`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When record `seq` of a stream written at `rate` records per second is due, after the
/// stream's start.
pub fn due(seq: u64, rate: u64) -> Duration {
    Duration::from_secs_f64(seq as f64 / rate.max(1) as f64)
}

/// Record `seq` of the bench: `{"id":SEQ,"pad":"..."}`, padded to `size` bytes when the
/// envelope fits in it.
pub fn bench_payload(seq: u64, size: usize) -> Vec<u8> {
    const PAD: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let head = format!(r#"{{"id":{seq},"pad":""#);
    let mut out = Vec::with_capacity(size.max(head.len() + 2));
    out.extend_from_slice(head.as_bytes());
    let pad = size.saturating_sub(head.len() + 2);
    out.extend(PAD.iter().cycle().take(pad));
    out.extend_from_slice(b"\"}");
    out
}

/// The key of bench record `seq` among `keys` distinct keys.
pub fn bench_key(seq: u64, keys: u64) -> String {
    format!("key-{:04}", seq % keys.max(1))
}

/// The payload of scenario record `id`, the `seq`-th of key `key`.
pub fn payload(id: u64, key: &str, seq: u64) -> String {
    format!("r:{id}:{key}:{seq}")
}

/// `(id, key, seq)` of a scenario payload; `None` for anything else (hostile records).
pub fn parse(payload: &str) -> Option<(u64, &str, u64)> {
    let rest = payload.strip_prefix("r:")?;
    let (id, rest) = rest.split_once(':')?;
    let (key, seq) = rest.rsplit_once(':')?;
    Some((id.parse().ok()?, key, seq.parse().ok()?))
}

/// Scenario record `id` of a stream spread round-robin over `keys` keys: (key, payload); each
/// key's sequence numbers count up as ids do.
pub fn scenario_record(id: u64, keys: u64) -> (String, String) {
    let keys = keys.max(1);
    let key = format!("k{}", id % keys);
    let payload = payload(id, &key, id / keys);
    (key, payload)
}

/// `count` scenario records with ids `first..first + count` (see [`scenario_record`]).
pub fn records(first: u64, count: u64, keys: u64) -> Vec<(String, String)> {
    (first..first + count)
        .map(|id| scenario_record(id, keys))
        .collect()
}

/// One event as it travels in a record value (JSON).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A shop order.
    Order {
        event_id: String,
        user_id: String,
        order_id: String,
        amount_cents: u64,
        currency: String,
        items: u32,
        ts: i64,
    },
    /// A page view or click.
    Click {
        event_id: String,
        user_id: String,
        page: String,
        session_id: String,
        ts: i64,
    },
}

const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
const PAGES: [&str; 5] = ["/", "/search", "/products", "/cart", "/checkout"];

/// A well-mixed 64-bit hash of `x` (splitmix64), the source of every "random" field.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether event `seq` is poison when a fraction `rate` (0 to 1) of events is: a fixed,
/// well-spread choice by hash, so producer, handler and checks agree on exactly which.
pub fn is_poison(seq: u64, rate: f64) -> bool {
    // The top 53 bits of the hash, as a uniform number in [0, 1).
    let unit = (mix(seq ^ 0x0bad_f00d) >> 11) as f64 / (1u64 << 53) as f64;
    rate > 0.0 && unit < rate
}

impl Event {
    /// The sequence number the event was generated from (read back from its `event_id`).
    pub fn seq(&self) -> Option<u64> {
        let (Event::Order { event_id, .. } | Event::Click { event_id, .. }) = self;
        event_id.strip_prefix("evt-")?.parse().ok()
    }
}

/// The user (record key) of event `seq` among `keys` users.
pub fn user_key(seq: u64, keys: u64) -> String {
    format!("user-{:06}", mix(seq) % keys.max(1))
}

/// Event number `seq`, for one of `keys` users, stamped `ts` (ms since the epoch).
/// About one event in four is an order, the rest are clicks.
pub fn event(seq: u64, keys: u64, ts: i64) -> Event {
    let r = mix(seq ^ 0x5eed);
    let event_id = format!("evt-{seq:010}");
    let user_id = user_key(seq, keys);
    if r.is_multiple_of(4) {
        Event::Order {
            event_id,
            user_id,
            order_id: format!("ord-{:08x}", (r >> 8) as u32),
            amount_cents: 199 + (r >> 16) % 50_000,
            currency: CURRENCIES[((r >> 40) % 3) as usize].into(),
            items: 1 + ((r >> 48) % 6) as u32,
            ts,
        }
    } else {
        let page = PAGES[((r >> 8) % PAGES.len() as u64) as usize];
        Event::Click {
            event_id,
            page: if page == "/products" {
                format!("/products/{}", (r >> 16) % 10_000)
            } else {
                page.into()
            },
            session_id: format!("sess-{:08x}", mix(r) as u32),
            user_id,
            ts,
        }
    }
}
