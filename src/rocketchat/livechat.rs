//! The Livechat visitor API (`docs/rocketchat.md` §4): how a Messenger customer becomes a
//! Livechat visitor with a room and messages. These routes authenticate the visitor by token, not
//! the bot, so they are called without the bot's credentials.

use std::time::Duration;

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde_json::{Value, json};

use super::dates;
use super::realtime::RoomMessage;
use super::rest::{Access, Error, RestClient, Result};
use crate::ids::{MessageId, RoomId, VisitorToken};

/// What `livechat/visitor` registers.
#[derive(Clone, Debug)]
pub struct Visitor<'a> {
    pub token: &'a VisitorToken,
    pub name: &'a str,
    /// Department id or name; `None` lets Omnichannel route to any department.
    pub department: Option<&'a str>,
}

/// A visitor's room, and whether this call created it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VisitorRoom {
    pub rid: RoomId,
    pub created: bool,
}

impl RestClient {
    /// `POST livechat/visitor`: creates or updates the visitor (department, name).
    pub async fn register_visitor(&self, visitor: &Visitor<'_>) -> Result<()> {
        let route = "livechat/visitor";
        let mut body = json!({"visitor": {"token": visitor.token.as_str(), "name": visitor.name}});
        if let Some(department) = visitor.department {
            body["visitor"]["department"] = json!(department);
        }
        let builder = self
            .request(Method::POST, route, Access::Anonymous)?
            .json(&body);
        self.send::<Value>(route, builder).await.map(|_| ())
    }

    /// `GET livechat/room?token=`: the visitor's open room, created when there is none.
    /// `no-agent-online` comes back as an [`Error::Api`] with that `error_type`.
    pub async fn visitor_room(&self, token: &VisitorToken) -> Result<VisitorRoom> {
        #[derive(Deserialize)]
        struct Answer {
            room: Room,
            #[serde(rename = "newRoom", default)]
            new_room: bool,
        }
        #[derive(Deserialize)]
        struct Room {
            #[serde(rename = "_id")]
            id: String,
        }
        let route = "livechat/room";
        let builder = self
            .request(Method::GET, route, Access::Anonymous)?
            .query(&[("token", token.as_str())]);
        let answer: Answer = self.send(route, builder).await?;
        Ok(VisitorRoom {
            rid: RoomId::new(answer.room.id),
            created: answer.new_room,
        })
    }

    /// `POST livechat/message` with our own `_id`, so a retry cannot post twice. A retry of a
    /// message that already arrived is refused by the server; that counts as delivered.
    pub async fn send_visitor_message(
        &self,
        token: &VisitorToken,
        rid: &RoomId,
        id: &MessageId,
        text: &str,
    ) -> Result<()> {
        let route = "livechat/message";
        let body =
            json!({"token": token.as_str(), "rid": rid.as_str(), "msg": text, "_id": id.as_str()});
        let builder = self
            .request(Method::POST, route, Access::Anonymous)?
            .json(&body);
        match self.send::<Value>(route, builder).await {
            Ok(_) => Ok(()),
            Err(err @ Error::Api { .. }) if is_room_problem(&err) => Err(err),
            Err(err @ Error::Api { .. }) => match self.visitor_message_exists(token, rid, id).await
            {
                Ok(true) => Ok(()),
                _ => Err(err),
            },
            Err(err) => Err(err),
        }
    }

    /// `PUT livechat/message/:_id {"token","rid","msg"}`: the visitor edits its own message
    /// (`docs/rocketchat.md` §4.9). Refused when the server does not allow editing or has no
    /// such message ([`Error::is_edit_refused`]).
    pub async fn update_visitor_message(
        &self,
        token: &VisitorToken,
        rid: &RoomId,
        id: &MessageId,
        text: &str,
    ) -> Result<()> {
        let route = format!("livechat/message/{}", id.as_str());
        let body = json!({"token": token.as_str(), "rid": rid.as_str(), "msg": text});
        let builder = self
            .request(Method::PUT, &route, Access::Anonymous)?
            .json(&body);
        self.send::<Value>(&route, builder).await.map(|_| ())
    }

