//! Validation: every rule on single settings and between settings, pure; and librdkafka's
//! own view of the properties, asked by creating (not connecting) a client.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::settings::defaults::{self, MANAGED, MANAGED_REASON, READER_GROUP_ID};
use crate::Error;

use super::load::Purpose;
use super::source::property_path;
use super::{human, ConsumerConfig, GroupProtocol, SaslMechanism, SecurityProtocol};
use crate::config_error::{ConfigError, ConfigErrors};
use crate::secret::REDACTED;
use crate::settings::Settings;

/// Kafka brokers' default bounds on the session timeout (`group.min.session.timeout.ms`,
/// `group.max.session.timeout.ms`); a group join with a timeout outside them is refused.
pub const BROKER_SESSION_TIMEOUT: (Duration, Duration) =
    (Duration::from_secs(6), Duration::from_secs(30 * 60));

/// librdkafka's defaults for the timeouts the rules compare.
const SESSION_DEFAULT: Duration = Duration::from_secs(45);
const HEARTBEAT_DEFAULT: Duration = Duration::from_secs(3);
const MAX_POLL_DEFAULT: Duration = Duration::from_secs(300);

/// Whether `name` is a legal Kafka topic name.
fn topic_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a topic name cannot be empty")
    } else if name.len() > 249 {
        Some("a topic name has at most 249 characters")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are not topic names")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("a topic name may hold only ASCII letters, digits, `.`, `_` and `-`")
    } else {
        None
    }
}

/// What is wrong with `id` as a `group.instance.id`, if anything: Kafka refuses the group join
/// of an instance id that is not a legal name (its rule is that of topic names).
pub(crate) fn instance_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("an instance id cannot be empty: leave it unset for a dynamic member")
    } else if id.len() > 249 {
        Some("an instance id has at most 249 characters")
    } else if id == "." || id == ".." {
        Some("`.` and `..` are not instance ids")
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("an instance id may hold only ASCII letters, digits, `.`, `_` and `-` (Kafka's rule)")
    } else {
        None
    }
}

impl ConsumerConfig {
    /// Checks every rule (no I/O) and returns every problem; see also
    /// [`check_client`](Self::check_client) for librdkafka's view.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Warnings: settings that are legal but probably not what is meant.
    pub fn warnings(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        if let Some(s) = self
            .session_timeout
            .filter(|_| self.group_protocol == GroupProtocol::Classic)
        {
            let (lo, hi) = BROKER_SESSION_TIMEOUT;
            if s < lo || s > hi {
                out.push(ConfigError::new(
                    "kafka.session_timeout",
                    human::show(s),
                    format!(
                        "outside Kafka brokers' default bounds ({} to {}): the broker refuses \
                         the group join unless its group.min/max.session.timeout.ms allow it",
                        human::show(lo),
                        human::show(hi)
                    ),
                ));
            }
        }
        if self.group_protocol == GroupProtocol::Classic {
            if let Some(v) = self.librdkafka.0.get("group.remote.assignor") {
                out.push(ConfigError::new(
                    property_path("group.remote.assignor"),
                    v.clone(),
                    "ignored with kafka.group_protocol classic: it chooses the broker's assignor \
                     with kafka.group_protocol consumer",
                ));
            }
        }
        if let Some(id) = self
            .group_instance_id
            .as_ref()
            .filter(|_| self.static_assignment)
        {
            out.push(ConfigError::new(
                "kafka.group_instance_id",
                id.clone(),
                "ignored with kafka.static_assignment: a consumer that assigns itself every \
                 partition joins no group",
            ));
        }
        let sec = &self.security;
        if let Some(url) = sec
            .oauthbearer
            .token_endpoint
            .as_ref()
            .filter(|u| plain_http_elsewhere(u))
        {
            out.push(ConfigError::new(
                "kafka.security.oauthbearer.token_endpoint",
                url.clone(),
                "plain http:// to another machine: the client secret and the tokens cross \
                 the network unencrypted; use https://",
            ));
        }
        if sec.msk_iam.region.is_some()
            && sec.protocol.is_some_and(|p| p != SecurityProtocol::SaslSsl)
        {
            out.push(ConfigError::new(
                "kafka.security.protocol",
                sec.protocol.map(|p| p.as_str()).unwrap_or_default(),
                "MSK's IAM listeners (port 9098) are sasl_ssl",
            ));
        }
        if sec.sasl_mechanism == Some(SaslMechanism::OauthBearer)
            && !sec.oauthbearer.is_set()
            && !sec.msk_iam.is_set()
        {
            out.push(ConfigError::new(
                "kafka.security.sasl_mechanism",
                "OAUTHBEARER",
                "no token provider configured (kafka.security.oauthbearer or \
                 kafka.security.msk_iam): the program must set one in code \
                 (ConsumerBuilder::oauth_token_provider)",
            ));
        }
        if !self.dead_letter.enabled {
            if let Some(t) = &self.dead_letter.topic {
                out.push(ConfigError::new(
                    "kafka.dead_letter.topic",
                    t.clone(),
                    "ignored: kafka.dead_letter.enabled is false",
                ));
            }
        }
        out
    }

