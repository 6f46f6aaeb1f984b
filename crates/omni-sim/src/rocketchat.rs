//! A strict, in-process Rocket.Chat simulator: the realtime API (DDP over WebSocket at
//! `/websocket`) and the REST subset the gateway uses (`/api/v1/…`, Livechat visitor routes, file
//! downloads at `/file-upload/…`), built from Rocket.Chat's source (summarised in
//! `docs/rocketchat.md`). It rejects what the real server rejects, with the real error shapes, so
//! the gateway's tests and `omni-gateway sandbox` exercise the same failure paths as production.
//! Tests drive the far side through this handle (people typing, agents replying, rooms closing)
//! and inject faults (dropped sockets, refused connections, unanswered pings, 5xx, 429, latency).

mod ddp;
mod livechat;
mod rest;
mod state;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::ids::{MessageId, RoomId, UserId, VisitorToken};
use state::{Author, Department, FileRef, Msg, Room, RoomKind, State, StoredFile, User};
use wire::{now_ms, random_id};

/// The Rocket.Chat release line the simulator answers as, where releases differ on the wire
/// (`docs/rocketchat.md` §5). `V6` is a late 6.x server (6.13, the oldest line
/// `@rocket.chat/rest-typings` is pinned at in `contract/`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum ServerVersion {
    V6,
    V7,
    #[default]
    V8,
}

impl ServerVersion {
    /// What `GET /api/info` reports.
    pub fn number(self) -> &'static str {
        match self {
            ServerVersion::V6 => "6.13.1",
            ServerVersion::V7 => "7.13.9",
            ServerVersion::V8 => "8.8.1",
        }
    }
}

/// How the simulator behaves where the real server is configurable.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The server pings after this much client silence and closes with 4000 "TIMEOUT" after the
    /// same again (the real `ddp-streamer` uses 30 s for both, `constants.ts`).
    pub ping_idle: Duration,
    /// Initial value of `API_Enable_Rate_Limiter`: on, as on a real server
    /// (`apps/meteor/server/settings/rate.ts`). A test that models a set-up whose admin followed
    /// `check` (the limiter off) says so explicitly.
    pub rest_rate_limiter: bool,
    /// The release line to answer as; the newest by default.
    pub version: ServerVersion,
    /// Test knob: every rate-limit window (the routes' own and the default-limit setting) is
    /// divided by this, so a test can wait a window out. 1 (the default) is the real timing;
    /// the `X-RateLimit-*` headers and 429 texts follow the shortened window.
    pub rate_window_divisor: u32,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            ping_idle: Duration::from_secs(30),
            rest_rate_limiter: true,
            version: ServerVersion::default(),
            rate_window_divisor: 1,
        }
    }
}

/// A file attached to a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFile {
    pub id: String,
    pub name: String,
    pub mime: String,
    pub bytes: Vec<u8>,
}

/// A stored message as a test sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimMessage {
    pub id: MessageId,
    pub rid: RoomId,
    pub username: String,
    pub msg: String,
    /// System message type (`uj`, `livechat-close`, …); `None` for a person's message.
    pub t: Option<String>,
    /// The visitor token on messages a Livechat visitor sent.
    pub token: Option<VisitorToken>,
    pub ts_ms: i64,
    pub file: Option<SimFile>,
    /// The thumbnail the server generated for an image (second `files[]` entry).
    pub thumbnail: Option<SimFile>,
    /// The texts of the messages it quotes (its quote attachments).
    pub quoted: Vec<String>,
    /// `:name:` → who reacted.
    pub reactions: BTreeMap<String, Vec<String>>,
}

/// A registered Livechat visitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimVisitor {
    pub id: String,
    pub token: VisitorToken,
    pub name: Option<String>,
    pub username: String,
    pub department: Option<String>,
}

/// A Livechat room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimLivechatRoom {
    pub id: RoomId,
    pub visitor_token: VisitorToken,
    pub department_id: Option<String>,
    pub open: bool,
    /// Username of the serving agent; `None` while the inquiry is queued.
    pub served_by: Option<String>,
}

