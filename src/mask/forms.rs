//! The encoded forms of a value that a script is likely to print, and which matching
//! channel finds each one.
//!
//! Forms are generated one at a time and handed to a callback, so that building a masker
//! for a large value holds at most the value and one form (a few times its size) at once.
//!
//! Raw channel (matched against the output as is):
//! - the value; with `\r\n` line ends (a PTY); each line of a multi-line value of at least
//!   [`MIN_LINE_LEN`] bytes, without a trailing `\r`;
//! - JSON string contents: as serde_json/jq write them, with `\/` (PHP), ASCII-only with
//!   `\uXXXX` (Python), both (PHP's default); byte-wise for values that are not UTF-8;
//! - percent-encoding: RFC 3986 in upper and lower case hex, form encoding (`+` for space)
//!   in both cases, encodeURIComponent, and Python's `quote()` (keeps `/`);
//! - bash 5.2's quoted forms: `$'…'` contents (printf `%q`, `declare -p`, `${v@Q}` and
//!   `set -x` when a string has control characters), in the C and a UTF-8 locale;
//!   backslash-escaped (printf `%q`), at the start of a word and inside one; `declare -p`'s
//!   double-quoted contents; and single-quoted contents with `'\''` (`${v@Q}`, `set -x`).
//!
//! Base64 channel (matched with line breaks removed, see `engine`): for the value and for
//! its JSON contents, in the standard and URL-safe alphabets, the characters fully
//! determined by the value at each of the three byte alignments (see [`base64_core`]), and
//! the complete padded and unpadded encodings of the value on its own.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use zeroize::Zeroizing;

use super::{Pattern, MIN_LINE_LEN, MIN_MASK_LEN};

/// Where a form is looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Channel {
    /// The output as written.
    Raw = 0,
    /// The output with line breaks removed: base64 wrapped at any width.
    Base64 = 1,
}

/// Hand every form of `v` worth masking to `out`: the raw bytes always, any other form
/// only if it is at least [`MIN_MASK_LEN`] long. Forms may repeat; the engine deduplicates.
pub(super) fn each_form(v: &[u8], out: &mut dyn FnMut(Channel, Pattern)) {
    out(Channel::Raw, Zeroizing::new(v.to_vec()));
    let mut raw = |form: Pattern| {
        if form.len() >= MIN_MASK_LEN && form.as_slice() != v {
            out(Channel::Raw, form);
        }
    };

    if v.contains(&b'\n') {
        // A PTY (SSH runs) turns "\n" into "\r\n".
        raw(crlf(v));
        // Each line alone: a key printed with a prefix, or indented by `sed 's/^/  /'`.
        for line in v.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() >= MIN_LINE_LEN {
                raw(Zeroizing::new(line.to_vec()));
            }
        }
    }

    // JSON string contents.
    let json = json_forms(v, &mut raw);

    // Percent-encoding: RFC 3986 strict (curl, jq @uri) in upper and lower case hex, form
    // encoding with `+` for space, encodeURIComponent, and Python's quote() keeping `/`.
    for (keep, plus, lower) in [
        (b"" as &[u8], false, false),
        (b"", false, true),
        (b"", true, false),
        (b"", true, true),
        (b"!'()*", false, false),
        (b"/", false, false),
    ] {
        raw(percent_encode(v, keep, plus, lower));
    }

    // bash. `$'…'` is used for a whole string as soon as any part of it needs it, so a
    // value printed next to a control character gets it too, whatever it holds.
    raw(ansi_c(v, false));
    raw(ansi_c(v, true));
    if !needs_ansi_c(v, true) {
        raw(backslash_quote(v, true));
        raw(backslash_quote(v, false));
        raw(double_quote(v));
    }
    raw(replace_byte(v, b'\'', b"'\\''"));

    // Base64, of the value and of its JSON contents (a JWT claim, say).
    let mut b64 = |form: Pattern| {
        if form.len() >= MIN_MASK_LEN {
            out(Channel::Base64, form);
        }
    };
    let json = json.as_ref().map(|j| j.as_slice()).filter(|j| *j != v);
    for data in std::iter::once(v).chain(json) {
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            for align in 0..3 {
                b64(base64_core(engine, data, align));
            }
        }
    }
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        b64(Zeroizing::new(engine.encode(v).into_bytes()));
    }
}

/// Push the JSON forms of `v`; return serde_json's (the most common one).
fn json_forms(v: &[u8], raw: &mut dyn FnMut(Pattern)) -> Option<Pattern> {
    let Ok(s) = std::str::from_utf8(v) else {
        // Not UTF-8: the byte-oriented form a lenient encoder would write.
        let bytes = json_escape_bytes(v);
        if bytes.contains(&b'/') {
            raw(replace_byte(&bytes, b'/', b"\\/"));
        }
        raw(bytes);
        return None;
    };
    let serde = json_escape_bytes(v);
    let ascii = json_ascii_only(s);
    for form in [&serde, &ascii] {
        if form.contains(&b'/') {
            raw(replace_byte(form, b'/', b"\\/"));
        }
    }
    raw(ascii);
    raw(serde.clone());
    Some(serde)
}

