//! Starts the real daemon for a test: its own temp dir, playbooks, config and database.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use sqlx::{Connection, Executor};

pub const BIN: &str = env!("CARGO_BIN_EXE_runbookd");

/// Which state store a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A state store URL: a file in `dir`, or a fresh PostgreSQL database.
pub async fn database_url(db: Db, dir: &Path) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("state.db").display()),
        Db::Postgres => fresh_postgres_database().await,
    }
}

/// Creates an empty PostgreSQL database for one test and returns its URL.
pub async fn fresh_postgres_database() -> String {
    let admin = std::env::var("RUNBOOKD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    let name = format!("runbookd_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL must be running (scripts/test starts it)");
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

/// The Redis tests use (scripts/test starts one on the default port).
pub fn redis_url() -> String {
    std::env::var("RUNBOOKD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A connection to the test Redis.
pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis must be running (scripts/test starts it)")
}

/// Runs `python3 -c code` and returns its stdout bytes.
pub fn python(code: &str, stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", code])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write");
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "python3 failed");
    out.stdout
}

fn client(bearer: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = bearer {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("token header"),
        );
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// Serves `app` on a free loopback port for the rest of the test: the fakes of third parties
/// (Statuspage, Loki, an on-call sink) are real HTTP servers.
pub async fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A loopback port nothing listens on (for tools the tests start: Alertmanager, Prometheus).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Waits until something accepts connections on loopback `port`.
pub fn wait_listening(port: u16, what: &str) {
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not listen on 127.0.0.1:{port}");
}

/// Options for one daemon.
#[derive(Default)]
pub struct Options {
    /// Extra TOML appended to the generated config.
    pub extra_config: String,
    pub env: Vec<(String, String)>,
    /// Bearer token the test's client sends with every request (daemons with tokens).
    pub bearer: Option<String>,
    /// Extra arguments after `serve` (`--world FILE`).
    pub serve_args: Vec<String>,
}

/// Copies the directory `from` (with its subdirectories) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// A test's working directory: playbooks and config; survives daemon restarts.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub database_url: String,
}

impl Workspace {
    /// `RUNBOOKD_TEST_STATE=postgres` runs every test on PostgreSQL instead of SQLite.
    pub async fn new(db: Db) -> Workspace {
        let db = match std::env::var("RUNBOOKD_TEST_STATE").as_deref() {
            Ok("postgres") => Db::Postgres,
            _ => db,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("playbooks")).expect("playbooks dir");
        let database_url = database_url(db, dir.path()).await;
        Workspace { dir, database_url }
    }

    pub fn playbooks(&self) -> PathBuf {
        self.dir.path().join("playbooks")
    }

    /// Writes `playbooks/NAME.rhai`.
    pub fn write_playbook(&self, name: &str, source: &str) {
        let tmp = self.playbooks().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, source).expect("write playbook");
        // Like an editor: write aside, then rename into place.
        std::fs::rename(&tmp, self.playbooks().join(format!("{name}.rhai")))
            .expect("rename playbook");
    }

    /// Copies the repository's `playbooks/` (with `lib/`) into this workspace: tests of the
    /// shipped playbooks run the files users get, not copies.
    pub fn install_shipped_playbooks(&self) {
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks"),
            &self.playbooks(),
        );
    }

    pub fn config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("runbookd.toml");
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\n\
             [state]\ndatabase_url = \"{}\"\n\n\
             [playbooks]\ndir = \"{}\"\ntimeout = \"30s\"\nreload_debounce = \"50ms\"\n\n\
             [log]\nformat = \"json\"\nlevel = \"info\"\n\n\
             [escalation]\nfile = \"{}\"\ninterval = \"1h\"\n\n{extra}",
            self.database_url,
            self.playbooks().display(),
            self.dir.path().join("escalation.toml").display()
        );
        // Later sections with the same name as above are merged by hand in tests that need it.
        std::fs::write(&path, text).expect("write config");
        path
    }
}

