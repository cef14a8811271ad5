//! Probe commands, Linux (shell) and Windows (PowerShell): one probe per check whose output the
//! pure evaluator reads. Probes print `key=value` lines (except `command`, whose own output is
//! evaluated); a probe that printed nothing never passes. The probes of a verify go to the
//! instance as one command (`bake::scripts::Scripts::probe_batch`), each followed by an end mark
//! that `split_batch` cuts the output at.

use super::CheckKind;
use crate::remote::powershell::{ps_path, ps_quote};
use crate::remote::{sh_path, sh_quote};

/// The shell command that gathers what `kind` needs, on Linux.
pub fn linux(kind: &CheckKind) -> String {
    match kind {
        CheckKind::Command { command, .. } => command.clone(),
        CheckKind::File { path, contains, sha256, mode, .. } => {
            let mut s = format!("f={}; if [ -e \"$f\" ]; then echo exists=1", sh_path(path));
            if mode.is_some() {
                s.push_str("; echo \"mode=$(stat -c %a \"$f\")\"");
            }
            if sha256.is_some() {
                s.push_str("; echo \"sha256=$(sha256sum \"$f\" | cut -d' ' -f1)\"");
            }
            if let Some(c) = contains {
                s.push_str(&format!(
                    "; if grep -qF -- {} \"$f\"; then echo contains=1; else echo contains=0; fi",
                    sh_quote(c)
                ));
            }
            s.push_str("; else echo exists=0; fi");
            s
        }
        CheckKind::Service { service, .. } => {
            let q = sh_quote(service);
            // LoadState tells a unit that does not exist (`not-found`) from one that is stopped.
            format!("echo \"load=$(systemctl show -p LoadState --value {q} 2>/dev/null)\"; echo \"active=$(systemctl is-active {q} 2>/dev/null)\"; echo \"enabled=$(systemctl is-enabled {q} 2>/dev/null)\"")
        }
        CheckKind::Port { .. } => {
            // Listening TCP sockets; ss when present, the kernel tables otherwise.
            "echo probe=port; if command -v ss >/dev/null 2>&1; then ss -Hltn | awk '{print \"ss=\" $4}'; else cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk 'NR>1 && $4==\"0A\" {print \"proc=\" $2}'; fi".to_string()
        }
        CheckKind::Http { url, .. } => format!(
            "b=$(mktemp); code=$(curl -s -o \"$b\" -w '%{{http_code}}' --max-time 30 {} || true); echo \"status=$code\"; echo body_begin; cat \"$b\"; rm -f \"$b\"",
            sh_path(url)
        ),
        CheckKind::Package { package, .. } => {
            let q = sh_quote(package);
            format!(
                "if command -v rpm >/dev/null 2>&1; then echo manager=rpm; elif command -v dpkg-query >/dev/null 2>&1; then echo manager=dpkg; else echo manager=none; fi; \
if command -v rpm >/dev/null 2>&1 && v=$(rpm -q --qf '%{{VERSION}}-%{{RELEASE}}' {q} 2>/dev/null); then echo installed=1; echo \"version=$v\"; \
elif command -v dpkg-query >/dev/null 2>&1 && v=$(dpkg-query -W -f='${{Status}} ${{Version}}' {q} 2>/dev/null) && [ \"${{v#install ok installed}}\" != \"$v\" ]; then echo installed=1; echo \"version=${{v#install ok installed }}\"; \
else echo installed=0; fi"
            )
        }
        // Validation keeps Windows-only kinds off Linux images.
        CheckKind::Registry { .. } | CheckKind::Hotfix { .. } | CheckKind::WindowsFeature { .. } => {
            "echo unsupported=1; exit 3".to_string()
        }
    }
}

