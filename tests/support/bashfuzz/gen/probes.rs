//! Probes: placeholders where bash evaluates, re-expands or interprets a value (arithmetic,
//! subscripts, integer and nameref variables however they are assigned, declaration
//! builtins with every option spelling, bash's special variables, builtins that run or
//! re-expand their arguments, command position). They observe nothing themselves: the
//! oracle checks that no canary appears; a value the renderer accepts there may make
//! bash reject the command, so their items are marked sensitive.
//!
//! Markers: `{W}` a word holding a placeholder (with lures), `{B}` a plain word around a
//! placeholder (where bash parses the word again, so that template text never turns into
//! code on its own), `{A}` an arithmetic operand around a placeholder, `{P}` a bare
//! placeholder (for inside quotes), `{N}` a unique suffix.

use super::words::ph_word;
use super::{Code, Ctx, Gen, Text};

/// Run in a subshell: the probe changes shell state later statements rely on.
const ISO: u8 = 1;
/// Needs a function (for `local`, `return`).
const FN: u8 = 2;

/// (tag, template, flags)
const PROBES: &[(&str, &str, u8)] = &[
    // Arithmetic and subscripts.
    ("arith:expansion", ": $(( {X} ))", 0),
    ("arith:command", "(( {X} ))", 0),
    ("arith:command-assign", "(( x_{N} = {X} ))", 0),
    ("arith:old", ": $[ {X} ]", 0),
    ("arith:let", "let x_{N}={A}", 0),
    ("arith:let-dq", "let \"x_{N} = {P} + 1\"", 0),
    ("arith:let-sq", "let 'x_{N} = {P} + 1'", 0),
    ("arith:let-bare", "let {A}", 0),
    ("arith:cond-eq", "[[ {A} -eq 1 ]]", 0),
    ("arith:cond-lt", "[[ 1 -lt {A} ]]", 0),
    ("arith:cond-and", "[[ {A} -ge 0 && 1 -le {A} ]]", 0),
    ("arith:test-eq", "[ {W} -eq 1 ]", 0),
    ("arith:test-gt", "test {W} -gt 0", 0),
    ("arith:subscript-assign", "a_{N}=(); a_{N}[{A}]=1", 0),
    (
        "arith:subscript-expand",
        "a_{N}=(1); : \"${a_{N}[{A}]}\"",
        0,
    ),
    ("arith:subscript-declare", "declare a_{N}[{A}]=x", 0),
    (
        "arith:subscript-unset-sq",
        "a_{N}=(1); unset 'a_{N}[{A}]'",
        0,
    ),
    ("arith:subscript-unset", "a_{N}=(1); unset a_{N}[{A}]", 0),
    ("arith:subscript-v", "a_{N}=(1); [[ -v a_{N}[{A}] ]]", 0),
    (
        "arith:substring-off",
        "s_{N}=abcdef; : \"${s_{N}:{X}:1}\"",
        0,
    ),
    ("arith:substring-len", "s_{N}=abcdef; : ${s_{N}:1:{A}}", 0),
    ("arith:positional-slice", "set -- a b c; : \"${@:{A}}\"", 0),
    (
        "arith:for-init",
        "for ((i_{N}={X}; i_{N}<1 && i_{N}>-3; i_{N}++)); do :; done",
        0,
    ),
    (
        "arith:for-cond",
        "for ((i_{N}=0; i_{N}<{A} && i_{N}<2; i_{N}++)); do :; done",
        0,
    ),
    ("arith:comsub-in-arith", ": $(( $(printf %s {B}) + 1 ))", 0),
    ("arith:fn-body-cond", "f_{N}() [[ {A} -eq 1 ]]; f_{N}", 0),
    ("arith:fn-body-arith", "f_{N}() (( {X} )); f_{N}", 0),
    ("arith:printf-d", "printf '%d' {W} >/dev/null", 0),
    ("arith:return", "f_{N}() { return {A}; }; f_{N}", 0),
    ("arith:shift", "set -- a b; shift {A}", 0),
    ("arith:break", "for _ in 1; do break {A}; done", ISO),
    ("arith:exit", "exit {A}", ISO),
    ("arith:read-n", "read -n {A} x_{N} </dev/null", 0),
    ("arith:read-t", "read -t {A} x_{N} </dev/null", 0),
    // Integer variables, however assigned.
    ("int:declare", "declare -i x_{N}={A}", 0),
    ("int:typeset", "typeset -i x_{N}={A}", 0),
    ("int:local", "local -i x_{N}={A}", FN),
    ("int:assign", "declare -i x_{N}; x_{N}={A}", 0),
    ("int:append", "declare -i x_{N}; x_{N}+={A}", 0),
    ("int:array", "declare -ai a_{N}=({A})", 0),
    ("int:array-ia", "declare -ia a_{N}=({A} {A})", 0),
    (
        "int:array-split-opts",
        "declare -i -a a_{N}; a_{N}[0]={A}",
        0,
    ),
    ("int:array-append", "declare -a -i a_{N}; a_{N}+=({A})", 0),
    ("int:opt-sq", "declare '-i' x_{N}={A}", 0),
    ("int:opt-dq-part", "declare -\"i\" x_{N}={A}", 0),
    ("int:opt-escaped", "declare \\-i x_{N}={A}", 0),
    ("int:opt-dashdash", "declare -i -- x_{N}={A}", 0),
    ("int:opt-plus", "declare -i x_{N}; declare +i x_{N}={A}", 0),
    ("int:opt-il", "declare -il x_{N}={A}", 0),
    ("int:opt-ix", "declare -ix x_{N}={A}", 0),
    ("int:opt-xi", "typeset -xi x_{N}={A}", 0),
    ("int:opt-ri", "declare -ri x_{N}={A}", 0),
    ("int:opt-var", "o_{N}=-i; declare $o_{N} x_{N}={A}", 0),
    ("int:opt-split", "declare -i\\\n x_{N}={A}", 0),
    ("int:redeclare", "declare -i x_{N}; declare x_{N}={A}", 0),
    ("int:export", "declare -i x_{N}; export x_{N}={A}", 0),
    ("int:readonly", "declare -i x_{N}; readonly x_{N}={A}", 0),
    (
        "int:typeset-plain",
        "declare -i x_{N}; typeset x_{N}={A}",
        0,
    ),
    (
        "int:local-inherit",
        "shopt -s localvar_inherit; declare -i x_{N}; f_{N}() { local x_{N}={A}; }; f_{N}",
        ISO,
    ),
    ("int:prefix-assign", "declare -i x_{N}; x_{N}={A} :", 0),
    (
        "int:prefix-assign-fn",
        "declare -i x_{N}; f_{N}() { :; }; x_{N}={A} f_{N}",
        0,
    ),
    (
        "int:for",
        "declare -i x_{N}; for x_{N} in {A}; do :; done",
        0,
    ),
    ("int:read", "declare -i x_{N}; read x_{N} <<< {A}", 0),
    (
        "int:read-r",
        "declare -i x_{N}; IFS= read -r x_{N} <<< {A}",
        0,
    ),
    (
        "int:printf-v",
        "declare -i x_{N}; printf -v x_{N} '%s' {A}",
        0,
    ),
    ("int:default-assign", "declare -i x_{N}; : ${x_{N}:={A}}", 0),
    (
        "int:default-assign-dq",
        "declare -i x_{N}; : \"${x_{N}={P}}\"",
        0,
    ),
    (
        "int:mapfile",
        "declare -ai a_{N}; mapfile -t a_{N} <<< {A}",
        0,
    ),
    (
        "int:readarray",
        "declare -ai a_{N}; readarray a_{N} <<< {A}",
        0,
    ),
    ("int:read-a", "declare -ai a_{N}; read -a a_{N} <<< {A}", 0),
    (
        "int:getopts-optarg",
        "declare -i OPTARG; OPTIND=1; getopts a: o_{N} -a {A}",
        ISO,
    ),
    (
        "int:let-copy",
        "declare -i x_{N}; x_{N}=$(printf %s {A})",
        0,
    ),
    ("int:assoc", "declare -Ai m_{N}; m_{N}[k]={A}", 0),
    ("int:assoc-compound", "declare -Ai m_{N}=([k]={A})", 0),
    (
        "int:via-nameref",
        "declare -i x_{N}; declare -n r_{N}=x_{N}; r_{N}={A}",
        0,
    ),
    (
        "int:in-function",
        "declare -i x_{N}; f_{N}() { x_{N}={A}; }; f_{N}",
        0,
    ),
    (
        "int:later-attribute",
        "f_{N}() { x_{N}={A}; }; declare -i x_{N}; f_{N}",
        0,
    ),
    ("int:array-assign", "declare -ai a_{N}; a_{N}=({A})", 0),
    // Array compound assignment through declaration builtins.
    ("array:declare-a", "declare -a x_{N}={B}", 0),
    ("array:declare-a-dq", "declare -a x_{N}=\"{P}\"", 0),
    ("array:declare-A", "declare -A x_{N}={B}", 0),
    ("array:typeset-a", "typeset -a x_{N}={B}", 0),
    ("array:local-a", "local -a x_{N}={B}", FN),
    ("array:declare-g-a", "declare -g -a x_{N}={B}", 0),
    ("array:readonly-a", "readonly -a x_{N}={B}", 0),
    ("array:quoted-arg", "declare -a \"x_{N}={P}\"", 0),
    ("array:quoted-arg-plain", "declare \"x_{N}={P}\"", 0),
    ("array:export-quoted", "export \"x_{N}={P}\"", 0),
    ("array:existing", "x_{N}=(); declare x_{N}={B}", 0),
    ("array:append", "declare -a x_{N}+={B}", 0),
    // Name references and names.
    ("nameref:declare", "declare -n r_{N}={B}; : \"$r_{N}\"", ISO),
    (
        "nameref:local",
        "local -n r_{N}={B}; : \"$r_{N}\"",
        FN | ISO,
    ),
    ("nameref:typeset", "typeset -n r_{N}={B}", ISO),
    (
        "nameref:assign",
        "declare -n r_{N}; r_{N}={B}; : \"$r_{N}\"",
        ISO,
    ),
    (
        "nameref:for",
        "declare -n r_{N}; for r_{N} in {B}; do : \"$r_{N}\"; done",
        ISO,
    ),
    (
        "nameref:read",
        "declare -n r_{N}; read r_{N} <<< {B}; : \"$r_{N}\"",
        ISO,
    ),
    (
        "nameref:printf-v",
        "declare -n r_{N}; printf -v r_{N} %s {B}; : \"$r_{N}\"",
        ISO,
    ),
    (
        "nameref:default",
        "declare -n r_{N}; : ${r_{N}:={B}}; : \"$r_{N}\"",
        ISO,
    ),
    (
        "nameref:opt-sq",
        "declare '-n' r_{N}={B}; : \"$r_{N}\"",
        ISO,
    ),
    (
        "nameref:opt-dq",
        "declare -\"n\" r_{N}={B}; : \"$r_{N}\"",
        ISO,
    ),
    (
        "nameref:opt-dashdash",
        "declare -n -- r_{N}={B}; : \"$r_{N}\"",
        ISO,
    ),
    (
        "nameref:target-data",
        "declare -n r_{N}=t_{N}; r_{N}={B}",
        0,
    ),
    ("name:cond-v", "[[ -v {B} ]]", 0),
    ("name:cond-R", "[[ -R {B} ]]", 0),
    ("name:test-v", "test -v {B}", 0),
    ("name:bracket-v", "[ -v {B} ]", 0),
    ("name:printf-v", "printf -v {B} %s x", ISO),
    ("name:read", "read {B} <<< x", ISO),
    ("name:unset", "unset {B}", ISO),
    ("name:unset-v", "unset -v {B}", ISO),
    ("name:declare", "declare {B}", ISO),
    ("name:export", "export {B}", ISO),
    ("name:indirect", "x_{N}={B}; : \"${!x_{N}}\"", 0),
    ("name:indirect-arith", "x_{N}={B}; : $(( x_{N} ))", 0),
    ("name:indirect-cond", "x_{N}={B}; [[ x_{N} -eq 1 ]]", 0),
    ("name:indirect-subscript", "x_{N}={B}; a_{N}[x_{N}]=1", 0),
    ("name:indirect-let", "x_{N}={B}; let y_{N}=x_{N}", 0),
    ("name:indirect-int", "x_{N}={B}; declare -i y_{N}=x_{N}", 0),
    ("transform:P", "x_{N}={B}; : \"${x_{N}@P}\"", 0),
    ("transform:E", "x_{N}={B}; : \"${x_{N}@E}\"", 0),
    ("transform:Q", "x_{N}={B}; : \"${x_{N}@Q}\"", 0),
    ("transform:A", "x_{N}={B}; : \"${x_{N}@A}\"", 0),
    // bash's own variables.
    ("special:OPTIND", "OPTIND={A}", 0),
    (
        "special:OPTIND-getopts",
        "OPTIND={A}; getopts a o_{N} -a",
        0,
    ),
    ("special:RANDOM", "RANDOM={A}", 0),
    ("special:SECONDS", "SECONDS={A}", 0),
    ("special:LINENO", "LINENO={A}", 0),
    ("special:HISTCMD", "HISTCMD={A}", 0),
    ("special:BASH_ARGV0", "BASH_ARGV0={B}", 0),
    ("special:COLUMNS", "COLUMNS={A}", 0),
    ("special:LINES", "LINES={A}", 0),
    ("special:IFS", "IFS={B}; printf '%s' a b >/dev/null", ISO),
    ("special:PS4", "PS4={B}; set -x; :; set +x", ISO),
    ("special:PROMPT_COMMAND", "PROMPT_COMMAND={B}", 0),
    ("special:BASH_ENV", "BASH_ENV={B} bash -c :", 0),
    (
        "special:BASH_ENV-export",
        "export BASH_ENV={B}; bash -c :",
        ISO,
    ),
    ("special:FUNCNEST", "FUNCNEST={A}", ISO),
    ("special:HISTSIZE", "HISTSIZE={A}", 0),
    ("special:OPTERR", "OPTERR={A}", 0),
    ("special:TMOUT", "TMOUT={A}", ISO),
    ("special:SRANDOM", "SRANDOM={A}", 0),
    ("special:EPOCHSECONDS", "EPOCHSECONDS={A}", 0),
    ("special:BASH_COMPAT", "BASH_COMPAT={B}", ISO),
    ("special:TIMEFORMAT", "TIMEFORMAT={W}; time :", 0),
    ("special:BASH_XTRACEFD", "BASH_XTRACEFD={A}", ISO),
    ("special:declare-OPTIND", "declare OPTIND={A}", 0),
    ("special:local-OPTIND", "local OPTIND={A}", FN),
    ("special:for-OPTIND", "for OPTIND in {A}; do :; done", 0),
    ("special:read-RANDOM", "read RANDOM <<< {A}", 0),
    ("special:printf-v-SECONDS", "printf -v SECONDS %s {A}", 0),
    ("special:export-LINENO", "export LINENO={A}", 0),
    ("special:default-COLUMNS", ": ${COLUMNS:={A}}", 0),
    ("special:let-OPTIND", "let OPTIND={A}", 0),
    (
        "special:nameref-OPTIND",
        "declare -n r_{N}=OPTIND; r_{N}={A}",
        ISO,
    ),
    ("special:prefix-RANDOM", "RANDOM={A} :", 0),
    ("special:prefix-OPTIND", "OPTIND={A} true", 0),
    // Builtins that evaluate or re-expand.
    ("eval:word", "eval {B}", 0),
    ("eval:dq", "eval \"echo {P}\"", 0),
    ("eval:sq", "eval 'echo {P}'", 0),
    ("eval:args", "eval echo {B}", 0),
    ("eval:builtin", "builtin eval {B}", 0),
    ("eval:command", "command eval {B}", 0),
    ("eval:source-herestring", ". /dev/stdin <<< {B}", 0),
    ("eval:source-procsub", "source <(printf '%s\\n' {B})", 0),
    ("eval:trap-exit", "trap {B} EXIT", ISO),
    ("eval:trap-dq", "trap \"echo {P}\" EXIT", ISO),
    (
        "eval:trap-return",
        "trap -- {B} RETURN; f_{N}() { :; }; f_{N}",
        ISO,
    ),
    ("eval:trap-debug", "trap {B} DEBUG; :", ISO),
    ("eval:compgen-W", "compgen -W {B} x >/dev/null", 0),
    (
        "eval:compgen-W-dq",
        "compgen -W \"a {P}\" -- a >/dev/null",
        0,
    ),
    ("eval:compgen-W-sq", "compgen -W 'a {P}' -- a >/dev/null", 0),
    ("eval:complete-W", "complete -W {B} cmd_{N}", 0),
    (
        "eval:alias",
        "shopt -s expand_aliases; alias al_{N}={B}\nal_{N}",
        0,
    ),
    (
        "eval:alias-sq",
        "shopt -s expand_aliases; alias al_{N}='echo {P}'\nal_{N}",
        0,
    ),
    ("eval:mapfile-C", "mapfile -C {B} -c 1 a_{N} <<< x", 0),
    (
        "eval:mapfile-C-dq",
        "readarray -C \"echo {P}\" -c 1 a_{N} < <(printf 'a\\nb\\n')",
        0,
    ),
    ("eval:bash-c", "bash -c {B}", 0),
    ("eval:bash-c-dq", "bash -c \"echo {P}\"", 0),
    ("eval:sh-c", "sh -c {B}", 0),
    ("eval:exec", "exec {B}", ISO),
    ("eval:command-word", "command {B}", 0),
    ("eval:builtin-word", "builtin {B}", 0),
    ("eval:printf-format", "printf {W} >/dev/null", 0),
    ("eval:printf-b", "printf '%b' {W} >/dev/null", 0),
    ("eval:echo-e", "echo -e {W} >/dev/null", 0),
    ("eval:getopts", "getopts {B} o_{N}", 0),
    ("eval:set", "set {B}", ISO),
    ("eval:shopt", "shopt -s {B}", ISO),
    ("eval:cd", "cd {B}", ISO),
    ("eval:umask", "umask {B}", ISO),
    ("eval:ulimit", "ulimit -t {B}", ISO),
    ("eval:enable", "enable -n {B}", ISO),
    ("eval:hash", "hash -p /bin/true {B}", ISO),
    ("eval:type", "type {W} >/dev/null", 0),
    ("eval:kill-l", "kill -l {W} >/dev/null", 0),
    ("eval:wait", "wait {B}", 0),
    ("eval:declare-f", "declare -f {W} >/dev/null", 0),
    ("eval:test", "test {W}", 0),
    ("eval:cond", "[[ {W} ]]", 0),
    ("eval:cond-regex", "[[ x =~ {W} ]]", 0),
    ("eval:cond-o", "[[ -o {B} ]]", 0),
    ("eval:cond-t", "[[ -t {A} ]]", 0),
    ("eval:read-d", "read -d {B} x_{N} </dev/null", 0),
    ("eval:read-u", "read -u {B} x_{N}", 0),
    ("eval:input-redirect", ": < {W}", 0),
    // A value in command position.
    ("cmdpos:word", "{W}", 0),
    ("cmdpos:with-arg", "{W} {W}", 0),
    ("cmdpos:prefix", "x_{N}={W} {W}", 0),
    ("cmdpos:dq", "\"{P}\" x", 0),
];

