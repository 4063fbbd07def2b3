//! Group commit for run status changes: every change waiting is written in one transaction.
//! The dispatcher sends its changes here (one writer per process) and waits for each.
//! Each change is conditional on the run's owner (see `store/runs.rs`); the writer tells
//! each caller whether its change applied.

use tokio::sync::{mpsc, oneshot};

use super::{RunUpdate, Store, StoreError};

/// Why a status change was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Only at the very end of shutdown, after every run ended.
    #[error("the status writer has stopped")]
    Stopped,
}

/// A status change and who waits for it to be durable.
pub struct UpdateJob {
    pub update: RunUpdate,
    /// Ok(true): written; Ok(false): the run is no longer this process's.
    pub done: oneshot::Sender<Result<bool, WriteError>>,
}

/// Writes every change waiting in one transaction; a failed batch is retried change by
/// change so one bad row fails alone.
pub async fn status_writer(
    store: Store,
    mut rx: mpsc::Receiver<UpdateJob>,
    retired: tokio_util::sync::CancellationToken,
) {
    // Ends once the replica has retired (every run ended before that) and nothing waits.
    loop {
        let first = tokio::select! {
            biased;
            job = rx.recv() => match job { Some(j) => j, None => return },
            _ = retired.cancelled() => match rx.try_recv() { Ok(j) => j, Err(_) => return },
        };
        let mut jobs = vec![first];
        while jobs.len() < 512 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        // Split so the updates (a finished run carries its logs) are not copied.
        let (updates, acks): (Vec<RunUpdate>, Vec<_>) =
            jobs.into_iter().map(|j| (j.update, j.done)).unzip();
        match store.write_run_updates(&updates).await {
            Ok(applied) => {
                for (ack, applied) in acks.into_iter().zip(applied) {
                    let _ = ack.send(Ok(applied));
                }
            }
            Err(e) if acks.len() == 1 => {
                if let Some(ack) = acks.into_iter().next() {
                    let _ = ack.send(Err(WriteError::Store(e)));
                }
            }
            Err(_) => {
                for (update, ack) in updates.iter().zip(acks) {
                    let r = store
                        .write_run_updates(std::slice::from_ref(update))
                        .await
                        .map(|a| a.first().copied().unwrap_or(false))
                        .map_err(WriteError::Store);
                    let _ = ack.send(r);
                }
            }
        }
    }
}
