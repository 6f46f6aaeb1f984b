//! The Livechat visitor API (reference/rocketchat.md §C): how a Messenger customer becomes a
//! Livechat visitor with a room and messages. These routes authenticate the visitor by token, not
//! the bot, so they are called without the bot's credentials.

use std::time::Duration;

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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

/// A message as `livechat/messages.history` returns it (the fields the relay reads).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct HistoryMessage {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub msg: String,
    pub t: Option<String>,
    pub token: Option<String>,
    #[serde(default)]
    pub ts: Value,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
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

    /// `GET livechat/messages.history/:rid`: the room's messages newer than `since_ms`, oldest
    /// first.
    pub async fn room_history(
        &self,
        token: &VisitorToken,
        rid: &RoomId,
        since_ms: u64,
    ) -> Result<Vec<HistoryMessage>> {
        #[derive(Deserialize)]
        struct Answer {
            messages: Vec<HistoryMessage>,
        }
        let route = format!("livechat/messages.history/{}", rid.as_str());
        let end = chrono_like_iso(since_ms);
        let builder = self
            .request(Method::GET, &route, Access::Anonymous)?
            .query(&[
                ("token", token.as_str()),
                ("end", end.as_str()),
                ("limit", "100"),
            ]);
        let mut answer: Answer = self.send(&route, builder).await?;
        answer.messages.reverse();
        Ok(answer.messages)
    }

    /// Downloads a file of a Livechat room as its visitor (reference §C7a): the bot is not a
    /// member of Livechat rooms, so its own credentials would get 403.
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

/// Errors that mean the room is gone for this visitor: open a new one and resend.
pub fn is_room_problem(err: &Error) -> bool {
    matches!(
        err.error_type(),
        Some("room-closed" | "invalid-room" | "invalid-token")
    )
}

/// ISO-8601 UTC with milliseconds, as Rocket.Chat's date query parameters expect.
fn chrono_like_iso(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let millis = epoch_ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(chrono_like_iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            chrono_like_iso(1_718_000_000_123),
            "2024-06-10T06:13:20.123Z"
        );
        assert_eq!(chrono_like_iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

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
        }
    }
}
