//! `bakery plan --offline`: images in dependency order with fingerprints, and `--explain`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;

use super::{load, print_json, target_for, CliError};
use crate::catalog::graph;
use crate::catalog::model::{ImageName, Target};
use crate::plan::Planner;

/// How `bakery plan` was asked.
pub struct Mode<'a> {
    pub offline: bool,
    pub explain: Option<&'a str>,
    pub target: Option<&'a str>,
    pub json: bool,
    pub exit_code: bool,
    pub levels: bool,
}

pub fn run(project: &Path, images: &[String], mode: Mode<'_>) -> Result<(), CliError> {
    let Mode {
        offline,
        explain,
        target,
        json,
        ..
    } = mode;
    if !offline {
        return online(project, images, &mode);
    }
    let catalog = load(project)?;
    let offline_target = Target::offline();
    let target = target_for(&catalog, target, &offline_target)?;
    let mut planner = Planner::new(&catalog, target);
    if let Some(name) = explain {
        catalog.image(name)?;
        let plan = planner.plan(&ImageName::new_unchecked(name))?;
        if json {
            return print_json(&json!({
                "image": plan.image, "fingerprint": plan.fingerprint, "inputs": plan.inputs,
            }));
        }
        crate::outln!("{} {}", plan.image, plan.fingerprint);
        for i in &plan.inputs {
            crate::outln!("  {}  {}", &i.sha256[..16], i.label);
        }
        return Ok(());
    }
    let wanted: BTreeSet<ImageName> = if images.is_empty() {
        catalog.order.iter().cloned().collect()
    } else {
        let mut set = BTreeSet::new();
        for n in images {
            let mut cur = Some(catalog.image(n)?);
            while let Some(img) = cur {
                set.insert(img.name.clone());
                cur = graph::parent(img).and_then(|p| catalog.images.get(p));
            }
        }
        set
    };
    let mut rows = Vec::new();
    let mut shown_sources = Vec::new();
    for name in catalog.order.iter().filter(|n| wanted.contains(*n)) {
        let plan = planner.plan(name)?;
        let img = &catalog.images[name];
        shown_sources.push(plan.source.to_string());
        rows.push(json!({
            "image": name,
            "version": plan.version.to_string(),
            "platform": plan.platform.as_str(),
            "parent": graph::parent(img),
            "source": plan.source,
            "fingerprint": plan.fingerprint,
            "steps": plan.steps.len(),
            "checks": plan.checks.len(),
            // null: not tested on a fresh instance.
            "test_checks": plan.test.as_ref().map(|t| t.checks.len()),
        }));
    }
    if json {
        return print_json(&json!({ "target": target.name, "images": rows }));
    }
    crate::outln!(
        "{:<28} {:<8} {:<8} {:<14} {:<26} SOURCE",
        "IMAGE",
        "VERSION",
        "PLATFORM",
        "FINGERPRINT",
        "PARENT"
    );
    for (r, source) in rows.iter().zip(&shown_sources) {
        crate::outln!(
            "{:<28} {:<8} {:<8} {:<14} {:<26} {}",
            r["image"].as_str().unwrap_or_default(),
            r["version"].as_str().unwrap_or_default(),
            r["platform"].as_str().unwrap_or_default(),
            &r["fingerprint"].as_str().unwrap_or_default()[..12],
            r["parent"].as_str().unwrap_or("-"),
            source
        );
    }
    let untested: Vec<&str> = rows
        .iter()
        .filter(|r| r["test_checks"].is_null())
        .filter_map(|r| r["image"].as_str())
        .collect();
    if !untested.is_empty() {
        crate::outln!(
            "not tested on a fresh instance (no [test]): {}",
            untested.join(", ")
        );
    }
    Ok(())
}

/// Exit code of `plan --exit-code` when something needs baking.
pub const EXIT_CHANGES: i32 = 10;

/// `bakery plan` against the registry: what needs baking and why.
fn online(project: &Path, images: &[String], mode: &Mode<'_>) -> Result<(), CliError> {
    use crate::registry::changes::{self, Status};
    let (json_out, exit_code) = (mode.json, mode.exit_code);
    let catalog = load(project)?;
    let target = super::registry::pick_target(&catalog, mode.target)?;
    let mut names = Vec::new();
    for n in images {
        names.push(catalog.image(n)?.name.clone());
    }
    let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
    let rows = rt.block_on(changes::plan(project, &catalog, target, &names))?;
    let to_bake = rows.iter().filter(|r| r.status.bakes()).count();
    let by_level: Vec<(&str, Option<&str>, bool)> = rows
        .iter()
        .map(|r| {
            let parent = catalog
                .images
                .get(&ImageName::new_unchecked(r.image.clone()))
                .and_then(graph::parent)
                .map(|p| p.as_str());
            (r.image.as_str(), parent, r.status.bakes())
        })
        .collect();
    let levels = changes::levels(&by_level);
    if json_out {
        let mut out = json!({ "target": target.name, "to_bake": to_bake, "images": rows });
        if mode.levels {
            out["levels"] = json!(levels);
        }
        print_json(&out)?;
    } else if mode.levels {
        for (n, images) in levels.iter().enumerate() {
            crate::outln!("level {n}: {}", images.join(" "));
        }
        crate::outln!("{to_bake} to bake");
    } else {
        for r in &rows {
            let (what, detail) = match &r.status {
                Status::UpToDate { version } => ("up to date".to_string(), version.clone()),
                Status::New => ("new".to_string(), String::new()),
                Status::Changed { since, reasons } => {
                    (format!("changed since {since}"), reasons.join("; "))
                }
                Status::Blocked { reason } => ("blocked".to_string(), reason.clone()),
            };
            crate::outln!("{:<28} {:<22} {detail}", r.image, what);
        }
        crate::outln!("{to_bake} to bake");
    }
    if exit_code && to_bake > 0 {
        return Err(CliError::Exit(EXIT_CHANGES, String::new()));
    }
    Ok(())
}
