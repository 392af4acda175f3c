-- pgsse functions: the gateway's writes. POST's inserts and publishes (keyed ones remembered for their
-- Idempotency-Key), clearing a channel, and a table's refusals said in pgsse's own words.

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
            RAISE EXCEPTION 'pgsse: a row with this key already exists' USING ERRCODE = p_code, CONSTRAINT = coalesce(con, '');
        WHEN p_code = '23502' THEN
            RAISE EXCEPTION 'pgsse: a column that must not be null has no value' USING ERRCODE = p_code, COLUMN = coalesce(col, '');
        WHEN p_code = '23514' THEN
            RAISE EXCEPTION 'pgsse: a value violates a check constraint' USING ERRCODE = p_code, CONSTRAINT = coalesce(con, '');
        WHEN p_code = '23503' THEN
            RAISE EXCEPTION 'pgsse: a referenced row does not exist' USING ERRCODE = p_code, CONSTRAINT = coalesce(con, '');
        WHEN p_code LIKE '22%' THEN
            RAISE EXCEPTION 'pgsse: a value does not fit its column' USING ERRCODE = p_code;
        WHEN p_code = '42501' THEN
            RAISE EXCEPTION 'pgsse: table % refused the gateway''s write (its privileges or row security)', p_table
                USING ERRCODE = p_code;
        WHEN p_code LIKE '40%' OR p_code LIKE '53%' OR p_code LIKE '57%' OR p_code LIKE '08%' THEN
            RAISE EXCEPTION 'pgsse: the write did not go through (%), nothing was written', p_code USING ERRCODE = p_code;
        ELSE
            RAISE EXCEPTION 'pgsse: table %''s own code (a trigger, rule or check) refused the write', p_table
                USING ERRCODE = 'PGS02';
    END CASE;
END
$$;

