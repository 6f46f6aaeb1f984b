//! omni-gateway: connects Facebook Pages (Messenger) to Rocket.Chat Omnichannel.
//!
//! The crate is laid out as adapters at the edges (`rocketchat`, `messenger`, `http`), a small
//! domain core in the middle (`commands`, `admin`, `relay`), and the store behind one module
//! (`store`). See ARCHITECTURE.md for the code map and the invariants.

pub mod admin;
pub mod backoff;
pub mod check;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod health;
pub mod http;
pub mod ids;
pub mod logging;
pub mod messenger;
pub mod notices;
pub mod pages;
pub mod relay;
pub mod rocketchat;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod tls;
