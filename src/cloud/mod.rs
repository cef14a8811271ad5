//! What a bake needs from AWS, in domain types. `aws/` implements it with the SDKs; SDK types
//! never leave that module. `wait` is the one bounded, jittered, cancellable wait; `poller` batches
//! the Describe calls of every wait in a region; `limit` keeps EC2 calls under AWS's buckets.

pub mod aws;
pub mod cancel;
pub mod limit;
pub mod poller;
pub mod wait;

use std::time::Duration;

string_id!(
    /// `ami-...`
    pub ImageId
);
string_id!(
    /// `i-...`
    pub InstanceId
);
string_id!(
    /// `snap-...`
    pub SnapshotId
);
string_id!(
    /// `sg-...`
    pub SecurityGroupId
);
string_id!(
    /// An EC2 key pair name.
    pub KeyName
);

/// Tags as key/value pairs, in a stable order.
pub type Tags = std::collections::BTreeMap<String, String>;

/// An AMI as bakery sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    pub id: ImageId,
    pub name: String,
    /// `pending`, `available`, `failed`, ...
    pub state: String,
    pub state_reason: Option<String>,
    pub creation_date: String,
    pub root_device_name: Option<String>,
    pub architecture: String,
    /// `windows` or empty (the SDK's enum does not know Windows: aws/aws-sdk#797).
    pub platform: String,
    pub snapshots: Vec<SnapshotId>,
    pub tags: Tags,
    /// When the image is (or was) deprecated, RFC 3339.
    pub deprecation_time: Option<String>,
}

/// An instance as bakery sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceInfo {
    pub id: InstanceId,
    pub state: String,
    pub state_reason: Option<String>,
    pub public_ip: Option<String>,
    pub private_ip: Option<String>,
    pub instance_type: String,
    pub tags: Tags,
}

/// A snapshot as the sweep sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    pub id: SnapshotId,
    /// AWS writes `Created by CreateImage(i-...) for ami-...` on the snapshots of CreateImage.
    pub description: String,
    pub tags: Tags,
}

/// A resource found by its tags (security groups, key pairs).
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedResource<Id> {
    pub id: Id,
    pub tags: Tags,
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub image: ImageId,
    pub root_device_name: String,
    /// Tried in order; the next one on a capacity error.
    pub instance_types: Vec<String>,
    pub key_name: Option<KeyName>,
    pub security_group: Option<SecurityGroupId>,
    pub subnet: Option<String>,
    pub instance_profile: Option<String>,
    pub user_data: Option<String>,
    pub volume_size_gb: Option<u32>,
    pub volume_type: String,
    pub kms_key: Option<String>,
    pub tags: Tags,
    /// RunInstances idempotency token prefix (at most 60 ASCII characters).
    pub client_token: Option<String>,
}

/// One command invocation on one instance, as GetCommandInvocation reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Invocation {
    /// Pending, InProgress, Delayed, Success, Cancelled, TimedOut, Failed, Cancelling.
    pub status: String,
    /// The finer status (`Undeliverable`, `ExecutionTimedOut`, ...).
    pub details: String,
    /// The script's exit code (-1 while it has none).
    pub response_code: i32,
    /// At most 24,000 characters (the API truncates).
    pub stdout: String,
    /// At most 8,000 characters.
    pub stderr: String,
    /// Where the full output is when the command wrote it to S3.
    pub stdout_url: Option<String>,
    pub stderr_url: Option<String>,
}

/// An instance as Systems Manager knows it (DescribeInstanceInformation).
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedNode {
    pub id: InstanceId,
    /// Online, ConnectionLost, Inactive.
    pub ping_status: String,
    /// Windows, Linux, MacOS.
    pub platform: String,
}

/// A failed AWS call, named by its operation (`RunInstances`), never a bare SDK error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    #[error("{op} in {region} failed: {message}")]
    Api {
        op: &'static str,
        region: String,
        code: Option<String>,
        message: String,
    },
    #[error("{op} in {region}: unexpected answer: {message}")]
    BadAnswer {
        op: &'static str,
        region: String,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("gave up waiting for {resource} to be {want} after {}s: last state {last}{}", waited.as_secs(), reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Timeout {
        resource: String,
        want: String,
        last: String,
        reason: Option<String>,
        waited: Duration,
    },
    #[error("{resource} became {state}{} while waiting for {want}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Terminal {
        resource: String,
        want: String,
        state: String,
        reason: Option<String>,
    },
    #[error("cancelled")]
    Cancelled,
}

impl CloudError {
    /// The AWS error code, when AWS gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            CloudError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}
