//! A property test over the shipped catalog: each case copies it, mutates one file (byte flips,
//! truncation, a duplicated table, a huge value, deep nesting, non-UTF-8, a deleted or doubled
//! line) and loads it. Whatever the mutation, loading never panics, every error is located inside
//! the file it names, and the command line exits 0 or 2 without a network call.
//!
//! `.ci/run` runs a bounded number of cases; run it long with
//! `BAKERY_FUZZ_CASES=20000 cargo test --test it fuzz -- --nocapture` (and
//! `BAKERY_FUZZ_SEED=<n>` to replay a case it reports).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use bakery::catalog::Catalog;

use crate::support::fixtures::{repo_root, shipped_copy};
use crate::support::text;

/// Every file of the shipped catalog, relative to the project.
fn catalog_files(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    for sub in ["images", "recipes"] {
        walk(root, &root.join(sub), &mut out);
    }
    out.push(PathBuf::from("bakery.toml"));
    out.sort();
    out
}

/// One mutation of `bytes`, and its name for the report.
fn mutate(rng: &mut StdRng, bytes: &[u8]) -> (Vec<u8>, String) {
    let mut b = bytes.to_vec();
    let at = |rng: &mut StdRng, len: usize| {
        if len == 0 {
            0
        } else {
            rng.random_range(0..len)
        }
    };
    let lines: Vec<&[u8]> = bytes.split_inclusive(|c| *c == b'\n').collect();
    let line_start = |i: usize| lines[..i].iter().map(|l| l.len()).sum::<usize>();
    match rng.random_range(0..9) {
        0 => {
            let n = rng.random_range(1..=4);
            for _ in 0..n {
                let i = at(rng, b.len());
                if let Some(c) = b.get_mut(i) {
                    *c = rng.random();
                }
            }
            (b, format!("{n} random bytes"))
        }
        1 => {
            let i = at(rng, b.len());
            b.truncate(i);
            (b, format!("truncated at {i}"))
        }
        2 => {
            // A table (from a header line to the next) twice.
            let headers: Vec<usize> = (0..lines.len())
                .filter(|i| lines[*i].starts_with(b"["))
                .collect();
            if headers.is_empty() {
                return (b, "unchanged (no table)".into());
            }
            let h = headers[at(rng, headers.len())];
            let end = headers
                .iter()
                .copied()
                .find(|x| *x > h)
                .unwrap_or(lines.len());
            let block: Vec<u8> = lines[h..end].concat();
            let mut out = bytes[..line_start(end)].to_vec();
            out.extend_from_slice(&block);
            out.extend_from_slice(&bytes[line_start(end)..]);
            (out, format!("table at line {} duplicated", h + 1))
        }
        3 => {
            // A huge value in place of the first string on a random line.
            let i = at(rng, lines.len());
            let huge = "x".repeat(rng.random_range(1..4) * 400_000);
            let mut out = bytes[..line_start(i)].to_vec();
            out.extend_from_slice(format!("huge = \"{huge}\"\n").as_bytes());
            out.extend_from_slice(&bytes[line_start(i)..]);
            (out, format!("huge value before line {}", i + 1))
        }
        4 => {
            let depth = rng.random_range(100..20_000);
            let i = at(rng, lines.len());
            let (open, close) = if rng.random() {
                ("[", "]")
            } else {
                ("{a=", "}")
            };
            let mut out = bytes[..line_start(i)].to_vec();
            out.extend_from_slice(
                format!("deep = {}1{}\n", open.repeat(depth), close.repeat(depth)).as_bytes(),
            );
            out.extend_from_slice(&bytes[line_start(i)..]);
            (out, format!("nesting {depth} deep before line {}", i + 1))
        }
        5 => {
            // Invalid UTF-8 somewhere.
            let i = at(rng, b.len());
            b.splice(i..i, [0xff, 0xfe, 0xc0]);
            (b, format!("invalid UTF-8 at {i}"))
        }
        6 => {
            let i = at(rng, lines.len());
            let mut out = bytes[..line_start(i)].to_vec();
            out.extend_from_slice(&bytes[line_start((i + 1).min(lines.len()))..]);
            (out, format!("line {} deleted", i + 1))
        }
        7 => {
            let i = at(rng, lines.len());
            let mut out = bytes[..line_start((i + 1).min(lines.len()))].to_vec();
            if let Some(l) = lines.get(i) {
                out.extend_from_slice(l);
            }
            out.extend_from_slice(&bytes[line_start((i + 1).min(lines.len()))..]);
            (out, format!("line {} doubled", i + 1))
        }
        _ => {
            // Template and script syntax: unbalanced delimiters.
            let junk = [
                "{{",
                "{%",
                "}}",
                "\"",
                "'",
                "{",
                "}",
                "$(",
                "if [ x ]; then",
                "\u{0}",
            ];
            let j = junk[at(rng, junk.len())];
            let i = at(rng, b.len());
            let mut i = i;
            while i > 0 && !bytes.is_char_boundary_at(i) {
                i -= 1;
            }
            b.splice(i..i, j.bytes());
            (b, format!("{j:?} inserted at {i}"))
        }
    }
}

