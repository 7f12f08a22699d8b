//! The one bash single-quoting function, shared by the renderer and the wrapper.

/// Append `s` to `out` as one single-quoted bash word.
///
/// Every byte except `'` is literal inside single quotes, and `'` becomes `'\''`. `'` is
/// never part of a multibyte character in a locale bash supports, so the result is one word
/// with exactly `s`'s bytes whatever the locale. `s` must not contain NUL, which bash cannot
/// hold (callers refuse such values first).
pub fn single_quote(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'\'');
    for &b in s {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
}

/// The length [`single_quote`] produces for `s`.
pub(crate) fn single_quoted_len(s: &[u8]) -> usize {
    2 + s.len() + 3 * s.iter().filter(|&&b| b == b'\'').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_bash() {
        let v = b"it's a \"$(x)\" `y` \\ \n end \xff";
        let mut q = b"printf %s ".to_vec();
        single_quote(v, &mut q);
        assert_eq!(single_quoted_len(v), q.len() - 10);
        let out = std::process::Command::new("/bin/bash")
            .arg("-c")
            .arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&q))
            .output()
            .unwrap();
        assert_eq!(out.stdout, v);
    }
}
