//! Words: quoting, expansions and substitutions, as bash 5.2's `read_token_word` and
//! `parse_matched_pair` read them.
//!
//! A word ends at an unquoted metacharacter (blank, newline, `;&|()<>`), except where bash
//! reads on: `<(…)`/`>(…)`, `$(…)`, `${…}`, `$((…))`, `$[…]`, extglob groups `@(…)`, and
//! the `(` of a compound assignment `NAME=(…)` where assignments are allowed.

use super::command::Stop;
use super::{AssignPrefix, Level, ParamOp, Parser, Quoting, RefKind, ScopeId, ScopeKind, WordInfo};
use crate::template::placeholder::ident_len;

/// How a word is read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WordOpts {
    /// `NAME=(…)` is a compound assignment here (command prefix, declaration builtins).
    pub assign_ok: bool,
    /// The right-hand side of `=~` in `[[ … ]]`: `(`, `)` and `|` belong to the word.
    pub regex: bool,
    /// An element of a compound assignment: a leading `[…]` is a subscript.
    pub elem: bool,
}

/// Where the assignment prefix of a word stands while it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AssignState {
    /// Nothing read yet.
    Start,
    /// An unquoted identifier so far.
    Name(usize),
    /// `NAME[…]` so far.
    Subscripted(usize, ScopeId),
    /// Not an assignment.
    No,
    /// An assignment: `NAME=`.
    Yes(AssignPrefix),
}

/// What reading part of a word found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Found {
    /// An expansion of any kind (value not known statically).
    pub expands: bool,
    /// A placeholder, at any depth.
    pub site: bool,
}

impl Found {
    fn add(&mut self, o: Found) {
        self.expands |= o.expands;
        self.site |= o.site;
    }
}

fn push(lit: &mut Option<Vec<u8>>, bytes: &[u8]) {
    if let Some(l) = lit.as_mut() {
        l.extend_from_slice(bytes);
    }
}

pub(crate) fn is_meta(c: u8) -> bool {
    matches!(
        c,
        b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>'
    )
}

impl Parser<'_, '_> {
    /// Whether a word starts at the cursor.
    pub(crate) fn word_starts(&self) -> bool {
        match self.peek() {
            None => false,
            Some(b'<' | b'>') => {
                self.peek2() == Some(b'(') || self.placeholder_at(self.pos).is_some()
            }
            Some(c) => !is_meta(c),
        }
    }

