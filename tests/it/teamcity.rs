//! The TeamCity agent images, from the shipped catalog: what bakery would put on the instance and
//! what the image's checks demand of it.

use bakery::catalog::model::InputKind;
use bakery::catalog::model::{ImageName, Target};
use bakery::catalog::Catalog;
use bakery::checks::{CheckKind, ServiceState, StartMode};
use bakery::plan::{InputValue, InputValues, Plan, PlannedAction, Planner};

use crate::support::fixtures::repo_root;

/// What the shipped images' server answers in these tests (no network: the values a read of
/// the inputs would have given).
const SERVER: &str = "https://teamcity.example.com";
const REPORTED: &str = "2025.07 (build 197242)";

fn read_inputs(reported: &str) -> InputValues {
    InputValues::from([
        (
            (
                InputKind::Http,
                format!("{SERVER}/update/buildAgentFull.zip"),
            ),
            InputValue {
                sha256: "41aa".repeat(16),
                value: format!("{SERVER}/update/buildAgentFull.zip"),
            },
        ),
        (
            (
                InputKind::HttpText,
                format!("{SERVER}/app/rest/server/version"),
            ),
            InputValue {
                sha256: "9f2c".repeat(16),
                value: reported.to_string(),
            },
        ),
    ])
}

/// The plan of a shipped image, its inputs read (`inputs` none: unread, as `plan --offline`).
fn plan_in(
    root: &std::path::Path,
    image: &str,
    inputs: Option<InputValues>,
) -> Result<Plan, bakery::catalog::diag::Diagnostics> {
    let catalog = Catalog::load(root).unwrap_or_else(|d| panic!("{d}"));
    let target = Target::offline();
    let mut planner = Planner::new(&catalog, &target);
    if let Some(v) = inputs {
        planner.add_inputs(v);
    }
    planner.plan(&ImageName::new_unchecked(image))
}

fn plan(image: &str) -> Plan {
    plan_in(&repo_root(), image, Some(read_inputs(REPORTED))).unwrap_or_else(|d| panic!("{d}"))
}

/// The agent's version on disk: `bakery.teamcity.version=` of its buildAgent.properties.
fn recorded_version(p: &Plan) -> String {
    p.steps
        .iter()
        .find_map(|s| match &s.action {
            PlannedAction::Upload {
                destination, files, ..
            } if destination.ends_with("buildAgent.properties") => {
                String::from_utf8(files[0].bytes.clone()).ok()
            }
            _ => None,
        })
        .and_then(|props| {
            props
                .lines()
                .find_map(|l| l.strip_prefix("bakery.teamcity.version="))
                .map(str::to_string)
        })
        .expect("buildAgent.properties records the version")
}

