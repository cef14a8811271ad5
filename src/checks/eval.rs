//! Pure evaluation of probe output against a check.

use serde::Serialize;

use super::{CheckKind, ServiceState, StartMode};

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub passed: bool,
    /// What was found, in a sentence (why it failed, or what passed).
    pub detail: String,
}

fn pass(detail: impl Into<String>) -> Outcome {
    Outcome {
        passed: true,
        detail: detail.into(),
    }
}

fn fail(detail: impl Into<String>) -> Outcome {
    Outcome {
        passed: false,
        detail: detail.into(),
    }
}

fn field<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// Evaluates the probe's exit code and stdout for `kind`. Empty output never passes.
pub fn evaluate(kind: &CheckKind, exit_code: i32, stdout: &str) -> Outcome {
    match kind {
        CheckKind::Command {
            exit_code: want,
            stdout_contains,
            stdout_matches,
            ..
        } => {
            if exit_code != *want {
                return fail(format!("exit code {exit_code}, expected {want}"));
            }
            if let Some(c) = stdout_contains {
                if !stdout.contains(c.as_str()) {
                    return fail(format!("stdout does not contain {c:?}"));
                }
            }
            if let Some(m) = stdout_matches {
                match regex::Regex::new(m) {
                    Ok(re) if re.is_match(stdout) => {}
                    Ok(_) => return fail(format!("stdout does not match /{m}/")),
                    Err(e) => return fail(format!("invalid regex: {e}")),
                }
            }
            pass(format!("exit code {exit_code}"))
        }
        CheckKind::File {
            exists,
            contains,
            sha256,
            mode,
            ..
        } => {
            let Some(found) = field(stdout, "exists") else {
                return fail("no output to evaluate");
            };
            let found = found == "1";
            if !*exists {
                return if found {
                    fail("exists, expected absent")
                } else {
                    pass("absent")
                };
            }
            if !found {
                return fail("does not exist");
            }
            if let Some(m) = mode {
                let got = field(stdout, "mode").and_then(|v| u32::from_str_radix(v, 8).ok());
                if got != Some(*m) {
                    return fail(format!(
                        "mode {}, expected {m:o}",
                        got.map_or("unknown".into(), |g| format!("{g:o}"))
                    ));
                }
            }
            if let Some(h) = sha256 {
                let got = field(stdout, "sha256").unwrap_or("");
                if !got.eq_ignore_ascii_case(h) {
                    return fail(format!("sha256 {got}, expected {h}"));
                }
            }
            if let Some(c) = contains {
                if field(stdout, "contains") != Some("1") {
                    return fail(format!("does not contain {c:?}"));
                }
            }
            pass("exists")
        }
        CheckKind::Service {
            state, start_mode, ..
        } if field(stdout, "status").is_some() => windows_service(stdout, *state, *start_mode),
        CheckKind::Service {
            state, start_mode, ..
        } => {
            let (Some(load), Some(active), Some(enabled)) = (
                field(stdout, "load"),
                field(stdout, "active"),
                field(stdout, "enabled"),
            ) else {
                return fail("no output to evaluate");
            };
            // A unit that does not exist is "inactive": without this, `stopped` would pass.
            if load == "not-found" || (active.is_empty() && enabled.is_empty()) {
                return fail("no such service");
            }
            if load.is_empty() {
                return fail("systemd did not say whether the unit exists");
            }
            if let Some(s) = state {
                let running = active == "active";
                let ok = match s {
                    ServiceState::Running => running,
                    ServiceState::Stopped => !running,
                };
                if !ok {
                    return fail(format!(
                        "is {active}, expected {}",
                        if running { "stopped" } else { "running" }
                    ));
                }
            }
            if let Some(m) = start_mode {
                // systemd: enabled = starts at boot, disabled = starts only on demand, masked =
                // cannot start. `static` (no [Install] section) and `indirect` start only when
                // something else pulls them in, so they do not count as starting at boot.
                let got = match enabled {
                    "enabled" | "enabled-runtime" | "alias" | "generated" => StartMode::Auto,
                    "masked" | "masked-runtime" => StartMode::Disabled,
                    _ => StartMode::Manual,
                };
                if got != *m {
                    return fail(format!("start mode is {enabled}, expected {m:?}").to_lowercase());
                }
            }
            pass(format!("{active}, {enabled}"))
        }
        CheckKind::Port { port, listening } => {
            if !stdout.lines().any(|l| l.trim_end() == "probe=port") {
                return fail("no output to evaluate");
            }
            let mut saw = false;
            let mut open = false;
            for l in stdout.lines() {
                if let Some(addr) = l.strip_prefix("ss=") {
                    saw = true;
                    open |=
                        addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) == Some(*port);
                } else if let Some(addr) = l.strip_prefix("proc=") {
                    saw = true;
                    open |= addr
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        == Some(*port);
                }
            }
            if exit_code != 0 {
                return fail(format!("probe failed with exit code {exit_code}"));
            }
            match (open, *listening) {
                (true, true) => pass(format!("port {port} is listening")),
                // A probe that saw no listening socket at all saw nothing (a failed `ss`, no
                // access to the tables): it cannot show that the port is closed.
                (false, false) if !saw => fail(format!(
                    "the probe saw no listening sockets at all, so it cannot tell whether {port} is closed"
                )),
                (false, false) => pass(format!("nothing listens on {port}")),
                (true, false) => fail(format!("port {port} is listening, expected closed")),
                (false, true) => fail(format!("nothing listens on {port}")),
            }
        }
        CheckKind::Http {
            status,
            body_contains,
            ..
        } => {
            let Some(got) = field(stdout, "status") else {
                return fail("no output to evaluate");
            };
            let got: u16 = got.parse().unwrap_or(0);
            if got != *status {
                return fail(if got == 0 {
                    "no HTTP answer".to_string()
                } else {
                    format!("status {got}, expected {status}")
                });
            }
            if let Some(c) = body_contains {
                let body = stdout.split_once("body_begin\n").map_or("", |(_, b)| b);
                if !body.contains(c.as_str()) {
                    return fail(format!("body does not contain {c:?}"));
                }
            }
            pass(format!("status {got}"))
        }
        CheckKind::Package {
            installed, version, ..
        } => {
            let Some(found) = field(stdout, "installed") else {
                return fail("no output to evaluate");
            };
            // Linux: with no package manager to ask, "not installed" means nothing.
            if field(stdout, "manager") == Some("none") {
                return fail("no package manager (rpm or dpkg) to ask");
            }
            let found = found == "1";
            match (*installed, found) {
                (false, false) => return pass("not installed"),
                (false, true) => return fail("installed, expected absent"),
                (true, false) => return fail("not installed"),
                (true, true) => {}
            }
            let got = field(stdout, "version").unwrap_or("");
            if let Some(v) = version {
                if !got.starts_with(v.as_str()) {
                    return fail(format!("version {got}, expected {v}*"));
                }
            }
            pass(format!("installed {got}"))
        }
        CheckKind::Registry { value, equals, .. } => {
            let Some(key) = field(stdout, "key") else {
                return fail("no output to evaluate");
            };
            if key.trim() != "1" {
                return fail("no such key");
            }
            let Some(name) = value else {
                return pass("key exists");
            };
            if field(stdout, "value_missing").is_some() {
                return fail(format!("no value {name:?}"));
            }
            let got = field(stdout, "value").unwrap_or("").trim_end();
            match equals {
                Some(want) if got != want => fail(format!("{name} is {got:?}, expected {want:?}")),
                _ => pass(format!("{name} = {got:?}")),
            }
        }
        CheckKind::Hotfix { installed, .. } | CheckKind::WindowsFeature { installed, .. } => {
            let Some(found) = field(stdout, "installed") else {
                return fail("no output to evaluate");
            };
            if field(stdout, "unknown_feature").is_some() {
                return fail("no such feature");
            }
            match (found.trim() == "1", *installed) {
                (true, true) => pass("installed"),
                (false, false) => pass("not installed"),
                (true, false) => fail("installed, expected absent"),
                (false, true) => fail("not installed"),
            }
        }
    }
}

