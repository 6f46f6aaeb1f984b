//! A typed client for the parts of Meta's Graph API the gateway uses: Facebook Login for pages
//! (dialog link, code and long-lived exchanges, `/me/accounts`), page webhook subscriptions,
//! token inspection, the User Profile API and the Send API. Wire facts: `docs/messenger.md` §3–§9.
//!
//! Tokens are `SecretString`s and never reach an error or a log line: access tokens travel in
//! the `Authorization: Bearer` header, which the Graph API accepts like the `access_token`
//! parameter. Every call with a token also carries `appsecret_proof` (hex HMAC-SHA256 of the
//! token keyed with the app secret), which Meta requires when the app has "Require App Secret"
//! on and accepts otherwise (https://developers.facebook.com/docs/graph-api/security#appsecret_proof). Only the values Meta requires as parameters (`client_secret`, `code`,
//! `fb_exchange_token`, `input_token`) go into a query string, and transport errors are
//! stripped of their URL before they are returned.

mod error;
mod handover;
pub mod signed_request;
mod types;

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, RequestBuilder};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::Sha256;
use tracing::debug;
use url::Url;

use crate::ids::{PageId, Psid};

pub use error::{Error, ErrorKind, GraphError};
pub use types::{AppSubscription, Permission, SubscriptionField};
pub use types::{
    AttachmentKind, Content, FbUser, IgAccount, IgProfile, Messaging, PageAccount, Profile,
    SendRequest, SendResponse, SenderAction, TokenInfo, TokenInfoError, UserToken,
};

/// The webhook fields a page is subscribed to: the live-chat set of
/// `docs/messenger.md` §2.7. They must also be enabled for the app in the App Dashboard (§6 there).
pub const SUBSCRIBED_FIELDS: &[&str] = &[
    "messages",
    "messaging_postbacks",
    "message_echoes",
    "message_deliveries",
    "message_reads",
    "message_reactions",
    "message_edits",
    "messaging_referrals",
    "messaging_handovers",
    "standby",
    "messaging_optins",
    "messaging_policy_enforcement",
];

/// The permissions the login dialog asks for (`docs/messenger.md` §5.2): list the pages, message on
/// their behalf, subscribe them to webhooks, the engagement read Meta pairs with them, and
/// `business_management`, without which pages owned by a business portfolio are missing from
/// `/me/accounts` (https://developers.facebook.com/docs/permissions#business_management).
/// The Instagram ones reach the Instagram account linked to each page (`docs/instagram.md` §2.1):
/// `instagram_basic` and `instagram_manage_messages` to find it, read its webhooks and answer, and
/// `instagram_manage_comments`, which Meta's attachment-upload page lists for the upload the
/// gateway sends agents' files with.
pub const LOGIN_SCOPES: &[&str] = &[
    "pages_show_list",
    "pages_messaging",
    "pages_manage_metadata",
    "pages_read_engagement",
    "business_management",
    "instagram_basic",
    "instagram_manage_messages",
    "instagram_manage_comments",
];

/// Stops following `paging.next` after this many pages: a person with more pages than this
/// times Meta's page size is not a realistic gateway admin, and a loop must end.
const MAX_ACCOUNT_PAGES: usize = 100;

/// Response bodies quoted in [`Error::Http`] are cut to this many characters.
const BODY_EXCERPT: usize = 300;

/// Where and as whom the client talks to Meta.
pub struct GraphSettings {
    /// `https://graph.facebook.com` (or a simulator).
    pub graph_url: Url,
    /// `https://www.facebook.com`, where the login dialog lives.
    pub dialog_url: Url,
    /// `vNN.N`.
    pub api_version: String,
    pub app_id: String,
    pub app_secret: SecretString,
    /// Per request, connect to last byte; 20 s is a sensible default.
    pub timeout: Duration,
}

/// A cheap-to-clone Graph API client.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    graph_url: Url,
    dialog_url: Url,
    api_version: String,
    app_id: String,
    app_secret: SecretString,
}

#[derive(Deserialize)]
struct AccountsPage {
    #[serde(default)]
    data: Vec<PageAccount>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct SubscribedApps {
    #[serde(default)]
    data: Vec<SubscribedApp>,
}

#[derive(Deserialize)]
struct SubscribedApp {
    id: serde_json::Value,
    #[serde(default)]
    subscribed_fields: Vec<String>,
}

#[derive(Deserialize)]
struct DebugToken {
    data: TokenInfo,
}

#[derive(Deserialize)]
struct DataList<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
}

