//! Commands, pipelines, lists and compound commands, as bash's grammar reads them.
//!
//! Reserved words are recognised only where bash recognises them: unquoted, and in command
//! position (or `in`/`do`/`esac`/`]]` where the grammar expects them).

use super::word::{is_meta, WordOpts};
use super::{CommandKind, CondRole, Parser, Role, ScopeId, ScopeKind, WordInfo};

/// What ends a command list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The end of the text.
    Eof,
    /// `)`: a subshell or a substitution.
    RParen,
    /// One of these reserved words.
    Keywords(&'static [&'static [u8]]),
    /// `;;`, `;&`, `;;&` or `esac`: a `case` item.
    CaseItem,
}

const RESERVED: &[&[u8]] = &[
    b"if",
    b"then",
    b"elif",
    b"else",
    b"fi",
    b"do",
    b"done",
    b"case",
    b"esac",
    b"while",
    b"until",
    b"for",
    b"in",
    b"select",
    b"function",
    b"time",
    b"coproc",
    b"{",
    b"}",
    b"!",
    b"[[",
    b"]]",
];

const UNARY: &[&[u8]] = &[
    b"-a", b"-b", b"-c", b"-d", b"-e", b"-f", b"-g", b"-h", b"-k", b"-p", b"-r", b"-s", b"-t",
    b"-u", b"-w", b"-x", b"-G", b"-L", b"-N", b"-O", b"-S", b"-z", b"-n", b"-o", b"-v", b"-R",
];

const BINARY: &[&[u8]] = &[
    b"==", b"=", b"!=", b"=~", b"-eq", b"-ne", b"-lt", b"-le", b"-gt", b"-ge", b"-nt", b"-ot",
    b"-ef",
];

const ARITH_OPS: &[&[u8]] = &[b"-eq", b"-ne", b"-lt", b"-le", b"-gt", b"-ge"];

/// Builtins whose arguments bash reads as assignments (compound `NAME=(…)` allowed).
pub(crate) const DECLARATION: &[&[u8]] =
    &[b"declare", b"typeset", b"local", b"export", b"readonly"];

