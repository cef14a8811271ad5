//! The runner: the sequence of a bake's phases (each in its own file, each taking what the one
//! before produced), the journal, cancellation, timings, and what happens at the end: the
//! commit and promotion on success, the undo (or `--on-error keep`) on failure.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::capture::Captured;
use super::context::{expiry, Bake, Failure, Link};
use super::distribute::Distributed;
use super::ledger::{Journal, State, Undo, When};
use super::preflight::Preflighted;
use super::steps::{Host, SSM_INLINE_FILE_MAX};
use super::test::Tested;
use super::undo::undo_all;
use super::{Artifact, BakeError, BakeOptions, FailKind, OnError};
use crate::catalog::model::{Communicator, ImageName, Target};
use crate::catalog::Catalog;
use crate::checks::report::CheckResult;
use crate::cloud::aws::{Fleet, Regions};
use crate::cloud::cancel::Cancel;
use crate::cloud::Tags;
use crate::events::{BakeEvent, Events};
use crate::plan::{PlannedAction, Planner};
use crate::registry::tag;
use crate::remote::ssh::HostKeyPin;
use crate::remote::Conn;

/// How long `--on-error keep` keeps a failed build instance out of `bakery gc`'s reach (a working
/// day to debug it; `bakery cleanup <bake-id>` removes it any time).
const KEPT_LEASE: Duration = Duration::from_secs(24 * 3600);
/// Renew the lease no more often than this (a short `--lease` in tests).
const MIN_HEARTBEAT: Duration = Duration::from_secs(1);

/// A bake in progress: the phases' shared context, the live connection, and the check results
/// so far (the report needs them whatever happens).
pub(super) struct Run<'a> {
    pub(super) b: Bake<'a>,
    pub(super) link: Link,
    pub(super) checks: Vec<CheckResult>,
}

impl<'a> std::ops::Deref for Run<'a> {
    type Target = Bake<'a>;
    fn deref(&self) -> &Bake<'a> {
        &self.b
    }
}

impl<'a> std::ops::DerefMut for Run<'a> {
    fn deref_mut(&mut self) -> &mut Bake<'a> {
        &mut self.b
    }
}

/// What the phases before the commit produced.
struct Reached {
    preflighted: Preflighted,
    captured: Captured,
    tested: Tested,
    distributed: Distributed,
    /// Parameters written (`region:name` -> value).
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
            reasons: Vec::new(),
            cost: None,
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
        reasons: Vec::new(),
        cost: None,
    };
    // Live inputs are read now (before anything is created) and the plan rendered with them.
    let mut planner = Planner::new(catalog, target);
    // The catalog's mistakes, some of which show only with the inputs' values (a pinned version
    // the server contradicts), are the user's to fix: invalid input.
    let invalid_plan = |d: crate::catalog::diag::Diagnostics| BakeError {
        kind: FailKind::Invalid,
        ..fail_early("plan", d.to_string())
    };
    let live = planner.live_inputs(image).map_err(invalid_plan)?;
    if !live.is_empty() {
        let values = crate::inputs::resolve(project, target, &live)
            .await
            .map_err(|e| fail_early("plan", e))?;
        planner.add_inputs(values);
    }
    let plan = planner.plan(image).map_err(invalid_plan)?;
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
    let mut run = Run::new(Bake {
        image: img,
        target,
        plan,
        opts,
        events,
        cancel: cancel.clone(),
        aws,
        journal,
        bake_id,
        pin: HostKeyPin::default(),
        workdir_removed: false,
        updates: Vec::new(),
        boot_seconds: None,
        reasons: Vec::new(),
        instances: Vec::new(),
        fast_launch: BTreeMap::new(),
        consumers: Vec::new(),
        reach: None,
        phase: "preflight",
        phase_started: Instant::now(),
        timings: BTreeMap::new(),
    });
    // The lease is renewed for as long as this bake runs: its phases, the promotion and the
    // cleanup at the end.
    let beat = heartbeat(journal_path.clone(), target, &opts.fleet, opts.lease);
    tokio::pin!(beat);
    let all = async {
        let outcome = {
            let c = cancel.clone();
            tokio::select! {
                r = run.phases() => r,
                () = c.cancelled() => Err(Failure::cancelled()),
            }
        };
        // The commit is not cancellable: once it starts, it finishes, so that no interrupt
        // leaves a version half marked (and its parameters undone).
        let outcome = match outcome {
            Ok(r) => run.b.commit(&r.distributed, &r.tested).await.map(|()| r),
            Err(f) => Err(f),
        };
        match outcome {
            Ok(r) => {
                let channels = run.b.promote(&r.captured.version, &r.distributed).await;
                run.succeed(r, channels).await
            }
            Err(f) => Err(run.fail(f).await),
        }
    };
    tokio::select! {
        r = all => r,
        never = &mut beat => match never {},
    }
}

