//! The example configurations: each passes `runbookd check`, they agree with each other, and
//! `examples/runbookd.toml` documents exactly the keys the configuration structs read.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use runbookd::config::Config;

use crate::helpers::BIN;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The variables `/etc/runbookd/env` holds, as docs/install.md lists them: its block that
/// starts with `# /etc/runbookd/env`.
fn install_env() -> BTreeMap<String, String> {
    let doc = read("docs/install.md");
    let start = doc
        .find("# /etc/runbookd/env")
        .expect("docs/install.md shows /etc/runbookd/env");
    let block = &doc[start..doc[start..].find("```").map_or(doc.len(), |e| start + e)];
    block
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            // Placeholders become values a loader accepts.
            let v = v.replace('…', "x");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// `runbookd --config FILE check playbooks/` from an empty directory, with only `env` set
/// besides PATH: (exit code, stdout + stderr).
fn check(config: &Path, env: &BTreeMap<String, String>) -> (Option<i32>, String) {
    let cwd = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("check")
        .arg(repo().join("playbooks"))
        .current_dir(cwd.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .expect("runbookd check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The first ```toml block after `heading` in a markdown file.
fn toml_block(doc: &str, heading: &str) -> String {
    let at = doc.find(heading).unwrap_or_else(|| panic!("no {heading}"));
    let rest = &doc[at..];
    let start = rest.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = rest[start..].find("```").expect("closed block");
    rest[start..start + end].to_string()
}

/// Every `NAME` in `*_env = "NAME"` of a configuration text (comments left out).
fn env_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim().ends_with("_env"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .collect()
}

#[test]
fn every_example_configuration_passes_check() {
    let none = BTreeMap::new();
    let (code, out) = check(&repo().join("examples/runbookd.toml"), &none);
    assert_eq!(code, Some(0), "examples/runbookd.toml: {out}");

    // The DebtFlow deployment, with exactly the environment docs/install.md lists.
    let env = install_env();
    let debtflow = read("examples/debtflow/runbookd.toml");
    let missing: Vec<_> = env_names(&debtflow)
        .into_iter()
        .filter(|v| !env.contains_key(v))
        .collect();
    assert!(
        missing.is_empty(),
        "examples/debtflow/runbookd.toml names variables docs/install.md's /etc/runbookd/env lacks: {missing:?}"
    );
    // Its files where this machine has them: the ingest token, and the escalation table
    // (checked with its channels and the playbooks it runs).
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("alertmanager");
    std::fs::write(&token, "t0ken\n").expect("token");
    let placed = debtflow
        .replace(
            "/etc/runbookd/tokens/alertmanager",
            &token.display().to_string(),
        )
        .replace(
            "/etc/runbookd/escalation.toml",
            &repo()
                .join("examples/debtflow/escalation.toml")
                .display()
                .to_string(),
        );
    assert_ne!(placed, debtflow, "the DebtFlow paths were found");
    let path = dir.path().join("runbookd.toml");
    std::fs::write(&path, placed).expect("write");
    let (code, out) = check(&path, &env);
    assert_eq!(code, Some(0), "examples/debtflow/runbookd.toml: {out}");
    assert!(!out.contains("warning"), "{out}");

    // docs/approvals.md's configuration block, on its own.
    let dir = tempfile::tempdir().expect("tempdir");
    let block = toml_block(&read("docs/approvals.md"), "## Configuration");
    let path = dir.path().join("approvals.toml");
    std::fs::write(&path, &block).expect("write");
    let env: BTreeMap<String, String> = env_names(&block)
        .into_iter()
        .map(|v| (v, "https://hooks.slack.com/services/x".to_string()))
        .collect();
    let (code, out) = check(&path, &env);
    assert_eq!(code, Some(0), "docs/approvals.md's block:\n{block}\n{out}");
}

#[test]
fn a_broken_example_fails_check() {
    // What the test above relies on: check does load the configuration.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[approvals]\nchannel = \"oncall\"\n").expect("write");
    let (code, out) = check(&path, &BTreeMap::new());
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("configured: log"), "`log` is listed: {out}");
    std::fs::write(&path, "[approvals]\nchannel = \"log\"\n").expect("write");
    let (code, out) = check(&path, &BTreeMap::new());
    assert_eq!(code, Some(0), "`log` always exists: {out}");
}

#[test]
fn the_debtflow_escalation_table_is_the_shipped_one_paging_real_channels() {
    let levels = |rel: &str| -> Vec<toml::Table> {
        let t: toml::Table = read(rel).parse().unwrap_or_else(|e| panic!("{rel}: {e}"));
        t["levels"]
            .as_array()
            .expect("levels")
            .iter()
            .map(|l| l.as_table().expect("a level").clone())
            .collect()
    };
    let shipped = levels("examples/escalation.toml");
    let debtflow = levels("examples/debtflow/escalation.toml");
    assert_eq!(shipped.len(), debtflow.len(), "same levels");
    for (s, d) in shipped.iter().zip(&debtflow) {
        for key in ["name", "condition", "playbook", "repeat"] {
            assert_eq!(
                s.get(key),
                d.get(key),
                "level {}: `{key}` differs from the shipped default",
                s["name"]
            );
        }
    }
    // And its channels are the DebtFlow configuration's.
    let config: toml::Table = read("examples/debtflow/runbookd.toml")
        .parse()
        .expect("toml");
    let channels: Vec<String> = config["channels"]
        .as_table()
        .expect("[channels]")
        .keys()
        .cloned()
        .collect();
    runbookd::escalation::Table::parse(&read("examples/debtflow/escalation.toml"), &channels)
        .expect("the DebtFlow table loads with the DebtFlow channels");
}

// ── examples/runbookd.toml against the configuration structs ────────────────────────────

/// A path into the configuration: a key, `*` (any name of a map), `[]` (an array's entry).
type KeyPath = Vec<String>;

/// Deserializes the defaults with `{ zzz_probe = 1 }` placed at `path`: the fields of the
/// struct there, from the `unknown field` error of `deny_unknown_fields`; None when no
/// struct is there.
fn fields_at(path: &[String]) -> Option<Vec<String>> {
    let mut value = toml::Value::Table(toml::Table::from_iter([(
        "zzz_probe".to_string(),
        toml::Value::Integer(1),
    )]));
    for segment in path.iter().rev() {
        value = match segment.as_str() {
            "[]" => toml::Value::Array(vec![value]),
            "*" => toml::Value::Table(toml::Table::from_iter([("zzz_name".to_string(), value)])),
            key => toml::Value::Table(toml::Table::from_iter([(key.to_string(), value)])),
        };
    }
    let message = match value.try_into::<Config>() {
        Ok(_) => return None,
        Err(e) => e.to_string(),
    };
    let at = message.find("unknown field `zzz_probe`")?;
    let rest = &message[at + "unknown field `zzz_probe`".len()..];
    if rest.contains("there are no fields") {
        return Some(Vec::new());
    }
    let expected = &rest[rest.find("expected")?..];
    // Only the list: the message may go on (`in `section``) on the next line.
    let expected = expected.lines().next().unwrap_or("");
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every leaf key the structs read, as dotted paths (`breakers.*.preset`,
/// `server.tokens[].name`); maps of plain values (`playbooks.settings`) are leaves.
fn struct_keys(path: &KeyPath, out: &mut BTreeSet<String>) {
    let fields = fields_at(path).unwrap_or_else(|| panic!("no struct at {path:?}"));
    assert!(
        !fields.is_empty() || path.is_empty(),
        "no fields at {path:?}"
    );
    for f in fields {
        let mut child = path.clone();
        child.push(f);
        let mut as_map = child.clone();
        as_map.push("*".into());
        let mut as_array = child.clone();
        as_array.push("[]".into());
        if fields_at(&child).is_some() {
            struct_keys(&child, out);
        } else if fields_at(&as_map).is_some() {
            struct_keys(&as_map, out);
        } else if fields_at(&as_array).is_some() {
            struct_keys(&as_array, out);
        } else {
            out.insert(dotted(&child));
        }
    }
}

fn dotted(path: &[String]) -> String {
    path.join(".").replace(".[]", "[]")
}

/// The keys examples/runbookd.toml documents — set, or shown commented out (`# key = …`,
/// under `[section]` or `# [section]`) — normalised like `struct_keys`' paths, and
/// `[playbooks.settings.*]` separately as `section.key`.
fn example_keys(text: &str, schema: &BTreeSet<String>) -> (BTreeSet<String>, BTreeSet<String>) {
    // Maps of structs (`breakers.*`) and leaves that are maps (`playbooks.settings`).
    let maps: BTreeSet<String> = schema
        .iter()
        .filter_map(|k| k.find(".*.").map(|i| k[..i].to_string()))
        .collect();
    let mut keys = BTreeSet::new();
    let mut settings = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let mut l = line.trim();
        while let Some(rest) = l.strip_prefix('#') {
            l = rest.trim_start();
        }
        if l.starts_with('[') {
            let Some(end) = l.find(']') else { continue };
            let name = l[..end].trim_start_matches('[').to_string();
            let array = l.starts_with("[[");
            // A header alone on its line (`# [playbooks] retry_interrupted …` is prose).
            let after = l[end..].trim_start_matches(']').trim_start();
            if !(after.is_empty() || after.starts_with('#')) {
                continue;
            }
            let mut parts: Vec<String> = name.split('.').map(str::to_string).collect();
            for m in &maps {
                let n = m.split('.').count();
                if parts.len() > n && parts[..n].join(".") == *m {
                    parts[n] = "*".into();
                }
            }
            section = parts.join(".") + if array { "[]" } else { "" };
            // A map of plain values (`[playbooks.settings.outage]`), as a whole.
            if let Some(leaf) = schema
                .iter()
                .find(|k| section == **k || section.starts_with(&format!("{k}.")))
            {
                keys.insert(leaf.clone());
            }
            continue;
        }
        let Some((key, value)) = l.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let is_key = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !value.trim().is_empty();
        if !is_key {
            continue;
        }
        if let Some(s) = section.strip_prefix("playbooks.settings.") {
            settings.insert(format!("{s}.{key}"));
        } else if !schema.contains(&section) {
            keys.insert(if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            });
        }
    }
    (keys, settings)
}

/// Accepted for old configurations (startup warns) but no longer read: the example must
/// not present them as keys.
const NO_LONGER_READ: &[&str] = &[
    "playbooks.max_string_size",
    "playbooks.max_array_size",
    "playbooks.max_map_size",
];

/// The keys the structs read (less the retired ones), checked to be found by the probe.
fn schema() -> BTreeSet<String> {
    let mut schema = BTreeSet::new();
    struct_keys(&Vec::new(), &mut schema);
    // The probe itself: known sections and shapes are found.
    for k in [
        "server.listen",
        "server.tokens[].token_file",
        "breakers.*.preset",
        "channels.*.password_file",
        "payments.columns.id",
        "playbooks.settings",
    ] {
        assert!(schema.contains(k), "the probe misses {k}: {schema:#?}");
    }
    for k in NO_LONGER_READ {
        assert!(schema.remove(*k), "{k} is no longer accepted: drop it here");
    }
    schema
}

/// What the shipped playbooks read with `setting("a.b", …)`.
fn playbook_settings() -> BTreeSet<String> {
    let mut read_by_playbooks = BTreeSet::new();
    for file in rhai_files(&repo().join("playbooks")) {
        let text = std::fs::read_to_string(&file).expect("playbook");
        for piece in text.split("setting(\"").skip(1) {
            if let Some(end) = piece.find('"') {
                read_by_playbooks.insert(piece[..end].to_string());
            }
        }
    }
    read_by_playbooks
}

#[test]
fn the_example_configuration_documents_exactly_the_keys_the_structs_read() {
    let schema = schema();
    let text = read("examples/runbookd.toml");
    let (documented, settings) = example_keys(&text, &schema);
    let missing: Vec<_> = schema.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&schema).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "examples/runbookd.toml lacks keys the configuration reads: {missing:?}\n\
         and documents keys it does not read: {unknown:?}"
    );

    // [playbooks.settings.*]: what the shipped playbooks read with setting("a.b", …).
    let read_by_playbooks = playbook_settings();
    let missing: Vec<_> = read_by_playbooks.difference(&settings).collect();
    let unknown: Vec<_> = settings.difference(&read_by_playbooks).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "[playbooks.settings] in examples/runbookd.toml lacks settings the playbooks read: \
         {missing:?}\nand shows settings no playbook reads: {unknown:?}"
    );
}

