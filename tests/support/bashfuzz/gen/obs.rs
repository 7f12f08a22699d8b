//! Observation statements: each writes what bash made of placeholders into its own file,
//! and the generator records the exact bytes that file must hold.

use super::words::{param_word, ph_word, word};
use super::{lit, Code, Ctx, Exp, Gen, Text};

fn join_exp(parts: Vec<Vec<Exp>>, sep: &str) -> Vec<Exp> {
    let mut e = Vec::new();
    for p in parts {
        e.extend(p);
        e.push(lit(sep));
    }
    e
}

/// A redirection to `f`, in one of its spellings.
fn redir(g: &mut Gen, f: &str) -> String {
    match g.rng.below(6) {
        0 => format!(">{f}"),
        1 => format!(">| {f}"),
        2 => format!("1> {f}"),
        3 => format!("&>{f}"),
        _ => format!("> {f}"),
    }
}

/// An observation statement.
pub fn observation(g: &mut Gen, ctx: Ctx) -> Code {
    let depth = ctx.depth;
    let r = g.rng.below(100);
    let mut t = Text::new();
    if r < 22 {
        g.tag("obs:printf");
        let (w, e) = ph_word(g, depth);
        let f = g.observe(ctx, e, "printf");
        let rd = redir(g, &f);
        if g.rng.chance(1, 6) {
            t.lit(&format!("{rd} printf '%s' ")).cat(&w);
        } else {
            t.lit("printf '%s' ").cat(&w).lit(" ").lit(&rd);
        }
    } else if r < 30 {
        g.tag("obs:printf-args");
        let n = g.rng.range(2, 3);
        let mut parts = Vec::new();
        t.lit("printf '%s|'");
        for _ in 0..n {
            let (w, e) = word(g, depth);
            t.lit(" ").cat(&w);
            parts.push(e);
        }
        let f = g.observe(ctx, join_exp(parts, "|"), "printf-args");
        t.lit(&format!(" > {f}"));
    } else if r < 33 {
        g.tag("obs:brace-expansion");
        let (w, e) = ph_word(g, depth);
        let mut want = vec![lit("a")];
        want.extend(e.clone());
        want.push(lit("|b"));
        want.extend(e);
        want.push(lit("|"));
        let f = g.observe(ctx, want, "brace");
        t.lit("printf '%s|' {a,b}").cat(&w).lit(&format!(" > {f}"));
    } else if r < 37 {
        g.tag("obs:herestring");
        let (w, mut e) = ph_word(g, depth);
        e.push(lit("\n"));
        let f = g.observe(ctx, e, "herestring");
        t.lit("cat <<<").cat(&w).lit(&format!(" > {f}"));
    } else if r < 50 {
        return assignment(g, ctx);
    } else if r < 58 {
        return reading(g, ctx);
    } else if r < 68 {
        return test(g, ctx);
    } else if r < 76 {
        return pattern_op(g, ctx);
    } else if r < 82 {
        g.tag("obs:for");
        let n = g.uid();
        let (w, e) = ph_word(g, depth);
        let f = g.observe(ctx, e, "for");
        t.lit(&format!("{} x_{n} in ", g.kw("for")))
            .cat(&w)
            .lit(&format!("; do printf '%s' \"$x_{n}\" > {f}; done"));
    } else if r < 86 {
        g.tag("obs:pipeline");
        let (w, e) = ph_word(g, depth);
        let f = g.observe(ctx, e, "pipe");
        t.lit("printf '%s' ").cat(&w);
        t.lit(&match g.rng.below(3) {
            0 => format!(" | cat > {f}"),
            1 => format!(" | {{ cat > {f}; }}"),
            _ => format!(" |& cat > {f}"),
        });
    } else if r < 90 {
        g.tag("obs:procsub");
        let (w, e) = ph_word(g, depth);
        let f = g.observe(ctx, e, "procsub");
        if g.rng.chance(1, 2) {
            t.lit("cat <(printf '%s' ").cat(&w).lit(&format!(") > {f}"));
        } else {
            t.lit("printf '%s' ")
                .cat(&w)
                .lit(&format!(" > >(cat > {f})"));
        }
    } else if r < 94 {
        g.tag("obs:args");
        let (w, e) = ph_word(g, depth);
        let f = g.observe(ctx, e, "args");
        match g.rng.below(3) {
            0 => {
                let n = g.uid();
                t.lit(&format!("a_{n}() {{ printf '%s' \"$1\" > {f}; }}; a_{n} "))
                    .cat(&w);
            }
            1 => {
                t.lit("set -- ")
                    .cat(&w)
                    .lit(&format!("; printf '%s' \"$1\" > {f}"));
            }
            _ => {
                t.lit(&format!("bash -c 'printf %s \"$1\" > {f}' _ "))
                    .cat(&w);
            }
        }
    } else {
        g.tag("obs:exec");
        let (w, e) = ph_word(g, depth);
        let f = g.observe(ctx, e, "exec");
        t.lit(&format!("( exec > {f}; printf '%s' "))
            .cat(&w)
            .lit(" )");
    }
    Code::new(t)
}

