//! Provision: the recipes' steps on the build instance, with restarts (a new boot id, not a
//! sleep), Windows Update passes and the step that powers a sysprepped instance off.

use std::time::{Duration, Instant};

use super::context::{wait_instance, Bake, Failure, Link};
use super::launch::Launched;
use super::steps::StepError;
use crate::catalog::model::Platform;
use crate::events::BakeEvent;
use crate::plan::{PlannedAction, PlannedStep};
use crate::remote::Conn;

/// A restart waits this long for the new boot unless the step says otherwise.
const DEFAULT_RESTART_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How many times one step may ask for a restart (exit 194 / 3010) over SSH.
const MAX_RESTART_RERUNS: u32 = 10;

/// What happens after a step ran.
#[derive(Debug, PartialEq, Eq)]
enum AfterStep {
    /// Go on (or fail with the step's own error).
    Next,
    /// It exited 194 (Linux) or 3010 (Windows): restart the instance (a new boot id) and run the
    /// step again, as Systems Manager's agent does for a Run Command script.
    RestartAndRerun,
    /// It still asks after `MAX_RESTART_RERUNS` restarts.
    TooManyRestarts,
}

/// The same script means the same on both communicators: over SSM the agent restarts and reruns
/// a script that exits 194 / 3010 (the step sees only the final exit), over SSH bakery does.
fn after_step(platform: Platform, ssm: bool, exit: Option<i32>, restarts: u32) -> AfterStep {
    let asks = match platform {
        Platform::Linux => crate::remote::ssm::REBOOT_EXIT_LINUX,
        Platform::Windows => crate::remote::ssm::REBOOT_EXIT_WINDOWS,
    };
    match exit {
        Some(code) if code == asks && !ssm && restarts < MAX_RESTART_RERUNS => {
            AfterStep::RestartAndRerun
        }
        Some(code) if code == asks && !ssm => AfterStep::TooManyRestarts,
        _ => AfterStep::Next,
    }
}

