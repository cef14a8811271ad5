//! Shared pollers: every bake in a process that waits on an instance or an image in a region
//! registers what it waits for with that region's poller, which answers all of them with one
//! batched Describe call per tick. Ten bakes waiting at once cost one call per tick, not ten.
//!
//! A poller is a small task started on first use. It sleeps until someone asks; the first ask
//! after a quiet tick is answered at once (a lone bake waits no longer than before), and asks
//! that arrive while a tick is still running wait for the next one and share its call.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::CloudError;

/// The least time between two Describe calls of one poller. EC2's Describe buckets refill at 20
/// tokens per second (see `limit.rs`); one call per second per poller leaves nearly all of it
/// to the rest of the bake and to other tools on the account.
pub const TICK: Duration = Duration::from_secs(1);

type Reply<V> = oneshot::Sender<Result<Option<V>, CloudError>>;
type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// Describes a batch of keys; keys it does not return are not (yet) visible.
pub type DescribeFn<K, V> =
    Arc<dyn Fn(Vec<K>) -> BoxFut<Result<Vec<(K, V)>, CloudError>> + Send + Sync>;

/// What a poller did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PollStats {
    /// Ticks that answered at least one waiter.
    pub ticks: u64,
    /// Describe calls sent (one per tick unless a tick held more than a call's worth of ids).
    pub calls: u64,
    /// Waiters answered.
    pub answered: u64,
    /// The most waiters one tick answered.
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
    tick: Duration,
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
    pub fn new(
        what: &'static str,
        tick: Duration,
        chunk: usize,
        describe: DescribeFn<K, V>,
    ) -> Self {
        Self {
            what,
            tick,
            chunk: chunk.max(1),
            describe,
            tx: OnceLock::new(),
            counters: Arc::default(),
        }
    }

    /// The state of `key` at the next tick (`None`: not visible).
    pub async fn observe(&self, key: K) -> Result<Option<V>, CloudError> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(
                rx,
                self.tick,
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

async fn run<K, V>(
    mut rx: mpsc::UnboundedReceiver<(K, Reply<V>)>,
    tick: Duration,
    chunk: usize,
    describe: DescribeFn<K, V>,
    counters: Arc<Counters>,
) where
    K: Clone + Eq + Hash + Ord + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    let mut last: Option<tokio::time::Instant> = None;
    // Ends when every handle to the poller is gone.
    while let Some(first) = rx.recv().await {
        if let Some(l) = last {
            tokio::time::sleep_until(l + tick).await;
        }
        let mut waiting = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiting.push(w);
        }
        // Waiters that gave up (cancelled bakes) need no answer.
        waiting.retain(|(_, r)| !r.is_closed());
        if waiting.is_empty() {
            continue;
        }
        last = Some(tokio::time::Instant::now());
        let mut keys: Vec<K> = waiting.iter().map(|(k, _)| k.clone()).collect();
        keys.sort();
        keys.dedup();
        let mut found: HashMap<K, V> = HashMap::new();
        let mut failed = None;
        for c in keys.chunks(chunk) {
            counters.calls.fetch_add(1, Ordering::Relaxed);
            match describe(c.to_vec()).await {
                Ok(v) => found.extend(v),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        counters.ticks.fetch_add(1, Ordering::Relaxed);
        counters
            .answered
            .fetch_add(waiting.len() as u64, Ordering::Relaxed);
        counters
            .max_batch
            .fetch_max(waiting.len() as u64, Ordering::Relaxed);
        for (k, reply) in waiting {
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

    type Batches = Arc<Mutex<Vec<Vec<u32>>>>;

    /// A describe that records each batch it got and answers `state-<key>` for even keys.
    fn recording() -> (DescribeFn<u32, String>, Batches) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let f: DescribeFn<u32, String> = Arc::new(move |keys: Vec<u32>| {
            s.lock().unwrap().push(keys.clone());
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

    #[tokio::test]
    async fn concurrent_waiters_share_one_call_per_tick() {
        let (f, seen) = recording();
        let p = Arc::new(Poller::new("test", Duration::from_millis(50), 100, f));
        // One waiter first (answered at once), then 40 at the same time: they all fit in the
        // next tick.
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
        let batches = seen.lock().unwrap().clone();
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert_eq!(batches[1], (0..40).collect::<Vec<_>>());
        let s = p.stats();
        assert_eq!((s.ticks, s.calls, s.answered, s.max_batch), (2, 2, 41, 40));
    }

    #[tokio::test]
    async fn a_tick_holding_more_ids_than_a_call_takes_splits_them() {
        let (f, seen) = recording();
        let p = Arc::new(Poller::new("test", Duration::from_millis(10), 3, f));
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
        let batches = seen.lock().unwrap().clone();
        assert_eq!(
            batches,
            vec![vec![100], vec![0, 1, 2], vec![3, 4, 5], vec![6]]
        );
    }

    #[tokio::test]
    async fn an_error_reaches_every_waiter_of_that_tick() {
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
        let p = Arc::new(Poller::new("test", Duration::from_millis(10), 10, f));
        let (a, b) = tokio::join!(p.observe(1), p.observe(2));
        for r in [a, b] {
            assert_eq!(r.unwrap_err().code(), Some("RequestLimitExceeded"));
        }
    }
}
