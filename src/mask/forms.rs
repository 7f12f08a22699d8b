//! The encoded forms of a value that a script is likely to print, and which matching
//! channel finds each one.
//!
//! A form is never built whole unless it is short: each encoder emits it as pieces (runs of
//! unchanged bytes, escapes), which the engine hashes as they come. Building a masker for a
//! large value therefore holds the value and a few kilobytes, whatever its forms' sizes.
//!
//! Raw channel (matched against the output as is):
//! - the value; with `\r\n` line ends (a PTY); each line of a multi-line value of at least
//!   [`MIN_LINE_LEN`] bytes, without a trailing `\r`;
//! - JSON string contents: as serde_json/jq write them, with `\/` (PHP), ASCII-only with
//!   `\uXXXX` (Python), both (PHP's default); byte-wise for values that are not UTF-8;
//! - percent-encoding: RFC 3986 in upper and lower case hex, form encoding (`+` for space)
//!   in both cases, encodeURIComponent, and Python's `quote()` (keeps `/`);
//! - bash 5.2's quoted forms: `$'…'` contents (printf `%q`, `declare -p`, `${v@Q}` and
//!   `set -x` when a string has a character that is not printable), in the C and a UTF-8
//!   locale; backslash-escaped (printf `%q`), at the start of a word and inside one;
//!   `declare -p`'s double-quoted contents; single-quoted contents with `'\''` (`${v@Q}`,
//!   `set -x`).
//!
//! Base64 channel (matched with line breaks removed, see `engine`): the characters fully
//! determined by the value at each of the three byte alignments (see [`base64_core`]), in
//! the standard and URL-safe alphabets, and likewise for its JSON contents in the URL-safe
//! alphabet (a JWT claim); and the complete padded and unpadded encodings of the value on
//! its own.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::engine::GeneralPurpose;
use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

use super::MIN_LINE_LEN;

/// Where a form is looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Channel {
    /// The output as written.
    Raw = 0,
    /// The output with line breaks removed: base64 wrapped at any width.
    Base64 = 1,
}

/// Receives a form's pieces, in order.
pub(super) type Emit<'a> = &'a mut dyn FnMut(&[u8]);

/// Produces one form, as pieces; may be run more than once.
pub(super) type Gen<'a> = &'a dyn Fn(Emit<'_>);

/// One form of a value.
pub(super) struct Form<'a> {
    pub(super) channel: Channel,
    pub(super) gen: Gen<'a>,
    /// The form is the last form handed over with `extends: None`, followed by these bytes
    /// (so its digest can be had without producing it again).
    pub(super) extends: Option<&'a [u8]>,
    /// Whether to also mask the form as a log masked for other values shows it (see
    /// `CapturedLog::remask`): not for the whole base64 encodings (their aligned core is)
    /// nor for base64 of the JSON contents.
    pub(super) premask: bool,
}

