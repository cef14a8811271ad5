//! Retention: which versions to deregister, and why each survivor was kept.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use semver::Version;
use serde::Serialize;

use super::aws::{version_param, Registry, VersionView};
use crate::cloud::wait::{Poll, Wait};
use crate::cloud::{CloudError, ImageId};

/// What retention decided for one version.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub version: Version,
    pub pruned: bool,
    /// Why it was kept (empty when pruned).
    pub kept_because: Vec<String>,
    /// What its snapshots cost a month (what pruning it saves), in the target's price table's
    /// currency.
    pub storage_per_month: f64,
}

/// Facts about the versions that retention weighs (gathered from AWS, decided purely).
#[derive(Debug, Default)]
pub struct Usage {
    /// Version -> channels pointing at it.
    pub channels: BTreeMap<Version, Vec<String>>,
    /// Version -> instances (any state but terminated) launched from one of its AMIs.
    pub instances: BTreeMap<Version, Vec<String>>,
    /// Version -> launch template versions (default or latest) naming one of its AMIs.
    pub templates: BTreeMap<Version, Vec<String>>,
    /// The version `latest` names.
    pub latest: Option<Version>,
    /// Version -> what consumer accounts launch from it (instances, launch templates, launch
    /// configurations, Auto Scaling groups), each saying which account and region.
    pub consumers: BTreeMap<Version, Vec<String>>,
}

/// Pure decision: keep the newest `keep`, the newest always, anything a channel, instance or
/// launch template uses, and (with `older_than`) anything younger than that.
pub fn decide(
    versions: &[(Version, SystemTime)],
    usage: &Usage,
    keep: usize,
    older_than: Option<Duration>,
    now: SystemTime,
) -> Vec<Decision> {
    let mut sorted: Vec<&(Version, SystemTime)> = versions.iter().collect();
    sorted.sort_by(|a, b| b.0.cmp(&a.0));
    sorted
        .iter()
        .enumerate()
        .map(|(i, (v, created))| {
            let mut why = Vec::new();
            if i == 0 {
                why.push("the newest version".to_string());
            } else if i < keep {
                why.push(format!("one of the newest {keep}"));
            }
            if usage.latest.as_ref() == Some(v) {
                why.push("named by latest".to_string());
            }
            if let Some(c) = usage.channels.get(v) {
                why.push(format!("channel {}", c.join(", ")));
            }
            if let Some(x) = usage.instances.get(v) {
                why.push(format!("used by instance {}", x.join(", ")));
            }
            if let Some(t) = usage.templates.get(v) {
                why.push(format!("named by launch template {}", t.join(", ")));
            }
            if let Some(c) = usage.consumers.get(v) {
                why.push(format!("used by {}", c.join(", ")));
            }
            if let Some(d) = older_than {
                if now.duration_since(*created).unwrap_or_default() < d {
                    why.push(format!("younger than {}", humantime::format_duration(d)));
                }
            }
            Decision {
                version: v.clone(),
                pruned: why.is_empty(),
                kept_because: why,
                storage_per_month: 0.0,
            }
        })
        .collect()
}

/// Whether retention keeps all of `versions` versions whatever uses them (`decide` keeps the
/// newest `keep`, and the newest always), so a caller may skip gathering what uses them.
pub fn keeps_all(versions: usize, keep: usize) -> bool {
    versions <= keep.max(1)
}

fn created(v: &VersionView) -> SystemTime {
    humantime::parse_rfc3339_weak(v.created().trim_end_matches('Z'))
        .unwrap_or_else(|_| SystemTime::now())
}

