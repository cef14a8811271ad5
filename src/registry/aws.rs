//! The registry in AWS: versions are AMIs tagged `bakery:image`/`bakery:version` (one per
//! region), channels are SSM parameters. Reads merge the target's regions.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use semver::Version;

use super::tag;
use crate::catalog::model::{ParentReq, Target};
use crate::cloud::aws::{Aws, Regions};
use crate::cloud::{CloudError, ImageId, ImageInfo};

/// Values of the registry's pointers (`latest`, channel versions) as read: region ->
/// parameter name -> value (an unset parameter is absent).
pub type Pointers = BTreeMap<String, BTreeMap<String, String>>;
/// The SSM version of each pointer read (how many writes made the value): region -> parameter
/// name -> version. A write that makes the next version after the one read was the only write
/// since that read.
pub type PointerVersions = BTreeMap<String, BTreeMap<String, i64>>;

/// A registered version of an image in one region.
#[derive(Debug, Clone)]
pub struct Registered {
    pub version: Version,
    pub image: ImageInfo,
    pub revoked: Option<String>,
    /// Publish finished (parameters written and read back); until then the AMI is not a
    /// version anyone may resolve, only a number that is taken.
    pub published: bool,
}

/// Every registered version of `image` in one region (AMIs of this account tagged with it).
pub async fn versions(aws: &Aws, image: &str) -> Result<Vec<Registered>, CloudError> {
    let images = aws
        .describe_images(
            &["self".to_string()],
            &[(&format!("tag:{}", tag::IMAGE), vec![image.to_string()])],
        )
        .await?;
    let mut out: Vec<Registered> = images
        .into_iter()
        .filter(|i| i.tags.get(tag::IMAGE).map(String::as_str) == Some(image))
        .filter_map(|i| {
            let version = Version::parse(i.tags.get(tag::VERSION)?).ok()?;
            let revoked = i.tags.get(tag::REVOKED).cloned();
            let published = i.tags.contains_key(tag::PUBLISHED);
            Some(Registered {
                version,
                image: i,
                revoked,
                published,
            })
        })
        .collect();
    out.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(out)
}

/// Parameter names of the registry (the README's "Pinning an image" documents them).
pub fn version_param(prefix: &str, image: &str, v: &Version) -> String {
    format!("{prefix}/{image}/{v}")
}
pub fn latest_param(prefix: &str, image: &str) -> String {
    format!("{prefix}/{image}/latest")
}
pub fn channel_param(prefix: &str, image: &str, channel: &str) -> String {
    format!("{prefix}/{image}/channels/{channel}")
}
/// The highest patch ever issued for a major.minor (so a pruned number is never reused).
pub fn issued_param(prefix: &str, image: &str, major: u64, minor: u64) -> String {
    format!("{prefix}/{image}/issued/{major}.{minor}")
}
/// What a version published before the `bakery:inputs` tags was baked from: fingerprint input
/// label -> short hash (for `plan`'s reasons). Read as a fallback, removed by prune and sweep.
pub fn inputs_param(prefix: &str, image: &str, v: &Version) -> String {
    format!("{prefix}/{image}/inputs/{v}")
}
/// Versions a channel was rolled back from (skipped by the next rollback), comma separated.
pub fn rollbacks_param(prefix: &str, image: &str, channel: &str) -> String {
    format!("{prefix}/{image}/channel-rollbacks/{channel}")
}
/// The version a channel points at (its history is this parameter's history).
pub fn channel_version_param(prefix: &str, image: &str, channel: &str) -> String {
    format!("{prefix}/{image}/channel-versions/{channel}")
}

