//! What a bake reports while it runs. The runner emits `BakeEvent`s; the CLI renders them (text
//! lines, JSON lines with `--log-format json`).

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
