//! `bot.toml`: reading, validating and resolving the configuration (`docs/contract.md` §1).
//!
//! The file is read in two steps. First it is deserialized into `Raw*` structs that mirror the
//! file exactly, with every key optional and unknown keys refused, so a typo is reported by name
//! instead of being silently ignored. Then the raw values are validated into the typed structs
//! the rest of the program uses, and secrets are resolved from the environment, `*_file` keys or
//! the file itself. Every problem becomes one [`ConfigError`] line that names the file, the key,
//! what is wrong and what is expected, because that line is all an admin sees when systemd
//! refuses to start the unit.
//!
//! Relative paths (`store.path`, `store.key_file`, `*_file`) are resolved against the directory of
//! the config file, so the daemon does not depend on its working directory.
//!
//! The shipped example `bot.toml` holds the placeholder `change-me` for every secret. [`Config::parse`]
//! accepts it, so `omni-gateway check` can validate the example's shape and then report each
//! placeholder through [`Config::placeholder_warnings`]; the daemon calls
//! [`Config::reject_placeholders`] so the example can never run by accident.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::ids::UserId;

/// The value every secret has in the shipped example `bot.toml`.
pub const PLACEHOLDER_SECRET: &str = "change-me";

/// The App ID in the shipped example `bot.toml`.
const PLACEHOLDER_APP_ID: &str = "000000000000000";

const DEFAULT_ADMIN_ROLES: [&str; 2] = ["admin", "livechat-manager"];
const DEFAULT_KEEPALIVE_MS: u64 = 20_000;
const DEFAULT_DEAD_LINK_MS: u64 = 60_000;
const DEFAULT_GRAPH_URL: &str = "https://graph.facebook.com";
const DEFAULT_DIALOG_URL: &str = "https://www.facebook.com";
const DEFAULT_API_VERSION: &str = "v23.0";
/// Hourly: Meta drops a subscription after an hour of failed webhooks, so an hourly check finds
/// it within the next hour at the latest, at a cost of two Graph calls per page.
const DEFAULT_HEALTH_CHECK_SECS: u64 = 3600;
const DEFAULT_CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// Names the environment variable systemd sets for `LoadCredential=`.
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// Keys whose values are secret: a message about them never quotes the value.
const SECRET_KEYS: [&str; 4] = ["password", "auth_token", "app_secret", "verify_token"];

/// Everything the gateway needs to start, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub rocketchat: RocketChatConfig,
    pub facebook: FacebookConfig,
    pub http: HttpConfig,
    pub store: StoreConfig,
}

/// `[rocketchat]`: where the server is and how the bot logs in.
#[derive(Debug, Clone)]
pub struct RocketChatConfig {
    /// Base URL, `http(s)://host[:port][/subpath]`, without query or fragment. Its path always
    /// ends with `/`, so `url.join("api/v1/login")` keeps a subpath.
    pub url: Url,
    pub username: String,
    pub password: Option<SecretString>,
    /// A personal access token; tried before the password when both are set.
    pub personal_token: Option<PersonalToken>,
    /// Usernames always allowed to run admin commands.
    pub admins: Vec<String>,
    /// Holders of any of these roles may run admin commands.
    pub admin_roles: Vec<String>,
    /// How often the gateway pings over DDP (`keepalive_ms`).
    pub keepalive: Duration,
    /// No frame at all for this long means the link is dead (`dead_link_ms`).
    pub dead_link: Duration,
}

/// A Rocket.Chat personal access token: both halves are needed to log in.
#[derive(Debug, Clone)]
pub struct PersonalToken {
    pub user_id: UserId,
    pub auth_token: SecretString,
}

/// `[facebook]`: the Meta app and the Graph API endpoints.
#[derive(Debug, Clone)]
pub struct FacebookConfig {
    pub app_id: String,
    pub app_secret: SecretString,
    pub verify_token: SecretString,
    pub graph_url: Url,
    pub dialog_url: Url,
    /// Graph API version such as `v23.0`.
    pub api_version: String,
    /// The app is approved for the `HUMAN_AGENT` tag (replies up to 7 days after the visitor).
    pub human_agent_tag: bool,
    /// How often every connected page's token and webhook subscription are checked
    /// (`health_check_secs`).
    pub health_check: Duration,
}

