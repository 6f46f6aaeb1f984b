//! The Facebook adapter: the Graph API client (Send API, OAuth, page subscriptions) and the
//! Messenger webhook. Only this module knows Meta's wire formats.

mod borrowed_json;
pub mod graph;
pub mod webhook;
