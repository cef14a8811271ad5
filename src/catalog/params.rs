//! Recipe parameters: typing values from TOML, secret references, and the template context.

use toml::Value;

use super::diag::ErrorKind;
use super::model::{ParamType, ParamValue, Platform, SecretRef};

/// Why a value does not fit a parameter type.
#[derive(Debug, PartialEq)]
pub struct ParamError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

const SECRET_HINT: &str =
    "write a reference: { ssm = \"/path/to/parameter\" } or { secretsmanager = \"secret-id\" }";

pub fn typed(t: ParamType, v: &Value) -> Result<ParamValue, ParamError> {
    let wrong = |what: &str| ParamError {
        kind: ErrorKind::ParamType,
        message: format!("expected {} ({}), found {what}", t.as_str(), article(t)),
        hint: None,
    };
    match (t, v) {
        (ParamType::String, Value::String(s)) => Ok(ParamValue::String(s.clone())),
        (ParamType::Int, Value::Integer(i)) => Ok(ParamValue::Int(*i)),
        (ParamType::Bool, Value::Boolean(b)) => Ok(ParamValue::Bool(*b)),
        (ParamType::List, Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                other => Err(wrong(&format!("a list holding {}", type_name(other)))),
            })
            .collect::<Result<_, _>>()
            .map(ParamValue::List),
        (ParamType::Secret, Value::String(_)) => Err(ParamError {
            kind: ErrorKind::SecretLiteral,
            message: "a literal where a secret reference is required".into(),
            hint: Some(SECRET_HINT.into()),
        }),
        (ParamType::Secret, Value::Table(t)) => secret_ref(t),
        (_, other) => Err(wrong(type_name(other))),
    }
}

fn secret_ref(t: &toml::Table) -> Result<ParamValue, ParamError> {
    let bad = || ParamError {
        kind: ErrorKind::ParamType,
        message: "not a secret reference".into(),
        hint: Some(SECRET_HINT.into()),
    };
    if t.len() != 1 {
        return Err(bad());
    }
    let (k, v) = t.iter().next().ok_or_else(bad)?;
    let Value::String(s) = v else {
        return Err(bad());
    };
    if s.is_empty() {
        return Err(bad());
    }
    match k.as_str() {
        "ssm" if super::values::ssm_parameter(s).is_ok() => {
            Ok(ParamValue::Secret(SecretRef::Ssm(s.clone())))
        }
        // Never echo the value: a misplaced secret may be what was written here.
        "ssm" => Err(ParamError {
            kind: ErrorKind::InvalidValue,
            message: "not a fully qualified SSM parameter name".into(),
            hint: Some(
                "SSM parameter names start with `/` and use letters, digits and _.-/".into(),
            ),
        }),
        "secretsmanager" => Ok(ParamValue::Secret(SecretRef::SecretsManager(s.clone()))),
        _ => Err(bad()),
    }
}

fn article(t: ParamType) -> &'static str {
    match t {
        ParamType::String => "a quoted string",
        ParamType::Int => "a whole number",
        ParamType::Bool => "true or false",
        ParamType::List => "a list of strings",
        ParamType::Secret => "a secret reference",
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}

/// Quotes `s` for the platform's shell (single quotes, doubled or escaped inside).
pub fn quote(platform: Platform, s: &str) -> String {
    match platform {
        Platform::Windows => format!("'{}'", s.replace('\'', "''")),
        Platform::Linux => format!("'{}'", s.replace('\'', r"'\''")),
    }
}

/// The run-time lookup a secret renders as: a command substitution on the instance, never the
/// value itself.
pub fn secret_lookup(platform: Platform, r: &SecretRef) -> String {
    match (platform, r) {
        (Platform::Linux, SecretRef::Ssm(n)) => format!(
            "$(aws ssm get-parameter --with-decryption --name {} --query Parameter.Value --output text)",
            quote(platform, n)
        ),
        (Platform::Linux, SecretRef::SecretsManager(id)) => format!(
            "$(aws secretsmanager get-secret-value --secret-id {} --query SecretString --output text)",
            quote(platform, id)
        ),
        (Platform::Windows, SecretRef::Ssm(n)) => format!(
            "$((Get-SSMParameter -Name {} -WithDecryption $true).Value)",
            quote(platform, n)
        ),
        (Platform::Windows, SecretRef::SecretsManager(id)) => format!(
            "$((Get-SECSecretValue -SecretId {}).SecretString)",
            quote(platform, id)
        ),
    }
}

/// The per-bake working directory as a run-time reference (the runner sets the variable).
pub fn workdir_ref(platform: Platform) -> &'static str {
    match platform {
        Platform::Linux => "$BAKERY_WORKDIR",
        Platform::Windows => "$env:BAKERY_WORKDIR",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        toml::from_str::<toml::Table>(&format!("x = {s}")).unwrap()["x"].clone()
    }

    #[test]
    fn values_are_typed() {
        let cases: &[(ParamType, &str, Option<ErrorKind>)] = &[
            (ParamType::String, "\"a\"", None),
            (ParamType::String, "1", Some(ErrorKind::ParamType)),
            (ParamType::Int, "3", None),
            (ParamType::Int, "\"3\"", Some(ErrorKind::ParamType)),
            (ParamType::Bool, "true", None),
            (ParamType::Bool, "1", Some(ErrorKind::ParamType)),
            (ParamType::List, "[\"a\", \"b\"]", None),
            (ParamType::List, "[\"a\", 2]", Some(ErrorKind::ParamType)),
            (ParamType::Secret, "{ ssm = \"/a/b\" }", None),
            (ParamType::Secret, "{ secretsmanager = \"a/b\" }", None),
            (
                ParamType::Secret,
                "\"hunter2\"",
                Some(ErrorKind::SecretLiteral),
            ),
            (
                ParamType::Secret,
                "{ ssm = \"a\" }",
                Some(ErrorKind::InvalidValue),
            ),
            (
                ParamType::Secret,
                "{ vault = \"a\" }",
                Some(ErrorKind::ParamType),
            ),
            (
                ParamType::Secret,
                "{ ssm = \"/a\", secretsmanager = \"b\" }",
                Some(ErrorKind::ParamType),
            ),
        ];
        for (t, src, want) in cases {
            let got = typed(*t, &v(src)).err().map(|e| e.kind);
            assert_eq!(got, *want, "{t:?} {src}");
        }
    }

    #[test]
    fn secret_errors_never_echo_the_literal() {
        let e = typed(ParamType::Secret, &v("\"hunter2\"")).unwrap_err();
        assert!(!e.message.contains("hunter2"));
        assert!(!e.hint.unwrap().contains("hunter2"));
    }

    #[test]
    fn lookups_quote_names() {
        let r = SecretRef::Ssm("/a/it's".into());
        assert_eq!(
            secret_lookup(Platform::Linux, &r),
            r"$(aws ssm get-parameter --with-decryption --name '/a/it'\''s' --query Parameter.Value --output text)"
        );
        assert_eq!(
            secret_lookup(Platform::Windows, &r),
            "$((Get-SSMParameter -Name '/a/it''s' -WithDecryption $true).Value)"
        );
    }
}
