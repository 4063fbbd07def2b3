-- Notifications waiting to be delivered, delivered, or given up on: a restart loses none
-- and sends none twice.
CREATE TABLE IF NOT EXISTS outbox (
    id              TEXT PRIMARY KEY,
    channel         TEXT NOT NULL,
    incident_id     TEXT,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at);
