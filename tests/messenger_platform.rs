//! The Messenger Platform beyond plain messages, end to end between the two simulators: threads
//! another app controls (standby, 10/2018300, take and request thread control), errors that
//! never heal, and content Meta sends in more than one shape (stickers, links, reels, posts).

use omni_sim::graph::{PAGE_INBOX_APP_ID, SimError};
use omni_sim::ids::RoomId;
use omni_testkit::messenger::{
    Facebook, PAGE_ID, PageSetup, body, connect_page, now_ms, post_webhook, start_gateway,
    text_event,
};
use omni_testkit::{APP_ID, BOT, Chat, PATIENCE, Running, eventually, until_ready};
use serde_json::{Value, json};

const AGENT: &str = "agent.smith";
const PSID: &str = "psid-1";

struct World {
    chat: Chat,
    fb: Facebook,
    running: Running,
}

impl World {
    async fn start() -> World {
        let chat = Chat::start().await;
        chat.sim
            .add_user(AGENT, "agent-pw", &["user", "livechat-agent"]);
        chat.sim.set_agent_online(AGENT, true);
        let fb = Facebook::start().await;
        fb.sim.add_psid(PAGE_ID, PSID, "Peter", "Chang");
        let running = start_gateway(&chat, &fb).await;
        until_ready(&running.gateway).await;
        connect_page(&running.gateway, &fb, PageSetup::default()).await;
        World { chat, fb, running }
    }

    async fn deliver(&self, body: &[u8]) {
        let status = post_webhook(&self.fb, self.running.gateway.http_addr, body).await;
        assert_eq!(status.as_u16(), 200, "webhook acknowledged");
    }

    /// The customer writes; Meta files it under `standby[]` when another app owns the thread.
    async fn customer_writes(&self, mid: &str, text: &str) {
        let body = self
            .fb
            .sim
            .customer_message_body(PAGE_ID, PSID, mid, text, now_ms());
        self.deliver(body.to_string().as_bytes()).await;
    }

    /// What the visitor said in the conversation's rooms.
    fn visitor_messages(&self) -> Vec<omni_sim::rocketchat::SimMessage> {
        self.chat
            .sim
            .livechat_rooms()
            .into_iter()
            .flat_map(|room| self.chat.sim.messages(&room.id))
            .filter(|m| m.token.is_some())
            .collect()
    }

    async fn room_with(&self, needle: &str) -> RoomId {
        let mut found = None;
        eventually(&format!("{needle:?} reaches a room"), || {
            found = self
                .visitor_messages()
                .into_iter()
                .find(|m| m.msg.contains(needle))
                .map(|m| m.rid);
            found.is_some()
        })
        .await;
        found.expect("found")
    }

    async fn sent(&self, text: &str) {
        self.fb
            .sim
            .wait_for_sent(|m| m.text.as_deref() == Some(text), PATIENCE)
            .await
            .unwrap_or_else(|| panic!("{text:?} never reached the Send API"));
    }

    fn sent_count(&self, text: &str) -> usize {
        self.fb
            .sim
            .sent_messages()
            .iter()
            .filter(|m| m.text.as_deref() == Some(text))
            .count()
    }

    fn dm_to(&self, username: &str) -> Vec<String> {
        let dm = self.chat.sim.direct_room(BOT, username);
        self.chat.bot_messages(&dm)
    }

    fn message_calls(&self) -> usize {
        self.fb
            .sim
            .calls()
            .iter()
            .filter(|c| c.ends_with(&format!("/{PAGE_ID}/messages")))
            .count()
    }

    async fn stop(self) {
        self.running.stop().await;
    }
}

#[tokio::test]
async fn standby_messages_are_marked_and_the_primary_receiver_takes_the_thread_to_answer() {
    let world = World::start().await;
    world
        .fb
        .sim
        .set_thread_owner(PAGE_ID, PSID, Some(PAGE_INBOX_APP_ID));
    world.customer_writes("m-sb", "anyone there?").await;
    let rid = world.room_with("anyone there?").await;
    let shown = world
        .visitor_messages()
        .into_iter()
        .find(|m| m.msg.contains("anyone there?"))
        .expect("relayed");
    assert!(
        shown.msg.contains("another app"),
        "marked as standby: {:?}",
        shown.msg
    );

    world.chat.sim.agent_reply(AGENT, &rid, "Yes, I am here.");
    world.sent("Yes, I am here.").await;
    assert_eq!(
        world.fb.sim.thread_owner(PAGE_ID, PSID).as_deref(),
        Some(APP_ID),
        "the gateway's app took the thread"
    );
    assert!(
        world
            .fb
            .sim
            .calls()
            .iter()
            .any(|c| c.ends_with("/take_thread_control"))
    );
    assert_eq!(world.sent_count("Yes, I am here."), 1);

    // Now the app owns the thread: the customer's next message is an ordinary one.
    world.customer_writes("m-next", "thanks").await;
    world.room_with("thanks").await;
    let next = world
        .visitor_messages()
        .into_iter()
        .find(|m| m.msg.contains("thanks"))
        .expect("relayed");
    assert_eq!(next.msg, "thanks");
    world.stop().await;
}

