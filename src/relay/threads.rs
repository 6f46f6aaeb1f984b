//! Who controls each conversation under Meta's handover protocol (`docs/messenger.md` §7), as
//! the `messaging_handovers` and `standby` webhooks tell it, and whether the gateway's app is a
//! page's primary receiver (`app_roles`). Kept in memory: after a restart the next standby
//! message, handover event or 10/2018300 refusal tells it again.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tracing::info;

use crate::ids::{ConversationKey, PageId};
use crate::messenger::webhook::Handover;

/// The Page Inbox's app id (Meta's pass-thread-control documentation names it).
pub const PAGE_INBOX_APP_ID: &str = "263902037430900";

#[derive(Default)]
struct State {
    /// Conversations another app controls: its app id, or `None` when only a standby message
    /// said so.
    others: HashMap<ConversationKey, Option<String>>,
    /// Whether the gateway's app is the page's primary receiver, from `app_roles`.
    primary: HashMap<PageId, bool>,
}

pub struct Threads {
    app_id: String,
    state: Mutex<State>,
}

impl Threads {
    pub fn new(app_id: &str) -> Threads {
        Threads {
            app_id: app_id.to_owned(),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, handover: &Handover) {
        let mut state = self.lock();
        match handover {
            Handover::Moved { page, psid, owner } => {
                let key = ConversationKey::new(page.clone(), psid.clone());
                if owner.as_deref() == Some(self.app_id.as_str()) {
                    state.others.remove(&key);
                } else {
                    info!(conversation = %key, owner = owner.as_deref().unwrap_or("-"), "another app controls the conversation now");
                    state.others.insert(key, owner.clone());
                }
            }
            Handover::Requested {
                page,
                psid,
                requester,
            } => {
                let key = ConversationKey::new(page.clone(), psid.clone());
                info!(conversation = %key, requester = requester.as_deref().unwrap_or("-"), "another app asks for the conversation; the gateway keeps it while agents answer there");
            }
            Handover::Roles {
                page,
                primary_receivers,
            } => {
                let primary = primary_receivers.contains(&self.app_id);
                info!(page = %page, primary, "page app roles");
                state.primary.insert(page.clone(), primary);
            }
        }
    }

    /// A customer's message came under `standby[]`: another app controls the conversation.
    pub fn standby(&self, key: &ConversationKey) {
        self.lock().others.entry(key.clone()).or_insert(None);
    }

    /// The gateway's app took the conversation.
    pub fn taken(&self, key: &ConversationKey) {
        self.lock().others.remove(key);
    }

    /// Who controls the conversation when another app does, in words.
    pub fn other_owner(&self, key: &ConversationKey) -> Option<String> {
        let state = self.lock();
        let owner = state.others.get(key)?;
        Some(match owner.as_deref() {
            Some(PAGE_INBOX_APP_ID) => "the Page Inbox".to_owned(),
            Some(app) => format!("the app {app}"),
            None => "another app".to_owned(),
        })
    }

    /// Whether the gateway's app is the page's primary receiver, when `app_roles` said.
    pub fn is_primary(&self, page: &PageId) -> Option<bool> {
        self.lock().primary.get(page).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Psid;

    #[test]
    fn handovers_move_control_and_roles_are_kept() {
        let threads = Threads::new("42");
        let page = PageId::new("1");
        let key = ConversationKey::new(page.clone(), Psid::new("p"));
        assert_eq!(threads.other_owner(&key), None);
        threads.record(&Handover::Moved {
            page: page.clone(),
            psid: Psid::new("p"),
            owner: Some(PAGE_INBOX_APP_ID.into()),
        });
        assert_eq!(threads.other_owner(&key).as_deref(), Some("the Page Inbox"));
        threads.record(&Handover::Moved {
            page: page.clone(),
            psid: Psid::new("p"),
            owner: Some("42".into()),
        });
        assert_eq!(threads.other_owner(&key), None);
        threads.standby(&key);
        assert_eq!(threads.other_owner(&key).as_deref(), Some("another app"));
        threads.taken(&key);
        assert_eq!(threads.other_owner(&key), None);
        assert_eq!(threads.is_primary(&page), None);
        threads.record(&Handover::Roles {
            page: page.clone(),
            primary_receivers: vec!["7".into()],
        });
        assert_eq!(threads.is_primary(&page), Some(false));
    }
}