    /// `POST livechat/custom.field`: sets a custom field of the visitor's open room (a room-scope
    /// field), shown to agents in the room's info, with no chat message (`docs/rocketchat.md`
    /// §4.10). Refused with `invalid-custom-field` ([`Error::is_unknown_custom_field`]) when no
    /// admin created the field.
    pub async fn set_room_field(&self, token: &VisitorToken, key: &str, value: &str) -> Result<()> {
        let route = "livechat/custom.field";
        let body = json!({"token": token.as_str(), "key": key, "value": value, "overwrite": true});
        let builder = self
            .request(Method::POST, route, Access::Anonymous)?
            .json(&body);
        self.send::<Value>(route, builder).await.map(|_| ())
    }

    /// `GET livechat/message/:_id?token=&rid=`: whether the visitor's message exists.
    pub async fn visitor_message_exists(
        &self,
        token: &VisitorToken,
        rid: &RoomId,
        id: &MessageId,
    ) -> Result<bool> {
        let route = format!("livechat/message/{}", id.as_str());
        let builder = self
            .request(Method::GET, &route, Access::Anonymous)?
            .query(&[("token", token.as_str()), ("rid", rid.as_str())]);
        match self.send::<Value>(&route, builder).await {
            Ok(body) => Ok(body.get("message").is_some_and(|m| !m.is_null())),
            Err(Error::Api { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// `POST livechat/upload/:rid`: a file from the visitor, as multipart field `file`.
    pub async fn upload_visitor_file(
        &self,
        token: &VisitorToken,
        rid: &RoomId,
        file_name: &str,
        mime: &str,
        bytes: Vec<u8>,
        caption: Option<&str>,
    ) -> Result<()> {
        let route = format!("livechat/upload/{}", rid.as_str());
        let part = Part::bytes(bytes)
            .file_name(file_name.to_owned())
            .mime_str(mime)
            .map_err(|e| Error::Decode {
                route: route.clone(),
                detail: format!("bad content type {mime:?}: {e}"),
            })?;
        let mut form = Form::new().part("file", part);
        if let Some(caption) = caption {
            form = form.text("msg", caption.to_owned());
        }
        let builder = self
            .request(Method::POST, &route, Access::Anonymous)?
            .header("x-visitor-token", token.as_str())
            .timeout(Duration::from_secs(120))
            .multipart(form);
        self.send::<Value>(&route, builder).await.map(|_| ())
    }

    /// `GET livechat/config`: whether an agent can take a conversation now (`online`).
    pub async fn livechat_online(
        &self,
        token: &VisitorToken,
        department: Option<&str>,
    ) -> Result<bool> {
        let route = "livechat/config";
        let mut query = vec![("token", token.as_str())];
        if let Some(department) = department {
            query.push(("department", department));
        }
        let builder = self
            .request(Method::GET, route, Access::Anonymous)?
            .query(&query);
        let answer: Value = self.send(route, builder).await?;
        let config = answer.get("config").ok_or_else(|| Error::Decode {
            route: route.into(),
            detail: "no config object".into(),
        })?;
        if config.get("enabled").and_then(Value::as_bool) == Some(false) {
            return Err(Error::Api {
                route: route.into(),
                status: 200,
                error_type: Some("error-omnichannel-is-disabled".into()),
                message: "Omnichannel (Livechat) is disabled on this Rocket.Chat".into(),
            });
        }
        Ok(config
            .get("online")
            .and_then(Value::as_bool)
            .unwrap_or(false))
    }

    /// `GET livechat/config`: the Livechat character limit, `settings.limitTextLength` (`false`
    /// when the limit is off, else a number: `Livechat_enable_message_character_limit &&
    /// (Livechat_message_character_limit || Message_MaxAllowedSize)`, function `settings()` in
    /// `apps/meteor/app/livechat/server/api/lib/livechat.ts`).
    pub async fn livechat_text_limit(&self, token: &VisitorToken) -> Result<Option<usize>> {
        let route = "livechat/config";
        let builder = self
            .request(Method::GET, route, Access::Anonymous)?
            .query(&[("token", token.as_str())]);
        let answer: Value = self.send(route, builder).await?;
        Ok(answer
            .pointer("/config/settings/limitTextLength")
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0))
    }

    /// `GET livechat/messages.history/:rid`: the room's messages newer than `since_ms`, oldest
    /// first. The route pages backwards from `end` (newest first), so it is read page by page
    /// until a page reaches `since_ms`.
    pub async fn room_history(
        &self,
        token: &VisitorToken,
        rid: &RoomId,
        since_ms: u64,
    ) -> Result<Vec<RoomMessage>> {
        const PAGE: usize = 100;
        const MAX_PAGES: usize = 50;
        #[derive(Deserialize)]
        struct Answer {
            messages: Vec<Value>,
        }
        let route = format!("livechat/messages.history/{}", rid.as_str());
        let mut newer: Vec<RoomMessage> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut end: Option<u64> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![
                ("token", token.as_str().to_owned()),
                ("limit", PAGE.to_string()),
            ];
            if let Some(end) = end {
                query.push(("end", dates::iso(end)));
            }
            let builder = self
                .request(Method::GET, &route, Access::Anonymous)?
                .query(&query);
            let answer: Answer = self.send(&route, builder).await?;
            let count = answer.messages.len();
            let mut oldest: Option<u64> = None;
            for message in answer.messages.iter().filter_map(RoomMessage::from_value) {
                oldest = Some(oldest.map_or(message.ts_ms, |o| o.min(message.ts_ms)));
                if message.ts_ms > since_ms && seen.insert(message.id.clone()) {
                    newer.push(message);
                }
            }
            // `end` is exclusive (`ts < end`): ask again from just after the oldest, so messages
            // sharing its millisecond are not skipped (the ones already seen are dropped above).
            // When a whole page shares one millisecond, step past it rather than loop.
            let next = match oldest {
                Some(oldest) if oldest > since_ms && count == PAGE => {
                    if end == Some(oldest + 1) {
                        oldest
                    } else {
                        oldest + 1
                    }
                }
                _ => break,
            };
            end = Some(next);
        }
        // Pages come newest first; reversed, then a stable sort keeps same-millisecond messages
        // in the order the server listed them.
        newer.reverse();
        newer.sort_by_key(|m| m.ts_ms);
        Ok(newer)
    }

    /// Downloads a file of a Livechat room as its visitor (`docs/rocketchat.md` §4.7): the bot is
    /// not a member of Livechat rooms, so its own credentials would get 403.
    pub async fn download_as_visitor(
        &self,
        path: &str,
        token: &VisitorToken,
        rid: &RoomId,
    ) -> Result<Vec<u8>> {
        let url = self.server_url(path)?;
        let route = "file-upload";
        let builder = self.raw(Method::GET, url).query(&[
            ("rc_room_type", "l"),
            ("rc_rid", rid.as_str()),
            ("rc_token", token.as_str()),
        ]);
        self.send_bytes(route, builder).await
    }
}

impl RestClient {
    /// A link to one message of a Livechat room, for agents (`live/<rid>?msg=<id>`).
    pub fn room_message_link(&self, rid: &RoomId, message: &MessageId) -> Result<url::Url> {
        let mut url = self.server_url(&format!("live/{}", rid.as_str()))?;
        url.set_query(Some(&format!("msg={}", message.as_str())));
        Ok(url)
    }
}

/// What a Livechat refusal means, read from its `errorType` so that no caller needs to know
/// Rocket.Chat's codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `no-agent-online`: no agent can take a new room now.
    NoAgentOnline,
    /// `room-closed`, `invalid-room`, `invalid-token`: the room is gone for this visitor.
    RoomGone,
    /// `error-type-not-allowed`: the server does not accept this file type.
    FileTypeNotAllowed,
    /// `error-size-not-allowed`: the file is larger than the server accepts.
    FileTooLarge,
    /// `error-file-upload-disabled`: file uploads are turned off.
    UploadsDisabled,
    /// `error-action-not-allowed`: editing is turned off (`Message_AllowEditing`).
    EditNotAllowed,
    /// `invalid-message`: no message with that id.
    NoSuchMessage,
    /// `message-length-exceeds-character-limit`: the text is longer than Livechat's character
    /// limit (`apps/meteor/app/livechat/server/api/v1/message.ts`).
    TooLong,
    /// `error-message-size-exceeded`: the text is longer than `Message_MaxAllowedSize`, checked by
    /// the core `sendMessage` whatever Livechat's own limit says.
    TooLarge,
    /// `error-contact-channel-blocked`: a manager blocked the contact's channel; `getRoom` and
    /// `createRoom` (`apps/meteor/app/livechat/server/lib/LivechatTyped.ts`, later
    /// `lib/rooms.ts`) refuse every room and message of it until it is unblocked.
    ContactBlocked,
    /// `error-omnichannel-is-disabled`: Omnichannel is switched off (`Livechat_enabled`), thrown
    /// by the same `getRoom` and `createRoom`.
    OmnichannelDisabled,
    /// Any other code, as the server sent it.
    Other(String),
}

impl Refusal {
    /// The meaning of a refusal code as Rocket.Chat sends it (an `errorType`, or the `error` of
    /// a plain `Error`); the inverse of [`code`](Self::code).
    pub fn from_code(code: &str) -> Refusal {
        match code {
            "no-agent-online" => Refusal::NoAgentOnline,
            "room-closed" | "invalid-room" | "invalid-token" => Refusal::RoomGone,
            "error-type-not-allowed" => Refusal::FileTypeNotAllowed,
            "error-size-not-allowed" => Refusal::FileTooLarge,
            "error-file-upload-disabled" => Refusal::UploadsDisabled,
            "error-action-not-allowed" => Refusal::EditNotAllowed,
            "invalid-message" => Refusal::NoSuchMessage,
            "message-length-exceeds-character-limit" => Refusal::TooLong,
            "error-message-size-exceeded" => Refusal::TooLarge,
            "error-contact-channel-blocked" => Refusal::ContactBlocked,
            "error-omnichannel-is-disabled" => Refusal::OmnichannelDisabled,
            other => Refusal::Other(other.to_owned()),
        }
    }