/// The parent version a requirement names, in one region, or an error that says what exists
/// (and quotes the reason when only revoked versions match).
pub async fn resolve_parent(
    aws: &Aws,
    prefix: &str,
    image: &str,
    req: &ParentReq,
) -> Result<Registered, CloudError> {
    let all = versions(aws, image).await?;
    let not_found = |why: String| {
        let have: Vec<String> = all
            .iter()
            .map(|r| {
                format!(
                    "{}{}",
                    r.version,
                    if r.revoked.is_some() {
                        " (revoked)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        CloudError::NotFound(format!(
            "no version of {image} matches `{req}` in {}: {why} (registered: {})",
            aws.region,
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        ))
    };
    let version = match req {
        ParentReq::Channel(c) if c != "latest" => {
            let param = channel_version_param(prefix, image, c);
            let v = aws.get_parameter(&param).await?.ok_or_else(|| {
                CloudError::NotFound(format!("channel `{c}` of {image} does not exist ({param})"))
            })?;
            Version::parse(&v).map_err(|e| {
                CloudError::NotFound(format!("{param} holds `{v}`, not a version: {e}"))
            })?
        }
        _ => {
            let avail: Vec<(&Version, Option<&str>)> = all
                .iter()
                .filter(|r| r.published && r.image.state == "available")
                .map(|r| (&r.version, r.revoked.as_deref()))
                .collect();
            super::resolve(req, avail).map_err(not_found)?.clone()
        }
    };
    let r = all
        .iter()
        .find(|r| r.version == version)
        .cloned()
        .ok_or_else(|| not_found(format!("{version} has no AMI here")))?;
    if let Some(reason) = &r.revoked {
        return Err(CloudError::NotFound(format!(
            "{image} {version} was revoked: {reason}"
        )));
    }
    Ok(r)
}

/// Moves of a pointer before giving up when other runners keep changing it.
const POINTER_TRIES: usize = 5;

/// What was written to a pointer between a read and a write of this runner's.
enum Between {
    /// Nothing: each write made the next version after the one read.
    Nothing,
    /// In a region where the write skipped a version: the value it replaced (`None`: none).
    Replaced(Vec<Option<Version>>),
    /// The read did not cover a region written.
    Unknown,
}

/// What `revoke` did: the channels moved (and where to), and the side effects that failed.
#[derive(Debug, Default)]
pub struct Revoked {
    pub moved: Vec<(String, Option<Version>)>,
    /// Best-effort calls after the registry was updated (deprecation) that failed.
    pub side_errors: Vec<String>,
}

/// One version across the target's regions.
#[derive(Debug, Clone)]
pub struct VersionView {
    pub version: Version,
    /// Region -> AMI.
    pub amis: BTreeMap<String, ImageInfo>,
    pub revoked: Option<String>,
}

/// The Windows AMIs of `versions` by region: what EC2 Fast Launch can be on (one Describe per
/// region covers them all).
pub fn windows_amis<'a>(
    versions: impl IntoIterator<Item = &'a VersionView>,
) -> BTreeMap<String, Vec<ImageId>> {
    let mut out: BTreeMap<String, Vec<ImageId>> = BTreeMap::new();
    for v in versions {
        for (region, ami) in v.amis.iter().filter(|(_, a)| a.platform == "windows") {
            out.entry(region.clone()).or_default().push(ami.id.clone());
        }
    }
    out
}

impl VersionView {
    /// What its snapshots cost a month in every region it is in, by `prices` (the size of their
    /// volumes: an upper bound; a region the table lacks counts as nothing).
    pub fn storage_per_month(&self, prices: &crate::cost::Prices) -> f64 {
        self.amis
            .iter()
            .map(|(region, ami)| {
                crate::cost::storage(
                    prices,
                    std::slice::from_ref(region),
                    ami.ebs_gb.unwrap_or(0),
                )
                .0
                .iter()
                .map(|s| s.per_month)
                .sum::<f64>()
            })
            .sum()
    }

    pub fn state(&self) -> &'static str {
        if self.revoked.is_some() {
            return "revoked";
        }
        let now = SystemTime::now();
        let deprecated = self.amis.values().any(|i| {
            i.deprecation_time
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
                .is_some_and(|t| t <= now)
        });
        if deprecated {
            "deprecated"
        } else {
            "available"
        }
    }

    pub fn created(&self) -> String {
        self.amis
            .values()
            .map(|i| i.creation_date.clone())
            .min()
            .unwrap_or_default()
    }

    pub fn tag(&self, key: &str) -> Option<String> {
        self.amis.values().find_map(|i| i.tags.get(key).cloned())
    }
}

