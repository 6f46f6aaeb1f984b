//! The gateway's own HTTP server (`docs/contract.md` §3): Meta's webhooks, the OAuth callback, and
//! the operator's probes. Request bodies are capped at 1 MiB, request heads at 64 KiB, connections
//! at [`MAX_CONNECTIONS`], and every request has a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, error, info, warn};

use crate::health::{Health, Link, now_ms};
use crate::ids::{ConversationKey, PageId};
use crate::messenger::webhook;
use crate::pages::{self, CallbackPage, DialogOutcome, Pages};
use crate::relay::inbound::Inbound;
use crate::relay::outbound;
use crate::relay::threads::Threads;
use crate::store::Store;
use crate::store::{self, Arriving, EnqueueOutcome, PageStatus};
use crate::telemetry::{Snapshot, Telemetry};

/// Largest request body accepted; Meta's webhook batches are far smaller.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A request that takes longer is answered 408, so a slow client cannot hold a connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once. Far above what Meta, a reverse proxy and probes open; beyond it
/// new connections are closed at once. The unit's `LimitNOFILE` leaves room for it.
pub const MAX_CONNECTIONS: usize = 8192;
/// The largest request head (request line and headers); a bigger one is answered 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// A connection that has not sent a complete request head by then is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent requests on one HTTP/2 connection.
const MAX_H2_STREAMS: u32 = 64;
/// How long to wait after an accept error such as running out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);
/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the probe routes read.
#[derive(Clone)]
pub struct ProbeState {
    pub health: Health,
    pub store: Store,
}

/// The probe routes (`/healthz`, `/readyz`). Other modules merge their own routers into it.
pub fn probes(state: ProbeState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Adds the limits every route shares.
pub fn with_limits(router: Router) -> Router {
    router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

async fn healthz(State(state): State<ProbeState>) -> impl IntoResponse {
    // The store answering a read proves the process and its state are alive.
    match state.store.pages() {
        Ok(_) => (StatusCode::OK, "ok\n".to_string()),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {err}\n"),
        ),
    }
}

async fn readyz(State(state): State<ProbeState>) -> impl IntoResponse {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

/// Binds the listen address; a clear error when the port is taken.
pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await.map_err(|err| {
        std::io::Error::new(
            err.kind(),
            format!("cannot listen on {listen} ([http].listen in bot.toml): {err}"),
        )
    })
}

/// Serves until `cancel` fires, then stops accepting and lets in-flight requests finish (for at
/// most [`SHUTDOWN_GRACE`]).
///
/// The accept loop is ours rather than `axum::serve` because the connection limits live here:
/// at most [`MAX_CONNECTIONS`] at once (more are closed on accept, so a flood cannot use up file
/// descriptors or memory), a request head within [`HEADER_READ_TIMEOUT`] (an idle or slow client
/// cannot hold a connection for ever) and of at most [`MAX_HEADER_BYTES`] (431 beyond).
pub async fn serve(listener: TcpListener, router: Router, cancel: CancellationToken) {
    let addr = listener.local_addr().ok();
    info!(addr = ?addr, max_connections = MAX_CONNECTIONS, "http server listening");
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(MAX_H2_STREAMS);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors or memory: wait for connections to close rather
                    // than spin. Errors about one failed handshake need no pause.
                    if !is_connection_error(&err) {
                        error!(error = %err, "http accept failed; retrying shortly");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            // One line when the limit is first hit, then one per thousand refusals.
            if refused % 1000 == 1 {
                warn!(peer = %peer, refused, limit = MAX_CONNECTIONS, "http connection limit reached; closing new connections");
            }
            drop(stream);
            continue;
        };
        // Answers are small and Meta waits on them: send each at once rather than let Nagle's
        // algorithm hold it for the peer's delayed ACK.
        if let Err(err) = stream.set_nodelay(true) {
            debug!(peer = %peer, error = %err, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(
            builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(peer = %peer, error = %err, "http connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            warn!("http connections still open after the shutdown grace period; closing them");
        }
    }
}

fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// The OAuth redirect target (`GET /oauth/facebook/callback`) and Meta's callbacks for apps
/// with Facebook Login: deauthorize, data deletion and the deletion status page.
pub fn oauth(pages: Arc<Pages>) -> Router {
    Router::new()
        .route(pages::CALLBACK_PATH, get(oauth_callback))
        .route(
            pages::DEAUTHORIZE_PATH,
            axum::routing::post(deauthorize_callback),
        )
        .route(
            pages::DATA_DELETION_PATH,
            axum::routing::post(data_deletion_callback),
        )
        .route(
            &format!("{}/{{code}}", pages::DATA_DELETION_PATH),
            get(data_deletion_status),
        )
        .with_state(pages)
}

/// The `signed_request` form field of a Meta callback, verified; a bad one is a 400 that
/// changes nothing.
fn signed_user(pages: &Pages, body: &[u8]) -> Result<String, (StatusCode, String)> {
    let raw = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "signed_request")
        .map(|(_, v)| v.into_owned());
    let Some(raw) = raw else {
        warn!("meta callback without a signed_request field");
        return Err((
            StatusCode::BAD_REQUEST,
            "the form field signed_request is missing\n".to_owned(),
        ));
    };
    pages.verify_signed_request(&raw).map_err(|err| {
        warn!(error = %err, "meta callback refused");
        (StatusCode::BAD_REQUEST, format!("{err}\n"))
    })
}

/// `POST /oauth/facebook/deauthorize`: Meta tells that a person removed the app.
async fn deauthorize_callback(State(pages): State<Arc<Pages>>, body: Bytes) -> Response {
    let user = match signed_user(&pages, &body) {
        Ok(user) => user,
        Err(refused) => return refused.into_response(),
    };
    match pages.deauthorize(&user).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(err) => {
            error!(error = %err, "deauthorize callback failed");
            // A 5xx makes Meta try again later.
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway's store failed\n",
            )
                .into_response()
        }
    }
}

