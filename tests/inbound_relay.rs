//! Messenger → Livechat end to end: signed webhooks POSTed to the gateway's HTTP port, the Graph
//! simulator for profiles and the Send API, the Rocket.Chat simulator for visitors, rooms,
//! messages and uploads. Every test checks what an agent would see in the room and what the
//! customer would see in Messenger.

use std::time::Duration;

use axum::http::StatusCode;
use omni_gateway::ids::{ConversationKey, PageId, Psid};
use omni_gateway::store::{Department, InboundEvent, Payload};
use omni_sim::ids::RoomId;
use omni_sim::rocketchat::{ServerVersion, SimLivechatRoom, SimMessage, SimOptions, SimVisitor};
use omni_testkit::messenger::{
    Facebook, OFFLINE, PAGE_ID, PageSetup, WELCOME, attachment_event, body, body_for, connect_page,
    now_ms, post_webhook, start_gateway, text_event,
};
use omni_testkit::webhook;
use omni_testkit::{Chat, PATIENCE, Running, eventually, until_ready};
use rand::seq::SliceRandom;
use serde_json::json;

const AGENT: &str = "agent.smith";

/// Both simulators, an agent in department "Sales", and a gateway with the page connected.
struct World {
    chat: Chat,
    fb: Facebook,
    running: Running,
    department: String,
}

impl World {
    async fn start(agent_online: bool) -> World {
        World::start_with(agent_online, |_| {}).await
    }

    async fn start_with(agent_online: bool, page: impl FnOnce(&mut PageSetup)) -> World {
        World::start_on(ServerVersion::default(), agent_online, page).await
    }

    /// The world on a simulator answering as `version`, the REST limiter off (as `check` asks).
    async fn start_on(
        version: ServerVersion,
        agent_online: bool,
        page: impl FnOnce(&mut PageSetup),
    ) -> World {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("omni_gateway=debug")
            .with_test_writer()
            .try_init();
        let chat = Chat::start_with(SimOptions {
            rest_rate_limiter: false,
            version,
            ..SimOptions::default()
        })
        .await;
        chat.sim
            .add_user(AGENT, "agent-pw", &["user", "livechat-agent"]);
        let department = chat.sim.add_department("Sales", &[AGENT]);
        chat.sim.set_agent_online(AGENT, agent_online);
        let fb = Facebook::start().await;
        fb.sim.add_psid(PAGE_ID, "psid-1", "Peter", "Chang");
        let running = start_gateway(&chat, &fb).await;
        until_ready(&running.gateway).await;
        let mut setup = PageSetup {
            department: Some(Department {
                id: department.clone(),
                name: "Sales".into(),
            }),
            ..PageSetup::default()
        };
        page(&mut setup);
        connect_page(&running.gateway, &fb, setup).await;
        World {
            chat,
            fb,
            running,
            department,
        }
    }

    async fn post(&self, items: &[serde_json::Value]) -> StatusCode {
        post_webhook(&self.fb, self.running.gateway.http_addr, &body(items)).await
    }

    async fn post_ok(&self, items: &[serde_json::Value]) {
        assert_eq!(self.post(items).await, StatusCode::OK);
    }

    fn visitor(&self, name_part: &str) -> Option<SimVisitor> {
        self.chat
            .sim
            .visitors()
            .into_iter()
            .find(|v| v.name.as_deref().is_some_and(|n| n.contains(name_part)))
    }

    fn rooms_of(&self, visitor: &SimVisitor) -> Vec<SimLivechatRoom> {
        self.chat
            .sim
            .livechat_rooms()
            .into_iter()
            .filter(|r| r.visitor_token == visitor.token)
            .collect()
    }

    /// What the customer wrote, as the room shows it, oldest first.
    fn customer_texts(&self, rid: &RoomId) -> Vec<String> {
        self.customer_messages(rid)
            .into_iter()
            .map(|m| m.msg)
            .collect()
    }

    fn customer_messages(&self, rid: &RoomId) -> Vec<SimMessage> {
        self.chat
            .sim
            .messages(rid)
            .into_iter()
            .filter(|m| m.token.is_some())
            .collect()
    }

    /// Waits for the visitor's single open room to show `count` customer messages.
    async fn room_with(&self, name_part: &str, count: usize) -> RoomId {
        let mut found = None;
        eventually(&format!("{count} messages from {name_part}"), || {
            found = self.visitor(name_part).and_then(|v| {
                self.rooms_of(&v)
                    .into_iter()
                    .find(|r| r.open)
                    .filter(|r| self.customer_messages(&r.id).len() >= count)
                    .map(|r| r.id)
            });
            found.is_some()
        })
        .await;
        found.expect("room found")
    }

    /// Messages the gateway sent to `psid` through the Send API, by text.
    fn sent_to(&self, psid: &str) -> Vec<String> {
        self.fb
            .sim
            .sent_messages()
            .into_iter()
            .filter(|m| m.recipient == psid)
            .filter_map(|m| m.text)
            .collect()
    }

    async fn stop(self) {
        self.running.stop().await;
    }
}