impl GraphClient {
    pub fn new(settings: GraphSettings) -> Result<GraphClient, Error> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("omni-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Client(e.without_url()))?;
        Ok(GraphClient {
            http,
            graph_url: settings.graph_url,
            dialog_url: settings.dialog_url,
            api_version: settings.api_version,
            app_id: settings.app_id,
            app_secret: settings.app_secret,
        })
    }

    /// The Facebook Login link an admin opens (manual flow, `docs/messenger.md` §5.1). `state` is the
    /// caller's single-use CSRF value; Meta sends it back on the redirect.
    /// `rerequest` asks again for permissions the person declined before: without
    /// `auth_type=rerequest` the dialog does not show them a second time
    /// (https://developers.facebook.com/docs/facebook-login/guides/advanced/manual-flow#reaskperms).
    pub fn login_dialog_url(&self, redirect_uri: &str, state: &str, rerequest: bool) -> Url {
        let mut url = versioned(&self.dialog_url, &self.api_version, &["dialog", "oauth"]);
        url.query_pairs_mut()
            .append_pair("client_id", &self.app_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state)
            .append_pair("response_type", "code")
            .append_pair("scope", &LOGIN_SCOPES.join(","));
        if rerequest {
            url.query_pairs_mut().append_pair("auth_type", "rerequest");
        }
        url
    }

    /// What the person granted and declined (`GET /me/permissions`: `permission` and `status`
    /// `granted`/`declined`, https://developers.facebook.com/docs/graph-api/reference/user/permissions/).
    pub async fn permissions(&self, user_token: &SecretString) -> Result<Vec<Permission>, Error> {
        let req = self.request(Method::GET, &["me", "permissions"], Some(user_token));
        let list: DataList<Permission> = self.call("me/permissions", req).await?;
        Ok(list.data)
    }

    /// The app-level webhook subscriptions (`GET /{app-id}/subscriptions` with the app token):
    /// one per object, with its callback URL and fields
    /// (https://developers.facebook.com/docs/graph-api/reference/app/subscriptions/).
    pub async fn app_subscriptions(&self) -> Result<Vec<AppSubscription>, Error> {
        let app_token = self.app_token();
        let req = self.request(
            Method::GET,
            &[self.app_id.as_str(), "subscriptions"],
            Some(&app_token),
        );
        let list: DataList<AppSubscription> = self.call("app subscriptions", req).await?;
        Ok(list.data)
    }

    /// Sets the app-level `page` subscription: Meta calls `callback_url` with a verification
    /// GET at once and refuses the subscription when it does not answer the challenge.
    pub async fn set_app_page_subscription(
        &self,
        callback_url: &str,
        fields: &[&str],
        verify_token: &SecretString,
    ) -> Result<(), Error> {
        let app_token = self.app_token();
        let req = self
            .request(
                Method::POST,
                &[self.app_id.as_str(), "subscriptions"],
                Some(&app_token),
            )
            .form(&[
                ("object", "page"),
                ("callback_url", callback_url),
                ("fields", &fields.join(",")),
                ("verify_token", verify_token.expose_secret()),
            ]);
        self.call_success("set app subscription", req).await
    }

    /// Removes a person's whole grant with the app token (`DELETE /{user-id}/permissions`):
    /// works after the person's own token has expired (`docs/messenger.md` §5.7).
    pub async fn revoke_permissions_as_app(&self, fb_user_id: &str) -> Result<(), Error> {
        let app_token = self.app_token();
        let req = self.request(
            Method::DELETE,
            &[fb_user_id, "permissions"],
            Some(&app_token),
        );
        self.call_success("revoke permissions", req).await
    }

    /// Trades the dialog's `code` for a user token. `redirect_uri` must be byte-for-byte the one
    /// the dialog was opened with.
    pub async fn exchange_code(&self, code: &str, redirect_uri: &str) -> Result<UserToken, Error> {
        let req = self
            .request(Method::GET, &["oauth", "access_token"], None)
            .query(&[
                ("client_id", self.app_id.as_str()),
                ("redirect_uri", redirect_uri),
                ("client_secret", self.app_secret.expose_secret()),
                ("code", code),
            ]);
        self.call("oauth code exchange", req).await
    }

