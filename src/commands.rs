//! The admin command grammar (`docs/contract.md` §4): chat text in, a typed [`Command`] out.
//!
//! Architecture invariant: this module is pure. It does no I/O and knows nothing of Rocket.Chat
//! or Facebook, so every spelling and every error is tested from a table.
//!
//! Accepted spellings: `/facebook <cmd>`, `!facebook <cmd>`, `facebook <cmd>` (prefix
//! case-insensitive, followed by any whitespace), and, in the bot's own direct message, the bare
//! `<cmd>`. A text value is the rest of the message as typed, line breaks included, with
//! surrounding whitespace and one pair of surrounding quotes removed.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use crate::ids::PageId;

/// Messenger refuses message text of 2000 characters or more ("less than 2000 characters").
pub const MAX_TEXT_CHARS: usize = 2000;

/// A command an admin (or, for `help`, anyone) asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Authorize,
    /// One page, or with `None` every page and the grant itself.
    Unauthorize {
        page: Option<PageId>,
    },
    Pages,
    /// With `change: None`, show the page's settings.
    Edit {
        page: PageId,
        change: Option<PageEdit>,
    },
    Subscribe {
        page: PageId,
    },
    Unsubscribe {
        page: PageId,
    },
    Status,
    /// Puts the messages Rocket.Chat refused for good back in their conversations: one page's,
    /// or with `None` (`all`) every page's.
    Retry {
        page: Option<PageId>,
    },
}

/// One setting of a page; `None` clears it (`none` / `off`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageEdit {
    /// A department name or id, checked against Rocket.Chat by the caller.
    Department(Option<String>),
    Welcome(Option<String>),
    Finished(Option<String>),
    Offline(Option<String>),
}

/// What a chat message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not addressed to us: leave it alone.
    NotACommand,
    Command(Command),
    /// Addressed to us but wrong: answer with the error and the usage.
    Invalid(UsageError),
}

/// A command we recognised as ours but could not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}. Usage: {usage}")]
pub struct UsageError {
    pub message: String,
    pub usage: &'static str,
}

