-- Every list the API, the dashboard and the evaluator read, newest first, comes straight off an
-- index in its exact order, so its cost does not grow with history (benches/scale.rs: 1,000,000
-- runs, 100,000 incidents).
-- `GET /api/v1/runs?playbook=X&status=failed`: both filters, then time.
CREATE INDEX IF NOT EXISTS runs_by_playbook_status ON runs (playbook, status, queued_at, id);
-- `GET /api/v1/incidents` (`ORDER BY opened_at DESC, id DESC`), with and without a status.
CREATE INDEX IF NOT EXISTS incidents_newest ON incidents (opened_at, id);
CREATE INDEX IF NOT EXISTS incidents_by_status_newest ON incidents (status, opened_at, id);
DROP INDEX IF EXISTS incidents_by_time;
-- The evaluator's resolutions still to announce: only those rows, not every resolved incident.
CREATE INDEX IF NOT EXISTS incidents_resolution_due ON incidents (resolved_at)
    WHERE status = 'resolved' AND resolution_sent = 0;
