//! Compound commands and functions around statement lists: every form bash has for
//! grouping, branching, looping (once), functions (defined in every spelling, then called,
//! or never called for dead code), command and process substitution, pipelines and
//! coprocesses. Bodies that never run carry observations that must not appear.

use super::{Code, Ctx, Gen, Text};

/// `acc` followed by keyword `kw`, separated as bash requires (pending bodies first).
fn kw_after(g: &mut Gen, acc: Code, kw: &str, needs_sep: bool) -> Code {
    let kw = g.kw(kw);
    if !acc.bodies.0.is_empty() {
        let mut head = acc.close();
        head.lit(&kw);
        return Code {
            head,
            bodies: Text::new(),
            oneline: false,
        };
    }
    let mut head = acc.head;
    let sep = if needs_sep {
        *g.rng.pick(&["; ", ";", "\n", " ;\n"])
    } else {
        *g.rng.pick(&[" ", "\n", ""])
    };
    head.lit(sep).lit(&kw);
    Code {
        head,
        bodies: Text::new(),
        oneline: acc.oneline && !sep.contains('\n') && !kw.contains('\n'),
    }
}

/// `acc` (ending in an opening keyword) followed by a body.
fn body_after(g: &mut Gen, acc: Code, body: Code) -> Code {
    let mut head = acc.head;
    let mut oneline = acc.oneline && body.oneline;
    if g.rng.chance(1, 4) {
        head.lit("\n");
        oneline = false;
    } else {
        head.lit(" ");
    }
    head.cat(&body.head);
    Code {
        head,
        bodies: body.bodies,
        oneline,
    }
}

fn body(g: &mut Gen, ctx: Ctx, live: bool) -> Code {
    lead_probe(
        g,
        Ctx {
            live: ctx.live && live,
            ..ctx
        },
    )
}

/// A statement list that often starts with a probe: the first command of a body is where
/// a lexer that misreads the header (`f(){`, `f()(`, `do`, `then`, `in x)`) misses a
/// context.
fn lead_probe(g: &mut Gen, ctx: Ctx) -> Code {
    if g.rng.chance(1, 3) {
        let first = g.stmt_probe(ctx);
        if g.rng.chance(1, 2) {
            return first;
        }
        let rest = g.stmts(ctx);
        return g.sep(ctx, first, rest);
    }
    g.stmts(ctx)
}

/// A compound wrapper around fresh statements.
pub fn wrapped(g: &mut Gen, ctx: Ctx) -> Code {
    match g.rng.below(100) {
        0..=19 => function(g, ctx),
        20..=27 => {
            g.tag("c:group");
            let b = body(g, ctx, true);
            let open = g.kw("{");
            g.enclose(&format!("{open} "), b, "}", true)
        }
        28..=33 => {
            g.tag("c:subshell");
            let b = body(g, ctx, true);
            g.enclose("( ", b, ")", false)
        }
        34..=43 => if_(g, ctx),
        44..=52 => loop_(g, ctx),
        53..=62 => case(g, ctx),
        63..=77 => subst(g, ctx),
        _ => misc(g, ctx),
    }
}

fn if_(g: &mut Gen, ctx: Ctx) -> Code {
    let mut acc = Code::of("");
    let form = g.rng.below(4);
    g.tag(format!("c:if{form}"));
    let conds_true = ["true", "[[ -z '' ]]", "(( 1 ))", "! false", "[ x ]"];
    let conds_false = ["false", "[[ -n '' ]]", "(( 0 ))", "! true"];
    let t = *g.rng.pick(&conds_true);
    let f = *g.rng.pick(&conds_false);
    let arms: Vec<(String, bool)> = match form {
        0 => vec![(format!("if {t}; then"), true)],
        1 => vec![
            (format!("if {f}; then"), false),
            (format!("elif {t}; then"), true),
            ("else".into(), false),
        ],
        2 => vec![(format!("if {f}; then"), false), ("else".into(), true)],
        _ => vec![(format!("if {t}\nthen"), true), ("else".into(), false)],
    };
    for (k, (kw, live)) in arms.into_iter().enumerate() {
        acc = if k == 0 {
            let kw = kw.replacen("if", &g.kw("if"), 1);
            Code::of(&kw)
        } else {
            kw_after(g, acc, &kw, true)
        };
        let b = body(g, ctx, live);
        acc = body_after(g, acc, b);
    }
    kw_after(g, acc, "fi", true)
}