/// `POST /oauth/facebook/data-deletion`: answers with the status URL and confirmation code, as
/// Meta requires (https://developers.facebook.com/docs/development/create-an-app/app-dashboard/data-deletion-callback).
async fn data_deletion_callback(State(pages): State<Arc<Pages>>, body: Bytes) -> Response {
    let user = match signed_user(&pages, &body) {
        Ok(user) => user,
        Err(refused) => return refused.into_response(),
    };
    match pages.delete_data(&user).await {
        Ok(receipt) => axum::Json(serde_json::json!({
            "url": receipt.status_url,
            "confirmation_code": receipt.code,
        }))
        .into_response(),
        Err(err) => {
            error!(error = %err, "data deletion callback failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway's store failed\n",
            )
                .into_response()
        }
    }
}

/// `GET /oauth/facebook/data-deletion/{code}`: the page a person reaches from Facebook.
async fn data_deletion_status(
    State(pages): State<Arc<Pages>>,
    axum::extract::Path(code): axum::extract::Path<String>,
) -> Response {
    match pages.deletion(&code) {
        Ok(Some(request)) => {
            let status = match request.completed_ms {
                Some(_) => "completed: the gateway holds no data about you any more",
                None => "in progress",
            };
            html_page(
                StatusCode::OK,
                "Data deletion request",
                &format!(
                    "Confirmation code <code>{}</code>: {}.",
                    escape_html(&request.code),
                    status
                ),
            )
        }
        Ok(None) => html_page(
            StatusCode::NOT_FOUND,
            "Unknown confirmation code",
            "No data deletion request has this confirmation code.",
        ),
        Err(err) => {
            error!(error = %err, "cannot read a data deletion request");
            html_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                "The gateway's store failed.",
            )
        }
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn oauth_callback(
    State(pages): State<Arc<Pages>>,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let Some(state) = query.state.filter(|s| !s.is_empty()) else {
        return html_page(
            StatusCode::BAD_REQUEST,
            "This link is incomplete",
            "The Facebook Login answer carried no state. Run <code>/facebook authorize</code> in Rocket.Chat and use the new link.",
        );
    };
    let outcome = match (query.code, query.error) {
        (_, Some(error)) => DialogOutcome::Refused {
            error,
            description: query.error_description,
        },
        (Some(code), None) if !code.is_empty() => DialogOutcome::Approved { code },
        _ => {
            return html_page(
                StatusCode::BAD_REQUEST,
                "This link is incomplete",
                "The Facebook Login answer carried neither a code nor an error. Run <code>/facebook authorize</code> again.",
            );
        }
    };
    match pages.complete_authorization(&state, outcome).await {
        CallbackPage::Connected { pages, failures } if failures.is_empty() => html_page(
            StatusCode::OK,
            "Pages connected",
            &format!(
                "Connected: {}.<br>Rocket.Chat has the details. You can close this tab.",
                escape_html(&pages.join(", "))
            ),
        ),
        CallbackPage::Connected { pages, failures } => html_page(
            StatusCode::OK,
            "Some pages could not be connected",
            &format!(
                "Connected: {}.<br>Not connected: {}.<br>Rocket.Chat has the details. You can close this tab.",
                escape_html(&if pages.is_empty() {
                    "none".into()
                } else {
                    pages.join(", ")
                }),
                escape_html(&failures.join("; "))
            ),
        ),
        CallbackPage::Declined => html_page(
            StatusCode::OK,
            "Nothing was connected",
            "Facebook Login was cancelled. Run <code>/facebook authorize</code> in Rocket.Chat to try again. You can close this tab.",
        ),
        CallbackPage::BadState { reason } => html_page(
            StatusCode::BAD_REQUEST,
            "This link cannot be used",
            &format!(
                "{}. Run <code>/facebook authorize</code> in Rocket.Chat for a new link.",
                escape_html(&capitalize(reason))
            ),
        ),
        CallbackPage::Failed { reason } => html_page(
            StatusCode::BAD_GATEWAY,
            "Connecting failed",
            &format!(
                "{}.<br>Run <code>/facebook authorize</code> in Rocket.Chat to try again.",
                escape_html(&capitalize(&reason))
            ),
        ),
    }
}

/// A small, self-contained page for the admin's browser.
fn html_page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title} · omni-gateway</title><style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#1f2329}}\
         h1{{font-size:1.4rem}}code{{background:#f2f3f5;padding:0 .25rem}}</style></head>\
         <body><h1>{title}</h1><p>{body_html}</p></body></html>\n",
        title = escape_html(title)
    );
    (status, Html(page)).into_response()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What the webhook routes need.
#[derive(Clone)]
pub struct WebhookState {
    pub store: Store,
    pub inbound: Arc<Inbound>,
    /// Told about Meta's policy enforcement on a page.
    pub pages: Arc<Pages>,
    pub tasks: tokio_util::task::TaskTracker,
    /// Our Facebook app id: an echo from it is our own send.
    pub app_id: String,
    /// Told who controls which conversation (`messaging_handovers`, `standby`).
    pub threads: Arc<Threads>,
    pub telemetry: Telemetry,
    pub app_secret: SecretString,
    pub verify_token: SecretString,
}

/// `GET/POST /webhooks/messenger`.
pub fn webhooks(state: WebhookState) -> Router {
    Router::new()
        .route(
            "/webhooks/messenger",
            get(verify_webhook).post(receive_webhook),
        )
        // Shared, not cloned per request: its secrets are zeroed on every drop.
        .with_state(Arc::new(state))
}

#[derive(Deserialize)]
struct VerifyQuery {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Meta's verification: the challenge back verbatim when mode and token match, else 403.
async fn verify_webhook(
    State(state): State<Arc<WebhookState>>,
    Query(query): Query<VerifyQuery>,
) -> Response {
    let token_matches = query.verify_token.as_deref().is_some_and(|given| {
        bool::from(
            given
                .as_bytes()
                .ct_eq(state.verify_token.expose_secret().as_bytes()),
        )
    });
    match (query.mode.as_deref(), token_matches, query.challenge) {
        (Some("subscribe"), true, Some(challenge)) => {
            info!("webhook verified by Meta");
            (StatusCode::OK, challenge).into_response()
        }
        _ => {
            warn!(
                "webhook verification refused: hub.verify_token does not match [facebook].verify_token"
            );
            (StatusCode::FORBIDDEN, "verification failed\n").into_response()
        }
    }
}

/// Events: signature first (401, nothing stored), then JSON (400), then every relayable event
/// of a connected page is stored and flushed before the 200, so an acknowledged event survives
/// a crash. A store failure answers 503 so Meta retries.
async fn receive_webhook(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = tokio::time::Instant::now();
    let parsed = match verified_webhook(&state, &headers, &body) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    // Instagram Direct reaches the same endpoint with `object: "instagram"`, keyed by the
    // Instagram account id, which is its own record in the pages tree (docs/instagram.md §3.1).
    let instagram = match parsed.object.as_str() {
        "page" => false,
        "instagram" => true,
        _ => {
            info!(object = %parsed.object, "webhook for another product ignored");
            return (StatusCode::OK, "EVENT_RECEIVED").into_response();
        }
    };
    if parsed.skipped > 0 {
        warn!(
            items = parsed.skipped,
            "webhook items without sender or recipient ignored"
        );
    }
    for handover in &parsed.handovers {
        state.threads.record(handover);
    }
    for notice in parsed.policy {
        // The notice is not stored: Meta sends it once, and admins are told by DM at once.
        let pages = state.pages.clone();
        state
            .tasks
            .spawn(async move { pages.policy_enforcement(&notice).await });
    }
    let (events, stale_pages, echoes) = match relayed_events(&state, parsed.events, instagram) {
        Ok(found) => found,
        Err(err) => return store_failure(&err),
    };
    if events.is_empty() && echoes > 0 {
        // The echo marks tell a retrying outbox worker its send was delivered: durable first.
        if let Err(err) = state.store.sync().await {
            return store_failure(&err);
        }
    }
    if !events.is_empty() {
        if let Err(err) = store_events(&state, events, &stale_pages).await {
            return store_failure(&err);
        }
    }
    state
        .telemetry
        .webhook_handled(started.elapsed().as_secs_f64());
    (StatusCode::OK, "EVENT_RECEIVED").into_response()
}

/// The body, parsed, once its signature is checked; otherwise the answer that refuses it.
fn verified_webhook<'body>(
    state: &WebhookState,
    headers: &HeaderMap,
    body: &'body [u8],
) -> Result<webhook::Parsed<'body>, (StatusCode, String)> {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if let Err(err) =
        webhook::verify_signature(state.app_secret.expose_secret().as_bytes(), signature, body)
    {
        warn!(error = %err, bytes = body.len(), "webhook refused");
        return Err((StatusCode::UNAUTHORIZED, format!("{err}\n")));
    }
    webhook::parse(body).map_err(|err| {
        warn!(error = %err, "webhook body refused");
        (StatusCode::BAD_REQUEST, format!("{err}\n"))
    })
}