    /// The code as Rocket.Chat sends it.
    pub fn code(&self) -> &str {
        match self {
            Refusal::NoAgentOnline => "no-agent-online",
            Refusal::RoomGone => "room-closed",
            Refusal::FileTypeNotAllowed => "error-type-not-allowed",
            Refusal::FileTooLarge => "error-size-not-allowed",
            Refusal::UploadsDisabled => "error-file-upload-disabled",
            Refusal::EditNotAllowed => "error-action-not-allowed",
            Refusal::NoSuchMessage => "invalid-message",
            Refusal::TooLong => "message-length-exceeds-character-limit",
            Refusal::TooLarge => "error-message-size-exceeded",
            Refusal::ContactBlocked => "error-contact-channel-blocked",
            Refusal::OmnichannelDisabled => "error-omnichannel-is-disabled",
            Refusal::Other(code) => code,
        }
    }

    /// A refusal no retry of the same message can pass while Rocket.Chat's settings stay as they
    /// are, and that concerns this message or this contact only: the relay sets such a message
    /// aside so the conversation goes on. A text over the limits is here because the relay
    /// already split what it could (`docs/rocketchat.md` §4.8). Omnichannel switched off is not:
    /// it refuses every conversation alike until an admin switches it back on, and then every
    /// message goes through again in order, so the relay holds instead.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Refusal::ContactBlocked | Refusal::TooLong | Refusal::TooLarge
        )
    }

    /// What the refusal means, in a few plain words (for `status` and notices).
    pub fn meaning(&self) -> String {
        match self {
            Refusal::ContactBlocked => "the contact is blocked in Rocket.Chat".into(),
            Refusal::TooLong => "the text is over Livechat's character limit".into(),
            Refusal::TooLarge => "the text is over Rocket.Chat's maximum message size".into(),
            Refusal::OmnichannelDisabled => "Omnichannel is switched off".into(),
            other => format!("Rocket.Chat refused it ({})", other.code()),
        }
    }

    /// What an admin changes in Rocket.Chat so the refused message can go through.
    pub fn fix(&self) -> &'static str {
        match self {
            Refusal::ContactBlocked => {
                "unblock the contact's Facebook channel in Rocket.Chat (Omnichannel → Contacts → the contact → Channels → Unblock)"
            }
            Refusal::TooLong => {
                "raise the limit or turn it off (Administration → Settings → Omnichannel → Livechat → Livechat_enable_message_character_limit and Livechat_message_character_limit)"
            }
            Refusal::TooLarge => {
                "raise Administration → Settings → Message → Message_MaxAllowedSize"
            }
            Refusal::OmnichannelDisabled => {
                "switch Omnichannel on (Administration → Settings → Omnichannel → Livechat_enabled)"
            }
            _ => "see the gateway's log for Rocket.Chat's answer",
        }
    }
}

