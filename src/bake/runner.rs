//! The runner: phases of one bake, each pushing its undo onto the journal as soon as AWS returns
//! an id.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use semver::Version;

use super::ledger::{Journal, State, Undo, When};
use super::steps::{Host, StepError, SSM_INLINE_FILE_MAX};
use super::undo::undo_all;
use super::{Artifact, BakeError, BakeOptions, FailKind, OnError};
use crate::catalog::model::{Communicator, Image, ImageName, Platform, Source, Target};
use crate::catalog::Catalog;
use crate::checks::report::CheckResult;
use crate::cloud::aws::Aws;
use crate::cloud::aws::{Fleet, Regions};
use crate::cloud::cancel::Cancel;
use crate::cloud::wait::{Poll, Wait};
use crate::cloud::{
    CloudError, ImageId, ImageInfo, InstanceId, KeyName, LaunchSpec, SecurityGroupId, Tags,
};
use crate::events::{BakeEvent, Events};
use crate::plan::{Plan, PlannedAction, PlannedStep, Planner};
use crate::registry::{self, tag};
use crate::remote::ssh::{new_key, public_openssh, HostKeyPin, Ssh, SshTarget};
use crate::remote::ssm::Ssm;
use crate::remote::Conn;

/// How long `--on-error keep` keeps a failed build instance out of `bakery gc`'s reach (a working
/// day to debug it; `bakery cleanup <bake-id>` removes it any time).
const KEPT_LEASE: Duration = Duration::from_secs(24 * 3600);
/// Renew the lease no more often than this (a short `--lease` in tests).
const MIN_HEARTBEAT: Duration = Duration::from_secs(1);
/// Time allowed for each probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);
/// A restart waits this long for the new boot unless the step says otherwise.
const DEFAULT_RESTART_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Tries to find a free AMI name when another runner took ours (issue 6 races).
const MAX_NAME_TRIES: u64 = 20;
/// SSM validates `aws:ec2:image` parameters asynchronously (PutParameter docs, "DataType").
const PARAMETER_VISIBLE_WAIT: Duration = Duration::from_secs(120);
/// Writes of a pointer (`latest`) before giving up when other runners keep changing it.
const POINTER_TRIES: usize = 5;
/// Hex digits of each input hash kept in the inputs parameter (enough to tell inputs apart).
const INPUT_HASH_LEN: usize = 16;
/// How long EC2 may answer `InvalidGroup.NotFound` / `InvalidKeyPair.NotFound` for a group or key
/// pair it just created ("Eventual consistency in the Amazon EC2 API"; the SDK does not retry
/// these codes).
const CREATED_VISIBLE_WAIT: Duration = Duration::from_secs(60);
/// Error codes that mean "just created, not visible yet" right after a create.
const NOT_YET_VISIBLE: [&str; 2] = ["InvalidGroup.NotFound", "InvalidKeyPair.NotFound"];

/// Why a phase stopped.
struct Failure {
    kind: FailKind,
    cause: String,
}

impl Failure {
    fn new(cause: impl std::fmt::Display) -> Self {
        Failure {
            kind: FailKind::Failed,
            cause: cause.to_string(),
        }
    }
}

impl From<CloudError> for Failure {
    fn from(e: CloudError) -> Self {
        match e {
            CloudError::Cancelled => Failure {
                kind: FailKind::Cancelled,
                cause: "cancelled".into(),
            },
            e => Failure::new(e),
        }
    }
}

impl From<StepError> for Failure {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Cancelled => Failure {
                kind: FailKind::Cancelled,
                cause: "cancelled".into(),
            },
            e => Failure::new(e),
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

/// One bake in progress: its typed slots fill as phases run.
struct Run<'a> {
    image: &'a Image,
    target: &'a Target,
    plan: Plan,
    opts: &'a BakeOptions,
    events: &'a Events,
    cancel: Cancel,
    aws: Aws,
    journal: Journal,
    bake_id: String,
    phase: &'static str,
    phase_started: Instant,
    timings: BTreeMap<String, f64>,
    // slots
    source: Option<ImageInfo>,
    parent: Option<String>,
    fingerprint: Option<String>,
    version: Option<Version>,
    key: Option<Arc<russh::keys::PrivateKey>>,
    instance: Option<InstanceId>,
    ssh_target: Option<SshTarget>,
    pin: HostKeyPin,
    conn: Option<Conn>,
    /// The working directory is gone (Windows finalize steps run in the system temp directory).
    workdir_removed: bool,
    image_id: Option<ImageId>,
    /// Region -> (client, AMI): the build region's image and its copies.
    copies: BTreeMap<String, (Aws, ImageId)>,
    /// Channels moved to the new version.
    channels: Vec<String>,
    /// Versions registered when this bake started (to tell a concurrent runner's from older).
    known_versions: std::collections::BTreeSet<Version>,
    checks: Vec<CheckResult>,
    parameters: BTreeMap<String, String>,
}

/// Bakes `image` against `target`. Invalid input never reaches here (the catalog is validated);
/// every AWS resource created is in the journal under `project/.bakery/bakes/`.
pub async fn bake(
    project: &Path,
    catalog: &Catalog,
    image: &ImageName,
    target: &Target,
    opts: &BakeOptions,
    events: &Events,
    cancel: &Cancel,
) -> Result<Artifact, BakeError> {
    let Some(img) = catalog.images.get(image) else {
        return Err(BakeError {
            bake_id: String::new(),
            image: image.to_string(),
            phase: "plan",
            kind: FailKind::Failed,
            cause: format!("unknown image {image}"),
            checks: Vec::new(),
            left_behind: Vec::new(),
            cleanup_errors: Vec::new(),
            kept: None,
            journal: Default::default(),
            timings: BTreeMap::new(),
            inputs: Vec::new(),
        });
    };
    let bake_id = super::new_bake_id();
    let journal_path = Journal::path_for(project, &bake_id);
    let fail_early = |phase, cause: String| BakeError {
        bake_id: bake_id.clone(),
        image: image.to_string(),
        phase,
        kind: FailKind::Failed,
        cause,
        checks: Vec::new(),
        left_behind: Vec::new(),
        cleanup_errors: Vec::new(),
        kept: None,
        journal: journal_path.clone(),
        timings: BTreeMap::new(),
        inputs: Vec::new(),
    };
    let plan = Planner::new(catalog, target)
        .plan(image)
        .map_err(|d| fail_early("plan", d.to_string()))?;
    // What the communicator needs, checked before anything is created.
    if img.build.communicator == Communicator::Ssm {
        if target.instance_profile.is_none() {
            return Err(fail_early(
                "preflight",
                format!("{image} uses the ssm communicator: set instance_profile in target {} to an instance profile whose role has the AmazonSSMManagedInstanceCore policy", target.name),
            ));
        }
        for s in plan.steps.iter().chain(&plan.finalize) {
            if target.s3_bucket.is_some() {
                break;
            }
            if let PlannedAction::Upload { files, source, .. } = &s.action {
                if let Some(f) = files.iter().find(|f| f.size > SSM_INLINE_FILE_MAX) {
                    return Err(fail_early(
                        "preflight",
                        format!("step {} / {}: {source}{}{} is {} bytes; over SSM bakery sends files of up to {SSM_INLINE_FILE_MAX} bytes inline, larger ones go through S3: set s3_bucket in target {}", s.recipe, s.name, if f.rel.is_empty() { "" } else { "/" }, f.rel, f.size, target.name),
                    ));
                }
            }
        }
    }
    let Some(region) = target.regions.first() else {
        return Err(fail_early(
            "preflight",
            format!("target {} has no region", target.name),
        ));
    };
    let journal = Journal::create(project, &bake_id, image.as_str(), &target.name)
        .map_err(|e| fail_early("preflight", format!("journal: {e}")))?;
    let aws = opts.fleet.connect(target, region).await;
    let mut run = Run {
        image: img,
        target,
        plan,
        opts,
        events,
        cancel: cancel.clone(),
        aws,
        journal,
        bake_id,
        phase: "preflight",
        phase_started: Instant::now(),
        timings: BTreeMap::new(),
        source: None,
        parent: None,
        fingerprint: None,
        version: None,
        key: None,
        instance: None,
        ssh_target: None,
        pin: HostKeyPin::default(),
        conn: None,
        workdir_removed: false,
        image_id: None,
        copies: BTreeMap::new(),
        channels: Vec::new(),
        known_versions: Default::default(),
        checks: Vec::new(),
        parameters: BTreeMap::new(),
    };
    let outcome = {
        let c = cancel.clone();
        let beat = heartbeat(journal_path.clone(), target, &opts.fleet, opts.lease);
        tokio::select! {
            r = run.phases() => r,
            () = c.cancelled() => Err(Failure { kind: FailKind::Cancelled, cause: "cancelled".into() }),
            () = beat => Err(Failure::new("the heartbeat stopped")),
        }
    };
    // The commit is not cancellable: once it starts, it finishes, so that no interrupt leaves
    // a version half marked (and its parameters undone).
    let outcome = match outcome {
        Ok(()) => run.commit().await,
        Err(f) => Err(f),
    };
    match outcome {
        Ok(()) => {
            run.after_publish().await;
            run.succeed().await
        }
        Err(f) => Err(run.fail(f).await),
    }
}

