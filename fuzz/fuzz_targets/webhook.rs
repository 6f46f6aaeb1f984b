//! The webhook path as `http::receive_webhook` walks it: the signature check over the raw bytes,
//! `messenger::webhook::parse`, `event()` on every item, and `relay::render::parts`. The input is
//! signed with a fixed secret so the parser is reached; the signature check also runs on the
//! input's first line read as a header, so malformed headers are exercised too.
#![no_main]

use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use omni_gateway::messenger::webhook;
use omni_gateway::relay::render;
use sha2::Sha256;

const SECRET: &[u8] = b"fuzz-app-secret";

fuzz_target!(|data: &[u8]| {
    let header = data
        .split(|b| *b == b'\n')
        .next()
        .and_then(|line| std::str::from_utf8(line).ok());
    let _ = webhook::verify_signature(SECRET, header, data);

    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET).expect("any key length");
    mac.update(data);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        webhook::verify_signature(SECRET, Some(&signature), data),
        Ok(()),
        "a correct signature is accepted"
    );
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(
            webhook::both_readings_agree(text),
            "the usual body's reader and the general way differ"
        );
    }
    let parsed = match webhook::parse(data) {
        Ok(parsed) => parsed,
        Err(err) => {
            // The items of a body the JSON pass accepts are always found in its text.
            assert!(!err.to_string().contains("could not be located"), "{err}");
            return;
        }
    };
    for envelope in &parsed.events {
        // The stored text is one whole JSON object.
        let item: serde_json::Value =
            serde_json::from_str(envelope.text).expect("an item's text is JSON");
        assert!(item.is_object(), "{}", envelope.text);
        // Read again from the stored text, as the relay reads it at delivery: the same meaning.
        assert_eq!(webhook::dedupe_key(envelope.text), envelope.dedupe_key);
        let event = webhook::event(envelope.text);
        assert_eq!(webhook::Meaning::of(&event), envelope.meaning);
        let _ = render::parts(&event);
    }
});
