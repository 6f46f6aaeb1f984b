//! The admin side of the bot: `/facebook …` commands in direct messages, and notices to admins.
//!
//! Messages arrive from the `__my_messages__` stream already typed by `rocketchat::realtime`;
//! this module filters them, parses them with the pure `commands` grammar, checks that the sender
//! may run the command, runs it, and answers in the same room through REST.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::commands::{self, Command, PageEdit, Parsed};
use crate::health::{Health, Link, now_ms};
use crate::ids::{MessageId, PageId, UserId};
use crate::notices::Notifier;
use crate::pages::{self, Pages};
use crate::relay::inbound::Inbound;
use crate::rocketchat::livechat::Refusal;
use crate::rocketchat::realtime::{self, ChatMessage, RoomContext, RoomType};
use crate::rocketchat::rest::{self, RestClient};
use crate::store::{self, Department, Page, PageStatus, Platform, Store, TextLimit};

/// How long a user's roles are trusted before `users.info` is asked again.
const ROLE_CACHE_TTL: Duration = Duration::from_secs(60);
/// How many message ids are remembered to drop the stream's re-emissions (edits, reactions).
const SEEN_CAPACITY: usize = 4096;

/// Each user's roles as last read, and when (`None`: the bot may not see roles).
type RoleCache = HashMap<UserId, (Instant, Option<Vec<String>>)>;

/// Who may run admin commands.
#[derive(Clone, Debug)]
pub struct AdminPolicy {
    /// Usernames always allowed (bot.toml `admins`).
    pub admins: Vec<String>,
    /// Roles that make a user an admin (bot.toml `admin_roles`).
    pub admin_roles: Vec<String>,
}

