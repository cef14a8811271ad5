//! The SSM communicator against the emulator's Run Command (scripts/emulator.py): shell commands
//! run for real on this host, PowerShell commands are recorded but not run (there is no
//! PowerShell here), and every command is readable back with ListCommands.

use bakery::catalog::model::{ImageName, Target};
use bakery::catalog::Catalog;
use bakery::plan::Planner;

use crate::support::fixtures::repo_root;
use crate::support::sandbox::Sandbox;
use crate::support::{bake_id_of, rt, text};

/// The image over SSM: the communicator, and no SSH settings (they only apply to SSH).
fn ssm_toml(toml: &str) -> String {
    toml.replace("communicator = \"ssh\"", "communicator = \"ssm\"")
        .lines()
        .filter(|l| !l.starts_with("ssh = "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Switches `images/<image>.toml` to the ssm communicator.
fn use_ssm(sb: &Sandbox, image: &str) {
    let path = sb.project.path().join(format!("images/{image}.toml"));
    let toml = std::fs::read_to_string(&path).expect("image");
    let ssm = ssm_toml(&toml);
    assert_ne!(ssm, toml, "{image} uses ssh");
    std::fs::write(&path, ssm).expect("write");
}

/// Every command sent (in order): (document, commands parameter joined, executionTimeout).
fn commands(sb: &Sandbox) -> Vec<(String, String, String)> {
    rt().block_on(async {
        let (_, ssm) = sb.clients().await;
        let out = ssm.list_commands().send().await.expect("ListCommands");
        out.commands()
            .iter()
            .map(|c| {
                let p = c.parameters();
                let get = |k: &str| {
                    p.and_then(|p| p.get(k))
                        .map(|v| v.join("\n"))
                        .unwrap_or_default()
                };
                (
                    c.document_name().unwrap_or_default().to_string(),
                    get("commands"),
                    get("executionTimeout"),
                )
            })
            .collect()
    })
}

#[test]
fn sandbox_demo_bakes_over_ssm_for_real() {
    let sb = Sandbox::start();
    use_ssm(&sb, "sandbox-demo");
    let out = sb.bakery(&["bake", "sandbox-demo", "--target", "sandbox", "--json"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let art: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(art["version"], "0.1.0");
    // The checks ran on this host and passed: the uploaded files and the executable are real.
    let checks = art["checks"].as_array().expect("checks");
    assert!(checks.len() >= 4, "{checks:?}");
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");
    // No key pair and no inbound rule: SSM needs neither.
    assert!(!err.contains("+ key pair"), "{err}");
    let sent = commands(&sb);
    assert!(sent.len() > 5, "{sent:?}");
    assert!(
        sent.iter().all(|(d, _, _)| d == "AWS-RunShellScript"),
        "{sent:?}"
    );
    // A step's executionTimeout is its timeout (sandbox-demo: 2m).
    assert!(
        sent.iter()
            .any(|(_, c, t)| c.contains("bash -euo pipefail") && t == "120"),
        "{sent:?}"
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
    assert_eq!(sb.leftover_workdirs(), Vec::<String>::new());
}

/// `images/ssm-step.toml`: sandbox-demo over SSM plus one step running `script`.
fn add_ssm_step(sb: &Sandbox, name: &str, script: &str) {
    sb.project.write(
        &format!("recipes/{name}/recipe.toml"),
        &format!(
            "platforms = [\"linux\"]\n\n[[step]]\nname = \"{name}\"\nshell = {{ inline = '''\n{script}\n''' }}\n"
        ),
    );
    let demo = sb.demo_variant(name, &format!("[[recipe]]\nuse = \"{name}\"\n\n"));
    sb.project
        .write(&format!("images/{name}.toml"), &ssm_toml(&demo));
}

#[test]
fn a_failing_ssm_step_reports_its_exit_code_and_output() {
    let sb = Sandbox::start();
    add_ssm_step(&sb, "ssm-fails", "echo about to fail >&2\nexit 7");
    let out = sb.bakery(&["bake", "ssm-fails", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("(ssm-fails / ssm-fails) exited with 7"),
        "{err}"
    );
    assert!(err.contains("about to fail"), "{err}");
    assert!(err.contains("nothing was left behind"), "{err}");
    assert_eq!(sb.leftovers(), Vec::<String>::new());
}

#[test]
fn exit_194_reboots_and_runs_the_script_again() {
    let sb = Sandbox::start();
    // First run: asks for a reboot. Second run (after it): carries on.
    add_ssm_step(
        &sb,
        "ssm-reboot",
        "b=/proc/sys/kernel/random/boot_id; m=\"$BAKERY_WORKDIR/asked-for-reboot\"\nif [ -e \"$m\" ]; then test \"$(cat $b)\" != \"$(cat \"$m\")\" && echo second run after a reboot; else cat $b > \"$m\"; echo first run; exit 194; fi",
    );
    let out = sb.bakery(&["bake", "ssm-reboot", "--target", "sandbox", "-v"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // Only the final run's output reaches bakery (the invocation stayed InProgress across it).
    assert!(err.contains("second run after a reboot"), "{err}");
    assert!(!err.contains("first run"), "{err}");
    assert_eq!(sb.leftovers(), Vec::<String>::new());
}

#[test]
fn a_restart_step_over_ssm_waits_for_a_new_boot() {
    let sb = Sandbox::start();
    // The emulator gives each instance its own boot id and reboots it on `systemctl reboot`.
    sb.project.write(
        "recipes/reboots/recipe.toml",
        r#"platforms = ["linux"]

[[step]]
name = "note the boot"
shell = { inline = 'cat /proc/sys/kernel/random/boot_id > "$BAKERY_WORKDIR/boot-before"' }

[[step]]
name = "restart"
restart = {}

[[step]]
name = "a new boot"
shell = { inline = '''test "$(cat /proc/sys/kernel/random/boot_id)" != "$(cat "$BAKERY_WORKDIR/boot-before")" && echo booted again''' }
"#,
    );
    let demo = sb.demo_variant("reboots", "[[recipe]]\nuse = \"reboots\"\n\n");
    sb.project.write("images/reboots.toml", &ssm_toml(&demo));
    let out = sb.bakery(&["bake", "reboots", "--target", "sandbox", "-v"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("booted again"), "{err}");
    assert_eq!(sb.leftovers(), Vec::<String>::new());
}

#[test]
fn an_interrupt_during_an_ssm_step_cancels_the_command_and_leaves_nothing() {
    let sb = Sandbox::start();
    add_ssm_step(&sb, "ssm-slow", "echo started\nsleep 120\necho not reached");
    let (status, all) = sb.bake_interrupted("ssm-slow", |v| {
        if v["event"] == "step" && v["recipe"] == "ssm-slow" {
            // Let the command reach the instance, then interrupt.
            std::thread::sleep(std::time::Duration::from_secs(2));
            1
        } else {
            0
        }
    });
    assert_eq!(status.code(), Some(130), "{all}");
    assert!(all.contains("was cancelled in provision"), "{all}");
    assert!(all.contains("nothing was left behind"), "{all}");
    // The command was cancelled on the instance, not left running.
    let sleeping = rt().block_on(async {
        let (_, ssm) = sb.clients().await;
        let out = ssm.list_commands().send().await.expect("ListCommands");
        out.commands()
            .iter()
            .filter(|c| {
                c.parameters()
                    .and_then(|p| p.get("commands"))
                    .is_some_and(|v| v.join("\n").contains("bash -euo pipefail"))
            })
            .map(|c| {
                c.status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
    });
    let cancels = sb
        .actions()
        .iter()
        .filter(|c| c.action == "CancelCommand")
        .count();
    assert_eq!(cancels, 1, "one CancelCommand: {all}");
    assert_eq!(
        sleeping.last().map(String::as_str),
        Some("Cancelled"),
        "{sleeping:?}"
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new());
}

#[test]
fn output_beyond_the_api_limit_comes_from_s3_or_is_reported_as_truncated() {
    let sb = Sandbox::start();
    add_ssm_step(
        &sb,
        "ssm-chatty",
        "head -c 30000 /dev/zero | tr '\\0' x; echo; echo the-end",
    );
    let bake = || {
        let out = sb.bakery(&[
            "bake",
            "ssm-chatty",
            "--target",
            "sandbox",
            "--log-format",
            "json",
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        err
    };
    // With the target's bucket: the command's full output is read back from S3.
    let err = bake();
    assert!(err.contains("the-end"), "{err}");
    assert!(!err.contains("output truncated by SSM"), "{err}");
    assert_eq!(
        sb.leftovers(),
        Vec::<String>::new(),
        "the output objects went with the bake"
    );

    // Without one: the API's first 24,000 characters, and a note saying so.
    let toml = std::fs::read_to_string(sb.project.path().join("bakery.toml")).expect("toml");
    let no_bucket: String = toml
        .lines()
        .filter(|l| !l.starts_with("s3_bucket"))
        .map(|l| format!("{l}\n"))
        .collect();
    sb.project.write("bakery.toml", &no_bucket);
    let err = bake();
    assert!(err.contains("output truncated by SSM"), "{err}");
    assert!(!err.contains("the-end"), "{err}");
}

#[test]
fn a_large_file_goes_through_s3_and_its_objects_are_removed() {
    let sb = Sandbox::start();
    // 100 KB: more than one inline chunk.
    let big: String = (0..3000)
        .map(|i| format!("line {i:05} of a file too big to inline\n"))
        .collect();
    assert!(big.len() > 90_000);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(big.as_bytes()))
    };
    sb.project.write("recipes/big-file/files/big.txt", &big);
    sb.project.write(
        "recipes/big-file/recipe.toml",
        "platforms = [\"linux\"]\n\n[[step]]\nname = \"big file\"\nfile = { source = \"files/big.txt\", destination = \"{{ workdir }}/big.txt\" }\n",
    );
    let demo = sb.demo_variant(
        "big-file",
        &format!("[[recipe]]\nuse = \"big-file\"\n\n[[check]]\nname = \"the big file arrived whole\"\nfile = \"{{{{ workdir }}}}/big.txt\"\nsha256 = \"{sha}\"\n\n"),
    );
    sb.project.write("images/big-file.toml", &ssm_toml(&demo));
    let out = sb.bakery(&["bake", "big-file", "--target", "sandbox", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let art: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        art["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .any(|c| c["name"] == "the big file arrived whole" && c["passed"] == true),
        "{art}"
    );
    // The instance fetched it from the bake's prefix (and checked its sha256).
    let fetch = commands(&sb)
        .into_iter()
        .find(|(_, c, _)| c.contains("aws s3 cp"))
        .expect("a command fetching from S3");
    assert!(
        fetch.1.contains("s3://bakery-sandbox/bakery/bk-"),
        "{}",
        fetch.1
    );
    assert!(fetch.1.contains(&sha), "{}", fetch.1);
    assert_eq!(
        sb.leftovers(),
        Vec::<String>::new(),
        "nothing left, in S3 neither"
    );
}

fn windows_book(bake_id: &str) -> Vec<(String, String)> {
    windows_book_of(&repo_root(), bake_id)
}

/// The book of windows-2022-base as the project at `root` defines it.
fn windows_book_of(root: &std::path::Path, bake_id: &str) -> Vec<(String, String)> {
    let catalog = Catalog::load(root).expect("catalog");
    let target = Target::offline();
    let plan = Planner::new(&catalog, &target)
        .plan(&ImageName::new_unchecked("windows-2022-base"))
        .expect("plan");
    bakery::bake::windows_script_book(&plan, &format!("C:\\Windows\\Temp\\bakery-{bake_id}"))
}

fn book_text(book: &[(String, String)]) -> String {
    book.iter()
        .map(|(label, script)| format!("# ==== {label}\n{script}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every PowerShell script a windows-2022-base bake sends, pinned (wrapper, steps, a restart's
/// commands, probes, sysprep). Regenerate with BAKERY_UPDATE_GOLDEN=1 after a deliberate change.
#[test]
fn the_powershell_of_windows_2022_base_is_pinned() {
    let mut book = windows_book("bk-golden");
    // windows-2022-base has no restart step; pin what any restart sends too.
    let restart =
        bakery::bake::windows_script_book(&restart_plan(), "C:\\Windows\\Temp\\bakery-bk-golden");
    book.extend(restart.into_iter().filter(|(l, _)| l.contains("restart")));
    // The user data of the same image provisioned over SSH: OpenSSH Server and the launch key
    // for Administrators.
    book.push((
        "user data (communicator = ssh)".into(),
        windows_ssh_user_data(),
    ));
    let got = book_text(&book);
    let path = repo_root().join("tests/golden/windows-2022-base.ps1");
    if std::env::var_os("BAKERY_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).expect("write golden");
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "the PowerShell changed; if that is intended, run with BAKERY_UPDATE_GOLDEN=1 and review {}\n{}",
        path.display(),
        first_difference(&want, &got)
    );
    for must in [
        "$ErrorActionPreference = 'Stop'",
        "##bakery-ran##",
        "if ($LASTEXITCODE) { exit $LASTEXITCODE }",
        "Get-Service -Name 'AmazonSSMAgent'",
        "Get-NetTCPConnection -State Listen -ErrorAction SilentlyContinue",
        "& $ec2launch sysprep --shutdown",
        "meta-data/public-keys/0/openssh-key",
        "icacls.exe $authorized /inheritance:r /grant '*S-1-5-32-544:F' /grant '*S-1-5-18:F'",
        "& $ec2launch status 2>&1 | Out-Null",
        "LastBootUpTime",
        "shutdown.exe /r",
    ] {
        assert!(got.contains(must), "{must}");
    }
}

/// The rendered user data of windows-2022-base with `communicator = "ssh"`.
fn windows_ssh_user_data() -> String {
    let p = crate::support::fixtures::shipped_copy();
    std::fs::copy(
        repo_root().join("bakery.toml"),
        p.path().join("bakery.toml"),
    )
    .ok();
    let path = p.path().join("images/windows-2022-base.toml");
    let toml = std::fs::read_to_string(&path).expect("image");
    std::fs::write(
        &path,
        toml.replace("communicator = \"ssm\"", "communicator = \"ssh\""),
    )
    .expect("write");
    let catalog = Catalog::load(p.path()).unwrap_or_else(|d| panic!("{d}"));
    let plan = Planner::new(&catalog, &Target::offline())
        .plan(&ImageName::new_unchecked("windows-2022-base"))
        .expect("plan");
    plan.user_data.expect("user data")
}

/// A one-step plan whose step is a restart (for the restart's commands).
fn restart_plan() -> bakery::plan::Plan {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("images")).expect("mkdir");
    std::fs::create_dir_all(root.join("recipes/restart-only")).expect("mkdir");
    std::fs::write(
        root.join("recipes/restart-only/recipe.toml"),
        "platforms = [\"windows\"]\n\n[[step]]\nname = \"restart\"\nrestart = {}\n",
    )
    .expect("write");
    std::fs::write(
        root.join("images/restart-only.toml"),
        "name = \"restart-only\"\nversion = \"1.0\"\nplatform = \"windows\"\narchitecture = \"x86_64\"\n\n[source]\nami = \"ami-0123456789abcdef0\"\n\n[build]\ninstance_types = [\"m6i.large\"]\ncommunicator = \"ssm\"\n\n[[recipe]]\nuse = \"restart-only\"\n",
    )
    .expect("write");
    let catalog = Catalog::load(root).unwrap_or_else(|d| panic!("{d}"));
    Planner::new(&catalog, &Target::offline())
        .plan(&ImageName::new_unchecked("restart-only"))
        .expect("plan")
}

fn first_difference(want: &str, got: &str) -> String {
    for (i, (w, g)) in want.lines().zip(got.lines()).enumerate() {
        if w != g {
            return format!("line {}:\n  golden: {w}\n  now:    {g}", i + 1);
        }
    }
    format!(
        "lengths differ: golden {} lines, now {}",
        want.lines().count(),
        got.lines().count()
    )
}

#[test]
fn windows_2022_base_is_provisioned_over_ssm_and_fails_verification_cleanly() {
    let sb = Sandbox::start();
    // Without the update step (see the test below for it), provisioning goes through and
    // verification fails cleanly.
    let path = sb.project.path().join("images/windows-2022-base.toml");
    let image = std::fs::read_to_string(&path).expect("image");
    let without = image.replace("[[recipe]]\nuse = \"windows-update\"\n", "");
    assert_ne!(without, image, "windows-2022-base uses windows-update");
    std::fs::write(&path, without).expect("write");
    let out = sb.bakery(&[
        "bake",
        "windows-2022-base",
        "--target",
        "sandbox",
        "--log-format",
        "json",
    ]);
    let err = text(&out.stderr);
    // Provisioning went through (the emulator accepts PowerShell without running it); every
    // probe then had no output to evaluate, so nothing was registered.
    assert_eq!(out.status.code(), Some(3), "{err}");
    let bake_id = bake_id_of(&err);
    let checks: Vec<serde_json::Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "check")
        .map(|v| v["result"].clone())
        .collect();
    assert!(checks.len() >= 4, "{checks:?}");
    for c in &checks {
        assert_eq!(c["passed"], false, "{c}");
        assert!(
            c["detail"]
                .as_str()
                .unwrap_or("")
                .contains("no output to evaluate"),
            "{c}"
        );
    }
    // What bakery sent, read back from the emulator, is exactly the pinned book up to the
    // checks, then the working directory's removal (sysprep never ran: verification failed).
    let sent = commands(&sb);
    assert!(
        sent.iter().all(|(d, _, _)| d == "AWS-RunPowerShellScript"),
        "{sent:?}"
    );
    // The book of the project as this test changed it (no update step, so neither its check);
    // a bake draws a random mark for its probe batches, the book has a fixed one.
    let book = windows_book_of(sb.project.path(), "bk-golden");
    let until_finalize: Vec<&(String, String)> = book
        .iter()
        .take_while(|(l, _)| !l.starts_with("finalize"))
        .collect();
    assert!(
        until_finalize
            .iter()
            .any(|(l, _)| l.starts_with("checks: ")),
        "the probes go as a batch"
    );
    let mark = regex::Regex::new("bakery-probe-[0-9a-f]{16}").expect("regex");
    let got: Vec<String> = sent
        .iter()
        .map(|(_, c, _)| {
            mark.replace_all(&c.replace(&bake_id, "bk-golden"), bakery::bake::GOLDEN_MARK)
                .into_owned()
        })
        .collect();
    let want: Vec<String> = until_finalize.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "labels: {:?}",
        until_finalize.iter().map(|(l, _)| l).collect::<Vec<_>>()
    );
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "command {i} ({})", until_finalize[i].0);
    }
    assert!(err.contains("nothing was left behind"), "{err}");
    assert_eq!(sb.leftovers(), Vec::<String>::new());
}

/// The emulator records PowerShell without running it, so a Windows Update pass prints nothing:
/// bakery refuses that as no result (never as "nothing to install"), and the bake fails in
/// provision, leaving nothing. (The pass itself is pinned in the golden book and parsed; its
/// output parsing is unit-tested.)
#[test]
fn a_windows_update_pass_without_a_result_fails_the_bake_cleanly() {
    let sb = Sandbox::start();
    let out = sb.bakery(&["bake", "windows-2022-base", "--target", "sandbox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "(windows-update / Windows Update, restarting until nothing is pending) pass 1"
        ) && err.contains("the Windows Update pass printed no result"),
        "{err}"
    );
    assert!(err.contains("nothing was left behind"), "{err}");
    assert_eq!(sb.leftovers(), Vec::<String>::new());
}

/// Every PowerShell script bakery sends to Windows (the pinned book: wrapper, steps, probes,
/// readiness, restarts, Windows Update passes, sysprep) parses, with the same parser that
/// `bakery validate` runs over recipes: the Windows path is syntactically proven everywhere it is
/// produced, not 20 minutes into a bake.
#[test]
fn every_script_of_the_powershell_book_parses() {
    use bakery::catalog::syntax::{errors, Lang};
    let mut book = windows_book("bk-golden");
    book.extend(bakery::bake::windows_script_book(
        &restart_plan(),
        "C:\\Windows\\Temp\\bakery-bk-golden",
    ));
    let mut bad = Vec::new();
    for (label, script) in &book {
        if let Some(f) = errors(Lang::PowerShell, script).first() {
            let line = script[..f.range.start].matches('\n').count() + 1;
            let text = script.lines().nth(line - 1).unwrap_or("");
            bad.push(format!("{label}: line {line}: {}: {text}", f.message));
        }
    }
    // The PowerShell inside the user data, as EC2Launch runs it.
    let (lang, script) = bakery::catalog::syntax::user_data_script(&windows_ssh_user_data(), true)
        .expect("<powershell>");
    assert_eq!(errors(lang, &script), vec![], "{script}");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // Every check kind's Windows probe, too (the book has only the shipped image's checks).
    for kind in windows_probe_kinds() {
        let p = bakery::checks::probe::windows(&kind);
        assert_eq!(errors(Lang::PowerShell, &p), vec![], "{kind:?}:\n{p}");
    }
}

fn windows_probe_kinds() -> Vec<bakery::checks::CheckKind> {
    use bakery::checks::{CheckKind, ServiceState, StartMode};
    vec![
        CheckKind::Command {
            command: "Get-Date".into(),
            exit_code: 0,
            stdout_contains: None,
            stdout_matches: None,
        },
        CheckKind::File {
            path: "C:\\it's\\x.txt".into(),
            exists: true,
            contains: Some("a'b".into()),
            sha256: Some("00".into()),
            mode: None,
        },
        CheckKind::Service {
            service: "BuildAgent".into(),
            state: Some(ServiceState::Running),
            start_mode: Some(StartMode::Auto),
        },
        CheckKind::Port {
            port: 9090,
            listening: false,
        },
        CheckKind::Http {
            url: "http://localhost:9090/".into(),
            status: 200,
            body_contains: Some("ok".into()),
        },
        CheckKind::Package {
            package: "git".into(),
            installed: true,
            version: Some("2.".into()),
        },
        CheckKind::Registry {
            key: "HKLM:\\SOFTWARE\\X".into(),
            value: Some("V".into()),
            equals: Some("1".into()),
        },
        CheckKind::Hotfix {
            hotfix: "KB1".into(),
            installed: true,
        },
        CheckKind::WindowsFeature {
            feature: "Telnet-Client".into(),
            installed: false,
        },
    ]
}

/// A Windows image that bakes in the sandbox (its one PowerShell step is recorded, not run;
/// no checks, which could not pass here) with EC2 Fast Launch in `publish`.
fn add_fast_launch_image(sb: &Sandbox) {
    sb.project.write(
        "recipes/hello/recipe.toml",
        "platforms = [\"windows\"]\n\n[[step]]\nname = \"hello\"\npowershell = { inline = \"Write-Output hello\" }\n",
    );
    sb.project.write(
        "images/win-fast.toml",
        "name = \"win-fast\"\nversion = \"1.0\"\nplatform = \"windows\"\narchitecture = \"x86_64\"\n\n[source]\nssm_parameter = \"/aws/service/ami-windows-latest/Windows_Server-2022-English-Full-Base\"\n\n[build]\ninstance_types = [\"m6i.large\"]\ncommunicator = \"ssm\"\nroot_volume = { size_gb = 40, type = \"gp3\" }\n\n[[recipe]]\nuse = \"hello\"\n\n[publish]\nfast_launch = { max_parallel_launches = 6, target_resource_count = 2 }\n",
    );
}

/// EC2 Fast Launch of each AMI in `region` that has it: (AMI, state, parallel launches, target
/// snapshot count), read back from the emulator.
fn fast_launch_of(sb: &Sandbox, region: &str) -> Vec<(String, String, i32, i32)> {
    rt().block_on(async {
        let (ec2, _) = sb.clients_in(region).await;
        let out = ec2
            .describe_fast_launch_images()
            .send()
            .await
            .expect("DescribeFastLaunchImages");
        out.fast_launch_images()
            .iter()
            .map(|i| {
                (
                    i.image_id().unwrap_or_default().to_string(),
                    i.state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    i.max_parallel_launches().unwrap_or_default(),
                    i.snapshot_configuration()
                        .and_then(|c| c.target_resource_count())
                        .unwrap_or_default(),
                )
            })
            .collect()
    })
}

/// `publish.fast_launch`: enabled on the new AMI in every publish region after publish, shown
/// by `bakery versions`, and disabled by prune before it deregisters an AMI.
#[test]
fn fast_launch_is_enabled_in_every_region_and_disabled_by_prune() {
    const EU: &str = "eu-west-1";
    let sb = Sandbox::start();
    sb.set_regions(&["us-east-1", EU]);
    add_fast_launch_image(&sb);
    let bake = || {
        let out = sb.bakery(&["bake", "win-fast", "--target", "sandbox", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let first = bake();
    let amis = first["amis"].as_object().expect("amis").clone();
    assert_eq!(amis.len(), 2, "{first}");
    for (region, ami) in &amis {
        let state = first["fast_launch"][region].as_str().unwrap_or_default();
        assert!(["enabling", "enabled"].contains(&state), "{first}");
        let fl = fast_launch_of(&sb, region);
        assert_eq!(fl.len(), 1, "{region}: {fl:?}");
        assert_eq!(fl[0].0, ami.as_str().unwrap());
        assert_eq!((fl[0].2, fl[0].3), (6, 2), "{fl:?}");
    }
    let v = sb.bakery(&["versions", "win-fast", "--target", "sandbox", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).expect("versions json");
    assert_eq!(
        v["versions"][0]["fast_launch"].as_object().map(|m| m.len()),
        Some(2),
        "{v}"
    );
    let table = text(
        &sb.bakery(&["versions", "win-fast", "--target", "sandbox"])
            .stdout,
    );
    assert!(table.contains("(fast launch enabl"), "{table}");

    // A second version; pruning the first turns its Fast Launch off before it deregisters it.
    let second = bake();
    let out = sb.bakery(&["prune", "win-fast", "--keep", "1", "--target", "sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for (region, ami) in &amis {
        let fl = fast_launch_of(&sb, region);
        let ids: Vec<&str> = fl.iter().map(|f| f.0.as_str()).collect();
        assert!(!ids.contains(&ami.as_str().unwrap()), "{region}: {fl:?}");
        assert_eq!(ids, [second["amis"][region].as_str().unwrap()], "{region}");
    }
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nothing left behind");
}
