//! The DDP client: one long-lived connection to Rocket.Chat's realtime API (`/websocket`), used
//! for `login` and stream subscriptions only (Rocket.Chat has deprecated the other realtime
//! methods). A tokio task owns the socket and everything about it — handshake, login, pings,
//! subscriptions, reconnects — and talks to the rest of the gateway through a cloneable
//! [`DdpClient`] handle and a bounded stream of [`Event`]s.
//!
//! Architecture invariant: only this module knows DDP JSON; callers see typed events.

pub mod frame;
mod login;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;

use frame::{ClientFrame, ServerFrame};
pub use frame::{ErrorCode, MethodError, StreamEvent};
use login::Attempt;

use crate::ids::UserId;

/// Room for this many undelivered events before the connection task waits for the consumer.
const EVENT_CAPACITY: usize = 1024;
/// Method calls waiting to be written to the socket.
const CALL_CAPACITY: usize = 64;

/// Timing and address of the realtime connection.
#[derive(Debug, Clone)]
pub struct DdpSettings {
    /// `ws://` or `wss://` URL ending in `/websocket`; see [`websocket_url`].
    pub url: Url,
    /// How often we send our own ping, so proxies and the server see traffic.
    pub keepalive: Duration,
    /// No frame at all for this long means the link is dead: close it and reconnect.
    pub dead_link: Duration,
    /// Reconnect backoff: doubles from `backoff_min` up to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long to wait after a login a person must fix was refused (bad password, 2FA): slow,
    /// so the bot does not trip the server's brute-force protection.
    pub login_retry: Duration,
    /// Bound on opening the socket and on the DDP `connect` handshake.
    pub connect_timeout: Duration,
    /// Bound on a method call (including `login`) and on subscriptions becoming ready.
    pub call_timeout: Duration,
}

impl DdpSettings {
    /// The recommended timings (`docs/rocketchat.md` §2.2): the server drops a client after
    /// about 30 s of silence, so we ping every 25 s and give up on a link silent for 60 s.
    /// Reconnects back off to at most 15 s: the gateway sits next to its Rocket.Chat, and each
    /// second after a restart of the server is a second of agent replies waiting.
    pub fn new(url: Url) -> DdpSettings {
        DdpSettings {
            url,
            keepalive: Duration::from_secs(25),
            dead_link: Duration::from_secs(60),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(15),
            login_retry: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// The realtime endpoint of a Rocket.Chat base URL: `http(s)://host[:port]/prefix` becomes
/// `ws(s)://host[:port]/prefix/websocket`. `None` for a URL that is not http(s).
pub fn websocket_url(base: &Url) -> Option<Url> {
    let scheme = match base.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return None,
    };
    let mut url = base.clone();
    url.set_scheme(scheme).ok()?;
    let path = format!("{}/websocket", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    Some(url)
}

/// Who the bot logs in as. At least one of `password` and `personal_token` must be set.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Option<SecretString>,
    /// A personal access token: a resume token that never expires and skips two-factor checks.
    pub personal_token: Option<SecretString>,
}

/// A logged-in session: the REST API accepts the same pair as `X-User-Id` / `X-Auth-Token`.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: UserId,
    pub token: SecretString,
}

/// A registered subscription. It stays the same across reconnects, while the client re-sends
/// the subscription on every new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(u64);

impl SubscriptionId {
    const WIRE_PREFIX: &'static str = "sub-";

    /// The DDP subscription id. Ids are per connection in DDP, so reusing ours on every
    /// connection is allowed and keeps `ready`/`nosub` trivially mapped back.
    fn wire(self) -> String {
        format!("{}{}", Self::WIRE_PREFIX, self.0)
    }

    fn from_wire(wire: &str) -> Option<SubscriptionId> {
        wire.strip_prefix(Self::WIRE_PREFIX)?
            .parse()
            .ok()
            .map(SubscriptionId)
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.wire())
    }
}

