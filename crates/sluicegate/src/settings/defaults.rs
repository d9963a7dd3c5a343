//! The runtime's defaults, in one place: [`Settings`](crate::settings::Settings)' `Default`
//! takes them, and the configuration file's defaults are those (the policies keep theirs in
//! their own `Default`s). The README's "Defaults" table is
//! checked against these and those by the tests in `readme.rs`.

use std::time::Duration;

use crate::properties::Properties;

/// Handler calls at once over the whole consumer.
pub(crate) const MAX_IN_FLIGHT: usize = 1_000;

/// The most handler calls at once within one partition when none is set (the key and
/// unordered modes).
pub(crate) const MAX_IN_FLIGHT_PER_PARTITION: usize = 1_024;

/// Batches at once in the unordered mode with a batch handler: what the global limit allowed
/// with default batches (1,000 / 200) before it was a setting of its own.
pub(crate) const MAX_BATCHES_IN_FLIGHT: usize = 5;

/// How often finished offsets are committed.
pub(crate) const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// How long running handlers get to finish at a revocation or shutdown.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// librdkafka properties whose defaults the runtime changes (each can be set again), and why.
pub(crate) const CLIENT_PROPERTIES: &[(&str, &str)] = &[
    // A new group misses nothing.
    ("auto.offset.reset", "earliest"),
    // The runtime lets librdkafka's bounded prefetch queue fill as a brake (see
    // `BufferLimits`); librdkafka's default 1 s back-off once it is full leaves the consumer
    // idle long after the handlers have caught up.
    ("fetch.queue.backoff.ms", "20"),
    // After an outage, librdkafka's defaults (reconnect back-off up to 10 s, fetch error
    // back-off 500 ms) kept consumption stopped for 5 to 12 s after the broker was back
    // (tests/reliability.rs); these resume it within a second, as the Java client's do.
    ("reconnect.backoff.max.ms", "1000"),
    ("fetch.error.backoff.ms", "100"),
    // The log ends behind the lag figures come from librdkafka's statistics.
    ("statistics.interval.ms", "5000"),
];

/// The `group.id` librdkafka is given for a reader from the beginning, which joins no group
/// and commits nothing (librdkafka refuses to `assign` without one).
pub(crate) const READER_GROUP_ID: &str = "sluicegate-reader";

/// Settings the runtime manages itself; overriding them would break its guarantees.
pub(crate) const MANAGED: &[&str] = &[
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "bootstrap.servers",
];

/// Why a [`MANAGED`] property is refused when set as a librdkafka property.
pub(crate) const MANAGED_REASON: &str =
    "managed by Sluicegate; set bootstrap servers and group id with the builder, \
     and leave offset commits to the runtime";

/// The settings the runtime gives every consumer client it makes, before the program's own:
/// offsets are the runtime's to store and commit, the defaults of [`CLIENT_PROPERTIES`], and
/// `group` as `group.id`.
pub(crate) fn consumer_client(group: &str) -> Properties {
    let mut client = Properties::new();
    client
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    for (key, value) in CLIENT_PROPERTIES {
        client.set(*key, *value);
    }
    client.set("group.id", group);
    client
}
