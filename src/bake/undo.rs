//! Undoing what a bake created: journal entries in reverse, then a sweep of anything tagged with
//! the bake id that the journal missed (a resource AWS created while the call that would have
//! returned its id was interrupted).

use std::path::Path;
use std::time::Duration;

use super::ledger::{Journal, State, Undo};
use crate::catalog::model::Target;
use crate::cloud::aws::{Aws, Regions};
use crate::cloud::cancel::Cancel;
use crate::cloud::wait::{Poll, Wait};
use crate::cloud::{CloudError, InstanceId, SecurityGroupId};
use crate::events::{BakeEvent, Events};
use crate::registry::tag;

/// A terminated instance releases its security group within a minute or two; EC2 answers
/// DependencyViolation until then.
const TERMINATE_WAIT: Duration = Duration::from_secs(10 * 60);
const SG_RELEASE_WAIT: Duration = Duration::from_secs(5 * 60);
/// How long a just-created image may stay invisible to DescribeImages.
const IMAGE_VISIBLE_WAIT: Duration = Duration::from_secs(60);

async fn terminate_and_wait(aws: &Aws, id: &InstanceId, cancel: &Cancel) -> Result<(), CloudError> {
    aws.terminate_instance(id).await?;
    Wait::new(
        format!("instance {id} in {}", aws.region),
        "terminated",
        TERMINATE_WAIT,
    )
    .until(cancel, || async {
        // Gone from DescribeInstances counts as terminated.
        Ok(match aws.poll_instance(id).await? {
            None => Poll::Ready(()),
            Some(i) if i.state == "terminated" => Poll::Ready(()),
            Some(i) => Poll::Pending {
                state: i.state,
                reason: i.state_reason,
            },
        })
    })
    .await
}

async fn delete_sg(aws: &Aws, id: &SecurityGroupId, cancel: &Cancel) -> Result<(), CloudError> {
    Wait::new(
        format!("security group {id} in {}", aws.region),
        "deletable",
        SG_RELEASE_WAIT,
    )
    .until(cancel, || async {
        match aws.delete_security_group(id).await {
            Ok(()) => Ok(Poll::Ready(())),
            Err(e) if e.code() == Some("DependencyViolation") => Ok(Poll::Pending {
                state: "in use".into(),
                reason: None,
            }),
            Err(e) => Err(e),
        }
    })
    .await
}

