//! The handover protocol's calls (`docs/messenger.md` §7): who controls a conversation when
//! several apps (or the Page Inbox) serve one page. Source:
//! <https://developers.facebook.com/docs/messenger-platform/handover-protocol/conversation-control>.

use reqwest::Method;
use secrecy::SecretString;
use serde_json::json;

use super::{Error, GraphClient};
use crate::ids::{PageId, Psid};

impl GraphClient {
    /// `POST /{page-id}/take_thread_control`: takes the conversation from the app that controls
    /// it. Meta allows it to the page's primary receiver (or for an idle thread).
    pub async fn take_thread_control(
        &self,
        page: &PageId,
        page_token: &SecretString,
        recipient: &Psid,
        metadata: &str,
    ) -> Result<(), Error> {
        self.handover(page, page_token, recipient, "take_thread_control", metadata)
            .await
    }

    /// `POST /{page-id}/request_thread_control`: asks the controlling app to pass the thread;
    /// what a secondary receiver may do.
    pub async fn request_thread_control(
        &self,
        page: &PageId,
        page_token: &SecretString,
        recipient: &Psid,
        metadata: &str,
    ) -> Result<(), Error> {
        self.handover(
            page,
            page_token,
            recipient,
            "request_thread_control",
            metadata,
        )
        .await
    }

    async fn handover(
        &self,
        page: &PageId,
        page_token: &SecretString,
        recipient: &Psid,
        edge: &'static str,
        metadata: &str,
    ) -> Result<(), Error> {
        let body = json!({ "recipient": { "id": recipient.as_str() }, "metadata": metadata });
        let req = self
            .request(Method::POST, &[page.as_str(), edge], Some(page_token))
            .json(&body);
        self.call_success(edge, req).await
    }
}
