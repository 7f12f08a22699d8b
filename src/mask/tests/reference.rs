//! The engine against a naive reference: every form materialised and searched for at
//! every offset, under random values, texts and chunkings.

use super::*;

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
