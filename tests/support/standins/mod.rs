//! Loopback stand-ins for the secret stores that `examples/templates/` read from
//! (`tests/store_templates.rs`). Each answers its store's documented request with the
//! documented response shape, checks what a real server would check (method, path, query,
//! auth header, body, a SigV4 signature), answers mistakes with the store's own error
//! shape and status, and records every request so a test can assert what arrived.
//!
//! - [`http`]: the HTTP/1.1 server on `127.0.0.1:0` under all of them.
//! - [`sigv4`]: AWS Signature Version 4 verification.
//! - [`cli`]: running a template through the real `csm-agent test-run`, and shared checks.
//! - [`vault`], [`aws`], [`azure`], [`onepassword`], [`cyberark`], [`doppler`]: the stores,
//!   each with the fixtures its tests use (credentials, example data, a `test-run` builder).
//! - [`pass`]: a real `pass` store with a throwaway GnuPG key.

pub mod aws;
pub mod azure;
pub mod cli;
pub mod cyberark;
pub mod doppler;
pub mod http;
pub mod onepassword;
pub mod pass;
pub mod sigv4;
pub mod vault;
