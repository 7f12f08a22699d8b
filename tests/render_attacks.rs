//! The injection classes found when the renderer was attacked (issue 6, section 1), each
//! checked against real bash: with a hostile value, rendering must refuse. A positive
//! control shows that each template really is dangerous: with the value pasted as Harness
//! pastes it (plain text substitution), bash runs the payload.
//!
//! Every rendering is also run, when it succeeds with a benign value, to show the refusal
//! is about the value's placement, not a broken template.

use std::path::Path;
use std::process::{Command, Stdio};

use csm_agent::error::{ErrorKind, Kind};
use csm_agent::secret::{secret_bytes, Variables};
use csm_agent::template::Template;

/// `@M@` is replaced by the case's marker path.
struct Attack {
    /// The template; `${v}` is the placeholder.
    script: &'static str,
    /// The hostile value.
    value: &'static str,
    /// Rendering may succeed (the value is then plain data); otherwise it must refuse.
    may_render: bool,
}

/// Must be refused.
const fn a(script: &'static str, value: &'static str) -> Attack {
    Attack {
        script,
        value,
        may_render: false,
    }
}

/// Was injectable before; now either refused or rendered as plain data.
const fn d(script: &'static str, value: &'static str) -> Attack {
    Attack {
        script,
        value,
        may_render: true,
    }
}

const SUB: &str = "a[$(touch @M@)]";
const CMD: &str = "$(touch @M@)";

fn attacks() -> Vec<Attack> {
    vec![
        // Function definitions in every form: the body's first word is a command.
        a("f(){ [[ ${v} -eq 1 ]]; }; f", SUB),
        a("f () { [[ ${v} -eq 1 ]]; }; f", SUB),
        a("function f () { [[ ${v} -eq 1 ]]; }; f", SUB),
        a("function f { [[ ${v} -eq 1 ]]; }; f", SUB),
        a("function f() [[ ${v} -eq 1 ]]\nf", SUB),
        a("f() ( (( ${v} )) ); f", SUB),
        a("f() if (( ${v} )); then :; fi\nf", SUB),
        a("f()\n{\n  let x=${v}\n}\nf", SUB),
        // Here-documents bash reads differently from a naive lexer.
        d(
            "cat <(echo)#'\ncat <<'EOF'\n${v}\nEOF\n'\n",
            "'; touch @M@; : '",
        ),
        a(
            "cat <<A; x=$(cat <<B\nb\nB\n)\n${v}\nA\n",
            "x\nA\ntouch @M@",
        ),
        d(
            "f() { x=$(case a in a) echo;; esac); }\ncat <<'EOF'\n${v}\nEOF\n",
            "x\nEOF\ntouch @M@\ncat <<'EOF'",
        ),
        d("x=$(cat <<'EOF'\n${v}\nEOF\n)", "EOF)\ntouch @M@\n("),
        // bash evaluating a variable's value as code.
        a("declare -a x=${v}", "([0]=$(touch @M@))"),
        a("x=(); declare x=${v}", "([0]=$(touch @M@))"),
        a(
            "read -a x <<< 1; local_f() { local x=${v}; }; local_f",
            "([0]=$(touch @M@))",
        ),
        a(
            "local_f() { local -a x=\"${v}\"; }; local_f",
            "([0]=$(touch @M@))",
        ),
        a("typeset -A m=${v}", "([k]=$(touch @M@))"),
        a("declare -i n; for n in ${v}; do :; done", SUB),
        a("declare -i n; read n <<< ${v}", SUB),
        a("declare -i n; read -r n <<EOF\n${v}\nEOF\n", SUB),
        a("declare -i n; printf -v n %s ${v}", SUB),
        a("declare -i n; : ${n:=${v}}", SUB),
        a("declare -ai n; mapfile n <<< ${v}", SUB),
        a("declare -i n; echo ${v} | { read n; }", SUB),
        a("declare -n r; r=${v}; echo \"$r\"", SUB),
        a("declare -n r=${v}; echo \"$r\"", SUB),
        a("declare '-i' n=${v}", SUB),
        a("declare -\"i\" n=${v}", SUB),
        a("declare \\-i n; n=${v}", SUB),
        a("o=-i; declare $o n; n=${v}", SUB),
        a("OPTIND=${v}", SUB),
        a("RANDOM=${v}", SUB),
        a("SRANDOM=${v}", SUB),
        a("HISTCMD=${v}", SUB),
        a("declare SECONDS=${v}", SUB),
        a("compgen -W ${v}", CMD),
        a("compgen -W \"a ${v}\" a", CMD),
        // Values copied into variables and then evaluated.
        a("x=${v}; echo $((x))", SUB),
        a("x=${v}; y=$x; (( y ))", SUB),
        a("x=$(echo ${v}); [[ $x -eq 1 ]]", SUB),
        a("f() { (( $1 )); }; f ${v}", SUB),
        a("set -- ${v}; echo $(( $1 ))", SUB),
        a("x=${v}; echo ${!x}", SUB),
        a("x=${v}; echo \"${x@P}\"", CMD),
        a("x=${v}; eval \"echo $x\"", "; touch @M@"),
        a("x=${v}; trap \"echo $x\" EXIT", "; touch @M@"),
        // Builtins and programs that run their arguments or stdin as code.
        a("eval \"echo ${v}\"", "; touch @M@"),
        a("bash -c \"echo ${v}\"", "; touch @M@"),
        a("sh -c 'echo $1' sh ${v}", "; touch @M@"),
        a("echo ${v} | bash", "touch @M@"),
        a("bash <<EOF\necho ${v}\nEOF\n", "; touch @M@"),
        a("bash <<< ${v}", "'touch @M@'"),
        a("trap ${v} EXIT", "'touch @M@'"),
        a("source /dev/stdin <<< ${v}", "'touch @M@'"),
        a("${v}", "touch @M@"),
        a("x=1 ${v}", "touch @M@"),
        a("command ${v}", "touch @M@"),
        a("env ${v}", "touch @M@"),
        a("xargs -I{} sh -c {} <<< ${v}", "'touch @M@'"),
        a("ssh -o ${v} localhost true", "ProxyCommand=touch @M@"),
        // Names: `-v` evaluates subscripts.
        a("[[ -v ${v} ]]", SUB),
        a("test -v ${v}", SUB),
        a("[ ${v} ${v} ]", "-v"),
        a("unset ${v}", SUB),
        a("printf -v ${v} x", SUB),
        a("read ${v} <<< x", SUB),
        // Arithmetic and subscripts.
        a("echo $(( ${v} ))", SUB),
        a("(( ${v} ))", SUB),
        a("x[${v}]=1", CMD),
        a("echo ${x[${v}]}", CMD),
        a("x=abc; echo ${x:${v}}", SUB),
        a("let x=${v}", SUB),
        a("for ((i=${v};;)); do break; done", SUB),
        a("[[ 1 -eq ${v} ]]", SUB),
        a("x=(1); x+=([${v}]=2)", CMD),
        a("echo $[ ${v} ]", SUB),
    ]
}

