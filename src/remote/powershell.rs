//! What bakery runs on Windows: the wrapper around every step and probe, the encoded command
//! line for OpenSSH, Windows Update passes, boot ids, reboots and file writes. Pure string
//! building; the output is pinned by golden tests.
//!
//! PowerShell only reports an exit code when a script calls `exit`, and an uncaught error prints
//! a multi-line record ("At line:12 char:5 ... CategoryInfo ...") numbered against the whole
//! wrapped script. The wrapper turns a terminating error into exit 1 with one marked line on
//! stderr, and a non-zero `$LASTEXITCODE` (a native program's) into the exit code; `unwrap`
//! turns the marked line back into "message (line N of the step's script)" and drops
//! PowerShell's CLIXML progress noise.

use std::collections::BTreeMap;

use base64::Engine as _;

/// Marks the wrapper's error line on stderr.
pub const ERROR_MARK: &str = "##bakery-error## ";
/// The wrapper's first line of output: without it the script never ran (a probe whose output
/// lacks it has nothing to evaluate).
pub const RAN_MARK: &str = "##bakery-ran##";

/// Quotes `s` as a PowerShell single-quoted string (nothing expands inside).
pub fn ps_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        // PowerShell ends a single-quoted string at any of these, not only the ASCII quote;
        // doubled, each stands for itself.
        if PS_SINGLE_QUOTES.contains(&c) {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// What PowerShell reads as a single quote: `'` and U+2018–U+201B.
pub const PS_SINGLE_QUOTES: [char; 5] = ['\'', '\u{2018}', '\u{2019}', '\u{201A}', '\u{201B}'];

/// Quotes a path: single quotes, except that a leading `$env:BAKERY_WORKDIR` (what
/// `{{ workdir }}` renders to on Windows) stays a variable reference.
pub fn ps_path(s: &str) -> String {
    match s.strip_prefix("$env:BAKERY_WORKDIR") {
        Some("") => "$env:BAKERY_WORKDIR".to_string(),
        Some(rest) => format!("($env:BAKERY_WORKDIR + {})", ps_quote(rest)),
        None => ps_quote(s),
    }
}

/// A step's script (or a probe) wrapped: strict error handling, the step's variables, the
/// working directory, and exit codes that mean what they say.
pub fn wrap(workdir: &str, env: &BTreeMap<String, String>, script: &str) -> String {
    let mut head = String::new();
    head.push_str("$ErrorActionPreference = 'Stop'\n");
    head.push_str("$ProgressPreference = 'SilentlyContinue'\n");
    head.push_str(&format!("$env:BAKERY_WORKDIR = {}\n", ps_quote(workdir)));
    for (k, v) in env {
        head.push_str(&format!("$env:{k} = {}\n", ps_quote(v)));
    }
    head.push_str("New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null\n");
    head.push_str("Set-Location -LiteralPath $env:BAKERY_WORKDIR\n");
    head.push_str("$global:LASTEXITCODE = 0\n");
    head.push_str(&format!(
        "[Console]::Out.WriteLine({})\n",
        ps_quote(RAN_MARK)
    ));
    head.push_str("try {\n");
    head.push_str(". {\n");
    // The script's first line is line (head lines + 1) of the whole.
    let offset = head.lines().count();
    let mut s = head;
    s.push_str(script.trim_end_matches('\n'));
    s.push('\n');
    s.push_str("}\n");
    s.push_str("} catch {\n");
    s.push_str(&format!(
        "    [Console]::Error.WriteLine({} + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - {offset}) + ')')\n",
        ps_quote(ERROR_MARK)
    ));
    s.push_str("    exit 1\n");
    s.push_str("}\n");
    s.push_str("if ($LASTEXITCODE) { exit $LASTEXITCODE }\n");
    s.push_str("exit 0\n");
    s
}

/// Whether the wrapper started (its mark is in the raw stdout).
pub fn ran(stdout: &str) -> bool {
    stdout.lines().any(|l| l.trim_end() == RAN_MARK)
}

/// The command line that runs `script` through OpenSSH on Windows: UTF-16LE, base64.
pub fn encoded_command(script: &str) -> String {
    let utf16: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    format!(
        "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand {}",
        base64::engine::general_purpose::STANDARD.encode(utf16)
    )
}

/// Output without the wrapper's noise: the marked error line becomes a plain one, the "ran"
/// mark and CLIXML progress records go.
pub fn unwrap(stream: &str) -> String {
    let mut out = Vec::new();
    let mut in_clixml = false;
    for l in stream.lines() {
        if l.starts_with("#< CLIXML") {
            in_clixml = true;
            continue;
        }
        if in_clixml {
            if l.starts_with("<Objs ") || l.starts_with("<Obj ") || l.starts_with("</Objs>") {
                in_clixml = !l.contains("</Objs>");
                continue;
            }
            in_clixml = false;
        }
        if l.trim_end() == RAN_MARK {
            continue;
        }
        match l.strip_prefix(ERROR_MARK) {
            Some(rest) => out.push(format!("error: {rest}")),
            None => out.push(l.to_string()),
        }
    }
    out.join("\n")
}

/// The boot id on Windows: when the running system booted (UTC, round-trip format).
pub const BOOT_ID: &str =
    "(Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('o')";

/// Whether a fresh instance has finished its first boot: its boot id, then `ready=yes`,
/// `ready=no <why>` or `ready=failed <why>`, from `ec2launch status` (exit 0: the agent ran and
/// succeeded, 1: it ran and failed, 2: still running, 5: not run since the sysprep reset; the
/// rest: unknown). Without EC2Launch v2 there is nothing to wait for.
pub const READINESS: &str = r#"$boot = (Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('o')
[Console]::Out.WriteLine("boot=$boot")
$ec2launch = Join-Path $env:ProgramFiles 'Amazon\EC2Launch\EC2Launch.exe'
if (-not (Test-Path -LiteralPath $ec2launch)) {
    [Console]::Out.WriteLine('ready=yes')
    exit 0
}
# Windows PowerShell turns a native command's stderr into errors, which 'Stop' would throw.
$ErrorActionPreference = 'Continue'
& $ec2launch status 2>&1 | Out-Null
$code = $LASTEXITCODE
$ErrorActionPreference = 'Stop'
$global:LASTEXITCODE = 0
switch ($code) {
    0 { [Console]::Out.WriteLine('ready=yes') }
    1 { [Console]::Out.WriteLine('ready=failed EC2Launch v2 ran its first-boot tasks and reported a failure (see C:\ProgramData\Amazon\EC2Launch\log\agent.log)') }
    2 { [Console]::Out.WriteLine('ready=no EC2Launch v2 is running its first-boot tasks') }
    5 { [Console]::Out.WriteLine('ready=no EC2Launch v2 has not started since sysprep') }
    default { [Console]::Out.WriteLine("ready=no EC2Launch v2 status is unknown (exit $code)") }
}
"#;

/// Asks Windows to restart a few seconds after this command returns (so the command's own
/// result still reaches SSM or SSH).
pub const REQUEST_REBOOT: &str = "shutdown.exe /r /t 5 /c 'bakery restart' /d p:4:1";

/// Writes `bytes` (base64 in the command) to `path`, creating the directory, then checks the
/// sha256 of what landed.
pub fn write_file(path: &str, bytes: &[u8], sha256: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        "$p = {path}\n\
New-Item -ItemType Directory -Force -Path (Split-Path -Parent $p) | Out-Null\n\
[IO.File]::WriteAllBytes($p, [Convert]::FromBase64String('{b64}'))\n\
$h = (Get-FileHash -Algorithm SHA256 -LiteralPath $p).Hash.ToLower()\n\
if ($h -ne '{sha256}') {{ throw \"sha256 of $p is $h, expected {sha256}\" }}\n",
        path = ps_path(path)
    )
}

