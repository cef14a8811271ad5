//! `bakery bake` and `bakery cleanup`: the async commands, with signal handling and progress.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{load, print_json, CliError, LogFormat};
use crate::bake::ledger::Journal;
use crate::bake::{self, BakeOptions, FailKind, OnError};
use crate::catalog::model::ImageName;
use crate::checks::report;
use crate::cloud::cancel::Cancel;
use crate::events::{BakeEvent, Events};
use crate::remote::Stream;

/// Exit code when checks failed (the image was not registered).
pub const EXIT_CHECKS: i32 = 3;
/// Exit code after Ctrl-C / SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_CANCELLED: i32 = 130;

pub struct BakeArgs<'a> {
    pub image: &'a str,
    pub target: &'a str,
    pub on_error: OnError,
    pub manifest: Option<&'a Path>,
    pub junit: Option<&'a Path>,
    pub json: bool,
    pub log_format: LogFormat,
    pub verbose: u8,
}

/// Renders events: a spinner on a terminal, plain lines otherwise, JSON lines with
/// `--log-format json`.
fn renderer(log_format: LogFormat, verbose: u8, current: Arc<Mutex<Option<String>>>) -> Events {
    let tty = std::io::stderr().is_terminal() && log_format == LogFormat::Text;
    let bar = tty.then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    });
    let teamcity = std::env::var_os("TEAMCITY_VERSION")
        .map(|_| Mutex::new(super::teamcity::TeamCity::default()));
    Events::new(move |e| {
        if let Some(tc) = &teamcity {
            if let Ok(mut tc) = tc.lock() {
                for m in tc.messages(e) {
                    println!("{m}");
                }
            }
        }
        if let BakeEvent::Phase { bake_id, .. } = e {
            if let Ok(mut c) = current.lock() {
                *c = Some(bake_id.clone());
            }
        }
        if log_format == LogFormat::Json {
            if let Ok(s) = serde_json::to_string(e) {
                eprintln!("{s}");
            }
            return;
        }
        let line = match e {
            BakeEvent::Phase {
                bake_id,
                image,
                phase,
            } => Some(format!("==> {image} [{bake_id}] {phase}")),
            BakeEvent::Step {
                index,
                total,
                recipe,
                name,
                ..
            } => Some(format!("--> step {index}/{total}: {recipe} / {name}")),
            BakeEvent::Output { stream, line, .. } => {
                if let Some(pb) = &bar {
                    pb.set_message(line.chars().take(100).collect::<String>());
                }
                (bar.is_none() || verbose > 0).then(|| match stream {
                    Stream::Stdout => format!("    | {line}"),
                    Stream::Stderr => format!("    ! {line}"),
                })
            }
            BakeEvent::Check { result, .. } => Some(format!(
                "    {} {}: {}",
                if result.passed { "pass" } else { "FAIL" },
                result.name,
                result.detail
            )),
            BakeEvent::Created { resource, .. } => Some(format!("    + {resource}")),
            BakeEvent::Removed { resource, .. } => Some(format!("    - {resource}")),
            BakeEvent::Warning { message, .. } => Some(format!("warning: {message}")),
            BakeEvent::Finished {
                bake_id,
                image,
                outcome,
            } => Some(format!("==> {image} [{bake_id}] {outcome}")),
        };
        if let Some(l) = line {
            match &bar {
                Some(pb) => pb.println(l),
                None => eprintln!("{l}"),
            }
        }
    })
}

/// First Ctrl-C/SIGTERM cancels (the runner cleans up); a second one exits at once and says
/// what is left.
fn on_signals(cancel: Cancel, current: Arc<Mutex<Option<String>>>) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        let mut count = 0;
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
                _ = term.recv() => {}
            }
            count += 1;
            if count == 1 {
                eprintln!("interrupted: cleaning up what this bake created (interrupt again to skip cleanup)");
                cancel.cancel();
            } else {
                let id = current
                    .lock()
                    .ok()
                    .and_then(|c| c.clone())
                    .unwrap_or_default();
                eprintln!("cleanup skipped: resources may be left behind; remove them with: bakery cleanup {id}");
                std::process::exit(EXIT_CANCELLED);
            }
        }
    });
}

