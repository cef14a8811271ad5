//! `bakery test`: a published version's AMI on a fresh instance, its image's test checks, and
//! everything removed after; the same launch, connection, journal and lease as a bake.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::context::{Bake, Failure};
use super::ledger::Journal;
use super::preflight::Preflighted;
use super::runner::{heartbeat, Run};
use super::{BakeError, BakeOptions, FailKind};
use crate::catalog::model::{ImageName, Target};
use crate::catalog::Catalog;
use crate::checks::report::CheckResult;
use crate::cloud::cancel::Cancel;
use crate::events::{BakeEvent, Events};
use crate::plan::Planner;
use crate::remote::ssh::HostKeyPin;

/// A passing `bakery test`.
#[derive(Debug, Clone)]
pub struct TestRun {
    /// The id its resources were tagged and journaled under.
    pub bake_id: String,
    pub checks: Vec<CheckResult>,
    /// Seconds per phase.
    pub timings: BTreeMap<String, f64>,
    /// Seconds from RunInstances to the fresh instance's finished first boot.
    pub boot_seconds: Option<f64>,
}

/// `bakery test`: launches a fresh instance from `ami` (version `version` of `image`, in the
/// target's first region) the way a bake launches its build instance (key pair, /32 group or
/// SSM, journaled, leased), runs the image's `[test]` checks there, and removes it all. Failing
/// checks are a `FailKind::Checks` error carrying the results.
#[allow(clippy::too_many_arguments)]
pub async fn test_version(
    project: &Path,
    catalog: &Catalog,
    image: &ImageName,
    version: &semver::Version,
    ami: &crate::cloud::ImageId,
    target: &Target,
    opts: &BakeOptions,
    events: &Events,
    cancel: &Cancel,
) -> Result<TestRun, BakeError> {
    let bake_id = super::new_bake_id();
    let journal_path = Journal::path_for(project, &bake_id);
    let early = |cause: String| BakeError {
        bake_id: bake_id.clone(),
        image: image.to_string(),
        phase: "test",
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
    let img = catalog
        .images
        .get(image)
        .ok_or_else(|| early(format!("unknown image {image}")))?;
    let mut plan = Planner::new(catalog, target)
        .plan(image)
        .map_err(|d| early(d.to_string()))?;
    let test = plan
        .test
        .clone()
        .ok_or_else(|| early(format!("{image} has no [test] to run")))?;
    let checks = test.checks;
    // The instance boots as a consumer's would: with the test's user data, not the build's
    // (but for Windows over SSH, which needs the build's to be reached at all).
    plan.user_data = super::test::test_user_data(&plan, test.user_data);
    let types = test.instance_types;
    let timeout = test.timeout;
    let region = target
        .regions
        .first()
        .ok_or_else(|| early(format!("target {} has no region", target.name)))?;
    let aws = opts.fleet.connect(target, region).await;
    let source = aws
        .describe_image(ami)
        .await
        .map_err(|e| early(e.to_string()))?
        .ok_or_else(|| early(format!("{ami} does not exist in {region}")))?;
    let mut journal = Journal::create(project, &bake_id, image.as_str(), &target.name)
        .map_err(|e| early(format!("journal: {e}")))?;
    journal.version = Some(version.to_string());
    // No working directory is made on a tested instance.
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
        workdir_removed: true,
        updates: Vec::new(),
        boot_seconds: None,
        reasons: Vec::new(),
        instances: Vec::new(),
        fast_launch: BTreeMap::new(),
        consumers: Vec::new(),
        reach: None,
        phase: "launch",
        phase_started: Instant::now(),
        timings: BTreeMap::new(),
    });
    let pre = Preflighted {
        source,
        parent: None,
        fingerprint: String::new(),
        version: version.clone(),
        known_versions: Default::default(),
        latest: (None, 0),
    };
    let beat = heartbeat(journal_path, target, &opts.fleet, opts.lease);
    tokio::pin!(beat);
    let all = async {
        let outcome = {
            let c = cancel.clone();
            tokio::select! {
                r = run.test_phases(&pre, &types, &checks, timeout) => r,
                () = c.cancelled() => Err(Failure::cancelled()),
            }
        };
        match outcome {
            Ok(()) => Ok(run.finish().await),
            Err(f) => Err(run.fail(f).await),
        }
    };
    tokio::select! {
        r = all => r,
        never = &mut beat => match never {},
    }
}

impl Run<'_> {
    /// `bakery test`: launch from the version's AMI, connect, the test checks.
    async fn test_phases(
        &mut self,
        pre: &Preflighted,
        types: &[String],
        tests: &[crate::plan::PlannedCheck],
        timeout: std::time::Duration,
    ) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        let Run { b, link, checks } = self;
        b.emit_phase("launch");
        let launched_at = Instant::now();
        let launched = b.launch(pre, types).await?;
        b.leave();
        b.emit_phase("connect");
        let conn = b.connect(&launched).await?;
        b.leave();
        b.emit_phase("test");
        let (conn, results) = b
            .test_checks(&launched, conn, tests, deadline, launched_at)
            .await?;
        link.0 = Some(conn);
        *checks = results;
        b.leave();
        if b.cancel.is_cancelled() {
            return Err(Failure::cancelled());
        }
        let prefix = format!(
            "failed on a fresh instance launched from {}: ",
            pre.source.id
        );
        if let Some(f) = Failure::checks(checks, &prefix, "test checks") {
            return Err(f);
        }
        Ok(())
    }

    /// The end of a passing `bakery test`: the test instance and what reached it go.
    async fn finish(mut self) -> TestRun {
        if let Some(conn) = self.link.0.take() {
            conn.close().await;
        }
        self.clean_up_after_success().await;
        self.events.emit(BakeEvent::Finished {
            bake_id: self.bake_id.clone(),
            image: self.image.name.to_string(),
            outcome: "tested",
            seconds: self.timings.values().sum(),
            failure: None,
        });
        TestRun {
            bake_id: self.bake_id.clone(),
            checks: self.checks.clone(),
            timings: self.timings.clone(),
            boot_seconds: self.boot_seconds,
        }
    }
}