    /// Read one word at the cursor into a new word scope under `parent`.
    pub(crate) fn word(&mut self, parent: ScopeId, opts: WordOpts) -> Option<WordInfo> {
        // After a failure nothing is consumed any more: report no word, so that every loop
        // that reads words ends.
        if self.failed() || !self.word_starts() {
            return None;
        }
        let scope = self
            .out
            .new_scope(parent, ScopeKind::Word(super::Role::Pending));
        let start = self.pos;
        let sites_before = self.out.sites.len();
        let mut lit: Option<Vec<u8>> = Some(Vec::new());
        let mut quoted = false;
        let mut found = Found::default();
        let mut assign = AssignState::Start;
        let mut regex_depth = 0usize;
        if opts.elem && self.peek() == Some(b'[') {
            // `[k]=v` in `NAME=( … )`: the subscript is arithmetic for indexed arrays.
            let sub = self.out.new_scope(scope, ScopeKind::Subscript);
            let f = self.subscript(sub, Quoting::Unquoted);
            found.add(f);
            found.expands = true;
            assign = AssignState::No;
        }

        while let Some(c) = self.peek() {
            if self.failed() {
                break;
            }
            // Assignment prefix bookkeeping happens before the character is consumed.
            match (&assign, c) {
                (AssignState::Start, _) => {
                    assign = if c.is_ascii_alphabetic() || c == b'_' {
                        AssignState::Name(self.pos)
                    } else {
                        AssignState::No
                    };
                }
                (AssignState::Name(_), c) if c.is_ascii_alphanumeric() || c == b'_' => {}
                (AssignState::Name(s), b'=') | (AssignState::Subscripted(s, _), b'=') => {
                    let sub = match assign {
                        AssignState::Subscripted(_, sc) => Some(sc),
                        _ => None,
                    };
                    let var = ident_text(self.src, *s);
                    assign = AssignState::Yes(AssignPrefix {
                        var,
                        append: false,
                        compound: false,
                        subscript: sub,
                    });
                    self.pos += 1;
                    push(&mut lit, b"=");
                    if self.peek() == Some(b'(') && opts.assign_ok {
                        self.compound_assignment(scope, &mut assign, &mut found);
                        lit = None;
                    }
                    continue;
                }
                (AssignState::Name(s), b'+') | (AssignState::Subscripted(s, _), b'+')
                    if self.peek2() == Some(b'=') =>
                {
                    let sub = match assign {
                        AssignState::Subscripted(_, sc) => Some(sc),
                        _ => None,
                    };
                    let var = ident_text(self.src, *s);
                    assign = AssignState::Yes(AssignPrefix {
                        var,
                        append: true,
                        compound: false,
                        subscript: sub,
                    });
                    self.pos += 2;
                    push(&mut lit, b"+=");
                    if self.peek() == Some(b'(') && opts.assign_ok {
                        self.compound_assignment(scope, &mut assign, &mut found);
                        lit = None;
                    }
                    continue;
                }
                (AssignState::Name(s), b'[') => {
                    let s = *s;
                    let sub = self.out.new_scope(scope, ScopeKind::Subscript);
                    let f = self.subscript(sub, Quoting::Unquoted);
                    found.add(f);
                    if f.expands {
                        lit = None;
                    } else if let Some(l) = lit.as_mut() {
                        l.clear();
                        l.extend_from_slice(&self.src[start..self.pos]);
                    }
                    assign = AssignState::Subscripted(s, sub);
                    continue;
                }
                (AssignState::Name(_) | AssignState::Subscripted(..), _) => {
                    assign = AssignState::No;
                }
                _ => {}
            }

            if is_meta(c) {
                let next = self.peek2();
                match c {
                    b'<' | b'>' if next == Some(b'(') => {
                        self.proc_sub(scope);
                        found.expands = true;
                        lit = None;
                        continue;
                    }
                    b'<' => {
                        if let Some((p, e)) = self.placeholder_at(self.pos) {
                            self.add_site(self.pos, e, p, Quoting::Unquoted, scope, None);
                            self.pos = e;
                            found.site = true;
                            found.expands = true;
                            lit = None;
                            continue;
                        }
                        break;
                    }
                    b'(' if opts.regex => {
                        regex_depth += 1;
                        self.pos += 1;
                        push(&mut lit, &[c]);
                        continue;
                    }
                    b')' if opts.regex && regex_depth > 0 => {
                        regex_depth -= 1;
                        self.pos += 1;
                        push(&mut lit, &[c]);
                        continue;
                    }
                    b'|' if opts.regex => {
                        self.pos += 1;
                        push(&mut lit, &[c]);
                        continue;
                    }
                    b' ' | b'\t' | b'\n' if opts.regex && regex_depth > 0 => {
                        if c == b'\n' {
                            self.distrust("a newline inside a regular expression group");
                            break;
                        }
                        self.pos += 1;
                        push(&mut lit, &[c]);
                        continue;
                    }
                    b'(' if self.pos > start
                        && matches!(self.src[self.pos - 1], b'?' | b'*' | b'+' | b'@' | b'!')
                        && !self.escaped_before(start, self.pos - 1) =>
                    {
                        // An extglob group: read as one word when `extglob` is on; with it off,
                        // bash rejects the line, which runs nothing of it.
                        let f = self.extglob(scope);
                        found.add(f);
                        lit = None;
                        continue;
                    }
                    _ => break,
                }
            }

            match c {
                b'\\' => match self.peek2() {
                    Some(b'\n') => self.pos += 2,
                    Some(n) => {
                        quoted = true;
                        push(&mut lit, &[n]);
                        self.pos += 2;
                    }
                    None => {
                        push(&mut lit, b"\\");
                        self.pos += 1;
                    }
                },
                b'\'' => {
                    quoted = true;
                    let f = self.single_quoted(scope, &mut lit);
                    found.add(f);
                }
                b'"' => {
                    quoted = true;
                    let f = self.double_quoted(scope, &mut lit);
                    found.add(f);
                }
                b'`' => {
                    self.backquote(scope, false);
                    found.expands = true;
                    lit = None;
                }
                b'$' => {
                    let f = self.dollar(scope, Quoting::Unquoted, true, &mut lit, &mut quoted);
                    found.add(f);
                }
                _ => {
                    push(&mut lit, &[c]);
                    self.pos += 1;
                }
            }
        }
        if found.expands || found.site || self.out.sites.len() > sites_before {
            lit = None;
        }
        let assign = match assign {
            AssignState::Yes(a) => Some(a),
            _ => None,
        };
        let has_site = self.out.sites.len() > sites_before;
        if self.pos > start {
            self.out.scopes[scope].span = (self.orig(start), self.orig(self.pos - 1) + 1);
        }
        Some(WordInfo {
            scope,
            lit,
            quoted,
            assign,
            has_site,
            expands: found.expands || has_site,
            start: self.orig(start),
        })
    }

