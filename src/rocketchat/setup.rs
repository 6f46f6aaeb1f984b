//! The REST calls `omni-gateway check` makes to judge a Rocket.Chat set-up: server info, a REST
//! login with the bot's own credentials, its roles, public and privileged settings, and which
//! roles hold which permission. The daemon itself never needs them.

use std::collections::HashMap;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rest::{Access, Auth, Error, RestClient, Result};
use crate::ids::UserId;

/// The logged-in user as `GET me` describes it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Me {
    #[serde(rename = "_id")]
    pub id: String,
    pub username: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

impl RestClient {
    /// `GET /api/info` (outside `/api/v1`, no credentials): the server's version.
    pub async fn server_info(&self) -> Result<String> {
        let route = "/api/info";
        let url = self.server_url(route)?;
        let answer: Value = self.send(route, self.raw(Method::GET, url)).await?;
        Ok(answer
            .get("version")
            .or_else(|| answer.get("info").and_then(|i| i.get("version")))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned())
    }

    /// `POST login` with username and password, as the REST API takes them (plain text over
    /// the connection; the realtime login sends a digest). Returns the session's credentials.
    pub async fn login_with_password(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<Auth> {
        #[derive(Deserialize)]
        struct Answer {
            data: Data,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Data {
            user_id: String,
            auth_token: String,
        }
        let route = "login";
        let body = json!({ "user": username, "password": password.expose_secret() });
        let builder = self
            .request(Method::POST, route, Access::Anonymous)?
            .json(&body);
        let answer: Answer = self.send(route, builder).await?;
        Ok(Auth {
            user_id: UserId::new(answer.data.user_id),
            token: SecretString::from(answer.data.auth_token),
        })
    }

    /// `GET me`: who the current credentials belong to, with their roles.
    pub async fn me(&self) -> Result<Me> {
        let route = "me";
        let builder = self.request(Method::GET, route, Access::Bot)?;
        self.send(route, builder).await
    }

    /// `GET settings.public?_id=a,b`: the values of public settings; a setting the server does
    /// not know (or does not publish) is absent from the map. The `_id` filter exists from 7.0
    /// (`isSettingsPublicWithPaginationProps` in `apps/meteor/app/api/server/v1/settings.ts`); a
    /// 6.x server ignores it and answers its first page, so when a wanted setting is missing the
    /// whole list is read page by page.
    pub async fn public_settings(&self, ids: &[&str]) -> Result<HashMap<String, Value>> {
        let route = "settings.public";
        let builder = self
            .request(Method::GET, route, Access::Anonymous)?
            .query(&[("_id", ids.join(",")), ("count", ids.len().to_string())]);
        let first: PublicSettings = self.send(route, builder).await?;
        let mut found = wanted_settings(first.settings, ids);
        if found.len() == ids.len() {
            return Ok(found);
        }
        const PAGE: usize = 100;
        const MAX_PAGES: usize = 50;
        let mut offset = 0usize;
        for _ in 0..MAX_PAGES {
            let builder = self
                .request(Method::GET, route, Access::Anonymous)?
                .query(&[("count", PAGE.to_string()), ("offset", offset.to_string())]);
            let page: PublicSettings = self.send(route, builder).await?;
            let got = page.settings.len();
            offset += got;
            found.extend(wanted_settings(page.settings, ids));
            let total = page.total.unwrap_or(0);
            if got == 0 || found.len() == ids.len() || offset >= total {
                break;
            }
        }
        Ok(found)
    }

    /// Whether the REST rate limiter counts unauthenticated calls: the server sets
    /// `X-RateLimit-Limit` on every call it counts (`enforceRateLimit` in
    /// `apps/meteor/app/api/server/ApiClass.ts`), so one anonymous `settings.public` call tells,
    /// without `view-privileged-setting`.
    pub async fn anonymous_calls_are_limited(&self) -> Result<bool> {
        let route = "settings.public";
        let url = self.api_url(route)?;
        let response = self
            .raw(Method::GET, url)
            .query(&[("count", "1")])
            .send()
            .await
            .map_err(|source| Error::Transport {
                route: route.into(),
                source: source.without_url(),
            })?;
        Ok(response.headers().contains_key("x-ratelimit-limit"))
    }

    /// `GET settings/:_id`: any setting's value; needs `view-privileged-setting`, so a 403 is
    /// the usual answer for a bot.
    pub async fn privileged_setting(&self, id: &str) -> Result<Value> {
        let route = format!("settings/{id}");
        let builder = self.request(Method::GET, &route, Access::Bot)?;
        let answer: Value = self.send(&route, builder).await?;
        answer.get("value").cloned().ok_or_else(|| Error::Decode {
            route,
            detail: "no value in the answer".into(),
        })
    }

    /// `GET permissions.listAll`: permission id → the roles that hold it.
    pub async fn permission_roles(&self) -> Result<HashMap<String, Vec<String>>> {
        #[derive(Deserialize)]
        struct Answer {
            update: Vec<Permission>,
        }
        #[derive(Deserialize)]
        struct Permission {
            #[serde(rename = "_id")]
            id: String,
            #[serde(default)]
            roles: Vec<String>,
        }
        let route = "permissions.listAll";
        let builder = self.request(Method::GET, route, Access::Bot)?;
        let answer: Answer = self.send(route, builder).await?;
        Ok(answer.update.into_iter().map(|p| (p.id, p.roles)).collect())
    }
}

#[derive(Deserialize)]
struct PublicSettings {
    settings: Vec<PublicSetting>,
    #[serde(default)]
    total: Option<usize>,
}

#[derive(Deserialize)]
struct PublicSetting {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    value: Value,
}

/// The settings of one `settings.public` page that were asked for.
fn wanted_settings(page: Vec<PublicSetting>, ids: &[&str]) -> HashMap<String, Value> {
    page.into_iter()
        .filter(|s| ids.contains(&s.id.as_str()))
        .map(|s| (s.id, s.value))
        .collect()
}
