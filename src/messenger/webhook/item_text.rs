//! Where each `messaging[]` and `standby[]` item of a webhook body sits in the body's text. The
//! body is read once as JSON values, which checks it; this finds each item's text beside that
//! pass, so the item is stored as Meta sent it without a second JSON pass over it.
//!
//! It runs only on text serde_json has accepted, so it checks nothing: it follows strings and
//! brackets. It reads the body as the outline does: the last value of a repeated key counts,
//! keys are compared after their escapes are decoded, and a value of another kind than expected
//! holds no items.

use std::borrow::Cow;

/// The items' texts of one `entry[]` element.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct EntryItems<'a> {
    pub messaging: Vec<&'a str>,
    pub standby: Vec<&'a str>,
}

/// One per element of the body's `entry` array; none when there is no such array.
pub(super) fn entries(body: &str) -> Vec<EntryItems<'_>> {
    let mut cursor = Cursor { text: body, at: 0 };
    let mut entries = Vec::new();
    cursor.skip_space();
    if cursor.peek() != b'{' {
        return entries;
    }
    cursor.object(|cursor, key| {
        if key == "entry" {
            entries = Vec::new();
            if !cursor.array(|cursor| entries.push(entry(cursor))) {
                cursor.value();
            }
        } else {
            cursor.value();
        }
    });
    entries
}

fn entry<'a>(cursor: &mut Cursor<'a>) -> EntryItems<'a> {
    let mut items = EntryItems::default();
    if cursor.peek() != b'{' {
        cursor.value();
        return items;
    }
    cursor.object(|cursor, key| match key {
        "messaging" => items.messaging = texts(cursor),
        "standby" => items.standby = texts(cursor),
        _ => {
            cursor.value();
        }
    });
    items
}

/// The elements' texts of the array at the cursor; none for another kind of value.
fn texts<'a>(cursor: &mut Cursor<'a>) -> Vec<&'a str> {
    let mut list = Vec::new();
    if !cursor.array(|cursor| list.push(cursor.value())) {
        cursor.value();
    }
    list
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> u8 {
        self.text.as_bytes().get(self.at).copied().unwrap_or(0)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
    }

    /// Steps over the string that starts at the cursor (its opening quote).
    fn skip_string(&mut self) {
        let bytes = self.text.as_bytes();
        self.at += 1;
        while let Some(found) = bytes
            .get(self.at..)
            .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
        {
            self.at += found;
            if bytes[self.at] == b'\\' {
                // The escaped character, whatever it is, is not the string's end.
                self.at += 2;
            } else {
                self.at += 1;
                return;
            }
        }
        self.at = bytes.len();
    }

    /// Steps over the value at the cursor and returns its text.
    fn value(&mut self) -> &'a str {
        let bytes = self.text.as_bytes();
        let start = self.at;
        match self.peek() {
            b'"' => self.skip_string(),
            open @ (b'{' | b'[') => {
                // In JSON that parses, braces and brackets each pair up on their own: only the
                // container's own kind, and strings, need following.
                let close = if open == b'{' { b'}' } else { b']' };
                let mut depth = 0usize;
                while let Some(found) = bytes
                    .get(self.at..)
                    .and_then(|rest| memchr::memchr3(b'"', open, close, rest))
                {
                    self.at += found;
                    match bytes[self.at] {
                        b'"' => {
                            self.skip_string();
                            continue;
                        }
                        byte if byte == open => depth += 1,
                        _ => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                self.at += 1;
                                break;
                            }
                        }
                    }
                    self.at += 1;
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    0 | b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                ) {
                    self.at += 1;
                }
            }
        }
        self.text.get(start..self.at).unwrap_or_default()
    }

    /// Calls `field` with each key of the object at the cursor, the cursor on its value, which
    /// `field` must step over.
    fn object(&mut self, mut field: impl FnMut(&mut Cursor<'a>, &str)) {
        self.at += 1;
        loop {
            self.skip_space();
            if self.peek() != b'"' {
                // `}`: the object's end (or an empty object).
                self.at += 1;
                return;
            }
            let raw = self.value();
            let key = decode_key(raw);
            self.skip_space();
            self.at += 1; // `:`
            self.skip_space();
            field(self, &key);
            self.skip_space();
            if self.peek() == b',' {
                self.at += 1;
            } else {
                self.at += 1;
                return;
            }
        }
    }

    /// Calls `element` with the cursor on each element of the array at the cursor, which
    /// `element` must step over. `false`, moving nothing, when the value is not an array.
    fn array(&mut self, mut element: impl FnMut(&mut Cursor<'a>)) -> bool {
        if self.peek() != b'[' {
            return false;
        }
        self.at += 1;
        self.skip_space();
        if self.peek() == b']' {
            self.at += 1;
            return true;
        }
        loop {
            self.skip_space();
            element(self);
            self.skip_space();
            let separator = self.peek();
            self.at += 1;
            if separator != b',' {
                return true;
            }
        }
    }
}

/// A key as the JSON pass reads it: with its escapes decoded.
fn decode_key(quoted: &str) -> Cow<'_, str> {
    let inner = quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default();
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    serde_json::from_str::<String>(quoted).map_or(Cow::Borrowed(inner), Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(body: &str) -> Vec<(Vec<&str>, Vec<&str>)> {
        entries(body)
            .into_iter()
            .map(|e| (e.messaging, e.standby))
            .collect()
    }

    #[test]
    fn items_are_found_as_written() {
        let body = r#" { "object" : "page", "entry" : [ {"id":"1","messaging":[ {"a":"}]\"{["} ,
            {"b":[1,{"c":null}],"d":-1.5e3} ],"standby":[{"s":true}]}, 7, {"messaging":{"x":1}},
            {"\u006dessaging":[ "odd" , 12 ]} ] }"#;
        assert_eq!(
            items(body),
            vec![
                (
                    vec![r#"{"a":"}]\"{["}"#, r#"{"b":[1,{"c":null}],"d":-1.5e3}"#],
                    vec![r#"{"s":true}"#]
                ),
                (vec![], vec![]),
                (vec![], vec![]),
                (vec![r#""odd""#, "12"], vec![]),
            ]
        );
    }

    #[test]
    fn the_last_of_a_repeated_key_counts() {
        let body = r#"{"entry":[{"messaging":[{"n":1}]}],"entry":[{"messaging":[{"n":2}],"messaging":[]}]}"#;
        assert_eq!(items(body), vec![(vec![], vec![])]);
        let body = r#"{"entry":[{"messaging":[{"n":1}]}],"entry":5}"#;
        assert!(entries(body).is_empty());
        assert!(entries("[1]").is_empty());
        assert!(entries(r#"{"entry":[]}"#).is_empty());
    }
}
