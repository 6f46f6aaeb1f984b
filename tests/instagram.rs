//! Instagram Direct end to end, through the same gateway as Messenger: a Page with a linked
//! Instagram professional account, `object: "instagram"` webhooks signed like Meta's, the Graph
//! simulator's Instagram profile and send rules, and the Rocket.Chat simulator's rooms. Every
//! test checks what an agent sees in the room and what the customer gets on Instagram.

use axum::http::StatusCode;
use omni_gateway::store::Department;
use omni_sim::graph::SentMessage;
use omni_sim::ids::RoomId;
use omni_sim::rocketchat::SimMessage;
use omni_testkit::instagram::{
    IG_ID, attachment_event, body, connect_instagram, deleted_event, echo_event, reaction_event,
    standby_body, story_reply_event, text_event, unsupported_event,
};
use omni_testkit::messenger::{Facebook, PAGE_ID, PageSetup, now_ms, start_gateway};
use omni_testkit::{Chat, PATIENCE, Running, eventually, until_ready};

const PAGE_AGENT: &str = "agent.page";
const IG_AGENT: &str = "agent.insta";
const IGSID: &str = "8423157790123456";
const IG_WELCOME: &str = "Salut ! Une conseillère vous répond tout de suite.";
const IG_OFFLINE: &str = "Nous sommes fermés ; nous répondons dès notre retour.";
const IG_FINISHED: &str = "Merci et à bientôt sur Instagram !";

/// Both simulators; the Page routed to "Facebook desk", its Instagram account to "Instagram
/// desk", each with its own agent; a customer with an Instagram profile.
struct World {
    chat: Chat,
    fb: Facebook,
    running: Running,
    ig_department: String,
}

impl World {
    async fn start(agents_online: bool) -> World {
        World::start_with(agents_online, "").await
    }

    /// With extra `[facebook]` lines in bot.toml.
    async fn start_with(agents_online: bool, extra_facebook: &str) -> World {
        let chat = Chat::start().await;
        for agent in [PAGE_AGENT, IG_AGENT] {
            chat.sim
                .add_user(agent, "agent-pw", &["user", "livechat-agent"]);
            chat.sim.set_agent_online(agent, agents_online);
        }
        let page_department = chat.sim.add_department("Facebook desk", &[PAGE_AGENT]);
        let ig_department = chat.sim.add_department("Instagram desk", &[IG_AGENT]);
        let fb = Facebook::start().await;
        let running = if extra_facebook.is_empty() {
            start_gateway(&chat, &fb).await
        } else {
            let dir = tempfile::tempdir().expect("temp dir");
            let text = omni_testkit::config_text_with(
                chat.sim.url().as_str().trim_end_matches('/'),
                fb.sim.url().as_str(),
                &dir.path().join("data"),
                &omni_testkit::password_credentials(),
                extra_facebook,
            );
            let config =
                omni_gateway::config::Config::parse(&text, &dir.path().join("bot.toml"), &|_| None)
                    .expect("test config is valid");
            let gateway = omni_gateway::daemon::Gateway::start(config)
                .await
                .expect("gateway starts");
            Running { gateway, dir }
        };
        until_ready(&running.gateway).await;
        let department = |id: &str, name: &str| {
            Some(Department {
                id: id.to_owned(),
                name: name.to_owned(),
            })
        };
        connect_instagram(
            &running.gateway,
            &fb,
            PageSetup {
                department: department(&page_department, "Facebook desk"),
                ..PageSetup::default()
            },
            PageSetup {
                department: department(&ig_department, "Instagram desk"),
                welcome: Some(IG_WELCOME.into()),
                offline: Some(IG_OFFLINE.into()),
                subscribers: vec!["alice".into()],
            },
        )
        .await;
        running
            .gateway
            .store
            .update_page(&omni_gateway::ids::PageId::new(IG_ID), |p| {
                p.finished = Some(IG_FINISHED.into());
            })
            .expect("finished text set");
        World {
            chat,
            fb,
            running,
            ig_department,
        }
    }

    /// A customer who has written before, so Meta shows their profile.
    fn known_customer(&self) {
        self.fb
            .sim
            .add_igsid(IG_ID, IGSID, Some("Camille Martin"), "camille.mrtn");
    }

