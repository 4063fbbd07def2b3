//! Hot reload: a debounced file watcher on the playbook directory. Every change (create,
//! modify, delete, rename — including an editor's write-to-temp-then-rename; not mere
//! reads) triggers one rescan of the catalog, which only recompiles what changed. SIGHUP
//! uses the same path.

use std::{sync::Arc, time::Duration};

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

use super::Catalog;

/// Keeps the watcher alive; dropping it stops watching.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// Starts watching `catalog.dir()`; reloads run on the watcher's own thread.
pub fn watch(catalog: Arc<Catalog>, debounce: Duration) -> Result<Watcher, notify::Error> {
    let dir = catalog.dir().to_path_buf();
    let tick = (debounce / 4).max(Duration::from_millis(10));
    let mut debouncer =
        new_debouncer(
            debounce,
            Some(tick),
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    // Reading files is an event too (inotify reports opens and closes as
                    // access): a reload's own reads must not start the next reload.
                    let relevant = events.iter().any(|e| {
                        !matches!(e.kind, notify::EventKind::Access(_))
                            && e.paths.iter().any(|p| {
                                p.extension().and_then(|x| x.to_str()) == Some("rhai") || p.is_dir()
                            })
                    });
                    if relevant {
                        let report = catalog.reload();
                        tracing::debug!(?report, "playbook directory reloaded");
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, "playbook watcher error");
                    }
                }
            },
        )?;
    debouncer.watch(&dir, RecursiveMode::Recursive)?;
    Ok(Watcher {
        _debouncer: debouncer,
    })
}
