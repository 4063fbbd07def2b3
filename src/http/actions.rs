//! What both faces do: an operator's decision on an approval, acknowledging and resolving
//! an incident, starting a run by hand, and the playbooks as they are served. The API's
//! handlers and the dashboard's forms call these, so a button and a `curl` change the world
//! the same way, under the same role checks.

use std::sync::Arc;

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    caller::{Access, Caller},
    error::ApiError,
};
use crate::{
    dispatch::{Dispatcher, RunRequest, Submission},
    engine::{Catalog, LoadError},
    notify::Notifier,
    store::{ms_to_rfc3339, DecideError, Decided, Incident, Store},
    triggers::TriggerSpec,
};

/// What the actions reach: the store, the dispatcher that starts runs, the catalog of
/// playbooks, and the outbox that tells paged channels.
#[derive(Clone)]
pub struct Actions {
    pub store: Store,
    pub dispatcher: Dispatcher,
    pub catalog: Arc<Catalog>,
    pub notifier: Option<Arc<Notifier>>,
}

/// A playbook as it is served, or the edit of it that failed to load.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PlaybookView {
    pub name: String,
    /// Serving version; null when the file never compiled.
    pub version: Option<String>,
    pub path: Option<String>,
    pub triggers: Vec<TriggerSpec>,
    pub loaded_at: Option<String>,
    /// The latest edit's compile error; the previous version (if any) keeps serving.
    pub error: Option<LoadError>,
}

impl Actions {
    /// One human's decision on an approval: `by` names the human on a daemon without
    /// tokens. A decision that settles it starts the follow-up run.
    pub async fn decide(
        &self,
        caller: &Caller,
        id: &str,
        approve: bool,
        comment: &str,
        by: Option<String>,
    ) -> Result<Decided, ApiError> {
        caller.require(Access::Operate)?;
        if comment.len() > 4096 {
            return Err(ApiError::bad_request("comment is longer than 4096 bytes"));
        }
        // With tokens, the approver is the token's name and nobody can speak for another.
        // Without tokens every caller is `local`: the body must say who decides, or nobody
        // could tell the requester from the approver.
        let by = match (caller.identified(), by) {
            (true, None) => caller.name.clone(),
            (true, Some(by)) if by == caller.name => by,
            // A well-formed request naming someone else: not the caller's to say (403).
            (true, Some(_)) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "`by` is only for daemons without tokens; the approver is the token's name",
                ))
            }
            (false, Some(by)) if !by.trim().is_empty() && by.len() <= 200 => {
                by.trim().to_string()
            }
            (false, _) => {
                return Err(ApiError::bad_request(
                    "this daemon has no tokens, so it cannot tell who you are: say `{\"by\": \"your name\"}`",
                ))
            }
        };
        let decided = crate::approvals::decide(&self.store, id, &by, approve, comment)
            .await
            .map_err(|e| match e {
                DecideError::NotFound(_) => ApiError::not_found(e.to_string()),
                DecideError::SelfApproval { .. } => {
                    ApiError::new(StatusCode::FORBIDDEN, e.to_string())
                }
                DecideError::NotPending { .. }
                | DecideError::Expired(_)
                | DecideError::AlreadyApproved { .. }
                | DecideError::Concurrent(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
                DecideError::Store(s) => s.into(),
            })?;
        tracing::warn!(approval = %id, by = %by, decision = if approve { "approve" } else { "deny" }, status = %decided.approval.status, "approval decided");
        if decided.follow_up.is_some() {
            self.dispatcher.wake_claimer();
        }
        Ok(decided)
    }

    /// Acknowledges an incident for `caller` and tells every channel that was paged.
    pub async fn acknowledge(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Option<Incident>, ApiError> {
        caller.require(Access::Operate)?;
        let incident = self.incident(id).await?;
        if !self.store.ack_incident(id, &caller.name).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("incident is {}, not open", incident.status.as_str()),
            ));
        }
        // Tell every channel that was paged (PagerDuty gets an `acknowledge` event).
        if let Some(notifier) = &self.notifier {
            let message = crate::notify::Message {
                kind: "acknowledge".into(),
                title: incident.title.clone(),
                text: format!("acknowledged by {}", caller.name),
                incident: Some(id.to_string()),
                level: incident.level.clone(),
                approval: None,
            };
            for channel in self.store.paged_channels(id).await? {
                if let Err(e) = notifier.enqueue(&channel, &message).await {
                    tracing::warn!(incident = %id, channel, error = %e, "acknowledgement not queued");
                }
            }
        }
        Ok(self.store.get_incident(id).await?)
    }

    /// Resolves an incident for `caller`; a `comment` (why, what was done) joins the
    /// timeline line.
    pub async fn resolve(
        &self,
        caller: &Caller,
        id: &str,
        comment: &str,
    ) -> Result<Option<Incident>, ApiError> {
        caller.require(Access::Operate)?;
        if comment.len() > 4096 {
            return Err(ApiError::bad_request("comment is longer than 4096 bytes"));
        }
        self.incident(id).await?;
        let why = match comment.trim() {
            "" => format!("resolved by {}", caller.name),
            c => format!("resolved by {}: {c}", caller.name),
        };
        if !self.store.resolve_incident(id, &caller.name, &why).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "incident is already resolved",
            ));
        }
        Ok(self.store.get_incident(id).await?)
    }

    /// The incident `id`, or 404.
    async fn incident(&self, id: &str) -> Result<Incident, ApiError> {
        self.store
            .get_incident(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no incident with id `{id}`")))
    }

    /// Submits a manual run of `playbook` for `caller`; `wait` hands back its end too.
    pub async fn start(
        &self,
        caller: &Caller,
        playbook: String,
        params: Map<String, Value>,
        dry_run: bool,
        wait: bool,
    ) -> Result<Submission, ApiError> {
        caller.require(Access::Operate)?;
        Ok(self
            .dispatcher
            .submit(
                RunRequest::manual(&playbook, params, dry_run, "api", &caller.name),
                wait,
            )
            .await?)
    }

    /// Every playbook by name: what serves, and what failed to load (with no version when
    /// the file never compiled).
    pub fn playbooks(&self) -> Vec<PlaybookView> {
        let mut errors = self.catalog.errors();
        let mut out: Vec<PlaybookView> = self
            .catalog
            .playbooks()
            .into_iter()
            .map(|p| PlaybookView {
                error: errors.remove(&p.name),
                name: p.name.clone(),
                version: Some(p.version.clone()),
                path: Some(p.path.display().to_string()),
                triggers: p.triggers.clone(),
                loaded_at: Some(ms_to_rfc3339(p.loaded_at)),
            })
            .collect();
        out.extend(errors.into_iter().map(|(name, e)| PlaybookView {
            name,
            version: None,
            path: Some(e.path.clone()),
            triggers: Vec::new(),
            loaded_at: None,
            error: Some(e),
        }));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
