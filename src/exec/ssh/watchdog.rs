//! The backstop that bounds every libssh2 call, even one that never returns.
//!
//! Every wait between libssh2 calls is bounded ([`super::conn`]), but a call can loop
//! inside libssh2 for as long as the server keeps sending: a banner line without a newline,
//! a flood of packets during the key exchange, a channel that never runs dry. No deadline
//! or cancellation is seen until the call returns. So each attempt has a [`Watch`]: the
//! socket it is using, and a time by which that socket is shut down from outside
//! (`shutdown(2)` on a duplicate of the descriptor). A call inside libssh2 then reads EOF
//! or fails to write, and returns at once.
//!
//! One thread serves every watch in the process: it sleeps until the earliest armed time
//! and shuts those sockets down. Arming and disarming take a mutex and a condvar signal,
//! so a task on a warm connection pays a few microseconds for it.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// One attempt's watch: a socket and when to shut it down. Shared by the attempt's thread
/// (which attaches sockets and arms deadlines) and its async side (which reports a
/// cancellation). Dropping it forgets the socket.
#[derive(Debug)]
pub struct Watch {
    id: u64,
}

#[derive(Default)]
struct Entry {
    /// A duplicate of the socket, so that shutting it down can never hit a descriptor
    /// number that was closed and reused meanwhile.
    sock: Option<TcpStream>,
    /// When the current phase's time is up.
    deadline: Option<Instant>,
    /// How long the current phase's clean-up may use the socket after a cancellation.
    on_cancel: Duration,
    /// When the attempt was cancelled.
    cancelled_at: Option<Instant>,
    /// Whether this watch shut its socket down.
    fired: bool,
}

impl Entry {
    fn due(&self) -> Option<Instant> {
        self.sock.as_ref()?;
        let cancel = self.cancelled_at.map(|c| c + self.on_cancel);
        match (self.deadline, cancel) {
            (Some(d), Some(c)) => Some(d.min(c)),
            (d, c) => d.or(c),
        }
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    watches: HashMap<u64, Entry>,
    /// When the thread wakes next on its own (`None`: only when signalled). A change that
    /// makes nothing due earlier needs no signal.
    wakes_at: Option<Instant>,
}

struct Registry {
    state: Mutex<State>,
    changed: Condvar,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("csm-ssh-watchdog".into())
            .spawn(|| run(registry()));
        if let Err(e) = spawned {
            // Without it, waits stay bounded between libssh2 calls, but a call that loops
            // inside libssh2 is not; say so once.
            tracing::error!(error = %e, "cannot start the SSH watchdog thread");
        }
        Registry {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    })
}

fn lock(r: &Registry) -> MutexGuard<'_, State> {
    r.state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The watchdog thread: shut down every socket whose time is up, then sleep until the next.
fn run(r: &'static Registry) {
    let mut st = lock(r);
    loop {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for e in st.watches.values_mut() {
            let Some(due) = e.due() else { continue };
            if due <= now {
                if let Some(sock) = e.sock.take() {
                    let _ = sock.shutdown(Shutdown::Both);
                    e.fired = true;
                }
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        st.wakes_at = next;
        st = match next {
            None => r.changed.wait(st).unwrap_or_else(PoisonError::into_inner),
            Some(t) => {
                r.changed
                    .wait_timeout(st, t.saturating_duration_since(now))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
    }
}

impl Watch {
    /// A watch with no socket and no deadline.
    pub fn new() -> Watch {
        let r = registry();
        let mut st = lock(r);
        st.next_id += 1;
        let id = st.next_id;
        st.watches.insert(id, Entry::default());
        Watch { id }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Entry) -> T) -> T {
        let r = registry();
        let mut st = lock(r);
        let e = st.watches.entry(self.id).or_default();
        let out = f(e);
        let due = e.due();
        let earlier = due.is_some_and(|d| st.wakes_at.map_or(true, |w| d < w));
        drop(st);
        if earlier {
            r.changed.notify_one();
        }
        out
    }

    /// Watch `sock` from now on (instead of any socket watched before), with no deadline
    /// until [`Watch::arm`]. A socket that cannot be duplicated is not watched.
    pub fn attach(&self, sock: &TcpStream) {
        let dup = sock.try_clone().ok();
        self.with(|e| {
            e.sock = dup;
            e.deadline = None;
            e.fired = false;
        });
    }

    /// Shut the watched socket down at `deadline`, or `on_cancel` after a cancellation
    /// (the time this phase's clean-up, such as a remote kill, may use the connection),
    /// whichever comes first.
    pub fn arm(&self, deadline: Instant, on_cancel: Duration) {
        self.with(|e| {
            e.deadline = Some(deadline);
            e.on_cancel = on_cancel;
        });
    }

    /// The task was cancelled: the socket goes once the current phase's clean-up has had
    /// its time.
    pub fn cancel(&self) {
        let now = Instant::now();
        self.with(|e| {
            e.cancelled_at.get_or_insert(now);
        });
    }

    /// Stop watching the socket (it goes back to the pool, or is closed). Returns whether
    /// the watchdog had already shut it down.
    pub fn detach(&self) -> bool {
        self.with(|e| {
            e.sock = None;
            e.deadline = None;
            e.fired
        })
    }

    /// Whether the watchdog shut the watched socket down.
    pub fn fired(&self) -> bool {
        self.with(|e| e.fired)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        lock(registry()).watches.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    #[test]
    fn a_blocked_read_returns_at_the_deadline() {
        let (mut c, _s) = pair();
        let w = Watch::new();
        w.attach(&c);
        let t0 = Instant::now();
        w.arm(t0 + Duration::from_millis(100), Duration::ZERO);
        // Blocks until the watchdog shuts the socket down: then EOF.
        assert_eq!(c.read(&mut [0u8; 16]).unwrap(), 0);
        assert!(t0.elapsed() >= Duration::from_millis(100));
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(w.fired());
    }

    #[test]
    fn a_cancellation_ends_the_phase_after_its_clean_up_time() {
        let (mut c, _s) = pair();
        let w = Watch::new();
        w.attach(&c);
        w.arm(
            Instant::now() + Duration::from_secs(3600),
            Duration::from_millis(50),
        );
        w.cancel();
        let t0 = Instant::now();
        assert_eq!(c.read(&mut [0u8; 16]).unwrap(), 0);
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(w.detach());
    }

    #[test]
    fn a_detached_socket_is_left_alone() {
        let (c, mut s) = pair();
        let w = Watch::new();
        w.attach(&c);
        w.arm(Instant::now() + Duration::from_millis(20), Duration::ZERO);
        assert!(!w.detach());
        // Another watch's deadline passing wakes the thread; ours must not fire.
        let (c2, _s2) = pair();
        let w2 = Watch::new();
        w2.attach(&c2);
        w2.arm(Instant::now() + Duration::from_millis(50), Duration::ZERO);
        let mut c2r = c2.try_clone().unwrap();
        assert_eq!(c2r.read(&mut [0u8; 1]).unwrap(), 0);
        assert!(!w.fired());
        use std::io::Write;
        (&c).write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }
}
