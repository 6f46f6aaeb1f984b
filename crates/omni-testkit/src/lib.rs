//! omni-gateway's test kit, shared by its tests and benches: the simulators set up as a world
//! (a Rocket.Chat with the bot and two admins, a Graph API with pages), a bot.toml written for
//! them, a gateway started against them and waited on until ready, log capture, signed webhook
//! bodies, and the real binary as a child process.

pub mod bench;
pub mod daemon;
pub mod instagram;
pub mod logs;
pub mod messenger;
pub mod pages;
pub mod traffic;
pub mod webhook;

use std::path::Path;
use std::time::Duration;

use omni_gateway::config::Config;
use omni_gateway::daemon::Gateway;
use omni_sim::graph::{AppSubscription, GraphSim};
use omni_sim::ids::{RoomId, UserId};
use omni_sim::rocketchat::{RocketChatSim, SimMessage, SimOptions};
use tempfile::TempDir;

pub const BOT: &str = "facebook.bot";
pub const BOT_PASSWORD: &str = "bot-s3cret";
pub const APP_ID: &str = "1234567890";
pub const APP_SECRET: &str = "app-secret-for-tests";
pub const VERIFY_TOKEN: &str = "verify-token-for-tests";
/// How long a test waits for something that should happen at once (generous: CI shares two
/// cores, and a failing test is the only one that waits this long).
pub const PATIENCE: Duration = Duration::from_secs(20);

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
        Chat::start_with(SimOptions {
            // The set-up `check` asks for: the REST limiter off (`API_Enable_Rate_Limiter`).
            // Tests of the limits start their own with `Chat::start_with`.
            rest_rate_limiter: false,
            ..SimOptions::default()
        })
        .await
    }

    /// The same world on a simulator with these options (`ping_idle` is shortened to 400 ms).
    pub async fn start_with(options: SimOptions) -> Chat {
        let sim = RocketChatSim::start(SimOptions {
            ping_idle: Duration::from_millis(400),
            ..options
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

/// The Facebook account that logs in through the simulated dialog.
pub const FB_ADMIN: &str = "fb-alice";
/// The two pages `FB_ADMIN` manages, as (id, name).
pub const PAGES: [(&str, &str); 2] = [("1001", "Acme Bakery"), ("1002", "Acme Books")];

/// A Graph API simulator for the test app, with `FB_ADMIN` logged in to the simulated browser
/// and managing the two `PAGES`, and the app's page webhooks already set up in the dashboard
/// for the test gateway's `public_url`.
pub struct Facebook {
    pub sim: GraphSim,
}

impl Facebook {
    pub async fn start() -> Facebook {
        let sim = GraphSim::start(APP_ID, APP_SECRET)
            .await
            .expect("graph simulator starts");
        sim.add_user(FB_ADMIN, "Alice Admin");
        for (id, name) in PAGES {
            sim.add_page(FB_ADMIN, id, name, &["MESSAGING", "MODERATE", "MANAGE"]);
        }
        sim.set_dialog_user(FB_ADMIN);
        sim.set_app_subscription(Some(AppSubscription {
            callback_url: "http://127.0.0.1:8080/webhooks/messenger".into(),
            fields: omni_gateway::messenger::graph::SUBSCRIBED_FIELDS
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
            verify_token: VERIFY_TOKEN.into(),
        }));
        Facebook { sim }
    }
}

/// A bot.toml for the simulators, with short timers so link failures are noticed quickly.
pub fn config_text(rocketchat_url: &str, store: &Path, extra_rocketchat: &str) -> String {
    config_text_with(
        rocketchat_url,
        "http://127.0.0.1:9",
        store,
        extra_rocketchat,
        "",
    )
}

/// [`config_text`] with the Graph API at `graph_url` and extra `[facebook]` lines.
pub fn config_text_with(
    rocketchat_url: &str,
    graph_url: &str,
    store: &Path,
    extra_rocketchat: &str,
    extra_facebook: &str,
) -> String {
    let rocketchat = format!(
        "{extra_rocketchat}
admins = [\"carol\"]
admin_roles = [\"admin\", \"livechat-manager\"]
keepalive_ms = 200
dead_link_ms = 1500"
    );
    let facebook = format!("api_version = \"v23.0\"\n{extra_facebook}");
    toml_for(
        rocketchat_url,
        graph_url,
        store,
        &rocketchat,
        &facebook,
        0,
        8080,
    )
}

/// A bot.toml for a daemon of its own (a child process, a benchmark): password login, the
/// gateway's default timers, listening on `port` of 127.0.0.1 (0: any free port), which is also
/// its public URL.
pub fn config_text_on_port(
    rocketchat_url: &str,
    graph_url: &str,
    store: &Path,
    port: u16,
) -> String {
    let credentials = password_credentials();
    let public_port = if port == 0 { 8080 } else { port };
    toml_for(
        rocketchat_url,
        graph_url,
        store,
        &credentials,
        "",
        port,
        public_port,
    )
}

/// The one bot.toml writer: both simulators' URLs, the test app, a store, and extra lines for
/// the `[rocketchat]` and `[facebook]` tables.
fn toml_for(
    rocketchat_url: &str,
    graph_url: &str,
    store: &Path,
    rocketchat: &str,
    facebook: &str,
    listen_port: u16,
    public_port: u16,
) -> String {
    format!(
        r#"
[rocketchat]
url = "{rocketchat_url}"
username = "{BOT}"
{rocketchat}

[facebook]
app_id = "{APP_ID}"
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
graph_url = "{graph_url}"
dialog_url = "{graph_url}"
{facebook}

[http]
listen = "127.0.0.1:{listen_port}"
public_url = "http://127.0.0.1:{public_port}"

[store]
path = "{store}"
"#,
        rocketchat_url = rocketchat_url.trim_end_matches('/'),
        graph_url = graph_url.trim_end_matches('/'),
        store = store.display()
    )
}

/// A gateway running against `chat`, with its own throw-away store.
pub struct Running {
    pub gateway: Gateway,
    pub dir: TempDir,
}

impl Running {
    /// Shuts the gateway down as SIGTERM would, and fails the test if the shutdown fails.
    pub async fn stop(self) {
        self.gateway.shutdown().await.expect("clean shutdown");
    }
}

pub async fn start_gateway(chat: &Chat, credentials: &str) -> Running {
    start_gateway_with(chat, None, credentials, "").await
}

/// A gateway against `chat` and, when given, the Graph simulator of `facebook`, with extra
/// `[facebook]` lines (e.g. `health_check_secs = 1`).
pub async fn start_gateway_with(
    chat: &Chat,
    facebook: Option<&Facebook>,
    credentials: &str,
    extra_facebook: &str,
) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let graph_url = facebook.map_or_else(
        || "http://127.0.0.1:9".to_owned(),
        |fb| fb.sim.url().as_str().trim_end_matches('/').to_owned(),
    );
    let text = config_text_with(
        chat.sim.url().as_str().trim_end_matches('/'),
        &graph_url,
        &dir.path().join("data"),
        credentials,
        extra_facebook,
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
