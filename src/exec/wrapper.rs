//! The bash wrapper shared by every executor: the bootstrap, the prologue in front of the
//! rendered script, and the per-attempt [`Session`] that authenticates what the wrapper
//! reports. The parser for its frames is [`super::frames`]; the protocol is described in
//! `docs/protocol.md` ("Result frames").
//!
//! A rendered script never travels in argv. bash is started with a fixed bootstrap that
//! moves its stdin (the script) to fd 4 and sources `/dev/fd/4`. `source` reads the whole
//! text before it runs any of it, so no child can read script bytes from stdin, and the
//! values bound in it live only in the shell's memory.
//!
//! Locally the bootstrap ([`local_bootstrap`]) also holds the wrapper's functions and sets
//! the EXIT trap, and reads the attempt's session line (the channel's descriptors) from
//! stdin before it sources the script; the nonce comes with the script. None of that
//! depends on the task, so a bash can be started and have parsed all of it before a task
//! exists: the executor keeps one ready ([`super::local`]), and a task then costs only its
//! own script.
//!
//! # Who can report
//! Every frame carries a per-attempt random nonce that exists only in the main shell's
//! memory (it arrives in the script text), so no program the script runs can forge one.
//! Besides:
//! - **Locally** the channel is a unix socket that the agent reads with `SO_PASSCRED`: only
//!   bytes sent by the bash process the agent spawned count ([`super::channel`]). It sits at
//!   two random descriptors in 64..=250, not at 3, so `exec 3>&1` and kin never touch it, and
//!   the trap writes only if both are still the same socket.
//! - **Over SSH** the channel is the session's stdout, and only a relay holds it: a `coproc`
//!   started before the script, whose pipes bash keeps from subshells and closes on exec. At
//!   the end the main shell reopens the relay's descriptor through `/proc/RELAY/fd/N` (after
//!   checking that its own coproc pipe still leads to that relay) and writes the frame
//!   itself; where that cannot work (no procfs, or a socket channel) it hands the frame to
//!   the relay, which copies it with `cat`.
//!
//! # The trap
//! The frame is written by the EXIT trap (so an early `exit 0` still reports) or, when the
//! script runs to its end, by an epilogue (so a script that replaced the EXIT trap behind the
//! wrapper's back still reports). Neither depends on the script's shell state: the frame is
//! NUL-terminated, so no length is computed and the locale does not matter; every expansion
//! is quoted, so IFS does not matter; POSIX mode is switched on (by assignment, not a
//! command) so that special builtins win over functions, `builtin` is unset as a function,
//! `set -euxET`/`pipefail` are cleared (and restored afterwards), and the writing happens in a
//! fresh function call that inherits no DEBUG, RETURN or ERR trap. The script's own EXIT trap
//! is chained after the frame: a `trap` function stands in for the builtin.
//!
//! # Clean-up
//! Locally the executor kills what is left ([`super::reap`]). Over SSH the relay is also the
//! watchdog: at the deadline it sends the main process group SIGTERM, then SIGKILL after the
//! grace period; when the main shell ends it SIGKILLs the group, then every process of the
//! session and every process carrying the task's marker variable, and removes the private
//! temporary directory. It reports that with a last `end` frame.

use std::ffi::CStr;
use std::fmt::Write as _;
use std::time::Duration;

use zeroize::Zeroizing;

use super::frames::FrameReader;
use crate::template::single_quote;

/// The bash binary used locally. Remote hosts use `bash` from their PATH.
pub const LOCAL_BASH: &CStr = c"/bin/bash";

/// The fixed bootstrap given to `bash -c` locally: it contains no value and no nonce.
///
/// It reads the session line ([`local_session_line`]), defines the wrapper's functions,
/// sets the EXIT trap, says so with one byte `r` on the channel if the line asked for it,
/// then sources the rest of stdin: the head, the rendered script and the epilogue
/// ([`script_input`]). A bash whose stdin ends before any script (its agent is
/// gone) removes its empty temporary directory and exits.
pub fn local_bootstrap() -> &'static CStr {
    static TEXT: std::sync::LazyLock<std::ffi::CString> = std::sync::LazyLock::new(|| {
        let text = format!(
            "exec 4<&0 </dev/null\n\
             IFS=' ' builtin read -r -u 4 __csm_a __csm_b __csm_k || builtin exit 97\n\
             __csm_pid=$BASHPID __csm_go=\n\
             {LOCAL_PROLOGUE}{COMMON}\
             [[ $__csm_k == r ]] && builtin printf r >&\"$__csm_a\"\n\
             . /dev/fd/4\n\
             [[ $__csm_go ]] || rmdir -- \"$TMPDIR\" 2>/dev/null\n"
        );
        std::ffi::CString::new(text).expect("the bootstrap holds no NUL")
    });
    &TEXT
}

