//! The bash wrapper shared by every executor, and the parser for the result frames it emits.
//!
//! A rendered script never travels in argv. bash is started with a fixed bootstrap that
//! moves its stdin (the script) to fd 4 and sources `/dev/fd/4`. `source` reads the whole
//! script before it runs any of it, so no child can read script bytes from stdin, and the
//! values bound in it live only in the shell's memory: they are never exported, so they are
//! in neither argv nor any process environment.
//!
//! The prologue in front of the rendered script:
//! - closes fd 4 and unsets `secret`;
//! - `cd`s into `commandPath`, or reports `csm:cd` and exits;
//! - installs an EXIT trap that writes the result frame to fd 3. Because it is a trap, an
//!   early `exit 0` still yields the value, unlike Harness's appended collector line;
//! - shadows `trap` so a script's own EXIT trap is chained after ours rather than replacing it.
//!
//! Background jobs the script left behind do not outlive it: locally the executor kills the
//! process group as soon as bash exits; over SSH the trap sends the group SIGTERM after
//! reporting.
//!
//! Locally fd 3 is a dedicated pipe. Over SSH there are only two streams, so the remote
//! bootstrap points fd 3 at the channel's stdout and the script's stdout at its stderr.
//! Over SSH the script's stdout and stderr are therefore one log stream. The
//! remote bootstrap also reports its process group (`csm:pid`), so that the executor can
//! kill the group over a second channel, and starts a watchdog. The watchdog kills the group
//! at the deadline even if the agent has gone away.
//!
//! Frames on fd 3, in order:
//! - `csm:pid <pgid>\n`: SSH only, first;
//! - `csm:cd\n`: commandPath is missing;
//! - `csm:unset <rc>\n`: the script ended without setting `secret`;
//! - `csm:done <rc> <len>\n<len bytes>`: the exact bytes of `$secret`.

use std::ffi::CStr;
use std::fmt::Write as _;
use std::time::Duration;

use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::secret::{secret_bytes, SecretBytes};

/// The bash binary used locally. Remote hosts use `bash` from their PATH.
pub const LOCAL_BASH: &CStr = c"/bin/bash";

/// The fixed bootstrap given to `bash -c` locally. It contains no value.
pub const LOCAL_BOOTSTRAP: &CStr = c"exec 4<&0 </dev/null; . /dev/fd/4";

/// `$0` for the script, so its error messages read `csm-agent: line 3: …`.
pub const SCRIPT_NAME: &str = "csm-agent";
/// [`SCRIPT_NAME`] for `posix_spawn`.
pub const SCRIPT_NAME_C: &CStr = c"csm-agent";

/// The longest frame header the parser accepts.
const MAX_HEADER: usize = 64;

/// Where the wrapped script will run.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// On this host, with fd 3 already open as the result pipe.
    Local,
    /// Over an SSH channel, with a remote watchdog that sends SIGTERM to the group at
    /// `timeout`, then SIGKILL after `grace`.
    Ssh {
        /// When the watchdog sends SIGTERM.
        timeout: Duration,
        /// How long it then waits before SIGKILL.
        grace: Duration,
    },
}

/// Single-quote `s` for bash: the result is always one literal word.
pub fn shell_quote(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'\'');
    for &b in s {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
}

/// The remote command line for SSH mode. It is fixed text: no value, no path.
pub fn remote_command() -> String {
    // sshd runs the command in a new session through the login shell; `exec` makes our
    // bash the group leader, so `kill 0` and the recorded pgid cover the whole script.
    format!(
        "exec bash --noprofile --norc -c 'exec 3>&1 1>&2 4<&0 </dev/null; \
         printf \"csm:pid %d\\n\" $$ >&3; . /dev/fd/4' {SCRIPT_NAME}"
    )
}

/// The full text written to bash's stdin: prologue, then the rendered script.
///
/// Returned in a zeroising buffer because it contains the rendered script, and with it the
/// bound values.
pub fn script_input(mode: Mode, command_path: &str, rendered: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(PROLOGUE.len() + rendered.len() + 256));
    out.extend_from_slice(b"exec 4<&-\n__csm_dir=");
    shell_quote(command_path.as_bytes(), &mut out);
    out.push(b'\n');
    if let Mode::Ssh { timeout, grace } = mode {
        // The watchdog ignores TERM itself (and so does its sleep), so that the group TERM it
        // sends does not stop it before the KILL. Its fds are detached so it never holds the
        // channel open, and the EXIT trap kills it.
        let mut wd = String::new();
        let _ = write!(
            wd,
            "(builtin trap '' TERM; sleep {t}; kill -TERM 0; sleep {g}; kill -KILL 0) \
             </dev/null >/dev/null 2>&1 3>&- &\n__csm_wd=$!\n",
            t = secs(timeout),
            g = secs(grace)
        );
        out.extend_from_slice(wd.as_bytes());
    }
    out.extend_from_slice(PROLOGUE.as_bytes());
    out.extend_from_slice(rendered);
    // A script whose last line lacks a newline must still end cleanly.
    out.push(b'\n');
    out
}

