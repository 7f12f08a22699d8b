//! Unit tests for masking: the engine against a naive reference on every form, the
//! forms themselves, streaming, capture and re-masking.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;

use super::engine::STEP;
use super::*;

fn masker(values: &[&[u8]]) -> Masker {
    Masker::new(values.iter().copied())
}

fn masked(values: &[&[u8]], input: &[u8]) -> Vec<u8> {
    masker(values).mask(input)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every form of `v` the engine keeps: the raw value, then every other form at least
/// MIN_MASK_LEN long (and, in the raw channel, different from the value).
fn all_forms(v: &[u8]) -> Vec<(forms::Channel, Vec<u8>)> {
    let mut out: Vec<(forms::Channel, Vec<u8>)> = Vec::new();
    forms::each_form(v, &mut |form| {
        let mut f = Vec::new();
        (form.gen)(&mut |p| f.extend_from_slice(p));
        let ch = form.channel;
        let keep =
            out.is_empty() || (f.len() >= MIN_MASK_LEN && (ch != forms::Channel::Raw || f != v));
        if keep {
            out.push((ch, f));
        }
    });
    out
}

fn capture(m: Masker, cap: usize, chunks: &[&[u8]]) -> CapturedLog {
    let mut c = LogCapture::new(Arc::new(m), cap);
    for ch in chunks {
        c.push(ch);
    }
    c.finish()
}

#[test]
fn raw_value_becomes_one_marker() {
    assert_eq!(masked(&[b"hunter2"], b"pw=hunter2;"), b"pw=***;");
    assert_eq!(masked(&[b"hunter2"], b"hunter2"), b"***");
    assert_eq!(
        masked(&[b"a-long-secret-value"], b"x a-long-secret-value y"),
        b"x *** y"
    );
    assert_eq!(masked(&[b"hunter2"], b"nothing here"), b"nothing here");
}

#[test]
fn overlapping_and_adjacent_matches_merge() {
    // Overlapping occurrences of different values: the union is covered.
    assert_eq!(masked(&[b"abcd", b"cdef"], b"xabcdefx"), b"x***x");
    // Adjacent occurrences: one marker.
    assert_eq!(masked(&[b"abcd"], b"abcdabcd!"), b"***!");
    // Longest wins over a prefix.
    assert_eq!(masked(&[b"abcd", b"abcdef"], b"abcdefg"), b"***g");
    // A later, longer match swallowing earlier separate ones.
    assert_eq!(
        masked(&[b"bcde", b"ghij", b"abcdefghijk"], b"abcdefghijk"),
        b"***"
    );
    assert_eq!(masked(&[b"bcde", b"ghij"], b"abcdefghijk"), b"a***f***k");
}

#[test]
fn empty_values_are_ignored() {
    let m = masker(&[b"", b""]);
    assert!(m.is_empty());
    assert!(!m.withholds());
    assert_eq!(m.mask(b"anything"), b"anything");
    let log = capture(m, 100, &[b"any", b"thing"]);
    assert_eq!(log.as_bytes(), b"anything");
}

#[test]
fn json_escaped_form() {
    let v = "multi\nline \"quoted\" back\\slash\ttab\u{1}";
    let doc = serde_json::json!({ "v": v }).to_string();
    assert!(
        !contains(doc.as_bytes(), v.as_bytes()),
        "test needs escaping"
    );
    let out = masked(&[v.as_bytes()], doc.as_bytes());
    assert_eq!(out, br#"{"v":"***"}"#);
}

#[test]
fn json_slash_and_ascii_only_forms() {
    let v = "pa/ss\"wörd-😀";
    let m = masker(&[v.as_bytes()]);
    let php = r#""pa\/ss\"wörd-😀""#;
    assert_eq!(m.mask_str(php), r#""***""#);
    // Python's json.dumps: non-ASCII as \uXXXX, astral chars as surrogate pairs.
    let py = r#""pa/ss\"w\u00f6rd-\ud83d\ude00""#;
    assert_eq!(m.mask_str(py), r#""***""#);
}

#[test]
fn json_form_of_non_utf8_value() {
    let v: &[u8] = b"\xff\xfe\"bin\nary";
    assert_eq!(masked(&[v], b"[\"\xff\xfe\\\"bin\\nary\"]"), b"[\"***\"]");
}

#[test]
fn base64_every_alignment_and_alphabet() {
    // '?' and '>' make the standard and URL-safe encodings differ.
    let v: &[u8] = b"s3cr3t??>>value";
    let m = masker(&[v]);
    for prefix_len in 0..6 {
        for suffix_len in 0..4 {
            let mut plain = b"abcdefgh"[..prefix_len].to_vec();
            plain.extend_from_slice(v);
            plain.extend_from_slice(&b"\n\nxyz"[..suffix_len]);
            for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                let enc = engine.encode(&plain);
                let out = m.mask(enc.as_bytes());
                assert!(contains(&out, b"***"), "{prefix_len}/{suffix_len}: {enc}");
                // What survives is at most the bytes around the value: <= 2 chars of
                // partial groups per side plus the encoding of prefix and suffix.
                let survived = out.len() - 3;
                let around = (prefix_len + suffix_len) * 4 / 3 + 6;
                assert!(
                    survived <= around,
                    "{prefix_len}/{suffix_len}: {enc} -> {out:?}"
                );
            }
        }
    }
}

#[test]
fn base64_of_echo_output_is_masked() {
    // `echo "$v" | base64`: the value followed by a newline.
    let v: &[u8] = b"hunter2-token";
    let mut echoed = v.to_vec();
    echoed.push(b'\n');
    let enc = STANDARD.encode(&echoed);
    let out = masked(&[v], format!("{enc}\n").as_bytes());
    assert!(out.starts_with(b"***"), "{out:?}");
    assert!(out.len() <= 3 + 4, "{:?}", String::from_utf8_lossy(&out));
    // And the plain whole-value forms, padded and not.
    assert_eq!(masked(&[v], STANDARD.encode(v).as_bytes()), b"***");
    assert_eq!(masked(&[v], STANDARD_NO_PAD.encode(v).as_bytes()), b"***");
}

#[test]
fn wrapped_base64_of_a_long_value_is_masked() {
    let v = b"-----BEGIN KEY-----0123456789abcdefghijklmnopqrstuvwxyz/+ABCDEFGHIJKLMNOPQRSTUVWXYZ-----END KEY-----";
    let m = masker(&[v]);
    let mut echoed = v.to_vec();
    echoed.push(b'\n');
    for (width, eol) in [(76, "\n"), (64, "\n"), (76, "\r\n")] {
        let enc = STANDARD.encode(&echoed);
        let lines: Vec<&str> = enc
            .as_bytes()
            .chunks(width)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        let wrapped = lines.join(eol);
        let out = m.mask(format!("{wrapped}{eol}").as_bytes());
        assert!(out.starts_with(b"***"), "{width}: {out:?}");
        assert!(
            out.len() <= 3 + 4 + 2 * eol.len(),
            "{width}: {}",
            String::from_utf8_lossy(&out)
        );
    }
}

#[test]
fn url_encoded_forms() {
    let v = "p@ss w/rd+é!";
    let m = masker(&[v.as_bytes()]);
    for enc in [
        "p%40ss%20w%2Frd%2B%C3%A9%21", // RFC 3986, upper hex
        "p%40ss%20w%2frd%2b%c3%a9%21", // lower hex
        "p%40ss+w%2Frd%2B%C3%A9%21",   // form encoding
        "p%40ss+w%2frd%2b%c3%a9%21",   // form encoding, lower hex
        "p%40ss%20w%2Frd%2B%C3%A9!",   // encodeURIComponent
        "p%40ss%20w/rd%2B%C3%A9%21",   // Python quote()
    ] {
        assert_eq!(m.mask_str(&format!("?q={enc}&x=1")), "?q=***&x=1", "{enc}");
    }
}

#[test]
fn pty_and_xtrace_forms() {
    let m = masker(&[b"line one\nline two", b"it's-secret"]);
    assert_eq!(m.mask(b"> line one\r\nline two\r\n"), b"> ***\r\n");
    assert_eq!(m.mask(b"+ echo 'it'\\''s-secret'"), b"+ echo '***'");
}

#[test]
fn short_forms_are_not_added() {
    // Raw is always a form; every other form is at least MIN_MASK_LEN long.
    assert!(all_forms(b"abcd")
        .iter()
        .all(|(_, f)| f.len() >= MIN_MASK_LEN));
    // Unreserved-only value: no URL form distinct from raw.
    assert!(all_forms(b"plain_value")
        .iter()
        .all(|(_, f)| !f.contains(&b'%')));
}

#[test]
fn short_value_withholds_everything() {
    let m = Arc::new(masker(&[b"long enough", b"abc"]));
    assert!(m.withholds());
    let out = m.mask(b"abc and long enough");
    assert_eq!(out, WITHHELD_NOTICE.as_bytes());
    assert!(WITHHELD_NOTICE.contains(&MIN_MASK_LEN.to_string()));
    assert_eq!(m.mask_str("abc"), WITHHELD_NOTICE);

    let mut c = LogCapture::new(m.clone(), 1 << 20);
    c.push(b"abc ");
    c.push(b"xyz");
    assert_eq!(c.total_bytes(), 7);
    let log = c.finish();
    assert!(log.withheld());
    assert_eq!(log.as_bytes(), WITHHELD_NOTICE.as_bytes());

    let mut out = Vec::new();
    let mut s = MaskStream::new(m);
    s.push(b"abc", &mut out);
    assert!(out.is_empty());
    s.finish(&mut out);
    assert_eq!(out, WITHHELD_NOTICE.as_bytes());
}

#[test]
fn stream_masks_values_split_byte_by_byte() {
    let m = Arc::new(masker(&[b"hunter2", b"another-secret"]));
    let input = b"a hunter2 b another-secret c hunter2another-secret";
    let mut out = Vec::new();
    let mut s = MaskStream::new(m.clone());
    for b in input.iter() {
        s.push(std::slice::from_ref(b), &mut out);
        assert!(s.held_len() < m.max_pattern_len());
    }
    s.finish(&mut out);
    assert_eq!(out, m.mask(input));
    assert_eq!(out, b"a *** b *** c ***");
}

#[test]
fn stream_holds_back_little_over_a_long_input() {
    let m = Arc::new(masker(&[b"needle-in-haystack"]));
    let mut s = MaskStream::new(m.clone());
    let mut block = vec![b'.'; 65_537];
    block[30_000..30_018].copy_from_slice(b"needle-in-haystack");
    let mut total = 0;
    for _ in 0..32 {
        let mut out = Vec::new();
        s.push(&block, &mut out);
        total += out.len();
        assert!(s.held_len() < m.max_pattern_len());
        let state = s.state().unwrap();
        assert!(state.held_capacity() <= 2 * m.max_pattern_len().max(64));
        assert!(state.pending_spans() <= STEP);
    }
    let mut out = Vec::new();
    s.finish(&mut out);
    total += out.len();
    assert_eq!(total, 32 * (65_537 - 18 + 3));
}

#[test]
fn cap_keeps_prefix_and_counts_dropped() {
    let m = masker(&[b"hunter2"]);
    let log = capture(m, 10, &[b"0123456789", b"abcdefghij"]);
    assert!(log.is_cut());
    assert_eq!(log.cut_bytes(), 10);
    assert_eq!(log.as_bytes(), "0123456789\n[… 10 bytes cut]\n".as_bytes());
}

#[test]
fn cap_never_splits_a_marker() {
    let m = masker(&[b"hunter2"]);
    let log = capture(m, 10, &[b"01234567hu", b"nter2 and more"]);
    assert_eq!(
        log.as_bytes(),
        "01234567\n[… 16 bytes cut]\n".as_bytes(),
        "{:?}",
        String::from_utf8_lossy(log.as_bytes())
    );
}

#[test]
fn cut_log_never_ends_with_the_start_of_a_value() {
    // "hun" is final (not followed by "ter2") but looks like the start of the value.
    let m = masker(&[b"hunter2"]);
    let log = capture(m, 7, &[b"0123hun", b"gry and long"]);
    assert_eq!(log.as_bytes(), "0123\n[… 15 bytes cut]\n".as_bytes());
}

#[test]
fn no_cut_when_output_fits_exactly() {
    let m = masker(&[b"hunter2"]);
    let log = capture(m, 5, &[b"x", b"hunter2", b"y"]);
    assert!(!log.is_cut());
    assert_eq!(log.as_bytes(), b"x***y");
}

#[test]
fn memory_stays_bounded_over_200_mib() {
    let cap = 64 * 1024;
    let m = Arc::new(masker(&[
        b"a-value-that-is-fairly-long-0123456789",
        b"hunter2",
    ]));
    let bound = cap + m.max_pattern_len();
    let mut c = LogCapture::new(m, cap);
    let mut chunk = vec![b'x'; 64 * 1024];
    chunk[100..107].copy_from_slice(b"hunter2");
    let pushes = 200 * 16;
    for i in 0..pushes {
        c.push(&chunk);
        assert!(
            c.buffered_bytes() <= bound,
            "push {i}: {}",
            c.buffered_bytes()
        );
        assert!(c.out.len() <= cap);
    }
    assert!(c.is_cut());
    assert_eq!(c.total_bytes(), 200 << 20);
    let log = c.finish();
    assert!(log.as_bytes().len() <= cap + 40);
    let kept = log.as_bytes().len() - format!("\n[… {} bytes cut]\n", log.cut_bytes()).len();
    // Every kept input byte is either raw ('x') or inside a masked run.
    let kept_input = kept as u64
        + 4 * log.as_bytes()[..kept]
            .windows(3)
            .filter(|w| w == b"***")
            .count() as u64;
    assert_eq!(kept_input + log.cut_bytes(), 200 << 20);
}

#[test]
fn remask_masks_the_secret_learned_later() {
    let vars = Arc::new(masker(&[b"user-name"]));
    let log_text: &[u8] = b"login user-name\ngot s3cr3t-value\n";
    let mut log = capture(masker(&[b"user-name"]), 1 << 20, &[log_text]);
    assert_eq!(log.as_bytes(), b"login ***\ngot s3cr3t-value\n");
    log.remask(&vars.extended([b"s3cr3t-value".as_slice()]));
    assert_eq!(log.as_bytes(), b"login ***\ngot ***\n");
    assert!(!log.is_cut());
}

#[test]
fn remask_finds_a_secret_containing_a_variable() {
    let vars = Arc::new(masker(&[b"alice"]));
    let mut c = LogCapture::new(vars.clone(), 1 << 20);
    c.push(b"token alice:pa55word!\n");
    let mut log = c.finish();
    assert_eq!(log.as_bytes(), b"token ***:pa55word!\n");
    log.remask(&vars.extended([b"alice:pa55word".as_slice()]));
    assert_eq!(log.as_bytes(), b"token ***!\n");
}

#[test]
fn remask_of_a_cut_log_drops_a_trailing_partial_secret() {
    let vars = Arc::new(masker(&[b"user-name"]));
    let mut c = LogCapture::new(vars.clone(), 12);
    c.push(b"secret: s3cr3t-value and more");
    let mut log = c.finish();
    assert!(log.is_cut());
    assert_eq!(
        log.as_bytes(),
        "secret: s3cr\n[… 17 bytes cut]\n".as_bytes()
    );
    log.remask(&vars.extended([b"s3cr3t-value".as_slice()]));
    assert_eq!(log.as_bytes(), "secret: \n[… 21 bytes cut]\n".as_bytes());
    assert_eq!(log.cut_bytes(), 21);
}

#[test]
fn remask_with_a_short_secret_withholds() {
    let vars = Arc::new(masker(&[b"user-name"]));
    let mut log = capture(masker(&[b"user-name"]), 100, &[b"out: ab"]);
    log.remask(&vars.extended([b"ab".as_slice()]));
    assert!(log.withheld());
    assert_eq!(log.as_bytes(), WITHHELD_NOTICE.as_bytes());
    // And stays withheld.
    log.remask(&vars);
    assert_eq!(log.as_bytes(), WITHHELD_NOTICE.as_bytes());
}

#[test]
fn remask_of_default_log_is_harmless() {
    let mut log = CapturedLog::default();
    log.remask(&masker(&[b"secret"]));
    assert_eq!(log.as_bytes(), b"");
    assert!(!log.is_cut() && !log.withheld());
}

#[test]
fn tail_avoids_partial_markers_and_characters() {
    let log = capture(masker(&[b"hunter2"]), 100, &["é-hunter2-end".as_bytes()]);
    assert_eq!(log.as_bytes(), "é-***-end".as_bytes());
    assert_eq!(log.tail(5), "-end");
    assert_eq!(log.tail(6), "-end");
    assert_eq!(log.tail(7), "***-end");
    assert_eq!(log.tail(100), "é-***-end");
    assert_eq!(log.tail(10), "é-***-end");
    assert_eq!(log.tail(9), "-***-end");
    assert_eq!(log.tail(0), "");
}

#[test]
fn debug_never_shows_values() {
    let secret: &[u8] = b"hunter2-very-secret";
    let m = Arc::new(masker(&[secret]));
    let dbg = format!("{m:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(!dbg.contains("aHVudGVy"), "{dbg}");

    let mut c = LogCapture::new(m.clone(), 1 << 20);
    c.push(b"unknown-secret-in-flight hunter2-very-sec");
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("hunter2") && !dbg.contains("unknown"),
        "{dbg}"
    );
    let log = c.finish();
    let dbg = format!("{log:?}");
    assert!(!dbg.contains("unknown"), "{dbg}");
    let mut s = MaskStream::new(m);
    s.push(b"hunter2-very-sec", &mut Vec::new());
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
}

#[test]
fn masker_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Masker>();
    check::<Arc<Masker>>();
    check::<LogCapture>();
    check::<CapturedLog>();
}

#[test]
fn extended_keeps_old_values() {
    let m = masker(&[b"first-value"]).extended([b"second-value".as_slice(), b""]);
    assert_eq!(m.mask(b"first-value second-value"), b"*** ***");
    assert!(!m.withholds());
    assert!(masker(&[b"abc"]).extended([]).withholds());
}

#[test]
fn mask_str_is_lossy_only_where_needed() {
    let m = masker(&["wörd".as_bytes(), b"\xc3\xa9t\xc3"]);
    assert_eq!(m.mask_str("a wörd b"), "a *** b");
}

#[test]
fn a_megabyte_with_hundreds_of_values_is_fast_enough() {
    let values: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("value-{i:04}-secret/+").into_bytes())
        .collect();
    let m = Masker::new(values.iter().map(|v| v.as_slice()));
    let mut input = Vec::new();
    while input.len() < 1 << 20 {
        input.extend_from_slice(b"some ordinary log line with value-0042-secret/+ inside\n");
    }
    let start = std::time::Instant::now();
    let out = m.mask(&input);
    let mut streamed = Vec::new();
    let mut s = MaskStream::new(Arc::new(m));
    for ch in input.chunks(4096) {
        s.push(ch, &mut streamed);
    }
    s.finish(&mut streamed);
    assert_eq!(out, streamed);
    assert!(!contains(&out, b"value-0042"));
    // Generous: debug builds on a busy 2-core machine.
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

// ---------------------------------------------------------------------------------------
// The engine against a naive reference
// ---------------------------------------------------------------------------------------

/// Naive masking with every form materialised: each occurrence of a raw-channel form in
/// `text`, and of a base64-channel form in `text` read as the base64 channel reads it, is
/// masked; spans that overlap or touch merge. Quadratic, obviously right.
fn reference(values: &[Vec<u8>], text: &[u8]) -> Vec<u8> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    // The base64 channel: the first 3 bytes of a run of line breaks vanish, later ones
    // read as `\n`.
    let (mut chan, mut at) = (Vec::new(), Vec::new());
    let mut run = 0;
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' || b == b'\r' {
            run += 1;
            if run <= 3 {
                continue;
            }
            chan.push(b'\n');
        } else {
            run = 0;
            chan.push(b);
        }
        at.push(i);
    }
    for v in values.iter().filter(|v| !v.is_empty()) {
        for (ch, f) in all_forms(v) {
            let hay = if ch == forms::Channel::Raw {
                text
            } else {
                &chan[..]
            };
            if f.len() > hay.len() {
                continue;
            }
            for i in 0..=hay.len() - f.len() {
                if hay[i..].starts_with(&f) {
                    spans.push(match ch {
                        forms::Channel::Raw => (i, i + f.len()),
                        forms::Channel::Base64 => (at[i], at[i + f.len() - 1] + 1),
                    });
                }
            }
        }
    }
    spans.sort_unstable();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    while k < spans.len() {
        let (s, mut e) = spans[k];
        k += 1;
        while k < spans.len() && spans[k].0 <= e {
            e = e.max(spans[k].1);
            k += 1;
        }
        out.extend_from_slice(&text[pos..s.max(pos)]);
        out.extend_from_slice(MASK_MARKER.as_bytes());
        pos = e;
    }
    out.extend_from_slice(&text[pos.min(text.len())..]);
    out
}