/// Renews `bakery:expires` on the bake's instance and security group every third of the lease
/// while the bake runs, so `bakery gc` on another machine never takes a slow bake for a dead
/// one. It reads the journal on disk (what exists is what the journal says); a failed renewal is
/// a warning, retried at the next beat. A kept instance has a lease of its own. Never returns.
pub(super) async fn heartbeat(
    journal: std::path::PathBuf,
    target: &Target,
    fleet: &Fleet,
    lease: Duration,
) -> std::convert::Infallible {
    let every = (lease / 3).max(MIN_HEARTBEAT);
    let mut regions = Regions::in_fleet(target, fleet);
    loop {
        tokio::time::sleep(every).await;
        let Ok(j) = Journal::read(&journal) else {
            continue;
        };
        if j.state == State::Kept {
            continue;
        }
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

impl<'a> Run<'a> {
    pub(super) fn new(b: Bake<'a>) -> Self {
        Run {
            b,
            link: Link::default(),
            checks: Vec::new(),
        }
    }
}

impl Run<'_> {
    /// The phases up to the commit, in order: each takes what the ones before produced.
    async fn phases(&mut self) -> Result<Reached, Failure> {
        let Run { b, link, checks } = self;
        b.emit_phase("preflight");
        let preflighted = b.preflight().await?;
        b.leave();
        b.emit_phase("launch");
        let types: Vec<String> = b
            .image
            .build
            .instance_types
            .iter()
            .map(|t| t.to_string())
            .collect();
        let launched = b.launch(&preflighted, &types).await?;
        b.leave();
        b.emit_phase("connect");
        link.0 = Some(b.connect(&launched).await?);
        b.leave();
        b.emit_phase("provision");
        b.provision(&launched, link).await?;
        b.leave();
        b.emit_phase("verify");
        b.verify(&launched, link, checks).await?;
        b.leave();
        b.emit_phase("capture");
        let captured = b.capture(&preflighted, &launched, link).await?;
        b.leave();
        // The copies to other regions run while the fresh instance boots and is checked.
        let elsewhere = b.publish_regions().len() > 1;
        if elsewhere {
            b.emit_phase("distribute");
        }
        let copying = b.start_copies(&preflighted, &captured).await?;
        if elsewhere {
            b.leave();
        }
        b.emit_phase("test");
        let tested = b.test(&preflighted, &launched, &captured, checks).await?;
        b.leave();
        b.emit_phase("distribute");
        let distributed = b.distribute(&captured, copying).await?;
        b.leave();
        b.emit_phase("publish");
        let parameters = b.publish(&preflighted, &captured, &distributed).await?;
        b.leave();
        Ok(Reached {
            preflighted,
            captured,
            tested,
            distributed,
            parameters,
        })
    }

    /// The cleanup phase of a run that succeeded: what the journal says goes (the build or test
    /// instance and what reached it), within a fresh `cleanup_timeout`; the journal marked
    /// succeeded; what could not be removed a warning (`bakery gc` finds it by its tags).
    pub(super) async fn clean_up_after_success(&mut self) {
        self.emit_phase("cleanup");
        let cancel = Cancel::new();
        let mut regions = Regions::in_fleet(self.b.target, &self.b.opts.fleet);
        let errors = match tokio::time::timeout(
            self.b.opts.cleanup_timeout,
            undo_all(
                &mut regions,
                &mut self.b.journal,
                false,
                false,
                self.b.events,
                &cancel,
            ),
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
            self.warn(format!("cleanup: {e}"));
        }
    }

    async fn succeed(mut self, r: Reached, channels: Vec<String>) -> Result<Artifact, BakeError> {
        self.clean_up_after_success().await;
        self.events.emit(BakeEvent::Finished {
            bake_id: self.bake_id.clone(),
            image: self.image.name.to_string(),
            outcome: "baked",
            seconds: self.timings.values().sum(),
            failure: None,
        });
        Ok(Artifact {
            image: self.image.name.to_string(),
            version: r.captured.version.to_string(),
            fingerprint: r.preflighted.fingerprint,
            amis: r
                .distributed
                .copies
                .iter()
                .map(|(r, (_, a))| (r.clone(), a.to_string()))
                .collect(),
            channels,
            source_ami: r.preflighted.source.id.to_string(),
            parent: r.preflighted.parent,
            bake_id: self.bake_id.clone(),
            parameters: r.parameters,
            timings: self.timings.clone(),
            checks: self.checks.clone(),
            inputs: self.plan.inputs.clone(),
            reasons: self.reasons.clone(),
            fast_launch: self.fast_launch.clone(),
            consumers: self.consumers.clone(),
            cost: self.cost(&r.distributed.copies.keys().cloned().collect::<Vec<_>>()),
            updates: self.updates.clone(),
            boot_seconds: self.boot_seconds,
        })
    }

    pub(super) async fn fail(mut self, f: Failure) -> BakeError {
        let failed_phase = self.phase;
        self.leave();
        if let Some(Conn::Ssm(ssm)) = &self.link.0 {
            // An interrupt dropped the step while its command ran: stop it on the instance.
            ssm.cancel_in_flight().await;
        }
        if let Some(conn) = self.link.0.take() {
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
            && self.build_instance().is_some()
            && f.kind != FailKind::Cancelled;
        if keep {
            // Keep what reaches the instance; the artifact (AMI, parameters) still goes, unless
            // it was published (or that cannot be told).
            let cancel = Cancel::new();
            let mut regions = Regions::in_fleet(self.b.target, &self.b.opts.fleet);
            // Kept first (the heartbeat leaves a kept bake alone), then its lease of a day.
            let _ = self.journal.set_state(State::Kept);
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
        } else {
            self.emit_phase("cleanup");
            // A fresh deadline and a fresh cancel: the bake's own are spent.
            let cancel = Cancel::new();
            let mut regions = Regions::in_fleet(self.b.target, &self.b.opts.fleet);
            cleanup_errors = match tokio::time::timeout(
                self.opts.cleanup_timeout,
                undo_all(
                    &mut regions,
                    &mut self.b.journal,
                    true,
                    true,
                    self.b.events,
                    &cancel,
                ),
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
        let outcome = f.kind.outcome();
        self.events.emit(BakeEvent::Finished {
            bake_id: self.bake_id.clone(),
            image: self.image.name.to_string(),
            outcome,
            seconds: self.timings.values().sum(),
            failure: Some(crate::events::FailureInfo::new(
                &self.bake_id,
                outcome,
                failed_phase,
                &f.cause,
                f.code,
            )),
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
            reasons: self.reasons.clone(),
            cost: (!self.instances.is_empty()).then(|| self.cost(&[])),
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

    /// The build instance, from the journal (what exists is what it says).
    fn build_instance(&self) -> Option<String> {
        self.journal.entries.iter().find_map(|e| match &e.undo {
            Undo::TerminateInstance { id, .. } => Some(id.to_string()),
            _ => None,
        })
    }

    /// Writes the private key next to the journal (0600) and says how to log in.
    fn keep_for_debugging(&mut self) -> String {
        if self.ssm() {
            return format!(
                "instance {id} : aws ssm start-session --target {id} --region {}",
                self.region(),
                id = self.build_instance().unwrap_or_default()
            );
        }
        let Some(t) = self.reach.clone() else {
            return format!(
                "instance {} (never reachable)",
                self.build_instance().unwrap_or_default()
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
                    self.build_instance().unwrap_or_default(),
                    path.display(),
                    t.port,
                    t.user,
                    t.host
                )
            }
            Err(e) => format!(
                "instance {} (could not write the key: {e})",
                self.build_instance().unwrap_or_default()
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
