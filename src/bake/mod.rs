//! A bake: the runner executes a plan as phases against the cloud and the remote, pushing an undo
//! onto the ledger the moment AWS returns an id; on failure or cancellation it undoes in reverse
//! with a fresh deadline. The result is an `Artifact` (a version with one AMI per region).

mod capture;
mod connect;
mod context;
mod distribute;
pub mod gc;
mod launch;
pub mod ledger;
mod preflight;
mod promote;
mod provision;
mod publish;
mod runner;
mod scripts;
mod settle;
mod steps;
pub mod sweep;
mod test;
mod test_version;
pub mod undo;
mod verify;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use runner::bake;
pub use scripts::{windows_script_book, GOLDEN_MARK};
pub use test_version::{test_version, TestRun};
pub use undo::cleanup;

use crate::checks::report::CheckResult;
use ledger::Undo;

/// Top folder of what bakes put in the target's bucket (`bakery/<bake-id>/...`).
pub const S3_PREFIX: &str = "bakery";

/// How long a bake's resources count as live without a heartbeat (`bakery:expires`); a running
/// bake renews it every third of this. Long enough to outlast a few failed renewals.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30 * 60);

/// What to do with the build instance when a bake fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Remove everything the bake created (the default).
    #[default]
    Cleanup,
    /// Keep the instance (and what reaches it) for debugging; `bakery cleanup` removes it.
    Keep,
}

#[derive(Debug, Clone)]
pub struct BakeOptions {
    pub on_error: OnError,
    /// Deadline for undoing after a failure or cancellation (a fresh one, not what is left of
    /// the bake's).
    pub cleanup_timeout: Duration,
    /// Clients shared by every bake of this process: one EC2 rate limiter and one set of
    /// pollers per region.
    pub fleet: crate::cloud::aws::Fleet,
    /// How far ahead each renewal of `bakery:expires` reaches (`bake --lease`).
    pub lease: Duration,
    /// Skip the test phase (`--skip-test`, for emergencies): the AMI is tagged
    /// `bakery:tested=skipped`.
    pub skip_test: bool,
}

impl Default for BakeOptions {
    fn default() -> Self {
        Self {
            on_error: OnError::Cleanup,
            cleanup_timeout: Duration::from_secs(15 * 60),
            fleet: Default::default(),
            lease: DEFAULT_LEASE,
            skip_test: false,
        }
    }
}

/// A successful bake.
#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    pub image: String,
    pub version: String,
    pub fingerprint: String,
    /// Region -> AMI id.
    pub amis: BTreeMap<String, String>,
    pub source_ami: String,
    pub parent: Option<String>,
    pub bake_id: String,
    /// SSM parameters written (`region:name` -> value).
    pub parameters: BTreeMap<String, String>,
    /// Channels moved to this version (`publish.channels`).
    pub channels: Vec<String>,
    /// Seconds per phase.
    pub timings: BTreeMap<String, f64>,
    pub checks: Vec<CheckResult>,
    /// What the fingerprint covers, each with its own hash (`plan --offline --explain`).
    pub inputs: Vec<crate::plan::FingerprintInput>,
    /// Why the image was baked: `new`, or what differs from the newest published version
    /// (`source ami-a -> ami-b`, `parent 1.0.3 -> 1.0.4`, `changed <input>`), as `bakery plan`
    /// says it.
    pub reasons: Vec<String>,
    /// The cost estimate: instances and volumes while it ran, snapshot storage per month.
    pub cost: crate::cost::Cost,
    /// Region -> EC2 Fast Launch state of the new AMI (`publish.fast_launch`): `enabling`,
    /// `enabled`, or `not-enabled` when enabling failed (a warning says why).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fast_launch: BTreeMap<String, String>,
    /// The mirror in each consumer account and region (bakery.toml's `consumers`): written, or
    /// why not (the version stands; `bakery sync` finishes it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<crate::registry::consumers::Synced>,
    /// Windows updates the bake installed (`KB5034439 <title>`); their KB count is the AMI's
    /// `bakery:kbs` tag.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<String>,
    /// Seconds from RunInstances to the test instance's finished first boot (how long a
    /// consumer waits for an instance of this image); none without a test phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_seconds: Option<f64>,
}

/// How a bake ended badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// A step or AWS call failed.
    Failed,
    /// One or more checks failed.
    Checks,
    /// Ctrl-C / SIGTERM.
    Cancelled,
    /// The bake cannot work as configured, found in preflight by reading AWS (before anything
    /// is created): an input error, exit 2.
    Invalid,
}

impl FailKind {
    /// The outcome in events and reports.
    pub fn outcome(self) -> &'static str {
        match self {
            FailKind::Failed => "failed",
            FailKind::Checks => "checks_failed",
            FailKind::Cancelled => "cancelled",
            FailKind::Invalid => "invalid",
        }
    }
}

/// A failed bake: what failed, where, and what (if anything) was left behind.
#[derive(Debug, Clone)]
pub struct BakeError {
    pub bake_id: String,
    pub image: String,
    pub phase: &'static str,
    pub kind: FailKind,
    pub cause: String,
    pub checks: Vec<CheckResult>,
    pub left_behind: Vec<Undo>,
    pub cleanup_errors: Vec<String>,
    /// With `--on-error keep`: how to reach the instance.
    pub kept: Option<String>,
    pub journal: PathBuf,
    /// Seconds per phase reached (the failed one included).
    pub timings: BTreeMap<String, f64>,
    /// What the fingerprint covers (empty when planning failed).
    pub inputs: Vec<crate::plan::FingerprintInput>,
    /// Why the image was baked (empty when preflight did not get that far).
    pub reasons: Vec<String>,
    /// What the instances it launched cost (none when it launched nothing).
    pub cost: Option<crate::cost::Cost>,
}

impl std::fmt::Display for BakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            FailKind::Cancelled => "was cancelled",
            _ => "failed",
        };
        writeln!(
            f,
            "bake {} of {} {what} in {}: {}",
            self.bake_id, self.image, self.phase, self.cause
        )?;
        for e in &self.cleanup_errors {
            writeln!(f, "cleanup error: {e}")?;
        }
        if let Some(k) = &self.kept {
            writeln!(f, "kept for debugging: {k}")?;
        }
        if self.left_behind.is_empty() {
            write!(f, "nothing was left behind")
        } else {
            writeln!(f, "left behind:")?;
            for u in &self.left_behind {
                writeln!(f, "  {u}")?;
            }
            write!(f, "remove with: bakery cleanup {}", self.bake_id)
        }
    }
}

impl std::error::Error for BakeError {}

/// A new bake id: time-ordered and unique enough for concurrent runners
/// (`bk-<unix seconds, base 36>-<8 random hex>`).
pub fn new_bake_id() -> String {
    use rand::RngExt;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut n = secs;
    let mut b36 = Vec::new();
    while n > 0 {
        b36.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    b36.reverse();
    let r: u32 = rand::rng().random();
    format!("bk-{}-{r:08x}", String::from_utf8_lossy(&b36))
}
