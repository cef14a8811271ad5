//! Test harness: fixture projects, and a sandbox (the AWS emulator and a private sshd on free
//! loopback ports, started by scripts/sandbox-host) per test, stopped when dropped.
#![allow(dead_code, unused_imports)]

pub mod fixtures;
pub mod sandbox;

pub use fixtures::*;
