-- pgsse functions: retention, by age and by count per channel, never below the floors.

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
