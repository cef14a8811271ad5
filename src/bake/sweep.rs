//! Finding what bakes left in AWS from their tags alone, with no journal: the sweep after every
//! bake, `bakery cleanup <bake-id>` on a machine that never had the journal, and `bakery gc`.
//! A bake owns what carries its `bakery:bake-id`; it is live while any of its resources carries a
//! `bakery:expires` in the future (a running bake renews it). A published AMI, its snapshots and
//! the parameters naming it are never found.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use super::ledger::Undo;
use crate::catalog::model::Target;
use crate::cloud::aws::Aws;
use crate::cloud::{CloudError, ImageInfo, InstanceId};
use crate::registry::tag;

/// What a scan looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Instances only (they hold security groups, so they go first).
    Instances,
    /// What every bake removes at its end: instances, security groups, key pairs, S3 objects.
    Temporary,
    /// Also what only a failed bake removes: AMIs never published, their snapshots, and the
    /// parameters naming them.
    All,
}

/// One thing a bake left behind, and why it counts as left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The bake it belongs to; empty for a parameter naming an AMI that no longer exists.
    pub bake_id: String,
    pub undo: Undo,
    pub why: String,
}

/// What a scan of one or more regions found.
#[derive(Debug, Default)]
pub struct Scan {
    pub found: Vec<Found>,
    /// Bake id -> the latest `bakery:expires` on any of its resources.
    pub expires: BTreeMap<String, SystemTime>,
    /// Bakes with a published AMI: their AMIs and snapshots are a version, never removed here.
    pub published: BTreeSet<String>,
}

impl Scan {
    pub fn merge(&mut self, other: Scan) {
        self.found.extend(other.found);
        for (b, t) in other.expires {
            let e = self.expires.entry(b).or_insert(t);
            *e = (*e).max(t);
        }
        self.published.extend(other.published);
    }

    /// The findings (copied), without the AMIs, snapshots and parameters of bakes that published a
    /// version (a kill while the copies were being marked published can leave one copy
    /// unmarked: it is still part of that version, and `cleanup` finishes marking it).
    pub fn found(&self) -> Vec<Found> {
        self.found
            .iter()
            .filter(|f| {
                !(self.published.contains(&f.bake_id)
                    && matches!(
                        f.undo,
                        Undo::DeregisterImage { .. }
                            | Undo::DeleteSnapshot { .. }
                            | Undo::RestoreParameter { .. }
                    ))
            })
            .cloned()
            .collect()
    }

    /// Whether `bake` is live at `now`: some resource of it has a `bakery:expires` after `now`.
    pub fn live_until(&self, bake: &str) -> Option<SystemTime> {
        self.expires.get(bake).copied()
    }
}

/// `bakery:expires` of a resource.
pub fn expires_of(tags: &crate::cloud::Tags) -> Option<SystemTime> {
    tags.get(tag::EXPIRES)
        .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
}

/// Whether `s` has the shape of a bake id (`bk-<base 36 seconds>-<8 hex>`, see `new_bake_id`).
pub fn is_bake_id(s: &str) -> bool {
    let mut parts = s.split('-');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("bk"), Some(t), Some(r), None)
            if !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
                && r.len() == 8
                && r.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    )
}

/// The instance a CreateImage snapshot was made from (`Created by CreateImage(i-...) for ami-...`,
/// the description EC2 gives them).
fn created_from(description: &str) -> Option<InstanceId> {
    let rest = description.strip_prefix("Created by CreateImage(")?;
    let (id, _) = rest.split_once(')')?;
    id.starts_with("i-").then(|| InstanceId(id.to_string()))
}

