-- The last tick each cron trigger fired for: a restart neither repeats a tick nor replays
-- a day of missed ones, and replicas sharing the store fire each tick once.
CREATE TABLE IF NOT EXISTS cron_marks (
    playbook  TEXT NOT NULL,
    schedule  TEXT NOT NULL,
    last_tick BIGINT NOT NULL,
    PRIMARY KEY (playbook, schedule)
);
