//! What changed, as it happens: the feed behind `GET /api/v1/events` and the dashboard's
//! live pages.
//!
//! The feed watches the state store and the breakers, not the code paths that write them:
//! a run finished by another replica, an approval decided from Slack and a breaker the
//! payments app tripped itself all show, because all of them end up there. One poller per
//! process, started by the first subscriber and stopped after the last, compares a
//! snapshot (the newest runs, incidents and approvals, every breaker) every `[dashboard]
//! live_interval` and broadcasts each difference as a [`Change`].

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    primitives::breaker::Breakers,
    store::{RunFilter, Store},
};

/// One change, as API users receive it (`event: <type>`, `data: <this as JSON>`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    Run {
        id: String,
        playbook: String,
        status: String,
        dry_run: bool,
    },
    Incident {
        id: String,
        title: String,
        status: String,
        level: Option<String>,
    },
    Approval {
        id: String,
        playbook: String,
        action: String,
        target: String,
        status: String,
    },
    Breaker {
        name: String,
        /// `closed`, `open`, `half_open`, or `unknown` while it cannot be read.
        state: String,
        failures: i64,
    },
}

impl Change {
    /// The SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Run { .. } => "run",
            Change::Incident { .. } => "incident",
            Change::Approval { .. } => "approval",
            Change::Breaker { .. } => "breaker",
        }
    }

    fn key(&self) -> String {
        match self {
            Change::Run { id, .. } => format!("run:{id}"),
            Change::Incident { id, .. } => format!("incident:{id}"),
            Change::Approval { id, .. } => format!("approval:{id}"),
            Change::Breaker { name, .. } => format!("breaker:{name}"),
        }
    }
}

/// Rows of each kind compared per pass: the newest, which is what pages show.
const WINDOW: u32 = 100;
/// Changes a slow subscriber may fall behind by before it is told to resync.
const BACKLOG: usize = 1024;

/// The process's feed.
pub struct Feed {
    store: Store,
    breakers: Arc<Breakers>,
    interval: Duration,
    tx: broadcast::Sender<Change>,
    /// True once the running poller has its first snapshot.
    ready: watch::Sender<bool>,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Cancelled when the HTTP server stops: every stream ends, so connections drain.
    stop: CancellationToken,
    /// Open streams, in all and by caller (`[dashboard] max_streams`).
    streams: Arc<Mutex<StreamCounts>>,
}

#[derive(Default)]
struct StreamCounts {
    total: usize,
    by_caller: std::collections::HashMap<String, usize>,
}

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefused {
    /// `[dashboard] max_streams` streams are open.
    Full,
    /// This caller has `[dashboard] max_streams_per_caller` open.
    CallerFull,
}

/// One open stream's place in the counts; given back when dropped (the stream ended, or
/// its client went away).
pub struct StreamSlot {
    counts: Arc<Mutex<StreamCounts>>,
    caller: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_caller.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_caller.remove(&self.caller);
            }
        }
    }
}

/// A subscription: changes, and whether the baseline they are relative to exists yet.
pub struct Subscription {
    pub changes: broadcast::Receiver<Change>,
    pub ready: watch::Receiver<bool>,
    pub stop: CancellationToken,
}

impl Feed {
    pub fn new(
        store: Store,
        breakers: Arc<Breakers>,
        interval: Duration,
        stop: CancellationToken,
    ) -> Arc<Feed> {
        Arc::new(Feed {
            store,
            breakers,
            interval,
            tx: broadcast::channel(BACKLOG).0,
            ready: watch::channel(false).0,
            poller: Mutex::new(None),
            stop,
            streams: Default::default(),
        })
    }

    /// A place for one more stream of `caller`, unless `max` streams are open in all or
    /// `per_caller` of theirs: streams are long-lived connections, and without a cap a few
    /// browsers (or one script) hold every connection the server has.
    pub fn open_stream(
        &self,
        caller: &str,
        max: usize,
        per_caller: usize,
    ) -> Result<StreamSlot, StreamRefused> {
        let mut c = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= max {
            return Err(StreamRefused::Full);
        }
        let mine = c.by_caller.get(caller).copied().unwrap_or(0);
        if mine >= per_caller {
            return Err(StreamRefused::CallerFull);
        }
        c.total += 1;
        c.by_caller.insert(caller.to_string(), mine + 1);
        Ok(StreamSlot {
            counts: self.streams.clone(),
            caller: caller.to_string(),
        })
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Subscribes, starting the poller if nobody was watching.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let changes = self.tx.subscribe();
        let mut poller = self.poller.lock().unwrap_or_else(|p| p.into_inner());
        if poller.as_ref().is_none_or(|h| h.is_finished()) {
            self.ready.send_replace(false);
            let feed = self.clone();
            *poller = Some(tokio::spawn(async move { feed.poll().await }));
        }
        Subscription {
            changes,
            ready: self.ready.subscribe(),
            stop: self.stop.clone(),
        }
    }

    async fn poll(self: Arc<Self>) {
        let mut last: Option<BTreeMap<String, Change>> = None;
        loop {
            match self.snapshot().await {
                Ok(now) => {
                    if let Some(before) = &last {
                        for (key, change) in &now {
                            if before.get(key) != Some(change) {
                                let _ = self.tx.send(change.clone());
                            }
                        }
                    } else {
                        self.ready.send_replace(true);
                    }
                    last = Some(now);
                }
                Err(e) => tracing::warn!(error = %e, "live feed: reading the state store failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.stop.cancelled() => return,
            }
            if self.tx.receiver_count() == 0 {
                // Checked under the lock `subscribe` takes, so a subscriber arriving now
                // either sees this poller running or starts a new one.
                let mut poller = self.poller.lock().unwrap_or_else(|p| p.into_inner());
                if self.tx.receiver_count() == 0 {
                    *poller = None;
                    return;
                }
            }
        }
    }

    async fn snapshot(&self) -> Result<BTreeMap<String, Change>, crate::store::StoreError> {
        let mut out = BTreeMap::new();
        let mut add = |c: Change| {
            out.insert(c.key(), c);
        };
        let runs = self
            .store
            .list_runs(&RunFilter {
                limit: WINDOW,
                ..RunFilter::default()
            })
            .await?;
        for r in runs {
            add(Change::Run {
                id: r.id,
                playbook: r.playbook,
                status: r.status.as_str().into(),
                dry_run: r.dry_run,
            });
        }
        for i in self.store.list_incidents(None, WINDOW).await? {
            add(Change::Incident {
                id: i.id,
                title: i.title,
                status: i.status.as_str().into(),
                level: i.level,
            });
        }
        for a in self.store.list_approvals(None, WINDOW).await? {
            add(Change::Approval {
                id: a.id,
                playbook: a.playbook,
                action: a.action,
                target: a.target,
                status: a.status.as_str().into(),
            });
        }
        for name in self.breakers.names() {
            let (state, failures) = match self.breakers.read(&name).await {
                Ok(s) => (s.state.as_str().to_string(), s.failures),
                Err(_) => ("unknown".to_string(), 0),
            };
            add(Change::Breaker {
                name,
                state,
                failures,
            });
        }
        Ok(out)
    }
}
