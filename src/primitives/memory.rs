//! How much memory a script holds, counted by the allocator rather than by Rhai.
//!
//! Rhai's own size limits (`max_string_size`, `max_array_size`, `max_map_size`) re-measure a
//! whole value after every change to it — its `check_data_size` walks every element — so
//! `a.push(x)` in a loop costs O(n) per push and O(n²) in all: 40,000 pushes took 1.4 s and
//! 200,000 met the run's deadline (issue #11). Rhai offers no incremental check. So the
//! sandbox turns Rhai's size limits off and bounds what they stood for — how much memory one
//! run may take from the daemon — directly:
//!
//! - the global allocator counts, per thread, bytes allocated minus bytes freed (one
//!   thread-local add per allocation; a script runs on one blocking thread from start to end);
//! - a [`Budget`] entered for a script (a run, a playbook's `triggers()`, a playbook test)
//!   remembers that count when it begins, and the engine's progress callback ends the script,
//!   uncatchably, on the first operation that finds it more than `[playbooks] max_run_memory`
//!   above that;
//! - the few built-ins whose allocation is sized by an argument rather than by their inputs
//!   (`blob(n)`, `pad`) are replaced by checked versions (`crate::engine::builtins`), so that no
//!   single operation can allocate past the budget before the next check.
//!
//! Every other operation allocates at most a small multiple of what it reads (concatenation,
//! `split`, `to_chars`, JSON parsing, a primitive's answer), so a script is stopped within one
//! operation of crossing the budget: at worst about three times the budget is ever held
//! (`s += s` on a string just under it: the old copy, and the new one twice its size).
//! Memory allocated on another thread and freed on the script's (a primitive's answer made on
//! the runtime) is credited to the script; primitives' answers are bounded by their own
//! limits, so the credit is too.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

/// The daemon's allocator: the system allocator, counting per thread.
pub struct CountingAllocator;

thread_local! {
    /// Bytes this thread allocated minus bytes it freed.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// `LIVE` when the script running on this thread started.
    static START: Cell<Option<isize>> = const { Cell::new(None) };
}

fn count(bytes: isize) {
    // `try_with`: never panic inside the allocator, even while the thread is torn down.
    let _ = LIVE.try_with(|live| live.set(live.get().wrapping_add(bytes)));
}

fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded unchanged to `System`; the counting only reads the layout
// and touches a const-initialised thread-local `Cell` (no allocation, no destructor, no panic).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(signed(layout.size()));
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(signed(layout.size()));
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every path above).
        unsafe { System.dealloc(ptr, layout) };
        count(-signed(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new_size` is the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(signed(new_size) - signed(layout.size()));
        }
        new
    }
}

/// Bytes allocated and not freed by this thread so far.
fn live() -> isize {
    LIVE.try_with(Cell::get).unwrap_or(0)
}

/// Marks the start of a script on the current thread (a run, a playbook's load, a playbook
/// test): what the thread holds above this mark is the script's. Marks nest (a playbook
/// test's run inside the test): the inner one counts until it ends. The limit itself is the
/// engine's (`[playbooks] max_run_memory`), checked by its progress callback and by
/// `crate::engine::builtins`.
pub struct Budget {
    outer: Option<isize>,
}

impl Budget {
    /// Starts counting for a script on this thread.
    pub fn enter() -> Budget {
        let outer = START.with(|b| b.replace(Some(live())));
        Budget { outer }
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        START.with(|b| b.set(self.outer));
    }
}

/// Bytes the script on this thread holds above its start; `None` outside a script.
pub fn held() -> Option<usize> {
    let start = START.with(Cell::get)?;
    Some(usize::try_from(live().saturating_sub(start)).unwrap_or(0))
}

/// Whether the script on this thread holds more than `limit` bytes (0 = no limit).
pub fn exceeded(limit: usize) -> bool {
    limit > 0 && held().is_some_and(|used| used > limit)
}

/// Whether `bytes` more would keep the script on this thread within `limit` (0 = no limit).
/// Outside a script, a single allocation is still held to the limit.
pub fn fits(bytes: usize, limit: usize) -> bool {
    limit == 0 || held().unwrap_or(0).saturating_add(bytes) <= limit
}

/// `bytes` as a person reads it: "64 MiB", "1.5 KiB".
pub fn human(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_counts_what_its_thread_allocates_and_frees() {
        let _b = Budget::enter();
        let before = held().expect("in a script");
        let kept = vec![0u8; 512 * 1024];
        let during = held().expect("in a script");
        assert!(during >= before + 512 * 1024, "{before} → {during}");
        assert!(!exceeded(1 << 20));
        assert!(
            !fits(600 * 1024, 1 << 20),
            "512 KiB held, 600 KiB more would not fit 1 MiB"
        );
        let more = vec![0u8; 600 * 1024];
        assert!(exceeded(1 << 20));
        assert!(!exceeded(0), "0 = no limit");
        drop(more);
        drop(kept);
        assert!(!exceeded(1 << 20), "freed memory is given back");
    }

    #[test]
    fn marks_nest_and_outside_a_script_one_allocation_is_still_held_to_the_limit() {
        assert!(held().is_none() && !exceeded(1));
        assert!(fits(1024, 1024) && !fits(1025, 1024) && fits(usize::MAX, 0));
        let outer = Budget::enter();
        let kept = vec![0u8; 64 * 1024];
        {
            let _inner = Budget::enter();
            assert!(
                held().expect("inner") < 1024,
                "the inner script starts from nothing"
            );
        }
        assert!(held().expect("outer") >= 64 * 1024);
        drop(kept);
        drop(outer);
        assert!(held().is_none());
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(64 << 20), "64 MiB");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(10), "10 bytes");
    }
}
