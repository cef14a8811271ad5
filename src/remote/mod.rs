//! Running commands and uploading files on the build instance: `ssh` (russh) and `ssm` (Run
//! Command) communicators; `powershell` builds what runs on Windows.

pub mod powershell;
pub mod ssh;
pub mod ssm;

/// A connection to the build instance, over either communicator.
pub enum Conn {
    Ssh(ssh::Ssh),
    Ssm(ssm::Ssm),
}

impl Conn {
    /// Runs `command` (a shell command line over SSH; a whole script over SSM) to its end,
    /// bounded by `timeout` (SSM: the agent's `executionTimeout`) and cancellation.
    pub async fn exec(
        &self,
        command: &str,
        timeout: std::time::Duration,
        cancel: &crate::cloud::cancel::Cancel,
        on_line: &mut (dyn FnMut(Stream, &str) + Send),
    ) -> Result<ExecOutput, ExecError> {
        match self {
            Conn::Ssh(s) => tokio::select! {
                r = tokio::time::timeout(timeout, s.exec(command, on_line)) => match r {
                    Ok(r) => Ok(r?),
                    Err(_) => Err(ExecError::Timeout(timeout)),
                },
                () = cancel.cancelled() => Err(ExecError::Remote(RemoteError::Cancelled)),
            },
            Conn::Ssm(s) => Ok(s.exec(command, timeout, cancel, on_line).await?),
        }
    }

    pub fn is_ssm(&self) -> bool {
        matches!(self, Conn::Ssm(_))
    }

    pub async fn close(self) {
        if let Conn::Ssh(s) = self {
            s.close().await;
        }
    }
}

/// Why a command did not produce an exit code.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("timed out after {}s", .0.as_secs())]
    Timeout(std::time::Duration),
}

/// Which stream a line of remote output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What a command left behind: its exit code and (bounded) output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Output beyond `MAX_CAPTURE` was dropped from the captured copy (it was still streamed).
    pub truncated: bool,
}

/// Bytes of stdout and stderr kept per command: enough for any probe and the tail of a failing
/// step; everything is streamed as events anyway.
pub const MAX_CAPTURE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("could not connect to {addr} within {}s: {last}", waited.as_secs())]
    Connect {
        addr: String,
        last: String,
        waited: std::time::Duration,
    },
    #[error("{addr}: the server refused key authentication for user {user}")]
    Auth { addr: String, user: String },
    #[error("{addr}: the host key changed during the bake (pinned {pinned}, now {seen})")]
    HostKeyChanged {
        addr: String,
        pinned: String,
        seen: String,
    },
    #[error("ssh {op} on {addr}: {message}")]
    Ssh {
        op: &'static str,
        addr: String,
        message: String,
    },
    #[error("sftp {op} {path} on {addr}: {message}")]
    Sftp {
        op: &'static str,
        path: String,
        addr: String,
        message: String,
    },
    #[error("ssm {op}: {message}")]
    Ssm { op: &'static str, message: String },
    #[error("`{command}` ended without an exit status (connection lost?)")]
    NoExitStatus { command: String },
    #[error("cancelled")]
    Cancelled,
}

/// Quotes `s` for a POSIX shell (single quotes).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Quotes a path for a POSIX shell: single quotes, except that a leading `$BAKERY_WORKDIR`
/// (what `{{ workdir }}` renders to) stays a variable reference. Nothing else expands, so a
/// parameter value can never become a command substitution.
pub fn sh_path(s: &str) -> String {
    for prefix in ["$BAKERY_WORKDIR", "${BAKERY_WORKDIR}"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            return if rest.is_empty() {
                "\"$BAKERY_WORKDIR\"".to_string()
            } else {
                format!("\"$BAKERY_WORKDIR\"{}", sh_quote(rest))
            };
        }
    }
    sh_quote(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_path("$BAKERY_WORKDIR/a b"), r#""$BAKERY_WORKDIR"'/a b'"#);
        assert_eq!(sh_path("${BAKERY_WORKDIR}"), r#""$BAKERY_WORKDIR""#);
        assert_eq!(sh_path("/opt/$(reboot)`x`"), r#"'/opt/$(reboot)`x`'"#);
    }
}
