//! KMS: only what the sharing preflight needs. An image shared with other accounts has its
//! snapshots encrypted with a customer managed key that those accounts must be able to use;
//! bakery reads the key (DescribeKey) and its key policy (GetKeyPolicy) before launch and names
//! the statement that is missing, instead of the consumer finding out when a launch fails.

use serde_json::Value;

use super::Aws;
use crate::catalog::model::OrgUnit;
use crate::cloud::CloudError;

/// What preflight learns of a key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInfo {
    pub arn: String,
    /// `AWS` for an AWS managed key (aws/ebs), which cannot be shared; `CUSTOMER` otherwise.
    pub manager: String,
    /// The key policy (`default`), JSON.
    pub policy: Option<String>,
}

/// The actions the printed statements grant (AWS's "allow use of the key by other accounts"
/// statement for EBS): they cover `CONSUMER_ACTIONS`.
const STATEMENT_ACTIONS: [&str; 5] = [
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:CreateGrant",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
];

/// What an account needs of the key to launch an AMI whose snapshots it encrypts (and to copy
/// it): the actions of AWS's "allow use of the key by other accounts" statement for EBS.
pub const CONSUMER_ACTIONS: [&str; 6] = [
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:CreateGrant",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKeyWithoutPlaintext",
];

impl Aws {
    /// The key `key` (id, ARN or alias) names: its ARN, manager and key policy. The policy of an
    /// AWS managed key is not read (it cannot be shared whatever it says).
    pub async fn kms_key(&self, key: &str) -> Result<KeyInfo, CloudError> {
        let d = self
            .kms
            .describe_key()
            .key_id(key)
            .send()
            .await
            .map_err(|e| self.err("DescribeKey", e))?;
        let meta = d
            .key_metadata()
            .ok_or_else(|| self.bad("DescribeKey", "no KeyMetadata in the answer"))?;
        let manager = meta
            .key_manager()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        let arn = meta.arn().unwrap_or(meta.key_id()).to_string();
        let policy = if manager == "AWS" {
            None
        } else {
            self.kms
                .get_key_policy()
                .key_id(meta.key_id())
                .policy_name("default")
                .send()
                .await
                .map_err(|e| self.err("GetKeyPolicy", e))?
                .policy()
                .map(str::to_string)
        };
        Ok(KeyInfo {
            arn,
            manager,
            policy,
        })
    }
}

/// Whether an IAM action pattern (`kms:ReEncrypt*`, `kms:*`, `*`) covers `action`
/// (case-insensitive, as IAM compares actions).
fn action_matches(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    match p.split_once('*') {
        None => p == a,
        Some((head, tail)) => {
            a.starts_with(head) && a.len() >= head.len() + tail.len() && a.ends_with(tail)
        }
    }
}

fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether an Allow statement's principal names `account` (its root ARN, its id, or `*`).
fn names_account(statement: &Value, account: &str) -> bool {
    let principal = &statement["Principal"];
    let aws = match principal {
        Value::String(s) if s == "*" => return true,
        p => strings(&p["AWS"]),
    };
    aws.iter()
        .any(|p| *p == "*" || *p == account || *p == format!("arn:aws:iam::{account}:root"))
}

/// The actions of `CONSUMER_ACTIONS` that `policy` does not allow `account` (Allow statements
/// whose principal names the account; conditions are taken as met, explicit Deny is not
/// weighed: this catches the missing statement, it does not replace IAM's evaluation).
pub fn missing_actions(policy: &str, account: &str) -> Result<Vec<&'static str>, String> {
    missing_where(policy, |s| names_account(s, account))
}

/// The actions of `CONSUMER_ACTIONS` that no Allow statement of `policy` for which `grants`
/// holds allows.
fn missing_where(
    policy: &str,
    grants: impl Fn(&Value) -> bool,
) -> Result<Vec<&'static str>, String> {
    let doc: Value =
        serde_json::from_str(policy).map_err(|e| format!("the key policy is not JSON: {e}"))?;
    let statements: Vec<&Value> = match &doc["Statement"] {
        Value::Array(a) => a.iter().collect(),
        s @ Value::Object(_) => vec![s],
        _ => Vec::new(),
    };
    let allowed: Vec<&str> = statements
        .iter()
        .filter(|s| s["Effect"] == "Allow" && grants(s))
        .flat_map(|s| strings(&s["Action"]))
        .collect();
    Ok(CONSUMER_ACTIONS
        .iter()
        .copied()
        .filter(|a| !allowed.iter().any(|p| action_matches(p, a)))
        .collect())
}

