//! Humans deciding approvals in a simulation: the daemon's own decision
//! (`crate::approvals::decide`), then its follow-up run, stepped by the simulation.
//! Requests nobody decides expire on the escalation passes as time moves, as in the daemon.

use super::{Sim, SimError, SimRun};
use crate::store::{Approval, ApprovalStatus};

impl Sim {
    /// Approvals, newest first, of one status or all.
    pub fn approvals(&self, status: Option<ApprovalStatus>) -> Result<Vec<Approval>, SimError> {
        Ok(self
            .runtime
            .block_on(self.store.list_approvals(status, 1000))?)
    }

    /// `by` approves (or denies) approval `id`, as `POST /api/v1/approvals/ID/approve`
    /// would; the follow-up run a settling decision starts runs before this returns.
    pub fn decide(
        &self,
        id: &str,
        by: &str,
        approve: bool,
        comment: &str,
    ) -> Result<(Approval, Vec<SimRun>), SimError> {
        self.runtime.block_on(async {
            let decided = crate::approvals::decide(&self.store, id, by, approve, comment)
                .await
                .map_err(|e| SimError::Setup(e.to_string()))?;
            self.note(
                "approval",
                format!(
                    "{by} {} {} {} ({})",
                    if approve { "approves" } else { "denies" },
                    decided.approval.action,
                    decided.approval.target,
                    decided.approval.status
                ),
            );
            let runs = self.settle().await?;
            Ok((decided.approval, runs))
        })
    }
}