pub fn run_bake(project: &Path, a: &BakeArgs) -> Result<(), CliError> {
    let catalog = load(project)?;
    catalog.image(a.image)?;
    let target = catalog.target(a.target)?.clone();
    let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
    let current = Arc::new(Mutex::new(None));
    let events = renderer(a.log_format, a.verbose, current.clone());
    let cancel = Cancel::new();
    let opts = BakeOptions {
        on_error: a.on_error,
        ..Default::default()
    };
    let result = rt.block_on(async {
        on_signals(cancel.clone(), current.clone());
        bake::bake(
            project,
            &catalog,
            &ImageName::new_unchecked(a.image),
            &target,
            &opts,
            &events,
            &cancel,
        )
        .await
    });
    match result {
        Ok(art) => {
            if let Some(j) = a.junit {
                write(j, &report::junit(&art.image, &art.checks))?;
            }
            if let Some(m) = a.manifest {
                let s = serde_json::to_string_pretty(&art)
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                write(m, &s)?;
            }
            if std::env::var_os("TEAMCITY_VERSION").is_some() {
                for m in super::teamcity::TeamCity::amis(&art.image, &art.version, &art.amis) {
                    println!("{m}");
                }
            }
            if a.json {
                return print_json(&art);
            }
            println!("{}", report::table(&art.checks).trim_end());
            println!(
                "baked {} {} (fingerprint {})",
                art.image,
                art.version,
                &art.fingerprint[..12.min(art.fingerprint.len())]
            );
            for (region, ami) in &art.amis {
                println!("  {region}: {ami}");
            }
            for (name, value) in &art.parameters {
                println!("  {name} = {value}");
            }
            Ok(())
        }
        Err(e) => {
            if let Some(j) = a.junit {
                write(j, &report::junit(a.image, &e.checks))?;
            }
            if !e.checks.is_empty() {
                eprint!("{}", report::table(&e.checks));
            }
            let code = match e.kind {
                FailKind::Checks => EXIT_CHECKS,
                FailKind::Cancelled => EXIT_CANCELLED,
                FailKind::Failed => super::EXIT_FAILURE,
            };
            Err(CliError::Exit(code, e.to_string()))
        }
    }
}

pub fn run_cleanup(
    project: &Path,
    bake_id: &str,
    target: Option<&str>,
    log_format: LogFormat,
) -> Result<(), CliError> {
    let journal = Journal::load(project, bake_id)
        .map_err(|e| CliError::Failed(format!("no journal for bake {bake_id}: {e}")))?;
    let catalog = load(project)?;
    let target = catalog.target(target.unwrap_or(&journal.target))?.clone();
    let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
    let events = renderer(log_format, 0, Arc::new(Mutex::new(None)));
    let cancel = Cancel::new();
    let left = rt
        .block_on(bake::cleanup(project, &target, bake_id, &events, &cancel))
        .map_err(CliError::Failed)?;
    if left.is_empty() {
        println!("bake {bake_id}: nothing left behind");
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "bake {bake_id}: still left: {}",
            left.iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))
}

/// What `bake` does with several images.
pub struct ManyArgs<'a> {
    pub images: &'a [String],
    pub changed: bool,
    pub all: bool,
    pub jobs: usize,
    pub target: &'a str,
    pub on_error: OnError,
    pub json: bool,
    pub log_format: LogFormat,
    pub verbose: u8,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Outcome {
    image: String,
    outcome: &'static str,
    version: Option<String>,
    amis: std::collections::BTreeMap<String, String>,
    seconds: f64,
    error: Option<String>,
}

