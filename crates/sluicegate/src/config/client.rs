//! Clients of your own from a configuration: the librdkafka settings of an admin client,
//! producer or consumer that connects as the configuration says (brokers, TLS, SASL,
//! `librdkafka:` entries), and its [`ClientSecurity`].

use super::ConsumerConfig;
use crate::output::CONSUMER_ONLY;
use crate::properties::Properties;
use crate::security::ClientSecurity;

/// The kind of client a configuration is applied to ([`ConsumerConfig::client_config`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// A consumer: every property of the configuration, `group.id` included (when set).
    Consumer,
    /// A producer: the connection settings and the `librdkafka:` entries that are not a
    /// consumer's (no `group.*`, `fetch.*`, `auto.*`, session or poll timeouts...).
    Producer,
    /// An admin client: the same properties as a producer.
    Admin,
}

impl ConsumerConfig {
    /// The librdkafka settings of a client of `kind` that connects as this configuration
    /// says: `bootstrap.servers`, the security settings (`security.protocol`, SASL, TLS) and the
    /// `librdkafka:` entries, with **secrets exposed** (hand them to a client; their `Debug`
    /// output hides them). A consumer also gets `group.id` (when set) and the typed consumer settings
    /// ([`client_properties`](Self::client_properties)); producers and admin clients get only
    /// what applies to them, so librdkafka does not warn about consumer properties. The
    /// runtime's own properties (such as `enable.auto.commit=false`) are not included: set what
    /// your client needs on the result.
    ///
    /// Pair the client with [`client_security`](Self::client_security) for OAUTHBEARER tokens
    /// and fail-fast TLS and authentication errors. With the `rdkafka-interop` feature,
    /// `Properties::to_rdkafka` makes an rdkafka client configuration of them.
    ///
    /// ```
    /// use sluicegate::config::{ClientKind, ConsumerConfig};
    ///
    /// let yaml = "kafka:\n  bootstrap_servers: kafka:9093\n  group_id: billing\n  topics: [orders]\n  \
    ///             security: { protocol: sasl_ssl, sasl_mechanism: SCRAM-SHA-512, \
    ///             sasl_username: billing, sasl_password: s3cret }\n";
    /// let config = ConsumerConfig::load_str(yaml, [("KAFKA_SASL_USERNAME", "ops")]).unwrap();
    /// let admin = config.client_config(ClientKind::Admin);
    /// assert_eq!(admin.get("security.protocol"), Some("sasl_ssl"));
    /// assert_eq!(admin.get("sasl.username"), Some("ops")); // the environment wins
    /// assert_eq!(admin.get("group.id"), None);
    /// assert_eq!(config.client_config(ClientKind::Consumer).get("group.id"), Some("billing"));
    /// ```
    pub fn client_config(&self, kind: ClientKind) -> Properties {
        let mut client = Properties::new();
        for (key, value) in self.client_properties() {
            let unset =
                matches!(key.as_str(), "group.id" | "bootstrap.servers") && value.trim().is_empty();
            let foreign =
                kind != ClientKind::Consumer && CONSUMER_ONLY.iter().any(|p| key.starts_with(p));
            if !unset && !foreign {
                client.set(key, value);
            }
        }
        client
    }

    /// The [`ClientSecurity`] of a client made from `client` (this configuration's
    /// [`client_config`](Self::client_config) with whatever the program set on it): its watch
    /// over TLS and authentication failures and, when the configuration provides one, its
    /// OAUTHBEARER token provider. With a provider of your own, add it with
    /// [`ClientSecurity::with_token_provider`]. Call it on the Tokio runtime the provider
    /// should run on, if any.
    pub fn client_security(&self, client: &Properties) -> ClientSecurity {
        let security = ClientSecurity::new(client);
        match self.token_provider() {
            Some(oauth) => security.with_oauth(oauth),
            None => security,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn config() -> ConsumerConfig {
        let yaml = r#"
kafka:
  bootstrap_servers: [a:9093, b:9093]
  group_id: billing
  topics: [orders]
  session_timeout: 10s
  fetch: { min_bytes: 1000 }
  security:
    protocol: sasl_ssl
    sasl_mechanism: SCRAM-SHA-256
    sasl_username: app
    sasl_password: hunter2
    ssl_ca_location: /etc/ca.pem
  librdkafka:
    client.id: billing-1
    partition.assignment.strategy: cooperative-sticky
"#;
        ConsumerConfig::load_str(yaml, [("KAFKA_SASL_USERNAME", "from-env")]).unwrap()
    }

    #[test]
    fn every_kind_gets_the_connection_and_security_settings() {
        let config = config();
        for kind in [
            ClientKind::Consumer,
            ClientKind::Producer,
            ClientKind::Admin,
        ] {
            let c = config.client_config(kind);
            assert_eq!(
                c.get("bootstrap.servers"),
                Some("a:9093,b:9093"),
                "{kind:?}"
            );
            assert_eq!(c.get("security.protocol"), Some("sasl_ssl"), "{kind:?}");
            assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-256"), "{kind:?}");
            assert_eq!(c.get("sasl.username"), Some("from-env"), "{kind:?}");
            // The secret itself, not its redacted form: the client must log in with it.
            assert_eq!(c.get("sasl.password"), Some("hunter2"), "{kind:?}");
            assert_eq!(c.get("ssl.ca.location"), Some("/etc/ca.pem"), "{kind:?}");
            assert_eq!(c.get("client.id"), Some("billing-1"), "{kind:?}");
        }
    }

    #[test]
    fn only_consumers_get_consumer_settings() {
        let config = config();
        let consumer = config.client_config(ClientKind::Consumer);
        assert_eq!(consumer.get("group.id"), Some("billing"));
        assert_eq!(consumer.get("session.timeout.ms"), Some("10000"));
        assert_eq!(consumer.get("fetch.min.bytes"), Some("1000"));
        assert_eq!(
            consumer.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        for kind in [ClientKind::Producer, ClientKind::Admin] {
            let c = config.client_config(kind);
            for key in [
                "group.id",
                "group.protocol",
                "auto.offset.reset",
                "session.timeout.ms",
                "fetch.min.bytes",
                "partition.assignment.strategy",
            ] {
                assert_eq!(c.get(key), None, "{kind:?} {key}");
            }
            // librdkafka accepts the settings as they are, for this kind of client (the CA file
            // is made up).
            let mut c = c.clone();
            c.remove("ssl.ca.location");
            crate::kafka::client::check_admin(&c).expect("librdkafka takes the settings");
        }
    }

    #[test]
    fn unset_group_and_brokers_are_left_out() {
        let config = ConsumerConfig::default();
        let consumer = config.client_config(ClientKind::Consumer);
        assert_eq!(consumer.get("group.id"), None);
        assert_eq!(consumer.get("bootstrap.servers"), None);
    }

    #[test]
    fn the_security_watch_names_the_configured_mechanism_and_user() {
        let config = config();
        let client = config.client_config(ClientKind::Admin);
        let security = config.client_security(&client);
        assert!(security.failure().is_none());
        assert!(!security.has_token_provider());
        security.observe_error(
            crate::kafka::error::global(ErrorCode::AUTHENTICATION),
            "SASL authentication error: Authentication failed during authentication due to \
             invalid credentials with SASL mechanism SCRAM-SHA-256 (hunter2)",
        );
        let e = security
            .failure()
            .expect("an authentication failure is kept")
            .to_string();
        assert!(
            e.contains("SCRAM-SHA-256") && e.contains("`from-env`"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }
}