    async fn post(&self, items: &[serde_json::Value]) -> StatusCode {
        let url = format!(
            "http://{}/webhooks/messenger",
            self.running.gateway.http_addr
        );
        let answer = self
            .fb
            .sim
            .deliver_webhook(&url, &body(items))
            .await
            .expect("the gateway answers the webhook");
        StatusCode::from_u16(answer.status().as_u16()).expect("a valid status")
    }

    async fn post_ok(&self, items: &[serde_json::Value]) {
        assert_eq!(self.post(items).await, StatusCode::OK);
    }

    async fn post_body_ok(&self, body: &[u8]) {
        let url = format!(
            "http://{}/webhooks/messenger",
            self.running.gateway.http_addr
        );
        let answer = self
            .fb
            .sim
            .deliver_webhook(&url, body)
            .await
            .expect("the gateway answers the webhook");
        assert_eq!(answer.status().as_u16(), 200);
    }

    /// The open room whose customer messages number at least `count`.
    async fn room(&self, count: usize) -> RoomId {
        let mut found = None;
        eventually(&format!("{count} customer messages in a room"), || {
            found = self
                .chat
                .sim
                .livechat_rooms()
                .into_iter()
                .filter(|r| r.open)
                .find(|r| self.customer_messages(&r.id).len() >= count)
                .map(|r| r.id);
            found.is_some()
        })
        .await;
        found.expect("room found")
    }

    fn customer_messages(&self, rid: &RoomId) -> Vec<SimMessage> {
        self.chat
            .sim
            .messages(rid)
            .into_iter()
            .filter(|m| m.token.is_some())
            .collect()
    }

    fn customer_texts(&self, rid: &RoomId) -> Vec<String> {
        self.customer_messages(rid)
            .into_iter()
            .map(|m| m.msg)
            .collect()
    }

    async fn sent(&self, pred: impl Fn(&SentMessage) -> bool) -> SentMessage {
        self.fb
            .sim
            .wait_for_sent(|m| m.recipient == IGSID && pred(m), PATIENCE)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "nothing like it reached the customer; sent: {:#?}",
                    self.fb.sim.sent_messages()
                )
            })
    }

    fn texts_to_customer(&self) -> Vec<String> {
        self.fb
            .sim
            .sent_messages()
            .into_iter()
            .filter(|m| m.recipient == IGSID)
            .filter_map(|m| m.text)
            .collect()
    }

    fn dm_to(&self, username: &str) -> Vec<String> {
        let dm = self.chat.sim.direct_room(omni_testkit::BOT, username);
        self.chat.bot_messages(&dm)
    }

    async fn stop(self) {
        self.running.stop().await;
    }
}

#[tokio::test]
async fn a_dm_reaches_a_room_in_the_accounts_department_named_from_its_profile() {
    let world = World::start(true).await;
    world.known_customer();
    world
        .post_ok(&[text_event(
            IGSID,
            "aWdf_1",
            now_ms(),
            "Vous livrez à Lyon ?",
        )])
        .await;
    let rid = world.room(1).await;
    assert_eq!(world.customer_texts(&rid), vec!["Vous livrez à Lyon ?"]);
    let room = world
        .chat
        .sim
        .livechat_rooms()
        .into_iter()
        .find(|r| r.id == rid)
        .expect("the room");
    assert_eq!(
        room.department_id.as_deref(),
        Some(world.ig_department.as_str()),
        "the Instagram account's department, not the Page's"
    );
    let visitor = world
        .chat
        .sim
        .visitors()
        .into_iter()
        .find(|v| v.token == room.visitor_token)
        .expect("the visitor");
    assert_eq!(
        visitor.name.as_deref(),
        Some("Camille Martin (@camille.mrtn) · Instagram"),
        "the room says the customer wrote on Instagram"
    );
    // The account's welcome goes out through the linked Page's /messages, without metadata.
    let welcome = world.sent(|m| m.text.as_deref() == Some(IG_WELCOME)).await;
    assert_eq!(welcome.page, PAGE_ID);
    assert!(welcome.instagram, "sent to the Instagram customer");
    assert_eq!(welcome.metadata, None);

    // An echo of our own send (no app_id on Instagram) is not shown in the room.
    world
        .post_ok(&[echo_event(
            IGSID,
            welcome.message_id.as_deref().unwrap_or("aWdf_echo"),
            now_ms(),
            IG_WELCOME,
        )])
        .await;
    world
        .post_ok(&[text_event(IGSID, "aWdf_2", now_ms(), "merci")])
        .await;
    world.room(2).await;
    assert_eq!(
        world.customer_texts(&rid),
        vec!["Vous livrez à Lyon ?", "merci"]
    );
    assert!(
        !world
            .chat
            .sim
            .messages(&rid)
            .iter()
            .any(|m| m.msg.contains(IG_WELCOME)),
        "the echo is not posted"
    );
    world.stop().await;
}

