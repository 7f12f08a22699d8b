//! Tests of the sshd test fixture itself (tests/support/sshd/), driven by the system
//! OpenSSH client: if these fail, every SSH test built on the fixture is suspect.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use support::sshd::{HostKeyKind, KeyKind, Sshd, SshdOptions, KEY_PASSPHRASE};

const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `done` until it holds or `DEADLINE` passes; for conditions with no event to
/// wait on (a process vanishing).
fn poll_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output, sshd: &Sshd) {
    assert!(
        out.status.success(),
        "ssh failed ({}): stdout {:?}, stderr {:?}\n--- sshd log ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        sshd.server_log()
    );
}

/// `ssh-keyscan` of the running server, one "[127.0.0.1]:PORT TYPE BASE64" line.
fn keyscan(sshd: &Sshd, key_type: &str) -> String {
    let out = Command::new("/usr/bin/ssh-keyscan")
        .args(["-T", "20", "-t", key_type, "-p", &sshd.port().to_string()])
        .arg(sshd.host())
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keyscan");
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap_or_else(|| panic!("no {key_type} key scanned: {}", text(&out.stderr)));
    line.to_string()
}

/// `SHA256:...` of a known_hosts-style line, via ssh-keygen.
fn fingerprint_of_line(line: &str, dir: &Path) -> String {
    let file = dir.join("scanned");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let out = Command::new("/usr/bin/ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(&file)
        .output()
        .expect("run ssh-keygen -l");
    text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint in ssh-keygen -l output")
        .to_string()
}

/// Starts a remote `sleep` whose command line carries a marker unique to this fixture
/// (other test processes run the same tests against the same machine), and returns
/// once the remote side has started it (it echoes a line first).
fn start_remote_sleep(sshd: &Sshd, label: &str) -> (Child, String) {
    let marker = format!("csm-fixture-{label}-{}", sshd.port());
    let mut child = sshd
        .ssh_command(sshd.client_key(KeyKind::Ed25519), sshd.known_hosts_path())
        .arg(format!("echo started; exec -a {marker} sleep 120"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssh");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n", "{}", sshd.server_log());
    (child, marker)
}

/// Whether a process with `marker` in its command line runs on the server.
fn remote_process_exists(sshd: &Sshd, marker: &str) -> bool {
    // The bracket keeps pgrep from matching the shell that runs this very command.
    let (head, last) = marker.split_at(marker.len() - 1);
    let out = sshd.run_as_user(&format!("pgrep -f '{head}[{last}]'"));
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "{out:?}"
    );
    out.status.success()
}

#[test]
fn every_authorized_key_kind_logs_in() {
    let sshd = Sshd::start();
    for kind in KeyKind::ALL {
        let out = sshd
            .ssh_command(sshd.client_key(kind), sshd.known_hosts_path())
            .arg("echo ok; id -un")
            .output()
            .unwrap();
        assert_ok(&out, &sshd);
        assert_eq!(
            text(&out.stdout),
            format!("ok\n{}\n", sshd.user()),
            "{kind:?}"
        );
    }
    let log = sshd.server_log();
    let accepted = format!("Accepted publickey for {}", sshd.user());
    assert_eq!(log.matches(&accepted).count(), KeyKind::ALL.len(), "{log}");
}

#[test]
fn key_files_have_the_promised_formats() {
    let sshd = Sshd::start();
    let pem = sshd.client_key(KeyKind::RsaPem);
    assert!(pem
        .private_pem
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    for kind in [KeyKind::Ed25519, KeyKind::Rsa, KeyKind::Ecdsa] {
        let key = sshd.client_key(kind);
        assert!(key
            .private_pem
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(key.passphrase.is_none());
    }
    assert!(sshd.client_key(KeyKind::Rsa).public.starts_with("ssh-rsa "));
    assert!(sshd
        .client_key(KeyKind::Ecdsa)
        .public
        .starts_with("ecdsa-sha2-nistp256 "));

    // The encrypted key opens with its passphrase only.
    let enc = sshd.client_key(KeyKind::Ed25519Encrypted);
    assert_eq!(enc.passphrase.as_deref(), Some(KEY_PASSPHRASE));
    let derive = |pass: &str| {
        Command::new("/usr/bin/ssh-keygen")
            .args(["-y", "-P", pass, "-f"])
            .arg(&enc.path)
            .output()
            .unwrap()
    };
    let out = derive(KEY_PASSPHRASE);
    assert!(out.status.success(), "{out:?}");
    let derived = text(&out.stdout);
    assert!(
        enc.public.starts_with(derived.trim()),
        "{derived} vs {}",
        enc.public
    );
    assert!(!derive("wrong").status.success());
    assert!(!derive("").status.success());
}

#[test]
fn unauthorized_key_is_refused() {
    let sshd = Sshd::start();
    let out = sshd
        .ssh_command(sshd.wrong_key(), sshd.known_hosts_path())
        .arg("true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Permission denied"), "{out:?}");
}

#[test]
fn password_login() {
    let sshd = Sshd::start();
    if !sshd.supports_password() {
        support::skip::skip(
            "password_login",
            "password logins need the tests to run as root",
        );
        return;
    }
    let out = sshd
        .ssh_password_command(sshd.password(), sshd.known_hosts_path())
        .arg("id -un")
        .output()
        .unwrap();
    assert_ok(&out, &sshd);
    assert_eq!(text(&out.stdout), format!("{}\n", sshd.user()));
    assert!(sshd.server_log().contains("Accepted password for"));

    let out = sshd
        .ssh_password_command("not-the-password", sshd.known_hosts_path())
        .arg("true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Permission denied"), "{out:?}");
}

#[test]
fn strict_host_key_checking_uses_the_known_hosts_files() {
    let sshd = Sshd::start();
    let key = sshd.client_key(KeyKind::Ed25519);
    let out = sshd
        .ssh_command(key, sshd.known_hosts_path())
        .arg("true")
        .output()
        .unwrap();
    assert_ok(&out, &sshd);

    let out = sshd
        .ssh_command(key, sshd.other_host_key_known_hosts())
        .arg("true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{out:?}"
    );

    let empty = sshd.dir().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let out = sshd.ssh_command(key, &empty).arg("true").output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Host key verification failed"),
        "{out:?}"
    );
}

