-- PostgreSQL only (SQLite's migration 12 is empty): an ingest batch's advisory locks and its
-- keys' unresolved incidents in one round trip (src/store/batch.rs, `Batch::load_keys`).
CREATE FUNCTION runbookd_lock_open_incidents(VARIADIC keys text[]) RETURNS SETOF incidents
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    -- Transaction-scoped locks on hashtext(key), in hash order: two batches sharing keys
    -- take them in the same order.
    PERFORM pg_advisory_xact_lock(h)
       FROM (SELECT DISTINCT hashtext(k)::bigint AS h FROM unnest(keys) AS t(k)) AS hashes
      ORDER BY h;
    -- A VOLATILE function's statements each take a fresh snapshot: this one sees every
    -- incident committed by a batch that held one of these locks before this one did. One
    -- index probe per key whatever the statistics (the lateral subquery is not flattened).
    RETURN QUERY
        SELECT i.* FROM unnest(keys) AS t(k)
        CROSS JOIN LATERAL (
            SELECT * FROM incidents WHERE incident_key = t.k AND status <> 'resolved' OFFSET 0
        ) AS i;
END
$fn$;
