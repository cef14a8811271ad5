//! Small value syntaxes of the formats (durations, AWS identifiers, versions), as pure functions
//! that say what is wrong in a sentence a user can act on.

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

use super::model::{MajorMinor, ParentReq};

fn re(s: &str) -> Regex {
    Regex::new(s).expect("static regex")
}

// EC2 instance type names: family (letters, a generation digit, attribute letters, optional
// dashes as in `u-6tb1`), a dot, then a size (`large`, `2xlarge`, `metal`, `metal-24xl`, ...).
static INSTANCE_TYPE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^[a-z][a-z0-9-]*[0-9][a-z0-9-]*\.(nano|micro|small|medium|large|[0-9]*xlarge|metal|metal-[0-9]+xl)$",
    )
});
// AWS region codes: partition-ish prefix, optional gov/iso marker, direction, number.
static REGION: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^[a-z]{2}(-gov|-iso|-isob|-isoe|-isof)?-(north|south|east|west|central|northeast|northwest|southeast|southwest)-[0-9]{1,2}$",
    )
});
// ami- then 8 or 17 hex digits (old and new id formats).
static AMI_ID: LazyLock<Regex> = LazyLock::new(|| re(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$"));
static IMAGE_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"));
static CHANNEL: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z][a-z0-9-]*$"));
// SSM parameter names: a-zA-Z0-9_.-/ (AWS PutParameter docs), fully qualified here.
static SSM_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^/[A-Za-z0-9_.\-/]+$"));
static SHA256: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9a-fA-F]{64}$"));
static ACCOUNT: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9]{12}$"));

/// No duration in the formats needs more than ten years (deprecation dates included).
const MAX_DURATION_SECS: u64 = 10 * 366 * 86_400;

/// `90s`, `20m`, `2h`, `365d`: a timeout, so never zero.
pub fn duration(s: &str) -> Result<Duration, String> {
    match duration_or_zero(s)? {
        d if d.is_zero() => Err(format!("`{s}` is zero; a timeout must be positive")),
        d => Ok(d),
    }
}

/// A duration that may be zero (`0s`: a grace period or an age limit of none).
pub fn duration_or_zero(s: &str) -> Result<Duration, String> {
    let hint = "write a number and a unit: 90s, 20m, 2h or 365d";
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; {hint}"))?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}` is not a duration; {hint}")),
    };
    let secs = n.checked_mul(unit_secs).filter(|s| *s <= MAX_DURATION_SECS);
    let Some(secs) = secs else {
        return Err(format!("`{s}` is longer than ten years"));
    };
    Ok(Duration::from_secs(secs))
}

pub fn instance_type(s: &str) -> Result<(), String> {
    if INSTANCE_TYPE.is_match(s) {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not an EC2 instance type; they look like `m6i.large` or `t3.2xlarge`"
        ))
    }
}

pub fn region(s: &str) -> Result<(), String> {
    if REGION.is_match(s) {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not an AWS region; they look like `eu-west-1` or `us-east-2`"
        ))
    }
}

pub fn ami_id(s: &str) -> Result<(), String> {
    if AMI_ID.is_match(s) {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not an AMI id; they look like `ami-0123456789abcdef0`"
        ))
    }
}

/// A name templates read as `params.<name>` / `inputs.<name>`: lowercase letters, digits and
/// `_`, starting with a letter (or `_` when `underscore_first`).
pub fn snake_name(s: &str, underscore_first: bool) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase() || (underscore_first && c == '_'))
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

pub fn image_name(s: &str) -> Result<(), String> {
    if IMAGE_NAME.is_match(s) && s.len() <= 64 {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a valid name; use lowercase letters, digits and single dashes (at most 64)"
        ))
    }
}

pub fn channel(s: &str) -> Result<(), String> {
    if CHANNEL.is_match(s) && s != "latest" {
        Ok(())
    } else if s == "latest" {
        Err("`latest` is not a channel; it always means the newest version".into())
    } else {
        Err(format!(
            "`{s}` is not a channel name; use lowercase letters, digits and dashes"
        ))
    }
}

