//! Linux probe commands: one shell command per check whose output the pure evaluator reads.
//! Probes print `key=value` lines (except `command`, whose own output is evaluated).

use super::CheckKind;
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
            format!("echo \"active=$(systemctl is-active {q} 2>/dev/null)\"; echo \"enabled=$(systemctl is-enabled {q} 2>/dev/null)\"")
        }
        CheckKind::Port { .. } => {
            // Listening TCP sockets; ss when present, the kernel tables otherwise.
            "if command -v ss >/dev/null 2>&1; then ss -Hltn | awk '{print \"ss=\" $4}'; else cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk 'NR>1 && $4==\"0A\" {print \"proc=\" $2}'; fi".to_string()
        }
        CheckKind::Http { url, .. } => format!(
            "b=$(mktemp); code=$(curl -s -o \"$b\" -w '%{{http_code}}' --max-time 30 {} || true); echo \"status=$code\"; echo body_begin; cat \"$b\"; rm -f \"$b\"",
            sh_path(url)
        ),
        CheckKind::Package { package, .. } => {
            let q = sh_quote(package);
            format!(
                "if command -v rpm >/dev/null 2>&1 && v=$(rpm -q --qf '%{{VERSION}}-%{{RELEASE}}' {q} 2>/dev/null); then echo installed=1; echo \"version=$v\"; \
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
}