/// The base64 characters fully determined by `v` when it starts `align` bytes into a
/// 3-byte group of a longer stream: the full groups inside `v` plus the edge characters
/// whose 6 bits all come from `v`. Whatever precedes or follows `v` (e.g. the newline of
/// `echo "$v" | base64`), these characters appear verbatim in the stream's encoding.
///
/// What is left out is at most one character at each end, which mixes at most 4 bits of
/// `v`'s first (last) byte with bits of its neighbour.
pub(super) fn base64_core(engine: &impl base64::Engine, v: &[u8], align: usize) -> Pattern {
    // Encode only the prefix needed to reach the first fully determined character, then
    // `v` itself: no copy of `v` beyond the encoding.
    let mut head = Zeroizing::new(vec![0u8; align]);
    let take = (3 - align) % 3;
    head.extend_from_slice(&v[..take.min(v.len())]);
    let head_enc = Zeroizing::new(engine.encode(head.as_slice()).into_bytes());
    let rest = &v[take.min(v.len())..];
    let rest_enc = Zeroizing::new(engine.encode(rest).into_bytes());
    // Character i of the shifted stream covers bits [6i, 6i+6); v covers bits
    // [8·align, 8·(align + len)).
    let first = (8 * align).div_ceil(6);
    let end = (8 * (align + v.len())) / 6;
    if end <= first {
        return Zeroizing::new(Vec::new());
    }
    // With a full first group, the two encodings concatenate to the shifted stream's; with
    // a short `v`, everything is in `head_enc`.
    let mut out = Zeroizing::new(Vec::with_capacity(end - first));
    let all = head_enc.iter().chain(rest_enc.iter());
    out.extend(all.skip(first).take(end - first));
    out
}

fn crlf(v: &[u8]) -> Pattern {
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() + v.len() / 8));
    let mut prev = 0u8;
    for &b in v {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

fn replace_byte(v: &[u8], from: u8, to: &[u8]) -> Pattern {
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() + v.len() / 8));
    for &b in v {
        if b == from {
            out.extend_from_slice(to);
        } else {
            out.push(b);
        }
    }
    out
}

/// JSON escaping of one byte below 0x80, as serde_json does it; false if it stays as is.
fn json_escape_ascii(b: u8, out: &mut Vec<u8>) -> bool {
    let short: &[u8] = match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        0..=0x1f => {
            push_u_escape(u16::from(b), out);
            return true;
        }
        _ => return false,
    };
    out.extend_from_slice(short);
    true
}

fn push_u_escape(unit: u16, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xf)]);
    }
}

/// Byte-wise JSON escaping: serde_json's output for UTF-8 values, and what a lenient
/// encoder writes for others.
pub(super) fn json_escape_bytes(v: &[u8]) -> Pattern {
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() + v.len() / 8));
    for &b in v {
        if !json_escape_ascii(b, &mut out) {
            out.push(b);
        }
    }
    out
}

/// JSON escaping with every non-ASCII character (and DEL) as `\uXXXX`, as Python writes it.
fn json_ascii_only(s: &str) -> Pattern {
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() + s.len() / 8));
    let mut units = [0u16; 2];
    for c in s.chars() {
        if c.is_ascii() && c != '\x7f' {
            let b = c as u8;
            if !json_escape_ascii(b, &mut out) {
                out.push(b);
            }
        } else {
            for &u in c.encode_utf16(&mut units).iter() {
                push_u_escape(u, &mut out);
            }
        }
    }
    out
}

/// Percent-encode every byte outside RFC 3986 unreserved and `keep`; `plus` writes space as
/// `+` (form encoding).
fn percent_encode(v: &[u8], keep: &[u8], plus: bool, lower: bool) -> Pattern {
    let hex: &[u8; 16] = if lower {
        b"0123456789abcdef"
    } else {
        b"0123456789ABCDEF"
    };
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() + v.len() / 4));
    for &b in v {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b);
        } else if plus && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 0xf)]]);
        }
    }
    out
}

