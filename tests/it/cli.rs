//! The binary: exit codes, output, and no network call on invalid input.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::text;
use crate::support::{repo_root, Project};

fn bakery(args: &[&str], project: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bakery"))
        .args(args)
        .arg("--project")
        .arg(project)
        .env_remove("BAKERY_PROJECT")
        .output()
        .expect("run bakery")
}

#[test]
fn shipped_catalog_validates() {
    let out = bakery(&["validate"], &repo_root());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("ok:"), "{}", text(&out.stdout));
}

#[test]
fn invalid_input_exits_2_with_located_errors_and_no_network() {
    // Every AWS client honours AWS_ENDPOINT_URL; point it at a listener that counts connections.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let p = Project::fixture();
    p.write(
        "images/base.toml",
        &crate::support::BASE_IMAGE.replace("instance_types = [", "instance_type = ["),
    );
    for args in [
        &["validate"][..],
        &["render", "base"],
        &["plan", "--offline"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_bakery"))
            .args(args)
            .arg("--project")
            .arg(p.path())
            .env("AWS_ENDPOINT_URL", &endpoint)
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(
            err.contains("error[unknown-field]: unknown field `instance_type`"),
            "{err}"
        );
        assert!(err.contains("--> images/base.toml:10:1"), "{err}");
        assert!(
            err.contains("hint: did you mean `instance_types`?"),
            "{err}"
        );
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        listener.accept().is_err(),
        "bakery connected to the AWS endpoint on invalid input"
    );
}

#[test]
fn validate_json_lists_problems() {
    let p = Project::fixture();
    p.write(
        "images/base.toml",
        &crate::support::BASE_IMAGE.replace("\"t3.small\"", "\"t3-small\""),
    );
    let out = bakery(&["validate", "--json"], p.path());
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["kind"], "invalid-instance-type");
    assert_eq!(v["problems"][0]["location"], "images/base.toml:10:31");
}

