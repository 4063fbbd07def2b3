-- Incidents (what escalation walks up), their timeline, and every alert received.
CREATE TABLE IF NOT EXISTS incidents (
    id           TEXT PRIMARY KEY,
    incident_key TEXT NOT NULL,
    source       TEXT NOT NULL,
    title        TEXT NOT NULL,
    labels       TEXT NOT NULL,
    status       TEXT NOT NULL,
    level        TEXT,
    facts        TEXT NOT NULL DEFAULT '{}',
    opened_at    BIGINT NOT NULL,
    acked_at     BIGINT,
    acked_by     TEXT,
    resolved_at  BIGINT,
    resolved_by  TEXT,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_by_key ON incidents (incident_key, status);
CREATE INDEX IF NOT EXISTS incidents_by_time ON incidents (opened_at);

CREATE TABLE IF NOT EXISTS incident_timeline (
    id          TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    message     TEXT NOT NULL,
    details     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS incident_timeline_by_incident ON incident_timeline (incident_id, at);

CREATE TABLE IF NOT EXISTS alerts (
    id           TEXT PRIMARY KEY,
    received_at  BIGINT NOT NULL,
    alertname    TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    status       TEXT NOT NULL,
    starts_at    TEXT NOT NULL,
    labels       TEXT NOT NULL,
    annotations  TEXT NOT NULL,
    incident_id  TEXT,
    outcome      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (received_at);

ALTER TABLE runs ADD COLUMN incident_id TEXT;
CREATE INDEX IF NOT EXISTS runs_by_incident ON runs (incident_id, playbook, queued_at);
