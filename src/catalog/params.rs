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

/// Quotes `s` for the platform's shell (see the `sh` and `ps` template filters).
pub fn quote(platform: Platform, s: &str) -> String {
    match platform {
        Platform::Windows => crate::remote::powershell::ps_quote(s),
        Platform::Linux => crate::remote::sh_quote(s),
    }
}

/// The variable a secret parameter's value is in while a step runs.
fn secret_var(name: &str) -> String {
    format!("BAKERY_SECRET_{}", name.to_ascii_uppercase())
}

/// What a secret parameter renders as in a script: a reference to the variable the step's
/// prelude fills at run time (see `secret_fetch`), never the value.
pub fn secret_reference(platform: Platform, name: &str) -> String {
    match platform {
        Platform::Linux => format!("\"${{{}}}\"", secret_var(name)),
        Platform::Windows => format!("$env:{}", secret_var(name)),
    }
}

/// The statements that fetch secret parameter `name` into its variable before a step's script
/// runs, on the instance with its role. A lookup that fails stops the step with a message that
/// names the parameter and where it points (never a value): bash's `-e` does not see a failed
/// command substitution inside an argument, so the fetch is a statement of its own.
pub fn secret_fetch(platform: Platform, name: &str, r: &SecretRef) -> String {
    let var = secret_var(name);
    let (what, linux, windows) = match r {
        SecretRef::Ssm(n) => (
            format!("SSM parameter {n}"),
            format!(
                "aws ssm get-parameter --with-decryption --name {} --query Parameter.Value --output text",
                quote(Platform::Linux, n)
            ),
            format!(
                "(Get-SSMParameter -Name {} -WithDecryption $true).Value",
                quote(Platform::Windows, n)
            ),
        ),
        SecretRef::SecretsManager(id) => (
            format!("Secrets Manager secret {id}"),
            format!(
                "aws secretsmanager get-secret-value --secret-id {} --query SecretString --output text",
                quote(Platform::Linux, id)
            ),
            format!(
                "(Get-SECSecretValue -SecretId {}).SecretString",
                quote(Platform::Windows, id)
            ),
        ),
    };
    let failed = format!("bakery: cannot read secret parameter {name} ({what})");
    match platform {
        Platform::Linux => format!(
            "{var}=$({linux}) || {{ echo {} >&2; exit 97; }}\n\
if [ -z \"${{{var}}}\" ]; then echo {} >&2; exit 97; fi\n\
export {var}\n",
            quote(Platform::Linux, &failed),
            quote(Platform::Linux, &format!("bakery: secret parameter {name} ({what}) is empty")),
        ),
        Platform::Windows => format!(
            "try {{ $env:{var} = {windows} }} catch {{ throw ({} + ': ' + $_.Exception.Message) }}\n\
if (-not $env:{var}) {{ throw {} }}\n",
            quote(Platform::Windows, &failed),
            quote(Platform::Windows, &format!("bakery: secret parameter {name} ({what}) is empty")),
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
    fn secrets_are_fetched_by_statements_that_fail_loudly() {
        let r = SecretRef::Ssm("/a/it's".into());
        assert_eq!(
            secret_reference(Platform::Linux, "token"),
            "\"${BAKERY_SECRET_TOKEN}\""
        );
        assert_eq!(
            secret_reference(Platform::Windows, "token"),
            "$env:BAKERY_SECRET_TOKEN"
        );
        let linux = secret_fetch(Platform::Linux, "token", &r);
        assert!(
            linux.starts_with(r"BAKERY_SECRET_TOKEN=$(aws ssm get-parameter --with-decryption --name '/a/it'\''s' --query Parameter.Value --output text) || { echo 'bakery: cannot read secret parameter token (SSM parameter /a/it'\''s)' >&2; exit 97; }"),
            "{linux}"
        );
        assert!(linux.contains("export BAKERY_SECRET_TOKEN\n"), "{linux}");
        let windows = secret_fetch(Platform::Windows, "token", &r);
        assert!(
            windows.starts_with("try { $env:BAKERY_SECRET_TOKEN = (Get-SSMParameter -Name '/a/it''s' -WithDecryption $true).Value } catch { throw ('bakery: cannot read secret parameter token (SSM parameter /a/it''s)' + ': ' + $_.Exception.Message) }"),
            "{windows}"
        );
        assert!(
            windows.contains("if (-not $env:BAKERY_SECRET_TOKEN) { throw"),
            "{windows}"
        );
    }

    /// The fetch of a secret that cannot be read stops a `bash -euo pipefail` script before the
    /// rest runs, with the parameter's name on stderr, where a command substitution inside an
    /// argument would have gone on with an empty value.
    #[test]
    fn a_failed_lookup_stops_the_script() {
        let dir = tempfile::tempdir().expect("tempdir");
        // An `aws` that fails, as it does for a missing parameter or a denied role.
        std::fs::write(
            dir.path().join("aws"),
            "#!/bin/sh\necho 'An error occurred (ParameterNotFound)' >&2\nexit 254\n",
        )
        .expect("write");
        std::fs::set_permissions(
            dir.path().join("aws"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let r = SecretRef::Ssm("/demo/token".into());
        let script = format!(
            "{}echo \"got [{}]\"\n",
            secret_fetch(Platform::Linux, "token", &r),
            secret_reference(Platform::Linux, "token")
        );
        let out = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .output()
            .expect("bash");
        assert_eq!(out.status.code(), Some(97));
        assert!(out.stdout.is_empty(), "the script went on");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("bakery: cannot read secret parameter token (SSM parameter /demo/token)"),
            "{err}"
        );
    }
}
