//! The registry mirrored into consumer accounts. AMI tags do not cross accounts and the
//! registry's parameters live in the bakery account, so each consumer account and region gets
//! the parameters a team reads there, under the consumer's prefix:
//! - `<prefix>/<image>/<version>`, `<prefix>/<image>/latest` and
//!   `<prefix>/<image>/channels/<channel>`: the AMI (data type `aws:ec2:image`);
//! - `<prefix>/<image>/channel-versions/<channel>`: the version a channel names;
//! - `<prefix>/<image>/meta/<version>`: the AMI and the `bakery:*` metadata (JSON): what
//!   `resolve`, `lock --check` and `outdated` read in a consumer account, revocations included.
//!
//! What the mirror should hold is worked out purely from the bakery account's registry
//! (`desired`), compared with what is there (`changes`), and only the difference is written.

use std::collections::BTreeMap;

use semver::Version;
use serde::{Deserialize, Serialize};

use super::aws::{channel_param, channel_version_param, latest_param, version_param, VersionView};
use crate::cloud::{ImageId, ImageInfo, SnapshotId, Tags};

/// The digest of the mirror as last written in full: a sync whose `desired` has the same one
/// reads one parameter instead of the whole mirror (GetParametersByPath returns 10 a page).
pub fn digest_param(prefix: &str, image: &str) -> String {
    format!("{prefix}/{image}/mirror-digest")
}

/// A digest of what the mirror should hold (names, values and data types).
pub fn digest(desired: &BTreeMap<String, Value>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (n, v) in desired {
        h.update(format!("{n}\t{}\t{}\n", v.ami, v.value).as_bytes());
    }
    hex::encode(h.finalize())
}

pub fn meta_param(prefix: &str, image: &str, v: &Version) -> String {
    format!("{prefix}/{image}/meta/{v}")
}

/// What a version's AMI in one region says, as its mirror parameter holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub version: Version,
    pub ami: String,
    pub name: String,
    pub state: String,
    pub created: String,
    pub architecture: String,
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebs_gb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation_time: Option<String>,
    /// The AMI's `bakery:*` tags (revocation reason, fingerprint, parent, ...).
    pub tags: Tags,
}