/// Bakes several images: parents before children (a child starts once its parent's new version
/// is published), at most `jobs` at once; a failure stops only its descendants.
pub fn run_many(project: &Path, a: &ManyArgs) -> Result<(), CliError> {
    use crate::catalog::graph;
    use crate::registry::changes;
    let catalog = load(project)?;
    let target = catalog.target(a.target)?.clone();
    let mut named = Vec::new();
    for n in a.images {
        named.push(catalog.image(n)?.name.clone());
    }
    let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
    let current = Arc::new(Mutex::new(None));
    let events = renderer(a.log_format, a.verbose, current.clone());
    let cancel = Cancel::new();
    let opts = BakeOptions {
        on_error: a.on_error,
        ..Default::default()
    };
    let outcomes = rt.block_on(async {
        on_signals(cancel.clone(), current.clone());
        let selected: Vec<ImageName> = if a.changed {
            let rows = changes::plan(&catalog, &target, &named)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            rows.iter()
                .filter(|r| r.status.bakes())
                .map(|r| ImageName::new_unchecked(r.image.clone()))
                .collect()
        } else if a.all {
            catalog.order.clone()
        } else {
            catalog
                .order
                .iter()
                .filter(|n| named.contains(n))
                .cloned()
                .collect()
        };
        let catalog = Arc::new(catalog.clone());
        let target = Arc::new(target.clone());
        let project = Arc::new(project.to_path_buf());
        let mut state: std::collections::BTreeMap<ImageName, Option<Outcome>> =
            selected.iter().map(|n| (n.clone(), None)).collect();
        let mut running = tokio::task::JoinSet::new();
        let mut started = std::collections::BTreeSet::new();
        loop {
            // Skip what descends from a failure; start what is ready.
            for n in &selected {
                if started.contains(n) {
                    continue;
                }
                let parent = graph::parent(&catalog.images[n]).filter(|p| state.contains_key(*p));
                let parent_state = parent.map(|p| state[p].as_ref().map(|o| o.outcome));
                match parent_state {
                    Some(Some(o)) if o != "baked" => {
                        started.insert(n.clone());
                        let p = parent.map(|p| p.to_string()).unwrap_or_default();
                        state.insert(
                            n.clone(),
                            Some(Outcome {
                                image: n.to_string(),
                                outcome: "skipped",
                                version: None,
                                amis: Default::default(),
                                seconds: 0.0,
                                error: Some(format!("parent {p} did not bake")),
                            }),
                        );
                    }
                    Some(None) => {}
                    _ if running.len() < a.jobs.max(1) && !cancel.is_cancelled() => {
                        started.insert(n.clone());
                        let (c, t, p, e, x, o, name) = (
                            catalog.clone(),
                            target.clone(),
                            project.clone(),
                            events.clone(),
                            cancel.clone(),
                            opts.clone(),
                            n.clone(),
                        );
                        running.spawn(async move {
                            let t0 = std::time::Instant::now();
                            let r = bake::bake(&p, &c, &name, &t, &o, &e, &x).await;
                            (name, r, t0.elapsed().as_secs_f64())
                        });
                    }
                    _ => {}
                }
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let (name, r, seconds) = done.map_err(|e| CliError::Failed(e.to_string()))?;
            let o = match r {
                Ok(art) => Outcome {
                    image: name.to_string(),
                    outcome: "baked",
                    version: Some(art.version),
                    amis: art.amis,
                    seconds,
                    error: None,
                },
                Err(e) => Outcome {
                    image: name.to_string(),
                    outcome: if e.kind == FailKind::Cancelled {
                        "cancelled"
                    } else {
                        "failed"
                    },
                    version: None,
                    amis: Default::default(),
                    seconds,
                    error: Some(e.to_string()),
                },
            };
            state.insert(name, Some(o));
        }
        Ok::<_, CliError>(
            selected
                .iter()
                .filter_map(|n| state.get(n).cloned().flatten())
                .collect::<Vec<Outcome>>(),
        )
    })?;
    if a.json {
        print_json(&outcomes)?;
    } else {
        println!(
            "{:<28} {:<10} {:<10} {:>8}  AMIS",
            "IMAGE", "OUTCOME", "VERSION", "SECONDS"
        );
        for o in &outcomes {
            let amis: Vec<String> = o.amis.iter().map(|(r, a)| format!("{r}={a}")).collect();
            println!(
                "{:<28} {:<10} {:<10} {:>8.1}  {}",
                o.image,
                o.outcome,
                o.version.as_deref().unwrap_or("-"),
                o.seconds,
                amis.join(" ")
            );
        }
        if outcomes.is_empty() {
            println!("nothing to bake");
        }
    }
    let bad: Vec<&Outcome> = outcomes.iter().filter(|o| o.outcome != "baked").collect();
    if bad.is_empty() {
        return Ok(());
    }
    let detail: Vec<String> = bad
        .iter()
        .map(|o| {
            format!(
                "{} {}: {}",
                o.image,
                o.outcome,
                o.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    let code = if bad.iter().any(|o| o.outcome == "cancelled") {
        EXIT_CANCELLED
    } else {
        super::EXIT_FAILURE
    };
    Err(CliError::Exit(code, detail.join("\n")))
}