/// The playbooks and their modules (not their tests, which set settings of their own).
fn rhai_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("playbooks").flatten() {
        let p = entry.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "tests") {
            out.extend(rhai_files(&p));
        } else if p.extension().is_some_and(|e| e == "rhai") {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_configuration_reference_documents_exactly_the_keys_the_structs_read() {
    let schema = schema();
    let doc = read("docs/configuration.md");
    let (mut keys, mut settings) = (BTreeSet::new(), BTreeSet::new());
    let mut section: Option<String> = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("## `") {
            let name = h.trim_end_matches('`');
            let array = name.starts_with("[[");
            let name = name.trim_matches(|c| c == '[' || c == ']');
            let name = name.replace(".NAME", ".*");
            section = Some(name + if array { "[]" } else { "" });
            continue;
        }
        let (Some(s), Some(row)) = (&section, line.strip_prefix("| `")) else {
            continue;
        };
        let Some(key) = row.split('`').next() else {
            continue;
        };
        if s == "playbooks.settings" {
            settings.insert(key.to_string());
        } else {
            keys.insert(format!("{s}.{key}"));
        }
    }
    let missing: Vec<_> = schema.difference(&keys).collect();
    let unknown: Vec<_> = keys.difference(&schema).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md lacks keys the configuration reads: {missing:?}\n\
         and documents keys it does not read: {unknown:?}"
    );
    let read_by_playbooks = playbook_settings();
    assert_eq!(
        settings, read_by_playbooks,
        "docs/configuration.md's [playbooks.settings] against what the playbooks read"
    );
}