#[tokio::test]
async fn without_a_readable_profile_the_visitor_gets_a_placeholder() {
    let world = World::start(true).await;
    // Known to the simulator only from this webhook: no profile (9010).
    world
        .post_ok(&[text_event(IGSID, "aWdf_1", now_ms(), "coucou")])
        .await;
    let rid = world.room(1).await;
    let room = world
        .chat
        .sim
        .livechat_rooms()
        .into_iter()
        .find(|r| r.id == rid)
        .expect("the room");
    let visitor = world
        .chat
        .sim
        .visitors()
        .into_iter()
        .find(|v| v.token == room.visitor_token)
        .expect("the visitor");
    assert_eq!(visitor.name.as_deref(), Some("Instagram user …3456"));
    world.stop().await;
}

/// How many uploads to Instagram's `message_attachments` the simulator has seen.
fn uploads(world: &World) -> usize {
    world
        .fb
        .sim
        .calls()
        .iter()
        .filter(|c| c.ends_with("/message_attachments"))
        .count()
}

#[tokio::test]
async fn reply_file_and_closing_reach_the_customer() {
    let world = World::start(true).await;
    world.known_customer();
    world
        .post_ok(&[text_event(IGSID, "aWdf_1", now_ms(), "Bonjour")])
        .await;
    let rid = world.room(1).await;
    world.sent(|m| m.text.as_deref() == Some(IG_WELCOME)).await;

    world
        .chat
        .sim
        .agent_reply(IG_AGENT, &rid, "Oui, en deux jours.");
    let reply = world
        .sent(|m| m.text.as_deref() == Some("Oui, en deux jours."))
        .await;
    assert_eq!(reply.page, PAGE_ID, "through the linked Page");
    assert_eq!(reply.messaging_type.as_deref(), Some("RESPONSE"));
    assert_eq!(reply.metadata, None);
    assert_eq!(
        Some(reply.token.as_str()),
        world.fb.sim.page_token(PAGE_ID).as_deref()
    );

    // Instagram counts bytes: a long accented reply goes out in pieces of at most 999.
    let long = "Très bien, c'est noté : livraison à Lyon prévue jeudi. ".repeat(45);
    assert!(long.len() > 2000 && long.chars().count() < 2600);
    world.chat.sim.agent_reply(IG_AGENT, &rid, &long);
    world
        .sent(|m| {
            m.text.as_deref().is_some_and(|t| t.ends_with("jeudi."))
                && m.text.as_deref() != Some("Oui, en deux jours.")
        })
        .await;
    eventually("the whole long reply", || {
        let pieces: Vec<String> = world
            .texts_to_customer()
            .into_iter()
            .filter(|t| t.starts_with("Très bien") || t.starts_with("livraison"))
            .collect();
        pieces.join(" ").len() >= long.trim().len()
    })
    .await;
    let pieces: Vec<String> = world
        .texts_to_customer()
        .into_iter()
        .filter(|t| t.contains("jeudi"))
        .collect();
    assert!(pieces.len() >= 3, "{pieces:?}");
    assert!(pieces.iter().all(|p| p.len() <= 999), "{pieces:?}");
    assert_eq!(pieces.join(" "), long.trim());

    // A file: uploaded to message_attachments, then sent by its attachment_id.
    let png = b"\x89PNG\r\n\x1a\nsimulated image".to_vec();
    world
        .chat
        .sim
        .agent_upload(IG_AGENT, &rid, "colis.png", "image/png", png.clone());
    let file = world.sent(|m| m.attachment.is_some()).await;
    assert!(file.instagram);
    let attachment = file.attachment.clone().expect("an attachment");
    assert_eq!(attachment["type"], "image");
    assert!(
        attachment["payload"]["attachment_id"].is_string(),
        "{attachment}"
    );
    assert_eq!(file.file.map(|f| f.bytes), Some(png), "the same bytes");
    assert!(
        world
            .fb
            .sim
            .calls()
            .iter()
            .any(|c| c == &format!("POST /v23.0/{PAGE_ID}/message_attachments")),
        "{:?}",
        world.fb.sim.calls()
    );

    // A Word document is refused in the room's agent DM before any Graph call.
    let uploads_before = uploads(&world);
    world.chat.sim.agent_upload(
        IG_AGENT,
        &rid,
        "devis.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        b"PK\x03\x04 word".to_vec(),
    );
    eventually("the agent is told why the file was not sent", || {
        world
            .dm_to(IG_AGENT)
            .iter()
            .any(|m| m.contains("only PDF documents"))
    })
    .await;
    assert_eq!(
        uploads(&world),
        uploads_before,
        "no upload for a refused file"
    );

    // An image over Instagram's 8 MB is refused too, with the limit.
    world.chat.sim.agent_upload(
        IG_AGENT,
        &rid,
        "vitrine.png",
        "image/png",
        vec![0x89; 9 << 20],
    );
    eventually("the agent is told the image is too large", || {
        world
            .dm_to(IG_AGENT)
            .iter()
            .any(|m| m.contains("vitrine.png is larger than Instagram's 8 MB limit"))
    })
    .await;
    assert_eq!(
        uploads(&world),
        uploads_before,
        "no upload for a refused file"
    );

    // Closing sends the account's finished message.
    world.chat.sim.close_room(&rid, IG_AGENT);
    let finished = world.sent(|m| m.text.as_deref() == Some(IG_FINISHED)).await;
    assert_eq!(finished.page, PAGE_ID);
    world.stop().await;
}