#[test]
fn fingerprint_and_known_hosts_line_match_the_served_key() {
    let sshd = Sshd::start();
    let scanned = keyscan(&sshd, "ed25519");
    assert_eq!(scanned, sshd.known_hosts_line());
    let fingerprint = sshd.host_key_fingerprint();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    assert_eq!(fingerprint_of_line(&scanned, sshd.dir()), fingerprint);
    assert_eq!(
        std::fs::read_to_string(sshd.known_hosts_path()).unwrap(),
        format!("{scanned}\n")
    );
    // Only ed25519 is served by default, so no client can be offered another key.
    assert_eq!(sshd.host_key_fingerprint_of(HostKeyKind::Rsa), None);
}

#[test]
fn several_host_key_kinds_can_be_served() {
    let sshd = Sshd::start_with(SshdOptions {
        host_keys: vec![HostKeyKind::Ed25519, HostKeyKind::Ecdsa, HostKeyKind::Rsa],
        ..SshdOptions::default()
    });
    let known = std::fs::read_to_string(sshd.known_hosts_path()).unwrap();
    assert_eq!(known.lines().count(), 3);
    for (kind, key_type) in [
        (HostKeyKind::Ed25519, "ed25519"),
        (HostKeyKind::Ecdsa, "ecdsa"),
        (HostKeyKind::Rsa, "rsa"),
    ] {
        let scanned = keyscan(&sshd, key_type);
        assert!(
            known.lines().any(|l| l == scanned),
            "{scanned} not in {known}"
        );
        assert_eq!(
            Some(fingerprint_of_line(&scanned, sshd.dir())),
            sshd.host_key_fingerprint_of(kind)
        );
    }
    let other = std::fs::read_to_string(sshd.other_host_key_known_hosts()).unwrap();
    assert_eq!(other.lines().count(), 3);
    assert!(other.lines().all(|l| !known.contains(l)));
}

#[test]
fn restart_keeps_port_and_keys_and_drops_connections() {
    let mut sshd = Sshd::start();
    let (port, pid) = (sshd.port(), sshd.pid().unwrap());
    let (mut session, marker) = start_remote_sleep(&sshd, "restart");

    sshd.restart();
    assert_eq!(sshd.port(), port);
    assert_ne!(sshd.pid().unwrap(), pid);
    // The established session died with the old server...
    assert!(
        poll_until(|| session.try_wait().unwrap().is_some()),
        "ssh session survived the restart"
    );
    assert!(!remote_process_exists(&sshd, &marker));
    // ...and the new one accepts the same client key under strict host key checking.
    let out = sshd.run_as_user("echo again");
    assert_ok(&out, &sshd);
    assert_eq!(text(&out.stdout), "again\n");
    assert_eq!(sshd.server_log().matches("Server listening on").count(), 2);
}

#[test]
fn kill_connections_keeps_the_listener() {
    let sshd = Sshd::start();
    let pid = sshd.pid().unwrap();
    let (mut session, marker) = start_remote_sleep(&sshd, "kill");
    assert!(remote_process_exists(&sshd, &marker));

    assert!(sshd.kill_connections() > 0);
    assert!(
        poll_until(|| session.try_wait().unwrap().is_some()),
        "ssh session survived kill_connections"
    );
    assert_eq!(sshd.pid(), Some(pid));
    assert!(!remote_process_exists(&sshd, &marker));
}

#[test]
fn stop_then_restart() {
    let mut sshd = Sshd::start();
    let port = sshd.port();
    sshd.stop();
    assert!(!sshd.is_running());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    sshd.stop();
    sshd.restart();
    assert!(sshd.is_running());
    assert_ok(&sshd.run_as_user("true"), &sshd);
}

#[test]
fn parallel_fixtures_are_independent() {
    let ports: Vec<u16> = thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let sshd = Sshd::start();
                    let out = sshd.run_as_user("echo hi");
                    assert_ok(&out, &sshd);
                    sshd.port()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
}

