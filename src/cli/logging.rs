//! The daemon's log: `tracing` to standard error, text or JSON, with the lines of simulated
//! worlds marked as such.

use std::{io::IsTerminal, sync::Arc};

use runbookd::config::{Config, LogFormat};

/// Installs the subscriber: `RUST_LOG`, else `[log] level`; `simulated` marks every line
/// (`serve --world`).
pub fn init_tracing(config: &Config, simulated: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = config.log.format == LogFormat::Json;
    let writer = MarkedStderr {
        mark: simulated.map(Arc::from),
        json,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    if json {
        builder.json().init()
    } else {
        builder.init()
    }
}

/// Standard error, with every line of a `serve --world` daemon marked as simulated:
/// `[SIMULATED] …` in text, a `"simulated"` field in JSON.
#[derive(Clone)]
struct MarkedStderr {
    mark: Option<Arc<str>>,
    json: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MarkedStderr {
    type Writer = MarkedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl std::io::Write for MarkedStderr {
    /// The formatter hands over one whole event per call.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        // Lines of the playbook tests' worlds (`[playbooks] require_tests` runs them in the
        // daemon) are simulated too, and never read like real resets.
        let playtest = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with(runbookd::sim::playtest::THREAD_NAME));
        let mark = match (&self.mark, playtest) {
            (Some(mark), _) => Some(mark.clone()),
            (None, true) => Some(Arc::from("playbook tests")),
            (None, false) => None,
        };
        match &mark {
            None => err.write_all(buf)?,
            Some(mark) if self.json && buf.first() == Some(&b'{') => {
                let field = serde_json::to_string(&**mark).unwrap_or_default();
                err.write_all(format!("{{\"simulated\":{field},").as_bytes())?;
                err.write_all(&buf[1..])?;
            }
            Some(_) => {
                err.write_all(b"[SIMULATED] ")?;
                err.write_all(buf)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
