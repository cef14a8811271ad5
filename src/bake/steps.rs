//! Running planned steps and check probes on the build instance: Linux (bash) or Windows
//! (PowerShell), over SSH or SSM.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::catalog::model::Platform;
use crate::checks::report::CheckResult;
use crate::checks::{eval, probe};
use crate::cloud::cancel::Cancel;
use crate::events::{BakeEvent, Events};
use crate::plan::{PlannedAction, PlannedCheck, PlannedStep};
use crate::remote::powershell::{self, ps_path, ps_quote, UpdatePass};
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

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The shell line that fails unless the file at `quoted_path` has the sha256 `sha` (hex).
fn sh_sha_check(quoted_path: &str, sha: &str) -> String {
    format!("printf '%s  %s\\n' '{sha}' {quoted_path} | sha256sum -c - >/dev/null\n")
}

/// The commands bakery sends for a platform and working directory, without a connection (what
/// `Host` runs, and what the golden tests pin).
pub struct Scripts<'a> {
    pub platform: Platform,
    pub workdir: &'a str,
    pub sudo: bool,
}

impl Scripts<'_> {
    fn windows(&self) -> bool {
        self.platform == Platform::Windows
    }

    fn as_root(&self, cmd: &str) -> String {
        if self.sudo && !self.windows() {
            format!("sudo -n {cmd}")
        } else {
            cmd.to_string()
        }
    }

    /// A PowerShell script wrapped with the step's variables (see `powershell::wrap`).
    pub fn ps(&self, env: &BTreeMap<String, String>, script: &str) -> String {
        powershell::wrap(self.workdir, env, script)
    }

    /// Creates the working directory (private to the build user on Linux).
    pub fn prepare(&self) -> String {
        if self.windows() {
            format!(
                "$ErrorActionPreference = 'Stop'\nNew-Item -ItemType Directory -Force -Path {} | Out-Null\n",
                ps_quote(&format!("{}\\.bakery", self.workdir))
            )
        } else {
            let w = sh_quote(self.workdir);
            format!("mkdir -p -m 700 {w} {w}/.bakery")
        }
    }

    /// Removes the working directory.
    pub fn remove_workdir(&self) -> String {
        if self.windows() {
            format!(
                "Remove-Item -Recurse -Force -LiteralPath {} -ErrorAction SilentlyContinue\nexit 0\n",
                ps_quote(self.workdir)
            )
        } else {
            self.as_root(&format!("rm -rf {}", sh_quote(self.workdir)))
        }
    }

    /// Prints the boot id (changes on every boot).
    pub fn boot_id(&self) -> String {
        if self.windows() {
            powershell::BOOT_ID.to_string()
        } else {
            "cat /proc/sys/kernel/random/boot_id".to_string()
        }
    }

    /// Reboots a moment after the command returned.
    pub fn request_reboot(&self) -> String {
        if self.windows() {
            powershell::REQUEST_REBOOT.to_string()
        } else {
            format!(
                "nohup sh -c 'sleep 2; {}' >/dev/null 2>&1 &",
                self.as_root("systemctl reboot || reboot").replace('\'', "")
            )
        }
    }

    /// The prelude every Linux script and probe starts with: the workdir and the variables.
    fn prelude(&self, env: &BTreeMap<String, String>) -> String {
        let mut s = format!("export BAKERY_WORKDIR={}\n", sh_quote(self.workdir));
        for (k, v) in env {
            s.push_str(&format!("export {k}={}\n", sh_quote(v)));
        }
        s.push_str("cd \"$BAKERY_WORKDIR\"\n");
        s
    }

    /// The command that runs one check's probe.
    pub fn probe(&self, c: &PlannedCheck) -> String {
        if self.windows() {
            self.ps(&BTreeMap::new(), &probe::windows(&c.check.kind))
        } else {
            let script = format!(
                "{}{}\n",
                self.prelude(&BTreeMap::new()),
                probe::linux(&c.check.kind)
            );
            self.as_root(&format!("bash -c {}", sh_quote(&script)))
        }
    }

    /// Fetches `s3://bucket/key` to `path` with the instance's role, then checks its sha256.
    pub fn s3_fetch(
        &self,
        bucket: &str,
        key: &str,
        region: &str,
        path: &str,
        sha256: &str,
    ) -> String {
        if self.windows() {
            self.ps(
                &BTreeMap::new(),
                &format!(
                    "$p = {path}\n\
New-Item -ItemType Directory -Force -Path (Split-Path -Parent $p) | Out-Null\n\
Read-S3Object -BucketName {b} -Key {k} -Region {r} -File $p | Out-Null\n\
$h = (Get-FileHash -Algorithm SHA256 -LiteralPath $p).Hash.ToLower()\n\
if ($h -ne '{sha256}') {{ throw \"sha256 of $p is $h, expected {sha256}\" }}\n",
                    path = ps_path(path),
                    b = ps_quote(bucket),
                    k = ps_quote(key),
                    r = ps_quote(region),
                ),
            )
        } else {
            let p = sh_quote(path);
            format!(
                "set -e\nmkdir -p \"$(dirname {p})\"\naws s3 cp --only-show-errors --region {} {} {p}\n{}",
                sh_quote(region),
                sh_quote(&format!("s3://{bucket}/{key}")),
                sh_sha_check(&p, sha256),
            )
        }
    }

    /// On Windows: the scripts one step sends, in order (restarts and Windows Update passes are
    /// the runner's).
    pub fn windows_step(&self, s: &PlannedStep) -> Result<Vec<String>, StepError> {
        Ok(match &s.action {
            PlannedAction::PowerShell { script } => vec![self.ps(&s.env, script)],
            PlannedAction::Upload {
                destination,
                is_dir,
                files,
                ..
            } => files
                .iter()
                .map(|f| {
                    let path = windows_destination(destination, *is_dir, &f.rel);
                    // NTFS has no mode bits: `mode` is for Linux.
                    self.ps(&s.env, &powershell::write_file(&path, &f.bytes, &sha256_hex(&f.bytes)))
                })
                .collect(),
            PlannedAction::Download {
                url,
                sha256,
                destination,
            } => vec![self.ps(
                &s.env,
                &format!(
                    "$p = {dest}\n\
New-Item -ItemType Directory -Force -Path (Split-Path -Parent $p) | Out-Null\n\
Invoke-WebRequest -UseBasicParsing -Uri {url} -OutFile $p\n\
$h = (Get-FileHash -Algorithm SHA256 -LiteralPath $p).Hash.ToLower()\n\
if ($h -ne {sha}) {{ Remove-Item -Force -LiteralPath $p; throw \"sha256 of $p is $h, expected {raw}\" }}\n",
                    dest = ps_path(destination),
                    url = ps_quote(url),
                    sha = ps_quote(&sha256.to_lowercase()),
                    raw = sha256.to_lowercase(),
                ),
            )],
            PlannedAction::WindowsUpdate { categories, .. } => vec![self.ps(
                &BTreeMap::new(),
                &powershell::windows_update_pass(categories),
            )],
            PlannedAction::Restart { .. } => vec![self.boot_id(), self.request_reboot()],
            PlannedAction::Shell { .. } => {
                return Err(StepError::Unsupported(
                    "shell steps need a Linux build instance".into(),
                ))
            }
        })
    }
}

