-- pgsse functions: sequencing. The steps that give committed staged events their ids in commit order,
-- under the one lock, and what the gateway asks of the log head and the backlog.

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
CREATE OR REPLACE FUNCTION pgsse.sequence_batch() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pgsse, pg_temp SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_nestloop = off SET jit = off AS $$
DECLARE
    moved  bigint;
    low    xid8 := (SELECT f.floor_xid FROM pgsse.staged_floor f);
    -- Taken before the DELETE's own snapshot, which therefore sees every transaction older than this.
    oldest xid8 := pg_snapshot_xmin(pg_current_snapshot());
BEGIN
    -- Most steps find nothing (a follower's, one on the clock): one probe of the key, rather than setting up
    -- the statement below, which cost an idle step a third of its time.
    IF NOT EXISTS (SELECT FROM pgsse.staged s WHERE s.txid >= low) THEN
        RETURN 0;
    END IF;
    WITH taken AS (DELETE FROM pgsse.staged s WHERE s.txid >= low RETURNING s.*)
    INSERT INTO pgsse.events (id, channel, event, payload, created_at, txid, old, wide)
    SELECT nextval('pgsse.event_id_seq'), t.channel, t.event, t.payload, t.created_at, t.txid, t.old, t.wide
      FROM (SELECT t.*, greatest(max(t.seq) OVER w, max(t.committed) OVER w) AS last FROM taken t
             WINDOW w AS (PARTITION BY t.txid) ORDER BY last, t.seq) t;
    GET DIAGNOSTICS moved = ROW_COUNT;
    -- Raised only with a batch: a step that moved nothing writes nothing, so an idle database is not
    -- given a commit (and its standbys a record to replay) by every gateway's every step. The batch is
    -- announced with its last id ('b<id>'; a writer's ring has no payload): the other gateways read the
    -- log on it (on a standby, once it holds that id), and leave the next steps to the session that sent it.
    IF moved > 0 THEN
        UPDATE pgsse.staged_floor f SET floor_xid = oldest WHERE f.floor_xid < oldest;
        PERFORM pg_notify('pgsse_' || m.bell_token, 'b' || currval('pgsse.event_id_seq')) FROM pgsse.meta m;
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
    -- had staged before now, so it is either seen by the batch or still open (in flight). A bell nobody
    -- took since the last reset is left as it is: setval gives the step an xid, and so a commit to write
    -- (and replay on every standby) even when it moves nothing.
    IF (SELECT b.is_called FROM pgsse.bell b) THEN
        PERFORM setval('pgsse.bell', 1, false);
    END IF;
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

-- Events committed but not yet in the log, and the age in seconds of the oldest (NULL when there is none).
CREATE OR REPLACE FUNCTION pgsse.backlog(OUT pending bigint, OUT oldest_seconds float8)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT count(*), extract(epoch FROM clock_timestamp() - min(s.created_at))::float8 FROM pgsse.staged s
$$;

-- The highest id handed out so far: an event that the calling transaction records gets a higher one.
CREATE OR REPLACE FUNCTION pgsse.issued_head() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pgsse, pg_temp AS $$
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END FROM pgsse.event_id_seq s
$$;

-- The first event on p_channel that transaction p_txid recorded, if it is in the log (its id is above
-- p_after): the gateway asks after its own write commits, to answer with the event's id, in the statement
-- that takes a sequencing step (pgsse.sequence) first: volatile, so that it sees what that step moved.
-- It takes no lock itself.
CREATE OR REPLACE FUNCTION pgsse.sequenced(p_txid xid8, p_after bigint, p_channel text,
                                           OUT event_id bigint, OUT payload jsonb)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pgsse, pg_temp AS $$
BEGIN
    SELECT e.id, e.payload INTO event_id, payload FROM pgsse.events e
     WHERE e.id > p_after AND e.txid = p_txid AND e.channel = p_channel ORDER BY e.id LIMIT 1;
END
$$;
