//! AWS MSK IAM authentication (the `msk-iam` feature): OAUTHBEARER tokens that are presigned
//! `kafka-cluster:Connect` URLs, signed with SigV4 (`aws-sigv4`) as the
//! `aws-msk-iam-sasl-signer` crate signs them.
//!
//! The signing is done here with `aws-sigv4` rather than through `aws-msk-iam-sasl-signer`:
//! that crate turns on the AWS SDK's default HTTPS client (rustls on `aws-lc-rs`), whose C
//! build (`aws-lc-sys`) takes minutes. The credentials chain gets an HTTPS client on rustls
//! with `ring` instead.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_types::region::Region;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine as _;
use tokio::sync::OnceCell;

use super::{OAuthToken, TokenError, TokenProvider};

/// How long a token is valid; MSK's limit, and the signer crate's choice.
const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// What the token URL's `User-Agent` parameter names (MSK logs it).
const USER_AGENT: &str = concat!("sluicegate-rs/", env!("CARGO_PKG_VERSION"));

/// Makes the OAUTHBEARER tokens of AWS MSK IAM authentication: each is a SigV4-presigned
/// `kafka-cluster:Connect` URL for the cluster's region, base64url-encoded, valid for 15
/// minutes (librdkafka asks for a new one after 12). Needs the `msk-iam` feature.
///
/// Credentials come from the standard AWS chain by default (environment, shared config and
/// credentials files, web identity, ECS and EC2 instance roles), resolved once and cached by
/// the chain, optionally for a named [profile](Self::profile);
/// [`with_credentials`](Self::with_credentials) takes any other provider. The token's
/// principal (only shown in logs) is the credentials' access key id.
///
/// From configuration: `kafka.security.msk_iam.region` (and `profile`), or
/// `KAFKA_MSK_IAM_REGION` (and `KAFKA_MSK_IAM_PROFILE`).
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
    profile: Option<String>,
    /// Set by `with_credentials`, or from the default chain on first use.
    credentials: OnceCell<SharedCredentialsProvider>,
}

impl fmt::Debug for MskIamTokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MskIamTokenProvider")
            .field("region", &self.region.as_ref())
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl MskIamTokenProvider {
    /// Tokens for a cluster in `region` (such as `eu-west-1`), signed with credentials from
    /// the standard AWS chain.
    pub fn new(region: impl Into<String>) -> Self {
        MskIamTokenProvider {
            region: Region::new(region.into()),
            profile: None,
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
            profile: None,
            credentials: OnceCell::new_with(Some(SharedCredentialsProvider::new(provider))),
        }
    }

    /// Takes the credentials of the named profile of the AWS shared config and credentials
    /// files (`~/.aws/config`, `~/.aws/credentials`) rather than of `AWS_PROFILE` or
    /// `default`. No effect with [`with_credentials`](Self::with_credentials).
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// The region the tokens are for.
    pub fn region(&self) -> &str {
        self.region.as_ref()
    }

    /// The AWS profile the credentials come from, if one was named.
    pub fn profile_name(&self) -> Option<&str> {
        self.profile.as_deref()
    }

    async fn provider(&self) -> Result<&SharedCredentialsProvider, TokenError> {
        self.credentials
            .get_or_try_init(|| async {
                // An HTTPS client for the chain's remote providers (STS, SSO portals, ECS and
                // EC2 metadata), on ring: see the module docs.
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https();
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(self.region.clone())
                    .http_client(http);
                if let Some(profile) = &self.profile {
                    loader = loader.profile_name(profile);
                }
                let config = loader.load().await;
                config.credentials_provider().ok_or_else(|| {
                    TokenError::new("no AWS credentials provider in the default chain")
                })
            })
            .await
    }
}

/// The token for `credentials` in `region`, signed at `now`: the base64url (unpadded) of
/// `https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect&<SigV4 query
/// parameters>&User-Agent=...`, and when it expires.
fn sign(
    region: &Region,
    credentials: Credentials,
    now: SystemTime,
) -> Result<(String, SystemTime), String> {
    use aws_sigv4::http_request::{
        sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    };
    use aws_sigv4::sign::v4;

    let mut url = url::Url::parse(&format!("https://kafka.{region}.amazonaws.com/"))
        .map_err(|e| format!("the region `{region}` makes no valid host name: {e}"))?;
    url.query_pairs_mut()
        .append_pair("Action", "kafka-cluster:Connect");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    // X-Amz-Date has whole seconds: the expiry counts from there.
    let now = UNIX_EPOCH
        + Duration::from_secs(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region.as_ref())
        .name("kafka-cluster")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| format!("cannot build the signing parameters: {e}"))?;
    let request = SignableRequest::new(
        "GET",
        url.as_str(),
        std::iter::empty(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| format!("cannot sign the request: {e}"))?;
    let (instructions, _) = sign(request, &params.into())
        .map_err(|e| format!("cannot sign the request: {e}"))?
        .into_parts();
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in instructions.params() {
            query.append_pair(name, value);
        }
        query.append_pair("User-Agent", USER_AGENT);
    }
    Ok((
        BASE64URL.encode(url.as_str().as_bytes()),
        now + TOKEN_LIFETIME,
    ))
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
        let (token, expires_at) = sign(&self.region, credentials, SystemTime::now())
            .map_err(|e| TokenError::new(format!("cannot sign the MSK IAM token: {e}")))?;
        Ok(OAuthToken::expiring_at(token, principal, expires_at))
    }
}
