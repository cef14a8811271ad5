//! What every phase of a bake works with: the image, target and plan, the clients, the
//! journal, cancellation and the clock of the current phase (`Bake`); why a phase stopped
//! (`Failure`); the live connection (`Link`); and the waits the phases share.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use semver::Version;

use super::ledger::Journal;
use super::preflight::Preflighted;
use super::steps::{Host, StepError};
use super::{BakeOptions, FailKind};
use crate::catalog::model::{Communicator, Image, Platform, Target};
use crate::cloud::aws::Aws;
use crate::cloud::cancel::Cancel;
use crate::cloud::wait::{Poll, Wait};
use crate::cloud::{CloudError, ImageId, ImageInfo, InstanceId, Tags};
use crate::events::{BakeEvent, Events, FailureCode};
use crate::plan::Plan;
use crate::registry::{self, tag};
use crate::remote::ssh::{HostKeyPin, SshTarget};
use crate::remote::ssm::Ssm;
use crate::remote::Conn;

/// Why a phase stopped.
pub(super) struct Failure {
    pub(super) kind: FailKind,
    pub(super) cause: String,
    /// What kind of error it was, when the error said (an AWS error code, a timeout, a step's
    /// exit): the `code` of the `finished` event, never guessed from the text.
    pub(super) code: Option<FailureCode>,
}

/// Hex digits of each input hash a version records (enough to tell inputs apart).
const INPUT_HASH_LEN: usize = 16;
/// Tags added to a version's AMI after its creation: `bakery:published` and `bakery:tested`
/// by the commit, `bakery:revoked` by a revoke.
const LATER_TAGS: usize = 3;

impl Failure {
    /// The failure of checks that did not pass, or `None` when all did: `{prefix}N of M
    /// {noun} failed: name (detail); ...`.
    pub(super) fn checks(
        results: &[crate::checks::report::CheckResult],
        prefix: &str,
        noun: &str,
    ) -> Option<Self> {
        let failed: Vec<String> = results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| format!("{} ({})", r.name, r.detail))
            .collect();
        (!failed.is_empty()).then(|| Failure {
            kind: FailKind::Checks,
            code: None,
            cause: format!(
                "{prefix}{} of {} {noun} failed: {}",
                failed.len(),
                results.len(),
                failed.join("; ")
            ),
        })
    }

    pub(super) fn new(cause: impl std::fmt::Display) -> Self {
        Failure {
            kind: FailKind::Failed,
            cause: cause.to_string(),
            code: None,
        }
    }

    pub(super) fn cancelled() -> Self {
        Failure {
            kind: FailKind::Cancelled,
            cause: "cancelled".into(),
            code: None,
        }
    }
}

/// The failure code an AWS error carries.
fn cloud_code(e: &CloudError) -> FailureCode {
    match e {
        CloudError::Api { code: Some(c), .. } => FailureCode::of_aws_code(c),
        CloudError::Timeout { .. } => FailureCode::Timeout,
        // An instance that ended while we waited says why in its state reason's code
        // (`Server.InsufficientInstanceCapacity`: the first word).
        CloudError::Terminal {
            reason: Some(r), ..
        } => FailureCode::of_aws_code(r.split([':', ' ']).next().unwrap_or_default()),
        CloudError::Cancelled => FailureCode::Interrupted,
        CloudError::NotFound(_) => FailureCode::Failed,
        _ => FailureCode::AwsError,
    }
}

impl From<CloudError> for Failure {
    fn from(e: CloudError) -> Self {
        match e {
            CloudError::Cancelled => Failure::cancelled(),
            e => Failure {
                code: Some(cloud_code(&e)),
                ..Failure::new(e)
            },
        }
    }
}

impl From<StepError> for Failure {
    fn from(e: StepError) -> Self {
        let code = match &e {
            StepError::Cancelled => return Failure::cancelled(),
            StepError::Exit { .. } | StepError::Unsupported(_) => Some(FailureCode::StepFailed),
            StepError::Timeout(_) => Some(FailureCode::Timeout),
            // The connection broke: what that is depends on the phase (connect or a step).
            StepError::Remote(_) => None,
        };
        Failure {
            code,
            ..Failure::new(e)
        }
    }
}

impl From<crate::remote::RemoteError> for Failure {
    fn from(e: crate::remote::RemoteError) -> Self {
        StepError::from(e).into()
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::new(format!("journal: {e}"))
    }
}

