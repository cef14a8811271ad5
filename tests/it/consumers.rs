//! Consumers in other accounts: the registry mirrored into them (read back with their own
//! credentials), a consumer that cannot be reached and `bakery sync`, pins resolved from a
//! consumer account, and retention that asks the consumers what they launch.

use std::process::Output;

use crate::support::sandbox::Sandbox;
use crate::support::{ok, rt, text};

const A: &str = "222222222222";
const B: &str = "333333333333";
const ROLE: &str = "bakery-consumer";
const REGION: &str = "us-east-1";

fn bake(sb: &Sandbox) -> serde_json::Value {
    let s = ok(sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox", "--json"]));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// A sandbox whose target has consumers A (external id required) and B; `with_b_role`: B's
/// role exists yet. No automatic retention: the tests decide.
fn with_consumers(with_b_role: bool) -> Sandbox {
    let sb = Sandbox::start();
    sb.create_consumer_role(A, ROLE, Some("team-a-7f3"));
    if with_b_role {
        sb.create_consumer_role(B, ROLE, None);
    }
    sb.add_consumers(&[(A, ROLE, Some("team-a-7f3")), (B, ROLE, None)]);
    // The consumers launch the AMIs: their snapshots need a key whose policy lets them.
    sb.set_kms_key(&[A, B]);
    let path = "images/sandbox-demo.toml";
    let demo = std::fs::read_to_string(sb.project.path().join(path)).expect("demo");
    sb.project.write(path, &demo.replace("keep = 3\n", ""));
    sb
}

/// A parameter as the consumer account reads it (a team's Terraform `aws_ssm_parameter`).
fn consumer_param(sb: &Sandbox, account: &str, name: &str) -> Option<String> {
    rt().block_on(async {
        let ssm = aws_sdk_ssm::Client::new(&sb.account_config(account, REGION).await);
        crate::support::parameter(&ssm, name).await
    })
}

/// Whether the consumer account can see (and so launch) the AMI.
fn consumer_sees(sb: &Sandbox, account: &str, ami: &str) -> bool {
    rt().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&sb.account_config(account, REGION).await);
        ec2.describe_images()
            .image_ids(ami)
            .send()
            .await
            .map(|o| o.images().iter().any(|i| i.image_id() == Some(ami)))
            .unwrap_or(false)
    })
}

/// Adds a target `team-a` with consumer A's view: the same emulator, `consumer = true`.
fn add_consumer_target(sb: &Sandbox) {
    let path = sb.project.path().join("bakery.toml");
    let toml = std::fs::read_to_string(&path).expect("bakery.toml");
    let table: toml::Table = toml::from_str(&toml).expect("toml");
    let endpoint = table["targets"]["sandbox"]["endpoint_url"]
        .as_str()
        .expect("endpoint")
        .to_string();
    std::fs::write(
        path,
        format!("{toml}\n[targets.team-a]\nregions = [\"{REGION}\"]\nendpoint_url = \"{endpoint}\"\nconsumer = true\n"),
    )
    .expect("write");
}

/// `bakery` run with consumer A's credentials.
fn as_team_a(sb: &Sandbox, args: &[&str]) -> Output {
    let mut c = sb.command(args);
    c.envs(sb.account_env(A));
    c.output().expect("run bakery")
}

