//! The Docker sidecar for real: the repository's `Dockerfile` built by podman on a
//! `debian:bookworm-slim` made by mmdebstrap (no registry is reachable), run read-only, as
//! uid 10001, configured by environment alone, against a real `csm-agent manager` on the
//! host. A secret resolves through it; the image's HEALTHCHECK passes
//! (`podman healthcheck run`); `podman stop` drains a running task (its result arrives and
//! the container exits 0); the logs hold no secret. And the compose and Kubernetes
//! examples of docs/sidecar.md parse, with the settings the image relies on.
//!
//! Needs root, podman, runc, mmdebstrap and strip; without them it says so loudly and
//! fails under CI. Every wait is a poll with a deadline.

mod cp_support;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use cp_support::{Gql, RESOLVE};
use serde_json::{json, Value};
use support::podman::{self, assert_no_secret, ok, output, poll, Container, ULIMITS};
use support::ship::{self, write_private, HostManager};
use support::skip::skip;

const BASE: &str = "docker.io/library/debian:bookworm-slim";

/// Writes in commandPath (a tmpfs), and says who it ran as.
const SCRIPT: &str =
    "printf '%s' \"${key}\" > ./probe && secret=\"sidecar:$(cat ./probe):$(id -u)\" && rm -f ./probe";
/// While /ctl/hold exists, announces itself in /tmp/started and waits for /ctl/go. /ctl is
/// a read-only bind mount of a host directory: podman refuses `exec` into a stopping
/// container, so the test releases the task from the host.
const HOLD_SCRIPT: &str = "if [ -e /ctl/hold ]; then : > /tmp/started; \
while [ ! -e /ctl/go ]; do sleep 0.05; done; fi; secret=\"held:${key}\"";

/// An image, removed when dropped.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = output(podman::podman().args(["rmi", "-f", &self.0]));
    }
}

#[test]
fn the_sidecar_image_runs_read_only_as_non_root_from_the_environment_and_drains() {
    const NAME: &str = "ship_sidecar";
    if let Some(why) = podman::missing_prerequisite(&["podman", "runc", "mmdebstrap", "strip"]) {
        return skip(NAME, &why);
    }
    let t0 = Instant::now();
    podman::ensure_image(BASE, podman::SLIM_INCLUDES);

    // The build context: the Dockerfile's own, with a stripped copy of the test's binary
    // where the release binary would be.
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(ctx.join("target/release")).unwrap();
    ok(Command::new("strip")
        .arg("-o")
        .arg(ctx.join("target/release/csm-agent"))
        .arg(ship::binary()));
    std::fs::copy(
        ship::repo().join(".dockerignore"),
        ctx.join(".dockerignore"),
    )
    .unwrap();
    let image = Image(format!(
        "localhost/csm-agent-sidecar-test:{}",
        std::process::id()
    ));
    ok(podman::podman()
        .args([
            "build",
            "--pull=never",
            "--format",
            "docker",
            "--network",
            "host",
        ])
        .args(ULIMITS)
        .args(["-t", &image.0, "-f"])
        .arg(ship::repo().join("Dockerfile"))
        .arg(&ctx));
    eprintln!("[{:?}] image built", t0.elapsed());
    let hc = ok(podman::podman().args([
        "image",
        "inspect",
        "--format",
        "{{json .Config.Healthcheck}}",
        &image.0,
    ]));
    assert!(
        hc.contains("/healthz"),
        "the image has the HEALTHCHECK: {hc}"
    );

    let cp = HostManager::start(work.path());
    let port = podman::free_port();
    // The whole configuration, in an environment file only root reads (the token is
    // neither in argv nor in podman's own environment).
    let env_file = work.path().join("agent.env");
    write_private(
        &env_file,
        &format!(
            "CSM_MANAGER={}\nCSM_TOKEN={}\nCSM_NAME=sidecar\nCSM_SELECTORS=sidecar\n\
             CSM_METRICS_LISTEN=127.0.0.1:{port}\nCSM_LOG=debug\n",
            cp.base, cp.agent_token
        ),
    );
    let name = Container::unique_name("csm-ship-sidecar");
    let env_arg = env_file.to_string_lossy().into_owned();
    let ctl = work.path().join("ctl");
    std::fs::create_dir(&ctl).unwrap();
    for d in [work.path(), ctl.as_path()] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let ctl_arg = format!("{}:/ctl:ro", ctl.display());
    let c = Container::run(
        &name,
        &[
            "--read-only",
            "--tmpfs",
            "/tmp:rw,mode=1777,size=64m",
            "--cap-drop=all",
            "--security-opt",
            "no-new-privileges",
            "--health-interval=disable",
            "--env-file",
            &env_arg,
            "--volume",
            &ctl_arg,
            &image.0,
        ],
    );
    assert_eq!(c.sh_ok("id -u").trim(), "10001");
    assert!(
        !c.sh("touch /usr/local/bin/x").status.success(),
        "the root filesystem is read-only"
    );
    poll("the sidecar to connect", Duration::from_secs(60), || {
        ship::health(port).filter(|h| h["connection"] == "connected")
    });
    eprintln!("[{:?}] the sidecar is connected", t0.elapsed());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let g = Gql::new(&cp.graphql, &cp.api_key);
    let (secret, held) = rt.block_on(async {
        let t = g.template("sidecar", SCRIPT, &["key"]).await;
        let sm = g
            .manager(
                "sidecar",
                &t,
                json!([{"name": "key", "value": "test"}]),
                &["sidecar"],
                Value::Null,
            )
            .await;
        let s = g
            .param_secret(
                "sidecar-secret",
                &sm,
                json!([{"name": "key", "value": "sidecar-value-5d1e"}]),
                Value::Null,
            )
            .await;
        let t = g.template("sidecar-hold", HOLD_SCRIPT, &["key"]).await;
        let sm = g
            .manager(
                "sidecar-hold",
                &t,
                json!([{"name": "key", "value": "test"}]),
                &["sidecar"],
                Value::Null,
            )
            .await;
        let h = g
            .param_secret(
                "sidecar-held",
                &sm,
                json!([{"name": "key", "value": "drain-value-0b7c"}]),
                Value::Null,
            )
            .await;
        (s, h)
    });
    let got = rt.block_on(g.resolve(&secret, None, None, Some("PROD")));
    assert_eq!(got.unwrap(), "sidecar:sidecar-value-5d1e:10001");

    // The image's own HEALTHCHECK command, run by podman.
    let hc = output(podman::podman().args(["healthcheck", "run", &name]));
    assert!(
        hc.status.success(),
        "healthcheck failed: {}{}",
        String::from_utf8_lossy(&hc.stdout),
        String::from_utf8_lossy(&hc.stderr)
    );

    // podman stop during a task: SIGTERM drains it.
    std::fs::write(ctl.join("hold"), "").unwrap();
    let g2 = g.clone();
    let pending = rt.spawn(async move {
        g2.send(
            RESOLVE,
            json!({"i": {"secretId": held, "environmentType": "PROD"}}),
        )
        .await
        .json
    });
    poll("the held task to start", Duration::from_secs(60), || {
        c.sh("test -e /tmp/started").status.success().then_some(())
    });
    let stopper = {
        let name = name.clone();
        std::thread::spawn(move || output(podman::podman().args(["stop", "-t", "120", &name])))
    };
    poll(
        "the agent to begin draining",
        Duration::from_secs(30),
        || ship::draining(port).then_some(()),
    );
    assert!(
        ship::health(port).is_some_and(|h| h["inFlight"] == 1),
        "the draining agent still runs the task"
    );
    std::fs::write(ctl.join("go"), "").unwrap();
    let reply = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), pending).await })
        .expect("the drained result arrives")
        .unwrap();
    assert_eq!(
        reply["data"]["resolveSecret"]["value"], "held:drain-value-0b7c",
        "{reply}"
    );
    let stop = stopper.join().unwrap();
    assert!(
        stop.status.success(),
        "podman stop: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert_eq!(
        c.inspect("{{.State.ExitCode}}"),
        "0",
        "the drained agent exits 0"
    );
    let logs = c.logs();
    assert!(
        logs.contains("drained"),
        "the agent logged its drain:\n{logs}"
    );
    assert_no_secret(
        "the sidecar's logs",
        &logs,
        &[
            "sidecar-value-5d1e",
            "drain-value-0b7c",
            &cp.agent_token,
            &cp.api_key,
        ],
    );
    assert_no_secret(
        "the manager's log",
        &cp.log_text(),
        &[
            "sidecar-value-5d1e",
            "drain-value-0b7c",
            &cp.agent_token,
            &cp.api_key,
        ],
    );
    eprintln!("[{:?}] drained on podman stop; logs clean", t0.elapsed());
}