    /// Trades a short-lived user token for a long-lived one (about 60 days); page tokens
    /// fetched with a long-lived user token do not expire (`docs/messenger.md` §5.4, §5.5).
    pub async fn exchange_long_lived(&self, short: &SecretString) -> Result<UserToken, Error> {
        let req = self
            .request(Method::GET, &["oauth", "access_token"], None)
            .query(&[
                ("grant_type", "fb_exchange_token"),
                ("client_id", self.app_id.as_str()),
                ("client_secret", self.app_secret.expose_secret()),
                ("fb_exchange_token", short.expose_secret()),
            ]);
        self.call("long-lived token exchange", req).await
    }

    pub async fn me(&self, user_token: &SecretString) -> Result<FbUser, Error> {
        let req = self
            .request(Method::GET, &["me"], Some(user_token))
            .query(&[("fields", "id,name")]);
        self.call("me", req).await
    }

    /// Every page the person can act on, following `paging.next` to the end.
    pub async fn accounts(&self, user_token: &SecretString) -> Result<Vec<PageAccount>, Error> {
        let mut req = self
            .request(Method::GET, &["me", "accounts"], Some(user_token))
            .query(&[("fields", "id,name,access_token,tasks,category")]);
        let mut pages = Vec::new();
        for _ in 0..MAX_ACCOUNT_PAGES {
            let page: AccountsPage = self.call("me/accounts", req).await?;
            let done = page.data.is_empty();
            pages.extend(page.data);
            let Some(next) = page.paging.and_then(|p| p.next).filter(|_| !done) else {
                return Ok(pages);
            };
            req = self.follow(&next, user_token)?;
        }
        debug!(
            pages = pages.len(),
            "me/accounts paging stopped at the limit"
        );
        Ok(pages)
    }

    /// Subscribes the app to the page's webhooks with [`SUBSCRIBED_FIELDS`].
    pub async fn subscribe_app(
        &self,
        page: &PageId,
        page_token: &SecretString,
    ) -> Result<(), Error> {
        let req = self
            .request(
                Method::POST,
                &[page.as_str(), "subscribed_apps"],
                Some(page_token),
            )
            .form(&[("subscribed_fields", SUBSCRIBED_FIELDS.join(","))]);
        self.call_success("subscribe app", req).await
    }

    /// Our app's `subscribed_fields` on the page, or `None` when the app is not subscribed
    /// (Meta drops subscriptions after an hour of failed deliveries, `docs/messenger.md` §2.3).
    pub async fn subscribed_fields(
        &self,
        page: &PageId,
        page_token: &SecretString,
    ) -> Result<Option<Vec<String>>, Error> {
        let req = self.request(
            Method::GET,
            &[page.as_str(), "subscribed_apps"],
            Some(page_token),
        );
        let apps: SubscribedApps = self.call("subscribed apps", req).await?;
        Ok(apps
            .data
            .into_iter()
            .find(|app| id_matches(&app.id, &self.app_id))
            .map(|app| app.subscribed_fields))
    }

    pub async fn unsubscribe_app(
        &self,
        page: &PageId,
        page_token: &SecretString,
    ) -> Result<(), Error> {
        let req = self.request(
            Method::DELETE,
            &[page.as_str(), "subscribed_apps"],
            Some(page_token),
        );
        self.call_success("unsubscribe app", req).await
    }

    /// Removes the app's whole grant (`DELETE /me/permissions`). Meta invalidates the user token
    /// and the page tokens obtained through it.
    pub async fn revoke_permissions(&self, user_token: &SecretString) -> Result<(), Error> {
        let req = self.request(Method::DELETE, &["me", "permissions"], Some(user_token));
        self.call_success("revoke permissions", req).await
    }

    /// Inspects any token with the app token `{app_id}|{app_secret}`. An invalid token is an
    /// `Ok` answer with `is_valid: false` and the reason in `error`.
    pub async fn debug_token(&self, token: &SecretString) -> Result<TokenInfo, Error> {
        let app_token = self.app_token();
        let req = self
            .request(Method::GET, &["debug_token"], Some(&app_token))
            .query(&[("input_token", token.expose_secret())]);
        let answer: DebugToken = self.call("debug_token", req).await?;
        Ok(answer.data)
    }

    /// Inspects the app token itself: a valid answer proves the Graph API is reachable and that
    /// `app_id` and `app_secret` belong together (a wrong secret fails with code 190).
    pub async fn app_token_info(&self) -> Result<TokenInfo, Error> {
        self.debug_token(&self.app_token()).await
    }

