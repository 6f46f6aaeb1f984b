//! The Rocket.Chat REST client. Every action the gateway takes on Rocket.Chat goes through here
//! (realtime methods are deprecated); the DDP connection only logs in and streams events.
//!
//! Authenticated calls carry `X-User-Id` / `X-Auth-Token` from the session the DDP login produced
//! (or the personal access token). Errors are classified so callers can decide to retry without
//! reading message texts.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;

use crate::ids::{MessageId, RoomId, UserId};
use crate::telemetry::RateLimits;

/// Credentials for authenticated REST calls.
#[derive(Clone)]
pub struct Auth {
    pub user_id: UserId,
    pub token: SecretString,
}

#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// Rocket.Chat answered with an error body (HTTP 4xx other than 401/429).
    #[error("rocket.chat refused {route} (HTTP {status}): {message}")]
    Api {
        route: String,
        status: u16,
        /// The machine-readable code (`errorType`, e.g. `no-agent-online`, `room-closed`).
        error_type: Option<String>,
        message: String,
    },
    /// HTTP 429 or `error-too-many-requests`: wait and try again.
    #[error("rocket.chat rate-limited {route}; retry in {}s", retry_after.as_secs())]
    RateLimited {
        route: String,
        retry_after: Duration,
    },
    /// HTTP 401: the session or token is not (or no longer) accepted.
    #[error(
        "rocket.chat rejected the bot's credentials on {route}; the session expired or the token was revoked"
    )]
    Unauthorized { route: String },
    /// HTTP 5xx or a proxy error page.
    #[error("rocket.chat failed on {route} (HTTP {status})")]
    Server { route: String, status: u16 },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach rocket.chat for {route}: {source}")]
    Transport {
        route: String,
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer from rocket.chat on {route}: {detail}")]
    Decode { route: String, detail: String },
    /// An authenticated call was attempted before the bot logged in.
    #[error("not logged in to rocket.chat yet ({route})")]
    NotLoggedIn { route: String },
}

impl Error {
    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. }
                | Error::Server { .. }
                | Error::Transport { .. }
                | Error::NotLoggedIn { .. }
                | Error::Unauthorized { .. }
        )
    }

    /// How long Rocket.Chat asked us to wait, when it said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// `chat.react` will never take this reaction: the bot may not access the room
    /// (`not-authorized`: it lacks `view-livechat-rooms`), the emoji is unknown or the message is
    /// gone (`error-not-allowed`, `error-message-not-found`).
    pub fn is_reaction_refused(&self) -> bool {
        matches!(
            self.error_type(),
            Some("not-authorized" | "error-not-allowed" | "error-message-not-found")
        )
    }

    /// The `errorType` code of an API error (`no-agent-online`, `room-closed`, …).
    pub fn error_type(&self) -> Option<&str> {
        match self {
            Error::Api { error_type, .. } => error_type.as_deref(),
            _ => None,
        }
    }

    /// A short label for metrics and logs: the kind of failure, never its text.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Api { .. } => "api",
            Error::RateLimited { .. } => "rate_limited",
            Error::Unauthorized { .. } => "unauthorized",
            Error::Server { .. } => "server",
            Error::Transport { .. } => "transport",
            Error::Decode { .. } => "decode",
            Error::NotLoggedIn { .. } => "not_logged_in",
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The REST client. Cheap to clone; all clones share the connection pool and credentials.
#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
    base: Url,
    auth: Arc<RwLock<Option<Auth>>>,
    rate_limits: Arc<RateLimits>,
}

/// An Omnichannel department as `livechat/department` lists it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Department {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// How a request authenticates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// With the bot's `X-User-Id` / `X-Auth-Token`.
    Bot,
    /// Without credentials (Livechat visitor routes identify the visitor by token).
    Anonymous,
}

