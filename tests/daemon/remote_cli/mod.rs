//! The remote CLI (`runbookd runs`, `show`, `logs`, `trigger`, `incidents`, `ack`,
//! `resolve`, `breakers`, `status`, `completions`) as an SRE's shell runs it: the real
//! binary, in its own process, against the real daemon on a free port, the token from
//! `RUNBOOKD_TOKEN`. What a verb changed is checked through the API, not the CLI's word.

mod incidents;
mod runs;
mod status;

use std::{fmt, process::Command};

use crate::helpers::{redis_url, Options, BIN};

/// The operator's and the viewer's tokens of [`tokens`].
pub const OP: &str = "op-secret";
pub const VIEW: &str = "view-secret";

/// A daemon with an operator (`op`) and a viewer (`view`), and a plain-layout breaker
/// `gate` under a Redis key stem of this test's own.
pub fn tokens(prefix: &str, extra: &str) -> Options {
    Options {
        bearer: Some(OP.into()),
        extra_config: format!(
            "[[server.tokens]]\nname = \"op\"\ntoken_env = \"T_OP\"\nrole = \"operator\"\n\n\
             [[server.tokens]]\nname = \"view\"\ntoken_env = \"T_VIEW\"\nrole = \"viewer\"\n\n\
             [redis]\nurl = \"{}\"\n\n\
             [breakers.gate]\npreset = \"plain\"\nkey_base = \"{prefix}:gate\"\nrecovery_timeout = \"1h\"\n\n{extra}",
            redis_url()
        ),
        env: vec![
            ("T_OP".into(), OP.into()),
            ("T_VIEW".into(), VIEW.into()),
        ],
        serve_args: Vec::new(),
    }
}

/// A fresh Redis key stem.
pub fn prefix() -> String {
    format!("t{}", uuid::Uuid::now_v7().simple())
}

/// What one CLI process did.
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    /// Standard output as JSON (`--json`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }
}

/// The CLI command for `args` against `url` with `token` (none: no `RUNBOOKD_TOKEN`),
/// nothing inherited from the test's environment that would point it elsewhere.
pub fn command(url: &str, token: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["--url", url])
        .env_remove("RUNBOOKD_CONFIG")
        .env_remove("RUNBOOKD_URL")
        .env_remove("RUNBOOKD_TOKEN")
        .env_remove("RUST_LOG");
    if let Some(t) = token {
        cmd.env("RUNBOOKD_TOKEN", t);
    }
    cmd
}

/// Runs the CLI to its end (blocking this test's thread is fine: the daemon is its own
/// process).
pub fn cli(url: &str, token: Option<&str>, args: &[&str]) -> Out {
    let out = command(url, token, args).output().expect("run runbookd");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