/// The PowerShell that gathers what `kind` needs, on Windows.
pub fn windows(kind: &CheckKind) -> String {
    match kind {
        CheckKind::Command { command, .. } => command.clone(),
        CheckKind::File {
            path,
            contains,
            sha256,
            ..
        } => {
            let mut s = format!(
                "$f = {}\nif (Test-Path -LiteralPath $f) {{\n    'exists=1'\n",
                ps_path(path)
            );
            if sha256.is_some() {
                s.push_str(
                    "    'sha256=' + (Get-FileHash -Algorithm SHA256 -LiteralPath $f).Hash.ToLower()\n",
                );
            }
            if let Some(c) = contains {
                s.push_str(&format!(
                    "    if (Select-String -LiteralPath $f -SimpleMatch -Quiet -Pattern {}) {{ 'contains=1' }} else {{ 'contains=0' }}\n",
                    ps_quote(c)
                ));
            }
            s.push_str("} else {\n    'exists=0'\n}\n");
            s
        }
        CheckKind::Service { service, .. } => format!(
            "$s = Get-Service -Name {} -ErrorAction SilentlyContinue\n\
if ($null -eq $s) {{ 'status=missing' }} else {{\n\
    'status=' + $s.Status.ToString().ToLower()\n\
    'start_mode=' + $(switch ($s.StartType.ToString()) {{ 'Automatic' {{ 'auto' }} 'Manual' {{ 'manual' }} 'Disabled' {{ 'disabled' }} default {{ $_.ToLower() }} }})\n\
}}\n",
            ps_quote(service)
        ),
        // Every listening socket, not only the port's: a probe that saw none at all cannot tell
        // that the port is closed.
        CheckKind::Port { .. } => "'probe=port'\nGet-NetTCPConnection -State Listen -ErrorAction SilentlyContinue | ForEach-Object { 'ss=' + $_.LocalAddress + ':' + $_.LocalPort }\n".to_string(),
        CheckKind::Http { url, .. } => format!(
            "try {{\n\
    $r = Invoke-WebRequest -UseBasicParsing -TimeoutSec 30 -Uri {}\n\
    'status=' + [int]$r.StatusCode\n\
    'body_begin'\n\
    $r.Content\n\
}} catch {{\n\
    if ($_.Exception.Response) {{ 'status=' + [int]$_.Exception.Response.StatusCode }} else {{ 'status=0' }}\n\
}}\n",
            ps_path(url)
        ),
        CheckKind::Package { package, .. } => format!(
            "$name = {}\n\
$keys = 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*', 'HKLM:\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*'\n\
$like = [Management.Automation.WildcardPattern]::Escape($name) + ' *'\n\
$hit = Get-ItemProperty -Path $keys -ErrorAction SilentlyContinue | Where-Object {{ $_.PSObject.Properties['DisplayName'] -and ($_.DisplayName -eq $name -or $_.DisplayName -like $like) }} | Select-Object -First 1\n\
if ($hit) {{ 'installed=1'; 'version=' + $hit.DisplayVersion }}\n\
elseif ((Get-Command choco -ErrorAction SilentlyContinue) -and ($c = choco list --exact $name --limit-output | Select-Object -First 1)) {{ 'installed=1'; 'version=' + ($c -split '\\|')[1] }}\n\
else {{ 'installed=0' }}\n",
            ps_quote(package)
        ),
        CheckKind::Registry { key, value, .. } => {
            let mut s = format!(
                "$k = {}\nif (Test-Path -LiteralPath $k) {{\n    'key=1'\n",
                ps_quote(key)
            );
            if let Some(v) = value {
                s.push_str(&format!(
                    "    $p = Get-ItemProperty -LiteralPath $k -Name {q} -ErrorAction SilentlyContinue\n    if ($null -ne $p) {{ 'value=' + $p.{q} }} else {{ 'value_missing=1' }}\n",
                    q = ps_quote(v)
                ));
            }
            s.push_str("} else {\n    'key=0'\n}\n");
            s
        }
        CheckKind::Hotfix { hotfix, .. } => format!(
            "if (Get-HotFix -Id {} -ErrorAction SilentlyContinue) {{ 'installed=1' }} else {{ 'installed=0' }}\n",
            ps_quote(hotfix)
        ),
        CheckKind::WindowsFeature { feature, .. } => format!(
            "$f = Get-WindowsFeature -Name {} -ErrorAction SilentlyContinue\n\
if ($null -eq $f) {{ 'installed=0'; 'unknown_feature=1' }} else {{ 'installed=' + [int]$f.Installed }}\n",
            ps_quote(feature)
        ),
    }
}

/// One probe's share of a batch's output.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPart {
    pub exit_code: i32,
    /// The probe's stdout, exactly as it printed it.
    pub stdout: String,
    /// How long the probe ran, from the instance's clock (when the shell could tell).
    pub seconds: Option<f64>,
}

/// Cuts a batch's stdout into its probes' parts. Probe `i` is followed by a line
/// `\n<mark> <i> <exit code> <start> <end>` (start and end in seconds, either may be empty);
/// the newline before the mark is the batch's, so a part is the probe's output unchanged. A probe
/// whose mark is missing (the batch was cut short, or its output truncated) has no part.
pub fn split_batch(stdout: &str, mark: &str, n: usize) -> Vec<Option<BatchPart>> {
    let mut parts = Vec::with_capacity(n);
    let mut pos = 0;
    for i in 0..n {
        let needle = format!("\n{mark} {i} ");
        let Some(at) = stdout.get(pos..).and_then(|rest| rest.find(&needle)) else {
            break;
        };
        let at = pos + at;
        let line_start = at + needle.len();
        let line_end = stdout[line_start..]
            .find('\n')
            .map_or(stdout.len(), |e| line_start + e);
        let mut fields = stdout[line_start..line_end].split_whitespace();
        let Some(exit_code) = fields.next().and_then(|c| c.parse::<i32>().ok()) else {
            break;
        };
        let secs = |f: Option<&str>| f.and_then(|v| v.replace(',', ".").parse::<f64>().ok());
        let (start, end) = (secs(fields.next()), secs(fields.next()));
        parts.push(Some(BatchPart {
            exit_code,
            stdout: stdout[pos..at].to_string(),
            seconds: start.zip(end).map(|(s, e)| (e - s).max(0.0)),
        }));
        pos = (line_end + 1).min(stdout.len());
    }
    parts.resize(n, None);
    parts
}