/// An arithmetic operand around a placeholder; `parens` only where a `(` is arithmetic
/// (not in a command word).
fn arith(g: &mut Gen, parens: bool) -> Text {
    let p = g.ph();
    let mut t = Text::new();
    match g.rng.below(7) {
        0 => t.lit("\"").ph(p).lit("\""),
        1 => t.ph(p).lit("+1"),
        2 => t.lit("1+").ph(p),
        3 if parens => t.lit("(").ph(p).lit(")"),
        _ => t.ph(p),
    };
    t
}

/// A word around a placeholder with no text that could be code.
fn plain_word(g: &mut Gen) -> Text {
    let p = g.ph();
    let mut t = Text::new();
    match g.rng.below(8) {
        0 => t.lit("\"").ph(p).lit("\""),
        1 => t.lit("'").ph(p).lit("'"),
        2 => t.lit("a").ph(p),
        3 => t.lit("\"a").ph(p).lit("b\""),
        _ => t.ph(p),
    };
    t
}

/// A probe word.
fn probe_word(g: &mut Gen, depth: u32) -> Text {
    let p = g.ph();
    match g.rng.below(10) {
        0..=3 => ph_word(g, depth).0,
        4..=5 => {
            let mut t = Text::new();
            t.lit("\"").ph(p).lit("\"");
            t
        }
        _ => {
            let mut t = Text::new();
            t.ph(p);
            t
        }
    }
}

