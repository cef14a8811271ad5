//! Crash safety against the emulator and a real sshd: kill -9 in every phase and `bakery gc`
//! from nothing but tags, signals as CI systems send them, what gc must leave alone, pointers
//! that never move backwards, and injected faults.

use std::time::Duration;

use crate::support::sandbox::{signal, Sandbox, REGION};
use crate::support::{bake_id_of, ok, param, rt, text};

const EU: &str = "eu-west-1";

/// (version, ami, published) of every AMI of `image` in `region`.
pub(crate) fn amis(sb: &Sandbox, region: &str, image: &str) -> Vec<(String, String, bool)> {
    rt().block_on(async {
        let (ec2, _) = sb.clients_in(region).await;
        let out = ec2
            .describe_images()
            .owners("self")
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:bakery:image")
                    .values(image)
                    .build(),
            )
            .send()
            .await
            .expect("DescribeImages");
        let mut v: Vec<(String, String, bool)> = out
            .images()
            .iter()
            .map(|i| {
                let tag = |k: &str| {
                    i.tags()
                        .iter()
                        .find(|t| t.key() == Some(k))
                        .and_then(|t| t.value())
                        .map(str::to_string)
                };
                (
                    tag("bakery:version").unwrap_or_default(),
                    i.image_id().unwrap_or_default().to_string(),
                    tag("bakery:published").is_some(),
                )
            })
            .collect();
        v.sort();
        v
    })
}

/// What is left, but working directories on the shared build host (which gc cannot reach: on
/// AWS they go with the instance); those are removed here, so the test leaves nothing behind.
pub(crate) fn leftovers_in_aws(sb: &Sandbox) -> Vec<String> {
    for w in sb.leftover_workdirs() {
        let _ = std::fs::remove_dir_all(&w);
    }
    sb.leftovers()
        .into_iter()
        .filter(|l| !l.starts_with("workdir"))
        .collect()
}

