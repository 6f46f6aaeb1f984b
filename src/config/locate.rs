//! Names the key a TOML error is about, from toml's spans: the file is parsed again into a tree
//! whose keys and values carry their byte ranges (toml's recovering parser, so a syntax error
//! still yields the keys around it), and the key or value holding the error's offset is the one
//! reported. Unknown keys are recognised against [`SECTIONS`], not from the message text.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::error::ConfigError;
use super::raw::SECTIONS;
use super::{SECRET_KEYS, location};

/// One key of the file: its path (`["store", "extra", "x"]`), where the key and its value are,
/// and what kind of value it holds.
struct Entry {
    path: Vec<String>,
    key: Range<usize>,
    value: Range<usize>,
    kind: &'static str,
}

fn kind(value: &DeValue<'_>) -> &'static str {
    // serde's own names, so the messages read alike.
    match value {
        DeValue::String(_) => "string",
        DeValue::Integer(_) => "integer",
        DeValue::Float(_) => "floating point",
        DeValue::Boolean(_) => "boolean",
        DeValue::Datetime(_) => "datetime",
        DeValue::Array(_) => "sequence",
        DeValue::Table(_) => "map",
    }
}

fn collect(table: &DeTable<'_>, prefix: &[String], out: &mut Vec<Entry>) {
    for (key, value) in table.iter() {
        let mut path = prefix.to_vec();
        path.push(key.get_ref().to_string());
        if let DeValue::Table(inner) = value.get_ref() {
            collect(inner, &path, out);
        }
        out.push(Entry {
            path,
            key: key.span(),
            value: value.span(),
            kind: kind(value.get_ref()),
        });
    }
}

/// Whether `offset` falls in `range`, its end included: an empty error span right after a value
/// (an unterminated string) belongs to that value.
fn holds(range: &Range<usize>, offset: usize) -> bool {
    range.start <= offset && offset <= range.end
}

/// `line L, column C` of a byte offset.
fn line_column(text: &str, offset: usize) -> String {
    let offset = (0..=offset.min(text.len()))
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    format!("line {line}, column {column}")
}

/// The keys a section accepts, or `None` for a section the file may not have.
fn known_keys(section: &str) -> Option<&'static [&'static str]> {
    SECTIONS
        .iter()
        .find(|(name, _)| *name == section)
        .map(|(_, keys)| *keys)
}

fn section_list() -> String {
    let names: Vec<String> = SECTIONS
        .iter()
        .map(|(name, _)| format!("[{name}]"))
        .collect();
    format!("one of {}", names.join(", "))
}

/// An unknown section or key on `path`, if any: the first component the schema does not have.
fn unknown(path: &[String], is_table: bool) -> Option<(String, String)> {
    let section = path.first()?;
    let Some(keys) = known_keys(section) else {
        let what = if is_table && path.len() == 1 {
            "unknown section"
        } else {
            "unknown section or key outside a section"
        };
        return Some((
            format!("[{section}]"),
            format!("{what}; expected {}", section_list()),
        ));
    };
    let key = path.get(1)?;
    (!keys.contains(&key.as_str())).then(|| {
        (
            location(section, key),
            format!("unknown key; expected one of {}", keys.join(", ")),
        )
    })
}

/// Turns a toml error on `text` into one line naming the key it is about. `syntax` says the
/// text is not TOML at all (as opposed to TOML with a wrong key or value).
pub(super) fn toml_error(
    err: &toml::de::Error,
    text: &str,
    origin: &Path,
    syntax: bool,
) -> ConfigError {
    let message = err.message().replace(", expected ", "; expected ");
    let Some(span) = err.span() else {
        return ConfigError::new(origin, None, format!("{message}; fix the TOML syntax"));
    };
    let (tree, _) = DeTable::parse_recoverable(text);
    let mut entries = Vec::new();
    collect(tree.get_ref(), &[], &mut entries);
    let offset = span.start;
    // The innermost key whose key or value holds the error.
    let found = entries
        .iter()
        .filter(|e| holds(&e.key, offset) || holds(&e.value, offset))
        .max_by_key(|e| e.path.len());

    if syntax {
        let message = format!("{message}; fix the TOML syntax");
        // Only a key = value in a section: the spans of tables the parser rebuilt around a
        // broken header do not say where the header was.
        let found = entries
            .iter()
            .filter(|e| e.kind != "map" && e.path.len() >= 2)
            .filter(|e| holds(&e.key, offset) || holds(&e.value, offset))
            .max_by_key(|e| e.path.len());
        let place = match found {
            Some(entry) => Some(location(&entry.path[0], &entry.path[1])),
            // A key the tree could not keep (a duplicate): the span is exactly that key, and
            // the section is the last header before it. Named only when the section has it.
            None => duplicate_key(&entries, text, &span),
        };
        let place = place.unwrap_or_else(|| line_column(text, offset));
        return ConfigError::new(origin, Some(place), message);
    }

    let Some(entry) = found else {
        return ConfigError::new(origin, Some(line_column(text, offset)), message);
    };
    if let Some((place, problem)) = unknown(&entry.path, entry.kind == "map") {
        return ConfigError::new(origin, Some(place), problem);
    }
    if entry.path.len() == 1 {
        return ConfigError::new(
            origin,
            Some(format!("[{}]", entry.path[0])),
            format!(
                "is a {}; expected a [{}] section with its keys",
                entry.kind, entry.path[0]
            ),
        );
    }
    let (section, key) = (&entry.path[0], &entry.path[1]);
    let problem = if SECRET_KEYS.contains(&key.as_str()) {
        // serde quotes the value it refused; a secret's value is never shown.
        format!("invalid type: {}; expected a string", entry.kind)
    } else {
        message.replace("expected u64", "expected a whole number of at least 1")
    };
    ConfigError::new(origin, Some(location(section, key)), problem)
}

fn duplicate_key(entries: &[Entry], text: &str, span: &Range<usize>) -> Option<String> {
    let name = text.get(span.clone())?;
    let section = entries
        .iter()
        .filter(|e| e.path.len() == 1 && e.kind == "map" && e.key.start < span.start)
        .max_by_key(|e| e.key.start)?;
    let keys = known_keys(&section.path[0])?;
    keys.contains(&name)
        .then(|| location(&section.path[0], name))
}
