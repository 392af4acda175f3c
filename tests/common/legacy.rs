//! A database as a legacy deployment has it: an admin that is no superuser migrates, the application's
//! role owns its schema and tables.

use tokio_postgres::Client;

use super::{as_role, connect, GATEWAY_ROLE, WRITER_ROLE};

/// A fresh database as a legacy deployment has it: `admin` owns the database and runs `pgsse migrate`
/// (an operator made it a member of pgsse_owner), `app` owns schema `app` and everything in it.
pub struct Legacy {
    pub url: String,
    pub admin: Client,
    pub app: Client,
    pub admin_role: String,
    pub app_role: String,
}

pub async fn legacy() -> Legacy {
    super::fresh_db().await; // pgsse's roles and the test logins exist on this cluster from here on
    let url = super::empty_db().await;
    let su = connect(&url).await;
    let db: String = su.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    let (admin_role, app_role) = (format!("{db}_admin"), format!("{db}_app"));
    su.batch_execute(&format!(
        "CREATE ROLE {admin_role} LOGIN; CREATE ROLE {app_role} LOGIN;
         ALTER DATABASE {db} OWNER TO {admin_role};
         GRANT pgsse_owner TO {admin_role};
         CREATE SCHEMA app AUTHORIZATION {app_role};
         GRANT USAGE ON SCHEMA app TO {admin_role}, {WRITER_ROLE}, pgsse_gateway;"
    ))
    .await
    .unwrap();
    pgsse::migrate(&as_role(&url, &admin_role)).await.expect("an admin that is no superuser migrates");
    let admin = connect(&as_role(&url, &admin_role)).await;
    let app = connect(&as_role(&url, &app_role)).await;
    Legacy { url, admin, app, admin_role, app_role }
}
