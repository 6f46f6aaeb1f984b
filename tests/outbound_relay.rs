//! Agent replies and room closing, from the Rocket.Chat simulator through the real gateway to the
//! Graph simulator's Send API: the right customer and token, the window policy, retries, token
//! loss and recovery, back-fill after a dropped socket, and a restart mid-outbox.

use std::time::Duration;

use omni_gateway::config::Config;
use omni_gateway::daemon::Gateway;
use omni_gateway::health::now_ms;
use omni_sim::graph::{GraphSim, SentMessage, SimError};
use omni_sim::ids::RoomId;
use omni_testkit::{BOT, Chat, PATIENCE, eventually, until_ready};
use serde_json::json;

const APP_ID: &str = "4242424242";
const APP_SECRET: &str = "graph-app-secret";
const PAGE: &str = "1111";
const PSID: &str = "9000000001";

/// Both simulators, the gateway, and one page connected through the real OAuth flow.
struct World {
    chat: Chat,
    graph: GraphSim,
    gateway: Option<Gateway>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    human_agent_tag: bool,
}

impl World {
    async fn start(human_agent_tag: bool) -> World {
        let chat = Chat::start().await;
        chat.sim
            .add_user("agent1", "agent-pw", &["user", "livechat-agent"]);
        chat.sim.set_agent_online("agent1", true);
        let graph = GraphSim::start(APP_ID, APP_SECRET)
            .await
            .expect("graph simulator");
        graph.add_user("fb-alice", "Alice Admin");
        graph.add_page("fb-alice", PAGE, "Acme Support", &["MESSAGING", "MODERATE"]);
        graph.add_psid(PAGE, PSID, "Jane", "Customer");
        graph.set_dialog_user("fb-alice");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        let mut world = World {
            chat,
            graph,
            gateway: None,
            dir: tempfile::tempdir().expect("temp dir"),
            http,
            human_agent_tag,
        };
        world.start_gateway().await;
        world.connect_page().await;
        world
    }

    async fn start_gateway(&mut self) {
        let graph_url = self.graph.url().as_str().trim_end_matches('/').to_owned();
        let text = format!(
            r#"
[rocketchat]
url = "{rc}"
username = "{BOT}"
password = "{password}"
admins = []
keepalive_ms = 200
dead_link_ms = 1500

[facebook]
app_id = "{APP_ID}"
app_secret = "{APP_SECRET}"
verify_token = "verify-me"
graph_url = "{graph_url}"
dialog_url = "{graph_url}"
api_version = "v23.0"
human_agent_tag = {tag}

[http]
listen = "127.0.0.1:0"
public_url = "http://gateway.invalid"

[store]
path = "{store}"
"#,
            rc = self.chat.sim.url().as_str().trim_end_matches('/'),
            password = omni_testkit::BOT_PASSWORD,
            tag = self.human_agent_tag,
            store = self.dir.path().join("data").display(),
        );
        let config = Config::parse(&text, &self.dir.path().join("bot.toml"), &|_| None)
            .expect("valid config");
        let gateway = Gateway::start(config).await.expect("gateway starts");
        until_ready(&gateway).await;
        self.gateway = Some(gateway);
    }

    fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("gateway running")
    }

    async fn stop_gateway(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await.expect("clean shutdown");
        }
    }

    /// `/facebook authorize` in chat, the simulated dialog, the callback: what an admin does.
    async fn connect_page(&self) {
        let dm = self.chat.alice_dm.clone();
        let links = |chat: &Chat| {
            chat.bot_messages(&dm)
                .into_iter()
                .filter(|m| m.contains("dialog/oauth"))
                .collect::<Vec<_>>()
        };
        let earlier_links = links(&self.chat).len();
        let before = self.chat.bot_messages(&dm).len();
        self.chat.sim.post("alice", &dm, "/facebook authorize");
        eventually("a fresh authorization link", || {
            links(&self.chat).len() > earlier_links
        })
        .await;
        let reply = links(&self.chat).pop().expect("a link");
        let link = reply
            .split_whitespace()
            .find(|w| w.starts_with("http"))
            .expect("a link in the reply")
            .to_owned();
        let dialog = self.http.get(&link).send().await.expect("dialog answers");
        let location = dialog
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("the dialog redirects")
            .to_owned();
        let callback = url::Url::parse(&location).expect("redirect URL");
        let local = format!(
            "http://{}{}?{}",
            self.gateway().http_addr,
            callback.path(),
            callback.query().unwrap_or_default()
        );
        let page = self
            .http
            .get(&local)
            .send()
            .await
            .expect("callback answers");
        assert_eq!(
            page.status(),
            200,
            "{}",
            page.text().await.unwrap_or_default()
        );
        eventually("the admin is told the page is connected", || {
            self.chat.bot_messages(&dm).len() > before + 1
                && self
                    .chat
                    .bot_messages(&dm)
                    .iter()
                    .any(|m| m.contains("Connected page"))
        })
        .await;
    }

    /// The customer writes to the page (a signed webhook), `ago_ms` in the past.
    async fn customer_writes(&self, mid: &str, text: &str, ago_ms: u64) {
        let ts = now_ms() - ago_ms;
        let body = json!({"object":"page","entry":[{"id":PAGE,"time":ts,"messaging":[
            {"sender":{"id":PSID},"recipient":{"id":PAGE},"timestamp":ts,"message":{"mid":mid,"text":text}}]}]});
        let url = format!("http://{}/webhooks/messenger", self.gateway().http_addr);
        let response = self
            .graph
            .deliver_webhook(&url, body.to_string().as_bytes())
            .await
            .expect("webhook delivered");
        assert_eq!(response.status(), 200);
    }

    /// Waits for the customer's message to reach a Livechat room; returns the room.
    async fn room_with(&self, text: &str) -> RoomId {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            for room in self.chat.sim.livechat_rooms() {
                if self
                    .chat
                    .sim
                    .messages(&room.id)
                    .iter()
                    .any(|m| m.msg == text)
                {
                    return room.id;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{text:?} never reached a room"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn sent(&self, text: &str) -> SentMessage {
        self.graph
            .wait_for_sent(|m| m.text.as_deref() == Some(text), PATIENCE)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{text:?} never reached the Send API; sent: {:#?}",
                    self.graph.sent_messages()
                )
            })
    }

    fn sent_count(&self, text: &str) -> usize {
        self.graph
            .sent_messages()
            .iter()
            .filter(|m| m.text.as_deref() == Some(text))
            .count()
    }

    /// Everything the bot said to `username` by direct message.
    fn dm_to(&self, username: &str) -> Vec<String> {
        let dm = self.chat.sim.direct_room(BOT, username);
        self.chat.bot_messages(&dm)
    }
}

#[tokio::test]
async fn agent_reply_reaches_the_customer_with_the_page_token() {
    let mut world = World::start(false).await;
    world
        .customer_writes("m-1", "Hi, my order is late", 0)
        .await;
    let rid = world.room_with("Hi, my order is late").await;

    world
        .chat
        .sim
        .agent_reply("agent1", &rid, "Sorry! Let me check.");
    let sent = world.sent("Sorry! Let me check.").await;
    assert_eq!(sent.page, PAGE);
    assert_eq!(sent.recipient, PSID);
    assert_eq!(
        Some(sent.token.as_str()),
        world.graph.page_token(PAGE).as_deref()
    );
    assert_eq!(sent.messaging_type.as_deref(), Some("RESPONSE"));
    assert!(
        world
            .graph
            .sent_messages()
            .iter()
            .any(|m| m.sender_action.as_deref() == Some("mark_seen")),
        "the customer's messages are marked seen"
    );
    world.stop_gateway().await;
}

#[tokio::test]
async fn agent_markup_reaches_the_customer_as_messenger_text() {
    let mut world = World::start(false).await;
    world.customer_writes("m-1", "Where is the guide?", 0).await;
    let rid = world.room_with("Where is the guide?").await;

    // Rocket.Chat's emoji picker writes shortcodes, its links are markdown.
    world.chat.sim.agent_reply("agent1", &rid, "@all");
    world.chat.sim.agent_reply(
        "agent1",
        &rid,
        ":wave: Here it is: [the guide](https://acme.example/guide) :thumbsup_tone2:",
    );
    world
        .sent("👋 Here it is: the guide (https://acme.example/guide) 👍🏼")
        .await;
    let texts: Vec<String> = world
        .graph
        .sent_messages()
        .into_iter()
        .filter_map(|m| m.text)
        .collect();
    assert!(
        !texts
            .iter()
            .any(|t| t.contains("@all") || t.trim().is_empty()),
        "a message that was only @all is not sent: {texts:?}"
    );
    world.stop_gateway().await;
}

