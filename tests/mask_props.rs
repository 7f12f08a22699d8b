//! Property tests for `csm_agent::mask`: streaming equals whole-buffer masking under any
//! chunking, capped capture keeps a prefix of it, re-masking hides a secret learned later,
//! and no value survives in any form a script prints it in.
//!
//! The forms in the last property are made here, independently of the masker: JSON by
//! serde_json (and a Python-style ASCII-only encoder), base64 by the `base64` crate after a
//! random prefix (every alignment) and wrapped at a random width, URL-encoding by a local
//! encoder, and the shell forms (`printf %q`, `declare -p`, `${v@Q}`) by real bash.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use csm_agent::mask::{LogCapture, MaskStream, Masker, MIN_LINE_LEN};
use proptest::prelude::*;

/// Split `input` into chunks whose sizes cycle through `sizes` (each >= 1).
fn chunks<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether some `w`-byte window of `needle` (all of it, if shorter) occurs in `hay`.
fn any_window(hay: &[u8], needle: &[u8], w: usize) -> bool {
    needle
        .windows(w.min(needle.len()))
        .any(|win| contains(hay, win))
}

fn unwrapped(s: &[u8]) -> Vec<u8> {
    s.iter()
        .copied()
        .filter(|&b| b != b'\n' && b != b'\r')
        .collect()
}

// ---------------------------------------------------------------------------------------
// Streaming, capture and re-masking over a small alphabet
// ---------------------------------------------------------------------------------------

/// One encoded form of `v`, as a script might print it (`form` picks which).
fn encode(v: &[u8], form: usize) -> Vec<u8> {
    match form % 7 {
        0 => v.to_vec(),
        1 => {
            let s = serde_json::to_string(&String::from_utf8_lossy(v)).unwrap();
            s.as_bytes()[1..s.len() - 1].to_vec()
        }
        2 => STANDARD.encode(v).into_bytes(),
        3 => URL_SAFE_NO_PAD.encode(v).into_bytes(),
        4 => url_encode(v, false, false),
        5 => url_encode(v, true, true),
        _ => {
            let mut out = Vec::new();
            for &b in v {
                if b == b'\n' {
                    out.push(b'\r');
                }
                out.push(b);
            }
            out
        }
    }
}

/// Text made of random filler and copies of the values in various forms, so that
/// occurrences overlap, touch and nest often (small alphabet), and the longest patterns
/// (encoded forms) do occur.
fn text_with(values: &[Vec<u8>], picks: &[(usize, usize, Vec<u8>)]) -> Vec<u8> {
    let mut text = Vec::new();
    for (pick, form, filler) in picks {
        text.extend_from_slice(filler);
        if let Some(v) = values.get(*pick) {
            text.extend_from_slice(&encode(v, *form));
        }
    }
    text
}

fn small_alphabet() -> impl Strategy<Value = u8> {
    prop::sample::select(b"ab\nc=/".to_vec())
}

fn values_strategy(min_len: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop_oneof![
            prop::collection::vec(small_alphabet(), min_len..9),
            prop::collection::vec(small_alphabet(), 33..60),
        ],
        0..5,
    )
}

fn picks_strategy() -> impl Strategy<Value = Vec<(usize, usize, Vec<u8>)>> {
    prop::collection::vec(
        (
            0usize..7,
            0usize..10,
            prop::collection::vec(small_alphabet(), 0..6),
        ),
        0..20,
    )
}

fn sizes_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..12, 1..8)
}

// ---------------------------------------------------------------------------------------
// Every form, made independently
// ---------------------------------------------------------------------------------------

