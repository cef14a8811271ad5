//! Fingerprints change exactly where their inputs change.