fn loop_(g: &mut Gen, ctx: Ctx) -> Code {
    let n = g.uid();
    let form = g.rng.below(9);
    g.tag(format!("c:loop{form}"));
    let (head, live, tail) = match form {
        0 => (format!("while (( w_{n}++ < 1 )); do"), true, ""),
        1 => (format!("until (( w_{n}++ >= 1 )); do"), true, ""),
        2 => ("for _ in 1; do".to_string(), true, ""),
        3 => (format!("for x_{n} in a\ndo"), true, ""),
        4 => (format!("for ((k_{n}=0; k_{n}<1; k_{n}++)); do"), true, ""),
        5 => ("for ((;;)); do".to_string(), true, "break"),
        6 => ("while false; do".to_string(), false, ""),
        7 => (format!("for x_{n} in ; do"), false, ""),
        _ => (format!("select x_{n} in a b; do"), false, "break"),
    };
    let first = head.split(' ').next().unwrap().to_string();
    let head = head.replacen(&first, &g.kw(&first), 1);
    let acc = Code::of(&head);
    let mut b = body(g, ctx, live);
    if !tail.is_empty() {
        let t = Code::of(tail);
        b = g.sep(ctx, b, t);
    }
    let acc = body_after(g, acc, b);
    let mut done = kw_after(g, acc, "done", true);
    if form == 8 {
        // At end of input `select` writes a newline to stdout: in `: <(…)` nobody reads
        // that pipe, and SIGPIPE would end the substitution before its later observations
        // (found by a 1,000,000-case run: the template, not the renderer).
        done.head.lit(" </dev/null >/dev/null");
    }
    done
}

fn case(g: &mut Gen, ctx: Ctx) -> Code {
    let form = g.rng.below(7);
    g.tag(format!("c:case{form}"));
    // (pattern, live, terminator)
    let arms: Vec<(&str, bool, &str)> = match form {
        0 => vec![("x)", true, ";;")],
        1 => vec![("(x)", true, ";;")],
        2 => vec![("y)", false, ";;"), ("x|z)", true, ";;")],
        3 => vec![("*)", true, ";;")],
        4 => vec![("x)", true, ";&"), ("y)", true, ";;"), ("*)", false, ";;")],
        5 => vec![("x)", true, ";;&"), ("y)", false, ";;"), ("*)", true, ";;")],
        _ if ctx.extglob => vec![("@(x|y))", true, ";;"), ("!(x))", false, ";;")],
        _ => vec![("[x])", true, ";;")],
    };
    let open = format!("{} x {}", g.kw("case"), g.kw("in"));
    let mut acc = Code::of(&open);
    for (k, (pat, live, term)) in arms.into_iter().enumerate() {
        if k == 0 {
            acc.head.lit(" ");
        }
        acc = kw_after(g, acc, pat, false);
        let b = body(g, ctx, live);
        acc = body_after(g, acc, b);
        acc = kw_after(g, acc, term, false);
    }
    kw_after(g, acc, "esac", false)
}

/// Command and process substitution, backquotes.
fn subst(g: &mut Gen, ctx: Ctx) -> Code {
    let form = g.rng.below(7);
    g.tag(format!("c:subst{form}"));
    let inner = Ctx {
        in_subst: ctx.in_subst || form != 5,
        in_bq: ctx.in_bq || form == 5,
        ..ctx
    };
    let b = body(g, inner, true);
    let closed = if b.bodies.0.is_empty() && g.rng.chance(1, 2) {
        b.head.clone()
    } else {
        b.close()
    };
    let n = g.uid();
    let mut t = Text::new();
    match form {
        0 => {
            t.lit(": \"$( ").cat(&closed).lit(")\"");
        }
        1 => {
            t.lit(": $( ").cat(&closed).lit(" )");
        }
        2 => {
            t.lit(&format!("x_{n}=$( ")).cat(&closed).lit(")");
        }
        3 => {
            t.lit(": <( ").cat(&closed).lit(")");
        }
        4 => {
            t.lit(": > >( ").cat(&closed).lit(")");
        }
        5 => {
            let mut inner = closed;
            inner = inner.backquoted();
            t.lit(": `").cat(&inner).lit("`");
        }
        _ => {
            t.lit(&format!("x_{n}=\"$( ")).cat(&closed).lit(")\"");
        }
    }
    Code::new(t)
}