/// The events the relay carries, for connected pages, the pages whose last-webhook time is
/// due for an update, and how many echoes of our own sends were marked (not flushed). Other
/// events are counted and dropped (acknowledged).
fn relayed_events<'body>(
    state: &WebhookState,
    envelopes: Vec<webhook::Envelope<'body>>,
    instagram: bool,
) -> Result<(Vec<Arriving<'body>>, Vec<PageId>, usize), store::Error> {
    let mut events = Vec::new();
    let mut stale_pages = Vec::new();
    // Each page once per body (a batch is nearly always one page's): whether it is connected.
    let mut checked: Vec<(PageId, bool)> = Vec::new();
    let mut echoes = 0;
    // One reading of the clock for the body: its events arrived together.
    let received_ms = now_ms();
    for envelope in envelopes {
        match &envelope.meaning {
            webhook::Meaning::Echo { app_id, metadata }
                if app_id.as_deref() == Some(state.app_id.as_str()) =>
            {
                // Our own send: noted for the outbox, never shown again.
                if let Some(sent) = metadata.as_deref().and_then(outbound::own_send) {
                    state.store.mark_echoed(sent, now_ms())?;
                    echoes += 1;
                }
                state.telemetry.webhook_event("ignored", 1);
                continue;
            }
            // Instagram echoes carry no `app_id` or `metadata` (docs/instagram.md §4.7), so the
            // gateway's own sends cannot be told from replies typed in the Instagram app: none
            // is shown.
            webhook::Meaning::Echo { .. } if instagram => {
                state.telemetry.webhook_event("ignored", 1);
                continue;
            }
            // The page's words from the Page Inbox or another app: shown in the room.
            webhook::Meaning::Echo { .. } | webhook::Meaning::Relayed => {}
            webhook::Meaning::Ignored => {
                state.telemetry.webhook_event("ignored", 1);
                continue;
            }
        }
        // The body's events share one copy of their page id.
        let (page, connected) = match checked.iter().find(|(id, _)| *id == envelope.page) {
            Some((page, connected)) => (page.clone(), *connected),
            None => {
                let connected = match state.store.page(&envelope.page)? {
                    Some(page)
                        if page.token.is_some() || page.status != PageStatus::Disconnected =>
                    {
                        let fresh = page.last_webhook_ms.is_some_and(|at| {
                            now_ms().saturating_sub(at) < LAST_WEBHOOK_RESOLUTION_MS
                        });
                        if !fresh {
                            stale_pages.push(page.id);
                        }
                        true
                    }
                    _ => false,
                };
                checked.push((envelope.page.clone(), connected));
                (envelope.page, connected)
            }
        };
        if !connected {
            warn!(page = %page, "webhook event for a page that is not connected; acknowledged and dropped");
            state.telemetry.webhook_event("unknown_page", 1);
            continue;
        }
        let key = ConversationKey::new(page, envelope.psid);
        if envelope.standby {
            state.threads.standby(&key);
        }
        events.push(Arriving {
            key,
            timestamp_ms: envelope.timestamp_ms,
            dedupe_key: envelope.dedupe_key,
            received_ms,
            standby: envelope.standby,
            text: envelope.text,
        });
    }
    Ok((events, stale_pages, echoes))
}

