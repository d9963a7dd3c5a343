//! The runtime's logs (its `tracing` events: a handler failure and its retry, a record
//! dead-lettered, a partition stopped, a broker unreachable) handed to Python's `logging`.
//!
//! An event is formatted on the thread it happens on and queued; the Python side takes the
//! queue when its event loop wakes (each queued record rings the consumers' sockets) and emits
//! each record through `logging.getLogger("sluicegate.<module>")`. So no thread of the
//! consumer ever waits for the GIL to log.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, Weak};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::Shared;

/// Records kept at most while Python does not take them; older ones are dropped (and
/// counted) beyond it.
const KEPT: usize = 10_000;

/// One log record: Python's level number, the logger name, the text.
pub(crate) type Record = (u8, String, String);

#[derive(Default)]
struct Logs {
    records: VecDeque<Record>,
    dropped: u64,
    /// The sockets to ring for a new record: every live consumer's.
    bells: Vec<Weak<Shared>>,
}

static LOGS: Mutex<Logs> = Mutex::new(Logs {
    records: VecDeque::new(),
    dropped: 0,
    bells: Vec::new(),
});

fn logs() -> std::sync::MutexGuard<'static, Logs> {
    LOGS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Routes the runtime's events here, filtered by `SLUICEGATE_LOG` (`tracing`'s `EnvFilter`
/// syntax; `info` by default). Does nothing if the process has a subscriber already.
pub(crate) fn install() {
    let filter =
        EnvFilter::try_from_env("SLUICEGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(ToPython.with_filter(filter))
        .try_init();
}

/// Rings `shared`'s socket for every record queued from now on, while it lives.
pub(crate) fn ring(shared: Weak<Shared>) {
    let mut logs = logs();
    logs.bells.retain(|b| b.strong_count() > 0);
    logs.bells.push(shared);
}

/// The records queued so far, oldest first, and how many were dropped before them.
pub(crate) fn take() -> (Vec<Record>, u64) {
    let mut logs = logs();
    let dropped = std::mem::take(&mut logs.dropped);
    (logs.records.drain(..).collect(), dropped)
}

struct ToPython;

impl<S: Subscriber> Layer<S> for ToPython {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => 40,
            Level::WARN => 30,
            Level::INFO => 20,
            Level::DEBUG => 10,
            Level::TRACE => 5,
        };
        let mut text = Text::default();
        event.record(&mut text);
        let logger = format!("sluicegate.{}", meta.target().replace("::", "."))
            .replace("sluicegate.sluicegate", "sluicegate");
        let bells = {
            let mut logs = logs();
            if logs.records.len() >= KEPT {
                logs.records.pop_front();
                logs.dropped += 1;
            }
            logs.records.push_back((level, logger, text.0));
            logs.bells
                .iter()
                .filter_map(Weak::upgrade)
                .collect::<Vec<_>>()
        };
        for shared in bells {
            shared.ring();
        }
    }
}

/// An event's message followed by its fields as `name=value`.
#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = match field.name() {
            "message" => write!(self.0, "{value:?}"),
            name => write!(self.0, "{name}={value:?}"),
        };
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}
