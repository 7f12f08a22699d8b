//! Parsing, error reporting and per-context rendering of templates, checked by running the
//! rendered scripts with `/bin/bash`.

use std::path::Path;
use std::process::{Command, Stdio};

use csm_agent::error::{ErrorKind, Kind};
use csm_agent::secret::{secret_bytes, Variables};
use csm_agent::template::{Template, TemplateDocument, TemplateError};

/// A value that breaks naive substitution in every way we know: quotes, expansions,
/// command substitutions that would leave marker files, globs, a leading `-`, escapes,
/// newlines (also trailing), `&` (bash 5.2 pattern replacement), UTF-8 and invalid UTF-8.
const NASTY: &[u8] = b"-n 'q' \"dq\" $(touch pwned1) `touch pwned2` ; touch pwned3 & * ? [a] \
    ${HOME} $HOME \\ \\n \\' \n\ttab \xc3\xa9 \xff\xfe )}] EOF\nend\n\n";

fn vars(pairs: &[(&str, &[u8])]) -> Variables {
    let mut v = Variables::new();
    for (k, val) in pairs {
        v.insert(*k, secret_bytes(val.to_vec()));
    }
    v
}

fn render_with(
    t: &Template,
    pairs: &[(&str, &[u8])],
    secrets: &[(&str, &[u8])],
) -> Result<Vec<u8>, TemplateError> {
    t.render(&vars(pairs), &vars(secrets))
        .map(|r| r.expose_bytes().to_vec())
}

fn render(script: &str, pairs: &[(&str, &[u8])]) -> Result<Vec<u8>, TemplateError> {
    render_with(&Template::from_script(script), pairs, &[])
}

/// Run a rendered script as a file, the way the executors do, in a fresh directory; return
/// stdout. Panics if bash fails or if any `pwned*` marker file appeared.
///
/// `LC_ALL=C` keeps bash 5.2 from garbling `${r%.}` (used to strip sentinels) on strings
/// with incomplete UTF-8 sequences; `utf8_locale_sees_exact_bytes` covers UTF-8.
fn run(script: &[u8]) -> Vec<u8> {
    run_in(script, "C")
}

fn run_in(script: &[u8], locale: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.sh");
    std::fs::write(&path, script).unwrap();
    let out = Command::new("/bin/bash")
        .args(["--noprofile", "--norc"])
        .arg(&path)
        .current_dir(dir.path())
        .env("HOME", "/csm-test-home")
        .env("LC_ALL", locale)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_no_markers(dir.path());
    assert!(
        out.status.success(),
        "bash failed: {}\nscript:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(script)
    );
    out.stdout
}

fn assert_no_markers(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            !name.to_string_lossy().starts_with("pwned"),
            "injected command ran: {name:?}"
        );
    }
}

