//! The simulated server's data: users, rooms, messages, Livechat visitors and departments, files,
//! settings, permissions, live WebSocket connections with their subscriptions, injected faults and
//! counters. Everything sits behind one mutex that is never held across an `.await`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::wire::{DateForm, date, now_ms, random_id, random_secret};

pub(super) struct User {
    pub id: String,
    pub username: String,
    pub name: String,
    /// Lower-case hex SHA-256 of the password, what a DDP `{"digest":…}` login must present.
    pub password_digest: String,
    pub roles: Vec<String>,
    pub tokens: Vec<LoginToken>,
    pub totp: bool,
    pub livechat_available: bool,
    pub online: bool,
    pub created_ms: i64,
}

pub(super) struct LoginToken {
    pub token: String,
    /// Personal access tokens have no `when`, so they never expire.
    pub pat: bool,
    pub when_ms: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum RoomKind {
    Direct,
    Channel,
    /// A private group: only its members see it.
    Private,
    Livechat,
}

impl RoomKind {
    pub fn t(self) -> &'static str {
        match self {
            RoomKind::Direct => "d",
            RoomKind::Channel => "c",
            RoomKind::Private => "p",
            RoomKind::Livechat => "l",
        }
    }
}

pub(super) struct Room {
    pub id: String,
    pub kind: RoomKind,
    pub name: Option<String>,
    /// User ids with a subscription to the room.
    pub members: BTreeSet<String>,
    pub ts_ms: i64,
    pub live: Option<LiveRoom>,
}

pub(super) struct LiveRoom {
    pub visitor_id: String,
    pub visitor_token: String,
    pub visitor_username: String,
    pub fname: String,
    pub department_id: Option<String>,
    pub open: bool,
    pub served_by: Option<String>,
    pub closed_ms: Option<i64>,
    /// `livechatData`: room-scope custom fields.
    pub data: BTreeMap<String, String>,
}

pub(super) struct Visitor {
    pub id: String,
    pub token: String,
    pub name: Option<String>,
    pub username: String,
    pub department: Option<String>,
    pub ts_ms: i64,
    /// The contact's channel is blocked (`omnichannel/contacts.block`): no room opens and no
    /// message is taken for it (`docs/rocketchat.md` §4.8).
    pub blocked: bool,
}

pub(super) struct Department {
    pub id: String,
    pub name: String,
    pub agents: Vec<String>,
    pub enabled: bool,
}

pub(super) struct StoredFile {
    pub rid: String,
    pub name: String,
    pub mime: String,
    pub bytes: Vec<u8>,
}

#[derive(Clone)]
pub(super) struct FileRef {
    pub id: String,
    pub name: String,
    pub mime: String,
    pub size: usize,
    /// The thumbnail the server generated for an image (`Message_Attachments_Thumbnails_Enabled`).
    pub thumb: Option<Box<FileRef>>,
}

/// Who wrote a message: a user (`u` from the users collection) or a Livechat visitor.
#[derive(Clone)]
pub(super) struct Author {
    pub id: String,
    pub username: String,
    pub name: Option<String>,
}

#[derive(Clone)]
pub(super) struct Msg {
    pub id: String,
    pub rid: String,
    pub msg: String,
    pub t: Option<String>,
    pub u: Author,
    /// Set only on messages a Livechat visitor sent (`isMessageFromVisitor`).
    pub token: Option<String>,
    pub alias: Option<String>,
    pub ts_ms: i64,
    pub updated_ms: i64,
    pub edited: Option<(i64, Author)>,
    pub file: Option<FileRef>,
    /// Quote attachments, built when the message is saved (see `State::quote_attachments`).
    pub quotes: Vec<Value>,
    /// `reactions`: `:name:` → the usernames who reacted, in order.
    pub reactions: BTreeMap<String, Vec<String>>,
}

