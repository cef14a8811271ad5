//! The test phase: a fresh instance launched from the new AMI, its checks, and what happens
//! when one fails, when it is interrupted, when it is skipped and when an image has none.

use std::time::Duration;

use crate::crash::{amis, leftovers_in_aws};
use crate::support::param;
use crate::support::sandbox::{Sandbox, REGION};
use crate::support::{rt, text};

/// The `bakery:tested` tag of an AMI.
fn tested_tag(sb: &Sandbox, ami: &str) -> Option<String> {
    rt().block_on(async {
        let (ec2, _) = sb.clients().await;
        let out = ec2
            .describe_images()
            .image_ids(ami)
            .send()
            .await
            .expect("describe");
        out.images()[0]
            .tags()
            .iter()
            .find(|t| t.key() == Some("bakery:tested"))
            .and_then(|t| t.value())
            .map(str::to_string)
    })
}

/// `images/<name>.toml`: sandbox-demo whose `[test]` check is `check` (a TOML table body).
fn add_tested_image(sb: &Sandbox, name: &str, check: &str) {
    let demo =
        std::fs::read_to_string(sb.project.path().join("images/sandbox-demo.toml")).expect("demo");
    let at = demo.find("[test]").expect("sandbox-demo has a [test]");
    let img = format!("{}[test]\n\n[[test.check]]\n{check}\n", &demo[..at])
        .replace("name = \"sandbox-demo\"", &format!("name = \"{name}\""));
    sb.project.write(&format!("images/{name}.toml"), &img);
}

