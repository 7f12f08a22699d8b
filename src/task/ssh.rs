//! From a connector (Harness's `sshCredential`, plus host keys) and explicit settings to an
//! [`SshTarget`].
//!
//! The secret ids a connector names (its key, passphrase or password) are looked up in the
//! values the caller supplies, then in the connector's inline `{"value": …}` secrets. This
//! module never reads a file a connector names as a secret source (`{"file": …}`): a
//! connector that arrives over the network must not make the agent read its own files. A
//! caller that trusts the connector (the CLI) resolves those into `secrets` first.

use std::path::PathBuf;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::{bounds, Failure};
use crate::exec::ssh::{self, HostKeyPolicy, SshAuth, SshCredential, SshTarget};
use crate::input::{ConnectorFile, SecretSource};
use crate::secret::Variables;

/// How to reach and log in to one SSH host. Explicit settings win over the connector's.
#[derive(Debug, Default)]
pub struct SshSpec {
    /// Host name or address.
    pub host: String,
    /// Port [default: the connector's, else 22].
    pub port: Option<u16>,
    /// Login user [default: the connector's `userName`].
    pub user: Option<String>,
    /// How to authenticate [default: the connector's method].
    pub auth: Option<SshAuth>,
    /// The connector, parsed with [`crate::input::parse_connector`].
    pub connector: Option<ConnectorFile>,
    /// The connector id the task names (the input's `connectorId`); when both this and the
    /// connector's `id` are given they must match.
    pub connector_id: Option<String>,
    /// known_hosts files to trust, beside the connector's `knownHosts`.
    pub known_hosts: Vec<PathBuf>,
    /// Trusted host keys (known_hosts lines or `SHA256:` fingerprints), beside the
    /// connector's `hostKeys`.
    pub host_keys: Vec<String>,
    /// known_hosts files to trust when neither the settings above nor the connector name any
    /// host key or file (the CLI passes `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`).
    /// Empty: such a target trusts no key, and every connection fails with `host_key`.
    pub default_known_hosts: Vec<PathBuf>,
    /// Accept any host key, unverified. Wins over every host-key setting.
    pub insecure_accept_any_host_key: bool,
}

