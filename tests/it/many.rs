//! Many bakes in one process: they share one poller per region and resource kind, so the
//! Describe calls per second do not grow with the number of bakes; `--report` writes what each
//! did.

use std::collections::BTreeSet;

use crate::support::sandbox::{EmulatorCall, Sandbox};
use crate::support::text;

const DESCRIBES: [&str; 2] = ["DescribeInstances", "DescribeImages"];

fn describes(calls: &[EmulatorCall]) -> usize {
    calls
        .iter()
        .filter(|c| DESCRIBES.contains(&c.action.as_str()))
        .count()
}

#[test]
fn twenty_concurrent_bakes_share_the_pollers_describe_calls() {
    let sb = Sandbox::start();

    // Baseline: one bake on its own.
    let before = sb.actions().len();
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let alone = describes(&sb.actions()[before..]);

    let names = sb.add_demo_copies("many", 20);
    let report = tempfile::tempdir().expect("tempdir");
    let report_dir = report.path().to_str().expect("utf-8").to_string();
    let mut args = vec!["bake", "--target", "sandbox", "--jobs", "20", "--json"];
    args.extend(names.iter().map(String::as_str));
    args.extend(["--report", &report_dir]);
    let before = sb.actions().len();
    let out = sb.bakery(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let calls = sb.actions()[before..].to_vec();

    let outcomes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let outcomes = outcomes.as_array().expect("array");
    assert_eq!(outcomes.len(), 20);
    let amis: BTreeSet<String> = outcomes
        .iter()
        .map(|o| {
            assert_eq!(o["outcome"], "baked", "{o}");
            o["amis"]["us-east-1"].as_str().expect("ami").to_string()
        })
        .collect();
    assert_eq!(amis.len(), 20, "one AMI per image");

    for action in DESCRIBES {
        // The shared pollers ask with an id filter; nothing else does.
        let polls: Vec<&EmulatorCall> = calls
            .iter()
            .filter(|c| c.action == action && !c.filter_ids.is_empty())
            .collect();
        assert!(!polls.is_empty(), "{action}: no poller calls");
        // However many bakes wait, a poller's calls stay within its budget: its bucket's
        // capacity, then its refill rate. (Counted at the emulator, whose clock stamps a call
        // when it gets to it, so gaps between two calls are not compared: under load a call can
        // wait its turn in the emulator.)
        let budget = bakery::cloud::poller::DESCRIBE.budget;
        let span = polls.last().map_or(0.0, |l| l.t) - polls[0].t;
        assert!(
            polls.len() as f64 <= budget.capacity + budget.refill_per_sec * span + 1.0,
            "{action}: {} poller calls in {span:.1}s: {:?}",
            polls.len(),
            polls
                .iter()
                .map(|c| (c.t - polls[0].t, c.filter_ids.len()))
                .collect::<Vec<_>>()
        );
        let widest = polls.iter().map(|c| c.filter_ids.len()).max().unwrap_or(0);
        assert!(widest > 1, "{action}: no call covered more than one bake");
    }
    // Per bake, twenty at once cost fewer Describe calls than one alone (the rest of the
    // Describe calls, source and registry lookups, are one-shot per bake).
    let together = describes(&calls);
    assert!(
        together < alone * 20,
        "Describe calls: {together} for 20 bakes, {alone} for one"
    );

    // The report: one JSON and one JUnit file per bake, and a summary with the poller counts.
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report.path().join("summary.json")).expect("summary.json"),
    )
    .expect("summary json");
    let aws = &summary["aws"]["us-east-1"];
    assert!(
        aws["instances"]["max_batch"].as_u64().unwrap_or(0) > 1,
        "{summary}"
    );
    assert!(
        aws["ec2"]["requests"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    assert_eq!(summary["bakes"].as_array().map(Vec::len), Some(20));
    for name in &names {
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(report.path().join(format!("{name}.json"))).expect("report"),
        )
        .expect("report json");
        assert_eq!(r["outcome"], "baked", "{r}");
        assert_eq!(r["image"], name.as_str());
        for phase in ["launch", "provision", "verify", "capture", "publish"] {
            assert!(r["phase_seconds"][phase].is_f64(), "{phase} in {r}");
        }
        let inputs = r["fingerprint_inputs"].to_string();
        assert!(
            inputs.contains("recipes/sandbox-demo/scripts/write-motd.sh"),
            "{inputs}"
        );
        let created = r["resources"]["created"].to_string();
        let removed = r["resources"]["removed"].to_string();
        assert!(created.contains("instance i-"), "{created}");
        assert!(removed.contains("instance i-"), "{removed}");
        assert_eq!(r["resources"]["left_behind"], serde_json::json!([]));
        assert!(r["checks"].as_array().map_or(0, Vec::len) >= 2, "{r}");
        assert!(!r["checks"].to_string().contains("\"passed\":false"), "{r}");
        let junit = std::fs::read_to_string(report.path().join(format!("{name}.junit.xml")))
            .expect("junit");
        assert!(
            junit.contains("<testsuite") && junit.contains("uploaded README"),
            "{junit}"
        );
    }
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn a_failed_bake_reports_its_phase_and_what_it_removed() {
    let sb = Sandbox::start();
    sb.add_failing_step();
    let report = tempfile::tempdir().expect("tempdir");
    let dir = report.path().to_str().expect("utf-8");
    let out = sb.bakery(&["bake", "fail-step", "--target", "sandbox", "--report", dir]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report.path().join("fail-step.json")).expect("report"),
    )
    .expect("json");
    assert_eq!(r["outcome"], "failed", "{r}");
    assert!(
        r["error"].as_str().unwrap_or("").starts_with("provision: "),
        "{r}"
    );
    assert!(r["phase_seconds"]["provision"].is_f64(), "{r}");
    assert!(r["phase_seconds"]["cleanup"].is_f64(), "{r}");
    assert_eq!(r["version"], serde_json::Value::Null);
    // "instance i-0abc (t3.micro)" was created, "instance i-0abc (us-east-1)" removed.
    let ids = |key: &str| -> BTreeSet<String> {
        let v: Vec<String> = serde_json::from_value(r["resources"][key].clone()).expect(key);
        v.iter()
            .filter_map(|s| s.split_whitespace().find(|w| w.contains('-')))
            .map(str::to_string)
            .collect()
    };
    let created = ids("created");
    assert!(created.iter().any(|i| i.starts_with("i-")), "{created:?}");
    assert_eq!(created, ids("removed"), "everything created was removed");
    assert_eq!(r["resources"]["left_behind"], serde_json::json!([]));
    assert!(report.path().join("fail-step.junit.xml").exists());
    assert_eq!(sb.leftovers(), Vec::<String>::new());
}

