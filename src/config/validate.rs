//! Raw values to the typed configuration: one check per key, each failing with a line that names
//! the key, what is wrong and what is expected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use url::Url;

use super::raw::{RawFacebook, RawHttp, RawRocketChat, RawStore};
use super::secrets::RawSecret;
use super::*;

/// What validation needs besides the raw values.
pub(super) struct Context<'a> {
    pub(super) file: &'a Path,
    pub(super) dir: PathBuf,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
}

impl Context<'_> {
    pub(super) fn err(&self, section: &str, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, Some(location(section, key)), problem)
    }

    pub(super) fn section<T>(&self, name: &str, raw: Option<T>) -> Result<T, ConfigError> {
        raw.ok_or_else(|| {
            ConfigError::new(
                self.file,
                Some(format!("[{name}]")),
                "section missing; add it with its keys as in the example bot.toml",
            )
        })
    }

    pub(super) fn rocketchat(&self, raw: RawRocketChat) -> Result<RocketChatConfig, ConfigError> {
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

    pub(super) fn facebook(&self, raw: RawFacebook) -> Result<FacebookConfig, ConfigError> {
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

    pub(super) fn http(&self, raw: RawHttp) -> Result<HttpConfig, ConfigError> {
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

    pub(super) fn store(&self, raw: RawStore) -> Result<StoreConfig, ConfigError> {
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
}

static API_VERSION: LazyLock<Regex> =
    // A literal pattern: it compiles, so this cannot panic (the unit tests force it).
    LazyLock::new(|| Regex::new(r"^v\d+\.\d+$").expect("literal regex compiles"));
