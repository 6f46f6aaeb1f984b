//! HTTP side of the Graph simulator: routes, token extraction, body parsing, fault injection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::Notify;
use url::Url;

use super::state::{Fault, State};
use super::{SentFile, SentMessage, SimError};

pub(super) struct Shared {
    pub state: Mutex<State>,
    pub sent: Notify,
    pub base: Url,
    /// Meta's own outbound calls (the callback verification of an app subscription).
    pub http: reqwest::Client,
}

impl Shared {
    /// A poisoned lock only means a handler panicked mid-update; the simulator keeps serving.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

type Params = Query<HashMap<String, String>>;
type Sim = AxumState<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{v}/dialog/oauth", get(dialog))
        .route("/{v}/oauth/access_token", get(access_token))
        .route("/{v}/me", get(me))
        .route("/{v}/me/accounts", get(accounts))
        .route("/{v}/me/permissions", get(permissions).delete(revoke))
        .route(
            "/{v}/{user}/permissions",
            axum::routing::delete(revoke_as_app),
        )
        .route(
            "/{v}/{app}/subscriptions",
            get(app_subscriptions).post(set_app_subscription),
        )
        .route("/{v}/debug_token", get(debug_token))
        .route("/{v}/{id}", get(node))
        .route(
            "/{v}/{page}/subscribed_apps",
            get(subscribed_apps).post(subscribe).delete(unsubscribe),
        )
        .route("/{v}/{page}/messages", post(messages))
        // Uploads go up to 25 MB (the video, audio and PDF limit of the attachment-upload page).
        .route(
            "/{v}/{page}/message_attachments",
            post(message_attachments).layer(axum::extract::DefaultBodyLimit::max(26 << 20)),
        )
        .route("/{v}/{page}/take_thread_control", post(take_thread_control))
        .route("/{v}/{page}/secondary_receivers", get(secondary_receivers))
        .route(
            "/{v}/{page}/request_thread_control",
            post(request_thread_control),
        )
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// Counts, checks the version segment and `appsecret_proof`, and applies injected faults before
/// any route.
async fn guard(AxumState(shared): Sim, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let (req, proof_refused) = check_proof(&shared, req).await;
    let injected = {
        let mut state = shared.lock();
        state.stats.requests += 1;
        state.calls.push(format!("{} {path}", req.method()));
        state.take_fault(&path)
    };
    let mut segments = path.trim_start_matches('/').split('/');
    let version = segments.next().unwrap_or_default();
    let object = segments.next().unwrap_or_default().to_owned();
    let response = if !is_version(version) {
        fault_response(
            &Fault::new(2500, None, format!("Unknown path components: /{version}")),
            &object,
        )
    } else if let Some(fault) = proof_refused {
        fault_response(&fault, &object)
    } else {
        match injected {
            Some(SimError::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                next.run(req).await
            }
            Some(SimError::Http5xx(status)) => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>Sorry, something went wrong.</body></html>",
            )
                .into_response(),
            Some(error) => match Fault::injected(&error) {
                Some(fault) => fault_response(&fault, &object),
                None => next.run(req).await,
            },
            None => next.run(req).await,
        }
    };
    if response.status().as_u16() >= 400 {
        shared.lock().stats.error_responses += 1;
    }
    response
}

/// Reads the token and `appsecret_proof` from the query, the `Authorization` header or a form
/// body (which is buffered and put back) and applies [`State::check_proof`].
async fn check_proof(shared: &Shared, req: Request) -> (Request, Option<Fault>) {
    let (parts, body) = req.into_parts();
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let (body, form) = if is_form {
        match axum::body::to_bytes(body, 1 << 20).await {
            Ok(bytes) => (axum::body::Body::from(bytes.clone()), bytes.to_vec()),
            Err(_) => (axum::body::Body::empty(), Vec::new()),
        }
    } else {
        (body, Vec::new())
    };
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let params = merged(query, &parts.headers, &form);
    let refused = token(&parts.headers, &params).and_then(|t| {
        shared
            .lock()
            .check_proof(&t, params.get("appsecret_proof").map(String::as_str))
            .err()
    });
    (Request::from_parts(parts, body), refused)
}

/// `vNN.N`, as Meta's versioned paths require.
fn is_version(segment: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    segment
        .strip_prefix('v')
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
}

