//! `sluicegate`: the command-line tool of the Sluicegate consumer framework.
//!
//! This file holds the command-line definitions only; each command lives in `commands/`.

mod api_versions;
mod cluster;
mod commands;
mod consumer_protocol;
mod cpu;
mod logging;
mod meter;
mod produce;
mod progress;
mod reach;
mod read_back;
mod record;
mod report;
mod settings;
mod workload;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use commands::bench::Work;
use logging::LogFormat;

/// Run, benchmark and diagnose Kafka consumers built with Sluicegate.
#[derive(Parser, Debug)]
#[command(name = "sluicegate", version, about, long_about = None)]
struct Cli {
    /// How log lines (on stderr) look: `text` for people, `json` for one JSON object per line.
    /// What is logged is chosen with RUST_LOG (default: warnings and errors).
    #[arg(long, global = true, value_enum, env = "SLUICEGATE_LOG_FORMAT",
          default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a consumer that delivers each message to an HTTP service or to a child process (any
    /// language), with the library's guarantees: at-least-once commits, retries, dead-letter
    /// topic, circuit breaker, metrics and health endpoints, graceful drain on SIGTERM.
    ///
    /// The configuration file is the library's (`kafka:`, see the README's "Configuration")
    /// with a `sink:` section (see the README's "sluicegate run"); the KAFKA_* environment
    /// variables and --set override it. A bad sink or setting is reported, naming its key,
    /// before anything is consumed. Runs until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Produce realistic events to an embedded broker and consume them with Sluicegate,
    /// then check that nothing was lost and order was kept.
    Demo(DemoArgs),
    /// Measure throughput.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Work with dead-letter topics.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Work with consumer groups' committed offsets.
    #[command(subcommand)]
    Offsets(OffsetsCommand),
    /// Show how far a consumer group is behind: per partition, its committed offset, the log
    /// end (high watermark) and the lag between them, and the total.
    ///
    /// Lag is the log end minus the committed offset (0 when the committed offset is at or past
    /// the log end). Where the group has committed nothing, the lag is counted from the log
    /// start (low watermark), and the output says so. Without --topic, the topics are those the
    /// group has committed offsets on, and those its members are assigned where the broker
    /// reports assignments. Exits non-zero when the group or a topic is unknown or the broker
    /// cannot be reached within --timeout-secs.
    Lag(LagArgs),
    /// Check a cluster from a client's side, one verdict (OK, WARN, FAIL or SKIP) per check:
    /// bootstrap connectivity, each broker, the APIs the brokers support, topic metadata and,
    /// with --group, the group's state, members and lag.
    ///
    /// WARN marks something a broker cannot tell or do (a broker without group listing, say);
    /// FAIL marks something consumers need that is broken. Exits non-zero when a check fails.
    Diagnose(DiagnoseArgs),
    /// Print a topic's records, like kcat -C or kafka-console-consumer: tail it, or read a range
    /// (from the beginning, the end, offsets or a time; up to its end or a count), as text or
    /// JSON lines.
    ///
    /// Without --group nothing is committed; with --group the offsets of the records printed
    /// are committed for that group (and where it has committed, reading starts there unless
    /// --from or --from-time says otherwise). Runs until --until-end or --count is met, or until
    /// SIGINT or SIGTERM. Exits non-zero when the topic or a partition does not exist.
    Consume(ConsumeArgs),
    /// Write lines from stdin to a topic, like kcat -P or kafka-console-producer: one record per
    /// line (its key before --key-separator, when given), with headers (-H), to a partition or
    /// the default partitioner's choice. Waits for every delivery; exits non-zero listing the
    /// lines that failed.
    Produce(ProduceArgs),
    /// List, describe and create topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Work with consumer configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Check a consumer configuration file (a `kafka:` section; see the README's
    /// "Configuration" section; a `sluicegate run` file's `sink:` section too): load it, apply the KAFKA_* environment variables over it,
    /// check every rule and librdkafka's view of its properties (no broker is contacted), and
    /// print the effective configuration with secrets redacted and, for each value, where it
    /// came from (file line and column, environment variable, or default). Warnings (such as
    /// KAFKA_* and SLUICEGATE_* variables it does not know, with the closest known name) are
    /// listed and do not fail the check. Exits non-zero listing every error, one per line,
    /// when there is any.
    Check(ConfigCheckArgs),
}

/// Options of `sluicegate run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The worker's configuration file: the library's `kafka:` section and a `sink:` section.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: std::path::PathBuf,
    /// The Kafka cluster (`host:port,...`). Wins over the configuration's `bootstrap_servers`
    /// (file, KAFKA_BOOTSTRAP_SERVERS, --set).
    #[arg(long, value_name = "ADDR")]
    pub bootstrap: Option<String>,
    /// Override one setting of the `kafka:` section, as `PATH=VALUE` (repeatable), e.g.
    /// `--set max_in_flight=64`; wins over the file and the environment.
    #[arg(long = "set", value_name = "PATH=VALUE", value_parser = parse_setting)]
    pub set: Vec<(String, String)>,
    /// A librdkafka property of the consumer, as `KEY=VALUE` (repeatable); wins over the
    /// configuration.
    #[arg(short = 'X', long = "librdkafka", value_name = "KEY=VALUE",
          value_parser = parse_key_value)]
    pub properties: Vec<(String, String)>,
    /// Try it without a cluster: start an embedded broker, write N sample JSON records to each
    /// configured topic (2 partitions each), deliver them, and stop once all are committed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          conflicts_with = "bootstrap")]
    pub embedded: Option<u64>,
}