/// Percent-encoding with RFC 3986's unreserved set kept; `plus`: space as `+`.
fn url_encode(v: &[u8], lower: bool, plus: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in v {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else if plus && b == b' ' {
            out.push(b'+');
        } else if lower {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// JSON string contents as Python's json.dumps writes them (ASCII only).
fn json_ascii(s: &str) -> Vec<u8> {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) >= 0x7f => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// What bash 5.2 prints for each value: `printf %q`, `declare -p` and `${v@Q}`, with the
/// quoting around the value's own part removed. The values go through stdin.
fn bash_forms(values: &[Vec<u8>], utf8: bool) -> Vec<[Vec<u8>; 3]> {
    // Read in the C locale (a UTF-8 `read` swallows the NUL after an incomplete
    // character), print in the locale under test.
    let script = r#"while :; do
        LC_ALL=C; IFS= read -r -d '' v || break; LC_ALL=$L
        printf '%q\0' "$v"; printf '%s\0' "$(declare -p v)"; printf '%s\0' "${v@Q}"
    done"#;
    let mut child = Command::new("/bin/bash")
        .args(["--noprofile", "--norc", "-c", script])
        .env_clear()
        .env("L", if utf8 { "C.UTF-8" } else { "C" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("bash");
    let mut input = Vec::new();
    for v in values {
        input.extend_from_slice(v);
        input.push(0);
    }
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let parts: Vec<&[u8]> = out.stdout.split(|&b| b == 0).collect();
    assert_eq!(parts.len(), 3 * values.len() + 1, "bash printed every form");
    let inner = |s: &[u8]| -> Vec<u8> {
        if let Some(r) = s.strip_prefix(b"$'") {
            r[..r.len() - 1].to_vec()
        } else if let Some(r) = s.strip_prefix(b"'") {
            r[..r.len() - 1].to_vec()
        } else {
            s.to_vec()
        }
    };
    parts
        .chunks(3)
        .filter(|c| c.len() == 3)
        .map(|c| {
            let declared = c[1].strip_prefix(b"declare -- v=").unwrap();
            let declared = match declared.strip_prefix(b"\"") {
                Some(r) => r[..r.len() - 1].to_vec(),
                None => inner(declared),
            };
            [inner(c[0]), declared, inner(c[2])]
        })
        .collect()
}

/// A value: random bytes (no NUL, which bash cannot hold, and no `*`, the marker's byte),
/// a UTF-8 string, or a multi-line value with long lines.
fn any_value() -> impl Strategy<Value = Vec<u8>> {
    let byte = any::<u8>().prop_filter("no NUL or marker byte", |b| *b != 0 && *b != b'*');
    let ch = prop::sample::select(vec![
        'a', 'Z', '7', ' ', '"', '\'', '\\', '/', '$', '`', '#', '~', '%', '+', '=', '&', '\n',
        '\t', '\u{1}', '\u{7f}', 'é', 'ß', '€', '😀', '\u{a0}', '\u{2028}',
    ]);
    prop_oneof![
        prop::collection::vec(byte.clone(), 4..24),
        prop::collection::vec(byte, 33..80),
        prop::collection::vec(ch, 4..40)
            .prop_map(|c| c.into_iter().collect::<String>().into_bytes()),
        prop::collection::vec("[A-Za-z0-9+/]{8,20}", 2..5).prop_map(|lines| {
            format!(
                "-----BEGIN KEY-----\n{}\n-----END KEY-----\n",
                lines.join("\n")
            )
            .into_bytes()
        }),
    ]
}

/// How one value is printed: which form, base64 prefix/engine/wrapping, line prefix.
#[derive(Debug, Clone)]
struct Print {
    value: usize,
    form: usize,
    prefix: Vec<u8>,
    engine: usize,
    width: usize,
    crlf: bool,
    filler: Vec<u8>,
}

fn print_strategy() -> impl Strategy<Value = Print> {
    let byte = any::<u8>().prop_filter("no marker byte", |b| *b != b'*');
    (
        0usize..8,
        0usize..12,
        prop::collection::vec(byte.clone(), 0..6),
        0usize..4,
        prop_oneof![Just(0usize), 1usize..100, Just(64), Just(76)],
        any::<bool>(),
        prop::collection::vec(byte, 0..12),
    )
        .prop_map(|(value, form, prefix, engine, width, crlf, filler)| Print {
            value,
            form,
            prefix,
            engine,
            width,
            crlf,
            filler,
        })
}

/// Append one printing of `v` to `text`, and what must not survive of it to `needles`
/// (raw-channel needles) or `b64_needles` (checked with line breaks removed).
fn print(
    v: &[u8],
    shell: &[Vec<u8>; 3],
    p: &Print,
    text: &mut Vec<u8>,
    needles: &mut Vec<Vec<u8>>,
    b64_needles: &mut Vec<Vec<u8>>,
) {
    text.extend_from_slice(&p.filler);
    let utf8 = std::str::from_utf8(v).ok();
    let mut raw = |form: Vec<u8>, text: &mut Vec<u8>| {
        text.extend_from_slice(&form);
        needles.push(form);
    };
    match p.form {
        0 => raw(v.to_vec(), text),
        1 => match utf8 {
            Some(s) => {
                let j = serde_json::to_string(s).unwrap();
                raw(j.as_bytes()[1..j.len() - 1].to_vec(), text);
            }
            None => raw(v.to_vec(), text),
        },
        2 => match utf8 {
            Some(s) => raw(json_ascii(s), text),
            None => raw(v.to_vec(), text),
        },
        3 => raw(url_encode(v, p.crlf, false), text),
        4 => raw(url_encode(v, p.crlf, true), text),
        5..=7 => raw(shell[p.form - 5].clone(), text),
        8 => {
            // Each long line, indented or after a prefix (`sed 's/^/  /'`).
            for line in v.split(|&b| b == b'\n') {
                if line.len() >= MIN_LINE_LEN {
                    text.extend_from_slice(if p.crlf { b"  " } else { b"key: " });
                    raw(line.to_vec(), text);
                    text.extend_from_slice(if p.crlf { b"\r\n" } else { b"\n" });
                }
            }
        }
        _ => {
            // base64 of prefix + value (+ a newline, as echo adds), any engine, wrapped.
            let engine = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD][p.engine];
            let mut plain = p.prefix.clone();
            plain.extend_from_slice(v);
            plain.push(b'\n');
            let enc = engine.encode(&plain);
            let align = p.prefix.len() % 3;
            let mut shifted = vec![0u8; align];
            shifted.extend_from_slice(v);
            let first = (8 * align).div_ceil(6);
            let end = 8 * (align + v.len()) / 6;
            b64_needles.push(engine.encode(&shifted).as_bytes()[first..end].to_vec());
            let eol: &[u8] = if p.crlf { b"\r\n" } else { b"\n" };
            for (i, line) in enc.as_bytes().chunks(p.width.max(1)).enumerate() {
                if i > 0 && p.width > 0 {
                    text.extend_from_slice(eol);
                }
                text.extend_from_slice(line);
            }
            text.extend_from_slice(eol);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn stream_equals_whole_under_any_chunking(
        values in values_strategy(1),
        picks in picks_strategy(),
        sizes in sizes_strategy(),
    ) {
        let m = Arc::new(Masker::new(values.iter().map(|v| v.as_slice())));
        let text = text_with(&values, &picks);
        let whole = m.mask(&text);

        let mut streamed = Vec::new();
        let mut s = MaskStream::new(m.clone());
        for ch in chunks(&text, &sizes) {
            s.push(ch, &mut streamed);
            prop_assert!(s.held_len() < m.max_pattern_len().max(1));
        }
        s.finish(&mut streamed);
        prop_assert_eq!(&streamed, &whole);

        let mut c = LogCapture::new(m.clone(), usize::MAX);
        for ch in chunks(&text, &sizes) {
            c.push(ch);
        }
        let log = c.finish();
        prop_assert!(!log.is_cut());
        prop_assert_eq!(log.as_bytes(), whole.as_slice());
    }

    #[test]
    fn capped_capture_keeps_a_prefix_of_the_whole(
        values in values_strategy(4),
        picks in picks_strategy(),
        sizes in sizes_strategy(),
        cap in 0usize..80,
    ) {
        let m = Arc::new(Masker::new(values.iter().map(|v| v.as_slice())));
        let text = text_with(&values, &picks);
        let whole = m.mask(&text);

        let mut c = LogCapture::new(m.clone(), cap);
        for ch in chunks(&text, &sizes) {
            c.push(ch);
        }
        prop_assert_eq!(c.total_bytes(), text.len() as u64);
        let log = c.finish();
        let bytes = log.as_bytes();
        if whole.len() <= cap {
            prop_assert!(!log.is_cut());
            prop_assert_eq!(bytes, whole.as_slice());
        } else {
            prop_assert!(log.is_cut());
            let marker = format!("\n[… {} bytes cut]\n", log.cut_bytes());
            prop_assert!(bytes.ends_with(marker.as_bytes()));
            let kept = &bytes[..bytes.len() - marker.len()];
            prop_assert!(kept.len() <= cap);
            prop_assert!(whole.starts_with(kept));
            prop_assert!(log.cut_bytes() <= text.len() as u64);
        }
    }

    #[test]
    fn remask_hides_a_secret_learned_later(
        vars in prop::collection::vec(prop::collection::vec(small_alphabet(), 4..9), 0..3),
        secret in prop_oneof![
            prop::collection::vec(small_alphabet(), 4..12),
            prop::collection::vec(small_alphabet(), 33..50),
        ],
        picks in picks_strategy(),
        sizes in sizes_strategy(),
    ) {
        let m = Arc::new(Masker::new(vars.iter().map(|v| v.as_slice())));
        let mut all = vars.clone();
        all.push(secret.clone());
        let text = text_with(&all, &picks);
        let mut c = LogCapture::new(m.clone(), usize::MAX);
        for ch in chunks(&text, &sizes) {
            c.push(ch);
        }
        let mut log = c.finish();
        log.remask(&m.extended([secret.as_slice()]));
        prop_assert!(!contains(log.as_bytes(), &secret), "secret survived");
        for v in &vars {
            prop_assert!(!contains(log.as_bytes(), v), "variable survived");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every form of every value, printed among random bytes and cut into random chunks,
    /// leaves nothing of itself: no window of 8 bytes of a form (all of it if shorter) is
    /// left, base64 compared without line breaks.
    #[test]
    fn no_value_survives_in_any_form(
        values in prop::collection::vec(any_value(), 1..4),
        prints in prop::collection::vec(print_strategy(), 1..14),
        sizes in sizes_strategy(),
        utf8_locale in any::<bool>(),
    ) {
        let shell = bash_forms(&values, utf8_locale);
        let m = Arc::new(Masker::new(values.iter().map(|v| v.as_slice())));
        let (mut text, mut needles, mut b64_needles) = (Vec::new(), Vec::new(), Vec::new());
        for p in &prints {
            let i = p.value % values.len();
            print(&values[i], &shell[i], p, &mut text, &mut needles, &mut b64_needles);
        }
        text.extend_from_slice(b"<end>");
        // Positive control: every needle is in the text as printed.
        for n in &needles {
            prop_assert!(contains(&text, n));
        }
        for n in &b64_needles {
            prop_assert!(contains(&unwrapped(&text), n));
        }

        let mut c = LogCapture::new(m.clone(), usize::MAX);
        for ch in chunks(&text, &sizes) {
            c.push(ch);
        }
        let log = c.finish();
        let out = log.as_bytes();
        for v in &values {
            prop_assert!(!any_window(out, v, 8), "value survived");
        }
        for n in &needles {
            prop_assert!(!any_window(out, n, 8), "a form survived: {:?}", String::from_utf8_lossy(n));
        }
        let flat = unwrapped(out);
        for n in &b64_needles {
            prop_assert!(!any_window(&flat, n, 8), "base64 survived: {:?}", String::from_utf8_lossy(n));
        }
    }
}
