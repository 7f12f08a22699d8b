//! Unit tests for masking: the API, streaming, capture and re-masking here; the encoded
//! forms in `encodings`; the engine against a naive reference on every form in
//! `reference`.

mod encodings;
mod reference;

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::engine::STEP;
use super::*;

pub(super) fn masker(values: &[&[u8]]) -> Masker {
    Masker::new(values.iter().copied())
}

pub(super) fn masked(values: &[&[u8]], input: &[u8]) -> Vec<u8> {
    masker(values).mask(input)
}

pub(super) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every form of `v` the engine keeps: the raw value, then every other form at least
/// MIN_MASK_LEN long (and, in the raw channel, different from the value).
pub(super) fn all_forms(v: &[u8]) -> Vec<(forms::Channel, Vec<u8>)> {
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

pub(super) fn capture(m: Masker, cap: usize, chunks: &[&[u8]]) -> CapturedLog {
    let mut c = LogCapture::new(Arc::new(m), cap);
    for ch in chunks {
        c.push(ch);
    }
    c.finish()
}

pub(super) fn stream_chunked(m: &Arc<Masker>, text: &[u8], sizes: &[usize]) -> Vec<u8> {
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
pub(super) fn wrap(form: &[u8], width: usize, eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, line) in form.chunks(width.max(1)).enumerate() {
        if i > 0 {
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(line);
    }
    out
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