impl Error {
    /// The meaning of an API error's code; `None` for other failures and code-less refusals.
    pub fn refusal(&self) -> Option<Refusal> {
        self.error_type().map(Refusal::from_code)
    }

    /// `invalid-custom-field`: no Omnichannel custom field has that id.
    pub fn is_unknown_custom_field(&self) -> bool {
        self.error_type() == Some("invalid-custom-field")
    }

    /// A visitor's edit the server will never take: editing is off, or the message is not there.
    pub fn is_edit_refused(&self) -> bool {
        matches!(
            self.refusal(),
            Some(Refusal::EditNotAllowed | Refusal::NoSuchMessage)
        )
    }

    /// `no-agent-online`: hold the conversation until an agent is.
    pub fn is_no_agent_online(&self) -> bool {
        self.refusal() == Some(Refusal::NoAgentOnline)
    }

    /// A refusal of this message that no retry passes ([`Refusal::is_permanent`]).
    pub fn permanent_refusal(&self) -> Option<Refusal> {
        self.refusal().filter(Refusal::is_permanent)
    }

    /// Why Rocket.Chat refused a visitor's file, worded for the agent who reads the fallback.
    pub fn upload_refusal(&self) -> String {
        let Some(code) = self.error_type() else {
            return format!("Rocket.Chat refused the upload: {self}");
        };
        match Refusal::from_code(code) {
            Refusal::FileTypeNotAllowed => {
                format!("Rocket.Chat does not accept this file type ({code})")
            }
            Refusal::FileTooLarge => {
                format!("the file is larger than Rocket.Chat accepts ({code})")
            }
            Refusal::UploadsDisabled => {
                format!("file uploads are turned off in Rocket.Chat ({code})")
            }
            _ => format!("Rocket.Chat refused the upload ({code})"),
        }
    }
}

