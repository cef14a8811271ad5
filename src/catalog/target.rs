//! `bakery.toml`: targets, validated.

use std::collections::BTreeMap;
use std::path::Path;

use super::diag::{Diagnostics, ErrorKind};
use super::doc::{Doc, DocPath};
use super::model::{Consumer, Region, Target, DEFAULT_SSM_PREFIX};
use super::raw::RawProject;
use super::values;
use crate::cost::Prices;

/// A target's own price table, checked like every other file of the project.
fn load_prices(root: &Path, file: &str, diags: &mut Diagnostics) -> Option<Prices> {
    let src = super::recipe::read_source(root, Path::new(file), diags)?;
    let mut doc = Doc::parse(src, diags)?;
    let table = doc.deserialize::<crate::cost::PriceTable>(diags)?;
    let problems = table.problems();
    for (keys, msg) in &problems {
        let mut p = DocPath::root();
        for k in keys {
            p = p.k(k);
        }
        diags.push(doc.at(&p, ErrorKind::InvalidValue, msg.clone()));
    }
    problems.is_empty().then(|| Prices {
        table,
        source: file.to_string(),
    })
}

/// An external id is 2 to 1224 characters of `[\w+=,.@:/-]` (STS AssumeRole reference).
fn external_id(s: &str) -> Result<(), String> {
    let ok = (2..=1224).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c));
    ok.then_some(())
        .ok_or_else(|| "an external id is 2 to 1224 letters, digits and `_+=,.@:/-`".to_string())
}

/// `arn:<partition>:iam::<account>:role/<path/><name>`: the account it names, or what is wrong.
fn role_arn(s: &str) -> Result<&str, String> {
    let bad = || format!("`{s}` is not an IAM role ARN; write arn:aws:iam::<account>:role/<name>");
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let [arn, partition, "iam", "", account, resource] = parts.as_slice() else {
        return Err(bad());
    };
    let name = resource.strip_prefix("role/").ok_or_else(bad)?;
    let name_ok = !name.is_empty()
        && name
            .rsplit('/')
            .next()
            .is_some_and(|n| (1..=64).contains(&n.len()))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c));
    if *arn != "arn" || !partition.starts_with("aws") || !name_ok {
        return Err(bad());
    }
    values::account_id(account).map_err(|_| bad())?;
    Ok(account)
}

/// `consumers` of a target, validated (every problem reported at its place).
fn consumers(
    doc: &Doc,
    p: &DocPath,
    t: &super::raw::RawTarget,
    regions: &[String],
    diags: &mut Diagnostics,
) -> Vec<Consumer> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in t.consumers.iter().flatten().enumerate() {
        let at = p.k("consumers").i(i);
        let before = diags.len();
        let mut need = |field: &str, v: &Option<String>| {
            if v.is_none() {
                diags.push(doc.at(
                    &at,
                    ErrorKind::MissingField,
                    format!("a consumer needs `{field}`"),
                ));
            }
        };
        need("account", &c.account);
        need("role_arn", &c.role_arn);
        if let Some(a) = &c.account {
            if let Err(e) = values::account_id(a) {
                diags.push(doc.at(&at.k("account"), ErrorKind::InvalidValue, e));
            } else if !seen.insert(a.clone()) {
                diags.push(doc.at(
                    &at.k("account"),
                    ErrorKind::InvalidValue,
                    format!("consumer {a} is listed twice"),
                ));
            }
        }
        if let Some(arn) = &c.role_arn {
            match role_arn(arn) {
                Err(e) => diags.push(doc.at(&at.k("role_arn"), ErrorKind::InvalidValue, e)),
                Ok(acct) if c.account.as_deref().is_some_and(|a| a != acct) => diags.push(doc.at(
                    &at.k("role_arn"),
                    ErrorKind::InvalidValue,
                    format!(
                        "the role is in account {acct}, not in the consumer's account {}",
                        c.account.as_deref().unwrap_or_default()
                    ),
                )),
                Ok(_) => {}
            }
        }
        if let Some(x) = &c.external_id {
            if let Err(e) = external_id(x) {
                diags.push(doc.at(&at.k("external_id"), ErrorKind::InvalidValue, e));
            }
        }
        for (j, r) in c.regions.iter().flatten().enumerate() {
            let r_at = at.k("regions").i(j);
            if let Err(e) = values::region(r) {
                diags.push(doc.at(&r_at, ErrorKind::InvalidRegion, e));
            } else if !regions.contains(r) {
                diags.push(doc.at(
                    &r_at,
                    ErrorKind::InvalidRegion,
                    format!(
                        "{r} is not one of the target's regions ({}): the images are published only there",
                        regions.join(", ")
                    ),
                ));
            }
        }
        if let Some(prefix) = &c.ssm_prefix {
            if let Err(e) = values::ssm_prefix(prefix) {
                diags.push(doc.at(&at.k("ssm_prefix"), ErrorKind::InvalidValue, e));
            }
        }
        if diags.len() > before {
            continue;
        }
        out.push(Consumer {
            account: c.account.clone().unwrap_or_default(),
            role_arn: c.role_arn.clone().unwrap_or_default(),
            external_id: c.external_id.clone(),
            regions: c
                .regions
                .clone()
                .unwrap_or_else(|| regions.to_vec())
                .into_iter()
                .map(Region)
                .collect(),
            ssm_prefix: c
                .ssm_prefix
                .clone()
                .or_else(|| t.ssm_prefix.clone())
                .unwrap_or_else(|| DEFAULT_SSM_PREFIX.into()),
        });
    }
    if t.consumer == Some(true) && !out.is_empty() {
        diags.push(doc.at(
            &p.k("consumer"),
            ErrorKind::InvalidValue,
            "a consumer target reads another account's mirror: it cannot have consumers of its own"
                .to_string(),
        ));
    }
    out
}