/// Options of `sluicegate consume`.
#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    /// The topic to read.
    #[arg(value_name = "TOPIC")]
    pub topic: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Where reading starts: `beginning` (each partition's oldest record), `end` (only records
    /// written from now on), an offset for every partition (`1234`), or `P:OFFSET` for partition
    /// P (repeatable, or comma-separated; only those partitions are read unless --partition is
    /// given). Offsets outside what a partition holds are moved to its nearest end. Default:
    /// with --group, where the group's committed offsets are (else the end); without, the end.
    #[arg(short = 'o', long = "from", value_name = "WHERE", value_delimiter = ',',
          value_parser = commands::consume::parse_start, conflicts_with = "from_time",
          allow_negative_numbers = true)]
    pub from: Vec<commands::consume::Start>,
    /// Start at the first record at or after TIME (RFC 3339, like 2024-05-01T12:00:00Z, or
    /// milliseconds since the epoch), in each partition.
    #[arg(long, value_name = "TIME", value_parser = commands::dlq::parse_time)]
    pub from_time: Option<i64>,
    /// Read only this partition (repeatable, or comma-separated; default: every partition).
    #[arg(
        short = 'p',
        long = "partition",
        value_name = "P",
        value_delimiter = ','
    )]
    pub partitions: Vec<i32>,
    /// Stop at the end of each partition: its high watermark when reading starts.
    #[arg(short = 'e', long)]
    pub until_end: bool,
    /// Stop after this many records.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Commit the offsets of the records printed for this consumer group (start where it has
    /// committed, unless --from or --from-time says otherwise). Without it, nothing is committed.
    #[arg(short = 'g', long, value_name = "GROUP")]
    pub group: Option<String>,
    /// How each record is printed as text (default: its value): the placeholders `{topic}`,
    /// `{partition}`, `{offset}`, `{key}`, `{value}`, `{headers}` (as `name=value,...`) and
    /// `{timestamp}` (ms since the epoch), and the escapes `\n` and `\t`; a newline ends each
    /// record.
    #[arg(short = 'f', long, value_name = "FORMAT", conflicts_with = "json",
          value_parser = commands::consume::parse_format)]
    pub format: Option<commands::consume::Format>,
    /// Print each record as one JSON object per line: topic, partition, offset, key, value,
    /// headers and timestamp (bytes that are not UTF-8 as `{"base64": "..."}`, as `run`'s exec
    /// protocol sends them).
    #[arg(long)]
    pub json: bool,
    /// A librdkafka property of the consumer, as `KEY=VALUE` (repeatable); wins over the
    /// configuration.
    #[arg(short = 'X', long = "librdkafka", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub properties: Vec<(String, String)>,
}