    /// Whether `src[i]` is escaped by a backslash (an odd run of them before it, within
    /// the word starting at `start`).
    fn escaped_before(&self, start: usize, i: usize) -> bool {
        let mut n = 0;
        let mut j = i;
        while j > start && self.src[j - 1] == b'\\' {
            n += 1;
            j -= 1;
        }
        n % 2 == 1
    }

    /// `'…'` at the cursor. Placeholders inside are sites (Harness substitutes text there).
    fn single_quoted(&mut self, scope: ScopeId, lit: &mut Option<Vec<u8>>) -> Found {
        let mut found = Found::default();
        self.pos += 1;
        while let Some(c) = self.peek() {
            if c == b'\n' {
                self.newline_in_word();
            }
            match c {
                b'\'' => {
                    self.pos += 1;
                    return found;
                }
                b'$' | b'<' => {
                    if let Some((p, e)) = self.placeholder_at(self.pos) {
                        self.add_site(self.pos, e, p, Quoting::Single, scope, None);
                        self.pos = e;
                        found.site = true;
                        *lit = None;
                        continue;
                    }
                }
                _ => {}
            }
            push(lit, &[c]);
            self.pos += 1;
        }
        self.distrust("an unterminated single-quoted string");
        found
    }

    /// A newline inside a quoted word. Inside `$(…)` bash 5.2 reads pending here-document
    /// bodies there (at the top level it does not): refuse rather than guess.
    fn newline_in_word(&mut self) {
        if self.level == Level::Subst && !self.pending.is_empty() {
            self.distrust("inside $(…), a quoted newline while a here-document is pending");
        }
    }

    /// `$'…'` whose `$` is at the cursor.
    fn ansi_c(&mut self, scope: ScopeId) -> Found {
        let mut found = Found {
            expands: true,
            site: false,
        };
        self.pos += 2;
        while let Some(c) = self.peek() {
            match c {
                b'\\' => self.pos += 2,
                b'\'' => {
                    self.pos += 1;
                    return found;
                }
                b'$' | b'<' => {
                    if let Some((p, e)) = self.placeholder_at(self.pos) {
                        self.add_site(self.pos, e, p, Quoting::AnsiC, scope, None);
                        self.pos = e;
                        found.site = true;
                        continue;
                    }
                    self.pos += 1;
                }
                _ => self.pos += 1,
            }
        }
        self.distrust("an unterminated $'…' string");
        found
    }

    /// `"…"` at the cursor.
    pub(crate) fn double_quoted(&mut self, scope: ScopeId, lit: &mut Option<Vec<u8>>) -> Found {
        if !self.enter() {
            return Found::default();
        }
        let f = self.double_quoted_inner(scope, lit);
        self.leave();
        f
    }

    fn double_quoted_inner(&mut self, scope: ScopeId, lit: &mut Option<Vec<u8>>) -> Found {
        let mut found = Found::default();
        self.pos += 1;
        while let Some(c) = self.peek() {
            if c == b'\n' {
                self.newline_in_word();
            }
            if self.failed() {
                return found;
            }
            match c {
                b'"' => {
                    self.pos += 1;
                    return found;
                }
                b'\\' => match self.peek2() {
                    Some(b'\n') => self.pos += 2,
                    Some(n @ (b'$' | b'`' | b'"' | b'\\')) => {
                        push(lit, &[n]);
                        self.pos += 2;
                    }
                    Some(n) => {
                        push(lit, &[b'\\', n]);
                        self.pos += 2;
                    }
                    None => self.pos += 1,
                },
                b'`' => {
                    self.backquote(scope, true);
                    found.expands = true;
                    *lit = None;
                }
                b'$' => {
                    let mut q = true;
                    let f = self.dollar(scope, Quoting::Double, false, lit, &mut q);
                    found.add(f);
                }
                b'<' if self.placeholder_at(self.pos).is_some() => {
                    let (p, e) = self.placeholder_at(self.pos).expect("checked");
                    self.add_site(self.pos, e, p, Quoting::Double, scope, None);
                    self.pos = e;
                    found.site = true;
                    *lit = None;
                }
                _ => {
                    push(lit, &[c]);
                    self.pos += 1;
                }
            }
        }
        self.distrust("an unterminated double-quoted string");
        found
    }

