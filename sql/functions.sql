-- pgsse functions, roles and privileges: applied again by every `pgsse migrate`, after the numbered files.
-- Every function that a role can call pins search_path; functions that writers' triggers and the gateway
-- run on the log are SECURITY DEFINER, and nothing here is granted to PUBLIC. Three helpers run only
-- inside those, once per captured row (stage, project, published_channel): they qualify every name
-- instead, since a SET per call cost 19% of a 50,000-row insert.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7083711516); END $$;

-- Roles are cluster-wide: one pair serves every database of the cluster that has pgsse installed, and a
-- login granted pgsse_gateway may act as a gateway on each of them.
DO $$
DECLARE
    missing text[];
    r       text;
BEGIN
    SELECT array_agg(n ORDER BY n) INTO missing
      FROM unnest(ARRAY['pgsse_gateway', 'pgsse_publisher']) AS n
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = n);
    IF missing IS NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
        RAISE EXCEPTION 'pgsse: role % cannot create the roles % (it lacks CREATEROLE)',
            current_user, array_to_string(missing, ', ')
            USING ERRCODE = '42501',
                  HINT = format('have an operator run: %s then run pgsse migrate again',
                                (SELECT string_agg(format('CREATE ROLE %I NOLOGIN;', m), ' ') FROM unnest(missing) m));
    END IF;
    FOREACH r IN ARRAY missing LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- another database's migrate created it just now
        END;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pgsse.valid_channel(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$'
$$;

CREATE OR REPLACE FUNCTION pgsse.valid_event(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$'
$$;

-- Records one event of the committing transaction in pgsse.staged; a sequencing step gives it its id later.
-- Runs at commit time (from deferred triggers), so the numbers it draws follow commit order between
-- transactions that do not overlap. Writers take no lock another writer waits for: the doorbell's is
-- skipped when held. Only the capture functions call it, as the owner; like pgsse.project it qualifies
-- every name rather than pin search_path per row.
DO $$
BEGIN
    -- Before schema 8 it took no old row (and before schema 6 returned void).
    DROP FUNCTION IF EXISTS pgsse.stage(text, text, jsonb);
END
$$;

CREATE OR REPLACE FUNCTION pgsse.stage(p_channel text, p_event text, p_payload jsonb, p_old jsonb DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    rang boolean;
BEGIN
    -- One statement: a small write transaction pays PostgreSQL's set-up of every statement and expression
    -- it runs, once per transaction, and that set-up was most of capture's cost. `tx` is the first number
    -- the transaction drew, kept in pgsse.staging as "xid:tx". The doorbell is tried after this
    -- statement's lock on pgsse.staged is taken: a gateway that finds no writer holding that lock has seen
    -- every staged row of a writer that skipped the doorbell (pgsse.sequence's in_flight).
    INSERT INTO pgsse.staged (tx, seq, txid, channel, event, payload, old)
    SELECT CASE WHEN pg_catalog.split_part(k.mark, ':', 1) OPERATOR(pg_catalog.=) k.xid::pg_catalog.text
                THEN pg_catalog.split_part(k.mark, ':', 2)
                ELSE pg_catalog.split_part(pg_catalog.set_config('pgsse.staging',
                         k.xid::pg_catalog.text OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) k.seq::pg_catalog.text,
                         true), ':', 2) END::pg_catalog.int8,
           k.seq, k.xid, p_channel, p_event, p_payload, p_old
      FROM (SELECT pg_catalog.pg_current_xact_id() AS xid, pg_catalog.nextval('pgsse.staged_seq') AS seq,
                   pg_catalog.current_setting('pgsse.staging', true) AS mark) k
    RETURNING (SELECT d.armed FROM pgsse.doorbell d WHERE d.armed FOR NO KEY UPDATE SKIP LOCKED) INTO rang;
    IF rang THEN
        -- A constant payload lets PostgreSQL fold all of a transaction's notifications into one.
        PERFORM pg_catalog.pg_notify('pgsse', '');
    END IF;
    RETURN rang;
END
$$;

-- Gives the staged events of committed transactions the next ids, about p_limit of them and whole
-- transactions only, in the order their transactions drew their first number. The caller holds
-- pgsse.commit_order: batches become visible one after another, so ids increase along the log in the
-- order events become visible. Wakes the gateways once per batch.
CREATE OR REPLACE FUNCTION pgsse.sequence_batch(p_limit integer) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    moved bigint;
    low   bigint := (SELECT f.floor FROM pgsse.staged_floor f);
BEGIN
    WITH cut AS (SELECT max(h.tx) AS tx
                   FROM (SELECT s.tx FROM pgsse.staged s WHERE s.tx >= low ORDER BY s.tx, s.seq LIMIT p_limit) h),
    taken AS (DELETE FROM pgsse.staged s USING cut WHERE s.tx >= low AND s.tx <= cut.tx RETURNING s.*)
    INSERT INTO pgsse.events (id, channel, event, payload, created_at, txid, old)
    SELECT nextval('pgsse.event_id_seq'), t.channel, t.event, t.payload, t.created_at, t.txid, t.old
      FROM (SELECT * FROM taken ORDER BY tx, seq) t;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved > 0 THEN
        PERFORM pg_notify('pgsse', '');
    END IF;
    RETURN moved;
END
$$;

-- The gateway's sequencing step: one batch, or moved = -1 at once when another session is sequencing.
-- in_flight: a writer was still committing when the batch was read, and may have skipped the doorbell
-- because another writer held it; ask again soon. p_listening is whether the caller is woken by NOTIFY
-- or reads on the clock: writers ring only while it is.
CREATE OR REPLACE FUNCTION pgsse.sequence(p_limit integer, p_listening boolean, OUT moved bigint, OUT in_flight boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    drawn bigint;
BEGIN
    BEGIN
        LOCK TABLE pgsse.commit_order IN EXCLUSIVE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        moved := -1;
        in_flight := false;
        RETURN;
    END;
    -- Before the batch's snapshot: pgsse.stage holds a ROW EXCLUSIVE lock on pgsse.staged from staging to
    -- the end of its commit, which SHARE conflicts with. Held for no longer than this block (its
    -- subtransaction ends either way), so a writer waits a few microseconds at most; pg_locks, which
    -- answered the same, cost a third of a millisecond per step.
    -- With no writer in flight, every number drawn so far belongs to a transaction that has ended, and
    -- every number drawn later is higher: once the batch has taken all it sees, pgsse.staged_floor may rise.
    in_flight := false;
    BEGIN
        LOCK TABLE pgsse.staged IN SHARE MODE NOWAIT;
        -- pgsse.staged_seq has CACHE 1: a session holds no numbers drawn but not yet used.
        drawn := (SELECT CASE WHEN q.is_called THEN q.last_value ELSE q.last_value - 1 END FROM pgsse.staged_seq q);
        RAISE EXCEPTION USING ERRCODE = 'PGS01';
    EXCEPTION
        WHEN lock_not_available THEN in_flight := p_listening;
        WHEN SQLSTATE 'PGS01' THEN NULL;
    END;
    -- A writer that read the doorbell unarmed rang for nobody; once armed (at this commit), ask again.
    UPDATE pgsse.doorbell b SET armed = p_listening
     WHERE b.singleton IN (SELECT d.singleton FROM pgsse.doorbell d WHERE d.armed <> p_listening
                             FOR NO KEY UPDATE SKIP LOCKED);
    IF FOUND AND p_listening THEN
        in_flight := true;
    END IF;
    moved := pgsse.sequence_batch(p_limit);
    IF drawn IS NOT NULL AND moved < p_limit THEN
        UPDATE pgsse.staged_floor f SET floor = drawn + 1 WHERE f.floor < drawn + 1;
    END IF;
END
$$;

-- created_at -> createdAt; keys without an underscore are left alone.
CREATE OR REPLACE FUNCTION pgsse.camel_case(k text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT CASE WHEN position('_' IN k) = 0 THEN k
           ELSE split_part(k, '_', 1) || (SELECT coalesce(string_agg(initcap(p), '' ORDER BY n), '')
                                          FROM unnest((string_to_array(k, '_'))[2:]) WITH ORDINALITY AS t(p, n))
           END
$$;

CREATE OR REPLACE FUNCTION pgsse.camel_keys(j jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT coalesce(jsonb_object_agg(pgsse.camel_case(key), value), '{}') FROM jsonb_each(j)
$$;

-- A row as the channel publishes it: only the published columns, camelCased if asked. Private columns
-- are dropped here, before anything reaches the log. This and published_channel run per captured row:
-- they qualify every name instead of pinning search_path, whose save and restore on each call would
-- double capture's cost.
CREATE OR REPLACE FUNCTION pgsse.project(ch pgsse.channels, r jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    projected jsonb := r;
BEGIN
    IF ch.columns IS NOT NULL THEN
        SELECT coalesce(pg_catalog.jsonb_object_agg(k.key, k.value), '{}'::jsonb) INTO projected
          FROM pg_catalog.jsonb_each(r) AS k
         WHERE k.key OPERATOR(pg_catalog.=) ANY (ch.columns);
    ELSIF ch.exclude_columns IS NOT NULL THEN
        projected := r OPERATOR(pg_catalog.-) ch.exclude_columns;
    END IF;
    IF ch.camel_case THEN
        projected := pgsse.camel_keys(projected);
    END IF;
    RETURN projected;
END
$$;

-- The channel a capture trigger may write: the one that publishes the very table it fires on. A copy of
-- the trigger on any other table (even with the channel's name as argument) records nothing.
CREATE OR REPLACE FUNCTION pgsse.published_channel(p_channel text, p_table oid) RETURNS pgsse.channels
LANGUAGE plpgsql STABLE AS $$
DECLARE
    ch pgsse.channels;
BEGIN
    SELECT * INTO ch FROM pgsse.channels c
     WHERE c.name OPERATOR(pg_catalog.=) p_channel AND c.source_table OPERATOR(pg_catalog.=) p_table::pg_catalog.regclass;
    IF NOT FOUND THEN
        RAISE WARNING 'pgsse: table % is not published as channel %; its change is not recorded',
            p_table::pg_catalog.regclass, pg_catalog.quote_literal(p_channel);
        RETURN NULL;
    END IF;
    RETURN ch;
END
$$;

-- The arguments of a published table's row trigger: everything a capture needs, so that a captured row
-- costs no lookup. The table's oid makes a copy of the trigger on any other table record nothing.
CREATE OR REPLACE FUNCTION pgsse.capture_args(ch pgsse.channels) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT ARRAY[ch.name, ch.source_table::oid::text, ch.insert_event, ch.update_event, ch.delete_event,
                 ch.old_values::text, ch.camel_case::text, coalesce(ch.columns::text, ''),
                 coalesce(ch.exclude_columns::text, '')]
$$;

-- The row trigger of a published table, with pgsse.capture_args as its arguments. Runs as its owner, so
-- writers of the table need no grant on schema pgsse. A transaction that sets pgsse.suppress_capture = 'on'
-- records no row events (clearing a channel does).
CREATE OR REPLACE FUNCTION pgsse.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch       pgsse.channels;
    new_data jsonb;
    old_data jsonb;
    rang     boolean;
BEGIN
    IF current_setting('pgsse.suppress_capture', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_NARGS <> 9 OR TG_ARGV[1] <> TG_RELID::oid::text THEN
        RAISE WARNING 'pgsse: this trigger on % is not the one pgsse.publish_table installed for it; its change is not recorded',
            TG_RELID::regclass USING HINT = 'publish the table again, or run pgsse migrate (after a restore, say)';
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_data := to_jsonb(NEW);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_data := to_jsonb(OLD);
    END IF;
    IF TG_ARGV[6] = 'true' OR TG_ARGV[7] <> '' OR TG_ARGV[8] <> '' THEN
        ch.camel_case := TG_ARGV[6]::boolean;
        ch.columns := nullif(TG_ARGV[7], '')::text[];
        ch.exclude_columns := nullif(TG_ARGV[8], '')::text[];
        IF new_data IS NOT NULL THEN
            new_data := pgsse.project(ch, new_data);
        END IF;
        IF old_data IS NOT NULL THEN
            old_data := pgsse.project(ch, old_data);
        END IF;
    END IF;
    -- An assignment, not PERFORM: it calls pgsse.stage as an expression, without a query around it.
    IF TG_OP = 'INSERT' THEN
        rang := pgsse.stage(TG_ARGV[0], TG_ARGV[2], new_data);
    ELSIF TG_OP = 'DELETE' THEN
        rang := pgsse.stage(TG_ARGV[0], TG_ARGV[4], old_data);
    ELSIF new_data IS DISTINCT FROM old_data THEN
        rang := pgsse.stage(TG_ARGV[0], TG_ARGV[3],
            CASE WHEN TG_ARGV[5] = 'true' THEN jsonb_build_object('new', new_data, 'old', old_data) ELSE new_data END,
            old_data);
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE of a published table: one event, so clients drop rows that no longer exist. Statement
-- triggers cannot be deferred, so it goes through the outbox, which is.
CREATE OR REPLACE FUNCTION pgsse.capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch pgsse.channels;
BEGIN
    IF current_setting('pgsse.suppress_capture', true) = 'on' THEN
        RETURN NULL;
    END IF;
    ch := pgsse.published_channel(TG_ARGV[0], TG_RELID);
    IF ch.name IS NOT NULL THEN
        INSERT INTO pgsse.outbox (channel, event, payload)
        VALUES (ch.name, ch.truncate_event, jsonb_build_object('truncatedAt', to_jsonb(clock_timestamp())));
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION pgsse.flush_outbox() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    PERFORM pgsse.stage(NEW.channel, NEW.event, NEW.payload);
    DELETE FROM pgsse.outbox WHERE id = NEW.id;
    RETURN NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                    WHERE tgrelid = 'pgsse.outbox'::regclass AND tgname = 'pgsse_flush') THEN
        CREATE CONSTRAINT TRIGGER pgsse_flush AFTER INSERT ON pgsse.outbox
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pgsse.flush_outbox();
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgsse.create_channel(p_channel text, p_allow_clear boolean DEFAULT false)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
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
-- Granted to pgsse_publisher.
CREATE OR REPLACE FUNCTION pgsse.publish(p_channel text, p_event text, p_payload jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
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

-- Removes a table's capture triggers, if any (checked first: DROP TRIGGER IF EXISTS would print a NOTICE).
CREATE OR REPLACE FUNCTION pgsse.drop_capture(p_table regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    trigger_name text;
BEGIN
    FOR trigger_name IN SELECT t.tgname FROM pg_trigger t
                         WHERE t.tgrelid = p_table AND t.tgname IN ('pgsse_capture', 'pgsse_truncate') LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, p_table);
    END LOOP;
END
$$;

-- (Re)creates a table channel's triggers from its pgsse.channels row.
CREATE OR REPLACE FUNCTION pgsse.install_capture(ch pgsse.channels) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    PERFORM pgsse.drop_capture(ch.source_table);
    EXECUTE format(
        'CREATE CONSTRAINT TRIGGER pgsse_capture AFTER %s ON %s DEFERRABLE INITIALLY DEFERRED '
        'FOR EACH ROW EXECUTE FUNCTION pgsse.capture(%s)',
        array_to_string(ch.operations, ' OR '), ch.source_table,
        (SELECT string_agg(quote_literal(a), ', ' ORDER BY i) FROM unnest(pgsse.capture_args(ch)) WITH ORDINALITY AS u(a, i)));
    EXECUTE format('CREATE TRIGGER pgsse_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION pgsse.capture_truncate(%L)', ch.source_table, ch.name);
END
$$;

-- Names from p_names that are not columns of p_table, in the order given.
CREATE OR REPLACE FUNCTION pgsse.unknown_columns(p_table regclass, p_names text[]) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT array_agg(n ORDER BY i) FROM unnest(p_names) WITH ORDINALITY AS u(n, i)
     WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = p_table AND a.attname = u.n AND a.attnum > 0 AND NOT a.attisdropped)
$$;

-- Attaches the capture triggers to an existing table. Calling it again replaces the previous options.
-- Schema 1 had no camel_case parameter, schema 3 no column options; an overload beside the new one would
-- make every call ambiguous.
DROP FUNCTION IF EXISTS pgsse.publish_table(regclass, text, text[], text, text, text, boolean);
DROP FUNCTION IF EXISTS pgsse.publish_table(regclass, text, text[], text, text, text, boolean, boolean);
DROP FUNCTION IF EXISTS pgsse.publish_table(regclass, text, text[], text, text, text, boolean, boolean, text[],
                                            text[], boolean, text);
CREATE OR REPLACE FUNCTION pgsse.publish_table(
    p_table         regclass,
    channel         text    DEFAULT NULL,
    operations      text[]  DEFAULT ARRAY['insert'],
    insert_event    text    DEFAULT 'insert',
    update_event    text    DEFAULT 'update',
    delete_event    text    DEFAULT 'delete',
    allow_clear     boolean DEFAULT false,
    camel_case      boolean DEFAULT false,
    columns         text[]  DEFAULT NULL,
    exclude_columns text[]  DEFAULT NULL,
    old_values      boolean DEFAULT false,
    truncate_event  text    DEFAULT 'truncate',
    writable        boolean DEFAULT false,
    writable_columns text[] DEFAULT NULL
) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch      text := coalesce(channel, (SELECT c.relname FROM pg_class c WHERE c.oid = p_table));
    ops     text[];
    op      text;
    unknown text[];
    rec     pgsse.channels;
BEGIN
    IF NOT pg_catalog.has_table_privilege(p_table, 'TRIGGER') THEN
        RAISE EXCEPTION 'pgsse: role % lacks the TRIGGER privilege on table %', current_user, p_table
            USING ERRCODE = '42501', HINT = 'run publish_table as the table''s owner, or grant trigger on it';
    END IF;
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
            AND pgsse.valid_event(delete_event) AND pgsse.valid_event(truncate_event)) THEN
        RAISE EXCEPTION 'pgsse: invalid event name (letters, digits, _ . : - up to 64 characters)'
            USING ERRCODE = '22023';
    END IF;
    IF columns IS NOT NULL AND exclude_columns IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: give columns or exclude_columns, not both' USING ERRCODE = '22023';
    END IF;
    unknown := pgsse.unknown_columns(p_table, coalesce(columns, exclude_columns) || writable_columns);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: table % has no column %', p_table, array_to_string(unknown, ', ')
            USING ERRCODE = '42703';
    END IF;
    IF EXISTS (SELECT 1 FROM pgsse.channels c
               WHERE c.name = ch AND c.source_table IS NOT NULL AND c.source_table <> p_table) THEN
        RAISE EXCEPTION 'pgsse: channel % already publishes another table', quote_literal(ch)
            USING ERRCODE = '22023';
    END IF;

    DELETE FROM pgsse.channels WHERE source_table = p_table AND name <> ch;
    INSERT INTO pgsse.channels AS c (name, source_table, allow_clear, camel_case, operations, insert_event,
                                     update_event, delete_event, truncate_event, columns, exclude_columns,
                                     old_values, writable, writable_columns)
    VALUES (ch, p_table, allow_clear, camel_case, ops, insert_event, update_event, delete_event, truncate_event,
            columns, exclude_columns, old_values, writable, writable_columns)
    ON CONFLICT (name) DO UPDATE
       SET source_table = EXCLUDED.source_table, allow_clear = EXCLUDED.allow_clear,
           camel_case = EXCLUDED.camel_case, operations = EXCLUDED.operations,
           insert_event = EXCLUDED.insert_event, update_event = EXCLUDED.update_event,
           delete_event = EXCLUDED.delete_event, truncate_event = EXCLUDED.truncate_event,
           columns = EXCLUDED.columns, exclude_columns = EXCLUDED.exclude_columns,
           old_values = EXCLUDED.old_values, writable = EXCLUDED.writable,
           writable_columns = EXCLUDED.writable_columns
    RETURNING * INTO rec;
    PERFORM pgsse.install_capture(rec);
    RETURN ch;
END
$$;

CREATE OR REPLACE FUNCTION pgsse.unpublish_table(p_table regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    PERFORM pgsse.drop_capture(p_table);
    DELETE FROM pgsse.channels WHERE source_table = p_table;
END
$$;

-- Reads for the gateway. Each channel is one range scan of events_channel_id, already in id order and
-- limited, then merged. Bitmap scans and sorts are ruled out: right after a burst of inserts, before
-- ANALYZE has seen it, the planner would otherwise collect and sort every row after the cursor per batch.
-- (The penalty those settings add to the plan's cost would then trigger JIT compilation: off as well.)
CREATE OR REPLACE FUNCTION pgsse.replay(p_after bigint, p_through bigint, p_channels text[], p_limit bigint)
RETURNS SETOF pgsse.events LANGUAGE sql STABLE
SET enable_bitmapscan = off SET enable_sort = off SET jit = off SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT e.* FROM unnest(p_channels) AS c(name), LATERAL (
        SELECT * FROM pgsse.events ev
        WHERE ev.channel = c.name AND ev.id > p_after AND ev.id <= coalesce(p_through, 9223372036854775807)
        ORDER BY ev.id LIMIT p_limit) AS e
    ORDER BY e.id LIMIT p_limit
$$;

-- The columns a snapshot may filter and order on: the published ones, under the names events carry them.
CREATE OR REPLACE FUNCTION pgsse.snapshot_columns(ch pgsse.channels, OUT key text, OUT col name, OUT typ text)
RETURNS SETOF record LANGUAGE sql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT CASE WHEN ch.camel_case THEN pgsse.camel_case(a.attname) ELSE a.attname::text END, a.attname,
           format_type(a.atttypid, a.atttypmod)
      FROM pg_attribute a
     WHERE a.attrelid = ch.source_table AND a.attnum > 0 AND NOT a.attisdropped
       AND (ch.columns IS NULL OR a.attname = ANY (ch.columns))
       AND (ch.exclude_columns IS NULL OR NOT a.attname = ANY (ch.exclude_columns))
     ORDER BY a.attnum
$$;

-- The FROM, WHERE and ORDER BY of a snapshot of table channel ch. p_filters: [{"key", "op", "value"}]
-- ("value" a list for "in"), p_order: [{"key", "desc"}]; keys name published columns. The request's
-- values stay in p_filters, which the query reads as its parameter $1, each cast to its column's type so
-- that the table's own indexes serve the filter; only catalog names are written into the text.
CREATE OR REPLACE FUNCTION pgsse.snapshot_query(ch pgsse.channels, p_filters jsonb, p_order jsonb) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    conds text[] := '{}';
    ord   text[] := '{}';
    f     record;
    c     record;
    op    text;
BEGIN
    IF ch.source_table IS NULL THEN
        RAISE EXCEPTION 'pgsse: channel % has no table, so there are no rows to snapshot', quote_literal(ch.name)
            USING ERRCODE = '22023', HINT = 'snapshot=true is for channels made by pgsse.publish_table';
    END IF;
    FOR f IN SELECT e.value AS v, e.ordinality - 1 AS n FROM jsonb_array_elements(p_filters) WITH ORDINALITY AS e
             UNION ALL
             SELECT e.value, NULL FROM jsonb_array_elements(p_order) AS e LOOP
        SELECT * INTO c FROM pgsse.snapshot_columns(ch) s WHERE s.key = f.v->>'key';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'pgsse: % is not a published column of channel %', quote_literal(f.v->>'key'),
                quote_literal(ch.name) USING ERRCODE = '42703',
                HINT = 'its columns: ' || (SELECT string_agg(s.key, ', ') FROM pgsse.snapshot_columns(ch) s);
        END IF;
        IF f.n IS NULL THEN
            ord := ord || format('t.%I %s', c.col, CASE WHEN (f.v->>'desc')::boolean THEN 'DESC' ELSE 'ASC' END);
            CONTINUE;
        END IF;
        op := CASE f.v->>'op' WHEN 'eq' THEN '=' WHEN 'neq' THEN '<>' WHEN 'lt' THEN '<' WHEN 'lte' THEN '<='
                              WHEN 'gt' THEN '>' WHEN 'gte' THEN '>=' END;
        conds := conds || CASE
            WHEN f.v->>'op' = 'is' THEN
                format('t.%I IS %s', c.col, CASE f.v->>'value' WHEN 'true' THEN 'TRUE' WHEN 'false' THEN 'FALSE' ELSE 'NULL' END)
            WHEN f.v->>'op' = 'in' THEN
                format('t.%I = ANY (ARRAY(SELECT jsonb_array_elements_text($1->%s->''value''))::%s[])', c.col, f.n, c.typ)
            WHEN op IS NOT NULL THEN format('t.%I %s ($1->%s->>''value'')::%s', c.col, op, f.n, c.typ)
        END;
        IF conds[cardinality(conds)] IS NULL THEN
            RAISE EXCEPTION 'pgsse: unknown filter operator %', quote_literal(f.v->>'op') USING ERRCODE = '22023';
        END IF;
    END LOOP;
    RETURN format('FROM %s t', ch.source_table)
        || CASE WHEN cardinality(conds) > 0 THEN ' WHERE ' || array_to_string(conds, ' AND ') ELSE '' END
        || CASE WHEN cardinality(ord) > 0 THEN ' ORDER BY ' || array_to_string(ord, ', ') ELSE '' END;
END
$$;

-- The current rows of table channel p_channel as its events carry them (projected), at most p_limit.
-- The gateway's role need not read the table: this runs as pgsse's owner and returns published columns only.
CREATE OR REPLACE FUNCTION pgsse.snapshot(p_channel text, p_filters jsonb, p_order jsonb, p_limit bigint)
RETURNS SETOF jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch pgsse.channels;
BEGIN
    SELECT * INTO ch FROM pgsse.channels c WHERE c.name = p_channel;
    RETURN QUERY EXECUTE 'SELECT pgsse.project($2, to_jsonb(t)) ' || pgsse.snapshot_query(ch, p_filters, p_order)
        || ' LIMIT $3' USING p_filters, ch, p_limit;
END
$$;

-- How many rows pgsse.snapshot would return, counting no further than p_cap; refuses what it would refuse.
CREATE OR REPLACE FUNCTION pgsse.snapshot_count(p_channel text, p_filters jsonb, p_order jsonb, p_cap bigint)
RETURNS bigint LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch pgsse.channels;
    n  bigint;
BEGIN
    SELECT * INTO ch FROM pgsse.channels c WHERE c.name = p_channel;
    PERFORM pgsse.snapshot_query(ch, p_filters, p_order);
    EXECUTE 'SELECT count(*) FROM (SELECT 1 ' || pgsse.snapshot_query(ch, p_filters, '[]') || ' LIMIT $2) s'
        INTO n USING p_filters, p_cap;
    RETURN n;
END
$$;

-- Where a stream that starts with a snapshot goes on, read in the snapshot's own transaction: after the
-- newest event in the log (head), skipping the events of the transactions in pending. Those committed
-- before the snapshot, so it holds their changes, but their events were still staged: they will come
-- after head.
CREATE OR REPLACE FUNCTION pgsse.snapshot_seam(p_channels text[], OUT head bigint, OUT pending bigint[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT coalesce((SELECT max(e.id) FROM pgsse.events e
                      WHERE e.id <= (SELECT CASE WHEN q.is_called THEN q.last_value ELSE q.last_value - 1 END
                                       FROM pgsse.event_id_seq q)), 0),
           ARRAY(SELECT DISTINCT s.txid::text::bigint FROM pgsse.staged s WHERE s.channel = ANY (p_channels))
$$;

-- Every id at or below this may be missing from a stream on p_channels: the log-wide watermark (time
-- retention) or the highest of the channels' own (count retention).
CREATE OR REPLACE FUNCTION pgsse.watermark(p_channels text[]) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT greatest(m.pruned_through,
                    coalesce((SELECT max(c.pruned_through) FROM pgsse.channels c WHERE c.name = ANY (p_channels)), 0))
    FROM pgsse.meta m
$$;

CREATE OR REPLACE FUNCTION pgsse.history(p_channel text, p_before bigint, p_limit bigint)
RETURNS SETOF pgsse.events LANGUAGE sql STABLE
SET enable_bitmapscan = off SET enable_sort = off SET jit = off SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT * FROM pgsse.events e WHERE e.channel = p_channel AND e.id < p_before ORDER BY e.id DESC LIMIT p_limit
$$;

-- Retention: deletes the oldest events, up to p_batch of them and only while they are older than
-- p_cutoff, and raises the watermark past them. Ids follow commit order, so what goes is always a prefix
-- of the log and "every id <= pruned_through may be gone" stays exact. Several gateways may call it at
-- once: one prunes, the others return 0.
CREATE OR REPLACE FUNCTION pgsse.prune(p_cutoff timestamptz, p_batch integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ev      record;
    through bigint;
    deleted bigint;
BEGIN
    -- One gateway prunes at a time; the lock is the meta row's, which no role but the owner may take.
    PERFORM 1 FROM pgsse.meta FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch      record;
    cutoff  bigint;
    through bigint;
    n       bigint;
    deleted bigint := 0;
BEGIN
    -- One gateway prunes at a time; the lock is the meta row's, which no role but the owner may take.
    PERFORM 1 FROM pgsse.meta FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
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

-- Events committed but not yet in the log, and the age in seconds of the oldest (NULL when there is none).
CREATE OR REPLACE FUNCTION pgsse.backlog(OUT pending bigint, OUT oldest_seconds float8)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT count(*), extract(epoch FROM clock_timestamp() - min(s.created_at))::float8 FROM pgsse.staged s
$$;

-- Schema 5's write entry points answered with the event's id inside the writing transaction, under the
-- ordering lock; their replacements below return where to find the event once it is sequenced.
DROP FUNCTION IF EXISTS pgsse.inserted_event(text, jsonb);
DROP FUNCTION IF EXISTS pgsse.insert_json(text, jsonb);
DROP FUNCTION IF EXISTS pgsse.publish_json(text, text, jsonb);
DROP FUNCTION IF EXISTS pgsse.record_clear(text);
DROP FUNCTION IF EXISTS pgsse.clear_channel(text, boolean);
DROP FUNCTION IF EXISTS pgsse.flush_pending();
DROP FUNCTION IF EXISTS pgsse.append(text, text, jsonb);

-- The highest id handed out so far: an event that the calling transaction records gets a higher one.
CREATE OR REPLACE FUNCTION pgsse.issued_head() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END FROM pgsse.event_id_seq s
$$;

-- The first event on p_channel that transaction p_txid recorded, once it is in the log (its id is above
-- p_after): the gateway asks after its own write commits, to answer with the event's id. Runs the
-- sequencing step itself, after the one under way if any, rather than wait for a gateway's next.
CREATE OR REPLACE FUNCTION pgsse.sequenced(p_txid xid8, p_after bigint, p_channel text,
                                           OUT event_id bigint, OUT payload jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp SET lock_timeout = '10s' AS $$
DECLARE
    locked boolean := false;
BEGIN
    LOOP
        SELECT e.id, e.payload INTO event_id, payload FROM pgsse.events e
         WHERE e.id > p_after AND e.txid = p_txid AND e.channel = p_channel ORDER BY e.id LIMIT 1;
        EXIT WHEN FOUND;
        IF NOT locked THEN
            LOCK TABLE pgsse.commit_order IN EXCLUSIVE MODE;
            locked := true;
        ELSIF pgsse.sequence_batch(5000) = 0 THEN
            EXIT;
        END IF;
    END LOOP;
END
$$;

-- The gateway's POST to a table channel: inserts the row that the object's keys describe (column names,
-- or their camelCase form on a camel_case channel). Runs as the gateway's role, so the table's own grants
-- decide whether the gateway may write it. Its event is in pgsse.sequenced(txid, after, p_channel) once
-- committed; a table that does not capture inserts records none, and `payload` is the row as the channel
-- would publish it.
CREATE OR REPLACE FUNCTION pgsse.insert_json(p_channel text, p_row jsonb,
                                             OUT txid xid8, OUT after bigint, OUT payload jsonb)
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch       pgsse.channels;
    captured boolean;
    unknown  text[];
    cols     text;
    named    text[];
    twice    text[];
    mapped   jsonb;
    statement text;
    new_row  jsonb;
BEGIN
    SELECT * INTO ch FROM pgsse.channels c WHERE c.name = p_channel;
    IF ch.source_table IS NULL THEN
        RAISE EXCEPTION 'pgsse: channel % publishes no table', quote_literal(p_channel) USING ERRCODE = 'P0002';
    END IF;
    IF jsonb_typeof(p_row) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'pgsse: the row must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF NOT ch.writable THEN
        RAISE EXCEPTION 'channel % does not take POST: publish its table with writable => true', p_channel
            USING ERRCODE = '42501';
    END IF;
    -- The row comes back from the log when inserts are captured; otherwise RETURNING reads it.
    captured := 'INSERT' = ANY (ch.operations);
    IF NOT (has_table_privilege(ch.source_table, 'INSERT')
            AND (captured OR has_table_privilege(ch.source_table, 'SELECT'))) THEN
        RAISE EXCEPTION 'the gateway''s role % may not insert into table % (grant %)', current_user,
            ch.source_table, CASE WHEN captured THEN 'INSERT' ELSE 'INSERT and SELECT' END
            USING ERRCODE = '42501';
    END IF;
    -- Each key names a column exactly, or (camel_case) the camelCase form of one; on such a channel a
    -- column given both ways is refused, since which would win is not obvious (and a grant's filter may
    -- have checked the other).
    SELECT array_agg(m.key ORDER BY m.key) FILTER (WHERE m.attname IS NULL),
           string_agg(quote_ident(m.attname), ', ' ORDER BY m.attnum),
           jsonb_object_agg(coalesce(m.attname, m.key), m.value),
           array_agg(m.attname ORDER BY m.attname) FILTER (WHERE m.attname IS NOT NULL)
      INTO unknown, cols, mapped, named
      FROM (SELECT k.key, k.value, a.attname, a.attnum FROM jsonb_each(p_row) k
              LEFT JOIN LATERAL (
                SELECT a.attname, a.attnum FROM pg_attribute a
                 WHERE a.attrelid = ch.source_table AND a.attnum > 0 AND NOT a.attisdropped
                   AND (a.attname = k.key OR (ch.camel_case AND position('_' IN a.attname) > 0
                                               AND pgsse.camel_case(a.attname) = k.key))
                 ORDER BY a.attname = k.key DESC LIMIT 1) a ON true) m;
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown column%: %', CASE WHEN cardinality(unknown) > 1 THEN 's' ELSE '' END,
            array_to_string(unknown, ', ') USING ERRCODE = '42703';
    END IF;
    SELECT array_agg(d ORDER BY d) INTO twice FROM (SELECT n FROM unnest(named) n GROUP BY n HAVING count(*) > 1) x(d);
    IF twice IS NOT NULL THEN
        RAISE EXCEPTION 'column % given twice, as its name and its camelCase form', array_to_string(twice, ', ')
            USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(k ORDER BY k) INTO unknown FROM jsonb_object_keys(mapped) k
     WHERE ch.writable_columns IS NOT NULL AND NOT k = ANY (ch.writable_columns);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'channel % takes no POST of column%: % (its writable_columns)', p_channel,
            CASE WHEN cardinality(unknown) > 1 THEN 's' ELSE '' END, array_to_string(unknown, ', ')
            USING ERRCODE = '42501';
    END IF;
    statement := CASE WHEN cols IS NULL THEN format('INSERT INTO %s AS t DEFAULT VALUES', ch.source_table)
                 ELSE format('INSERT INTO %s AS t (%s) SELECT %s FROM jsonb_populate_record(NULL::%s, $1)',
                             ch.source_table, cols, cols, ch.source_table) END;
    IF captured THEN
        EXECUTE statement USING mapped;
        txid := pg_current_xact_id();
        after := pgsse.issued_head();
    ELSE
        EXECUTE statement || ' RETURNING to_jsonb(t.*)' USING mapped INTO new_row;
        payload := pgsse.project((SELECT c FROM pgsse.channels c WHERE c.name = p_channel), new_row);
    END IF;
END
$$;

-- The key of p_row whose value the channel's table cannot take (the first, by key), for the message of a
-- failed pgsse.insert_json: run only after such a failure, each key tried on its own.
CREATE OR REPLACE FUNCTION pgsse.bad_column(p_channel text, p_row jsonb) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch pgsse.channels;
    k  record;
BEGIN
    SELECT * INTO ch FROM pgsse.channels c WHERE c.name = p_channel;
    FOR k IN SELECT e.key, e.value, a.attname FROM jsonb_each(p_row) e
               JOIN pg_attribute a ON a.attrelid = ch.source_table AND a.attnum > 0 AND NOT a.attisdropped
                AND (a.attname = e.key OR (ch.camel_case AND pgsse.camel_case(a.attname) = e.key))
              ORDER BY e.key LOOP
        BEGIN
            EXECUTE format('SELECT jsonb_populate_record(NULL::%s, $1)', ch.source_table)
                USING jsonb_build_object(k.attname, k.value);
        EXCEPTION WHEN data_exception THEN
            RETURN k.key;
        END;
    END LOOP;
    RETURN NULL;
END
$$;

-- The gateway's POST to a channel without a table: pgsse.publish. Its event is in
-- pgsse.sequenced(txid, after, p_channel) once committed.
CREATE OR REPLACE FUNCTION pgsse.publish_json(p_channel text, p_event text, p_payload jsonb,
                                              OUT txid xid8, OUT after bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    PERFORM pgsse.publish(p_channel, p_event, p_payload);
    txid := pg_current_xact_id();
    after := pgsse.issued_head();
END
$$;

-- Drops a channel's events and records its `clear` event (the second half of pgsse.clear_channel).
CREATE OR REPLACE FUNCTION pgsse.record_clear(p_channel text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    DELETE FROM pgsse.events e WHERE e.channel = p_channel;
    PERFORM pgsse.publish(p_channel, 'clear', jsonb_build_object('clearedAt', to_jsonb(clock_timestamp())));
END
$$;

-- Empties a channel: deletes its table's rows (recording no row events) and its events, then records a
-- `clear` event, in pgsse.sequenced(txid, after, p_channel) once committed. Refused unless the channel
-- allows it or the caller passes p_force (the gateway's flag). Runs as the gateway's role: deleting the
-- rows takes the table's own DELETE grant.
CREATE OR REPLACE FUNCTION pgsse.clear_channel(p_channel text, p_force boolean DEFAULT false,
                                               OUT txid xid8, OUT after bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch pgsse.channels;
BEGIN
    SELECT * INTO ch FROM pgsse.channels c WHERE c.name = p_channel;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgsse: unknown channel %', quote_literal(p_channel) USING ERRCODE = 'P0002';
    END IF;
    IF NOT (ch.allow_clear OR p_force) THEN
        RAISE EXCEPTION 'clearing is not enabled for channel % (publish it with allow_clear => true, or start '
                        'the gateway with --allow-clear %)', p_channel, p_channel USING ERRCODE = '42501';
    END IF;
    IF ch.source_table IS NOT NULL THEN
        IF NOT has_table_privilege(ch.source_table, 'DELETE') THEN
            RAISE EXCEPTION 'the gateway''s role % may not delete from table % (grant DELETE)', current_user,
                ch.source_table USING ERRCODE = '42501';
        END IF;
        PERFORM set_config('pgsse.suppress_capture', 'on', true);
        EXECUTE format('DELETE FROM %s', ch.source_table);
    END IF;
    PERFORM pgsse.record_clear(p_channel);
    txid := pg_current_xact_id();
    after := pgsse.issued_head();
END
$$;

-- Row triggers whose arguments are not what pgsse.capture_args makes of the channel now (made by an earlier
-- schema, or restored onto a table with a new oid) and tables without the TRUNCATE trigger get theirs anew.
DO $$
DECLARE
    ch pgsse.channels;
BEGIN
    FOR ch IN SELECT * FROM pgsse.channels c
               WHERE c.source_table IS NOT NULL
                 AND EXISTS (SELECT 1 FROM pg_catalog.pg_class r WHERE r.oid = c.source_table)
                 AND (NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.source_table
                                     AND t.tgname = 'pgsse_capture'
                                     AND t.tgargs = (SELECT string_agg(convert_to(a, current_setting('server_encoding'))
                                                                       || '\x00'::bytea, ''::bytea ORDER BY i)
                                                       FROM unnest(pgsse.capture_args(c)) WITH ORDINALITY AS u(a, i)))
                      OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.source_table
                                        AND t.tgname = 'pgsse_truncate'))
    LOOP
        PERFORM pgsse.install_capture(ch);
    END LOOP;
END
$$;

-- Least privilege: nothing for PUBLIC (a published table's writers need nothing, capture runs as the
-- owner), the gateway reads the log and calls its own entry points, publishers call pgsse.publish.
REVOKE ALL ON SCHEMA pgsse FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pgsse FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgsse FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgsse FROM PUBLIC;
GRANT USAGE ON SCHEMA pgsse TO pgsse_gateway, pgsse_publisher;
GRANT SELECT ON pgsse.events, pgsse.channels, pgsse.meta, pgsse.migrations TO pgsse_gateway;
GRANT SELECT ON SEQUENCE pgsse.event_id_seq TO pgsse_gateway;
GRANT EXECUTE ON FUNCTION
    pgsse.replay(bigint, bigint, text[], bigint), pgsse.watermark(text[]), pgsse.history(text, bigint, bigint),
    pgsse.prune(timestamptz, integer), pgsse.prune_channels(bigint, integer),
    pgsse.insert_json(text, jsonb), pgsse.bad_column(text, jsonb), pgsse.publish_json(text, text, jsonb), pgsse.clear_channel(text, boolean),
    pgsse.record_clear(text), pgsse.camel_case(text), pgsse.sequence(integer, boolean),
    pgsse.sequenced(xid8, bigint, text), pgsse.issued_head(), pgsse.backlog(), pgsse.project(pgsse.channels, jsonb),
    pgsse.camel_keys(jsonb), pgsse.snapshot(text, jsonb, jsonb, bigint), pgsse.snapshot_count(text, jsonb, jsonb, bigint),
    pgsse.snapshot_seam(text[]), pgsse.snapshot_columns(pgsse.channels)
    TO pgsse_gateway;
GRANT EXECUTE ON FUNCTION pgsse.publish(text, text, jsonb) TO pgsse_publisher;

COMMIT;
