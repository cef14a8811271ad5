//! What a bake cost, estimated from a dated price table: the instance-seconds of the build and
//! test instances at the on-demand price of their type in their region, their root volumes'
//! GiB-seconds, and the monthly storage of the new AMI's snapshots in every region it was copied
//! to. The shipped table is `prices/aws-on-demand.toml`; a target may name its own (`prices` in
//! `bakery.toml`, same shape) for negotiated prices or other regions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The table bakery ships (compiled in).
pub const SHIPPED: &str = include_str!("../prices/aws-on-demand.toml");

/// Where the shipped table lives in bakery's repository (named in errors and reports).
pub const SHIPPED_PATH: &str = "prices/aws-on-demand.toml";

/// Hours AWS counts in a month for GiB-month prices.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// AWS bills on-demand instances and EBS volumes per second, a minute at least.
pub const MIN_BILLED_SECONDS: f64 = 60.0;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// What the table is (`aws-on-demand`, `negotiated-2027`).
    pub name: String,
    /// When the prices were read, `YYYY-MM-DD`.
    pub date: String,
    /// ISO 4217 code of every price in the table.
    pub currency: String,
    pub regions: BTreeMap<String, RegionPrices>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPrices {
    /// Snapshot storage per GiB-month.
    pub snapshot_gb_month: f64,
    /// Volume type (`gp3`) -> price per GiB-month.
    #[serde(default)]
    pub volume_gb_month: BTreeMap<String, f64>,
    /// Instance type -> hourly on-demand price of a Linux instance.
    #[serde(default)]
    pub linux: BTreeMap<String, f64>,
    /// Instance type -> hourly on-demand price of a Windows instance (license included).
    #[serde(default)]
    pub windows: BTreeMap<String, f64>,
}

/// The shipped table, parsed once per process (every target that names no table of its own
/// uses it). Compiled in and parsed by a unit test: it cannot fail at run time.
static SHIPPED_TABLE: std::sync::LazyLock<PriceTable> =
    std::sync::LazyLock::new(|| toml::from_str(SHIPPED).expect("prices/aws-on-demand.toml parses"));

impl PriceTable {
    /// The shipped table.
    pub fn shipped() -> PriceTable {
        SHIPPED_TABLE.clone()
    }

    /// What is wrong with the table's values: `(key path, message)`.
    pub fn problems(&self) -> Vec<(Vec<String>, String)> {
        let mut out = Vec::new();
        let d = self.date.as_bytes();
        let date_ok = d.len() == 10
            && d[4] == b'-'
            && d[7] == b'-'
            && d.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !date_ok {
            out.push((
                vec!["date".into()],
                format!("`{}` is not a date (YYYY-MM-DD)", self.date),
            ));
        }
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            out.push((
                vec!["currency".into()],
                format!("`{}` is not a currency code (USD, EUR)", self.currency),
            ));
        }
        for (region, p) in &self.regions {
            if let Err(e) = crate::catalog::values::region(region) {
                out.push((vec!["regions".into(), region.clone()], e));
            }
            let mut price = |path: Vec<&str>, v: f64| {
                if !(v.is_finite() && v >= 0.0) {
                    let mut k = vec!["regions".to_string(), region.clone()];
                    k.extend(path.iter().map(|s| s.to_string()));
                    out.push((k, format!("{v} is not a price (a number, 0 or more)")));
                }
            };
            price(vec!["snapshot_gb_month"], p.snapshot_gb_month);
            for (table, prices) in [
                ("volume_gb_month", &p.volume_gb_month),
                ("linux", &p.linux),
                ("windows", &p.windows),
            ] {
                for (k, v) in prices {
                    price(vec![table, k], *v);
                }
            }
        }
        out
    }
}