pub fn ssm_parameter(s: &str) -> Result<(), String> {
    if SSM_NAME.is_match(s) && !s.contains("//") && !s.ends_with('/') {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a fully qualified SSM parameter name such as `/aws/service/...`"
        ))
    }
}

pub fn sha256(s: &str) -> Result<(), String> {
    if SHA256.is_match(s) {
        Ok(())
    } else {
        Err(format!("`{s}` is not a sha256: expected 64 hex digits"))
    }
}

pub fn account_id(s: &str) -> Result<(), String> {
    if ACCOUNT.is_match(s) {
        Ok(())
    } else {
        Err(format!("`{s}` is not an AWS account id (12 digits)"))
    }
}

/// A Unix mode written as an octal string: `"0644"`, `"755"`.
pub fn file_mode(s: &str) -> Result<u32, String> {
    let ok = (3..=4).contains(&s.len()) && s.chars().all(|c| ('0'..='7').contains(&c));
    match ok {
        true => u32::from_str_radix(s, 8).map_err(|e| e.to_string()),
        false => Err(format!(
            "`{s}` is not a file mode; write it in octal as a string, like \"0644\""
        )),
    }
}

/// `major.minor`, e.g. `1.4`.
pub fn major_minor(s: &str) -> Result<MajorMinor, String> {
    let err = || format!("`{s}` is not `major.minor` (e.g. \"1.4\"); bakery assigns the patch");
    let (a, b) = s.split_once('.').ok_or_else(err)?;
    let num = |x: &str| -> Result<u64, String> {
        if x.is_empty() || (x.len() > 1 && x.starts_with('0')) {
            return Err(err());
        }
        x.parse().map_err(|_| err())
    };
    Ok(MajorMinor {
        major: num(a)?,
        minor: num(b)?,
    })
}

/// The part after `@` of `image = "name@req"`: a semver requirement or a channel (`latest`
/// included). Anything that starts like a version (a digit or an operator) must be valid semver.
pub fn parent_req(s: &str) -> Result<ParentReq, String> {
    let looks_semver = s.starts_with(|c: char| c.is_ascii_digit() || "^~=<>*".contains(c));
    if looks_semver {
        return semver::VersionReq::parse(s)
            .map(ParentReq::Semver)
            .map_err(|e| format!("`{s}` is not a valid semver requirement: {e}"));
    }
    if s == "latest" || CHANNEL.is_match(s) {
        return Ok(ParentReq::Channel(s.to_string()));
    }
    Err(format!(
        "`{s}` is neither a semver requirement (`^1.4`, `~2.0.3`, `=1.2.3`) nor a channel name"
    ))
}

/// An SSM prefix: starts with `/`, no trailing `/`, not under AWS's reserved `/aws`.
pub fn ssm_prefix(s: &str) -> Result<(), String> {
    if !s.starts_with('/') || s.ends_with('/') || s.len() < 2 {
        return Err(format!(
            "`{s}` must start with `/` and not end with `/`, like `/bakery`"
        ));
    }
    if s == "/aws" || s.starts_with("/aws/") || s.to_ascii_lowercase().starts_with("/ssm") {
        return Err(format!(
            "`{s}` is under a prefix AWS reserves (`/aws`, `/ssm`)"
        ));
    }
    ssm_parameter(s)
}

