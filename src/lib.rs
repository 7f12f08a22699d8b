//! csm-agent: an open, small and safe implementation of Harness's Custom Secrets Manager.
//!
//! # Layout
//! - [`error`]: stable error kinds shared by the CLI, executors and wire protocol.
//! - [`secret`]: secret-bearing value types.
//! - [`template`]: template documents and injection-proof rendering.
//! - [`mask`]: masking of values in script output, and capped log capture.
//! - [`exec`]: the executor trait, the shared bash wrapper, retries; `exec::local` runs
//!   scripts on this host, `exec::ssh` on a target host.
//! - [`input`]: the seed's GraphQL query-variable shapes, as `test-run --input` reads them,
//!   and connector files.
//! - [`task`]: one task prepared the same way for the CLI, the agent and the control plane
//!   (bounds, one masker, rendering, the target), and run on shared executors.
//! - [`agent`]: the long-running agent (`csm-agent run`): connection, outbox, policy.
//! - [`manager`]: the control plane's agent endpoint and dispatch hub.
//! - [`config`]: the agent's configuration (TOML, `CSM_*` environment, flags).
//! - [`protocol`]: the agent ↔ manager wire protocol (messages, versions, framing).
//! - [`harden`]: what every process does to itself first (not dumpable).
//! - [`cli`]: command-line parsing and the `test-run` command.

pub mod agent;
pub mod cli;
pub mod config;
pub mod error;
pub mod exec;
pub mod harden;
pub mod input;
pub mod manager;
pub mod mask;
mod mathfns;
pub mod protocol;
pub mod secret;
pub mod task;
pub mod template;

pub use error::{ErrorKind, Kind};