/// Renews `bakery:expires` on the bake's instance and security group every third of the lease
/// while the bake runs, so `bakery gc` on another machine never takes a slow bake for a dead
/// one. It reads the journal on disk (what exists is what the journal says); a failed renewal is
/// a warning, retried at the next beat. Never returns.
async fn heartbeat(journal: std::path::PathBuf, target: &Target, fleet: &Fleet, lease: Duration) {
    let every = (lease / 3).max(MIN_HEARTBEAT);
    let mut regions = Regions::in_fleet(target, fleet);
    loop {
        tokio::time::sleep(every).await;
        let Ok(j) = Journal::read(&journal) else {
            continue;
        };
        let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in j.entries.iter().filter(|e| !e.done) {
            match &e.undo {
                Undo::TerminateInstance { region, id } => {
                    ids.entry(region.clone()).or_default().push(id.to_string())
                }
                Undo::DeleteSecurityGroup { region, id } => {
                    ids.entry(region.clone()).or_default().push(id.to_string())
                }
                _ => {}
            }
        }
        let mut tags = Tags::new();
        tags.insert(tag::EXPIRES.into(), expiry(lease));
        for (region, ids) in ids {
            if let Err(e) = regions.get(&region).await.tag_resources(&ids, &tags).await {
                tracing::warn!(bake_id = %j.bake_id, error = %e, "cannot renew the lease (bakery:expires)");
            }
        }
    }
}