#[tokio::test]
async fn a_secondary_receiver_requests_the_thread_and_tells_the_agent_plainly() {
    let world = World::start().await;
    world
        .fb
        .sim
        .set_primary_receiver(PAGE_ID, PAGE_INBOX_APP_ID);
    world.customer_writes("m-1", "hello").await;
    let rid = world.room_with("hello").await;
    world
        .fb
        .sim
        .set_thread_owner(PAGE_ID, PSID, Some(PAGE_INBOX_APP_ID));

    world.chat.sim.agent_reply(AGENT, &rid, "Blocked answer");
    eventually("the agent is told why", || {
        world.dm_to(AGENT).iter().any(|m| {
            m.contains("Blocked answer")
                && m.contains("another app")
                && m.contains("primary receiver")
        })
    })
    .await;
    assert_eq!(world.sent_count("Blocked answer"), 0);
    let requests = world.fb.sim.thread_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].1, PSID);

    // The Page Inbox passes the thread back: the next reply goes through, not stuck behind.
    world.fb.sim.set_thread_owner(PAGE_ID, PSID, None);
    world.chat.sim.agent_reply(AGENT, &rid, "Now it works");
    world.sent("Now it works").await;
    world.stop().await;
}

#[tokio::test]
async fn an_error_that_never_heals_is_given_up_with_a_reason_and_later_replies_flow() {
    let world = World::start().await;
    world.customer_writes("m-1", "hi").await;
    let rid = world.room_with("hi").await;

    // Code 2 forever: what Meta answers when the person blocked the page.
    world.fb.sim.fail_next(
        "/messages",
        1000,
        SimError::Graph {
            code: 2,
            subcode: None,
            http_status: 500,
        },
    );
    world.chat.sim.agent_reply(AGENT, &rid, "Never arrives");
    eventually("the agent is told the reply was given up", || {
        world.dm_to(AGENT).iter().any(|m| {
            m.contains("Never arrives") && m.contains("blocked the page") && m.contains("tried 5")
        })
    })
    .await;
    world.fb.sim.clear_faults();
    world.chat.sim.agent_reply(AGENT, &rid, "Next one");
    world.sent("Next one").await;
    assert_eq!(world.sent_count("Never arrives"), 0);
    world.stop().await;
}

#[tokio::test]
async fn missing_permission_and_an_unavailable_person_are_final_at_once() {
    let world = World::start().await;
    world.customer_writes("m-1", "hi").await;
    let rid = world.room_with("hi").await;

    for (code, subcode, text, reason) in [
        (551, None, "To nobody", "isn't available"),
        (99, None, "Without permission", "lacks a permission"),
        (1, Some(99), "Still without", "lacks a permission"),
    ] {
        let before = world.message_calls();
        // The first call of a reply is `mark_seen`; the fault hits it and the text alike.
        world.fb.sim.fail_next(
            "/messages",
            2,
            SimError::Graph {
                code,
                subcode,
                http_status: 400,
            },
        );
        world.chat.sim.agent_reply(AGENT, &rid, text);
        eventually(&format!("the agent is told about code {code}"), || {
            world
                .dm_to(AGENT)
                .iter()
                .any(|m| m.contains(text) && m.contains(reason))
        })
        .await;
        assert_eq!(
            world.message_calls() - before,
            2,
            "code {code}: not retried"
        );
        world.fb.sim.clear_faults();
    }
    world.stop().await;
}

