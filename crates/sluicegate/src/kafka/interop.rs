//! The `rdkafka-interop` feature: rdkafka clients of your own with Sluicegate's settings and
//! security ([`Properties::to_rdkafka`], [`SecureContext`], [`ClientSecurity::observe`] and
//! [`ClientSecurity::generate_oauth_token`]). Without the feature, no rdkafka type is part of
//! Sluicegate's API. The CLI's own clients (admin, read-back, produce, diagnose) use it.

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

use super::client::{oauth_token, rdkafka_config};
use super::error::client_error;
use crate::properties::Properties;
use crate::security::ClientSecurity;

/// A client context with a [`ClientSecurity`], for admin clients and consumers of your own
/// (the `rdkafka-interop` feature): gets OAUTHBEARER tokens from its provider and keeps TLS and
/// authentication failures (ask [`ClientSecurity::failure`]); other client errors are logged
/// as warnings. It is an rdkafka `ClientContext` and `ConsumerContext`.
///
/// ```no_run
/// use rdkafka::admin::AdminClient;
/// use sluicegate::config::{ClientKind, ConsumerConfig};
/// use sluicegate::interop::SecureContext;
///
/// let config = ConsumerConfig::load_from_env("sluicegate.yaml").unwrap();
/// let props = config.client_config(ClientKind::Admin);
/// let context = SecureContext::new(config.client_security(&props));
/// let admin: AdminClient<SecureContext> = props.to_rdkafka().create_with_context(context).unwrap();
/// # let _ = admin;
/// ```
#[derive(Clone, Debug)]
pub struct SecureContext {
    security: ClientSecurity,
}

impl SecureContext {
    /// A context with `security`.
    pub fn new(security: ClientSecurity) -> Self {
        SecureContext { security }
    }

    /// Its security watch and token provider.
    pub fn security(&self) -> &ClientSecurity {
        &self.security
    }
}

impl Properties {
    /// An rdkafka client configuration with these properties, **secrets exposed** (the client
    /// logs in with them). Needs the `rdkafka-interop` feature.
    pub fn to_rdkafka(&self) -> ClientConfig {
        rdkafka_config(self)
    }

    /// The properties of an rdkafka client configuration, secrets included. Needs the
    /// `rdkafka-interop` feature.
    pub fn from_rdkafka(config: &ClientConfig) -> Self {
        // `config_map` shows some secrets as a placeholder: read each value through `get`.
        config
            .config_map()
            .keys()
            .filter_map(|key| config.get(key).map(|value| (*key, value)))
            .collect()
    }
}

impl ClientSecurity {
    /// A token from the provider, for your client context's `generate_oauth_token`; an error
    /// saying none is set when there is no provider. Needs the `rdkafka-interop` feature.
    pub fn generate_oauth_token(&self) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        oauth_token(self.token())
    }

    /// Looks at one error of librdkafka's error callback (for your client context's
    /// `error`): logs it as a warning, and keeps it when it is a TLS or authentication
    /// failure. Needs the `rdkafka-interop` feature.
    pub fn observe(&self, error: KafkaError, reason: &str) {
        self.observe_error(client_error(error), reason);
    }
}

impl ClientContext for SecureContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: KafkaError, reason: &str) {
        self.security().observe(error, reason);
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.security().generate_oauth_token()
    }
}

impl ConsumerContext for SecureContext {}