/// One Windows Update pass: install what is missing (of `categories`, all when empty; catalog
/// names such as `SecurityUpdates` are Windows Update's `Security Updates`), except updates of
/// the KB articles in `exclude_kbs`, then say what was installed (`installed=KB5034439 <title>`)
/// and whether a reboot is pending (CBS `RebootPending`, Windows Update `RebootRequired`,
/// `PendingFileRenameOperations`).
pub fn windows_update_pass(categories: &[String], exclude_kbs: &[String]) -> String {
    let list = |v: &[String]| v.iter().map(|c| ps_quote(c)).collect::<Vec<_>>().join(", ");
    // SecurityUpdates -> Security Updates: the classification names the agent reports.
    let names: Vec<String> = categories
        .iter()
        .map(|c| {
            let mut out = String::new();
            for (i, ch) in c.chars().enumerate() {
                if i > 0 && ch.is_ascii_uppercase() {
                    out.push(' ');
                }
                out.push(ch);
            }
            out
        })
        .collect();
    format!(
        "$categories = @({cats})\n\
$exclude = @({kbs})\n\
$session = New-Object -ComObject Microsoft.Update.Session\n\
$found = $session.CreateUpdateSearcher().Search(\"IsInstalled=0 and Type='Software' and IsHidden=0\").Updates\n\
$todo = New-Object -ComObject Microsoft.Update.UpdateColl\n\
$skipped = 0\n\
foreach ($u in $found) {{\n\
    $names = @($u.Categories | ForEach-Object {{ $_.Name }})\n\
    $kbs = @($u.KBArticleIDs | ForEach-Object {{ 'KB' + $_ }})\n\
    if ($kbs | Where-Object {{ $exclude -contains $_ }}) {{ $skipped++; continue }}\n\
    if ($categories.Count -eq 0 -or ($names | Where-Object {{ $categories -contains $_ }})) {{\n\
        if (-not $u.EulaAccepted) {{ $u.AcceptEula() }}\n\
        [void]$todo.Add($u)\n\
    }}\n\
}}\n\
if ($todo.Count -gt 0) {{\n\
    $dl = $session.CreateUpdateDownloader(); $dl.Updates = $todo; [void]$dl.Download()\n\
    $inst = $session.CreateUpdateInstaller(); $inst.Updates = $todo; $r = $inst.Install()\n\
    for ($i = 0; $i -lt $todo.Count; $i++) {{\n\
        $u = $todo.Item($i)\n\
        $kb = (@($u.KBArticleIDs | ForEach-Object {{ 'KB' + $_ }}) -join ',')\n\
        if (-not $kb) {{ $kb = '-' }}\n\
        $code = $r.GetUpdateResult($i).ResultCode\n\
        if ($code -eq 2 -or $code -eq 3) {{ 'installed=' + $kb + ' ' + $u.Title }} else {{ 'failed=' + $kb + ' ' + $u.Title }}\n\
    }}\n\
}}\n\
'excluded=' + $skipped\n\
'remaining=' + ($found.Count - $todo.Count - $skipped)\n\
$pending = (Test-Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending') -or \
(Test-Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\RebootRequired') -or \
($null -ne (Get-ItemProperty -LiteralPath 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Session Manager' -Name PendingFileRenameOperations -ErrorAction SilentlyContinue))\n\
'reboot_pending=' + [int]$pending\n",
        cats = list(&names),
        kbs = list(exclude_kbs),
    )
}

