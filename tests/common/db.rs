//! Databases as production uses them: a fresh, migrated database per test on a throwaway PostgreSQL
//! (from `pgsse::testing`), the superuser only creating and publishing tables, an application's role writing.

use pgsse::config::Config;
pub use pgsse::testing::{
    admin_url, as_role, connect, fresh_db, private_cluster, sequence_staged, GATEWAY_ROLE, PUBLISHER_ROLE, WRITER_ROLE,
};
use tokio_postgres::Client;

use super::wait_for;

/// A new database without the pgsse schema.
pub async fn empty_db() -> String {
    pgsse::testing::empty_db_on(admin_url(), "").await
}

/// A gateway configuration that connects as [`GATEWAY_ROLE`].
pub fn gateway_config(url: &str) -> Config {
    Config::new(as_role(url, GATEWAY_ROLE)).unwrap()
}

/// A gateway config whose LISTEN connection logs in as a role of its own, so a test can lock the
/// listener out while the pool keeps working. Returns the config and the role.
pub async fn own_listener_role(admin: &tokio_postgres::Client, url: &str) -> (Config, String) {
    let role =
        format!("{}_listener", admin.query_one("SELECT current_database()", &[]).await.unwrap().get::<_, String>(0));
    admin.batch_execute(&format!("CREATE ROLE {role} LOGIN IN ROLE pgsse_gateway PASSWORD 'listener'")).await.unwrap();
    let mut config = gateway_config(url);
    config.listener.listen_database_url = Some(format!("{} password=listener", as_role(url, &role)));
    (config, role)
}

/// A connection as [`WRITER_ROLE`], an application's role that knows nothing of pgsse.
pub async fn writer(url: &str) -> Client {
    connect(&as_role(url, WRITER_ROLE)).await
}

/// A fresh, migrated database as production uses it: `admin` (the superuser) only creates tables,
/// publishes them and reads pgsse's own tables; `app` (an application's role with no grant on pgsse)
/// makes every write to a published table.
pub struct TestDb {
    pub url: String,
    pub admin: Client,
    pub app: Client,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::on(admin_url()).await
    }

    /// A fresh database on the server whose `postgres` database `server` names, e.g. a private cluster.
    pub async fn on(server: &str) -> Self {
        Self::with(server, "").await
    }

    /// A fresh database made with `CREATE DATABASE ... {options}` on the test server.
    pub async fn created_with(options: &str) -> Self {
        Self::with(admin_url(), options).await
    }

    async fn with(server: &str, options: &str) -> Self {
        let url = pgsse::testing::fresh_db_on(server, options).await;
        let (admin, app) = (connect(&url).await, writer(&url).await);
        Self { url, admin, app }
    }

    /// A fresh database with `messages` published with `publish_args` (see [`messages_table`]).
    pub async fn messages(publish_args: &str) -> Self {
        let db = Self::new().await;
        messages_table(&db.admin, publish_args).await;
        db
    }
}

/// Creates `messages` (id, body, created_at) and publishes it with the given extra arguments.
pub async fn messages_table(db: &Client, publish_args: &str) {
    db.batch_execute(&format!(
        "CREATE TABLE messages (id bigserial PRIMARY KEY, body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
         SELECT pgsse.publish_table('messages'{publish_args});"
    ))
    .await
    .unwrap();
}

/// `users`, with a column nobody outside may see (`password_hash`), published with `args`.
pub async fn users_table(db: &tokio_postgres::Client, args: &str) {
    db.batch_execute(&format!(
        "CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL, password_hash text NOT NULL DEFAULT 'x');
         SELECT pgsse.publish_table('users'{args});"
    ))
    .await
    .unwrap();
}

/// Waits until a running gateway has sequenced everything staged so far.
pub async fn wait_sequenced(admin: &tokio_postgres::Client) {
    wait_for("every staged event sequenced", || async {
        admin.query_one("SELECT count(*) FROM pgsse.staged", &[]).await.is_ok_and(|r| r.get::<_, i64>(0) == 0)
    })
    .await;
}

/// Every event in the log, as (id, body), in id order: what a client must have received.
pub async fn log_of(db: &Client) -> Vec<(i64, String)> {
    let rows = db.query("SELECT id, payload->>'body' FROM pgsse.events ORDER BY id", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// The server's message for a statement that must fail.
pub fn db_error(result: Result<impl Sized, tokio_postgres::Error>) -> String {
    match result {
        Ok(_) => panic!("expected the database to refuse"),
        Err(err) => err.as_db_error().map_or_else(|| err.to_string(), |db| db.message().to_string()),
    }
}

/// Creates `public.take_statements()`, which a table's trigger calls to put a statement of its own under
/// the name of each statement the session's client prepared, as a hostile table owner's code would.
pub async fn plant_statement_taker(db: &Client) {
    db.batch_execute(
        "CREATE FUNCTION public.take_statements() RETURNS void LANGUAGE plpgsql AS $$
         DECLARE r record;
         BEGIN
             FOR r IN SELECT name FROM pg_prepared_statements WHERE NOT from_sql LOOP
                 EXECUTE format('DEALLOCATE %I', r.name);
                 EXECUTE format('PREPARE %I AS SELECT 1', r.name);
             END LOOP;
         END $$;",
    )
    .await
    .unwrap();
}
