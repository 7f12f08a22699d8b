//! Words and the text inside quotes: each generator returns template text and the bytes
//! bash makes of it. Literal text is drawn from *lures*: fragments that look like other
//! constructs (quotes, `#`, here-document operators, `$(`, `)`, keywords) but are plain
//! data where they sit, to push a lexer into misreading the context.

use super::{lit, Exp, Gen, Text};

/// Unquoted literal characters that are never special in an argument word.
const PLAIN: &[u8] = b"abcxyz019_.,:/+=@%-";

/// Unquoted escapes: text and meaning.
const UNQUOTED_ESC: &[(&str, &str)] = &[
    ("\\'", "'"),
    ("\\\"", "\""),
    ("\\$", "$"),
    ("\\(", "("),
    ("\\)", ")"),
    ("\\#", "#"),
    ("\\;", ";"),
    ("\\|", "|"),
    ("\\&", "&"),
    ("\\<", "<"),
    ("\\>", ">"),
    ("\\ ", " "),
    ("\\*", "*"),
    ("\\{", "{"),
    ("\\}", "}"),
    ("\\\\", "\\"),
    ("\\`", "`"),
    ("\\\n", ""),
    ("x#y", "x#y"),
];

/// Lures for inside `'…'` (anything but `'`; never ending in `\` or `$`).
const SQ_LURE: &[&str] = &[
    "\"",
    "$(",
    "`",
    "#",
    ")",
    "(",
    "<<E",
    "<<\"E\"",
    "<<-EOF",
    " EOF\n",
    "\nE\n",
    "\n",
    "${",
    "}",
    "$((",
    "))",
    "]]",
    "[[",
    "esac",
    ";;",
    "x\\y",
    "\\\\x",
    "$x",
    "\"$(\"",
    "a b",
    "\t",
    "f(){",
    "case x in",
    ")#",
    "E",
    "`cat <<E`",
];

/// Lures for inside `"…"`: text and meaning.
const DQ_LURE: &[(&str, &str)] = &[
    ("'", "'"),
    ("#", "#"),
    (")", ")"),
    ("(", "("),
    ("<<E", "<<E"),
    ("<<'E'", "<<'E'"),
    ("\\\"", "\""),
    ("\\$(", "$("),
    ("\\`", "`"),
    ("\\\\", "\\"),
    ("\\x", "\\x"),
    ("\\\n", ""),
    ("\n", "\n"),
    ("\nE\n", "\nE\n"),
    ("}", "}"),
    ("{", "{"),
    (";;", ";;"),
    ("esac", "esac"),
    ("a b", "a b"),
    ("$((1+2))", "3"),
    ("$(:)", ""),
    ("${_u}", ""),
    ("${_u:-q}", "q"),
    ("${_u#x}", ""),
    ("'\\\"'\\\"'", "'\"'\"'"),
    ("]]", "]]"),
    ("*", "*"),
    ("\t", "\t"),
];

/// Lures for inside `$'…'`: text and meaning.
const ANSI_LURE: &[(&str, &str)] = &[
    ("\\'", "'"),
    ("\\\\", "\\"),
    ("\\n", "\n"),
    ("\\t", "\t"),
    ("\\x41,", "A,"),
    ("\\\"", "\""),
    ("\"", "\""),
    ("$(", "$("),
    ("`", "`"),
    ("#", "#"),
    (")", ")"),
    ("<<E", "<<E"),
    ("\n", "\n"),
    ("x", "x"),
];

/// Plain literal text for an unquoted word (and its meaning).
pub fn plain(g: &mut Gen) -> String {
    let n = g.rng.range(1, 4);
    (0..n).map(|_| *g.rng.pick(PLAIN) as char).collect()
}

/// A lure run for `'…'` (no placeholders); `in_param`: inert characters only.
pub fn sq_lure(g: &mut Gen, in_param: bool) -> String {
    let n = g.rng.range(0, 2);
    (0..n)
        .map(|_| *g.rng.pick(SQ_LURE))
        .filter(|l| !in_param || !l.contains(|c| "\"\\(){}$`".contains(c)))
        .collect()
}