/// Build an [`SshTarget`]: host, port, user, credential and host-key policy.
///
/// `secrets` holds values for the secret ids the connector's method names
/// (`sshKeySecretFileId`, `passphraseSecretId`, `passwordSecretId`); they must be UTF-8.
/// Errors are `invalid_input` and name fields and ids, never a value.
pub fn ssh_target(spec: SshSpec, secrets: &Variables) -> Result<SshTarget, Failure> {
    let SshSpec {
        host,
        port,
        user,
        auth,
        connector,
        connector_id,
        mut known_hosts,
        host_keys: mut pinned,
        default_known_hosts,
        insecure_accept_any_host_key,
    } = spec;
    if host.is_empty() || host.contains('\0') {
        return Err(Failure::invalid(
            "the SSH host must be a non-empty name or address",
        ));
    }
    if let (Some(want), Some(have)) = (
        &connector_id,
        connector.as_ref().and_then(|c| c.id.as_ref()),
    ) {
        if want != have {
            return Err(Failure::invalid(format!(
                "the input's connectorId {want:?} does not match the connector file's id {have:?}"
            )));
        }
    }
    let lookup = |id: &str| -> Result<SecretString, Failure> {
        if let Some(v) = secrets.get(id) {
            let text = std::str::from_utf8(v.expose_secret())
                .map_err(|_| Failure::invalid(format!("secret {id:?} is not UTF-8")))?;
            return Ok(SecretString::from(text.to_string()));
        }
        match connector.as_ref().and_then(|c| c.secrets.get(id)) {
            Some(SecretSource::Value(v)) => Ok(v.clone()),
            Some(SecretSource::File(_)) => Err(Failure::invalid(format!(
                "the connector gives secret {id:?} as a file, which is not read here; supply its value"
            ))),
            None => Err(Failure::invalid(format!(
                "the connector refers to secret {id:?}, which was not supplied"
            ))),
        }
    };

    let conn_auth = connector
        .as_ref()
        .and_then(|c| c.ssh_authentication.as_ref());
    let auth = match (auth, conn_auth) {
        (Some(auth), _) => auth,
        (None, Some(sa)) => {
            let m = &sa.ssh_authentication_method;
            match m.ssh_credential_type.as_str() {
                "SSH_KEY" => {
                    let k = m
                        .inline_ssh_key
                        .as_ref()
                        .ok_or_else(|| Failure::invalid("SSH_KEY needs inlineSSHKey"))?;
                    SshAuth::Key {
                        private_key: lookup(&k.ssh_key_secret_file_id)?,
                        passphrase: k.passphrase_secret_id.as_deref().map(lookup).transpose()?,
                    }
                }
                "SSH_KEY_FILE_PATH" => {
                    let k = m
                        .ssh_key_file
                        .as_ref()
                        .ok_or_else(|| Failure::invalid("SSH_KEY_FILE_PATH needs sshKeyFile"))?;
                    SshAuth::KeyFile {
                        path: PathBuf::from(&k.path),
                        passphrase: k.passphrase_secret_id.as_deref().map(lookup).transpose()?,
                    }
                }
                "PASSWORD" => {
                    let p = m
                        .server_password
                        .as_ref()
                        .ok_or_else(|| Failure::invalid("PASSWORD needs serverPassword"))?;
                    SshAuth::Password(lookup(&p.password_secret_id)?)
                }
                other => {
                    return Err(Failure::invalid(format!(
                        "sshCredentialType {other:?} is not supported (SSH_KEY, SSH_KEY_FILE_PATH, PASSWORD)"
                    )))
                }
            }
        }
        (None, None) => {
            return Err(Failure::invalid(
                "SSH needs credentials: --identity-file, --password-file or --connector",
            ))
        }
    };
    let user = user
        .or_else(|| conn_auth.map(|s| s.user_name.clone()))
        .ok_or_else(|| Failure::invalid("SSH needs a user: --user or the connector's userName"))?;
    if user.is_empty() || user.contains('\0') {
        return Err(Failure::invalid("the SSH user must be a non-empty name"));
    }
    let port = match port {
        Some(p) => bounds::port("--port", p)?,
        None => match conn_auth.and_then(|s| s.port) {
            Some(p) => bounds::port("the connector's port", p)?,
            None => ssh::DEFAULT_PORT,
        },
    };

    let host_keys = if insecure_accept_any_host_key {
        HostKeyPolicy::InsecureAcceptAny
    } else {
        if let Some(c) = &connector {
            known_hosts.extend(c.known_hosts.iter().map(PathBuf::from));
            pinned.extend(c.host_keys.iter().cloned());
        }
        if known_hosts.is_empty() && pinned.is_empty() {
            known_hosts = default_known_hosts;
        }
        HostKeyPolicy::Strict {
            known_hosts,
            pinned,
        }
    };
    Ok(SshTarget {
        host,
        port,
        credential: Arc::new(SshCredential::new(user, auth)),
        host_keys: Arc::new(host_keys),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse_connector;
    use crate::secret::secret_bytes;

    fn connector(method: serde_json::Value, extra: serde_json::Value) -> ConnectorFile {
        let mut doc = serde_json::json!({
            "id": "c1",
            "sshAuthentication": {"userName": "deploy", "port": 2222, "sshAuthenticationMethod": method},
        });
        for (k, v) in extra.as_object().unwrap() {
            doc[k] = v.clone();
        }
        parse_connector(&doc.to_string()).unwrap()
    }

    #[test]
    fn a_connector_key_comes_from_the_supplied_secrets() {
        let c = connector(
            serde_json::json!({"sshCredentialType": "SSH_KEY",
                "inlineSSHKey": {"sshKeySecretFileId": "k", "passphraseSecretId": "p"}}),
            serde_json::json!({"hostKeys": ["SHA256:abc"], "secrets": {"p": {"value": "inline-pass"}}}),
        );
        let mut secrets = Variables::new();
        secrets.insert("k", secret_bytes(b"KEY TEXT".to_vec()));
        let t = ssh_target(
            SshSpec {
                host: "h".into(),
                connector: Some(c),
                connector_id: Some("c1".into()),
                default_known_hosts: vec!["/nonexistent".into()],
                ..SshSpec::default()
            },
            &secrets,
        )
        .unwrap();
        assert_eq!((t.host.as_str(), t.port), ("h", 2222));
        assert_eq!(t.credential.user, "deploy");
        match &t.credential.auth {
            SshAuth::Key {
                private_key,
                passphrase,
            } => {
                assert_eq!(private_key.expose_secret(), "KEY TEXT");
                assert_eq!(passphrase.as_ref().unwrap().expose_secret(), "inline-pass");
            }
            other => panic!("{other:?}"),
        }
        // The connector pins a key, so the defaults are not added.
        match &*t.host_keys {
            HostKeyPolicy::Strict {
                known_hosts,
                pinned,
            } => {
                assert!(known_hosts.is_empty());
                assert_eq!(pinned, &["SHA256:abc"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_name_ids_and_fields_never_values() {
        let pw = || {
            connector(
                serde_json::json!({"sshCredentialType": "PASSWORD", "serverPassword": {"passwordSecretId": "pw"}}),
                serde_json::json!({"secrets": {"pw": {"file": "/etc/shadow"}}}),
            )
        };
        let spec = |c: ConnectorFile| SshSpec {
            host: "h".into(),
            connector: Some(c),
            ..SshSpec::default()
        };
        // A file-sourced secret is never read by the library.
        let e = ssh_target(spec(pw()), &Variables::new()).unwrap_err();
        assert!(
            e.message.contains("\"pw\"") && e.message.contains("file"),
            "{}",
            e.message
        );
        // Supplied values win, and must be UTF-8.
        let mut secrets = Variables::new();
        secrets.insert("pw", secret_bytes(b"\xffnot-utf8-value".to_vec()));
        let e = ssh_target(spec(pw()), &secrets).unwrap_err();
        assert!(!e.message.contains("not-utf8-value"), "{}", e.message);
        assert!(e.message.contains("\"pw\""), "{}", e.message);

        let mut c = pw();
        c.id = Some("other".into());
        let e = ssh_target(
            SshSpec {
                connector_id: Some("c1".into()),
                ..spec(c)
            },
            &Variables::new(),
        )
        .unwrap_err();
        assert!(e.message.contains("does not match"), "{}", e.message);

        for (host, port) in [("", None), ("h", Some(0))] {
            let e = ssh_target(
                SshSpec {
                    host: host.into(),
                    port,
                    user: Some("u".into()),
                    auth: Some(SshAuth::Password(SecretString::from("x".to_string()))),
                    ..SshSpec::default()
                },
                &Variables::new(),
            )
            .unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidInput, "{}", e.message);
        }
    }

    #[test]
    fn the_connectors_port_is_bounded_too() {
        let c = connector(
            serde_json::json!({"sshCredentialType": "SSH_KEY_FILE_PATH", "sshKeyFile": {"path": "/k"}}),
            serde_json::json!({}),
        );
        let mut c = c;
        c.ssh_authentication.as_mut().unwrap().port = Some(0);
        let e = ssh_target(
            SshSpec {
                host: "h".into(),
                connector: Some(c),
                ..SshSpec::default()
            },
            &Variables::new(),
        )
        .unwrap_err();
        assert_eq!(e.message, "the connector's port must be from 1 to 65535");
    }
}
