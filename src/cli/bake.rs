//! `bakery bake` and `bakery cleanup`: the async commands, with signal handling and progress.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::report::{write, Recorder};
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
    pub lease: Duration,
    pub force_after: Duration,
    pub skip_test: bool,
    pub manifest: Option<&'a Path>,
    pub junit: Option<&'a Path>,
    pub report: Option<&'a Path>,
    pub json: bool,
    pub log_format: LogFormat,
    pub verbose: u8,
}

/// Renders events: on a terminal one progress line per bake (phase, current step, elapsed)
/// with log lines above them; plain lines otherwise; JSON lines with `--log-format json`;
/// TeamCity service messages when `TEAMCITY_VERSION` is set. Every event also reaches
/// `recorder` (for `--report`).
fn renderer(
    log_format: LogFormat,
    verbose: u8,
    current: Arc<Mutex<Option<String>>>,
    recorder: Arc<Recorder>,
) -> Events {
    let tty = std::io::stderr().is_terminal() && log_format == LogFormat::Text;
    // Colour on a terminal unless NO_COLOR is set to anything but "" (no-color.org).
    let color = tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let bars = tty.then(|| Bars {
        multi: indicatif::MultiProgress::new(),
        lines: Mutex::new(std::collections::HashMap::new()),
        color,
    });
    let teamcity = std::env::var_os("TEAMCITY_VERSION")
        .map(|_| Mutex::new(super::teamcity::TeamCity::default()));
    Events::new(move |e, image| {
        recorder.record(e);
        if let Some(tc) = &teamcity {
            if let Ok(mut tc) = tc.lock() {
                for m in tc.messages(e) {
                    super::teamcity::print(&m);
                }
            }
        }
        if let BakeEvent::Phase { bake_id, .. } = e {
            if let Ok(mut c) = current.lock() {
                *c = Some(bake_id.clone());
            }
        }
        if log_format == LogFormat::Json {
            // The envelope a log pipeline indexes (schema, timestamp, level, app, image), then
            // the event's pinned fields.
            crate::errln!("{}", e.json_line(std::time::SystemTime::now(), image));
            return;
        }
        if let Some(b) = &bars {
            b.update(e);
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
                (bars.is_none() || verbose > 0).then(|| match stream {
                    Stream::Stdout => format!("    | {line}"),
                    Stream::Stderr => format!("    ! {line}"),
                })
            }
            BakeEvent::Check { result, .. } => Some(format!(
                "    {} {}: {}",
                if result.passed {
                    paint(color, GREEN, "pass")
                } else {
                    paint(color, RED, "FAIL")
                },
                result.name,
                result.detail
            )),
            BakeEvent::Created { resource, .. } => Some(format!("    + {resource}")),
            BakeEvent::Removed { resource, .. } => Some(format!("    - {resource}")),
            BakeEvent::Warning { message, .. } => {
                Some(format!("{}: {message}", paint(color, YELLOW, "warning")))
            }
            BakeEvent::Waiting { what, .. } => Some(format!("    … {what}")),
            BakeEvent::Finished {
                bake_id,
                image,
                outcome,
                seconds,
                failure,
            } => Some(match failure {
                None => format!(
                    "==> {image} [{bake_id}] {} in {seconds:.1}s",
                    paint(color, GREEN, outcome)
                ),
                Some(f) => format!(
                    "==> {image} [{bake_id}] {} in {seconds:.1}s ({}, {})",
                    paint(color, RED, outcome),
                    f.code.as_str(),
                    f.error_hash
                ),
            }),
        };
        if let Some(l) = line {
            match &bars {
                Some(b) => {
                    let _ = b.multi.println(l);
                }
                None => crate::errln!("{l}"),
            }
        }
    })
}

/// SGR colours of the text output on a terminal.
const GREEN: &str = "32";
const RED: &str = "31";
const YELLOW: &str = "33";