/// Options of `sluicegate produce`.
#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    /// The topic to write. It must exist.
    #[arg(value_name = "TOPIC")]
    pub topic: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Split each line at the first SEP: the key before it, the value after it (a line without
    /// SEP fails). Default: no key, the whole line is the value.
    #[arg(short = 'K', long, value_name = "SEP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub key_separator: Option<String>,
    /// Write every record to this partition (default: by key, or spread when there is none).
    #[arg(short = 'p', long, value_name = "P", value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// A header on every record, as `NAME=VALUE` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE",
          value_parser = commands::produce::parse_header)]
    pub headers: Vec<(String, String)>,
    /// Give up on a record not acknowledged within this many seconds (librdkafka's
    /// `message.timeout.ms`).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
    /// A librdkafka property of the producer, as `KEY=VALUE` (repeatable), e.g.
    /// `-X linger.ms=0`; wins over the configuration and the defaults (`acks=all`).
    #[arg(short = 'X', long = "librdkafka", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub properties: Vec<(String, String)>,
    /// Print the summary as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// Options of `sluicegate config check`.
#[derive(Args, Debug, Clone)]
pub struct ConfigCheckArgs {
    /// The YAML configuration file.
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// Check the file alone: do not apply the KAFKA_* environment variables (which are
    /// applied by default, as the library's `ConsumerConfig::load_from_env` does), nor warn
    /// about unknown ones.
    #[arg(long)]
    pub no_env: bool,
    /// Print the result as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
enum TopicsCommand {
    /// List topics with their partition counts (Kafka's own `__` topics only with --all).
    List(TopicsListArgs),
    /// Show a topic's partitions (leader, replicas, in-sync replicas, low and high watermarks)
    /// and its configs, where the broker can describe them.
    Describe(TopicsDescribeArgs),
    /// Create a topic through the admin API (CreateTopics). Refused, changing nothing, when the
    /// topic exists or the broker does not support CreateTopics.
    Create(TopicsCreateArgs),
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// Re-publish dead-lettered messages (original key, value and headers) to the topic they
    /// came from, or to `--to`, picked by error kind or exception class, failure time and
    /// original topic, partition and offset. Reads the dead letters of Sluicegate and of
    /// Spring Kafka's DeadLetterPublishingRecoverer.
    Replay(DlqReplayArgs),
}

#[derive(Subcommand, Debug)]
enum OffsetsCommand {
    /// Move a consumer group's committed offsets on a topic while the group has no active
    /// members: to the earliest or latest offset, to an offset, or to the first record at or
    /// after a time.
    Reset(OffsetsResetArgs),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Write records to a topic, as fast as possible or at a target rate, and report the rate
    /// achieved.
    Produce(BenchProduceArgs),
    /// Consume the same records twice, with a plain rdkafka loop and with the Sluicegate
    /// runtime, and compare: a backlog (filled first, or an existing topic with --no-fill), or
    /// with --rate a live stream written while it is read.
    Consume(BenchConsumeArgs),
    /// Read one backlog on the embedded broker with `run`'s HTTP sink and with a hand-written
    /// library handler making the same POST to a local service that answers at once, in turn,
    /// and compare msg/s and p99 per request (min/median/max of the ratios over the rounds).
    Run(BenchRunArgs),
}

/// Options of `sluicegate bench run`.
#[derive(Args, Debug, Clone)]
pub struct BenchRunArgs {
    /// Messages in the backlog.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Partitions of the backlog's topic.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub partitions: i32,
    /// How messages of a partition may run in parallel.
    #[arg(long, value_enum, default_value_t = OrderingArg::Unordered)]
    pub ordering: OrderingArg,
    /// The most requests in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_in_flight: u64,
    /// How many times to read the backlog with each handler.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
}

/// Options of `sluicegate demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// How many events to produce.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Partitions of the demo topic.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub partitions: i32,
    /// Distinct keys (user ids) among the events.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Produce at most this many events per second (default: as fast as possible, which
    /// makes latency mostly time spent queued behind the backlog).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Milliseconds the sample handler sleeps per message, to play a slow downstream call.
    #[arg(long, default_value_t = 0)]
    pub handler_sleep_ms: u64,
    /// How messages of a partition may run in parallel.
    #[arg(long, value_enum, default_value_t = OrderingArg::Partition)]
    pub ordering: OrderingArg,
    /// The most handler calls running at once.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_in_flight: u64,
    /// The cluster to use instead of the embedded broker: used when --bootstrap, --config,
    /// KAFKA_BOOTSTRAP_SERVERS or --set bootstrap_servers names one. The demo creates a topic
    /// and a group with names unique to the run.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Give up waiting for the consumer after this many seconds (default: from the
    /// message count and handler sleep).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: Option<u64>,
    /// Make this fraction of the events (0 <= F < 1, chosen by hashing their sequence numbers)
    /// poison: the handler always fails them with a retryable error, and after 3 attempts
    /// they go to the dead-letter topic `<topic>.dlq`, which is read back and checked. A
    /// fault-free pass of the same size runs first, for the throughput ratio.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_fail_rate,
          allow_negative_numbers = true)]
    pub fail_rate: f64,
    /// Handle events with a batch handler, in batches of up to N events (or whatever arrived
    /// within 100 ms): one `--handler-sleep-ms` wait per batch, and a batch holding a poison
    /// event fails as a whole, so the runtime bisects it to dead-letter that event alone.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: Option<u64>,
    /// Serve `/metrics`, `/health/live` and `/health/ready` here while the events are handled
    /// (port 0 picks a free port; the address is printed on stderr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub http: std::net::SocketAddr,
    /// Serve no HTTP endpoint.
    #[arg(long)]
    pub no_http: bool,
    /// Print the summary as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// Options of `sluicegate dlq replay`.
