-- Retention prunes finished rows by age: indexes so a pass reads only what it removes.
CREATE INDEX IF NOT EXISTS incidents_resolved ON incidents (resolved_at) WHERE status = 'resolved';
CREATE INDEX IF NOT EXISTS outbox_by_created ON outbox (created_at);
