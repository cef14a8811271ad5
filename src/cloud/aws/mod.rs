//! The AWS implementation: one place builds clients (credential chain, profile, region,
//! endpoint, retries), and each operation maps SDK types to domain types. Errors name the
//! operation and region.

mod autoscaling;
pub mod consumer;
mod ec2;
mod iam;
pub mod kms;
mod limited;
mod s3;
mod ssm;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;
use aws_smithy_http_client::tls;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalog::model::{Region, Target};

use super::limit::{Budget, Limiter, LimiterStats};
use super::poller::{self, Pace, PollStats, Poller};
use super::{CloudError, ImageId, ImageInfo, InstanceId, InstanceInfo, Invocation, ManagedNode};

pub use autoscaling::AutoScaling;
pub(crate) use ec2::Describer;
pub use ssm::{CommandSpec, GET_PARAMETERS_BATCH};

// Attempts per call in the SDK's standard retry mode (it retries throttling and transient
// errors with backoff; AWS's recommended default is 3, we allow a little more for long bakes).
use super::MAX_ATTEMPTS;
/// Per-attempt timeout: Describe calls answer in well under a second; a stuck connection should
/// not eat the bake's deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Clients for one region of one target, with that region's EC2 rate limiter and shared
/// pollers. Clones share all of it; a `Fleet` hands the same one to every bake in a process.
#[derive(Clone, Debug)]
pub struct Aws {
    pub region: Region,
    pub(crate) ec2: aws_sdk_ec2::Client,
    pub(crate) ssm: aws_sdk_ssm::Client,
    pub(crate) iam: aws_sdk_iam::Client,
    pub(crate) kms: aws_sdk_kms::Client,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) autoscaling: aws_sdk_autoscaling::Client,
    limiter: Arc<Limiter>,
    pub(crate) instances: Arc<Poller<InstanceId, InstanceInfo>>,
    pub(crate) images: Arc<Poller<ImageId, ImageInfo>>,
    /// Run Command invocations (command id, instance): GetCommandInvocation takes one at a
    /// time, so a tick sends one per waiter, all at the same moment.
    pub(crate) invocations: Arc<Poller<(String, InstanceId), Invocation>>,
    /// Systems Manager's view of instances (DescribeInstanceInformation, 50 ids per call).
    pub(crate) nodes: Arc<Poller<InstanceId, ManagedNode>>,
}

/// What one region's limiter and pollers did (for reports and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RegionStats {
    pub ec2: LimiterStats,
    pub instances: PollStats,
    pub images: PollStats,
    pub invocations: PollStats,
    pub nodes: PollStats,
}

/// Ids per batched Describe call. DescribeInstances and DescribeImages take their ids here as an
/// `instance-id` / `image-id` filter (an id that is not visible yet is left out rather than
/// failing the whole call, as `InstanceIds` would); 200 values keeps the request small.
const IDS_PER_CALL: usize = 200;
/// DescribeInstanceInformation's `InstanceIds` filter takes at most 50 values (SSM API reference).
const NODES_PER_CALL: usize = 50;
/// GetCommandInvocation takes one invocation per call: each is a call of its own (sent one after
/// another), and each takes a token of the invocation poller's budget. Systems Manager does not
/// publish its per-action rates; 10 calls a second (bursts of 20) stays well inside what the
/// standard retry mode absorbs.
const INVOCATIONS: Pace = Pace {
    budget: Budget {
        capacity: 20.0,
        refill_per_sec: 10.0,
    },
    ..poller::DESCRIBE
};

