//! Distribute: copies of the AMI in every other publish region, shared and scheduled for
//! deprecation as the image says.

use std::collections::BTreeMap;
use std::time::SystemTime;

use tokio::task::JoinSet;

use super::capture::Captured;
use super::context::{wait_available, Bake, Failure};
use super::ledger::{Undo, When};
use super::preflight::Preflighted;
use crate::cloud::aws::Aws;
use crate::cloud::{CloudError, ImageId, ImageInfo, SnapshotId, Tags};
use crate::registry::{self, tag};

/// The version's AMI in every publish region.
pub(super) struct Distributed {
    /// Region -> (client, AMI): the build region's image and its copies.
    pub(super) copies: BTreeMap<String, (Aws, ImageId)>,
    /// Region -> the snapshots of that region's AMI (known from the wait for it).
    pub(super) snapshots: BTreeMap<String, Vec<SnapshotId>>,
}

/// Copies of the AMI under way in the other publish regions (their waits run in the
/// background; dropping this stops waiting, and the journal still names every copy).
pub(super) struct Copying {
    waits: JoinSet<(Aws, ImageId, Result<ImageInfo, CloudError>)>,
}

impl Bake<'_> {
    /// Starts a copy of the AMI in every other publish region (the copies run in parallel in
    /// AWS, and alongside the test phase: a cross-region copy takes minutes, and so does a
    /// fresh instance's boot). Each copy is journaled the moment AWS names it: if the test
    /// fails, it goes with the rest of the bake, pending or not.
    /// Idempotent by name: a copy of this version with the same fingerprint is adopted.
    pub(super) async fn start_copies(
        &mut self,
        pre: &Preflighted,
        cap: &Captured,
    ) -> Result<Copying, Failure> {
        let build = self.region();
        let ami = cap.image.clone();
        let version = cap.version.clone();
        let name = registry::ami_name(self.image.name.as_str(), &version);
        let tags = self.image_tags(pre, &name, &version);
        let fingerprint = pre.fingerprint.clone();
        let description = format!(
            "{} {} baked by bakery ({})",
            self.image.name, version, self.bake_id
        );
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
        let mut waits = JoinSet::new();
        for (aws, id) in started {
            let cancel = self.cancel.clone();
            waits.spawn(async move {
                let info = wait_available(&aws, &id, timeout, &cancel).await;
                (aws, id, info)
            });
        }
        Ok(Copying { waits })
    }

    /// Waits for the copies `start_copies` began (together), then marks every AMI IMDSv2-only
    /// (unless the image allows IMDSv1, saying why), shares it and schedules its deprecation.
    pub(super) async fn distribute(
        &mut self,
        cap: &Captured,
        copying: Copying,
    ) -> Result<Distributed, Failure> {
        let build = self.region();
        let mut copies = BTreeMap::new();
        copies.insert(build.clone(), (self.aws.clone(), cap.image.clone()));
        let mut snapshots = BTreeMap::new();
        snapshots.insert(build, cap.snapshots.clone());
        let mut waits = copying.waits;
        while let Some(done) = waits.join_next().await {
            let (aws, id, info) = done.map_err(|e| Failure::new(format!("copy wait: {e}")))?;
            snapshots.insert(aws.region.to_string(), info?.snapshots);
            copies.insert(aws.region.to_string(), (aws, id));
        }
        let share = &self.image.publish.share;
        for (region, (aws, id)) in &copies {
            if self.image.publish.imds_v1.is_none() {
                aws.require_imdsv2(id).await?;
            }
            let accounts = self.target.share_accounts(&share.accounts, region);
            aws.share_image(id, &accounts, &share.organizations, &share.ous)
                .await?;
            if !accounts.is_empty() {
                for s in snapshots.get(region).into_iter().flatten() {
                    aws.share_snapshot(s, &accounts).await?;
                }
            }
            if let Some(after) = self.image.publish.deprecate_after {
                aws.enable_image_deprecation(id, SystemTime::now() + after)
                    .await?;
            }
        }
        Ok(Distributed { copies, snapshots })
    }
}
