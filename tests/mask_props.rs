//! Property tests for `csm_agent::mask`: streaming equals whole-buffer masking under any
//! chunking, capped capture keeps a prefix of it, and no value survives.

use std::sync::Arc;

use csm_agent::mask::{LogCapture, MaskStream, Masker};
use proptest::prelude::*;

/// Split `input` into chunks whose sizes cycle through `sizes` (each >= 1).
fn chunks<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// One encoded form of `v`, as a script might print it (`form` picks which).
fn encode(v: &[u8], form: usize) -> Vec<u8> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;
    match form % 7 {
        0 => v.to_vec(),
        1 => {
            let s = serde_json::to_string(&String::from_utf8_lossy(v)).unwrap();
            s.as_bytes()[1..s.len() - 1].to_vec()
        }
        2 => STANDARD.encode(v).into_bytes(),
        3 => URL_SAFE_NO_PAD.encode(v).into_bytes(),
        4 | 5 => {
            let mut out = Vec::new();
            for &b in v {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    out.push(b);
                } else if form % 7 == 5 {
                    out.extend_from_slice(format!("%{b:02x}").as_bytes());
                } else {
                    out.extend_from_slice(format!("%{b:02X}").as_bytes());
                }
            }
            out
        }
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
    prop::collection::vec(prop::collection::vec(small_alphabet(), min_len..9), 0..5)
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
    fn no_value_survives_in_any_form_checked(
        values in prop::collection::vec(
            prop::collection::vec(any::<u8>().prop_filter("no marker byte", |b| *b != b'*'), 4..24),
            1..4,
        ),
        picks in prop::collection::vec(
            (0usize..4, Just(0usize), prop::collection::vec(any::<u8>().prop_filter("no marker byte", |b| *b != b'*'), 0..16)),
            1..12,
        ),
        sizes in sizes_strategy(),
    ) {
        let m = Arc::new(Masker::new(values.iter().map(|v| v.as_slice())));
        let text = text_with(&values, &picks);
        let mut c = LogCapture::new(m.clone(), usize::MAX);
        for ch in chunks(&text, &sizes) {
            c.push(ch);
        }
        let log = c.finish();
        for v in &values {
            prop_assert!(!contains(log.as_bytes(), v), "value survived");
        }

        // The same text as a JSON string, for UTF-8 values.
        let lossy = String::from_utf8_lossy(&text).into_owned();
        let doc = serde_json::to_string(&lossy).unwrap();
        let out = m.mask(doc.as_bytes());
        for v in &values {
            if let Ok(s) = std::str::from_utf8(v) {
                let escaped = serde_json::to_string(s).unwrap();
                prop_assert!(!contains(&out, &escaped.as_bytes()[1..escaped.len() - 1]));
            }
        }
    }

    #[test]
    fn remask_hides_a_secret_learned_later(
        vars in prop::collection::vec(prop::collection::vec(small_alphabet(), 4..9), 0..3),
        secret in prop::collection::vec(small_alphabet(), 4..12),
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
