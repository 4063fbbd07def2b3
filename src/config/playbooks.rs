//! `[playbooks]`: where playbooks live and what one run may take from the daemon — time,
//! operations, memory, slots, and how much of it its record keeps.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{bad, duration, ConfigError};

/// `[playbooks]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlaybooksConfig {
    /// Directory of `NAME.rhai` playbooks; subdirectories hold modules they import.
    pub dir: PathBuf,
    /// Wall-clock deadline of one run; past it the run ends `timed_out`.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Scripts executing at once (a run holds its slot from its "running" commit to the end
    /// of its script, not while its outcome is written); the rest wait in the queue.
    pub max_concurrent_runs: usize,
    /// Runs that may wait for a free slot; beyond that new triggers get 503.
    pub queue_capacity: usize,
    /// How often a run whose replica died mid-run (or that outlived the shutdown grace
    /// period) is started again; after that it ends `failed`, reason `interrupted`.
    pub retry_interrupted: u32,
    /// Quiet time after a file change before the directory is reloaded.
    #[serde(deserialize_with = "duration")]
    pub reload_debounce: Duration,
    /// Script operations one run may perform (0 = unlimited).
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_depth: usize,
    /// Memory one script may hold, in bytes (0 = no limit): strings, arrays, maps, BLOBs and
    /// everything else it allocates, counted by the allocator (see `primitives::memory`). A run
    /// past it ends `failed`, reason `data_too_large`.
    pub max_run_memory: usize,
    /// No longer read (Rhai's per-value limits made growing an array quadratic): kept so that
    /// a configuration setting them still loads; startup warns and names `max_run_memory`.
    pub max_string_size: Option<usize>,
    /// No longer read; see `max_string_size`.
    pub max_array_size: Option<usize>,
    /// No longer read; see `max_string_size`.
    pub max_map_size: Option<usize>,
    /// Log lines kept per run; later lines are counted, not stored.
    pub max_log_lines: usize,
    /// Longest log line kept (bytes); longer ones are cut with a marker saying how much.
    pub max_log_line_bytes: usize,
    /// Log bytes kept per run; later lines are counted, not stored.
    pub max_log_bytes: usize,
    /// Actions recorded per run (each action is still audited); later ones are counted.
    pub max_actions: usize,
    /// Largest result stored (bytes of JSON); a larger one is stored as a marker with a
    /// preview.
    pub max_result_bytes: usize,
    /// Bytes of a run's flight recording (the primitive reads it made, with their answers)
    /// kept; past it the recording is cut with a marker, and a replay stops at the cut.
    pub max_recording_bytes: usize,
    /// Refuse a hot reload whose playbook tests (`DIR/tests/*.rhai`) fail: the last good
    /// versions keep serving and the refused files show why.
    pub require_tests: bool,
    /// Values playbooks read with `setting(name, default)`: tunables such as the remediation
    /// budget or how long to watch a reset breaker, set per deployment without editing
    /// the playbook.
    pub settings: BTreeMap<String, toml::Value>,
}

impl PlaybooksConfig {
    /// What this section sets that is no longer read, said the way startup logs it.
    pub fn ignored_keys(&self) -> Vec<String> {
        [
            ("max_string_size", self.max_string_size),
            ("max_array_size", self.max_array_size),
            ("max_map_size", self.max_map_size),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| {
            format!(
                "[playbooks] {k} is no longer read: a script's memory is bounded as a whole by \
                 max_run_memory ({} bytes)",
                self.max_run_memory
            )
        })
        .collect()
    }
}

impl Default for PlaybooksConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("playbooks"),
            timeout: Duration::from_secs(300),
            max_concurrent_runs: 16,
            queue_capacity: 1024,
            retry_interrupted: 1,
            reload_debounce: Duration::from_millis(100),
            max_operations: 1_000_000_000,
            max_call_depth: 64,
            max_run_memory: 64 * 1024 * 1024,
            max_string_size: None,
            max_array_size: None,
            max_map_size: None,
            max_log_lines: 1000,
            max_log_line_bytes: 8 * 1024,
            max_log_bytes: 1024 * 1024,
            max_actions: 1000,
            max_result_bytes: 1024 * 1024,
            max_recording_bytes: 256 * 1024,
            require_tests: false,
            settings: BTreeMap::new(),
        }
    }
}

impl PlaybooksConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_run_memory != 0 && self.max_run_memory < 1024 * 1024 {
            return Err(bad(
                "playbooks.max_run_memory",
                "must be at least 1048576 (1 MiB), or 0 for no limit: the engine itself needs some",
            ));
        }
        if self.max_concurrent_runs == 0 {
            return Err(bad("playbooks.max_concurrent_runs", "must be at least 1"));
        }
        if self.queue_capacity == 0 {
            return Err(bad("playbooks.queue_capacity", "must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(bad("playbooks.timeout", "must be longer than zero"));
        }
        Ok(())
    }
}
