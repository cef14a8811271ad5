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

/// The stdout of a command that must have succeeded (exit 0), or a panic showing both streams.
pub fn ok(out: std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A parameter's value as `ssm`'s account reads it, `None` when it does not exist.
pub async fn parameter(ssm: &aws_sdk_ssm::Client, name: &str) -> Option<String> {
    match ssm.get_parameter().name(name).send().await {
        Ok(p) => p.parameter().and_then(|p| p.value()).map(str::to_string),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_parameter_not_found()) =>
        {
            None
        }
        Err(e) => panic!("GetParameter {name}: {e:?}"),
    }
}

/// A parameter of the sandbox's own account in `region`.
pub fn param(sb: &sandbox::Sandbox, region: &str, name: &str) -> Option<String> {
    rt().block_on(async { parameter(&sb.clients_in(region).await.1, name).await })
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
