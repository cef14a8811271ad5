//! `bakery gc` and `bakery cleanup <bake-id>` without a journal: from tags alone, in every
//! region of a target, removes what bakes created and no live bake owns. Never touches anything
//! untagged (but snapshots EC2 made from a bake's instance), anything published, or anything of
//! a bake whose lease (`bakery:expires`) has not run out.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::sweep::{self, Scope};
use super::undo;
use crate::catalog::model::Target;
use crate::cloud::aws::Regions;
use crate::cloud::cancel::Cancel;

/// Removals in flight at once (each level waits for the one before: instances release groups).
const PARALLEL_REMOVALS: usize = 32;

/// What gc decided for one resource.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// The bake it belongs to (empty for a parameter naming an AMI that is gone).
    pub bake_id: String,
    pub region: String,
    pub resource: String,
    /// Why it counts as left behind.
    pub why: String,
    /// `removed`, `would remove`, `kept` (a live bake's) or `failed`.
    pub action: &'static str,
    /// Why it was kept, or how removing it failed.
    pub detail: Option<String>,
}

/// Everything one gc run saw and did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub items: Vec<Item>,
    /// Regions that could not be scanned.
    pub errors: Vec<String>,
}

impl Report {
    pub fn failed(&self) -> bool {
        !self.errors.is_empty() || self.items.iter().any(|i| i.action == "failed")
    }
}

/// What to collect.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this bake's resources (`cleanup` without a journal).
    pub bake: Option<String>,
    /// List, remove nothing.
    pub dry_run: bool,
    /// Only bakes whose lease ran out at least this long ago.
    pub older_than: Duration,
    /// Remove even what a live bake owns (`cleanup --force`: the user says it is dead).
    pub ignore_lease: bool,
}

/// Scans every region of `target` and removes (or, dry, lists) what dead bakes left.
pub async fn gc(target: &Target, o: &Options, cancel: &Cancel) -> Report {
    let mut report = Report::default();
    let mut regions = Regions::new(target);
    let names: Vec<String> = target.regions.iter().map(|r| r.to_string()).collect();
    let mut scan = sweep::Scan::default();
    for region in &names {
        let aws = regions.get(region).await;
        match sweep::scan_region(aws, target, o.bake.as_deref(), Scope::All).await {
            Ok(s) => scan.merge(s),
            Err(e) => report.errors.push(format!("scan of {region}: {e}")),
        }
    }
    // A bake's lease may be renewed on a resource in the region that could not be read: without
    // every region, no bake can be called dead.
    let blind = !report.errors.is_empty();
    let now = SystemTime::now();
    let live_until = |bake: &str| scan.live_until(bake).filter(|t| *t + o.older_than > now);
    let mut found = scan.found();
    found.sort_by_key(|f| f.undo.order());
    let mut todo = Vec::new();
    for f in found {
        let kept = if o.ignore_lease || f.bake_id.is_empty() {
            None
        } else {
            live_until(&f.bake_id)
        };
        let item = Item {
            bake_id: f.bake_id.clone(),
            region: f.undo.region().unwrap_or_default().to_string(),
            resource: f.undo.to_string(),
            why: f.why.clone(),
            action: if kept.is_some() {
                "kept"
            } else if o.dry_run {
                "would remove"
            } else {
                "removed"
            },
            detail: kept.map(|t| {
                format!(
                    "bake {} is live: its lease runs to {}",
                    f.bake_id,
                    humantime::format_rfc3339_seconds(t)
                )
            }),
        };
        let item = if blind && kept.is_none() {
            Item {
                action: "kept",
                detail: Some("not every region could be read: nothing is removed".into()),
                ..item
            }
        } else {
            item
        };
        if item.action == "removed" {
            todo.push((report.items.len(), f));
        }
        report.items.push(item);
    }
    // Level by level (instances, parameters, groups, key pairs, images, snapshots, objects),
    // each level's removals at once: the waits share one poller tick per region, and the EC2
    // rate limiter keeps the calls within AWS's buckets.
    let mut clients = std::collections::BTreeMap::new();
    for region in &names {
        clients.insert(region.clone(), regions.get(region).await.clone());
    }
    let mut level: Vec<(usize, sweep::Found)> = Vec::new();
    let mut todo = todo.into_iter().peekable();
    while let Some((i, f)) = todo.next() {
        let order = f.undo.order();
        level.push((i, f));
        if todo.peek().is_some_and(|(_, n)| n.undo.order() == order) {
            continue;
        }
        let mut running = tokio::task::JoinSet::new();
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(PARALLEL_REMOVALS));
        for (i, f) in level.drain(..) {
            let Some(aws) = f.undo.region().and_then(|r| clients.get(r)).cloned() else {
                continue;
            };
            let (cancel, limit) = (cancel.clone(), limit.clone());
            running.spawn(async move {
                let _permit = limit.acquire_owned().await;
                (i, undo::run_in(&aws, &f.undo, &f.bake_id, &cancel).await)
            });
        }
        while let Some(done) = running.join_next().await {
            let (i, r) = match done {
                Ok(d) => d,
                Err(e) => {
                    report.errors.push(format!("removal task: {e}"));
                    continue;
                }
            };
            if let Err(e) = r {
                report.items[i].action = "failed";
                report.items[i].detail = Some(e.to_string());
            }
        }
    }
    report
}
