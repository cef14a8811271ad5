//! `bakery validate`.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::CliError;
use crate::catalog::diag::Diagnostics;
use crate::catalog::Catalog;

pub fn run(project: &Path, paths: &[PathBuf], json: bool) -> Result<(), CliError> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if paths.is_empty() {
        if !project.is_dir() {
            return Err(CliError::usage(format!(
                "{} is not a directory: run bakery in a project (images/, recipes/, bakery.toml) or pass --project DIR",
                project.display()
            )));
        }
        roots.push(project.to_path_buf());
    }
    for p in paths {
        let root = project_of(p).ok_or_else(|| {
            CliError::usage(format!(
                "{} is not in a bakery project (no images/, recipes/ or bakery.toml above it)",
                p.display()
            ))
        })?;
        if !roots.contains(&root) {
            roots.push(root);
        }
    }
    let mut all = Diagnostics::default();
    let mut warnings = Diagnostics::default();
    let mut counts = Vec::new();
    for root in &roots {
        let started = std::time::Instant::now();
        let loaded = Catalog::load(root);
        tracing::info!(
            project = %root.display(),
            ok = loaded.is_ok(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "validated"
        );
        match loaded {
            Ok(c) => {
                counts.push(json!({
                    "project": root.display().to_string(),
                    "images": c.images.len(),
                    "recipes": c.recipes.len(),
                    "targets": c.targets.len(),
                    "warnings": c.warnings.len(),
                }));
                let mut w = c.warnings;
                if roots.len() > 1 {
                    for x in &mut w.0 {
                        x.path = root.join(&x.path);
                    }
                }
                warnings.extend(w);
            }
            Err(mut d) => {
                if roots.len() > 1 {
                    for x in &mut d.0 {
                        x.path = root.join(&x.path);
                    }
                }
                all.extend(d);
            }
        }
    }
    if json {
        let shape = |d: &crate::catalog::diag::Diagnostic| {
            json!({
                "severity": d.severity,
                "kind": d.kind,
                "location": d.location(),
                "path": d.path,
                "line": d.line,
                "col": d.col,
                "message": d.message,
                "hint": d.hint,
            })
        };
        let problems: Vec<_> = all.iter().map(shape).collect();
        let warned: Vec<_> = warnings.iter().map(shape).collect();
        super::print_json(&json!({
            "ok": all.is_empty(),
            "projects": counts,
            "problems": problems,
            "warnings": warned,
        }))?;
        if !all.is_empty() {
            return Err(CliError::Invalid(Diagnostics::default()));
        }
        return Ok(());
    }
    if !all.is_empty() {
        return Err(CliError::Invalid(all));
    }
    // Warnings do not fail validation: the bake would run as written.
    for w in warnings.iter() {
        crate::errln!("{w}");
    }
    for c in counts {
        let n = c["warnings"].as_u64().unwrap_or(0);
        crate::outln!(
            "ok: {} ({} images, {} recipes, {} targets){}",
            c["project"].as_str().unwrap_or_default(),
            c["images"],
            c["recipes"],
            c["targets"],
            match n {
                0 => String::new(),
                1 => ", 1 warning".to_string(),
                n => format!(", {n} warnings"),
            }
        );
    }
    Ok(())
}

/// The project a path belongs to: the nearest directory (itself or above) holding images/,
/// recipes/ or bakery.toml.
fn project_of(p: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(p).ok()?;
    let start = if abs.is_dir() {
        abs.as_path()
    } else {
        abs.parent()?
    };
    start
        .ancestors()
        .find(|d| {
            d.join("images").is_dir()
                || d.join("recipes").is_dir()
                || d.join("bakery.toml").is_file()
        })
        .map(Path::to_path_buf)
}