/// What the connection reports to its owner.
#[derive(Debug)]
pub enum Event {
    /// Logged in on a (new) connection and every registered subscription answered ready/nosub.
    Ready(Session),
    /// The link went down; the client is reconnecting after `retry_in`.
    Disconnected { reason: String, retry_in: Duration },
    /// Login refused with an error a person must fix; `message` says what to do. The client
    /// keeps retrying every `login_retry`.
    LoginFailed { message: String },
    /// A stream event (`changed` frame with eventName/args) from any subscription.
    Stream(StreamEvent),
    /// A subscription was refused or ended by the server (e.g. a room stream for a closed
    /// room). It is no longer registered; subscribe again if it should come back.
    SubscriptionFailed { id: SubscriptionId, error: String },
}

/// Why a method call did not return a value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not connected to rocket.chat")]
    NotConnected,
    #[error("rocket.chat did not answer in time")]
    Timeout,
    #[error("rocket.chat refused the call: {0}")]
    Method(MethodError),
    #[error("the rocket.chat connection closed before the answer arrived")]
    Closed,
}

impl Error {
    /// Whether the same call may succeed later: link trouble and rate limits pass, refusals do not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::NotConnected | Error::Timeout | Error::Closed => true,
            Error::Method(error) => error.is_rate_limited().is_some(),
        }
    }

    /// How long the server asked us to wait (DDP rate limiter's `timeToReset`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Method(error) => error.is_rate_limited(),
            _ => None,
        }
    }
}

/// Counters since start, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DdpStats {
    /// WebSocket connections opened.
    pub connects: u64,
    /// Connection attempts after the first.
    pub reconnects: u64,
    pub logins: u64,
    pub login_failures: u64,
    /// Server pings we answered with a pong.
    pub pings_answered: u64,
    /// Keepalive pings we sent.
    pub pings_sent: u64,
    /// Well-formed frames with a `msg` we do not handle.
    pub unknown_frames: u64,
    /// Frames that are not DDP at all (not JSON, wrong field types, binary).
    pub garbage_frames: u64,
    /// `__my_messages__` frames of rooms the gateway ignores, dropped undecoded.
    pub ignored_frames: u64,
    pub stream_events: u64,
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    reconnects: AtomicU64,
    logins: AtomicU64,
    login_failures: AtomicU64,
    pings_answered: AtomicU64,
    pings_sent: AtomicU64,
    unknown_frames: AtomicU64,
    garbage_frames: AtomicU64,
    /// `__my_messages__` frames of rooms the gateway ignores (public channels).
    ignored_frames: AtomicU64,
    stream_events: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Registration {
    name: String,
    params: Value,
}

