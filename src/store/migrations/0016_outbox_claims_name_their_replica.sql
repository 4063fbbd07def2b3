-- A notification claimed for delivery names the lease of the replica that claimed it, so
-- the claim of a replica that died (kill -9 mid-send) is given back as soon as its lease is
-- found dead, not when the claim runs out: a later page of the same incident, which waits
-- behind it to keep the channel's order, goes out at once.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