/// A command handler's failure, told to the admin in chat and logged.
#[derive(thiserror::Error, Debug)]
pub enum CommandError {
    /// The command cannot be done as asked; the text tells the admin why and what to do.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    RocketChat(#[from] rest::Error),
    #[error("the gateway's store failed: {0}")]
    Store(#[from] store::Error),
    #[error("{0}")]
    Pages(#[from] pages::Error),
}

pub struct Admin {
    rest: RestClient,
    chat: Notifier,
    pages: Arc<Pages>,
    /// The inbound relay, which `retry` hands set-aside messages back to.
    inbound: Arc<Inbound>,
    store: Store,
    health: Health,
    policy: AdminPolicy,
    seen: Mutex<SeenIds>,
    roles: Mutex<RoleCache>,
    roles_hidden_reported: std::sync::atomic::AtomicBool,
}

impl Admin {
    pub fn new(
        rest: RestClient,
        chat: Notifier,
        pages: Arc<Pages>,
        inbound: Arc<Inbound>,
        store: Store,
        health: Health,
        policy: AdminPolicy,
    ) -> Admin {
        Admin {
            rest,
            chat,
            pages,
            inbound,
            store,
            health,
            policy,
            seen: Mutex::new(SeenIds::default()),
            roles: Mutex::new(HashMap::new()),
            roles_hidden_reported: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Handles one `__my_messages__` event. Everything that is not a command for us is ignored
    /// quietly: our own messages, system messages, re-emitted ids, rooms we are not in, and
    /// anything outside direct messages.
    pub async fn handle(&self, message: ChatMessage, room: RoomContext) {
        let Some(bot) = self.rest.user_id() else {
            return;
        };
        if message.author_id == bot || message.kind.is_some() || !room.participant {
            return;
        }
        if room.room_type != Some(RoomType::Direct) {
            return;
        }
        if !self.first_sighting(&message.id) {
            return;
        }
        let bare_allowed = realtime::is_one_to_one(&message.rid, &bot, &message.author_id);
        let command = match commands::parse(&message.text, bare_allowed) {
            Parsed::NotACommand => return,
            Parsed::Invalid(usage) => {
                info!(user = %message.author_username, error = %usage, "command refused: usage");
                self.chat.reply(&message.rid, &usage.to_string()).await;
                return;
            }
            Parsed::Command(command) => command,
        };
        if command.needs_admin()
            && !self
                .is_admin(&message.author_id, &message.author_username)
                .await
        {
            info!(target: "audit", user = %message.author_username, command = command.name(), "command refused: not an admin");
            let text = format!(
                "Sorry @{}, only Rocket.Chat admins can run `{}`. Ask an administrator, or try `/facebook help`.",
                message.author_username,
                command.name()
            );
            self.chat.reply(&message.rid, &text).await;
            return;
        }
        info!(target: "audit", user = %message.author_username, command = command.name(), setting = setting_of(&command), page = page_of(&command).map(PageId::as_str).unwrap_or("-"), "command accepted");
        let answer = match self.run(&command, &message).await {
            Ok(text) => text,
            Err(CommandError::Refused(text)) => text,
            Err(err) => {
                warn!(user = %message.author_username, command = command.name(), error = %err, "command failed");
                format!(
                    "`{}` failed: {err}. Try again in a moment; if it keeps failing, see the gateway's log.",
                    command.name()
                )
            }
        };
        self.chat.reply(&message.rid, &answer).await;
    }

    async fn run(&self, command: &Command, message: &ChatMessage) -> Result<String, CommandError> {
        match command {
            Command::Help => Ok(commands::help_text()),
            Command::Pages => self.pages(),
            Command::Status => self.status(),
            Command::Retry { page } => self.retry(page.as_ref()).await,
            Command::Edit { page, change: None } => self.show_page(page),
            Command::Edit {
                page,
                change: Some(change),
            } => self.edit_page(page, change).await,
            Command::Subscribe { page } => {
                self.set_subscription(page, &message.author_username, true)
            }
            Command::Unsubscribe { page } => {
                self.set_subscription(page, &message.author_username, false)
            }
            Command::Authorize => {
                let link = self
                    .pages
                    .start_authorization(&message.author_username, &message.author_id, &message.rid)
                    .await?;
                Ok(format!(
                    "Open this link to connect your Facebook pages (it works once and expires in {} minutes):\n{link}",
                    pages::STATE_LIFETIME.as_secs() / 60
                ))
            }
            Command::Unauthorize { page } => Ok(self
                .pages
                .unauthorize(&message.author_username, page.as_ref())
                .await?),
        }
    }

    fn pages(&self) -> Result<String, CommandError> {
        let pages = self.store.pages()?;
        if pages.is_empty() {
            return Ok(
                "No Facebook page is connected yet. Run `/facebook authorize` to connect one."
                    .into(),
            );
        }
        let held = self.held_by_page()?;
        let mut text = format!("Connected pages ({}):", pages.len());
        for page in &pages {
            text.push_str(&format!(
                "\n• {} *{}*{} — department: {} · {} · held: {}",
                page.id,
                page.label(),
                via(page, &pages),
                department_label(page.department.as_ref()),
                status_label(&page.status),
                held.get(&page.id).copied().unwrap_or(0)
            ));
        }
        Ok(text)
    }

    fn held_by_page(&self) -> Result<HashMap<PageId, usize>, CommandError> {
        let mut held = HashMap::new();
        for conversation in self.store.conversations()? {
            if conversation.held_since_ms.is_some() {
                *held.entry(conversation.key.page.clone()).or_insert(0) += 1;
            }
        }
        Ok(held)
    }

    fn status(&self) -> Result<String, CommandError> {
        let link = match self.health.link() {
            Link::Up { since_ms } => format!("connected (since {})", format_age(since_ms)),
            Link::Down { reason } => format!("down: {reason}"),
        };
        let pages = self.store.pages()?;
        let held: usize = self.held_by_page()?.values().sum();
        let last_webhook = pages.iter().filter_map(|p| p.last_webhook_ms).max();
        let instagram = pages.iter().filter(|p| p.is_instagram()).count();
        let mut text = format!(
            "*omni-gateway status*\n• Rocket.Chat: {link}\n• pages: {}{}\n• held conversations: {held}\n• inbox: {} · outbox: {}\n• last webhook: {}",
            pages.len() - instagram,
            if instagram > 0 {
                format!(" · Instagram accounts: {instagram}")
            } else {
                String::new()
            },
            self.store.inbox().len(),
            self.store.outbox().len(),
            last_webhook
                .map(format_age)
                .unwrap_or_else(|| "never".into()),
        );
        for page in &pages {
            text.push_str(&format!(
                "\n  – {} *{}*{}: {}",
                page.id,
                page.label(),
                via(page, &pages),
                status_label(&page.status)
            ));
        }
        text.push_str(&self.set_aside_summary()?);
        for (page, line) in self.pages.policy_problems() {
            text.push_str(&format!("\n• page {page}: {line}"));
        }
        if let Some(problem) = self.pages.app_webhook_problem() {
            text.push_str(&format!("\n• app webhooks: {problem}"));
        }
        text.push_str(&format!(
            "\n• Rocket.Chat 429s in the last hour: {} ({})",
            crate::telemetry::describe_rate_limited(&self.rest.rate_limits().last_hour()),
            crate::telemetry::LIVECHAT_LIMITS
        ));
        if self
            .roles_hidden_reported
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            text.push_str(&format!("\n• warning: {ROLES_HIDDEN}"));
        }
        Ok(text)
    }

    /// The `status` lines on set-aside messages: how many per page and reason, and since when
    /// the oldest waits (its customer's time).
    fn set_aside_summary(&self) -> Result<String, CommandError> {
        let events = self.store.set_aside_events()?;
        if events.is_empty() {
            return Ok("\n• set aside: none".into());
        }
        // Events come by page; count per (page, reason) in that order.
        let mut groups: Vec<(PageId, String, usize, u64)> = Vec::new();
        for aside in &events {
            let page = &aside.event.key.page;
            let written = aside.event.timestamp_ms;
            match groups
                .iter_mut()
                .find(|(p, reason, _, _)| p == page && *reason == aside.reason)
            {
                Some((_, _, count, oldest)) => {
                    *count += 1;
                    *oldest = (*oldest).min(written);
                }
                None => groups.push((page.clone(), aside.reason.clone(), 1, written)),
            }
        }
        let mut text = format!(
            "\n• set aside (Rocket.Chat refused them for good; fix the cause, then `retry <pageId | all>`): {}",
            events.len()
        );
        for (page, reason, count, oldest) in groups {
            text.push_str(&format!(
                "\n  – page {page}: {count} × {} (`{reason}`), oldest written {}",
                Refusal::from_code(&reason).meaning(),
                format_age(oldest)
            ));
        }
        Ok(text)
    }

    /// `retry <pageId | all>`: the set-aside messages go back to their conversations.
    async fn retry(&self, page: Option<&PageId>) -> Result<String, CommandError> {
        if let Some(id) = page {
            self.connected_page(id)?;
        }
        let events = self.inbound.retry_set_aside(page).await?;
        let scope = match page {
            Some(id) => format!("page {id}"),
            None => "any page".to_owned(),
        };
        Ok(if events == 0 {
            format!("Nothing is set aside for {scope}.")
        } else {
            format!(
                "{events} set-aside message(s) of {scope} are back in their conversations and are being delivered, each in its place by the time the customer wrote it (after what was delivered meanwhile). If Rocket.Chat still refuses them, they are set aside again and `status` shows them."
            )
        })
    }

    fn show_page(&self, id: &PageId) -> Result<String, CommandError> {
        let page = self.connected_page(id)?;
        let text_of = |value: &Option<String>| match value {
            Some(text) => format!("\"{text}\""),
            None => "off".into(),
        };
        let platform = match &page.platform {
            Platform::Messenger => "Messenger".to_owned(),
            Platform::Instagram { page: linked, .. } => {
                let name = self
                    .store
                    .page(linked)?
                    .map(|p| format!(" *{}*", p.name))
                    .unwrap_or_default();
                format!("Instagram, through Page {linked}{name} (texts at most 999 bytes)")
            }
        };
        Ok(format!(
            "{kind} {id} *{name}* ({status})\n\
             • platform: {platform}\n\
             • department: {department} — change with `/facebook edit {id} department <name or id | none>`\n\
             • welcome: {welcome} — `/facebook edit {id} welcome <text | off>`\n\
             • finished: {finished} — `/facebook edit {id} finished <text | off>`\n\
             • offline: {offline} — `/facebook edit {id} offline <text | off>`\n\
             • notices go to: {subscribers}",
            kind = kind(&page),
            name = page.label(),
            status = status_label(&page.status),
            department = department_label(page.department.as_ref()),
            welcome = text_of(&page.welcome),
            finished = text_of(&page.finished),
            offline = text_of(&page.offline),
            subscribers = if page.subscribers.is_empty() {
                "nobody".to_string()
            } else {
                page.subscribers
                    .iter()
                    .map(|u| format!("@{u}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ))
    }

    async fn edit_page(&self, id: &PageId, change: &PageEdit) -> Result<String, CommandError> {
        let current = self.connected_page(id)?;
        if let (Some(text), TextLimit::Bytes(max)) = (edited_text(change), current.text_limit()) {
            // Sent unsplit, so the whole text must fit Instagram's limit (docs/instagram.md §6.2).
            if text.len() > max {
                return Ok(format!(
                    "The text is {} bytes; Instagram texts may be at most {max} bytes (about 1000 plain Latin characters, fewer with accents or emoji). Shorten it and send the command again.",
                    text.len()
                ));
            }
        }
        let department = match change {
            PageEdit::Department(Some(wanted)) => match self.find_department(wanted).await? {
                Ok(department) => Some(department),
                Err(refusal) => return Ok(refusal),
            },
            _ => None,
        };
        let updated = self.store.update_page(id, |page| match change {
            PageEdit::Department(_) => page.department = department.clone(),
            PageEdit::Welcome(text) => page.welcome = text.clone(),
            PageEdit::Finished(text) => page.finished = text.clone(),
            PageEdit::Offline(text) => page.offline = text.clone(),
        })?;
        self.store.sync().await?;
        let Some(page) = updated else {
            return Ok(not_connected(id));
        };
        let what = match change {
            PageEdit::Department(_) => format!(
                "department is now {}",
                department_label(page.department.as_ref())
            ),
            PageEdit::Welcome(None) => "welcome message is off".into(),
            PageEdit::Welcome(Some(_)) => "welcome message updated".into(),
            PageEdit::Finished(None) => "conversation finished message is off".into(),
            PageEdit::Finished(Some(_)) => "conversation finished message updated".into(),
            PageEdit::Offline(None) => "offline message is off".into(),
            PageEdit::Offline(Some(_)) => "offline message updated".into(),
        };
        Ok(format!(
            "{} {id} *{}*: {what}. It applies to the next conversation.",
            kind(&page),
            page.label()
        ))
    }

    /// Looks a department up by id or name (case-insensitive). `Ok(Err(text))` is a refusal to
    /// show the admin, listing the valid names.
    async fn find_department(
        &self,
        wanted: &str,
    ) -> Result<Result<Department, String>, CommandError> {
        let departments = match self.rest.departments().await {
            Ok(departments) => departments,
            Err(rest::Error::Api { status: 403, .. }) => {
                return Ok(Err("I may not list Omnichannel departments. Give the bot user the `view-livechat-departments` permission (Administration → Permissions) and try again.".into()));
            }
            Err(err) => return Err(err.into()),
        };
        let found = departments.iter().find(|d| d.id == wanted).or_else(|| {
            departments
                .iter()
                .find(|d| d.name.eq_ignore_ascii_case(wanted))
        });
        Ok(match found {
            Some(d) => Ok(Department {
                id: d.id.clone(),
                name: d.name.clone(),
            }),
            None if departments.is_empty() => Err(format!(
                "There is no department '{wanted}': Omnichannel has no departments yet. Create one under Omnichannel → Departments, or use `none`."
            )),
            None => Err(format!(
                "There is no department '{wanted}'. Valid departments: {}.",
                departments
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        })
    }

    fn set_subscription(
        &self,
        id: &PageId,
        username: &str,
        on: bool,
    ) -> Result<String, CommandError> {
        self.connected_page(id)?;
        let updated = self.store.update_page(id, |page| {
            page.subscribers.retain(|u| u != username);
            if on {
                page.subscribers.push(username.to_owned());
            }
        })?;
        Ok(match updated {
            None => not_connected(id),
            Some(page) if on => format!("You will get the notices of page {id} *{}*.", page.name),
            Some(page) => format!(
                "You will no longer get the notices of page {id} *{}*.",
                page.name
            ),
        })
    }

    /// The page, or a refusal naming the connected pages when it is unknown.
    fn connected_page(&self, id: &PageId) -> Result<Page, CommandError> {
        self.store
            .page(id)?
            .ok_or_else(|| CommandError::Refused(not_connected(id)))
    }

    /// Whether the user may run admin commands: listed in `admins`, or holding an `admin_roles`
    /// role according to `users.info` (cached briefly).
    async fn is_admin(&self, user: &UserId, username: &str) -> bool {
        if self.policy.admins.iter().any(|a| a == username) {
            return true;
        }
        if self.policy.admin_roles.is_empty() {
            return false;
        }
        let cached = self
            .lock_roles()
            .get(user)
            .and_then(|(at, roles)| (at.elapsed() < ROLE_CACHE_TTL).then(|| roles.clone()));
        let roles = match cached {
            Some(roles) => roles,
            None => match self.rest.user_roles(user).await {
                Ok(roles) => {
                    self.lock_roles()
                        .insert(user.clone(), (Instant::now(), roles.clone()));
                    roles
                }
                Err(err) => {
                    warn!(user = %username, error = %err, "cannot read the user's roles; refusing the command");
                    return false;
                }
            },
        };
        match roles {
            Some(roles) => roles.iter().any(|r| self.policy.admin_roles.contains(r)),
            None => {
                if !self
                    .roles_hidden_reported
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    warn!("{ROLES_HIDDEN}");
                }
                false
            }
        }
    }

    fn lock_roles(&self) -> std::sync::MutexGuard<'_, RoleCache> {
        self.roles.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn first_sighting(&self, id: &MessageId) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone())
    }
}

const ROLES_HIDDEN: &str = "the bot may not read users' roles, so only the usernames in bot.toml `admins` can run commands; give the bot role the `view-full-other-user-info` permission to allow `admin_roles`";

/// Remembers recent message ids in insertion order, forgetting the oldest.
#[derive(Default)]
struct SeenIds {
    set: HashSet<MessageId>,
    order: VecDeque<MessageId>,
}

impl SeenIds {
    /// `true` the first time an id is inserted.
    fn insert(&mut self, id: MessageId) -> bool {
        if !self.set.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// "Page", or "Instagram account" for an Instagram record.
fn kind(page: &Page) -> &'static str {
    if page.is_instagram() {
        "Instagram account"
    } else {
        "Page"
    }
}

/// The text a welcome, finished or offline edit sets.
fn edited_text(change: &PageEdit) -> Option<&str> {
    match change {
        PageEdit::Welcome(text) | PageEdit::Finished(text) | PageEdit::Offline(text) => {
            text.as_deref()
        }
        PageEdit::Department(_) => None,
    }
}

/// ` (Instagram, via <Page name>)` for an Instagram account, nothing for a Page.
fn via(page: &Page, pages: &[Page]) -> String {
    match &page.platform {
        Platform::Messenger => String::new(),
        Platform::Instagram { page: linked, .. } => {
            let name = pages
                .iter()
                .find(|p| &p.id == linked)
                .map_or_else(|| linked.to_string(), |p| p.name.clone());
            format!(" (Instagram, via {name})")
        }
    }
}

fn page_of(command: &Command) -> Option<&PageId> {
    match command {
        Command::Unauthorize { page } | Command::Retry { page } => page.as_ref(),
        Command::Edit { page, .. }
        | Command::Subscribe { page }
        | Command::Unsubscribe { page } => Some(page),
        Command::Help | Command::Authorize | Command::Pages | Command::Status => None,
    }
}

/// Which setting an `edit` changes, for the audit line ("-" for everything else).
fn setting_of(command: &Command) -> &'static str {
    match command {
        Command::Edit {
            change: Some(change),
            ..
        } => match change {
            PageEdit::Department(_) => "department",
            PageEdit::Welcome(_) => "welcome",
            PageEdit::Finished(_) => "finished",
            PageEdit::Offline(_) => "offline",
        },
        _ => "-",
    }
}

fn not_connected(id: &PageId) -> String {
    format!(
        "Page {id} is not connected. `/facebook pages` lists the connected pages; `/facebook authorize` connects more."
    )
}

fn department_label(department: Option<&Department>) -> String {
    department
        .map(|d| d.name.clone())
        .unwrap_or_else(|| "none (any agent)".into())
}

fn status_label(status: &PageStatus) -> String {
    match status {
        PageStatus::Connected => "connected".into(),
        PageStatus::NeedsAuthorization { reason, .. } => {
            format!("needs authorization ({reason}) — run `/facebook authorize`")
        }
        PageStatus::Disconnected => "disconnected — run `/facebook authorize` to reconnect".into(),
    }
}

/// "3m ago"-style age of an epoch-ms instant.
fn format_age(epoch_ms: u64) -> String {
    let secs = now_ms().saturating_sub(epoch_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_forget_the_oldest() {
        let mut seen = SeenIds::default();
        assert!(seen.insert(MessageId::new("a")));
        assert!(!seen.insert(MessageId::new("a")));
        for i in 0..SEEN_CAPACITY {
            seen.insert(MessageId::new(format!("x{i}")));
        }
        assert!(
            seen.insert(MessageId::new("a")),
            "the oldest id was forgotten"
        );
    }
}
