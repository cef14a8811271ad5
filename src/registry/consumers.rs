//! Consumer accounts: the mirror brought up to date in each consumer account and region (after
//! a publish, promote, rollback, revoke or prune, and by `bakery sync`), and what the consumers
//! launch from the versions (for retention). A consumer that cannot be reached fails alone.

use std::collections::{BTreeMap, BTreeSet};

use semver::Version;
use serde::Serialize;

use super::aws::{Registry, VersionView};
use super::mirror;
use crate::catalog::model::Consumer;
use crate::cloud::aws::consumer::Consumers;
use crate::cloud::aws::Aws;
use crate::cloud::{CloudError, ImageId};

/// What a sync did in one consumer account and region.
#[derive(Debug, Clone, Serialize)]
pub struct Synced {
    pub account: String,
    pub region: String,
    /// Parameters written and removed; absent when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<usize>,
    /// AMIs shared with the consumer by this sync (they were not yet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<String>,
    /// Why it failed (the role could not be assumed, access denied, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Synced {
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// Brings every consumer's mirror of `image` up to date with the registry as it is now.
/// With `full`, every mirror is read and compared whatever its digest says (`bakery sync`, the
/// repair: a parameter removed by hand comes back); otherwise a mirror whose digest matches
/// is taken as up to date.
pub async fn sync(
    reg: &mut Registry<'_>,
    consumers: &mut Consumers,
    image: &str,
    full: bool,
) -> Result<Vec<Synced>, CloudError> {
    if reg.target.consumers.is_empty() {
        return Ok(Vec::new());
    }
    let all = reg.versions(image, None).await?;
    let channels = reg.channels(image).await?;
    Ok(sync_views(reg, consumers, image, &all, &channels, full).await)
}

/// `sync` to a given state of the registry (prune passes it without the versions it removes).
pub async fn sync_views(
    reg: &mut Registry<'_>,
    consumers: &mut Consumers,
    image: &str,
    versions: &[VersionView],
    channels: &BTreeMap<String, Version>,
    full: bool,
) -> Vec<Synced> {
    let mut out = Vec::new();
    for c in reg.target.consumers.clone() {
        for region in c.regions.iter().map(|r| r.to_string()) {
            let owner = reg.regions.get(&region).await.clone();
            let mut s = Synced {
                account: c.account.clone(),
                region: region.clone(),
                written: None,
                removed: None,
                shared: Vec::new(),
                error: None,
            };
            let there = match consumers.get(reg.target, &c, &region).await {
                Ok(a) => a.clone(),
                Err(e) => {
                    s.error = Some(e.to_string());
                    out.push(s);
                    continue;
                }
            };
            let state = State {
                versions,
                channels,
                full,
            };
            match sync_one(&owner, &there, &c, image, &state, &mut s).await {
                Ok((w, r)) => {
                    s.written = Some(w);
                    s.removed = Some(r);
                }
                Err(e) => s.error = Some(e.to_string()),
            }
            out.push(s);
        }
    }
    out
}

/// The registry state a sync brings the mirrors to.
struct State<'a> {
    versions: &'a [VersionView],
    channels: &'a BTreeMap<String, Version>,
    full: bool,
}

