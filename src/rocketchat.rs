//! The Rocket.Chat adapter: the realtime API (DDP over WebSocket) for login and streams, and the
//! REST API for every action. Only this module knows Rocket.Chat's wire formats.

pub mod dates;
pub mod ddp;
pub mod livechat;
pub mod realtime;
pub mod rest;
pub mod setup;
