//! Publish: the version's parameters (never overwritten; `latest` never moved back), then the
//! commit that makes it a version: every copy tagged `bakery:published`.

use std::collections::BTreeMap;
use std::time::Duration;

use semver::Version;

use super::capture::Captured;
use super::context::{Bake, Failure};
use super::distribute::Distributed;
use super::ledger::{State, Undo, When};
use super::preflight::Preflighted;
use super::test::Tested;
use crate::cloud::aws::{Aws, Regions};
use crate::cloud::cancel::Cancel;
use crate::cloud::wait::{Poll, Wait};
use crate::cloud::{CloudError, ImageId};
use crate::registry::{self, tag};

/// SSM validates `aws:ec2:image` parameters asynchronously (PutParameter docs, "DataType").
const PARAMETER_VISIBLE_WAIT: Duration = Duration::from_secs(120);
/// Writes of a pointer (`latest`) before giving up when other runners keep changing it.
const POINTER_TRIES: usize = 5;

impl Bake<'_> {
    /// The registry entries of the version (parameters, read back); the commit follows.
    /// Returns the parameters written (`region:name` -> value).
    pub(super) async fn publish(
        &mut self,
        pre: &Preflighted,
        cap: &Captured,
        d: &Distributed,
    ) -> Result<BTreeMap<String, String>, Failure> {
        let mut parameters = BTreeMap::new();
        let version = cap.version.clone();
        let prefix = self.target.ssm_prefix.clone();
        let image = self.image.name.to_string();
        let versioned = registry::aws::version_param(&prefix, &image, &version);
        let latest = registry::aws::latest_param(&prefix, &image);
        let copies: Vec<(String, Aws, ImageId)> = d
            .copies
            .iter()
            .map(|(r, (a, i))| (r.clone(), a.clone(), i.clone()))
            .collect();
        let registered = registry::aws::versions(&self.aws, &image).await?;
        // Another runner baked the same inputs while this one ran: one version per fingerprint.
        let fingerprint = pre.fingerprint.clone();
        if let Some(other) = registered.iter().find(|r| {
            r.published
                && !pre.known_versions.contains(&r.version)
                && r.image.tags.get(tag::FINGERPRINT) == Some(&fingerprint)
        }) {
            return Err(Failure::new(format!(
                "another runner published these exact inputs as {image} {} while this bake ran; this copy is removed",
                other.version
            )));
        }
        // The versions of the AMIs listed (a version's tag never changes): `point` need not
        // describe an AMI `latest` names when it is one of these.
        let known: BTreeMap<String, Version> = registered
            .iter()
            .map(|r| (r.image.id.to_string(), r.version.clone()))
            .collect();
        // `latest` is the newest published release: a hotfix of an older line or a
        // pre-release does not move it (and `point` never moves it back past a newer one).
        let newest = registered
            .into_iter()
            .filter(|r| r.published && r.revoked.is_none() && r.version.pre.is_empty())
            .map(|r| r.version)
            .max();
        let moves_latest = version.pre.is_empty() && newest.as_ref().is_none_or(|n| &version > n);
        for (region, aws, ami) in &copies {
            // The versioned parameter is the contract: never overwritten. The write itself is
            // the check (PutParameter without Overwrite fails if the name exists).
            // Journal first: if the put is interrupted, cleanup still knows the parameter may exist.
            let undo = Undo::RestoreParameter {
                region: region.clone(),
                name: versioned.clone(),
                previous: None,
                ours: Some(ami.to_string()),
            };
            self.journal.push(undo.clone(), When::OnFailure)?;
            if let Err(e) = aws
                .put_image_parameter(&versioned, ami.as_str(), false)
                .await
            {
                if e.code() != Some("ParameterAlreadyExists") {
                    return Err(e.into());
                }
                // Our own write, retried by the SDK after a lost answer, reads back as our AMI;
                // anything else is another runner's version.
                if aws.get_parameter(&versioned).await?.as_deref() != Some(ami.as_str()) {
                    self.journal.forget(&undo)?;
                    return Err(Failure::new(format!("{versioned} already exists in {region}: another runner took {image} {version} while this bake ran (versions are immutable); this copy is removed")));
                }
            }
        }
        // AWS validates `aws:ec2:image` values asynchronously: a write is visible once the
        // validation passed, so read back until it shows (bounded). In the build region
        // `latest` is written right after the versioned parameter, decided on what preflight
        // read (`point_on`), and the one read-back reads both. Elsewhere `latest` follows the
        // read-back: the first look also reads it, and `point` decides on that value when
        // nothing came between (a read-back that had to wait leaves `point` to read).
        let build = self.region();
        for (region, aws, ami) in &copies {
            let early = if moves_latest && *region == build {
                self.point_on(aws, &latest, ami, &version, &known, &pre.latest)
                    .await?
            } else {
                Early::NotTried
            };
            let wanted = if moves_latest {
                vec![versioned.clone(), latest.clone()]
            } else {
                vec![versioned.clone()]
            };
            let first = aws.get_parameters(&wanted).await?;
            let mut current = Some(first.get(&latest).cloned());
            if first.get(&versioned) != Some(&ami.to_string()) {
                read_back(aws, &versioned, ami, &self.cancel).await?;
                current = None;
            }
            parameters.insert(format!("{region}:{versioned}"), ami.to_string());
            let names_ours = match early {
                Early::Settled(ours) => ours,
                Early::Wrote { replaced } => {
                    // Until SSM validated the write, `latest` reads as the value it replaced.
                    let shown = match current.filter(|c| *c != replaced) {
                        Some(shown) => shown,
                        None => until_changed(aws, &latest, ami, &replaced, &self.cancel).await?,
                    };
                    // Neither: another runner wrote after this one; decide against its value.
                    shown.as_deref() == Some(ami.as_str())
                        || self
                            .point(aws, &latest, ami, &version, &known, Some(shown))
                            .await?
                }
                Early::NotTried => {
                    moves_latest
                        && self
                            .point(aws, &latest, ami, &version, &known, current)
                            .await?
                }
            };
            if names_ours {
                parameters.insert(format!("{region}:{latest}"), ami.to_string());
            }
        }
        // What this version was baked from is on its AMI (tags at creation), and the number
        // needs no record of its own: the listing and this version's parameter keep it taken,
        // and whatever removes that parameter (a prune of its line's highest number, the undo
        // of a bake that did not commit) records it in `issued` first.
        Ok(parameters)
    }

    /// `point` decided on `read` (value and SSM version) from before the versioned parameter was
    /// written, with no read of its own: the version the write makes tells whether anything was
    /// written in between. Where something was, the parameter's history says what this write
    /// replaced: a newer release is put back. The caller's read-back waits for the write to
    /// show.
    async fn point_on(
        &mut self,
        aws: &Aws,
        name: &str,
        ami: &ImageId,
        version: &Version,
        known: &BTreeMap<String, Version>,
        read: &(Option<String>, i64),
    ) -> Result<Early, Failure> {
        let (current, seen) = read;
        if current.as_deref() == Some(ami.as_str()) {
            return Ok(Early::Settled(true));
        }
        if self
            .left_on_newer(aws, name, current, version, known)
            .await?
        {
            return Ok(Early::Settled(false));
        }
        self.journal_pointer(aws, name, current, ami)?;
        let made = aws.put_image_parameter(name, ami.as_str(), true).await?;
        if made == seen + 1 {
            return Ok(Early::Wrote {
                replaced: current.clone(),
            });
        }
        // Another write came between the read and this one (or the SDK retried this one): the
        // value it replaced decides. A newer release (published, not revoked) is put back; an
        // older value, or another runner's version still on its way (its commit's converge
        // moves `latest` on), was rightly replaced.
        let history = aws.parameter_versions(name).await?;
        let replaced =
            registry::replaced_by(&history, made, ami.as_str()).map(|(_, v)| v.to_string());
        if let Some(value) = &replaced {
            if let Some(theirs) = release_of(aws, value).await?.filter(|v| v > version) {
                tracing::info!(parameter = %name, newer = %theirs, "another runner moved it to a newer release meanwhile: put back");
                aws.put_image_parameter(name, value, true).await?;
                return Ok(Early::Settled(false));
            }
        }
        Ok(Early::Wrote { replaced })
    }

    /// Whether the pointer `name` holding `current` names a newer version than `version` (it
    /// is left there: pointers never move backwards).
    async fn left_on_newer(
        &self,
        aws: &Aws,
        name: &str,
        current: &Option<String>,
        version: &Version,
        known: &BTreeMap<String, Version>,
    ) -> Result<bool, Failure> {
        let newer = self
            .newer_than(aws, current.as_deref(), version, known)
            .await?;
        if let Some(theirs) = &newer {
            tracing::info!(parameter = %name, newer = %theirs, "left on the newer version");
        }
        Ok(newer.is_some())
    }

    /// Journals the write of `ami` to the pointer `name` that holds `current` (undone on
    /// failure while it still holds `ami`).
    fn journal_pointer(
        &mut self,
        aws: &Aws,
        name: &str,
        current: &Option<String>,
        ami: &ImageId,
    ) -> Result<(), Failure> {
        self.journal.push(
            Undo::RestoreParameter {
                region: aws.region.to_string(),
                name: name.to_string(),
                previous: current.clone(),
                ours: Some(ami.to_string()),
            },
            When::OnFailure,
        )?;
        Ok(())
    }

    /// The version `value` (an AMI id a pointer holds) is, when newer than `version`.
    async fn newer_than(
        &self,
        aws: &Aws,
        value: Option<&str>,
        version: &Version,
        known: &BTreeMap<String, Version>,
    ) -> Result<Option<Version>, Failure> {
        let Some(value) = value else {
            return Ok(None);
        };
        let theirs = match known.get(value) {
            Some(v) => Some(v.clone()),
            None => version_of(aws, value).await?,
        };
        Ok(theirs.filter(|v| v > version))
    }

    /// Points `name` (in the region of `aws`) at `ami` unless it already names a newer version of
    /// the image: pointers never move backwards. Reads back after writing; when another runner
    /// wrote in between, decides again against its value. Returns whether it names `ami` now.
    /// `known`: versions of AMIs already listed (AMI ids are unique across regions). `read`:
    /// the value of `name` the call before read (the first try decides on it), or `None` to
    /// read it here.
    async fn point(
        &mut self,
        aws: &Aws,
        name: &str,
        ami: &ImageId,
        version: &Version,
        known: &BTreeMap<String, Version>,
        mut read: Option<Option<String>>,
    ) -> Result<bool, Failure> {
        let mut journaled = false;
        for _ in 0..POINTER_TRIES {
            let current = match read.take() {
                Some(r) => r,
                None => aws.get_parameter(name).await?,
            };
            if current.as_deref() == Some(ami.as_str()) {
                return Ok(true);
            }
            if self
                .left_on_newer(aws, name, &current, version, known)
                .await?
            {
                return Ok(false);
            }
            if !journaled {
                self.journal_pointer(aws, name, &current, ami)?;
                journaled = true;
            }
            aws.put_image_parameter(name, ami.as_str(), true).await?;
            // The write shows once SSM validated it; a value that is neither the old one nor
            // ours was written by another runner after us.
            let back = until_changed(aws, name, ami, &current, &self.cancel).await?;
            if back.as_deref() == Some(ami.as_str()) {
                return Ok(true);
            }
        }
        Err(Failure::new(format!(
            "{name} in {} kept changing while this bake moved it to {ami}",
            aws.region
        )))
    }

    /// The commit: every copy tagged `bakery:published`, then the journal says Published. From
    /// here on this is a version others may resolve, and nothing (failure, interrupt, cleanup,
    /// gc) undoes it. A copy that could not be marked (past the SDK's retries) is reported with
    /// the command that finishes the commit; the version stands. The same call ends the lease
    /// on the copy and its snapshots (`bakery:expires` = `never`): a version does not expire,
    /// and there is no moment between the mark and the lease's end for a kill to land in.
    pub(super) async fn commit(&mut self, d: &Distributed, tested: &Tested) -> Result<(), Failure> {
        if self.cancel.is_cancelled() {
            return Err(CloudError::Cancelled.into());
        }
        let published = super::undo::commit_tags(tested.tag());
        let mut marked = 0;
        let mut unmarked = Vec::new();
        for (region, (aws, ami)) in &d.copies {
            let mut ids = vec![ami.to_string()];
            ids.extend(
                d.snapshots
                    .get(region)
                    .into_iter()
                    .flatten()
                    .map(|s| s.to_string()),
            );
            match aws.tag_resources(&ids, &published).await {
                Ok(()) => marked += 1,
                Err(e) => unmarked.push(format!("{ami} in {region} ({e})")),
            }
        }
        if marked == 0 {
            // None marked, as far as the answers go: a lost answer may still have marked one.
            let mut regions = Regions::in_fleet(self.target, &self.opts.fleet);
            if !super::undo::committed(&mut regions, &self.journal)
                .await
                .unwrap_or(true)
            {
                return Err(Failure::new(format!(
                    "could not mark the version published: {}",
                    unmarked.join(", ")
                )));
            }
        }
        self.journal.set_state(State::Published)?;
        if !unmarked.is_empty() {
            self.warn(format!(
                "published, but not yet marked so in every region: {}; finish with: bakery cleanup {} --target {}",
                unmarked.join(", "),
                self.bake_id,
                self.target.name
            ));
        }
        Ok(())
    }
}