#[tokio::test]
async fn first_message_creates_visitor_room_message_and_welcome() {
    let world = World::start(true).await;
    let t0 = now_ms();
    world
        .post_ok(&[text_event(
            "psid-1",
            "m_first",
            t0,
            "Hello, is my order shipped?",
        )])
        .await;

    let rid = world.room_with("Peter Chang", 1).await;
    let visitor = world.visitor("Peter Chang").expect("visitor registered");
    assert_eq!(
        visitor.department.as_deref(),
        Some(world.department.as_str())
    );
    let rooms = world.rooms_of(&visitor);
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    assert_eq!(
        rooms[0].department_id.as_deref(),
        Some(world.department.as_str())
    );
    assert_eq!(rooms[0].served_by.as_deref(), Some(AGENT));
    let messages = world.customer_messages(&rid);
    assert_eq!(messages[0].msg, "Hello, is my order shipped?");
    assert!(
        messages[0].id.as_str().starts_with("fb"),
        "id derived from the mid: {:?}",
        messages[0].id
    );
    world
        .fb
        .sim
        .wait_for_sent(|m| m.recipient == "psid-1", PATIENCE)
        .await
        .expect("welcome sent");
    let welcome = world
        .fb
        .sim
        .sent_messages()
        .into_iter()
        .find(|m| m.recipient == "psid-1")
        .expect("welcome recorded");
    assert_eq!(welcome.text.as_deref(), Some(WELCOME));
    assert_eq!(welcome.messaging_type.as_deref(), Some("RESPONSE"));

    // The same conversation continues in the same room, without a second welcome.
    world
        .post_ok(&[text_event("psid-1", "m_second", t0 + 1, "Order 1234")])
        .await;
    let same = world.room_with("Peter Chang", 2).await;
    assert_eq!(same, rid);
    assert_eq!(world.sent_to("psid-1"), vec![WELCOME.to_owned()]);

    // A customer without a readable profile gets a placeholder name, and a room of their own.
    world
        .post_ok(&[text_event("24681357902468135", "m_other", t0 + 2, "hi")])
        .await;
    let other = world.room_with("Facebook user", 1).await;
    assert_ne!(other, rid);
    let placeholder = world.visitor("Facebook user").expect("placeholder visitor");
    assert_eq!(placeholder.name.as_deref(), Some("Facebook user …8135"));
    world.stop().await;
}

/// A reply to an earlier message starts with a link to that message in the room (Rocket.Chat
/// shows its own message links as quotes): the link names the quoted message's id, derived from
/// its `mid`.
#[tokio::test]
async fn a_reply_links_to_the_message_it_answers() {
    let world = World::start(true).await;
    let t0 = now_ms();
    world
        .post_ok(&[text_event(
            "psid-1",
            "m_question",
            t0,
            "Do you ship to Norway?",
        )])
        .await;
    let mut reply = text_event("psid-1", "m_reply", t0 + 1, "(to Oslo)");
    reply["message"]["reply_to"] = serde_json::json!({"mid": "m_question", "is_self_reply": true});
    world.post_ok(&[reply]).await;
    let rid = world.room_with("Peter Chang", 2).await;
    let messages = world.customer_messages(&rid);
    let quoted = &messages[0];
    let answer = &messages[1].msg;
    let link = format!("/live/{}?msg={}", rid.as_str(), quoted.id.as_str());
    assert!(
        answer.starts_with("↩️ [replying to an earlier message](") && answer.contains(&link),
        "{answer:?} should link to {link}"
    );
    assert!(answer.ends_with("\n(to Oslo)"), "{answer:?}");
    world.stop().await;
}

/// The customer edits message `mid` in Messenger (`message_edits` webhook field).
fn edit_event(mid: &str, timestamp_ms: u64, text: &str, num_edit: u32) -> serde_json::Value {
    json!({
        "sender": {"id": "psid-1"},
        "recipient": {"id": omni_testkit::messenger::PAGE_ID},
        "timestamp": timestamp_ms,
        "message_edit": {"mid": mid, "text": text, "num_edit": num_edit}
    })
}

#[tokio::test]
async fn a_customer_edit_changes_the_message_or_follows_it_when_editing_is_off() {
    let world = World::start(true).await;
    let t0 = now_ms();
    world
        .post_ok(&[text_event("psid-1", "m_typo", t0, "I ordred two")])
        .await;
    let rid = world.room_with("Peter Chang", 1).await;
    world
        .post_ok(&[edit_event("m_typo", t0 + 1, "I ordered two", 1)])
        .await;
    world
        .chat
        .sim
        .wait_for_message(&rid, |m| m.msg == "I ordered two", PATIENCE)
        .await
        .expect("the message edited in place");
    assert_eq!(world.customer_texts(&rid), vec!["I ordered two"]);

    // Editing turned off in Rocket.Chat: the server refuses, the edit follows as a new line.
    world
        .chat
        .sim
        .set_setting("Message_AllowEditing", json!(false));
    world
        .post_ok(&[edit_event("m_typo", t0 + 2, "I ordered three", 2)])
        .await;
    world.room_with("Peter Chang", 2).await;
    assert_eq!(
        world.customer_texts(&rid),
        vec!["I ordered two", "I ordered three _(edited)_"]
    );
    world.stop().await;
}

/// The customer reacts to message `mid` (`message_reactions` webhook field); `emoji` `None`
/// leaves it out, as an `unreact` may.
fn reaction_event(
    mid: &str,
    timestamp_ms: u64,
    action: &str,
    emoji: Option<&str>,
) -> serde_json::Value {
    let mut reaction = json!({"reaction": "other", "action": action, "mid": mid});
    if let Some(emoji) = emoji {
        reaction["emoji"] = json!(emoji);
    }
    json!({
        "sender": {"id": "psid-1"},
        "recipient": {"id": omni_testkit::messenger::PAGE_ID},
        "timestamp": timestamp_ms,
        "reaction": reaction
    })
}

