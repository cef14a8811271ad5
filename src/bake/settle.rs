//! Settle: a fresh instance is ready for its test checks once it has finished booting as a
//! consumer's instance would: cloud-init done on Linux; on Windows EC2Launch v2 done, which for
//! a sysprepped image is after its first-boot restart. Nothing here sleeps a fixed time: the
//! instance is asked (its boot id and its launch agent's state) until it says it is done, and a
//! restart on the way shows as a new boot id (the connection is made again, as after a restart
//! step).

use std::time::{Duration, Instant};

use super::context::{Bake, Failure};
use super::launch::Launched;
use crate::remote::ssh::Ssh;
use crate::remote::Conn;

/// Between two questions to an instance that is still booting.
const ASK_EVERY: Duration = Duration::from_secs(2);

/// What one readiness probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) boot: String,
    pub(super) state: Readiness,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Readiness {
    Ready,
    /// Still booting: why.
    Waiting(String),
    /// The launch agent finished and reported a failure.
    Failed(String),
}

/// Reads the probe's output: a `boot=<id>` line and a `ready=yes|no <why>|failed <why>` line.
pub(super) fn parse(stdout: &str) -> Result<Seen, String> {
    let mut boot = None;
    let mut state = None;
    for l in stdout.lines().map(str::trim) {
        if let Some(b) = l.strip_prefix("boot=") {
            boot = Some(b.trim().to_string());
        } else if let Some(r) = l.strip_prefix("ready=") {
            let (word, why) = r.split_once(' ').unwrap_or((r, ""));
            state = Some(match word {
                "yes" => Readiness::Ready,
                "no" => Readiness::Waiting(why.trim().to_string()),
                "failed" => Readiness::Failed(why.trim().to_string()),
                other => return Err(format!("unexpected readiness {other:?}")),
            });
        }
    }
    match (boot, state) {
        (Some(boot), Some(state)) if !boot.is_empty() => Ok(Seen { boot, state }),
        _ => Err(format!(
            "the readiness probe printed no boot id and state: {:?}",
            stdout.chars().take(200).collect::<String>()
        )),
    }
}

/// The boots one settle has seen, in order, and what to say about each new observation.
#[derive(Debug, Default)]
pub(super) struct Boots(Vec<String>);

impl Boots {
    /// Records `seen`; the line to report when something changed (a new boot, or the first).
    pub(super) fn see(&mut self, seen: &Seen) -> Option<String> {
        if self.0.last() == Some(&seen.boot) {
            return None;
        }
        self.0.push(seen.boot.clone());
        Some(if self.0.len() == 1 {
            format!("booted ({})", seen.boot)
        } else {
            format!(
                "restarted during its first boot (boot {}: {})",
                self.0.len(),
                seen.boot
            )
        })
    }

    pub(super) fn count(&self) -> usize {
        self.0.len()
    }
}

impl Bake<'_> {
    /// Asks the fresh instance `l` (connected as `conn`, probes in `dir`) until it has finished
    /// booting; returns the connection (a new one after a restart) and the boot id it settled
    /// in. A restart on the way is followed (the question is asked again once the instance is
    /// back); a launch agent that reports a failure fails the phase.
    pub(super) async fn settle(
        &mut self,
        l: &Launched,
        conn: Conn,
        dir: &str,
        timeout: Duration,
    ) -> Result<(Conn, String), Failure> {
        let started = Instant::now();
        let mut boots = Boots::default();
        let mut said = String::new();
        let mut conn = Some(conn);
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                if let Some(c) = conn.take() {
                    c.close().await;
                }
                return Err(Failure::new(format!(
                    "{} did not finish booting within {}s ({}; {} boot(s) seen)",
                    l.instance,
                    timeout.as_secs(),
                    if said.is_empty() { "no answer" } else { &said },
                    boots.count()
                )));
            }
            let c = match conn.take() {
                Some(c) => c,
                None => self.reach_again(l, left).await?,
            };
            let answer = self.host(&c, dir).readiness().await;
            let seen = match answer.map_err(|e| e.to_string()).and_then(|o| parse(&o)) {
                Ok(seen) => seen,
                Err(e) => {
                    // Most often the instance restarting under the question: ask again once
                    // it is back. Said once, and named if time runs out.
                    let why = format!("the readiness probe failed: {e}");
                    if why != said {
                        self.waiting(format!("{}: {why}", l.instance));
                        said = why;
                    }
                    c.close().await;
                    self.pause().await?;
                    continue;
                }
            };
            if let Some(line) = boots.see(&seen) {
                self.waiting(format!("{} {line}", l.instance));
            }
            match seen.state {
                Readiness::Ready => return Ok((c, seen.boot)),
                Readiness::Failed(why) => {
                    c.close().await;
                    return Err(Failure::new(format!("{}: {why}", l.instance)));
                }
                Readiness::Waiting(why) => {
                    if why != said {
                        self.waiting(format!("{}: {why}", l.instance));
                        said = why;
                    }
                    conn = Some(c);
                    self.pause().await?;
                }
            }
        }
    }

    /// Connects to `l` again after it dropped (a restart): SSH once sshd answers, SSM once
    /// the instance is Online again.
    pub(super) async fn reach_again(
        &self,
        l: &Launched,
        timeout: Duration,
    ) -> Result<Conn, Failure> {
        if self.ssm() {
            let ssm = self.ssm_conn(&l.instance);
            ssm.wait_online(timeout, &self.cancel).await?;
            return Ok(Conn::Ssm(ssm));
        }
        let t = l.ssh.as_ref().ok_or_else(|| Failure::new("no address"))?;
        Ok(Conn::Ssh(
            Ssh::connect(t, &self.pin, timeout, &self.cancel).await?,
        ))
    }

    async fn pause(&self) -> Result<(), Failure> {
        tokio::select! {
            () = tokio::time::sleep(ASK_EVERY) => Ok(()),
            () = self.cancel.cancelled() => Err(Failure::cancelled()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_probe() {
        assert_eq!(
            parse("boot=abc\nready=yes\n"),
            Ok(Seen {
                boot: "abc".into(),
                state: Readiness::Ready
            })
        );
        assert_eq!(
            parse("noise\r\nboot=2026-12-01T05:00:00.0000000Z\r\nready=no EC2Launch v2 is running its first-boot tasks\r\n")
                .unwrap()
                .state,
            Readiness::Waiting("EC2Launch v2 is running its first-boot tasks".into())
        );
        assert_eq!(
            parse("boot=b\nready=failed it broke").unwrap().state,
            Readiness::Failed("it broke".into())
        );
        // Nothing to go on is an error (asked again), never "ready".
        assert!(parse("").is_err());
        assert!(parse("ready=yes").is_err());
        assert!(parse("boot=\nready=yes").is_err());
        assert!(parse("boot=a\nready=maybe").is_err());
    }

    #[test]
    fn a_restart_is_a_new_boot_id() {
        let seen = |b: &str| Seen {
            boot: b.into(),
            state: Readiness::Waiting("x".into()),
        };
        let mut boots = Boots::default();
        assert_eq!(boots.see(&seen("a")), Some("booted (a)".into()));
        assert_eq!(boots.see(&seen("a")), None);
        assert_eq!(
            boots.see(&seen("b")),
            Some("restarted during its first boot (boot 2: b)".into())
        );
        assert_eq!(boots.count(), 2);
    }
}