impl OrgUnit {
    /// The `aws:PrincipalOrgPaths` pattern that covers the OU and every OU under it, whatever
    /// the root and the parents (`*` matches across `/`).
    fn path_pattern(&self) -> String {
        match &self.ou {
            Some(ou) => format!("{}/*/{ou}/*", self.org),
            None => format!("{}/*", self.org),
        }
    }

    /// Whether an `aws:PrincipalOrgPaths` value covers every principal of this unit: the whole
    /// organization (`o-x/*`, `o-x/r-y/*`), or, for an OU, a path through the OU that ends at
    /// it or at `*` (`o-x/r-y/ou-p/ou-z/*`, `o-x/*/ou-z/*`).
    fn covered_by_path(&self, pattern: &str) -> bool {
        if pattern == "*" {
            return true;
        }
        let segs: Vec<&str> = pattern.split('/').collect();
        if segs.first() != Some(&self.org.as_str()) {
            return false;
        }
        let whole_org = match &segs[1..] {
            ["*"] => true,
            [root, "*"] => root.starts_with("r-") || *root == "*",
            _ => false,
        };
        if whole_org {
            return true;
        }
        let Some(ou) = &self.ou else { return false };
        segs.iter()
            .position(|s| s == ou)
            .is_some_and(|i| matches!(&segs[i + 1..], ["*"] | [""] | []))
    }
}

/// IAM's `*`/`?` wildcards (`StringLike`), case-sensitive.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether an Allow statement grants `unit`: a principal of everyone (`*`), limited by
/// `aws:PrincipalOrgID` naming the organization or by `aws:PrincipalOrgPaths` covering the unit
/// (with no condition at all it grants everyone, the unit too). Other conditions are taken as
/// met, as for accounts.
fn grants_unit(statement: &Value, unit: &OrgUnit) -> bool {
    let everyone = match &statement["Principal"] {
        Value::String(s) => s == "*",
        p => strings(&p["AWS"]).contains(&"*"),
    };
    if !everyone {
        return false;
    }
    let Some(conditions) = statement["Condition"].as_object() else {
        return true;
    };
    let mut limited = false;
    let mut covered = false;
    for (operator, keys) in conditions {
        let like = operator.to_ascii_lowercase().contains("like");
        let Some(keys) = keys.as_object() else {
            continue;
        };
        for (key, values) in keys {
            let values = strings(values);
            match key.to_ascii_lowercase().as_str() {
                "aws:principalorgid" => {
                    limited = true;
                    covered |= values.iter().any(|v| {
                        if like {
                            glob(v, &unit.org)
                        } else {
                            *v == unit.org
                        }
                    });
                }
                "aws:principalorgpaths" => {
                    limited = true;
                    covered |= values.iter().any(|v| unit.covered_by_path(v));
                }
                _ => {}
            }
        }
    }
    !limited || covered
}

/// The actions of `CONSUMER_ACTIONS` that `policy` does not allow the accounts of `unit` (an
/// organization or OU) as `missing_actions` does for an account: Allow statements for everyone
/// limited to the organization (`aws:PrincipalOrgID`) or to a path through the OU
/// (`aws:PrincipalOrgPaths`).
pub fn missing_actions_for_unit(policy: &str, unit: &OrgUnit) -> Result<Vec<&'static str>, String> {
    missing_where(policy, |s| grants_unit(s, unit))
}