#[tokio::test]
async fn customer_reactions_show_on_the_message_and_go_when_taken_back() {
    let world = World::start(true).await;
    // Reacting in an Omnichannel room takes access to it: `view-livechat-rooms`.
    world
        .chat
        .sim
        .grant_permission("bot", "view-livechat-rooms");
    let t0 = now_ms();
    world
        .post_ok(&[text_event("psid-1", "m_parcel", t0, "The parcel arrived")])
        .await;
    let rid = world.room_with("Peter Chang", 1).await;
    let message = world.customer_messages(&rid).remove(0);
    let reactions = |world: &World| {
        world
            .chat
            .sim
            .messages(&rid)
            .into_iter()
            .find(|m| m.id == message.id)
            .map(|m| m.reactions)
            .unwrap_or_default()
    };

    world
        .post_ok(&[reaction_event("m_parcel", t0 + 1, "react", Some("❤️"))])
        .await;
    eventually("a heart on the message", || {
        reactions(&world).contains_key(":heart:")
    })
    .await;
    // Messenger keeps one reaction per person: a new one replaces it.
    world
        .post_ok(&[reaction_event("m_parcel", t0 + 2, "react", Some("👍"))])
        .await;
    eventually("a thumbs up instead", || {
        let now = reactions(&world);
        now.contains_key(":thumbsup:") && !now.contains_key(":heart:")
    })
    .await;
    // An unreact without the emoji removes the one that is there.
    world
        .post_ok(&[reaction_event("m_parcel", t0 + 3, "unreact", None)])
        .await;
    eventually("no reaction left", || reactions(&world).is_empty()).await;
    assert_eq!(
        world.customer_texts(&rid),
        vec!["The parcel arrived"],
        "no line per reaction"
    );
    world.stop().await;
}

#[tokio::test]
async fn without_room_access_a_reaction_is_a_line_quoting_the_message() {
    let world = World::start(true).await;
    let t0 = now_ms();
    world
        .post_ok(&[text_event("psid-1", "m_parcel", t0, "The parcel arrived")])
        .await;
    world.room_with("Peter Chang", 1).await;
    world
        .post_ok(&[reaction_event("m_parcel", t0 + 1, "react", Some("😆"))])
        .await;
    let rid = world.room_with("Peter Chang", 2).await;
    let line = world.customer_texts(&rid).remove(1);
    let quoted = world.customer_messages(&rid).remove(0).id;
    assert!(
        line.ends_with("\nreacted 😆") && line.contains(&format!("msg={quoted}")),
        "{line:?}"
    );
    world.stop().await;
}

#[tokio::test]
async fn a_read_receipt_shows_in_the_room_info_without_a_chat_line() {
    let world = World::start(true).await;
    let t0 = now_ms();
    world
        .post_ok(&[text_event("psid-1", "m_hello", t0, "Hello")])
        .await;
    let rid = world.room_with("Peter Chang", 1).await;
    let read = |watermark: u64| {
        json!({"sender": {"id": "psid-1"}, "recipient": {"id": omni_testkit::messenger::PAGE_ID},
               "timestamp": watermark + 5, "read": {"watermark": watermark}})
    };
    // No custom field yet: the receipt is dropped, the conversation goes on.
    world.post_ok(&[read(t0 + 1)]).await;
    world
        .post_ok(&[text_event("psid-1", "m_more", t0 + 10, "More")])
        .await;
    world.room_with("Peter Chang", 2).await;
    assert_eq!(
        world
            .chat
            .sim
            .room_custom_field(&rid, omni_gateway::relay::inbound::READ_FIELD),
        None
    );

    // An admin creates the room field: the next receipt fills it.
    world
        .chat
        .sim
        .add_custom_field(omni_gateway::relay::inbound::READ_FIELD, true);
    let watermark = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    world.post_ok(&[read(watermark)]).await;
    eventually("the room shows when the customer read", || {
        world
            .chat
            .sim
            .room_custom_field(&rid, omni_gateway::relay::inbound::READ_FIELD)
            .is_some_and(|v| v.starts_with("2026-01-01T00:00:00"))
    })
    .await;
    assert_eq!(
        world.customer_texts(&rid),
        vec!["Hello", "More"],
        "no chat line per receipt"
    );
    world.stop().await;
}

