-- pgsse schema: a commit-ordered event log, capture triggers, and the NOTIFY hint.
-- Idempotent: safe to apply on every deploy, by several instances at once (`pgsse migrate`) or with `psql -f`.

BEGIN;

-- Serializes concurrent migrations; CREATE ... IF NOT EXISTS alone races on the catalog.
SELECT pg_advisory_xact_lock(7083711516);

CREATE SCHEMA IF NOT EXISTS pgsse;

-- One row: schema version and the retention watermark (every id <= pruned_through may be gone).
CREATE TABLE IF NOT EXISTS pgsse.meta (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    schema_version integer NOT NULL,
    pruned_through bigint  NOT NULL DEFAULT 0
);
INSERT INTO pgsse.meta (schema_version) VALUES (1) ON CONFLICT (singleton) DO NOTHING;

CREATE SEQUENCE IF NOT EXISTS pgsse.event_id_seq AS bigint;

-- The log. Ids are taken from event_id_seq only while holding the ordering lock (see pgsse.append),
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

-- Staging rows for pgsse.publish(): deferred to commit like table captures. Unlogged because a row
-- never outlives its transaction (the commit-time trigger deletes it).
CREATE UNLOGGED TABLE IF NOT EXISTS pgsse.outbox (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel text  NOT NULL,
    event   text  NOT NULL,
    payload jsonb NOT NULL
);

