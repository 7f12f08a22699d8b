//! Strict host-key checking over SSH against a real sshd: unknown and changed keys, the
//! bare-host rule for non-default ports, pinned fingerprints and lines, the insecure mode,
//! and trust that does not name a key type (hashed entries, `SHA256:` pins).

mod support;

use std::process::Command;

use csm_agent::exec::ssh::{HostKeyPolicy, SshError, SshExecutor};
use csm_agent::exec::ExecError;
use csm_agent::ErrorKind;
use support::ssh::*;
use support::sshd::*;

#[tokio::test]
async fn unknown_host_key_is_refused_with_its_fingerprint() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "known_hosts", b"");
    let policy = HostKeyPolicy::Strict {
        known_hosts: vec![empty],
        pinned: vec![],
    };
    let auth = inline_key(sshd.client_key(KeyKind::Ed25519));
    let o = run_once(
        &SshExecutor::new(pool(), target(&sshd, auth, policy)),
        &job("secret=x"),
    )
    .await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    assert_eq!(o.attempts, 1);
    let msg = err_of(&o).to_string();
    let want = format!(
        "host key for {} is not trusted ({})",
        addr(&sshd),
        sshd.host_key_fingerprint()
    );
    assert!(msg.contains(&want), "{msg}\nwanted: {want}");
    // Refused before authenticating: the server never accepted a login.
    assert_eq!(accepted_logins(&sshd), 0, "{}", sshd.server_log());
}

#[tokio::test]
async fn a_key_trusted_for_the_bare_host_is_not_trusted_on_another_port() {
    // OpenSSH's rule: `127.0.0.1 KEY` covers port 22 only. libssh2 alone would accept it
    // for any port.
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let line = sshd.known_hosts_line();
    let (_, key) = line.split_once(' ').unwrap();
    let bare = write(
        dir.path(),
        "known_hosts",
        format!("{} {key}\n", sshd.host()).as_bytes(),
    );
    let policy = HostKeyPolicy::Strict {
        known_hosts: vec![bare],
        pinned: vec![],
    };
    let auth = inline_key(sshd.client_key(KeyKind::Ed25519));
    let o = run_once(
        &SshExecutor::new(pool(), target(&sshd, auth, policy)),
        &job("secret=x"),
    )
    .await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    assert!(
        matches!(err_of(&o), ExecError::Ssh(SshError::HostKeyUnknown { .. })),
        "{}",
        err_of(&o)
    );
    assert_eq!(accepted_logins(&sshd), 0);
}

#[tokio::test]
async fn changed_host_key_is_refused_naming_both_fingerprints() {
    let sshd = Sshd::start();
    let other = fingerprints_in(sshd.other_host_key_known_hosts());
    assert_eq!(other.len(), 1);
    assert_ne!(other[0], sshd.host_key_fingerprint());
    let policy = HostKeyPolicy::Strict {
        known_hosts: vec![sshd.other_host_key_known_hosts().to_path_buf()],
        pinned: vec![],
    };
    let auth = inline_key(sshd.client_key(KeyKind::Ed25519));
    let o = run_once(
        &SshExecutor::new(pool(), target(&sshd, auth, policy)),
        &job("secret=x"),
    )
    .await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    assert!(matches!(
        err_of(&o),
        ExecError::Ssh(SshError::HostKeyChanged { .. })
    ));
    let msg = err_of(&o).to_string();
    assert!(msg.contains(&addr(&sshd)), "{msg}");
    assert!(msg.contains(&sshd.host_key_fingerprint()), "{msg}");
    assert!(msg.contains(&other[0]), "{msg}");
    assert_eq!(accepted_logins(&sshd), 0);
}

