//! Sessions in consumer accounts: the role a target names for each consumer, assumed once per
//! consumer and command (its credentials cached, renewed before they expire), and clients in
//! each of the consumer's regions made with them. A role that cannot be assumed fails that
//! consumer once, with STS's own words, and is not asked again in the same command.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::provider::{
    error::CredentialsError, future, ProvideCredentials, SharedCredentialsProvider,
};
use aws_credential_types::Credentials;

use super::Aws;
use crate::catalog::model::{Consumer, Region, Target};
use crate::cloud::CloudError;

/// Credentials are renewed this long before they expire, so a call never starts with
/// credentials that lapse while it is in flight (the AWS CLI renews 5 to 15 minutes early).
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// The session name consumers see in CloudTrail (2 to 64 characters).
const SESSION_NAME: &str = "bakery";

/// One consumer's assumed role: AssumeRole once, then the cached credentials until shortly
/// before they expire.
#[derive(Debug)]
struct Assumed {
    inner: AssumeRoleProvider,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

impl Assumed {
    async fn get(&self) -> Result<Credentials, CredentialsError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c
                .expiry()
                .is_none_or(|e| e > SystemTime::now() + RENEW_BEFORE);
            if fresh {
                return Ok(c.clone());
            }
        }
        let c = self.inner.provide_credentials().await?;
        *cached = Some(c.clone());
        Ok(c)
    }
}

impl ProvideCredentials for Assumed {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.get())
    }
}

/// Clients in consumer accounts, per consumer and region, made on first use.
#[derive(Default)]
pub struct Consumers {
    /// Account -> its session, or why the role could not be assumed.
    sessions: BTreeMap<String, Result<SharedCredentialsProvider, String>>,
    clients: BTreeMap<(String, String), Aws>,
}

impl Consumers {
    pub fn new() -> Self {
        Self::default()
    }

    /// The clients of `consumer` in `region`, through its role.
    pub async fn get(
        &mut self,
        target: &Target,
        consumer: &Consumer,
        region: &str,
    ) -> Result<&Aws, CloudError> {
        let key = (consumer.account.clone(), region.to_string());
        if !self.clients.contains_key(&key) {
            let creds = self.session(target, consumer, region).await?;
            let aws = Aws::connect_with(target, &Region(region.to_string()), Some(creds)).await;
            self.clients.insert(key.clone(), aws);
        }
        Ok(&self.clients[&key])
    }

    async fn session(
        &mut self,
        target: &Target,
        consumer: &Consumer,
        region: &str,
    ) -> Result<SharedCredentialsProvider, CloudError> {
        if !self.sessions.contains_key(&consumer.account) {
            let made = assume(target, consumer, region).await;
            self.sessions.insert(consumer.account.clone(), made);
        }
        self.sessions[&consumer.account]
            .clone()
            .map_err(|message| CloudError::Api {
                op: "AssumeRole",
                region: region.to_string(),
                code: None,
                message,
                request_id: None,
            })
    }
}

/// Assumes the consumer's role with the target's own credentials, once, to tell at once (and
/// in STS's words) when it cannot be.
async fn assume(
    target: &Target,
    consumer: &Consumer,
    region: &str,
) -> Result<SharedCredentialsProvider, String> {
    let base = super::loader(target, &Region(region.to_string()), super::http_client())
        .load()
        .await;
    let mut b = AssumeRoleProvider::builder(&consumer.role_arn)
        .session_name(SESSION_NAME)
        .region(aws_config::Region::new(region.to_string()));
    if let Some(x) = &consumer.external_id {
        b = b.external_id(x);
    }
    let assumed = Assumed {
        inner: b.configure(&base).build().await,
        cached: tokio::sync::Mutex::new(None),
    };
    assumed.get().await.map_err(|e| {
        format!(
            "cannot assume {} in consumer account {}: {}",
            consumer.role_arn,
            consumer.account,
            super::causes(&e)
        )
    })?;
    Ok(SharedCredentialsProvider::new(assumed))
}
