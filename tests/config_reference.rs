//! docs/configuration.md checked against the code, in both directions: the agent's file
//! keys (as the real parser, `csm_agent::config::load`, accepts them), the `CSM_*`
//! variables it reads (recorded from the lookups it makes), the `CSM_*` names anywhere in
//! `src/`, and the flags and defaults of `run`, `manager` and `dev` (from the real
//! binary's `--help`). Each example row is loaded as a file key, a variable and a flag,
//! and all three must mean the same; each literal default must equal leaving the key out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use csm_agent::config::{self, ConfigError, Flags, Loaded};
use secrecy::ExposeSecret;

const DOC: &str = include_str!("../docs/configuration.md");
const BIN: &str = env!("CARGO_BIN_EXE_csm-agent");

// ---------------------------------------------------------------------------------------
// Reading the page.

/// The text under the first heading whose title starts with `title`, up to the next
/// heading of the same or a higher level.
fn section(doc: &str, title: &str) -> String {
    let mut out = String::new();
    let mut level = None;
    for line in doc.lines() {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        let is_heading = hashes > 0 && line[hashes..].starts_with(' ');
        match level {
            None if is_heading && line[hashes..].trim().starts_with(title) => level = Some(hashes),
            Some(l) if is_heading && hashes <= l => break,
            Some(_) => {
                out.push_str(line);
                out.push('\n');
            }
            None => {}
        }
    }
    assert!(
        level.is_some(),
        "docs/configuration.md has no section {title:?}"
    );
    out
}

/// Cells of a table row, split on `|` but not on `\|`.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

/// The first table in `text` whose header row starts with `first_column`, as maps from
/// header to cell.
fn table(text: &str, first_column: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines().skip_while(|l| {
        !(l.trim_start().starts_with('|')
            && cells(l).first().map(String::as_str) == Some(first_column))
    });
    let header = cells(
        lines
            .next()
            .unwrap_or_else(|| panic!("no table with column {first_column:?}")),
    );
    let rows: Vec<_> = lines
        .skip(1) // |---|
        .take_while(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            let c = cells(l);
            assert_eq!(
                c.len(),
                header.len(),
                "row {l:?} has the wrong number of cells"
            );
            header.iter().cloned().zip(c).collect::<BTreeMap<_, _>>()
        })
        .collect();
    assert!(!rows.is_empty(), "the {first_column:?} table is empty");
    rows
}

/// The contents of the first `…` in a cell.
fn code(cell: &str) -> Option<String> {
    let start = cell.find('`')? + 1;
    let len = cell[start..].find('`')?;
    Some(cell[start..start + len].to_string())
}

/// A cell that is exactly one `…` literal.
fn only_code(cell: &str) -> Option<String> {
    let c = code(cell)?;
    (cell == format!("`{c}`")).then_some(c)
}

/// A TOML value written in a cell.
fn toml_value(text: &str) -> Option<toml::Value> {
    let t: toml::Table = toml::from_str(&format!("v = {text}")).ok()?;
    t.get("v").cloned()
}

/// The agent's settings table.
fn agent_rows() -> Vec<BTreeMap<String, String>> {
    table(&section(DOC, "Settings"), "key")
}

/// The flags a table documents in `column`.
fn doc_flags(rows: &[BTreeMap<String, String>], column: &str) -> BTreeSet<String> {
    rows.iter().filter_map(|r| code(&r[column])).collect()
}