#[tokio::test]
async fn pinned_fingerprint_pinned_line_and_insecure_accept_any_all_connect() {
    let sshd = Sshd::start();
    let pool = pool();
    let policies = [
        HostKeyPolicy::Strict {
            known_hosts: vec![],
            pinned: vec![sshd.host_key_fingerprint()],
        },
        HostKeyPolicy::Strict {
            known_hosts: vec![],
            pinned: vec![sshd.known_hosts_line()],
        },
        HostKeyPolicy::InsecureAcceptAny,
    ];
    for policy in policies {
        let what = format!("{policy:?}");
        let auth = inline_key(sshd.client_key(KeyKind::Ed25519));
        let exec = SshExecutor::new(pool.clone(), target(&sshd, auth, policy));
        let o = run_once(&exec, &job("secret=trusted")).await;
        assert_eq!(secret_of(&o), b"trusted", "{what}");
    }
    // A pin that does not match is a changed key, not a silent pass.
    let wrong_pin = fingerprints_in(sshd.other_host_key_known_hosts()).remove(0);
    let policy = HostKeyPolicy::Strict {
        known_hosts: vec![],
        pinned: vec![wrong_pin.clone()],
    };
    let auth = inline_key(sshd.client_key(KeyKind::Ed25519));
    let o = run_once(
        &SshExecutor::new(pool.clone(), target(&sshd, auth, policy)),
        &job("secret=x"),
    )
    .await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    let msg = err_of(&o).to_string();
    assert!(
        msg.contains(&wrong_pin) && msg.contains(&sshd.host_key_fingerprint()),
        "{msg}"
    );
}

/// A server with ed25519, ECDSA and RSA host keys, as most are. Trust that does not name a
/// key type (a hashed known_hosts entry, as Debian's HashKnownHosts writes them, or a
/// `SHA256:` pin) must still find the one key it trusts, whichever type that is.
#[tokio::test]
async fn hashed_known_hosts_and_fingerprint_pins_find_a_key_of_any_type() {
    let kinds = [HostKeyKind::Ed25519, HostKeyKind::Ecdsa, HostKeyKind::Rsa];
    let sshd = Sshd::start_with(SshdOptions {
        host_keys: kinds.to_vec(),
        ..SshdOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let hashed = |name: &str, text: &str| {
        let f = write(dir.path(), name, text.as_bytes());
        let out = Command::new("/usr/bin/ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&f)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(std::fs::read_to_string(&f).unwrap().starts_with("|1|"));
        f
    };
    let pool = pool();
    let run = |policy: HostKeyPolicy| {
        let auth = inline_key(sshd.client_key(KeyKind::Ed25519));
        let exec = SshExecutor::new(pool.clone(), target(&sshd, auth, policy));
        async move { run_once(&exec, &job("secret=found-it")).await }
    };
    // The fixture's known_hosts lists one line per served key, in `kinds` order.
    let all = std::fs::read_to_string(sshd.known_hosts_path()).unwrap();
    for (i, kind) in kinds.into_iter().enumerate() {
        let line = all.lines().nth(i).unwrap();
        let file = hashed(&format!("kh-{i}"), &format!("{line}\n"));
        let o = run(HostKeyPolicy::Strict {
            known_hosts: vec![file],
            pinned: vec![],
        })
        .await;
        assert_eq!(secret_of(&o), b"found-it", "hashed {kind:?} entry");
        let fp = sshd.host_key_fingerprint_of(kind).unwrap();
        let o = run(HostKeyPolicy::Strict {
            known_hosts: vec![],
            pinned: vec![fp],
        })
        .await;
        assert_eq!(secret_of(&o), b"found-it", "pinned {kind:?} fingerprint");
    }

    // Still strict: a hashed entry with another key is a changed key, and so is a foreign pin.
    let other = std::fs::read_to_string(sshd.other_host_key_known_hosts()).unwrap();
    let ecdsa_other = other.lines().nth(1).unwrap();
    let file = hashed("kh-other", &format!("{ecdsa_other}\n"));
    let o = run(HostKeyPolicy::Strict {
        known_hosts: vec![file],
        pinned: vec![],
    })
    .await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    let msg = err_of(&o).to_string();
    assert!(
        msg.contains("has changed") && msg.contains(&addr(&sshd)) && msg.contains("hashed"),
        "{msg}"
    );
    let foreign = fingerprints_in(sshd.other_host_key_known_hosts()).remove(1);
    let o = run(HostKeyPolicy::Strict {
        known_hosts: vec![],
        pinned: vec![foreign.clone()],
    })
    .await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    let msg = err_of(&o).to_string();
    assert!(msg.contains(&foreign), "{msg}");
    assert_eq!(accepted_logins(&sshd), 6, "no login past a refused key");
}
