-- `approved()` in a later attempt of a run finds the grant its earlier attempt used: the
-- grant belongs to the run, not to one attempt (a crash between the use and the action
-- must not ask the humans again).
CREATE INDEX IF NOT EXISTS approvals_by_using_run ON approvals (used_by_run, request_hash);