// ---------------------------------------------------------------------------------------
// Loading through the real parser.

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base-token"), "tok-base\n").unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A configuration that loads with nothing else: a manager, a token file, an agent id
    /// (so no state directory is touched) and a client certificate pair (so either half
    /// can be replaced alone).
    fn base(&self) -> toml::Table {
        let text = format!(
            "manager = \"http://127.0.0.1:1\"\ntoken_file = {:?}\nagent_id = \"base-id\"\n[tls]\nclient_cert = \"/base/cert.pem\"\nclient_key = \"/base/key.pem\"\n",
            self.path("base-token").display().to_string()
        );
        toml::from_str(&text).unwrap()
    }

    /// Load `file` through `config::load`, with only `env` in the environment; also
    /// returns every variable the loader looked up.
    fn load(
        &self,
        file: &toml::Table,
        env: &[(&str, String)],
        flags: &Flags,
    ) -> (Result<Loaded, ConfigError>, BTreeSet<String>) {
        self.load_text(&toml::to_string(file).unwrap(), env, flags)
    }

    fn load_text(
        &self,
        text: &str,
        env: &[(&str, String)],
        flags: &Flags,
    ) -> (Result<Loaded, ConfigError>, BTreeSet<String>) {
        let file = self.path("agent.toml");
        std::fs::write(&file, text).unwrap();
        let mut vars: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        vars.insert("CSM_CONFIG".into(), file.display().to_string());
        let asked = Mutex::new(BTreeSet::new());
        let lookup = |k: &str| {
            asked.lock().unwrap().insert(k.to_string());
            vars.get(k).cloned()
        };
        let r = config::load(flags, &lookup);
        (r, asked.into_inner().unwrap())
    }

    /// An example path that must exist to load: the token file and the state directory
    /// live in this test's directory instead of under /etc and /var.
    fn localise(&self, key: &str, v: toml::Value) -> toml::Value {
        match key {
            "token_file" => {
                let p = self.path("example-token");
                std::fs::write(&p, "tok-example\n").unwrap();
                toml::Value::String(p.display().to_string())
            }
            "state_dir" => toml::Value::String(self.path("example-state").display().to_string()),
            _ => v,
        }
    }
}

/// Everything a loaded configuration decides, the token included.
fn effective(l: &Loaded) -> String {
    format!(
        "{:?} | {:?} | {:?} | token {}",
        l.agent,
        l.log_format,
        l.metrics_listen,
        l.agent.token.expose_secret()
    )
}

fn ok(r: (Result<Loaded, ConfigError>, BTreeSet<String>), what: &str) -> String {
    match r.0 {
        Ok(l) => effective(&l),
        Err(e) => panic!("{what}: the parser refused it: {e}"),
    }
}

/// Set `key` (dotted for a table) in `t`.
fn set(t: &mut toml::Table, key: &str, v: toml::Value) {
    match key.split_once('.') {
        Some((table, rest)) => {
            let sub = t
                .entry(table)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            set(sub.as_table_mut().unwrap(), rest, v)
        }
        None => {
            t.insert(key.to_string(), v);
        }
    }
}

