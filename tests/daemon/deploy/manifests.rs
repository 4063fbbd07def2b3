//! deploy/kubernetes/: valid against the Kubernetes schemas offline, rendered from the
//! repository's files, consistent with the configuration they carry; and the hot reload
//! they rely on: Kubernetes' `..data` symlink swap of a ConfigMap volume.

use std::{collections::BTreeSet, path::Path, process::Command, time::Duration};

use serde_json::{json, Value};

use super::{read, repo, run, text, venv, yaml};
use crate::helpers::{Daemon, Db, Options, Workspace, BIN};

const MANIFESTS: [&str; 5] = [
    "config.yaml",
    "playbooks.yaml",
    "deployment.yaml",
    "service.yaml",
    "poddisruptionbudget.yaml",
];

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas_offline() {
    let Some(validate) = venv("kubernetes-validate") else {
        return eprintln!(
            "SKIP: no kubernetes-validate in the test virtualenv (scripts/test installs it)"
        );
    };
    let files: Vec<_> = MANIFESTS
        .iter()
        .map(|m| repo().join("deploy/kubernetes").join(m))
        .collect();
    // The package's newest schemas, and an older release still in use.
    for version in [None, Some("1.29.0")] {
        let mut cmd = Command::new(&validate);
        cmd.arg("--strict");
        if let Some(v) = version {
            cmd.args(["-k", v]);
        }
        let out = run(cmd.args(&files));
        assert!(out.status.success(), "{version:?}: {}", text(&out));
    }
    // Every manifest of the folder is validated (a new one cannot be forgotten here).
    let on_disk: BTreeSet<String> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .expect("dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    assert_eq!(on_disk, MANIFESTS.iter().map(|m| m.to_string()).collect());
}

#[test]
fn the_configmaps_are_rendered_from_the_repositorys_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out =
        run(Command::new(repo().join("deploy/kubernetes/render-configmaps.sh")).arg(dir.path()));
    assert!(out.status.success(), "{}", text(&out));
    for file in ["config.yaml", "playbooks.yaml"] {
        let fresh = std::fs::read_to_string(dir.path().join(file)).expect("rendered");
        assert!(
            fresh == read(&format!("deploy/kubernetes/{file}")),
            "deploy/kubernetes/{file} is stale: run deploy/kubernetes/render-configmaps.sh"
        );
    }
    let Some(python) = venv("python3") else {
        return eprintln!("SKIP (contents): no test virtualenv with PyYAML");
    };
    // What Kubernetes will write into the volume is each file, byte for byte.
    for doc in yaml(&python, "deploy/kubernetes/playbooks.yaml") {
        let folder = match doc["metadata"]["name"].as_str() {
            Some("runbookd-playbooks") => "playbooks",
            Some("runbookd-playbooks-lib") => "playbooks/lib",
            Some("runbookd-playbooks-tests") => "playbooks/tests",
            other => panic!("unexpected ConfigMap {other:?}"),
        };
        for (key, value) in doc["data"].as_object().expect("data") {
            assert_eq!(
                value.as_str(),
                Some(read(&format!("{folder}/{key}")).as_str()),
                "{folder}/{key}"
            );
        }
    }
}

/// The Deployment's pod spec, container and the runbookd.toml of its ConfigMap.
fn deployment(python: &Path) -> (Value, Value, String) {
    let spec = yaml(python, "deploy/kubernetes/deployment.yaml")[0]["spec"].clone();
    let container = spec["template"]["spec"]["containers"][0].clone();
    let config = yaml(python, "deploy/kubernetes/config.yaml")[0]["data"]["runbookd.toml"]
        .as_str()
        .expect("runbookd.toml")
        .to_string();
    (spec, container, config)
}

fn seconds(duration: &str) -> u64 {
    humantime::parse_duration(duration)
        .expect("duration")
        .as_secs()
}