fn fault_response(fault: &Fault, object: &str) -> Response {
    let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, axum::Json(fault.body())).into_response();
    if let Some(minutes) = fault.regain_minutes {
        let usage = json!({ object: [{
            "type": "messenger", "call_count": 100, "total_cputime": 100, "total_time": 100,
            "estimated_time_to_regain_access": minutes,
        }] });
        if let Ok(value) = usage.to_string().parse() {
            response
                .headers_mut()
                .insert("x-business-use-case-usage", value);
        }
    }
    response
}

fn answer(result: Result<Value, Fault>, object: &str) -> Response {
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(fault) => fault_response(&fault, object),
    }
}

/// The access token from `access_token` (query or form) or `Authorization: Bearer`/`OAuth`.
fn token(headers: &HeaderMap, params: &HashMap<String, String>) -> Option<String> {
    if let Some(t) = params.get("access_token") {
        return Some(t.clone());
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
        .then(|| token.trim().to_owned())
}

/// Query parameters merged with a form-encoded body: Meta reads parameters from both.
fn merged(
    mut query: HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> HashMap<String, String> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        query.extend(url::form_urlencoded::parse(body).into_owned());
    }
    query
}

async fn dialog(AxumState(shared): Sim, Query(q): Params) -> Response {
    let result = shared.lock().dialog(&q);
    match result {
        Ok((redirect_uri, params)) => {
            let Ok(mut target) = Url::parse(&redirect_uri) else {
                return (StatusCode::BAD_REQUEST, "URL blocked").into_response();
            };
            target.query_pairs_mut().extend_pairs(params);
            // Facebook appends this empty fragment to every login redirect.
            target.set_fragment(Some("_=_"));
            (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
        }
        Err(reason) => (StatusCode::BAD_REQUEST, reason).into_response(),
    }
}

async fn access_token(AxumState(shared): Sim, Query(q): Params) -> Response {
    let result = shared.lock().access_token(&q);
    answer(result, "oauth")
}

async fn me(AxumState(shared): Sim, headers: HeaderMap, Query(q): Params) -> Response {
    let result = shared.lock().me(token(&headers, &q).as_deref());
    answer(result, "me")
}

async fn accounts(
    AxumState(shared): Sim,
    Path(v): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let base = shared
        .base
        .join(&format!("{v}/me/accounts"))
        .map(|u| u.to_string())
        .unwrap_or_default();
    let result = shared.lock().accounts(
        token(&headers, &q).as_deref(),
        q.get("after").map(String::as_str),
        &base,
    );
    answer(result, "me")
}

async fn revoke(
    AxumState(shared): Sim,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let params = merged(q, &headers, &body);
    let result = shared.lock().revoke(token(&headers, &params).as_deref());
    answer(result, "me")
}

async fn permissions(AxumState(shared): Sim, headers: HeaderMap, Query(q): Params) -> Response {
    let result = shared.lock().permissions(token(&headers, &q).as_deref());
    answer(result, "me")
}

async fn revoke_as_app(
    AxumState(shared): Sim,
    Path((_, user)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let params = merged(q, &headers, &body);
    let result = shared
        .lock()
        .revoke_as_app(token(&headers, &params).as_deref(), &user);
    answer(result, &user)
}

async fn app_subscriptions(
    AxumState(shared): Sim,
    Path((_, app)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let result = shared
        .lock()
        .app_subscriptions(token(&headers, &q).as_deref(), &app);
    answer(result, &app)
}

/// `POST /{app-id}/subscriptions`: Meta verifies the callback at once with a GET carrying
/// `hub.mode=subscribe`, `hub.challenge` and `hub.verify_token`, and keeps the subscription only
/// when the answer is 200 with the challenge as body
/// (https://developers.facebook.com/docs/graph-api/reference/app/subscriptions/ ,
/// https://developers.facebook.com/docs/graph-api/webhooks/getting-started/).
async fn set_app_subscription(
    AxumState(shared): Sim,
    Path((_, app)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let params = merged(q, &headers, &body);
    let validated =
        shared
            .lock()
            .validate_app_subscription(token(&headers, &params).as_deref(), &app, &params);
    let wanted = match validated {
        Ok(wanted) => wanted,
        Err(fault) => return fault_response(&fault, &app),
    };
    let challenge = super::state::random_string(10);
    let verified = match Url::parse(&wanted.callback_url) {
        Ok(mut url) => {
            url.query_pairs_mut()
                .append_pair("hub.mode", "subscribe")
                .append_pair("hub.challenge", &challenge)
                .append_pair("hub.verify_token", &wanted.verify_token);
            match shared.http.get(url).send().await {
                Ok(answer) if answer.status().is_success() => match answer.text().await {
                    Ok(text) if text == challenge => Ok(()),
                    Ok(_) => Err("The URL couldn't be validated. Response does not match challenge".to_owned()),
                    Err(err) => Err(format!("The URL couldn't be validated: {err}")),
                },
                Ok(answer) => Err(format!(
                    "The URL couldn't be validated. Callback verification failed with the following errors: HTTP Status Code = {}",
                    answer.status().as_u16()
                )),
                Err(_) => Err("The URL couldn't be validated. Callback verification failed: the URL could not be reached".to_owned()),
            }
        }
        Err(_) => Err("The URL couldn't be validated".to_owned()),
    };
    match verified {
        Ok(()) => {
            shared.lock().app_subscription = Some(wanted);
            axum::Json(json!({ "success": true })).into_response()
        }
        Err(reason) => fault_response(
            &Fault::new(
                2200,
                None,
                format!("(#2200) callback verification failed: {reason}"),
            ),
            &app,
        ),
    }
}

async fn debug_token(AxumState(shared): Sim, headers: HeaderMap, Query(q): Params) -> Response {
    let result = shared.lock().debug_token(
        token(&headers, &q).as_deref(),
        q.get("input_token").map(String::as_str),
    );
    answer(result, "debug_token")
}

async fn node(
    AxumState(shared): Sim,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let result = shared.lock().node(
        token(&headers, &q).as_deref(),
        &id,
        q.get("fields").map(String::as_str),
    );
    answer(result, &id)
}

async fn subscribed_apps(
    AxumState(shared): Sim,
    Path((_, page)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let result = shared
        .lock()
        .subscribed_apps(token(&headers, &q).as_deref(), &page);
    answer(result, &page)
}

async fn subscribe(
    AxumState(shared): Sim,
    Path((_, page)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let params = merged(q, &headers, &body);
    let result = shared.lock().subscribe(
        token(&headers, &params).as_deref(),
        &page,
        params.get("subscribed_fields").map(String::as_str),
    );
    answer(result, &page)
}

async fn unsubscribe(
    AxumState(shared): Sim,
    Path((_, page)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let params = merged(q, &headers, &body);
    let result = shared
        .lock()
        .unsubscribe(token(&headers, &params).as_deref(), &page);
    answer(result, &page)
}

/// `GET /{page}/secondary_receivers`: answered to the primary receiver only.
async fn secondary_receivers(
    AxumState(shared): Sim,
    Path((_, page)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let result = shared
        .lock()
        .secondary_receivers(token(&headers, &q).as_deref(), &page);
    answer(result, &page)
}

/// `POST /{page}/take_thread_control` (JSON body `{"recipient":{"id":…},"metadata":…}`).
async fn take_thread_control(
    AxumState(shared): Sim,
    Path((_, page)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handover(&shared, &page, "take_thread_control", &q, &headers, &body)
}

/// `POST /{page}/request_thread_control`.
async fn request_thread_control(
    AxumState(shared): Sim,
    Path((_, page)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handover(
        &shared,
        &page,
        "request_thread_control",
        &q,
        &headers,
        &body,
    )
}

fn handover(
    shared: &Shared,
    page: &str,
    edge: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let result = serde_json::from_slice::<Value>(body)
        .map_err(|_| Fault::param("(#100) The request body is not valid JSON"))
        .and_then(|body| {
            shared
                .lock()
                .handover_call(token(headers, q).as_deref(), page, edge, &body)
        });
    answer(result, page)
}

/// `POST /{page}/messages` with a JSON, multipart or form body.
async fn messages(
    AxumState(shared): Sim,
    Path((_, page)): Path<(String, String)>,
    Query(q): Params,
    req: Request,
) -> Response {
    let headers = req.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let parsed = if content_type.starts_with("multipart/form-data") {
        parse_multipart(req).await
    } else {
        match Bytes::from_request(req, &()).await {
            Ok(body) if content_type.starts_with("application/json") => parse_json(&body),
            Ok(body) => Ok(parse_fields(merged(HashMap::new(), &headers, &body), None)),
            Err(_) => Err(Fault::param("(#100) Could not read the request body")),
        }
    };
    let mut token_params = q;
    let result = parsed.and_then(|(msg, body_token)| {
        if let Some(t) = body_token {
            token_params.insert("access_token".to_owned(), t);
        }
        shared
            .lock()
            .send(token(&headers, &token_params).as_deref(), &page, msg)
    });
    if result.is_ok() {
        shared.sent.notify_waiters();
    }
    answer(result, &page)
}

fn parse_json(body: &[u8]) -> Result<(SentMessage, Option<String>), Fault> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| Fault::param("(#100) The request body is not valid JSON"))?;
    let Value::Object(map) = value else {
        return Err(Fault::param(
            "(#100) The request body must be a JSON object",
        ));
    };
    let fields = map
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect();
    Ok(parse_fields(fields, None))
}

/// `POST /{page}/message_attachments` with a multipart body (`platform`, `message`, `filedata`).
async fn message_attachments(
    AxumState(shared): Sim,
    Path((_, page)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let result = match read_multipart(req).await {
        Ok((fields, file)) => {
            shared
                .lock()
                .upload_attachment(token(&headers, &q).as_deref(), &page, &fields, file)
        }
        Err(fault) => Err(fault),
    };
    answer(result, &page)
}

async fn parse_multipart(req: Request) -> Result<(SentMessage, Option<String>), Fault> {
    let (fields, file) = read_multipart(req).await?;
    Ok(parse_fields(fields, file))
}

/// A multipart body's text fields, and its `filedata` part.
async fn read_multipart(
    req: Request,
) -> Result<(HashMap<String, String>, Option<SentFile>), Fault> {
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|_| Fault::param("(#100) Invalid multipart body"))?;
    let mut fields = HashMap::new();
    let mut file = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) => return Err(Fault::param("(#100) Invalid multipart body")),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "filedata" {
            let file_name = field.file_name().map(str::to_owned);
            let mime = field.content_type().map(str::to_owned);
            let bytes = field
                .bytes()
                .await
                .map_err(|_| Fault::param("(#100) Upload attachment failure."))?;
            file = Some(SentFile {
                name: file_name,
                mime,
                bytes: bytes.to_vec(),
            });
        } else {
            let text = field
                .text()
                .await
                .map_err(|_| Fault::param("(#100) Invalid multipart body"))?;
            fields.insert(name, text);
        }
    }
    Ok((fields, file))
}

/// Builds the record from top-level fields whose values are strings or JSON text (`recipient`
/// and `message` arrive as JSON text in multipart and form bodies).
fn parse_fields(
    mut fields: HashMap<String, String>,
    file: Option<SentFile>,
) -> (SentMessage, Option<String>) {
    let json_of = |raw: Option<String>| raw.and_then(|r| serde_json::from_str::<Value>(&r).ok());
    let recipient = json_of(fields.remove("recipient"))
        .and_then(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let message = json_of(fields.remove("message"));
    let text_of = |key: &str| {
        message
            .as_ref()
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let msg = SentMessage {
        recipient,
        messaging_type: fields.remove("messaging_type"),
        tag: fields.remove("tag"),
        text: text_of("text"),
        metadata: text_of("metadata"),
        attachment: message.as_ref().and_then(|m| m.get("attachment")).cloned(),
        sender_action: fields.remove("sender_action"),
        payload: json_of(fields.remove("payload")),
        file,
        ..SentMessage::default()
    };
    (msg, fields.remove("access_token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_must_look_like_vnn_n() {
        let cases = [
            ("v23.0", true),
            ("v3.12", true),
            ("v23", false),
            ("23.0", false),
            ("v.0", false),
            ("vX.0", false),
            ("", false),
        ];
        for (segment, want) in cases {
            assert_eq!(is_version(segment), want, "{segment}");
        }
    }

    #[test]
    fn tokens_come_from_query_or_authorization() {
        let mut headers = HeaderMap::new();
        let mut params = HashMap::new();
        assert_eq!(token(&headers, &params), None);
        headers.insert(
            header::AUTHORIZATION,
            "Bearer abc".parse().expect("static header"),
        );
        assert_eq!(token(&headers, &params).as_deref(), Some("abc"));
        params.insert("access_token".to_owned(), "xyz".to_owned());
        assert_eq!(token(&headers, &params).as_deref(), Some("xyz"));
        headers.insert(
            header::AUTHORIZATION,
            "Basic abc".parse().expect("static header"),
        );
        params.clear();
        assert_eq!(token(&headers, &params), None);
    }
}
