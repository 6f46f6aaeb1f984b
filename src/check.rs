//! `omni-gateway check` (`docs/contract.md` §2): diagnoses a set-up without starting the daemon.
//! Each check prints one line, `✓`, `⚠` or `✗`, and every `✗` says what to do; any `✗` makes the
//! command exit non-zero. The checks follow the order an admin sets things up: the file, the store,
//! Rocket.Chat (reachable, login, Omnichannel, settings, permissions), Meta, the public URL. A
//! check that cannot run because an earlier one failed is not printed: fix the first `✗` first.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use url::{Host, Url};

use crate::config::{Config, FacebookConfig, HttpConfig, StoreConfig};
use crate::messenger::graph::{self, GraphClient, GraphSettings};
use crate::rocketchat::rest::{self, Auth, RestClient};
use crate::store::{self, Store, TokenKey};

/// How long any one request of a check may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Permission that lets the bot see other users' roles (`users.info`).
const READ_ROLES: &str = "view-full-other-user-info";
/// Below this many REST calls per minute per route the limiter delays a busy page's messages.
const MIN_CALLS_PER_MINUTE: f64 = 300.0;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    /// Works, but something deserves attention; does not fail the command.
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub status: Status,
    /// Short, stable name of the check, e.g. `omnichannel`.
    pub check: &'static str,
    pub detail: String,
    /// What to do, for `Warn` and `Fail`.
    pub fix: Option<String>,
}

impl Finding {
    fn pass(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            status: Status::Pass,
            check,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            status: Status::Warn,
            check,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            status: Status::Fail,
            check,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.status {
            Status::Pass => "✓",
            Status::Warn => "⚠",
            Status::Fail => "✗",
        };
        write!(f, "{mark} {}: {}", self.check, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, " — {fix}")?;
        }
        Ok(())
    }
}

/// Everything the checks found, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// No check failed (warnings allowed).
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.status != Status::Fail)
    }

    /// The finding of the named check, if it ran.
    pub fn get(&self, check: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.check == check)
    }
}

/// Collects findings and hands each to the caller as it is made, so a slow check does not
/// hide the lines before it.
struct Recorder<'a> {
    report: Report,
    out: &'a mut dyn FnMut(&Finding),
}

impl Recorder<'_> {
    fn add(&mut self, finding: Finding) -> Status {
        (self.out)(&finding);
        let status = finding.status;
        self.report.findings.push(finding);
        status
    }
}

/// Runs every check on the configuration at `path`, passing each finding to `out` as it is made.
pub async fn run(path: &Path, out: &mut dyn FnMut(&Finding)) -> Report {
    crate::tls::install_crypto_provider();
    let mut rec = Recorder {
        report: Report::default(),
        out,
    };
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            rec.add(Finding::fail(
                "config",
                err.to_string(),
                "fix that key (the example bot.toml documents every key)",
            ));
            return rec.report;
        }
    };
    rec.add(Finding::pass(
        "config",
        format!("{} is valid", path.display()),
    ));
    for warning in config.placeholder_warnings() {
        rec.add(Finding::fail(
            "placeholder",
            warning,
            "`omni-gateway run` refuses to start (exit status 78) until it is set",
        ));
    }
    rec.add(check_store(&config.store));
    check_rocketchat(&config, &mut rec).await;
    rec.add(check_throttling(&config.http).await);
    if rec.add(check_graph(&config.facebook).await) == Status::Pass {
        check_meta_app(&config, &mut rec).await;
    }
    let https = rec.add(check_public_scheme(&config.http));
    if https != Status::Fail {
        rec.add(check_public_reachable(&config.http).await);
    }
    rec.report
}

