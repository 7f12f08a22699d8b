//! SSH authentication against a real OpenSSH sshd (tests/support/sshd): every key kind
//! inline and from files, passwords, and the failures (wrong key, wrong password, wrong or
//! missing passphrase), which are `ssh_auth` and never show a secret.

mod support;

use csm_agent::exec::ssh::{SshAuth, SshError, SshExecutor};
use csm_agent::exec::ExecError;
use csm_agent::ErrorKind;
use secrecy::SecretString;
use support::ssh::*;
use support::sshd::*;

#[tokio::test]
async fn every_inline_key_kind_authenticates() {
    let sshd = Sshd::start();
    let pool = pool();
    for kind in KeyKind::ALL {
        let key = sshd.client_key(kind);
        let exec = SshExecutor::new(
            pool.clone(),
            target(&sshd, inline_key(key), known_hosts(&sshd)),
        );
        let o = run_once(&exec, &job(&format!("secret=ok-{kind:?}"))).await;
        assert_eq!(secret_of(&o), format!("ok-{kind:?}").as_bytes(), "{kind:?}");
        // The server saw exactly this key, so the login really used that method.
        assert!(
            sshd.server_log().contains(&key.fingerprint),
            "{kind:?}: {} not in the server log",
            key.fingerprint
        );
    }
}

#[tokio::test]
async fn key_files_plain_and_encrypted_authenticate() {
    let sshd = Sshd::start();
    let pool = pool();
    for kind in [KeyKind::Ed25519, KeyKind::Ed25519Encrypted, KeyKind::RsaPem] {
        let key = sshd.client_key(kind);
        let auth = SshAuth::KeyFile {
            path: key.path.clone(),
            passphrase: key.passphrase.clone().map(SecretString::from),
        };
        let exec = SshExecutor::new(pool.clone(), target(&sshd, auth, known_hosts(&sshd)));
        let o = run_once(&exec, &job("secret=from-file")).await;
        assert_eq!(secret_of(&o), b"from-file", "{kind:?}");
        assert!(sshd.server_log().contains(&key.fingerprint), "{kind:?}");
    }
}

#[tokio::test]
async fn password_authenticates() {
    let sshd = Sshd::start();
    if !sshd.supports_password() {
        support::skip::skip(
            "password_authenticates",
            "password logins need the tests to run as root",
        );
        return;
    }
    let auth = SshAuth::Password(SecretString::from(sshd.password().to_string()));
    let exec = SshExecutor::new(pool(), target(&sshd, auth, known_hosts(&sshd)));
    let o = run_once(&exec, &job("secret=$(id -un)")).await;
    assert_eq!(secret_of(&o), sshd.user().as_bytes());
    assert!(sshd.server_log().contains("Accepted password for"));
}

#[tokio::test]
async fn wrong_key_is_ssh_auth_naming_the_method_and_never_the_key() {
    let sshd = Sshd::start();
    let wrong = sshd.wrong_key();
    for (auth, method) in [
        (inline_key(wrong), "publickey (inline key)"),
        (
            SshAuth::KeyFile {
                path: wrong.path.clone(),
                passphrase: None,
            },
            "publickey (key file",
        ),
    ] {
        let t = target(&sshd, auth, known_hosts(&sshd));
        let debug = format!("{t:?}");
        let o = run_once(&SshExecutor::new(pool(), t), &job("secret=x")).await;
        assert_eq!(kind_of(&o), ErrorKind::SshAuth);
        assert!(matches!(err_of(&o), ExecError::Ssh(SshError::Auth { .. })));
        assert_eq!(o.attempts, 1);
        let msg = err_of(&o).to_string();
        assert!(msg.contains(&addr(&sshd)), "{msg}");
        assert!(msg.contains(method), "{msg}");
        assert!(msg.contains(sshd.user()), "{msg}");
        for line in key_body(wrong) {
            assert!(!msg.contains(line), "key text in the message: {msg}");
            assert!(!debug.contains(line), "key text in Debug: {debug}");
        }
    }
}

#[tokio::test]
async fn wrong_password_is_ssh_auth_and_never_shows_the_password() {
    let sshd = Sshd::start();
    if !sshd.supports_password() {
        support::skip::skip(
            "wrong_password",
            "password logins need the tests to run as root",
        );
        return;
    }
    let pw = "not-the-password-9f2e71";
    let t = target(
        &sshd,
        SshAuth::Password(SecretString::from(pw.to_string())),
        known_hosts(&sshd),
    );
    let debug = format!("{t:?}");
    let o = run_once(&SshExecutor::new(pool(), t), &job("secret=x")).await;
    assert_eq!(kind_of(&o), ErrorKind::SshAuth);
    let msg = err_of(&o).to_string();
    assert!(
        msg.contains(&addr(&sshd)) && msg.contains("password"),
        "{msg}"
    );
    assert!(!msg.contains(pw), "{msg}");
    assert!(!msg.contains(sshd.password()), "{msg}");
    assert!(!debug.contains(pw), "{debug}");
}

#[tokio::test]
async fn wrong_or_missing_passphrase_is_ssh_auth_and_never_shows_it() {
    let sshd = Sshd::start();
    let key = sshd.client_key(KeyKind::Ed25519Encrypted);
    let bad = "wrong passphrase 51c0";
    let cases = [
        SshAuth::Key {
            private_key: SecretString::from(key.private_pem.clone()),
            passphrase: Some(SecretString::from(bad.to_string())),
        },
        SshAuth::KeyFile {
            path: key.path.clone(),
            passphrase: Some(SecretString::from(bad.to_string())),
        },
        SshAuth::Key {
            private_key: SecretString::from(key.private_pem.clone()),
            passphrase: None,
        },
    ];
    for auth in cases {
        let what = format!("{auth:?}");
        let o = run_once(
            &SshExecutor::new(pool(), target(&sshd, auth, known_hosts(&sshd))),
            &job("secret=x"),
        )
        .await;
        assert_eq!(kind_of(&o), ErrorKind::SshAuth, "{what}");
        let msg = err_of(&o).to_string();
        assert!(
            msg.contains(&addr(&sshd)) && msg.contains("publickey"),
            "{msg}"
        );
        assert!(!msg.contains(bad) && !msg.contains(KEY_PASSPHRASE), "{msg}");
        for line in key_body(key) {
            assert!(!msg.contains(line), "{msg}");
        }
    }
}
