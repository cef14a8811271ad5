//! Test: a fresh instance launched from the new AMI in the build region, with the build
//! instance's posture (its key pair and /32 security group, or SSM with nothing inbound; IMDSv2;
//! encrypted root), reached the same way; the image's `[test]` checks run there, evaluated by the
//! same code as verify. A failure fails the bake (exit 3) before anything is distributed or
//! published, and the AMI goes with the rest of the bake.

use std::time::Instant;

use crate::checks::report::CheckResult;
use crate::cloud::LaunchSpec;
use crate::registry::tag;
use crate::remote::ssh::SshTarget;

use super::capture::Captured;
use super::context::{Bake, Failure};
use super::launch::Launched;
use super::ledger::{Undo, When};
use super::preflight::Preflighted;
use super::OnError;
use crate::catalog::model::Platform;

/// How a version was tested, for its `bakery:tested` tag.
pub(super) enum Tested {
    /// Its test checks passed on a fresh instance at this time (RFC 3339).
    At(String),
    /// `--skip-test`.
    Skipped,
    /// The image has no `[test]`.
    Untested,
}

/// What a test instance boots with: the test's user data, else, for a Windows image reached over
/// SSH, the build's (it starts sshd and gives Administrators the launch key: without it the
/// fresh instance cannot be reached). Linux gets the key from cloud-init, SSM needs nothing.
pub(super) fn test_user_data(plan: &crate::plan::Plan, test: Option<String>) -> Option<String> {
    let windows_ssh = plan.platform == Platform::Windows
        && plan.communicator == crate::catalog::model::Communicator::Ssh;
    test.or_else(|| windows_ssh.then(|| plan.user_data.clone()).flatten())
}

impl Tested {
    /// The `bakery:tested` tag value, if any.
    pub(super) fn tag(&self) -> Option<(String, String)> {
        match self {
            Tested::At(t) => Some((tag::TESTED.into(), t.clone())),
            Tested::Skipped => Some((tag::TESTED.into(), "skipped".into())),
            Tested::Untested => None,
        }
    }
}

