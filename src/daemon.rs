//! The daemon: opens the store, connects to Rocket.Chat, serves HTTP, and runs the loops until it
//! is told to stop. `Gateway::start` is what `omni-gateway run`, `sandbox` and the tests use, so
//! every one of them exercises the same wiring.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::admin::{Admin, AdminPolicy};
use crate::config::Config;
use crate::health::Health;
use crate::messenger::graph::{GraphClient, GraphSettings};
use crate::notices::Notifier;
use crate::pages::{self, Pages};
use crate::relay::inbound::Inbound;
use crate::relay::outbound::Outbound;
use crate::relay::threads::Threads;
use crate::relay::{CustomerMessenger, RelayContext};
use crate::rocketchat::ddp::{Credentials, DdpClient, DdpSettings, Event};
use crate::rocketchat::realtime::{self, Streamed};
use crate::rocketchat::rest::{Auth, RestClient};
use crate::store::{Store, TokenKey};
use crate::telemetry::Telemetry;
use crate::{http, systemd};

/// How long a REST call to Rocket.Chat may take.
const REST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a Graph API call may take.
const GRAPH_TIMEOUT: Duration = Duration::from_secs(20);
/// Admin messages waiting to be handled; the stream waits when it is full.
const ADMIN_QUEUE: usize = 256;

/// A running gateway.
pub struct Gateway {
    /// Where the HTTP server listens (useful when bot.toml asked for port 0).
    pub http_addr: SocketAddr,
    pub health: Health,
    pub store: Store,
    /// The realtime connection; the outbound relay adds room streams to it.
    pub ddp: DdpClient,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Gateway {
    /// Opens the store, binds the HTTP port and starts every loop. Fails fast, with the reason,
    /// on anything a person must fix (store locked or unreadable, port taken).
    pub async fn start(config: Config) -> anyhow::Result<Gateway> {
        let store = open_store(&config)?;
        let listener = http::bind(config.http.listen).await?;
        let http_addr = listener.local_addr()?;

        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let health = Health::new();

        let rest = rest_client(&config)?;
        let chat = Notifier::new(rest.clone());
        let graph = graph_client(&config)?;
        let pages = Arc::new(Pages::new(
            graph.clone(),
            store.clone(),
            chat.clone(),
            &config.http.public_url,
            config.facebook.verify_token.clone(),
        ));
        let telemetry = Telemetry::with_rate_limits(rest.rate_limits());
        let customer = CustomerMessenger::new(graph.clone(), store.clone(), chat.clone());
        let (ddp, events) = connect_realtime(&config, cancel.child_token()).await;
        let threads = Arc::new(Threads::new(&config.facebook.app_id));
        let context = RelayContext {
            store: store.clone(),
            rest: rest.clone(),
            customer,
            chat: chat.clone(),
            telemetry: telemetry.clone(),
            threads: threads.clone(),
            tasks: tasks.clone(),
            runtime: tokio::runtime::Handle::current(),
            cancel: cancel.clone(),
        };
        let outbound = Outbound::new(
            context.clone(),
            graph,
            ddp.clone(),
            config.facebook.human_agent_tag,
            config.rocketchat.username.clone(),
        );
        let inbound = Inbound::new(context.clone(), outbound.clone());
        outbound.resume().await?;
        inbound.resume_pending()?;
        let admin = Arc::new(Admin::new(
            rest.clone(),
            chat,
            pages.clone(),
            inbound.clone(),
            store.clone(),
            health.clone(),
            AdminPolicy {
                admins: config.rocketchat.admins.clone(),
                admin_roles: config.rocketchat.admin_roles.clone(),
            },
        ));
        let (admin_tx, admin_rx) = mpsc::channel(ADMIN_QUEUE);
        let progress = Arc::new(AtomicU64::new(0));
        tasks.spawn(admin_loop(admin.clone(), admin_rx));
        tasks.spawn(rocketchat_loop(
            events,
            Relays {
                rest: rest.clone(),
                health: health.clone(),
                admin: admin_tx,
                inbound: inbound.clone(),
                outbound,
                tasks: tasks.clone(),
            },
            progress.clone(),
            cancel.clone(),
        ));
        tasks.spawn(systemd::watchdog(progress, cancel.clone()));
        tasks.spawn(pages::health_loop(
            pages.clone(),
            config.facebook.health_check,
            cancel.clone(),
        ));
        tasks.spawn(store_maintenance(store.clone(), cancel.clone()));

        let router = router(&config, &context, &health, pages, inbound);
        tasks.spawn(http::serve(listener, router, cancel.clone()));
        tasks.close();

        info!(http = %http_addr, rocketchat = %config.rocketchat.url, "gateway started");
        Ok(Gateway {
            http_addr,
            health,
            store,
            ddp,
            cancel,
            tasks,
        })
    }

    /// Stops accepting work, lets in-flight work finish, flushes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.health.stopping();
        self.cancel.cancel();
        self.tasks.wait().await;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush_blocking())
            .await
            .context("the final store flush did not run")?
            .context("the final store flush failed")?;
        info!("gateway stopped; store flushed");
        Ok(())
    }
}

