//! The SSM Run Command communicator: no inbound port, no key pair, no password. Commands go out
//! with SendCommand (`AWS-RunShellScript` on Linux, `AWS-RunPowerShellScript` on Windows) and
//! their invocations are watched through the region's shared poller (GetCommandInvocation).
//!
//! What the API does that this module accounts for (SSM API reference, GetCommandInvocation and
//! "Understanding command statuses"):
//! - right after SendCommand the invocation may not exist yet (`InvocationDoesNotExist`);
//! - statuses Pending, InProgress, Delayed and Cancelling are not final; Success, Failed,
//!   TimedOut and Cancelled are; `ResponseCode` is the script's exit code (-1 without one);
//! - `StandardOutputContent` stops at 24,000 characters and `StandardErrorContent` at 8,000:
//!   the full output is only in S3 (`OutputS3BucketName`);
//! - exit 194 (Linux) / 3010 (Windows) makes the agent reboot the instance and run the script
//!   again; the invocation stays InProgress meanwhile, so a reboot is just more waiting here.

use std::time::{Duration, Instant};

use crate::catalog::model::Platform;
use crate::cloud::aws::{Aws, CommandSpec};
use crate::cloud::cancel::Cancel;
use crate::cloud::wait::{Poll, Wait};
use crate::cloud::{CloudError, InstanceId, Invocation};

use super::{ExecOutput, RemoteError, Stream};

/// GetCommandInvocation truncates standard output at this many characters.
pub const STDOUT_LIMIT: usize = 24_000;
/// ... and standard error at this many.
pub const STDERR_LIMIT: usize = 8_000;
/// How long an invocation may stay unknown after SendCommand before that is an error.
pub const APPEAR_GRACE: Duration = Duration::from_secs(60);
/// How long an interrupted bake waits for CancelCommand before it cleans up anyway.
const CANCEL_WAIT: Duration = Duration::from_secs(10);
/// Exit codes that ask the agent to reboot and run the script again.
pub const REBOOT_EXIT_LINUX: i32 = 194;
pub const REBOOT_EXIT_WINDOWS: i32 = 3010;

/// Where an invocation stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Not final yet: what SSM says (`InProgress`, `Delayed (Undeliverable)`, ...).
    Running(String),
    /// The script ran to an end: its exit code.
    Exited(i32),
    /// It did not run to an end: why.
    Broken(String),
}

/// The state machine: what one look at an invocation means. `None`: SSM does not know it yet.
pub fn stage(inv: Option<&Invocation>, since_send: Duration) -> Stage {
    let Some(i) = inv else {
        return if since_send < APPEAR_GRACE {
            Stage::Running("not registered yet".into())
        } else {
            Stage::Broken(format!(
                "SSM did not register the command within {}s (InvocationDoesNotExist)",
                APPEAR_GRACE.as_secs()
            ))
        };
    };
    let with_details = |s: &str| {
        if i.details.is_empty() || i.details == s {
            s.to_string()
        } else {
            format!("{s} ({})", i.details)
        }
    };
    match i.status.as_str() {
        "Pending" | "InProgress" | "Delayed" | "Cancelling" => {
            Stage::Running(with_details(&i.status))
        }
        "Success" => Stage::Exited(i.response_code.max(0)),
        "Failed" if i.response_code >= 0 && i.details != "Undeliverable" => {
            Stage::Exited(i.response_code)
        }
        "Failed" => Stage::Broken(format!(
            "the command failed without an exit code: {}",
            with_details("Failed")
        )),
        "TimedOut" => Stage::Broken(format!(
            "SSM timed the command out: {}",
            with_details("TimedOut")
        )),
        "Cancelled" => Stage::Broken(format!(
            "the command was cancelled outside bakery: {}",
            with_details("Cancelled")
        )),
        other => Stage::Broken(format!("unknown command status {other:?}")),
    }
}

/// Output as bakery reports it: the API's copy, and whether the API cut it short.
pub fn output_of(inv: &Invocation) -> ExecOutput {
    let stdout_cut = inv.stdout.chars().count() >= STDOUT_LIMIT;
    let stderr_cut = inv.stderr.chars().count() >= STDERR_LIMIT;
    ExecOutput {
        exit_code: inv.response_code,
        stdout: inv.stdout.clone(),
        stderr: inv.stderr.clone(),
        truncated: stdout_cut || stderr_cut,
    }
}