async fn sync_one(
    owner: &Aws,
    there: &Aws,
    c: &Consumer,
    image: &str,
    state: &State<'_>,
    s: &mut Synced,
) -> Result<(usize, usize), CloudError> {
    let versions = state.versions;
    let region = owner.region.to_string();
    let desired = mirror::desired(&c.ssm_prefix, image, &region, versions, state.channels);
    let digest = mirror::digest(&desired);
    let digest_name = mirror::digest_param(&c.ssm_prefix, image);
    // Never a parameter naming an AMI the consumer cannot launch: what it cannot see yet (a
    // version published before it became a consumer) is shared first, then looked at again.
    let amis: Vec<&crate::cloud::ImageInfo> = versions
        .iter()
        .filter_map(|v| v.amis.get(&region))
        .collect();
    let ids: Vec<String> = amis.iter().map(|i| i.id.to_string()).collect();
    let seen: BTreeSet<ImageId> = there.existing_images(&ids).await?.into_iter().collect();
    let unseen: Vec<&&crate::cloud::ImageInfo> =
        amis.iter().filter(|i| !seen.contains(&i.id)).collect();
    if !unseen.is_empty() {
        let account = std::slice::from_ref(&c.account);
        for i in &unseen {
            owner.share_image(&i.id, account, &[], &[]).await?;
            for snap in &i.snapshots {
                owner.share_snapshot(snap, account).await?;
            }
            s.shared.push(i.id.to_string());
        }
        let ids: Vec<String> = unseen.iter().map(|i| i.id.to_string()).collect();
        let now: BTreeSet<ImageId> = there.existing_images(&ids).await?.into_iter().collect();
        if let Some(i) = unseen.iter().find(|i| !now.contains(&i.id)) {
            return Err(CloudError::NotFound(format!(
                "account {} cannot see {} in {region} even after it was shared with it",
                c.account, i.id
            )));
        }
    }
    if !state.full
        && s.shared.is_empty()
        && there.get_parameter(&digest_name).await?.as_deref() == Some(digest.as_str())
    {
        return Ok((0, 0));
    }
    let current: BTreeMap<String, String> = there
        .parameters_by_path(&format!("{}/{image}", c.ssm_prefix))
        .await?
        .into_iter()
        .collect();
    let (puts, deletes) = mirror::changes(&c.ssm_prefix, image, &desired, &current);
    // Versions and their metadata before the pointers that name them; removals last.
    let (pointers, entries): (Vec<_>, Vec<_>) = puts.iter().partition(|(n, _)| {
        n.ends_with("/latest") || n.contains("/channels/") || n.contains("/channel-versions/")
    });
    for (name, v) in entries.into_iter().chain(pointers) {
        if v.ami {
            there.put_image_parameter(name, &v.value, true).await?;
        } else {
            there.put_string_parameter(name, &v.value).await?;
        }
    }
    for name in &deletes {
        there.delete_parameter(name).await?;
    }
    // Last: only a mirror written in full carries the digest of what it holds.
    if current.get(&digest_name) != Some(&digest) {
        there.put_string_parameter(&digest_name, &digest).await?;
    }
    Ok((puts.len(), deletes.len()))
}

/// What the consumers launch from `versions`: version -> the resource and where (instances in
/// any state but terminated, any version of a launch template, launch configurations and the
/// Auto Scaling groups that use either). Calls are per consumer and region, not per AMI. A
/// consumer that cannot be asked is an error: retention must then keep everything.
pub async fn usage(
    reg: &mut Registry<'_>,
    consumers: &mut Consumers,
    versions: &[VersionView],
) -> Result<BTreeMap<Version, Vec<String>>, CloudError> {
    let mut out: BTreeMap<Version, Vec<String>> = BTreeMap::new();
    for c in reg.target.consumers.clone() {
        for region in c.regions.iter().map(|r| r.to_string()) {
            let asked = async {
                let there = consumers.get(reg.target, &c, &region).await?.clone();
                let amis: Vec<ImageId> = versions
                    .iter()
                    .filter_map(|v| v.amis.get(&region).map(|i| i.id.clone()))
                    .collect();
                let instances = there.instances_using(&amis).await?;
                let templates = there.launch_template_images().await?;
                let scaling = there.auto_scaling().await?;
                Ok::<_, CloudError>((instances, templates, scaling))
            }
            .await;
            let (instances, templates, scaling) = asked.map_err(|e| {
                CloudError::NotFound(format!(
                    "consumer account {} in {region} cannot be asked what it launches ({e}): nothing is pruned while a consumer cannot be asked",
                    c.account
                ))
            })?;
            let at = format!("account {}, {region}", c.account);
            for v in versions {
                let Some(ami) = v.amis.get(&region) else {
                    continue;
                };
                let uses = out.entry(v.version.clone()).or_default();
                for (_, i) in instances.iter().filter(|(a, _)| a == &ami.id) {
                    uses.push(format!("instance {i} ({at})"));
                }
                let mut named: Vec<String> = Vec::new();
                for (t, _) in templates.iter().filter(|(_, a)| a == &ami.id) {
                    uses.push(format!("launch template {t} ({at})"));
                    named.push(t.split(" v").next().unwrap_or(t).to_string());
                }
                for (lc, _) in scaling.configurations.iter().filter(|(_, a)| a == &ami.id) {
                    uses.push(format!("launch configuration {lc} ({at})"));
                    named.push(lc.clone());
                }
                for (g, from) in &scaling.groups {
                    if named.contains(from) {
                        uses.push(format!("auto scaling group {g} ({at})"));
                    }
                }
            }
        }
    }
    out.retain(|_, v| !v.is_empty());
    Ok(out)
}
