//! Retention across consumer accounts: `bakery prune` over 50 versions of an image in 2 regions,
//! with 2 consumer accounts launching in both, counted at the emulator per account, region and
//! action. What prune asks a consumer (instances, launch templates, launch configurations, Auto
//! Scaling groups, and its mirror) must cost calls per account and region, not per AMI.
//!
//! Baseline, in the same run: the same prune over 5 versions. The ratio of calls (50 ÷ 5) says
//! whether asking grows with the number of versions (1.0: it does not); the AssumeRole count
//! says one session per consumer per command.
//!
//! The versions are registered the way a bake leaves them (AMIs with bakery's tags in both
//! regions), then `bakery sync` writes the consumers' mirrors once, so the prune measured
//! (`--keep` above the count: nothing removed, everything asked) finds them up to date.
//!
//! Run (as root, after `bash scripts/install-sandbox-deps`): `cargo bench --bench consumers`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::sandbox::{EmulatorCall, Sandbox};

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
const CONSUMERS: [&str; 2] = ["222222222222", "333333333333"];
const OWNER: &str = "123456789012";
const ROLE: &str = "bakery-consumer";

/// Registers versions `from..to` (0.1.x) of sandbox-demo in every region, as published AMIs.
fn register(sb: &Sandbox, from: u64, to: u64) {
    use bakery::registry::tag;
    support::rt().block_on(async {
        for region in REGIONS {
            let (ec2, _) = sb.clients_in(region).await;
            let source = ec2
                .describe_images()
                .owners("amazon")
                .send()
                .await
                .expect("DescribeImages")
                .images()
                .first()
                .and_then(|i| i.image_id())
                .expect("an Amazon image")
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
            for patch in from..to {
                let v = semver::Version::new(0, 1, patch);
                let ami = ec2
                    .create_image()
                    .instance_id(&instance)
                    .name(bakery::registry::ami_name("sandbox-demo", &v))
                    .send()
                    .await
                    .expect("CreateImage")
                    .image_id()
                    .expect("ami")
                    .to_string();
                let version = v.to_string();
                let mut req = ec2.create_tags().resources(&ami);
                for (k, val) in [
                    (tag::IMAGE, "sandbox-demo"),
                    (tag::VERSION, version.as_str()),
                    (tag::PUBLISHED, "2026-11-26T00:00:00Z"),
                ] {
                    req = req.tags(aws_sdk_ec2::types::Tag::builder().key(k).value(val).build());
                }
                req.send().await.expect("CreateTags");
            }
            ec2.terminate_instances()
                .instance_ids(&instance)
                .send()
                .await
                .expect("TerminateInstances");
        }
    });
}

fn run(sb: &Sandbox, args: &[&str]) -> (Duration, Vec<EmulatorCall>) {
    let before = sb.actions().len();
    let t = Instant::now();
    let out = sb.bakery(args);
    let wall = t.elapsed();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (wall, sb.actions()[before..].to_vec())
}

/// A prune that removes nothing and asks everything; (wall, calls).
fn prune(sb: &Sandbox) -> (Duration, Vec<EmulatorCall>) {
    run(
        sb,
        &[
            "prune",
            "sandbox-demo",
            "--keep",
            "1000",
            "--target",
            "sandbox",
            "--json",
        ],
    )
}

/// Calls per (account, region).
fn per_place(calls: &[EmulatorCall]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for c in calls {
        let key = (
            c.account.clone().unwrap_or_default(),
            c.region.clone().unwrap_or_default(),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

fn main() {
    let sb = Sandbox::start();
    sb.set_regions(&REGIONS);
    for c in CONSUMERS {
        sb.create_consumer_role(c, ROLE, None);
    }
    sb.add_consumers(&CONSUMERS.map(|c| (c, ROLE, None)));

    register(&sb, 0, 5);
    run(&sb, &["sync", "sandbox-demo", "--target", "sandbox"]);
    let (base_wall, base) = prune(&sb);
    register(&sb, 5, 50);
    run(&sb, &["sync", "sandbox-demo", "--target", "sandbox"]);
    let (wall, calls) = prune(&sb);

    let (b, n) = (per_place(&base), per_place(&calls));
    println!("prune over 5 and 50 versions, 2 regions, 2 consumer accounts: calls per account and region");
    println!(
        "{:<14} {:<10} {:>10} {:>11} {:>7}",
        "account", "region", "5 versions", "50 versions", "ratio"
    );
    for ((account, region), count) in &n {
        let base = b
            .get(&(account.clone(), region.clone()))
            .copied()
            .unwrap_or(0);
        let who = if account == OWNER {
            "bakery"
        } else {
            "consumer"
        };
        println!(
            "{:<14} {:<10} {:>10} {:>11} {:>7.2}   ({who})",
            account,
            region,
            base,
            count,
            *count as f64 / base.max(1) as f64
        );
    }
    let mut by_action: BTreeMap<&str, usize> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.account.as_deref() != Some(OWNER)) {
        *by_action.entry(c.action.as_str()).or_default() += 1;
    }
    println!("consumer calls at 50 versions, by action: {by_action:?}");
    let assumed = calls.iter().filter(|c| c.action == "AssumeRole").count();
    let consumer_calls: usize = calls
        .iter()
        .filter(|c| c.account.as_deref() != Some(OWNER) && c.action != "AssumeRole")
        .count();
    println!(
        "AssumeRole: {assumed} (consumers: {}); consumer calls per account and region: {:.1}",
        CONSUMERS.len(),
        consumer_calls as f64 / (CONSUMERS.len() * REGIONS.len()) as f64
    );
    println!(
        "total calls: 5 versions {} | 50 versions {} | ratio {:.2}; wall {:.0} ms | {:.0} ms | ratio {:.2}",
        base.len(),
        calls.len(),
        calls.len() as f64 / base.len().max(1) as f64,
        base_wall.as_secs_f64() * 1e3,
        wall.as_secs_f64() * 1e3,
        wall.as_secs_f64() / base_wall.as_secs_f64()
    );
}
