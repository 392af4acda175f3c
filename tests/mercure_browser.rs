//! The Mercure hub in a real browser: Chromium's `EventSource` subscribes over HTTPS with exact, URL
//! pattern and URI template selectors, anonymously and with the Mercure cookie, resumes from a
//! publisher's id, a hub id and `earliest`, and `fetch` meets every refusal, in both protocol versions.
//! The cases are those of Mercure's conformance suite, with its key.

mod common;

use std::sync::Arc;

use common::mercure::{in_an_hour, signed, token, SECRET};
use common::{artifact_dir, Browser, Gateway, TestDb};
use jsonwebtoken::Header;
use pgsse::auth::{Auth, Jwt, DEFAULT_COOKIE};
use serde_json::{json, Value};

/// The page's helpers: `sub(name, query)` opens an EventSource and resolves once it is open, `got[name]`
/// holds what it received; `pub(token, fields)` publishes as the suite does; `probe(query, headers)` and
/// `post(headers, body)` answer status and the headers a refusal carries.
const HELPERS: &str = r#"
window.got = {};
window.sub = (name, query) => new Promise((resolve) => {
  const source = new EventSource("/.well-known/mercure?" + query);
  window.got[name] = [];
  const push = (e) => window.got[name].push({ type: e.type, id: e.lastEventId, data: e.data });
  source.onmessage = push;
  source.addEventListener("book", push);
  source.onopen = () => resolve(true);
});
window.pub = async (token, fields) => {
  const body = new URLSearchParams();
  for (const [k, v] of fields) body.append(k, v);
  const r = await fetch("/.well-known/mercure", { method: "POST", headers: { Authorization: "Bearer " + token }, body });
  return { status: r.status, type: r.headers.get("content-type"), body: await r.text() };
};
window.probe = async (query, headers = {}) => {
  const r = await fetch("/.well-known/mercure?" + query, { headers });
  const out = { status: r.status, auth: r.headers.get("www-authenticate"), last: r.headers.get("mercure-last-event-id"),
                legacy: r.headers.get("last-event-id") };
  await r.body?.cancel();
  return out;
};
window.post = async (headers, body) => {
  const r = await fetch("/.well-known/mercure", { method: "POST", headers, body });
  return { status: r.status, auth: r.headers.get("www-authenticate") };
};
true
"#;

/// The 1.0 suite's token: publish and subscribe on `*`.
fn token_1_0() -> String {
    let header = Header { typ: Some("at+jwt".into()), ..Header::default() };
    let detail = |action: &str| json!({"type": "https://mercure.rocks/authorization-detail", "actions": [action], "topics": [{"match": "*"}]});
    let claims = json!({"exp": in_an_hour(), "authorization_details": [detail("publish"), detail("subscribe")]});
    signed(header, claims)
}

/// The 0.x suite's token: no `exp`.
fn token_0_x() -> String {
    signed(Header::default(), json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}}))
}

async fn js(browser: &mut Browser, code: &str) -> Value {
    browser.eval("hub", code).await
}

/// Publishes `topics` as the suite does (its id and data with an empty line); returns the answer.
async fn publish(browser: &mut Browser, token: &str, topics: &[&str], id: &str, private: bool) -> Value {
    let mut fields: Vec<[String; 2]> = topics.iter().map(|t| ["topic".into(), t.to_string()]).collect();
    fields.push(["id".into(), id.into()]);
    fields.push(["data".into(), format!("data for\n\n        {id}")]);
    if private {
        fields.push(["private".into(), "on".into()]);
    }
    js(browser, &format!("window.pub({}, {})", json!(token), json!(fields))).await
}