/// `[http]`: where the gateway listens and how Facebook reaches it.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// What Facebook reaches, `http(s)://host[:port][/path]`. The file must spell it without a
    /// trailing slash; use [`HttpConfig::public_route`] to build the URL of a route.
    pub public_url: Url,
}

/// `[store]`: where the durable state lives.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The sled database directory.
    pub path: PathBuf,
    /// The key that encrypts page tokens at rest. Defaults to `<path>.key` beside the store
    /// directory and is never inside it, so a copied store does not carry its own key.
    pub key_file: PathBuf,
    /// sled's page cache size (`cache_capacity_bytes`).
    pub cache_capacity_bytes: u64,
}

/// One configuration problem, displayed as one line:
/// `<file>: [section].key: what is wrong; what is expected`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    file: PathBuf,
    location: Option<String>,
    problem: String,
}

impl ConfigError {
    fn new(file: &Path, location: Option<String>, problem: impl Into<String>) -> Self {
        // One line, always: systemd and `check` print it as is.
        let problem = problem.into().replace(['\n', '\r'], " ");
        Self {
            file: file.to_path_buf(),
            location,
            problem,
        }
    }

    /// The config file the problem is in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Where in the file: `[section].key`, `[section]` or `line L, column C`.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// What is wrong and what is expected.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        f.write_str(&self.problem)
    }
}

impl Config {
    /// Reads `path` and the process environment, and validates them.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::new(
                path,
                None,
                format!(
                    "cannot read the config file ({err}); pass --config with the path of your bot.toml"
                ),
            )
        })?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Validates `text`, the contents of the file `origin`, taking secrets and
    /// `CREDENTIALS_DIRECTORY` from `env`. Placeholder secrets are accepted here; see
    /// [`Config::placeholder_warnings`].
    pub fn parse(
        text: &str,
        origin: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|err| toml_error(&err, text, origin))?;
        let cx = Context {
            file: origin,
            dir: origin.parent().map(Path::to_path_buf).unwrap_or_default(),
            env,
        };
        let rocketchat = cx.rocketchat(cx.section("rocketchat", raw.rocketchat)?)?;
        let facebook = cx.facebook(cx.section("facebook", raw.facebook)?)?;
        let http = cx.http(cx.section("http", raw.http)?)?;
        let store = cx.store(cx.section("store", raw.store)?)?;
        Ok(Config {
            rocketchat,
            facebook,
            http,
            store,
        })
    }

    /// One line per secret (or App ID) still at the example value, e.g.
    /// `[facebook].app_secret: still has the example value "change-me"; set …`. `check` shows
    /// them; the daemon refuses to start on any of them.
    pub fn placeholder_warnings(&self) -> Vec<String> {
        self.placeholders()
            .into_iter()
            .map(|(location, problem)| format!("{location}: {problem}"))
            .collect()
    }

    /// Fails with the first placeholder found, so the shipped example cannot run by accident.
    pub fn reject_placeholders(&self, origin: &Path) -> Result<(), ConfigError> {
        match self.placeholders().into_iter().next() {
            Some((location, problem)) => Err(ConfigError::new(origin, Some(location), problem)),
            None => Ok(()),
        }
    }

    fn placeholders(&self) -> Vec<(String, String)> {
        let rc = &self.rocketchat;
        let fb = &self.facebook;
        let secrets = [
            ("rocketchat", "password", rc.password.as_ref()),
            (
                "rocketchat",
                "auth_token",
                rc.personal_token.as_ref().map(|t| &t.auth_token),
            ),
            ("facebook", "app_secret", Some(&fb.app_secret)),
            ("facebook", "verify_token", Some(&fb.verify_token)),
        ];
        let mut found: Vec<(String, String)> = secrets
            .into_iter()
            .filter(|(_, _, value)| value.is_some_and(|v| v.expose_secret() == PLACEHOLDER_SECRET))
            .map(|(section, key, _)| {
                (
                    location(section, key),
                    format!(
                        "still has the example value \"{PLACEHOLDER_SECRET}\"; set {key}, {key}_file or {}",
                        env_name(section, key)
                    ),
                )
            })
            .collect();
        if fb.app_id == PLACEHOLDER_APP_ID {
            found.push((
                location("facebook", "app_id"),
                format!(
                    "still has the example value \"{PLACEHOLDER_APP_ID}\"; set the App ID shown in the Meta app dashboard"
                ),
            ));
        }
        found
    }
}

