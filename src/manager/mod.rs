//! The control plane's side of the agent link: the HTTP(S) server, the agent endpoint and
//! the dispatch [`hub`].
//!
//! Shape (after mini-redis's `server::run`): [`run`] takes a bound listener, a config and a
//! shutdown future; [`serve`] does the same with a [`Hub`] the caller keeps, so that the
//! GraphQL layer (and tests) can submit tasks while the server runs, and a test can kill
//! the network front and start a new one on the same listener while the hub lives on.
//!
//! The manager never imports the executors: it moves template documents, values and
//! targets to agents and results back.

pub mod api;
pub mod audit;
pub mod auth;
pub mod control;
pub mod graphql;
pub mod hub;
pub mod model;
pub mod scope;
pub mod store;
mod ws;

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use hub::{Hub, HubConfig, HubError, TaskFailure, TaskOutcome, TaskRequest};

/// The accepted agent tokens, kept only as SHA-256 digests and compared in constant time.
pub struct AgentTokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for AgentTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgentTokens({} tokens)", self.digests.len())
    }
}

/// Why the manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The token file is unusable.
    #[error("agent token file {path}: {reason}")]
    Tokens {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The TLS certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
}

impl AgentTokens {
    /// Tokens from text: one per line; blank lines and `#` comments are skipped.
    pub fn from_lines(text: &str) -> AgentTokens {
        let digests = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|t| Sha256::digest(t.as_bytes()).into())
            .collect();
        AgentTokens { digests }
    }

    /// Tokens from a file. An empty set is an error: no agent could ever connect.
    pub fn from_file(path: &Path) -> Result<AgentTokens, ManagerError> {
        let err = |reason: String| ManagerError::Tokens {
            path: path.display().to_string(),
            reason,
        };
        let text = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| err(e.to_string()))?);
        let text = std::str::from_utf8(&text).map_err(|_| err("not UTF-8".into()))?;
        let t = AgentTokens::from_lines(text);
        if t.is_empty() {
            return Err(err("holds no token".into()));
        }
        Ok(t)
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the tokens. Digests first, so the comparison takes the
    /// same time whatever the lengths; every token is compared, without an early exit.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let d: [u8; 32] = Sha256::digest(presented).into();
        let mut ok = subtle::Choice::from(0);
        for t in &self.digests {
            ok |= t.ct_eq(&d);
        }
        bool::from(ok)
    }
}

/// How the manager serves agents.
#[derive(Debug)]
pub struct ManagerConfig {
    /// Hub timings and limits.
    pub hub: HubConfig,
    /// Accepted agent tokens.
    pub tokens: AgentTokens,
    /// Serve HTTPS/WSS with this configuration instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a new connection may take to send `hello`.
    pub handshake_timeout: Duration,
}

impl ManagerConfig {
    /// Defaults around a token set.
    pub fn new(tokens: AgentTokens) -> Self {
        ManagerConfig {
            hub: HubConfig::default(),
            tokens,
            tls: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Install rustls's process-wide crypto provider (ring) once. Without one, rustls panics
/// when it first builds a configuration. Safe to call any number of times.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS server configuration from a PEM certificate chain and a PEM private key.
pub fn tls_server_config(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, ManagerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ManagerError::Tls(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ManagerError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ManagerError::Tls(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    // The key's parse errors never quote it.
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| ManagerError::Tls(format!("{}: no usable private key", key.display())))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ManagerError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serve agents on `listener` with a new hub until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: ManagerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let hub = Hub::new(config.hub.clone());
    serve(listener, hub, config, shutdown).await
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Serve agents on `listener`, feeding `hub`, until `shutdown` completes; then close every
/// session with 1001 (going away). Dropping the future instead drops every session at
/// once, without a close frame, as a crash would.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    config: ManagerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, hub, config, axum::Router::new(), shutdown).await
}

/// [`serve`], with more routes (the GraphQL API, [`api::router`]) beside the agent
/// endpoint on the same listener.
pub async fn serve_with(
    listener: TcpListener,
    hub: Hub,
    config: ManagerConfig,
    routes: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let kill = CancellationToken::new();
    // Dropping this future (a test's "crash") ends every session with it.
    let _kill_on_drop = kill.clone().drop_guard();
    let graceful = CancellationToken::new();
    let ep = Arc::new(ws::Endpoint {
        max_frame_bytes: hub.config().max_frame_bytes,
        hub,
        tokens: Arc::new(config.tokens),
        handshake_timeout: config.handshake_timeout,
        graceful: graceful.clone(),
        kill: kill.clone(),
        sessions: TaskTracker::new(),
    });
    let app = ws::router(ep.clone()).merge(routes);
    let tls = config.tls.map(tokio_rustls::TlsAcceptor::from);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = tls.is_some(), "manager listening for agents");
    }
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            acc = listener.accept() => {
                let (tcp, peer) = match acc {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (app, tls, kill) = (app.clone(), tls.clone(), kill.clone());
                conns.spawn(async move {
                    let io: Box<dyn Io> = match tls {
                        None => Box::new(tcp),
                        Some(acceptor) => {
                            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                                Ok(Ok(s)) => Box::new(s),
                                Ok(Err(e)) => {
                                    tracing::info!(%peer, "TLS handshake failed: {e}");
                                    return;
                                }
                                Err(_) => return,
                            }
                        }
                    };
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(io), svc)
                        .with_upgrades();
                    tokio::select! {
                        r = conn => if let Err(e) = r { tracing::debug!(%peer, "HTTP connection ended: {e}") },
                        _ = kill.cancelled() => {}
                    }
                });
            }
        }
    }
    tracing::info!("manager shutting down");
    graceful.cancel();
    ep.sessions.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), ep.sessions.wait()).await;
    kill.cancel();
    conns.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_exactly_and_skip_comments() {
        let t = AgentTokens::from_lines("# agents\n  tok-one  \n\ntok-two\n");
        assert_eq!(t.len(), 2);
        assert!(t.verify(b"tok-one"));
        assert!(t.verify(b"tok-two"));
        assert!(!t.verify(b"tok-on"));
        assert!(!t.verify(b"tok-one "));
        assert!(!t.verify(b""));
        assert!(!t.verify(b"# agents"));
        assert!(format!("{t:?}").contains("2 tokens"));
    }
}
