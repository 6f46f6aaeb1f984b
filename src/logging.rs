//! Where log lines go and how they look. Logs are written to stderr in one of three styles:
//!
//! - a terminal: coloured, with a timestamp (colour is dropped when `NO_COLOR` is set,
//!   <https://no-color.org>);
//! - the systemd journal (`JOURNAL_STREAM` names our stderr): no colour, no timestamp (the
//!   journal stamps each line itself) and each line prefixed with its syslog priority as
//!   `<N>` (sd-daemon(3)), so `journalctl -p warning` filters by level;
//! - anything else (a file, a pipe): plain text with a timestamp, no escape codes.
//!
//! `--log-format json` writes one JSON object per line whatever stderr is.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How the text log is written, decided once at start-up from the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextStyle {
    /// A person watches: colour and timestamps.
    Terminal,
    /// systemd's journal: `<N>` priorities, no timestamps, no colour.
    Journal,
    /// A file or a pipe: timestamps, no colour.
    Plain,
}

impl TextStyle {
    /// Looks at stderr and the environment (`JOURNAL_STREAM`, `NO_COLOR`).
    pub fn detect() -> TextStyle {
        let stderr_id = stderr_device_inode();
        TextStyle::decide(
            std::env::var("JOURNAL_STREAM").ok().as_deref(),
            stderr_id,
            std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            std::io::stderr().is_terminal(),
        )
    }

    /// `JOURNAL_STREAM` is `<device>:<inode>` of the stream systemd connected; it counts only
    /// when it is our stderr, since a child of a journal-logged process inherits the variable
    /// while its stderr may go elsewhere (systemd.exec(5), "JOURNAL_STREAM").
    pub fn decide(
        journal_stream: Option<&str>,
        stderr_id: Option<(u64, u64)>,
        no_color: bool,
        terminal: bool,
    ) -> TextStyle {
        let journal = journal_stream
            .and_then(|v| v.split_once(':'))
            .and_then(|(dev, ino)| Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?)))
            .is_some_and(|id| Some(id) == stderr_id);
        if journal {
            TextStyle::Journal
        } else if terminal && !no_color {
            TextStyle::Terminal
        } else {
            TextStyle::Plain
        }
    }
}

#[cfg(unix)]
fn stderr_device_inode() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn stderr_device_inode() -> Option<(u64, u64)> {
    None
}

/// The syslog priority sd-daemon(3) expects in front of a journal line.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Puts `<N>` in front of what the inner formatter writes.
struct PriorityPrefix<F>(F);

impl<S, N, F> FormatEvent<S, N> for PriorityPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// `RUST_LOG` decides the levels (default `default_level`).
pub fn init(json: bool, default_level: &str, style: TextStyle) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
        return;
    }
    match style {
        TextStyle::Terminal => builder.with_ansi(true).init(),
        TextStyle::Plain => builder.with_ansi(false).init(),
        TextStyle::Journal => {
            let inner = tracing_subscriber::fmt::format()
                .without_time()
                .with_ansi(false);
            builder
                .with_ansi(false)
                .event_format(PriorityPrefix(inner))
                .init();
        }
    }
}

/// Writes one error line for a person, outside tracing (used before or instead of the log),
/// with the journal's priority prefix when that is where stderr goes.
pub fn error_line(style: TextStyle, line: &str) {
    if style == TextStyle::Journal {
        eprintln!("<3>omni-gateway: {line}");
    } else {
        eprintln!("omni-gateway: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn style_follows_the_environment() {
        let id = Some((64769, 1234));
        assert_eq!(
            TextStyle::decide(Some("64769:1234"), id, false, true),
            TextStyle::Journal
        );
        // Inherited from a parent whose stderr was the journal: ours is not.
        assert_eq!(
            TextStyle::decide(Some("64769:999"), id, false, false),
            TextStyle::Plain
        );
        assert_eq!(
            TextStyle::decide(Some("garbage"), id, false, true),
            TextStyle::Terminal
        );
        assert_eq!(TextStyle::decide(None, id, true, true), TextStyle::Plain);
        assert_eq!(TextStyle::decide(None, id, false, false), TextStyle::Plain);
    }

    #[test]
    fn priorities_match_sd_daemon() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}
