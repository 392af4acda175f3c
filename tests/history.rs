//! History (`GET /{channel}`): newest first, pages back by `before` and `Link`, and holds every event
//! committed before the request.

mod common;

use common::{get, Fixture, Response};

#[tokio::test]
async fn history_is_newest_first_and_pages_backwards() {
    let Fixture { app, gw, .. } = Fixture::messages("").await;
    for i in 1..=5 {
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("m{i}")]).await.unwrap();
    }
    let bodies = |resp: &Response| -> Vec<String> {
        resp.json().as_array().unwrap().iter().map(|e| e["data"]["body"].as_str().unwrap().to_string()).collect()
    };
    let all = get(gw.addr, "/messages", &[]).await.unwrap();
    assert_eq!(all.status, 200);
    assert_eq!(bodies(&all), ["m5", "m4", "m3", "m2", "m1"]);
    // A parameter one letter off is said to be one, on history and streams alike.
    for (path, want) in
        [("/messages?limt=5", "did you mean limit?"), ("/messages/events?snapshto=true", "did you mean snapshot?")]
    {
        let typo = get(gw.addr, path, &[]).await.unwrap();
        assert_eq!(typo.status, 400, "{path}: {}", typo.body);
        assert!(typo.body.contains(want), "{path}: {}", typo.body);
    }
    assert_eq!(all.json()[0]["event"], "insert");

    let page = get(gw.addr, "/messages?limit=2", &[]).await.unwrap();
    assert_eq!(bodies(&page), ["m5", "m4"]);
    let oldest_shown = page.json()[1]["id"].as_i64().unwrap();
    let next = get(gw.addr, &format!("/messages?limit=2&before={oldest_shown}"), &[]).await.unwrap();
    assert_eq!(bodies(&next), ["m3", "m2"]);
    let capped = get(gw.addr, "/messages?limit=999999", &[]).await.unwrap();
    assert_eq!((capped.status, bodies(&capped).len()), (200, 5));
    let filtered = get(gw.addr, "/messages?body=in.(m2,m4)", &[]).await.unwrap();
    assert_eq!(bodies(&filtered), ["m4", "m2"], "history takes the filters streams take");

    for (path, status, text) in [
        ("/messages?limit=0", 400, "limit"),
        ("/messages?limit=-1", 400, "limit"),
        ("/messages?limit=ten", 400, "limit"),
        ("/messages?before=x", 400, "before"),
        ("/messages?limit=1&limit=2", 400, "more than once"),
        ("/messages?sort=asc", 400, "invalid filter \"sort\""),
        ("/messages?bdy=eq.m3", 400, "filter \"bdy\" names no published column of channel \"messages\""),
        ("/nosuchchannel", 404, "unknown channel"),
        ("/bad%20name", 400, "invalid channel"),
    ] {
        let resp = get(gw.addr, path, &[]).await.unwrap();
        assert_eq!(resp.status, status, "{path}: {}", resp.body);
        assert!(resp.error().contains(text), "{path}: {}", resp.body);
    }
}

/// History holds every event committed before it was asked for, sequenced or not yet.
#[tokio::test]
async fn history_holds_every_event_committed_before_the_request() {
    let Fixture { app, gw, .. } = Fixture::messages("").await;
    for i in 0..20 {
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("h{i}")]).await.unwrap();
        let newest = get(gw.addr, "/messages?limit=1", &[]).await.unwrap().json();
        assert_eq!(newest[0]["data"]["body"], format!("h{i}"), "{newest}");
    }
}
