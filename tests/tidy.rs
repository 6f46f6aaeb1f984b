//! Tidy: the module boundaries ARCHITECTURE.md states, checked over the source tree (in the manner
//! of rust-analyzer's tidy tests), so a change that breaks one fails here with the file and line.
//!
//! - Only `src/rocketchat/` knows Rocket.Chat's error codes, stream names and DDP JSON; the
//!   simulator (`src/sim/`) plays Rocket.Chat, so it speaks them too.
//! - Only the store (`src/store.rs`, `src/store/`) uses sled.

use std::fs;
use std::path::{Path, PathBuf};

/// Rocket.Chat's wire words: error codes (`errorType`), system message types, stream names and
/// the keys of DDP messages and stream parameters.
const ROCKETCHAT_WORDS: &[&str] = &[
    "\"error-",
    "\"no-agent-online\"",
    "\"room-closed\"",
    "\"invalid-room\"",
    "\"invalid-token\"",
    "\"livechat-close\"",
    "\"stream-",
    "\"__my_messages__\"",
    "\"useCollection\"",
    "\"visitorToken\"",
    "\"msg\":\"sub\"",
    "\"msg\": \"sub\"",
    "\"msg\":\"method\"",
    "\"msg\": \"method\"",
];

/// Where Rocket.Chat's wire words may appear.
const ROCKETCHAT_HOMES: &[&str] = &[
    "src/rocketchat/",
    "src/rocketchat.rs",
    "src/sim/",
    "src/sim.rs",
];

/// Uses of sled in code (comments may name it).
const SLED_WORDS: &[&str] = &["sled::", "use sled"];
const SLED_HOMES: &[&str] = &["src/store/", "src/store.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `file:line: text` of `src/` outside `homes` whose code (not its comment) holds a word.
fn offences(words: &[&str], homes: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .to_string_lossy()
            .replace('\\', "/");
        if homes.iter().any(|home| relative.starts_with(home)) {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if words.iter().any(|word| code.contains(word)) {
                found.push(format!("{relative}:{}: {}", n + 1, code));
            }
        }
    }
    found
}

#[test]
fn rocketchat_wire_words_stay_in_the_adapter() {
    let found = offences(ROCKETCHAT_WORDS, ROCKETCHAT_HOMES);
    assert!(
        found.is_empty(),
        "Rocket.Chat error codes, stream names or DDP JSON outside src/rocketchat/ (give the adapter a typed method or type instead):\n{}",
        found.join("\n")
    );
}

#[test]
fn sled_stays_in_the_store() {
    let found = offences(SLED_WORDS, SLED_HOMES);
    assert!(
        found.is_empty(),
        "sled used outside src/store (add a Store method instead):\n{}",
        found.join("\n")
    );
}

/// The checks can fail: a planted offence is found, with its file and line.
#[test]
fn the_checks_find_what_they_look_for() {
    let found = offences(&["pub mod relay;"], &[]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("src/lib.rs:") && found[0].ends_with(": pub mod relay;"),
        "{found:?}"
    );
}
