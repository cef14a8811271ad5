//! Shared pollers: every bake in a process that waits on an instance or an image in a region
//! registers what it waits for with that region's poller, which answers all of them with one
//! batched Describe call. Ten bakes waiting at once cost one call, not ten.
//!
//! A poller is a small task started on first use. It adds no wait of its own to a lone bake:
//! - A key it has not looked at recently (a wait that just began) is described at once, when
//!   the call budget allows (after a millisecond, when it woke an idle poller: waits that begin
//!   together, a cleanup's instances, share that call).
//! - A key it has just answered is described again one *gap* after that answer (`Pace`): 150 ms
//!   while the wait is young, 1 s once it has lasted `slow_after`. A state change is seen within
//!   a gap (plus a round trip), and one waiter costs at most six calls a second.
//! - Every call carries every key waiting at that moment (those not due yet get a fresher answer
//!   early), so waiters that arrive while a call is in flight share the next one, and many bakes
//!   stay at the same few calls per second as one.
//! - Calls draw from a token bucket (`Pace::budget`), a small share of AWS's documented bucket for
//!   the action, so a burst of new waits cannot exceed it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::limit::{Bucket, Budget};
use super::CloudError;

/// How often a poller may look at one key, and how many calls it may make.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// The least time between two looks at one key while its wait is young.
    pub gap: Duration,
    /// The gap once a key has been waited on for `slow_after` (long waits: a Windows AMI takes
    /// many minutes to become available).
    pub slow_gap: Duration,
    pub slow_after: Duration,
    /// The poller's own token bucket, one token per call.
    pub budget: Budget,
}

/// EC2 Describe calls (DescribeInstances, DescribeImages): AWS refills each action's bucket at 20
/// tokens a second (`limit.rs`); a poller takes at most 6 a second (a 150 ms gap plus the round
/// trip), and 1 a second once every wait it serves has lasted 10 s.
pub const DESCRIBE: Pace = Pace {
    gap: Duration::from_millis(150),
    slow_gap: Duration::from_secs(1),
    slow_after: Duration::from_secs(10),
    budget: Budget {
        capacity: 8.0,
        refill_per_sec: 6.0,
    },
};

/// How long a call that an idle poller was woken for waits for other waits that begin at the
/// same moment (nothing next to an AWS round trip).
const TOGETHER: Duration = Duration::from_millis(1);

/// A key not asked for in this long starts a new wait: looked at at once, at the fast gap.
const FORGET_AFTER: Duration = Duration::from_secs(5);

type Reply<V> = oneshot::Sender<Result<Option<V>, CloudError>>;
type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// Describes a batch of keys; keys it does not return are not (yet) visible.
pub type DescribeFn<K, V> =
    Arc<dyn Fn(Vec<K>) -> BoxFut<Result<Vec<(K, V)>, CloudError>> + Send + Sync>;

/// What a poller did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PollStats {
    /// Rounds that answered at least one waiter.
    pub ticks: u64,
    /// Describe calls sent (one per round unless a round held more than a call's worth of ids).
    pub calls: u64,
    /// Waiters answered.
    pub answered: u64,
    /// The most waiters one round answered.
    pub max_batch: u64,
}

#[derive(Default)]
struct Counters {
    ticks: AtomicU64,
    calls: AtomicU64,
    answered: AtomicU64,
    max_batch: AtomicU64,
}

/// One poller: one kind of resource in one region.
pub struct Poller<K, V> {
    what: &'static str,
    pace: Pace,
    chunk: usize,
    describe: DescribeFn<K, V>,
    tx: OnceLock<mpsc::UnboundedSender<(K, Reply<V>)>>,
    counters: Arc<Counters>,
}

impl<K, V> std::fmt::Debug for Poller<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller").field("what", &self.what).finish()
    }
}

