//! A conservative parser for the bash that templates are written in.
//!
//! It follows bash 5.2's grammar closely enough to know, for every placeholder, the
//! construct that holds it: which command, which word of that command, which quoting,
//! which expansion. It records that as a tree of [`Scope`]s (each with a parent), plus the
//! placeholder [`Site`]s, the variable references ([`VarRef`]) and the commands it saw.
//! [`super::analyze`] then decides, from that tree, whether each placeholder is data.
//!
//! The parser is fail-closed. Wherever it cannot be certain that it reads the text as bash
//! does (an unusual here-document arrangement, a syntax error, a construct whose meaning
//! depends on run-time state such as aliases or `extglob`, nesting past a limit), it records
//! [`Unsure`], and the renderer then refuses every placeholder in the template. Refusing a
//! strange but legal script is acceptable; misreading one is not.
//!
//! Work is linear in the input: every byte is consumed once, nesting is bounded by
//! [`MAX_DEPTH`], and here-document bodies are read once.
//!
//! Submodules: [`word`] reads words and everything inside them (quotes, expansions,
//! substitutions); [`command`] reads commands, lists and compound commands; [`heredoc`]
//! reads here-document operators and bodies.

mod command;
mod heredoc;
mod word;

pub(crate) use command::DECLARATION;

use std::collections::BTreeSet;

use super::placeholder::Placeholder;

/// Nesting deeper than this (commands inside substitutions inside words …) is refused.
pub(crate) const MAX_DEPTH: usize = 96;

/// Index into [`Syntax::scopes`].
pub(crate) type ScopeId = usize;

/// The scope of the script itself.
pub(crate) const ROOT: ScopeId = 0;

/// The quoting a placeholder sits in, which decides the reference that replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quoting {
    /// Unquoted text (command words, patterns, subscripts, arithmetic commands).
    Unquoted,
    /// Inside `"…"`, `$"…"`, an unquoted here-document body, or `$((…))`.
    Double,
    /// Inside `'…'`.
    Single,
    /// Inside `$'…'`.
    AnsiC,
    /// In the body of a quoted here-document, which rendering turns into an unquoted one.
    QuotedHeredoc,
}

/// How a `${name OP word}` uses its word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamOp {
    /// `:-`, `-`, `:+`, `+`, `:?`, `?`: the word is used as text.
    Use,
    /// `:=`, `=`: the word is also assigned to the parameter.
    Assign,
    /// `#`, `##`, `%`, `%%`, `/…/`, `^`, `,`: patterns and replacements.
    Pattern,
}

/// What a word of a command is, once the command is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// Not decided yet (the command is still being read).
    Pending,
    /// The command name.
    CmdName,
    /// An argument: the `index`-th word after the name of the simple command `cmd`.
    Arg {
        /// Index into [`Syntax::commands`].
        cmd: usize,
        /// 0 for the first argument.
        index: usize,
    },
    /// `NAME=value` before a command name (or alone).
    PrefixAssign {
        /// The variable.
        var: String,
        /// `NAME+=`.
        append: bool,
    },
    /// An element of `NAME=( … )`.
    ArrayElem {
        /// The array.
        var: String,
    },
    /// The target of `<`, `>`, `>>`, `<>`, `>|`, `&>`, `<&`, `>&`.
    RedirTarget,
    /// The word of `<<<`; feeds the command's stdin.
    HereString,
    /// A here-document body; feeds the command's stdin.
    HeredocBody,
    /// A here-document delimiter.
    HeredocDelim,
    /// The word after `case`.
    CaseSubject,
    /// A `case` pattern.
    CasePattern,
    /// The name after `for` or `select`.
    LoopVar,
    /// A word of `for NAME in …` / `select NAME in …`, assigned to the loop variable.
    LoopWord {
        /// The loop variable (`None` when it is not a plain name).
        var: Option<String>,
    },
    /// A function's name.
    FuncName,
    /// An operand inside `[[ … ]]`.
    Cond(CondRole),
    /// A word the parser did not expect (a syntax error bash would report).
    Stray,
}

/// The role of an operand inside `[[ … ]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CondRole {
    /// Compared as a string or a pattern, tested as a file, or alone.
    Text,
    /// An operand of `-eq -ne -lt -le -gt -ge`: an arithmetic expression.
    Arith,
    /// The operand of `-v` or `-R`: a variable name, subscripts evaluated.
    Name,
}