/// Assignments in their forms, then the variable printed.
fn assignment(g: &mut Gen, ctx: Ctx) -> Code {
    let n = g.uid();
    let mut t = Text::new();
    match g.rng.below(10) {
        0..=3 => {
            g.tag("obs:assign");
            let (w, e) = ph_word(g, ctx.depth);
            let f = g.observe(ctx, e, "assign");
            let mut forms = vec![
                "x_N=",
                "declare x_N=",
                "typeset x_N=",
                "export x_N=",
                "readonly x_N=",
                "declare -g x_N=",
                "declare -x x_N=",
                "declare -- x_N=",
                "declare -r x_N=",
            ];
            if ctx.in_fn {
                forms.push("local x_N=");
            }
            let form = g.rng.pick(&forms).replace('N', &n.to_string());
            t.lit(&form)
                .cat(&w)
                .lit(&format!("; printf '%s' \"$x_{n}\" > {f}"));
        }
        4 => {
            g.tag("obs:append");
            let (w, e) = ph_word(g, ctx.depth);
            let mut want = vec![lit("pre")];
            want.extend(e);
            let f = g.observe(ctx, want, "append");
            t.lit(&format!("x_{n}=pre; x_{n}+="))
                .cat(&w)
                .lit(&format!("; printf '%s' \"$x_{n}\" > {f}"));
        }
        5 | 6 => {
            g.tag("obs:array");
            let (w1, e1) = element(g, ctx, true);
            let (w2, e2) = element(g, ctx, false);
            let f = g.observe(ctx, join_exp(vec![e1, e2], "|"), "array");
            let pre = match g.rng.below(4) {
                0 => format!("a_{n}=("),
                1 => format!("declare -a a_{n}=("),
                2 if ctx.in_fn => format!("local -a a_{n}=("),
                _ => format!("a_{n}=(); a_{n}+=("),
            };
            let indexed = g.rng.chance(1, 3);
            t.lit(&pre);
            if indexed {
                t.lit("[0]=");
            }
            t.cat(&w1).lit(" ");
            if indexed {
                t.lit("[1]=");
            }
            t.cat(&w2)
                .lit(&format!("); printf '%s|' \"${{a_{n}[@]}}\" > {f}"));
        }
        7 => {
            g.tag("obs:assoc");
            let (w, e) = element(g, ctx, true);
            let f = g.observe(ctx, e, "assoc");
            if g.rng.chance(1, 2) {
                t.lit(&format!("declare -A m_{n}=([k1]=")).cat(&w).lit(")");
            } else {
                t.lit(&format!("declare -A m_{n}; m_{n}[k1]=")).cat(&w);
            }
            t.lit(&format!("; printf '%s' \"${{m_{n}[k1]}}\" > {f}"));
        }
        8 => {
            g.tag("obs:assign-default");
            let (w, e) = param_word(g, ctx.depth);
            let f = g.observe(ctx, e, "assign-default");
            let op = g.rng.pick(&[":=", "="]);
            t.lit(&format!(": ${{x_{n}{op}"))
                .cat(&w)
                .lit(&format!("}}; printf '%s' \"$x_{n}\" > {f}"));
        }
        _ => {
            g.tag("obs:comsub-assign");
            let (w, e) = ph_word(g, ctx.depth);
            let f = g.observe(ctx, vec![Exp::StripNl(e)], "comsub-assign");
            if g.rng.chance(1, 2) {
                t.lit(&format!("x_{n}=$(printf '%s' ")).cat(&w).lit(")");
            } else {
                let mut inner = Text::of("printf '%s' ");
                inner.cat(&w);
                t.lit(&format!("x_{n}=`")).cat(&inner.backquoted()).lit("`");
            }
            t.lit(&format!("; printf '%s' \"$x_{n}\" > {f}"));
        }
    }
    Code::new(t)
}

