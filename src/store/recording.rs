//! A run's flight recording as the store keeps it: the primitive reads it made, in order
//! (written by `primitives::recorder`, replayed by `sim::replay`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One read, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Read {
    /// When it was asked, by the run's clock.
    pub at: String,
    /// The primitive: `breaker`, `stripe::status`, `payments::counts`, `now`, `setting` …
    pub name: String,
    /// Its arguments, as JSON.
    pub args: Vec<Value>,
    /// What it answered (`null` for nothing, or when it failed).
    #[serde(default)]
    pub answer: Value,
    /// The error it failed with, as the script saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a recording was cut: reads after it were counted, not kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cut {
    /// Reads kept (the cut comes after them).
    pub after_reads: usize,
    /// Actions the run had recorded when the cut came: a replay compares these only.
    pub actions_before: usize,
    /// Reads made after the cut.
    pub omitted: usize,
    pub why: String,
}

/// A run's reads, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recording {
    pub reads: Vec<Read>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<Cut>,
}
