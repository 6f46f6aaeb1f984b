//! A simulated Facebook on `127.0.0.1:0`: the Graph API endpoints the gateway calls and the
//! Facebook Login dialog, both under `/{vNN.N}/…` on one address. It is strict like Meta: tokens
//! are checked on every call and die when Meta would kill them, the Send API enforces the
//! 24-hour and 7-day windows, and every error has Meta's `{"error":{…}}` shape and status.
//!
//! Decisions where Meta's documentation is silent (`docs/messenger.md` §11):
//! - `DELETE /me/permissions` removes the whole grant: the person's user tokens and every page
//!   token obtained through them die with 190/458, as a de-authorized app loses its tokens.
//! - Text longer than 2000 characters is refused; exactly 2000 passes, as Meta's own error text
//!   ("must be less than or equal to 2000") says.
//! - `appsecret_proof` is not checked on calls made with the app token `{app-id}|{secret}`: the
//!   token carries the secret, and a wrong secret is refused by the token check (190).
//! - `MESSAGE_TAG`/`HUMAN_AGENT` from an app without the Human Agent feature is refused with a
//!   code 10 permission error without the window subcode; with it, up to 7 days pass.

mod routes;
mod state;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::ListenerExt;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use url::Url;

pub use state::{AppSubscription, GraphSimStats, PAGE_INBOX_APP_ID};

use routes::Shared;
use state::State;

/// What the simulated person does in the login dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogDecision {
    /// Grants the requested permissions: redirect with `code` and `state`.
    Approve,
    /// Cancels: redirect with `error=access_denied&error_reason=user_denied&…` and `state`.
    Deny,
}

/// A fault to inject into the next matching requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimError {
    /// A Graph error with this code, subcode and HTTP status, and Meta's text for the code.
    Graph {
        code: i64,
        subcode: Option<i64>,
        http_status: u16,
    },
    /// A rate-limit error (code 4, 17, 32, 613, 80001…) whose `X-Business-Use-Case-Usage` header
    /// says how many minutes until access is regained.
    Throttled { code: i64, regain_minutes: u64 },
    /// A bare 5xx with an HTML body, as from Meta's edge.
    Http5xx(u16),
    /// Answer normally, but only after this long.
    Delay(Duration),
}

/// A file uploaded with a multipart Send API request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentFile {
    pub name: Option<String>,
    pub mime: Option<String>,
    pub bytes: Vec<u8>,
}

/// One accepted `POST /{page}/messages`: a message or a sender action.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SentMessage {
    pub page: String,
    /// The page token the request used.
    pub token: String,
    pub recipient: String,
    pub messaging_type: Option<String>,
    pub tag: Option<String>,
    pub text: Option<String>,
    /// `message.attachment` as sent.
    pub attachment: Option<serde_json::Value>,
    pub metadata: Option<String>,
    pub sender_action: Option<String>,
    /// A sender action's `payload` (`react` / `unreact`: `message_id`, `reaction`).
    pub payload: Option<serde_json::Value>,
    pub file: Option<SentFile>,
    /// The `message_id` the simulator answered with (none for sender actions).
    pub message_id: Option<String>,
    /// Sent to an Instagram customer (an IGSID of the page's linked account); `file` is then
    /// the upload its `attachment_id` names.
    pub instagram: bool,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Stops the server when the last handle is dropped.
