//! What Meta asks of an app beyond the page: app-level webhook subscriptions (set, completed,
//! never overwritten when they point elsewhere), the permissions a person actually granted
//! (declined ones re-asked with `auth_type=rerequest`), `appsecret_proof` on every call, and the
//! Deauthorize and Data Deletion Request callbacks with their `signed_request`. All against the
//! Graph simulator, which models each of them.

use std::time::Duration;

use omni_gateway::messenger::graph::SUBSCRIBED_FIELDS;
use omni_gateway::store::PageStatus;
use omni_sim::graph::AppSubscription;
use omni_testkit::pages::{World, query};
use omni_testkit::{APP_ID, FB_ADMIN, VERIFY_TOKEN, eventually};
use reqwest::StatusCode;
use url::Url;

fn our_fields() -> Vec<String> {
    SUBSCRIBED_FIELDS.iter().map(|f| (*f).to_owned()).collect()
}

/// The app-level subscription the gateway should have set for `w`.
fn ours(w: &World, fields: Vec<String>) -> Option<AppSubscription> {
    Some(AppSubscription {
        callback_url: format!("{}/webhooks/messenger", w.public_url),
        fields,
        verify_token: VERIFY_TOKEN.into(),
    })
}

#[tokio::test]
async fn app_level_webhooks_are_set_completed_and_never_taken_from_another_callback() {
    let w = World::start_reachable("health_check_secs = 1").await;
    // A fresh app: nothing configured under Webhooks in the dashboard.
    w.fb.sim.set_app_subscription(None);
    w.connect_pages().await;
    // Set with the callback verified against the gateway itself (the simulator refuses the
    // subscription when the challenge does not come back).
    assert_eq!(w.fb.sim.app_subscription(), ours(&w, our_fields()));
    let calls = w.fb.sim.calls();
    let read = calls
        .iter()
        .position(|c| c == &format!("GET /v23.0/{APP_ID}/subscriptions"));
    let set = calls
        .iter()
        .position(|c| c == &format!("POST /v23.0/{APP_ID}/subscriptions"));
    let first_page = calls
        .iter()
        .position(|c| c == "POST /v23.0/1001/subscribed_apps");
    assert!(
        read.is_some() && read < set && set < first_page,
        "read, then set, before any page is subscribed: {calls:#?}"
    );

    // Someone unticked fields in the dashboard and added one of theirs: the health check puts
    // ours back and keeps theirs.
    w.fb.sim
        .set_app_subscription(ours(&w, vec!["messages".into(), "messaging_seen".into()]));
    eventually("the app-level fields are completed", || {
        w.fb.sim
            .app_subscription()
            .is_some_and(|s| s.fields.len() == SUBSCRIBED_FIELDS.len() + 1)
    })
    .await;
    let fields = w.fb.sim.app_subscription().unwrap().fields;
    for field in SUBSCRIBED_FIELDS.iter().chain(&["messaging_seen"]) {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }

    // Another callback owns the app's page webhooks: left alone, said in chat and in status.
    let elsewhere = AppSubscription {
        callback_url: "https://other.example.com/hook".into(),
        fields: vec!["messages".into()],
        verify_token: "theirs".into(),
    };
    w.fb.sim.set_app_subscription(Some(elsewhere.clone()));
    w.chat
        .bot_says(&w.chat.alice_dm, |m| {
            m.contains("https://other.example.com/hook") && m.contains("leaves it alone")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.fb.sim.app_subscription(), Some(elsewhere));
    assert_eq!(
        w.told_alice("https://other.example.com/hook"),
        1,
        "told once, not at every check"
    );
    let status = w.ask("/facebook status").await;
    assert!(
        status.contains(
            "app webhooks: The Meta app's page webhooks go to https://other.example.com/hook"
        ),
        "{status}"
    );
    w.stop().await;
}

#[tokio::test]
async fn a_subscription_meta_cannot_verify_is_refused_and_reported() {
    // The callback answers, but with another verify token than Meta was given: Meta's check
    // fails, so nothing is stored and the admin hears why.
    let w = World::start_reachable("").await;
    w.fb.sim.set_app_subscription(None);
    let direct = reqwest::Client::new()
        .post(format!(
            "{}v23.0/{APP_ID}/subscriptions",
            w.fb.sim.url().as_str()
        ))
        .bearer_auth(format!("{APP_ID}|{}", omni_testkit::APP_SECRET))
        .form(&[
            ("object", "page"),
            (
                "callback_url",
                &format!("{}/webhooks/messenger", w.public_url),
            ),
            ("fields", "messages"),
            ("verify_token", "not-the-gateways"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = direct.json().await.unwrap();
    assert_eq!(body["error"]["code"], 2200, "{body}");
    assert_eq!(w.fb.sim.app_subscription(), None);
    w.stop().await;
}

#[tokio::test]
async fn declined_permissions_are_named_and_re_asked() {
    let w = World::start("").await;
    // business_management declined: the pages still connect, and a re-ask link is given.
    w.fb.sim.decline_permissions(&["business_management"]);
    w.connect_pages().await;
    let told = w
        .chat
        .bot_says(&w.chat.alice_dm, |m| m.starts_with("Connected pages"))
        .await;
    assert!(
        told.msg
            .contains("You declined permissions the gateway needs:")
            && told
                .msg
                .contains("`business_management`: lists pages owned by a business portfolio"),
        "{}",
        told.msg
    );
    let link = rerequest_link(&told.msg);
    assert_eq!(w.page("1001").status, PageStatus::Connected);

    // The person allows it through the re-ask link: no more complaint.
    w.fb.sim.decline_permissions(&[]);
    let callback = w.through_dialog(&link).await;
    let (status, html) = w.callback(&callback).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let again = w
        .chat
        .bot_says(&w.chat.alice_dm, |m| {
            m.starts_with("Connected pages") && !m.contains("declined")
        })
        .await;
    assert!(!again.msg.contains("auth_type"), "{}", again.msg);
    w.stop().await;
}

#[tokio::test]
async fn a_declined_required_permission_connects_nothing_until_re_asked() {
    let w = World::start("").await;
    w.fb.sim.decline_permissions(&["pages_messaging"]);
    let link = w.login_link().await;
    let callback = w.through_dialog(&link).await;
    let (status, html) = w.callback(&callback).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{html}");
    assert!(html.contains("pages_messaging"), "{html}");
    assert!(w.stored_pages().is_empty());
    let told = w
        .chat
        .bot_says(&w.chat.alice_dm, |m| m.starts_with("You declined"))
        .await;
    assert!(
        told.msg
            .contains("`pages_messaging`: answers customers in Messenger"),
        "{}",
        told.msg
    );
    let rerequest = rerequest_link(&told.msg);

    // A plain link does not show a declined permission again: still refused.
    w.fb.sim.decline_permissions(&[]);
    let plain = w.login_link().await;
    let (status, _) = w.callback(&w.through_dialog(&plain).await).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(w.stored_pages().is_empty());

    // The re-ask link does.
    let (status, html) = w.callback(&w.through_dialog(&rerequest).await).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(w.page("1001").status, PageStatus::Connected);
    w.stop().await;
}

fn rerequest_link(text: &str) -> Url {
    let link = text
        .split_whitespace()
        .find(|w| w.starts_with("http") && w.contains("auth_type=rerequest"))
        .unwrap_or_else(|| panic!("no re-ask link in {text:?}"));
    let link = Url::parse(link).unwrap();
    assert_eq!(query(&link, "auth_type").as_deref(), Some("rerequest"));
    link
}

#[tokio::test]
async fn every_call_carries_appsecret_proof_when_the_app_requires_it() {
    let w = World::start("health_check_secs = 1").await;
    w.fb.sim.require_appsecret_proof(true);
    w.connect_pages().await;
    assert_eq!(w.page("1001").status, PageStatus::Connected);
    // The health check's calls (debug_token, subscriptions) pass too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        w.fb.sim.stats().error_responses,
        0,
        "{:#?}",
        w.fb.sim.calls()
    );

    // The simulator refuses a call without a proof, or with a wrong one, as Graph does.
    let token = w.fb.sim.page_token("1001").unwrap();
    let url = format!("{}v23.0/1001/subscribed_apps", w.fb.sim.url().as_str());
    let http = reqwest::Client::new();
    let cases = [
        (
            None,
            "API calls from the server require an appsecret_proof argument",
        ),
        (
            Some("00".repeat(32)),
            "Invalid appsecret_proof provided in the API argument",
        ),
    ];
    for (proof, message) in cases {
        let mut req = http.get(&url).bearer_auth(&token);
        if let Some(proof) = &proof {
            req = req.query(&[("appsecret_proof", proof)]);
        }
        let answer = req.send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], 100, "{body}");
        assert_eq!(body["error"]["type"], "GraphMethodException", "{body}");
        assert_eq!(body["error"]["message"], message, "{body}");
    }
    w.stop().await;
}

/// A `signed_request` with one character of the signature changed.
fn forged(signed: &str) -> String {
    let mut chars: Vec<char> = signed.chars().collect();
    chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test]
async fn deauthorize_disconnects_the_persons_pages_and_refuses_forgeries() {
    let w = World::start("").await;
    w.connect_pages().await;
    let url = w.on_gateway("/oauth/facebook/deauthorize", None);
    let http = reqwest::Client::new();
    let bad = [
        vec![("signed_request", forged(&w.fb.sim.signed_request(FB_ADMIN)))],
        vec![("signed_request", "not-a-signed-request".to_owned())],
        vec![("other", "x".to_owned())],
    ];
    for form in bad {
        let answer = http.post(url.clone()).form(&form).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{form:?}");
        assert_eq!(w.page("1001").status, PageStatus::Connected);
        assert!(w.running.gateway.store.grant(FB_ADMIN).unwrap().is_some());
    }

    let answer = w.fb.sim.remove_app(FB_ADMIN, url.as_str()).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    for id in ["1001", "1002"] {
        let page = w.page(id);
        assert_eq!(page.status, PageStatus::Disconnected);
        assert!(page.token.is_none());
    }
    assert_eq!(w.running.gateway.store.grant(FB_ADMIN).unwrap(), None);
    w.chat
        .bot_says(&w.chat.alice_dm, |m| {
            m.contains("removed the app on Facebook") && m.contains("Acme Bakery")
        })
        .await;
    w.stop().await;
}

#[tokio::test]
async fn data_deletion_forgets_the_person_and_shows_a_status_page() {
    let w = World::start("").await;
    w.connect_pages().await;
    let url = w.on_gateway("/oauth/facebook/data-deletion", None);
    let answer = reqwest::Client::new()
        .post(url.clone())
        .form(&[("signed_request", forged(&w.fb.sim.signed_request(FB_ADMIN)))])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert!(w.running.gateway.store.grant(FB_ADMIN).unwrap().is_some());

    let answer =
        w.fb.sim
            .request_data_deletion(FB_ADMIN, url.as_str())
            .await
            .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let body: serde_json::Value = answer.json().await.unwrap();
    let code = body["confirmation_code"].as_str().unwrap().to_owned();
    assert!(code.len() >= 16, "{body}");
    assert_eq!(
        body["url"],
        format!("http://127.0.0.1:8080/oauth/facebook/data-deletion/{code}")
    );
    assert_eq!(w.running.gateway.store.grant(FB_ADMIN).unwrap(), None);
    for page in w.stored_pages() {
        assert_eq!(page.grant, None);
        assert!(page.token.is_none());
        assert_eq!(page.status, PageStatus::Disconnected);
    }

    let status_url = w.on_gateway(&format!("/oauth/facebook/data-deletion/{code}"), None);
    let page = reqwest::get(status_url).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains(&code) && html.contains("completed"), "{html}");
    let unknown = reqwest::get(w.on_gateway("/oauth/facebook/data-deletion/nope", None))
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    w.stop().await;
}

#[tokio::test]
async fn unauthorize_after_the_user_token_expired_revokes_with_the_app_token() {
    let w = World::start("").await;
    w.connect_pages().await;
    w.fb.sim.expire_user_tokens(FB_ADMIN);
    let report = w.ask("/facebook unauthorize").await;
    assert!(report.contains("permissions were revoked"), "{report}");
    let calls = w.fb.sim.calls();
    assert!(
        calls.contains(&format!("DELETE /v23.0/{FB_ADMIN}/permissions")),
        "{calls:#?}"
    );
    w.stop().await;
}