fn gc(sb: &Sandbox, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["gc", "--target", "sandbox", "--json"];
    all.extend_from_slice(args);
    let s = ok(sb.bakery(&all));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// The published version of sandbox-demo is whole: the same version in both regions, its
/// versioned parameter and `latest` naming its AMI in each, and the channel, where it moved, too.
fn assert_version_intact(sb: &Sandbox, context: &str) {
    for region in [REGION, EU] {
        let v = amis(sb, region, "sandbox-demo");
        assert_eq!(v.len(), 1, "{context}: one AMI in {region}: {v:?}");
        let (version, ami, published) = &v[0];
        assert!(published, "{context}: {v:?}");
        assert_eq!(
            param(sb, region, &format!("/bakery/sandbox-demo/{version}")).as_deref(),
            Some(ami.as_str()),
            "{context}: versioned parameter in {region}"
        );
        assert_eq!(
            param(sb, region, "/bakery/sandbox-demo/latest").as_deref(),
            Some(ami.as_str()),
            "{context}: latest in {region}"
        );
        if let Some(ch) = param(sb, region, "/bakery/sandbox-demo/channels/candidate") {
            assert_eq!(&ch, ami, "{context}: channel in {region}");
        }
    }
}

#[test]
fn kill_9_in_every_phase_then_gc_leaves_nothing_and_keeps_what_was_published() {
    // Each AWS call takes 100 ms, so the kill lands inside the phase's calls.
    let sb = Sandbox::start_with(Some(Duration::from_millis(100)));
    sb.set_regions(&[REGION, EU]);
    let lease = Duration::from_secs(2);
    for phase in [
        "preflight",
        "launch",
        "connect",
        "provision",
        "verify",
        "capture",
        "distribute",
        "publish",
        "promote",
    ] {
        let (status, all) = sb.bake_signalled("sandbox-demo", &["--lease", "2s"], |v| {
            if v["event"] == "phase" && v["phase"] == phase {
                vec!["KILL"]
            } else {
                vec![]
            }
        });
        assert_eq!(status.code(), None, "killed in {phase}: {all}");
        let bake = bake_id_of(&all);
        // The lease of the killed bake runs out; until then gc keeps its resources.
        let early = gc(&sb, &["--dry-run"]);
        for item in early["items"].as_array().expect("items") {
            if item["bake_id"] == bake.as_str() {
                assert!(
                    item["action"] == "kept" || item["action"] == "would remove",
                    "{item}"
                );
            }
        }
        std::thread::sleep(lease + Duration::from_millis(1500));
        let report = gc(&sb, &[]);
        for item in report["items"].as_array().expect("items") {
            assert_eq!(item["action"], "removed", "killed in {phase}: {item}");
        }
        assert_eq!(
            leftovers_in_aws(&sb),
            Vec::<String>::new(),
            "killed in {phase}: gc left something\n{report:#}\n{all}"
        );
        if phase == "promote" {
            // Killed after the commit: gc removed the build resources, not the version.
            assert_version_intact(&sb, "killed in promote");
            let out = sb.bakery(&["prune", "sandbox-demo", "--keep", "1"]);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        } else {
            for region in [REGION, EU] {
                assert_eq!(
                    amis(&sb, region, "sandbox-demo"),
                    vec![],
                    "killed in {phase}: nothing of the bake stays in {region}"
                );
            }
        }
    }
}

#[test]
fn sigterm_then_sigint_within_the_grace_period_still_cleans_up_and_sighup_does_too() {
    let sb = Sandbox::start_with(Some(Duration::from_millis(100)));
    // GitHub Actions: SIGINT, then SIGTERM a few seconds later. Here SIGTERM, then SIGINT.
    let mut sent = false;
    let (status, all) = sb.bake_signalled("sandbox-demo", &[], |v| {
        if !sent && v["event"] == "phase" && v["phase"] == "provision" {
            sent = true;
            vec!["TERM", "INT"]
        } else {
            vec![]
        }
    });
    assert_eq!(status.code(), Some(130), "{all}");
    assert!(all.contains("SIGTERM: cleaning up"), "{all}");
    assert!(all.contains("SIGINT: still cleaning up"), "{all}");
    assert!(all.contains("was cancelled in provision"), "{all}");
    assert!(all.contains("nothing was left behind"), "{all}");
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());

    let (status, all) = sb.bake_signalled("sandbox-demo", &[], |v| {
        if v["event"] == "phase" && v["phase"] == "verify" {
            vec!["HUP"]
        } else {
            vec![]
        }
    });
    assert_eq!(status.code(), Some(130), "{all}");
    assert!(all.contains("SIGHUP: cleaning up"), "{all}");
    assert!(all.contains("nothing was left behind"), "{all}");
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());
    assert!(amis(&sb, REGION, "sandbox-demo").is_empty());
}

#[test]
fn an_interrupt_while_channels_move_keeps_the_version_and_names_what_is_left() {
    let sb = Sandbox::start_with(Some(Duration::from_millis(200)));
    sb.set_regions(&[REGION, EU]);
    let (status, all) = sb.bake_signalled("sandbox-demo", &[], |v| {
        if v["event"] == "phase" && v["phase"] == "promote" {
            vec!["INT"]
        } else {
            vec![]
        }
    });
    // The version was published before the interrupt: the bake stands, and says what it skipped.
    assert_eq!(status.code(), Some(0), "{all}");
    assert_version_intact(&sb, "interrupted in promote");
    let moved = param(&sb, REGION, "/bakery/sandbox-demo/channels/candidate").is_some();
    assert!(
        moved || all.contains("finish with: bakery promote sandbox-demo@0.1.0 candidate"),
        "{all}"
    );
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());
}

/// An image whose one step sleeps `secs` seconds (to be caught running).
fn add_slow_image(sb: &Sandbox, secs: u32) {
    sb.project.write(
        "recipes/slow/recipe.toml",
        &format!(
            "platforms = [\"linux\"]\n\n[[step]]\nname = \"sleeps\"\nshell = {{ inline = \"sleep {secs}\" }}\n"
        ),
    );
    let img = sb.demo_variant("slow", "[[recipe]]\nuse = \"slow\"\n\n");
    sb.project.write("images/slow.toml", &img);
}

