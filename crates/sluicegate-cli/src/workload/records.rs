//! The demo's events: shop orders and page clicks, keyed by user, generated deterministically
//! from a sequence number so that a run needs no random state and tests can predict them.

use serde::{Deserialize, Serialize};

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