    /// A `$` at the cursor, in text quoted as `quoting`. `unquoted` allows `$'…'` and
    /// `$"…"`. Appends to `lit` what is literal, and clears it for expansions.
    pub(crate) fn dollar(
        &mut self,
        scope: ScopeId,
        quoting: Quoting,
        unquoted: bool,
        lit: &mut Option<Vec<u8>>,
        quoted: &mut bool,
    ) -> Found {
        let exp = Found {
            expands: true,
            site: false,
        };
        if let Some((p, e)) = self.placeholder_at(self.pos) {
            self.add_site(self.pos, e, p, quoting, scope, None);
            self.pos = e;
            *lit = None;
            return Found {
                expands: true,
                site: true,
            };
        }
        let next = self.peek2();
        match next {
            Some(b'{') => {
                *lit = None;
                let mut f = self.param(scope, quoting == Quoting::Double);
                f.expands = true;
                f
            }
            Some(b'(') => {
                *lit = None;
                if self.at(self.pos + 2) == Some(b'(') {
                    let s = self
                        .out
                        .new_scope(scope, ScopeKind::Arith("an arithmetic expansion $((…))"));
                    self.pos += 3;
                    let mut f = self.arith(s, ArithEnd::DoubleParen, Quoting::Double);
                    f.expands = true;
                    f
                } else {
                    self.pos += 2;
                    let mut f = self.substitution(scope, ScopeKind::ComSub);
                    f.expands = true;
                    f
                }
            }
            Some(b'[') => {
                *lit = None;
                let s = self
                    .out
                    .new_scope(scope, ScopeKind::Arith("an arithmetic expansion $[…]"));
                self.pos += 2;
                let mut f = self.arith(s, ArithEnd::Bracket, Quoting::Double);
                f.expands = true;
                f
            }
            Some(b'\'') if unquoted => {
                *quoted = true;
                *lit = None;
                self.ansi_c(scope)
            }
            Some(b'"') if unquoted => {
                *quoted = true;
                self.pos += 1;
                self.double_quoted(scope, lit)
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let n = ident_len(&self.src[self.pos + 1..]).unwrap_or(1);
                let name = self.src[self.pos + 1..self.pos + 1 + n].to_vec();
                self.add_ref(&name, RefKind::Value, scope);
                self.pos += 1 + n;
                *lit = None;
                exp
            }
            Some(c) if c.is_ascii_digit() || matches!(c, b'@' | b'*') => {
                self.add_ref(&[c], RefKind::Value, scope);
                self.pos += 2;
                *lit = None;
                exp
            }
            Some(b'#' | b'?' | b'-' | b'$' | b'!') => {
                self.pos += 2;
                *lit = None;
                exp
            }
            _ => {
                push(lit, b"$");
                self.pos += 1;
                Found::default()
            }
        }
    }

    /// `${…}` whose `$` is at the cursor. `dq`: inside double quotes.
    fn param(&mut self, scope: ScopeId, dq: bool) -> Found {
        if !self.enter() {
            return Found::default();
        }
        let f = self.param_inner(scope, dq);
        self.leave();
        f
    }