/// Tag key prefixes a user may not set: AWS reserves `aws:`, bakery owns `bakery:`.
const RESERVED_TAG_PREFIXES: [&str; 2] = ["aws:", "bakery:"];

pub fn validate(root: &Path, doc: &mut Doc, diags: &mut Diagnostics) -> BTreeMap<String, Target> {
    let Some(raw) = doc.deserialize::<RawProject>(diags) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (name, t) in &raw.targets {
        let p = DocPath::root().k("targets").k(name);
        let before = diags.len();
        let mut err = |path: DocPath, kind: ErrorKind, r: Result<(), String>| {
            if let Err(e) = r {
                diags.push(doc.at(&path, kind, e));
            }
        };
        err(
            p.clone(),
            ErrorKind::InvalidValue,
            values::channel(name).map_err(|_| {
                format!("`{name}` is not a target name; use lowercase letters, digits and dashes")
            }),
        );
        let regions = t.regions.clone().unwrap_or_default();
        if regions.is_empty() {
            err(
                p.k("regions"),
                ErrorKind::MissingField,
                Err("a target needs at least one region".into()),
            );
        }
        for (i, r) in regions.iter().enumerate() {
            err(
                p.k("regions").i(i),
                ErrorKind::InvalidRegion,
                values::region(r),
            );
        }
        for r in t.kms_keys.iter().flat_map(|m| m.keys()) {
            err(
                p.k("kms_keys").k(r),
                ErrorKind::InvalidRegion,
                values::region(r),
            );
        }
        if let Some(u) = &t.endpoint_url {
            let ok = u.starts_with("http://") || u.starts_with("https://");
            err(
                p.k("endpoint_url"),
                ErrorKind::InvalidValue,
                ok.then_some(())
                    .ok_or(format!("`{u}` is not an http(s) URL")),
            );
        }
        for (field, v, prefix) in [
            ("subnet", &t.subnet, "subnet-"),
            ("security_group", &t.security_group, "sg-"),
        ] {
            if let Some(v) = v {
                let ok = v
                    .strip_prefix(prefix)
                    .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
                err(
                    p.k(field),
                    ErrorKind::InvalidValue,
                    ok.then_some(())
                        .ok_or(format!("`{v}` is not a {prefix}<hex> id")),
                );
            }
        }
        if let Some(prefix) = &t.ssm_prefix {
            err(
                p.k("ssm_prefix"),
                ErrorKind::InvalidValue,
                values::ssm_prefix(prefix),
            );
        }
        if let Some(c) = &t.ssh_cidr {
            err(
                p.k("ssh_cidr"),
                ErrorKind::InvalidValue,
                values::ingress_cidr(c),
            );
        }
        if t.ssh_port == Some(0) {
            err(
                p.k("ssh_port"),
                ErrorKind::InvalidValue,
                Err("port 0 is not a port".into()),
            );
        }
        for k in t.tags.iter().flat_map(|m| m.keys()) {
            if RESERVED_TAG_PREFIXES
                .iter()
                .any(|r| k.to_ascii_lowercase().starts_with(r))
            {
                err(
                    p.k("tags").k(k),
                    ErrorKind::InvalidValue,
                    Err(format!(
                        "tag key `{k}` uses a reserved prefix (aws:, bakery:)"
                    )),
                );
            }
        }
        let consumers = consumers(doc, &p, t, &regions, diags);
        let prices = match &t.prices {
            None => Some(Prices::default()),
            Some(file) => load_prices(root, file, diags),
        };
        let Some(prices) = prices else {
            continue;
        };
        if diags.len() > before {
            continue;
        }
        out.insert(
            name.clone(),
            Target {
                name: name.clone(),
                regions: regions.into_iter().map(Region).collect(),
                profile: t.profile.clone(),
                endpoint_url: t.endpoint_url.clone(),
                subnet: t.subnet.clone(),
                security_group: t.security_group.clone(),
                instance_profile: t.instance_profile.clone(),
                kms_key: t.kms_key.clone(),
                kms_keys: t.kms_keys.clone().unwrap_or_default(),
                s3_bucket: t.s3_bucket.clone(),
                ssm_prefix: t
                    .ssm_prefix
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SSM_PREFIX.into()),
                ssh_host: t.ssh_host.clone(),
                ssh_port: t.ssh_port,
                ssh_user: t.ssh_user.clone(),
                ssh_cidr: t.ssh_cidr.clone(),
                tags: t.tags.clone().unwrap_or_default(),
                prices,
                consumers,
                consumer: t.consumer.unwrap_or(false),
            },
        );
    }
    out
}
