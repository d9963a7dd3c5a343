//! AWS MSK IAM authentication (the `msk-iam` feature): OAUTHBEARER tokens that are presigned
//! `kafka-cluster:Connect` URLs, made by the `aws-msk-iam-sasl-signer` crate.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_types::region::Region;
use tokio::sync::OnceCell;

use super::{OAuthToken, TokenError, TokenProvider};

/// Makes the OAUTHBEARER tokens of AWS MSK IAM authentication: each is a SigV4-presigned
/// `kafka-cluster:Connect` URL for the cluster's region, base64url-encoded, valid for 15
/// minutes (librdkafka asks for a new one after 12). Needs the `msk-iam` feature.
///
/// Credentials come from the standard AWS chain by default (environment, shared config and
/// credentials files, web identity, ECS and EC2 instance roles), resolved once and cached by
/// the chain; [`with_credentials`](Self::with_credentials) takes any other provider. The
/// token's principal (only shown in logs) is the credentials' access key id.
///
/// ```no_run
/// use sluicegate::security::MskIamTokenProvider;
/// # use sluicegate::{handler_fn, Consumer, Message};
/// # fn build() -> Result<(), sluicegate::Error> {
/// let consumer = Consumer::builder()
///     .bootstrap_servers("b-1.mycluster.abc123.c2.kafka.eu-west-1.amazonaws.com:9098")
///     .group_id("billing")
///     .topic("orders")
///     .set("security.protocol", "SASL_SSL")
///     .set("sasl.mechanism", "OAUTHBEARER")
///     .oauth_token_provider(MskIamTokenProvider::new("eu-west-1"))
///     .build(handler_fn(|_: Message| async { Ok(()) }))?;
/// # Ok(()) }
/// ```
pub struct MskIamTokenProvider {
    region: Region,
    /// Set by `with_credentials`, or from the default chain on first use.
    credentials: OnceCell<SharedCredentialsProvider>,
}

impl fmt::Debug for MskIamTokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MskIamTokenProvider")
            .field("region", &self.region.as_ref())
            .finish_non_exhaustive()
    }
}

impl MskIamTokenProvider {
    /// Tokens for a cluster in `region` (such as `eu-west-1`), signed with credentials from
    /// the standard AWS chain.
    pub fn new(region: impl Into<String>) -> Self {
        MskIamTokenProvider {
            region: Region::new(region.into()),
            credentials: OnceCell::new(),
        }
    }

    /// Tokens for a cluster in `region`, signed with the credentials of `provider`: an
    /// [`aws_credential_types::Credentials`] for fixed ones, or any other AWS credentials
    /// provider (an assumed role, a profile...).
    pub fn with_credentials(
        region: impl Into<String>,
        provider: impl ProvideCredentials + 'static,
    ) -> Self {
        MskIamTokenProvider {
            region: Region::new(region.into()),
            credentials: OnceCell::new_with(Some(SharedCredentialsProvider::new(provider))),
        }
    }

    /// The region the tokens are for.
    pub fn region(&self) -> &str {
        self.region.as_ref()
    }

    async fn provider(&self) -> Result<&SharedCredentialsProvider, TokenError> {
        self.credentials
            .get_or_try_init(|| async {
                let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(self.region.clone())
                    .load()
                    .await;
                config.credentials_provider().ok_or_else(|| {
                    TokenError::new("no AWS credentials provider in the default chain")
                })
            })
            .await
    }
}

impl TokenProvider for MskIamTokenProvider {
    async fn token(&self) -> Result<OAuthToken, TokenError> {
        let credentials = self
            .provider()
            .await?
            .provide_credentials()
            .await
            .map_err(|e| TokenError::new(format!("cannot get AWS credentials: {e}")))?;
        let principal = credentials.access_key_id().to_owned();
        let (token, expires_ms) =
            aws_msk_iam_sasl_signer::generate_auth_token_from_credentials_provider(
                self.region.clone(),
                SharedCredentialsProvider::new(credentials),
            )
            .await
            .map_err(|e| TokenError::new(format!("cannot sign the MSK IAM token: {e}")))?;
        let expires_at = UNIX_EPOCH + Duration::from_millis(u64::try_from(expires_ms).unwrap_or(0));
        Ok(OAuthToken::expiring_at(token, principal, expires_at))
    }
}
