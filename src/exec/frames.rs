//! The parser for the wrapper's result frames (`docs/protocol.md`, "Result frames").
//!
//! A frame is a record `csm:<nonce> <verb> [args]`, ended by a NUL or a newline and
//! preceded by one so that anything unterminated before it cannot swallow it; a `done`
//! frame's record is followed by the secret's exact bytes and a NUL (bash strings cannot
//! hold one). The wrapper writes NULs, so that a frame is one write: bash flushes its output
//! at every newline. Anything else on the
//! stream is noise: it is counted, never kept (the first bytes before the SSH bootstrap
//! excepted, for the `remote_shell` message) and never logged. A line with the wrong nonce
//! is noise too, so nothing that does not know the attempt's nonce can steer the result or
//! the kill target.
//!
//! A secret is never buffered past the limit: past it, the body is dropped as it arrives
//! and only counted, and the attempt fails as `secret_too_large`.

use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::secret::{secret_bytes, SecretBytes};

/// The longest frame record; longer records are noise.
const MAX_LINE: usize = 128;
/// How much noise from before the SSH bootstrap's frame is kept for an error message.
const KEEP_PRE_BOOTSTRAP: usize = 512;

/// What the wrapper reported.
#[derive(Debug)]
pub enum Report {
    /// `commandPath` does not exist or is not a directory.
    CommandPath,
    /// The remote host had no writable directory for the private `TMPDIR`.
    TempDir,
    /// The script ended with `secret` unset.
    Unset {
        /// The script's exit status.
        rc: i32,
    },
    /// The script ended with `secret` set.
    Done {
        /// The script's exit status.
        rc: i32,
        /// The exact bytes of `$secret`.
        secret: SecretBytes,
    },
}

/// Why the result stream could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame carrying the attempt's nonce did not parse (e.g. a process group of 1).
    #[error("malformed result frame from the wrapper")]
    Malformed,
    /// `$secret` was larger than the configured limit.
    #[error("the secret is larger than the {limit}-byte limit")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Over SSH: the channel closed before the bootstrap reported its process group, so the
    /// login shell never ran the wrapper.
    #[error("the remote login shell did not run the wrapper: the channel closed before the bootstrap's first frame")]
    NoBootstrap {
        /// The first bytes the login shell printed (unmasked: never shown as they are).
        printed: Vec<u8>,
    },
}

struct Body {
    rc: i32,
    buf: Zeroizing<Vec<u8>>,
    /// Past the limit (or a second report): bytes are dropped until the NUL.
    discard: bool,
}

/// Incremental parser for one attempt's frames.
pub struct FrameReader {
    /// `csm:<nonce> `
    prefix: Vec<u8>,
    max_secret: usize,
    remote: bool,
    line: Vec<u8>,
    line_too_long: bool,
    body: Option<Body>,
    pgid: Option<i32>,
    seen_frame: bool,
    ended: bool,
    report: Option<Report>,
    error: Option<FrameError>,
    noise: u64,
    pre_bootstrap: Vec<u8>,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("pgid", &self.pgid)
            .field("ended", &self.ended)
            .field("report", &self.report)
            .field("error", &self.error)
            .field("noise", &self.noise)
            .finish_non_exhaustive()
    }
}

impl FrameReader {
    /// A parser for frames tagged with `nonce`, refusing secrets over `max_secret` bytes.
    /// `remote`: the stream is an SSH channel, whose first frame is the bootstrap's `pid`.
    pub(crate) fn new(nonce: &str, max_secret: usize, remote: bool) -> Self {
        FrameReader {
            prefix: format!("csm:{nonce} ").into_bytes(),
            max_secret,
            remote,
            line: Vec::with_capacity(MAX_LINE),
            line_too_long: false,
            body: None,
            pgid: None,
            seen_frame: false,
            ended: false,
            report: None,
            error: None,
            noise: 0,
            pre_bootstrap: Vec::new(),
        }
    }