impl Meta {
    pub fn of(version: &Version, i: &ImageInfo) -> Self {
        Meta {
            version: version.clone(),
            ami: i.id.to_string(),
            name: i.name.clone(),
            state: i.state.clone(),
            created: i.creation_date.clone(),
            architecture: i.architecture.clone(),
            platform: i.platform.clone(),
            ebs_gb: i.ebs_gb,
            deprecation_time: i.deprecation_time.clone(),
            tags: i
                .tags
                .iter()
                .filter(|(k, _)| k.starts_with("bakery:"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The AMI as the registry's readers see it (no snapshots: they are the owner's).
    pub fn image(&self) -> ImageInfo {
        ImageInfo {
            id: ImageId(self.ami.clone()),
            name: self.name.clone(),
            state: self.state.clone(),
            state_reason: None,
            creation_date: self.created.clone(),
            root_device_name: None,
            architecture: self.architecture.clone(),
            platform: self.platform.clone(),
            snapshots: Vec::<SnapshotId>::new(),
            ebs_gb: self.ebs_gb,
            tags: self.tags.clone(),
            deprecation_time: self.deprecation_time.clone(),
            imds_support: None,
        }
    }
}

/// One mirror parameter's value; `ami` ones have the `aws:ec2:image` data type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub value: String,
    pub ami: bool,
}

/// The mirror of `image` in one region: every version with an AMI there (revoked ones too, so
/// a consumer's `lock --check` can say why), `latest` (the newest release that is not
/// revoked), and the channels of `channels` whose version has an AMI there.
pub fn desired(
    prefix: &str,
    image: &str,
    region: &str,
    versions: &[VersionView],
    channels: &BTreeMap<String, Version>,
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let ami = |v: &str| Value {
        value: v.to_string(),
        ami: true,
    };
    let text = |v: String| Value {
        value: v,
        ami: false,
    };
    fn in_region<'v>(region: &str, v: &'v VersionView) -> Option<(&'v VersionView, &'v ImageInfo)> {
        v.amis.get(region).map(|i| (v, i))
    }
    for (v, i) in versions.iter().filter_map(|v| in_region(region, v)) {
        out.insert(version_param(prefix, image, &v.version), ami(i.id.as_str()));
        let meta = serde_json::to_string(&Meta::of(&v.version, i)).unwrap_or_default();
        out.insert(meta_param(prefix, image, &v.version), text(meta));
    }
    let latest = versions
        .iter()
        .filter(|v| v.revoked.is_none() && v.version.pre.is_empty())
        .filter_map(|v| in_region(region, v))
        .max_by(|a, b| a.0.version.cmp(&b.0.version));
    if let Some((_, i)) = latest {
        out.insert(latest_param(prefix, image), ami(i.id.as_str()));
    }
    for (ch, version) in channels {
        let named = versions
            .iter()
            .filter(|v| &v.version == version && v.revoked.is_none())
            .find_map(|v| in_region(region, v));
        if let Some((_, i)) = named {
            out.insert(channel_param(prefix, image, ch), ami(i.id.as_str()));
            out.insert(
                channel_version_param(prefix, image, ch),
                text(version.to_string()),
            );
        }
    }
    out
}

/// Whether `name` is one of the mirror's own parameters of `image` (only those are removed).
fn owned(prefix: &str, image: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(&format!("{prefix}/{image}/")) else {
        return false;
    };
    match rest.split_once('/') {
        None => rest == "latest" || Version::parse(rest).is_ok(),
        Some(("channels" | "channel-versions", ch)) => !ch.is_empty() && !ch.contains('/'),
        Some(("meta", v)) => Version::parse(v).is_ok(),
        _ => false,
    }
}

/// What to write and what to remove so that `current` becomes `desired`. A sync may have read
/// the registry just before another runner published: so `latest` is never moved back (when it
/// names a newer version that is not revoked, it stays), and no version newer than the newest
/// `desired` knows is removed (prune never removes the newest).
pub fn changes(
    prefix: &str,
    image: &str,
    desired: &BTreeMap<String, Value>,
    current: &BTreeMap<String, String>,
) -> (BTreeMap<String, Value>, Vec<String>) {
    let mut puts: BTreeMap<String, Value> = desired
        .iter()
        .filter(|(n, v)| current.get(*n) != Some(&v.value))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let base = format!("{prefix}/{image}/");
    let version_in = |name: &str| {
        name.strip_prefix(&base)
            .and_then(|r| Version::parse(r).ok())
    };
    // AMI -> version, from both sides (the newer version may be only in the mirror).
    let versions: BTreeMap<&str, Version> = current
        .iter()
        .filter_map(|(n, v)| Some((v.as_str(), version_in(n)?)))
        .chain(
            desired
                .iter()
                .filter_map(|(n, v)| Some((v.value.as_str(), version_in(n)?))),
        )
        .collect();
    let newest_known = desired.keys().filter_map(|n| version_in(n)).max();
    let latest = latest_param(prefix, image);
    if let (Some(want), Some(have)) = (desired.get(&latest), current.get(&latest)) {
        let (w, h) = (
            versions.get(want.value.as_str()),
            versions.get(have.as_str()),
        );
        if let (Some(w), Some(h)) = (w, h) {
            let meta = meta_param(prefix, image, h);
            let revoked = desired
                .get(&meta)
                .map(|m| m.value.as_str())
                .or(current.get(&meta).map(String::as_str))
                .and_then(|m| serde_json::from_str::<Meta>(m).ok())
                .is_none_or(|m| m.tags.contains_key(super::tag::REVOKED));
            if h > w && !revoked {
                puts.remove(&latest);
            }
        }
    }
    let newer_than_known = |n: &str| {
        let v = version_in(n).or_else(|| {
            n.strip_prefix(&format!("{base}meta/"))
                .and_then(|r| Version::parse(r).ok())
        });
        matches!((v, &newest_known), (Some(v), Some(k)) if &v > k)
    };
    let deletes = current
        .keys()
        .filter(|n| !desired.contains_key(*n) && owned(prefix, image, n))
        .filter(|n| !newer_than_known(n))
        .cloned()
        .collect();
    (puts, deletes)
}

/// The versions of `image` as a consumer account's mirror lists them in one region, from the
/// `meta` parameters (`parameters`: name -> value, as GetParametersByPath returns them).
pub fn read(prefix: &str, image: &str, parameters: &[(String, String)]) -> Vec<(Version, Meta)> {
    let base = format!("{prefix}/{image}/meta/");
    let mut out: Vec<(Version, Meta)> = parameters
        .iter()
        .filter(|(n, _)| n.starts_with(&base))
        .filter_map(|(_, v)| serde_json::from_str::<Meta>(v).ok())
        .map(|m| (m.version.clone(), m))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(v: &str, ami: &str, revoked: Option<&str>) -> VersionView {
        let mut tags = Tags::new();
        if let Some(r) = revoked {
            tags.insert(super::super::tag::REVOKED.into(), r.into());
        }
        tags.insert("team".into(), "not mirrored".into());
        let info = Meta {
            version: Version::parse(v).unwrap(),
            ami: ami.into(),
            name: format!("demo-{v}"),
            state: "available".into(),
            created: "2026-12-01T00:00:00Z".into(),
            architecture: "x86_64".into(),
            platform: String::new(),
            ebs_gb: Some(8),
            deprecation_time: None,
            tags,
        }
        .image();
        VersionView {
            version: Version::parse(v).unwrap(),
            amis: [("eu-west-1".to_string(), info)].into(),
            revoked: revoked.map(str::to_string),
        }
    }

    fn values(m: &BTreeMap<String, Value>) -> BTreeMap<&str, &str> {
        m.iter()
            .filter(|(n, _)| !n.contains("/meta/"))
            .map(|(n, v)| (n.as_str(), v.value.as_str()))
            .collect()
    }

    #[test]
    fn mirror_names_every_version_latest_and_live_channels() {
        let vs = [
            view("1.0.0", "ami-1", None),
            view("1.0.1", "ami-2", Some("CVE")),
            view("1.1.0-rc.1", "ami-3", None),
        ];
        let channels = [
            ("stable".to_string(), Version::parse("1.0.0").unwrap()),
            ("bad".to_string(), Version::parse("1.0.1").unwrap()),
        ]
        .into();
        let d = desired("/p", "demo", "eu-west-1", &vs, &channels);
        assert_eq!(
            values(&d),
            BTreeMap::from([
                ("/p/demo/1.0.0", "ami-1"),
                ("/p/demo/1.0.1", "ami-2"),
                ("/p/demo/1.1.0-rc.1", "ami-3"),
                ("/p/demo/latest", "ami-1"),
                ("/p/demo/channels/stable", "ami-1"),
                ("/p/demo/channel-versions/stable", "1.0.0"),
            ])
        );
        let meta: Meta = serde_json::from_str(&d["/p/demo/meta/1.0.1"].value).unwrap();
        assert_eq!(
            meta.tags.get("bakery:revoked").map(String::as_str),
            Some("CVE")
        );
        assert!(!meta.tags.contains_key("team"), "only bakery:* tags cross");
        assert!(desired("/p", "demo", "us-east-1", &vs, &channels).is_empty());
    }

    #[test]
    fn changes_write_the_difference_and_never_move_latest_back() {
        let vs = [view("1.0.0", "ami-1", None), view("1.0.1", "ami-2", None)];
        let d = desired("/p", "demo", "eu-west-1", &vs, &BTreeMap::new());
        let current: BTreeMap<String, String> = d
            .iter()
            .map(|(n, v)| (n.clone(), v.value.clone()))
            .chain([
                ("/p/demo/0.9.0".to_string(), "ami-0".to_string()),
                ("/p/demo/notes".to_string(), "a team's own".to_string()),
                ("/p/other/1.0.0".to_string(), "ami-9".to_string()),
            ])
            .collect();
        let (puts, deletes) = changes("/p", "demo", &d, &current);
        assert!(puts.is_empty(), "nothing changed: {puts:?}");
        assert_eq!(deletes, vec!["/p/demo/0.9.0".to_string()]);

        // A sync that read the registry before 1.0.1 was published undoes nothing of it.
        let older = desired("/p", "demo", "eu-west-1", &vs[..1], &BTreeMap::new());
        let (puts, deletes) = changes("/p", "demo", &older, &current);
        assert!(!puts.contains_key("/p/demo/latest"), "{puts:?}");
        assert_eq!(deletes, vec!["/p/demo/0.9.0".to_string()]);

        // Revoked: latest moves back.
        let revoked = [
            view("1.0.0", "ami-1", None),
            view("1.0.1", "ami-2", Some("bad")),
        ];
        let d2 = desired("/p", "demo", "eu-west-1", &revoked, &BTreeMap::new());
        let (puts, _) = changes("/p", "demo", &d2, &current);
        assert_eq!(puts["/p/demo/latest"].value, "ami-1");
    }

    #[test]
    fn read_lists_versions_from_meta() {
        let vs = [
            view("1.0.1", "ami-2", Some("CVE")),
            view("1.0.0", "ami-1", None),
        ];
        let d = desired("/p", "demo", "eu-west-1", &vs, &BTreeMap::new());
        let params: Vec<(String, String)> = d
            .iter()
            .map(|(n, v)| (n.clone(), v.value.clone()))
            .collect();
        let got = read("/p", "demo", &params);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.ami, "ami-1");
        assert_eq!(got[1].1.image().tags["bakery:revoked"], "CVE");
    }
}
