-- pgsse schema: a commit-ordered event log, capture triggers, and the NOTIFY hint.
-- Idempotent: safe to apply on every deploy, by several instances at once (`pgsse migrate`) or with `psql -f`.

BEGIN;
SET LOCAL client_min_messages = warning;

-- Serializes concurrent migrations; CREATE ... IF NOT EXISTS alone races on the catalog.
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7083711516); END $$;

CREATE SCHEMA IF NOT EXISTS pgsse;

-- One row: schema version and the retention watermark (every id <= pruned_through may be gone).
CREATE TABLE IF NOT EXISTS pgsse.meta (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    schema_version integer NOT NULL,
    pruned_through bigint  NOT NULL DEFAULT 0
);
INSERT INTO pgsse.meta (schema_version) VALUES (3) ON CONFLICT (singleton) DO NOTHING;
UPDATE pgsse.meta SET schema_version = 3 WHERE schema_version < 3;

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

-- created_at -> createdAt; keys without an underscore are left alone.
CREATE OR REPLACE FUNCTION pgsse.camel_case(k text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN position('_' IN k) = 0 THEN k
           ELSE split_part(k, '_', 1) || (SELECT coalesce(string_agg(initcap(p), '' ORDER BY n), '')
                                          FROM unnest((string_to_array(k, '_'))[2:]) WITH ORDINALITY AS t(p, n))
           END
$$;

CREATE OR REPLACE FUNCTION pgsse.camel_keys(j jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_object_agg(pgsse.camel_case(key), value), '{}') FROM jsonb_each(j)
$$;

-- Trigger arguments: channel, insert event, update event, delete event, and 'camel' for camelCase keys.
-- A transaction that sets pgsse.suppress_capture = 'on' records no row events (clearing a channel does).
CREATE OR REPLACE FUNCTION pgsse.capture() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload jsonb;
    event   text;
BEGIN
    IF current_setting('pgsse.suppress_capture', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        payload := to_jsonb(OLD);
        event := TG_ARGV[3];
    ELSE
        payload := to_jsonb(NEW);
        event := CASE TG_OP WHEN 'UPDATE' THEN TG_ARGV[2] ELSE TG_ARGV[1] END;
    END IF;
    IF TG_NARGS > 4 AND TG_ARGV[4] = 'camel' THEN
        payload := pgsse.camel_keys(payload);
    END IF;
    PERFORM pgsse.append(TG_ARGV[0], event, payload);
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
-- Schema 1 had no camel_case parameter; an overload beside the new one would make every call ambiguous.
DROP FUNCTION IF EXISTS pgsse.publish_table(regclass, text, text[], text, text, text, boolean);
CREATE OR REPLACE FUNCTION pgsse.publish_table(
    p_table        regclass,
    channel        text    DEFAULT NULL,
    operations     text[]  DEFAULT ARRAY['insert'],
    insert_event   text    DEFAULT 'insert',
    update_event   text    DEFAULT 'update',
    delete_event   text    DEFAULT 'delete',
    allow_clear    boolean DEFAULT false,
    camel_case     boolean DEFAULT false
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
        'FOR EACH ROW EXECUTE FUNCTION pgsse.capture(%L, %L, %L, %L, %L)',
        array_to_string(ops, ' OR '), p_table, ch, insert_event, update_event, delete_event,
        CASE WHEN camel_case THEN 'camel' ELSE 'plain' END);

    DELETE FROM pgsse.channels WHERE source_table = p_table AND name <> ch;
    INSERT INTO pgsse.channels (name, source_table, allow_clear, camel_case)
    VALUES (ch, p_table, allow_clear, camel_case)
    ON CONFLICT (name) DO UPDATE SET source_table = EXCLUDED.source_table, allow_clear = EXCLUDED.allow_clear,
                                     camel_case = EXCLUDED.camel_case;
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

-- Reads for the gateway. Each channel is one range scan of events_channel_id, already in id order and
-- limited, then merged. Bitmap scans and sorts are ruled out: right after a burst of inserts, before
-- ANALYZE has seen it, the planner would otherwise collect and sort every row after the cursor per batch.
-- (The penalty those settings add to the plan's cost would then trigger JIT compilation: off as well.)
CREATE OR REPLACE FUNCTION pgsse.replay(p_after bigint, p_through bigint, p_channels text[], p_limit bigint)
RETURNS SETOF pgsse.events LANGUAGE sql STABLE
SET enable_bitmapscan = off SET enable_sort = off SET jit = off AS $$
    SELECT e.* FROM unnest(p_channels) AS c(name), LATERAL (
        SELECT * FROM pgsse.events ev
        WHERE ev.channel = c.name AND ev.id > p_after AND ev.id <= coalesce(p_through, 9223372036854775807)
        ORDER BY ev.id LIMIT p_limit) AS e
    ORDER BY e.id LIMIT p_limit
$$;

-- Every id at or below this may be missing from a stream on p_channels: the log-wide watermark (time
-- retention) or the highest of the channels' own (count retention).
CREATE OR REPLACE FUNCTION pgsse.watermark(p_channels text[]) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT greatest(m.pruned_through,
                    coalesce((SELECT max(c.pruned_through) FROM pgsse.channels c WHERE c.name = ANY (p_channels)), 0))
    FROM pgsse.meta m
$$;

CREATE OR REPLACE FUNCTION pgsse.history(p_channel text, p_before bigint, p_limit bigint)
RETURNS SETOF pgsse.events LANGUAGE sql STABLE
SET enable_bitmapscan = off SET enable_sort = off SET jit = off AS $$
    SELECT * FROM pgsse.events e WHERE e.channel = p_channel AND e.id < p_before ORDER BY e.id DESC LIMIT p_limit
$$;

-- Retention: deletes the oldest events, up to p_batch of them and only while they are older than
-- p_cutoff, and raises the watermark past them. Ids follow commit order, so what goes is always a prefix
-- of the log and "every id <= pruned_through may be gone" stays exact. Several gateways may call it at
-- once: one prunes, the others return 0.
CREATE OR REPLACE FUNCTION pgsse.prune(p_cutoff timestamptz, p_batch integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    ev      record;
    through bigint;
    deleted bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(7083711518) THEN
        RETURN 0;
    END IF;
    FOR ev IN SELECT e.id, e.created_at FROM pgsse.events e ORDER BY e.id LIMIT p_batch LOOP
        EXIT WHEN ev.created_at >= p_cutoff;
        through := ev.id;
    END LOOP;
    IF through IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM pgsse.events e WHERE e.id <= through;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    UPDATE pgsse.meta SET pruned_through = greatest(pruned_through, through);
    RETURN deleted;
END
$$;

-- Retention by count: each channel keeps its newest p_keep events. Deletes at most p_batch in all, each
-- channel's oldest first, and raises that channel's watermark past them in the same transaction. Shares
-- pgsse.prune's lock, so one gateway prunes at a time.
CREATE OR REPLACE FUNCTION pgsse.prune_channels(p_keep bigint, p_batch integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    ch      record;
    cutoff  bigint;
    through bigint;
    n       bigint;
    deleted bigint := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(7083711518) THEN
        RETURN 0;
    END IF;
    FOR ch IN SELECT c.name FROM pgsse.channels c ORDER BY c.name LOOP
        EXIT WHEN deleted >= p_batch;
        SELECT e.id INTO cutoff FROM pgsse.events e WHERE e.channel = ch.name ORDER BY e.id DESC OFFSET p_keep LIMIT 1;
        CONTINUE WHEN cutoff IS NULL;
        SELECT max(d.id) INTO through FROM (
            SELECT e.id FROM pgsse.events e WHERE e.channel = ch.name AND e.id <= cutoff
            ORDER BY e.id LIMIT p_batch - deleted) AS d;
        DELETE FROM pgsse.events e WHERE e.channel = ch.name AND e.id <= through;
        GET DIAGNOSTICS n = ROW_COUNT;
        deleted := deleted + n;
        UPDATE pgsse.channels SET pruned_through = greatest(pruned_through, through) WHERE name = ch.name;
    END LOOP;
    RETURN deleted;
END
$$;

-- Fires this transaction's pending captures now and returns the highest id issued before them, so the
-- caller's events are exactly the ones after it (ids are drawn only under the lock taken here). The lock
-- is held until the transaction ends: call this last, right before commit.
CREATE OR REPLACE FUNCTION pgsse.flush_pending() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    before bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7083711517);
    SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO before FROM pgsse.event_id_seq;
    SET CONSTRAINTS ALL IMMEDIATE;
    RETURN before;
END
$$;

-- The gateway's POST to a table channel: inserts the row that the object's keys describe (column names,
-- or their camelCase form on a camel_case channel) and returns its event.
CREATE OR REPLACE FUNCTION pgsse.insert_json(p_channel text, p_row jsonb,
                                             OUT event_id bigint, OUT event text, OUT payload jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    tbl     regclass;
    camel   boolean;
    unknown text[];
    cols    text;
    mapped  jsonb;
    new_row jsonb;
    before  bigint;
BEGIN
    SELECT c.source_table, c.camel_case INTO tbl, camel FROM pgsse.channels c WHERE c.name = p_channel;
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'pgsse: channel % publishes no table', quote_literal(p_channel) USING ERRCODE = 'P0002';
    END IF;
    IF jsonb_typeof(p_row) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'pgsse: the row must be a JSON object' USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(k.key ORDER BY k.key) FILTER (WHERE a.attname IS NULL),
           string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum),
           jsonb_object_agg(coalesce(a.attname, k.key), k.value)
      INTO unknown, cols, mapped
      FROM jsonb_each(p_row) k
      LEFT JOIN pg_attribute a
        ON a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
       AND (a.attname = k.key OR (camel AND pgsse.camel_case(a.attname) = k.key));
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown column%: %', CASE WHEN cardinality(unknown) > 1 THEN 's' ELSE '' END,
            array_to_string(unknown, ', ') USING ERRCODE = '42703';
    END IF;
    IF cols IS NULL THEN
        EXECUTE format('INSERT INTO %s AS t DEFAULT VALUES RETURNING to_jsonb(t.*)', tbl) INTO new_row;
    ELSE
        EXECUTE format('INSERT INTO %s AS t (%s) SELECT %s FROM jsonb_populate_record(NULL::%s, $1) '
                       'RETURNING to_jsonb(t.*)', tbl, cols, cols, tbl)
            USING mapped INTO new_row;
    END IF;
    before := pgsse.flush_pending();
    -- A table that does not capture inserts has no event; the caller still gets the row.
    SELECT e.id, e.event, e.payload INTO event_id, event, payload
      FROM pgsse.events e WHERE e.id > before AND e.channel = p_channel ORDER BY e.id LIMIT 1;
    IF event_id IS NULL THEN
        payload := CASE WHEN camel THEN pgsse.camel_keys(new_row) ELSE new_row END;
    END IF;
END
$$;

-- The gateway's POST to a channel without a table: pgsse.publish, returning the event's id.
CREATE OR REPLACE FUNCTION pgsse.publish_json(p_channel text, p_event text, p_payload jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    before bigint;
BEGIN
    PERFORM pgsse.publish(p_channel, p_event, p_payload);
    before := pgsse.flush_pending();
    RETURN (SELECT min(e.id) FROM pgsse.events e WHERE e.id > before AND e.channel = p_channel);
END
$$;

-- Empties a channel: deletes its table's rows (recording no row events) and its events, then records a
-- `clear` event. Refused unless the channel allows it or the caller passes p_force (the gateway's flag).
CREATE OR REPLACE FUNCTION pgsse.clear_channel(p_channel text, p_force boolean DEFAULT false,
                                               OUT event_id bigint, OUT payload jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    ch     pgsse.channels;
    before bigint;
BEGIN
    SELECT * INTO ch FROM pgsse.channels c WHERE c.name = p_channel;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgsse: unknown channel %', quote_literal(p_channel) USING ERRCODE = 'P0002';
    END IF;
    IF NOT (ch.allow_clear OR p_force) THEN
        RAISE EXCEPTION 'clearing is not enabled for channel %', p_channel USING ERRCODE = '42501';
    END IF;
    PERFORM set_config('pgsse.suppress_capture', 'on', true);
    IF ch.source_table IS NOT NULL THEN
        EXECUTE format('DELETE FROM %s', ch.source_table);
    END IF;
    DELETE FROM pgsse.events e WHERE e.channel = p_channel;
    payload := jsonb_build_object('clearedAt', to_jsonb(clock_timestamp()));
    PERFORM pgsse.publish(p_channel, 'clear', payload);
    before := pgsse.flush_pending();
    SELECT min(e.id) INTO event_id FROM pgsse.events e WHERE e.id > before AND e.channel = p_channel;
END
$$;

COMMIT;
