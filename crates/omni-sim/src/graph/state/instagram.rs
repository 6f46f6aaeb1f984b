//! Instagram Direct through a linked Facebook Page ("Instagram API with Facebook Login"): the
//! linked professional accounts, their customers (IGSIDs) and profiles, the send rules of the
//! Page's `/messages` edge for an IGSID, and `message_attachments`. The wire facts and their
//! sources are `docs/instagram.md`; each rule below cites the Meta page it follows, and the
//! choices Meta's documentation leaves open are marked "unverified".

use std::collections::HashMap;

use serde_json::{Value, json};

use super::super::{SentFile, SentMessage};
use super::{DAY_MS, Fault, State, random_string, unix_now_ms};

/// An Instagram professional account linked to a Page.
pub(in crate::graph) struct IgAccount {
    pub id: String,
    pub username: String,
    pub name: String,
}

/// What Meta knows of an Instagram user who wrote to an account.
pub(in crate::graph) struct IgUser {
    pub name: Option<String>,
    pub username: Option<String>,
}

/// The Instagram side of the simulated Facebook.
#[derive(Default)]
pub(in crate::graph) struct Instagram {
    /// Page id → its linked account.
    pub linked: HashMap<String, IgAccount>,
    /// (account id, IGSID) → profile.
    pub users: HashMap<(String, String), IgUser>,
    /// `attachment_id` → the uploaded file, for the send that refers to it.
    pub uploads: HashMap<String, SentFile>,
}

/// Text limit: "UTF-8 and 1000 bytes or less"
/// (https://developers.facebook.com/documentation/business-messaging/instagram-messaging/features/send-message).
const MAX_TEXT_BYTES: usize = 1000;
/// The upload limits per kind, from
/// https://developers.facebook.com/documentation/business-messaging/instagram-messaging/features/attachment-upload
/// (gif counts as an image, as that page lists it).
const MB: usize = 1024 * 1024;

fn upload_rule(kind: &str) -> Option<(&'static [&'static str], usize)> {
    Some(match kind {
        "image" => (&["png", "jpeg", "jpg", "gif"], 8 * MB),
        "video" => (&["mp4", "ogg", "avi", "mov", "quicktime", "webm"], 25 * MB),
        "audio" => (&["aac", "m4a", "wav", "x-wav", "mp4", "x-m4a"], 25 * MB),
        "file" => (&["pdf"], 25 * MB),
        _ => return None,
    })
}

impl State {
    pub fn link_instagram(&mut self, page: &str, id: &str, username: &str, name: &str) {
        self.instagram.linked.insert(
            page.to_owned(),
            IgAccount {
                id: id.to_owned(),
                username: username.to_owned(),
                name: name.to_owned(),
            },
        );
    }

    pub fn unlink_instagram(&mut self, page: &str) {
        self.instagram.linked.remove(page);
    }

    /// An Instagram user who has just written to the account: their profile is readable and the
    /// 24-hour window is open.
    pub fn add_igsid(&mut self, account: &str, igsid: &str, name: Option<&str>, username: &str) {
        self.instagram.users.insert(
            (account.to_owned(), igsid.to_owned()),
            IgUser {
                name: name.map(str::to_owned),
                username: Some(username.to_owned()),
            },
        );
        self.record_user_message(account, igsid, unix_now_ms());
    }

    /// The account linked to `page` when `recipient` is one of its customers.
    fn instagram_recipient(&self, page: &str, recipient: &str) -> Option<String> {
        let account = &self.instagram.linked.get(page)?.id;
        self.psids
            .contains_key(&(account.clone(), recipient.to_owned()))
            .then(|| account.clone())
    }

    /// `GET /{id}`: the page's linked account, an Instagram user's profile, or a Messenger
    /// user's profile.
    pub fn node(
        &self,
        token: Option<&str>,
        id: &str,
        fields: Option<&str>,
    ) -> Result<Value, Fault> {
        let asks_link = fields.is_some_and(|f| f.contains("instagram_business_account"));
        let page = self.page_of(token, "me")?;
        if asks_link && (id == page || id == "me") {
            return self.linked_account(token, &page);
        }
        match self.instagram.linked.get(&page) {
            Some(account)
                if self
                    .psids
                    .contains_key(&(account.id.clone(), id.to_owned())) =>
            {
                self.instagram_profile(&account.id, id, fields)
            }
            _ => self.profile(token, id, fields),
        }
    }