/// The store directory can be opened (or created), is not held by another process, and its
/// tokens decrypt with the key file.
fn check_store(config: &StoreConfig) -> Finding {
    const NAME: &str = "store";
    let path = &config.path;
    if !path.exists() {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return if parent.is_dir() {
            Finding::pass(
                NAME,
                format!("{} will be created on first start", path.display()),
            )
        } else {
            Finding::fail(
                NAME,
                format!("{} does not exist", parent.display()),
                "create the directory or change [store].path",
            )
        };
    }
    if !config.key_file.exists() {
        return Finding::warn(
            NAME,
            format!(
                "{} exists but its token key {} does not",
                path.display(),
                config.key_file.display()
            ),
            "restore the key file from your backup; without it a new key is made and every page must be authorized again",
        );
    }
    let key = match TokenKey::load_or_create(&config.key_file) {
        Ok(key) => key,
        Err(err) => {
            return Finding::fail(
                NAME,
                err.to_string(),
                "fix the key file as the message says",
            );
        }
    };
    match Store::open(path, key, config.cache_capacity_bytes) {
        Ok(store) => match store.pages() {
            Ok(pages) => Finding::pass(
                NAME,
                format!(
                    "{}: {} page(s), {} event(s) waiting, {} repl(ies) waiting",
                    path.display(),
                    pages.len(),
                    store.inbox().len(),
                    store.outbox().len()
                ),
            ),
            Err(err) => Finding::fail(
                NAME,
                err.to_string(),
                "restore the store and its key file from the same backup",
            ),
        },
        Err(store::Error::Locked { .. }) => Finding::warn(
            NAME,
            format!("{} is in use by a running omni-gateway", path.display()),
            "that is expected while the daemon runs; stop it to check the store itself",
        ),
        Err(err) => Finding::fail(
            NAME,
            err.to_string(),
            "check that the directory belongs to the user the gateway runs as and the disk is not full",
        ),
    }
}

async fn check_rocketchat(config: &Config, rec: &mut Recorder<'_>) {
    let rc = &config.rocketchat;
    let client = match RestClient::new(&rc.url, TIMEOUT) {
        Ok(client) => client,
        Err(err) => {
            rec.add(Finding::fail(
                "rocketchat",
                err.to_string(),
                "check [rocketchat].url",
            ));
            return;
        }
    };
    match client.server_info().await {
        Ok(version) => rec.add(Finding::pass(
            "rocketchat",
            format!("{} answers (version {version})", rc.url),
        )),
        Err(err) => {
            rec.add(Finding::fail(
                "rocketchat",
                err.to_string(),
                "is Rocket.Chat running, and is [rocketchat].url its address as seen from this machine?",
            ));
            return;
        }
    };
    let Some(me) = login(config, &client, rec).await else {
        return;
    };

    match client
        .public_settings(&["Livechat_enabled", "Message_AllowUnrecognizedSlashCommand"])
        .await
    {
        Ok(settings) => {
            let on = |id: &str| settings.get(id).and_then(Value::as_bool) == Some(true);
            rec.add(if on("Livechat_enabled") {
                Finding::pass("omnichannel", "Omnichannel is enabled")
            } else {
                Finding::fail(
                    "omnichannel",
                    "Omnichannel is disabled (Livechat_enabled)",
                    "enable it under Administration → Settings → Omnichannel → Omnichannel enabled",
                )
            });
            rec.add(if on("Message_AllowUnrecognizedSlashCommand") {
                Finding::pass("slash commands", "`/facebook …` reaches the bot (Message_AllowUnrecognizedSlashCommand is on)")
            } else {
                Finding::fail(
                    "slash commands",
                    "Message_AllowUnrecognizedSlashCommand is off, so Rocket.Chat swallows `/facebook …` before the bot sees it",
                    "turn on Administration → Settings → Message → Allow Unrecognized Slash Commands; until then `!facebook …` or the bare command in the bot's DM still work",
                )
            });
        }
        Err(err) => {
            rec.add(Finding::fail(
                "omnichannel",
                err.to_string(),
                "the public settings could not be read; is this a Rocket.Chat server?",
            ));
        }
    }

    rec.add(check_roles(config, &client, &me.roles).await);
    rec.add(check_page_replies(&client, &me.roles).await);
    rec.add(match client.departments().await {
        Ok(departments) => Finding::pass(
            "departments",
            format!("the bot can list Omnichannel departments ({} found)", departments.len()),
        ),
        Err(err) => Finding::fail(
            "departments",
            err.to_string(),
            "give the bot's role the `view-livechat-departments` permission (Administration → Permissions), or `edit <page> department` cannot validate names",
        ),
    });
    rec.add(check_rate_limiter(&client).await);
    rec.add(check_reactions(&client, &me.roles).await);
}