fn open_store(config: &Config) -> anyhow::Result<Store> {
    let key = TokenKey::load_or_create(&config.store.key_file).with_context(|| {
        format!(
            "cannot load the token key {}",
            config.store.key_file.display()
        )
    })?;
    Store::open(&config.store.path, key, config.store.cache_capacity_bytes)
        .with_context(|| format!("cannot open the store at {}", config.store.path.display()))
}

/// The REST client, with the personal access token when bot.toml has one (otherwise the DDP
/// login's session is set once it logs in).
fn rest_client(config: &Config) -> anyhow::Result<RestClient> {
    let rest = RestClient::new(&config.rocketchat.url, REST_TIMEOUT)?;
    if let Some(token) = &config.rocketchat.personal_token {
        rest.set_auth(Some(Auth {
            user_id: token.user_id.clone(),
            token: token.auth_token.clone(),
        }));
    }
    Ok(rest)
}

fn graph_client(config: &Config) -> anyhow::Result<GraphClient> {
    Ok(GraphClient::new(GraphSettings {
        graph_url: config.facebook.graph_url.clone(),
        dialog_url: config.facebook.dialog_url.clone(),
        api_version: config.facebook.api_version.clone(),
        app_id: config.facebook.app_id.clone(),
        app_secret: config.facebook.app_secret.clone(),
        timeout: GRAPH_TIMEOUT,
    })?)
}

/// Every HTTP route: probes, the OAuth callback, the Messenger webhook and metrics.
fn router(
    config: &Config,
    context: &RelayContext,
    health: &Health,
    pages: Arc<Pages>,
    inbound: Arc<Inbound>,
) -> axum::Router {
    let store = &context.store;
    let telemetry = context.telemetry.clone();
    http::with_limits(
        http::probes(http::ProbeState {
            health: health.clone(),
            store: store.clone(),
        })
        .merge(http::oauth(pages.clone()))
        .merge(http::webhooks(http::WebhookState {
            store: store.clone(),
            inbound,
            pages,
            tasks: context.tasks.clone(),
            app_id: config.facebook.app_id.clone(),
            threads: context.threads.clone(),
            telemetry: telemetry.clone(),
            app_secret: config.facebook.app_secret.clone(),
            verify_token: config.facebook.verify_token.clone(),
        }))
        .merge(http::metrics(http::MetricsState {
            telemetry,
            store: store.clone(),
            health: health.clone(),
        })),
    )
}

/// Runs the daemon until SIGTERM or SIGINT, telling systemd when it is ready and stopping.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let gateway = Gateway::start(config).await?;
    let ready = tokio::spawn(systemd::notify_ready_when_up(gateway.health.clone()));
    let store_failed = tokio::select! {
        _ = systemd::shutdown_signal() => false,
        _ = until_store_failed(&gateway.store) => true,
    };
    ready.abort();
    systemd::notify_stopping();
    if store_failed {
        error!(
            "the store cannot be written (see the errors above); exiting so systemd restarts the gateway, which succeeds once the disk has room again"
        );
        // The final flush fails too; the exit status is what matters.
        let _ = gateway.shutdown().await;
        anyhow::bail!("the store cannot be written");
    }
    info!("stopping");
    gateway.shutdown().await
}

/// Returns once a store flush has failed. Webhooks are answered 503 meanwhile, so Meta keeps
/// the events; a new process is the only way to write to the store again (see
/// [`Store::has_failed`]).
async fn until_store_failed(store: &Store) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !store.has_failed() {
        tick.tick().await;
    }
}

async fn admin_loop(
    admin: Arc<Admin>,
    mut messages: mpsc::Receiver<(realtime::ChatMessage, realtime::RoomContext)>,
) {
    while let Some((message, room)) = messages.recv().await {
        admin.handle(message, room).await;
    }
}

