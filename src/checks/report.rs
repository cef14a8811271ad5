//! Check results as a table, JSON and JUnit XML.

use std::time::Duration;

use serde::Serialize;

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    /// `recipe <name>` or `image`.
    pub origin: String,
    pub kind: String,
    pub passed: bool,
    pub detail: String,
    #[serde(with = "secs")]
    pub duration: Duration,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// A fixed-width table for terminals and logs.
pub fn table(results: &[CheckResult]) -> String {
    let w = results
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 60);
    let mut out = format!("{:<6} {:<w$} {:<24} DETAIL\n", "RESULT", "CHECK", "FROM");
    for r in results {
        let name: String = r.name.chars().take(w).collect();
        out.push_str(&format!(
            "{:<6} {:<w$} {:<24} {}\n",
            if r.passed { "pass" } else { "FAIL" },
            name,
            r.origin,
            r.detail
        ));
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    out.push_str(&format!(
        "{} checks, {} passed, {failed} failed\n",
        results.len(),
        results.len() - failed
    ));
    out
}

fn xml(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// JUnit XML: one testsuite per image, one testcase per check.
pub fn junit(image: &str, results: &[CheckResult]) -> String {
    let failures = |rs: &[&CheckResult]| rs.iter().filter(|r| !r.passed).count();
    let time = |rs: &[&CheckResult]| rs.iter().map(|r| r.duration.as_secs_f64()).sum::<f64>();
    let all: Vec<&CheckResult> = results.iter().collect();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" time=\"{:.3}\">\n",
        xml(image),
        all.len(),
        failures(&all),
        time(&all)
    ));
    // Two suites: the build instance's checks (verify) and the fresh instance's (test).
    let (test, verify): (Vec<&CheckResult>, Vec<&CheckResult>) =
        results.iter().partition(|r| is_test(&r.origin));
    for (group, rs) in [("verify", verify), ("test", test)] {
        if rs.is_empty() && group == "test" {
            continue;
        }
        out.push_str(&format!(
            "<testsuite name=\"{} {group}\" tests=\"{}\" failures=\"{}\" errors=\"0\" time=\"{:.3}\">\n",
            xml(image),
            rs.len(),
            failures(&rs),
            time(&rs)
        ));
        for r in rs {
            out.push_str(&format!(
                "  <testcase classname=\"{}.{}\" name=\"{}\" time=\"{:.3}\">",
                xml(image),
                xml(&r.origin.replace(", ", ".").replace(' ', "-")),
                xml(&r.name),
                r.duration.as_secs_f64()
            ));
            if !r.passed {
                out.push_str(&format!(
                    "<failure message=\"{}\">{}</failure>",
                    xml(&r.detail),
                    xml(&r.detail)
                ));
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("</testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// A check of the test phase (on a fresh instance), by its origin (`test`, `test, recipe x`),
/// as opposed to one of verify (on the build instance).
pub fn is_test(origin: &str) -> bool {
    origin == "test" || origin.starts_with("test,")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_escapes_and_counts() {
        let r = vec![
            CheckResult {
                name: "a<b".into(),
                origin: "recipe x".into(),
                kind: "command".into(),
                passed: true,
                detail: "ok".into(),
                duration: Duration::from_millis(5),
            },
            CheckResult {
                name: "c".into(),
                origin: "image".into(),
                kind: "file".into(),
                passed: false,
                detail: "missing \"x\" & y".into(),
                duration: Duration::ZERO,
            },
        ];
        let x = junit("img", &r);
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert!(
            !x.contains("img test"),
            "no test suite without test checks: {x}"
        );
        let mut with_test = r.clone();
        with_test.push(CheckResult {
            name: "fresh".into(),
            origin: "test, recipe x".into(),
            kind: "service".into(),
            passed: true,
            detail: "running".into(),
            duration: Duration::ZERO,
        });
        let x = junit("img", &with_test);
        assert!(
            x.contains("<testsuites name=\"img\" tests=\"3\" failures=\"1\""),
            "{x}"
        );
        assert!(
            x.contains("<testsuite name=\"img verify\" tests=\"2\" failures=\"1\""),
            "{x}"
        );
        assert!(
            x.contains("<testsuite name=\"img test\" tests=\"1\" failures=\"0\""),
            "{x}"
        );
        assert!(
            x.contains("classname=\"img.test.recipe-x\" name=\"fresh\""),
            "{x}"
        );
        assert!(x.contains("name=\"a&lt;b\""), "{x}");
        assert!(
            x.contains("<failure message=\"missing &quot;x&quot; &amp; y\">"),
            "{x}"
        );
        let t = table(&r);
        assert!(
            t.contains("FAIL") && t.contains("2 checks, 1 passed, 1 failed"),
            "{t}"
        );
    }
}
