-- pgsse functions: reads of the log for the gateway: replay, history and the retention watermark.

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
