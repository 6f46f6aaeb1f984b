//! The simulated Facebook: people, pages, tokens, login codes, Messenger users, and the rules
//! Meta applies to them. No I/O here; `routes` turns HTTP into calls on [`State`].

mod handover;
mod instagram;

pub use handover::PAGE_INBOX_APP_ID;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::distr::{Alphanumeric, SampleString};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{DialogDecision, SentMessage, SimError};

/// Login codes are single-use and expire after ten minutes (Facebook Login manual flow).
pub(super) const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// `expires_in` of a long-lived user token (`docs/messenger.md` §5.4).
pub(super) const LONG_LIVED_SECS: u64 = 5_183_944;
/// `expires_in` of the user token the code exchange returns: short-lived, about two hours.
pub(super) const SHORT_LIVED_SECS: u64 = 7_199;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The permissions the simulated dialog knows.
const KNOWN_SCOPES: &[&str] = &[
    "pages_show_list",
    "pages_messaging",
    "pages_manage_metadata",
    "pages_read_engagement",
    "business_management",
    "public_profile",
    "instagram_basic",
    "instagram_manage_messages",
    "instagram_manage_comments",
];

/// Messenger webhook fields a page subscription accepts (`docs/messenger.md` §2.7).
const KNOWN_FIELDS: &[&str] = &[
    "message_deliveries",
    "message_echoes",
    "message_edits",
    "message_reactions",
    "message_reads",
    "messages",
    "messaging_account_linking",
    "messaging_feedback",
    "messaging_game_plays",
    "messaging_handovers",
    "messaging_optins",
    "messaging_policy_enforcement",
    "messaging_postbacks",
    "messaging_referrals",
    "messaging_seen",
    "messenger_template_status_update",
    "response_feedback",
    "send_cart",
    "standby",
];

/// A Graph error on its way to the wire: `{"error":{message,type,code,error_subcode,fbtrace_id}}`.
#[derive(Debug, Clone)]
pub(super) struct Fault {
    pub status: u16,
    pub code: i64,
    pub subcode: Option<i64>,
    pub message: String,
    /// `X-Business-Use-Case-Usage` regain estimate (minutes) to send with the error.
    pub regain_minutes: Option<u64>,
    /// The error's `type`: `OAuthException` for most, `GraphMethodException` for some.
    pub kind: &'static str,
}

impl Fault {
    /// Meta answers OAuthException errors with 400 and the "temporary" codes 1 and 2 with 500.
    pub fn new(code: i64, subcode: Option<i64>, message: impl Into<String>) -> Fault {
        Fault {
            status: if matches!(code, 1 | 2) { 500 } else { 400 },
            code,
            subcode,
            message: message.into(),
            regain_minutes: None,
            kind: "OAuthException",
        }
    }

    pub fn param(message: impl Into<String>) -> Fault {
        Fault::new(100, None, message)
    }

    pub fn body(&self) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": self.kind,
            "code": self.code,
            "fbtrace_id": random_string(11),
        });
        if let Some(sub) = self.subcode {
            error["error_subcode"] = json!(sub);
        }
        if matches!(self.code, 1 | 2) {
            error["is_transient"] = json!(true);
        }
        json!({ "error": error })
    }

    /// The fault an injected [`SimError::Graph`] or [`SimError::Throttled`] produces, with the
    /// message Meta uses for that code.
    pub fn injected(error: &SimError) -> Option<Fault> {
        match *error {
            SimError::Graph {
                code,
                subcode,
                http_status,
            } => Some(Fault {
                status: http_status,
                ..Fault::new(code, subcode, standard_message(code, subcode))
            }),
            SimError::Throttled {
                code,
                regain_minutes,
            } => Some(Fault {
                regain_minutes: Some(regain_minutes),
                ..Fault::new(code, None, standard_message(code, None))
            }),
            SimError::Http5xx(_) | SimError::Delay(_) => None,
        }
    }
}

/// The texts Meta sends with each code (`docs/messenger.md` §3.3, §4.2, §5).
pub(super) fn standard_message(code: i64, subcode: Option<i64>) -> String {
    let text = match (code, subcode) {
        (1, _) => "An unknown error occurred",
        (2, _) => "An unexpected error has occurred. Please retry your request later.",
        (4, _) => "(#4) Application request limit reached",
        (17, _) => "(#17) User request limit reached",
        (32, _) => "(#32) Page request limit reached",
        (613, _) => "(#613) Calls to this api have exceeded the rate limit.",
        (1200, _) => "(#1200) Temporary send message failure. Please try again later",
        (10, Some(2018278 | 2018065)) => {
            "(#10) This message is sent outside of allowed window. Learn more about the new \
             policy here: https://developers.facebook.com/docs/messenger-platform/policy-overview"
        }
        // The text is the simulator's; integrations match only the code and subcode.
        (10, Some(2018300)) => "(#10) Another app is controlling this thread",
        (10, _) => "(#10) Application does not have permission for this action",
        (190, Some(460)) => {
            "Error validating access token: The session has been invalidated because the user \
             changed their password or Facebook has changed the session for security reasons."
        }
        (190, Some(458)) => {
            "Error validating access token: The user has not authorized application."
        }
        (190, Some(463)) => "Error validating access token: Session has expired.",
        (190, Some(467)) => "Error validating access token: The user is not logged in.",
        (190, _) => "Invalid OAuth access token - Cannot parse access token",
        (200, Some(1545041)) => {
            "(#200) Message Not Sent: This person isn't receiving messages from you right now."
        }
        (200, _) => "(#200) Permissions error",
        (230, _) => "(#230) Permissions disallow message to user",
        (368, _) => {
            "(#368) The action attempted has been deemed abusive or is otherwise disallowed"
        }
        (551, _) => "(#551) This person isn't available right now.",
        (100, Some(2018001)) => "(#100) No matching user found",
        (100, _) => "(#100) Invalid parameter",
        _ => return format!("(#{code}) Simulated error"),
    };
    text.to_owned()
}

