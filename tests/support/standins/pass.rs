//! A real `pass` store for the pass template's test: a throwaway GnuPG home with a key
//! made for the test (no passphrase), a password store initialised for it, and entries
//! inserted with `pass insert`. Dropping it kills the gpg-agent the key generation started.

use super::cli::Run;

/// A throwaway GnuPG home and password store; the gpg-agent the key generation started
/// is killed when this is dropped.
pub struct PassStore {
    dir: tempfile::TempDir,
}

impl PassStore {
    pub fn gnupg(&self) -> std::path::PathBuf {
        self.dir.path().join("gnupg")
    }
    pub fn store(&self) -> std::path::PathBuf {
        self.dir.path().join("store")
    }
    pub fn cmd(&self, program: &str) -> std::process::Command {
        let mut c = std::process::Command::new(program);
        c.env("GNUPGHOME", self.gnupg())
            .env("PASSWORD_STORE_DIR", self.store());
        c
    }
    pub fn new() -> PassStore {
        let dir = tempfile::Builder::new()
            .prefix("csm-pass")
            .tempdir()
            .unwrap();
        let s = PassStore { dir };
        std::fs::create_dir(s.gnupg()).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(s.gnupg(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let ok = s
            .cmd("gpg")
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args([
                "--quick-gen-key",
                "csm-agent test <csm-test@example.invalid>",
            ])
            .args(["default", "default", "never"])
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "gpg: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let init = s
            .cmd("pass")
            .args(["init", "csm-test@example.invalid"])
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "pass init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        s
    }
    pub fn insert(&self, entry: &str, content: &str) {
        use std::io::Write as _;
        let mut child = self
            .cmd("pass")
            .args(["insert", "--multiline", "--", entry])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(content.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "pass insert {entry:?}");
    }
    pub fn run(&self, entry: &str, field: &str) -> Run {
        Run::new("pass")
            .var("entry", entry)
            .var("field", field)
            .var("storeDir", self.store().as_os_str().as_encoded_bytes())
            .var("gnupgHome", self.gnupg().as_os_str().as_encoded_bytes())
    }
}

impl Drop for PassStore {
    fn drop(&mut self) {
        let _ = self.cmd("gpgconf").args(["--kill", "all"]).status();
    }
}
