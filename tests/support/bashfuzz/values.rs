//! Values: hostile payloads that try every way bash could run a value as code, and benign
//! values (small integers, plain names, words, empty) so that the contexts that rightly
//! accept integers or names do render, and are checked too.
//!
//! A value is a list of fragments; `@C@` in a fragment stands for the case's private work
//! directory (an absolute path), so every payload that runs creates a file there that the
//! oracle finds. Fragments let the minimiser drop parts of a value.

use super::rng::Rng;

/// Stands for the case's work directory inside fragments.
pub const CANARY_DIR: &[u8] = b"@C@";

/// Here-document delimiters the generator uses; values aim at them.
pub const DELIMS: &[&str] = &["E", "EOF", "END_1"];

/// How a value was made; decides how strictly the oracle reads missing observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Digits, a plain name or word, or empty: no bash context errors on it.
    Benign,
    /// Anything else.
    Hostile,
}

/// One generated value.
#[derive(Debug, Clone)]
pub struct Value {
    pub frags: Vec<Vec<u8>>,
    pub class: Class,
}

impl Value {
    /// A benign value from text.
    pub fn benign(s: &str) -> Value {
        Value {
            frags: vec![s.as_bytes().to_vec()],
            class: Class::Benign,
        }
    }

    /// The value's bytes with the canary directory filled in.
    pub fn bytes(&self, dir: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in &self.frags {
            let mut i = 0;
            while i < f.len() {
                if f[i..].starts_with(CANARY_DIR) {
                    out.extend_from_slice(dir);
                    i += CANARY_DIR.len();
                } else {
                    out.push(f[i]);
                    i += 1;
                }
            }
        }
        out
    }

    /// The template-independent bytes (canary as `@C@`), for reports.
    pub fn raw(&self) -> Vec<u8> {
        self.frags.concat()
    }
}

/// Payloads that create a canary file if bash runs any part of them as code. Each canary
/// has its own name, so the report says which mechanism fired.
const PAYLOADS: &[&str] = &[
    "$(touch @C@/P_dollar)",
    "`touch @C@/P_backquote`",
    "; touch @C@/P_semicolon",
    "& touch @C@/P_amp",
    "| touch @C@/P_pipe",
    "&& touch @C@/P_and",
    "|| touch @C@/P_or",
    "\ntouch @C@/P_newline\n",
    "'; touch @C@/P_squote; : '",
    "\"; touch @C@/P_dquote; : \"",
    "'\"$(touch @C@/P_sqdq)\"'",
    "$(>@C@/P_redir_subst)",
    ">@C@/P_redirect",
    " >@C@/P_redirect2 ",
    "a[$(touch @C@/P_subscript)]",
    "x[$(touch @C@/P_subscript_x)]",
    "([0]=$(touch @C@/P_compound))",
    "(touch @C@/P_paren)",
    "1+a[$(touch @C@/P_arith)]",
    "$((a[$(touch @C@/P_arith_subst)]))",
    "`touch @C@/P_bq2`x",
    "$(touch${IFS}@C@/P_ifs)",
    "\\$(touch @C@/P_bs_dollar)",
    "')\"; touch @C@/P_close; #",
    "}; touch @C@/P_brace; {",
    "); touch @C@/P_rparen; (",
    ";; esac; touch @C@/P_esac; case x in x)",
    "\"'`touch @C@/P_mixed`'\"",
    "$'\\x27'; touch @C@/P_ansi",
    "${x:-$(touch @C@/P_param)}",
    "x$(touch @C@/P_word)y",
    "#\ntouch @C@/P_comment\n",
];

/// Delimiter-shaped payloads, filled in for each delimiter in [`DELIMS`].
const DELIM_PAYLOADS: &[&str] = &[
    "\nD\ntouch @C@/P_heredoc\n",
    "\nD\n",
    "\n\tD\ntouch @C@/P_heredoc_tab\n",
    "\nD)\ntouch @C@/P_heredoc_paren\n",
    "\nD\n'\ntouch @C@/P_heredoc_sq\n'",
    "\nD\n)\ntouch @C@/P_heredoc_close\n",
    "D",
    "\nD",
    "D\n",
    "\nD\n$(touch @C@/P_heredoc_subst)\n",
    "\nD\n`touch @C@/P_heredoc_bq`\n",
    "\nD ;touch @C@/P_heredoc_semi\n",
];

