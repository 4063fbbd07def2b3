//! Wiring: builds the daemon from configuration and serves until told to stop.
//! [`Daemon::build`] binds the listener first, so callers (and tests) know the real port.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    api::{self, AppState, Auth},
    config::Config,
    dispatch::{Dispatcher, ReplicaSettings},
    engine::{self, reload, Catalog},
    metrics::Metrics,
    primitives::Services,
    store::Store,
};

/// Everything a run needs outside the API: store, catalog, dispatcher.
pub struct Core {
    pub store: Store,
    pub services: Services,
    pub catalog: Arc<Catalog>,
    pub dispatcher: Dispatcher,
    pub metrics: Arc<Metrics>,
    /// `serve --world`: the simulation's own state file, removed when the daemon stops.
    pub scratch_state: Option<std::path::PathBuf>,
}

impl Core {
    /// Connects the store, loads the playbooks and starts the dispatcher.
    pub async fn start(config: &Config) -> anyhow::Result<Core> {
        Self::start_in(config, None).await
    }

    /// As [`Core::start`]; with a simulated `world` every backend is the world's, the state
    /// store lives in memory (simulated incidents never mix with real ones) and every
    /// notification channel only records (a simulation pages nobody).
    pub async fn start_in(
        config: &Config,
        world: Option<Arc<crate::sim::World>>,
    ) -> anyhow::Result<Core> {
        let dir = &config.playbooks.dir;
        if !dir.is_dir() {
            bail!(
                "playbook directory `{}` not found (set [playbooks] dir or RUNBOOKD_PLAYBOOKS__DIR)",
                dir.display()
            );
        }
        // A simulated world keeps its incidents apart from real ones, in a scratch SQLite
        // file (WAL, like the default store; an in-memory shared-cache database would make
        // API reads fail with "table locked" while runs write).
        let scratch_state = world.as_ref().map(|_| {
            std::env::temp_dir().join(format!(
                "runbookd-world-{}.db",
                uuid::Uuid::now_v7().simple()
            ))
        });
        let database_url = match &scratch_state {
            Some(path) => {
                tracing::info!(state = %path.display(), "simulated world: state in a scratch file, removed at stop");
                format!("sqlite://{}", path.display())
            }
            None => config.state.database_url.clone(),
        };
        let store = Store::connect_with(
            &database_url,
            config.state.max_connections,
            config.state.sqlite_synchronous,
        )
        .await
        .with_context(|| format!("opening state store {}", redact_url(&database_url)))?;
        let metrics = Arc::new(Metrics::new());
        let engine = Arc::new(engine::build(&config.playbooks, dir));
        let catalog = Arc::new(Catalog::new(dir.clone(), engine, Some(metrics.clone())));
        if config.playbooks.require_tests {
            catalog.set_gate(tests_gate(config.clone()));
        }
        let report = catalog.reload();
        tracing::info!(
            loaded = report.loaded.len(),
            failed = report.failed.len(),
            dir = %dir.display(),
            "playbooks loaded"
        );
        let channels = match &world {
            Some(_) => crate::sim::driver::captured_channels(config),
            None => config.channels.clone(),
        };
        let notifier = Arc::new(
            crate::notify::Notifier::from_config(
                &channels,
                &config.notify,
                store.clone(),
                Some(metrics.clone()),
            )
            .context("configuring notification channels")?,
        );
        let services = match &world {
            Some(w) => w.services(
                config,
                store.clone(),
                notifier,
                tokio::runtime::Handle::current(),
            ),
            None => {
                let mut services = Services::from_config(config, Some(store.clone()))
                    .context("configuring the payments database")?;
                services.notifier = Some(notifier);
                services
            }
        };
        let dispatcher = Dispatcher::start(
            catalog.clone(),
            store.clone(),
            metrics.clone(),
            services.clone(),
            config.playbooks.clone(),
            ReplicaSettings {
                name: config.server.replica_name(),
                lease_ttl: config.server.lease_ttl,
            },
        )
        .await
        .context("registering this replica's lease in the state store")?;
        Ok(Core {
            store,
            services,
            catalog,
            dispatcher,
            metrics,
            scratch_state,
        })
    }
}