/// An instance a bake ran, for its cost.
#[derive(Debug, Clone)]
pub struct Usage {
    /// `build` or `test`.
    pub role: &'static str,
    pub region: String,
    pub instance_type: String,
    pub windows: bool,
    /// From RunInstances to the end of the bake's cleanup.
    pub seconds: f64,
    /// Root volume size (GiB) and type.
    pub volume_gb: Option<u64>,
    pub volume_type: String,
}

/// One instance and its root volume.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InstanceCost {
    pub role: &'static str,
    pub region: String,
    pub instance_type: String,
    pub seconds: f64,
    /// Seconds billed (a minute at least).
    pub billed_seconds: f64,
    pub hourly: Option<f64>,
    pub instance: f64,
    pub volume_gb: Option<u64>,
    pub volume_type: String,
    pub volume_gb_month: Option<f64>,
    pub volume: f64,
}

/// The new AMI's snapshots in one region.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StorageCost {
    pub region: String,
    /// GiB the snapshots hold at most (their volumes' size; snapshots are incremental and
    /// compressed, so AWS usually bills less).
    pub gb: u64,
    pub gb_month: Option<f64>,
    pub per_month: f64,
}

/// A bake's cost estimate, in the table's currency.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cost {
    /// The table used: its name, date and where it came from.
    pub price_table: String,
    pub price_date: String,
    pub price_source: String,
    pub currency: String,
    /// One time: instances and their volumes while the bake ran.
    pub bake: f64,
    /// Every month the version is kept: its snapshots in every region.
    pub storage_per_month: f64,
    pub instances: Vec<InstanceCost>,
    pub storage: Vec<StorageCost>,
    /// Prices the table does not have (counted as 0): `m7i.large (windows) in ap-south-1`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpriced: Vec<String>,
}

/// Where a target's table came from (for the report).
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    pub table: PriceTable,
    /// `prices/aws-on-demand.toml (shipped)` or the target's file.
    pub source: String,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            table: PriceTable::shipped(),
            source: format!("{SHIPPED_PATH} (shipped)"),
        }
    }
}

/// Snapshot storage per month of `gb` GiB in each of `regions`, and what the table lacks.
pub fn storage(prices: &Prices, regions: &[String], gb: u64) -> (Vec<StorageCost>, Vec<String>) {
    let mut unpriced = Vec::new();
    let lines = regions
        .iter()
        .map(|r| {
            let gb_month = prices.table.regions.get(r).map(|p| p.snapshot_gb_month);
            if gb_month.is_none() {
                unpriced.push(format!("snapshot storage in {r}"));
            }
            StorageCost {
                region: r.clone(),
                gb,
                gb_month,
                per_month: gb as f64 * gb_month.unwrap_or(0.0),
            }
        })
        .collect();
    (lines, unpriced)
}

