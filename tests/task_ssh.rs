//! `task` over SSH against a real OpenSSH sshd (tests/support/sshd.rs): a connector
//! (Harness's `sshCredential`) becomes a target through `task::ssh::ssh_target`, the task
//! runs through `task::prepare` and `task::run`, and the credential's secret parts (key
//! text, passphrase, password) are masked in the task's logs like any value.

mod support;

use std::time::Duration;

use csm_agent::exec::local::LocalExecutor;
use csm_agent::exec::ssh::{SshConfig, SshExecutor, SshPool, SshTarget};
use csm_agent::exec::{self, Job, Outcome, RetryPolicy};
use csm_agent::input::parse_connector;
use csm_agent::secret::{secret_bytes, Variables};
use csm_agent::task::ssh::{ssh_target, SshSpec};
use csm_agent::task::{self, Executors, Target, TaskSpec};
use csm_agent::template::Template;
use secrecy::ExposeSecret;
use support::sshd::*;
use tokio_util::sync::CancellationToken;

fn executors() -> Executors {
    Executors {
        local: LocalExecutor::default(),
        ssh: SshPool::new(SshConfig {
            connect_timeout: Duration::from_secs(5),
            auth_timeout: Duration::from_secs(10),
            ..SshConfig::default()
        }),
    }
}

/// The target a connector file describes, with its secrets supplied by value.
fn connector_target(sshd: &Sshd, method: serde_json::Value, secrets: &Variables) -> SshTarget {
    let doc = serde_json::json!({
        "id": "c1",
        "sshAuthentication": {"userName": sshd.user(), "port": sshd.port(), "sshAuthenticationMethod": method},
        "knownHosts": [sshd.known_hosts_path()],
    });
    let connector = parse_connector(&doc.to_string()).unwrap();
    ssh_target(
        SshSpec {
            host: sshd.host().into(),
            connector: Some(connector),
            connector_id: Some("c1".into()),
            ..SshSpec::default()
        },
        secrets,
    )
    .unwrap()
}

/// A script that prints each of `leaks` on its own line (as a chatty script or a login
/// file might), then returns a secret.
fn printing(leaks: &[&str]) -> String {
    let mut s = String::new();
    for l in leaks {
        assert!(!l.contains('\''));
        s.push_str(&format!("printf '%s\\n' '{l}'\n"));
    }
    s.push_str("secret=done\n");
    s
}

fn log(o: &Outcome) -> String {
    let all = [o.stdout.as_bytes(), o.stderr.as_bytes()].concat();
    String::from_utf8_lossy(&all).into_owned()
}

fn assert_done(o: &Outcome) {
    match &o.result {
        Ok(s) => assert_eq!(s.expose_secret(), b"done"),
        Err(e) => panic!("{e}\n{}", log(o)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_key_and_passphrase_are_masked_in_the_task_log() {
    let sshd = Sshd::start();
    let key = sshd.client_key(KeyKind::Ed25519Encrypted);
    let passphrase = key.passphrase.clone().expect("an encrypted key");
    let mut secrets = Variables::new();
    secrets.insert("k", secret_bytes(key.private_pem.clone().into_bytes()));
    secrets.insert("kp", secret_bytes(passphrase.clone().into_bytes()));
    let target = connector_target(
        &sshd,
        serde_json::json!({"sshCredentialType": "SSH_KEY",
            "inlineSSHKey": {"sshKeySecretFileId": "k", "passphraseSecretId": "kp"}}),
        &secrets,
    );
    let script = printing(&[key.private_pem.trim_end(), &passphrase]);
    let spec = TaskSpec {
        retry: RetryPolicy {
            attempts: 1,
            delay: Duration::ZERO,
        },
        ..TaskSpec::new(
            Template::from_script(script.clone()),
            Target::Ssh {
                target: target.clone(),
                command_path: "/tmp".into(),
            },
        )
    };
    let prepared = task::prepare(spec).unwrap();
    let o = task::run(&prepared, &executors(), &CancellationToken::new()).await;
    assert_done(&o);
    let masked = log(&o);
    // A line of the key's body, and the passphrase, are nowhere in the log.
    let body_line = key
        .private_pem
        .lines()
        .max_by_key(|l| l.len())
        .unwrap()
        .to_string();
    assert!(!masked.contains(&body_line), "{masked}");
    assert!(!masked.contains(&passphrase), "{masked}");
    assert!(masked.contains("***"), "{masked}");

    // Positive control: the same script on the same target, with a job that masks only its
    // variables (none), shows both, so the scan above means something.
    let rendered = Template::from_script(script)
        .render(&Variables::new(), &Variables::new())
        .unwrap();
    let job = Job::new(rendered, "/tmp", Duration::from_secs(30), &Variables::new());
    let executor = SshExecutor::new(executors().ssh, target);
    let o = exec::run(
        &executor,
        &job,
        &RetryPolicy {
            attempts: 1,
            delay: Duration::ZERO,
        },
        &CancellationToken::new(),
    )
    .await;
    assert_done(&o);
    let raw = log(&o);
    assert!(
        raw.contains(&body_line) && raw.contains(&passphrase),
        "{raw}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_password_is_masked_in_the_task_log() {
    let sshd = Sshd::start();
    if !sshd.supports_password() {
        support::skip::skip(
            "connector_password_is_masked_in_the_task_log",
            "password logins need root",
        );
        return;
    }
    let password = sshd.password().to_string();
    let mut secrets = Variables::new();
    secrets.insert("pw", secret_bytes(password.clone().into_bytes()));
    let target = connector_target(
        &sshd,
        serde_json::json!({"sshCredentialType": "PASSWORD", "serverPassword": {"passwordSecretId": "pw"}}),
        &secrets,
    );
    let spec = TaskSpec::new(
        Template::from_script(printing(&[&password])),
        Target::Ssh {
            target,
            command_path: "/tmp".into(),
        },
    );
    let prepared = task::prepare(spec).unwrap();
    let o = task::run(&prepared, &executors(), &CancellationToken::new()).await;
    assert_done(&o);
    let masked = log(&o);
    assert!(
        password.len() >= 4,
        "the fixture's password is too short to mask"
    );
    assert!(!masked.contains(&password), "{masked}");
    assert!(masked.contains("***"), "{masked}");
}