/// A note for the step log when output was cut short and no bucket holds the rest.
pub fn truncation_note(out: &ExecOutput) -> Option<String> {
    out.truncated.then(|| {
        format!("output truncated by SSM (stdout keeps {STDOUT_LIMIT}, stderr {STDERR_LIMIT} characters); set s3_bucket in the target for the full output")
    })
}

/// The object key of an S3 URL of `bucket` (path style `https://s3.<region>.amazonaws.com/
/// <bucket>/<key>` or virtual-hosted `https://<bucket>.s3.<region>.amazonaws.com/<key>`).
pub fn key_of_url(url: &str, bucket: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (host, path) = rest.split_once('/')?;
    let key = if host.starts_with(&format!("{bucket}.")) {
        path
    } else {
        path.strip_prefix(&format!("{bucket}/"))?
    };
    (!key.is_empty()).then(|| key.to_string())
}

/// One build instance reached through SSM.
pub struct Ssm {
    pub aws: Aws,
    pub instance: InstanceId,
    pub platform: Platform,
    /// The target's bucket and this bake's prefix in it: full command output goes under
    /// `<prefix>/output`, files too large to inline under `<prefix>/files`.
    pub s3: Option<(String, String)>,
    pub bake_id: String,
    /// The command sent and not yet finished (for CancelCommand when the bake is interrupted
    /// while it runs).
    pub in_flight: std::sync::Mutex<Option<String>>,
}

impl Ssm {
    /// Waits (bounded) until Systems Manager lists the instance as `Online`.
    pub async fn wait_online(&self, timeout: Duration, cancel: &Cancel) -> Result<(), CloudError> {
        Wait::polled(
            format!(
                "instance {} in Systems Manager ({})",
                self.instance, self.aws.region
            ),
            "Online",
            timeout,
        )
        .until(cancel, || async {
            Ok(match self.aws.poll_node(&self.instance).await? {
                Some(n) if n.ping_status == "Online" => Poll::Ready(()),
                Some(n) => Poll::Pending {
                    state: n.ping_status,
                    reason: None,
                },
                None => Poll::Pending {
                    state: "not registered".into(),
                    reason: Some("the SSM agent has not checked in yet".into()),
                },
            })
        })
        .await
    }