/// The shipped agent images follow the server: the version it reports (input
/// teamcity_server_version, read with a token) is what the agent records and what the test phase
/// looks for. `server_version` in an image pins it instead: a server that reports another version
/// stops the plan (exit 2 from the CLI), naming both and the fix; a matching one plans.
#[test]
fn the_agent_version_is_what_the_server_reports_and_a_pin_is_checked_against_it() {
    for image in ["teamcity-agent-linux", "teamcity-agent-windows"] {
        assert_eq!(recorded_version(&plan(image)), "2025.07", "{image}");
        let upgraded = plan_in(
            &repo_root(),
            image,
            Some(read_inputs("2025.11 (build 208000)")),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(recorded_version(&upgraded), "2025.11", "{image}");
        // The input is part of the fingerprint: a server upgrade changes the image.
        assert_ne!(plan(image).fingerprint, upgraded.fingerprint, "{image}");
        // Unread (plan --offline, render): planned, nothing recorded yet.
        let offline = plan_in(&repo_root(), image, None).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(recorded_version(&offline), "", "{image}");
    }

    // A pin: the image says which version it is for.
    let project = crate::support::fixtures::shipped_copy();
    let dir = &project.dir;
    let rel = "images/teamcity-agent-linux.toml";
    let toml = std::fs::read_to_string(dir.path().join(rel)).expect("image");
    let pinned = toml.replace(
        "server_url = \"https://teamcity.example.com\"\n",
        "server_url = \"https://teamcity.example.com\"\nserver_version = \"2025.07\"\n",
    );
    assert_ne!(pinned, toml);
    project.write(rel, &pinned);
    let ok = plan_in(
        dir.path(),
        "teamcity-agent-linux",
        Some(read_inputs(REPORTED)),
    )
    .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(recorded_version(&ok), "2025.07");
    let err = plan_in(
        dir.path(),
        "teamcity-agent-linux",
        Some(read_inputs("2025.11 (build 208000)")),
    )
    .expect_err("a pin the server contradicts is refused")
    .to_string();
    assert!(
        err.contains("server_version is \"2025.07\" but the TeamCity server reports \"2025.11 (build 208000)\"")
            && err.contains("set server_version = \"2025.11\"")
            && err.contains("buildAgent.properties"),
        "{err}"
    );
}

#[test]
fn agent_images_leave_identity_to_the_cloud_profile_and_pin_the_server_version() {
    for (image, service) in [
        ("teamcity-agent-windows", "BuildAgent"),
        ("teamcity-agent-linux", "buildagent"),
    ] {
        let p = plan(image);
        // buildAgent.properties: the server, the pinned version, no agent name or token.
        let props = p
            .steps
            .iter()
            .find_map(|s| match &s.action {
                PlannedAction::Upload {
                    destination, files, ..
                } if destination.ends_with("buildAgent.properties") => {
                    Some(String::from_utf8(files[0].bytes.clone()).expect("utf-8"))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{image}: no buildAgent.properties step"));
        assert!(props.contains("serverUrl=https://"), "{image}: {props}");
        assert!(
            props.contains("\nbakery.teamcity.version=2025.07\n"),
            "{image}: {props}"
        );
        for line in props.lines().map(str::trim_start) {
            assert!(
                !line.starts_with("name=") && !line.starts_with("authorizationToken="),
                "{image}: {line}"
            );
        }
        // The agent zip is fetched and checked against the sha256 that pins the server build.
        assert!(
            p.steps.iter().any(|s| matches!(&s.action,
                PlannedAction::Download { url, .. } if url.ends_with("/update/buildAgentFull.zip"))),
            "{image}"
        );
        // The checks: a service that starts on boot and is stopped at capture, nothing
        // listening on the agent port, no identity in the properties.
        let kinds: Vec<&CheckKind> = p.checks.iter().map(|c| &c.check.kind).collect();
        assert!(
            kinds.iter().any(|k| matches!(k, CheckKind::Service { service: s, state: Some(ServiceState::Stopped), start_mode: Some(StartMode::Auto) } if s == service)),
            "{image}: {kinds:?}"
        );
        assert!(
            kinds.iter().any(|k| matches!(
                k,
                CheckKind::Port {
                    port: 9090,
                    listening: false
                }
            )),
            "{image}: {kinds:?}"
        );
        assert!(
            p.checks
                .iter()
                .any(|c| c.check.name == "no agent name or authorization token is baked in"),
            "{image}"
        );
    }
    // Windows: generalised last; Linux: cloud-init clean last.
    let w = plan("teamcity-agent-windows");
    assert!(
        w.finalize
            .last()
            .is_some_and(|s| s.recipe.as_str() == "ec2launch-sysprep"),
        "{:?}",
        w.finalize.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let l = plan("teamcity-agent-linux");
    assert!(
        l.finalize.iter().any(|s| matches!(&s.action,
            PlannedAction::Shell { script } if script.contains("cloud-init clean"))),
        "linux images end with cloud-init clean"
    );
}

/// The test phase of the agent images launches a fresh instance the way a TeamCity EC2 cloud
/// profile does: its user data names the agent and points it at the server (from the recipe's own
/// parameters), and the test checks look for exactly that name, the running service and the
/// pinned build.
#[test]
fn agent_images_are_tested_as_a_cloud_profile_launches_them() {
    for (image, service) in [
        ("teamcity-agent-windows", "BuildAgent"),
        ("teamcity-agent-linux", "buildagent"),
    ] {
        let p = plan(image);
        let t = p
            .test
            .as_ref()
            .unwrap_or_else(|| panic!("{image}: no test"));
        let user_data = t
            .user_data
            .as_deref()
            .unwrap_or_else(|| panic!("{image}: no test user data"));
        let name = format!("name=bakery-test-{image}");
        assert!(user_data.contains(&name), "{image}: {user_data}");
        assert!(
            user_data.contains("serverUrl=https://teamcity.example.com"),
            "{image}: {user_data}"
        );
        assert!(!user_data.contains("{{"), "rendered: {user_data}");
        let kinds: Vec<&CheckKind> = t.checks.iter().map(|c| &c.check.kind).collect();
        assert!(
            kinds
                .iter()
                .any(|k| matches!(k, CheckKind::File { contains: Some(c), .. } if *c == name)),
            "{image}: {kinds:?}"
        );
        assert!(
            kinds.iter().any(|k| matches!(k, CheckKind::Service { service: s, state: Some(ServiceState::Running), .. } if s == service)),
            "{image}: {kinds:?}"
        );
        assert!(
            kinds.iter().any(|k| matches!(k, CheckKind::Command { command, .. } if command.contains("bakery.teamcity.version=2025.07"))),
            "{image}: {kinds:?}"
        );
    }
}
