//! Graph API errors and their classification.
//!
//! Meta's error envelope is `{"error":{message,type,code,error_subcode,fbtrace_id,…}}`
//! (`docs/messenger.md` §4.1). What the caller should do with an error depends only on `code` and
//! `error_subcode` (`docs/messenger.md` §4.2, §4.3): message texts change without notice and are
//! localised, so they are never matched.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::Deserialize;

/// The `error` object of a Graph API error response.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GraphError {
    pub message: String,
    #[serde(default)]
    pub r#type: Option<String>,
    pub code: i64,
    #[serde(default)]
    pub error_subcode: Option<i64>,
    #[serde(default)]
    pub fbtrace_id: Option<String>,
    /// An optional hint some errors carry; not documented in the error-handling guide, so it
    /// only ever upgrades an error to transient, never downgrades one (`docs/messenger.md` §4.1).
    #[serde(default)]
    pub is_transient: Option<bool>,
    #[serde(default)]
    pub error_user_title: Option<String>,
    #[serde(default)]
    pub error_user_msg: Option<String>,
}

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A temporary failure on Meta's side or in between: retry with backoff.
    Transient,
    /// Throttled: wait (see [`Error::retry_after`]) and retry.
    RateLimited,
    /// The access token is dead (code 190): the page must be re-authorized; retrying is useless.
    TokenInvalid,
    /// The Send API refused because the 24-hour (or 7-day HUMAN_AGENT) window is closed.
    OutsideWindow,
    /// Another app (the Page Inbox or a bot) controls the conversation (code 10, subcode
    /// 2018300): the same send fails until the thread is taken, so it is never retried blindly.
    ThreadOwnedElsewhere,
    /// The request itself is wrong or not allowed: retrying the same request cannot succeed.
    Final,
}

