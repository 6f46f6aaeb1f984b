//! Tidy: the module boundaries ARCHITECTURE.md states, checked over the source tree (in the manner
//! of rust-analyzer's tidy tests), so a change that breaks one fails here with the file and line.
//!
//! - Only `src/rocketchat/` knows Rocket.Chat's error codes, stream names and DDP JSON (the
//!   simulator, which plays Rocket.Chat, is its own crate and is not scanned).
//! - Only the store (`src/store.rs`, `src/store/`) uses sled.
//! - The repository stands alone: no file points at notes a person who clones it does not have,
//!   and every `docs/…md §N` citation names a section that exists.

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
const ROCKETCHAT_HOMES: &[&str] = &["src/rocketchat/", "src/rocketchat.rs"];

/// Uses of sled in code (comments may name it).
const SLED_WORDS: &[&str] = &["sled::", "use sled"];
const SLED_HOMES: &[&str] = &["src/store/", "src/store.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    files_with(dir, &["rs"], out);
}

/// Build output, dependencies and fuzzing state: not the project's own text.
const NOT_OURS: &[&str] = &["target", "node_modules", ".git", "corpus", "artifacts"];

fn files_with(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if !NOT_OURS.iter().any(|n| name == *n) {
                files_with(&path, extensions, out);
            }
        } else if path
            .extension()
            .is_some_and(|e| extensions.iter().any(|x| e == *x))
        {
            out.push(path);
        }
    }
}

/// Notes that live outside the repository (the team's own design notes and references).
fn outside_reference() -> regex::Regex {
    regex::Regex::new(
        // Assembled from parts so that this file does not match the greps it enforces.
        &[
            r"\.\./",
            "shared|",
            "shared/",
            "reference|",
            "DESIGN",
            r"\.md|STYLE\.md|peers\.md|rocketchat-rich\.md|",
            r"reference/[a-z-]+\.md|§[A-D][0-9]",
        ]
        .concat(),
    )
    .expect("literal regex")
}

/// Every project text file: code, docs, configuration, scripts.
fn project_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    files_with(
        root,
        &["rs", "md", "toml", "sh", "service", "yml", "json", "mjs"],
        &mut files,
    );
    for script in [
        "contract/run",
        "fuzz/short-run",
        "packaging/check-deb",
        ".ci/run",
    ] {
        files.push(root.join(script));
    }
    files.retain(|f| !f.ends_with("tests/tidy.rs") && !f.ends_with("Cargo.lock"));
    files.sort();
    files
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
    let outside = outside_reference();
    for planted in [
        format!("see {}.md §5", "DESIGN"),
        "(reference/rocketchat.md §A4)".to_owned(),
        format!("../{}/x", "shared"),
    ] {
        assert!(outside.is_match(&planted), "{planted}");
    }
    assert!(!outside.is_match("`docs/rocketchat.md` §2.6"));
}

#[test]
fn nothing_points_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let outside = outside_reference();
    let mut found = Vec::new();
    for file in project_files() {
        let text = fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if outside.is_match(line) {
                let relative = file.strip_prefix(root).unwrap_or(&file).display();
                found.push(format!("{relative}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "references to notes outside the repository (put the fact in docs/ with its public source):\n{}",
        found.join("\n")
    );
}

#[test]
fn every_docs_citation_names_a_section_that_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let citation =
        regex::Regex::new(r"docs/([a-z-]+\.md)`? §(\d+(?:\.\d+)*)").expect("literal regex");
    let heading = regex::Regex::new(r"^#{2,4} (\d+(?:\.\d+)*)\.? ").expect("literal regex");
    let mut sections = std::collections::HashMap::new();
    let mut found = Vec::new();
    for file in project_files() {
        let text = fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            for cited in citation.captures_iter(line) {
                let (doc, section) = (cited[1].to_owned(), cited[2].to_owned());
                let known = sections.entry(doc.clone()).or_insert_with(|| {
                    fs::read_to_string(root.join("docs").join(&doc))
                        .unwrap_or_default()
                        .lines()
                        .filter_map(|l| heading.captures(l).map(|c| c[1].to_owned()))
                        .collect::<Vec<_>>()
                });
                if !known.contains(&section) {
                    let relative = file.strip_prefix(root).unwrap_or(&file).display();
                    found.push(format!("{relative}:{}: docs/{doc} §{section}", n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "citations of docs sections that do not exist:\n{}",
        found.join("\n")
    );
}
