//! Leak scan: both sides' logs at debug (the agent also at trace, human and JSON) never
//! contain a variable value, a stored-secret value, a returned secret, an SSH password,
//! a token, or the contents of a malformed frame. Positive controls show that the scan
//! finds what it looks for, that the logs were captured at the level claimed, and that
//! every needle really crossed the system. And the other way out of an agent: a script
//! cannot read the agent's memory, environment or descriptors through /proc.

mod support;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;

use csm_agent::error::ErrorKind;
use csm_agent::protocol::{SshCredentials, SshSpec, Target, WireSecret};
use secrecy::ExposeSecret;
use support::agentnet::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_or_token_reaches_either_sides_logs() {
    let manager_logs = captured_logs();
    let m = TestManager::start(fast_hub()).await;
    let value = random_token("VARVALUE");
    let stored = random_token("STOREDVALUE");
    let password = random_token("SSHPASSWORD");
    let junk = random_token("JUNKFRAME");
    let wrong_token = random_token("WRONGTOKEN");
    // The script returns the value through `tr` (coreutils), so the secret that comes back
    // is a string that never went in.
    let rot = |c: char| match c {
        'A'..='Z' => (((c as u8 - b'A') + 13) % 26 + b'A') as char,
        'a'..='z' => (((c as u8 - b'a') + 13) % 26 + b'a') as char,
        '0'..='9' => (((c as u8 - b'0') + 5) % 10 + b'0') as char,
        c => c,
    };
    let derived: String = value.chars().map(rot).collect();

    let mut agents = Vec::new();
    for (name, log, format) in [
        ("leak-debug", "debug", "human"),
        (
            "leak-trace",
            "trace,tungstenite=trace,tokio_tungstenite=trace",
            "human",
        ),
        ("leak-json", "debug", "json"),
    ] {
        let mut o = AgentOpts::named(name);
        o.log = log.into();
        o.env.push(("CSM_LOG_FORMAT".into(), format.into()));
        o.selectors = vec![name.into()];
        agents.push(AgentProc::start(&m.url(), &m.token_file(), o));
        m.wait_connected(name).await;
    }
    let wrong_file = m.dir.path().join("wrong-token");
    std::fs::write(&wrong_file, &wrong_token).unwrap();
    let refused = AgentProc::start(&m.url(), &wrong_file, AgentOpts::named("leak-refused"));

    for name in ["leak-debug", "leak-trace", "leak-json"] {
        // Success: the value goes in, a value derived from it comes back.
        let mut t = task(
            "secret=$(printf %s \"${v}\" | tr A-Za-z0-9 N-ZA-Mn-za-m5-90-4)\necho \"looked up ${secrets.getValue(\"db\")}\"",
            &[("v", &value)],
            &[name],
            PATIENCE,
        );
        t.secrets = BTreeMap::from([(
            "db".to_string(),
            WireSecret::from_vec(stored.as_bytes().to_vec()),
        )]);
        let o = m.hub.submit(t).await.unwrap();
        assert_eq!(o.result.unwrap().expose_secret(), derived.as_bytes());

        // Failure: the script prints the value and fails; the message is masked.
        let t = task(
            "echo \"oops ${v}\" >&2; exit 4",
            &[("v", &value)],
            &[name],
            PATIENCE,
        );
        let f = m.hub.submit(t).await.unwrap().result.unwrap_err();
        assert_eq!(f.kind, ErrorKind::ScriptFailed);
        assert!(f.message.contains("oops ***"), "{}", f.message);

        // Refused by policy: an SSH task carrying a password.
        let mut t = task("secret=x", &[("v", &value)], &[name], PATIENCE);
        t.target = Target::Ssh(SshSpec {
            host: "192.0.2.1".into(),
            port: Some(22),
            user: "deploy".into(),
            credentials: SshCredentials::Password {
                password: WireSecret::from_vec(password.as_bytes().to_vec()),
            },
            host_keys: vec![],
            command_path: None,
        });
        let f = m.hub.submit(t).await.unwrap().result.unwrap_err();
        assert_eq!(f.kind, ErrorKind::Policy);
    }
    // A malformed frame carrying a marker, to the manager.
    let mut fake = FakeAgent::join(&m, hello("id-junk", "junk", &[], 1)).await;
    fake.send_text(&format!("{{\"type\":\"result\",\"id\":{junk}}}"))
        .await;
    fake.send(&csm_agent::protocol::AgentMessage::Ping {}).await;
    while !matches!(
        fake.recv().await,
        Some(csm_agent::protocol::ManagerMessage::Pong {})
    ) {}

    let refused_line = {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let l = refused.logs();
            if l.contains("refused the agent's token") {
                break l;
            }
            assert!(std::time::Instant::now() < deadline, "{l}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };

    let needles = [
        value.as_str(),
        derived.as_str(),
        stored.as_str(),
        password.as_str(),
        junk.as_str(),
        wrong_token.as_str(),
        m.token.as_str(),
    ];
    // Positive control: the scanner finds every needle where it is.
    let planted = format!("x {} y", needles.join(" "));
    assert_eq!(leaks(&planted, &needles), needles.to_vec());

    let mgr = String::from_utf8(manager_logs.lock().unwrap().clone()).unwrap();
    // Positive controls: the manager's debug lines about these very tasks were captured.
    assert!(
        mgr.contains("DEBUG") && mgr.contains("task dispatched"),
        "{mgr}"
    );
    assert!(mgr.contains("malformed frame"), "{mgr}");
    assert!(mgr.contains("wrong token"), "{mgr}");
    assert_eq!(
        leaks(&mgr, &needles),
        Vec::<&str>::new(),
        "manager log leaks"
    );

    for a in &agents {
        let l = a.logs();
        assert!(
            l.contains("frame received") && l.contains("task accepted"),
            "{}: debug lines captured: {l}",
            a.name
        );
        assert!(l.contains("refused by policy"), "{l}");
        assert_eq!(
            leaks(&l, &needles),
            Vec::<&str>::new(),
            "{} log leaks:\n{l}",
            a.name
        );
        // Never in argv either.
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", a.pid())).unwrap();
        assert_eq!(
            leaks(&String::from_utf8_lossy(&cmdline), &needles),
            Vec::<&str>::new()
        );
    }
    assert!(
        agents[2].logs().lines().any(|l| l.starts_with('{')),
        "JSON lines"
    );
    assert_eq!(leaks(&refused_line, &needles), Vec::<&str>::new());
}

/// The scripts an agent runs have its uid, yet none can read its memory or its
/// environment: the agent is not dumpable (`src/harden.rs`), so the kernel refuses
/// `/proc/<agent>/mem`, `/proc/<agent>/environ` and `/proc/<agent>/fd` to them, and with
/// them every other task's values, a `CSM_TOKEN` and the agent's connection. The control
/// runs the same probe under a dumpable parent of the same user, where all three succeed,
/// so the probe is not blind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_cannot_read_its_agents_memory_or_environment() {
    // Root has CAP_SYS_PTRACE, which passes the kernel's check; as root the agent and the
    // control run as the unprivileged test user instead.
    let user = if nix::unistd::geteuid().is_root() {
        match nix::unistd::User::from_name(support::sshd::TEST_USER) {
            Ok(Some(u)) => Some(u),
            _ => {
                support::skip::skip(
                    "a_script_cannot_read_its_agents_memory_or_environment",
                    "running as root, and the unprivileged test user does not exist \
                     (scripts/ci-setup-ssh.sh creates it)",
                );
                return;
            }
        }
    } else {
        None
    };
    let probe = "e=refused; m=refused; f=refused\n\
        if v=$(tr '\\0' '\\n' 2>/dev/null </proc/$PPID/environ) && [[ $v == *CSM_PROBE_MARK=* ]]; then e=read; fi\n\
        if { exec 5</proc/$PPID/mem; } 2>/dev/null; then m=opened; exec 5<&-; fi\n\
        if ls /proc/$PPID/fd >/dev/null 2>&1; then f=listed; fi\n\
        secret=\"ppid=$PPID environ=$e mem=$m fd=$f\"\n";

    // Control: a dumpable bash of the same user is the probe's parent.
    let mut control = std::process::Command::new("bash");
    control
        .arg("-c")
        .arg("bash -c \"$1\"; exit $?")
        .arg("control")
        .arg(format!("{probe}printf '%s' \"$secret\""))
        .env("CSM_PROBE_MARK", "1")
        .current_dir("/tmp")
        .stdout(std::process::Stdio::piped());
    if let Some(u) = &user {
        control.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
    let control = control.spawn().unwrap();
    let parent = control.id();
    let out = control.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("ppid={parent} environ=read mem=opened fd=listed"),
        "the probe must see a dumpable parent's environment and memory"
    );

    let m = TestManager::start(fast_hub()).await;
    let mut o = AgentOpts::named("harden");
    o.selectors = vec!["harden".into()];
    o.env.push(("CSM_PROBE_MARK".into(), "1".into()));
    o.user = user;
    let agent = AgentProc::start(&m.url(), &m.token_file(), o);
    m.wait_connected("harden").await;
    let t = task(probe, &[], &["harden"], PATIENCE);
    let got = m.hub.submit(t).await.unwrap().result.unwrap();
    assert_eq!(
        String::from_utf8_lossy(got.expose_secret()),
        format!(
            "ppid={} environ=refused mem=refused fd=refused",
            agent.pid()
        ),
        "{}",
        agent.logs()
    );
}