/// Render `script` with `key` = `value` and return what the script printed.
fn output(script: &str, value: &[u8]) -> Vec<u8> {
    let rendered =
        render(script, &[("key", value)]).unwrap_or_else(|e| panic!("render failed: {e}"));
    run(&rendered)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn err_of(r: Result<Vec<u8>, TemplateError>) -> TemplateError {
    match r {
        Ok(s) => panic!(
            "expected an error, got script:\n{}",
            String::from_utf8_lossy(&s)
        ),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------- parsing

#[test]
fn plain_script_declares_nothing() {
    let t = Template::parse("echo hi").unwrap();
    assert_eq!(t.script(), "echo hi");
    assert_eq!(t.declared_variables(), None);
    assert_eq!(t.name(), None);
    assert_eq!(t.timeout(), None);
}

#[test]
fn document_with_string_variables() {
    let t = Template::parse(
        r#"{"name":"vault","scriptString":"secret=${key}","variables":["key","path"]}"#,
    )
    .unwrap();
    assert_eq!(t.name(), Some("vault"));
    assert_eq!(t.script(), "secret=${key}");
    assert_eq!(
        t.declared_variables(),
        Some(&["key".to_string(), "path".to_string()][..])
    );
}

#[test]
fn document_with_harness_variable_objects_and_timeout() {
    let text = r#"
        {"name": "t", "scriptString": "echo ${key}",
         "variables": [{"name": "key", "value": "", "description": "the key"}, "path"],
         "timeoutMillis": 5000, "someOtherField": true}"#;
    let t = Template::parse(text).unwrap();
    assert_eq!(
        t.declared_variables(),
        Some(&["key".to_string(), "path".to_string()][..])
    );
    assert_eq!(t.timeout(), Some(std::time::Duration::from_secs(5)));
}

#[test]
fn null_variables_mean_none() {
    let t = Template::parse(r#"{"scriptString":"echo","variables":null,"name":null}"#).unwrap();
    assert_eq!(t.declared_variables(), Some(&[][..]));
}

#[test]
fn document_struct_deserialises_both_variable_shapes() {
    let doc: TemplateDocument =
        serde_json::from_str(r#"{"scriptString":"x","variables":["a",{"name":"b","value":"v"}]}"#)
            .unwrap();
    let names: Vec<_> = doc.variables.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(Template::from_document(doc).is_ok());
}

fn invalid(text: &str) -> String {
    match Template::parse(text) {
        Ok(_) => panic!("expected {text:?} to be rejected"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            e.to_string()
        }
    }
}

#[test]
fn broken_json_names_position_and_never_echoes_text() {
    let msg = invalid("{\n  \"scriptString\": \"echo hunter2\",\n  \"variables\": [\n");
    assert!(msg.contains("line 4") && msg.contains("column"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = invalid("  {\"scriptString\": \"echo hunter2\" \"x\"}");
    assert!(msg.contains("line 1 column"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn wrong_shapes_are_explained_without_echo() {
    let msg = invalid(r#"{"scriptString":"echo","timeoutMillis":"hunter2"}"#);
    assert!(
        msg.contains("timeoutMillis") && msg.contains("line 1 column"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = invalid(r#"{"scriptString":"echo","variables":["ok", {"value":"hunter2"}]}"#);
    assert!(msg.contains("variables[1]"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = invalid(r#"{"variables":["hunter2"]}"#);
    assert!(msg.contains("scriptString"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = invalid(r#"{"scriptString":"echo hunter2","scriptString":"again"}"#);
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = invalid(r#"{"scriptString":["hunter2"]}"#);
    assert!(msg.contains("`scriptString` must be a string"), "{msg}");
}

#[test]
fn variable_names_are_validated() {
    for bad in ["1abc", "a-b", "a.b", "a b", "", "é", "a}"] {
        let doc = serde_json::json!({"scriptString": "echo", "variables": [bad]}).to_string();
        let msg = invalid(&doc);
        assert!(msg.contains("not valid"), "{bad:?}: {msg}");
    }
    for good in ["a", "_", "A_1", "engineName", "_x9"] {
        let doc = serde_json::json!({"scriptString": "echo", "variables": [good]}).to_string();
        assert!(Template::parse(&doc).is_ok(), "{good}");
    }
}

#[test]
fn duplicate_variables_are_rejected() {
    let msg = invalid(r#"{"scriptString":"echo","variables":["key",{"name":"key"}]}"#);
    assert!(msg.contains("more than once"), "{msg}");
}

#[test]
fn empty_scripts_nul_and_zero_timeout_are_rejected() {
    assert!(invalid("  \n\t").contains("empty"));
    assert!(invalid(r#"{"scriptString":"  "}"#).contains("empty"));
    assert!(invalid("echo a\0b").contains("NUL"));
    assert!(invalid(r#"{"scriptString":"echo \u0000"}"#).contains("NUL"));
    assert!(invalid(r#"{"scriptString":"echo","timeoutMillis":0}"#).contains("timeoutMillis"));
    // from_script cannot fail, so it reports at render time.
    let e = Template::from_script("echo a\0b")
        .render(&Variables::new(), &Variables::new())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

// ---------------------------------------------------------------- missing values

#[test]
fn missing_values_are_one_error_naming_every_variable() {
    let t = Template::parse(r#"{"scriptString":"echo ${b} ${a} ${c}","variables":["b","a","c"]}"#)
        .unwrap();
    let e = render_with(&t, &[("c", b"1")], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingVariable);
    assert_eq!(
        e.to_string(),
        "The values for the variables {a, b} have not been provided as part of test parameters"
    );
    assert_eq!(
        e,
        TemplateError::MissingVariables {
            names: vec!["a".into(), "b".into()]
        }
    );
}

#[test]
fn documents_need_values_for_unused_variables_and_ignore_extras() {
    let t = Template::parse(r#"{"scriptString":"echo ${a}","variables":["a","unused"]}"#).unwrap();
    let e = render_with(&t, &[("a", b"x")], &[]).unwrap_err();
    assert_eq!(
        e,
        TemplateError::MissingVariables {
            names: vec!["unused".into()]
        }
    );
    let s = render_with(&t, &[("a", b"x"), ("unused", b"y"), ("extra", b"z")], &[]).unwrap();
    assert_eq!(run(&s), b"x\n");
}

#[test]
fn plain_scripts_need_values_for_nextgen_placeholders_and_secrets() {
    let t = Template::from_script(
        "echo <+secretManager.environmentVariables.a> <+spec.environmentVariables.b> ${c} \
         ${secrets.getValue(\"db\")} <+secrets.getValue('api')>",
    );
    let e = render_with(&t, &[("b", b"1")], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingVariable);
    assert_eq!(
        e.to_string(),
        "The values for the variables {a, secrets.getValue(\"api\"), secrets.getValue(\"db\")} \
         have not been provided as part of test parameters"
    );
}

#[test]
fn undeclared_nextgen_placeholder_in_a_document_is_a_render_error() {
    let t = Template::parse(
        r#"{"scriptString":"echo <+spec.environmentVariables.other>","variables":["key"]}"#,
    )
    .unwrap();
    let e = render_with(&t, &[("key", b"v"), ("other", b"w")], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RenderError);
    assert!(
        e.to_string().contains("`other`") && e.to_string().contains("not declare"),
        "{e}"
    );
}

// ---------------------------------------------------------------- what is a placeholder

#[test]
fn preamble_binds_values_single_quoted_then_the_body_references_them() {
    let s = render("echo ${key}", &[("key", b"it's")]).unwrap();
    assert_eq!(s, b"__csm_v0='it'\\''s'\necho \"${__csm_v0}\"");
    // No placeholder used: nothing bound, script unchanged.
    assert_eq!(render("echo hi", &[("key", b"x")]).unwrap(), b"echo hi");
}

#[test]
fn one_binding_per_variable_in_order_of_use() {
    let s = render(
        "echo ${b} ${a} ${b} <+spec.environmentVariables.a> ${secrets.getValue(\"a\")}",
        &[("a", b"A"), ("b", b"B")],
    );
    assert!(s.is_err()); // the secret is missing
    let t = Template::from_script(
        "echo ${b} ${a} ${b} <+spec.environmentVariables.a> ${secrets.getValue(\"a\")}",
    );
    let s = render_with(&t, &[("a", b"A"), ("b", b"B")], &[("a", b"S")]).unwrap();
    assert_eq!(
        String::from_utf8(s.clone()).unwrap(),
        "__csm_v0='B'\n__csm_v1='A'\n__csm_v2='S'\n\
         echo \"${__csm_v0}\" \"${__csm_v1}\" \"${__csm_v0}\" \"${__csm_v1}\" \"${__csm_v2}\""
    );
    assert_eq!(run(&s), b"B A B A S\n");
}

#[test]
fn the_value_never_enters_the_body() {
    let s = render(
        "x=${key}; echo \"${key}\" '${key}' $(echo ${key})",
        &[("key", b"SENTINELVALUE")],
    )
    .unwrap();
    let text = String::from_utf8(s).unwrap();
    let (preamble, body) = text.split_once('\n').unwrap();
    assert_eq!(preamble, "__csm_v0='SENTINELVALUE'");
    assert!(!body.contains("SENTINELVALUE"), "{body}");
}

#[test]
fn foreign_braces_bare_dollars_escapes_and_comments_are_left_to_bash() {
    let script = "key=shellvar\nprintf '%s|' \"${HOME}\" \"$key\" \\${key} \"\\${key}\" # ${key}\n";
    let s = render(script, &[("key", b"VALUE")]).unwrap();
    assert_eq!(s, script.as_bytes(), "nothing to substitute");
    assert_eq!(run(&s), b"/csm-test-home|shellvar|${key}|${key}|");
    // Undeclared FirstGen names in a document are bash's too.
    let t =
        Template::parse(r#"{"scriptString":"echo ${HOME} ${key}","variables":["key"]}"#).unwrap();
    assert_eq!(
        run(&render_with(&t, &[("key", b"v")], &[]).unwrap()),
        b"/csm-test-home v\n"
    );
}

#[test]
fn debug_output_never_shows_values() {
    let r = Template::from_script("echo ${key}")
        .render(&vars(&[("key", b"hunter2-secret")]), &Variables::new())
        .unwrap();
    assert!(!format!("{r:?}").contains("hunter2"));
}

// ---------------------------------------------------------------- contexts, run by bash

#[test]
fn unquoted_and_part_of_a_larger_word() {
    assert_eq!(output("printf '%s' ${key}", NASTY), NASTY);
    assert_eq!(
        output("printf '%s' pre${key}post", NASTY),
        cat(&[b"pre", NASTY, b"post"])
    );
    assert_eq!(
        output("printf '%s|' ${key}${key}", NASTY),
        cat(&[NASTY, NASTY, b"|"])
    );
    assert_eq!(output("x=${key}; printf '%s' \"$x\"", NASTY), NASTY);
    assert_eq!(output("export X=${key}; printf '%s' \"$X\"", NASTY), NASTY);
    assert_eq!(
        output("f() { local v=${key}; printf '%s' \"$v\"; }; f", NASTY),
        NASTY
    );
    assert_eq!(
        output("a=(${key} x); printf '%s' \"${a[0]}\"", NASTY),
        NASTY
    );
    assert_eq!(output("cat <<<${key}", NASTY), cat(&[NASTY, b"\n"]));
    assert_eq!(
        output("for x in ${key}; do printf '%s' \"$x\"; done", NASTY),
        NASTY
    );
}

#[test]
fn inside_single_double_and_ansi_c_quotes() {
    assert_eq!(
        output("printf '%s' 'pre ${key} post'", NASTY),
        cat(&[b"pre ", NASTY, b" post"])
    );
    assert_eq!(
        output("printf '%s' \"pre ${key} post\"", NASTY),
        cat(&[b"pre ", NASTY, b" post"])
    );
    assert_eq!(
        output("printf '%s' $'pre\\t${key}\\x41'", NASTY),
        cat(&[b"pre\t", NASTY, b"A"])
    );
    assert_eq!(
        output("printf '%s' $\"pre ${key}\"", NASTY),
        cat(&[b"pre ", NASTY])
    );
    assert_eq!(
        output("printf '%s' \"a'${key}'b\"", NASTY),
        cat(&[b"a'", NASTY, b"'b"])
    );
}

#[test]
fn utf8_locale_sees_exact_bytes() {
    // `'` is never part of a multibyte character in locales bash supports, so single-quoted
    // bindings hold any bytes; check the common contexts under UTF-8 with invalid sequences.
    let v: &[u8] = b"\xc2'\xc2\\\xe2\x82'\xff\"$(touch pwned)\xf0";
    for script in [
        "printf '%s' ${key}",
        "printf '%s' \"${key}\" '${key}' $'${key}'",
        "cat <<EOF\n${key}\nEOF",
        "cat <<'EOF'\n${key}\nEOF",
    ] {
        let s = render(script, &[("key", v)]).unwrap();
        let want = match script {
            "printf '%s' ${key}" => v.to_vec(),
            s if s.starts_with("cat") => cat(&[v, b"\n"]),
            _ => cat(&[v, v, v]),
        };
        assert_eq!(run_in(&s, "C.UTF-8"), want, "{script}");
    }
}

#[test]
fn inside_command_substitutions_and_backquotes() {
    // A trailing `.` keeps command substitution from eating the value's trailing newlines.
    let cases = [
        "r=$(printf '%s.' ${key}); printf '%s' \"${r%.}\"",
        "r=\"$(printf '%s.' \"${key}\")\"; printf '%s' \"${r%.}\"",
        "r=$(printf '%s' \"$(printf '%s.' ${key})\"); printf '%s' \"${r%.}\"",
        "r=$(printf '%s' $(printf '%s' '') '${key}' ; printf .); printf '%s' \"${r%.}\"",
        "r=`printf '%s.' ${key}`; printf '%s' \"${r%.}\"",
        "r=$(case x in x) printf '%s.' ${key};; esac); printf '%s' \"${r%.}\"",
        "r=$( (printf '%s.' ${key}) ); printf '%s' \"${r%.}\"",
        "r=$(cat <(printf '%s.' ${key})); printf '%s' \"${r%.}\"",
        "r=$(# a comment ${key} )\nprintf '%s.' ${key}); printf '%s' \"${r%.}\"",
    ];
    for script in cases {
        assert_eq!(output(script, NASTY), NASTY, "{script}");
    }
    // A placeholder in nested backquotes is refused: bash un-escapes their text before it
    // parses it, and the fuzzer found spliced references read at the wrong level there.
    let e = render(
        "r=`printf '%s' \"\\`printf '%s.' ${key}\\`\"`; printf '%s' \"${r%.}\"",
        &[("key", NASTY)],
    )
    .unwrap_err();
    // (Here inside double quotes too, which the next rule refuses first.)
    let msg = e.to_string();
    assert!(
        msg.contains("backslash escapes") || msg.contains("backquotes inside double quotes"),
        "{msg}"
    );
    // So is one in backquotes inside double quotes: bash 5.2 does not always read that as
    // one string (the second 1,000,000-case fuzz run).
    let e = render(
        "r=\"`printf '%s.' ${key}`\"; printf '%s' \"${r%.}\"",
        &[("key", NASTY)],
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("backquotes inside double quotes"),
        "{e}"
    );
    // Constructs bash reads in ways the renderer does not vouch for are refused:
    // a placeholder escaped inside backquotes, `$((…) …)`.
    for script in [
        "r=`printf '%s.' \\${key}`; printf '%s' \"${r%.}\"",
        "r=$((printf '%s.' ${key}) | cat); printf '%s' \"${r%.}\"",
    ] {
        let e = err_of(render(script, &[("key", NASTY)]));
        assert_eq!(e.kind(), ErrorKind::RenderError, "{script}: {e}");
        assert!(e.to_string().contains("cannot prove"), "{script}: {e}");
    }
}

#[test]
fn in_parameter_expansion_words() {
    assert_eq!(output("printf '%s' ${unset:-${key}}", NASTY), NASTY);
    assert_eq!(output("printf '%s' \"${unset:-${key}}\"", NASTY), NASTY);
    assert_eq!(
        output("printf '%s' \"${unset:-pre${key}}\"", NASTY),
        cat(&[b"pre", NASTY])
    );
    assert_eq!(output("printf '%s' ${unset:-'${key}'}", NASTY), NASTY);
    // Inside double quotes, `'` in a `:-` word is literal (bash 5).
    assert_eq!(
        output("printf '%s' \"${unset:-'${key}'}\"", NASTY),
        cat(&[b"'", NASTY, b"'"])
    );
    assert_eq!(
        output("set=1; printf '%s' \"${set:+${key}}\"", NASTY),
        NASTY
    );
    assert_eq!(
        output("printf '%s' \"${unset:-$'\\t${key}'}\"", NASTY),
        cat(&[b"\t", NASTY])
    );
    assert_eq!(output("printf '%s' \"${unset:-\"${key}\"}\"", NASTY), NASTY);
    // Patterns match the value literally: globs in it are not globs.
    assert_eq!(
        output("x=A${key}B; printf '%s' \"${x#A${key}}\"", NASTY),
        b"B"
    );
    assert_eq!(
        output("x=A${key}B; printf '%s' \"${x%${key}B}\"", NASTY),
        b"A"
    );
    assert_eq!(
        output("x=A${key}B; printf '%s' \"${x/${key}/R}\"", NASTY),
        b"ARB"
    );
    assert_eq!(output("x=AXB; printf '%s' \"${x#${key}}\"", b"*"), b"AXB");
    // Replacement text is literal: `&` is not the match (bash 5.2 patsub_replacement).
    assert_eq!(
        output("x=AB; printf '%s' \"${x/B/${key}}\"", NASTY),
        cat(&[b"A", NASTY])
    );
    // Single quotes in a double-quoted pattern or replacement: bash 5.2 removes them
    // there and keeps them elsewhere; the renderer refuses rather than guess.
    let e = err_of(render(
        "x=AB; printf '%s' \"${x/B/'${key}'}\"",
        &[("key", NASTY)],
    ));
    assert_eq!(e.kind(), ErrorKind::RenderError, "{e}");
    assert_eq!(output("x=AB; printf '%s' ${x/B/\"${key}\"}", b"&"), b"A&");
}

#[test]
fn in_case_patterns_and_conditionals() {
    assert_eq!(
        output(
            "case ${key} in ${key}) printf yes;; *) printf no;; esac",
            NASTY
        ),
        b"yes"
    );
    assert_eq!(
        output(
            "case other in ${key}) printf yes;; *) printf no;; esac",
            b"*"
        ),
        b"no"
    );
    assert_eq!(
        output(
            "case other in (${key}|x) printf yes;; *) printf no;; esac",
            b"o*"
        ),
        b"no"
    );
    assert_eq!(
        output("[[ ${key} == ${key} ]] && printf yes", NASTY),
        b"yes"
    );
    assert_eq!(output("[[ other == ${key} ]] || printf no", b"*"), b"no");
    assert_eq!(
        output("[[ ${key} =~ ^${key}$ ]] && printf yes", b"a.(b)|*"),
        b"yes"
    );
    assert_eq!(output("[[ aXb =~ ^${key}$ ]] || printf no", b"a.b"), b"no");
    // `==` compares strings: any value is fine.
    assert_eq!(output("[[ ${key} == 3 ]] || printf no", NASTY), b"no");
    assert_eq!(
        output("[ \"${key}\" = \"${key}\" ] && printf yes", NASTY),
        b"yes"
    );
}

#[test]
fn unquoted_here_documents_expand_references() {
    assert_eq!(
        output("cat <<EOF\n${key}\nEOF", NASTY),
        cat(&[NASTY, b"\n"])
    );
    assert_eq!(
        output("cat <<EOF\npre ${key} \\${key} post\nEOF\n", NASTY),
        cat(&[b"pre ", NASTY, b" ${key} post\n"])
    );
    assert_eq!(
        output("cat <<-EOF\n\t\t${key}\n\tEOF\n", NASTY),
        cat(&[NASTY, b"\n"])
    );
    assert_eq!(
        output("cat <<EOF\n$(printf '%s' ${key})\nEOF\n", b"x\"y"),
        b"x\"y\n"
    );
    assert_eq!(
        output("cat <<EOF\n${unset:-\"${key}\"}\nEOF\n", NASTY),
        cat(&[NASTY, b"\n"])
    );
    assert_eq!(
        output(
            "r=$(cat <<EOF\n${key}.\nEOF\n); printf '%s' \"${r%.}\"",
            NASTY
        ),
        NASTY
    );
}

#[test]
fn quoted_here_documents_get_the_value_exactly() {
    // The here-document is rewritten as an unquoted one with its own text escaped, so the
    // value is expanded there, never pasted: it cannot end the document or run.
    let v: &[u8] = b"it's $(touch pwned) `x` \\ \"q\"\n\tEOF \nEOFX\nEOF\n";
    for op in ["<<'EOF'", "<<\"EOF\"", "<<\\EOF", "<<E'O'F", "<< \"EOF\""] {
        let script = format!("cat {op}\npre ${{key}} post $HOME \\$ `x`\nEOF\nprintf done");
        assert_eq!(
            output(&script, v),
            cat(&[b"pre ", v, b" post $HOME \\$ `x`\ndone"]),
            "{op}"
        );
    }
    // `<<-` strips the template's tabs, never the value's.
    assert_eq!(
        output("cat <<-'EOF'\n\t${key}\n\tEOF\n", b"a\n\tb\n\tEOF"),
        b"a\n\tb\n\tEOF\n"
    );
    // A line of the template ending in a backslash stays a backslash.
    assert_eq!(output("cat <<'EOF'\n${key} \\\nEOF\n", b"v"), b"v \\\n");
    // Inside $(…) too, whatever the value's lines start with.
    let w: &[u8] = b"it's $(touch pwned) `x` \\ \"q\"\n\t EOF\nXEOF\nEOF)\nEOF\n";
    assert_eq!(
        output(
            "r=$(cat <<'EOF'\n${key}.\nEOF\n); printf '%s' \"${r%.}\"",
            w
        ),
        w
    );
    // Several here-documents on one line, bodies in order.
    let s = "cat <<A; cat <<'B'\nu ${key}\nA\nq ${key} $HOME\nB\n";
    assert_eq!(output(s, b"$HOME"), b"u $HOME\nq $HOME $HOME\n");
    // A delimiter that cannot be written unquoted cannot be rewritten: refused.
    let e = err_of(render("cat << 'E O F'\n${key}\nE O F\n", &[("key", b"v")]));
    assert!(matches!(e, TemplateError::Heredoc { .. }), "{e}");
}

#[test]
fn values_that_look_like_delimiters_are_just_data() {
    for (script, value, want) in [
        (
            "cat <<'EOF'\n${key}\nEOF\n",
            &b"x\nEOF\ntouch pwned"[..],
            &b"x\nEOF\ntouch pwned\n"[..],
        ),
        ("cat <<'EOF'\n${key}\nEOF\n", b"EOF", b"EOF\n"),
        (
            "cat <<'EOF'\nE${key}\nEOF\n",
            b"OF\ntouch pwned",
            b"EOF\ntouch pwned\n",
        ),
        (
            "cat <<-'EOF'\n${key}\nEOF\n",
            b"x\nEOF\ntouch pwned",
            b"x\nEOF\ntouch pwned\n",
        ),
        ("cat <<-'EOF'\n\t${key}\nEOF\n", b"EOF", b"EOF\n"),
        (
            "cat <<-'EOF'\n${key}\nEOF\n",
            b"\tindented",
            b"\tindented\n",
        ),
        (
            "cat <<EOF\n${key}\nEOF\n",
            b"x\nEOF\ntouch pwned",
            b"x\nEOF\ntouch pwned\n",
        ),
        ("cat <<'EOF'\nE${key}OF\nEOF\n", b"", b"EOF\n"),
    ] {
        assert_eq!(output(script, value), want, "{script}");
    }
}

#[test]
fn here_documents_the_renderer_cannot_vouch_for_are_refused() {
    for script in [
        "x=`cat <<'EOF'\n${key}\nEOF\n`",
        "cat <<'EOF'\n${key}\n",
        // bash 5.2 may end a body inside $(…) at a line that only starts with the delimiter.
        "r=$(cat <<'EOF'\nEOF :)\nprintf '%s' ${key}\n: EOF\n)\n",
        "r=$(cat <<'EOF'\n${key}\nEOFX\nEOF\n)\n",
    ] {
        let e = err_of(render(script, &[("key", b"v")]));
        assert_eq!(e.kind(), ErrorKind::RenderError, "{script}: {e}");
    }
}

#[test]
fn placeholder_in_a_here_document_delimiter_is_refused() {
    for s in ["cat <<${key}\nx\n${key}\n", "cat <<'${key}'\nx\n${key}\n"] {
        let e = err_of(render(s, &[("key", b"v")]));
        assert_eq!(e.kind(), ErrorKind::RenderError);
        assert!(e.to_string().contains("delimiter"), "{e}");
    }
    // Not a declared variable: bash's business.
    assert_eq!(
        render("cat <<${other}\nx\n${other}\n", &[("key", b"v")]).unwrap(),
        b"cat <<${other}\nx\n${other}\n"
    );
}

#[test]
fn nextgen_and_secret_placeholders_in_every_quoting() {
    let t = Template::from_script(
        "printf '%s|' <+secretManager.environmentVariables.key> '<+spec.environmentVariables.key>' \
         \"${secrets.getValue(\"db\")}\" '${secrets.getValue('db')}' <+secrets.getValue(\"db\")>",
    );
    let s = render_with(&t, &[("key", NASTY)], &[("db", b"p'w\"d $(touch pwned)")]).unwrap();
    let sec: &[u8] = b"p'w\"d $(touch pwned)";
    assert_eq!(
        run(&s),
        cat(&[NASTY, b"|", NASTY, b"|", sec, b"|", sec, b"|", sec, b"|"])
    );
}

// ---------------------------------------------------------------- arithmetic contexts

#[test]
fn integers_work_in_arithmetic_contexts() {
    let cases: &[(&str, &[u8], &[u8])] = &[
        ("echo $(( ${key} + 1 ))", b"41", b"42\n"),
        ("echo $(( ${key} * 2 ))", b"-5", b"-10\n"),
        ("(( ${key} > 1 )) && echo big", b"7", b"big\n"),
        ("let x=${key}+1; echo $x", b"1", b"2\n"),
        ("let \"x = ${key} * 3\"; echo $x", b"2", b"6\n"),
        ("a[${key}]=v; echo ${a[2]}", b"2", b"v\n"),
        ("a=(p q r); echo ${a[${key}]}", b"1", b"q\n"),
        ("s=abcdef; echo ${s:${key}:2}", b"3", b"de\n"),
        ("echo $[${key} + 1]", b"9", b"10\n"),
        ("[[ ${key} -eq 3 ]] && echo three", b"3", b"three\n"),
        ("[[ 4 -gt \"${key}\" ]] && echo less", b"3", b"less\n"),
        ("declare -i q=${key}; echo $q", b"12", b"12\n"),
        ("declare -i q; q=${key}; echo $q", b"12", b"12\n"),
        (
            "for ((i=0; i<${key}; i++)); do printf x; done",
            b"3",
            b"xxx",
        ),
        ("echo $(( $(printf %s ${key}) + 1 ))", b"1", b"2\n"),
    ];
    for (script, value, want) in cases {
        assert_eq!(output(script, value), *want, "{script}");
    }
}

#[test]
fn non_integers_are_refused_in_arithmetic_contexts() {
    let cases: &[(&str, &str)] = &[
        ("echo $(( ${key} + 1 ))", "$((…))"),
        ("(( ${key} > 1 ))", "((…))"),
        ("let x=${key}", "let"),
        ("let \"x = ${key}\"", "let"),
        ("x=1 let y=${key}", "let"),
        ("if true; then let y=${key}; fi", "let"),
        ("a[${key}]=v", "subscript"),
        ("a=([${key}]=v)", "subscript"),
        ("echo ${a[${key}]}", "subscript"),
        ("echo ${#a[${key}]}", "subscript"),
        ("s=abc; echo ${s:${key}}", "substring"),
        ("s=abc; echo ${s:1:${key}}", "substring"),
        ("echo $[${key}]", "$[…]"),
        ("[[ ${key} -eq 3 ]]", "-eq"),
        ("[[ 3 -ne \"${key}\" ]]", "-eq"),
        ("[[ -n x && \"$(echo ${key})\" -lt 3 ]]", "-eq"),
        ("declare -i q=${key}", "declare -i"),
        ("local -i q=${key}", "declare -i"),
        ("declare -i q; q=${key}", "integer"),
        ("q=${key}; declare -i q", "integer"),
        ("declare -ai arr; arr+=(${key})", "integer"),
        ("for ((i=0; i<${key}; i++)); do :; done", "((…))"),
        ("echo $(( $(printf %s ${key}) ))", "$((…))"),
        ("echo $(( <+spec.environmentVariables.key> ))", "$((…))"),
        ("\"let\" x=${key}", "let"),
        ("le\\\nt \"y=${key}\"", "let"),
        ("2>/dev/null let \"x=${key}\"", "let"),
        ("{fd}>/dev/null let x=${key}", "let"),
        (">/dev/null declare -i q=${key}", "declare -i"),
        ("time -p let x=${key}", "let"),
        ("f() [[ ${key} -eq 1 ]]", "-eq"),
        ("function g [[ ${key} -eq 1 ]]", "-eq"),
        ("function g { [[ ${key} -eq 1 ]]; }", "-eq"),
        ("if ! [[ ${key} -lt 1 ]]; then :; fi", "-eq"),
    ];
    for value in [
        &b"a[$(touch pwned)]"[..],
        b"1+1",
        b"",
        b"x",
        b"1 ",
        b"--1",
        b"0x10",
    ] {
        for (script, context) in cases {
            let e = err_of(render(script, &[("key", value)]));
            assert_eq!(e.kind(), ErrorKind::RenderError, "{script}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains("`key`") && msg.contains("integer"),
                "{script}: {msg}"
            );
            assert!(
                msg.contains(context),
                "{script}: {msg} should mention {context}"
            );
            assert!(
                !msg.contains("touch") && !msg.contains("1+1"),
                "message shows the value: {msg}"
            );
        }
    }
}

#[test]
fn arithmetic_lookalikes_accept_any_value() {
    // String comparisons, test(1), subshells written `$((…) …)`, and quoted `-eq`.
    for script in [
        "[[ ${key} == 3 ]] || printf no",
        "[ \"${key}\" = 3 ] || printf no",
        "[[ '-eq' == ${key} ]] || printf no",
        "printf no # $(( ${key} ))",
        "printf no; : > let x=${key}",
        "printf no; : 2> declare -i x=${key}",
    ] {
        assert_eq!(output(script, b"a[$(touch pwned)]"), b"no", "{script}");
    }
}

#[test]
fn nameref_needs_a_plain_name() {
    // A name reference to a value is refused outright: whatever the name, writing through
    // it would assign to a variable the value chooses.
    let e = err_of(render(
        "target=hi; declare -n r=${key}; echo $r",
        &[("key", b"target")],
    ));
    assert!(e.to_string().contains("name reference"), "{e}");
    assert_eq!(output("t=1; [[ -v ${key} ]] && echo set", b"t"), b"set\n");
    for s in [
        "[[ -v ${key} ]]",
        "[[ -R \"${key}\" ]]",
        "[[ -n x && -v ${key} ]]",
    ] {
        let e = err_of(render(s, &[("key", b"a[$(touch pwned)]")]));
        assert!(matches!(e, TemplateError::NotAName { .. }), "{s}: {e}");
    }
    let e = err_of(render(
        "declare -n r=${key}",
        &[("key", b"a[$(touch pwned)]")],
    ));
    assert!(matches!(e, TemplateError::NotData { .. }), "{e}");
    assert!(!e.to_string().contains("touch"));
}

// ---------------------------------------------------------------- other refusals

#[test]
fn nul_values_are_refused_by_name() {
    let e = err_of(render("echo ${key}", &[("key", b"a\0b-hunter2")]));
    assert_eq!(
        e,
        TemplateError::NulByte {
            variable: "key".into()
        }
    );
    assert_eq!(e.kind(), ErrorKind::RenderError);
    assert!(!e.to_string().contains("hunter2"));
    let t = Template::from_script("echo ${secrets.getValue(\"db\")}");
    let e = render_with(&t, &[], &[("db", b"\0")]).unwrap_err();
    assert!(e.to_string().contains("secrets.getValue(\"db\")"), "{e}");
}

#[test]
fn messages_never_contain_values() {
    let secret: &[u8] = b"TOPSECRET\nEOF\n\0";
    let scripts = [
        "echo ${key}",
        "echo $(( ${key} ))",
        "cat <<'EOF'\n${key}\nEOF\n",
        "cat <<${key}\n",
        "declare -n r=${key}",
    ];
    for s in scripts {
        let e = err_of(render(s, &[("key", secret)]));
        assert!(!e.to_string().contains("TOPSECRET"), "{e}");
        assert!(!format!("{e:?}").contains("TOPSECRET"), "{e:?}");
    }
}

#[test]
fn unterminated_and_odd_constructs_render_safely() {
    for script in [
        "printf '%s' '${key}",
        "printf '%s' \"${key}",
        "printf '%s' $(printf ${key}",
        "printf '%s' `printf ${key}",
        "printf '%s' ${unset:-${key}",
        "printf '%s' $(( ${key}",
        "[[ ${key} == x",
        "case ${key} in",
        "cat <<EOF\n${key}",
        "x=(${key}",
        "printf '%s' )${key}((",
        "))${key}",
        "esac ${key} ]] fi done",
    ] {
        match render(script, &[("key", b"1")]) {
            Ok(s) => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("s.sh");
                std::fs::write(&path, &s).unwrap();
                let value = b"$(touch pwned) `touch pwned2`";
                let s = render(script, &[("key", value)]);
                if let Ok(s) = s {
                    std::fs::write(&path, &s).unwrap();
                    let _ = Command::new("/bin/bash")
                        .args(["--noprofile", "--norc"])
                        .arg(&path)
                        .current_dir(dir.path())
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    assert_no_markers(dir.path());
                }
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::RenderError, "{script}: {e}"),
        }
    }
}

#[test]
fn absurd_nesting_is_refused_not_overflowed() {
    let script = format!("echo {}${{key}}{}", "$(".repeat(5000), ")".repeat(5000));
    let e = err_of(render(&script, &[("key", b"v")]));
    assert_eq!(e, TemplateError::TooComplex);
    let script = format!("echo {}", "`".repeat(3000));
    let _ = render(&script, &[("key", b"v")]);
}
