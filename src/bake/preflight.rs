//! Preflight: the source AMI, the fingerprint, the version, and every precondition of the
//! launch, checked before anything is created.

use std::collections::{BTreeMap, BTreeSet};

use semver::Version;

use super::context::{Bake, Failure};
use super::FailKind;
use crate::catalog::model::{OrgUnit, Platform, Source};
use crate::cloud::aws::{kms, GET_PARAMETERS_BATCH};
use crate::cloud::{ImageId, ImageInfo};
use crate::registry::{self};

/// What preflight established.
pub(super) struct Preflighted {
    pub(super) source: ImageInfo,
    /// `image@version` of the parent image, when layered.
    pub(super) parent: Option<String>,
    pub(super) fingerprint: String,
    /// The version this bake means to publish (capture may move to a later patch).
    pub(super) version: Version,
    /// Versions registered when this bake started (to tell a concurrent runner's from older).
    pub(super) known_versions: BTreeSet<Version>,
    /// `latest` in the build region as read here, with its SSM version (0: not set): publish
    /// decides on it, and the version its own write makes tells whether anything came between.
    pub(super) latest: (Option<String>, i64),
}

/// Tries to find a free AMI name when another runner took ours.
pub(super) const MAX_NAME_TRIES: u64 = 20;

/// Whether a KMS key id, ARN or alias is the AWS managed EBS key, which AWS does not let an
/// account share: snapshots encrypted with it cannot be shared, nor their AMIs launched
/// elsewhere.
pub(super) fn aws_managed_ebs_key(key: &str) -> bool {
    key == "alias/aws/ebs" || key.ends_with(":alias/aws/ebs")
}

