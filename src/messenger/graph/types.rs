//! Request and response types of the Graph API calls the gateway makes.

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::ids::{PageId, Psid};

/// A user access token from the code exchange or the long-lived exchange.
#[derive(Debug, Deserialize)]
pub struct UserToken {
    pub access_token: SecretString,
    #[serde(default)]
    pub token_type: Option<String>,
    /// Seconds until expiry; absent for tokens that do not expire.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// The person who logged in (`GET /me?fields=id,name`). The id is app-scoped.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FbUser {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// One entry of `GET /me/accounts`: a page the person can act on, with its page token.
#[derive(Debug, Deserialize)]
pub struct PageAccount {
    pub id: PageId,
    #[serde(default)]
    pub name: String,
    pub access_token: SecretString,
    /// The person's tasks on the page (`MESSAGING`, `MODERATE`, …).
    #[serde(default)]
    pub tasks: Vec<String>,
    #[serde(default)]
    pub category: Option<String>,
}

impl PageAccount {
    /// Whether the person may answer the page's Messenger conversations: Meta requires the
    /// `MESSAGE` task, which `/me/accounts` reports as `MESSAGING`; `MODERATE` implies it
    /// (`docs/messenger.md` §3.1, §5.5).
    pub fn can_message(&self) -> bool {
        self.tasks
            .iter()
            .any(|t| matches!(t.as_str(), "MESSAGING" | "MODERATE"))
    }
}

/// `GET /debug_token` → `data`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenInfo {
    #[serde(default, deserialize_with = "string_or_number")]
    pub app_id: Option<String>,
    /// `USER`, `PAGE`, `APP`, …
    #[serde(default)]
    pub r#type: Option<String>,
    #[serde(default)]
    pub application: Option<String>,
    /// Unix seconds; 0 for a token that never expires.
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub data_access_expires_at: Option<i64>,
    #[serde(default)]
    pub issued_at: Option<i64>,
    pub is_valid: bool,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    pub profile_id: Option<String>,
    /// Why the token is invalid, when it is.
    #[serde(default)]
    pub error: Option<TokenInfoError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenInfoError {
    pub code: i64,
    #[serde(default)]
    pub subcode: Option<i64>,
    #[serde(default)]
    pub message: String,
}

/// The User Profile API answer. Every field is optional: Meta returns only what the page may see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Expires (Meta's CDN); download it at once if it is kept.
    #[serde(default)]
    pub profile_pic: Option<String>,
}

impl Profile {
    /// The best display name: `name`, else first and last name joined, else `None`.
    pub fn display_name(&self) -> Option<String> {
        if let Some(name) = self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            return Some(name.to_owned());
        }
        let joined = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        (!joined.is_empty()).then_some(joined)
    }
}

/// The Instagram professional account linked to a Page
/// (`/{page}?fields=instagram_business_account{id,username,name}`, `docs/instagram.md` §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IgAccount {
    pub id: PageId,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// An Instagram user's profile (`GET /{igsid}?fields=name,username`, `docs/instagram.md` §5):
/// there is no `first_name` or `last_name`, and `name` may be null.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct IgProfile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

impl IgProfile {
    /// `name (@username) · Instagram`, else whichever of the two exists, else `None`.
    pub fn display_name(&self) -> Option<String> {
        let clean = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let label = match (clean(&self.name), clean(&self.username)) {
            (Some(name), Some(username)) => format!("{name} (@{username})"),
            (None, Some(username)) => format!("@{username}"),
            (Some(name), None) => name,
            (None, None) => return None,
        };
        Some(format!("{label} · Instagram"))
    }
}

/// Which send policy a message goes out under (`docs/messenger.md` §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Messaging {
    /// `messaging_type=RESPONSE`: within 24 hours of the customer's last message.
    Response,
    /// `messaging_type=MESSAGE_TAG` + `tag=HUMAN_AGENT`: a person answering within 7 days;
    /// needs Meta's Human Agent approval.
    HumanAgent,
}

impl Messaging {
    pub fn messaging_type(self) -> &'static str {
        match self {
            Messaging::Response => "RESPONSE",
            Messaging::HumanAgent => "MESSAGE_TAG",
        }
    }

    pub fn tag(self) -> Option<&'static str> {
        match self {
            Messaging::Response => None,
            Messaging::HumanAgent => Some("HUMAN_AGENT"),
        }
    }
}

/// The attachment types the Send API takes for files (`template` is not used here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentKind {
    Image,
    Audio,
    Video,
    File,
}

