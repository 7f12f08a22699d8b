//! Here-documents: quoted (`<<'E'`, `<<"E"`, `<<\E`, `<<E''`, `<<-'E'`) and unquoted,
//! several pending on one line, inside `$(…)`, `<(…)` and backquotes, with bodies whose
//! lines nearly match the delimiter; and look-alikes that bash reads as something else
//! (`$(:)#'…<<'E'…'` is one word, not a comment followed by a here-document).

use super::{delim, lit, Code, Ctx, Exp, Gen, Text};

/// Lures for unquoted bodies: text and meaning (`$`, `` ` `` and `\` are live there).
const UNQUOTED_BODY: &[(&str, &str)] = &[
    ("'", "'"),
    ("\"", "\""),
    ("\\\"", "\\\""),
    ("\\$(", "$("),
    ("\\`", "`"),
    ("\\\\", "\\"),
    ("\\x", "\\x"),
    ("#", "#"),
    (")", ")"),
    ("(", "("),
    ("$((1))", "1"),
    ("${_u:-q}", "q"),
    ("$(printf x)", "x"),
    ("\\\n", ""),
    ("<<E", "<<E"),
    ("'E'", "'E'"),
    ("a b", "a b"),
    ("\t", "\t"),
];

/// Lures for quoted bodies, taken raw.
const QUOTED_BODY: &[&str] = &[
    "'", "\"", "$(", "`", "\\", "#", ")", "(", "${x}", "$((", "<<E", "'E'", "\"E\"", "a b", "\t",
    "\\\\", "$'", "xEOF'", "}", "esac",
];

/// Near-miss lines for a delimiter `d` (never equal to it, never starting with it).
fn near_miss(g: &mut Gen, d: &str) -> String {
    match g.rng.below(5) {
        0 => format!(" {d}"),
        1 => format!("x{d}"),
        2 => format!("'{d}'"),
        3 => format!("\"{d}\""),
        _ => format!("#{d}"),
    }
}

/// The body of a here-document ended by `d`: template text and meaning. Lines never equal
/// the delimiter, and (inside `$(…)`) never start with it.
fn body(g: &mut Gen, d: &str, quoted: bool, strip_tabs: bool, tame: bool) -> (Text, Vec<Exp>) {
    let mut t = Text::new();
    let mut e = Vec::new();
    let lines = g.rng.range(1, 3);
    let ph_line = g.rng.below(lines);
    for l in 0..lines {
        if strip_tabs && g.rng.chance(1, 3) {
            // Leading tabs in the template are stripped by `<<-`.
            t.lit("\t");
        }
        if g.rng.chance(1, 4) && !tame {
            let s = near_miss(g, d);
            t.lit(&s);
            e.push(lit(&s));
        }
        let parts = if l == ph_line {
            g.rng.range(1, 2)
        } else {
            g.rng.range(0, 1)
        };
        for _ in 0..parts {
            for _ in 0..g.rng.range(0, 2) {
                if tame {
                    let s = *g.rng.pick(&["x", " ", "#", "a b", "E", ";"]);
                    t.lit(s);
                    e.push(lit(s));
                } else if quoted {
                    let s = *g.rng.pick(QUOTED_BODY);
                    // `<<-` strips every leading tab, whatever its origin.
                    if strip_tabs && s.starts_with('\t') {
                        continue;
                    }
                    t.lit(s);
                    e.push(lit(s));
                } else {
                    let (a, b) = *g.rng.pick(UNQUOTED_BODY);
                    // A continuation would join the next line: keep it off the last
                    // line, where it would swallow the delimiter.
                    if (a.ends_with('\n') && l + 1 == lines)
                        || (strip_tabs && (a.starts_with('\t') || a.ends_with('\n')))
                    {
                        continue;
                    }
                    t.lit(a);
                    e.push(lit(b));
                }
            }
            let p = g.ph();
            t.ph(p);
            e.push(Exp::Val(p.var));
        }
        // Never let a quoted line end in `\` right before the newline matter: it is raw.
        t.lit("\n");
        e.push(lit("\n"));
    }
    (t, e)
}