#[derive(Args, Debug, Clone)]
pub struct DlqReplayArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The dead-letter topic to read (from its start up to its end when the replay starts).
    #[arg(long, value_name = "DLQ_TOPIC")]
    pub topic: String,
    /// Send every record to this topic instead of the one it was dead-lettered from.
    #[arg(long, value_name = "TOPIC")]
    pub to: Option<String>,
    /// Replay only records that failed with this kind of error (repeatable): retryable,
    /// permanent, skip, panic, timeout or decode. Spring Kafka's records have no kind: they
    /// never match.
    #[arg(long = "error-kind", value_name = "KIND")]
    pub error_kinds: Vec<sluicegate::ErrorKind>,
    /// Replay only Spring Kafka's records whose exception, or its cause, is of this Java class
    /// (repeatable): its full name (java.lang.IllegalStateException) or its simple name
    /// (IllegalStateException). Sluicegate's records have no class: they never match.
    #[arg(long = "exception-class", value_name = "CLASS",
          value_parser = commands::dlq::parse_class)]
    pub exception_classes: Vec<String>,
    /// Replay only records consumed from this topic (repeatable).
    #[arg(long = "original-topic", value_name = "TOPIC",
          value_parser = commands::dlq::parse_topic)]
    pub original_topics: Vec<String>,
    /// Replay only records consumed from this partition (repeatable).
    #[arg(long = "original-partition", value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(0..))]
    pub original_partitions: Vec<i32>,
    /// Replay only records whose last failure was at or after TIME (RFC 3339, like
    /// 2024-05-01T12:00:00Z, or milliseconds since the epoch). For Spring Kafka's records,
    /// which do not record it, the time the dead letter was written (its timestamp).
    #[arg(long, value_name = "TIME", value_parser = commands::dlq::parse_time)]
    pub since: Option<i64>,
    /// Replay only records whose last failure was at or before TIME (see --since).
    #[arg(long, value_name = "TIME", value_parser = commands::dlq::parse_time)]
    pub until: Option<i64>,
    /// Replay only records whose original offset is at least N.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub from_offset: Option<i64>,
    /// Replay only records whose original offset is at most N.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub to_offset: Option<i64>,
    /// List what would be sent (one line per record) and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// A librdkafka property for the reader and the producer, as `KEY=VALUE` (repeatable),
    /// e.g. `-X linger.ms=20`; wins over the configuration. The producer stays idempotent with
    /// `acks=all`.
    #[arg(short = 'X', long = "librdkafka", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub properties: Vec<(String, String)>,
    /// Give up reading the dead-letter topic after this many seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
    /// Print the summary as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// Options of `sluicegate offsets reset`.
