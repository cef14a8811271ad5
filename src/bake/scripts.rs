//! The text of what bakery sends to an instance, for a platform and working directory, without
//! a connection: what `Host` runs, and what the golden tests pin.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::steps::StepError;
use crate::catalog::model::Platform;
use crate::checks::probe;
use crate::plan::{PlannedAction, PlannedCheck, PlannedStep};
use crate::remote::powershell::{self, ps_path, ps_quote};
use crate::remote::sh_quote;

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The shell line that fails unless the file at `quoted_path` has the sha256 `sha` (hex).
pub(super) fn sh_sha_check(quoted_path: &str, sha: &str) -> String {
    format!("printf '%s  %s\\n' '{sha}' {quoted_path} | sha256sum -c - >/dev/null\n")
}

/// `Scripts::readiness` on Linux: cloud-init's `status` (`running`, `not started` or `not run`
/// while it has work left on this boot; `done`, `error`, `degraded` or `disabled` after).
const LINUX_READINESS: &str = r#"echo "boot=$(cat /proc/sys/kernel/random/boot_id)"
if command -v cloud-init >/dev/null 2>&1 && [ -d /run/cloud-init ]; then
  s=$(cloud-init status 2>/dev/null | sed -n 's/^status: *//p' | head -n 1)
  case "$s" in
    running|"not started"|"not run") echo "ready=no cloud-init is $s on this boot" ;;
    *) echo ready=yes ;;
  esac
else
  echo ready=yes
fi"#;

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

    pub(super) fn as_root(&self, cmd: &str) -> String {
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

    /// Whether a fresh instance has finished its first boot: `boot=<id>`, then `ready=yes`,
    /// `ready=no <why>` or `ready=failed <why>` (see `settle::parse`). On Linux that is
    /// cloud-init when it is active on this boot (`/run/cloud-init` exists), on Windows EC2Launch v2.
    pub fn readiness(&self) -> String {
        if self.windows() {
            self.ps(&BTreeMap::new(), powershell::READINESS)
        } else {
            LINUX_READINESS.to_string()
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
    pub(super) fn prelude(&self, env: &BTreeMap<String, String>) -> String {
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
            PlannedAction::PowerShell { script } => {
                vec![self.ps(&s.env, &format!("{}{script}", s.secrets))]
            }
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
            PlannedAction::WindowsUpdate {
                categories,
                exclude_kbs,
                ..
            } => vec![self.ps(
                &BTreeMap::new(),
                &powershell::windows_update_pass(categories, exclude_kbs),
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
pub(super) fn windows_destination(destination: &str, is_dir: bool, rel: &str) -> String {
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
    // The test phase, on a fresh instance: first boot finished, the probes in the system's
    // temporary directory, then the boot id again (a restart under the checks voids them).
    if let Some(t) = &plan.test {
        book.push(("test: first boot finished".into(), temp.readiness()));
        for c in &t.checks {
            book.push((format!("test check {}", c.check.name), temp.probe(c)));
        }
        book.push(("test: still the same boot".into(), temp.boot_id()));
    }
    book
}
