//! An agent typing in Rocket.Chat shows as "typing…" in Messenger. Best effort and never in the
//! way of a message: nothing is stored, a failure is dropped, and the indicators go out on their
//! own task in the order they were decided.
//!
//! Rocket.Chat's clients renew `user-typing` every few seconds while the agent types and send an
//! empty activity when the agent stops or sends (`docs/rocketchat.md` §2.8.2). Messenger shows
//! `typing_on` until `typing_off`, until the page sends a message, or for about 20 seconds
//! (`docs/messenger.md` §3.2). So `typing_on` goes out at most once per [`RENEW`] while the agent
//! types, `typing_off` only after a `typing_on` and never after the reply itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::health::now_ms;
use crate::ids::ConversationKey;
use crate::messenger::graph::{GraphClient, SenderAction};
use crate::store::{PageStatus, Store};

/// How often `typing_on` is repeated while the agent keeps typing (Messenger drops it after
/// about 20 seconds).
pub const RENEW: Duration = Duration::from_secs(10);
/// Indicators waiting to be sent; the stream waits when it is full.
const QUEUE: usize = 64;

/// Which conversations show "typing…" since when, and the queue of indicators to send.
pub struct Typing {
    shown: Mutex<HashMap<ConversationKey, Instant>>,
    tx: mpsc::Sender<(ConversationKey, SenderAction)>,
}

impl Typing {
    /// Starts the sender on `tasks`; it ends with `cancel`.
    pub fn start(
        graph: GraphClient,
        store: Store,
        tasks: &tokio_util::task::TaskTracker,
        cancel: CancellationToken,
    ) -> Typing {
        let (tx, mut rx) = mpsc::channel::<(ConversationKey, SenderAction)>(QUEUE);
        tasks.spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    next = rx.recv() => next,
                };
                let Some((key, action)) = next else {
                    return;
                };
                send(&graph, &store, &key, action).await;
            }
        });
        Typing {
            shown: Mutex::new(HashMap::new()),
            tx,
        }
    }

    /// An agent of the conversation started or stopped typing.
    pub async fn activity(&self, key: &ConversationKey, typing: bool) {
        let action = {
            let mut shown = self.lock();
            let now = Instant::now();
            if typing {
                match shown.get(key) {
                    Some(at) if now.duration_since(*at) < RENEW => return,
                    _ => {
                        shown.insert(key.clone(), now);
                    }
                }
                SenderAction::TypingOn
            } else {
                if shown.remove(key).is_none() {
                    return;
                }
                SenderAction::TypingOff
            }
        };
        // The sender task ends only at shutdown; an indicator then is of no use.
        let _ = self.tx.send((key.clone(), action)).await;
    }

    /// A reply is being sent: Messenger ends "typing…" by itself.
    pub fn replied(&self, key: &ConversationKey) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationKey, Instant>> {
        self.shown.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sends one indicator if the page can message the customer now (the standard window).
async fn send(graph: &GraphClient, store: &Store, key: &ConversationKey, action: SenderAction) {
    let conversation = match store.conversation(key) {
        Ok(conversation) => conversation,
        Err(err) => {
            debug!(conversation = %key, error = %err, "typing indicator skipped");
            return;
        }
    };
    if super::outbound::policy(conversation.as_ref(), now_ms(), false, false).is_err() {
        return;
    }
    let page = match store.page(&key.page) {
        Ok(Some(page)) => page,
        _ => return,
    };
    let (PageStatus::Connected, Some(token)) = (&page.status, &page.token) else {
        return;
    };
    if let Err(err) = graph
        .sender_action(page.send_node(), token, &key.psid, action)
        .await
    {
        debug!(conversation = %key, action = action.as_str(), error = %err.describe(), "typing indicator failed");
    }
}