/// One node of the tree that holds every placeholder.
#[derive(Debug, Clone)]
pub(crate) enum ScopeKind {
    /// The script.
    Root,
    /// A command (see [`Syntax::commands`]).
    Command(usize),
    /// A word of the parent command.
    Word(Role),
    /// `$(…)` or backquotes: the inner commands' output becomes text of the parent.
    ComSub,
    /// `<(…)` or `>(…)`.
    ProcSub,
    /// Text bash evaluates as arithmetic: `$((…))`, `((…))`, `$[…]`, `for ((…))`; the
    /// construct's name, for messages.
    Arith(&'static str),
    /// `[…]` after a name: arithmetic when the word is an assignment or inside `${name[…]}`,
    /// a glob bracket otherwise (the analysis treats both as arithmetic).
    Subscript,
    /// The word of `${name OP word}`.
    ParamWord {
        /// How the word is used.
        op: ParamOp,
        /// The parameter, when it is a plain name.
        var: Option<String>,
    },
    /// The offset and length of `${name:offset:length}`: arithmetic.
    Substring,
}

/// A node and its parent.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    /// The enclosing node (the root is its own parent).
    pub parent: ScopeId,
    /// What the node is.
    pub kind: ScopeKind,
    /// For words: the byte range of the word's text in the script.
    pub span: (usize, usize),
}

/// A placeholder occurrence.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    /// Byte range in the script.
    pub start: usize,
    /// End of the range.
    pub end: usize,
    /// What it names.
    pub placeholder: Placeholder,
    /// Its quoting.
    pub quoting: Quoting,
    /// The innermost scope holding it.
    pub scope: ScopeId,
    /// The quoted here-document (index into [`Syntax::heredocs`]) whose body holds it.
    pub heredoc: Option<usize>,
    /// Whether it is in a here-document's body, quoted or not.
    pub in_body: bool,
}

/// How a variable is referenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefKind {
    /// `$x`, `${x}`, `${x…}`, or a bare name in arithmetic.
    Value,
    /// `${!x}`: the value is used as a name (subscripts evaluated).
    Indirect,
    /// `${x@P}`: the value goes through prompt expansion, which runs substitutions.
    Prompt,
}

/// A reference to a variable's value, for following values copied into variables.
#[derive(Debug, Clone)]
pub(crate) struct VarRef {
    /// The variable (`@` for the positional parameters).
    pub name: String,
    /// How it is used.
    pub kind: RefKind,
    /// The innermost scope holding it.
    pub scope: ScopeId,
}

/// What a command is.
#[derive(Debug, Clone)]
pub(crate) enum CommandKind {
    /// A simple command (possibly only assignments and redirections).
    Simple {
        /// The words after assignments: `words[0]` is the name. Each is a word scope.
        words: Vec<WordInfo>,
    },
    /// A compound command: `{ }`, `( )`, `if`, loops, `case`, `(( ))`, `[[ ]]`.
    Compound,
    /// A function definition.
    Function {
        /// Its name, when it is a plain word (also in [`Syntax::functions`]).
        name: Option<Vec<u8>>,
    },
}

/// A command: what the analysis needs to know about it.
#[derive(Debug, Clone)]
pub(crate) struct Command {
    /// Its scope.
    pub scope: ScopeId,
    /// Its kind.
    pub kind: CommandKind,
    /// `(pipeline id, position)` when it is an element of a pipeline of two or more.
    pub pipe: Option<(usize, usize)>,
    /// Scopes whose text feeds the command's stdin: here-document bodies, here-strings,
    /// and process substitutions used as `<` targets.
    pub stdin: Vec<ScopeId>,
    /// Where the command starts in the script, for messages.
    pub start: usize,
}

/// A word, as the analysis sees it.
#[derive(Debug, Clone)]
pub(crate) struct WordInfo {
    /// The word's scope.
    pub scope: ScopeId,
    /// Its value when it has no expansions (quotes removed).
    pub lit: Option<Vec<u8>>,
    /// Whether any quoting was used (quoted words are never reserved words).
    pub quoted: bool,
    /// `NAME=`, `NAME+=` or `NAME[…]=` at its start (unquoted).
    pub assign: Option<AssignPrefix>,
    /// Whether it holds a placeholder, at any depth.
    pub has_site: bool,
    /// Whether it holds any expansion (`$…`, backquotes, a placeholder).
    pub expands: bool,
    /// Where it starts in the script.
    pub start: usize,
}

/// The assignment prefix of a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AssignPrefix {
    /// The variable.
    pub var: String,
    /// `+=`.
    pub append: bool,
    /// `NAME=( … )`.
    pub compound: bool,
    /// The scope of `[…]`, when the name has a subscript.
    pub subscript: Option<ScopeId>,
}