/// The distinct KB articles (`KB5034439`) of installed-update lines (`KB5034439,KB5034440 <title>`).
pub fn kb_articles(installed: &[String]) -> std::collections::BTreeSet<String> {
    installed
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .flat_map(|k| k.split(','))
        .filter(|k| k.starts_with("KB"))
        .map(str::to_string)
        .collect()
}

/// What one Windows Update pass reported.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdatePass {
    pub installed: Vec<String>,
    pub failed: Vec<String>,
    pub reboot_pending: bool,
}

impl UpdatePass {
    /// Parses a pass's output; `None` when it has none of the lines a pass always prints.
    pub fn parse(stdout: &str) -> Option<UpdatePass> {
        let mut p = UpdatePass::default();
        let mut saw_pending = false;
        for l in stdout.lines() {
            let l = l.trim_end();
            if let Some(t) = l.strip_prefix("installed=") {
                p.installed.push(t.to_string());
            } else if let Some(t) = l.strip_prefix("failed=") {
                p.failed.push(t.to_string());
            } else if let Some(v) = l.strip_prefix("reboot_pending=") {
                saw_pending = true;
                p.reboot_pending = v.trim() == "1";
            }
        }
        saw_pending.then_some(p)
    }

    /// Another pass is needed: something was installed or a reboot is pending.
    pub fn again(&self) -> bool {
        !self.installed.is_empty() || self.reboot_pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ps_quote("it's"), "'it''s'");
        assert_eq!(ps_path("C:\\x y"), "'C:\\x y'");
        assert_eq!(
            ps_path("$env:BAKERY_WORKDIR\\app"),
            "($env:BAKERY_WORKDIR + '\\app')"
        );
        assert_eq!(ps_path("$(Stop-Computer)"), "'$(Stop-Computer)'");
    }

    #[test]
    fn the_wrapper_reports_lines_of_the_step_script() {
        let env = BTreeMap::from([("GREETING".to_string(), "it's".to_string())]);
        let w = wrap(
            "C:\\Windows\\Temp\\bakery-bk-1",
            &env,
            "Write-Output 1\nthrow 'x'\n",
        );
        let offset = w.lines().position(|l| l == "Write-Output 1").unwrap();
        assert!(w.contains(&format!("ScriptLineNumber - {offset})")), "{w}");
        assert!(w.contains("$env:GREETING = 'it''s'\n"), "{w}");
        assert!(w.ends_with("if ($LASTEXITCODE) { exit $LASTEXITCODE }\nexit 0\n"));
    }

    #[test]
    fn unwrap_drops_clixml_and_unmarks_errors() {
        let raw = "##bakery-ran##\r\n#< CLIXML\n<Objs Version=\"1.1.0.1\" xmlns=\"x\"><Obj S=\"progress\"></Obj></Objs>\nreal line\n##bakery-error## boom (line 2)\n";
        assert_eq!(unwrap(raw), "real line\nerror: boom (line 2)");
    }

    #[test]
    fn encoded_command_is_utf16le_base64() {
        let c = encoded_command("exit 0");
        let b64 = c.rsplit(' ').next().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(bytes, b"e\0x\0i\0t\0 \x000\0");
        assert!(c.starts_with(
            "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand "
        ));
    }

    #[test]
    fn update_pass_parsing() {
        let p =
            UpdatePass::parse("installed=KB5030216 cumulative\nremaining=0\nreboot_pending=1\n")
                .unwrap();
        assert_eq!(p.installed, vec!["KB5030216 cumulative"]);
        assert!(p.reboot_pending && p.again());
        let done = UpdatePass::parse("remaining=0\r\nreboot_pending=0\r\n").unwrap();
        assert!(!done.again());
        assert_eq!(
            UpdatePass::parse(""),
            None,
            "no output is not 'nothing to do'"
        );
        let two = UpdatePass::parse(
            "installed=KB5034439,KB5034440 2024-01 Cumulative Update\ninstalled=- Defender platform\nexcluded=1\nreboot_pending=0\n",
        )
        .unwrap();
        let mut more = two.installed.clone();
        more.push("KB5034439 the same article again".into());
        assert_eq!(
            kb_articles(&more).into_iter().collect::<Vec<_>>(),
            vec!["KB5034439", "KB5034440"]
        );
    }

    /// The catalog's classification names are Windows Update's with spaces (a filter on
    /// `SecurityUpdates` would match nothing), and excluded KB articles are skipped.
    #[test]
    fn update_pass_filters_by_windows_names_and_excludes_kbs() {
        let s = windows_update_pass(
            &["SecurityUpdates".into(), "UpdateRollups".into()],
            &["KB5034439".into()],
        );
        assert!(
            s.contains("$categories = @('Security Updates', 'Update Rollups')"),
            "{s}"
        );
        assert!(s.contains("$exclude = @('KB5034439')"), "{s}");
        assert!(
            s.contains(
                "if ($kbs | Where-Object { $exclude -contains $_ }) { $skipped++; continue }"
            ),
            "{s}"
        );
        let none = windows_update_pass(&[], &[]);
        assert!(none.contains("$categories = @()\n$exclude = @()"), "{none}");
    }
}