/// Whether customer reactions can show as reactions: `chat.react` has no permission of its own
/// but needs access to the room, which in an Omnichannel room the bot has only through
/// `view-livechat-rooms` (`docs/rocketchat.md` §3.7).
async fn check_reactions(client: &RestClient, bot_roles: &[String]) -> Finding {
    const NAME: &str = "reactions";
    const PERMISSION: &str = "view-livechat-rooms";
    let fix = format!(
        "grant {PERMISSION} to the bot's role under Administration → Permissions to show customers' reactions as reactions; without it they appear as a line in the room"
    );
    match client.permission_roles().await {
        Ok(permissions) => {
            let holders = permissions.get(PERMISSION).cloned().unwrap_or_default();
            if bot_roles.iter().any(|r| holders.contains(r)) {
                Finding::pass(
                    NAME,
                    format!("customers' reactions show as reactions (the bot holds {PERMISSION})"),
                )
            } else {
                Finding::warn(
                    NAME,
                    format!(
                        "the bot's roles lack {PERMISSION}: customers' reactions appear as lines"
                    ),
                    fix,
                )
            }
        }
        Err(err) => Finding::warn(NAME, format!("cannot list permissions: {err}"), fix),
    }
}

/// Logs in over REST with the credentials the daemon will use; `None` after a failure.
async fn login(
    config: &Config,
    client: &RestClient,
    rec: &mut Recorder<'_>,
) -> Option<crate::rocketchat::setup::Me> {
    let rc = &config.rocketchat;
    let how = if let Some(token) = &rc.personal_token {
        client.set_auth(Some(Auth {
            user_id: token.user_id.clone(),
            token: token.auth_token.clone(),
        }));
        "personal access token"
    } else if let Some(password) = &rc.password {
        match client.login_with_password(&rc.username, password).await {
            Ok(auth) => client.set_auth(Some(auth)),
            Err(err) => {
                rec.add(Finding::fail("login", login_problem(&err), LOGIN_FIX));
                return None;
            }
        }
        "password"
    } else {
        rec.add(Finding::fail(
            "login",
            "no credentials",
            "set [rocketchat].password or auth_token and user_id",
        ));
        return None;
    };
    match client.me().await {
        Ok(me) if me.username == rc.username => {
            rec.add(Finding::pass(
                "login",
                format!(
                    "{} logs in with its {how} (roles: {})",
                    me.username,
                    me.roles.join(", ")
                ),
            ));
            Some(me)
        }
        Ok(me) => {
            rec.add(Finding::fail(
                "login",
                format!(
                    "the credentials belong to {}, not to {}",
                    me.username, rc.username
                ),
                "make [rocketchat].username the bot the token or password belongs to",
            ));
            None
        }
        Err(err) => {
            rec.add(Finding::fail("login", login_problem(&err), LOGIN_FIX));
            None
        }
    }
}

fn login_problem(err: &rest::Error) -> String {
    match err {
        rest::Error::Unauthorized { .. } => "Rocket.Chat refused the bot's credentials".into(),
        rest::Error::Api { message, .. } => format!("Rocket.Chat refused the login: {message}"),
        other => other.to_string(),
    }
}

const LOGIN_FIX: &str = "check [rocketchat].username and the password (or auth_token and user_id) in bot.toml or its credential files; a bot with two-factor authentication needs a personal access token (auth_token, user_id)";

