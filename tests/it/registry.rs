//! The registry against the emulator with two (or three) regions: distribution, versions,
//! channels, resolve, lock, revoke, retention, and the README's "Pinning an image" as written.

use std::process::Output;

use crate::support::sandbox::Sandbox;
use crate::support::{ok, param, rt, text};

const EU: &str = "eu-west-1";
const US: &str = "us-east-1";

fn json(out: Output) -> serde_json::Value {
    let s = ok(out);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn two_regions() -> Sandbox {
    let sb = Sandbox::start();
    sb.set_regions(&[US, EU]);
    sb
}

fn bake(sb: &Sandbox, image: &str) -> serde_json::Value {
    json(sb.bakery(&["bake", image, "--target", "sandbox", "--json"]))
}

/// Images of this account named `name` in `region`.
fn images_named(sb: &Sandbox, region: &str, name: &str) -> Vec<String> {
    rt().block_on(async {
        let (ec2, _) = sb.clients_in(region).await;
        let out = ec2
            .describe_images()
            .owners("self")
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("name")
                    .values(name)
                    .build(),
            )
            .send()
            .await
            .expect("DescribeImages");
        out.images()
            .iter()
            .filter_map(|i| i.image_id().map(str::to_string))
            .collect()
    })
}

fn resolve(sb: &Sandbox, spec: &str) -> Result<String, String> {
    let out = sb.bakery(&["resolve", spec, "--target", "sandbox", "--json"]);
    if out.status.success() {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        Ok(v["version"].as_str().unwrap_or_default().to_string())
    } else {
        Err(text(&out.stderr))
    }
}