    /// `instagram_business_account{id,username,name}` of a Page: the nested object, or only the
    /// Page's `id` when nothing is linked
    /// (https://developers.facebook.com/documentation/instagram-platform/instagram-graph-api/reference/page).
    /// The field needs `instagram_basic`; the answer to a token without it is unverified
    /// (`docs/instagram.md` §2.1): the simulator refuses with code 10.
    fn linked_account(&self, token: Option<&str>, page: &str) -> Result<Value, Fault> {
        let scopes = &self.check(token.unwrap_or_default())?.scopes;
        if !scopes.iter().any(|s| s == "instagram_basic") {
            return Err(Fault::new(
                10,
                None,
                "(#10) To use 'Instagram Graph API', your use of this endpoint must be reviewed and approved by Facebook (instagram_basic).",
            ));
        }
        Ok(match self.instagram.linked.get(page) {
            Some(account) => json!({
                "instagram_business_account": {
                    "id": account.id, "username": account.username, "name": account.name,
                },
                "id": page,
            }),
            None => json!({ "id": page }),
        })
    }

    /// The Instagram user profile: `name` (may be null), `username`, `profile_pic`; no
    /// `first_name`/`last_name`
    /// (https://developers.facebook.com/documentation/business-messaging/instagram-messaging/features/user-profile).
    /// It is asked only for people who wrote, so consent (230) is given; a person the simulator
    /// knows only from a webhook has no profile here and gets 9010, "No matching Instagram user",
    /// the other error integrators see (`docs/instagram.md` §5), as Messenger's such users get
    /// 2018218.
    fn instagram_profile(
        &self,
        account: &str,
        igsid: &str,
        fields: Option<&str>,
    ) -> Result<Value, Fault> {
        let Some(user) = self
            .instagram
            .users
            .get(&(account.to_owned(), igsid.to_owned()))
        else {
            return Err(Fault::new(9010, None, "No matching Instagram user"));
        };
        let mut out = json!({ "id": igsid });
        for field in fields.unwrap_or("name,profile_pic").split(',') {
            let value = match field.trim() {
                "id" => continue,
                "name" => json!(user.name),
                "username" => json!(user.username),
                "profile_pic" => json!(format!(
                    "https://scontent.cdninstagram.com/v/t51.2885-19/{igsid}_n.jpg"
                )),
                other => {
                    return Err(Fault::param(format!(
                        "(#100) Tried accessing nonexisting field ({other}) on node type (InstagramUser)"
                    )));
                }
            };
            out[field.trim()] = value;
        }
        Ok(out)
    }

    /// `POST /{page}/messages` to an IGSID of the page's linked account, with the rules of
    /// https://developers.facebook.com/documentation/business-messaging/instagram-messaging/features/send-message
    /// (`docs/instagram.md` §6). Returns `None` when the recipient is not an Instagram customer
    /// of the page, so the Messenger rules apply.
    pub(super) fn instagram_send(
        &mut self,
        page: &str,
        msg: &mut SentMessage,
    ) -> Option<Result<Value, Fault>> {
        let account = self.instagram_recipient(page, &msg.recipient)?;
        Some(self.instagram_checked_send(&account, msg))
    }

