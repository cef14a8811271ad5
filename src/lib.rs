//! bakery: bakes golden machine images declaratively.
//!
//! `catalog` loads and validates images, recipes and targets; `plan` renders one image into
//! steps and checks with a fingerprint; `checks` holds the verification kinds; `cli` is the
//! command line.
pub mod catalog;
pub mod checks;
pub mod cli;
pub mod plan;