impl Msg {
    /// The message document as the server sends it: EJSON dates on DDP, ISO strings over REST.
    pub fn to_json(&self, form: DateForm) -> Value {
        let mut u = json!({ "_id": self.u.id, "username": self.u.username });
        if let Some(name) = &self.u.name {
            u["name"] = json!(name);
        }
        let mut m = json!({
            "_id": self.id,
            "rid": self.rid,
            "msg": self.msg,
            "ts": date(self.ts_ms, form),
            "u": u,
            "_updatedAt": date(self.updated_ms, form),
            "mentions": [],
            "channels": [],
            "urls": [],
        });
        if let Some(t) = &self.t {
            m["t"] = json!(t);
            m["groupable"] = json!(false);
        }
        if let Some(token) = &self.token {
            m["token"] = json!(token);
        }
        if let Some(alias) = &self.alias {
            m["alias"] = json!(alias);
        }
        if let Some((at, by)) = &self.edited {
            m["editedAt"] = date(*at, form);
            m["editedBy"] = json!({ "_id": by.id, "username": by.username });
        }
        if !self.reactions.is_empty() {
            let reactions: serde_json::Map<String, Value> = self
                .reactions
                .iter()
                .map(|(name, usernames)| (name.clone(), json!({ "usernames": usernames })))
                .collect();
            m["reactions"] = Value::Object(reactions);
        }
        if !self.quotes.is_empty() {
            m["attachments"] = json!(self.quotes);
        }
        if let Some(f) = &self.file {
            let link = format!("/file-upload/{}/{}", f.id, url_path_segment(&f.name));
            let file = json!({ "_id": f.id, "name": f.name, "type": f.mime, "size": f.size, "format": "" });
            m["file"] = file.clone();
            m["files"] = json!([file]);
            let mut attachment = json!({
                "ts": date(self.ts_ms, form),
                "title": f.name,
                "title_link": link,
                "title_link_download": true,
                "type": "file",
            });
            let kind = f.mime.split('/').next().unwrap_or_default();
            if matches!(kind, "image" | "audio" | "video") {
                attachment[format!("{kind}_url")] = json!(link);
                attachment[format!("{kind}_type")] = json!(f.mime);
                attachment[format!("{kind}_size")] = json!(f.size);
            }
            // `parseFileIntoMessageAttachments` in
            // `apps/meteor/app/file-upload/server/methods/sendFileMessage.ts`: an image's
            // thumbnail is the second `files[]` entry and `image_url` points at it (under the
            // original's name); `file` and `title_link` stay on the original
            // (`docs/rocketchat.md` §2.8).
            if let Some(t) = &f.thumb {
                let thumb = json!({ "_id": t.id, "name": t.name, "type": t.mime, "size": t.size,
                                    "format": "", "typeGroup": "image" });
                m["files"] = json!([m["file"].clone(), thumb]);
                attachment["image_url"] = json!(format!(
                    "/file-upload/{}/{}",
                    t.id,
                    url_path_segment(&f.name)
                ));
                attachment["image_type"] = json!(t.mime);
                attachment["image_dimensions"] = json!({ "width": 480, "height": 360 });
            }
            let mut attachments = self.quotes.clone();
            attachments.push(attachment);
            m["attachments"] = json!(attachments);
        }
        m
    }
}

/// Percent-encodes a file name for the `/file-upload/<id>/<name>` link, as `encodeURI` would.
fn url_path_segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The emoji names the simulator's `emoji.list` knows: a subset of the JoyPixels names Rocket.Chat
/// registers (`apps/meteor/app/emoji-emojione/server/lib.ts`), with the ones Messenger's default
/// reactions map to. Any other name is refused as the real server refuses an unknown one.
const KNOWN_EMOJI: &[&str] = &[
    "+1",
    "-1",
    "angry",
    "clap",
    "cry",
    "fire",
    "grinning",
    "heart",
    "heart_eyes",
    "joy",
    "laughing",
    "ok_hand",
    "open_mouth",
    "pray",
    "rage",
    "slight_smile",
    "smile",
    "tada",
    "thumbsdown",
    "thumbsup",
    "thumbsup_tone1",
    "thumbsup_tone2",
    "thumbsup_tone3",
    "thumbsup_tone4",
    "thumbsup_tone5",
    "wave",
    "wink",
];

/// What one DDP subscription listens to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Sub {
    MyMessages,
    Room(String),
    NotifyUser(String),
    /// `stream-notify-room` `<rid>/user-activity`, for the room id.
    RoomActivity(String),
    /// `stream-notify-room` `<rid>/deleteMessage`, for the room id.
    RoomDeletions(String),
}

/// A live WebSocket as the rest of the server sees it.
pub(super) struct Conn {
    pub tx: mpsc::Sender<String>,
    /// Cancelled to end the connection: abruptly (fault injection) or as a slow consumer.
    pub kill: CancellationToken,
    pub slow: Arc<AtomicBool>,
    pub user: Option<String>,
    pub subs: HashMap<String, Sub>,
}

#[derive(Default)]
pub(super) struct Faults {
    pub refuse: bool,
    pub blackhole_until: Option<Instant>,
    pub latency: Duration,
    pub fail_next: usize,
    pub fail_status: u16,
    pub rate_limit_next: usize,
}

/// One window of Meteor's `RateLimiter` for one key (IP + route + method).
pub(super) struct RateWindow {
    pub started: Instant,
    pub count: u64,
}

pub(super) struct State {
    pub users: BTreeMap<String, User>,
    pub rooms: BTreeMap<String, Room>,
    pub msgs: Vec<Msg>,
    /// The `_id`s in `msgs`, so that refusing a repeated `_id` does not scan every message: a
    /// drain of a million held events posts a million messages.
    msg_ids: HashSet<String>,
    pub settings: BTreeMap<String, Value>,
    /// permission id → roles that hold it.
    pub perms: BTreeMap<String, BTreeSet<String>>,
    pub departments: Vec<Department>,
    /// Omnichannel custom fields: id → whether its scope is `room` (else `visitor`).
    pub custom_fields: BTreeMap<String, bool>,
    pub visitors: Vec<Visitor>,
    pub files: HashMap<String, StoredFile>,
    pub conns: HashMap<u64, Conn>,
    pub next_conn: u64,
    pub guest_seq: u64,
    pub faults: Faults,
    pub counters: super::SimStats,
    pub rate: HashMap<String, RateWindow>,
    pub rest_log: super::rest::RestLog,
}