/// Expand a probe template.
fn expand(g: &mut Gen, tpl: &str, depth: u32) -> Text {
    let n = g.uid();
    let mut t = Text::new();
    let mut rest = tpl;
    while let Some(i) = rest.find('{') {
        let (a, b) = rest.split_at(i);
        t.lit(a);
        if let Some(r) = b.strip_prefix("{W}") {
            let w = probe_word(g, depth);
            t.cat(&w);
            rest = r;
        } else if let Some(r) = b.strip_prefix("{B}") {
            let w = plain_word(g);
            t.cat(&w);
            rest = r;
        } else if let Some(r) = b.strip_prefix("{X}") {
            let w = arith(g, true);
            t.cat(&w);
            rest = r;
        } else if let Some(r) = b.strip_prefix("{A}") {
            let w = arith(g, false);
            t.cat(&w);
            rest = r;
        } else if let Some(r) = b.strip_prefix("{P}") {
            let p = g.ph();
            t.ph(p);
            rest = r;
        } else if let Some(r) = b.strip_prefix("{N}") {
            t.lit(&n.to_string());
            rest = r;
        } else {
            t.lit("{");
            rest = &b[1..];
        }
    }
    t.lit(rest);
    t
}

/// Families and their weights: the contexts a renderer must recognise (arithmetic,
/// integer and nameref variables, compound assignments, bash's own variables) come up
/// more often than the ones it can only refuse wholesale.
const FAMILIES: &[(&str, u32)] = &[
    ("arith:cond", 6),
    ("arith:", 16),
    ("int:", 16),
    ("array:", 8),
    ("nameref:", 8),
    ("special:", 12),
    ("name:", 8),
    ("eval:", 14),
    ("transform:", 3),
    ("cmdpos:", 3),
];