/// The fenced blocks of `lang` in a Markdown file.
fn blocks(md: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match &mut cur {
            None if line.trim_start() == format!("```{lang}") => cur = Some(String::new()),
            Some(b) if line.trim_start() == "```" => {
                out.push(std::mem::take(b));
                cur = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Parse YAML documents with python3's yaml module; their JSON.
fn parse_yaml(text: &str) -> Option<Vec<Value>> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No module named 'yaml'") {
        return None;
    }
    assert!(out.status.success(), "YAML does not parse: {err}\n{text}");
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn the_compose_and_kubernetes_examples_parse_with_the_settings_the_image_needs() {
    let md = std::fs::read_to_string(ship::repo().join("docs/sidecar.md")).unwrap();
    let yaml = blocks(&md, "yaml");
    assert_eq!(
        yaml.len(),
        2,
        "docs/sidecar.md has a compose file and a pod"
    );
    let Some(compose) = parse_yaml(&yaml[0]) else {
        return skip(
            "ship_sidecar compose",
            "python3's yaml module is missing (scripts/ci-setup-ship.sh installs python3-yaml)",
        );
    };
    let agent = &compose[0]["services"]["csm-agent"];
    assert_eq!(agent["read_only"], true, "{agent}");
    assert_eq!(agent["user"], "10001:10001");
    assert!(agent["tmpfs"].to_string().contains("/tmp"));
    let env = agent["environment"].to_string();
    for k in ["CSM_MANAGER", "CSM_TOKEN_FILE"] {
        assert!(env.contains(k), "compose sets {k}: {env}");
    }
    assert!(agent["stop_grace_period"].is_string());
    assert!(agent["healthcheck"]["test"]
        .to_string()
        .contains("/healthz"));
    assert!(compose[0]["secrets"]["csm_agent_token"].is_object());

    let pod = &parse_yaml(&yaml[1]).unwrap()[0];
    assert_eq!(pod["kind"], "Pod");
    assert!(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap()
            >= 960
    );
    let agent = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "csm-agent")
        .expect("a csm-agent container");
    let sc = &agent["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 10001);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert!(agent["livenessProbe"]["exec"]["command"]
        .to_string()
        .contains("/healthz"));
    assert!(agent["volumeMounts"].to_string().contains("/tmp"));
}