#[test]
fn a_bake_publishes_into_every_consumer_and_promote_rollback_revoke_follow() {
    let sb = with_consumers(true);
    let first = bake(&sb);
    let ami0 = first["amis"][REGION].as_str().expect("ami").to_string();
    let consumers = first["consumers"]
        .as_array()
        .expect("consumers in the report");
    assert_eq!(consumers.len(), 2, "{first}");
    for c in consumers {
        assert!(c.get("error").is_none(), "{c}");
        assert!(c["written"].as_u64().unwrap_or(0) >= 3, "{c}");
    }
    for account in [A, B] {
        // Terraform in the consumer account: the parameter names the AMI, which it can launch.
        assert_eq!(
            consumer_param(&sb, account, "/bakery/sandbox-demo/latest").as_deref(),
            Some(ami0.as_str())
        );
        assert_eq!(
            consumer_param(&sb, account, "/bakery/sandbox-demo/0.1.0").as_deref(),
            Some(ami0.as_str())
        );
        assert_eq!(
            consumer_param(&sb, account, "/bakery/sandbox-demo/channels/candidate").as_deref(),
            Some(ami0.as_str())
        );
        assert!(
            consumer_sees(&sb, account, &ami0),
            "{account} cannot launch {ami0}"
        );
    }

    // Pins from consumer A's account, with its own credentials.
    add_consumer_target(&sb);
    sb.project.write(
        "bakery.lock.toml",
        "[[image]]\nname = \"sandbox-demo\"\nrequirement = \"^0.1\"\n",
    );
    let out = ok(as_team_a(&sb, &["lock", "--target", "team-a"]));
    assert!(out.contains("sandbox-demo ^0.1 -> 0.1.0"), "{out}");

    let second = bake(&sb);
    let ami1 = second["amis"][REGION].as_str().expect("ami").to_string();
    assert_eq!(
        consumer_param(&sb, B, "/bakery/sandbox-demo/latest").as_deref(),
        Some(ami1.as_str())
    );
    let out = ok(as_team_a(&sb, &["outdated", "--target", "team-a"]));
    assert!(
        out.contains("sandbox-demo locked 0.1.0 (^0.1): newer 0.1.1"),
        "{out}"
    );
    let out = ok(as_team_a(&sb, &["lock", "--target", "team-a"]));
    assert!(out.contains("sandbox-demo ^0.1 -> 0.1.1"), "{out}");
    ok(as_team_a(&sb, &["lock", "--check", "--target", "team-a"]));
    // The consumer's target cannot move versions.
    let out = as_team_a(
        &sb,
        &[
            "promote",
            "sandbox-demo@0.1.0",
            "stable",
            "--target",
            "team-a",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("consumer account"),
        "{}",
        text(&out.stderr)
    );

    // Promote follows.
    let out = ok(sb.bakery(&[
        "promote",
        "sandbox-demo@0.1.0",
        "stable",
        "--target",
        "sandbox",
    ]));
    assert!(out.contains(&format!("consumer {A} ({REGION})")), "{out}");
    for account in [A, B] {
        assert_eq!(
            consumer_param(&sb, account, "/bakery/sandbox-demo/channels/stable").as_deref(),
            Some(ami0.as_str())
        );
        assert_eq!(
            consumer_param(&sb, account, "/bakery/sandbox-demo/channel-versions/stable").as_deref(),
            Some("0.1.0")
        );
    }
    // Rollback follows: candidate goes back from 0.1.1 to 0.1.0.
    ok(sb.bakery(&[
        "rollback",
        "sandbox-demo",
        "candidate",
        "--target",
        "sandbox",
    ]));
    assert_eq!(
        consumer_param(&sb, A, "/bakery/sandbox-demo/channels/candidate").as_deref(),
        Some(ami0.as_str())
    );

    // Revoke follows: latest moves back in the consumers, and their pins see why.
    ok(sb.bakery(&[
        "revoke",
        "sandbox-demo@0.1.1",
        "--reason",
        "CVE-2026-4242 in the agent",
        "--target",
        "sandbox",
    ]));
    assert_eq!(
        consumer_param(&sb, B, "/bakery/sandbox-demo/latest").as_deref(),
        Some(ami0.as_str())
    );
    let out = as_team_a(&sb, &["lock", "--check", "--target", "team-a"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("sandbox-demo 0.1.1: revoked: CVE-2026-4242 in the agent"),
        "{}",
        text(&out.stderr)
    );
    let out = ok(as_team_a(
        &sb,
        &[
            "resolve",
            "sandbox-demo@^0.1",
            "--target",
            "team-a",
            "--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["version"], "0.1.0", "{out}");
    let out = as_team_a(
        &sb,
        &["resolve", "sandbox-demo@=0.1.1", "--target", "team-a"],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("revoked: CVE-2026-4242"),
        "{}",
        text(&out.stderr)
    );
    // Nothing changed since: a sync is a no-op.
    let out = ok(sb.bakery(&["sync", "sandbox-demo", "--target", "sandbox"]));
    assert_eq!(out.matches("up to date").count(), 2, "{out}");
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn an_unreachable_consumer_fails_alone_and_sync_finishes_the_job() {
    let sb = with_consumers(false);
    let out = sb
        .command(&["bake", "sandbox-demo", "--target", "sandbox", "--json"])
        .output()
        .expect("bake");
    // The version is published: B's role is missing, which fails B, not the bake.
    let s = ok(out.clone());
    let art: serde_json::Value = serde_json::from_str(&s).expect("json");
    let ami = art["amis"][REGION].as_str().expect("ami").to_string();
    let failed: Vec<&serde_json::Value> = art["consumers"]
        .as_array()
        .expect("consumers")
        .iter()
        .filter(|c| c.get("error").is_some())
        .collect();
    assert_eq!(failed.len(), 1, "{art}");
    assert_eq!(failed[0]["account"], B);
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("AccessDenied"),
        "{art}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("consumer {B} ({REGION}) not updated"))
            && stderr.contains("bakery sync sandbox-demo --target sandbox"),
        "{stderr}"
    );
    assert_eq!(
        consumer_param(&sb, A, "/bakery/sandbox-demo/latest").as_deref(),
        Some(ami.as_str())
    );
    assert_eq!(consumer_param(&sb, B, "/bakery/sandbox-demo/latest"), None);

    let out = sb.bakery(&["sync", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains(B), "{}", text(&out.stderr));

    sb.create_consumer_role(B, ROLE, None);
    let out = ok(sb.bakery(&["sync", "--target", "sandbox"]));
    assert!(out.contains(&format!("consumer {B} ({REGION}): ")), "{out}");
    assert_eq!(
        consumer_param(&sb, B, "/bakery/sandbox-demo/latest").as_deref(),
        Some(ami.as_str())
    );
    assert!(consumer_sees(&sb, B, &ami));
    let again = ok(sb.bakery(&["sync", "--target", "sandbox", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&again).expect("json");
    for s in v["images"]["sandbox-demo"].as_array().expect("synced") {
        assert_eq!(s["written"], 0, "{again}");
        assert_eq!(s["removed"], 0, "{again}");
    }
    // A consumer with a wrong external id is refused by STS, and said so.
    let path = sb.project.path().join("bakery.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, toml.replace("team-a-7f3", "wrong-id")).unwrap();
    let out = sb.bakery(&["sync", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("consumer account {A}")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn prune_asks_every_consumer_what_it_launches() {
    let sb = with_consumers(true);
    let arts: Vec<serde_json::Value> = (0..3).map(|_| bake(&sb)).collect();
    let ami = |i: usize| arts[i]["amis"][REGION].as_str().expect("ami").to_string();
    // Consumer A runs an instance of 0.1.0; consumer B's launch template names 0.1.1 in a
    // version that is neither its default nor its latest.
    let (instance, template) = rt().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&sb.account_config(A, REGION).await);
        let run = ec2
            .run_instances()
            .image_id(ami(0))
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect("RunInstances in A");
        let instance = run.instances()[0].instance_id().unwrap().to_string();
        // ... and an Auto Scaling group whose launch configuration names 0.1.0.
        let asg = aws_sdk_autoscaling::Client::new(&sb.account_config(A, REGION).await);
        asg.create_launch_configuration()
            .launch_configuration_name("agents-lc")
            .image_id(ami(0))
            .instance_type("t3.micro")
            .send()
            .await
            .expect("CreateLaunchConfiguration in A");
        asg.create_auto_scaling_group()
            .auto_scaling_group_name("build-agents")
            .launch_configuration_name("agents-lc")
            .availability_zones("us-east-1a")
            .min_size(0)
            .max_size(0)
            .send()
            .await
            .expect("CreateAutoScalingGroup in A");
        let ec2 = aws_sdk_ec2::Client::new(&sb.account_config(B, REGION).await);
        let data = |ami: String| {
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(ami)
                .build()
        };
        let lt = ec2
            .create_launch_template()
            .launch_template_name("agents")
            .launch_template_data(data(ami(2)))
            .send()
            .await
            .expect("CreateLaunchTemplate in B");
        let id = lt
            .launch_template()
            .unwrap()
            .launch_template_id()
            .unwrap()
            .to_string();
        for a in [ami(1), ami(2)] {
            ec2.create_launch_template_version()
                .launch_template_id(&id)
                .launch_template_data(data(a))
                .send()
                .await
                .expect("CreateLaunchTemplateVersion");
        }
        (instance, id)
    });
    let prune = |dry: bool| {
        let mut args = vec![
            "prune",
            "sandbox-demo",
            "--keep",
            "1",
            "--target",
            "sandbox",
            "--json",
        ];
        if dry {
            args.push("--dry-run");
        }
        sb.bakery(&args)
    };
    let out = ok(prune(false));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let why = |version: &str| -> String {
        v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["version"] == version)
            .map(|d| d["kept_because"].to_string())
            .unwrap_or_default()
    };
    assert!(
        why("0.1.0").contains(&format!("instance {instance} (account {A}, {REGION})")),
        "{out}"
    );
    assert!(
        why("0.1.0").contains(&format!(
            "launch configuration agents-lc (account {A}, {REGION})"
        )) && why("0.1.0").contains(&format!(
            "auto scaling group build-agents (account {A}, {REGION})"
        )),
        "{out}"
    );
    assert!(
        why("0.1.1").contains(&format!(
            "launch template agents v2 (account {B}, {REGION})"
        )),
        "{out}"
    );
    assert!(
        v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["pruned"] == false),
        "{out}"
    );

    // Consumer B cannot be asked: prune refuses and removes nothing.
    let path = sb.project.path().join("bakery.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        toml.replace(&format!("{B}:role/{ROLE}"), &format!("{B}:role/gone")),
    )
    .unwrap();
    let out = prune(false);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains(&format!("consumer account {B}"))
            && text(&out.stderr).contains("nothing is pruned"),
        "{}",
        text(&out.stderr)
    );
    assert!(consumer_sees(&sb, A, &ami(0)));
    std::fs::write(&path, toml).unwrap();

    // Once they are gone, the versions go, and so do their parameters in the consumers.
    rt().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&sb.account_config(A, REGION).await);
        ec2.terminate_instances()
            .instance_ids(&instance)
            .send()
            .await
            .expect("terminate");
        let asg = aws_sdk_autoscaling::Client::new(&sb.account_config(A, REGION).await);
        asg.delete_auto_scaling_group()
            .auto_scaling_group_name("build-agents")
            .send()
            .await
            .expect("DeleteAutoScalingGroup");
        asg.delete_launch_configuration()
            .launch_configuration_name("agents-lc")
            .send()
            .await
            .expect("DeleteLaunchConfiguration");
        let ec2 = aws_sdk_ec2::Client::new(&sb.account_config(B, REGION).await);
        ec2.delete_launch_template()
            .launch_template_id(&template)
            .send()
            .await
            .expect("delete");
    });
    let out = ok(prune(false));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let pruned: Vec<&str> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["pruned"] == true)
        .filter_map(|d| d["version"].as_str())
        .collect();
    assert_eq!(pruned, vec!["0.1.1", "0.1.0"], "{out}");
    for account in [A, B] {
        assert_eq!(
            consumer_param(&sb, account, "/bakery/sandbox-demo/0.1.0"),
            None
        );
        assert_eq!(
            consumer_param(&sb, account, "/bakery/sandbox-demo/meta/0.1.1"),
            None
        );
        assert_eq!(
            consumer_param(&sb, account, "/bakery/sandbox-demo/latest").as_deref(),
            Some(ami(2).as_str())
        );
    }
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

/// The README's consumer configuration, as written, loads with the consumers it shows.
#[test]
fn the_readme_consumer_examples_validate() {
    let readme =
        std::fs::read_to_string(crate::support::repo_root().join("README.md")).expect("README");
    let start = readme
        .find("## Pinning an image from another account")
        .expect("section");
    let blocks: Vec<&str> = readme[start..]
        .split("```toml\n")
        .skip(1)
        .take(2)
        .map(|b| b.split("```").next().unwrap_or(""))
        .collect();
    let project = crate::support::fixtures::Project::fixture();
    project.write("bakery.toml", &format!("{}\n{}", blocks[0], blocks[1]));
    let catalog = bakery::catalog::Catalog::load(project.path()).unwrap_or_else(|d| panic!("{d}"));
    let prod = catalog.target("prod").expect("prod");
    assert_eq!(prod.consumers.len(), 2);
    assert_eq!(prod.consumers[0].external_id.as_deref(), Some("team-a-7f3"));
    assert_eq!(prod.consumers[0].regions.len(), 1);
    assert_eq!(
        prod.consumers[1].regions.len(),
        2,
        "default: every region of the target"
    );
    assert!(catalog.target("team-a").expect("team-a").consumer);
}
