//! The template generator: a seeded grammar of bash that places placeholders at random
//! token positions, in every quoting and nesting context, and emits *observations*:
//! statements that write what bash saw into a file whose exact expected bytes the generator
//! knows (or that must not exist, for dead code).
//!
//! The generator knows how bash reads everything it emits, so expectations come from
//! construction, not from a second lexer. `selfcheck` tests prove that model against bash
//! by substituting benign values textually (which is exact for `[A-Za-z0-9_]` values).
//!
//! Pieces: [`Text`] is template text with placeholders; [`Code`] is a command whose
//! here-document bodies are still pending (bash reads them after the next newline);
//! [`Item`] is one closed top-level unit, the minimiser's granule.

mod heredoc;
mod obs;
mod probes;
mod text;
mod words;
mod wrap;

pub use text::{eval, lit, uses_patterns, Exp, Ph, Seg, Text, VARS};

use std::collections::BTreeSet;

use super::rng::Rng;
use super::values::{self, Class, Value, DELIMS};

/// One observation: a file the script writes, and what it must hold.
#[derive(Debug, Clone)]
pub struct Obs {
    pub file: String,
    /// `None`: dead code, the file must not exist.
    pub want: Option<Vec<Exp>>,
    /// Which production wrote it.
    pub tag: String,
}

/// One top-level unit of a template.
#[derive(Debug, Clone)]
pub struct Item {
    /// Closed text: ends with a newline, no pending here-document.
    pub text: Text,
    pub obs: Vec<Obs>,
    /// Productions used, outermost first.
    pub tags: Vec<String>,
    /// A placeholder sits in a context where bash may evaluate it (or reject it at run
    /// time): an accepted hostile value may legitimately abort the enclosing command.
    pub sensitive: bool,
}

/// One generated case: items plus values.
#[derive(Debug, Clone)]
pub struct Case {
    pub prelude: Text,
    pub items: Vec<Item>,
    pub values: [Value; 3],
    /// Render through a JSON template document rather than a plain script.
    pub document: bool,
    /// Run under `LC_ALL=C.UTF-8` rather than the C locale.
    pub utf8: bool,
    /// Statements generated (see [`Gen::stmt`]).
    pub stmts: u32,
}

impl Case {
    /// The whole template text (placeholders unrendered).
    pub fn text(&self) -> Text {
        let mut t = self.prelude.clone();
        for it in &self.items {
            t.cat(&it.text);
        }
        t
    }

    /// Every observation, in order.
    pub fn observations(&self) -> impl Iterator<Item = (usize, &Obs)> {
        self.items
            .iter()
            .enumerate()
            .flat_map(|(i, it)| it.obs.iter().map(move |o| (i, o)))
    }

    /// All values benign and non-empty: nothing may abort, so every live observation must
    /// appear. (An empty name aborts `${!x}`, an empty offset `${@:}`.)
    pub fn strict(&self) -> bool {
        self.values
            .iter()
            .all(|v| v.class == Class::Benign && !v.raw().is_empty())
    }

    /// Variables whose placeholders occur.
    pub fn used_vars(&self) -> [bool; 3] {
        let mut u = [false; 3];
        for s in &self.text().0 {
            if let Seg::Ph(p) = s {
                u[p.var] = true;
            }
        }
        u
    }
}

/// A command with here-document bodies still to come.
#[derive(Debug, Clone, Default)]
pub struct Code {
    pub head: Text,
    /// Bodies (with their delimiter lines) bash reads after the head's next newline.
    pub bodies: Text,
    /// The head has no newline at the top nesting level (a newline there would make bash
    /// read pending bodies of an earlier command).
    pub oneline: bool,
}

impl Code {
    pub fn new(head: Text) -> Code {
        Code {
            head,
            bodies: Text::new(),
            oneline: true,
        }
    }
    /// Literal code; a newline in it counts as a top-level one (conservative).
    pub fn of(s: &str) -> Code {
        Code {
            head: Text::of(s),
            bodies: Text::new(),
            oneline: !s.contains('\n'),
        }
    }
    /// The command followed by a newline and its pending bodies: complete text.
    pub fn close(&self) -> Text {
        let mut t = self.head.clone();
        t.lit("\n");
        t.cat(&self.bodies);
        t
    }
    /// Closed text as a multi-line code unit.
    pub fn closed(&self) -> Code {
        Code {
            head: self.close(),
            bodies: Text::new(),
            oneline: false,
        }
    }
}

