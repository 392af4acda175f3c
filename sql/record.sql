-- Records one numbered file as applied, as `pgsse migrate` does after each, in the file's own transaction:
--   psql -1 -v ON_ERROR_STOP=1 -v file=003_schema.sql -f sql/003_schema.sql -f sql/record.sql
-- The schema version is the file's number. A file recorded before is applied again harmlessly (each is
-- idempotent) and keeps its record.
WITH recorded AS (
    INSERT INTO pgsse.migrations (name) VALUES (:'file') ON CONFLICT (name) DO NOTHING RETURNING name
)
INSERT INTO pgsse.meta (schema_version) SELECT substr(name, 1, 3)::integer FROM recorded
ON CONFLICT (singleton) DO UPDATE SET schema_version = greatest(pgsse.meta.schema_version, excluded.schema_version);
