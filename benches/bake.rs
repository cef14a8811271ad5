//! Bake speed on the local sandbox: N bakes of sandbox-demo, median wall time and AWS requests
//! per bake (counted at the emulator), against a floor measured in the same run: the emulator's
//! median round trip times the requests a bake makes. The ratio is what bakery adds on top of
//! the AWS calls it has to make (SSH work, polling gaps, its own start-up).
//!
//! Then, how soon bakery notices a state change: a second sandbox whose emulator models AWS's
//! state delays (`BAKERY_EMULATOR_DELAYS`: instances pending before running, images pending
//! before available, SSM Online a while after boot; stopping before stopped too, which only a
//! Windows image's shutdown step waits for: CreateImage powers a Linux build instance down
//! itself, so sandbox-demo has no stop to wait for) bakes sandbox-demo
//! over SSH into two regions (capture and copy) and a copy of it over SSM. For every modelled
//! change the emulator logged, the latency is the time from the change to the first Describe
//! call of bakery's that named the resource (that answer shows the new state, and bakery acts on
//! it at once): per wait kind, median, p95 and max. Each phase's time (verify: six checks, one
//! command) is read from the bakes' reports.
//!
//! Last, memory: a bake whose step prints 300 MB to stdout (every line is streamed as an event),
//! bakery's peak RSS (VmHWM, read from /proc while it runs) against the same bake without it.
//!
//! Run (as root, after `bash scripts/install-sandbox-deps`): `cargo bench --bench bake`
//! (`BAKERY_BENCH_BAKES=10` for more runs; `BAKERY_BENCH_TRACE=1` prints every call of the last
//! bake and its events).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::sandbox::{EmulatorCall, Sandbox, Transition};

/// The delays the latency part models, in seconds (shorter than AWS's, same shape).
const DELAYS: &str = "running=1.5,stopped=1.5,available=2,online=1.5";

/// `pct` percentile of sorted `v`.
fn pct(v: &[f64], pct: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * pct).round() as usize]
}

