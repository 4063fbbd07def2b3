-- PostgreSQL only (SQLite's migration 14 is empty): the ingest lock function plans its two
-- statements once per session instead of at every call.
--
-- PL/pgSQL plans a statement with a parameter five times for its values, then keeps a generic
-- plan only when its estimate is no worse. `unnest(keys)` is estimated at 10 rows in the generic
-- plan and at the array's length in a custom one, so with the one- or few-key batches of a quiet
-- day the generic plan always looked worse and every call planned both statements again: about
-- 120 µs of server CPU per batch, more than the statements themselves (docs/performance.md,
-- session 15). The generic plans are the ones wanted for any number of keys: locks taken above
-- the Sort/Unique of the hashes, and one `incidents_by_key` probe per key in a nested loop.
ALTER FUNCTION runbookd_lock_open_incidents(VARIADIC text[])
    SET plan_cache_mode = 'force_generic_plan';