/// Scans one region for what bakes (or just `bake`) left there.
pub async fn scan_region(
    aws: &Aws,
    target: &Target,
    bake: Option<&str>,
    scope: Scope,
) -> Result<Scan, CloudError> {
    let region = aws.region.to_string();
    let mut scan = Scan::default();
    let owner = |tags: &crate::cloud::Tags| tags.get(tag::BAKE_ID).cloned();
    let note = |scan: &mut Scan, tags: &crate::cloud::Tags| {
        if let (Some(b), Some(t)) = (owner(tags), expires_of(tags)) {
            let e = scan.expires.entry(b).or_insert(t);
            *e = (*e).max(t);
        }
    };
    // The bucket is used from the build region (the target's first).
    let bucket = target
        .s3_bucket
        .as_ref()
        .filter(|_| target.regions.first().map(|r| r.as_str()) == Some(region.as_str()));
    let base = format!("{}/", super::S3_PREFIX);
    let within = match bake {
        Some(b) => format!("{base}{b}/"),
        None => base.clone(),
    };
    let more = scope != Scope::Instances;
    // Instances (terminated ones too: their ids tie untagged snapshots to a bake), groups, key
    // pairs and objects, asked at the same time.
    let (instances, groups, keys, objects) = tokio::try_join!(
        aws.instances_tagged(tag::BAKE_ID, bake),
        async {
            match more {
                true => aws.security_groups_tagged(tag::BAKE_ID, bake).await,
                false => Ok(Vec::new()),
            }
        },
        async {
            match more {
                true => aws.key_pairs_tagged(tag::BAKE_ID, bake).await,
                false => Ok(Vec::new()),
            }
        },
        async {
            match (more, bucket) {
                (true, Some(b)) => aws.list_keys(b, &within).await,
                _ => Ok(Vec::new()),
            }
        },
    )?;
    let mut made_by: BTreeMap<InstanceId, String> = BTreeMap::new();
    for i in &instances {
        note(&mut scan, &i.tags);
        let Some(b) = owner(&i.tags) else { continue };
        made_by.insert(i.id.clone(), b.clone());
        if i.state != "terminated" {
            scan.found.push(Found {
                bake_id: b,
                why: format!("build instance, {}", i.state),
                undo: Undo::TerminateInstance {
                    region: region.clone(),
                    id: i.id.clone(),
                },
            });
        }
    }
    if scope == Scope::Instances {
        return Ok(scan);
    }
    for g in groups {
        note(&mut scan, &g.tags);
        if let Some(b) = owner(&g.tags) {
            scan.found.push(Found {
                bake_id: b,
                why: "the build instance's security group".into(),
                undo: Undo::DeleteSecurityGroup {
                    region: region.clone(),
                    id: g.id,
                },
            });
        }
    }
    for k in keys {
        note(&mut scan, &k.tags);
        if let Some(b) = owner(&k.tags) {
            scan.found.push(Found {
                bake_id: b,
                why: "the build instance's key pair".into(),
                undo: Undo::DeleteKeyPair {
                    region: region.clone(),
                    name: k.id,
                },
            });
        }
    }
    if let Some(bucket) = bucket {
        let bakes: BTreeSet<String> = objects
            .iter()
            .filter_map(|k| k.strip_prefix(&base)?.split('/').next())
            .filter(|b| is_bake_id(b))
            .map(str::to_string)
            .collect();
        for b in bakes {
            scan.found.push(Found {
                undo: Undo::DeleteS3Prefix {
                    region: region.clone(),
                    bucket: bucket.clone(),
                    prefix: format!("{base}{b}/"),
                },
                bake_id: b,
                why: "files sent to the instance and command output".into(),
            });
        }
    }
    if scope == Scope::Temporary {
        return Ok(scan);
    }
    let images = aws.own_images().await?;
    let mut used = BTreeSet::new();
    let mut removed_amis: BTreeMap<String, String> = BTreeMap::new();
    for i in &images {
        used.extend(i.snapshots.iter().cloned());
        note(&mut scan, &i.tags);
        let Some(b) = owner(&i.tags) else { continue };
        if bake.is_some_and(|x| x != b) {
            continue;
        }
        if i.tags.contains_key(tag::PUBLISHED) {
            scan.published.insert(b);
            continue;
        }
        removed_amis.insert(i.id.to_string(), b.clone());
        scan.found.push(Found {
            bake_id: b,
            why: format!("{} was never published", i.name),
            undo: Undo::DeregisterImage {
                region: region.clone(),
                id: i.id.clone(),
            },
        });
    }
    for s in aws.own_snapshots().await? {
        if used.contains(&s.id) {
            continue;
        }
        let (b, why) = match (owner(&s.tags), created_from(&s.description)) {
            (Some(b), _) => (b, "snapshot no image uses".to_string()),
            (None, Some(i)) => match made_by.get(&i) {
                Some(b) => (
                    b.clone(),
                    format!("untagged snapshot of build instance {i}; its image is gone"),
                ),
                None => continue,
            },
            (None, None) => continue,
        };
        if bake.is_some_and(|x| x != b) {
            continue;
        }
        note(&mut scan, &s.tags);
        scan.found.push(Found {
            bake_id: b,
            why,
            undo: Undo::DeleteSnapshot {
                region: region.clone(),
                id: s.id,
            },
        });
    }
    scan.found
        .extend(stale_parameters(aws, target, bake, &images, &removed_amis).await?);
    Ok(scan)
}

