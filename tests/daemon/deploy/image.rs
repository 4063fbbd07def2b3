//! The container image, where podman is installed: built from deploy/Containerfile with the
//! binary this suite built, on a `debian:bookworm-slim` made locally by
//! deploy/base-image.sh (no registry is reachable), then its root filesystem run as the pod
//! runs it — read-only, uid 10001, a tmpfs on /tmp — against the test PostgreSQL.
//! `podman run` does not work on every machine (nested containers): a chroot into
//! `podman image mount` does.

use std::{path::Path, process::Command, time::Duration};

use super::{on_path, repo, run, text};
use crate::helpers::{free_port, fresh_postgres_database, BIN};

/// Removes the test image (and its mount) however the test ends.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["image", "unmount", &self.0])
            .output();
        let _ = Command::new("podman")
            .args(["rmi", "--force", &self.0])
            .output();
    }
}

/// The process tree started in the image; ended by its pid (the chroot execs runbookd).
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[tokio::test]
async fn the_image_builds_and_its_binary_answers_readyz_on_postgres() {
    let Some(podman) = on_path("podman") else {
        return eprintln!("SKIP: no podman (scripts/test installs it on Debian)");
    };
    let has_base = run(Command::new(&podman).args([
        "image",
        "exists",
        "docker.io/library/debian:bookworm-slim",
    ]))
    .status
    .success();
    if !has_base && on_path("mmdebstrap").is_none() {
        return eprintln!("SKIP: no debian:bookworm-slim image and no mmdebstrap to build one");
    }
    let out = run(&mut Command::new(repo().join("deploy/base-image.sh")));
    assert!(out.status.success(), "deploy/base-image.sh: {}", text(&out));

    // A small build context: what the Containerfile copies, the binary under test as BINARY.
    let ctx = tempfile::tempdir().expect("tempdir");
    std::fs::copy(BIN, ctx.path().join("runbookd")).expect("binary");
    copy_tree(&repo().join("playbooks"), &ctx.path().join("playbooks"));
    copy_tree(&repo().join("examples"), &ctx.path().join("examples"));
    copy_tree(&repo().join("deploy"), &ctx.path().join("deploy"));
    let tag = Image(format!(
        "localhost/runbookd-test:{}",
        uuid::Uuid::now_v7().simple()
    ));
    let out = run(Command::new(&podman)
        .args([
            "build",
            "--isolation=chroot",
            "--pull=never",
            "--format",
            "docker",
            "--quiet",
        ])
        .args(["--build-arg", "BINARY=runbookd", "-f"])
        .arg(ctx.path().join("deploy/Containerfile"))
        .args(["-t", &tag.0])
        .arg(ctx.path()));
    assert!(out.status.success(), "podman build: {}", text(&out));
    let inspect = |format: &str| -> String {
        let out = run(Command::new(&podman).args(["image", "inspect", "--format", format, &tag.0]));
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let size: u64 = inspect("{{.Size}}").parse().expect("size");
    eprintln!(
        "image size {} MB (with this build's binary: {} MB)",
        size / 1_000_000,
        std::fs::metadata(BIN).expect("binary").len() / 1_000_000
    );
    assert_eq!(inspect("{{.User}}"), "10001:10001");
    let health: serde_json::Value =
        serde_json::from_str(&inspect("{{json .HealthCheck}}")).expect("healthcheck json");
    let check = health["Test"]
        .as_array()
        .expect("HEALTHCHECK")
        .last()
        .and_then(|c| c.as_str())
        .expect("command")
        .to_string();
    let out = run(Command::new(&podman).args(["image", "mount", &tag.0]));
    assert!(out.status.success(), "podman image mount: {}", text(&out));
    let root = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let chroot_bin = on_path("chroot").expect("chroot (coreutils)");
    let unshare = on_path("unshare").expect("unshare (util-linux)");
    let tokens = [
        ("RUNBOOKD_INGEST_TOKEN", "ingest-token"),
        ("RUNBOOKD_OPERATOR_TOKEN", "operator-token"),
    ];
    let chroot = |args: &[&str]| {
        let mut cmd = Command::new(&chroot_bin);
        cmd.arg("--userspec=10001:10001")
            .arg(&root)
            .args(args)
            .env_clear()
            .envs(tokens);
        cmd
    };
    // The image's configuration and the shipped playbooks pass the preflight.
    let out = run(chroot(&["/usr/local/bin/runbookd", "check"])
        .env("RUNBOOKD_CONFIG", "/etc/runbookd/runbookd.toml"));
    assert!(
        out.status.success(),
        "runbookd check in the image: {}",
        text(&out)
    );

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let state = fresh_postgres_database().await;
    // As the pod runs it: the root read-only, only /tmp writable, uid 10001.
    let script = "set -e; r=$1; mount --bind \"$r\" \"$r\"; mount -o remount,bind,ro \"$r\"; \
                  mount -t proc proc \"$r/proc\"; mount --rbind /dev \"$r/dev\"; \
                  mount -t tmpfs -o mode=1777,size=64m tmpfs \"$r/tmp\"; \
                  exec chroot --userspec=10001:10001 \"$r\" /usr/local/bin/runbookd serve";
    let serving = Serving(
        Command::new(&unshare)
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
                &root,
            ])
            .env_clear()
            .envs(tokens)
            .env("RUNBOOKD_CONFIG", "/etc/runbookd/runbookd.toml")
            .env("RUNBOOKD_STATE__DATABASE_URL", &state)
            .env("RUNBOOKD_SERVER__LISTEN", &listen)
            .env("RUNBOOKD_KEY_METRICS__INTERVAL", "0s")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("unshare"),
    );
    let client = reqwest::Client::new();
    let mut ready = None;
    for _ in 0..150 {
        if let Ok(resp) = client.get(format!("http://{listen}/readyz")).send().await {
            ready = Some((
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            ));
            if ready.as_ref().is_some_and(|r| r.0 == 200) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs = |mut s: Serving| {
        use std::io::Read;
        let _ = s.0.kill();
        let _ = s.0.wait();
        let mut out = String::new();
        if let Some(mut err) = s.0.stderr.take() {
            let _ = err.read_to_string(&mut out);
        }
        out
    };
    if ready.as_ref().map(|r| r.0) != Some(200) {
        panic!("/readyz from the image: {ready:?}\n{}", logs(serving));
    }
    // The image's HEALTHCHECK, run inside it: passes on the daemon's port, fails on another.
    let out = run(chroot(&["/bin/bash", "-c", &check]).env("RUNBOOKD_SERVER__LISTEN", &listen));
    assert!(
        out.status.success(),
        "HEALTHCHECK against the daemon: {}",
        text(&out)
    );
    let elsewhere = format!("127.0.0.1:{}", free_port());
    let out = run(chroot(&["/bin/bash", "-c", &check]).env("RUNBOOKD_SERVER__LISTEN", &elsewhere));
    assert!(
        !out.status.success(),
        "HEALTHCHECK passed with nothing listening"
    );
    // A run of a shipped playbook, as the operator token.
    let resp = client
        .post(format!(
            "http://{listen}/api/v1/playbooks/health_probe/runs?wait=true"
        ))
        .bearer_auth("operator-token")
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("run");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    if status != 200 {
        panic!(
            "health_probe in the image: {status} {body}\n{}",
            logs(serving)
        );
    }
    drop(serving);
}