/// Whether the bot may read other users' roles, which `admin_roles` needs.
async fn check_roles(config: &Config, client: &RestClient, bot_roles: &[String]) -> Finding {
    const NAME: &str = "roles";
    if config.rocketchat.admin_roles.is_empty() {
        return Finding::pass(
            NAME,
            "admin_roles is empty: only the `admins` usernames may run commands",
        );
    }
    match client.permission_roles().await {
        Ok(permissions) => {
            let holders = permissions.get(READ_ROLES).cloned().unwrap_or_default();
            if bot_roles.iter().any(|r| holders.contains(r)) {
                Finding::pass(
                    NAME,
                    format!(
                        "the bot can read roles, so holders of {} may run commands",
                        config.rocketchat.admin_roles.join(", ")
                    ),
                )
            } else {
                Finding::fail(
                    NAME,
                    format!(
                        "the bot cannot read other users' roles ({READ_ROLES} is not granted to its roles)"
                    ),
                    format!(
                        "grant {READ_ROLES} to the bot's role under Administration → Permissions; until then only the usernames in `admins` may run commands"
                    ),
                )
            }
        }
        Err(err) => Finding::warn(
            NAME,
            format!("cannot list permissions: {err}"),
            format!(
                "make sure the bot's role holds {READ_ROLES}, or only the `admins` usernames may run commands"
            ),
        ),
    }
}

/// Permission that lets the bot post in Livechat rooms it does not serve: replies typed in the
/// Page Inbox are shown there (`chat.sendMessage` → `canAccessRoomAsync`, Livechat validators in
/// `apps/meteor/app/livechat/server/roomAccessValidator.compatibility.ts`).
const VIEW_LIVECHAT_ROOMS: &str = "view-livechat-rooms";

/// Whether the bot may show the page's replies from the Page Inbox in the customer's room.
async fn check_page_replies(client: &RestClient, bot_roles: &[String]) -> Finding {
    const NAME: &str = "page inbox replies";
    let fix = format!(
        "grant {VIEW_LIVECHAT_ROOMS} to the bot's role under Administration → Permissions; until then replies typed in the Page Inbox reach the customer but not the agents' room, and an agent who deletes a reply the customer has is told by direct message to the page's admins instead of in the room"
    );
    match client.permission_roles().await {
        Ok(permissions) => {
            let holders = permissions
                .get(VIEW_LIVECHAT_ROOMS)
                .cloned()
                .unwrap_or_default();
            if bot_roles.iter().any(|r| holders.contains(r)) {
                Finding::pass(
                    NAME,
                    "the bot may post in Livechat rooms: replies typed in the Page Inbox, and notices about deleted replies, are shown to the agents",
                )
            } else {
                Finding::warn(
                    NAME,
                    format!("the bot's roles do not hold {VIEW_LIVECHAT_ROOMS}"),
                    fix,
                )
            }
        }
        Err(err) => Finding::warn(NAME, format!("cannot list permissions: {err}"), fix),
    }
}

