//! Which Kafka APIs, and which versions of each, a broker supports.
//!
//! librdkafka asks every broker it connects to (ApiVersions, unless `api.version.request` is
//! off) but offers no call that returns the answer; it only logs it, one line per API, with
//! the `feature` debug context. So [`probe`] connects a client with that context on, keeps
//! those lines (passing the others on to the usual log), and reads them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use serde::Serialize;
use sluicegate::config::ClientKind;
use sluicegate::security::ClientSecurity;

use crate::cluster::{self, ClusterMetadata, Deadline, Watched};
use crate::settings::Connection;

/// API keys the commands care about.
pub mod key {
    /// ListOffsets: watermarks.
    pub const LIST_OFFSETS: i16 = 2;
    /// Metadata.
    pub const METADATA: i16 = 3;
    /// Fetch: consuming.
    pub const FETCH: i16 = 1;
    /// OffsetCommit.
    pub const OFFSET_COMMIT: i16 = 8;
    /// OffsetFetch: reading committed offsets.
    pub const OFFSET_FETCH: i16 = 9;
    /// FindCoordinator.
    pub const FIND_COORDINATOR: i16 = 10;
    /// JoinGroup.
    pub const JOIN_GROUP: i16 = 11;
    /// Heartbeat.
    pub const HEARTBEAT: i16 = 12;
    /// LeaveGroup.
    pub const LEAVE_GROUP: i16 = 13;
    /// SyncGroup.
    pub const SYNC_GROUP: i16 = 14;
    /// DescribeGroups: a group's state and members.
    pub const DESCRIBE_GROUPS: i16 = 15;
    /// ListGroups.
    pub const LIST_GROUPS: i16 = 16;
    /// CreateTopics.
    pub const CREATE_TOPICS: i16 = 19;
    /// DescribeConfigs: topic configs.
    pub const DESCRIBE_CONFIGS: i16 = 32;
}

/// The APIs a consumer group member needs: without one of them, consumers cannot work.
pub const CONSUMER_APIS: &[(i16, &str)] = &[
    (key::FETCH, "Fetch"),
    (key::LIST_OFFSETS, "ListOffsets"),
    (key::METADATA, "Metadata"),
    (key::OFFSET_COMMIT, "OffsetCommit"),
    (key::OFFSET_FETCH, "OffsetFetch"),
    (key::FIND_COORDINATOR, "FindCoordinator"),
    (key::JOIN_GROUP, "JoinGroup"),
    (key::HEARTBEAT, "Heartbeat"),
    (key::LEAVE_GROUP, "LeaveGroup"),
    (key::SYNC_GROUP, "SyncGroup"),
];

/// The APIs the operations commands use beyond those: without them, some answers are missing.
pub const ADMIN_APIS: &[(i16, &str)] = &[
    (key::LIST_GROUPS, "ListGroups"),
    (key::DESCRIBE_GROUPS, "DescribeGroups"),
    (key::CREATE_TOPICS, "CreateTopics"),
    (key::DESCRIBE_CONFIGS, "DescribeConfigs"),
];

/// One API a broker supports, with the versions it accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiRange {
    /// The API key.
    pub key: i16,
    /// Its name, as librdkafka spells it (`Metadata`, `Unknown-75?`).
    pub name: String,
    /// The oldest version accepted.
    pub min: i16,
    /// The newest version accepted.
    pub max: i16,
}

/// The APIs one broker listed in its answer to ApiVersions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokerApis {
    /// librdkafka's name of the connection: `host:port/ID`, or `host:port/bootstrap`.
    pub broker: String,
    /// The APIs, in the order the broker listed them.
    pub apis: Vec<ApiRange>,
}

impl BrokerApis {
    /// The range of API `key`, when supported.
    pub fn get(&self, key: i16) -> Option<&ApiRange> {
        self.apis.iter().find(|a| a.key == key)
    }

    /// The names of the APIs of `wanted` the broker does not list.
    pub fn missing(&self, wanted: &[(i16, &str)]) -> Vec<String> {
        wanted
            .iter()
            .filter(|(k, _)| self.get(*k).is_none())
            .map(|(_, name)| name.to_string())
            .collect()
    }
}