#[derive(Args, Debug, Clone)]
pub struct OffsetsResetArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The consumer group whose committed offsets move. It must have no active members: the
    /// reset is refused while it has (stop its consumers first).
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// The topic whose partitions move.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// Where each partition goes: `earliest` (its low watermark), `latest` (its high
    /// watermark), an offset like `1234` (clamped to [low, high]), or a time, RFC 3339 like
    /// `2024-05-01T12:00:00Z` or milliseconds since the epoch like `ms:1714564800000`: the
    /// first record at or after it (the high watermark where there is none). A plain integer
    /// is always an offset.
    #[arg(long, value_name = "WHERE", value_parser = commands::offsets::parse_target,
          allow_negative_numbers = true)]
    pub to: commands::offsets::Target,
    /// Move only this partition (repeatable, or comma-separated; default: every partition).
    #[arg(long = "partition", value_name = "P", value_delimiter = ',')]
    pub partitions: Vec<i32>,
    /// Print, per partition, the committed offset and the new one, and change nothing. Refused,
    /// like the reset itself, while the group has active members.
    #[arg(long)]
    pub dry_run: bool,
    /// A librdkafka property for the client, as `KEY=VALUE` (repeatable), e.g.
    /// `-X client.id=ops`; wins over the configuration.
    #[arg(short = 'X', long = "librdkafka", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub properties: Vec<(String, String)>,
    /// Print the summary as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// How a command connects, as the library does: a configuration file, the `KAFKA_*`
/// environment, `--set` overrides and `--bootstrap` (in that order of precedence, the last
/// winning). Every client the command makes (admin clients, consumers, producers) connects
/// with these settings, security (TLS, SASL) included; `-X` librdkafka properties come last.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// The Kafka cluster (`host:port,...`). Wins over the configuration's
    /// `bootstrap_servers` (file, KAFKA_BOOTSTRAP_SERVERS, --set).
    #[arg(long, value_name = "ADDR")]
    pub bootstrap: Option<String>,
    /// A configuration file in the library's YAML format (a `kafka:` section, see the README's
    /// "Configuration"; check it with `sluicegate config check FILE`). Its connection settings
    /// are used: `bootstrap_servers`, `security` (TLS, SASL) and `librdkafka` properties; the
    /// KAFKA_* environment variables override it, as they do for the library.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Override one setting of the configuration, as `PATH=VALUE` (repeatable), e.g.
    /// `--set security.sasl_username=bob`: any setting that has a KAFKA_* variable, by its path
    /// in the file (with or without `kafka.`), its value written as for the variable
    /// (durations also like `30s`). Wins over the file and the environment.
    #[arg(long = "set", value_name = "PATH=VALUE", value_parser = parse_setting)]
    pub set: Vec<(String, String)>,
}

/// How a command reaches a cluster: its connection settings and time budget.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// A librdkafka property for every client, as `KEY=VALUE` (repeatable), e.g.
    /// `-X client.id=ops`; wins over the configuration. Secret values are never printed or
    /// logged.
    #[arg(short = 'X', long = "librdkafka", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub properties: Vec<(String, String)>,
    /// Give up when the cluster has not answered everything within this many seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
}

/// Options of `sluicegate lag`.
#[derive(Args, Debug, Clone)]
pub struct LagArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The consumer group.
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// Measure on this topic (repeatable, or comma-separated; default: the topics the group
    /// has committed offsets on or is assigned).
    #[arg(long = "topic", value_name = "TOPIC", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Print the result as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// Options of `sluicegate diagnose`.
#[derive(Args, Debug, Clone)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Also check this consumer group: its state, members, assignments and lag.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Check this topic's metadata (repeatable, or comma-separated; default: every topic, and
    /// for the lag, the group's topics).
    #[arg(long = "topic", value_name = "TOPIC", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Print the checks as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// Options of `sluicegate topics list`.
#[derive(Args, Debug, Clone)]
pub struct TopicsListArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Also list internal topics (names starting with `__`).
    #[arg(long)]
    pub all: bool,
    /// Print the list as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// Options of `sluicegate topics describe`.
#[derive(Args, Debug, Clone)]
pub struct TopicsDescribeArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The topic.
    #[arg(value_name = "TOPIC")]
    pub topic: String,
    /// Print the description as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// Options of `sluicegate topics create`.