#[test]
fn the_test_phase_boots_the_new_ami_and_a_failing_test_check_publishes_nothing() {
    let sb = Sandbox::start();
    // Passing: a separate instance launched from the new AMI, gone afterwards; the AMI says so.
    let out = sb.bakery(&[
        "bake",
        "sandbox-demo",
        "--target",
        "sandbox",
        "--log-format",
        "json",
        "--json",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let art: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ami = art["amis"][REGION].as_str().expect("ami").to_string();
    assert!(
        err.contains(&format!("from {ami}")) && err.contains("test instance i-"),
        "{err}"
    );
    // The fresh instance was asked whether it finished booting (its boot id is in the answer)
    // before its checks ran: the instance's own (the emulator gives each instance one, over SSH
    // too), not this host's.
    let waited = err
        .lines()
        .find(|l| l.contains(r#""event":"waiting""#) && l.contains("booted ("))
        .unwrap_or_else(|| panic!("no first-boot event: {err}"));
    let uuid = regex::Regex::new(
        r"booted \(([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\)",
    )
    .expect("regex");
    let seen = uuid
        .captures(waited)
        .map(|c| c[1].to_string())
        .unwrap_or_else(|| panic!("a boot id: {waited}"));
    let host = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    assert_ne!(seen, host.trim(), "{waited}");
    let test_checks: Vec<&serde_json::Value> = art["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["origin"] == "test")
        .collect();
    assert_eq!(test_checks.len(), 1, "{art:#}");
    // How long a consumer waits for an instance of this image.
    assert!(
        art["boot_seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{art:#}"
    );
    assert!(
        err.contains("ready") && err.contains("s after RunInstances"),
        "{err}"
    );
    assert_eq!(test_checks[0]["passed"], true);
    let tested = tested_tag(&sb, &ami);
    assert!(
        tested.as_deref().is_some_and(|t| t.ends_with('Z')),
        "tagged with when it was tested: {tested:?}"
    );
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());

    // Failing: checks that pass on the build instance, a test check that fails on the fresh one.
    add_tested_image(
        &sb,
        "tested-fail",
        "name = \"the agent is installed\"\nfile = \"/opt/not-installed-by-this-image\"",
    );
    let out = sb.bakery(&["bake", "tested-fail", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("failed in test"), "{err}");
    assert!(
        err.contains("failed on a fresh instance launched from ami-"),
        "{err}"
    );
    assert!(err.contains("the agent is installed"), "{err}");
    assert!(err.contains("nothing was left behind"), "{err}");
    assert!(amis(&sb, REGION, "tested-fail").is_empty(), "the AMI went");
    assert_eq!(param(&sb, REGION, "/bakery/tested-fail/latest"), None);
    assert_eq!(
        param(&sb, REGION, "/bakery/tested-fail/channels/candidate"),
        None
    );
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());

    // --skip-test: published, and tagged as such.
    let out = sb.bakery(&[
        "bake",
        "tested-fail",
        "--target",
        "sandbox",
        "--skip-test",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--skip-test"),
        "{}",
        text(&out.stderr)
    );
    let skipped = amis(&sb, REGION, "tested-fail");
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    let tag = tested_tag(&sb, &skipped[0].1);
    assert_eq!(tag.as_deref(), Some("skipped"));
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());
}

#[test]
fn an_interrupt_in_the_test_phase_publishes_nothing_and_leaves_nothing() {
    let sb = Sandbox::start_with(Some(Duration::from_millis(200)));
    let (status, all) = sb.bake_interrupted("sandbox-demo", |v| {
        usize::from(
            v["event"] == "created"
                && v["resource"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("test instance")),
        )
    });
    assert_eq!(status.code(), Some(130), "{all}");
    assert!(all.contains("was cancelled in test"), "{all}");
    assert!(all.contains("nothing was left behind"), "{all}");
    assert!(amis(&sb, REGION, "sandbox-demo").is_empty());
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());
}

#[test]
fn an_image_without_a_test_says_it_was_not_tested() {
    let sb = Sandbox::start();
    sb.add_failing_step();
    // fail-step without its failing recipe: a plain image with no [test].
    let demo =
        std::fs::read_to_string(sb.project.path().join("images/sandbox-demo.toml")).expect("demo");
    let at = demo
        .find("\n# A fresh instance")
        .expect("sandbox-demo has a [test]");
    sb.project.write(
        "images/untested.toml",
        &demo[..at].replace("name = \"sandbox-demo\"", "name = \"untested\""),
    );
    let out = sb.bakery(&["bake", "untested", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("untested is not tested on a fresh instance"),
        "{err}"
    );
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());
}

#[test]
fn bakery_test_checks_a_published_version_and_can_revoke_it() {
    let sb = Sandbox::start();
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let art: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ami = art["amis"][REGION].as_str().expect("ami").to_string();

    // Passing, in production: a fresh instance from what @latest names now, then nothing left.
    let junit = sb.project.path().join("test.xml");
    let reports = sb.project.path().join("reports");
    let out = sb.bakery(&[
        "test",
        "sandbox-demo@latest",
        "--target",
        "sandbox",
        "--json",
        "--junit",
        junit.to_str().expect("path"),
        "--report",
        reports.to_str().expect("path"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(r["version"], "0.1.0");
    assert_eq!(r["ami"], ami.as_str());
    assert_eq!(r["checks"].as_array().map(Vec::len), Some(1), "{r:#}");
    let xml = std::fs::read_to_string(&junit).expect("junit");
    assert!(xml.contains("tests=\"1\" failures=\"0\""), "{xml}");
    assert!(
        xml.contains("<testsuite name=\"sandbox-demo test\""),
        "{xml}"
    );
    let report = read_json(&reports.join("sandbox-demo.test.json"));
    assert_eq!(report["outcome"], "passed", "{report:#}");
    assert_eq!(report["version"], "0.1.0");
    assert_eq!(report["ami"], ami.as_str());
    assert_eq!(report["checks"][0]["passed"], true, "{report:#}");
    assert!(report["phase_seconds"]["test"].is_number(), "{report:#}");
    assert!(report["boot_seconds"].is_number(), "{report:#}");
    let created = report["resources"]["created"].as_array().expect("created");
    assert!(
        created
            .iter()
            .any(|c| c.as_str().is_some_and(|c| c.starts_with("instance i-"))),
        "{report:#}"
    );
    assert!(reports.join("sandbox-demo.test.junit.xml").exists());
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());

    // The image's test now fails (what a broken agent looks like): exit 3, and --on-fail
    // revoke makes resolve refuse the version.
    let path = sb.project.path().join("images/sandbox-demo.toml");
    let toml = std::fs::read_to_string(&path).expect("toml");
    let broken = toml.replace(
        "command = \"uname -s\"\nstdout_contains = \"Linux\"",
        "file = \"/opt/agent-that-is-not-there\"",
    );
    assert_ne!(broken, toml, "sandbox-demo's test check changed shape");
    std::fs::write(&path, broken).expect("write");
    let out = sb.bakery(&[
        "test",
        "sandbox-demo@latest",
        "--target",
        "sandbox",
        "--on-fail",
        "revoke",
        "--report",
        reports.to_str().expect("path"),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let report = read_json(&reports.join("sandbox-demo.test.json"));
    assert_eq!(report["outcome"], "checks_failed", "{report:#}");
    assert_eq!(report["checks"][0]["passed"], false, "{report:#}");
    assert!(
        report["revoked"]
            .as_str()
            .is_some_and(|r| r.contains("failed on a fresh instance")),
        "{report:#}"
    );
    assert_eq!(
        report["resources"]["left_behind"],
        serde_json::json!([]),
        "{report:#}"
    );
    assert!(
        err.contains(&format!("failed on a fresh instance launched from {ami}")),
        "{err}"
    );
    assert!(err.contains("revoked sandbox-demo 0.1.0"), "{err}");
    let out = sb.bakery(&["resolve", "sandbox-demo@=0.1.0", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("revoked"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());

    // An image without test checks has nothing to run: invalid input.
    let demo = std::fs::read_to_string(&path).expect("demo");
    let at = demo
        .find("\n# A fresh instance")
        .expect("sandbox-demo has a [test]");
    sb.project.write(
        "images/untested.toml",
        &demo[..at].replace("name = \"sandbox-demo\"", "name = \"untested\""),
    );
    let out = sb.bakery(&["test", "untested@latest", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("untested has no test checks"),
        "{}",
        text(&out.stderr)
    );
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn copies_to_other_regions_run_alongside_the_test_phase_and_go_when_it_fails() {
    const EU: &str = "eu-west-1";
    // Images (copies too) take a second to become available, as on AWS where a copy takes
    // minutes: a copy started after the test phase would begin after the test instance went.
    let sb = Sandbox::start_env(None, &[("BAKERY_EMULATOR_DELAYS", "available=1")]);
    sb.set_regions(&[REGION, EU]);
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let art: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let copy = art["amis"][EU].as_str().expect("a copy").to_string();
    let calls = sb.actions();
    let at = |action: &str, nth: usize| {
        calls
            .iter()
            .filter(|c| c.action == action)
            .nth(nth)
            .unwrap_or_else(|| panic!("no {action} #{nth}"))
            .t
    };
    let (copied, test_launched, terminated) = (
        at("CopyImage", 0),
        at("RunInstances", 1),
        at("TerminateInstances", 0),
    );
    assert!(
        copied < test_launched,
        "the copy starts before the test instance"
    );
    let available = sb
        .transitions()
        .into_iter()
        .find(|t| t.id == copy && t.state == "available")
        .expect("the copy became available")
        .t;
    assert!(
        test_launched < available && copied < terminated,
        "the copy was under way while the test ran"
    );
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());

    // A failing test check: the copy under way goes with the rest, and nothing is published in
    // either region.
    add_tested_image(
        &sb,
        "tested-fail",
        "name = \"the agent is installed\"\nfile = \"/opt/not-installed-by-this-image\"",
    );
    let copies_before = sb
        .actions()
        .iter()
        .filter(|c| c.action == "CopyImage")
        .count();
    let out = sb.bakery(&["bake", "tested-fail", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("failed in test"), "{err}");
    assert!(err.contains("nothing was left behind"), "{err}");
    let copies_after = sb
        .actions()
        .iter()
        .filter(|c| c.action == "CopyImage")
        .count();
    assert_eq!(copies_after, copies_before + 1, "a copy was started: {err}");
    for region in [REGION, EU] {
        assert!(amis(&sb, region, "tested-fail").is_empty(), "{region}");
        assert_eq!(param(&sb, region, "/bakery/tested-fail/latest"), None);
    }
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());
}
