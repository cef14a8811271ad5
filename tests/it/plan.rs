//! `bakery plan` against the registry in the emulator: up to date, new, changed with the reason,
//! parents before children, and how few calls a plan with nothing changed makes.

use crate::support::sandbox::Sandbox;
use crate::support::text;

fn plan(sb: &Sandbox, images: &[&str]) -> (Option<i32>, serde_json::Value) {
    plan_env(sb, images, &[])
}

/// `plan`, with environment variables set for bakery.
fn plan_env(
    sb: &Sandbox,
    images: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, serde_json::Value) {
    let mut args = vec!["plan", "--target", "sandbox", "--json", "--exit-code"];
    args.extend_from_slice(images);
    let out = sb
        .command(&args)
        .envs(env.iter().copied())
        .output()
        .expect("run bakery");
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    (out.status.code(), v)
}

fn row<'a>(v: &'a serde_json::Value, image: &str) -> &'a serde_json::Value {
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["image"] == image)
        .unwrap_or_else(|| panic!("{image} in {v}"))
}

/// Changes one byte of sandbox-demo's write-motd.sh (a new line at its end).
fn touch_demo_script(sb: &Sandbox) {
    let script = sb
        .project
        .path()
        .join("recipes/sandbox-demo/scripts/write-motd.sh");
    let mut s = std::fs::read_to_string(&script).expect("script");
    s.push('\n');
    std::fs::write(&script, s).expect("write");
}

