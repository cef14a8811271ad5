//! The TeamCity agent images, from the shipped catalog: what bakery would put on the instance and
//! what the image's checks demand of it.

use bakery::catalog::model::{ImageName, Target};
use bakery::catalog::Catalog;
use bakery::checks::{CheckKind, ServiceState, StartMode};
use bakery::plan::{Plan, PlannedAction, Planner};

use crate::support::fixtures::repo_root;

fn plan(image: &str) -> Plan {
    let catalog = Catalog::load(&repo_root()).unwrap_or_else(|d| panic!("{d}"));
    Planner::new(&catalog, &Target::offline())
        .plan(&ImageName::new_unchecked(image))
        .unwrap_or_else(|d| panic!("{d}"))
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
            props.contains("bakery.teamcity.version=2025.07"),
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
