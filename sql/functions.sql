-- pgsse functions, roles and privileges: applied again by every `pgsse migrate`, after the numbered files.
-- Everything here belongs to pgsse_owner. SECURITY DEFINER only where a role must touch pgsse's own tables
-- (staging, sequencing, the gateway's writes to the log, retention), and such code never evaluates anything
-- a table's owner or writer made; reading or writing their tables runs as the caller. Functions that a role
-- calls pin search_path; those that run once per captured row (capture_row, capture_stage, stage, project,
-- ring) qualify every name, operator and type instead (a writer's own domain named jsonb would otherwise
-- be found first), since a SET per call cost 19% of a 50,000-row insert.
-- Nothing is granted to PUBLIC.

-- Roles are cluster-wide: one set serves every database of the cluster that has pgsse installed, and a
-- login granted pgsse_gateway may act as a gateway on each of them. pgsse_owner owns schema pgsse and runs
-- its SECURITY DEFINER functions: it cannot log in, is no superuser, and holds nothing but pgsse's own
-- objects, so no code that runs as it (and none of pgsse's runs anything a table's owner or writer made)
-- can reach further. Whoever migrates is made a member, to create and replace pgsse's objects.
DO $$
DECLARE
    missing text[];
    r       text;
    can     boolean := EXISTS (SELECT 1 FROM pg_catalog.pg_roles
                                WHERE rolname = current_user AND (rolsuper OR rolcreaterole));
BEGIN
    SELECT array_agg(n ORDER BY n) INTO missing
      FROM unnest(ARRAY['pgsse_gateway', 'pgsse_owner', 'pgsse_publisher']) AS n
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = n);
    IF missing IS NOT NULL AND NOT can THEN
        RAISE EXCEPTION 'pgsse: role % cannot create the roles % (it lacks CREATEROLE)',
            current_user, array_to_string(missing, ', ')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('have an operator run: %s%s then run pgsse migrate again',
                                (SELECT string_agg(format('CREATE ROLE %I NOLOGIN;', m), ' ') FROM unnest(missing) m),
                                CASE WHEN 'pgsse_owner' = ANY (missing)
                                     THEN format(' GRANT pgsse_owner TO %I;', current_user) ELSE '' END);
    END IF;
    FOREACH r IN ARRAY coalesce(missing, '{}') LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- another database's migrate created it just now
        END;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles
                WHERE rolname = 'pgsse_owner' AND (rolsuper OR rolcanlogin OR rolcreaterole OR rolcreatedb OR rolbypassrls)) THEN
        RAISE EXCEPTION 'pgsse: role pgsse_owner has attributes it must not have (it runs pgsse''s definer functions)'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'have an operator run: ALTER ROLE pgsse_owner NOSUPERUSER NOLOGIN NOCREATEROLE NOCREATEDB NOBYPASSRLS;';
    END IF;
    IF NOT pg_catalog.pg_has_role('pgsse_owner', 'USAGE') THEN
        IF NOT can THEN
            RAISE EXCEPTION 'pgsse: role % is not a member of pgsse_owner, which owns schema pgsse', current_user
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('have an operator run: GRANT pgsse_owner TO %I; then run pgsse migrate again', current_user);
        END IF;
        EXECUTE format('GRANT pgsse_owner TO %I', current_user);
    END IF;
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

-- Records one event in pgsse.staged; a sequencing step gives it its id later. Called by pgsse.publish,
-- clears and the TRUNCATE capture, only from pgsse's own definer functions (pgsse.capture_stage writes it
-- out for rows); like pgsse.project it qualifies every name rather than pin search_path. While a gateway
-- listens (the doorbell is armed), the transaction's first staged event is marked to ring at its commit
-- (pgsse.ring); a busy gateway reads on the clock and needs no ring, so then no commit pays for one. A
-- writer that sets pgsse.rang only keeps its own transaction from ringing.
DO $$
BEGIN
    -- Schema 8's took an old row and returned whether it rang (before schema 6 it returned void); schema
    -- 9's had no p_wide.
    DROP FUNCTION IF EXISTS pgsse.stage(text, text, jsonb, jsonb);
    DROP FUNCTION IF EXISTS pgsse.stage(text, text, jsonb);
END
$$;

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

-- Gives every staged event of the committed transactions the next ids. A transaction's events go together,
-- transactions in the order of the last number each drew: the one its commit drew (pgsse.ring, while a
-- gateway listens), or its last staged event's. Whatever a writer does, one that changed a row after
-- another committed drew a number after all of the other's; transactions that touched no common row may
-- come in the order they last staged rather than committed, only when a busy gateway reads on the clock.
-- Reads from the floor up: every transaction older than the oldest one running when the last batch began
-- had ended, so the batch took its rows. One DELETE and one sort over the rows it moves, whatever the
-- planner's statistics say: the DELETE walks the key from the floor (a sequential scan would read every
-- row moved since the last VACUUM, at every step). The caller holds pgsse.commit_order: batches become
-- visible one after another, so ids increase along the log in the order events become visible.
DROP FUNCTION IF EXISTS pgsse.sequence_batch(integer);
CREATE OR REPLACE FUNCTION pgsse.sequence_batch() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_nestloop = off SET jit = off AS $$
DECLARE
    moved  bigint;
    low    xid8 := (SELECT f.floor_xid FROM pgsse.staged_floor f);
    -- Taken before the DELETE's own snapshot, which therefore sees every transaction older than this.
    oldest xid8 := pg_snapshot_xmin(pg_current_snapshot());
BEGIN
    WITH taken AS (DELETE FROM pgsse.staged s WHERE s.txid >= low RETURNING s.*)
    INSERT INTO pgsse.events (id, channel, event, payload, created_at, txid, old, wide)
    SELECT nextval('pgsse.event_id_seq'), t.channel, t.event, t.payload, t.created_at, t.txid, t.old, t.wide
      FROM (SELECT t.*, greatest(max(t.seq) OVER w, max(t.committed) OVER w) AS last FROM taken t
             WINDOW w AS (PARTITION BY t.txid) ORDER BY last, t.seq) t;
    GET DIAGNOSTICS moved = ROW_COUNT;
    UPDATE pgsse.staged_floor f SET floor_xid = oldest WHERE f.floor_xid < oldest;
    IF moved > 0 THEN
        PERFORM pg_notify('pgsse_' || m.bell_token, '') FROM pgsse.meta m;
    END IF;
    RETURN moved;
END
$$;

