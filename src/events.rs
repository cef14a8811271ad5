//! What a bake reports while it runs. The runner emits `BakeEvent`s; the CLI renders them (text
//! lines; JSON lines with `--log-format json`, one object per event with an `event` field naming
//! the variant in snake_case and the variant's fields, schema pinned by the test below; TeamCity
//! service messages when `TEAMCITY_VERSION` is set).

use std::sync::Arc;

use serde::Serialize;

use crate::checks::report::CheckResult;
use crate::remote::Stream;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BakeEvent {
    Phase {
        bake_id: String,
        image: String,
        phase: &'static str,
    },
    Step {
        bake_id: String,
        index: usize,
        total: usize,
        recipe: String,
        name: String,
    },
    Output {
        bake_id: String,
        stream: Stream,
        line: String,
    },
    Check {
        bake_id: String,
        result: CheckResult,
    },
    Created {
        bake_id: String,
        resource: String,
    },
    Removed {
        bake_id: String,
        resource: String,
    },
    Warning {
        bake_id: String,
        message: String,
    },
    /// What a wait is waiting for, each time that changes (an instance finishing its first
    /// boot, a restart).
    Waiting {
        bake_id: String,
        what: String,
    },
    /// The last event of a bake: `baked`, `failed`, `checks_failed`, `invalid` or `cancelled`,
    /// how long it took, and on a failure its stable code and hash.
    Finished {
        bake_id: String,
        image: String,
        outcome: &'static str,
        seconds: f64,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        failure: Option<FailureInfo>,
    },
}

/// What kind of failure ended a bake: a stable code an alert can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// A check failed (nothing was registered).
    CheckFailed,
    /// A provisioning step failed or exited non-zero.
    StepFailed,
    /// AWS throttled the requests beyond the SDK's retries.
    AwsThrottled,
    /// No capacity for the instance types (or none offered in the zone).
    Capacity,
    /// Something did not happen within its timeout.
    Timeout,
    /// SIGINT, SIGTERM or SIGHUP.
    Interrupted,
    /// The bake cannot work as configured (found in preflight, exit 2).
    Invalid,
    /// The build instance could not be reached (SSH or SSM).
    ConnectFailed,
    /// An AWS call failed otherwise.
    AwsError,
    /// Anything else.
    Failed,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::CheckFailed => "check_failed",
            FailureCode::StepFailed => "step_failed",
            FailureCode::AwsThrottled => "aws_throttled",
            FailureCode::Capacity => "capacity",
            FailureCode::Timeout => "timeout",
            FailureCode::Interrupted => "interrupted",
            FailureCode::Invalid => "invalid",
            FailureCode::ConnectFailed => "connect_failed",
            FailureCode::AwsError => "aws_error",
            FailureCode::Failed => "failed",
        }
    }

    /// The code of an AWS API error code: throttling, capacity, or any other AWS error.
    pub fn of_aws_code(code: &str) -> FailureCode {
        const THROTTLED: &[&str] = &[
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
            "TooManyRequestsException",
            "SlowDown",
        ];
        const CAPACITY: &[&str] = &[
            "InsufficientInstanceCapacity",
            "InsufficientCapacity",
            "InsufficientHostCapacity",
            "InsufficientReservedInstanceCapacity",
            "InstanceLimitExceeded",
            "VcpuLimitExceeded",
            "Unsupported",
        ];
        let code = code
            .trim_start_matches("Server.")
            .trim_start_matches("Client.");
        if THROTTLED.contains(&code) {
            FailureCode::AwsThrottled
        } else if CAPACITY.contains(&code) {
            FailureCode::Capacity
        } else {
            FailureCode::AwsError
        }
    }

    /// The code of a failure of `outcome` in `phase`, given the code its error carried (an AWS
    /// error's, a timeout, a step's exit), if it carried one. The outcome wins (checks,
    /// interrupts, invalid input); then the carried code; then the phase.
    pub fn of(outcome: &str, phase: &str, carried: Option<FailureCode>) -> FailureCode {
        match outcome {
            "checks_failed" => return FailureCode::CheckFailed,
            "cancelled" => return FailureCode::Interrupted,
            "invalid" => return FailureCode::Invalid,
            _ => {}
        }
        carried.unwrap_or(match phase {
            "provision" => FailureCode::StepFailed,
            "connect" => FailureCode::ConnectFailed,
            _ => FailureCode::Failed,
        })
    }
}

