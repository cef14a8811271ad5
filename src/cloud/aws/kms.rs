//! KMS: only what the sharing preflight needs. An image shared with other accounts has its
//! snapshots encrypted with a customer managed key that those accounts must be able to use;
//! bakery reads the key (DescribeKey) and its key policy (GetKeyPolicy) before launch and names
//! the statement that is missing, instead of the consumer finding out when a launch fails.

use serde_json::Value;

use super::Aws;
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
    let doc: Value =
        serde_json::from_str(policy).map_err(|e| format!("the key policy is not JSON: {e}"))?;
    let statements: Vec<&Value> = match &doc["Statement"] {
        Value::Array(a) => a.iter().collect(),
        s @ Value::Object(_) => vec![s],
        _ => Vec::new(),
    };
    let allowed: Vec<&str> = statements
        .iter()
        .filter(|s| s["Effect"] == "Allow" && names_account(s, account))
        .flat_map(|s| strings(&s["Action"]))
        .collect();
    Ok(CONSUMER_ACTIONS
        .iter()
        .copied()
        .filter(|a| !allowed.iter().any(|p| action_matches(p, a)))
        .collect())
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
        "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant", "kms:ReEncrypt*", "kms:GenerateDataKey*"],
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