/// The registry of one target.
pub struct Registry<'a> {
    pub target: &'a Target,
    pub regions: Regions<'a>,
}

impl<'a> Registry<'a> {
    pub fn new(target: &'a Target) -> Self {
        Self {
            target,
            regions: Regions::new(target),
        }
    }

    /// A registry whose clients come from `fleet` (a bake's, sharing its rate limiter).
    pub fn in_fleet(target: &'a Target, fleet: &crate::cloud::aws::Fleet) -> Self {
        Self {
            target,
            regions: Regions::in_fleet(target, fleet),
        }
    }

    fn primary(&self) -> String {
        self.target
            .regions
            .first()
            .map(|r| r.to_string())
            .unwrap_or_default()
    }

    /// Every version of `image` in the target's regions (or just `only`), oldest first.
    pub async fn versions(
        &mut self,
        image: &str,
        only: Option<&str>,
    ) -> Result<Vec<VersionView>, CloudError> {
        let regions: Vec<String> = match only {
            Some(r) => vec![r.to_string()],
            None => self.target.regions.iter().map(|r| r.to_string()).collect(),
        };
        let mut by_version: BTreeMap<Version, VersionView> = BTreeMap::new();
        if self.target.consumer {
            // A consumer account: AMI tags do not cross accounts; the mirror says it all.
            for region in regions {
                let aws = self.regions.get(&region).await;
                let base = format!("{}/{image}/meta", self.target.ssm_prefix);
                let params = aws.parameters_by_path(&base).await?;
                for (version, meta) in super::mirror::read(&self.target.ssm_prefix, image, &params)
                {
                    let info = meta.image();
                    let e = by_version
                        .entry(version.clone())
                        .or_insert_with(|| VersionView {
                            version,
                            amis: BTreeMap::new(),
                            revoked: None,
                        });
                    e.revoked = e
                        .revoked
                        .take()
                        .or_else(|| info.tags.get(tag::REVOKED).cloned());
                    e.amis.insert(region.clone(), info);
                }
            }
            return Ok(by_version.into_values().collect());
        }
        for region in regions {
            let aws = self.regions.get(&region).await;
            for r in versions(aws, image)
                .await?
                .into_iter()
                .filter(|r| r.published)
            {
                let e = by_version
                    .entry(r.version.clone())
                    .or_insert_with(|| VersionView {
                        version: r.version.clone(),
                        amis: BTreeMap::new(),
                        revoked: None,
                    });
                e.revoked = e.revoked.take().or(r.revoked);
                e.amis.insert(region.clone(), r.image);
            }
        }
        Ok(by_version.into_values().collect())
    }

