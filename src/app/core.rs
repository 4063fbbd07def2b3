//! The core: store, catalog, backends and dispatcher, started from configuration.

use std::sync::Arc;

use anyhow::{bail, Context};

use crate::{
    config::Config,
    dispatch::{Dispatcher, ReplicaSettings},
    engine::{self, Catalog},
    metrics::Metrics,
    primitives::{Backends, Services},
    redact::redact_url,
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
            Some(_) => crate::notify::captured_channels(config),
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
        let backends = match &world {
            Some(w) => w.backends(config),
            None => Backends::from_config(config).context("configuring the payments database")?,
        };
        let services = Services::assemble(
            config,
            backends,
            Some(store.clone()),
            Some(notifier),
            tokio::runtime::Handle::current(),
        );
        let dispatcher = Dispatcher::start(
            catalog.clone(),
            store.clone(),
            metrics.clone(),
            Arc::new(services.clone()),
            config.playbooks.clone(),
            ReplicaSettings {
                name: config.server.replica_name(),
                lease_ttl: config.server.lease_ttl,
            },
        )
        .await
        .context("registering this replica's lease in the state store")?;
        if let Some(notifier) = &services.notifier {
            // Delivery claims name the lease, so a dead replica's are given back.
            let d = dispatcher.clone();
            notifier.set_claimant(move || d.lease().id);
        }
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
    use crate::engine::catalog::GateRefusal;
    Box::new(move || {
        let config = config.clone();
        let dir = config.playbooks.dir.clone();
        // Named like the tests' own threads: what the test worlds log is marked simulated.
        let report = std::thread::Builder::new()
            .name(crate::sim::playtest::THREAD_NAME.into())
            .spawn(move || crate::sim::playtest::run(&config, &dir, None, 2))
            .map_err(|e| GateRefusal::CannotRun(e.to_string()))?
            .join()
            .map_err(|_| GateRefusal::Panicked)?
            .map_err(|e| GateRefusal::CannotRun(e.to_string()))?;
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
        Err(GateRefusal::Failed {
            summary: report.summary(),
            first,
        })
    })
}
