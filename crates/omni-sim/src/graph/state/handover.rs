//! The handover protocol: which app controls each conversation of a page, the primary
//! receiver role, and the calls that move control. Source:
//! <https://developers.facebook.com/docs/messenger-platform/handover-protocol/> and its pages
//! <https://developers.facebook.com/docs/messenger-platform/handover-protocol/conversation-control>
//! and <https://developers.facebook.com/docs/messenger-platform/handover-protocol/assign-app-roles>.
//!
//! - Events of a conversation another app controls reach the other apps under `standby[]`.
//! - The Send API refuses an app that does not control the thread with code 10, subcode 2018300.
//! - `take_thread_control` is allowed to the primary receiver (and, for an idle thread, to any
//!   app); `request_thread_control` asks the controlling app and moves nothing by itself.
//!
//! Decision where the docs are silent: a secondary receiver's `take_thread_control` on a thread
//! another app controls is refused with a code 10 permission error.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Fault, State};

/// The Page Inbox's app id (Meta's pass-thread-control page names it).
pub const PAGE_INBOX_APP_ID: &str = "263902037430900";

#[derive(Debug, Default)]
pub(in crate::graph) struct Handover {
    /// The page's primary receiver app, when the page set one; absent, the simulated app is the
    /// page's only app and so its primary receiver.
    primary: HashMap<String, String>,
    /// Who controls a conversation `(page, psid)`; absent, nobody (an idle thread).
    owners: HashMap<(String, String), String>,
    /// Every `request_thread_control` received: `(page, psid, metadata)`.
    pub requests: Vec<(String, String, String)>,
}

impl State {
    pub fn set_primary_receiver(&mut self, page: &str, app_id: &str) {
        self.handover
            .primary
            .insert(page.to_owned(), app_id.to_owned());
    }

    pub fn set_thread_owner(&mut self, page: &str, psid: &str, app_id: Option<&str>) {
        let key = (page.to_owned(), psid.to_owned());
        match app_id {
            Some(app) => self.handover.owners.insert(key, app.to_owned()),
            None => self.handover.owners.remove(&key),
        };
    }

    pub fn thread_owner(&self, page: &str, psid: &str) -> Option<String> {
        self.handover
            .owners
            .get(&(page.to_owned(), psid.to_owned()))
            .cloned()
    }

    pub fn thread_requests(&self) -> Vec<(String, String, String)> {
        self.handover.requests.clone()
    }

    fn is_primary(&self, page: &str) -> bool {
        self.handover
            .primary
            .get(page)
            .is_none_or(|app| *app == self.app_id)
    }

    /// Whether the simulated app hears this conversation's events under `standby[]`.
    pub fn is_standby(&self, page: &str, psid: &str) -> bool {
        self.thread_owner(page, psid)
            .is_some_and(|owner| owner != self.app_id)
    }

    /// The Send API's refusal when another app controls the thread.
    pub(super) fn check_thread(&self, page: &str, psid: &str) -> Result<(), Fault> {
        if self.is_standby(page, psid) {
            return Err(Fault::new(
                10,
                Some(2018300),
                super::standard_message(10, Some(2018300)),
            ));
        }
        Ok(())
    }

    /// `POST /{page}/take_thread_control` and `POST /{page}/request_thread_control`.
    pub fn handover_call(
        &mut self,
        token: Option<&str>,
        page: &str,
        edge: &str,
        body: &Value,
    ) -> Result<Value, Fault> {
        let page = self.page_of(token, page)?;
        let psid = body
            .pointer("/recipient/id")
            .and_then(Value::as_str)
            .ok_or_else(|| Fault::param("(#100) The parameter recipient is required"))?
            .to_owned();
        if !self.psids.contains_key(&(page.clone(), psid.clone())) {
            return Err(Fault::new(
                100,
                Some(2018001),
                super::standard_message(100, Some(2018001)),
            ));
        }
        let metadata = body
            .get("metadata")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match edge {
            "take_thread_control" => {
                let idle = self.thread_owner(&page, &psid).is_none();
                if !idle && !self.is_primary(&page) {
                    return Err(Fault::new(
                        10,
                        None,
                        "(#10) Only the primary receiver can take thread control",
                    ));
                }
                let app = self.app_id.clone();
                self.set_thread_owner(&page, &psid, Some(&app));
            }
            _ => self.handover.requests.push((page, psid, metadata)),
        }
        Ok(json!({ "success": true }))
    }
}