/// State shared by the handle and the connection task.
struct Shared {
    counters: Counters,
    ready: AtomicBool,
    next_subscription: AtomicU64,
    /// The subscriptions the owner wants; the task makes the connection match it.
    registry: Mutex<BTreeMap<SubscriptionId, Registration>>,
    /// Wakes the task when `registry` changed.
    registry_changed: Notify,
    call_timeout: Duration,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, BTreeMap<SubscriptionId, Registration>> {
        // A poisoned lock only means another thread panicked while holding it; the map itself
        // is always in a consistent state (single inserts and removes), so keep using it.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct CallRequest {
    method: String,
    params: Vec<Value>,
    reply: oneshot::Sender<Result<Value, Error>>,
}

/// Handle to the connection task.
#[derive(Clone)]
pub struct DdpClient {
    shared: Arc<Shared>,
    calls: mpsc::Sender<CallRequest>,
}

impl DdpClient {
    /// Spawns the connection task. Events go to the returned bounded receiver; when it is full
    /// the task waits (backpressure) and never drops one. Stops when `cancel` fires.
    pub fn start(
        settings: DdpSettings,
        credentials: Credentials,
        cancel: CancellationToken,
    ) -> (DdpClient, mpsc::Receiver<Event>) {
        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
        let (calls_tx, calls_rx) = mpsc::channel(CALL_CAPACITY);
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            ready: AtomicBool::new(false),
            next_subscription: AtomicU64::new(1),
            registry: Mutex::new(BTreeMap::new()),
            registry_changed: Notify::new(),
            call_timeout: settings.call_timeout,
        });
        let actor = Actor {
            settings,
            credentials,
            session: None,
            shared: Arc::clone(&shared),
            events: events_tx,
            calls: calls_rx,
            cancel,
        };
        tokio::spawn(actor.run());
        (
            DdpClient {
                shared,
                calls: calls_tx,
            },
            events_rx,
        )
    }

    /// Registers a subscription that is (re-)sent on every connection after login. Returns at
    /// once; the answer arrives as part of [`Event::Ready`] or as [`Event::SubscriptionFailed`].
    pub async fn subscribe(&self, name: &str, params: Value) -> SubscriptionId {
        let id = SubscriptionId(
            self.shared
                .next_subscription
                .fetch_add(1, Ordering::Relaxed),
        );
        let registration = Registration {
            name: name.to_owned(),
            params,
        };
        self.shared.registry().insert(id, registration);
        self.shared.registry_changed.notify_one();
        id
    }

    /// Forgets a subscription and ends it on the current connection.
    pub async fn unsubscribe(&self, id: SubscriptionId) {
        self.shared.registry().remove(&id);
        self.shared.registry_changed.notify_one();
    }

    /// A method call on the current connection. The gateway only uses `login` (internally);
    /// public for tests and diagnostics.
    pub async fn call(&self, method: &str, params: Vec<Value>) -> Result<Value, Error> {
        if !self.is_ready() {
            return Err(Error::NotConnected);
        }
        let (reply, answer) = oneshot::channel();
        let request = CallRequest {
            method: method.to_owned(),
            params,
            reply,
        };
        let exchange = async {
            self.calls.send(request).await.map_err(|_| Error::Closed)?;
            answer.await.map_err(|_| Error::Closed)?
        };
        timeout(self.shared.call_timeout, exchange)
            .await
            .map_err(|_| Error::Timeout)?
    }

    pub fn stats(&self) -> DdpStats {
        let c = &self.shared.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DdpStats {
            connects: load(&c.connects),
            reconnects: load(&c.reconnects),
            logins: load(&c.logins),
            login_failures: load(&c.login_failures),
            pings_answered: load(&c.pings_answered),
            pings_sent: load(&c.pings_sent),
            unknown_frames: load(&c.unknown_frames),
            garbage_frames: load(&c.garbage_frames),
            ignored_frames: load(&c.ignored_frames),
            stream_events: load(&c.stream_events),
        }
    }

    /// Logged in with every subscription answered, on a connection that is up.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Relaxed)
    }
}

/// How a connection ended and when to try again.
struct End {
    reason: String,
    retry: Retry,
    /// How long the connection had been ready, if it got that far.
    ready_for: Option<Duration>,
}

enum Retry {
    /// Link trouble: capped exponential backoff.
    Backoff,
    /// The server told us how long to wait.
    After(Duration),
    /// A person must fix the credentials; retry slowly.
    Slowly,
    /// Cancelled: do not reconnect.
    Never,
}

impl End {
    fn link(reason: impl Into<String>) -> End {
        End {
            reason: reason.into(),
            retry: Retry::Backoff,
            ready_for: None,
        }
    }
}

/// Where a connection is in its life.
enum Phase {
    /// `connect` sent, waiting for `connected`.
    Handshake,
    /// A `login` call is out; `remaining` are the credentials to try if it is refused.
    Login {
        call_id: String,
        attempt: Attempt,
        remaining: VecDeque<Attempt>,
    },
    /// Logged in, waiting for every subscription to answer.
    Subscribing,
    Ready {
        since: Instant,
    },
}

/// A subscription's state on the current connection.
enum SubState {
    Pending,
    Ready,
    /// Rate-limited by the server; re-sent at this instant.
    RetryAt(Instant),
}

/// One WebSocket connection and what was negotiated on it.
struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    phase: Phase,
    /// When the current phase (handshake, login, subscribing) must be over.
    deadline: Option<Instant>,
    last_inbound: Instant,
    next_call: u64,
    pending: HashMap<String, oneshot::Sender<Result<Value, Error>>>,
    subs: BTreeMap<SubscriptionId, SubState>,
}

impl Connection {
    fn next_id(&mut self) -> String {
        self.next_call += 1;
        self.next_call.to_string()
    }

    fn next_sub_retry(&self) -> Option<Instant> {
        self.subs
            .values()
            .filter_map(|state| match state {
                SubState::RetryAt(at) => Some(*at),
                SubState::Pending | SubState::Ready => None,
            })
            .min()
    }
}