#[test]
fn gc_leaves_alone_untagged_published_and_a_live_bake_of_another_process() {
    let sb = Sandbox::start();
    add_slow_image(&sb, 40);
    // Published.
    ok(sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox"]));
    let published = amis(&sb, REGION, "sandbox-demo");
    // Untagged: an instance somebody else launched.
    let untagged = rt().block_on(async {
        let (ec2, _) = sb.clients().await;
        let ami = ec2
            .describe_images()
            .owners("amazon")
            .send()
            .await
            .expect("DescribeImages")
            .images()
            .iter()
            .find_map(|i| i.image_id().map(str::to_string))
            .expect("a public AMI");
        let out = ec2
            .run_instances()
            .image_id(ami)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect("RunInstances");
        out.instances()[0].instance_id().expect("id").to_string()
    });
    // Live: a bake running in another process, caught in its sleeping step. Its lease is 6 s
    // (renewed every 2 s: slack for a loaded machine's slow tag call), and gc looks 7 s in, so
    // only the heartbeat's renewals keep it live by then.
    let mut live = sb
        .command(&[
            "bake",
            "slow",
            "--target",
            "sandbox",
            "--log-format",
            "json",
            "--lease",
            "6s",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = live.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut seen = Vec::new();
    for l in lines.by_ref().map_while(Result::ok) {
        let step = l.contains("\"recipe\":\"slow\"");
        seen.push(l);
        if step {
            break;
        }
    }
    let live_id = bake_id_of(&seen.join("\n"));
    std::thread::sleep(Duration::from_secs(7));

    let report = gc(&sb, &[]);
    let items = report["items"].as_array().expect("items").clone();
    assert!(!items.is_empty(), "the live bake's resources are listed");
    for item in &items {
        assert_eq!(item["bake_id"], live_id.as_str(), "{item}");
        assert_eq!(item["action"], "kept", "{item}");
        assert!(
            item["detail"]
                .as_str()
                .is_some_and(|d| d.contains("is live")),
            "{item}"
        );
    }
    let text_out = ok(sb.bakery(&["gc", "--target", "sandbox", "--dry-run"]));
    assert!(text_out.contains("kept"), "{text_out}");
    // cleanup of a live bake from a machine without its journal is refused.
    std::fs::rename(
        sb.project
            .path()
            .join(format!(".bakery/bakes/{live_id}.json")),
        sb.project.path().join("moved-journal.json"),
    )
    .expect("move journal");
    let refused = sb.bakery(&["cleanup", &live_id, "--target", "sandbox"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stdout));
    assert!(
        text(&refused.stderr).contains("may still be running"),
        "{}",
        text(&refused.stderr)
    );
    std::fs::rename(
        sb.project.path().join("moved-journal.json"),
        sb.project
            .path()
            .join(format!(".bakery/bakes/{live_id}.json")),
    )
    .expect("restore journal");
    // Still there: the untagged instance, the published version, the live bake's instance.
    assert_eq!(amis(&sb, REGION, "sandbox-demo"), published);
    let states = rt().block_on(async {
        let (ec2, _) = sb.clients().await;
        let out = ec2.describe_instances().send().await.expect("describe");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap_or_default().to_string(),
                    i.state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>()
    });
    assert!(
        states
            .iter()
            .any(|(id, s)| id == &untagged && s == "running"),
        "{states:?}"
    );
    assert_eq!(
        states
            .iter()
            .filter(|(id, s)| id != &untagged && s == "running")
            .count(),
        1,
        "the live bake's instance runs on: {states:?}"
    );
    // The live bake ends on its own (interrupted here), cleaning up after itself.
    signal(live.id(), "INT");
    for l in lines.map_while(Result::ok) {
        seen.push(l);
    }
    let status = live.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{}", seen.join("\n"));
    rt().block_on(async {
        let (ec2, _) = sb.clients().await;
        ec2.terminate_instances()
            .instance_ids(&untagged)
            .send()
            .await
            .expect("terminate");
    });
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());
    // Not a bake id: invalid input.
    let out = sb.bakery(&["cleanup", "i-0123456789", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn two_runners_publishing_in_the_opposite_order_leave_latest_and_channels_on_the_newer() {
    let sb = Sandbox::start();
    add_slow_image(&sb, 0);
    // Runner A captures first (version 0.1.0), then is stopped before it publishes.
    let mut stopped = None;
    let pid = std::sync::Arc::new(std::sync::Mutex::new(0u32));
    let (a_status, a_all) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            sb.bake_signalled("slow", &[], |v| {
                if v["event"] == "phase" && v["phase"] == "distribute" && stopped.is_none() {
                    stopped = Some(());
                    vec!["STOP"]
                } else {
                    vec![]
                }
            })
        });
        // Wait until A is stopped (its AMI 0.1.0 exists), then bake B with other inputs.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while amis(&sb, REGION, "slow").is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "runner A never captured"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_millis(500));
        sb.project.write(
            "recipes/slow/recipe.toml",
            "platforms = [\"linux\"]\n\n[[step]]\nname = \"sleeps\"\nshell = { inline = \"sleep 0 # B\" }\n",
        );
        let b = sb.bakery(&["bake", "slow", "--target", "sandbox", "--json"]);
        let b: serde_json::Value = serde_json::from_str(&ok(b)).expect("json");
        assert_eq!(b["version"], "0.1.1", "{b}");
        *pid.lock().unwrap() = 1;
        // Let A go on: it publishes 0.1.0 after 0.1.1.
        let out = std::process::Command::new("pgrep")
            .args(["-f", "bake slow --target sandbox --log-format json"])
            .output()
            .expect("pgrep");
        for p in text(&out.stdout).split_whitespace() {
            signal(p.parse().expect("pid"), "CONT");
        }
        a.join().expect("runner A")
    });
    assert_eq!(a_status.code(), Some(0), "{a_all}");
    let all = amis(&sb, REGION, "slow");
    let newer = all.iter().find(|(v, _, _)| v == "0.1.1").expect("0.1.1");
    assert!(all.iter().any(|(v, _, p)| v == "0.1.0" && *p), "{all:?}");
    assert_eq!(
        param(&sb, REGION, "/bakery/slow/latest").as_deref(),
        Some(newer.1.as_str()),
        "latest stays on the newer version"
    );
    assert_eq!(
        param(&sb, REGION, "/bakery/slow/channels/candidate").as_deref(),
        Some(newer.1.as_str()),
        "the channel stays on the newer version"
    );
    assert_eq!(
        param(&sb, REGION, "/bakery/slow/channel-versions/candidate").as_deref(),
        Some("0.1.1")
    );
    assert!(a_all.contains("already names a newer version"), "{a_all}");
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());
}

