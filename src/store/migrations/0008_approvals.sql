-- Approvals: a playbook's request that a human approve one concrete action. A request is
-- identified by the hash of (playbook, incident, action, target, params); at most one of
-- them is open (pending, or approved and not used yet) at a time. Decisions are a JSON list
-- [{by, decision, at, comment}]; every change of status is a compare-and-set.
CREATE TABLE IF NOT EXISTS approvals (
    id            TEXT PRIMARY KEY,
    request_hash  TEXT NOT NULL,
    playbook      TEXT NOT NULL,
    incident_id   TEXT,
    run_id        TEXT NOT NULL,
    action        TEXT NOT NULL,
    target        TEXT NOT NULL,
    params        TEXT NOT NULL,
    reason        TEXT NOT NULL,
    status        TEXT NOT NULL,
    required      BIGINT NOT NULL,
    requested_by  TEXT NOT NULL,
    requested_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    decided_at    BIGINT,
    used_at       BIGINT,
    used_by_run   TEXT,
    decisions     TEXT NOT NULL DEFAULT '[]'
);
CREATE UNIQUE INDEX IF NOT EXISTS approvals_one_open ON approvals (request_hash)
    WHERE status IN ('pending', 'approved');
CREATE INDEX IF NOT EXISTS approvals_by_status ON approvals (status, requested_at);