/// A quoted here-document: the renderer rewrites it when a placeholder is in its body.
#[derive(Debug, Clone)]
pub(crate) struct Heredoc {
    /// The delimiter word's byte range in the script.
    pub delim_span: (usize, usize),
    /// The delimiter after quote removal.
    pub delim: Vec<u8>,
    /// The body's byte range (without the terminating line).
    pub body: (usize, usize),
    /// Whether it can be rewritten as an unquoted here-document (`None`) or why not.
    pub problem: Option<&'static str>,
}

/// Why the parser cannot vouch for its reading of the script.
#[derive(Debug, Clone)]
pub(crate) struct Unsure {
    /// Where, as a byte offset into the script.
    pub at: usize,
    /// Why, for the error message.
    pub why: String,
}

/// The parse of a script.
#[derive(Debug, Clone, Default)]
pub(crate) struct Syntax {
    /// The scope tree; `scopes[ROOT]` is the script.
    pub scopes: Vec<Scope>,
    /// Placeholders, in order of position.
    pub sites: Vec<Site>,
    /// Variable references.
    pub refs: Vec<VarRef>,
    /// Commands.
    pub commands: Vec<Command>,
    /// Quoted here-documents.
    pub heredocs: Vec<Heredoc>,
    /// Names of the functions the script defines.
    pub functions: BTreeSet<Vec<u8>>,
    /// Variables the script assigns with `NAME=(…)` anywhere: arrays.
    pub arrays: BTreeSet<String>,
    /// The first reason the parse cannot be trusted, if any.
    pub unsure: Option<Unsure>,
    /// Pipelines of two or more commands seen so far (their ids).
    pub pipelines: usize,
    /// Nesting went past [`MAX_DEPTH`].
    pub too_deep: bool,
}

impl Syntax {
    pub(crate) fn new_scope(&mut self, parent: ScopeId, kind: ScopeKind) -> ScopeId {
        self.scopes.push(Scope {
            parent,
            kind,
            span: (0, 0),
        });
        self.scopes.len() - 1
    }

    /// Record the first reason for distrust.
    pub(crate) fn distrust(&mut self, at: usize, why: impl Into<String>) {
        if self.unsure.is_none() {
            self.unsure = Some(Unsure {
                at,
                why: why.into(),
            });
        }
    }

    /// The scopes from `s` up to the root, innermost first.
    pub(crate) fn chain(&self, mut s: ScopeId) -> Vec<ScopeId> {
        let mut out = Vec::new();
        loop {
            out.push(s);
            if s == ROOT {
                return out;
            }
            s = self.scopes[s].parent;
        }
    }

    /// The role of a word scope.
    pub(crate) fn set_role(&mut self, scope: ScopeId, role: Role) {
        if let ScopeKind::Word(r) = &mut self.scopes[scope].kind {
            *r = role;
        }
    }
}

/// Parse a whole script.
pub(crate) fn parse(script: &[u8]) -> Syntax {
    let mut out = Syntax {
        scopes: vec![Scope {
            parent: ROOT,
            kind: ScopeKind::Root,
            span: (0, script.len()),
        }],
        ..Syntax::default()
    };
    let mut p = Parser::new(script, None, &mut out, Level::Top, 0);
    p.script(ROOT);
    if out.unsure.is_some() {
        // The parse stopped or went astray: find every placeholder by its spelling alone,
        // so that none is left unrendered in text bash would then read as its own `${…}`.
        // They are all refused anyway.
        out.sites.clear();
        let mut i = 0;
        while i < script.len() {
            if matches!(script[i], b'$' | b'<') {
                if let Some((p, e)) = super::placeholder::match_at(script, i, script.len()) {
                    out.sites.push(Site {
                        start: i,
                        end: e,
                        placeholder: p,
                        quoting: Quoting::Unquoted,
                        scope: ROOT,
                        heredoc: None,
                        in_body: false,
                    });
                    i = e;
                    continue;
                }
            }
            i += 1;
        }
    }
    out
}

/// Where a parser runs, which changes how here-documents are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// The script itself.
    Top,
    /// Inside `$(…)` or `<(…)`: bash 5.2 reads here-document bodies differently there.
    Subst,
    /// Inside backquotes, whose text bash parses only when it runs it.
    Backquote,
}

/// A here-document whose body starts after the next newline token.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// The delimiter after quote removal.
    pub delim: Vec<u8>,
    /// `<<-`.
    pub strip_tabs: bool,
    /// Whether the delimiter was quoted (no expansion in the body).
    pub quoted: bool,
    /// The body's word scope.
    pub scope: ScopeId,
    /// Index into [`Syntax::heredocs`] for quoted ones.
    pub index: Option<usize>,
}