/// Where a Windows upload's file goes: the destination, or below it for a directory.
fn windows_destination(destination: &str, is_dir: bool, rel: &str) -> String {
    if is_dir && !rel.is_empty() {
        format!("{destination}\\{}", rel.replace('/', "\\"))
    } else {
        destination.to_string()
    }
}

/// Every script a Windows bake of `plan` sends, labelled, in the order it sends them when all
/// goes well: prepare, the steps (a restart as its boot id and reboot commands), the probes,
/// removing the working directory, the finalize steps (in the system temp directory).
pub fn windows_script_book(plan: &crate::plan::Plan, workdir: &str) -> Vec<(String, String)> {
    let sc = Scripts {
        platform: Platform::Windows,
        workdir,
        sudo: false,
    };
    let mut book = vec![("prepare".to_string(), sc.prepare())];
    let label = |s: &PlannedStep| format!("step {} / {}", s.recipe, s.name);
    for s in &plan.steps {
        match sc.windows_step(s) {
            Ok(v) => book.extend(v.into_iter().map(|c| (label(s), c))),
            Err(e) => book.push((label(s), format!("# {e}"))),
        }
    }
    for c in &plan.checks {
        book.push((format!("check {}", c.check.name), sc.probe(c)));
    }
    book.push(("remove the working directory".into(), sc.remove_workdir()));
    let temp = Scripts {
        workdir: "C:\\Windows\\Temp",
        ..sc
    };
    for s in &plan.finalize {
        match temp.windows_step(s) {
            Ok(v) => book.extend(v.into_iter().map(|c| (format!("finalize {}", label(s)), c))),
            Err(e) => book.push((label(s), format!("# {e}"))),
        }
    }
    // The test phase, on a fresh instance: probes in the system's temporary directory.
    for c in plan.test.iter().flat_map(|t| &t.checks) {
        book.push((format!("test check {}", c.check.name), temp.probe(c)));
    }
    book
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
                self.run_script(n, script, &s.env, s.timeout).await?;
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
        timeout: Duration,
    ) -> Result<UpdatePass, StepError> {
        let out = self
            .exec_ok(
                &self.ps(
                    &BTreeMap::new(),
                    &powershell::windows_update_pass(categories),
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

    /// Asks the instance to reboot a moment after this command returns.
    pub async fn request_reboot(&self) -> Result<(), StepError> {
        self.exec_ok(&self.scripts().request_reboot(), Duration::from_secs(60))
            .await?;
        Ok(())
    }

    /// Runs one check's probe and evaluates it.
    pub async fn check(&self, c: &PlannedCheck, timeout: Duration) -> CheckResult {
        let started = Instant::now();
        let cmd = self.scripts().probe(c);
        let outcome = match self.exec_raw(&cmd, timeout, false).await {
            // A Windows probe that never started (the wrapper's mark is missing) has nothing to
            // evaluate, whatever its exit code says.
            Ok(out) if self.windows() && !powershell::ran(&out.stdout) => eval::Outcome {
                passed: false,
                detail: "no output to evaluate (the probe did not run)".into(),
            },
            Ok(out) => {
                let out = self.clean(out);
                eval::evaluate(&c.check.kind, out.exit_code, &out.stdout)
            }
            Err(e) => eval::Outcome {
                passed: false,
                detail: format!("probe failed: {e}"),
            },
        };
        CheckResult {
            name: c.check.name.clone(),
            origin: c.origin.clone(),
            kind: c.check.kind.key().to_string(),
            passed: outcome.passed,
            detail: outcome.detail,
            duration: started.elapsed(),
        }
    }
}
