//! Promote, after the commit: `latest` converged, channels moved (never backwards) and
//! retention applied. The version stands whatever happens here: problems are warnings, and an
//! interrupt names the command that finishes what was left.

use std::collections::BTreeMap;

use semver::Version;

use super::context::Bake;
use super::distribute::Distributed;
use crate::catalog::model::FastLaunch;
use crate::cloud::CloudError;
use crate::events::BakeEvent;
use crate::registry;

impl Bake<'_> {
    /// Channels and retention after the commit. The version stands whatever happens here, so
    /// problems are warnings; an interrupt stops what is left, and each move or prune that did
    /// not happen is named with the command that finishes it.
    /// Returns the channels moved to `version`.
    pub(super) async fn promote(&mut self, version: &Version, d: &Distributed) -> Vec<String> {
        let version = version.clone();
        let mut channels = Vec::new();
        self.emit_phase("promote");
        if let Some(fl) = self.image.publish.fast_launch.clone() {
            self.enable_fast_launch(&fl, d).await;
        }
        let image = self.image.name.to_string();
        let target = &self.target.name;
        let mut reg = registry::aws::Registry::in_fleet(self.target, &self.opts.fleet);
        // One listing after the commit serves `latest` and retention (neither the channel
        // moves nor `latest` change which versions exist); `latest` and the channels are read
        // in one call per region right after it.
        let channel_names = self.image.publish.channels.clone();
        let listed = reg.versions(&image, None).await;
        let pointers = reg.pointers(&image, &channel_names).await;
        // Another runner may have written `latest` between this bake's read and write: once
        // committed, `latest` goes to the newest published release wherever it names an older
        // (a region whose pointers could not be read is read by itself).
        let no_pointers = BTreeMap::new();
        let converged = match &listed {
            Ok(all) => {
                let now = pointers.as_ref().map(|(p, _)| p).unwrap_or(&no_pointers);
                reg.converge_latest(&image, all, now).await
            }
            Err(e) => Err(e.clone()),
        };
        if let Err(e) = converged {
            self.warn(format!("latest not checked after the commit: {e}"));
        }
        // The copies are known here: no need to re-read the registry (which may lag).
        let amis: BTreeMap<String, String> = d
            .copies
            .iter()
            .map(|(r, (_, a))| (r.clone(), a.to_string()))
            .collect();
        for ch in channel_names {
            if self.cancel.is_cancelled() {
                self.warn(format!("interrupted: channel {ch} not moved to {version}; finish with: bakery promote {image}@{version} {ch} --target {target}"));
                continue;
            }
            // Every move decides on the read above: one that another runner's write came
            // between is told by the version SSM numbered its write with.
            let read = pointers.as_ref().ok().map(|(p, v)| (p, v));
            match reg
                .promote_if_newer(&image, &version, &amis, &ch, read)
                .await
            {
                Ok(true) => channels.push(ch),
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
            } else if listed
                .as_ref()
                .is_ok_and(|all| registry::prune::keeps_all(all.len(), keep as usize))
            {
                // No more versions than it keeps: retention keeps them all, whatever uses them.
            } else {
                let keep = keep as usize;
                let pruned = tokio::select! {
                    r = async {
                        match listed {
                            Ok(all) => registry::prune::prune_listed(&mut reg, &image, all, keep, None, false).await,
                            Err(_) => registry::prune::prune(&mut reg, &image, keep, None, false).await,
                        }
                    } => r,
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
        self.sync_consumers(&mut reg, &image).await;
        self.leave();
        channels
    }

    /// The mirror in every consumer account and region, after the channels and retention. A
    /// consumer that cannot be reached fails alone: the version stands, the report names it,
    /// and `bakery sync` finishes it.
    async fn sync_consumers(&mut self, reg: &mut registry::aws::Registry<'_>, image: &str) {
        if self.target.consumers.is_empty() {
            return;
        }
        let finish = format!("bakery sync {image} --target {}", self.target.name);
        if self.cancel.is_cancelled() {
            self.warn(format!(
                "interrupted: consumers not updated; finish with: {finish}"
            ));
            return;
        }
        let mut sessions = crate::cloud::aws::consumer::Consumers::new();
        let synced = tokio::select! {
            r = registry::consumers::sync(reg, &mut sessions, image, false) => r,
            () = self.cancel.cancelled() => Err(CloudError::Cancelled),
        };
        match synced {
            Ok(done) => {
                for s in done.iter().filter(|s| s.failed()) {
                    self.warn(format!(
                        "consumer {} ({}) not updated: {}; finish with: {finish}",
                        s.account,
                        s.region,
                        s.error.as_deref().unwrap_or_default()
                    ));
                }
                self.consumers = done;
            }
            Err(e) => self.warn(format!("consumers not updated: {e}; finish with: {finish}")),
        }
    }

    /// EC2 Fast Launch on the new AMI in every publish region at once, after the commit: a
    /// region where it cannot be enabled is a warning (the version stands), its state in the
    /// manifest says so, and `bakery versions` shows it.
    async fn enable_fast_launch(&mut self, fl: &FastLaunch, d: &Distributed) {
        let calls = d.copies.iter().map(|(region, (aws, ami))| {
            let template = fl.launch_templates.get(region).map(String::as_str);
            async move {
                let r = aws
                    .enable_fast_launch(
                        ami,
                        fl.max_parallel_launches,
                        fl.target_resource_count,
                        template,
                    )
                    .await;
                (region.clone(), ami.clone(), r)
            }
        });
        for (region, ami, r) in futures_util::future::join_all(calls).await {
            match r {
                Ok(state) => {
                    self.events.emit(BakeEvent::Created {
                        bake_id: self.bake_id.clone(),
                        resource: format!("fast launch of {ami} in {region} ({state})"),
                    });
                    self.fast_launch.insert(region, state);
                }
                Err(e) => {
                    self.warn(format!(
                        "Fast Launch not enabled on {ami} in {region}: {e}; the version is published without it"
                    ));
                    self.fast_launch.insert(region, "not-enabled".into());
                }
            }
        }
    }
}
