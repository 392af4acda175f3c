-- pgsse functions: Mercure. Publishing an update to the hub (staged on channel `.mercure` and sequenced
-- like every event), the rules every update and table topic keeps, and a table channel's topic.

-- Whether topic p_topic is in the hub's own namespace, /.well-known/mercure and below (its path, as
-- src/mercure/request.rs reads it; a path with dot segments is taken as reserved, not resolved).
CREATE OR REPLACE FUNCTION pgsse.mercure_reserved(p_topic text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT p_topic ~ '^([A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)?/\.well-known/mercure([/?#]|$)'
        OR (position('/.well-known/mercure' IN p_topic) > 0 AND p_topic ~ '/\.\.?([/?#]|$)')
$$;

-- Why an update may not be published, or NULL: the rules of the hub's POST (src/mercure/request.rs says
-- the same), kept here too since pgsse_publisher may publish from SQL and every gateway reads the log.
CREATE OR REPLACE FUNCTION pgsse.mercure_refusal(p_topics text[], p_id text, p_type text, p_retry bigint)
RETURNS text LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT CASE
        WHEN p_topics IS NULL OR cardinality(p_topics) = 0 THEN 'an update needs a topic'
        WHEN cardinality(p_topics) > 100 THEN 'an update has at most 100 topics'
        WHEN EXISTS (SELECT 1 FROM unnest(p_topics) t WHERE t IS NULL OR t = '' OR octet_length(t) > 4096
                                                       OR t ~ '[[:cntrl:]]') THEN
            'a topic must be 1 to 4096 bytes without control characters'
        WHEN '*' = ANY (p_topics) THEN 'the topic * is every topic: an update cannot be published on it'
        WHEN EXISTS (SELECT 1 FROM unnest(p_topics) t WHERE pgsse.mercure_reserved(t)) THEN
            'a topic in the hub''s own namespace (/.well-known/mercure) cannot be published on'
        WHEN p_id IS NOT NULL AND (p_id = '' OR p_id = 'earliest' OR left(p_id, 1) = '#' OR octet_length(p_id) > 1024
                                   OR p_id ~ '[[:cntrl:]]') THEN
            'an update''s id must be 1 to 1024 bytes without control characters, not earliest, and not start with # (the hub''s own ids)'
        WHEN p_type IS NOT NULL AND (octet_length(p_type) > 256 OR p_type ~ '[[:cntrl:]]') THEN
            'an update''s type must be at most 256 bytes without control characters'
        WHEN p_retry < 0 THEN 'an update''s retry must not be negative'
    END
$$;

-- Records a Mercure update; it gets its id, and reaches subscribers on every gateway, once the calling
-- transaction commits, in pgsse.sequenced(txid, after, '.mercure'). Granted to pgsse_gateway (the hub's
-- POST, once the token's publish grant allowed it) and to pgsse_publisher (an application's own SQL).
CREATE OR REPLACE FUNCTION pgsse.mercure_publish(p_topics text[], p_data text DEFAULT '', p_private boolean DEFAULT false,
                                                 p_id text DEFAULT NULL, p_type text DEFAULT NULL,
                                                 p_retry bigint DEFAULT NULL, OUT txid xid8, OUT after bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    why text := pgsse.mercure_refusal(p_topics, p_id, p_type, p_retry);
BEGIN
    IF why IS NOT NULL THEN
        RAISE EXCEPTION 'pgsse: %', why USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pgsse.stage('.mercure', 'mercure', jsonb_strip_nulls(jsonb_build_object(
        'topics', to_jsonb(p_topics), 'data', coalesce(p_data, ''), 'private', coalesce(p_private, false),
        'id', p_id, 'type', nullif(p_type, ''), 'retry', nullif(p_retry, 0))));
    txid := pg_current_xact_id();
    after := pgsse.issued_head();
END
$$;

-- Why p_template may not be channel ch's Mercure topic, or NULL: an RFC 6570 URI template whose variables
-- are keys the channel publishes (so that nothing it leaves out can reach a topic).
CREATE OR REPLACE FUNCTION pgsse.mercure_topic_refusal(ch pgsse.channels, p_template text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
DECLARE
    names   text[];
    unknown text[];
BEGIN
    IF p_template = '' OR octet_length(p_template) > 4096 OR p_template ~ '[[:cntrl:]]'
       OR p_template !~ '^([^{}]|\{[^{}]+\})*$' THEN
        RETURN format('mercure_topic %L is not a URI template (RFC 6570) of at most 4096 bytes', left(p_template, 200));
    END IF;
    -- {+var} and {#var} keep a value's / ? # as they are: a writer would choose the topic's path.
    IF p_template ~ '\{[+#]' THEN
        RETURN format('mercure_topic %L uses {+...} or {#...}: a row''s values could then choose the topic''s path; use {var}',
                      left(p_template, 200));
    END IF;
    IF pgsse.mercure_reserved(p_template) THEN
        RETURN 'mercure_topic is in the hub''s own namespace (/.well-known/mercure)';
    END IF;
    SELECT array_agg(DISTINCT regexp_replace(regexp_replace(n, '^[+#./;?&]', ''), '(\*|:[0-9]+)$', ''))
      INTO names
      FROM regexp_matches(p_template, '\{([^{}]*)\}', 'g') AS m(g), unnest(string_to_array(m.g[1], ',')) AS n;
    SELECT array_agg(v ORDER BY v) INTO unknown FROM unnest(names) v
     WHERE NOT EXISTS (SELECT 1 FROM pgsse.snapshot_columns(ch) s WHERE s.key = v);
    IF unknown IS NOT NULL THEN
        RETURN format('mercure_topic names %s, which channel %s does not publish', array_to_string(unknown, ', '), ch.name);
    END IF;
    RETURN NULL;
END
$$;