/// What the generator knows about where it is emitting.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// The code runs exactly once (else never).
    pub live: bool,
    /// Nesting depth, bounded to keep templates small.
    pub depth: u32,
    /// Inside `$(…)` or `<(…)`, where bash 5.2 ends a here-document early at a line that
    /// starts with the delimiter and has a `)` later.
    pub in_subst: bool,
    /// `shopt -s extglob` is on.
    pub extglob: bool,
    /// Inside a function body (so `local` works).
    pub in_fn: bool,
    /// Inside backquotes, where bash finds the closing backquote without knowing about
    /// here-documents (so unbalanced quotes in a body would derail it).
    pub in_bq: bool,
}

/// Generation state for one case.
pub struct Gen<'r> {
    pub rng: &'r mut Rng,
    /// Unique-name counter.
    uid: u32,
    /// Observations of the item being built.
    pub obs: Vec<Obs>,
    pub tags: Vec<String>,
    pub sensitive: bool,
    /// Productions excluded by `CSM_FUZZ_EXCLUDE` (tag prefixes).
    exclude: &'r [String],
    /// Statements (by ordinal) generated as usual but emitted as `:`: the minimiser's
    /// way to drop a statement while every other random choice stays the same.
    skip: &'r BTreeSet<u32>,
    /// Statements generated so far.
    stmt_no: u32,
}

impl<'r> Gen<'r> {
    pub fn new(rng: &'r mut Rng, exclude: &'r [String], skip: &'r BTreeSet<u32>) -> Gen<'r> {
        Gen {
            rng,
            uid: 0,
            obs: Vec::new(),
            tags: Vec::new(),
            sensitive: false,
            exclude,
            skip,
            stmt_no: 0,
        }
    }

    /// A fresh suffix for names and files.
    pub fn uid(&mut self) -> u32 {
        self.uid += 1;
        self.uid
    }

    pub fn tag(&mut self, t: impl Into<String>) {
        self.tags.push(t.into());
    }

    /// Whether a production may be used.
    pub fn allowed(&self, tag: &str) -> bool {
        !self.exclude.iter().any(|e| tag.starts_with(e.as_str()))
    }

    /// A random placeholder.
    pub fn ph(&mut self) -> Ph {
        let var = match self.rng.below(10) {
            0..=5 => 0,
            6..=8 => 1,
            _ => 2,
        };
        let form = if self.rng.chance(3, 4) {
            0
        } else {
            self.rng.range(1, 2) as u8
        };
        Ph { var, form }
    }

    /// A new observation file name, registered with its expectation.
    pub fn observe(&mut self, ctx: Ctx, want: Vec<Exp>, tag: &str) -> String {
        let file = format!("o{}", self.uid());
        self.obs.push(Obs {
            file: file.clone(),
            want: ctx.live.then_some(want),
            tag: tag.to_string(),
        });
        file
    }

    /// A keyword or operator, sometimes split by a line continuation (`\` newline), which
    /// bash removes before it reads tokens.
    pub fn kw(&mut self, k: &str) -> String {
        // Only inside the leading run of keyword and operator characters: a continuation
        // inside quotes would be literal.
        let run = k
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || b"{}[];&|()!@*_".contains(b))
            .count();
        if run >= 2 && self.rng.chance(1, 30) && self.allowed("contin") {
            let at = self.rng.range(1, run - 1);
            if k.is_char_boundary(at) {
                self.tag("contin");
                return format!("{}\\\n{}", &k[..at], &k[at..]);
            }
        }
        k.to_string()
    }