/// Seconds per phase of a bake, from its report (`--report DIR`: `<image>.json`).
fn phase_seconds(dir: &std::path::Path, image: &str) -> BTreeMap<String, f64> {
    let Ok(text) = std::fs::read_to_string(dir.join(format!("{image}.json"))) else {
        return BTreeMap::new();
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["phase_seconds"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, s)| Some((k.clone(), s.as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// (checks in the report, the seconds the probes themselves took on the instance, summed).
fn check_seconds(dir: &std::path::Path, image: &str) -> Option<(usize, f64)> {
    let text = std::fs::read_to_string(dir.join(format!("{image}.json"))).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let checks = v["checks"].as_array()?;
    Some((
        checks.len(),
        checks.iter().filter_map(|c| c["duration"].as_f64()).sum(),
    ))
}

/// For each modelled change, the wait kind and the seconds until bakery's first Describe of
/// that resource after it.
fn detections(
    transitions: &[Transition],
    calls: &[EmulatorCall],
    build: &str,
) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for tr in transitions {
        let (kind, action) = match tr.state.as_str() {
            "running" => ("instance running", "DescribeInstances"),
            "stopped" => ("instance stopped", "DescribeInstances"),
            "available" if tr.region == build => ("image available", "DescribeImages"),
            "available" => ("copy available", "DescribeImages"),
            "Online" => ("SSM Online", "DescribeInstanceInformation"),
            _ => continue,
        };
        // The first call answered after the change: one that arrived just before it and was
        // answered after may have seen it already (the change at once, latency 0), and bakery
        // sends no other while a wait's call is in flight.
        let seen = calls.iter().find(|c| {
            c.done >= tr.t
                && c.action == action
                && (c.ids.contains(&tr.id) || c.filter_ids.contains(&tr.id))
        });
        if let Some(c) = seen {
            out.push((kind.to_string(), (c.t - tr.t).max(0.0)));
        }
    }
    out
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
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
    let mut phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut probes = Vec::new();
    let mut last_calls = Vec::new();
    let mut pruned = Vec::new();
    let reports = sb.project.path().join("bench-reports");
    for i in 0..n {
        let before = sb.requests();
        let calls_before = sb.actions().len();
        let t = Instant::now();
        let out = sb.bakery(&[
            "bake",
            "sandbox-demo",
            "--target",
            "sandbox",
            "--json",
            "--log-format",
            "json",
            "--report",
            reports.to_str().expect("utf-8 path"),
        ]);
        let wall = t.elapsed();
        if std::env::var_os("BAKERY_BENCH_TRACE").is_some() && i + 1 == n {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(
            out.status.success(),
            "bake {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        requests.push(sb.requests() - before);
        walls.push(wall);
        probes.extend(check_seconds(&reports, "sandbox-demo"));
        for (phase, secs) in phase_seconds(&reports, "sandbox-demo") {
            phases.entry(phase).or_default().push(secs);
        }
        last_calls = sb.actions()[calls_before..].to_vec();
        // From the fourth bake on, sandbox-demo's `keep = 3` prunes a version (9 more calls).
        pruned.push(last_calls.iter().any(|c| c.action == "DeregisterImage"));
    }
    let wall = median(walls.clone());
    let reqs = median(requests.clone());
    let floor = rtt * reqs as u32;
    println!("sandbox-demo bakes: {n}");
    println!(
        "  wall time per bake     median {:>8.1} ms  (min {:.1}, max {:.1})",
        wall.as_secs_f64() * 1e3,
        walls.iter().min().unwrap().as_secs_f64() * 1e3,
        walls.iter().max().unwrap().as_secs_f64() * 1e3
    );
    println!("  AWS requests per bake  median {reqs:>6}     (all runs: {requests:?})");
    let plain: Vec<usize> = (0..n).filter(|&i| !pruned[i]).collect();
    if !plain.is_empty() && plain.len() < n {
        println!(
            "  the {} bakes that pruned nothing: wall median {:.1} ms, requests median {}",
            plain.len(),
            median(plain.iter().map(|&i| walls[i]).collect()).as_secs_f64() * 1e3,
            median(plain.iter().map(|&i| requests[i]).collect())
        );
    }
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
    // Where the time goes: each phase's median (from the bakes' reports).
    let mut listed = Vec::new();
    for (phase, v) in &mut phases {
        v.sort_by(f64::total_cmp);
        listed.push(format!("{phase} {:.0}", pct(v, 0.5) * 1e3));
    }
    println!("  phases, median ms: {}", listed.join(", "));
    if let Some(v) = phases.get("verify") {
        println!(
            "  verify phase (6 checks, one command) median {:>6.1} ms   (goal <= 50)",
            pct(v, 0.5) * 1e3
        );
    }
    if let Some((n, _)) = probes.first() {
        let mut t: Vec<f64> = probes.iter().map(|p| p.1).collect();
        t.sort_by(f64::total_cmp);
        println!(
            "  the {n} checks' probes themselves (build and test instance) median {:.1} ms",
            pct(&t, 0.5) * 1e3
        );
    }
    // What the last bake asked, by action (the emulator's action log).
    let mut by_action = std::collections::BTreeMap::<String, usize>::new();
    for c in &last_calls {
        *by_action
            .entry(format!("{}:{}", c.service, c.action))
            .or_default() += 1;
    }
    let listed: Vec<String> = by_action.iter().map(|(a, n)| format!("{a} {n}")).collect();
    println!("  calls of the last bake by action: {}", listed.join(", "));
    // BAKERY_BENCH_TRACE=1: every call of the last bake, in order, with its time.
    if std::env::var_os("BAKERY_BENCH_TRACE").is_some() {
        let t0 = last_calls.first().map_or(0.0, |c| c.t);
        for c in &last_calls {
            println!(
                "    {:>8.1} ms  (at {:.3} s past the minute)  {}:{} {:?}{:?}",
                (c.t - t0) * 1e3,
                c.t % 60.0,
                c.service,
                c.action,
                c.ids,
                c.filter_ids
            );
        }
    }
    rss(&sb);
    drop(sb);
    latency(n);
}

/// Runs a bakery command to its end; (success, peak RSS in kB). On failure, the tail of its
/// stderr is printed.
fn peak_rss(sb: &Sandbox, args: &[&str]) -> (bool, u64) {
    let err_path = sb.project.path().join("rss-stderr.log");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = sb
        .command(args)
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .expect("bakery");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        if let Some(st) = child.try_wait().expect("wait") {
            if !st.success() {
                let text = std::fs::read_to_string(&err_path).unwrap_or_default();
                // The step's own lines say nothing about the failure.
                let tail: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.contains("a line of step output"))
                    .rev()
                    .take(20)
                    .collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                eprintln!("bakery {args:?} failed ({st}):\n{}", tail.join("\n"));
            }
            return (st.success(), peak);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Part 3: bakery's memory while a step streams 300 MB of output.
fn rss(sb: &Sandbox) {
    sb.project.write(
        "recipes/loud/recipe.toml",
        "description = \"Prints 300 MB of step output\"\nplatforms = [\"linux\"]\n\n[[step]]\nname = \"prints 300 MB\"\nshell = { inline = \"awk 'BEGIN { for (i = 0; i < 3000000; i++) print \\\"a line of step output, streamed as an event, 100 characters long ..................................\\\" }'\" }\n",
    );
    let loud = sb.demo_variant("loud-demo", "[[recipe]]\nuse = \"loud\"\n\n");
    sb.project.write("images/loud-demo.toml", &loud);
    let (ok, quiet) = peak_rss(
        sb,
        &["bake", "sandbox-demo", "--target", "sandbox", "--json"],
    );
    assert!(ok, "the quiet bake failed");
    let t = Instant::now();
    let (ok, loud) = peak_rss(sb, &["bake", "loud-demo", "--target", "sandbox", "--json"]);
    assert!(ok, "the bake printing 300 MB failed");
    println!(
        "  peak RSS: {:.1} MB streaming 300 MB of step output ({:.1} s), {:.1} MB without; goal < 64 MB",
        loud as f64 / 1024.0,
        t.elapsed().as_secs_f64(),
        quiet as f64 / 1024.0
    );
}

/// Part 2: how long after a modelled state change bakery's next look at the resource came.
fn latency(n: usize) {
    let sb = Sandbox::start_env(None, &[("BAKERY_EMULATOR_DELAYS", DELAYS)]);
    sb.set_regions(&["us-east-1", "us-west-2"]);
    // The same image over SSM (for the SSM Online wait).
    let ssm = sb.add_demo_copies("ssm-demo", 1).remove(0);
    let path = sb.project.path().join(format!("images/{ssm}.toml"));
    let toml = std::fs::read_to_string(&path).expect("image");
    let toml: Vec<&str> = toml.lines().filter(|l| !l.starts_with("ssh = ")).collect();
    let toml = toml
        .join("\n")
        .replace("communicator = \"ssh\"", "communicator = \"ssm\"");
    std::fs::write(&path, toml).expect("write");
    let bakes = n.clamp(1, 3);
    for i in 0..bakes {
        for image in ["sandbox-demo", ssm.as_str()] {
            let out = sb.bakery(&["bake", image, "--target", "sandbox", "--json"]);
            assert!(
                out.status.success(),
                "latency bake {i} of {image} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let transitions = sb.transitions();
    let calls = sb.actions();
    let overlaps = copy_overlaps(&transitions, &calls, "us-west-2");
    let seen = detections(&transitions, &calls, "us-east-1");
    let mut kinds = std::collections::BTreeMap::<String, Vec<f64>>::new();
    for (k, s) in seen {
        kinds.entry(k).or_default().push(s);
    }
    println!("detection latency: modelled AWS delays ({DELAYS} s), {bakes} bakes over SSH (two regions) and {bakes} over SSM");
    println!(
        "  {:<18} {:>4} {:>10} {:>10} {:>10}",
        "wait", "n", "median ms", "p95 ms", "max ms"
    );
    let mut all = Vec::new();
    for (k, mut v) in kinds {
        v.sort_by(f64::total_cmp);
        all.extend(v.iter().copied());
        println!(
            "  {k:<18} {:>4} {:>10.0} {:>10.0} {:>10.0}",
            v.len(),
            pct(&v, 0.5) * 1e3,
            pct(&v, 0.95) * 1e3,
            v[v.len() - 1] * 1e3
        );
    }
    all.sort_by(f64::total_cmp);
    if !all.is_empty() {
        println!(
            "  {:<18} {:>4} {:>10.0} {:>10.0} {:>10.0}   (goal: median <= 200, p95 <= 1000)",
            "all",
            all.len(),
            pct(&all, 0.5) * 1e3,
            pct(&all, 0.95) * 1e3,
            all[all.len() - 1] * 1e3
        );
    }
    if !overlaps.is_empty() {
        let mut under_way: Vec<f64> = overlaps.iter().map(|o| o.0).collect();
        let mut copy: Vec<f64> = overlaps.iter().map(|o| o.1).collect();
        under_way.sort_by(f64::total_cmp);
        copy.sort_by(f64::total_cmp);
        println!(
            "  copies under way while the test phase ran: {} copies, median {:.0} ms of {:.0} ms copy time (what a distribute after the test would add)",
            overlaps.len(),
            pct(&under_way, 0.5) * 1e3,
            pct(&copy, 0.5) * 1e3
        );
    }
}

/// For each CopyImage into `region` (in order, matched with that region's `available`
/// transitions): how long the copy was under way before its bake's test instance went (the
/// first TerminateInstances after it), and how long the copy took.
fn copy_overlaps(
    transitions: &[Transition],
    calls: &[EmulatorCall],
    region: &str,
) -> Vec<(f64, f64)> {
    let available: Vec<f64> = transitions
        .iter()
        .filter(|t| t.region == region && t.state == "available")
        .map(|t| t.t)
        .collect();
    let copies = calls
        .iter()
        .filter(|c| c.action == "CopyImage" && c.region.as_deref() == Some(region));
    copies
        .zip(available)
        .filter_map(|(c, done)| {
            let terminated = calls
                .iter()
                .find(|t| t.action == "TerminateInstances" && t.t > c.t)?
                .t;
            Some((done.min(terminated) - c.t, done - c.t))
        })
        .collect()
}
