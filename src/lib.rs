//! bakery: bakes golden machine images declaratively.
//!
//! `catalog` loads and validates images, recipes and targets; `plan` renders one image into
//! steps and checks with a fingerprint; `checks` holds the verification kinds; `cli` is the
//! command line.
// A `Diagnostic` (place, source line, hint) is the error of every validation function; it is
// built once per problem on a cold path, so its size does not matter and boxing it would only
// add noise.
#![allow(clippy::result_large_err)]

pub mod bake;
pub mod catalog;
pub mod checks;
pub mod cli;
pub mod cloud;
pub mod events;
pub mod plan;
pub mod registry;
pub mod remote;
