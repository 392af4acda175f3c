-- pgsse's functions, roles and privileges: the files of sql/functions/, applied by every `pgsse migrate`
-- after the numbered files, in name order, in one transaction. Everything here belongs to pgsse_owner.
-- SECURITY DEFINER only where a role must touch pgsse's own tables (staging, sequencing, the gateway's
-- writes to the log, retention), and such code never evaluates anything a table's owner or writer made;
-- reading or writing their tables runs as the caller. Functions that a role calls pin search_path; those
-- that run once per captured row (capture_row, capture_stage, stage, project, ring) qualify every name,
-- operator and type instead (a writer's own domain named jsonb would otherwise be found first), since a
-- SET per call costs a large share of a bulk insert (docs/performance.md). Nothing is granted to PUBLIC.
--
-- This file: signatures an earlier schema had. CREATE OR REPLACE cannot change a function's arguments
-- or its result, and an overload beside its successor would make every call ambiguous, so each goes first.

-- Schema 8's pgsse.stage took an old row and returned whether it rang (before schema 6 it returned void);
-- schema 9's had no p_wide.
DROP FUNCTION IF EXISTS pgsse.stage(text, text, jsonb, jsonb);
DROP FUNCTION IF EXISTS pgsse.stage(text, text, jsonb);

-- Schema 5's write entry points answered with the event's id inside the writing transaction, under the
-- ordering lock; their replacements return where to find the event once it is sequenced.
DROP FUNCTION IF EXISTS pgsse.inserted_event(text, jsonb);
DROP FUNCTION IF EXISTS pgsse.insert_json(text, jsonb);
DROP FUNCTION IF EXISTS pgsse.publish_json(text, text, jsonb);
DROP FUNCTION IF EXISTS pgsse.record_clear(text);
DROP FUNCTION IF EXISTS pgsse.clear_channel(text, boolean);
DROP FUNCTION IF EXISTS pgsse.flush_pending();
DROP FUNCTION IF EXISTS pgsse.append(text, text, jsonb);

-- An earlier schema's, which took a batch limit.
DROP FUNCTION IF EXISTS pgsse.sequence_batch(integer);

-- Its result is not what it first was: dropped, and made again in 05_sequencing.sql, on every migrate.
DROP FUNCTION IF EXISTS pgsse.sequenced(xid8, bigint, text);

-- Earlier schemas' publish_table took fewer options (schema 1 no camel_case, schema 3 no column lists).
DROP FUNCTION IF EXISTS pgsse.publish_table(regclass, text, text[], text, text, text, boolean);
DROP FUNCTION IF EXISTS pgsse.publish_table(regclass, text, text[], text, text, text, boolean, boolean);
DROP FUNCTION IF EXISTS pgsse.publish_table(regclass, text, text[], text, text, text, boolean, boolean, text[],
                                            text[], boolean, text);
-- Schema 11's had no Mercure topic.
DROP FUNCTION IF EXISTS pgsse.publish_table(regclass, text, text[], text, text, text, boolean, boolean, text[],
                                            text[], boolean, text, boolean, text[]);

-- An earlier form of the keyed writes (Idempotency-Key).
DROP FUNCTION IF EXISTS pgsse.insert_json_once(text, jsonb, text, text, text);
DROP FUNCTION IF EXISTS pgsse.publish_json_once(text, text, jsonb, text, text, text);

-- The first pgsse.insert_plan also returned its table's width, which the gateway bounded while it
-- prepared the kept inserts; dropped only in that form, so that a migrate leaves the current one alone.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_proc p
                WHERE p.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure('pgsse.insert_plan(text, text[])')
                  AND 'width' OPERATOR(pg_catalog.=) ANY (p.proargnames)) THEN
        DROP FUNCTION pgsse.insert_plan(text, text[]);
    END IF;
END
$$;