#[tokio::test]
async fn stickers_arrive_once_and_shared_links_reels_and_posts_read_as_links() {
    let world = World::start().await;
    let png = vec![0x89, b'P', b'N', b'G', 1, 2, 3];
    let sticker = world.fb.cdn.put("sticker.png", "image/png", png.clone());
    let t0 = now_ms();
    // Until 30 Aug 2026 Meta sends both attachments for one sticker (docs/messenger.md §2.6).
    let both: Value = json!({
        "sender": {"id": PSID}, "recipient": {"id": PAGE_ID}, "timestamp": t0,
        "message": {"mid": "m-sticker", "attachments": [
            {"type": "image", "payload": {"url": sticker, "sticker_id": 369239263222822i64}},
            {"type": "sticker", "payload": {"url": sticker, "sticker_id": 369239263222822i64}}
        ]}
    });
    let links: Value = json!({
        "sender": {"id": PSID}, "recipient": {"id": PAGE_ID}, "timestamp": t0 + 1,
        "message": {"mid": "m-links", "attachments": [
            {"type": "fallback", "url": "https://example.org/story", "title": "A story", "payload": null},
            {"type": "reel", "payload": {"url": "https://www.facebook.com/reel/1", "title": "Launch day"}},
            {"type": "post", "payload": {"url": "https://www.facebook.com/p/2", "title": "Our news"}}
        ]}
    });
    world
        .deliver(&body(&[
            text_event(PSID, "m-0", t0 - 1, "first"),
            both,
            links,
        ]))
        .await;
    world.room_with("Our news").await;
    let messages = world.visitor_messages();
    let files: Vec<_> = messages.iter().filter_map(|m| m.file.as_ref()).collect();
    assert_eq!(files.len(), 1, "one upload for the sticker: {messages:#?}");
    assert!(
        !messages.iter().any(|m| m.msg.contains("[sticker]")),
        "{messages:#?}"
    );
    let text = &messages
        .iter()
        .find(|m| m.msg.contains("Our news"))
        .expect("links")
        .msg;
    for needle in [
        "🔗 A story https://example.org/story",
        "🎬 Reel: Launch day https://www.facebook.com/reel/1",
        "📰 Post: Our news https://www.facebook.com/p/2",
    ] {
        assert!(text.contains(needle), "{needle:?} in {text:?}");
    }
    world.stop().await;
}

#[tokio::test]
async fn a_policy_block_reaches_the_page_admins_at_once_and_shows_in_status() {
    let world = World::start().await;
    let body = world.fb.sim.policy_enforcement_body(
        PAGE_ID,
        "block",
        "The bot violated our Platform Policies.",
        now_ms(),
    );
    world.deliver(body.to_string().as_bytes()).await;
    eventually("alice is told the page is blocked", || {
        world
            .dm_to("alice")
            .iter()
            .any(|m| m.contains("blocked") && m.contains("violated our Platform Policies"))
    })
    .await;
    world
        .chat
        .sim
        .post("alice", &world.chat.alice_dm, "/facebook status");
    world
        .chat
        .bot_says(&world.chat.alice_dm, |m| {
            m.contains("omni-gateway status") && m.contains("blocked by Meta")
        })
        .await;

    let lifted = world
        .fb
        .sim
        .policy_enforcement_body(PAGE_ID, "unblock", "", now_ms());
    world.deliver(lifted.to_string().as_bytes()).await;
    eventually("alice is told the block was lifted", || {
        world.dm_to("alice").iter().any(|m| m.contains("lifted"))
    })
    .await;
    world.stop().await;
}

#[tokio::test]
async fn page_inbox_replies_show_in_the_room_as_the_page_and_never_go_back_to_messenger() {
    let world = World::start().await;
    // The permission a real Rocket.Chat needs to let the bot post in a room it does not serve.
    world
        .chat
        .sim
        .grant_permission("bot", "view-livechat-rooms");
    world.customer_writes("m-1", "where is my parcel?").await;
    let rid = world.room_with("where is my parcel?").await;

    let echo = world.fb.sim.echo_body(
        PAGE_ID,
        PSID,
        "m-inbox-1",
        "It ships today.",
        PAGE_INBOX_APP_ID,
        None,
    );
    world.deliver(echo.to_string().as_bytes()).await;
    // Redelivered by Meta: still shown once.
    world.deliver(echo.to_string().as_bytes()).await;
    eventually("the page's reply is shown in the room", || {
        world
            .chat
            .sim
            .messages(&rid)
            .iter()
            .any(|m| m.username == BOT && m.msg.contains("> It ships today."))
    })
    .await;
    let shown: Vec<_> = world
        .chat
        .sim
        .messages(&rid)
        .into_iter()
        .filter(|m| m.msg.contains("It ships today."))
        .collect();
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert!(shown[0].msg.contains("Page Inbox"), "{}", shown[0].msg);
    assert!(shown[0].token.is_none(), "not posted as the visitor");

    // The outbox is in order: once the next reply is sent, the page's words would have been.
    world.chat.sim.agent_reply(AGENT, &rid, "Anything else?");
    world.sent("Anything else?").await;
    assert!(
        !world
            .fb
            .sim
            .sent_messages()
            .iter()
            .any(|m| m.text.as_deref().is_some_and(|t| t.contains("ships today"))),
        "the page's reply went back to Messenger"
    );

    // Our own echo is not shown.
    let before = world.chat.sim.messages(&rid).len();
    let own = world.fb.sim.echo_body(
        PAGE_ID,
        PSID,
        "m-own",
        "Anything else?",
        APP_ID,
        Some("omni-gateway:agent:whatever:0"),
    );
    world.deliver(own.to_string().as_bytes()).await;
    world.customer_writes("m-2", "no, thanks").await;
    world.room_with("no, thanks").await;
    assert_eq!(world.chat.sim.messages(&rid).len(), before + 1);
    world.stop().await;
}