/// One log line's part in an ApiVersions answer.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// "Broker API support:": the list of `broker` starts.
    Start { broker: String },
    /// One API of the list of `broker`.
    Api { broker: String, api: ApiRange },
    /// Anything else librdkafka logged about `broker` (it ends a list in progress).
    Other { broker: String },
}

/// Reads one librdkafka log message:
/// `[thrd:NAME]: NAME:   ApiKey Metadata (3) Versions 0..12`. `None` when it is about no
/// broker.
fn parse_line(message: &str) -> Option<Line> {
    let (_, rest) = message.split_once("]: ")?;
    let (broker, text) = rest.split_once(": ")?;
    let broker = broker.to_string();
    let text = text.trim();
    if text == "Broker API support:" {
        return Some(Line::Start { broker });
    }
    let api = text.strip_prefix("ApiKey ").and_then(|api| {
        let (name, rest) = api.split_once(" (")?;
        let (key, rest) = rest.split_once(") Versions ")?;
        let (min, max) = rest.split_once("..")?;
        Some(ApiRange {
            key: key.parse().ok()?,
            name: name.to_string(),
            min: min.parse().ok()?,
            max: max.parse().ok()?,
        })
    });
    Some(match api {
        Some(api) => Line::Api { broker, api },
        None => Line::Other { broker },
    })
}

/// The lists read so far, by broker, and whether each is complete.
#[derive(Default)]
struct Lists {
    by_broker: BTreeMap<String, (Vec<ApiRange>, bool)>,
}

impl Lists {
    fn read(&mut self, line: Line) {
        match line {
            Line::Start { broker } => {
                self.by_broker.insert(broker, (Vec::new(), false));
            }
            Line::Api { broker, api } => {
                if let Some((apis, false)) = self.by_broker.get_mut(&broker) {
                    apis.push(api);
                }
            }
            Line::Other { broker } => {
                if let Some((_, done)) = self.by_broker.get_mut(&broker) {
                    *done = true;
                }
            }
        }
    }

    /// Whether some list is complete and none is still being read.
    fn settled(&self) -> bool {
        !self.by_broker.is_empty() && self.by_broker.values().all(|(_, done)| *done)
    }

    fn complete(&self) -> Vec<BrokerApis> {
        self.by_broker
            .iter()
            .filter(|(_, (apis, done))| *done && !apis.is_empty())
            .map(|(broker, (apis, _))| BrokerApis {
                broker: broker.clone(),
                apis: apis.clone(),
            })
            .collect()
    }
}

/// A client context that reads the ApiVersions lines librdkafka logs and passes every other
/// line on to the usual log; TLS and authentication failures and OAUTHBEARER tokens as every
/// client of the commands has them.
struct ApiVersionLog {
    lists: Mutex<Lists>,
    security: ClientSecurity,
}

impl ClientContext for ApiVersionLog {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: KafkaError, reason: &str) {
        self.security.observe(error, reason);
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.security.generate_oauth_token()
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if matches!(level, RDKafkaLogLevel::Debug) && fac == "APIVERSION" {
            if let (Some(line), Ok(mut lists)) = (parse_line(message), self.lists.lock()) {
                lists.read(line);
            }
        } else {
            DefaultClientContext.log(level, fac, message);
        }
    }
}

impl ConsumerContext for ApiVersionLog {}

impl Watched for ApiVersionLog {
    fn watch(&self) -> &ClientSecurity {
        &self.security
    }
}

/// What one metadata request, made by a client that listens to ApiVersions, found.
pub struct Probe {
    /// The cluster's metadata (every topic).
    pub metadata: ClusterMetadata,
    /// How long the metadata request took, connecting included.
    pub metadata_time: Duration,
    /// The API lists of the brokers the client talked to (usually the bootstrap connection
    /// and the broker it turned out to be); empty when none was seen, e.g. with
    /// `api.version.request=false`.
    pub apis: Vec<BrokerApis>,
}

