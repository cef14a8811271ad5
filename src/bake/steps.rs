//! Running planned steps and check probes on the build instance: Linux (bash) or Windows
//! (PowerShell), over SSH or SSM.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::RngExt as _;

use crate::catalog::model::Platform;
use crate::checks::report::CheckResult;
use crate::checks::{eval, probe};
use crate::cloud::cancel::Cancel;
use crate::events::{BakeEvent, Events};
use crate::plan::{PlannedAction, PlannedCheck, PlannedStep};
use crate::remote::powershell::{self, UpdatePass};

use super::scripts::{sh_sha_check, sha256_hex, windows_destination, Scripts};
use crate::remote::{sh_path, sh_quote, Conn, ExecError, ExecOutput, RemoteError};

/// A step that did not succeed.
#[derive(Debug)]
pub enum StepError {
    Remote(RemoteError),
    /// Non-zero exit: the code and the last lines of stderr (or stdout).
    Exit {
        code: i32,
        tail: String,
    },
    Timeout(Duration),
    Cancelled,
    /// The step cannot run here (wrong platform, too large for the communicator).
    Unsupported(String),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Remote(e) => write!(f, "{e}"),
            StepError::Exit { code, tail } if tail.is_empty() => write!(f, "exited with {code}"),
            StepError::Exit { code, tail } => write!(f, "exited with {code}:\n{tail}"),
            StepError::Timeout(d) => write!(f, "timed out after {}s", d.as_secs()),
            StepError::Cancelled => f.write_str("cancelled"),
            StepError::Unsupported(why) => f.write_str(why),
        }
    }
}

impl From<RemoteError> for StepError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::Cancelled => StepError::Cancelled,
            e => StepError::Remote(e),
        }
    }
}

impl From<ExecError> for StepError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Remote(r) => r.into(),
            ExecError::Timeout(d) => StepError::Timeout(d),
        }
    }
}

/// Lines of output quoted in a failing step's error.
const TAIL_LINES: usize = 20;

/// File bytes one SSM command carries inline (base64 adds a third). Larger files go in
/// several commands, each appending its part; past `SSM_INLINE_FILE_MAX` a file needs S3.
pub const SSM_INLINE_CHUNK: usize = 24 * 1024;
/// The largest file bakery sends inline over SSM.
pub const SSM_INLINE_FILE_MAX: usize = 512 * 1024;
/// `-EncodedCommand` lines longer than this do not fit Windows' 32,767-character command line.
const ENCODED_COMMAND_MAX: usize = 32_000;

fn tail(out: &ExecOutput) -> String {
    let src = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let lines: Vec<&str> = src.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// The build instance, with the bake's working directory.
pub struct Host<'a> {
    pub conn: &'a Conn,
    pub platform: Platform,
    pub workdir: &'a str,
    pub sudo: bool,
    pub events: &'a Events,
    pub bake_id: &'a str,
    pub cancel: &'a Cancel,
}

