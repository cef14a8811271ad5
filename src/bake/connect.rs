//! Connect: the communicator to the build instance (SSH or SSM Run Command).

use std::time::Duration;

use super::context::{wait_running, Bake, Failure};
use super::launch::Launched;
use super::ledger::{Undo, When};
use crate::remote::ssh::Ssh;
use crate::remote::{Conn, RemoteError};

/// How long the first SSH attempt to an instance not yet seen running may take before the
/// bake waits for `running`: the sandbox's answers in milliseconds, and an EC2 instance is
/// pending for longer than this (its boot takes tens of seconds), so the attempt costs nothing.
const FIRST_ATTEMPT: Duration = Duration::from_secs(2);

impl Bake<'_> {
    /// The communicator: SSM once the instance is Online, or SSH once sshd answers.
    pub(super) async fn connect(&mut self, l: &Launched) -> Result<Conn, Failure> {
        if self.ssm() {
            let ssm = self.ssm_conn(&l.instance);
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
            return Ok(Conn::Ssm(ssm));
        }
        let t = l.ssh.clone().ok_or_else(|| Failure::new("no address"))?;
        let timeout = self.image.build.timeouts.launch;
        // The address was known at launch: one attempt first (the instance is often up
        // already), and only if that fails the wait for `running` (which fails fast on an
        // instance on its way out) before the retries.
        let first = match l.seen_running {
            true => None,
            false => match Ssh::try_once(&t, &self.pin, FIRST_ATTEMPT, &self.cancel).await {
                Ok(ssh) => Some(ssh),
                Err(e @ (RemoteError::HostKeyChanged { .. } | RemoteError::Cancelled)) => {
                    return Err(e.into())
                }
                Err(e) => {
                    tracing::debug!(addr = %t.addr(), error = %e, "not reachable yet: waiting for the instance to run");
                    wait_running(&self.aws, &l.instance, timeout, &self.cancel).await?;
                    None
                }
            },
        };
        let ssh = match first {
            Some(ssh) => ssh,
            None => Ssh::connect(&t, &self.pin, timeout, &self.cancel).await?,
        };
        tracing::info!(addr = %t.addr(), host_key = %self.pin.fingerprint().unwrap_or_default(), "connected");
        Ok(Conn::Ssh(ssh))
    }
}
