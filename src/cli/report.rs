//! `bake --report DIR`: per bake, `<image>.json` (outcome, timings per phase, fingerprint
//! inputs, resources created and removed, check results) and `<image>.junit.xml`; for the run,
//! `summary.json` (every bake's outcome and what the run cost in AWS requests per region).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use super::CliError;
use crate::bake::{Artifact, BakeError, TestRun};
use crate::checks::report::{self, CheckResult};
use crate::events::BakeEvent;
use crate::plan::FingerprintInput;

/// What the events of one bake said that its result does not carry.
#[derive(Debug, Default, Clone)]
struct Trail {
    created: Vec<String>,
    removed: Vec<String>,
    warnings: Vec<String>,
}

/// Collects events per bake id (fed from the event sink).
#[derive(Debug, Default)]
pub struct Recorder {
    trails: Mutex<BTreeMap<String, Trail>>,
}

/// The JSON report of one bake.
#[derive(Debug, Serialize)]
pub struct BakeReport<'a> {
    pub bake_id: &'a str,
    pub image: &'a str,
    /// `baked`, `failed`, `checks_failed` or `cancelled`.
    pub outcome: &'static str,
    pub version: Option<&'a str>,
    pub fingerprint: Option<&'a str>,
    pub source_ami: Option<&'a str>,
    pub parent: Option<&'a str>,
    pub amis: BTreeMap<String, String>,
    pub seconds: f64,
    pub phase_seconds: &'a BTreeMap<String, f64>,
    pub fingerprint_inputs: &'a [FingerprintInput],
    /// Why it was baked (the plan's reasons: `new`, `changed <file>`, `source a -> b`,
    /// `parent 1.0.3 -> 1.0.4`).
    pub reasons: &'a [String],
    /// The cost estimate and the price table it used (none when nothing was launched).
    pub cost: Option<&'a crate::cost::Cost>,
    pub resources: Resources,
    pub checks: &'a [CheckResult],
    /// Windows updates installed (`KB5034439 <title>`).
    pub updates: &'a [String],
    /// Seconds from RunInstances to the test instance's finished first boot.
    pub boot_seconds: Option<f64>,
    pub warnings: Vec<String>,
    /// The failed phase and cause.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Resources {
    pub created: Vec<String>,
    pub removed: Vec<String>,
    pub left_behind: Vec<String>,
}

impl Recorder {
    pub fn record(&self, e: &BakeEvent) {
        let Ok(mut t) = self.trails.lock() else {
            return;
        };
        match e {
            BakeEvent::Created { bake_id, resource } => t
                .entry(bake_id.clone())
                .or_default()
                .created
                .push(resource.clone()),
            BakeEvent::Removed { bake_id, resource } => t
                .entry(bake_id.clone())
                .or_default()
                .removed
                .push(resource.clone()),
            BakeEvent::Warning { bake_id, message } => t
                .entry(bake_id.clone())
                .or_default()
                .warnings
                .push(message.clone()),
            _ => {}
        }
    }

    fn trail(&self, bake_id: &str) -> Trail {
        self.trails
            .lock()
            .ok()
            .and_then(|t| t.get(bake_id).cloned())
            .unwrap_or_default()
    }

