//! Meta's policy enforcement on a page (`messaging_policy_enforcement`, `docs/messenger.md`
//! §2.6): a warning or a block concerns everyone who answers for the page, so the page's admins
//! hear at once and `status` shows it until Meta lifts it.

use std::collections::HashMap;
use std::sync::MutexGuard;

use tracing::{info, warn};

use super::Pages;
use crate::ids::PageId;
use crate::messenger::webhook::PolicyEnforcement;

impl Pages {
    fn policy_lock(&self) -> MutexGuard<'_, HashMap<PageId, String>> {
        self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the notice for `status` (at once) and tells the page's admins by DM.
    pub async fn policy_enforcement(&self, notice: &PolicyEnforcement) {
        let reason = notice
            .reason
            .as_deref()
            .unwrap_or("Meta gave no reason")
            .trim();
        let (headline, line) = match notice.action.as_str() {
            "unblock" => {
                self.policy_lock().remove(&notice.page);
                ("Meta lifted its block", None)
            }
            "block" => (
                "Meta blocked the gateway's app from messaging on this page",
                Some(format!("blocked by Meta: {reason}")),
            ),
            _ => (
                "Meta warned about the gateway's app on this page",
                Some(format!("warned by Meta: {reason}")),
            ),
        };
        if let Some(line) = line {
            warn!(page = %notice.page, action = %notice.action, reason, "policy enforcement");
            self.policy_lock().insert(notice.page.clone(), line);
        } else {
            info!(page = %notice.page, "policy enforcement lifted");
        }
        let page = match self.store.page(&notice.page) {
            Ok(Some(page)) => page,
            Ok(None) => {
                warn!(page = %notice.page, "policy enforcement for a page the gateway does not know");
                return;
            }
            Err(err) => {
                warn!(page = %notice.page, error = %err, "cannot read the page for a policy notice");
                return;
            }
        };
        let mut text = format!("⚠️ {headline}: page *{}* ({}).", page.name, page.id);
        if notice.action != "unblock" {
            text.push_str(&format!(
                "\nMeta says: {reason}\nWhat to do: read the notice in the Meta app dashboard \
                 (App Review / Alerts) and the Messenger Platform policy; while blocked, replies \
                 to this page's customers are refused."
            ));
        }
        self.chat.notify(&page.subscribers, &text).await;
    }

    /// The pages Meta warned or blocked, with what it said.
    pub fn policy_problems(&self) -> Vec<(PageId, String)> {
        let mut all: Vec<_> = self
            .policy_lock()
            .iter()
            .map(|(page, line)| (page.clone(), line.clone()))
            .collect();
        all.sort();
        all
    }
}