#[derive(Args, Debug, Clone)]
pub struct TopicsCreateArgs {
    /// The topic to create.
    #[arg(value_name = "TOPIC")]
    pub topic: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// How many partitions.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// How many replicas of each partition (default: the broker's default).
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(i32).range(1..=32767))]
    pub replication_factor: Option<i32>,
    /// A topic config, as `KEY=VALUE` (repeatable), e.g. `--topic-config retention.ms=86400000`.
    #[arg(long = "topic-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub topic_config: Vec<(String, String)>,
    /// A librdkafka property for the clients, as `KEY=VALUE` (repeatable); wins over the
    /// configuration.
    #[arg(short = 'X', long = "librdkafka", value_name = "KEY=VALUE",
          value_parser = parse_key_value)]
    pub properties: Vec<(String, String)>,
    /// Give up when the broker has not answered everything within this many seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
    /// Print the outcome as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

impl TopicsCreateArgs {
    /// How this command reaches the cluster.
    pub fn cluster(&self) -> ClusterArgs {
        ClusterArgs {
            connect: self.connect.clone(),
            properties: self.properties.clone(),
            timeout_secs: self.timeout_secs,
        }
    }
}

/// What bench records look like: size and key spread.
#[derive(Args, Debug, Clone)]
pub struct BenchRecordArgs {
    /// Payload size in bytes (a JSON document padded to this size).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(32..=1_000_000))]
    pub size: u64,
    /// Distinct record keys, spread round-robin over the records.
    #[arg(long, default_value_t = commands::bench::DEFAULT_KEYS, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Partitions of the topic, when the bench creates it.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub partitions: i32,
}

/// Options of `sluicegate bench produce`.
#[derive(Args, Debug, Clone)]
pub struct BenchProduceArgs {
    /// How many records to write (default 1,000,000 unless --duration is given).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "duration_secs")]
    pub messages: Option<u64>,
    /// Write for this many seconds instead of a number of records.
    #[arg(long = "duration", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration_secs: Option<u64>,
    /// Write at most this many records per second (default: as fast as possible).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    #[command(flatten)]
    pub record: BenchRecordArgs,
    /// The cluster to use instead of the embedded broker (which lives only as long as the
    /// command: there the run measures the producer alone): used when --bootstrap, --config,
    /// KAFKA_BOOTSTRAP_SERVERS or --set bootstrap_servers names one.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Topic to write (default: a new topic unique to the run). Created if missing.
    #[arg(long)]
    pub topic: Option<String>,
    /// A librdkafka producer property, as `KEY=VALUE` (repeatable), e.g. `-X linger.ms=0`
    /// (the measured producer's only; connection settings come from the configuration).
    #[arg(short = 'X', long = "producer-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub producer_config: Vec<(String, String)>,
    /// Print the result as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// Options of `sluicegate bench consume`.
#[derive(Args, Debug, Clone)]
pub struct BenchConsumeArgs {
    /// How many messages to read: the fill's size (default 1,000,000); with --no-fill at most
    /// what the topic holds (default: all of it).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: Option<u64>,
    #[command(flatten)]
    pub record: BenchRecordArgs,
    /// Read the topic named by --topic as it is (filled by `bench produce` or another tool)
    /// instead of filling it first.
    #[arg(long, requires = "topic", conflicts_with = "rate")]
    pub no_fill: bool,
    /// Live: instead of a backlog, give each pass a fresh topic and write it at this many
    /// records per second for --duration while the pass reads it (for end-to-end latency).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), requires = "duration_secs", conflicts_with = "topic")]
    pub rate: Option<u64>,
    /// With --rate: how long each pass's stream lasts, in seconds.
    #[arg(long = "duration", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), requires = "rate")]
    pub duration_secs: Option<u64>,
    /// What the handler does with each message: `noop`, `json` (decode the payload) or
    /// `sleep:MS`. The raw baseline does the same work, one message at a time.
    #[arg(long, default_value = "noop")]
    pub handler: Work,
    /// How messages of a partition may run in parallel in the Sluicegate runtime.
    #[arg(long, value_enum, default_value_t = OrderingArg::Partition)]
    pub ordering: OrderingArg,
    /// The most handler calls running at once in the Sluicegate runtime.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_in_flight: u64,
    /// Run the Sluicegate side through a batch handler of at most this many messages (the
    /// work is done per message inside the batch).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: Option<u64>,
    /// Run the Sluicegate side without a consumer group: every partition assigned to it
    /// directly (no join, no rebalances), offsets still committed.
    #[arg(long)]
    pub assign: bool,
    /// The cluster to use instead of the embedded broker: used when --bootstrap, --config,
    /// KAFKA_BOOTSTRAP_SERVERS or --set bootstrap_servers names one.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Topic to read (default: a new topic unique to the run). Created and filled unless
    /// --no-fill.
    #[arg(long)]
    pub topic: Option<String>,
    /// A librdkafka consumer property for both measured consumers, as `KEY=VALUE`
    /// (repeatable), e.g. `-X fetch.wait.max.ms=10` (connection settings come from the
    /// configuration).
    #[arg(short = 'X', long = "consumer-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub consumer_config: Vec<(String, String)>,
    /// linger.ms of the bench's own producer (the fill, or each pass's live stream): how long it
    /// may hold a record back to batch it. Latency counts from the record's timestamp, taken
    /// before, so this much of every latency figure can be the producer's; it is reported
    /// beside them. Default: 1 for a live stream (--rate), 5 for the fill.
    #[arg(long, value_name = "MS")]
    pub producer_linger_ms: Option<u64>,
    /// Run only the Sluicegate side (for slow handlers, where the one-at-a-time baseline
    /// would take too long to be worth waiting for).
    #[arg(long)]
    pub skip_baseline: bool,
    /// Also run the Sluicegate side with metrics and the HTTP endpoint on (scraped once a
    /// second), and report what observing costs against the pass without them (the pass
    /// without the endpoint has metrics on too, for its stages, unless `--no-stages`).
    #[arg(long)]
    pub observed: bool,
    /// Run the Sluicegate pass without metrics, so without the records' ages at each stage of
    /// the runtime (polled, handler start, handler end, finished) that it reports otherwise.
    #[arg(long)]
    pub no_stages: bool,
    /// Give up on one consume pass after this many seconds (a live pass: after its stream
    /// ended).
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Print the result as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// The ordering modes, as named on the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderingArg {
    /// One message at a time per partition, in offset order.
    Partition,
    /// Messages with the same key in order; different keys in parallel.
    Key,
    /// No order; bounded concurrency.
    Unordered,
}

impl From<OrderingArg> for sluicegate::Ordering {
    fn from(o: OrderingArg) -> Self {
        match o {
            OrderingArg::Partition => sluicegate::Ordering::Partition,
            OrderingArg::Key => sluicegate::Ordering::Key,
            OrderingArg::Unordered => sluicegate::Ordering::Unordered,
        }
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => {
            settings::check_file_setting(k, v)?;
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// A `--set PATH=VALUE` (its path and value are checked when the configuration is loaded).
fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "expected PATH=VALUE (a setting of the configuration file, like \
             security.sasl_username=bob), got `{s}`"
        )),
    }
}

