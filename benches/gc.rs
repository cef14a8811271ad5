//! `bakery gc` over an account full of what killed bakes left: AWS calls per run, by kind.
//!
//! Seeds what killed bakes leave, with the SDK and bakery's tags (an expired `bakery:expires`):
//! per region, instances, security groups, key pairs and AMIs never published (each with a
//! snapshot), spread over 20 bakes, in the sandbox's two regions. Then runs `bakery gc --dry-run`
//! and `bakery gc`, counting the calls the emulator received. Baseline: the same with 10
//! resources, in the same run. The scan (Describe/List/Get calls) should stay flat as resources
//! grow, being paged calls per resource type and region; the removals are one call per
//! resource (plus a look at each image before it goes, and the wait for each instance).
//!
//! Run (as root, after `bash scripts/install-sandbox-deps`): `cargo bench --bench gc`
//! (`BAKERY_BENCH_RESOURCES=1000` by default).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use support::sandbox::{EmulatorCall, Sandbox, REGION};

const OTHER_REGION: &str = "eu-west-1";
const BAKES: usize = 20;

fn spec(kind: ResourceType, bake: &str) -> TagSpecification {
    let expired = humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(3600));
    TagSpecification::builder()
        .resource_type(kind)
        .tags(Tag::builder().key("bakery:bake-id").value(bake).build())
        .tags(
            Tag::builder()
                .key("bakery:expires")
                .value(expired.to_string())
                .build(),
        )
        .tags(Tag::builder().key("bakery:image").value("seeded").build())
        .build()
}

/// Seeds `n` resources (a quarter of each kind, half per region); returns how many.
fn seed(sb: &Sandbox, n: usize, round: usize) -> usize {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let per_kind = (n / 8).max(1);
    let mut made = 0;
    rt.block_on(async {
        for region in [REGION, OTHER_REGION] {
            let (ec2, _) = sb.clients_in(region).await;
            let ami = ec2
                .describe_images()
                .owners("amazon")
                .send()
                .await
                .expect("DescribeImages")
                .images()
                .iter()
                .find_map(|i| i.image_id().map(str::to_string))
                .expect("an AMI");
            let vpc = ec2
                .describe_vpcs()
                .send()
                .await
                .expect("DescribeVpcs")
                .vpcs()[0]
                .vpc_id()
                .expect("vpc")
                .to_string();
            let bake = |i: usize| format!("bk-seed{round}-{:08x}", i % BAKES);
            let mut instances = Vec::new();
            for b in 0..BAKES.min(per_kind) {
                let count = (per_kind / BAKES.min(per_kind)) as i32;
                let out = ec2
                    .run_instances()
                    .image_id(&ami)
                    .min_count(count)
                    .max_count(count)
                    .tag_specifications(spec(ResourceType::Instance, &bake(b)))
                    .send()
                    .await
                    .expect("RunInstances");
                for i in out.instances() {
                    instances.push((bake(b), i.instance_id().expect("id").to_string()));
                }
            }
            made += instances.len();
            for i in 0..per_kind {
                ec2.create_security_group()
                    .group_name(format!("seed-{round}-{region}-{i}"))
                    .description("seeded")
                    .vpc_id(&vpc)
                    .tag_specifications(spec(ResourceType::SecurityGroup, &bake(i)))
                    .send()
                    .await
                    .expect("CreateSecurityGroup");
                ec2.create_key_pair()
                    .key_name(format!("seed-{round}-{region}-{i}"))
                    .tag_specifications(spec(ResourceType::KeyPair, &bake(i)))
                    .send()
                    .await
                    .expect("CreateKeyPair");
                let (b, inst) = &instances[i % instances.len()];
                ec2.create_image()
                    .instance_id(inst)
                    .name(format!("seed-{round}-{region}-{i}"))
                    .tag_specifications(spec(ResourceType::Image, b))
                    .tag_specifications(spec(ResourceType::Snapshot, b))
                    .send()
                    .await
                    .expect("CreateImage");
                made += 4; // group, key pair, image, its snapshot
            }
        }
    });
    made
}

/// Runs gc (dry or not); (wall, calls by kind).
fn gc(sb: &Sandbox, dry: bool) -> (Duration, BTreeMap<&'static str, usize>, usize) {
    let mut args = vec!["gc", "--target", "sandbox", "--json"];
    if dry {
        args.push("--dry-run");
    }
    let before = sb.actions().len();
    let t = Instant::now();
    let out = sb.bakery(&args);
    let wall = t.elapsed();
    assert!(
        out.status.success(),
        "gc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let items = report["items"].as_array().map_or(0, Vec::len);
    let calls: Vec<EmulatorCall> = sb.actions()[before..].to_vec();
    let mut kinds = BTreeMap::new();
    for c in &calls {
        let kind = if c.action.starts_with("Describe")
            || c.action.starts_with("List")
            || c.action.starts_with("Get")
        {
            "scan"
        } else {
            "change"
        };
        *kinds.entry(kind).or_default() += 1;
    }
    (wall, kinds, items)
}

fn main() {
    let n: usize = std::env::var("BAKERY_BENCH_RESOURCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let sb = Sandbox::start();
    sb.set_regions(&[REGION, OTHER_REGION]);
    println!("bakery gc over what killed bakes left ({BAKES} bakes, 2 regions)");
    println!(
        "  {:>9} {:>6} {:>10} {:>10} {:>10} {:>9} {:>12}",
        "resources", "found", "dry scan", "scan", "changes", "wall s", "scan vs 10"
    );
    let mut base = None;
    for (round, want) in [10usize, n].into_iter().enumerate() {
        let made = seed(&sb, want, round);
        let (_, dry, found) = gc(&sb, true);
        let (wall, real, _) = gc(&sb, false);
        let scan = dry.get("scan").copied().unwrap_or(0);
        let b = *base.get_or_insert(scan as f64);
        println!(
            "  {made:>9} {found:>6} {scan:>10} {:>10} {:>10} {:>9.2} {:>11.2}x",
            real.get("scan").copied().unwrap_or(0),
            real.get("change").copied().unwrap_or(0),
            wall.as_secs_f64(),
            scan as f64 / b
        );
        let (_, _, left) = gc(&sb, true);
        assert_eq!(left, 0, "gc left {left} resources");
    }
}