-- How pgsse.insert_json writes a row whose keys are p_keys (NULL: the row is not a JSON object) to channel
-- p_channel, after every check that depends on the keys and not on their values, refusing as it does:
-- `columns` is the column each key names, in p_keys' order, and `statement` inserts the row ($1, jsonb)
-- whose keys are those columns. Each key names a column exactly, or (camel_case) the camelCase form of
-- one; on such a channel a column given both ways is refused, since which would win is not obvious (and a
-- grant's filter may have checked the other). Runs as the gateway's role: the table's own grants decide.
-- `guarded`, where the table captures inserts, is that statement made to keep: the gateway keeps its text
-- per channel and key set, so that a POST is one statement and no lookup. It fails (PGS05, nothing
-- written) unless the channel still takes these columns into this very table as now (not made read-only,
-- republished with other columns or case, nor another table given the name, nor an exact name added for
-- a camelCase key) and the gateway may still insert into it as insert_plan requires; a column dropped
-- since makes it fail too, and the gateway then falls back to pgsse.insert_json, whose refusals are
-- pgsse's own words. It answers one row whatever the table's rules and triggers do with the insert: the
-- transaction and the issued head (see pgsse.sequenced).
CREATE OR REPLACE FUNCTION pgsse.insert_plan(p_channel text, p_keys text[], OUT source regclass,
    OUT captured boolean, OUT columns text[], OUT statement text, OUT guarded text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch      pgsse.channels;
    unknown text[];
    cols    text;
    twice   text[];
    ambiguous text[];
    bent    text[];
    grants  text;
BEGIN
    SELECT * INTO ch FROM pgsse.channels c WHERE c.name = p_channel;
    IF ch.source_table IS NULL THEN
        RAISE EXCEPTION 'pgsse: channel % publishes no table', quote_literal(p_channel) USING ERRCODE = 'no_data_found';
    END IF;
    IF p_keys IS NULL THEN
        RAISE EXCEPTION 'pgsse: the row must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT ch.writable THEN
        RAISE EXCEPTION 'pgsse: channel % does not take POST: publish its table with writable => true', p_channel
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    source := ch.source_table;
    -- The row comes back from the log when inserts are captured; otherwise RETURNING reads it.
    captured := 'INSERT' = ANY (ch.operations);
    IF NOT (has_table_privilege(ch.source_table, 'INSERT')
            AND (captured OR has_table_privilege(ch.source_table, 'SELECT'))) THEN
        RAISE EXCEPTION 'pgsse: the gateway''s role % may not insert into table % (grant %)', current_user,
            ch.source_table, CASE WHEN captured THEN 'INSERT' ELSE 'INSERT and SELECT' END
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('have the table''s owner run: GRANT %s ON %s TO %I;',
                                CASE WHEN captured THEN 'INSERT' ELSE 'INSERT, SELECT' END, ch.source_table, current_user);
    END IF;
    -- Each column's camelCase form is made once, and keys are joined to names and forms by equality: a
    -- wide table and many keys cost their sum, not their product.
    WITH attrs AS MATERIALIZED (
             SELECT a.attname::text AS name, a.attnum,
                    CASE WHEN ch.camel_case AND position('_' IN a.attname) > 0 THEN pgsse.camel_case(a.attname) END AS camel
               FROM pg_attribute a WHERE a.attrelid = ch.source_table AND a.attnum > 0 AND NOT a.attisdropped),
         keys AS (SELECT k.key, k.ord FROM unnest(p_keys) WITH ORDINALITY AS k(key, ord)),
         exact AS (SELECT k.key, a.name, a.attnum FROM keys k JOIN attrs a ON a.name = k.key),
         camels AS (SELECT k.key, min(a.name) AS name, min(a.attnum) AS attnum, count(*) AS n
                      FROM keys k JOIN attrs a ON a.camel = k.key GROUP BY k.key)
    SELECT array_agg(m.key ORDER BY m.key) FILTER (WHERE m.attname IS NULL),
           string_agg(quote_ident(m.attname), ', ' ORDER BY m.attnum),
           array_agg(m.attname ORDER BY m.ord),
           array_agg(m.key ORDER BY m.key) FILTER (WHERE m.attname <> m.key),
           array_agg(m.key ORDER BY m.key) FILTER (WHERE m.forms > 1)
      INTO unknown, cols, columns, bent, ambiguous
      FROM (SELECT k.key, k.ord, coalesce(e.name, b.name) AS attname, coalesce(e.attnum, b.attnum) AS attnum,
                   CASE WHEN e.name IS NULL THEN b.n END AS forms
              FROM keys k LEFT JOIN exact e ON e.key = k.key LEFT JOIN camels b ON b.key = k.key) m;
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: unknown column%: %', CASE WHEN cardinality(unknown) > 1 THEN 's' ELSE '' END,
            array_to_string(unknown, ', ') USING ERRCODE = 'undefined_column';
    END IF;
    -- A camelCase key that no column has as its name, but that several columns' camelCase forms are
    -- (posted_by and posted__by): which one it meant is not for pgsse to choose. Told first, since the
    -- column it stands for, which the next check counts, is not known.
    IF ambiguous IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: key % is the camelCase form of more than one column of table %: send the column''s own name',
            array_to_string(ambiguous, ', '), ch.source_table USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(d ORDER BY d) INTO twice FROM (SELECT n FROM unnest(columns) n GROUP BY n HAVING count(*) > 1) x(d);
    IF twice IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: column % given twice, as its name and its camelCase form', array_to_string(twice, ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(k ORDER BY k) INTO unknown FROM unnest(columns) k
     WHERE ch.writable_columns IS NOT NULL AND NOT k = ANY (ch.writable_columns);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: channel % takes no POST of column%: % (its writable_columns)', p_channel,
            CASE WHEN cardinality(unknown) > 1 THEN 's' ELSE '' END, array_to_string(unknown, ', ')
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- A serial column the row leaves to its default draws from its sequence, which takes a grant of its own.
    SELECT string_agg(format('GRANT USAGE ON SEQUENCE %s TO %I;', q.seq, current_user), ' ') INTO grants
      FROM (SELECT pg_get_serial_sequence(ch.source_table::text, a.attname) AS seq FROM pg_attribute a
             WHERE a.attrelid = ch.source_table AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = ''
               AND NOT a.attname = ANY (coalesce(columns, '{}'))) q
     WHERE q.seq IS NOT NULL AND NOT has_sequence_privilege(q.seq, 'USAGE, UPDATE');
    IF grants IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: the gateway''s role % may not draw the serial numbers of table %', current_user, ch.source_table
            USING ERRCODE = 'insufficient_privilege', HINT = 'have the table''s owner run: ' || grants;
    END IF;
    IF cols IS NULL THEN
        statement := format('INSERT INTO %s AS t DEFAULT VALUES', ch.source_table);
        RETURN;
    END IF;
    statement := format('INSERT INTO %s AS t (%s) SELECT %s FROM jsonb_populate_record(NULL::%s, $1)',
                        ch.source_table, cols, cols, ch.source_table);
    -- Run in the gateway's session, whose search_path is only pg_catalog: names and operators qualified.
    -- Names, not oids: the table and the check resolve together whenever the statement is planned again.
    -- In WITH, an INSERT that a rule would rewrite fails rather than run.
    IF captured THEN
        guarded := format(
            'WITH inserted AS (INSERT INTO %1$s AS t (%2$s) SELECT %2$s FROM pg_catalog.jsonb_populate_record(NULL::%1$s, '
            '$1::pg_catalog.text::pg_catalog.jsonb) WHERE CASE WHEN EXISTS (SELECT FROM pgsse.channels c '
            'WHERE c.name OPERATOR(pg_catalog.=) %3$L AND c.source_table OPERATOR(pg_catalog.=) %4$L::pg_catalog.regclass '
            'AND c.writable AND %5$L OPERATOR(pg_catalog.=) ANY (c.operations) AND c.camel_case OPERATOR(pg_catalog.=) %6$L '
            'AND (c.writable_columns IS NULL OR %7$L::pg_catalog.text[] OPERATOR(pg_catalog.<@) c.writable_columns) '
            'AND pg_catalog.has_table_privilege(%4$L::pg_catalog.regclass, ''INSERT''))%8$s '
            'THEN true ELSE pgsse.kept_insert_stale() END) '
            'SELECT pg_catalog.pg_current_xact_id()::pg_catalog.text::pg_catalog.int8, pgsse.issued_head()',
            ch.source_table, cols, p_channel, ch.source_table::text, 'INSERT', ch.camel_case, columns,
            -- Nor a column since given a camelCase key's own name, or another column's camelCase form the
            -- same key (cheaply sifted by its letters first, since the check runs with every POST).
            CASE WHEN bent IS NOT NULL THEN format(
                ' AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) %1$L::pg_catalog.regclass '
                'AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped AND (a.attname OPERATOR(pg_catalog.=) ANY (%2$L::pg_catalog.name[]) '
                'OR (pg_catalog.lower(pg_catalog.replace(a.attname::pg_catalog.text, ''_'', '''') COLLATE pg_catalog."C") OPERATOR(pg_catalog.=) ANY (%3$L::pg_catalog.text[]) '
                'AND a.attname OPERATOR(pg_catalog.<>) ALL (%4$L::pg_catalog.name[]) '
                'AND pgsse.camel_case(a.attname::pg_catalog.text) OPERATOR(pg_catalog.=) ANY (%2$L::pg_catalog.text[]))))',
                -- Lower-cased as attname is, in the C collation, whatever the database's default.
                ch.source_table::text, bent, (SELECT array_agg(lower(b COLLATE "C")) FROM unnest(bent) b), columns) ELSE '' END);
    END IF;
END
$$;

-- The failure of a kept insert (pgsse.insert_plan's `guarded`) whose channel or table changed since it
-- was made. Volatile, so that it runs only when the check before it fails.
CREATE OR REPLACE FUNCTION pgsse.kept_insert_stale() RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'pgsse: the channel changed since this insert was kept' USING ERRCODE = 'PGS05';
END
$$;

-- The gateway's POST to a table channel: inserts the row that the object's keys describe (see
-- pgsse.insert_plan). Runs as the gateway's role, so the table's own grants decide whether the gateway
-- may write it. Its event is in pgsse.sequenced(txid, after, p_channel) once committed; a table that does
-- not capture inserts records none, and `payload` is the row as the channel would publish it.
CREATE OR REPLACE FUNCTION pgsse.insert_json(p_channel text, p_row jsonb,
                                             OUT txid xid8, OUT after bigint, OUT payload jsonb)
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    keys     text[] := CASE WHEN jsonb_typeof(p_row) = 'object' THEN ARRAY(SELECT jsonb_object_keys(p_row)) END;
    plan     record;
    mapped   jsonb;
    new_row  jsonb;
    code     text;
    failed_column text;
    failed_constraint text;
BEGIN
    SELECT * INTO plan FROM pgsse.insert_plan(p_channel, keys);
    mapped := (SELECT jsonb_object_agg(u.col, p_row -> u.key) FROM unnest(keys, plan.columns) AS u(key, col));
    -- The table's deferred checks too run inside the handler below.
    SET CONSTRAINTS ALL IMMEDIATE;
    BEGIN
        IF plan.captured THEN
            EXECUTE plan.statement USING mapped;
        ELSE
            EXECUTE plan.statement || ' RETURNING to_jsonb(t.*)' USING mapped INTO new_row;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, failed_column = COLUMN_NAME, failed_constraint = CONSTRAINT_NAME;
        PERFORM pgsse.refused(plan.source, code, failed_column, failed_constraint);
    END;
    IF plan.captured THEN
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
        RAISE EXCEPTION 'pgsse: clearing is not enabled for channel %', p_channel
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
        RAISE EXCEPTION 'pgsse: the gateway''s role % may not delete from table %', current_user, ch.source_table
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
