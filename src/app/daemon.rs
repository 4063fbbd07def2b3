//! The daemon: API, background loops and graceful shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::Core;
use crate::{
    config::Config,
    engine::{reload, Catalog},
    http::{self, AppState, Auth},
};

/// The running daemon.
pub struct Daemon {
    config: Config,
    core: Core,
    listener: TcpListener,
    auth: Arc<Auth>,
    /// Slack's Approve / Deny buttons, when `[approvals] signing_secret_env` is set.
    slack: Option<Arc<http::slack::SlackApprovals>>,
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
        let slack = http::slack::SlackApprovals::from_config(&config.approvals)?;
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
            slack,
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
            slack,
            mut escalation,
            world,
        } = self;
        // Every loop runs on this tracker, so the daemon stops only when all of them did.
        // `stop` is the root: the triggers' loops stop with it; what must outlive it (run
        // shutdown, notification delivery, the HTTP server draining) stops in order after.
        let tasks = TaskTracker::new();
        for ignored in config.playbooks.ignored_keys() {
            tracing::warn!("{ignored}");
        }
        let simulated = world.as_ref().map(|(_, s)| s.title.clone());
        let world_task = world.map(|(w, scenario)| {
            tracing::warn!(title = %scenario.title, "SIMULATED WORLD: every backend is simulated; nothing real is touched");
            tasks.spawn(crate::sim::stage::live(
                crate::sim::stage::Live {
                    world: w,
                    dispatcher: core.dispatcher.clone(),
                    alerts: config.alerts.clone(),
                    stop: stop.clone(),
                },
                scenario,
            ))
        });
        let _watcher = reload::watch(core.catalog.clone(), config.playbooks.reload_debounce)
            .context("watching the playbook directory")?;
        spawn_signal_handlers(&tasks, stop.clone(), core.catalog.clone());
        let scheduler_stop = stop.child_token();
        let table = escalation.share();
        let loops = Loops::spawn(&tasks, &config, &core, escalation, &scheduler_stop);
        // Delivery stops last, so notifications from runs finishing during shutdown go out.
        let delivery_stop = CancellationToken::new();
        let delivery = core
            .services
            .notifier
            .clone()
            .map(|n| tasks.spawn(n.run(delivery_stop.clone())));
        let http_stop = CancellationToken::new();
        let feed = crate::live::Feed::new(
            core.store.clone(),
            core.services.breakers.clone(),
            config.dashboard.live_interval,
            http_stop.clone(),
        );
        let state = AppState {
            catalog: core.catalog.clone(),
            dispatcher: core.dispatcher.clone(),
            store: core.store.clone(),
            metrics: core.metrics.clone(),
            auth,
            services: core.services.clone(),
            alerts: Arc::new(config.alerts.clone()),
            simulated: simulated.map(Arc::from),
            listen: listener.local_addr()?,
            slack,
            feed,
            dashboard: Arc::new(config.dashboard.clone()),
            escalation: table,
            escalation_interval: config.escalation.interval,
        };
        let server = spawn_server(&tasks, &config, listener, state, http_stop.clone())?;
        stop.cancelled().await;
        scheduler_stop.cancel();
        loops.stopped().await;
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
        tasks.close();
        tasks.wait().await;
        core.store.close().await;
        if let Some(path) = &core.scratch_state {
            remove_scratch_state(path);
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The loops that start work on their own (cron, escalation, key metrics, retention); they
/// stop together, before running runs are waited for, so nothing new starts during shutdown.
struct Loops {
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Loops {
    fn spawn(
        tasks: &TaskTracker,
        config: &Config,
        core: &Core,
        escalation: crate::escalation::Escalation,
        stop: &CancellationToken,
    ) -> Loops {
        let handles = vec![
            tasks.spawn(crate::schedulers::cron::run(
                core.catalog.clone(),
                core.dispatcher.clone(),
                core.store.clone(),
                config.cron.clone(),
                stop.clone(),
            )),
            tasks.spawn(crate::schedulers::escalation::run(
                escalation,
                core.store.clone(),
                core.dispatcher.clone(),
                core.metrics.clone(),
                config.escalation.interval,
                stop.clone(),
            )),
            tasks.spawn(crate::probes::run(
                core.metrics.clone(),
                core.services.clone(),
                config.key_metrics.clone(),
                stop.clone(),
            )),
            tasks.spawn(crate::store::retention::prune_loop(
                core.store.clone(),
                config.state.clone(),
                core.metrics.clone(),
                stop.clone(),
            )),
        ];
        Loops { handles }
    }

    /// Waits until every loop has returned (their stop token is cancelled by the caller).
    async fn stopped(self) {
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

/// The API and dashboard on `listener`, with the server's limits from `[server]`.
fn spawn_server(
    tasks: &TaskTracker,
    config: &Config,
    listener: TcpListener,
    state: AppState,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let app = http::router(
        state,
        http::RequestLimits {
            max_body_bytes: config.server.max_body_bytes,
            body_timeout: config.server.request_body_timeout,
            request_timeout: config.server.request_timeout,
        },
        [crate::api::routes(), crate::web::routes()],
    );
    let addr = listener.local_addr()?;
    tracing::info!(%addr, auth = if config.server.tokens.is_empty() { "none (loopback only)" } else { "bearer tokens" }, dashboard = %format!("http://{addr}/"), "listening");
    let limits = http::serve::ServerLimits {
        header_read_timeout: config.server.header_read_timeout,
        max_connections: config.server.max_connections,
        write_timeout: config.server.write_timeout,
        max_connections_per_client: config.server.max_connections_per_client,
        trusted_proxies: Arc::new(config.server.trusted_proxy_nets()),
    };
    Ok(tasks.spawn(http::serve::serve(
        listener,
        app,
        limits,
        stop,
        Duration::from_secs(5),
    )))
}

/// `serve` without `[state] path` kept its state in a scratch file; it goes with the daemon.
fn remove_scratch_state(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let _ = std::fs::remove_dir_all(format!("{}-leases", path.display()));
}

fn spawn_signal_handlers(tasks: &TaskTracker, stop: CancellationToken, catalog: Arc<Catalog>) {
    use tokio::signal::unix::{signal, SignalKind};
    tasks.spawn(async move {
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