impl RocketChatConfig {
    /// The realtime API endpoint: `ws(s)://host[:port][/subpath]/websocket`.
    pub fn websocket_url(&self) -> Url {
        let mut url = self.url.clone();
        let scheme = match url.scheme() {
            "https" | "wss" => "wss",
            _ => "ws",
        };
        // Switching between the special schemes http(s) and ws(s) always succeeds, and
        // `Config::parse` only lets http(s) through.
        url.set_scheme(scheme)
            .expect("http(s) to ws(s) is a change between special schemes, which url allows");
        let path = format!("{}/websocket", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }
}

impl HttpConfig {
    /// The public URL of one of our routes, e.g. `public_route("/oauth/facebook/callback")`.
    pub fn public_route(&self, route: &str) -> Url {
        let mut url = self.public_url.clone();
        let path = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            route.trim_start_matches('/')
        );
        url.set_path(&path);
        url
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    rocketchat: Option<RawRocketChat>,
    facebook: Option<RawFacebook>,
    http: Option<RawHttp>,
    store: Option<RawStore>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRocketChat {
    url: Option<String>,
    username: Option<String>,
    password: Option<SecretString>,
    password_file: Option<PathBuf>,
    auth_token: Option<SecretString>,
    auth_token_file: Option<PathBuf>,
    user_id: Option<String>,
    admins: Option<Vec<String>>,
    admin_roles: Option<Vec<String>>,
    keepalive_ms: Option<u64>,
    dead_link_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFacebook {
    app_id: Option<String>,
    app_secret: Option<SecretString>,
    app_secret_file: Option<PathBuf>,
    verify_token: Option<SecretString>,
    verify_token_file: Option<PathBuf>,
    graph_url: Option<String>,
    dialog_url: Option<String>,
    api_version: Option<String>,
    human_agent_tag: Option<bool>,
    health_check_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    public_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<PathBuf>,
    key_file: Option<PathBuf>,
    cache_capacity_bytes: Option<u64>,
}

/// A secret as the file gives it: inline, as a `*_file` path, or not at all.
struct RawSecret {
    section: &'static str,
    key: &'static str,
    inline: Option<SecretString>,
    file: Option<PathBuf>,
}

/// What validation needs besides the raw values.
struct Context<'a> {
    file: &'a Path,
    dir: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Context<'_> {
    fn err(&self, section: &str, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, Some(location(section, key)), problem)
    }

    fn section<T>(&self, name: &str, raw: Option<T>) -> Result<T, ConfigError> {
        raw.ok_or_else(|| {
            ConfigError::new(
                self.file,
                Some(format!("[{name}]")),
                "section missing; add it with its keys as in the example bot.toml",
            )
        })
    }

