//! The one way bakery waits for AWS: bounded, jittered backoff (backon), `tokio::time::sleep`,
//! cancellable, fails fast on terminal states, and on timeout names the resource, its last state
//! (with AWS's reason) and how long it waited.

use std::future::Future;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};

use super::cancel::Cancel;
use super::CloudError;

/// What one look at a resource found.
#[derive(Debug)]
pub enum Poll<T> {
    Ready(T),
    /// Not yet: the state now, and AWS's reason if it gave one.
    Pending {
        state: String,
        reason: Option<String>,
    },
    /// A state the resource will not come back from (terminated while we wait for running).
    Failed {
        state: String,
        reason: Option<String>,
    },
}

/// How to wait for one resource.
#[derive(Debug, Clone)]
pub struct Wait {
    /// `instance i-0123 in eu-west-1`
    pub resource: String,
    /// `running`
    pub want: String,
    pub timeout: Duration,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

/// Default spacing of describe calls: EC2's Describe* calls share a token bucket (EC2 API
/// throttling docs), and instance/image transitions take tens of seconds, so start at 2 s and back
/// off to 15 s.
pub const FIRST_DELAY: Duration = Duration::from_secs(2);
pub const MAX_DELAY: Duration = Duration::from_secs(15);
/// Spacing for `Wait::brief`: EC2's eventual consistency after a create settles within seconds
/// ("Eventual consistency in the Amazon EC2 API"), so look again sooner.
pub const BRIEF_FIRST_DELAY: Duration = Duration::from_millis(250);
pub const BRIEF_MAX_DELAY: Duration = Duration::from_secs(5);

impl Wait {
    pub fn new(resource: impl Into<String>, want: impl Into<String>, timeout: Duration) -> Self {
        Self {
            resource: resource.into(),
            want: want.into(),
            timeout,
            first_delay: FIRST_DELAY,
            max_delay: MAX_DELAY,
        }
    }

    /// A wait for something that settles in seconds (eventual consistency right after a create
    /// or a delete), so it looks again sooner: 250 ms, backing off to 5 s.
    pub fn brief(resource: impl Into<String>, want: impl Into<String>, timeout: Duration) -> Self {
        Self {
            first_delay: BRIEF_FIRST_DELAY,
            max_delay: BRIEF_MAX_DELAY,
            ..Self::new(resource, want, timeout)
        }
    }

    /// A wait whose looks go through a shared poller (`cloud::poller`), which paces them: no
    /// delay of its own between looks, so a change is seen at the poller's next look.
    pub fn polled(resource: impl Into<String>, want: impl Into<String>, timeout: Duration) -> Self {
        Self {
            first_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            ..Self::new(resource, want, timeout)
        }
    }

    /// Polls until ready, terminal, timed out or cancelled.
    pub async fn until<T, F, Fut>(&self, cancel: &Cancel, mut poll: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Poll<T>, CloudError>>,
    {
        let started = Instant::now();
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.max_delay)
            .with_factor(1.5)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            if cancel.is_cancelled() {
                return Err(CloudError::Cancelled);
            }
            let seen = tokio::select! {
                r = poll() => r?,
                () = cancel.cancelled() => return Err(CloudError::Cancelled),
            };
            match seen {
                Poll::Ready(v) => return Ok(v),
                Poll::Failed { state, reason } => {
                    return Err(CloudError::Terminal {
                        resource: self.resource.clone(),
                        want: self.want.clone(),
                        state,
                        reason,
                    })
                }
                Poll::Pending { state, reason } => {
                    tracing::debug!(resource = %self.resource, state = %state, "waiting for {}", self.want);
                    let waited = started.elapsed();
                    if waited >= self.timeout {
                        return Err(CloudError::Timeout {
                            resource: self.resource.clone(),
                            want: self.want.clone(),
                            last: state,
                            reason,
                            waited,
                        });
                    }
                }
            }
            if self.max_delay.is_zero() {
                continue;
            }
            let waited = started.elapsed();
            let delay = delays
                .next()
                .unwrap_or(self.max_delay)
                .min(self.timeout.saturating_sub(waited));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => return Err(CloudError::Cancelled),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(timeout_ms: u64) -> Wait {
        Wait {
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            ..Wait::new("instance i-1", "running", Duration::from_millis(timeout_ms))
        }
    }

    #[tokio::test]
    async fn ready_after_pending() {
        let mut n = 0;
        let v = quick(1000)
            .until(&Cancel::new(), || {
                n += 1;
                let r = if n < 3 {
                    Poll::Pending {
                        state: "pending".into(),
                        reason: None,
                    }
                } else {
                    Poll::Ready(n)
                };
                async move { Ok(r) }
            })
            .await
            .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn timeout_names_resource_state_reason_and_time() {
        let e = quick(30)
            .until(&Cancel::new(), || async {
                Ok::<Poll<()>, CloudError>(Poll::Pending {
                    state: "pending".into(),
                    reason: Some("Server.InternalError".into()),
                })
            })
            .await
            .unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("instance i-1")
                && s.contains("running")
                && s.contains("last state pending (Server.InternalError)")
                && s.contains("after 0s"),
            "{s}"
        );
    }

    #[tokio::test]
    async fn terminal_states_fail_fast() {
        let e = quick(60_000)
            .until(&Cancel::new(), || async {
                Ok::<Poll<()>, CloudError>(Poll::Failed {
                    state: "terminated".into(),
                    reason: Some("Client.UserInitiatedShutdown".into()),
                })
            })
            .await
            .unwrap_err();
        assert!(matches!(e, CloudError::Terminal { .. }), "{e}");
    }

    #[tokio::test]
    async fn cancel_stops_the_wait() {
        let c = Cancel::new();
        let c2 = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            c2.cancel();
        });
        let w = Wait {
            first_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(5),
            ..Wait::new("x", "y", Duration::from_secs(60))
        };
        let e = w
            .until(&c, || async {
                Ok::<Poll<()>, CloudError>(Poll::Pending {
                    state: "pending".into(),
                    reason: None,
                })
            })
            .await
            .unwrap_err();
        assert!(matches!(e, CloudError::Cancelled));
    }
}