/// What `point_on` did with `latest`.
enum Early {
    /// Not tried (not the build region, or `latest` does not move).
    NotTried,
    /// Nothing (more) to wait for: whether it names this bake's AMI.
    Settled(bool),
    /// Written: it shows once SSM validated it, reading as `replaced` until then.
    Wrote { replaced: Option<String> },
}

/// Reads `name` until it no longer holds `from` (a write of `ami` shows once SSM validated it);
/// returns what it holds then.
async fn until_changed(
    aws: &Aws,
    name: &str,
    ami: &ImageId,
    from: &Option<String>,
    cancel: &Cancel,
) -> Result<Option<String>, CloudError> {
    Wait::brief(
        format!("parameter {name} in {}", aws.region),
        format!("= {ami}"),
        PARAMETER_VISIBLE_WAIT,
    )
    .until(cancel, || async {
        let b = aws.get_parameter(name).await?;
        Ok(if &b == from {
            Poll::Pending {
                state: format!("{b:?}"),
                reason: None,
            }
        } else {
            Poll::Ready(b)
        })
    })
    .await
}

/// Reads `name` back until it names `ami` (SSM validates `aws:ec2:image` values asynchronously).
async fn read_back(
    aws: &Aws,
    name: &str,
    ami: &ImageId,
    cancel: &Cancel,
) -> Result<(), CloudError> {
    Wait::new(
        format!("parameter {name} in {}", aws.region),
        format!("= {ami}"),
        PARAMETER_VISIBLE_WAIT,
    )
    .until(cancel, || async {
        let back = aws.get_parameter(name).await?;
        Ok(if back.as_deref() == Some(ami.as_str()) {
            Poll::Ready(())
        } else {
            Poll::Pending {
                state: format!("{back:?}"),
                reason: None,
            }
        })
    })
    .await
}

/// The version an AMI of bakery's is when it is a release `latest` may name: published, not
/// revoked, not a pre-release (`None` otherwise, or when it is gone).
async fn release_of(aws: &Aws, ami: &str) -> Result<Option<Version>, CloudError> {
    Ok(aws
        .describe_image(&ImageId(ami.to_string()))
        .await?
        .filter(|i| i.tags.contains_key(tag::PUBLISHED) && !i.tags.contains_key(tag::REVOKED))
        .and_then(|i| Version::parse(i.tags.get(tag::VERSION)?).ok())
        .filter(|v| v.pre.is_empty()))
}

/// The version an AMI of bakery's is (`None` for an AMI that is gone or not a version).
async fn version_of(aws: &Aws, ami: &str) -> Result<Option<Version>, CloudError> {
    Ok(aws
        .describe_image(&ImageId(ami.to_string()))
        .await?
        .and_then(|i| Version::parse(i.tags.get(tag::VERSION)?).ok()))
}