/// What the simulator has seen, for assertions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// WebSocket connections accepted since start.
    pub ws_connections: usize,
    pub logins_password: usize,
    pub logins_resume: usize,
    /// Idle pings the server sent.
    pub pings_sent: usize,
    /// `pong` frames the server received.
    pub pongs_received: usize,
    /// Frames that broke the DDP protocol (bad first frame, bad JSON, unknown `msg`).
    pub protocol_errors: usize,
    pub method_calls_by_name: BTreeMap<String, usize>,
    /// REST calls by `"METHOD /path/pattern"`, e.g. `"POST /api/v1/livechat/message"`.
    pub rest_calls_by_route: BTreeMap<String, usize>,
}

impl SimStats {
    /// Successful logins of any kind.
    pub fn logins(&self) -> usize {
        self.logins_password + self.logins_resume
    }
}

/// State shared by the server tasks and the test handle.
struct Shared {
    opts: SimOptions,
    state: Mutex<State>,
    /// Woken after every change, for `wait_for_message`.
    changed: Notify,
    cancel: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs a change under the lock and wakes whoever waits for changes.
    fn mutate<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let result = f(&mut self.lock());
        self.changed.notify_waiters();
        result
    }
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// Handle to a running simulator. Clones share one server, which stops when the last handle is
/// dropped or on [`RocketChatSim::shutdown`].
///
/// The helpers that name a user, room or message panic when it does not exist: they are test
/// set-up, and a typo there should fail the test at once.
#[derive(Clone)]
pub struct RocketChatSim {
    inner: Arc<Inner>,
}

