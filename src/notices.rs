//! The bot's voice in chat: replies in a room and notices to admins by direct message.
//! Every message gets a client-chosen id once, so a retry after a lost answer cannot post twice.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tracing::warn;

use crate::backoff::Backoff;
use crate::ids::{MessageId, RoomId};
use crate::rocketchat::rest::RestClient;

/// How long a message is retried while Rocket.Chat is unreachable before it is given up.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct Notifier {
    rest: RestClient,
}

impl Notifier {
    pub fn new(rest: RestClient) -> Notifier {
        Notifier { rest }
    }

    /// Posts `text` in a room as the bot, retrying while Rocket.Chat is unreachable.
    pub async fn reply(&self, rid: &RoomId, text: &str) {
        let id = new_message_id();
        let deadline = Instant::now() + DELIVERY_DEADLINE;
        let mut delay = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        loop {
            match self.rest.send_message(&id, rid, text).await {
                Ok(()) => return,
                Err(err) if err.is_retryable() && Instant::now() + delay.current() < deadline => {
                    tokio::time::sleep(err.retry_after().unwrap_or(delay.current())).await;
                    delay.advance();
                }
                Err(err) => {
                    warn!(room = %rid, error = %err, "could not deliver the bot's message");
                    return;
                }
            }
        }
    }

    /// Sends a notice by direct message to each user (page connected, token invalid, …).
    pub async fn notify(&self, usernames: &[String], text: &str) {
        for username in usernames {
            match self.rest.direct_room(username).await {
                Ok(rid) => self.reply(&rid, text).await,
                Err(err) => {
                    warn!(user = %username, error = %err, "could not open a direct message for a notice")
                }
            }
        }
    }
}

/// A fresh Meteor-style message id (17 characters of Meteor's unmistakable alphabet).
pub fn new_message_id() -> MessageId {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let id: String = (0..17)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    MessageId::new(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_look_like_meteor_ids() {
        let id = new_message_id();
        assert_eq!(id.as_str().len(), 17);
        assert_ne!(id, new_message_id());
    }
}
