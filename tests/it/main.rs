//! The one integration test binary: a module per capability.
mod catalog_errors;
mod cli;
mod fingerprint;
mod support;
