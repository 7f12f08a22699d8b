//! Hostile SSH servers, before any host key is checked: anyone on the network path can be
//! one. Each is a real TCP server on 127.0.0.1:0 driven by a thread of this test: an
//! endless banner line, a banner then silence, garbage after the banner, a banner sent one
//! byte per 100 ms, and a flood of packets during the key exchange. Every attempt must end
//! within its bound (the handshake bound, the task deadline, or at once on cancellation)
//! with `ssh_connect` or `cancelled`, and must not spin: where it waits, this process's CPU
//! time over the wait stays well below the wall time.
//!
//! The tests take a lock so that they run one at a time: the CPU figures are the whole
//! process's.

#![allow(clippy::await_holding_lock)]

mod support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use csm_agent::exec::ssh::{
    HostKeyPolicy, SshAuth, SshConfig, SshCredential, SshExecutor, SshPool, SshTarget,
};
use csm_agent::exec::{self, Outcome};
use csm_agent::ErrorKind;
use secrecy::SecretString;
use support::ssh::{err_of, job, job_with, kind_of, once};
use tokio_util::sync::CancellationToken;

/// What the server does with the connection it accepts.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// `A` without end, never a newline.
    EndlessBanner,
    /// A valid identification line, then nothing.
    BannerThenSilence,
    /// A valid identification line, then 64 KiB of 0xff, then nothing.
    GarbageAfterBanner,
    /// `A`, one byte per 100 ms, never a newline.
    Slowloris,
    /// A valid identification line, then, instead of a key exchange, packets of an
    /// unassigned message type (which libssh2 queues) as fast as they are read.
    PacketFlood,
}

const BANNER: &[u8] = b"SSH-2.0-hostile_test_server\r\n";

