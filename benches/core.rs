//! Core benchmarks, against the real `runbookd` binary on loopback (`cargo bench --bench core`).
//!
//! Reports: manual trigger → finished run with `?wait=true` (p50/p99, sequential), sustained
//! runs/s with 64 concurrent clients, hot-reload latency (file written → new version
//! serving), idle RSS with the shipped playbooks, and process start → `/healthz` answering on
//! an existing state file. Set `RUNBOOKD_BENCH_DB=postgres://...` to measure on PostgreSQL.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

mod support;

use support::{ms, percentile, start, BIN};

fn write_config(dir: &Path, playbooks: &Path, db: &str, listen: &str) -> std::path::PathBuf {
    let path = dir.join("runbookd.toml");
    std::fs::write(
        &path,
        format!(
            // 64 concurrent clients from 127.0.0.1: above the per-address connection cap.
            "[server]\nlisten = \"{listen}\"\nmax_connections_per_client = 1024\n[state]\ndatabase_url = \"{db}\"\n\
             [playbooks]\ndir = \"{}\"\nmax_concurrent_runs = 16\nqueue_capacity = 4096\n\
             reload_debounce = \"50ms\"\n[log]\nformat = \"json\"\nlevel = \"warn,runbookd::app=info\"\n",
            playbooks.display()
        ),
    )
    .expect("config");
    path
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir(&playbooks).expect("dir");
    std::fs::write(
        playbooks.join("noop.rhai"),
        "fn run(event) { #{ ok: true } }\n",
    )
    .expect("pb");
    let db = std::env::var("RUNBOOKD_BENCH_DB")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("state.db").display()));
    let config = write_config(dir.path(), &playbooks, &db, "127.0.0.1:0");
    let daemon = start(&config);
    let client = reqwest::Client::new();
    let url = format!(
        "http://{}/api/v1/playbooks/noop/runs?wait=true",
        daemon.addr
    );
    println!(
        "runbookd core benchmark — state store: {}",
        db.split(':').next().unwrap_or("?")
    );

    // Warm up.
    for _ in 0..200 {
        client.post(&url).send().await.expect("run");
    }

    // 1. Latency, one client.
    let n = 2000;
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let resp = client.post(&url).send().await.expect("run");
        assert_eq!(resp.status().as_u16(), 200);
        let _ = resp.bytes().await;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "trigger → finished run (?wait=true), {n} sequential runs: p50 {} p99 {} max {}",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().expect("non-empty"))
    );

    // 2. Throughput, 64 clients.
    let clients = 64;
    let per_client = 150;
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = client.clone();
        let url = url.clone();
        let ok = ok.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_client {
                let resp = client.post(&url).send().await.expect("run");
                if resp.status().as_u16() == 200 {
                    ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let _ = resp.bytes().await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let took = started.elapsed();
    let done = ok.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "sustained: {clients} concurrent clients, {done} runs finished in {:.2} s = {:.0} runs/s ({} refused)",
        took.as_secs_f64(),
        done as f64 / took.as_secs_f64(),
        clients * per_client - done
    );

    // 3. Hot reload latency: file written → new version answering.
    let pb_url = format!("http://{}/api/v1/playbooks/noop", daemon.addr);
    let mut reloads = Vec::new();
    for i in 0..20 {
        let before: serde_json::Value = client
            .get(&pb_url)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        let t = Instant::now();
        std::fs::write(
            playbooks.join("noop.rhai"),
            format!("fn run(event) {{ #{{ ok: true, n: {i} }} }}\n"),
        )
        .expect("write");
        loop {
            let now: serde_json::Value = client
                .get(&pb_url)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            if now["version"] != before["version"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        reloads.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reloads.sort();
    println!(
        "hot reload (debounce 50 ms), 20 edits: p50 {} max {}",
        ms(percentile(&reloads, 0.5)),
        ms(*reloads.last().expect("non-empty"))
    );

    // 4. Growing an array in a script (issue #11: quadratic under Rhai's per-value limits).
    std::fs::write(
        playbooks.join("grow.rhai"),
        "fn run(event) { let a = []; for i in 0..event.params.n { a.push(i); } a.len() }\n",
    )
    .expect("write");
    let grow_url = format!(
        "http://{}/api/v1/playbooks/grow/runs?wait=true",
        daemon.addr
    );
    for n in [40_000, 200_000, 1_000_000] {
        let mut tries = 0;
        let t = loop {
            // The new playbook may still be loading (debounce).
            tries += 1;
            assert!(tries < 200, "the grow playbook never loaded");
            let t = Instant::now();
            let run: serde_json::Value = client
                .post(&grow_url)
                .json(&serde_json::json!({ "params": { "n": n } }))
                .send()
                .await
                .expect("run")
                .json()
                .await
                .expect("json");
            if run["id"].is_string() {
                assert_eq!(run["status"], "succeeded", "{n} pushes: {run}");
                assert_eq!(run["result"], n, "{run}");
                break t.elapsed();
            }
            // Not loaded yet: "no playbook named `grow`".
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        println!(
            "array growth: {n} pushes in one run (trigger → finished): {}",
            ms(t)
        );
    }
    drop(daemon);

    // 5. Idle RSS with the shipped playbooks.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    let idle_dir = tempfile::tempdir().expect("tempdir");
    let idle_db = format!("sqlite://{}", idle_dir.path().join("state.db").display());
    let idle_config = write_config(idle_dir.path(), &shipped, &idle_db, "127.0.0.1:0");
    let idle = start(&idle_config);
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "idle RSS with the shipped playbooks: {:.1} MB",
        rss_kib(idle.child.id()) as f64 / 1024.0
    );
    drop(idle);

    // 6. Start → /healthz answering, on the existing state file.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let start_config = write_config(idle_dir.path(), &shipped, &idle_db, &listen);
    let health = format!("http://{listen}/healthz");
    let mut starts = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&start_config)
            .arg("serve")
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        loop {
            if let Ok(r) = client.get(&health).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        starts.push(t.elapsed());
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
    starts.sort();
    println!(
        "process start → /healthz answering, 10 starts: p50 {} max {}",
        ms(percentile(&starts, 0.5)),
        ms(*starts.last().expect("non-empty"))
    );
}
