-- Remediation budgets ("at most 2 breaker resets per 30 min"): one row per use, so the
-- window slides and a restart does not hand a playbook a fresh budget.
CREATE TABLE IF NOT EXISTS budget_uses (
    name    TEXT NOT NULL,
    used_at BIGINT NOT NULL,
    run_id  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_uses_name_used_at ON budget_uses (name, used_at);
