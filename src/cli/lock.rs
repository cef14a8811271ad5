//! `bakery lock`, `lock --check` and `outdated`: pins for consuming teams in bakery.lock.toml.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::registry::{pick_target, EXIT_STALE_LOCK};
use super::{load, CliError};
use crate::catalog::values;
use crate::registry::aws::Registry;

pub const LOCK_FILE: &str = "bakery.lock.toml";

const HEADER: &str = "# Pinned bakery images. You write `name` and `requirement` (a semver requirement, `latest`\n# or a channel); `bakery lock` writes `version` and `amis`; `bakery lock --check` fails when a\n# pinned version was revoked or deregistered.\n\n";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    #[serde(default)]
    pub image: Vec<Pin>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub name: String,
    pub requirement: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub amis: BTreeMap<String, String>,
}

fn read(project: &Path) -> Result<LockFile, CliError> {
    let path = project.join(LOCK_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CliError::usage(format!(
                "{} does not exist: write it with one [[image]] per pin (name and requirement, see the README's \"Pinning an image\"), then run bakery lock",
                path.display()
            ))
        } else {
            CliError::Failed(format!("cannot read {}: {e}", path.display()))
        }
    })?;
    let lock: LockFile = toml::from_str(&text).map_err(|e| {
        CliError::Invalid(crate::catalog::diag::Diagnostics(vec![
            crate::catalog::diag::Diagnostic::file(
                crate::catalog::diag::ErrorKind::Syntax,
                Path::new(LOCK_FILE),
                e.to_string().trim().replace('\n', " "),
            ),
        ]))
    })?;
    for p in &lock.image {
        values::image_name(&p.name).map_err(|e| CliError::usage(format!("{LOCK_FILE}: {e}")))?;
        values::parent_req(&p.requirement)
            .map_err(|e| CliError::usage(format!("{LOCK_FILE}: {}: {e}", p.name)))?;
    }
    Ok(lock)
}

pub fn lock(project: &Path, check: bool, target: Option<&str>) -> Result<(), CliError> {
    let mut file = read(project)?;
    let catalog = load(project)?;
    let target = pick_target(&catalog, target)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
    rt.block_on(async {
        let mut reg = Registry::new(target);
        if check {
            let mut stale = Vec::new();
            for p in &file.image {
                let Some(v) = &p.version else {
                    stale.push(format!("{}: not locked yet (run `bakery lock`)", p.name));
                    continue;
                };
                let all = reg
                    .versions(&p.name, None)
                    .await
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                match all.iter().find(|x| &x.version.to_string() == v) {
                    None => stale.push(format!("{} {v}: deregistered", p.name)),
                    Some(x) if x.revoked.is_some() => stale.push(format!(
                        "{} {v}: revoked: {}",
                        p.name,
                        x.revoked.as_deref().unwrap_or_default()
                    )),
                    Some(x) => {
                        for (region, ami) in &p.amis {
                            if x.amis.get(region).map(|i| i.id.as_str()) != Some(ami.as_str()) {
                                stale.push(format!("{} {v}: {ami} in {region} is gone", p.name));
                            }
                        }
                    }
                }
            }
            if stale.is_empty() {
                crate::outln!("{LOCK_FILE}: {} pins, all current", file.image.len());
                return Ok(());
            }
            return Err(CliError::Exit(
                EXIT_STALE_LOCK,
                format!("{LOCK_FILE} is stale:\n  {}", stale.join("\n  ")),
            ));
        }
        for p in &mut file.image {
            let req = values::parent_req(&p.requirement).map_err(CliError::Failed)?;
            let v = reg
                .resolve(&p.name, &req)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            p.version = Some(v.version.to_string());
            p.amis = v
                .amis
                .iter()
                .map(|(r, i)| (r.clone(), i.id.to_string()))
                .collect();
            crate::outln!("{} {} -> {}", p.name, p.requirement, v.version);
        }
        let text = toml::to_string_pretty(&file).map_err(|e| CliError::Failed(e.to_string()))?;
        std::fs::write(project.join(LOCK_FILE), format!("{HEADER}{text}"))
            .map_err(|e| CliError::Failed(e.to_string()))?;
        Ok(())
    })
}

pub fn outdated(project: &Path, target: Option<&str>) -> Result<(), CliError> {
    let file = read(project)?;
    let catalog = load(project)?;
    let target = pick_target(&catalog, target)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
    rt.block_on(async {
        let mut reg = Registry::new(target);
        let mut any = false;
        for p in &file.image {
            let req = values::parent_req(&p.requirement).map_err(CliError::Failed)?;
            let locked = p
                .version
                .as_deref()
                .and_then(|v| semver::Version::parse(v).ok());
            let all = reg
                .versions(&p.name, None)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            let newer: Vec<String> = all
                .iter()
                .filter(|v| v.revoked.is_none())
                .filter(|v| match &req {
                    crate::catalog::model::ParentReq::Semver(r) => r.matches(&v.version),
                    crate::catalog::model::ParentReq::Channel(_) => v.version.pre.is_empty(),
                })
                .filter(|v| locked.as_ref().is_none_or(|l| &v.version > l))
                .map(|v| v.version.to_string())
                .collect();
            if !newer.is_empty() {
                any = true;
                crate::outln!(
                    "{} locked {} ({}): newer {}",
                    p.name,
                    p.version.as_deref().unwrap_or("-"),
                    p.requirement,
                    newer.join(", ")
                );
            }
        }
        if !any {
            crate::outln!("nothing is outdated");
        }
        Ok(())
    })
}