    pub(crate) fn problems(&self) -> Vec<ConfigError> {
        self.problems_for(Purpose::Consumer)
    }

    /// Every rule's problems for a configuration loaded for `purpose`.
    pub(crate) fn problems_for(&self, purpose: Purpose) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut err = |path: &str, value: String, reason: &str| {
            out.push(ConfigError::new(path, value, reason));
        };

        // Required settings.
        if self.bootstrap_servers.trim().is_empty() {
            err(
                "kafka.bootstrap_servers",
                String::new(),
                "required: the brokers to bootstrap from, as host:port[,host:port...] \
                 (or KAFKA_BOOTSTRAP_SERVERS)",
            );
        } else if self
            .bootstrap_servers
            .split(',')
            .any(|s| s.trim().is_empty())
        {
            err(
                "kafka.bootstrap_servers",
                self.bootstrap_servers.clone(),
                "an empty entry: expected host:port[,host:port...]",
            );
        }
        if self.read_from_beginning {
            // A reader from the beginning has no group and commits nothing.
            if !self.group_id.trim().is_empty() {
                err(
                    "kafka.group_id",
                    self.group_id.clone(),
                    "not used with kafka.read_from_beginning, which reads every partition \
                     without a group and commits nothing: remove it (and KAFKA_GROUP_ID / \
                     KAFKA_CONSUMER_GROUP), or set read_from_beginning to false",
                );
            }
            if self.static_assignment {
                err(
                    "kafka.static_assignment",
                    "true".into(),
                    "not with kafka.read_from_beginning: a static assignment resumes from a \
                     group's commits, a reader from the beginning starts over at every start; \
                     choose one",
                );
            }
        } else if purpose == Purpose::Consumer && self.group_id.trim().is_empty() {
            err(
                "kafka.group_id",
                String::new(),
                "required: the consumer group (or KAFKA_GROUP_ID / KAFKA_CONSUMER_GROUP), unless \
                 kafka.read_from_beginning is true",
            );
        }
        if let Some(id) = &self.group_instance_id {
            if let Some(problem) = instance_id_problem(id) {
                err("kafka.group_instance_id", id.clone(), problem);
            }
        }
        if purpose == Purpose::Consumer && self.topics.is_empty() {
            err(
                "kafka.topics",
                String::new(),
                "required: at least one topic (or KAFKA_TOPICS, comma-separated)",
            );
        }
        for (i, topic) in self.topics.iter().enumerate() {
            if let Some(problem) = topic_problem(topic) {
                err(&format!("kafka.topics[{i}]"), topic.clone(), problem);
            } else if self.topics[..i].contains(topic) {
                err(
                    &format!("kafka.topics[{i}]"),
                    topic.clone(),
                    "listed twice: each topic once",
                );
            }
        }