#[test]
fn validate_accepts_a_file_inside_a_project() {
    let p = Project::fixture();
    let file = p.path().join("images/base.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_bakery"))
        .arg("validate")
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("3 images, 2 recipes, 1 targets"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn render_teamcity_agent_windows_is_complete_powershell() {
    let out = bakery(&["render", "teamcity-agent-windows"], &repo_root());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for leftover in ["{{", "}}", "{%", "%}", "{#", "#}"] {
        assert!(
            !s.contains(leftover),
            "template syntax `{leftover}` left in:\n{s}"
        );
    }
    // The pieces that make it a TeamCity agent image, in order.
    let must = [
        "$ErrorActionPreference",
        "buildAgentFull.zip",
        "buildAgent.properties",
        "BuildAgent",
        "EC2Launch",
    ];
    let mut at = 0;
    for m in must {
        let i = s[at..]
            .find(m)
            .unwrap_or_else(|| panic!("`{m}` missing (after byte {at}) in:\n{s}"));
        at += i;
    }
    assert!(s.contains("# fingerprint "), "{s}");
}

#[test]
fn render_substitutes_parameters_and_secrets_as_lookups() {
    let p = Project::fixture();
    let out = bakery(&["render", "base", "--json"], p.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let steps = v["steps"].as_array().expect("steps");
    assert_eq!(
        steps[0]["script"],
        "#!/bin/bash\necho \"hello from base\" > \"$BAKERY_WORKDIR/greeting\"\n"
    );
    // A secret renders as a variable that the step's prelude fetches, failing the step when the
    // lookup fails; never the value.
    assert_eq!(steps[1]["script"], "echo 2 \"${BAKERY_SECRET_TOKEN}\"");
    let secrets = steps[1]["secrets"].as_str().expect("secrets");
    assert!(
        secrets.starts_with("BAKERY_SECRET_TOKEN=$(aws ssm get-parameter --with-decryption --name '/demo/token' --query Parameter.Value --output text) || {"),
        "{secrets}"
    );
    assert!(steps[0].get("secrets").is_none(), "{}", steps[0]);
    assert_eq!(steps[2]["kind"], "upload");
    assert_eq!(
        steps[2]["files"][0]["size"],
        "name = base\nversion = 1.0\n".len()
    );
    assert_eq!(v["checks"][0]["stdout_contains"], "hello");
    assert_eq!(v["checks"][1]["kind"], "file");
}

#[test]
fn plan_offline_orders_parents_first_and_explains() {
    let p = Project::fixture();
    let out = bakery(&["plan", "--offline", "--json"], p.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: Vec<&str> = v["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["image"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["base", "child", "winimg"]);
    // The table names a parent source as it is written in the image.
    let table = text(&bakery(&["plan", "--offline"], p.path()).stdout);
    let child = table
        .lines()
        .find(|l| l.starts_with("child "))
        .expect("child row");
    assert!(child.ends_with("image base@^1"), "{table}");
    let out = bakery(&["plan", "--offline", "--explain", "child"], p.path());
    let s = text(&out.stdout);
    for label in [
        "format",
        "image images/child.toml",
        "parent base",
        "recipe recipes/demo/recipe.toml",
        "recipes/demo/greet.sh",
        "file recipes/demo/files/app.conf",
    ] {
        assert!(s.contains(label), "`{label}` not in:\n{s}");
    }
    let out = bakery(&["plan", "--offline", "--exit-code"], p.path());
    assert_eq!(
        out.status.code(),
        Some(2),
        "--exit-code compares with the registry: not with --offline"
    );
}

#[test]
fn unknown_image_and_target_are_invalid_input() {
    let p = Project::fixture();
    let out = bakery(&["render", "bsae"], p.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("did you mean `base`?"),
        "{}",
        text(&out.stderr)
    );
    let out = bakery(&["render", "base", "--target", "sandbx"], p.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("did you mean `sandbox`?"),
        "{}",
        text(&out.stderr)
    );
    let out = bakery(&["frobnicate"], p.path());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schema_describes_every_format() {
    for (format, field) in [
        ("image", "instance_types"),
        ("recipe", "platforms"),
        ("target", "ssm_prefix"),
    ] {
        let out = bakery(&["schema", format], &repo_root());
        assert_eq!(out.status.code(), Some(0));
        let s = text(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        assert!(v["$schema"].as_str().is_some(), "{s}");
        assert!(s.contains(field), "{format}: {field} missing");
        assert!(
            s.contains("\"additionalProperties\": false"),
            "{format}: unknown fields must be refused"
        );
    }
}

#[test]
fn json_logs_are_json() {
    let p = Project::fixture();
    let out = bakery(&["-vv", "--log-format", "json", "validate"], p.path());
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    // The log lines (the command's own result line is not one) have the JSON events' envelope.
    let logs: Vec<&str> = err.lines().filter(|l| l.starts_with('{')).collect();
    assert!(!logs.is_empty(), "a log line: {err}");
    for l in logs {
        let v: serde_json::Value = serde_json::from_str(l).expect("json log line");
        assert_eq!(v["schema"], 2, "{l}");
        assert_eq!(v["app"], "bakery", "{l}");
        assert!(
            ["trace", "debug", "info", "warn", "error"]
                .contains(&v["level"].as_str().unwrap_or("")),
            "{l}"
        );
        let ts = v["timestamp"].as_str().expect("timestamp");
        assert!(
            humantime::parse_rfc3339(ts).is_ok() && ts.len() == 24,
            "{ts}"
        );
        assert!(
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("bakery")),
            "{l}"
        );
    }
}

#[test]
fn help_has_examples() {
    for cmd in ["validate", "render", "plan", "schema"] {
        let out = Command::new(env!("CARGO_BIN_EXE_bakery"))
            .args([cmd, "--help"])
            .output()
            .expect("run");
        assert!(
            text(&out.stdout).contains("Examples:"),
            "{cmd} --help has no examples"
        );
    }
}

/// Every mistake on the command line exits 2 with what to do, before any AWS call.
#[test]
fn command_line_mistakes_exit_2_with_what_to_do_and_no_network() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let p = Project::fixture();
    p.write(
        "bakery.toml",
        &crate::support::fixtures::BAKERY_TOML.replace("http://127.0.0.1:5000", &endpoint),
    );
    let cases: &[(&[&str], &str)] = &[
        (
            &["bake", "base", "child", "--junit", "j.xml"],
            "--junit is for a single bake: name one image, or use --report DIR",
        ),
        (&["bake", "--junit", "j.xml", "--all"], "for a single bake"),
        (&["bake"], "name the image to bake"),
        (&["bake", "base", "--jobs", "0"], "--jobs"),
        (&["gc", "--older-than", "5x"], "is not a duration"),
        (
            &["prune", "base", "--keep", "1", "--older-than", "5x"],
            "--older-than: `5x` is not a duration",
        ),
        (
            &["prune", "base", "--keep", "0"],
            "--keep must be at least 1",
        ),
        (&["resolve", "base"], "write image@requirement"),
        (&["resolve", "base@^^1"], "write a semver requirement"),
        (&["resolve", "Bad_Name@^1"], "`Bad_Name@^1`"),
        (&["test", "base"], "write image@requirement"),
        (
            &["revoke", "base@x", "--reason", "r"],
            "write an exact version",
        ),
        (
            &["revoke", "base@1.0.0", "--reason", " "],
            "--reason must say why",
        ),
        (
            &["promote", "base@1.0.0", "Bad Channel"],
            "is not a channel name",
        ),
        (
            &["rollback", "base", "Bad Channel"],
            "is not a channel name",
        ),
        (&["plan", "--explain", "base"], "--offline"),
        (&["lock"], "bakery.lock.toml does not exist"),
        (&["outdated"], "bakery.lock.toml does not exist"),
    ];
    for (args, needle) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_bakery"))
            .args(*args)
            .args(["--target", "sandbox", "--project"])
            .arg(p.path())
            .env("AWS_ENDPOINT_URL", &endpoint)
            .current_dir(p.path())
            .output()
            .expect("run");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_bakery"))
        .args(["--project", "/nonexistent/bakery", "validate"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is not a directory"));
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        listener.accept().is_err(),
        "bakery connected to the AWS endpoint on a command-line mistake"
    );
}

/// An AWS endpoint that does not answer reads as the operation, region and the chain of causes
/// on one line, never the SDK's Debug dump.
#[test]
fn an_unreachable_endpoint_is_one_readable_line() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let p = Project::fixture();
    p.write(
        "bakery.toml",
        &crate::support::fixtures::BAKERY_TOML
            .replace("http://127.0.0.1:5000", &format!("http://127.0.0.1:{port}")),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_bakery"))
        .args(["resolve", "base@latest", "--target", "sandbox", "--project"])
        .arg(p.path())
        .env("AWS_ACCESS_KEY_ID", "sandbox")
        .env("AWS_SECRET_ACCESS_KEY", "sandbox")
        .output()
        .expect("run");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("in us-east-1 failed: dispatch failure"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    for dump in ["DispatchFailure(", "ConnectorError {", "source:"] {
        assert!(!err.contains(dump), "{dump} in {err}");
    }
}

/// The GitHub Actions example passes actionlint (with shellcheck on its scripts), installed by
/// scripts/install-sandbox-deps into the sandbox's virtualenv.
#[test]
fn the_github_actions_example_passes_actionlint() {
    let root = repo_root();
    let venv = std::env::var("BAKERY_SANDBOX_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join(".sandbox/venv"));
    let actionlint = venv.join("bin/actionlint");
    assert!(
        actionlint.exists(),
        "no {}: run `bash scripts/install-sandbox-deps`",
        actionlint.display()
    );
    let workflow = root.join("examples/ci/github/bake.yml");
    let out = Command::new(&actionlint)
        .arg("-no-color")
        .arg(&workflow)
        .current_dir(&root)
        .output()
        .expect("run actionlint");
    assert!(
        out.status.success(),
        "actionlint found problems:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // shellcheck is what checks the run: scripts; without it actionlint skips them silently.
    let sc = Command::new("shellcheck").arg("--version").output();
    assert!(
        sc.is_ok_and(|o| o.status.success()),
        "no shellcheck: run `bash scripts/install-sandbox-deps`"
    );
}

#[test]
fn a_closed_stdout_is_no_panic() {
    // `bakery render … | head -c 1`, with `head` gone before bakery writes: the pipe's read end
    // is closed before bakery starts, so every write to stdout fails (EPIPE).
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_bakery"))
        .args(["render", "sandbox-demo", "--project"])
        .arg(repo_root())
        .env_remove("BAKERY_PROJECT")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run bakery");
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}