/// An error from a Graph API call. Its `Display` never contains a token: request URLs are
/// stripped from transport errors and response bodies never echo the token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Meta answered with its error envelope.
    #[error("graph api error {}", describe_graph(.error))]
    Graph {
        status: u16,
        /// Boxed: the envelope is large and errors travel through `Result`s everywhere.
        error: Box<GraphError>,
        /// How long Meta says to wait, read from the usage headers of the same response.
        retry_after: Option<Duration>,
    },
    /// A non-success answer without Meta's error envelope (a proxy page, a bare 5xx).
    #[error("graph api answered http {status}: {body}")]
    Http { status: u16, body: String },
    /// The request did not get an answer (connection refused, reset, TLS).
    #[error("graph api unreachable: {0}")]
    Transport(#[source] reqwest::Error),
    /// No answer within the configured timeout. A send may still have happened.
    #[error("graph api did not answer in time")]
    Timeout,
    /// A success answer that does not have the expected shape.
    #[error("unexpected graph api answer to {what}: {detail}")]
    Decode { what: &'static str, detail: String },
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot build the graph api client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Rate-limit codes: app (4), user (17), page (32), API (613) and Business Use Case throttling
/// (80001–80014, `docs/messenger.md` §4.2: the per-product codes are unverified, so the whole
/// documented BUC range is treated alike).
fn is_rate_limit_code(code: i64) -> bool {
    matches!(code, 4 | 17 | 32 | 613 | 80001..=80014)
}

/// Window subcodes of code 10: 2018278 (current) and 2018065 (legacy), `docs/messenger.md` §3.3,
/// and Instagram's 2534022 (`docs/instagram.md` §7).
const WINDOW_SUBCODES: [i64; 3] = [2018278, 2018065, 2534022];
/// Instagram's code 100 subcode for "not the thread owner": another app or the Instagram Inbox
/// owns the conversation (`docs/instagram.md` §7). Final: Instagram conversation routing has no
/// take for the gateway to try.
const INSTAGRAM_THREAD_OWNED_SUBCODE: i64 = 2534037;
/// Code 10's subcode for "another app is controlling this thread" (`docs/messenger.md` §4.2, §7).
const THREAD_OWNED_SUBCODE: i64 = 2018300;

impl Error {
    pub(crate) fn from_reqwest(err: reqwest::Error) -> Error {
        if err.is_timeout() {
            Error::Timeout
        } else {
            Error::Transport(err.without_url())
        }
    }

    pub(crate) fn decode(what: &'static str, err: &serde_json::Error) -> Error {
        // serde_json's own message can quote the offending value, which may be a token, so only
        // the category and position are kept.
        Error::Decode {
            what,
            detail: format!(
                "{:?} error at line {} column {}",
                err.classify(),
                err.line(),
                err.column()
            ),
        }
    }

    /// Classifies the error by `code`/`error_subcode` and the HTTP status, never by text.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Graph { status, error, .. } => classify(*status, error),
            Error::Http { status, .. } if *status >= 500 => ErrorKind::Transient,
            Error::Http { status: 429, .. } => ErrorKind::RateLimited,
            Error::Http { .. } => ErrorKind::Final,
            Error::Transport(_) | Error::Timeout => ErrorKind::Transient,
            // A success answer we cannot read may mean the action happened: not safe to repeat.
            Error::Decode { .. } | Error::Client(_) => ErrorKind::Final,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Transient | ErrorKind::RateLimited)
    }

    /// How long to wait before retrying a rate-limited call, when Meta said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Graph { retry_after, .. } if self.kind() == ErrorKind::RateLimited => {
                *retry_after
            }
            _ => None,
        }
    }

    pub fn is_token_invalid(&self) -> bool {
        self.kind() == ErrorKind::TokenInvalid
    }

    /// The Graph error, when Meta sent one.
    pub fn graph_error(&self) -> Option<&GraphError> {
        match self {
            Error::Graph { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether the failure is the far end speaking (an error envelope or a bare HTTP status), as
    /// opposed to no answer at all. Only these count toward a retry cap: an error that Meta keeps
    /// answering may never heal (code 2 can mean the person blocked the page, `docs/messenger.md`
    /// §4.2), while a network outage is waited out.
    pub fn is_answer(&self) -> bool {
        matches!(self, Error::Graph { .. } | Error::Http { .. })
    }

    /// What a person understands of the errors whose Meta text says little
    /// (`docs/messenger.md` §4.2).
    pub fn plain_reason(&self) -> Option<&'static str> {
        let error = self.graph_error()?;
        Some(match (error.code, error.error_subcode) {
            (99, _) | (1, Some(99)) => {
                "the Facebook app lacks a permission it needs (Advanced Access to \
                 pages_messaging); an admin must request it in the Meta app dashboard"
            }
            (551, _) => {
                "this person isn't available on Messenger right now (they may have deactivated \
                 their account or blocked the page)"
            }
            (2, _) => {
                "Facebook kept answering with a service error (code 2); this often means the \
                 person blocked the page"
            }
            (10, Some(2018108)) | (200, Some(1545041)) => {
                "this person does not accept messages from the page"
            }
            (100, Some(INSTAGRAM_THREAD_OWNED_SUBCODE)) => {
                "another inbox, for example the Instagram app's, owns this conversation; answer \
                 there, or move the conversation to the gateway's app in the account's \
                 conversation routing settings"
            }
            _ => return None,
        })
    }

    /// One line for a person: what happened and, where someone must act, what to do.
    pub fn describe(&self) -> String {
        let what = match self {
            Error::Graph { error, .. } => describe_graph(error),
            other => other.to_string(),
        };
        let advice = match self.kind() {
            ErrorKind::TokenInvalid => {
                "the page must be re-authorized: /facebook authorize".to_owned()
            }
            ErrorKind::OutsideWindow => "the customer last wrote too long ago (24 hours, or 7 \
                                         days with human_agent_tag); the reply cannot be sent"
                .to_owned(),
            ErrorKind::RateLimited => match self.retry_after() {
                Some(wait) => format!(
                    "facebook is rate limiting; retrying in about {} min",
                    wait.as_secs().div_ceil(60)
                ),
                None => "facebook is rate limiting; retrying later".to_owned(),
            },
            ErrorKind::ThreadOwnedElsewhere => "another app (the Page Inbox or a bot) controls \
                                                this conversation in Messenger"
                .to_owned(),
            ErrorKind::Transient => "temporary failure; retrying".to_owned(),
            ErrorKind::Final => match (
                self.plain_reason(),
                self.graph_error().and_then(|e| e.error_user_msg.clone()),
            ) {
                (Some(plain), _) => plain.to_owned(),
                (None, Some(user_msg)) => user_msg,
                (None, None) => return what,
            },
        };
        format!("{what} — {advice}")
    }
}

fn classify(status: u16, error: &GraphError) -> ErrorKind {
    match (error.code, error.error_subcode) {
        (190, _) => ErrorKind::TokenInvalid,
        (10, Some(sub)) if WINDOW_SUBCODES.contains(&sub) => ErrorKind::OutsideWindow,
        (10, Some(THREAD_OWNED_SUBCODE)) => ErrorKind::ThreadOwnedElsewhere,
        (code, _) if is_rate_limit_code(code) => ErrorKind::RateLimited,
        // "Missing permissions … Advanced Access" comes as code 99 or as 1/99: never heals.
        (99, _) | (1, Some(99)) => ErrorKind::Final,
        (1 | 2 | 1200, _) => ErrorKind::Transient,
        _ if error.is_transient == Some(true) => ErrorKind::Transient,
        (10 | 100 | 200..=299 | 368 | 551, _) => ErrorKind::Final,
        _ if status >= 500 => ErrorKind::Transient,
        _ => ErrorKind::Final,
    }
}

/// `(#190/460) Error validating access token: …`, without repeating the `(#190)` prefix Meta
/// puts in many messages.
fn describe_graph(error: &GraphError) -> String {
    let mut message = error.message.trim();
    if let Some(rest) = message.strip_prefix("(#") {
        if let Some((code, tail)) = rest.split_once(')') {
            if code.chars().all(|c| c.is_ascii_digit()) {
                message = tail.trim_start();
            }
        }
    }
    let message = message.trim_end_matches('.');
    match error.error_subcode {
        Some(sub) => format!("(#{}/{sub}) {message}", error.code),
        None => format!("(#{}) {message}", error.code),
    }
}

/// The largest `estimated_time_to_regain_access` (minutes) in `X-Business-Use-Case-Usage`
/// (`{"<id>":[{…,"estimated_time_to_regain_access":19}]}`, `docs/messenger.md` §4.4), or in
/// `X-App-Usage` should it ever carry one (its documented fields are percentages only).
pub(crate) fn retry_after_from_headers(headers: &HeaderMap) -> Option<Duration> {
    let from = |name: &str| -> Option<u64> {
        let value = headers.get(name)?.to_str().ok()?;
        let json: serde_json::Value = serde_json::from_str(value).ok()?;
        max_regain_minutes(&json)
    };
    let minutes = [from("x-business-use-case-usage"), from("x-app-usage")]
        .into_iter()
        .flatten()
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes * 60))
}

