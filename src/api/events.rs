//! `GET /api/v1/events`: a server-sent-events stream of changes (see [`crate::live`]) — run,
//! incident, approval and breaker changes as JSON, one event each, named by type. The first
//! event, `ready`, says the stream is watching: what changed before it is read from the
//! API, what changes after it arrives here. `resync` says this client fell behind and
//! should read the API again. Comments keep idle connections open through proxies.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast::error::RecvError;

use super::{
    auth::{Access, Caller},
    ApiError, AppState,
};

enum Phase {
    Waiting,
    Live,
    Done,
}

pub async fn events(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Access::Read)?;
    let sub = state.feed.subscribe();
    let stream = stream::unfold((sub, Phase::Waiting), |(mut sub, phase)| async move {
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
                    Ok(Event::default().event("ready").data("{}")),
                    (sub, Phase::Live),
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
                        return Some((
                            Ok(Event::default().event("resync").data("{}")),
                            (sub, Phase::Done),
                        ))
                    }
                };
                Some((Ok(event), (sub, Phase::Live)))
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
