//! Connecting Facebook Pages end to end, against both simulators: `/facebook authorize` in chat,
//! the simulated Login dialog, the gateway's OAuth callback, page configuration, disconnecting in
//! the safe order, refused states, a declined login, token death (Graph 190) during a call and in
//! the periodic health check, and tokens never at rest in clear. (The audit trail has its own
//! binary, `pages_audit`.)

use std::time::Duration;

use omni_gateway::health::now_ms;
use omni_gateway::store::{Page, PageStatus};
use omni_sim::graph::DialogDecision;
use omni_testkit::pages::{World, all_fields, query, with_query};
use omni_testkit::{FB_ADMIN, PAGES, eventually};
use reqwest::StatusCode;

#[tokio::test]
async fn authorize_connects_both_pages_and_edit_configures_them() {
    let w = World::start("").await;
    w.chat.sim.add_department("Sales", &[]);
    let support_id = w.chat.sim.add_department("Support", &[]);

    let html = w.connect_pages().await;
    assert!(
        html.contains("Pages connected")
            && html.contains("Acme Bakery (1001)")
            && html.contains("Acme Books (1002)")
            && html.contains("You can close this tab"),
        "{html}"
    );
    let told = w
        .chat
        .bot_says(&w.chat.alice_dm, |m| m.starts_with("Connected pages"))
        .await;
    assert_eq!(
        told.msg,
        "Connected pages: Acme Bakery (1001), Acme Books (1002). Try it out by sending a message to your page."
    );
    for (id, name) in PAGES {
        assert_eq!(w.fb.sim.subscriptions(id), all_fields(), "page {id}");
        let page = w.page(id);
        assert_eq!(page.name, name);
        assert_eq!(page.status, PageStatus::Connected);
        assert_eq!(page.subscribers, ["alice"]);
        assert!(page.token.is_some());
    }
    // Subscribed first, then read back: the verification is a real call.
    let calls = w.fb.sim.calls();
    for id in ["1001", "1002"] {
        let post = calls
            .iter()
            .position(|c| c == &format!("POST /v23.0/{id}/subscribed_apps"));
        let get = calls
            .iter()
            .position(|c| c == &format!("GET /v23.0/{id}/subscribed_apps"));
        assert!(post.is_some() && post < get, "{calls:#?}");
    }

    let listed = w.ask("/facebook pages").await;
    assert!(listed.starts_with("Connected pages (2):"), "{listed}");
    for needle in [
        "1001 *Acme Bakery*",
        "1002 *Acme Books*",
        "department: none",
    ] {
        assert!(listed.contains(needle), "{needle} in {listed}");
    }

    // Each setting: (command, what the bot says, what is stored afterwards).
    type Check = fn(&Page) -> bool;
    let rows: Vec<(String, &str, Check)> = vec![
        (
            "edit 1001 department sales".into(),
            "department is now Sales",
            |p| p.department.as_ref().is_some_and(|d| d.name == "Sales"),
        ),
        (
            format!("edit 1001 department {support_id}"),
            "department is now Support",
            |p| p.department.as_ref().is_some_and(|d| d.name == "Support"),
        ),
        (
            "edit 1001 department Marketing".into(),
            "There is no department 'Marketing'. Valid departments: Sales, Support.",
            |p| p.department.as_ref().is_some_and(|d| d.name == "Support"),
        ),
        (
            "edit 1001 department none".into(),
            "department is now none",
            |p| p.department.is_none(),
        ),
        (
            "edit 1001 welcome Hi there! An agent will be with you shortly.".into(),
            "welcome message updated",
            |p| p.welcome.as_deref() == Some("Hi there! An agent will be with you shortly."),
        ),
        (
            "edit 1001 welcome off".into(),
            "welcome message is off",
            |p| p.welcome.is_none(),
        ),
        (
            "edit 1001 finished \"Thanks, bye\"".into(),
            "finished message updated",
            |p| p.finished.as_deref() == Some("Thanks, bye"),
        ),
        (
            "edit 1001 finished off".into(),
            "finished message is off",
            |p| p.finished.is_none(),
        ),
        (
            "edit 1001 offline We are closed.".into(),
            "offline message updated",
            |p| p.offline.as_deref() == Some("We are closed."),
        ),
        (
            "edit 1001 offline off".into(),
            "offline message is off",
            |p| p.offline.is_none(),
        ),
        (
            "unsubscribe 1001".into(),
            "You will no longer get the notices of page 1001",
            |p| p.subscribers.is_empty(),
        ),
        (
            "subscribe 1001".into(),
            "You will get the notices of page 1001",
            |p| p.subscribers == ["alice"],
        ),
    ];
    for (command, says, holds) in rows {
        let reply = w.ask(&format!("/facebook {command}")).await;
        assert!(reply.contains(says), "{command}: {reply}");
        assert!(holds(&w.page("1001")), "{command}: {:?}", w.page("1001"));
    }
    assert!(w.page("1002").department.is_none(), "only 1001 was edited");

    w.ask("/facebook edit 1001 department Sales").await;
    w.ask("/facebook edit 1001 welcome Hello!").await;
    let shown = w.ask("/facebook edit 1001").await;
    for needle in [
        "Page 1001 *Acme Bakery* (connected)",
        "department: Sales",
        "welcome: \"Hello!\"",
        "finished: off",
        "notices go to: @alice",
    ] {
        assert!(shown.contains(needle), "{needle} in {shown}");
    }
    w.stop().await;
}