/// `s` in colour `sgr` when `on`.
fn paint(on: bool, sgr: &str, s: &str) -> String {
    if on {
        format!("\x1b[{sgr}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// One progress line per bake on a terminal.
struct Bars {
    multi: indicatif::MultiProgress,
    /// bake id -> (line, image, phase, step)
    lines: Mutex<std::collections::HashMap<String, BakeLine>>,
    /// Colour (a terminal without NO_COLOR).
    color: bool,
}

struct BakeLine {
    bar: indicatif::ProgressBar,
    image: String,
    phase: String,
    step: String,
}

impl Bars {
    fn update(&self, e: &BakeEvent) {
        let Ok(mut lines) = self.lines.lock() else {
            return;
        };
        if let BakeEvent::Phase {
            bake_id,
            image,
            phase,
        } = e
        {
            let l = lines.entry(bake_id.clone()).or_insert_with(|| {
                let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
                let template = if self.color {
                    "{spinner:.cyan} {prefix:<28.bold} {elapsed:>5} {wide_msg}"
                } else {
                    "{spinner} {prefix:<28} {elapsed:>5} {wide_msg}"
                };
                if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                    bar.set_style(style);
                }
                bar.set_prefix(image.clone());
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                BakeLine {
                    bar,
                    image: image.clone(),
                    phase: String::new(),
                    step: String::new(),
                }
            });
            l.phase = phase.to_string();
            l.step.clear();
            l.bar.set_message(l.phase.clone());
            return;
        }
        if let BakeEvent::Phase { .. } = e {
            return;
        }
        let id = e.bake_id();
        let Some(l) = lines.get_mut(id) else {
            return;
        };
        match e {
            BakeEvent::Step {
                index,
                total,
                recipe,
                name,
                ..
            } => {
                l.step = format!("step {index}/{total} {recipe} / {name}");
                l.bar.set_message(format!("{}: {}", l.phase, l.step));
            }
            BakeEvent::Output { line, .. } => {
                let tail: String = line.chars().take(80).collect();
                l.bar
                    .set_message(format!("{}: {} | {tail}", l.phase, l.step));
            }
            BakeEvent::Waiting { what, .. } => {
                l.bar.set_message(format!("{}: {what}", l.phase));
            }
            BakeEvent::Finished {
                outcome, failure, ..
            } => {
                let sgr = if failure.is_some() { RED } else { GREEN };
                l.bar.finish_with_message(format!(
                    "{} ({})",
                    paint(self.color, sgr, outcome),
                    l.image
                ));
            }
            _ => {}
        }
    }
}

/// What a bake command sets up: a runtime, the event renderer (feeding the `--report`
/// recorder), cancellation, and the bakes' options.
struct Session {
    rt: tokio::runtime::Runtime,
    current: Arc<Mutex<Option<String>>>,
    recorder: Arc<Recorder>,
    events: Events,
    cancel: Cancel,
    opts: BakeOptions,
    target: String,
    force_after: Duration,
}

impl Session {
    fn new(
        log_format: LogFormat,
        verbose: u8,
        on_error: OnError,
        target: &str,
        lease: Duration,
        force_after: Duration,
        skip_test: bool,
    ) -> Result<Self, CliError> {
        let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
        let current = Arc::new(Mutex::new(None));
        let recorder = Arc::new(Recorder::default());
        let events = renderer(log_format, verbose, current.clone(), recorder.clone());
        Ok(Self {
            rt,
            current,
            recorder,
            events,
            cancel: Cancel::new(),
            opts: BakeOptions {
                on_error,
                lease,
                skip_test,
                ..Default::default()
            },
            target: target.to_string(),
            force_after,
        })
    }

    /// Runs `f` on the runtime, with SIGINT/SIGTERM/SIGHUP handled.
    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(async {
            on_signals(Signals {
                cancel: self.cancel.clone(),
                current: self.current.clone(),
                target: self.target.clone(),
                force_after: self.force_after,
            });
            f.await
        })
    }
}

/// What the signal handler needs.
struct Signals {
    cancel: Cancel,
    current: Arc<Mutex<Option<String>>>,
    target: String,
    force_after: Duration,
}

/// SIGINT, SIGTERM and SIGHUP all start the same cleanup (CI systems cancel with any of them:
/// GitHub Actions sends SIGINT, then SIGTERM, then SIGKILL; TeamCity SIGTERM). A further signal
/// skips the cleanup only after `force_after` (so a CI's SIGTERM hard on the heels of its SIGINT
/// does not), or at once for a second Ctrl-C typed on a terminal. Messages go through `write`,
/// never `eprintln!`: after SIGHUP the terminal may be gone, and a failed write must not panic.
fn on_signals(s: Signals) {
    tokio::spawn(async move {
        use std::io::{IsTerminal, Write};
        use tokio::signal::unix::{signal, SignalKind};
        let say = |m: String| {
            let _ = writeln!(std::io::stderr(), "{m}");
        };
        let (mut int, mut term, mut hup) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(i), Ok(t), Ok(h)) => (i, t, h),
            _ => {
                tracing::warn!("cannot listen for signals");
                return;
            }
        };
        let terminal = std::io::stdin().is_terminal();
        let mut first: Option<Instant> = None;
        loop {
            let name = tokio::select! {
                Some(()) = int.recv() => "SIGINT",
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = hup.recv() => "SIGHUP",
                else => return,
            };
            let grace = s.force_after.as_secs();
            match first {
                None => {
                    first = Some(Instant::now());
                    say(format!("{name}: cleaning up what this bake created (another signal after {grace}s{} skips the cleanup)", if terminal { ", or Ctrl-C again," } else { "" }));
                    s.cancel.cancel();
                }
                Some(t) if (terminal && name == "SIGINT") || t.elapsed() >= s.force_after => {
                    let id = s
                        .current
                        .lock()
                        .ok()
                        .and_then(|c| c.clone())
                        .unwrap_or_default();
                    say(format!("{name}: cleanup skipped: resources may be left behind; remove them with: bakery cleanup {id} --target {target} (or, for every bake, bakery gc --target {target})", target = s.target));
                    std::process::exit(EXIT_CANCELLED);
                }
                Some(_) => say(format!(
                    "{name}: still cleaning up (signals in the first {grace}s after the first one do not stop the cleanup)"
                )),
            }
        }
    });
}

