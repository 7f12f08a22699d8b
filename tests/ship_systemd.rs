//! The hardened `csm-agent.service` under a real systemd: a Debian 12 container booted by
//! podman (runc), the Debian package built by `scripts/build-deb.sh` installed into it with
//! dpkg, and a real `csm-agent manager` on the host that the agent reaches over the host's
//! loopback. Then `scripts/install.sh` in the same container, twice, and `--uninstall`.
//!
//! It checks, with every hardening directive of the unit in force: READY and `active`; the
//! watchdog pings; a local script (bash, a writable commandPath, outbound TCP) and an SSH
//! task (a key from the control plane, the host key from `~/.ssh/known_hosts` in the
//! state directory) return their values; a SIGKILLed agent is restarted and reconnects;
//! the live `systemd-analyze security` exposure is ≤ 2.0; `systemctl stop` during a task
//! drains it (the result arrives, the unit exits with status 0); the journal holds no
//! secret; dpkg upgrades (restarting the agent on the new binary) and purges cleanly.
//!
//! Needs root, podman, runc, mmdebstrap, cargo-deb and sshd: without them it says so
//! loudly, and fails under CI (`CSM_TEST_REQUIRE_ALL=1`). Every wait is a poll with a
//! deadline; every port is picked by the kernel (the agent's health port: see
//! `support::podman::free_port`).

mod cp_support;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cp_support::{Gql, CREATE_SECRET, CREATE_SM, RESOLVE};
use serde_json::{json, Value};
use support::podman::{self, assert_no_secret, ok, poll, Container};
use support::ship::{self, HostManager};
use support::skip::skip;
use support::sshd::{KeyKind, Sshd};

const STATE: &str = "/var/lib/csm-agent";

/// A local script: writes and reads back a file in commandPath, opens a TCP connection to
/// the manager, and reports who it ran as and the sandbox it ran in (no new privileges, a
/// seccomp filter, an empty capability bounding set).
const LOCAL_SCRIPT: &str =
    "printf '%s' \"${key}\" > ./probe && v=$(cat ./probe) && rm -f ./probe && \
code=$(curl -s -o /dev/null -w '%{http_code}' \"${url}\") && \
box=$(awk '/^(NoNewPrivs|Seccomp|CapBnd):/ { printf \"%s%s,\", $1, $2 }' /proc/self/status) && \
secret=\"local:${v}:$(id -un):http-${code}:${box}\"";

/// What [`LOCAL_SCRIPT`] returns under the unit.
const LOCAL_WANT: &str =
    "local:local-value-7f3a:csm-agent:http-200:CapBnd:0000000000000000,NoNewPrivs:1,Seccomp:2,";

/// A script that, while `STATE/hold` exists, announces itself and waits for `STATE/go`.
const HOLD_SCRIPT: &str =
    "if [ -e /var/lib/csm-agent/hold ]; then : > /var/lib/csm-agent/started; \
while [ ! -e /var/lib/csm-agent/go ]; do sleep 0.05; done; fi; secret=\"held:${key}\"";

/// `systemctl show -p PROP --value csm-agent`.
fn prop(c: &Container, p: &str) -> String {
    c.sh_ok(&format!("systemctl show -p {p} --value csm-agent.service"))
        .trim()
        .to_string()
}

/// Wait until the agent behind `port` says it is connected.
fn wait_connected(port: u16, what: &str) {
    poll(what, Duration::from_secs(60), || {
        ship::health(port).filter(|h| h["connection"] == "connected")
    });
}

/// Wait until the unit is active with a main process; its pid.
fn wait_active(c: &Container, what: &str) -> String {
    poll(what, Duration::from_secs(60), || {
        let st = prop(c, "ActiveState");
        let pid = prop(c, "MainPID");
        (st == "active" && pid != "0").then_some(pid)
    })
}