#[tokio::test]
async fn quotes_link_both_ways() {
    let mut world = World::start(false).await;
    world
        .customer_writes("m-1", "Is the blue one in stock?", 0)
        .await;
    let rid = world.room_with("Is the blue one in stock?").await;
    let asked = world
        .chat
        .sim
        .messages(&rid)
        .into_iter()
        .find(|m| m.msg == "Is the blue one in stock?")
        .expect("the question in the room");

    // An agent quotes it the way Rocket.Chat's client does: a blank link to the message first.
    let link = format!("{}live/{}?msg={}", world.chat.sim.url(), rid, asked.id);
    world
        .chat
        .sim
        .agent_reply("agent1", &rid, &format!("[ ]({link}) Yes, two left."));
    let answer = world
        .sent("↩️ “Is the blue one in stock?”\nYes, two left.")
        .await;

    // The customer answers that reply in Messenger: the room shows it quoting the agent's message.
    let agent_message = world
        .chat
        .sim
        .messages(&rid)
        .into_iter()
        .find(|m| m.msg.ends_with("Yes, two left."))
        .expect("the agent's reply");
    let ts = now_ms();
    let body = json!({"object":"page","entry":[{"id":PAGE,"time":ts,"messaging":[
        {"sender":{"id":PSID},"recipient":{"id":PAGE},"timestamp":ts,"message":{"mid":"m-2","text":"Great, I take one",
         "reply_to":{"mid":answer.message_id.expect("Meta's message id")}}}]}]});
    let url = format!("http://{}/webhooks/messenger", world.gateway().http_addr);
    let response = world
        .graph
        .deliver_webhook(&url, body.to_string().as_bytes())
        .await
        .expect("webhook delivered");
    assert_eq!(response.status(), 200);
    let reply = world
        .chat
        .sim
        .wait_for_message(&rid, |m| m.msg.ends_with("Great, I take one"), PATIENCE)
        .await
        .expect("the customer's reply in the room");
    assert!(
        reply.msg.contains(&format!("msg={}", agent_message.id)),
        "links the agent's message: {}",
        reply.msg
    );
    assert_eq!(
        reply.quoted,
        vec![agent_message.msg.clone()],
        "Rocket.Chat shows it as a quote"
    );
    world.stop_gateway().await;
}

#[tokio::test]
async fn an_agent_editing_a_sent_reply_is_told_once_that_messenger_keeps_it() {
    let mut world = World::start(false).await;
    world
        .customer_writes("m-1", "What time do you open?", 0)
        .await;
    let rid = world.room_with("What time do you open?").await;
    let reply = world.chat.sim.agent_reply("agent1", &rid, "At 8.");
    world.sent("At 8.").await;

    world.chat.sim.edit("agent1", &reply, "At 9.");
    world.chat.sim.edit("agent1", &reply, "At 9:30.");
    eventually("the agent is told", || {
        world
            .dm_to("agent1")
            .iter()
            .any(|m| m.contains("Messenger cannot change a sent message"))
    })
    .await;
    // A later message proves both edits went past the relay.
    world.chat.sim.agent_reply("agent1", &rid, "Sorry!");
    world.sent("Sorry!").await;
    let told = world
        .dm_to("agent1")
        .iter()
        .filter(|m| m.contains("Messenger cannot change a sent message"))
        .count();
    assert_eq!(told, 1, "once per message");
    assert_eq!(
        world.sent_count("At 9."),
        0,
        "an edit is not sent as a new message"
    );
    world.stop_gateway().await;
}