impl Bake<'_> {
    /// Waits for the fresh instance `fresh` to finish booting, then runs `checks` there
    /// (nothing of the bake is there: probes run in the system's temporary directory). If the
    /// instance restarts under the checks (a new boot id after them), it settles again and the
    /// checks run once more; a second restart fails the phase.
    pub(super) async fn test_checks(
        &mut self,
        fresh: &Launched,
        conn: crate::remote::Conn,
        checks: &[crate::plan::PlannedCheck],
        deadline: Instant,
        launched_at: Instant,
    ) -> Result<(crate::remote::Conn, Vec<CheckResult>), Failure> {
        let dir = match self.image.platform {
            Platform::Windows => "C:\\Windows\\Temp",
            Platform::Linux => "/tmp",
        };
        let mut conn = conn;
        let mut restarted = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (c, boot) = self.settle(fresh, conn, dir, left).await?;
            if self.boot_seconds.is_none() {
                let secs = launched_at.elapsed().as_secs_f64();
                self.boot_seconds = Some(secs);
                self.waiting(format!(
                    "{} ready {secs:.1}s after RunInstances",
                    fresh.instance
                ));
            }
            let results = self.probe_all(&self.host(&c, dir), checks).await;
            let after = self.host(&c, dir).boot_id().await;
            match after {
                Ok(b) if b == boot => return Ok((c, results)),
                _ if self.cancel.is_cancelled() => return Ok((c, results)),
                after => {
                    let now = after
                        .map_err(|e| e.to_string())
                        .unwrap_or_else(|e| format!("unknown: {e}"));
                    if restarted {
                        c.close().await;
                        return Err(Failure::new(format!(
                            "{} restarted during its test checks twice (boot {boot}, then {now})",
                            fresh.instance
                        )));
                    }
                    self.warn(format!(
                        "{} restarted during its test checks (boot {boot}, then {now}): running them again once it has settled",
                        fresh.instance
                    ));
                    restarted = true;
                    conn = c;
                }
            }
        }
    }

    pub(super) async fn test(
        &mut self,
        pre: &Preflighted,
        build: &Launched,
        cap: &Captured,
        checks: &mut Vec<CheckResult>,
    ) -> Result<Tested, Failure> {
        let Some(test) = self.plan.test.clone() else {
            self.warn(format!(
                "{} is not tested on a fresh instance: it has no [test]",
                self.image.name
            ));
            return Ok(Tested::Untested);
        };
        if self.opts.skip_test {
            self.warn(format!(
                "--skip-test: {} {} is not tested on a fresh instance (tagged {}=skipped)",
                self.image.name,
                cap.version,
                tag::TESTED
            ));
            return Ok(Tested::Skipped);
        }
        let deadline = Instant::now() + test.timeout;
        let region = self.region();
        let mut tags = self.tags();
        tags.insert(
            "Name".into(),
            format!("bakery test {} {}", self.image.name, cap.version),
        );
        let spec = LaunchSpec {
            client_token: Some(format!("{}-test", self.bake_id)),
            image: cap.image.clone(),
            root_device_name: pre
                .source
                .root_device_name
                .clone()
                .unwrap_or_else(|| "/dev/xvda".into()),
            instance_types: test.instance_types.clone(),
            key_name: build.key_name.clone(),
            security_group: Some(build.group.clone()),
            subnet: self.target.subnet.clone(),
            instance_profile: self.target.instance_profile.clone(),
            user_data: test_user_data(&self.plan, test.user_data.clone()),
            volume_size_gb: self.image.build.root_volume.size_gb,
            volume_type: format!("{:?}", self.image.build.root_volume.volume_type).to_lowercase(),
            kms_key: self
                .target
                .kms_keys
                .get(&region)
                .cloned()
                .or_else(|| self.target.kms_key.clone()),
            tags,
        };
        let launched_at = Instant::now();
        let (id, itype) = self.aws.run_instance(&spec).await?;
        let gb = spec.volume_size_gb.map(u64::from).or(pre.source.ebs_gb);
        self.instances
            .push(("test", itype.to_string(), gb, launched_at));
        let undo = Undo::TerminateInstance {
            region: region.clone(),
            id: id.clone(),
        };
        self.journal.push(undo.clone(), When::Always)?;
        self.created(format!("test instance {id} ({itype}) from {}", cap.image));
        // As at launch: a known address needs no DescribeInstances before the connect.
        let (host, seen_running) = self.address_of(&id, test.timeout).await?;
        let fresh = Launched {
            instance: id.clone(),
            ssh: build.ssh.as_ref().map(|s| SshTarget {
                host: host.clone().unwrap_or_else(|| s.host.clone()),
                ..s.clone()
            }),
            key_name: build.key_name.clone(),
            group: build.group.clone(),
            seen_running,
        };
        let conn = self.connect(&fresh).await?;
        let (conn, results) = self
            .test_checks(&fresh, conn, &test.checks, deadline, launched_at)
            .await?;
        conn.close().await;
        checks.extend(results.iter().cloned());
        if self.cancel.is_cancelled() {
            return Err(Failure::cancelled());
        }
        let prefix = format!("failed on a fresh instance launched from {}: ", cap.image);
        let failed = Failure::checks(&results, &prefix, "test checks");
        // The test instance is done with, and once its checks passed so is the build instance
        // (its AMI is available), unless a failure later on is to keep it for debugging
        // (`--on-error keep`): they go now, in one call, and the cleanup only waits for them.
        let mut done = vec![id.clone()];
        if failed.is_none() && self.opts.on_error != OnError::Keep {
            done.push(build.instance.clone());
        }
        match self.aws.terminate_instances(&done).await {
            Ok(()) => self.journal.terminating.extend(done),
            Err(e) => {
                tracing::warn!(instances = ?done, error = %e, "terminating the test and build instances")
            }
        }
        if let Some(f) = failed {
            return Err(f);
        }
        Ok(Tested::At(
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        ))
    }
}
