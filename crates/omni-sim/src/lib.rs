//! Simulators of the far ends: Rocket.Chat (DDP + REST) and the Meta Graph API. They run
//! in-process on loopback and are used by omni-gateway's tests, benches and `omni-gateway sandbox`.
//! They are strict: what the real server rejects, they reject, and each behaviour names the
//! Rocket.Chat source file or Meta documentation page it follows.
//!
//! This crate does not depend on omni-gateway: a simulator that shared the gateway's code would
//! share its blind spots.

pub mod dates;
pub mod graph;
pub mod ids;
pub mod rocketchat;