#[test]
fn revoke_with_deprecation_failing_still_moves_latest_and_a_rerun_finishes() {
    let sb = Sandbox::start_opts(None, "EnableImageDeprecation:us-east-1");
    add_slow_image(&sb, 0);
    let first: serde_json::Value = serde_json::from_str(&ok(
        sb.bakery(&["bake", "slow", "--target", "sandbox", "--json"])
    ))
    .expect("json");
    sb.project.write(
        "recipes/slow/recipe.toml",
        "platforms = [\"linux\"]\n\n[[step]]\nname = \"sleeps\"\nshell = { inline = \"sleep 0 # 2\" }\n",
    );
    let second: serde_json::Value = serde_json::from_str(&ok(
        sb.bakery(&["bake", "slow", "--target", "sandbox", "--json"])
    ))
    .expect("json");
    assert_eq!(
        param(&sb, REGION, "/bakery/slow/latest"),
        second["amis"][REGION].as_str().map(str::to_string)
    );
    let out = sb.bakery(&["revoke", "slow@0.1.1", "--reason", "broken agent"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("EnableImageDeprecation"), "{err}");
    assert!(
        err.contains("finish it with: bakery revoke slow@0.1.1 --reason"),
        "{err}"
    );
    // The registry moved before the side effect failed.
    assert_eq!(
        param(&sb, REGION, "/bakery/slow/latest"),
        first["amis"][REGION].as_str().map(str::to_string)
    );
    assert_eq!(
        param(&sb, REGION, "/bakery/slow/channel-versions/candidate").as_deref(),
        Some("0.1.0")
    );
    // The rerun finishes it: the AMI is deprecated now.
    ok(sb.bakery(&["revoke", "slow@0.1.1", "--reason", "broken agent"]));
    let deprecated = rt().block_on(async {
        let (ec2, _) = sb.clients().await;
        let out = ec2
            .describe_images()
            .image_ids(second["amis"][REGION].as_str().expect("ami"))
            .send()
            .await
            .expect("describe");
        out.images()[0].deprecation_time().map(str::to_string)
    });
    assert!(deprecated.is_some());
}

#[test]
fn under_injected_faults_every_bake_succeeds_or_fails_cleanly_and_nothing_leaks() {
    // Named faults, each once, in the order they are met: the first copy fails outright (so the
    // bake removes its AMI, and the first DeleteSnapshot finds the snapshot still in use); the
    // first launch finds neither its new group nor its new key pair; a later copy's answer is
    // lost after EC2 made it. On top, 20% of all EC2, SSM and S3 calls are throttled or fail
    // with a 5xx (seeded, so a failure reproduces).
    let named = [
        "CopyImage:eu-west-1",
        "DeleteSnapshot:us-east-1:InvalidSnapshot.InUse",
        "AuthorizeSecurityGroupIngress:us-east-1:InvalidGroup.NotFound",
        "RunInstances:us-east-1:InvalidGroup.NotFound",
        "RunInstances:us-east-1:InvalidKeyPair.NotFound",
        "CopyImage:eu-west-1:LostResponse",
    ]
    .join(",");
    let sb = Sandbox::start_env(
        None,
        &[
            ("BAKERY_EMULATOR_FAULTS", &named),
            ("BAKERY_EMULATOR_FAULT_RATE", "0.2"),
            ("BAKERY_EMULATOR_FAULT_SEED", "10"),
        ],
    );
    sb.set_regions(&[REGION, EU]);
    sb.add_failing_step();
    let mut outcomes = Vec::new();
    for image in ["sandbox-demo", "sandbox-demo", "fail-step"] {
        let out = sb.bakery(&["bake", image, "--target", "sandbox", "--lease", "2s"]);
        let err = text(&out.stderr);
        match out.status.code() {
            Some(0) => outcomes.push(format!("{image}: baked")),
            Some(1) => {
                // A clean failure: it says where, and that it removed what it made.
                assert!(err.contains("failed in"), "{image}: {err}");
                assert!(err.contains("nothing was left behind"), "{image}: {err}");
                outcomes.push(format!("{image}: failed cleanly"));
            }
            c => panic!("{image}: exit {c:?}\n{err}"),
        }
    }
    // Whatever a cleanup could not do under faults, gc finishes once the leases ran out.
    std::thread::sleep(Duration::from_secs(3));
    let report = gc(&sb, &[]);
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new(), "{report:#}");
    // The lost CopyImage answer made no second copy: one AMI per published version per region.
    let eu = amis(&sb, EU, "sandbox-demo");
    assert!(eu.iter().all(|(_, _, p)| *p), "{eu:?}");
    assert_eq!(eu.len(), amis(&sb, REGION, "sandbox-demo").len(), "{eu:?}");
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for c in sb.actions() {
        if let Some(f) = c.fault {
            *counts.entry(f).or_default() += 1;
        }
    }
    eprintln!(
        "outcomes: {outcomes:?}\nfaults injected ({} calls in all): {counts:?}",
        sb.actions().len()
    );
    for code in [
        "InjectedFault",
        "InvalidSnapshot.InUse",
        "InvalidGroup.NotFound",
        "InvalidKeyPair.NotFound",
        "LostResponse",
    ] {
        assert!(
            counts.contains_key(code),
            "{code} was never injected: {counts:?}"
        );
    }
    let random: usize = counts
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "RequestLimitExceeded"
                    | "ThrottlingException"
                    | "SlowDown"
                    | "InternalError"
                    | "InternalServerError"
            )
        })
        .map(|(_, n)| n)
        .sum();
    assert!(random > 10, "{counts:?}");
    assert!(
        outcomes.iter().any(|o| o.ends_with("baked")),
        "{outcomes:?}"
    );
}