/// The REST limiter: visitor routes are unauthenticated, so the bot's bypass permission does not
/// help them, and the default of 10 calls a minute per route holds a busy page's messages back.
async fn check_rate_limiter(client: &RestClient) -> Finding {
    const NAME: &str = "rate limiter";
    let enabled = match client.privileged_setting("API_Enable_Rate_Limiter").await {
        Ok(value) => value.as_bool().unwrap_or(true),
        // Without `view-privileged-setting`: the limiter's headers on an anonymous call tell.
        Err(_) => match client.anonymous_calls_are_limited().await {
            Ok(limited) => limited,
            Err(err) => {
                return Finding::warn(
                    NAME,
                    format!("cannot tell whether the REST rate limiter is on: {err}"),
                    LIMITER_FIX,
                );
            }
        },
    };
    if !enabled {
        return Finding::pass(NAME, "the REST rate limiter is off");
    }
    let number = |v: Result<Value, rest::Error>, default: f64| {
        v.ok().and_then(|v| v.as_f64()).unwrap_or(default)
    };
    let calls = number(
        client
            .privileged_setting("API_Enable_Rate_Limiter_Limit_Calls_Default")
            .await,
        10.0,
    );
    let window_ms = number(
        client
            .privileged_setting("API_Enable_Rate_Limiter_Limit_Time_Default")
            .await,
        60_000.0,
    );
    let per_minute = if window_ms > 0.0 {
        calls * 60_000.0 / window_ms
    } else {
        calls
    };
    let default_limit = if per_minute >= MIN_CALLS_PER_MINUTE {
        String::new()
    } else {
        format!(
            "; the other unauthenticated Livechat routes allow only {calls} calls per {window_ms} ms per route and IP, so customer messages and back-fill wait"
        )
    };
    Finding::fail(
        NAME,
        format!(
            "the REST rate limiter is on: livechat/visitor and livechat/room allow 5 calls per 60 s per client IP whatever the default limit says, so at most 5 new conversations a minute start from this gateway{default_limit}"
        ),
        LIMITER_FIX,
    )
}

/// How to lift the Livechat routes' own limit, or what living with it means.
const LIMITER_FIX: &str = "turn off Administration → Settings → Rate Limiter → API Rate Limiter → Enable Rate Limiter (API_Enable_Rate_Limiter = false), the only switch that lifts the 5-per-minute limit of livechat/visitor and livechat/room; or accept the cap: at most 5 new conversations a minute per gateway IP, the others wait in order (nothing is lost) until the minute passes";

/// 429s per Rocket.Chat route in the last hour, read from the running daemon's `/metrics` on
/// `[http].listen`, and what the Livechat routes' own limits mean for new conversations.
async fn check_throttling(config: &HttpConfig) -> Finding {
    const NAME: &str = "throttling";
    const METRIC: &str = "omni_gateway_rocketchat_rate_limited_last_hour";
    let limits = crate::telemetry::LIVECHAT_LIMITS;
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let answer = async {
        let client = reqwest::Client::builder().timeout(TIMEOUT).build().ok()?;
        let response = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .ok()?;
        response.error_for_status().ok()?.text().await.ok()
    }
    .await;
    let Some(text) = answer else {
        return Finding::pass(
            NAME,
            format!("no daemon answers on {addr}, so no 429 counts to show; {limits}"),
        );
    };
    let counts: Vec<(String, u64)> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(METRIC)?.strip_prefix("{route=\"")?;
            let (route, value) = rest.split_once("\"} ")?;
            Some((route.to_owned(), value.trim().parse().ok()?))
        })
        .filter(|(_, count)| *count > 0)
        .collect();
    let seen = crate::telemetry::describe_rate_limited(&counts);
    if counts.is_empty() {
        Finding::pass(
            NAME,
            format!("Rocket.Chat answered no request with 429 in the last hour; {limits}"),
        )
    } else {
        Finding::warn(
            NAME,
            format!("Rocket.Chat answered 429 in the last hour: {seen}; {limits}"),
            "customers' messages were delayed, not lost; the rate limiter line says which setting lifts which limit",
        )
    }
}

