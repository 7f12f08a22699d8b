//! The login account: [`TEST_USER`] with a per-machine random password as root, else the
//! current user (no password logins).

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use nix::unistd::{Uid, User};

use super::{is_root, lock_file, set_mode, write_file, PASSWORD_FILE, TEST_USER};

const USERADD: &str = "/usr/sbin/useradd";

const CHPASSWD: &str = "/usr/sbin/chpasswd";

/// Who logs in, and with which password; resolved once per process.
pub(super) struct Account {
    pub(super) user: String,
    pub(super) password: Option<String>,
}

impl Account {
    pub(super) fn get() -> &'static Account {
        static ACCOUNT: OnceLock<Account> = OnceLock::new();
        ACCOUNT.get_or_init(|| {
            if is_root() {
                ensure_test_user();
                Account {
                    user: TEST_USER.to_string(),
                    password: Some(ensure_test_password()),
                }
            } else {
                let user = User::from_uid(Uid::current())
                    .ok()
                    .flatten()
                    .expect("look up the current user in the passwd database");
                Account {
                    user: user.name,
                    password: None,
                }
            }
        })
    }
}

/// Creates [`TEST_USER`] if missing. Parallel test processes may race here: useradd
/// serialises on the passwd lock and the loser fails, so success means "exists now".
fn ensure_test_user() {
    let exists = || User::from_name(TEST_USER).ok().flatten().is_some();
    if exists() {
        return;
    }
    let out = Command::new(USERADD)
        .args(["-m", "-s", "/bin/bash", TEST_USER])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {USERADD}: {e}"));
    assert!(
        exists(),
        "could not create user {TEST_USER}: {USERADD} {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Returns [`TEST_USER`]'s password and makes sure the shadow entry matches it.
///
/// Concurrent test processes (nextest, several test binaries) must agree on one
/// password, or one process's `chpasswd` would break another's password logins. So the
/// first process to get here writes a random password to the root-only
/// [`PASSWORD_FILE`], and every process applies that file's password, under a lock so
/// that no one reads a half-written file. Re-applying it once per process also repairs
/// a user that was deleted and re-created (useradd leaves the account locked, which
/// sshd with `UsePAM no` refuses even for key logins).
fn ensure_test_password() -> String {
    let file = Path::new(PASSWORD_FILE);
    let dir = file.parent().expect("password file has a parent");
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    set_mode(dir, 0o700);
    let _lock = lock_file(&dir.join("lock"), "");

    let password = match fs::read_to_string(file) {
        Ok(p) if !p.trim().is_empty() => p.trim().to_string(),
        _ => {
            let mut bytes = [0u8; 18];
            getrandom::fill(&mut bytes).expect("random bytes for the test password");
            let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = dir.join("csmtest.password.tmp");
            write_file(&tmp, &password, 0o600);
            fs::rename(&tmp, file).unwrap_or_else(|e| panic!("rename to {PASSWORD_FILE}: {e}"));
            password
        }
    };

    let mut child = Command::new(CHPASSWD)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {CHPASSWD}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(format!("{TEST_USER}:{password}\n").as_bytes())
        .expect("write to chpasswd");
    let out = child.wait_with_output().expect("wait for chpasswd");
    assert!(
        out.status.success(),
        "{CHPASSWD} for {TEST_USER} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    password
}
