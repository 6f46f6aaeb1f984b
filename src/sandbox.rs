//! `omni-gateway sandbox` (`docs/contract.md` §2): the real gateway between the built-in simulators
//! of Rocket.Chat and Facebook, on loopback, with a throw-away store, and a guided tour of what it
//! does, one line per hop: an admin connects two pages and configures them, a customer writes, an
//! agent answers and closes the room, and a conversation is held while no agent is online and then
//! delivered. The far ends are simulated; everything in between is production code, started with
//! the same `Gateway::start` as `omni-gateway run`.

use std::collections::HashSet;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use omni_sim::graph::GraphSim;
use omni_sim::ids::{MessageId, RoomId};
use omni_sim::rocketchat::{RocketChatSim, SimOptions};
use rand::Rng;
use serde_json::json;
use tokio::time::Instant;

use crate::config::Config;
use crate::daemon::Gateway;

mod load;
pub use load::{LoadTarget, serve_load_target};

/// Longest a hop may take by default; the held conversation waits for the relay's
/// `livechat/config` poll, which backs off from 2 s.
const HOP_TIMEOUT: Duration = Duration::from_secs(20);

const BOT: &str = "facebook.bot";
const ADMIN: &str = "alice";
const APP_ID: &str = "100000000000001";
const FB_ADMIN: &str = "900000000000001";
/// The page whose department has an agent online.
pub const SHOP_PAGE: &str = "111111111111111";
/// The page whose department's only agent is offline at first.
pub const SUPPORT_PAGE: &str = "222222222222222";
/// The Instagram professional account linked to the shop page.
pub const SHOP_INSTAGRAM: &str = "17841400000000111";
pub const CARLA: &str = "7000000000000001";
/// An Instagram customer of the shop (an IGSID).
pub const LEA: &str = "8400000000000003";
pub const DAN: &str = "7000000000000002";
/// The agent of the shop page's department, online from the start.
pub const SHOP_AGENT: &str = "sam";
const SUPPORT_AGENT: &str = "kim";
const WELCOME: &str = "Hi! Thanks for writing to Acme Shop; an agent will be with you shortly.";
const FINISHED: &str = "Thanks for chatting with Acme Shop. Write any time!";
const OFFLINE: &str = "Nobody is at the desk right now; we will answer as soon as someone is.";

/// Why the sandbox stopped.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("the sandbox could not start: {0}")]
    Setup(String),
    #[error("the tour failed at hop {number} ({name}): {reason}")]
    Hop {
        number: usize,
        name: &'static str,
        reason: String,
    },
}

/// Runs the tour, printing through `say`; with `interactive`, keeps everything up afterwards
/// until Ctrl-C.
pub async fn run(interactive: bool, say: &mut dyn FnMut(&str)) -> Result<(), Error> {
    let sandbox = Sandbox::start().await?;
    let started = Instant::now();
    let toured = sandbox.tour(say).await;
    if toured.is_ok() {
        say(&format!(
            "tour complete in {:.1} s: every hop went through the real gateway.",
            started.elapsed().as_secs_f64()
        ));
        if interactive {
            for line in sandbox.how_to_poke() {
                say(&line);
            }
            crate::systemd::shutdown_signal().await;
        }
    }
    sandbox.stop().await;
    toured
}

/// The simulators, the gateway and its scratch directory.
pub struct Sandbox {
    pub chat: RocketChatSim,
    pub facebook: GraphSim,
    pub gateway: Gateway,
    /// How long each hop may take.
    pub patience: Duration,
    app_secret: String,
    http: reqwest::Client,
    scratch: Scratch,
}

impl Sandbox {
    /// Starts and populates both simulators, then the gateway against them.
    pub async fn start() -> Result<Sandbox, Error> {
        Sandbox::start_with(None, None).await
    }

