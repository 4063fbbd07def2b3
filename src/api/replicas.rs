//! `GET /api/v1/replicas`: the daemons sharing this state store, by their live leases —
//! which replica owns which runs, and which one answered.

use axum::{extract::State, Json};
use serde_json::{json, Value};

use super::{
    auth::{Access, Caller},
    ApiError, AppState,
};

pub async fn list(caller: Caller, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Read)?;
    let me = state.dispatcher.lease();
    let leases = state.store.live_leases().await?;
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