pub(super) fn random_string(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Subject {
    User(String),
    Page { page: String, user: String },
}

#[derive(Debug, Clone)]
pub(super) struct TokenRecord {
    pub subject: Subject,
    /// The user token a page token or long-lived token was derived from.
    pub parent: Option<String>,
    pub scopes: Vec<String>,
    pub issued_at: u64,
    /// Unix seconds; 0 = never.
    pub expires_at: u64,
    /// Set when the token was invalidated, with the 190 subcode Meta reports.
    pub dead: Option<i64>,
}

struct Page {
    owner: String,
    name: String,
    tasks: Vec<String>,
    subscribed: Option<Vec<String>>,
}

struct Code {
    user: String,
    redirect_uri: String,
    scopes: Vec<String>,
    issued: Instant,
    used: bool,
}

struct MessengerUser {
    /// `None` for people Meta has no profile of (phone-number accounts, or known only from a
    /// webhook): the profile API answers 2018218.
    name: Option<(String, String)>,
    last_user_message_ms: u64,
}

/// The app-level webhook subscription of the `page` object (`POST /{app-id}/subscriptions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSubscription {
    pub callback_url: String,
    pub fields: Vec<String>,
    pub verify_token: String,
}

struct FailRule {
    path_contains: String,
    remaining: usize,
    error: SimError,
}

/// Counters for tests and the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphSimStats {
    pub requests: u64,
    pub error_responses: u64,
    pub injected_faults: u64,
    pub messages_sent: u64,
}

pub(super) struct State {
    pub app_id: String,
    pub app_secret: String,
    users: HashMap<String, String>,
    pages: BTreeMap<String, Page>,
    psids: HashMap<(String, String), MessengerUser>,
    tokens: HashMap<String, TokenRecord>,
    codes: HashMap<String, Code>,
    dialog_user: Option<String>,
    pub decision: DialogDecision,
    human_agent: bool,
    /// "Require App Secret" in the app's advanced settings.
    pub require_proof: bool,
    /// Permissions the dialog's person unticks; they are recorded as `declined`.
    pub declines: Vec<String>,
    /// Each person's permissions and their status (`granted`/`declined`), as `/me/permissions`.
    permissions: HashMap<String, BTreeMap<String, &'static str>>,
    pub app_subscription: Option<AppSubscription>,
    rules: Vec<FailRule>,
    handover: handover::Handover,
    instagram: instagram::Instagram,
    pub sent: Vec<SentMessage>,
    /// The customers' message ids (`mid`) per page and PSID, learnt from delivered webhooks:
    /// with the page's own sends, the messages a page may react to.
    customer_mids: HashMap<(String, String), HashSet<String>>,
    /// Every request as `METHOD /path`, oldest first.
    pub calls: Vec<String>,
    pub stats: GraphSimStats,
}

impl State {
    pub fn new(app_id: &str, app_secret: &str) -> State {
        State {
            app_id: app_id.to_owned(),
            app_secret: app_secret.to_owned(),
            users: HashMap::new(),
            pages: BTreeMap::new(),
            psids: HashMap::new(),
            tokens: HashMap::new(),
            codes: HashMap::new(),
            dialog_user: None,
            decision: DialogDecision::Approve,
            human_agent: false,
            require_proof: false,
            declines: Vec::new(),
            permissions: HashMap::new(),
            app_subscription: None,
            rules: Vec::new(),
            handover: handover::Handover::default(),
            instagram: instagram::Instagram::default(),
            sent: Vec::new(),
            customer_mids: HashMap::new(),
            calls: Vec::new(),
            stats: GraphSimStats::default(),
        }
    }

    pub fn add_user(&mut self, id: &str, name: &str) {
        self.users.insert(id.to_owned(), name.to_owned());
    }

    pub fn add_page(&mut self, owner: &str, id: &str, name: &str, tasks: &[&str]) {
        self.pages.insert(
            id.to_owned(),
            Page {
                owner: owner.to_owned(),
                name: name.to_owned(),
                tasks: tasks.iter().map(|t| (*t).to_owned()).collect(),
                subscribed: None,
            },
        );
    }

    pub fn set_dialog_user(&mut self, id: &str) {
        self.dialog_user = Some(id.to_owned());
    }

    pub fn add_psid(&mut self, page: &str, psid: &str, first: &str, last: &str) {
        self.psids.insert(
            (page.to_owned(), psid.to_owned()),
            MessengerUser {
                name: Some((first.to_owned(), last.to_owned())),
                last_user_message_ms: unix_now_ms(),
            },
        );
    }

    /// A person wrote to the page (Meta delivered a webhook for it): Meta knows the PSID from
    /// then on and the messaging window opens at `at_ms`.
    pub fn record_user_message(&mut self, page: &str, psid: &str, at_ms: u64) {
        let user = self
            .psids
            .entry((page.to_owned(), psid.to_owned()))
            .or_insert(MessengerUser {
                name: None,
                last_user_message_ms: 0,
            });
        user.last_user_message_ms = user.last_user_message_ms.max(at_ms);
    }

    /// A customer's message `mid` in the conversation of `page` and `psid` (Meta delivered it).
    pub fn record_customer_mid(&mut self, page: &str, psid: &str, mid: &str) {
        self.customer_mids
            .entry((page.to_owned(), psid.to_owned()))
            .or_default()
            .insert(mid.to_owned());
    }

    /// Whether `mid` is a message of the conversation: the customer's, or one the page sent.
    fn in_thread(&self, page: &str, psid: &str, mid: &str) -> bool {
        self.customer_mids
            .get(&(page.to_owned(), psid.to_owned()))
            .is_some_and(|mids| mids.contains(mid))
            || self.sent.iter().any(|m| {
                m.page == page && m.recipient == psid && m.message_id.as_deref() == Some(mid)
            })
    }

