//! The shipping commands of the real binary: `config check` (validates, prints the
//! effective configuration, never the token), `config defaults`, `completions`, `man`, and
//! a complete `--help` on every subcommand.

use std::path::Path;
use std::process::{Command, Output};

use clap::CommandFactory;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_csm-agent"));
    // Only what a test sets: no CSM_* from the developer's shell.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CSM_") {
            c.env_remove(k);
        }
    }
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const TOKEN: &str = "tok-3c9d1f0e-never-printed";

#[test]
fn config_check_prints_the_effective_configuration_and_never_the_token() {
    let d = tempfile::tempdir().unwrap();
    let token = write(d.path(), "token", &format!("{TOKEN}\n"));
    let file = write(
        d.path(),
        "agent.toml",
        &format!(
            "manager = \"https://cp.example:8443\"\ntoken_file = \"{token}\"\n\
             selectors = [\"eu\", \"prod\"]\n\n[policy]\nssh_hosts = [\"10.20.0.0/16:22\"]\n"
        ),
    );
    let (code, out, err) = run(bin()
        .args(["config", "check", &file])
        .env("CSM_CAPACITY", "7"));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("manager = \"https://cp.example:8443\""),
        "{out}"
    );
    assert!(
        out.contains("selectors = [\"eu\", \"prod\"]  # file"),
        "{out}"
    );
    assert!(out.contains("capacity = 7  # CSM_CAPACITY"), "{out}");
    assert!(out.contains("10.20.0.0/16:22"), "{out}");
    assert!(out.contains("redacted"), "{out}");
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
    // The printed configuration is TOML that parses.
    out.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{out}"));

    // The token in the environment is read and redacted too.
    let empty = write(d.path(), "empty.toml", "");
    let (code, out, err) = run(bin()
        .args(["config", "check", &empty])
        .env("CSM_MANAGER", "http://127.0.0.1:1")
        .env("CSM_TOKEN", TOKEN));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("from CSM_TOKEN, redacted"), "{out}");
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
}

#[test]
fn config_check_names_the_key_of_an_error_and_exits_2() {
    let d = tempfile::tempdir().unwrap();
    let token = write(d.path(), "token", &format!("{TOKEN}\n"));
    let bad = write(
        d.path(),
        "bad.toml",
        &format!(
            "manager = \"https://cp.example\"\ntoken_file = \"{token}\"\n[policy]\n\
             ssh_hosts = [\"ok.example\", \"10.0.0.0/99\"]\n"
        ),
    );
    let (code, out, err) = run(bin().args(["config", "check", &bad]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("policy.ssh_hosts[1]"), "{err}");
    assert!(!err.contains(TOKEN));

    let typo = write(d.path(), "typo.toml", "manger = \"https://cp.example\"\n");
    let (code, _, err) = run(bin().args(["config", "check", &typo]));
    assert_eq!(code, 2);
    assert!(err.contains("manger"), "{err}");

    let empty = write(d.path(), "empty-token", "");
    let file = write(
        d.path(),
        "a.toml",
        &format!("manager = \"https://cp.example\"\ntoken_file = \"{empty}\"\n"),
    );
    let (code, _, err) = run(bin().args(["config", "check", &file]));
    assert_eq!(code, 2, "an empty token file is an error: {err}");
}

#[test]
fn config_defaults_is_a_commented_toml_file_with_every_section() {
    let (code, out, _) = run(bin().args(["config", "defaults"]));
    assert_eq!(code, 0);
    out.parse::<toml::Table>().unwrap();
    for key in [
        "manager",
        "token_file",
        "capacity",
        "max_timeout_secs",
        "ssh_hosts",
    ] {
        assert!(out.contains(key), "defaults lists {key}");
    }
}

#[test]
fn completions_cover_every_subcommand_in_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(bin().args(["completions", shell]));
        assert_eq!(code, 0, "{shell}: {err}");
        for sub in [
            "run",
            "manager",
            "dev",
            "test-run",
            "config",
            "completions",
            "man",
        ] {
            assert!(out.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let (code, _, _) = run(bin().args(["completions", "tcsh"]));
    assert_eq!(code, 2, "an unknown shell is refused");
    // bash accepts what it is given.
    if Path::new("/bin/bash").exists() {
        let (_, script, _) = run(bin().args(["completions", "bash"]));
        let (code, _, err) = run(Command::new("bash").args(["-n", "-c", &script]));
        assert_eq!(code, 0, "{err}");
    }
}

#[test]
fn man_writes_one_page_per_command() {
    let (code, out, _) = run(bin().arg("man"));
    assert_eq!(code, 0);
    assert!(
        out.starts_with(".ie") || out.contains(".TH"),
        "roff: {}",
        &out[..80.min(out.len())]
    );
    let d = tempfile::tempdir().unwrap();
    let (code, _, err) = run(bin().args(["man", "--dir"]).arg(d.path()));
    assert_eq!(code, 0, "{err}");
    for page in [
        "csm-agent.1",
        "csm-agent-run.1",
        "csm-agent-manager.1",
        "csm-agent-dev.1",
        "csm-agent-test-run.1",
        "csm-agent-config.1",
        "csm-agent-config-check.1",
    ] {
        let text =
            std::fs::read_to_string(d.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is a man page");
    }
}

/// Every command path, e.g. ["config", "check"].
fn paths(cmd: &clap::Command, prefix: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let mut p = prefix.clone();
        p.push(sub.get_name().to_string());
        out.push((p.clone(), sub.clone()));
        paths(sub, p, out);
    }
}

#[test]
fn every_subcommand_has_a_complete_help() {
    let root = csm_agent::cli::Cli::command();
    let mut all = Vec::new();
    paths(&root, Vec::new(), &mut all);
    assert!(all.len() >= 9, "{} commands", all.len());
    for (path, cmd) in &all {
        let what = path.join(" ");
        assert!(cmd.get_about().is_some(), "`{what}` has no description");
        for arg in cmd.get_arguments() {
            if arg.is_hide_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
                continue;
            }
            assert!(
                arg.get_help().is_some() || arg.get_long_help().is_some(),
                "`{what}`: argument `{}` has no help",
                arg.get_id()
            );
        }
        let (code, out, err) = run(bin().args(path).arg("--help"));
        assert_eq!(code, 0, "`{what} --help`: {err}");
        assert!(out.contains("Usage: csm-agent"), "`{what} --help`:\n{out}");
    }
}