pub fn run_bake(project: &Path, a: &BakeArgs) -> Result<(), CliError> {
    if a.json {
        super::teamcity::json_on_stdout();
    }
    let catalog = load(project)?;
    catalog.image(a.image)?;
    let target = catalog.target(a.target)?.clone();
    target.writable().map_err(CliError::usage)?;
    let se = Session::new(
        a.log_format,
        a.verbose,
        a.on_error,
        a.target,
        a.lease,
        a.force_after,
        a.skip_test,
    )?;
    let t0 = std::time::Instant::now();
    let result = se.block_on(bake::bake(
        project,
        &catalog,
        &ImageName::new_unchecked(a.image),
        &target,
        &se.opts,
        &se.events,
        &se.cancel,
    ));
    if let Some(dir) = a.report {
        se.recorder
            .write(dir, &result, t0.elapsed().as_secs_f64())?;
    }
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
                    super::teamcity::print(&m);
                }
            }
            if a.json {
                return print_json(&art);
            }
            crate::outln!("{}", report::table(&art.checks).trim_end());
            crate::outln!(
                "baked {} {} (fingerprint {})",
                art.image,
                art.version,
                &art.fingerprint[..12.min(art.fingerprint.len())]
            );
            for (region, ami) in &art.amis {
                crate::outln!("  {region}: {ami}");
            }
            for (name, value) in &art.parameters {
                crate::outln!("  {name} = {value}");
            }
            Ok(())
        }
        Err(e) => {
            if let Some(j) = a.junit {
                write(j, &report::junit(a.image, &e.checks))?;
            }
            if !e.checks.is_empty() {
                crate::errln!("{}", report::table(&e.checks).trim_end());
            }
            Err(CliError::Exit(exit_of(e.kind), e.to_string()))
        }
    }
}

