//! The README's walk-through, executed: every ```sh block of its "Walk-through" section,
//! in order, as one bash script, against a real `csm-agent dev` process. The store path
//! `/tmp/csm-demo` is moved into a temporary directory; nothing else is changed.

mod cp_support;
mod support;

use cp_support::*;

fn walkthrough() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("\n## Walk-through")
        .expect("a Walk-through section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map(|i| i + 3).unwrap_or(rest.len());
    let section = &rest[..end];
    let mut script = String::new();
    let mut in_sh = false;
    for line in section.lines() {
        if in_sh {
            if line.trim_end() == "```" {
                in_sh = false;
            } else {
                script.push_str(line);
                script.push('\n');
            }
        } else if line.trim_end() == "```sh" {
            in_sh = true;
        }
    }
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_against_a_real_dev_process() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        support::skip::skip(
            "the_readme_walkthrough_runs_against_a_real_dev_process",
            "curl is not installed (scripts/ci-setup-cp.sh installs it)",
        );
        return;
    }
    let script = walkthrough();
    assert!(
        script.contains("createSecretManager") && script.contains("resolveSecret"),
        "{script}"
    );
    let demo = tempfile::tempdir().unwrap();
    let script = script.replace("/tmp/csm-demo", demo.path().to_str().unwrap());
    let dev = DevProc::start(ADMIN_KEY, &[]);
    let out = tokio::task::spawn_blocking({
        let url = dev.url.clone();
        move || {
            std::process::Command::new("bash")
                .args(["-euo", "pipefail", "-c", &script])
                .env("CSM_URL", url)
                .env("CSM_API_KEY", ADMIN_KEY)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for want in [
        "template: ",
        "secret manager: ",
        r#"{"data":{"resolveSecret":{"value":"hunter2-db-password"}}}"#,
        r#""code":"out_of_scope""#,
        r#""name":"DocExampleSecretManager_updated1""#,
        r#""code":"in_use""#,
        r#"{"data":{"deleteSecretManager":{"clientMutationId":"xPxNsOusEaAsdQifDdGxx"}}}"#,
    ] {
        assert!(
            stdout.contains(want),
            "missing {want} in:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    // Exactly the two errors the README announces.
    assert_eq!(stdout.matches("\"errors\"").count(), 2, "{stdout}");
    // Every id was captured.
    assert!(
        !stdout.contains("template: \n") && !stdout.contains("secret: \n"),
        "{stdout}"
    );
    assert!(dev.stop().success());
}
