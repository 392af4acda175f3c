//! `pgsse migrate` against hostile logins and racing deploys: no function a login planted runs with the
//! migrating admin's rights, no login can stall it for good, an older binary never overwrites what a newer
//! one installed while it waited, and older installs' records move to the files' present names.

mod common;

use std::time::Duration;

use common::{as_role, connect};
use pgsse::MigrateError;

/// A cluster of its own with a non-superuser admin (CREATEROLE, owns the database) and a plain login,
/// `anyone`, that may create in `public` (PostgreSQL 14's default, and that of databases upgraded from it).
struct Site {
    cluster: pgsse::demo::Cluster,
    su: tokio_postgres::Client,
    admin: String,
    anyone: tokio_postgres::Client,
}

async fn site() -> Site {
    let cluster = common::private_cluster();
    let su = connect(&cluster.url("postgres")).await;
    su.batch_execute("CREATE ROLE app_owner LOGIN CREATEROLE; CREATE ROLE anyone LOGIN").await.unwrap();
    su.batch_execute("CREATE DATABASE owned OWNER app_owner").await.unwrap();
    let admin = as_role(&cluster.url("owned"), "app_owner");
    connect(&admin).await.batch_execute("GRANT CREATE ON SCHEMA public TO PUBLIC").await.unwrap();
    let anyone = connect(&as_role(&cluster.url("owned"), "anyone")).await;
    Site { cluster, su, admin, anyone }
}