    fn rocketchat(&self, raw: RawRocketChat) -> Result<RocketChatConfig, ConfigError> {
        const S: &str = "rocketchat";
        let mut url = self.http_url(
            S,
            "url",
            raw.url,
            None,
            "the Rocket.Chat base URL such as \"http://127.0.0.1:3000\"",
        )?;
        // A trailing slash makes `join` keep a subpath such as `/chat`.
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let username = self.required(
            S,
            "username",
            raw.username,
            "the bot's Rocket.Chat username",
        )?;
        let password = self.secret(RawSecret {
            section: S,
            key: "password",
            inline: raw.password,
            file: raw.password_file,
        })?;
        let auth_token = self.secret(RawSecret {
            section: S,
            key: "auth_token",
            inline: raw.auth_token,
            file: raw.auth_token_file,
        })?;
        let user_id = match raw.user_id {
            Some(id) if id.trim().is_empty() => {
                return Err(self.err(
                    S,
                    "user_id",
                    "is empty; expected the bot's Rocket.Chat user id",
                ));
            }
            other => other,
        };
        let personal_token = match (auth_token, user_id) {
            (Some(auth_token), Some(user_id)) => Some(PersonalToken {
                user_id: UserId::new(user_id),
                auth_token,
            }),
            (Some(_), None) => {
                return Err(self.err(
                    S,
                    "user_id",
                    "missing while auth_token is set; a personal access token needs both auth_token and user_id",
                ));
            }
            (None, Some(_)) => {
                return Err(self.err(
                    S,
                    "auth_token",
                    format!(
                        "missing while user_id is set; a personal access token needs both (auth_token, auth_token_file or {})",
                        env_name(S, "auth_token")
                    ),
                ));
            }
            (None, None) => None,
        };
        if password.is_none() && personal_token.is_none() {
            return Err(self.err(
                S,
                "password",
                format!(
                    "missing; set password, password_file or {}, or a personal access token (auth_token and user_id)",
                    env_name(S, "password")
                ),
            ));
        }
        let admins = raw.admins.unwrap_or_default();
        for admin in &admins {
            if admin.trim().is_empty() {
                return Err(self.err(
                    S,
                    "admins",
                    "has an empty entry; expected Rocket.Chat usernames",
                ));
            }
            if let Some(bare) = admin.strip_prefix('@') {
                return Err(self.err(
                    S,
                    "admins",
                    format!("'{admin}' starts with '@'; expected the bare username \"{bare}\""),
                ));
            }
        }
        let admin_roles = raw.admin_roles.unwrap_or_else(|| {
            DEFAULT_ADMIN_ROLES
                .iter()
                .map(|r| (*r).to_owned())
                .collect()
        });
        if admin_roles.iter().any(|role| role.trim().is_empty()) {
            return Err(self.err(
                S,
                "admin_roles",
                "has an empty entry; expected Rocket.Chat role names",
            ));
        }
        if admins.is_empty() && admin_roles.is_empty() {
            return Err(self.err(
                S,
                "admin_roles",
                "is empty and so is admins, so nobody could run admin commands; add a role such as \"admin\" or a username to admins",
            ));
        }
        let keepalive_ms =
            self.positive(S, "keepalive_ms", raw.keepalive_ms, DEFAULT_KEEPALIVE_MS)?;
        let dead_link_ms =
            self.positive(S, "dead_link_ms", raw.dead_link_ms, DEFAULT_DEAD_LINK_MS)?;
        if dead_link_ms <= keepalive_ms {
            return Err(self.err(
                S,
                "dead_link_ms",
                format!(
                    "{dead_link_ms} is not longer than keepalive_ms ({keepalive_ms}); expected a value several times keepalive_ms so a live link always answers a ping in time"
                ),
            ));
        }
        Ok(RocketChatConfig {
            url,
            username,
            password,
            personal_token,
            admins,
            admin_roles,
            keepalive: Duration::from_millis(keepalive_ms),
            dead_link: Duration::from_millis(dead_link_ms),
        })
    }