/// The key policy statements that let the accounts of `units` use the key for shared EBS
/// snapshots: everyone, limited to the organizations by `aws:PrincipalOrgID` and to the OUs
/// (and the OUs under them) by `aws:PrincipalOrgPaths`.
pub fn unit_statements(units: &[OrgUnit]) -> Vec<String> {
    let orgs: Vec<&str> = units
        .iter()
        .filter(|u| u.ou.is_none())
        .map(|u| u.org.as_str())
        .collect();
    let paths: Vec<String> = units
        .iter()
        .filter(|u| u.ou.is_some())
        .map(OrgUnit::path_pattern)
        .collect();
    let mut statements = Vec::new();
    let mut add = |sid: &str, condition: Value| {
        statements.push(serde_json::json!({
            "Sid": sid,
            "Effect": "Allow",
            "Principal": { "AWS": "*" },
            "Action": STATEMENT_ACTIONS,
            "Resource": "*",
            "Condition": condition
        }))
    };
    if !orgs.is_empty() {
        add(
            "AllowUseOfTheKeyByImageConsumerOrganizations",
            serde_json::json!({ "StringEquals": { "aws:PrincipalOrgID": orgs } }),
        );
    }
    if !paths.is_empty() {
        add(
            "AllowUseOfTheKeyByImageConsumerOUs",
            serde_json::json!({ "ForAnyValue:StringLike": { "aws:PrincipalOrgPaths": paths } }),
        );
    }
    statements
        .iter()
        .map(|s| serde_json::to_string_pretty(s).unwrap_or_default())
        .collect()
}

