//! Facebook's side of the end-to-end tests: the Graph simulator with one page, a connected page in
//! the gateway's store, signed webhook deliveries, and a tiny CDN that serves customer files the
//! way Meta's attachment URLs do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use omni_gateway::config::Config;
use omni_gateway::daemon::Gateway;
use omni_gateway::ids::PageId;
use omni_gateway::messenger::graph::{GraphClient, GraphSettings};
use omni_gateway::store::{Department, Page, PageStatus};
use omni_sim::graph::GraphSim;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::{APP_ID, APP_SECRET, Chat, Running, config_text_with};

pub const PAGE_ID: &str = "1001";
pub const PAGE_NAME: &str = "Acme Shop";
pub const OWNER: &str = "fb-owner";
pub const WELCOME: &str = "Hi! An agent will be with you shortly.";
pub const OFFLINE: &str = "We are offline right now; we will answer as soon as we are back.";

/// The Graph simulator with page [`PAGE_ID`] owned by [`OWNER`], and a CDN for attachments.
pub struct Facebook {
    pub sim: GraphSim,
    pub cdn: Cdn,
}

impl Facebook {
    pub async fn start() -> Facebook {
        let sim = GraphSim::start(APP_ID, APP_SECRET)
            .await
            .expect("graph simulator starts");
        sim.add_user(OWNER, "Olivia Owner");
        sim.add_page(OWNER, PAGE_ID, PAGE_NAME, &["MESSAGING", "MODERATE"]);
        sim.set_dialog_user(OWNER);
        Facebook {
            sim,
            cdn: Cdn::start().await,
        }
    }

    /// A live, never-expiring page token, obtained the way `authorize` obtains one: the login
    /// dialog, the code exchange, the long-lived exchange, then `/me/accounts`.
    pub async fn page_token(&self) -> SecretString {
        const REDIRECT: &str = "http://127.0.0.1:8080/oauth/facebook/callback";
        let client = GraphClient::new(GraphSettings {
            graph_url: self.sim.url(),
            dialog_url: self.sim.url(),
            api_version: "v23.0".into(),
            app_id: APP_ID.into(),
            app_secret: SecretString::from(APP_SECRET),
            timeout: Duration::from_secs(5),
        })
        .expect("graph client builds");
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest builds");
        let answer = browser
            .get(client.login_dialog_url(REDIRECT, "test-state", false))
            .send()
            .await
            .expect("dialog answers");
        let location = answer
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| url::Url::parse(l).ok())
            .expect("dialog redirects");
        let code = location
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("dialog approves");
        let short = client
            .exchange_code(&code, REDIRECT)
            .await
            .expect("code exchange");
        let long = client
            .exchange_long_lived(&short.access_token)
            .await
            .expect("long-lived exchange");
        let accounts = client.accounts(&long.access_token).await.expect("accounts");
        accounts
            .into_iter()
            .find(|a| a.id.as_str() == PAGE_ID)
            .map(|a| a.access_token)
            .expect("the page is among the accounts")
    }
}

/// A gateway against both simulators, with its own throw-away store.
pub async fn start_gateway(chat: &Chat, fb: &Facebook) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config_text_with(
        chat.sim.url().as_str().trim_end_matches('/'),
        fb.sim.url().as_str(),
        &dir.path().join("data"),
        &crate::password_credentials(),
        "",
    );
    let config = Config::parse(&text, &dir.path().join("bot.toml"), &|_| None)
        .expect("test config is valid");
    let gateway = Gateway::start(config).await.expect("gateway starts");
    Running { gateway, dir }
}

/// How a test page is set up.
pub struct PageSetup {
    pub department: Option<Department>,
    pub welcome: Option<String>,
    pub offline: Option<String>,
    pub subscribers: Vec<String>,
}

impl Default for PageSetup {
    fn default() -> Self {
        PageSetup {
            department: None,
            welcome: Some(WELCOME.into()),
            offline: Some(OFFLINE.into()),
            subscribers: vec!["alice".into()],
        }
    }
}

