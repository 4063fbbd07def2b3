//! Approvals in playbook tests: `w.approvals()`, `w.approve(id, by)`, `w.deny(id, by)`.
//! Decisions go through the daemon's own code; expiry follows the virtual clock
//! (`w.advance("16m")` expires a 15-minute request, and its follow-up run runs).

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString};

use super::{fail, runs_array, sim_err, to_dynamic, World};
use crate::store::ApprovalStatus;

impl World {
    fn approvals(&self, status: &str) -> Result<Array, Box<EvalAltResult>> {
        let status = match status {
            "" => None,
            s => Some(ApprovalStatus::parse(s).ok_or_else(|| {
                fail(format!(
                    "approvals: `{s}` is not pending, approved, denied, expired or used"
                ))
            })?),
        };
        let all = self.0.approvals(status).map_err(sim_err)?;
        all.iter().map(to_dynamic).collect()
    }

    /// Decides the approval `id` (or, for `()`, the newest pending one); returns the
    /// follow-up runs that ran.
    fn decide(
        &self,
        id: Dynamic,
        by: &str,
        approve: bool,
        comment: &str,
    ) -> Result<Array, Box<EvalAltResult>> {
        let id = match id.clone().try_cast::<ImmutableString>() {
            Some(id) => id.to_string(),
            None if id.is_unit() => self
                .0
                .approvals(Some(ApprovalStatus::Pending))
                .map_err(sim_err)?
                .first()
                .map(|a| a.id.clone())
                .ok_or_else(|| fail("no approval is pending"))?,
            None => {
                return Err(fail(format!(
                    "an approval id is text, not {}",
                    id.type_name()
                )))
            }
        };
        let (_, runs) = self.0.decide(&id, by, approve, comment).map_err(sim_err)?;
        runs_array(&runs)
    }
}

pub(super) fn register(e: &mut Engine) {
    e.register_fn("approvals", |w: &mut World| w.approvals(""));
    e.register_fn("approvals", |w: &mut World, status: &str| {
        w.approvals(status)
    });
    e.register_fn("approve", |w: &mut World, id: Dynamic, by: &str| {
        w.decide(id, by, true, "")
    });
    e.register_fn(
        "approve",
        |w: &mut World, id: Dynamic, by: &str, comment: &str| w.decide(id, by, true, comment),
    );
    e.register_fn("deny", |w: &mut World, id: Dynamic, by: &str| {
        w.decide(id, by, false, "")
    });
    e.register_fn(
        "deny",
        |w: &mut World, id: Dynamic, by: &str, comment: &str| w.decide(id, by, false, comment),
    );
}