impl RocketChatSim {
    /// Binds `127.0.0.1:0` and serves until shut down.
    pub async fn start(opts: SimOptions) -> std::io::Result<RocketChatSim> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(opts.rest_rate_limiter)),
            opts,
            changed: Notify::new(),
            cancel: CancellationToken::new(),
        });
        let app = rest::router(shared.clone());
        let cancel = shared.cancel.clone();
        let task = tokio::spawn(async move {
            // Node (Rocket.Chat) answers with Nagle off; with it on, a frame written behind an
            // unacknowledged one waits for the client's delayed ACK (about 40 ms).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let serve = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned());
            if let Err(error) = serve.await {
                tracing::warn!(error = %error, "rocket.chat simulator stopped with an error");
            }
        });
        tracing::debug!(addr = %addr, "rocket.chat simulator listening");
        Ok(RocketChatSim {
            inner: Arc::new(Inner {
                shared,
                addr,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// `http://127.0.0.1:PORT`; the WebSocket is at `ws://127.0.0.1:PORT/websocket`.
    pub fn url(&self) -> url::Url {
        let text = format!("http://{}", self.inner.addr);
        // A socket address always forms a valid http URL.
        url::Url::parse(&text).unwrap_or_else(|e| panic!("simulator url {text}: {e}"))
    }

    /// Stops the server: open WebSockets end and the listener closes.
    pub async fn shutdown(&self) {
        self.shared().cancel.cancel();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(mut task) = task {
            // Idle keep-alive HTTP connections can delay a graceful stop; do not wait forever.
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    // ---- people and rooms ----------------------------------------------------------------

    /// Creates (or updates) a user. `roles` e.g. `["user"]`, `["bot"]`, `["livechat-agent"]`.
    pub fn add_user(&self, username: &str, password: &str, roles: &[&str]) -> UserId {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        let digest = state::sha256_hex(password);
        self.shared().mutate(|st| {
            if let Some(user) = st.users.values_mut().find(|u| u.username == username) {
                user.password_digest = digest;
                user.roles = roles;
                return UserId::new(user.id.clone());
            }
            let id = random_id();
            st.users.insert(
                id.clone(),
                User {
                    id: id.clone(),
                    username: username.to_owned(),
                    name: username.to_owned(),
                    password_digest: digest,
                    roles,
                    tokens: Vec::new(),
                    totp: false,
                    livechat_available: false,
                    online: false,
                    created_ms: now_ms(),
                },
            );
            UserId::new(id)
        })
    }

    fn uid(st: &State, username: &str) -> String {
        st.uid_of(username)
            .unwrap_or_else(|| panic!("simulator has no user {username:?}"))
    }

    fn author(st: &State, username: &str) -> Author {
        let uid = Self::uid(st, username);
        st.author(&uid)
            .unwrap_or_else(|| panic!("simulator has no user {username:?}"))
    }

    /// Creates a personal access token, usable as a DDP resume token and as REST `X-Auth-Token`.
    pub fn personal_access_token(&self, username: &str) -> String {
        self.shared().mutate(|st| {
            let uid = Self::uid(st, username);
            st.issue_token(&uid, true)
                .map(|(token, _)| token)
                .unwrap_or_else(|| panic!("simulator has no user {username:?}"))
        })
    }

    /// Turns on TOTP two-factor authentication: password logins then fail with `totp-required`.
    pub fn enable_totp(&self, username: &str) {
        self.shared().mutate(|st| {
            let uid = Self::uid(st, username);
            if let Some(user) = st.users.get_mut(&uid) {
                user.totp = true;
            }
        });
    }

    /// Grants a permission to a role, e.g. `("bot", "view-full-other-user-info")`.
    pub fn grant_permission(&self, role: &str, permission: &str) {
        self.shared().mutate(|st| {
            st.perms
                .entry(permission.to_owned())
                .or_default()
                .insert(role.to_owned());
        });
    }

    /// Takes a permission away from a role (e.g. to test what the bot does without it).
    pub fn revoke_permission(&self, role: &str, permission: &str) {
        self.shared().mutate(|st| {
            if let Some(roles) = st.perms.get_mut(permission) {
                roles.remove(role);
            }
        });
    }

    /// The 1:1 direct-message room of two users (`t:"d"`), both subscribed.
    pub fn direct_room(&self, a: &str, b: &str) -> RoomId {
        self.shared().mutate(|st| {
            st.direct_room(a, b)
                .map(RoomId::new)
                .unwrap_or_else(|| panic!("simulator has no user {a:?} or {b:?}"))
        })
    }

    /// A public channel (`t:"c"`) with these members subscribed.
    pub fn channel(&self, name: &str, members: &[&str]) -> RoomId {
        self.room_of_kind(RoomKind::Channel, name, members)
    }

    /// A private group (`t:"p"`) with these members subscribed.
    pub fn private_group(&self, name: &str, members: &[&str]) -> RoomId {
        self.room_of_kind(RoomKind::Private, name, members)
    }

    /// A Livechat room (`t:"l"`) with these users subscribed, as when agents were added to it;
    /// it has no visitor, so the Livechat routes treat it as closed.
    pub fn livechat_room_with(&self, name: &str, members: &[&str]) -> RoomId {
        self.room_of_kind(RoomKind::Livechat, name, members)
    }

    fn room_of_kind(&self, kind: RoomKind, name: &str, members: &[&str]) -> RoomId {
        self.shared().mutate(|st| {
            let uids: Vec<String> = members.iter().map(|m| Self::uid(st, m)).collect();
            let rid = random_id();
            st.rooms.insert(
                rid.clone(),
                Room {
                    id: rid.clone(),
                    kind,
                    name: Some(name.to_owned()),
                    members: uids.iter().cloned().collect(),
                    ts_ms: now_ms(),
                    live: None,
                },
            );
            for uid in &uids {
                st.notify_joined(uid, &rid);
            }
            RoomId::new(rid)
        })
    }

    fn insert(
        &self,
        st: &mut State,
        rid: &RoomId,
        u: Author,
        text: &str,
        t: Option<&str>,
    ) -> MessageId {
        assert!(
            st.rooms.contains_key(rid.as_str()),
            "simulator has no room {rid}"
        );
        let now = now_ms();
        let id = random_id();
        st.insert_message(Msg {
            id: id.clone(),
            rid: rid.as_str().to_owned(),
            msg: text.to_owned(),
            t: t.map(str::to_owned),
            u,
            token: None,
            alias: None,
            ts_ms: now,
            updated_ms: now,
            edited: None,
            file: None,
            quotes: Vec::new(),
            reactions: Default::default(),
        });
        MessageId::new(id)
    }

    /// A person types a message in a room; it is emitted on the streams.
    pub fn post(&self, username: &str, rid: &RoomId, text: &str) -> MessageId {
        self.shared().mutate(|st| {
            let author = Self::author(st, username);
            self.insert(st, rid, author, text, None)
        })
    }

    /// Someone writes in a public channel (`t:"c"`). `__my_messages__` carries it to every
    /// logged-in user who can access the channel, members or not: role `bot` holds `view-c-room`
    /// (`allowEmit` in `apps/meteor/server/modules/notifications/notifications.module.ts`,
    /// `docs/rocketchat.md` §2.6), so a gateway sees this traffic and must drop it.
    pub fn post_channel_message(&self, username: &str, channel: &RoomId, text: &str) -> MessageId {
        self.shared().mutate(|st| {
            assert!(
                st.rooms
                    .get(channel.as_str())
                    .is_some_and(|r| r.kind == RoomKind::Channel),
                "simulator room {channel} is not a public channel"
            );
            let author = Self::author(st, username);
            self.insert(st, channel, author, text, None)
        })
    }

    /// Edits a message: the stream re-emits the same `_id` with `editedAt`.
    pub fn edit(&self, username: &str, msg: &MessageId, text: &str) {
        self.shared().mutate(|st| {
            let by = Self::author(st, username);
            assert!(
                st.edit_message(msg.as_str(), text, by),
                "simulator has no message {msg}"
            );
        });
    }

    /// Deletes a message as `username` (see `Message_ShowDeletedStatus` for how it shows).
    pub fn delete(&self, username: &str, msg: &MessageId) {
        self.shared().mutate(|st| {
            let by = Self::author(st, username);
            assert!(
                st.delete_message(msg.as_str(), by),
                "simulator has no message {msg}"
            );
        });
    }

    /// A user reacts (`react`) or takes a reaction back on a message with an emoji name
    /// (`:thumbsup:`), as `chat.react` does; panics with the server's refusal.
    pub fn react(&self, username: &str, msg: &MessageId, emoji: &str, react: bool) {
        let refused = self.shared().mutate(|st| {
            let uid = Self::author(st, username).id;
            st.set_reaction(&uid, emoji, msg.as_str(), Some(react))
        });
        if let Some((error, reason)) = refused {
            panic!("chat.react refused for {username}: {error} {reason}");
        }
    }

    /// A system message of type `t` (e.g. `"uj"`), written by `rocket.cat`.
    pub fn post_system(&self, rid: &RoomId, t: &str, text: &str) {
        let cat = Author {
            id: "rocket.cat".into(),
            username: "rocket.cat".into(),
            name: Some("Rocket.Cat".into()),
        };
        self.shared().mutate(|st| {
            self.insert(st, rid, cat, text, Some(t));
        });
    }

    /// Every message of a room, oldest first.
    pub fn messages(&self, rid: &RoomId) -> Vec<SimMessage> {
        let st = self.shared().lock();
        st.msgs
            .iter()
            .filter(|m| m.rid == rid.as_str())
            .map(|m| sim_message(&st, m))
            .collect()
    }

    /// Waits until a message of the room matches `pred` (existing ones included), or times out.
    pub async fn wait_for_message(
        &self,
        rid: &RoomId,
        pred: impl Fn(&SimMessage) -> bool,
        timeout: Duration,
    ) -> Option<SimMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.shared().changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(found) = self.messages(rid).into_iter().find(|m| pred(m)) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Waits up to `timeout` for messages stored after the first `from` (every room, oldest
    /// first) and returns them with the cursor to pass next time. Lets a long-running driver (the
    /// soak bench) follow thousands of rooms without rescanning their history; edits made in place
    /// are not reported again.
    pub async fn messages_after(&self, from: usize, timeout: Duration) -> (Vec<SimMessage>, usize) {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.shared().changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (new, next) = {
                let st = self.shared().lock();
                let new: Vec<SimMessage> = st
                    .msgs
                    .get(from..)
                    .unwrap_or_default()
                    .iter()
                    .map(|m| sim_message(&st, m))
                    .collect();
                (new, st.msgs.len())
            };
            if !new.is_empty() || tokio::time::timeout_at(deadline, changed).await.is_err() {
                return (new, next);
            }
        }
    }

    // ---- livechat / omnichannel ----------------------------------------------------------

    /// Sets a server setting, e.g. `("Livechat_accept_chats_with_no_agents", json!(true))`.
    pub fn set_setting(&self, id: &str, value: Value) {
        self.shared().mutate(|st| {
            st.settings.insert(id.to_owned(), value);
        });
    }

    /// Creates an enabled Omnichannel department with these agents; returns its id.
    /// An admin creates an Omnichannel custom field (`scope` `room` when `room_scope`).
    pub fn add_custom_field(&self, id: &str, room_scope: bool) {
        self.shared().mutate(|st| {
            st.custom_fields.insert(id.to_owned(), room_scope);
        });
    }

    /// A room's `livechatData` value, as an agent sees it in Room Info.
    pub fn room_custom_field(&self, rid: &RoomId, key: &str) -> Option<String> {
        let st = self.shared().lock();
        st.rooms
            .get(rid.as_str())
            .and_then(|r| r.live.as_ref())
            .and_then(|l| l.data.get(key).cloned())
    }

    pub fn add_department(&self, name: &str, agents: &[&str]) -> String {
        self.shared().mutate(|st| {
            let agents = agents.iter().map(|a| Self::uid(st, a)).collect();
            let id = random_id();
            st.departments.push(Department {
                id: id.clone(),
                name: name.to_owned(),
                agents,
                enabled: true,
            });
            id
        })
    }

    /// Sets an agent's Omnichannel status (`statusLivechat: available` and online). Queued chats
    /// are routed to an agent who comes online.
    pub fn set_agent_online(&self, username: &str, online: bool) {
        self.shared().mutate(|st| {
            let uid = Self::uid(st, username);
            if let Some(user) = st.users.get_mut(&uid) {
                user.livechat_available = online;
                user.online = online;
            }
            if online {
                st.route_queued();
            }
        });
    }

    pub fn visitors(&self) -> Vec<SimVisitor> {
        let st = self.shared().lock();
        st.visitors
            .iter()
            .map(|v| SimVisitor {
                id: v.id.clone(),
                token: VisitorToken::new(v.token.clone()),
                name: v.name.clone(),
                username: v.username.clone(),
                department: v.department.clone(),
            })
            .collect()
    }

    pub fn livechat_rooms(&self) -> Vec<SimLivechatRoom> {
        let st = self.shared().lock();
        st.rooms
            .values()
            .filter_map(|r| {
                let l = r.live.as_ref()?;
                Some(SimLivechatRoom {
                    id: RoomId::new(r.id.clone()),
                    visitor_token: VisitorToken::new(l.visitor_token.clone()),
                    department_id: l.department_id.clone(),
                    open: l.open,
                    served_by: l
                        .served_by
                        .as_deref()
                        .and_then(|a| st.users.get(a))
                        .map(|u| u.username.clone()),
                })
            })
            .collect()
    }

    /// An agent starts (`true`) or stops typing in a room: `user-activity` on the room's
    /// `stream-notify-room`.
    pub fn agent_typing(&self, agent: &str, rid: &RoomId, typing: bool) {
        self.shared().mutate(|st| {
            let author = Self::author(st, agent);
            let activities: &[&str] = if typing { &["user-typing"] } else { &[] };
            st.user_activity(rid.as_str(), &author.username, activities);
        });
    }

    /// An agent answers in a Livechat room; the message is emitted on the room stream.
    pub fn agent_reply(&self, agent: &str, rid: &RoomId, text: &str) -> MessageId {
        self.post(agent, rid, text)
    }

    /// An agent sends a file into a room: a message with `file`, `files` and `attachments`
    /// linking to `/file-upload/<fileId>/<name>`.
    pub fn agent_upload(
        &self,
        agent: &str,
        rid: &RoomId,
        name: &str,
        mime: &str,
        bytes: Vec<u8>,
    ) -> MessageId {
        self.shared().mutate(|st| {
            let author = Self::author(st, agent);
            assert!(
                st.rooms.contains_key(rid.as_str()),
                "simulator has no room {rid}"
            );
            let file = store_file(st, rid.as_str(), name, mime, bytes);
            let now = now_ms();
            let id = random_id();
            st.insert_message(Msg {
                id: id.clone(),
                rid: rid.as_str().to_owned(),
                msg: String::new(),
                t: None,
                u: author,
                token: None,
                alias: None,
                ts_ms: now,
                updated_ms: now,
                edited: None,
                file: Some(file),
                quotes: Vec::new(),
                reactions: Default::default(),
            });
            MessageId::new(id)
        })
    }

    /// A manager blocks (`true`) or unblocks the contact channel of the visitor with this token
    /// (`POST omnichannel/contacts.block` / `contacts.unblock`): `changeContactBlockStatus`, and on
    /// blocking `closeBlockedRoom` closes the visitor's open room with the comment "This channel
    /// has been blocked" (`apps/meteor/ee/app/livechat-enterprise/server/api/lib/contacts.ts`).
    /// While blocked, `livechat/room` and `livechat/message` refuse with
    /// `error-contact-channel-blocked` ([`state::State::get_room_refusal`]).
    /// Contacts and their channels came with 7.x: a 6.x server cannot block one.
    pub fn block_contact(&self, token: &VisitorToken, by: &str, blocked: bool) {
        assert!(
            self.shared().opts.version >= ServerVersion::V7,
            "6.x has no contact blocking"
        );
        self.shared().mutate(|st| {
            let author = Self::author(st, by);
            let Some(visitor) = st.visitors.iter_mut().find(|v| v.token == token.as_str()) else {
                panic!("simulator has no visitor with that token");
            };
            visitor.blocked = blocked;
            if !blocked {
                return;
            }
            let open = st
                .open_livechat_room_of(token.as_str())
                .map(|r| r.id.clone());
            if let Some(rid) = open {
                st.close_livechat_room(&rid, author, "This channel has been blocked");
            }
        });
    }

    /// An agent closes a Livechat room: `open` false and a `livechat-close` message.
    pub fn close_room(&self, rid: &RoomId, by: &str) {
        self.shared().mutate(|st| {
            let author = Self::author(st, by);
            st.close_livechat_room(rid.as_str(), author, "Closed by agent");
        });
    }

    // ---- faults --------------------------------------------------------------------------

    /// Drops every WebSocket at once, without a close frame.
    pub fn drop_connections(&self) {
        let st = self.shared().lock();
        for conn in st.conns.values() {
            conn.kill.cancel();
        }
    }

    /// While on, WebSocket upgrades and REST calls get 503 Service Unavailable.
    pub fn refuse_connections(&self, on: bool) {
        self.shared().lock().faults.refuse = on;
    }

    /// The server ignores every client frame (pongs included) for a while, so its idle ping goes
    /// unanswered and it closes the socket with 4000 "TIMEOUT".
    pub fn blackhole_client_frames(&self, for_: Duration) {
        self.shared().lock().faults.blackhole_until = Some(Instant::now() + for_);
    }

    /// Sends a raw text frame (e.g. garbage) to every WebSocket.
    pub fn send_raw_to_all(&self, text: &str) {
        let st = self.shared().lock();
        for conn in st.conns.values() {
            // A full queue means the connection is being closed as a slow consumer anyway.
            let _ = conn.tx.try_send(text.to_owned());
        }
    }

    /// Every REST call waits this long before it is answered.
    pub fn set_rest_latency(&self, d: Duration) {
        self.shared().lock().faults.latency = d;
    }

    /// The next `n` REST calls answer `status` (5xx with a plain-text body, like a proxy).
    pub fn fail_next_rest(&self, n: usize, status: u16) {
        let mut st = self.shared().lock();
        st.faults.fail_next = n;
        st.faults.fail_status = status;
    }

    /// The next `n` REST calls answer 429 `error-too-many-requests` with `X-RateLimit-*` headers
    /// (reset one second ahead).
    pub fn rate_limit_next_rest(&self, n: usize) {
        self.shared().lock().faults.rate_limit_next = n;
    }

    // ---- observation ---------------------------------------------------------------------

    pub fn stats(&self) -> SimStats {
        self.shared().lock().counters.clone()
    }

    /// From now on, keeps every REST request received (see `rest_requests`).
    pub fn record_rest_requests(&self) {
        self.shared()
            .lock()
            .rest_log
            .requests
            .get_or_insert_with(Vec::new);
    }

    /// The REST requests received since `record_rest_requests`, oldest first, one JSON object
    /// each: `method`, `route` (the pattern, e.g. `/api/v1/livechat/messages.history/{rid}`),
    /// `path`, `query` (raw), `content_type`, `body` (the JSON body, or null).
    pub fn rest_requests(&self) -> Vec<Value> {
        self.shared()
            .lock()
            .rest_log
            .requests
            .clone()
            .unwrap_or_default()
    }
}

/// Keeps an uploaded file's bytes for `/file-upload/…` and returns its reference. An image (not
/// SVG, `Message_Attachments_Thumbnails_Enabled` on) also gets a thumbnail file `thumb-<name>`
/// (`FileUpload.createImageThumbnail` and `uploadImageThumbnail`, called from `apps/meteor/app/file-upload/server/methods/sendFileMessage.ts`). The simulator
/// does not scale pictures: the thumbnail's bytes are the first half of the original's, so a test
/// can tell which of the two a client fetched.
fn store_file(st: &mut State, rid: &str, name: &str, mime: &str, bytes: Vec<u8>) -> FileRef {
    let thumb = (mime.starts_with("image/")
        && mime != "image/svg+xml"
        && st.setting_bool("Message_Attachments_Thumbnails_Enabled"))
    .then(|| {
        let half = bytes
            .get(..bytes.len().div_ceil(2))
            .unwrap_or_default()
            .to_vec();
        Box::new(keep_file(st, rid, &format!("thumb-{name}"), mime, half))
    });
    FileRef {
        thumb,
        ..keep_file(st, rid, name, mime, bytes)
    }
}

fn keep_file(st: &mut State, rid: &str, name: &str, mime: &str, bytes: Vec<u8>) -> FileRef {
    let id = random_id();
    let size = bytes.len();
    st.files.insert(
        id.clone(),
        StoredFile {
            rid: rid.to_owned(),
            name: name.to_owned(),
            mime: mime.to_owned(),
            bytes,
        },
    );
    FileRef {
        id,
        name: name.to_owned(),
        mime: mime.to_owned(),
        size,
        thumb: None,
    }
}

fn sim_message(st: &State, m: &Msg) -> SimMessage {
    SimMessage {
        id: MessageId::new(m.id.clone()),
        rid: RoomId::new(m.rid.clone()),
        username: m.u.username.clone(),
        msg: m.msg.clone(),
        t: m.t.clone(),
        token: m.token.clone().map(VisitorToken::new),
        ts_ms: m.ts_ms,
        file: m.file.as_ref().map(|f| sim_file(st, f)),
        thumbnail: m
            .file
            .as_ref()
            .and_then(|f| f.thumb.as_deref())
            .map(|t| sim_file(st, t)),
        quoted: m
            .quotes
            .iter()
            .filter_map(|q| q.get("text").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        reactions: m.reactions.clone(),
    }
}

fn sim_file(st: &State, f: &FileRef) -> SimFile {
    SimFile {
        id: f.id.clone(),
        name: f.name.clone(),
        mime: f.mime.clone(),
        bytes: st
            .files
            .get(&f.id)
            .map(|s| s.bytes.clone())
            .unwrap_or_default(),
    }
}
