-- One schema for SQLite and PostgreSQL: ids are UUIDv7 text (time-ordered), times are
-- unix milliseconds, structured values are JSON text.
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    playbook    TEXT NOT NULL,
    version     TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    event       TEXT NOT NULL,
    dry_run     BIGINT NOT NULL,
    status      TEXT NOT NULL,
    queued_at   BIGINT NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT,
    logs        TEXT NOT NULL DEFAULT '[]',
    actions     TEXT NOT NULL DEFAULT '[]',
    result      TEXT,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (queued_at);
CREATE INDEX IF NOT EXISTS runs_by_playbook ON runs (playbook, queued_at);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, queued_at);

CREATE TABLE IF NOT EXISTS audit (
    id       TEXT PRIMARY KEY,
    at       BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    run_id   TEXT,
    dry_run  BIGINT NOT NULL,
    details  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at);