/// One probe statement.
pub fn probe(g: &mut Gen, ctx: Ctx) -> Code {
    if !PROBES.iter().any(|p| g.allowed(p.0)) {
        return Code::of(":");
    }
    let total: u32 = FAMILIES.iter().map(|f| f.1).sum();
    let (tag, tpl, flags) = loop {
        let mut r = g.rng.below(total as usize) as u32;
        let fam = FAMILIES
            .iter()
            .find(|f| {
                let hit = r < f.1;
                r = r.saturating_sub(f.1);
                hit
            })
            .map_or("arith:", |f| f.0);
        let members: Vec<&(&str, &str, u8)> =
            PROBES.iter().filter(|p| p.0.starts_with(fam)).collect();
        let p = **g.rng.pick(&members);
        if g.allowed(p.0) {
            break p;
        }
    };
    g.tag(tag);
    g.sensitive = true;
    let body = expand(g, tpl, ctx.depth);
    let oneline = !tpl.contains('\n');
    let mut t = Text::new();
    if flags & FN != 0 && !ctx.in_fn {
        let n = g.uid();
        let open = if flags & ISO != 0 { "( " } else { "" };
        let close = if flags & ISO != 0 { " )" } else { "" };
        t.lit(&format!("{open}p_{n}() {{ "))
            .cat(&body)
            .lit(&format!("\n}}; p_{n}{close}"));
        return Code {
            head: t,
            bodies: Text::new(),
            oneline: false,
        };
    }
    if flags & ISO != 0 {
        t.lit("( ")
            .cat(&body)
            .lit(if oneline { " )" } else { "\n)" });
    } else {
        t.cat(&body);
    }
    Code {
        head: t,
        bodies: Text::new(),
        oneline,
    }
}