/// Hand every form of `v` to `out`, the raw value first. A form is skipped where it
/// provably equals the value or an earlier form (it lacks the bytes that would make it
/// differ); others may still repeat, equal the raw value or be short: the caller filters.
pub(super) fn each_form(v: &[u8], out: &mut dyn FnMut(Form<'_>)) {
    let mut present = [false; 256];
    for &b in v {
        present[usize::from(b)] = true;
    }
    let any = |f: &dyn Fn(u8) -> bool| (0..=255u8).any(|b| present[usize::from(b)] && f(b));
    let mut raw = |gen: Gen<'_>| {
        out(Form {
            channel: Channel::Raw,
            gen,
            extends: None,
            premask: true,
        })
    };
    raw(&|e| e(v));

    if present[usize::from(b'\n')] {
        // A PTY (SSH runs) turns "\n" into "\r\n".
        raw(&|e| crlf(v, e));
        // Each line alone: a key printed with a prefix, or indented by `sed 's/^/  /'`.
        for line in v.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() >= MIN_LINE_LEN {
                raw(&|e| e(line));
            }
        }
    }

    // JSON string contents, serde_json's and with `\/` or `\uXXXX` (ASCII-only) or both.
    let json_escapes = any(&|b| b < 0x20 || b == b'"' || b == b'\\');
    let slash = any(&|b| b == b'/');
    let non_ascii = std::str::from_utf8(v).is_ok() && any(&|b| b >= 0x7f);
    if json_escapes {
        raw(&|e| json(v, false, false, e));
    }
    if slash {
        raw(&|e| json(v, true, false, e));
    }
    if non_ascii {
        raw(&|e| json(v, false, true, e));
        if slash {
            raw(&|e| json(v, true, true, e));
        }
    }

    // Percent-encoding: RFC 3986 strict (curl, jq @uri) in upper and lower case hex, form
    // encoding with `+` for space, encodeURIComponent, and Python's quote() keeping `/`.
    if any(&|b| !(b.is_ascii_alphanumeric() || b"-._~".contains(&b))) {
        let space = present[usize::from(b' ')];
        for (keep, plus, lower, needed) in [
            (b"" as &[u8], false, false, true),
            (b"", false, true, true),
            (b"", true, false, space),
            (b"", true, true, space),
            (b"!'()*", false, false, any(&|b| b"!'()*".contains(&b))),
            (b"/", false, false, slash),
        ] {
            if needed {
                raw(&|e| percent(v, keep, plus, lower, e));
            }
        }
    }

    // bash. `$'…'` is used for a whole string as soon as any part of it needs it, so a
    // value printed next to a control character gets it too, whatever it holds.
    if any(&|b| !(0x20..=0x7e).contains(&b) || b == b'\\' || b == b'\'') {
        raw(&|e| ansi_c(v, false, e));
        if any(&|b| b >= 0x80) {
            raw(&|e| ansi_c(v, true, e));
        }
    }
    if !needs_ansi_c(v, true) {
        if any(&|b| SHELL_SPECIAL.contains(&b) || b == b'#' || b == b'~') {
            raw(&|e| backslash_quote(v, true, e));
            if matches!(v.first(), Some(b'#' | b'~')) {
                raw(&|e| backslash_quote(v, false, e));
            }
        }
        if any(&|b| DQ_SPECIAL.contains(&b)) {
            raw(&|e| double_quote(v, e));
        }
    }
    if present[usize::from(b'\'')] {
        raw(&|e| replace_byte(v, b'\'', b"'\\''", e));
    }

    // Base64 cores, of the value and (URL-safe, as in a JWT claim) of its JSON contents,
    // and the value encoded on its own, to the last character and padding.
    let json_len = if json_escapes {
        let mut n = 0;
        json(v, false, false, &mut |p| n += p.len());
        n
    } else {
        v.len()
    };
    let r = v.len() % 3;
    let alphabets = [
        (&STANDARD_NO_PAD, &STANDARD, false),
        (&URL_SAFE_NO_PAD, &URL_SAFE, true),
    ];
    for (unpadded, padded, url) in alphabets {
        if json_len != v.len() && url {
            for align in 0..3 {
                let gen = |i: Emit<'_>| json(v, false, false, i);
                let json_core = |e: Emit<'_>| base64_core(unpadded, &gen, json_len, align, e);
                out(Form {
                    channel: Channel::Base64,
                    gen: &json_core,
                    extends: None,
                    premask: false,
                });
            }
        }
        for align in (0..3).rev() {
            let core = |e: Emit<'_>| base64_core(unpadded, &|i| i(v), v.len(), align, e);
            out(Form {
                channel: Channel::Base64,
                gen: &core,
                extends: None,
                premask: true,
            });
        }
        // The whole encodings are the aligned core (the last one given) plus the last
        // group's remaining characters.
        for engine in [unpadded, padded] {
            let tail = Zeroizing::new(engine.encode(&v[v.len() - r..]));
            let suffix = &tail.as_bytes()[(8 * r) / 6..];
            let whole = |e: Emit<'_>| base64_whole(engine, v, e);
            out(Form {
                channel: Channel::Base64,
                gen: &whole,
                extends: Some(suffix),
                premask: false,
            });
        }
    }
}

/// The base64 characters fully determined by the input (`len` bytes, produced by `input`)
/// when it starts `align` bytes into a 3-byte group of a longer stream: the full groups
/// inside it plus the edge characters whose 6 bits all come from it. Whatever precedes or
/// follows (e.g. the newline of `echo "$v" | base64`), these characters appear verbatim
/// in the stream's encoding.
///
/// What is left out is at most one character at each end, which mixes at most 4 bits of
/// the input's first (last) byte with bits of its neighbour.
pub(super) fn base64_core(
    engine: &GeneralPurpose,
    input: Gen<'_>,
    len: usize,
    align: usize,
    e: Emit<'_>,
) {
    // Character i of the shifted stream covers bits [6i, 6i+6); the input covers bits
    // [8·align, 8·(align + len)).
    let first = (8 * align).div_ceil(6);
    let end = (8 * (align + len)) / 6;
    let mut at = 0;
    let mut out = |chars: &[u8]| {
        let (s, t) = (first.max(at), end.min(at + chars.len()));
        if s < t {
            e(&chars[s - at..t - at]);
        }
        at += chars.len();
    };
    let mut enc = Base64Stream::new(engine);
    enc.push(&[0u8; 2][..align], &mut out);
    input(&mut |piece| enc.push(piece, &mut out));
    enc.finish(&mut out);
}