/// A shared poller whose batches `describe` answers with the region's clients.
fn shared<K, V, F, Fut>(
    what: &'static str,
    pace: Pace,
    chunk: usize,
    d: &Describer,
    describe: F,
) -> Arc<Poller<K, V>>
where
    K: Clone + Eq + std::hash::Hash + Ord + Send + Sync + 'static,
    V: Clone + Send + 'static,
    F: Fn(Describer, Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Vec<(K, V)>, CloudError>> + Send + 'static,
{
    let d = d.clone();
    Arc::new(Poller::new(
        what,
        pace,
        chunk,
        Arc::new(move |keys: Vec<K>| Box::pin(describe(d.clone(), keys))),
    ))
}

impl Aws {
    /// Builds clients with the standard credential chain (or the target's profile), the region,
    /// and the target's endpoint or `AWS_ENDPOINT_URL`.
    pub async fn connect(target: &Target, region: &Region) -> Self {
        Self::connect_with(target, region, None).await
    }

    /// `connect`, with these credentials instead of the chain's (a consumer's assumed role).
    pub async fn connect_with(
        target: &Target,
        region: &Region,
        credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    ) -> Self {
        let http = http_client();
        let mut loader = loader(target, region, http.clone());
        if let Some(c) = credentials {
            loader = loader.credentials_provider(c);
        }
        let conf = loader.load().await;
        let limiter = Arc::new(Limiter::default());
        // Every EC2 request (retries included) takes a token from its documented bucket first.
        // A request waiting for its token has not started its upload yet; the SDK's upload
        // stall protection would count that wait as a stalled body (0 B/s past its 5 s grace)
        // and fail the call. EC2 bodies are a few hundred bytes: only downloads are watched.
        let ec2_conf = aws_sdk_ec2::config::Builder::from(&conf)
            .http_client(limited::Limited::new(http, limiter.clone()))
            .stalled_stream_protection(
                aws_smithy_runtime_api::client::stalled_stream_protection::StalledStreamProtectionConfig::enabled()
                    .upload_enabled(false)
                    .build(),
            )
            .build();
        let ec2 = aws_sdk_ec2::Client::from_conf(ec2_conf);
        let ssm = aws_sdk_ssm::Client::new(&conf);
        let d = Describer {
            ec2: ec2.clone(),
            ssm: ssm.clone(),
            region: region.clone(),
        };
        Self {
            region: region.clone(),
            ec2,
            ssm,
            iam: aws_sdk_iam::Client::new(&conf),
            kms: aws_sdk_kms::Client::new(&conf),
            autoscaling: aws_sdk_autoscaling::Client::new(&conf),
            // A custom endpoint (the emulator, a VPC endpoint) is addressed by path, not by a
            // bucket subdomain.
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&conf)
                    .force_path_style(conf.endpoint_url().is_some())
                    .build(),
            ),
            limiter,
            instances: shared(
                "instance",
                poller::DESCRIBE,
                IDS_PER_CALL,
                &d,
                Describer::instances,
            ),
            images: shared(
                "image",
                poller::DESCRIBE,
                IDS_PER_CALL,
                &d,
                Describer::images,
            ),
            invocations: shared("invocation", INVOCATIONS, 1, &d, Describer::invocations),
            nodes: shared(
                "managed node",
                poller::DESCRIBE,
                NODES_PER_CALL,
                &d,
                Describer::nodes,
            ),
        }
    }

    /// The invocation's state at the shared poller's next tick (`None`: not known yet).
    pub async fn poll_invocation(
        &self,
        command_id: &str,
        id: &InstanceId,
    ) -> Result<Option<Invocation>, CloudError> {
        self.invocations
            .observe((command_id.to_string(), id.clone()))
            .await
    }

    /// Systems Manager's view of the instance at the next tick (`None`: not registered).
    pub async fn poll_node(&self, id: &InstanceId) -> Result<Option<ManagedNode>, CloudError> {
        self.nodes.observe(id.clone()).await
    }

    /// The instance's state at the shared poller's next tick (`None`: not visible yet).
    pub async fn poll_instance(&self, id: &InstanceId) -> Result<Option<InstanceInfo>, CloudError> {
        self.instances.observe(id.clone()).await
    }

    /// The image's state at the shared poller's next tick (`None`: not visible yet).
    pub async fn poll_image(&self, id: &ImageId) -> Result<Option<ImageInfo>, CloudError> {
        self.images.observe(id.clone()).await
    }

    pub fn stats(&self) -> RegionStats {
        RegionStats {
            ec2: self.limiter.stats(),
            instances: self.instances.stats(),
            images: self.images.stats(),
            invocations: self.invocations.stats(),
            nodes: self.nodes.stats(),
        }
    }

    fn err<E>(&self, op: &'static str, e: aws_sdk_ec2::error::SdkError<E>) -> CloudError
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        api_error(&self.region, op, e)
    }

    fn bad(&self, op: &'static str, message: impl Into<String>) -> CloudError {
        CloudError::BadAnswer {
            op,
            region: self.region.to_string(),
            message: message.into(),
        }
    }
}