        // The rules of every consumer, from code or file: one validation.
        let mut settings = Settings::default();
        self.apply_to(&mut settings);
        for p in settings.problems(&|s| format!("kafka.{s}")) {
            err(&format!("kafka.{}", p.setting), p.value, &p.reason);
        }

        // Counts of the file's own settings (librdkafka's fetch properties).
        let counts = [
            ("kafka.fetch.min_bytes", self.fetch.min_bytes),
            (
                "kafka.fetch.max_partition_bytes",
                self.fetch.max_partition_bytes,
            ),
            ("kafka.fetch.max_bytes", self.fetch.max_bytes),
            (
                "kafka.fetch.queued_max_kbytes",
                self.fetch.queued_max_kbytes,
            ),
        ];
        for (path, value) in counts {
            if value == Some(0) {
                err(path, "0".into(), "must be at least 1");
            }
        }

        // Durations of the file's own settings (librdkafka's group timeouts).
        let durations = [
            ("kafka.session_timeout", self.session_timeout),
            ("kafka.heartbeat_interval", self.heartbeat_interval),
            ("kafka.max_poll_interval", self.max_poll_interval),
        ];
        for (path, value) in durations {
            if value == Some(Duration::ZERO) {
                err(path, "0s".into(), "must be above zero, like 100ms or 5s");
            }
        }

        // Dead letters.
        if let Some(topic) = &self.dead_letter.topic {
            // One among the consumed topics is the one validation's (`Settings::problems`).
            if let Some(problem) = topic_problem(topic) {
                err("kafka.dead_letter.topic", topic.clone(), problem);
            }
        }

        // Group timeouts (librdkafka's defaults where unset); the broker's with the consumer
        // group protocol.
        if self.group_protocol == GroupProtocol::Consumer {
            for (path, value, key) in [
                (
                    "kafka.session_timeout",
                    self.session_timeout,
                    "session.timeout.ms",
                ),
                (
                    "kafka.heartbeat_interval",
                    self.heartbeat_interval,
                    "heartbeat.interval.ms",
                ),
            ] {
                if let Some(v) = value {
                    err(path, human::show(v), &not_with_consumer(key));
                }
            }
        } else {
            self.classic_timeout_problems(&mut out);
        }
        let mut err = |path: &str, value: String, reason: &str| {
            out.push(ConfigError::new(path, value, reason));
        };

