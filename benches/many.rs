//! Baking many at once and planning a large catalog, on the local sandbox.
//!
//! 1. Concurrent bakes: 1, 10 and 50 copies of sandbox-demo baked by one `bakery bake --jobs N`
//!    process: wall time, AWS requests and Describe calls per bake (counted at the emulator).
//!    Baseline: the single bake, in the same run; the ratios say how much of the single bake's
//!    time N bakes cost per bake, and whether requests per bake grow with N.
//! 2. Plan with nothing changed: every generated image baked once, then `bakery plan` over all of
//!    them (500 by default). Baseline: `bakery plan --offline` over the same images in the same
//!    run (the same catalog loading, rendering and fingerprinting, no AWS); the ratio is what
//!    asking AWS adds, and the request count shows it does not grow with the catalog.
//!
//! Run (as root, after `bash scripts/install-sandbox-deps`): `cargo bench --bench many`
//! (`BAKERY_BENCH_IMAGES=100` for a smaller catalog).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::sandbox::{EmulatorCall, Sandbox};

const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn describes(calls: &[EmulatorCall]) -> usize {
    calls
        .iter()
        .filter(|c| c.action.starts_with("Describe"))
        .count()
}

/// Bakes `names` in one process with `--jobs jobs`; (wall, requests, describe calls).
fn bake_many(sb: &Sandbox, names: &[String], jobs: usize) -> (Duration, usize, usize) {
    let jobs = jobs.to_string();
    let mut args = vec!["bake", "--target", "sandbox", "--json", "--jobs", &jobs];
    args.extend(names.iter().map(String::as_str));
    let before = sb.actions().len();
    let t = Instant::now();
    let out = sb.bakery(&args);
    let wall = t.elapsed();
    assert!(
        out.status.success(),
        "bake of {} failed: {}",
        names.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = sb.actions()[before..].to_vec();
    (wall, calls.len(), describes(&calls))
}

fn plan(sb: &Sandbox, names: &[String], offline: bool) -> (Duration, usize) {
    let mut args = vec!["plan", "--target", "sandbox", "--json"];
    if offline {
        args.push("--offline");
    } else {
        args.push("--exit-code");
    }
    args.extend(names.iter().map(String::as_str));
    let before = sb.actions().len();
    let t = Instant::now();
    let out = sb.bakery(&args);
    let wall = t.elapsed();
    assert!(
        out.status.success(),
        "plan failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    (wall, sb.actions().len() - before)
}

fn main() {
    let images: usize = std::env::var("BAKERY_BENCH_IMAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500)
        .max(61);
    let sb = Sandbox::start();
    let names = sb.add_demo_copies("gen", images);

    println!("concurrent sandbox bakes (one `bakery bake --jobs N` process)");
    println!(
        "  {:>4} {:>9} {:>13} {:>14} {:>15} {:>16}",
        "N", "wall s", "wall/bake s", "vs 1 bake", "requests/bake", "describes/bake"
    );
    let mut next = 0;
    let mut single = None;
    for n in [1usize, 10, 50] {
        let batch = &names[next..next + n];
        next += n;
        let (wall, reqs, desc) = bake_many(&sb, batch, n);
        let per = wall.as_secs_f64() / n as f64;
        let base = *single.get_or_insert(wall.as_secs_f64());
        println!(
            "  {n:>4} {:>9.2} {:>13.3} {:>13.2}x {:>15.1} {:>16.1}",
            wall.as_secs_f64(),
            per,
            per / base,
            reqs as f64 / n as f64,
            desc as f64 / n as f64
        );
    }

    // Everything else, so that the whole generated catalog has a version.
    let t = Instant::now();
    let rest = &names[next..];
    if !rest.is_empty() {
        bake_many(&sb, rest, 50);
    }
    println!(
        "  (baked the other {} images in {:.1} s)",
        rest.len(),
        t.elapsed().as_secs_f64()
    );

    let mut online = Vec::new();
    let mut offline = Vec::new();
    let mut requests = Vec::new();
    for _ in 0..RUNS {
        let (w, r) = plan(&sb, &names, false);
        online.push(w);
        requests.push(r);
        offline.push(plan(&sb, &names, true).0);
    }
    let (on, off) = (median(online), median(offline));
    println!("plan over {images} images, nothing changed (median of {RUNS})");
    println!(
        "  plan --offline          {:>8.1} ms",
        off.as_secs_f64() * 1e3
    );
    println!(
        "  plan (asks AWS)         {:>8.1} ms  {:.2}x offline",
        on.as_secs_f64() * 1e3,
        on.as_secs_f64() / off.as_secs_f64()
    );
    println!("  AWS requests per plan   {requests:?}");
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}