/// Whether a Windows command check must run as a command of its own: `exit` (and a `break` or
/// `continue` outside a loop) would end the whole batch, not just the probe.
pub fn windows_needs_own_command(kind: &CheckKind) -> bool {
    static WORDS: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    match kind {
        CheckKind::Command { command, .. } => WORDS
            .get_or_init(|| regex::Regex::new(r"(?i)\b(exit|break|continue)\b").expect("regex"))
            .is_match(command),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_probe_expands_workdir_and_quotes_needles() {
        let p = linux(&CheckKind::File {
            path: "$BAKERY_WORKDIR/etc/motd".into(),
            exists: true,
            contains: Some("it's".into()),
            sha256: None,
            mode: Some(0o644),
        });
        assert!(p.starts_with("f=\"$BAKERY_WORKDIR\"'/etc/motd'; "), "{p}");
        assert!(p.contains(r"grep -qF -- 'it'\''s' "), "{p}");
        assert!(p.contains("stat -c %a"), "{p}");
    }

    /// `git` must not match `github-cli`: the Windows package probe compares the whole display
    /// name, or the name followed by a space (`7-Zip 24.08 (x64)`), with wildcards escaped.
    #[test]
    fn windows_package_probe_matches_whole_names() {
        let p = windows(&CheckKind::Package {
            package: "git".into(),
            installed: true,
            version: None,
        });
        assert!(!p.contains("\"$name*\""), "{p}");
        assert!(
            p.contains("$_.DisplayName -eq $name -or $_.DisplayName -like $like"),
            "{p}"
        );
        assert!(
            p.contains("[Management.Automation.WildcardPattern]::Escape($name) + ' *'"),
            "{p}"
        );
    }

    #[test]
    fn a_batch_splits_at_its_marks_and_keeps_each_output_whole() {
        let m = "bakery-probe-0f";
        let out = format!(
            "exists=1\nmode=644\n\n{m} 0 0 1700000000.100000 1700000000.350000\n\n{m} 1 3 1700000000.4 1700000000.4\nno newline at the end\n{m} 2 124  \nnot a mark: {m} 9 0\n"
        );
        let parts = split_batch(&out, m, 4);
        let p0 = parts[0].clone().unwrap();
        assert_eq!(
            (p0.exit_code, p0.stdout.as_str()),
            (0, "exists=1\nmode=644\n")
        );
        assert!((p0.seconds.unwrap() - 0.25).abs() < 1e-6, "{p0:?}");
        assert_eq!(parts[1].clone().unwrap().stdout, "", "printed nothing");
        assert_eq!(parts[1].clone().unwrap().exit_code, 3);
        let p2 = parts[2].clone().unwrap();
        assert_eq!(
            (p2.exit_code, p2.stdout.as_str(), p2.seconds),
            (124, "no newline at the end", None)
        );
        assert_eq!(parts[3], None, "its mark never came");
        // Output cut short in the middle of a probe: that probe and the rest have no part.
        let cut = format!("a=1\n\n{m} 0 0 1 2\npartial");
        let parts = split_batch(&cut, m, 3);
        assert!(parts[0].is_some() && parts[1].is_none() && parts[2].is_none());
        // A mark of another batch (another random mark) is output like any other.
        let other = "x\nbakery-probe-aa 0 0\n\nbakery-probe-0f 0 0 1 2\n";
        assert_eq!(
            split_batch(other, m, 1)[0].clone().unwrap().stdout,
            "x\nbakery-probe-aa 0 0\n"
        );
    }

    #[test]
    fn windows_commands_that_end_the_script_run_alone() {
        let cmd = |c: &str| CheckKind::Command {
            command: c.into(),
            exit_code: 0,
            stdout_contains: None,
            stdout_matches: None,
        };
        assert!(windows_needs_own_command(&cmd("if ($x) { Exit 3 }")));
        assert!(windows_needs_own_command(&cmd(
            "foreach ($a in $b) { break }"
        )));
        assert!(!windows_needs_own_command(&cmd(
            "Get-Item C:\\exits.txt; 'exited=1'"
        )));
        assert!(!windows_needs_own_command(&CheckKind::Port {
            port: 22,
            listening: true
        }));
    }

    /// A service that does not exist must not look stopped: the probe asks for its LoadState.
    #[test]
    fn linux_service_probe_asks_whether_the_unit_exists() {
        let p = linux(&CheckKind::Service {
            service: "buildagent".into(),
            state: None,
            start_mode: None,
        });
        assert!(
            p.contains("systemctl show -p LoadState --value 'buildagent'"),
            "{p}"
        );
    }
}