/// `[playbooks] require_tests`: the playbook tests, run on the files on disk. They run on a
/// thread of their own (they build their own runtime, which may not live inside ours).
fn tests_gate(config: Config) -> crate::engine::catalog::Gate {
    Box::new(move || {
        let config = config.clone();
        let dir = config.playbooks.dir.clone();
        let report = std::thread::spawn(move || crate::sim::playtest::run(&config, &dir, None, 2))
            .join()
            .map_err(|_| "the playbook tests panicked".to_string())?
            .map_err(|e| e.to_string())?;
        if report.failed() == 0 {
            return Ok(());
        }
        let first = report
            .broken_files
            .first()
            .cloned()
            .or_else(|| {
                report
                    .results
                    .iter()
                    .find(|r| !r.passed)
                    .map(|r| format!("{}: {}", r.name, r.failure.clone().unwrap_or_default()))
            })
            .unwrap_or_default();
        Err(format!("{}; first: {first}", report.summary()))
    })
}

/// The running daemon.
pub struct Daemon {
    config: Config,
    core: Core,
    listener: TcpListener,
    auth: Arc<Auth>,
    escalation: crate::escalation::Escalation,
    /// `serve --world`: the simulated world and the scenario it plays.
    world: Option<(Arc<crate::sim::World>, crate::sim::scenario::Scenario)>,
}

impl Daemon {
    /// Validates the configuration, starts the core and binds the API address.
    pub async fn build(config: Config) -> anyhow::Result<Daemon> {
        Self::build_in(config, None).await
    }

    /// The daemon against a simulated world playing `scenario` on the real clock.
    pub async fn build_world(
        config: Config,
        scenario: crate::sim::scenario::Scenario,
    ) -> anyhow::Result<Daemon> {
        let world = crate::sim::World::new(crate::clock::Clock::Real, &config);
        scenario
            .install_settings(&world)
            .map_err(anyhow::Error::msg)?;
        Self::build_in(config, Some((world, scenario))).await
    }