    fn param_inner(&mut self, scope: ScopeId, dq: bool) -> Found {
        let mut found = Found::default();
        self.pos += 2;
        let mut indirect = false;
        let mut length = false;
        if matches!(self.peek(), Some(b'#' | b'!')) && !matches!(self.peek2(), Some(b'}')) {
            // `${#x}`, `${!x}` (but `${#}` and `${!}` are the specials themselves).
            indirect = self.peek() == Some(b'!');
            length = self.peek() == Some(b'#');
            self.pos += 1;
        }
        let mut name: Option<Vec<u8>> = None;
        if let Some(n) = ident_len(&self.src[self.pos..]) {
            name = Some(self.src[self.pos..self.pos + n].to_vec());
            self.pos += n;
        } else if self.peek().is_some_and(|c| c.is_ascii_digit()) {
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
            }
            name = Some(b"1".to_vec());
        } else if matches!(
            self.peek(),
            Some(b'@' | b'*' | b'#' | b'?' | b'$' | b'!' | b'-')
        ) {
            if matches!(self.peek(), Some(b'@' | b'*')) {
                name = Some(b"@".to_vec());
            }
            self.pos += 1;
        } else {
            self.distrust("a parameter expansion bash would reject (bad substitution)");
            return found;
        }
        let is_ident = name
            .as_deref()
            .is_some_and(|n| ident_len(n) == Some(n.len()));
        if is_ident && self.peek() == Some(b'[') {
            let all = matches!(
                (self.peek2(), self.at(self.pos + 2)),
                (Some(b'@' | b'*'), Some(b']'))
            );
            if all {
                self.pos += 3;
            } else {
                let sub = self.out.new_scope(scope, ScopeKind::Subscript);
                let f = self.subscript(sub, Quoting::Unquoted);
                found.add(f);
            }
        }
        let var = name
            .as_deref()
            .filter(|_| is_ident)
            .map(|n| String::from_utf8_lossy(n).into_owned());
        // `${#x}` is a length, an integer whatever `x` holds: not a use of the value.
        let ref_name = if length { None } else { name.clone() };
        let mut kind = if indirect {
            RefKind::Indirect
        } else {
            RefKind::Value
        };
        if indirect && matches!(self.peek(), Some(b'*' | b'@')) && self.peek2() == Some(b'}') {
            // `${!prefix*}`: the names of variables, not a value.
            self.pos += 2;
            return found;
        }
        let op = match (self.peek(), self.peek2()) {
            (Some(b'}'), _) => {
                self.pos += 1;
                None
            }
            (Some(b':'), Some(b'-' | b'+' | b'?')) => {
                self.pos += 2;
                Some(ParamOp::Use)
            }
            (Some(b':'), Some(b'=')) => {
                self.pos += 2;
                Some(ParamOp::Assign)
            }
            (Some(b':'), _) => {
                self.pos += 1;
                let s = self.out.new_scope(scope, ScopeKind::Substring);
                let f = self.arith(s, ArithEnd::Brace, Quoting::Unquoted);
                found.add(f);
                if let Some(n) = ref_name {
                    self.add_ref(&n, kind, scope);
                }
                return found;
            }
            (Some(b'-' | b'+' | b'?'), _) => {
                self.pos += 1;
                Some(ParamOp::Use)
            }
            (Some(b'='), _) => {
                self.pos += 1;
                Some(ParamOp::Assign)
            }
            (Some(b'#' | b'%' | b'/' | b'^' | b','), _) => Some(ParamOp::Pattern),
            (Some(b'@'), Some(c))
                if c.is_ascii_alphabetic() && self.at(self.pos + 2) == Some(b'}') =>
            {
                if c == b'P' {
                    kind = RefKind::Prompt;
                }
                self.pos += 3;
                None
            }
            _ => {
                self.distrust("a parameter expansion bash would reject (bad substitution)");
                return found;
            }
        };
        if let Some(n) = ref_name {
            self.add_ref(&n, kind, scope);
        }
        if let Some(op) = op {
            let w = self.out.new_scope(scope, ScopeKind::ParamWord { op, var });
            let f = self.param_word(w, dq, op);
            found.add(f);
        }
        found
    }

    /// The word of `${name OP word}` up to the closing `}`.
    fn param_word(&mut self, scope: ScopeId, dq: bool, op: ParamOp) -> Found {
        let mut found = Found::default();
        let mut depth = 0usize;
        let mut sink = None;
        while let Some(c) = self.peek() {
            if self.failed() {
                return found;
            }
            match c {
                b'}' if depth == 0 => {
                    self.pos += 1;
                    return found;
                }
                b'}' => {
                    depth -= 1;
                    self.pos += 1;
                }
                b'{' => {
                    depth += 1;
                    self.pos += 1;
                }
                b'\\' => {
                    self.pos += if self.peek2().is_some() { 2 } else { 1 };
                }
                b'\'' if dq && op == ParamOp::Pattern => {
                    // In a pattern or replacement inside double quotes, bash 5.2 removes
                    // these quotes; elsewhere it keeps them. Too subtle to vouch for.
                    self.distrust(
                        "a single quote in a pattern of a double-quoted ${…} (bash 5.2 \
                         removes such quotes there and keeps them elsewhere; put the text in a \
                         variable instead: nl=$'\\n'; \"${x#*\"$nl\"}\")",
                    );
                    return found;
                }
                b'\'' if dq => {
                    // Inside double quotes bash matches these quotes (a `}` between them does
                    // not close) but keeps them as text, and expands what is between them.
                    self.pos += 1;
                    loop {
                        match self.peek() {
                            None => {
                                self.distrust("an unterminated ${…}");
                                return found;
                            }
                            Some(b'\'') => {
                                self.pos += 1;
                                break;
                            }
                            Some(b'"') => {
                                self.distrust(
                                    "a double quote inside '…' inside a double-quoted ${…} word",
                                );
                                return found;
                            }
                            Some(b'\\') => self.pos += 2,
                            Some(b'`') => {
                                self.backquote(scope, true);
                                found.expands = true;
                            }
                            Some(b'$') => {
                                let mut q = true;
                                let f =
                                    self.dollar(scope, Quoting::Double, false, &mut sink, &mut q);
                                found.add(f);
                            }
                            Some(b'<') if self.placeholder_at(self.pos).is_some() => {
                                let (p, e) = self.placeholder_at(self.pos).expect("checked");
                                self.add_site(self.pos, e, p, Quoting::Double, scope, None);
                                self.pos = e;
                                found.site = true;
                            }
                            Some(_) => self.pos += 1,
                        }
                        if self.failed() {
                            return found;
                        }
                    }
                }
                b'\'' => {
                    let f = self.single_quoted(scope, &mut sink);
                    found.add(f);
                }
                b'"' => {
                    let f = self.double_quoted(scope, &mut sink);
                    found.add(f);
                }
                b'`' => {
                    self.backquote(scope, dq);
                    found.expands = true;
                }
                b'$' => {
                    let mut q = dq;
                    let f = self.dollar(scope, Quoting::Unquoted, !dq, &mut sink, &mut q);
                    found.add(f);
                }
                b'<' if self.placeholder_at(self.pos).is_some() => {
                    let (p, e) = self.placeholder_at(self.pos).expect("checked");
                    self.add_site(self.pos, e, p, Quoting::Unquoted, scope, None);
                    self.pos = e;
                    found.site = true;
                }
                _ => self.pos += 1,
            }
        }
        self.distrust("an unterminated ${…}");
        found
    }

    /// `[…]` whose `[` is at the cursor: a subscript (or a glob bracket).
    pub(crate) fn subscript(&mut self, scope: ScopeId, quoting: Quoting) -> Found {
        self.pos += 1;
        self.arith(scope, ArithEnd::Bracket, quoting)
    }

    /// Arithmetic text up to its end. Bare names inside are variable references.
    pub(crate) fn arith(&mut self, scope: ScopeId, end: ArithEnd, quoting: Quoting) -> Found {
        let mut found = Found::default();
        let mut depth = 0usize;
        let mut sink = None;
        if !self.enter() {
            return found;
        }
        loop {
            if self.failed() {
                break;
            }
            let Some(c) = self.peek() else {
                self.distrust("an unterminated arithmetic expression or subscript");
                break;
            };
            match c {
                b'(' => {
                    depth += 1;
                    self.pos += 1;
                }
                b')' if depth > 0 => {
                    depth -= 1;
                    self.pos += 1;
                }
                b')' => {
                    if end == ArithEnd::DoubleParen {
                        if self.peek2() == Some(b')') {
                            self.pos += 2;
                        } else {
                            // bash would re-read it as a command substitution of a subshell.
                            self.distrust("`((` that is not closed by `))`");
                        }
                    } else {
                        self.distrust("an unbalanced `)` in arithmetic");
                    }
                    break;
                }
                b']' if end == ArithEnd::Bracket && depth == 0 => {
                    self.pos += 1;
                    break;
                }
                b'}' if end == ArithEnd::Brace && depth == 0 => {
                    self.pos += 1;
                    break;
                }
                b';' if end == ArithEnd::DoubleParen && depth == 0 => self.pos += 1,
                b'\'' => {
                    self.distrust("a single quote inside arithmetic");
                    break;
                }
                b'"' => {
                    let f = self.double_quoted(scope, &mut sink);
                    found.add(f);
                }
                b'`' => {
                    self.backquote(scope, quoting == Quoting::Double);
                    found.expands = true;
                }
                b'\\' => {
                    self.pos += if self.peek2().is_some() { 2 } else { 1 };
                }
                b'$' => {
                    let mut q = true;
                    let f = self.dollar(scope, quoting, false, &mut sink, &mut q);
                    found.add(f);
                }
                b'<' if self.placeholder_at(self.pos).is_some() => {
                    let (p, e) = self.placeholder_at(self.pos).expect("checked");
                    self.add_site(self.pos, e, p, quoting, scope, None);
                    self.pos = e;
                    found.site = true;
                }
                c if c.is_ascii_digit() => {
                    // Numbers, including `0x1f` and `16#ff`: their letters are digits.
                    while self.peek().is_some_and(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, b'#' | b'_' | b'@')
                    }) {
                        self.pos += 1;
                    }
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let n = ident_len(&self.src[self.pos..]).unwrap_or(1);
                    let name = self.src[self.pos..self.pos + n].to_vec();
                    self.add_ref(&name, RefKind::Value, scope);
                    self.pos += n;
                }
                _ => self.pos += 1,
            }
        }
        self.leave();
        found
    }

    /// An extglob group whose `(` is at the cursor.
    fn extglob(&mut self, scope: ScopeId) -> Found {
        if !self.enter() {
            return Found::default();
        }
        let sites = self.out.sites.len();
        let f = self.extglob_inner(scope);
        self.leave();
        if self.level == Level::Subst && self.out.sites.len() > sites {
            // bash 5.2 re-reads the text of `$(…)`, and reads an extglob group holding a
            // spliced reference differently there (found by the fuzzer).
            self.distrust("a placeholder in an extglob group inside $(…)");
        }
        f
    }

    fn extglob_inner(&mut self, scope: ScopeId) -> Found {
        let mut found = Found::default();
        let mut depth = 0usize;
        let mut sink = None;
        self.pos += 1;
        while let Some(c) = self.peek() {
            if self.failed() {
                return found;
            }
            match c {
                b'(' => {
                    depth += 1;
                    self.pos += 1;
                }
                b')' if depth == 0 => {
                    self.pos += 1;
                    return found;
                }
                b')' => {
                    depth -= 1;
                    self.pos += 1;
                }
                b'\n' => break,
                b'\\' => self.pos += if self.peek2().is_some() { 2 } else { 1 },
                b'\'' => {
                    let f = self.single_quoted(scope, &mut sink);
                    found.add(f);
                }
                b'"' => {
                    let f = self.double_quoted(scope, &mut sink);
                    found.add(f);
                }
                b'`' => {
                    self.backquote(scope, false);
                    found.expands = true;
                }
                b'$' => {
                    let mut q = false;
                    let f = self.dollar(scope, Quoting::Unquoted, true, &mut sink, &mut q);
                    found.add(f);
                }
                b'<' if self.placeholder_at(self.pos).is_some() => {
                    let (p, e) = self.placeholder_at(self.pos).expect("checked");
                    self.add_site(self.pos, e, p, Quoting::Unquoted, scope, None);
                    self.pos = e;
                    found.site = true;
                }
                _ => self.pos += 1,
            }
        }
        self.distrust("an unterminated extglob group");
        found
    }

    /// `$(…)` (cursor after the `(`), `<(…)` or `>(…)`: a command list up to `)`.
    pub(crate) fn substitution(&mut self, parent: ScopeId, kind: ScopeKind) -> Found {
        let scope = self.out.new_scope(parent, kind);
        let sites_before = self.out.sites.len();
        if !self.enter() {
            return Found::default();
        }
        if self.level == Level::Backquote {
            // Fine: backquote text is parsed like a script.
        }
        let outer_level = self.level;
        let outer_pending = std::mem::take(&mut self.pending);
        let outer_had = self.outer_pending;
        let outer_heredoc = std::mem::replace(&mut self.subst_heredoc, false);
        self.outer_pending = outer_had || !outer_pending.is_empty();
        if self.level == Level::Top {
            self.level = Level::Subst;
        }
        self.list(scope, Stop::RParen);
        if self.peek() == Some(b')') {
            self.pos += 1;
        } else if !self.failed() {
            self.distrust("an unterminated command or process substitution");
        }
        if !self.pending.is_empty() && !self.failed() {
            self.distrust(
                "a here-document inside a substitution whose body does not come before its `)`",
            );
        }
        self.pending = outer_pending;
        self.outer_pending = outer_had;
        self.subst_heredoc = outer_heredoc;
        self.level = outer_level;
        self.leave();
        Found {
            expands: true,
            site: self.out.sites.len() > sites_before,
        }
    }

    /// `<(…)` or `>(…)` at the cursor.
    fn proc_sub(&mut self, parent: ScopeId) {
        self.pos += 2;
        self.substitution(parent, ScopeKind::ProcSub);
    }

    /// Backquoted command substitution at the cursor. Its text, with bash's backslash
    /// removal, is parsed as a script.
    pub(crate) fn backquote(&mut self, parent: ScopeId, in_dq: bool) {
        let start = self.pos;
        let mut i = start + 1;
        while i < self.src.len() && self.src[i] != b'`' {
            i += if self.src[i] == b'\\' { 2 } else { 1 };
        }
        if i >= self.src.len() {
            self.distrust("an unterminated backquote substitution");
            self.pos = self.src.len();
            return;
        }
        let close = i;
        let mut text = Vec::with_capacity(close - start);
        let mut map = Vec::with_capacity(close - start + 1);
        let mut j = start + 1;
        while j < close {
            let c = self.src[j];
            if c == b'\\'
                && j + 1 < close
                && (matches!(self.src[j + 1], b'$' | b'`' | b'\\')
                    || (in_dq && self.src[j + 1] == b'"'))
            {
                // Mapped to the backslash: a placeholder whose `$` was escaped then spans
                // more script bytes than its text, which `add_site` refuses.
                map.push(self.orig(j));
                text.push(self.src[j + 1]);
                j += 2;
            } else {
                map.push(self.orig(j));
                text.push(c);
                j += 1;
            }
        }
        map.push(self.orig(close));
        let scope = self.out.new_scope(parent, ScopeKind::ComSub);
        let depth = self.depth + 1;
        if depth > super::MAX_DEPTH {
            self.out.too_deep = true;
            self.distrust(format!(
                "constructs nest more than {} deep",
                super::MAX_DEPTH
            ));
            self.pos = close + 1;
            return;
        }
        let collapsed = text.len() < close - start - 1;
        let sites = self.out.sites.len();
        let mut sub = Parser::new(&text, Some(map), self.out, Level::Backquote, depth);
        sub.script(scope);
        if in_dq && self.out.sites.len() > sites {
            // With quotes spliced into backquotes inside double quotes (and a `#` there),
            // bash 5.2 ends the backquotes elsewhere, and quoted text became a command
            // substitution (the second 1,000,000-case fuzz run). Refused wherever it stands.
            self.pos = start;
            self.distrust(
                "a placeholder inside backquotes inside double quotes, which bash 5.2 does not \
                 always read as one string; use $(…) instead",
            );
        } else if collapsed && self.out.sites.len() > sites {
            // Backslashes that bash removes before it parses the text (`\`, `\``, `\$`,
            // `"`) make two levels of quoting, and a reference spliced into one is read at
            // the other (the fuzzer found nested backquotes and `$'…'` where they disagree).
            self.pos = start;
            self.distrust(
                r#"a placeholder inside backquotes whose text has backslash escapes (\\ \` \$ \"); use $(…) instead"#,
            );
        }
        self.pos = close + 1;
    }

    /// `NAME=(…)` whose `(` is at the cursor.
    fn compound_assignment(&mut self, word: ScopeId, assign: &mut AssignState, found: &mut Found) {
        if self.level == Level::Subst {
            // bash 5.2 re-prints a compound assignment inside `$(…)` and loses its
            // backslashes (`a=(x\|y)` becomes a syntax error there).
            let end = self.src[self.pos..]
                .iter()
                .position(|&c| c == b')')
                .map_or(self.src.len(), |p| self.pos + p);
            if self.src[self.pos..end].contains(&b'\\') {
                self.distrust(
                    "a compound assignment with a backslash inside $(…), which bash 5.2 \
                     re-prints without it",
                );
                return;
            }
        }
        let var = match assign {
            AssignState::Yes(a) => {
                a.compound = true;
                self.out.arrays.insert(a.var.clone());
                a.var.clone()
            }
            _ => return,
        };
        self.pos += 1;
        if !self.enter() {
            return;
        }
        loop {
            self.skip_blanks_and_comment();
            if self.failed() {
                break;
            }
            match self.peek() {
                None => {
                    self.distrust("an unterminated compound assignment");
                    break;
                }
                Some(b')') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\n') => {
                    if self.outer_pending || !self.pending.is_empty() {
                        self.distrust("a newline inside a compound assignment while a here-document is pending");
                        break;
                    }
                    self.pos += 1;
                }
                Some(_) if self.word_starts() => {
                    let opts = WordOpts {
                        elem: true,
                        ..WordOpts::default()
                    };
                    if let Some(w) = self.word(word, opts) {
                        found.expands = true;
                        found.site |= w.has_site;
                        let role = super::Role::ArrayElem { var: var.clone() };
                        self.out.set_role(w.scope, role);
                    }
                }
                Some(_) => {
                    self.distrust("an operator inside a compound assignment");
                    break;
                }
            }
        }
        self.leave();
    }
}

/// What ends arithmetic text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithEnd {
    /// `))`.
    DoubleParen,
    /// `]`.
    Bracket,
    /// `}` (the offset and length of `${x:…}`).
    Brace,
}

fn ident_text(src: &[u8], start: usize) -> String {
    let n = ident_len(&src[start..]).unwrap_or(0);
    String::from_utf8_lossy(&src[start..start + n]).into_owned()
}
