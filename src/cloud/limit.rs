//! Client-side rate limiting for EC2, sized from AWS's documented token buckets, so that many
//! bakes in one process stay under the account's per-region limits instead of finding them by
//! `RequestLimitExceeded` (the SDK's standard retry mode still backs off, jittered, if another
//! client of the same account spends the tokens first).
//!
//! Source: "Request throttling for the Amazon EC2 API", Amazon EC2 Developer Guide,
//! <https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html>, sections "Request
//! token limits" and "Resource token limits". EC2 keeps one bucket per API action per account
//! and region; each request takes one token; the bucket refills at a fixed rate up to its size.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket's size and refill rate (tokens per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub capacity: f64,
    pub refill_per_sec: f64,
}

/// Non-mutating actions (`Describe*`, `Get*`): 100 tokens, refill 20 per second.
pub const NON_MUTATING: Budget = Budget {
    capacity: 100.0,
    refill_per_sec: 20.0,
};
/// Mutating actions (`Create*`, `Delete*`, `Modify*`, ...): 50 tokens, refill 5 per second.
pub const MUTATING: Budget = Budget {
    capacity: 50.0,
    refill_per_sec: 5.0,
};
/// Uncategorized actions: 50 tokens, refill 5 per second.
pub const UNCATEGORIZED: Budget = Budget {
    capacity: 50.0,
    refill_per_sec: 5.0,
};
/// Resource token limit for RunInstances (one token per instance launched): 1000 tokens,
/// refill 2 per second. bakery launches one instance per call.
pub const RUN_INSTANCES_RESOURCE: Budget = Budget {
    capacity: 1000.0,
    refill_per_sec: 2.0,
};
/// Resource token limit for TerminateInstances and StopInstances: 1000 tokens, refill 20 per
/// second.
pub const TERMINATE_STOP_RESOURCE: Budget = Budget {
    capacity: 1000.0,
    refill_per_sec: 20.0,
};

/// The request bucket an EC2 action draws from.
pub fn request_budget(action: &str) -> Budget {
    const MUTATING_PREFIXES: &[&str] = &[
        "Create",
        "Delete",
        "Modify",
        "Run",
        "Terminate",
        "Stop",
        "Start",
        "Reboot",
        "Register",
        "Deregister",
        "Copy",
        "Import",
        "Authorize",
        "Revoke",
        "Enable",
        "Disable",
        "Reset",
        "Attach",
        "Detach",
        "Associate",
        "Disassociate",
        "Replace",
    ];
    if action.starts_with("Describe") || action.starts_with("Get") {
        NON_MUTATING
    } else if MUTATING_PREFIXES.iter().any(|p| action.starts_with(p)) {
        MUTATING
    } else {
        UNCATEGORIZED
    }
}

/// The resource bucket an action also draws from, if any.
pub fn resource_budget(action: &str) -> Option<Budget> {
    match action {
        "RunInstances" | "StartInstances" => Some(RUN_INSTANCES_RESOURCE),
        "TerminateInstances" | "StopInstances" => Some(TERMINATE_STOP_RESOURCE),
        _ => None,
    }
}

/// One token bucket. `take` reserves a token and says how long to wait for it, so concurrent
/// callers queue in order instead of all retrying at the same instant.
#[derive(Debug, Clone)]
pub struct Bucket {
    budget: Budget,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(budget: Budget, now: Instant) -> Self {
        Self {
            budget,
            tokens: budget.capacity,
            last: now,
        }
    }

    /// Takes one token at `now`; the wait before the request may go (zero when one was there).
    pub fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens =
            (self.tokens + elapsed * self.budget.refill_per_sec).min(self.budget.capacity);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.budget.refill_per_sec)
        }
    }
}

/// The buckets of one region (one per action, plus resource buckets), and what they cost.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    requests: AtomicU64,
    delayed: AtomicU64,
    waited_ms: AtomicU64,
}

/// What a limiter saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LimiterStats {
    pub requests: u64,
    /// Requests that had to wait for a token.
    pub delayed: u64,
    pub waited_ms: u64,
}