impl Parser<'_, '_> {
    /// The reserved word at the cursor, if the text there is one (unquoted, followed by a
    /// metacharacter or the end).
    pub(crate) fn reserved_here(&self) -> Option<&'static [u8]> {
        let mut i = self.pos;
        let mut text = Vec::new();
        while let Some(c) = self.at(i) {
            if c == b'\\' && self.at(i + 1) == Some(b'\n') {
                i += 2;
                continue;
            }
            if is_meta(c) {
                break;
            }
            if matches!(c, b'\\' | b'\'' | b'"' | b'$' | b'`') || text.len() > 8 {
                return None;
            }
            text.push(c);
            i += 1;
        }
        RESERVED.iter().copied().find(|r| *r == text.as_slice())
    }

    /// Consume the reserved word `kw` at the cursor.
    fn take_reserved(&mut self, kw: &[u8]) -> bool {
        if self.reserved_here() != Some(kw) {
            return false;
        }
        let mut n = 0;
        while n < kw.len() {
            if self.peek() == Some(b'\\') && self.peek2() == Some(b'\n') {
                self.pos += 2;
                continue;
            }
            self.pos += 1;
            n += 1;
        }
        true
    }

    fn expect_reserved(&mut self, kw: &'static [u8]) {
        self.skip_blanks_and_comment();
        if !self.take_reserved(kw) && !self.failed() {
            self.distrust(format!(
                "bash would report a syntax error here (expected `{}`)",
                String::from_utf8_lossy(kw)
            ));
        }
    }

    /// A newline token: read pending here-document bodies.
    pub(crate) fn newline(&mut self) {
        self.pos += 1;
        if self.outer_pending {
            self.distrust(
                "a newline inside a substitution while a here-document is pending outside it",
            );
            return;
        }
        if !self.pending.is_empty() {
            self.read_heredoc_bodies();
        }
    }

    /// Skip blanks, comments and newline tokens.
    fn skip_newlines(&mut self) {
        loop {
            self.skip_blanks_and_comment();
            if self.peek() == Some(b'\n') && !self.failed() {
                self.newline();
            } else {
                return;
            }
        }
    }

    /// A command list up to `stop` (which is not consumed).
    pub(crate) fn list(&mut self, parent: ScopeId, stop: Stop) {
        loop {
            if self.failed() {
                return;
            }
            self.skip_blanks_and_comment();
            match self.peek() {
                None => return,
                Some(b'\n') => {
                    self.newline();
                    continue;
                }
                Some(b')') if stop == Stop::RParen => return,
                Some(b';')
                    if stop == Stop::CaseItem && matches!(self.peek2(), Some(b';' | b'&')) =>
                {
                    return
                }
                _ => {}
            }
            if let Some(kw) = self.reserved_here() {
                match stop {
                    Stop::Keywords(list) if list.contains(&kw) => return,
                    Stop::CaseItem if kw == b"esac" => return,
                    _ => {}
                }
            }
            if self.subst_heredoc {
                self.distrust(
                    "inside $(…), a command follows a here-document, which bash 5.2 re-prints \
                     without the separator",
                );
                return;
            }
            let before = self.pos;
            self.and_or(parent);
            if self.failed() {
                return;
            }
            if self.pos == before {
                // Every step consumes text; a step that did not is a parser bug. Refuse
                // rather than loop.
                self.distrust("the renderer's parser made no progress here");
                return;
            }
            self.skip_blanks_and_comment();
            match (self.peek(), self.peek2()) {
                (Some(b';'), Some(b';' | b'&')) => {
                    if stop == Stop::CaseItem {
                        return;
                    }
                    self.distrust("bash would report a syntax error here (`;;` outside case)");
                    return;
                }
                (Some(b';'), _) | (Some(b'&'), _) => self.pos += 1,
                (Some(b'\n'), _) | (None, _) => {}
                (Some(b')'), _) if stop == Stop::RParen => return,
                _ => {
                    if let (Some(kw), Stop::Keywords(list)) = (self.reserved_here(), stop) {
                        if list.contains(&kw) {
                            // `{ a }`: bash reads `}` as an argument here, not the end.
                            self.distrust("a reserved word where bash reads an argument");
                            return;
                        }
                    }
                    self.distrust("bash would report a syntax error here");
                    return;
                }
            }
        }
    }

    /// `a && b || c`.
    fn and_or(&mut self, parent: ScopeId) {
        self.pipeline(parent);
        loop {
            if self.failed() {
                return;
            }
            self.skip_blanks();
            match (self.peek(), self.peek2()) {
                (Some(b'&'), Some(b'&')) | (Some(b'|'), Some(b'|')) => {
                    self.pos += 2;
                    if self.subst_heredoc {
                        self.distrust(
                            "inside $(…), a command follows a here-document, which bash 5.2 \
                             re-prints without the separator",
                        );
                        return;
                    }
                    self.skip_newlines();
                    self.pipeline(parent);
                }
                _ => return,
            }
        }
    }

    /// `[time [-p]] [!] cmd | cmd …`.
    fn pipeline(&mut self, parent: ScopeId) {
        loop {
            self.skip_blanks();
            if self.take_reserved(b"time") {
                self.skip_blanks();
                if self.at(self.pos) == Some(b'-')
                    && self.at(self.pos + 1) == Some(b'p')
                    && self.at(self.pos + 2).map_or(true, is_meta)
                {
                    self.pos += 2;
                }
                continue;
            }
            if self.take_reserved(b"!") {
                continue;
            }
            break;
        }
        let mut elements = Vec::new();
        loop {
            match self.command(parent) {
                Some(c) => elements.push(c),
                None => return,
            }
            if self.failed() {
                return;
            }
            self.skip_blanks();
            match (self.peek(), self.peek2()) {
                (Some(b'|'), Some(b'|')) => break,
                (Some(b'|'), Some(b'&')) => self.pos += 2,
                (Some(b'|'), _) => self.pos += 1,
                _ => break,
            }
            self.skip_newlines();
        }
        if elements.len() > 1 {
            let id = self.out.pipelines;
            self.out.pipelines += 1;
            for (i, c) in elements.into_iter().enumerate() {
                self.out.commands[c].pipe = Some((id, i));
            }
        }
    }

    fn new_command(&mut self, parent: ScopeId, kind: CommandKind) -> (usize, ScopeId) {
        let idx = self.out.commands.len();
        let scope = self.out.new_scope(parent, ScopeKind::Command(idx));
        let start = self.orig(self.pos.min(self.src.len().saturating_sub(1)));
        self.out.commands.push(super::Command {
            scope,
            kind,
            pipe: None,
            stdin: Vec::new(),
            start,
        });
        (idx, scope)
    }

    /// One command; its index in `commands`.
    fn command(&mut self, parent: ScopeId) -> Option<usize> {
        self.skip_blanks();
        if !self.enter() {
            return None;
        }
        let r = self.command_inner(parent);
        self.leave();
        r
    }

    fn command_inner(&mut self, parent: ScopeId) -> Option<usize> {
        if let Some(kw) = self.reserved_here() {
            let compound = |p: &mut Self, kw: &[u8]| -> Option<usize> {
                let (idx, scope) = p.new_command(parent, CommandKind::Compound);
                match kw {
                    b"{" => {
                        p.take_reserved(b"{");
                        p.list(scope, Stop::Keywords(&[b"}"]));
                        p.expect_reserved(b"}");
                    }
                    b"if" => p.if_command(scope),
                    b"while" | b"until" => {
                        p.take_reserved(kw);
                        p.list(scope, Stop::Keywords(&[b"do"]));
                        p.do_group(scope);
                    }
                    b"for" | b"select" => p.for_command(scope, kw == b"for"),
                    b"case" => p.case_command(scope),
                    b"[[" => p.cond_command(scope),
                    _ => unreachable!("only compound keywords reach here"),
                }
                p.redirections(idx, scope);
                Some(idx)
            };
            match kw {
                b"{" | b"if" | b"while" | b"until" | b"for" | b"select" | b"case" | b"[[" => {
                    return compound(self, kw)
                }
                b"function" => return self.function_keyword(parent),
                b"coproc" => {
                    self.distrust("`coproc` is not supported in templates with placeholders");
                    return None;
                }
                _ => {
                    self.distrust(format!(
                        "bash would report a syntax error here (unexpected `{}`)",
                        String::from_utf8_lossy(kw)
                    ));
                    return None;
                }
            }
        }
        match (self.peek(), self.peek2()) {
            (Some(b'('), Some(b'(')) => {
                let (idx, scope) = self.new_command(parent, CommandKind::Compound);
                let a = self
                    .out
                    .new_scope(scope, ScopeKind::Arith("an arithmetic command ((…))"));
                self.pos += 2;
                self.arith(
                    a,
                    super::word::ArithEnd::DoubleParen,
                    super::Quoting::Unquoted,
                );
                self.redirections(idx, scope);
                Some(idx)
            }
            (Some(b'('), _) => {
                let (idx, scope) = self.new_command(parent, CommandKind::Compound);
                self.pos += 1;
                self.list(scope, Stop::RParen);
                if self.peek() == Some(b')') {
                    self.pos += 1;
                } else if !self.failed() {
                    self.distrust("an unterminated subshell");
                }
                self.redirections(idx, scope);
                Some(idx)
            }
            _ if self.word_starts() || self.redirection_starts() => self.simple_command(parent),
            _ => {
                self.distrust("bash would report a syntax error here");
                None
            }
        }
    }

    /// `if … then … [elif … then …]… [else …] fi`.
    fn if_command(&mut self, scope: ScopeId) {
        self.take_reserved(b"if");
        self.list(scope, Stop::Keywords(&[b"then"]));
        self.expect_reserved(b"then");
        loop {
            self.list(scope, Stop::Keywords(&[b"elif", b"else", b"fi"]));
            if self.failed() {
                return;
            }
            if self.take_reserved(b"elif") {
                self.list(scope, Stop::Keywords(&[b"then"]));
                self.expect_reserved(b"then");
                continue;
            }
            if self.take_reserved(b"else") {
                self.list(scope, Stop::Keywords(&[b"fi"]));
            }
            self.expect_reserved(b"fi");
            return;
        }
    }

    /// `do … done`, or `{ … }` after `for`/`select`.
    fn do_group(&mut self, scope: ScopeId) {
        self.skip_newlines();
        if self.take_reserved(b"do") {
            self.list(scope, Stop::Keywords(&[b"done"]));
            self.expect_reserved(b"done");
        } else if self.take_reserved(b"{") {
            self.list(scope, Stop::Keywords(&[b"}"]));
            self.expect_reserved(b"}");
        } else if !self.failed() {
            self.distrust("bash would report a syntax error here (expected `do`)");
        }
    }

    /// `for NAME [in WORDS]; do …; done`, `for ((…)); do …; done`, and `select`.
    fn for_command(&mut self, scope: ScopeId, is_for: bool) {
        self.take_reserved(if is_for { b"for" } else { b"select" });
        self.skip_blanks();
        if is_for && self.peek() == Some(b'(') && self.peek2() == Some(b'(') {
            let a = self
                .out
                .new_scope(scope, ScopeKind::Arith("an arithmetic `for ((…))`"));
            self.pos += 2;
            self.arith(
                a,
                super::word::ArithEnd::DoubleParen,
                super::Quoting::Unquoted,
            );
            self.skip_blanks();
            if self.peek() == Some(b';') {
                self.pos += 1;
            }
            self.do_group(scope);
            return;
        }
        let var = match self.word(scope, WordOpts::default()) {
            Some(w) => {
                self.out.set_role(w.scope, Role::LoopVar);
                match w.lit {
                    Some(l) if crate::template::placeholder::is_ident(&l) => {
                        Some(String::from_utf8_lossy(&l).into_owned())
                    }
                    _ => {
                        if !w.has_site {
                            self.distrust("a `for` variable that is not a plain name");
                        }
                        None
                    }
                }
            }
            None => {
                self.distrust("bash would report a syntax error here (a `for` without a name)");
                return;
            }
        };
        self.skip_newlines();
        if self.take_reserved(b"in") {
            loop {
                self.skip_blanks();
                let Some(w) = self.word(scope, WordOpts::default()) else {
                    break;
                };
                self.out
                    .set_role(w.scope, Role::LoopWord { var: var.clone() });
            }
            self.skip_blanks_and_comment();
            match self.peek() {
                Some(b';') => self.pos += 1,
                Some(b'\n') => {}
                _ => {
                    self.distrust("bash would report a syntax error here (after a `for` list)");
                    return;
                }
            }
        } else if self.peek() == Some(b';') {
            self.pos += 1;
        }
        self.do_group(scope);
    }

    /// `case WORD in [(]PAT[|PAT]…) LIST ;; … esac`.
    fn case_command(&mut self, scope: ScopeId) {
        self.take_reserved(b"case");
        self.skip_blanks();
        match self.word(scope, WordOpts::default()) {
            Some(w) => self.out.set_role(w.scope, Role::CaseSubject),
            None => {
                self.distrust("bash would report a syntax error here (a `case` without a word)");
                return;
            }
        }
        self.skip_newlines();
        if !self.take_reserved(b"in") {
            self.distrust("bash would report a syntax error here (expected `in`)");
            return;
        }
        loop {
            self.skip_newlines();
            if self.failed() || self.take_reserved(b"esac") {
                return;
            }
            if self.peek() == Some(b'(') {
                self.pos += 1;
                self.skip_blanks();
            }
            loop {
                self.skip_blanks();
                match self.word(scope, WordOpts::default()) {
                    Some(w) => self.out.set_role(w.scope, Role::CasePattern),
                    None => {
                        self.distrust("bash would report a syntax error here (a `case` pattern)");
                        return;
                    }
                }
                self.skip_blanks();
                match self.peek() {
                    Some(b'|') => self.pos += 1,
                    Some(b')') => {
                        self.pos += 1;
                        break;
                    }
                    _ => {
                        self.distrust("bash would report a syntax error here (a `case` pattern)");
                        return;
                    }
                }
            }
            self.list(scope, Stop::CaseItem);
            if self.failed() {
                return;
            }
            self.skip_blanks_and_comment();
            match (self.peek(), self.peek2(), self.at(self.pos + 2)) {
                (Some(b';'), Some(b';'), Some(b'&')) => self.pos += 3,
                (Some(b';'), Some(b';' | b'&'), _) => self.pos += 2,
                _ => {
                    if self.take_reserved(b"esac") {
                        return;
                    }
                    self.distrust("bash would report a syntax error here (in `case`)");
                    return;
                }
            }
        }
    }

    /// `[[ … ]]`.
    fn cond_command(&mut self, scope: ScopeId) {
        self.take_reserved(b"[[");
        self.cond_or(scope);
        self.skip_blanks();
        if !self.take_reserved(b"]]") && !self.failed() {
            self.distrust("bash would report a syntax error here (expected `]]`)");
        }
    }

    fn cond_skip(&mut self) {
        self.skip_blanks();
        if self.peek() == Some(b'\n') {
            if self.outer_pending || !self.pending.is_empty() {
                self.distrust("a newline inside [[ … ]] while a here-document is pending");
            }
            self.skip_newlines();
        }
    }

    fn cond_or(&mut self, scope: ScopeId) {
        self.cond_and(scope);
        loop {
            self.skip_blanks();
            if self.failed() || !(self.peek() == Some(b'|') && self.peek2() == Some(b'|')) {
                return;
            }
            self.pos += 2;
            self.cond_skip();
            self.cond_and(scope);
        }
    }

    fn cond_and(&mut self, scope: ScopeId) {
        self.cond_term(scope);
        loop {
            self.skip_blanks();
            if self.failed() || !(self.peek() == Some(b'&') && self.peek2() == Some(b'&')) {
                return;
            }
            self.pos += 2;
            self.cond_skip();
            self.cond_term(scope);
        }
    }

    fn cond_term(&mut self, scope: ScopeId) {
        self.cond_skip();
        if !self.enter() {
            return;
        }
        self.cond_term_inner(scope);
        self.leave();
    }

    fn cond_term_inner(&mut self, scope: ScopeId) {
        if self.peek() == Some(b'(') {
            self.pos += 1;
            self.cond_or(scope);
            self.cond_skip();
            if self.peek() == Some(b')') {
                self.pos += 1;
            } else if !self.failed() {
                self.distrust("bash would report a syntax error here (in [[ … ]])");
            }
            return;
        }
        if self.take_reserved(b"!") {
            self.cond_term(scope);
            return;
        }
        if self.reserved_here() == Some(b"]]") {
            self.distrust("bash would report a syntax error here (empty [[ … ]] term)");
            return;
        }
        let Some(w1) = self.word(scope, WordOpts::default()) else {
            self.distrust("bash would report a syntax error here (in [[ … ]])");
            return;
        };
        let op1 = w1.lit.clone().filter(|_| !w1.quoted);
        self.skip_blanks();
        let next_is_operand = self.word_starts() && self.reserved_here() != Some(b"]]");
        if let Some(op) = op1.as_deref().filter(|o| UNARY.contains(o)) {
            if next_is_operand && !self.binary_op_here() {
                self.out.set_role(w1.scope, Role::Stray);
                let role = if op == b"-v" || op == b"-R" {
                    CondRole::Name
                } else {
                    CondRole::Text
                };
                if let Some(w2) = self.word(scope, WordOpts::default()) {
                    self.out.set_role(w2.scope, Role::Cond(role));
                }
                return;
            }
        }
        // A binary operator, or `w1` alone.
        let op: Option<Vec<u8>> = match self.peek() {
            Some(c @ (b'<' | b'>')) if self.peek2() != Some(b'(') => {
                self.pos += 1;
                Some(vec![c])
            }
            _ if next_is_operand => {
                let w = self.word(scope, WordOpts::default());
                match w {
                    Some(WordInfo {
                        lit: Some(l),
                        quoted: false,
                        scope: s,
                        ..
                    }) if BINARY.contains(&l.as_slice()) => {
                        self.out.set_role(s, Role::Stray);
                        Some(l)
                    }
                    _ => {
                        self.distrust("bash would report a syntax error here (a binary operator expected in [[ … ]])");
                        return;
                    }
                }
            }
            _ => None,
        };
        let Some(op) = op else {
            self.out.set_role(w1.scope, Role::Cond(CondRole::Text));
            return;
        };
        let arith = ARITH_OPS.contains(&op.as_slice());
        let role = if arith {
            CondRole::Arith
        } else {
            CondRole::Text
        };
        self.out.set_role(w1.scope, Role::Cond(role));
        self.skip_blanks();
        let opts = WordOpts {
            regex: op == b"=~",
            ..WordOpts::default()
        };
        match self.word(scope, opts) {
            Some(w2) => self.out.set_role(w2.scope, Role::Cond(role)),
            None => self
                .distrust("bash would report a syntax error here (an operand expected in [[ … ]])"),
        }
    }

    /// Whether the word at the cursor is a binary `[[` operator (`-a` followed by `-eq` …).
    fn binary_op_here(&self) -> bool {
        let mut i = self.pos;
        let mut t = Vec::new();
        while let Some(c) = self.at(i) {
            if is_meta(c) || t.len() > 3 {
                break;
            }
            t.push(c);
            i += 1;
        }
        BINARY.contains(&t.as_slice())
    }

    /// `function NAME [()] BODY`.
    fn function_keyword(&mut self, parent: ScopeId) -> Option<usize> {
        let (idx, scope) = self.new_command(parent, CommandKind::Function { name: None });
        self.take_reserved(b"function");
        self.skip_blanks();
        let Some(w) = self.word(scope, WordOpts::default()) else {
            self.distrust("bash would report a syntax error here (a function without a name)");
            return None;
        };
        self.out.set_role(w.scope, Role::FuncName);
        self.define_function(idx, &w);
        self.skip_blanks();
        if self.peek() == Some(b'(') {
            self.pos += 1;
            self.skip_blanks();
            if self.peek() != Some(b')') {
                self.distrust("bash would report a syntax error here (in a function definition)");
                return None;
            }
            self.pos += 1;
        }
        self.function_body(scope);
        Some(idx)
    }

    fn define_function(&mut self, idx: usize, w: &WordInfo) {
        if let Some(name) = &w.lit {
            self.out.functions.insert(name.clone());
        } else {
            self.distrust("a function whose name is not a plain word");
        }
        self.out.commands[idx].kind = CommandKind::Function {
            name: w.lit.clone(),
        };
    }

    /// The compound command that is a function's body.
    fn function_body(&mut self, scope: ScopeId) {
        self.skip_newlines();
        let compound = matches!(
            self.reserved_here(),
            Some(b"{" | b"if" | b"while" | b"until" | b"for" | b"select" | b"case" | b"[[")
        ) || self.peek() == Some(b'(');
        if !compound {
            self.distrust("bash would report a syntax error here (a function body must be a compound command)");
            return;
        }
        self.command(scope);
    }

    /// Whether a redirection operator (with an optional fd number or `{name}`) starts here.
    fn redirection_starts(&self) -> bool {
        self.redirection_prefix().is_some()
    }

    /// The length of a redirection's fd prefix (`2`, `{fd}`) and whether an operator
    /// follows: `Some(prefix_len)`.
    fn redirection_prefix(&self) -> Option<usize> {
        let mut i = self.pos;
        if self.at(i) == Some(b'{') {
            let n = crate::template::placeholder::ident_len(&self.src[i + 1..])?;
            if self.at(i + 1 + n) != Some(b'}') {
                return None;
            }
            i += n + 2;
        } else {
            while self.at(i).is_some_and(|c| c.is_ascii_digit()) {
                i += 1;
            }
        }
        match (self.at(i), self.at(i + 1)) {
            (Some(b'<' | b'>'), Some(b'(')) => None,
            (Some(b'<'), _) if self.placeholder_at(i).is_some() => None,
            (Some(b'<' | b'>'), _) => Some(i - self.pos),
            (Some(b'&'), Some(b'>')) if i == self.pos => Some(0),
            _ => None,
        }
    }

    /// Redirections after a compound command.
    fn redirections(&mut self, idx: usize, scope: ScopeId) {
        loop {
            self.skip_blanks();
            if self.failed() {
                return;
            }
            let Some(prefix) = self.redirection_prefix() else {
                return;
            };
            self.pos += prefix;
            self.redirect(idx, scope);
        }
    }

    /// One redirection; the cursor is at its operator.
    fn redirect(&mut self, idx: usize, scope: ScopeId) {
        let ops: &[&[u8]] = &[
            b"<<<", b"<<-", b"<<", b"<&", b"<>", b"&>>", b"&>", b">>", b">&", b">|", b"<", b">",
        ];
        let rest = &self.src[self.pos..];
        let Some(op) = ops.iter().copied().find(|o| rest.starts_with(o)) else {
            self.distrust("bash would report a syntax error here (a redirection)");
            return;
        };
        self.pos += op.len();
        self.skip_blanks();
        match op {
            b"<<" | b"<<-" => self.heredoc_operator(idx, scope, op == b"<<-"),
            _ => {
                let input = op == b"<";
                let procsub = self.peek() == Some(b'<') && self.peek2() == Some(b'(');
                match self.word(scope, WordOpts::default()) {
                    Some(w) => {
                        if op == b"<<<" {
                            self.out.set_role(w.scope, Role::HereString);
                            self.out.commands[idx].stdin.push(w.scope);
                        } else {
                            self.out.set_role(w.scope, Role::RedirTarget);
                            if input && procsub {
                                self.out.commands[idx].stdin.push(w.scope);
                            }
                        }
                    }
                    None => self.distrust(
                        "bash would report a syntax error here (a redirection without a target)",
                    ),
                }
            }
        }
    }

    /// A simple command (or a function definition `NAME () BODY`).
    fn simple_command(&mut self, parent: ScopeId) -> Option<usize> {
        let (idx, scope) = self.new_command(parent, CommandKind::Simple { words: Vec::new() });
        let mut words: Vec<WordInfo> = Vec::new();
        let mut prefix_items = 0usize;
        let mut decl = false;
        loop {
            self.skip_blanks_and_comment();
            if self.failed() {
                break;
            }
            if let Some(prefix) = self.redirection_prefix() {
                self.pos += prefix;
                self.redirect(idx, scope);
                if words.is_empty() {
                    prefix_items += 1;
                }
                continue;
            }
            if self.peek() == Some(b'(') {
                if words.len() == 1 && prefix_items == 0 {
                    return self.function_parens(idx, scope, &words[0]);
                }
                self.distrust("bash would report a syntax error here (unexpected `(`)");
                break;
            }
            if !self.word_starts() {
                break;
            }
            let opts = WordOpts {
                assign_ok: words.is_empty() || decl,
                ..WordOpts::default()
            };
            let Some(w) = self.word(scope, opts) else {
                break;
            };
            if words.is_empty() {
                if let Some(a) = &w.assign {
                    self.out.set_role(
                        w.scope,
                        Role::PrefixAssign {
                            var: a.var.clone(),
                            append: a.append,
                        },
                    );
                    prefix_items += 1;
                    continue;
                }
                self.out.set_role(w.scope, Role::CmdName);
                if self.extglob_at_start(&w) {
                    self.distrust("an extglob pattern in command position, which bash reads differently when `extglob` is off");
                }
                decl = w.lit.as_deref().is_some_and(|l| DECLARATION.contains(&l));
            } else {
                let index = words.len() - 1;
                self.out.set_role(w.scope, Role::Arg { cmd: idx, index });
                // `command declare …`, `builtin local …`.
                let wrappers_only = words
                    .iter()
                    .all(|p| matches!(p.lit.as_deref(), Some(b"command" | b"builtin")));
                if wrappers_only && w.lit.as_deref().is_some_and(|l| DECLARATION.contains(&l)) {
                    decl = true;
                }
            }
            words.push(w);
        }
        self.out.commands[idx].kind = CommandKind::Simple { words };
        Some(idx)
    }

    /// Whether the command word starts with an extglob group such as `!(…)` or `@(…)`.
    fn extglob_at_start(&self, w: &WordInfo) -> bool {
        let s = w.start;
        if self.map.is_some() {
            return false;
        }
        matches!(self.at(s), Some(b'?' | b'*' | b'+' | b'@' | b'!')) && self.at(s + 1) == Some(b'(')
    }

    /// `NAME ( ) BODY`: the cursor is at `(`.
    fn function_parens(&mut self, idx: usize, scope: ScopeId, name: &WordInfo) -> Option<usize> {
        self.pos += 1;
        self.skip_blanks();
        if self.peek() != Some(b')') {
            self.distrust("bash would report a syntax error here (in a function definition)");
            return Some(idx);
        }
        self.pos += 1;
        self.out.set_role(name.scope, Role::FuncName);
        self.define_function(idx, name);
        self.function_body(scope);
        Some(idx)
    }
}
