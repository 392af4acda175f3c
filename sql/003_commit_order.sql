-- pgsse schema 5: the lock that orders commits is a table of pgsse's own rather than an advisory key. Any
-- role that may connect can take an advisory lock, and one that held the ordering key froze every
-- capturing commit; locking this table takes a privilege on it, which nobody but its owner has.
-- Idempotent; records itself in pgsse.migrations.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7083711516); END $$;

-- No rows: only ever locked (EXCLUSIVE, by pgsse.append and pgsse.flush_pending, as its owner).
CREATE TABLE IF NOT EXISTS pgsse.commit_order ();
REVOKE ALL ON pgsse.commit_order FROM PUBLIC;

UPDATE pgsse.meta SET schema_version = 5 WHERE schema_version < 5;
INSERT INTO pgsse.migrations (name) VALUES ('003_commit_order.sql') ON CONFLICT (name) DO NOTHING;

COMMIT;