#[tokio::test]
async fn outside_instagrams_window_the_reply_is_refused_with_the_reason() {
    let world = World::start(true).await;
    world.known_customer();
    world
        .post_ok(&[text_event(IGSID, "aWdf_1", now_ms(), "Bonjour")])
        .await;
    let rid = world.room(1).await;
    world.sent(|m| m.text.as_deref() == Some(IG_WELCOME)).await;
    // Meta's clock says the customer wrote two days ago: Instagram answers 10/2534022.
    world
        .fb
        .sim
        .set_psid_window(IG_ID, IGSID, now_ms() - 48 * 3600 * 1000);
    world.chat.sim.agent_reply(IG_AGENT, &rid, "Trop tard ?");
    eventually("the agent hears the window closed", || {
        world.dm_to(IG_AGENT).iter().any(|m| {
            m.contains("Trop tard ?")
                && m.contains("2534022")
                && m.contains("Instagram only allows replies within 24 hours")
                && !m.contains("Messenger")
        })
    })
    .await;
    assert!(
        !world
            .texts_to_customer()
            .contains(&"Trop tard ?".to_owned())
    );
    world.stop().await;
}

#[tokio::test]
async fn no_agent_online_holds_then_delivers_with_the_accounts_offline_text() {
    let world = World::start(false).await;
    world.known_customer();
    let t0 = now_ms();
    for i in 0..3u64 {
        world
            .post_ok(&[text_event(
                IGSID,
                &format!("aWdf_held_{i}"),
                t0 + i,
                &format!("held {i}"),
            )])
            .await;
    }
    world.sent(|m| m.text.as_deref() == Some(IG_OFFLINE)).await;
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
    assert!(world.chat.sim.livechat_rooms().is_empty());

    world.chat.sim.set_agent_online(IG_AGENT, true);
    let rid = world.room(3).await;
    assert_eq!(
        world.customer_texts(&rid),
        vec!["held 0", "held 1", "held 2"]
    );
    world.sent(|m| m.text.as_deref() == Some(IG_WELCOME)).await;
    assert_eq!(
        world.texts_to_customer(),
        vec![IG_OFFLINE.to_owned(), IG_WELCOME.to_owned()]
    );
    world.stop().await;
}