/// Meta accepts the app id and secret (`debug_token` of the app token).
async fn check_graph(config: &FacebookConfig) -> Finding {
    const NAME: &str = "graph api";
    let client = match GraphClient::new(GraphSettings {
        graph_url: config.graph_url.clone(),
        dialog_url: config.dialog_url.clone(),
        api_version: config.api_version.clone(),
        app_id: config.app_id.clone(),
        app_secret: config.app_secret.clone(),
        timeout: TIMEOUT,
    }) {
        Ok(client) => client,
        Err(err) => return Finding::fail(NAME, err.to_string(), "check [facebook].graph_url"),
    };
    match client.app_token_info().await {
        Ok(info) if info.is_valid && info.app_id.as_deref() == Some(config.app_id.as_str()) => {
            Finding::pass(
                NAME,
                format!(
                    "{} accepts app {} and its secret ({})",
                    config.graph_url, config.app_id, config.api_version
                ),
            )
        }
        Ok(info) => Finding::fail(
            NAME,
            format!(
                "Meta does not accept the app token{}",
                info.error
                    .map(|e| format!(": {}", e.message))
                    .unwrap_or_default()
            ),
            "copy App ID and App Secret again from the Meta app dashboard (App settings → Basic)",
        ),
        Err(err @ graph::Error::Graph { .. }) => Finding::fail(
            NAME,
            err.describe(),
            "copy App ID and App Secret again from the Meta app dashboard (App settings → Basic)",
        ),
        Err(err) => Finding::fail(
            NAME,
            err.to_string(),
            "this machine must reach [facebook].graph_url over HTTPS (firewall, proxy, DNS)",
        ),
    }
}

/// The app-level webhook subscription, and what each Facebook account that connected pages
/// granted. Run only once the app token works.
async fn check_meta_app(config: &Config, rec: &mut Recorder<'_>) {
    let Ok(client) = GraphClient::new(GraphSettings {
        graph_url: config.facebook.graph_url.clone(),
        dialog_url: config.facebook.dialog_url.clone(),
        api_version: config.facebook.api_version.clone(),
        app_id: config.facebook.app_id.clone(),
        app_secret: config.facebook.app_secret.clone(),
        timeout: TIMEOUT,
    }) else {
        // check_graph built the same client a moment ago.
        return;
    };
    rec.add(check_app_webhooks(config, &client).await);
    if let Some(finding) = check_permissions(&config.store, &client).await {
        rec.add(finding);
    }
    if let Some(finding) = check_thread_control(&config.store, &client).await {
        rec.add(finding);
    }
}

/// Whether the gateway's app is each connected page's primary receiver: only then may it take a
/// conversation the Page Inbox or another app holds when an agent answers
/// (`docs/messenger.md` §7). Needs the store (and so a stopped daemon), like the permissions.
async fn check_thread_control(config: &StoreConfig, client: &GraphClient) -> Option<Finding> {
    const NAME: &str = "thread control";
    if !config.path.exists() || !config.key_file.exists() {
        return None;
    }
    let key = TokenKey::load_or_create(&config.key_file).ok()?;
    let store = Store::open(&config.path, key, config.cache_capacity_bytes).ok()?;
    let pages = store.pages().ok()?;
    let mut secondary = Vec::new();
    let mut unknown = Vec::new();
    let mut checked = 0;
    for page in pages {
        let Some(token) = &page.token else {
            continue;
        };
        checked += 1;
        match client.is_primary_receiver(&page.id, token).await {
            Ok(true) => {}
            Ok(false) => secondary.push(format!("{} ({})", page.name, page.id)),
            Err(err) => unknown.push(format!("{} ({}): {}", page.name, page.id, err.describe())),
        }
    }
    Some(if checked == 0 {
        Finding::pass(NAME, "no page is connected yet")
    } else if !secondary.is_empty() {
        Finding::warn(
            NAME,
            format!(
                "the app is not the primary receiver of {}: when the Page Inbox or another app holds a conversation, an agent's reply can only ask for it",
                secondary.join(", ")
            ),
            "in the page's settings (Advanced messaging → Handover protocol, or Meta Business Suite → Inbox settings → Automations) make this app the primary receiver",
        )
    } else if !unknown.is_empty() {
        Finding::warn(
            NAME,
            format!(
                "the primary receiver could not be read for {}",
                unknown.join("; ")
            ),
            "run `check` again; if it persists, re-connect the page with `/facebook authorize`",
        )
    } else {
        Finding::pass(
            NAME,
            format!("the app is the primary receiver of every connected page ({checked})"),
        )
    })
}