/// The failure fields of a `finished` event.
#[derive(Debug, Clone, Serialize)]
pub struct FailureInfo {
    pub code: FailureCode,
    /// 12 hex digits of sha256 over the code and the message with every word that holds a digit
    /// (ids, counts, times) replaced by `#`: the same kind of failure hashes the same across
    /// bakes, a new kind differently.
    pub error_hash: String,
    /// The phase that failed.
    pub phase: &'static str,
    pub error: String,
}

impl FailureInfo {
    /// The failure of bake `bake_id` (its id is not part of the hash: it may hold no digit).
    pub fn new(
        bake_id: &str,
        outcome: &str,
        phase: &'static str,
        cause: &str,
        carried: Option<FailureCode>,
    ) -> FailureInfo {
        let code = FailureCode::of(outcome, phase, carried);
        let masked = if bake_id.is_empty() {
            cause.to_string()
        } else {
            cause.replace(bake_id, "#")
        };
        FailureInfo {
            code,
            error_hash: error_hash(code, phase, &masked),
            phase,
            error: cause.to_string(),
        }
    }
}

/// The message with ids and numbers masked (see `FailureInfo::error_hash`).
pub fn normalise(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in message.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

pub fn error_hash(code: FailureCode, phase: &str, message: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(code.as_str().as_bytes());
    h.update(b"\n");
    h.update(phase.as_bytes());
    h.update(b"\n");
    h.update(normalise(message).as_bytes());
    hex::encode(h.finalize())[..12].to_string()
}

/// Version of the JSON event and log line format (`schema` in every line). 2: every line has
/// `timestamp`, `level` and `app`; every bake event `image`; `finished` has `seconds` and, on a
/// failure, `code`, `error_hash`, `phase` and `error`.
pub const JSON_SCHEMA_VERSION: u32 = 2;

impl BakeEvent {
    /// The bake this event belongs to.
    pub fn bake_id(&self) -> &str {
        match self {
            BakeEvent::Phase { bake_id, .. }
            | BakeEvent::Step { bake_id, .. }
            | BakeEvent::Output { bake_id, .. }
            | BakeEvent::Check { bake_id, .. }
            | BakeEvent::Created { bake_id, .. }
            | BakeEvent::Removed { bake_id, .. }
            | BakeEvent::Warning { bake_id, .. }
            | BakeEvent::Waiting { bake_id, .. }
            | BakeEvent::Finished { bake_id, .. } => bake_id,
        }
    }

    /// The log level of the event: `error` for a failed bake or check, `warn` for a warning,
    /// `info` otherwise.
    pub fn level(&self) -> &'static str {
        match self {
            BakeEvent::Finished {
                failure: Some(_), ..
            } => "error",
            BakeEvent::Check { result, .. } if !result.passed => "error",
            BakeEvent::Warning { .. } => "warn",
            _ => "info",
        }
    }

    /// One JSON line: the envelope (`schema`, `timestamp` RFC 3339 UTC with milliseconds,
    /// `level`, `app`, `image`) then the event's own fields, `image` taken from the bake when
    /// the event does not carry it.
    pub fn json_line(&self, at: std::time::SystemTime, image: Option<&str>) -> String {
        let body = serde_json::to_string(self).unwrap_or_default();
        let mut line = format!(
            "{{\"schema\":{JSON_SCHEMA_VERSION},\"timestamp\":\"{}\",\"level\":\"{}\",\"app\":\"bakery\",",
            humantime::format_rfc3339_millis(at),
            self.level()
        );
        let carries_image = matches!(self, BakeEvent::Phase { .. } | BakeEvent::Finished { .. });
        if let (false, Some(i)) = (carries_image, image) {
            line.push_str("\"image\":");
            line.push_str(&serde_json::to_string(i).unwrap_or_default());
            line.push(',');
        }
        line.push_str(body.strip_prefix('{').unwrap_or(&body));
        line
    }
}