/// `bakery cleanup <bake-id>`: replays the journal when this machine has it, else sweeps the
/// bake's tags in every region of the target (refusing a bake whose lease still runs, unless
/// `force`).
pub fn run_cleanup(
    project: &Path,
    bake_id: &str,
    target: Option<&str>,
    force: bool,
    log_format: LogFormat,
) -> Result<(), CliError> {
    if !crate::bake::sweep::is_bake_id(bake_id) {
        return Err(CliError::Exit(
            super::EXIT_INVALID,
            format!("`{bake_id}` is not a bake id (they look like bk-t4m2xa-1f2e3d4c; bakes print theirs, and `bakery gc --dry-run` lists them)"),
        ));
    }
    let journal = match Journal::load(project, bake_id) {
        Ok(j) => j,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return cleanup_by_tags(project, bake_id, target, force)
        }
        Err(e) => {
            return Err(CliError::Failed(format!(
                "cannot read the journal of bake {bake_id}: {e}"
            )))
        }
    };
    let catalog = load(project)?;
    let target = catalog.target(target.unwrap_or(&journal.target))?.clone();
    let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
    let events = renderer(
        log_format,
        0,
        Arc::new(Mutex::new(None)),
        Arc::new(Recorder::default()),
    );
    let cancel = Cancel::new();
    let left = rt
        .block_on(bake::cleanup(project, &target, bake_id, &events, &cancel))
        .map_err(CliError::Failed)?;
    if left.is_empty() {
        crate::outln!("bake {bake_id}: nothing left behind");
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

/// `cleanup` on a machine without the journal: what carries the bake id, in every region.
fn cleanup_by_tags(
    project: &Path,
    bake_id: &str,
    target: Option<&str>,
    force: bool,
) -> Result<(), CliError> {
    let catalog = load(project)?;
    let target = super::registry::pick_target(&catalog, target)?.clone();
    let o = crate::bake::gc::Options {
        bake: Some(bake_id.to_string()),
        dry_run: false,
        older_than: Duration::ZERO,
        ignore_lease: force,
    };
    let report = super::gc::collect(&target, &o)?;
    if let Some(kept) = report.items.iter().find(|i| i.action == "kept") {
        return Err(CliError::Failed(format!(
            "no journal of bake {bake_id} here, and {}: it may still be running on another machine; if it is not, rerun with --force",
            kept.detail.as_deref().unwrap_or("it is live")
        )));
    }
    super::gc::print(&report, false, &target.name)
}

/// What `bake` does with several images.
pub struct ManyArgs<'a> {
    pub images: &'a [String],
    pub changed: bool,
    pub all: bool,
    pub jobs: usize,
    pub target: &'a str,
    pub on_error: OnError,
    pub lease: Duration,
    pub force_after: Duration,
    pub skip_test: bool,
    pub report: Option<&'a Path>,
    /// `--manifest FILE`: every image's manifest (or why it did not bake) in one document.
    pub manifest: Option<&'a Path>,
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
    /// Why it was baked (the plan's reasons).
    reasons: Vec<String>,
    /// Its cost estimate (none when it launched nothing).
    cost: Option<crate::cost::Cost>,
    /// A baked image's manifest (for `--manifest`).
    #[serde(skip)]
    artifact: Option<Box<bake::Artifact>>,
}

/// The run's cost: every bake's one-time cost (failed ones too) and the monthly snapshot storage
/// of the versions it published, per currency (a target's tables may differ), with the tables
/// used.
fn total_cost(outcomes: &[Outcome]) -> serde_json::Value {
    let mut by_currency: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
    let mut tables = std::collections::BTreeSet::new();
    for c in outcomes.iter().filter_map(|o| o.cost.as_ref()) {
        let t = by_currency.entry(c.currency.as_str()).or_default();
        t.0 += c.bake;
        t.1 += c.storage_per_month;
        tables.insert(format!(
            "{} {} ({})",
            c.price_table, c.price_date, c.price_source
        ));
    }
    let totals: Vec<serde_json::Value> = by_currency
        .into_iter()
        .map(|(currency, (bake, storage))| {
            serde_json::json!({ "currency": currency, "bake": bake, "storage_per_month": storage })
        })
        .collect();
    serde_json::json!({ "totals": totals, "price_tables": tables })
}

/// `--manifest` of a many-image bake: one JSON document, `images` in the order they were
/// planned, a baked one with every field of a single bake's manifest, the others with their
/// outcome and the reason.
fn many_manifest(outcomes: &[Outcome]) -> String {
    let images: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| match &o.artifact {
            Some(art) => {
                let mut v = serde_json::to_value(art.as_ref()).unwrap_or_default();
                if let Some(m) = v.as_object_mut() {
                    m.insert("outcome".into(), o.outcome.into());
                }
                v
            }
            None => serde_json::json!({
                "image": o.image,
                "outcome": o.outcome,
                "reason": o.error,
            }),
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "images": images })).unwrap_or_default()
}

