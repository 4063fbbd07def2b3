//! The clients of a running daemon (`runbookd runs`, `show`, `logs`, `trigger`,
//! `incidents`, `ack`, `breakers`, `status`, `approvals`, …): one HTTP client, one way to
//! find the daemon (`--url`, `RUNBOOKD_URL`, else `[server] listen`), one token
//! (`RUNBOOKD_TOKEN`, never a flag: a flag shows in `ps` and shell history), and one
//! mapping from what went wrong to an exit code scripts can test:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done (a waited or followed run: it succeeded) |
//! | 1 | what was asked failed: a waited run did not succeed, the daemon refused the action (409, 5xx), the daemon is not ready |
//! | 2 | usage: a bad flag or value (clap's, or the daemon's 400) |
//! | 3 | the daemon cannot be asked: nothing answers, or the token is refused (401, 403, 429) |
//! | 4 | not found (404): no such run, incident, approval, playbook or breaker |

/// `println!` for the remote verbs' answers: a reader that went away (`| head`) ends the
/// output, not the command — it still ends with its exit code (a followed run's outcome).
macro_rules! out {
    () => { $crate::cli::remote::write_out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::remote::write_out(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` of [`out!`].
macro_rules! out_raw {
    ($($t:tt)*) => { $crate::cli::remote::write_out(format_args!($($t)*)) };
}

pub mod args;
mod incidents;
mod runs;
mod status;
mod table;

pub mod approvals;

use std::{process::ExitCode, time::Duration};

use runbookd::config::Config;
use serde_json::Value;

pub use args::RemoteCommand;

/// How long an ordinary request may take (a waited run or an event stream has no limit).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how every remote verb reaches the daemon.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// The daemon's base URL (default: http:// and [server] listen of the configuration,
    /// a wildcard address asked on loopback).
    #[arg(long, env = "RUNBOOKD_URL")]
    pub url: Option<String>,
    /// Print the API's JSON answer as it is (pretty) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A failure, with the exit code it ends the command with.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNREACHABLE: u8 = 3;
    pub const NOT_FOUND: u8 = 4;

    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// The daemon answered `status` with `body`: what that means for the exit code.
    fn refused(status: u16, body: &Value) -> Failure {
        let reason = body["error"].as_str().unwrap_or("no reason given");
        let code = match status {
            401 | 403 | 429 => Self::UNREACHABLE,
            404 => Self::NOT_FOUND,
            400 | 413 | 415 => Self::USAGE,
            _ => Self::FAILED,
        };
        let hint = match status {
            401 => " (set RUNBOOKD_TOKEN to a token of the daemon's [[server.tokens]])",
            _ => "",
        };
        Failure::new(
            code,
            format!("the daemon refused ({status}): {reason}{hint}"),
        )
    }
}

/// What a command ends with.
pub type Outcome = Result<ExitCode, Failure>;

/// An answer of the daemon: its status and JSON body (`null` when it had none).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// A client of one daemon.
pub struct Client {
    http: reqwest::Client,
    /// `http://host:port`, no trailing slash.
    pub base: String,
    token: Option<String>,
    /// `--json`: print answers as they are.
    pub json: bool,
}

impl Client {
    /// The client for `target`, the token read from `RUNBOOKD_TOKEN`.
    pub fn new(config: &Config, target: &Target) -> Result<Client, Failure> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Failure::new(Failure::FAILED, format!("building the HTTP client: {e}")))?;
        let token = std::env::var("RUNBOOKD_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        Ok(Client {
            http,
            base: base_url(config, target.url.as_deref())?,
            token,
            json: target.json,
        })
    }

    /// A request to `path` (under the base URL), with the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends `req` (within [`REQUEST_TIMEOUT`] unless `unbounded`) and reads its JSON body;
    /// a transport error is exit 3.
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
        unbounded: bool,
    ) -> Result<Answer, Failure> {
        let req = if unbounded {
            req
        } else {
            req.timeout(REQUEST_TIMEOUT)
        };
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    /// `GET path`: the body of a 200, else the failure its status means.
    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        let a = self
            .send(self.request(reqwest::Method::GET, path), false)
            .await?;
        ok(a)
    }

    /// `POST path` with a JSON `body`: the body of a 2xx, else the failure it means.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let a = self
            .send(self.request(reqwest::Method::POST, path).json(body), false)
            .await?;
        ok(a)
    }

    /// Exit 3, naming the daemon and the cause.
    pub fn unreachable(&self, e: &reqwest::Error) -> Failure {
        use std::error::Error as _;
        let mut cause = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            cause = format!("{cause}: {s}");
            source = s.source();
        }
        Failure::new(
            Failure::UNREACHABLE,
            format!("cannot reach the daemon at {}: {cause}", self.base),
        )
    }

    /// With `--json`, prints `body` pretty and says so; else does nothing.
    pub fn json_out(&self, body: &Value) -> bool {
        if self.json {
            out!(
                "{}",
                serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string())
            );
        }
        self.json
    }
}

/// The body of a 2xx answer, else the failure its status means.
pub fn ok(a: Answer) -> Result<Value, Failure> {
    if (200..300).contains(&a.status) {
        Ok(a.body)
    } else {
        Err(Failure::refused(a.status, &a.body))
    }
}

/// Where the daemon answers: `--url`, else `server.listen` (a wildcard address is asked on
/// loopback).
fn base_url(config: &Config, url: Option<&str>) -> Result<String, Failure> {
    if let Some(u) = url {
        let parsed = url::Url::parse(u).map_err(|e| {
            Failure::new(
                Failure::USAGE,
                format!("--url `{u}` is not a URL ({e}); say e.g. http://127.0.0.1:8765"),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Failure::new(
                Failure::USAGE,
                format!("--url `{u}` must be http:// or https://"),
            ));
        }
        return Ok(u.trim_end_matches('/').to_string());
    }
    let mut addr = config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(format!("http://{addr}"))
}

/// An id that goes into a path: a UUID (runs, incidents and approvals all have one), so
/// `../breakers/x/reset?` cannot become another route.
pub fn uuid_arg(id: &str, what: &str, listed_by: &str) -> Result<String, Failure> {
    uuid::Uuid::parse_str(id.trim())
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| {
            Failure::new(
                Failure::USAGE,
                format!("`{id}` is not {what} id (a UUID, as `{listed_by}` lists them)"),
            )
        })
}

/// A path segment (a playbook or breaker name), percent-encoded.
pub fn segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Runs one remote verb and turns its failure into the message and exit code.
pub async fn run(config: &Config, command: RemoteCommand) -> ExitCode {
    match args::dispatch(config, command).await {
        Ok(code) => code,
        Err(f) => {
            eprintln!("runbookd: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Writes to standard output; errors (a closed pipe) are dropped, see [`out!`].
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_fmt(args).and_then(|()| stdout.flush());
}

/// A text field of `v`, or `-`.
pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().filter(|s| !s.is_empty()).unwrap_or("-")
}
