-- Run ownership. Every daemon process (an incarnation of a replica) holds a lease here and
-- renews it; it owns the runs it claimed (`runs.owner`). Only runs whose owner's lease
-- expired are taken over, so a replica that starts never touches live work of another.
CREATE TABLE IF NOT EXISTS replicas (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    renewed_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN replica TEXT;
ALTER TABLE runs ADD COLUMN attempt BIGINT NOT NULL DEFAULT 1;
ALTER TABLE runs ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]';
-- Runs nobody owns (runbookd's own triggers, released or recovered work), oldest first:
-- a partial index holds only those, so a claim never scans the queued runs replicas own,
-- and the runs that never enter it (almost all) cost it nothing.
CREATE INDEX IF NOT EXISTS runs_unowned ON runs (queued_at, id) WHERE status = 'queued' AND owner IS NULL;
-- The escalation evaluator pages through unresolved incidents by id.
CREATE INDEX IF NOT EXISTS incidents_by_status_id ON incidents (status, id);
