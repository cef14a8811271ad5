//! Registry commands: versions, resolve, channels (promote, rollback), revoke, prune, lock.

use std::collections::BTreeMap;
use std::path::Path;

use semver::Version;
use serde_json::json;

use super::{load, print_json, CliError};
use crate::catalog::model::{ParentReq, Target};
use crate::catalog::{values, Catalog};
use crate::registry::aws::{Registry, VersionView};
use crate::registry::{consumers, prune, tag};

/// Exit code of `lock --check` when a locked version was revoked or deregistered.
pub const EXIT_STALE_LOCK: i32 = 4;

fn rt() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

/// What the user typed is wrong: exit 2.
fn invalid(e: impl std::fmt::Display) -> CliError {
    CliError::usage(e.to_string())
}

/// The target: the named one, or the only one in bakery.toml.
pub fn pick_target<'a>(catalog: &'a Catalog, name: Option<&str>) -> Result<&'a Target, CliError> {
    match name {
        Some(n) => Ok(catalog.target(n)?),
        None if catalog.targets.len() == 1 => {
            Ok(catalog.targets.values().next().expect("one target"))
        }
        None => Err(invalid(format!(
            "name a target with --target (bakery.toml has: {})",
            catalog
                .targets
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `pick_target`, for what only the bakery account may do (exit 2 on a consumer's target).
fn writable_target<'a>(catalog: &'a Catalog, name: Option<&str>) -> Result<&'a Target, CliError> {
    let t = pick_target(catalog, name)?;
    t.writable().map_err(invalid)?;
    Ok(t)
}

/// Brings the consumers' mirrors of `image` up to date after a change, printing each; a
/// consumer that failed is an error naming it and the command that finishes the job.
async fn sync_after(reg: &mut Registry<'_>, image: &str) -> Result<(), CliError> {
    let mut sessions = crate::cloud::aws::consumer::Consumers::new();
    let done = consumers::sync(reg, &mut sessions, image, false)
        .await
        .map_err(fail)?;
    report_synced(image, &done);
    let failed = failed_consumers(&done);
    if failed.is_empty() {
        return Ok(());
    }
    Err(fail(format!(
        "the change stands in the bakery account, but consumer {} was not updated; finish with: bakery sync --target {}",
        failed.join(", "),
        reg.target.name
    )))
}

/// `account (region)` of each consumer a sync failed for, each once.
fn failed_consumers<'a>(done: impl IntoIterator<Item = &'a consumers::Synced>) -> Vec<String> {
    done.into_iter()
        .filter(|s| s.failed())
        .map(|s| format!("{} ({})", s.account, s.region))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn report_synced(image: &str, done: &[consumers::Synced]) {
    for s in done {
        match (&s.error, s.written, s.removed) {
            (Some(e), _, _) => crate::errln!(
                "{image}: consumer {} ({}): failed: {e}",
                s.account,
                s.region
            ),
            (None, Some(0), Some(0)) if s.shared.is_empty() => {
                crate::outln!("{image}: consumer {} ({}): up to date", s.account, s.region)
            }
            (None, w, r) => crate::outln!(
                "{image}: consumer {} ({}): {} written, {} removed{}",
                s.account,
                s.region,
                w.unwrap_or(0),
                r.unwrap_or(0),
                if s.shared.is_empty() {
                    String::new()
                } else {
                    format!(", shared {}", s.shared.join(" "))
                }
            ),
        }
    }
}

/// `bakery sync`: every consumer's mirror of `images` (default: every image of the catalog)
/// brought up to date; a no-op when nothing changed. Exit 1 when a consumer failed.
pub fn sync(
    project: &Path,
    images: &[String],
    target: Option<&str>,
    json_out: bool,
) -> Result<(), CliError> {
    let catalog = load(project)?;
    let target = writable_target(&catalog, target)?;
    for i in images {
        values::image_name(i).map_err(|e| invalid(format!("`{i}`: {e}")))?;
    }
    let names: Vec<String> = if images.is_empty() {
        catalog.images.keys().map(|k| k.to_string()).collect()
    } else {
        images.to_vec()
    };
    if target.consumers.is_empty() {
        return Err(invalid(format!(
            "target {} has no consumers (add [[targets.{}.consumers]] to bakery.toml)",
            target.name, target.name
        )));
    }
    rt()?.block_on(async {
        let mut reg = Registry::new(target);
        let mut sessions = crate::cloud::aws::consumer::Consumers::new();
        let mut all = BTreeMap::new();
        for image in &names {
            let done = consumers::sync(&mut reg, &mut sessions, image, true)
                .await
                .map_err(fail)?;
            if !json_out {
                report_synced(image, &done);
            }
            all.insert(image.clone(), done);
        }
        let failed = failed_consumers(all.values().flatten());
        if json_out {
            print_json(&json!({ "target": target.name, "images": all }))?;
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(fail(format!(
                "consumer {} not brought up to date; run the same sync again once it can be reached",
                failed.join(", ")
            )))
        }
    })
}

/// `image@req` from the command line.
pub(super) fn image_req(s: &str) -> Result<(String, ParentReq), CliError> {
    let (image, req) = s.split_once('@').ok_or_else(|| {
        invalid(format!(
            "`{s}`: write image@requirement, e.g. teamcity-agent-windows@^1.4 or @stable"
        ))
    })?;
    values::image_name(image).map_err(|e| invalid(format!("`{s}`: {e}")))?;
    Ok((
        image.to_string(),
        values::parent_req(req).map_err(|e| {
            invalid(format!(
                "`{s}`: {e}; write a semver requirement (^1.4, ~1.4.2, =1.4.3), latest, or a channel"
            ))
        })?,
    ))
}

/// `image@version` (exact) from the command line.
fn image_version(s: &str) -> Result<(String, Version), CliError> {
    let (image, v) = s.split_once('@').ok_or_else(|| {
        invalid(format!(
            "`{s}`: write image@version, e.g. sandbox-demo@0.1.2"
        ))
    })?;
    values::image_name(image).map_err(|e| invalid(format!("`{s}`: {e}")))?;
    Ok((
        image.to_string(),
        Version::parse(v.trim_start_matches('=')).map_err(|e| {
            invalid(format!(
                "`{v}` is not a version: {e}; write an exact version, e.g. sandbox-demo@0.1.2"
            ))
        })?,
    ))
}

fn view_json(v: &VersionView, channels: &[String]) -> serde_json::Value {
    json!({
        "version": v.version.to_string(),
        "amis": v.amis.iter().map(|(r, i)| (r.clone(), i.id.to_string())).collect::<BTreeMap<_, _>>(),
        "created": v.created(),
        "fingerprint": v.tag(tag::FINGERPRINT),
        "parent": v.tag(tag::PARENT),
        "channels": channels,
        "state": v.state(),
        "revoked": v.revoked,
    })
}

pub fn versions(
    project: &Path,
    image: &str,
    region: Option<&str>,
    target: Option<&str>,
    json_out: bool,
) -> Result<(), CliError> {
    let catalog = load(project)?;
    let target = pick_target(&catalog, target)?;
    rt()?.block_on(async {
        let mut reg = Registry::new(target);
        let all = reg.versions(image, region).await.map_err(fail)?;
        let mut channels: BTreeMap<Version, Vec<String>> = BTreeMap::new();
        for ch in reg.channel_names(image).await.map_err(fail)? {
            if let Some(v) = reg.channel(image, &ch).await.map_err(fail)? {
                channels.entry(v).or_default().push(ch);
            }
        }
        // EC2 Fast Launch of the Windows AMIs: one Describe per region for all versions.
        let windows = crate::registry::aws::windows_amis(&all);
        let mut fast = BTreeMap::new();
        for (region, amis) in &windows {
            let aws = reg.regions.get(region).await;
            fast.extend(aws.fast_launch_states(amis).await.map_err(fail)?);
        }
        let currency = &target.prices.table.currency;
        let rows: Vec<serde_json::Value> = all
            .iter()
            .rev()
            .map(|v| {
                let mut row = view_json(
                    v,
                    channels.get(&v.version).map_or(&[][..], |c| c.as_slice()),
                );
                row["storage_per_month"] = json!(v.storage_per_month(&target.prices));
                let states: BTreeMap<&String, &str> = v
                    .amis
                    .iter()
                    .filter_map(|(r, a)| fast.get(&a.id).map(|s| (r, s.as_str())))
                    .collect();
                if !states.is_empty() {
                    row["fast_launch"] = json!(states);
                }
                row
            })
            .collect();
        if json_out {
            return print_json(&json!({
                "image": image, "versions": rows, "currency": currency,
                "price_table": format!("{} {}", target.prices.table.name, target.prices.table.date),
            }));
        }
        crate::outln!(
            "{:<12} {:<11} {:<24} {:<14} {:<22} {:<16} {:<14} AMIS",
            "VERSION",
            "STATE",
            "CREATED",
            "FINGERPRINT",
            "PARENT",
            "CHANNELS",
            "STORAGE/MONTH"
        );
        for r in &rows {
            // An AMI with EC2 Fast Launch says so: `eu-west-1=ami-… (fast launch enabled)`.
            let amis: Vec<String> = r["amis"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| match r["fast_launch"][k].as_str() {
                            Some(s) => {
                                format!("{k}={} (fast launch {s})", v.as_str().unwrap_or(""))
                            }
                            None => format!("{k}={}", v.as_str().unwrap_or("")),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let chans = strs(&r["channels"]).join(",");
            crate::outln!(
                "{:<12} {:<11} {:<24} {:<14} {:<22} {:<16} {:<14} {}",
                r["version"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or(""),
                r["created"].as_str().unwrap_or(""),
                r["fingerprint"]
                    .as_str()
                    .map(|f| &f[..12.min(f.len())])
                    .unwrap_or("-"),
                r["parent"].as_str().unwrap_or("-"),
                if chans.is_empty() {
                    "-".to_string()
                } else {
                    chans
                },
                format!(
                    "{:.2} {currency}",
                    r["storage_per_month"].as_f64().unwrap_or(0.0)
                ),
                amis.join(" ")
            );
        }
        Ok(())
    })
}

pub fn resolve(
    project: &Path,
    spec: &str,
    region: Option<&str>,
    target: Option<&str>,
    json_out: bool,
) -> Result<(), CliError> {
    let (image, req) = image_req(spec)?;
    let catalog = load(project)?;
    let target = pick_target(&catalog, target)?;
    rt()?.block_on(async {
        let mut reg = Registry::new(target);
        let v = reg.resolve(&image, &req).await.map_err(fail)?;
        let amis: BTreeMap<String, String> = v
            .amis
            .iter()
            .filter(|(r, _)| region.is_none_or(|x| x == r.as_str()))
            .map(|(r, i)| (r.clone(), i.id.to_string()))
            .collect();
        if let Some(r) = region {
            if amis.is_empty() {
                return Err(fail(format!("{image} {} has no AMI in {r}", v.version)));
            }
        }
        if json_out {
            return print_json(&json!({ "image": image, "requirement": req.to_string(), "version": v.version.to_string(), "amis": amis }));
        }
        crate::outln!("{image} {}", v.version);
        for (r, a) in amis {
            crate::outln!("  {r}: {a}");
        }
        Ok(())
    })
}

pub fn promote(
    project: &Path,
    spec: &str,
    channel: &str,
    target: Option<&str>,
) -> Result<(), CliError> {
    let (image, version) = image_version(spec)?;
    values::channel(channel).map_err(invalid)?;
    let catalog = load(project)?;
    let target = writable_target(&catalog, target)?;
    rt()?.block_on(async {
        let mut reg = Registry::new(target);
        let all = reg.versions(&image, None).await.map_err(fail)?;
        let v = all
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| fail(format!("{image} {version} is not registered")))?;
        reg.promote_view(&image, v, channel).await.map_err(fail)?;
        crate::outln!(
            "{image} {channel} -> {version} ({})",
            v.amis
                .iter()
                .map(|(r, i)| format!("{r}={}", i.id))
                .collect::<Vec<_>>()
                .join(" ")
        );
        sync_after(&mut reg, &image).await
    })
}

pub fn rollback(
    project: &Path,
    image: &str,
    channel: &str,
    target: Option<&str>,
) -> Result<(), CliError> {
    values::image_name(image).map_err(invalid)?;
    values::channel(channel).map_err(invalid)?;
    let catalog = load(project)?;
    let target = writable_target(&catalog, target)?;
    rt()?.block_on(async {
        let mut reg = Registry::new(target);
        let v = reg.rollback(image, channel).await.map_err(fail)?;
        crate::outln!("{image} {channel} -> {v}");
        sync_after(&mut reg, image).await
    })
}

pub fn channels(
    project: &Path,
    image: &str,
    target: Option<&str>,
    json_out: bool,
) -> Result<(), CliError> {
    let catalog = load(project)?;
    let target = pick_target(&catalog, target)?;
    rt()?.block_on(async {
        let mut reg = Registry::new(target);
        let mut out = Vec::new();
        for ch in reg.channel_names(image).await.map_err(fail)? {
            let current = reg.channel(image, &ch).await.map_err(fail)?;
            let history = reg.channel_history(image, &ch).await.map_err(fail)?;
            out.push(json!({
                "channel": ch,
                "version": current.map(|v| v.to_string()),
                "history": history.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            }));
        }
        if json_out {
            return print_json(&json!({ "image": image, "channels": out }));
        }
        for c in &out {
            let hist = strs(&c["history"]);
            crate::outln!(
                "{:<12} {:<10} history: {}",
                c["channel"].as_str().unwrap_or(""),
                c["version"].as_str().unwrap_or("-"),
                hist.join(" -> ")
            );
        }
        Ok(())
    })
}

pub fn revoke(
    project: &Path,
    spec: &str,
    descendants: bool,
    reason: &str,
    target: Option<&str>,
) -> Result<(), CliError> {
    let (image, version) = image_version(spec)?;
    if reason.trim().is_empty() {
        return Err(invalid(
            "--reason must say why the version is revoked (consumers see it when they are refused)",
        ));
    }
    let catalog = load(project)?;
    let target = writable_target(&catalog, target)?;
    rt()?.block_on(async {
        let mut reg = Registry::new(target);
        let mut queue = vec![(image.clone(), version.clone())];
        let mut side_errors = Vec::new();
        let mut seen = std::collections::BTreeSet::from([(image.clone(), version.clone())]);
        while let Some((img, v)) = queue.pop() {
            let done = reg.revoke(&img, &v, reason).await.map_err(fail)?;
            crate::outln!("revoked {img} {v}");
            side_errors.extend(done.side_errors);
            for (ch, back) in done.moved {
                match back {
                    Some(b) => crate::outln!("  channel {ch} moved back to {b}"),
                    None => crate::outln!("  channel {ch} removed (no earlier version)"),
                }
            }
            if !descendants {
                continue;
            }
            // Versions of any image layered on this one (found by their bakery:parent tag),
            // revoked ones too: a rerun finishes what failed for them (revoke is idempotent).
            for child in reg.children_of(&img, &v).await.map_err(fail)? {
                if seen.insert(child.clone()) {
                    queue.push(child);
                }
            }
        }
        // Every revoked image's consumers learn of it (their lock --check reads the mirror).
        let images: std::collections::BTreeSet<String> = seen.iter().map(|(i, _)| i.clone()).collect();
        for img in &images {
            sync_after(&mut reg, img).await?;
        }
        if !side_errors.is_empty() {
            // The registry is done (marks, channels, latest); only these calls are missing.
            return Err(fail(format!(
                "{}\nthe revocation stands; finish it with: bakery revoke {spec} --reason {:?}{} --target {}",
                side_errors.join("\n"),
                reason,
                if descendants { " --descendants" } else { "" },
                target.name
            )));
        }
        Ok(())
    })
}

pub fn prune_cmd(
    project: &Path,
    image: &str,
    keep: usize,
    older_than: Option<&str>,
    dry_run: bool,
    target: Option<&str>,
    json_out: bool,
) -> Result<(), CliError> {
    let older = older_than
        .map(values::duration)
        .transpose()
        .map_err(|e| invalid(format!("--older-than: {e}")))?;
    if keep == 0 {
        return Err(invalid(
            "--keep must be at least 1: the newest version always stays (revoke it to stop its use)",
        ));
    }
    let catalog = load(project)?;
    let target = writable_target(&catalog, target)?;
    rt()?.block_on(async {
        let mut reg = Registry::new(target);
        let decisions = prune::prune(&mut reg, image, keep, older, dry_run)
            .await
            .map_err(fail)?;
        let currency = &target.prices.table.currency;
        let saves: f64 = decisions
            .iter()
            .filter(|d| d.pruned)
            .map(|d| d.storage_per_month)
            .sum();
        if json_out {
            return print_json(&json!({
                "image": image, "dry_run": dry_run, "decisions": decisions,
                "saves_per_month": saves, "currency": currency,
                "price_table": format!("{} {}", target.prices.table.name, target.prices.table.date),
            }));
        }
        for d in &decisions {
            if d.pruned {
                crate::outln!(
                    "{} {} (snapshots {:.2} {currency}/month)",
                    if dry_run { "would prune" } else { "pruned" },
                    d.version,
                    d.storage_per_month
                );
            } else {
                crate::outln!("kept {} ({})", d.version, d.kept_because.join("; "));
            }
        }
        crate::outln!(
            "{} {saves:.2} {currency} a month of snapshot storage (price table {} {})",
            if dry_run {
                "pruning would save"
            } else {
                "pruning saved"
            },
            target.prices.table.name,
            target.prices.table.date
        );
        Ok(())
    })
}

/// The strings of a JSON array (empty when it is not one).
fn strs(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default()
}