/// How long to wait for librdkafka's queued log lines after the metadata came.
const LOG_DRAIN: Duration = Duration::from_secs(1);

/// Asks for the cluster's metadata with a client connected as `connection` says (no group),
/// reading the brokers' ApiVersions answers on the way; waits at most until `deadline`.
pub fn probe(connection: &Connection, deadline: Deadline) -> Result<Probe> {
    let mut config = connection.client_config(ClientKind::Consumer);
    config.remove("group.id");
    // Keep any debug contexts given with -X and add the one that logs ApiVersions.
    let debug = match config.get("debug") {
        Some(d) if !d.trim().is_empty() => format!("{d},feature"),
        _ => "feature".to_string(),
    };
    config
        .set("debug", debug)
        .set_log_level(RDKafkaLogLevel::Debug);
    let client: BaseConsumer<ApiVersionLog> = config
        .create_with_context(ApiVersionLog {
            lists: Mutex::default(),
            security: connection.security(&config),
        })
        .map_err(|e| anyhow::anyhow!("cannot create a Kafka client: {e}"))?;
    let started = Instant::now();
    let metadata = cluster::metadata(&client, None, deadline.left())?;
    let metadata_time = started.elapsed();
    // A broker answers ApiVersions before any other request, so its lines are already queued
    // (the log is served by polling): read until the lists are complete.
    let drain_until = Instant::now() + LOG_DRAIN.min(deadline.left());
    loop {
        let settled = client.context().lists.lock().is_ok_and(|l| l.settled());
        if settled || Instant::now() >= drain_until {
            break;
        }
        let _ = client.poll(Duration::from_millis(10));
    }
    let apis = client
        .context()
        .lists
        .lock()
        .map(|l| l.complete())
        .unwrap_or_default();
    Ok(Probe {
        metadata,
        metadata_time,
        apis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "127.0.0.1:9092/bootstrap";

    fn log(text: &str) -> String {
        format!("[thrd:{B}]: {B}: {text}")
    }

    #[test]
    fn log_lines_are_read_as_list_starts_apis_and_others() {
        assert_eq!(
            parse_line(&log("Broker API support:")),
            Some(Line::Start { broker: B.into() })
        );
        assert_eq!(
            parse_line(&log("  ApiKey Metadata (3) Versions 0..12")),
            Some(Line::Api {
                broker: B.into(),
                api: ApiRange {
                    key: 3,
                    name: "Metadata".into(),
                    min: 0,
                    max: 12,
                },
            })
        );
        assert_eq!(
            parse_line(&log("  ApiKey Unknown-75? (75) Versions 0..0")),
            Some(Line::Api {
                broker: B.into(),
                api: ApiRange {
                    key: 75,
                    name: "Unknown-75?".into(),
                    min: 0,
                    max: 0,
                },
            })
        );
        assert_eq!(
            parse_line(&log(
                " Feature MsgVer1: Produce (2..32767) supported by broker"
            )),
            Some(Line::Other { broker: B.into() })
        );
        assert_eq!(parse_line("librdkafka v2.12.1 initialized"), None);
    }

    #[test]
    fn a_list_is_complete_once_another_line_follows_it() {
        let mut lists = Lists::default();
        assert!(!lists.settled());
        for text in [
            "Broker API support:",
            "  ApiKey Fetch (1) Versions 0..16",
            "  ApiKey Metadata (3) Versions 0..12",
        ] {
            lists.read(parse_line(&log(text)).unwrap());
        }
        assert!(!lists.settled());
        assert!(lists.complete().is_empty());
        lists.read(parse_line(&log("Enabling feature MsgVer1")).unwrap());
        assert!(lists.settled());
        let complete = lists.complete();
        assert_eq!(complete.len(), 1);
        assert_eq!(complete[0].broker, B);
        assert_eq!(complete[0].get(1).map(|a| a.max), Some(16));
        assert_eq!(
            complete[0].missing(&[(1, "Fetch"), (19, "CreateTopics")]),
            ["CreateTopics"]
        );
    }
}
