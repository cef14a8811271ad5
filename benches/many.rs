//! Baking many at once and planning a large catalog, on the local sandbox.
//!
//! 1. Concurrent bakes: 1, 10 and 50 copies of sandbox-demo baked by one `bakery bake --jobs N`
//!    process, the emulator modelling AWS's state delays (1 s each): wall time, AWS requests and
//!    Describe calls per bake, the most DescribeInstances / DescribeImages calls in any one second
//!    and the throttling errors seen (counted at the emulator).
//!    Baseline: the single bake, in the same run; the ratios say how much of the single bake's
//!    time N bakes cost per bake, and whether requests per bake grow with N.
//! 2. Plan with nothing changed: `bakery plan` over a generated catalog (500 images by default)
//!    in which every image has a current version. The 61 images of part 1 were baked; the rest
//!    are registered here the way a bake leaves its AMI (same tags, fingerprint computed by
//!    bakery's planner) because baking 439 more on the emulator would take most of an hour and
//!    measure nothing new. The bench checks that plan reports every image up to date. Baseline:
//!    `bakery plan --offline` over the same images in the same run (the same catalog loading,
//!    rendering and fingerprinting, no AWS); the ratio is what asking AWS adds, and the request
//!    count shows it does not grow with the catalog. A second baseline: the plan's two calls
//!    sent straight to the emulator and timed; the plan's time less theirs is bakery's own.
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

