//! Running planned steps and check probes on a Linux build instance over SSH.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::checks::report::CheckResult;
use crate::checks::{eval, probe};
use crate::cloud::cancel::Cancel;
use crate::events::{BakeEvent, Events};
use crate::plan::{PlannedAction, PlannedCheck, PlannedStep};
use crate::remote::ssh::Ssh;
use crate::remote::{sh_path, sh_quote, ExecOutput, RemoteError};

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
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Remote(e) => write!(f, "{e}"),
            StepError::Exit { code, tail } if tail.is_empty() => write!(f, "exited with {code}"),
            StepError::Exit { code, tail } => write!(f, "exited with {code}:\n{tail}"),
            StepError::Timeout(d) => write!(f, "timed out after {}s", d.as_secs()),
            StepError::Cancelled => f.write_str("cancelled"),
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

/// Lines of output quoted in a failing step's error.
const TAIL_LINES: usize = 20;

fn tail(out: &ExecOutput) -> String {
    let src = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let lines: Vec<&str> = src.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// A Linux build instance reached over SSH, with the bake's working directory.
pub struct Linux<'a> {
    pub ssh: &'a Ssh,
    pub workdir: &'a str,
    pub sudo: bool,
    pub events: &'a Events,
    pub bake_id: &'a str,
    pub cancel: &'a Cancel,
}

impl Linux<'_> {
    fn as_root(&self, cmd: &str) -> String {
        if self.sudo {
            format!("sudo -n {cmd}")
        } else {
            cmd.to_string()
        }
    }

    /// Runs `cmd` with output streamed as events, bounded by `timeout` and cancellation.
    async fn exec(&self, cmd: &str, timeout: Duration) -> Result<ExecOutput, StepError> {
        self.exec_with(cmd, timeout, true).await
    }

    /// `stream`: emit each output line as an event (probes keep their output to themselves).
    async fn exec_with(
        &self,
        cmd: &str,
        timeout: Duration,
        stream: bool,
    ) -> Result<ExecOutput, StepError> {
        let events = self.events.clone();
        let bake_id = self.bake_id.to_string();
        let mut on_line = move |s, line: &str| {
            if stream {
                events.emit(BakeEvent::Output {
                    bake_id: bake_id.clone(),
                    stream: s,
                    line: line.to_string(),
                })
            }
        };
        tokio::select! {
            r = tokio::time::timeout(timeout, self.ssh.exec(cmd, &mut on_line)) => match r {
                Ok(r) => Ok(r?),
                Err(_) => Err(StepError::Timeout(timeout)),
            },
            () = self.cancel.cancelled() => Err(StepError::Cancelled),
        }
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

    /// Creates the working directory (private to the build user).
    pub async fn prepare(&self) -> Result<(), StepError> {
        let w = sh_quote(self.workdir);
        self.exec_ok(
            &format!("mkdir -p -m 700 {w} {w}/.bakery"),
            Duration::from_secs(60),
        )
        .await?;
        Ok(())
    }

    /// Removes the working directory (before capture, so it is not in the image).
    pub async fn remove_workdir(&self) -> Result<(), StepError> {
        let cmd = self.as_root(&format!("rm -rf {}", sh_quote(self.workdir)));
        self.exec_ok(&cmd, Duration::from_secs(120)).await?;
        Ok(())
    }

    /// The prelude every script and probe starts with: the workdir and the step's variables.
    fn prelude(&self, env: &BTreeMap<String, String>) -> String {
        let mut s = format!("export BAKERY_WORKDIR={}\n", sh_quote(self.workdir));
        for (k, v) in env {
            s.push_str(&format!("export {k}={}\n", sh_quote(v)));
        }
        s.push_str("cd \"$BAKERY_WORKDIR\"\n");
        s
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
        self.ssh.upload(&path, body.as_bytes()).await?;
        self.exec_ok(
            &self.as_root(&format!("bash -euo pipefail {}", sh_quote(&path))),
            timeout,
        )
        .await
    }

    /// Runs one planned step (the `n`th of the bake).
    pub async fn step(&self, n: usize, s: &PlannedStep) -> Result<(), StepError> {
        match &s.action {
            PlannedAction::Shell { script } => {
                self.run_script(n, script, &s.env, s.timeout).await?;
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
                self.ssh.upload_all(&uploads).await?;
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
                // Handled by the runner (it owns the connection).
                unreachable_restart()?;
            }
            PlannedAction::PowerShell { .. } | PlannedAction::WindowsUpdate { .. } => {
                return Err(StepError::Remote(RemoteError::Ssh {
                    op: "step",
                    addr: String::new(),
                    message: "PowerShell steps need a Windows build instance".into(),
                }));
            }
        }
        Ok(())
    }

    /// The instance's boot id (changes on every boot).
    pub async fn boot_id(&self) -> Result<String, StepError> {
        let out = self
            .exec_ok(
                "cat /proc/sys/kernel/random/boot_id",
                Duration::from_secs(30),
            )
            .await?;
        Ok(out.stdout.trim().to_string())
    }

    /// Asks the instance to reboot a moment after this command returns.
    pub async fn request_reboot(&self) -> Result<(), StepError> {
        let cmd = format!(
            "nohup sh -c 'sleep 2; {}' >/dev/null 2>&1 &",
            self.as_root("systemctl reboot || reboot").replace('\'', "")
        );
        self.exec_ok(&cmd, Duration::from_secs(30)).await?;
        Ok(())
    }

    /// Runs one check's probe and evaluates it.
    pub async fn check(&self, c: &PlannedCheck, timeout: Duration) -> CheckResult {
        let started = Instant::now();
        let probe = probe::linux(&c.check.kind);
        let script = format!("{}{probe}\n", self.prelude(&BTreeMap::new()));
        let cmd = self.as_root(&format!("bash -c {}", sh_quote(&script)));
        let outcome = match self.exec_with(&cmd, timeout, false).await {
            Ok(out) => eval::evaluate(&c.check.kind, out.exit_code, &out.stdout),
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

fn unreachable_restart() -> Result<(), StepError> {
    Err(StepError::Remote(RemoteError::Ssh {
        op: "restart",
        addr: String::new(),
        message: "restart is run by the runner".into(),
    }))
}
