//! Shared set-up for the end-to-end tests: the simulators, a gateway configured against them, and
//! helpers that wait for what a person would see.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::time::Duration;

use omni_gateway::config::Config;
use omni_gateway::daemon::Gateway;
use omni_gateway::ids::{RoomId, UserId};
use omni_gateway::sim::rocketchat::{RocketChatSim, SimMessage, SimOptions};
use tempfile::TempDir;

pub const BOT: &str = "facebook.bot";
pub const BOT_PASSWORD: &str = "bot-s3cret";
/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A Rocket.Chat simulator with the bot, an admin (alice, role admin), a plain user (bob) and
/// their DMs with the bot.
pub struct Chat {
    pub sim: RocketChatSim,
    pub bot: UserId,
    pub alice_dm: RoomId,
    pub bob_dm: RoomId,
}

impl Chat {
    pub async fn start() -> Chat {
        let sim = RocketChatSim::start(SimOptions {
            ping_idle: Duration::from_millis(400),
            ..SimOptions::default()
        })
        .await
        .expect("simulator starts");
        let bot = sim.add_user(BOT, BOT_PASSWORD, &["bot"]);
        sim.grant_permission("bot", "view-full-other-user-info");
        sim.add_user("alice", "alice-pw", &["user", "admin"]);
        sim.add_user("bob", "bob-pw", &["user"]);
        let alice_dm = sim.direct_room(BOT, "alice");
        let bob_dm = sim.direct_room(BOT, "bob");
        Chat {
            sim,
            bot,
            alice_dm,
            bob_dm,
        }
    }

    /// Waits for the bot's next message in `rid` that satisfies `pred`.
    pub async fn bot_says(&self, rid: &RoomId, pred: impl Fn(&str) -> bool) -> SimMessage {
        self.sim
            .wait_for_message(rid, |m| m.username == BOT && pred(&m.msg), PATIENCE)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "the bot did not answer as expected in {rid}; room has: {:#?}",
                    self.sim.messages(rid)
                )
            })
    }

    /// Everything the bot said in `rid`.
    pub fn bot_messages(&self, rid: &RoomId) -> Vec<String> {
        self.sim
            .messages(rid)
            .into_iter()
            .filter(|m| m.username == BOT)
            .map(|m| m.msg)
            .collect()
    }
}

/// A bot.toml for the simulators, with short timers so link failures are noticed quickly.
pub fn config_text(rocketchat_url: &str, store: &Path, extra_rocketchat: &str) -> String {
    config_text_with_graph(
        rocketchat_url,
        "http://127.0.0.1:9",
        store,
        extra_rocketchat,
    )
}

/// [`config_text`] with the Graph API (and its login dialog) at `graph_url`.
pub fn config_text_with_graph(
    rocketchat_url: &str,
    graph_url: &str,
    store: &Path,
    extra_rocketchat: &str,
) -> String {
    format!(
        r#"
[rocketchat]
url = "{rocketchat_url}"
username = "{BOT}"
{extra_rocketchat}
admins = ["carol"]
admin_roles = ["admin", "livechat-manager"]
keepalive_ms = 200
dead_link_ms = 1500

[facebook]
app_id = "1234567890"
app_secret = "app-secret-for-tests"
verify_token = "verify-token-for-tests"
graph_url = "{graph_url}"
dialog_url = "{graph_url}"
api_version = "v23.0"

[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8080"

[store]
path = "{store}"
"#,
        store = store.display()
    )
}

/// A gateway running against `chat`, with its own throw-away store.
pub struct Running {
    pub gateway: Gateway,
    pub dir: TempDir,
}

pub async fn start_gateway(chat: &Chat, credentials: &str) -> Running {
    start_gateway_with_graph(chat, credentials, "http://127.0.0.1:9").await
}

/// [`start_gateway`] with the Graph API at `graph_url` (a `GraphSim`'s URL).
pub async fn start_gateway_with_graph(chat: &Chat, credentials: &str, graph_url: &str) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config_text_with_graph(
        chat.sim.url().as_str().trim_end_matches('/'),
        graph_url.trim_end_matches('/'),
        &dir.path().join("data"),
        credentials,
    );
    let config = Config::parse(&text, &dir.path().join("bot.toml"), &|_| None)
        .expect("test config is valid");
    let gateway = Gateway::start(config).await.expect("gateway starts");
    Running { gateway, dir }
}

pub fn password_credentials() -> String {
    format!("password = \"{BOT_PASSWORD}\"")
}

/// Waits until the gateway reports ready (logged in, streams subscribed).
pub async fn until_ready(gateway: &Gateway) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while gateway.health.readiness().is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway not ready: {:?}",
            gateway.health.readiness()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `cond` until it holds or the patience runs out.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
