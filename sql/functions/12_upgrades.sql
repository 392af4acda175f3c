-- pgsse functions: what an install made by an earlier schema needs once every function is in place:
-- capture triggers made anew, schema 8's leftovers dropped, and everything owned by pgsse_owner.

-- Tables whose capture triggers are not what pgsse.install_capture makes of their channel now (made by an
-- earlier schema, or restored onto a table with a new oid) get theirs anew.
DO $$
DECLARE
    ch pgsse.channels;
BEGIN
    FOR ch IN SELECT * FROM pgsse.channels c
               WHERE c.source_table IS NOT NULL
                 AND EXISTS (SELECT 1 FROM pg_catalog.pg_class r WHERE r.oid = c.source_table)
                 AND (NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.source_table
                                     AND t.tgname = 'pgsse_capture_stage'
                                     AND t.tgfoid = 'pgsse.capture_stage()'::regprocedure
                                     AND t.tgargs = (SELECT string_agg(convert_to(a, current_setting('server_encoding'))
                                                                       || '\x00'::bytea, ''::bytea ORDER BY i)
                                                       FROM unnest(pgsse.capture_args(c)) WITH ORDINALITY AS u(a, i)))
                      OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.source_table
                                        AND t.tgname = 'pgsse_capture' AND t.tgfoid = 'pgsse.capture_row()'::regprocedure)
                      OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.source_table
                                        AND t.tgname = 'pgsse_truncate'))
    LOOP
        PERFORM pgsse.install_capture(ch);
    END LOOP;
END
$$;

-- Schema 8's capture trigger ran as pgsse's owner, with the row's casts, and pgsse.publish staged at commit
-- through an outbox; no trigger uses either any more.
DROP FUNCTION IF EXISTS pgsse.capture();
DROP TABLE IF EXISTS pgsse.outbox;
DROP FUNCTION IF EXISTS pgsse.flush_outbox();

-- pgsse_owner owns everything in the schema, so that SECURITY DEFINER functions run with its rights only.
-- Installs made before schema 9 belonged to whoever migrated them, often a superuser.
DO $$
DECLARE
    o record;
BEGIN
    IF (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'pgsse') <> 'pgsse_owner'::regrole THEN
        ALTER SCHEMA pgsse OWNER TO pgsse_owner;
    END IF;
    -- Tables first: their identity sequences and indexes follow them.
    FOR o IN SELECT c.oid::regclass AS name, c.relkind FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'pgsse'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S')
              ORDER BY c.relkind = 'S' LOOP
        IF (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = o.name) <> 'pgsse_owner'::regrole THEN
            EXECUTE format('ALTER %s %s OWNER TO pgsse_owner',
                           CASE o.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END, o.name);
        END IF;
    END LOOP;
    FOR o IN SELECT p.oid::regprocedure AS name FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'pgsse'::regnamespace AND p.proowner <> 'pgsse_owner'::regrole LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO pgsse_owner', o.name);
    END LOOP;
END
$$;