    /// Verifies a `signed_request` Meta posted to one of the app's callbacks.
    pub fn verify_signed_request(
        &self,
        raw: &str,
    ) -> Result<signed_request::SignedRequest, signed_request::SignedRequestError> {
        signed_request::verify(self.app_secret.expose_secret(), raw)
    }

    /// The app token `{app_id}|{app_secret}`.
    fn app_token(&self) -> SecretString {
        SecretString::from(format!(
            "{}|{}",
            self.app_id,
            self.app_secret.expose_secret()
        ))
    }

    /// `appsecret_proof` for `token`: lowercase hex HMAC-SHA256 of the token, keyed with the
    /// app secret.
    fn proof(&self, token: &str) -> String {
        appsecret_proof(self.app_secret.expose_secret(), token)
    }

    /// The User Profile API; needs the "Business Asset User Profile Access" feature, and fails
    /// with 2018218 for some accounts (`docs/messenger.md` §9): callers fall back to a placeholder.
    pub async fn user_profile(
        &self,
        psid: &Psid,
        page_token: &SecretString,
    ) -> Result<Profile, Error> {
        let req = self
            .request(Method::GET, &[psid.as_str()], Some(page_token))
            .query(&[("fields", "first_name,last_name,name,profile_pic")]);
        self.call("user profile", req).await
    }

    /// The Instagram professional account linked to the page, `None` when none is: Meta leaves
    /// the field out then (`docs/instagram.md` §2.2). Asked per page, not in the `/me/accounts`
    /// listing, so an Instagram refusal cannot break connecting the page.
    pub async fn instagram_account(
        &self,
        page: &PageId,
        page_token: &SecretString,
    ) -> Result<Option<IgAccount>, Error> {
        #[derive(Deserialize)]
        struct Linked {
            #[serde(default)]
            instagram_business_account: Option<IgAccount>,
        }
        let req = self
            .request(Method::GET, &[page.as_str()], Some(page_token))
            .query(&[("fields", "instagram_business_account{id,username,name}")]);
        let linked: Linked = self.call("instagram account", req).await?;
        Ok(linked.instagram_business_account)
    }

    /// An Instagram user's profile with the linked Page's token (`docs/instagram.md` §5). Fails
    /// with 230 before the person wrote and 9010 for an unknown user: callers fall back to a
    /// placeholder.
    pub async fn instagram_profile(
        &self,
        igsid: &Psid,
        page_token: &SecretString,
    ) -> Result<IgProfile, Error> {
        let req = self
            .request(Method::GET, &[igsid.as_str()], Some(page_token))
            .query(&[("fields", "name,username")]);
        self.call("instagram profile", req).await
    }

    /// Uploads a file for Instagram (multipart `POST /{page}/message_attachments` with
    /// `platform=instagram`, `docs/instagram.md` §6.4) and returns its `attachment_id`, which a
    /// [`Content::AttachmentId`] send then refers to.
    #[allow(clippy::too_many_arguments)] // the upload's own parameter list
    pub async fn upload_attachment(
        &self,
        page: &PageId,
        page_token: &SecretString,
        kind: AttachmentKind,
        file_name: &str,
        mime: &str,
        bytes: Bytes,
    ) -> Result<String, Error> {
        #[derive(Deserialize)]
        struct Uploaded {
            attachment_id: String,
        }
        let part =
            |bytes: Bytes| reqwest::multipart::Part::stream(bytes).file_name(file_name.to_owned());
        let file = part(bytes.clone())
            .mime_str(mime)
            .unwrap_or_else(|_| part(bytes));
        let message =
            json!({ "attachment": { "type": kind.as_str(), "payload": { "is_reusable": false } } });
        let form = reqwest::multipart::Form::new()
            .text("platform", "instagram")
            .text("message", message.to_string())
            .part("filedata", file);
        let req = self
            .request(
                Method::POST,
                &[page.as_str(), "message_attachments"],
                Some(page_token),
            )
            .multipart(form);
        let uploaded: Uploaded = self.call("upload attachment", req).await?;
        Ok(uploaded.attachment_id)
    }

