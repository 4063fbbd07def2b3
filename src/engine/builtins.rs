//! Checked versions of the Rhai built-ins that allocate by an argument rather than by their
//! inputs: `blob(len)`, `blob(len, value)` and the four `pad`s. With Rhai's own size limits
//! off (see [`crate::primitives::memory`]), Rhai's versions would allocate whatever `len` says in one
//! operation — before the per-operation budget check could see it. These refuse first, with
//! the same uncatchable error Rhai's limits raise, and otherwise do exactly what Rhai's do.
//! Registered on the engine, they shadow the standard package's functions of the same
//! signature (the tests below prove it: Rhai's would allocate). The list is every call site
//! of Rhai 1.27.0's `throw_on_size` and `max_*_size` checks whose size comes from an
//! argument; Cargo.toml pins that version so that an upgrade is a deliberate change that
//! reviews this list again.

use rhai::{Array, Blob, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position, INT};

use crate::primitives::memory;

/// Replaces Rhai's argument-sized allocators with ones checked against `limit` bytes
/// (`[playbooks] max_run_memory`; 0 = no limit).
pub fn register(engine: &mut Engine, limit: usize) {
    engine.register_fn("blob", move |len: INT| blob(limit, len, 0));
    engine.register_fn("blob", move |len: INT, value: INT| blob(limit, len, value));
    engine.register_fn("pad", move |b: &mut Blob, len: INT, value: INT| {
        pad_blob(limit, b, len, value)
    });
    engine.register_fn("pad", move |a: &mut Array, len: INT, item: Dynamic| {
        pad_array(limit, a, len, item)
    });
    engine.register_fn("pad", move |s: &mut ImmutableString, len: INT, c: char| {
        pad_char(limit, s, len, c)
    });
    engine.register_fn("pad", move |s: &mut ImmutableString, len: INT, p: &str| {
        pad_str(limit, s, len, p)
    });
}

type Checked<T> = Result<T, Box<EvalAltResult>>;

/// Refuses `bytes` more when they would take the script past `limit`.
fn reserve(limit: usize, what: &str, bytes: usize) -> Checked<()> {
    if memory::fits(bytes, limit) {
        return Ok(());
    }
    Err(Box::new(EvalAltResult::ErrorDataTooLarge(
        format!(
            "{what} of {} (the script holds {}; [playbooks] max_run_memory is {})",
            memory::human(bytes),
            memory::human(memory::held().unwrap_or(0)),
            memory::human(limit)
        ),
        Position::NONE,
    )))
}

/// Bytes a new copy of `value` takes: Rhai copies arrays, maps and BLOBs deeply and shares
/// strings.
fn footprint(value: &Dynamic) -> usize {
    let slot = std::mem::size_of::<Dynamic>();
    if let Some(array) = value.read_lock::<Array>() {
        array.iter().map(footprint).sum::<usize>() + slot
    } else if let Some(map) = value.read_lock::<Map>() {
        // Each entry: its key (an inline string of 24 bytes) and its value; a non-empty map
        // holds at least one B-tree leaf of eleven entries (~500 bytes: 100,000 one-entry
        // maps fit a 64 MiB budget, 200,000 did not).
        let leaf = if map.is_empty() { 0 } else { 512 };
        map.values().map(|v| footprint(v) + 24).sum::<usize>() + leaf + slot
    } else if let Some(blob) = value.read_lock::<Blob>() {
        blob.len() + slot
    } else {
        slot
    }
}

/// A count from a script: negative means none.
fn count(len: INT) -> usize {
    usize::try_from(len).unwrap_or(0)
}

fn blob(limit: usize, len: INT, value: INT) -> Checked<Blob> {
    let len = count(len);
    reserve(limit, "a BLOB", len)?;
    Ok(vec![(value & 0xff) as u8; len])
}

fn pad_blob(limit: usize, blob: &mut Blob, len: INT, value: INT) -> Checked<()> {
    let len = count(len);
    if len > blob.len() {
        reserve(limit, "padding a BLOB", len - blob.len())?;
        blob.resize(len, (value & 0xff) as u8);
    }
    Ok(())
}

