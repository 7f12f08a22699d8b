//! SSH tasks through a real agent process to a real OpenSSH server: an inline key with a
//! pinned host key, pooled connections shared by tasks with the same credential, a wrong
//! pinned key refused, and the policy's host list.

mod support;

use csm_agent::error::ErrorKind;
use csm_agent::protocol::{SshCredentials, SshSpec, Target, WireSecret};
use secrecy::ExposeSecret;
use support::agentnet::*;
use support::sshd::{KeyKind, Sshd};

fn ssh_task(sshd: &Sshd, host_key: &str, value: &str) -> csm_agent::manager::TaskRequest {
    let key = sshd.client_key(KeyKind::Ed25519);
    let mut t = task("secret=\"ssh-${v}\"", &[("v", value)], &[], PATIENCE);
    t.target = Target::Ssh(SshSpec {
        host: sshd.host().into(),
        port: Some(sshd.port()),
        user: sshd.user().into(),
        credentials: SshCredentials::Key {
            private_key: WireSecret::from_vec(key.private_pem.as_bytes().to_vec()),
            passphrase: None,
        },
        host_keys: vec![host_key.to_string()],
        command_path: None,
    });
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_tasks_run_on_the_target_with_pinned_host_keys_and_pooled_connections() {
    let sshd = Sshd::start();
    let m = TestManager::start(fast_hub()).await;
    let mut o = AgentOpts::named("ssh-agent");
    o.env.push((
        "CSM_POLICY_SSH_HOSTS".into(),
        format!("127.0.0.1:{}", sshd.port()),
    ));
    let mut agent = AgentProc::start(&m.url(), &m.token_file(), o);
    m.wait_connected("ssh-agent").await;
    let fp = sshd.host_key_fingerprint();

    for i in 0..2 {
        let out = m
            .hub
            .submit(ssh_task(&sshd, &fp, &format!("v{i}")))
            .await
            .unwrap();
        let v = out
            .result
            .unwrap_or_else(|e| panic!("{e}\n{}", sshd.server_log()));
        assert_eq!(v.expose_secret(), format!("ssh-v{i}").as_bytes());
    }
    // Same credential, same pooled connection: one login for both tasks.
    let logins = sshd.server_log().matches("Accepted publickey").count();
    assert_eq!(logins, 1, "{}", sshd.server_log());

    // A pinned key that is not the server's: refused before authentication.
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let out = m.hub.submit(ssh_task(&sshd, wrong, "x")).await.unwrap();
    assert_eq!(out.result.unwrap_err().kind, ErrorKind::HostKey);

    // A port the policy does not list: refused, never attempted.
    let mut t = ssh_task(&sshd, &fp, "x");
    if let Target::Ssh(s) = &mut t.target {
        s.port = Some(sshd.port().wrapping_add(1));
    }
    let out = m.hub.submit(t).await.unwrap();
    assert_eq!(out.result.unwrap_err().kind, ErrorKind::Policy);
    agent.kill();
}
