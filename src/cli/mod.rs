//! The command line: clap definitions, and output for humans (text) and scripts (`--json`).

mod bake;
#[cfg(test)]
mod examples;
mod gc;
mod lock;
pub mod log;
mod plan;
mod registry;
mod render;
mod report;
pub mod teamcity;
mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::catalog::diag::{Diagnostic, Diagnostics};

/// Exit code for invalid input (catalog, target or flags): nothing was created or called.
pub const EXIT_INVALID: i32 = 2;
/// Exit code for a runtime failure.
pub const EXIT_FAILURE: i32 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "bakery",
    version,
    about = "Bake golden machine images (Windows Server, TeamCity agents, Linux) into versioned AMIs",
    after_help = "Examples:\n  bakery validate\n  bakery render teamcity-agent-windows\n  bakery plan --offline --explain teamcity-agent-windows\n  bakery schema image > image.schema.json\n\nExit codes: 0 success, 1 runtime failure, 2 invalid input (nothing was created)."
)]
pub struct Cli {
    /// Project root (holds images/, recipes/ and bakery.toml).
    #[arg(long, global = true, env = "BAKERY_PROJECT", default_value = ".")]
    pub project: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check images, recipes and targets; report every problem with its file, line and column.
    #[command(
        after_help = "Examples:\n  bakery validate                 # the project in the current directory\n  bakery validate ../platform-images images/teamcity-agent-windows.toml\n  bakery validate --json | jq '.problems[].location'"
    )]
    Validate {
        /// Project directories, or files inside a project (the whole project is checked).
        paths: Vec<PathBuf>,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print exactly what will run on the build instance, step by step.
    #[command(
        after_help = "Examples:\n  bakery render teamcity-agent-windows\n  bakery render sandbox-demo --target sandbox --json"
    )]
    Render {
        /// Image name.
        image: String,
        /// Render against this target of bakery.toml (default: an offline placeholder target).
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// What needs baking and why (against the registry), or with --offline the images in
    /// dependency order with their fingerprints.
    #[command(
        after_help = "Examples:\n  bakery plan --target prod                      # new, changed (and why) or up to date\n  bakery plan --target prod --exit-code          # exit 10 when something needs baking\n  bakery plan --target prod --json --levels      # a CI matrix: what to bake, parents in earlier levels\n  bakery plan --offline\n  bakery plan --offline --explain teamcity-agent-linux\n  bakery plan --offline --json teamcity-agent-windows"
    )]
    Plan {
        /// Images to plan (default: all), with their ancestors.
        images: Vec<String>,
        /// Do not call AWS: fingerprints cover the catalog only (source AMIs are resolved at bake time).
        #[arg(long)]
        offline: bool,
        /// Exit 10 when something needs baking, 0 when nothing does (for schedules and CI).
        #[arg(long, conflicts_with = "offline")]
        exit_code: bool,
        /// List every input of this image's fingerprint with its own hash (with --offline).
        #[arg(long, value_name = "IMAGE", requires = "offline")]
        explain: Option<String>,
        /// Target in bakery.toml (default: the only one).
        #[arg(long)]
        target: Option<String>,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Group what needs baking by dependency level (parents in earlier levels), for a CI
        /// matrix: `levels` in the JSON, one line per level in text.
        #[arg(long, conflicts_with = "offline")]
        levels: bool,
    },
    /// Bake an image: launch, provision, verify, capture, register a new version.
    #[command(
        after_help = "Examples:\n  bakery bake sandbox-demo --target sandbox\n  bakery bake teamcity-agent-linux --target prod --manifest out/manifest.json --junit out/checks.xml\n  bakery bake sandbox-demo --target sandbox --on-error keep   # keep a failed instance to debug it\n  bakery bake --changed --target prod --jobs 4                # what `bakery plan` says changed, parents first\n  bakery bake --changed --target prod --report out/           # a JSON report and JUnit XML per bake\n\nExit codes: 0 baked, 1 failed, 2 invalid input, 3 checks failed (nothing registered), 130 interrupted\n(SIGINT, SIGTERM or SIGHUP: the bake cleaned up, or says what `bakery gc` / `bakery cleanup` must remove)."
    )]
    Bake {
        /// Image names (one for a single bake; several, or --changed / --all, to bake many).
        images: Vec<String>,
        /// Target in bakery.toml.
        #[arg(long)]
        target: String,
        /// Bake exactly what `bakery plan` reports as new or changed (of IMAGES, or all).
        #[arg(long, conflicts_with = "all")]
        changed: bool,
        /// Bake every image of the catalog.
        #[arg(long)]
        all: bool,
        /// Bakes at once when baking many.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
        /// On failure: remove everything (cleanup) or keep the instance for debugging (keep).
        #[arg(long, value_enum, default_value_t = OnErrorArg::Cleanup)]
        on_error: OnErrorArg,
        /// How long the bake's resources count as live without a renewal of their
        /// `bakery:expires` tag (renewed every third of it while the bake runs); `bakery gc`
        /// removes a killed bake's resources once it has run out.
        #[arg(long, value_name = "DURATION", value_parser = lease_arg, default_value = "30m")]
        lease: std::time::Duration,
        /// After the first SIGINT/SIGTERM/SIGHUP the bake cleans up; a further signal skips the
        /// cleanup only once this long has passed (a second Ctrl-C on a terminal skips it at once).
        #[arg(long, value_name = "DURATION", value_parser = duration_or_zero_arg, default_value = "10s")]
        force_after: std::time::Duration,
        /// Skip the test phase on a fresh instance (emergencies only): the AMI is tagged
        /// `bakery:tested=skipped`.
        #[arg(long)]
        skip_test: bool,
        /// Write a JSON manifest (image, version, fingerprint, AMIs, timings) to FILE.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Write check results as JUnit XML to FILE.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Write a report per bake into DIR: <image>.json (timings per phase, fingerprint
        /// inputs, resources created and removed, checks) and <image>.junit.xml; when baking
        /// many, also summary.json (outcomes and AWS requests per region).
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Remove what a bake left behind: from its journal (.bakery/bakes/<bake-id>.json) when
    /// this machine has it, else found by the bake's tags in every region of the target.
    #[command(
        after_help = "Examples:\n  bakery cleanup bk-t4m2xa-1f2e3d4c\n  bakery cleanup bk-t4m2xa-1f2e3d4c --target sandbox   # on another machine: by tags\n\nA published version is never removed (only prune and revoke do that).\nExit codes: 0 nothing left, 1 something could not be removed, 2 not a bake id or no such target."
    )]
    Cleanup {
        bake_id: String,
        /// Target (default: the one the bake used; needed without a journal when bakery.toml
        /// has several).
        #[arg(long)]
        target: Option<String>,
        /// Without a journal: remove even while the bake's lease (`bakery:expires`) runs, i.e.
        /// you know it is no longer running anywhere.
        #[arg(long)]
        force: bool,
    },
    /// Remove what bakes left behind in every region of a target, found by their tags alone (no
    /// journal needed): instances, security groups, key pairs, AMIs never published, their
    /// snapshots, S3 objects and parameters naming AMIs that are gone.
    #[command(
        after_help = "Examples:\n  bakery gc --target prod --dry-run        # what would go, and why\n  bakery gc --target prod\n  bakery gc --target prod --older-than 2h --json\n\nA bake is live while its bakery:expires tag is in the future (a running bake renews it,\nsee `bake --lease`): gc leaves it alone, as it leaves anything untagged or published.\nExit codes: 0 done, 1 something could not be scanned or removed (rerun to retry), 2 invalid input."
    )]
    Gc {
        #[arg(long, env = "BAKERY_TARGET")]
        target: Option<String>,
        /// List what would be removed, with the reason for each; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only bakes whose lease ran out at least this long ago (90s, 20m, 2h, 7d).
        #[arg(long, value_name = "DURATION", value_parser = duration_or_zero_arg, default_value = "0s")]
        older_than: std::time::Duration,
        #[arg(long)]
        json: bool,
    },
    /// Test a published version: its image's [test] checks on a fresh instance launched from the
    /// version the requirement resolves to now (what a platform team schedules every night).
    #[command(
        after_help = "Examples:\n  bakery test teamcity-agent-windows@latest --target prod\n  bakery test teamcity-agent-windows@stable --target prod --on-fail revoke --junit out/test.xml\n\nExit codes: 0 passed, 1 failed to run, 2 invalid input (no [test], bad spec), 3 a test check failed, 130 interrupted."
    )]
    Test {
        /// image@requirement: a semver requirement (^1.4, =1.4.3), latest, or a channel.
        spec: String,
        #[arg(long, env = "BAKERY_TARGET")]
        target: Option<String>,
        /// Write the check results as JUnit XML to FILE.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Write <image>.test.json (outcome, version, AMI, timings, resources, checks, any
        /// revocation) and <image>.test.junit.xml into DIR.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// What to do when a test check fails: revoke the version (resolve, lock and child bakes
        /// refuse it from then on), with the failing checks as the reason.
        #[arg(long, value_enum)]
        on_fail: Option<OnFailArg>,
    },
    /// Every registered version of an image: AMIs per region, created, fingerprint, parent,
    /// channels, state.
    #[command(
        after_help = "Examples:\n  bakery versions teamcity-agent-windows --target prod\n  bakery versions sandbox-demo --region us-east-1 --json"
    )]
    Versions {
        image: String,
        #[arg(long)]
        region: Option<String>,
        #[arg(long, env = "BAKERY_TARGET")]
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The AMIs an image@requirement names now: the highest matching version that is not revoked.
    #[command(
        after_help = "Examples:\n  bakery resolve teamcity-agent-windows@^1.4\n  bakery resolve teamcity-agent-windows@stable --region eu-west-1\n  bakery resolve sandbox-demo@latest --json"
    )]
    Resolve {
        /// image@requirement: a semver requirement (^1.4, ~1.4.2, =1.4.3), latest, or a channel.
        spec: String,
        #[arg(long)]
        region: Option<String>,
        #[arg(long, env = "BAKERY_TARGET")]
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Point a channel at a version in every region of that version.
    #[command(after_help = "Examples:\n  bakery promote teamcity-agent-windows@1.4.3 stable")]
    Promote {
        /// image@version
        spec: String,
        channel: String,
        #[arg(long, env = "BAKERY_TARGET")]
        target: Option<String>,
    },
    /// Move a channel back to its previous version.
    #[command(after_help = "Examples:\n  bakery rollback teamcity-agent-windows stable")]
    Rollback {
        image: String,
        channel: String,
        #[arg(long, env = "BAKERY_TARGET")]
        target: Option<String>,
    },
    /// Each channel of an image with its history.
    #[command(after_help = "Examples:\n  bakery channels teamcity-agent-windows")]
    Channels {
        image: String,
        #[arg(long, env = "BAKERY_TARGET")]
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a version: resolve, lock and child bakes refuse it from now on.
    #[command(
        after_help = "Examples:\n  bakery revoke windows-2022-base@1.0.4 --descendants --reason \"CVE-2026-1234 in the base\""
    )]
    Revoke {
        /// image@version
        spec: String,
        /// Also revoke versions of images layered on it (recursively).
        #[arg(long)]
        descendants: bool,
        /// Why (quoted by every refusal).
        #[arg(long)]
        reason: String,
        #[arg(long, env = "BAKERY_TARGET")]
        target: Option<String>,
    },
    /// Deregister old versions (every region), keeping what is in use; says why each survivor stays.
    #[command(
        after_help = "Examples:\n  bakery prune teamcity-agent-windows --keep 5 --older-than 90d --dry-run"
    )]
    Prune {
        image: String,
        #[arg(long)]
        keep: usize,
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
        #[arg(long)]
        dry_run: bool,
        #[arg(long, env = "BAKERY_TARGET")]
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Bring the registry's mirror in every consumer account up to date (bakery.toml's
    /// `consumers`): share what they cannot launch yet, write what changed, remove what is gone.
    #[command(
        after_help = "Examples:\n  bakery sync --target prod                      # every image\n  bakery sync teamcity-agent-windows --target prod --json\n\nA no-op when every consumer is up to date. Exit 1 when a consumer could not be reached (the others are still brought up to date)."
    )]
    Sync {
        /// Images to sync (default: every image of the catalog).
        images: Vec<String>,
        #[arg(long, env = "BAKERY_TARGET")]
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Pin the images in bakery.lock.toml to exact versions and AMIs (--check: fail if a pin went stale).
    #[command(
        after_help = "Examples:\n  bakery lock\n  bakery lock --check   # in CI: exit 4 when a pinned version was revoked or deregistered"
    )]
    Lock {
        #[arg(long)]
        check: bool,
        #[arg(long, env = "BAKERY_TARGET")]
        target: Option<String>,
    },
    /// Newer matching versions of what bakery.lock.toml pins.
    #[command(after_help = "Examples:\n  bakery outdated")]
    Outdated {
        #[arg(long, env = "BAKERY_TARGET")]
        target: Option<String>,
    },
    /// Print the JSON Schema of a file format, for editors.
    #[command(
        after_help = "Examples:\n  bakery schema image > .schemas/image.json\n  bakery schema recipe\n  bakery schema target"
    )]
    Schema {
        #[arg(value_enum)]
        format: SchemaFormat,
    },
}

