//! The binary: exit codes, output, and no network on invalid input.
