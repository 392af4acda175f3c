-- pgsse functions: names. The one rule for channel and event names (src/channel.rs has the same), the
-- refusal every entry point gives a name that breaks it, and the camelCase form of column names that
-- camel_case channels publish.

CREATE OR REPLACE FUNCTION pgsse.valid_channel(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$'
$$;

CREATE OR REPLACE FUNCTION pgsse.valid_event(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$'
$$;

CREATE OR REPLACE FUNCTION pgsse.check_channel(p_channel text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    IF p_channel IS NULL OR NOT pgsse.valid_channel(p_channel) THEN
        RAISE EXCEPTION 'pgsse: invalid channel name % (letters, digits, _ . : - up to 128 characters)',
            quote_literal(coalesce(p_channel, 'NULL')) USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgsse.check_event(p_event text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    IF p_event IS NULL OR NOT pgsse.valid_event(p_event) THEN
        RAISE EXCEPTION 'pgsse: invalid event name % (letters, digits, _ . : - up to 64 characters)',
            quote_literal(coalesce(p_event, 'NULL')) USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- In the C collation whatever the caller's: a column's name (attname, which is C) and the same name as a
-- key of a row's JSON (the database's default) must have one camelCase form, so only ASCII letters change.
CREATE OR REPLACE FUNCTION pgsse.camel_case(k text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT CASE WHEN position('_' IN k) = 0 THEN k
           ELSE split_part(k, '_', 1) || (SELECT coalesce(string_agg(initcap(p COLLATE "C"), '' ORDER BY n), '')
                                          FROM unnest((string_to_array(k, '_'))[2:]) WITH ORDINALITY AS t(p, n))
           END
$$;

CREATE OR REPLACE FUNCTION pgsse.camel_keys(j jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT coalesce(jsonb_object_agg(pgsse.camel_case(key), value), '{}') FROM jsonb_each(j)
$$;
