//! `bakery render`: what runs on the instance, step by step.

use std::path::Path;

use super::{load, print_json, target_for, CliError};
use crate::catalog::model::{ImageName, Target};
use crate::plan::{Plan, PlannedAction, PlannedStep};

pub fn run(project: &Path, image: &str, target: Option<&str>, json: bool) -> Result<(), CliError> {
    let catalog = load(project)?;
    catalog.image(image)?;
    let offline = Target::offline();
    let target = target_for(&catalog, target, &offline)?;
    let plan = Plan::render(&catalog, &ImageName::new_unchecked(image), target)?;
    if json {
        return print_json(&plan);
    }
    crate::out!("{}", text(&plan));
    Ok(())
}

/// The human form: a header per step, then the exact script or action.
pub fn text(plan: &Plan) -> String {
    // `#` starts a comment in both bash and PowerShell, so the output stays runnable text.
    let c = "#";
    let mut out = String::new();
    out.push_str(&format!(
        "{c} image {} {} ({}, {}, {:?}) target {}\n{c} fingerprint {}\n",
        plan.image,
        plan.version,
        plan.platform.as_str(),
        plan.architecture.as_str(),
        plan.communicator,
        plan.target,
        plan.fingerprint
    ));
    if let Some(u) = &plan.user_data {
        out.push_str(&format!("\n{c} ---- user data ----\n{u}"));
        if !u.ends_with('\n') {
            out.push('\n');
        }
    }
    let n = plan.steps.len();
    for (i, s) in plan.steps.iter().enumerate() {
        write_step(&mut out, c, &format!("step {}/{n}", i + 1), s);
    }
    out.push_str(&format!("\n{c} ---- checks ({}) ----\n", plan.checks.len()));
    for ch in &plan.checks {
        let detail = serde_json::to_string(&ch.check.kind).unwrap_or_default();
        out.push_str(&format!(
            "{c} [{}] {}: {detail}\n",
            ch.origin, ch.check.name
        ));
    }
    let n = plan.finalize.len();
    if n > 0 {
        out.push_str(&format!(
            "\n{c} ---- finalize: after the checks, right before capture ----\n"
        ));
    }
    for (i, s) in plan.finalize.iter().enumerate() {
        write_step(&mut out, c, &format!("finalize {}/{n}", i + 1), s);
    }
    match &plan.test {
        None => out.push_str(&format!(
            "\n{c} ---- not tested on a fresh instance (no [test]) ----\n"
        )),
        Some(t) => {
            out.push_str(&format!(
                "\n{c} ---- test: a fresh instance from the new AMI ({}), {} checks ----\n",
                t.instance_types.join(", "),
                t.checks.len()
            ));
            if let Some(u) = &t.user_data {
                out.push_str(&format!("{c} user data:\n"));
                for l in u.lines() {
                    out.push_str(&format!("{c}   {l}\n"));
                }
            }
            for ch in &t.checks {
                let detail = serde_json::to_string(&ch.check.kind).unwrap_or_default();
                out.push_str(&format!(
                    "{c} [{}] {}: {detail}\n",
                    ch.origin, ch.check.name
                ));
            }
        }
    }
    out
}

fn write_step(out: &mut String, c: &str, label: &str, s: &PlannedStep) {
    out.push_str(&format!(
        "\n{c} ---- {label}: {} / {} (timeout {}s) ----\n",
        s.recipe,
        s.name,
        s.timeout.as_secs()
    ));
    for (k, v) in &s.env {
        out.push_str(&format!("{c} env {k}={v}\n"));
    }
    match &s.action {
        PlannedAction::Shell { script } | PlannedAction::PowerShell { script } => {
            out.push_str(script);
            if !script.ends_with('\n') {
                out.push('\n');
            }
        }
        PlannedAction::Upload {
            source,
            destination,
            mode,
            files,
            ..
        } => {
            out.push_str(&format!("{c} upload {source} -> {destination}"));
            if let Some(m) = mode {
                out.push_str(&format!(" (mode {m:04o})"));
            }
            out.push('\n');
            for f in files {
                let name = if f.rel.is_empty() {
                    source.as_str()
                } else {
                    f.rel.as_str()
                };
                out.push_str(&format!("{c}   {name} ({} bytes)\n", f.size));
            }
        }
        PlannedAction::Download {
            url,
            sha256,
            destination,
        } => {
            out.push_str(&format!(
                "{c} download {url}\n{c}   -> {destination}\n{c}   sha256 {sha256}\n"
            ));
        }
        PlannedAction::Restart { timeout } => {
            out.push_str(&format!("{c} restart and wait for a new boot"));
            if let Some(t) = timeout {
                out.push_str(&format!(" (timeout {}s)", t.as_secs()));
            }
            out.push('\n');
        }
        PlannedAction::WindowsUpdate {
            categories,
            exclude_kbs,
            max_passes,
        } => {
            out.push_str(&format!(
                "{c} windows update: {} (at most {max_passes} passes){}\n",
                categories.join(", "),
                if exclude_kbs.is_empty() {
                    String::new()
                } else {
                    format!(", except {}", exclude_kbs.join(", "))
                }
            ));
        }
    }
}
