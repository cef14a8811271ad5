//! Test harness: fixture projects, and a sandbox (the AWS emulator and a private sshd on free
//! loopback ports, started by scripts/sandbox-host) per test, stopped when dropped.
#![allow(dead_code, unused_imports)]

pub mod fixtures;
pub mod sandbox;

pub use fixtures::*;

/// A process's output as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// A runtime for the SDK calls tests make.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

/// The first bake id in a stream of JSON event lines.
pub fn bake_id_of(json_lines: &str) -> String {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["bake_id"].as_str().map(str::to_string))
        .expect("a bake_id in the event stream")
}