fn bake(sb: &Sandbox, image: &str) {
    let out = sb.bakery(&["bake", image, "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn nothing_changed_costs_two_calls_and_exits_0() {
    let sb = Sandbox::start();
    let (code, v) = plan(&sb, &["sandbox-demo"]);
    assert_eq!(code, Some(10));
    assert_eq!(row(&v, "sandbox-demo")["status"], "new");
    bake(&sb, "sandbox-demo");
    let before = sb.requests();
    let (code, v) = plan(&sb, &["sandbox-demo"]);
    let calls = sb.requests() - before;
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(row(&v, "sandbox-demo")["status"], "up_to_date");
    assert_eq!(row(&v, "sandbox-demo")["version"], "0.1.0");
    // One DescribeImages for the registry, one GetParameters for the source: nothing per version.
    assert_eq!(calls, 2, "requests the plan made");

    // Nor per image: 25 images sharing one source parameter still cost the same two calls.
    let mut names = sb.add_demo_copies("copy", 24);
    names.push("sandbox-demo".into());
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let before = sb.requests();
    let (code, v) = plan(&sb, &refs);
    assert_eq!(code, Some(10), "{v}");
    assert_eq!(v["images"].as_array().map(Vec::len), Some(25));
    assert_eq!(sb.requests() - before, 2, "requests the plan of 25 made");
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn a_changed_script_is_named_and_children_follow_their_parent() {
    let sb = Sandbox::start();
    sb.add_layered_image("demo-child", "sandbox-demo");
    bake(&sb, "sandbox-demo");
    bake(&sb, "demo-child");
    let (code, v) = plan(&sb, &["demo-child"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(row(&v, "demo-child")["status"], "up_to_date");

    touch_demo_script(&sb);
    let (code, v) = plan(&sb, &["demo-child"]);
    assert_eq!(code, Some(10), "{v}");
    let parent = row(&v, "sandbox-demo");
    assert_eq!(parent["status"], "changed");
    assert_eq!(parent["since"], "0.1.0");
    assert!(
        parent["reasons"]
            .to_string()
            .contains("changed recipes/sandbox-demo/scripts/write-motd.sh"),
        "{parent}"
    );
    let child = row(&v, "demo-child");
    assert_eq!(child["status"], "changed");
    assert!(
        child["reasons"]
            .to_string()
            .contains("parent sandbox-demo is baked first"),
        "{child}"
    );
    // Parents are listed before their children.
    let order: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["image"].as_str())
        .collect();
    assert_eq!(order, ["sandbox-demo", "demo-child"]);

    // After the parent is baked again, the child's reason is the parent's new version.
    bake(&sb, "sandbox-demo");
    let (_, v) = plan(&sb, &["demo-child"]);
    let child = row(&v, "demo-child");
    assert!(
        child["reasons"]
            .to_string()
            .contains("parent 0.1.0 -> 0.1.1"),
        "{child}"
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

/// `plan --json --levels` on the shipped catalog: what a CI matrix fans out, parents' level first.
#[test]
fn levels_group_the_shipped_catalog_for_a_ci_matrix() {
    use crate::support::sandbox::TEAMCITY_TOKEN;
    let sb = Sandbox::start();
    // The agent images read their agent zip and the server's version from the TeamCity server
    // (the version with the token in TEAMCITY_TOKEN): a local one here.
    let server = crate::support::sandbox::InputServer::start(b"agent zip");
    for image in ["teamcity-agent-linux", "teamcity-agent-windows"] {
        let path = format!("images/{image}.toml");
        let toml = std::fs::read_to_string(sb.project.path().join(&path)).expect("image");
        let moved = toml.replace("https://teamcity.example.com", server.root());
        assert_ne!(moved, toml, "{image} names the server");
        sb.project.write(&path, &moved);
    }
    let run_with = |token: Option<&str>, args: &[&str]| {
        let mut c = sb.command(args);
        if let Some(t) = token {
            c.env("TEAMCITY_TOKEN", t);
        }
        c.output().expect("run bakery")
    };
    // Without the token, or with a wrong one, the version cannot be read: an error naming the
    // input (exit 1), never the token itself.
    let args = ["plan", "--target", "sandbox", "teamcity-agent-linux"];
    let out = run_with(None, &args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("input teamcity_server_version: environment variable TEAMCITY_TOKEN"),
        "{err}"
    );
    let out = run_with(Some("wrong-token-3f9d"), &args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("input teamcity_server_version: GET ")
            && err.contains("/app/rest/server/version: answered 401 Unauthorized"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-token-3f9d"),
        "the token is never shown: {err}"
    );

    let out = run_with(
        Some(TEAMCITY_TOKEN),
        &["plan", "--target", "sandbox", "--json", "--levels"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains(TEAMCITY_TOKEN) && !text(&out.stderr).contains(TEAMCITY_TOKEN)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let levels: Vec<std::collections::BTreeSet<String>> =
        serde_json::from_value(v["levels"].clone()).expect("levels: [[image]]");
    let set = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        levels,
        vec![
            set(&[
                "amazon-linux-2023-base",
                "sandbox-demo",
                "windows-2022-base"
            ]),
            set(&["teamcity-agent-linux", "teamcity-agent-windows"]),
        ],
        "{v}"
    );
    assert_eq!(v["to_bake"], 5, "{v}");
    // A child of an image that bakes is new (not 'changed since nothing').
    assert_eq!(row(&v, "teamcity-agent-linux")["status"], "new", "{v}");
    let text_out = run_with(
        Some(TEAMCITY_TOKEN),
        &["plan", "--target", "sandbox", "--levels"],
    );
    let shown = text(&text_out.stdout);
    assert!(
        shown.contains("level 1: teamcity-agent-linux teamcity-agent-windows"),
        "{shown}"
    );
    // Levels need the registry: --offline refuses them with a usage error.
    let out = sb.bakery(&["plan", "--offline", "--levels"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // An image that pins a server version the server contradicts is the user's mistake: plan
    // and bake stop with the located error (exit 2), before any AWS call.
    let path = "images/teamcity-agent-linux.toml";
    let toml = std::fs::read_to_string(sb.project.path().join(path)).expect("image");
    sb.project.write(
        path,
        &toml.replacen(
            "[recipe.with]\nserver_url = ",
            "[recipe.with]\nserver_version = \"2025.03\"\nserver_url = ",
            1,
        ),
    );
    for args in [
        &["plan", "--target", "sandbox", "teamcity-agent-linux"][..],
        &["bake", "teamcity-agent-linux", "--target", "sandbox"][..],
    ] {
        let before = sb.requests();
        let out = run_with(Some(TEAMCITY_TOKEN), args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("server_version is \"2025.03\" but the TeamCity server reports \"2025.07 (build 197242)\"")
                && err.contains("recipes/teamcity-agent/files/buildAgent.properties"),
            "{args:?}: {err}"
        );
        if args[0] == "bake" {
            assert_eq!(sb.requests(), before, "no AWS call before the plan: {err}");
        }
    }
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn a_moved_source_ami_is_the_reason() {
    let sb = Sandbox::start();
    let (first, second) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (ec2, ssm) = sb.clients().await;
        let imgs = ec2
            .describe_images()
            .owners("amazon")
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("name")
                    .values("al2023-ami-2023*")
                    .build(),
            )
            .send()
            .await
            .expect("DescribeImages");
        let ids: Vec<String> = imgs
            .images()
            .iter()
            .filter(|i| i.architecture().map(|a| a.as_str()) == Some("x86_64"))
            .filter_map(|i| i.image_id().map(str::to_string))
            .collect();
        assert!(
            ids.len() >= 2,
            "the emulator seeds several AL2023 AMIs: {ids:?}"
        );
        ssm.put_parameter()
            .name("/sandbox/base-ami")
            .value(&ids[0])
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send()
            .await
            .expect("put");
        (ids[0].clone(), ids[1].clone())
    });
    let demo =
        std::fs::read_to_string(sb.project.path().join("images/sandbox-demo.toml")).expect("demo");
    sb.project.write(
        "images/sandbox-demo.toml",
        &demo.replace(
            "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
            "/sandbox/base-ami",
        ),
    );
    bake(&sb, "sandbox-demo");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (_, ssm) = sb.clients().await;
        ssm.put_parameter()
            .name("/sandbox/base-ami")
            .value(&second)
            .overwrite(true)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send()
            .await
            .expect("put");
    });
    let (code, v) = plan(&sb, &["sandbox-demo"]);
    assert_eq!(code, Some(10));
    let r = row(&v, "sandbox-demo");
    assert_eq!(r["status"], "changed");
    assert_eq!(
        r["reasons"],
        serde_json::json!([format!("source {first} -> {second}")]),
        "{r}"
    );
    let table = text(
        &sb.bakery(&["plan", "--target", "sandbox", "sandbox-demo"])
            .stdout,
    );
    assert!(
        table.contains("changed since 0.1.0") && table.contains("1 to bake"),
        "{table}"
    );
    // The bake's report says the same.
    let r = report_of(&sb, "sandbox-demo");
    assert_eq!(
        r["reasons"],
        serde_json::json!([format!("source {first} -> {second}")]),
        "{r}"
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

/// Bakes `image` with `--report` and returns its report.
fn report_of(sb: &Sandbox, image: &str) -> serde_json::Value {
    report_env(sb, image, &[])
}

/// Whether the report `r` lists check `name` as passed.
fn passed(r: &serde_json::Value, name: &str) -> bool {
    r["checks"]
        .as_array()
        .is_some_and(|a| a.iter().any(|c| c["name"] == name && c["passed"] == true))
}

/// `report_of`, with environment variables set for bakery.
fn report_env(sb: &Sandbox, image: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let dir = sb.project.path().join("out");
    let out = sb
        .command(&[
            "bake",
            image,
            "--target",
            "sandbox",
            "--report",
            dir.to_str().unwrap(),
        ])
        .envs(env.iter().copied())
        .output()
        .expect("run bakery");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let path = dir.join(format!("{image}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("report")).expect("report json")
}

/// A report says why the image was baked (new, a changed file, a new parent version) and what
/// it cost by the target's price table: checked against the sum computed here from the table
/// and the instance-seconds the report lists.
#[test]
fn reports_say_why_and_what_it_cost() {
    let sb = Sandbox::start();
    sb.add_layered_image("demo-child", "sandbox-demo");
    sb.project.write(
        "prices/team.toml",
        "name = \"team\"\ndate = \"2026-10-15\"\ncurrency = \"EUR\"\n[regions.us-east-1]\nsnapshot_gb_month = 0.5\nvolume_gb_month = { gp3 = 7.3 }\nlinux = { \"t3.micro\" = 36.0 }\n",
    );
    let toml = std::fs::read_to_string(sb.project.path().join("bakery.toml")).expect("toml");
    sb.project.write(
        "bakery.toml",
        &format!("{toml}prices = \"prices/team.toml\"\n"),
    );
    let r = report_of(&sb, "sandbox-demo");
    assert_eq!(r["reasons"], serde_json::json!(["new"]), "{r}");
    let cost = &r["cost"];
    assert_eq!(cost["price_table"], "team", "{cost}");
    assert_eq!(cost["price_date"], "2026-10-15");
    assert_eq!(cost["price_source"], "prices/team.toml");
    assert_eq!(cost["currency"], "EUR");
    let instances = cost["instances"].as_array().expect("instances");
    let roles: Vec<&str> = instances
        .iter()
        .filter_map(|i| i["role"].as_str())
        .collect();
    assert_eq!(roles, ["build", "test"], "{cost}");
    let mut want = 0.0;
    for i in instances {
        let s = i["seconds"].as_f64().unwrap().max(60.0);
        assert_eq!(i["billed_seconds"].as_f64(), Some(s));
        // 36/h is 0.01/s; 8 GiB of gp3 at 7.3 per GiB-month is 8 * 7.3 / (730 * 3600) per second.
        want += 0.01 * s + 8.0 * 7.3 * s / (730.0 * 3600.0);
    }
    let bake = cost["bake"].as_f64().unwrap();
    assert!(
        (bake - want).abs() < 1e-9,
        "cost {bake}, computed {want}: {cost}"
    );
    // One region: 8 GiB of snapshots at 0.5 per GiB-month.
    assert!(
        (cost["storage_per_month"].as_f64().unwrap() - 4.0).abs() < 1e-9,
        "{cost}"
    );
    assert_eq!(cost.get("unpriced"), None, "{cost}");

    let r = report_of(&sb, "demo-child");
    assert_eq!(r["reasons"], serde_json::json!(["new"]), "{r}");

    touch_demo_script(&sb);
    let r = report_of(&sb, "sandbox-demo");
    assert_eq!(
        r["reasons"],
        serde_json::json!(["changed recipes/sandbox-demo/scripts/write-motd.sh"]),
        "{r}"
    );
    let r = report_of(&sb, "demo-child");
    let reasons = r["reasons"].to_string();
    assert!(reasons.contains("parent 0.1.0 -> 0.1.1"), "{r}");

    // A price table with a mistake is refused before anything is created, located.
    sb.project.write(
        "prices/team.toml",
        "name = \"team\"\ndate = \"last week\"\ncurrency = \"EUR\"\nregions = {}\n",
    );
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("prices/team.toml:2:"), "{err}");
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn baking_many_goes_parents_first_and_a_failure_stops_only_its_descendants() {
    let sb = Sandbox::start();
    sb.add_layered_image("demo-child", "sandbox-demo");
    sb.add_failing_step();
    sb.add_layered_image("fail-child", "fail-step");

    let out = sb.bakery(&[
        "bake",
        "demo-child",
        "fail-child",
        "sandbox-demo",
        "fail-step",
        "--target",
        "sandbox",
        "--jobs",
        "2",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let outcome = |image: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|o| o["image"] == image)
            .map(|o| o["outcome"].clone())
            .unwrap_or_default()
    };
    assert_eq!(outcome("sandbox-demo"), "baked");
    assert_eq!(
        outcome("demo-child"),
        "baked",
        "the child ran after its parent's version was published"
    );
    assert_eq!(outcome("fail-step"), "failed");
    assert_eq!(
        outcome("fail-child"),
        "skipped",
        "a failure stops only its descendants"
    );
    let child = v
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["image"] == "demo-child")
        .unwrap();
    assert_eq!(child["version"], "2.0.0");

    // Nothing changed since: --changed bakes nothing.
    let out = sb.bakery(&[
        "bake",
        "--changed",
        "sandbox-demo",
        "demo-child",
        "--target",
        "sandbox",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("nothing to bake"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn an_ami_filter_resolves_to_the_newest_match_and_bakes() {
    let sb = Sandbox::start();
    let demo =
        std::fs::read_to_string(sb.project.path().join("images/sandbox-demo.toml")).expect("demo");
    sb.project.write(
        "images/sandbox-demo.toml",
        &demo.replace(
            "ssm_parameter = \"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64\"",
            "ami_filter = { name = \"al2023-ami-2023*\", owners = [\"amazon\"] }",
        ),
    );
    let newest = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (ec2, _) = sb.clients().await;
        let imgs = ec2
            .describe_images()
            .owners("amazon")
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("name")
                    .values("al2023-ami-2023*")
                    .build(),
            )
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("architecture")
                    .values("x86_64")
                    .build(),
            )
            .send()
            .await
            .expect("DescribeImages");
        imgs.images()
            .iter()
            .max_by(|a, b| a.creation_date().cmp(&b.creation_date()))
            .and_then(|i| i.image_id())
            .expect("a seeded AL2023 AMI")
            .to_string()
    });
    let (code, v) = plan(&sb, &["sandbox-demo"]);
    assert_eq!(code, Some(10));
    assert_eq!(row(&v, "sandbox-demo")["source_ami"], newest);
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let art: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(art["source_ami"], newest);
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn two_runners_on_one_image_never_publish_one_version_or_one_fingerprint_twice() {
    // Every emulator call takes 100 ms, so the two bakes overlap all the way through.
    let sb = Sandbox::start_with(Some(std::time::Duration::from_millis(100)));
    let spawn = || {
        sb.command(&["bake", "sandbox-demo", "--target", "sandbox", "--json"])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    let codes = [a.status.code(), b.status.code()];
    assert!(
        codes.contains(&Some(0)),
        "one of them bakes: {}\n{}",
        text(&a.stderr),
        text(&b.stderr)
    );
    for o in [&a, &b] {
        if !o.status.success() {
            let err = text(&o.stderr);
            assert!(
                err.contains("another runner") && err.contains("nothing was left behind"),
                "{err}"
            );
        }
    }
    let images = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (ec2, _) = sb.clients().await;
        let out = ec2
            .describe_images()
            .owners("self")
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:bakery:image")
                    .values("sandbox-demo")
                    .build(),
            )
            .send()
            .await
            .expect("DescribeImages");
        out.images()
            .iter()
            .map(|i| {
                let tag = |k: &str| {
                    i.tags()
                        .iter()
                        .find(|t| t.key() == Some(k))
                        .and_then(|t| t.value())
                        .unwrap_or_default()
                        .to_string()
                };
                (tag("bakery:version"), tag("bakery:fingerprint"))
            })
            .collect::<Vec<_>>()
    });
    let mut versions: Vec<&String> = images.iter().map(|(v, _)| v).collect();
    let mut fingerprints: Vec<&String> = images.iter().map(|(_, f)| f).collect();
    versions.sort();
    versions.dedup();
    fingerprints.sort();
    fingerprints.dedup();
    assert_eq!(versions.len(), images.len(), "no version twice: {images:?}");
    assert_eq!(
        fingerprints.len(),
        images.len(),
        "no fingerprint twice: {images:?}"
    );
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

/// Live inputs (`[inputs.<name>] http = …`): read at plan and bake time from a local server whose
/// body the test changes; an unchanged input costs a conditional request and no download, a
/// changed one is the plan's reason and the bake downloads and verifies the new body on the
/// instance; an unreachable one is an error naming it, with nothing created.
#[test]
fn a_live_input_is_read_conditionally_and_feeds_the_plan_and_the_bake() {
    use sha2::Digest;
    let sb = Sandbox::start();
    let mut server = crate::support::sandbox::InputServer::start(b"agent build 1");
    sb.project.write(
        "recipes/agent-zip/recipe.toml",
        "platforms = [\"linux\"]\n\n[params.url]\ntype = \"string\"\n\n[inputs.agent_zip]\nhttp = \"{{ params.url }}\"\n\n[[step]]\nname = \"fetch the agent\"\n\n[step.download]\nurl = \"{{ inputs.agent_zip.source }}\"\nsha256 = \"{{ inputs.agent_zip.sha256 }}\"\ndestination = \"agent.zip\"\n",
    );
    let image = sb.demo_variant(
        "agent-demo",
        &format!(
            "[[recipe]]\nuse = \"agent-zip\"\nwith = {{ url = \"{}\" }}\n\n",
            server.url
        ),
    );
    sb.project.write("images/agent-demo.toml", &image);
    let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    let input_of = |r: &serde_json::Value| -> String {
        r["fingerprint_inputs"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["label"] == "input agent_zip"))
            .and_then(|i| i["sha256"].as_str())
            .unwrap_or_default()
            .to_string()
    };

    let (code, v) = plan(&sb, &["agent-demo"]);
    assert_eq!(code, Some(10), "{v}");
    assert_eq!(row(&v, "agent-demo")["status"], "new");
    let r = report_of(&sb, "agent-demo");
    assert_eq!(r["reasons"], serde_json::json!(["new"]), "{r}");
    assert_eq!(input_of(&r), sha(b"agent build 1"), "{r}");

    // Unchanged: one conditional request, no body.
    let (requests, bodies) = (server.requests(), server.bodies_sent());
    let (code, v) = plan(&sb, &["agent-demo"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(row(&v, "agent-demo")["status"], "up_to_date");
    assert_eq!(server.requests(), requests + 1, "one request");
    assert_eq!(server.bodies_sent(), bodies, "no body downloaded");

    // Changed: the reason names the input and both hashes; the bake fetches the new body on the
    // instance, where the download step checks it against the new sha256.
    server.set_body(b"agent build 2");
    let (old, new) = (sha(b"agent build 1"), sha(b"agent build 2"));
    let want = format!("input agent_zip: sha256 {}… -> {}…", &old[..8], &new[..8]);
    let (code, v) = plan(&sb, &["agent-demo"]);
    assert_eq!(code, Some(10), "{v}");
    // (The download step that uses the sha256 rendered differently too, and says so.)
    let reasons = row(&v, "agent-demo")["reasons"].clone();
    assert_eq!(reasons[0], want, "{v}");
    let r = report_of(&sb, "agent-demo");
    assert_eq!(r["reasons"][0], want, "{r}");
    assert_eq!(input_of(&r), new, "{r}");
    assert_eq!(r["version"], "0.1.1", "{r}");

    // Unreachable: an error naming the input (exit 1), never "unchanged", and nothing created.
    server.stop();
    let out = sb.bakery(&["plan", "--target", "sandbox", "agent-demo"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("input agent_zip: GET http://127.0.0.1:"),
        "{err}"
    );
    let before = sb.requests();
    let out = sb.bakery(&["bake", "agent-demo", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed in plan: input agent_zip: GET"),
        "{err}"
    );
    assert_eq!(
        sb.requests(),
        before,
        "no AWS call before the inputs are read"
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

/// An SSM parameter as a live input of the image itself: its value reaches the templates (a
/// check on the instance sees it), a new value is the plan's reason, a missing parameter is an
/// error naming the input.
/// A `body = "text"` input read with a bearer token (the TeamCity version endpoint of the local
/// input server): its value reaches a check on the instance, a new version is the plan's reason,
/// and the token never shows.
#[test]
fn a_text_input_read_with_a_token_feeds_the_instance_and_the_plan() {
    use crate::support::sandbox::TEAMCITY_TOKEN;
    let sb = Sandbox::start();
    let server = crate::support::sandbox::InputServer::start(b"unused");
    let image = sb.demo_variant(
        "server-version-demo",
        &format!(
            "[inputs.server_version]\nhttp = \"{}/app/rest/server/version\"\nbody = \"text\"\nbearer_token_env = \"TEAMCITY_TOKEN\"\n\n[[check]]\nname = \"the server version reached the instance\"\ncommand = \"echo {{{{ inputs.server_version.value | sh }}}}\"\nstdout_contains = \"2025.07 (build 197242)\"\n\n",
            server.root()
        ),
    );
    sb.project.write("images/server-version-demo.toml", &image);
    let env = [("TEAMCITY_TOKEN", TEAMCITY_TOKEN)];
    let r = report_env(&sb, "server-version-demo", &env);
    assert!(passed(&r, "the server version reached the instance"), "{r}");
    assert!(!r.to_string().contains(TEAMCITY_TOKEN), "{r}");
    let (code, v) = plan_env(&sb, &["server-version-demo"], &env);
    assert_eq!(code, Some(0), "unchanged: {v}");
    server.set_version("2025.11 (build 208000)");
    let (code, v) = plan_env(&sb, &["server-version-demo"], &env);
    assert_eq!(code, Some(10), "{v}");
    let reasons = row(&v, "server-version-demo")["reasons"].to_string();
    assert!(reasons.contains("input server_version: sha256 "), "{v}");
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn an_ssm_parameter_input_feeds_the_templates_and_the_plan() {
    let sb = Sandbox::start();
    let put = |value: &str| {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let (_, ssm) = sb.clients().await;
            ssm.put_parameter()
                .name("/platform/teamcity/server-version")
                .value(value)
                .overwrite(true)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .send()
                .await
                .expect("put");
        })
    };
    put("2025.07");
    let demo =
        std::fs::read_to_string(sb.project.path().join("images/sandbox-demo.toml")).expect("demo");
    let image = demo.replace("name = \"sandbox-demo\"", "name = \"versioned\"")
        + "\n[inputs.server_version]\nssm_parameter = \"/platform/teamcity/server-version\"\n\n[[check]]\nname = \"the server version reached the instance\"\ncommand = \"echo {{ inputs.server_version.value | sh }}\"\nstdout_contains = \"2025.07\"\n";
    sb.project.write("images/versioned.toml", &image);
    let r = report_of(&sb, "versioned");
    assert!(passed(&r, "the server version reached the instance"), "{r}");
    let (code, _) = plan(&sb, &["versioned"]);
    assert_eq!(code, Some(0), "unchanged");
    put("2025.11");
    let (code, v) = plan(&sb, &["versioned"]);
    assert_eq!(code, Some(10), "{v}");
    let reasons = row(&v, "versioned")["reasons"].to_string();
    assert!(reasons.contains("input server_version: sha256 "), "{v}");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (_, ssm) = sb.clients().await;
        ssm.delete_parameter()
            .name("/platform/teamcity/server-version")
            .send()
            .await
            .expect("delete");
    });
    let out = sb.bakery(&["plan", "--target", "sandbox", "versioned"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "input server_version: SSM parameter /platform/teamcity/server-version does not exist"
        ),
        "{err}"
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

/// A buildAgentFull.zip as a TeamCity server serves it (bin/agent.sh, conf, launcher and lib at
/// its root), built by Python's zipfile; `build` tells two builds apart.
fn agent_zip(dir: &std::path::Path, build: &str) -> Vec<u8> {
    let path = dir.join(format!("{build}.zip"));
    let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z:\n    for name, data in zip(sys.argv[2::2], sys.argv[3::2]):\n        z.writestr(name, data)\n";
    // Not `exec sleep`: the image's test looks for a process running from the agent's home.
    let agent = format!("#!/bin/sh\necho \"TeamCity agent {build}\"\nsleep 600\n");
    let files = [
        ("bin/agent.sh", agent.as_str()),
        ("conf/buildAgent.dist.properties", "serverUrl=\n"),
        (
            "launcher/bin/TeamCityAgentService-linux-x86-64",
            "launcher\n",
        ),
        ("lib/agent.jar", build),
    ];
    let mut c = std::process::Command::new("python3");
    c.arg("-c").arg(script).arg(&path);
    for (name, data) in files {
        c.arg(name).arg(data);
    }
    let out = c.output().expect("run python3");
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::read(&path).expect("agent zip")
}

/// The shipped teamcity-agent-linux image, baked for real with the real teamcity-agent recipe:
/// the agent account, the unpacked zip checked against the input's sha256, the systemd unit
/// enabled and stopped, linux-cleanup, then the image's test on a fresh instance whose user data
/// names the agent and starts it. A new zip on the server is the plan's reason and the next bake
/// installs it. The sandbox's instances run root sessions in a copy-on-write root filesystem of
/// their own, which the AMI carries to the test instance (scripts/emulator.py, "Root instances"),
/// with systemd's manager verbs played by a stand-in (no systemd runs here): this host gets no
/// account, unit or /opt.
#[test]
fn the_linux_agent_image_bakes_each_new_zip_the_server_serves() {
    use crate::support::sandbox::TEAMCITY_TOKEN;
    use sha2::Digest;
    let sb = Sandbox::start();
    let zips = tempfile::tempdir().expect("tempdir");
    let (zip1, zip2) = (
        agent_zip(zips.path(), "build-1"),
        agent_zip(zips.path(), "build-2"),
    );
    let server = crate::support::sandbox::InputServer::start(&zip1);

    // What the sandbox cannot give, changed in the shipped file (each edit must apply): the
    // parent image and the JDK and git recipes need the network (the sandbox host has none), so
    // the Temurin check goes too. The sandbox has no sudo: the image logs in as root instead of
    // ec2-user.
    let path = "images/teamcity-agent-linux.toml";
    let shipped = std::fs::read_to_string(sb.project.path().join(path)).expect("image");
    let cut = |s: &str, from: &str, to: &str| -> String {
        let (a, b) = (s.find(from), s.find(to));
        let (Some(a), Some(b)) = (a, b) else {
            panic!("{path} no longer has {from:?} .. {to:?}")
        };
        format!("{}{}", &s[..a], &s[b..])
    };
    let mut toml = cut(
        &shipped,
        "[[recipe]]\nuse = \"jdk\"",
        "[[recipe]]\nuse = \"teamcity-agent\"",
    );
    toml = cut(
        &toml,
        "[[check]]\nname = \"login shells get Temurin",
        "# A fresh instance from the new AMI",
    );
    for (from, to) in [
        (
            "image = \"amazon-linux-2023-base@^1\"",
            "ssm_parameter = \"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64\"",
        ),
        ("user = \"ec2-user\"", "user = \"root\""),
        // The sandbox boots in a second: a broken boot fails in 2 minutes, not 15.
        ("timeout = \"15m\"", "timeout = \"2m\""),
        ("https://teamcity.example.com", server.root()),
    ] {
        assert!(toml.contains(from), "{path} no longer has {from:?}");
        toml = toml.replace(from, to);
    }
    sb.project.write(path, &toml);
    let bakery_toml = sb.project.path().join("bakery.toml");
    let target = std::fs::read_to_string(&bakery_toml).expect("bakery.toml");
    let as_root = target.replace("ssh_user = \"bakery-build\"", "ssh_user = \"root\"");
    assert_ne!(as_root, target, "the sandbox target names its SSH user");
    std::fs::write(&bakery_toml, as_root).expect("bakery.toml");

    let env = [("TEAMCITY_TOKEN", TEAMCITY_TOKEN)];
    let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    let image = "teamcity-agent-linux";
    let agent_checks = [
        "agent service starts at boot and is stopped",
        "agent comes from the pinned server build",
        "buildAgent.properties points at the server",
        "no agent name or authorization token is baked in",
        "agent is not running",
        "agent configuration is world-readable, not writable",
        // The test phase, on a fresh instance from the new AMI, with the cloud profile's user data.
        "agent service runs after a fresh boot",
        "the agent on a fresh instance is the pinned server build",
        "buildAgent.properties carries the name the cloud profile gave",
        "the running agent is the TeamCity build this image was baked for",
    ];
    let baked = |want_sha: &str, version: &str| {
        let r = report_env(&sb, image, &env);
        assert_eq!(r["version"], version, "{r}");
        for check in agent_checks {
            assert!(passed(&r, check), "{check}: {r}");
        }
        let input = r["fingerprint_inputs"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["label"] == "input teamcity_agent"))
            .and_then(|i| i["sha256"].as_str())
            .unwrap_or_default()
            .to_string();
        assert_eq!(input, want_sha, "{r}");
        r
    };

    let (code, v) = plan_env(&sb, &[image], &env);
    assert_eq!(code, Some(10), "{v}");
    assert_eq!(row(&v, image)["status"], "new", "{v}");
    baked(&sha(&zip1), "1.4.0");

    let (code, v) = plan_env(&sb, &[image], &env);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(row(&v, image)["status"], "up_to_date", "{v}");

    // The server is upgraded: a new zip. The plan names the input; the bake unpacks the new zip
    // (the check "agent comes from the pinned server build" reads the sha256 the instance wrote).
    server.set_body(&zip2);
    let (old, new) = (sha(&zip1), sha(&zip2));
    let (code, v) = plan_env(&sb, &[image], &env);
    assert_eq!(code, Some(10), "{v}");
    assert_eq!(
        row(&v, image)["reasons"][0],
        format!(
            "input teamcity_agent: sha256 {}… -> {}…",
            &old[..8],
            &new[..8]
        ),
        "{v}"
    );
    baked(&new, "1.4.1");

    // Everything the recipe did as root stayed in the instances' own filesystems.
    assert!(!std::path::Path::new("/opt/buildagent").exists());
    assert!(!std::path::Path::new("/etc/systemd/system/buildagent.service").exists());
    let id = std::process::Command::new("id")
        .arg("buildagent")
        .output()
        .expect("id");
    assert!(!id.status.success(), "this host has no buildagent account");
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}