/// Stores the events durably (the 200 waits for this; see `Store::ingest`); their
/// conversations' workers are woken once the events are in the inbox.
async fn store_events(
    state: &WebhookState,
    events: Vec<Arriving<'_>>,
    stale_pages: &[PageId],
) -> Result<(), store::Error> {
    let telemetry = state.telemetry.clone();
    let inbound = state.inbound.clone();
    // Told on the journal's applier thread once the events are in the inbox, after the 200.
    let queued = move |outcome: store::Result<EnqueueOutcome>,
                       conversations: Vec<ConversationKey>| {
        match outcome {
            Ok(outcome) => {
                telemetry.webhook_event("stored", outcome.stored as u64);
                telemetry.webhook_event("duplicate", outcome.duplicates as u64);
                debug!(
                    stored = outcome.stored,
                    duplicates = outcome.duplicates,
                    "webhook stored"
                );
            }
            Err(err) => {
                error!(error = %err, "acknowledged webhook events wait in the inbox journal for the next start");
            }
        }
        for key in &conversations {
            inbound.wake(key);
        }
    };
    // Durable once this returns: the 200 may go.
    state.store.ingest(events, queued).await?;
    // For `status`; it needs no flush of its own (the next one carries it).
    for page in stale_pages {
        let now = now_ms();
        if let Err(err) = state
            .store
            .update_page(page, |p| p.last_webhook_ms = Some(now))
        {
            warn!(page = %page, error = %err, "cannot record the page's last webhook");
        }
    }
    Ok(())
}

