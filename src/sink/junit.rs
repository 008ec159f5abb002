//! JUnit XML for CI systems: one test case per detector kind and per rule; a case fails
//! when its finding or alert fired during the run, with the evidence as the message.

use std::io::Write;

use crate::model::{Finding, FindingKind, Severity};

/// A fired rule, as the report keeps it.
#[derive(Debug, Clone)]
pub struct FiredRule {
    pub rule: String,
    pub severity: Severity,
    pub message: String,
}

/// One test case: its name, its failure (message, body) if it failed, and notes.
struct Case {
    name: String,
    failure: Option<(String, String)>,
    notes: Vec<String>,
}

/// The detector kinds reported as test cases.
pub const DETECTOR_KINDS: &[FindingKind] = &[
    FindingKind::Deadlock,
    FindingKind::NoProgress,
    FindingKind::ForkInheritedLock,
    FindingKind::DistributedHang,
    FindingKind::Straggler,
    FindingKind::Oversubscription,
    FindingKind::ThreadExplosion,
    FindingKind::MemoryPressure,
    FindingKind::StallPendingWork,
    FindingKind::GpuShared,
    FindingKind::GpuIdleHeld,
    FindingKind::DuplicateRuntimes,
    FindingKind::PoolSizedFromHost,
    FindingKind::PoolOversubscription,
];

/// Escapes text for XML attribute values and character data.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab and newline are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Writes the JUnit document. `fail_at` is the severity from which a case fails; lower
/// ones are reported in `system-out` of a passing case.
pub fn write_junit(
    out: &mut impl Write,
    command: &str,
    wall_seconds: f64,
    findings: &[Finding],
    rules: &[String],
    fired: &[FiredRule],
    fail_at: Option<Severity>,
) -> std::io::Result<()> {
    let fails = |s: Severity| fail_at.is_some_and(|f| s >= f);
    let mut cases: Vec<Case> = Vec::new();
    for kind in DETECTOR_KINDS {
        let hits: Vec<&Finding> = findings.iter().filter(|f| f.kind == *kind).collect();
        let failing: Vec<&&Finding> = hits.iter().filter(|f| fails(f.severity)).collect();
        let notes: Vec<String> = hits
            .iter()
            .map(|f| format!("[{}] {}", f.severity, f.summary))
            .collect();
        let failure = failing.first().map(|f| {
            let mut body = vec![f.summary.clone()];
            body.extend(f.evidence.iter().map(|e| format!("- {e}")));
            body.push(format!("remedy: {}", f.remedy));
            (format!("[{}] {}", f.severity, f.summary), body.join("\n"))
        });
        cases.push(Case {
            name: format!("detector {kind}"),
            failure,
            notes,
        });
    }
    for rule in rules {
        let hits: Vec<&FiredRule> = fired.iter().filter(|f| &f.rule == rule).collect();
        let failure = hits
            .iter()
            .find(|f| fails(f.severity))
            .map(|f| (format!("[{}] {}", f.severity, f.message), f.message.clone()));
        let notes = hits
            .iter()
            .map(|f| format!("[{}] {}", f.severity, f.message))
            .collect();
        cases.push(Case {
            name: format!("rule {rule}"),
            failure,
            notes,
        });
    }
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        out,
        r#"<testsuites name="tfwatch" tests="{}" failures="{failures}" errors="0" time="{wall_seconds:.3}">"#,
        cases.len()
    )?;
    writeln!(
        out,
        r#"  <testsuite name="tfwatch: {}" tests="{}" failures="{failures}" errors="0" skipped="0" time="{wall_seconds:.3}">"#,
        escape(command),
        cases.len()
    )?;
    for Case {
        name,
        failure,
        notes,
    } in &cases
    {
        write!(
            out,
            r#"    <testcase classname="tfwatch" name="{}" time="0">"#,
            escape(name)
        )?;
        if let Some((message, body)) = failure {
            write!(
                out,
                r#"<failure message="{}" type="tfwatch">{}</failure>"#,
                escape(message),
                escape(body)
            )?;
        }
        if !notes.is_empty() {
            write!(
                out,
                "<system-out>{}</system-out>",
                escape(&notes.join("\n"))
            )?;
        }
        writeln!(out, "</testcase>")?;
    }
    writeln!(out, "  </testsuite>")?;
    writeln!(out, "</testsuites>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_control_characters() {
        assert_eq!(escape(r#"a<b>&"c"'"#), "a&lt;b&gt;&amp;&quot;c&quot;&apos;");
        assert_eq!(escape("x\u{1}y\nz"), "xy\nz");
    }

    #[test]
    fn a_fired_detector_fails_its_case() {
        let mut finding = Finding::new(
            FindingKind::ThreadExplosion,
            Severity::Warning,
            "300 threads",
        );
        finding.evidence.push("by name: 300 `worker`".into());
        let mut out = Vec::new();
        write_junit(
            &mut out,
            "job --x",
            2.5,
            &[finding],
            &["too-many-threads".to_string()],
            &[FiredRule {
                rule: "too-many-threads".into(),
                severity: Severity::Warning,
                message: "300 threads > 50".into(),
            }],
            Some(Severity::Warning),
        )
        .unwrap();
        let xml = String::from_utf8(out).unwrap();
        assert!(xml.contains(r#"failures="2""#), "{xml}");
        assert!(xml.contains("detector thread-explosion"));
    }
}