fn parse_fail_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..1.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "--fail-rate must be a number at least 0 and below 1 (a fraction of the events, \
             like 0.01), got `{s}`"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's poison events fail on purpose: without RUST_LOG, their per-attempt logs
    // would bury the summary.
    let default_filter = match &cli.command {
        Command::Demo(args) if args.fail_rate > 0.0 => "warn,sluicegate::runtime::worker=off",
        _ => "warn",
    };
    logging::init(cli.log_format, default_filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Run(args) => commands::run::run(args).await,
            Command::Bench(BenchCommand::Produce(args)) => commands::bench::produce(args).await,
            Command::Bench(BenchCommand::Consume(args)) => commands::bench::consume(args).await,
            Command::Bench(BenchCommand::Run(args)) => commands::bench::run(args).await,
            Command::Dlq(DlqCommand::Replay(args)) => commands::dlq::replay(args).await,
            Command::Offsets(OffsetsCommand::Reset(args)) => commands::offsets::reset(args).await,
            Command::Lag(args) => commands::lag::run(args).await,
            Command::Diagnose(args) => commands::diagnose::run(args).await,
            Command::Consume(args) => commands::consume::run(args).await,
            Command::Produce(args) => commands::produce::run(args).await,
            Command::Topics(TopicsCommand::List(args)) => commands::topics::list(args).await,
            Command::Topics(TopicsCommand::Describe(args)) => {
                commands::topics::describe(args).await
            }
            Command::Topics(TopicsCommand::Create(args)) => commands::topics::create(args).await,
            Command::Config(ConfigCommand::Check(args)) => commands::config::check(args),
        }
    });
    // The command is over: a blocking call it gave up on (a commit to a broker that went away)
    // must not hold the process.
    runtime.shutdown_background();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
