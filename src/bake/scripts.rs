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

/// How a Linux probe batch runs each probe (`__probe INDEX SECONDS SCRIPT`): in a subshell of
/// the batch's shell (no `bash` or `timeout` to start per probe: a fork, not two programs), in a
/// process group of its own, so that an `exit` ends only that probe and a watchdog ends the whole
/// group after SECONDS (TERM, then KILL 5 s later), as `timeout` would. The watchdog waits with
/// `read -t` on a pipe nobody writes (no `sleep` to start), and on firing leaves a byte in the
/// other pipe: that probe's exit code is 124, as `timeout`'s. After each probe its end mark:
/// `\n<mark> <index> <exit code> <start> <end>` (the instance's clock; empty before bash 5).
const LINUX_PROBE_RUNNER: &str = r#"exec 8<> <(:) 9<> <(:)
__probe() {
  local __t=$EPOCHREALTIME __s=$3 __p __w __rc
  set -m
  ( set --; exec 8>&- 9>&-; eval "$__s" ) </dev/null &
  __p=$!
  set +m
  ( read -r -t "$2" -u 9; echo >&8; kill -TERM -- "-$__p"; read -r -t 5 -u 9; kill -KILL -- "-$__p" ) </dev/null >/dev/null 2>&1 &
  __w=$!
  wait "$__p"; __rc=$?
  kill -KILL "$__w" 2>/dev/null; wait "$__w" 2>/dev/null
  if read -r -t 0 -u 8; then read -r -t 1 -u 8; __rc=124; fi
  printf '\n%s %s %s %s %s\n' "$__m" "$1" "$__rc" "$__t" "$EPOCHREALTIME"
}
"#;

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

    /// One command that runs every probe of `checks` in turn, each followed by its end mark
    /// (`probe::split_batch` reads them): `\n<mark> <i> <exit code> <start> <end>`. On Linux
    /// each probe is a subshell of its own under a watchdog (`LINUX_PROBE_RUNNER`: an `exit` in
    /// a command check ends only that probe, a hung one only its own `per_probe` seconds), with
    /// the instance's clock around it. On Windows each is a script block whose output is
    /// collected before its mark is written; a command check that could end the whole script
    /// runs alone instead (`probe::windows_needs_own_command`).
    pub fn probe_batch(&self, checks: &[&PlannedCheck], mark: &str, per_probe_secs: u64) -> String {
        if self.windows() {
            let mut s = format!("$__m = {}\n", ps_quote(mark));
            for (i, c) in checks.iter().enumerate() {
                let body = probe::windows(&c.check.kind);
                s.push_str(&format!(
                    "$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()\n\
$global:LASTEXITCODE = 0\n\
$__rc = 0\n\
try {{\n\
    $__o = & {{\n{}\n}} | Out-String -Width 4096\n\
    if ($LASTEXITCODE) {{ $__rc = $LASTEXITCODE }}\n\
}} catch {{\n\
    [Console]::Error.WriteLine('error: ' + $_.Exception.Message)\n\
    $__o = ''\n\
    $__rc = 1\n\
}}\n\
[Console]::Out.Write($__o)\n\
[Console]::Out.WriteLine(\"`n$__m {i} $__rc \" + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))\n",
                    body.trim_end_matches('\n')
                ));
            }
            s.push_str("$global:LASTEXITCODE = 0\n");
            self.ps(&BTreeMap::new(), &s)
        } else {
            let mut s = self.prelude(&BTreeMap::new());
            s.push_str(&format!("__m={}\n{LINUX_PROBE_RUNNER}", sh_quote(mark)));
            for (i, c) in checks.iter().enumerate() {
                s.push_str(&format!(
                    "__probe {i} {per_probe_secs} {}\n",
                    sh_quote(&probe::linux(&c.check.kind))
                ));
            }
            self.as_root(&format!("bash -c {}", sh_quote(&s)))
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

/// The most characters one probe batch may have: under the 128 KiB a single argument of a Linux
/// command line may take (`bash -c <script>` over SSH), under the 64 KiB of a Run Command
/// document's parameters, and well under PowerShell's `-EncodedCommand` limit once encoded.
const BATCH_MAX: usize = 12 * 1024;

/// One command of a verify's probes: a batch of checks (`probe_batch`) or one check alone.
#[derive(Debug, Clone)]
pub struct ProbeCommand {
    /// Indices into the checks.
    pub checks: Vec<usize>,
    pub batch: bool,
    pub script: String,
}

impl Scripts<'_> {
    /// How the probes of `checks` go to the instance, in the order they are sent: batches of
    /// consecutive checks whose script stays under `BATCH_MAX` (a probe too long for any batch
    /// is a batch of its own), then the Windows command checks that must run alone.
    pub fn probe_commands(
        &self,
        checks: &[PlannedCheck],
        mark: &str,
        per_probe_secs: u64,
    ) -> Vec<ProbeCommand> {
        let alone =
            |c: &PlannedCheck| self.windows() && probe::windows_needs_own_command(&c.check.kind);
        let batched: Vec<usize> = (0..checks.len()).filter(|&i| !alone(&checks[i])).collect();
        let script = |idx: &[usize]| {
            let cs: Vec<&PlannedCheck> = idx.iter().map(|&i| &checks[i]).collect();
            self.probe_batch(&cs, mark, per_probe_secs)
        };
        let mut out = Vec::new();
        let mut start = 0;
        while start < batched.len() {
            // Grow the batch while the next probe still fits; keep the last script that did.
            let mut end = start + 1;
            let mut fitting = script(&batched[start..end]);
            while end < batched.len() {
                let longer = script(&batched[start..=end]);
                if longer.len() > BATCH_MAX {
                    break;
                }
                fitting = longer;
                end += 1;
            }
            out.push(ProbeCommand {
                checks: batched[start..end].to_vec(),
                batch: true,
                script: fitting,
            });
            start = end;
        }
        out.extend(
            (0..checks.len())
                .filter(|&i| alone(&checks[i]))
                .map(|i| ProbeCommand {
                    checks: vec![i],
                    batch: false,
                    script: self.probe(&checks[i]),
                }),
        );
        out
    }
}

/// Time allowed for each probe of a verify or a test phase.
pub const PROBE_SECS: u64 = 120;

/// The mark the script book's probe batches use (a bake draws a random one).
pub const GOLDEN_MARK: &str = "bakery-probe-0000000000000000";

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
    let probes = |sc: &Scripts, checks: &[PlannedCheck], what: &str| {
        sc.probe_commands(checks, GOLDEN_MARK, PROBE_SECS)
            .into_iter()
            .map(|p| {
                let names: Vec<&str> = p
                    .checks
                    .iter()
                    .map(|&i| checks[i].check.name.as_str())
                    .collect();
                let label = match p.batch {
                    true => format!("{what}s: {}", names.join(", ")),
                    false => format!("{what} {}", names.join(", ")),
                };
                (label, p.script)
            })
            .collect::<Vec<_>>()
    };
    book.extend(probes(&sc, &plan.checks, "check"));
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
        book.extend(probes(&temp, &t.checks, "test check"));
        book.push(("test: still the same boot".into(), temp.boot_id()));
    }
    book
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{Check, CheckKind};

    fn command(c: &str) -> PlannedCheck {
        PlannedCheck {
            origin: "image".into(),
            check: Check {
                name: c.into(),
                kind: CheckKind::Command {
                    command: c.into(),
                    exit_code: 0,
                    stdout_contains: None,
                    stdout_matches: None,
                },
            },
        }
    }

    /// The Linux batch, run by this machine's bash: each probe's own exit code and output, an
    /// `exit` that ends only its probe, a hung probe (and what it started) ended after its
    /// seconds with timeout's 124 while the next one still runs, and no stdin for a probe.
    #[test]
    fn a_linux_batch_runs_each_probe_alone_and_ends_a_hung_one() {
        let dir = tempfile::tempdir().unwrap();
        let sc = Scripts {
            platform: Platform::Linux,
            workdir: dir.path().to_str().unwrap(),
            sudo: false,
        };
        // A marker argument tells this test's sleep from any other on the machine.
        let marker = format!("{}.{}", 30, std::process::id());
        let checks = [
            command("echo one; exit 3"),
            command(&format!("bash -c 'sleep {marker}'; echo never")),
            command("trap '' TERM; sleep 2; echo ignored TERM"),
            command("cat; echo \"in $PWD $#\""),
        ];
        let refs: Vec<&PlannedCheck> = checks.iter().collect();
        let mark = "bakery-probe-test";
        let script = sc.probe_batch(&refs, mark, 1);
        let t = std::time::Instant::now();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let took = t.elapsed();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let parts: Vec<_> = probe::split_batch(&stdout, mark, checks.len())
            .into_iter()
            .map(|p| p.expect("every probe has its part"))
            .collect();
        assert_eq!(
            parts.iter().map(|p| p.exit_code).collect::<Vec<_>>(),
            [3, 124, 124, 0],
            "{stdout}"
        );
        assert_eq!(parts[0].stdout, "one\n");
        assert_eq!(parts[1].stdout, "");
        // A probe that ignores TERM ran past its second: timed out, whatever it did after.
        assert_eq!(parts[2].stdout, "ignored TERM\n");
        let workdir = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(parts[3].stdout, format!("in {} 0\n", workdir.display()));
        assert!(parts.iter().all(|p| p.seconds.is_some()), "{stdout}");
        assert!(parts[1].seconds.unwrap() >= 1.0, "{stdout}");
        assert!(took < std::time::Duration::from_secs(10), "{took:?}");
        assert!(
            String::from_utf8(out.stderr).unwrap().is_empty(),
            "no job notices"
        );
        let left = std::process::Command::new("pgrep")
            .args(["-f", &format!("sleep {marker}")])
            .output()
            .unwrap();
        assert!(
            left.stdout.is_empty(),
            "the hung probe's sleep was ended with it"
        );
    }
}
