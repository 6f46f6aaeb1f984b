//! The simulators' own identifier types. They carry the gateway's names so tests read the same on
//! both sides, but are defined here: the simulators stand apart from the code they check.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

/// An id of kind `K`, compared and hashed by its text.
pub struct Id<K> {
    value: String,
    kind: PhantomData<K>,
}

/// The kinds of [`Id`]; each names itself in `Debug` output.
pub trait Kind {
    const NAME: &'static str;
}

impl<K> Id<K> {
    pub fn new(value: impl Into<String>) -> Self {
        Id {
            value: value.into(),
            kind: PhantomData,
        }
    }

    /// The value as it goes on the wire.
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

impl<K> Clone for Id<K> {
    fn clone(&self) -> Self {
        Id::new(self.value.clone())
    }
}

impl<K> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<K> Eq for Id<K> {}

impl<K> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value.cmp(&other.value)
    }
}

impl<K> Hash for Id<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.value.hash(state);
    }
}

impl<K> AsRef<str> for Id<K> {
    fn as_ref(&self) -> &str {
        &self.value
    }
}

impl<K> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl<K: Kind> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:?})", K::NAME, self.value)
    }
}

/// Marks a Rocket.Chat room id (`rid`).
pub enum Room {}
/// Marks a Rocket.Chat user id.
pub enum User {}
/// Marks a Rocket.Chat message id.
pub enum Message {}
/// Marks a Livechat visitor token.
pub enum Visitor {}

impl Kind for Room {
    const NAME: &'static str = "RoomId";
}
impl Kind for User {
    const NAME: &'static str = "UserId";
}
impl Kind for Message {
    const NAME: &'static str = "MessageId";
}
impl Kind for Visitor {
    const NAME: &'static str = "VisitorToken";
}

/// A Rocket.Chat room id (`rid`).
pub type RoomId = Id<Room>;
/// A Rocket.Chat user id.
pub type UserId = Id<User>;
/// A Rocket.Chat message id.
pub type MessageId = Id<Message>;
/// A Livechat visitor token.
pub type VisitorToken = Id<Visitor>;