    /// [`start`](Self::start) with a chosen app secret and HTTP port (for load generators,
    /// which sign webhooks with a secret they are given and need a known address).
    pub async fn start_with(
        app_secret: Option<String>,
        port: Option<u16>,
    ) -> Result<Sandbox, Error> {
        let setup =
            |what: &str, err: &dyn std::fmt::Display| Error::Setup(format!("{what}: {err}"));
        let chat = RocketChatSim::start(SimOptions {
            // The set-up `check` asks for: the REST rate limiter off.
            rest_rate_limiter: false,
            ..SimOptions::default()
        })
        .await
        .map_err(|e| setup("rocket.chat simulator", &e))?;
        let bot_password = populate_rocketchat(&chat);
        let app_secret =
            app_secret.unwrap_or_else(|| hex::encode(rand::rng().random::<[u8; 16]>()));
        let facebook = GraphSim::start(APP_ID, &app_secret)
            .await
            .map_err(|e| setup("facebook simulator", &e))?;
        populate_facebook(&facebook);
        let scratch = Scratch::create().map_err(|e| setup("scratch directory", &e))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| setup("http client", &e))?;

        // The OAuth redirect needs the public URL before the gateway binds, so pick a free port
        // first; another process could take it in between, hence the retries.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = match port {
                Some(port) => port,
                None => free_port().map_err(|e| setup("free port", &e))?,
            };
            let text = config_text(
                &chat,
                &facebook,
                &bot_password,
                &app_secret,
                port,
                scratch.path(),
            );
            let config = Config::parse(&text, &scratch.path().join("bot.toml"), &|_| None)
                .map_err(|e| setup("sandbox config", &e))?;
            match Gateway::start(config).await {
                Ok(gateway) => {
                    return Ok(Sandbox {
                        chat,
                        facebook,
                        gateway,
                        patience: HOP_TIMEOUT,
                        app_secret,
                        http,
                        scratch,
                    });
                }
                Err(err) => last_error = format!("{err:#}"),
            }
        }
        Err(Error::Setup(format!(
            "the gateway did not start: {last_error}"
        )))
    }

    /// Stops the gateway (drain and flush) and the simulators, and removes the scratch directory.
    pub async fn stop(self) {
        if let Err(err) = self.gateway.shutdown().await {
            tracing::warn!(error = %format!("{err:#}"), "sandbox gateway did not stop cleanly");
        }
        self.chat.shutdown().await;
        drop(self.scratch);
    }

    /// The gateway's own base URL.
    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway.http_addr)
    }

    /// Plays the tour; each hop prints one line or ends the tour with its reason.
    pub async fn tour(&self, say: &mut dyn FnMut(&str)) -> Result<(), Error> {
        let mut tour = Tour {
            number: 0,
            patience: self.patience,
            say,
        };
        let admin_dm = self.chat.direct_room(BOT, ADMIN);
        tour.hop("simulators", async {
            Ok((format!(
                "simulators up: Rocket.Chat at {} (bot {BOT}, admin {ADMIN}, agent {SHOP_AGENT} in Support online, agent {SUPPORT_AGENT} in Sales offline), Facebook at {}",
                self.chat.url().as_str().trim_end_matches('/'),
                self.facebook.url().as_str().trim_end_matches('/')
            ), ()))
        })
        .await?;
        tour.hop("gateway ready", async {
            let deadline = Instant::now() + self.inner_wait();
            while let Err(reason) = self.gateway.health.readiness() {
                if Instant::now() >= deadline {
                    return Err(format!("the gateway is not ready: {reason}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok((
                format!(
                    "gateway up at {}, logged in to Rocket.Chat as {BOT} over the realtime API",
                    self.gateway_url()
                ),
                (),
            ))
        })
        .await?;
        let link = tour
            .hop("authorize", async {
                let reply = self
                    .command(&admin_dm, "/facebook authorize", "dialog/oauth")
                    .await?;
                let url = reply
                    .split_whitespace()
                    .find(|w| w.starts_with("http"))
                    .ok_or("the bot's answer holds no link")?;
                Ok((
                    format!(
                        "{ADMIN} → bot: /facebook authorize · bot → {ADMIN}: a Facebook Login link"
                    ),
                    url.to_owned(),
                ))
            })
            .await?;
        tour.hop("connect pages", async {
            self.approve_dialog(&link).await?;
            let said = self.bot_says(&admin_dm, "Connected pages").await?;
            Ok((format!(
                "{ADMIN} approves the Facebook dialog → Facebook redirects to the gateway's callback → bot: {}",
                first_sentence(&said)
            ), ()))
        })
        .await?;
        for (page, setting, value, expect) in [
            (SHOP_PAGE, "department", "Support", "department is now"),
            (SHOP_PAGE, "welcome", WELCOME, "welcome message updated"),
            (SHOP_PAGE, "finished", FINISHED, "finished message updated"),
            (SHOP_INSTAGRAM, "department", "Support", "department is now"),
            (SUPPORT_PAGE, "department", "Sales", "department is now"),
            (SUPPORT_PAGE, "offline", OFFLINE, "offline message updated"),
        ] {
            tour.hop("configure pages", async {
                let command = format!("/facebook edit {page} {setting} {value}");
                let said = self.command(&admin_dm, &command, expect).await?;
                Ok((
                    format!("{ADMIN} → bot: {command} · bot: {}", first_sentence(&said)),
                    (),
                ))
            })
            .await?;
        }

        let question = "Hi, has my order #1042 shipped?";
        tour.hop("customer writes", async {
            let status = self.customer_writes(SHOP_PAGE, CARLA, question).await?;
            Ok((format!(
                "Carla writes to Acme Shop on Messenger: \"{question}\" → signed webhook → gateway answers {status} once it is stored"
            ), ()))
        })
        .await?;
        let room = tour.hop("livechat room", async {
            let found = self.wait_for_room_message(question).await?;
            let served = self
                .chat
                .livechat_rooms()
                .into_iter()
                .find(|r| r.id == found)
                .and_then(|r| r.served_by)
                .unwrap_or_else(|| "nobody yet".into());
            Ok((format!(
                "the message lands in Livechat room {found} (department Support), served by {served}"
            ), found))
        })
        .await?;
        tour.hop("welcome", async {
            self.customer_receives(CARLA, WELCOME).await?;
            Ok((
                format!("Carla receives the welcome on Messenger: \"{WELCOME}\""),
                (),
            ))
        })
        .await?;
        let answer = "It left our warehouse this morning; tracking number AC-778.";
        tour.hop("agent replies", async {
            self.chat.agent_reply(SHOP_AGENT, &room, answer);
            self.customer_receives(CARLA, answer).await?;
            Ok((format!("{SHOP_AGENT} replies in the room → Carla receives it on Messenger: \"{answer}\""), ()))
        })
        .await?;
        let thanks = ":tada: Thanks for your patience!";
        let delivered = tour.hop("emoji", async {
            self.chat.agent_reply(SHOP_AGENT, &room, thanks);
            let sent = self.customer_receives_sent(CARLA, "🎉 Thanks for your patience!").await?;
            Ok((format!(
                "{SHOP_AGENT} picks 🎉 in Rocket.Chat (stored as \"{thanks}\") → Carla receives \"🎉 Thanks for your patience!\""
            ), sent))
        })
        .await?;
        tour.hop("reaction", async {
            let item = json!({
                "sender": {"id": CARLA}, "recipient": {"id": SHOP_PAGE},
                "timestamp": crate::health::now_ms(),
                "reaction": {"reaction": "love", "emoji": "❤️", "action": "react", "mid": delivered},
            });
            self.customer_sends(SHOP_PAGE, item).await?;
            let deadline = Instant::now() + self.inner_wait();
            loop {
                let reacted = self.chat.messages(&room).into_iter().any(|m| {
                    m.msg == thanks && m.reactions.get(":heart:").is_some_and(|u| u.iter().any(|u| u == BOT))
                });
                if reacted {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err("the agent's message never showed the customer's ❤️".to_owned());
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Ok((
                "Carla reacts ❤️ to it in Messenger → the agent's message in the room shows a :heart: reaction".to_owned(),
                (),
            ))
        })
        .await?;
        tour.hop("agent reaction", async {
            let asked = self
                .chat
                .messages(&room)
                .into_iter()
                .find(|m| m.token.is_some() && m.msg == question)
                .ok_or("Carla's question is not in the room")?;
            self.chat.react(SHOP_AGENT, &asked.id, ":thumbsup:", true);
            self.facebook
                .wait_for_sent(
                    |m| {
                        m.recipient == CARLA
                            && m.sender_action.as_deref() == Some("react")
                            && m.payload.as_ref().and_then(|p| p.get("reaction")) == Some(&json!("👍"))
                    },
                    self.inner_wait(),
                )
                .await
                .ok_or("the Send API never got the page's 👍 reaction")?;
            Ok((format!(
                "{SHOP_AGENT} reacts :thumbsup: to Carla's question in the room → Carla sees the page's 👍 on her message in Messenger"
            ), ()))
        })
        .await?;
        let typo = "Please send it to 5 Elm Stret";
        let fixed = "Please send it to 5 Elm Street";
        tour.hop("edit", async {
            let mid = format!("m_{}", hex::encode(rand::rng().random::<[u8; 12]>()));
            self.customer_sends(SHOP_PAGE, json!({
                "sender": {"id": CARLA}, "recipient": {"id": SHOP_PAGE},
                "timestamp": crate::health::now_ms(),
                "message": {"mid": mid, "text": typo},
            })).await?;
            self.wait_for_room_message(typo).await?;
            self.customer_sends(SHOP_PAGE, json!({
                "sender": {"id": CARLA}, "recipient": {"id": SHOP_PAGE},
                "timestamp": crate::health::now_ms(),
                "message_edit": {"mid": mid, "text": fixed, "num_edit": 1},
            })).await?;
            self.wait_for_room_message(fixed).await?;
            Ok((format!(
                "Carla writes \"{typo}\" and edits it in Messenger → the same message in the room now reads \"{fixed}\""
            ), ()))
        })
        .await?;
        tour.hop("room closed", async {
            self.chat.close_room(&room, SHOP_AGENT);
            self.customer_receives(CARLA, FINISHED).await?;
            Ok((format!("{SHOP_AGENT} closes the room → Carla receives the finished message: \"{FINISHED}\""), ()))
        })
        .await?;

        let dm = "Bonjour ! Vous avez la veste en rouge ?";
        let instagram_room = tour.hop("instagram dm", async {
            self.instagram_customer_writes(LEA, dm).await?;
            let found = self.wait_for_room_message(dm).await?;
            let visitor = self
                .chat
                .livechat_rooms()
                .into_iter()
                .find(|r| r.id == found)
                .and_then(|r| {
                    self.chat
                        .visitors()
                        .into_iter()
                        .find(|v| v.token == r.visitor_token)
                })
                .and_then(|v| v.name)
                .unwrap_or_default();
            Ok((format!(
                "Léa writes to @acme.shop on Instagram: \"{dm}\" → webhook with object \"instagram\" → Livechat room {found}, visitor \"{visitor}\""
            ), found))
        })
        .await?;
        let answer = "Oui, en S, M et L !";
        tour.hop("instagram reply", async {
            self.chat.agent_reply(SHOP_AGENT, &instagram_room, answer);
            self.customer_receives(LEA, answer).await?;
            Ok((format!(
                "{SHOP_AGENT} replies in that room → Léa receives it on Instagram, sent through Acme Shop's page: \"{answer}\""
            ), ()))
        })
        .await?;

        let late = "Hello? I need help with a return.";
        tour.hop("held", async {
            self.customer_writes(SUPPORT_PAGE, DAN, late).await?;
            self.customer_receives(DAN, OFFLINE).await?;
            self.bot_says(&admin_dm, "is held").await?;
            Ok((format!(
                "Dan writes to Acme Support while {SUPPORT_AGENT} is offline → the conversation is held, Dan gets the offline message and {ADMIN} a notice"
            ), ()))
        })
        .await?;
        tour.hop("held delivered", async {
            self.chat.set_agent_online(SUPPORT_AGENT, true);
            let rid = self.wait_for_room_message(late).await?;
            Ok((format!(
                "{SUPPORT_AGENT} comes online → the held message is delivered to room {rid}, in order, nothing lost"
            ), ()))
        })
        .await?;
        Ok(())
    }

    /// Curl lines and URLs for `--interactive`.
    pub fn how_to_poke(&self) -> Vec<String> {
        let body = webhook_body(SHOP_PAGE, CARLA, "m_poke_1", "Hello from curl");
        let signature = self.facebook.sign(body.as_bytes());
        let gateway = self.gateway_url();
        vec![
            String::new(),
            "Everything keeps running; Ctrl-C stops it. Try:".into(),
            format!(
                "  curl -s -X POST {gateway}/webhooks/messenger -H 'content-type: application/json' -H 'x-hub-signature-256: {signature}' -d '{body}'"
            ),
            format!("  curl -s {gateway}/metrics | grep omni_gateway_"),
            format!("  curl -s {gateway}/readyz"),
            format!(
                "Rocket.Chat simulator: {} · Facebook simulator: {} · app secret (signs webhooks): {}",
                self.chat.url().as_str().trim_end_matches('/'),
                self.facebook.url().as_str().trim_end_matches('/'),
                self.app_secret
            ),
            "The same mid is deduplicated. A changed body needs a new signature: printf %s \"$BODY\" | openssl dgst -sha256 -hmac <app secret>"
                .into(),
        ]
    }

    /// Inner waits end a little before the hop's own timeout, so their more precise reason wins.
    fn inner_wait(&self) -> Duration {
        self.patience.mul_f64(0.9)
    }

    /// The admin types `text` in the bot's DM; returns the bot's answer containing `expect`.
    async fn command(&self, dm: &RoomId, text: &str, expect: &str) -> Result<String, String> {
        let before = self.chat.messages(dm).len();
        let seen: HashSet<MessageId> = self.chat.messages(dm).into_iter().map(|m| m.id).collect();
        self.chat.post(ADMIN, dm, text);
        let found = self
            .chat
            .wait_for_message(
                dm,
                |m| m.username == BOT && m.msg.contains(expect) && !seen.contains(&m.id),
                self.inner_wait(),
            )
            .await;
        match found {
            Some(m) => Ok(m.msg),
            None => {
                let said: Vec<String> = self.chat.messages(dm)[before..]
                    .iter()
                    .filter(|m| m.username == BOT)
                    .map(|m| m.msg.clone())
                    .collect();
                Err(format!(
                    "the bot did not answer with \"{expect}\"; it said {said:?}"
                ))
            }
        }
    }

    async fn bot_says(&self, dm: &RoomId, expect: &str) -> Result<String, String> {
        self.chat
            .wait_for_message(
                dm,
                |m| m.username == BOT && m.msg.contains(expect),
                self.inner_wait(),
            )
            .await
            .map(|m| m.msg)
            .ok_or_else(|| format!("the bot never said \"{expect}\""))
    }

    /// Follows the login link like a browser: the dialog redirects to the gateway's callback.
    async fn approve_dialog(&self, link: &str) -> Result<(), String> {
        let dialog = self
            .http
            .get(link)
            .send()
            .await
            .map_err(|e| format!("the dialog did not open: {}", e.without_url()))?;
        let callback = dialog
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("the dialog answered {} without a redirect", dialog.status()))?
            .to_owned();
        let page = self
            .http
            .get(&callback)
            .send()
            .await
            .map_err(|e| format!("the callback did not answer: {}", e.without_url()))?;
        let status = page.status();
        let body = page.text().await.unwrap_or_default();
        if status.is_success() && body.contains("Pages connected") {
            Ok(())
        } else {
            Err(format!("the callback answered {status}: {body}"))
        }
    }

    /// Meta delivers a signed webhook with one text message; returns the HTTP status.
    pub async fn customer_writes(&self, page: &str, psid: &str, text: &str) -> Result<u16, String> {
        let mid = format!("m_{}", hex::encode(rand::rng().random::<[u8; 12]>()));
        let body = webhook_body(page, psid, &mid, text);
        let url = format!("{}/webhooks/messenger", self.gateway_url());
        let response = self
            .facebook
            .deliver_webhook(&url, body.as_bytes())
            .await
            .map_err(|e| format!("the webhook was not delivered: {}", e.without_url()))?;
        match response.status().as_u16() {
            200 => Ok(200),
            other => Err(format!("the gateway answered the webhook with {other}")),
        }
    }

    /// Meta delivers a signed Instagram webhook (`object: "instagram"`, keyed by the account)
    /// with one Direct message.
    async fn instagram_customer_writes(&self, igsid: &str, text: &str) -> Result<(), String> {
        let now = crate::health::now_ms();
        let mid = format!("aWdf{}", hex::encode(rand::rng().random::<[u8; 12]>()));
        let body = json!({"object": "instagram", "entry": [{"id": SHOP_INSTAGRAM, "time": now, "messaging": [{
            "sender": {"id": igsid}, "recipient": {"id": SHOP_INSTAGRAM}, "timestamp": now,
            "message": {"mid": mid, "text": text},
        }]}]});
        let url = format!("{}/webhooks/messenger", self.gateway_url());
        let response = self
            .facebook
            .deliver_webhook(&url, body.to_string().as_bytes())
            .await
            .map_err(|e| format!("the webhook was not delivered: {}", e.without_url()))?;
        match response.status().as_u16() {
            200 => Ok(()),
            other => Err(format!("the gateway answered the webhook with {other}")),
        }
    }

    /// Meta delivers a signed webhook with one `messaging` item.
    async fn customer_sends(&self, page: &str, item: serde_json::Value) -> Result<(), String> {
        let now = crate::health::now_ms();
        let body =
            json!({"object": "page", "entry": [{"id": page, "time": now, "messaging": [item]}]});
        let url = format!("{}/webhooks/messenger", self.gateway_url());
        let response = self
            .facebook
            .deliver_webhook(&url, body.to_string().as_bytes())
            .await
            .map_err(|e| format!("the webhook was not delivered: {}", e.without_url()))?;
        match response.status().as_u16() {
            200 => Ok(()),
            other => Err(format!("the gateway answered the webhook with {other}")),
        }
    }

    /// Waits until the Send API got this text for the customer; returns Meta's `message_id`.
    async fn customer_receives_sent(&self, psid: &str, text: &str) -> Result<String, String> {
        self.facebook
            .wait_for_sent(
                |m| m.recipient == psid && m.text.as_deref() == Some(text),
                self.inner_wait(),
            )
            .await
            .and_then(|m| m.message_id)
            .ok_or_else(|| format!("the Send API never got \"{text}\" for the customer"))
    }

    /// Waits until a Livechat room holds a visitor message with this text.
    async fn wait_for_room_message(&self, text: &str) -> Result<RoomId, String> {
        let deadline = Instant::now() + self.inner_wait();
        loop {
            for room in self.chat.livechat_rooms() {
                if self
                    .chat
                    .messages(&room.id)
                    .iter()
                    .any(|m| m.token.is_some() && m.msg == text)
                {
                    return Ok(room.id);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("no Livechat room received \"{text}\""));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn customer_receives(&self, psid: &str, text: &str) -> Result<(), String> {
        self.facebook
            .wait_for_sent(
                |m| m.recipient == psid && m.text.as_deref() == Some(text),
                self.inner_wait(),
            )
            .await
            .map(|_| ())
            .ok_or_else(|| format!("the Send API never got \"{text}\" for the customer"))
    }
}

/// Numbers the hops and stops at the first failure.
struct Tour<'a> {
    number: usize,
    patience: Duration,
    say: &'a mut dyn FnMut(&str),
}

impl Tour<'_> {
    /// Runs one hop: `work` yields the line to print and a value for later hops.
    async fn hop<T>(
        &mut self,
        name: &'static str,
        work: impl Future<Output = Result<(String, T), String>>,
    ) -> Result<T, Error> {
        self.number += 1;
        let outcome = match tokio::time::timeout(self.patience, work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "nothing happened within {} s",
                self.patience.as_secs_f64()
            )),
        };
        match outcome {
            Ok((line, value)) => {
                (self.say)(&format!("{:>2}. {line}", self.number));
                Ok(value)
            }
            Err(reason) => Err(Error::Hop {
                number: self.number,
                name,
                reason,
            }),
        }
    }
}

/// The bot, an admin, two agents in two departments; `/facebook …` enabled. Returns the bot's
/// password.
fn populate_rocketchat(chat: &RocketChatSim) -> String {
    chat.set_setting("Message_AllowUnrecognizedSlashCommand", json!(true));
    let bot_password = random_password();
    chat.add_user(BOT, &bot_password, &["bot"]);
    chat.grant_permission("bot", "view-full-other-user-info");
    chat.grant_permission("bot", "view-livechat-departments");
    // Customers' reactions show as the bot's reactions in Omnichannel rooms.
    chat.grant_permission("bot", "view-livechat-rooms");
    chat.add_user(ADMIN, &random_password(), &["user", "admin"]);
    chat.add_user(SHOP_AGENT, &random_password(), &["user", "livechat-agent"]);
    chat.add_user(
        SUPPORT_AGENT,
        &random_password(),
        &["user", "livechat-agent"],
    );
    chat.add_department("Support", &[SHOP_AGENT]);
    chat.add_department("Sales", &[SUPPORT_AGENT]);
    chat.set_agent_online(SHOP_AGENT, true);
    bot_password
}

/// A Facebook user managing two pages, each with a customer who just wrote; the shop page's
/// linked Instagram account, with a customer too.
fn populate_facebook(facebook: &GraphSim) {
    facebook.add_user(FB_ADMIN, "Alice Admin");
    for (page, name) in [(SHOP_PAGE, "Acme Shop"), (SUPPORT_PAGE, "Acme Support")] {
        facebook.add_page(FB_ADMIN, page, name, &["MESSAGING", "MODERATE"]);
    }
    facebook.set_dialog_user(FB_ADMIN);
    facebook.add_psid(SHOP_PAGE, CARLA, "Carla", "Customer");
    facebook.add_psid(SUPPORT_PAGE, DAN, "Dan", "Doe");
    facebook.link_instagram(SHOP_PAGE, SHOP_INSTAGRAM, "acme.shop", "Acme Shop");
    facebook.add_igsid(SHOP_INSTAGRAM, LEA, Some("Léa Martin"), "lea.mrtn");
}

/// A password for a simulated user: the simulator needs one, nobody types it.
fn random_password() -> String {
    hex::encode(rand::rng().random::<[u8; 12]>())
}

fn config_text(
    chat: &RocketChatSim,
    facebook: &GraphSim,
    password: &str,
    app_secret: &str,
    port: u16,
    dir: &Path,
) -> String {
    let graph = facebook.url();
    let graph = graph.as_str().trim_end_matches('/');
    format!(
        r#"
[rocketchat]
url = "{rc}"
username = "{BOT}"
password = "{password}"
keepalive_ms = 5000
dead_link_ms = 15000

[facebook]
app_id = "{APP_ID}"
app_secret = "{app_secret}"
verify_token = "sandbox-verify-token"
graph_url = "{graph}"
dialog_url = "{graph}"

[http]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[store]
path = "{store}"
"#,
        rc = chat.url().as_str().trim_end_matches('/'),
        store = dir.join("data").display(),
    )
}

/// One Messenger text message as Meta delivers it.
pub fn webhook_body(page: &str, psid: &str, mid: &str, text: &str) -> String {
    let now = crate::health::now_ms();
    json!({
        "object": "page",
        "entry": [{
            "id": page,
            "time": now,
            "messaging": [{
                "sender": { "id": psid },
                "recipient": { "id": page },
                "timestamp": now,
                "message": { "mid": mid, "text": text },
            }],
        }],
    })
    .to_string()
}

fn first_sentence(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.find(". ") {
        Some(end) => line[..=end].to_owned(),
        None => line.to_owned(),
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A private temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> std::io::Result<Scratch> {
        let name = format!(
            "omni-gateway-sandbox-{}-{}",
            std::process::id(),
            hex::encode(rand::rng().random::<[u8; 6]>())
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path)?;
        Ok(Scratch(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: a leftover directory in /tmp is harmless.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