fn stream_chunked(m: &Arc<Masker>, text: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = MaskStream::new(m.clone());
    let mut rest = text;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        s.push(&rest[..n], &mut out);
        assert!(s.held_len() < m.max_pattern_len().max(1));
        rest = &rest[n..];
        i += 1;
    }
    s.finish(&mut out);
    out
}

/// Insert line breaks into `form` at the given columns (wrapping), `\n` or `\r\n` or a
/// longer run.
fn wrap(form: &[u8], width: usize, eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, line) in form.chunks(width.max(1)).enumerate() {
        if i > 0 {
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(line);
    }
    out
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Values over a small alphabet, some longer than the anchor, some periodic, so that
    /// occurrences overlap, nest and repeat and long forms go through candidates and runs.
    fn value() -> impl Strategy<Value = Vec<u8>> {
        let alpha = prop::sample::select(b"ab\nc=/ \"".to_vec());
        prop_oneof![
            prop::collection::vec(alpha.clone(), 4..12),
            prop::collection::vec(alpha.clone(), 30..70),
            (prop::collection::vec(alpha, 1..5), 40usize..90)
                .prop_map(|(unit, n)| { unit.iter().copied().cycle().take(n).collect() }),
        ]
    }

    /// Text: filler and forms of the values, base64 forms wrapped at random widths.
    fn text(values: &[Vec<u8>], picks: &[(usize, usize, usize, usize, Vec<u8>)]) -> Vec<u8> {
        let mut t = Vec::new();
        for (pick, form, width, eol, filler) in picks {
            t.extend_from_slice(filler);
            let Some(v) = values.get(*pick % (values.len() + 1)) else {
                continue;
            };
            let forms = all_forms(v);
            let (ch, f) = &forms[*form % forms.len()];
            match ch {
                forms::Channel::Raw => t.extend_from_slice(f),
                forms::Channel::Base64 => {
                    let eol: &[u8] = [&b"\n"[..], b"\r\n", b"\n\n\n\n", b"\r\r\n"][*eol % 4];
                    t.extend_from_slice(&wrap(f, *width, eol));
                }
            }
        }
        t
    }

    fn picks() -> impl Strategy<Value = Vec<(usize, usize, usize, usize, Vec<u8>)>> {
        prop::collection::vec(
            (
                0usize..8,
                0usize..64,
                1usize..80,
                0usize..4,
                prop::collection::vec(prop::sample::select(b"ab\nc=/YWJj".to_vec()), 0..8),
            ),
            0..12,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn stream_equals_reference_under_any_chunking(
            values in prop::collection::vec(value(), 1..4),
            picks in picks(),
            sizes in prop::collection::vec(1usize..40, 1..6),
        ) {
            let m = Arc::new(Masker::new(values.iter().map(|v| v.as_slice())));
            let t = text(&values, &picks);
            let expect = reference(&values, &t);
            prop_assert_eq!(&m.mask(&t), &expect);
            prop_assert_eq!(&stream_chunked(&m, &t, &sizes), &expect);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Base64 anywhere, long values, lines, bash forms
// ---------------------------------------------------------------------------------------

/// `s` without `\r` and `\n`.
fn unwrapped(s: &[u8]) -> Vec<u8> {
    s.iter()
        .copied()
        .filter(|&b| b != b'\n' && b != b'\r')
        .collect()
}

/// Whether any `w`-byte window of `needle` occurs in `hay`.
fn any_window(hay: &[u8], needle: &[u8], w: usize) -> bool {
    needle
        .windows(w.min(needle.len()))
        .any(|win| contains(hay, win))
}

/// The base64 characters a value determines when it starts `align` bytes into a group.
fn core_of(engine: &base64::engine::GeneralPurpose, v: &[u8], align: usize) -> Vec<u8> {
    let mut shifted = vec![0u8; align];
    shifted.extend_from_slice(v);
    let enc = engine.encode(&shifted);
    let first = (8 * align).div_ceil(6);
    let end = 8 * (align + v.len()) / 6;
    enc.as_bytes()[first..end].to_vec()
}

#[test]
fn base64_of_a_value_starting_mid_stream_is_masked() {
    // `printf "ab%s" "$v" | base64`, at every offset and several wrappings: only the edge
    // characters (which also depend on the neighbours) may remain.
    let v: &[u8] = b"s3cr3t??>>value-with-some-length";
    let m = Arc::new(masker(&[v]));
    for prefix in [&b"a"[..], b"ab", b"abc", b"abcd", b"\x00\xff\x10\x20\x30"] {
        for suffix in [&b""[..], b"\n", b"zz"] {
            let mut plain = prefix.to_vec();
            plain.extend_from_slice(v);
            plain.extend_from_slice(suffix);
            for engine in [&STANDARD, &URL_SAFE_NO_PAD] {
                let enc = engine.encode(&plain);
                let core = core_of(engine, v, prefix.len() % 3);
                for (width, eol) in [(0, "\n"), (40, "\n"), (64, "\n"), (76, "\r\n"), (7, "\n")] {
                    let text = if width == 0 {
                        enc.clone().into_bytes()
                    } else {
                        wrap(enc.as_bytes(), width, eol.as_bytes())
                    };
                    // Positive control: the core is there to be found.
                    assert!(contains(&unwrapped(&text), &core));
                    let out = stream_chunked(&m, &text, &[5, 1, 17]);
                    assert!(contains(&out, b"***"), "{prefix:?} {width}");
                    assert!(
                        !any_window(&unwrapped(&out), &core, 4),
                        "{prefix:?} {width}: {}",
                        String::from_utf8_lossy(&out)
                    );
                    // At most one character on each side of the core survives (none past
                    // the end of an encoding that ends with the value).
                    let survived = unwrapped(&out).len() - 3;
                    let around = unwrapped(&text).len() - core.len();
                    assert!(survived <= around, "{prefix:?} {width}");
                    assert!(survived >= prefix.len() / 3 * 4, "{prefix:?} {width}");
                }
            }
        }
    }
}

#[test]
fn openssl_and_pem_wrapping_at_64_is_masked() {
    let v: Vec<u8> = (0..200u8).map(|i| i.wrapping_mul(77) ^ 0x5a).collect();
    let m = masker(&[&v]);
    let enc = STANDARD.encode(&v);
    let pem = format!(
        "-----BEGIN DATA-----\n{}\n-----END DATA-----\n",
        String::from_utf8(wrap(enc.as_bytes(), 64, b"\n")).unwrap()
    );
    assert_eq!(
        m.mask(pem.as_bytes()),
        b"-----BEGIN DATA-----\n***\n-----END DATA-----\n"
    );
}

#[test]
fn base64_broken_by_a_blank_line_run_is_not_joined() {
    // Up to three line-break bytes are skipped; a fourth breaks the match (documented).
    let v: &[u8] = b"a-value-for-breaking";
    let m = masker(&[v]);
    let enc = STANDARD.encode(v);
    let (a, b) = enc.split_at(10);
    assert_eq!(m.mask(format!("{a}\r\n\n{b}").as_bytes()), b"***");
    let out = m.mask(format!("{a}\n\n\n\n{b}").as_bytes());
    assert!(!contains(&out, b"***"), "{}", String::from_utf8_lossy(&out));
}

#[test]
fn long_value_in_every_form_streams() {
    // A value far longer than the anchor and than a piece, printed in several forms, split
    // at awkward places.
    let v: Vec<u8> = (0..40_000u32)
        .map(|i| b"abc \"/\\'\n\x01xyz+="[(i.wrapping_mul(2654435761) >> 7) as usize % 15])
        .collect();
    let m = Arc::new(masker(&[&v]));
    let forms = all_forms(&v);
    assert!(forms.len() > 10);
    let mut text = Vec::new();
    for (i, (ch, f)) in forms.iter().enumerate() {
        text.extend_from_slice(format!("<{i}>").as_bytes());
        match ch {
            forms::Channel::Raw => text.extend_from_slice(f),
            forms::Channel::Base64 => text.extend_from_slice(&wrap(f, 76, b"\n")),
        }
    }
    text.extend_from_slice(b"<end>");
    for sizes in [&[4096][..], &[1, 1000, 65_536], &[STEP + 1]] {
        let out = stream_chunked(&m, &text, sizes);
        let expect: String = (0..forms.len()).map(|i| format!("<{i}>***")).collect();
        assert_eq!(String::from_utf8_lossy(&out), format!("{expect}<end>"));
    }
}

#[test]
fn a_long_value_printed_in_part_is_not_masked_but_the_whole_is() {
    // Whole forms only: a truncated long form is not an occurrence (documented).
    let v: Vec<u8> = (0..1000u32).map(|i| b'a' + (i * 7 % 26) as u8).collect();
    let m = masker(&[&v]);
    assert_eq!(m.mask(&v[..999]), &v[..999]);
    assert_eq!(m.mask(&v), b"***");
}

#[test]
fn periodic_values_keep_candidates_compact() {
    // A value of one repeated byte in a flood of that byte: every offset is a candidate,
    // held as one run; all of it is masked.
    let v = vec![b'a'; 10_000];
    let m = Arc::new(masker(&[&v]));
    let mut s = MaskStream::new(m.clone());
    let mut out = Vec::new();
    let chunk = vec![b'a'; 4096];
    for _ in 0..100 {
        s.push(&chunk, &mut out);
        let st = s.state().unwrap();
        assert!(st.candidate_runs() <= 4, "{}", st.candidate_runs());
        assert!(s.held_len() < m.max_pattern_len());
    }
    s.push(b"b", &mut out);
    s.finish(&mut out);
    assert_eq!(out, b"***b");

    // Period 3 inside a period-1 flood: candidates come and go.
    let v: Vec<u8> = b"abc".iter().copied().cycle().take(3000).collect();
    let m = masker(&[&v]);
    let mut text: Vec<u8> = b"abc".iter().copied().cycle().take(9000).collect();
    text.extend_from_slice(b"xyz");
    assert_eq!(m.mask(&text), b"***xyz");
    assert_eq!(m.mask(&text[1..2999]), &text[1..2999]);
}

#[test]
fn each_line_of_a_multi_line_value_is_masked() {
    let key = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nshort\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----\n";
    let m = masker(&[key]);
    // Indented by `sed 's/^/  /'`, with CRLF, and with a prefix per line.
    let indented: Vec<u8> = key
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .flat_map(|l| [b"  ".as_slice(), l, b"\r\n"].concat())
        .collect();
    let out = m.mask(&indented);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "  ***\r\n  ***\r\n  short\r\n  ***\r\n  ***\r\n"
    );
    let out = m.mask_str("key: MIIEvQIBADANBgkqhkiG9w0BAQEFAASC (line 2)");
    assert_eq!(out, "key: *** (line 2)");
    // Lines shorter than MIN_LINE_LEN are not masked on their own.
    assert_eq!(m.mask(b"short"), b"short");
    assert_eq!(MIN_LINE_LEN, 8);
    assert_eq!(
        masker(&[b"1234567\nabcdefgh"]).mask(b"1234567 abcdefgh"),
        b"1234567 ***"
    );
}

#[test]
fn bash_quoted_forms() {
    // Forms as bash 5.2 writes them (the integration tests compare with real bash).
    let m = masker(&[b"it's a \"q\" $x `b` \\ #h"]);
    for text in [
        r#"it\'s\ a\ \"q\"\ \$x\ \`b\`\ \\\ #h"#, // printf %q
        r#"declare -- v="it's a \"q\" \$x \`b\` \\ #h""#, // declare -p
        r#"'it'\''s a "q" $x `b` \ #h'"#,         // ${v@Q}
        r#"$'it\'s a "q" $x `b` \\ #h'"#,         // $'…' (with a control char elsewhere)
    ] {
        let out = m.mask_str(text);
        assert!(
            out.contains("***") && !out.contains("#h"),
            "{text} -> {out}"
        );
    }
    let m = masker(&["ctl\ttab\nnl\x01\x7f é\x1b".as_bytes()]);
    assert_eq!(m.mask_str(r"$'ctl\ttab\nnl\001\177 é\E'"), "$'***'");
    assert_eq!(m.mask_str(r"$'ctl\ttab\nnl\001\177 \303\251\E'"), "$'***'");
    let m = masker(&[b"#start~:~x"]);
    assert_eq!(m.mask_str(r"\#start~:\~x"), "***");
    assert_eq!(m.mask_str(r"pre#start~:\~x"), "pre***");
}

#[test]
fn remask_finds_a_secret_whose_base64_contains_a_variable() {
    // A short variable inside the base64 of a large secret is common ("prod" in 4 MB of
    // base64): the log masked with the variables shows the secret's base64 with holes,
    // and re-masking must still hide all of it.
    let secret = STANDARD.decode("QUJDprodRUZHSElKS0xNTk9Q").unwrap();
    let vars = Arc::new(masker(&[b"prod"]));
    let printed = format!("data: {}\n", STANDARD.encode(&secret));
    let mut log = capture(masker(&[b"prod"]), 1 << 20, &[printed.as_bytes()]);
    assert_eq!(log.as_bytes(), b"data: QUJD***RUZHSElKS0xNTk9Q\n");
    log.remask(&vars.extended([secret.as_slice()]));
    assert_eq!(log.as_bytes(), b"data: ***\n");

    // The same across a line break (the fast check must not skip such forms).
    let wrapped = "data: QUJDpr\nodRUZHSElKS0xNTk9Q\n";
    let mut log = capture(masker(&[b"prod"]), 1 << 20, &[wrapped.as_bytes()]);
    log.remask(&vars.extended([secret.as_slice()]));
    assert!(!contains(log.as_bytes(), b"RUZH"), "{:?}", log.as_bytes());
}