/// The first line a local bash reads: the two descriptors of its channel, and whether to
/// send `r` on the channel once it is ready for its script. Short on purpose: bash reads a
/// line from a pipe one byte per `read(2)`. The nonce arrives with the script
/// ([`script_input`]), which `source` reads in blocks.
pub fn local_session_line(session: &Session, ack: bool) -> Vec<u8> {
    let (a, b) = session.fds;
    let k = if ack { "r" } else { "-" };
    format!("{a} {b} {k}\n").into_bytes()
}

/// `$0` for the script. (bash names the sourced script `/dev/fd/4` in its own error
/// messages; locally the script's line N is line N + 1 there.)
pub const SCRIPT_NAME: &str = "csm-agent";
/// [`SCRIPT_NAME`] for `posix_spawn`.
pub const SCRIPT_NAME_C: &CStr = c"csm-agent";

/// The environment variable that tags every process of an attempt with its marker.
pub const MARKER_VAR: &str = "CSM_AGENT_TASK";

/// The lowest and highest descriptor the local channel may be placed at.
const CHANNEL_FDS: (i32, i32) = (64, 250);

/// Where the wrapped script will run.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// On this host: the channel socket is already at [`Session::local_fds`], and the
    /// executor sets `TMPDIR` and [`MARKER_VAR`].
    Local,
    /// Over an SSH channel, with a remote relay that sends SIGTERM to the group at
    /// `timeout`, then SIGKILL after `grace`, and cleans up when the script ends.
    Ssh {
        /// When the relay sends SIGTERM.
        timeout: Duration,
        /// How long it then waits before SIGKILL.
        grace: Duration,
    },
}