/// Time allowed for each probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(super::scripts::PROBE_SECS);

/// The live connection to the build instance. The runner owns it, not a phase: a restart drops
/// and re-establishes it, and the cleanup after an interrupted step still needs it (to stop the
/// command in flight and remove the working directory).
#[derive(Default)]
pub(super) struct Link(pub(super) Option<Conn>);

impl Link {
    /// The connection, or "not connected" (a restart in progress).
    pub(super) fn get(&self) -> Result<&Conn, Failure> {
        self.0.as_ref().ok_or_else(|| Failure::new("not connected"))
    }
}

/// One bake in progress: what every phase reads, and the journal it writes.
pub(super) struct Bake<'a> {
    pub(super) image: &'a Image,
    pub(super) target: &'a Target,
    pub(super) plan: Plan,
    pub(super) opts: &'a BakeOptions,
    pub(super) events: &'a Events,
    pub(super) cancel: Cancel,
    /// The build region's clients.
    pub(super) aws: Aws,
    pub(super) journal: Journal,
    pub(super) bake_id: String,
    /// The build instance's host key, pinned on the first connection.
    pub(super) pin: HostKeyPin,
    /// The working directory is gone (Windows finalize steps run in the system temp directory).
    pub(super) workdir_removed: bool,
    /// Updates Windows Update installed (`KB5034439 <title>`), for the report and `bakery:kbs`.
    pub(super) updates: Vec<String>,
    /// Seconds from RunInstances to a test instance that finished its first boot (what a
    /// consumer waits for an instance of this image).
    pub(super) boot_seconds: Option<f64>,
    /// Why this bake differs from the newest published version (`new`, `source a -> b`,
    /// `parent 1.0.3 -> 1.0.4`, `changed <input>`), found by preflight.
    pub(super) reasons: Vec<String>,
    /// Instances this bake launched, for its cost: role, type, root volume GiB, when.
    pub(super) instances: Vec<(&'static str, String, Option<u64>, std::time::Instant)>,
    /// Region -> EC2 Fast Launch state of the new AMI after publish (`publish.fast_launch`).
    pub(super) fast_launch: BTreeMap<String, String>,
    /// The registry's mirror in each consumer account and region after publish.
    pub(super) consumers: Vec<crate::registry::consumers::Synced>,
    /// How to log in to the build instance once known; read only by the failure path
    /// (`--on-error keep`).
    pub(super) reach: Option<SshTarget>,
    pub(super) phase: &'static str,
    pub(super) phase_started: Instant,
    /// Seconds per phase.
    pub(super) timings: BTreeMap<String, f64>,
}