#[tokio::test]
async fn unauthorize_unsubscribes_then_revokes_and_authorize_restores_settings() {
    let w = World::start("").await;
    w.chat.sim.add_department("Sales", &[]);
    w.connect_pages().await;
    w.ask("/facebook edit 1001 department Sales").await;
    w.ask("/facebook edit 1001 welcome Welcome to the bakery")
        .await;

    let one = w.ask("/facebook unauthorize 1002").await;
    assert!(one.contains("✓ Acme Books (1002) unsubscribed"), "{one}");
    assert!(
        !one.contains("revoked"),
        "the grant still serves 1001: {one}"
    );
    assert_eq!(w.fb.sim.subscriptions("1002"), None);
    assert_eq!(w.fb.sim.subscriptions("1001"), all_fields());
    assert!(w.page("1002").token.is_none());
    assert_eq!(w.page("1002").status, PageStatus::Disconnected);
    assert!(w.page("1001").token.is_some());
    assert!(
        !w.fb
            .sim
            .calls()
            .iter()
            .any(|c| c.starts_with("DELETE") && c.ends_with("/permissions")),
        "no revocation while a page is left"
    );

    let rest = w.ask("/facebook unauthorize").await;
    assert!(rest.contains("✓ Acme Bakery (1001) unsubscribed"), "{rest}");
    assert!(rest.contains("permissions were revoked"), "{rest}");
    assert!(rest.contains("Page settings are kept"), "{rest}");
    assert_eq!(w.fb.sim.subscriptions("1001"), None);
    let calls = w.fb.sim.calls();
    let unsubscribed = calls
        .iter()
        .position(|c| c == "DELETE /v23.0/1001/subscribed_apps")
        .expect("1001 unsubscribed");
    let revoked = calls
        .iter()
        .position(|c| c == "DELETE /v23.0/me/permissions")
        .expect("grant revoked");
    assert!(
        unsubscribed < revoked,
        "unsubscribe before revoke: {calls:#?}"
    );
    assert_eq!(w.fb.sim.page_token("1001"), None, "the grant is gone");
    assert!(w.running.gateway.store.grant(FB_ADMIN).unwrap().is_none());
    for page in w.stored_pages() {
        assert!(page.token.is_none(), "{} forgot its token", page.id);
        assert_eq!(page.status, PageStatus::Disconnected);
    }
    let kept = w.page("1001");
    assert_eq!(kept.department.map(|d| d.name).as_deref(), Some("Sales"));
    assert_eq!(kept.welcome.as_deref(), Some("Welcome to the bakery"));
    assert!(
        w.ask("/facebook unauthorize")
            .await
            .contains("No page is connected"),
        "nothing left to disconnect"
    );

    w.connect_pages().await;
    let restored = w.page("1001");
    assert_eq!(restored.status, PageStatus::Connected);
    assert_eq!(
        restored.department.map(|d| d.name).as_deref(),
        Some("Sales")
    );
    assert_eq!(restored.welcome.as_deref(), Some("Welcome to the bakery"));
    assert_eq!(w.fb.sim.subscriptions("1001"), all_fields());
    let listed = w.ask("/facebook pages").await;
    assert!(listed.contains("department: Sales"), "{listed}");
    w.stop().await;
}