fn ids(got: &Value) -> Vec<String> {
    got.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_subscribers_get_what_the_conformance_suite_expects() {
    let Some(mut browser) = Browser::start() else { return };
    let TestDb { url, .. } = TestDb::new().await;
    let dir = artifact_dir().join(format!("mercure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = common::self_signed(&dir);
    let mut config = common::gateway_config(&url);
    config.tls = Some(pgsse::tls::server_config(&cert, &key).unwrap());
    config.auth = Arc::new(Auth::Jwt(Box::new(Jwt::hs256(SECRET, DEFAULT_COOKIE))));
    config.mercure.mercure = true;
    config.mercure.mercure_anonymous = true;
    config.mercure.mercure_legacy = true;
    config.mercure.jwt_exp_optional = true;
    // Over TLS, which the test client's health check does not speak: the page waits for health itself.
    let gw = Gateway::spawn(config).await;
    browser.goto("hub", &format!("https://{}/healthz", gw.addr)).await;
    browser.wait("hub", "fetch('/healthz').then(r => r.ok)").await;
    js(&mut browser, HELPERS).await;
    let (t1, t0) = (token_1_0(), token_0_x());

    // Protocol 1.0: anonymous subscribers, one per selector kind, and one with the Mercure cookie.
    let a = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9";
    let uri = "https://example.net/bar/d3e4f5";
    let pattern = "https://example.net/foo/e4f5a6";
    for (name, query) in [
        ("raw", format!("match={a}")),
        ("several", "match=foo&match=c0ffee".to_string()),
        ("uri", format!("match={}", urlencode(uri))),
        ("pattern", format!("match_urlpattern={}", urlencode("https://example.net/foo/:random"))),
        ("other", "match=another-name&match=sentinel".to_string()),
    ] {
        assert_eq!(js(&mut browser, &format!("window.sub({}, {})", json!(name), json!(query))).await, true);
    }
    let cookie = format!("__Secure-mercure_access_token={t1}; Secure; SameSite=Strict; path=/");
    js(&mut browser, &format!("document.cookie = {}", json!(cookie))).await;
    js(
        &mut browser,
        &format!(
            "window.sub('granted', {})",
            json!(format!("match={a}&match_urlpattern={}", urlencode("https://example.net/foo/:random")))
        ),
    )
    .await;
    js(&mut browser, "document.cookie = '__Secure-mercure_access_token=; Secure; path=/; max-age=0'").await;

    for (topic, id) in
        [(a, "id-raw"), ("c0ffee", "id-several"), (uri, "id-uri"), (pattern, "id-pattern"), ("will-not-match", "id-no")]
    {
        let answer = publish(&mut browser, &t1, &[topic], id, false).await;
        assert_eq!((answer["status"].as_u64(), answer["body"].as_str()), (Some(200), Some(id)), "{answer}");
        assert!(answer["type"].as_str().unwrap().starts_with("text/plain"), "{answer}");
    }
    for (topic, id) in [(a, "id-raw"), (uri, "id-uri"), (pattern, "id-pattern")] {
        assert_eq!(publish(&mut browser, &t1, &[topic], id, true).await["status"], 200, "the suite reuses ids");
    }
    for topic in [a, uri, pattern, "sentinel"] {
        publish(&mut browser, &t1, &[topic], "id-end", false).await;
    }
    browser.wait("hub", "['raw','uri','pattern','other'].every(n => window.got[n].some(e => e.id === 'id-end'))").await;
    browser.wait("hub", "window.got.several.length === 1 && window.got.granted.length === 6").await;
    let got = js(&mut browser, "window.got").await;
    assert_eq!(got["raw"][0], json!({"type": "message", "id": "id-raw", "data": "data for\n\n        id-raw"}));
    assert_eq!(ids(&got["raw"]), ["id-raw", "id-end"], "the private update never reached an anonymous page");
    assert_eq!(ids(&got["several"]), ["id-several"]);
    assert_eq!(ids(&got["uri"]), ["id-uri", "id-end"]);
    assert_eq!(ids(&got["pattern"]), ["id-pattern", "id-end"], "a URL pattern, and nothing it does not match");
    assert_eq!(ids(&got["other"]), ["id-end"], "non-matching topics are not received");
    let granted = ["id-raw", "id-pattern", "id-raw", "id-pattern", "id-end", "id-end"];
    assert_eq!(ids(&got["granted"]), granted, "the cookie's token grants the private updates too");

    // Resuming: from a publisher's id, a hub id, and earliest.
    let hub_id =
        js(&mut browser, &format!("window.pub({}, [['topic', 'resume'], ['data', 'no id']])", json!(t1))).await;
    let hub_id = hub_id["body"].as_str().unwrap().to_string();
    assert!(hub_id.starts_with('#'), "{hub_id}");
    publish(&mut browser, &t1, &["resume"], "id-after", false).await;
    for (name, last) in [("from-publisher", "id-uri"), ("from-hub", hub_id.as_str()), ("from-earliest", "earliest")] {
        let topic = if name == "from-publisher" { uri } else { "resume" };
        let query = format!("match={}&last_event_id={}", urlencode(topic), urlencode(last));
        js(&mut browser, &format!("window.sub({}, {})", json!(name), json!(query))).await;
    }
    browser.wait("hub", "window.got['from-earliest'].length === 2 && window.got['from-hub'].length === 1").await;
    browser.wait("hub", "window.got['from-publisher'].length === 1").await;
    let got = js(&mut browser, "window.got").await;
    assert_eq!(ids(&got["from-publisher"]), ["id-end"], "after the private and public id-uri: only id-end");
    assert_eq!(ids(&got["from-hub"]), ["id-after"]);
    assert_eq!(ids(&got["from-earliest"]), [hub_id.as_str(), "id-after"]);
    let probe = js(&mut browser, "window.probe('match=resume&last_event_id=earliest')").await;
    assert_eq!((probe["status"].as_u64(), probe["last"].as_str()), (Some(200), Some("earliest")));

    // Protocol 0.x: topic= with URI templates and alternate topics, the token in ?authorization=.
    for (name, query) in [
        ("template", format!("topic={}", urlencode("https://example.net/foo/{random}"))),
        ("alternate", "topic=b0b0".to_string()),
        ("legacy-granted", format!("topic={}&authorization={t0}", urlencode("https://example.net/foo/{random}"))),
    ] {
        js(&mut browser, &format!("window.sub({}, {})", json!(name), json!(query))).await;
    }
    publish(&mut browser, &t0, &["https://example.net/foo/0x1"], "id-template", false).await;
    publish(&mut browser, &t0, &["https://example.net/bar/will-not-match}"], "id-no-template", false).await;
    publish(&mut browser, &t0, &["r4nd0m", "b0b0"], "id-alternate", false).await;
    publish(&mut browser, &t0, &["https://example.net/foo/0x2"], "id-private-template", true).await;
    publish(&mut browser, &t0, &["https://example.net/foo/0x3"], "id-template-end", false).await;
    browser
        .wait("hub", "window.got.template.some(e => e.id === 'id-template-end') && window.got.alternate.length === 1")
        .await;
    browser.wait("hub", "window.got['legacy-granted'].length === 3").await;
    let got = js(&mut browser, "window.got").await;
    assert_eq!(ids(&got["template"]), ["id-template", "id-template-end"]);
    assert_eq!(ids(&got["alternate"]), ["id-alternate"], "an alternate topic selects the update");
    assert_eq!(ids(&got["legacy-granted"]), ["id-template", "id-private-template", "id-template-end"]);
    let probe = js(&mut browser, "window.probe('topic=*&lastEventID=earliest')").await;
    assert_eq!(probe["legacy"], "earliest", "0.x says where the stream starts in Last-Event-ID: {probe}");

    // 0.x resumes too (`lastEventID=`): from a publisher's id, a hub id, and earliest.
    let fields = "[['topic', 'https://example.net/foo/0x4'], ['data', 'no id']]";
    let legacy_hub = js(&mut browser, &format!("window.pub({}, {fields})", json!(t0))).await;
    let legacy_hub = legacy_hub["body"].as_str().unwrap().to_string();
    assert!(legacy_hub.starts_with('#'), "{legacy_hub}");
    publish(&mut browser, &t0, &["https://example.net/foo/0x5"], "id-legacy-end", false).await;
    let resumes = [
        ("legacy-from-publisher", "id-template-end"),
        ("legacy-from-hub", legacy_hub.as_str()),
        ("legacy-from-earliest", "earliest"),
    ];
    for (name, last) in resumes {
        let query = format!("topic={}&lastEventID={}", urlencode("https://example.net/foo/{random}"), urlencode(last));
        js(&mut browser, &format!("window.sub({}, {})", json!(name), json!(query))).await;
    }
    let ended = "window.got[n].some(e => e.id === 'id-legacy-end')";
    browser.wait("hub", &format!("{} .every(n => {ended})", json!(resumes.map(|(name, _)| name)))).await;
    let got = js(&mut browser, "window.got").await;
    assert_eq!(ids(&got["legacy-from-publisher"]), [legacy_hub.as_str(), "id-legacy-end"]);
    assert_eq!(ids(&got["legacy-from-hub"]), ["id-legacy-end"]);
    let earliest = ids(&got["legacy-from-earliest"]);
    assert!(earliest.ends_with(&["id-template", "id-template-end", &legacy_hub, "id-legacy-end"].map(String::from)));
    assert!(
        !earliest.iter().any(|id| id == "id-private-template"),
        "a private update replayed to no one it would not reach"
    );

    // Refusals, as fetch sees them.
    let refused = |status: u64, auth: Value| json!({"status": status, "auth": auth});
    let check = |v: &Value| json!({"status": v["status"], "auth": v["auth"]});
    let bad = js(&mut browser, "window.probe('match=x', { Authorization: 'Bearer not-a-token' })").await;
    assert_eq!(check(&bad), refused(401, json!(r#"Bearer error="invalid_token""#)));
    let bad = js(&mut browser, "window.probe('match=x', { Authorization: 'Basic eDp5' })").await;
    assert_eq!(check(&bad), refused(400, json!(r#"Bearer error="invalid_request""#)));
    let anonymous = js(&mut browser, "window.post({}, new URLSearchParams('topic=t'))").await;
    assert_eq!(anonymous, refused(401, json!("Bearer")));
    let reader = token(&["subscribe"], json!([{"match": "*"}]));
    let outside = js(
        &mut browser,
        &format!("window.post({{ Authorization: 'Bearer {reader}' }}, new URLSearchParams('topic=t'))"),
    )
    .await;
    assert_eq!(outside, refused(403, json!(r#"Bearer error="insufficient_scope""#)));
    for query in [
        "",
        "foo=bar",
        "matchURLPattern=x",
        "MATCH=x",
        "match_regexp=x",
        "match_urlpattern=https%3A%2F%2Fx%2F(",
        "match=a%0Ab",
    ] {
        let answer = js(&mut browser, &format!("window.probe({})", json!(query))).await;
        assert_eq!(answer["status"], 400, "{query}: {answer}");
    }
    for form in ["data=x", "topic=*", "topic=t&id=%231", "topic=t&id=earliest", "topic=t&retry=soon", "topic=a%0Ab"] {
        let answer = js(
            &mut browser,
            &format!("window.post({{ Authorization: 'Bearer {t1}' }}, new URLSearchParams({}))", json!(form)),
        )
        .await;
        assert_eq!(answer["status"], 400, "{form}: {answer}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
