//! Replies the page sent from elsewhere: a person typing in the Page Inbox (Meta Business Suite)
//! or another app. Meta echoes them to every app (`message_echoes`, `docs/messenger.md` §2.6);
//! the customer has already read them, so the agents in the room should too.
//!
//! They are posted by the bot with `chat.sendMessage`, never as the visitor: Rocket.Chat lets a
//! user who is not serving a Livechat room post in it when it may access the room, which for an
//! Omnichannel room means the `view-livechat-rooms` permission
//! (`apps/meteor/app/authorization/server/functions/canSendMessage.ts` →
//! `canAccessRoomAsync`, whose Livechat validators are in
//! `apps/meteor/app/livechat/server/roomAccessValidator.compatibility.ts`). The bot's posts carry
//! ids derived from the echo's `mid` and are never relayed back to Messenger
//! (`render::is_derived_id`).

use tracing::{debug, info, warn};

use super::{Failure, Inbound};
use crate::ids::ConversationKey;
use crate::messenger::webhook::Attachment;
use crate::relay::render;
use crate::relay::threads::PAGE_INBOX_APP_ID;

/// An echo of a message another app (or the Page Inbox) sent for the page.
pub(super) struct PageReply<'a> {
    pub app_id: Option<&'a str>,
    pub mid: &'a str,
    pub text: Option<&'a str>,
    pub attachments: &'a [Attachment],
}

impl Inbound {
    /// Shows the page's reply in the conversation's open room; with no open room there is no
    /// one to show it to, and it stays in the Page Inbox.
    pub(super) async fn deliver_page_reply(
        &self,
        key: &ConversationKey,
        reply: PageReply<'_>,
    ) -> Result<(), Failure> {
        let Some(conversation) = self.ctx.store.conversation(key)? else {
            debug!(conversation = %key, "page reply for a conversation without a room");
            return Ok(());
        };
        let Some(rid) = conversation.room else {
            debug!(conversation = %key, "page reply while no room is open");
            return Ok(());
        };
        let page_name = self
            .ctx
            .store
            .page(&key.page)?
            .map(|p| p.name)
            .unwrap_or_else(|| key.page.to_string());
        let text = render::page_reply(
            &page_name,
            reply.app_id == Some(PAGE_INBOX_APP_ID),
            reply.text,
            reply.attachments,
        );
        let id = render::message_id(&key.page, &rid, &format!("e:{}", reply.mid), 0);
        match self.ctx.rest.send_message(&id, &rid, &text).await {
            Ok(()) => {
                info!(conversation = %key, room = %rid, "page reply from elsewhere shown in the room");
                Ok(())
            }
            Err(err) if err.is_retryable() => Err(err.into()),
            // The customer has the reply already: a refusal must not hold their next messages.
            Err(err) => {
                warn!(conversation = %key, room = %rid, error = %err,
                    "cannot show the page's reply from the Page Inbox in the room; the bot needs the `view-livechat-rooms` permission");
                Ok(())
            }
        }
    }
}