    /// What `image@req` names: a semver requirement, `latest` or a channel. Deterministic: the
    /// highest matching version that is not revoked.
    pub async fn resolve(
        &mut self,
        image: &str,
        req: &ParentReq,
    ) -> Result<VersionView, CloudError> {
        let all = self.versions(image, None).await?;
        let version = match req {
            ParentReq::Channel(c) if c != "latest" => {
                self.channel(image, c).await?.ok_or_else(|| {
                    CloudError::NotFound(format!("channel `{c}` of {image} does not exist"))
                })?
            }
            _ => {
                let avail = all.iter().map(|v| (&v.version, v.revoked.as_deref()));
                super::resolve(req, avail)
                    .map_err(|e| CloudError::NotFound(format!("{image}: {e}")))?
                    .clone()
            }
        };
        let v = all
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| CloudError::NotFound(format!("{image} {version} is not registered")))?;
        if let Some(reason) = &v.revoked {
            return Err(CloudError::NotFound(format!(
                "{image} {version} was revoked: {reason}"
            )));
        }
        Ok(v)
    }

    /// The version a channel points at now.
    pub async fn channel(
        &mut self,
        image: &str,
        channel: &str,
    ) -> Result<Option<Version>, CloudError> {
        let primary = self.primary();
        let p = channel_version_param(&self.target.ssm_prefix, image, channel);
        let aws = self.regions.get(&primary).await;
        Ok(aws
            .get_parameter(&p)
            .await?
            .and_then(|v| Version::parse(&v).ok()))
    }

    /// Every version a channel has pointed at, oldest first.
    pub async fn channel_history(
        &mut self,
        image: &str,
        channel: &str,
    ) -> Result<Vec<Version>, CloudError> {
        let primary = self.primary();
        let p = channel_version_param(&self.target.ssm_prefix, image, channel);
        let aws = self.regions.get(&primary).await;
        Ok(aws
            .parameter_history(&p)
            .await?
            .iter()
            .filter_map(|v| Version::parse(v).ok())
            .collect())
    }

    /// Every channel of `image` with the version it names, from one listing (the values come
    /// with the names).
    pub async fn channels(&mut self, image: &str) -> Result<BTreeMap<String, Version>, CloudError> {
        let primary = self.primary();
        let base = format!("{}/{image}/channel-versions/", self.target.ssm_prefix);
        let aws = self.regions.get(&primary).await;
        Ok(aws
            .parameters_by_path(base.trim_end_matches('/'))
            .await?
            .into_iter()
            .filter_map(|(n, v)| {
                Some((n.strip_prefix(&base)?.to_string(), Version::parse(&v).ok()?))
            })
            .collect())
    }

    /// Channel names of `image`.
    pub async fn channel_names(&mut self, image: &str) -> Result<Vec<String>, CloudError> {
        let primary = self.primary();
        let base = format!("{}/{image}/channel-versions/", self.target.ssm_prefix);
        let aws = self.regions.get(&primary).await;
        let mut names: Vec<String> = aws
            .parameters_by_path(base.trim_end_matches('/'))
            .await?
            .into_iter()
            .filter_map(|(n, _)| n.strip_prefix(&base).map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Points `channel` at `version` (AMI per region, data type `aws:ec2:image`) and records
    /// the version (its history is the channel's history). Target regions the version is not
    /// in lose the channel, so no region keeps naming an older AMI.
    pub async fn promote(
        &mut self,
        image: &str,
        version: &Version,
        amis: &BTreeMap<String, String>,
        channel: &str,
    ) -> Result<(), CloudError> {
        self.move_channel(image, version, amis, channel).await?;
        let mut back = self.rolled_back(image, channel).await?;
        if back.remove(version) {
            self.set_rolled_back(image, channel, &back).await?;
        }
        Ok(())
    }

    /// The parameters of `promote`, without its bookkeeping of rollbacks. Returns the SSM
    /// version of the channel's version parameter each region's write made (a region that lost
    /// the channel has none).
    async fn move_channel(
        &mut self,
        image: &str,
        version: &Version,
        amis: &BTreeMap<String, String>,
        channel: &str,
    ) -> Result<BTreeMap<String, i64>, CloudError> {
        let prefix = self.target.ssm_prefix.clone();
        let regions: Vec<String> = self.target.regions.iter().map(|r| r.to_string()).collect();
        let mut written = BTreeMap::new();
        for region in regions {
            let aws = self.regions.get(&region).await;
            match amis.get(&region) {
                Some(ami) => {
                    aws.put_image_parameter(&channel_param(&prefix, image, channel), ami, true)
                        .await?;
                    let n = aws
                        .put_string_parameter(
                            &channel_version_param(&prefix, image, channel),
                            &version.to_string(),
                        )
                        .await?;
                    written.insert(region, n);
                }
                None => {
                    aws.delete_parameter(&channel_param(&prefix, image, channel))
                        .await?;
                    aws.delete_parameter(&channel_version_param(&prefix, image, channel))
                        .await?;
                }
            }
        }
        Ok(written)
    }

    /// `promote` of a registered version (refused when revoked).
    pub async fn promote_view(
        &mut self,
        image: &str,
        v: &VersionView,
        channel: &str,
    ) -> Result<(), CloudError> {
        if let Some(reason) = &v.revoked {
            return Err(CloudError::NotFound(format!(
                "{image} {} was revoked: {reason}",
                v.version
            )));
        }
        let amis = v
            .amis
            .iter()
            .map(|(r, i)| (r.clone(), i.id.to_string()))
            .collect();
        self.promote(image, &v.version, &amis, channel).await
    }

    async fn rolled_back(
        &mut self,
        image: &str,
        channel: &str,
    ) -> Result<std::collections::BTreeSet<Version>, CloudError> {
        let primary = self.primary();
        let p = rollbacks_param(&self.target.ssm_prefix, image, channel);
        let aws = self.regions.get(&primary).await;
        Ok(aws
            .get_parameter(&p)
            .await?
            .map(|s| {
                s.split(',')
                    .filter_map(|v| Version::parse(v.trim()).ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn set_rolled_back(
        &mut self,
        image: &str,
        channel: &str,
        set: &std::collections::BTreeSet<Version>,
    ) -> Result<(), CloudError> {
        let primary = self.primary();
        let p = rollbacks_param(&self.target.ssm_prefix, image, channel);
        let aws = self.regions.get(&primary).await;
        if set.is_empty() {
            aws.delete_parameter(&p).await
        } else {
            let list: Vec<String> = set.iter().map(|v| v.to_string()).collect();
            aws.put_string_parameter(&p, &list.join(","))
                .await
                .map(|_| ())
        }
    }

    /// Moves `channel` back: to the newest earlier version in its history that was not rolled
    /// back from, is still registered and is not revoked. Returns it; `NotFound` when there is
    /// nothing to go back to.
    pub async fn rollback(&mut self, image: &str, channel: &str) -> Result<Version, CloudError> {
        let current = self.channel(image, channel).await?.ok_or_else(|| {
            CloudError::NotFound(format!("channel `{channel}` of {image} does not exist"))
        })?;
        let history = self.channel_history(image, channel).await?;
        let mut skip = self.rolled_back(image, channel).await?;
        skip.insert(current.clone());
        let all = self.versions(image, None).await?;
        let target = history
            .iter()
            .rev()
            .filter(|v| !skip.contains(*v))
            .find_map(|v| {
                all.iter()
                    .find(|a| &a.version == v && a.revoked.is_none())
                    .cloned()
            })
            .ok_or_else(|| {
                CloudError::NotFound(format!(
                    "channel `{channel}` of {image} has no earlier version to go back to"
                ))
            })?;
        self.promote_view(image, &target, channel).await?;
        let mut back = self.rolled_back(image, channel).await?;
        back.insert(current);
        self.set_rolled_back(image, channel, &back).await?;
        Ok(target.version)
    }

    /// Points `latest` (in every target region) at the highest published release that is not
    /// revoked, or removes it when there is none.
    pub async fn refresh_latest(&mut self, image: &str) -> Result<Option<Version>, CloudError> {
        let all = self.versions(image, None).await?;
        let best = all
            .iter()
            .filter(|v| v.revoked.is_none() && v.version.pre.is_empty())
            .max_by(|a, b| a.version.cmp(&b.version))
            .cloned();
        let prefix = self.target.ssm_prefix.clone();
        let regions: Vec<String> = self.target.regions.iter().map(|r| r.to_string()).collect();
        for region in regions {
            let aws = self.regions.get(&region).await;
            match best.as_ref().and_then(|b| b.amis.get(&region)) {
                Some(ami) => {
                    aws.put_image_parameter(&latest_param(&prefix, image), ami.id.as_str(), true)
                        .await?;
                }
                None => aws.delete_parameter(&latest_param(&prefix, image)).await?,
            }
        }
        Ok(best.map(|b| b.version))
    }

    /// Versions of other images layered on `image@version` (by their `bakery:parent` tag).
    pub async fn children_of(
        &mut self,
        image: &str,
        version: &Version,
    ) -> Result<Vec<(String, Version)>, CloudError> {
        let primary = self.primary();
        let aws = self.regions.get(&primary).await;
        let parent = format!("{image}@{version}");
        let found = aws
            .describe_images(
                &["self".to_string()],
                &[(&format!("tag:{}", tag::PARENT), vec![parent])],
            )
            .await?;
        let mut out: Vec<(String, Version)> = found
            .iter()
            .filter(|i| i.tags.contains_key(tag::PUBLISHED))
            .filter_map(|i| {
                Some((
                    i.tags.get(tag::IMAGE)?.clone(),
                    Version::parse(i.tags.get(tag::VERSION)?).ok()?,
                ))
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Revokes a version. Registry first: tags its AMIs with the reason, moves every channel that
    /// points at it back (removing it when there is nothing earlier) and re-points `latest`;
    /// only then deprecates the AMIs (a minute from now: EnableImageDeprecation refuses past
    /// times), a side effect whose failures are returned, not raised, so that a missing
    /// permission never leaves `latest` on a revoked version. Rerunning finishes it.
    pub async fn revoke(
        &mut self,
        image: &str,
        version: &Version,
        reason: &str,
    ) -> Result<Revoked, CloudError> {
        let all = self.versions(image, None).await?;
        let v = all
            .iter()
            .find(|v| &v.version == version)
            .ok_or_else(|| CloudError::NotFound(format!("{image} {version} is not registered")))?;
        // Tag values hold at most 256 characters (EC2 tag restrictions).
        let reason: String = reason.chars().take(256).collect();
        let mut tags = crate::cloud::Tags::new();
        tags.insert(tag::REVOKED.into(), reason.clone());
        for (region, ami) in &v.amis {
            let aws = self.regions.get(region).await;
            let mut ids = vec![ami.id.to_string()];
            ids.extend(ami.snapshots.iter().map(|s| s.to_string()));
            aws.tag_resources(&ids, &tags).await?;
        }
        let amis = v.amis.clone();
        let mut moved = Vec::new();
        for ch in self.channel_names(image).await? {
            if self.channel(image, &ch).await?.as_ref() != Some(version) {
                continue;
            }
            match self.rollback(image, &ch).await {
                Ok(back) => moved.push((ch, Some(back))),
                Err(CloudError::NotFound(_)) => {
                    // Nothing to go back to: the channel must not keep naming a revoked version.
                    let prefix = self.target.ssm_prefix.clone();
                    let regions: Vec<String> =
                        self.target.regions.iter().map(|r| r.to_string()).collect();
                    for region in regions {
                        let aws = self.regions.get(&region).await;
                        aws.delete_parameter(&channel_param(&prefix, image, &ch))
                            .await?;
                        aws.delete_parameter(&channel_version_param(&prefix, image, &ch))
                            .await?;
                    }
                    moved.push((ch, None));
                }
                Err(e) => return Err(e),
            }
        }
        self.refresh_latest(image).await?;
        let mut side_errors = Vec::new();
        for (region, ami) in &amis {
            let aws = self.regions.get(region).await;
            if let Err(e) = aws
                .enable_image_deprecation(&ami.id, SystemTime::now() + Duration::from_secs(60))
                .await
            {
                side_errors.push(format!("deprecating {} in {region}: {e}", ami.id));
            }
        }
        Ok(Revoked { moved, side_errors })
    }

    /// A bake's channel move: `promote` only when the channel names no newer version in any
    /// region; a newer one stays. Returns whether the channel names `version` now. `version` is
    /// the one the bake just published: no channel was ever rolled back from it (numbers are
    /// never reused), so the list of rollbacks is not read.
    /// `read`: what `pointers` read, with the SSM versions of the values; the first look
    /// decides on it. A move made on that read needs no read-back where its write is the next
    /// version after the one read: nothing was written in between, so the decision stands.
    /// Where something was (another runner moved the channel between the read and the write),
    /// the value the write replaced (the parameter's history) decides: whichever of it (unless
    /// revoked since) and this version is newer is written again, both parameters, and the
    /// channel is read again. Without `read`, and after such a repair, the move is read back,
    /// and made again when another runner moved a region to an older version in between
    /// (bounded).
    pub async fn promote_if_newer(
        &mut self,
        image: &str,
        version: &Version,
        amis: &BTreeMap<String, String>,
        channel: &str,
        read: Option<(&Pointers, &PointerVersions)>,
    ) -> Result<bool, CloudError> {
        let name = channel_version_param(&self.target.ssm_prefix, image, channel);
        let mut before: Option<PointerVersions> = read.map(|(_, v)| v.clone());
        let mut read = read.map(|(p, _)| p);
        // A repair to make next: (version, its AMIs), decided on the history, not on a read.
        let mut repair: Option<(Version, BTreeMap<String, String>)> = None;
        for attempt in 0..=POINTER_TRIES {
            let (to, to_amis) = match repair.take() {
                Some(r) => r,
                None => {
                    let now = self.channel_everywhere(image, channel, read.take()).await?;
                    if now.iter().any(|v| v.as_ref().is_some_and(|v| v > version)) {
                        return Ok(false);
                    }
                    if now.iter().all(|v| v.as_ref() == Some(version)) {
                        return Ok(true);
                    }
                    (version.clone(), amis.clone())
                }
            };
            if attempt == POINTER_TRIES {
                break;
            }
            let written = self.move_channel(image, &to, &to_amis, channel).await?;
            let Some(seen) = before.take() else {
                continue;
            };
            match self
                .written_between(image, channel, &to, &seen, &written)
                .await?
            {
                Between::Nothing => return Ok(&to == version),
                Between::Unknown => continue,
                Between::Replaced(values) => {
                    // The write replaced a newer version another runner had just put there: put
                    // it back (unless it is revoked since), whole. Else this one, whole again
                    // (the other runner's AMI parameter may have landed after ours). The repair
                    // is checked the same way: against the versions this write made.
                    let theirs = values.into_iter().flatten().filter(|v| v > &to).max();
                    let back = match theirs {
                        Some(theirs) => self
                            .releasable_amis(image, &theirs)
                            .await?
                            .map(|a| (theirs, a)),
                        None => None,
                    };
                    repair = Some(match back {
                        Some((theirs, amis)) => {
                            tracing::info!(channel, newer = %theirs, "another runner moved the channel to a newer version meanwhile: put back");
                            (theirs, amis)
                        }
                        None => (to, to_amis),
                    });
                    before = Some(
                        written
                            .iter()
                            .map(|(r, n)| (r.clone(), BTreeMap::from([(name.clone(), *n)])))
                            .collect(),
                    );
                }
            }
        }
        Err(CloudError::NotFound(format!(
            "channel {channel} of {image} kept changing while it was moved to {version}"
        )))
    }

    /// What was written to the channel's version parameter between the read `before` and the
    /// writes of `version` in `written` (region -> the version each made).
    async fn written_between(
        &mut self,
        image: &str,
        channel: &str,
        version: &Version,
        before: &PointerVersions,
        written: &BTreeMap<String, i64>,
    ) -> Result<Between, CloudError> {
        let name = channel_version_param(&self.target.ssm_prefix, image, channel);
        let ours = version.to_string();
        let mut gap = false;
        let mut replaced = Vec::new();
        for (region, made) in written {
            // A region the read did not cover says nothing; one it covered without the
            // parameter read it as absent (version 0).
            let Some(seen) = before.get(region) else {
                return Ok(Between::Unknown);
            };
            let seen = seen.get(&name).copied().unwrap_or(0);
            if *made == seen + 1 {
                continue;
            }
            gap = true;
            let history = self
                .regions
                .get(region)
                .await
                .parameter_versions(&name)
                .await?;
            replaced.push(
                super::replaced_by(&history, *made, &ours)
                    .and_then(|(_, v)| Version::parse(v).ok()),
            );
        }
        Ok(if gap {
            Between::Replaced(replaced)
        } else {
            Between::Nothing
        })
    }

    /// The AMI of `version` in each region that has it, to put a channel back on; `None` when it
    /// is revoked (since); an error when the listing does not show it (yet).
    async fn releasable_amis(
        &mut self,
        image: &str,
        version: &Version,
    ) -> Result<Option<BTreeMap<String, String>>, CloudError> {
        let all = self.versions(image, None).await?;
        let v = all.iter().find(|v| &v.version == version).ok_or_else(|| {
            CloudError::NotFound(format!(
                "{image} {version}, which another runner moved the channel to meanwhile, is not listed yet"
            ))
        })?;
        if v.revoked.is_some() {
            return Ok(None);
        }
        Ok(Some(
            v.amis
                .iter()
                .map(|(r, i)| (r.clone(), i.id.to_string()))
                .collect(),
        ))
    }

    /// The version a channel names in each region of the target that has it: from `read` (what
    /// `pointers` read) where it has the region, else read here.
    async fn channel_everywhere(
        &mut self,
        image: &str,
        channel: &str,
        read: Option<&Pointers>,
    ) -> Result<Vec<Option<Version>>, CloudError> {
        let p = channel_version_param(&self.target.ssm_prefix, image, channel);
        let regions: Vec<String> = self.target.regions.iter().map(|r| r.to_string()).collect();
        let mut out = Vec::new();
        for region in regions {
            let value = match read.and_then(|r| r.get(&region)) {
                Some(values) => values.get(&p).cloned(),
                None => self.regions.get(&region).await.get_parameter(&p).await?,
            };
            out.push(value.and_then(|v| Version::parse(&v).ok()));
        }
        Ok(out)
    }

    /// `latest` and the versions `channels` name, in every target region, with their SSM
    /// versions: one GetParameters per region.
    pub async fn pointers(
        &mut self,
        image: &str,
        channels: &[String],
    ) -> Result<(Pointers, PointerVersions), CloudError> {
        let prefix = self.target.ssm_prefix.clone();
        let mut names = vec![latest_param(&prefix, image)];
        names.extend(
            channels
                .iter()
                .map(|c| channel_version_param(&prefix, image, c)),
        );
        let regions: Vec<String> = self.target.regions.iter().map(|r| r.to_string()).collect();
        let (mut values, mut versions) = (BTreeMap::new(), BTreeMap::new());
        for region in regions {
            let aws = self.regions.get(&region).await;
            let read = aws.get_parameters_versioned(&names).await?;
            versions.insert(
                region.clone(),
                read.iter().map(|(n, (_, v))| (n.clone(), *v)).collect(),
            );
            values.insert(region, read.into_iter().map(|(n, (v, _))| (n, v)).collect());
        }
        Ok((values, versions))
    }

    /// Points `latest` at the newest published, not revoked release in every region where it
    /// names an older version, something that is not a published version, or nothing. Every bake
    /// does this after its commit, so whichever of two racing runners finishes last leaves
    /// `latest` on the newer one. Never moves it backwards (revoke and prune use
    /// `refresh_latest`, which may).
    /// `all`: the registry's listing (`versions`), read after the commit; `now`: what
    /// `pointers` read since (a region it lacks is read here; a write is decided on a fresh
    /// read).
    pub async fn converge_latest(
        &mut self,
        image: &str,
        all: &[VersionView],
        now: &Pointers,
    ) -> Result<(), CloudError> {
        let Some(best) = all
            .iter()
            .filter(|v| v.revoked.is_none() && v.version.pre.is_empty())
            .max_by(|a, b| a.version.cmp(&b.version))
        else {
            return Ok(());
        };
        let name = latest_param(&self.target.ssm_prefix, image);
        for (region, ami) in &best.amis {
            let aws = self.regions.get(region).await;
            let current = match now.get(region) {
                Some(read) => read.get(&name).cloned(),
                None => aws.get_parameter(&name).await?,
            };
            if current.as_deref() == Some(ami.id.as_str()) {
                continue;
            }
            let newer = |current: &Option<String>| {
                all.iter().any(|v| {
                    v.version > best.version
                        && v.amis
                            .get(region)
                            .is_some_and(|i| Some(i.id.as_str()) == current.as_deref())
                })
            };
            if newer(&current) {
                continue;
            }
            // About to write: decide on a fresh read when the one above came from `now`.
            if now.contains_key(region) {
                let fresh = aws.get_parameter(&name).await?;
                if fresh.as_deref() == Some(ami.id.as_str()) || newer(&fresh) {
                    continue;
                }
            }
            aws.put_image_parameter(&name, ami.id.as_str(), true)
                .await?;
        }
        Ok(())
    }
}