impl Bake<'_> {
    /// Starts a phase: its event, and its clock.
    pub(super) fn emit_phase(&mut self, phase: &'static str) {
        self.phase = phase;
        self.phase_started = Instant::now();
        self.events.emit(BakeEvent::Phase {
            bake_id: self.bake_id.clone(),
            image: self.image.name.to_string(),
            phase,
        });
        tracing::info!(bake_id = %self.bake_id, image = %self.image.name, phase, "phase");
    }

    /// The cost of what this bake ran until now, with the new AMI's snapshots in `regions`.
    pub(super) fn cost(&self, regions: &[String]) -> crate::cost::Cost {
        let volume_type = format!("{:?}", self.image.build.root_volume.volume_type).to_lowercase();
        let uses: Vec<crate::cost::Usage> = self
            .instances
            .iter()
            .map(|(role, ty, gb, at)| crate::cost::Usage {
                role,
                region: self.region(),
                instance_type: ty.clone(),
                windows: self.image.platform == crate::catalog::model::Platform::Windows,
                seconds: at.elapsed().as_secs_f64(),
                volume_gb: *gb,
                volume_type: volume_type.clone(),
            })
            .collect();
        let gb = self.instances.first().and_then(|(_, _, gb, _)| *gb);
        crate::cost::estimate(&self.target.prices, &uses, regions, gb)
    }

    pub(super) fn region(&self) -> String {
        self.aws.region.to_string()
    }

    pub(super) fn created(&self, what: String) {
        self.events.emit(BakeEvent::Created {
            bake_id: self.bake_id.clone(),
            resource: what,
        });
    }

    /// Records how long the current phase took.
    pub(super) fn leave(&mut self) {
        // A phase entered twice (distribute starts its copies before the test) adds up.
        *self.timings.entry(self.phase.to_string()).or_default() +=
            self.phase_started.elapsed().as_secs_f64();
    }

    /// Says what a wait is waiting for (each time that changes).
    pub(super) fn waiting(&self, what: String) {
        tracing::info!(bake_id = %self.bake_id, what = %what, "waiting");
        self.events.emit(BakeEvent::Waiting {
            bake_id: self.bake_id.clone(),
            what,
        });
    }

    pub(super) fn warn(&self, message: String) {
        self.events.emit(BakeEvent::Warning {
            bake_id: self.bake_id.clone(),
            message,
        });
    }

    /// Tags of everything the bake creates: the bake id, and a lease (`bakery:expires`) that
    /// the heartbeat renews while the bake runs, so `bakery gc` can tell a live bake from a dead one.
    pub(super) fn tags(&self) -> Tags {
        let mut t: Tags = self.target.tags.clone();
        t.insert(tag::BAKE_ID.into(), self.bake_id.clone());
        t.insert(tag::IMAGE.into(), self.image.name.to_string());
        t.insert(tag::EXPIRES.into(), expiry(self.opts.lease));
        t
    }

    /// Tags of the AMI and its snapshots (in every region).
    pub(super) fn image_tags(&self, pre: &Preflighted, name: &str, version: &Version) -> Tags {
        // `bakery:expires` is the bake's lease until the commit ends it (`never`).
        let mut tags = self.tags();
        tags.insert("Name".into(), name.to_string());
        tags.insert(tag::VERSION.into(), version.to_string());
        tags.insert(tag::FINGERPRINT.into(), pre.fingerprint.clone());
        tags.insert(tag::SOURCE_AMI.into(), pre.source.id.to_string());
        if let Some(p) = &pre.parent {
            tags.insert(tag::PARENT.into(), p.clone());
        }
        tags.insert(
            tag::CREATED_BY.into(),
            format!("bakery/{}", env!("CARGO_PKG_VERSION")),
        );
        if !self.updates.is_empty() {
            // How many KB articles the bake installed (the report lists them).
            let kbs = crate::remote::powershell::kb_articles(&self.updates);
            tags.insert(tag::KBS.into(), kbs.len().to_string());
        }
        // What it was baked from, for `plan` to say what changed since: on the AMI itself (the
        // listings that read the registry return it), where it fits beside the tags the
        // commit and a revoke add.
        let inputs = registry::inputs_tags(&self.inputs_record());
        if tags.len() + inputs.len() + LATER_TAGS <= registry::EC2_TAGS_MAX {
            tags.extend(inputs);
        }
        tags
    }

    /// The JSON of fingerprint input label -> hash prefix that a version records.
    fn inputs_record(&self) -> String {
        let inputs: BTreeMap<&str, &str> = self
            .plan
            .inputs
            .iter()
            .map(|i| {
                (
                    i.label.as_str(),
                    &i.sha256[..INPUT_HASH_LEN.min(i.sha256.len())],
                )
            })
            .collect();
        serde_json::to_string(&inputs).unwrap_or_default()
    }

    /// Regions the image is published to: `publish.regions`, or the target's.
    pub(super) fn publish_regions(&self) -> Vec<String> {
        let mut out: Vec<String> = if self.image.publish.regions.is_empty() {
            self.target.regions.iter().map(|r| r.to_string()).collect()
        } else {
            self.image
                .publish
                .regions
                .iter()
                .map(|r| r.to_string())
                .collect()
        };
        let build = self.region();
        out.retain(|r| r != &build);
        out.dedup();
        out.insert(0, build);
        out
    }

    /// This bake's prefix in the target's bucket.
    pub(super) fn s3_prefix(&self) -> String {
        format!("{}/{}", super::S3_PREFIX, self.bake_id)
    }

    pub(super) fn ssm(&self) -> bool {
        self.image.build.communicator == Communicator::Ssm
    }

    /// The SSM communicator for the build instance.
    pub(super) fn ssm_conn(&self, instance: &InstanceId) -> Ssm {
        Ssm {
            aws: self.aws.clone(),
            instance: instance.clone(),
            platform: self.image.platform,
            s3: self
                .target
                .s3_bucket
                .as_ref()
                .map(|b| (b.clone(), self.s3_prefix())),
            bake_id: self.bake_id.clone(),
            in_flight: Default::default(),
        }
    }

    /// The per-bake working directory on the instance (Windows finalize steps run in the
    /// system's temporary directory once it is gone).
    pub(super) fn workdir(&self) -> String {
        match self.image.platform {
            Platform::Windows if self.workdir_removed => "C:\\Windows\\Temp".to_string(),
            Platform::Windows => format!("C:\\Windows\\Temp\\bakery-{}", self.bake_id),
            Platform::Linux => format!("/var/tmp/bakery-{}", self.bake_id),
        }
    }

    pub(super) fn host<'b>(&'b self, conn: &'b Conn, workdir: &'b str) -> Host<'b> {
        Host {
            conn,
            platform: self.image.platform,
            workdir,
            // The SSM agent runs commands as root (SYSTEM on Windows): sudo is for SSH logins.
            sudo: self.image.build.ssh.sudo && !self.ssm(),
            events: self.events,
            bake_id: &self.bake_id,
            cancel: &self.cancel,
        }
    }

    /// Runs `checks` as probes through `host` (one command for all of them, see
    /// `Host::check_all`), reporting each result.
    pub(super) async fn probe_all(
        &self,
        host: &Host<'_>,
        checks: &[crate::plan::PlannedCheck],
    ) -> Vec<crate::checks::report::CheckResult> {
        let results = host.check_all(checks, PROBE_TIMEOUT).await;
        for r in &results {
            self.events.emit(BakeEvent::Check {
                bake_id: self.bake_id.clone(),
                result: r.clone(),
            });
        }
        results
    }

    /// Windows images end with a finalize step that powers the instance off (EC2Launch v2
    /// sysprep --shutdown): that step waits for `stopped`, and capture finds it stopped.
    pub(super) fn shuts_itself_down(&self) -> bool {
        self.image.platform == Platform::Windows && !self.plan.finalize.is_empty()
    }
}