/// A TOML value as its variable is written: bare, lists comma-separated.
fn env_form(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => a.iter().map(env_form).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A TOML value as `csm-agent run`'s flag. A flag the test does not know fails, so a
/// new flag cannot go unchecked.
fn flags_for(flag: &str, v: &toml::Value) -> Flags {
    let s = || env_form(v);
    let mut f = Flags::default();
    match flag {
        "--manager" => f.manager = Some(s()),
        "--token-file" => f.token_file = Some(PathBuf::from(s())),
        "--name" => f.name = Some(s()),
        "--selector" => f.selectors = v.as_array().unwrap().iter().map(env_form).collect(),
        "--capacity" => f.capacity = Some(s().parse().unwrap()),
        "--state-dir" => f.state_dir = Some(PathBuf::from(s())),
        "--log-format" => f.log_format = Some(s()),
        "--metrics-listen" => f.metrics_listen = Some(s()),
        other => {
            panic!("tests/config_reference.rs does not know the flag {other}: add it to flags_for")
        }
    }
    f
}

/// The names in serde's "unknown field `x`, expected one of `a`, `b`" message.
fn expected_fields(message: &str) -> Vec<String> {
    let tail = &message[message
        .find("expected")
        .unwrap_or_else(|| panic!("not an unknown-field message: {message}"))..];
    tail.split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

// ---------------------------------------------------------------------------------------
// The agent.

#[test]
fn every_file_key_the_parser_accepts_is_documented_and_every_documented_key_is_accepted() {
    let f = Fixture::new();
    let probe = |text: &str| -> ConfigError {
        match f.load_text(text, &[], &Flags::default()).0 {
            Ok(_) => panic!("the parser accepted an unknown key in {text:?}"),
            Err(e) => e,
        }
    };
    // The parser's own list of top-level keys, from its refusal of an unknown one.
    let e = probe("zz_not_a_key = 1\n");
    assert!(e.message.contains("zz_not_a_key"), "{e}");
    let top = expected_fields(&e.message);
    assert!(
        top.iter().any(|k| k == "manager"),
        "positive control: {top:?}"
    );
    let mut accepted = BTreeSet::new();
    let mut tables = 0;
    for key in &top {
        let e = probe(&format!("[{key}]\nzz_not_a_key = 1\n"));
        if e.message.contains("unknown field `zz_not_a_key`") {
            tables += 1;
            for sub in expected_fields(&e.message) {
                accepted.insert(format!("{key}.{sub}"));
            }
        } else {
            accepted.insert(key.clone());
        }
    }
    assert!(
        tables >= 3,
        "positive control: tls, policy and reconnect are tables"
    );
    let documented: BTreeSet<String> = agent_rows()
        .iter()
        .filter_map(|r| code(&r["key"]))
        .collect();
    assert_eq!(
        accepted, documented,
        "left: keys the parser accepts; right: keys docs/configuration.md lists"
    );
}

#[test]
fn every_variable_the_agent_reads_is_documented_and_nothing_more() {
    let f = Fixture::new();
    let (r, asked) = f.load(&f.base(), &[], &Flags::default());
    r.expect("the base configuration loads");
    let read: BTreeSet<String> = asked
        .into_iter()
        .filter(|k| k.starts_with("CSM_"))
        .collect();
    assert!(
        read.contains("CSM_POLICY_SSH_HOSTS"),
        "positive control: {read:?}"
    );
    let documented: BTreeSet<String> = agent_rows()
        .iter()
        .filter_map(|r| code(&r["environment"]))
        .collect();
    assert_eq!(
        read, documented,
        "left: variables `config::load` looks up; right: variables the agent's table lists"
    );
}

#[test]
fn each_example_means_the_same_as_a_file_key_a_variable_and_a_flag() {
    let f = Fixture::new();
    let base = f.base();
    let base_effective = ok(f.load(&base, &[], &Flags::default()), "the base");
    let mut checked = 0;
    for row in agent_rows() {
        let (Some(key), Some(example)) = (code(&row["key"]), code(&row["example"])) else {
            continue;
        };
        let value = toml_value(&example)
            .unwrap_or_else(|| panic!("{key}: the example {example} is not a TOML value"));
        let value = f.localise(&key, value);
        let mut start = base.clone();
        if key == "state_dir" {
            // The state directory only matters when no agent id is configured.
            start.remove("agent_id");
        }
        let mut file = start.clone();
        set(&mut file, &key, value.clone());
        let by_file = ok(
            f.load(&file, &[], &Flags::default()),
            &format!("{key} = {value}"),
        );
        assert_ne!(
            by_file, base_effective,
            "{key} = {value} changed nothing: the example does not show the key working"
        );

        let var = code(&row["environment"]).unwrap_or_else(|| panic!("{key} has no variable"));
        let by_env = ok(
            f.load(
                &start,
                &[(var.as_str(), env_form(&value))],
                &Flags::default(),
            ),
            &format!("{var}={}", env_form(&value)),
        );
        assert_eq!(by_env, by_file, "{var} does not mean the same as {key}");

        if let Some(flag) = code(&row["flag"]) {
            let by_flag = ok(
                f.load(&start, &[], &flags_for(&flag, &value)),
                &format!("{flag} {value}"),
            );
            assert_eq!(by_flag, by_file, "{flag} does not mean the same as {key}");
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} examples were checked");
}

#[test]
fn literal_defaults_are_the_real_defaults() {
    let f = Fixture::new();
    let base = f.base();
    let base_effective = ok(f.load(&base, &[], &Flags::default()), "the base");
    let mut checked = 0;
    for row in agent_rows() {
        let Some(key) = code(&row["key"]) else {
            continue;
        };
        let Some(value) = only_code(&row["default"]).and_then(|d| toml_value(&d)) else {
            continue;
        };
        let in_base = match key.split_once('.') {
            Some((t, k)) => base.get(t).and_then(|t| t.get(k)).is_some(),
            None => base.contains_key(&key),
        };
        assert!(!in_base, "{key}: the base must leave it unset");
        let mut file = base.clone();
        set(&mut file, &key, value.clone());
        let with_default = ok(
            f.load(&file, &[], &Flags::default()),
            &format!("{key} = {value}"),
        );
        assert_eq!(
            with_default, base_effective,
            "{key}: the documented default {value} is not the real one"
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} defaults were checked");
}

#[test]
fn an_unknown_key_in_any_table_is_refused_naming_it() {
    let f = Fixture::new();
    for (text, name) in [
        ("capacityy = 3\n", "capacityy"),
        ("[tls]\ncafile = \"x\"\n", "cafile"),
        ("[policy]\nssh_host = []\n", "ssh_host"),
        ("[reconnect]\ninitial = 1\n", "initial"),
        ("[nosuchtable]\n", "nosuchtable"),
    ] {
        let mut file = f.base();
        let extra: toml::Table = toml::from_str(text).unwrap();
        for (k, v) in extra {
            match (file.get_mut(&k), v) {
                (Some(toml::Value::Table(t)), toml::Value::Table(more)) => t.extend(more),
                (_, v) => {
                    file.insert(k, v);
                }
            }
        }
        let e = f.load(&file, &[], &Flags::default()).0.expect_err(text);
        assert!(e.to_string().contains(name), "{text:?}: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Every command's flags, from the real binary.

/// `--help` of a subcommand: each option's flag and the text of its entry.
fn help_entries(subcommand: &str) -> BTreeMap<String, String> {
    let out = Command::new(BIN)
        .args([subcommand, "--help"])
        .env_remove("CSM_LOG")
        .env_remove("CSM_API_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{subcommand} --help failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut entries = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('-') {
            let flag = t
                .split([' ', ',', '<', '='])
                .map(str::trim)
                .find(|w| w.starts_with("--"))
                .unwrap_or_else(|| panic!("an option without a long flag: {t}"))
                .to_string();
            entries.insert(flag.clone(), t.to_string());
            current = Some(flag);
        } else if line.is_empty() || !line.starts_with(' ') {
            // An empty line ends an entry; clap's long help separates an entry's own
            // paragraphs with indented blank lines.
            current = None;
        } else if let Some(f) = current.as_ref().filter(|_| !t.is_empty()) {
            let e = entries.get_mut(f).unwrap();
            e.push(' ');
            e.push_str(t);
        }
    }
    assert!(entries.contains_key("--help"), "positive control: {text}");
    entries
}

/// The flags `subcommand --help` lists equal the ones documented, and each `[default: X]`
/// it shows starts with the documented default (help may add \", if it exists\").
fn check_command(subcommand: &str, rows: &[BTreeMap<String, String>]) {
    let help = help_entries(subcommand);
    let global = table(&section(DOC, "Every command"), "flag");
    let mut documented = doc_flags(rows, "flag");
    documented.extend(doc_flags(&global, "flag"));
    documented.insert("--help".into());
    let listed: BTreeSet<String> = help.keys().cloned().collect();
    assert_eq!(
        listed, documented,
        "left: `csm-agent {subcommand} --help`; right: docs/configuration.md"
    );
    let mut defaults = 0;
    for (flag, entry) in &help {
        let Some(at) = entry.find("[default: ") else {
            continue;
        };
        let value = &entry[at + 10..];
        let value = &value[..value.find(']').unwrap()];
        let row = rows
            .iter()
            .chain(global.iter())
            .find(|r| code(&r["flag"]).as_deref() == Some(flag.as_str()))
            .unwrap_or_else(|| panic!("{flag} is not documented"));
        let doc_default = row["default"].replace(['`', '"'], "");
        assert!(
            !doc_default.is_empty() && value.starts_with(&doc_default),
            "{subcommand} {flag}: --help says [default: {value}], docs/configuration.md says {doc_default:?}"
        );
        defaults += 1;
    }
    assert!(defaults >= 1, "positive control: --log shows its default");
}

#[test]
fn run_flags_match_its_help() {
    check_command("run", &agent_rows());
}

#[test]
fn manager_flags_match_its_help() {
    let rows = table(&section(DOC, "The control plane"), "flag");
    check_command("manager", &rows);
}

#[test]
fn dev_flags_match_its_help() {
    let rows = table(&section(DOC, "Both in one process"), "flag");
    check_command("dev", &rows);
}

// ---------------------------------------------------------------------------------------
// Every CSM_* name, both ways.

/// Every `CSM_NAME` in `text` (not a prefix such as `CSM_POLICY_*`).
fn csm_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("CSM_") {
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..len];
        if !name.ends_with('_') {
            out.insert(name.to_string());
        }
        rest = &tail[len.max(4)..];
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_csm_name_in_the_source_is_on_the_page_and_back() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut in_src = BTreeSet::new();
    for f in &files {
        in_src.extend(csm_names(&std::fs::read_to_string(f).unwrap()));
    }
    assert!(
        in_src.contains("CSM_MASTER_KEY_FILE"),
        "positive control: {in_src:?}"
    );
    let on_page = csm_names(DOC);
    assert_eq!(
        in_src, on_page,
        "left: CSM_* names in src/; right: CSM_* names in docs/configuration.md"
    );
}
