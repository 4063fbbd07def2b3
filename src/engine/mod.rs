//! The playbook engine — the only module that knows Rhai (besides the primitives that Rhai
//! calls). [`catalog`] compiles the playbook directory, [`reload`] watches it, [`runner`]
//! executes one run on a blocking thread inside the sandbox built here.

mod builtins;
pub mod catalog;
pub mod conditions;
pub mod modules;
pub mod reload;
pub mod runner;

use std::path::Path;

use rhai::Engine;

use crate::{config::PlaybooksConfig, primitives};

pub use catalog::{Catalog, LoadError, Playbook};

/// Builds the sandboxed engine: no file, process or network access except through
/// primitives; `import` confined to the playbook directory; limits on operations and call
/// depth; the script's memory, deadline and shutdown checked between operations.
pub fn build(config: &PlaybooksConfig, playbook_dir: &Path) -> Engine {
    let mut engine = Engine::new();
    engine.set_module_resolver(modules::ConfinedResolver::new(playbook_dir));
    engine.set_max_operations(config.max_operations);
    engine.set_max_call_levels(config.max_call_depth);
    engine.set_max_expr_depths(128, 64);
    // Rhai's per-value size limits stay off: each re-measures a whole value after every
    // change to it, which makes growing an array quadratic. A script's memory is bounded as
    // a whole instead (`memory`), and the built-ins that allocate by an argument are checked
    // before they allocate (`builtins`).
    engine.set_max_string_size(0);
    engine.set_max_array_size(0);
    engine.set_max_map_size(0);
    let max_memory = config.max_run_memory;
    builtins::register(&mut engine, max_memory);
    engine.set_max_modules(64);
    // `eval` would run code that no version hash covers.
    engine.disable_symbol("eval");
    // Memory is checked on every operation (two thread-local reads): one operation can
    // double a string. The clock every 256 operations: reading it on every one would double
    // the cost of tight loops, and 256 are still sub-millisecond.
    engine.on_progress(move |ops| {
        if crate::primitives::memory::exceeded(max_memory) {
            Some(rhai::Dynamic::from(primitives::TERMINATED_MEMORY))
        } else if ops % 256 == 0 {
            primitives::check_interrupt()
        } else {
            None
        }
    });
    primitives::register(&mut engine);
    engine
}
