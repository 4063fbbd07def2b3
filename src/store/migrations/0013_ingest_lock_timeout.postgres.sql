-- PostgreSQL only (SQLite's migration 13 is empty): an ingest batch waits at most 5 s for its
-- keys' advisory locks. A holder that never lets go — a replica frozen or cut off in the middle
-- of its batch, an operator's open transaction — then costs the alerts sharing its keys a 503
-- (Alertmanager resends them), not the ingestion of this replica for as long as it lasts.
-- A batch holds its locks for milliseconds; a wait of 5 s is a stuck holder.
ALTER FUNCTION runbookd_lock_open_incidents(VARIADIC text[]) SET lock_timeout = '5s';
