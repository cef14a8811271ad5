//! TeamCity service messages (when `TEAMCITY_VERSION` is set): a block per phase, a test per
//! check, a statistic per phase duration, and parameters with the AMI ids.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::events::BakeEvent;

/// Escapes a value for a service message (TeamCity's documented escapes).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' => out.push_str("||"),
            '\'' => out.push_str("|'"),
            '\n' => out.push_str("|n"),
            '\r' => out.push_str("|r"),
            '[' => out.push_str("|["),
            ']' => out.push_str("|]"),
            '\u{0085}' => out.push_str("|x"),
            '\u{2028}' => out.push_str("|l"),
            '\u{2029}' => out.push_str("|p"),
            c => out.push(c),
        }
    }
    out
}

/// Set when `--json` owns standard output: service messages then go to standard error, which
/// TeamCity reads for them too, so the JSON stays parseable.
static JSON_ON_STDOUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keeps standard output for `--json` (service messages go to standard error).
pub fn json_on_stdout() {
    JSON_ON_STDOUT.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Prints one service message: standard output, or standard error when `--json` owns it.
pub fn print(m: &str) {
    if JSON_ON_STDOUT.load(std::sync::atomic::Ordering::Relaxed) {
        crate::errln!("{m}");
    } else {
        crate::outln!("{m}");
    }
}

/// A build problem (fails the TeamCity build), one per identity.
pub fn build_problem(identity: &str, description: &str) -> String {
    msg(
        "buildProblem",
        &[
            ("description", description),
            ("identity", &format!("bakery.{identity}")),
        ],
    )
}

fn msg(name: &str, attrs: &[(&str, &str)]) -> String {
    let a: Vec<String> = attrs
        .iter()
        .map(|(k, v)| format!("{k}='{}'", escape(v)))
        .collect();
    format!("##teamcity[{name} {}]", a.join(" "))
}

/// Turns events into service messages; keeps the open phase of each bake to close it.
#[derive(Default)]
pub struct TeamCity {
    open: BTreeMap<String, (String, String, Instant)>,
}

impl TeamCity {
    pub fn messages(&mut self, e: &BakeEvent) -> Vec<String> {
        let mut out = Vec::new();
        match e {
            BakeEvent::Phase {
                bake_id,
                image,
                phase,
            } => {
                if let Some((img, prev, started)) = self.open.remove(bake_id) {
                    out.push(msg("blockClosed", &[("name", &format!("{img}: {prev}"))]));
                    let ms = started.elapsed().as_millis().to_string();
                    out.push(msg(
                        "buildStatisticValue",
                        &[("key", &format!("bakery.{img}.{prev}.ms")), ("value", &ms)],
                    ));
                }
                out.push(msg(
                    "blockOpened",
                    &[("name", &format!("{image}: {phase}"))],
                ));
                self.open.insert(
                    bake_id.clone(),
                    (image.clone(), phase.to_string(), Instant::now()),
                );
            }
            BakeEvent::Check { bake_id, result } => {
                let image = self
                    .open
                    .get(bake_id)
                    .map(|o| o.0.clone())
                    .unwrap_or_default();
                // The fresh instance's checks as their own group.
                let name = if crate::checks::report::is_test(&result.origin) {
                    format!("{image}: test: {}", result.name)
                } else {
                    format!("{image}: {}", result.name)
                };
                out.push(msg("testStarted", &[("name", &name)]));
                if !result.passed {
                    out.push(msg(
                        "testFailed",
                        &[("name", &name), ("message", &result.detail)],
                    ));
                }
                let ms = result.duration.as_millis().to_string();
                out.push(msg("testFinished", &[("name", &name), ("duration", &ms)]));
            }
            BakeEvent::Warning { message, .. } => {
                out.push(msg("message", &[("text", message), ("status", "WARNING")]))
            }
            BakeEvent::Waiting { what, .. } => {
                out.push(format!("##teamcity[progressMessage '{}']", escape(what)))
            }
            BakeEvent::Finished { bake_id, .. } => {
                if let Some((img, phase, started)) = self.open.remove(bake_id) {
                    out.push(msg("blockClosed", &[("name", &format!("{img}: {phase}"))]));
                    let ms = started.elapsed().as_millis().to_string();
                    out.push(msg(
                        "buildStatisticValue",
                        &[("key", &format!("bakery.{img}.{phase}.ms")), ("value", &ms)],
                    ));
                }
            }
            _ => {}
        }
        out
    }

    /// Closes every open block (at the end of a run).
    pub fn finish(&mut self) -> Vec<String> {
        std::mem::take(&mut self.open)
            .into_values()
            .map(|(img, phase, _)| msg("blockClosed", &[("name", &format!("{img}: {phase}"))]))
            .collect()
    }

    /// `setParameter` for each AMI of a baked image.
    pub fn amis(image: &str, version: &str, amis: &BTreeMap<String, String>) -> Vec<String> {
        let mut out = vec![msg(
            "setParameter",
            &[
                ("name", &format!("bakery.{image}.version")),
                ("value", version),
            ],
        )];
        for (region, ami) in amis {
            out.push(msg(
                "setParameter",
                &[
                    ("name", &format!("bakery.{image}.ami.{region}")),
                    ("value", ami),
                ],
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::report::CheckResult;

    #[test]
    fn escaping_follows_teamcity() {
        assert_eq!(
            escape("a|b'c\nd\re[f]g\u{0085}\u{2028}\u{2029}"),
            "a||b|'c|nd|re|[f|]g|x|l|p"
        );
    }

    #[test]
    fn golden_messages() {
        let mut tc = TeamCity::default();
        let phase = |p: &'static str| BakeEvent::Phase {
            bake_id: "b1".into(),
            image: "agent".into(),
            phase: p,
        };
        let mut out = tc.messages(&phase("verify"));
        out.extend(tc.messages(&BakeEvent::Check {
            bake_id: "b1".into(),
            result: CheckResult {
                name: "service [BuildAgent]".into(),
                origin: "image".into(),
                kind: "service".into(),
                passed: false,
                detail: "is active, expected stopped\nsee 'log'".into(),
                duration: std::time::Duration::from_millis(42),
            },
        }));
        out.extend(tc.finish());
        out.extend(TeamCity::amis(
            "agent",
            "1.4.3",
            &[("eu-west-1".to_string(), "ami-1".to_string())]
                .into_iter()
                .collect(),
        ));
        assert_eq!(
            out,
            [
                "##teamcity[blockOpened name='agent: verify']",
                "##teamcity[testStarted name='agent: service |[BuildAgent|]']",
                "##teamcity[testFailed name='agent: service |[BuildAgent|]' message='is active, expected stopped|nsee |'log|'']",
                "##teamcity[testFinished name='agent: service |[BuildAgent|]' duration='42']",
                "##teamcity[blockClosed name='agent: verify']",
                "##teamcity[setParameter name='bakery.agent.version' value='1.4.3']",
                "##teamcity[setParameter name='bakery.agent.ami.eu-west-1' value='ami-1']",
            ]
        );
        // A phase change closes the previous block and reports its duration.
        let mut tc = TeamCity::default();
        tc.messages(&phase("launch"));
        let next = tc.messages(&phase("connect"));
        assert_eq!(next[0], "##teamcity[blockClosed name='agent: launch']");
        assert!(
            next[1]
                .starts_with("##teamcity[buildStatisticValue key='bakery.agent.launch.ms' value='"),
            "{next:?}"
        );
        assert_eq!(next[2], "##teamcity[blockOpened name='agent: connect']");
    }
}