/// `v` encoded on its own with `engine` (padded or not).
fn base64_whole(engine: &GeneralPurpose, v: &[u8], e: Emit<'_>) {
    let mut enc = Base64Stream::new(engine);
    enc.push(v, e);
    enc.finish(e);
}

/// Base64 over input arriving in pieces, emitting the encoding in blocks.
struct Base64Stream<'a> {
    engine: &'a GeneralPurpose,
    /// Input not yet encoded (less than one block).
    pending: Zeroizing<Vec<u8>>,
    out: Zeroizing<Vec<u8>>,
}

impl<'a> Base64Stream<'a> {
    /// Input bytes encoded at once: a multiple of 3.
    const BLOCK: usize = 3 * 1024;

    fn new(engine: &'a GeneralPurpose) -> Self {
        Base64Stream {
            engine,
            pending: Zeroizing::new(Vec::with_capacity(Self::BLOCK)),
            out: Zeroizing::new(vec![0u8; Self::BLOCK / 3 * 4]),
        }
    }

    fn push(&mut self, mut bytes: &[u8], e: Emit<'_>) {
        while !bytes.is_empty() {
            let n = (Self::BLOCK - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.pending.len() == Self::BLOCK {
                self.flush(e);
            }
        }
    }

    fn flush(&mut self, e: Emit<'_>) {
        // Full groups never pad, so any engine writes them alike.
        if let Ok(n) = self.engine.encode_slice(&self.pending, &mut self.out[..]) {
            e(&self.out[..n]);
        }
        self.pending.clear();
    }

    fn finish(mut self, e: Emit<'_>) {
        if !self.pending.is_empty() {
            self.flush(e);
        }
    }
}

fn crlf(v: &[u8], e: Emit<'_>) {
    let mut start = 0;
    for (i, &b) in v.iter().enumerate() {
        if b == b'\n' && (i == 0 || v[i - 1] != b'\r') {
            e(&v[start..i]);
            e(b"\r");
            start = i;
        }
    }
    e(&v[start..]);
}

/// `v` with each `from` byte replaced by `to`.
fn replace_byte(v: &[u8], from: u8, to: &[u8], e: Emit<'_>) {
    let mut start = 0;
    for (i, &b) in v.iter().enumerate() {
        if b == from {
            e(&v[start..i]);
            e(to);
            start = i + 1;
        }
    }
    e(&v[start..]);
}

/// An escape being written: a few bytes, wiped after use (they reveal the character).
struct Esc {
    buf: [u8; 24],
    len: usize,
}

impl Esc {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}

/// What `escaped`'s callback decided for the character at the current index.
enum Step {
    /// Keep this many bytes as they are.
    Keep(usize),
    /// This many bytes became what was put into the `Esc`.
    Escaped(usize),
}

/// Emit `v` through `escape`, called at each character not `plain`; runs of kept bytes
/// go out as one piece.
fn escaped(
    v: &[u8],
    e: Emit<'_>,
    plain: impl Fn(u8) -> bool,
    mut escape: impl FnMut(usize, &mut Esc) -> Step,
) {
    let mut table = [false; 256];
    for (b, t) in table.iter_mut().enumerate() {
        *t = plain(b as u8);
    }
    let mut esc = Esc {
        buf: [0; 24],
        len: 0,
    };
    let mut start = 0;
    let mut i = 0;
    while i < v.len() {
        if table[usize::from(v[i])] {
            i += 1;
            continue;
        }
        esc.len = 0;
        match escape(i, &mut esc) {
            Step::Keep(n) => i += n.max(1),
            Step::Escaped(n) => {
                e(&v[start..i]);
                e(&esc.buf[..esc.len]);
                i += n.max(1);
                start = i;
            }
        }
    }
    e(&v[start..]);
    esc.buf.zeroize();
}

/// Bytes of the character at `v[i]` for escaping purposes: a valid UTF-8 sequence's length,
/// else 1.
fn char_len_at(v: &[u8], i: usize) -> usize {
    let len = match v[i] {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return 1,
    };
    match v.get(i..i + len).map(std::str::from_utf8) {
        Some(Ok(_)) => len,
        _ => 1,
    }
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// JSON string contents: serde_json's escaping (short escapes, `\u00XX` for other control
/// characters, everything else as is), bytewise for values that are not UTF-8. `slash`:
/// `/` as `\/`. `ascii`: every non-ASCII character and DEL as `\uXXXX` (surrogate pairs
/// past the BMP), as Python writes it; `v` must then be UTF-8.
fn json(v: &[u8], slash: bool, ascii: bool, e: Emit<'_>) {
    let plain = |b: u8| {
        b >= 0x20 && b != b'"' && b != b'\\' && !(slash && b == b'/') && !(ascii && b >= 0x7f)
    };
    escaped(v, e, plain, |i, out| {
        let b = v[i];
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'/' if slash => b"\\/",
            0..=0x1f => {
                u_escape(u16::from(b), out);
                return Step::Escaped(1);
            }
            0x7f if ascii => {
                u_escape(0x7f, out);
                return Step::Escaped(1);
            }
            0x80.. if ascii => {
                let n = char_len_at(v, i);
                let c = std::str::from_utf8(&v[i..i + n])
                    .ok()
                    .and_then(|s| s.chars().next())
                    .unwrap_or('\u{fffd}');
                let mut units = [0u16; 2];
                for &u in c.encode_utf16(&mut units).iter() {
                    u_escape(u, out);
                }
                return Step::Escaped(n);
            }
            _ => return Step::Keep(1),
        };
        out.put(short);
        Step::Escaped(1)
    });
}

fn u_escape(unit: u16, out: &mut Esc) {
    let h = |shift: u16| HEX_LOWER[usize::from((unit >> shift) & 0xf)];
    out.put(&[b'\\', b'u', h(12), h(8), h(4), h(0)]);
}

/// Percent-encode every byte outside RFC 3986 unreserved and `keep`; `plus` writes space as
/// `+` (form encoding).
fn percent(v: &[u8], keep: &[u8], plus: bool, lower: bool, e: Emit<'_>) {
    let hex = if lower { HEX_LOWER } else { HEX_UPPER };
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b);
    escaped(v, e, plain, |i, out| {
        let b = v[i];
        if plus && b == b' ' {
            out.put(b"+");
        } else {
            out.put(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 0xf)]]);
        }
        Step::Escaped(1)
    });
}

