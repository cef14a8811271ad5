//! `bakery plan --offline`: images in dependency order with fingerprints, and `--explain`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;

use super::{load, print_json, target_for, CliError};
use crate::catalog::diag::{Diagnostic, ErrorKind};
use crate::catalog::graph;
use crate::catalog::model::{ImageName, Target};
use crate::plan::Planner;

pub fn run(
    project: &Path,
    images: &[String],
    offline: bool,
    explain: Option<&str>,
    target: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    if !offline {
        return Err(Diagnostic::file(
            ErrorKind::InvalidValue,
            Path::new("<command line>"),
            "plan needs --offline: comparing with the registry in AWS is not built yet",
        )
        .with_hint("run `bakery plan --offline`")
        .into());
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
        println!("{} {}", plan.image, plan.fingerprint);
        for i in &plan.inputs {
            println!("  {}  {}", &i.sha256[..16], i.label);
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
    for name in catalog.order.iter().filter(|n| wanted.contains(*n)) {
        let plan = planner.plan(name)?;
        let img = &catalog.images[name];
        rows.push(json!({
            "image": name,
            "version": plan.version.to_string(),
            "platform": plan.platform.as_str(),
            "parent": graph::parent(img),
            "source": plan.source,
            "fingerprint": plan.fingerprint,
            "steps": plan.steps.len(),
            "checks": plan.checks.len(),
        }));
    }
    if json {
        return print_json(&json!({ "target": target.name, "images": rows }));
    }
    println!(
        "{:<28} {:<8} {:<8} {:<14} {:<26} SOURCE",
        "IMAGE", "VERSION", "PLATFORM", "FINGERPRINT", "PARENT"
    );
    for r in &rows {
        let source = match &r["source"] {
            serde_json::Value::Object(m) => m
                .iter()
                .next()
                .map(|(k, v)| {
                    format!(
                        "{k} {}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_string)
                    )
                })
                .unwrap_or_default(),
            v => v.to_string(),
        };
        println!(
            "{:<28} {:<8} {:<8} {:<14} {:<26} {}",
            r["image"].as_str().unwrap_or_default(),
            r["version"].as_str().unwrap_or_default(),
            r["platform"].as_str().unwrap_or_default(),
            &r["fingerprint"].as_str().unwrap_or_default()[..12],
            r["parent"].as_str().unwrap_or("-"),
            source
        );
    }
    Ok(())
}