/// The most calls of `action` that fell in any one second (a sliding window).
fn peak_per_second(calls: &[EmulatorCall], action: &str) -> usize {
    let t: Vec<f64> = calls
        .iter()
        .filter(|c| c.action == action)
        .map(|c| c.t)
        .collect();
    let mut best = 0;
    let mut start = 0;
    for end in 0..t.len() {
        while t[end] - t[start] >= 1.0 {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

fn describes(calls: &[EmulatorCall]) -> usize {
    calls
        .iter()
        .filter(|c| c.action.starts_with("Describe"))
        .count()
}

/// Bakes `names` in one process with `--jobs jobs`; (wall, requests, describe calls, the most
/// DescribeInstances and DescribeImages calls in any one second, throttling errors).
fn bake_many(
    sb: &Sandbox,
    names: &[String],
    jobs: usize,
) -> (Duration, usize, usize, usize, usize, usize) {
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
    let throttled = calls
        .iter()
        .filter(|c| c.fault.as_deref() == Some("RequestLimitExceeded"))
        .count()
        + String::from_utf8_lossy(&out.stderr)
            .matches("RequestLimitExceeded")
            .count();
    (
        wall,
        calls.len(),
        describes(&calls),
        peak_per_second(&calls, "DescribeInstances"),
        peak_per_second(&calls, "DescribeImages"),
        throttled,
    )
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

/// Registers version 0.1.0 of each of `names` as a bake would leave it: an AMI with bakery's
/// tags, its fingerprint computed by bakery's planner against the source the SSM parameter names.
fn register(sb: &Sandbox, names: &[String]) {
    use bakery::catalog::model::{ImageName, Source};
    use bakery::catalog::Catalog;
    use bakery::plan::Planner;
    use bakery::registry::tag;

    let catalog = Catalog::load(sb.project.path()).unwrap_or_else(|d| panic!("{d}"));
    let target = catalog.target("sandbox").expect("target").clone();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (ec2, ssm) = sb.clients().await;
        let param = match &catalog.images[&ImageName::new_unchecked("sandbox-demo")].source {
            Source::SsmParameter(p) => p.clone(),
            _ => panic!("sandbox-demo's source is an SSM parameter"),
        };
        let source = ssm
            .get_parameter()
            .name(&param)
            .send()
            .await
            .expect("GetParameter")
            .parameter()
            .and_then(|p| p.value())
            .expect("value")
            .to_string();
        let run = ec2
            .run_instances()
            .image_id(&source)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect("RunInstances");
        let instance = run.instances()[0].instance_id().expect("id").to_string();
        let mut planner = Planner::new(&catalog, &target);
        for n in names {
            let plan = planner
                .plan(&ImageName::new_unchecked(n.clone()))
                .unwrap_or_else(|d| panic!("{d}"));
            let fp = plan.fingerprint.with_source(&source, None).to_string();
            let ami = ec2
                .create_image()
                .instance_id(&instance)
                .name(bakery::registry::ami_name(
                    n,
                    &semver::Version::new(0, 1, 0),
                ))
                .send()
                .await
                .expect("CreateImage")
                .image_id()
                .expect("ami")
                .to_string();
            let mut req = ec2.create_tags().resources(&ami);
            for (k, v) in [
                (tag::IMAGE, n.as_str()),
                (tag::VERSION, "0.1.0"),
                (tag::FINGERPRINT, fp.as_str()),
                (tag::SOURCE_AMI, source.as_str()),
                (tag::PUBLISHED, "2026-11-26T00:00:00Z"),
            ] {
                req = req.tags(aws_sdk_ec2::types::Tag::builder().key(k).value(v).build());
            }
            req.send().await.expect("CreateTags");
        }
        ec2.terminate_instances()
            .instance_ids(&instance)
            .send()
            .await
            .expect("TerminateInstances");
    });
}

fn main() {
    let images: usize = std::env::var("BAKERY_BENCH_IMAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500)
        .max(61);
    // AWS's state changes take time: model them (shorter), so that the pollers' pacing shows.
    let sb = Sandbox::start_env(
        None,
        &[(
            "BAKERY_EMULATOR_DELAYS",
            "running=1,stopped=1,available=1,online=1",
        )],
    );
    let names = sb.add_demo_copies("gen", images);

    println!("concurrent sandbox bakes (one `bakery bake --jobs N` process)");
    println!(
        "  {:>4} {:>9} {:>13} {:>14} {:>15} {:>16} {:>22} {:>10}",
        "N",
        "wall s",
        "wall/bake s",
        "vs 1 bake",
        "requests/bake",
        "describes/bake",
        "peak/s inst, images",
        "throttled"
    );
    let mut next = 0;
    let mut single = None;
    for n in [1usize, 10, 50] {
        let batch = &names[next..next + n];
        next += n;
        let (wall, reqs, desc, peak_inst, peak_img, throttled) = bake_many(&sb, batch, n);
        let per = wall.as_secs_f64() / n as f64;
        let base = *single.get_or_insert(wall.as_secs_f64());
        println!(
            "  {n:>4} {:>9.2} {:>13.3} {:>13.2}x {:>15.1} {:>16.1} {:>14} {:>7} {:>10}",
            wall.as_secs_f64(),
            per,
            per / base,
            reqs as f64 / n as f64,
            desc as f64 / n as f64,
            peak_inst,
            peak_img,
            throttled
        );
    }
    let b = bakery::cloud::poller::DESCRIBE.budget;
    println!(
        "  (a poller's budget: {} calls at once, then {}/s; AWS refills DescribeInstances and DescribeImages at 20/s)",
        b.capacity, b.refill_per_sec
    );

    // Everything else gets a current version too.
    let t = Instant::now();
    let rest = &names[next..];
    register(&sb, rest);
    // The registered AMIs become available a modelled second after CreateImage.
    std::thread::sleep(Duration::from_millis(1500));
    println!(
        "  (registered the other {} images in {:.1} s)",
        rest.len(),
        t.elapsed().as_secs_f64()
    );

    let out = sb.bakery(&{
        let mut a = vec!["plan", "--target", "sandbox", "--json", "--exit-code"];
        a.extend(names.iter().map(String::as_str));
        a
    });
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan json");
    let rows = v["images"].as_array().expect("rows");
    assert_eq!(rows.len(), names.len());
    assert!(
        rows.iter().all(|r| r["status"] == "up_to_date"),
        "not all up to date: {:?}",
        rows.iter().find(|r| r["status"] != "up_to_date")
    );
    assert_eq!(out.status.code(), Some(0));

    // Baseline: the two calls the plan makes (the registry of every image in one
    // DescribeImages, the source parameter in one GetParameters), sent straight to the emulator
    // with the SDK and timed: the part of the plan's time that is the emulator's answer. Timed
    // right after each plan, so bakery's share is the median of each run's own difference (the
    // emulator's answer to 500 images takes 1.5-2 s and drifts between runs).
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (ec2, ssm) = rt.block_on(sb.clients());
    let direct = || {
        rt.block_on(async {
            let t = Instant::now();
            let images = ec2
                .describe_images()
                .owners("self")
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("tag-key")
                        .values("bakery:image")
                        .build(),
                )
                .send()
                .await
                .expect("DescribeImages");
            assert!(images.images().len() >= names.len());
            ssm.get_parameters()
                .names("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")
                .send()
                .await
                .expect("GetParameters");
            t.elapsed()
        })
    };
    let mut online = Vec::new();
    let mut offline = Vec::new();
    let mut direct_times = Vec::new();
    let mut shares = Vec::new();
    let mut requests = Vec::new();
    for _ in 0..RUNS {
        let (w, r) = plan(&sb, &names, false);
        let c = direct();
        online.push(w);
        direct_times.push(c);
        shares.push(w.saturating_sub(c));
        requests.push(r);
        offline.push(plan(&sb, &names, true).0);
    }
    let (on, off) = (median(online), median(offline));
    let (calls, own) = (median(direct_times), median(shares));
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
    println!(
        "  its AWS calls alone     {:>8.1} ms  (DescribeImages + GetParameters, timed directly after each plan)",
        calls.as_secs_f64() * 1e3
    );
    println!(
        "  bakery's own share      {:>8.1} ms  {:.2}x offline   (median of each run's plan minus its calls; goal: plan under 500 ms besides AWS's answers)",
        own.as_secs_f64() * 1e3,
        own.as_secs_f64() / off.as_secs_f64()
    );
    println!("  AWS requests per plan   {requests:?}");
}
