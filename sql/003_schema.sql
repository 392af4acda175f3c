-- pgsse schema 3: the commit-ordered event log, the channel registry and the outbox for pgsse.publish.
-- Idempotent, since schema-3 installs made before migrations were recorded apply it again once.

CREATE SCHEMA IF NOT EXISTS pgsse;

-- The numbered files applied so far; sql/functions/ is not recorded (every migrate applies it again).
CREATE TABLE IF NOT EXISTS pgsse.migrations (
    name       text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- One row: schema version and the retention watermark (every id <= pruned_through may be gone).
CREATE TABLE IF NOT EXISTS pgsse.meta (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    schema_version integer NOT NULL,
    pruned_through bigint  NOT NULL DEFAULT 0
);

CREATE SEQUENCE IF NOT EXISTS pgsse.event_id_seq AS bigint;

-- The log. Ids are taken from event_id_seq only while holding the ordering lock (see pgsse.sequence_batch),
-- so they increase in commit order and "everything after id N" is exact.
CREATE TABLE IF NOT EXISTS pgsse.events (
    id         bigint      PRIMARY KEY,
    channel    text        NOT NULL,
    event      text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS events_channel_id ON pgsse.events (channel, id);

-- Known channels. A stream for a channel not listed here is refused (400), so typos fail loudly.
CREATE TABLE IF NOT EXISTS pgsse.channels (
    name         text PRIMARY KEY,
    source_table regclass,
    allow_clear  boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- Schema 2: table channels may publish their rows with camelCase keys (created_at -> createdAt).
ALTER TABLE pgsse.channels ADD COLUMN IF NOT EXISTS camel_case boolean NOT NULL DEFAULT false;
-- Schema 3: retention by count prunes each channel on its own, so each keeps its own watermark.
ALTER TABLE pgsse.channels ADD COLUMN IF NOT EXISTS pruned_through bigint NOT NULL DEFAULT 0;

-- Staging rows for pgsse.publish(): deferred to commit like table captures. Unlogged because a row
-- never outlives its transaction (the commit-time trigger deletes it).
CREATE UNLOGGED TABLE IF NOT EXISTS pgsse.outbox (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel text  NOT NULL,
    event   text  NOT NULL,
    payload jsonb NOT NULL
);