    fn instagram_checked_send(
        &mut self,
        account: &str,
        msg: &mut SentMessage,
    ) -> Result<Value, Fault> {
        msg.instagram = true;
        let last_ms = self
            .psids
            .get(&(account.to_owned(), msg.recipient.clone()))
            .map(|u| u.last_user_message_ms)
            .unwrap_or_default();
        if let Some(action) = &msg.sender_action {
            // typing_on, typing_off and mark_seen take nothing else in the body; react takes
            // payload.message_id and reaction, unreact the message_id only (§6.5 of
            // docs/instagram.md, from the send-message page's sender actions). The page shows
            // only `love` as a reaction; whether other values pass is unverified, and the
            // simulator takes any, as for Messenger.
            if msg.text.is_some() || msg.attachment.is_some() {
                return Err(Fault::param(
                    "(#100) sender_action cannot be sent with message",
                ));
            }
            match action.as_str() {
                "typing_on" | "typing_off" | "mark_seen" => {}
                "react" | "unreact" => {
                    let react = action == "react";
                    // The customer's mids are known under the account, our sends under the Page.
                    self.check_reaction(account, msg, react)
                        .or_else(|_| self.check_reaction(&msg.page, msg, react))?;
                }
                _ => {
                    return Err(Fault::param(
                        "(#100) Param sender_action must be one of {typing_on, typing_off, mark_seen, react, unreact}",
                    ));
                }
            }
            self.sent.push(msg.clone());
            return Ok(json!({ "recipient_id": msg.recipient }));
        }
        // HUMAN_AGENT is the only tag Instagram documents; the answer to another is unverified
        // (code 100 here). Samples leave messaging_type out, so its absence means RESPONSE.
        let window_days = match (msg.messaging_type.as_deref(), msg.tag.as_deref()) {
            (None | Some("RESPONSE"), None) => 1,
            (Some("MESSAGE_TAG"), Some("HUMAN_AGENT")) if self.human_agent => 7,
            (Some("MESSAGE_TAG"), Some("HUMAN_AGENT")) => {
                return Err(Fault::new(
                    10,
                    None,
                    "(#10) Application does not have the capability to make this API call.",
                ));
            }
            (Some("MESSAGE_TAG"), _) => {
                return Err(Fault::param(
                    "(#100) Param tag must be HUMAN_AGENT for Instagram messages",
                ));
            }
            _ => {
                return Err(Fault::param(
                    "(#100) Param messaging_type must be one of {RESPONSE, MESSAGE_TAG}",
                ));
            }
        };
        // Files reach Instagram through message_attachments or a URL; a multipart filedata on
        // /messages is not documented for Instagram (refused here, the text is the simulator's).
        if msg.file.is_some() {
            return Err(Fault::param(
                "(#100) Upload attachment failure: upload Instagram media with /message_attachments",
            ));
        }
        match (&msg.text, &msg.attachment) {
            (Some(text), None) if text.len() > MAX_TEXT_BYTES => {
                return Err(Fault::param(
                    "(#100) Length of param message[text] must be 1000 bytes or less",
                ));
            }
            (Some(text), None) if !text.is_empty() => {}
            (None, Some(attachment)) => {
                let payload = attachment.get("payload");
                let id = payload
                    .and_then(|p| p.get("attachment_id"))
                    .and_then(Value::as_str);
                let url = payload.and_then(|p| p.get("url")).and_then(Value::as_str);
                match (id, url) {
                    (Some(id), _) => {
                        let file = self.instagram.uploads.get(id).cloned().ok_or_else(|| {
                            Fault::param("(#100) Invalid attachment_id: upload it with /message_attachments first")
                        })?;
                        msg.file = Some(file);
                    }
                    (None, Some(_)) => {}
                    (None, None) => {
                        return Err(Fault::param(
                            "(#100) Upload attachment failure: no url or attachment_id",
                        ));
                    }
                }
            }
            _ => {
                return Err(Fault::new(
                    100,
                    Some(2018034),
                    "(#100) Message cannot be empty, must provide valid attachment or text",
                ));
            }
        }
        // Another app (or the Instagram Inbox) owning the thread: 100/2534037
        // (https://github.com/chatwoot/chatwoot/issues/6550).
        if self.is_standby(account, &msg.recipient) {
            return Err(Fault::new(
                100,
                Some(2534037),
                "(#100) The action is invalid since it's not the thread owner.",
            ));
        }
        // 24 hours after the customer's last message, 7 days with HUMAN_AGENT; outside it 10/2534022
        // (https://developers.facebook.com/docs/instagram-messaging/overview).
        if unix_now_ms().saturating_sub(last_ms) > window_days * DAY_MS {
            let mut fault = Fault::new(
                10,
                Some(2534022),
                "(#10) This message is sent outside of allowed window.",
            );
            // Seen as HTTP 403 on graph.instagram.com; on graph.facebook.com unverified.
            fault.status = 403;
            return Err(fault);
        }
        // The echo's mid equals this message_id (docs/instagram.md §4.7).
        let message_id = format!("aWdf{}", random_string(40));
        msg.message_id = Some(message_id.clone());
        self.sent.push(msg.clone());
        self.stats.messages_sent += 1;
        Ok(json!({ "recipient_id": msg.recipient, "message_id": message_id }))
    }