/// The estimate for what a bake ran and the regions its snapshots (of `snapshot_gb`) are in.
pub fn estimate(
    prices: &Prices,
    uses: &[Usage],
    snapshot_regions: &[String],
    snapshot_gb: Option<u64>,
) -> Cost {
    let mut unpriced = Vec::new();
    let mut instances = Vec::new();
    for u in uses {
        let region = prices.table.regions.get(&u.region);
        let os = if u.windows { "windows" } else { "linux" };
        let hourly = region.and_then(|p| {
            if u.windows { &p.windows } else { &p.linux }
                .get(&u.instance_type)
                .copied()
        });
        if hourly.is_none() {
            unpriced.push(format!("{} ({os}) in {}", u.instance_type, u.region));
        }
        let volume_gb_month = region.and_then(|p| p.volume_gb_month.get(&u.volume_type).copied());
        if volume_gb_month.is_none() {
            unpriced.push(format!("{} volumes in {}", u.volume_type, u.region));
        }
        let billed = u.seconds.max(MIN_BILLED_SECONDS);
        let instance = hourly.unwrap_or(0.0) * billed / 3600.0;
        let volume = u.volume_gb.unwrap_or(0) as f64 * volume_gb_month.unwrap_or(0.0) * billed
            / (HOURS_PER_MONTH * 3600.0);
        instances.push(InstanceCost {
            role: u.role,
            region: u.region.clone(),
            instance_type: u.instance_type.clone(),
            seconds: u.seconds,
            billed_seconds: billed,
            hourly,
            instance,
            volume_gb: u.volume_gb,
            volume_type: u.volume_type.clone(),
            volume_gb_month,
            volume,
        });
    }
    let (storage, missing) = storage(prices, snapshot_regions, snapshot_gb.unwrap_or(0));
    unpriced.extend(missing);
    Cost {
        price_table: prices.table.name.clone(),
        price_date: prices.table.date.clone(),
        price_source: prices.source.clone(),
        currency: prices.table.currency.clone(),
        bake: instances.iter().map(|i| i.instance + i.volume).sum(),
        storage_per_month: storage.iter().map(|s| s.per_month).sum(),
        instances,
        storage,
        unpriced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_and_prices_every_shipped_instance_type() {
        let t = PriceTable::shipped();
        assert_eq!(t.problems(), Vec::new());
        assert_eq!(t.currency, "USD");
        for region in ["us-east-1", "eu-west-1"] {
            let p = &t.regions[region];
            for ty in [
                "t3.micro",
                "t3.medium",
                "t3a.medium",
                "m5.large",
                "m6i.large",
            ] {
                assert!(p.linux.contains_key(ty), "{ty} linux in {region}");
                assert!(p.windows.contains_key(ty), "{ty} windows in {region}");
            }
            assert!(p.volume_gb_month.contains_key("gp3"));
        }
    }

    #[test]
    fn an_estimate_is_instance_seconds_volume_seconds_and_monthly_snapshots() {
        let prices = Prices {
            table: toml::from_str(
                r#"name = "t"
date = "2026-01-01"
currency = "EUR"
[regions.eu-west-1]
snapshot_gb_month = 0.05
volume_gb_month = { gp3 = 0.073 }
windows = { "m5.large" = 0.36 }
"#,
            )
            .unwrap(),
            source: "x.toml".into(),
        };
        let u = |role, seconds| Usage {
            role,
            region: "eu-west-1".into(),
            instance_type: "m5.large".into(),
            windows: true,
            seconds,
            volume_gb: Some(100),
            volume_type: "gp3".into(),
        };
        let c = estimate(
            &prices,
            &[u("build", 3600.0), u("test", 12.0)],
            &["eu-west-1".into(), "us-east-1".into()],
            Some(100),
        );
        // An hour of m5.large, a minute billed for the test instance (the minimum).
        let instances = 0.36 + 0.36 * 60.0 / 3600.0;
        let volumes = 100.0 * 0.073 * (3600.0 + 60.0) / (730.0 * 3600.0);
        assert!((c.bake - (instances + volumes)).abs() < 1e-12, "{c:?}");
        assert_eq!(c.instances[1].billed_seconds, 60.0);
        // us-east-1 is not in the table: named, counted as nothing.
        assert!((c.storage_per_month - 100.0 * 0.05).abs() < 1e-12);
        assert_eq!(c.unpriced, ["snapshot storage in us-east-1"]);
        assert_eq!(
            (c.currency.as_str(), c.price_date.as_str()),
            ("EUR", "2026-01-01")
        );
    }

    #[test]
    fn bad_values_are_named_by_their_key() {
        let mut t = PriceTable::shipped();
        t.date = "Nov 2026".into();
        t.currency = "usd".into();
        t.regions
            .get_mut("us-east-1")
            .unwrap()
            .linux
            .insert("t3.nano".into(), -1.0);
        let keys: Vec<String> = t.problems().into_iter().map(|(k, _)| k.join(".")).collect();
        assert_eq!(
            keys,
            ["date", "currency", "regions.us-east-1.linux.t3.nano"]
        );
    }
}