/// How long DisableFastLaunch may take to clean up before prune gives up on those AMIs (they
/// stay registered; a later prune finishes).
const FAST_LAUNCH_DISABLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Turns EC2 Fast Launch off on those of `amis` (one region) that have it, and waits until
/// EC2 no longer lists them: AWS does not document what deregistering an AMI with Fast Launch
/// on does to its pre-provisioned snapshots, so they go first. One Describe per look for all.
async fn disable_fast_launch(
    aws: &crate::cloud::aws::Aws,
    amis: &[ImageId],
    cancel: &crate::cloud::cancel::Cancel,
) -> Result<(), CloudError> {
    let on = aws.fast_launch_states(amis).await?;
    if on.is_empty() {
        return Ok(());
    }
    for (ami, state) in &on {
        if state != "disabling" {
            aws.disable_fast_launch(ami).await?;
        }
    }
    let wanted: Vec<ImageId> = on.keys().cloned().collect();
    let names: Vec<String> = wanted.iter().map(|a| a.to_string()).collect();
    let wait = Wait {
        // Disabling cleans up pre-provisioned snapshots: seconds on a quiet AMI, minutes on a
        // busy one; look soon, then back off.
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(10),
        ..Wait::new(
            format!("Fast Launch of {} in {}", names.join(", "), aws.region),
            "disabled (they stay registered until it is; prune again later)",
            FAST_LAUNCH_DISABLE_TIMEOUT,
        )
    };
    wait.until(cancel, || async {
        let left = aws.fast_launch_states(&wanted).await?;
        Ok(
            match left.iter().find(|(_, s)| s.as_str() == "disabling-failed") {
                Some((ami, state)) => Poll::Failed {
                    state: state.clone(),
                    reason: Some(format!("{ami} could not be disabled: it stays registered")),
                },
                None if left.is_empty() => Poll::Ready(()),
                None => Poll::Pending {
                    state: left.values().next().cloned().unwrap_or_default(),
                    reason: None,
                },
            },
        )
    })
    .await
}

/// Applies retention to `image` in every region of the target (`dry_run`: decide only).
pub async fn prune(
    reg: &mut Registry<'_>,
    image: &str,
    keep: usize,
    older_than: Option<Duration>,
    dry_run: bool,
) -> Result<Vec<Decision>, CloudError> {
    let all = reg.versions(image, None).await?;
    prune_listed(reg, image, all, keep, older_than, dry_run).await
}

