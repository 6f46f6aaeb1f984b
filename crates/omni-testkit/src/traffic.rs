//! What both far ends recorded, grouped per conversation, for the fault tests: every customer
//! message in the Livechat rooms and every agent reply the Send API accepted. Test texts carry
//! their conversation as a first word (`"c3 m7"`), so a message in the wrong room shows up.

use std::collections::BTreeMap;
use std::time::Duration;

use omni_sim::graph::GraphSim;
use omni_sim::rocketchat::RocketChatSim;

/// How the metadata the gateway puts on agent replies starts (`omni-gateway:agent:<id>:<part>`;
/// its own welcome and offline texts differ).
const AGENT_METADATA: &str = "omni-gateway:agent:";

/// `"c{conversation} {what}{n}"`, the shape every test text has.
pub fn text(conversation: usize, what: &str, n: usize) -> String {
    format!("c{conversation} {what}{n}")
}

/// Whether `text` has the shape of [`text`]: `c<digits> <what><digits>`.
fn is_test_text(text: &str) -> bool {
    let Some((conversation, what)) = text.split_once(' ') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    conversation.strip_prefix('c').is_some_and(digits)
        && what
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .len()
            < what.len()
        && digits(what.trim_start_matches(|c: char| c.is_ascii_alphabetic()))
}

/// Customer messages per room, keyed by the conversation named in the first one, oldest first.
/// A room holding two conversations' messages is kept under the first and fails the comparison.
pub fn customer_messages(chat: &RocketChatSim) -> BTreeMap<String, Vec<String>> {
    let mut by_conversation: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for room in chat.livechat_rooms() {
        let texts: Vec<String> = chat
            .messages(&room.id)
            .into_iter()
            .filter(|m| m.token.is_some())
            .map(|m| m.msg)
            .collect();
        if let Some(first) = texts.first() {
            let tag = first.split(' ').next().unwrap_or_default().to_owned();
            by_conversation.entry(tag).or_default().extend(texts);
        }
    }
    by_conversation
}

/// Agent replies the Send API accepted, per recipient PSID (or IGSID), oldest first. Instagram
/// sends carry no metadata (`docs/instagram.md` §6.1): there the test text's shape tells agent
/// replies from the gateway's own texts.
pub fn agent_replies(graph: &GraphSim) -> BTreeMap<String, Vec<String>> {
    let mut by_psid: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for sent in graph.sent_messages() {
        let tagged = sent
            .metadata
            .as_deref()
            .is_some_and(|m| m.starts_with(AGENT_METADATA));
        let test_text = sent.text.as_deref().is_some_and(is_test_text);
        if tagged || (sent.instagram && test_text) {
            if let Some(text) = sent.text {
                by_psid.entry(sent.recipient).or_default().push(text);
            }
        }
    }
    by_psid
}

/// Waits until `done` holds for what both ends recorded, up to `within`; then a little longer, so
/// a late duplicate would show up before the caller compares. Panics with `describe()` on time-out.
pub async fn settle(
    within: Duration,
    mut done: impl FnMut() -> bool,
    describe: impl Fn() -> String,
) -> Duration {
    let started = tokio::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < within,
            "not everything arrived within {within:?}: {}",
            describe()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    took
}
