//! Bakes against the real SDK and a real SSH build host: the emulator and a private sshd,
//! started per test. After each test the emulator must hold nothing the test did not keep.

use std::time::Duration;

use crate::support::sandbox::{FileServer, Sandbox};
use crate::support::{bake_id_of, rt, text};

/// Everything in the emulator a bake could have left behind (every region of the target).
fn leftovers(sb: &Sandbox) -> Vec<String> {
    sb.leftovers()
}

/// The `finished` event among the JSON lines a bake printed.
fn finished(err: &str) -> serde_json::Value {
    err.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "finished")
        .unwrap_or_else(|| panic!("a finished event: {err}"))
}

/// (version, ami) of every registered version of `image`.
fn registered(sb: &Sandbox, image: &str) -> Vec<(String, String)> {
    rt().block_on(async {
        let (ec2, _) = sb.clients().await;
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
        let mut v: Vec<(String, String)> = out
            .images()
            .iter()
            .map(|i| {
                let version = i
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some("bakery:version"))
                    .and_then(|t| t.value())
                    .unwrap_or_default();
                (
                    version.to_string(),
                    i.image_id().unwrap_or_default().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    })
}

/// A parameter's value and data type; `None` only when it does not exist.
fn parameter(sb: &Sandbox, name: &str) -> Option<(String, String)> {
    rt().block_on(async {
        let (_, ssm) = sb.clients().await;
        match ssm.get_parameter().name(name).send().await {
            Ok(p) => {
                let p = p.parameter().expect("a parameter");
                Some((
                    p.value().unwrap_or_default().to_string(),
                    p.data_type().unwrap_or_default().to_string(),
                ))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                None
            }
            Err(e) => panic!("GetParameter {name}: {e:?}"),
        }
    })
}

/// sandbox-demo plus an image check that cannot pass.
fn add_failing_check(sb: &Sandbox) {
    let demo =
        std::fs::read_to_string(sb.project.path().join("images/sandbox-demo.toml")).expect("demo");
    let img = demo.replace("name = \"sandbox-demo\"", "name = \"fail-check\"")
        + "\n[[check]]\nname = \"a file nobody made\"\nfile = \"{{ workdir }}/no-such-file\"\n";
    sb.project.write("images/fail-check.toml", &img);
}

#[test]
fn a_full_bake_registers_a_tagged_version_and_leaves_nothing_behind() {
    // ImportKeyPair answers after 0.3 s (as if AWS were far away): a security group created
    // after the key pair would arrive only then.
    let sb = Sandbox::start_env(None, &[("BAKERY_EMULATOR_SLOW", "ImportKeyPair:0.3")]);
    let manifest = sb.project.path().join("manifest.json");
    let junit = sb.project.path().join("checks.xml");
    let out = sb.bakery(&[
        "bake",
        "sandbox-demo",
        "--target",
        "sandbox",
        "--manifest",
        manifest.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).expect("manifest")).expect("json");
    assert_eq!(m["image"], "sandbox-demo");
    assert_eq!(m["version"], "0.1.0");
    let ami = m["amis"]["us-east-1"].as_str().expect("ami").to_string();
    let fingerprint = m["fingerprint"].as_str().expect("fingerprint").to_string();
    assert_eq!(fingerprint.len(), 64);
    for phase in [
        "preflight",
        "launch",
        "connect",
        "provision",
        "verify",
        "capture",
        "publish",
        "cleanup",
    ] {
        assert!(
            m["timings"][phase].is_number(),
            "no timing for {phase}: {m}"
        );
    }
    let xml = std::fs::read_to_string(&junit).expect("junit");
    // Six checks on the build instance, one on a fresh instance from the new AMI.
    assert!(xml.contains("tests=\"7\" failures=\"0\""), "{xml}");
    // Once the test checks passed, the test and the build instance go in one call, before
    // anything is published; the cleanup only waits for them (and both are gone: `leftovers`).
    let calls = sb.actions();
    let mut expected: Vec<String> = rt().block_on(async {
        let (ec2, _) = sb.clients().await;
        let all = ec2.describe_instances().send().await.expect("instances");
        all.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect()
    });
    assert_eq!(expected.len(), 2, "build and test instance: {expected:?}");
    expected.sort();
    let terminations: Vec<_> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.action == "TerminateInstances")
        .collect();
    assert_eq!(
        terminations.len(),
        1,
        "one TerminateInstances: {terminations:?}"
    );
    let (at, both) = terminations[0];
    let mut named = both.ids.clone();
    named.sort();
    assert_eq!(named, expected, "the build and the test instance together");
    let first_put = calls
        .iter()
        .position(|c| c.action == "PutParameter")
        .expect("a publish");
    assert!(at < first_put, "terminated before the publish");
    // The target's ssh_host is known before an instance runs: the connect is the first look at
    // the build and at the test instance (no DescribeInstances from RunInstances to the
    // CreateImage, nor from the test's RunInstances to the termination); CreateImage powers the
    // build instance down itself (no StopInstances, no wait for `stopped`); and the lease is
    // ended by the commit's CreateTags (no DeleteTags of its own).
    let between = |from: usize, to: usize| -> Vec<_> {
        calls[from..to]
            .iter()
            .filter(|c| c.action == "DescribeInstances")
            .collect()
    };
    let nth = |action: &str, n: usize| {
        calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.action == action)
            .nth(n)
            .unwrap_or_else(|| panic!("no {action} #{n}"))
            .0
    };
    let (run, image) = (nth("RunInstances", 0), nth("CreateImage", 0));
    let looks = between(run, image);
    assert!(looks.is_empty(), "build instance: {looks:?}");
    let looks = between(nth("RunInstances", 1), at);
    assert!(looks.is_empty(), "test instance: {looks:?}");
    assert!(!calls.iter().any(|c| c.action == "DeleteTags"), "{calls:?}");
    assert!(
        !calls.iter().any(|c| c.action == "StopInstances"),
        "{calls:?}"
    );
    // No other runner wrote `latest` or the channel: the versions of the writes say so, and no
    // history is read.
    assert!(
        !calls.iter().any(|c| c.action == "GetParameterHistory"),
        "{calls:?}"
    );
    // The key pair and the security group are made at once: the group is asked for while the
    // key pair's answer is still on its way.
    let call = |action: &str| {
        calls
            .iter()
            .find(|c| c.action == action)
            .unwrap_or_else(|| panic!("no {action}"))
    };
    let (key, group) = (call("ImportKeyPair"), call("CreateSecurityGroup"));
    assert!(
        group.t < key.done,
        "CreateSecurityGroup before ImportKeyPair answered: {key:?} {group:?}"
    );

    assert_eq!(
        registered(&sb, "sandbox-demo"),
        vec![("0.1.0".to_string(), ami.clone())]
    );
    rt().block_on(async {
        let (ec2, _) = sb.clients().await;
        let img = ec2
            .describe_images()
            .image_ids(&ami)
            .send()
            .await
            .expect("image");
        let img = &img.images()[0];
        assert_eq!(img.name(), Some("sandbox-demo-0.1.0"));
        let tags: std::collections::BTreeMap<_, _> = img
            .tags()
            .iter()
            .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
            .collect();
        assert_eq!(tags["bakery:image"], "sandbox-demo");
        assert_eq!(tags["bakery:version"], "0.1.0");
        assert_eq!(tags["bakery:fingerprint"], fingerprint);
        assert!(tags["bakery:source-ami"].starts_with("ami-"));
        assert_eq!(tags["bakery:bake-id"], m["bake_id"].as_str().unwrap());
        assert!(tags["bakery:created-by"].starts_with("bakery/"));
        // A version does not expire: the commit ended the bake's lease on the AMI.
        assert_eq!(tags["bakery:expires"], "never");
        assert!(tags.contains_key("bakery:published"));
        let snaps: Vec<String> = img
            .block_device_mappings()
            .iter()
            .filter_map(|b| b.ebs()?.snapshot_id().map(str::to_string))
            .collect();
        assert!(!snaps.is_empty());
        let s = ec2
            .describe_snapshots()
            .set_snapshot_ids(Some(snaps))
            .send()
            .await
            .expect("snapshots");
        for snap in s.snapshots() {
            let st: Vec<_> = snap
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?, t.value()?)))
                .collect();
            assert!(st.contains(&("bakery:version", "0.1.0")), "{st:?}");
            assert!(st.contains(&("bakery:expires", "never")), "{st:?}");
            assert!(
                st.contains(&("bakery:fingerprint", fingerprint.as_str())),
                "{st:?}"
            );
        }
    });
    assert_eq!(
        parameter(&sb, "/bakery/sandbox-demo/0.1.0"),
        Some((ami.clone(), "aws:ec2:image".into()))
    );
    assert_eq!(
        parameter(&sb, "/bakery/sandbox-demo/latest"),
        Some((ami.clone(), "aws:ec2:image".into()))
    );
    assert_eq!(leftovers(&sb), Vec::<String>::new());

    // The next bake of the same image is the next patch, and `latest` moves.
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let art: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(art["version"], "0.1.1");
    let ami2 = art["amis"]["us-east-1"].as_str().unwrap().to_string();
    assert_eq!(
        parameter(&sb, "/bakery/sandbox-demo/latest").map(|p| p.0),
        Some(ami2.clone())
    );
    assert_eq!(
        parameter(&sb, "/bakery/sandbox-demo/0.1.0").map(|p| p.0),
        Some(ami),
        "published versions never change"
    );
    assert_eq!(registered(&sb, "sandbox-demo").len(), 2);
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

