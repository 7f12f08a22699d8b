//! Here-documents: the `<<` operator's delimiter word, and the bodies bash reads after the
//! next newline token, in the order their operators appeared.
//!
//! Unquoted bodies expand like double-quoted text (without `"` being special). Quoted
//! bodies are literal; placeholders in them are still found, and the renderer turns such a
//! here-document into an unquoted one with its own text escaped, so that no value is ever
//! pasted into script text.

use super::{Heredoc, Level, Parser, Pending, Quoting, Role, ScopeId, ScopeKind};

impl Parser<'_, '_> {
    /// `<<WORD` or `<<-WORD`; the cursor is at the delimiter word.
    pub(crate) fn heredoc_operator(&mut self, idx: usize, scope: ScopeId, strip_tabs: bool) {
        if self.level == Level::Backquote {
            self.distrust("a here-document inside backquotes");
            return;
        }
        let start = self.pos;
        let delim_scope = self
            .out
            .new_scope(scope, ScopeKind::Word(Role::HeredocDelim));
        let mut delim = Vec::new();
        let mut quoted = false;
        let mut plain = true;
        while let Some(c) = self.peek() {
            if super::word::is_meta(c) {
                break;
            }
            if matches!(c, b'$' | b'<') {
                if let Some((p, e)) = self.placeholder_at(self.pos) {
                    self.add_site(self.pos, e, p, Quoting::Unquoted, delim_scope, None);
                    delim.extend_from_slice(&self.src[self.pos..e]);
                    self.pos = e;
                    continue;
                }
            }
            match c {
                b'\\' => {
                    quoted = true;
                    if let Some(n) = self.peek2() {
                        if n == b'\n' {
                            self.pos += 2;
                            continue;
                        }
                        delim.push(n);
                        self.pos += 2;
                    } else {
                        self.pos += 1;
                    }
                }
                b'\'' => {
                    quoted = true;
                    self.pos += 1;
                    while let Some(c) = self.peek() {
                        if let Some((p, e)) = self.placeholder_at(self.pos) {
                            self.add_site(self.pos, e, p, Quoting::Single, delim_scope, None);
                            delim.extend_from_slice(&self.src[self.pos..e]);
                            self.pos = e;
                            continue;
                        }
                        self.pos += 1;
                        if c == b'\'' {
                            break;
                        }
                        delim.push(c);
                    }
                }
                b'"' => {
                    quoted = true;
                    self.pos += 1;
                    while let Some(c) = self.peek() {
                        if let Some((p, e)) = self.placeholder_at(self.pos) {
                            self.add_site(self.pos, e, p, Quoting::Double, delim_scope, None);
                            delim.extend_from_slice(&self.src[self.pos..e]);
                            self.pos = e;
                            continue;
                        }
                        self.pos += 1;
                        match c {
                            b'"' => break,
                            b'\\' if matches!(self.peek(), Some(b'"' | b'\\' | b'$' | b'`')) => {
                                delim.push(self.src[self.pos]);
                                self.pos += 1;
                            }
                            b'$' | b'`' => {
                                plain = false;
                                delim.push(c);
                            }
                            _ => delim.push(c),
                        }
                    }
                }
                b'$' | b'`' => {
                    plain = false;
                    delim.push(c);
                    self.pos += 1;
                }
                _ => {
                    delim.push(c);
                    self.pos += 1;
                }
            }
        }
        if self.pos == start {
            self.distrust(
                "bash would report a syntax error here (a here-document without a delimiter)",
            );
            return;
        }
        if !plain {
            self.distrust("a here-document delimiter with `$` or backquotes");
            return;
        }
        if self.level == Level::Subst {
            self.subst_heredoc = true;
        }
        let body_scope = self
            .out
            .new_scope(scope, ScopeKind::Word(Role::HeredocBody));
        self.out.commands[idx].stdin.push(body_scope);
        let index = quoted.then(|| {
            // Can the delimiter be written unquoted, with the same value?
            let problem = (delim.is_empty()
                || delim.iter().any(|&c| {
                    super::word::is_meta(c)
                        || matches!(c, b'\\' | b'\'' | b'"' | b'$' | b'`' | b'#' | b'\0')
                        || c == b'~' && delim.first() == Some(&b'~')
                }))
            .then_some("its delimiter cannot be written without quotes");
            self.out.heredocs.push(Heredoc {
                delim_span: (self.orig(start), self.orig(self.pos - 1) + 1),
                delim: delim.clone(),
                body: (0, 0),
                problem,
            });
            self.out.heredocs.len() - 1
        });
        self.pending.push(Pending {
            delim,
            strip_tabs,
            quoted,
            scope: body_scope,
            index,
        });
    }