/// A Windows service probe: `status=running|stopped|...|missing`, `start_mode=auto|manual|disabled`.
fn windows_service(
    stdout: &str,
    state: Option<ServiceState>,
    start_mode: Option<StartMode>,
) -> Outcome {
    let status = field(stdout, "status").unwrap_or("").trim_end();
    if status == "missing" {
        return fail("no such service");
    }
    let mode = field(stdout, "start_mode").unwrap_or("").trim_end();
    if let Some(s) = state {
        let running = status == "running";
        let ok = match s {
            ServiceState::Running => running,
            ServiceState::Stopped => status == "stopped",
        };
        if !ok {
            return fail(format!(
                "is {status}, expected {}",
                if matches!(s, ServiceState::Running) {
                    "running"
                } else {
                    "stopped"
                }
            ));
        }
    }
    if let Some(m) = start_mode {
        let got = match mode {
            "auto" => Some(StartMode::Auto),
            "manual" => Some(StartMode::Manual),
            "disabled" => Some(StartMode::Disabled),
            _ => None,
        };
        if got != Some(m) {
            return fail(format!("start mode is {mode}, expected {m:?}").to_lowercase());
        }
    }
    pass(format!("{status}, {mode}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(exists: bool, contains: Option<&str>, mode: Option<u32>) -> CheckKind {
        CheckKind::File {
            path: "/x".into(),
            exists,
            contains: contains.map(str::to_string),
            sha256: None,
            mode,
        }
    }

    #[test]
    fn table() {
        let svc = |state, start_mode| CheckKind::Service {
            service: "buildagent".into(),
            state,
            start_mode,
        };
        let cmd = CheckKind::Command {
            command: "x".into(),
            exit_code: 0,
            stdout_contains: Some("17.".into()),
            stdout_matches: Some("^openjdk".into()),
        };
        let cases: Vec<(CheckKind, i32, &str, bool)> = vec![
            (cmd.clone(), 0, "openjdk 17.0.1", true),
            (cmd.clone(), 1, "openjdk 17.0.1", false),
            (cmd.clone(), 0, "openjdk 21", false),
            (cmd.clone(), 0, "java 17.0.1", false),
            (file(true, None, None), 0, "exists=1\n", true),
            (file(true, None, None), 0, "exists=0\n", false),
            (file(true, None, None), 0, "", false),
            (file(false, None, None), 0, "exists=0\n", true),
            (
                file(true, Some("x"), Some(0o755)),
                0,
                "exists=1\nmode=755\ncontains=1\n",
                true,
            ),
            (
                file(true, Some("x"), Some(0o755)),
                0,
                "exists=1\nmode=644\ncontains=1\n",
                false,
            ),
            (
                file(true, Some("x"), None),
                0,
                "exists=1\ncontains=0\n",
                false,
            ),
            (
                svc(Some(ServiceState::Stopped), Some(StartMode::Auto)),
                0,
                "load=loaded\nactive=inactive\nenabled=enabled\n",
                true,
            ),
            (
                svc(Some(ServiceState::Stopped), Some(StartMode::Auto)),
                0,
                "load=loaded\nactive=active\nenabled=enabled\n",
                false,
            ),
            (
                svc(Some(ServiceState::Stopped), Some(StartMode::Auto)),
                0,
                "load=loaded\nactive=inactive\nenabled=disabled\n",
                false,
            ),
            (
                svc(Some(ServiceState::Running), None),
                0,
                "load=not-found\nactive=inactive\nenabled=\n",
                false,
            ),
            (svc(Some(ServiceState::Running), None), 0, "", false),
            // Stopped, of a service that does not exist: systemd says "inactive" for it.
            (
                svc(Some(ServiceState::Stopped), None),
                0,
                "load=not-found\nactive=inactive\nenabled=\n",
                false,
            ),
            // Output without LoadState (an older probe) proves nothing.
            (
                svc(Some(ServiceState::Stopped), None),
                0,
                "active=inactive\nenabled=disabled\n",
                false,
            ),
            // A static unit is not started at boot.
            (
                svc(None, Some(StartMode::Auto)),
                0,
                "load=loaded\nactive=inactive\nenabled=static\n",
                false,
            ),
            (
                svc(None, Some(StartMode::Manual)),
                0,
                "load=loaded\nactive=inactive\nenabled=static\n",
                true,
            ),
            // Closed, when the probe saw no socket at all: unknown, not closed.
            (
                CheckKind::Port {
                    port: 9090,
                    listening: false,
                },
                0,
                "probe=port\n",
                false,
            ),
            // Not installed, where there is no package manager to ask.
            (
                CheckKind::Package {
                    package: "git".into(),
                    installed: false,
                    version: None,
                },
                0,
                "manager=none\ninstalled=0\n",
                false,
            ),
            (
                CheckKind::Port {
                    port: 22,
                    listening: true,
                },
                0,
                "probe=port\nss=0.0.0.0:22\nss=[::]:22\n",
                true,
            ),
            (
                CheckKind::Port {
                    port: 9090,
                    listening: false,
                },
                0,
                "probe=port\nss=0.0.0.0:22\n",
                true,
            ),
            (
                CheckKind::Port {
                    port: 9090,
                    listening: true,
                },
                0,
                "probe=port\nss=0.0.0.0:22\n",
                false,
            ),
            (
                CheckKind::Port {
                    port: 22,
                    listening: true,
                },
                0,
                "probe=port\nproc=00000000:0016\n",
                true,
            ),
            (
                CheckKind::Http {
                    url: "u".into(),
                    status: 200,
                    body_contains: Some("ok".into()),
                },
                0,
                "status=200\nbody_begin\nall ok\n",
                true,
            ),
            (
                CheckKind::Http {
                    url: "u".into(),
                    status: 200,
                    body_contains: None,
                },
                0,
                "status=000\nbody_begin\n",
                false,
            ),
            (
                CheckKind::Package {
                    package: "git".into(),
                    installed: true,
                    version: Some("2.4".into()),
                },
                0,
                "installed=1\nversion=2.40.1-1.amzn2023\n",
                true,
            ),
            (
                CheckKind::Package {
                    package: "git".into(),
                    installed: true,
                    version: Some("2.5".into()),
                },
                0,
                "installed=1\nversion=2.40.1\n",
                false,
            ),
            (
                CheckKind::Package {
                    package: "git".into(),
                    installed: false,
                    version: None,
                },
                0,
                "installed=0\n",
                true,
            ),
            (
                CheckKind::Hotfix {
                    hotfix: "KB1".into(),
                    installed: true,
                },
                0,
                "",
                false,
            ),
        ];
        for (i, (k, code, out, want)) in cases.iter().enumerate() {
            let o = evaluate(k, *code, out);
            assert_eq!(o.passed, *want, "case {i}: {k:?} {out:?} -> {o:?}");
        }
    }

    /// Windows probe output, and what each check makes of it; empty output never passes.
    #[test]
    fn windows_table() {
        let svc = CheckKind::Service {
            service: "AmazonSSMAgent".into(),
            state: Some(ServiceState::Running),
            start_mode: Some(StartMode::Auto),
        };
        let reg = CheckKind::Registry {
            key: "HKLM:\\X".into(),
            value: Some("ExecutionPolicy".into()),
            equals: Some("RemoteSigned".into()),
        };
        let port = CheckKind::Port {
            port: 3389,
            listening: true,
        };
        let closed = CheckKind::Port {
            port: 9090,
            listening: false,
        };
        let hotfix = CheckKind::Hotfix {
            hotfix: "KB5030216".into(),
            installed: true,
        };
        let feature = CheckKind::WindowsFeature {
            feature: "Telnet-Client".into(),
            installed: false,
        };
        let cases: Vec<(&CheckKind, &str, bool, &str)> = vec![
            (
                &svc,
                "status=running\r\nstart_mode=auto\r\n",
                true,
                "running, auto",
            ),
            (
                &svc,
                "status=stopped\nstart_mode=auto\n",
                false,
                "is stopped",
            ),
            (
                &svc,
                "status=running\nstart_mode=manual\n",
                false,
                "start mode is manual",
            ),
            (&svc, "status=missing\n", false, "no such service"),
            (&svc, "", false, "no output to evaluate"),
            (&reg, "key=1\nvalue=RemoteSigned\n", true, "RemoteSigned"),
            (
                &reg,
                "key=1\nvalue=Unrestricted\n",
                false,
                "expected \"RemoteSigned\"",
            ),
            (&reg, "key=1\nvalue_missing=1\n", false, "no value"),
            (&reg, "key=0\n", false, "no such key"),
            (&reg, "", false, "no output to evaluate"),
            (
                &port,
                "probe=port\nss=0.0.0.0:3389\nss=:::3389\n",
                true,
                "listening",
            ),
            (
                &port,
                "probe=port\nss=0.0.0.0:135\n",
                false,
                "nothing listens",
            ),
            // Closed: the probe lists every listening socket, so seeing none proves nothing.
            (
                &closed,
                "probe=port\nss=0.0.0.0:135\n",
                true,
                "nothing listens on 9090",
            ),
            (&closed, "probe=port\n", false, "cannot tell"),
            (&port, "", false, "no output to evaluate"),
            (&hotfix, "installed=1\n", true, "installed"),
            (&hotfix, "installed=0\n", false, "not installed"),
            (&hotfix, "", false, "no output to evaluate"),
            (&feature, "installed=0\n", true, "not installed"),
            (
                &feature,
                "installed=0\nunknown_feature=1\n",
                false,
                "no such feature",
            ),
            (&feature, "", false, "no output to evaluate"),
        ];
        for (kind, out, passed, needle) in cases {
            let o = evaluate(kind, 0, out);
            assert_eq!(o.passed, passed, "{kind:?} on {out:?}: {o:?}");
            assert!(o.detail.contains(needle), "{kind:?} on {out:?}: {o:?}");
        }
    }
}