impl<K, V> Poller<K, V>
where
    K: Clone + Eq + Hash + Ord + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    /// `chunk`: the most ids one Describe call carries.
    pub fn new(what: &'static str, pace: Pace, chunk: usize, describe: DescribeFn<K, V>) -> Self {
        Self {
            what,
            pace,
            chunk: chunk.max(1),
            describe,
            tx: OnceLock::new(),
            counters: Arc::default(),
        }
    }

    /// The state of `key` at the poller's next look at it (`None`: not visible). A key it just
    /// answered is looked at again one gap later, so a caller may ask again straight away.
    pub async fn observe(&self, key: K) -> Result<Option<V>, CloudError> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(
                rx,
                self.pace,
                self.chunk,
                self.describe.clone(),
                self.counters.clone(),
            ));
            tx
        });
        let stopped = || CloudError::BadAnswer {
            op: "poll",
            region: String::new(),
            message: format!("the {} poller stopped", self.what),
        };
        let (reply, answer) = oneshot::channel();
        tx.send((key, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub fn stats(&self) -> PollStats {
        let c = &self.counters;
        PollStats {
            ticks: c.ticks.load(Ordering::Relaxed),
            calls: c.calls.load(Ordering::Relaxed),
            answered: c.answered.load(Ordering::Relaxed),
            max_batch: c.max_batch.load(Ordering::Relaxed),
        }
    }
}

/// When the poller first and last looked at a key, and when it was last asked for.
#[derive(Debug, Clone, Copy)]
struct Seen {
    since: Instant,
    looked: Instant,
    asked: Instant,
}

/// When a waiter for `key` may be answered by a new call (pure: the pacing rule).
fn due(pace: &Pace, seen: Option<&Seen>, now: Instant) -> Instant {
    match seen {
        Some(s) if now.saturating_duration_since(s.asked) < FORGET_AFTER => {
            let gap = if s.looked.saturating_duration_since(s.since) >= pace.slow_after {
                pace.slow_gap
            } else {
                pace.gap
            };
            s.looked + gap
        }
        _ => now,
    }
}

async fn run<K, V>(
    mut rx: mpsc::UnboundedReceiver<(K, Reply<V>)>,
    pace: Pace,
    chunk: usize,
    describe: DescribeFn<K, V>,
    counters: Arc<Counters>,
) where
    K: Clone + Eq + Hash + Ord + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    let mut bucket = Bucket::new(pace.budget, Instant::now().into_std());
    let mut seen: HashMap<K, Seen> = HashMap::new();
    let mut waiting: Vec<(K, Reply<V>, Instant)> = Vec::new();
    let mut open = true;
    loop {
        let woke_idle = waiting.is_empty();
        if woke_idle {
            if !open {
                return;
            }
            // Ends when every handle to the poller is gone.
            match rx.recv().await {
                Some((k, r)) => {
                    let d = due(&pace, seen.get(&k), Instant::now());
                    waiting.push((k, r, d));
                }
                None => return,
            }
        }
        while let Ok((k, r)) = rx.try_recv() {
            let d = due(&pace, seen.get(&k), Instant::now());
            waiting.push((k, r, d));
        }
        // Waiters that gave up (cancelled bakes) need no answer.
        waiting.retain(|(_, r, _)| !r.is_closed());
        let Some(next) = waiting.iter().map(|w| w.2).min() else {
            continue;
        };
        let at_once = next <= Instant::now();
        // Until the first waiter is due; a new waiter may be due sooner.
        if !at_once && open {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                got = rx.recv() => {
                    match got {
                        Some((k, r)) => {
                            let d = due(&pace, seen.get(&k), Instant::now());
                            waiting.push((k, r, d));
                        }
                        None => open = false,
                    }
                    continue;
                }
            }
        } else if !at_once {
            tokio::time::sleep_until(next).await;
        }
        // Waits that begin together (a cleanup's instances, bakes started at once) register
        // one after another, microseconds apart: when the first woke an idle poller and is due
        // at once, the call waits a moment for the others, so that they share it.
        if woke_idle && at_once {
            tokio::time::sleep(TOGETHER).await;
        }
        let mut batch = std::mem::take(&mut waiting);
        while let Ok((k, r)) = rx.try_recv() {
            batch.push((k, r, Instant::now()));
        }
        batch.retain(|(_, r, _)| !r.is_closed());
        if batch.is_empty() {
            continue;
        }
        let mut keys: Vec<K> = batch.iter().map(|(k, _, _)| k.clone()).collect();
        keys.sort();
        keys.dedup();
        let mut found: HashMap<K, V> = HashMap::new();
        let mut failed = None;
        for c in keys.chunks(chunk) {
            let wait = bucket.take(Instant::now().into_std());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            counters.calls.fetch_add(1, Ordering::Relaxed);
            match describe(c.to_vec()).await {
                Ok(v) => found.extend(v),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let now = Instant::now();
        for k in &keys {
            let e = seen.entry(k.clone()).or_insert(Seen {
                since: now,
                looked: now,
                asked: now,
            });
            if now.saturating_duration_since(e.asked) >= FORGET_AFTER {
                e.since = now;
            }
            e.looked = now;
            e.asked = now;
        }
        seen.retain(|_, s| now.saturating_duration_since(s.asked) < FORGET_AFTER);
        counters.ticks.fetch_add(1, Ordering::Relaxed);
        counters
            .answered
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        counters
            .max_batch
            .fetch_max(batch.len() as u64, Ordering::Relaxed);
        for (k, reply, _) in batch {
            let answer = match &failed {
                Some(e) => Err(e.clone()),
                None => Ok(found.get(&k).cloned()),
            };
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type Batches = Arc<Mutex<Vec<(Instant, Vec<u32>)>>>;

    /// A describe that records when it got each batch and answers `state-<key>` for even keys.
    fn recording() -> (DescribeFn<u32, String>, Batches) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let f: DescribeFn<u32, String> = Arc::new(move |keys: Vec<u32>| {
            s.lock().unwrap().push((Instant::now(), keys.clone()));
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(keys
                    .into_iter()
                    .filter(|k| k % 2 == 0)
                    .map(|k| (k, format!("state-{k}")))
                    .collect())
            })
        });
        (f, seen)
    }

    fn keys(b: &Batches) -> Vec<Vec<u32>> {
        b.lock().unwrap().iter().map(|(_, k)| k.clone()).collect()
    }

    const TEST_PACE: Pace = Pace {
        gap: Duration::from_millis(250),
        slow_gap: Duration::from_secs(1),
        slow_after: Duration::from_secs(10),
        budget: Budget {
            capacity: 5.0,
            refill_per_sec: 4.0,
        },
    };

    #[tokio::test(start_paused = true)]
    async fn concurrent_waiters_share_one_call() {
        let (f, seen) = recording();
        let p = Arc::new(Poller::new("test", TEST_PACE, 100, f));
        assert_eq!(p.observe(2).await.unwrap().as_deref(), Some("state-2"));
        let mut set = tokio::task::JoinSet::new();
        for k in 0..40u32 {
            let p = p.clone();
            set.spawn(async move { (k, p.observe(k).await.unwrap()) });
        }
        while let Some(r) = set.join_next().await {
            let (k, v) = r.unwrap();
            assert_eq!(v, (k % 2 == 0).then(|| format!("state-{k}")), "key {k}");
        }
        assert_eq!(keys(&seen), vec![vec![2], (0..40).collect::<Vec<_>>()]);
        let s = p.stats();
        assert_eq!((s.ticks, s.calls, s.answered, s.max_batch), (2, 2, 41, 40));
    }

    /// A lone bake waits for nothing but the answer: a new key goes at once; asking again
    /// right after an answer is looked at one gap later; another new key meanwhile goes at once
    /// (and carries the first key along early).
    #[tokio::test(start_paused = true)]
    async fn new_keys_go_at_once_and_repeats_one_gap_after_the_answer() {
        let (f, seen) = recording();
        let p = Arc::new(Poller::new("test", TEST_PACE, 100, f));
        let t0 = Instant::now();
        p.observe(2).await.unwrap();
        let first_answer = t0.elapsed();
        assert_eq!(
            first_answer,
            TOGETHER + Duration::from_millis(20),
            "only the call's own time, and the moment others may join it"
        );
        p.observe(2).await.unwrap();
        let b = seen.lock().unwrap().clone();
        assert_eq!(b[1].0 - b[0].0, TEST_PACE.gap + Duration::from_millis(20));

        // Key 2 asks again (due a gap later); key 4 is new and goes at once, with key 2.
        let p2 = p.clone();
        let again = tokio::spawn(async move { p2.observe(2).await });
        tokio::task::yield_now().await;
        let t1 = Instant::now();
        p.observe(4).await.unwrap();
        assert_eq!(t1.elapsed(), Duration::from_millis(20));
        again.await.unwrap().unwrap();
        assert_eq!(keys(&seen)[2], vec![2, 4]);
    }

    /// Waits that begin one after another in the same moment (a cleanup waiting for its two
    /// instances) share the first call, though the first of them woke the poller.
    #[tokio::test(start_paused = true)]
    async fn waits_that_begin_together_share_the_first_call() {
        let (f, seen) = recording();
        let p = Arc::new(Poller::new("test", TEST_PACE, 100, f));
        let first = {
            let p = p.clone();
            tokio::spawn(async move { p.observe(1).await })
        };
        // The poller wakes for the first and is polled before the second is asked for.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        p.observe(4).await.unwrap();
        first.await.unwrap().unwrap();
        assert_eq!(keys(&seen), vec![vec![1, 4]]);
    }

    /// A wait that lasts past `slow_after` is looked at once a `slow_gap`.
    #[tokio::test(start_paused = true)]
    async fn long_waits_are_looked_at_less_often() {
        let (f, seen) = recording();
        let p = Poller::new("test", TEST_PACE, 100, f);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            p.observe(2).await.unwrap();
        }
        let b = seen.lock().unwrap().clone();
        let gaps: Vec<Duration> = b.windows(2).map(|w| w[1].0 - w[0].0).collect();
        let fast = TEST_PACE.gap + Duration::from_millis(20);
        let slow = TEST_PACE.slow_gap + Duration::from_millis(20);
        let young = gaps.iter().take_while(|g| **g == fast).count();
        assert!((35..=40).contains(&young), "{gaps:?}");
        assert!(gaps[young..].iter().all(|g| *g == slow), "{gaps:?}");
    }

    /// New keys arriving all the time (many bakes starting) still cost no more calls than the
    /// budget: its capacity, then its refill rate.
    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_calls_however_many_new_keys_arrive() {
        let (f, seen) = recording();
        let p = Arc::new(Poller::new("test", TEST_PACE, 100, f));
        let mut set = tokio::task::JoinSet::new();
        let t0 = Instant::now();
        for k in 0..400u32 {
            let p = p.clone();
            set.spawn(async move { p.observe(k).await.unwrap() });
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while set.join_next().await.is_some() {}
        let secs = t0.elapsed().as_secs_f64();
        let calls = seen.lock().unwrap().len() as f64;
        let most = TEST_PACE.budget.capacity + TEST_PACE.budget.refill_per_sec * secs + 1.0;
        assert!(
            calls <= most,
            "{calls} calls in {secs:.2}s (at most {most})"
        );
        assert_eq!(p.stats().answered, 400);
    }

    #[tokio::test]
    async fn a_round_holding_more_ids_than_a_call_takes_splits_them() {
        let (f, seen) = recording();
        let p = Arc::new(Poller::new("test", TEST_PACE, 3, f));
        let mut set = tokio::task::JoinSet::new();
        // Hold the poller busy with one waiter so the next seven queue up together.
        let p0 = p.clone();
        set.spawn(async move { p0.observe(100).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(5)).await;
        for k in 0..7u32 {
            let p = p.clone();
            set.spawn(async move { p.observe(k).await.unwrap() });
        }
        while set.join_next().await.is_some() {}
        assert_eq!(
            keys(&seen),
            vec![vec![100], vec![0, 1, 2], vec![3, 4, 5], vec![6]]
        );
    }

    #[tokio::test]
    async fn an_error_reaches_every_waiter_of_that_round() {
        let f: DescribeFn<u32, String> = Arc::new(|_| {
            Box::pin(async {
                Err(CloudError::Api {
                    op: "DescribeInstances",
                    region: "eu-west-1".into(),
                    code: Some("RequestLimitExceeded".into()),
                    message: "slow down".into(),
                    request_id: None,
                })
            })
        });
        let p = Arc::new(Poller::new("test", TEST_PACE, 10, f));
        let (a, b) = tokio::join!(p.observe(1), p.observe(2));
        for r in [a, b] {
            assert_eq!(r.unwrap_err().code(), Some("RequestLimitExceeded"));
        }
    }

    #[test]
    fn due_follows_the_pace() {
        let now = Instant::now();
        let s = |since_ago: u64, looked_ago: u64| Seen {
            since: now - Duration::from_millis(since_ago),
            looked: now - Duration::from_millis(looked_ago),
            asked: now - Duration::from_millis(looked_ago),
        };
        assert_eq!(due(&TEST_PACE, None, now), now, "new key: now");
        assert_eq!(
            due(&TEST_PACE, Some(&s(1_000, 100)), now),
            now + Duration::from_millis(150)
        );
        assert_eq!(
            due(&TEST_PACE, Some(&s(30_000, 100)), now),
            now + Duration::from_millis(900),
            "a long wait: the slow gap"
        );
        assert_eq!(
            due(&TEST_PACE, Some(&s(30_000, 6_000)), now),
            now,
            "not asked for a while: a new wait"
        );
    }
}
