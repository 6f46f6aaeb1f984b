//! The pages world: both simulators, a gateway against them, and a browser that walks the
//! Facebook Login dialog, for the tests of connecting pages.

use std::time::Duration;

use omni_gateway::health::now_ms;
use omni_gateway::ids::PageId;
use omni_gateway::messenger::graph::SUBSCRIBED_FIELDS;
use omni_gateway::store::Page;
use reqwest::StatusCode;
use url::Url;

use omni_gateway::config::Config;
use omni_gateway::daemon::Gateway;

use crate::{
    APP_ID, Chat, Facebook, Running, config_text_with, eventually, password_credentials,
    start_gateway_with, until_ready,
};

/// The two simulators, a gateway against them, and a browser that does not follow redirects.
pub struct World {
    pub chat: Chat,
    pub fb: Facebook,
    pub running: Running,
    /// The gateway's `public_url`, without a trailing slash.
    pub public_url: String,
    browser: reqwest::Client,
}

impl World {
    pub async fn start(extra_facebook: &str) -> World {
        let chat = Chat::start().await;
        chat.sim
            .grant_permission("bot", "view-livechat-departments");
        let fb = Facebook::start().await;
        let running =
            start_gateway_with(&chat, Some(&fb), &password_credentials(), extra_facebook).await;
        World::around(chat, fb, running, "http://127.0.0.1:8080").await
    }

    /// Like [`World::start`], but the gateway's `public_url` is its own listening address, so
    /// the Graph simulator can reach it as Meta reaches a public gateway (callback
    /// verification of app-level webhooks).
    pub async fn start_reachable(extra_facebook: &str) -> World {
        let chat = Chat::start().await;
        chat.sim
            .grant_permission("bot", "view-livechat-departments");
        let fb = Facebook::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        // A port the OS just handed out and took back: free unless something races for it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let public_url = format!("http://127.0.0.1:{port}");
        let text = config_text_with(
            chat.sim.url().as_str().trim_end_matches('/'),
            fb.sim.url().as_str().trim_end_matches('/'),
            &dir.path().join("data"),
            &password_credentials(),
            extra_facebook,
        )
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace(
            "public_url = \"http://127.0.0.1:8080\"",
            &format!("public_url = \"{public_url}\""),
        );
        let config = Config::parse(&text, &dir.path().join("bot.toml"), &|_| None)
            .expect("test config is valid");
        let gateway = Gateway::start(config).await.expect("gateway starts");
        World::around(chat, fb, Running { gateway, dir }, &public_url).await
    }

    async fn around(chat: Chat, fb: Facebook, running: Running, public_url: &str) -> World {
        until_ready(&running.gateway).await;
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        World {
            chat,
            fb,
            running,
            public_url: public_url.to_owned(),
            browser,
        }
    }

    /// Alice sends `text` in her DM with the bot; returns the bot's next message there.
    pub async fn ask(&self, text: &str) -> String {
        let dm = &self.chat.alice_dm;
        let before = self.chat.bot_messages(dm).len();
        self.chat.sim.post("alice", dm, text);
        eventually(&format!("the bot's answer to {text:?}"), || {
            self.chat.bot_messages(dm).len() > before
        })
        .await;
        self.chat.bot_messages(dm).swap_remove(before)
    }

    /// Asks for a Login link and returns it, checking what it carries.
    pub async fn login_link(&self) -> Url {
        let reply = self.ask("/facebook authorize").await;
        let link = reply
            .split_whitespace()
            .find(|w| w.starts_with("http"))
            .unwrap_or_else(|| panic!("no link in {reply:?}"));
        let link = Url::parse(link).unwrap();
        assert!(reply.contains("15 minutes"), "{reply}");
        assert_eq!(link.path(), "/v23.0/dialog/oauth");
        let param = |name: &str| query(&link, name).unwrap_or_else(|| panic!("{name} in {link}"));
        assert_eq!(param("client_id"), APP_ID);
        assert_eq!(param("response_type"), "code");
        assert_eq!(
            param("redirect_uri"),
            format!("{}/oauth/facebook/callback", self.public_url)
        );
        assert_eq!(
            param("scope"),
            "pages_show_list,pages_messaging,pages_manage_metadata,pages_read_engagement,business_management,instagram_basic,instagram_manage_messages,instagram_manage_comments"
        );
        // 128 bits are 22 characters of base64.
        assert!(param("state").len() >= 22, "state too short: {link}");
        link
    }

    /// The simulated browser opens the dialog; returns the gateway URL the dialog redirects to
    /// (the public URL's path and query on the gateway's real address).
    pub async fn through_dialog(&self, link: &Url) -> Url {
        let answer = self.browser.get(link.clone()).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::FOUND);
        let location = answer.headers()["location"].to_str().unwrap();
        let location = Url::parse(location).unwrap();
        assert_eq!(location.path(), "/oauth/facebook/callback");
        self.on_gateway(location.path(), location.query())
    }

    pub fn on_gateway(&self, path: &str, query: Option<&str>) -> Url {
        let mut url =
            Url::parse(&format!("http://{}{path}", self.running.gateway.http_addr)).unwrap();
        url.set_query(query);
        url
    }

    /// Calls the gateway's callback as the browser; returns the status and the HTML.
    pub async fn callback(&self, url: &Url) -> (StatusCode, String) {
        let answer = self.browser.get(url.clone()).send().await.unwrap();
        let status = answer.status();
        (status, answer.text().await.unwrap())
    }

    /// The whole authorize round trip; returns the success HTML.
    pub async fn connect_pages(&self) -> String {
        let link = self.login_link().await;
        let callback = self.through_dialog(&link).await;
        let (status, html) = self.callback(&callback).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        html
    }

    pub fn page(&self, id: &str) -> Page {
        self.running
            .gateway
            .store
            .page(&PageId::new(id))
            .unwrap()
            .unwrap_or_else(|| panic!("page {id} is stored"))
    }

    pub fn stored_pages(&self) -> Vec<Page> {
        self.running.gateway.store.pages().unwrap()
    }

    /// Messages the bot sent alice (replies and notices share her DM) containing `needle`.
    pub fn told_alice(&self, needle: &str) -> usize {
        self.chat
            .bot_messages(&self.chat.alice_dm)
            .iter()
            .filter(|m| m.contains(needle))
            .count()
    }

    /// A Messenger user writes to page 1001, delivered to the gateway as Meta would.
    pub async fn customer_writes(&self, psid: &str, mid: &str, text: &str) {
        let ts = now_ms();
        let body = serde_json::json!({
            "object": "page",
            "entry": [{ "id": "1001", "time": ts, "messaging": [{
                "sender": { "id": psid }, "recipient": { "id": "1001" }, "timestamp": ts,
                "message": { "mid": mid, "text": text },
            }]}],
        });
        let url = format!(
            "http://{}/webhooks/messenger",
            self.running.gateway.http_addr
        );
        let answer = self
            .fb
            .sim
            .deliver_webhook(&url, body.to_string().as_bytes())
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }

    pub async fn stop(self) {
        self.running.gateway.shutdown().await.unwrap();
    }
}

pub fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub fn all_fields() -> Option<Vec<String>> {
    Some(SUBSCRIBED_FIELDS.iter().map(|f| (*f).to_owned()).collect())
}

pub fn with_query(url: &Url, pairs: &[(&str, &str)]) -> Url {
    let mut url = url.clone();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url
}
