//! Connecting and disconnecting Facebook Pages, and keeping their tokens healthy.
//!
//! `authorize` hands an admin a Facebook Login link bound to a single-use state; the OAuth
//! callback completes it here: code → short-lived → long-lived user token, every page of
//! `/me/accounts`, a webhook subscription per page read back to verify it, and a report in the
//! admin's room. `unauthorize` undoes it in the only safe order: unsubscribe each page with its
//! own token, then revoke the grant (revoking first would kill the page tokens and leave the pages
//! subscribed), then forget the tokens. Page configuration survives so a later `authorize`
//! restores it.
//!
//! A periodic health check (`check_health`, run by [`health_loop`]) asks Facebook about every
//! connected page: a dead token marks the page "needs authorization", and a webhook subscription
//! Meta dropped silently is put back, so admins hear of both before a customer does. It also
//! keeps the app-level `page` webhook subscription complete (a field reaches the gateway only
//! when it is subscribed at both levels), without ever overwriting a callback that points
//! elsewhere.
//!
//! Meta's callbacks: a person who removes the app (`deauthorize`) loses the pages connected
//! through their grant; a data deletion request (`delete_data`) removes what the gateway holds
//! about them and is answered with a confirmation code whose status page stays readable.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use url::Url;

mod policy;

use crate::health::now_ms;
use crate::ids::{PageId, RoomId, UserId};
use crate::messenger::graph::{self, GraphClient};
use crate::notices::Notifier;
use crate::store::{self, DeletionRequest, Grant, OAuthState, Page, PageStatus, Platform, Store};

/// How long an authorization link stays valid.
pub const STATE_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The callback path; `redirect_uri` is `public_url` + this.
pub const CALLBACK_PATH: &str = "/oauth/facebook/callback";
/// Meta's Deauthorize Callback URL is `public_url` + this.
pub const DEAUTHORIZE_PATH: &str = "/oauth/facebook/deauthorize";
/// Meta's Data Deletion Request URL is `public_url` + this; `/{code}` shows a request's status.
pub const DATA_DELETION_PATH: &str = "/oauth/facebook/data-deletion";
/// Where Meta delivers webhooks: the app-level subscription's `callback_url` is `public_url` + this.
pub const WEBHOOK_PATH: &str = "/webhooks/messenger";

/// Permissions without which no page can be connected. The others are optional:
/// without `business_management` only pages owned by a business portfolio are missing, and
/// without the Instagram ones the pages connect without their Instagram accounts.
const REQUIRED_SCOPES: &[&str] = &[
    "pages_show_list",
    "pages_messaging",
    "pages_manage_metadata",
    "pages_read_engagement",
];

/// What the OAuth dialog sent back to the callback.
pub enum DialogOutcome {
    /// The person approved: exchange this code.
    Approved { code: String },
    /// The person declined or the dialog failed (`error`, `error_reason`, `error_description`).
    Refused {
        error: String,
        description: Option<String>,
    },
}

/// What the browser is shown after the callback.
#[derive(Debug, PartialEq, Eq)]
pub enum CallbackPage {
    /// Pages were connected (names); failures are listed too.
    Connected {
        pages: Vec<String>,
        failures: Vec<String>,
    },
    /// The person declined in the dialog.
    Declined,
    /// The link is unknown, used, or expired: a 4xx, nothing changed.
    BadState { reason: &'static str },
    /// Facebook refused a step; nothing or only part was connected.
    Failed { reason: String },
}

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("{}", .0.describe())]
    Graph(#[from] graph::Error),
    /// The subscription read back does not match what was asked.
    #[error("{0}")]
    Unverified(String),
    /// The person declined permissions no page can work without.
    #[error("{0}")]
    Declined(String),
}

/// What a Meta callback with a `signed_request` did.
#[derive(Debug, PartialEq, Eq)]
pub struct DeletionReceipt {
    pub code: String,
    /// `public_url` + `/oauth/facebook/data-deletion/{code}`.
    pub status_url: String,
}

/// Connects pages; shared by the admin commands, the HTTP callback and the health check.
pub struct Pages {
    graph: GraphClient,
    store: Store,
    chat: Notifier,
    redirect_uri: String,
    /// `public_url` without its trailing slash.
    public_url: String,
    verify_token: SecretString,
    /// Why the app-level webhook subscription is not as the gateway needs it, when it is not;
    /// read by `status`.
    app_webhooks: std::sync::Mutex<Option<String>>,
    /// Meta's last policy warning or block per page (`messaging_policy_enforcement`), for
    /// `status`; an `unblock` clears it.
    policy: std::sync::Mutex<std::collections::HashMap<PageId, String>>,
    /// Held while pages are connected, disconnected or checked, so the health check never sees
    /// a page between "stored" and "subscribed" (and re-subscribes it) or re-subscribes a page
    /// that `unauthorize` is taking down.
    changes: tokio::sync::Mutex<()>,
}