/// How long Meta may redeliver a webhook (it retries for well under an hour; a week is ample).
const SEEN_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Relayed-reply marks only guard back-fills, which never reach before a conversation's newest
/// relayed reply; a month is ample.
const RELAYED_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Forgets dedupe marks nobody can need any more, hourly, so the store does not grow forever.
async fn store_maintenance(store: Store, cancel: CancellationToken) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = hourly.tick() => {}
        }
        let now = crate::health::now_ms();
        let seen = store.prune_seen(now.saturating_sub(SEEN_RETENTION.as_millis() as u64));
        let relayed = store.prune_relayed(now.saturating_sub(RELAYED_RETENTION.as_millis() as u64));
        let states = store.prune_oauth_states(now);
        match (seen, relayed, states) {
            (Ok(seen), Ok(relayed), Ok(states)) if seen + relayed + states > 0 => {
                info!(
                    seen,
                    relayed, states, "store maintenance: old marks forgotten"
                );
            }
            (Ok(_), Ok(_), Ok(_)) => {}
            (seen, relayed, states) => {
                for err in [seen.err(), relayed.err(), states.err()]
                    .into_iter()
                    .flatten()
                {
                    error!(error = %err, "store maintenance failed");
                }
            }
        }
    }
}

/// Starts the realtime connection and registers the bot's own message stream.
async fn connect_realtime(
    config: &Config,
    cancel: CancellationToken,
) -> (DdpClient, mpsc::Receiver<Event>) {
    let settings = DdpSettings {
        keepalive: config.rocketchat.keepalive,
        dead_link: config.rocketchat.dead_link,
        ..DdpSettings::new(config.rocketchat.websocket_url())
    };
    let credentials = Credentials {
        username: config.rocketchat.username.clone(),
        password: config.rocketchat.password.clone(),
        personal_token: config
            .rocketchat
            .personal_token
            .as_ref()
            .map(|t| t.auth_token.clone()),
    };
    let (ddp, events) = DdpClient::start(settings, credentials, cancel);
    ddp.watch_my_messages().await;
    (ddp, events)
}

/// Where the realtime events go.
struct Relays {
    rest: RestClient,
    health: Health,
    admin: mpsc::Sender<(realtime::ChatMessage, realtime::RoomContext)>,
    inbound: Arc<Inbound>,
    outbound: Arc<Outbound>,
    /// The daemon's tracker: shutdown waits for the back-fills before the final flush.
    tasks: TaskTracker,
}

/// Turns the DDP client's events into state changes and work for the core.
async fn rocketchat_loop(
    mut events: mpsc::Receiver<Event>,
    relays: Relays,
    progress: Arc<AtomicU64>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut login_problem: Option<String> = None;
    loop {
        progress.fetch_add(1, Ordering::Relaxed);
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => continue,
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
        };
        match event {
            Event::Ready(session) => {
                info!(user = %session.user_id, "logged in to rocket.chat; streams subscribed");
                relays.rest.set_auth(Some(Auth {
                    user_id: session.user_id,
                    token: session.token,
                }));
                relays.health.link_up();
                relays.inbound.rocketchat_is_back();
                login_problem = None;
                // Whatever agents wrote while the link was down is caught up from history.
                let outbound = relays.outbound.clone();
                relays
                    .tasks
                    .spawn(async move { outbound.backfill_all().await });
            }
            Event::Disconnected { reason, .. } => relays.health.link_down(reason),
            Event::LoginFailed { message } => {
                // The client retries every minute or so: say it once per distinct problem.
                if login_problem.as_deref() != Some(message.as_str()) {
                    error!(problem = %message, "rocket.chat login refused");
                    login_problem = Some(message.clone());
                }
                relays.health.login_failed(message);
            }
            Event::Stream(event) => match Streamed::read(&event) {
                Some(Streamed::MyMessage(message, room)) => {
                    let queued = relays.admin.send((message, room)).await;
                    if queued.is_err() {
                        break;
                    }
                }
                Some(Streamed::Room(rid, message)) => {
                    relays.outbound.on_room_event(&rid, &message).await;
                }
                Some(Streamed::Activity { rid, typing }) => {
                    relays.outbound.on_activity(&rid, typing).await;
                }
                Some(Streamed::Deleted { rid, id }) => {
                    relays.outbound.on_deleted(&rid, &id).await;
                }
                None => {}
            },
            Event::SubscriptionFailed { id, error } => {
                info!(subscription = %id, error = %error, "rocket.chat ended a subscription; catching up from history");
                let outbound = relays.outbound.clone();
                relays
                    .tasks
                    .spawn(async move { outbound.on_stream_failed(id).await });
            }
        }
    }
}
