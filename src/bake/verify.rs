//! Verify: the image's checks on the build instance, then the finalize steps (generalise) and
//! the working directory goes.

use super::context::{Bake, Failure, Link};
use super::launch::Launched;

impl Bake<'_> {
    /// Every check as a probe on the build instance, evaluated by the pure check code (results
    /// into `checks`, for the report whatever happens); then the finalize steps.
    pub(super) async fn verify(
        &mut self,
        l: &Launched,
        link: &mut Link,
        checks: &mut Vec<crate::checks::report::CheckResult>,
    ) -> Result<(), Failure> {
        let workdir = self.workdir();
        let host = self.host(link.get()?, &workdir);
        let results = self.probe_all(&host, &self.plan.checks).await;
        if self.cancel.is_cancelled() {
            return Err(Failure::cancelled());
        }
        let failed = Failure::checks(&results, "", "checks");
        *checks = results;
        if let Some(f) = failed {
            return Err(f);
        }
        // Generalise. Linux: the finalize steps, then the working directory goes. Windows: the
        // last finalize step powers the instance off, so the working directory goes first and
        // the finalize steps run in the system's temporary directory.
        if self.shuts_itself_down() {
            self.remove_workdir(link, &workdir).await?;
            self.workdir_removed = true;
            self.run_steps(l, link, true).await?;
        } else {
            self.run_steps(l, link, true).await?;
            self.remove_workdir(link, &workdir).await?;
        }
        Ok(())
    }

    async fn remove_workdir(&self, link: &Link, workdir: &str) -> Result<(), Failure> {
        self.host(link.get()?, workdir)
            .remove_workdir()
            .await
            .map_err(|e| Failure::new(format!("removing {workdir}: {e}")))
    }
}