/// `GET /{app-id}/subscriptions`: the `page` object goes to this gateway with every field it
/// needs. A field reaches the gateway only if it is subscribed at the app level too.
async fn check_app_webhooks(config: &Config, client: &GraphClient) -> Finding {
    const NAME: &str = "app webhooks";
    let callback = format!(
        "{}{}",
        config.http.public_url.as_str().trim_end_matches('/'),
        crate::pages::WEBHOOK_PATH
    );
    let subs = match client.app_subscriptions().await {
        Ok(subs) => subs,
        Err(err) => {
            return Finding::fail(
                NAME,
                format!(
                    "the app's webhook subscriptions cannot be read: {}",
                    err.describe()
                ),
                "check App ID and App Secret (App settings → Basic)",
            );
        }
    };
    let Some(page) = subs.into_iter().find(|s| s.object == "page") else {
        return Finding::warn(
            NAME,
            "the app has no page webhook subscription yet",
            format!(
                "the gateway sets it to {callback} when a page is connected; Meta verifies that URL at once, so the gateway must be running and reachable"
            ),
        );
    };
    let current = page.callback_url.unwrap_or_default();
    if !current.is_empty() && current != callback {
        return Finding::fail(
            NAME,
            format!(
                "the app's page webhooks go to {current}, not to {callback}; the gateway does not overwrite another callback"
            ),
            format!(
                "in the app dashboard, Webhooks → Page: set the callback URL to {callback} (or remove the subscription, and the gateway sets it)"
            ),
        );
    }
    let missing: Vec<&str> = graph::SUBSCRIBED_FIELDS
        .iter()
        .copied()
        .filter(|f| !page.fields.iter().any(|have| have.name == *f))
        .collect();
    if current.is_empty() || !missing.is_empty() {
        return Finding::warn(
            NAME,
            if current.is_empty() {
                "the app's page webhook subscription has no callback URL".to_owned()
            } else {
                format!("the app's page webhooks lack {}", missing.join(","))
            },
            "the gateway completes it at its next health check (hourly) or `/facebook authorize`",
        );
    }
    Finding::pass(
        NAME,
        format!(
            "page webhooks go to {callback} with all {} fields",
            graph::SUBSCRIBED_FIELDS.len()
        ),
    )
}

/// What each Facebook account that connected pages granted (`GET /me/permissions` with its
/// stored token). Not printed when the store cannot be read (the daemon holds it, or the store
/// line failed).
async fn check_permissions(config: &StoreConfig, client: &GraphClient) -> Option<Finding> {
    const NAME: &str = "permissions";
    if !config.path.exists() {
        return Some(Finding::pass(
            NAME,
            "no page is connected yet; `/facebook authorize` checks what is granted",
        ));
    }
    if !config.key_file.exists() {
        return None;
    }
    let key = TokenKey::load_or_create(&config.key_file).ok()?;
    let store = Store::open(&config.path, key, config.cache_capacity_bytes).ok()?;
    let mut grants: Vec<String> = store
        .pages()
        .ok()?
        .into_iter()
        .filter(|p| p.token.is_some())
        .filter_map(|p| p.grant)
        .collect();
    grants.sort();
    grants.dedup();
    if grants.is_empty() {
        return Some(Finding::pass(
            NAME,
            "no page is connected yet; `/facebook authorize` checks what is granted",
        ));
    }
    let mut problems = Vec::new();
    for id in &grants {
        let Ok(Some(grant)) = store.grant(id) else {
            continue;
        };
        match client.permissions(&grant.user_token).await {
            Ok(list) => {
                let declined: Vec<&str> = graph::LOGIN_SCOPES
                    .iter()
                    .copied()
                    .filter(|s| {
                        !list
                            .iter()
                            .any(|p| p.permission == *s && p.status == "granted")
                    })
                    .collect();
                if !declined.is_empty() {
                    problems.push(format!(
                        "{} did not grant {}",
                        grant.admin_username,
                        declined.join(",")
                    ));
                }
            }
            // The ~60-day user token ended: the pages keep working with their own tokens.
            Err(err) if err.is_token_invalid() => problems.push(format!(
                "the Facebook login of {} has expired, so its permissions cannot be read",
                grant.admin_username
            )),
            Err(err) => problems.push(err.describe()),
        }
    }
    Some(if problems.is_empty() {
        Finding::pass(
            NAME,
            format!(
                "every permission is granted ({})",
                graph::LOGIN_SCOPES.join(", ")
            ),
        )
    } else {
        Finding::warn(
            NAME,
            problems.join("; "),
            "run `/facebook authorize`: the gateway answers with a link that asks again for what was declined",
        )
    })
}