/// A word for a compound array assignment. Inside `$(…)` bash 5.2.15 re-prints such an
/// assignment and loses backslashes (`a=(x\|y)` is a syntax error there, `a=(\  b)` one
/// element), so words with a backslash stay out there.
fn element(g: &mut Gen, ctx: Ctx, with_ph: bool) -> (Text, Vec<Exp>) {
    loop {
        let (w, e) = if with_ph {
            ph_word(g, ctx.depth)
        } else {
            word(g, ctx.depth)
        };
        if !ctx.in_subst || !w.spell().contains('\\') {
            return (w, e);
        }
    }
}

/// `read`, `mapfile` and `printf -v` fed with a placeholder.
fn reading(g: &mut Gen, ctx: Ctx) -> Code {
    let n = g.uid();
    let (w, e) = ph_word(g, ctx.depth);
    let mut t = Text::new();
    match g.rng.below(5) {
        0 => {
            g.tag("obs:read");
            let mut want = e;
            want.push(lit("\n"));
            let f = g.observe(ctx, want, "read");
            t.lit(&format!("IFS= read -r -d '' x_{n} <<< "))
                .cat(&w)
                .lit(&format!("; printf '%s' \"$x_{n}\" > {f}"));
        }
        1 => {
            g.tag("obs:read-procsub");
            let f = g.observe(ctx, e, "read-procsub");
            t.lit(&format!("IFS= read -r -d '' x_{n} < <(printf '%s' "))
                .cat(&w)
                .lit(&format!("); printf '%s' \"$x_{n}\" > {f}"));
        }
        2 | 3 => {
            g.tag("obs:mapfile");
            let mut want = e;
            want.push(lit("\n"));
            let f = g.observe(ctx, want, "mapfile");
            let cmd = g.rng.pick(&["mapfile", "readarray"]);
            t.lit(&format!("{cmd} -t a_{n} <<< "))
                .cat(&w)
                .lit(&format!("; printf '%s\\n' \"${{a_{n}[@]}}\" > {f}"));
        }
        _ => {
            g.tag("obs:printf-v");
            let f = g.observe(ctx, e, "printf-v");
            t.lit(&format!("printf -v x_{n} '%s' "))
                .cat(&w)
                .lit(&format!("; printf '%s' \"$x_{n}\" > {f}"));
        }
    }
    Code::new(t)
}