#[tokio::test]
async fn no_function_a_login_planted_in_public_runs_while_a_non_superuser_migrates() {
    let Site { cluster, su, admin, anyone } = site().await;
    let mut sql: String = pgsse::MIGRATIONS.iter().chain(pgsse::FUNCTIONS).map(|(_, text)| *text).collect();
    sql.push_str(include_str!("../src/pg/migrate.rs"));
    sql.push_str(include_str!("../src/pg/migrate/lock.rs"));
    common::plant_shadows(&anyone, &sql).await;
    // More specific than the built-ins (which take anyarray or "any"), so found first on a path with public.
    anyone
        .batch_execute(
            "CREATE FUNCTION public.shadow_ran() RETURNS boolean LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'a shadow ran with the rights of %', current_user; END $$;
             CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE sql
                 AS $$ SELECT x FROM pg_catalog.unnest($1) x WHERE public.shadow_ran() $$;
             CREATE FUNCTION public.array_to_string(text[], text) RETURNS text LANGUAGE sql
                 AS $$ SELECT CASE WHEN public.shadow_ran() THEN '' END $$;
             CREATE FUNCTION public.format(text, text) RETURNS text LANGUAGE sql
                 AS $$ SELECT CASE WHEN public.shadow_ran() THEN '' END $$;",
        )
        .await
        .unwrap();
    pgsse::migrate(&admin).await.expect("a fresh install runs none of them");
    pgsse::migrate(&admin).await.expect("nor does a migrate of an installed database");
    let row = su
        .query_one(
            "SELECT rolsuper, pg_has_role('anyone', 'pgsse_owner', 'MEMBER') FROM pg_roles WHERE rolname = 'anyone'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, bool>(0), row.get::<_, bool>(1)), (false, false));
    drop((su, anyone));
    cluster.stop("fast").unwrap();
}

#[tokio::test]
async fn a_login_holding_the_lock_delays_migrate_only_until_its_timeout_and_is_named() {
    let Site { cluster, su, admin, anyone } = site().await;
    let pid: i32 = anyone.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    anyone.batch_execute("SELECT pg_advisory_lock(7083711516)").await.unwrap();
    let err = pgsse::migrate_within(&admin, Duration::from_millis(500)).await.unwrap_err();
    assert!(matches!(err, MigrateError::Locked { .. }), "{err}");
    assert!(err.to_string().contains(&format!("pid {pid} (role anyone")), "{err}");
    anyone.batch_execute("SELECT pg_advisory_unlock_all()").await.unwrap();
    pgsse::migrate(&admin).await.unwrap();
    // Once installed, the lock is pgsse.migrations itself, which no plain login may take.
    anyone.batch_execute("SELECT pg_advisory_lock(7083711516)").await.unwrap();
    pgsse::migrate_within(&admin, Duration::from_secs(5)).await.expect("the advisory key no longer matters");
    let refused = anyone.batch_execute("BEGIN; LOCK TABLE pgsse.migrations IN EXCLUSIVE MODE").await;
    assert!(common::db_error(refused).starts_with("permission denied"));
    drop((su, anyone));
    cluster.stop("fast").unwrap();
}

/// A newer pgsse's migrate commits while this one waits for the lock: this one must not then put its own
/// (older) functions back.
#[tokio::test]
async fn a_migrate_that_waited_for_a_newer_one_refuses_instead_of_overwriting_it() {
    let Site { cluster, su, admin, anyone } = site().await;
    pgsse::migrate(&admin).await.unwrap();
    let newer = connect(&admin).await;
    newer
        .batch_execute(
            "BEGIN; LOCK TABLE pgsse.migrations IN EXCLUSIVE MODE;
             INSERT INTO pgsse.migrations (name) VALUES ('999_next.sql');",
        )
        .await
        .unwrap();
    let older = tokio::spawn({
        let admin = admin.clone();
        async move { pgsse::migrate(&admin).await }
    });
    common::wait_for("the older migrate to wait for the lock", || async {
        let waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgsse migrate' AND wait_event_type = 'Lock'";
        su.query_one(waiting, &[]).await.unwrap().get::<_, i64>(0) == 1
    })
    .await;
    newer.batch_execute("COMMIT").await.unwrap();
    let err = older.await.unwrap().unwrap_err();
    assert!(matches!(&err, MigrateError::Newer { applied, .. } if applied == "999_next.sql"), "{err}");
    drop((su, anyone, newer));
    cluster.stop("fast").unwrap();
}

/// An install recorded under the files' old names (001-009), and one recorded both ways (the psql lines
/// run on such an install), end up with the present names only.
#[tokio::test]
async fn older_names_of_the_files_move_to_the_present_ones() {
    let Site { cluster, su, admin, anyone } = site().await;
    pgsse::migrate(&admin).await.unwrap();
    let db = connect(&admin).await;
    let present: Vec<&str> = pgsse::MIGRATIONS.iter().map(|(name, _)| *name).collect();
    let old = ["001_schema.sql", "002_capture_options.sql", "003_locks_and_writes.sql", "004_staging.sql"];
    let names = "SELECT string_agg(name, ',' ORDER BY name) FROM pgsse.migrations";
    for both in [false, true] {
        if !both {
            db.batch_execute("DELETE FROM pgsse.migrations WHERE name < '007'").await.unwrap();
        }
        for name in old {
            db.execute("INSERT INTO pgsse.migrations (name) VALUES ($1) ON CONFLICT DO NOTHING", &[&name])
                .await
                .unwrap();
        }
        pgsse::migrate(&admin).await.unwrap();
        assert_eq!(db.query_one(names, &[]).await.unwrap().get::<_, String>(0), present.join(","), "both: {both}");
    }
    drop((su, anyone, db));
    cluster.stop("fast").unwrap();
}

/// The admin that migrated may not serve: a published table's owner's code runs as the gateway's login,
/// and would run with the admin's rights. It is told to use a gateway login.
#[tokio::test]
async fn the_admin_that_migrated_is_refused_as_the_gateways_login() {
    let Site { cluster, su, admin, anyone } = site().await;
    pgsse::migrate(&admin).await.unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgsse"))
        .args(["serve", "--database-url", &admin, "--listen", "127.0.0.1:0"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("role app_owner is not a member of pgsse_gateway"), "{stderr}");
    drop((su, anyone));
    cluster.stop("fast").unwrap();
}

/// A writer's open transaction on a table whose capture triggers migrate must replace, and a schema
/// `pgsse` someone else made before the install: each ends migrate with the session or role to see to,
/// rather than waiting forever or running what that schema holds with the admin's rights.
#[tokio::test]
async fn a_writer_in_the_way_and_a_squatted_schema_are_named_not_waited_on_or_run() {
    let Site { cluster, su, admin, anyone } = site().await;
    su.batch_execute("CREATE DATABASE squatted OWNER app_owner").await.unwrap();
    let squatted = as_role(&cluster.url("squatted"), "app_owner");
    connect(&squatted).await.batch_execute("GRANT CREATE ON DATABASE squatted TO anyone").await.unwrap();
    let squatter = connect(&as_role(&cluster.url("squatted"), "anyone")).await;
    squatter.batch_execute("CREATE SCHEMA pgsse").await.unwrap();
    let err = pgsse::migrate(&squatted).await.unwrap_err().to_string();
    assert!(err.contains("schema pgsse belongs to role anyone, not to pgsse_owner"), "{err}");

    pgsse::migrate(&admin).await.unwrap();
    let db = connect(&admin).await;
    db.batch_execute(
        "CREATE TABLE items (id serial PRIMARY KEY, body text); SELECT pgsse.publish_table('items');
         GRANT INSERT ON items TO anyone; GRANT USAGE ON SEQUENCE items_id_seq TO anyone;
         UPDATE pgsse.channels SET insert_event = 'added' WHERE name = 'items';",
    )
    .await
    .unwrap();
    let pid: i32 = anyone.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    anyone.batch_execute("BEGIN; INSERT INTO items (body) VALUES ('held open')").await.unwrap();
    let err = pgsse::migrate_within(&admin, Duration::from_secs(3)).await.unwrap_err();
    assert!(matches!(err, MigrateError::Locked { .. }), "{err}");
    assert!(err.to_string().contains(&format!("pid {pid} (role anyone")), "{err}");
    anyone.batch_execute("COMMIT").await.unwrap();
    pgsse::migrate(&admin).await.expect("once the writer has committed");
    drop((su, anyone, db, squatter));
    cluster.stop("fast").unwrap();
}
