//! `GET /api/v1/replicas`: the daemons sharing this state store, by their live leases —
//! which replica owns which runs, and which one answered.

use axum::{extract::State, Json};
use serde::Serialize;

use crate::{
    dispatch::Dispatcher,
    http::{
        caller::{Access, Caller},
        error::ApiError,
    },
    store::Store,
};

/// One daemon sharing the state store.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Replica {
    /// `[server] replica_id`.
    name: String,
    /// Its lease id (one per process start).
    lease: String,
    #[schema(format = DateTime)]
    lease_expires_at: String,
    /// The replica that answered this request.
    this: bool,
}

/// The daemons sharing this state store, by their live leases.
#[utoipa::path(get, path = "/api/v1/replicas", tag = "replicas",
    responses((status = 200, description = "Every live replica", body = [Replica])),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn list(
    caller: Caller,
    State(dispatcher): State<Dispatcher>,
    State(store): State<Store>,
) -> Result<Json<Vec<Replica>>, ApiError> {
    caller.require(Access::Read)?;
    let me = dispatcher.lease();
    let leases = store.live_leases().await?;
    Ok(Json(
        leases
            .into_iter()
            .map(|(name, lease, expires_at)| Replica {
                this: lease == me.id,
                name,
                lease,
                lease_expires_at: crate::store::ms_to_rfc3339(expires_at),
            })
            .collect(),
    ))
}
