//! Template text with placeholders ([`Text`]), and expected output built from literal
//! bytes and values ([`Exp`]), evaluated once the values are known.

/// Template variables: `v`, `w` (template variables) and `s` (a `secrets.getValue` id).
pub const VARS: [&str; 3] = ["v", "w", "s"];

/// A placeholder: which variable, and which spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ph {
    pub var: usize,
    pub form: u8,
}

impl Ph {
    /// The placeholder as written in the template.
    pub fn spell(self) -> String {
        let n = VARS[self.var];
        if self.var == 2 {
            match self.form % 3 {
                0 => format!("${{secrets.getValue(\"{n}\")}}"),
                1 => format!("${{secrets.getValue('{n}')}}"),
                _ => format!("<+secrets.getValue(\"{n}\")>"),
            }
        } else {
            match self.form % 3 {
                0 => format!("${{{n}}}"),
                1 => format!("<+secretManager.environmentVariables.{n}>"),
                _ => format!("<+spec.environmentVariables.{n}>"),
            }
        }
    }
}

/// A piece of template text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Lit(String),
    Ph(Ph),
}

/// Template text with placeholders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(pub Vec<Seg>);

impl Text {
    pub fn new() -> Text {
        Text(Vec::new())
    }
    pub fn of(s: &str) -> Text {
        let mut t = Text::new();
        t.lit(s);
        t
    }
    pub fn lit(&mut self, s: &str) -> &mut Text {
        if s.is_empty() {
            return self;
        }
        if let Some(Seg::Lit(last)) = self.0.last_mut() {
            last.push_str(s);
        } else {
            self.0.push(Seg::Lit(s.to_string()));
        }
        self
    }
    pub fn ph(&mut self, p: Ph) -> &mut Text {
        self.0.push(Seg::Ph(p));
        self
    }
    pub fn cat(&mut self, t: &Text) -> &mut Text {
        for s in &t.0 {
            match s {
                Seg::Lit(l) => {
                    self.lit(l);
                }
                Seg::Ph(p) => {
                    self.ph(*p);
                }
            }
        }
        self
    }
    pub fn has_ph(&self) -> bool {
        self.0.iter().any(|s| matches!(s, Seg::Ph(_)))
    }
    /// The template text.
    pub fn spell(&self) -> String {
        self.0
            .iter()
            .map(|s| match s {
                Seg::Lit(l) => l.clone(),
                Seg::Ph(p) => p.spell(),
            })
            .collect()
    }
    /// Placeholders replaced by the given bytes verbatim (the naive paste).
    pub fn paste(&self, vals: &[Vec<u8>; 3]) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &self.0 {
            match s {
                Seg::Lit(l) => out.extend_from_slice(l.as_bytes()),
                Seg::Ph(p) => out.extend_from_slice(&vals[p.var]),
            }
        }
        out
    }
    /// Escape literal text for the inside of backquotes (`\`, `` ` `` and `$` get a
    /// backslash, which bash removes before parsing the command).
    pub fn backquoted(&self) -> Text {
        Text(
            self.0
                .iter()
                .map(|s| match s {
                    Seg::Lit(l) => {
                        let mut e = String::with_capacity(l.len());
                        for c in l.chars() {
                            if matches!(c, '\\' | '`' | '$') {
                                e.push('\\');
                            }
                            e.push(c);
                        }
                        Seg::Lit(e)
                    }
                    p => p.clone(),
                })
                .collect(),
        )
    }
}

/// Expected output, built from literal bytes and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exp {
    Lit(Vec<u8>),
    Val(usize),
    /// Command substitution: trailing newlines removed.
    StripNl(Vec<Exp>),
    /// `1` if both sides are equal, else `0`.
    Eq(Vec<Exp>, Vec<Exp>),
    /// `1` if non-empty, else `0`.
    NonEmpty(Vec<Exp>),
    /// `${x#p}` with a literal (quoted) pattern; `suffix` for `${x%p}`.
    Strip {
        x: Vec<Exp>,
        p: Vec<Exp>,
        suffix: bool,
    },
    /// `${x/p/r}` (`all`: `${x//p/r}`) with literal pattern and replacement.
    Replace {
        x: Vec<Exp>,
        p: Vec<Exp>,
        r: Vec<Exp>,
        all: bool,
    },
}

/// Whether an expectation matches patterns against values: in a UTF-8 locale bash 5.2
/// matches characters, and bytes that are not valid UTF-8 make the result unpredictable.
pub fn uses_patterns(e: &[Exp]) -> bool {
    e.iter().any(|x| match x {
        Exp::Strip { .. } | Exp::Replace { .. } => true,
        Exp::StripNl(i) | Exp::NonEmpty(i) => uses_patterns(i),
        Exp::Eq(a, b) => uses_patterns(a) || uses_patterns(b),
        _ => false,
    })
}

/// Evaluate an expectation with concrete values.
pub fn eval(e: &[Exp], vals: &[Vec<u8>; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    for x in e {
        match x {
            Exp::Lit(b) => out.extend_from_slice(b),
            Exp::Val(v) => out.extend_from_slice(&vals[*v]),
            Exp::StripNl(inner) => {
                let mut s = eval(inner, vals);
                while s.last() == Some(&b'\n') {
                    s.pop();
                }
                out.extend_from_slice(&s);
            }
            Exp::Eq(a, b) => out.push(if eval(a, vals) == eval(b, vals) {
                b'1'
            } else {
                b'0'
            }),
            Exp::NonEmpty(a) => out.push(if eval(a, vals).is_empty() { b'0' } else { b'1' }),
            Exp::Strip { x, p, suffix } => {
                let x = eval(x, vals);
                let p = eval(p, vals);
                let r = if *suffix {
                    x.strip_suffix(&p[..])
                } else {
                    x.strip_prefix(&p[..])
                };
                out.extend_from_slice(r.unwrap_or(&x));
            }
            Exp::Replace { x, p, r, all } => {
                let x = eval(x, vals);
                let p = eval(p, vals);
                let r = eval(r, vals);
                if p.is_empty() {
                    out.extend_from_slice(&x);
                    continue;
                }
                let mut i = 0;
                let mut done = false;
                while i < x.len() {
                    if !done && x[i..].starts_with(&p) {
                        out.extend_from_slice(&r);
                        i += p.len();
                        done = !*all;
                    } else {
                        out.push(x[i]);
                        i += 1;
                    }
                }
            }
        }
    }
    out
}

pub fn lit(s: &str) -> Exp {
    Exp::Lit(s.as_bytes().to_vec())
}
