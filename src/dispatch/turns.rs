//! Turn-taking: runs of one playbook for one incident never overlap. A second alert for an
//! incident whose playbook is still running waits for its turn here, on this replica; across
//! replicas admission holds it back instead (a run already active is not started again).

use std::{collections::HashMap, sync::Arc};

use tokio::sync::{Mutex, OwnedMutexGuard};

/// Whose turn it is: (incident, playbook).
type Turn = (String, String);

/// One lock per turn, dropped when no run holds or waits for it.
#[derive(Default)]
pub(super) struct Turns(std::sync::Mutex<HashMap<Turn, Arc<Mutex<()>>>>);

impl Turns {
    /// Waits for the turn of `playbook` on `incident`; runs for no incident go at once.
    pub(super) async fn take(
        &self,
        incident: Option<&str>,
        playbook: &str,
    ) -> Option<OwnedMutexGuard<()>> {
        let incident = incident?;
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks
                .entry((incident.to_string(), playbook.to_string()))
                .or_default()
                .clone()
        };
        Some(lock.lock_owned().await)
    }
}
