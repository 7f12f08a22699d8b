//! What bash may do with a value at a place in a template: the lattice the analysis joins.

use std::fmt;

/// What bash may do with a value placed somewhere. Ordered by restriction: `Data` is
/// harmless, `Integer` and `Name` accept only some values, `Refuse` accepts none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The value is used as text.
    Data,
    /// Bash evaluates the text as arithmetic: only a plain integer is safe.
    Integer(String),
    /// Bash uses the text as a variable name (evaluating any subscript): only a plain name
    /// is safe.
    Name(String),
    /// No value is safe here.
    Refuse(String),
}

impl Verdict {
    pub(crate) fn integer(why: impl Into<String>) -> Verdict {
        Verdict::Integer(why.into())
    }

    pub(crate) fn name(why: impl Into<String>) -> Verdict {
        Verdict::Name(why.into())
    }

    pub(crate) fn refuse(why: impl AsRef<str>) -> Verdict {
        Verdict::Refuse(why.as_ref().to_owned())
    }

    fn rank(&self) -> u8 {
        match self {
            Verdict::Data => 0,
            Verdict::Integer(_) | Verdict::Name(_) => 1,
            Verdict::Refuse(_) => 2,
        }
    }

    /// The least restrictive verdict that is at least as restrictive as both.
    pub(crate) fn join(&mut self, other: &Verdict) {
        match (&*self, other) {
            (_, Verdict::Data) => {}
            (Verdict::Integer(a), Verdict::Name(b)) | (Verdict::Name(b), Verdict::Integer(a)) => {
                *self = Verdict::Refuse(format!("{a}, and also {b}"));
            }
            _ if other.rank() > self.rank() => *self = other.clone(),
            _ => {}
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Data => f.write_str("data"),
            Verdict::Integer(w) | Verdict::Name(w) | Verdict::Refuse(w) => f.write_str(w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_is_monotone() {
        let mut v = Verdict::Data;
        v.join(&Verdict::integer("arith"));
        assert!(matches!(v, Verdict::Integer(_)));
        v.join(&Verdict::Data);
        assert!(matches!(v, Verdict::Integer(_)));
        v.join(&Verdict::name("name"));
        assert!(matches!(v, Verdict::Refuse(_)));
        v.join(&Verdict::integer("arith"));
        assert!(matches!(v, Verdict::Refuse(_)));
    }
}