/// A lure run for `"…"`: text and meaning.
pub fn dq_lure(g: &mut Gen) -> (String, String) {
    dq_lure_in(g, false)
}

/// A lure run for `"…"`; `in_param`: inside `${…}`, where a `}` would end the expansion.
pub fn dq_lure_in(g: &mut Gen, in_param: bool) -> (String, String) {
    let n = g.rng.range(0, 2);
    let mut t = String::new();
    let mut m = String::new();
    for _ in 0..n {
        let (a, b) = *g.rng.pick(DQ_LURE);
        // Inside `${…}` bash's own scan for the closing brace is fragile with quotes,
        // backslashes and parentheses: keep lures there to inert characters.
        if in_param && a.contains(|c| "'\"\\(){}$`".contains(c)) {
            continue;
        }
        t.push_str(a);
        m.push_str(b);
    }
    (t, m)
}

/// Comment text (after `#`), which may look like anything but holds no newline.
pub fn comment(g: &mut Gen) -> String {
    let lures = [
        "'",
        "\"",
        "$(",
        "`",
        "<<E",
        "<<'EOF'",
        ")",
        "(",
        "${v}",
        "{",
        "}",
        "case",
        "esac",
        "\\",
        "x",
        " ",
        "#",
        ";;",
        "$((",
        "<+spec.environmentVariables.v>",
    ];
    let n = g.rng.range(0, 4);
    let mut s = String::from("#");
    for _ in 0..n {
        s.push_str(g.rng.pick::<&str>(&lures));
    }
    s
}

/// `'…'` holding placeholders: the value appears literally.
pub fn sq(g: &mut Gen) -> (Text, Vec<Exp>) {
    sq_in(g, false)
}

/// `'…'`; `in_param`: inside `${…}`.
pub fn sq_in(g: &mut Gen, in_param: bool) -> (Text, Vec<Exp>) {
    let mut t = Text::of("'");
    let mut e = Vec::new();
    let n = g.rng.range(1, 2);
    for _ in 0..n {
        let l = sq_lure(g, in_param);
        t.lit(&l);
        e.push(lit(&l));
        let p = g.ph();
        t.ph(p);
        e.push(Exp::Val(p.var));
    }
    let l = sq_lure(g, in_param);
    t.lit(&l).lit("'");
    e.push(lit(&l));
    (t, e)
}

/// The inside of `"…"` (without the quotes); `in_param`: inside `${…}`.
pub fn dq_inner(g: &mut Gen, depth: u32, in_param: bool) -> (Text, Vec<Exp>) {
    let mut t = Text::new();
    let mut e = Vec::new();
    let n = g.rng.range(1, 2);
    for _ in 0..n {
        let (a, b) = dq_lure_in(g, in_param);
        t.lit(&a);
        e.push(lit(&b));
        if depth < 2 && !in_param && g.rng.chance(1, 5) {
            let (wt, we) = embedded(g, depth + 1);
            t.cat(&wt);
            e.extend(we);
        } else {
            let p = g.ph();
            t.ph(p);
            e.push(Exp::Val(p.var));
        }
    }
    let (a, b) = dq_lure_in(g, in_param);
    t.lit(&a);
    e.push(lit(&b));
    (t, e)
}

/// `"…"`, or `$"…"` (no translation catalogue, so the same).
pub fn dq(g: &mut Gen, depth: u32) -> (Text, Vec<Exp>) {
    dq_in(g, depth, false)
}

/// `"…"` or `$"…"`; `in_param`: inside `${…}`.
pub fn dq_in(g: &mut Gen, depth: u32, in_param: bool) -> (Text, Vec<Exp>) {
    let (it, ie) = dq_inner(g, depth, in_param);
    let mut t = Text::of(if g.rng.chance(1, 6) { "$\"" } else { "\"" });
    t.cat(&it).lit("\"");
    (t, ie)
}