fn secs(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// The fixed part of the prologue. `__csm_dir` (and, over SSH, `__csm_wd`) are set before it.
const PROLOGUE: &str = r#"unset secret
__csm_pid=$BASHPID __csm_ut=
__csm_rcf() { return $1; }
__csm_len() { local LC_ALL=C; __csm_n=${#secret}; }
trap() {
  # Only the main shell's EXIT trap is ours; subshells keep plain `trap`.
  [[ $BASHPID == "$__csm_pid" ]] || { builtin trap "$@"; return; }
  [[ $1 == -- ]] && shift
  [[ $# -lt 2 || $1 == -[pl] ]] && { builtin trap "$@"; return; }
  local h=$1 s r=()
  shift
  for s; do
    case $s in EXIT|exit|SIGEXIT|0) [[ $h == - ]] && __csm_ut= || __csm_ut=$h ;; *) r+=("$s") ;; esac
  done
  [[ ${#r[@]} -eq 0 ]] || builtin trap -- "$h" "${r[@]}"
}
__csm_emit() {
  local __csm_rc=$?
  builtin trap - EXIT
  if [[ ${secret+x} ]]; then
    __csm_len
    printf 'csm:done %d %d\n%s' $__csm_rc $__csm_n "$secret"
  else
    printf 'csm:unset %d\n' $__csm_rc
  fi >&3
  exec 3>&-
  [[ $__csm_ut ]] && { __csm_rcf $__csm_rc; eval "$__csm_ut"; }
  # Over SSH, stop the watchdog and end what the script left running; locally the
  # executor kills the group itself the moment bash exits.
  if [[ ${__csm_wd-} ]]; then
    kill -KILL $__csm_wd 2>/dev/null
    builtin trap '' TERM
    kill -TERM 0 2>/dev/null
  fi
  return $__csm_rc
}
cd -- "$__csm_dir" 2>/dev/null || { printf 'csm:cd\n' >&3; [[ ${__csm_wd-} ]] && kill -KILL $__csm_wd 2>/dev/null; exit 1; }
builtin trap __csm_emit EXIT
"#;

/// What the wrapper reported on fd 3.
#[derive(Debug)]
pub enum Report {
    /// `commandPath` does not exist or is not a directory.
    CommandPath,
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

/// Why the result stream could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The stream held something other than a wrapper frame.
    #[error("malformed result frame from the wrapper")]
    Malformed,
    /// `$secret` was larger than the configured limit.
    #[error("the secret is {len} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

/// Incremental parser for the frames on fd 3.
#[derive(Debug)]
pub struct FrameReader {
    header: Vec<u8>,
    body: Option<(i32, usize, Zeroizing<Vec<u8>>)>,
    pgid: Option<i32>,
    report: Option<Report>,
    error: Option<FrameError>,
    max_secret: usize,
}

impl FrameReader {
    /// A parser that refuses secrets longer than `max_secret` bytes.
    pub fn new(max_secret: usize) -> Self {
        FrameReader {
            header: Vec::new(),
            body: None,
            pgid: None,
            report: None,
            error: None,
            max_secret,
        }
    }

    /// Feed bytes as read.
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.report.is_none() && self.error.is_none() {
            if let Some((_, len, buf)) = &mut self.body {
                let take = (*len - buf.len()).min(data.len());
                buf.extend_from_slice(&data[..take]);
                data = &data[take..];
                if buf.len() == *len {
                    let (rc, _, buf) = self.body.take().expect("body present");
                    self.report = Some(Report::Done {
                        rc,
                        secret: secret_bytes(buf.to_vec()),
                    });
                }
                continue;
            }
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.header.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    let header = std::mem::take(&mut self.header);
                    self.header_line(&header);
                }
                None => {
                    self.header.extend_from_slice(data);
                    data = &[];
                }
            }
            if self.header.len() > MAX_HEADER {
                self.error = Some(FrameError::Malformed);
            }
        }
    }

    fn header_line(&mut self, line: &[u8]) {
        let Ok(line) = std::str::from_utf8(line) else {
            self.error = Some(FrameError::Malformed);
            return;
        };
        let mut parts = line.split(' ');
        let num = |p: Option<&str>| p.and_then(|s| s.parse::<i64>().ok());
        match parts.next() {
            Some("csm:pid") => match num(parts.next()) {
                Some(p) if p > 0 && p <= i32::MAX as i64 => self.pgid = Some(p as i32),
                _ => self.error = Some(FrameError::Malformed),
            },
            Some("csm:cd") => self.report = Some(Report::CommandPath),
            Some("csm:unset") => match num(parts.next()) {
                Some(rc) => self.report = Some(Report::Unset { rc: rc as i32 }),
                None => self.error = Some(FrameError::Malformed),
            },
            Some("csm:done") => match (num(parts.next()), num(parts.next())) {
                (Some(rc), Some(len)) if len >= 0 => {
                    let len = len as usize;
                    if len > self.max_secret {
                        self.error = Some(FrameError::TooLarge {
                            len,
                            limit: self.max_secret,
                        });
                    } else if len == 0 {
                        self.report = Some(Report::Done {
                            rc: rc as i32,
                            secret: secret_bytes(Vec::new()),
                        });
                    } else {
                        // Exact capacity: the buffer never reallocates, so no unzeroed copy
                        // of a partial secret is left behind in freed memory.
                        self.body = Some((rc as i32, len, Zeroizing::new(Vec::with_capacity(len))));
                    }
                }
                _ => self.error = Some(FrameError::Malformed),
            },
            _ => self.error = Some(FrameError::Malformed),
        }
    }

    /// The remote process group, once reported.
    pub fn pgid(&self) -> Option<i32> {
        self.pgid
    }

    /// Whether a final report (or an error) has arrived: nothing more is needed from fd 3.
    pub fn is_complete(&self) -> bool {
        self.report.is_some() || self.error.is_some()
    }

    /// The final report. A stream that ended mid-frame yields `Ok(None)` like an empty one:
    /// either way the script did not report.
    pub fn finish(self) -> Result<Option<Report>, FrameError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.report),
        }
    }
}

/// Whether a reported secret counts as empty under Harness's rule (empty, or `null`).
pub fn is_empty_secret(secret: &SecretBytes) -> bool {
    let s = secret.expose_secret();
    s.is_empty() || s == b"null"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunked(data: &[u8], chunk: usize) -> Result<Option<Report>, FrameError> {
        let mut r = FrameReader::new(1024);
        for c in data.chunks(chunk) {
            r.push(c);
        }
        r.finish()
    }

    #[test]
    fn done_frame_is_exact_across_any_chunking() {
        let data = b"csm:pid 77\ncsm:done 0 7\na\nb \xff\x01xtrailing";
        for chunk in 1..data.len() {
            match parse_chunked(data, chunk).unwrap() {
                Some(Report::Done { rc, secret }) => {
                    assert_eq!(rc, 0);
                    assert_eq!(secret.expose_secret(), b"a\nb \xff\x01x");
                }
                other => panic!("chunk {chunk}: {other:?}"),
            }
        }
    }

    #[test]
    fn pid_cd_unset_and_errors() {
        let mut r = FrameReader::new(8);
        r.push(b"csm:pid 42\n");
        assert_eq!(r.pgid(), Some(42));
        assert!(!r.is_complete());
        r.push(b"csm:cd\n");
        assert!(matches!(r.finish(), Ok(Some(Report::CommandPath))));
        assert!(matches!(
            parse_chunked(b"csm:unset 3\n", 4),
            Ok(Some(Report::Unset { rc: 3 }))
        ));
        assert_eq!(
            parse_chunked(b"hello\n", 3).unwrap_err(),
            FrameError::Malformed
        );
        assert_eq!(
            parse_chunked(b"csm:done 0 5000\n", 3).unwrap_err(),
            FrameError::TooLarge {
                len: 5000,
                limit: 1024
            }
        );
        assert!(matches!(parse_chunked(b"csm:done 0 5\nab", 2), Ok(None)));
        assert!(matches!(
            parse_chunked(&[b'x'; 100], 7),
            Err(FrameError::Malformed)
        ));
    }

    #[test]
    fn quoting_round_trips_through_bash() {
        let v = b"it's a \"$(x)\" `y` \\ \n end";
        let mut q = Vec::new();
        shell_quote(v, &mut q);
        let mut script = b"printf %s ".to_vec();
        script.extend_from_slice(&q);
        let out = std::process::Command::new(LOCAL_BASH.to_str().unwrap())
            .arg("-c")
            .arg(std::ffi::OsStr::new(std::str::from_utf8(&script).unwrap()))
            .output()
            .unwrap();
        assert_eq!(out.stdout, v);
    }

    #[test]
    fn empty_and_null_are_empty() {
        assert!(is_empty_secret(&secret_bytes(vec![])));
        assert!(is_empty_secret(&secret_bytes(b"null".to_vec())));
        assert!(!is_empty_secret(&secret_bytes(b" null".to_vec())));
    }
}