        // Security.
        let s = &self.security;
        let protocol = s.protocol;
        let sasl = protocol.is_some_and(SecurityProtocol::is_sasl);
        let tls = protocol.is_some_and(SecurityProtocol::is_tls);
        match (s.sasl_mechanism, sasl) {
            (Some(m), false) => err(
                "kafka.security.sasl_mechanism",
                m.as_str().into(),
                &format!(
                    "needs a SASL protocol: set kafka.security.protocol to sasl_ssl or \
                     sasl_plaintext (it is {})",
                    protocol.map_or("plaintext, the default", SecurityProtocol::as_str)
                ),
            ),
            (None, true) => err(
                "kafka.security.sasl_mechanism",
                String::new(),
                &format!(
                    "required with protocol {}: one of {}",
                    protocol.map_or("", SecurityProtocol::as_str),
                    SaslMechanism::NAMES.join(", ")
                ),
            ),
            _ => {}
        }
        if let Some(m) = s.sasl_mechanism.filter(|m| m.needs_password()) {
            if s.sasl_username.as_deref().is_none_or(str::is_empty) {
                err(
                    "kafka.security.sasl_username",
                    String::new(),
                    &format!("required with SASL mechanism {m} (or KAFKA_SASL_USERNAME)"),
                );
            }
            if s.sasl_password
                .as_ref()
                .is_none_or(|p| p.expose().is_empty())
            {
                err(
                    "kafka.security.sasl_password",
                    String::new(),
                    &format!("required with SASL mechanism {m} (or KAFKA_SASL_PASSWORD)"),
                );
            }
        }
        if s.sasl_mechanism.is_none_or(|m| !m.needs_password()) {
            for (path, set) in [
                ("kafka.security.sasl_username", s.sasl_username.is_some()),
                ("kafka.security.sasl_password", s.sasl_password.is_some()),
            ] {
                if set && s.sasl_mechanism.is_some() {
                    err(
                        path,
                        String::new(),
                        "only used by SASL mechanisms PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512",
                    );
                } else if set && sasl {
                    // Reported above as a missing mechanism.
                } else if set {
                    err(
                        path,
                        String::new(),
                        "needs kafka.security.sasl_mechanism and a SASL protocol (sasl_ssl \
                         or sasl_plaintext)",
                    );
                }
            }
        }
        for (path, secret) in [
            ("kafka.security.sasl_password", &s.sasl_password),
            ("kafka.security.ssl_key_password", &s.ssl_key_password),
            (
                "kafka.security.oauthbearer.client_secret",
                &s.oauthbearer.client_secret,
            ),
        ] {
            if secret.as_ref().is_some_and(|p| p.expose() == REDACTED) {
                err(
                    path,
                    REDACTED.into(),
                    "is the placeholder printed in place of a secret; give the real value",
                );
            }
        }
        let ssl_files = [
            ("kafka.security.ssl_ca_location", &s.ssl_ca_location),
            (
                "kafka.security.ssl_certificate_location",
                &s.ssl_certificate_location,
            ),
            ("kafka.security.ssl_key_location", &s.ssl_key_location),
        ];
        for (path, value) in ssl_files {
            if let Some(v) = value {
                if !tls {
                    err(
                        path,
                        v.clone(),
                        &format!(
                            "only used over TLS: set kafka.security.protocol to ssl or \
                             sasl_ssl (it is {})",
                            protocol.map_or("plaintext, the default", SecurityProtocol::as_str)
                        ),
                    );
                }
            }
        }
        if s.ssl_key_password.is_some() && s.ssl_key_location.is_none() {
            err(
                "kafka.security.ssl_key_password",
                REDACTED.into(),
                "a key password without kafka.security.ssl_key_location: set the key it opens",
            );
        }
        match (&s.ssl_certificate_location, &s.ssl_key_location) {
            (Some(_), None) => err(
                "kafka.security.ssl_key_location",
                String::new(),
                "required with kafka.security.ssl_certificate_location: a client certificate \
                 needs its private key",
            ),
            (None, Some(_)) => err(
                "kafka.security.ssl_certificate_location",
                String::new(),
                "required with kafka.security.ssl_key_location: a private key needs its \
                 client certificate",
            ),
            _ => {}
        }

        self.token_provider_problems(&mut out);
        let mut err = |path: &str, value: String, reason: &str| {
            out.push(ConfigError::new(path, value, reason));
        };