/// The redirection operator and its delimiter word.
fn operator(g: &mut Gen, d: &str) -> (String, bool, bool) {
    let strip = g.rng.chance(1, 4);
    let op = if strip { "<<-" } else { "<<" };
    let sp = if g.rng.chance(1, 5) { " " } else { "" };
    let (word, quoted) = match g.rng.below(8) {
        0..=2 => (d.to_string(), false),
        3 => (format!("'{d}'"), true),
        4 => (format!("\"{d}\""), true),
        5 => (format!("\\{d}"), true),
        6 => (format!("{d}''"), true),
        _ => (format!("''{d}"), true),
    };
    g.tag(if quoted { "hd:quoted" } else { "hd:unquoted" });
    if strip {
        g.tag("hd:strip-tabs");
    }
    (format!("{op}{sp}{word}"), quoted, strip)
}

/// `cat > file <<OP` with its body pending: the file must hold the body's meaning.
pub fn heredoc_cmd(g: &mut Gen, ctx: Ctx) -> (Code, String) {
    let d = delim(g.rng);
    let (op, quoted, strip) = operator(g, d);
    let (bt, be) = body(g, d, quoted, strip, ctx.in_bq);
    let f = g.observe(ctx, be, "heredoc");
    let head = match g.rng.below(4) {
        0 => format!("cat > {f} {op}"),
        1 => format!("cat {op} > {f}"),
        2 => format!("{op} cat >{f}"),
        _ => format!("cat {op} >>{f}"),
    };
    let mut bodies = bt;
    if strip && g.rng.chance(1, 2) {
        bodies.lit("\t");
    }
    bodies.lit(d).lit("\n");
    (
        Code {
            head: Text::of(&head),
            bodies,
            oneline: true,
        },
        f,
    )
}

/// A here-document statement in one of its settings.
pub fn heredoc_stmt(g: &mut Gen, ctx: Ctx) -> Code {
    g.tag("heredoc");
    match g.rng.below(11) {
        0..=2 => heredoc_cmd(g, ctx).0,
        3 => {
            // Several on one line, bodies in order.
            g.tag("hd:several");
            let (a, _) = heredoc_cmd(g, ctx);
            let (b, _) = heredoc_cmd(g, ctx);
            g.sep(ctx, a, b)
        }
        4 | 5 => {
            // Inside `$(…)`: the inner body is read inside, the outer ones after the line.
            g.tag("hd:in-comsub");
            let inner_ctx = Ctx {
                in_subst: true,
                ..ctx
            };
            let (inner, _) = heredoc_cmd(g, inner_ctx);
            let sub = in_comsub(g, inner);
            if g.rng.chance(1, 2) {
                g.tag("hd:comsub-and-outer");
                let (outer, _) = heredoc_cmd(g, ctx);
                if g.rng.chance(1, 2) {
                    g.sep(ctx, outer, sub)
                } else {
                    g.sep(ctx, sub, outer)
                }
            } else {
                sub
            }
        }
        6 => {
            g.tag("hd:in-procsub");
            let inner_ctx = Ctx {
                in_subst: true,
                ..ctx
            };
            // `cat <(cat <<E …)`: the file gets the body through the outer cat.
            let d = delim(g.rng);
            let (op, quoted, strip) = operator(g, d);
            let (bt, be) = body(g, d, quoted, strip, ctx.in_bq);
            let f = g.observe(inner_ctx, be, "heredoc-procsub");
            let mut head = Text::of(&format!("cat <(cat {op}\n"));
            head.cat(&bt).lit(d).lit(&format!("\n) > {f}"));
            Code {
                head,
                bodies: Text::new(),
                oneline: true,
            }
        }
        8 => {
            // A `case` inside `$(…)` inside a function body.
            g.tag("hd:fn-case-comsub");
            let inner_ctx = Ctx {
                in_subst: true,
                in_fn: true,
                ..ctx
            };
            let (inner, _) = heredoc_cmd(g, inner_ctx);
            let n = g.uid();
            let open =
                g.rng
                    .pick::<&str>(&["f_N() { ", "f_N(){ ", "function f_N { ", "f_N () {\n"]);
            let open = open.replace('N', &n.to_string());
            let mut t = Text::of(&open);
            t.lit(": \"$(case x in x) ")
                .cat(&inner.close())
                .lit(&format!(";; esac)\"; }}; f_{n}"));
            Code {
                head: t,
                bodies: Text::new(),
                oneline: false,
            }
        }
        7 => {
            g.tag("hd:in-backquotes");
            let (inner, _) = heredoc_cmd(g, Ctx { in_bq: true, ..ctx });
            let mut t = Text::of(": `");
            t.cat(&inner.close().backquoted()).lit("`");
            Code {
                head: t,
                bodies: Text::new(),
                oneline: true,
            }
        }
        _ => looks_like_heredoc(g, ctx),
    }
}

