-- pgsse functions: capture. Staging a change of a published table (two row triggers and a TRUNCATE
-- trigger, with the row projected to its published columns), ringing the gateways at commit, and
-- installing or removing a table's triggers.

-- Records one event in pgsse.staged; a sequencing step gives it its id later. Called by pgsse.publish,
-- clears and the TRUNCATE capture, only from pgsse's own definer functions (pgsse.capture_stage writes it
-- out for rows); like pgsse.project it qualifies every name rather than pin search_path. While a gateway
-- listens (the doorbell is armed), the transaction's first staged event is marked to ring at its commit
-- (pgsse.ring); a busy gateway reads on the clock and needs no ring, so then no commit pays for one. A
-- writer that sets pgsse.rang only keeps its own transaction from ringing.
-- p_wide marks an event that empties its channel (a clear, a truncate): every stream of the channel gets
-- it, whatever its filter. Only pgsse's own clear and truncate capture set it; an event's name never does.
CREATE OR REPLACE FUNCTION pgsse.stage(p_channel text, p_event text, p_payload jsonb, p_wide boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pgsse.staged (seq, txid, channel, event, payload, wide, ring)
    SELECT pg_catalog.nextval('pgsse.staged_seq'), pg_catalog.pg_current_xact_id(), p_channel, p_event, p_payload, p_wide,
           CASE WHEN d.armed AND coalesce(pg_catalog.current_setting('pgsse.rang', true), '') OPERATOR(pg_catalog.<>) 'y'
                THEN pg_catalog.set_config('pgsse.rang', 'y', true) OPERATOR(pg_catalog.=) 'y' ELSE false END
      FROM pgsse.doorbell d;
END
$$;

-- Runs when a transaction that staged events commits while a gateway listens (a deferred trigger on its
-- first staged row): draws the number that places the transaction in commit order, and wakes the
-- gateways. The first such commit after a sequencing step notifies, the others rely on it; a number
-- drawn from pgsse.bell, not a lock, decides which, so nothing a writer holds makes another writer wait.
-- A writer that makes this fire early (SET CONSTRAINTS ... IMMEDIATE) only places its own transaction by
-- its last staged event and silences the others until the next step, which its open transaction makes
-- come soon (in_flight).
CREATE OR REPLACE FUNCTION pgsse.ring() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    UPDATE pgsse.staged s SET committed = pg_catalog.nextval('pgsse.staged_seq')
     WHERE s.txid OPERATOR(pg_catalog.=) NEW.txid AND s.seq OPERATOR(pg_catalog.=) NEW.seq;
    IF pg_catalog.nextval('pgsse.bell') OPERATOR(pg_catalog.=) 1 THEN
        -- A constant payload lets PostgreSQL fold a transaction's notifications into one.
        PERFORM pg_catalog.pg_notify('pgsse_' OPERATOR(pg_catalog.||) m.bell_token, '') FROM pgsse.meta m;
    END IF;
    RETURN NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                    WHERE tgrelid = 'pgsse.staged'::regclass AND tgname = 'pgsse_ring') THEN
        CREATE CONSTRAINT TRIGGER pgsse_ring AFTER INSERT ON pgsse.staged DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (NEW.ring) EXECUTE FUNCTION pgsse.ring();
    END IF;
END
$$;


