//! `csm-agent test-run` over SSH, the real binary against a real sshd: exact bytes with
//! `--reveal`, the SSH error kinds and exit codes, the seed's input form with a connector
//! file, and the host-key options.

mod support;

use std::net::TcpListener;
use std::path::Path;

use support::ssh::*;
use support::sshd::*;

#[test]
fn test_run_over_ssh_reveals_exact_bytes() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let template = write(
        dir.path(),
        "t.sh",
        br#"secret=$'bin\x01\nary \xfe\n\n'
echo "log line" >&2
"#,
    );
    let key = sshd.client_key(KeyKind::Ed25519Encrypted);
    let pp = write(dir.path(), "pp", format!("{KEY_PASSPHRASE}\n").as_bytes());
    let mut args = ssh_flags(&sshd, sshd.known_hosts_path());
    args.extend([
        "--template".into(),
        template.to_str().unwrap().into(),
        "--identity-file".into(),
        key.path.to_str().unwrap().into(),
        "--passphrase-file".into(),
        pp.to_str().unwrap().into(),
        "--reveal".into(),
    ]);
    let out = test_run(&strs(&args));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"bin\x01\nary \xfe\n\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("log line") && err.contains("ok: secret retrieved"),
        "{err}"
    );

    if sshd.supports_password() {
        let pw = write(dir.path(), "pw", sshd.password().as_bytes());
        let mut args = ssh_flags(&sshd, sshd.known_hosts_path());
        args.extend([
            "--template".into(),
            template.to_str().unwrap().into(),
            "--password-file".into(),
            pw.to_str().unwrap().into(),
            "--json".into(),
            "--reveal".into(),
        ]);
        let out = test_run(&strs(&args));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let j = json_of(&out);
        assert_eq!(j["ok"], true);
        assert_eq!(j["length"], 12);
        assert!(!String::from_utf8_lossy(&out.stdout).contains(sshd.password()));
    }
}

#[test]
fn test_run_ssh_failures_exit_4_with_stable_kinds() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let template = write(dir.path(), "t.sh", b"secret=x\n");
    let empty = write(dir.path(), "empty_known_hosts", b"");
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let good = sshd.client_key(KeyKind::Ed25519).path.clone();
    let wrong = sshd.wrong_key().path.clone();
    let cases: [(&str, &Path, &Path, Option<u16>); 3] = [
        ("host_key", &empty, &good, None),
        ("ssh_auth", sshd.known_hosts_path(), &wrong, None),
        ("ssh_connect", sshd.known_hosts_path(), &good, Some(closed)),
    ];
    for (kind, kh, key, port) in cases {
        let mut args = ssh_flags(&sshd, kh);
        if let Some(p) = port {
            args[3] = p.to_string();
        }
        args.extend([
            "--template".into(),
            template.to_str().unwrap().into(),
            "--identity-file".into(),
            key.to_str().unwrap().into(),
        ]);
        let plain = test_run(&strs(&args));
        assert_eq!(plain.status.code(), Some(4), "{kind}: {plain:?}");
        let err = String::from_utf8_lossy(&plain.stderr);
        assert!(err.contains(&format!("error[{kind}]")), "{kind}: {err}");
        args.push("--json".into());
        let out = test_run(&strs(&args));
        assert_eq!(out.status.code(), Some(4), "{kind}: {out:?}");
        let j = json_of(&out);
        assert_eq!(j["ok"], false);
        assert_eq!(j["error"]["kind"], kind);
        let msg = j["error"]["message"].as_str().unwrap();
        let port = port.unwrap_or(sshd.port());
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{kind}: {msg}");
    }
}