fn max_regain_minutes(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::Object(map) => {
            let own = map
                .get("estimated_time_to_regain_access")
                .and_then(serde_json::Value::as_u64);
            map.values().filter_map(max_regain_minutes).chain(own).max()
        }
        serde_json::Value::Array(items) => items.iter().filter_map(max_regain_minutes).max(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(status: u16, code: i64, subcode: Option<i64>, transient: Option<bool>) -> Error {
        Error::Graph {
            status,
            error: Box::new(GraphError {
                message: "(#1) whatever the text says".into(),
                r#type: Some("OAuthException".into()),
                code,
                error_subcode: subcode,
                fbtrace_id: None,
                is_transient: transient,
                error_user_title: None,
                error_user_msg: None,
            }),
            retry_after: Some(Duration::from_secs(60)),
        }
    }

    #[test]
    fn classification_follows_code_and_subcode() {
        use ErrorKind::*;
        let cases = [
            (500, 1, None, None, Transient),
            (500, 2, None, None, Transient),
            (400, 1200, Some(2018024), None, Transient),
            (400, 100, None, Some(true), Transient),
            (400, 4, Some(2018022), None, RateLimited),
            (400, 17, None, None, RateLimited),
            (400, 32, None, None, RateLimited),
            (400, 613, None, None, RateLimited),
            (400, 80006, None, None, RateLimited),
            (400, 190, None, None, TokenInvalid),
            (400, 190, Some(460), Some(false), TokenInvalid),
            (400, 10, Some(2018278), None, OutsideWindow),
            (400, 10, Some(2018065), None, OutsideWindow),
            // Instagram's window and thread-owner subcodes (docs/instagram.md §7).
            (403, 10, Some(2534022), None, OutsideWindow),
            (400, 100, Some(2534037), None, Final),
            (400, 10, Some(2018108), None, Final),
            (400, 10, Some(2018300), None, ThreadOwnedElsewhere),
            (400, 99, None, None, Final),
            (500, 1, Some(99), Some(true), Final),
            (400, 100, Some(2018001), None, Final),
            (403, 200, Some(1545041), None, Final),
            (400, 230, None, None, Final),
            (400, 368, None, None, Final),
            (400, 551, Some(1545041), None, Final),
            (500, 100, None, None, Final),
            (500, 12345, None, None, Transient),
            (400, 12345, None, None, Final),
        ];
        for (status, code, sub, transient, want) in cases {
            let err = graph(status, code, sub, transient);
            assert_eq!(
                err.kind(),
                want,
                "status {status} code {code} subcode {sub:?}"
            );
            assert_eq!(
                err.is_retryable(),
                matches!(want, Transient | RateLimited),
                "code {code}"
            );
            assert_eq!(
                err.retry_after().is_some(),
                want == RateLimited,
                "code {code}"
            );
        }
        let http = |status| Error::Http {
            status,
            body: String::new(),
        };
        assert_eq!(http(502).kind(), Transient);
        assert_eq!(http(429).kind(), RateLimited);
        assert_eq!(http(404).kind(), Final);
        assert_eq!(Error::Timeout.kind(), Transient);
    }

    #[test]
    fn retry_after_reads_the_largest_regain_estimate() {
        let cases = [
            (
                "x-business-use-case-usage",
                r#"{"1234":[{"type":"messenger","call_count":100,"total_cputime":25,"total_time":25,"estimated_time_to_regain_access":19}],"5":[{"estimated_time_to_regain_access":3}]}"#,
                Some(19 * 60),
            ),
            (
                "x-business-use-case-usage",
                r#"{"1234":[{"type":"pages","call_count":10,"estimated_time_to_regain_access":0}]}"#,
                None,
            ),
            (
                "x-app-usage",
                r#"{"call_count":100,"total_cputime":10,"total_time":10}"#,
                None,
            ),
            ("x-business-use-case-usage", "not json", None),
        ];
        for (name, value, want) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(name, value.parse().expect("static header value is valid"));
            assert_eq!(
                retry_after_from_headers(&headers),
                want.map(Duration::from_secs),
                "{value}"
            );
        }
    }

    #[test]
    fn describe_is_one_line_with_the_fix() {
        let mut err = graph(400, 190, Some(460), None);
        if let Error::Graph { error, .. } = &mut err {
            error.message = "Error validating access token: The session has been invalidated \
                             because the user changed their password."
                .into();
        }
        assert_eq!(
            err.describe(),
            "(#190/460) Error validating access token: The session has been invalidated \
             because the user changed their password — the page must be re-authorized: \
             /facebook authorize"
        );
        let mut window = graph(400, 10, Some(2018278), None);
        if let Error::Graph { error, .. } = &mut window {
            error.message = "(#10) This message is sent outside of allowed window.".into();
        }
        assert!(
            window
                .describe()
                .starts_with("(#10/2018278) This message is sent outside of allowed window — ")
        );
        assert_eq!(
            graph(400, 613, None, None).describe(),
            "(#613) whatever the text says — facebook is rate limiting; retrying in about 1 min"
        );
    }
}