CREATE OR REPLACE FUNCTION pgsse.valid_channel(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$'
$$;

CREATE OR REPLACE FUNCTION pgsse.valid_event(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$'
$$;

-- Must run at commit time (from a deferred trigger): the lock is held until the transaction ends, and
-- PostgreSQL releases locks only after the commit is visible, so the next id goes to a later commit.
CREATE OR REPLACE FUNCTION pgsse.append(p_channel text, p_event text, p_payload jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7083711517);
    new_id := nextval('pgsse.event_id_seq');
    INSERT INTO pgsse.events (id, channel, event, payload) VALUES (new_id, p_channel, p_event, p_payload);
    -- A constant payload lets PostgreSQL fold all of a transaction's notifications into one.
    PERFORM pg_notify('pgsse', '');
    RETURN new_id;
END
$$;

-- Trigger arguments: channel, insert event, update event, delete event.
CREATE OR REPLACE FUNCTION pgsse.capture() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pgsse.append(TG_ARGV[0], TG_ARGV[3], to_jsonb(OLD));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pgsse.append(TG_ARGV[0], TG_ARGV[2], to_jsonb(NEW));
    ELSE
        PERFORM pgsse.append(TG_ARGV[0], TG_ARGV[1], to_jsonb(NEW));
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION pgsse.flush_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgsse.append(NEW.channel, NEW.event, NEW.payload);
    DELETE FROM pgsse.outbox WHERE id = NEW.id;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS pgsse_flush ON pgsse.outbox;
CREATE CONSTRAINT TRIGGER pgsse_flush AFTER INSERT ON pgsse.outbox
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pgsse.flush_outbox();

CREATE OR REPLACE FUNCTION pgsse.create_channel(p_channel text, p_allow_clear boolean DEFAULT false)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF p_channel IS NULL OR NOT pgsse.valid_channel(p_channel) THEN
        RAISE EXCEPTION 'pgsse: invalid channel name %', quote_literal(coalesce(p_channel, 'NULL'))
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO pgsse.channels (name, allow_clear) VALUES (p_channel, p_allow_clear)
    ON CONFLICT (name) DO UPDATE SET allow_clear = EXCLUDED.allow_clear;
    RETURN p_channel;
END
$$;

-- Records an ad-hoc event; it gets its id, and is broadcast, when the calling transaction commits.
CREATE OR REPLACE FUNCTION pgsse.publish(p_channel text, p_event text, p_payload jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_channel IS NULL OR NOT pgsse.valid_channel(p_channel) THEN
        RAISE EXCEPTION 'pgsse: invalid channel name %', quote_literal(coalesce(p_channel, 'NULL'))
            USING ERRCODE = '22023';
    END IF;
    IF p_event IS NULL OR NOT pgsse.valid_event(p_event) THEN
        RAISE EXCEPTION 'pgsse: invalid event name %', quote_literal(coalesce(p_event, 'NULL'))
            USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgsse.channels WHERE name = p_channel) THEN
        INSERT INTO pgsse.channels (name) VALUES (p_channel) ON CONFLICT (name) DO NOTHING;
    END IF;
    INSERT INTO pgsse.outbox (channel, event, payload) VALUES (p_channel, p_event, coalesce(p_payload, 'null'));
END
$$;

-- Attaches the capture trigger to an existing table. Calling it again replaces the previous options.
CREATE OR REPLACE FUNCTION pgsse.publish_table(
    p_table        regclass,
    channel        text    DEFAULT NULL,
    operations     text[]  DEFAULT ARRAY['insert'],
    insert_event   text    DEFAULT 'insert',
    update_event   text    DEFAULT 'update',
    delete_event   text    DEFAULT 'delete',
    allow_clear    boolean DEFAULT false
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    ch  text := coalesce(channel, (SELECT c.relname FROM pg_class c WHERE c.oid = p_table));
    ops text[];
    op  text;
BEGIN
    IF NOT pgsse.valid_channel(ch) THEN
        RAISE EXCEPTION 'pgsse: invalid channel name %', quote_literal(ch) USING ERRCODE = '22023';
    END IF;
    IF operations IS NULL OR cardinality(operations) = 0 THEN
        RAISE EXCEPTION 'pgsse: operations must name at least one of insert, update, delete'
            USING ERRCODE = '22023';
    END IF;
    FOREACH op IN ARRAY operations LOOP
        IF lower(op) NOT IN ('insert', 'update', 'delete') THEN
            RAISE EXCEPTION 'pgsse: unknown operation % (expected insert, update or delete)', quote_literal(op)
                USING ERRCODE = '22023';
        END IF;
        IF NOT upper(op) = ANY (coalesce(ops, '{}')) THEN
            ops := array_append(ops, upper(op));
        END IF;
    END LOOP;
    IF NOT (pgsse.valid_event(insert_event) AND pgsse.valid_event(update_event)
            AND pgsse.valid_event(delete_event)) THEN
        RAISE EXCEPTION 'pgsse: invalid event name (letters, digits, _ . : - up to 64 characters)'
            USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM pgsse.channels c
               WHERE c.name = ch AND c.source_table IS NOT NULL AND c.source_table <> p_table) THEN
        RAISE EXCEPTION 'pgsse: channel % already publishes another table', quote_literal(ch)
            USING ERRCODE = '22023';
    END IF;

    EXECUTE format('DROP TRIGGER IF EXISTS pgsse_capture ON %s', p_table);
    EXECUTE format(
        'CREATE CONSTRAINT TRIGGER pgsse_capture AFTER %s ON %s DEFERRABLE INITIALLY DEFERRED '
        'FOR EACH ROW EXECUTE FUNCTION pgsse.capture(%L, %L, %L, %L)',
        array_to_string(ops, ' OR '), p_table, ch, insert_event, update_event, delete_event);

    DELETE FROM pgsse.channels WHERE source_table = p_table AND name <> ch;
    INSERT INTO pgsse.channels (name, source_table, allow_clear) VALUES (ch, p_table, allow_clear)
    ON CONFLICT (name) DO UPDATE SET source_table = EXCLUDED.source_table, allow_clear = EXCLUDED.allow_clear;
    RETURN ch;
END
$$;

CREATE OR REPLACE FUNCTION pgsse.unpublish_table(p_table regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS pgsse_capture ON %s', p_table);
    DELETE FROM pgsse.channels WHERE source_table = p_table;
END
$$;

COMMIT;
