//! docs/security.md cites its proofs as `tests/FILE.rs::function` or
//! `src/FILE.rs::function`. This test owns keeping those citations true: every cited file
//! exists, holds `fn function`, and that function is a test (a `#[test]` or
//! `#[tokio::test]` attribute above it); every file named on its own exists; and each
//! threat section cites at least one proof.

use std::path::Path;

const DOC: &str = include_str!("../docs/security.md");

/// A citation: the file and, if given, the function.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Citation {
    file: String,
    function: Option<String>,
}

/// Every `` `tests/….rs` `` or `` `src/….rs` ``, with an optional `::function`, in
/// backquotes.
fn citations(doc: &str) -> Vec<Citation> {
    let mut out = Vec::new();
    for (i, span) in doc.split('`').enumerate() {
        // Odd pieces are inside backquotes.
        if i % 2 == 0 || !(span.starts_with("tests/") || span.starts_with("src/")) {
            continue;
        }
        let (file, function) = match span.split_once("::") {
            Some((f, n)) => (f, Some(n.to_string())),
            None => (span, None),
        };
        if !file.ends_with(".rs") {
            continue;
        }
        out.push(Citation {
            file: file.to_string(),
            function,
        });
    }
    out
}

/// Why a citation is false, if it is.
fn check(root: &Path, c: &Citation) -> Result<(), String> {
    let path = root.join(&c.file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", c.file))?;
    let Some(name) = &c.function else {
        return Ok(());
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    {
        return Err(format!("{}::{name}: not a function name", c.file));
    }
    let lines: Vec<&str> = text.lines().collect();
    let defined = lines.iter().position(|l| {
        let l = l.trim_start();
        let l = l.strip_prefix("pub ").unwrap_or(l);
        let l = l.strip_prefix("async ").unwrap_or(l);
        l.strip_prefix("fn ")
            .and_then(|r| r.strip_prefix(name.as_str()))
            .is_some_and(|r| r.starts_with('(') || r.starts_with('<'))
    });
    let Some(at) = defined else {
        return Err(format!("{} has no `fn {name}`", c.file));
    };
    // Walk up over attributes and comments: one attribute must make it a test.
    let is_test = lines[..at]
        .iter()
        .rev()
        .map(|l| l.trim())
        .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
        .any(|l| l.starts_with("#[") && l.contains("test"));
    if !is_test {
        return Err(format!("{}::{name} is not a test", c.file));
    }
    Ok(())
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_cited_test_exists_and_is_a_test() {
    let cited = citations(DOC);
    let with_function = cited.iter().filter(|c| c.function.is_some()).count();
    assert!(
        with_function >= 60,
        "only {with_function} citations found: is the parser still reading the page?"
    );
    let errors: Vec<String> = cited
        .iter()
        .filter_map(|c| check(root(), c).err())
        .collect();
    assert!(
        errors.is_empty(),
        "docs/security.md cites what is not there:\n{}",
        errors.join("\n")
    );
}

#[test]
fn every_threat_cites_proofs() {
    let threats: Vec<&str> = DOC
        .split("\n## ")
        .filter(|s| s.starts_with("Threat ("))
        .collect();
    assert_eq!(threats.len(), 4, "four threats: (a) to (d)");
    for t in threats {
        let title = t.lines().next().unwrap_or("");
        let n = citations(t).iter().filter(|c| c.function.is_some()).count();
        assert!(n >= 5, "{title}: only {n} proofs cited");
    }
    let rules = DOC
        .split("\n## ")
        .find(|s| s.starts_with("The rules for secrets"))
        .expect("the rules section");
    for row in rules.lines().filter(|l| l.starts_with("| **")) {
        assert!(
            citations(row).iter().any(|c| c.function.is_some()),
            "a rule without a proof: {row}"
        );
    }
}

#[test]
fn the_checker_refuses_false_citations() {
    // Positive controls: a real test passes; a missing file, a missing function and a
    // helper that is not a test are each refused.
    let ok = |s: &str| {
        citations(&format!("`{s}`"))
            .iter()
            .map(|c| check(root(), c))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ok("tests/reaping.rs::escapees_die_with_a_successful_attempt"),
        vec![Ok(())]
    );
    assert_eq!(
        ok("src/agent/policy.rs::each_rule_refuses"),
        vec![Ok(())],
        "a unit test in src/"
    );
    assert!(ok("tests/no_such_file.rs::x")[0].is_err());
    assert!(ok("tests/reaping.rs::no_such_test")[0].is_err());
    assert!(
        ok("tests/reaping.rs::escapees_die")[0].is_err(),
        "a prefix is not the name"
    );
    assert!(
        ok("tests/ssh_hostile.rs::assert_connect_error")[0]
            .as_ref()
            .unwrap_err()
            .contains("not a test"),
        "a helper is not a proof"
    );
}
