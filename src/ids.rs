//! Opaque identifiers. Each id that crosses a boundary has its own type so a page id can never be
//! passed where a PSID is expected. PSIDs and tokens are personal or secret: their `Debug` and
//! `Display` forms are redacted, and the wire form is only reachable through `as_str()`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

macro_rules! plain_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(value: impl Into<Arc<str>>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

macro_rules! redacted_id {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(value: impl Into<Arc<str>>) -> Self {
                Self(value.into())
            }

            /// The value as sent on the wire. Never log it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// Shows only the last four characters, enough to tell two apart in a log.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let tail: String = self.0.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
                write!(f, "{}…{}", $label, tail)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

plain_id!(
    /// A Facebook Page id or an Instagram professional account id: the business side of a
    /// conversation. Meta's node ids never collide, so both live in one keyspace.
    PageId
);
plain_id!(
    /// A Rocket.Chat room id (`rid`).
    RoomId
);
plain_id!(
    /// A Rocket.Chat message id (`_id`).
    MessageId
);
plain_id!(
    /// A Rocket.Chat user id (`u._id`).
    UserId
);
redacted_id!(
    /// A page-scoped Messenger user id (PSID) or an Instagram-scoped one (IGSID): personal
    /// data, redacted in logs.
    Psid,
    "psid"
);
redacted_id!(
    /// A Livechat visitor token: it grants access to the visitor's room, redacted in logs.
    VisitorToken,
    "visitor"
);

/// One Messenger conversation: a customer (PSID) talking to one page.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConversationKey {
    pub page: PageId,
    pub psid: Psid,
}

/// Conversations' keys are Meta's ids from signed webhooks: no one can choose them to make
/// hashes collide, so maps keyed by them use a fast unkeyed hash rather than SipHash (they are
/// looked up several times per webhook event).
pub type ConversationMap<V> = rustc_hash::FxHashMap<ConversationKey, V>;
pub type ConversationSet = rustc_hash::FxHashSet<ConversationKey>;

impl ConversationKey {
    pub fn new(page: PageId, psid: Psid) -> Self {
        Self { page, psid }
    }
}

impl fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.page, self.psid)
    }
}

impl fmt::Debug for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_ids_are_redacted_in_logs() {
        let psid = Psid::new("24681357902468135");
        assert_eq!(psid.to_string(), "psid…8135");
        assert_eq!(format!("{psid:?}"), "psid…8135");
        assert_eq!(psid.as_str(), "24681357902468135");
        let key = ConversationKey::new(PageId::new("100"), psid);
        assert_eq!(key.to_string(), "100/psid…8135");
    }
}