/// `$( … )` around a command with a pending body.
fn in_comsub(g: &mut Gen, inner: Code) -> Code {
    let closed = inner.close();
    let mut t = Text::new();
    match g.rng.below(3) {
        0 => {
            t.lit(": \"$(").cat(&closed).lit(")\"");
        }
        1 => {
            t.lit(": $(").cat(&closed).lit(")");
        }
        _ => {
            let n = g.uid();
            t.lit(&format!("x_{n}=$(")).cat(&closed).lit(")");
        }
    }
    Code {
        head: t,
        bodies: Text::new(),
        oneline: true,
    }
}

/// A single-quoted word that starts after `)#` (so bash reads `#` as part of the word)
/// and holds text that would look like a here-document if the `#` began a comment.
fn looks_like_heredoc(g: &mut Gen, ctx: Ctx) -> Code {
    g.tag("hd:lookalike-hash");
    let d = delim(g.rng);
    let p = g.ph();
    // Inside the quotes: "\ncat <<" then the delimiter word, whose own quotes flip the
    // quoting; the model below follows bash.
    let (opener, meaning_of_opener, open_after) = match g.rng.below(4) {
        // `'…cat <<'E'…'`: the quote before E closes the string, the one after reopens it.
        0 => (format!("<<'{d}'"), format!("<<{d}"), true),
        1 => (format!("<<\"{d}\""), format!("<<\"{d}\""), true),
        2 => (format!("<<\\{d}"), format!("<<\\{d}"), true),
        _ => (format!("<<{d}"), format!("<<{d}"), true),
    };
    let _ = open_after;
    let mut t = Text::new();
    let mut e: Vec<Exp> = Vec::new();
    // `<(:)#'…'` is a word too (a path, then `#`); only what follows the `#` is known.
    let procsub = g.rng.chance(1, 4);
    let (start, start_meaning) = match g.rng.below(3) {
        _ if procsub => ("<(:)#'", ""),
        0 => ("$(:)#'", "#"),
        1 => ("$((0))#'", "0#"),
        _ => ("\"\"#'", "#"),
    };
    t.lit(start);
    e.push(lit(start_meaning));
    t.lit("\ncat ").lit(&opener).lit("\n");
    e.push(lit(&format!("\ncat {meaning_of_opener}\n")));
    t.ph(p);
    e.push(Exp::Val(p.var));
    t.lit(&format!("\n{d}\n'"));
    e.push(lit(&format!("\n{d}\n")));
    // Through `${x#*#}` for the `<(:)` form: a pattern operation (see `uses_patterns`).
    let e = if procsub {
        vec![Exp::Strip {
            x: e,
            p: Vec::new(),
            suffix: false,
        }]
    } else {
        e
    };
    let f = g.observe(ctx, e, "heredoc-lookalike");
    let mut head = Text::new();
    if procsub {
        let n = g.uid();
        head.lit(&format!("x_{n}="))
            .cat(&t)
            .lit(&format!("; printf '%s' \"${{x_{n}#*#}}\" > {f}"));
    } else if g.rng.chance(1, 2) {
        head.lit("printf '%s' ").cat(&t).lit(&format!(" > {f}"));
    } else {
        let n = g.uid();
        head.lit(&format!("x_{n}="))
            .cat(&t)
            .lit(&format!("; printf '%s' \"$x_{n}\" > {f}"));
    }
    Code {
        head,
        bodies: Text::new(),
        oneline: true,
    }
}