/// The connection task.
struct Actor {
    settings: DdpSettings,
    credentials: Credentials,
    /// The session of the last successful login, resumed on the next connection.
    session: Option<Session>,
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
    calls: mpsc::Receiver<CallRequest>,
    cancel: CancellationToken,
}

impl Actor {
    async fn run(mut self) {
        let mut failures: u32 = 0;
        let mut first = true;
        loop {
            if !first {
                bump(&self.shared.counters.reconnects);
            }
            first = false;
            let end = self.connect_and_serve().await;
            self.shared.ready.store(false, Ordering::Relaxed);
            let stable_after = self.settings.dead_link;
            if end.ready_for.is_some_and(|up| up >= stable_after) {
                failures = 0;
            }
            let retry_in = match end.retry {
                Retry::Never => return,
                Retry::After(wait) => wait.max(self.settings.backoff_min),
                Retry::Slowly => self.settings.login_retry,
                Retry::Backoff => {
                    let delay = backoff_delay(
                        self.settings.backoff_min,
                        self.settings.backoff_max,
                        failures,
                        rand::random::<f64>(),
                    );
                    failures = failures.saturating_add(1);
                    delay
                }
            };
            warn!(reason = %end.reason, retry_in_ms = retry_in.as_millis() as u64, "rocket.chat link down");
            self.emit(Event::Disconnected {
                reason: end.reason,
                retry_in,
            })
            .await;
            if !self.idle(retry_in).await {
                return;
            }
        }
    }