impl Bake<'_> {
    pub(super) async fn run_steps(
        &mut self,
        l: &Launched,
        link: &mut Link,
        finalize: bool,
    ) -> Result<(), Failure> {
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
                    self.restart(l, link, timeout.unwrap_or(DEFAULT_RESTART_TIMEOUT))
                        .await?;
                }
                PlannedAction::WindowsUpdate {
                    categories,
                    exclude_kbs,
                    max_passes,
                } => {
                    self.windows_update(
                        l,
                        link,
                        n,
                        total,
                        s,
                        (categories, exclude_kbs),
                        *max_passes,
                    )
                    .await?;
                }
                _ if finalize && i + 1 == steps.len() && self.shuts_itself_down() => {
                    self.run_shutdown_step(l, link, s).await.map_err(named)?;
                }
                _ => {
                    let mut restarts = 0;
                    loop {
                        let r = self.host(link.get()?, &workdir).step(n, s).await;
                        let code = match &r {
                            Err(StepError::Exit { code, .. }) => Some(*code),
                            _ => None,
                        };
                        match after_step(self.image.platform, self.ssm(), code, restarts) {
                            AfterStep::Next => break r.map_err(named)?,
                            AfterStep::RestartAndRerun => {
                                restarts += 1;
                                self.waiting(format!(
                                    "step {n}/{total} asked for a restart (exit {}): restarting, then running it again ({restarts} of at most {MAX_RESTART_RERUNS})",
                                    code.unwrap_or_default()
                                ));
                                self.restart(l, link, DEFAULT_RESTART_TIMEOUT).await?;
                            }
                            AfterStep::TooManyRestarts => {
                                return Err(Failure::new(format!(
                                    "step {n}/{total} ({} / {}) still asks for a restart after {MAX_RESTART_RERUNS} restarts",
                                    s.recipe, s.name
                                )))
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs a step that powers the instance off (sysprep --shutdown): done when the instance is
    /// `stopped`; a non-zero exit before that fails the bake.
    async fn run_shutdown_step(
        &self,
        l: &Launched,
        link: &Link,
        s: &PlannedStep,
    ) -> Result<(), StepError> {
        let id = l.instance.clone();
        let workdir = self.workdir();
        let timeout = s.timeout + self.image.build.timeouts.capture;
        let conn = link
            .0
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
    #[allow(clippy::too_many_arguments)]
    async fn windows_update(
        &mut self,
        l: &Launched,
        link: &mut Link,
        n: usize,
        total: usize,
        s: &PlannedStep,
        (categories, exclude_kbs): (&[String], &[String]),
        max_passes: u32,
    ) -> Result<(), Failure> {
        let workdir = self.workdir();
        for pass in 1..=max_passes.max(1) {
            let result = self
                .host(link.get()?, &workdir)
                .update_pass(categories, exclude_kbs, s.timeout)
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
            // For the report and the AMI's bakery:kbs tag.
            self.updates.extend(result.installed.iter().cloned());
            if !result.failed.is_empty() {
                return Err(Failure::new(format!(
                    "step {n}/{total} ({} / {}) pass {pass}: updates failed to install: {}",
                    s.recipe,
                    s.name,
                    result.failed.join(", ")
                )));
            }
            if result.reboot_pending {
                self.restart(l, link, DEFAULT_RESTART_TIMEOUT).await?;
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

    /// The working directory, then every step in order, within the provision timeout.
    pub(super) async fn provision(&mut self, l: &Launched, link: &mut Link) -> Result<(), Failure> {
        let workdir = self.workdir();
        self.host(link.get()?, &workdir).prepare().await?;
        let deadline = self.image.build.timeouts.provision;
        match tokio::time::timeout(deadline, self.run_steps(l, link, false)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(format!(
                "provisioning took longer than {}s",
                deadline.as_secs()
            ))),
        }
    }

    /// Reboots and waits for a new boot id (not a sleep): over SSH by reconnecting, over SSM
    /// once the instance is Online again.
    async fn restart(
        &mut self,
        l: &Launched,
        link: &mut Link,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let workdir = self.workdir();
        let conn = link.0.take().ok_or_else(|| Failure::new("not connected"))?;
        let before = self.host(&conn, &workdir).boot_id().await?;
        self.host(&conn, &workdir).request_reboot().await?;
        let started = Instant::now();
        match conn {
            Conn::Ssh(ssh) => ssh.close().await,
            // Kept: the cleanup after an interrupted restart still reaches the instance by it.
            Conn::Ssm(ssm) => link.0 = Some(Conn::Ssm(ssm)),
        }
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
                () = self.cancel.cancelled() => return Err(Failure::cancelled()),
            }
            let conn = self.reach_again(l, left).await?;
            let now = self.host(&conn, &workdir).boot_id().await;
            match now {
                Ok(id) if id != before && !id.is_empty() => {
                    link.0 = Some(conn);
                    return Ok(());
                }
                _ => conn.close().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_194_and_3010_restart_and_rerun_over_ssh_only() {
        use AfterStep::*;
        let cases = [
            (Platform::Linux, false, Some(194), 0, RestartAndRerun),
            (
                Platform::Linux,
                false,
                Some(194),
                MAX_RESTART_RERUNS - 1,
                RestartAndRerun,
            ),
            (
                Platform::Linux,
                false,
                Some(194),
                MAX_RESTART_RERUNS,
                TooManyRestarts,
            ),
            (Platform::Windows, false, Some(3010), 0, RestartAndRerun),
            // The other platform's code is an ordinary failure.
            (Platform::Linux, false, Some(3010), 0, Next),
            (Platform::Windows, false, Some(194), 0, Next),
            // Over SSM the agent did it already: what reaches bakery is final.
            (Platform::Linux, true, Some(194), 0, Next),
            (Platform::Windows, true, Some(3010), 0, Next),
            (Platform::Linux, false, Some(1), 0, Next),
            (Platform::Linux, false, None, 0, Next),
        ];
        for (platform, ssm, exit, restarts, want) in cases {
            assert_eq!(
                after_step(platform, ssm, exit, restarts),
                want,
                "{platform:?} ssm={ssm} {exit:?} {restarts}"
            );
        }
    }
}