fn vars(v: &[u8]) -> Variables {
    let mut vars = Variables::new();
    vars.insert("v", secret_bytes(v.to_vec()));
    vars
}

fn run_bash(dir: &Path, script: &[u8]) {
    let path = dir.join("script.sh");
    std::fs::write(&path, script).unwrap();
    let mut child = Command::new("/bin/bash")
        .args(["--noprofile", "--norc"])
        .arg(&path)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The scripts here are short; a hang would be a bug worth seeing, so no timeout games.
    child.wait().unwrap();
}

#[test]
fn every_attack_is_refused_and_really_is_an_attack() {
    let mut failures = Vec::new();
    for (i, at) in attacks().into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join(format!("PWNED{i}"));
        let value = at.value.replace("@M@", marker.to_str().unwrap());
        let t = Template::from_script(at.script);
        match t.render(&vars(value.as_bytes()), &Variables::new()) {
            Ok(r) => {
                run_bash(dir.path(), r.expose_bytes());
                if marker.exists() || !at.may_render {
                    failures.push(format!(
                        "rendered (marker created: {}): {:?} with {:?}",
                        marker.exists(),
                        at.script,
                        at.value
                    ));
                }
            }
            Err(e) => {
                if !matches!(e.kind(), ErrorKind::RenderError) {
                    failures.push(format!("{:?}: wrong kind {}: {e}", at.script, e.kind()));
                }
                let msg = e.to_string();
                if !msg.contains("`v`") {
                    failures.push(format!("{:?}: message does not name `v`: {msg}", at.script));
                }
                if msg.contains("touch") {
                    failures.push(format!("{:?}: message shows the value: {msg}", at.script));
                }
            }
        }
        // Positive control: Harness's text substitution makes bash run the payload (for the
        // attacks that need a second value or a name, the control is the refusal alone).
        let pasted = at.script.replace("${v}", &value);
        let needs_positive = !at.script.starts_with("ssh") && at.value != "-v";
        if needs_positive {
            let control = dir.path().join("control");
            std::fs::create_dir(&control).unwrap();
            let pasted = pasted.replace(
                marker.to_str().unwrap(),
                control.join("P").to_str().unwrap(),
            );
            run_bash(&control, pasted.as_bytes());
            if !control.join("P").exists() {
                failures.push(format!(
                    "control: pasting the value into {:?} did not run the payload",
                    at.script
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_same_places_take_benign_values_where_bash_allows_them() {
    // Integers where bash evaluates arithmetic, names where it wants a name: these render,
    // run, and give the right answer.
    let cases: &[(&str, &str, &str)] = &[
        ("f(){ [[ ${v} -eq 1 ]] && echo yes; }; f", "1", "yes\n"),
        (
            "declare -i n; for n in ${v}; do echo $n; done",
            "41",
            "41\n",
        ),
        ("declare -i n; read n <<< ${v}; echo $n", "7", "7\n"),
        ("x=${v}; echo $((x + 1))", "2", "3\n"),
        ("OPTIND=${v}; echo $OPTIND", "1", "1\n"),
        ("t=1; [[ -v ${v} ]] && echo set", "t", "set\n"),
        ("f() { echo $(( $1 * 2 )); }; f ${v}", "21", "42\n"),
        ("cat <(echo)#'\necho ${v}\n'", "x", ""),
    ];
    for (script, value, want) in cases {
        let t = Template::from_script(*script);
        let r = t
            .render(&vars(value.as_bytes()), &Variables::new())
            .unwrap_or_else(|e| panic!("{script}: {e}"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sh");
        std::fs::write(&path, r.expose_bytes()).unwrap();
        let out = Command::new("/bin/bash")
            .args(["--noprofile", "--norc"])
            .arg(&path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), *want, "{script}");
    }
}

#[test]
fn unsure_scripts_refuse_naming_the_variable_and_both_lines() {
    let t = Template::from_script("echo ok\necho ${v}\neval \"$cmd\"\n");
    let e = t.render(&vars(b"x"), &Variables::new()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("`v`") && msg.contains("line 2") && msg.contains("line 3"),
        "{msg}"
    );
    assert!(msg.contains("eval"), "{msg}");
    // Without placeholders the same script renders (nothing of a value is involved).
    assert!(Template::from_script("eval \"$cmd\"")
        .render(&Variables::new(), &Variables::new())
        .is_ok());
}

#[test]
fn lengths_and_other_functions_arguments_are_not_the_value() {
    // `${#x}` is an integer whatever `x` holds; and a function's $1 is its own, not that of
    // every function (found by the engineers writing real templates).
    for script in [
        "x=${v}; n=${#x}; (( n > 3 )) && echo long",
        "die() { echo \"$1\" >&2; }; g() { local t=$1; (( t > 0 )) && echo pos; }; die \"bad ${v}\"; g 5",
    ] {
        let t = Template::from_script(script);
        let r = t.render(&vars(b"a[$(touch /nonexistent/x)] long value"), &Variables::new());
        assert!(r.is_ok(), "{script}: {}", r.unwrap_err());
    }
    // But a function that does evaluate its argument still refuses the value passed to it.
    let t = Template::from_script("g() { (( $1 > 0 )); }; die() { :; }; g ${v}");
    let e = t
        .render(&vars(b"a[$(touch x)]"), &Variables::new())
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("arguments of `g`"), "{msg}");
}

/// Backquotes whose text bash un-escapes before parsing it (`\\`, `` \` ``, `\$`, `\"`) hold
/// two levels of quoting; the 1,000,000-case fuzz run found references spliced at one level
/// and read at the other (nested backquotes, `$'…'` inside them). A placeholder there is
/// refused. Plain backquotes still render, and bash sees the value exactly.
#[test]
fn placeholders_in_backquotes_with_escapes_are_refused_and_plain_ones_render() {
    for script in [
        // Minimised from the fuzzer's failures.
        "printf '%s' \"\\`${PATH:+qb}`printf '%s' \"\nE\n{${v}\\\\\"\\\\x\"\\$')${v}\\\\'\"${v}\\\\\"'`\"",
        "( exec > o1; printf '%s' \"`printf '%s' \\\\\\`'\"${v}'`\"'E' )",
        "printf -v x '%s' \"\\x`printf '%s' \\$'\\\\n#${v}\"x'\"\"#`\"",
        "x=`printf %s \\$HOME${v}`",
        "x=\"`printf %s \\\"${v}\\\"`\"",
    ] {
        let e = refusal(script, b"x");
        assert!(e.contains("backquotes"), "{script}: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    for script in [
        "x=`printf %s ${v}`; printf %s \"$x\" > out",
        "x=`printf %s \"${v}\"`; printf %s \"$x\" > out",
        "x=`printf %s '${v}'`; printf %s \"$x\" > out",
    ] {
        let value = "it's \"$(touch PWNED)\" `x` \\ end";
        let r = Template::from_script(script)
            .render(&vars(value.as_bytes()), &Variables::new())
            .unwrap_or_else(|e| panic!("{script}: {e}"));
        run_bash(dir.path(), r.expose_bytes());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            value,
            "{script}"
        );
        assert!(!dir.path().join("PWNED").exists(), "{script}");
    }
}

/// The second 1,000,000-case fuzz run (renderer 4ead868, seed 0x18ecc4de8d6efc45, case
/// 222801): with quotes spliced into backquotes inside double quotes (and a `#` there),
/// bash 5.2 ends the backquotes elsewhere than the renderer did, and text the template had
/// single-quoted became a command substitution. A placeholder in backquotes inside double
/// quotes is refused; `$(…)` inside double quotes still renders.
#[test]
fn placeholders_in_backquotes_inside_double_quotes_are_refused() {
    // Positive control: bash misreads the spliced form (the renderer's output for the
    // fuzzer's case): a quoted `$("` became a command substitution.
    let dir = tempfile::tempdir().unwrap();
    // The renderer's output for the fuzzer's case, as it was before this rule.
    let spliced = "__csm_v0='x'\n__csm_v1='x'\n{ printf '%s' $((0x10))\"`printf '%s' \"${__csm_v0}\"''\"${__csm_v0}\"'\"\t'\"\"#`\"'x\\y'\"${__csm_v1}\"'\"$(\"\nE\n' | cat > /dev/null; }\n";
    let run = |script: &str| {
        let path = dir.path().join("control.sh");
        std::fs::write(&path, script).unwrap();
        std::process::Command::new("bash")
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let broken = String::from_utf8_lossy(&run(spliced).stderr).into_owned();
    assert!(broken.contains("command substitution"), "{broken}");
    for script in [
        "{ printf '%s' $((0x10))\"`printf '%s' ${v}'${v}\"\t'\"\"#`\"'x\\y${v}\"$(\"\nE\n' | cat > o1; }",
        "x=\"`printf %s \"${v}\"`\"",
        "x=\"a`printf %s ${v}`b\"",
    ] {
        let e = refusal(script, b"x");
        assert!(e.contains("backquotes inside double quotes"), "{script}: {e}");
    }
    let r = Template::from_script("x=\"$(printf %s \"${v}\")\"; printf %s \"$x\" > out")
        .render(&vars(b"it's `x`"), &Variables::new())
        .unwrap();
    run_bash(dir.path(), r.expose_bytes());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out")).unwrap(),
        "it's `x`"
    );
}

/// The second 1,000,000-case fuzz run (seed 0x18ecc4de8d6efc45, cases 394816 and 560913):
/// in a UTF-8 locale, bash 5.2 drops a 0x01 that follows an invalid multibyte sequence in a
/// here-string or a here-document, even outside `$(…)`. A value with 0x01 or 0x7f is refused
/// in either; others render exactly.
#[test]
fn quoting_bytes_in_here_strings_and_here_documents_are_refused() {
    // Positive control: bash loses the byte.
    let control = std::process::Command::new("bash")
        .arg("-c")
        .arg("x=$'\\xc5\\xc4\\x7f\\xe1\\x01'; IFS= read -r -d '' y <<< \"$x\"; printf %s \"$y\"")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    assert_eq!(control.stdout, b"\xc5\xc4\x7f\xe1\n");
    let t = Template::from_script("IFS= read -r -d '' x <<< \"${v}\"; printf %s \"$x\" > out");
    for bad in [&b"\xc5\xc4\x7f\xe1\x01"[..], b"a\x01b", b"a\x7fb"] {
        let e = t.render(&vars(bad), &Variables::new()).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::RenderError), "{e}");
        assert!(e.to_string().contains("here-string"), "{e}");
        for heredoc in ["cat > o1 <<-E\n\\$(${v}\n\"E\"\nE", "cat <<'E'\n${v}\nE"] {
            let e = Template::from_script(heredoc)
                .render(&vars(bad), &Variables::new())
                .unwrap_err();
            assert!(e.to_string().contains("here-document"), "{e}");
        }
    }
    let value = "it's $(touch PWNED) `x` \\ \u{e9}\x02 end";
    assert_eq!(out_of(&t, value), format!("{value}\n"));
}

/// Render `t` with `v` = `value`, run it, and return what it wrote to `out`; it must not
/// have run the value's `touch PWNED`.
fn out_of(t: &Template, value: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let r = t
        .render(&vars(value.as_bytes()), &Variables::new())
        .unwrap();
    run_bash(dir.path(), r.expose_bytes());
    assert!(!dir.path().join("PWNED").exists());
    std::fs::read_to_string(dir.path().join("out")).unwrap()
}

/// Render `script` with `v` = `value`, which must be refused as a render error; returns the
/// error's message.
fn refusal(script: &str, value: &[u8]) -> String {
    let e = Template::from_script(script)
        .render(&vars(value), &Variables::new())
        .expect_err(script);
    assert!(matches!(e.kind(), ErrorKind::RenderError), "{script}: {e}");
    e.to_string()
}

/// Two more classes from the 1,000,000-case fuzz run: an extglob group holding a placeholder
/// inside `$(…)` (bash 5.2 re-reads that text), and a value holding bash's internal quoting
/// bytes (0x01, 0x7f) in a here-document inside `$(…)` or `<(…)`, which bash 5.2 mangles.
#[test]
fn extglob_groups_in_substitutions_and_quoting_bytes_in_nested_heredocs_are_refused() {
    let e =
        Template::from_script("x=\"$( case $'${v}\\n' in @($'${v}\\n'|q)) printf 1;; esac\n)\"")
            .render(&vars(b"x"), &Variables::new())
            .unwrap_err();
    assert!(e.to_string().contains("extglob"), "{e}");
    let t = Template::from_script("x=$(cat <<E\n${v}\nE\n)\nprintf %s \"$x\" > out");
    for bad in [&b"\x01\xf0\x01"[..], b"a\x7fb"] {
        let e = t.render(&vars(bad), &Variables::new()).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::RenderError), "{e}");
        assert!(e.to_string().contains("0x01 or 0x7f"), "{e}");
    }
    // The same here-document takes any other value exactly.
    let value = "it's $(touch PWNED) `x` \\ \u{e9}\x02 end";
    assert_eq!(out_of(&t, value), value);
}

/// The third 1,000,000-case fuzz run (seed 0x18ecc7835ef12544, case 10818): quotes spliced
/// into `${x+…}` inside a case pattern stay pattern text to bash 5.2, so the value no longer
/// matches itself. A placeholder there is refused; one straight in the pattern renders.
#[test]
fn placeholders_in_parameter_words_in_case_patterns_are_refused() {
    // Positive control: the spliced pattern does not match the subject it equals.
    let control = std::process::Command::new("bash")
        .arg("-c")
        .arg("v=x; case \"$v$v\" in (\"$v\"${PATH+''\"$v\"''}) echo 1;; *) echo 0;; esac")
        .output()
        .unwrap();
    assert_eq!(control.stdout, b"0\n");
    let e = refusal(
        "case ${v}${v} in (${v}${PATH+'${v}'}) printf 1;; esac",
        b"x",
    );
    assert!(e.contains("case pattern"), "{e}");
    // The fourth run (seed 0x18ecc96a225cf5e0, case 912263): the same in the subject.
    let e = refusal("case ${PATH+'${v}'} in (${v}) printf 1;; esac", b"x");
    assert!(e.contains("case pattern or subject"), "{e}");
    let t = Template::from_script("case ${v} in (${v}) printf 1 > out;; *) printf 0 > out;; esac");
    assert_eq!(out_of(&t, "it's *[x] $(touch PWNED)"), "1");
}