/// Errors that mean the room is gone for this visitor: open a new one and resend.
pub fn is_room_problem(err: &Error) -> bool {
    err.refusal() == Some(Refusal::RoomGone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_problems_are_recognised_by_code() {
        for (code, expected) in [
            ("room-closed", true),
            ("invalid-room", true),
            ("invalid-token", true),
            ("no-agent-online", false),
        ] {
            let err = Error::Api {
                route: "x".into(),
                status: 400,
                error_type: Some(code.into()),
                message: String::new(),
            };
            assert_eq!(is_room_problem(&err), expected, "{code}");
            assert_eq!(
                err.is_no_agent_online(),
                code == "no-agent-online",
                "{code}"
            );
        }
    }

    #[test]
    fn permanent_refusals_are_the_ones_about_this_message() {
        for (code, permanent) in [
            ("error-contact-channel-blocked", true),
            ("message-length-exceeds-character-limit", true),
            ("error-message-size-exceeded", true),
            ("error-omnichannel-is-disabled", false),
            ("no-agent-online", false),
            ("room-closed", false),
            ("something-else", false),
        ] {
            let err = Error::Api {
                route: "livechat/message".into(),
                status: 400,
                error_type: Some(code.into()),
                message: String::new(),
            };
            assert_eq!(err.permanent_refusal().is_some(), permanent, "{code}");
            assert_eq!(Refusal::from_code(code).code(), code);
        }
        let transient = [
            Error::RateLimited {
                route: "livechat/message".into(),
                retry_after: Duration::from_secs(1),
            },
            Error::Server {
                route: "livechat/message".into(),
                status: 502,
            },
        ];
        for err in transient {
            assert_eq!(err.permanent_refusal(), None, "{err}");
        }
    }

    #[test]
    fn upload_refusals_say_why() {
        for (code, expected) in [
            ("error-type-not-allowed", "does not accept this file type"),
            ("error-size-not-allowed", "larger than Rocket.Chat accepts"),
            ("error-file-upload-disabled", "uploads are turned off"),
            ("something-else", "refused the upload (something-else)"),
        ] {
            let err = Error::Api {
                route: "x".into(),
                status: 400,
                error_type: Some(code.into()),
                message: String::new(),
            };
            let reason = err.upload_refusal();
            assert!(reason.contains(expected), "{code}: {reason}");
        }
    }
}