impl RestClient {
    /// `base` is the Rocket.Chat URL from bot.toml (`http(s)://host[:port][/subpath]`).
    pub fn new(base: &Url, timeout: Duration) -> Result<RestClient> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("omni-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| Error::Transport {
                route: "client set-up".into(),
                source: source.without_url(),
            })?;
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(RestClient {
            http,
            base,
            auth: Arc::new(RwLock::new(None)),
            rate_limits: Arc::default(),
        })
    }

    /// Installs (or clears) the credentials for authenticated calls; called after every login.
    pub fn set_auth(&self, auth: Option<Auth>) {
        // A poisoned lock only means a writer panicked mid-assignment of an Option: the value
        // is still a valid Option, so recover it.
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = auth;
    }

    /// The 429s this client (and its clones) met, for metrics and `/facebook status`.
    pub fn rate_limits(&self) -> Arc<RateLimits> {
        self.rate_limits.clone()
    }

    /// The logged-in user, if any.
    pub fn user_id(&self) -> Option<UserId> {
        self.current_auth().map(|a| a.user_id)
    }

    fn current_auth(&self) -> Option<Auth> {
        self.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The absolute URL of an API route (`route` is relative to `/api/v1/`).
    pub fn api_url(&self, route: &str) -> Result<Url> {
        self.base
            .join("api/v1/")
            .and_then(|u| u.join(route))
            .map_err(|e| Error::Decode {
                route: route.into(),
                detail: format!("cannot build the URL: {e}"),
            })
    }

    /// The absolute URL of a server path (`/file-upload/…`), relative to the base URL.
    pub fn server_url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|e| Error::Decode {
                route: path.into(),
                detail: format!("cannot build the URL: {e}"),
            })
    }

    /// Starts a request to an API route with the right credentials.
    pub fn request(
        &self,
        method: Method,
        route: &str,
        access: Access,
    ) -> Result<reqwest::RequestBuilder> {
        let url = self.api_url(route)?;
        let mut builder = self.http.request(method, url);
        if access == Access::Bot {
            let auth = self.current_auth().ok_or_else(|| Error::NotLoggedIn {
                route: route.into(),
            })?;
            builder = builder
                .header("X-User-Id", auth.user_id.as_str())
                .header("X-Auth-Token", auth.token.expose_secret());
        }
        Ok(builder)
    }

    /// A request to an absolute URL on the server (file downloads), without credentials.
    pub fn raw(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.http.request(method, url)
    }

    /// Sends a request and decodes a successful JSON answer, classifying every failure.
    pub async fn send<T: DeserializeOwned>(
        &self,
        route: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<T> {
        let bytes = self.send_bytes(route, builder).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            route: route.into(),
            detail: e.to_string(),
        })
    }

    /// Sends a request and returns a successful answer's body, classifying every failure.
    pub async fn send_bytes(
        &self,
        route: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>> {
        let response = builder.send().await.map_err(|source| Error::Transport {
            route: route.into(),
            source: source.without_url(),
        })?;
        let status = response.status();
        let reset = response
            .headers()
            .get("x-ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bytes = response.bytes().await.map_err(|source| Error::Transport {
            route: route.into(),
            source: source.without_url(),
        })?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let err = classify_failure(route, status, reset, &bytes);
        if let Error::RateLimited { route, .. } = &err {
            self.rate_limits.record(route);
        }
        Err(err)
    }

    /// `POST chat.sendMessage` with a client-chosen `_id`, so a retry cannot post twice.
    pub async fn send_message(&self, id: &MessageId, rid: &RoomId, text: &str) -> Result<()> {
        let route = "chat.sendMessage";
        let body = json!({"message": {"_id": id.as_str(), "rid": rid.as_str(), "msg": text}});
        let builder = self.request(Method::POST, route, Access::Bot)?.json(&body);
        match self.send::<Value>(route, builder).await {
            Ok(_) => Ok(()),
            // A retry of a message that did reach the server is refused by some versions instead of
            // being skipped silently: look the message up before calling it a failure.
            Err(err @ Error::Api { .. }) => match self.message_exists(id).await {
                Ok(true) => Ok(()),
                _ => Err(err),
            },
            Err(err) => Err(err),
        }
    }

    /// `POST chat.react` as the bot: sets (`react`) or removes its reaction `name` (an emoji name
    /// without colons) on a message (`docs/rocketchat.md` §3.7). Idempotent: asking for the state
    /// the reaction already has changes nothing. Refused ([`Error::is_reaction_refused`]) when
    /// the bot may not access the room or the emoji is unknown.
    pub async fn react(&self, message: &MessageId, name: &str, react: bool) -> Result<()> {
        let route = "chat.react";
        let body = json!({"messageId": message.as_str(), "emoji": format!(":{name}:"), "shouldReact": react});
        let builder = self.request(Method::POST, route, Access::Bot)?.json(&body);
        self.send::<Value>(route, builder).await.map(|_| ())
    }

    /// `GET chat.getMessage`: whether a message with this `_id` exists.
    pub async fn message_exists(&self, id: &MessageId) -> Result<bool> {
        let route = "chat.getMessage";
        let builder = self
            .request(Method::GET, route, Access::Bot)?
            .query(&[("msgId", id.as_str())]);
        match self.send::<Value>(route, builder).await {
            Ok(body) => Ok(body.get("message").is_some_and(|m| !m.is_null())),
            Err(Error::Api { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// `GET users.info`: the user's roles, or `None` when the bot may not see them (the `roles`
    /// field is only returned to callers with `view-full-other-user-info`).
    pub async fn user_roles(&self, user: &UserId) -> Result<Option<Vec<String>>> {
        #[derive(Deserialize)]
        struct Answer {
            user: UserInfo,
        }
        #[derive(Deserialize)]
        struct UserInfo {
            roles: Option<Vec<String>>,
        }
        let route = "users.info";
        let builder = self
            .request(Method::GET, route, Access::Bot)?
            .query(&[("userId", user.as_str())]);
        let answer: Answer = self.send(route, builder).await?;
        Ok(answer.user.roles)
    }

    /// `POST im.create`: the direct-message room between the bot and `username` (created if needed).
    pub async fn direct_room(&self, username: &str) -> Result<RoomId> {
        let route = "im.create";
        let builder = self
            .request(Method::POST, route, Access::Bot)?
            .json(&json!({ "username": username }));
        let answer: Value = self.send(route, builder).await?;
        // The room carries both `_id` and `rid` (the same id); older servers only one of them.
        answer
            .get("room")
            .and_then(|room| room.get("rid").or_else(|| room.get("_id")))
            .and_then(Value::as_str)
            .map(RoomId::new)
            .ok_or_else(|| Error::Decode {
                route: route.into(),
                detail: "no room id in the answer".into(),
            })
    }

    /// `GET livechat/department`: the Omnichannel departments (needs `view-livechat-departments`
    /// or `view-l-room`; a 403 says the bot lacks it).
    /// Read page by page: the server clamps `count` to `API_Upper_Count_Limit` (100 by default,
    /// `getPaginationItems` in `apps/meteor/app/api/server/helpers/getPaginationItems.ts`).
    pub async fn departments(&self) -> Result<Vec<Department>> {
        #[derive(Deserialize)]
        struct Answer {
            departments: Vec<Department>,
            #[serde(default)]
            total: Option<usize>,
        }
        const PAGE: usize = 100;
        const MAX_PAGES: usize = 100;
        let route = "livechat/department";
        let mut all: Vec<Department> = Vec::new();
        for _ in 0..MAX_PAGES {
            let builder = self.request(Method::GET, route, Access::Bot)?.query(&[
                ("count", PAGE.to_string()),
                ("offset", all.len().to_string()),
            ]);
            let answer: Answer = self.send(route, builder).await?;
            let got = answer.departments.len();
            all.extend(answer.departments);
            let done = match answer.total {
                Some(total) => all.len() >= total,
                None => got < PAGE,
            };
            if got == 0 || done {
                break;
            }
        }
        Ok(all)
    }
}

/// Turns a non-2xx answer into an [`Error`], reading Rocket.Chat's error bodies:
/// `{"success":false,"error":"Reason [code]","errorType":"code"}` and `{"status":"error","message":…}`.
fn classify_failure(
    route: &str,
    status: StatusCode,
    reset_epoch_ms: Option<u64>,
    body: &[u8],
) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    // Upload refusals carry the code as `reason` and no `error` (`API.v1.failure({ reason })` in
    // `apps/meteor/app/livechat/imports/server/rest/upload.ts`).
    let error_type = parsed
        .as_ref()
        .and_then(|b| {
            b.get("errorType")
                .or_else(|| b.get("error"))
                .or_else(|| b.get("reason"))
        })
        .and_then(Value::as_str)
        .map(str::to_owned);
    let message = parsed
        .as_ref()
        .and_then(|b| {
            b.get("error")
                .or_else(|| b.get("message"))
                .or_else(|| b.get("reason"))
        })
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
        || error_type.as_deref() == Some("error-too-many-requests");
    if rate_limited {
        let from_details = parsed
            .as_ref()
            .and_then(|b| b.get("details"))
            .and_then(|d| d.get("timeToReset"))
            .and_then(Value::as_u64);
        let retry_after = from_details
            .map(Duration::from_millis)
            .or_else(|| reset_epoch_ms.map(until_epoch_ms))
            .unwrap_or(Duration::from_secs(60));
        return Error::RateLimited {
            route: route.into(),
            retry_after,
        };
    }
    if status == StatusCode::UNAUTHORIZED {
        return Error::Unauthorized {
            route: route.into(),
        };
    }
    if status.is_server_error() {
        return Error::Server {
            route: route.into(),
            status: status.as_u16(),
        };
    }
    // A real Rocket.Chat error carries `errorType` only for Meteor errors; a plain `error` string
    // is a message, not a code, so only keep it as the code when it looks like one.
    let error_type = error_type.filter(|t| !t.contains(' '));
    Error::Api {
        route: route.into(),
        status: status.as_u16(),
        error_type,
        message,
    }
}

/// The time from now until an epoch-milliseconds instant (zero if it already passed).
fn until_epoch_ms(epoch_ms: u64) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Duration::from_millis(epoch_ms.saturating_sub(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_status_and_code() {
        let cases: &[(u16, &str, &str)] = &[
            (
                400,
                r#"{"success":false,"error":"Sorry, no online agents [no-agent-online]","errorType":"no-agent-online"}"#,
                "api:no-agent-online",
            ),
            (
                400,
                r#"{"success":false,"error":"room-closed"}"#,
                "api:room-closed",
            ),
            (
                400,
                r#"{"success":false,"error":"error-too-many-requests","details":{"timeToReset":1500}}"#,
                "rate_limited",
            ),
            (429, r#"{"success":false}"#, "rate_limited"),
            (
                429,
                r#"{"success":false,"error":"Error, too many requests. Please slow down. You must wait 42 seconds before trying this endpoint again. [error-too-many-requests]"}"#,
                "rate_limited",
            ),
            (
                400,
                r#"{"success":false,"reason":"error-type-not-allowed"}"#,
                "api:error-type-not-allowed",
            ),
            (
                401,
                r#"{"status":"error","message":"You must be logged in to do this."}"#,
                "unauthorized",
            ),
            (502, "<html>Bad Gateway</html>", "server"),
            (
                403,
                r#"{"success":false,"error":"unauthorized"}"#,
                "api:unauthorized",
            ),
        ];
        for (status, body, expected) in cases {
            let err = classify_failure(
                "x",
                StatusCode::from_u16(*status).unwrap(),
                None,
                body.as_bytes(),
            );
            let got = match err.error_type() {
                Some(code) => format!("{}:{code}", err.kind()),
                None => err.kind().to_string(),
            };
            assert_eq!(&got, expected, "status {status} body {body}");
        }
    }

    #[test]
    fn rate_limit_wait_comes_from_the_reset_header_without_details() {
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            + 30_000;
        let err = classify_failure(
            "x",
            StatusCode::TOO_MANY_REQUESTS,
            Some(reset),
            br#"{"success":false,"error":"Error, too many requests. [error-too-many-requests]"}"#,
        );
        let wait = err.retry_after().expect("a wait");
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
    }

    #[test]
    fn rate_limit_wait_comes_from_details_first() {
        let err = classify_failure(
            "x",
            StatusCode::TOO_MANY_REQUESTS,
            None,
            br#"{"success":false,"error":"error-too-many-requests","details":{"timeToReset":2500}}"#,
        );
        assert_eq!(err.retry_after(), Some(Duration::from_millis(2500)));
        assert!(err.is_retryable());
    }
}
