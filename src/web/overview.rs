//! `/`: everything an SRE needs first — open incidents, breakers, what waits for a human,
//! recent runs, broken playbooks, notifications that did not go out.

use axum::{extract::State, response::Response};

use super::{
    approvals::{approval_row, ApprovalRow},
    pages::{run_row, scalar, span, when, when_str, Chrome, RunRow, When},
    playbooks::{playbook_rows, PlaybookRow},
    Viewer, WebError,
};
use crate::{
    http::{actions::Actions, caller::Access},
    primitives::Services,
    store::{ApprovalStatus, Incident, IncidentStatus, RunFilter, Store},
};

pub struct IncidentRow {
    pub id: String,
    pub title: String,
    pub status: &'static str,
    pub level: String,
    pub opened: When,
    /// The `summary` fact a playbook wrote: what to read first.
    pub summary: Option<String>,
    /// A few other facts, `key = value`.
    pub facts: Vec<(String, String)>,
    pub last_run: Option<RunRow>,
}

/// Facts shown beside an incident in lists (the page shows all of them).
const LIST_FACTS: usize = 4;

pub fn incident_row(i: &Incident, last_run: Option<RunRow>, now: i64) -> IncidentRow {
    let facts = i
        .facts
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != "summary")
                .take(LIST_FACTS)
                .map(|(k, v)| (k.clone(), scalar(v)))
                .collect()
        })
        .unwrap_or_default();
    IncidentRow {
        id: i.id.clone(),
        title: i.title.clone(),
        status: i.status.as_str(),
        level: i.level.clone().unwrap_or_else(|| "—".into()),
        opened: when(i.opened_at, now),
        summary: i.facts.get("summary").map(scalar),
        facts,
        last_run,
    }
}

pub struct BreakerRow {
    pub name: String,
    pub state: String,
    pub failures: i64,
    pub threshold: u32,
    /// "4 min 10 s" since it opened; none when closed.
    pub since_open: Option<String>,
    /// Why it could not be read.
    pub error: Option<String>,
}

pub struct NotificationRow {
    pub channel: String,
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub incident: Option<String>,
    pub created: When,
    pub last_error: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    incidents: Vec<IncidentRow>,
    breakers: Vec<BreakerRow>,
    approvals: Vec<ApprovalRow>,
    runs: Vec<RunRow>,
    playbooks: Vec<PlaybookRow>,
    load_errors: usize,
    notifications: Vec<NotificationRow>,
    /// Channels whose deliveries keep failing.
    degraded_channels: Vec<crate::notify::ChannelHealth>,
}

/// Notifications read to find the ones in trouble.
const NOTIFICATIONS_SCANNED: u32 = 200;

pub async fn page(
    viewer: Viewer,
    State(store): State<Store>,
    State(actions): State<Actions>,
    State(services): State<Services>,
) -> Result<Response, WebError> {
    viewer.caller.require(Access::Read)?;
    let now = store.now();
    let mut open = store.list_incidents(Some(IncidentStatus::Open), 50).await?;
    open.extend(
        store
            .list_incidents(Some(IncidentStatus::Acknowledged), 50)
            .await?,
    );
    let mut incidents = Vec::with_capacity(open.len());
    for i in &open {
        let last = store
            .list_runs(&RunFilter {
                incident: Some(i.id.clone()),
                limit: 1,
                ..RunFilter::default()
            })
            .await?;
        incidents.push(incident_row(i, last.first().map(|r| run_row(r, now)), now));
    }
    let mut breakers = Vec::new();
    for name in services.breakers.names() {
        breakers.push(match services.breakers.read(&name).await {
            Ok(s) => BreakerRow {
                name,
                state: s.state.as_str().into(),
                failures: s.failures,
                threshold: s.failure_threshold,
                since_open: s.seconds_since_open.map(span),
                error: None,
            },
            Err(e) => BreakerRow {
                name,
                state: "unknown".into(),
                failures: 0,
                threshold: 0,
                since_open: None,
                error: Some(e.to_string()),
            },
        });
    }
    let approvals = store
        .list_approvals(Some(ApprovalStatus::Pending), 50)
        .await?
        .iter()
        .map(|a| approval_row(a, now))
        .collect();
    let runs = store
        .list_runs(&RunFilter {
            limit: 15,
            ..RunFilter::default()
        })
        .await?
        .iter()
        .map(|r| run_row(r, now))
        .collect();
    let playbooks = playbook_rows(&actions);
    let load_errors = playbooks.iter().filter(|p| p.error.is_some()).count();
    let notifications = store
        .list_notifications(NOTIFICATIONS_SCANNED)
        .await?
        .into_iter()
        .filter(|n| n.status == "failed" || (n.status == "pending" && n.attempts > 0))
        .map(|n| NotificationRow {
            created: when_str(&n.created_at, now),
            channel: n.channel,
            kind: n.kind,
            status: if n.status == "pending" {
                "retrying".into()
            } else {
                n.status
            },
            attempts: n.attempts,
            incident: n.incident_id,
            last_error: n.last_error,
        })
        .collect();
    let degraded_channels = services
        .notifier
        .iter()
        .flat_map(|n| n.channel_health())
        .filter(|h| h.degraded)
        .collect();
    viewer.render(&OverviewPage {
        chrome: Chrome::new(&viewer, "Overview", "overview"),
        incidents,
        breakers,
        approvals,
        runs,
        playbooks,
        load_errors,
        notifications,
        degraded_channels,
    })
}