/// Bakes several images: parents before children (a child starts once its parent's new version
/// is published), at most `jobs` at once; a failure stops only its descendants.
pub fn run_many(project: &Path, a: &ManyArgs) -> Result<(), CliError> {
    if a.json {
        super::teamcity::json_on_stdout();
    }
    use crate::catalog::graph;
    use crate::registry::changes;
    let catalog = load(project)?;
    let target = catalog.target(a.target)?.clone();
    target.writable().map_err(CliError::usage)?;
    let mut named = Vec::new();
    for n in a.images {
        named.push(catalog.image(n)?.name.clone());
    }
    let se = Session::new(
        a.log_format,
        a.verbose,
        a.on_error,
        a.target,
        a.lease,
        a.force_after,
        a.skip_test,
    )?;
    let (events, cancel, opts, recorder) = (&se.events, &se.cancel, &se.opts, &se.recorder);
    let fleet = opts.fleet.clone();
    let run_started = std::time::Instant::now();
    let (outcomes, stats) = se.block_on(async {
        let selected: Vec<ImageName> = if a.changed {
            let rows = changes::plan(project, &catalog, &target, &named).await?;
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
                                reasons: Vec::new(),
                                cost: None,
                                artifact: None,
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
            if let Some(dir) = a.report {
                recorder.write(dir, &r, seconds)?;
            }
            let o = match r {
                Ok(art) => Outcome {
                    image: name.to_string(),
                    outcome: "baked",
                    version: Some(art.version.clone()),
                    amis: art.amis.clone(),
                    seconds,
                    error: None,
                    reasons: art.reasons.clone(),
                    cost: Some(art.cost.clone()),
                    artifact: Some(Box::new(art)),
                },
                Err(e) => Outcome {
                    image: name.to_string(),
                    outcome: e.kind.outcome(),
                    version: None,
                    amis: Default::default(),
                    seconds,
                    error: Some(e.to_string()),
                    reasons: e.reasons.clone(),
                    cost: e.cost.clone(),
                    artifact: None,
                },
            };
            state.insert(name, Some(o));
        }
        Ok::<_, CliError>((
            selected
                .iter()
                .filter_map(|n| state.get(n).cloned().flatten())
                .collect::<Vec<Outcome>>(),
            fleet.stats().await,
        ))
    })?;
    for (region, s) in &stats {
        tracing::info!(
            region = %region,
            ec2_requests = s.ec2.requests,
            rate_limited = s.ec2.delayed,
            describe_calls = s.instances.calls + s.images.calls,
            waits_answered = s.instances.answered + s.images.answered,
            "AWS usage"
        );
    }
    if let Some(dir) = a.report {
        let summary = serde_json::json!({
            "seconds": run_started.elapsed().as_secs_f64(),
            "bakes": outcomes,
            "cost": total_cost(&outcomes),
            "aws": stats,
        });
        write(
            &dir.join("summary.json"),
            &serde_json::to_string_pretty(&summary).unwrap_or_default(),
        )?;
    }
    if let Some(m) = a.manifest {
        write(m, &many_manifest(&outcomes))?;
    }
    if std::env::var_os("TEAMCITY_VERSION").is_some() {
        // The next build step reads each baked image's version and AMIs; a failure is a
        // build problem of its own.
        for o in &outcomes {
            match &o.artifact {
                Some(art) => {
                    for m in super::teamcity::TeamCity::amis(&art.image, &art.version, &art.amis) {
                        super::teamcity::print(&m);
                    }
                }
                None => super::teamcity::print(&super::teamcity::build_problem(
                    &o.image,
                    &format!(
                        "{} {}: {}",
                        o.image,
                        o.outcome,
                        o.error.as_deref().unwrap_or("")
                    ),
                )),
            }
        }
    }
    if a.json {
        print_json(&outcomes)?;
    } else {
        crate::outln!(
            "{:<28} {:<10} {:<10} {:>8}  AMIS",
            "IMAGE",
            "OUTCOME",
            "VERSION",
            "SECONDS"
        );
        for o in &outcomes {
            let amis: Vec<String> = o.amis.iter().map(|(r, a)| format!("{r}={a}")).collect();
            crate::outln!(
                "{:<28} {:<10} {:<10} {:>8.1}  {}",
                o.image,
                o.outcome,
                o.version.as_deref().unwrap_or("-"),
                o.seconds,
                amis.join(" ")
            );
        }
        if outcomes.is_empty() {
            crate::outln!("nothing to bake");
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
    } else if bad.iter().all(|o| o.outcome == FailKind::Invalid.outcome()) {
        super::EXIT_INVALID
    } else {
        super::EXIT_FAILURE
    };
    Err(CliError::Exit(code, detail.join("\n")))
}

/// The exit code of a failed bake or test.
fn exit_of(kind: FailKind) -> i32 {
    match kind {
        FailKind::Checks => EXIT_CHECKS,
        FailKind::Cancelled => EXIT_CANCELLED,
        FailKind::Failed => super::EXIT_FAILURE,
        FailKind::Invalid => super::EXIT_INVALID,
    }
}

/// What `bakery test` does.
pub struct TestArgs<'a> {
    /// `image@requirement` (a semver requirement, `latest` or a channel).
    pub spec: &'a str,
    pub target: Option<&'a str>,
    pub junit: Option<&'a Path>,
    /// `--report DIR`.
    pub report: Option<&'a Path>,
    pub json: bool,
    /// Revoke the version when a test check fails.
    pub revoke_on_fail: bool,
    pub log_format: LogFormat,
    pub verbose: u8,
}

