//! `GET /api/v1/replicas`: the daemons sharing this state store, by their live leases —
//! which replica owns which runs, and which one answered.

use axum::{extract::State, Json};
use serde_json::{json, Value};

use crate::{
    dispatch::Dispatcher,
    http::{
        caller::{Access, Caller},
        error::ApiError,
    },
    store::Store,
};

pub async fn list(
    caller: Caller,
    State(dispatcher): State<Dispatcher>,
    State(store): State<Store>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Read)?;
    let me = dispatcher.lease();
    let leases = store.live_leases().await?;
    Ok(Json(json!(leases
        .into_iter()
        .map(|(name, lease, expires_at)| json!({
            "name": name,
            "lease": lease,
            "lease_expires_at": crate::store::ms_to_rfc3339(expires_at),
            "this": lease == me.id,
        }))
        .collect::<Vec<_>>())))
}
