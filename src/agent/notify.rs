//! A minimal sd_notify client: READY, WATCHDOG and STOPPING over systemd's datagram socket.
//!
//! systemd passes the socket in `NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace) and the watchdog period in `WATCHDOG_USEC` (for this process when
//! `WATCHDOG_PID` is unset or ours). Without them every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Send one notification (e.g. `READY=1`). Errors are ignored: notification is advisory.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let r = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        match std::os::unix::net::SocketAddr::from_abstract_name(name) {
            Ok(addr) => sock.send_to_addr(state.as_bytes(), &addr),
            Err(e) => Err(e),
        }
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = r {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// How often to send `WATCHDOG=1`: half the period systemd asked for, if it asked us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
