//! The Mercure hub's protocol at its edges, over real HTTP: every refusal the specification names, and
//! Mercure 0.x served with the conformance suites' settings (their key, audience and issuer).

mod common;

use bytes::Bytes;
use common::mercure::*;
use common::{call, get, SseStream, TestDb};
use jsonwebtoken::Header;
use serde_json::json;

#[tokio::test]
async fn refusals_are_those_the_specification_names() {
    let TestDb { url, .. } = TestDb::new().await;
    let gw = gateway(&url, |_| {}).await;
    let status = |r: &common::Response| (r.status, r.headers.get("www-authenticate").cloned().unwrap_or_default());
    let sub = |query: &str, auth: Option<String>| {
        let path = format!("{HUB}?{query}");
        async move {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
            get(gw.addr, &path, &headers).await.unwrap()
        }
    };
    let reader = Some(bearer(&token(&["subscribe"], json!([{"match": "*"}]))));
    let r = sub("match=t", None).await;
    assert_eq!(status(&r), (401, "Bearer".into()), "no anonymous subscribers unless --mercure-anonymous");
    let r = sub("match=t", Some(bearer("not.a.token"))).await;
    assert_eq!(status(&r), (401, r#"Bearer error="invalid_token""#.into()));
    let native = signed(Header::default(), json!({"exp": in_an_hour(), "pgsse": {"subscribe": ["*"]}}));
    let r = sub("match=t", Some(bearer(&native))).await;
    assert!(r.error().contains("authorization_details"), "{}", r.body);
    let untyped = signed(Header::default(), json!({"exp": in_an_hour(), "authorization_details": []}));
    assert!(sub("match=t", Some(bearer(&untyped))).await.error().contains("at+jwt"));
    let r = sub("match=t", Some("Basic abc".into())).await;
    assert_eq!(status(&r), (400, r#"Bearer error="invalid_request""#.into()));
    for (query, why) in [
        ("", "missing match="),
        ("topic=t", "--mercure-legacy"),
        ("matchURLPattern=t", "unknown parameter"),
        ("match_urlpattern=https://x/(", "URL pattern"),
        ("match=a%0Ab", "control"),
        ("match=%FF", "UTF-8"),
    ] {
        let r = sub(query, reader.clone()).await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert!(r.error().contains(why), "{query}: {}", r.body);
    }

    let writer = token(&["publish"], json!([{"match": "https://example.com/books/:id", "match_type": "urlpattern"}]));
    let r = publish(gw.addr, &writer, "topic=https://example.com/authors/1&data=x").await;
    assert_eq!(status(&r), (403, r#"Bearer error="insufficient_scope""#.into()));
    let r = publish(gw.addr, &everything(), "topic=https://hub.example/.well-known/mercure/subscriptions&data=x").await;
    assert_eq!(r.status, 403, "{}", r.body);
    let reader_only = token(&["subscribe"], json!([{"match": "*"}]));
    assert_eq!(publish(gw.addr, &reader_only, "topic=t").await.status, 403);
    for (form, why) in [
        ("data=x", "missing topic"),
        ("topic=t&id=%231", "start with #"),
        ("topic=t&retry=soon", "retry"),
        ("topic=t&data=%FF", "UTF-8"),
    ] {
        let r = publish(gw.addr, &everything(), form).await;
        assert_eq!(r.status, 400, "{form}: {}", r.body);
        assert!(r.error().contains(why), "{form}: {}", r.body);
    }
    let r = sub("match=t&access_token=x", reader.clone()).await;
    assert!(r.error().contains("Authorization: Bearer"), "the hub names where its token goes: {}", r.body);
    let legacy = signed(Header::default(), json!({"exp": in_an_hour(), "mercure": {"subscribe": ["*"]}}));
    let r = sub("match=t", Some(bearer(&legacy))).await;
    assert!(r.error().contains("--mercure-legacy"), "a 0.x token is named as one: {}", r.body);
    let r = get(gw.addr, "/.well-known/mercure/subscriptions", &[]).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.error().contains("not served"), "{}", r.body);
    let r = call(gw.addr, "POST", HUB, &[FORM], Bytes::from("topic=t")).await.unwrap();
    assert_eq!(status(&r), (401, "Bearer".into()));
    let cookie = format!("__Secure-mercure_access_token={}", everything());
    let r = call(gw.addr, "POST", HUB, &[FORM, ("cookie", &cookie)], Bytes::from("topic=t")).await.unwrap();
    assert_eq!(r.status, 401, "a cookie never publishes: {}", r.body);
    assert!(r.error().contains("Authorization: Bearer"));
    let auth = bearer(&everything());
    let r = call(
        gw.addr,
        "POST",
        HUB,
        &[("content-type", "application/json"), ("authorization", &auth)],
        Bytes::from("{}"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 415, "{}", r.body);
    let expired = {
        let header = Header { typ: Some("at+jwt".into()), ..Header::default() };
        signed(header, json!({"exp": 1, "authorization_details": []}))
    };
    assert_eq!(status(&sub("match=t", Some(bearer(&expired))).await).0, 401);
}

#[tokio::test]
async fn mercure_0x_clients_are_served_with_the_legacy_flag() {
    let TestDb { url, .. } = TestDb::new().await;
    let gw = conformance_gateway(&url, |m| {
        m.mercure_legacy = true;
        m.jwt_exp_optional = true;
    })
    .await;
    // Shaped as the 0.x conformance suite's token: no typ, exp, aud nor iss (0.x hubs checked none).
    let untyped = Header { typ: None, ..Header::default() };
    let legacy =
        signed(untyped.clone(), json!({"mercure": {"publish": ["*"], "subscribe": ["https://example.net/{path}"]}}));
    let query = format!("{HUB}?topic=https%3A%2F%2Fexample.net%2Ffoo%2F%7Brandom%7D&authorization={legacy}");
    let mut s = SseStream::ok(gw.addr, &query, &[]).await;
    let first =
        publish(gw.addr, &legacy, "topic=https://example.net/other&topic=https://example.net/foo/1&data=a&private=on")
            .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let got = s.expect().await;
    assert_eq!((got.id.as_deref(), got.data.as_str()), (Some(first.body.as_str()), "a"), "an alternate topic matched");

    let mut s = SseStream::ok(
        gw.addr,
        &format!("{HUB}?topic=*&lastEventID=earliest"),
        &[("cookie", &format!("mercureAuthorization={legacy}"))],
    )
    .await;
    assert_eq!(s.headers["last-event-id"], "earliest", "0.x says where the stream starts in Last-Event-ID");
    assert_eq!(s.expect().await.id.as_deref(), Some(first.body.as_str()));

    // An anonymous 0.x subscriber, as the suite's, gets a public update under the publisher's id.
    let mut s =
        SseStream::ok(gw.addr, &format!("{HUB}?topic=https%3A%2F%2Fexample.net%2Ffoo%2F%7Brandom%7D"), &[]).await;
    let r = publish(gw.addr, &legacy, "topic=https://example.net/foo/2&id=id-2&data=data+for%0A%0A++two").await;
    assert_eq!((r.status, r.body.as_str()), (200, "id-2"));
    let got = s.expect().await;
    assert_eq!((got.id.as_deref(), got.data.as_str()), (Some("id-2"), "data for\n\n  two"));

    // aud and iss are checked where a 0.x token has them, and a 1.0 token must have both.
    let elsewhere = signed(untyped, json!({"aud": "https://other.example", "mercure": {"publish": ["*"]}}));
    let r = publish(gw.addr, &elsewhere, "topic=t&data=x").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.error().contains("aud"), "{}", r.body);
    let typed = Header { typ: Some("at+jwt".into()), ..Header::default() };
    let detail = json!([{"type": "https://mercure.rocks/authorization-detail", "actions": ["publish"], "topics": [{"match": "*"}]}]);
    let both = json!({"exp": in_an_hour(), "aud": AUDIENCE, "iss": ISSUER, "authorization_details": detail});
    assert_eq!(publish(gw.addr, &signed(typed.clone(), both.clone()), "topic=t&data=x").await.status, 200);
    for claim in ["aud", "iss"] {
        let mut lacking = both.clone();
        lacking.as_object_mut().unwrap().remove(claim);
        let r = publish(gw.addr, &signed(typed.clone(), lacking), "topic=t&data=x").await;
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(r.error().contains(&format!("no {claim} claim")), "{}", r.body);
        // Of a shape the library would pass over: refused, not taken as absent.
        for odd in [json!(5), json!({"a": 1}), json!(["https://other.example", 1])] {
            let mut shaped = both.clone();
            shaped[claim] = odd.clone();
            let mut legacy_shaped = json!({"mercure": {"publish": ["*"]}});
            legacy_shaped[claim] = odd;
            for token in
                [signed(typed.clone(), shaped), signed(Header { typ: None, ..Header::default() }, legacy_shaped)]
            {
                let r = publish(gw.addr, &token, "topic=t&data=x").await;
                assert_eq!(r.status, 401, "{claim}: {}", r.body);
                assert!(r.error().contains(&format!("{claim} claim")), "{}", r.body);
            }
        }
    }

    let strict = gateway(&url, |m| m.mercure_legacy = true).await;
    let r = get(strict.addr, &format!("{HUB}?topic=t"), &[("authorization", &bearer(&legacy))]).await.unwrap();
    assert_eq!(r.status, 401, "a token without exp needs --jwt-exp-optional: {}", r.body);
    assert!(r.error().contains("--jwt-exp-optional"), "{}", r.body);
    let r = get(strict.addr, &format!("{HUB}?topic=t"), &[]).await.unwrap();
    assert_eq!(r.status, 401);
    assert!(r.error().contains("?authorization=") && r.error().contains("mercureAuthorization"), "{}", r.body);
}