    /// Feed bytes as read (only bytes from the wrapper's own process, locally).
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.body.is_some() {
                data = self.push_body(data);
                continue;
            }
            match data.iter().position(|&b| b == b'\n' || b == 0) {
                Some(i) => {
                    self.add_to_line(&data[..i]);
                    data = &data[i + 1..];
                    self.end_line();
                }
                None => {
                    self.add_to_line(data);
                    data = &[];
                }
            }
        }
    }

    fn add_to_line(&mut self, part: &[u8]) {
        if self.line_too_long {
            self.add_noise(part);
        } else if self.line.len() + part.len() > MAX_LINE {
            self.line_too_long = true;
            let line = std::mem::take(&mut self.line);
            self.add_noise(&line);
            self.add_noise(part);
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn add_noise(&mut self, bytes: &[u8]) {
        self.noise += bytes.len() as u64;
        if self.remote && !self.seen_frame {
            let room = KEEP_PRE_BOOTSTRAP.saturating_sub(self.pre_bootstrap.len());
            self.pre_bootstrap
                .extend_from_slice(&bytes[..room.min(bytes.len())]);
        }
    }

    fn end_line(&mut self) {
        if std::mem::take(&mut self.line_too_long) {
            self.add_noise(b"\n");
            return;
        }
        let line = std::mem::take(&mut self.line);
        let Some(rest) = line.strip_prefix(self.prefix.as_slice()) else {
            if !line.is_empty() {
                self.add_noise(&line);
                self.add_noise(b"\n");
            }
            return;
        };
        let rest = String::from_utf8_lossy(rest).into_owned();
        self.frame(&rest);
        self.line = line;
        self.line.clear();
    }

    fn frame(&mut self, rest: &str) {
        let mut parts = rest.split(' ');
        let verb = parts.next().unwrap_or("");
        let num = |p: Option<&str>| p.and_then(|s| s.parse::<i64>().ok());
        let first = !self.seen_frame;
        self.seen_frame = true;
        let rc = |v: Option<i64>| v.map(|v| v.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
        match verb {
            // Only the bootstrap's frame, first on the stream, names what may be killed.
            "pid" if self.remote && first => match num(parts.next()) {
                Some(p) if p > 1 && p <= i32::MAX as i64 => self.pgid = Some(p as i32),
                _ => self.fail(FrameError::Malformed),
            },
            "pid" => {}
            "end" => self.ended = true,
            "cd" => self.set_report(Report::CommandPath),
            "tmp" => self.set_report(Report::TempDir),
            "unset" => match rc(num(parts.next())) {
                Some(rc) => self.set_report(Report::Unset { rc }),
                None => self.fail(FrameError::Malformed),
            },
            "done" => match rc(num(parts.next())) {
                Some(rc) => {
                    self.body = Some(Body {
                        rc,
                        buf: Zeroizing::new(Vec::new()),
                        discard: self.report.is_some() || self.error.is_some(),
                    })
                }
                None => self.fail(FrameError::Malformed),
            },
            _ => self.fail(FrameError::Malformed),
        }
    }

    fn set_report(&mut self, r: Report) {
        if self.report.is_none() && self.error.is_none() {
            self.report = Some(r);
        }
    }

    fn fail(&mut self, e: FrameError) {
        if self.report.is_none() && self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Body bytes up to the NUL; returns what follows it.
    fn push_body<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        let body = self.body.as_mut().expect("in a body");
        let (chunk, rest, done) = match data.iter().position(|&b| b == 0) {
            Some(i) => (&data[..i], &data[i + 1..], true),
            None => (data, &[][..], false),
        };
        if !body.discard {
            if body.buf.len() + chunk.len() > self.max_secret {
                body.discard = true;
                // Drop what was kept now, zeroised; the rest is only skipped.
                body.buf = Zeroizing::new(Vec::new());
                let limit = self.max_secret;
                self.fail(FrameError::TooLarge { limit });
            } else {
                append_zeroizing(&mut body.buf, chunk, self.max_secret);
            }
        }
        if done {
            let body = self.body.take().expect("in a body");
            if !body.discard {
                // An exact-size copy: SecretBytes never reallocates it, so no unzeroed
                // copy of the secret is left in freed memory.
                let mut exact = Vec::with_capacity(body.buf.len());
                exact.extend_from_slice(&body.buf);
                self.set_report(Report::Done {
                    rc: body.rc,
                    secret: secret_bytes(exact),
                });
            }
        }
        rest
    }

    /// The remote process group, from the bootstrap's frame.
    pub fn pgid(&self) -> Option<i32> {
        self.pgid
    }

    /// Whether the remote relay reported its clean-up done (`end`).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Whether a final report (or an error) has arrived.
    pub fn is_complete(&self) -> bool {
        self.report.is_some() || self.error.is_some()
    }

    /// Bytes on the stream that were not frames.
    pub fn noise(&self) -> u64 {
        self.noise
    }

    /// Over SSH, the first bytes the login shell printed before the bootstrap's frame.
    pub fn pre_bootstrap(&self) -> &[u8] {
        &self.pre_bootstrap
    }

    /// The final report. A stream that ended mid-frame yields `Ok(None)` like an empty one:
    /// either way the script did not report.
    pub fn finish(self) -> Result<Option<Report>, FrameError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.remote && self.pgid.is_none() {
            return Err(FrameError::NoBootstrap {
                printed: self.pre_bootstrap,
            });
        }
        Ok(self.report)
    }
}

/// Whether a reported secret counts as empty under Harness's rule (empty, or `null`).
pub fn is_empty_secret(secret: &SecretBytes) -> bool {
    let s = secret.expose_secret();
    s.is_empty() || s == b"null"
}

/// Append without ever leaving a copy of the bytes behind in freed memory: growth moves
/// them into a new buffer and zeroises the old one.
fn append_zeroizing(buf: &mut Zeroizing<Vec<u8>>, data: &[u8], max: usize) {
    let need = buf.len() + data.len();
    if need > buf.capacity() {
        let cap = need.max(buf.capacity() * 2).max(256).min(max.max(need));
        let mut next = Zeroizing::new(Vec::with_capacity(cap));
        next.extend_from_slice(buf);
        *buf = next;
    }
    buf.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: &str = "0123456789abcdef0123456789abcdef";

    fn parse(data: &[u8], chunk: usize, remote: bool) -> Result<Option<Report>, FrameError> {
        let mut r = FrameReader::new(N, 1024, remote);
        for c in data.chunks(chunk) {
            r.push(c);
        }
        r.finish()
    }

    fn frame(s: &str) -> Vec<u8> {
        s.replace("N", N).into_bytes()
    }

    #[test]
    fn done_frame_is_exact_across_any_chunking_and_noise() {
        let mut data = frame("noise from .bashrc\nno newline\ncsm:N pid 77\n\ncsm:N done 0\n");
        data.extend_from_slice(b"a\nb \xff\x01x\n\0");
        data.extend_from_slice(&frame("\ncsm:N end\n"));
        for chunk in 1..data.len() {
            let mut r = FrameReader::new(N, 1024, true);
            for c in data.chunks(chunk) {
                r.push(c);
            }
            assert_eq!(r.pgid(), Some(77));
            assert!(r.ended());
            assert_eq!(r.pre_bootstrap(), b"noise from .bashrc\nno newline\n");
            match r.finish().unwrap() {
                Some(Report::Done { rc, secret }) => {
                    assert_eq!(rc, 0);
                    assert_eq!(secret.expose_secret(), b"a\nb \xff\x01x\n");
                }
                other => panic!("chunk {chunk}: {other:?}"),
            }
        }
    }

    #[test]
    fn records_end_at_a_nul_as_well() {
        let data = frame("noise\0csm:N done 0\0a\nb\0\0csm:N end\0");
        let mut r = FrameReader::new(N, 64, false);
        r.push(&data);
        assert!(r.ended());
        match r.finish().unwrap() {
            Some(Report::Done { secret, .. }) => assert_eq!(secret.expose_secret(), b"a\nb"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frames_without_the_nonce_are_noise() {
        let forged = b"csm:done 0 4\nEVIL\ncsm:ffffffffffffffffffffffffffffffff done 0\nEVIL\0";
        assert!(matches!(parse(forged, 5, false), Ok(None)));
        let mut data = forged.to_vec();
        data.extend_from_slice(&frame("\ncsm:N done 0\nREAL\0"));
        match parse(&data, 3, false).unwrap() {
            Some(Report::Done { secret, .. }) => assert_eq!(secret.expose_secret(), b"REAL"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_the_first_frame_may_name_the_group_and_never_one() {
        let mut r = FrameReader::new(N, 64, true);
        r.push(&frame("csm:N pid 1\n"));
        assert_eq!(r.pgid(), None);
        assert_eq!(r.finish().unwrap_err(), FrameError::Malformed);
        let mut r = FrameReader::new(N, 64, true);
        r.push(&frame("csm:N pid 50\ncsm:N pid 60\n"));
        assert_eq!(r.pgid(), Some(50));
        let mut r = FrameReader::new(N, 64, false);
        r.push(&frame("csm:N pid 50\n"));
        assert_eq!(r.pgid(), None, "no pid frame locally");
        assert_eq!(
            parse(b"This account is currently not available.\n", 4, true).unwrap_err(),
            FrameError::NoBootstrap {
                printed: b"This account is currently not available.\n".to_vec()
            }
        );
    }

    #[test]
    fn cd_unset_and_limits() {
        assert!(matches!(
            parse(&frame("csm:N cd\n"), 2, false),
            Ok(Some(Report::CommandPath))
        ));
        assert!(matches!(
            parse(&frame("csm:N unset 3\n"), 4, false),
            Ok(Some(Report::Unset { rc: 3 }))
        ));
        let mut big = frame("csm:N done 0\n");
        big.extend_from_slice(&[b'a'; 5000]);
        big.push(0);
        assert_eq!(
            parse(&big, 100, false).unwrap_err(),
            FrameError::TooLarge { limit: 1024 }
        );
        let mut exact = frame("csm:N done 0\n");
        exact.extend_from_slice(&[b'a'; 1024]);
        exact.push(0);
        assert!(matches!(
            parse(&exact, 7, false),
            Ok(Some(Report::Done { .. }))
        ));
        // Cut off mid-body: no report.
        assert!(matches!(
            parse(&frame("csm:N done 0\nab"), 2, false),
            Ok(None)
        ));
        // A huge noise line is bounded and skipped.
        let mut long = vec![b'x'; 100_000];
        long.extend_from_slice(&frame("\ncsm:N unset 0\n"));
        assert!(matches!(
            parse(&long, 999, false),
            Ok(Some(Report::Unset { rc: 0 }))
        ));
        assert!(matches!(
            parse(&frame("csm:N bogus\n"), 3, false),
            Err(FrameError::Malformed)
        ));
    }

    #[test]
    fn empty_and_null_are_empty() {
        assert!(is_empty_secret(&secret_bytes(vec![])));
        assert!(is_empty_secret(&secret_bytes(b"null".to_vec())));
        assert!(!is_empty_secret(&secret_bytes(b" null".to_vec())));
    }
}
