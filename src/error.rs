//! Stable error kinds shared by the CLI, the executors and (later) the wire protocol.
//!
//! Every error in the crate maps to one [`ErrorKind`]. The kind's snake_case name is a
//! stable contract: `test-run --json` prints it, and the agent protocol will carry it.
//! Error *messages* never contain a secret or variable value; they name variables, hosts
//! and paths only.

use serde::{Deserialize, Serialize};

/// What went wrong, as a stable, machine-readable category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Malformed input: bad JSON, bad flags, an unusable template document.
    InvalidInput,
    /// One or more template variables have no value.
    MissingVariable,
    /// The template cannot be rendered safely with the given values.
    RenderError,
    /// `commandPath` is missing or is not a directory.
    CommandPath,
    /// The script exited non-zero, or ended without reporting a result.
    ScriptFailed,
    /// The script left `$secret` empty, unset, or set to the literal `null`.
    EmptySecret,
    /// The attempt ran past its deadline and was killed.
    Timeout,
    /// The task was cancelled by its caller.
    Cancelled,
    /// The SSH host could not be reached (refused, unreachable, DNS, connect timeout).
    SshConnect,
    /// The SSH server rejected every authentication method tried.
    SshAuth,
    /// The SSH host key is unknown or has changed.
    HostKey,
    /// The request is well-formed but asks for something this build does not do.
    Unsupported,
    /// A local failure of the agent itself (spawn failed, pipe broke, ...).
    Internal,
    /// The script set `$secret` to more bytes than the configured limit.
    SecretTooLarge,
    /// The remote account's login shell did not run the wrapper (a `nologin` shell, or a
    /// shell that is not bash-compatible).
    RemoteShell,
    /// The agent refused the task under its local policy.
    Policy,
    /// No connected agent matches the task's selectors, or none came back in time.
    NoAgent,
}

impl ErrorKind {
    /// The stable snake_case name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::MissingVariable => "missing_variable",
            ErrorKind::RenderError => "render_error",
            ErrorKind::CommandPath => "command_path",
            ErrorKind::ScriptFailed => "script_failed",
            ErrorKind::EmptySecret => "empty_secret",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::SshConnect => "ssh_connect",
            ErrorKind::SshAuth => "ssh_auth",
            ErrorKind::HostKey => "host_key",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal",
            ErrorKind::SecretTooLarge => "secret_too_large",
            ErrorKind::RemoteShell => "remote_shell",
            ErrorKind::Policy => "policy",
            ErrorKind::NoAgent => "no_agent",
        }
    }

    /// The process exit code `csm-agent test-run` uses for this kind.
    ///
    /// 1: the script ran and failed; 2: the request was unusable; 3: timeout;
    /// 4: SSH could not be established, or the remote shell would not run the wrapper;
    /// 5: cancelled; 6: no agent could take the task; 70: the agent itself failed.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::ScriptFailed | ErrorKind::EmptySecret | ErrorKind::SecretTooLarge => 1,
            ErrorKind::InvalidInput
            | ErrorKind::MissingVariable
            | ErrorKind::RenderError
            | ErrorKind::CommandPath
            | ErrorKind::Unsupported
            | ErrorKind::Policy => 2,
            ErrorKind::Timeout => 3,
            ErrorKind::SshConnect
            | ErrorKind::SshAuth
            | ErrorKind::HostKey
            | ErrorKind::RemoteShell => 4,
            ErrorKind::Cancelled => 5,
            ErrorKind::Internal => 70,
            ErrorKind::NoAgent => 6,
        }
    }

    /// Whether another attempt could plausibly succeed.
    ///
    /// Rendering and input errors are deterministic, and `empty_secret` is final in
    /// Harness too. A wrong host key or credential will not fix itself in a second.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::ScriptFailed
                | ErrorKind::Timeout
                | ErrorKind::SshConnect
                | ErrorKind::Internal
        )
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Anything that can report its stable kind.
pub trait Kind {
    /// The stable category of this error.
    fn kind(&self) -> ErrorKind;
}

impl<T: Kind + ?Sized> Kind for &T {
    fn kind(&self) -> ErrorKind {
        (**self).kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialised_name_matches_as_str() {
        for k in [
            ErrorKind::InvalidInput,
            ErrorKind::MissingVariable,
            ErrorKind::RenderError,
            ErrorKind::CommandPath,
            ErrorKind::ScriptFailed,
            ErrorKind::EmptySecret,
            ErrorKind::Timeout,
            ErrorKind::Cancelled,
            ErrorKind::SshConnect,
            ErrorKind::SshAuth,
            ErrorKind::HostKey,
            ErrorKind::Unsupported,
            ErrorKind::Internal,
            ErrorKind::SecretTooLarge,
            ErrorKind::RemoteShell,
            ErrorKind::Policy,
            ErrorKind::NoAgent,
        ] {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            let back: ErrorKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, k);
        }
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        assert_eq!(ErrorKind::ScriptFailed.exit_code(), 1);
        assert_eq!(ErrorKind::EmptySecret.exit_code(), 1);
        assert_eq!(ErrorKind::RenderError.exit_code(), 2);
        assert_eq!(ErrorKind::CommandPath.exit_code(), 2);
        assert_eq!(ErrorKind::Timeout.exit_code(), 3);
        assert_eq!(ErrorKind::HostKey.exit_code(), 4);
    }
}
