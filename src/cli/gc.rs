//! `bakery gc`: what bakes left behind, found by tags in every region of a target and removed
//! unless a live bake owns it; `bakery cleanup <bake-id>` uses the same sweep when there is no
//! journal.

use std::path::Path;
use std::time::Duration;

use super::registry::pick_target;
use super::{load, print_json, CliError};
use crate::bake::gc::{self, Options, Report};
use crate::cloud::cancel::Cancel;

pub struct GcArgs<'a> {
    pub target: Option<&'a str>,
    pub dry_run: bool,
    pub older_than: Duration,
    pub json: bool,
}

pub fn run(project: &Path, a: &GcArgs) -> Result<(), CliError> {
    let catalog = load(project)?;
    let target = pick_target(&catalog, a.target)?.clone();
    let report = collect(
        &target,
        &Options {
            bake: None,
            dry_run: a.dry_run,
            older_than: a.older_than,
            ignore_lease: false,
        },
    )?;
    print(&report, a.json, &target.name)
}

/// Runs gc on a runtime of its own (it may be called from a command without one).
pub fn collect(target: &crate::catalog::model::Target, o: &Options) -> Result<Report, CliError> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(rt.block_on(gc::gc(target, o, &Cancel::new())))
}

/// Prints a report (a line per resource, or JSON) and turns failures into exit 1.
pub fn print(report: &Report, json: bool, target: &str) -> Result<(), CliError> {
    if json {
        print_json(&serde_json::json!({
            "target": target,
            "items": report.items,
            "errors": report.errors,
        }))?;
    } else if report.items.is_empty() && report.errors.is_empty() {
        crate::outln!("nothing left behind in target {target}");
    } else {
        for i in &report.items {
            let owner = if i.bake_id.is_empty() {
                String::new()
            } else {
                format!(" [{}]", i.bake_id)
            };
            crate::outln!("{:<12} {}{owner}: {}", i.action, i.resource, i.why);
            if let Some(d) = &i.detail {
                crate::outln!("{:<12} {d}", "");
            }
        }
    }
    if report.failed() {
        let mut lines = report.errors.clone();
        lines.extend(
            report
                .items
                .iter()
                .filter(|i| i.action == "failed")
                .map(|i| format!("{}: {}", i.resource, i.detail.as_deref().unwrap_or(""))),
        );
        return Err(CliError::Failed(format!(
            "{}\nrun the same command again to retry",
            lines.join("\n")
        )));
    }
    Ok(())
}
