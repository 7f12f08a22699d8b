#[path = "../tests/support/mod.rs"]
mod support;
use csm_agent::exec::{self, ssh::*, Job, RetryPolicy};
use csm_agent::secret::Variables;
use csm_agent::template::Template;
use secrecy::SecretString;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::sshd::*;
use tokio_util::sync::CancellationToken;
fn main() {
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 0..40 {
        let sshd = Sshd::start_with(SshdOptions {
            max_sessions: 64,
            ..SshdOptions::default()
        });
        let key = sshd.client_key(KeyKind::Ed25519);
        let t = SshTarget {
            host: sshd.host().into(),
            port: sshd.port(),
            credential: Arc::new(SshCredential::new(
                sshd.user(),
                SshAuth::Key {
                    private_key: SecretString::from(key.private_pem.clone()),
                    passphrase: None,
                },
            )),
            host_keys: Arc::new(HostKeyPolicy::Strict {
                known_hosts: vec![sshd.known_hosts_path().to_path_buf()],
                pinned: vec![],
            }),
        };
        let pool = rt.block_on(async { SshPool::new(SshConfig::default()) });
        let e = SshExecutor::new(pool, t);
        let r = Template::from_script("secret=abc")
            .render(&Variables::new(), &Variables::new())
            .unwrap();
        let j = Job::new(r, "/tmp", Duration::from_secs(10), &Variables::new());
        let t0 = Instant::now();
        let o = rt.block_on(exec::run(
            &e,
            &j,
            &RetryPolicy {
                attempts: 1,
                delay: Duration::ZERO,
            },
            &CancellationToken::new(),
        ));
        eprintln!(
            "ROUND {round}: {:?} in {:?}",
            o.result.as_ref().map(|_| "ok").map_err(|e| e.to_string()),
            t0.elapsed()
        );
        if o.result.is_err() {
            eprintln!("{}", sshd.server_log());
            break;
        }
    }
}
