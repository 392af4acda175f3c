-- pgsse functions: the roles pgsse owns its objects with and grants to, checked and made first.

-- Roles are cluster-wide: one set serves every database of the cluster that has pgsse installed, and a
-- login granted pgsse_gateway may act as a gateway on each of them. pgsse_owner owns schema pgsse and runs
-- its SECURITY DEFINER functions: it cannot log in, is no superuser, and holds nothing but pgsse's own
-- objects, so no code that runs as it (and none of pgsse's runs anything a table's owner or writer made)
-- can reach further. Whoever migrates is made a member, to create and replace pgsse's objects.
DO $$
DECLARE
    missing text[];
    r       text;
    can     boolean := EXISTS (SELECT 1 FROM pg_catalog.pg_roles
                                WHERE rolname = current_user AND (rolsuper OR rolcreaterole));
BEGIN
    SELECT array_agg(n ORDER BY n) INTO missing
      FROM unnest(ARRAY['pgsse_gateway', 'pgsse_owner', 'pgsse_publisher']) AS n
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = n);
    IF missing IS NOT NULL AND NOT can THEN
        RAISE EXCEPTION 'pgsse: role % cannot create the roles % (it lacks CREATEROLE)',
            current_user, array_to_string(missing, ', ')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('have an operator run: %s%s then run pgsse migrate again',
                                (SELECT string_agg(format('CREATE ROLE %I NOLOGIN;', m), ' ') FROM unnest(missing) m),
                                CASE WHEN 'pgsse_owner' = ANY (missing)
                                     THEN format(' GRANT pgsse_owner TO %I;', current_user) ELSE '' END);
    END IF;
    FOREACH r IN ARRAY coalesce(missing, '{}') LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- another database's migrate created it just now
        END;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles
                WHERE rolname = 'pgsse_owner' AND (rolsuper OR rolcanlogin OR rolcreaterole OR rolcreatedb OR rolbypassrls)) THEN
        RAISE EXCEPTION 'pgsse: role pgsse_owner has attributes it must not have (it runs pgsse''s definer functions)'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'have an operator run: ALTER ROLE pgsse_owner NOSUPERUSER NOLOGIN NOCREATEROLE NOCREATEDB NOBYPASSRLS;';
    END IF;
    IF NOT pg_catalog.pg_has_role('pgsse_owner', 'USAGE') THEN
        IF NOT can THEN
            RAISE EXCEPTION 'pgsse: role % is not a member of pgsse_owner, which owns schema pgsse', current_user
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('have an operator run: GRANT pgsse_owner TO %I; then run pgsse migrate again', current_user);
        END IF;
        EXECUTE format('GRANT pgsse_owner TO %I', current_user);
    END IF;
END
$$;
