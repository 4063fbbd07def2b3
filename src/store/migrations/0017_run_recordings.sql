-- A run's flight recording: the primitive reads it made, with their answers, in order
-- (JSON, at most [playbooks] max_recording_bytes of reads). NULL for runs that ended
-- before recordings existed, runs still going and runs with recording turned off. Kept
-- and pruned with the run's row; read only by GET /api/v1/runs/{id}/recording.
ALTER TABLE runs ADD COLUMN recording TEXT;
