//! `GET /api/v1/events`: a server-sent-events stream of changes (see [`crate::live`]) — run,
//! incident, approval and breaker changes as JSON, one event each, named by type. The first
//! event, `ready`, says the stream is watching: what changed before it is read from the
//! API, what changes after it arrives here. `resync` says this client fell behind and
//! should read the API again. Comments keep idle connections open through proxies.
//!
//! Streams are capped (`[dashboard] max_streams` in all, `max_streams_per_caller` each:
//! 429 with `Retry-After` beyond), end after `[dashboard] max_stream_lifetime` (the
//! browser reconnects), and a stream a dashboard session opened ends within
//! [`SESSION_CHECK`] of the session's end (logout, expiry, the token changed). Those are
//! timers of the connection (tokio's clock), not times of the world: a simulated world's
//! streams end on time too.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
};
use futures_util::stream;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    http::{
        caller::{Access, Caller},
        error::{ApiError, ErrorBody},
        session::{cookie_secret, id_hash},
        state::Sessions,
    },
    live::Feed,
};

/// One server-sent event as the OpenAPI document shows it (Schemathesis reads the stream
/// event by event): its type, and its JSON as text.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct StreamEvent {
    /// `ready`, `run`, `incident`, `approval`, `breaker` or `resync`.
    #[schema(pattern = "^(ready|run|incident|approval|breaker|resync)$")]
    event: String,
    /// The change as JSON text (`{}` for `ready` and `resync`).
    data: String,
    /// Milliseconds a browser waits before it reconnects (on `ready`).
    retry: Option<u64>,
}

/// How often a stream opened by a dashboard session looks whether the session still is.
pub const SESSION_CHECK: Duration = Duration::from_secs(3);

/// How soon a browser whose stream ended (its lifetime, a restart) opens the next.
const RECONNECT: Duration = Duration::from_secs(2);

enum Phase {
    Waiting,
    Live,
    Done,
}

/// What a stream carries besides its subscription: its slot, when it must end, and the
/// session to keep checking.
struct Open {
    sub: crate::live::Subscription,
    _slot: crate::live::StreamSlot,
    ends: tokio::time::Instant,
    session: Option<Session>,
}

/// A dashboard session behind a stream.
struct Session {
    sessions: Sessions,
    id_hash: String,
    name: String,
    next_check: tokio::time::Instant,
}

impl Session {
    /// True while the session exists, is unexpired, and its token is unchanged.
    async fn holds(&self) -> bool {
        match self.sessions.store.session(&self.id_hash).await {
            Ok(Some(s)) => s.token_name == self.name && self.sessions.auth.session_token_holds(&s),
            Ok(None) => false,
            // The store is down a moment: keep the stream; the next check decides.
            Err(_) => true,
        }
    }
}

fn refused(message: String) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "10")],
        axum::Json(ErrorBody { error: message }),
    )
        .into_response()
}

/// Server-sent events: `ready` once the stream watches, then one event per change (`run`,
/// `incident`, `approval`, `breaker`), `resync` when this client fell behind. The stream
/// ends after `[dashboard] max_stream_lifetime`.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    responses((status = 200, description = "The stream (`text/event-stream`)", content_type = "text/event-stream", body = StreamEvent),
        (status = 429, description = "Too many streams open (`[dashboard] max_streams`, `max_streams_per_caller`)", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds")))),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn events(
    caller: Caller,
    State(feed): State<Arc<Feed>>,
    State(sessions): State<Sessions>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Access::Read)?;
    let d = sessions.dashboard.clone();
    let slot = match feed.open_stream(&caller.name, d.max_streams, d.max_streams_per_caller) {
        Ok(slot) => slot,
        Err(crate::live::StreamRefused::Full) => {
            tracing::warn!(caller = %caller.name, max = d.max_streams, "event stream refused: [dashboard] max_streams are open");
            return Ok(refused(format!(
                "{} event streams are open ([dashboard] max_streams); try again later",
                d.max_streams
            )));
        }
        Err(crate::live::StreamRefused::CallerFull) => {
            tracing::warn!(caller = %caller.name, max = d.max_streams_per_caller, "event stream refused: the caller's [dashboard] max_streams_per_caller are open");
            return Ok(refused(format!(
                "`{}` has {} event streams open ([dashboard] max_streams_per_caller); close one",
                caller.name, d.max_streams_per_caller
            )));
        }
    };
    let now = tokio::time::Instant::now();
    let session = caller.session_csrf.as_ref().and_then(|_| {
        Some(Session {
            sessions: sessions.clone(),
            id_hash: id_hash(&cookie_secret(&headers)?),
            name: caller.name.clone(),
            next_check: now + SESSION_CHECK,
        })
    });
    let open = Open {
        sub: feed.subscribe(),
        _slot: slot,
        ends: now + d.max_stream_lifetime,
        session,
    };
    let stream = stream::unfold((open, Phase::Waiting), |(mut open, phase)| async move {
        // Ends at its lifetime, or once its session has ended (checked every few seconds).
        loop {
            if matches!(phase, Phase::Done) || tokio::time::Instant::now() >= open.ends {
                return None;
            }
            let check = open.session.as_ref().map(|s| s.next_check);
            if let Some(at) = check.filter(|at| tokio::time::Instant::now() >= *at) {
                let holds = match &open.session {
                    Some(s) => s.holds().await,
                    None => true,
                };
                if !holds {
                    return None;
                }
                if let Some(s) = open.session.as_mut() {
                    s.next_check = at + SESSION_CHECK;
                }
            }
            let wake = match open.session.as_ref().map(|s| s.next_check) {
                Some(at) => at.min(open.ends),
                None => open.ends,
            };
            let next = tokio::select! {
                item = step(&mut open.sub, &phase) => item,
                _ = tokio::time::sleep_until(wake) => continue,
            };
            return next.map(|(event, phase)| (Ok::<Event, Infallible>(event), (open, phase)));
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The next event of a stream in `phase`, and the phase after it; none when it ends.
async fn step(sub: &mut crate::live::Subscription, phase: &Phase) -> Option<(Event, Phase)> {
    {
        match phase {
            Phase::Done => None,
            Phase::Waiting => {
                let ready = tokio::select! {
                    r = sub.ready.wait_for(|r| *r) => r.is_ok(),
                    _ = sub.stop.cancelled() => false,
                };
                if !ready {
                    return None;
                }
                Some((
                    Event::default().event("ready").retry(RECONNECT).data("{}"),
                    Phase::Live,
                ))
            }
            Phase::Live => {
                let next = tokio::select! {
                    n = sub.changes.recv() => n,
                    _ = sub.stop.cancelled() => return None,
                };
                let event = match next {
                    Ok(change) => Event::default()
                        .event(change.kind())
                        .data(serde_json::to_string(&change).unwrap_or_default()),
                    Err(RecvError::Lagged(n)) => Event::default()
                        .event("resync")
                        .data(format!("{{\"missed\":{n}}}")),
                    Err(RecvError::Closed) => {
                        return Some((Event::default().event("resync").data("{}"), Phase::Done))
                    }
                };
                Some((event, Phase::Live))
            }
        }
    }
}
