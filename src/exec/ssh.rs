//! The SSH executor: runs the wrapped script on a target host. (in progress)

use crate::error::{ErrorKind, Kind};

/// Why an SSH session could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The host could not be reached.
    #[error("cannot connect to {host}:{port}: {reason}")]
    Connect {
        /// Host as given.
        host: String,
        /// Port.
        port: u16,
        /// What failed.
        reason: String,
    },
}

impl Kind for SshError {
    fn kind(&self) -> ErrorKind {
        match self {
            SshError::Connect { .. } => ErrorKind::SshConnect,
        }
    }
}
