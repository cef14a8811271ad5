//! Undoing what a bake created: journal entries in reverse, then a sweep of anything tagged with
//! the bake id that the journal missed (a resource AWS created while the call that would have
//! returned its id was interrupted).

use std::path::Path;
use std::time::Duration;

use super::ledger::{Journal, State, Undo};
use super::sweep::{self, Scope};
use crate::catalog::model::Target;
use crate::cloud::aws::{Aws, Regions};
use crate::cloud::cancel::Cancel;
use crate::cloud::wait::{Poll, Wait};
use crate::cloud::{CloudError, ImageId, InstanceId, SecurityGroupId, Tags};
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
    wait_terminated(aws, id, cancel).await
}

/// Waits until `id` is terminated (or gone); the region's poller batches concurrent waits.
async fn wait_terminated(aws: &Aws, id: &InstanceId, cancel: &Cancel) -> Result<(), CloudError> {
    Wait::polled(
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

/// Carries out one undo for bake `bake_id`. An image is only removed while it carries that id
/// and is not published: a published version is never undone here, whoever asks.
pub async fn run(
    regions: &mut Regions<'_>,
    u: &Undo,
    bake_id: &str,
    cancel: &Cancel,
) -> Result<(), CloudError> {
    match u.region() {
        Some(region) => run_in(regions.get(region).await, u, bake_id, cancel).await,
        None => run_local(u),
    }
}

/// `run` for an undo in the region of `aws`.
pub async fn run_in(aws: &Aws, u: &Undo, bake_id: &str, cancel: &Cancel) -> Result<(), CloudError> {
    let region = &aws.region;
    match u {
        Undo::TerminateInstance { id, .. } => terminate_and_wait(aws, id, cancel).await,
        Undo::DeleteKeyPair { name, .. } => aws.delete_key_pair(name).await,
        Undo::DeleteSecurityGroup { id, .. } => delete_sg(aws, id, cancel).await,
        Undo::DeleteSnapshot { id, .. } => aws.delete_snapshot_released(id, cancel).await,
        Undo::DeregisterImage { id, .. } => {
            // An image we just created may not be visible yet (DescribeImages is eventually
            // consistent); its snapshots are only known once it is.
            let info = Wait::polled(
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
                Ok(Some(i)) if i.tags.contains_key(tag::PUBLISHED) => {
                    tracing::warn!(image = %id, "image is a published version: only prune or revoke remove it");
                    return Ok(());
                }
                Ok(i) => i.map(|i| i.snapshots).unwrap_or_default(),
                Err(CloudError::Timeout { .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
            aws.deregister_image(id).await?;
            for s in &snapshots {
                aws.delete_snapshot_released(s, cancel).await?;
            }
            Ok(())
        }
        Undo::RestoreParameter {
            name,
            previous,
            ours,
            ..
        } => {
            // Only while it still holds what this bake wrote: a newer runner's value stays.
            if let Some(o) = ours {
                if aws.get_parameter(name).await?.as_deref() != Some(o.as_str()) {
                    tracing::info!(parameter = %name, "changed since this bake wrote it: left as is");
                    return Ok(());
                }
                // A parameter naming a published AMI is part of that version.
                if o.starts_with("ami-")
                    && aws
                        .describe_image(&ImageId(o.clone()))
                        .await?
                        .is_some_and(|i| i.tags.contains_key(tag::PUBLISHED))
                {
                    tracing::warn!(parameter = %name, "names a published version: left as is");
                    return Ok(());
                }
            }
            // `latest` goes to the newest published release now, not to what it held when this
            // bake wrote it (that may be older than a version published since).
            let previous = match (name.strip_suffix("/latest"), ours) {
                (Some(base), Some(o)) => {
                    let image = base.rsplit('/').next().unwrap_or_default();
                    let images = aws
                        .describe_images(
                            &["self".to_string()],
                            &[(&format!("tag:{}", tag::IMAGE), vec![image.to_string()])],
                        )
                        .await?;
                    sweep::newest_release(&images, image, o)
                }
                _ => previous.clone(),
            };
            match previous {
                Some(v) => aws.put_image_parameter(name, &v, true).await.map(|_| ()),
                None => {
                    keep_number_taken(aws, name).await?;
                    aws.delete_parameter(name).await
                }
            }
        }
        Undo::DeleteS3Prefix { bucket, prefix, .. } => aws.delete_prefix(bucket, prefix).await,
        Undo::DeleteKeyFile { .. } => run_local(u),
    }
}

/// Before a version's parameter goes (a bake that did not commit, or a sweep after one): its
/// number stays taken in `issued/<major>.<minor>`, as a prune records it. Consumers may have
/// read the parameter while it was there; the number must never name another AMI. A name that
/// is not a version's parameter (`<prefix>/<image>/<version>`) is left alone.
async fn keep_number_taken(aws: &Aws, name: &str) -> Result<(), CloudError> {
    let Some((base, last)) = name.rsplit_once('/') else {
        return Ok(());
    };
    let Ok(v) = semver::Version::parse(last) else {
        return Ok(());
    };
    let Some((prefix, image)) = base.rsplit_once('/') else {
        return Ok(());
    };
    if matches!(image, "inputs" | "meta") {
        return Ok(());
    }
    let issued = crate::registry::aws::issued_param(prefix, image, v.major, v.minor);
    let taken = aws
        .get_parameter(&issued)
        .await?
        .and_then(|n| n.parse::<u64>().ok());
    if taken.is_none_or(|n| n < v.patch) {
        aws.put_string_parameter(&issued, &v.patch.to_string())
            .await?;
    }
    Ok(())
}

/// The undos that touch this machine only.
fn run_local(u: &Undo) -> Result<(), CloudError> {
    match u {
        Undo::DeleteKeyFile { path } => match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CloudError::NotFound(format!(
                "cannot remove {}: {e}",
                path.display()
            ))),
        },
        _ => Ok(()),
    }
}

/// Whether the bake's version was published: the journal says so, or (when the process died or
/// was interrupted between marking the AMIs and writing the journal) one of its AMIs carries
/// `bakery:published`. Once it was, only temporary things may be undone.
pub async fn committed(regions: &mut Regions<'_>, journal: &Journal) -> Result<bool, CloudError> {
    if journal.published() {
        return Ok(true);
    }
    for e in &journal.entries {
        if let Undo::DeregisterImage { region, id } = &e.undo {
            let aws = regions.get(region).await;
            if aws
                .describe_image(id)
                .await?
                .is_some_and(|i| i.tags.contains_key(tag::PUBLISHED))
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The tags of the commit, on every copy and its snapshots: `bakery:published` now, the lease
/// ended (`bakery:expires` = `never`), and `extra` (how the version was tested).
pub(crate) fn commit_tags(extra: Option<(String, String)>) -> Tags {
    let mut t = Tags::new();
    t.insert(
        tag::PUBLISHED.into(),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    );
    t.insert(tag::EXPIRES.into(), tag::NEVER.into());
    t.extend(extra);
    t
}

/// Finishes a commit that a kill or an error cut short: every AMI of the journal that is still
/// this bake's, and its snapshots, get the commit's tags (the version was whole when the commit
/// began).
pub async fn finish_commit(regions: &mut Regions<'_>, journal: &Journal) -> Result<(), CloudError> {
    let published = commit_tags(None);
    for e in &journal.entries {
        if let Undo::DeregisterImage { region, id } = &e.undo {
            let aws = regions.get(region).await;
            if let Some(i) = aws.describe_image(id).await? {
                if i.tags.get(tag::BAKE_ID) == Some(&journal.bake_id)
                    && !i.tags.contains_key(tag::PUBLISHED)
                {
                    let mut ids = vec![id.to_string()];
                    ids.extend(i.snapshots.iter().map(|s| s.to_string()));
                    aws.tag_resources(&ids, &published).await?;
                }
            }
        }
    }
    Ok(())
}

/// Where a bake's leftovers can be: the regions its journal names (temporary things live only
/// there), and after a failure every region of the target too (an AMI copy whose answer was
/// lost is in no journal).
fn regions_of(regions: &Regions<'_>, journal: &Journal, failed: bool) -> Vec<String> {
    let target = regions.target.regions.iter().map(|r| r.to_string());
    journal
        .entries
        .iter()
        .filter_map(|e| e.undo.region().map(str::to_string))
        .chain(target.take(if failed { usize::MAX } else { 1 }))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Scans `regions_list` for what carries `bake` (or any bake) within `scope`.
pub async fn scan(
    regions: &mut Regions<'_>,
    regions_list: &[String],
    bake: Option<&str>,
    scope: Scope,
) -> Result<sweep::Scan, String> {
    let mut all = sweep::Scan::default();
    let target = regions.target;
    for region in regions_list {
        let aws = regions.get(region).await;
        let s = sweep::scan_region(aws, target, bake, scope)
            .await
            .map_err(|e| format!("sweep of {region}: {e}"))?;
        all.merge(s);
    }
    Ok(all)
}

/// Undoes the journal's pending entries in reverse, then (with `sweep`) sweeps every region of
/// the target for what carries the bake id. Instances tagged with the bake go first (an instance
/// the journal missed would hold the security group). `failed` asks for the artifact to go too,
/// which is refused once the version was published (see `committed`). Returns the errors; every
/// entry is attempted even if an earlier one failed.
///
/// `sweep` is false only for the process that ran a bake to success: every create it made
/// returned and was journaled before the next call (a create whose answer was lost fails the
/// bake, and a failure sweeps), so the journal is complete and a sweep would find nothing. Any
/// other caller (a failure, an interrupt, `bakery cleanup` on another machine) sweeps.
pub async fn undo_all(
    regions: &mut Regions<'_>,
    journal: &mut Journal,
    failed: bool,
    sweep: bool,
    events: &Events,
    cancel: &Cancel,
) -> Vec<String> {
    let mut errors = Vec::new();
    let failed = failed
        && match committed(regions, journal).await {
            Ok(c) => !c,
            Err(e) => {
                // Unknown: keep the artifact (a leftover AMI is cheaper than an undone version).
                errors.push(format!(
                    "cannot tell whether the version was published: {e}"
                ));
                false
            }
        };
    let bake_id = journal.bake_id.clone();
    let in_regions = regions_of(regions, journal, failed);
    // After a failure an instance may be missing from the journal (killed between RunInstances
    // and the journal write), and it would hold the security group: look for instances first.
    // After a success every instance is in the journal.
    let instances = match failed {
        true => scan(regions, &in_regions, Some(&bake_id), Scope::Instances).await,
        false => Ok(sweep::Scan::default()),
    };
    match instances {
        Ok(s) => {
            apply(
                regions,
                journal,
                found_undos(s),
                events,
                cancel,
                &mut errors,
            )
            .await
        }
        Err(e) => errors.push(e),
    }
    let pending = journal.pending(failed);
    apply(regions, journal, pending, events, cancel, &mut errors).await;
    if !sweep {
        return errors;
    }
    let scope = if failed { Scope::All } else { Scope::Temporary };
    match scan(regions, &in_regions, Some(&bake_id), scope).await {
        Ok(s) => {
            apply(
                regions,
                journal,
                found_undos(s),
                events,
                cancel,
                &mut errors,
            )
            .await
        }
        Err(e) => errors.push(e),
    }
    errors
}

/// The undos of a scan, in the order they must run: instances (they hold groups), parameters
/// (nothing may name an AMI about to go), groups, key pairs, images, snapshots, objects.
pub fn found_undos(s: sweep::Scan) -> Vec<Undo> {
    let mut v: Vec<Undo> = s.found().into_iter().map(|f| f.undo).collect();
    v.sort_by_key(Undo::order);
    v.dedup();
    v
}

/// Carries out `undos` (given in `Undo::order`), marking matching journal entries done as each
/// finishes; errors are collected. Two lanes run at once: instances are terminated (all at the
/// same time) and then their security groups go, the moment the instances are gone; meanwhile
/// everything else (parameters, key pairs, images, snapshots, objects, files) goes in order.
async fn apply(
    regions: &mut Regions<'_>,
    journal: &mut Journal,
    undos: Vec<Undo>,
    events: &Events,
    cancel: &Cancel,
    errors: &mut Vec<String>,
) {
    let mut clients = std::collections::BTreeMap::new();
    for u in &undos {
        if let Some(r) = u.region() {
            if !clients.contains_key(r) {
                clients.insert(r.to_string(), regions.get(r).await.clone());
            }
        }
    }
    let bake_id = journal.bake_id.clone();
    // Instances whose TerminateInstances was already sent (by the bake, or below in one call
    // per region for all of them): their undo only waits.
    let sent = std::sync::Mutex::new(journal.terminating.clone());
    let shared = std::sync::Mutex::new((journal, errors));
    let one = |u: Undo| {
        let (clients, bake_id, shared, sent) = (&clients, &bake_id, &shared, &sent);
        async move {
            let already = match &u {
                Undo::TerminateInstance { id, .. } => sent.lock().is_ok_and(|s| s.contains(id)),
                _ => false,
            };
            let r = match (u.region().and_then(|r| clients.get(r)), &u) {
                (Some(aws), Undo::TerminateInstance { id, .. }) if already => {
                    wait_terminated(aws, id, cancel).await
                }
                (Some(aws), _) => run_in(aws, &u, bake_id, cancel).await,
                (None, _) => run_local(&u),
            };
            let Ok(mut guard) = shared.lock() else { return };
            let (journal, errors) = &mut *guard;
            match r {
                Ok(()) => {
                    if let Err(e) = journal.mark_done(&u) {
                        errors.push(format!("journal: {e}"));
                    }
                    events.emit(BakeEvent::Removed {
                        bake_id: bake_id.clone(),
                        resource: u.to_string(),
                    });
                }
                Err(e) => {
                    tracing::warn!(resource = %u, error = %e, "cleanup failed");
                    errors.push(format!("{u}: {e}"));
                }
            }
        }
    };
    let (instances, rest): (Vec<Undo>, Vec<Undo>) = undos.into_iter().partition(|u| {
        matches!(
            u,
            Undo::TerminateInstance { .. } | Undo::DeleteSecurityGroup { .. }
        )
    });
    let (terminate, groups): (Vec<Undo>, Vec<Undo>) = instances
        .into_iter()
        .partition(|u| matches!(u, Undo::TerminateInstance { .. }));
    let first_lane = async {
        // One TerminateInstances per region for all its instances (the call takes many ids; it
        // fails as a whole for an id it does not know, and then each goes on its own).
        let mut by_region: std::collections::BTreeMap<&str, Vec<InstanceId>> = Default::default();
        for u in &terminate {
            if let Undo::TerminateInstance { region, id } = u {
                if sent.lock().is_ok_and(|s| s.contains(id)) {
                    continue;
                }
                by_region
                    .entry(region.as_str())
                    .or_default()
                    .push(id.clone());
            }
        }
        for (region, ids) in by_region.into_iter().filter(|(_, ids)| ids.len() > 1) {
            let Some(aws) = clients.get(region) else {
                continue;
            };
            match aws.terminate_instances(&ids).await {
                Ok(()) => {
                    if let Ok(mut s) = sent.lock() {
                        s.extend(ids);
                    }
                }
                Err(e) => tracing::debug!(region, error = %e, "terminating together; one by one"),
            }
        }
        futures_util::future::join_all(terminate.into_iter().map(one)).await;
        for u in groups {
            one(u).await;
        }
    };
    let second_lane = async {
        for u in rest {
            one(u).await;
        }
    };
    tokio::join!(first_lane, second_lane);
}

/// `bakery cleanup <bake-id>` with the journal: replays it (everything not done, as after a
/// failure unless the version was published) and sweeps the bake's tags in every region.
pub async fn cleanup(
    project: &Path,
    target: &Target,
    bake_id: &str,
    events: &Events,
    cancel: &Cancel,
) -> Result<Vec<Undo>, String> {
    let mut journal = Journal::load(project, bake_id)
        .map_err(|e| format!("no journal for bake {bake_id}: {e}"))?;
    let mut regions = Regions::new(target);
    let published = committed(&mut regions, &journal)
        .await
        .map_err(|e| format!("cannot tell whether bake {bake_id} published: {e}"))?;
    if published {
        finish_commit(&mut regions, &journal)
            .await
            .map_err(|e| format!("finishing the commit of bake {bake_id}: {e}"))?;
        if !journal.published() {
            journal
                .set_state(State::Published)
                .map_err(|e| e.to_string())?;
        }
    }
    let failed = !published;
    let errors = undo_all(&mut regions, &mut journal, failed, true, events, cancel).await;
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