/// `bakery:expires` for a lease starting now.
pub(super) fn expiry(lease: Duration) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + lease).to_string()
}

/// Waits until an AMI is available (failing fast on failed states).
pub(super) async fn wait_available(
    aws: &Aws,
    ami: &ImageId,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<ImageInfo, CloudError> {
    Wait::polled(
        format!("image {ami} in {}", aws.region),
        "available",
        timeout,
    )
    .until(cancel, || async {
        Ok(match aws.poll_image(ami).await? {
            Some(i) if i.state == "available" => Poll::Ready(i),
            Some(i)
                if matches!(
                    i.state.as_str(),
                    "failed" | "error" | "invalid" | "deregistered"
                ) =>
            {
                Poll::Failed {
                    state: i.state,
                    reason: i.state_reason,
                }
            }
            Some(i) => Poll::Pending {
                state: i.state,
                reason: i.state_reason,
            },
            None => Poll::Pending {
                state: "not visible".into(),
                reason: None,
            },
        })
    })
    .await
}

/// Waits until an instance runs; a state on its way out fails fast.
pub(super) async fn wait_running(
    aws: &Aws,
    id: &InstanceId,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<crate::cloud::InstanceInfo, CloudError> {
    wait_instance(
        aws,
        id,
        "running",
        &["terminated", "shutting-down", "stopped", "stopping"],
        timeout,
        cancel,
    )
    .await
}

/// Waits until an instance is in `want`; a state in `fatal` fails fast. A new id may be
/// invisible to DescribeInstances for a moment (eventual consistency): that is pending.
pub(super) async fn wait_instance(
    aws: &Aws,
    id: &InstanceId,
    want: &str,
    fatal: &[&str],
    timeout: Duration,
    cancel: &Cancel,
) -> Result<crate::cloud::InstanceInfo, CloudError> {
    Wait::polled(format!("instance {id} in {}", aws.region), want, timeout)
        .until(cancel, || async {
            Ok(match aws.poll_instance(id).await? {
                Some(i) if i.state == want => Poll::Ready(i),
                Some(i) if fatal.contains(&i.state.as_str()) => Poll::Failed {
                    state: i.state,
                    reason: i.state_reason,
                },
                Some(i) => Poll::Pending {
                    state: i.state,
                    reason: i.state_reason,
                },
                None => Poll::Pending {
                    state: "not yet visible".into(),
                    reason: None,
                },
            })
        })
        .await
}