/// Parameters under the registry prefix naming an AMI that is gone (in `gc`, any bake's) or that
/// this scan removes (an unpublished AMI). `latest` goes back to the newest published release;
/// anything else is deleted. Each change applies only while the parameter still names that AMI.
async fn stale_parameters(
    aws: &Aws,
    target: &Target,
    bake: Option<&str>,
    images: &[ImageInfo],
    removed: &BTreeMap<String, String>,
) -> Result<Vec<Found>, CloudError> {
    let region = aws.region.to_string();
    let prefix = format!("{}/", target.ssm_prefix.trim_end_matches('/'));
    // GetParametersByPath returns 10 parameters a call (SSM API reference): one bake's sweep
    // reads only the images whose AMIs it removes; gc reads the whole registry.
    let paths: BTreeSet<String> = match bake {
        None => BTreeSet::from([prefix.trim_end_matches('/').to_string()]),
        Some(_) => images
            .iter()
            .filter(|i| removed.contains_key(i.id.as_str()))
            .filter_map(|i| i.tags.get(tag::IMAGE))
            .map(|image| format!("{prefix}{image}"))
            .collect(),
    };
    let mut params = Vec::new();
    for path in &paths {
        params.extend(aws.parameters_by_path(path).await?);
    }
    // What looks gone must really be gone (not an AMI of another owner, not just invisible to
    // the listing): one look by id.
    let unknown: Vec<String> = params
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v.starts_with("ami-") && !images.iter().any(|i| i.id.as_str() == v.as_str()))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let exist = aws.existing_images(&unknown).await?;
    let mut out = Vec::new();
    for (name, value) in params {
        let Some((image, rest)) = name.strip_prefix(&prefix).and_then(|r| r.split_once('/')) else {
            continue;
        };
        let (bake_id, why) = if let Some(version) = rest.strip_prefix("inputs/") {
            // What a version was baked from goes with a version that never was.
            let of_version: Vec<&ImageInfo> = images
                .iter()
                .filter(|i| {
                    i.tags.get(tag::IMAGE).map(String::as_str) == Some(image)
                        && i.tags.get(tag::VERSION).map(String::as_str) == Some(version)
                })
                .collect();
            if of_version
                .iter()
                .any(|i| i.tags.contains_key(tag::PUBLISHED))
            {
                continue;
            }
            match of_version.iter().find_map(|i| removed.get(i.id.as_str())) {
                Some(b) => (
                    b.clone(),
                    format!("inputs of {image} {version}, which was never published"),
                ),
                None if bake.is_none() && of_version.is_empty() => (
                    String::new(),
                    format!("inputs of {image} {version}, which has no AMI here"),
                ),
                None => continue,
            }
        } else if value.starts_with("ami-") && !exist.iter().any(|i| i.as_str() == value) {
            match removed.get(&value) {
                Some(b) => (
                    b.clone(),
                    format!("names {value}, which was never published"),
                ),
                None if bake.is_none() && !images.iter().any(|i| i.id.as_str() == value) => (
                    String::new(),
                    format!("names {value}, which is not registered"),
                ),
                None => continue,
            }
        } else {
            continue;
        };
        let previous = (rest == "latest")
            .then(|| newest_release(images, image, &value))
            .flatten();
        out.push(Found {
            bake_id,
            why,
            undo: Undo::RestoreParameter {
                region: region.clone(),
                name: name.clone(),
                previous,
                ours: Some(value.clone()),
            },
        });
    }
    Ok(out)
}