/// The character starting `v` if it is valid UTF-8 and printable to glibc's `iswprint` in a
/// UTF-8 locale, with its length.
///
/// Approximation: every assigned character is printable except C0/C1 controls, DEL, the
/// line and paragraph separators and noncharacters. Characters unassigned in glibc's
/// Unicode tables are printable here but not to bash.
fn printable_char(v: &[u8]) -> Option<usize> {
    let len = match v.first()? {
        0x20..=0x7e => return Some(1),
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let s = std::str::from_utf8(v.get(..len)?).ok()?;
    let c = s.chars().next()?;
    let cp = u32::from(c);
    let nonchar = (0xfdd0..=0xfdef).contains(&cp) || cp & 0xfffe == 0xfffe;
    let printable = !c.is_control() && c != '\u{2028}' && c != '\u{2029}' && !nonchar;
    printable.then_some(len)
}

/// Whether bash 5.2 quotes a string holding `v` as `$'…'` (it has a character that is not
/// printable in the locale).
fn needs_ansi_c(v: &[u8], utf8: bool) -> bool {
    let mut i = 0;
    while i < v.len() {
        let len = if utf8 || v[i] < 0x80 {
            printable_char(&v[i..])
        } else {
            None
        };
        match len {
            Some(n) => i += n,
            None => return true,
        }
    }
    false
}

/// The contents of bash's `$'…'` quoting (`ansic_quote`): C escapes for the usual control
/// characters, `\\` and `\'`, three-digit octal for any other byte that is not printable in
/// the locale (every non-ASCII byte in the C locale).
fn ansi_c(v: &[u8], utf8: bool) -> Pattern {
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() + v.len() / 4));
    let mut i = 0;
    while i < v.len() {
        let b = v[i];
        let esc = match b {
            0x1b => Some(b'E'),
            0x07 => Some(b'a'),
            0x0b => Some(b'v'),
            0x08 => Some(b'b'),
            0x0c => Some(b'f'),
            b'\n' => Some(b'n'),
            b'\r' => Some(b'r'),
            b'\t' => Some(b't'),
            b'\\' | b'\'' => Some(b),
            _ => None,
        };
        if let Some(c) = esc {
            out.extend_from_slice(&[b'\\', c]);
            i += 1;
            continue;
        }
        let printable = if utf8 || b < 0x80 {
            printable_char(&v[i..])
        } else {
            None
        };
        match printable {
            Some(n) => {
                out.extend_from_slice(&v[i..i + n]);
                i += n;
            }
            None => {
                out.extend_from_slice(&[
                    b'\\',
                    b'0' + (b >> 6),
                    b'0' + ((b >> 3) & 7),
                    b'0' + (b & 7),
                ]);
                i += 1;
            }
        }
    }
    out
}

/// bash's `printf %q` for a string that needs no `$'…'` (`sh_backslash_quote`): a
/// backslash before each shell-special ASCII character. `word_start`: `v` starts the
/// string, so a leading `#` or `~` is escaped too. A `~` after `:` or `=` always is.
fn backslash_quote(v: &[u8], word_start: bool) -> Pattern {
    const SPECIAL: &[u8] = b" \t\n!\"$&'()*,;<>?[\\]^`{|}";
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() + v.len() / 4));
    for (i, &b) in v.iter().enumerate() {
        let escape = SPECIAL.contains(&b)
            || (i == 0 && word_start && (b == b'#' || b == b'~'))
            || (b == b'~' && i > 0 && matches!(v[i - 1], b':' | b'='));
        if escape {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// The contents of `declare -p`'s double quotes (`sh_double_quote`): `"`, `$`, `` ` `` and
/// `\` get a backslash.
fn double_quote(v: &[u8]) -> Pattern {
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() + v.len() / 4));
    for &b in v {
        if matches!(b, b'"' | b'$' | b'`' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn base64_core_is_exactly_the_determined_characters() {
        let v: &[u8] = b"abcd";
        // align 0: "YWJj" + 'Z' (first 6 bits of 'd').
        assert_eq!(base64_core(&STANDARD_NO_PAD, v, 0).as_slice(), b"YWJjZ");
        for len in 1..12 {
            let v = &b"0123456789ab"[..len];
            for align in 0..3 {
                let core = base64_core(&STANDARD_NO_PAD, v, align);
                if core.is_empty() {
                    continue;
                }
                let expect = (8 * (align + len)) / 6 - (8 * align).div_ceil(6);
                assert_eq!(core.len(), expect, "{len} {align}");
                for pre in [0u8, 0x55, 0xff] {
                    for post in [0u8, b'\n', 0xff] {
                        let mut s = vec![pre; align];
                        s.extend_from_slice(v);
                        s.push(post);
                        let enc = STANDARD.encode(&s);
                        assert!(contains(enc.as_bytes(), &core), "{align} {pre} {post}");
                    }
                }
            }
        }
    }

    #[test]
    fn json_byte_escaping_matches_serde_for_utf8() {
        let s = "a\"b\\c\n\r\t\u{8}\u{c}\u{1f}\u{7f}é/";
        let serde = serde_json::to_string(s).unwrap();
        assert_eq!(
            json_escape_bytes(s.as_bytes()).as_slice(),
            &serde.as_bytes()[1..serde.len() - 1]
        );
    }

    #[test]
    fn printable_matches_glibc_on_known_cases() {
        for (c, printable) in [
            ('a', true),
            ('é', true),
            ('\u{a0}', true),
            ('\u{ad}', true),
            ('\u{200b}', true),
            ('\u{e000}', true),
            ('\u{1f600}', true),
            ('\u{85}', false),
            ('\u{2028}', false),
            ('\u{2029}', false),
            ('\u{ffff}', false),
            ('\u{10ffff}', false),
            ('\u{7f}', false),
        ] {
            let mut buf = [0u8; 4];
            let s = c.encode_utf8(&mut buf);
            assert_eq!(
                printable_char(s.as_bytes()).is_some(),
                printable,
                "{:x}",
                u32::from(c)
            );
        }
        assert_eq!(printable_char(b"\xff"), None);
        assert_eq!(printable_char(b"\xc3"), None);
    }
}
