-- pgsse schema 7. Sequencing steps read pgsse.staged from a floor rather than from the index's start,
-- where, between VACUUMs, the index keeps the entries of every row already moved to the log: walking them
-- took most of a busy step's time. Idempotent; records itself in pgsse.migrations.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7083711516); END $$;

-- Every staged row numbered below `floor` has been moved to the log, and no transaction still to commit
-- can draw a number below it (pgsse.sequence raises it when it finds no writer in flight).
CREATE TABLE IF NOT EXISTS pgsse.staged_floor (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    floor     bigint  NOT NULL DEFAULT 0
);
INSERT INTO pgsse.staged_floor DEFAULT VALUES ON CONFLICT (singleton) DO NOTHING;

UPDATE pgsse.meta SET schema_version = 7 WHERE schema_version < 7;
INSERT INTO pgsse.migrations (name) VALUES ('005_staged_floor.sql') ON CONFLICT (name) DO NOTHING;

COMMIT;