#[test]
fn an_instance_not_yet_running_is_waited_for_and_one_that_ends_fails_fast() {
    // Instances stay pending for a second: the connect's first attempt is refused (the
    // sandbox's sshd lets a key in only for a running instance, as a pending EC2 instance
    // answers nothing), so the bake waits for `running` with DescribeInstances, then connects.
    let sb = Sandbox::start_env(None, &[("BAKERY_EMULATOR_DELAYS", "running=1")]);
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let calls = sb.actions();
    let index = |action: &str| {
        calls
            .iter()
            .position(|c| c.action == action)
            .unwrap_or_else(|| panic!("no {action}"))
    };
    let build = sb
        .transitions()
        .into_iter()
        .find(|t| t.state == "running")
        .expect("the build instance became running")
        .id;
    let looked = calls[index("RunInstances")..index("CreateImage")]
        .iter()
        .filter(|c| c.action == "DescribeInstances" && c.filter_ids.contains(&build))
        .count();
    assert!(looked > 0, "waited for running: {calls:?}");
    assert_eq!(leftovers(&sb), Vec::<String>::new());
    drop(sb);

    // An instance that ends while pending (here terminated by the harness, as EC2 does with
    // one whose volume cannot be created) fails the bake at the next look, not at the launch
    // timeout (5 minutes for sandbox-demo).
    let sb = Sandbox::start_env(None, &[("BAKERY_EMULATOR_DELAYS", "running=60")]);
    let (status, err) = sb.bake_signalled("sandbox-demo", &[], |v| {
        let created = v["event"] == "created";
        if let Some(id) = v["resource"]
            .as_str()
            .and_then(|r| r.strip_prefix("instance "))
            .and_then(|r| r.split_whitespace().next())
            .filter(|_| created)
        {
            rt().block_on(async {
                let (ec2, _) = sb.clients().await;
                ec2.terminate_instances()
                    .instance_ids(id)
                    .send()
                    .await
                    .expect("TerminateInstances");
            });
        }
        vec![]
    });
    assert_eq!(status.code(), Some(1), "{err}");
    let finished = finished(&err);
    assert_eq!(finished["phase"], "connect", "{finished}");
    assert!(
        finished["error"]
            .as_str()
            .is_some_and(|e| e.contains("terminated")),
        "{finished}"
    );
    let seconds = finished["seconds"].as_f64().expect("seconds");
    assert!(
        seconds < 60.0,
        "failed fast, not at the launch timeout: {seconds}"
    );
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

#[test]
fn a_failing_step_registers_nothing_and_leaves_nothing() {
    let sb = Sandbox::start();
    sb.add_failing_step();
    let bake = || {
        sb.bakery(&[
            "bake",
            "fail-step",
            "--target",
            "sandbox",
            "--log-format",
            "json",
        ])
    };
    // The finished event names the failure with a stable code and a hash that is the same for
    // the same failure in another bake (another bake id, instance id, time).
    let out = bake();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let first = finished(&err);
    assert_eq!(first["level"], "error", "{first}");
    assert_eq!(first["outcome"], "failed", "{first}");
    assert_eq!(first["code"], "step_failed", "{first}");
    assert_eq!(first["phase"], "provision", "{first}");
    assert!(
        first["error"]
            .as_str()
            .is_some_and(|e| e.contains("exited with 7")),
        "{first}"
    );
    let hash = first["error_hash"].as_str().expect("error_hash");
    assert!(
        hash.len() == 12 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "{hash}"
    );
    let again = finished(&text(&bake().stderr));
    assert_ne!(again["bake_id"], first["bake_id"]);
    assert_eq!(again["error_hash"], first["error_hash"], "{first}\n{again}");
    assert!(err.contains("failed in provision"), "{err}");
    assert!(
        err.contains("fails on purpose") && err.contains("exited with 7"),
        "{err}"
    );
    assert!(
        err.contains("about to fail"),
        "the step's output tail is in the error: {err}"
    );
    assert!(err.contains("nothing was left behind"), "{err}");
    assert!(registered(&sb, "fail-step").is_empty());
    assert_eq!(parameter(&sb, "/bakery/fail-step/latest"), None);
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

#[test]
fn a_failing_check_registers_nothing_and_leaves_nothing() {
    let sb = Sandbox::start();
    add_failing_check(&sb);
    let junit = sb.project.path().join("checks.xml");
    let out = sb.bakery(&[
        "bake",
        "fail-check",
        "--target",
        "sandbox",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("FAIL   a file nobody made"), "{err}");
    assert!(err.contains("1 of 7 checks failed"), "{err}");
    assert!(err.contains("nothing was left behind"), "{err}");
    let xml = std::fs::read_to_string(&junit).expect("junit");
    assert!(xml.contains("tests=\"7\" failures=\"1\""), "{xml}");
    assert!(registered(&sb, "fail-check").is_empty());
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

/// Bakes `image` with `--on-error keep` (and `extra`), expecting it to fail with `code` and keep
/// its instance; returns its JSON log.
fn bake_kept(sb: &Sandbox, image: &str, extra: &[&str], code: i32) -> String {
    let mut args = vec![
        "bake",
        image,
        "--target",
        "sandbox",
        "--on-error",
        "keep",
        "--log-format",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = sb.bakery(&args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains("kept for debugging: instance i-"), "{err}");
    err
}

#[test]
fn on_error_keep_after_the_test_phase_still_keeps_the_build_instance() {
    // The first parameter write fails: the bake fails in publish, after its test checks passed
    // (which otherwise send the build instance away with the test instance).
    let sb = Sandbox::start_opts(None, "PutParameter:us-east-1");
    let err = bake_kept(&sb, "sandbox-demo", &[], 1);
    assert!(err.contains("failed in publish"), "{err}");
    let left = leftovers(&sb);
    // CreateImage booted the build instance again after its snapshots: the kept one runs.
    let kept = err
        .split("kept for debugging: instance ")
        .nth(1)
        .and_then(|r| {
            r.split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                .next()
        })
        .expect("the kept instance's id");
    let instances: Vec<&String> = left.iter().filter(|l| l.starts_with("instance ")).collect();
    assert_eq!(
        instances,
        vec![&format!("instance {kept} running")],
        "the build instance is still there, the test instance went: {left:?}"
    );
    let out = sb.bakery(&["cleanup", &bake_id_of(&err)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

#[test]
fn on_error_keep_keeps_the_instance_until_cleanup() {
    let sb = Sandbox::start();
    add_failing_check(&sb);
    let err = bake_kept(&sb, "fail-check", &["--lease", "2s"], 3);
    assert!(err.contains("ssh -i "), "{err}");
    let bake_id = bake_id_of(&err);
    let key = sb
        .project
        .path()
        .join(format!(".bakery/bakes/{bake_id}.key"));
    assert!(key.exists(), "the key to reach the instance is kept");
    let left = leftovers(&sb);
    assert!(
        left.iter()
            .any(|l| l.starts_with("instance ") && l.ends_with("running")),
        "{left:?}"
    );

    // Long after the bake's own 2 s lease ran out, gc still keeps the kept instance: keeping
    // extends its lease by a day.
    std::thread::sleep(Duration::from_secs(3));
    let gc = sb.bakery(&["gc", "--target", "sandbox", "--json"]);
    assert_eq!(gc.status.code(), Some(0), "{}", text(&gc.stderr));
    let gc: serde_json::Value = serde_json::from_slice(&gc.stdout).expect("json");
    let instance = gc["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| {
            i["resource"]
                .as_str()
                .is_some_and(|r| r.starts_with("instance "))
        })
        .unwrap_or_else(|| panic!("{gc:#}"))
        .clone();
    assert_eq!(instance["action"], "kept", "{gc:#}");

    let out = sb.bakery(&["cleanup", &bake_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing left behind"));
    assert!(!key.exists());
    // The kept instance's disk went with it; the sandbox host stands in for that disk and the
    // emulator cannot remove it, so the harness does (the kept workdir was there to debug).
    for w in sb.leftover_workdirs() {
        std::fs::remove_dir_all(&w).expect("remove the kept workdir");
    }
    assert_eq!(leftovers(&sb), Vec::<String>::new());
    assert!(registered(&sb, "fail-check").is_empty());
}

#[test]
fn sigint_in_every_phase_leaves_nothing() {
    // Every emulator call takes 300 ms, so each phase lasts long enough to be interrupted in.
    let sb = Sandbox::start_with(Some(Duration::from_millis(300)));
    for phase in [
        "preflight",
        "launch",
        "connect",
        "provision",
        "verify",
        "capture",
        "publish",
    ] {
        let (status, all) = sb.bake_interrupted("sandbox-demo", |v| {
            usize::from(v["event"] == "phase" && v["phase"] == phase)
        });
        assert_eq!(status.code(), Some(130), "interrupt in {phase}: {all}");
        assert!(
            all.contains(&format!("was cancelled in {phase}")),
            "interrupt in {phase}: {all}"
        );
        assert!(
            all.contains("nothing was left behind"),
            "interrupt in {phase}: {all}"
        );
        assert_eq!(leftovers(&sb), Vec::<String>::new(), "interrupt in {phase}");
        assert!(
            registered(&sb, "sandbox-demo").is_empty(),
            "interrupt in {phase}: nothing registered"
        );
        assert_eq!(
            parameter(&sb, "/bakery/sandbox-demo/latest"),
            None,
            "interrupt in {phase}"
        );
    }
}

#[test]
fn downloads_are_fetched_on_the_instance_and_verified() {
    let sb = Sandbox::start();
    let server = FileServer::start(b"agent bits\n");
    // sha256 of "agent bits\n"
    let good = "5b35bd3ef3c5f1e8b5b4e12bc3e1c5aa2f1e0c3b8c2b2b4f3c1d0e9f8a7b6c5d";
    let real = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"agent bits\n"))
    };
    assert_ne!(good, real, "the first hash is deliberately wrong");
    let recipe = |sha: &str| {
        format!("platforms = [\"linux\"]\n\n[[step]]\nname = \"fetch\"\ndownload = {{ url = \"{}\", sha256 = \"{sha}\", destination = \"dl/file.bin\" }}\n\n[[check]]\nfile = \"{{{{ workdir }}}}/dl/file.bin\"\nsha256 = \"{real}\"\n", server.url)
    };
    sb.project.write(
        "images/fetch.toml",
        &sb.demo_variant("fetch", "[[recipe]]\nuse = \"fetch\"\n\n"),
    );

    sb.project
        .write("recipes/fetch/recipe.toml", &recipe(&real));
    let out = sb.bakery(&["bake", "fetch", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("pass   file $BAKERY_WORKDIR/dl/file.bin"),
        "{}",
        text(&out.stdout)
    );

    sb.project.write("recipes/fetch/recipe.toml", &recipe(good));
    let out = sb.bakery(&["bake", "fetch", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("fetch") && err.contains("FAILED"),
        "sha256sum reports the mismatch: {err}"
    );
    assert_eq!(
        registered(&sb, "fetch").len(),
        1,
        "only the good download was registered"
    );
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

#[test]
fn a_layered_image_records_its_parent_version() {
    let sb = Sandbox::start();
    sb.add_layered_image("demo-child", "sandbox-demo");

    let out = sb.bakery(&["bake", "demo-child", "--target", "sandbox"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no parent version yet: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("no version of sandbox-demo matches `^0.1`"),
        "{}",
        text(&out.stderr)
    );

    let parent = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox", "--json"]);
    assert_eq!(parent.status.code(), Some(0), "{}", text(&parent.stderr));
    let parent: serde_json::Value = serde_json::from_slice(&parent.stdout).expect("json");
    let out = sb.bakery(&["bake", "demo-child", "--target", "sandbox", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let art: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(art["version"], "2.0.0");
    assert_eq!(art["parent"], "sandbox-demo@0.1.0");
    assert_eq!(art["source_ami"], parent["amis"]["us-east-1"]);
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

#[test]
fn a_second_interrupt_skips_cleanup_and_cleanup_removes_the_rest() {
    let sb = Sandbox::start_with(Some(Duration::from_millis(300)));
    // First interrupt once the instance exists, the second as soon as cleanup starts.
    let mut interrupts = 0;
    let (status, all) = sb.bake_interrupted("sandbox-demo", |v| {
        let first = interrupts == 0 && v["event"] == "phase" && v["phase"] == "connect";
        let second = interrupts == 1 && v["event"] == "phase" && v["phase"] == "cleanup";
        let now = usize::from(first || second);
        interrupts += now;
        now
    });
    assert_eq!(status.code(), Some(130), "{all}");
    assert!(all.contains("cleanup skipped"), "{all}");
    let bake_id = bake_id_of(&all);
    assert!(all.contains(&format!("bakery cleanup {bake_id}")), "{all}");
    assert!(
        !leftovers(&sb).is_empty(),
        "the skipped cleanup left the instance behind"
    );

    let out = sb.bakery(&["cleanup", &bake_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        leftovers(&sb)
            .into_iter()
            .filter(|l| !l.starts_with("workdir"))
            .collect::<Vec<_>>(),
        Vec::<String>::new()
    );
}

#[test]
fn interrupting_the_cleanup_of_a_published_bake_keeps_the_version() {
    let sb = Sandbox::start_with(Some(Duration::from_millis(300)));
    // Published; now interrupt twice: the second one exits at once.
    let (status, all) = sb.bake_interrupted("sandbox-demo", |v| {
        if v["event"] == "phase" && v["phase"] == "cleanup" {
            2
        } else {
            0
        }
    });
    assert_eq!(status.code(), Some(130), "{all}");
    let bake_id = bake_id_of(&all);
    let out = sb.bakery(&["cleanup", &bake_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The version was published: cleanup removed only the temporary things.
    let versions = registered(&sb, "sandbox-demo");
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(
        parameter(&sb, "/bakery/sandbox-demo/0.1.0").map(|p| p.0),
        Some(versions[0].1.clone())
    );
    assert_eq!(
        parameter(&sb, "/bakery/sandbox-demo/latest").map(|p| p.0),
        Some(versions[0].1.clone())
    );
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

#[test]
fn the_instance_profile_must_exist_before_anything_is_created() {
    let sb = Sandbox::start();
    let toml = std::fs::read_to_string(sb.project.path().join("bakery.toml")).expect("bakery.toml");
    let named = toml.replace(
        "instance_profile = \"bakery-sandbox\"",
        "instance_profile = \"bakery-build\"",
    );
    assert_ne!(named, toml, "the sandbox target names an instance profile");
    sb.project.write("bakery.toml", &named);
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed in preflight: instance profile bakery-build does not exist"),
        "{err}"
    );
    assert!(!err.contains("    + "), "nothing was created: {err}");
    assert_eq!(leftovers(&sb), Vec::<String>::new());

    rt().block_on(async {
        let conf = sb.sdk_config().await;
        aws_sdk_iam::Client::new(&conf)
            .create_instance_profile()
            .instance_profile_name("bakery-build")
            .send()
            .await
            .expect("CreateInstanceProfile");
    });
    // Keep a failed build instance to look at what it was launched with.
    add_failing_check(&sb);
    let out = sb.bakery(&[
        "bake",
        "fail-check",
        "--target",
        "sandbox",
        "--on-error",
        "keep",
        "--log-format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let bake_id = bake_id_of(&text(&out.stderr));
    let profiles = rt().block_on(async {
        let (ec2, _) = sb.clients().await;
        let out = ec2
            .describe_instances()
            .send()
            .await
            .expect("DescribeInstances");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                i.iam_instance_profile()
                    .and_then(|p| p.arn())
                    .map(str::to_string)
            })
            .collect::<Vec<_>>()
    });
    assert!(
        profiles
            .iter()
            .any(|a| a.ends_with("instance-profile/bakery-build")),
        "{profiles:?}"
    );
    let out = sb.bakery(&["cleanup", &bake_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for w in sb.leftover_workdirs() {
        std::fs::remove_dir_all(&w).expect("remove the kept workdir (the instance's disk)");
    }
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

#[test]
fn teamcity_gets_service_messages() {
    let sb = Sandbox::start();
    let out = sb
        .command(&["bake", "sandbox-demo", "--target", "sandbox"])
        .env("TEAMCITY_VERSION", "2025.07")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let count = |p: &str| s.lines().filter(|l| l.starts_with(p)).count();
    assert_eq!(
        count("##teamcity[blockOpened "),
        count("##teamcity[blockClosed "),
        "blocks are balanced:\n{s}"
    );
    assert!(
        count("##teamcity[blockOpened ") >= 9,
        "a block per phase:\n{s}"
    );
    // Six checks on the build instance, one on a fresh instance (the test phase).
    assert_eq!(
        count("##teamcity[testFinished "),
        7,
        "a test per check:\n{s}"
    );
    assert!(
        count("##teamcity[buildStatisticValue key='bakery.sandbox-demo.provision.ms'") == 1,
        "{s}"
    );
    assert!(
        s.contains("##teamcity[setParameter name='bakery.sandbox-demo.version' value='0.1.0']"),
        "{s}"
    );
    assert!(
        s.contains("##teamcity[setParameter name='bakery.sandbox-demo.ami.us-east-1' value='ami-"),
        "{s}"
    );
    assert_eq!(leftovers(&sb), Vec::<String>::new());

    // With --json under TeamCity, stdout is the JSON alone: the service messages go to stderr
    // (TeamCity reads both); JSON log lines carry a timestamp.
    let out = sb
        .command(&[
            "bake",
            "sandbox-demo",
            "--target",
            "sandbox",
            "--json",
            "--log-format",
            "json",
        ])
        .env("TEAMCITY_VERSION", "2025.07")
        .output()
        .expect("run");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let art: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            text(&out.stdout)
        )
    });
    assert_eq!(art["image"], "sandbox-demo");
    assert!(
        err.contains("##teamcity[setParameter name='bakery.sandbox-demo.version'"),
        "{err}"
    );
    assert!(err.contains("##teamcity[testFinished "), "{err}");
    // Every JSON line carries the envelope (schema 2); every event its image.
    let lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .collect();
    assert!(lines.iter().any(|v| v["event"] == "phase"), "{err}");
    for v in &lines {
        assert_eq!(v["schema"], 2, "{v}");
        assert_eq!(v["app"], "bakery", "{v}");
        let ts = v["timestamp"].as_str().expect("timestamp");
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
        assert!(
            ts.ends_with('Z') && ts.len() == 24,
            "milliseconds, UTC: {ts}"
        );
        assert!(
            ["info", "warn", "error"].contains(&v["level"].as_str().unwrap_or("")),
            "{v}"
        );
        if v.get("event").is_some() {
            assert_eq!(v["image"], "sandbox-demo", "{v}");
        }
    }
    let finished = lines
        .iter()
        .find(|v| v["event"] == "finished")
        .expect("a finished event");
    assert_eq!(finished["outcome"], "baked");
    assert!(
        finished["seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{finished}"
    );
    assert!(finished.get("code").is_none(), "{finished}");
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

/// The Linux probes run for real on the sandbox's build host, and none passes by accident: a
/// service that does not exist is not "stopped", a package name is not a prefix, a closed port is
/// closed only when the probe saw the host's listening sockets.
#[test]
fn probes_run_for_real_and_do_not_pass_by_accident() {
    let sb = Sandbox::start();
    let demo =
        std::fs::read_to_string(sb.project.path().join("images/sandbox-demo.toml")).expect("demo");
    let checks = format!(
        "\n[[check]]\nname = \"sshd listens\"\nport = {ssh}\n\
\n[[check]]\nname = \"nothing on a free port\"\nport = {free}\nlistening = false\n\
\n[[check]]\nname = \"bash is installed\"\npackage = \"bash\"\n\
\n[[check]]\nname = \"bas is not a package\"\npackage = \"bas\"\ninstalled = false\n\
\n[[check]]\nname = \"a service that does not exist is not stopped\"\nservice = \"bakery-no-such-unit\"\nstate = \"stopped\"\n",
        ssh = sb.ssh_port,
        free = free_port(),
    );
    let img = demo.replace("name = \"sandbox-demo\"", "name = \"probes\"") + &checks;
    sb.project.write("images/probes.toml", &img);
    let reports = sb.project.path().join("reports");
    let out = sb.bakery(&[
        "bake",
        "probes",
        "--target",
        "sandbox",
        "--skip-test",
        "--report",
        reports.to_str().expect("path"),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reports.join("probes.json")).expect("report"),
    )
    .expect("json");
    let result = |name: &str| {
        report["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {report:#}"))
            .clone()
    };
    for passing in [
        "sshd listens",
        "nothing on a free port",
        "bash is installed",
        "bas is not a package",
    ] {
        assert_eq!(result(passing)["passed"], true, "{passing}: {report:#}");
    }
    let svc = result("a service that does not exist is not stopped");
    assert_eq!(svc["passed"], false, "{svc:#}");
    assert!(
        svc["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no such service") || d.contains("did not say")),
        "{svc:#}"
    );
    assert!(registered(&sb, "probes").is_empty());
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A secret that cannot be read on the instance fails its step, with the parameter named (and no
/// value anywhere), instead of the script going on with an empty string.
#[test]
fn a_secret_that_cannot_be_read_fails_the_step_by_name() {
    let sb = Sandbox::start();
    sb.project.write(
        "recipes/secretive/recipe.toml",
        "platforms = [\"linux\"]\n\n[params.token]\ntype = \"secret\"\n\n[[step]]\nname = \"use the token\"\nshell = { inline = \"test -n {{ params.token | sh }}\\necho 'the step went on'\" }\n",
    );
    let demo =
        std::fs::read_to_string(sb.project.path().join("images/sandbox-demo.toml")).expect("demo");
    let img = demo.replace("name = \"sandbox-demo\"", "name = \"secretive\"")
        + "\n[[recipe]]\nuse = \"secretive\"\nwith = { token = { ssm = \"/bakery-test/no-such-secret\" } }\n";
    sb.project.write("images/secretive.toml", &img);
    let out = sb.bakery(&["bake", "secretive", "--target", "sandbox", "--skip-test"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bakery: cannot read secret parameter token (SSM parameter /bakery-test/no-such-secret)"),
        "{err}"
    );
    assert!(err.contains("use the token"), "{err}");
    assert!(!err.contains("the step went on"), "{err}");
    assert!(registered(&sb, "secretive").is_empty());
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

/// A failed AWS call reads as the operation, region, AWS's code and message, the request id
/// and what to do: for access denied (the IAM action to grant) and for a 500 that outlasted the
/// SDK's retries. Never the SDK's Debug dump.
#[test]
fn aws_errors_say_what_failed_where_and_what_to_do() {
    // Access denied, once.
    let sb = Sandbox::start_opts(None, "RunInstances:us-east-1:UnauthorizedOperation");
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("RunInstances in us-east-1 failed: UnauthorizedOperation: fault injected by the test harness: RunInstances in us-east-1 (request id "),
        "{err}"
    );
    assert!(
        err.contains("hint: the credentials bakery runs with may not call ec2:RunInstances in this region: add it to their IAM policy"),
        "{err}"
    );
    for dump in ["SdkError", "ServiceError", "raw: Response", "ErrorMetadata"] {
        assert!(!err.contains(dump), "{dump} in {err}");
    }
    assert_eq!(leftovers(&sb), Vec::<String>::new());
    drop(sb);

    // A 500 on every one of the SDK's attempts.
    let faults = ["RunInstances:us-east-1:InternalError"; 5].join(",");
    let sb = Sandbox::start_opts(None, &faults);
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("RunInstances in us-east-1 failed: InternalError: fault injected by the test harness: RunInstances in us-east-1 (request id "),
        "{err}"
    );
    assert!(
        err.contains("hint: AWS failed on its side, 5 times in a row: run the command again"),
        "{err}"
    );
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

/// Sharing with other accounts needs a customer managed KMS key the consumers may use: with the
/// account's default `aws/ebs` the bake stops in preflight (exit 2, nothing created) and says
/// what to set; with a customer key whose policy does not name the consumer, it stops and prints
/// the statement to add; with one that does, it bakes. The same for an OU the image is shared
/// with (a statement for everyone, limited to a path through the OU).
#[test]
fn sharing_with_the_aws_managed_ebs_key_is_refused_before_launch() {
    let sb = Sandbox::start();
    let path = sb.project.path().join("images/sandbox-demo.toml");
    let demo = std::fs::read_to_string(&path).expect("demo");
    std::fs::write(
        &path,
        demo.replace(
            "[publish]\n",
            "[publish]\nshare = { accounts = [\"111122223333\"] }\n",
        ),
    )
    .expect("write");
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "encrypted with alias/aws/ebs (the account's default EBS key), the AWS managed key"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "set kms_keys.us-east-1 (or kms_key) in target sandbox to a customer managed key"
        ),
        "{err}"
    );
    assert!(!err.contains("+ key pair"), "nothing is created: {err}");
    assert_eq!(leftovers(&sb), Vec::<String>::new());
    assert!(registered(&sb, "sandbox-demo").is_empty());

    // A customer managed key whose policy names only its own account: refused before launch,
    // with the statement to add.
    sb.set_kms_key(&[]);
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not let 111122223333 use the key (kms:CreateGrant, kms:Decrypt"),
        "{err}"
    );
    assert!(
        err.contains("\"arn:aws:iam::111122223333:root\"") && err.contains("\"kms:ReEncrypt*\""),
        "the missing statement is printed: {err}"
    );
    assert!(!err.contains("+ key pair"), "nothing is created: {err}");
    assert_eq!(leftovers(&sb), Vec::<String>::new());

    // With that statement in the key policy: preflight passes, the image is shared.
    sb.set_kms_key(&["111122223333"]);
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(registered(&sb, "sandbox-demo").len(), 1);

    // Shared with an OU too: a policy that names only the account leaves the OU out; refused,
    // with the statement for everyone limited to a path through the OU.
    let ou = "arn:aws:organizations::123456789012:ou/o-abc123defg/ou-ab12-11111111";
    let demo = std::fs::read_to_string(&path).expect("demo");
    std::fs::write(
        &path,
        demo.replace(
            "share = { accounts = [\"111122223333\"] }",
            &format!("share = {{ accounts = [\"111122223333\"], ous = [\"{ou}\"] }}"),
        ),
    )
    .expect("write");
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not let OU ou-ab12-11111111 of o-abc123defg use the key"),
        "{err}"
    );
    assert!(
        err.contains("\"aws:PrincipalOrgPaths\"")
            && err.contains("\"o-abc123defg/*/ou-ab12-11111111/*\""),
        "the missing statement is printed: {err}"
    );
    assert!(!err.contains("+ key pair"), "nothing is created: {err}");
    assert_eq!(leftovers(&sb), Vec::<String>::new());
    // With it (as a team would write it, by the OU's full path): the image bakes and is shared.
    sb.set_kms_key_with(
        &["111122223333"],
        vec![serde_json::json!({
            "Sid": "ou", "Effect": "Allow", "Principal": {"AWS": "*"},
            "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant", "kms:ReEncrypt*", "kms:GenerateDataKey*"],
            "Resource": "*",
            "Condition": {"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": ["o-abc123defg/r-ab12/ou-ab12-11111111/*"]}}
        })],
    );
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let versions = registered(&sb, "sandbox-demo");
    assert_eq!(versions.len(), 2, "{versions:?}");
    let ami = versions.last().map(|(_, id)| id.clone()).expect("an AMI");
    let ous: Vec<String> = rt().block_on(async {
        let (ec2, _) = sb.clients().await;
        ec2.describe_image_attribute()
            .image_id(&ami)
            .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
            .send()
            .await
            .expect("DescribeImageAttribute")
            .launch_permissions()
            .iter()
            .filter_map(|p| p.organizational_unit_arn().map(str::to_string))
            .collect()
    });
    assert_eq!(ous, [ou], "the new version is shared with the OU");
}

/// Exit 194 over SSH means what it means over SSM: bakery restarts the instance, waits for a new
/// boot id (the emulator gives each instance its own, and its SSH sessions the reboot
/// stand-ins), and runs the same step again; the second run goes on.
#[test]
fn exit_194_over_ssh_restarts_and_runs_the_step_again() {
    let sb = Sandbox::start();
    sb.project.write(
        "recipes/restart-once/recipe.toml",
        "platforms = [\"linux\"]\n\n[[step]]\nname = \"asks for a restart once\"\nshell = { inline = '''\nif [ ! -f \"$BAKERY_WORKDIR/asked\" ]; then\n  touch \"$BAKERY_WORKDIR/asked\"\n  echo \"first run: asking for a restart\"\n  exit 194\nfi\necho \"second run: going on\"\ntouch \"$BAKERY_WORKDIR/ran-again\"\n''' }\n\n[[check]]\nname = \"the step ran again\"\nfile = \"{{ workdir }}/ran-again\"\n",
    );
    let image = sb.demo_variant("restart-once", "[[recipe]]\nuse = \"restart-once\"\n\n");
    sb.project.write("images/restart-once.toml", &image);
    let out = sb.bakery(&["bake", "restart-once", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let first = err.find("first run: asking for a restart").expect(&err);
    let restart = err
        .find("asked for a restart (exit 194): restarting, then running it again (1 of at most")
        .expect(&err);
    let second = err.find("second run: going on").expect(&err);
    assert!(first < restart && restart < second, "{err}");
    assert!(err.contains("pass the step ran again"), "{err}");
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}