/// An unencrypted packet of message type 200 (unassigned) with an empty string: length 12,
/// padding length 6, the type, a zero string length, six bytes of padding (16 bytes in
/// all, a multiple of the 8-byte block).
const FLOOD_PACKET: [u8; 16] = [0, 0, 0, 12, 6, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// A hostile server; it stops (and closes the connection) when dropped.
struct Hostile {
    port: u16,
    /// Signalled once the server has sent `signal_at` bytes.
    reached: Receiver<()>,
    sent: Arc<AtomicU64>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Hostile {
    fn start(behaviour: Behaviour) -> Hostile {
        Hostile::start_signalling(behaviour, u64::MAX)
    }

    /// A server that signals [`Hostile::wait_sent`] once it has sent `signal_at` bytes.
    fn start_signalling(behaviour: Behaviour, signal_at: u64) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (reached_tx, reached_rx) = mpsc::channel();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let thread = std::thread::spawn(move || {
            let Ok((sock, _)) = listener.accept() else {
                return;
            };
            let progress = Progress {
                sent: &counter,
                signal_at,
                reached: Some(reached_tx),
            };
            serve(behaviour, sock, &stop_rx, progress);
        });
        Hostile {
            port,
            reached: reached_rx,
            sent,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Blocks until the server has sent the bytes it was started to signal at.
    fn wait_sent(&self) {
        self.reached
            .recv_timeout(Duration::from_secs(20))
            .expect("the server never sent that much");
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        drop(self.stop.take());
        // Unblock a listener that never got its client.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether the test has dropped the server.
fn stopped(stop: &Receiver<()>) -> bool {
    matches!(stop.try_recv(), Err(mpsc::TryRecvError::Disconnected))
}

/// Counts what the server sent, and signals once it passes a mark.
struct Progress<'a> {
    sent: &'a AtomicU64,
    signal_at: u64,
    reached: Option<Sender<()>>,
}

impl Progress<'_> {
    fn add(&mut self, n: usize) {
        let total = self.sent.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total >= self.signal_at {
            if let Some(tx) = self.reached.take() {
                let _ = tx.send(());
            }
        }
    }
}

fn serve(behaviour: Behaviour, mut sock: TcpStream, stop: &Receiver<()>, mut progress: Progress) {
    // Writes give up after a while so that the stop signal is seen even when the client
    // stops reading.
    let _ = sock.set_write_timeout(Some(Duration::from_millis(100)));
    let mut send = |data: &[u8]| -> bool {
        match sock.write(data) {
            Ok(n) => {
                progress.add(n);
                true
            }
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    };
    let hold = || {
        let _ = stop.recv();
    };
    // A bound of its own, in case a broken client never lets go.
    let end = Instant::now() + Duration::from_secs(60);
    match behaviour {
        Behaviour::EndlessBanner => {
            let chunk = [b'A'; 4096];
            while !stopped(stop) && Instant::now() < end && send(&chunk) {}
        }
        Behaviour::BannerThenSilence => {
            send(BANNER);
            hold();
        }
        Behaviour::GarbageAfterBanner => {
            send(BANNER);
            send(&[0xff; 65536]);
            hold();
        }
        Behaviour::Slowloris => {
            // Pacing, not synchronisation: the stop signal ends each pause early.
            while Instant::now() < end && send(b"A") {
                match stop.recv_timeout(Duration::from_millis(100)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
        }
        Behaviour::PacketFlood => {
            send(BANNER);
            let burst: Vec<u8> = FLOOD_PACKET
                .iter()
                .copied()
                .cycle()
                .take(64 << 10)
                .collect();
            while !stopped(stop) && Instant::now() < end && send(&burst) {}
        }
    }
}

/// One test at a time in this binary: the CPU figures are the whole process's. Each test
/// has its own runtime and holds the guard for its whole body, across awaits; that is the
/// point (hence `await_holding_lock` is allowed at the top of this file).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's user plus system CPU time.
fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<nix::libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let ru = unsafe {
        assert_eq!(
            nix::libc::getrusage(nix::libc::RUSAGE_SELF, ru.as_mut_ptr()),
            0
        );
        ru.assume_init()
    };
    let tv = |t: nix::libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn target(port: u16) -> SshTarget {
    SshTarget {
        host: "127.0.0.1".into(),
        port,
        // Never sent: every server here fails before authentication.
        credential: Arc::new(SshCredential::new(
            "nobody",
            SshAuth::Password(SecretString::from("unused".to_string())),
        )),
        host_keys: Arc::new(HostKeyPolicy::Strict {
            known_hosts: vec![],
            pinned: vec![],
        }),
    }
}

fn executor(port: u16, auth_timeout: Duration) -> SshExecutor {
    let pool = SshPool::new(SshConfig {
        connect_timeout: Duration::from_secs(5),
        auth_timeout,
        ..SshConfig::default()
    });
    SshExecutor::new(pool, target(port))
}

/// Runs one attempt; returns it with the wall and CPU time it took.
async fn timed(exec: &SshExecutor, j: &exec::Job) -> (Outcome, Duration, Duration) {
    let (t0, c0) = (Instant::now(), cpu_time());
    // A bound of the test's own, so that a regression fails instead of hanging.
    let o = tokio::time::timeout(
        Duration::from_secs(30),
        exec::run(exec, j, &once(), &CancellationToken::new()),
    )
    .await
    .expect("the attempt did not end within 30 s");
    (o, t0.elapsed(), cpu_time() - c0)
}

#[track_caller]
fn assert_connect_error(o: &Outcome, port: u16, what: &str) -> String {
    assert_eq!(kind_of(o), ErrorKind::SshConnect, "{}", err_of(o));
    assert_eq!(o.attempts, 1);
    let msg = err_of(o).to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains(what), "{msg}");
    msg
}

#[track_caller]
fn assert_not_spinning(wall: Duration, cpu: Duration) {
    assert!(
        cpu < wall / 4,
        "CPU {cpu:?} over a wait of {wall:?}: the client spins"
    );
}

#[tokio::test]
async fn an_endless_banner_line_is_refused_at_the_preamble_bound_without_spinning() {
    let _serial = serial();
    let server = Hostile::start(Behaviour::EndlessBanner);
    let exec = executor(server.port, Duration::from_secs(10));
    let (o, wall, cpu) = timed(&exec, &job("secret=x")).await;
    assert_connect_error(&o, server.port, "without an SSH identification line");
    assert!(wall < Duration::from_secs(3), "took {wall:?}");
    assert!(cpu < Duration::from_millis(500), "CPU {cpu:?}");
    // The refusal came after the preamble bound, not after reading without end.
    let sent = server.sent.load(Ordering::Relaxed);
    assert!(sent >= 8192, "only {sent} bytes sent");
}

#[tokio::test]
async fn a_banner_then_silence_hits_the_handshake_bound_without_spinning() {
    let _serial = serial();
    let server = Hostile::start(Behaviour::BannerThenSilence);
    let exec = executor(server.port, Duration::from_millis(1500));
    let (o, wall, cpu) = timed(&exec, &job("secret=x")).await;
    assert_connect_error(&o, server.port, "timed out");
    assert!(
        wall >= Duration::from_millis(1400) && wall < Duration::from_secs(4),
        "took {wall:?}"
    );
    assert_not_spinning(wall, cpu);
}

#[tokio::test]
async fn garbage_after_the_banner_fails_the_handshake_fast() {
    let _serial = serial();
    let server = Hostile::start(Behaviour::GarbageAfterBanner);
    let exec = executor(server.port, Duration::from_secs(10));
    let (o, wall, cpu) = timed(&exec, &job("secret=x")).await;
    assert_connect_error(&o, server.port, "handshake");
    assert!(wall < Duration::from_secs(3), "took {wall:?}");
    assert!(cpu < Duration::from_millis(500), "CPU {cpu:?}");
}

#[tokio::test]
async fn a_slowloris_banner_hits_the_handshake_bound_without_spinning() {
    let _serial = serial();
    let server = Hostile::start(Behaviour::Slowloris);
    let exec = executor(server.port, Duration::from_millis(1500));
    let (o, wall, cpu) = timed(&exec, &job("secret=x")).await;
    assert_connect_error(&o, server.port, "timed out");
    assert!(
        wall >= Duration::from_millis(1400) && wall < Duration::from_secs(4),
        "took {wall:?}"
    );
    assert_not_spinning(wall, cpu);
    assert!(
        server.sent.load(Ordering::Relaxed) >= 5,
        "the server barely sent"
    );
}

/// libssh2 either gives up on the key exchange or keeps reading, at times inside one call
/// (then only the watchdog ends it); either way the attempt ends within the bound. Three
/// rounds, since which of the two happens varies.
#[tokio::test]
async fn a_packet_flood_in_the_key_exchange_ends_within_the_handshake_bound() {
    let _serial = serial();
    for round in 0..3 {
        let server = Hostile::start(Behaviour::PacketFlood);
        let exec = executor(server.port, Duration::from_millis(1500));
        let (o, wall, _) = timed(&exec, &job("secret=x")).await;
        assert_connect_error(&o, server.port, "");
        assert!(
            wall < Duration::from_secs(4),
            "round {round}: took {wall:?}"
        );
        assert!(server.sent.load(Ordering::Relaxed) > 0);
    }
}

#[tokio::test]
async fn a_packet_flood_ends_within_the_task_deadline() {
    let _serial = serial();
    for round in 0..3 {
        let server = Hostile::start(Behaviour::PacketFlood);
        let exec = executor(server.port, Duration::from_secs(20));
        let j = job_with(
            "secret=x",
            csm_agent::secret::Variables::new(),
            "/tmp",
            Duration::from_millis(1000),
        );
        let (o, wall, _) = timed(&exec, &j).await;
        assert_connect_error(&o, server.port, "");
        assert!(
            wall < Duration::from_secs(3),
            "round {round}: took {wall:?}"
        );
    }
}

/// Cancel while the attempt is held by a hostile server, once the server has sent
/// `sent` bytes; the attempt must end at once.
async fn cancel_during(behaviour: Behaviour, sent: u64) {
    let server = Hostile::start_signalling(behaviour, sent);
    let exec = executor(server.port, Duration::from_secs(20));
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let task = tokio::spawn(async move { exec::run(&exec, &job("secret=x"), &once(), &c2).await });
    let s = tokio::task::spawn_blocking(move || {
        server.wait_sent();
        server
    })
    .await
    .unwrap();
    let t0 = Instant::now();
    cancel.cancel();
    let o = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the cancelled attempt did not end within 30 s")
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(
        kind_of(&o),
        ErrorKind::Cancelled,
        "{behaviour:?}: {}",
        err_of(&o)
    );
    assert_eq!(o.attempts, 1, "{behaviour:?}");
    assert!(
        took < Duration::from_secs(1),
        "{behaviour:?}: took {took:?}"
    );
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_during_a_packet_flood_is_prompt() {
    let _serial = serial();
    // The client is reading the flood, inside the key exchange.
    cancel_during(Behaviour::PacketFlood, 1 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_during_a_slowloris_banner_is_prompt() {
    let _serial = serial();
    cancel_during(Behaviour::Slowloris, 3).await;
}
