//! Masking against what real tools print: bash 5.2 (`printf %q`, `declare -p`, `${v@Q}`,
//! `set -x`), coreutils `base64` at several widths and offsets, `basenc --base64url`,
//! `openssl base64`, `sed` indentation, CRLF line ends. Each tool's output goes through a
//! [`LogCapture`] in random chunk sizes, and nothing of the value's own part of it may
//! survive: no 8-byte window of it (all of it if shorter), base64 compared without line
//! breaks. Each needle is first checked to be in the unmasked output (positive control).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use csm_agent::mask::{LogCapture, Masker, MIN_LINE_LEN};

mod support;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

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

/// The base64 characters `v` determines when it starts `offset` bytes into the stream.
fn core(engine: &base64::engine::GeneralPurpose, v: &[u8], offset: usize) -> Vec<u8> {
    let align = offset % 3;
    let mut shifted = vec![0u8; align];
    shifted.extend_from_slice(v);
    let enc = engine.encode(&shifted);
    enc.as_bytes()[(8 * align).div_ceil(6)..8 * (align + v.len()) / 6].to_vec()
}

/// What must not survive of one tool's output.
enum Needle {
    /// These bytes, as printed.
    Raw(Vec<u8>),
    /// These base64 characters, compared without line breaks.
    Base64(Vec<u8>),
}

/// Each producer: a bash snippet printing `$v` (read from stdin) one way, and what of its
/// output (given the value and the output) is the value's.
struct Producer {
    script: &'static str,
    needles: fn(&[u8], &[u8]) -> Vec<Needle>,
}

/// The contents of a quoted word, after `prefix`: without `$'…'`, `'…'` or `"…"`.
fn quoted(out: &[u8], prefix: &[u8]) -> Vec<Needle> {
    let s = out.strip_suffix(b"\n").unwrap_or(out);
    let s = s.strip_prefix(prefix).expect("the producer's prefix");
    let inner = if let Some(r) = s.strip_prefix(b"$'").or_else(|| s.strip_prefix(b"'")) {
        &r[..r.len() - 1]
    } else if let Some(r) = s.strip_prefix(b"\"") {
        &r[..r.len() - 1]
    } else {
        s
    };
    vec![Needle::Raw(inner.to_vec())]
}

fn b64(engine: &base64::engine::GeneralPurpose, v: &[u8], offset: usize) -> Vec<Needle> {
    vec![Needle::Base64(core(engine, v, offset))]
}

fn lines(v: &[u8]) -> Vec<Needle> {
    v.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| l.len() >= MIN_LINE_LEN)
        .map(|l| Needle::Raw(l.to_vec()))
        .collect()
}

const PRODUCERS: &[Producer] = &[
    Producer {
        script: r#"printf 'value: %s\n' "$v""#,
        needles: |v, _| vec![Needle::Raw(v.to_vec())],
    },
    Producer {
        script: r#"printf '%q\n' "$v""#,
        needles: |_, out| quoted(out, b""),
    },
    Producer {
        // Inside a word: no escape for a leading `#` or `~`.
        script: r#"printf '%q\n' "x$v" | sed 's/x//'"#,
        needles: |_, out| quoted(out, b""),
    },
    Producer {
        script: r#"declare -p v"#,
        needles: |_, out| quoted(out, b"declare -- v="),
    },
    Producer {
        script: r#"echo "got ${v@Q}""#,
        needles: |_, out| quoted(out, b"got "),
    },
    Producer {
        script: r#"(set -x; : "$v") 2>&1"#,
        needles: |_, out| quoted(out, b"+ : "),
    },
    Producer {
        script: r#"printf %s "$v" | base64"#,
        needles: |v, _| b64(&STANDARD, v, 0),
    },
    Producer {
        script: r#"printf %s "$v" | base64 -w 0"#,
        needles: |v, _| b64(&STANDARD, v, 0),
    },
    Producer {
        script: r#"printf '%s\n' "$v" | base64 -w 40"#,
        needles: |v, _| b64(&STANDARD, v, 0),
    },
    Producer {
        script: r#"printf 'ab%s' "$v" | base64"#,
        needles: |v, _| b64(&STANDARD, v, 2),
    },
    Producer {
        script: r#"printf 'a%s\n' "$v" | base64 -w 64"#,
        needles: |v, _| b64(&STANDARD, v, 1),
    },
    Producer {
        script: r#"printf 'abcd%s' "$v" | base64 -w 17"#,
        needles: |v, _| b64(&STANDARD, v, 4),
    },
    Producer {
        script: r#"printf 'abcde%s' "$v" | base64 | sed 's/$/\r/'"#,
        needles: |v, _| b64(&STANDARD, v, 5),
    },
    Producer {
        script: r#"printf %s "$v" | openssl base64"#,
        needles: |v, _| b64(&STANDARD, v, 0),
    },
    Producer {
        script: r#"printf 'x%s' "$v" | openssl base64 -A"#,
        needles: |v, _| b64(&STANDARD, v, 1),
    },
    Producer {
        script: r#"printf 'xy%s' "$v" | basenc --base64url | tr -d '='"#,
        needles: |v, _| b64(&URL_SAFE_NO_PAD, v, 2),
    },
    Producer {
        script: r#"printf '%s\n' "$v" | sed 's/^/    /'"#,
        needles: |v, _| lines(v),
    },
    Producer {
        script: r#"printf '%s\n' "$v" | sed 's/^/key: /; s/$/\r/'"#,
        needles: |v, _| lines(v),
    },
];

