//! Shadows: for every pg_catalog function a piece of SQL calls by name, and every variant of every operator
//! it spells, a function (and operator) of the same signature in `public` that fails when it runs. A role
//! that may create in `public` plants them; pgsse's code must never run one, whoever's path finds them.

use tokio_postgres::Client;

/// Plants, as `client`'s role, a failing shadow in `public` of everything `sql` calls or spells.
pub async fn plant_shadows(client: &Client, sql: &str) {
    let functions = called_names(sql);
    let operators: Vec<&str> = ["=", "<>", "<", ">", "<=", ">=", "||", "->", "->>", "?", "-", "+", "@>", "~"]
        .into_iter()
        .filter(|op| sql.contains(&format!(" {op} ")))
        .collect();
    let quoted = |names: &[&str]| names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
    let function_names: Vec<&str> = functions.iter().map(String::as_str).collect();
    client.batch_execute(&format!(
        "DO $plant$
         DECLARE f record; op record;
         BEGIN
             FOR f IN SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
                             pg_get_function_result(p.oid) AS res
                        FROM pg_proc p
                       WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f'
                         AND p.proname = ANY (ARRAY[{}]) LOOP
                 BEGIN
                     EXECUTE format('CREATE FUNCTION public.%I(%s) RETURNS %s LANGUAGE plpgsql AS %L',
                                    f.proname, f.args, f.res,
                                    format('BEGIN RAISE EXCEPTION %L; END', 'shadow of ' || f.proname || ' ran'));
                 EXCEPTION WHEN others THEN NULL; -- a signature a plain role cannot declare (internal, ...)
                 END;
             END LOOP;
             FOR op IN SELECT p.oprname, p.oprleft::regtype AS l, p.oprright::regtype AS r,
                             p.oprresult::regtype AS res, row_number() OVER () AS n
                        FROM pg_operator p
                       WHERE p.oprnamespace = 'pg_catalog'::regnamespace AND p.oprleft <> 0 AND p.oprright <> 0
                         AND p.oprname = ANY (ARRAY[{}]) LOOP
                 BEGIN
                     EXECUTE format('CREATE FUNCTION public.shadow_op_%s(%s, %s) RETURNS %s LANGUAGE plpgsql AS %L',
                                    op.n, op.l, op.r, op.res,
                                    format('BEGIN RAISE EXCEPTION %L; END', 'shadow of ' || op.oprname || ' ran'));
                     EXECUTE format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.shadow_op_%s)',
                                    op.oprname, op.l, op.r, op.n);
                 EXCEPTION WHEN others THEN NULL;
                 END;
             END LOOP;
         END $plant$;",
        quoted(&function_names),
        quoted(&operators)
    ))
    .await
    .unwrap();
}

/// Names in `sql` that are called like functions: identifiers followed by `(`.
fn called_names(sql: &str) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !(bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let after = sql[i..].trim_start_matches(' ');
        if after.starts_with('(') {
            names.insert(sql[start..i].to_ascii_lowercase());
        }
    }
    names.into_iter().collect()
}
