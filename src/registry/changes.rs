//! `bakery plan`: what needs baking and why. Sources are resolved now, the full fingerprint is
//! compared with the newest published version's, and a change is traced to the inputs (files,
//! recipes, parameters), the source AMI or the parent version that moved. The registry is read
//! with one DescribeImages for the whole catalog (build region).

use std::collections::BTreeMap;

use semver::Version;
use serde::Serialize;

use super::aws::inputs_param;
use super::tag;
use crate::catalog::model::{ImageName, ParentReq, Source, Target};
use crate::catalog::{graph, Catalog};
use crate::cloud::aws::Aws;
use crate::cloud::{CloudError, ImageInfo};
use crate::plan::{FingerprintInput, Planner};

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    UpToDate { version: String },
    New,
    Changed { since: String, reasons: Vec<String> },
    Blocked { reason: String },
}

impl Status {
    pub fn bakes(&self) -> bool {
        matches!(self, Status::New | Status::Changed { .. })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub image: String,
    #[serde(flatten)]
    pub status: Status,
    pub fingerprint: Option<String>,
    pub source_ami: Option<String>,
    pub parent: Option<String>,
}

/// Why a bake from `ami` (and `parent`, `image@version`) with `inputs` differs from the version
/// whose tags are `old` and whose recorded inputs (the JSON of label -> hash prefix its AMI's
/// `bakery:inputs` tags hold) are `recorded`: `source ami-a -> ami-b`, `parent 1.0.3 -> 1.0.4`, `changed <input>`,
/// `added <input>`, `removed <input>`.
pub fn change_reasons(
    old: &BTreeMap<String, String>,
    ami: &str,
    parent: Option<&str>,
    inputs: &[FingerprintInput],
    recorded: Option<&str>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(o) = old.get(tag::SOURCE_AMI).filter(|o| o.as_str() != ami) {
        reasons.push(format!("source {o} -> {ami}"));
    }
    if let (Some(o), Some(n)) = (old.get(tag::PARENT), parent) {
        if o != n {
            reasons.push(format!(
                "parent {} -> {}",
                o.rsplit('@').next().unwrap_or(o),
                n.rsplit('@').next().unwrap_or(n)
            ));
        }
    }
    match recorded.and_then(|r| serde_json::from_str::<BTreeMap<String, String>>(r).ok()) {
        Some(old) => {
            for input in inputs {
                match old.get(&input.label) {
                    Some(h) if input.sha256.starts_with(h.as_str()) => {}
                    // A live input says what it read: `input agent_zip: sha256 9f2c1a0b… -> 41aa07e2…`.
                    Some(h) if input.label.starts_with("input ") => reasons.push(format!(
                        "{}: sha256 {}… -> {}…",
                        input.label,
                        &h[..h.len().min(8)],
                        &input.sha256[..input.sha256.len().min(8)]
                    )),
                    Some(_) => reasons.push(format!("changed {}", input.label)),
                    None => reasons.push(format!("added {}", input.label)),
                }
            }
            for label in old
                .keys()
                .filter(|l| !inputs.iter().any(|i| &i.label == *l))
            {
                reasons.push(format!("removed {label}"));
            }
        }
        None if reasons.is_empty() => {
            reasons.push("inputs changed (no record of the previous inputs)".into())
        }
        None => {}
    }
    reasons
}

/// The images that need baking grouped for a CI matrix: level `n` holds the images with `n`
/// ancestors that are baked too, so every level can bake in parallel once the levels before it
/// are published. `rows` are `(image, parent, bakes)` with parents first (plan order); an image
/// whose parent does not bake starts at level 0, whatever its depth in the catalog.
pub fn levels<'a>(rows: &[(&'a str, Option<&'a str>, bool)]) -> Vec<Vec<&'a str>> {
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out: Vec<Vec<&str>> = Vec::new();
    for (image, parent, bakes) in rows {
        if !bakes {
            continue;
        }
        let n = parent.and_then(|p| level.get(p)).map_or(0, |l| l + 1);
        level.insert(image, n);
        if out.len() <= n {
            out.resize_with(n + 1, Vec::new);
        }
        out[n].push(image);
    }
    out
}

/// The newest published version of each image, from one DescribeImages.
fn newest_by_image(images: Vec<ImageInfo>) -> BTreeMap<String, Vec<(Version, ImageInfo)>> {
    let mut out: BTreeMap<String, Vec<(Version, ImageInfo)>> = BTreeMap::new();
    for i in images {
        let (Some(name), Some(v)) = (
            i.tags.get(tag::IMAGE).cloned(),
            i.tags
                .get(tag::VERSION)
                .and_then(|v| Version::parse(v).ok()),
        ) else {
            continue;
        };
        if i.tags.contains_key(tag::PUBLISHED) && i.state == "available" {
            out.entry(name).or_default().push((v, i));
        }
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| a.0.cmp(&b.0));
    }
    out
}