impl Pages {
    pub fn new(
        graph: GraphClient,
        store: Store,
        chat: Notifier,
        public_url: &Url,
        verify_token: SecretString,
    ) -> Pages {
        let public_url = public_url.as_str().trim_end_matches('/').to_owned();
        Pages {
            graph,
            store,
            chat,
            redirect_uri: format!("{public_url}{CALLBACK_PATH}"),
            public_url,
            verify_token,
            app_webhooks: std::sync::Mutex::new(None),
            policy: std::sync::Mutex::new(std::collections::HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// Why the app-level webhook subscription is not what the gateway needs, as last seen.
    pub fn app_webhook_problem(&self) -> Option<String> {
        self.app_webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Creates a single-use state bound to the admin and room, and returns the Login link.
    pub async fn start_authorization(
        &self,
        admin_username: &str,
        admin_id: &UserId,
        room: &RoomId,
    ) -> Result<Url, Error> {
        self.login_link(admin_username, admin_id, room, false).await
    }

    /// A Login link; `rerequest` asks again for permissions the person declined.
    async fn login_link(
        &self,
        admin_username: &str,
        admin_id: &UserId,
        room: &RoomId,
        rerequest: bool,
    ) -> Result<Url, Error> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let state = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        self.store.put_oauth_state(
            &state,
            &OAuthState {
                admin_username: admin_username.to_owned(),
                admin_user_id: admin_id.clone(),
                room: room.clone(),
                expires_ms: now_ms() + STATE_LIFETIME.as_millis() as u64,
            },
        )?;
        self.store.prune_oauth_states(now_ms())?;
        self.store.sync().await?;
        Ok(self
            .graph
            .login_dialog_url(&self.redirect_uri, &state, rerequest))
    }

    /// Completes an authorization from the callback. A bad state changes nothing.
    pub async fn complete_authorization(
        &self,
        state: &str,
        outcome: DialogOutcome,
    ) -> CallbackPage {
        let record = match self.store.take_oauth_state(state) {
            Ok(Some(record)) => record,
            Ok(None) => {
                return CallbackPage::BadState {
                    reason: "this link was already used or was not issued by this gateway",
                };
            }
            Err(err) => {
                warn!(error = %err, "cannot read the oauth state");
                return CallbackPage::Failed {
                    reason: format!("the gateway's store failed: {err}"),
                };
            }
        };
        if let Err(err) = self.store.sync().await {
            warn!(error = %err, "cannot persist the used oauth state");
        }
        if record.expires_ms < now_ms() {
            warn!(user = %record.admin_username, "facebook login link used after it expired");
            self.chat
                .reply(&record.room, "That Facebook Login link expired (links last 15 minutes). Run `/facebook authorize` for a new one.")
                .await;
            return CallbackPage::BadState {
                reason: "this link expired",
            };
        }
        let code = match outcome {
            DialogOutcome::Approved { code } => code,
            DialogOutcome::Refused { error, description } => {
                info!(target: "audit", user = %record.admin_username, error = %error, "facebook login declined");
                let detail = description.map(|d| format!(" ({d})")).unwrap_or_default();
                self.chat
                    .reply(&record.room, &format!("Facebook Login was cancelled{detail}: no page was connected. Run `/facebook authorize` to try again, and accept every permission asked for."))
                    .await;
                return CallbackPage::Declined;
            }
        };
        // App level first: a field reaches the gateway only when it is subscribed at both levels.
        let app_problem = self.ensure_app_webhooks().await;
        let connected = {
            let _changing = self.changes.lock().await;
            self.connect(&record, &code).await
        };
        match connected {
            Ok((pages, failures, declined)) => {
                info!(target: "audit", user = %record.admin_username, action = "authorize", pages = %pages.join(", "), failed = failures.len(), "facebook login completed");
                let mut text = connected_message(&pages, &failures);
                if !declined.is_empty() {
                    text.push('\n');
                    text.push_str(&self.declined_message(&record, &declined).await);
                }
                if let Some(problem) = app_problem {
                    text.push_str(&format!("\n✗ {problem}"));
                }
                self.chat.reply(&record.room, &text).await;
                CallbackPage::Connected { pages, failures }
            }
            Err(Error::Declined(declined)) => {
                info!(target: "audit", user = %record.admin_username, action = "authorize", declined = %declined, "facebook login lacked permissions");
                let names: Vec<&str> = declined.split(',').collect();
                let text = self.declined_message(&record, &names).await;
                self.chat.reply(&record.room, &text).await;
                CallbackPage::Failed {
                    reason: format!(
                        "these permissions were declined: {declined}; the gateway cannot connect a page without them. A new link was sent to your Rocket.Chat room"
                    ),
                }
            }
            Err(err) => {
                info!(target: "audit", user = %record.admin_username, action = "authorize", error = %err, "facebook login failed");
                self.chat
                    .reply(&record.room, &format!("Connecting your pages failed: {err}. Run `/facebook authorize` to try again."))
                    .await;
                CallbackPage::Failed {
                    reason: err.to_string(),
                }
            }
        }
    }

    /// Exchanges the code, stores every page with its token, subscribes each and verifies it.
    /// Also returns the optional permissions that were declined.
    async fn connect(
        &self,
        record: &OAuthState,
        code: &str,
    ) -> Result<(Vec<String>, Vec<String>, Vec<&'static str>), Error> {
        let short = self.graph.exchange_code(code, &self.redirect_uri).await?;
        let long = self.graph.exchange_long_lived(&short.access_token).await?;
        // The dialog lets people untick single permissions; what was granted is only known by
        // asking (https://developers.facebook.com/docs/facebook-login/guides/permissions/request-revoke).
        let granted: Vec<String> = self
            .graph
            .permissions(&long.access_token)
            .await?
            .into_iter()
            .filter(|p| p.status == "granted")
            .map(|p| p.permission)
            .collect();
        let declined: Vec<&'static str> = graph::LOGIN_SCOPES
            .iter()
            .copied()
            .filter(|scope| !granted.iter().any(|g| g == scope))
            .collect();
        let required_missing: Vec<&str> = declined
            .iter()
            .copied()
            .filter(|scope| REQUIRED_SCOPES.contains(scope))
            .collect();
        if !required_missing.is_empty() {
            // Nothing is kept: the grant cannot connect a page.
            return Err(Error::Declined(declined.join(",")));
        }
        let user = self.graph.me(&long.access_token).await?;
        let accounts = self.graph.accounts(&long.access_token).await?;
        self.store.put_grant(&Grant {
            fb_user_id: user.id.clone(),
            user_token: long.access_token.clone(),
            admin_username: record.admin_username.clone(),
            created_ms: now_ms(),
        })?;
        let mut connected = Vec::new();
        let mut failures = Vec::new();
        for account in accounts {
            let label = format!("{} ({})", account.name, account.id);
            match self
                .connect_page(
                    record,
                    &user.id,
                    &account.id,
                    &account.name,
                    &account.access_token,
                )
                .await
            {
                Ok(()) => {
                    info!(page = %account.id, "page connected and subscribed");
                    connected.push(label);
                    if !granted.iter().any(|g| g == "instagram_basic") {
                        continue;
                    }
                    match self
                        .connect_instagram(
                            record,
                            &user.id,
                            &account.id,
                            &account.name,
                            &account.access_token,
                        )
                        .await
                    {
                        Ok((linked, gone)) => {
                            connected.extend(linked);
                            failures.extend(gone);
                        }
                        Err(err) => {
                            warn!(page = %account.id, error = %err, "the page's Instagram account could not be connected");
                            failures.push(format!(
                                "{}: Instagram not connected: {err}; run `/facebook authorize` again and keep the Instagram permissions ticked",
                                account.name
                            ));
                        }
                    }
                }
                Err(err) => {
                    warn!(page = %account.id, error = %err, "page could not be connected");
                    failures.push(format!("{label}: {err}"));
                }
            }
        }
        self.store.sync().await?;
        Ok((connected, failures, declined))
    }

    /// Names what each declined permission is for and hands out a link that asks again.
    async fn declined_message(&self, record: &OAuthState, declined: &[&str]) -> String {
        let mut text = String::from("You declined permissions the gateway needs:");
        for scope in declined {
            text.push_str(&format!("\n• `{scope}`: {}", scope_purpose(scope)));
        }
        match self
            .login_link(
                &record.admin_username,
                &record.admin_user_id,
                &record.room,
                true,
            )
            .await
        {
            Ok(link) => text.push_str(&format!(
                "\nOpen this link and allow them (valid 15 minutes): {link}"
            )),
            Err(err) => text.push_str(&format!(
                "\nA new link could not be made ({err}); run `/facebook authorize` and allow them."
            )),
        }
        text
    }

    async fn connect_page(
        &self,
        record: &OAuthState,
        grant: &str,
        id: &PageId,
        name: &str,
        token: &SecretString,
    ) -> Result<(), Error> {
        let previous = self.store.page(id)?;
        let mut page = previous.unwrap_or_else(|| Page::new(id.clone(), name.to_owned()));
        page.name = name.to_owned();
        page.token = Some(token.clone());
        page.grant = Some(grant.to_owned());
        page.status = PageStatus::Connected;
        page.connected_by = Some(record.admin_username.clone());
        page.connected_at_ms = Some(now_ms());
        if !page.subscribers.contains(&record.admin_username) {
            page.subscribers.push(record.admin_username.clone());
        }
        // Stored before subscribing: a webhook may arrive as soon as the subscription exists.
        self.store.put_page(&page)?;
        self.subscribe_and_verify(id, token).await
    }

    /// Connects the Instagram professional account linked to a just-connected Page as its own
    /// record (`docs/instagram.md` §2.2): the Page's token and grant, the settings of an earlier
    /// connection kept. Nothing is subscribed for it: the Page's subscription and the app-level
    /// `instagram` object carry its webhooks (§2.3). An account linked to the Page before and not
    /// now is disconnected (settings kept). Returns the report's line for the account, and lines
    /// for accounts that were unlinked.
    async fn connect_instagram(
        &self,
        record: &OAuthState,
        grant: &str,
        page_id: &PageId,
        page_name: &str,
        token: &SecretString,
    ) -> Result<(Option<String>, Vec<String>), Error> {
        let linked = self.graph.instagram_account(page_id, token).await?;
        let mut gone = Vec::new();
        for old in self.store.pages()? {
            let was_linked =
                matches!(&old.platform, Platform::Instagram { page, .. } if page == page_id);
            if !was_linked
                || linked.as_ref().is_some_and(|ig| ig.id == old.id)
                || old.token.is_none()
            {
                continue;
            }
            gone.push(self.disconnect_unlinked(&old, page_id, page_name)?);
        }
        let Some(ig) = linked else {
            return Ok((None, gone));
        };
        let mut account = self
            .store
            .page(&ig.id)?
            .unwrap_or_else(|| Page::new(ig.id.clone(), String::new()));
        account.name = ig
            .name
            .clone()
            .or_else(|| ig.username.clone())
            .unwrap_or_else(|| ig.id.to_string());
        account.platform = Platform::Instagram {
            page: page_id.clone(),
            username: ig.username.clone(),
        };
        account.token = Some(token.clone());
        account.grant = Some(grant.to_owned());
        account.status = PageStatus::Connected;
        account.connected_by = Some(record.admin_username.clone());
        account.connected_at_ms = Some(now_ms());
        if !account.subscribers.contains(&record.admin_username) {
            account.subscribers.push(record.admin_username.clone());
        }
        // Stored before answering: its webhooks may arrive at once.
        self.store.put_page(&account)?;
        info!(account = %account.id, page = %page_id, "instagram account connected");
        Ok((
            Some(format!(
                "{} (Instagram, via {page_name}) ({})",
                account.label(),
                account.id
            )),
            gone,
        ))
    }

    /// Disconnects an Instagram account no longer linked to its Page (in the Page's settings, or
    /// moved to another Page), settings kept; returns the line that tells its admins.
    fn disconnect_unlinked(
        &self,
        account: &Page,
        page_id: &PageId,
        page_name: &str,
    ) -> Result<String, Error> {
        self.store.update_page(&account.id, |p| {
            p.token = None;
            p.status = PageStatus::Disconnected;
        })?;
        warn!(account = %account.id, page = %page_id, "instagram account no longer linked to the page; disconnected");
        Ok(format!(
            "{} ({}): no longer linked to {page_name}, so it was disconnected (settings kept; link it again in the Page's settings and run `/facebook authorize`)",
            account.label(),
            account.id
        ))
    }

    /// One Instagram account of [`Pages::check_health`]: the link to its Page is the one thing
    /// that changes on Instagram's side alone. A failed lookup changes nothing until the next
    /// check.
    async fn check_instagram_link(
        &self,
        account: &Page,
        token: &SecretString,
    ) -> Result<(), Error> {
        let page_id = account.send_node();
        let linked = match self.graph.instagram_account(page_id, token).await {
            Ok(linked) => linked,
            Err(err) => {
                warn!(account = %account.id, error = %err.describe(), "instagram link check failed");
                return Ok(());
            }
        };
        if linked.is_some_and(|ig| ig.id == account.id) {
            return Ok(());
        }
        let page_name = self
            .store
            .page(page_id)?
            .map_or_else(|| page_id.to_string(), |page| page.name);
        let line = self.disconnect_unlinked(account, page_id, &page_name)?;
        self.chat
            .notify(&account.subscribers, &format!("Instagram account {line}"))
            .await;
        Ok(())
    }

    /// Subscribes the app to the page's webhooks and reads the subscription back: Meta answers
    /// `success` even when fields are not enabled for the app, so only the read-back proves it.
    async fn subscribe_and_verify(&self, id: &PageId, token: &SecretString) -> Result<(), Error> {
        self.graph.subscribe_app(id, token).await?;
        match self.graph.subscribed_fields(id, token).await? {
            Some(fields) => match missing_fields(&fields) {
                missing if missing.is_empty() => Ok(()),
                missing => Err(Error::Unverified(format!(
                    "the webhook subscription lacks {}; Meta keeps only fields the app subscribes to as well: run `omni-gateway check` and fix its `app webhooks` line",
                    missing.join(",")
                ))),
            },
            None => Err(Error::Unverified(
                "Facebook does not list the app on the page after subscribing".into(),
            )),
        }
    }

    /// Disconnects one page or all: unsubscribe each with its page token, then revoke the grant
    /// when no page of it is left, then forget the tokens. Returns the report for chat.
    pub async fn unauthorize(
        &self,
        username: &str,
        only: Option<&PageId>,
    ) -> Result<String, Error> {
        let _changing = self.changes.lock().await;
        let pages: Vec<Page> =
            self.store
                .pages()?
                .into_iter()
                .filter(|p| {
                    // Disconnecting a Page takes its Instagram account along (same token).
                    p.token.is_some() && only.is_none_or(|id| {
                        &p.id == id
                            || matches!(&p.platform, Platform::Instagram { page, .. } if page == id)
                    })
                })
                .collect();
        if pages.is_empty() {
            return Ok(match only {
                Some(id) => {
                    format!("Page {id} is not connected, so there is nothing to disconnect.")
                }
                None => "No page is connected, so there is nothing to disconnect.".into(),
            });
        }
        let mut lines = Vec::new();
        let mut grants = Vec::new();
        for page in &pages {
            let Some(token) = &page.token else { continue };
            if page.is_instagram() {
                // No subscription of its own: never `subscribed_apps` on an Instagram id.
                lines.push(format!("✓ {} ({}) disconnected", page.label(), page.id));
            } else {
                match self.graph.unsubscribe_app(&page.id, token).await {
                    Ok(()) => lines.push(format!("✓ {} ({}) unsubscribed", page.name, page.id)),
                    // An invalid token means Facebook already dropped the page's access; forget it anyway.
                    Err(err) if err.is_token_invalid() => lines.push(format!(
                        "✓ {} ({}) was no longer authorized",
                        page.name, page.id
                    )),
                    Err(err) => {
                        lines.push(format!(
                            "✗ {} ({}) could not be unsubscribed: {}",
                            page.name,
                            page.id,
                            err.describe()
                        ));
                        continue;
                    }
                }
            }
            self.store.update_page(&page.id, |p| {
                p.token = None;
                p.status = PageStatus::Disconnected;
            })?;
            info!(user = %username, page = %page.id, "page disconnected");
            if let Some(grant) = &page.grant {
                if !grants.contains(grant) {
                    grants.push(grant.clone());
                }
            }
        }
        for grant_id in grants {
            let still_used = self
                .store
                .pages()?
                .iter()
                .any(|p| p.token.is_some() && p.grant.as_ref() == Some(&grant_id));
            if still_used {
                continue;
            }
            let Some(grant) = self.store.grant(&grant_id)? else {
                continue;
            };
            // The user token lasts about 60 days; once it is dead the app token revokes instead.
            let revoked = match self.graph.revoke_permissions(&grant.user_token).await {
                Err(err) if err.is_token_invalid() => {
                    self.graph
                        .revoke_permissions_as_app(&grant.fb_user_id)
                        .await
                }
                other => other,
            };
            match revoked {
                Ok(()) => lines.push("✓ the app's Facebook permissions were revoked".into()),
                Err(err) if err.is_token_invalid() => lines.push("✓ the Facebook grant had already ended".into()),
                Err(err) => lines.push(format!("✗ revoking the Facebook permissions failed: {}; remove the app under Facebook Settings → Business Integrations", err.describe())),
            }
            self.store.remove_grant(&grant_id)?;
        }
        self.store.sync().await?;
        lines.push("Page settings are kept: `/facebook authorize` restores them.".into());
        Ok(lines.join("\n"))
    }

    /// Asks Facebook about every connected page: is its token still valid (`debug_token`), and
    /// is the app still subscribed with every field (`subscribed_apps`)? A dead token marks the
    /// page "needs authorization" and tells its admins; a dropped or partial subscription is
    /// put back and verified, and the admins are told it was repaired (or why it could not be).
    /// Pages that already need authorization are left alone: their admins were told.
    pub async fn check_health(&self) -> Result<(), Error> {
        let pages = self.store.pages()?;
        if pages.iter().any(|p| p.token.is_some()) {
            let before = self.app_webhook_problem();
            if let Some(problem) = self.ensure_app_webhooks().await {
                if before.as_deref() != Some(problem.as_str()) {
                    let admins = admins_of(&pages);
                    self.chat.notify(&admins, &problem).await;
                }
            }
        }
        for id in pages.into_iter().map(|p| p.id) {
            self.check_page(&id).await?;
        }
        Ok(())
    }

    /// Reads the app-level `page` subscription (`GET /{app-id}/subscriptions`) and sets it when
    /// it is missing, has no callback or lacks fields (`POST`, which Meta verifies against our
    /// webhook at once). A callback pointing elsewhere is never overwritten. Returns the problem
    /// left, also kept for `status`.
    pub async fn ensure_app_webhooks(&self) -> Option<String> {
        let callback = format!("{}{WEBHOOK_PATH}", self.public_url);
        let problem = match self.graph.app_subscriptions().await {
            Err(err) => Some(format!(
                "The app-level webhook subscription could not be read: {}",
                err.describe()
            )),
            Ok(subs) => {
                let page = subs.into_iter().find(|s| s.object == "page");
                let current = page.as_ref().and_then(|p| p.callback_url.clone());
                let fields: Vec<String> = page
                    .map(|p| p.fields.into_iter().map(|f| f.name).collect())
                    .unwrap_or_default();
                let missing = missing_fields(&fields);
                match current.filter(|url| !url.is_empty()) {
                    Some(url) if url != callback => Some(format!(
                        "The Meta app's page webhooks go to {url}, not to this gateway ({callback}); the gateway leaves it alone. Change the callback URL under Webhooks → Page in the app dashboard if this gateway should receive them."
                    )),
                    Some(_) if missing.is_empty() => None,
                    _ => {
                        // Fields someone else subscribed stay subscribed.
                        let mut wanted: Vec<&str> = fields.iter().map(String::as_str).collect();
                        wanted.extend(missing.iter().copied());
                        match self
                            .graph
                            .set_app_page_subscription(&callback, &wanted, &self.verify_token)
                            .await
                        {
                            Ok(()) => {
                                info!(callback = %callback, added = %missing.join(","), "app-level page webhooks subscribed");
                                None
                            }
                            Err(err) => Some(format!(
                                "The app-level page webhooks could not be subscribed: {}. Meta calls {callback} to verify it: it must be reachable over https with [facebook].verify_token.",
                                err.describe()
                            )),
                        }
                    }
                }
            }
        };
        if let Some(problem) = &problem {
            warn!(problem = %problem, "app-level webhook subscription");
        }
        *self.app_webhooks.lock().unwrap_or_else(|p| p.into_inner()) = problem.clone();
        problem
    }

    /// Meta's Deauthorize callback: the person removed the app, so their grant is gone. The pages
    /// connected through it are disconnected (no Graph call: their tokens died with the grant)
    /// and their admins are told.
    pub async fn deauthorize(&self, fb_user_id: &str) -> Result<(), Error> {
        let _changing = self.changes.lock().await;
        let (pages, grant) = self.drop_grant(fb_user_id)?;
        self.store.sync().await?;
        info!(target: "audit", action = "deauthorize", pages = pages.len(), "a person removed the app on Facebook");
        if pages.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = pages
            .iter()
            .map(|p| format!("*{}* ({})", p.name, p.id))
            .collect();
        let mut admins = admins_of(&pages);
        if let Some(grant) = grant {
            if !admins.contains(&grant.admin_username) {
                admins.push(grant.admin_username);
            }
        }
        let text = format!(
            "The Facebook account that connected {} removed the app on Facebook, so the gateway disconnected them: customers' messages to them no longer reach Rocket.Chat. Run `/facebook authorize` to connect them again.",
            names.join(", ")
        );
        self.chat.notify(&admins, &text).await;
        Ok(())
    }

    /// Meta's Data Deletion Request callback: removes the person's grant (token, who they are)
    /// and the link from their pages to it, disconnecting those pages, and records the request
    /// under a new confirmation code.
    pub async fn delete_data(&self, fb_user_id: &str) -> Result<DeletionReceipt, Error> {
        let _changing = self.changes.lock().await;
        let requested_ms = now_ms();
        let (pages, _) = self.drop_grant(fb_user_id)?;
        for page in self.store.pages()? {
            if page.grant.as_deref() == Some(fb_user_id) {
                self.store.update_page(&page.id, |p| p.grant = None)?;
            }
        }
        let mut bytes = [0u8; 12];
        rand::rng().fill_bytes(&mut bytes);
        let code = hex::encode(bytes);
        self.store.put_deletion(&DeletionRequest {
            code: code.clone(),
            requested_ms,
            completed_ms: Some(now_ms()),
            pages_disconnected: u32::try_from(pages.len()).unwrap_or(u32::MAX),
        })?;
        self.store.sync().await?;
        info!(target: "audit", action = "data-deletion", code = %code, pages = pages.len(), "a person's data was deleted at Meta's request");
        if !pages.is_empty() {
            let names: Vec<String> = pages
                .iter()
                .map(|p| format!("*{}* ({})", p.name, p.id))
                .collect();
            let text = format!(
                "The Facebook account that connected {} asked Facebook to delete its data, so the gateway forgot it and disconnected those pages (confirmation {code}). Run `/facebook authorize` to connect them again.",
                names.join(", ")
            );
            self.chat.notify(&admins_of(&pages), &text).await;
        }
        Ok(DeletionReceipt {
            status_url: format!("{}{DATA_DELETION_PATH}/{code}", self.public_url),
            code,
        })
    }

    /// A recorded data deletion request.
    pub fn deletion(&self, code: &str) -> Result<Option<DeletionRequest>, Error> {
        Ok(self.store.deletion(code)?)
    }

    /// Verifies a `signed_request` from Meta with the app secret.
    pub fn verify_signed_request(
        &self,
        raw: &str,
    ) -> Result<String, graph::signed_request::SignedRequestError> {
        self.graph.verify_signed_request(raw).map(|r| r.user_id)
    }

    /// Disconnects the pages connected through this person's grant and removes the grant.
    /// Returns the pages as they were, and the grant.
    fn drop_grant(&self, fb_user_id: &str) -> Result<(Vec<Page>, Option<Grant>), Error> {
        let pages: Vec<Page> = self
            .store
            .pages()?
            .into_iter()
            .filter(|p| p.token.is_some() && p.grant.as_deref() == Some(fb_user_id))
            .collect();
        for page in &pages {
            self.store.update_page(&page.id, |p| {
                p.token = None;
                p.status = PageStatus::Disconnected;
            })?;
        }
        let grant = self.store.grant(fb_user_id)?;
        self.store.remove_grant(fb_user_id)?;
        Ok((pages, grant))
    }

    /// One page of [`Pages::check_health`]. The page is read again under the lock, so a page
    /// `unauthorize` took down meanwhile is not re-subscribed, and the lock is held for one page
    /// at a time, so an OAuth callback waits for one page's check at most.
    async fn check_page(&self, id: &PageId) -> Result<(), Error> {
        let _changing = self.changes.lock().await;
        let Some(page) = self.store.page(id)? else {
            return Ok(());
        };
        let Some(token) = page
            .token
            .as_ref()
            .filter(|_| page.status == PageStatus::Connected)
        else {
            return Ok(());
        };
        match self.graph.debug_token(token).await {
            Ok(info) if !info.is_valid => {
                let reason = info.error.map_or_else(
                    || "Facebook reports the page token as invalid".to_owned(),
                    |e| {
                        format!(
                            "{} (code {}{})",
                            e.message,
                            e.code,
                            e.subcode.map(|s| format!("/{s}")).unwrap_or_default()
                        )
                    },
                );
                lost_authorization(&self.store, &self.chat, &page.id, &reason).await;
                return Ok(());
            }
            Ok(_) => {}
            // The app token itself was refused or Facebook is unreachable: nothing is known
            // about the page, so it is not marked; the next check asks again.
            Err(err) => {
                warn!(page = %page.id, error = %err.describe(), "page token check failed");
                return Ok(());
            }
        }
        if page.is_instagram() {
            // Its webhooks come through the linked Page's subscription, checked as that page.
            return self.check_instagram_link(&page, token).await;
        }
        let fields = match self.graph.subscribed_fields(&page.id, token).await {
            Ok(fields) => fields,
            Err(err) if err.is_token_invalid() => {
                lost_authorization(&self.store, &self.chat, &page.id, &err.describe()).await;
                return Ok(());
            }
            Err(err) => {
                warn!(page = %page.id, error = %err.describe(), "page subscription check failed");
                return Ok(());
            }
        };
        let problem = match &fields {
            None => "Facebook had dropped its webhook subscription".to_owned(),
            Some(fields) => match missing_fields(fields) {
                missing if missing.is_empty() => return Ok(()),
                missing => format!("its webhook subscription lacked {}", missing.join(",")),
            },
        };
        self.repair_subscription(&page, token, &problem).await;
        Ok(())
    }

    async fn repair_subscription(&self, page: &Page, token: &SecretString, problem: &str) {
        let text = match self.subscribe_and_verify(&page.id, token).await {
            Ok(()) => {
                warn!(page = %page.id, problem, "page webhook subscription repaired");
                format!(
                    "Page *{}* ({}): {problem}; the gateway subscribed it again. Messages sent to the page while it was unsubscribed did not reach Rocket.Chat.",
                    page.name, page.id
                )
            }
            Err(Error::Graph(err)) if err.is_token_invalid() => {
                lost_authorization(&self.store, &self.chat, &page.id, &err.describe()).await;
                return;
            }
            Err(err) => {
                warn!(page = %page.id, problem, error = %err, "page webhook subscription could not be repaired");
                format!(
                    "Page *{}* ({}): {problem}, and subscribing it again failed: {err}. Messages to the page do not reach Rocket.Chat until this is fixed; `/facebook authorize` subscribes it again.",
                    page.name, page.id
                )
            }
        };
        self.chat.notify(&page.subscribers, &text).await;
    }
}

/// Runs [`Pages::check_health`] every `period` (the first time one period after start) until
/// `cancel` fires.
pub async fn health_loop(pages: Arc<Pages>, period: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(err) = pages.check_health().await {
            warn!(error = %err, "page health check failed");
        }
    }
}

/// Marks the page "needs authorization" and tells its admins, once per loss: Graph error 190 on
/// any call, or `debug_token` saying the token is invalid. Later calls while it stays marked do
/// nothing, so admins get one notice however many calls fail.
///
/// A Page and its Instagram account share one token, so both are marked, whichever failed.
pub async fn lost_authorization(store: &Store, chat: &Notifier, page_id: &PageId, reason: &str) {
    let records = match store.pages() {
        Ok(records) => records,
        Err(store_err) => {
            warn!(page = %page_id, error = %store_err, "cannot read the pages that share the token");
            Vec::new()
        }
    };
    let root = records
        .iter()
        .find(|p| &p.id == page_id)
        .map(|p| p.send_node().clone())
        .unwrap_or_else(|| page_id.clone());
    let mut ids = vec![page_id.clone()];
    for record in &records {
        if (record.id == root || record.send_node() == &root) && !ids.contains(&record.id) {
            ids.push(record.id.clone());
        }
    }
    for id in &ids {
        mark_needs_authorization(store, chat, id, reason).await;
    }
}

async fn mark_needs_authorization(store: &Store, chat: &Notifier, page_id: &PageId, reason: &str) {
    let mut newly = false;
    let updated = store.update_page(page_id, |page| {
        newly =
            page.token.is_some() && !matches!(page.status, PageStatus::NeedsAuthorization { .. });
        if newly {
            page.status = PageStatus::NeedsAuthorization {
                reason: reason.to_owned(),
                since_ms: now_ms(),
            };
        }
    });
    let page = match updated {
        Ok(Some(page)) if newly => page,
        Ok(_) => return,
        Err(store_err) => {
            warn!(page = %page_id, error = %store_err, "cannot record that the page needs authorization");
            return;
        }
    };
    if let Err(store_err) = store.sync().await {
        warn!(page = %page_id, error = %store_err, "cannot persist the page's state");
    }
    warn!(page = %page_id, reason = %reason, "page token invalid: the page needs authorization");
    let text = format!(
        "Facebook no longer accepts the access of {} *{}* ({page_id}): {reason}.\nRun `/facebook authorize` to connect it again; messages are kept meanwhile.",
        if page.is_instagram() {
            "Instagram account"
        } else {
            "page"
        },
        page.label()
    );
    chat.notify(&page.subscribers, &text).await;
}

/// Every admin subscribed to any of these pages, once.
fn admins_of(pages: &[Page]) -> Vec<String> {
    let mut admins: Vec<String> = Vec::new();
    for name in pages.iter().flat_map(|p| p.subscribers.iter()) {
        if !admins.contains(name) {
            admins.push(name.clone());
        }
    }
    admins
}

/// Why the gateway asks for a permission, for the admin who declined it.
fn scope_purpose(scope: &str) -> &'static str {
    match scope {
        "pages_show_list" => "lists the pages you manage, so they can be connected",
        "pages_messaging" => "answers customers in Messenger on the page's behalf",
        "pages_manage_metadata" => "subscribes the page to webhooks, so messages reach Rocket.Chat",
        "pages_read_engagement" => "reads the page's name and the customers' public profile names",
        "business_management" => {
            "lists pages owned by a business portfolio; without it those pages are missing"
        }
        "instagram_basic" => {
            "finds the Instagram account linked to each page; without it only Messenger is connected"
        }
        "instagram_manage_messages" => {
            "receives and answers the Instagram account's Direct messages"
        }
        "instagram_manage_comments" => {
            "uploads agents' files for Instagram (Meta lists it for the attachment upload)"
        }
        _ => "needed by the gateway",
    }
}

/// The fields of [`graph::SUBSCRIBED_FIELDS`] that `fields` lacks.
fn missing_fields(fields: &[String]) -> Vec<&'static str> {
    graph::SUBSCRIBED_FIELDS
        .iter()
        .copied()
        .filter(|wanted| !fields.iter().any(|f| f == wanted))
        .collect()
}

fn connected_message(pages: &[String], failures: &[String]) -> String {
    let mut text = if pages.is_empty() {
        "Facebook Login worked, but no page could be connected.".to_string()
    } else {
        format!(
            "Connected {}: {}. Try it out by sending a message to your page.",
            if pages.len() == 1 { "page" } else { "pages" },
            pages.join(", ")
        )
    };
    for failure in failures {
        text.push_str(&format!("\n✗ {failure}"));
    }
    if pages.is_empty() && failures.is_empty() {
        text.push_str(" Your account manages no page, or you did not select any in the dialog: run `/facebook authorize` again and select the pages.");
    }
    text
}
