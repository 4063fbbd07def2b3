//! Group commit, written once: whoever needs something durable sends it with a way to be
//! answered; one loop takes every job waiting at that moment, commits them in one
//! transaction and answers each waiter. One fsync (SQLite) or one round trip (PostgreSQL)
//! then serves every job that arrived while the last commit was on its way, and a waiter
//! hears back only once its job's commit returned: nothing is acknowledged before it is
//! durable.
//!
//! A failed batch of several is committed again job by job, so one bad job fails alone and
//! the others still land; a job whose own commit fails is answered with that error (alerts
//! become a 503 their sender resends). Used by the alert ingester
//! (`dispatch/alerts.rs`, which adds its own scheduling of batches on PostgreSQL) and the
//! run status writer (`status_writer.rs`).

use std::future::Future;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A job and who waits for its commit.
pub struct Waiter<J, A, E> {
    pub job: J,
    pub reply: oneshot::Sender<Result<A, E>>,
}

impl<J, A, E> Waiter<J, A, E> {
    /// A job and the receiver its sender waits on.
    pub fn new(job: J) -> (Self, oneshot::Receiver<Result<A, E>>) {
        let (reply, answer) = oneshot::channel();
        (Waiter { job, reply }, answer)
    }
}

/// How a batch of jobs becomes durable.
pub trait Commit<J>: Sync {
    /// What each waiter is told when its job is committed.
    type Answer: Default + Send;
    /// What each waiter is told when its job could not be.
    type Error: std::fmt::Display + Send;

    /// Commits `jobs` all or nothing, answering each in order. `retry`: a job committed
    /// alone after the batch it was in failed.
    fn commit(
        &self,
        jobs: &[J],
        retry: bool,
    ) -> impl Future<Output = Result<Vec<Self::Answer>, Self::Error>> + Send;
}

/// Waits for a job, then takes every one waiting behind it, up to `max` (bounded batches:
/// a transaction's size, and how long its first waiter waits, stay bounded). `None` once
/// the channel is closed, or `stop` has fired and nothing waits.
pub async fn take_waiting<T>(
    rx: &mut mpsc::Receiver<T>,
    max: usize,
    stop: &CancellationToken,
) -> Option<Vec<T>> {
    let first = tokio::select! {
        biased;
        job = rx.recv() => job?,
        _ = stop.cancelled() => rx.try_recv().ok()?,
    };
    let mut jobs = vec![first];
    while jobs.len() < max {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    Some(jobs)
}

/// Commits `waiting` in one transaction and answers every waiter; when that fails and
/// there were several, commits and answers them one by one.
pub async fn commit_and_answer<J, C>(committer: &C, waiting: Vec<Waiter<J, C::Answer, C::Error>>)
where
    J: Send + Sync,
    C: Commit<J>,
{
    // Split so that the jobs (a finished run carries its logs) are not copied.
    let (jobs, replies): (Vec<J>, Vec<_>) = waiting.into_iter().map(|w| (w.job, w.reply)).unzip();
    match committer.commit(&jobs, false).await {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(e) if jobs.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, batch = jobs.len(), "group commit failed; committing its jobs one by one");
            for (job, reply) in jobs.iter().zip(replies) {
                let answer = committer
                    .commit(std::slice::from_ref(job), true)
                    .await
                    .map(|answers| answers.into_iter().next().unwrap_or_default());
                let _ = reply.send(answer);
            }
        }
    }
}

/// The whole loop for a committer that needs no scheduling of its own: take what waits,
/// commit it, answer, until the channel closes or `stop` fires with nothing waiting.
pub async fn serve<J, C>(
    committer: C,
    mut rx: mpsc::Receiver<Waiter<J, C::Answer, C::Error>>,
    max: usize,
    stop: CancellationToken,
) where
    J: Send + Sync,
    C: Commit<J>,
{
    while let Some(waiting) = take_waiting(&mut rx, max, &stop).await {
        commit_and_answer(&committer, waiting).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Commits numbers; a batch holding a negative one fails, as does a negative alone.
    #[derive(Default)]
    struct Numbers {
        batches: Mutex<Vec<Vec<i64>>>,
    }

    impl Commit<i64> for Numbers {
        type Answer = i64;
        type Error = String;

        async fn commit(&self, jobs: &[i64], _retry: bool) -> Result<Vec<i64>, String> {
            self.batches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(jobs.to_vec());
            if jobs.iter().any(|j| *j < 0) {
                return Err(format!("{jobs:?} refused"));
            }
            Ok(jobs.iter().map(|j| j * 10).collect())
        }
    }

    #[tokio::test]
    async fn everything_waiting_is_one_commit_and_every_waiter_is_answered() {
        let (tx, rx) = mpsc::channel(16);
        let mut answers = Vec::new();
        for j in [1, 2, 3] {
            let (w, answer) = Waiter::new(j);
            tx.send(w).await.expect("send");
            answers.push(answer);
        }
        let numbers = std::sync::Arc::new(Numbers::default());
        let stop = CancellationToken::new();
        stop.cancel();
        // Stopped, but what waits is still committed; then the loop ends.
        serve(ArcCommit(numbers.clone()), rx, 512, stop).await;
        for (answer, want) in answers.into_iter().zip([10, 20, 30]) {
            assert_eq!(answer.await.expect("answered"), Ok(want));
        }
        assert_eq!(*numbers.batches.lock().expect("lock"), vec![vec![1, 2, 3]]);
    }

    #[tokio::test]
    async fn a_failed_batch_is_committed_again_one_by_one_and_only_the_bad_job_fails() {
        let numbers = Numbers::default();
        let mut answers = Vec::new();
        let mut waiting = Vec::new();
        for j in [1, -2, 3] {
            let (w, answer) = Waiter::new(j);
            waiting.push(w);
            answers.push(answer);
        }
        commit_and_answer(&numbers, waiting).await;
        let got: Vec<_> = futures_util::future::join_all(answers).await;
        assert_eq!(got[0], Ok(Ok(10)));
        assert_eq!(got[1], Ok(Err("[-2] refused".to_string())));
        assert_eq!(got[2], Ok(Ok(30)));
        assert_eq!(
            *numbers.batches.lock().expect("lock"),
            vec![vec![1, -2, 3], vec![1], vec![-2], vec![3]]
        );
    }

    #[tokio::test]
    async fn batches_are_bounded() {
        let (tx, mut rx) = mpsc::channel(16);
        for j in 0..5 {
            tx.send(j).await.expect("send");
        }
        let stop = CancellationToken::new();
        assert_eq!(take_waiting(&mut rx, 2, &stop).await, Some(vec![0, 1]));
        assert_eq!(take_waiting(&mut rx, 2, &stop).await, Some(vec![2, 3]));
        assert_eq!(take_waiting(&mut rx, 2, &stop).await, Some(vec![4]));
        drop(tx);
        assert_eq!(take_waiting(&mut rx, 2, &stop).await, None);
    }

    /// `serve` takes its committer by value; the test keeps a handle to read its batches.
    struct ArcCommit(std::sync::Arc<Numbers>);

    impl Commit<i64> for ArcCommit {
        type Answer = i64;
        type Error = String;

        async fn commit(&self, jobs: &[i64], retry: bool) -> Result<Vec<i64>, String> {
            self.0.commit(jobs, retry).await
        }
    }
}