/// `$'…'` holding placeholders.
pub fn ansi(g: &mut Gen) -> (Text, Vec<Exp>) {
    let mut t = Text::of("$'");
    let mut e = Vec::new();
    let n = g.rng.range(1, 2);
    for _ in 0..n {
        for _ in 0..g.rng.range(0, 2) {
            let (a, b) = *g.rng.pick(ANSI_LURE);
            t.lit(a);
            e.push(lit(b));
        }
        let p = g.ph();
        t.ph(p);
        e.push(Exp::Val(p.var));
    }
    if g.rng.chance(1, 2) {
        let (a, b) = *g.rng.pick(ANSI_LURE);
        t.lit(a);
        e.push(lit(b));
    }
    t.lit("'");
    (t, e)
}

/// Something that expands inside double quotes: `$(…)`, backquotes, `${x:-…}`.
pub fn embedded(g: &mut Gen, depth: u32) -> (Text, Vec<Exp>) {
    match g.rng.below(4) {
        0 => {
            g.tag("w:comsub");
            let (wt, we) = word(g, depth + 1);
            let mut t = Text::of("$(printf '%s' ");
            t.cat(&wt).lit(")");
            (t, vec![Exp::StripNl(we)])
        }
        1 => {
            g.tag("w:backquote");
            let (wt, we) = word(g, depth + 1);
            let mut inner = Text::of("printf '%s' ");
            inner.cat(&wt);
            let mut t = Text::of("`");
            t.cat(&inner.backquoted()).lit("`");
            (t, vec![Exp::StripNl(we)])
        }
        _ => param_in_dq(g, depth),
    }
}

/// `${_u:-…}` and kin inside double quotes, where `'` is literal.
fn param_in_dq(g: &mut Gen, depth: u32) -> (Text, Vec<Exp>) {
    g.tag("w:param-dq");
    let op = *g.rng.pick(&["_u:-", "_u-", "PATH:+", "PATH+"]);
    let mut t = Text::of(&format!("${{{op}"));
    let mut e = Vec::new();
    for _ in 0..g.rng.range(1, 2) {
        match g.rng.below(4) {
            0 => {
                // Single quotes are literal characters here.
                let (a, b) = dq_lure_in(g, true);
                let p = g.ph();
                t.lit("'").lit(&a).ph(p).lit("'");
                e.extend([lit("'"), lit(&b), Exp::Val(p.var), lit("'")]);
            }
            1 => {
                let (it, ie) = if depth < 2 {
                    dq_inner(g, depth + 1, true)
                } else {
                    let p = g.ph();
                    let mut t = Text::new();
                    t.ph(p);
                    (t, vec![Exp::Val(p.var)])
                };
                t.lit("\"").cat(&it).lit("\"");
                e.extend(ie);
            }
            2 => {
                let s = plain_alnum(g);
                t.lit(&s);
                e.push(lit(&s));
            }
            _ => {
                let p = g.ph();
                t.ph(p);
                e.push(Exp::Val(p.var));
            }
        }
    }
    t.lit("}");
    (t, e)
}

fn plain_alnum(g: &mut Gen) -> String {
    let n = g.rng.range(1, 3);
    (0..n).map(|_| *g.rng.pick(b"abqz09_") as char).collect()
}

/// `${_u:-…}` and kin unquoted: quote removal applies inside.
fn param_unquoted(g: &mut Gen, depth: u32) -> (Text, Vec<Exp>) {
    g.tag("w:param");
    let op = *g.rng.pick(&["_u:-", "_u-", "PATH:+", "PATH+"]);
    let mut t = Text::of(&format!("${{{op}"));
    let (it, e) = param_word(g, depth);
    t.cat(&it).lit("}");
    (t, e)
}

