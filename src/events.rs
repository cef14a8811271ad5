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
    /// The last event of a bake: `baked`, `failed`, `checks_failed` or `cancelled`.
    Finished {
        bake_id: String,
        image: String,
        outcome: &'static str,
    },
}

/// Where events go. Cheap to clone.
#[derive(Clone)]
pub struct Events(Arc<dyn Fn(&BakeEvent) + Send + Sync>);

impl Events {
    pub fn new(f: impl Fn(&BakeEvent) + Send + Sync + 'static) -> Self {
        Events(Arc::new(f))
    }

    /// Drops every event (library use, tests).
    pub fn none() -> Self {
        Events(Arc::new(|_| {}))
    }

    pub fn emit(&self, e: BakeEvent) {
        (self.0)(&e);
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
                },
                r#"{"event":"finished","bake_id":"bk-1","image":"img","outcome":"baked"}"#,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(serde_json::to_string(&e).unwrap(), want);
        }
    }
}
