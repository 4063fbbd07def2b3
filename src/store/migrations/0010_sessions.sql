-- Dashboard sessions: a browser that logged in with an API token. The cookie carries a
-- random secret; only its SHA-256 is stored, so a copy of the database logs nobody in. The
-- token is remembered by name and by the SHA-256 of its secret: rotating or removing a
-- token ends its sessions.
CREATE TABLE IF NOT EXISTS sessions (
    id_hash      TEXT PRIMARY KEY,
    token_name   TEXT NOT NULL,
    token_digest TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);

-- The incident page reads an incident's notifications and approvals directly, however long
-- the history behind them.
CREATE INDEX IF NOT EXISTS outbox_by_incident ON outbox (incident_id, created_at);
CREATE INDEX IF NOT EXISTS approvals_by_incident ON approvals (incident_id, requested_at);