/// The page record `authorize` would have stored: token, connected, settings.
pub async fn page_record(fb: &Facebook, setup: PageSetup) -> Page {
    Page {
        department: setup.department,
        welcome: setup.welcome,
        offline: setup.offline,
        token: Some(fb.page_token().await),
        grant: Some(OWNER.into()),
        status: PageStatus::Connected,
        subscribers: setup.subscribers,
        connected_by: Some("alice".into()),
        connected_at_ms: Some(now_ms()),
        ..Page::new(PageId::new(PAGE_ID), PAGE_NAME.into())
    }
}

/// Connects [`PAGE_ID`] in a running gateway.
pub async fn connect_page(gateway: &Gateway, fb: &Facebook, setup: PageSetup) {
    let page = page_record(fb, setup).await;
    gateway.store.put_page(&page).expect("page stored");
    gateway.store.sync().await.expect("page flushed");
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A customer's text message as one `messaging[]` item.
pub fn text_event(psid: &str, mid: &str, timestamp_ms: u64, text: &str) -> Value {
    json!({
        "sender": {"id": psid},
        "recipient": {"id": PAGE_ID},
        "timestamp": timestamp_ms,
        "message": {"mid": mid, "text": text}
    })
}

/// A customer's message with one attachment of `kind` at `url`.
pub fn attachment_event(psid: &str, mid: &str, timestamp_ms: u64, kind: &str, url: &str) -> Value {
    json!({
        "sender": {"id": psid},
        "recipient": {"id": PAGE_ID},
        "timestamp": timestamp_ms,
        "message": {"mid": mid, "attachments": [{"type": kind, "payload": {"url": url}}]}
    })
}

/// A webhook body carrying `items` for `page`.
pub fn body_for(page: &str, items: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "page",
        "entry": [{"id": page, "time": now_ms(), "messaging": items}]
    }))
    .expect("json serializes")
}

/// A webhook body carrying `items` for [`PAGE_ID`].
pub fn body(items: &[Value]) -> Vec<u8> {
    body_for(PAGE_ID, items)
}

/// POSTs `body` to the gateway's webhook, signed with the app secret as Meta signs.
pub async fn post_webhook(fb: &Facebook, addr: SocketAddr, body: &[u8]) -> StatusCode {
    let answer = fb
        .sim
        .deliver_webhook(&format!("http://{addr}/webhooks/messenger"), body)
        .await
        .expect("gateway answers the webhook");
    StatusCode::from_u16(answer.status().as_u16()).expect("a valid status")
}

/// File name → (content type, bytes).
type Files = Arc<Mutex<HashMap<String, (String, Vec<u8>)>>>;

/// Serves files at `/cdn/<name>` with a content type, like Meta's expiring attachment URLs.
pub struct Cdn {
    addr: SocketAddr,
    files: Files,
}

impl Cdn {
    async fn start() -> Cdn {
        let files = Files::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback bind");
        let addr = listener.local_addr().expect("bound address");
        let app = Router::new()
            .route("/cdn/{name}", get(serve_file))
            .with_state(files.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Cdn { addr, files }
    }

    /// Publishes a file and returns its URL.
    pub fn put(&self, name: &str, mime: &str, bytes: Vec<u8>) -> String {
        self.files
            .lock()
            .unwrap()
            .insert(name.to_owned(), (mime.to_owned(), bytes));
        self.url(name)
    }

    /// The URL a file has (or would have) on the CDN.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/cdn/{name}?_nc_oc=expiring", self.addr)
    }
}

async fn serve_file(State(files): State<Files>, Path(name): Path<String>) -> Response {
    match files.lock().unwrap().get(&name) {
        Some((mime, bytes)) => {
            ([(header::CONTENT_TYPE, mime.clone())], bytes.clone()).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