-- A row as the channel publishes it: only the published columns, camelCased if asked. Private columns
-- are dropped here, before anything reaches the log. This runs per captured row: it qualifies every name
-- instead of pinning search_path, whose save and restore on each call would double capture's cost.
CREATE OR REPLACE FUNCTION pgsse.project(ch pgsse.channels, r jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    projected pg_catalog.jsonb := r;
BEGIN
    IF ch.columns IS NOT NULL THEN
        SELECT coalesce(pg_catalog.jsonb_object_agg(k.key, k.value), '{}'::pg_catalog.jsonb) INTO projected
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

-- The channel a TRUNCATE trigger may write: the one that publishes the very table it fires on. A copy of
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

-- The arguments of a published table's staging trigger: everything a capture needs, so that a captured
-- row costs no lookup. The table's oid makes a copy of the trigger on any other table record nothing.
CREATE OR REPLACE FUNCTION pgsse.capture_args(ch pgsse.channels) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT ARRAY[ch.name, ch.source_table::oid::text, ch.insert_event, ch.update_event, ch.delete_event,
                 ch.old_values::text, ch.camel_case::text, coalesce(ch.columns::text, ''),
                 coalesce(ch.exclude_columns::text, '')]
$$;

-- Capture is two plain row triggers that fire one after the other at the end of the writer's statement
-- (their names sort so; plain triggers cannot be deferred or reordered by SET CONSTRAINTS). The first,
-- pgsse_capture, runs as the writer: to_jsonb may call casts that the table's owner made, and those
-- must run with no rights but the writer's. It hands the row over in pgsse.captured. The second,
-- pgsse_capture_stage, runs as pgsse's owner and evaluates nothing the table's owner or writer made: it
-- takes the hand-over, clears it, projects it and stages the event. Nothing a writer runs comes between
-- the two (only the table owner's own triggers could), so it stages what the first trigger made of
-- that very row. Both qualify every name: the first runs with the writer's search_path.
CREATE OR REPLACE FUNCTION pgsse.capture_row() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    done pg_catalog.text;
BEGIN
    -- json rather than jsonb: its text is made directly, and the next trigger parses it once. Assignments,
    -- not PERFORM: an expression runs without a query around it.
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        done := pg_catalog.set_config('pgsse.captured', pg_catalog.row_to_json(NEW)::pg_catalog.text, true);
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        done := pg_catalog.set_config('pgsse.captured', pg_catalog.row_to_json(OLD)::pg_catalog.text, true);
    ELSE
        done := pg_catalog.set_config('pgsse.captured',
            pg_catalog.json_build_array(pg_catalog.row_to_json(NEW), pg_catalog.row_to_json(OLD))::pg_catalog.text, true);
    END IF;
    RETURN NULL;
END
$$;

-- The staging trigger, with pgsse.capture_args as its arguments. The deletes with which
-- pgsse.clear_channel empties this very table record no events (checked against pgsse.clearing, since any
-- writer may set pgsse.suppress_capture; the clear event was recorded first).
CREATE OR REPLACE FUNCTION pgsse.capture_stage() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    handed   pg_catalog.text := pg_catalog.current_setting('pgsse.captured', true);
    ch       pgsse.channels;
    row_data pg_catalog.jsonb;
    new_data pg_catalog.jsonb;
    old_data pg_catalog.jsonb;
    event    pg_catalog.text;
    payload  pg_catalog.jsonb;
    done     pg_catalog.text;
BEGIN
    done := pg_catalog.set_config('pgsse.captured', '', true);
    IF TG_NARGS OPERATOR(pg_catalog.<>) 9 OR TG_ARGV[1] OPERATOR(pg_catalog.<>) TG_RELID::pg_catalog.oid::pg_catalog.text THEN
        RAISE WARNING 'pgsse: this trigger on % is not the one pgsse.publish_table installed for it; its change is not recorded',
            TG_RELID::pg_catalog.regclass USING HINT = 'publish the table again, or run pgsse migrate (after a restore, say)';
        RETURN NULL;
    END IF;
    -- An insert with nothing to project, the most common change, in as few statements as it can: in a
    -- transaction of one row (the usual write), each statement here sets itself up anew, and that costs
    -- more than what it does.
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' AND handed OPERATOR(pg_catalog.<>) '' AND TG_ARGV[6] OPERATOR(pg_catalog.=) 'false'
       AND TG_ARGV[7] OPERATOR(pg_catalog.=) '' AND TG_ARGV[8] OPERATOR(pg_catalog.=) '' THEN
        event := TG_ARGV[2];
        payload := handed::pg_catalog.jsonb;
    ELSE
        -- The query only for a delete that may be a clear's: PostgreSQL would plan a condition with a
        -- query in it anew at every call, since the plan that leaves it out is always cheaper.
        IF TG_OP OPERATOR(pg_catalog.=) 'DELETE'
           AND pg_catalog.current_setting('pgsse.suppress_capture', true) OPERATOR(pg_catalog.=) 'on' THEN
            IF EXISTS (SELECT 1 FROM pgsse.clearing c
                        WHERE c.txid OPERATOR(pg_catalog.=) pg_catalog.pg_current_xact_id()
                          AND c.source_table OPERATOR(pg_catalog.=) TG_RELID
                          AND NOT EXISTS (SELECT 1 FROM pgsse.staged s
                                           WHERE s.txid OPERATOR(pg_catalog.=) c.txid
                                             AND s.channel OPERATOR(pg_catalog.=) TG_ARGV[0]
                                             AND s.seq OPERATOR(pg_catalog.>) c.after_seq)) THEN
                RETURN NULL;
            END IF;
        END IF;
        IF handed IS NULL OR handed OPERATOR(pg_catalog.=) '' THEN
            RAISE WARNING 'pgsse: no row was handed over for this change of %; it is not recorded', TG_RELID::pg_catalog.regclass
                USING HINT = 'a trigger named pgsse_capture must fire just before pgsse_capture_stage: publish the table again';
            RETURN NULL;
        END IF;
        row_data := handed::pg_catalog.jsonb;
        IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
            new_data := row_data OPERATOR(pg_catalog.->) 0;
            old_data := row_data OPERATOR(pg_catalog.->) 1;
        ELSIF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
            new_data := row_data;
        ELSE
            old_data := row_data;
        END IF;
        IF TG_ARGV[6] OPERATOR(pg_catalog.=) 'true' OR TG_ARGV[7] OPERATOR(pg_catalog.<>) ''
           OR TG_ARGV[8] OPERATOR(pg_catalog.<>) '' THEN
            ch.camel_case := TG_ARGV[6]::pg_catalog.bool;
            ch.columns := CASE WHEN TG_ARGV[7] OPERATOR(pg_catalog.<>) '' THEN TG_ARGV[7]::pg_catalog.text[] END;
            ch.exclude_columns := CASE WHEN TG_ARGV[8] OPERATOR(pg_catalog.<>) '' THEN TG_ARGV[8]::pg_catalog.text[] END;
            IF new_data IS NOT NULL THEN
                new_data := pgsse.project(ch, new_data);
            END IF;
            IF old_data IS NOT NULL THEN
                old_data := pgsse.project(ch, old_data);
            END IF;
        END IF;
        IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
            event := TG_ARGV[2];
            payload := new_data;
        ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
            event := TG_ARGV[4];
            payload := old_data;
        ELSIF new_data OPERATOR(pg_catalog.<>) old_data THEN
            event := TG_ARGV[3];
            payload := CASE WHEN TG_ARGV[5] OPERATOR(pg_catalog.=) 'true'
                            THEN pg_catalog.jsonb_build_object('new', new_data, 'old', old_data) ELSE new_data END;
        ELSE
            RETURN NULL;
        END IF;
    END IF;
    -- pgsse.stage, written out: a function call per row would cost more than its body. While no gateway
    -- listens nothing rings, and the transaction's first event need not be told from the others.
    INSERT INTO pgsse.staged (seq, txid, channel, event, payload, old, ring)
    SELECT pg_catalog.nextval('pgsse.staged_seq'), pg_catalog.pg_current_xact_id(), TG_ARGV[0], event, payload,
           CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN old_data END,
           CASE WHEN d.armed AND coalesce(pg_catalog.current_setting('pgsse.rang', true), '') OPERATOR(pg_catalog.<>) 'y'
                THEN pg_catalog.set_config('pgsse.rang', 'y', true) OPERATOR(pg_catalog.=) 'y' ELSE false END
      FROM pgsse.doorbell d;
    RETURN NULL;
END
$$;

-- TRUNCATE of a published table: one event, so clients drop rows that no longer exist.
CREATE OR REPLACE FUNCTION pgsse.capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch pgsse.channels;
BEGIN
    ch := pgsse.published_channel(TG_ARGV[0], TG_RELID);
    IF ch.name IS NOT NULL THEN
        PERFORM pgsse.stage(ch.name, ch.truncate_event, jsonb_build_object('truncatedAt', to_jsonb(clock_timestamp())),
                            true);
    END IF;
    RETURN NULL;
END
$$;

-- The role that owns table p_table, for refusals that say who must run the fix.
CREATE OR REPLACE FUNCTION pgsse.owner_of(p_table regclass) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT c.relowner::regrole::text FROM pg_class c WHERE c.oid = p_table
$$;

-- Removes a table's capture triggers, if any (checked first: DROP TRIGGER IF EXISTS would print a NOTICE).
-- Only the table's owner may drop its triggers: anyone else is told who must.
CREATE OR REPLACE FUNCTION pgsse.drop_capture(p_table regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    names text[] := ARRAY(SELECT t.tgname::text FROM pg_trigger t
                           WHERE t.tgrelid = p_table
                             AND t.tgname IN ('pgsse_capture', 'pgsse_capture_stage', 'pgsse_truncate')
                           ORDER BY t.tgname);
    owner text := pgsse.owner_of(p_table);
    n     text;
BEGIN
    IF cardinality(names) > 0 AND NOT pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = p_table), 'USAGE') THEN
        RAISE EXCEPTION 'pgsse: only the owner of table % (role %) may replace its capture triggers, and role % is not a member of it',
            p_table, owner, current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('have role %s run: %s then run this again', owner,
                                (SELECT string_agg(format('DROP TRIGGER %I ON %s;', x, p_table), ' ') FROM unnest(names) x));
    END IF;
    FOREACH n IN ARRAY names LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', n, p_table);
    END LOOP;
END
$$;

-- (Re)creates a table channel's triggers from its pgsse.channels row (see pgsse.capture_row).
CREATE OR REPLACE FUNCTION pgsse.install_capture(ch pgsse.channels) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ops text := array_to_string(ch.operations, ' OR ');
BEGIN
    PERFORM pgsse.drop_capture(ch.source_table);
    EXECUTE format('CREATE TRIGGER pgsse_capture AFTER %s ON %s FOR EACH ROW EXECUTE FUNCTION pgsse.capture_row()',
                   ops, ch.source_table);
    EXECUTE format('CREATE TRIGGER pgsse_capture_stage AFTER %s ON %s FOR EACH ROW EXECUTE FUNCTION pgsse.capture_stage(%s)',
        ops, ch.source_table,
        (SELECT string_agg(quote_literal(a), ', ' ORDER BY i) FROM unnest(pgsse.capture_args(ch)) WITH ORDINALITY AS u(a, i)));
    EXECUTE format('CREATE TRIGGER pgsse_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION pgsse.capture_truncate(%L)', ch.source_table, ch.name);
END
$$;