impl Host<'_> {
    fn windows(&self) -> bool {
        self.platform == Platform::Windows
    }

    pub fn scripts(&self) -> Scripts<'_> {
        Scripts {
            platform: self.platform,
            workdir: self.workdir,
            sudo: self.sudo,
        }
    }

    fn as_root(&self, cmd: &str) -> String {
        self.scripts().as_root(cmd)
    }

    /// Runs `cmd` (a shell command on Linux, a PowerShell script on Windows) with output
    /// streamed as events when `stream`, bounded by `timeout` and cancellation. The output is
    /// raw (Windows: with the wrapper's marks).
    async fn exec_raw(
        &self,
        cmd: &str,
        timeout: Duration,
        stream: bool,
    ) -> Result<ExecOutput, StepError> {
        let events = self.events.clone();
        let bake_id = self.bake_id.to_string();
        let windows = self.windows();
        let mut on_line = move |s, line: &str| {
            if !stream {
                return;
            }
            let line = if windows {
                let l = powershell::unwrap(line);
                if l.is_empty() && !line.is_empty() {
                    return;
                }
                l
            } else {
                line.to_string()
            };
            events.emit(BakeEvent::Output {
                bake_id: bake_id.clone(),
                stream: s,
                line,
            })
        };
        let owned;
        let command = if windows && !self.conn.is_ssm() {
            owned = powershell::encoded_command(cmd);
            if owned.len() > ENCODED_COMMAND_MAX {
                return Err(StepError::Unsupported(format!(
                    "the script is too long for powershell -EncodedCommand over SSH ({} characters); use the ssm communicator",
                    owned.len()
                )));
            }
            owned.as_str()
        } else {
            cmd
        };
        Ok(self
            .conn
            .exec(command, timeout, self.cancel, &mut on_line)
            .await?)
    }

    /// Windows output without the wrapper's noise.
    fn clean(&self, mut out: ExecOutput) -> ExecOutput {
        if self.windows() {
            out.stdout = powershell::unwrap(&out.stdout);
            out.stderr = powershell::unwrap(&out.stderr);
        }
        out
    }

    async fn exec(&self, cmd: &str, timeout: Duration) -> Result<ExecOutput, StepError> {
        Ok(self.clean(self.exec_raw(cmd, timeout, true).await?))
    }

    /// Exits non-zero -> error with the output's tail.
    async fn exec_ok(&self, cmd: &str, timeout: Duration) -> Result<ExecOutput, StepError> {
        let out = self.exec(cmd, timeout).await?;
        if out.exit_code != 0 {
            return Err(StepError::Exit {
                code: out.exit_code,
                tail: tail(&out),
            });
        }
        Ok(out)
    }

    fn ps(&self, env: &BTreeMap<String, String>, script: &str) -> String {
        self.scripts().ps(env, script)
    }

    /// Creates the working directory.
    pub async fn prepare(&self) -> Result<(), StepError> {
        self.exec_ok(&self.scripts().prepare(), Duration::from_secs(60))
            .await?;
        Ok(())
    }

    /// Removes the working directory (before capture, so it is not in the image).
    pub async fn remove_workdir(&self) -> Result<(), StepError> {
        self.exec_ok(&self.scripts().remove_workdir(), Duration::from_secs(120))
            .await?;
        Ok(())
    }

    fn prelude(&self, env: &BTreeMap<String, String>) -> String {
        self.scripts().prelude(env)
    }

    /// Over SSM with a bucket, a file larger than one inline chunk goes through S3: the command
    /// that fetches it (after putting it under the bake's prefix), or `None` to inline it.
    async fn via_s3(&self, path: &str, bytes: &[u8]) -> Result<Option<String>, StepError> {
        let Conn::Ssm(ssm) = self.conn else {
            return Ok(None);
        };
        let Some((bucket, prefix)) = &ssm.s3 else {
            return Ok(None);
        };
        if bytes.len() <= SSM_INLINE_CHUNK {
            return Ok(None);
        }
        let sha = sha256_hex(bytes);
        let key = format!("{prefix}/files/{sha}");
        ssm.aws
            .put_object(bucket, &key, bytes)
            .await
            .map_err(|e| RemoteError::Ssm {
                op: "PutObject",
                message: e.to_string(),
            })?;
        Ok(Some(self.scripts().s3_fetch(
            bucket,
            &key,
            ssm.aws.region.as_str(),
            path,
            &sha,
        )))
    }

    /// Writes files (absolute path, bytes) on a Linux instance: SFTP over SSH, inline base64
    /// over SSM (each file's sha256 checked on the instance).
    async fn write_files(&self, files: &[(String, &[u8])]) -> Result<(), StepError> {
        if let Conn::Ssh(ssh) = self.conn {
            ssh.upload_all(files).await?;
            return Ok(());
        }
        for (path, bytes) in files {
            if let Some(cmd) = self.via_s3(path, bytes).await? {
                self.exec_ok(&cmd, Duration::from_secs(600)).await?;
                continue;
            }
            if bytes.len() > SSM_INLINE_FILE_MAX {
                return Err(StepError::Unsupported(format!(
                    "{path} is {} bytes: over SSM, files over {SSM_INLINE_FILE_MAX} bytes go through S3 (set s3_bucket in the target)",
                    bytes.len()
                )));
            }
            let sha = sha256_hex(bytes);
            let p = sh_quote(path);
            let chunks: Vec<&[u8]> = if bytes.is_empty() {
                vec![&[][..]]
            } else {
                bytes.chunks(SSM_INLINE_CHUNK).collect()
            };
            let last = chunks.len() - 1;
            for (i, c) in chunks.iter().enumerate() {
                let b64 = base64::engine::general_purpose::STANDARD.encode(c);
                let mut cmd = format!("set -e\nmkdir -p \"$(dirname {p})\"\n");
                cmd.push_str(&format!(
                    "printf '%s' '{b64}' | base64 -d {} {p}\n",
                    if i == 0 { ">" } else { ">>" }
                ));
                if i == last {
                    cmd.push_str(&sh_sha_check(&p, &sha));
                }
                self.exec_ok(&cmd, Duration::from_secs(300)).await?;
            }
        }
        Ok(())
    }

    /// Uploads `script` (with the prelude) and runs it under `bash -euo pipefail`.
    async fn run_script(
        &self,
        n: usize,
        script: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<ExecOutput, StepError> {
        let path = format!("{}/.bakery/step-{n}.sh", self.workdir);
        let body = format!("{}{script}", self.prelude(env));
        self.write_files(&[(path.clone(), body.as_bytes())]).await?;
        self.exec_ok(
            &self.as_root(&format!("bash -euo pipefail {}", sh_quote(&path))),
            timeout,
        )
        .await
    }

    /// Runs one planned step (the `n`th of the bake). Restarts and Windows Update are run by
    /// the runner (they reconnect).
    pub async fn step(&self, n: usize, s: &PlannedStep) -> Result<(), StepError> {
        if self.windows() {
            if matches!(
                s.action,
                PlannedAction::Restart { .. } | PlannedAction::WindowsUpdate { .. }
            ) {
                return Err(StepError::Unsupported(
                    "restart and windows_update steps are run by the runner".into(),
                ));
            }
            if let PlannedAction::Upload {
                destination,
                is_dir,
                files,
                ..
            } = &s.action
            {
                for f in files {
                    let path = windows_destination(destination, *is_dir, &f.rel);
                    let cmd = match self.via_s3(&path, &f.bytes).await? {
                        Some(c) => c,
                        None => self.ps(
                            &s.env,
                            &powershell::write_file(&path, &f.bytes, &sha256_hex(&f.bytes)),
                        ),
                    };
                    self.exec_ok(&cmd, s.timeout).await?;
                }
                return Ok(());
            }
            for c in self.scripts().windows_step(s)? {
                self.exec_ok(&c, s.timeout).await?;
            }
            return Ok(());
        }
        match &s.action {
            PlannedAction::Shell { script } => {
                // The secrets it uses are fetched first, each failing the step on its own.
                let script = format!("{}{script}", s.secrets);
                self.run_script(n, &script, &s.env, s.timeout).await?;
            }
            PlannedAction::PowerShell { .. } | PlannedAction::WindowsUpdate { .. } => {
                return Err(StepError::Unsupported(
                    "PowerShell steps need a Windows build instance".into(),
                ))
            }
            PlannedAction::Upload {
                destination,
                is_dir,
                mode,
                files,
                ..
            } => {
                let stage = format!("{}/.bakery/upload-{n}", self.workdir);
                let uploads: Vec<(String, &[u8])> = files
                    .iter()
                    .map(|f| {
                        let p = if f.rel.is_empty() {
                            format!("{stage}/file")
                        } else {
                            format!("{stage}/{}", f.rel)
                        };
                        (p, f.bytes.as_slice())
                    })
                    .collect();
                self.write_files(&uploads).await?;
                let dest = sh_path(destination);
                let mut script = if *is_dir {
                    format!("mkdir -p {dest}\ncp -R {}/. {dest}/\n", sh_quote(&stage))
                } else {
                    format!(
                        "mkdir -p \"$(dirname {dest})\"\ncp {} {dest}\n",
                        sh_quote(&format!("{stage}/file"))
                    )
                };
                if let Some(m) = mode {
                    if *is_dir {
                        script.push_str(&format!("find {dest} -type f -exec chmod {m:o} {{}} +\n"));
                    } else {
                        script.push_str(&format!("chmod {m:o} {dest}\n"));
                    }
                }
                self.run_script(n, &script, &s.env, s.timeout).await?;
            }
            PlannedAction::Download {
                url,
                sha256,
                destination,
            } => {
                let dest = sh_path(destination);
                let script = format!(
                    "mkdir -p \"$(dirname {dest})\"\ncurl -fsSL --retry 3 --retry-delay 2 -o {dest} {}\nprintf '%s  %s\\n' {} {dest} | sha256sum -c -\n",
                    sh_quote(url),
                    sh_quote(sha256),
                );
                self.run_script(n, &script, &s.env, s.timeout).await?;
            }
            PlannedAction::Restart { .. } => {
                return Err(StepError::Unsupported(
                    "restart steps are run by the runner".into(),
                ));
            }
        }
        Ok(())
    }

    /// One Windows Update pass (installs, then reports what and whether a reboot is pending).
    pub async fn update_pass(
        &self,
        categories: &[String],
        exclude_kbs: &[String],
        timeout: Duration,
    ) -> Result<UpdatePass, StepError> {
        let out = self
            .exec_ok(
                &self.ps(
                    &BTreeMap::new(),
                    &powershell::windows_update_pass(categories, exclude_kbs),
                ),
                timeout,
            )
            .await?;
        UpdatePass::parse(&out.stdout).ok_or_else(|| StepError::Exit {
            code: out.exit_code,
            tail: "the Windows Update pass printed no result (no reboot_pending line)".into(),
        })
    }

    /// The instance's boot id (changes on every boot).
    pub async fn boot_id(&self) -> Result<String, StepError> {
        let out = self
            .exec_ok(&self.scripts().boot_id(), Duration::from_secs(60))
            .await?;
        Ok(out.stdout.trim().to_string())
    }

    /// What the readiness probe printed (see `Scripts::readiness`), without streaming it.
    pub async fn readiness(&self) -> Result<String, StepError> {
        let out = self
            .exec_raw(&self.scripts().readiness(), Duration::from_secs(60), false)
            .await?;
        Ok(self.clean(out).stdout)
    }

    /// Asks the instance to reboot a moment after this command returns.
    pub async fn request_reboot(&self) -> Result<(), StepError> {
        self.exec_ok(&self.scripts().request_reboot(), Duration::from_secs(60))
            .await?;
        Ok(())
    }

    /// Every check of `checks`, in order: their probes go as one command (split into a few if
    /// the script would be long), each bounded by `per_probe`, and each output is evaluated on
    /// its own. A probe the batch gave no output for (the batch failed, or its output was cut
    /// short) and a Windows command check that could end the batch run as commands of their own.
    pub async fn check_all(
        &self,
        checks: &[PlannedCheck],
        per_probe: Duration,
    ) -> Vec<CheckResult> {
        let started = Instant::now();
        let mut found: Vec<Option<CheckResult>> = vec![None; checks.len()];
        let scripts = self.scripts();
        let mark = format!("bakery-probe-{:016x}", rand::rng().random::<u64>());
        let secs = per_probe.as_secs().max(1);
        // Checks that must run alone stay `None` here and go through `check` below, as does a
        // probe whose part of a batch is missing (the batch died before or during it): run alone,
        // it reports its own output.
        for cmd in scripts.probe_commands(checks, &mark, secs) {
            if !cmd.batch || self.cancel.is_cancelled() {
                continue;
            }
            let n = cmd.checks.len();
            let t = Instant::now();
            let parts = match self
                .exec_raw(&cmd.script, per_probe * n as u32, false)
                .await
            {
                // A Windows batch that never started has nothing to evaluate for any of its
                // probes (run alone, they would not start either).
                Ok(out) if self.windows() && !powershell::ran(&out.stdout) => {
                    for &i in &cmd.checks {
                        found[i] = Some(judged(&checks[i], not_run(), t.elapsed() / n as u32));
                    }
                    continue;
                }
                Ok(out) => probe::split_batch(&self.clean(out).stdout, &mark, n),
                Err(_) => vec![None; n],
            };
            let share = t.elapsed() / n as u32;
            for (&i, part) in cmd.checks.iter().zip(parts) {
                let Some(part) = part else { continue };
                let c = &checks[i];
                let outcome = if !self.windows() && part.exit_code == 124 {
                    eval::Outcome {
                        passed: false,
                        detail: format!("the probe timed out after {secs}s"),
                    }
                } else {
                    eval::evaluate(&c.check.kind, part.exit_code, &part.stdout)
                };
                let took = part.seconds.map_or(share, Duration::from_secs_f64);
                found[i] = Some(judged(c, outcome, took));
            }
        }
        let mut results = Vec::with_capacity(checks.len());
        for (c, r) in checks.iter().zip(found) {
            results.push(match r {
                Some(r) => r,
                None if self.cancel.is_cancelled() => {
                    let cancelled = eval::Outcome {
                        passed: false,
                        detail: "cancelled".into(),
                    };
                    judged(c, cancelled, started.elapsed())
                }
                None => self.check(c, per_probe).await,
            });
        }
        results
    }

    /// One check as a command of its own.
    pub async fn check(&self, c: &PlannedCheck, timeout: Duration) -> CheckResult {
        let started = Instant::now();
        let cmd = self.scripts().probe(c);
        let outcome = match self.exec_raw(&cmd, timeout, false).await {
            // A Windows probe that never started (the wrapper's mark is missing) has nothing to
            // evaluate, whatever its exit code says.
            Ok(out) if self.windows() && !powershell::ran(&out.stdout) => not_run(),
            Ok(out) => {
                let out = self.clean(out);
                eval::evaluate(&c.check.kind, out.exit_code, &out.stdout)
            }
            Err(e) => eval::Outcome {
                passed: false,
                detail: format!("probe failed: {e}"),
            },
        };
        judged(c, outcome, started.elapsed())
    }
}

/// A check's result: its outcome, and how long its probe took.
fn judged(c: &PlannedCheck, outcome: eval::Outcome, duration: Duration) -> CheckResult {
    CheckResult {
        name: c.check.name.clone(),
        origin: c.origin.clone(),
        kind: c.check.kind.key().to_string(),
        passed: outcome.passed,
        detail: outcome.detail,
        duration,
    }
}

/// The outcome of a Windows probe that never started (the wrapper's mark is missing): nothing
/// to evaluate, whatever its exit code says.
fn not_run() -> eval::Outcome {
    eval::Outcome {
        passed: false,
        detail: "no output to evaluate (the probe did not run)".into(),
    }
}