fn pad_array(limit: usize, array: &mut Array, len: INT, item: Dynamic) -> Checked<()> {
    let len = count(len);
    if len > array.len() {
        let more = len - array.len();
        reserve(
            limit,
            "padding an array",
            more.saturating_mul(footprint(&item)),
        )?;
        array.resize(len, item);
    }
    Ok(())
}

fn pad_char(limit: usize, string: &mut ImmutableString, len: INT, character: char) -> Checked<()> {
    let len = count(len);
    let chars = string.chars().count();
    if len > chars {
        let more = len - chars;
        reserve(
            limit,
            "padding a string",
            more.saturating_mul(character.len_utf8()),
        )?;
        let s = string.make_mut();
        s.extend(std::iter::repeat_n(character, more));
    }
    Ok(())
}

fn pad_str(limit: usize, string: &mut ImmutableString, len: INT, padding: &str) -> Checked<()> {
    let len = count(len);
    let mut chars = string.chars().count();
    let step = padding.chars().count();
    if len <= chars || step == 0 {
        return Ok(());
    }
    let widest = padding.chars().map(char::len_utf8).max().unwrap_or(1);
    reserve(
        limit,
        "padding a string",
        (len - chars).saturating_mul(widest),
    )?;
    let s = string.make_mut();
    while chars < len {
        if chars + step <= len {
            s.push_str(padding);
            chars += step;
        } else {
            s.extend(padding.chars().take(len - chars));
            chars = len;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut e = Engine::new();
        register(&mut e, 1 << 20);
        e
    }

    #[test]
    fn the_checked_versions_do_what_rhais_do() {
        let e = engine();
        let eval = |s: &str| e.eval::<Dynamic>(s).expect(s).to_string();
        assert_eq!(eval(r#"let t = "hello"; t.pad(8, '!'); t"#), "hello!!!");
        assert_eq!(eval(r#"let t = "hello"; t.pad(3, '!'); t"#), "hello");
        // Rhai's own doc says "hello(!)(!)"; its code (and this) gives ten characters.
        assert_eq!(
            eval(r#"let t = "hello"; t.pad(10, "(!)"); t"#),
            "hello(!)(!"
        );
        assert_eq!(eval(r#"let t = "héllo"; t.pad(7, "é"); t"#), "hélloéé");
        assert_eq!(eval(r#"let t = "x"; t.pad(3, ""); t"#), "x");
        assert_eq!(
            eval("let a = [1, 2, 3]; a.pad(5, 42); a"),
            "[1, 2, 3, 42, 42]"
        );
        assert_eq!(eval("let a = [1, 2, 3]; a.pad(2, 42); a"), "[1, 2, 3]");
        assert_eq!(eval("let a = [1]; a.pad(-5, 42); a"), "[1]");
        assert_eq!(eval("blob(3, 0x142).len()"), "3");
        assert_eq!(eval("blob(2, 0x142)[1]"), "66");
        assert_eq!(eval("blob(-1).len()"), "0");
        assert_eq!(eval("let b = blob(2, 1); b.pad(4, 7); b[3]"), "7");
    }

    #[test]
    fn an_allocation_past_the_budget_is_refused_before_it_is_made() {
        let e = engine();
        let _script = memory::Budget::enter();
        for script in [
            "blob(1_000_000_000_000)",
            "blob(100_000_000, 1)",
            "let b = blob(); b.pad(1 << 40, 0)",
            "let a = []; a.pad(1 << 40, 0)",
            "let a = []; a.pad(10_000, blob(1000))",
            "let a = []; a.pad(10_000, #{ id: 1 })",
            r#"let t = ""; t.pad(1 << 40, 'x')"#,
            r#"let t = ""; t.pad(1 << 40, "xy")"#,
        ] {
            let err = e.eval::<Dynamic>(script).expect_err(script);
            assert!(
                matches!(*err, EvalAltResult::ErrorDataTooLarge(ref what, _) if what.contains("max_run_memory is 1 MiB")),
                "{script}: {err}"
            );
        }
        // Within the budget they work.
        assert_eq!(e.eval::<INT>("blob(1000).len()").expect("small"), 1000);
    }
}