    /// `react` / `unreact` (https://developers.facebook.com/docs/messenger-platform/send-messages/sender-actions/):
    /// `payload.message_id` names a message of the conversation and `react` carries the emoji in
    /// `payload.reaction`; `unreact` takes the `message_id` only. Anything else is Graph's
    /// invalid-parameter error, code 100
    /// (https://developers.facebook.com/docs/graph-api/guides/error-handling/).
    fn check_reaction(&self, page: &str, msg: &SentMessage, react: bool) -> Result<(), Fault> {
        let payload = msg.payload.as_ref();
        let field = |name: &str| {
            payload
                .and_then(|p| p.get(name))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        let Some(mid) = field("message_id") else {
            return Err(Fault::param(
                "(#100) The parameter payload[message_id] is required",
            ));
        };
        if !self.in_thread(page, &msg.recipient, mid) {
            return Err(Fault::param(
                "(#100) Param payload[message_id] must be a message of this conversation",
            ));
        }
        if react && field("reaction").is_none() {
            return Err(Fault::param(
                "(#100) The parameter payload[reaction] is required",
            ));
        }
        Ok(())
    }

    pub fn set_psid_window(&mut self, page: &str, psid: &str, last_user_message_ms: u64) {
        if let Some(user) = self.psids.get_mut(&(page.to_owned(), psid.to_owned())) {
            user.last_user_message_ms = last_user_message_ms;
        }
    }

    pub fn grant_human_agent(&mut self, on: bool) {
        self.human_agent = on;
    }

    pub fn fail_next(&mut self, path_contains: &str, n: usize, error: SimError) {
        self.rules.push(FailRule {
            path_contains: path_contains.to_owned(),
            remaining: n,
            error,
        });
    }

    pub fn clear_faults(&mut self) {
        self.rules.clear();
    }

    /// The injected fault for this request path, if one is armed.
    pub fn take_fault(&mut self, path: &str) -> Option<SimError> {
        let rule = self
            .rules
            .iter_mut()
            .find(|r| r.remaining > 0 && path.contains(&r.path_contains))?;
        rule.remaining -= 1;
        let error = rule.error.clone();
        self.rules.retain(|r| r.remaining > 0);
        self.stats.injected_faults += 1;
        Some(error)
    }

    /// The newest live page token of the page.
    pub fn page_token(&self, page: &str) -> Option<String> {
        self.tokens
            .iter()
            .filter(|(_, rec)| matches!(&rec.subject, Subject::Page { page: p, .. } if p == page))
            .filter(|(token, _)| self.check(token).is_ok())
            .max_by_key(|(_, rec)| rec.issued_at)
            .map(|(token, _)| token.clone())
    }

    pub fn subscriptions(&self, page: &str) -> Option<Vec<String>> {
        self.pages.get(page).and_then(|p| p.subscribed.clone())
    }

    pub fn drop_subscription(&mut self, page: &str) {
        if let Some(p) = self.pages.get_mut(page) {
            p.subscribed = None;
        }
    }

    /// The person's user tokens reach their expiry (the ~60 days of a long-lived one).
    pub fn expire_user_tokens(&mut self, user: &str) {
        for rec in self.tokens.values_mut() {
            if rec.subject == Subject::User(user.to_owned()) {
                rec.expires_at = 1;
            }
        }
    }

    /// Kills every token of the person and every page token derived from them.
    pub fn invalidate_user_tokens(&mut self, user: &str, subcode: i64) {
        for rec in self.tokens.values_mut() {
            let owner = match &rec.subject {
                Subject::User(u) | Subject::Page { user: u, .. } => u,
            };
            if owner == user && rec.dead.is_none() {
                rec.dead = Some(subcode);
            }
        }
    }

    fn issue(
        &mut self,
        subject: Subject,
        parent: Option<String>,
        scopes: Vec<String>,
        lifetime_secs: u64,
    ) -> String {
        let token = format!("EAA{}", random_string(40));
        let now = unix_now_ms() / 1000;
        self.tokens.insert(
            token.clone(),
            TokenRecord {
                subject,
                parent,
                scopes,
                issued_at: now,
                expires_at: if lifetime_secs == 0 {
                    0
                } else {
                    now + lifetime_secs
                },
                dead: None,
            },
        );
        token
    }

    /// A page token as `/me/accounts` hands out after a login with every scope and a
    /// long-lived user token (it never expires), without the dialog: for targets that start
    /// with the page already connected.
    pub fn issue_page_token(&mut self, user: &str, page: &str) -> String {
        let scopes: Vec<String> = KNOWN_SCOPES.iter().map(|s| (*s).to_owned()).collect();
        let login = self.issue(Subject::User(user.to_owned()), None, scopes.clone(), 0);
        let long_lived = self.issue(
            Subject::User(user.to_owned()),
            Some(login),
            scopes.clone(),
            0,
        );
        self.derive_page_token(page, user, &long_lived, &scopes)
    }

    /// Validates a token and everything it was derived from: Meta's code 190 when dead.
    pub fn check(&self, token: &str) -> Result<&TokenRecord, Fault> {
        let rec = self
            .tokens
            .get(token)
            .ok_or_else(|| Fault::new(190, None, standard_message(190, None)))?;
        if let Some(sub) = rec.dead {
            return Err(Fault::new(190, Some(sub), standard_message(190, Some(sub))));
        }
        if rec.expires_at != 0 && unix_now_ms() / 1000 > rec.expires_at {
            return Err(Fault::new(190, Some(463), standard_message(190, Some(463))));
        }
        // A token dies with the grant it came from, but not when the token it was exchanged
        // from merely expires: a long-lived user token outlives the short-lived one, and page
        // tokens from a long-lived user token do not expire with it
        // (https://developers.facebook.com/docs/facebook-login/guides/access-tokens/get-long-lived).
        if let Some(parent) = &rec.parent {
            match self.check(parent) {
                Err(fault) if fault.subcode != Some(463) => return Err(fault),
                _ => {}
            }
        }
        Ok(rec)
    }

    fn user_of(&self, token: Option<&str>) -> Result<String, Fault> {
        let token = token.ok_or_else(token_required)?;
        match &self.check(token)?.subject {
            Subject::User(user) => Ok(user.clone()),
            Subject::Page { .. } => Err(Fault::param(
                "(#100) Tried accessing nonexisting field on node type (Page)",
            )),
        }
    }

    /// The page a page token belongs to; `page` may be `me`.
    fn page_of(&self, token: Option<&str>, page: &str) -> Result<String, Fault> {
        let token = token.ok_or_else(token_required)?;
        match &self.check(token)?.subject {
            Subject::Page { page: owned, .. } if page == "me" || page == owned => Ok(owned.clone()),
            Subject::Page { .. } => Err(Fault::new(200, None, "(#200) Permissions error")),
            Subject::User(_) => Err(Fault::new(
                210,
                None,
                "(#210) A page access token is required to request this resource.",
            )),
        }
    }

    // ---- OAuth dialog and token exchanges ----

    /// The dialog: validates like Meta, then returns the redirect target, or a reason for the
    /// error page the dialog would show instead.
    pub fn dialog(
        &mut self,
        q: &HashMap<String, String>,
    ) -> Result<(String, Vec<(String, String)>), String> {
        if q.get("client_id") != Some(&self.app_id) {
            return Err("Invalid App ID: the client_id does not belong to an app".to_owned());
        }
        let redirect_uri = q
            .get("redirect_uri")
            .filter(|r| url::Url::parse(r).is_ok())
            .ok_or("URL blocked: redirect_uri is missing or not an absolute URL")?;
        if q.get("response_type").map(String::as_str) != Some("code") {
            return Err("response_type must be code for a server-side login".to_owned());
        }
        let scopes: Vec<String> = q
            .get("scope")
            .map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if scopes.is_empty() {
            return Err("scope is missing: nothing to ask the person for".to_owned());
        }
        if let Some(bad) = scopes.iter().find(|s| !KNOWN_SCOPES.contains(&s.as_str())) {
            return Err(format!("Invalid Scopes: {bad}"));
        }
        let user = self
            .dialog_user
            .clone()
            .filter(|u| self.users.contains_key(u))
            .ok_or("nobody is logged in to the simulated browser (set_dialog_user)")?;
        let mut params = Vec::new();
        match self.decision {
            DialogDecision::Approve => {
                // The person may untick single permissions; the code carries only the rest, and
                // a declined permission stays declined until a dialog with auth_type=rerequest
                // asks again (https://developers.facebook.com/docs/facebook-login/guides/advanced/manual-flow#reaskperms).
                let rerequest = q.get("auth_type").map(String::as_str) == Some("rerequest");
                let record = self.permissions.entry(user.clone()).or_default();
                let mut granted = Vec::new();
                for scope in &scopes {
                    let before = record.get(scope.as_str()).copied();
                    let asked = before != Some("declined") || rerequest;
                    let status = if !asked || self.declines.contains(scope) {
                        "declined"
                    } else {
                        "granted"
                    };
                    record.insert(scope.clone(), status);
                    if status == "granted" {
                        granted.push(scope.clone());
                    }
                }
                let scopes = granted;
                let code = format!("AQ{}", random_string(60));
                self.codes.insert(
                    code.clone(),
                    Code {
                        user,
                        redirect_uri: redirect_uri.clone(),
                        scopes,
                        issued: Instant::now(),
                        used: false,
                    },
                );
                params.push(("code".to_owned(), code));
            }
            DialogDecision::Deny => {
                params.push(("error".to_owned(), "access_denied".to_owned()));
                params.push(("error_code".to_owned(), "200".to_owned()));
                params.push((
                    "error_description".to_owned(),
                    "Permissions error".to_owned(),
                ));
                params.push(("error_reason".to_owned(), "user_denied".to_owned()));
            }
        }
        if let Some(state) = q.get("state") {
            params.push(("state".to_owned(), state.clone()));
        }
        Ok((redirect_uri.clone(), params))
    }

    /// `GET /oauth/access_token`: the code exchange or the long-lived exchange.
    pub fn access_token(&mut self, q: &HashMap<String, String>) -> Result<Value, Fault> {
        if q.get("client_id") != Some(&self.app_id) {
            return Err(Fault::new(
                101,
                None,
                "Error validating application. Invalid application ID.",
            ));
        }
        if q.get("client_secret") != Some(&self.app_secret) {
            return Err(Fault::new(1, None, "Error validating client secret."));
        }
        if q.get("grant_type").map(String::as_str) == Some("fb_exchange_token") {
            let short = q
                .get("fb_exchange_token")
                .ok_or_else(|| Fault::param("The parameter fb_exchange_token is required"))?;
            let rec = self.check(short)?.clone();
            let Subject::User(_) = rec.subject else {
                return Err(Fault::param(
                    "(#100) fb_exchange_token must be a user access token",
                ));
            };
            let token = self.issue(
                rec.subject,
                Some(short.clone()),
                rec.scopes,
                LONG_LIVED_SECS,
            );
            return Ok(
                json!({ "access_token": token, "token_type": "bearer", "expires_in": LONG_LIVED_SECS }),
            );
        }
        let code = q
            .get("code")
            .ok_or_else(|| Fault::param("The parameter code is required"))?;
        let Some(entry) = self.codes.get_mut(code) else {
            return Err(Fault::param("Invalid verification code format."));
        };
        if q.get("redirect_uri") != Some(&entry.redirect_uri) {
            return Err(Fault::new(
                100,
                Some(36008),
                "Error validating verification code. Please make sure your redirect_uri is \
                 identical to the one you used in the OAuth dialog request",
            ));
        }
        if entry.used {
            return Err(Fault::new(
                100,
                Some(36009),
                "This authorization code has been used.",
            ));
        }
        if entry.issued.elapsed() > CODE_LIFETIME {
            return Err(Fault::new(
                100,
                Some(36007),
                "This authorization code has expired.",
            ));
        }
        entry.used = true;
        let (user, scopes) = (entry.user.clone(), entry.scopes.clone());
        let token = self.issue(Subject::User(user), None, scopes, SHORT_LIVED_SECS);
        Ok(json!({ "access_token": token, "token_type": "bearer", "expires_in": SHORT_LIVED_SECS }))
    }

    // ---- Graph nodes ----

    pub fn me(&self, token: Option<&str>) -> Result<Value, Fault> {
        let token = token.ok_or_else(token_required)?;
        Ok(match &self.check(token)?.subject {
            Subject::User(user) => {
                json!({ "id": user, "name": self.users.get(user).cloned().unwrap_or_default() })
            }
            Subject::Page { page, .. } => {
                json!({ "id": page, "name": self.pages.get(page).map(|p| p.name.clone()).unwrap_or_default() })
            }
        })
    }

    /// `/me/accounts`, one page per answer when there are several so that paging is exercised.
    /// `next` is absolute and carries the token, as Meta's does.
    pub fn accounts(
        &mut self,
        token: Option<&str>,
        after: Option<&str>,
        base: &str,
    ) -> Result<Value, Fault> {
        let user = self.user_of(token)?;
        let token = token.unwrap_or_default().to_owned();
        let owned: Vec<String> = self
            .pages
            .iter()
            .filter(|(_, p)| p.owner == user)
            .map(|(id, _)| id.clone())
            .collect();
        let page_size = if owned.len() > 1 { 1 } else { owned.len() };
        let start = after.map_or(0, |a| {
            owned
                .iter()
                .position(|id| id == a)
                .map_or(owned.len(), |i| i + 1)
        });
        let chunk: Vec<String> = owned.iter().skip(start).take(page_size).cloned().collect();
        let scopes = self.check(&token)?.scopes.clone();
        let mut data = Vec::new();
        for id in &chunk {
            let page_token = self.derive_page_token(id, &user, &token, &scopes);
            let page = &self.pages[id];
            data.push(json!({
                "id": id, "name": page.name, "access_token": page_token,
                "tasks": page.tasks, "category": "Business",
            }));
        }
        let mut paging = json!({});
        if let (Some(first), Some(last)) = (chunk.first(), chunk.last()) {
            paging["cursors"] = json!({ "before": first, "after": last });
            if start + chunk.len() < owned.len() {
                let mut next = url::Url::parse(base)
                    .map_err(|_| Fault::new(1, None, "An unknown error occurred"))?;
                next.query_pairs_mut()
                    .append_pair("access_token", &token)
                    .append_pair("fields", "id,name,access_token,tasks,category")
                    .append_pair("limit", "1")
                    .append_pair("after", last);
                paging["next"] = json!(next.as_str());
            }
        }
        Ok(json!({ "data": data, "paging": paging }))
    }

    /// The page token derived from this user token: reused while alive, as Meta returns the
    /// same page token for the same grant.
    fn derive_page_token(
        &mut self,
        page: &str,
        user: &str,
        parent: &str,
        scopes: &[String],
    ) -> String {
        let existing = self.tokens.iter().find(|(_, rec)| {
            rec.parent.as_deref() == Some(parent)
                && rec.dead.is_none()
                && matches!(&rec.subject, Subject::Page { page: p, .. } if p == page)
        });
        if let Some((token, _)) = existing {
            return token.clone();
        }
        // Page tokens from a long-lived user token never expire; from a short-lived one they
        // live an hour (`docs/messenger.md` §5.5).
        let parent_long = self
            .tokens
            .get(parent)
            .is_some_and(|rec| rec.parent.is_some());
        let lifetime = if parent_long { 0 } else { 3600 };
        let subject = Subject::Page {
            page: page.to_owned(),
            user: user.to_owned(),
        };
        self.issue(subject, Some(parent.to_owned()), scopes.to_vec(), lifetime)
    }

    /// `DELETE /me/permissions`: removes the app's grant. Meta's reference says a de-authorized
    /// app loses its tokens; page tokens are issued on that grant, so they die with it (190/458).
    pub fn revoke(&mut self, token: Option<&str>) -> Result<Value, Fault> {
        let user = self.user_of(token)?;
        self.remove_grant(&user);
        Ok(json!({ "success": true }))
    }

    /// `DELETE /{user-id}/permissions` with the app token: the app removes a person's grant
    /// without that person's token (https://developers.facebook.com/docs/graph-api/reference/user/permissions/#Deleting).
    pub fn revoke_as_app(&mut self, token: Option<&str>, user: &str) -> Result<Value, Fault> {
        self.require_app_token(token)?;
        if !self.users.contains_key(user) {
            return Err(Fault::param(format!(
                "(#100) Unsupported delete request. Object with ID '{user}' does not exist"
            )));
        }
        self.remove_grant(user);
        Ok(json!({ "success": true }))
    }

    /// The person removed the app: their tokens die (190/458) and their permissions are gone.
    pub fn remove_grant(&mut self, user: &str) {
        self.invalidate_user_tokens(user, 458);
        self.permissions.remove(user);
    }

    /// `GET /me/permissions`: every permission the person was asked for, with its status
    /// (https://developers.facebook.com/docs/graph-api/reference/user/permissions/).
    pub fn permissions(&self, token: Option<&str>) -> Result<Value, Fault> {
        let user = self.user_of(token)?;
        let data: Vec<Value> = self
            .permissions
            .get(&user)
            .into_iter()
            .flatten()
            .map(|(permission, status)| json!({ "permission": permission, "status": status }))
            .collect();
        Ok(json!({ "data": data }))
    }

    fn require_app_token(&self, token: Option<&str>) -> Result<(), Fault> {
        let app_token = format!("{}|{}", self.app_id, self.app_secret);
        match token {
            Some(t) if t == app_token => Ok(()),
            Some(_) => Err(Fault::new(
                190,
                None,
                "Invalid OAuth access token signature.",
            )),
            None => Err(token_required()),
        }
    }

    /// Meta's appsecret_proof rules (https://developers.facebook.com/docs/graph-api/security#appsecret_proof):
    /// a proof that is sent must match, whatever the app's setting (a wrong one is refused even
    /// with "Require App Secret" off, facebookarchive/php-graph-sdk#800); with the setting on, a
    /// call with a user or page token and no proof is refused. Both are code 100
    /// `GraphMethodException`, as integrations report (thephpleague/oauth2-facebook#17).
    pub fn check_proof(&self, token: &str, proof: Option<&str>) -> Result<(), Fault> {
        // An app token (`{app-id}|{secret}`) carries the secret itself; its own check (190 for
        // a wrong secret) is what fails first.
        if token.contains('|') {
            return Ok(());
        }
        let refuse = |message: &str| {
            Err(Fault {
                kind: "GraphMethodException",
                ..Fault::new(100, None, message)
            })
        };
        match proof {
            Some(given) if given != proof_of(&self.app_secret, token) => {
                refuse("Invalid appsecret_proof provided in the API argument")
            }
            Some(_) => Ok(()),
            None if self.require_proof => {
                refuse("API calls from the server require an appsecret_proof argument")
            }
            None => Ok(()),
        }
    }

    // ---- app-level webhook subscriptions ----

    /// `GET /{app-id}/subscriptions` with the app token.
    pub fn app_subscriptions(&self, token: Option<&str>, app: &str) -> Result<Value, Fault> {
        self.require_app_token(token)?;
        self.require_own_app(app)?;
        let data = match &self.app_subscription {
            Some(sub) => json!([{
                "object": "page", "callback_url": sub.callback_url, "active": true,
                "fields": sub.fields.iter().map(|f| json!({ "name": f, "version": "v23.0" })).collect::<Vec<_>>(),
            }]),
            None => json!([]),
        };
        Ok(json!({ "data": data }))
    }

    /// Checks a `POST /{app-id}/subscriptions` before the callback is verified; returns the
    /// subscription to store once it is.
    pub fn validate_app_subscription(
        &self,
        token: Option<&str>,
        app: &str,
        params: &HashMap<String, String>,
    ) -> Result<AppSubscription, Fault> {
        self.require_app_token(token)?;
        self.require_own_app(app)?;
        let object = params
            .get("object")
            .ok_or_else(|| Fault::param("(#100) The parameter object is required"))?;
        if object != "page" {
            return Err(Fault::param(format!(
                "(#100) Param object must be one of {{user, page, permissions, payments, application, instagram, whatsapp_business_account}} - got \"{object}\""
            )));
        }
        let callback_url = params
            .get("callback_url")
            .filter(|u| url::Url::parse(u).is_ok())
            .ok_or_else(|| {
                Fault::param("(#100) The parameter callback_url is required and must be a URL")
            })?;
        let fields = params
            .get("fields")
            .map(|f| parse_list(f))
            .filter(|f| !f.is_empty())
            .ok_or_else(|| Fault::param("(#100) The parameter fields is required"))?;
        if let Some(bad) = fields.iter().find(|f| !KNOWN_FIELDS.contains(&f.as_str())) {
            return Err(Fault::param(format!(
                "(#100) Param fields contains an unknown field \"{bad}\""
            )));
        }
        let verify_token = params
            .get("verify_token")
            .ok_or_else(|| Fault::param("(#100) The parameter verify_token is required"))?;
        Ok(AppSubscription {
            callback_url: callback_url.clone(),
            fields,
            verify_token: verify_token.clone(),
        })
    }

    fn require_own_app(&self, app: &str) -> Result<(), Fault> {
        if app == self.app_id {
            Ok(())
        } else {
            Err(Fault::new(
                100,
                Some(33),
                format!(
                    "Unsupported get request. Object with ID '{app}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
                ),
            ))
        }
    }

    pub fn debug_token(&self, token: Option<&str>, input: Option<&str>) -> Result<Value, Fault> {
        let app_token = format!("{}|{}", self.app_id, self.app_secret);
        self.require_app_token(token)?;
        let input =
            input.ok_or_else(|| Fault::param("(#100) The parameter input_token is required"))?;
        if input == app_token {
            // An app token never expires; Meta describes it with type APP and no user.
            return Ok(json!({ "data": {
                "app_id": self.app_id, "type": "APP", "application": "omni-gateway simulated app",
                "is_valid": true, "scopes": [] } }));
        }
        let Some(rec) = self.tokens.get(input) else {
            return Ok(json!({ "data": {
                "error": { "code": 190, "message": "Invalid OAuth access token." },
                "is_valid": false, "scopes": [] } }));
        };
        let (kind, user, profile) = match &rec.subject {
            Subject::User(u) => ("USER", u.clone(), None),
            Subject::Page { page, user } => ("PAGE", user.clone(), Some(page.clone())),
        };
        let mut data = json!({
            "app_id": self.app_id, "type": kind, "application": "omni-gateway simulated app",
            "data_access_expires_at": rec.issued_at + 90 * 24 * 3600,
            "expires_at": rec.expires_at, "issued_at": rec.issued_at,
            "is_valid": true, "scopes": rec.scopes, "user_id": user,
        });
        if let Some(page) = profile {
            data["profile_id"] = json!(page);
        }
        // Only granted permissions appear, each as its own entry
        // (https://developers.facebook.com/docs/graph-api/reference/debug_token).
        data["granular_scopes"] = json!(
            rec.scopes
                .iter()
                .map(|s| json!({ "scope": s }))
                .collect::<Vec<_>>()
        );
        if let Err(fault) = self.check(input) {
            data["is_valid"] = json!(false);
            data["error"] =
                json!({ "code": fault.code, "subcode": fault.subcode, "message": fault.message });
        }
        Ok(json!({ "data": data }))
    }

    /// `GET /{psid}?fields=…`: the User Profile API with the page's token.
    pub fn profile(
        &self,
        token: Option<&str>,
        id: &str,
        fields: Option<&str>,
    ) -> Result<Value, Fault> {
        let page = self.page_of(token, "me")?;
        let (first, last) = self
            .psids
            .get(&(page, id.to_owned()))
            .and_then(|user| user.name.as_ref())
            .ok_or_else(|| Fault::new(100, Some(2018218), "No profile available for this user."))?;
        let mut out = json!({ "id": id });
        for field in fields
            .unwrap_or("first_name,last_name,profile_pic")
            .split(',')
        {
            let value = match field.trim() {
                "id" => continue,
                "first_name" => json!(first),
                "last_name" => json!(last),
                "name" => json!(format!("{first} {last}").trim()),
                "profile_pic" => json!(format!(
                    "https://platform-lookaside.fbsbx.com/platform/profilepic/?psid={id}"
                )),
                other => {
                    return Err(Fault::param(format!(
                        "(#100) Tried accessing nonexisting field ({other})"
                    )));
                }
            };
            out[field.trim()] = value;
        }
        Ok(out)
    }

    // ---- page subscriptions ----

    pub fn subscribe(
        &mut self,
        token: Option<&str>,
        page: &str,
        fields: Option<&str>,
    ) -> Result<Value, Fault> {
        let page = self.page_of(token, page)?;
        let fields = fields
            .map(parse_list)
            .filter(|f| !f.is_empty())
            .ok_or_else(|| Fault::param("(#100) The parameter subscribed_fields is required"))?;
        if let Some(bad) = fields
            .iter()
            .position(|f| !KNOWN_FIELDS.contains(&f.as_str()))
        {
            return Err(Fault::param(format!(
                "(#100) Param subscribed_fields[{bad}] must be one of {{{}}} - got \"{}\"",
                KNOWN_FIELDS.join(", "),
                fields[bad]
            )));
        }
        let entry = self
            .pages
            .get_mut(&page)
            .ok_or_else(|| Fault::param("(#100) Invalid page"))?;
        // The subscribed_apps reference: CREATE_CONTENT, MANAGE or MODERATE on the page.
        if !entry
            .tasks
            .iter()
            .any(|t| matches!(t.as_str(), "CREATE_CONTENT" | "MANAGE" | "MODERATE"))
        {
            return Err(Fault::new(200, None, "(#200) Permissions error"));
        }
        entry.subscribed = Some(fields);
        Ok(json!({ "success": true }))
    }

    pub fn subscribed_apps(&self, token: Option<&str>, page: &str) -> Result<Value, Fault> {
        let page = self.page_of(token, page)?;
        let data = match self.pages.get(&page).and_then(|p| p.subscribed.as_ref()) {
            Some(fields) => json!([{
                "category": "Business", "link": "https://sim.invalid/",
                "name": "omni-gateway simulated app", "id": self.app_id, "subscribed_fields": fields,
            }]),
            None => json!([]),
        };
        Ok(json!({ "data": data }))
    }

    pub fn unsubscribe(&mut self, token: Option<&str>, page: &str) -> Result<Value, Fault> {
        let page = self.page_of(token, page)?;
        if let Some(entry) = self.pages.get_mut(&page) {
            entry.subscribed = None;
        }
        Ok(json!({ "success": true }))
    }

    // ---- Send API ----

    /// `POST /{page}/messages` after the body was parsed: validates like Meta and records it.
    pub fn send(
        &mut self,
        token: Option<&str>,
        page: &str,
        mut msg: SentMessage,
    ) -> Result<Value, Fault> {
        let page = self.page_of(token, page)?;
        msg.page = page.clone();
        msg.token = token.unwrap_or_default().to_owned();
        if msg.recipient.is_empty() {
            return Err(Fault::param("(#100) The parameter recipient is required"));
        }
        if let Some(result) = self.instagram_send(&page, &mut msg) {
            return result;
        }
        let key = (page, msg.recipient.clone());
        let last_ms = self
            .psids
            .get(&key)
            .map(|u| u.last_user_message_ms)
            .ok_or_else(|| Fault::new(100, Some(2018001), standard_message(100, Some(2018001))))?;
        if let Some(action) = &msg.sender_action {
            if msg.text.is_some() || msg.attachment.is_some() {
                return Err(Fault::param(
                    "(#100) sender_action cannot be sent with message",
                ));
            }
            // The Graph reference of `POST /{page-id}/messages` lists these five
            // (https://developers.facebook.com/docs/graph-api/reference/page/messages/).
            match action.as_str() {
                "typing_on" | "typing_off" | "mark_seen" => {}
                "react" => self.check_reaction(&key.0, &msg, true)?,
                "unreact" => self.check_reaction(&key.0, &msg, false)?,
                _ => {
                    return Err(Fault::param(
                        "(#100) Param sender_action must be one of {typing_on, typing_off, mark_seen, react, unreact}",
                    ));
                }
            }
            self.sent.push(msg.clone());
            return Ok(json!({ "recipient_id": key.1 }));
        }
        let window_days = match (msg.messaging_type.as_deref(), msg.tag.as_deref()) {
            (None, _) => {
                return Err(Fault::param(
                    "(#100) The parameter messaging_type is required",
                ));
            }
            (Some("RESPONSE" | "UPDATE"), _) => 1,
            (Some("MESSAGE_TAG"), None) => {
                return Err(Fault::param(
                    "(#100) The parameter tag is required for MESSAGE_TAG",
                ));
            }
            (Some("MESSAGE_TAG"), Some("HUMAN_AGENT")) if self.human_agent => 7,
            (Some("MESSAGE_TAG"), Some("HUMAN_AGENT")) => {
                return Err(Fault::new(
                    10,
                    None,
                    "(#10) Application does not have the capability to make this API call.",
                ));
            }
            (
                Some("MESSAGE_TAG"),
                Some("CONFIRMED_EVENT_UPDATE" | "ACCOUNT_UPDATE" | "POST_PURCHASE_UPDATE"),
            ) => {
                return Err(Fault::param("(#100) This message tag is deprecated."));
            }
            (Some("MESSAGE_TAG"), Some("CUSTOMER_FEEDBACK")) => 7,
            (Some("MESSAGE_TAG"), Some(_)) => {
                return Err(Fault::param(
                    "(#100) Param tag must be one of {CUSTOMER_FEEDBACK, HUMAN_AGENT}",
                ));
            }
            (Some(_), _) => {
                return Err(Fault::param(
                    "(#100) Param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}",
                ));
            }
        };
        match (&msg.text, &msg.attachment) {
            (None, None) => {
                return Err(Fault::new(
                    100,
                    Some(2018034),
                    "(#100) Message cannot be empty, must provide valid attachment or text",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(Fault::param(
                    "(#100) Only one of text or attachment may be set",
                ));
            }
            // The reference says "less than 2000 characters"; Meta's own error message says
            // "less than or equal to 2000", which is what the live API enforces.
            (Some(text), None) if text.chars().count() > 2000 => {
                return Err(Fault::param(
                    "(#100) Length of param message[text] must be less than or equal to 2000",
                ));
            }
            (Some(text), None) if text.is_empty() => {
                return Err(Fault::new(
                    100,
                    Some(2018034),
                    "(#100) Message cannot be empty, must provide valid attachment or text",
                ));
            }
            (None, Some(attachment)) => check_attachment(attachment, msg.file.is_some())?,
            (Some(_), None) => {}
        }
        self.check_thread(&key.0, &key.1)?;
        if unix_now_ms().saturating_sub(last_ms) > window_days * DAY_MS {
            return Err(Fault::new(
                10,
                Some(2018278),
                standard_message(10, Some(2018278)),
            ));
        }
        let message_id = format!("m_{}", random_string(40));
        msg.message_id = Some(message_id.clone());
        self.sent.push(msg);
        self.stats.messages_sent += 1;
        Ok(json!({ "recipient_id": key.1, "message_id": message_id }))
    }
}

fn check_attachment(attachment: &Value, uploaded: bool) -> Result<(), Fault> {
    let kind = attachment
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !matches!(kind, "image" | "audio" | "video" | "file" | "template") {
        return Err(Fault::param(
            "(#100) Param message[attachment][type] must be one of {image, audio, video, file, template}",
        ));
    }
    let payload = attachment.get("payload");
    let has_source = uploaded
        || payload.and_then(|p| p.get("url")).is_some()
        || payload.and_then(|p| p.get("attachment_id")).is_some()
        || kind == "template";
    if !has_source {
        return Err(Fault::param(
            "(#100) Upload attachment failure: no url, attachment_id or filedata",
        ));
    }
    Ok(())
}

/// Lowercase hex HMAC-SHA256 of `token` keyed with the app secret.
pub(super) fn proof_of(app_secret: &str, token: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(app_secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn token_required() -> Fault {
    Fault::new(
        104,
        None,
        "An access token is required to request this resource.",
    )
}

/// `a,b,c` or a JSON array `["a","b"]`, both of which Meta accepts for list parameters.
fn parse_list(raw: &str) -> Vec<String> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(raw) {
        return list;
    }
    raw.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_bodies_have_meta_shape_and_status() {
        let cases = [
            (Fault::new(2, None, standard_message(2, None)), 500, true),
            (
                Fault::new(190, Some(460), standard_message(190, Some(460))),
                400,
                false,
            ),
            (
                Fault::param("(#100) The parameter subscribed_fields is required"),
                400,
                false,
            ),
        ];
        for (fault, status, transient) in cases {
            assert_eq!(fault.status, status);
            let body = fault.body();
            let error = &body["error"];
            assert_eq!(error["code"], json!(fault.code));
            assert_eq!(error["type"], json!("OAuthException"));
            assert_eq!(error["fbtrace_id"].as_str().map(str::len), Some(11));
            assert_eq!(
                error.get("error_subcode").and_then(Value::as_i64),
                fault.subcode
            );
            assert_eq!(error.get("is_transient").is_some(), transient);
        }
    }

    #[test]
    fn list_parameters_accept_commas_and_json() {
        let cases = [
            ("messages,standby", vec!["messages", "standby"]),
            (r#"["messages","standby"]"#, vec!["messages", "standby"]),
            (" messages , ", vec!["messages"]),
            ("", vec![]),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_list(raw), want, "{raw}");
        }
    }

    #[test]
    fn dead_user_tokens_take_their_page_tokens_along() {
        let mut state = State::new("1", "s");
        state.add_user("u", "Ursula");
        state.add_page("u", "p", "Page", &["MODERATE"]);
        let user = state.issue(Subject::User("u".into()), None, vec![], 0);
        let page = state.derive_page_token("p", "u", &user, &[]);
        assert!(state.check(&page).is_ok());
        state.invalidate_user_tokens("u", 460);
        for token in [&user, &page] {
            let fault = state.check(token).expect_err("token must be dead");
            assert_eq!((fault.code, fault.subcode), (190, Some(460)));
        }
        assert_eq!(state.page_token("p"), None);
    }
}
