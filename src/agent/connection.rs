//! Opening the WebSocket to the manager: the endpoint URL, TLS (rustls, a custom CA, an
//! optional client certificate) and the bearer token.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::protocol;

/// The socket to the manager.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The manager's agent endpoint, derived from its base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `ws://…` or `wss://…`, path included.
    pub url: String,
    /// Whether TLS is used.
    pub tls: bool,
}

/// Why the manager URL or TLS files are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

impl Endpoint {
    /// From a base URL: `http://`, `https://`, `ws://` or `wss://`, a host and optional
    /// port, and an optional path prefix (for a reverse proxy). The agent endpoint's path
    /// is appended unless the URL already ends with it.
    pub fn from_base(base: &str) -> Result<Endpoint, SetupError> {
        let base = base.trim();
        let (scheme, rest) = base.split_once("://").ok_or_else(|| {
            SetupError("the manager URL has no scheme (http, https, ws or wss)".into())
        })?;
        let (ws_scheme, tls) = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => ("ws", false),
            "https" | "wss" => ("wss", true),
            other => {
                return Err(SetupError(format!(
                    "manager URL scheme {other:?} is not http, https, ws or wss"
                )))
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            // Never echo the URL: user info would be a credential.
            return Err(SetupError(
                "the manager URL needs a host, and no user info".into(),
            ));
        }
        if path.contains('?') || path.contains('#') {
            return Err(SetupError(
                "the manager URL must not have a query or fragment".into(),
            ));
        }
        let path = path.trim_end_matches('/');
        let path = if path.ends_with(protocol::AGENT_PATH) {
            path.to_string()
        } else {
            format!("{path}{}", protocol::AGENT_PATH)
        };
        Ok(Endpoint {
            url: format!("{ws_scheme}://{authority}{path}"),
            tls,
        })
    }
}

/// TLS options for `wss://`.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Trust only the CA certificates in this PEM file (instead of the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Present this PEM certificate chain to the manager.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's PEM private key.
    pub client_key: Option<PathBuf>,
}

/// Install rustls's crypto provider (ring) for the process, once. Without one, the first
/// `wss://` connection panics.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read_certs(
    path: &Path,
    what: &str,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, SetupError> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| SetupError(format!("{what} {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| SetupError(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(SetupError(format!(
            "{what} {}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// The rustls client configuration for `files`.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, SetupError> {
    use rustls_pki_types::pem::PemObject;
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca_file {
        Some(ca) => {
            for c in read_certs(ca, "ca_file")? {
                roots
                    .add(c)
                    .map_err(|e| SetupError(format!("ca_file {}: {e}", ca.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(SetupError(
                    "no system CA certificates found; set ca_file (CSM_CA_FILE)".into(),
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let cfg = match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "client_cert")?;
            let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).map_err(|_| {
                SetupError(format!(
                    "client_key {}: no usable private key",
                    key.display()
                ))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| SetupError(format!("client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(SetupError("client_cert and client_key go together".into())),
    };
    Ok(Arc::new(cfg))
}

/// Why a connection attempt failed (for the log; the agent retries).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The manager answered the upgrade with an HTTP status (401 for a wrong token).
    #[error("the manager refused the connection: HTTP {0}")]
    Status(u16),
    /// Anything else: refused, TLS, timeout.
    #[error("{0}")]
    Other(String),
}

/// Open the WebSocket, authenticating with `token`, within `timeout`.
pub async fn connect(
    endpoint: &Endpoint,
    tls: Option<&Arc<rustls::ClientConfig>>,
    token: &SecretString,
    max_frame_bytes: usize,
    timeout: Duration,
) -> Result<Socket, ConnectError> {
    let mut req = endpoint
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Other(format!("bad manager URL: {e}")))?;
    let mut auth =
        HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).map_err(|_| {
            ConnectError::Other("the token has characters a header cannot carry".into())
        })?;
    auth.set_sensitive(true);
    req.headers_mut().insert("authorization", auth);
    let mut ws = WebSocketConfig::default();
    ws.max_message_size = Some(max_frame_bytes);
    ws.max_frame_size = Some(max_frame_bytes);
    let connector = tls.map(|c| tokio_tungstenite::Connector::Rustls(c.clone()));
    let fut = tokio_tungstenite::connect_async_tls_with_config(req, Some(ws), true, connector);
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(ConnectError::Other(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            Err(ConnectError::Status(resp.status().as_u16()))
        }
        Ok(Err(e)) => Err(ConnectError::Other(e.to_string())),
        Ok(Ok((socket, _))) => Ok(socket),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_derive_from_base_urls() {
        let e = |s: &str| Endpoint::from_base(s).unwrap();
        assert_eq!(e("http://cp:8080").url, "ws://cp:8080/agent/v1/connect");
        assert_eq!(
            e("https://cp.example/").url,
            "wss://cp.example/agent/v1/connect"
        );
        assert!(e("https://cp.example").tls);
        assert_eq!(
            e("ws://127.0.0.1:1/prefix").url,
            "ws://127.0.0.1:1/prefix/agent/v1/connect"
        );
        assert_eq!(
            e("wss://[::1]:9/agent/v1/connect").url,
            "wss://[::1]:9/agent/v1/connect"
        );
        for bad in [
            "cp:8080",
            "ftp://cp",
            "http://",
            "http://u:p@cp",
            "http://cp/?x=1",
        ] {
            assert!(Endpoint::from_base(bad).is_err(), "{bad}");
        }
    }
}