/// Tests whose outcome depends on the exact value: `[[ == ]]`, `case`, `test`, `-n`.
fn test(g: &mut Gen, ctx: Ctx) -> Code {
    let (w1, e1) = ph_word(g, ctx.depth);
    // Often the same placeholders again, so that equality is exercised.
    let (w2, e2) = if g.rng.chance(2, 3) {
        (w1.clone(), e1.clone())
    } else {
        ph_word(g, ctx.depth)
    };
    let mut t = Text::new();
    match g.rng.below(6) {
        0 | 1 => {
            g.tag("obs:dbl-bracket-eq");
            let f = g.observe(ctx, vec![Exp::Eq(e1, e2)], "dbl-bracket-eq");
            let op = g.rng.pick(&["==", "="]);
            t.lit(&format!("{} ", g.kw("[[")))
                .cat(&w1)
                .lit(&format!(" {op} "))
                .cat(&w2)
                .lit(&format!(" ]] && printf 1 > {f} || printf 0 > {f}"));
        }
        2 | 3 => {
            g.tag("obs:case");
            let f = g.observe(ctx, vec![Exp::Eq(e1, e2)], "case");
            let (open, close) = if ctx.extglob && g.rng.chance(1, 2) {
                g.tag("extglob");
                ("@(", "|qq_zz))")
            } else if g.rng.chance(1, 3) {
                ("(", ")")
            } else {
                ("", ")")
            };
            t.lit(&format!("{} ", g.kw("case")))
                .cat(&w1)
                .lit(&format!(" {} {open}", g.kw("in")))
                .cat(&w2)
                .lit(&format!(
                    "{close} printf 1 > {f};; *) printf 0 > {f};; {}",
                    g.kw("esac")
                ));
        }
        4 => {
            g.tag("obs:test");
            let f = g.observe(ctx, vec![Exp::Eq(e1, e2)], "test");
            let (a, b) = if g.rng.chance(1, 2) {
                ("[ ", " ]")
            } else {
                ("test ", "")
            };
            t.lit(a)
                .cat(&w1)
                .lit(" = ")
                .cat(&w2)
                .lit(&format!("{b} && printf 1 > {f} || printf 0 > {f}"));
        }
        _ => {
            g.tag("obs:dbl-bracket-n");
            let f = g.observe(ctx, vec![Exp::NonEmpty(e1)], "dbl-bracket-n");
            t.lit("[[ -n ")
                .cat(&w1)
                .lit(&format!(" ]] && printf 1 > {f} || printf 0 > {f}"));
        }
    }
    Code::new(t)
}

/// `${x#p}`, `${x%p}`, `${x/p/r}`, `${x//p/r}` with placeholders as pattern and
/// replacement: a value there is literal (a `*` matches only `*`, a `&` is not the match).
fn pattern_op(g: &mut Gen, ctx: Ctx) -> Code {
    g.tag("obs:pattern");
    let n = g.uid();
    let p = g.ph();
    let q = g.ph();
    let mut t = Text::new();
    // x = <p>mid<q>
    t.lit(&format!("x_{n}=")).ph(p).lit("mid").ph(q).lit("; ");
    let x = vec![Exp::Val(p.var), lit("mid"), Exp::Val(q.var)];
    let pat = |t: &mut Text, ph, quoted: bool| {
        if quoted {
            t.lit("\"").ph(ph).lit("\"");
        } else {
            t.ph(ph);
        }
    };
    let outer_dq = g.rng.chance(2, 3);
    let quoted_pat = g.rng.chance(1, 3);
    let (open, close) = if outer_dq { ("\"", "\"") } else { ("", "") };
    let want = match g.rng.below(4) {
        0 => {
            t.lit(&format!("y_{n}={open}${{x_{n}#"));
            pat(&mut t, p, quoted_pat);
            t.lit(&format!("}}{close}"));
            Exp::Strip {
                x,
                p: vec![Exp::Val(p.var)],
                suffix: false,
            }
        }
        1 => {
            t.lit(&format!("y_{n}={open}${{x_{n}%"));
            pat(&mut t, q, quoted_pat);
            t.lit(&format!("}}{close}"));
            Exp::Strip {
                x,
                p: vec![Exp::Val(q.var)],
                suffix: true,
            }
        }
        k => {
            let all = k == 3;
            let r = g.ph();
            t.lit(&format!(
                "y_{n}={open}${{x_{n}/{}",
                if all { "/" } else { "" }
            ));
            pat(&mut t, p, quoted_pat);
            t.lit("/");
            pat(&mut t, r, g.rng.chance(1, 3));
            t.lit(&format!("}}{close}"));
            Exp::Replace {
                x,
                p: vec![Exp::Val(p.var)],
                r: vec![Exp::Val(r.var)],
                all,
            }
        }
    };
    let f = g.observe(ctx, vec![want], "pattern");
    t.lit(&format!("; printf '%s' \"$y_{n}\" > {f}"));
    Code::new(t)
}
