//! Strict host-key checking over SSH against a real sshd: unknown and changed keys, the
//! bare-host rule for non-default ports (plain and hashed), pinned fingerprints and lines,
//! the insecure mode, trust that does not name a key type (hashed entries, `SHA256:`
//! pins), and known_hosts as OpenSSH reads it: `@revoked`, `@cert-authority`, negated and
//! wildcard patterns, and a key-type mismatch. Hashed entries are made by `ssh-keygen -H`.

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
    // Our rule, for plain and hashed entries alike: `127.0.0.1 KEY` covers port 22 only.
    // OpenSSH 9.2 is looser: with no `[host]:port` entry at all it checks "without port
    // identifier" (docs/ssh-host-keys.md). libssh2 alone would accept it for any port.
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

/// A strict policy trusting only the known_hosts `text`, written to a file in `dir`.
fn known_hosts_text(dir: &std::path::Path, name: &str, text: &str) -> HostKeyPolicy {
    HostKeyPolicy::Strict {
        known_hosts: vec![write(dir, name, text.as_bytes())],
        pinned: vec![],
    }
}

/// `line`, with its host field hashed by `ssh-keygen -H`.
fn hashed_line(dir: &std::path::Path, line: &str) -> String {
    let f = write(dir, "to-hash", format!("{line}\n").as_bytes());
    let out = Command::new("/usr/bin/ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    text.trim().to_string()
}

/// One task against `sshd` under `policy`, with retries allowed: host-key failures must
/// not be retried.
async fn attempt(sshd: &Sshd, policy: HostKeyPolicy) -> csm_agent::exec::Outcome {
    let auth = inline_key(sshd.client_key(KeyKind::Ed25519));
    let retrying = csm_agent::exec::RetryPolicy {
        attempts: 3,
        delay: std::time::Duration::ZERO,
    };
    csm_agent::exec::run(
        &SshExecutor::new(pool(), target(sshd, auth, policy)),
        &job("secret=trusted"),
        &retrying,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
}

/// `[127.0.0.1]:PORT`, the name OpenSSH looks the fixture up under.
fn name(sshd: &Sshd) -> String {
    format!("[127.0.0.1]:{}", sshd.port())
}

/// The served key as known_hosts wants it: `ssh-ed25519 AAAA…`.
fn served_key(sshd: &Sshd) -> String {
    sshd.host_key(HostKeyKind::Ed25519).public.clone()
}

#[tokio::test]
async fn a_revoked_key_is_refused_even_where_another_line_or_a_pin_trusts_it() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = served_key(&sshd);
    let fp = sshd.host_key_fingerprint();
    let revoked_here = format!("@revoked {} {key}\n{} {key}\n", name(&sshd), name(&sshd));
    let revoked_everywhere = format!("{} {key}\n@revoked * {key}\n", name(&sshd));
    for (what, text, line) in [
        ("revoked for this host", revoked_here.as_str(), 1),
        ("revoked for every host", revoked_everywhere.as_str(), 2),
    ] {
        let o = attempt(&sshd, known_hosts_text(dir.path(), "kh", text)).await;
        assert_eq!(kind_of(&o), ErrorKind::HostKey, "{what}");
        assert_eq!(o.attempts, 1, "{what}: host_key is not retried");
        assert!(
            matches!(err_of(&o), ExecError::Ssh(SshError::HostKeyRevoked { .. })),
            "{what}: {}",
            err_of(&o)
        );
        let msg = err_of(&o).to_string();
        assert!(
            msg.contains(&fp) && msg.contains(&addr(&sshd)) && msg.contains("@revoked"),
            "{what}: {msg}"
        );
        assert!(msg.contains(&format!("line {line}")), "{what}: {msg}");
    }
    // A pin of the same key does not override the revocation.
    let policy = HostKeyPolicy::Strict {
        known_hosts: vec![write(dir.path(), "kh-revoked", revoked_here.as_bytes())],
        pinned: vec![fp.clone()],
    };
    let o = attempt(&sshd, policy).await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    // A revocation for another host does not touch this one (positive control).
    let other = format!("@revoked otherhost {key}\n{} {key}\n", name(&sshd));
    let o = attempt(&sshd, known_hosts_text(dir.path(), "kh-other", &other)).await;
    assert_eq!(secret_of(&o), b"trusted");
    assert_eq!(accepted_logins(&sshd), 1, "no login past a revoked key");
}

#[tokio::test]
async fn a_negated_pattern_makes_its_line_not_match() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = served_key(&sshd);
    let n = name(&sshd);
    for hosts in [
        format!("{n},!*"),
        format!("!{n},*"),
        "*,![127.0.0.1]*".to_string(),
    ] {
        let o = attempt(
            &sshd,
            known_hosts_text(dir.path(), "kh", &format!("{hosts} {key}\n")),
        )
        .await;
        assert_eq!(kind_of(&o), ErrorKind::HostKey, "{hosts}");
        assert!(
            matches!(err_of(&o), ExecError::Ssh(SshError::HostKeyUnknown { .. })),
            "{hosts}: {}",
            err_of(&o)
        );
    }
    // Negating another name leaves the line in force.
    let hosts = format!("!otherhost,{n}");
    let o = attempt(
        &sshd,
        known_hosts_text(dir.path(), "kh", &format!("{hosts} {key}\n")),
    )
    .await;
    assert_eq!(secret_of(&o), b"trusted", "{hosts}");
    assert_eq!(accepted_logins(&sshd), 1);
}