/// The SDK configuration of `target` in `region`, credentials from the chain (or the target's
/// profile): region, HTTP client, retries, per-attempt timeout and the target's endpoint.
pub(crate) fn loader(
    target: &Target,
    region: &Region,
    http: aws_smithy_runtime_api::client::http::SharedHttpClient,
) -> aws_config::ConfigLoader {
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
    loader
}

/// The HTTPS client every SDK client uses (rustls with ring: no OpenSSL to install).
pub(crate) fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// An SDK error as a `CloudError` naming the operation and region, with AWS's code.
fn api_error<E>(region: &Region, op: &'static str, e: aws_sdk_ec2::error::SdkError<E>) -> CloudError
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    let code = e.code().map(str::to_string);
    // AWS's own words when it answered; otherwise (no answer: a timeout, a refused connection,
    // credentials that could not be loaded) the chain of causes on one line, never a Debug dump.
    let message = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => causes(&e),
    };
    let request_id = e
        .meta()
        .extra("aws_request_id")
        .map(str::to_string)
        .or_else(|| {
            let raw = e.raw_response()?;
            ["x-amzn-requestid", "x-amz-request-id"]
                .iter()
                .find_map(|h| raw.headers().get(*h).map(str::to_string))
        });
    CloudError::Api {
        op,
        region: region.to_string(),
        code,
        message,
        request_id,
    }
}

/// An error and its sources on one line (`dispatch failure: io error: ... connection refused`):
/// what `DisplayErrorContext` says, without the `Debug` dump it appends.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p == &t) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Clients per region, built on first use (from a fleet, when given one).
pub struct Regions<'a> {
    pub(crate) target: &'a Target,
    clients: BTreeMap<String, Aws>,
    fleet: Option<Fleet>,
}

impl<'a> Regions<'a> {
    pub fn new(target: &'a Target) -> Self {
        Self {
            target,
            clients: BTreeMap::new(),
            fleet: None,
        }
    }

    /// Regions whose clients (and so rate limiters and pollers) come from `fleet`.
    pub fn in_fleet(target: &'a Target, fleet: &Fleet) -> Self {
        Self {
            fleet: Some(fleet.clone()),
            ..Self::new(target)
        }
    }

    pub async fn get(&mut self, region: &str) -> &Aws {
        if !self.clients.contains_key(region) {
            let r = Region(region.to_string());
            let aws = match &self.fleet {
                Some(f) => f.connect(self.target, &r).await,
                None => Aws::connect(self.target, &r).await,
            };
            self.clients.insert(region.to_string(), aws);
        }
        &self.clients[region]
    }
}

/// The clients every bake in one process shares, one set per target and region, so that they
/// draw from one rate limiter and register with one poller per region.
#[derive(Clone, Default, Debug)]
pub struct Fleet {
    clients: Arc<tokio::sync::Mutex<BTreeMap<String, Aws>>>,
}

impl Fleet {
    pub async fn connect(&self, target: &Target, region: &Region) -> Aws {
        let key = format!(
            "{}|{:?}|{:?}|{}",
            target.name, target.profile, target.endpoint_url, region
        );
        let mut clients = self.clients.lock().await;
        if let Some(a) = clients.get(&key) {
            return a.clone();
        }
        let aws = Aws::connect(target, region).await;
        clients.insert(key, aws.clone());
        aws
    }

    /// Per region: what its limiter and pollers did.
    pub async fn stats(&self) -> BTreeMap<String, RegionStats> {
        let clients = self.clients.lock().await;
        let mut out: BTreeMap<String, RegionStats> = BTreeMap::new();
        for a in clients.values() {
            let s = a.stats();
            let e = out.entry(a.region.to_string()).or_default();
            e.ec2.requests += s.ec2.requests;
            e.ec2.delayed += s.ec2.delayed;
            e.ec2.waited_ms += s.ec2.waited_ms;
            for (t, f) in [
                (&mut e.instances, s.instances),
                (&mut e.images, s.images),
                (&mut e.invocations, s.invocations),
                (&mut e.nodes, s.nodes),
            ] {
                t.ticks += f.ticks;
                t.calls += f.calls;
                t.answered += f.answered;
                t.max_batch = t.max_batch.max(f.max_batch);
            }
        }
        out
    }
}
