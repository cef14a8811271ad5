//! The registry: versions of images, kept in AWS itself (AMI tags and SSM parameters). This
//! module is the pure version arithmetic; `aws` reads and writes it.

pub mod aws;
pub mod changes;
pub mod consumers;
pub mod mirror;
pub mod prune;

use semver::Version;

use crate::catalog::model::{MajorMinor, ParentReq};

/// Tag keys bakery writes (the `bakery:` prefix is reserved for them).
pub mod tag {
    pub const IMAGE: &str = "bakery:image";
    pub const VERSION: &str = "bakery:version";
    pub const FINGERPRINT: &str = "bakery:fingerprint";
    pub const SOURCE_AMI: &str = "bakery:source-ami";
    pub const PARENT: &str = "bakery:parent";
    pub const BAKE_ID: &str = "bakery:bake-id";
    pub const CREATED_BY: &str = "bakery:created-by";
    /// The bake's lease (RFC 3339) on what it created; see `NEVER` for a version's.
    pub const EXPIRES: &str = "bakery:expires";
    /// `bakery:expires` of a published version's AMIs and snapshots, written by the commit:
    /// not a time, so no lease (a version does not expire with the bake that made it).
    pub const NEVER: &str = "never";
    pub const REVOKED: &str = "bakery:revoked";
    /// Set when publish finished: only published AMIs are versions.
    pub const PUBLISHED: &str = "bakery:published";
    /// When the version passed its test checks on a fresh instance (RFC 3339), or `skipped`.
    pub const TESTED: &str = "bakery:tested";
    /// How many KB articles Windows Update installed during the bake (the report lists them).
    pub const KBS: &str = "bakery:kbs";
    /// What the version was baked from (`plan`'s reasons): the JSON of fingerprint input label
    /// -> hash prefix, split over `bakery:inputs`, `bakery:inputs:2`, ... (see `inputs_tags`).
    pub const INPUTS: &str = "bakery:inputs";
}

/// EC2 takes at most 50 tags per resource and 256 characters per tag value (EC2 User Guide,
/// "Tag restrictions").
pub const EC2_TAGS_MAX: usize = 50;
pub const EC2_TAG_VALUE_MAX: usize = 256;

/// The tags that record `json` (a version's inputs) on its AMI and snapshots: 256 characters a
/// value, in order. Versions published before these tags kept it in an SSM parameter instead
/// (`aws::inputs_param`), which readers still fall back on.
pub fn inputs_tags(json: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = json.chars().collect();
    chars
        .chunks(EC2_TAG_VALUE_MAX)
        .enumerate()
        .map(|(i, c)| {
            let key = match i {
                0 => tag::INPUTS.to_string(),
                n => format!("{}:{}", tag::INPUTS, n + 1),
            };
            (key, c.iter().collect())
        })
        .collect()
}

/// What a write of `ours` that SSM numbered `made` replaced, from the parameter's `history`
/// ((version, value), oldest first): the newest earlier value that is not `ours` (an SDK retry
/// of the same write makes two versions of it), with its version. `None`: nothing (the
/// parameter did not exist before, or was deleted and made anew by this write).
pub fn replaced_by<'a>(
    history: &'a [(i64, String)],
    made: i64,
    ours: &str,
) -> Option<(i64, &'a str)> {
    history
        .iter()
        .filter(|(n, v)| *n < made && v != ours)
        .max_by_key(|(n, _)| *n)
        .map(|(n, v)| (*n, v.as_str()))
}

/// The inputs `inputs_tags` recorded in `tags`, if any.
pub fn inputs_of(tags: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let mut out = tags.get(tag::INPUTS)?.clone();
    for n in 2.. {
        match tags.get(&format!("{}:{n}", tag::INPUTS)) {
            Some(part) => out.push_str(part),
            None => break,
        }
    }
    Some(out)
}

/// The AMI name of a version: `<image>-<version>`.
pub fn ami_name(image: &str, v: &Version) -> String {
    format!("{image}-{v}")
}

/// The next version for `mm`: one past the highest patch already registered for that
/// major.minor (pre-releases count as taken), or `.0`.
pub fn next_version(existing: &[Version], mm: MajorMinor) -> Version {
    let patch = existing
        .iter()
        .filter(|v| v.major == mm.major && v.minor == mm.minor)
        .map(|v| v.patch + 1)
        .max()
        .unwrap_or(0);
    Version::new(mm.major, mm.minor, patch)
}

