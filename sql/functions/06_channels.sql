-- pgsse functions: channels. Creating them, publishing ad-hoc events on them, and publishing a table
-- (with the column grants its snapshots need) or stopping it.

CREATE OR REPLACE FUNCTION pgsse.create_channel(p_channel text, p_allow_clear boolean DEFAULT false)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    PERFORM pgsse.check_channel(p_channel);
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
    PERFORM pgsse.check_channel(p_channel);
    PERFORM pgsse.check_event(p_event);
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
    writable_columns text[] DEFAULT NULL,
    mercure_topic   text    DEFAULT NULL,
    mercure_public  boolean DEFAULT false
) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    ch      text := coalesce(channel, (SELECT c.relname FROM pg_class c WHERE c.oid = p_table));
    ops     text[];
    op      text;
    unknown text[];
    clash   text;
    rec     pgsse.channels;
    why     text;
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
    PERFORM pgsse.check_channel(ch);
    IF operations IS NULL OR cardinality(operations) = 0 THEN
        RAISE EXCEPTION 'pgsse: operations must name at least one of insert, update, delete'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH op IN ARRAY operations LOOP
        -- In C: in a Turkish locale, upper('insert') is 'İNSERT'.
        IF lower(op COLLATE "C") NOT IN ('insert', 'update', 'delete') THEN
            RAISE EXCEPTION 'pgsse: unknown operation % (expected insert, update or delete)', quote_literal(op)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT upper(op COLLATE "C") = ANY (coalesce(ops, '{}')) THEN
            ops := array_append(ops, upper(op COLLATE "C"));
        END IF;
    END LOOP;
    IF NOT (pgsse.valid_event(insert_event) AND pgsse.valid_event(update_event)
            AND pgsse.valid_event(delete_event) AND pgsse.valid_event(truncate_event)) THEN
        RAISE EXCEPTION 'pgsse: invalid event name (letters, digits, _ . : - up to 64 characters)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Clients act on these names (reload, end of snapshot, empty the collection) and on each row event's
    -- own meaning: a row event may not pass for one of them, nor for another kind of row event.
    IF insert_event IN ('reset', 'snapshot-end', 'clear') OR update_event IN ('reset', 'snapshot-end', 'clear')
       OR delete_event IN ('reset', 'snapshot-end', 'clear') OR truncate_event IN ('reset', 'snapshot-end')
       OR cardinality(ARRAY(SELECT DISTINCT n FROM unnest(ARRAY[insert_event, update_event, delete_event,
                                                                truncate_event]) n)) < 4 THEN
        RAISE EXCEPTION 'pgsse: event names % are not four distinct names of this table''s own',
            ARRAY[insert_event, update_event, delete_event, truncate_event]
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'reset, snapshot-end and clear are pgsse''s own (a truncate may be sent as clear)';
    END IF;
    IF columns IS NOT NULL AND exclude_columns IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: give columns or exclude_columns, not both' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    unknown := pgsse.unknown_columns(p_table, coalesce(columns, exclude_columns) || writable_columns);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: table % has no column %', p_table, array_to_string(unknown, ', ')
            USING ERRCODE = 'undefined_column';
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
                USING ERRCODE = 'invalid_parameter_value', HINT = 'rename one of them, or leave one out with exclude_columns';
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM pgsse.channels c
               WHERE c.name = ch AND c.source_table IS NOT NULL AND c.source_table <> p_table) THEN
        RAISE EXCEPTION 'pgsse: channel % already publishes another table', quote_literal(ch)
            USING ERRCODE = 'invalid_parameter_value';
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
                                     old_values, writable, writable_columns, mercure_topic, mercure_public)
    VALUES (ch, p_table, allow_clear, camel_case, ops, insert_event, update_event, delete_event, truncate_event,
            columns, exclude_columns, old_values, writable, writable_columns, mercure_topic,
            coalesce(mercure_public, false))
    ON CONFLICT (name) DO UPDATE
       SET source_table = EXCLUDED.source_table, allow_clear = EXCLUDED.allow_clear,
           camel_case = EXCLUDED.camel_case, operations = EXCLUDED.operations,
           insert_event = EXCLUDED.insert_event, update_event = EXCLUDED.update_event,
           delete_event = EXCLUDED.delete_event, truncate_event = EXCLUDED.truncate_event,
           columns = EXCLUDED.columns, exclude_columns = EXCLUDED.exclude_columns,
           old_values = EXCLUDED.old_values, writable = EXCLUDED.writable,
           writable_columns = EXCLUDED.writable_columns, mercure_topic = EXCLUDED.mercure_topic,
           mercure_public = EXCLUDED.mercure_public
    RETURNING * INTO rec;
    why := pgsse.mercure_topic_refusal(rec, rec.mercure_topic);
    IF why IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: %', why USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
