//! The control plane end to end, against its floors measured in the same run.
//!
//! - **Latency.** `resolveSecret` over HTTP (one keep-alive connection) → GraphQL → the
//!   store (secret, manager, template, audit) → the hub → WebSocket → a real local agent →
//!   bash reading a file → back. The server is a real `csm-agent dev` process. Floor: write
//!   the equivalent script to a file, run `bash file`, read its output. Goal: p50 ≤ 2× the
//!   floor.
//! - **Throughput.** 64 concurrent clients, each resolving its own secret (its own
//!   parameters) in a loop. Floor: 64 threads each running `bash file` until as many are
//!   done. Goal: ≥ 0.5× the floor's rate.
//!
//! `cargo bench --bench control_plane` (CSM_BENCH_ITERS=N for the latency count,
//! CSM_BENCH_TOTAL=N for the throughput count).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{ms, pct};

const KEY: &str = "bench-admin-key-0123456789abcdef";
const CLIENTS: usize = 64;

/// A keep-alive HTTP/1.1 client for one host.
struct Client {
    stream: TcpStream,
    host: String,
    path: String,
    buf: Vec<u8>,
}

impl Client {
    fn new(url: &str) -> Client {
        let rest = url.strip_prefix("http://").unwrap();
        let i = rest.find('/').unwrap();
        let stream = TcpStream::connect(&rest[..i]).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            host: rest[..i].to_string(),
            path: rest[i..].to_string(),
            buf: Vec::with_capacity(8192),
        }
    }

    fn gql(&mut self, query: &str, variables: Value) -> Value {
        let body = json!({"query": query, "variables": variables}).to_string();
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nx-api-key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.path,
            self.host,
            body.len()
        );
        self.stream.write_all(req.as_bytes()).unwrap();
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        loop {
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .expect("content-length");
                while self.buf.len() < end + 4 + len {
                    let n = self.stream.read(&mut chunk).unwrap();
                    assert!(n > 0);
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                let v: Value = serde_json::from_slice(&self.buf[end + 4..end + 4 + len]).unwrap();
                assert!(v.get("errors").is_none(), "{v}");
                return v["data"].clone();
            }
        }
    }

    fn resolve(&mut self, id: &str) -> String {
        let d = self.gql(
            "mutation($i: ResolveSecretInput!) { resolveSecret(input: $i) { value } }",
            json!({"i": {"secretId": id}}),
        );
        d["resolveSecret"]["value"].as_str().unwrap().to_string()
    }
}

fn floor(dir: &std::path::Path, n: usize, value_file: &std::path::Path, want: &str) -> Duration {
    let t = Instant::now();
    let path = dir.join(format!("floor-{n}.sh"));
    let mut f = std::fs::File::create(&path).unwrap();
    write!(
        f,
        "secret=$(cat \"{}\")\nprintf %s \"$secret\"\n",
        value_file.display()
    )
    .unwrap();
    drop(f);
    let out = Command::new("/bin/bash")
        .arg(&path)
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(out.stdout, want.as_bytes());
    std::fs::remove_file(&path).unwrap();
    t.elapsed()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let iters = env_usize("CSM_BENCH_ITERS", 300);
    let total = env_usize("CSM_BENCH_TOTAL", 2000);
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values");
    std::fs::create_dir(&values).unwrap();
    for i in 0..CLIENTS {
        std::fs::write(values.join(format!("v{i}")), format!("value-{i}")).unwrap();
    }

    let mut child = Command::new(env!("CARGO_BIN_EXE_csm-agent"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("CSM_API_KEY", KEY)
        .env("CSM_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let url = loop {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "dev exited"
        );
        if let Some(rest) = line.strip_prefix("export CSM_URL=") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));

    let mut c = Client::new(&url);
    let t = c.gql(
        "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { template { id } } }",
        json!({"i": {"name": "file", "scriptString": "secret=$(cat \"${path}\")", "variables": ["path"]}}),
    )["createTemplate"]["template"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sm = c.gql(
        "mutation($i: CreateSecretManagerInput!) { createSecretManager(input: $i) { secretManager { id } } }",
        json!({"i": {"secretManagerType": "CUSTOM", "customSecretManagerInput": {"name": "bench", "templateId": t,
            "executeOnDelegate": true, "delegateSelectors": ["local"],
            "testVariables": [{"name": "path", "value": values.join("v0").to_str().unwrap()}]}}}),
    )["createSecretManager"]["secretManager"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ids: Vec<String> = (0..CLIENTS)
        .map(|i| {
            c.gql(
                "mutation($i: CreateSecretInput!) { createSecret(input: $i) { secret { id } } }",
                json!({"i": {"secretType": "ENCRYPTED_TEXT", "encryptedText": {"name": format!("s{i}"), "secretManagerId": sm,
                    "parameters": [{"name": "path", "value": values.join(format!("v{i}")).to_str().unwrap()}]}}}),
            )["createSecret"]["secret"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();

    // Warm up both.
    for _ in 0..20 {
        assert_eq!(c.resolve(&ids[0]), "value-0");
        floor(dir.path(), 0, &values.join("v0"), "value-0");
    }

    // Latency, interleaved so that load on the shared machine hits both alike.
    let (mut ours, mut base) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for i in 0..iters {
        let s = Instant::now();
        assert_eq!(c.resolve(&ids[0]), "value-0");
        ours.push(s.elapsed());
        base.push(floor(dir.path(), i, &values.join("v0"), "value-0"));
    }
    let (o50, o99) = (pct(&mut ours, 0.5), pct(&mut ours, 0.99));
    let (b50, b99) = (pct(&mut base, 0.5), pct(&mut base, 0.99));
    let ratio = ms(o50) / ms(b50);
    println!(
        "resolveSecret latency: p50 {:.2} ms, p99 {:.2} ms | floor `bash file` p50 {:.2} ms, p99 {:.2} ms | ratio {:.2}x (goal <= 2x) {}",
        ms(o50), ms(o99), ms(b50), ms(b99), ratio, if ratio <= 2.0 { "OK" } else { "MISSED" }
    );

    // Throughput: 64 clients, each its own secret.
    let done = Arc::new(AtomicUsize::new(0));
    let s = Instant::now();
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (url, id, done) = (url.clone(), ids[i].clone(), done.clone());
            std::thread::spawn(move || {
                let mut c = Client::new(&url);
                let want = format!("value-{i}");
                while done.fetch_add(1, Ordering::Relaxed) < total {
                    assert_eq!(c.resolve(&id), want);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let ours_rate = total as f64 / s.elapsed().as_secs_f64();
    let done = Arc::new(AtomicUsize::new(0));
    let s = Instant::now();
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (dir, v, done) = (
                dir.path().to_path_buf(),
                values.join(format!("v{i}")),
                done.clone(),
            );
            std::thread::spawn(move || {
                let want = format!("value-{i}");
                let mut n = 0;
                while done.fetch_add(1, Ordering::Relaxed) < total {
                    floor(&dir, i * 1_000_000 + n, &v, &want);
                    n += 1;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let floor_rate = total as f64 / s.elapsed().as_secs_f64();
    let r = ours_rate / floor_rate;
    println!(
        "throughput, {CLIENTS} clients: {ours_rate:.0} resolves/s | floor {CLIENTS} x `bash file`: {floor_rate:.0}/s | ratio {r:.2}x (goal >= 0.5x) {}",
        if r >= 0.5 { "OK" } else { "MISSED" }
    );

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}
