//! The encoded forms, each as the tool that writes it would: JSON, URL, base64 at every
//! offset and wrapping, lines of a multi-line value, bash's quoting; and long values.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;

use super::*;

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
fn base64url_of_the_json_contents_is_masked() {
    // A JWT claim: the value JSON-escaped inside a JSON payload, base64url without padding.
    let v = "pa\"ss\\wörd/with-quotes";
    let m = masker(&[v.as_bytes()]);
    let payload = serde_json::json!({ "sub": "svc", "secret": v, "n": 1 }).to_string();
    let escaped = serde_json::to_string(v).unwrap();
    let escaped = &escaped.as_bytes()[1..escaped.len() - 1];
    assert_ne!(escaped, v.as_bytes(), "the test needs escaping");
    let jwt = format!(
        "eyJhbGciOiJIUzI1NiJ9.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(payload.as_bytes())
    );
    let offset = payload.find("pa\\\"").unwrap();
    let core = core_of(&URL_SAFE_NO_PAD, escaped, offset % 3);
    assert!(contains(jwt.as_bytes(), &core));
    let out = m.mask(jwt.as_bytes());
    assert!(
        !any_window(&out, &core, 8),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(contains(&out, b"***") && out.ends_with(b".c2lnbmF0dXJl"));
}
