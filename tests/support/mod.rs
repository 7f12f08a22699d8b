//! Shared support code for the integration tests (`mod support;` in each test file).
//!
//! - [`sshd`]: a real OpenSSH `sshd` on a free 127.0.0.1 port, with generated keys.
//! - [`ssh`]: targets, jobs and /proc probes for the SSH executor tests against [`sshd`].
//! - [`skip`]: loud skips that fail under CI.
//! - [`bashfuzz`]: the differential fuzzer of the template renderer against real bash.
//! - [`agentnet`]: an in-process manager, real agent processes, hand-driven WebSocket peers.
//! - [`standins`]: loopback stand-ins for the secret stores of `examples/templates/`.
//! - [`podman`]: containers (podman + runc, mmdebstrap images) for the shipping tests.
//! - [`ship`]: a real `csm-agent manager` process for the shipping tests.

// Each integration test binary compiles this module on its own and uses only part of
// it, so items unused by one binary would otherwise trip `dead_code` there.
#![allow(dead_code)]

pub mod agentnet;
pub mod bashfuzz;
pub mod podman;
pub mod ship;
pub mod skip;
pub mod ssh;
pub mod sshd;
pub mod standins;
