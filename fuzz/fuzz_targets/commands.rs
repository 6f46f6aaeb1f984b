//! `commands::parse` in both modes (prefixed only, and the bot's own DM where a bare command is
//! allowed): any text gets a `Parsed`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omni_gateway::commands;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for bare_allowed in [false, true] {
        let _ = commands::parse(&text, bare_allowed);
    }
});