/// The page's reactions the Send API accepted, as (action, message_id, reaction).
fn reactions_sent(world: &World) -> Vec<(String, String, Option<String>)> {
    world
        .graph
        .sent_messages()
        .into_iter()
        .filter_map(|m| {
            let action = m.sender_action.filter(|a| a.ends_with("react"))?;
            let payload = m.payload.unwrap_or_default();
            let field = |name: &str| {
                payload
                    .get(name)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            Some((action, field("message_id")?, field("reaction")))
        })
        .collect()
}

fn react(emoji: &str) -> (String, String, Option<String>) {
    ("react".into(), "m-1".into(), Some(emoji.into()))
}

/// The customer's message in the room, as the visitor posted it.
async fn customer_message(world: &World, text: &str) -> (RoomId, omni_sim::ids::MessageId) {
    let rid = world.room_with(text).await;
    let id = world
        .chat
        .sim
        .messages(&rid)
        .into_iter()
        .find(|m| m.msg == text && m.token.is_some())
        .expect("the customer's message")
        .id;
    (rid, id)
}

#[tokio::test]
async fn an_agent_reaction_on_a_customer_message_reaches_messenger() {
    let mut world = World::start(false).await;
    world.customer_writes("m-1", "Thanks a lot!", 0).await;
    let (rid, asked) = customer_message(&world, "Thanks a lot!").await;

    world.chat.sim.react("agent1", &asked, ":thumbsup:", true);
    eventually("react 👍 on the customer's mid", || {
        reactions_sent(&world) == [react("👍")]
    })
    .await;

    // Messenger keeps one reaction per sender: the page shows the agents' latest emoji, and the
    // one still there when that goes.
    world.chat.sim.react("agent1", &asked, ":heart:", true);
    eventually("❤️ replaces 👍", || reactions_sent(&world).len() == 2).await;
    world.chat.sim.react("agent1", &asked, ":heart:", false);
    eventually("👍 is back", || reactions_sent(&world).len() == 3).await;
    world.chat.sim.react("agent1", &asked, ":thumbsup:", false);
    eventually("unreact", || reactions_sent(&world).len() == 4).await;
    assert_eq!(
        reactions_sent(&world),
        [
            react("👍"),
            react("❤️"),
            react("👍"),
            ("unreact".into(), "m-1".into(), None)
        ]
    );
    let unreact = world
        .graph
        .sent_messages()
        .into_iter()
        .rfind(|m| m.sender_action.as_deref() == Some("unreact"))
        .expect("the unreact");
    assert_eq!(
        unreact.payload,
        Some(json!({"message_id": "m-1"})),
        "unreact names the message only"
    );

    // A reaction on the agent's own reply is the room's business, not the customer's.
    let reply = world
        .chat
        .sim
        .agent_reply("agent1", &rid, "You're welcome.");
    world.sent("You're welcome.").await;
    world.chat.sim.react("agent1", &reply, ":tada:", true);
    world.chat.sim.agent_reply("agent1", &rid, "Bye!");
    world.sent("Bye!").await;
    assert_eq!(
        reactions_sent(&world).len(),
        4,
        "nothing for the agent's own reply"
    );
    world.stop_gateway().await;
}

#[tokio::test]
async fn the_customer_reaction_shown_by_the_bot_does_not_come_back_as_the_page_reaction() {
    let mut world = World::start(false).await;
    // With room access the bot shows the customer's reactions as its own.
    world
        .chat
        .sim
        .grant_permission("bot", "view-livechat-rooms");
    world.customer_writes("m-1", "Found it, thanks", 0).await;
    let (rid, asked) = customer_message(&world, "Found it, thanks").await;
    let ts = now_ms();
    let body = json!({"object":"page","entry":[{"id":PAGE,"time":ts,"messaging":[
        {"sender":{"id":PSID},"recipient":{"id":PAGE},"timestamp":ts,
         "reaction":{"reaction":"love","emoji":"❤️","action":"react","mid":"m-1"}}]}]});
    let url = format!("http://{}/webhooks/messenger", world.gateway().http_addr);
    let response = world
        .graph
        .deliver_webhook(&url, body.to_string().as_bytes())
        .await
        .expect("webhook delivered");
    assert_eq!(response.status(), 200);
    eventually("the bot shows the customer's ❤️", || {
        world
            .chat
            .sim
            .messages(&rid)
            .iter()
            .any(|m| m.id == asked && m.reactions.contains_key(":heart:"))
    })
    .await;

    world.chat.sim.react("agent1", &asked, ":thumbsup:", true);
    eventually("the agent's 👍 reaches Messenger", || {
        !reactions_sent(&world).is_empty()
    })
    .await;
    assert_eq!(
        reactions_sent(&world),
        [react("👍")],
        "only the agent's reaction is the page's"
    );
    world.stop_gateway().await;
}

#[tokio::test]
async fn a_restart_with_a_reaction_queued_sends_it_once() {
    let mut world = World::start(false).await;
    world.customer_writes("m-1", "Is it on sale?", 0).await;
    let (rid, asked) = customer_message(&world, "Is it on sale?").await;

    world
        .graph
        .fail_next("/messages", 100_000, SimError::Http5xx(503));
    world.chat.sim.react("agent1", &asked, ":ok_hand:", true);
    let store = world.gateway().store.clone();
    eventually("the reaction waits in the outbox", || {
        store.outbox().len() == 1
    })
    .await;
    drop(store);
    world.stop_gateway().await;

    // The restart reads the room's history again, reaction included: it is not queued twice.
    world.graph.clear_faults();
    world.start_gateway().await;
    eventually("the reaction reaches Messenger", || {
        reactions_sent(&world) == [react("👌")]
    })
    .await;
    world.chat.sim.agent_reply("agent1", &rid, "Yes, 20% off.");
    world.sent("Yes, 20% off.").await;
    assert_eq!(reactions_sent(&world), [react("👌")], "exactly once");
    world.stop_gateway().await;
}

#[tokio::test]
async fn an_agent_deleting_a_sent_reply_is_told_once_in_the_room() {
    const TOLD: &str = "Messenger cannot unsend";
    for show_deleted in [false, true] {
        let mut world = World::start(false).await;
        // Posting in an Omnichannel room the bot does not serve takes room access.
        world
            .chat
            .sim
            .grant_permission("bot", "view-livechat-rooms");
        world
            .chat
            .sim
            .set_setting("Message_ShowDeletedStatus", json!(show_deleted));
        world
            .customer_writes("m-1", "What time do you open?", 0)
            .await;
        let rid = world.room_with("What time do you open?").await;
        let reply = world.chat.sim.agent_reply("agent1", &rid, "At 8.");
        world.sent("At 8.").await;

        world.chat.sim.delete("agent1", &reply);
        let told = |world: &World| {
            world
                .chat
                .bot_messages(&rid)
                .iter()
                .filter(|m| m.contains(TOLD))
                .count()
        };
        eventually("the room is told", || told(&world) == 1).await;
        // A reconnect reads the room's history again (a deleted-status message included).
        world.chat.sim.drop_connections();
        world.chat.sim.agent_reply("agent1", &rid, "Sorry, at 9.");
        world.sent("Sorry, at 9.").await;
        assert_eq!(
            told(&world),
            1,
            "once per message (show deleted: {show_deleted})"
        );
        assert!(
            world.graph.sent_messages().iter().all(|m| !m
                .text
                .as_deref()
                .unwrap_or_default()
                .contains(TOLD)),
            "the notice stays in the room"
        );
        world.stop_gateway().await;
    }
}

#[tokio::test]
async fn without_room_access_a_deleted_reply_is_told_to_the_page_admins() {
    let mut world = World::start(false).await;
    world.customer_writes("m-1", "Do you deliver?", 0).await;
    let rid = world.room_with("Do you deliver?").await;
    let reply = world.chat.sim.agent_reply("agent1", &rid, "Yes, free.");
    world.sent("Yes, free.").await;
    world.chat.sim.delete("agent1", &reply);
    eventually("the admin who connected the page is told", || {
        world
            .dm_to("alice")
            .iter()
            .any(|m| m.contains("Messenger cannot unsend"))
    })
    .await;
    assert!(
        world.chat.bot_messages(&rid).is_empty(),
        "nothing in the room the bot may not post in"
    );
    world.stop_gateway().await;
}

#[tokio::test]
async fn an_agent_typing_shows_in_messenger_until_the_reply() {
    let mut world = World::start(false).await;
    world
        .customer_writes("m-1", "Can you check my order?", 0)
        .await;
    let rid = world.room_with("Can you check my order?").await;
    let actions = |world: &World, action: &str| {
        world
            .graph
            .sent_messages()
            .iter()
            .filter(|m| m.sender_action.as_deref() == Some(action))
            .count()
    };

    // Rocket.Chat's client renews the activity while the agent types: one typing_on.
    world.chat.sim.agent_typing("agent1", &rid, true);
    world.chat.sim.agent_typing("agent1", &rid, true);
    eventually("typing_on", || actions(&world, "typing_on") == 1).await;
    world.chat.sim.agent_typing("agent1", &rid, false);
    eventually("typing_off", || actions(&world, "typing_off") == 1).await;

    // Typing, then the reply: Messenger ends the indicator itself, no typing_off follows.
    world.chat.sim.agent_typing("agent1", &rid, true);
    eventually("typing_on again", || actions(&world, "typing_on") == 2).await;
    world.chat.sim.agent_reply("agent1", &rid, "Found it.");
    world.sent("Found it.").await;
    world.chat.sim.agent_typing("agent1", &rid, false);
    world
        .chat
        .sim
        .agent_reply("agent1", &rid, "It ships today.");
    world.sent("It ships today.").await;
    assert_eq!(actions(&world, "typing_on"), 2, "renewals are throttled");
    assert_eq!(
        actions(&world, "typing_off"),
        1,
        "no typing_off after the reply"
    );
    world.stop_gateway().await;
}

#[tokio::test]
async fn long_replies_are_split_and_the_visitor_own_messages_are_not_echoed() {
    let mut world = World::start(false).await;
    world.customer_writes("m-1", "Tell me everything", 0).await;
    let rid = world.room_with("Tell me everything").await;

    let long = "This sentence is part of a long answer. ".repeat(80);
    world.chat.sim.agent_reply("agent1", &rid, long.trim());
    let expected = omni_gateway::relay::outbound::split_text(long.trim(), 1999);
    assert!(expected.len() > 1);
    for piece in &expected {
        world.sent(piece).await;
    }
    assert_eq!(
        world.sent_count("Tell me everything"),
        0,
        "the visitor's own message is not sent back"
    );
    world.stop_gateway().await;
}

#[tokio::test]
async fn closing_sends_the_finished_message_and_the_next_message_opens_a_new_room() {
    let mut world = World::start(false).await;
    world.chat.sim.post(
        "alice",
        &world.chat.alice_dm,
        &format!("/facebook edit {PAGE} finished Thanks for contacting Acme!"),
    );
    world
        .chat
        .bot_says(&world.chat.alice_dm, |m| {
            m.contains("finished message updated")
        })
        .await;
    world.chat.sim.post(
        "alice",
        &world.chat.alice_dm,
        &format!("/facebook edit {PAGE} welcome Welcome to Acme!"),
    );
    world
        .chat
        .bot_says(&world.chat.alice_dm, |m| {
            m.contains("welcome message updated")
        })
        .await;

    world.customer_writes("m-1", "first question", 0).await;
    let first_room = world.room_with("first question").await;
    world.sent("Welcome to Acme!").await;
    world
        .chat
        .sim
        .agent_reply("agent1", &first_room, "Answered.");
    world.sent("Answered.").await;
    world.chat.sim.close_room(&first_room, "agent1");
    let finished = world.sent("Thanks for contacting Acme!").await;
    assert_eq!(finished.recipient, PSID);

    world.customer_writes("m-2", "second question", 0).await;
    let second_room = world.room_with("second question").await;
    assert_ne!(
        first_room, second_room,
        "a new conversation opens a new room"
    );
    eventually("a second welcome", || {
        world.sent_count("Welcome to Acme!") == 2
    })
    .await;
    assert_eq!(world.sent_count("Thanks for contacting Acme!"), 1);
    world.stop_gateway().await;
}

#[tokio::test]
async fn transient_errors_are_retried_and_the_reply_is_sent_once() {
    let mut world = World::start(false).await;
    world.customer_writes("m-1", "hello?", 0).await;
    let rid = world.room_with("hello?").await;

    world.graph.fail_next(
        "/messages",
        2,
        SimError::Graph {
            code: 2,
            subcode: None,
            http_status: 500,
        },
    );
    world.chat.sim.agent_reply("agent1", &rid, "Here I am.");
    world.sent("Here I am.").await;
    world.chat.sim.agent_reply("agent1", &rid, "Anything else?");
    world.sent("Anything else?").await;
    assert_eq!(
        world.sent_count("Here I am."),
        1,
        "retries did not duplicate the reply"
    );
    world.stop_gateway().await;
}

#[tokio::test]
async fn a_dead_token_holds_replies_notifies_admins_and_resumes_after_authorize() {
    let mut world = World::start(false).await;
    world.customer_writes("m-1", "are you there?", 0).await;
    let rid = world.room_with("are you there?").await;

    world.graph.invalidate_user_tokens("fb-alice", 460);
    world
        .chat
        .sim
        .agent_reply("agent1", &rid, "Yes, one moment.");
    eventually("the admin is told the page needs authorization", || {
        world
            .dm_to("alice")
            .iter()
            .any(|m| m.contains("no longer accepts") && m.contains("/facebook authorize"))
    })
    .await;
    world
        .chat
        .sim
        .post("alice", &world.chat.alice_dm, "/facebook pages");
    world
        .chat
        .bot_says(&world.chat.alice_dm, |m| m.contains("needs authorization"))
        .await;
    assert_eq!(world.sent_count("Yes, one moment."), 0);

    world.connect_page().await;
    let sent = world.sent("Yes, one moment.").await;
    assert_eq!(
        Some(sent.token.as_str()),
        world.graph.page_token(PAGE).as_deref(),
        "sent with the new token"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(world.sent_count("Yes, one moment."), 1);
    let notices = world
        .dm_to("alice")
        .iter()
        .filter(|m| m.contains("no longer accepts"))
        .count();
    assert_eq!(notices, 1, "one notice per loss of authorization");
    world.stop_gateway().await;
}

#[tokio::test]
async fn replies_outside_the_window_are_refused_with_a_dm_to_the_agent() {
    let mut world = World::start(false).await;
    let day = 24 * 3600 * 1000;
    world
        .graph
        .set_psid_window(PAGE, PSID, now_ms() - day - 3_600_000);
    world
        .customer_writes("m-old", "old question", day + 3_600_000)
        .await;
    let rid = world.room_with("old question").await;

    world.chat.sim.agent_reply("agent1", &rid, "Late answer");
    eventually("the agent is told why", || {
        world.dm_to("agent1").iter().any(|m| {
            m.contains("Late answer") && m.contains("24-hour") && m.contains("human_agent_tag")
        })
    })
    .await;
    assert_eq!(world.sent_count("Late answer"), 0);
    world.stop_gateway().await;
}

#[tokio::test]
async fn human_agent_tag_extends_the_window_to_seven_days_for_people() {
    let mut world = World::start(true).await;
    world.graph.grant_human_agent(true);
    let three_days = 3 * 24 * 3600 * 1000;
    world
        .graph
        .set_psid_window(PAGE, PSID, now_ms() - three_days);
    world
        .customer_writes("m-old", "question from Monday", three_days)
        .await;
    let rid = world.room_with("question from Monday").await;

    world
        .chat
        .sim
        .agent_reply("agent1", &rid, "Sorry for the wait");
    let sent = world.sent("Sorry for the wait").await;
    assert_eq!(sent.messaging_type.as_deref(), Some("MESSAGE_TAG"));
    assert_eq!(sent.tag.as_deref(), Some("HUMAN_AGENT"));
    world.stop_gateway().await;
}

#[tokio::test]
async fn a_reply_written_while_the_socket_is_down_arrives_once_by_back_fill() {
    let mut world = World::start(false).await;
    world.customer_writes("m-1", "hello", 0).await;
    let rid = world.room_with("hello").await;
    world
        .chat
        .sim
        .agent_reply("agent1", &rid, "Before the drop");
    world.sent("Before the drop").await;

    let connections = world.chat.sim.stats().ws_connections;
    world.chat.sim.refuse_connections(true);
    world.chat.sim.drop_connections();
    let health = world.gateway().health.clone();
    eventually("the gateway sees the link down", || {
        health.readiness().is_err()
    })
    .await;
    world
        .chat
        .sim
        .agent_reply("agent1", &rid, "Written while you were away");
    world.chat.sim.refuse_connections(false);
    eventually("the gateway reconnects", || {
        world.chat.sim.stats().ws_connections > connections
    })
    .await;

    world.sent("Written while you were away").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.sent_count("Written while you were away"), 1);
    assert_eq!(
        world.sent_count("Before the drop"),
        1,
        "the back-fill does not resend what was sent"
    );
    world.stop_gateway().await;
}

#[tokio::test]
async fn a_restart_mid_outbox_sends_each_reply_once() {
    let mut world = World::start(false).await;
    world.customer_writes("m-1", "hello", 0).await;
    let rid = world.room_with("hello").await;

    world
        .graph
        .fail_next("/messages", 100_000, SimError::Http5xx(503));
    for n in 1..=3 {
        world
            .chat
            .sim
            .agent_reply("agent1", &rid, &format!("reply {n}"));
    }
    let store = world.gateway().store.clone();
    eventually("the replies wait in the outbox", || {
        store.outbox().len() == 3
    })
    .await;
    drop(store);
    world.stop_gateway().await;

    world.graph.clear_faults();
    world.start_gateway().await;
    for n in 1..=3 {
        world.sent(&format!("reply {n}")).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let texts: Vec<String> = world
        .graph
        .sent_messages()
        .into_iter()
        .filter_map(|m| m.text)
        .filter(|t| t.starts_with("reply "))
        .collect();
    assert_eq!(
        texts,
        vec!["reply 1", "reply 2", "reply 3"],
        "each once, in order"
    );
    world.stop_gateway().await;
}

/// A file server whose one file is held back until the test releases it.
async fn held_file_server(gate: std::sync::Arc<tokio::sync::Semaphore>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback bind");
    let addr = listener.local_addr().expect("bound address");
    let app = axum::Router::new().route(
        "/photo.png",
        axum::routing::get(move || {
            let gate = gate.clone();
            async move {
                let _released = gate.acquire().await.expect("gate open");
                (
                    [("content-type", "image/png")],
                    vec![0x89, b'P', b'N', b'G'],
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/photo.png")
}

/// The customer has written as soon as their first words are in the room, even while the rest of
/// the same message (a slow photo) is still on its way: an agent (or a bot) answering at once is
/// inside the window. Found by the soak bench, where an instant agent lost about one answer in
/// 300 to "the customer has not written to the page yet".
#[tokio::test]
async fn an_answer_while_the_first_message_is_still_arriving_is_sent() {
    let mut world = World::start(false).await;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let photo = held_file_server(gate.clone()).await;
    let ts = now_ms();
    let body = json!({"object":"page","entry":[{"id":PAGE,"time":ts,"messaging":[
        {"sender":{"id":PSID},"recipient":{"id":PAGE},"timestamp":ts,"message":{"mid":"m-photo",
         "text":"Is this one in stock?","attachments":[{"type":"image","payload":{"url":photo}}]}}]}]});
    let url = format!("http://{}/webhooks/messenger", world.gateway().http_addr);
    let response = world
        .graph
        .deliver_webhook(&url, body.to_string().as_bytes())
        .await
        .expect("webhook delivered");
    assert_eq!(response.status(), 200);
    let rid = world.room_with("Is this one in stock?").await;

    world
        .chat
        .sim
        .agent_reply("agent1", &rid, "Let me look at the photo.");
    world.sent("Let me look at the photo.").await;
    assert!(
        world.dm_to("agent1").is_empty(),
        "the agent is told nothing failed: {:?}",
        world.dm_to("agent1")
    );

    gate.add_permits(1);
    eventually("the photo follows in the same room", || {
        world
            .chat
            .sim
            .messages(&rid)
            .iter()
            .any(|m| m.file.is_some())
    })
    .await;
    world.stop_gateway().await;
}

/// An agent's file goes to Messenger as a multipart upload of the same bytes: downloaded from
/// Rocket.Chat as the room's visitor (the bot is not a member; a default server refuses its own
/// credentials), so no file URL, and no token, is handed to Meta.
#[tokio::test]
async fn an_agent_file_is_uploaded_to_messenger_as_multipart() {
    let mut world = World::start(false).await;
    world
        .customer_writes("m-1", "can you send the invoice?", 0)
        .await;
    let rid = world.room_with("can you send the invoice?").await;

    let pdf = b"%PDF-1.4 invoice 1042".to_vec();
    world.chat.sim.agent_upload(
        "agent1",
        &rid,
        "invoice-1042.pdf",
        "application/pdf",
        pdf.clone(),
    );
    let sent = world
        .graph
        .wait_for_sent(|m| m.file.is_some(), PATIENCE)
        .await
        .unwrap_or_else(|| {
            panic!(
                "no file reached the Send API; the agent was told {:?}",
                world.dm_to("agent1")
            )
        });
    let file = sent.file.expect("a file");
    assert_eq!(file.bytes, pdf, "the same bytes");
    assert_eq!(file.name.as_deref(), Some("invoice-1042.pdf"));
    assert_eq!(sent.recipient, PSID);
    let attachment = sent.attachment.expect("the attachment part");
    assert_eq!(attachment["type"], "file");
    assert!(
        attachment["payload"].get("url").is_none(),
        "no URL is handed to Meta: {attachment}"
    );
    world.stop_gateway().await;
}

/// An image has a generated thumbnail as a second `files[]` entry (Rocket.Chat's
/// `sendFileMessage.ts`): the customer gets the original, once.
#[tokio::test]
async fn an_agent_image_reaches_the_customer_once_as_the_original() {
    let mut world = World::start(false).await;
    world.customer_writes("m-1", "a photo please", 0).await;
    let rid = world.room_with("a photo please").await;
    let jpeg: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    world
        .chat
        .sim
        .agent_upload("agent1", &rid, "shelf.jpg", "image/jpeg", jpeg.clone());
    let sent = world
        .graph
        .wait_for_sent(|m| m.file.is_some(), PATIENCE)
        .await
        .expect("the image reached the Send API");
    assert_eq!(
        sent.file.expect("a file").bytes,
        jpeg,
        "the original's bytes"
    );
    world.chat.sim.agent_reply("agent1", &rid, "that's it");
    world
        .graph
        .wait_for_sent(|m| m.text.as_deref() == Some("that's it"), PATIENCE)
        .await
        .expect("the next reply arrives");
    let files = world
        .graph
        .sent_messages()
        .into_iter()
        .filter(|m| m.file.is_some())
        .count();
    assert_eq!(files, 1, "one file sent, not the thumbnail too");
    world.stop_gateway().await;
}

/// A room closed while the gateway was down: at start-up its visitor-token stream is refused
/// (`nosub` / `not-allowed`, the room-access validator wants `room.open`), and one read of its
/// history delivers the reply it missed. No retry storm: the refused stream is not asked for
/// again, and the history is read once or twice, not on every reconnect.
#[tokio::test]
async fn a_room_closed_while_down_is_caught_up_once_without_resubscribing() {
    let mut world = World::start(false).await;
    world.customer_writes("m-1", "hello", 0).await;
    let rid = world.room_with("hello").await;
    world.stop_gateway().await;
    world
        .chat
        .sim
        .agent_reply("agent1", &rid, "sorry, we are closing");
    world.chat.sim.close_room(&rid, "agent1");
    world.chat.sim.record_rest_requests();
    world.start_gateway().await;
    world.sent("sorry, we are closing").await;
    // A few keepalive periods and a reconnect: a storm would read the history again and again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    world.chat.sim.drop_connections();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let history_reads = world
        .chat
        .sim
        .rest_requests()
        .iter()
        .filter(|r| {
            r["route"] == "/api/v1/livechat/messages.history/{rid}"
                && r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(rid.as_str()))
        })
        .count();
    assert!(
        (1..=2).contains(&history_reads),
        "the closed room's history read once or twice, not in a loop: {history_reads}"
    );
    let replies = world
        .graph
        .sent_messages()
        .into_iter()
        .filter(|m| m.text.as_deref() == Some("sorry, we are closing"))
        .count();
    assert_eq!(replies, 1, "the missed reply sent once");
    world.stop_gateway().await;
}