/// `bakery test image@req`: the image's test checks on a fresh instance launched from the
/// version the requirement resolves to now; 0 when they pass, 3 when one fails (and, with
/// `--on-fail revoke`, the version is revoked with the failing checks as the reason).
pub fn run_test(project: &Path, a: &TestArgs) -> Result<(), CliError> {
    if a.json {
        super::teamcity::json_on_stdout();
    }
    use crate::registry::aws::Registry;
    let (image, req) = super::registry::image_req(a.spec)?;
    let catalog = load(project)?;
    catalog.image(&image)?;
    let target = super::registry::pick_target(&catalog, a.target)?.clone();
    target.writable().map_err(CliError::usage)?;
    let plan = crate::plan::Planner::new(&catalog, &target)
        .plan(&ImageName::new_unchecked(&image))
        .map_err(CliError::Invalid)?;
    if plan.test.is_none() {
        return Err(CliError::Exit(
            super::EXIT_INVALID,
            format!("{image} has no test checks: add [[test.check]] to images/{image}.toml"),
        ));
    }
    let Some(region) = target.regions.first().map(|r| r.to_string()) else {
        return Err(CliError::Exit(
            super::EXIT_INVALID,
            format!("target {} has no region", target.name),
        ));
    };
    let se = Session::new(
        a.log_format,
        a.verbose,
        OnError::Cleanup,
        &target.name,
        crate::bake::DEFAULT_LEASE,
        Duration::from_secs(10),
        false,
    )?;
    let failed = |e: crate::cloud::CloudError| CliError::Failed(e.to_string());
    let started = std::time::Instant::now();
    let (version, ami, result, revoked) = se.block_on(async {
        let mut reg = Registry::in_fleet(&target, &se.opts.fleet);
        let v = reg.resolve(&image, &req).await.map_err(failed)?;
        let ami = v.amis.get(&region).map(|i| i.id.clone()).ok_or_else(|| {
            CliError::Failed(format!("{image} {} has no AMI in {region}", v.version))
        })?;
        let result = bake::test_version(
            project,
            &catalog,
            &ImageName::new_unchecked(&image),
            &v.version,
            &ami,
            &target,
            &se.opts,
            &se.events,
            &se.cancel,
        )
        .await;
        let mut revoked = None;
        if let (Err(e), true) = (&result, a.revoke_on_fail) {
            if e.kind == FailKind::Checks {
                let names: Vec<&str> = e
                    .checks
                    .iter()
                    .filter(|c| !c.passed)
                    .map(|c| c.name.as_str())
                    .collect();
                let reason = format!(
                    "failed on a fresh instance (bakery test): {}",
                    names.join(", ")
                );
                reg.revoke(&image, &v.version, &reason)
                    .await
                    .map_err(failed)?;
                revoked = Some(reason);
            }
        }
        Ok::<_, CliError>((v.version, ami, result, revoked))
    })?;
    let checks = match &result {
        Ok(t) => t.checks.clone(),
        Err(e) => e.checks.clone(),
    };
    if let Some(dir) = a.report {
        let path = se.recorder.write_test(
            dir,
            &super::report::TestedVersion {
                image: &image,
                version: &version.to_string(),
                ami: ami.as_str(),
                revoked: revoked.as_deref(),
            },
            &result,
            started.elapsed().as_secs_f64(),
        )?;
        tracing::info!(report = %path.display(), "test report written");
    }
    if let Some(j) = a.junit {
        write(j, &report::junit(&image, &checks))?;
    }
    if a.json {
        print_json(&serde_json::json!({
            "image": image,
            "version": version.to_string(),
            "ami": ami.to_string(),
            "passed": result.is_ok(),
            "checks": checks,
            "revoked": revoked,
            "boot_seconds": result.as_ref().ok().and_then(|t| t.boot_seconds),
        }))?;
    } else if !checks.is_empty() {
        crate::outln!("{}", report::table(&checks).trim_end());
    }
    match result {
        Ok(_) => {
            if !a.json {
                crate::outln!(
                    "{image} {version} ({ami}) passed its test checks on a fresh instance"
                );
            }
            Ok(())
        }
        Err(e) => {
            let code = exit_of(e.kind);
            let mut msg = e.to_string();
            if let Some(r) = revoked {
                msg.push_str(&format!("\nrevoked {image} {version}: {r}"));
            }
            Err(CliError::Exit(code, msg))
        }
    }
}