    /// `POST /{page}/messages` with a JSON body. Not idempotent: a retry after a timeout can
    /// deliver twice (`docs/messenger.md` §4.3).
    pub async fn send_message(
        &self,
        page: &PageId,
        page_token: &SecretString,
        req: &SendRequest,
    ) -> Result<SendResponse, Error> {
        let mut message = match &req.content {
            Content::Text(text) => json!({ "text": text }),
            Content::AttachmentUrl { kind, url } => json!({
                "attachment": { "type": kind.as_str(), "payload": { "url": url, "is_reusable": false } }
            }),
            Content::AttachmentId { kind, id } => json!({
                "attachment": { "type": kind.as_str(), "payload": { "attachment_id": id } }
            }),
        };
        if let Some(metadata) = &req.metadata {
            message["metadata"] = json!(metadata);
        }
        let mut body = json!({
            "recipient": { "id": req.recipient.as_str() },
            "messaging_type": req.messaging.messaging_type(),
            "message": message,
        });
        if let Some(tag) = req.messaging.tag() {
            body["tag"] = json!(tag);
        }
        let http = self
            .request(Method::POST, &[page.as_str(), "messages"], Some(page_token))
            .json(&body);
        self.call("send message", http).await
    }

    /// Uploads a file with the message (multipart, field `filedata`), the way the Send API
    /// takes files that have no public URL (`docs/messenger.md` §3.4). At most 25 MB.
    #[allow(clippy::too_many_arguments)] // the Send API's own parameter list
    pub async fn send_attachment(
        &self,
        page: &PageId,
        page_token: &SecretString,
        recipient: &Psid,
        messaging: &Messaging,
        kind: AttachmentKind,
        file_name: &str,
        mime: &str,
        bytes: Bytes,
    ) -> Result<SendResponse, Error> {
        let part =
            |bytes: Bytes| reqwest::multipart::Part::stream(bytes).file_name(file_name.to_owned());
        // An unparsable MIME type from a chat upload should not stop the file: send it untyped.
        // (`Bytes` clones share the buffer.)
        let file = part(bytes.clone())
            .mime_str(mime)
            .unwrap_or_else(|_| part(bytes));
        let message =
            json!({ "attachment": { "type": kind.as_str(), "payload": { "is_reusable": false } } });
        let mut form = reqwest::multipart::Form::new()
            .text("recipient", json!({ "id": recipient.as_str() }).to_string())
            .text("messaging_type", messaging.messaging_type());
        if let Some(tag) = messaging.tag() {
            form = form.text("tag", tag);
        }
        let form = form
            .text("message", message.to_string())
            .part("filedata", file);
        let req = self
            .request(Method::POST, &[page.as_str(), "messages"], Some(page_token))
            .multipart(form);
        self.call("send attachment", req).await
    }

    pub async fn sender_action(
        &self,
        page: &PageId,
        page_token: &SecretString,
        recipient: &Psid,
        action: SenderAction,
    ) -> Result<(), Error> {
        let body =
            json!({ "recipient": { "id": recipient.as_str() }, "sender_action": action.as_str() });
        let req = self
            .request(Method::POST, &[page.as_str(), "messages"], Some(page_token))
            .json(&body);
        let _: serde_json::Value = self.call("sender action", req).await?;
        Ok(())
    }

    /// The page's reaction on message `message_id` of the conversation: `react` with `emoji`, or
    /// `unreact` (`None`), which takes the `message_id` only. The page has one reaction per
    /// message; reacting again replaces it
    /// (<https://developers.facebook.com/docs/messenger-platform/send-messages/sender-actions/>).
    pub async fn react(
        &self,
        page: &PageId,
        page_token: &SecretString,
        recipient: &Psid,
        message_id: &str,
        emoji: Option<&str>,
    ) -> Result<(), Error> {
        let body = match emoji {
            Some(emoji) => json!({
                "recipient": { "id": recipient.as_str() },
                "sender_action": "react",
                "payload": { "message_id": message_id, "reaction": emoji },
            }),
            None => json!({
                "recipient": { "id": recipient.as_str() },
                "sender_action": "unreact",
                "payload": { "message_id": message_id },
            }),
        };
        let req = self
            .request(Method::POST, &[page.as_str(), "messages"], Some(page_token))
            .json(&body);
        let _: serde_json::Value = self.call("reaction", req).await?;
        Ok(())
    }

    fn request(
        &self,
        method: Method,
        path: &[&str],
        token: Option<&SecretString>,
    ) -> RequestBuilder {
        let url = versioned(&self.graph_url, &self.api_version, path);
        let req = self.http.request(method, url);
        match token {
            Some(token) => req
                .bearer_auth(token.expose_secret())
                .query(&[("appsecret_proof", self.proof(token.expose_secret()))]),
            None => req,
        }
    }