    /// A separator between two commands, sometimes with a comment.
    ///
    /// Inside `$(…)` bash 5.2.15 re-prints the command before running it, and the printer
    /// has bugs the generator steps around (they change what the template means, whatever
    /// the values): after a command whose text holds a here-document body, the next
    /// separator is lost (`fi; x=1` becomes `fi x=1`), so a `:` line absorbs it; and a
    /// newline inside a quoted word reads pending here-document bodies, so those are
    /// flushed first.
    pub fn sep(&mut self, ctx: Ctx, a: Code, b: Code) -> Code {
        if ctx.in_subst {
            let a_heredoc = a.head.spell().contains("<<");
            let b_nl = b.head.spell().contains('\n');
            if a_heredoc || (!a.bodies.0.is_empty() && b_nl) {
                let mut head = a.close();
                if a_heredoc {
                    head.lit(":\n");
                }
                head.cat(&b.head);
                return Code {
                    head,
                    bodies: b.bodies,
                    oneline: false,
                };
            }
        }
        // `;&` and `;;` are case terminators: keep a space before `&` and `;`.
        let b_amp = matches!(b.head.spell().as_bytes().first(), Some(b'&' | b';'));
        let comment = self.rng.chance(1, 8) && self.allowed("comment");
        if comment {
            self.tag("comment");
            let mut a = a;
            a.head.lit(&format!(" {}", words::comment(self)));
            let mut head = a.close();
            head.cat(&b.head);
            return Code {
                head,
                bodies: b.bodies,
                oneline: false,
            };
        }
        if a.bodies.0.is_empty() || b.oneline {
            let mut head = a.head;
            let s = match self.rng.below(6) {
                0 => "\n",
                1 if !b_amp => ";",
                _ => "; ",
            };
            if s == "\n" && !a.bodies.0.is_empty() {
                let mut head = Code { head, ..a }.close();
                head.cat(&b.head);
                return Code {
                    head,
                    bodies: b.bodies,
                    oneline: false,
                };
            }
            head.lit(s);
            head.cat(&b.head);
            let mut bodies = a.bodies;
            bodies.cat(&b.bodies);
            Code {
                head,
                bodies,
                oneline: a.oneline && b.oneline && s != "\n",
            }
        } else {
            let mut head = a.close();
            head.cat(&b.head);
            Code {
                head,
                bodies: b.bodies,
                oneline: false,
            }
        }
    }

    /// `pre` + inner + `post`, with a separator (or the pending bodies) before `post` when
    /// `post` is a reserved word that needs one (`}`, `fi`, `done`, `esac`).
    pub fn enclose(&mut self, pre: &str, inner: Code, post: &str, needs_sep: bool) -> Code {
        let pre_nl = pre.contains('\n');
        let mut head = Text::of(pre);
        if !inner.bodies.0.is_empty() {
            head.cat(&inner.close());
            head.lit(post);
            return Code {
                head,
                bodies: Text::new(),
                oneline: false,
            };
        }
        let oneline = inner.oneline;
        head.cat(&inner.head);
        if needs_sep {
            head.lit(match self.rng.below(4) {
                0 => "\n",
                1 => ";",
                _ => "; ",
            });
        } else if self.rng.chance(1, 4) {
            head.lit("\n");
        } else {
            head.lit(" ");
        }
        let nl = head.spell().ends_with('\n');
        head.lit(post);
        Code {
            head,
            bodies: Text::new(),
            oneline: oneline && !nl && !pre_nl,
        }
    }

    /// A statement list: one or more statements, the main one placed among fillers.
    pub fn stmts(&mut self, ctx: Ctx) -> Code {
        // Lists shrink with depth so templates stay small (a few hundred bytes).
        let n = match ctx.depth {
            0 | 1 => self.rng.range(1, 2),
            _ => 1,
        };
        let mut code: Option<Code> = None;
        for _ in 0..n {
            let s = self.stmt(ctx);
            code = Some(match code {
                None => s,
                Some(c) => self.sep(ctx, c, s),
            });
        }
        code.unwrap()
    }

    /// One statement: an observation, a probe, or a compound wrapping more statements.
    pub fn stmt(&mut self, ctx: Ctx) -> Code {
        self.counted(|g| g.stmt_here(ctx))
    }

    /// A statement that is a probe.
    pub fn stmt_probe(&mut self, ctx: Ctx) -> Code {
        self.counted(|g| probes::probe(g, ctx))
    }