#[test]
fn the_deployment_agrees_with_the_configuration_it_mounts() {
    let Some(python) = venv("python3") else {
        return eprintln!("SKIP: no test virtualenv with PyYAML (scripts/test creates it)");
    };
    let (spec, c, config) = deployment(&python);
    let pod = &spec["template"]["spec"];
    let toml: toml::Table = config.parse().expect("runbookd.toml");
    assert_eq!(spec["replicas"], 3);
    assert!(
        toml["state"].get("database_url_env").is_some(),
        "replicas share PostgreSQL, from a Secret"
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    // SIGTERM: the preStop pause, then shutdown_grace + shutdown_drain (3 s) + HTTP drain (5 s).
    let grace = seconds(
        toml["server"]["shutdown_grace"]
            .as_str()
            .expect("shutdown_grace"),
    );
    let pause: u64 = c["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("preStop sleep");
    let period = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(period > pause + grace + 3 + 5, "{period} s");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(
        c["resources"]["requests"].is_object() && c["resources"]["limits"]["memory"].is_string()
    );
    // Writable: only emptyDirs, and only /tmp.
    let volumes = pod["volumes"].as_array().expect("volumes");
    let writable: Vec<_> = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter(|m| m["readOnly"] != true)
        .collect();
    for m in &writable {
        let v = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .expect("volume");
        assert!(v["emptyDir"].is_object(), "{m}");
    }
    assert_eq!(
        writable
            .iter()
            .map(|m| m["mountPath"].clone())
            .collect::<Vec<_>>(),
        vec![json!("/tmp")]
    );
    // Every `*_env` of runbookd.toml comes from a Secret.
    let env = c["env"].as_array().expect("env");
    let from_secret: BTreeSet<&str> = env
        .iter()
        .filter(|e| e["valueFrom"]["secretKeyRef"].is_object())
        .filter_map(|e| e["name"].as_str())
        .collect();
    let named: BTreeSet<String> = config
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim().ends_with("_env"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .collect();
    let missing: Vec<_> = named
        .iter()
        .filter(|n| !from_secret.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "runbookd.toml names variables the Deployment does not set: {missing:?}"
    );
    // The projected playbook volume lists every lib and tests key of the ConfigMaps.
    let sources = volumes
        .iter()
        .find(|v| v["name"] == "playbooks")
        .expect("playbooks")["projected"]["sources"]
        .clone();
    for doc in yaml(&python, "deploy/kubernetes/playbooks.yaml") {
        let name = doc["metadata"]["name"].clone();
        let source = sources
            .as_array()
            .expect("sources")
            .iter()
            .find(|s| s["configMap"]["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not projected"));
        if let Some(items) = source["configMap"]["items"].as_array() {
            let keys: BTreeSet<_> = doc["data"]
                .as_object()
                .expect("data")
                .keys()
                .cloned()
                .collect();
            let listed: BTreeSet<_> = items
                .iter()
                .filter_map(|i| i["key"].as_str().map(String::from))
                .collect();
            assert_eq!(keys, listed, "{name}: keys not projected");
        }
    }
    // The mounted configuration passes `runbookd check` with the Deployment's variables.
    let dir = tempfile::tempdir().expect("tempdir");
    let placed = config.replace(
        "/etc/runbookd/config/escalation.toml",
        &repo()
            .join("examples/debtflow/escalation.toml")
            .display()
            .to_string(),
    );
    std::fs::write(dir.path().join("runbookd.toml"), placed).expect("write");
    let out = run(Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("runbookd.toml"))
        .arg("check")
        .arg(repo().join("playbooks"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(
            env.iter()
                .filter_map(|e| e["name"].as_str())
                .map(|n| (n, "postgres://x:y@db/x")),
        ));
    assert!(out.status.success(), "{}", text(&out));
}

/// Writes `files` into `dir` as the kubelet's atomic writer does for a ConfigMap volume: a
/// new timestamped folder, a `..data_tmp` link renamed over `..data`, user-visible links
/// into `..data` for new top-level names, the previous folder removed.
fn configmap_update(dir: &Path, generation: u32, files: &[(&str, &str)]) {
    let stamp = format!("..2026_12_07_00_00_{generation:02}.{generation}");
    for (rel, content) in files {
        let path = dir.join(&stamp).join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::os::unix::fs::symlink(&stamp, dir.join("..data_tmp")).expect("symlink");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("rename");
    for (rel, _) in files {
        let top = rel.split('/').next().expect("name");
        if std::fs::symlink_metadata(dir.join(top)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), dir.join(top)).expect("symlink");
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).expect("remove old");
    }
}

#[tokio::test]
async fn a_configmap_volume_update_is_hot_reloaded() {
    let ws = Workspace::new(Db::Sqlite).await;
    let module = |n: u32| format!("fn answer() {{ {n} }}\n");
    let playbook = "import \"lib/answers\" as answers;\nfn run(event) { answers::answer() }\n";
    let dir = ws.playbooks();
    configmap_update(
        &dir,
        1,
        &[("hello.rhai", playbook), ("lib/answers.rhai", &module(1))],
    );
    let daemon = Daemon::start(&ws, &Options::default());
    let (status, first) = daemon.run_wait("hello", json!({})).await;
    assert_eq!(
        (status, first["result"].clone()),
        (200, json!(1)),
        "{first}"
    );
    // An edit of the module alone: Kubernetes swaps `..data`, no file the daemon lists changes.
    configmap_update(
        &dir,
        2,
        &[("hello.rhai", playbook), ("lib/answers.rhai", &module(2))],
    );
    let mut last = Value::Null;
    for _ in 0..100 {
        last = daemon.run_wait("hello", json!({})).await.1;
        if last["result"] == json!(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        last["result"],
        json!(2),
        "the swap was not reloaded: {last}\n{}",
        daemon.logs()
    );
    assert_ne!(last["version"], first["version"]);
    // The volume's own entries (`..data`, `..<timestamp>`) and the `lib` link are not
    // playbooks and not errors: the catalog lists exactly the one playbook, healthy.
    let (_, listed) = daemon.get("/api/v1/playbooks").await;
    let names: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["hello"], "{listed}");
    assert!(listed[0]["error"].is_null(), "{listed}");
    // `runbookd check` on the mounted volume agrees.
    let check = Command::new(BIN)
        .arg("check")
        .arg(&dir)
        .output()
        .expect("check");
    assert!(
        check.status.success(),
        "check on a ConfigMap volume: {}",
        text(&check)
    );
    // An update that changes no file's text (another key of the ConfigMap changed) is
    // reloaded and keeps the version: it depends on the text, not on `..<timestamp>`.
    let reloads = || async {
        let metrics = daemon.metrics().await;
        metrics
            .lines()
            .find(|l| l.starts_with("runbookd_playbook_reload_duration_seconds_count"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = reloads().await;
    configmap_update(
        &dir,
        3,
        &[("hello.rhai", playbook), ("lib/answers.rhai", &module(2))],
    );
    for _ in 0..100 {
        if reloads().await > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloads().await > before, "the swap was not reloaded");
    let same = daemon.run_wait("hello", json!({})).await.1;
    assert_eq!(
        (same["result"].clone(), same["version"].clone()),
        (json!(2), last["version"].clone()),
        "an update with the same text gave a new version: {same}"
    );
}
