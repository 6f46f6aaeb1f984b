//! Instagram's side of the end-to-end tests: the Instagram professional account linked to the
//! test page, its record in the gateway's store, and webhook items and bodies as Meta delivers
//! them for `object: "instagram"` (`docs/instagram.md` §3–§4): keyed by the account id, the
//! customer's IGSID as sender, millisecond timestamps.

use omni_gateway::ids::PageId;
use omni_gateway::store::{Page, PageStatus, Platform};
use serde_json::{Value, json};

use crate::messenger::{Facebook, OWNER, PAGE_ID, PageSetup, now_ms, page_record};

/// The account linked to [`PAGE_ID`].
pub const IG_ID: &str = "17841400000001001";
pub const IG_USERNAME: &str = "acme.shop";
pub const IG_NAME: &str = "Acme Shop Lyon";

impl Facebook {
    /// Links [`IG_ID`] to the test page in the Graph simulator.
    pub fn link_instagram(&self) {
        self.sim
            .link_instagram(PAGE_ID, IG_ID, IG_USERNAME, IG_NAME);
    }
}

/// The Instagram record `authorize` stores for the account linked to `page`: the Page's token and
/// grant, its own settings.
pub fn instagram_record(page: &Page, setup: PageSetup) -> Page {
    Page {
        platform: Platform::Instagram {
            page: page.id.clone(),
            username: Some(IG_USERNAME.into()),
        },
        department: setup.department,
        welcome: setup.welcome,
        offline: setup.offline,
        subscribers: setup.subscribers,
        grant: Some(OWNER.into()),
        status: PageStatus::Connected,
        ..Page {
            id: PageId::new(IG_ID),
            name: IG_NAME.into(),
            ..page.clone()
        }
    }
}

/// Links the account in the simulator and stores the Page (with `page`'s settings) and its
/// Instagram account (with `account`'s) in a running gateway, as `authorize` does.
pub async fn connect_instagram(
    gateway: &omni_gateway::daemon::Gateway,
    fb: &Facebook,
    page: PageSetup,
    account: PageSetup,
) {
    fb.link_instagram();
    let page = page_record(fb, page).await;
    gateway.store.put_page(&page).expect("page stored");
    gateway
        .store
        .put_page(&instagram_record(&page, account))
        .expect("instagram account stored");
    gateway.store.sync().await.expect("pages flushed");
}

fn item(igsid: &str, timestamp_ms: u64, key: &str, value: Value) -> Value {
    json!({
        "sender": {"id": igsid},
        "recipient": {"id": IG_ID},
        "timestamp": timestamp_ms,
        key: value,
    })
}

/// A customer's Direct message (§4.1).
pub fn text_event(igsid: &str, mid: &str, timestamp_ms: u64, text: &str) -> Value {
    item(
        igsid,
        timestamp_ms,
        "message",
        json!({"mid": mid, "text": text}),
    )
}

/// A message with one attachment of `kind` (§4.2); `url` `None` as for `ephemeral`.
pub fn attachment_event(
    igsid: &str,
    mid: &str,
    timestamp_ms: u64,
    kind: &str,
    url: Option<&str>,
) -> Value {
    let payload = match url {
        Some(url) => json!({"url": url}),
        None => json!({}),
    };
    item(
        igsid,
        timestamp_ms,
        "message",
        json!({"mid": mid, "attachments": [{"type": kind, "payload": payload}]}),
    )
}

/// The customer unsends the message `mid` (§4.8: the unsend reuses the original's `mid`).
pub fn deleted_event(igsid: &str, mid: &str, timestamp_ms: u64) -> Value {
    item(
        igsid,
        timestamp_ms,
        "message",
        json!({"mid": mid, "is_deleted": true}),
    )
}

/// A message Instagram does not show to apps (§4.8).
pub fn unsupported_event(igsid: &str, mid: &str, timestamp_ms: u64) -> Value {
    item(
        igsid,
        timestamp_ms,
        "message",
        json!({"mid": mid, "is_unsupported": true}),
    )
}

/// A reply to our story (§4.3): `reply_to.story` has a url and an id, no mid.
pub fn story_reply_event(
    igsid: &str,
    mid: &str,
    timestamp_ms: u64,
    text: &str,
    url: &str,
) -> Value {
    item(
        igsid,
        timestamp_ms,
        "message",
        json!({"mid": mid, "text": text, "reply_to": {"story": {"url": url, "id": "18067890123456789"}}}),
    )
}

/// A reaction to the message `mid` (§4.4).
pub fn reaction_event(igsid: &str, mid: &str, timestamp_ms: u64, emoji: &str) -> Value {
    item(
        igsid,
        timestamp_ms,
        "reaction",
        json!({"mid": mid, "action": "react", "reaction": "love", "emoji": emoji}),
    )
}

/// An echo of a message the account sent (§4.7): sender and recipient swapped, no `app_id`, no
/// `metadata`.
pub fn echo_event(igsid: &str, mid: &str, timestamp_ms: u64, text: &str) -> Value {
    json!({
        "sender": {"id": IG_ID},
        "recipient": {"id": igsid},
        "timestamp": timestamp_ms,
        "message": {"mid": mid, "text": text, "is_echo": true},
    })
}

/// A webhook body carrying `items` for [`IG_ID`].
pub fn body(items: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "instagram",
        "entry": [{"id": IG_ID, "time": now_ms(), "messaging": items}]
    }))
    .expect("json serializes")
}

/// A webhook body carrying `items` under `standby[]`: another app, or the Instagram app's inbox,
/// owns the conversation (§4.10).
pub fn standby_body(items: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "instagram",
        "entry": [{"id": IG_ID, "time": now_ms(), "standby": items}]
    }))
    .expect("json serializes")
}