struct ServerTask(JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A handle on a running simulator; clones share it.
#[derive(Clone)]
pub struct GraphSim {
    shared: Arc<Shared>,
    url: Url,
    http: reqwest::Client,
    _task: Arc<ServerTask>,
}

impl GraphSim {
    /// Starts the simulator for one app on a fresh loopback port.
    pub async fn start(app_id: &str, app_secret: &str) -> std::io::Result<GraphSim> {
        // reqwest is built without a default TLS provider; an error means one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let url = Url::parse(&format!("http://{addr}/")).map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(app_id, app_secret)),
            sent: Notify::new(),
            base: url.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(std::io::Error::other)?,
        });
        let app = routes::router(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(
                listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                }),
                app,
            )
            .await
            {
                tracing::warn!(error = %error, "graph simulator stopped");
            }
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(GraphSim {
            shared,
            url,
            http,
            _task: Arc::new(ServerTask(task)),
        })
    }

    /// The base URL, to be used as both `graph_url` and `dialog_url`.
    pub fn url(&self) -> Url {
        self.url.clone()
    }

    pub fn add_user(&self, fb_user_id: &str, name: &str) {
        self.shared.lock().add_user(fb_user_id, name);
    }

    /// A page `owner_fb_user` can act on with these tasks (`MESSAGING`, `MODERATE`, …).
    pub fn add_page(&self, owner_fb_user: &str, page_id: &str, name: &str, tasks: &[&str]) {
        self.shared
            .lock()
            .add_page(owner_fb_user, page_id, name, tasks);
    }

    /// Who is logged in to Facebook in the simulated browser that opens the dialog.
    pub fn set_dialog_user(&self, fb_user_id: &str) {
        self.shared.lock().set_dialog_user(fb_user_id);
    }

    pub fn set_dialog_decision(&self, decision: DialogDecision) {
        self.shared.lock().decision = decision;
    }

    /// A Messenger user of the page who has just written to it (the 24-hour window is open).
    pub fn add_psid(&self, page_id: &str, psid: &str, first: &str, last: &str) {
        self.shared.lock().add_psid(page_id, psid, first, last);
    }

    /// A never-expiring page token for a page of `owner_fb_user`, as a login with every scope
    /// would give, without the dialog (a load target starts with its page connected).
    pub fn issue_page_token(&self, owner_fb_user: &str, page_id: &str) -> String {
        self.shared.lock().issue_page_token(owner_fb_user, page_id)
    }

    /// Links an Instagram professional account to the page (`instagram_business_account`).
    pub fn link_instagram(&self, page_id: &str, account_id: &str, username: &str, name: &str) {
        self.shared
            .lock()
            .link_instagram(page_id, account_id, username, name);
    }

    /// The account is unlinked from the page (in its settings, or moved to another Page).
    pub fn unlink_instagram(&self, page_id: &str) {
        self.shared.lock().unlink_instagram(page_id);
    }

    /// An Instagram user who has just written to the account (the 24-hour window is open and
    /// the profile readable).
    pub fn add_igsid(&self, account_id: &str, igsid: &str, name: Option<&str>, username: &str) {
        self.shared
            .lock()
            .add_igsid(account_id, igsid, name, username);
    }

    /// The newest live page token, once `/me/accounts` has handed one out.
    pub fn page_token(&self, page_id: &str) -> Option<String> {
        self.shared.lock().page_token(page_id)
    }

    /// Our app's `subscribed_fields` on the page; `None` when not subscribed.
    pub fn subscriptions(&self, page_id: &str) -> Option<Vec<String>> {
        self.shared.lock().subscriptions(page_id)
    }

    /// Meta silently unsubscribing the app (after an hour of failed webhook deliveries).
    pub fn drop_subscription(&self, page_id: &str) {
        self.shared.lock().drop_subscription(page_id);
    }

    /// Kills the person's tokens and the page tokens derived from them with 190/`subcode`
    /// (460: password changed, 463: expired, 458: app removed).
    pub fn invalidate_user_tokens(&self, fb_user_id: &str, subcode: i64) {
        self.shared
            .lock()
            .invalidate_user_tokens(fb_user_id, subcode);
    }

    /// Turns the app's "Require App Secret" setting on or off: with it on, a call with a user
    /// or page token and no `appsecret_proof` is refused (a wrong proof always is).
    pub fn require_appsecret_proof(&self, on: bool) {
        self.shared.lock().require_proof = on;
    }

    /// Permissions the person unticks in the next login dialogs (`granted` for the rest).
    pub fn decline_permissions(&self, scopes: &[&str]) {
        self.shared.lock().declines = scopes.iter().map(|s| (*s).to_owned()).collect();
    }

    /// The app-level `page` subscription (dashboard → Webhooks, or `POST /{app-id}/subscriptions`).
    pub fn app_subscription(&self) -> Option<AppSubscription> {
        self.shared.lock().app_subscription.clone()
    }

    /// Sets the app-level subscription as if an admin had configured it in the App Dashboard.
    pub fn set_app_subscription(&self, subscription: Option<AppSubscription>) {
        self.shared.lock().app_subscription = subscription;
    }

    /// A `signed_request` for this person as Meta posts it to the deauthorize and data-deletion
    /// callbacks: `base64url(HMAC-SHA256(app_secret, payload_b64)) "." payload_b64`, the payload
    /// `{"algorithm":"HMAC-SHA256","issued_at":…,"user_id":…}`
    /// (https://developers.facebook.com/docs/development/create-an-app/app-dashboard/data-deletion-callback).
    pub fn signed_request(&self, fb_user_id: &str) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let issued_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let payload = serde_json::json!({
            "algorithm": "HMAC-SHA256", "issued_at": issued_at, "user_id": fb_user_id,
        });
        let encoded = b64.encode(payload.to_string());
        let secret = self.shared.lock().app_secret.clone();
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
            .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
        mac.update(encoded.as_bytes());
        format!("{}.{encoded}", b64.encode(mac.finalize().into_bytes()))
    }

    /// The person removes the app in their Facebook settings: their grant ends (tokens die with
    /// 190/458) and Meta posts a `signed_request` to the Deauthorize Callback URL
    /// (https://developers.facebook.com/docs/facebook-login/guides/advanced/manual-flow#deauth-callback).
    pub async fn remove_app(
        &self,
        fb_user_id: &str,
        deauthorize_url: &str,
    ) -> reqwest::Result<reqwest::Response> {
        self.shared.lock().remove_grant(fb_user_id);
        self.post_signed_request(fb_user_id, deauthorize_url).await
    }

    /// The person asks for their data to be deleted: Meta posts a `signed_request` to the Data
    /// Deletion Request URL.
    pub async fn request_data_deletion(
        &self,
        fb_user_id: &str,
        callback_url: &str,
    ) -> reqwest::Result<reqwest::Response> {
        self.post_signed_request(fb_user_id, callback_url).await
    }

    async fn post_signed_request(
        &self,
        fb_user_id: &str,
        url: &str,
    ) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(url)
            .form(&[("signed_request", self.signed_request(fb_user_id))])
            .send()
            .await
    }

    /// The person's user tokens expire (a long-lived one lasts about 60 days); page tokens
    /// obtained with a long-lived one keep working.
    pub fn expire_user_tokens(&self, fb_user_id: &str) {
        self.shared.lock().expire_user_tokens(fb_user_id);
    }

    /// Every accepted `POST /{page}/messages`, oldest first.
    pub fn sent_messages(&self) -> Vec<SentMessage> {
        self.shared.lock().sent.clone()
    }

    /// The first accepted message matching `pred`, waiting up to `timeout` for it.
    pub async fn wait_for_sent(
        &self,
        pred: impl Fn(&SentMessage) -> bool,
        timeout: Duration,
    ) -> Option<SentMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.sent.notified();
            tokio::pin!(notified);
            // Registered before looking, so a send between the look and the wait is not missed.
            notified.as_mut().enable();
            if let Some(found) = self.shared.lock().sent.iter().find(|m| pred(m)).cloned() {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Waits up to `timeout` for messages accepted after the first `from` and returns them with
    /// the cursor to pass next time, so a long-running driver (the soak bench) follows every send
    /// without rescanning the history.
    pub async fn sent_after(&self, from: usize, timeout: Duration) -> (Vec<SentMessage>, usize) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.sent.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (new, next) = {
                let state = self.shared.lock();
                (
                    state.sent.get(from..).unwrap_or_default().to_vec(),
                    state.sent.len(),
                )
            };
            if !new.is_empty() || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return (new, next);
            }
        }
    }

    /// When the customer last wrote to the page (epoch ms): decides the Send API window.
    pub fn set_psid_window(&self, page: &str, psid: &str, last_user_message_ms: u64) {
        self.shared
            .lock()
            .set_psid_window(page, psid, last_user_message_ms);
    }

    /// Whether the app has Meta's Human Agent feature (HUMAN_AGENT tag up to 7 days).
    pub fn grant_human_agent(&self, on: bool) {
        self.shared.lock().grant_human_agent(on);
    }

    /// The page's primary receiver app (handover protocol); by default the simulated app.
    pub fn set_primary_receiver(&self, page_id: &str, app_id: &str) {
        self.shared.lock().set_primary_receiver(page_id, app_id);
    }

    /// Gives control of a conversation to an app (the Page Inbox is [`PAGE_INBOX_APP_ID`]), or
    /// makes it idle (`None`).
    pub fn set_thread_owner(&self, page_id: &str, psid: &str, app_id: Option<&str>) {
        self.shared.lock().set_thread_owner(page_id, psid, app_id);
    }

    pub fn thread_owner(&self, page_id: &str, psid: &str) -> Option<String> {
        self.shared.lock().thread_owner(page_id, psid)
    }

    /// Every `request_thread_control` received: `(page, psid, metadata)`.
    pub fn thread_requests(&self) -> Vec<(String, String, String)> {
        self.shared.lock().thread_requests()
    }

    /// The webhook body Meta sends for a customer's message: under `standby[]` when another app
    /// controls the conversation, else under `messaging[]`
    /// (https://developers.facebook.com/docs/messenger-platform/handover-protocol/).
    pub fn customer_message_body(
        &self,
        page_id: &str,
        psid: &str,
        mid: &str,
        text: &str,
        ts_ms: u64,
    ) -> serde_json::Value {
        let list = if self.shared.lock().is_standby(page_id, psid) {
            "standby"
        } else {
            "messaging"
        };
        serde_json::json!({"object":"page","entry":[{"id":page_id,"time":ts_ms,list:[
            {"sender":{"id":psid},"recipient":{"id":page_id},"timestamp":ts_ms,
             "message":{"mid":mid,"text":text}}]}]})
    }

    /// The `messaging_handovers` body Meta sends when control of a conversation moves
    /// (`pass_thread_control` to the new owner, `take_thread_control` to the one that lost it),
    /// and the simulator's ownership follows it
    /// (https://developers.facebook.com/docs/messenger-platform/reference/webhook-events/messaging_handovers/).
    pub fn thread_moved_body(
        &self,
        page_id: &str,
        psid: &str,
        kind: &str,
        new_owner: &str,
        previous_owner: &str,
    ) -> serde_json::Value {
        self.set_thread_owner(page_id, psid, Some(new_owner));
        let ts = unix_ms();
        serde_json::json!({"object":"page","entry":[{"id":page_id,"time":ts,"messaging":[
            {"sender":{"id":psid},"recipient":{"id":page_id},"timestamp":ts,
             kind:{"new_owner_app_id":new_owner,"previous_owner_app_id":previous_owner,
                   "metadata":"simulated"}}]}]})
    }

    /// The `app_roles` handover event: `primary` becomes the page's primary receiver.
    pub fn app_roles_body(&self, page_id: &str, primary: &str) -> serde_json::Value {
        self.set_primary_receiver(page_id, primary);
        let ts = unix_ms();
        serde_json::json!({"object":"page","entry":[{"id":page_id,"time":ts,"messaging":[
            {"recipient":{"id":page_id},"timestamp":ts,
             "app_roles":{primary:["primary_receiver"]}}]}]})
    }

    /// The `message_echoes` webhook body for a message the page sent: Meta echoes every send to
    /// the page's subscribed apps, with the sending app's `app_id` (the Page Inbox is
    /// [`PAGE_INBOX_APP_ID`]) and the `metadata` it passed, sender and recipient swapped
    /// (https://developers.facebook.com/docs/messenger-platform/reference/webhook-events/message-echoes).
    pub fn echo_body(
        &self,
        page_id: &str,
        psid: &str,
        mid: &str,
        text: &str,
        app_id: &str,
        metadata: Option<&str>,
    ) -> serde_json::Value {
        let ts = unix_ms();
        let mut message = serde_json::json!({"is_echo":true,"app_id":app_id.parse::<u64>().map(serde_json::Value::from).unwrap_or_else(|_| app_id.into()),"mid":mid,"text":text});
        if let Some(metadata) = metadata {
            message["metadata"] = metadata.into();
        }
        serde_json::json!({"object":"page","entry":[{"id":page_id,"time":ts,"messaging":[
            {"sender":{"id":page_id},"recipient":{"id":psid},"timestamp":ts,"message":message}]}]})
    }

    /// The webhook body Meta sends when it warns about (`warning`), blocks (`block`) or unblocks
    /// (`unblock`) the app on a page: a `policy-enforcement` item with the page as recipient and
    /// no sender
    /// (https://developers.facebook.com/docs/messenger-platform/reference/webhook-events/messaging_policy_enforcement/).
    pub fn policy_enforcement_body(
        &self,
        page_id: &str,
        action: &str,
        reason: &str,
        ts_ms: u64,
    ) -> serde_json::Value {
        serde_json::json!({"object":"page","entry":[{"id":page_id,"time":ts_ms,"messaging":[
            {"recipient":{"id":page_id},"timestamp":ts_ms,
             "policy-enforcement":{"action":action,"reason":reason}}]}]})
    }

    /// Makes the next `n` requests whose path contains `path_contains` fail with `error`.
    pub fn fail_next(&self, path_contains: &str, n: usize, error: SimError) {
        self.shared.lock().fail_next(path_contains, n, error);
    }

    /// Disarms every fault armed with [`fail_next`](Self::fail_next).
    pub fn clear_faults(&self) {
        self.shared.lock().clear_faults();
    }

    /// Every request received, as `METHOD /path` without the query, oldest first: lets a test
    /// check the order of calls (unsubscribe before revoke).
    pub fn calls(&self) -> Vec<String> {
        self.shared.lock().calls.clone()
    }

    pub fn stats(&self) -> GraphSimStats {
        self.shared.lock().stats
    }

    /// Signs `body` and POSTs it to `url` the way Meta delivers webhooks.
    /// Like Meta, the simulator learns from what it delivers: each customer message or postback
    /// in the body makes its PSID known to the page and opens its messaging window. For
    /// `object: "instagram"` the recipient is the Instagram account, so the IGSID becomes known
    /// to it the same way (`docs/instagram.md` §3.1, §6.3).
    pub async fn deliver_webhook(
        &self,
        url: &str,
        body: &[u8],
    ) -> reqwest::Result<reqwest::Response> {
        self.learn_from_webhook(body);
        self.http
            .post(url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", self.sign(body))
            .body(body.to_vec())
            .send()
            .await
    }

    fn learn_from_webhook(&self, body: &[u8]) {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let entries = value
            .get("entry")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        let mut state = self.shared.lock();
        for entry in entries {
            // Standby events are customer messages too; they open the window alike.
            let items: Vec<serde_json::Value> = ["messaging", "standby"]
                .iter()
                .filter_map(|list| entry.get(*list).and_then(|m| m.as_array()))
                .flatten()
                .cloned()
                .collect();
            for item in items {
                let from_customer = item.get("postback").is_some()
                    || item
                        .get("message")
                        .is_some_and(|m| m.get("is_echo").and_then(|e| e.as_bool()) != Some(true));
                let sender = item
                    .get("sender")
                    .and_then(|s| s.get("id"))
                    .and_then(|i| i.as_str());
                let page = item
                    .get("recipient")
                    .and_then(|r| r.get("id"))
                    .and_then(|i| i.as_str());
                let at = item.get("timestamp").and_then(|t| t.as_u64());
                if let (true, Some(psid), Some(page), Some(at)) = (from_customer, sender, page, at)
                {
                    state.record_user_message(page, psid, at);
                    let mid = item
                        .get("message")
                        .and_then(|m| m.get("mid"))
                        .and_then(|m| m.as_str());
                    if let Some(mid) = mid {
                        state.record_customer_mid(page, psid, mid);
                    }
                }
            }
        }
    }

    /// `sha256=<lowercase hex HMAC-SHA256(app_secret, body)>` over the exact bytes.
    pub fn sign(&self, body: &[u8]) -> String {
        let secret = self.shared.lock().app_secret.clone();
        webhook_signature(&secret, body)
    }
}

/// The `X-Hub-Signature-256` value Meta sends with a webhook delivery: `sha256=` and the lowercase
/// hex HMAC-SHA256 of the exact body bytes, keyed with the app secret
/// (<https://developers.facebook.com/docs/messenger-platform/webhooks#validate-payloads>).
pub fn webhook_signature(app_secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(app_secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signature_is_hex_hmac_sha256_of_the_exact_bytes() {
        let sim = GraphSim::start("1", "secret").await.expect("loopback bind");
        // HMAC-SHA256("secret", "{}"), computed with Python's hmac module.
        let want = "sha256=77325902caca812dc259733aacd046b73817372c777b8d95b402647474516e13";
        let got = sim.sign(b"{}");
        assert_eq!(got, want);
        assert_ne!(got, sim.sign(b"{ }"));
    }
}