#[test]
fn drop_kills_sshd_and_removes_its_dir() {
    let sshd = Sshd::start();
    let pid = Pid::from_raw(sshd.pid().unwrap() as i32);
    let (port, dir) = (sshd.port(), sshd.dir().to_path_buf());
    let (mut session, _) = start_remote_sleep(&sshd, "drop");
    assert!(kill(pid, None).is_ok());

    drop(sshd);
    // The session's processes went down with sshd, so the client sees its connection end.
    assert!(poll_until(|| session.try_wait().unwrap().is_some()));
    assert!(
        poll_until(|| kill(pid, None) == Err(Errno::ESRCH)),
        "sshd pid {pid} still exists"
    );
    assert!(!dir.exists());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn extra_config_overrides_the_defaults() {
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec!["PubkeyAuthentication no".into()],
        ..SshdOptions::default()
    });
    let out = sshd.run_as_user("true");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Permission denied"), "{out:?}");
}

#[test]
fn match_blocks_go_last() {
    let sshd = Sshd::start_with(SshdOptions {
        max_sessions: 3,
        extra_config: vec!["Match User *".into(), "    ForceCommand echo forced".into()],
        ..SshdOptions::default()
    });
    let out = sshd.run_as_user("echo not forced");
    assert_ok(&out, &sshd);
    assert_eq!(text(&out.stdout), "forced\n");
}

#[test]
fn startup_is_quick() {
    // The first start in a process also loads (or generates) keys and sets up the user.
    let t = Instant::now();
    drop(Sshd::start());
    eprintln!(
        "first sshd fixture start in this process took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let sshd = Sshd::start();
    let elapsed = t.elapsed();
    eprintln!("sshd fixture start took {elapsed:?} (port {})", sshd.port());
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn a_failed_start_panics_with_the_config_and_log() {
    let result = std::panic::catch_unwind(|| {
        Sshd::start_with(SshdOptions {
            extra_config: vec!["NoSuchKeyword yes".into()],
            ..SshdOptions::default()
        })
    });
    let payload = result
        .err()
        .expect("sshd should not start with a bad config");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("could not start /usr/sbin/sshd"),
        "{message}"
    );
    assert!(message.contains("NoSuchKeyword yes"), "{message}");
    assert!(message.contains("Bad configuration option"), "{message}");
}

/// The project's own client library must accept the fixture as the OpenSSH client does.
#[test]
fn libssh2_client_accepts_the_fixture() {
    use base64::Engine as _;
    use ssh2::{HashType, HostKeyType, KnownHostFileKind, Session};
    use std::io::Read as _;

    let sshd = Sshd::start();
    let connect = || {
        let tcp = TcpStream::connect((sshd.host(), sshd.port())).unwrap();
        let mut session = Session::new().unwrap();
        session.set_timeout(20_000);
        session.set_tcp_stream(tcp);
        session.handshake().unwrap();
        session
    };
    let run = |session: &Session| {
        let mut channel = session.channel_session().unwrap();
        channel.exec("id -un").unwrap();
        let mut out = String::new();
        channel.read_to_string(&mut out).unwrap();
        channel.wait_close().unwrap();
        out
    };

    let session = connect();
    let (key, key_type) = session.host_key().unwrap();
    assert!(matches!(key_type, HostKeyType::Ed25519));
    let hash = session.host_key_hash(HashType::Sha256).unwrap();
    let fingerprint = format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash)
    );
    assert_eq!(fingerprint, sshd.host_key_fingerprint());
    for (file, should_match) in [
        (sshd.known_hosts_path(), true),
        (sshd.other_host_key_known_hosts(), false),
    ] {
        let mut known = session.known_hosts().unwrap();
        known.read_file(file, KnownHostFileKind::OpenSSH).unwrap();
        let found = known.check_port(sshd.host(), sshd.port(), key);
        let expected = if should_match { "Match" } else { "Mismatch" };
        assert_eq!(format!("{found:?}"), expected, "{file:?}");
    }

    for kind in KeyKind::ALL {
        let key = sshd.client_key(kind);
        let pass = key.passphrase.as_deref();
        let session = connect();
        session
            .userauth_pubkey_file(sshd.user(), None, &key.path, pass)
            .unwrap_or_else(|e| panic!("{kind:?} from file: {e}"));
        assert_eq!(run(&session), format!("{}\n", sshd.user()));
        let session = connect();
        session
            .userauth_pubkey_memory(sshd.user(), None, &key.private_pem, pass)
            .unwrap_or_else(|e| panic!("{kind:?} from memory: {e}"));
        assert!(session.authenticated(), "{kind:?}");
    }
    let session = connect();
    let wrong = sshd.wrong_key();
    assert!(session
        .userauth_pubkey_file(sshd.user(), None, &wrong.path, None)
        .is_err());

    if sshd.supports_password() {
        let session = connect();
        session
            .userauth_password(sshd.user(), sshd.password())
            .unwrap();
        assert_eq!(run(&session), format!("{}\n", sshd.user()));
    }
}