    fn document(&self) -> &'static str {
        match self.platform {
            Platform::Windows => "AWS-RunPowerShellScript",
            Platform::Linux => "AWS-RunShellScript",
        }
    }

    /// Sends `script` and returns the command id (the invocation is then watched by `finish`).
    pub async fn send(
        &self,
        script: &str,
        timeout: Duration,
        comment: &str,
    ) -> Result<String, RemoteError> {
        let spec = CommandSpec {
            document: self.document(),
            commands: vec![script.to_string()],
            execution_timeout: timeout,
            delivery_timeout: Duration::from_secs(10 * 60),
            comment: format!("bakery {} {comment}", self.bake_id),
            output_s3: self
                .s3
                .as_ref()
                .map(|(b, p)| (b.clone(), format!("{p}/output"))),
        };
        let id = self
            .aws
            .send_command(&self.instance, &spec)
            .await
            .map_err(|e| ssm_error("SendCommand", e))?;
        if let Ok(mut f) = self.in_flight.lock() {
            *f = Some(id.clone());
        }
        Ok(id)
    }

    /// Cancels the command still running, if any (best effort, bounded).
    pub async fn cancel_in_flight(&self) {
        let id = self.in_flight.lock().ok().and_then(|mut f| f.take());
        if let Some(id) = id {
            self.cancel_command(&id).await;
        }
    }

    /// Watches command `id` until it ends; output lines go to `on_line` once it has.
    pub async fn finish(
        &self,
        id: &str,
        timeout: Duration,
        cancel: &Cancel,
        on_line: &mut (dyn FnMut(Stream, &str) + Send),
    ) -> Result<ExecOutput, RemoteError> {
        let r = self.watch(id, timeout, cancel, on_line).await;
        if !matches!(r, Err(RemoteError::Cancelled)) {
            if let Ok(mut f) = self.in_flight.lock() {
                f.take_if(|c| c == id);
            }
        }
        r
    }

    async fn watch(
        &self,
        id: &str,
        timeout: Duration,
        cancel: &Cancel,
        on_line: &mut (dyn FnMut(Stream, &str) + Send),
    ) -> Result<ExecOutput, RemoteError> {
        let sent = Instant::now();
        // The agent enforces executionTimeout; the delivery wait comes on top.
        let deadline = timeout + Duration::from_secs(10 * 60);
        let mut last = String::new();
        loop {
            // On cancellation the command stays in flight: whoever owns the connection cancels it
            // (the runner does, when it cleans up; a future dropped here could not finish that).
            if cancel.is_cancelled() {
                return Err(RemoteError::Cancelled);
            }
            let inv = tokio::select! {
                r = self.aws.poll_invocation(id, &self.instance) => {
                    r.map_err(|e| ssm_error("GetCommandInvocation", e))?
                }
                () = cancel.cancelled() => return Err(RemoteError::Cancelled),
            };
            match stage(inv.as_ref(), sent.elapsed()) {
                Stage::Running(s) => {
                    if s != last {
                        tracing::debug!(command = id, status = %s, "command");
                        last = s;
                    }
                    if sent.elapsed() > deadline {
                        return Err(RemoteError::Ssm {
                            op: "GetCommandInvocation",
                            message: format!(
                                "command {id} still {last} after {}s",
                                sent.elapsed().as_secs()
                            ),
                        });
                    }
                }
                Stage::Exited(_) => {
                    let inv = inv.unwrap_or_default();
                    let mut out = output_of(&inv);
                    if out.truncated {
                        self.full_output(id, &inv, &mut out).await;
                    }
                    for l in out.stdout.lines() {
                        on_line(Stream::Stdout, l);
                    }
                    for l in out.stderr.lines() {
                        on_line(Stream::Stderr, l);
                    }
                    if let Some(n) = truncation_note(&out) {
                        on_line(Stream::Stderr, &n);
                    }
                    return Ok(out);
                }
                Stage::Broken(why) => {
                    return Err(RemoteError::Ssm {
                        op: "command",
                        message: format!("command {id}: {why}"),
                    })
                }
            }
            // No sleep here: the next look waits for the shared poller's next tick.
        }
    }

    /// Best effort, bounded: the agent stops the command (the instance is about to go anyway,
    /// but a kept instance should not carry on with a cancelled step).
    async fn cancel_command(&self, id: &str) {
        let r =
            tokio::time::timeout(CANCEL_WAIT, self.aws.cancel_command(id, &self.instance)).await;
        match r {
            Ok(Ok(())) => tracing::info!(command = id, "command cancelled"),
            Ok(Err(e)) => tracing::warn!(command = id, error = %e, "CancelCommand failed"),
            Err(_) => tracing::warn!(command = id, "CancelCommand did not answer in time"),
        }
    }

    /// Replaces API-truncated output with the full copy the command wrote to S3.
    async fn full_output(&self, id: &str, inv: &Invocation, out: &mut ExecOutput) {
        let Some((bucket, prefix)) = &self.s3 else {
            return;
        };
        let plugin = match self.platform {
            Platform::Windows => "awsrunPowerShellScript",
            Platform::Linux => "awsrunShellScript",
        };
        let mut complete = true;
        for (url, name, field) in [
            (&inv.stdout_url, "stdout", &mut out.stdout),
            (&inv.stderr_url, "stderr", &mut out.stderr),
        ] {
            let key = url
                .as_deref()
                .and_then(|u| key_of_url(u, bucket))
                .unwrap_or_else(|| {
                    format!(
                        "{prefix}/output/{id}/{}/{plugin}/0.{plugin}/{name}",
                        self.instance
                    )
                });
            match self.aws.get_object(bucket, &key).await {
                Ok(Some(bytes)) => *field = String::from_utf8_lossy(&bytes).into_owned(),
                // No object: the stream was empty or is complete in the API's copy.
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, key, "full command output not readable from S3");
                    complete = false;
                }
            }
        }
        out.truncated = !complete
            && (out.stdout.chars().count() >= STDOUT_LIMIT
                || out.stderr.chars().count() >= STDERR_LIMIT);
    }

    /// Runs `script` to its end.
    pub async fn exec(
        &self,
        script: &str,
        timeout: Duration,
        cancel: &Cancel,
        on_line: &mut (dyn FnMut(Stream, &str) + Send),
    ) -> Result<ExecOutput, RemoteError> {
        let first = script.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let id = self.send(script, timeout, first).await?;
        self.finish(&id, timeout, cancel, on_line).await
    }
}