/// The parser: a cursor over `src`, writing into `out`.
pub(crate) struct Parser<'s, 'o> {
    src: &'s [u8],
    /// For backquote text: `map[i]` is the script offset of `src[i]`.
    map: Option<Vec<usize>>,
    pos: usize,
    out: &'o mut Syntax,
    level: Level,
    depth: usize,
    pending: Vec<Pending>,
    /// An enclosing parser level has here-documents pending: a newline token here would
    /// make bash read their bodies at a place this parser cannot vouch for.
    outer_pending: bool,
    /// Reading an unquoted here-document body.
    pub(crate) in_body: bool,
    /// Inside `$(…)`: a here-document operator was read in this substitution. bash 5.2
    /// re-prints a substitution's commands before running them, and after a command that
    /// holds a here-document the printer can lose the next separator (`fi; x=1` becomes
    /// `fi x=1`), so no further list item may follow it.
    subst_heredoc: bool,
}

impl<'s, 'o> Parser<'s, 'o> {
    fn new(
        src: &'s [u8],
        map: Option<Vec<usize>>,
        out: &'o mut Syntax,
        level: Level,
        depth: usize,
    ) -> Self {
        Parser {
            src,
            map,
            pos: 0,
            out,
            level,
            depth,
            pending: Vec::new(),
            outer_pending: false,
            in_body: false,
            subst_heredoc: false,
        }
    }

    /// The script offset of `src[i]`.
    fn orig(&self, i: usize) -> usize {
        match &self.map {
            Some(m) => m[i.min(m.len() - 1)],
            None => i,
        }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.src.get(i).copied()
    }

    fn peek(&self) -> Option<u8> {
        self.at(self.pos)
    }

    fn peek2(&self) -> Option<u8> {
        self.at(self.pos + 1)
    }

    fn eof(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn distrust(&mut self, why: impl Into<String>) {
        let at = self.orig(self.pos.min(self.src.len().saturating_sub(1)));
        self.out.distrust(at, why);
    }

    fn failed(&self) -> bool {
        self.out.unsure.is_some()
    }

    /// Enter one level of nesting; false (and distrust) past the limit.
    fn enter(&mut self) -> bool {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            self.out.too_deep = true;
            self.distrust(format!("constructs nest more than {MAX_DEPTH} deep"));
            false
        } else {
            true
        }
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Skip blanks and backslash-newline pairs.
    fn skip_blanks(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t') => self.pos += 1,
                Some(b'\\') if self.peek2() == Some(b'\n') => self.pos += 2,
                _ => return,
            }
        }
    }

    /// Skip blanks and a comment, if one starts here.
    fn skip_blanks_and_comment(&mut self) {
        self.skip_blanks();
        if self.peek() == Some(b'#') {
            while let Some(c) = self.peek() {
                if c == b'\n' {
                    break;
                }
                self.pos += 1;
            }
        }
    }

    /// A placeholder at `pos`, if any.
    fn placeholder_at(&self, pos: usize) -> Option<(Placeholder, usize)> {
        super::placeholder::match_at(self.src, pos, self.src.len())
    }

    /// Record a placeholder found at `start..end` of `src`.
    fn add_site(
        &mut self,
        start: usize,
        end: usize,
        placeholder: Placeholder,
        quoting: Quoting,
        scope: ScopeId,
        heredoc: Option<usize>,
    ) {
        if self.map.is_some() {
            // Inside backquotes the placeholder's text may have lost backslashes: the
            // reference is placed in the script's own text, so the spans must agree.
            let (s, e) = (self.orig(start), self.orig(end - 1) + 1);
            if e - s != end - start {
                self.distrust("a placeholder inside backquotes is escaped with backslashes");
            }
        }
        let (s, e) = (self.orig(start), self.orig(end - 1) + 1);
        self.out.sites.push(Site {
            start: s,
            end: e,
            placeholder,
            quoting,
            scope,
            heredoc,
            in_body: self.in_body || heredoc.is_some(),
        });
    }

    fn add_ref(&mut self, name: &[u8], kind: RefKind, scope: ScopeId) {
        let name = if name.first().is_some_and(u8::is_ascii_digit) || name == b"@" || name == b"*" {
            "@".to_owned()
        } else {
            String::from_utf8_lossy(name).into_owned()
        };
        self.out.refs.push(VarRef { name, kind, scope });
    }

    /// Parse the whole source as a command list under `parent`.
    fn script(&mut self, parent: ScopeId) {
        self.list(parent, command::Stop::Eof);
        if !self.eof() && !self.failed() {
            self.distrust("bash would report a syntax error here");
        }
        if !self.pending.is_empty() && !self.failed() {
            self.unterminated_heredocs();
        }
    }
}

#[cfg(test)]
mod tests;
