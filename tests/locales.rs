//! Databases whose default collation is not C (ICU locales): a column's camelCase form is one, in its
//! events, its POSTs and its snapshots, and a Turkish locale publishes tables as any other.

mod common;

use bytes::Bytes;
use common::{call, Gateway, SseStream, TestDb};
use serde_json::json;

#[tokio::test]
async fn a_name_beyond_ascii_has_one_camel_case_form() {
    let TestDb { url, admin, .. } =
        TestDb::created_with("TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'und'").await;
    admin
        .batch_execute(
            r#"CREATE TABLE pastries (id bigserial PRIMARY KEY, "a_éclair" text);
               SELECT pgsse.publish_table('pastries', writable => true, camel_case => true);"#,
        )
        .await
        .unwrap();
    let keys: (String, serde_json::Value) = {
        let row = admin
            .query_one(r#"SELECT pgsse.camel_case('a_éclair'), pgsse.camel_keys('{"a_éclair": 1}')"#, &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        keys,
        ("aéClair".to_string(), json!({"aéClair": 1})),
        "as its column name (C) has it, whatever the database's collation"
    );
    let gw = Gateway::start(&url).await;
    let mut stream = SseStream::ok(gw.addr, "/pastries/events", &[]).await;
    let posted =
        call(gw.addr, "POST", "/pastries", &[("content-type", "application/json")], Bytes::from(r#"{"aéClair": "x"}"#))
            .await
            .unwrap();
    assert_eq!(posted.status, 201, "{}", posted.body);
    assert_eq!(posted.json()["aéClair"], "x", "the event says what the POST named: {}", posted.body);
    assert_eq!(stream.expect().await.json(), json!({"id": 1, "aéClair": "x"}));
    let snapshot = SseStream::ok(gw.addr, "/pastries/events?snapshot=true", &[]).await.expect().await;
    assert_eq!(snapshot.json(), json!({"id": 1, "aéClair": "x"}));
}

#[tokio::test]
async fn a_turkish_locale_publishes_tables() {
    let TestDb { url, admin, app } =
        TestDb::created_with("TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'tr-TR'").await;
    common::messages_table(&admin, "").await;
    admin.batch_execute("GRANT INSERT ON messages TO pgsse_test_writer; GRANT USAGE ON SEQUENCE messages_id_seq TO pgsse_test_writer").await.unwrap();
    let gw = Gateway::start(&url).await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    app.execute("INSERT INTO messages (body) VALUES ('merhaba')", &[]).await.unwrap();
    let event = stream.expect().await;
    assert_eq!((event.event.as_str(), event.json()["body"].as_str()), ("insert", Some("merhaba")));
}