/// The AMI of the newest published, not revoked release of `image` (not `except`).
pub fn newest_release(images: &[ImageInfo], image: &str, except: &str) -> Option<String> {
    images
        .iter()
        .filter(|i| {
            i.id.as_str() != except
                && i.tags.get(tag::IMAGE).map(String::as_str) == Some(image)
                && i.tags.contains_key(tag::PUBLISHED)
                && !i.tags.contains_key(tag::REVOKED)
        })
        .filter_map(|i| {
            let v = semver::Version::parse(i.tags.get(tag::VERSION)?).ok()?;
            v.pre.is_empty().then_some((v, i.id.to_string()))
        })
        .max()
        .map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bake_ids_and_snapshot_descriptions() {
        assert!(is_bake_id(&super::super::new_bake_id()));
        for bad in [
            "",
            "bk-",
            "bk-abc-1234567",
            "bk-abc-1234567g",
            "bk-ABC-12345678",
            "bk-abc-12345678-x",
            "ami-12345678",
            "bk-a/b-12345678",
        ] {
            assert!(!is_bake_id(bad), "{bad}");
        }
        assert_eq!(
            created_from("Created by CreateImage(i-0abc) for ami-0def"),
            Some(InstanceId("i-0abc".into()))
        );
        assert_eq!(created_from("Copied for DestinationAmi ami-1"), None);
        assert_eq!(created_from("Created by CreateImage(x) for ami-1"), None);
    }

    fn found(bake: &str, undo: Undo) -> Found {
        Found {
            bake_id: bake.into(),
            undo,
            why: String::new(),
        }
    }

    #[test]
    fn a_published_bake_keeps_its_images_snapshots_and_parameters_and_leases_merge() {
        let r = || "us-east-1".to_string();
        let image = Undo::DeregisterImage {
            region: r(),
            id: crate::cloud::ImageId("ami-1".into()),
        };
        let snap = Undo::DeleteSnapshot {
            region: r(),
            id: crate::cloud::SnapshotId("snap-1".into()),
        };
        let param = Undo::RestoreParameter {
            region: r(),
            name: "/bakery/x/1.0.0".into(),
            previous: None,
            ours: Some("ami-1".into()),
        };
        let group = Undo::DeleteSecurityGroup {
            region: r(),
            id: crate::cloud::SecurityGroupId("sg-1".into()),
        };
        let t0 = SystemTime::UNIX_EPOCH;
        let mut a = Scan {
            found: vec![
                found("bk-a", image.clone()),
                found("bk-a", snap.clone()),
                found("bk-a", param.clone()),
                found("bk-a", group.clone()),
                found("bk-b", image.clone()),
            ],
            expires: BTreeMap::from([("bk-a".to_string(), t0)]),
            published: BTreeSet::new(),
        };
        a.merge(Scan {
            found: vec![],
            expires: BTreeMap::from([(
                "bk-a".to_string(),
                t0 + std::time::Duration::from_secs(60),
            )]),
            published: BTreeSet::from(["bk-a".to_string()]),
        });
        assert_eq!(
            a.live_until("bk-a"),
            Some(t0 + std::time::Duration::from_secs(60)),
            "the latest lease of any region"
        );
        assert_eq!(a.live_until("bk-b"), None);
        let left: Vec<(String, Undo)> =
            a.found().into_iter().map(|f| (f.bake_id, f.undo)).collect();
        assert_eq!(
            left,
            vec![("bk-a".to_string(), group), ("bk-b".to_string(), image)]
        );
    }
}
