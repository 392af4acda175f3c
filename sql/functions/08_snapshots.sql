-- pgsse functions: snapshots. A table channel's rows as its events carry them, filtered and ordered by
-- pgsse's own code, read as the gateway, with the seam that lets its stream go on exactly after them.

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
            USING ERRCODE = 'invalid_parameter_value', HINT = 'snapshot=true is for channels made by pgsse.publish_table';
    END IF;
    PERFORM pgsse.check_snapshot_reads(ch);
    FOR f IN SELECT e.value AS v, e.ordinality - 1 AS n FROM jsonb_array_elements(p_filters) WITH ORDINALITY AS e
             UNION ALL
             SELECT e.value, NULL FROM jsonb_array_elements(p_order) AS e LOOP
        SELECT * INTO c FROM pgsse.snapshot_columns(ch) s WHERE s.key = f.v->>'key';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'pgsse: % is not a published column of channel %', quote_literal(f.v->>'key'),
                quote_literal(ch.name) USING ERRCODE = 'undefined_column',
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
            RAISE EXCEPTION 'pgsse: unknown filter operator %', quote_literal(f.v->>'op') USING ERRCODE = 'invalid_parameter_value';
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