/// The running daemon.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// The daemon's peak resident memory so far (`VmHWM`), in bytes: the kernel's high-water
    /// mark, so no spike between two samples is missed.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM");
        kib * 1024
    }

    /// Starts `runbookd serve` in `ws` and waits until it listens.
    pub fn start(ws: &Workspace, opts: &Options) -> Daemon {
        Self::try_start(ws, opts).unwrap_or_else(|logs| panic!("daemon did not start:\n{logs}"))
    }

    /// Starts the daemon; on failure returns everything it logged.
    pub fn try_start(ws: &Workspace, opts: &Options) -> Result<Daemon, String> {
        let config = ws.config(&opts.extra_config);
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&config)
            .arg("serve")
            .args(&opts.serve_args)
            .current_dir(ws.dir.path())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The key-metrics exporter would add its own requests to the fake Stripe's request
        // log; tests of it turn it on through `opts.env`.
        cmd.env("RUNBOOKD_KEY_METRICS__INTERVAL", "0s");
        // A replica that died loses its runs to the others (or to its own restart on
        // PostgreSQL, where only expiry tells) within seconds, not the default 15 s.
        cmd.env("RUNBOOKD_SERVER__LEASE_TTL", "2s");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn runbookd");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if v["fields"]["message"] == "listening" {
                            if let Some(addr) = v["fields"]["addr"].as_str() {
                                let _ = tx.send(addr.to_string());
                            }
                        }
                    }
                    logs.lock().expect("logs").push(line);
                }
            });
        }
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Ok(Daemon {
                child,
                addr: addr.parse().expect("addr"),
                client: client(opts.bearer.as_deref()),
                logs,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                Err(logs.lock().expect("logs").join("\n"))
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything the daemon logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// Triggers `playbook` and waits for the finished run.
    pub async fn run_wait(&self, playbook: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(&format!("/api/v1/playbooks/{playbook}/runs?wait=true")))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    /// The Prometheus exposition text.
    pub async fn metrics(&self) -> String {
        let resp = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        resp.text().await.expect("metrics text")
    }

    /// `/metrics` once it holds `line` (up to `timeout`): a counter is raised just after
    /// the store's write that the API shows, so a test that saw the write waits for it.
    pub async fn metrics_holding(&self, line: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let text = self.metrics().await;
            if text.contains(line) || start.elapsed() > timeout {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Polls `GET path` until `pred` holds or `timeout` passes; returns the last answer.
    pub async fn poll(
        &self,
        path: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let (_, v) = self.get(path).await;
            if pred(&v) || start.elapsed() > timeout {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Triggers `playbook` without waiting (202) and returns the run id.
    pub async fn start_run(&self, playbook: &str, params: Value) -> String {
        let resp = self
            .client
            .post(self.url(&format!("/api/v1/playbooks/{playbook}/runs")))
            .json(&serde_json::json!({ "params": params }))
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status().as_u16(), 202);
        resp.json::<Value>().await.expect("json")["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// Polls run `id` until it has `status` or `timeout` passes; returns the last answer.
    pub async fn run_reaching(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.poll(&format!("/api/v1/runs/{id}"), timeout, |v| {
            v["status"] == status
        })
        .await
    }

    /// Stops the process (SIGSTOP) and returns once every thread of it is stopped: `kill`
    /// returns before a busy thread has taken the signal, and one could still act meanwhile.
    pub fn freeze(&self) {
        self.signal("STOP");
        let tasks = format!("/proc/{}/task", self.child.id());
        for _ in 0..1000 {
            let all_stopped = std::fs::read_dir(&tasks)
                .expect("threads")
                .filter_map(Result::ok)
                .all(|t| {
                    let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                    // The state follows the command name's closing parenthesis.
                    stat.rsplit(')')
                        .next()
                        .map(str::trim_start)
                        .is_some_and(|rest| rest.starts_with('T') || rest.starts_with('t'))
                });
            if all_stopped {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the daemon did not stop within 5 s of SIGSTOP");
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "daemon did not exit within {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh database with the payments app's schema (tests/fixtures/payments_app.sql).
pub struct AppDb {
    pub url: String,
    pub pool: sqlx::PgPool,
}

impl AppDb {
    pub async fn new() -> AppDb {
        let url = fresh_postgres_database().await;
        let pool = sqlx::PgPool::connect(&url).await.expect("connect app db");
        sqlx::raw_sql(include_str!("../fixtures/payments_app.sql"))
            .execute(&pool)
            .await
            .expect("app schema");
        AppDb { url, pool }
    }

    /// Inserts a payment created `age_secs` ago; returns its id.
    pub async fn payment(
        &self,
        status: &str,
        age_secs: i64,
        processor_ref: Option<&str>,
    ) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO payments_payment (id, account_id, processor_id, amount, payment_method, \
             status, processor_ref, idempotency_key, metadata, created_at) \
             VALUES ($1::uuid, gen_random_uuid(), gen_random_uuid(), 42.50, 'card', $2, $3, $4, \
             '{\"source\": \"test\"}'::jsonb, now() - make_interval(secs => $5::float8))",
        )
        .bind(&id)
        .bind(status)
        .bind(processor_ref)
        .bind(format!("idem-{id}"))
        .bind(age_secs as f64)
        .execute(&self.pool)
        .await
        .expect("insert payment");
        id
    }

    /// A `webhook_received` audit row, as the app writes when Stripe calls it.
    pub async fn webhook_received(&self, age_secs: i64) {
        sqlx::query(
            "INSERT INTO audit_auditlog (action, object_id, changes, created_at) \
             VALUES ('webhook_received', gen_random_uuid(), '{\"type\": \"payment_intent.succeeded\"}', \
             now() - make_interval(secs => $1::float8))",
        )
        .bind(age_secs as f64)
        .execute(&self.pool)
        .await
        .expect("insert audit row");
    }

    pub async fn status_of(&self, id: &str) -> (String, Value) {
        let row: (String, String) = sqlx::query_as(
            "SELECT status, metadata::text FROM payments_payment WHERE id = $1::uuid",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .expect("select");
        (row.0, serde_json::from_str(&row.1).expect("json"))
    }

    /// `[payments]` config pointing at this database.
    pub fn config(&self) -> String {
        format!("[payments]\ndatabase_url = \"{}\"\n", self.url)
    }
}
