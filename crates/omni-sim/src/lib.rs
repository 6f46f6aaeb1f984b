//! Simulators of the far ends, built from the wire facts in `shared/reference/`. They run
//! in-process on loopback and are used by the tests and by `omni-gateway sandbox`. They are strict:
//! what the real server rejects, they reject.

pub mod graph;
pub mod rocketchat;