#[tokio::test]
async fn unsends_story_replies_mentions_reactions_and_unsupported_messages_read_well() {
    let world = World::start(true).await;
    world.known_customer();
    let t0 = now_ms();
    world
        .post_ok(&[text_event(IGSID, "aWdf_orig", t0, "le rouge, taille M")])
        .await;
    let rid = world.room(1).await;
    world
        .post_ok(&[story_reply_event(
            IGSID,
            "aWdf_story",
            t0 + 1,
            "j'adore cette couleur",
            "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1&signature=s",
        )])
        .await;
    world
        .post_ok(&[attachment_event(
            IGSID,
            "aWdf_mention",
            t0 + 2,
            "story_mention",
            Some("https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=2&signature=m"),
        )])
        .await;
    world
        .post_ok(&[unsupported_event(IGSID, "aWdf_odd", t0 + 3)])
        .await;
    world
        .post_ok(&[reaction_event(
            IGSID,
            "aWdf_orig",
            t0 + 4,
            "\u{2764}\u{fe0f}",
        )])
        .await;
    // The unsend reuses the original's mid; Meta delivers it twice.
    for _ in 0..2 {
        world
            .post_ok(&[deleted_event(IGSID, "aWdf_orig", t0 + 5)])
            .await;
    }
    world.room(5).await;
    eventually("the unsend notice", || {
        world
            .customer_texts(&rid)
            .iter()
            .any(|t| t.contains("The customer unsent this message"))
    })
    .await;
    let texts = world.customer_texts(&rid);
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("The customer unsent this message"))
            .count(),
        1,
        "one notice for a redelivered unsend: {texts:#?}"
    );
    assert_eq!(
        texts[0], "🗑️ (unsent by the customer)",
        "the original is marked"
    );
    assert!(
        texts[1].contains("replying to your story") && texts[1].contains("j'adore cette couleur"),
        "{texts:#?}"
    );
    assert!(
        texts[2].contains("mentioned you in their story") && texts[2].contains("asset_id=2"),
        "{texts:#?}"
    );
    assert!(
        texts[3].contains("Instagram does not show to apps"),
        "{texts:#?}"
    );
    assert!(
        world
            .customer_messages(&rid)
            .iter()
            .all(|m| m.file.is_none()),
        "a story mention is never downloaded"
    );
    world.stop().await;
}

#[tokio::test]
async fn a_message_written_while_another_inbox_owns_the_thread_is_marked() {
    let world = World::start(true).await;
    world.known_customer();
    world
        .post_body_ok(&standby_body(&[text_event(
            IGSID,
            "aWdf_standby",
            now_ms(),
            "vous êtes là ?",
        )]))
        .await;
    let rid = world.room(1).await;
    assert_eq!(
        world.customer_texts(&rid),
        vec![format!(
            "{}\nvous êtes là ?",
            omni_gateway::relay::render::INSTAGRAM_STANDBY_LABEL
        )]
    );
    world.stop().await;
}

#[tokio::test]
async fn human_agent_tag_answers_an_instagram_customer_for_seven_days() {
    let world = World::start_with(true, "human_agent_tag = true").await;
    world.fb.sim.grant_human_agent(true);
    world.known_customer();
    let three_days_ago = now_ms() - 3 * 24 * 3600 * 1000;
    world
        .post_ok(&[text_event(
            IGSID,
            "aWdf_old",
            three_days_ago,
            "toujours dispo ?",
        )])
        .await;
    let rid = world.room(1).await;
    world
        .chat
        .sim
        .agent_reply(IG_AGENT, &rid, "Oui, toujours !");
    let reply = world
        .sent(|m| m.text.as_deref() == Some("Oui, toujours !"))
        .await;
    assert_eq!(
        (reply.messaging_type.as_deref(), reply.tag.as_deref()),
        (Some("MESSAGE_TAG"), Some("HUMAN_AGENT"))
    );
    world.stop().await;
}

#[tokio::test]
async fn an_agent_reaction_reaches_the_instagram_message() {
    let world = World::start(true).await;
    world.known_customer();
    world
        .post_ok(&[text_event(
            IGSID,
            "aWdf_thanks",
            now_ms(),
            "Merci beaucoup !",
        )])
        .await;
    let rid = world.room(1).await;
    let asked = world.customer_messages(&rid)[0].id.clone();
    world.chat.sim.react(IG_AGENT, &asked, ":heart:", true);
    let reaction = world
        .sent(|m| m.sender_action.as_deref() == Some("react"))
        .await;
    assert!(reaction.instagram);
    assert_eq!(reaction.page, PAGE_ID, "through the linked Page");
    assert_eq!(
        reaction.payload.as_ref().and_then(|p| p.get("message_id")),
        Some(&serde_json::json!("aWdf_thanks"))
    );
    world.stop().await;
}