    /// A request for a `paging.next` link. Meta's links already carry the token; the link is
    /// only followed when it points at the configured Graph host, so a token never leaves it.
    fn follow(&self, next: &str, token: &SecretString) -> Result<RequestBuilder, Error> {
        let url = Url::parse(next).map_err(|_| Error::Decode {
            what: "me/accounts",
            detail: "paging.next is not a URL".to_owned(),
        })?;
        if url.origin() != self.graph_url.origin() {
            return Err(Error::Decode {
                what: "me/accounts",
                detail: "paging.next points outside the graph api".to_owned(),
            });
        }
        let link_token = url
            .query_pairs()
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned());
        let has_proof = url.query_pairs().any(|(k, _)| k == "appsecret_proof");
        let proof = self.proof(link_token.as_deref().unwrap_or(token.expose_secret()));
        let mut req = self.http.get(url);
        if link_token.is_none() {
            req = req.bearer_auth(token.expose_secret());
        }
        if !has_proof {
            req = req.query(&[("appsecret_proof", proof)]);
        }
        Ok(req)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        what: &'static str,
        req: RequestBuilder,
    ) -> Result<T, Error> {
        let response = req.send().await.map_err(Error::from_reqwest)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(Error::from_reqwest)?;
        debug!(call = what, status = status.as_u16(), "graph api call");
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| Error::decode(what, &e));
        }
        #[derive(Deserialize)]
        struct Envelope {
            error: GraphError,
        }
        match serde_json::from_slice::<Envelope>(&body) {
            Ok(envelope) => Err(Error::Graph {
                status: status.as_u16(),
                error: Box::new(envelope.error),
                retry_after: error::retry_after_from_headers(&headers),
            }),
            Err(_) => Err(Error::Http {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body)
                    .chars()
                    .take(BODY_EXCERPT)
                    .collect(),
            }),
        }
    }

    /// Calls that answer `{"success": true}`; the docs also show `"true"` as a string and the
    /// permissions edge a bare `true` (`docs/messenger.md` §6, §5.7).
    async fn call_success(&self, what: &'static str, req: RequestBuilder) -> Result<(), Error> {
        let answer: serde_json::Value = self.call(what, req).await?;
        let flag = answer.get("success").unwrap_or(&answer);
        match flag {
            serde_json::Value::Bool(true) => Ok(()),
            serde_json::Value::String(s) if s == "true" => Ok(()),
            _ => Err(Error::Decode {
                what,
                detail: "the answer did not report success".to_owned(),
            }),
        }
    }
}

/// `{base}/{version}/{path…}`, each segment percent-encoded, keeping any path prefix of `base`.
fn versioned(base: &Url, version: &str, path: &[&str]) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push(version).extend(path);
    }
    url
}

/// Lowercase hex HMAC-SHA256 of `token` keyed with `app_secret`: Meta's `appsecret_proof`
/// (https://developers.facebook.com/docs/graph-api/security#appsecret_proof).
pub fn appsecret_proof(app_secret: &str, token: &str) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(app_secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn id_matches(id: &serde_json::Value, app_id: &str) -> bool {
    match id {
        serde_json::Value::String(s) => s == app_id,
        serde_json::Value::Number(n) => n.to_string() == app_id,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appsecret_proof_is_hex_hmac_sha256_of_the_token() {
        // HMAC-SHA256(key "secret", "EAAB"), computed with Python's hmac module.
        assert_eq!(
            appsecret_proof("secret", "EAAB"),
            "d74f12571ff86b9314ba90b9bc99b872b0e2586ef3b2dbb825531d5278001f28"
        );
    }

    #[test]
    fn versioned_urls_keep_prefixes_and_escape_segments() {
        let cases = [
            (
                "https://graph.facebook.com",
                &["me", "accounts"][..],
                "https://graph.facebook.com/v23.0/me/accounts",
            ),
            (
                "http://127.0.0.1:9/prefix/",
                &["1/2", "messages"][..],
                "http://127.0.0.1:9/prefix/v23.0/1%2F2/messages",
            ),
            (
                "http://127.0.0.1:9/?x=1",
                &["debug_token"][..],
                "http://127.0.0.1:9/v23.0/debug_token",
            ),
        ];
        for (base, path, want) in cases {
            let base = Url::parse(base).expect("static url");
            assert_eq!(versioned(&base, "v23.0", path).as_str(), want);
        }
    }
}