/// Settings the simulator knows, with Rocket.Chat's defaults (`apps/meteor/server/settings/*.ts`),
/// except `Livechat_enabled`, which is on here so Omnichannel works out of the box.
fn default_settings(rate_limiter: bool) -> BTreeMap<String, Value> {
    [
        ("Livechat_enabled", json!(true)),
        ("Livechat_accept_chats_with_no_agents", json!(false)),
        ("Livechat_Routing_Method", json!("Auto_Selection")),
        ("Livechat_fileupload_enabled", json!(true)),
        ("Message_AllowUnrecognizedSlashCommand", json!(false)),
        ("Message_MaxAllowedSize", json!(5000)),
        ("FileUpload_Enabled", json!(true)),
        ("FileUpload_MaxFileSize", json!(104_857_600)),
        ("FileUpload_MediaTypeWhiteList", json!("")),
        ("FileUpload_MediaTypeBlackList", json!("image/svg+xml")),
        ("FileUpload_ProtectFiles", json!(true)),
        ("FileUpload_Restrict_to_room_members", json!(true)),
        ("API_Enable_Rate_Limiter", json!(rate_limiter)),
        ("API_Enable_Rate_Limiter_Limit_Calls_Default", json!(10)),
        ("API_Enable_Rate_Limiter_Limit_Time_Default", json!(60_000)),
        ("Site_Url", json!("http://127.0.0.1")),
        // `apps/meteor/server/settings/message.ts`: editing is allowed by default.
        ("Message_AllowEditing", json!(true)),
        // `apps/meteor/server/settings/message.ts`: a deleted message is removed, not shown as
        // deleted, by default.
        ("Message_ShowDeletedStatus", json!(false)),
        // `apps/meteor/server/settings/message.ts`; thumbnails are 480 wide at most.
        ("Message_Attachments_Thumbnails_Enabled", json!(true)),
        ("Livechat_enable_message_character_limit", json!(false)),
        ("Livechat_message_character_limit", json!(0)),
        ("API_Default_Count", json!(50)),
        ("API_Upper_Count_Limit", json!(100)),
        ("API_Allow_Infinite_Count", json!(true)),
    ]
    .into_iter()
    .chain(OTHER_PUBLIC_SETTINGS.iter().map(|id| (*id, json!(false))))
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Settings `settings.public` returns and `settings/:_id` shows without `view-privileged-setting`.
pub(super) const PUBLIC_SETTINGS: &[&str] = &[
    "Livechat_enabled",
    "Message_AllowUnrecognizedSlashCommand",
    "Message_MaxAllowedSize",
    "FileUpload_Enabled",
    "FileUpload_MaxFileSize",
    "FileUpload_MediaTypeWhiteList",
    "FileUpload_MediaTypeBlackList",
    "FileUpload_ProtectFiles",
    "Site_Url",
];

/// Public settings the gateway never reads that sort before `Livechat_*`, so a first page of
/// `settings.public` (50 by `_id`) holds none of the settings above, as on a real server
/// (`apps/meteor/server/settings/accounts.ts`). Their values do not matter here.
pub(super) const OTHER_PUBLIC_SETTINGS: &[&str] = &[
    "Accounts_AllowAnonymousRead",
    "Accounts_AllowAnonymousWrite",
    "Accounts_AllowDeleteOwnAccount",
    "Accounts_AllowEmailChange",
    "Accounts_AllowEmailNotifications",
    "Accounts_AllowFeaturePreview",
    "Accounts_AllowInvisibleStatusOption",
    "Accounts_AllowPasswordChange",
    "Accounts_AllowPasswordChangeForOAuthUsers",
    "Accounts_AllowRealNameChange",
    "Accounts_AllowUserAvatarChange",
    "Accounts_AllowUserProfileChange",
    "Accounts_AllowUserStatusMessageChange",
    "Accounts_AllowUsernameChange",
    "Accounts_AvatarBlockUnauthenticatedAccess",
    "Accounts_AvatarExternalProviderUrl",
    "Accounts_AvatarResize",
    "Accounts_AvatarSize",
    "Accounts_CustomFields",
    "Accounts_CustomFieldsToShowInUserInfo",
    "Accounts_Default_User_Preferences_alsoSendThreadToChannel",
    "Accounts_Default_User_Preferences_autoImageLoad",
    "Accounts_Default_User_Preferences_collapseMediaByDefault",
    "Accounts_Default_User_Preferences_desktopNotifications",
    "Accounts_Default_User_Preferences_displayAvatars",
    "Accounts_Default_User_Preferences_emailNotificationMode",
    "Accounts_Default_User_Preferences_enableAutoAway",
    "Accounts_Default_User_Preferences_hideFlexTab",
    "Accounts_Default_User_Preferences_hideRoles",
    "Accounts_Default_User_Preferences_hideUsernames",
    "Accounts_Default_User_Preferences_idleTimeLimit",
    "Accounts_Default_User_Preferences_mobileNotifications",
    "Accounts_Default_User_Preferences_newMessageNotification",
    "Accounts_Default_User_Preferences_newRoomNotification",
    "Accounts_Default_User_Preferences_notifyCalendarEvents",
    "Accounts_Default_User_Preferences_pushNotifications",
    "Accounts_Default_User_Preferences_receiveLoginDetectionEmail",
    "Accounts_Default_User_Preferences_saveMobileBandwidth",
    "Accounts_Default_User_Preferences_sendOnEnter",
    "Accounts_Default_User_Preferences_showThreadsInMainChannel",
    "Accounts_Default_User_Preferences_sidebarGroupByType",
    "Accounts_Default_User_Preferences_sidebarShowFavorites",
    "Accounts_Default_User_Preferences_sidebarShowUnread",
    "Accounts_Default_User_Preferences_sidebarSortby",
    "Accounts_Default_User_Preferences_sidebarViewMode",
    "Accounts_Default_User_Preferences_unreadAlert",
    "Accounts_Default_User_Preferences_useEmojis",
    "Accounts_Directory_DefaultView",
    "Accounts_EmailVerification",
    "Accounts_ForgetUserSessionOnWindowClose",
    "Accounts_LoginExpiration",
    "Accounts_ManuallyApproveNewUsers",
    "Accounts_PasswordReset",
    "Accounts_RegistrationForm",
];

/// The default role grants of the permissions the simulator checks (`upsertPermissions.ts`).
fn default_permissions() -> BTreeMap<String, BTreeSet<String>> {
    let table: &[(&str, &[&str])] = &[
        ("api-bypass-rate-limit", &["admin", "bot", "app"]),
        ("view-full-other-user-info", &["admin"]),
        ("view-privileged-setting", &["admin"]),
        ("send-many-messages", &["admin", "bot", "app"]),
        (
            "create-d",
            &["admin", "user", "bot", "app", "livechat-agent"],
        ),
        ("view-c-room", &["admin", "user", "bot", "app", "anonymous"]),
        ("view-d-room", &["admin", "user", "bot", "app", "guest"]),
        (
            "view-livechat-rooms",
            &["admin", "livechat-manager", "livechat-monitor"],
        ),
        (
            "view-l-room",
            &[
                "admin",
                "livechat-manager",
                "livechat-agent",
                "livechat-monitor",
            ],
        ),
        (
            "view-livechat-departments",
            &["admin", "livechat-manager", "livechat-monitor"],
        ),
    ];
    table
        .iter()
        .map(|(p, roles)| {
            (
                (*p).to_owned(),
                roles.iter().map(|r| (*r).to_owned()).collect(),
            )
        })
        .collect()
}

pub(super) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// What `livechat/room` found when asked to open a room.
pub(super) enum RoomRequest {
    Existing(String),
    Created(String),
    NoAgentOnline,
}

impl State {
    pub fn new(rate_limiter: bool) -> Self {
        Self {
            users: BTreeMap::new(),
            rooms: BTreeMap::new(),
            msgs: Vec::new(),
            msg_ids: HashSet::new(),
            settings: default_settings(rate_limiter),
            perms: default_permissions(),
            departments: Vec::new(),
            custom_fields: BTreeMap::new(),
            visitors: Vec::new(),
            files: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 0,
            guest_seq: 0,
            faults: Faults::default(),
            counters: super::SimStats::default(),
            rate: HashMap::new(),
            rest_log: super::rest::RestLog::from_env(),
        }
    }

    pub fn setting_bool(&self, id: &str) -> bool {
        self.settings
            .get(id)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    pub fn setting_i64(&self, id: &str) -> i64 {
        self.settings.get(id).and_then(Value::as_i64).unwrap_or(0)
    }

    pub fn setting_str(&self, id: &str) -> &str {
        self.settings
            .get(id)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn user_by_name(&self, username: &str) -> Option<&User> {
        self.users.values().find(|u| u.username == username)
    }

    pub fn uid_of(&self, username: &str) -> Option<String> {
        self.user_by_name(username).map(|u| u.id.clone())
    }

    /// The user a REST call authenticates as (`X-User-Id` + `X-Auth-Token`), if both match.
    pub fn user_by_credentials(&self, uid: &str, token: &str) -> Option<&User> {
        self.users
            .get(uid)
            .filter(|u| u.tokens.iter().any(|t| t.token == token))
    }

    /// The user whose session token or personal access token this is (DDP `resume`).
    pub fn user_by_resume(&self, token: &str) -> Option<(&User, &LoginToken)> {
        self.users
            .values()
            .find_map(|u| u.tokens.iter().find(|t| t.token == token).map(|t| (u, t)))
    }

    pub fn issue_token(&mut self, uid: &str, pat: bool) -> Option<(String, i64)> {
        let user = self.users.get_mut(uid)?;
        let token = random_secret();
        let when_ms = now_ms();
        user.tokens.push(LoginToken {
            token: token.clone(),
            pat,
            when_ms,
        });
        Some((token, when_ms))
    }

    pub fn has_permission(&self, uid: &str, permission: &str) -> bool {
        let (Some(user), Some(roles)) = (self.users.get(uid), self.perms.get(permission)) else {
            return false;
        };
        user.roles.iter().any(|r| roles.contains(r))
    }

    /// `canAccessRoom`: members always; public channels with `view-c-room`; Livechat rooms with
    /// `view-livechat-rooms` or for the serving agent.
    pub fn can_access(&self, uid: &str, room: &Room) -> bool {
        if room.members.contains(uid) {
            return true;
        }
        match room.kind {
            RoomKind::Channel => self.has_permission(uid, "view-c-room"),
            RoomKind::Direct | RoomKind::Private => false,
            RoomKind::Livechat => {
                self.has_permission(uid, "view-livechat-rooms")
                    || room.live.as_ref().and_then(|l| l.served_by.as_deref()) == Some(uid)
            }
        }
    }

    pub fn author(&self, uid: &str) -> Option<Author> {
        self.users.get(uid).map(|u| Author {
            id: u.id.clone(),
            username: u.username.clone(),
            name: Some(u.name.clone()),
        })
    }

    pub fn message(&self, id: &str) -> Option<&Msg> {
        self.msgs.iter().find(|m| m.id == id)
    }

    /// Stores a new message and emits it on every stream that may see it. A message whose `_id`
    /// exists already is skipped and `false` returned, as `sendMessage` does
    /// (`RC:apps/meteor/app/lib/server/functions/sendMessage.ts`, `messageAlreadyExists … return`).
    pub fn insert_message(&mut self, mut msg: Msg) -> bool {
        if !self.msg_ids.insert(msg.id.clone()) {
            return false;
        }
        msg.quotes = self.quote_attachments(&msg);
        self.msgs.push(msg.clone());
        self.emit_message(&msg);
        true
    }

    /// The quotes Rocket.Chat attaches to a message before saving it
    /// (`apps/meteor/server/services/messages/hooks/BeforeSaveJumpToMessage.ts`): every URL in
    /// the text that contains the `Site_Url` setting and has `?msg=<id>` of a message the author
    /// may see becomes a quote attachment (`apps/meteor/lib/createQuoteAttachment.ts`:
    /// `text`, `message_link`, `author_name` = alias or username, `ts`). A visitor may quote the
    /// messages of its own room (`message.token === room.v.token`), a user those of rooms it can
    /// access. Links to unknown messages or other sites are left as text.
    fn quote_attachments(&self, msg: &Msg) -> Vec<Value> {
        let site = self
            .setting_str("Site_Url")
            .trim_end_matches('/')
            .to_owned();
        if site.is_empty() {
            return Vec::new();
        }
        msg.msg
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == '<' || c == '>')
            .filter(|word| word.starts_with("http") && word.contains(&site))
            .filter_map(|link| {
                let url = url::Url::parse(link).ok()?;
                let id = url.query_pairs().find(|(k, _)| k == "msg")?.1.into_owned();
                let quoted = self.message(&id)?;
                let room = self.rooms.get(&quoted.rid)?;
                let allowed = match &msg.token {
                    Some(token) => room
                        .live
                        .as_ref()
                        .is_some_and(|l| &l.visitor_token == token),
                    None => self.can_access(&msg.u.id, room),
                };
                allowed.then(|| {
                    json!({
                        "text": quoted.msg,
                        "md": [],
                        "message_link": link,
                        "author_name": quoted.alias.clone().unwrap_or_else(|| quoted.u.username.clone()),
                        "attachments": [],
                        "ts": date(quoted.ts_ms, DateForm::Ejson),
                    })
                })
            })
            .collect()
    }

    /// `executeSetReaction` (`apps/meteor/app/reactions/server/setReaction.ts`): the emoji must be
    /// known (`error-not-allowed` "Invalid emoji provided."), the message must exist
    /// (`error-not-allowed`), nothing happens when the user's reaction already is as asked, the
    /// user must be able to access the room (`not-authorized`; for a Livechat room that takes
    /// `view-livechat-rooms` or serving it — there is no reaction permission). The reaction is
    /// stored under the username, the key removed with its last user, and the whole message
    /// re-emitted (`notifyOnMessageChange`). `None` is success, else the error code and reason.
    pub fn set_reaction(
        &mut self,
        uid: &str,
        emoji: &str,
        message_id: &str,
        should_react: Option<bool>,
    ) -> Option<(&'static str, &'static str)> {
        let bare = emoji.replace(':', "");
        if !KNOWN_EMOJI.contains(&bare.as_str()) {
            return Some(("error-not-allowed", "Invalid emoji provided."));
        }
        let name = format!(":{bare}:");
        let username = self.users.get(uid)?.username.clone();
        let Some(message) = self.message(message_id) else {
            return Some(("error-not-allowed", "Not allowed"));
        };
        let already = message
            .reactions
            .get(&name)
            .is_some_and(|users| users.contains(&username));
        let should_react = should_react.unwrap_or(!already);
        if already == should_react {
            return None;
        }
        let Some(room) = self.rooms.get(&message.rid) else {
            return Some(("error-not-allowed", "Not allowed"));
        };
        if !self.can_access(uid, room) {
            return Some(("not-authorized", "Not Authorized"));
        }
        let message = self.msgs.iter_mut().find(|m| m.id == message_id)?;
        // `Messages.setReactions` is an `updateOne`, which stamps `_updatedAt`
        // (`packages/models/src/models/BaseRaw.ts`, `setUpdatedAt`).
        message.updated_ms = now_ms();
        if should_react {
            message.reactions.entry(name).or_default().push(username);
        } else if let Some(users) = message.reactions.get_mut(&name) {
            users.retain(|u| *u != username);
            if users.is_empty() {
                message.reactions.remove(&name);
            }
        }
        let copy = message.clone();
        self.emit_message(&copy);
        None
    }

    /// Replaces a message's text and re-emits the same `_id` with `editedAt`, as an edit does.
    pub fn edit_message(&mut self, id: &str, text: &str, by: Author) -> bool {
        let now = now_ms();
        let Some(m) = self.msgs.iter_mut().find(|m| m.id == id) else {
            return false;
        };
        m.msg = text.to_owned();
        m.updated_ms = now;
        m.edited = Some((now, by));
        let copy = m.clone();
        self.emit_message(&copy);
        true
    }

    /// Deletes a message as `deleteMessage` does (`apps/meteor/app/lib/server/functions/deleteMessage.ts`):
    /// with `Message_ShowDeletedStatus` the message stays as `t: "rm"` with an empty text, no
    /// attachments or reactions and `editedAt`/`editedBy` of the deleter
    /// (`Messages.setAsDeletedByIdAndUser`), re-emitted on the room's streams; otherwise it is
    /// removed and only `notify.deleteMessage` says so: `stream-notify-room`
    /// `<rid>/deleteMessage` with `[{"_id": …}]` (`notifyRoom` in
    /// `apps/meteor/server/modules/listeners/listeners.module.ts`). `false` for an unknown id.
    pub fn delete_message(&mut self, id: &str, by: Author) -> bool {
        let now = now_ms();
        let Some(index) = self.msgs.iter().position(|m| m.id == id) else {
            return false;
        };
        let show_deleted = self
            .settings
            .get("Message_ShowDeletedStatus")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if show_deleted {
            let m = &mut self.msgs[index];
            m.t = Some("rm".to_owned());
            m.msg = String::new();
            m.quotes.clear();
            m.reactions.clear();
            m.file = None;
            m.edited = Some((now, by));
            m.updated_ms = now;
            let copy = m.clone();
            self.emit_message(&copy);
            return true;
        }
        let removed = self.msgs.remove(index);
        self.msg_ids.remove(&removed.id);
        let event = format!("{}/deleteMessage", removed.rid);
        let args = json!([{ "_id": removed.id }]);
        let frames: Vec<(u64, String)> = self
            .conns
            .iter()
            .filter(|(_, conn)| {
                conn.subs
                    .values()
                    .any(|s| matches!(s, Sub::RoomDeletions(r) if *r == removed.rid))
            })
            .map(|(id, _)| {
                (
                    *id,
                    stream_changed("stream-notify-room", &event, args.clone()),
                )
            })
            .collect();
        self.deliver(frames);
        true
    }

    /// Sends a stream event for `msg` to every subscription allowed to see it: `__my_messages__`
    /// with the `allowEmit` info object, per-room subscriptions with `args:[message]`.
    fn emit_message(&mut self, msg: &Msg) {
        let Some(room) = self.rooms.get(&msg.rid) else {
            return;
        };
        let doc = msg.to_json(DateForm::Ejson);
        let mut frames: Vec<(u64, String)> = Vec::new();
        for (id, conn) in &self.conns {
            for sub in conn.subs.values() {
                let args = match sub {
                    Sub::MyMessages => {
                        // The emit rule needs a logged-in user who can access the room.
                        let Some(uid) = conn.user.as_deref() else {
                            continue;
                        };
                        if !self.can_access(uid, room) {
                            continue;
                        }
                        let info = json!({
                            "roomParticipant": room.members.contains(uid),
                            "roomType": room.kind.t(),
                            "roomName": room.name,
                        });
                        Some(("__my_messages__".to_owned(), json!([doc, info])))
                    }
                    Sub::Room(rid) if *rid == msg.rid => Some((rid.clone(), json!([doc]))),
                    _ => None,
                };
                if let Some((event, args)) = args {
                    frames.push((*id, stream_changed("stream-room-messages", &event, args)));
                }
            }
        }
        self.deliver(frames);
    }

    /// A user's activity in a room (`["user-typing"]`, or `[]` when it stops), sent to the room's
    /// `<rid>/user-activity` subscribers as `[username, activities, {}]`
    /// (`apps/meteor/server/modules/notifications/notifications.module.ts`, `notifyRoom`). The
    /// writer's own connection is not echoed; an agent here writes from its own client.
    pub fn user_activity(&mut self, rid: &str, username: &str, activities: &[&str]) {
        let event = format!("{rid}/user-activity");
        let args = json!([username, activities, {}]);
        let frames: Vec<(u64, String)> = self
            .conns
            .iter()
            .filter(|(_, conn)| {
                conn.subs
                    .values()
                    .any(|s| matches!(s, Sub::RoomActivity(r) if r == rid))
            })
            .map(|(id, _)| {
                (
                    *id,
                    stream_changed("stream-notify-room", &event, args.clone()),
                )
            })
            .collect();
        self.deliver(frames);
    }

    /// Sends `<uid>/rooms-changed` and `<uid>/subscriptions-changed` "inserted" events to the user's
    /// `stream-notify-user` subscriptions when they join a room.
    pub fn notify_joined(&mut self, uid: &str, rid: &str) {
        let Some(room) = self.rooms.get(rid) else {
            return;
        };
        let Some(user) = self.users.get(uid) else {
            return;
        };
        let usernames: Vec<String> = room
            .members
            .iter()
            .filter_map(|m| self.users.get(m).map(|u| u.username.clone()))
            .collect();
        let room_doc = json!({
            "_id": room.id, "t": room.kind.t(), "usernames": usernames,
            "uids": room.members, "msgs": 0, "ts": date(room.ts_ms, DateForm::Ejson),
        });
        let sub_doc = json!({
            "_id": random_id(), "rid": room.id, "t": room.kind.t(), "name": room.name,
            "u": { "_id": user.id, "username": user.username }, "open": true,
        });
        let rooms_event = format!("{uid}/rooms-changed");
        let subs_event = format!("{uid}/subscriptions-changed");
        let mut frames = Vec::new();
        for (id, conn) in &self.conns {
            for sub in conn.subs.values() {
                if let Sub::NotifyUser(event) = sub {
                    if *event == rooms_event {
                        let args = json!(["inserted", room_doc]);
                        frames.push((*id, stream_changed("stream-notify-user", event, args)));
                    } else if *event == subs_event {
                        let args = json!(["inserted", sub_doc]);
                        frames.push((*id, stream_changed("stream-notify-user", event, args)));
                    }
                }
            }
        }
        self.deliver(frames);
    }

    /// Queues frames on their connections. A connection whose queue is full is a slow consumer:
    /// it is closed (the real server closes with 1013 past `DDP_MAX_BUFFERED_BYTES`).
    fn deliver(&mut self, frames: Vec<(u64, String)>) {
        for (id, frame) in frames {
            if let Some(conn) = self.conns.get(&id)
                && conn.tx.try_send(frame).is_err()
            {
                conn.slow.store(true, std::sync::atomic::Ordering::SeqCst);
                conn.kill.cancel();
            }
        }
    }

    /// A direct-message room between two users, created if needed; its id is both user ids,
    /// sorted and concatenated, as Rocket.Chat builds it (one's own DM has one's own id).
    pub fn direct_room(&mut self, a: &str, b: &str) -> Option<String> {
        let mut uids = vec![self.uid_of(a)?, self.uid_of(b)?];
        uids.sort();
        uids.dedup();
        let rid = uids.concat();
        if !self.rooms.contains_key(&rid) {
            self.rooms.insert(
                rid.clone(),
                Room {
                    id: rid.clone(),
                    kind: RoomKind::Direct,
                    name: None,
                    members: uids.iter().cloned().collect(),
                    ts_ms: now_ms(),
                    live: None,
                },
            );
            for uid in &uids {
                self.notify_joined(uid, &rid);
            }
        }
        Some(rid)
    }

    pub fn visitor_by_token(&self, token: &str) -> Option<&Visitor> {
        self.visitors.iter().find(|v| v.token == token)
    }

    /// What `getRoom` in `apps/meteor/app/livechat/server/lib/LivechatTyped.ts` (later
    /// `lib/rooms.ts`) refuses before it finds or creates a visitor's room, which both
    /// `livechat/room` and `livechat/message` go through: Omnichannel off
    /// (`Meteor.Error('error-omnichannel-is-disabled')`, with `errorType`), then a blocked contact
    /// channel (plain `Error('error-contact-channel-blocked')`, no `errorType`).
    pub fn get_room_refusal(&self, token: &str) -> Option<super::wire::Reply> {
        if !self.setting_bool("Livechat_enabled") {
            return Some(super::wire::meteor_failure(
                "error-omnichannel-is-disabled",
                None,
                None,
            ));
        }
        if self.visitor_by_token(token).is_some_and(|v| v.blocked) {
            return Some(super::wire::plain_failure("error-contact-channel-blocked"));
        }
        None
    }

    pub fn department_by_id_or_name(&self, key: &str) -> Option<&Department> {
        self.departments
            .iter()
            .find(|d| d.id == key || d.name == key)
    }

    /// An agent who can take a chat now: role `livechat-agent`, available and online, and in the
    /// department when one is given.
    pub fn available_agent(&self, department: Option<&str>) -> Option<String> {
        let in_department = |uid: &str| match department {
            None => true,
            Some(dep) => self
                .departments
                .iter()
                .any(|d| d.id == dep && d.agents.iter().any(|a| a == uid)),
        };
        self.users
            .values()
            .find(|u| {
                u.roles.iter().any(|r| r == "livechat-agent")
                    && u.livechat_available
                    && u.online
                    && in_department(&u.id)
            })
            .map(|u| u.id.clone())
    }

    /// `Livechat.online(department)`: accept-with-no-agents, or an agent who can take the chat.
    pub fn livechat_online(&self, department: Option<&str>) -> bool {
        self.setting_bool("Livechat_accept_chats_with_no_agents")
            || self.available_agent(department).is_some()
    }

    pub fn open_livechat_room_of(&self, token: &str) -> Option<&Room> {
        self.rooms.values().find(|r| {
            r.live
                .as_ref()
                .is_some_and(|l| l.open && l.visitor_token == token)
        })
    }

    /// `GET livechat/room` without `rid`: the visitor's open room, or a new one routed to an
    /// available agent (`no-agent-online` when there is none and the server does not accept chats
    /// without agents; then the room is created queued, without `servedBy`).
    pub fn request_room(&mut self, token: &str) -> Option<RoomRequest> {
        if let Some(room) = self.open_livechat_room_of(token) {
            return Some(RoomRequest::Existing(room.id.clone()));
        }
        let visitor = self.visitor_by_token(token)?;
        let department = visitor.department.clone();
        if !self.livechat_online(department.as_deref()) {
            return Some(RoomRequest::NoAgentOnline);
        }
        let agent = self.available_agent(department.as_deref());
        let rid = random_id();
        let live = LiveRoom {
            visitor_id: visitor.id.clone(),
            visitor_token: visitor.token.clone(),
            visitor_username: visitor.username.clone(),
            fname: visitor
                .name
                .clone()
                .unwrap_or_else(|| visitor.username.clone()),
            department_id: department,
            open: true,
            served_by: agent.clone(),
            closed_ms: None,
            data: BTreeMap::new(),
        };
        self.rooms.insert(
            rid.clone(),
            Room {
                id: rid.clone(),
                kind: RoomKind::Livechat,
                name: None,
                members: agent.iter().cloned().collect(),
                ts_ms: now_ms(),
                live: Some(live),
            },
        );
        if let Some(agent) = agent {
            self.notify_joined(&agent, &rid);
        }
        Some(RoomRequest::Created(rid))
    }

    /// Routes queued rooms (open, nobody serving) to agents who became available.
    pub fn route_queued(&mut self) {
        let queued: Vec<(String, Option<String>)> = self
            .rooms
            .values()
            .filter_map(|r| {
                let l = r.live.as_ref()?;
                (l.open && l.served_by.is_none()).then(|| (r.id.clone(), l.department_id.clone()))
            })
            .collect();
        for (rid, dep) in queued {
            let Some(agent) = self.available_agent(dep.as_deref()) else {
                continue;
            };
            if let Some(room) = self.rooms.get_mut(&rid) {
                room.members.insert(agent.clone());
                if let Some(l) = room.live.as_mut() {
                    l.served_by = Some(agent.clone());
                }
            }
            self.notify_joined(&agent, &rid);
        }
    }

    /// Closes a Livechat room: `open` false and a `livechat-close` message from the closer.
    /// The visitor's stream subscription is not ended: the real streamer checks read access only
    /// when subscribing (`_publish` in `streamer.module.ts`), so subscribers simply receive the
    /// close message and nothing after it.
    pub fn close_livechat_room(&mut self, rid: &str, by: Author, comment: &str) -> bool {
        let Some(room) = self.rooms.get_mut(rid) else {
            return false;
        };
        let Some(live) = room.live.as_mut() else {
            return false;
        };
        if !live.open {
            return false;
        }
        let now = now_ms();
        live.open = false;
        live.closed_ms = Some(now);
        self.insert_message(Msg {
            id: random_id(),
            rid: rid.to_owned(),
            msg: comment.to_owned(),
            t: Some("livechat-close".into()),
            u: by,
            token: None,
            alias: None,
            ts_ms: now,
            updated_ms: now,
            edited: None,
            file: None,
            quotes: Vec::new(),
            reactions: Default::default(),
        });
        true
    }

    /// The room document returned by `livechat/room` (REST form).
    pub fn livechat_room_json(&self, rid: &str) -> Value {
        let Some(room) = self.rooms.get(rid) else {
            return Value::Null;
        };
        let Some(l) = room.live.as_ref() else {
            return Value::Null;
        };
        let mut doc = json!({
            "_id": room.id, "t": "l", "fname": l.fname, "msgs": self.msgs.iter().filter(|m| m.rid == rid).count(),
            "v": { "_id": l.visitor_id, "username": l.visitor_username, "token": l.visitor_token, "status": "online" },
            "open": l.open, "source": { "type": "api" }, "ts": date(room.ts_ms, DateForm::Iso),
            "_updatedAt": date(now_ms(), DateForm::Iso),
        });
        if let Some(dep) = &l.department_id {
            doc["departmentId"] = json!(dep);
        }
        if let Some(agent) = l.served_by.as_deref().and_then(|a| self.users.get(a)) {
            doc["servedBy"] = json!({ "_id": agent.id, "username": agent.username, "ts": date(room.ts_ms, DateForm::Iso) });
        }
        if let Some(closed) = l.closed_ms {
            doc["closedAt"] = date(closed, DateForm::Iso);
        }
        doc
    }

    pub fn visitor_json(&self, v: &Visitor) -> Value {
        let mut doc = json!({
            "_id": v.id, "token": v.token, "username": v.username,
            "ts": date(v.ts_ms, DateForm::Iso), "_updatedAt": date(now_ms(), DateForm::Iso),
        });
        if let Some(name) = &v.name {
            doc["name"] = json!(name);
        }
        if let Some(dep) = &v.department {
            doc["department"] = json!(dep);
        }
        doc
    }

    /// Counts one call against Meteor's `RateLimiter` for `key`; returns (allowed, remaining,
    /// ms until the window resets).
    pub fn rate_check(&mut self, key: String, limit: u64, interval: Duration) -> (bool, u64, u64) {
        let now = Instant::now();
        let window = self.rate.entry(key).or_insert(RateWindow {
            started: now,
            count: 0,
        });
        if now.duration_since(window.started) >= interval {
            window.started = now;
            window.count = 0;
        }
        window.count += 1;
        let elapsed = now.duration_since(window.started);
        let reset = u64::try_from(interval.saturating_sub(elapsed).as_millis()).unwrap_or(u64::MAX);
        (
            window.count <= limit,
            limit.saturating_sub(window.count),
            reset,
        )
    }
}

/// A stream event frame: `changed` on collection `stream-<name>` with `id:"id"`
/// (`changedPayload` in `streamer.module.ts`).
pub(super) fn stream_changed(collection: &str, event: &str, args: Value) -> String {
    json!({
        "msg": "changed",
        "collection": collection,
        "id": "id",
        "fields": { "eventName": event, "args": args },
    })
    .to_string()
}