-- The locks that every gateway's delivery and retention wait on are taken only in the body of pgsse's own
-- procedure p_proc, which commits just before taking them and just after: PostgreSQL lets whoever runs a
-- statement keep its transaction open, so such a lock taken by any other statement (a leaked gateway
-- login's BEGIN; SELECT pgsse.sequence(...); SELECT pg_sleep(600)) would be held as long as that session
-- liked. Here the client's statement is a CALL of that procedure and this transaction began after the
-- statement did, inside it (a procedure's COMMIT): no transaction block, pipeline, DO block or argument
-- of the CALL gets here.
CREATE OR REPLACE FUNCTION pgsse.within(p_proc text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    IF NOT coalesce(starts_with(current_query(), format('CALL pgsse.%s(', p_proc))
                    AND transaction_timestamp() > statement_timestamp(), false) THEN
        RAISE EXCEPTION 'pgsse: this step runs only as a statement of its own: CALL pgsse.%(...)', p_proc
            USING ERRCODE = 'PGS03',
                  HINT = 'outside any transaction block; a gateway of an earlier release calls it otherwise, so replace it';
    END IF;
END
$$;

-- The gateway's sequencing step: every committed staged event, or moved = -1 at once when another session
-- is sequencing. in_flight: a writer that staged was still open when the batch was read, and may not
-- ring when it commits; ask again soon. p_listening is whether the caller is woken by NOTIFY or reads on
-- the clock (writers ring only while it is), or NULL to leave that as it is. p_limit is unused since
-- schema 9 (a step takes everything committed). Runs only inside CALL pgsse.sequence_step.
CREATE OR REPLACE FUNCTION pgsse.sequence(p_limit integer, p_listening boolean, OUT moved bigint, OUT in_flight boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    PERFORM pgsse.within('sequence_step');
    BEGIN
        LOCK TABLE pgsse.commit_order IN EXCLUSIVE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        moved := -1;
        in_flight := false;
        RETURN;
    END;
    -- The next writer to commit rings again. Before the check below: a writer that found the bell taken
    -- had staged before now, so it is either seen by the batch or still open (in flight).
    PERFORM setval('pgsse.bell', 1, false);
    -- A writer holds a ROW EXCLUSIVE lock on pgsse.staged from its first staged event to the end of its
    -- transaction, which SHARE conflicts with; held for no longer than this block (its subtransaction
    -- ends either way). Only a listening gateway needs to know.
    in_flight := false;
    IF p_listening THEN
        BEGIN
            LOCK TABLE pgsse.staged IN SHARE MODE NOWAIT;
            RAISE EXCEPTION USING ERRCODE = 'PGS01';
        EXCEPTION
            WHEN lock_not_available THEN in_flight := true;
            WHEN SQLSTATE 'PGS01' THEN NULL;
        END;
    END IF;
    -- A writer that read the doorbell unarmed rang for nobody; once armed (at this commit), ask again.
    IF p_listening IS NOT NULL THEN
        UPDATE pgsse.doorbell b SET armed = p_listening WHERE b.armed <> p_listening;
        IF FOUND AND p_listening THEN
            in_flight := true;
        END IF;
    END IF;
    moved := pgsse.sequence_batch();
    -- A clear whose transaction ended without pgsse.end_clear leaves its marker; it no longer matches anything.
    DELETE FROM pgsse.clearing c WHERE pg_xact_status(c.txid) IS DISTINCT FROM 'in progress';
END
$$;

-- One sequencing step in a transaction of its own, and then, for p_txid's write on p_channel, its event
-- if it is in the log now (see pgsse.sequenced). Invoker and unpinned, as a procedure must be to commit:
-- it names everything it calls by schema, and whoever calls it runs it with their own rights.
CREATE OR REPLACE PROCEDURE pgsse.sequence_step(p_listening boolean, p_txid xid8 DEFAULT NULL,
    p_after bigint DEFAULT NULL, p_channel text DEFAULT NULL, INOUT moved bigint DEFAULT NULL,
    INOUT in_flight boolean DEFAULT NULL, INOUT event_id bigint DEFAULT NULL, INOUT payload text DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    COMMIT;
    -- The transaction that takes the lock runs read committed and may write, whatever the session's
    -- defaults (a serializable default fails steps and writers alike), and sends the client nothing but
    -- an error until it commits: a client that stops reading its socket would otherwise hold the lock
    -- while the server waits to send it the debug output or notices its own settings asked for.
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE;
    PERFORM pg_catalog.set_config('client_min_messages', 'error', true);
    SELECT s.moved, s.in_flight INTO moved, in_flight FROM pgsse.sequence(0, p_listening) s;
    COMMIT;
    IF p_txid IS NOT NULL THEN
        SELECT e.event_id, e.payload::pg_catalog.text INTO event_id, payload
          FROM pgsse.sequenced(p_txid, p_after, p_channel) e;
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
    IF TG_OP OPERATOR(pg_catalog.=) 'DELETE'
       AND pg_catalog.current_setting('pgsse.suppress_capture', true) OPERATOR(pg_catalog.=) 'on'
       AND EXISTS (SELECT 1 FROM pgsse.clearing c
                    WHERE c.txid OPERATOR(pg_catalog.=) pg_catalog.pg_current_xact_id()
                      AND c.source_table OPERATOR(pg_catalog.=) TG_RELID
                      AND NOT EXISTS (SELECT 1 FROM pgsse.staged s
                                       WHERE s.txid OPERATOR(pg_catalog.=) c.txid
                                         AND s.channel OPERATOR(pg_catalog.=) TG_ARGV[0]
                                         AND s.seq OPERATOR(pg_catalog.>) c.after_seq)) THEN
        RETURN NULL;
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

-- Why p_event may not be published on p_channel by anyone but pgsse itself, or NULL: the names pgsse gives
-- meaning to on every channel, and a table channel's row events, which only its capture records.
CREATE OR REPLACE FUNCTION pgsse.reserved_event(p_channel text, p_event text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT CASE
        WHEN p_event IN ('reset', 'snapshot-end', 'clear') THEN
            format('event %s is pgsse''s own: clients act on it (reload, end of snapshot, emptied channel)',
                   quote_literal(p_event))
        WHEN EXISTS (SELECT 1 FROM pgsse.channels c
                      WHERE c.name = p_channel AND c.source_table IS NOT NULL
                        AND p_event IN (c.insert_event, c.update_event, c.delete_event, c.truncate_event)) THEN
            format('event %s on channel %s is a row event of its table: only the table''s own changes record it',
                   quote_literal(p_event), quote_literal(p_channel))
        WHEN p_event = 'truncate' THEN
            format('event %s is pgsse''s own: clients drop every row on it', quote_literal(p_event))
    END
$$;

-- Records an ad-hoc event; it gets its id, and is broadcast, once the calling transaction commits.
-- Granted to pgsse_publisher.
CREATE OR REPLACE FUNCTION pgsse.publish(p_channel text, p_event text, p_payload jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    why text;
BEGIN
    IF p_channel IS NULL OR NOT pgsse.valid_channel(p_channel) THEN
        RAISE EXCEPTION 'pgsse: invalid channel name %', quote_literal(coalesce(p_channel, 'NULL'))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_event IS NULL OR NOT pgsse.valid_event(p_event) THEN
        RAISE EXCEPTION 'pgsse: invalid event name %', quote_literal(coalesce(p_event, 'NULL'))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgsse.channels WHERE name = p_channel) THEN
        INSERT INTO pgsse.channels (name) VALUES (p_channel) ON CONFLICT (name) DO NOTHING;
    END IF;
    -- Held to the end of this transaction: a publish_table of the channel waits for it, and then sees what
    -- it staged; one that went first is seen here, by the check below.
    PERFORM 1 FROM pgsse.channels c WHERE c.name = p_channel FOR KEY SHARE;
    why := pgsse.reserved_event(p_channel, p_event);
    IF why IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: %', why USING ERRCODE = 'insufficient_privilege',
            HINT = 'publish it under another event name';
    END IF;
    PERFORM pgsse.stage(p_channel, p_event, coalesce(p_payload, 'null'));
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

-- Snapshots read a table channel's rows as the gateway (so that nothing its owner made runs with any
-- other rights): pgsse_gateway needs SELECT on the published columns, which publish_table grants when
-- its caller may. The refusal, when it may not, names the GRANT that the table's owner runs.
-- (A GRANT that its caller may not make fails or, if it holds some other privilege there, only warns:
-- either way the check after it tells, and client_min_messages keeps the warning from the caller.)
CREATE OR REPLACE FUNCTION pgsse.grant_snapshot_reads(ch pgsse.channels) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp SET client_min_messages = error AS $$
DECLARE
    nsp     oid := (SELECT c.relnamespace FROM pg_class c WHERE c.oid = ch.source_table);
    missing text;
    grants  text := '';
BEGIN
    IF NOT has_schema_privilege('pgsse_gateway', nsp, 'USAGE') THEN
        BEGIN
            EXECUTE format('GRANT USAGE ON SCHEMA %s TO pgsse_gateway', nsp::regnamespace);
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;
        END;
        IF NOT has_schema_privilege('pgsse_gateway', nsp, 'USAGE') THEN
            grants := format('GRANT USAGE ON SCHEMA %s TO pgsse_gateway; ', nsp::regnamespace);
        END IF;
    END IF;
    missing := pgsse.unreadable_columns(ch, 'pgsse_gateway');
    IF missing IS NOT NULL THEN
        BEGIN
            EXECUTE format('GRANT SELECT (%s) ON %s TO pgsse_gateway', missing, ch.source_table);
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;
        END;
        missing := pgsse.unreadable_columns(ch, 'pgsse_gateway');
        IF missing IS NOT NULL THEN
            grants := grants || format('GRANT SELECT (%s) ON %s TO pgsse_gateway;', missing, ch.source_table);
        END IF;
    END IF;
    IF grants <> '' THEN
        RAISE EXCEPTION 'pgsse: snapshots of channel % read table % as the gateway, and role % may not grant role pgsse_gateway what they need',
            quote_literal(ch.name), ch.source_table, current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('have the table''s owner (role %s) run: %s then publish again',
                                pgsse.owner_of(ch.source_table),
                                rtrim(grants));
    END IF;
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
    clash   text;
    rec     pgsse.channels;
BEGIN
    IF NOT pg_catalog.has_table_privilege(p_table, 'TRIGGER') THEN
        RAISE EXCEPTION 'pgsse: role % lacks the TRIGGER privilege on table %', current_user, p_table
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('have the table''s owner (role %s) run: GRANT TRIGGER ON %s TO %I;',
                                -- inline, not pgsse.owner_of: this refusal is for callers granted only
                                -- publish_table
                                (SELECT c.relowner::regrole::text FROM pg_class c WHERE c.oid = p_table),
                                p_table, current_user);
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
    -- Clients act on these names (reload, end of snapshot, empty the collection) and on each row event's
    -- own meaning: a row event may not pass for one of them, nor for another kind of row event.
    IF insert_event IN ('reset', 'snapshot-end', 'clear') OR update_event IN ('reset', 'snapshot-end', 'clear')
       OR delete_event IN ('reset', 'snapshot-end', 'clear') OR truncate_event IN ('reset', 'snapshot-end')
       OR cardinality(ARRAY(SELECT DISTINCT n FROM unnest(ARRAY[insert_event, update_event, delete_event,
                                                                truncate_event]) n)) < 4 THEN
        RAISE EXCEPTION 'pgsse: event names % are not four distinct names of this table''s own',
            ARRAY[insert_event, update_event, delete_event, truncate_event]
            USING ERRCODE = '22023',
                  HINT = 'reset, snapshot-end and clear are pgsse''s own (a truncate may be sent as clear)';
    END IF;
    IF columns IS NOT NULL AND exclude_columns IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: give columns or exclude_columns, not both' USING ERRCODE = '22023';
    END IF;
    unknown := pgsse.unknown_columns(p_table, coalesce(columns, exclude_columns) || writable_columns);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: table % has no column %', p_table, array_to_string(unknown, ', ')
            USING ERRCODE = '42703';
    END IF;
    -- Two columns published under one camelCase name: events would carry one, while snapshots, filters
    -- and POST could pick the other.
    IF camel_case THEN
        SELECT string_agg(format('%I and %I', d.a, d.b), '; ') INTO clash FROM (
            SELECT min(a.attname) AS a, max(a.attname) AS b FROM pg_attribute a
             WHERE a.attrelid = p_table AND a.attnum > 0 AND NOT a.attisdropped
               AND (columns IS NULL OR a.attname = ANY (columns))
               AND (exclude_columns IS NULL OR a.attname <> ALL (exclude_columns))
             GROUP BY pgsse.camel_case(a.attname) HAVING count(*) > 1) d;
        IF clash IS NOT NULL THEN
            RAISE EXCEPTION 'pgsse: with camel_case, columns % of table % would publish under one name', clash, p_table
                USING ERRCODE = '22023', HINT = 'rename one of them, or leave one out with exclude_columns';
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM pgsse.channels c
               WHERE c.name = ch AND c.source_table IS NOT NULL AND c.source_table <> p_table) THEN
        RAISE EXCEPTION 'pgsse: channel % already publishes another table', quote_literal(ch)
            USING ERRCODE = '22023';
    END IF;
    -- Events that pgsse.publish put there would pass for the table's row events (a publish still open on
    -- the channel is waited for: it holds the row).
    PERFORM 1 FROM pgsse.channels c WHERE c.name = ch FOR UPDATE;
    IF EXISTS (SELECT 1 FROM pgsse.channels c WHERE c.name = ch AND c.source_table IS NULL)
       AND (EXISTS (SELECT 1 FROM pgsse.events e WHERE e.channel = ch)
            OR EXISTS (SELECT 1 FROM pgsse.staged s WHERE s.channel = ch)) THEN
        RAISE EXCEPTION 'pgsse: channel % already carries events published with pgsse.publish', quote_literal(ch)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('publish the table under another channel name (channel => ...), or drop those events first: DELETE FROM pgsse.events WHERE channel = %L;', ch);
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
    PERFORM pgsse.grant_snapshot_reads(rec);
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

-- The published columns of ch's table that role p_role may not SELECT, quoted and comma-separated, or NULL.
CREATE OR REPLACE FUNCTION pgsse.unreadable_columns(ch pgsse.channels, p_role name) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT string_agg(quote_ident(s.col), ', ') FROM pgsse.snapshot_columns(ch) s
     WHERE NOT has_column_privilege(p_role, ch.source_table, s.col, 'SELECT')
$$;

-- The FROM, WHERE and ORDER BY of a snapshot of table channel ch. p_filters: [{"key", "op", "value"}]
-- ("value" a list for "in"), p_order: [{"key", "desc"}]; keys name published columns. The request's
-- values stay in p_filters, which the query reads as its parameter $1, each cast to its column's type so
-- that the table's own indexes serve the filter; only catalog names are written into the text.
-- A type with its domains taken off: what its values are made of.
CREATE OR REPLACE FUNCTION pgsse.base_type(p_type oid) RETURNS regtype
LANGUAGE sql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    WITH RECURSIVE d(oid, typtype, base) AS (
        SELECT t.oid, t.typtype, t.typbasetype FROM pg_type t WHERE t.oid = p_type
        UNION ALL
        SELECT t.oid, t.typtype, t.typbasetype FROM pg_type t JOIN d ON t.oid = d.base WHERE d.typtype = 'd')
    SELECT d.oid::regtype FROM d WHERE d.typtype <> 'd'
$$;

CREATE OR REPLACE FUNCTION pgsse.snapshot_query(ch pgsse.channels, p_filters jsonb, p_order jsonb) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    conds text[] := '{}';
    ord   text[] := '{}';
    f     record;
    c     record;
    op    text;
    bt    regtype;
BEGIN
    IF ch.source_table IS NULL THEN
        RAISE EXCEPTION 'pgsse: channel % has no table, so there are no rows to snapshot', quote_literal(ch.name)
            USING ERRCODE = '22023', HINT = 'snapshot=true is for channels made by pgsse.publish_table';
    END IF;
    PERFORM pgsse.check_snapshot_reads(ch);
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
        -- One meaning for a filter: the gateway tests every snapshot row as streams and history test
        -- events (JSON values: numbers as numbers, strings by bytes), so SQL here may only narrow the read
        -- to a superset of those rows, on the table's indexes where it can. The value is cast to the
        -- column's base type without its typmod (numeric(10,2) would round it, varchar(10) cut it).
        -- Equality where equal JSON text implies equal SQL values (a uuid's or a char(n)'s SQL equality
        -- is looser, never stricter); IS NULL but on json (a JSON null is not an SQL NULL); other
        -- comparisons on integers and numeric, and on text and varchar compared by bytes. Any other
        -- condition is the gateway's alone.
        bt := pgsse.base_type((SELECT a.atttypid FROM pg_attribute a
                                WHERE a.attrelid = ch.source_table AND a.attname = c.col));
        conds := conds || CASE
            WHEN f.v->>'op' = 'is' AND f.v->>'value' IN ('true', 'false') THEN
                format('t.%I IS %s', c.col, upper(f.v->>'value'))
            WHEN f.v->>'op' = 'is' AND bt NOT IN ('json'::regtype, 'jsonb'::regtype) THEN
                format('t.%I IS NULL', c.col)
            WHEN f.v->>'op' = 'is' THEN 'true'
            WHEN f.v->>'op' IN ('eq', 'in') AND NOT (bt IN ('boolean'::regtype, 'smallint'::regtype, 'integer'::regtype,
                     'bigint'::regtype, 'numeric'::regtype, 'real'::regtype, 'double precision'::regtype,
                     'text'::regtype, 'character varying'::regtype, 'character'::regtype, 'uuid'::regtype,
                     'date'::regtype, 'timestamp without time zone'::regtype, 'timestamp with time zone'::regtype)
                     OR (SELECT t.typtype FROM pg_type t WHERE t.oid = bt) = 'e') THEN 'true'
            WHEN f.v->>'op' = 'in' THEN
                format('t.%I = ANY (ARRAY(SELECT jsonb_array_elements_text($1->%s->''value''))::%s[])', c.col, f.n, bt)
            WHEN f.v->>'op' = 'eq' THEN format('t.%I = ($1->%s->>''value'')::%s', c.col, f.n, bt)
            WHEN op IS NOT NULL AND bt IN ('text'::regtype, 'character varying'::regtype) THEN
                format('t.%I COLLATE "C" %s ($1->%s->>''value'')::text', c.col, op, f.n)
            WHEN op IS NOT NULL AND bt IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'numeric'::regtype) THEN
                format('t.%I %s ($1->%s->>''value'')::numeric', c.col, op, f.n)
            WHEN op IS NOT NULL THEN 'true'
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

-- The gateway may read the published columns of ch's table; the refusal names the GRANT that fixes it.
CREATE OR REPLACE FUNCTION pgsse.check_snapshot_reads(ch pgsse.channels) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    missing text;
BEGIN
    missing := pgsse.unreadable_columns(ch, current_user);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: role % may not read columns % of table %, which snapshots of channel % read',
            current_user, missing, ch.source_table, quote_literal(ch.name)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('have the table''s owner (role %s) run: GRANT SELECT (%s) ON %s TO pgsse_gateway;',
                                pgsse.owner_of(ch.source_table),
                                missing, ch.source_table);
    END IF;
END
$$;

-- Refuses a snapshot's shape before any row is read, by pgsse's code alone, so that its words may reach
-- the client: unknown columns or operators, a channel without a table, columns the gateway may not read,
-- and a filter value that is no value of its column's type (the type under any domain: a domain's CHECK
-- is the table owner's code, which runs only in the query itself, and whose words stay in the log).
CREATE OR REPLACE FUNCTION pgsse.snapshot_check(p_channel text, p_filters jsonb, p_order jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch pgsse.channels;
BEGIN
    SELECT * INTO ch FROM pgsse.channels c WHERE c.name = p_channel;
    PERFORM pgsse.snapshot_query(ch, p_filters, p_order);
    PERFORM pgsse.filter_check(p_channel, p_filters);
END
$$;

-- Refuses a filter value that is not a value of its column's type (its base type's input, by pgsse's code
-- alone: a domain's CHECK is the table owner's), so that a filter means one thing on a table channel's
-- snapshots, streams and history alike: 400 everywhere, rather than rows in one and none in another.
CREATE OR REPLACE FUNCTION pgsse.filter_check(p_channel text, p_filters jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch   pgsse.channels;
    f    record;
    base oid;
    v    text;
BEGIN
    SELECT * INTO ch FROM pgsse.channels c WHERE c.name = p_channel;
    FOR f IN SELECT e.value AS filter, s.key, a.atttypid AS typ
               FROM jsonb_array_elements(p_filters) e
               JOIN pgsse.snapshot_columns(ch) s ON s.key = e.value->>'key'
               JOIN pg_attribute a ON a.attrelid = ch.source_table AND a.attname = s.col
              WHERE e.value->>'value' <> 'null' OR e.value->>'op' <> 'is' LOOP
        base := f.typ;
        WHILE (SELECT t.typtype FROM pg_type t WHERE t.oid = base) = 'd' LOOP
            base := (SELECT t.typbasetype FROM pg_type t WHERE t.oid = base);
        END LOOP;
        IF f.filter->>'op' = 'is' THEN
            IF base <> 'boolean'::regtype THEN
                RAISE EXCEPTION 'pgsse: filter on %: is.% needs a boolean column, and its type is %', f.key,
                    f.filter->>'value', format_type(f.typ, NULL) USING ERRCODE = 'invalid_parameter_value';
            END IF;
            CONTINUE;
        END IF;
        -- Only scalar types: an array's or a composite's input would read its elements through their domains.
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_type t WHERE t.oid = base
                                     AND (t.typtype = 'e' OR (t.typtype = 'b' AND t.typcategory <> 'A')));
        FOREACH v IN ARRAY CASE WHEN f.filter->>'op' = 'in'
                                THEN ARRAY(SELECT jsonb_array_elements_text(f.filter->'value'))
                                ELSE ARRAY[f.filter->>'value'] END LOOP
            -- Any refusal of the type's input (a regclass names no table, say) is the filter's fault.
            BEGIN
                EXECUTE format('SELECT %L::%s', v, base::regtype);
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION 'pgsse: filter on %: % is not a value of its type, %', f.key, quote_literal(v),
                    format_type(f.typ, NULL) USING ERRCODE = 'invalid_parameter_value';
            END;
        END LOOP;
    END LOOP;
END
$$;

-- The current rows of table channel p_channel as its events carry them (published columns, under their
-- published names), at most p_limit. Runs as the gateway, with its own SELECT on those columns (and the
-- table's row security, if any), so that casts, domain checks and policies of the table's owner run with
-- no other rights. Volatile, since those may write; the caller's REPEATABLE READ transaction keeps it
-- one snapshot.
CREATE OR REPLACE FUNCTION pgsse.snapshot(p_channel text, p_filters jsonb, p_order jsonb, p_limit bigint)
RETURNS SETOF jsonb LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch   pgsse.channels;
    body text;
BEGIN
    SELECT * INTO ch FROM pgsse.channels c WHERE c.name = p_channel;
    body := pgsse.snapshot_query(ch, p_filters, p_order);
    -- jsonb_build_object takes at most 100 arguments: wide tables are built 50 columns at a time.
    RETURN QUERY EXECUTE 'SELECT ' || (
        SELECT coalesce(string_agg(part, ' || ' ORDER BY g), '''{}''::jsonb')
          FROM (SELECT (n - 1) / 50 AS g,
                       'jsonb_build_object(' || string_agg(format('%L, t.%I', s.key, s.col), ', ' ORDER BY n) || ')' AS part
                  FROM pgsse.snapshot_columns(ch) WITH ORDINALITY AS s(key, col, typ, n)
                 GROUP BY 1) parts)
        || ' ' || body || ' LIMIT $2' USING p_filters, p_limit;
END
$$;

-- How many rows pgsse.snapshot would return, counting no further than p_cap; refuses what it would refuse.
CREATE OR REPLACE FUNCTION pgsse.snapshot_count(p_channel text, p_filters jsonb, p_order jsonb, p_cap bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    ev      record;
    through bigint;
    deleted bigint;
BEGIN
    PERFORM pgsse.within('retain');
    -- One gateway prunes at a time; the lock is the meta row's, which no role but the owner may take.
    SELECT least(p_cutoff, now() - m.min_age) INTO p_cutoff FROM pgsse.meta m FOR UPDATE SKIP LOCKED;
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    ch      record;
    cutoff  bigint;
    through bigint;
    n       bigint;
    deleted bigint := 0;
BEGIN
    PERFORM pgsse.within('retain');
    -- One gateway prunes at a time; the lock is the meta row's, which no role but the owner may take.
    SELECT greatest(p_keep, m.min_events) INTO p_keep FROM pgsse.meta m FOR UPDATE SKIP LOCKED;
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

-- Retention in a transaction of its own: by age (events older than p_cutoff) unless p_cutoff is NULL, then
-- by count (each channel's newest p_keep stay); at most p_batch events. Invoker, like pgsse.sequence_step.
CREATE OR REPLACE PROCEDURE pgsse.retain(p_cutoff timestamptz, p_keep bigint, p_batch integer,
                                         INOUT pruned bigint DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    COMMIT;
    -- As in pgsse.sequence_step.
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE;
    PERFORM pg_catalog.set_config('client_min_messages', 'error', true);
    IF p_cutoff IS NOT NULL THEN
        pruned := pgsse.prune(p_cutoff, p_batch);
    ELSE
        pruned := pgsse.prune_channels(p_keep, p_batch);
    END IF;
    COMMIT;
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

-- The first event on p_channel that transaction p_txid recorded, if it is in the log (its id is above
-- p_after): the gateway asks after its own write commits, to answer with the event's id, in the statement
-- that takes a sequencing step (pgsse.sequence) first: volatile, so that it sees what that step moved.
-- It takes no lock itself.
DROP FUNCTION IF EXISTS pgsse.sequenced(xid8, bigint, text);
CREATE OR REPLACE FUNCTION pgsse.sequenced(p_txid xid8, p_after bigint, p_channel text,
                                           OUT event_id bigint, OUT payload jsonb)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    SELECT e.id, e.payload INTO event_id, payload FROM pgsse.events e
     WHERE e.id > p_after AND e.txid = p_txid AND e.channel = p_channel ORDER BY e.id LIMIT 1;
END
$$;

-- Raises again, in pgsse's own words, an error that a write to table p_table met: the table's triggers,
-- rules, checks and policies are its owner's code, which runs as the gateway and may put anything in a
-- message (another channel's events, say). The client learns the kind of refusal, and a column or
-- constraint only by a name the table really has. Call only from an exception handler.
CREATE OR REPLACE FUNCTION pgsse.refused(p_table regclass, p_code text, p_column text, p_constraint text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    col text := (SELECT a.attname FROM pg_attribute a
                  WHERE a.attrelid = p_table AND a.attname = p_column AND a.attnum > 0 AND NOT a.attisdropped);
    con text := (SELECT c.conname FROM pg_constraint c WHERE c.conrelid = p_table AND c.conname = p_constraint);
BEGIN
    CASE
        WHEN p_code IN ('23505', '23P01') THEN
            RAISE EXCEPTION 'a row with this key already exists' USING ERRCODE = p_code, CONSTRAINT = coalesce(con, '');
        WHEN p_code = '23502' THEN
            RAISE EXCEPTION 'a column that must not be null has no value' USING ERRCODE = p_code, COLUMN = coalesce(col, '');
        WHEN p_code = '23514' THEN
            RAISE EXCEPTION 'a value violates a check constraint' USING ERRCODE = p_code, CONSTRAINT = coalesce(con, '');
        WHEN p_code = '23503' THEN
            RAISE EXCEPTION 'a referenced row does not exist' USING ERRCODE = p_code, CONSTRAINT = coalesce(con, '');
        WHEN p_code LIKE '22%' THEN
            RAISE EXCEPTION 'a value does not fit its column' USING ERRCODE = p_code;
        WHEN p_code = '42501' THEN
            RAISE EXCEPTION 'table % refused the gateway''s write (its privileges or row security)', p_table
                USING ERRCODE = p_code;
        WHEN p_code LIKE '40%' OR p_code LIKE '53%' OR p_code LIKE '57%' OR p_code LIKE '08%' THEN
            RAISE EXCEPTION 'the write did not go through (%), nothing was written', p_code USING ERRCODE = p_code;
        ELSE
            RAISE EXCEPTION 'table %''s own code (a trigger, rule or check) refused the write', p_table
                USING ERRCODE = 'PGS02';
    END CASE;
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
    code     text;
    failed_column text;
    failed_constraint text;
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
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('have the table''s owner run: GRANT %s ON %s TO %I;',
                                CASE WHEN captured THEN 'INSERT' ELSE 'INSERT, SELECT' END, ch.source_table, current_user);
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
    -- A serial column the row leaves to its default draws from its sequence, which takes a grant of its own.
    SELECT string_agg(format('GRANT USAGE ON SEQUENCE %s TO %I;', q.seq, current_user), ' ') INTO statement
      FROM (SELECT pg_get_serial_sequence(ch.source_table::text, a.attname) AS seq FROM pg_attribute a
             WHERE a.attrelid = ch.source_table AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = ''
               AND NOT a.attname = ANY (coalesce(named, '{}'))) q
     WHERE q.seq IS NOT NULL AND NOT has_sequence_privilege(q.seq, 'USAGE');
    IF statement IS NOT NULL THEN
        RAISE EXCEPTION 'the gateway''s role % may not draw the serial numbers of table %', current_user, ch.source_table
            USING ERRCODE = 'insufficient_privilege', HINT = 'have the table''s owner run: ' || statement;
    END IF;
    statement := CASE WHEN cols IS NULL THEN format('INSERT INTO %s AS t DEFAULT VALUES', ch.source_table)
                 ELSE format('INSERT INTO %s AS t (%s) SELECT %s FROM jsonb_populate_record(NULL::%s, $1)',
                             ch.source_table, cols, cols, ch.source_table) END;
    -- The table's deferred checks too run inside the handler below.
    SET CONSTRAINTS ALL IMMEDIATE;
    BEGIN
        IF captured THEN
            EXECUTE statement USING mapped;
        ELSE
            EXECUTE statement || ' RETURNING to_jsonb(t.*)' USING mapped INTO new_row;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, failed_column = COLUMN_NAME, failed_constraint = CONSTRAINT_NAME;
        PERFORM pgsse.refused(ch.source_table, code, failed_column, failed_constraint);
    END;
    IF captured THEN
        txid := pg_current_xact_id();
        after := pgsse.issued_head();
    ELSE
        payload := pgsse.project((SELECT c FROM pgsse.channels c WHERE c.name = p_channel), new_row);
    END IF;
END
$$;

-- "key: not a value of its type, T" for the key of p_row whose value the channel's table cannot take (the
-- first, by key), for the message of a failed pgsse.insert_json: run only after such a failure, each key
-- tried on its own. Its words are pgsse's: a domain's CHECK that raises says nothing to the client.
CREATE OR REPLACE FUNCTION pgsse.bad_column(p_channel text, p_row jsonb) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch pgsse.channels;
    k  record;
BEGIN
    SELECT * INTO ch FROM pgsse.channels c WHERE c.name = p_channel;
    FOR k IN SELECT e.key, e.value, a.attname, format_type(a.atttypid, a.atttypmod) AS typ FROM jsonb_each(p_row) e
               JOIN pg_attribute a ON a.attrelid = ch.source_table AND a.attnum > 0 AND NOT a.attisdropped
                AND (a.attname = e.key OR (ch.camel_case AND pgsse.camel_case(a.attname) = e.key))
              ORDER BY e.key LOOP
        BEGIN
            EXECUTE format('SELECT jsonb_populate_record(NULL::%s, $1)', ch.source_table)
                USING jsonb_build_object(k.attname, k.value);
        EXCEPTION WHEN data_exception THEN
            RETURN format('%s: not a value of its type, %s', to_json(k.key), k.typ);
        END;
    END LOOP;
    RETURN NULL;
END
$$;

-- The gateway's POST to a channel without a table: pgsse.publish. Its event is in
-- pgsse.sequenced(txid, after, p_channel) once committed. A table channel's events are its rows'.
CREATE OR REPLACE FUNCTION pgsse.publish_json(p_channel text, p_event text, p_payload jsonb,
                                              OUT txid xid8, OUT after bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgsse.channels c WHERE c.name = p_channel AND c.source_table IS NOT NULL) THEN
        RAISE EXCEPTION 'pgsse: channel % publishes a table: its events are its rows''', quote_literal(p_channel)
            USING ERRCODE = 'insufficient_privilege', HINT = 'insert a row with pgsse.insert_json';
    END IF;
    PERFORM pgsse.publish(p_channel, p_event, p_payload);
    txid := pg_current_xact_id();
    after := pgsse.issued_head();
END
$$;

-- Channel p_channel, which the caller may clear; refused unless pgsse.channels allows it (publish_table's or
-- create_channel's allow_clear): the gateway's login may leak, so no flag of its own can.
CREATE OR REPLACE FUNCTION pgsse.clearable(p_channel text) RETURNS pgsse.channels
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch pgsse.channels;
BEGIN
    SELECT * INTO ch FROM pgsse.channels c WHERE c.name = p_channel;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgsse: unknown channel %', quote_literal(p_channel) USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT ch.allow_clear THEN
        RAISE EXCEPTION 'clearing is not enabled for channel %', p_channel
            USING ERRCODE = 'insufficient_privilege',
                  HINT = CASE WHEN ch.source_table IS NULL
                              THEN format('have pgsse''s admin run: SELECT pgsse.create_channel(%L, true);', p_channel)
                              ELSE format('have pgsse''s admin publish table %s again with allow_clear => true', ch.source_table) END;
    END IF;
    RETURN ch;
END
$$;

-- Clears channel p_channel, which must allow it: drops its events and stages its `clear` event; until
-- pgsse.end_clear, the end of the transaction, or anything more staged on the channel, deleting rows of its
-- table records no row events. The clear event is recorded first, so no caller can use the quiet deletes
-- without clients dropping every row, nor hide the delete of a row that clients saw after it.
CREATE OR REPLACE FUNCTION pgsse.begin_clear(p_channel text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    ch pgsse.channels := pgsse.clearable(p_channel);
BEGIN
    DELETE FROM pgsse.events e WHERE e.channel = ch.name;
    PERFORM pgsse.stage(ch.name, 'clear', jsonb_build_object('clearedAt', to_jsonb(clock_timestamp())), true);
    IF ch.source_table IS NOT NULL THEN
        INSERT INTO pgsse.clearing (txid, source_table, after_seq)
        VALUES (pg_current_xact_id(), ch.source_table, currval('pgsse.staged_seq'));
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgsse.end_clear() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
    DELETE FROM pgsse.clearing c WHERE c.txid = pg_current_xact_id()
$$;

-- A POST's Idempotency-Key p_key of caller p_scope (stored as its digest: a token's subject may be long),
-- for request p_request (channel, event and body): fresh the first time, and then remembered in the
-- caller's transaction, so exactly when its write commits. Otherwise same says whether the request is the
-- one the key was first sent with, and if so txid and after find its write's event (pgsse.sequenced).
-- Keys last a day; a few expired ones go with each new one. Only pgsse.insert_json_once and
-- pgsse.publish_json_once, as the gateway calls them, remember a key: a key remembered without its write
-- would make a later request with it answer that it committed. A repeat that finds the key's first
-- request still being written waits a second for it, then is refused (409), holding no connection longer.
DROP FUNCTION IF EXISTS pgsse.insert_json_once(text, jsonb, text, text, text);
DROP FUNCTION IF EXISTS pgsse.publish_json_once(text, text, jsonb, text, text, text);
CREATE OR REPLACE FUNCTION pgsse.remember(p_scope text, p_key text, p_request text,
                                          OUT fresh boolean, OUT same boolean, OUT txid xid8, OUT after bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    who    text := encode(sha256(convert_to(p_scope, 'UTF8')), 'hex');
    digest text := encode(sha256(convert_to(p_request, 'UTF8')), 'hex');
    kept   pgsse.idempotency;
BEGIN
    IF current_query() IS DISTINCT FROM 'SELECT * FROM pgsse.insert_json_once($1, $2, $3, $4, $5)'
       AND current_query() IS DISTINCT FROM 'SELECT * FROM pgsse.publish_json_once($1, $2, $3, $4, $5, $6)' THEN
        RAISE EXCEPTION 'pgsse: Idempotency-Keys are remembered only by the gateway''s own writes'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM pgsse.idempotency i
     WHERE i.scope = who AND i.key = p_key AND i.created_at < now() - interval '1 day';
    DELETE FROM pgsse.idempotency i
     WHERE (i.scope, i.key) IN (SELECT o.scope, o.key FROM pgsse.idempotency o
                                 WHERE o.created_at < now() - interval '1 day'
                                 ORDER BY o.created_at LIMIT 10 FOR UPDATE SKIP LOCKED);
    BEGIN
        INSERT INTO pgsse.idempotency (scope, key, request, txid, after)
        VALUES (who, p_key, digest, pg_current_xact_id(), pgsse.issued_head())
        ON CONFLICT (scope, key) DO NOTHING;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'pgsse: a request with this Idempotency-Key is still being written: send it again shortly'
            USING ERRCODE = 'PGS04';
    END;
    IF FOUND THEN
        fresh := true;
        same := true;
        RETURN;
    END IF;
    SELECT * INTO kept FROM pgsse.idempotency i WHERE i.scope = who AND i.key = p_key;
    fresh := false;
    same := kept.request = digest;
    IF same THEN
        txid := kept.txid;
        after := kept.after;
    END IF;
END
$$;

-- pgsse.insert_json and pgsse.publish_json under an Idempotency-Key: they write only when the key is
-- fresh, in the same transaction as the key; otherwise txid and after are the first write's (see
-- pgsse.remember). Invoker, as the writes they call are.
CREATE OR REPLACE FUNCTION pgsse.insert_json_once(p_channel text, p_row jsonb, p_scope text, p_key text,
    p_request text, OUT txid bigint, OUT after bigint, OUT payload text, OUT fresh boolean, OUT same boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    first xid8;
BEGIN
    SELECT r.fresh, r.same, r.txid, r.after INTO fresh, same, first, after FROM pgsse.remember(p_scope, p_key, p_request) r;
    IF fresh THEN
        SELECT w.txid, w.after, w.payload::text INTO first, after, payload FROM pgsse.insert_json(p_channel, p_row) w;
    END IF;
    txid := first::text::bigint;
END
$$;

CREATE OR REPLACE FUNCTION pgsse.publish_json_once(p_channel text, p_event text, p_payload jsonb, p_scope text,
    p_key text, p_request text, OUT txid bigint, OUT after bigint, OUT fresh boolean, OUT same boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    first xid8;
BEGIN
    SELECT r.fresh, r.same, r.txid, r.after INTO fresh, same, first, after FROM pgsse.remember(p_scope, p_key, p_request) r;
    IF fresh THEN
        SELECT w.txid, w.after INTO first, after FROM pgsse.publish_json(p_channel, p_event, p_payload) w;
    END IF;
    txid := first::text::bigint;
END
$$;

-- Empties a channel that allows it: records its `clear` event and drops its events, then deletes its
-- table's rows (recording no row events), in pgsse.sequenced(txid, after, p_channel) once committed. Runs
-- as the gateway's role: deleting the rows takes the table's own DELETE grant.
CREATE OR REPLACE FUNCTION pgsse.clear_channel(p_channel text, OUT txid xid8, OUT after bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch pgsse.channels := pgsse.clearable(p_channel);
    code              text;
    failed_column     text;
    failed_constraint text;
BEGIN
    IF ch.source_table IS NOT NULL AND NOT has_table_privilege(ch.source_table, 'DELETE') THEN
        RAISE EXCEPTION 'the gateway''s role % may not delete from table %', current_user, ch.source_table
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('have the table''s owner run: GRANT DELETE ON %s TO %I;', ch.source_table, current_user);
    END IF;
    txid := pg_current_xact_id();
    after := pgsse.issued_head();
    PERFORM pgsse.begin_clear(p_channel);
    IF ch.source_table IS NOT NULL THEN
        PERFORM set_config('pgsse.suppress_capture', 'on', true);
        SET CONSTRAINTS ALL IMMEDIATE;
        BEGIN
            EXECUTE format('DELETE FROM %s', ch.source_table);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, failed_column = COLUMN_NAME,
                                    failed_constraint = CONSTRAINT_NAME;
            PERFORM pgsse.refused(ch.source_table, code, failed_column, failed_constraint);
        END;
        PERFORM set_config('pgsse.suppress_capture', '', true);
        PERFORM pgsse.end_clear();
    END IF;
END
$$;

-- Tables whose capture triggers are not what pgsse.install_capture makes of their channel now (made by an
-- earlier schema, or restored onto a table with a new oid) get theirs anew.
DO $$
DECLARE
    ch pgsse.channels;
BEGIN
    FOR ch IN SELECT * FROM pgsse.channels c
               WHERE c.source_table IS NOT NULL
                 AND EXISTS (SELECT 1 FROM pg_catalog.pg_class r WHERE r.oid = c.source_table)
                 AND (NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.source_table
                                     AND t.tgname = 'pgsse_capture_stage'
                                     AND t.tgfoid = 'pgsse.capture_stage()'::regprocedure
                                     AND t.tgargs = (SELECT string_agg(convert_to(a, current_setting('server_encoding'))
                                                                       || '\x00'::bytea, ''::bytea ORDER BY i)
                                                       FROM unnest(pgsse.capture_args(c)) WITH ORDINALITY AS u(a, i)))
                      OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.source_table
                                        AND t.tgname = 'pgsse_capture' AND t.tgfoid = 'pgsse.capture_row()'::regprocedure)
                      OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.source_table
                                        AND t.tgname = 'pgsse_truncate'))
    LOOP
        PERFORM pgsse.install_capture(ch);
    END LOOP;
END
$$;

-- Schema 8's capture trigger ran as pgsse's owner, with the row's casts, and pgsse.publish staged at commit
-- through an outbox; no trigger uses either any more.
DROP FUNCTION IF EXISTS pgsse.capture();
DROP TABLE IF EXISTS pgsse.outbox;
DROP FUNCTION IF EXISTS pgsse.flush_outbox();

-- pgsse_owner owns everything in the schema, so that SECURITY DEFINER functions run with its rights only.
-- Installs made before schema 9 belonged to whoever migrated them, often a superuser.
DO $$
DECLARE
    o record;
BEGIN
    IF (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'pgsse') <> 'pgsse_owner'::regrole THEN
        ALTER SCHEMA pgsse OWNER TO pgsse_owner;
    END IF;
    -- Tables first: their identity sequences and indexes follow them.
    FOR o IN SELECT c.oid::regclass AS name, c.relkind FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'pgsse'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S')
              ORDER BY c.relkind = 'S' LOOP
        IF (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = o.name) <> 'pgsse_owner'::regrole THEN
            EXECUTE format('ALTER %s %s OWNER TO pgsse_owner',
                           CASE o.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END, o.name);
        END IF;
    END LOOP;
    FOR o IN SELECT p.oid::regprocedure AS name FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'pgsse'::regnamespace AND p.proowner <> 'pgsse_owner'::regrole LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO pgsse_owner', o.name);
    END LOOP;
END
$$;

-- Least privilege: nothing for PUBLIC (a published table's writers need nothing: capture's triggers fire
-- whatever their function's grants), the gateway reads the log and calls its own entry points, publishers
-- call pgsse.publish.
REVOKE ALL ON SCHEMA pgsse FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pgsse FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgsse FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgsse FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA pgsse FROM PUBLIC;
GRANT USAGE ON SCHEMA pgsse TO pgsse_gateway, pgsse_publisher;
GRANT SELECT ON pgsse.events, pgsse.channels, pgsse.meta, pgsse.migrations TO pgsse_gateway;
GRANT SELECT ON SEQUENCE pgsse.event_id_seq TO pgsse_gateway;
GRANT EXECUTE ON FUNCTION
    pgsse.replay(bigint, bigint, text[], bigint), pgsse.watermark(text[]), pgsse.history(text, bigint, bigint),
    pgsse.prune(timestamptz, integer), pgsse.prune_channels(bigint, integer),
    pgsse.insert_json(text, jsonb), pgsse.bad_column(text, jsonb), pgsse.publish_json(text, text, jsonb),
    pgsse.refused(regclass, text, text, text),
    pgsse.clear_channel(text), pgsse.clearable(text), pgsse.begin_clear(text), pgsse.end_clear(),
    pgsse.camel_case(text), pgsse.sequence(integer, boolean), pgsse.sequenced(xid8, bigint, text),
    pgsse.issued_head(), pgsse.backlog(), pgsse.project(pgsse.channels, jsonb), pgsse.camel_keys(jsonb),
    pgsse.snapshot(text, jsonb, jsonb, bigint), pgsse.snapshot_count(text, jsonb, jsonb, bigint),
    pgsse.snapshot_query(pgsse.channels, jsonb, jsonb), pgsse.check_snapshot_reads(pgsse.channels),
    pgsse.snapshot_check(text, jsonb, jsonb), pgsse.filter_check(text, jsonb), pgsse.base_type(oid),
    pgsse.unreadable_columns(pgsse.channels, name),
    pgsse.owner_of(regclass),
    pgsse.snapshot_seam(text[]), pgsse.snapshot_columns(pgsse.channels), pgsse.within(text),
    pgsse.remember(text, text, text), pgsse.insert_json_once(text, jsonb, text, text, text),
    pgsse.publish_json_once(text, text, jsonb, text, text, text)
    TO pgsse_gateway;
GRANT EXECUTE ON PROCEDURE pgsse.sequence_step(boolean, xid8, bigint, text, bigint, boolean, bigint, text),
    pgsse.retain(timestamptz, bigint, integer, bigint) TO pgsse_gateway;
GRANT EXECUTE ON FUNCTION pgsse.publish(text, text, jsonb) TO pgsse_publisher;