    fn facebook(&self, raw: RawFacebook) -> Result<FacebookConfig, ConfigError> {
        const S: &str = "facebook";
        let app_id = self.required(
            S,
            "app_id",
            raw.app_id,
            "the App ID shown in the Meta app dashboard",
        )?;
        if !app_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.err(
                S,
                "app_id",
                format!("'{app_id}' is not a number; expected the App ID shown in the Meta app dashboard (digits only)"),
            ));
        }
        let app_secret = self.required_secret(
            RawSecret {
                section: S,
                key: "app_secret",
                inline: raw.app_secret,
                file: raw.app_secret_file,
            },
            "the App Secret from the Meta app dashboard",
        )?;
        let verify_token = self.required_secret(
            RawSecret {
                section: S,
                key: "verify_token",
                inline: raw.verify_token,
                file: raw.verify_token_file,
            },
            "the Verify Token typed in the Meta app's webhook settings",
        )?;
        let graph_url = self.http_url(
            S,
            "graph_url",
            raw.graph_url,
            Some(DEFAULT_GRAPH_URL),
            "the Graph API base URL",
        )?;
        let dialog_url = self.http_url(
            S,
            "dialog_url",
            raw.dialog_url,
            Some(DEFAULT_DIALOG_URL),
            "the Facebook Login dialog base URL",
        )?;
        let api_version = raw
            .api_version
            .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
        if !API_VERSION.is_match(&api_version) {
            return Err(self.err(
                S,
                "api_version",
                format!("'{api_version}' is not a Graph API version; expected the form \"{DEFAULT_API_VERSION}\""),
            ));
        }
        let health_check_secs = self.positive(
            S,
            "health_check_secs",
            raw.health_check_secs,
            DEFAULT_HEALTH_CHECK_SECS,
        )?;
        Ok(FacebookConfig {
            app_id,
            app_secret,
            verify_token,
            graph_url,
            dialog_url,
            api_version,
            human_agent_tag: raw.human_agent_tag.unwrap_or(false),
            health_check: Duration::from_secs(health_check_secs),
        })
    }

    fn http(&self, raw: RawHttp) -> Result<HttpConfig, ConfigError> {
        const S: &str = "http";
        let listen = self.required(
            S,
            "listen",
            raw.listen,
            "an IP address and port such as \"127.0.0.1:8080\"",
        )?;
        let listen: SocketAddr = listen.parse().map_err(|_| {
            self.err(
                S,
                "listen",
                format!("'{listen}' is not an IP address and port; expected e.g. \"127.0.0.1:8080\" (host names are not resolved)"),
            )
        })?;
        if let Some(raw_url) = raw.public_url.as_ref().filter(|u| u.ends_with('/')) {
            return Err(self.err(
                S,
                "public_url",
                format!("'{raw_url}' ends with '/'; expected no trailing slash, e.g. \"https://fb-gateway.example.com\""),
            ));
        }
        let public_url = self.http_url(
            S,
            "public_url",
            raw.public_url,
            None,
            "the URL Facebook reaches this gateway at, such as \"https://fb-gateway.example.com\"",
        )?;
        Ok(HttpConfig { listen, public_url })
    }

    fn store(&self, raw: RawStore) -> Result<StoreConfig, ConfigError> {
        const S: &str = "store";
        let path = match raw.path {
            None => {
                return Err(self.err(
                    S,
                    "path",
                    "missing; expected the store directory, such as \"data\"",
                ));
            }
            Some(p) if p.as_os_str().is_empty() => {
                return Err(self.err(
                    S,
                    "path",
                    "is empty; expected the store directory, such as \"data\"",
                ));
            }
            Some(p) => self.dir.join(p),
        };
        let Some(name) = path.file_name() else {
            return Err(self.err(
                S,
                "path",
                format!(
                    "'{}' does not end in a directory name; expected e.g. \"data\"",
                    path.display()
                ),
            ));
        };
        let key_file = match raw.key_file {
            Some(p) if p.as_os_str().is_empty() => {
                return Err(self.err(
                    S,
                    "key_file",
                    "is empty; leave it out for the default <path>.key",
                ));
            }
            Some(p) => self.dir.join(p),
            None => {
                let mut default_name = name.to_os_string();
                default_name.push(".key");
                path.with_file_name(default_name)
            }
        };
        if key_file.starts_with(&path) {
            return Err(self.err(
                S,
                "key_file",
                format!(
                    "'{}' is inside the store directory; expected a path outside it, so a copy of the store does not carry its key",
                    key_file.display()
                ),
            ));
        }
        let cache_capacity_bytes = self.positive(
            S,
            "cache_capacity_bytes",
            raw.cache_capacity_bytes,
            DEFAULT_CACHE_CAPACITY_BYTES,
        )?;
        Ok(StoreConfig {
            path,
            key_file,
            cache_capacity_bytes,
        })
    }

    fn required(
        &self,
        section: &str,
        key: &str,
        value: Option<String>,
        expected: &str,
    ) -> Result<String, ConfigError> {
        match value {
            None => Err(self.err(section, key, format!("missing; expected {expected}"))),
            Some(v) if v.trim().is_empty() => {
                Err(self.err(section, key, format!("is empty; expected {expected}")))
            }
            Some(v) => Ok(v),
        }
    }

    fn positive(
        &self,
        section: &str,
        key: &str,
        value: Option<u64>,
        default: u64,
    ) -> Result<u64, ConfigError> {
        match value {
            Some(0) => Err(self.err(
                section,
                key,
                format!("is 0; expected a positive number (default {default})"),
            )),
            Some(v) => Ok(v),
            None => Ok(default),
        }
    }

    /// An `http(s)` URL with a host and no query, fragment or credentials.
    fn http_url(
        &self,
        section: &str,
        key: &str,
        value: Option<String>,
        default: Option<&str>,
        expected: &str,
    ) -> Result<Url, ConfigError> {
        let text = match (value, default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.to_owned(),
            (None, None) => {
                return Err(self.err(section, key, format!("missing; expected {expected}")));
            }
        };
        if text.trim().is_empty() {
            return Err(self.err(section, key, format!("is empty; expected {expected}")));
        }
        let url = Url::parse(&text).map_err(|err| {
            // Never echo a value that may carry credentials.
            let shown = if text.contains('@') {
                "the value".to_owned()
            } else {
                format!("'{text}'")
            };
            self.err(
                section,
                key,
                format!("{shown} is not a URL ({err}); expected {expected}"),
            )
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.err(
                section,
                key,
                "must not contain a user name or password; put credentials in their own keys",
            ));
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.err(
                section,
                key,
                format!(
                    "scheme '{}' is not supported; expected an http:// or https:// URL, {expected}",
                    url.scheme()
                ),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(self.err(
                section,
                key,
                format!("'{text}' has no host; expected {expected}"),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.err(
                section,
                key,
                format!("'{text}' has a query (?…) or fragment (#…); expected a plain base URL, {expected}"),
            ));
        }
        Ok(url)
    }

    fn required_secret(&self, raw: RawSecret, expected: &str) -> Result<SecretString, ConfigError> {
        let (section, key) = (raw.section, raw.key);
        self.secret(raw)?.ok_or_else(|| {
            self.err(
                section,
                key,
                format!(
                    "missing; expected {expected}, set as {key}, {key}_file or {}",
                    env_name(section, key)
                ),
            )
        })
    }

    /// Resolves a secret in priority order: environment variable, `*_file`, the key itself.
    fn secret(&self, raw: RawSecret) -> Result<Option<SecretString>, ConfigError> {
        let RawSecret {
            section,
            key,
            inline,
            file,
        } = raw;
        let file_key = format!("{key}_file");
        if inline.is_some() && file.is_some() {
            return Err(self.err(
                section,
                key,
                format!("both {key} and {file_key} are set; keep only one"),
            ));
        }
        let env_var = env_name(section, key);
        if let Some(value) = (self.env)(&env_var) {
            if value.is_empty() {
                return Err(self.err(
                    section,
                    key,
                    format!("environment variable {env_var} is set but empty; set it to the value or unset it"),
                ));
            }
            return Ok(Some(SecretString::from(value)));
        }
        if let Some(file) = file {
            return self.secret_file(section, &file_key, &file).map(Some);
        }
        match inline {
            Some(value) if value.expose_secret().is_empty() => Err(self.err(
                section,
                key,
                format!("is empty; set it, or use {file_key} or {env_var}"),
            )),
            other => Ok(other),
        }
    }

    /// Reads a secret file. A relative path found in systemd's `CREDENTIALS_DIRECTORY`
    /// (`LoadCredential=`) wins over one beside the config file.
    fn secret_file(
        &self,
        section: &str,
        file_key: &str,
        file: &Path,
    ) -> Result<SecretString, ConfigError> {
        if file.as_os_str().is_empty() {
            return Err(self.err(
                section,
                file_key,
                "is empty; expected the path of a file holding the secret",
            ));
        }
        let credential = (self.env)(CREDENTIALS_DIRECTORY)
            .filter(|_| file.is_relative())
            .map(|dir| Path::new(&dir).join(file))
            .filter(|candidate| candidate.is_file());
        let path = credential.unwrap_or_else(|| self.dir.join(file));
        let contents = std::fs::read_to_string(&path).map_err(|err| {
            self.err(
                section,
                file_key,
                format!(
                    "cannot read '{}' ({err}); expected a readable file holding the secret",
                    path.display()
                ),
            )
        })?;
        let value = contents.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(self.err(
                section,
                file_key,
                format!("'{}' is empty; expected the secret in it", path.display()),
            ));
        }
        Ok(SecretString::from(value.to_owned()))
    }
}