#[test]
fn cleanup_without_the_journal_finds_a_killed_bake_by_its_tags() {
    let sb = Sandbox::start();
    let (status, all) = sb.bake_signalled("sandbox-demo", &["--lease", "2s"], |v| {
        if v["event"] == "phase" && v["phase"] == "verify" {
            vec!["KILL"]
        } else {
            vec![]
        }
    });
    assert_eq!(status.code(), None, "{all}");
    let bake = bake_id_of(&all);
    assert!(
        !leftovers_in_aws(&sb).is_empty(),
        "the kill left the build resources"
    );
    // An untagged snapshot EC2 made from the bake's instance (as CreateImage without a snapshot
    // tag specification leaves), whose image is gone: found by its description.
    rt().block_on(async {
        let (ec2, _) = sb.clients().await;
        let inst = ec2
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:bakery:bake-id")
                    .values(&bake)
                    .build(),
            )
            .send()
            .await
            .expect("describe");
        let id = inst.reservations()[0].instances()[0]
            .instance_id()
            .expect("id")
            .to_string();
        let image = ec2
            .create_image()
            .instance_id(id)
            .name("untagged-by-hand")
            .send()
            .await
            .expect("CreateImage");
        ec2.deregister_image()
            .image_id(image.image_id().expect("ami"))
            .send()
            .await
            .expect("DeregisterImage");
    });
    assert!(
        leftovers_in_aws(&sb)
            .iter()
            .any(|l| l.starts_with("snapshot")),
        "the untagged snapshot is left"
    );
    // Another machine: no journal.
    std::fs::remove_file(sb.project.path().join(format!(".bakery/bakes/{bake}.json")))
        .expect("journal");
    std::thread::sleep(Duration::from_secs(3));
    let out = ok(sb.bakery(&["cleanup", &bake, "--target", "sandbox"]));
    assert!(out.contains("removed"), "{out}");
    assert!(out.contains(&bake), "{out}");
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());
}