/// Build two versions of the package from the test's binary.
fn build_debs(out: &Path) -> (String, String) {
    let build = |v: &str| {
        let path = ok(Command::new(ship::repo().join("scripts/build-deb.sh"))
            .args(["--binary"])
            .arg(ship::binary())
            .args(["--fast", "--deb-version", v, "--output"])
            .arg(out));
        let path = path.trim().to_string();
        assert!(Path::new(&path).is_file(), "no package at {path}");
        Path::new(&path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    (build("0.1.0-1"), build("0.1.0-2"))
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    c: Container,
    cp: HostManager,
    g: Gql,
    health_port: u16,
}

impl Fixture {
    fn resolve(&self, id: &str) -> Result<String, (String, String)> {
        self.rt
            .block_on(self.g.resolve(id, None, None, Some("PROD")))
    }

    /// Configure the agent: the manager's URL, the token (through stdin, never argv).
    fn configure(&self) {
        let toml = format!(
            "manager = \"{}\"\ntoken_file = \"/etc/csm-agent/token\"\nname = \"ship-systemd\"\n\
             selectors = [\"ship\"]\nmetrics_listen = \"127.0.0.1:{}\"\n\n[policy]\n\
             ssh_hosts = [\"127.0.0.1\"]\nssh_key_file_prefixes = [\"/etc/csm-agent/ssh\"]\ncommand_path_prefixes = [\"/tmp\", \"/run/csm-agent\", \"/srv/csm\", \"{STATE}\"]\n",
            self.cp.base, self.health_port
        );
        self.c.write_file(
            "/etc/csm-agent/agent.toml",
            toml.as_bytes(),
            "0640",
            "root:csm-agent",
        );
        self.c.write_file(
            "/etc/csm-agent/token",
            format!("{}\n", self.cp.agent_token).as_bytes(),
            "0600",
            "root:root",
        );
    }
}

#[test]
fn the_hardened_unit_runs_scripts_drains_restarts_and_packages_cleanly_under_systemd() {
    const NAME: &str = "ship_systemd";
    let tools = ["podman", "runc", "mmdebstrap", "cargo-deb", "dpkg-deb"];
    if let Some(why) = podman::missing_prerequisite(&tools) {
        return skip(NAME, &why);
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        return skip(
            NAME,
            "sshd is missing (scripts/ci-setup-ssh.sh installs it)",
        );
    }
    let t0 = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let debs = work.path().join("debs");
    std::fs::create_dir(&debs).unwrap();
    let (v1, v2) = build_debs(&debs);
    eprintln!("[{:?}] packages built: {v1}, {v2}", t0.elapsed());

    // Tagged by its package list, so that a changed list builds a new image.
    let image = podman::image_name("localhost/csm-ship-systemd", podman::SYSTEMD_INCLUDES);
    podman::ensure_image(&image, podman::SYSTEMD_INCLUDES);
    let c = Container::boot_systemd("csm-ship-systemd", &image);
    // The packages, and install.sh with the files it installs, copied in.
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for d in ["scripts", "systemd", "packaging"] {
        ok(Command::new("cp")
            .arg("-r")
            .arg(ship::repo().join(d))
            .arg(&src));
    }
    c.copy_in(&debs, "/ship");
    c.copy_in(&src, "/ship-src");
    eprintln!("[{:?}] systemd is up in {}", t0.elapsed(), c.name);

    let sshd = Sshd::start();
    let cp = HostManager::start(work.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let g = Gql::new(&cp.graphql, &cp.api_key);
    let f = Fixture {
        rt,
        c,
        cp,
        g,
        health_port: podman::free_port(),
    };
    let c = &f.c;

    // ---- install: the user, /etc/csm-agent and its modes, the unit enabled but idle.
    let out = c.sh(&format!("dpkg -i /ship/{v1} 2>&1"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dpkg -i failed:\n{text}");
    assert!(!text.contains("warning"), "dpkg -i warned:\n{text}");
    assert_eq!(
        c.sh_ok("stat -c '%U:%G %a' /etc/csm-agent /etc/csm-agent/agent.toml /etc/csm-agent/token"),
        "root:csm-agent 750\nroot:csm-agent 640\nroot:root 600\n"
    );
    assert_eq!(
        c.sh_ok("getent passwd csm-agent | cut -d: -f6,7"),
        "/var/lib/csm-agent:/usr/sbin/nologin\n"
    );
    assert_eq!(
        c.sh_ok("systemctl is-enabled csm-agent.service").trim(),
        "enabled"
    );
    assert_eq!(
        prop(c, "ActiveState"),
        "inactive",
        "not started before it is configured"
    );
    c.sh_ok("ls /usr/share/man/man1/csm-agent-run.1*");
    c.sh_ok("test -s /usr/share/bash-completion/completions/csm-agent");

    // ---- configure and start: READY (Type=notify: start returns once READY=1 arrived).
    f.configure();
    c.write_file(
        &format!("{STATE}/.ssh/known_hosts"),
        format!("{}\n", sshd.known_hosts_line()).as_bytes(),
        "0600",
        "csm-agent:csm-agent",
    );
    c.sh_ok("systemctl start csm-agent.service");
    assert_eq!(
        c.sh_ok("systemctl is-active csm-agent.service").trim(),
        "active"
    );
    assert_eq!(prop(c, "Type"), "notify");
    assert_eq!(prop(c, "WatchdogUSec"), "30s");
    let first_ping = prop(c, "WatchdogTimestampMonotonic");
    wait_connected(f.health_port, "the agent to connect to the manager");
    eprintln!("[{:?}] the agent is active and connected", t0.elapsed());

    // ---- a local script under the full hardening, in /tmp (PrivateTmp) and in the
    // RuntimeDirectory.
    let local = local_secret(&f, "ship-local", "/tmp");
    let got = f.resolve(&local).expect("the local secret resolves");
    assert_eq!(got, LOCAL_WANT);
    let in_run = local_secret(&f, "ship-local-run", "/run/csm-agent");
    assert_eq!(
        f.resolve(&in_run).expect("commandPath /run/csm-agent"),
        LOCAL_WANT
    );

    // ---- an SSH task: key from the control plane, host key from ~/.ssh/known_hosts.
    let inline = json!({"sshCredentialType": "SSH_KEY", "inlineSSHKey": {"sshKeySecretFileId": "KEY_SECRET"}});
    let remote = ssh_secret(&f, &sshd, "ship-ssh", inline, "remote-value-91c2");
    let want = format!("ssh:remote-value-91c2:{}", sshd.user());
    assert_eq!(f.resolve(&remote).expect("the SSH secret resolves"), want);
    // A key file on the agent's host, readable by the group csm-agent, under
    // policy.ssh_key_file_prefixes.
    c.sh_ok("install -d -m 0750 -o root -g csm-agent /etc/csm-agent/ssh");
    c.write_file(
        "/etc/csm-agent/ssh/id_ed25519",
        sshd.client_key(KeyKind::Ed25519).private_pem.as_bytes(),
        "0640",
        "root:csm-agent",
    );
    let file = json!({"sshCredentialType": "SSH_KEY_FILE_PATH", "sshKeyFile": {"path": "/etc/csm-agent/ssh/id_ed25519"}});
    let from_file = ssh_secret(&f, &sshd, "ship-ssh-file", file, "file-value-44e0");
    let want = format!("ssh:file-value-44e0:{}", sshd.user());
    assert_eq!(
        f.resolve(&from_file)
            .expect("the key-file SSH secret resolves"),
        want
    );
    eprintln!(
        "[{:?}] local and SSH tasks returned their values",
        t0.elapsed()
    );

    // ---- the watchdog: systemd records the agent's WATCHDOG=1 pings (every 15 s).
    poll("a watchdog ping", Duration::from_secs(40), || {
        (prop(c, "WatchdogTimestampMonotonic") != first_ping).then_some(())
    });

    // ---- SIGKILL: systemd restarts the agent, which reconnects and runs tasks again.
    let pid = prop(c, "MainPID");
    let restarts: u32 = prop(c, "NRestarts").parse().unwrap();
    c.sh_ok("systemctl kill -s KILL csm-agent.service");
    poll(
        "systemd to restart the killed agent",
        Duration::from_secs(60),
        || {
            let n: u32 = prop(c, "NRestarts").parse().unwrap_or(0);
            (n == restarts + 1 && prop(c, "ActiveState") == "active" && prop(c, "MainPID") != pid)
                .then_some(())
        },
    );
    wait_connected(f.health_port, "the restarted agent to reconnect");
    assert_eq!(f.resolve(&local).unwrap(), LOCAL_WANT);
    eprintln!("[{:?}] killed, restarted, reconnected", t0.elapsed());

    // ---- the live exposure, as systemd itself computes it for the loaded unit.
    let exposure = live_exposure(c, "csm-agent.service");
    eprintln!("live systemd-analyze security csm-agent.service: {exposure}");
    assert!(exposure <= 2.0, "live exposure {exposure} > 2.0");

    // ---- the manager's unit runs under its own hardening too.
    let manager_key = manager_unit(&f);

    // ---- systemctl stop during a task: it drains, the result arrives, exit status 0.
    drain_on_stop(&f);
    eprintln!("[{:?}] drained on stop", t0.elapsed());

    // ---- the journal: no value, token, key or API key anywhere.
    let journal = c.sh_ok("journalctl --no-pager -o cat 2>&1");
    assert!(
        journal.contains("csm-agent"),
        "the journal has the agent's lines"
    );
    let key = sshd.client_key(KeyKind::Ed25519).private_pem.clone();
    let key_line = key.lines().nth(1).unwrap().to_string();
    let secrets = [
        "local-value-7f3a",
        "remote-value-91c2",
        "file-value-44e0",
        "held:drain-value",
        f.cp.agent_token.as_str(),
        f.cp.api_key.as_str(),
        manager_key.as_str(),
        key_line.as_str(),
    ];
    assert_no_secret("the container's journal", &journal, &secrets);
    assert_no_secret("the manager's log", &f.cp.log_text(), &secrets);

    // ---- upgrade: the running agent is restarted on the new binary; config is kept.
    c.sh_ok("systemctl start csm-agent.service");
    let pid = wait_active(c, "the agent to start again");
    wait_connected(f.health_port, "the agent to reconnect before the upgrade");
    let out = c.sh(&format!("dpkg -i /ship/{v2} 2>&1"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dpkg upgrade failed:\n{text}");
    assert!(!text.contains("warning"), "dpkg upgrade warned:\n{text}");
    assert!(c.sh_ok("dpkg-query -W csm-agent").contains("0.1.0-2"));
    let new_pid = wait_active(c, "the agent to run after the upgrade");
    assert_ne!(new_pid, pid, "the upgrade restarted the running agent");
    assert!(
        !c.sh_ok(&format!("readlink /proc/{new_pid}/exe"))
            .contains("deleted"),
        "the agent runs the new binary"
    );
    assert!(c
        .sh_ok("cat /etc/csm-agent/agent.toml")
        .contains(&f.cp.base));
    wait_connected(f.health_port, "the upgraded agent to reconnect");
    assert_eq!(f.resolve(&local).unwrap(), LOCAL_WANT);
    eprintln!("[{:?}] upgraded", t0.elapsed());

    // ---- purge: stopped, and nothing of the package left but the system users.
    let out = c.sh("dpkg --purge csm-agent 2>&1");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dpkg --purge failed:\n{text}");
    assert!(!text.contains("warning"), "dpkg --purge warned:\n{text}");
    assert_ne!(
        c.sh("systemctl is-active csm-agent.service").status.code(),
        Some(0)
    );
    c.sh_ok("! pgrep -x csm-agent");
    c.sh_ok(
        "test ! -e /etc/csm-agent && test ! -e /usr/bin/csm-agent && test ! -e /var/lib/csm-agent",
    );
    c.sh_ok("test -e /var/lib/csm-manager/master.key"); // the control plane's data stays
    c.sh_ok("test ! -e /usr/lib/systemd/system/csm-agent.service && test ! -e /etc/systemd/system/multi-user.target.wants/csm-agent.service");
    eprintln!("[{:?}] purged", t0.elapsed());

    install_script(&f, &v2, &local);
    eprintln!(
        "[{:?}] install.sh: installed twice, ran, uninstalled",
        t0.elapsed()
    );
}

/// A template, a manager `name` on the agent with selector `ship` running in `dir`, and a
/// secret; the secret's id.
fn local_secret(f: &Fixture, name: &str, dir: &str) -> String {
    let url = format!("{}/graphql", f.cp.base);
    let g = &f.g;
    f.rt.block_on(async {
        let t = g.template(name, LOCAL_SCRIPT, &["key", "url"]).await;
        let sm = g
            .ok(
                CREATE_SM,
                json!({"secretManagerInput": {"secretManagerType": "CUSTOM", "customSecretManagerInput": {
                    "name": name, "templateId": t, "delegateSelectors": ["ship"],
                    "testVariables": [{"name": "key", "value": "test"}, {"name": "url", "value": url}],
                    "executeOnDelegate": true, "isConnectorTemplatized": false,
                    "commandPath": dir}}}),
            )
            .await["createSecretManager"]["secretManager"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        g.param_secret(
            &format!("{name}-secret"),
            &sm,
            json!([{"name": "key", "value": "local-value-7f3a"}, {"name": "url", "value": url}]),
            Value::Null,
        )
        .await
    })
}

/// An SSH manager `name` on the host's sshd, authenticating with `method` (a GraphQL
/// `sshAuthenticationMethod`; `KEY_SECRET` in it is replaced by the id of a built-in secret
/// holding the client key), and a secret whose `key` is `value`; the secret's id.
fn ssh_secret(f: &Fixture, sshd: &Sshd, name: &str, method: Value, value: &str) -> String {
    let g = &f.g;
    let pem = sshd.client_key(KeyKind::Ed25519).private_pem.clone();
    f.rt.block_on(async {
        let mut method = method.to_string();
        if method.contains("KEY_SECRET") {
            let key = g.value_secret(&format!("{name}-key"), &pem).await;
            method = method.replace("KEY_SECRET", &key);
        }
        let method: Value = serde_json::from_str(&method).unwrap();
        let conn = g
            .ok(
                CREATE_SECRET,
                json!({"input": {"secretType": "SSH_CREDENTIAL", "sshCredential": {
                    "name": format!("{name}-conn"), "authenticationScheme": "SSH",
                    "sshAuthentication": {"userName": sshd.user(), "port": sshd.port(),
                        "sshAuthenticationMethod": method}}}}),
            )
            .await["createSecret"]["secret"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let t = g
            .template(name, "secret=\"ssh:${key}:$(id -un)\"", &["key"])
            .await;
        let sm = g
            .ok(
                CREATE_SM,
                json!({"secretManagerInput": {"secretManagerType": "CUSTOM", "customSecretManagerInput": {
                    "name": name, "templateId": t, "delegateSelectors": ["ship"],
                    "testVariables": [{"name": "key", "value": "test"}],
                    "executeOnDelegate": false, "isConnectorTemplatized": false,
                    "host": "127.0.0.1", "connectorId": conn, "commandPath": "/tmp"}}}),
            )
            .await["createSecretManager"]["secretManager"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        g.param_secret(
            &format!("{name}-secret"),
            &sm,
            json!([{"name": "key", "value": value}]),
            Value::Null,
        )
        .await
    })
}

/// `systemd-analyze security UNIT` in the container; the overall exposure.
fn live_exposure(c: &Container, unit: &str) -> f64 {
    let text = c.sh_ok(&format!("systemd-analyze security --no-pager {unit} 2>&1"));
    let line = text
        .lines()
        .find(|l| l.contains(&format!("Overall exposure level for {unit}")))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    line.split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure from {line:?}"))
}

/// Start `csm-manager.service` on a free port with an API key, query its GraphQL API,
/// measure its live exposure and stop it; the key.
fn manager_unit(f: &Fixture) -> String {
    let c = &f.c;
    let port = podman::free_port();
    let key = support::agentnet::random_token("ship-unit-admin-key");
    c.write_file(
        "/etc/csm-agent/manager.env",
        format!("CSM_MANAGER_LISTEN=127.0.0.1:{port}\nCSM_MANAGER_OPTS=\n").as_bytes(),
        "0640",
        "root:root",
    );
    c.write_file(
        "/etc/csm-agent/api-keys",
        format!("admin {key}\n").as_bytes(),
        "0600",
        "root:root",
    );
    c.write_file(
        "/etc/csm-agent/agent-tokens",
        support::agentnet::random_token("unused-agent-token").as_bytes(),
        "0600",
        "root:root",
    );
    c.sh_ok("systemctl start csm-manager.service");
    poll(
        "csm-manager.service to listen",
        Duration::from_secs(60),
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    );
    let g = Gql::new(&format!("http://127.0.0.1:{port}/graphql"), &key);
    let t = f.rt.block_on(g.template("unit-probe", "secret=x", &[]));
    assert!(!t.is_empty());
    assert_eq!(
        c.sh_ok("stat -c '%U %a' /var/lib/csm-manager/master.key"),
        "csm-manager 600\n"
    );
    let exposure = live_exposure(c, "csm-manager.service");
    eprintln!("live systemd-analyze security csm-manager.service: {exposure}");
    assert!(
        exposure <= 2.0,
        "live exposure of the manager {exposure} > 2.0"
    );
    c.sh_ok("systemctl stop csm-manager.service");
    assert_eq!(
        c.sh_ok("systemctl show -p Result --value csm-manager.service")
            .trim(),
        "success"
    );
    key
}

/// Start a task that waits, stop the unit, release the task: its result arrives and the
/// unit ends with status 0 (every result delivered).
fn drain_on_stop(f: &Fixture) {
    let c = &f.c;
    let g = f.g.clone();
    let held = f.rt.block_on(async {
        let t = g.template("ship-hold", HOLD_SCRIPT, &["key"]).await;
        let sm = g
            .manager(
                "ship-hold",
                &t,
                json!([{"name": "key", "value": "test"}]),
                &["ship"],
                Value::Null,
            )
            .await;
        g.param_secret(
            "ship-held",
            &sm,
            json!([{"name": "key", "value": "drain-value"}]),
            Value::Null,
        )
        .await
    });
    c.sh_ok(&format!(
        "rm -f {STATE}/started {STATE}/go && touch {STATE}/hold"
    ));
    let pending = f.rt.spawn(async move {
        let r = g
            .send(
                RESOLVE,
                json!({"i": {"secretId": held, "environmentType": "PROD"}}),
            )
            .await;
        r.json
    });
    poll("the held task to start", Duration::from_secs(60), || {
        c.sh(&format!("test -e {STATE}/started"))
            .status
            .success()
            .then_some(())
    });
    c.sh_ok("systemctl stop --no-block csm-agent.service");
    poll(
        "the unit to begin stopping",
        Duration::from_secs(30),
        || (prop(c, "ActiveState") == "deactivating").then_some(()),
    );
    poll(
        "the agent to report its drain",
        Duration::from_secs(30),
        || ship::draining(f.health_port).then_some(()),
    );
    let h = ship::health(f.health_port).expect("the draining agent still answers /healthz");
    assert_eq!(h["inFlight"], 1, "{h}");
    c.sh_ok(&format!("touch {STATE}/go"));
    let reply =
        f.rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), pending).await })
            .expect("the drained result arrives")
            .unwrap();
    assert_eq!(
        reply["data"]["resolveSecret"]["value"], "held:drain-value",
        "{reply}"
    );
    poll("the unit to stop", Duration::from_secs(60), || {
        (prop(c, "ActiveState") == "inactive").then_some(())
    });
    assert_eq!(prop(c, "Result"), "success");
    assert_eq!(prop(c, "ExecMainStatus"), "0");
    c.sh_ok(&format!("rm -f {STATE}/hold {STATE}/started {STATE}/go"));
}

/// docs/systemd.md's drop-in, for real: a commandPath outside the writable paths fails
/// under `ProtectSystem=strict` although the agent's user owns it, and works once a drop-in
/// adds `ReadWritePaths=` for it.
fn relax_with_a_drop_in(f: &Fixture) {
    let c = &f.c;
    c.sh_ok("install -d -m 0700 -o csm-agent -g csm-agent /srv/csm");
    let url = format!("{}/graphql", f.cp.base);
    let create = |name: &str| {
        let g = f.g.clone();
        let (name, url) = (name.to_string(), url.clone());
        f.rt.block_on(async move {
            let t = g.template(&name, LOCAL_SCRIPT, &["key", "url"]).await;
            g.send(
                CREATE_SM,
                json!({"secretManagerInput": {"secretManagerType": "CUSTOM", "customSecretManagerInput": {
                    "name": name, "templateId": t, "delegateSelectors": ["ship"],
                    "testVariables": [{"name": "key", "value": "test"}, {"name": "url", "value": url}],
                    "executeOnDelegate": true, "isConnectorTemplatized": false,
                    "commandPath": "/srv/csm"}}}),
            )
            .await
            .json
        })
    };
    let refused = create("ship-srv-strict");
    let e = &refused["errors"][0];
    assert_eq!(e["extensions"]["code"], "script_failed", "{refused}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("Read-only file system"),
        "a write to /srv/csm fails under ProtectSystem=strict: {refused}"
    );
    c.sh_ok("mkdir -p /etc/systemd/system/csm-agent.service.d");
    c.write_file(
        "/etc/systemd/system/csm-agent.service.d/override.conf",
        b"[Service]\nReadWritePaths=/srv/csm\n",
        "0644",
        "root:root",
    );
    c.sh_ok("systemctl daemon-reload && systemctl restart csm-agent.service");
    wait_active(c, "the agent to restart with the drop-in");
    wait_connected(f.health_port, "the agent with the drop-in to connect");
    let created = create("ship-srv-relaxed");
    assert!(
        created["errors"].is_null(),
        "with ReadWritePaths=/srv/csm the script writes there: {created}"
    );
    c.sh_ok("rm -rf /etc/systemd/system/csm-agent.service.d /srv/csm && systemctl daemon-reload");
}

/// `scripts/install.sh` twice (idempotent), the unit running from it, then `--uninstall`.
fn install_script(f: &Fixture, deb: &str, local: &str) {
    let c = &f.c;
    // The binary: the package's own, unpacked (stripped), rather than a 200 MB debug copy.
    c.sh_ok(&format!("rm -rf /tmp/x && dpkg-deb -x /ship/{deb} /tmp/x"));
    let install = "/ship-src/scripts/install.sh --binary /tmp/x/usr/bin/csm-agent";
    c.sh_ok(&format!("{install} 2>&1"));
    assert_eq!(
        c.sh_ok("stat -c '%U:%G %a' /etc/csm-agent /etc/csm-agent/agent.toml /etc/csm-agent/token /usr/local/bin/csm-agent"),
        "root:csm-agent 750\nroot:csm-agent 640\nroot:root 600\nroot:root 755\n"
    );
    c.sh_ok("test -s /usr/local/share/man/man1/csm-agent-run.1 && test -s /usr/local/share/bash-completion/completions/csm-agent");
    assert_eq!(
        c.sh_ok("systemctl is-enabled csm-agent.service").trim(),
        "enabled"
    );
    f.configure();
    let before = c.sh_ok("md5sum /etc/csm-agent/agent.toml /etc/csm-agent/token");
    // Again, now starting it: the configuration and token survive.
    c.sh_ok("systemctl reset-failed csm-agent.service || true");
    c.sh_ok(&format!("{install} --now 2>&1"));
    assert_eq!(
        c.sh_ok("md5sum /etc/csm-agent/agent.toml /etc/csm-agent/token"),
        before
    );
    wait_active(c, "the agent installed by install.sh to start");
    assert!(prop(c, "FragmentPath").starts_with("/etc/systemd/system/"));
    wait_connected(
        f.health_port,
        "the agent installed by install.sh to connect",
    );
    assert_eq!(f.resolve(local).unwrap(), LOCAL_WANT);
    assert!(live_exposure(c, "csm-agent.service") <= 2.0);
    relax_with_a_drop_in(f);

    c.sh_ok("/ship-src/scripts/install.sh --uninstall 2>&1");
    c.sh_ok("! pgrep -x csm-agent && test ! -e /usr/local/bin/csm-agent && test ! -e /etc/systemd/system/csm-agent.service");
    c.sh_ok("test -e /etc/csm-agent/token");
    c.sh_ok("/ship-src/scripts/install.sh --uninstall --purge 2>&1");
    c.sh_ok("test ! -e /etc/csm-agent && ! getent passwd csm-agent");
}