/// The version a requirement resolves to: the highest matching version that is not revoked.
/// `versions` pairs each registered version with its revocation reason, if revoked. When only
/// revoked versions match, the error quotes their reasons. Channels other than `latest` are
/// resolved by the registry's channel parameters, not here.
pub fn resolve<'a>(
    req: &ParentReq,
    versions: impl IntoIterator<Item = (&'a Version, Option<&'a str>)>,
) -> Result<&'a Version, String> {
    let matching: Vec<(&Version, Option<&str>)> = versions
        .into_iter()
        .filter(|(v, _)| match req {
            ParentReq::Semver(r) => r.matches(v),
            ParentReq::Channel(c) => c == "latest" && v.pre.is_empty(),
        })
        .collect();
    if let Some(v) = matching
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(v, _)| *v)
        .max()
    {
        return Ok(v);
    }
    let revoked: Vec<String> = matching
        .iter()
        .filter_map(|(v, r)| r.map(|r| format!("{v} was revoked: {r}")))
        .collect();
    if revoked.is_empty() {
        Err(format!("no version matches `{req}`"))
    } else {
        Err(format!(
            "every version matching `{req}` is revoked ({})",
            revoked.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn inputs_round_trip_through_tags() {
        let long: String = (0..40)
            .map(|i| format!("\"file recipes/r/files/é{i}.ps1\":\"0123456789abcdef\","))
            .collect();
        let json = format!("{{{}}}", long.trim_end_matches(','));
        let tags = inputs_tags(&json);
        assert!(tags.len() > 1, "split: {}", json.chars().count());
        assert!(tags
            .iter()
            .all(|(_, v)| v.chars().count() <= EC2_TAG_VALUE_MAX));
        assert_eq!(tags[0].0, "bakery:inputs");
        assert_eq!(tags[1].0, "bakery:inputs:2");
        let map: std::collections::BTreeMap<String, String> = tags.into_iter().collect();
        assert_eq!(inputs_of(&map).as_deref(), Some(json.as_str()));
        assert_eq!(inputs_of(&Default::default()), None);
        assert_eq!(inputs_tags(""), vec![]);
    }

    #[test]
    fn a_write_replaced_the_newest_earlier_value_not_its_own() {
        let h = |v: &[(i64, &str)]| -> Vec<(i64, String)> {
            v.iter().map(|(n, s)| (*n, s.to_string())).collect()
        };
        let history = h(&[(1, "a"), (2, "b"), (3, "ours")]);
        assert_eq!(replaced_by(&history, 3, "ours"), Some((2, "b")));
        // An SDK retry wrote ours twice: what came before both.
        let history = h(&[(1, "a"), (2, "ours"), (3, "ours")]);
        assert_eq!(replaced_by(&history, 3, "ours"), Some((1, "a")));
        // Made anew (deleted since the read): nothing before it.
        assert_eq!(replaced_by(&h(&[(1, "ours")]), 1, "ours"), None);
    }

    #[test]
    fn next_patch() {
        let mm = MajorMinor { major: 1, minor: 4 };
        assert_eq!(next_version(&[], mm), v("1.4.0"));
        assert_eq!(
            next_version(&[v("1.4.0"), v("1.4.2"), v("1.5.7"), v("1.3.9")], mm),
            v("1.4.3")
        );
        assert_eq!(next_version(&[v("1.4.3-rc.1")], mm), v("1.4.4"));
    }

    #[test]
    fn resolving() {
        let vs = [
            v("1.0.0"),
            v("1.2.0"),
            v("1.3.0"),
            v("2.0.0"),
            v("2.1.0-rc.1"),
        ];
        let req = |s: &str| ParentReq::Semver(semver::VersionReq::parse(s).unwrap());
        let all = |revoked: &[&str]| {
            vs.iter()
                .map(|x| {
                    (
                        x,
                        revoked
                            .contains(&x.to_string().as_str())
                            .then_some("CVE-2026-1"),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(resolve(&req("^1"), all(&[])), Ok(&v("1.3.0")));
        assert_eq!(
            resolve(&req("^1"), all(&["1.3.0"])),
            Ok(&v("1.2.0")),
            "the newest revoked: the next one"
        );
        assert_eq!(resolve(&req("~1.2"), all(&[])), Ok(&v("1.2.0")));
        assert_eq!(
            resolve(&req("=2.1.0-rc.1"), all(&[])),
            Ok(&v("2.1.0-rc.1")),
            "pre-releases only when asked for"
        );
        assert_eq!(resolve(&req("^2"), all(&[])), Ok(&v("2.0.0")));
        assert_eq!(
            resolve(&ParentReq::Channel("latest".into()), all(&[])),
            Ok(&v("2.0.0"))
        );
        assert_eq!(
            resolve(&req("^3"), all(&[])),
            Err("no version matches `^3`".into())
        );
        assert_eq!(
            resolve(&req("=1.3.0"), all(&["1.3.0"])),
            Err(
                "every version matching `=1.3.0` is revoked (1.3.0 was revoked: CVE-2026-1)".into()
            )
        );
        // Deterministic: the order of the input does not matter.
        let mut rev = all(&[]);
        rev.reverse();
        assert_eq!(resolve(&req("^1"), rev), Ok(&v("1.3.0")));
    }
}