    async fn build_in(
        config: Config,
        world: Option<(Arc<crate::sim::World>, crate::sim::scenario::Scenario)>,
    ) -> anyhow::Result<Daemon> {
        let auth = Arc::new(Auth::from_config(&config.server.tokens)?);
        if auth.is_open() && !config.server.listen.ip().is_loopback() {
            bail!(
                "refusing to listen on {} without API tokens: configure [[server.tokens]] or listen on 127.0.0.1",
                config.server.listen
            );
        }
        let core = Core::start_in(&config, world.as_ref().map(|(w, _)| w.clone())).await?;
        let channels = core
            .services
            .notifier
            .as_ref()
            .map(|n| n.channel_names())
            .unwrap_or_default();
        let mut escalation =
            crate::escalation::Escalation::load(config.escalation.file.clone(), channels)
                .map_err(|e| anyhow::anyhow!("escalation table: {e}"))?;
        escalation.publish_levels(core.services.levels.clone());
        // Work left by replicas that are gone (this one's previous process included) is
        // queued again before the API listens; from then on runs nobody owns are claimed as
        // slots free.
        let lease = core.dispatcher.lease();
        tracing::info!(replica = %lease.name, lease = %lease.id, ttl = %humantime::format_duration(config.server.lease_ttl), "replica lease taken");
        core.dispatcher.serve().await;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        Ok(Daemon {
            config,
            core,
            listener,
            auth,
            escalation,
            world,
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is cancelled (or SIGTERM/SIGINT), then shuts down gracefully.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let Daemon {
            config,
            core,
            listener,
            auth,
            escalation,
            world,
        } = self;
        let simulated = world.as_ref().map(|(_, s)| s.title.clone());
        let world_task = world.map(|(w, scenario)| {
            tracing::warn!(title = %scenario.title, "SIMULATED WORLD: every backend is simulated; nothing real is touched");
            tokio::spawn(crate::sim::live::run(
                w,
                scenario,
                core.dispatcher.clone(),
                config.alerts.clone(),
                stop.clone(),
            ))
        });
        let _watcher = reload::watch(core.catalog.clone(), config.playbooks.reload_debounce)
            .context("watching the playbook directory")?;
        spawn_signal_handlers(stop.clone(), core.catalog.clone());
        let scheduler_stop = CancellationToken::new();
        let escalator = tokio::spawn(crate::escalation::run(
            escalation,
            core.store.clone(),
            core.dispatcher.clone(),
            config.escalation.interval,
            scheduler_stop.clone(),
        ));
        // Delivery stops last, so notifications from runs finishing during shutdown go out.
        let delivery_stop = CancellationToken::new();
        let delivery = core
            .services
            .notifier
            .clone()
            .map(|n| tokio::spawn(n.run(delivery_stop.clone())));
        let scheduler = tokio::spawn(crate::triggers::cron::run(
            core.catalog.clone(),
            core.dispatcher.clone(),
            core.store.clone(),
            config.cron.clone(),
            scheduler_stop.clone(),
        ));
        let exporter = tokio::spawn(crate::metrics::key_metrics::run(
            core.metrics.clone(),
            core.services.clone(),
            config.key_metrics.clone(),
            scheduler_stop.clone(),
        ));
        let state = AppState {
            catalog: core.catalog.clone(),
            dispatcher: core.dispatcher.clone(),
            store: core.store.clone(),
            metrics: core.metrics.clone(),
            auth,
            services: core.services.clone(),
            alerts: config.alerts.clone(),
            simulated,
            listen: listener.local_addr()?,
        };
        let app = api::router(
            state,
            api::RequestLimits {
                max_body_bytes: config.server.max_body_bytes,
                body_timeout: config.server.request_body_timeout,
                request_timeout: config.server.request_timeout,
            },
        );
        let addr = listener.local_addr()?;
        tracing::info!(%addr, auth = if config.server.tokens.is_empty() { "none (loopback only)" } else { "bearer tokens" }, "listening");
        let http_stop = CancellationToken::new();
        let server = {
            let http_stop = http_stop.clone();
            let limits = api::serve::ServerLimits {
                header_read_timeout: config.server.header_read_timeout,
                max_connections: config.server.max_connections,
            };
            tokio::spawn(api::serve::serve(
                listener,
                app,
                limits,
                http_stop,
                Duration::from_secs(5),
            ))
        };
        stop.cancelled().await;
        scheduler_stop.cancel();
        let _ = scheduler.await;
        let _ = escalator.await;
        let _ = exporter.await;
        if let Some(t) = world_task {
            let _ = t.await;
        }
        tracing::info!(
            grace = %humantime::format_duration(config.server.shutdown_grace),
            "shutting down: no new runs; waiting for running ones"
        );
        // Runs finish (or are cancelled) first, so `?wait=true` callers get their answer,
        // then the HTTP server drains its connections.
        core.dispatcher.shutdown(config.server.shutdown_grace).await;
        delivery_stop.cancel();
        if let Some(d) = delivery {
            let _ = d.await;
        }
        http_stop.cancel();
        // The server drains open connections for at most 5 s itself.
        let _ = server.await;
        core.store.close().await;
        if let Some(path) = &core.scratch_state {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            let _ = std::fs::remove_dir_all(format!("{}-leases", path.display()));
        }
        tracing::info!("stopped");
        Ok(())
    }
}

fn spawn_signal_handlers(stop: CancellationToken, catalog: Arc<Catalog>) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); stop.cancel(); return; }
                _ = int.recv() => { tracing::info!("SIGINT received"); stop.cancel(); return; }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received: reloading playbooks");
                    let catalog = catalog.clone();
                    let _ = tokio::task::spawn_blocking(move || catalog.reload()).await;
                }
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// Query parameters whose values are secrets (libpq's `password`, Redis's `token`, …).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "token",
    "secret",
    "sslpassword",
    "api_key",
    "apikey",
    "auth",
];

/// A URL for logs and error messages: the userinfo password and secret query parameters
/// replaced by `***`. Parsed, not pattern-matched; what does not parse as a URL is not
/// shown at all.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "<a URL that does not parse>".into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s));
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/pay"),
            "postgres://app:***@db:5432/pay"
        );
        assert_eq!(redact_url("sqlite://runbookd.db"), "sqlite://runbookd.db");
        assert_eq!(redact_url("postgres://app@db/pay"), "postgres://app@db/pay");
        assert_eq!(
            redact_url("postgres://db/pay?user=app&password=s3cret&sslmode=require"),
            "postgres://db/pay?user=app&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("redis://:hunter2@cache:6379/0?Token=abc"),
            "redis://:***@cache:6379/0?Token=***"
        );
        assert!(!redact_url("not a url s3cret").contains("s3cret"));
    }
}