/// Values: a PEM key, URL and shell specials, quotes, control characters, non-ASCII,
/// bytes that are not UTF-8, a long one. No NUL: bash cannot hold one.
fn values() -> Vec<Vec<u8>> {
    let mut pem = b"-----BEGIN PRIVATE KEY-----\n".to_vec();
    for i in 0..6 {
        let line: String = (0..64)
            .map(|j| (b'A' + ((i * 7 + j * 3) % 26) as u8) as char)
            .collect();
        pem.extend_from_slice(line.as_bytes());
        pem.push(b'\n');
    }
    pem.extend_from_slice(b"-----END PRIVATE KEY-----");
    let long: Vec<u8> = (0..5000u32)
        .map(|i| {
            b"abcdefghij0123456789+/=-_ .:\"'$\\"[(i.wrapping_mul(2654435761) >> 9) as usize % 32]
        })
        .collect();
    vec![
        pem,
        b"p@ss w0rd/with+specials&=?".to_vec(),
        b"it's \"quoted\" $HOME `cmd` back\\slash #~".to_vec(),
        b"#starts-with-hash~:~x".to_vec(),
        b"tab\there\nnewline\x01ctl\x1besc\x7fdel".to_vec(),
        "unicode é ü 😀 \u{a0} \u{2028} end".as_bytes().to_vec(),
        b"\xff\xfe\x80binary\xc3(\x90".to_vec(),
        br#"{"user":"svc","token":"abc/def=="}"#.to_vec(),
        long,
    ]
}

/// Run `script` with `v` on stdin (read as `$v`) under a UTF-8 locale.
fn bash(script: &str, v: &[u8]) -> Vec<u8> {
    let full = format!("LC_ALL=C; IFS= read -r -d '' v; LC_ALL=C.UTF-8\n{script}\n");
    let mut child = Command::new("/bin/bash")
        .args(["--noprofile", "--norc", "-c", &full])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    let mut input = v.to_vec();
    input.push(0);
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn tools_present() -> bool {
    for tool in ["base64", "basenc", "openssl", "sed", "tr"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).exists());
        if !found {
            support::skip::skip(
                "every_tool_output_is_masked",
                &format!("{tool} is not installed (scripts/ci-setup-mask.sh installs it)"),
            );
            return false;
        }
    }
    true
}

/// Random chunk sizes from a seed (xorshift).
fn chunk_sizes(seed: u64) -> Vec<usize> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + (x % 300) as usize
        })
        .collect()
}

#[test]
fn every_tool_output_is_masked() {
    if !tools_present() {
        return;
    }
    let values = values();
    let m = Arc::new(Masker::new(values.iter().map(|v| v.as_slice())));
    let mut checked = 0;
    for (vi, v) in values.iter().enumerate() {
        for (pi, p) in PRODUCERS.iter().enumerate() {
            let out = bash(p.script, v);
            let needles = (p.needles)(v, &out);
            assert!(!needles.is_empty(), "value {vi}, {}", p.script);
            for seed in 0..3u64 {
                let sizes = chunk_sizes(seed * 1000 + (vi * 100 + pi) as u64);
                let mut c = LogCapture::new(m.clone(), 1 << 20);
                let mut rest = out.as_slice();
                let mut i = 0;
                while !rest.is_empty() {
                    let n = sizes[i % sizes.len()].min(rest.len());
                    c.push(&rest[..n]);
                    rest = &rest[n..];
                    i += 1;
                }
                let log = c.finish();
                let masked = log.as_bytes();
                for n in &needles {
                    let (hay_in, hay_out, needle) = match n {
                        Needle::Raw(n) => (out.clone(), masked.to_vec(), n),
                        Needle::Base64(n) => (unwrapped(&out), unwrapped(masked), n),
                    };
                    assert!(
                        contains(&hay_in, needle),
                        "value {vi}, `{}`: positive control failed: {:?} not in {:?}",
                        p.script,
                        String::from_utf8_lossy(needle),
                        String::from_utf8_lossy(&out)
                    );
                    assert!(
                        !any_window(&hay_out, needle, 8),
                        "value {vi}, `{}`: survived in {:?}",
                        p.script,
                        String::from_utf8_lossy(masked)
                    );
                    checked += 1;
                }
                assert!(contains(masked, b"***"), "value {vi}, `{}`", p.script);
            }
        }
    }
    assert!(checked >= values.len() * PRODUCERS.len() * 3);
}
