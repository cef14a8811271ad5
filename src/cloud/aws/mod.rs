//! The AWS implementation: one place builds clients (credential chain, profile, region,
//! endpoint, retries), and each operation maps SDK types to domain types. Errors name the
//! operation and region.

mod ec2;
mod iam;
mod ssm;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;
use aws_smithy_http_client::tls;

use std::collections::BTreeMap;

use crate::catalog::model::{Region, Target};

use super::CloudError;

/// Attempts per call in the SDK's standard retry mode (it retries throttling and transient
/// errors with backoff; AWS's recommended default is 3, we allow a little more for long bakes).
const MAX_ATTEMPTS: u32 = 5;
/// Per-attempt timeout: Describe calls answer in well under a second; a stuck connection should
/// not eat the bake's deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Clients for one region of one target.
#[derive(Clone, Debug)]
pub struct Aws {
    pub region: Region,
    pub(crate) ec2: aws_sdk_ec2::Client,
    pub(crate) ssm: aws_sdk_ssm::Client,
    pub(crate) iam: aws_sdk_iam::Client,
}

impl Aws {
    /// Builds clients with the standard credential chain (or the target's profile), the region,
    /// and the target's endpoint or `AWS_ENDPOINT_URL`.
    pub async fn connect(target: &Target, region: &Region) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(region.as_str().to_string()))
            .http_client(http)
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            );
        if let Some(p) = &target.profile {
            loader = loader.profile_name(p);
        }
        if let Some(e) = &target.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        let conf = loader.load().await;
        Self {
            region: region.clone(),
            ec2: aws_sdk_ec2::Client::new(&conf),
            ssm: aws_sdk_ssm::Client::new(&conf),
            iam: aws_sdk_iam::Client::new(&conf),
        }
    }

    fn err<E>(&self, op: &'static str, e: aws_sdk_ec2::error::SdkError<E>) -> CloudError
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        use aws_sdk_ec2::error::ProvideErrorMetadata;
        let code = e.code().map(str::to_string);
        let message = match (e.code(), e.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_string(),
            _ => aws_sdk_ec2::error::DisplayErrorContext(&e).to_string(),
        };
        CloudError::Api {
            op,
            region: self.region.to_string(),
            code,
            message,
        }
    }

    fn bad(&self, op: &'static str, message: impl Into<String>) -> CloudError {
        CloudError::BadAnswer {
            op,
            region: self.region.to_string(),
            message: message.into(),
        }
    }
}

/// Clients per region, built on first use.
pub struct Regions<'a> {
    pub(crate) target: &'a Target,
    clients: BTreeMap<String, Aws>,
}

impl<'a> Regions<'a> {
    pub fn new(target: &'a Target) -> Self {
        Self {
            target,
            clients: BTreeMap::new(),
        }
    }

    pub fn with(target: &'a Target, aws: Aws) -> Self {
        let mut r = Self::new(target);
        r.clients.insert(aws.region.to_string(), aws);
        r
    }

    pub async fn get(&mut self, region: &str) -> &Aws {
        if !self.clients.contains_key(region) {
            let aws = Aws::connect(self.target, &Region(region.to_string())).await;
            self.clients.insert(region.to_string(), aws);
        }
        &self.clients[region]
    }
}