trait CharBoundary {
    fn is_char_boundary_at(&self, i: usize) -> bool;
}

impl CharBoundary for [u8] {
    fn is_char_boundary_at(&self, i: usize) -> bool {
        self.get(i).is_none_or(|c| (*c as i8) >= -0x40)
    }
}

#[test]
fn mutated_catalogs_never_panic_and_every_error_is_located_in_its_file() {
    let cases: usize = std::env::var("BAKERY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("BAKERY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0xba4e_2026);
    let mut rng = StdRng::seed_from_u64(seed);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let base = shipped_copy();
    std::fs::copy(
        repo_root().join("bakery.toml"),
        base.path().join("bakery.toml"),
    )
    .expect("copy");
    let files = catalog_files(base.path());
    let mut errors_seen = 0;
    for case in 0..cases {
        let p = shipped_copy();
        std::fs::copy(
            base.path().join("bakery.toml"),
            p.path().join("bakery.toml"),
        )
        .expect("copy");
        let file = &files[rng.random_range(0..files.len())];
        let original = std::fs::read(p.path().join(file)).expect("read");
        let (mutated, what) = mutate(&mut rng, &original);
        std::fs::write(p.path().join(file), &mutated).expect("write");
        let why = format!("seed {seed}, case {case}: {} {what}", file.display());
        if std::env::var_os("BAKERY_FUZZ_VERBOSE").is_some() {
            eprintln!("{why}");
        }
        let root = p.path().to_path_buf();
        let loaded = std::panic::catch_unwind(move || Catalog::load(&root));
        let loaded = loaded.unwrap_or_else(|_| panic!("panicked: {why}"));
        if let Err(d) = loaded {
            errors_seen += 1;
            assert!(!d.is_empty(), "an error without a diagnostic: {why}");
            for diag in d.iter() {
                let named = p.path().join(&diag.path);
                assert!(
                    named.exists(),
                    "{} does not exist ({why}):\n{diag}",
                    diag.path.display()
                );
                if named.is_file() {
                    let bytes = std::fs::read(&named).expect("read");
                    let lines = bytes.split(|c| *c == b'\n').count();
                    assert!(
                        diag.line >= 1 && diag.line <= lines,
                        "line {} outside {} ({lines} lines; {why}):\n{diag}",
                        diag.line,
                        diag.path.display()
                    );
                }
            }
        }
        // Every tenth case through the command line too: exit 0 or 2, never a crash.
        if case % 10 == 0 {
            let out = Command::new(env!("CARGO_BIN_EXE_bakery"))
                .args(["validate", "--project"])
                .arg(p.path())
                .env("AWS_ENDPOINT_URL", &endpoint)
                .output()
                .expect("run");
            let err = text(&out.stderr);
            assert!(
                matches!(out.status.code(), Some(0 | 2)),
                "exit {:?} ({why}):\n{}",
                out.status.code(),
                err.chars().take(2000).collect::<String>()
            );
            assert!(!err.contains("panicked"), "{why}:\n{err}");
        }
    }
    assert!(
        listener.accept().is_err(),
        "validation connected to the AWS endpoint"
    );
    // The mutations are not all harmless: most cases must have been errors.
    assert!(
        errors_seen * 2 > cases,
        "only {errors_seen} of {cases} cases were errors"
    );
}