    /// After a newline token: read every pending body, in order.
    pub(crate) fn read_heredoc_bodies(&mut self) {
        for h in std::mem::take(&mut self.pending) {
            if self.failed() {
                return;
            }
            let start = self.pos;
            let Some((body_end, resume)) = self.find_terminator(&h) else {
                self.distrust(format!(
                    "the here-document ended by `{}` has no terminating line",
                    String::from_utf8_lossy(&h.delim)
                ));
                self.pos = self.src.len();
                return;
            };
            if h.quoted {
                self.quoted_body(&h, start, body_end);
            } else {
                self.unquoted_body(h.scope, start, body_end);
            }
            self.pos = resume;
        }
    }

    /// The end of a body starting at the cursor, and where parsing resumes (after the
    /// terminating line). `None` if no line ends it.
    fn find_terminator(&mut self, h: &Pending) -> Option<(usize, usize)> {
        let b = self.src;
        let end = b.len();
        let mut ls = self.pos;
        while ls < end {
            let line_start = ls;
            let mut le = line_end(b, ls);
            // Unquoted bodies join backslash-newline before looking for the delimiter.
            let mut joined: Option<Vec<u8>> = None;
            if !h.quoted {
                while le < end && trailing_backslashes(&b[ls..le]) % 2 == 1 {
                    let next = line_end(b, le + 1);
                    let j = joined.get_or_insert_with(|| b[line_start..le].to_vec());
                    j.pop();
                    j.extend_from_slice(&b[le + 1..next]);
                    ls = le + 1;
                    le = next;
                }
            }
            let raw: &[u8] = joined.as_deref().unwrap_or(&b[line_start..le]);
            let mut first = 0;
            if h.strip_tabs {
                while first < raw.len() && raw[first] == b'\t' {
                    first += 1;
                }
            }
            let cand = &raw[first..];
            if cand == h.delim.as_slice() {
                return Some((line_start, (le + 1).min(end)));
            }
            if self.level != Level::Top && cand.starts_with(&h.delim) {
                // bash 5.2 may end a body inside `$(…)` at a line that only starts with the
                // delimiter.
                self.distrust(
                    "inside a substitution, a here-document line starts with its delimiter",
                );
                return None;
            }
            ls = le + 1;
        }
        None
    }

    /// A quoted body: literal text in which placeholders are still found.
    fn quoted_body(&mut self, h: &Pending, start: usize, end: usize) {
        if let Some(i) = h.index {
            // Here-documents are never parsed inside backquotes, so offsets are the script's.
            self.out.heredocs[i].body = (start, end);
        }
        let mut i = start;
        while i < end {
            if matches!(self.src[i], b'$' | b'<') {
                if let Some((p, e)) = super::super::placeholder::match_at(self.src, i, end) {
                    self.add_site(i, e, p, Quoting::QuotedHeredoc, h.scope, h.index);
                    i = e;
                    continue;
                }
            }
            i += 1;
        }
    }

    /// An unquoted body: `$…`, backquotes and `\$ \` \\ \⏎` as in double quotes.
    fn unquoted_body(&mut self, scope: ScopeId, start: usize, end: usize) {
        let map = self.map.clone();
        let mut sub = Parser::new(&self.src[..end], map, self.out, self.level, self.depth);
        sub.pos = start;
        // bash expands the body after reading it whole: substitutions in it are parsed then,
        // on their own, with no here-document pending.
        sub.outer_pending = false;
        sub.in_body = true;
        let mut sink = None;
        while let Some(c) = sub.peek() {
            if sub.failed() {
                break;
            }
            match c {
                b'\\' => sub.pos += if sub.peek2().is_some() { 2 } else { 1 },
                b'`' => sub.backquote(scope, true),
                b'$' => {
                    let mut q = true;
                    sub.dollar(scope, Quoting::Double, false, &mut sink, &mut q);
                }
                b'<' => match sub.placeholder_at(sub.pos) {
                    Some((p, e)) => {
                        sub.add_site(sub.pos, e, p, Quoting::Double, scope, None);
                        sub.pos = e;
                    }
                    None => sub.pos += 1,
                },
                _ => sub.pos += 1,
            }
        }
    }

    /// At the end of the text, with bodies still pending.
    pub(crate) fn unterminated_heredocs(&mut self) {
        let d = String::from_utf8_lossy(&self.pending[0].delim).into_owned();
        self.distrust(format!(
            "the here-document ended by `{d}` has no body (no newline follows its command)"
        ));
    }
}

fn line_end(b: &[u8], from: usize) -> usize {
    b[from.min(b.len())..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| from + p)
}

fn trailing_backslashes(s: &[u8]) -> usize {
    s.iter().rev().take_while(|&&c| c == b'\\').count()
}
