-- Which escalation levels fired for which incident, and when they last notified: a restart
-- neither repeats a page nor forgets a repeat that is due.
CREATE TABLE IF NOT EXISTS escalation_fires (
    incident_id TEXT NOT NULL,
    level       TEXT NOT NULL,
    fired_at    BIGINT NOT NULL,
    last_sent   BIGINT NOT NULL,
    sends       BIGINT NOT NULL,
    PRIMARY KEY (incident_id, level)
);
ALTER TABLE incidents ADD COLUMN resolution_sent BIGINT NOT NULL DEFAULT 0;