/// Carries out one undo.
/// Carries out one undo for bake `bake_id` (an image is only removed while it carries that id).
pub async fn run(
    regions: &mut Regions<'_>,
    u: &Undo,
    bake_id: &str,
    cancel: &Cancel,
) -> Result<(), CloudError> {
    match u {
        Undo::TerminateInstance { region, id } => {
            terminate_and_wait(regions.get(region).await, id, cancel).await
        }
        Undo::DeleteKeyPair { region, name } => {
            regions.get(region).await.delete_key_pair(name).await
        }
        Undo::DeleteSecurityGroup { region, id } => {
            delete_sg(regions.get(region).await, id, cancel).await
        }
        Undo::DeleteSnapshot { region, id } => regions.get(region).await.delete_snapshot(id).await,
        Undo::DeregisterImage { region, id } => {
            let aws = regions.get(region).await;
            // An image we just created may not be visible yet (DescribeImages is eventually
            // consistent); its snapshots are only known once it is.
            let info = Wait::new(
                format!("image {id} in {region}"),
                "visible",
                IMAGE_VISIBLE_WAIT,
            )
            .until(cancel, || async {
                Ok(match aws.poll_image(id).await? {
                    Some(i) => Poll::Ready(Some(i)),
                    None => Poll::Pending {
                        state: "not visible".into(),
                        reason: None,
                    },
                })
            })
            .await;
            let snapshots = match info {
                Ok(Some(i)) if i.tags.get(tag::BAKE_ID).is_some_and(|b| b != bake_id) => {
                    // Adopted by a later bake of the same version: no longer ours to remove.
                    tracing::info!(image = %id, owner = ?i.tags.get(tag::BAKE_ID), "image belongs to another bake now");
                    return Ok(());
                }
                Ok(i) => i.map(|i| i.snapshots).unwrap_or_default(),
                Err(CloudError::Timeout { .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
            aws.deregister_image(id).await?;
            for s in &snapshots {
                aws.delete_snapshot(s).await?;
            }
            Ok(())
        }
        Undo::RestoreParameter {
            region,
            name,
            previous,
        } => {
            let aws = regions.get(region).await;
            match previous {
                Some(v) => aws.put_image_parameter(name, v, true).await,
                None => aws.delete_parameter(name).await,
            }
        }
        Undo::DeleteS3Prefix {
            region,
            bucket,
            prefix,
        } => {
            regions
                .get(region)
                .await
                .delete_prefix(bucket, prefix)
                .await
        }
        Undo::DeleteKeyFile { path } => match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CloudError::NotFound(format!(
                "cannot remove {}: {e}",
                path.display()
            ))),
        },
    }
}

/// Undoes the journal's pending entries in reverse, then sweeps what is tagged with the bake id.
/// Instances tagged with the bake go first (an instance the journal missed would hold the
/// security group). Returns the errors; every entry is attempted even if an earlier one failed.
pub async fn undo_all(
    regions: &mut Regions<'_>,
    journal: &mut Journal,
    failed: bool,
    events: &Events,
    cancel: &Cancel,
) -> Vec<String> {
    let mut errors = Vec::new();
    let regions_seen: Vec<String> = journal
        .entries
        .iter()
        .filter_map(|e| match &e.undo {
            Undo::TerminateInstance { region, .. }
            | Undo::DeleteKeyPair { region, .. }
            | Undo::DeleteSecurityGroup { region, .. }
            | Undo::DeregisterImage { region, .. }
            | Undo::DeleteSnapshot { region, .. }
            | Undo::RestoreParameter { region, .. }
            | Undo::DeleteS3Prefix { region, .. } => Some(region.clone()),
            Undo::DeleteKeyFile { .. } => None,
        })
        .chain(regions.target.regions.first().map(|r| r.to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for region in &regions_seen {
        match tagged(regions, region, &journal.bake_id, false, true).await {
            Ok(found) => apply(regions, journal, found, events, cancel, &mut errors).await,
            Err(e) => errors.push(format!("sweep of {region}: {e}")),
        }
    }
    let pending = journal.pending(failed);
    apply(regions, journal, pending, events, cancel, &mut errors).await;
    for region in &regions_seen {
        match tagged(regions, region, &journal.bake_id, failed, false).await {
            Ok(found) => apply(regions, journal, found, events, cancel, &mut errors).await,
            Err(e) => errors.push(format!("sweep of {region}: {e}")),
        }
    }
    errors
}

/// Carries out `undos` in order, marking matching journal entries done; errors are collected.
async fn apply(
    regions: &mut Regions<'_>,
    journal: &mut Journal,
    undos: Vec<Undo>,
    events: &Events,
    cancel: &Cancel,
    errors: &mut Vec<String>,
) {
    for u in undos {
        match run(regions, &u, &journal.bake_id.clone(), cancel).await {
            Ok(()) => {
                if let Err(e) = journal.mark_done(&u) {
                    errors.push(format!("journal: {e}"));
                }
                events.emit(BakeEvent::Removed {
                    bake_id: journal.bake_id.clone(),
                    resource: u.to_string(),
                });
            }
            Err(e) => {
                tracing::warn!(resource = %u, error = %e, "cleanup failed");
                errors.push(format!("{u}: {e}"));
            }
        }
    }
}

/// What carries this bake's id in `region`: instances only (`instances_only`), or everything
/// else (images and snapshots only when the bake failed).
async fn tagged(
    regions: &mut Regions<'_>,
    region: &str,
    id: &str,
    failed: bool,
    instances_only: bool,
) -> Result<Vec<Undo>, CloudError> {
    let aws = regions.get(region).await.clone();
    let mut found = Vec::new();
    if instances_only {
        for i in aws.instances_tagged(tag::BAKE_ID, id).await? {
            found.push(Undo::TerminateInstance {
                region: region.to_string(),
                id: i.id,
            });
        }
        return Ok(found);
    }
    for g in aws.security_groups_tagged(tag::BAKE_ID, id).await? {
        found.push(Undo::DeleteSecurityGroup {
            region: region.to_string(),
            id: g,
        });
    }
    for k in aws.key_pairs_tagged(tag::BAKE_ID, id).await? {
        found.push(Undo::DeleteKeyPair {
            region: region.to_string(),
            name: k,
        });
    }
    if failed {
        let images = aws
            .describe_images(
                &["self".to_string()],
                &[(&format!("tag:{}", tag::BAKE_ID), vec![id.to_string()])],
            )
            .await?;
        for i in images {
            found.push(Undo::DeregisterImage {
                region: region.to_string(),
                id: i.id,
            });
        }
        for s in aws.snapshots_tagged(tag::BAKE_ID, id).await? {
            found.push(Undo::DeleteSnapshot {
                region: region.to_string(),
                id: s,
            });
        }
    }
    Ok(found)
}

/// `bakery cleanup <bake-id>`: replays a journal (everything not done, as after a failure unless
/// the bake succeeded) and sweeps the bake's tags.
pub async fn cleanup(
    project: &Path,
    target: &Target,
    bake_id: &str,
    events: &Events,
    cancel: &Cancel,
) -> Result<Vec<Undo>, String> {
    let mut journal = Journal::load(project, bake_id)
        .map_err(|e| format!("no journal for bake {bake_id}: {e}"))?;
    // Once the artifact is registered, `cleanup` only removes temporary things.
    let failed = !journal.published();
    let mut regions = Regions::new(target);
    let errors = undo_all(&mut regions, &mut journal, failed, events, cancel).await;
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    let left = journal.pending(failed);
    if left.is_empty() && journal.state == State::Kept {
        journal
            .set_state(State::Failed)
            .map_err(|e| e.to_string())?;
    }
    Ok(left)
}