fn on_error_of(a: OnErrorArg) -> crate::bake::OnError {
    match a {
        OnErrorArg::Cleanup => crate::bake::OnError::Cleanup,
        OnErrorArg::Keep => crate::bake::OnError::Keep,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnErrorArg {
    Cleanup,
    Keep,
}

/// `bakery test --on-fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnFailArg {
    Revoke,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaFormat {
    /// images/<name>.toml
    Image,
    /// recipes/<name>/recipe.toml
    Recipe,
    /// bakery.toml
    Target,
}

/// How a command failed, which decides the exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad input: printed as located diagnostics, exit 2.
    Invalid(Diagnostics),
    /// Something failed at run time: exit 1.
    Failed(String),
    /// A message and a specific exit code.
    Exit(i32, String),
}

impl From<Diagnostic> for CliError {
    fn from(d: Diagnostic) -> Self {
        CliError::Invalid(Diagnostics(vec![d]))
    }
}

/// A plan against the registry: a catalog mistake the live inputs' values revealed is bad input
/// (exit 2), anything else a run-time failure (exit 1).
impl From<crate::registry::changes::PlanError> for CliError {
    fn from(e: crate::registry::changes::PlanError) -> Self {
        match e {
            crate::registry::changes::PlanError::Invalid(d) => CliError::Invalid(d),
            crate::registry::changes::PlanError::Cloud(e) => CliError::Failed(e.to_string()),
        }
    }
}

impl From<Diagnostics> for CliError {
    fn from(d: Diagnostics) -> Self {
        CliError::Invalid(d)
    }
}

impl CliError {
    /// A mistake on the command line (or in a file the user wrote that is not part of the
    /// catalog): exit 2, with a message that says what to do.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Exit(EXIT_INVALID, message.into())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Invalid(_) => EXIT_INVALID,
            CliError::Failed(_) => EXIT_FAILURE,
            CliError::Exit(code, _) => *code,
        }
    }
}