/// The key policy statement that lets `accounts` use the key for shared EBS snapshots.
pub fn consumer_statement(accounts: &[String]) -> String {
    let principals: Vec<String> = accounts
        .iter()
        .map(|a| format!("arn:aws:iam::{a}:root"))
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "Sid": "AllowUseOfTheKeyByImageConsumers",
        "Effect": "Allow",
        "Principal": { "AWS": principals },
        "Action": STATEMENT_ACTIONS,
        "Resource": "*"
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER_ONLY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"}]}"#;

    #[test]
    fn a_policy_that_names_only_the_owner_misses_every_consumer_action() {
        assert_eq!(
            missing_actions(OWNER_ONLY, "111122223333").unwrap(),
            CONSUMER_ACTIONS.to_vec()
        );
        assert!(missing_actions(OWNER_ONLY, "123456789012")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_printed_statement_is_what_the_check_accepts() {
        let accounts = vec!["111122223333".to_string(), "444455556666".to_string()];
        let policy = format!(r#"{{"Statement":[{}]}}"#, consumer_statement(&accounts));
        for a in &accounts {
            assert_eq!(
                missing_actions(&policy, a).unwrap(),
                Vec::<&str>::new(),
                "{a}"
            );
        }
        assert_eq!(missing_actions(&policy, "999999999999").unwrap().len(), 6);
    }

    const ORG: &str = "arn:aws:organizations::123456789012:organization/o-abc123defg";
    const OU: &str = "arn:aws:organizations::123456789012:ou/o-abc123defg/ou-ab12-11111111";

    #[test]
    fn organization_and_ou_arns_parse() {
        let org = OrgUnit::parse(ORG).unwrap();
        assert_eq!(
            (org.org.as_str(), org.ou.as_deref()),
            ("o-abc123defg", None)
        );
        let ou = OrgUnit::parse(OU).unwrap();
        assert_eq!(ou.ou.as_deref(), Some("ou-ab12-11111111"));
        assert_eq!(
            OrgUnit::parse("arn:aws:organizations::1:account/o-x/1"),
            None
        );
        assert_eq!(OrgUnit::parse("o-abc"), None);
    }

    #[test]
    fn the_printed_unit_statement_is_what_the_check_accepts() {
        let (org, ou) = (OrgUnit::parse(ORG).unwrap(), OrgUnit::parse(OU).unwrap());
        assert_eq!(missing_actions_for_unit(OWNER_ONLY, &org).unwrap().len(), 6);
        assert_eq!(missing_actions_for_unit(OWNER_ONLY, &ou).unwrap().len(), 6);
        for units in [
            vec![org.clone()],
            vec![ou.clone()],
            vec![org.clone(), ou.clone()],
        ] {
            let policy = format!(r#"{{"Statement":[{}]}}"#, unit_statements(&units).join(","));
            for u in &units {
                assert!(
                    missing_actions_for_unit(&policy, u).unwrap().is_empty(),
                    "{u}: {policy}"
                );
            }
        }
        // The OU statement does not grant the whole organization, nor another OU.
        let policy = format!(
            r#"{{"Statement":[{}]}}"#,
            unit_statements(std::slice::from_ref(&ou)).join(",")
        );
        assert_eq!(missing_actions_for_unit(&policy, &org).unwrap().len(), 6);
        let other = OrgUnit {
            org: ou.org.clone(),
            ou: Some("ou-ab12-22222222".into()),
        };
        assert_eq!(missing_actions_for_unit(&policy, &other).unwrap().len(), 6);
        // The organization's statement covers its OUs, not another organization.
        let policy = format!(
            r#"{{"Statement":[{}]}}"#,
            unit_statements(std::slice::from_ref(&org)).join(",")
        );
        assert!(missing_actions_for_unit(&policy, &ou).unwrap().is_empty());
        let elsewhere = OrgUnit {
            org: "o-zzzzzzzzzz".into(),
            ou: None,
        };
        assert_eq!(
            missing_actions_for_unit(&policy, &elsewhere).unwrap().len(),
            6
        );
    }

    #[test]
    fn org_conditions_as_aws_documents_them() {
        let ou = OrgUnit::parse(OU).unwrap();
        let with = |cond: &str| {
            format!(
                r#"{{"Statement":[{{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{cond}}}]}}"#
            )
        };
        // The full path of the OU, as in AWS's examples, and its parents' paths.
        for cond in [
            r#"{"ForAnyValue:StringLike":{"aws:PrincipalOrgPaths":["o-abc123defg/r-ab12/ou-ab12-11111111/*"]}}"#,
            r#"{"ForAnyValue:StringEquals":{"aws:PrincipalOrgPaths":"o-abc123defg/r-ab12/ou-ab12-00000000/ou-ab12-11111111/"}}"#,
            r#"{"ForAnyValue:StringLike":{"aws:PrincipalOrgPaths":["o-abc123defg/r-ab12/*"]}}"#,
            r#"{"StringLike":{"aws:PrincipalOrgID":"o-abc*"}}"#,
            r#"{"StringEquals":{"aws:PrincipalOrgID":"o-abc123defg","aws:SourceVpc":"vpc-1"}}"#,
        ] {
            assert!(
                missing_actions_for_unit(&with(cond), &ou)
                    .unwrap()
                    .is_empty(),
                "{cond}"
            );
        }
        // Another OU's path, a child of it only, another organization.
        for cond in [
            r#"{"ForAnyValue:StringLike":{"aws:PrincipalOrgPaths":["o-abc123defg/r-ab12/ou-ab12-22222222/*"]}}"#,
            r#"{"ForAnyValue:StringLike":{"aws:PrincipalOrgPaths":["o-abc123defg/r-ab12/ou-ab12-11111111/ou-ab12-33333333/*"]}}"#,
            r#"{"StringEquals":{"aws:PrincipalOrgID":"o-zzzzzzzzzz"}}"#,
        ] {
            assert_eq!(
                missing_actions_for_unit(&with(cond), &ou).unwrap().len(),
                6,
                "{cond}"
            );
        }
        // A principal that is not everyone does not grant an OU.
        let p = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-abc123defg"}}}]}"#;
        assert_eq!(missing_actions_for_unit(p, &ou).unwrap().len(), 6);
        assert!(glob("o-*-x?z", "o-abc-xyz") && !glob("o-*-x?z", "o-abc-xz"));
    }

    #[test]
    fn patterns_principals_and_effects() {
        assert!(action_matches("kms:ReEncrypt*", "kms:ReEncryptFrom"));
        assert!(action_matches("KMS:*", "kms:Decrypt"));
        assert!(action_matches("*", "kms:Decrypt"));
        assert!(!action_matches("kms:Re*To", "kms:ReEncryptFrom"));
        assert!(!action_matches("kms:Decrypt", "kms:DescribeKey"));
        // A Deny never grants; a bare account id and "*" name the account.
        let p = r#"{"Statement":[{"Effect":"Deny","Principal":{"AWS":"111122223333"},"Action":"kms:*"},{"Effect":"Allow","Principal":{"AWS":["111122223333"]},"Action":["kms:Decrypt","kms:DescribeKey"]},{"Effect":"Allow","Principal":"*","Action":"kms:CreateGrant"}]}"#;
        assert_eq!(
            missing_actions(p, "111122223333").unwrap(),
            [
                "kms:ReEncryptFrom",
                "kms:ReEncryptTo",
                "kms:GenerateDataKeyWithoutPlaintext"
            ]
        );
        assert!(missing_actions("not json", "1").is_err());
    }
}