#[tokio::test]
async fn without_the_permission_a_page_inbox_reply_does_not_hold_the_conversation() {
    let world = World::start().await;
    world.customer_writes("m-1", "hello").await;
    let rid = world.room_with("hello").await;
    let echo = world.fb.sim.echo_body(
        PAGE_ID,
        PSID,
        "m-inbox-1",
        "Hi from the inbox",
        PAGE_INBOX_APP_ID,
        None,
    );
    world.deliver(echo.to_string().as_bytes()).await;
    world.customer_writes("m-2", "still there?").await;
    world.room_with("still there?").await;
    assert!(
        !world
            .chat
            .sim
            .messages(&rid)
            .iter()
            .any(|m| m.msg.contains("Hi from the inbox")),
        "the simulator refuses the bot like Rocket.Chat does"
    );
    world.stop().await;
}

#[tokio::test]
async fn a_reply_meta_echoed_is_not_sent_again_on_retry() {
    let world = World::start().await;
    world.customer_writes("m-1", "hi").await;
    let rid = world.room_with("hi").await;
    // Every send fails for now; the echo shows the first one did reach the customer.
    world.fb.sim.fail_next(
        "/messages",
        1000,
        SimError::Graph {
            code: 2,
            subcode: None,
            http_status: 500,
        },
    );
    let id = world.chat.sim.agent_reply(AGENT, &rid, "Delivered once");
    eventually("the send was tried", || world.message_calls() >= 2).await;
    let echo = world.fb.sim.echo_body(
        PAGE_ID,
        PSID,
        "m-echo",
        "Delivered once",
        APP_ID,
        Some(&format!("omni-gateway:agent:{id}:0")),
    );
    world.deliver(echo.to_string().as_bytes()).await;
    world.fb.sim.clear_faults();
    world.chat.sim.agent_reply(AGENT, &rid, "Second");
    world.sent("Second").await;
    assert_eq!(world.sent_count("Delivered once"), 0);
    assert!(
        !world
            .dm_to(AGENT)
            .iter()
            .any(|m| m.contains("Delivered once")),
        "the agent is not told of a failure"
    );
    world.stop().await;
}

#[tokio::test]
async fn handover_events_tell_the_gateway_who_controls_the_conversation() {
    let world = World::start().await;
    world.customer_writes("m-1", "hello").await;
    let rid = world.room_with("hello").await;

    // The Page Inbox becomes the primary receiver and takes the conversation.
    let roles = world.fb.sim.app_roles_body(PAGE_ID, PAGE_INBOX_APP_ID);
    world.deliver(roles.to_string().as_bytes()).await;
    let taken = world.fb.sim.thread_moved_body(
        PAGE_ID,
        PSID,
        "take_thread_control",
        PAGE_INBOX_APP_ID,
        APP_ID,
    );
    world.deliver(taken.to_string().as_bytes()).await;
    world.chat.sim.agent_reply(AGENT, &rid, "Refused reply");
    eventually("the agent hears who controls the conversation", || {
        world
            .dm_to(AGENT)
            .iter()
            .any(|m| m.contains("Refused reply") && m.contains("the Page Inbox controls"))
    })
    .await;
    assert!(
        !world
            .fb
            .sim
            .calls()
            .iter()
            .any(|c| c.ends_with("/take_thread_control")),
        "a secondary receiver does not try to take the thread"
    );
    assert_eq!(world.fb.sim.thread_requests().len(), 1);

    // The Page Inbox passes it back: replies flow again.
    let passed = world.fb.sim.thread_moved_body(
        PAGE_ID,
        PSID,
        "pass_thread_control",
        APP_ID,
        PAGE_INBOX_APP_ID,
    );
    world.deliver(passed.to_string().as_bytes()).await;
    world.chat.sim.agent_reply(AGENT, &rid, "Back again");
    world.sent("Back again").await;
    world.stop().await;
}