/// Shapes that are not payloads but confuse lexers, quoting or option parsing.
const ODD: &[&[u8]] = &[
    b"'",
    b"\"",
    b"\\",
    b"`",
    b"$",
    b"${",
    b"}",
    b")",
    b"(",
    b"]",
    b"[",
    b"]]",
    b"#",
    b"*",
    b"?",
    b"[a]*",
    b"/*",
    b"~",
    b"!",
    b"!!",
    b"=",
    b"+=",
    b"-v",
    b"-n",
    b"-e",
    b"--",
    b"-",
    b"-i",
    b"%s",
    b"%b",
    b"%q",
    b"\\n",
    b"$'\\x41'",
    b"$\"x\"",
    b"${HOME}",
    b"$HOME",
    b"${v}",
    b"<+spec.environmentVariables.v>",
    b"$1",
    b"$@",
    b"$((1+1))",
    b"{a,b}",
    b";;",
    b";&",
    b"esac",
    b"fi",
    b"done",
    b"then",
    b"\n",
    b"\r",
    b"\r\n",
    b"\t",
    b" ",
    b"  ",
    b"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
    b"\xff",
    b"\xc3",
    b"\x80\x80",
    b"\x01\x1b[0m",
    b"a b",
    b"x=1",
    b"a[0]",
    b"x[1]",
    b"08",
    b"-5",
    b"99999999999999999999",
    b"0x1F",
    b"2#101",
    b"1e3",
    b"touch",
    b"@C@/P_cmd_arg",
];

/// Benign values: no bash context errors on these (except where the context refuses them).
const BENIGN: &[&str] = &[
    "0", "1", "2", "7", "42", "17", "100", "zq", "zname_1", "Zed", "hello", "",
];

/// A benign value.
pub fn benign(rng: &mut Rng) -> Value {
    Value::benign(rng.pick::<&str>(BENIGN))
}

/// A non-empty `[A-Za-z0-9_]` value: pasting it verbatim is exact in every context.
pub fn paste_safe(rng: &mut Rng) -> Value {
    Value::benign(rng.pick::<&str>(&["0", "1", "7", "42", "zq", "zname_1", "Zed", "hello"]))
}

/// One hostile fragment.
fn fragment(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0..=3 => rng.pick(PAYLOADS).as_bytes().to_vec(),
        4 => {
            let d = rng.pick(DELIMS);
            rng.pick(DELIM_PAYLOADS).replace('D', d).into_bytes()
        }
        5..=7 => rng.pick(ODD).to_vec(),
        8 => {
            // Plain text.
            let n = rng.range(1, 6);
            (0..n).map(|_| *rng.pick(b"abcxyz0123_-.:/")).collect()
        }
        _ => {
            // Arbitrary non-NUL bytes.
            let n = rng.range(1, 5);
            (0..n).map(|_| rng.range(1, 255) as u8).collect()
        }
    }
}

/// Whole values shaped for one context each (a subscript, a compound assignment, a
/// quote breaker, a here-document terminator): a sharp probe needs the value to be
/// exactly that shape, which random concatenation rarely produces.
const SHARP: &[&str] = &[
    "a[$(touch @C@/P_subscript)]",
    "x[$(touch @C@/P_subscript_x)]",
    "([0]=$(touch @C@/P_compound))",
    "([k]=$(touch @C@/P_compound_k))",
    "'; touch @C@/P_squote; : '",
    "\"; touch @C@/P_dquote; : \"",
    "$(touch @C@/P_dollar)",
    "`touch @C@/P_backquote`",
    "\nE\ntouch @C@/P_heredoc_E\n",
    "\nEOF\ntouch @C@/P_heredoc_EOF\n",
    "\nEND_1\ntouch @C@/P_heredoc_END\n",
    "1+a[$(touch @C@/P_arith)]",
    "-v",
];

/// A hostile value: a few fragments, sometimes padded with spaces, sometimes long.
pub fn hostile(rng: &mut Rng) -> Value {
    if rng.chance(1, 4) {
        return Value {
            frags: vec![rng.pick(SHARP).as_bytes().to_vec()],
            class: Class::Hostile,
        };
    }
    // Often a single fragment: a bare payload is the sharpest probe of a context.
    let n = if rng.chance(2, 5) { 1 } else { rng.range(2, 5) };
    let mut frags: Vec<Vec<u8>> = (0..n).map(|_| fragment(rng)).collect();
    if rng.chance(1, 10) {
        frags.insert(0, b"  ".to_vec());
    }
    if rng.chance(1, 10) {
        frags.push(b" \t".to_vec());
    }
    if rng.chance(1, 25) {
        // Long: a fragment repeated, and a payload at the end past any short buffer.
        let f = fragment(rng);
        let reps = rng.range(100, 2000) / f.len().max(1) + 1;
        frags.push(f.repeat(reps));
        frags.push(rng.pick(PAYLOADS).as_bytes().to_vec());
    }
    Value {
        frags,
        class: Class::Hostile,
    }
}

/// Hostile most of the time, benign otherwise.
pub fn any(rng: &mut Rng) -> Value {
    if rng.chance(3, 10) {
        benign(rng)
    } else {
        hostile(rng)
    }
}
