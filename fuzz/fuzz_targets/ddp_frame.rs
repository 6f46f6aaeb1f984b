//! `rocketchat::ddp::frame::decode`: any WebSocket text frame gets a frame or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omni_gateway::rocketchat::ddp::frame;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = frame::decode(text);
    }
});