#[tokio::test]
async fn forged_missing_expired_and_replayed_states_are_refused_and_change_nothing() {
    let w = World::start("").await;
    let link = w.login_link().await;
    let genuine = w.through_dialog(&link).await;
    let code = query(&genuine, "code").unwrap();
    let state = query(&genuine, "state").unwrap();
    let exchanges = || {
        w.fb.sim
            .calls()
            .iter()
            .filter(|c| c.contains("/oauth/access_token"))
            .count()
    };

    let forged = with_query(
        &genuine,
        &[("code", &code), ("state", "forged-state-value")],
    );
    let missing = with_query(&genuine, &[("code", &code)]);
    for (what, url, says) in [
        (
            "forged",
            forged,
            "already used or was not issued by this gateway",
        ),
        ("missing", missing, "carried no state"),
    ] {
        let (status, html) = w.callback(&url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {html}");
        assert!(html.contains(says), "{what}: {html}");
        assert!(w.stored_pages().is_empty(), "{what}: nothing connected");
        assert_eq!(exchanges(), 0, "{what}: the code was not even exchanged");
    }

    // Expire the genuine state in the store, as 15 minutes would.
    let store = &w.running.gateway.store;
    let mut record = store
        .take_oauth_state(&state)
        .unwrap()
        .expect("state stored");
    record.expires_ms = now_ms() - 1;
    store.put_oauth_state(&state, &record).unwrap();
    let (status, html) = w.callback(&genuine).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("This link expired"), "{html}");
    assert!(w.stored_pages().is_empty());
    assert_eq!(exchanges(), 0);
    w.chat
        .bot_says(&w.chat.alice_dm, |m| m.contains("link expired"))
        .await;

    // A fresh link works once; the same callback again is refused.
    let fresh = w.through_dialog(&w.login_link().await).await;
    let (status, _) = w.callback(&fresh).await;
    assert_eq!(status, StatusCode::OK);
    let pages = w.stored_pages();
    assert_eq!(pages.len(), 2);
    let calls = w.fb.sim.calls().len();
    let (status, html) = w.callback(&fresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("already used"), "{html}");
    assert_eq!(
        w.fb.sim.calls().len(),
        calls,
        "a replay calls Facebook for nothing"
    );
    assert_eq!(w.stored_pages(), pages, "a replay changes nothing");
    w.stop().await;
}

#[tokio::test]
async fn a_declined_login_is_told_in_chat_and_connects_nothing() {
    let w = World::start("").await;
    w.fb.sim.set_dialog_decision(DialogDecision::Deny);
    let callback = w.through_dialog(&w.login_link().await).await;
    assert_eq!(query(&callback, "error").as_deref(), Some("access_denied"));
    let (status, html) = w.callback(&callback).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Nothing was connected") && html.contains("/facebook authorize"),
        "{html}"
    );
    assert!(!html.to_lowercase().contains("error:"), "{html}");
    let told = w
        .chat
        .bot_says(&w.chat.alice_dm, |m| m.contains("cancelled"))
        .await;
    assert!(told.msg.contains("no page was connected"), "{}", told.msg);
    assert!(w.stored_pages().is_empty());
    assert_eq!(w.fb.sim.subscriptions("1001"), None);
    w.stop().await;
}