#[test]
fn a_lost_answer_to_our_own_parameter_write_is_recognised_as_ours() {
    // The first PutParameter (the versioned parameter) is carried out, its answer lost; the SDK
    // retries and gets ParameterAlreadyExists, which is this bake's own write, not a rival's.
    let sb = Sandbox::start_opts(None, "PutParameter:us-east-1:LostResponse");
    let out = ok(sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox", "--json"]));
    let art: serde_json::Value = serde_json::from_str(&out).expect("json");
    let ami = art["amis"][REGION].as_str().expect("ami");
    assert_eq!(
        param(&sb, REGION, "/bakery/sandbox-demo/0.1.0").as_deref(),
        Some(ami)
    );
    assert!(sb
        .actions()
        .iter()
        .any(|c| c.action == "PutParameter" && c.fault.as_deref() == Some("LostResponse")));
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());
}

#[test]
fn gc_removes_more_than_the_ec2_mutating_bucket_holds() {
    // 120 key pairs of a dead bake: more deletions than EC2's mutating-action bucket (50, then
    // 5 a second) lets through at once, so later ones wait for tokens in bakery's limiter for
    // many seconds before their request is sent. None may fail for having waited.
    let sb = Sandbox::start();
    let expired =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() - Duration::from_secs(60))
            .to_string();
    rt().block_on(async {
        let (ec2, _) = sb.clients().await;
        for i in 0..120 {
            ec2.create_key_pair()
                .key_name(format!("dead-{i}"))
                .tag_specifications(
                    aws_sdk_ec2::types::TagSpecification::builder()
                        .resource_type(aws_sdk_ec2::types::ResourceType::KeyPair)
                        .tags(
                            aws_sdk_ec2::types::Tag::builder()
                                .key("bakery:bake-id")
                                .value("bk-dead-0000abcd")
                                .build(),
                        )
                        .tags(
                            aws_sdk_ec2::types::Tag::builder()
                                .key("bakery:expires")
                                .value(&expired)
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .expect("CreateKeyPair");
        }
    });
    let report = gc(&sb, &[]);
    let items = report["items"].as_array().expect("items");
    assert_eq!(items.len(), 120, "{report:#}");
    assert!(items.iter().all(|i| i["action"] == "removed"), "{report:#}");
    assert_eq!(leftovers_in_aws(&sb), Vec::<String>::new());
}
