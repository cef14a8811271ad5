//! The catalog: `images/` + `recipes/` + `bakery.toml` loaded into a validated model.
pub mod check;
pub mod diag;
pub mod doc;
pub mod graph;
pub mod image;
pub mod inputs;
pub mod load;
pub mod model;
pub mod params;
pub mod raw;
pub mod recipe;
pub mod render;
pub mod syntax;
pub mod target;
pub mod values;

pub use load::Catalog;
