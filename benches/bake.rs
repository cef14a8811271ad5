//! Bake speed on the local sandbox: N bakes of sandbox-demo, median wall time and AWS requests
//! per bake (counted at the emulator), against a floor measured in the same run: the emulator's
//! median round trip times the requests a bake makes. The ratio is what bakery adds on top of
//! the AWS calls it has to make (SSH work, polling gaps, its own start-up).
//!
//! Run (as root, after `bash scripts/install-sandbox-deps`): `cargo bench --bench bake`
//! (`BAKERY_BENCH_BAKES=10` for more runs).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::sandbox::Sandbox;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("BAKERY_BENCH_BAKES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let sb = Sandbox::start();

    // Floor: one cheap emulator call, timed.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let rtt = rt.block_on(async {
        let (ec2, _) = sb.clients().await;
        let _ = ec2.describe_regions().send().await;
        let mut v = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            ec2.describe_regions()
                .send()
                .await
                .expect("DescribeRegions");
            v.push(t.elapsed());
        }
        median(v)
    });

    let mut walls = Vec::new();
    let mut requests = Vec::new();
    for i in 0..n {
        let before = sb.requests();
        let t = Instant::now();
        let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox", "--json"]);
        let wall = t.elapsed();
        assert!(
            out.status.success(),
            "bake {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        requests.push(sb.requests() - before);
        walls.push(wall);
    }
    let wall = median(walls.clone());
    let mut r = requests.clone();
    r.sort();
    let reqs = r[r.len() / 2];
    let floor = rtt * reqs as u32;
    println!("sandbox-demo bakes: {n}");
    println!(
        "  wall time per bake     median {:>8.1} ms  (min {:.1}, max {:.1})",
        wall.as_secs_f64() * 1e3,
        walls.iter().min().unwrap().as_secs_f64() * 1e3,
        walls.iter().max().unwrap().as_secs_f64() * 1e3
    );
    println!("  AWS requests per bake  median {reqs:>6}     (all runs: {requests:?})");
    println!(
        "  emulator round trip    median {:>8.2} ms",
        rtt.as_secs_f64() * 1e3
    );
    println!(
        "  floor (requests x rtt)        {:>8.1} ms",
        floor.as_secs_f64() * 1e3
    );
    println!(
        "  wall / floor                  {:>8.1}x",
        wall.as_secs_f64() / floor.as_secs_f64()
    );
}