/// The character starting `v` if it is valid UTF-8 and printable in a UTF-8 locale (as
/// glibc's `iswprint` says, which bash asks), with its length.
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
    let printable = glibc_printable(c).unwrap_or_else(|| approx_printable(c));
    printable.then_some(len)
}

/// Without glibc's tables: every character is printable except C0/C1 controls, DEL, the
/// line and paragraph separators and noncharacters (unassigned ones are not, to glibc).
fn approx_printable(c: char) -> bool {
    let cp = u32::from(c);
    let nonchar = (0xfdd0..=0xfdef).contains(&cp) || cp & 0xfffe == 0xfffe;
    !c.is_control() && c != '\u{2028}' && c != '\u{2029}' && !nonchar
}

/// glibc's `iswprint` in the C.UTF-8 locale, or `None` where that locale is unavailable.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_printable(c: char) -> Option<bool> {
    use nix::libc;
    use std::sync::OnceLock;

    extern "C" {
        // wint_t is an unsigned int on glibc.
        fn iswprint_l(wc: libc::c_uint, loc: libc::locale_t) -> libc::c_int;
    }
    // The locale object lives as long as the process; stored as an address.
    static LOCALE: OnceLock<usize> = OnceLock::new();
    let loc = *LOCALE.get_or_init(|| {
        // SAFETY: a NUL-terminated name and no base locale; the result is null on failure.
        let loc = unsafe {
            libc::newlocale(
                libc::LC_CTYPE_MASK,
                c"C.UTF-8".as_ptr(),
                std::ptr::null_mut(),
            )
        };
        loc as usize
    });
    if loc == 0 {
        return None;
    }
    // SAFETY: `loc` is a valid locale object that is never freed; iswprint_l only reads it.
    let r = unsafe { iswprint_l(u32::from(c), loc as libc::locale_t) };
    Some(r != 0)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_printable(_: char) -> Option<bool> {
    None
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
fn ansi_c(v: &[u8], utf8: bool, e: Emit<'_>) {
    let plain = |b: u8| (0x20..=0x7e).contains(&b) && b != b'\\' && b != b'\'';
    escaped(v, e, plain, |i, out| {
        let b = v[i];
        let c = match b {
            0x1b => b'E',
            0x07 => b'a',
            0x0b => b'v',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            b'\\' | b'\'' => b,
            0x20..=0x7e => return Step::Keep(1),
            _ => {
                if let Some(n) = printable_char(&v[i..]).filter(|_| utf8) {
                    return Step::Keep(n);
                }
                out.put(&[
                    b'\\',
                    b'0' + (b >> 6),
                    b'0' + ((b >> 3) & 7),
                    b'0' + (b & 7),
                ]);
                return Step::Escaped(1);
            }
        };
        out.put(&[b'\\', c]);
        Step::Escaped(1)
    });
}

/// What `printf %q` backslash-escapes anywhere in a word.
const SHELL_SPECIAL: &[u8] = b" \t\n!\"$&'()*,;<>?[\\]^`{|}";

/// What `declare -p` backslash-escapes inside double quotes.
const DQ_SPECIAL: &[u8] = b"\"$`\\";

/// bash's `printf %q` for a string that needs no `$'…'` (`sh_backslash_quote`): a
/// backslash before each shell-special ASCII character. `word_start`: `v` starts the
/// string, so a leading `#` or `~` is escaped too. A `~` after `:` or `=` always is.
fn backslash_quote(v: &[u8], word_start: bool, e: Emit<'_>) {
    let plain = |b: u8| !SHELL_SPECIAL.contains(&b) && b != b'#' && b != b'~';
    escaped(v, e, plain, |i, out| {
        let b = v[i];
        let escape = SHELL_SPECIAL.contains(&b)
            || (i == 0 && word_start && (b == b'#' || b == b'~'))
            || (b == b'~' && i > 0 && matches!(v[i - 1], b':' | b'='));
        if !escape {
            return Step::Keep(1);
        }
        out.put(&[b'\\', b]);
        Step::Escaped(1)
    });
}

/// The contents of `declare -p`'s double quotes (`sh_double_quote`): `"`, `$`, `` ` `` and
/// `\` get a backslash.
fn double_quote(v: &[u8], e: Emit<'_>) {
    escaped(
        v,
        e,
        |b| !DQ_SPECIAL.contains(&b),
        |i, out| {
            let b = v[i];
            out.put(&[b'\\', b]);
            Step::Escaped(1)
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn collect(gen: Gen<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        gen(&mut |p| out.extend_from_slice(p));
        out
    }

    fn core(engine: &GeneralPurpose, v: &[u8], align: usize) -> Vec<u8> {
        collect(&|e| base64_core(engine, &|i| i(v), v.len(), align, e))
    }

    #[test]
    fn base64_core_is_exactly_the_determined_characters() {
        // align 0: "YWJj" + 'Z' (first 6 bits of 'd').
        assert_eq!(core(&STANDARD_NO_PAD, b"abcd", 0), b"YWJjZ");
        for len in 1..12 {
            let v = &b"0123456789ab"[..len];
            for align in 0..3 {
                let core = core(&STANDARD_NO_PAD, v, align);
                let expect = (8 * (align + len)) / 6 - (8 * align).div_ceil(6).min(len * 8 / 6);
                assert_eq!(core.len(), expect.min(core.len()), "{len} {align}");
                if core.is_empty() {
                    continue;
                }
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
    fn base64_of_long_input_crosses_blocks() {
        let v: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(
            collect(&|e| base64_whole(&STANDARD, &v, e)),
            STANDARD.encode(&v).as_bytes()
        );
        for align in 0..3 {
            let mut shifted = vec![0u8; align];
            shifted.extend_from_slice(&v);
            let enc = STANDARD_NO_PAD.encode(&shifted);
            let first = (8 * align).div_ceil(6);
            let end = 8 * (align + v.len()) / 6;
            assert_eq!(
                core(&STANDARD_NO_PAD, &v, align),
                &enc.as_bytes()[first..end]
            );
        }
    }

    #[test]
    fn json_matches_serde_for_utf8() {
        let s = "a\"b\\c\n\r\t\u{8}\u{c}\u{1f}\u{7f}é/";
        let serde = serde_json::to_string(s).unwrap();
        assert_eq!(
            collect(&|e| json(s.as_bytes(), false, false, e)),
            &serde.as_bytes()[1..serde.len() - 1]
        );
        assert_eq!(
            collect(&|e| json("é😀/\u{7f}".as_bytes(), true, true, e)),
            br"\u00e9\ud83d\ude00\/\u007f"
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
            ('\u{5c7}', true),
            ('\u{5c8}', false),
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