/// Runs a parsed command line. Output goes to stdout; diagnostics are the caller's to print.
pub fn run(cli: &Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Validate { paths, json } => validate::run(&cli.project, paths, *json),
        Command::Render {
            image,
            target,
            json,
        } => render::run(&cli.project, image, target.as_deref(), *json),
        Command::Plan {
            images,
            offline,
            exit_code,
            explain,
            target,
            json,
            levels,
        } => plan::run(
            &cli.project,
            images,
            plan::Mode {
                offline: *offline,
                explain: explain.as_deref(),
                target: target.as_deref(),
                json: *json,
                exit_code: *exit_code,
                levels: *levels,
            },
        ),
        Command::Bake {
            images,
            target,
            changed,
            all,
            jobs,
            on_error,
            lease,
            force_after,
            skip_test,
            manifest,
            junit,
            report,
            json,
        } if *changed || *all || images.len() != 1 => {
            if junit.is_some() {
                return Err(CliError::usage(
                    "--junit is for a single bake: name one image, or use --report DIR, which writes a report and JUnit file per image",
                ));
            }
            if images.is_empty() && !*changed && !*all {
                return Err(CliError::usage(
                    "name the image to bake (`bakery bake sandbox-demo --target T`), or use --changed or --all",
                ));
            }
            bake::run_many(
                &cli.project,
                &bake::ManyArgs {
                    images,
                    changed: *changed,
                    all: *all,
                    jobs: usize::from(*jobs),
                    target,
                    on_error: on_error_of(*on_error),
                    lease: *lease,
                    force_after: *force_after,
                    skip_test: *skip_test,
                    report: report.as_deref(),
                    manifest: manifest.as_deref(),
                    json: *json,
                    log_format: cli.log_format,
                    verbose: cli.verbose,
                },
            )
        }
        Command::Bake {
            images,
            target,
            on_error,
            lease,
            force_after,
            skip_test,
            manifest,
            junit,
            report,
            json,
            ..
        } => bake::run_bake(
            &cli.project,
            &bake::BakeArgs {
                image: &images[0],
                target,
                on_error: on_error_of(*on_error),
                lease: *lease,
                force_after: *force_after,
                skip_test: *skip_test,
                manifest: manifest.as_deref(),
                junit: junit.as_deref(),
                report: report.as_deref(),
                json: *json,
                log_format: cli.log_format,
                verbose: cli.verbose,
            },
        ),
        Command::Cleanup {
            bake_id,
            target,
            force,
        } => bake::run_cleanup(
            &cli.project,
            bake_id,
            target.as_deref(),
            *force,
            cli.log_format,
        ),
        Command::Gc {
            target,
            dry_run,
            older_than,
            json,
        } => gc::run(
            &cli.project,
            &gc::GcArgs {
                target: target.as_deref(),
                dry_run: *dry_run,
                older_than: *older_than,
                json: *json,
            },
        ),
        Command::Test {
            spec,
            target,
            junit,
            report,
            json,
            on_fail,
        } => bake::run_test(
            &cli.project,
            &bake::TestArgs {
                spec,
                target: target.as_deref(),
                junit: junit.as_deref(),
                report: report.as_deref(),
                json: *json,
                revoke_on_fail: on_fail.is_some(),
                log_format: cli.log_format,
                verbose: cli.verbose,
            },
        ),
        Command::Versions {
            image,
            region,
            target,
            json,
        } => registry::versions(
            &cli.project,
            image,
            region.as_deref(),
            target.as_deref(),
            *json,
        ),
        Command::Resolve {
            spec,
            region,
            target,
            json,
        } => registry::resolve(
            &cli.project,
            spec,
            region.as_deref(),
            target.as_deref(),
            *json,
        ),
        Command::Promote {
            spec,
            channel,
            target,
        } => registry::promote(&cli.project, spec, channel, target.as_deref()),
        Command::Rollback {
            image,
            channel,
            target,
        } => registry::rollback(&cli.project, image, channel, target.as_deref()),
        Command::Channels {
            image,
            target,
            json,
        } => registry::channels(&cli.project, image, target.as_deref(), *json),
        Command::Revoke {
            spec,
            descendants,
            reason,
            target,
        } => registry::revoke(&cli.project, spec, *descendants, reason, target.as_deref()),
        Command::Sync {
            images,
            target,
            json,
        } => registry::sync(&cli.project, images, target.as_deref(), *json),
        Command::Prune {
            image,
            keep,
            older_than,
            dry_run,
            target,
            json,
        } => registry::prune_cmd(
            &cli.project,
            image,
            *keep,
            older_than.as_deref(),
            *dry_run,
            target.as_deref(),
            *json,
        ),
        Command::Lock { check, target } => lock::lock(&cli.project, *check, target.as_deref()),
        Command::Outdated { target } => lock::outdated(&cli.project, target.as_deref()),
        Command::Schema { format } => {
            let schema = match format {
                SchemaFormat::Image => schemars::schema_for!(crate::catalog::raw::RawImage),
                SchemaFormat::Recipe => schemars::schema_for!(crate::catalog::raw::RawRecipe),
                SchemaFormat::Target => schemars::schema_for!(crate::catalog::raw::RawProject),
            };
            let s = serde_json::to_string_pretty(&schema)
                .map_err(|e| CliError::Failed(e.to_string()))?;
            crate::outln!("{s}");
            Ok(())
        }
    }
}