impl Command {
    /// The command word, for logs and the audit trail.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Help => "help",
            Command::Authorize => "authorize",
            Command::Unauthorize { .. } => "unauthorize",
            Command::Pages => "pages",
            Command::Edit { .. } => "edit",
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
            Command::Status => "status",
            Command::Retry { .. } => "retry",
        }
    }

    /// Everything but `help` is for admins only.
    pub fn needs_admin(&self) -> bool {
        !matches!(self, Command::Help)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const USAGE_COMMANDS: &str =
    "help | authorize | unauthorize | pages | edit | subscribe | unsubscribe | status | retry";
const USAGE_HELP: &str = "help";
const USAGE_AUTHORIZE: &str = "authorize";
const USAGE_UNAUTHORIZE: &str = "unauthorize [pageId]";
const USAGE_PAGES: &str = "pages";
const USAGE_EDIT: &str = "edit <pageId> [department|welcome|finished|offline <value>]";
const USAGE_DEPARTMENT: &str = "edit <pageId> department <name or id | none>";
const USAGE_WELCOME: &str = "edit <pageId> welcome <text | off>";
const USAGE_FINISHED: &str = "edit <pageId> finished <text | off>";
const USAGE_OFFLINE: &str = "edit <pageId> offline <text | off>";
const USAGE_SUBSCRIBE: &str = "subscribe <pageId>";
const USAGE_UNSUBSCRIBE: &str = "unsubscribe <pageId>";
const USAGE_STATUS: &str = "status";
const USAGE_RETRY: &str = "retry <pageId | all>";

/// Each usage line with what it does, in the order `help` lists them.
const HELP: [(&str, &str); 13] = [
    (USAGE_HELP, "this list (anyone may ask)"),
    (
        USAGE_AUTHORIZE,
        "get a Facebook Login link to connect pages",
    ),
    (
        USAGE_UNAUTHORIZE,
        "disconnect one page, or without a page id all pages and the Facebook grant",
    ),
    (
        USAGE_PAGES,
        "connected pages and their Instagram accounts: id, name, department, status, messages held",
    ),
    (
        "edit <pageId>",
        "show a page's settings (or an Instagram account's, by its id) and how to change them",
    ),
    (
        USAGE_DEPARTMENT,
        "route the page's conversations to an Omnichannel department",
    ),
    (
        USAGE_WELCOME,
        "message sent to a visitor when a new conversation starts",
    ),
    (
        USAGE_FINISHED,
        "message sent to the visitor when the conversation is closed",
    ),
    (USAGE_OFFLINE, "message sent when no agent is available"),
    (USAGE_SUBSCRIBE, "get this page's notices by direct message"),
    (USAGE_UNSUBSCRIBE, "stop getting this page's notices"),
    (
        USAGE_STATUS,
        "Rocket.Chat link, pages and tokens, held conversations, messages set aside, outbox depth, last webhook",
    ),
    (
        USAGE_RETRY,
        "deliver again the messages Rocket.Chat refused for good (after fixing why), of one page or all",
    ),
];

/// The `help` reply: a heading, then one line per command with its usage and what it does.
pub fn help_text() -> String {
    let mut text = String::from(
        "Facebook gateway commands. In a direct message with me type them as they are; elsewhere start with `!facebook` (or `/facebook` where unrecognized slash commands are allowed). All but help need an admin.",
    );
    for (usage, what) in HELP {
        text.push_str(&format!("\n`{usage}` — {what}"));
    }
    text
}

/// `/facebook`, `!facebook` or `facebook` as a whole word at the start: `/facebookx` is not ours.
static PREFIX: LazyLock<Regex> =
    // A literal pattern: it compiles, so this cannot panic (the unit tests force it).
    LazyLock::new(|| {
        Regex::new(r"(?i)^[/!]?facebook(?:\s+|$)").expect("literal regex compiles")
    });

/// Reads one chat message. `bare_allowed` is true in the bot's own direct message, where any text
/// is a command attempt even without the `facebook` prefix.
pub fn parse(text: &str, bare_allowed: bool) -> Parsed {
    let text = text.trim();
    if text.is_empty() {
        return Parsed::NotACommand;
    }
    let rest = match PREFIX.find(text) {
        Some(prefix) => &text[prefix.end()..],
        None if bare_allowed => text,
        None => return Parsed::NotACommand,
    };
    if rest.is_empty() {
        return Parsed::Command(Command::Help);
    }
    match parse_command(rest) {
        Ok(command) => Parsed::Command(command),
        Err(err) => Parsed::Invalid(err),
    }
}

fn parse_command(text: &str) -> Result<Command, UsageError> {
    let (word, args) = split_word(text);
    match word.to_lowercase().as_str() {
        "help" => no_args(args, USAGE_HELP).map(|()| Command::Help),
        "authorize" => no_args(args, USAGE_AUTHORIZE).map(|()| Command::Authorize),
        "pages" => no_args(args, USAGE_PAGES).map(|()| Command::Pages),
        "status" => no_args(args, USAGE_STATUS).map(|()| Command::Status),
        "unauthorize" => {
            let (page, extra) = split_word(args);
            no_args(extra, USAGE_UNAUTHORIZE)?;
            let page = if page.is_empty() {
                None
            } else {
                Some(page_id(page, USAGE_UNAUTHORIZE)?)
            };
            Ok(Command::Unauthorize { page })
        }
        "subscribe" => one_page(args, USAGE_SUBSCRIBE).map(|page| Command::Subscribe { page }),
        "unsubscribe" => {
            one_page(args, USAGE_UNSUBSCRIBE).map(|page| Command::Unsubscribe { page })
        }
        "edit" => parse_edit(args),
        "retry" => parse_retry(args),
        _ => Err(usage(
            format!("unknown command '{}'", shorten(word)),
            USAGE_COMMANDS,
        )),
    }
}

fn parse_retry(args: &str) -> Result<Command, UsageError> {
    let (target, extra) = split_word(args);
    if target.is_empty() {
        return Err(usage("missing page id; give one, or all", USAGE_RETRY));
    }
    no_args(extra, USAGE_RETRY)?;
    if target.eq_ignore_ascii_case("all") {
        return Ok(Command::Retry { page: None });
    }
    Ok(Command::Retry {
        page: Some(page_id(target, USAGE_RETRY)?),
    })
}

fn parse_edit(args: &str) -> Result<Command, UsageError> {
    let (page, rest) = split_word(args);
    if page.is_empty() {
        return Err(usage("missing page id", USAGE_EDIT));
    }
    let page = page_id(page, USAGE_EDIT)?;
    if rest.is_empty() {
        return Ok(Command::Edit { page, change: None });
    }
    let (setting, value) = split_word(rest);
    type Make = fn(Option<String>) -> PageEdit;
    let (make, usage_line, is_text): (Make, _, _) = match setting.to_lowercase().as_str() {
        "department" => (PageEdit::Department, USAGE_DEPARTMENT, false),
        "welcome" => (PageEdit::Welcome, USAGE_WELCOME, true),
        "finished" => (PageEdit::Finished, USAGE_FINISHED, true),
        "offline" => (PageEdit::Offline, USAGE_OFFLINE, true),
        _ => {
            return Err(usage(
                format!(
                    "unknown setting '{}'; expected department, welcome, finished or offline",
                    shorten(setting)
                ),
                USAGE_EDIT,
            ));
        }
    };
    let value = setting_value(value, is_text, usage_line)?;
    Ok(Command::Edit {
        page,
        change: Some(make(value)),
    })
}

/// A setting's value: `off`/`none` (unquoted) clear it; otherwise the text with one pair of
/// surrounding quotes removed, so a quoted "off" is the word off.
fn setting_value(
    raw: &str,
    is_text: bool,
    usage_line: &'static str,
) -> Result<Option<String>, UsageError> {
    let clear_word = if is_text { "off" } else { "none" };
    if raw.is_empty() {
        return Err(usage(
            format!("missing value; give one, or {clear_word} to clear it"),
            usage_line,
        ));
    }
    if raw.eq_ignore_ascii_case("off") || raw.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let value = strip_quotes(raw);
    if value.trim().is_empty() {
        return Err(usage(
            format!("the value is empty; use {clear_word} to clear it"),
            usage_line,
        ));
    }
    let chars = value.chars().count();
    if is_text && chars >= MAX_TEXT_CHARS {
        return Err(usage(
            format!(
                "the text is {chars} characters; Messenger accepts fewer than {MAX_TEXT_CHARS}"
            ),
            usage_line,
        ));
    }
    Ok(Some(value.to_owned()))
}

/// Removes one pair of matching surrounding quotes: "…", '…', “…” or ‘…’.
fn strip_quotes(value: &str) -> &str {
    const PAIRS: [(char, char); 4] = [('"', '"'), ('\'', '\''), ('“', '”'), ('‘', '’')];
    for (open, close) in PAIRS {
        if let Some(inner) = value.strip_prefix(open).and_then(|v| v.strip_suffix(close)) {
            return inner;
        }
    }
    value
}

fn one_page(args: &str, usage_line: &'static str) -> Result<PageId, UsageError> {
    let (page, extra) = split_word(args);
    if page.is_empty() {
        return Err(usage("missing page id", usage_line));
    }
    no_args(extra, usage_line)?;
    page_id(page, usage_line)
}

/// Facebook page ids are decimal numbers.
fn page_id(word: &str, usage_line: &'static str) -> Result<PageId, UsageError> {
    if word.bytes().all(|b| b.is_ascii_digit()) {
        Ok(PageId::new(word))
    } else {
        Err(usage(
            format!("page id must be digits, got '{}'", shorten(word)),
            usage_line,
        ))
    }
}

fn no_args(args: &str, usage_line: &'static str) -> Result<(), UsageError> {
    if args.is_empty() {
        Ok(())
    } else {
        let (first, _) = split_word(args);
        Err(usage(
            format!("unexpected '{}'", shorten(first)),
            usage_line,
        ))
    }
}

/// The first whitespace-separated word and the rest, both without surrounding whitespace.
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim();
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    }
}

