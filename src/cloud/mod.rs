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
    /// GiB of the EBS volumes the AMI's snapshots hold (their sizes as volumes: an upper
    /// bound of what the snapshots store).
    pub ebs_gb: Option<u64>,
    pub tags: Tags,
    /// When the image is (or was) deprecated, RFC 3339.
    pub deprecation_time: Option<String>,
    /// `v2.0` when instances launched from it require IMDSv2.
    pub imds_support: Option<String>,
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
    /// `RunInstances in eu-west-1 failed: UnauthorizedOperation: You are not authorized…
    /// (request id 5b8…)`, then a hint for codes a person can act on.
    #[error("{op} in {region} failed: {message}{}{}", request_id.as_deref().map(|r| format!(" (request id {r})")).unwrap_or_default(), hint(op, region, code.as_deref()).map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Api {
        op: &'static str,
        region: String,
        code: Option<String>,
        message: String,
        /// AWS's id of the failed request, for AWS support and CloudTrail.
        request_id: Option<String>,
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

/// Calls the SDK makes for one operation before it gives up on throttling and transient
/// errors (standard retry mode).
pub const MAX_ATTEMPTS: u32 = 5;

/// The service an operation belongs to, for IAM action names (`ec2:RunInstances`).
fn service_of(op: &str) -> &'static str {
    const SSM: &[&str] = &[
        "GetParameter",
        "GetParameters",
        "GetParametersByPath",
        "GetParameterHistory",
        "PutParameter",
        "DeleteParameter",
        "DeleteParameters",
        "LabelParameterVersion",
        "AddTagsToResource",
        "RemoveTagsFromResource",
        "ListTagsForResource",
        "SendCommand",
        "GetCommandInvocation",
        "CancelCommand",
        "ListCommandInvocations",
        "DescribeInstanceInformation",
        "DescribeParameters",
    ];
    const S3: &[&str] = &[
        "PutObject",
        "GetObject",
        "HeadObject",
        "DeleteObject",
        "DeleteObjects",
        "ListObjectsV2",
        "HeadBucket",
        "GetBucketLocation",
    ];
    if SSM.contains(&op) {
        "ssm"
    } else if S3.contains(&op) {
        "s3"
    } else if op.starts_with("GetInstanceProfile") || op == "PassRole" {
        "iam"
    } else {
        "ec2"
    }
}

/// What a person can do about a well-known error code.
fn hint(op: &str, region: &str, code: Option<&str>) -> Option<String> {
    let service = service_of(op);
    Some(match code? {
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" => format!(
            "the credentials bakery runs with may not call {service}:{op}{}: add it to their IAM policy{}",
            if service == "s3" { "" } else { " in this region" },
            if code == Some("UnauthorizedOperation") {
                " (`aws sts decode-authorization-message` decodes an encoded reason)"
            } else {
                ""
            }
        ),
        c if c.starts_with("InvalidAMIID.") => format!(
            "AMI ids belong to one region: check that the AMI exists in {region} (a copy in another region has another id)"
        ),
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "SlowDown"
        | "TooManyRequestsException" => format!(
            "AWS throttled the account: the call was tried {MAX_ATTEMPTS} times with backoff; run fewer bakes at once (--jobs) or ask AWS for a higher {service} rate limit"
        ),
        "InternalError" | "InternalFailure" | "InternalServerError" | "ServiceUnavailable"
        | "Unavailable" => format!(
            "AWS failed on its side, {MAX_ATTEMPTS} times in a row: run the command again (what it created is tagged and recorded, `bakery gc` finds it)"
        ),
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" => {
            "the credentials expired: refresh them (aws sso login, or new session credentials) and run again".into()
        }
        "AuthFailure" | "InvalidClientTokenId" | "UnrecognizedClientException"
        | "SignatureDoesNotMatch" => {
            "AWS did not accept the credentials: check AWS_PROFILE / the access key, and that the region is enabled for the account".into()
        }
        "OptInRequired" => format!("{region} is not enabled for this account (or the AMI needs a Marketplace subscription)"),
        "InsufficientInstanceCapacity" | "Unsupported" => {
            "AWS has no capacity for this instance type here now: list more types in instance_types".into()
        }
        _ => return None,
    })
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

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn api_errors_read_as_a_sentence_with_a_hint() {
        let e = |op: &'static str, code: &str| CloudError::Api {
            op,
            region: "eu-west-1".into(),
            code: Some(code.into()),
            message: format!("{code}: something"),
            request_id: Some("req-1".into()),
        };
        let s = e("PutParameter", "AccessDeniedException").to_string();
        assert!(s.starts_with("PutParameter in eu-west-1 failed: AccessDeniedException: something (request id req-1)\n  hint: the credentials bakery runs with may not call ssm:PutParameter in this region"), "{s}");
        let s = e("DescribeImages", "InvalidAMIID.NotFound").to_string();
        assert!(s.contains("check that the AMI exists in eu-west-1"), "{s}");
        let s = e("CreateImage", "RequestLimitExceeded").to_string();
        assert!(s.contains("tried 5 times with backoff"), "{s}");
        let s = e("PutObject", "AccessDenied").to_string();
        assert!(s.contains("s3:PutObject: add it"), "{s}");
        let s = e("RunInstances", "SomethingElse").to_string();
        assert!(!s.contains("hint"), "{s}");
    }
}