/// Loads the catalog, or the diagnostics as an invalid-input error.
fn load(project: &std::path::Path) -> Result<crate::catalog::Catalog, CliError> {
    if !project.is_dir() {
        return Err(CliError::usage(format!(
            "{} is not a directory: run bakery in a project (images/, recipes/, bakery.toml) or pass --project DIR",
            project.display()
        )));
    }
    tracing::debug!(project = %project.display(), "loading catalog");
    Ok(crate::catalog::Catalog::load(project)?)
}

fn target_for<'a>(
    catalog: &'a crate::catalog::Catalog,
    name: Option<&str>,
    offline: &'a crate::catalog::model::Target,
) -> Result<&'a crate::catalog::model::Target, CliError> {
    match name {
        Some(n) => Ok(catalog.target(n)?),
        None => Ok(offline),
    }
}

/// `bake --lease`: renewed every third of it, but at most once a second, so it must be longer
/// than a second to be renewed before it runs out.
fn lease_arg(s: &str) -> Result<std::time::Duration, String> {
    match crate::catalog::values::duration(s)? {
        d if d < std::time::Duration::from_secs(2) => {
            Err(format!("`{s}` is too short for a lease; at least 2s"))
        }
        d => Ok(d),
    }
}

/// A duration flag that may be zero (`0s`); clap reports a bad one with exit 2.
fn duration_or_zero_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::catalog::values::duration_or_zero(s)
}

fn print_json(v: &impl serde::Serialize) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CliError::Failed(e.to_string()))?;
    crate::outln!("{s}");
    Ok(())
}