    /// Waits between connections, refusing calls meanwhile. False when cancelled.
    async fn idle(&mut self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return false,
                _ = sleep_until(until) => return true,
                Some(request) = self.calls.recv() => {
                    let _ = request.reply.send(Err(Error::NotConnected));
                }
            }
        }
    }

    /// Sends an event, waiting while the consumer is behind. A consumer that went away is not
    /// an error: the connection keeps serving calls.
    async fn emit(&self, event: Event) {
        tokio::select! {
            _ = self.events.send(event) => {}
            _ = self.cancel.cancelled() => {}
        }
    }

    async fn connect_and_serve(&mut self) -> End {
        let opening = timeout(
            self.settings.connect_timeout,
            // Nagle off: DDP frames are small and each one waits for an answer; with it on, a
            // `sub` written behind an unacknowledged frame waits for the server's delayed ACK.
            tokio_tungstenite::connect_async_with_config(self.settings.url.as_str(), None, true),
        );
        let ws = tokio::select! {
            _ = self.cancel.cancelled() => return End { reason: "stopped".into(), retry: Retry::Never, ready_for: None },
            opened = opening => match opened {
                Err(_) => return End::link(format!("could not connect within {} ms", self.settings.connect_timeout.as_millis())),
                Ok(Err(err)) => return End::link(format!("could not connect: {err}")),
                Ok(Ok((ws, _response))) => ws,
            },
        };
        bump(&self.shared.counters.connects);
        let now = Instant::now();
        let mut conn = Connection {
            ws,
            phase: Phase::Handshake,
            deadline: Some(now + self.settings.connect_timeout),
            last_inbound: now,
            next_call: 0,
            pending: HashMap::new(),
            subs: BTreeMap::new(),
        };
        let mut end = match self.send(&mut conn, ClientFrame::Connect).await {
            Ok(()) => self.serve(&mut conn).await,
            Err(end) => end,
        };
        if let Phase::Ready { since } = conn.phase {
            end.ready_for = Some(since.elapsed());
        }
        // Dropping the senders fails every pending call with `Error::Closed`.
        conn.pending.clear();
        if matches!(end.retry, Retry::Never) {
            let _ = timeout(Duration::from_millis(200), conn.ws.close(None)).await;
        }
        end
    }

    async fn serve(&mut self, conn: &mut Connection) -> End {
        // `interval` panics on a zero period; a zero keepalive from a config means "as often
        // as possible", which one millisecond honours.
        let period = self.settings.keepalive.max(Duration::from_millis(1));
        let mut keepalive = tokio::time::interval_at(Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pings: u64 = 0;
        loop {
            let dead_at = conn.last_inbound + self.settings.dead_link;
            let deadline = conn.deadline;
            let sub_retry = conn.next_sub_retry();
            let subscribed = matches!(conn.phase, Phase::Subscribing | Phase::Ready { .. });
            let ready = matches!(conn.phase, Phase::Ready { .. });
            let step = tokio::select! {
                _ = self.cancel.cancelled() => Err(End { reason: "stopped".into(), retry: Retry::Never, ready_for: None }),
                message = conn.ws.next() => match message {
                    None => Err(End::link("rocket.chat closed the connection")),
                    Some(Err(err)) => Err(End::link(format!("websocket error: {err}"))),
                    Some(Ok(message)) => {
                        conn.last_inbound = Instant::now();
                        self.on_message(conn, message).await
                    }
                },
                _ = sleep_until(dead_at) => Err(End::link(format!(
                    "no frame from rocket.chat for {} ms", self.settings.dead_link.as_millis()))),
                _ = sleep_until(deadline.unwrap_or(dead_at)), if deadline.is_some() => {
                    Err(End::link(phase_timeout(&conn.phase)))
                }
                _ = keepalive.tick() => {
                    pings += 1;
                    bump(&self.shared.counters.pings_sent);
                    self.send(conn, ClientFrame::Ping { id: Some(format!("k{pings}")) }).await
                }
                _ = self.shared.registry_changed.notified(), if subscribed => {
                    self.sync_subscriptions(conn).await
                }
                _ = sleep_until(sub_retry.unwrap_or(dead_at)), if sub_retry.is_some() => {
                    self.retry_subscriptions(conn).await
                }
                Some(request) = self.calls.recv() => {
                    if ready {
                        self.start_call(conn, request).await
                    } else {
                        let _ = request.reply.send(Err(Error::NotConnected));
                        Ok(())
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn send(&self, conn: &mut Connection, frame: ClientFrame) -> Result<(), End> {
        let text = frame.encode();
        match timeout(self.settings.dead_link, conn.ws.send(Message::text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(End::link(format!("could not send: {err}"))),
            Err(_) => Err(End::link("rocket.chat stopped reading from the connection")),
        }
    }

    async fn on_message(&mut self, conn: &mut Connection, message: Message) -> Result<(), End> {
        match message {
            // Public-channel traffic on `__my_messages__` is dropped before it is decoded.
            Message::Text(text) if super::realtime::is_ignored_my_message(text.as_str()) => {
                bump(&self.shared.counters.ignored_frames);
                Ok(())
            }
            Message::Text(text) => match frame::decode(text.as_str()) {
                Ok(frame) => self.on_frame(conn, frame).await,
                Err(err) => {
                    bump(&self.shared.counters.garbage_frames);
                    debug!(error = %err, "ignored undecodable ddp frame");
                    Ok(())
                }
            },
            Message::Binary(_) => {
                bump(&self.shared.counters.garbage_frames);
                debug!("ignored binary websocket frame");
                Ok(())
            }
            Message::Close(close) => Err(End::link(match close {
                Some(close) => format!(
                    "rocket.chat closed the connection: {} {}",
                    u16::from(close.code),
                    close.reason.as_str()
                ),
                None => "rocket.chat closed the connection".to_owned(),
            })),
            // WebSocket-level pings are answered by tungstenite itself; they only prove life.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
        }
    }

    async fn on_frame(&mut self, conn: &mut Connection, frame: ServerFrame) -> Result<(), End> {
        match frame {
            ServerFrame::ServerId | ServerFrame::Pong { .. } | ServerFrame::Updated { .. } => {
                Ok(())
            }
            ServerFrame::Added { .. } | ServerFrame::Removed { .. } => Ok(()),
            ServerFrame::Ping { id } => {
                bump(&self.shared.counters.pings_answered);
                self.send(conn, ClientFrame::Pong { id }).await
            }
            ServerFrame::Connected { .. } => match conn.phase {
                Phase::Handshake => self.start_login(conn).await,
                _ => Ok(()),
            },
            ServerFrame::Failed { version } => Err(End::link(format!(
                "rocket.chat does not speak ddp version 1 (it suggests {})",
                version.as_deref().unwrap_or("none")
            ))),
            ServerFrame::Result { id, outcome } => {
                if matches!(&conn.phase, Phase::Login { call_id, .. } if *call_id == id) {
                    return self.on_login_result(conn, outcome).await;
                }
                if let Some(reply) = conn.pending.remove(&id) {
                    let _ = reply.send(outcome.map_err(Error::Method));
                } else {
                    debug!(id = %id, "ignored result for an unknown call");
                }
                Ok(())
            }
            ServerFrame::Ready { subs } => {
                for wire in subs {
                    if let Some(state) =
                        SubscriptionId::from_wire(&wire).and_then(|id| conn.subs.get_mut(&id))
                    {
                        *state = SubState::Ready;
                    }
                }
                self.check_ready(conn).await;
                Ok(())
            }
            ServerFrame::NoSub { id, error } => {
                self.on_nosub(conn, &id, error).await;
                Ok(())
            }
            ServerFrame::Changed {
                collection, fields, ..
            } => {
                if let Some(event) = StreamEvent::from_changed(&collection, &fields) {
                    bump(&self.shared.counters.stream_events);
                    self.emit(Event::Stream(event)).await;
                }
                Ok(())
            }
            ServerFrame::Error { reason } => {
                warn!(reason = %reason, "rocket.chat rejected a ddp frame we sent");
                Ok(())
            }
            ServerFrame::Unknown { msg } => {
                bump(&self.shared.counters.unknown_frames);
                debug!(msg = %msg, "ignored unknown ddp frame");
                Ok(())
            }
        }
    }

    async fn start_login(&mut self, conn: &mut Connection) -> Result<(), End> {
        let plan = Attempt::plan(&self.credentials, self.session.as_ref());
        self.next_login(conn, plan.into()).await
    }

    /// Sends the next login attempt of `remaining`.
    async fn next_login(
        &mut self,
        conn: &mut Connection,
        mut remaining: VecDeque<Attempt>,
    ) -> Result<(), End> {
        while let Some(attempt) = remaining.pop_front() {
            let Some(params) = attempt.params(&self.credentials, self.session.as_ref()) else {
                continue;
            };
            let call_id = conn.next_id();
            let frame = ClientFrame::Method {
                id: call_id.clone(),
                method: "login".to_owned(),
                params,
            };
            self.send(conn, frame).await?;
            conn.phase = Phase::Login {
                call_id,
                attempt,
                remaining,
            };
            conn.deadline = Some(Instant::now() + self.settings.call_timeout);
            return Ok(());
        }
        Err(End {
            reason: "no credentials to log in with: set password or auth_token in bot.toml".into(),
            retry: Retry::Slowly,
            ready_for: None,
        })
    }

    async fn on_login_result(
        &mut self,
        conn: &mut Connection,
        outcome: Result<Value, MethodError>,
    ) -> Result<(), End> {
        let Phase::Login {
            attempt, remaining, ..
        } = std::mem::replace(&mut conn.phase, Phase::Subscribing)
        else {
            return Ok(());
        };
        match outcome {
            Ok(result) => {
                let Some(session) = login::session_from_result(&result) else {
                    return Err(End::link(
                        "rocket.chat answered login without a user id and token",
                    ));
                };
                bump(&self.shared.counters.logins);
                info!(user = %session.user_id, method = attempt.label(), "logged in to rocket.chat");
                self.session = Some(session);
                conn.deadline = Some(Instant::now() + self.settings.call_timeout);
                self.sync_subscriptions(conn).await?;
                self.check_ready(conn).await;
                Ok(())
            }
            Err(error) => {
                if let Some(wait) = error.is_rate_limited() {
                    return Err(End {
                        reason: format!("login rate-limited by rocket.chat ({error})"),
                        retry: Retry::After(wait),
                        ready_for: None,
                    });
                }
                if matches!(attempt, Attempt::Session) {
                    // The session expired or was revoked; it will never work again.
                    self.session = None;
                }
                if !remaining.is_empty() {
                    debug!(method = attempt.label(), error = %error, "login refused, trying the next credential");
                    return self.next_login(conn, remaining).await;
                }
                bump(&self.shared.counters.login_failures);
                let message = login::advice(&error, &attempt, &self.credentials.username);
                self.emit(Event::LoginFailed {
                    message: message.clone(),
                })
                .await;
                Err(End {
                    reason: format!("login refused: {message}"),
                    retry: Retry::Slowly,
                    ready_for: None,
                })
            }
        }
    }

    /// Makes the connection's subscriptions match the registry: subscribes what is new and
    /// unsubscribes what was removed.
    async fn sync_subscriptions(&mut self, conn: &mut Connection) -> Result<(), End> {
        let (to_subscribe, to_unsubscribe) = {
            let registry = self.shared.registry();
            let new: Vec<ClientFrame> = registry
                .iter()
                .filter(|(id, _)| !conn.subs.contains_key(id))
                .map(|(id, registration)| ClientFrame::Sub {
                    id: id.wire(),
                    name: registration.name.clone(),
                    params: registration.params.clone(),
                })
                .collect();
            let gone: Vec<SubscriptionId> = conn
                .subs
                .keys()
                .filter(|id| !registry.contains_key(id))
                .copied()
                .collect();
            (new, gone)
        };
        for id in to_unsubscribe {
            conn.subs.remove(&id);
            self.send(conn, ClientFrame::Unsub { id: id.wire() })
                .await?;
        }
        for frame in to_subscribe {
            if let ClientFrame::Sub { id, .. } = &frame
                && let Some(id) = SubscriptionId::from_wire(id)
            {
                conn.subs.insert(id, SubState::Pending);
            }
            self.send(conn, frame).await?;
        }
        self.check_ready(conn).await;
        Ok(())
    }

    /// Re-sends the rate-limited subscriptions whose wait is over.
    async fn retry_subscriptions(&mut self, conn: &mut Connection) -> Result<(), End> {
        let now = Instant::now();
        let due: Vec<SubscriptionId> = conn
            .subs
            .iter()
            .filter(|(_, state)| matches!(state, SubState::RetryAt(at) if *at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let frame = {
                let registry = self.shared.registry();
                registry.get(&id).map(|registration| ClientFrame::Sub {
                    id: id.wire(),
                    name: registration.name.clone(),
                    params: registration.params.clone(),
                })
            };
            match frame {
                Some(frame) => {
                    conn.subs.insert(id, SubState::Pending);
                    self.send(conn, frame).await?;
                }
                None => {
                    conn.subs.remove(&id);
                }
            }
        }
        Ok(())
    }

    async fn on_nosub(&mut self, conn: &mut Connection, wire: &str, error: Option<MethodError>) {
        let Some(id) = SubscriptionId::from_wire(wire) else {
            debug!(id = %wire, "ignored nosub for an unknown subscription");
            return;
        };
        // A nosub for a subscription we no longer track answers our own unsub.
        if !conn.subs.contains_key(&id) {
            return;
        }
        if let Some(wait) = error.as_ref().and_then(MethodError::is_rate_limited) {
            debug!(subscription = %id, wait_ms = wait.as_millis() as u64, "subscription rate-limited");
            let retry_at = Instant::now() + wait;
            conn.subs.insert(id, SubState::RetryAt(retry_at));
            // While logging in, Ready waits for the retried subscription: the owner back-fills
            // history at Ready, so a stream that is not live yet would leave a gap.
            if let Some(deadline) = conn.deadline.as_mut() {
                *deadline = (*deadline).max(retry_at + self.settings.call_timeout);
            }
            return;
        }
        conn.subs.remove(&id);
        self.shared.registry().remove(&id);
        let error = match error {
            Some(error) => error.to_string(),
            None => "ended by the server".to_owned(),
        };
        warn!(subscription = %id, error = %error, "rocket.chat refused a subscription");
        self.emit(Event::SubscriptionFailed { id, error }).await;
        self.check_ready(conn).await;
    }

    /// Emits `Ready` once, when the login is done and every subscription is live or refused.
    async fn check_ready(&mut self, conn: &mut Connection) {
        if !matches!(conn.phase, Phase::Subscribing)
            || conn
                .subs
                .values()
                .any(|state| !matches!(state, SubState::Ready))
        {
            return;
        }
        let Some(session) = self.session.clone() else {
            return;
        };
        conn.phase = Phase::Ready {
            since: Instant::now(),
        };
        conn.deadline = None;
        self.shared.ready.store(true, Ordering::Relaxed);
        self.emit(Event::Ready(session)).await;
    }

    async fn start_call(&mut self, conn: &mut Connection, request: CallRequest) -> Result<(), End> {
        // Callers that gave up (timed out) leave closed senders behind; drop them here.
        conn.pending.retain(|_, reply| !reply.is_closed());
        let id = conn.next_id();
        let frame = ClientFrame::Method {
            id: id.clone(),
            method: request.method,
            params: request.params,
        };
        conn.pending.insert(id, request.reply);
        self.send(conn, frame).await
    }
}

fn phase_timeout(phase: &Phase) -> String {
    match phase {
        Phase::Handshake => "rocket.chat did not answer the ddp handshake in time".to_owned(),
        Phase::Login { .. } => "rocket.chat did not answer the login in time".to_owned(),
        Phase::Subscribing => "rocket.chat did not answer every subscription in time".to_owned(),
        Phase::Ready { .. } => "timed out".to_owned(),
    }
}

/// The wait before reconnect attempt `failures` (0-based): the cap doubles from `min` up to
/// `max`, and the wait is spread uniformly between `min` and the cap (`jitter` in [0, 1]) so
/// many gateways restarted together do not reconnect in lockstep.
fn backoff_delay(min: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let cap = min
        .checked_mul(2u32.saturating_pow(failures.min(31)))
        .unwrap_or(max)
        .min(max)
        .max(min);
    let span = cap.saturating_sub(min);
    min + span.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let min = Duration::from_millis(500);
        let max = Duration::from_secs(60);
        let cases = [
            (0, 1.0, Duration::from_millis(500)),
            (1, 1.0, Duration::from_secs(1)),
            (2, 1.0, Duration::from_secs(2)),
            (3, 0.5, Duration::from_millis(2250)),
            (7, 1.0, Duration::from_secs(60)),
            (40, 1.0, Duration::from_secs(60)),
            (u32::MAX, 1.0, Duration::from_secs(60)),
            (5, 0.0, Duration::from_millis(500)),
            (5, 7.0, Duration::from_secs(16)),
        ];
        for (failures, jitter, expected) in cases {
            assert_eq!(
                backoff_delay(min, max, failures, jitter),
                expected,
                "failures {failures}"
            );
        }
    }

    #[test]
    fn websocket_url_from_base_url() {
        let cases = [
            (
                "http://127.0.0.1:3000",
                Some("ws://127.0.0.1:3000/websocket"),
            ),
            (
                "https://chat.example.com/",
                Some("wss://chat.example.com/websocket"),
            ),
            (
                "https://example.com/chat/?x=1",
                Some("wss://example.com/chat/websocket"),
            ),
            ("ftp://example.com", None),
        ];
        for (base, expected) in cases {
            let base = Url::parse(base).ok();
            let got = base.as_ref().and_then(websocket_url);
            assert_eq!(got.as_ref().map(Url::as_str), expected);
        }
    }

    #[test]
    fn subscription_ids_round_trip_on_the_wire() {
        let id = SubscriptionId(17);
        assert_eq!(id.wire(), "sub-17");
        assert_eq!(SubscriptionId::from_wire("sub-17"), Some(id));
        for bad in ["17", "sub-", "sub-x", "login-1", ""] {
            assert_eq!(SubscriptionId::from_wire(bad), None, "{bad}");
        }
    }

    #[test]
    fn errors_classify_retries() {
        let limited = Error::Method(MethodError {
            error: ErrorCode::Text("too-many-requests".into()),
            reason: None,
            details: Some(serde_json::json!({"timeToReset": 1500})),
            message: None,
        });
        let refused = Error::Method(MethodError {
            error: ErrorCode::Text("error-not-allowed".into()),
            reason: None,
            details: None,
            message: None,
        });
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_millis(1500)));
        assert!(!refused.is_retryable());
        assert_eq!(refused.retry_after(), None);
        for link in [Error::NotConnected, Error::Timeout, Error::Closed] {
            assert!(link.is_retryable());
            assert_eq!(link.retry_after(), None);
        }
    }
}