#[tokio::test]
async fn wildcard_patterns_match_as_openssh_matches_them() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = served_key(&sshd);
    let port = sshd.port();
    let matching = [
        "*".to_string(),
        format!("[127.0.0.?]:{port}"),
        "[127.0.*]:*".into(),
    ];
    for hosts in &matching {
        let o = attempt(
            &sshd,
            known_hosts_text(dir.path(), "kh", &format!("{hosts} {key}\n")),
        )
        .await;
        assert_eq!(secret_of(&o), b"trusted", "{hosts}");
    }
    for hosts in [
        format!("[127.0.0.?]:{port}?"),
        "127.0.0.*".into(),
        "[10.*]:*".into(),
    ] {
        let o = attempt(
            &sshd,
            known_hosts_text(dir.path(), "kh", &format!("{hosts} {key}\n")),
        )
        .await;
        assert_eq!(kind_of(&o), ErrorKind::HostKey, "{hosts}");
    }
    assert_eq!(accepted_logins(&sshd), matching.len());
}

/// Hashed entries follow the plain entries' rule: `[host]:port` for a non-default port,
/// never the bare host.
#[tokio::test]
async fn hashed_entries_follow_the_bare_host_rule_of_plain_ones() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = served_key(&sshd);
    let bare = hashed_line(dir.path(), &format!("127.0.0.1 {key}"));
    let o = attempt(
        &sshd,
        known_hosts_text(dir.path(), "kh", &format!("{bare}\n")),
    )
    .await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    assert!(
        matches!(err_of(&o), ExecError::Ssh(SshError::HostKeyUnknown { .. })),
        "{}",
        err_of(&o)
    );
    let with_port = hashed_line(dir.path(), &format!("{} {key}", name(&sshd)));
    let o = attempt(
        &sshd,
        known_hosts_text(dir.path(), "kh", &format!("{with_port}\n")),
    )
    .await;
    assert_eq!(secret_of(&o), b"trusted");
    assert_eq!(accepted_logins(&sshd), 1);
}

/// `@cert-authority` keys sign host certificates, which this client never negotiates; a
/// plain host key listed only under that marker is not trusted (as in OpenSSH).
#[tokio::test]
async fn a_cert_authority_line_does_not_trust_a_plain_host_key() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let text = format!("@cert-authority {} {}\n", name(&sshd), served_key(&sshd));
    let o = attempt(&sshd, known_hosts_text(dir.path(), "kh", &text)).await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    assert!(
        matches!(err_of(&o), ExecError::Ssh(SshError::HostKeyUnknown { .. })),
        "{}",
        err_of(&o)
    );
    assert_eq!(accepted_logins(&sshd), 0);
}

/// The server has only an RSA key; known_hosts lists only an ed25519 key for it. That is a
/// changed host key (as OpenSSH reports it), not a connection failure to retry.
#[tokio::test]
async fn a_host_key_type_mismatch_is_host_key_naming_both_keys() {
    let sshd = Sshd::start_with(SshdOptions {
        host_keys: vec![HostKeyKind::Rsa],
        ..SshdOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let ed = sshd.host_key(HostKeyKind::Ed25519);
    let text = format!("{} {}\n", name(&sshd), ed.public);
    let o = attempt(&sshd, known_hosts_text(dir.path(), "kh", &text)).await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey, "{}", err_of(&o));
    assert_eq!(o.attempts, 1, "host_key is not retried");
    assert!(
        matches!(
            err_of(&o),
            ExecError::Ssh(SshError::HostKeyTypeMismatch { .. })
        ),
        "{}",
        err_of(&o)
    );
    let msg = err_of(&o).to_string();
    let rsa_fp = sshd.host_key_fingerprint_of(HostKeyKind::Rsa).unwrap();
    for want in [
        "ssh-rsa",
        rsa_fp.as_str(),
        "ssh-ed25519",
        ed.fingerprint.as_str(),
    ] {
        assert!(msg.contains(want), "{want} missing: {msg}");
    }
    assert_eq!(accepted_logins(&sshd), 0);
}