/// Why a plan against the registry could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The catalog, rendered with the values the live inputs read, is wrong (a pinned version
    /// the server contradicts, say): located diagnostics, a user's mistake (exit 2).
    #[error("{0}")]
    Invalid(crate::catalog::diag::Diagnostics),
    /// AWS, or a live input that could not be read (exit 1).
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

/// Plans `names` (all when empty) and their ancestors, parents first.
pub async fn plan(
    project: &std::path::Path,
    catalog: &Catalog,
    target: &Target,
    names: &[ImageName],
) -> Result<Vec<Row>, PlanError> {
    let region = target
        .regions
        .first()
        .cloned()
        .ok_or_else(|| CloudError::NotFound(format!("target {} has no region", target.name)))?;
    let aws = Aws::connect(target, &region).await;
    let mut wanted: Vec<ImageName> = Vec::new();
    for n in if names.is_empty() {
        catalog.order.clone()
    } else {
        names.to_vec()
    } {
        let mut cur = catalog.images.get(&n);
        while let Some(img) = cur {
            wanted.push(img.name.clone());
            cur = graph::parent(img).and_then(|p| catalog.images.get(p));
        }
    }
    let order: Vec<&ImageName> = catalog
        .order
        .iter()
        .filter(|n| wanted.contains(n))
        .collect();

    // One call for the registry of the whole catalog.
    let registry = newest_by_image(
        aws.describe_images(
            &["self".to_string()],
            &[("tag-key", vec![tag::IMAGE.to_string()])],
        )
        .await?,
    );
    // SSM sources, batched.
    let params: Vec<String> = order
        .iter()
        .filter_map(|n| match &catalog.images[*n].source {
            Source::SsmParameter(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let param_values = if params.is_empty() {
        BTreeMap::new()
    } else {
        aws.get_parameters(&params).await?
    };

    let mut planner = Planner::new(catalog, target);
    let mut rows: BTreeMap<ImageName, Row> = BTreeMap::new();
    let mut out = Vec::new();
    for name in order {
        let image = &catalog.images[name];
        // Live inputs read now (as a bake would), never taken as unchanged when unreadable.
        let live = planner.live_inputs(name).map_err(PlanError::Invalid)?;
        if !live.is_empty() {
            let values = crate::inputs::resolve(project, target, &live)
                .await
                .map_err(CloudError::NotFound)?;
            planner.add_inputs(values);
        }
        let offline = planner.plan(name).map_err(PlanError::Invalid)?;
        let versions = registry.get(name.as_str()).cloned().unwrap_or_default();
        let newest = versions
            .iter()
            .rev()
            .find(|(_, i)| !i.tags.contains_key(tag::REVOKED))
            .cloned();
        // Where the image starts now.
        let source: Result<(String, Option<String>), Status> = match &image.source {
            Source::Ami(id) => Ok((id.clone(), None)),
            Source::SsmParameter(p) => {
                param_values
                    .get(p)
                    .map(|v| (v.clone(), None))
                    .ok_or(Status::Blocked {
                        reason: format!("source parameter {p} does not exist"),
                    })
            }
            Source::AmiFilter {
                name: pattern,
                owners,
                architecture,
            } => aws
                .newest_image(pattern, owners, architecture.as_str())
                .await?
                .map(|i| (i.id.to_string(), None))
                .ok_or(Status::Blocked {
                    reason: format!("no AMI matches {pattern}"),
                }),
            Source::Image { name: parent, req } => match rows.get(parent).map(|r| &r.status) {
                Some(Status::Blocked { .. }) => Err(Status::Blocked {
                    reason: format!("parent {parent} is blocked"),
                }),
                Some(s) if s.bakes() => Err(match &newest {
                    None => Status::New,
                    Some((v, _)) => Status::Changed {
                        since: v.to_string(),
                        reasons: vec![format!("parent {parent} is baked first")],
                    },
                }),
                _ => {
                    let pv = registry.get(parent.as_str()).cloned().unwrap_or_default();
                    let avail = pv
                        .iter()
                        .map(|(v, i)| (v, i.tags.get(tag::REVOKED).map(String::as_str)));
                    match req {
                        ParentReq::Channel(c) if c != "latest" => {
                            let p = super::aws::channel_version_param(
                                &target.ssm_prefix,
                                parent.as_str(),
                                c,
                            );
                            match aws.get_parameter(&p).await?.and_then(|v| Version::parse(&v).ok()) {
                                Some(v) => pv.iter().find(|(x, _)| *x == v).map(|(x, i)| (i.id.to_string(), Some(format!("{parent}@{x}")))).ok_or(Status::Blocked { reason: format!("channel {c} of {parent} names {v}, which is not published") }),
                                None => Err(Status::Blocked { reason: format!("channel {c} of {parent} does not exist") }),
                            }
                        }
                        _ => match super::resolve(req, avail) {
                            Ok(v) => {
                                let (x, i) = pv
                                    .iter()
                                    .find(|(x, _)| x == v)
                                    .cloned()
                                    .expect("resolved from this list");
                                Ok((i.id.to_string(), Some(format!("{parent}@{x}"))))
                            }
                            Err(e) => Err(Status::Blocked {
                                reason: format!("parent {parent}: {e}"),
                            }),
                        },
                    }
                }
            },
        };
        let row = match source {
            Err(status) => Row {
                image: name.to_string(),
                status,
                fingerprint: None,
                source_ami: None,
                parent: None,
            },
            Ok((ami, parent)) => {
                let fp = offline
                    .fingerprint
                    .with_source(&ami, parent.as_deref())
                    .to_string();
                let status = match &newest {
                    None => Status::New,
                    Some((v, i)) if i.tags.get(tag::FINGERPRINT) == Some(&fp) => Status::UpToDate {
                        version: v.to_string(),
                    },
                    Some((v, i)) => {
                        // Which inputs differ from what that version was baked from.
                        // On its AMI; a version published before that kept them in a parameter.
                        let recorded = match super::inputs_of(&i.tags) {
                            Some(r) => Some(r),
                            None => {
                                aws.get_parameter(&inputs_param(
                                    &target.ssm_prefix,
                                    name.as_str(),
                                    v,
                                ))
                                .await?
                            }
                        };
                        let reasons = change_reasons(
                            &i.tags,
                            &ami,
                            parent.as_deref(),
                            &offline.inputs,
                            recorded.as_deref(),
                        );
                        Status::Changed {
                            since: v.to_string(),
                            reasons,
                        }
                    }
                };
                Row {
                    image: name.to_string(),
                    status,
                    fingerprint: Some(fp),
                    source_ami: Some(ami),
                    parent,
                }
            }
        };
        rows.insert(name.clone(), row.clone());
        out.push(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::levels;

    #[test]
    fn levels_follow_baked_ancestors_only() {
        let rows = [
            ("al2023", None, true),
            ("win", None, false),
            ("agent-linux", Some("al2023"), true),
            ("agent-win", Some("win"), true),
            ("agent-linux-gpu", Some("agent-linux"), true),
            ("unchanged-child", Some("al2023"), false),
        ];
        assert_eq!(
            levels(&rows),
            vec![
                vec!["al2023", "agent-win"],
                vec!["agent-linux"],
                vec!["agent-linux-gpu"]
            ]
        );
        assert!(levels(&[("a", None, false)]).is_empty());
    }
}
