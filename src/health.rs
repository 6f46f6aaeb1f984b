//! What the gateway knows about its own health: the Rocket.Chat link and the last problem that
//! needs a person. Written by the daemon's loops, read by `/readyz`, `/metrics` and `status`.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// The state of the link to Rocket.Chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Not connected yet, or reconnecting; `reason` says why (for `/readyz`).
    Down { reason: String },
    /// Logged in as the bot, streams subscribed.
    Up { since_ms: u64 },
}

#[derive(Default)]
struct State {
    link: Option<Link>,
    login_problem: Option<String>,
    stopping: bool,
}

/// Shared, cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    state: Arc<RwLock<State>>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        // The state is plain data that is always valid between statements: recover from poison.
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn link_up(&self) {
        let mut state = self.write();
        state.link = Some(Link::Up { since_ms: now_ms() });
        state.login_problem = None;
    }

    pub fn link_down(&self, reason: impl Into<String>) {
        self.write().link = Some(Link::Down {
            reason: reason.into(),
        });
    }

    /// A login failure a person must fix (wrong password, 2FA): kept until the next good login.
    pub fn login_failed(&self, message: impl Into<String>) {
        let message = message.into();
        let mut state = self.write();
        state.link = Some(Link::Down {
            reason: message.clone(),
        });
        state.login_problem = Some(message);
    }

    pub fn stopping(&self) {
        self.write().stopping = true;
    }

    pub fn link(&self) -> Link {
        self.read().link.clone().unwrap_or(Link::Down {
            reason: "connecting to rocket.chat".into(),
        })
    }

    pub fn login_problem(&self) -> Option<String> {
        self.read().login_problem.clone()
    }

    /// `Ok` when the gateway is serving; otherwise the reason, for `/readyz`.
    pub fn readiness(&self) -> Result<(), String> {
        let state = self.read();
        if state.stopping {
            return Err("shutting down".into());
        }
        match &state.link {
            Some(Link::Up { .. }) => Ok(()),
            Some(Link::Down { reason }) => Err(format!("rocket.chat link down: {reason}")),
            None => Err("connecting to rocket.chat".into()),
        }
    }
}

/// Milliseconds since the Unix epoch (wall clock, for records and messages, never for timers).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
