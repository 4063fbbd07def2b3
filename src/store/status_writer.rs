//! Group commit for run status changes: every change waiting is written in one transaction
//! ([`super::group_commit`]). The dispatcher sends its changes here (one writer per
//! process) and waits for each. Each change is conditional on the run's owner (see
//! `store/run_updates.rs`); the writer tells each caller whether its change applied.

use tokio::sync::mpsc;

use super::{
    group_commit::{self, Commit, Waiter},
    RunUpdate, Store, StoreError,
};

/// Why a status change was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Only at the very end of shutdown, after every run ended.
    #[error("the status writer has stopped")]
    Stopped,
}

/// A status change and who waits for it to be durable: Ok(true) written; Ok(false) the run
/// is no longer this process's.
pub type UpdateJob = Waiter<RunUpdate, bool, WriteError>;

/// Most changes in one transaction.
const MAX_BATCH: usize = 512;

/// Commits run status changes through [`Store::write_run_updates`].
struct StatusChanges(Store);

impl Commit<RunUpdate> for StatusChanges {
    type Answer = bool;
    type Error = WriteError;

    async fn commit(&self, updates: &[RunUpdate], _retry: bool) -> Result<Vec<bool>, WriteError> {
        Ok(self.0.write_run_updates(updates).await?)
    }
}

/// Writes every change waiting in one transaction; a failed batch is retried change by
/// change so one bad row fails alone. Ends once the replica has retired (every run ended
/// before that) and nothing waits.
pub async fn status_writer(
    store: Store,
    rx: mpsc::Receiver<UpdateJob>,
    retired: tokio_util::sync::CancellationToken,
) {
    group_commit::serve(StatusChanges(store), rx, MAX_BATCH, retired).await;
}

/// Sends `update` to the status writer and waits until it is committed.
pub async fn write(
    writer: &mpsc::Sender<UpdateJob>,
    update: RunUpdate,
) -> Result<bool, WriteError> {
    let (job, committed) = Waiter::new(update);
    writer.send(job).await.map_err(|_| WriteError::Stopped)?;
    committed.await.map_err(|_| WriteError::Stopped)?
}