fn misc(g: &mut Gen, ctx: Ctx) -> Code {
    let form = g.rng.below(12);
    g.tag(format!("c:misc{form}"));
    let live = !matches!(form, 6 | 7);
    let b = body(g, ctx, live);
    let (pre, post, sep) = match form {
        // Not `time` first: bash 5.2.15 rejects `$( time ( … ) )`.
        0 => (":; time { ", "}", true),
        1 => ("! { ", "}", true),
        2 => ("{ ", "} | cat", true),
        3 => ("true && { ", "}", true),
        4 => ("false || { ", "}", true),
        5 => ("[[ -z '' ]] && ( ", ")", false),
        6 => ("false && { ", "}", true),
        7 => ("true || { ", "}", true),
        8 => ("coproc { ", "}", true),
        9 => ("{ ", "} 2>/dev/null", true),
        10 => ("{ ", "} </dev/null", true),
        _ => (":; time ( ", ")", false),
    };
    g.enclose(pre, b, post, sep)
}

/// A function in one of bash's spellings, then a call (or none: dead code).
fn function(g: &mut Gen, ctx: Ctx) -> Code {
    let n = g.uid();
    let name = match g.rng.below(6) {
        0 => format!("f-{n}"),
        1 => format!("f.{n}"),
        _ => format!("f_{n}"),
    };
    let called = g.rng.chance(5, 6);
    let inner = Ctx {
        in_fn: true,
        live: ctx.live && called,
        ..ctx
    };
    let form = g.rng.below(16);
    g.tag(format!("fn:{form}"));
    let kwf = g.kw("function");
    let def = match form {
        0 => {
            let b = lead_probe(g, inner);
            g.enclose(&format!("{name}() {{ "), b, "}", true)
        }
        1 => {
            let b = lead_probe(g, inner);
            g.enclose(&format!("{name}(){{ "), b, "}", true)
        }
        2 => {
            let b = lead_probe(g, inner);
            g.enclose(&format!("{name} () {{ "), b, "}", true)
        }
        3 => {
            let b = lead_probe(g, inner);
            g.enclose(&format!("{name}()\n{{\n"), b, "}", true)
        }
        4 => {
            let b = lead_probe(g, inner);
            g.enclose(&format!("{kwf} {name} {{ "), b, "}", true)
        }
        5 => {
            let b = lead_probe(g, inner);
            g.enclose(&format!("{kwf} {name}() {{ "), b, "}", true)
        }
        6 => {
            let b = lead_probe(g, inner);
            g.enclose(&format!("{kwf} {name} () {{ "), b, "}", true)
        }
        7 => {
            let b = lead_probe(g, inner);
            g.enclose(&format!("{name}() ( "), b, ")", false)
        }
        8 => {
            let b = lead_probe(g, inner);
            g.enclose(&format!("{name}()( "), b, ")", false)
        }
        9 => {
            let b = lead_probe(g, inner);
            g.enclose(&format!("{kwf} {name}() ( "), b, ")", false)
        }
        10 => {
            let c = if_(g, inner);
            let mut h = Text::of(&format!("{name}() "));
            h.cat(&c.head);
            Code { head: h, ..c }
        }
        11 => {
            let c = loop_(g, inner);
            let mut h = Text::of(&format!("{name}() "));
            h.cat(&c.head);
            Code { head: h, ..c }
        }
        12 => {
            let c = case(g, inner);
            let mut h = Text::of(&format!("{kwf} {name} "));
            h.cat(&c.head);
            Code { head: h, ..c }
        }
        13 => {
            let b = lead_probe(g, inner);
            g.enclose(&format!("{name}( ) {{ "), b, "} >/dev/null", true)
        }
        14 => {
            let b = lead_probe(g, inner);
            g.enclose(&format!("{name}()\n\n{{ "), b, "} 2>/dev/null", true)
        }
        _ => {
            let c = case(g, inner);
            let mut h = Text::of(&format!("{name}()"));
            h.cat(&c.head);
            Code { head: h, ..c }
        }
    };
    if !called {
        return def;
    }
    let call = match g.rng.below(6) {
        0 => format!("{name} arg"),
        1 => format!("\"{name}\""),
        2 => format!("{name} | cat"),
        3 => format!(": \"$({name})\""),
        4 => format!("{name} </dev/null"),
        _ => name.clone(),
    };
    g.sep(ctx, def, Code::of(&call))
}