    /// Give a statement its ordinal; emit it, or `:` if the minimiser skips it (after
    /// generating it all the same, so later random choices do not move).
    fn counted(&mut self, make: impl FnOnce(&mut Self) -> Code) -> Code {
        let k = self.stmt_no;
        self.stmt_no += 1;
        let saved = (self.obs.len(), self.tags.len(), self.sensitive);
        let code = make(self);
        if self.skip.contains(&k) {
            self.obs.truncate(saved.0);
            self.tags.truncate(saved.1);
            self.sensitive = saved.2;
            return Code::of(":");
        }
        code
    }

    fn stmt_here(&mut self, ctx: Ctx) -> Code {
        let deeper = Ctx {
            depth: ctx.depth + 1,
            ..ctx
        };
        let r = self.rng.below(100);
        let wrap = match ctx.depth {
            0 => 35,
            1 => 22,
            2 => 12,
            _ => 0,
        };
        if r < wrap {
            return wrap::wrapped(self, deeper);
        }
        if r < 40 {
            return heredoc::heredoc_stmt(self, ctx);
        }
        if r < 70 {
            return obs::observation(self, ctx);
        }
        if r < 92 {
            return probes::probe(self, ctx);
        }
        Code::new(Text::of(self.rng.pick::<&str>(&[
            ":",
            "true",
            "x_=1",
            "false || :",
        ])))
    }
}

/// The prelude's `cat`: stdin (or its one file argument) to stdout, byte for byte (values
/// never hold NUL).
pub const CAT: &str =
    "cat() { local l=; IFS= read -r -d '' l < \"${1:-/dev/stdin}\"; printf '%s' \"$l\"; }\n";

/// Knobs that shape generation.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Tag prefixes of productions to leave out.
    pub exclude: Vec<String>,
    /// Only non-empty `[A-Za-z0-9_]` values, for which pasting the value verbatim is
    /// exact: the generator's self-check.
    pub paste_safe_values: bool,
}

/// Generate case `rng` (deterministic).
pub fn case(rng: &mut Rng, cfg: &Config, skip: &BTreeSet<u32>) -> Case {
    let values = if cfg.paste_safe_values {
        [
            values::paste_safe(rng),
            values::paste_safe(rng),
            values::paste_safe(rng),
        ]
    } else {
        [values::any(rng), values::any(rng), values::any(rng)]
    };
    let document = rng.chance(1, 10);
    let utf8 = rng.chance(1, 2);
    let extglob = rng.chance(1, 3);
    let mut prelude = Text::new();
    if rng.chance(1, 4) {
        prelude.lit("#!/bin/bash\n");
    }
    if extglob {
        prelude.lit("shopt -s extglob\n");
    }
    // A builtin-only `cat`: the observations use it a lot, and an exec per use would
    // dominate the run time.
    prelude.lit(CAT);
    // One top-level statement per item: the minimiser's granule.
    let n_items = rng.range(1, 4);
    let mut items = Vec::with_capacity(n_items + 1);
    let mut g = Gen::new(rng, &cfg.exclude, skip);
    for _ in 0..n_items {
        let ctx = Ctx {
            live: true,
            depth: 0,
            in_subst: false,
            extglob,
            in_fn: false,
            in_bq: false,
        };
        let ordinal = g.stmt_no;
        let code = g.stmt(ctx);
        if skip.contains(&ordinal) {
            // Dropped by the minimiser: leave no `:` line behind.
            continue;
        }
        items.push(Item {
            text: code.close(),
            obs: std::mem::take(&mut g.obs),
            tags: std::mem::take(&mut g.tags),
            sensitive: std::mem::take(&mut g.sensitive),
        });
    }
    // The end marker: proves the script ran to its end.
    let f = g.observe(
        Ctx {
            live: true,
            depth: 0,
            in_subst: false,
            extglob,
            in_fn: false,
            in_bq: false,
        },
        vec![lit("end")],
        "end",
    );
    items.push(Item {
        text: Text::of(&format!("printf end > {f}\n")),
        obs: std::mem::take(&mut g.obs),
        tags: vec!["end".into()],
        sensitive: false,
    });
    Case {
        prelude,
        items,
        values,
        document,
        utf8,
        stmts: g.stmt_no,
    }
}

/// A delimiter for a new here-document.
pub fn delim(rng: &mut Rng) -> &'static str {
    rng.pick::<&str>(DELIMS)
}