        // Pass-through properties.
        let derived = self.derived();
        for (key, value) in &self.librdkafka.0 {
            let path = property_path(key);
            let shown = super::shown(key, value).to_string();
            if MANAGED.contains(&key.as_str()) {
                err(
                    &path,
                    shown,
                    "managed by Sluicegate: set kafka.bootstrap_servers and kafka.group_id, \
                     and leave offset commits to the runtime",
                );
            } else if self.group_protocol.refuses(key).is_some() {
                err(&path, shown, &not_with_consumer(key));
            } else if let Some((_, owner, _)) = derived.iter().find(|(k, _, _)| k == key) {
                err(
                    &path,
                    shown,
                    &format!("also set by {owner}: set it in one place only"),
                );
            } else if let Some((_, owner)) = TYPED.iter().find(|(k, _)| k == key) {
                err(
                    &path,
                    shown,
                    &format!("has a typed setting: use {owner} instead"),
                );
            }
        }
        out
    }

    /// The rules of the token providers made from configuration: `oauthbearer` (OIDC) and
    /// `msk_iam`.
    fn token_provider_problems(&self, out: &mut Vec<ConfigError>) {
        let mut err = |path: &str, value: String, reason: &str| {
            out.push(ConfigError::new(path, value, reason));
        };
        let s = &self.security;
        let (o, m) = (&s.oauthbearer, &s.msk_iam);
        const ENDPOINT: &str = "kafka.security.oauthbearer.token_endpoint";
        const REGION: &str = "kafka.security.msk_iam.region";
        if o.is_set() {
            match &o.token_endpoint {
                None => err(
                    ENDPOINT,
                    String::new(),
                    "required with the other kafka.security.oauthbearer settings: the OIDC \
                     token endpoint, an https:// URL (or KAFKA_OAUTHBEARER_TOKEN_ENDPOINT)",
                ),
                Some(url) => {
                    if let Err(problem) = endpoint_problem(url) {
                        err(ENDPOINT, url.clone(), &problem);
                    }
                }
            }
            if o.token_endpoint.is_some() {
                if o.client_id.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    err(
                        "kafka.security.oauthbearer.client_id",
                        String::new(),
                        "required with kafka.security.oauthbearer.token_endpoint: the OAuth \
                         client id (or KAFKA_OAUTHBEARER_CLIENT_ID)",
                    );
                }
                if o.client_secret
                    .as_ref()
                    .is_none_or(|v| v.expose().is_empty())
                {
                    err(
                        "kafka.security.oauthbearer.client_secret",
                        String::new(),
                        "required with kafka.security.oauthbearer.token_endpoint: the OAuth \
                         client secret (or KAFKA_OAUTHBEARER_CLIENT_SECRET)",
                    );
                }
            }
            if !cfg!(feature = "oidc") {
                err(
                    ENDPOINT,
                    o.token_endpoint.clone().unwrap_or_default(),
                    "this build of Sluicegate has no OIDC token provider: build the sluicegate \
                     crate with its `oidc` feature (on by default)",
                );
            }
        }
        if m.is_set() {
            match &m.region {
                None => err(
                    REGION,
                    String::new(),
                    "required with kafka.security.msk_iam: the cluster's AWS region, like \
                     eu-west-1 (or KAFKA_MSK_IAM_REGION)",
                ),
                Some(r) if !is_region(r) => err(
                    REGION,
                    r.clone(),
                    "not an AWS region name: expected lowercase letters, digits and dashes, \
                     like eu-west-1",
                ),
                Some(_) => {}
            }
            if !cfg!(feature = "msk-iam") {
                err(
                    REGION,
                    m.region.clone().unwrap_or_default(),
                    "this build of Sluicegate has no MSK IAM support: build the sluicegate \
                     crate with its `msk-iam` feature (the sluicegate CLI has it)",
                );
            }
        }
        if o.is_set() && m.is_set() {
            err(
                "kafka.security.msk_iam",
                String::new(),
                "set with kafka.security.oauthbearer: the tokens come from one or the other; \
                 remove one of them",
            );
        }
        for (set, path) in [(o.is_set(), ENDPOINT), (m.is_set(), REGION)] {
            if set && s.sasl_mechanism != Some(SaslMechanism::OauthBearer) {
                let value = match path {
                    ENDPOINT => o.token_endpoint.clone(),
                    _ => m.region.clone(),
                };
                err(
                    path,
                    value.unwrap_or_default(),
                    &format!(
                        "makes OAUTHBEARER tokens: set kafka.security.sasl_mechanism to \
                         OAUTHBEARER (it is {}) and kafka.security.protocol to sasl_ssl",
                        s.sasl_mechanism.map_or("not set", SaslMechanism::as_str)
                    ),
                );
            }
        }
    }

    /// The rules between the classic group protocol's timeouts (librdkafka's defaults where
    /// unset).
    fn classic_timeout_problems(&self, out: &mut Vec<ConfigError>) {
        let mut err = |path: &str, value: String, reason: &str| {
            out.push(ConfigError::new(path, value, reason));
        };
        let session = self.session_timeout.unwrap_or(SESSION_DEFAULT);
        let heartbeat = self.heartbeat_interval.unwrap_or(HEARTBEAT_DEFAULT);
        let max_poll = self.max_poll_interval.unwrap_or(MAX_POLL_DEFAULT);
        if let Some(s) = self.session_timeout {
            if s > Duration::from_secs(3600) {
                err(
                    "kafka.session_timeout",
                    human::show(s),
                    "must be at most 1h (librdkafka's limit); brokers allow up to 30m by default",
                );
            }
        }
        if !heartbeat.is_zero() && !session.is_zero() && heartbeat * 3 > session {
            let (path, value) = match self.heartbeat_interval {
                Some(h) => ("kafka.heartbeat_interval", human::show(h)),
                None => ("kafka.session_timeout", human::show(session)),
            };
            err(
                path,
                value,
                &format!(
                    "the heartbeat interval ({}) must be at most a third of the session \
                     timeout ({}), so that a missed heartbeat or two do not evict the consumer",
                    human::show(heartbeat),
                    human::show(session)
                ),
            );
        }
        if !max_poll.is_zero() && max_poll < session {
            err(
                "kafka.max_poll_interval",
                human::show(max_poll),
                &format!(
                    "must be at least the session timeout ({})",
                    human::show(session)
                ),
            );
        }
    }

    /// librdkafka's view: creates (without connecting) a consumer from the effective client
    /// settings, as [`ConsumerBuilder::build`](crate::ConsumerBuilder::build) does, and reports
    /// each property it refuses with the property's path and librdkafka's reason. librdkafka
    /// stops at the first refusal, so each refused property is taken out and the check runs
    /// again, until it passes.
    pub fn check_client(&self) -> Result<(), ConfigErrors> {
        // The librdkafka properties the builder gets from this configuration
        // (`ConsumerBuilder::config`): the typed settings' and the `librdkafka:` entries.
        let mut props: BTreeMap<String, String> = self
            .derived()
            .into_iter()
            .map(|(k, _, v)| (k.to_string(), v))
            .collect();
        props.extend(self.librdkafka.0.clone());
        let derived = self.derived();
        let mut errors = Vec::new();
        for _ in 0..=derived.len() + self.librdkafka.0.len() + MANAGED.len() {
            match self.client_refusal(&props) {
                Ok(()) => break,
                Err(Error::Config { key, value, reason }) => {
                    let path = derived
                        .iter()
                        .find(|(k, _, _)| *k == key)
                        .map(|(_, p, _)| p.to_string())
                        .unwrap_or_else(|| property_path(&key));
                    let value = super::shown(&key, &value).to_string();
                    errors.push(ConfigError::new(
                        path,
                        value,
                        format!("librdkafka: {reason}"),
                    ));
                    props.remove(&key);
                }
                Err(other) => {
                    errors.push(ConfigError::new(
                        "kafka",
                        String::new(),
                        format!("librdkafka cannot create a client: {other}"),
                    ));
                    break;
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// librdkafka's judgement of the consumer `props` make, built as the runtime builds its
    /// client (its own settings and defaults, then `props`): a consumer is created, which
    /// connects to nothing before it is polled; the bootstrap servers are left out so that no
    /// connection is even tried. The first refused property, as [`Error::Config`].
    fn client_refusal(&self, props: &BTreeMap<String, String>) -> Result<(), Error> {
        refused_property(props)?;
        // As the builder does: a reader gets a group id it never joins; a missing group id is
        // the rules' to report, a placeholder keeps librdkafka's check going.
        let group = if self.read_from_beginning {
            READER_GROUP_ID
        } else if self.group_id.trim().is_empty() {
            "sluicegate-config-check"
        } else {
            &self.group_id
        };
        let mut client = defaults::consumer_client(group);
        for (key, value) in props {
            client.set(key, value);
        }
        client.remove("bootstrap.servers");
        crate::kafka::client::check_consumer(&client)
    }
}

/// What is wrong with the token endpoint `url`, if anything.
fn endpoint_problem(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or(
            "not an https:// URL: the OIDC token endpoint, like \
                https://login.example.com/oauth2/token",
        )?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) || url.contains(char::is_whitespace) {
        return Err(
            "not a URL with a host: expected like https://login.example.com/oauth2/token".into(),
        );
    }
    #[cfg(feature = "oidc")]
    if let Err(e) = reqwest::Url::parse(url) {
        return Err(format!("not a valid URL ({e})"));
    }
    Ok(())
}

/// Whether the token endpoint `url` sends the client secret in the clear to another machine.
fn plain_http_elsewhere(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .trim_start_matches('[');
    !(host.starts_with("localhost") || host.starts_with("127.") || host.starts_with("::1]"))
}

/// Whether `r` looks like an AWS region name (`eu-west-1`, `us-gov-west-1`, `cn-north-1`).
fn is_region(r: &str) -> bool {
    !r.is_empty()
        && r.contains('-')
        && r.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Why the classic group protocol's property `key` is refused with the consumer protocol.
fn not_with_consumer(key: &str) -> String {
    format!(
        "not used with kafka.group_protocol consumer (KIP-848): {}; remove it, or set \
         kafka.group_protocol to classic",
        GroupProtocol::Consumer.refuses(key).unwrap_or_default()
    )
}

/// librdkafka properties with a typed setting, which `librdkafka:` must not set.
const TYPED: &[(&str, &str)] = &[
    ("auto.offset.reset", "kafka.auto_offset_reset"),
    ("group.instance.id", "kafka.group_instance_id"),
    ("session.timeout.ms", "kafka.session_timeout"),
    ("heartbeat.interval.ms", "kafka.heartbeat_interval"),
    ("max.poll.interval.ms", "kafka.max_poll_interval"),
    ("security.protocol", "kafka.security.protocol"),
    ("sasl.mechanism", "kafka.security.sasl_mechanism"),
    ("sasl.mechanisms", "kafka.security.sasl_mechanism"),
    ("sasl.username", "kafka.security.sasl_username"),
    ("sasl.password", "kafka.security.sasl_password"),
    ("ssl.key.password", "kafka.security.ssl_key_password"),
];

/// The first librdkafka property among `props` (set directly: the builder's `set`, the
/// `librdkafka:` entries) that the runtime refuses before librdkafka sees it: one it manages
/// ([`MANAGED`]), one of the other group protocol, or an invalid `group.instance.id`.
pub(crate) fn refused_property(props: &BTreeMap<String, String>) -> Result<(), Error> {
    for (key, value) in props {
        if MANAGED.contains(&key.as_str()) {
            return Err(Error::Config {
                key: key.clone(),
                value: value.clone(),
                reason: MANAGED_REASON.into(),
            });
        }
    }
    group_protocol_of(props)?;
    if let Some(id) = props.get("group.instance.id") {
        if let Some(problem) = instance_id_problem(id) {
            return Err(Error::Config {
                key: "group.instance.id".into(),
                value: id.clone(),
                reason: problem.into(),
            });
        }
    }
    Ok(())
}

/// The group protocol `group.protocol` among `props` asks for (classic when unset), after
/// checking that no property of the other protocol is set with it.
fn group_protocol_of(props: &BTreeMap<String, String>) -> Result<GroupProtocol, Error> {
    let protocol = match props.get("group.protocol") {
        None => GroupProtocol::Classic,
        Some(value) => value.trim().parse().map_err(|reason| Error::Config {
            key: "group.protocol".into(),
            value: value.clone(),
            reason,
        })?,
    };
    for (key, value) in props {
        if let Some(why) = protocol.refuses(key) {
            return Err(Error::Config {
                key: key.clone(),
                value: value.clone(),
                reason: format!(
                    "not used with group.protocol=consumer (KIP-848): {why}; remove it, or \
                     use the classic group protocol"
                ),
            });
        }
    }
    Ok(protocol)
}
