//! Connect: the communicator to the build instance (SSH or SSM Run Command).

use super::context::{Bake, Failure};
use super::launch::Launched;
use super::ledger::{Undo, When};
use crate::remote::ssh::Ssh;
use crate::remote::Conn;

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
        let ssh = Ssh::connect(
            &t,
            &self.pin,
            self.image.build.timeouts.launch,
            &self.cancel,
        )
        .await?;
        tracing::info!(addr = %t.addr(), host_key = %self.pin.fingerprint().unwrap_or_default(), "connected");
        Ok(Conn::Ssh(ssh))
    }
}