    /// Writes `<image>.json` and `<image>.junit.xml` for one bake into `dir`.
    pub fn write(
        &self,
        dir: &Path,
        result: &Result<Artifact, BakeError>,
        seconds: f64,
    ) -> Result<PathBuf, CliError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))?;
        let (report, image, checks) = match result {
            Ok(a) => {
                let t = self.trail(&a.bake_id);
                (
                    BakeReport {
                        bake_id: &a.bake_id,
                        image: &a.image,
                        outcome: "baked",
                        version: Some(&a.version),
                        fingerprint: Some(&a.fingerprint),
                        source_ami: Some(&a.source_ami),
                        parent: a.parent.as_deref(),
                        amis: a.amis.clone(),
                        seconds,
                        phase_seconds: &a.timings,
                        fingerprint_inputs: &a.inputs,
                        reasons: &a.reasons,
                        cost: Some(&a.cost),
                        resources: Resources {
                            created: t.created,
                            removed: t.removed,
                            left_behind: Vec::new(),
                        },
                        checks: &a.checks,
                        updates: &a.updates,
                        boot_seconds: a.boot_seconds,
                        warnings: t.warnings,
                        error: None,
                    },
                    &a.image,
                    &a.checks,
                )
            }
            Err(e) => {
                let t = self.trail(&e.bake_id);
                (
                    BakeReport {
                        bake_id: &e.bake_id,
                        image: &e.image,
                        outcome: e.kind.outcome(),
                        version: None,
                        fingerprint: None,
                        source_ami: None,
                        parent: None,
                        amis: BTreeMap::new(),
                        seconds,
                        phase_seconds: &e.timings,
                        fingerprint_inputs: &e.inputs,
                        reasons: &e.reasons,
                        cost: e.cost.as_ref(),
                        resources: Resources {
                            created: t.created,
                            removed: t.removed,
                            left_behind: e.left_behind.iter().map(|u| u.to_string()).collect(),
                        },
                        checks: &e.checks,
                        updates: &[],
                        boot_seconds: None,
                        warnings: t.warnings,
                        error: Some(format!("{}: {}", e.phase, e.cause)),
                    },
                    &e.image,
                    &e.checks,
                )
            }
        };
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::Failed(format!("report: {e}")))?;
        let path = dir.join(format!("{image}.json"));
        write(&path, &json)?;
        write(
            &dir.join(format!("{image}.junit.xml")),
            &report::junit(image, checks),
        )?;
        Ok(path)
    }
}

/// Which version `bakery test` tested, for its report.
pub struct TestedVersion<'a> {
    pub image: &'a str,
    pub version: &'a str,
    pub ami: &'a str,
    /// The revocation reason, when `--on-fail revoke` revoked the version.
    pub revoked: Option<&'a str>,
}

/// The JSON report of one `bakery test`.
#[derive(Debug, Serialize)]
struct TestReport<'a> {
    bake_id: &'a str,
    image: &'a str,
    version: &'a str,
    ami: &'a str,
    /// `passed`, `checks_failed`, `failed` or `cancelled`.
    outcome: &'static str,
    seconds: f64,
    phase_seconds: &'a BTreeMap<String, f64>,
    resources: Resources,
    checks: &'a [CheckResult],
    warnings: Vec<String>,
    error: Option<String>,
    revoked: Option<&'a str>,
    /// Seconds from RunInstances to the fresh instance's finished first boot.
    boot_seconds: Option<f64>,
}

impl Recorder {
    /// Writes `<image>.test.json` and `<image>.test.junit.xml` for one `bakery test` into `dir`.
    pub fn write_test(
        &self,
        dir: &Path,
        v: &TestedVersion,
        result: &Result<TestRun, BakeError>,
        seconds: f64,
    ) -> Result<PathBuf, CliError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))?;
        let (bake_id, outcome, timings, checks, left_behind, error) = match result {
            Ok(t) => (
                &t.bake_id,
                "passed",
                &t.timings,
                &t.checks,
                Vec::new(),
                None,
            ),
            Err(e) => (
                &e.bake_id,
                e.kind.outcome(),
                &e.timings,
                &e.checks,
                e.left_behind.iter().map(|u| u.to_string()).collect(),
                Some(format!("{}: {}", e.phase, e.cause)),
            ),
        };
        let t = self.trail(bake_id);
        let report = TestReport {
            bake_id,
            image: v.image,
            version: v.version,
            ami: v.ami,
            outcome,
            seconds,
            phase_seconds: timings,
            resources: Resources {
                created: t.created,
                removed: t.removed,
                left_behind,
            },
            checks,
            warnings: t.warnings,
            error,
            revoked: v.revoked,
            boot_seconds: result.as_ref().ok().and_then(|t| t.boot_seconds),
        };
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::Failed(format!("report: {e}")))?;
        let path = dir.join(format!("{}.test.json", v.image));
        write(&path, &json)?;
        write(
            &dir.join(format!("{}.test.junit.xml", v.image)),
            &report::junit(v.image, checks),
        )?;
        Ok(path)
    }
}

pub fn write(path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))
}
