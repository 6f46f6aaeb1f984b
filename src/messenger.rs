//! The Facebook adapter: the Graph API client (Send API, OAuth, page subscriptions) and the
//! Messenger webhook. Only this module knows Meta's wire formats.

pub mod graph;
mod lazy_json;
pub mod webhook;