impl Run<'_> {
    /// The commit: every copy tagged `bakery:published`, then the journal says Published. From
    /// here on this is a version others may resolve, and nothing (failure, interrupt, cleanup,
    /// gc) undoes it. A copy that could not be marked (past the SDK's retries) is reported with
    /// the command that finishes the commit; the version stands.
    async fn commit(&mut self) -> Result<(), Failure> {
        if self.cancel.is_cancelled() {
            return Err(CloudError::Cancelled.into());
        }
        let mut published = Tags::new();
        published.insert(
            tag::PUBLISHED.into(),
            humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        );
        let mut marked = 0;
        let mut unmarked = Vec::new();
        for (region, (aws, ami)) in &self.copies {
            match aws.tag_resources(&[ami.to_string()], &published).await {
                Ok(()) => marked += 1,
                Err(e) => unmarked.push(format!("{ami} in {region} ({e})")),
            }
        }
        if marked == 0 {
            // None marked, as far as the answers go: a lost answer may still have marked one.
            let mut regions = Regions::in_fleet(self.target, &self.opts.fleet);
            if !super::undo::committed(&mut regions, &self.journal)
                .await
                .unwrap_or(true)
            {
                return Err(Failure::new(format!(
                    "could not mark the version published: {}",
                    unmarked.join(", ")
                )));
            }
        }
        self.journal.set_state(State::Published)?;
        if !unmarked.is_empty() {
            self.warn(format!(
                "published, but not yet marked so in every region: {}; finish with: bakery cleanup {} --target {}",
                unmarked.join(", "),
                self.bake_id,
                self.target.name
            ));
        }
        Ok(())
    }

    fn emit_phase(&mut self, phase: &'static str) {
        self.phase = phase;
        self.phase_started = Instant::now();
        self.events.emit(BakeEvent::Phase {
            bake_id: self.bake_id.clone(),
            image: self.image.name.to_string(),
            phase,
        });
        tracing::info!(bake_id = %self.bake_id, image = %self.image.name, phase, "phase");
    }

    fn region(&self) -> String {
        self.aws.region.to_string()
    }

    fn created(&self, what: String) {
        self.events.emit(BakeEvent::Created {
            bake_id: self.bake_id.clone(),
            resource: what,
        });
    }

    /// Records how long the current phase took.
    fn leave(&mut self) {
        self.timings.insert(
            self.phase.to_string(),
            self.phase_started.elapsed().as_secs_f64(),
        );
    }

    async fn phases(&mut self) -> Result<(), Failure> {
        self.emit_phase("preflight");
        self.preflight().await?;
        self.leave();
        self.emit_phase("launch");
        self.launch().await?;
        self.leave();
        self.emit_phase("connect");
        self.connect().await?;
        self.leave();
        self.emit_phase("provision");
        self.provision().await?;
        self.leave();
        self.emit_phase("verify");
        self.verify().await?;
        self.leave();
        self.emit_phase("capture");
        self.capture().await?;
        self.leave();
        self.emit_phase("distribute");
        self.distribute().await?;
        self.leave();
        self.emit_phase("publish");
        self.publish().await?;
        self.leave();
        Ok(())
    }

    /// Tags of everything the bake creates: the bake id, and a lease (`bakery:expires`) that
    /// the heartbeat renews while the bake runs, so `bakery gc` can tell a live bake from a dead one.
    fn tags(&self) -> Tags {
        let mut t: Tags = self.target.tags.clone();
        t.insert(tag::BAKE_ID.into(), self.bake_id.clone());
        t.insert(tag::IMAGE.into(), self.image.name.to_string());
        t.insert(tag::EXPIRES.into(), expiry(self.opts.lease));
        t
    }

    /// Tags of the AMI and its snapshots (in every region).
    fn image_tags(&self, name: &str, version: &Version) -> Tags {
        // `bakery:expires` stays until the version is published (then it is removed).
        let mut tags = self.tags();
        tags.insert("Name".into(), name.to_string());
        tags.insert(tag::VERSION.into(), version.to_string());
        tags.insert(
            tag::FINGERPRINT.into(),
            self.fingerprint.clone().unwrap_or_default(),
        );
        tags.insert(
            tag::SOURCE_AMI.into(),
            self.source
                .as_ref()
                .map(|s| s.id.to_string())
                .unwrap_or_default(),
        );
        if let Some(p) = &self.parent {
            tags.insert(tag::PARENT.into(), p.clone());
        }
        tags.insert(
            tag::CREATED_BY.into(),
            format!("bakery/{}", env!("CARGO_PKG_VERSION")),
        );
        tags
    }

    /// Regions the image is published to: `publish.regions`, or the target's.
    fn publish_regions(&self) -> Vec<String> {
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

    /// Copies the AMI to every other publish region (the copies run in parallel in AWS; bakery
    /// waits for them together), tags their snapshots, shares and schedules deprecation.
    /// Idempotent by name: a copy of this version with the same fingerprint is adopted.
    async fn distribute(&mut self) -> Result<(), Failure> {
        let build = self.region();
        let ami = self
            .image_id
            .clone()
            .ok_or_else(|| Failure::new("no image"))?;
        let version = self
            .version
            .clone()
            .ok_or_else(|| Failure::new("no version"))?;
        let name = registry::ami_name(self.image.name.as_str(), &version);
        let tags = self.image_tags(&name, &version);
        let fingerprint = self.fingerprint.clone().unwrap_or_default();
        let description = format!(
            "{} {} baked by bakery ({})",
            self.image.name, version, self.bake_id
        );
        self.copies
            .insert(build.clone(), (self.aws.clone(), ami.clone()));
        let mut started = Vec::new();
        for region in self.publish_regions().into_iter().skip(1) {
            let aws = self
                .opts
                .fleet
                .connect(self.target, &crate::catalog::model::Region(region.clone()))
                .await;
            let existing = aws
                .describe_images(&["self".into()], &[("name", vec![name.clone()])])
                .await?;
            let id = match existing.first() {
                Some(i)
                    if i.tags.get(tag::FINGERPRINT) == Some(&fingerprint)
                        && i.tags.contains_key(tag::PUBLISHED) =>
                {
                    return Err(Failure::new(format!(
                        "{name} is already published in {region} as {}",
                        i.id
                    )));
                }
                Some(i) if i.tags.get(tag::FINGERPRINT) == Some(&fingerprint) => {
                    tracing::info!(region = %region, ami = %i.id, "adopting an existing copy of this version");
                    // It is this bake's now: the journal of the bake that left it must not
                    // remove it (undo only removes images carrying its own bake id).
                    let mut own = Tags::new();
                    own.insert(tag::BAKE_ID.into(), self.bake_id.clone());
                    let mut ids = vec![i.id.to_string()];
                    ids.extend(i.snapshots.iter().map(|s| s.to_string()));
                    aws.tag_resources(&ids, &own).await?;
                    i.id.clone()
                }
                Some(i) => {
                    return Err(Failure::new(format!(
                        "{name} already exists in {region} as {} with another fingerprint",
                        i.id
                    )));
                }
                None => {
                    let kms = self
                        .target
                        .kms_keys
                        .get(&region)
                        .or(self.target.kms_key.as_ref())
                        .cloned();
                    // The same token on a retry after a lost answer returns the same copy.
                    let token = format!("{}-{region}", self.bake_id);
                    aws.copy_image(
                        &build,
                        &ami,
                        &name,
                        &description,
                        kms.as_deref(),
                        &tags,
                        &token,
                    )
                    .await?
                }
            };
            self.journal.push(
                Undo::DeregisterImage {
                    region: region.clone(),
                    id: id.clone(),
                },
                When::OnFailure,
            )?;
            self.created(format!("image {id} ({name}) in {region}"));
            started.push((aws, id));
        }
        let timeout = self.image.build.timeouts.capture;
        let mut waits = tokio::task::JoinSet::new();
        for (aws, id) in started {
            let cancel = self.cancel.clone();
            waits.spawn(async move {
                let info = wait_available(&aws, &id, timeout, &cancel).await;
                (aws, id, info)
            });
        }
        while let Some(done) = waits.join_next().await {
            let (aws, id, info) = done.map_err(|e| Failure::new(format!("copy wait: {e}")))?;
            info?;
            self.copies.insert(aws.region.to_string(), (aws, id));
        }
        let share = &self.image.publish.share;
        for (aws, id) in self.copies.values() {
            aws.share_image(id, &share.accounts, &share.organizations, &share.ous)
                .await?;
            if !share.accounts.is_empty() {
                if let Some(info) = aws.describe_image(id).await? {
                    for s in &info.snapshots {
                        aws.share_snapshot(s, &share.accounts).await?;
                    }
                }
            }
            if let Some(after) = self.image.publish.deprecate_after {
                aws.enable_image_deprecation(id, SystemTime::now() + after)
                    .await?;
            }
        }
        Ok(())
    }

    async fn resolve_source(&mut self) -> Result<(), Failure> {
        let aws = &self.aws;
        let (info, parent) = match &self.image.source {
            Source::Ami(id) => (
                aws.describe_image(&ImageId(id.clone()))
                    .await?
                    .ok_or_else(|| {
                        Failure::new(format!("source AMI {id} does not exist in {}", aws.region))
                    })?,
                None,
            ),
            Source::SsmParameter(p) => {
                let id = aws.get_parameter(p).await?.ok_or_else(|| {
                    Failure::new(format!(
                        "SSM parameter {p} does not exist in {}",
                        aws.region
                    ))
                })?;
                let info = aws
                    .describe_image(&ImageId(id.clone()))
                    .await?
                    .ok_or_else(|| {
                        Failure::new(format!(
                            "SSM parameter {p} names {id}, which does not exist in {}",
                            aws.region
                        ))
                    })?;
                (info, None)
            }
            Source::AmiFilter {
                name,
                owners,
                architecture,
            } => {
                let newest = aws
                    .newest_image(name, owners, architecture.as_str())
                    .await?
                    .ok_or_else(|| {
                        Failure::new(format!(
                            "no available AMI named {name} owned by {} in {}",
                            owners.join(", "),
                            aws.region
                        ))
                    })?;
                (newest, None)
            }
            Source::Image { name, req } => {
                let r =
                    registry::aws::resolve_parent(aws, &self.target.ssm_prefix, name.as_str(), req)
                        .await?;
                let parent = format!("{name}@{}", r.version);
                (r.image, Some(parent))
            }
        };
        if info.state != "available" {
            return Err(Failure::new(format!(
                "source AMI {} is {}, not available",
                info.id, info.state
            )));
        }
        let windows = info.platform.eq_ignore_ascii_case("windows");
        if windows != (self.image.platform == Platform::Windows) {
            return Err(Failure::new(format!(
                "source AMI {} is a {} AMI but {} is a {} image",
                info.id,
                if windows { "Windows" } else { "Linux" },
                self.image.name,
                self.image.platform.as_str()
            )));
        }
        if info.architecture != self.image.architecture.as_str() {
            return Err(Failure::new(format!(
                "source AMI {} is {}, the image is {}",
                info.id,
                info.architecture,
                self.image.architecture.as_str()
            )));
        }
        self.fingerprint = Some(
            self.plan
                .fingerprint
                .with_source(info.id.as_str(), parent.as_deref())
                .to_string(),
        );
        self.source = Some(info);
        self.parent = parent;
        Ok(())
    }

    async fn preflight(&mut self) -> Result<(), Failure> {
        self.resolve_source().await?;
        // Next free version (AMI names must be unique; the emulator does not enforce it).
        let existing: Vec<Version> = registry::aws::versions(&self.aws, self.image.name.as_str())
            .await?
            .into_iter()
            .map(|r| r.version)
            .collect();
        self.known_versions = existing.iter().cloned().collect();
        let mut v = registry::next_version(&existing, self.image.version);
        let issued = registry::aws::issued_param(
            &self.target.ssm_prefix,
            self.image.name.as_str(),
            self.image.version.major,
            self.image.version.minor,
        );
        if let Some(hwm) = self
            .aws
            .get_parameter(&issued)
            .await?
            .and_then(|p| p.parse::<u64>().ok())
        {
            v.patch = v.patch.max(hwm + 1);
        }
        // Every publish region must be one of the target's: the registry reads those.
        for r in self.publish_regions() {
            if !self.target.regions.iter().any(|t| t.as_str() == r) {
                return Err(Failure::new(format!(
                    "publish region {r} is not one of target {}'s regions",
                    self.target.name
                )));
            }
        }
        // A version is free when neither its AMI name nor its parameter exists (a failed bake of
        // another runner may have left one of them for a moment).
        let mut free = false;
        for _ in 0..MAX_NAME_TRIES {
            let name = registry::ami_name(self.image.name.as_str(), &v);
            let taken = self
                .aws
                .describe_images(&["self".into()], &[("name", vec![name])])
                .await?;
            let param = format!("{}/{}/{v}", self.target.ssm_prefix, self.image.name);
            if taken.is_empty() && self.aws.get_parameter(&param).await?.is_none() {
                free = true;
                break;
            }
            v.patch += 1;
        }
        if !free {
            return Err(Failure::new(format!(
                "no free version of {} {} after {MAX_NAME_TRIES} tries: AMI names or parameters are taken",
                self.image.name, self.image.version
            )));
        }
        self.journal.version = Some(v.to_string());
        self.journal.save()?;
        self.version = Some(v);
        if let Some(s) = &self.target.subnet {
            self.aws.subnet_vpc(s).await?;
        }
        if let Some(p) = &self.target.instance_profile {
            if !self.aws.instance_profile_exists(p).await? {
                return Err(Failure::new(format!("instance profile {p} does not exist")));
            }
        }
        if let (true, Some(b)) = (self.ssm(), &self.target.s3_bucket) {
            if !self.aws.bucket_exists(b).await? {
                return Err(Failure::new(format!(
                    "S3 bucket {b} (s3_bucket of target {}) does not exist or is not reachable",
                    self.target.name
                )));
            }
        }
        if let Some(sg) = &self.target.security_group {
            if !self.aws.security_group_exists(sg).await? {
                return Err(Failure::new(format!(
                    "security group {sg} does not exist in {}",
                    self.region()
                )));
            }
        }
        Ok(())
    }

    async fn launch(&mut self) -> Result<(), Failure> {
        let tags = self.tags();
        let region = self.region();
        let ssm = self.ssm();
        // Key pair (SSH only): generated here, only the public half goes to AWS.
        let key_name = if ssm {
            None
        } else {
            let key = new_key().map_err(Failure::new)?;
            let key_name = KeyName(format!("bakery-{}", self.bake_id));
            let public = public_openssh(&key, &key_name.0).map_err(Failure::new)?;
            self.aws.import_key_pair(&key_name, &public, &tags).await?;
            self.journal.push(
                Undo::DeleteKeyPair {
                    region: region.clone(),
                    name: key_name.clone(),
                },
                When::Always,
            )?;
            self.created(format!("key pair {key_name}"));
            self.key = Some(Arc::new(key));
            Some(key_name)
        };

        let port = self.target.ssh_port.unwrap_or(self.image.build.ssh.port);
        let sg = match &self.target.security_group {
            Some(id) => SecurityGroupId(id.clone()),
            None => {
                let vpc = match &self.target.subnet {
                    Some(s) => self.aws.subnet_vpc(s).await?,
                    None => self.aws.default_vpc().await?.ok_or_else(|| {
                        Failure::new(format!(
                            "{region} has no default VPC: name a subnet in the target"
                        ))
                    })?,
                };
                // SSM needs no inbound port at all.
                let cidr = match (&self.target.ssh_cidr, ssm) {
                    (_, true) => None,
                    (Some(c), false) => Some(c.clone()),
                    (None, false) => Some(caller_cidr().await.map_err(Failure::new)?),
                };
                let mut sg_tags = tags.clone();
                sg_tags.insert("Name".into(), format!("bakery-{}", self.bake_id));
                let id = self
                    .aws
                    .create_security_group(&format!("bakery-{}", self.bake_id), &vpc, &sg_tags)
                    .await?;
                self.journal.push(
                    Undo::DeleteSecurityGroup {
                        region: region.clone(),
                        id: id.clone(),
                    },
                    When::Always,
                )?;
                self.created(format!("security group {id}"));
                if let Some(cidr) = cidr {
                    let (aws, port) = (&self.aws, self.image.build.ssh.port);
                    once_visible(&format!("security group {id}"), &self.cancel, || async {
                        match aws.authorize_ingress(&id, port, &cidr).await {
                            // A retry after a lost answer finds the rule in place.
                            Err(e) if e.code() == Some("InvalidPermission.Duplicate") => Ok(()),
                            r => r,
                        }
                    })
                    .await?;
                }
                id
            }
        };
        let source = self
            .source
            .as_ref()
            .ok_or_else(|| Failure::new("no source"))?;
        let mut itags = tags.clone();
        itags.insert(
            "Name".into(),
            format!(
                "bakery {} {}",
                self.image.name,
                self.version
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            ),
        );
        let spec = LaunchSpec {
            client_token: Some(self.bake_id.clone()),
            image: source.id.clone(),
            root_device_name: source
                .root_device_name
                .clone()
                .unwrap_or_else(|| "/dev/xvda".into()),
            instance_types: self
                .image
                .build
                .instance_types
                .iter()
                .map(|t| t.to_string())
                .collect(),
            key_name,
            security_group: Some(sg),
            subnet: self.target.subnet.clone(),
            instance_profile: self.target.instance_profile.clone(),
            user_data: self.plan.user_data.clone(),
            volume_size_gb: self.image.build.root_volume.size_gb,
            volume_type: format!("{:?}", self.image.build.root_volume.volume_type).to_lowercase(),
            kms_key: self
                .target
                .kms_keys
                .get(&region)
                .cloned()
                .or_else(|| self.target.kms_key.clone()),
            tags: itags,
        };
        let aws = &self.aws;
        let (id, itype) = once_visible("the new security group and key pair", &self.cancel, || {
            aws.run_instance(&spec)
        })
        .await?;
        self.journal.push(
            Undo::TerminateInstance {
                region: region.clone(),
                id: id.clone(),
            },
            When::Always,
        )?;
        self.created(format!("instance {id} ({itype})"));
        self.instance = Some(id.clone());
        let info = wait_instance(
            &self.aws,
            &id,
            "running",
            &["terminated", "shutting-down", "stopped", "stopping"],
            self.image.build.timeouts.launch,
            &self.cancel,
        )
        .await?;
        if ssm {
            return Ok(());
        }
        let host = self
            .target
            .ssh_host
            .clone()
            .or(info.public_ip)
            .or(info.private_ip)
            .ok_or_else(|| Failure::new(format!("instance {id} has no IP address")))?;
        self.ssh_target = Some(SshTarget {
            host,
            port,
            user: self
                .target
                .ssh_user
                .clone()
                .unwrap_or_else(|| self.image.build.ssh.user.clone()),
            key: self.key.clone().ok_or_else(|| Failure::new("no key"))?,
        });
        Ok(())
    }

    /// This bake's prefix in the target's bucket.
    fn s3_prefix(&self) -> String {
        format!("{}/{}", super::S3_PREFIX, self.bake_id)
    }

    fn ssm(&self) -> bool {
        self.image.build.communicator == Communicator::Ssm
    }

    /// The SSM communicator for the build instance.
    fn ssm_conn(&self) -> Result<Ssm, Failure> {
        Ok(Ssm {
            aws: self.aws.clone(),
            instance: self
                .instance
                .clone()
                .ok_or_else(|| Failure::new("no instance"))?,
            platform: self.image.platform,
            s3: self
                .target
                .s3_bucket
                .as_ref()
                .map(|b| (b.clone(), self.s3_prefix())),
            bake_id: self.bake_id.clone(),
            in_flight: Default::default(),
        })
    }

    async fn connect(&mut self) -> Result<(), Failure> {
        if self.ssm() {
            let ssm = self.ssm_conn()?;
            if let Some((bucket, prefix)) = &ssm.s3 {
                // Whatever the bake puts there (files, command output) goes with it.
                self.journal.push(
                    Undo::DeleteS3Prefix {
                        region: self.region(),
                        bucket: bucket.clone(),
                        prefix: format!("{prefix}/"),
                    },
                    When::Always,
                )?;
            }
            ssm.wait_online(self.image.build.timeouts.launch, &self.cancel)
                .await?;
            tracing::info!(instance = %ssm.instance, "online in Systems Manager");
            self.conn = Some(Conn::Ssm(ssm));
            return Ok(());
        }
        let t = self
            .ssh_target
            .clone()
            .ok_or_else(|| Failure::new("no address"))?;
        let ssh = Ssh::connect(
            &t,
            &self.pin,
            self.image.build.timeouts.launch,
            &self.cancel,
        )
        .await?;
        tracing::info!(addr = %t.addr(), host_key = %self.pin.fingerprint().unwrap_or_default(), "connected");
        self.conn = Some(Conn::Ssh(ssh));
        Ok(())
    }

    fn workdir(&self) -> String {
        match self.image.platform {
            Platform::Windows if self.workdir_removed => "C:\\Windows\\Temp".to_string(),
            Platform::Windows => format!("C:\\Windows\\Temp\\bakery-{}", self.bake_id),
            Platform::Linux => format!("/var/tmp/bakery-{}", self.bake_id),
        }
    }

    fn host<'b>(&'b self, conn: &'b Conn, workdir: &'b str) -> Host<'b> {
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

    fn conn(&self) -> Result<&Conn, Failure> {
        self.conn
            .as_ref()
            .ok_or_else(|| Failure::new("not connected"))
    }

    /// Windows images end with a finalize step that powers the instance off (EC2Launch v2
    /// sysprep --shutdown): the bake waits for `stopped` instead of calling StopInstances.
    fn shuts_itself_down(&self) -> bool {
        self.image.platform == Platform::Windows && !self.plan.finalize.is_empty()
    }

    async fn run_steps(&mut self, finalize: bool) -> Result<(), Failure> {
        let steps = if finalize {
            self.plan.finalize.clone()
        } else {
            self.plan.steps.clone()
        };
        let offset = if finalize { self.plan.steps.len() } else { 0 };
        let total = self.plan.steps.len() + self.plan.finalize.len();
        let workdir = self.workdir();
        for (i, s) in steps.iter().enumerate() {
            let n = offset + i + 1;
            self.events.emit(BakeEvent::Step {
                bake_id: self.bake_id.clone(),
                index: n,
                total,
                recipe: s.recipe.to_string(),
                name: s.name.clone(),
            });
            let named = |e: StepError| match e {
                StepError::Cancelled => Failure::from(e),
                e => Failure::new(format!("step {n}/{total} ({} / {}) {e}", s.recipe, s.name)),
            };
            match &s.action {
                PlannedAction::Restart { timeout } => {
                    self.restart(timeout.unwrap_or(DEFAULT_RESTART_TIMEOUT))
                        .await?;
                }
                PlannedAction::WindowsUpdate {
                    categories,
                    max_passes,
                } => {
                    self.windows_update(n, total, s, categories, *max_passes)
                        .await?;
                }
                _ if finalize && i + 1 == steps.len() && self.shuts_itself_down() => {
                    self.run_shutdown_step(s).await.map_err(named)?;
                }
                _ => {
                    let conn = self.conn()?;
                    self.host(conn, &workdir).step(n, s).await.map_err(named)?;
                }
            }
        }
        Ok(())
    }

    /// Runs a step that powers the instance off (sysprep --shutdown): done when the instance is
    /// `stopped`; a non-zero exit before that fails the bake.
    async fn run_shutdown_step(&mut self, s: &PlannedStep) -> Result<(), StepError> {
        let id = self
            .instance
            .clone()
            .ok_or_else(|| StepError::Unsupported("no instance".into()))?;
        let workdir = self.workdir();
        let timeout = s.timeout + self.image.build.timeouts.capture;
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| StepError::Unsupported("not connected".into()))?;
        let host = self.host(conn, &workdir);
        let step = host.step(usize::MAX, s);
        let stopped = wait_instance(
            &self.aws,
            &id,
            "stopped",
            &["terminated", "shutting-down"],
            timeout,
            &self.cancel,
        );
        tokio::pin!(step);
        tokio::pin!(stopped);
        tokio::select! {
            r = &mut step => {
                match r {
                    // The script returned before the power went: the instance is on its way down.
                    Ok(()) => {}
                    Err(StepError::Exit { code, tail }) => return Err(StepError::Exit { code, tail }),
                    Err(StepError::Cancelled) => return Err(StepError::Cancelled),
                    // The connection went with the power.
                    Err(e) => tracing::info!(error = %e, "the shutdown step lost its connection"),
                }
                stopped.await.map_err(|e| StepError::Unsupported(e.to_string()))?;
            }
            r = &mut stopped => {
                r.map_err(|e| StepError::Unsupported(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Windows Update passes until nothing was installed and no reboot is pending, restarting
    /// between passes when one is, at most `max_passes` times.
    async fn windows_update(
        &mut self,
        n: usize,
        total: usize,
        s: &PlannedStep,
        categories: &[String],
        max_passes: u32,
    ) -> Result<(), Failure> {
        let workdir = self.workdir();
        for pass in 1..=max_passes.max(1) {
            let conn = self.conn()?;
            let result = self
                .host(conn, &workdir)
                .update_pass(categories, s.timeout)
                .await
                .map_err(|e| {
                    Failure::new(format!(
                        "step {n}/{total} ({} / {}) pass {pass}: {e}",
                        s.recipe, s.name
                    ))
                })?;
            for t in &result.installed {
                self.events.emit(BakeEvent::Output {
                    bake_id: self.bake_id.clone(),
                    stream: crate::remote::Stream::Stdout,
                    line: format!("windows update pass {pass}: installed {t}"),
                });
            }
            if !result.failed.is_empty() {
                return Err(Failure::new(format!(
                    "step {n}/{total} ({} / {}) pass {pass}: updates failed to install: {}",
                    s.recipe,
                    s.name,
                    result.failed.join(", ")
                )));
            }
            if result.reboot_pending {
                self.restart(DEFAULT_RESTART_TIMEOUT).await?;
            }
            if !result.again() {
                return Ok(());
            }
        }
        Err(Failure::new(format!(
            "step {n}/{total} ({} / {}): updates still pending after {max_passes} passes",
            s.recipe, s.name
        )))
    }

    async fn provision(&mut self) -> Result<(), Failure> {
        let workdir = self.workdir();
        self.host(self.conn()?, &workdir).prepare().await?;
        let deadline = self.image.build.timeouts.provision;
        match tokio::time::timeout(deadline, self.run_steps(false)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(format!(
                "provisioning took longer than {}s",
                deadline.as_secs()
            ))),
        }
    }

    /// Reboots and waits for a new boot id (not a sleep): over SSH by reconnecting, over SSM
    /// once the instance is Online again.
    async fn restart(&mut self, timeout: Duration) -> Result<(), Failure> {
        let workdir = self.workdir();
        let conn = self
            .conn
            .take()
            .ok_or_else(|| Failure::new("not connected"))?;
        let before = self.host(&conn, &workdir).boot_id().await?;
        self.host(&conn, &workdir).request_reboot().await?;
        let started = Instant::now();
        let ssh_target = match conn {
            Conn::Ssh(ssh) => {
                ssh.close().await;
                Some(
                    self.ssh_target
                        .clone()
                        .ok_or_else(|| Failure::new("no address"))?,
                )
            }
            Conn::Ssm(ssm) => {
                self.conn = Some(Conn::Ssm(ssm));
                None
            }
        };
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(Failure::new(format!(
                    "no new boot within {}s of the restart (boot id still {before})",
                    timeout.as_secs()
                )));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
                () = self.cancel.cancelled() => return Err(Failure { kind: FailKind::Cancelled, cause: "cancelled".into() }),
            }
            let conn = match &ssh_target {
                Some(t) => Conn::Ssh(Ssh::connect(t, &self.pin, left, &self.cancel).await?),
                None => {
                    let ssm = self.ssm_conn()?;
                    ssm.wait_online(left, &self.cancel).await?;
                    Conn::Ssm(ssm)
                }
            };
            let now = self.host(&conn, &workdir).boot_id().await;
            match now {
                Ok(id) if id != before && !id.is_empty() => {
                    self.conn = Some(conn);
                    return Ok(());
                }
                _ => conn.close().await,
            }
        }
    }

    async fn verify(&mut self) -> Result<(), Failure> {
        let workdir = self.workdir();
        let host = self.host(self.conn()?, &workdir);
        let mut results = Vec::new();
        for c in &self.plan.checks {
            let r = host.check(c, PROBE_TIMEOUT).await;
            self.events.emit(BakeEvent::Check {
                bake_id: self.bake_id.clone(),
                result: r.clone(),
            });
            results.push(r);
        }
        if self.cancel.is_cancelled() {
            return Err(Failure {
                kind: FailKind::Cancelled,
                cause: "cancelled".into(),
            });
        }
        let failed: Vec<String> = results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| format!("{} ({})", r.name, r.detail))
            .collect();
        self.checks = results;
        if !failed.is_empty() {
            return Err(Failure {
                kind: FailKind::Checks,
                cause: format!(
                    "{} of {} checks failed: {}",
                    failed.len(),
                    self.checks.len(),
                    failed.join("; ")
                ),
            });
        }
        // Generalise. Linux: the finalize steps, then the working directory goes. Windows: the
        // last finalize step powers the instance off, so the working directory goes first and
        // the finalize steps run in the system's temporary directory.
        if self.shuts_itself_down() {
            self.remove_workdir(&workdir).await?;
            self.workdir_removed = true;
            self.run_steps(true).await?;
        } else {
            self.run_steps(true).await?;
            self.remove_workdir(&workdir).await?;
        }
        Ok(())
    }

    async fn remove_workdir(&self, workdir: &str) -> Result<(), Failure> {
        self.host(self.conn()?, workdir)
            .remove_workdir()
            .await
            .map_err(|e| Failure::new(format!("removing {workdir}: {e}")))
    }

    async fn capture(&mut self) -> Result<(), Failure> {
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
        let id = self
            .instance
            .clone()
            .ok_or_else(|| Failure::new("no instance"))?;
        let region = self.region();
        let aws = self.aws.clone();
        let timeout = self.image.build.timeouts.capture;
        // A Windows image's last finalize step already powered it off (and waited for it).
        if !self.shuts_itself_down() {
            aws.stop_instance(&id).await?;
        }
        wait_instance(
            &aws,
            &id,
            "stopped",
            &["terminated", "shutting-down"],
            timeout,
            &self.cancel,
        )
        .await?;
        let version = self
            .version
            .clone()
            .ok_or_else(|| Failure::new("no version"))?;
        let name = registry::ami_name(self.image.name.as_str(), &version);
        let tags = self.image_tags(&name, &version);
        let description = format!(
            "{} {} baked by bakery ({})",
            self.image.name, version, self.bake_id
        );
        // AWS refuses a second AMI with a taken name (another runner chose the same version):
        // re-read the registry and take the next patch.
        let mut version = version;
        let mut name = name;
        let mut tags = tags;
        let mut description = description;
        let mut tries = 0;
        let ami = loop {
            match aws.create_image(&id, &name, &description, &tags).await {
                Ok(a) => break a,
                Err(e)
                    if e.code() == Some("InvalidAMIName.Duplicate") && tries < MAX_NAME_TRIES =>
                {
                    // An SDK retry after a lost answer finds our own image under the name.
                    let taken = aws
                        .describe_images(&["self".into()], &[("name", vec![name.clone()])])
                        .await?;
                    if let Some(own) = taken
                        .into_iter()
                        .find(|i| i.tags.get(tag::BAKE_ID) == Some(&self.bake_id))
                    {
                        break own.id;
                    }
                    tries += 1;
                    let taken: Vec<Version> =
                        registry::aws::versions(&aws, self.image.name.as_str())
                            .await?
                            .into_iter()
                            .map(|r| r.version)
                            .collect();
                    version = registry::next_version(&taken, self.image.version).max(Version::new(
                        version.major,
                        version.minor,
                        version.patch + 1,
                    ));
                    name = registry::ami_name(self.image.name.as_str(), &version);
                    tags = self.image_tags(&name, &version);
                    description = format!(
                        "{} {} baked by bakery ({})",
                        self.image.name, version, self.bake_id
                    );
                    self.version = Some(version.clone());
                    self.journal.version = Some(version.to_string());
                    self.journal.save()?;
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.journal.push(
            Undo::DeregisterImage {
                region: region.clone(),
                id: ami.clone(),
            },
            When::OnFailure,
        )?;
        self.created(format!("image {ami} ({name})"));
        self.image_id = Some(ami.clone());
        wait_available(&aws, &ami, timeout, &self.cancel).await?;
        Ok(())
    }

    async fn publish(&mut self) -> Result<(), Failure> {
        let version = self
            .version
            .clone()
            .ok_or_else(|| Failure::new("no version"))?;
        let prefix = self.target.ssm_prefix.clone();
        let image = self.image.name.to_string();
        let versioned = registry::aws::version_param(&prefix, &image, &version);
        let latest = registry::aws::latest_param(&prefix, &image);
        let copies: Vec<(String, Aws, ImageId)> = self
            .copies
            .iter()
            .map(|(r, (a, i))| (r.clone(), a.clone(), i.clone()))
            .collect();
        let registered = registry::aws::versions(&self.aws, &image).await?;
        // Another runner baked the same inputs while this one ran: one version per fingerprint.
        let fingerprint = self.fingerprint.clone().unwrap_or_default();
        if let Some(other) = registered.iter().find(|r| {
            r.published
                && !self.known_versions.contains(&r.version)
                && r.image.tags.get(tag::FINGERPRINT) == Some(&fingerprint)
        }) {
            return Err(Failure::new(format!(
                "another runner published these exact inputs as {image} {} while this bake ran; this copy is removed",
                other.version
            )));
        }
        // `latest` is the newest published release: a hotfix of an older line or a
        // pre-release does not move it (and `point` never moves it back past a newer one).
        let newest = registered
            .into_iter()
            .filter(|r| r.published && r.revoked.is_none() && r.version.pre.is_empty())
            .map(|r| r.version)
            .max();
        let moves_latest = version.pre.is_empty() && newest.as_ref().is_none_or(|n| &version > n);
        for (region, aws, ami) in &copies {
            // The versioned parameter is the contract: never overwritten.
            if aws
                .get_parameter(&versioned)
                .await?
                .is_some_and(|v| v != ami.as_str())
            {
                return Err(Failure::new(format!(
                    "{versioned} already exists in {region}: another runner took this version while this bake ran (versions are immutable); this copy is removed"
                )));
            }
            // Journal first: if the put is interrupted, cleanup still knows the parameter may exist.
            let undo = Undo::RestoreParameter {
                region: region.clone(),
                name: versioned.clone(),
                previous: None,
                ours: Some(ami.to_string()),
            };
            self.journal.push(undo.clone(), When::OnFailure)?;
            if let Err(e) = aws
                .put_image_parameter(&versioned, ami.as_str(), false)
                .await
            {
                if e.code() != Some("ParameterAlreadyExists") {
                    return Err(e.into());
                }
                // Our own write, retried by the SDK after a lost answer, reads back as our AMI;
                // anything else is another runner's version.
                if aws.get_parameter(&versioned).await?.as_deref() != Some(ami.as_str()) {
                    self.journal.forget(&undo)?;
                    return Err(Failure::new(format!("{image} {version} was taken by another runner while this bake ran; this copy is removed")));
                }
            }
        }
        // AWS validates `aws:ec2:image` values asynchronously: a write is visible once the
        // validation passed, so read back until it shows (bounded).
        for (region, aws, ami) in &copies {
            read_back(aws, &versioned, ami, &self.cancel).await?;
            self.parameters
                .insert(format!("{region}:{versioned}"), ami.to_string());
        }
        if moves_latest {
            for (region, aws, ami) in &copies {
                if self.point(aws, &latest, ami, &version).await? {
                    self.parameters
                        .insert(format!("{region}:{latest}"), ami.to_string());
                }
            }
        }
        // What this version was baked from, for `plan` to say what changed since.
        let inputs: BTreeMap<&str, &str> = self
            .plan
            .inputs
            .iter()
            .map(|i| (i.label.as_str(), &i.sha256[..INPUT_HASH_LEN]))
            .collect();
        let inputs = serde_json::to_string(&inputs).unwrap_or_default();
        if inputs.len() <= registry::aws::STANDARD_PARAMETER_MAX {
            let name = registry::aws::inputs_param(&prefix, &image, &version);
            self.journal.push(
                Undo::RestoreParameter {
                    region: self.region(),
                    name: name.clone(),
                    previous: None,
                    ours: Some(inputs.clone()),
                },
                When::OnFailure,
            )?;
            self.aws.put_string_parameter(&name, &inputs).await?;
        } else {
            self.events.emit(BakeEvent::Warning {
                bake_id: self.bake_id.clone(),
                message:
                    "fingerprint inputs too long to record: plan will not name the changed files"
                        .into(),
            });
        }
        // The number stays taken even if retention removes the version later.
        let issued = registry::aws::issued_param(&prefix, &image, version.major, version.minor);
        self.aws
            .put_string_parameter(&issued, &version.patch.to_string())
            .await?;
        Ok(())
    }

    /// Points `name` (in the region of `aws`) at `ami` unless it already names a newer version of
    /// the image: pointers never move backwards. Reads back after writing; when another runner
    /// wrote in between, decides again against its value. Returns whether it names `ami` now.
    async fn point(
        &mut self,
        aws: &Aws,
        name: &str,
        ami: &ImageId,
        version: &Version,
    ) -> Result<bool, Failure> {
        let mut journaled = false;
        for _ in 0..POINTER_TRIES {
            let current = aws.get_parameter(name).await?;
            if current.as_deref() == Some(ami.as_str()) {
                return Ok(true);
            }
            if let Some(cur) = &current {
                if let Some(theirs) = version_of(aws, cur).await?.filter(|v| v > version) {
                    tracing::info!(parameter = %name, newer = %theirs, "left on the newer version");
                    return Ok(false);
                }
            }
            if !journaled {
                self.journal.push(
                    Undo::RestoreParameter {
                        region: aws.region.to_string(),
                        name: name.to_string(),
                        previous: current.clone(),
                        ours: Some(ami.to_string()),
                    },
                    When::OnFailure,
                )?;
                journaled = true;
            }
            aws.put_image_parameter(name, ami.as_str(), true).await?;
            // The write shows once SSM validated it; a value that is neither the old one nor
            // ours was written by another runner after us.
            let back = Wait::brief(
                format!("parameter {name} in {}", aws.region),
                format!("= {ami}"),
                PARAMETER_VISIBLE_WAIT,
            )
            .until(&self.cancel, || async {
                let b = aws.get_parameter(name).await?;
                Ok(if b == current {
                    Poll::Pending {
                        state: format!("{b:?}"),
                        reason: None,
                    }
                } else {
                    Poll::Ready(b)
                })
            })
            .await?;
            if back.as_deref() == Some(ami.as_str()) {
                return Ok(true);
            }
        }
        Err(Failure::new(format!(
            "{name} in {} kept changing while this bake moved it to {ami}",
            aws.region
        )))
    }

    /// Channels and retention after the commit. The version stands whatever happens here, so
    /// problems are warnings; an interrupt stops what is left, and each move or prune that did
    /// not happen is named with the command that finishes it.
    async fn after_publish(&mut self) {
        let Some(version) = self.version.clone() else {
            return;
        };
        self.emit_phase("promote");
        // The lease was the bake's: a version does not expire.
        for (aws, ami) in self.copies.values() {
            let mut ids = vec![ami.to_string()];
            match aws.describe_image(ami).await {
                Ok(Some(i)) => ids.extend(i.snapshots.iter().map(|s| s.to_string())),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot list the snapshots of {ami}"),
            }
            if let Err(e) = aws.untag_resources(&ids, &[tag::EXPIRES]).await {
                tracing::warn!(error = %e, "cannot remove bakery:expires from {ami}");
            }
        }
        let image = self.image.name.to_string();
        let target = &self.target.name;
        let mut reg = registry::aws::Registry::in_fleet(self.target, &self.opts.fleet);
        // Another runner may have written `latest` between this bake's read and write: once
        // committed, `latest` goes to the newest published release wherever it names an older.
        if let Err(e) = reg.converge_latest(&image).await {
            self.warn(format!("latest not checked after the commit: {e}"));
        }
        // The copies are known here: no need to re-read the registry (which may lag).
        let amis: BTreeMap<String, String> = self
            .copies
            .iter()
            .map(|(r, (_, a))| (r.clone(), a.to_string()))
            .collect();
        for ch in self.image.publish.channels.clone() {
            if self.cancel.is_cancelled() {
                self.warn(format!("interrupted: channel {ch} not moved to {version}; finish with: bakery promote {image}@{version} {ch} --target {target}"));
                continue;
            }
            match reg.promote_if_newer(&image, &version, &amis, &ch).await {
                Ok(true) => self.channels.push(ch),
                Ok(false) => self.warn(format!(
                    "channel {ch} already names a newer version than {version}: left there"
                )),
                Err(e) => self.warn(format!("channel {ch} not moved: {e}; finish with: bakery promote {image}@{version} {ch} --target {target}")),
            }
        }
        if let Some(keep) = self.image.publish.keep {
            let finish = format!("bakery prune {image} --keep {keep} --target {target}");
            if self.cancel.is_cancelled() {
                self.warn(format!(
                    "interrupted: retention not applied; finish with: {finish}"
                ));
            } else {
                let pruned = tokio::select! {
                    r = registry::prune::prune(&mut reg, &image, keep as usize, None, false) => r,
                    () = self.cancel.cancelled() => Err(CloudError::Cancelled),
                };
                match pruned {
                    Ok(report) => {
                        for d in report.iter().filter(|d| d.pruned) {
                            self.events.emit(BakeEvent::Removed {
                                bake_id: self.bake_id.clone(),
                                resource: format!("{image} {} (retention: keep {keep})", d.version),
                            });
                        }
                    }
                    Err(e) => {
                        self.warn(format!("retention not applied: {e}; finish with: {finish}"))
                    }
                }
            }
        }
        self.leave();
    }

    fn warn(&self, message: String) {
        self.events.emit(BakeEvent::Warning {
            bake_id: self.bake_id.clone(),
            message,
        });
    }

    fn artifact(&self) -> Artifact {
        Artifact {
            image: self.image.name.to_string(),
            version: self
                .version
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default(),
            fingerprint: self.fingerprint.clone().unwrap_or_default(),
            amis: self
                .copies
                .iter()
                .map(|(r, (_, a))| (r.clone(), a.to_string()))
                .collect(),
            channels: self.channels.clone(),
            source_ami: self
                .source
                .as_ref()
                .map(|s| s.id.to_string())
                .unwrap_or_default(),
            parent: self.parent.clone(),
            bake_id: self.bake_id.clone(),
            parameters: self.parameters.clone(),
            timings: self.timings.clone(),
            checks: self.checks.clone(),
            inputs: self.plan.inputs.clone(),
        }
    }

    async fn succeed(mut self) -> Result<Artifact, BakeError> {
        self.emit_phase("cleanup");
        let cancel = Cancel::new();
        let mut regions = Regions::in_fleet(self.target, &self.opts.fleet);
        let errors = match tokio::time::timeout(
            self.opts.cleanup_timeout,
            undo_all(&mut regions, &mut self.journal, false, self.events, &cancel),
        )
        .await
        {
            Ok(e) => e,
            Err(_) => vec![format!(
                "cleanup took longer than {}s",
                self.opts.cleanup_timeout.as_secs()
            )],
        };
        self.leave();
        let _ = self.journal.set_state(State::Succeeded);
        for e in &errors {
            self.events.emit(BakeEvent::Warning {
                bake_id: self.bake_id.clone(),
                message: format!("cleanup: {e}"),
            });
        }
        self.events.emit(BakeEvent::Finished {
            bake_id: self.bake_id.clone(),
            image: self.image.name.to_string(),
            outcome: "baked",
        });
        Ok(self.artifact())
    }

    async fn fail(mut self, f: Failure) -> BakeError {
        let failed_phase = self.phase;
        self.leave();
        if let Some(Conn::Ssm(ssm)) = &self.conn {
            // An interrupt dropped the step while its command ran: stop it on the instance.
            ssm.cancel_in_flight().await;
        }
        if let Some(conn) = self.conn.take() {
            // Best effort, under a fresh cancel (the bake's own may be spent): a shared build
            // host (the sandbox) should not keep the workdir.
            if self.opts.on_error == OnError::Cleanup && !self.workdir_removed {
                let w = self.workdir();
                let fresh = Cancel::new();
                let host = Host {
                    cancel: &fresh,
                    ..self.host(&conn, &w)
                };
                let _ = tokio::time::timeout(Duration::from_secs(30), host.remove_workdir()).await;
            }
            conn.close().await;
        }
        let mut kept = None;
        let mut cleanup_errors = Vec::new();
        let keep = self.opts.on_error == OnError::Keep
            && self.instance.is_some()
            && f.kind != FailKind::Cancelled;
        if keep {
            // Keep what reaches the instance; the artifact (AMI, parameters) still goes, unless
            // it was published (or that cannot be told).
            let cancel = Cancel::new();
            let mut regions = Regions::in_fleet(self.target, &self.opts.fleet);
            self.extend_lease_of_kept(KEPT_LEASE).await;
            let committed = super::undo::committed(&mut regions, &self.journal)
                .await
                .unwrap_or(true);
            let artifact = if committed {
                Vec::new()
            } else {
                self.journal.pending_when(When::OnFailure)
            };
            for u in artifact {
                match super::undo::run(&mut regions, &u, &self.bake_id, &cancel).await {
                    Ok(()) => {
                        let _ = self.journal.mark_done(&u);
                    }
                    Err(e) => cleanup_errors.push(format!("{u}: {e}")),
                }
            }
            kept = Some(self.keep_for_debugging());
            let _ = self.journal.set_state(State::Kept);
        } else {
            self.emit_phase("cleanup");
            // A fresh deadline and a fresh cancel: the bake's own are spent.
            let cancel = Cancel::new();
            let mut regions = Regions::in_fleet(self.target, &self.opts.fleet);
            cleanup_errors = match tokio::time::timeout(
                self.opts.cleanup_timeout,
                undo_all(&mut regions, &mut self.journal, true, self.events, &cancel),
            )
            .await
            {
                Ok(e) => e,
                Err(_) => vec![format!(
                    "cleanup took longer than {}s",
                    self.opts.cleanup_timeout.as_secs()
                )],
            };
            self.leave();
            let _ = self.journal.set_state(if f.kind == FailKind::Cancelled {
                State::Cancelled
            } else {
                State::Failed
            });
        }
        let outcome = match f.kind {
            FailKind::Failed => "failed",
            FailKind::Checks => "checks_failed",
            FailKind::Cancelled => "cancelled",
        };
        self.events.emit(BakeEvent::Finished {
            bake_id: self.bake_id.clone(),
            image: self.image.name.to_string(),
            outcome,
        });
        BakeError {
            bake_id: self.bake_id.clone(),
            image: self.image.name.to_string(),
            phase: failed_phase,
            kind: f.kind,
            cause: f.cause,
            checks: self.checks.clone(),
            left_behind: self.journal.pending(true),
            cleanup_errors,
            kept,
            journal: self.journal.path().to_path_buf(),
            timings: self.timings.clone(),
            inputs: self.plan.inputs.clone(),
        }
    }

    /// A kept instance (and its group) stays out of `bakery gc`'s reach for `lease`: there is no
    /// heartbeat once this process ends.
    async fn extend_lease_of_kept(&self, lease: Duration) {
        let mut tags = Tags::new();
        tags.insert(tag::EXPIRES.into(), expiry(lease));
        let ids: Vec<String> = self
            .journal
            .pending_when(When::Always)
            .iter()
            .filter_map(|u| match u {
                Undo::TerminateInstance { id, .. } => Some(id.to_string()),
                Undo::DeleteSecurityGroup { id, .. } => Some(id.to_string()),
                _ => None,
            })
            .collect();
        if let Err(e) = self.aws.tag_resources(&ids, &tags).await {
            self.warn(format!("cannot extend the lease of the kept instance: {e}"));
        }
    }

    /// Writes the private key next to the journal (0600) and says how to log in.
    fn keep_for_debugging(&mut self) -> String {
        if self.ssm() {
            return format!(
                "instance {id} : aws ssm start-session --target {id} --region {}",
                self.region(),
                id = self
                    .instance
                    .as_ref()
                    .map(|i| i.to_string())
                    .unwrap_or_default()
            );
        }
        let Some(t) = self.ssh_target.clone() else {
            return format!(
                "instance {} (never reachable)",
                self.instance
                    .as_ref()
                    .map(|i| i.to_string())
                    .unwrap_or_default()
            );
        };
        let path = self.journal.path().with_extension("key");
        let written = t
            .key
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .map_err(|e| e.to_string())
            .and_then(|pem| write_private(&path, pem.as_bytes()).map_err(|e| e.to_string()));
        match written {
            Ok(()) => {
                let _ = self
                    .journal
                    .push(Undo::DeleteKeyFile { path: path.clone() }, When::OnFailure);
                format!(
                    "instance {} : ssh -i {} -p {} -o StrictHostKeyChecking=accept-new {}@{}",
                    self.instance
                        .as_ref()
                        .map(|i| i.to_string())
                        .unwrap_or_default(),
                    path.display(),
                    t.port,
                    t.user,
                    t.host
                )
            }
            Err(e) => format!(
                "instance {} (could not write the key: {e})",
                self.instance
                    .as_ref()
                    .map(|i| i.to_string())
                    .unwrap_or_default()
            ),
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only when the file is created; an existing one gets it here.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}

/// Caller's address as a /32, from AWS's checkip service (plain HTTP: a spoofed answer could
/// only narrow the ingress to a wrong address).
async fn caller_cidr() -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect("checkip.amazonaws.com:80").await?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: checkip.amazonaws.com\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).to_string())
    };
    let text = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| {
            "checkip.amazonaws.com did not answer: set ssh_cidr in the target".to_string()
        })?
        .map_err(|e| format!("checkip.amazonaws.com: {e}; set ssh_cidr in the target"))?;
    let ip = text.rsplit("\r\n\r\n").next().unwrap_or("").trim();
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| {
        format!("checkip.amazonaws.com answered {ip:?}; set ssh_cidr in the target")
    })?;
    Ok(format!("{ip}/32"))
}

