//! What every csm-agent process does to itself before anything else: it makes itself
//! non-dumpable.
//!
//! The scripts the agent runs have the agent's uid. A dumpable agent would let any of them
//! read its memory (`/proc/<agent>/mem`, `ptrace`), and with it the values of every other
//! task in flight and the agent's token, and its initial environment
//! (`/proc/<agent>/environ`, where a sidecar's `CSM_TOKEN` sits). With `PR_SET_DUMPABLE` at
//! 0 the kernel refuses all of that to any process without `CAP_SYS_PTRACE`, and writes no
//! core dump of the process. `execve` makes each child dumpable again, so bash and the
//! scripts behave as before; it is only the agent, the manager and `test-run` that are
//! closed.

use std::io;

/// Make this process non-dumpable. Fails only if the kernel refuses `prctl`, which Linux
/// does not for this option; the caller then stops rather than run unprotected.
pub fn not_dumpable() -> io::Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(io::Error::from)
}
