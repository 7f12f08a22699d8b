//! Running an `examples/templates/` template through the real `csm-agent test-run`
//! binary, with every value passed in a file (`--var-file`, `--secret-file`) so values
//! with newlines round-trip and none is in argv; plus the checks the store tests share:
//! the tools a template needs, a hostile value and proof that its payload never ran.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::skip::skip;

pub const BIN: &str = env!("CARGO_BIN_EXE_csm-agent");

/// `examples/templates/NAME.json`.
pub fn template(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/templates")
        .join(format!("{name}.json"))
}

/// One `test-run` invocation being put together, in its own temporary directory, which is
/// also the script's commandPath (so a relative `touch pwned` would land there).
pub struct Run {
    dir: tempfile::TempDir,
    args: Vec<OsString>,
    files: usize,
    path: Option<OsString>,
}

impl Run {
    pub fn new(template_name: &str) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let args = vec![
            "test-run".into(),
            "--template".into(),
            template(template_name).into(),
            "--command-path".into(),
            dir.path().into(),
            // A failure is the point of some tests: no retries, no 1 s pauses.
            "--attempts".into(),
            "1".into(),
        ];
        Run {
            dir,
            args,
            files: 0,
            path: None,
        }
    }

    /// The commandPath directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn value_file(&mut self, value: &[u8]) -> PathBuf {
        self.files += 1;
        let p = self.dir.path().join(format!(".value-{}", self.files));
        std::fs::write(&p, value).unwrap();
        p
    }

    /// A template variable, from a file.
    pub fn var(mut self, name: &str, value: impl AsRef<[u8]>) -> Run {
        let p = self.value_file(value.as_ref());
        self.args.push("--var-file".into());
        self.args.push(assignment(name, &p));
        self
    }

    /// A stored secret for `${secrets.getValue("id")}`, from a file.
    pub fn secret(mut self, id: &str, value: impl AsRef<[u8]>) -> Run {
        let p = self.value_file(value.as_ref());
        self.args.push("--secret-file".into());
        self.args.push(assignment(id, &p));
        self
    }

    /// Put `dir` first on the PATH that csm-agent (and so the script) gets.
    pub fn path_first(mut self, dir: &Path) -> Run {
        let mut path = OsString::from(dir);
        if let Some(old) = std::env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        self.path = Some(path);
        self
    }

    fn output(&self, extra: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args)
            .args(extra)
            .env("TMPDIR", self.dir.path());
        if let Some(path) = &self.path {
            cmd.env("PATH", path);
        }
        cmd.output().unwrap()
    }

    /// `--reveal --quiet`: stdout is exactly the secret.
    pub fn reveal(&self) -> Output {
        self.output(&["--reveal", "--quiet"])
    }

    /// `--json` (no `--reveal`): the one JSON object on stdout, parsed.
    pub fn json(&self) -> (Output, serde_json::Value) {
        let out = self.output(&["--json"]);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out, v)
    }
}

fn assignment(name: &str, path: &Path) -> OsString {
    let mut s = OsString::from(format!("{name}="));
    s.push(path);
    s
}

/// Whether every tool is on PATH; if not, a loud skip (a failure under CI).
pub fn have_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return true;
    }
    skip(
        test,
        &format!("{missing:?} not installed; run scripts/ci-setup-stores.sh as root"),
    );
    false
}

fn on_path(tool: &str) -> bool {
    which(tool).is_some()
}

/// The executable `tool` on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Wrappers for `tools` in a directory of their own: each appends its argv to a log
/// (NUL-separated) and execs the real program. With the directory first on PATH, the log
/// holds every argv a script gave those programs.
pub struct ArgvLog {
    dir: tempfile::TempDir,
}

impl ArgvLog {
    pub fn new(tools: &[&str]) -> ArgvLog {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("argv.log");
        std::fs::write(&log, b"").unwrap();
        for tool in tools {
            let real = which(tool).unwrap_or_else(|| panic!("{tool} is not on PATH"));
            let shim = dir.path().join(tool);
            std::fs::write(
                &shim,
                format!(
                    "#!/bin/bash\nprintf '%s\\0' \"$0\" \"$@\" >>'{}'\nexec '{}' \"$@\"\n",
                    log.display(),
                    real.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        ArgvLog { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every logged argv word, program names included.
    pub fn words(&self) -> Vec<Vec<u8>> {
        let raw = std::fs::read(self.dir.path().join("argv.log")).unwrap();
        raw.split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }
}

/// curl's version as (major, minor), from `curl --version`.
pub fn curl_version() -> Option<(u32, u32)> {
    let out = Command::new("curl").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split_whitespace().nth(1)?;
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// A value that breaks every naive use: quotes, a command substitution and backquotes
/// that would create `pwned`/`pwned2` in commandPath, `&`, `=`, `;`, `#`, `%41`, `+`, a
/// backslash, spaces, a newline, and a `/`.
pub const HOSTILE: &str = "it's \"q\" $(touch pwned) `touch pwned2` & a=b; #%41+ \\ x/y\nline two";

/// The hostile value's payload did not run in `dir`.
pub fn assert_nothing_ran(dir: &Path) {
    for marker in ["pwned", "pwned2"] {
        assert!(
            !dir.join(marker).exists(),
            "the hostile value's `touch {marker}` ran"
        );
    }
}

/// Exit 0 and exactly `want` on stdout.
#[track_caller]
pub fn assert_secret(out: &Output, want: &[u8]) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "test-run failed; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        want,
        "stdout {:?} is not the secret {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(want)
    );
}

/// Exit 1 with `script_failed` whose message contains `mentions`, and none of `never`
/// anywhere in what the process printed (stdout, the JSON's logs, stderr).
#[track_caller]
pub fn assert_script_failed(out: &Output, v: &serde_json::Value, mentions: &str, never: &[&str]) {
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["kind"], "script_failed", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "the error should say {mentions:?}: {message}"
    );
    for secret in never {
        assert!(!secret.is_empty());
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !contains(bytes, secret.as_bytes()),
                "{stream} contains a value that must never be printed: {}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
