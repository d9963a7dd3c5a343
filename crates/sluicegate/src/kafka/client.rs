//! Clients from Sluicegate's settings: librdkafka's configuration from [`Properties`], the
//! check that librdkafka takes them, and the client context of the producers and admin
//! clients the library makes ([`ProducerLog`]).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use rdkafka::client::{ClientContext, OAuthToken as RdOAuthToken};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use tracing::warn;

use super::error::client_error;
use crate::properties::Properties;
use crate::security::{generate_oauth_token, ClientErrors, OAuth, OAuthToken};
use crate::Error;

/// librdkafka's configuration holding `props`, secrets as they are.
pub(crate) fn rdkafka_config(props: &Properties) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in props.iter() {
        config.set(key, value);
    }
    config
}

/// Whether librdkafka takes `props` for a consumer: creates one, which connects to nothing
/// before it is polled, and drops it. The first property refused, as [`Error::Config`].
pub(crate) fn check_consumer(props: &Properties) -> Result<(), Error> {
    rdkafka_config(props)
        .create::<BaseConsumer>()
        .map(drop)
        .map_err(Error::from_client_creation)
}

/// Whether librdkafka takes `props` for an admin client (for tests of what the library
/// hands to clients of your own).
#[cfg(test)]
pub(crate) fn check_admin(props: &Properties) -> Result<(), Error> {
    rdkafka_config(props)
        .create::<rdkafka::admin::AdminClient<_>>()
        .map(drop)
        .map_err(Error::from_client_creation)
}

/// The high watermark of `topic`'s `partition` on the cluster at `bootstrap` (for tests).
#[cfg(test)]
pub(crate) fn high_watermark(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    use rdkafka::consumer::Consumer as _;
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
        .create()
        .expect("a reader");
    reader
        .fetch_watermarks(topic, partition, std::time::Duration::from_secs(10))
        .expect("the watermarks")
        .1
}

/// A token from the provider as librdkafka's token callback returns it.
pub(crate) fn oauth_token(
    token: Result<OAuthToken, Box<dyn std::error::Error>>,
) -> Result<RdOAuthToken, Box<dyn std::error::Error>> {
    let token = token?;
    let lifetime_ms = token
        .expires_at()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Ok(RdOAuthToken {
        token: token.token().to_owned(),
        principal_name: token.principal().to_owned(),
        lifetime_ms,
    })
}

/// Reports a producer's client errors as warnings (sends are retried or fail where they are
/// awaited, which is where it matters), and gets OAUTHBEARER tokens from the consumer's
/// provider. The transactional producer of exactly-once mode also keeps its TLS and
/// authentication failures, which stop the consumer (see [`crate::security`]).
#[derive(Clone, Default)]
pub(crate) struct ProducerLog {
    pub oauth: Option<OAuth>,
    pub errors: Option<Arc<ClientErrors>>,
}

impl ClientContext for ProducerLog {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: KafkaError, reason: &str) {
        match &self.errors {
            Some(errors) => errors.error(client_error(error), reason),
            None => warn!(error = %error, reason, "producer"),
        }
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<RdOAuthToken, Box<dyn std::error::Error>> {
        oauth_token(generate_oauth_token(
            self.oauth.as_ref(),
            self.errors.as_deref(),
        ))
    }
}