static API_VERSION: LazyLock<Regex> =
    // A literal pattern: it compiles, so this cannot panic (the unit tests force it).
    LazyLock::new(|| Regex::new(r"^v\d+\.\d+$").expect("literal regex compiles"));

fn location(section: &str, key: &str) -> String {
    format!("[{section}].{key}")
}

/// `OMNI_GATEWAY_<SECTION>_<KEY>`, e.g. `OMNI_GATEWAY_FACEBOOK_APP_SECRET`.
pub fn env_name(section: &str, key: &str) -> String {
    format!(
        "OMNI_GATEWAY_{}_{}",
        section.to_uppercase(),
        key.to_uppercase()
    )
}

/// Turns a toml error into one line naming the key it is about, found from the error's span:
/// the nearest `key =` at or above the offending line and the table header above that.
fn toml_error(err: &toml::de::Error, text: &str, origin: &Path) -> ConfigError {
    let message = err.message().replace(", expected ", "; expected ");
    let Some(span) = err.span() else {
        return ConfigError::new(origin, None, format!("{message}; fix the TOML syntax"));
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count();
    let lines: Vec<&str> = text.lines().collect();
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..start].chars().count() + 1;

    let unknown = UNKNOWN_FIELD
        .captures(&message)
        .map(|c| (c[1].to_owned(), c[2].to_owned()));
    // A wrong value may sit on a later line of a multi-line array, so data errors look upwards
    // for their key; a syntax error is about its own line only.
    let data_error = ["invalid type", "invalid value", "invalid length"]
        .iter()
        .any(|prefix| message.starts_with(prefix));
    let mut table: Option<String> = None;
    let mut key: Option<String> = None;
    for (index, line) in lines.iter().enumerate().take(line_no + 1).rev() {
        if let Some(c) = TABLE_HEADER.captures(line) {
            table = Some(c[1].trim().to_owned());
            break;
        }
        if key.is_none() && (data_error || index == line_no) {
            key = KEY_LINE
                .captures(line)
                .map(|c| c[1].trim_matches('"').to_owned());
        }
    }
    let on_header = lines.get(line_no).is_some_and(|l| TABLE_HEADER.is_match(l));

    if let Some((name, expected)) = unknown {
        let expected = expected.replace('`', "");
        let (location_text, problem) = match (&table, on_header) {
            // `[store.extra]` is an unknown key `extra` of `[store]`.
            (Some(t), true) => match t.rsplit_once('.') {
                Some((parent, _)) => (
                    location(parent.trim(), &name),
                    format!("unknown key; expected {expected}"),
                ),
                None => (
                    format!("[{name}]"),
                    format!("unknown section; expected {}", sections(&expected)),
                ),
            },
            (Some(t), false) => (
                location(t, &name),
                format!("unknown key; expected {expected}"),
            ),
            (None, _) => (
                format!("[{name}]"),
                format!(
                    "unknown section or key outside a section; expected {}",
                    sections(&expected)
                ),
            ),
        };
        return ConfigError::new(origin, Some(location_text), problem);
    }

    let location_text = match (&table, &key) {
        (Some(t), Some(k)) if !on_header => Some(location(t, k)),
        (None, Some(k)) => Some(format!("[{k}]")),
        _ => None,
    };
    let is_secret = key.as_deref().is_some_and(|k| SECRET_KEYS.contains(&k));
    let message = if !data_error {
        // Syntax errors quote only the tokens they expected, never the text found.
        format!("{message}; fix the TOML syntax")
    } else if is_secret {
        // Serde quotes the offending value between backticks; a secret's value is never shown.
        QUOTED.replace_all(&message, "").into_owned()
    } else {
        message.replace("expected u64", "expected a whole number of at least 1")
    };
    match location_text {
        Some(loc) => ConfigError::new(origin, Some(loc), message),
        None => ConfigError::new(
            origin,
            Some(format!("line {}, column {column}", line_no + 1)),
            message,
        ),
    }
}