/// Meta only calls HTTPS webhooks with a certificate from a public authority.
fn check_public_scheme(config: &HttpConfig) -> Finding {
    const NAME: &str = "public url";
    let url = &config.public_url;
    match url.scheme() {
        "https" => Finding::pass(NAME, format!("{url} uses https")),
        _ if is_loopback(url) => Finding::pass(
            NAME,
            format!(
                "{url} is plain http on loopback: fine for the sandbox and tests, Meta itself needs https"
            ),
        ),
        _ => Finding::fail(
            NAME,
            format!("{url} is not https; Meta refuses plain http and self-signed certificates"),
            "put a reverse proxy with a public certificate (nginx, Caddy; README, \"TLS\") in front and set [http].public_url to its https address",
        ),
    }
}

/// `GET {public_url}/healthz` from this machine: when it answers, DNS, proxy and certificate lead
/// to this gateway.
async fn check_public_reachable(config: &HttpConfig) -> Finding {
    const NAME: &str = "public url reachable";
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(client) => client,
        Err(err) => {
            return Finding::fail(NAME, err.without_url().to_string(), "report this as a bug");
        }
    };
    let public = config.public_route("/healthz");
    let public_answer = get_status(&client, public.clone()).await;
    if let Ok(200) = public_answer {
        return Finding::pass(NAME, format!("{public} answers 200"));
    }
    let local_ip = match config.listen.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let local = SocketAddr::new(local_ip, config.listen.port());
    let local_up = match Url::parse(&format!("http://{local}/healthz")) {
        Ok(url) => get_status(&client, url).await == Ok(200),
        Err(_) => false,
    };
    let problem = match public_answer {
        Ok(status) => format!("{public} answers HTTP {status}"),
        Err(reason) => format!("{public} cannot be reached: {reason}"),
    };
    if local_up {
        Finding::fail(
            NAME,
            format!("{problem}, although the gateway answers on {local}"),
            "check DNS, the firewall and the reverse proxy: it must forward the public URL to [http].listen",
        )
    } else {
        Finding::warn(
            NAME,
            format!(
                "{problem}; the gateway is not running on {local}, so the public path could not be tested"
            ),
            "start the gateway (systemctl start omni-gateway) and run check again",
        )
    }
}

async fn get_status(client: &reqwest::Client, url: Url) -> Result<u16, String> {
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| {
            let e = e.without_url();
            match std::error::Error::source(&e) {
                Some(source) => format!("{e} ({source})"),
                None => e.to_string(),
            }
        })
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_may_use_plain_http() {
        for (url, loopback) in [
            ("http://127.0.0.1:8080", true),
            ("http://[::1]:8080", true),
            ("http://localhost:8080", true),
            ("http://10.0.0.5", false),
            ("http://fb-gateway.example.com", false),
        ] {
            let url = Url::parse(url).unwrap();
            assert_eq!(is_loopback(&url), loopback, "{url}");
        }
    }

    #[test]
    fn a_finding_is_one_line_with_its_fix() {
        let line = Finding::fail("omnichannel", "off", "turn it on").to_string();
        assert_eq!(line, "✗ omnichannel: off — turn it on");
        assert_eq!(Finding::pass("x", "fine").to_string(), "✓ x: fine");
    }
}
