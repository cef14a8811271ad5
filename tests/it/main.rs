//! The one integration test binary: a module per capability.
mod bake;
mod catalog_errors;
mod cli;
mod consumers;
mod crash;
mod fingerprint;
mod fresh;
mod fuzz;
mod many;
mod plan;
mod registry;
mod ssm;
#[path = "../support/mod.rs"]
mod support;
mod teamcity;
mod terminal;
