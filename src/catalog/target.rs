//! `bakery.toml`: targets, validated.

use std::collections::BTreeMap;
use std::path::Path;

use super::diag::{Diagnostics, ErrorKind};
use super::doc::{Doc, DocPath};
use super::model::{Region, Target, DEFAULT_SSM_PREFIX};
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
            },
        );
    }
    out
}
