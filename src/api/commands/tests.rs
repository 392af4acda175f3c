//! The channel commands through their narrow handle on a real database, as the gateway role: what each
//! writes and answers, and what each refuses, with no HTTP in between.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;

use crate::api::query::{HistoryQuery, PostQuery};
use crate::channel::ChannelError;
use serde_json::json;

use super::*;
use crate::testing;

async fn commands(post_creates_channels: bool) -> (Commands, tokio_postgres::Client) {
    let url = testing::fresh_db().await;
    let admin = testing::connect(&url).await;
    let store = Store::new(&testing::as_role(&url, testing::GATEWAY_ROLE), 2, Duration::from_secs(20)).unwrap();
    let args = CommandArgs { body_read_timeout: Duration::from_secs(1), body_limit: 1024, post_creates_channels };
    (Commands::new(Arc::new(store), Arc::default(), args), admin)
}

async fn json_of(resp: Response) -> (u16, Option<i64>, Value) {
    let id = resp.headers().get(EVENT_ID_HEADER).map(|v| v.to_str().unwrap().parse().unwrap());
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, id, serde_json::from_slice(&body).unwrap())
}

fn refusal(result: Result<Response, CommandError>) -> CommandError {
    match result {
        Ok(resp) => panic!("expected a refusal, got {}", resp.status()),
        Err(err) => err,
    }
}

fn granted(grant: Value) -> Access {
    Access::Granted { grant: serde_json::from_value(grant).unwrap(), expires: None, subject: None }
}

#[tokio::test]
async fn a_post_to_a_channel_without_a_table_is_an_event_that_history_reads_back() {
    let (commands, admin) = commands(false).await;
    admin.batch_execute("SELECT pgsse.create_channel('board')").await.unwrap();
    let posted = commands
        .post(
            &Access::Open,
            "board",
            &PostQuery { event: Some("note".into()) },
            &HeaderMap::new(),
            json!({"text": "hi"}),
        )
        .await
        .unwrap();
    let (status, id, body) = json_of(posted).await;
    let id = id.expect("the event's id in its header");
    assert_eq!((status, body), (201, json!({"id": id, "channel": "board", "event": "note", "data": {"text": "hi"}})));
    let page = commands.history(&Access::Open, "board", &HistoryQuery::parse(Some("limit=5")).unwrap()).await.unwrap();
    assert_eq!(json_of(page).await, (200, None, json!([{"id": id, "event": "note", "data": {"text": "hi"}}])));
}

#[tokio::test]
async fn a_post_to_an_unknown_channel_creates_it_only_when_allowed() {
    let (commands, _admin) = commands(false).await;
    let refused =
        refusal(commands.post(&Access::Open, "fresh", &PostQuery::default(), &HeaderMap::new(), json!({})).await);
    assert!(matches!(refused, CommandError::Channel(ChannelError::Unknown(ref c)) if c == "fresh"), "{refused}");
    let (commands, _admin) = self::commands(true).await;
    let (status, id, body) = json_of(
        commands.post(&Access::Open, "fresh", &PostQuery::default(), &HeaderMap::new(), json!({})).await.unwrap(),
    )
    .await;
    assert_eq!((status, body["event"].as_str()), (201, Some(DEFAULT_EVENT)));
    assert!(id.is_some());
}

#[tokio::test]
async fn a_post_to_a_table_channel_inserts_its_row_and_answers_with_the_event() {
    let (commands, admin) = commands(false).await;
    admin
        .batch_execute(
            "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);
             SELECT pgsse.publish_table('notes', writable => true);",
        )
        .await
        .unwrap();
    let (status, id, row) = json_of(
        commands
            .post(&Access::Open, "notes", &PostQuery::default(), &HeaderMap::new(), json!({"body": "x"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, row), (201, json!({"id": 1, "body": "x"})));
    let logged: i64 = admin.query_one("SELECT id FROM pgsse.events", &[]).await.unwrap().get(0);
    assert_eq!(id, Some(logged));
    let refused = refusal(
        commands
            .post(
                &Access::Open,
                "notes",
                &PostQuery { event: Some("x".into()) },
                &HeaderMap::new(),
                json!({"body": "y"}),
            )
            .await,
    );
    assert!(matches!(refused, CommandError::EventOnTable), "{refused}");
    let refused =
        refusal(commands.post(&Access::Open, "notes", &PostQuery::default(), &HeaderMap::new(), json!({})).await);
    assert_eq!(refused.to_string(), r#"column "body" must not be null"#);
}

#[tokio::test]
async fn a_grant_limited_by_a_filter_writes_only_its_rows_and_cannot_clear() {
    let (commands, admin) = commands(false).await;
    admin.batch_execute("SELECT pgsse.create_channel('board')").await.unwrap();
    let access = granted(json!({"publish": ["board"], "subscribe": ["board"], "filter": {"board": "user=eq.7"}}));
    let outside =
        refusal(commands.post(&access, "board", &PostQuery::default(), &HeaderMap::new(), json!({"user": 8})).await);
    assert!(matches!(outside, CommandError::Auth(AuthError::OutsideGrant(_))), "{outside}");
    assert_eq!(
        json_of(
            commands
                .post(&access, "board", &PostQuery::default(), &HeaderMap::new(), json!({"user": 7}))
                .await
                .unwrap()
        )
        .await
        .0,
        201
    );
    let clear = refusal(commands.clear(&access, "board").await);
    assert!(matches!(clear, CommandError::Auth(AuthError::FilteredClear(_))), "{clear}");
    let reader = granted(json!({"subscribe": ["board"]}));
    let refused =
        refusal(commands.post(&reader, "board", &PostQuery::default(), &HeaderMap::new(), json!({"user": 7})).await);
    assert!(matches!(refused, CommandError::Auth(AuthError::Forbidden { .. })), "{refused}");
    // A token without a subject has no keys of its own: they could be anyone's.
    let mut keyed = HeaderMap::new();
    keyed.insert("idempotency-key", http::HeaderValue::from_static("k1"));
    let unscoped = refusal(commands.post(&access, "board", &PostQuery::default(), &keyed, json!({"user": 7})).await);
    assert!(unscoped.to_string().contains("needs a token with a `sub` claim"), "{unscoped}");
}

#[tokio::test]
async fn history_refuses_what_it_cannot_page_by() {
    let (commands, admin) = commands(false).await;
    admin.batch_execute("SELECT pgsse.create_channel('board')").await.unwrap();
    for (query, message) in [
        ("limit=0", "limit must be at least 1"),
        ("limit=1&limit=2", "limit given more than once"),
        ("before=soon", "before must be a whole number"),
    ] {
        assert_eq!(HistoryQuery::parse(Some(query)).unwrap_err().to_string(), message, "{query}");
    }
    let unknown = refusal(commands.history(&Access::Open, "nowhere", &HistoryQuery::parse(None).unwrap()).await);
    assert!(matches!(unknown, CommandError::Channel(ChannelError::Unknown(_))), "{unknown}");
}