/// The seed's create form with `executeOnDelegate: false`, and a connector file shaped like
/// Harness's sshCredential input with secrets from files and pinned host keys.
#[test]
fn test_run_with_input_and_connector_file() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let template = write(dir.path(), "t.sh", b"secret=\"via-connector $(id -un)\"\n");
    let input = serde_json::json!({
        "secretManagerInput": {
            "secretManagerType": "CUSTOM",
            "customSecretManagerInput": {
                "name": "SshExample",
                "delegateSelectors": [],
                "testVariables": [],
                "isConnectorTemplatized": false,
                "executeOnDelegate": false,
                "templateId": "t1",
                "host": "127.0.0.1",
                "commandPath": "/tmp",
                "connectorId": "c1",
            }
        }
    });
    let input = write(dir.path(), "input.json", input.to_string().as_bytes());
    let key = sshd.client_key(KeyKind::Ed25519Encrypted);
    let key_file = write(dir.path(), "key", key.private_pem.as_bytes());
    let pp_file = write(dir.path(), "pp", KEY_PASSPHRASE.as_bytes());
    let connector = |method: serde_json::Value, secrets: serde_json::Value, id: &str| {
        let doc = serde_json::json!({
            "sshCredential": {
                "id": id,
                "name": "test connector",
                "authenticationScheme": "SSH",
                "sshAuthentication": {
                    "userName": sshd.user(),
                    "port": sshd.port(),
                    "sshAuthenticationMethod": method,
                },
            },
            "hostKeys": [sshd.known_hosts_line()],
            "secrets": secrets,
        });
        write(dir.path(), "connector.json", doc.to_string().as_bytes())
    };
    let mut methods = vec![
        (
            serde_json::json!({"sshCredentialType": "SSH_KEY",
                "inlineSSHKey": {"sshKeySecretFileId": "k1", "passphraseSecretId": "p1"}}),
            serde_json::json!({"k1": {"file": key_file}, "p1": {"file": pp_file}}),
        ),
        (
            serde_json::json!({"sshCredentialType": "SSH_KEY_FILE_PATH",
                "sshKeyFile": {"path": key.path, "passphraseSecretId": "p1"}}),
            serde_json::json!({"p1": {"file": pp_file}}),
        ),
    ];
    if sshd.supports_password() {
        let pw = write(dir.path(), "pw", sshd.password().as_bytes());
        methods.push((
            serde_json::json!({"sshCredentialType": "PASSWORD",
                "serverPassword": {"passwordSecretId": "pw1"}}),
            serde_json::json!({"pw1": {"file": pw}}),
        ));
    }
    for (method, secrets) in methods {
        let what = method["sshCredentialType"].to_string();
        let c = connector(method, secrets, "c1");
        let out = test_run(&[
            "--template",
            template.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--connector",
            c.to_str().unwrap(),
            "--attempts",
            "1",
            "--reveal",
        ]);
        assert_eq!(out.status.code(), Some(0), "{what}: {out:?}");
        assert_eq!(
            out.stdout,
            format!("via-connector {}", sshd.user()).as_bytes(),
            "{what}"
        );
    }

    // The connector's pinned host key is enforced: pin the other key and it is refused.
    let c = connector(
        serde_json::json!({"sshCredentialType": "SSH_KEY_FILE_PATH",
            "sshKeyFile": {"path": sshd.client_key(KeyKind::Ed25519).path}}),
        serde_json::json!({}),
        "c1",
    );
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&c).unwrap()).unwrap();
    let other = std::fs::read_to_string(sshd.other_host_key_known_hosts()).unwrap();
    doc["hostKeys"] = serde_json::json!([other.trim()]);
    std::fs::write(&c, doc.to_string()).unwrap();
    let out = test_run(&[
        "--template",
        template.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--connector",
        c.to_str().unwrap(),
        "--attempts",
        "1",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(json_of(&out)["error"]["kind"], "host_key");
}

/// test-run's host-key options: a pinned fingerprint, a connector's knownHosts file, and the
/// explicitly named insecure option, which warns every time.
#[test]
fn test_run_host_key_options() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let template = write(dir.path(), "t.sh", b"secret=pinned-ok\n");
    let empty = write(dir.path(), "empty", b"");
    let key = sshd
        .client_key(KeyKind::Ed25519)
        .path
        .to_str()
        .unwrap()
        .to_string();
    let base = |extra: &[&str]| {
        let mut args = ssh_flags(&sshd, &empty);
        args.extend(
            [
                "--template",
                template.to_str().unwrap(),
                "--identity-file",
                &key,
                "--reveal",
            ]
            .iter()
            .chain(extra)
            .map(|s| s.to_string()),
        );
        test_run(&strs(&args))
    };
    let fp = sshd.host_key_fingerprint();
    let out = base(&["--host-key", &fp]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"pinned-ok");

    let out = base(&["--insecure-accept-any-host-key"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"pinned-ok");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOT verified") && err.contains(&fp), "{err}");

    // A connector naming a known_hosts file instead of pinning keys.
    let connector = serde_json::json!({
        "authenticationScheme": "SSH",
        "sshAuthentication": {
            "userName": sshd.user(),
            "port": sshd.port(),
            "sshAuthenticationMethod": {"sshCredentialType": "SSH_KEY_FILE_PATH",
                "sshKeyFile": {"path": key}},
        },
        "knownHosts": [sshd.known_hosts_path()],
    });
    let c = write(dir.path(), "c.json", connector.to_string().as_bytes());
    let out = test_run(&[
        "--template",
        template.to_str().unwrap(),
        "--host",
        sshd.host(),
        "--connector",
        c.to_str().unwrap(),
        "--attempts",
        "1",
        "--reveal",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"pinned-ok");
}

/// The script-side error kinds over SSH, through the binary: kind and exit code.
#[test]
fn test_run_over_ssh_script_error_kinds() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = sshd
        .client_key(KeyKind::Ed25519)
        .path
        .to_str()
        .unwrap()
        .to_string();
    let cases: [(&str, &[&str], &str, i32); 4] = [
        (
            "secret=x\n",
            &["--command-path", "/no/such/dir"],
            "command_path",
            2,
        ),
        ("sleep 30\n", &["--timeout", "0.5"], "timeout", 3),
        ("echo bad >&2\nexit 9\n", &[], "script_failed", 1),
        ("secret=\n", &[], "empty_secret", 1),
    ];
    for (script, extra, kind, code) in cases {
        let template = write(dir.path(), "t.sh", script.as_bytes());
        let mut args = ssh_flags(&sshd, sshd.known_hosts_path());
        args.extend(
            [
                "--template",
                template.to_str().unwrap(),
                "--identity-file",
                &key,
                "--json",
            ]
            .iter()
            .chain(extra)
            .map(|s| s.to_string()),
        );
        let out = test_run(&strs(&args));
        assert_eq!(out.status.code(), Some(code), "{kind}: {out:?}");
        assert_eq!(json_of(&out)["error"]["kind"], kind, "{out:?}");
    }
}