/// The word of an unquoted `${x:-…}`, `${x:=…}`: quotes, plain text and placeholders, with
/// inert lures only (bash's scan for the closing brace is easily derailed, in `$(…)`
/// especially), and at least one quoted part or placeholder.
pub fn param_word(g: &mut Gen, depth: u32) -> (Text, Vec<Exp>) {
    let mut t = Text::new();
    let mut e = Vec::new();
    let mut quoted = false;
    for _ in 0..g.rng.range(1, 2) {
        match g.rng.below(4) {
            0 => {
                let (st, se) = sq_in(g, true);
                t.cat(&st);
                e.extend(se);
                quoted = true;
            }
            1 => {
                let (st, se) = dq_in(g, depth + 1, true);
                t.cat(&st);
                e.extend(se);
                quoted = true;
            }
            2 => {
                let s = plain_alnum(g);
                t.lit(&s);
                e.push(lit(&s));
            }
            _ => {
                let p = g.ph();
                t.ph(p);
                e.push(Exp::Val(p.var));
                quoted = true;
            }
        }
    }
    if !quoted {
        let p = g.ph();
        t.ph(p);
        e.push(Exp::Val(p.var));
    }
    (t, e)
}

/// One shell word in argument position: bash yields exactly one field, whose bytes are
/// the expectation. Unquoted placeholders count as one field (the renderer quotes them).
pub fn word(g: &mut Gen, depth: u32) -> (Text, Vec<Exp>) {
    let mut t = Text::new();
    let mut e = Vec::new();
    let n = g.rng.range(1, 3);
    let mut solid = false;
    for k in 0..n {
        let r = g.rng.below(100);
        if r < 28 {
            let p = g.ph();
            t.ph(p);
            e.push(Exp::Val(p.var));
            solid = true;
        } else if r < 40 {
            let s = plain(g);
            t.lit(&s);
            e.push(lit(&s));
            solid = true;
        } else if r < 47 {
            let (a, b) = *g.rng.pick(UNQUOTED_ESC);
            // `x#y` must not start a word (it would be a comment).
            if k == 0 && a.starts_with('x') {
                continue;
            }
            t.lit(a);
            e.push(lit(b));
            solid |= !b.is_empty();
        } else if r < 60 {
            g.tag("w:sq");
            let (st, se) = sq(g);
            t.cat(&st);
            e.extend(se);
            solid = true;
        } else if r < 75 {
            g.tag("w:dq");
            let (st, se) = dq(g, depth);
            t.cat(&st);
            e.extend(se);
            solid = true;
        } else if r < 82 {
            g.tag("w:ansi");
            let (st, se) = ansi(g);
            t.cat(&st);
            e.extend(se);
            solid = true;
        } else if r < 88 && depth < 2 {
            let (st, se) = param_unquoted(g, depth);
            t.cat(&st);
            e.extend(se);
            solid = true;
        } else if r < 94 && depth < 2 {
            let (st, se) = embedded(g, depth);
            t.lit("\"").cat(&st).lit("\"");
            e.extend(se);
            solid = true;
        } else if k > 0 {
            // `#` inside a word, after something that started it: not a comment.
            g.tag("w:hash-in-word");
            match g.rng.below(3) {
                0 => {
                    t.lit("$(:)#");
                    e.push(lit("#"));
                }
                1 => {
                    t.lit("$((1))#");
                    e.push(lit("1#"));
                }
                _ => {
                    t.lit("\"\"#");
                    e.push(lit("#"));
                }
            }
        } else {
            t.lit("$((0x10))");
            e.push(lit("16"));
            solid = true;
        }
    }
    if !solid {
        let p = g.ph();
        t.ph(p);
        e.push(Exp::Val(p.var));
    }
    (t, e)
}

/// A word that contains at least one placeholder.
pub fn ph_word(g: &mut Gen, depth: u32) -> (Text, Vec<Exp>) {
    loop {
        let (t, e) = word(g, depth);
        if t.has_ph() {
            return (t, e);
        }
    }
}