/// `one of rocketchat, facebook` → `one of [rocketchat], [facebook]`.
fn sections(expected: &str) -> String {
    let list = expected.strip_prefix("one of ").unwrap_or(expected);
    let names: Vec<String> = list
        .split(", ")
        .flat_map(|part| part.split(" or "))
        .map(|name| format!("[{}]", name.trim()))
        .collect();
    format!("one of {}", names.join(", "))
}

// Literal patterns: they compile, so these cannot panic (the unit tests force each of them).
static UNKNOWN_FIELD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^unknown field `([^`]*)`; expected (.*)$").expect("literal regex compiles")
});
static TABLE_HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$").expect("literal regex compiles")
});
static KEY_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"^\s*([A-Za-z0-9_\-"]+)\s*="#).expect("literal regex compiles"));
static QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r" ?`[^`]*`").expect("literal regex compiles"));

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[rocketchat]
url = "https://chat.example.com/team"
username = "facebook.bot"
password = "pw"

[facebook]
app_id = "123"
app_secret = "s"
verify_token = "v"

[http]
listen = "127.0.0.1:8080"
public_url = "https://fb.example.com/gw"

[store]
path = "state/data"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/omni/bot.toml"), &|_| None)
    }

    #[test]
    fn derived_urls_and_paths() {
        let config = parse(MINIMAL).expect("minimal config parses");
        let rc = &config.rocketchat;
        assert_eq!(rc.url.as_str(), "https://chat.example.com/team/");
        assert_eq!(
            rc.websocket_url().as_str(),
            "wss://chat.example.com/team/websocket"
        );
        assert_eq!(
            rc.url
                .join("api/v1/login")
                .map(String::from)
                .ok()
                .as_deref(),
            Some("https://chat.example.com/team/api/v1/login")
        );
        assert_eq!(
            config
                .http
                .public_route("/oauth/facebook/callback")
                .as_str(),
            "https://fb.example.com/gw/oauth/facebook/callback"
        );
        assert_eq!(config.store.path, Path::new("/etc/omni/state/data"));
        assert_eq!(config.store.key_file, Path::new("/etc/omni/state/data.key"));
        assert_eq!(rc.admin_roles, ["admin", "livechat-manager"]);
        assert_eq!(rc.keepalive, Duration::from_secs(20));
        assert_eq!(rc.dead_link, Duration::from_secs(60));
        assert_eq!(config.store.cache_capacity_bytes, 64 * 1024 * 1024);
        assert_eq!(
            config.facebook.graph_url.as_str(),
            "https://graph.facebook.com/"
        );
        assert_eq!(config.facebook.api_version, "v23.0");
        assert_eq!(config.facebook.health_check, Duration::from_secs(3600));
        assert!(config.placeholder_warnings().is_empty());
    }

    #[test]
    fn health_check_interval_is_configurable() {
        let text = MINIMAL.replace(
            "verify_token = \"v\"",
            "verify_token = \"v\"\nhealth_check_secs = 5",
        );
        let config = parse(&text).expect("parses");
        assert_eq!(config.facebook.health_check, Duration::from_secs(5));
    }

    #[test]
    fn websocket_url_of_plain_http_root() {
        let text = MINIMAL.replace("https://chat.example.com/team", "http://127.0.0.1:3000");
        let config = parse(&text).expect("parses");
        assert_eq!(
            config.rocketchat.websocket_url().as_str(),
            "ws://127.0.0.1:3000/websocket"
        );
        let root = MINIMAL.replace("https://fb.example.com/gw", "https://fb.example.com");
        let config = parse(&root).expect("parses");
        assert_eq!(
            config.http.public_route("/healthz").as_str(),
            "https://fb.example.com/healthz"
        );
    }

    #[test]
    fn literal_regexes_compile() {
        for re in [
            &API_VERSION,
            &UNKNOWN_FIELD,
            &TABLE_HEADER,
            &KEY_LINE,
            &QUOTED,
        ] {
            LazyLock::force(re);
        }
    }
}