/// An IPv4 CIDR other than the whole internet.
pub fn ingress_cidr(s: &str) -> Result<(), String> {
    let err = || format!("`{s}` is not an IPv4 CIDR like `10.0.0.0/8`");
    let (ip, bits) = s.split_once('/').ok_or_else(err)?;
    ip.parse::<std::net::Ipv4Addr>().map_err(|_| err())?;
    let bits: u8 = bits.parse().map_err(|_| err())?;
    if bits > 32 {
        return Err(err());
    }
    if bits == 0 {
        return Err(
            "an ingress CIDR of /0 opens the build instance to the internet; name a narrower one"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, secs) in [
            ("90s", 90),
            ("20m", 1200),
            ("2h", 7200),
            ("365d", 31_536_000),
        ] {
            assert_eq!(duration(s).unwrap().as_secs(), secs, "{s}");
        }
        for bad in [
            "",
            "m",
            "10",
            "10x",
            "1.5h",
            "-3m",
            "0s",
            "3 m",
            "999999999999999999d",
            "18446744073709551615s",
            "4000d",
        ] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aws_identifiers() {
        for ok in [
            "m6i.large",
            "t3.micro",
            "c7g.16xlarge",
            "u-6tb1.metal",
            "m7i.metal-24xl",
            "t3.xlarge",
        ] {
            assert!(instance_type(ok).is_ok(), "{ok}");
        }
        for bad in [
            "m6i",
            "large",
            "M5.large",
            "m5.huge",
            "m5..large",
            "t.micro",
        ] {
            assert!(instance_type(bad).is_err(), "{bad}");
        }
        for ok in [
            "eu-west-1",
            "us-east-2",
            "ap-southeast-5",
            "us-gov-west-1",
            "il-central-1",
        ] {
            assert!(region(ok).is_ok(), "{ok}");
        }
        for bad in [
            "eu-west",
            "euwest1",
            "EU-WEST-1",
            "eu-middle-1",
            "us-east-1a",
        ] {
            assert!(region(bad).is_err(), "{bad}");
        }
        assert!(ami_id("ami-0123456789abcdef0").is_ok());
        assert!(ami_id("ami-12345678").is_ok());
        assert!(ami_id("ami-xyz").is_err());
        assert!(account_id("111122223333").is_ok());
        assert!(account_id("11112222333").is_err());
    }

    #[test]
    fn versions_and_requirements() {
        assert_eq!(
            major_minor("1.4").unwrap(),
            MajorMinor { major: 1, minor: 4 }
        );
        for bad in ["1", "1.4.2", "v1.4", "01.4", "1.", ".4", "a.b"] {
            assert!(major_minor(bad).is_err(), "{bad}");
        }
        assert!(matches!(parent_req("^2").unwrap(), ParentReq::Semver(_)));
        assert!(matches!(
            parent_req("~1.4.2").unwrap(),
            ParentReq::Semver(_)
        ));
        assert_eq!(
            parent_req("candidate").unwrap(),
            ParentReq::Channel("candidate".into())
        );
        assert_eq!(
            parent_req("latest").unwrap(),
            ParentReq::Channel("latest".into())
        );
        for bad in ["^1.x.y.z", ">>1", "=1.2.3.4", "Stable", ""] {
            assert!(parent_req(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn modes_prefixes_cidrs() {
        assert_eq!(file_mode("0755").unwrap(), 0o755);
        assert_eq!(file_mode("644").unwrap(), 0o644);
        assert!(file_mode("0999").is_err());
        assert!(file_mode("rwx").is_err());
        assert!(ssm_prefix("/bakery").is_ok());
        for bad in ["bakery", "/bakery/", "/aws/x", "/", "/ssm-x"] {
            assert!(ssm_prefix(bad).is_err(), "{bad}");
        }
        assert!(ingress_cidr("10.0.0.0/8").is_ok());
        assert!(ingress_cidr("0.0.0.0/0").is_err());
        assert!(ingress_cidr("10.0.0.0/33").is_err());
        assert!(ingress_cidr("10.0.0/8").is_err());
        assert!(sha256(&"a".repeat(64)).is_ok());
        assert!(sha256("abc").is_err());
        assert!(channel("candidate").is_ok());
        assert!(channel("latest").is_err());
        assert!(image_name("teamcity-agent-windows").is_ok());
        assert!(image_name("Teamcity").is_err());
        assert!(image_name("a--b").is_err());
    }
}
