-- pgsse schema 8. An update keeps the old row (projected) beside its payload, whatever old_values says:
-- a filtered stream tells from it whether the row entered or left the filter, and sends an insert or a
-- delete instead of the update. Idempotent; records itself in pgsse.migrations.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7083711516); END $$;

ALTER TABLE pgsse.staged ADD COLUMN IF NOT EXISTS old jsonb;
ALTER TABLE pgsse.events ADD COLUMN IF NOT EXISTS old jsonb;

UPDATE pgsse.meta SET schema_version = 8 WHERE schema_version < 8;
INSERT INTO pgsse.migrations (name) VALUES ('006_old_rows.sql') ON CONFLICT (name) DO NOTHING;

COMMIT;