/// `prune` of the versions `all` (the registry's listing, `Registry::versions`), for a caller
/// that has just read it.
pub async fn prune_listed(
    reg: &mut Registry<'_>,
    image: &str,
    all: Vec<VersionView>,
    keep: usize,
    older_than: Option<Duration>,
    dry_run: bool,
) -> Result<Vec<Decision>, CloudError> {
    let mut usage = Usage::default();
    // Read once: retention weighs them, and the consumers' mirrors keep them after the prune.
    let channels = reg.channels(image).await?;
    for (ch, v) in &channels {
        usage
            .channels
            .entry(v.clone())
            .or_default()
            .push(ch.clone());
    }
    let regions: Vec<String> = reg.target.regions.iter().map(|r| r.to_string()).collect();
    // The number issued for each major.minor listed, read with `latest` (one call): a prune
    // that removes the highest number of a line records it first (below).
    let lines: BTreeSet<(u64, u64)> = all
        .iter()
        .map(|v| (v.version.major, v.version.minor))
        .collect();
    let issued_name = |(major, minor): (u64, u64)| {
        super::aws::issued_param(&reg.target.ssm_prefix, image, major, minor)
    };
    let mut issued: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    if let Some(primary) = regions.first() {
        let aws = reg.regions.get(primary).await.clone();
        let latest_name = super::aws::latest_param(&reg.target.ssm_prefix, image);
        let mut names = vec![latest_name.clone()];
        names.extend(lines.iter().map(|l| issued_name(*l)));
        let read = aws.get_parameters(&names).await?;
        for l in &lines {
            if let Some(n) = read.get(&issued_name(*l)).and_then(|v| v.parse().ok()) {
                issued.insert(*l, n);
            }
        }
        let latest = read.get(&latest_name).cloned();
        usage.latest = all
            .iter()
            .find(|v| {
                v.amis
                    .get(primary)
                    .is_some_and(|i| Some(i.id.to_string()) == latest)
            })
            .map(|v| v.version.clone());
    }
    for region in &regions {
        let aws = reg.regions.get(region).await.clone();
        let templates = aws.launch_template_images().await?;
        let amis: Vec<ImageId> = all
            .iter()
            .filter_map(|v| v.amis.get(region).map(|a| a.id.clone()))
            .collect();
        let running = aws.instances_using(&amis).await?;
        for v in &all {
            let Some(ami) = v.amis.get(region) else {
                continue;
            };
            for (_, i) in running.iter().filter(|(a, _)| a == &ami.id) {
                usage
                    .instances
                    .entry(v.version.clone())
                    .or_default()
                    .push(format!("{i} ({region})"));
            }
            for (t, _) in templates.iter().filter(|(_, id)| id == &ami.id) {
                usage
                    .templates
                    .entry(v.version.clone())
                    .or_default()
                    .push(format!("{t} ({region})"));
            }
        }
    }
    // What production launches is in the consumer accounts: every one is asked, and one that
    // cannot be stops the prune (keeping everything) before anything is decided.
    let mut consumers = crate::cloud::aws::consumer::Consumers::new();
    usage.consumers = super::consumers::usage(reg, &mut consumers, &all).await?;
    let facts: Vec<(Version, SystemTime)> = all
        .iter()
        .map(|v| (v.version.clone(), created(v)))
        .collect();
    let mut decisions = decide(&facts, &usage, keep.max(1), older_than, SystemTime::now());
    for d in &mut decisions {
        if let Some(v) = all.iter().find(|v| v.version == d.version) {
            d.storage_per_month = v.storage_per_month(&reg.target.prices);
        }
    }
    if dry_run {
        return Ok(decisions);
    }
    let prefix = reg.target.ssm_prefix.clone();
    let pruned: Vec<&VersionView> = decisions
        .iter()
        .filter(|d| d.pruned)
        .filter_map(|d| all.iter().find(|v| v.version == d.version))
        .collect();
    // A number stays taken once its version is gone: where the highest number of a line goes,
    // `issued` records it first (publish does not write it; until a prune, the listing and the
    // version's own parameter keep the number taken). Written before anything is removed, so
    // an interrupt at any point leaves no number free.
    if let Some(primary) = regions.first() {
        for line in &lines {
            let top = all
                .iter()
                .filter(|v| (v.version.major, v.version.minor) == *line)
                .map(|v| &v.version)
                .max();
            let Some(top) = top.filter(|t| pruned.iter().any(|p| &p.version == *t)) else {
                continue;
            };
            if issued.get(line).is_some_and(|n| *n >= top.patch) {
                continue;
            }
            let aws = reg.regions.get(primary).await;
            aws.put_string_parameter(&issued_name(*line), &top.patch.to_string())
                .await?;
        }
    }
    // Registry first: nothing names a pruned version any more (its parameter, `latest`) before
    // its AMIs go, so a failure halfway never leaves a parameter naming a removed AMI. One
    // DeleteParameters per region for the versions' parameters and their recorded inputs.
    let mut doomed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in &pruned {
        for region in v.amis.keys() {
            let names = doomed.entry(region.clone()).or_default();
            names.push(version_param(&prefix, image, &v.version));
            names.push(super::aws::inputs_param(&prefix, image, &v.version));
        }
    }
    for (region, names) in &doomed {
        reg.regions
            .get(region)
            .await
            .delete_parameters(names)
            .await?;
    }
    // `latest` moves only where it named a pruned version (retention keeps the one it names in
    // the primary region; another runner may be about to move it, which must not be undone).
    let mut names_pruned = false;
    for v in &pruned {
        for (region, ami) in &v.amis {
            let aws = reg.regions.get(region).await;
            let latest = aws
                .get_parameter(&super::aws::latest_param(&prefix, image))
                .await?;
            names_pruned |= latest.as_deref() == Some(ami.id.as_str());
        }
    }
    if names_pruned {
        reg.refresh_latest(image).await?;
    }
    // The consumers' mirrors next: no consumer keeps a parameter naming an AMI about to go.
    let kept: Vec<VersionView> = all
        .iter()
        .filter(|v| !pruned.iter().any(|p| p.version == v.version))
        .cloned()
        .collect();
    let synced =
        super::consumers::sync_views(reg, &mut consumers, image, &kept, &channels, false).await;
    if let Some(f) = synced.iter().find(|s| s.failed()) {
        return Err(CloudError::NotFound(format!(
            "pruning {image}: the mirror in consumer account {} ({}) could not be updated ({}): no AMI was deregistered; run the same prune again",
            f.account,
            f.region,
            f.error.as_deref().unwrap_or_default()
        )));
    }
    let cancel = crate::cloud::cancel::Cancel::new();
    // EC2 Fast Launch off first (its pre-provisioned snapshots go with it), then the AMIs and
    // snapshots: every one is tried; snapshots wait out `InUse`.
    let mut errors = Vec::new();
    // Fast Launch is for Windows AMIs: a Linux image's prune asks nothing more.
    let by_region = super::aws::windows_amis(pruned.iter().copied());
    let mut fast_launch_on: BTreeSet<ImageId> = BTreeSet::new();
    for (region, amis) in &by_region {
        let aws = reg.regions.get(region).await;
        if let Err(e) = disable_fast_launch(aws, amis, &cancel).await {
            errors.push(e.to_string());
            fast_launch_on.extend(amis.iter().cloned());
        }
    }
    for v in &pruned {
        for (region, ami) in &v.amis {
            if fast_launch_on.contains(&ami.id) {
                continue;
            }
            let aws = reg.regions.get(region).await;
            if let Err(e) = aws.deregister_image(&ami.id).await {
                errors.push(e.to_string());
                continue;
            }
            for s in &ami.snapshots {
                if let Err(e) = aws.delete_snapshot_released(s, &cancel).await {
                    errors.push(e.to_string());
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(CloudError::NotFound(format!(
            "pruning {image}: {}; run the same prune again to finish",
            errors.join("; ")
        )));
    }
    Ok(decisions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn keeps_all_agrees_with_decide() {
        let now = SystemTime::now();
        for n in 0..6usize {
            let vs: Vec<(Version, SystemTime)> =
                (0..n).map(|i| (v(&format!("1.0.{i}")), now)).collect();
            for keep in 0..5 {
                let none_pruned = decide(&vs, &Usage::default(), keep.max(1), None, now)
                    .iter()
                    .all(|d| !d.pruned);
                assert_eq!(keeps_all(n, keep), none_pruned, "{n} versions, keep {keep}");
            }
        }
    }

    #[test]
    fn survivors_say_why() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let vs: Vec<(Version, SystemTime)> = (0..6)
            .map(|i| (v(&format!("1.0.{i}")), now - day * (60 - i * 10)))
            .collect();
        let mut usage = Usage::default();
        usage.channels.insert(v("1.0.0"), vec!["stable".into()]);
        usage
            .instances
            .insert(v("1.0.1"), vec!["i-1 (us-east-1)".into()]);
        usage
            .templates
            .insert(v("1.0.2"), vec!["agents v3 (us-east-1)".into()]);
        let d = decide(&vs, &usage, 2, None, now);
        let pruned: Vec<String> = d
            .iter()
            .filter(|d| d.pruned)
            .map(|d| d.version.to_string())
            .collect();
        assert_eq!(pruned, ["1.0.3"]);
        let why = |x: &str| {
            d.iter()
                .find(|d| d.version == v(x))
                .unwrap()
                .kept_because
                .clone()
        };
        assert_eq!(why("1.0.5"), ["the newest version"]);
        assert_eq!(why("1.0.4"), ["one of the newest 2"]);
        assert_eq!(
            why("1.0.2"),
            ["named by launch template agents v3 (us-east-1)"]
        );
        assert_eq!(why("1.0.1"), ["used by instance i-1 (us-east-1)"]);
        assert_eq!(why("1.0.0"), ["channel stable"]);
        // Only versions older than 35 days may go: 1.0.3 is 30 days old.
        let d = decide(&vs, &usage, 1, Some(day * 35), now);
        assert!(
            d.iter().all(|d| !d.pruned || d.version < v("1.0.3")),
            "{d:?}"
        );
        assert!(d
            .iter()
            .find(|d| d.version == v("1.0.4"))
            .unwrap()
            .kept_because
            .iter()
            .any(|w| w.starts_with("younger than")));
    }
}