#[tokio::test]
async fn a_190_during_a_call_needs_authorization_once_and_authorize_restores_it() {
    let w = World::start("").await;
    // An agent is online, so the customers' conversations open rooms instead of being held (a
    // hold would DM alice too, between her commands and their answers).
    w.chat
        .sim
        .add_user("agent1", "agent-pw", &["user", "livechat-agent"]);
    w.chat.sim.set_agent_online("agent1", true);
    w.connect_pages().await;
    w.fb.sim
        .add_psid("1001", "24000000001", "Carla", "Customer");
    w.fb.sim.add_psid("1001", "24000000002", "Dan", "Customer");
    // The admin changed their Facebook password: every token of the grant dies with 190/460.
    w.fb.sim.invalidate_user_tokens(FB_ADMIN, 460);

    w.customer_writes("24000000001", "m_first", "hello").await;
    let notice = "Facebook no longer accepts the access of page *Acme Bakery* (1001)";
    eventually("alice is told page 1001 needs authorization", || {
        w.told_alice(notice) == 1
    })
    .await;
    assert!(
        matches!(w.page("1001").status, PageStatus::NeedsAuthorization { .. }),
        "{:?}",
        w.page("1001").status
    );
    // Another conversation hits the dead token too: no second notice.
    w.customer_writes("24000000002", "m_second", "anyone there?")
        .await;
    eventually("the second customer is relayed", || {
        w.chat.sim.visitors().len() == 2
    })
    .await;
    assert_eq!(w.told_alice(notice), 1, "notified once");

    // Each answer is picked by its heading rather than by arriving next, so a notice in the same
    // DM cannot be taken for it.
    for (command, heading) in [
        ("/facebook pages", "Connected pages ("),
        ("/facebook status", "omni-gateway status"),
    ] {
        w.chat.sim.post("alice", &w.chat.alice_dm, command);
        let shown = w
            .chat
            .bot_says(&w.chat.alice_dm, |m| m.contains(heading))
            .await
            .msg;
        assert!(
            shown.contains("needs authorization") && shown.contains("/facebook authorize"),
            "{command}: {shown}"
        );
    }

    w.connect_pages().await;
    assert_eq!(w.page("1001").status, PageStatus::Connected);
    let listed = w.ask("/facebook pages").await;
    assert!(!listed.contains("needs authorization"), "{listed}");
    w.stop().await;
}

#[tokio::test]
async fn health_check_repairs_dropped_subscriptions_and_finds_dead_tokens() {
    let w = World::start("health_check_secs = 1").await;
    w.connect_pages().await;

    // Meta silently unsubscribed 1001 (an hour of failed webhooks).
    w.fb.sim.drop_subscription("1001");
    eventually("1001 is subscribed again", || {
        w.fb.sim.subscriptions("1001") == all_fields()
    })
    .await;
    w.chat
        .bot_says(&w.chat.alice_dm, |m| {
            m.starts_with("Page *Acme Bakery* (1001): Facebook had dropped its webhook subscription; the gateway subscribed it again")
        })
        .await;

    // 1002 loses the tasks that allow subscribing: the repair fails and alice is told why.
    w.fb.sim
        .add_page(FB_ADMIN, "1002", "Acme Books", &["MESSAGING"]);
    w.chat
        .bot_says(&w.chat.alice_dm, |m| {
            m.starts_with("Page *Acme Books* (1002): Facebook had dropped its webhook subscription, and subscribing it again failed")
        })
        .await;

    // The grant dies: debug_token finds it before any customer does.
    w.fb.sim.invalidate_user_tokens(FB_ADMIN, 460);
    eventually("both pages need authorization", || {
        w.stored_pages()
            .iter()
            .all(|p| matches!(p.status, PageStatus::NeedsAuthorization { .. }))
    })
    .await;
    let notice = "Facebook no longer accepts the access of page *Acme Bakery* (1001)";
    eventually("alice is told", || w.told_alice(notice) == 1).await;
    // Later checks leave a page that needs authorization alone: still one notice.
    let checks =
        w.fb.sim
            .calls()
            .iter()
            .filter(|c| c.contains("debug_token"))
            .count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.told_alice(notice), 1);
    assert_eq!(
        w.fb.sim
            .calls()
            .iter()
            .filter(|c| c.contains("debug_token"))
            .count(),
        checks,
        "pages that need authorization are not checked again"
    );
    w.stop().await;
}

#[tokio::test]
async fn tokens_are_never_at_rest_in_clear() {
    let w = World::start("").await;
    w.connect_pages().await;
    let tokens: Vec<String> = PAGES
        .iter()
        .map(|(id, _)| w.fb.sim.page_token(id).expect("a live page token"))
        .collect();
    w.running.gateway.store.sync().await.unwrap();
    let data = w.running.dir.path().join("data");
    let mut files = 0;
    let mut stack = vec![data];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            for token in &tokens {
                assert!(
                    !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                    "a page token is in clear in {}",
                    path.display()
                );
            }
        }
    }
    assert!(files > 0, "the store wrote files");
    w.stop().await;
}
