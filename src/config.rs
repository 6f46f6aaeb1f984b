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
//!
//! The parts: [`raw`] mirrors the file, [`validate`] turns it into these types, [`secrets`]
//! resolves secrets, [`locate`] names the key a TOML error is about from toml's spans, and
//! [`error`] is the one-line [`ConfigError`].

mod error;
mod locate;
mod raw;
mod secrets;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::ids::UserId;

pub use error::ConfigError;
use raw::RawConfig;
use validate::Context;

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
        // Syntax first, so a data error is known to be about a key or value of valid TOML.
        toml::de::DeTable::parse(text)
            .map_err(|err| locate::toml_error(&err, text, origin, true))?;
        let raw: RawConfig =
            toml::from_str(text).map_err(|err| locate::toml_error(&err, text, origin, false))?;
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

    /// Every secret (or App ID) still at the example value, one error line each, so the shipped
    /// example cannot run by accident.
    pub fn reject_placeholders(&self, origin: &Path) -> Result<(), Vec<ConfigError>> {
        let found: Vec<ConfigError> = self
            .placeholders()
            .into_iter()
            .map(|(location, problem)| ConfigError::new(origin, Some(location), problem))
            .collect();
        if found.is_empty() { Ok(()) } else { Err(found) }
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
}
