//! Row filters on streams: live and replayed events alike, combined with AND, malformed ones refused.

mod common;

use common::{Gateway, SseStream, TestDb};

#[tokio::test]
async fn filters_select_rows_live_and_on_replay() {
    let TestDb { url, admin, app } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, user_id int, status text, amount numeric, meta jsonb);
         SELECT pgsse.publish_table('orders');",
        )
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    let insert =
        "INSERT INTO orders (user_id, status, amount, meta) VALUES ($1, $2, $3::text::numeric, $4::text::jsonb)";
    let rows: [(i32, &str, &str, &str); 4] = [
        (42, "new", "100", r#"{"region": "eu"}"#),
        (7, "paid", "500", r#"{"region": "eu"}"#),
        (42, "paid", "250", r#"{"region": "us"}"#),
        (42, "void", "999", r#"{"region": "eu"}"#),
    ];
    let first: i64 = admin.query_one("SELECT coalesce(max(id), 0) FROM pgsse.events", &[]).await.unwrap().get(0);
    let path = "/orders/events?user_id=eq.42&status=in.(new,paid)&amount=gte.100&meta.region=eq.eu";
    let mut live = SseStream::ok(gw.addr, path, &[]).await;
    for (user, status, amount, meta) in rows {
        app.execute(insert, &[&user, &status, &amount, &meta]).await.unwrap();
    }
    app.execute(insert, &[&42, &"paid", &"300", &r#"{"region": "eu"}"#]).await.unwrap();
    let got: Vec<(i64, String)> = live
        .take(2)
        .await
        .iter()
        .map(|e| (e.json()["amount"].as_f64().unwrap() as i64, e.json()["status"].as_str().unwrap().into()))
        .collect();
    assert_eq!(got, [(100, "new".to_string()), (300, "paid".to_string())], "only matching rows, in order");

    let mut replayed = SseStream::ok(gw.addr, &format!("{path}&last_event_id={first}"), &[]).await;
    let again: Vec<i64> = replayed.take(2).await.iter().map(|e| e.json()["amount"].as_f64().unwrap() as i64).collect();
    assert_eq!(again, [100, 300], "replay applies the same filter");
    app.execute(insert, &[&7, &"new", &"100", &r#"{"region": "eu"}"#]).await.unwrap();
    app.execute(insert, &[&42, &"new", &"150", &r#"{"region": "eu"}"#]).await.unwrap();
    assert_eq!(replayed.expect().await.json()["amount"].as_f64(), Some(150.0), "and so does the live part after it");

    for (query, text) in [("user_id=42", "operator.value"), ("status=in.new", "list"), ("a..b=eq.1", "dots")] {
        let resp = common::get(gw.addr, &format!("/orders/events?{query}"), &[]).await.unwrap();
        assert_eq!(resp.status, 400, "{query}");
        assert!(resp.json()["error"].as_str().unwrap().contains(text), "{query}: {}", resp.body);
    }
}