fn store_failure(err: &store::Error) -> Response {
    if err.is_disk_full() {
        error!(error = %err, "cannot store webhook events: the disk is full or read-only; Meta will retry (answering 503)");
    } else {
        error!(error = %err, "cannot store webhook events; Meta will retry (answering 503)");
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "events could not be stored; retry later\n",
    )
        .into_response()
}

/// `Page.last_webhook_ms` is rewritten at most this often, so a busy page costs no extra write
/// per webhook.
const LAST_WEBHOOK_RESOLUTION_MS: u64 = 60_000;

/// What `/metrics` reads.
#[derive(Clone)]
pub struct MetricsState {
    pub telemetry: Telemetry,
    pub store: Store,
    pub health: Health,
}

pub fn metrics(state: MetricsState) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

async fn render_metrics(State(state): State<MetricsState>) -> Response {
    let pages = state.store.pages().unwrap_or_default();
    let held_since: Vec<u64> = state
        .store
        .conversations()
        .map(|all| all.iter().filter_map(|c| c.held_since_ms).collect())
        .unwrap_or_default();
    let now_ms = crate::health::now_ms();
    let oldest_held = held_since
        .iter()
        .min()
        .map(|since| Duration::from_millis(now_ms.saturating_sub(*since)))
        .unwrap_or_default();
    let snapshot = Snapshot {
        inbox_depth: state.store.inbox().len(),
        outbox_depth: state.store.outbox().len(),
        held_conversations: held_since.len(),
        oldest_held,
        rocketchat_up: matches!(state.health.link(), Link::Up { .. }),
        pages: pages
            .iter()
            .map(|p| {
                let label = match p.status {
                    PageStatus::Connected => "connected",
                    PageStatus::NeedsAuthorization { .. } => "needs_authorization",
                    PageStatus::Disconnected => "disconnected",
                };
                (p.id.to_string(), label)
            })
            .collect(),
    };
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.telemetry.render(&snapshot),
    )
        .into_response()
}
