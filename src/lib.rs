//! bakery: bakes golden machine images declaratively.
//!
//! `catalog` loads and validates images, recipes and targets; `plan` renders one image into
//! steps and checks with a fingerprint; `checks` holds the verification kinds; `cli` is the
//! command line.
// A `Diagnostic` (place, source line, hint) is the error of every validation function; it is
// built once per problem on a cold path, so its size does not matter and boxing it would only
// add noise.
#![allow(clippy::result_large_err)]
// Output goes through `outln!` / `out!` / `errln!`: `println!` and friends panic when the stream
// is gone (`bakery … | head`, a terminal closed with SIGHUP).
#![deny(clippy::print_stdout, clippy::print_stderr)]

/// A small string newtype (`string_id!(Doc pub(crate) Name)`: the field's visibility, then the
/// name) with `as_str`, `Display` and transparent serde: every identifier the
/// code passes around (image names, regions, AMI ids, ...) is one.
macro_rules! string_id {
    ($(#[$m:meta])* $field:vis $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name($field String);
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// `println!` / `eprintln!` that do not panic when the stream is gone (a terminal closed with
/// SIGHUP, a closed pipe): a bake's cleanup and exit code must not depend on its audience.
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
/// `print!` that does not panic when the stream is gone (see `outln!`).
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

pub mod bake;
pub mod catalog;
pub mod checks;
pub mod cli;
pub mod cloud;
pub mod cost;
pub mod events;
pub mod inputs;
pub mod plan;
pub mod registry;
pub mod remote;
