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

-- Functions whose result an earlier schema or build had otherwise, known by an argument name that form
-- had (sequenced's `busy`, insert_plan's `width`): dropped in that form only, so that a migrate leaves the
-- present ones alone, and anything made on them (a view, even a temporary one) is named, not dropped.
DO $$
DECLARE
    f     record;
    users text;
BEGIN
    FOR f IN SELECT p.oid, p.oid::pg_catalog.regprocedure::pg_catalog.text AS name
               FROM (VALUES ('pgsse.sequenced(xid8, bigint, text)', 'busy'),
                            ('pgsse.insert_plan(text, text[])', 'width')) AS r(signature, arg)
               JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(r.signature)
              WHERE r.arg OPERATOR(pg_catalog.=) ANY (p.proargnames) LOOP
        -- A view's rule names the view's owner, whose session a temporary view is in.
        SELECT pg_catalog.string_agg(pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
                                     OPERATOR(pg_catalog.||) COALESCE(' (owned by '
                                     OPERATOR(pg_catalog.||) v.relowner::pg_catalog.regrole::pg_catalog.text
                                     OPERATOR(pg_catalog.||) ')', ''), ', ')
          INTO users FROM pg_catalog.pg_depend d
          LEFT JOIN pg_catalog.pg_rewrite w ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                                           AND w.oid OPERATOR(pg_catalog.=) d.objid
          LEFT JOIN pg_catalog.pg_class v ON v.oid OPERATOR(pg_catalog.=) w.ev_class
         WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
           AND d.refobjid OPERATOR(pg_catalog.=) f.oid AND d.deptype OPERATOR(pg_catalog.=) 'n';
        IF users IS NOT NULL THEN
            RAISE EXCEPTION 'pgsse: migrate must replace function %, which % uses: drop it (a temporary one goes when the session that made it ends), then migrate again',
                f.name, users USING ERRCODE = 'dependent_objects_still_exist';
        END IF;
        EXECUTE pg_catalog.format('DROP FUNCTION %s', f.name);
    END LOOP;
END
$$;
