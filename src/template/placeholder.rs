//! Placeholder syntax: which byte sequences in a template name a value.
//!
//! - `${name}` (Harness FirstGen);
//! - `<+secretManager.environmentVariables.name>` and `<+spec.environmentVariables.name>`
//!   (NextGen);
//! - `${secrets.getValue("id")}` (or with single quotes), and the NextGen spelling
//!   `<+secrets.getValue("id")>`, for stored secrets.
//!
//! This module only recognises the spellings. Where a placeholder may stand, and what it
//! becomes, is the parser's and the renderer's business.

/// What a placeholder refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placeholder {
    /// A template variable; `next_gen` for the `<+…>` spellings.
    Var {
        /// The variable's name.
        name: String,
        /// Written in a NextGen spelling.
        next_gen: bool,
    },
    /// A `secrets.getValue("id")` reference.
    Secret {
        /// The stored secret's id.
        name: String,
    },
}

impl Placeholder {
    /// Identity for bindings: `${x}` and `<+spec.environmentVariables.x>` are one variable.
    pub(crate) fn key(&self) -> (bool, &str) {
        match self {
            Placeholder::Var { name, .. } => (false, name),
            Placeholder::Secret { name } => (true, name),
        }
    }

    /// How errors name it.
    pub(crate) fn display(&self) -> String {
        match self {
            Placeholder::Var { name, .. } => name.clone(),
            Placeholder::Secret { name } => format!("secrets.getValue(\"{name}\")"),
        }
    }
}

/// Length of the identifier `[A-Za-z_][A-Za-z0-9_]*` at the start of `s`.
pub(crate) fn ident_len(s: &[u8]) -> Option<usize> {
    match s.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
        _ => return None,
    }
    Some(
        s.iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count(),
    )
}

/// Whether all of `s` is one identifier.
pub(crate) fn is_ident(s: &[u8]) -> bool {
    ident_len(s) == Some(s.len())
}

/// A placeholder starting at `pos` (before `end`), if any, and where it ends.
pub(crate) fn match_at(buf: &[u8], pos: usize, end: usize) -> Option<(Placeholder, usize)> {
    let s = &buf[pos..end];
    if let Some(rest) = s.strip_prefix(b"${") {
        if let Some(n) = ident_len(rest) {
            if rest.get(n) == Some(&b'}') {
                let name = String::from_utf8_lossy(&rest[..n]).into_owned();
                return Some((
                    Placeholder::Var {
                        name,
                        next_gen: false,
                    },
                    pos + 2 + n + 1,
                ));
            }
        }
        let (name, used) = secret_call(rest.strip_prefix(b"secrets.getValue(")?, b'}')?;
        return Some((Placeholder::Secret { name }, pos + 2 + 17 + used));
    }
    let rest = s.strip_prefix(b"<+")?;
    for prefix in [
        &b"secretManager.environmentVariables."[..],
        b"spec.environmentVariables.",
    ] {
        if let Some(r) = rest.strip_prefix(prefix) {
            let n = ident_len(r)?;
            if r.get(n) != Some(&b'>') {
                return None;
            }
            let name = String::from_utf8_lossy(&r[..n]).into_owned();
            return Some((
                Placeholder::Var {
                    name,
                    next_gen: true,
                },
                pos + 2 + prefix.len() + n + 1,
            ));
        }
    }
    let (name, used) = secret_call(rest.strip_prefix(b"secrets.getValue(")?, b'>')?;
    Some((Placeholder::Secret { name }, pos + 2 + 17 + used))
}

/// `"name")` + `close`, or with single quotes: the name and the bytes used.
fn secret_call(s: &[u8], close: u8) -> Option<(String, usize)> {
    let q = *s.first()?;
    if q != b'"' && q != b'\'' {
        return None;
    }
    let n = s[1..].iter().position(|&c| c == q)?;
    let name = &s[1..1 + n];
    if name.is_empty()
        || name.len() > 256
        || name.iter().any(|&c| c < 0x20 || c == b'\\' || c == 0x7f)
    {
        return None;
    }
    if s.get(1 + n + 1) != Some(&b')') || s.get(1 + n + 2) != Some(&close) {
        return None;
    }
    let name = std::str::from_utf8(name).ok()?.to_owned();
    // Opening quote, name, closing quote, `)`, `close`.
    Some((name, n + 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let m = |s: &str| match_at(s.as_bytes(), 0, s.len()).map(|(p, e)| (p.display(), e));
        assert_eq!(m("${abc}x"), Some(("abc".into(), 6)));
        assert_eq!(m("${a b}"), None);
        assert_eq!(m("$abc"), None);
        assert_eq!(
            m("<+secretManager.environmentVariables.k>"),
            Some(("k".into(), 39))
        );
        assert_eq!(
            m("<+spec.environmentVariables.k_2>"),
            Some(("k_2".into(), 32))
        );
        assert_eq!(m("<+spec.environmentVariables.2k>"), None);
        assert_eq!(
            m("${secrets.getValue(\"db-pass\")}"),
            Some(("secrets.getValue(\"db-pass\")".into(), 30))
        );
        assert_eq!(
            m("<+secrets.getValue('x')>"),
            Some(("secrets.getValue(\"x\")".into(), 24))
        );
        assert_eq!(m("${secrets.getValue(\"\")}"), None);
    }
}
