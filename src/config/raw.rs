//! The file as written: every key optional, unknown keys refused, so a typo is reported by name.
//! [`SECTIONS`] lists the same keys for error messages (a test keeps the two in step).

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) rocketchat: Option<RawRocketChat>,
    pub(super) facebook: Option<RawFacebook>,
    pub(super) http: Option<RawHttp>,
    pub(super) store: Option<RawStore>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRocketChat {
    pub(super) url: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<SecretString>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) auth_token: Option<SecretString>,
    pub(super) auth_token_file: Option<PathBuf>,
    pub(super) user_id: Option<String>,
    pub(super) admins: Option<Vec<String>>,
    pub(super) admin_roles: Option<Vec<String>>,
    pub(super) keepalive_ms: Option<u64>,
    pub(super) dead_link_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFacebook {
    pub(super) app_id: Option<String>,
    pub(super) app_secret: Option<SecretString>,
    pub(super) app_secret_file: Option<PathBuf>,
    pub(super) verify_token: Option<SecretString>,
    pub(super) verify_token_file: Option<PathBuf>,
    pub(super) graph_url: Option<String>,
    pub(super) dialog_url: Option<String>,
    pub(super) api_version: Option<String>,
    pub(super) human_agent_tag: Option<bool>,
    pub(super) health_check_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<String>,
    pub(super) public_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) cache_capacity_bytes: Option<u64>,
}

/// Every section and its keys, in the order of the structs above: what an "unknown key" error
/// offers instead.
pub(super) const SECTIONS: [(&str, &[&str]); 4] = [
    (
        "rocketchat",
        &[
            "url",
            "username",
            "password",
            "password_file",
            "auth_token",
            "auth_token_file",
            "user_id",
            "admins",
            "admin_roles",
            "keepalive_ms",
            "dead_link_ms",
        ],
    ),
    (
        "facebook",
        &[
            "app_id",
            "app_secret",
            "app_secret_file",
            "verify_token",
            "verify_token_file",
            "graph_url",
            "dialog_url",
            "api_version",
            "human_agent_tag",
            "health_check_secs",
        ],
    ),
    ("http", &["listen", "public_url"]),
    ("store", &["path", "key_file", "cache_capacity_bytes"]),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Each listed key is one the structs accept: a file setting it to a value of the wrong
    /// type fails on its type, never as an unknown field.
    #[test]
    fn sections_list_the_keys_the_structs_accept() {
        for (section, keys) in SECTIONS {
            for key in keys {
                let text = format!("[{section}]\n{key} = {{ }}\n");
                let err = toml::from_str::<RawConfig>(&text)
                    .err()
                    .map(|e| e.message().to_owned())
                    .unwrap_or_default();
                assert!(
                    !err.is_empty() && !err.contains("unknown field"),
                    "[{section}].{key}: {err}"
                );
            }
        }
        let err = toml::from_str::<RawConfig>("[store]\nnot_a_key = 1\n")
            .err()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(err.contains("unknown field"), "{err}");
    }
}