fn ssm_error(op: &'static str, e: CloudError) -> RemoteError {
    match e {
        CloudError::Cancelled => RemoteError::Cancelled,
        e => RemoteError::Ssm {
            op,
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(status: &str, details: &str, code: i32) -> Invocation {
        Invocation {
            status: status.into(),
            details: details.into(),
            response_code: code,
            ..Default::default()
        }
    }

    #[test]
    fn status_state_machine() {
        let s = Duration::from_secs(1);
        let cases = [
            (
                inv("Pending", "Pending", -1),
                Stage::Running("Pending".into()),
            ),
            (
                inv("InProgress", "InProgress", -1),
                Stage::Running("InProgress".into()),
            ),
            (
                inv("Delayed", "Undeliverable", -1),
                Stage::Running("Delayed (Undeliverable)".into()),
            ),
            (
                inv("Cancelling", "", -1),
                Stage::Running("Cancelling".into()),
            ),
            (inv("Success", "Success", 0), Stage::Exited(0)),
            (inv("Failed", "Failed", 7), Stage::Exited(7)),
        ];
        for (i, want) in cases {
            assert_eq!(stage(Some(&i), s), want, "{i:?}");
        }
        for (i, needle) in [
            (inv("Failed", "Undeliverable", -1), "Undeliverable"),
            (inv("Failed", "Failed", -1), "without an exit code"),
            (
                inv("TimedOut", "ExecutionTimedOut", -1),
                "ExecutionTimedOut",
            ),
            (inv("TimedOut", "DeliveryTimedOut", -1), "DeliveryTimedOut"),
            (
                inv("Cancelled", "Cancelled", -1),
                "cancelled outside bakery",
            ),
            (inv("Exploded", "", -1), "unknown command status"),
        ] {
            match stage(Some(&i), s) {
                Stage::Broken(why) => assert!(why.contains(needle), "{why}"),
                other => panic!("{i:?} -> {other:?}"),
            }
        }
    }

    #[test]
    fn an_unknown_invocation_is_pending_for_a_grace_period_only() {
        assert_eq!(
            stage(None, Duration::from_secs(2)),
            Stage::Running("not registered yet".into())
        );
        assert!(
            matches!(stage(None, APPEAR_GRACE), Stage::Broken(w) if w.contains("InvocationDoesNotExist"))
        );
    }

    #[test]
    fn reboot_exit_codes_keep_the_invocation_running() {
        // The agent reboots and re-runs the script: SSM keeps reporting InProgress; bakery only
        // ever sees the final run's exit code.
        let rebooting = inv("InProgress", "InProgress", REBOOT_EXIT_LINUX);
        assert_eq!(
            stage(Some(&rebooting), Duration::from_secs(5)),
            Stage::Running("InProgress".into())
        );
    }

    #[test]
    fn output_urls_name_their_key() {
        assert_eq!(
            key_of_url("https://s3.eu-west-1.amazonaws.com/b/bakery/x/output/c/i/awsrunShellScript/0.awsrunShellScript/stdout", "b").as_deref(),
            Some("bakery/x/output/c/i/awsrunShellScript/0.awsrunShellScript/stdout")
        );
        assert_eq!(
            key_of_url("https://b.s3.amazonaws.com/k/stdout", "b").as_deref(),
            Some("k/stdout")
        );
        assert_eq!(key_of_url("https://s3.amazonaws.com/other/k", "b"), None);
        assert_eq!(key_of_url("", "b"), None);
    }

    #[test]
    fn truncation_is_detected_at_the_api_limits() {
        let mut i = inv("Success", "Success", 0);
        i.stdout = "x".repeat(STDOUT_LIMIT - 1);
        assert!(!output_of(&i).truncated);
        i.stdout = "x".repeat(STDOUT_LIMIT);
        let o = output_of(&i);
        assert!(o.truncated);
        assert!(truncation_note(&o).unwrap().contains("s3_bucket"));
        let mut i = inv("Failed", "Failed", 1);
        i.stderr = "é".repeat(STDERR_LIMIT);
        assert!(output_of(&i).truncated, "characters, not bytes");
        i.stderr = "é".repeat(STDERR_LIMIT - 1);
        assert!(!output_of(&i).truncated);
    }
}