/// `runbookd --config FILE serve` from an empty directory on a free port: true once
/// `/healthz` answers 200 (within 20 s); the daemon is stopped after.
fn serves(config: &Path, env: &BTreeMap<String, String>) -> Result<(), String> {
    use std::io::{Read, Write};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    let cwd = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .arg("--playbooks")
        .arg(repo().join("playbooks"))
        .current_dir(cwd.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .env("RUNBOOKD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUNBOOKD_KEY_METRICS__INTERVAL", "0s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut answer = String::new();
    let result = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("serve exited: {status}"));
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            answer.clear();
            let asked = s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            if asked.is_ok() && s.read_to_string(&mut answer).is_ok() && answer.contains(" 200 ") {
                break Ok(());
            }
        }
        if std::time::Instant::now() > deadline {
            break Err(format!("no 200 from /healthz in 20 s: {answer}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[test]
fn the_example_configurations_that_need_no_backends_serve() {
    serves(&repo().join("examples/runbookd.toml"), &BTreeMap::new())
        .unwrap_or_else(|e| panic!("examples/runbookd.toml: {e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let block = toml_block(&read("docs/approvals.md"), "## Configuration");
    let path = dir.path().join("approvals.toml");
    std::fs::write(&path, &block).expect("write");
    let env: BTreeMap<String, String> = env_names(&block)
        .into_iter()
        .map(|v| (v, "https://hooks.slack.com/services/x".to_string()))
        .collect();
    serves(&path, &env).unwrap_or_else(|e| panic!("docs/approvals.md's block: {e}"));
}

#[test]
fn one_ingest_token_file_everywhere() {
    let config: toml::Table = read("examples/debtflow/runbookd.toml")
        .parse()
        .expect("toml");
    let ingest: Vec<&str> = config["server"]["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter(|t| t["role"].as_str() == Some("ingest"))
        .filter_map(|t| t.get("token_file").and_then(|f| f.as_str()))
        .collect();
    assert_eq!(
        ingest.len(),
        1,
        "one ingest token file in the DebtFlow config"
    );
    let mut places = 0;
    for rel in [
        "examples/alertmanager/alertmanager.yml",
        "docs/install.md",
        "docs/alerts.md",
    ] {
        for line in read(rel)
            .lines()
            .filter(|l| l.contains("credentials_file:"))
        {
            places += 1;
            let path = line.split("credentials_file:").nth(1).unwrap_or("").trim();
            assert_eq!(path, ingest[0], "{rel}: {line}");
        }
    }
    assert!(
        places >= 3,
        "Alertmanager's credentials_file is shown ({places})"
    );
}