impl Limiter {
    /// The wait before `action` may be sent now (reserving its tokens).
    pub fn reserve(&self, action: &str, now: Instant) -> Duration {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let Ok(mut b) = self.buckets.lock() else {
            return Duration::ZERO;
        };
        let mut wait = b
            .entry(action.to_string())
            .or_insert_with(|| Bucket::new(request_budget(action), now))
            .take(now);
        if let Some(r) = resource_budget(action) {
            let w = b
                .entry(format!("resource:{action}"))
                .or_insert_with(|| Bucket::new(r, now))
                .take(now);
            wait = wait.max(w);
        }
        if !wait.is_zero() {
            self.delayed.fetch_add(1, Ordering::Relaxed);
            self.waited_ms
                .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
        }
        wait
    }

    /// Waits until `action` may be sent.
    pub async fn acquire(&self, action: &str) {
        let wait = self.reserve(action, Instant::now());
        if !wait.is_zero() {
            tracing::debug!(
                action,
                wait_ms = wait.as_millis() as u64,
                "EC2 rate limit: waiting for a token"
            );
            tokio::time::sleep(wait).await;
        }
    }

    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            requests: self.requests.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            waited_ms: self.waited_ms.load(Ordering::Relaxed),
        }
    }
}

/// The `Action` of an EC2 Query-protocol request body (`Action=DescribeInstances&Version=...`).
pub fn query_action(body: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(body).ok()?;
    s.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .filter(|a| !a.is_empty() && a.bytes().all(|c| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_map_to_documented_buckets() {
        assert_eq!(request_budget("DescribeInstances"), NON_MUTATING);
        assert_eq!(request_budget("CreateImage"), MUTATING);
        assert_eq!(request_budget("RunInstances"), MUTATING);
        assert_eq!(request_budget("AcceptVpcPeeringConnection"), UNCATEGORIZED);
        assert_eq!(
            resource_budget("RunInstances"),
            Some(RUN_INSTANCES_RESOURCE)
        );
        assert_eq!(resource_budget("DescribeImages"), None);
    }

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_paces_at_the_refill_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(MUTATING, t0);
        for _ in 0..50 {
            assert_eq!(b.take(t0), Duration::ZERO);
        }
        // The 51st waits one refill interval (1/5 s), the 52nd two: queued in order.
        assert_eq!(b.take(t0), Duration::from_millis(200));
        assert_eq!(b.take(t0), Duration::from_millis(400));
        // A second later five tokens came back: the two reservations are paid, three are left.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..3 {
            assert_eq!(b.take(t1), Duration::ZERO);
        }
        assert_eq!(b.take(t1), Duration::from_millis(200));
    }

    #[test]
    fn refill_never_exceeds_capacity() {
        let t0 = Instant::now();
        let mut b = Bucket::new(NON_MUTATING, t0);
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..100 {
            assert_eq!(b.take(later), Duration::ZERO);
        }
        assert!(b.take(later) > Duration::ZERO);
    }

    #[test]
    fn run_instances_waits_for_both_its_buckets() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..50 {
            assert_eq!(l.reserve("RunInstances", t0), Duration::ZERO);
        }
        assert_eq!(l.reserve("RunInstances", t0), Duration::from_millis(200));
        // Other actions have their own buckets.
        assert_eq!(l.reserve("DescribeInstances", t0), Duration::ZERO);
        let s = l.stats();
        assert_eq!((s.requests, s.delayed, s.waited_ms), (52, 1, 200));
    }

    #[test]
    fn query_action_is_read_from_the_body() {
        assert_eq!(
            query_action(b"Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=x"),
            Some("DescribeInstances")
        );
        assert_eq!(
            query_action(b"Version=1&Action=RunInstances"),
            Some("RunInstances")
        );
        assert_eq!(query_action(b"{\"json\":1}"), None);
        assert_eq!(query_action(b"Action=&x"), None);
        assert_eq!(query_action(&[0xff, 0xfe]), None);
    }
}