impl AttachmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentKind::Image => "image",
            AttachmentKind::Audio => "audio",
            AttachmentKind::Video => "video",
            AttachmentKind::File => "file",
        }
    }

    /// The Messenger attachment type that displays a file of this MIME type best.
    pub fn from_mime(mime: &str) -> AttachmentKind {
        match mime.split('/').next().unwrap_or_default() {
            "image" => AttachmentKind::Image,
            "audio" => AttachmentKind::Audio,
            "video" => AttachmentKind::Video,
            _ => AttachmentKind::File,
        }
    }
}

/// What a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// UTF-8 text, at most 2000 characters (Meta's limit; split longer replies before sending).
    Text(String),
    /// A file Meta fetches itself from a public URL.
    AttachmentUrl { kind: AttachmentKind, url: String },
    /// A file uploaded before with `message_attachments` (`docs/instagram.md` §6.4).
    AttachmentId { kind: AttachmentKind, id: String },
}

/// A `POST /{page}/messages` request with JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    pub recipient: Psid,
    pub messaging: Messaging,
    pub content: Content,
    /// Comes back in the `message_echoes` webhook (< 1000 characters): our correlation key.
    pub metadata: Option<String>,
}

/// The Send API answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SendResponse {
    /// Absent when the recipient was not given by PSID.
    #[serde(default)]
    pub recipient_id: Option<String>,
    pub message_id: String,
}

/// A typing indicator or read receipt; each is its own request (`docs/messenger.md` §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderAction {
    TypingOn,
    TypingOff,
    MarkSeen,
}

impl SenderAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SenderAction::TypingOn => "typing_on",
            SenderAction::TypingOff => "typing_off",
            SenderAction::MarkSeen => "mark_seen",
        }
    }
}

/// Meta returns ids as strings, but some older answers use numbers; accept both.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instagram_names_say_instagram_with_fallbacks() {
        let profile = |name: Option<&str>, username: Option<&str>| IgProfile {
            name: name.map(str::to_owned),
            username: username.map(str::to_owned),
        };
        let cases = [
            (
                profile(Some("Camille Martin"), Some("camille.mrtn")),
                Some("Camille Martin (@camille.mrtn) · Instagram"),
            ),
            (
                profile(None, Some("camille.mrtn")),
                Some("@camille.mrtn · Instagram"),
            ),
            (
                profile(Some(" Camille "), Some("")),
                Some("Camille · Instagram"),
            ),
            (profile(Some(" "), None), None),
        ];
        for (profile, want) in cases {
            assert_eq!(profile.display_name().as_deref(), want, "{profile:?}");
        }
    }

    #[test]
    fn display_name_prefers_name_then_parts() {
        let p = |name: Option<&str>, first: Option<&str>, last: Option<&str>| Profile {
            name: name.map(Into::into),
            first_name: first.map(Into::into),
            last_name: last.map(Into::into),
            profile_pic: None,
        };
        let cases = [
            (p(Some("Peter Chang"), Some("P"), None), Some("Peter Chang")),
            (
                p(Some(" "), Some("Peter"), Some("Chang")),
                Some("Peter Chang"),
            ),
            (p(None, None, Some("Chang")), Some("Chang")),
            (p(None, None, None), None),
        ];
        for (profile, want) in cases {
            assert_eq!(profile.display_name().as_deref(), want, "{profile:?}");
        }
    }

    #[test]
    fn attachment_kind_from_mime() {
        let cases = [
            ("image/png", AttachmentKind::Image),
            ("audio/ogg", AttachmentKind::Audio),
            ("video/mp4", AttachmentKind::Video),
            ("application/pdf", AttachmentKind::File),
            ("", AttachmentKind::File),
        ];
        for (mime, want) in cases {
            assert_eq!(AttachmentKind::from_mime(mime), want, "{mime}");
        }
    }

    #[test]
    fn token_info_accepts_numeric_ids() {
        let info: TokenInfo = serde_json::from_str(
            r#"{"app_id":1234,"type":"PAGE","is_valid":false,"scopes":[],
                "error":{"code":190,"subcode":460,"message":"session invalidated"}}"#,
        )
        .expect("valid debug_token data");
        assert_eq!(info.app_id.as_deref(), Some("1234"));
        assert_eq!(info.error.map(|e| e.subcode), Some(Some(460)));
    }
}

/// One entry of `GET /me/permissions`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Permission {
    pub permission: String,
    /// `granted`, `declined` or `expired`.
    pub status: String,
}

/// One entry of `GET /{app-id}/subscriptions`: the app-level webhook subscription of an object
/// (https://developers.facebook.com/docs/graph-api/reference/app/subscriptions/).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AppSubscription {
    pub object: String,
    #[serde(default)]
    pub callback_url: Option<String>,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub fields: Vec<SubscriptionField>,
}

/// A subscribed field with the Graph version its payloads use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubscriptionField {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
}