/// Keeps an echoed word short enough for a one-line reply.
fn shorten(word: &str) -> String {
    const MAX: usize = 40;
    if word.chars().count() <= MAX {
        word.to_owned()
    } else {
        let head: String = word.chars().take(MAX).collect();
        format!("{head}…")
    }
}

fn usage(message: impl Into<String>, usage: &'static str) -> UsageError {
    UsageError {
        message: message.into(),
        usage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Expect {
        Not,
        Cmd(Command),
        Bad(&'static str, &'static str),
    }
    use Expect::{Bad, Cmd, Not};

    fn page(id: &str) -> PageId {
        PageId::new(id)
    }

    fn edit(id: &str, change: PageEdit) -> Expect {
        Cmd(Command::Edit {
            page: page(id),
            change: Some(change),
        })
    }

    fn text(value: &str) -> Option<String> {
        Some(value.to_owned())
    }

    #[test]
    fn grammar_table() {
        let long = format!("edit 1 welcome {}", "x".repeat(MAX_TEXT_CHARS));
        let just_under = format!("edit 1 offline {}", "é".repeat(MAX_TEXT_CHARS - 1));
        let rows: Vec<(&str, bool, Expect)> = vec![
            // spellings of the prefix
            ("/facebook help", false, Cmd(Command::Help)),
            ("!facebook help", false, Cmd(Command::Help)),
            ("facebook help", false, Cmd(Command::Help)),
            ("/FaceBook HELP", false, Cmd(Command::Help)),
            ("  !FACEBOOK\t\tpages  ", false, Cmd(Command::Pages)),
            ("facebook\nstatus", false, Cmd(Command::Status)),
            ("/facebook", false, Cmd(Command::Help)),
            ("facebook", false, Cmd(Command::Help)),
            ("!facebook   ", false, Cmd(Command::Help)),
            ("/facebook", true, Cmd(Command::Help)),
            // bare commands only in the bot's own DM
            ("help", true, Cmd(Command::Help)),
            ("Authorize", true, Cmd(Command::Authorize)),
            ("help", false, Not),
            ("pages", false, Not),
            ("hello there", false, Not),
            ("", true, Not),
            ("   ", false, Not),
            ("/facebookx help", false, Not),
            ("facebooking is fun", false, Not),
            (
                "/facebookx help",
                true,
                Bad("unknown command '/facebookx'", USAGE_COMMANDS),
            ),
            (
                "hello",
                true,
                Bad("unknown command 'hello'", USAGE_COMMANDS),
            ),
            (
                "/facebook frobnicate",
                false,
                Bad("unknown command 'frobnicate'", USAGE_COMMANDS),
            ),
            (
                "/giphy cats",
                true,
                Bad("unknown command '/giphy'", USAGE_COMMANDS),
            ),
            // every command
            ("facebook authorize", false, Cmd(Command::Authorize)),
            (
                "facebook unauthorize",
                false,
                Cmd(Command::Unauthorize { page: None }),
            ),
            (
                "facebook unauthorize 1234567890",
                false,
                Cmd(Command::Unauthorize {
                    page: Some(page("1234567890")),
                }),
            ),
            ("status", true, Cmd(Command::Status)),
            (
                "subscribe 42",
                true,
                Cmd(Command::Subscribe { page: page("42") }),
            ),
            (
                "UNSUBSCRIBE   42 ",
                true,
                Cmd(Command::Unsubscribe { page: page("42") }),
            ),
            (
                "edit 42",
                true,
                Cmd(Command::Edit {
                    page: page("42"),
                    change: None,
                }),
            ),
            (
                "retry 42",
                true,
                Cmd(Command::Retry {
                    page: Some(page("42")),
                }),
            ),
            (
                "facebook retry ALL",
                false,
                Cmd(Command::Retry { page: None }),
            ),
            (
                "/facebook Retry all",
                false,
                Cmd(Command::Retry { page: None }),
            ),
            // edit values
            (
                "edit 42 department Sales",
                true,
                edit("42", PageEdit::Department(text("Sales"))),
            ),
            (
                "edit 42 Department  Sales   Team ",
                true,
                edit("42", PageEdit::Department(text("Sales   Team"))),
            ),
            (
                "edit 42 department none",
                true,
                edit("42", PageEdit::Department(None)),
            ),
            (
                "edit 42 department NONE",
                true,
                edit("42", PageEdit::Department(None)),
            ),
            (
                "edit 42 department \"none\"",
                true,
                edit("42", PageEdit::Department(text("none"))),
            ),
            (
                "edit 123 welcome Hi there! An agent will be with you shortly.",
                true,
                edit(
                    "123",
                    PageEdit::Welcome(text("Hi there! An agent will be with you shortly.")),
                ),
            ),
            (
                "edit 1 welcome   two  spaces  kept  ",
                true,
                edit("1", PageEdit::Welcome(text("two  spaces  kept"))),
            ),
            (
                "edit 1 welcome \"quoted text\"",
                true,
                edit("1", PageEdit::Welcome(text("quoted text"))),
            ),
            (
                "edit 1 welcome 'single'",
                true,
                edit("1", PageEdit::Welcome(text("single"))),
            ),
            (
                "edit 1 welcome “curly”",
                true,
                edit("1", PageEdit::Welcome(text("curly"))),
            ),
            (
                "edit 1 welcome \"unbalanced",
                true,
                edit("1", PageEdit::Welcome(text("\"unbalanced"))),
            ),
            (
                "edit 1 welcome \"say \"hi\"\"",
                true,
                edit("1", PageEdit::Welcome(text("say \"hi\""))),
            ),
            (
                "edit 1 welcome line one\nline two",
                true,
                edit("1", PageEdit::Welcome(text("line one\nline two"))),
            ),
            (
                "edit 1 welcome off",
                true,
                edit("1", PageEdit::Welcome(None)),
            ),
            (
                "edit 1 welcome OFF",
                true,
                edit("1", PageEdit::Welcome(None)),
            ),
            (
                "edit 1 welcome \"off\"",
                true,
                edit("1", PageEdit::Welcome(text("off"))),
            ),
            (
                "edit 1 finished Thanks, bye",
                true,
                edit("1", PageEdit::Finished(text("Thanks, bye"))),
            ),
            (
                "edit 1 finished off",
                true,
                edit("1", PageEdit::Finished(None)),
            ),
            (
                "edit 1 offline We are closed",
                true,
                edit("1", PageEdit::Offline(text("We are closed"))),
            ),
            (
                "facebook edit 1 OFFLINE none",
                false,
                edit("1", PageEdit::Offline(None)),
            ),
            (
                just_under.as_str(),
                true,
                edit("1", PageEdit::Offline(Some("é".repeat(MAX_TEXT_CHARS - 1)))),
            ),
            // errors
            ("help me", true, Bad("unexpected 'me'", USAGE_HELP)),
            (
                "authorize now",
                true,
                Bad("unexpected 'now'", USAGE_AUTHORIZE),
            ),
            ("pages 1", true, Bad("unexpected '1'", USAGE_PAGES)),
            (
                "status please",
                true,
                Bad("unexpected 'please'", USAGE_STATUS),
            ),
            (
                "unauthorize abc",
                true,
                Bad("page id must be digits, got 'abc'", USAGE_UNAUTHORIZE),
            ),
            (
                "unauthorize 1 2",
                true,
                Bad("unexpected '2'", USAGE_UNAUTHORIZE),
            ),
            (
                "retry",
                true,
                Bad("missing page id; give one, or all", USAGE_RETRY),
            ),
            (
                "retry every",
                true,
                Bad("page id must be digits, got 'every'", USAGE_RETRY),
            ),
            ("retry all 1", true, Bad("unexpected '1'", USAGE_RETRY)),
            ("subscribe", true, Bad("missing page id", USAGE_SUBSCRIBE)),
            (
                "subscribe 12a",
                true,
                Bad("page id must be digits, got '12a'", USAGE_SUBSCRIBE),
            ),
            (
                "subscribe 1 2",
                true,
                Bad("unexpected '2'", USAGE_SUBSCRIBE),
            ),
            (
                "unsubscribe",
                true,
                Bad("missing page id", USAGE_UNSUBSCRIBE),
            ),
            (
                "unsubscribe -5",
                true,
                Bad("page id must be digits, got '-5'", USAGE_UNSUBSCRIBE),
            ),
            ("edit", true, Bad("missing page id", USAGE_EDIT)),
            (
                "edit my-page",
                true,
                Bad("page id must be digits, got 'my-page'", USAGE_EDIT),
            ),
            (
                "edit ４２",
                true,
                Bad("page id must be digits, got '４２'", USAGE_EDIT),
            ),
            (
                "edit 1 colour blue",
                true,
                Bad("unknown setting 'colour'", USAGE_EDIT),
            ),
            (
                "edit 1 department",
                true,
                Bad(
                    "missing value; give one, or none to clear it",
                    USAGE_DEPARTMENT,
                ),
            ),
            (
                "edit 1 welcome",
                true,
                Bad("missing value; give one, or off to clear it", USAGE_WELCOME),
            ),
            (
                "edit 1 finished   ",
                true,
                Bad("missing value", USAGE_FINISHED),
            ),
            (
                "edit 1 offline \"\"",
                true,
                Bad("the value is empty; use off to clear it", USAGE_OFFLINE),
            ),
            (
                "edit 1 department ' '",
                true,
                Bad("the value is empty; use none to clear it", USAGE_DEPARTMENT),
            ),
            (
                long.as_str(),
                true,
                Bad(
                    "the text is 2000 characters; Messenger accepts fewer than 2000",
                    USAGE_WELCOME,
                ),
            ),
            (
                "facebook unauthorize aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
                Bad(
                    "got 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…'",
                    USAGE_UNAUTHORIZE,
                ),
            ),
        ];
        assert!(rows.len() >= 40);
        let mut failures = Vec::new();
        for (input, bare, expect) in &rows {
            let got = parse(input, *bare);
            let ok = match (expect, &got) {
                (Not, Parsed::NotACommand) => true,
                (Cmd(want), Parsed::Command(have)) => want == have,
                (Bad(message, usage), Parsed::Invalid(err)) => {
                    err.message.contains(message) && err.usage == *usage
                }
                _ => false,
            };
            if !ok {
                let shown: String = input.chars().take(60).collect();
                failures.push(format!("{shown:?} (bare: {bare}): got {got:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} rows failed:\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn usage_error_is_one_line_with_usage() {
        let Parsed::Invalid(err) = parse("facebook frobnicate", false) else {
            panic!("expected a usage error");
        };
        assert_eq!(
            err.to_string(),
            "unknown command 'frobnicate'. Usage: help | authorize | unauthorize | pages | edit | subscribe | unsubscribe | status | retry"
        );
        let Parsed::Invalid(err) = parse("subscribe x", true) else {
            panic!("expected a usage error");
        };
        assert_eq!(
            err.to_string(),
            "page id must be digits, got 'x'. Usage: subscribe <pageId>"
        );
    }

    #[test]
    fn names_and_admin_rights() {
        let rows = [
            (Command::Help, "help", false),
            (Command::Authorize, "authorize", true),
            (Command::Unauthorize { page: None }, "unauthorize", true),
            (Command::Pages, "pages", true),
            (
                Command::Edit {
                    page: page("1"),
                    change: None,
                },
                "edit",
                true,
            ),
            (Command::Subscribe { page: page("1") }, "subscribe", true),
            (
                Command::Unsubscribe { page: page("1") },
                "unsubscribe",
                true,
            ),
            (Command::Status, "status", true),
            (Command::Retry { page: None }, "retry", true),
        ];
        for (command, name, admin) in rows {
            assert_eq!(command.name(), name);
            assert_eq!(command.needs_admin(), admin, "{name}");
        }
    }

    #[test]
    fn help_lists_every_command_once_per_line() {
        let help = help_text();
        let lines: Vec<&str> = help.lines().collect();
        assert_eq!(lines.len(), 1 + HELP.len());
        for word in USAGE_COMMANDS.split(" | ") {
            assert!(
                lines
                    .iter()
                    .skip(1)
                    .any(|line| line.starts_with(&format!("`{word}"))),
                "help misses {word}"
            );
        }
        assert!(
            lines.iter().skip(1).all(|line| line.contains("` — ")),
            "{help}"
        );
    }
}