#[test]
fn a_bake_is_distributed_to_every_region_and_listed() {
    let sb = two_regions();
    // Shared images need a customer managed key (the AWS managed aws/ebs cannot be shared).
    sb.set_kms_key(&["111122223333"]);
    let demo =
        std::fs::read_to_string(sb.project.path().join("images/sandbox-demo.toml")).expect("demo");
    sb.project.write(
        "images/sandbox-demo.toml",
        &demo.replace(
            "[publish]\n",
            "[publish]\ndeprecate_after = \"365d\"\nshare = { accounts = [\"111122223333\"] }\n",
        ),
    );
    let art = bake(&sb, "sandbox-demo");
    let us = art["amis"][US].as_str().expect("us ami").to_string();
    let eu = art["amis"][EU].as_str().expect("eu ami").to_string();
    assert_ne!(us, eu);
    assert_eq!(
        param(&sb, EU, "/bakery/sandbox-demo/0.1.0"),
        Some(eu.clone())
    );
    assert_eq!(
        param(&sb, EU, "/bakery/sandbox-demo/latest"),
        Some(eu.clone())
    );
    assert_eq!(
        param(&sb, US, "/bakery/sandbox-demo/latest"),
        Some(us.clone())
    );
    // publish.channels = ["candidate"] moved on success, in both regions.
    assert_eq!(
        param(&sb, EU, "/bakery/sandbox-demo/channels/candidate"),
        Some(eu.clone())
    );
    assert_eq!(art["channels"], serde_json::json!(["candidate"]));
    rt().block_on(async {
        let (ec2, _) = sb.clients_in(EU).await;
        let img = ec2
            .describe_images()
            .image_ids(&eu)
            .send()
            .await
            .expect("image");
        let img = &img.images()[0];
        let tags: std::collections::BTreeMap<_, _> = img
            .tags()
            .iter()
            .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
            .collect();
        assert_eq!(tags["bakery:version"], "0.1.0");
        assert_eq!(
            tags["bakery:fingerprint"],
            art["fingerprint"].as_str().unwrap()
        );
        // Deprecation is scheduled (the harness's emulator implements EnableImageDeprecation).
        let when = img.deprecation_time().expect("a deprecation time");
        let at = humantime::parse_rfc3339_weak(when.trim_end_matches('Z')).expect("a time");
        let ahead = at
            .duration_since(std::time::SystemTime::now())
            .expect("in the future")
            .as_secs()
            / 86_400;
        assert!(
            (363..=365).contains(&ahead),
            "365 days from now: {when} ({ahead} days)"
        );
        // Shared with the account in every region.
        for (region, ami) in [(US, &us), (EU, &eu)] {
            let (ec2, _) = sb.clients_in(region).await;
            let attr = ec2
                .describe_image_attribute()
                .image_id(ami.as_str())
                .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
                .send()
                .await
                .expect("DescribeImageAttribute");
            let users: Vec<&str> = attr
                .launch_permissions()
                .iter()
                .filter_map(|p| p.user_id())
                .collect();
            assert_eq!(users, ["111122223333"], "{region}");
            // IMDSv2-only, the AMI and its copy (read back; AWS cannot undo it).
            let img = ec2
                .describe_images()
                .image_ids(ami.as_str())
                .send()
                .await
                .expect("DescribeImages");
            assert_eq!(
                img.images()[0].imds_support().map(|v| v.as_str()),
                Some("v2.0"),
                "{region}"
            );
        }
    });
    let v = json(sb.bakery(&["versions", "sandbox-demo", "--target", "sandbox", "--json"]));
    let row = &v["versions"][0];
    assert_eq!(row["version"], "0.1.0");
    assert_eq!(row["amis"][US], us);
    assert_eq!(row["amis"][EU], eu);
    assert_eq!(row["state"], "available");
    assert_eq!(row["channels"], serde_json::json!(["candidate"]));
    // 8 GiB of snapshots in each of two regions at the shipped table's 0.05 USD per GiB-month.
    assert_eq!(v["currency"], "USD");
    let storage = row["storage_per_month"]
        .as_f64()
        .expect("storage_per_month");
    assert!((storage - 0.8).abs() < 1e-9, "{row}");
    let table = ok(sb.bakery(&["versions", "sandbox-demo", "--target", "sandbox"]));
    assert!(table.contains("0.80 USD"), "{table}");
    assert!(
        table.contains("0.1.0")
            && table.contains("candidate")
            && table.contains(&format!("{EU}={eu}")),
        "{table}"
    );
    let only = json(sb.bakery(&[
        "versions",
        "sandbox-demo",
        "--target",
        "sandbox",
        "--region",
        EU,
        "--json",
    ]));
    assert_eq!(
        only["versions"][0]["amis"].as_object().map(|m| m.len()),
        Some(1)
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn promote_and_rollback_keep_history() {
    let sb = two_regions();
    let v0 = bake(&sb, "sandbox-demo");
    let v1 = bake(&sb, "sandbox-demo");
    assert_eq!(v1["version"], "0.1.1");
    ok(sb.bakery(&[
        "promote",
        "sandbox-demo@0.1.0",
        "stable",
        "--target",
        "sandbox",
    ]));
    ok(sb.bakery(&[
        "promote",
        "sandbox-demo@0.1.1",
        "stable",
        "--target",
        "sandbox",
    ]));
    assert_eq!(
        param(&sb, EU, "/bakery/sandbox-demo/channels/stable").as_deref(),
        v1["amis"][EU].as_str()
    );
    let ch = json(sb.bakery(&["channels", "sandbox-demo", "--target", "sandbox", "--json"]));
    let stable = ch["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "stable")
        .expect("stable")
        .clone();
    assert_eq!(stable["version"], "0.1.1");
    assert_eq!(stable["history"], serde_json::json!(["0.1.0", "0.1.1"]));
    let out = ok(sb.bakery(&["rollback", "sandbox-demo", "stable", "--target", "sandbox"]));
    assert!(out.contains("stable -> 0.1.0"), "{out}");
    assert_eq!(
        param(&sb, EU, "/bakery/sandbox-demo/channels/stable").as_deref(),
        v0["amis"][EU].as_str()
    );
    assert_eq!(
        param(&sb, US, "/bakery/sandbox-demo/channels/stable").as_deref(),
        v0["amis"][US].as_str()
    );
    assert_eq!(resolve(&sb, "sandbox-demo@stable"), Ok("0.1.0".into()));
    let ch = json(sb.bakery(&["channels", "sandbox-demo", "--target", "sandbox", "--json"]));
    let stable = ch["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "stable")
        .expect("stable")
        .clone();
    assert_eq!(
        stable["history"],
        serde_json::json!(["0.1.0", "0.1.1", "0.1.0"])
    );
    // Rolling back again never goes forward to the version just rolled back from.
    let out = sb.bakery(&["rollback", "sandbox-demo", "stable", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("no earlier version"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(resolve(&sb, "sandbox-demo@stable"), Ok("0.1.0".into()));
    // Promoting an unknown version is refused.
    let out = sb.bakery(&[
        "promote",
        "sandbox-demo@9.9.9",
        "stable",
        "--target",
        "sandbox",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn resolve_is_deterministic_and_refuses_revoked_versions() {
    let sb = two_regions();
    for _ in 0..3 {
        bake(&sb, "sandbox-demo");
    }
    // Make 0.1.2 a pre-release (as if baked from a pre-release line) by retagging it.
    for region in [US, EU] {
        let ids = images_named(&sb, region, "sandbox-demo-0.1.2");
        rt().block_on(async {
            let (ec2, _) = sb.clients_in(region).await;
            ec2.create_tags()
                .set_resources(Some(ids))
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("bakery:version")
                        .value("0.1.3-rc.1")
                        .build(),
                )
                .send()
                .await
                .expect("CreateTags");
        });
    }
    assert_eq!(
        resolve(&sb, "sandbox-demo@^0.1"),
        Ok("0.1.1".into()),
        "pre-releases only when asked for"
    );
    assert_eq!(
        resolve(&sb, "sandbox-demo@=0.1.3-rc.1"),
        Ok("0.1.3-rc.1".into())
    );
    assert_eq!(resolve(&sb, "sandbox-demo@latest"), Ok("0.1.1".into()));
    for _ in 0..3 {
        assert_eq!(
            resolve(&sb, "sandbox-demo@~0.1.0"),
            Ok("0.1.1".into()),
            "same answer every time"
        );
    }
    ok(sb.bakery(&[
        "revoke",
        "sandbox-demo@0.1.1",
        "--reason",
        "CVE-2026-0001 in openssl",
        "--target",
        "sandbox",
    ]));
    assert_eq!(
        resolve(&sb, "sandbox-demo@^0.1"),
        Ok("0.1.0".into()),
        "the newest revoked: the one before"
    );
    // `latest` moved back to the newest release that is not revoked (0.1.2 is now a pre-release).
    let v0 = images_named(&sb, US, "sandbox-demo-0.1.0");
    assert_eq!(
        param(&sb, US, "/bakery/sandbox-demo/latest"),
        v0.first().cloned()
    );
    // The revoked AMIs are deprecated.
    for region in [US, EU] {
        let ids = images_named(&sb, region, "sandbox-demo-0.1.1");
        rt().block_on(async {
            let (ec2, _) = sb.clients_in(region).await;
            let img = ec2
                .describe_images()
                .set_image_ids(Some(ids))
                .send()
                .await
                .expect("images");
            assert!(
                img.images()[0].deprecation_time().is_some(),
                "{region}: revoked means deprecated"
            );
        });
    }
    let err = resolve(&sb, "sandbox-demo@=0.1.1").unwrap_err();
    assert!(
        err.contains("revoked") && err.contains("CVE-2026-0001 in openssl"),
        "{err}"
    );
    let err = resolve(&sb, "sandbox-demo@^2").unwrap_err();
    assert!(err.contains("no version matches `^2`"), "{err}");
    let err = resolve(&sb, "sandbox-demo@nosuchchannel").unwrap_err();
    assert!(
        err.contains("channel `nosuchchannel` of sandbox-demo does not exist"),
        "{err}"
    );
    // The revoked version is deprecated and shows as revoked.
    let v = json(sb.bakery(&["versions", "sandbox-demo", "--target", "sandbox", "--json"]));
    let row = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == "0.1.1")
        .unwrap()
        .clone();
    assert_eq!(row["state"], "revoked");
    assert_eq!(row["revoked"], "CVE-2026-0001 in openssl");
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn lock_pins_versions_and_check_fails_when_one_is_revoked() {
    let sb = two_regions();
    let first = bake(&sb, "sandbox-demo");
    sb.project.write(
        "bakery.lock.toml",
        "[[image]]\nname = \"sandbox-demo\"\nrequirement = \"^0.1\"\n",
    );
    let out = ok(sb.bakery(&["lock", "--target", "sandbox"]));
    assert!(out.contains("sandbox-demo ^0.1 -> 0.1.0"), "{out}");
    let lock: toml::Table = toml::from_str(
        &std::fs::read_to_string(sb.project.path().join("bakery.lock.toml")).unwrap(),
    )
    .unwrap();
    let pin = &lock["image"].as_array().unwrap()[0];
    assert_eq!(pin["version"].as_str(), Some("0.1.0"));
    assert_eq!(pin["amis"][EU].as_str(), first["amis"][EU].as_str());
    ok(sb.bakery(&["lock", "--check", "--target", "sandbox"]));

    bake(&sb, "sandbox-demo");
    let out = ok(sb.bakery(&["outdated", "--target", "sandbox"]));
    assert!(
        out.contains("sandbox-demo locked 0.1.0 (^0.1): newer 0.1.1"),
        "{out}"
    );

    ok(sb.bakery(&[
        "revoke",
        "sandbox-demo@0.1.0",
        "--reason",
        "bad agent build",
        "--target",
        "sandbox",
    ]));
    let out = sb.bakery(&["lock", "--check", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("sandbox-demo 0.1.0: revoked: bad agent build"),
        "{}",
        text(&out.stderr)
    );
    // Re-locking moves the pin past the revoked version.
    let out = ok(sb.bakery(&["lock", "--target", "sandbox"]));
    assert!(out.contains("-> 0.1.1"), "{out}");
    ok(sb.bakery(&["lock", "--check", "--target", "sandbox"]));
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn revoke_with_descendants_and_children_refuse_the_parent() {
    let sb = two_regions();
    sb.add_layered_image("demo-child", "sandbox-demo");
    bake(&sb, "sandbox-demo");
    let c = bake(&sb, "demo-child");
    assert_eq!(c["parent"], "sandbox-demo@0.1.0");
    assert_eq!(
        param(&sb, US, "/bakery/demo-child/channels/candidate").as_deref(),
        c["amis"][US].as_str()
    );

    let out = ok(sb.bakery(&[
        "revoke",
        "sandbox-demo@0.1.0",
        "--descendants",
        "--reason",
        "base image leaked a key",
        "--target",
        "sandbox",
    ]));
    assert!(
        out.contains("revoked sandbox-demo 0.1.0") && out.contains("revoked demo-child 2.0.0"),
        "{out}"
    );
    // Channels that pointed at the revoked versions had nothing to go back to: removed.
    assert_eq!(
        param(&sb, US, "/bakery/demo-child/channels/candidate"),
        None
    );
    let err = resolve(&sb, "demo-child@^2").unwrap_err();
    assert!(err.contains("base image leaked a key"), "{err}");
    let out = sb.bakery(&["bake", "demo-child", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("failed in preflight") && err.contains("base image leaked a key"),
        "a child bake refuses the revoked parent: {err}"
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn a_failed_copy_leaves_nothing_and_a_rerun_adopts_instead_of_duplicating() {
    // CopyImage into ap-southeast-2 fails once; removing the eu-west-1 copy fails twice, so the
    // first bake leaves that copy behind for the rerun to find.
    let sb = Sandbox::start_opts(
        None,
        "CopyImage:ap-southeast-2,DeregisterImage:eu-west-1,DeregisterImage:eu-west-1",
    );
    sb.set_regions(&[US, EU, "ap-southeast-2"]);
    let out = sb.bakery(&[
        "bake",
        "sandbox-demo",
        "--target",
        "sandbox",
        "--log-format",
        "json",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed in distribute") && err.contains("fault injected"),
        "{err}"
    );
    assert!(
        err.contains("left behind:") && err.contains(EU),
        "the eu copy could not be removed: {err}"
    );
    let first_id = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["bake_id"].as_str().map(str::to_string))
        .expect("bake id");
    assert!(
        images_named(&sb, US, "sandbox-demo-0.1.0").is_empty(),
        "the build region's image was removed"
    );
    assert!(images_named(&sb, "ap-southeast-2", "sandbox-demo-0.1.0").is_empty());
    assert_eq!(images_named(&sb, EU, "sandbox-demo-0.1.0").len(), 1);

    // The rerun bakes 0.1.0 again (same fingerprint) and adopts the eu copy.
    let art = bake(&sb, "sandbox-demo");
    assert_eq!(art["version"], "0.1.0");
    for region in [US, EU, "ap-southeast-2"] {
        assert_eq!(
            images_named(&sb, region, "sandbox-demo-0.1.0").len(),
            1,
            "one image per region in {region}"
        );
    }
    // The first bake's journal must not take the adopted copy with it.
    ok(sb.bakery(&["cleanup", &first_id]));
    assert_eq!(
        images_named(&sb, EU, "sandbox-demo-0.1.0"),
        vec![art["amis"][EU].as_str().unwrap().to_string()]
    );
    assert_eq!(resolve(&sb, "sandbox-demo@^0.1"), Ok("0.1.0".into()));
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn prune_keeps_what_is_in_use_and_says_why() {
    let sb = two_regions();
    // No automatic retention here: the test decides.
    let demo =
        std::fs::read_to_string(sb.project.path().join("images/sandbox-demo.toml")).expect("demo");
    sb.project
        .write("images/sandbox-demo.toml", &demo.replace("keep = 3\n", ""));
    let arts: Vec<serde_json::Value> = (0..4).map(|_| bake(&sb, "sandbox-demo")).collect();
    ok(sb.bakery(&[
        "promote",
        "sandbox-demo@0.1.0",
        "stable",
        "--target",
        "sandbox",
    ]));
    let (instance, template) = rt().block_on(async {
        let (ec2, _) = sb.clients_in(EU).await;
        let run = ec2
            .run_instances()
            .image_id(arts[1]["amis"][EU].as_str().unwrap())
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect("RunInstances");
        let instance = run.instances()[0].instance_id().unwrap().to_string();
        let (ec2, _) = sb.clients_in(US).await;
        let lt = ec2
            .create_launch_template()
            .launch_template_name("agents")
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(arts[2]["amis"][US].as_str().unwrap())
                    .build(),
            )
            .send()
            .await
            .expect("CreateLaunchTemplate");
        (
            instance,
            lt.launch_template()
                .unwrap()
                .launch_template_id()
                .unwrap()
                .to_string(),
        )
    });
    let dry = json(sb.bakery(&[
        "prune",
        "sandbox-demo",
        "--keep",
        "1",
        "--dry-run",
        "--target",
        "sandbox",
        "--json",
    ]));
    let why = |v: &str| -> String {
        dry["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["version"] == v)
            .map(|d| d["kept_because"].to_string())
            .unwrap_or_default()
    };
    assert!(why("0.1.3").contains("the newest version"), "{dry}");
    assert!(why("0.1.2").contains("named by launch template"), "{dry}");
    assert!(
        why("0.1.1").contains(&format!("used by instance {instance}")),
        "{dry}"
    );
    assert!(why("0.1.0").contains("channel stable"), "{dry}");
    assert!(
        dry["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["pruned"] == false),
        "{dry}"
    );

    // Once nothing uses them, 0.1.1 and 0.1.2 go in every region, with their parameters.
    rt().block_on(async {
        let (ec2, _) = sb.clients_in(EU).await;
        ec2.terminate_instances()
            .instance_ids(&instance)
            .send()
            .await
            .expect("terminate");
        let (ec2, _) = sb.clients_in(US).await;
        ec2.delete_launch_template()
            .launch_template_id(&template)
            .send()
            .await
            .expect("delete template");
    });
    let out = ok(sb.bakery(&[
        "prune",
        "sandbox-demo",
        "--keep",
        "1",
        "--target",
        "sandbox",
    ]));
    assert!(
        out.contains("pruned 0.1.1") && out.contains("pruned 0.1.2"),
        "{out}"
    );
    assert!(out.contains("kept 0.1.0 (channel stable)"), "{out}");
    // Two versions in two regions, 8 GiB each, at the shipped table's 0.05 USD per GiB-month.
    assert!(
        out.contains("pruned 0.1.1 (snapshots 0.80 USD/month)")
            && out.contains(
                "pruning saved 1.60 USD a month of snapshot storage (price table aws-on-demand"
            ),
        "{out}"
    );
    for region in [US, EU] {
        assert!(images_named(&sb, region, "sandbox-demo-0.1.1").is_empty());
        assert!(images_named(&sb, region, "sandbox-demo-0.1.2").is_empty());
        assert_eq!(param(&sb, region, "/bakery/sandbox-demo/0.1.1"), None);
    }
    assert_eq!(images_named(&sb, EU, "sandbox-demo-0.1.0").len(), 1);
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

/// The README's "Pinning an image" section, followed as written: its commands run, its lock
/// file locks, and its Terraform reads parameters that exist.
#[test]
fn the_readme_pinning_section_works_as_written() {
    let readme =
        std::fs::read_to_string(crate::support::repo_root().join("README.md")).expect("README");
    let start = readme.find("## Pinning an image").expect("section");
    let end = readme[start + 3..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + 3 + i);
    let section = &readme[start..end];
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut lines = section.lines();
    while let Some(l) = lines.next() {
        if let Some(lang) = l.strip_prefix("```") {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            blocks.push((lang.to_string(), body.join("\n")));
        }
    }
    assert!(
        blocks.iter().any(|(l, _)| l == "hcl") && blocks.iter().any(|(l, _)| l == "toml"),
        "{blocks:?}"
    );

    let sb = Sandbox::start();
    bake(&sb, "sandbox-demo");
    let mut commands = 0;
    for (lang, body) in &blocks {
        match lang.as_str() {
            "toml" => {
                assert!(body.starts_with("# bakery.lock.toml"), "{body}");
                sb.project.write("bakery.lock.toml", body);
            }
            "sh" => {
                for line in body.lines().filter(|l| l.starts_with("bakery ")) {
                    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
                    let out = sb.bakery(&args);
                    assert_eq!(
                        out.status.code(),
                        Some(0),
                        "`{line}`: {}",
                        text(&out.stderr)
                    );
                    commands += 1;
                }
            }
            "hcl" => {
                for name in body
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("name = \""))
                    .map(|n| n.trim_end_matches('"'))
                {
                    let v = param(&sb, US, name).unwrap_or_else(|| panic!("{name} does not exist"));
                    assert!(v.starts_with("ami-"), "{name} = {v}");
                }
            }
            _ => {}
        }
    }
    assert!(commands >= 7, "{commands} commands ran");
    let lock = std::fs::read_to_string(sb.project.path().join("bakery.lock.toml")).expect("lock");
    assert!(lock.contains("version = \"0.1.0\""), "{lock}");
    // The table's parameters exist for this image.
    for name in [
        "/bakery/sandbox-demo/0.1.0",
        "/bakery/sandbox-demo/latest",
        "/bakery/sandbox-demo/channels/stable",
    ] {
        assert!(
            param(&sb, US, name).is_some_and(|v| v.starts_with("ami-")),
            "{name}"
        );
    }
    assert_eq!(
        param(&sb, US, "/bakery/sandbox-demo/channel-versions/stable").as_deref(),
        Some("0.1.0")
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn publish_keep_applies_retention_after_a_bake() {
    let sb = two_regions();
    let demo =
        std::fs::read_to_string(sb.project.path().join("images/sandbox-demo.toml")).expect("demo");
    sb.project.write(
        "images/sandbox-demo.toml",
        &demo.replace("keep = 3", "keep = 1"),
    );
    bake(&sb, "sandbox-demo");
    let second = bake(&sb, "sandbox-demo");
    let v = json(sb.bakery(&["versions", "sandbox-demo", "--target", "sandbox", "--json"]));
    let versions: Vec<&str> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["version"].as_str())
        .collect();
    assert_eq!(
        versions,
        ["0.1.1"],
        "keep = 1 pruned 0.1.0 (no channel points at it any more)"
    );
    assert_eq!(param(&sb, EU, "/bakery/sandbox-demo/0.1.0"), None);
    assert_eq!(
        param(&sb, EU, "/bakery/sandbox-demo/latest").as_deref(),
        second["amis"][EU].as_str()
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn a_number_whose_version_was_pruned_is_never_issued_again() {
    // Publish does not record the number (the listing and the version's parameter keep it
    // taken); a prune that removes the highest number of a line records it first.
    let sb = Sandbox::start();
    let demo =
        std::fs::read_to_string(sb.project.path().join("images/sandbox-demo.toml")).expect("demo");
    let line = |v: &str| {
        demo.replace("keep = 3\n", "")
            .replace("version = \"0.1\"", &format!("version = \"{v}\""))
    };
    assert_eq!(bake(&sb, "sandbox-demo")["version"], "0.1.0");
    assert_eq!(param(&sb, US, "/bakery/sandbox-demo/issued/0.1"), None);
    sb.project.write("images/sandbox-demo.toml", &line("0.2"));
    assert_eq!(bake(&sb, "sandbox-demo")["version"], "0.2.0");
    let out = ok(sb.bakery(&[
        "prune",
        "sandbox-demo",
        "--keep",
        "1",
        "--target",
        "sandbox",
    ]));
    assert!(out.contains("pruned 0.1.0"), "{out}");
    assert_eq!(param(&sb, US, "/bakery/sandbox-demo/0.1.0"), None);
    assert_eq!(param(&sb, US, "/bakery/sandbox-demo/inputs/0.1.0"), None);
    assert_eq!(
        param(&sb, US, "/bakery/sandbox-demo/issued/0.1").as_deref(),
        Some("0"),
        "the line's highest number, recorded before it went"
    );
    // Back on the 0.1 line: nothing of 0.1.0 is left but the record, and 0.1.0 is not reused.
    sb.project.write("images/sandbox-demo.toml", &line("0.1"));
    assert_eq!(bake(&sb, "sandbox-demo")["version"], "0.1.1");
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn a_channel_write_between_the_read_and_the_move_is_told_by_its_version() {
    const CV: &str = "/bakery/sandbox-demo/channel-versions/candidate";
    const CH: &str = "/bakery/sandbox-demo/channels/candidate";
    let history = |sb: &Sandbox| {
        sb.actions()
            .iter()
            .filter(|c| c.action == "GetParameterHistory")
            .count()
    };
    // An older version written by another runner right after this bake read the channel (the
    // emulator writes it there: no timing can): the move's write skips a version, the history
    // shows what came between, and this bake's newer version is written again, whole.
    let race = format!("{CV}=0.0.9");
    let sb = Sandbox::start_env(None, &[("BAKERY_EMULATOR_RACE", race.as_str())]);
    let art = bake(&sb, "sandbox-demo");
    assert_eq!(art["version"], "0.1.0");
    assert_eq!(param(&sb, US, CV).as_deref(), Some("0.1.0"));
    assert_eq!(
        param(&sb, US, CH).as_deref(),
        art["amis"][US].as_str(),
        "the AMI parameter goes with it"
    );
    assert_eq!(history(&sb), 1, "the gap was looked into once");
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
    drop(sb);

    // A newer version written in between (the second bake's read): it is put back, whole, and
    // the bake says the channel names a newer version.
    let race = format!("{CV}=0.2.0@2");
    let sb = Sandbox::start_env(None, &[("BAKERY_EMULATOR_RACE", race.as_str())]);
    let demo =
        std::fs::read_to_string(sb.project.path().join("images/sandbox-demo.toml")).expect("demo");
    sb.project.write(
        "images/sandbox-demo.toml",
        &demo.replace("version = \"0.1\"", "version = \"0.2\""),
    );
    let newer = bake(&sb, "sandbox-demo");
    assert_eq!(newer["version"], "0.2.0");
    assert_eq!(history(&sb), 0, "no race, no look at the history");
    // The channel as an earlier promote left it: on an older version.
    rt().block_on(async {
        let (_, ssm) = sb.clients_in(US).await;
        ssm.put_parameter()
            .name(CV)
            .value("0.0.1")
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .expect("PutParameter");
    });
    sb.project.write("images/sandbox-demo.toml", &demo);
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox", "--json"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let art: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(art["version"], "0.1.0");
    assert!(
        err.contains("channel candidate already names a newer version than 0.1.0"),
        "{err}"
    );
    assert_eq!(param(&sb, US, CV).as_deref(), Some("0.2.0"));
    assert_eq!(param(&sb, US, CH).as_deref(), newer["amis"][US].as_str());
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}

/// `latest`'s values in US, oldest first.
fn latest_history(sb: &Sandbox) -> Vec<String> {
    rt().block_on(async {
        let (_, ssm) = sb.clients_in(US).await;
        let out = ssm
            .get_parameter_history()
            .name("/bakery/sandbox-demo/latest")
            .send()
            .await
            .expect("GetParameterHistory");
        out.parameters()
            .iter()
            .filter_map(|p| p.value().map(str::to_string))
            .collect()
    })
}

#[test]
fn a_latest_write_between_preflight_and_publish_is_told_by_its_version() {
    const LATEST: &str = "/bakery/sandbox-demo/latest";
    const SOURCE: &str = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
    let calls =
        |sb: &Sandbox, action: &str| sb.actions().iter().filter(|c| c.action == action).count();
    // Publish decides on the `latest` preflight read and writes it without a read of its own.
    let sb = Sandbox::start();
    let first = bake(&sb, "sandbox-demo");
    let ours = first["amis"][US].as_str().unwrap().to_string();
    assert_eq!(calls(&sb, "GetParameterHistory"), 0, "no race, no history");
    assert_eq!(latest_history(&sb), vec![ours.clone()]);
    drop(sb);

    // Another AMI that is no version written right after preflight's read (the emulator writes
    // it there: no timing can): the write skips a version, the history shows what it replaced,
    // and this one stands.
    const RACER: &str = "/test/racer";
    let race = format!("{LATEST}=from:{RACER}");
    let sb = Sandbox::start_env(None, &[("BAKERY_EMULATOR_RACE", race.as_str())]);
    let put = |sb: &Sandbox, name: &str, value: &str| {
        rt().block_on(async {
            let (_, ssm) = sb.clients_in(US).await;
            ssm.put_parameter()
                .name(name)
                .value(value)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .overwrite(true)
                .send()
                .await
                .expect("PutParameter");
        })
    };
    let source = param(&sb, US, SOURCE).expect("the source AMI");
    put(&sb, RACER, &source);
    let art = bake(&sb, "sandbox-demo");
    let ours = art["amis"][US].as_str().unwrap().to_string();
    assert_eq!(
        calls(&sb, "GetParameterHistory"),
        1,
        "the gap was looked into once"
    );
    assert_eq!(latest_history(&sb), vec![source.clone(), ours.clone()]);
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
    drop(sb);

    // A newer version of another runner's still on its way (registered, not yet published)
    // written in between: replaced, not put back. `latest` names releases; the other runner's
    // commit, and the converge after it, move `latest` on to its version.
    let sb = Sandbox::start_env(None, &[("BAKERY_EMULATOR_RACE", race.as_str())]);
    let source = param(&sb, US, SOURCE).expect("the source AMI");
    let (instance, theirs) = rt().block_on(async {
        let (ec2, _) = sb.clients_in(US).await;
        let run = ec2
            .run_instances()
            .image_id(&source)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect("RunInstances");
        let instance = run.instances()[0].instance_id().unwrap().to_string();
        let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
        let image = ec2
            .create_image()
            .instance_id(&instance)
            .name("sandbox-demo-0.9.0")
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Image)
                    .tags(tag("bakery:image", "sandbox-demo"))
                    .tags(tag("bakery:version", "0.9.0"))
                    .build(),
            )
            .send()
            .await
            .expect("CreateImage");
        (instance, image.image_id().unwrap().to_string())
    });
    put(&sb, RACER, &theirs);
    let art = bake(&sb, "sandbox-demo");
    assert_eq!(art["version"], "0.1.0");
    let ours = art["amis"][US].as_str().unwrap().to_string();
    assert_eq!(
        calls(&sb, "GetParameterHistory"),
        1,
        "the gap was looked into once"
    );
    assert_eq!(
        latest_history(&sb),
        vec![theirs.clone(), ours.clone()],
        "theirs (the race), then ours"
    );
    rt().block_on(async {
        let (ec2, _) = sb.clients_in(US).await;
        ec2.terminate_instances()
            .instance_ids(&instance)
            .send()
            .await
            .expect("terminate");
        ec2.deregister_image()
            .image_id(&theirs)
            .send()
            .await
            .expect("deregister");
    });
}

#[test]
fn a_number_whose_parameter_was_visible_is_not_issued_again_after_a_failed_commit() {
    // The commit's CreateTags fails: the version's parameter (which consumers may have read)
    // goes with the bake, and its number is recorded as taken before it goes.
    let sb = Sandbox::start_opts(None, "CreateTags:us-east-1");
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(param(&sb, US, "/bakery/sandbox-demo/0.1.0"), None);
    assert_eq!(
        param(&sb, US, "/bakery/sandbox-demo/issued/0.1").as_deref(),
        Some("0")
    );
    assert_eq!(bake(&sb, "sandbox-demo")["version"], "0.1.1");
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}