/// `--manifest` with several images: one document, a baked image with every field of a single
/// manifest, a failed one with its reason; under TeamCity a `setParameter` per baked image and a
/// build problem per failed one.
#[test]
fn a_many_image_bake_hands_off_one_manifest_and_teamcity_parameters() {
    let sb = Sandbox::start();
    sb.add_failing_step();
    let manifest = sb.project.path().join("manifest.json");
    let out = sb
        .command(&[
            "bake",
            "sandbox-demo",
            "fail-step",
            "--target",
            "sandbox",
            "--manifest",
            manifest.to_str().expect("path"),
        ])
        .env("TEAMCITY_VERSION", "2025.07")
        .output()
        .expect("run");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).expect("manifest")).expect("json");
    let images = m["images"].as_array().expect("images");
    let of = |name: &str| {
        images
            .iter()
            .find(|i| i["image"] == name)
            .unwrap_or_else(|| panic!("{name} in {m:#}"))
    };
    let demo = of("sandbox-demo");
    assert_eq!(demo["outcome"], "baked", "{m:#}");
    assert!(
        demo["amis"]["us-east-1"]
            .as_str()
            .is_some_and(|a| a.starts_with("ami-")),
        "{m:#}"
    );
    assert!(
        demo["fingerprint"].is_string() && demo["checks"].is_array(),
        "{m:#}"
    );
    let failed = of("fail-step");
    assert_eq!(failed["outcome"], "failed", "{m:#}");
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("provision")),
        "{m:#}"
    );
    assert!(
        stdout
            .contains("##teamcity[setParameter name='bakery.sandbox-demo.version' value='0.1.0']"),
        "{stdout}"
    );
    assert!(
        stdout.contains("##teamcity[buildProblem description='fail-step failed: "),
        "{stdout}"
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new());
}