/// What receives events: the event and its bake's image.
type Sink = Arc<dyn Fn(&BakeEvent, Option<&str>) + Send + Sync>;

/// Where events go. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    sink: Sink,
    /// Bake id -> image, from each bake's first event (a phase): the one place that knows which
    /// image an event without an `image` field belongs to.
    images: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

impl Events {
    /// A sink that gets every event with its bake's image (when known).
    pub fn new(f: impl Fn(&BakeEvent, Option<&str>) + Send + Sync + 'static) -> Self {
        Events {
            sink: Arc::new(f),
            images: Arc::default(),
        }
    }

    /// Drops every event (library use, tests).
    pub fn none() -> Self {
        Events::new(|_, _| {})
    }

    pub fn emit(&self, e: BakeEvent) {
        let image = match &e {
            BakeEvent::Phase { bake_id, image, .. }
            | BakeEvent::Finished { bake_id, image, .. } => {
                if let Ok(mut m) = self.images.lock() {
                    m.entry(bake_id.clone()).or_insert_with(|| image.clone());
                }
                Some(image.clone())
            }
            _ => self
                .images
                .lock()
                .ok()
                .and_then(|m| m.get(e.bake_id()).cloned()),
        };
        (self.sink)(&e, image.as_deref());
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::report::CheckResult;

    /// The JSON event schema is a contract for log collectors: these are its exact shapes.
    #[test]
    fn json_event_schema() {
        let b = || "bk-1".to_string();
        let cases: Vec<(BakeEvent, &str)> = vec![
            (
                BakeEvent::Phase {
                    bake_id: b(),
                    image: "img".into(),
                    phase: "launch",
                },
                r#"{"event":"phase","bake_id":"bk-1","image":"img","phase":"launch"}"#,
            ),
            (
                BakeEvent::Step {
                    bake_id: b(),
                    index: 2,
                    total: 5,
                    recipe: "jdk".into(),
                    name: "Install".into(),
                },
                r#"{"event":"step","bake_id":"bk-1","index":2,"total":5,"recipe":"jdk","name":"Install"}"#,
            ),
            (
                BakeEvent::Output {
                    bake_id: b(),
                    stream: Stream::Stderr,
                    line: "x".into(),
                },
                r#"{"event":"output","bake_id":"bk-1","stream":"stderr","line":"x"}"#,
            ),
            (
                BakeEvent::Check {
                    bake_id: b(),
                    result: CheckResult {
                        name: "n".into(),
                        origin: "image".into(),
                        kind: "file".into(),
                        passed: true,
                        detail: "exists".into(),
                        duration: std::time::Duration::from_millis(1500),
                    },
                },
                r#"{"event":"check","bake_id":"bk-1","result":{"name":"n","origin":"image","kind":"file","passed":true,"detail":"exists","duration":1.5}}"#,
            ),
            (
                BakeEvent::Created {
                    bake_id: b(),
                    resource: "instance i-1".into(),
                },
                r#"{"event":"created","bake_id":"bk-1","resource":"instance i-1"}"#,
            ),
            (
                BakeEvent::Removed {
                    bake_id: b(),
                    resource: "instance i-1".into(),
                },
                r#"{"event":"removed","bake_id":"bk-1","resource":"instance i-1"}"#,
            ),
            (
                BakeEvent::Warning {
                    bake_id: b(),
                    message: "m".into(),
                },
                r#"{"event":"warning","bake_id":"bk-1","message":"m"}"#,
            ),
            (
                BakeEvent::Waiting {
                    bake_id: b(),
                    what: "w".into(),
                },
                r#"{"event":"waiting","bake_id":"bk-1","what":"w"}"#,
            ),
            (
                BakeEvent::Finished {
                    bake_id: b(),
                    image: "img".into(),
                    outcome: "baked",
                    seconds: 61.5,
                    failure: None,
                },
                r#"{"event":"finished","bake_id":"bk-1","image":"img","outcome":"baked","seconds":61.5}"#,
            ),
            (
                BakeEvent::Finished {
                    bake_id: b(),
                    image: "img".into(),
                    outcome: "checks_failed",
                    seconds: 2.0,
                    failure: Some(FailureInfo {
                        code: FailureCode::CheckFailed,
                        error_hash: "0123456789ab".into(),
                        phase: "verify",
                        error: "1 of 6 checks failed".into(),
                    }),
                },
                r#"{"event":"finished","bake_id":"bk-1","image":"img","outcome":"checks_failed","seconds":2.0,"code":"check_failed","error_hash":"0123456789ab","phase":"verify","error":"1 of 6 checks failed"}"#,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(serde_json::to_string(&e).unwrap(), want);
        }
    }

    /// Every line starts with the envelope, in this order.
    #[test]
    fn a_json_line_has_the_envelope_and_the_image() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_790_000_000_123);
        let e = BakeEvent::Warning {
            bake_id: "bk-1".into(),
            message: "m".into(),
        };
        assert_eq!(
            e.json_line(at, Some("img")),
            r#"{"schema":2,"timestamp":"2026-09-21T14:13:20.123Z","level":"warn","app":"bakery","image":"img","event":"warning","bake_id":"bk-1","message":"m"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&e.json_line(at, None)).unwrap();
        assert_eq!(v["event"], "warning");
        assert!(v.get("image").is_none());
    }

    #[test]
    fn failures_get_a_stable_code_and_a_hash_blind_to_ids_and_numbers() {
        use FailureCode::*;
        // The outcome wins over what the error carried; the phase decides when it carried none.
        for (outcome, phase, carried, want) in [
            ("checks_failed", "verify", Some(Timeout), CheckFailed),
            ("cancelled", "provision", Some(StepFailed), Interrupted),
            ("invalid", "preflight", Some(AwsError), Invalid),
            ("failed", "launch", Some(Capacity), Capacity),
            ("failed", "provision", Some(Timeout), Timeout),
            ("failed", "provision", None, StepFailed),
            ("failed", "connect", None, ConnectFailed),
            ("failed", "publish", None, Failed),
        ] {
            assert_eq!(FailureCode::of(outcome, phase, carried), want);
        }
        for (aws, want) in [
            ("InsufficientInstanceCapacity", Capacity),
            ("Server.InsufficientInstanceCapacity", Capacity),
            ("RequestLimitExceeded", AwsThrottled),
            ("ThrottlingException", AwsThrottled),
            ("UnauthorizedOperation", AwsError),
        ] {
            assert_eq!(FailureCode::of_aws_code(aws), want, "{aws}");
        }
        let a = FailureInfo::new(
            "bk-tabcxy-deadbeef",
            "failed",
            "provision",
            "step 2/5 jdk / Install exited 1 on i-0abc123 in /tmp/bk-tabcxy-deadbeef",
            Some(StepFailed),
        );
        let b = FailureInfo::new(
            "bk-uvwxyz-abcdefab",
            "failed",
            "provision",
            "step 3/5 jdk / Install exited 127 on i-0fff999 in /tmp/bk-uvwxyz-abcdefab",
            Some(StepFailed),
        );
        let c = FailureInfo::new(
            "bk-tabcxy-deadbeef",
            "failed",
            "provision",
            "step 2/5 git / Clone exited 1 on i-0abc123 in /tmp/bk-tabcxy-deadbeef",
            Some(StepFailed),
        );
        assert_eq!(a.error_hash, b.error_hash);
        assert_ne!(a.error_hash, c.error_hash);
        assert_eq!(a.error_hash.len(), 12);
        assert_eq!(
            normalise("i-0abc12 took 3.5s (bk-x1-2f)"),
            "i-# took #.# (bk-#-#)"
        );
    }
}