#[tokio::test]
async fn a_redelivered_webhook_makes_no_second_message() {
    let world = World::start(true).await;
    let t0 = now_ms();
    let first = [text_event("psid-1", "m_once", t0, "only once")];
    world.post_ok(&first).await;
    world.post_ok(&first).await;
    world.room_with("Peter Chang", 1).await;
    // Meta's redelivery after we already delivered: still nothing new.
    world.post_ok(&first).await;
    world
        .post_ok(&[text_event("psid-1", "m_next", t0 + 5, "next")])
        .await;
    let rid = world.room_with("Peter Chang", 2).await;
    assert_eq!(world.customer_texts(&rid), vec!["only once", "next"]);
    world.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_messages_arrive_once_each_in_timestamp_order() {
    let world = World::start(true).await;
    let t0 = now_ms();
    let mut order: Vec<usize> = (0..50).collect();
    order.shuffle(&mut rand::rng());
    let addr = world.running.gateway.http_addr;
    let posts = order.iter().map(|&i| {
        let sim = world.fb.sim.clone();
        let body = body(&[text_event(
            "psid-1",
            &format!("m_burst_{i}"),
            t0 + i as u64 * 7,
            &format!("message {i}"),
        )]);
        tokio::spawn(async move {
            sim.deliver_webhook(&format!("http://{addr}/webhooks/messenger"), &body)
                .await
                .map(|r| r.status().as_u16())
        })
    });
    for answer in futures_util::future::join_all(posts).await {
        assert_eq!(answer.expect("task").expect("answer"), 200);
    }
    let rid = world.room_with("Peter Chang", 50).await;
    // Give a stray duplicate the chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let want: Vec<String> = (0..50).map(|i| format!("message {i}")).collect();
    assert_eq!(world.customer_texts(&rid), want);
    assert_eq!(world.sent_to("psid-1"), vec![WELCOME.to_owned()]);
    world.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_and_unknown_pages_acknowledged() {
    let world = World::start(true).await;
    let addr = world.running.gateway.http_addr;
    let url = format!("http://{addr}/webhooks/messenger");
    let http = reqwest::Client::new();
    let good = body(&[text_event("psid-1", "m_bad_sig", now_ms(), "forged")]);
    let cases: Vec<(&str, Vec<u8>, Option<String>, u16)> = vec![
        ("no signature", good.clone(), None, 401),
        (
            "wrong signature",
            good.clone(),
            Some(format!("sha256={}", "0".repeat(64))),
            401,
        ),
        (
            "malformed signature",
            good.clone(),
            Some("sha1=abc".into()),
            401,
        ),
        (
            "signature of other bytes",
            good.clone(),
            Some(world.fb.sim.sign(b"{}")),
            401,
        ),
        (
            "bad json",
            b"{not json".to_vec(),
            Some(world.fb.sim.sign(b"{not json")),
            400,
        ),
        (
            "over 1 MiB",
            vec![b' '; 1024 * 1024 + 1],
            Some(world.fb.sim.sign(&vec![b' '; 1024 * 1024 + 1])),
            413,
        ),
        (
            "unknown page",
            body_for("999", &[text_event("psid-9", "m_unknown", now_ms(), "hi")]),
            None,
            200,
        ),
    ];
    for (what, bytes, signature, want) in cases {
        let signature = signature.or_else(|| (want == 200).then(|| world.fb.sim.sign(&bytes)));
        let status = webhook::post(&http, addr, bytes, signature.as_deref()).await;
        assert_eq!(status, want, "{what}");
    }
    assert_eq!(
        world.running.gateway.store.inbox().len(),
        0,
        "nothing stored"
    );

    // Verification: the challenge verbatim, or 403.
    let verify = |token: &str, mode: &str| {
        format!("{url}?hub.mode={mode}&hub.verify_token={token}&hub.challenge=1158201444%20x")
    };
    let cases = [
        (
            verify(omni_testkit::VERIFY_TOKEN, "subscribe"),
            200,
            Some("1158201444 x"),
        ),
        (verify("wrong", "subscribe"), 403, None),
        (verify(omni_testkit::VERIFY_TOKEN, "unsubscribe"), 403, None),
    ];
    for (target, want, text) in cases {
        let answer = http.get(&target).send().await.expect("gateway answers");
        assert_eq!(answer.status().as_u16(), want, "{target}");
        if let Some(text) = text {
            assert_eq!(answer.text().await.expect("body"), text);
        }
    }

    // Nothing reached Rocket.Chat from any of these.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        world.chat.sim.visitors().is_empty(),
        "{:?}",
        world.chat.sim.visitors()
    );
    world.stop().await;
}

#[tokio::test]
async fn no_agent_online_holds_then_delivers_in_order() {
    let world = World::start(false).await;
    let t0 = now_ms();
    for i in 0..3u64 {
        world
            .post_ok(&[text_event(
                "psid-1",
                &format!("m_held_{i}"),
                t0 + i,
                &format!("held {i}"),
            )])
            .await;
    }
    world
        .fb
        .sim
        .wait_for_sent(|m| m.text.as_deref() == Some(OFFLINE), PATIENCE)
        .await
        .expect("offline message sent");
    world
        .chat
        .bot_says(&world.chat.alice_dm, |m| m.contains("No agent is online"))
        .await;
    eventually("the conversation is held", || {
        world
            .running
            .gateway
            .store
            .conversations()
            .unwrap()
            .iter()
            .any(|c| c.held_since_ms.is_some())
    })
    .await;

    // Held conversations show in `status` and `pages`.
    world
        .chat
        .sim
        .post("alice", &world.chat.alice_dm, "/facebook status");
    world
        .chat
        .bot_says(&world.chat.alice_dm, |m| {
            m.contains("held conversations: 1")
                && m.contains("last webhook: ")
                && !m.contains("last webhook: never")
        })
        .await;
    world
        .chat
        .sim
        .post("alice", &world.chat.alice_dm, "/facebook pages");
    world
        .chat
        .bot_says(&world.chat.alice_dm, |m| {
            m.contains(PAGE_ID) && m.contains("held: 1")
        })
        .await;

    // More messages while held: no second offline message, no second notice.
    world
        .post_ok(&[text_event("psid-1", "m_held_3", t0 + 3, "held 3")])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(world.chat.sim.livechat_rooms().is_empty());

    world.chat.sim.set_agent_online(AGENT, true);
    let rid = world.room_with("Peter Chang", 4).await;
    assert_eq!(
        world.customer_texts(&rid),
        vec!["held 0", "held 1", "held 2", "held 3"]
    );
    assert_eq!(
        world.sent_to("psid-1"),
        vec![OFFLINE.to_owned(), WELCOME.to_owned()]
    );
    let notices = world
        .chat
        .bot_messages(&world.chat.alice_dm)
        .into_iter()
        .filter(|m| m.contains("No agent is online"))
        .count();
    assert_eq!(notices, 1, "one admin notice per hold");
    eventually("the hold is over", || {
        world
            .running
            .gateway
            .store
            .conversations()
            .unwrap()
            .iter()
            .all(|c| c.held_since_ms.is_none())
    })
    .await;
    world.stop().await;
}

#[tokio::test]
async fn a_ten_second_rocketchat_outage_loses_nothing() {
    let world = World::start(true).await;
    let t0 = now_ms();
    world
        .post_ok(&[text_event("psid-1", "m_before", t0, "before")])
        .await;
    let rid = world.room_with("Peter Chang", 1).await;

    world.chat.sim.refuse_connections(true);
    let started = tokio::time::Instant::now();
    for i in 0..5u64 {
        world
            .post_ok(&[text_event(
                "psid-1",
                &format!("m_outage_{i}"),
                t0 + 1 + i,
                &format!("during {i}"),
            )])
            .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    tokio::time::sleep_until(started + Duration::from_secs(10)).await;
    assert_eq!(world.customer_texts(&rid), vec!["before"]);
    world.chat.sim.refuse_connections(false);
    let recovered = tokio::time::Instant::now();

    let rid = world.room_with("Peter Chang", 6).await;
    let mut want = vec!["before".to_owned()];
    want.extend((0..5).map(|i| format!("during {i}")));
    assert_eq!(world.customer_texts(&rid), want);
    // The retry backoff has grown to 8–16 s by the end of a 10 s outage; whichever comes
    // first, the worker's next retry or the realtime link logging in again, resumes delivery.
    assert!(
        recovered.elapsed() < Duration::from_secs(17),
        "delivery resumed {:?} after the outage",
        recovered.elapsed()
    );
    world.stop().await;
}

#[tokio::test]
async fn attachments_arrive_as_uploads_or_as_links_with_the_reason() {
    let world = World::start(true).await;
    let t0 = now_ms();
    let png = b"\x89PNG\r\n\x1a\nfake image bytes".to_vec();
    let image = world.fb.cdn.put("photo.png", "image/png", png.clone());
    let pdf = world
        .fb
        .cdn
        .put("invoice.pdf", "application/pdf", b"%PDF-1.4 fake".to_vec());
    let svg = world
        .fb
        .cdn
        .put("logo.svg", "image/svg+xml", b"<svg/>".to_vec());
    let gone = world.fb.cdn.url("expired.jpg");
    world
        .post_ok(&[
            attachment_event("psid-1", "m_img", t0, "image", &image),
            attachment_event("psid-1", "m_pdf", t0 + 1, "file", &pdf),
            attachment_event("psid-1", "m_svg", t0 + 2, "image", &svg),
            attachment_event("psid-1", "m_gone", t0 + 3, "image", &gone),
        ])
        .await;
    let rid = world.room_with("Peter Chang", 4).await;
    let messages = world.customer_messages(&rid);
    let file = messages[0].file.as_ref().expect("image uploaded");
    assert_eq!(
        (file.name.as_str(), file.mime.as_str()),
        ("photo.png", "image/png")
    );
    assert_eq!(file.bytes, png);
    let file = messages[1].file.as_ref().expect("pdf uploaded");
    assert_eq!(file.mime, "application/pdf");
    // The simulator's default blacklist refuses SVG: a link with the reason instead.
    assert!(messages[2].file.is_none());
    assert!(messages[2].msg.contains(&svg), "{}", messages[2].msg);
    assert!(
        messages[2].msg.contains("error-type-not-allowed"),
        "{}",
        messages[2].msg
    );
    // An expired URL: a link with the reason.
    assert!(messages[3].file.is_none());
    assert!(messages[3].msg.contains("HTTP 404"), "{}", messages[3].msg);
    assert_eq!(messages.len(), 4, "{messages:#?}");

    // Too large for the server: a link with the reason.
    world
        .chat
        .sim
        .set_setting("FileUpload_MaxFileSize", json!(8));
    let big = world.fb.cdn.put("big.png", "image/png", vec![7u8; 64]);
    world
        .post_ok(&[attachment_event("psid-1", "m_big", t0 + 4, "image", &big)])
        .await;
    let rid = world.room_with("Peter Chang", 5).await;
    let last = world.customer_messages(&rid).pop().expect("a message");
    assert!(last.file.is_none());
    assert!(last.msg.contains("error-size-not-allowed"), "{}", last.msg);
    world.stop().await;
}

#[tokio::test]
async fn a_room_closed_by_the_agent_is_followed_by_a_new_room_and_welcome() {
    let world = World::start(true).await;
    let t0 = now_ms();
    world
        .post_ok(&[text_event("psid-1", "m_a", t0, "first visit")])
        .await;
    let first = world.room_with("Peter Chang", 1).await;
    world.chat.sim.close_room(&first, AGENT);
    world
        .post_ok(&[text_event("psid-1", "m_b", t0 + 1, "back again")])
        .await;
    let second = world.room_with("Peter Chang", 1).await;
    assert_ne!(first, second);
    assert_eq!(world.customer_texts(&second), vec!["back again"]);
    assert_eq!(world.customer_texts(&first), vec!["first visit"]);
    eventually("a second welcome", || world.sent_to("psid-1").len() == 2).await;
    assert_eq!(
        world.sent_to("psid-1"),
        vec![WELCOME.to_owned(), WELCOME.to_owned()]
    );
    world.stop().await;
}

/// The value of one sample line of the Prometheus text, e.g. `omni_gateway_inbox_depth`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let world = World::start(true).await;
    let t0 = now_ms();
    let first = [text_event("psid-1", "m_metric_0", t0, "one")];
    world.post_ok(&first).await;
    world.post_ok(&first).await;
    world.room_with("Peter Chang", 1).await;
    // Two 502s from a proxy in front of Rocket.Chat, then the message goes through.
    world.chat.sim.fail_next_rest(2, 502);
    world
        .post_ok(&[
            text_event("psid-1", "m_metric_1", t0 + 1, "two"),
            json!({"sender": {"id": "psid-1"}, "recipient": {"id": PAGE_ID}, "timestamp": t0 + 2,
                   "delivery": {"watermark": t0}}),
        ])
        .await;
    assert_eq!(
        post_webhook(
            &world.fb,
            world.running.gateway.http_addr,
            &body_for("999", &[text_event("psid-9", "m_x", t0, "elsewhere")]),
        )
        .await,
        StatusCode::OK
    );
    world.room_with("Peter Chang", 2).await;

    let url = format!("http://{}/metrics", world.running.gateway.http_addr);
    let mut text;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        text = reqwest::get(&url)
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics body");
        if sample(&text, "omni_gateway_inbound_delivered_total") == Some(2.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expected = [
        ("omni_gateway_webhook_events_total{outcome=\"stored\"}", 2.0),
        (
            "omni_gateway_webhook_events_total{outcome=\"duplicate\"}",
            1.0,
        ),
        (
            "omni_gateway_webhook_events_total{outcome=\"ignored\"}",
            1.0,
        ),
        (
            "omni_gateway_webhook_events_total{outcome=\"unknown_page\"}",
            1.0,
        ),
        ("omni_gateway_inbound_delivered_total", 2.0),
        ("omni_gateway_inbound_delivery_latency_seconds_count", 2.0),
        ("omni_gateway_rocketchat_errors_total{kind=\"server\"}", 2.0),
        ("omni_gateway_inbox_depth", 0.0),
        ("omni_gateway_held_conversations", 0.0),
        ("omni_gateway_inbound_held_total", 0.0),
        ("omni_gateway_webhook_request_seconds_count", 4.0),
        (
            &format!("omni_gateway_page_status{{page=\"{PAGE_ID}\",state=\"connected\"}}"),
            1.0,
        ),
    ];
    for (series, want) in expected {
        assert_eq!(sample(&text, series), Some(want), "{series} in:\n{text}");
    }
    world.stop().await;
}

/// An event that already landed in a room the agent has since closed comes back (a crash before
/// its removal was flushed repeats it). 7.x/8.x refuse a message `_id` used in another room and
/// look a visitor's message up only in the room asked for; 6.x looks it up by `_id` alone. The id
/// is derived per room, so in every version the retry lands in the new room instead of wedging
/// the conversation.
#[tokio::test]
async fn an_event_repeated_after_its_room_closed_does_not_wedge_the_conversation() {
    for version in [ServerVersion::V6, ServerVersion::V7, ServerVersion::V8] {
        let world = World::start_on(version, true, |_| {}).await;
        let t0 = now_ms();
        world
            .post_ok(&[text_event("psid-1", "m_a", t0, "first visit")])
            .await;
        let first = world.room_with("Peter Chang", 1).await;
        // No `mid`, so the store's duplicate marks do not catch the repeat: the way an event
        // comes back after a crash before its removal was flushed.
        let repeated = InboundEvent {
            key: ConversationKey::new(PageId::new(PAGE_ID), Psid::new("psid-1")),
            timestamp_ms: t0 + 1,
            dedupe_key: None,
            received_ms: t0 + 1,
            standby: false,
            payload: Payload::from_value(&text_event("psid-1", "m_x", t0 + 1, "landed once")),
        };
        let store = &world.running.gateway.store;
        store
            .enqueue_inbound(vec![repeated.clone()])
            .await
            .expect("queued");
        store.sync().await.expect("flushed");
        world
            .post_ok(&[text_event("psid-1", "m_b", t0 + 2, "wakes the worker")])
            .await;
        world.room_with("Peter Chang", 3).await;
        assert_eq!(
            world.customer_texts(&first),
            ["first visit", "landed once", "wakes the worker"],
            "{version:?}"
        );
        world.chat.sim.close_room(&first, AGENT);
        store
            .enqueue_inbound(vec![repeated])
            .await
            .expect("queued again");
        store.sync().await.expect("flushed");
        world
            .post_ok(&[text_event("psid-1", "m_c", t0 + 3, "after the close")])
            .await;
        let second = world.room_with("Peter Chang", 2).await;
        assert_ne!(first, second, "{version:?}");
        assert_eq!(
            world.customer_texts(&second),
            ["landed once", "after the close"],
            "{version:?}: the repeat lands in the new room and the conversation goes on"
        );
        world.stop().await;
    }
}

/// Meta's retries after an outage arrive at once and newest first. On a new conversation the
/// worker woken by the first one opens the room meanwhile; it picks the message to post only
/// once the room is ready, so the older ones that arrived during that go first.
#[tokio::test]
async fn concurrent_deliveries_of_a_new_conversation_sent_newest_first_land_in_order() {
    let world = World::start(true).await;
    let addr = world.running.gateway.http_addr;
    // Opening a room takes a few slow round trips: the older deliveries land meanwhile.
    world.chat.sim.set_rest_latency(Duration::from_millis(150));
    for attempt in 0..6 {
        let psid = format!("psid-order-{attempt}");
        let t0 = now_ms();
        let newest_first: Vec<_> = (0..4u64)
            .rev()
            .map(|n| {
                let event = text_event(
                    &psid,
                    &format!("m-{attempt}-{n}"),
                    t0 + n,
                    &format!("{attempt}: message {n}"),
                );
                let fb = &world.fb;
                // Newest first: each later (older) delivery starts a little after the previous.
                let delay = Duration::from_millis(40 * (3 - n));
                async move {
                    tokio::time::sleep(delay).await;
                    post_webhook(fb, addr, &body(&[event])).await
                }
            })
            .collect();
        for status in futures_util::future::join_all(newest_first).await {
            assert_eq!(status, StatusCode::OK);
        }
        let expected: Vec<String> = (0..4).map(|n| format!("{attempt}: message {n}")).collect();
        let mut texts = Vec::new();
        eventually("four messages in the new room", || {
            texts = world
                .chat
                .sim
                .livechat_rooms()
                .into_iter()
                .flat_map(|r| world.customer_texts(&r.id))
                .filter(|t| t.starts_with(&format!("{attempt}:")))
                .collect();
            texts.len() == 4
        })
        .await;
        assert_eq!(texts, expected, "attempt {attempt}: in timestamp order");
    }
    world.stop().await;
}

/// With Livechat's character limit on, a long text is refused for good
/// (`message-length-exceeds-character-limit`): it is split under `limitTextLength` from
/// `livechat/config`, in order, and the conversation goes on.
#[tokio::test]
async fn a_text_over_the_character_limit_arrives_split_in_order() {
    let world = World::start(true).await;
    world
        .chat
        .sim
        .set_setting("Livechat_enable_message_character_limit", json!(true));
    world
        .chat
        .sim
        .set_setting("Livechat_message_character_limit", json!(40));
    let long = "Hello there. I ordered a blue kettle last week and it arrived broken. \
                Can you send a new one or refund me? Thanks a lot for your help.";
    let t0 = now_ms();
    world
        .post_ok(&[
            text_event("psid-1", "m_long", t0, long),
            text_event("psid-1", "m_next", t0 + 1, "and one more thing"),
        ])
        .await;
    let rid = world.room_with("Peter Chang", 2).await;
    eventually("the last message after the pieces", || {
        world.customer_texts(&rid).last().map(String::as_str) == Some("and one more thing")
    })
    .await;
    let texts = world.customer_texts(&rid);
    let pieces = &texts[..texts.len() - 1];
    assert!(pieces.len() >= 4, "{texts:?}");
    assert!(pieces.iter().all(|p| p.chars().count() <= 40), "{texts:?}");
    let normalised = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        normalised(&pieces.join(" ")),
        normalised(long),
        "in order, nothing lost"
    );
    world.stop().await;
}

/// How many of the bot's DMs to alice contain `part`.
fn notices_with(world: &World, part: &str) -> usize {
    world
        .chat
        .bot_messages(&world.chat.alice_dm)
        .into_iter()
        .filter(|m| m.contains(part))
        .count()
}

/// Every text the customer's messages show, over all of the visitor's rooms, oldest first.
fn texts_in_every_room(world: &World, visitor: &SimVisitor) -> Vec<String> {
    let mut messages: Vec<SimMessage> = world
        .rooms_of(visitor)
        .iter()
        .flat_map(|r| world.customer_messages(&r.id))
        .collect();
    messages.sort_by_key(|m| m.ts_ms);
    messages.into_iter().map(|m| m.msg).collect()
}

#[tokio::test]
async fn a_blocked_contacts_messages_are_set_aside_then_retried_once_after_unblocking() {
    let world = World::start(true).await;
    let t0 = now_ms();
    world
        .post_ok(&[text_event("psid-1", "m_before", t0, "before the block")])
        .await;
    world.room_with("Peter Chang", 1).await;
    let visitor = world.visitor("Peter Chang").expect("visitor");
    // A manager blocks the contact: its room closes, and Rocket.Chat takes nothing more of it.
    world.chat.sim.block_contact(&visitor.token, AGENT, true);
    world
        .post_ok(&[text_event("psid-1", "m_blocked_1", t0 + 1, "blocked one")])
        .await;
    world
        .chat
        .bot_says(&world.chat.alice_dm, |m| {
            m.contains("set aside")
                && m.contains("contact is blocked")
                && m.contains(&format!("retry {PAGE_ID}"))
        })
        .await;
    // The next message is not stuck behind the first: it is tried, refused and set aside too,
    // without a second notice.
    world
        .post_ok(&[text_event("psid-1", "m_blocked_2", t0 + 2, "blocked two")])
        .await;
    let store = &world.running.gateway.store;
    eventually("both refused messages set aside", || {
        store.set_aside_events().unwrap().len() == 2 && store.inbox().is_empty()
    })
    .await;
    assert_eq!(notices_with(&world, "set aside"), 1, "admins told once");

    world
        .chat
        .sim
        .post("alice", &world.chat.alice_dm, "/facebook status");
    world
        .chat
        .bot_says(&world.chat.alice_dm, |m| {
            m.contains(&format!("page {PAGE_ID}: 2 × the contact is blocked"))
                && m.contains("oldest written")
        })
        .await;

    // Unblocked: the conversation's next message goes through at once, in a new room.
    world.chat.sim.block_contact(&visitor.token, AGENT, false);
    world
        .post_ok(&[text_event("psid-1", "m_after", t0 + 3, "after the unblock")])
        .await;
    eventually("the new message in a new room", || {
        texts_in_every_room(&world, &visitor).contains(&"after the unblock".to_owned())
    })
    .await;
    assert_eq!(store.set_aside_events().unwrap().len(), 2);

    world.chat.sim.post(
        "alice",
        &world.chat.alice_dm,
        &format!("/facebook retry {PAGE_ID}"),
    );
    world
        .chat
        .bot_says(&world.chat.alice_dm, |m| {
            m.contains("2 set-aside message(s)")
        })
        .await;
    eventually("the set-aside messages delivered", || {
        texts_in_every_room(&world, &visitor).len() == 4
    })
    .await;
    let rid = world.room_with("Peter Chang", 3).await;
    assert_eq!(
        world.customer_texts(&rid),
        vec!["after the unblock", "blocked one", "blocked two"],
        "after what was delivered meanwhile, in their own order"
    );
    assert!(store.set_aside_events().unwrap().is_empty());
    // Exactly once, even when asked again.
    world
        .chat
        .sim
        .post("alice", &world.chat.alice_dm, "/facebook retry all");
    world
        .chat
        .bot_says(&world.chat.alice_dm, |m| {
            m.contains("Nothing is set aside for any page")
        })
        .await;
    assert_eq!(
        texts_in_every_room(&world, &visitor),
        vec![
            "before the block",
            "after the unblock",
            "blocked one",
            "blocked two"
        ]
    );
    world.stop().await;
}

#[tokio::test]
async fn a_text_over_the_maximum_message_size_is_set_aside_and_the_next_goes_on() {
    let world = World::start(true).await;
    world
        .chat
        .sim
        .set_setting("Message_MaxAllowedSize", json!(1000));
    let t0 = now_ms();
    let long = "A message longer than Rocket.Chat allows. ".repeat(30);
    world
        .post_ok(&[
            text_event("psid-1", "m_long", t0, &long),
            text_event("psid-1", "m_short", t0 + 1, "short one"),
        ])
        .await;
    let rid = world.room_with("Peter Chang", 1).await;
    assert_eq!(world.customer_texts(&rid), vec!["short one"]);
    world
        .chat
        .bot_says(&world.chat.alice_dm, |m| {
            m.contains("maximum message size") && m.contains("Message_MaxAllowedSize")
        })
        .await;
    let store = &world.running.gateway.store;
    assert_eq!(store.set_aside_events().unwrap().len(), 1);

    world
        .chat
        .sim
        .set_setting("Message_MaxAllowedSize", json!(5000));
    world
        .chat
        .sim
        .post("alice", &world.chat.alice_dm, "/facebook retry all");
    eventually("the long message delivered after the fix", || {
        let texts = world.customer_texts(&rid);
        texts.len() == 2 && texts[0] == "short one" && texts[1].trim() == long.trim()
    })
    .await;
    assert!(store.set_aside_events().unwrap().is_empty());
    world.stop().await;
}

#[tokio::test]
async fn omnichannel_switched_off_holds_in_order_and_tells_admins_once() {
    let world = World::start(true).await;
    world.chat.sim.set_setting("Livechat_enabled", json!(false));
    let t0 = now_ms();
    world
        .post_ok(&[text_event("psid-1", "m_off_1", t0, "while off 1")])
        .await;
    world
        .chat
        .bot_says(&world.chat.alice_dm, |m| {
            m.contains("Omnichannel is switched off") && m.contains("Livechat_enabled")
        })
        .await;
    world
        .post_ok(&[text_event("psid-1", "m_off_2", t0 + 1, "while off 2")])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(world.chat.sim.livechat_rooms().is_empty());
    let store = &world.running.gateway.store;
    assert!(
        store.set_aside_events().unwrap().is_empty(),
        "held, not set aside"
    );

    world.chat.sim.set_setting("Livechat_enabled", json!(true));
    let rid = world.room_with("Peter Chang", 2).await;
    assert_eq!(
        world.customer_texts(&rid),
        vec!["while off 1", "while off 2"]
    );
    assert_eq!(notices_with(&world, "Omnichannel is switched off"), 1);
    world.stop().await;
}