/// Runs `call` until EC2 stops answering that what it needs was not found: right after a create,
/// EC2 may not see a new group or key pair for a few seconds, and the SDK does not retry that.
async fn once_visible<T, F, Fut>(what: &str, cancel: &Cancel, mut call: F) -> Result<T, CloudError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CloudError>>,
{
    Wait::brief(what, "visible to EC2", CREATED_VISIBLE_WAIT)
        .until(cancel, || {
            let f = call();
            async move {
                match f.await {
                    Ok(v) => Ok(Poll::Ready(v)),
                    Err(e) if e.code().is_some_and(|c| NOT_YET_VISIBLE.contains(&c)) => {
                        Ok(Poll::Pending {
                            state: e.code().unwrap_or_default().to_string(),
                            reason: None,
                        })
                    }
                    Err(e) => Err(e),
                }
            }
        })
        .await
}

/// Reads `name` back until it names `ami` (SSM validates `aws:ec2:image` values asynchronously).
async fn read_back(
    aws: &Aws,
    name: &str,
    ami: &ImageId,
    cancel: &Cancel,
) -> Result<(), CloudError> {
    Wait::new(
        format!("parameter {name} in {}", aws.region),
        format!("= {ami}"),
        PARAMETER_VISIBLE_WAIT,
    )
    .until(cancel, || async {
        let back = aws.get_parameter(name).await?;
        Ok(if back.as_deref() == Some(ami.as_str()) {
            Poll::Ready(())
        } else {
            Poll::Pending {
                state: format!("{back:?}"),
                reason: None,
            }
        })
    })
    .await
}

/// The version an AMI of bakery's is (`None` for an AMI that is gone or not a version).
async fn version_of(aws: &Aws, ami: &str) -> Result<Option<Version>, CloudError> {
    Ok(aws
        .describe_image(&ImageId(ami.to_string()))
        .await?
        .and_then(|i| Version::parse(i.tags.get(tag::VERSION)?).ok()))
}

/// `bakery:expires` for a lease starting now.
fn expiry(lease: Duration) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + lease).to_string()
}

/// Waits until an AMI is available (failing fast on failed states).
async fn wait_available(
    aws: &Aws,
    ami: &ImageId,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<ImageInfo, CloudError> {
    Wait::new(
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

/// Waits until an instance is in `want`; a state in `fatal` fails fast. A new id may be
/// invisible to DescribeInstances for a moment (eventual consistency): that is pending.
async fn wait_instance(
    aws: &Aws,
    id: &InstanceId,
    want: &str,
    fatal: &[&str],
    timeout: Duration,
    cancel: &Cancel,
) -> Result<crate::cloud::InstanceInfo, CloudError> {
    Wait::new(format!("instance {id} in {}", aws.region), want, timeout)
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
