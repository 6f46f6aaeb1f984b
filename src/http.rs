//! The gateway's own HTTP server (DESIGN.md §4): Meta's webhooks, the OAuth callback, and the
//! operator's probes. Request bodies are capped at 1 MiB and every request has a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tracing::{info, warn};

use crate::health::Health;
use crate::pages::{self, CallbackPage, DialogOutcome, Pages};
use crate::store::Store;

/// Largest request body accepted; Meta's webhook batches are far smaller.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A request that takes longer is answered 408, so a slow client cannot hold a connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
}

async fn healthz(State(state): State<ProbeState>) -> impl IntoResponse {
    // The store answering a read proves the process and its state are alive.
    match state.store.pages() {
        Ok(_) => (StatusCode::OK, "ok\n".to_string()),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, format!("store unavailable: {err}\n")),
    }
}

async fn readyz(State(state): State<ProbeState>) -> impl IntoResponse {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
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

/// Serves until `cancel` fires, then stops accepting and lets in-flight requests finish.
pub async fn serve(listener: TcpListener, router: Router, cancel: CancellationToken) {
    let addr = listener.local_addr().ok();
    info!(addr = ?addr, "http server listening");
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await;
    if let Err(err) = result {
        warn!(error = %err, "http server stopped with an error");
    }
}

/// The OAuth redirect target (`GET /oauth/facebook/callback`).
pub fn oauth(pages: Arc<Pages>) -> Router {
    Router::new()
        .route(pages::CALLBACK_PATH, get(oauth_callback))
        .with_state(pages)
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn oauth_callback(State(pages): State<Arc<Pages>>, Query(query): Query<CallbackQuery>) -> Response {
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
                escape_html(&if pages.is_empty() { "none".into() } else { pages.join(", ") }),
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