/// One attempt's identity: the nonce that authenticates its frames, the marker that tags
/// its processes, and the two descriptors of the local channel.
pub struct Session {
    nonce: String,
    marker: String,
    fds: (i32, i32),
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The nonce authenticates frames: it is never printed.
        f.debug_struct("Session")
            .field("marker", &self.marker)
            .field("fds", &self.fds)
            .finish_non_exhaustive()
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS random source failed");
    let mut s = String::with_capacity(bytes * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

impl Session {
    /// A fresh session: a 128-bit nonce, a 64-bit marker and two distinct channel fds
    /// (in 64..=250, or lower if the descriptor limit is).
    pub fn new() -> Session {
        let mut r = [0u8; 2];
        getrandom::fill(&mut r).expect("the OS random source failed");
        // Below the descriptor limit, or the spawn's dup2 would fail.
        let mut rl = nix::libc::rlimit {
            rlim_cur: 1024,
            rlim_max: 1024,
        };
        // SAFETY: a valid resource and a live rlimit to fill.
        unsafe { nix::libc::getrlimit(nix::libc::RLIMIT_NOFILE, &mut rl) };
        let limit = rl.rlim_cur.min(1024) as i32;
        let hi = CHANNEL_FDS.1.min(limit - 1).max(5);
        let lo = CHANNEL_FDS.0.min(hi - 1);
        let span = (hi - lo + 1) as u16;
        let a = lo + (u16::from_le_bytes(r) % span) as i32;
        // The second is the first's neighbour, wrapping within the range.
        let b = if a == hi { lo } else { a + 1 };
        Session {
            nonce: random_hex(16),
            marker: random_hex(8),
            fds: (a, b),
        }
    }

    /// The value of [`MARKER_VAR`] for this attempt's processes.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// The two descriptors the local channel socket must occupy in bash.
    pub fn local_fds(&self) -> (i32, i32) {
        self.fds
    }

    /// A parser for this session's frames, refusing secrets over `max_secret` bytes.
    /// `remote` expects the bootstrap's `pid` frame first.
    pub fn frame_reader(&self, max_secret: usize, remote: bool) -> FrameReader {
        FrameReader::new(&self.nonce, max_secret, remote)
    }
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

/// The remote command line for SSH mode. It is fixed text: no value, no path, no nonce.
///
/// sshd runs it in a new session through the login shell; `exec` makes our bash the session
/// and group leader. It reads the nonce (the first line of stdin), reports the group with it
/// before reading any script byte, and sources the rest of stdin.
pub fn remote_command() -> String {
    format!(
        "exec bash --noprofile --norc -c '\
         (( BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 404 )) || \
         {{ echo \"{SCRIPT_NAME}: the wrapper needs bash 4.4 or later, this host has $BASH_VERSION\" >&2; exit 98; }}; \
         IFS= builtin read -r n || exit 97; \
         builtin printf \"\\ncsm:%s pid %d\\n\" \"$n\" $$; exec 4<&0 </dev/null; . /dev/fd/4' \
         {SCRIPT_NAME}"
    )
}

/// The command the executor runs over a second channel to signal a remote attempt.
///
/// `TERM` signals the process group. `KILL` also kills every process of the session and
/// every process carrying the attempt's marker, and removes its temporary directory: it is
/// what the relay does at the end, for when the relay could not (the agent cancelled, or the
/// script killed the relay). The arguments are the group and the marker, neither secret.
pub fn remote_signal_command(pgid: i32, marker: &str, kill: bool) -> String {
    if !kill {
        return format!("kill -TERM -- -{pgid} 2>/dev/null");
    }
    // Only hex reaches the command line: the marker is ours, but check it all the same.
    let marker: String = marker.chars().filter(char::is_ascii_hexdigit).collect();
    format!(
        "exec bash --noprofile --norc -c '{SWEEP_FN} g=$1 m=$2 s=$1; \
         if read -r l <\"/proc/$g/stat\"; then l=${{l##*) }}; set -- $l; [[ $4 == \"$g\" ]] || s=-1; fi; \
         kill -KILL -- \"-$g\"; __csm_sweep \"$g\" \"$s\" \"$m\"; \
         for b in \"${{XDG_RUNTIME_DIR-}}\" /dev/shm \"${{TMPDIR-}}\" /tmp; do \
         [[ $b == /* && -O $b/csm.$m ]] && rm -rf -- \"$b/csm.$m\"; done' {SCRIPT_NAME} {pgid} {marker} 2>/dev/null"
    )
}

/// The text written to bash's stdin for a task: over SSH the nonce line, the prologue, the
/// rendered script and the epilogue; locally (after the [`local_session_line`] the bash
/// read when it started) a one-line head with the nonce, the rendered script and the
/// epilogue.
///
/// Returned in a zeroising buffer because it contains the rendered script, and with it the
/// bound values.
pub fn script_input(
    session: &Session,
    mode: Mode,
    command_path: &str,
    rendered: &[u8],
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(
        COMMON.len() + SSH_PROLOGUE.len() + RELAY.len() + rendered.len() + 512,
    ));
    let mut head = String::new();
    match mode {
        Mode::Local => {
            let _ = write!(head, "exec 4<&-; __csm_go=1 __csm_n={} ", session.nonce);
        }
        Mode::Ssh { timeout, grace } => {
            let _ = write!(
                head,
                "{}\nexec 4<&-\n__csm_n={} __csm_m={} __csm_t={} __csm_g={} __csm_pid=$BASHPID\n",
                session.nonce,
                session.nonce,
                session.marker,
                timeout.as_micros(),
                secs(grace)
            );
        }
    }
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(b"__csm_dir=");
    single_quote(command_path.as_bytes(), &mut out);
    match mode {
        // The functions and the trap are in the bootstrap already. One line, so that the
        // script's line N is line N + 1 in bash's messages.
        Mode::Local => {
            out.extend_from_slice(b"; ");
            out.extend_from_slice(LOCAL_CD.as_bytes());
        }
        Mode::Ssh { .. } => {
            out.push(b'\n');
            out.extend_from_slice(RELAY.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(SWEEP_FN.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(SSH_PROLOGUE.as_bytes());
            out.extend_from_slice(COMMON.as_bytes());
        }
    }
    out.extend_from_slice(rendered);
    // Two newlines: the first ends a last line without one, the second ends a line
    // continuation (`\`) the script may finish with. If the script ends inside a
    // here-document or a quote, the epilogue is swallowed and the EXIT trap reports.
    out.extend_from_slice(b"\n\n__csm_end \"$?\"\n");
    out
}

fn secs(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// Local mode, per task: into `commandPath`, or report that it cannot. (bash's own message,
/// if any, goes to the script's stderr: the executor checked the directory just before,
/// and silencing it would cost a dozen system calls per task.)
const LOCAL_CD: &str = r#"cd -- "$__csm_dir" || { builtin printf '\0csm:%s cd\0' "$__csm_n" >&"$__csm_a"; builtin exit 1; }
"#;

/// Local mode, in the bootstrap: the channel is the socket at fds `__csm_a` and `__csm_b`.
const LOCAL_PROLOGUE: &str = r#"__csm_write() {
  # Only while both copies are still the one socket: a script that moved its descriptors
  # (`exec 77>/tmp/x`) must not receive the secret.
  if [[ -S /dev/fd/$__csm_a && /dev/fd/$__csm_a -ef /dev/fd/$__csm_b ]]; then
    __csm_frame "$1" >&"$__csm_a"
    exec {__csm_a}>&- {__csm_b}>&-
  fi
}
"#;

/// The relay (SSH mode), started as a coproc in its own process group before the script.
/// Its stdin is a pipe only the main shell holds: EOF means the main shell is gone.
const RELAY: &str = r#"__csm_relay() {
  builtin trap '' TERM INT HUP QUIT PIPE
  # A second read end of the pipe to the main shell, which nobody writes to after `r`:
  # `read -t` on it sleeps.
  local l s z= f= pg=$$ sid=-1
  exec 2>/dev/null {z}<"/proc/$BASHPID/fd/1" || z=
  # The main shell's group, and its session if it leads one (sshd makes it do so); a
  # session it does not lead is someone else's and never swept. Read through a descriptor
  # of its own: a redirection of fd 0 would take the pipe away from /proc/RELAY/fd/0 for a
  # moment, and the main shell may be checking it.
  if exec {f}<"/proc/$$/stat" && read -r -u "$f" l; then l=${l##*) }; set -- $l; [[ $4 == "$$" ]] && sid=$$; fi
  [[ $f ]] && exec {f}<&-
  # Ready, once fd 0 is settled for good: the main shell waits for this line before it can
  # check /proc/RELAY/fd/0.
  builtin printf 'r\n'
  # Until the main shell is gone (EOF), hands over a frame (`F`), or the deadline passes;
  # anything else the script writes to this pipe is ignored.
  local now end=$(( ${EPOCHREALTIME//[!0-9]/} + __csm_t ))
  while :; do
    now=${EPOCHREALTIME//[!0-9]/}
    if (( now >= end )); then s=142; break; fi
    printf -v l '%d.%06d' $(( (end - now) / 1000000 )) $(( (end - now) % 1000000 ))
    IFS= read -r -t "$l" l; s=$?
    (( s == 0 )) && [[ $l != F ]] || break
  done
  # EOF while the main shell lives: it `exec`ed another program, which cannot report but may
  # run on, as it always could, until it ends or the deadline.
  # The usual case is a main shell in the middle of exiting: look again after 1 ms, then
  # back off to 50 ms.
  local wu=1000
  while (( s == 1 )) && kill -0 "$$"; do
    # A zombie has ended (sshd has yet to reap it): no need to wait for that.
    f=
    if exec {f}<"/proc/$$/stat" && read -r -u "$f" l; then
      exec {f}<&-; l=${l##*) }; [[ ${l%% *} == Z ]] && break
    elif [[ $f ]]; then exec {f}<&-; fi
    now=${EPOCHREALTIME//[!0-9]/}
    if (( now >= end )); then s=142; break; fi
    printf -v l '0.%06d' "$wu"
    if [[ $z ]]; then read -r -t "$l" -u "$z" l; else sleep "$l"; fi
    (( wu = wu * 2 > 50000 ? 50000 : wu * 2 ))
  done
  if (( s > 128 )); then
    kill -TERM -- "-$pg"
    IFS= read -r -t "$__csm_g" l
  elif [[ $l == F ]]; then
    cat >&"$__csm_ch"
  fi
  kill -KILL -- "-$pg"
  (( s > 128 )) && __csm_sweep "$pg" "$sid" "$__csm_m"
  builtin printf '\0csm:%s end\0' "$__csm_n" >&"$__csm_ch"
  exec {__csm_ch}>&-
  (( s > 128 )) || __csm_sweep "$pg" "$sid" "$__csm_m"
  rm -rf -- "$__csm_tmp"
}"#;

/// SIGKILL every live process of this user in session `$2` or group `$1`, or carrying the
/// marker `$3`, except this one; repeated while it finds any (a kill can orphan others).
/// A no-op without procfs.
const SWEEP_FN: &str = r#"__csm_sweep() { [[ -r /proc/self/stat ]] || return 0; local p l v e pg=$1 sid=$2 m="CSM_AGENT_TASK=$3" hit=1 n=0; while (( hit && n++ < 10 )); do hit=0; for p in /proc/[1-9]*; do [[ -O $p && ${p#/proc/} != "$BASHPID" ]] || continue; read -r l <"$p/stat" || continue; l=${l##*) }; set -- $l; [[ $1 == [ZX] ]] && continue; if [[ $3 == "$pg" || $4 == "$sid" ]]; then kill -KILL "${p#/proc/}"; hit=1; continue; fi; mapfile -d "" -t e <"$p/environ" || continue; for v in "${e[@]}"; do if [[ $v == "$m" ]]; then kill -KILL "${p#/proc/}"; hit=1; break; fi; done; done 2>/dev/null; done; };"#;

/// SSH mode, after the relay's functions: `commandPath`, the private temporary directory,
/// the relay, and the script's stdout moved to the log stream.
const SSH_PROLOGUE: &str = r#"cd -- "$__csm_dir" 2>/dev/null || { builtin printf '\0csm:%s cd\0' "$__csm_n"; builtin exit 1; }
__csm_tmp=
for __csm_b in "${XDG_RUNTIME_DIR-}" /dev/shm "${TMPDIR-}" /tmp; do
  if [[ $__csm_b == /* && -d $__csm_b && -w $__csm_b ]] && mkdir -m 700 -- "$__csm_b/csm.$__csm_m" 2>/dev/null; then
    __csm_tmp=$__csm_b/csm.$__csm_m; break
  fi
done
[[ $__csm_tmp ]] || { builtin printf '\0csm:%s tmp\0' "$__csm_n"; builtin exit 1; }
export TMPDIR=$__csm_tmp CSM_AGENT_TASK=$__csm_m
exec {__csm_ch}>&1
set -m; coproc __csm_r { __csm_relay; }; set +m
__csm_rp=$__csm_r_PID __csm_w=${__csm_r[1]} __csm_o=${__csm_r[0]}
builtin disown "$__csm_rp" 2>/dev/null
IFS= builtin read -r __csm_l <&"$__csm_o"
exec {__csm_ch}>&- {__csm_o}<&- 1>&2
__csm_write() {
  # Straight to the relay's copy of the channel, once the coproc pipe is shown to lead to
  # the relay; without procfs (or with a socket channel), through the relay.
  if [[ ! -p /dev/fd/$__csm_w ]]; then return 0; fi
  if [[ -d /proc/self/fd ]]; then
    [[ /dev/fd/$__csm_w -ef /proc/$__csm_rp/fd/0 ]] || return 0
    if [[ -p /proc/$__csm_rp/fd/$__csm_ch ]]; then
      __csm_frame "$1" >|"/proc/$__csm_rp/fd/$__csm_ch"
      return 0
    fi
  fi
  { builtin printf 'F\n'; __csm_frame "$1"; } >&"$__csm_w"
}
"#;

/// Shared by both modes: the frame, the guarded reporter, the EXIT trap, the epilogue, and
/// the `trap` function that keeps the script's EXIT trap behind ours.
const COMMON: &str = r#"unset secret
__csm_ut= __csm_sent=
__csm_rcf() { return "$1"; }
__csm_frame() {
  if [[ ${secret+x} ]]; then
    builtin printf '\0csm:%s done %s\0%s\0' "$__csm_n" "$1" "$secret"
  else
    builtin printf '\0csm:%s unset %s\0' "$__csm_n" "$1"
  fi
}
__csm_report() {
  # Runs in whatever state the script left. Nothing here is a command the script can have
  # shadowed until POSIX mode makes special builtins win over functions.
  if [[ -z ${__csm_sent-} ]]; then
    __csm_sent=1
    if [[ -o posix || -v POSIXLY_CORRECT ]]; then __csm_px=
    elif [[ ! -o nounset && ${POSIXLY_CORRECT@a} == *r* ]]; then __csm_px=
    else POSIXLY_CORRECT=y; __csm_px=1
    fi
    unset -f builtin
    __csm_f=$-
    if [[ -o pipefail ]]; then __csm_pf=1; else __csm_pf=; fi
    set +euxET +o pipefail
    __csm_write "$1"
    if [[ $__csm_pf ]]; then set -o pipefail; fi
    if [[ $__csm_f == *E* ]]; then set -E; fi
    if [[ $__csm_f == *T* ]]; then set -T; fi
    if [[ $__csm_f == *u* ]]; then set -u; fi
    if [[ $__csm_f == *e* ]]; then set -e; fi
    if [[ $__csm_px ]]; then unset POSIXLY_CORRECT; fi
    if [[ $__csm_f == *x* ]]; then set -x; fi
  fi
}
__csm_exit() {
  __csm_report "$1"
  if [[ -n ${__csm_ut-} ]]; then __csm_rcf "$1"; eval "$__csm_ut"; fi
}
__csm_end() {
  __csm_report "$1"
  __csm_rcf "$1"
}
trap() {
  # Only the main shell's EXIT trap is ours; subshells keep the builtin.
  if [[ $BASHPID != "${__csm_pid-}" || ${1-} == -?* && ${1-} != -- ]]; then builtin trap "$@"; return; fi
  if [[ ${1-} == -- ]]; then shift; fi
  if (( $# == 0 )); then builtin trap; return; fi
  if (( $# == 1 )); then __csm_th=-; else __csm_th=$1; shift; fi
  # Restoring a saved `trap -p EXIT` hands back our own handler: that means "none".
  if [[ $__csm_th == '__csm_exit "$?"' ]]; then __csm_th=-; fi
  __csm_ts=()
  for __csm_s; do
    case $__csm_s in
      EXIT|exit|SIGEXIT|sigexit|0) if [[ $__csm_th == - ]]; then __csm_ut=; else __csm_ut=$__csm_th; fi ;;
      *) __csm_ts+=("$__csm_s") ;;
    esac
  done
  if (( ${#__csm_ts[@]} )); then builtin trap -- "$__csm_th" "${__csm_ts[@]}"; fi
}
builtin trap '__csm_exit "$?"' EXIT
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips_through_bash() {
        let v = b"it's a \"$(x)\" `y` \\ \n end";
        let mut q = Vec::new();
        single_quote(v, &mut q);
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
    fn sessions_differ_and_place_the_channel_high() {
        let (a, b) = (Session::new(), Session::new());
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.marker, b.marker);
        for s in [&a, &b] {
            let (x, y) = s.local_fds();
            assert_ne!(x, y);
            for fd in [x, y] {
                assert!((64..=250).contains(&fd), "{fd}");
            }
            assert!(!format!("{s:?}").contains(&s.nonce));
        }
    }

    #[test]
    fn the_remote_command_and_signal_commands_hold_no_nonce() {
        let s = Session::new();
        for cmd in [
            remote_command(),
            remote_signal_command(42, s.marker(), true),
            remote_signal_command(42, s.marker(), false),
        ] {
            assert!(!cmd.contains(&s.nonce));
            assert!(!cmd.contains('\n'), "one line for any login shell: {cmd}");
        }
        let input = script_input(
            &s,
            Mode::Ssh {
                timeout: Duration::from_secs(1),
                grace: Duration::from_secs(1),
            },
            "/tmp",
            b"secret=x",
        );
        assert!(input.starts_with(format!("{}\n", s.nonce).as_bytes()));
    }
}
