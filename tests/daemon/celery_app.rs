//! A real Celery worker of an app shaped like the payments app's (`tests/fixtures/celery_app`:
//! `tasks.payment_tasks.process_payment`), on the test Redis. Each app has its own queue and
//! control exchange, so tests that run at once never hear each other's remote control.
//! scripts/test installs Celery from PyPI and says where (`RUNBOOKD_TEST_CELERY`).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::helpers::{redis, redis_url};

/// The `celery` program: scripts/test's virtualenv, or the one on PATH.
fn celery_bin() -> PathBuf {
    std::env::var_os("RUNBOOKD_TEST_CELERY")
        .map(PathBuf::from)
        .unwrap_or_else(|| "celery".into())
}

/// The Python that has Celery: the one beside `celery` in its virtualenv.
fn python_bin() -> PathBuf {
    let celery = celery_bin();
    match celery.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("python3"),
        _ => "python3".into(),
    }
}

fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/celery_app"
    ))
}

/// One app: its queue, its control exchange.
pub struct CeleryApp {
    pub queue: String,
    pub control_exchange: String,
    dir: tempfile::TempDir,
}

impl CeleryApp {
    pub fn new() -> CeleryApp {
        let id = uuid::Uuid::now_v7().simple().to_string();
        CeleryApp {
            queue: format!("payments_{id}"),
            control_exchange: format!("ctl_{id}"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn command(&self, program: PathBuf) -> Command {
        let mut c = Command::new(program);
        c.current_dir(fixture())
            .env("PYTHONPATH", fixture())
            .env("BROKER_URL", redis_url())
            .env("QUEUE", &self.queue)
            .env("CONTROL_EXCHANGE", &self.control_exchange);
        c
    }

    /// runbookd's `[celery]` for this app.
    pub fn config(&self) -> String {
        format!(
            "\n[celery]\nbroker_url = \"{}\"\nqueue = \"{}\"\ncontrol_exchange = \"{}\"\ninspect_timeout = \"1500ms\"\n",
            redis_url(),
            self.queue,
            self.control_exchange
        )
    }

    /// Starts worker `name` (one process, one prefetched task) and waits for its "ready".
    pub fn start_worker(&self, name: &str) -> Worker {
        use std::os::unix::process::CommandExt;
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("worker log");
        let child = self
            .command(celery_bin())
            .args([
                "-A",
                "tasks.celery_app",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "1",
                "--hostname",
                name,
                "--without-heartbeat",
                "--without-mingle",
                "--without-gossip",
                "--loglevel",
                "info",
            ])
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): scripts/test installs Celery and sets RUNBOOKD_TEST_CELERY",
                    celery_bin().display()
                )
            });
        let w = Worker { child, log };
        w.wait_log(&format!("{name} ready."), Duration::from_secs(60));
        w
    }

    /// The app's views queue `process_payment(id)` for each id.
    pub fn enqueue(&self, payment_ids: &[&str]) {
        let out = self
            .command(python_bin())
            .arg("enqueue.py")
            .args(payment_ids)
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "enqueue.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Lets the worker finish `process_payment(id)`.
    pub async fn release(&self, payment_id: &str) {
        use redis::AsyncCommands;
        let _: i64 = redis()
            .await
            .lpush(format!("{}:release:{payment_id}", self.queue), "go")
            .await
            .expect("release");
    }
}

/// A running worker, killed (with its pool) when dropped.
pub struct Worker {
    child: Child,
    pub log: PathBuf,
}

impl Worker {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the worker has logged `line`.
    pub fn wait_log(&self, line: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log_text().contains(line) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("worker never logged {line:?}:\n{}", self.log_text());
    }

    /// Sends `sig` (`STOP`, `CONT`, `KILL`) to the worker's main process, which serves remote
    /// control (its pool child runs the tasks).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Kills the worker and its pool; returns once the main process is gone.
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}
