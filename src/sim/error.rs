//! What can go wrong setting up or playing a simulation: below both the driver (which sets
//! one up) and the stages a scenario plays on, so neither imports the other for it.

use crate::{dispatch::DispatchError, store::StoreError};

/// Errors setting up a simulation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulation store: {0}")]
    Store(#[from] StoreError),
    #[error("simulation: {0}")]
    Setup(String),
    #[error("simulation: {0}")]
    Dispatch(#[from] DispatchError),
}