    /// `POST /{page}/message_attachments` (multipart `platform`, `message`, `filedata`): checks
    /// the kind, format, size and ASCII name of
    /// https://developers.facebook.com/documentation/business-messaging/instagram-messaging/features/attachment-upload
    /// for `platform=instagram`, and answers `{"attachment_id": …}`. Whether Meta refuses the
    /// upload without `instagram_manage_comments` is unverified; the simulator does not.
    pub fn upload_attachment(
        &mut self,
        token: Option<&str>,
        page: &str,
        fields: &HashMap<String, String>,
        file: Option<SentFile>,
    ) -> Result<Value, Fault> {
        self.page_of(token, page)?;
        let message: Value = fields
            .get("message")
            .and_then(|m| serde_json::from_str(m).ok())
            .ok_or_else(|| Fault::param("(#100) The parameter message is required"))?;
        let kind = message
            .get("attachment")
            .and_then(|a| a.get("type"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let file =
            file.ok_or_else(|| Fault::param("(#100) Upload attachment failure: no filedata"))?;
        if fields.get("platform").map(String::as_str) == Some("instagram") {
            let (formats, max) = upload_rule(kind).ok_or_else(|| {
                Fault::param("(#100) Param message[attachment][type] must be one of {image, audio, video, file}")
            })?;
            let name = file.name.clone().unwrap_or_default();
            if !name.is_ascii() {
                return Err(Fault::param(
                    "(#100) Upload attachment failure: file names must be ASCII",
                ));
            }
            let subtype = file
                .mime
                .as_deref()
                .and_then(|m| m.split('/').nth(1))
                .unwrap_or_default()
                .to_ascii_lowercase();
            let extension = name
                .rsplit_once('.')
                .map(|(_, e)| e.to_ascii_lowercase())
                .unwrap_or_default();
            if !formats.contains(&subtype.as_str()) && !formats.contains(&extension.as_str()) {
                return Err(Fault::param(format!(
                    "(#100) Upload attachment failure: {kind} attachments must be one of {}",
                    formats.join(", ")
                )));
            }
            if file.bytes.len() > max {
                return Err(Fault::param(format!(
                    "(#100) Upload attachment failure: {kind} attachments are limited to {} MB",
                    max / MB
                )));
            }
        }
        let id = format!(
            "18{}",
            random_string(14)
                .bytes()
                .map(|b| char::from(b'0' + b % 10))
                .collect::<String>()
        );
        self.instagram.uploads.insert(id.clone(), file);
        Ok(json!({ "attachment_id": id }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Subject;
    use super::*;

    /// A state with page `p` linked to account `ig`, customer `c` who just wrote, and a page
    /// token with `instagram_basic`.
    fn linked() -> (State, String) {
        let mut state = State::new("1", "s");
        state.add_user("u", "Ursula");
        state.add_page("u", "p", "Page", &["MODERATE"]);
        state.link_instagram("p", "ig", "shop", "Shop");
        state.add_igsid("ig", "c", Some("Camille"), "camille");
        let scopes = vec!["instagram_basic".to_owned()];
        let user = state.issue(Subject::User("u".into()), None, scopes.clone(), 0);
        let token = state.derive_page_token("p", "u", &user, &scopes);
        (state, token)
    }

    fn text(recipient: &str, text: &str) -> SentMessage {
        SentMessage {
            recipient: recipient.to_owned(),
            messaging_type: Some("RESPONSE".into()),
            text: Some(text.to_owned()),
            ..SentMessage::default()
        }
    }

    fn upload(name: &str, mime: &str, bytes: usize) -> (HashMap<String, String>, SentFile) {
        let kind = match mime.split('/').next() {
            Some("application") => "file",
            Some(other) => other,
            None => "file",
        };
        let fields = HashMap::from([
            ("platform".to_owned(), "instagram".to_owned()),
            (
                "message".to_owned(),
                json!({"attachment": {"type": kind, "payload": {"is_reusable": true}}}).to_string(),
            ),
        ]);
        let file = SentFile {
            name: Some(name.to_owned()),
            mime: Some(mime.to_owned()),
            bytes: vec![0; bytes],
        };
        (fields, file)
    }

    #[test]
    fn the_page_shows_its_linked_account_and_the_customers_profile() {
        let (state, token) = linked();
        let node = state
            .node(
                Some(&token),
                "p",
                Some("instagram_business_account{id,username,name}"),
            )
            .expect("linked account");
        assert_eq!(node["instagram_business_account"]["username"], "shop");
        let profile = state
            .node(Some(&token), "c", Some("name,username"))
            .expect("profile");
        assert_eq!(
            (profile["name"].as_str(), profile["username"].as_str()),
            (Some("Camille"), Some("camille"))
        );
        let fault = state
            .node(Some(&token), "c", Some("first_name"))
            .expect_err("no first_name on Instagram");
        assert_eq!(fault.code, 100);
    }

    #[test]
    fn sends_follow_instagrams_rules() {
        let (mut state, token) = linked();
        let ok = state.send(Some(&token), "p", text("c", "Bonjour"));
        assert!(ok.is_ok(), "{ok:?}");
        assert!(state.sent.last().is_some_and(|m| m.instagram));
        let long = state.send(Some(&token), "p", text("c", &"é".repeat(501)));
        assert_eq!(long.map_err(|f| f.code).err(), Some(100), "1002 bytes");
        let mut tagged = text("c", "later");
        tagged.messaging_type = Some("MESSAGE_TAG".into());
        tagged.tag = Some("CUSTOMER_FEEDBACK".into());
        assert_eq!(
            state
                .send(Some(&token), "p", tagged)
                .map_err(|f| f.code)
                .err(),
            Some(100)
        );
        state.set_psid_window("ig", "c", 1);
        let late = state
            .send(Some(&token), "p", text("c", "too late"))
            .expect_err("outside the window");
        assert_eq!((late.code, late.subcode), (10, Some(2534022)));
    }

    #[test]
    fn uploads_follow_the_attachment_table_and_ids_are_single_sourced() {
        let (mut state, token) = linked();
        for (name, mime, bytes, accepted) in [
            ("a.png", "image/png", 1000, true),
            ("a.pdf", "application/pdf", 1000, true),
            ("a.docx", "application/msword", 1000, false),
            ("big.png", "image/png", 9 * MB, false),
            ("café.png", "image/png", 1000, false),
        ] {
            let (fields, file) = upload(name, mime, bytes);
            let answer = state.upload_attachment(Some(&token), "p", &fields, Some(file));
            assert_eq!(answer.is_ok(), accepted, "{name}: {answer:?}");
        }
        let id = state
            .instagram
            .uploads
            .keys()
            .next()
            .cloned()
            .expect("an upload");
        let mut by_id = text("c", "");
        by_id.text = None;
        by_id.attachment = Some(json!({"type": "image", "payload": {"attachment_id": id}}));
        assert!(state.send(Some(&token), "p", by_id.clone()).is_ok());
        by_id.attachment = Some(json!({"type": "image", "payload": {"attachment_id": "999"}}));
        assert!(
            state.send(Some(&token), "p", by_id).is_err(),
            "an id never uploaded"
        );
    }
}