impl Bake<'_> {
    /// An image shared with other accounts needs, in every publish region, a customer managed
    /// KMS key for its (always encrypted) snapshots: the target's `kms_keys` / `kms_key`, else
    /// the account's default EBS key (GetEbsDefaultKmsKeyId). The AWS managed `aws/ebs` is
    /// refused here, before anything is created, instead of an hour later when sharing fails.
    async fn check_sharing_keys(&self) -> Result<(), Failure> {
        let share = &self.image.publish.share;
        for region in self.publish_regions() {
            let accounts = self.target.share_accounts(&share.accounts, &region);
            if accounts.is_empty() && share.ous.is_empty() && share.organizations.is_empty() {
                continue;
            }
            let configured = self
                .target
                .kms_keys
                .get(&region)
                .or(self.target.kms_key.as_ref())
                .cloned();
            let aws = self
                .opts
                .fleet
                .connect(self.target, &crate::catalog::model::Region(region.clone()))
                .await;
            let (key, whence) = match configured {
                Some(k) => (k, format!("target {}'s kms key", self.target.name)),
                None => (
                    aws.ebs_default_kms_key().await?,
                    "the account's default EBS key".into(),
                ),
            };
            // An alias or id of the AWS managed key is known by its manager, not its name.
            let info = if aws_managed_ebs_key(&key) {
                None
            } else {
                Some(aws.kms_key(&key).await?)
            };
            if info.as_ref().is_none_or(|i| i.manager == "AWS") {
                return Err(Failure {
                    kind: FailKind::Invalid,
                    code: None,
                    cause: format!(
                        "{} is shared with other accounts, but its snapshots in {region} would be encrypted with {key} ({whence}), the AWS managed key, which AWS does not let you share: set kms_keys.{region} (or kms_key) in target {} to a customer managed key whose key policy lets the consumer accounts use it (kms:Decrypt, kms:DescribeKey, kms:CreateGrant, kms:ReEncrypt*, kms:GenerateDataKey*)",
                        self.image.name, self.target.name
                    ),
                });
            }
            // A customer key: its policy must let every account, organization and OU the image
            // is shared with use it.
            let Some(info) = info else { continue };
            let policy = info.policy.unwrap_or_default();
            let bad_policy = |e: String| Failure::new(format!("key {} in {region}: {e}", info.arn));
            let mut lacking: Vec<String> = Vec::new();
            let mut actions: Vec<&str> = Vec::new();
            for account in &accounts {
                let missing = kms::missing_actions(&policy, account).map_err(bad_policy)?;
                if !missing.is_empty() {
                    lacking.push(account.clone());
                    actions.extend(missing);
                }
            }
            let mut lacking_units: Vec<OrgUnit> = Vec::new();
            for arn in share.organizations.iter().chain(&share.ous) {
                let unit = OrgUnit::parse(arn).ok_or_else(|| Failure {
                    kind: FailKind::Invalid,
                    code: None,
                    cause: format!("{arn} is not an organization or organizational unit ARN"),
                })?;
                let missing = kms::missing_actions_for_unit(&policy, &unit).map_err(bad_policy)?;
                if !missing.is_empty() {
                    lacking_units.push(unit);
                    actions.extend(missing);
                }
            }
            if !lacking.is_empty() || !lacking_units.is_empty() {
                actions.sort_unstable();
                actions.dedup();
                let mut who: Vec<String> = lacking.clone();
                who.extend(lacking_units.iter().map(|u| u.to_string()));
                let mut statements = Vec::new();
                if !lacking.is_empty() {
                    statements.push(kms::consumer_statement(&lacking));
                }
                if !lacking_units.is_empty() {
                    statements.extend(kms::unit_statements(&lacking_units));
                }
                let mut shared_with: Vec<String> = accounts.clone();
                shared_with.extend(share.organizations.iter().chain(&share.ous).cloned());
                return Err(Failure {
                    kind: FailKind::Invalid,
                    code: None,
                    cause: format!(
                        "{} is shared with {}, but the key policy of {} ({whence}, {region}) does not let {} use the key ({} missing), so they could not launch the AMI; add {} to the key policy (or use a key that has {}):\n{}",
                        self.image.name,
                        shared_with.join(", "),
                        info.arn,
                        who.join(", "),
                        actions.join(", "),
                        if statements.len() > 1 { "these statements" } else { "this statement" },
                        if statements.len() > 1 { "them" } else { "it" },
                        statements.join(",\n")
                    ),
                });
            }
        }
        Ok(())
    }

    /// The source AMI (and parent version) the image starts from, checked against the image,
    /// and the full fingerprint with it. `parameter`: for a source that is an SSM parameter, its
    /// value as preflight's one GetParameters read it (`None`: it does not exist).
    async fn resolve_source(
        &self,
        parameter: Option<String>,
    ) -> Result<(ImageInfo, Option<String>, String), Failure> {
        let aws = &self.aws;
        let (info, parent) = match &self.image.source {
            Source::Ami(id) => (
                aws.describe_image(&ImageId(id.clone()))
                    .await?
                    .ok_or_else(|| {
                        Failure::new(format!("source AMI {id} does not exist in {}", aws.region))
                    })?,
                None,
            ),
            Source::SsmParameter(p) => {
                let id = parameter.ok_or_else(|| {
                    Failure::new(format!(
                        "SSM parameter {p} does not exist in {}",
                        aws.region
                    ))
                })?;
                let info = aws
                    .describe_image(&ImageId(id.clone()))
                    .await?
                    .ok_or_else(|| {
                        Failure::new(format!(
                            "SSM parameter {p} names {id}, which does not exist in {}",
                            aws.region
                        ))
                    })?;
                (info, None)
            }
            Source::AmiFilter {
                name,
                owners,
                architecture,
            } => {
                let newest = aws
                    .newest_image(name, owners, architecture.as_str())
                    .await?
                    .ok_or_else(|| {
                        Failure::new(format!(
                            "no available AMI named {name} owned by {} in {}",
                            owners.join(", "),
                            aws.region
                        ))
                    })?;
                (newest, None)
            }
            Source::Image { name, req } => {
                let r =
                    registry::aws::resolve_parent(aws, &self.target.ssm_prefix, name.as_str(), req)
                        .await?;
                let parent = format!("{name}@{}", r.version);
                (r.image, Some(parent))
            }
        };
        if info.state != "available" {
            return Err(Failure::new(format!(
                "source AMI {} is {}, not available",
                info.id, info.state
            )));
        }
        let windows = info.platform.eq_ignore_ascii_case("windows");
        if windows != (self.image.platform == Platform::Windows) {
            return Err(Failure::new(format!(
                "source AMI {} is a {} AMI but {} is a {} image",
                info.id,
                if windows { "Windows" } else { "Linux" },
                self.image.name,
                self.image.platform.as_str()
            )));
        }
        if info.architecture != self.image.architecture.as_str() {
            return Err(Failure::new(format!(
                "source AMI {} is {}, the image is {}",
                info.id,
                info.architecture,
                self.image.architecture.as_str()
            )));
        }
        let fingerprint = self
            .plan
            .fingerprint
            .with_source(info.id.as_str(), parent.as_deref())
            .to_string();
        Ok((info, parent, fingerprint))
    }

    /// Resolves the source, picks the next free version, and checks what the launch will need
    /// exists: nothing is created here.
    pub(super) async fn preflight(&mut self) -> Result<Preflighted, Failure> {
        // An SSM parameter source is read with the registry's parameters below (one
        // GetParameters, not a GetParameter of its own); any other source is resolved alongside
        // the listing and the prerequisites. Their errors are reported in the order of the
        // checks, whichever answers first.
        let source_parameter = match &self.image.source {
            Source::SsmParameter(p) => Some(p.clone()),
            _ => None,
        };
        let (early_source, registered, prerequisites) = tokio::join!(
            async {
                match source_parameter {
                    Some(_) => None,
                    None => Some(self.resolve_source(None).await),
                }
            },
            registry::aws::versions(&self.aws, self.image.name.as_str()),
            self.launch_prerequisites(),
        );
        if let Some(Err(e)) = early_source {
            return Err(e);
        }
        // Next free version (AMI names must be unique; the emulator does not enforce it).
        let registered = registered?;
        // AMI names this image's versions hold (a name another AMI of the account holds makes
        // CreateImage fail; capture then takes the next patch).
        let names: std::collections::BTreeSet<String> =
            registered.iter().map(|r| r.image.name.clone()).collect();
        let existing: Vec<Version> = registered.iter().map(|r| r.version.clone()).collect();
        let known_versions = existing.iter().cloned().collect();
        // What this bake changes, against the newest published version that is not revoked
        // (its recorded inputs are read with the parameters below: no call of its own).
        let newest = registered
            .iter()
            .rev()
            .find(|r| r.published && r.revoked.is_none())
            .map(|r| (r.version.clone(), r.image.tags.clone()));
        let mut v = registry::next_version(&existing, self.image.version);
        let issued = registry::aws::issued_param(
            &self.target.ssm_prefix,
            self.image.name.as_str(),
            self.image.version.major,
            self.image.version.minor,
        );
        let param_of = |v: &Version| format!("{}/{}/{v}", self.target.ssm_prefix, self.image.name);
        // Recorded on its AMI; a version published before that kept them in a parameter.
        let tagged_inputs = newest
            .as_ref()
            .and_then(|(_, tags)| registry::inputs_of(tags));
        let recorded_inputs = newest
            .as_ref()
            .filter(|_| tagged_inputs.is_none())
            .map(|(v, _)| {
                registry::aws::inputs_param(&self.target.ssm_prefix, self.image.name.as_str(), v)
            });
        // One read (GetParameters takes 10 names) for the highest number issued, `latest`, the
        // source parameter, the parameters of the next few numbers and (for a version published
        // before inputs were tags) the previous version's recorded inputs.
        let latest = registry::aws::latest_param(&self.target.ssm_prefix, self.image.name.as_str());
        let ahead = GET_PARAMETERS_BATCH as u64
            - 2
            - u64::from(recorded_inputs.is_some())
            - u64::from(source_parameter.is_some());
        let mut wanted = vec![issued.clone(), latest.clone()];
        wanted.extend((0..ahead).map(|k| {
            param_of(&Version {
                patch: v.patch + k,
                ..v.clone()
            })
        }));
        wanted.extend(recorded_inputs.clone());
        wanted.extend(source_parameter.clone());
        let read = self.aws.get_parameters_versioned(&wanted).await?;
        let latest = read
            .get(&latest)
            .map_or((None, 0), |(v, n)| (Some(v.clone()), *n));
        let read: BTreeMap<String, String> = read.into_iter().map(|(n, (v, _))| (n, v)).collect();
        let source = match early_source {
            Some(resolved) => resolved,
            None => {
                let value = source_parameter.as_ref().and_then(|p| read.get(p).cloned());
                self.resolve_source(value).await
            }
        };
        let (source, parent, fingerprint) = source?;
        self.reasons = match &newest {
            None => vec!["new".into()],
            Some((v, tags)) if tags.get(registry::tag::FINGERPRINT) == Some(&fingerprint) => {
                vec![format!("unchanged since {v} (baked on request)")]
            }
            Some((_, tags)) => registry::changes::change_reasons(
                tags,
                source.id.as_str(),
                parent.as_deref(),
                &self.plan.inputs,
                tagged_inputs.as_deref().or(recorded_inputs
                    .as_ref()
                    .and_then(|p| read.get(p))
                    .map(String::as_str)),
            ),
        };
        if let Some(hwm) = read.get(&issued).and_then(|p| p.parse::<u64>().ok()) {
            v.patch = v.patch.max(hwm + 1);
        }
        // Every publish region must be one of the target's: the registry reads those.
        for r in self.publish_regions() {
            if !self.target.regions.iter().any(|t| t.as_str() == r) {
                return Err(Failure::new(format!(
                    "publish region {r} is not one of target {}'s regions",
                    self.target.name
                )));
            }
        }
        self.check_sharing_keys().await?;
        // A version is free when neither its AMI name nor its parameter exists (a failed bake of
        // another runner may have left one of them for a moment).
        let mut free = false;
        for _ in 0..MAX_NAME_TRIES {
            let name = registry::ami_name(self.image.name.as_str(), &v);
            let param = param_of(&v);
            let param_taken = match wanted.contains(&param) {
                true => read.contains_key(&param),
                false => self.aws.get_parameter(&param).await?.is_some(),
            };
            if !names.contains(&name) && !param_taken {
                free = true;
                break;
            }
            v.patch += 1;
        }
        if !free {
            return Err(Failure::new(format!(
                "no free version of {} {} after {MAX_NAME_TRIES} tries: AMI names or parameters are taken",
                self.image.name, self.image.version
            )));
        }
        self.journal.version = Some(v.to_string());
        self.journal.save()?;
        // Reported where it was checked before the reads went out together.
        prerequisites?;
        Ok(Preflighted {
            source,
            parent,
            fingerprint,
            version: v,
            known_versions,
            latest,
        })
    }

    /// What the launch names that exists before it (subnet, instance profile, S3 bucket,
    /// security group), checked.
    async fn launch_prerequisites(&self) -> Result<(), Failure> {
        if let Some(s) = &self.target.subnet {
            self.aws.subnet_vpc(s).await?;
        }
        if let Some(p) = &self.target.instance_profile {
            if !self.aws.instance_profile_exists(p).await? {
                return Err(Failure::new(format!("instance profile {p} does not exist")));
            }
        }
        if let (true, Some(b)) = (self.ssm(), &self.target.s3_bucket) {
            if !self.aws.bucket_exists(b).await? {
                return Err(Failure::new(format!(
                    "S3 bucket {b} (s3_bucket of target {}) does not exist or is not reachable",
                    self.target.name
                )));
            }
        }
        if let Some(sg) = &self.target.security_group {
            if !self.aws.security_group_exists(sg).await? {
                return Err(Failure::new(format!(
                    "security group {sg} does not exist in {}",
                    self.region()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::aws_managed_ebs_key;

    #[test]
    fn the_aws_managed_ebs_key_in_every_spelling() {
        assert!(aws_managed_ebs_key("alias/aws/ebs"));
        assert!(aws_managed_ebs_key(
            "arn:aws:kms:eu-west-1:123456789012:alias/aws/ebs"
        ));
        assert!(!aws_managed_ebs_key(
            "arn:aws:kms:eu-west-1:123456789012:key/0d1e2f3a"
        ));
        assert!(!aws_managed_ebs_key("alias/platform-ebs"));
        assert!(!aws_managed_ebs_key(
            "arn:aws:kms:eu-west-1:123456789012:alias/aws/ebs-copy"
        ));
    }
}
