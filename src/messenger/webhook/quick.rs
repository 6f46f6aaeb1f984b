//! A webhook body read by hand in one pass: the outline and each item's text together, without
//! serde's machinery or a second walk to find the items. It reads the JSON Meta sends (objects,
//! arrays, strings, `true`/`false`/`null` and non-negative integers) and gives up, answering
//! `None`, on anything else: a fraction, an exponent, a negative number, an integer past
//! `u64`, deep nesting, or text that is not JSON. The caller then reads the body the general
//! way (`outline` and `item_text`), which also words the error for a body that is not JSON.
//!
//! What it answers is what the general way answers for the same text: the last of a repeated
//! key counts, escaped keys and strings are decoded (by serde_json itself), a field of another
//! kind than expected reads as the outline reads it. The tests compare both ways on odd bodies,
//! and the fuzz target on every input.

use std::borrow::Cow;

use super::super::borrowed_json::{Object, Value};
use super::item_text::EntryItems;
use super::outline::{Entry, Outline};

/// Nesting this deep is left to serde_json, whose own limit is 128.
const MAX_DEPTH: usize = 100;

/// The body's outline and each entry's item texts; `None` when the body is not plain enough
/// for this reader (which says nothing about whether it is JSON).
pub(super) fn read(text: &str) -> Option<(Outline<'_>, Vec<EntryItems<'_>>)> {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        at: 0,
        depth: 0,
    };
    reader.space();
    if reader.peek()? != b'{' {
        return None;
    }
    // An absent `entry` reads as an empty list.
    let mut outline = Outline {
        object: None,
        entries: Some(Vec::new()),
    };
    let mut items = Vec::new();
    reader.fields(|reader, key| {
        match key.as_ref() {
            "object" => {
                outline.object = match reader.value()? {
                    Value::String(object) => Some(object),
                    _ => None,
                };
            }
            "entry" if reader.peek()? == b'[' => {
                let (mut entries, mut texts) = (Vec::new(), Vec::new());
                reader.elements(|reader| {
                    let (entry, items) = reader.entry()?;
                    entries.push(entry);
                    texts.push(items);
                    Some(())
                })?;
                outline.entries = Some(entries);
                items = texts;
            }
            "entry" => {
                reader.value()?;
                outline.entries = None;
                items = Vec::new();
            }
            _ => {
                reader.value()?;
            }
        }
        Some(())
    })?;
    reader.space();
    (reader.at == text.len()).then_some((outline, items))
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// JSON's whitespace.
    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Steps over `byte`, which must be next.
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// One `entry[]` element: its page id and items. Another kind of value holds none.
    fn entry(&mut self) -> Option<(Entry<'a>, EntryItems<'a>)> {
        let mut entry = Entry::default();
        let mut items = EntryItems::default();
        if self.peek()? != b'{' {
            self.value()?;
            return Some((entry, items));
        }
        self.fields(|reader, key| {
            match key.as_ref() {
                "id" => entry.id = reader.value()?.as_id().map(Cow::into_owned),
                "messaging" => (entry.messaging, items.messaging) = reader.items()?,
                "standby" => (entry.standby, items.standby) = reader.items()?,
                _ => {
                    reader.value()?;
                }
            }
            Some(())
        })?;
        Some((entry, items))
    }

    /// The elements of the array at the cursor, each with its text; none for another kind of
    /// value.
    fn items(&mut self) -> Option<(Vec<Value<'a>>, Vec<&'a str>)> {
        let (mut values, mut texts) = (Vec::new(), Vec::new());
        if self.peek()? != b'[' {
            self.value()?;
            return Some((values, texts));
        }
        self.elements(|reader| {
            let start = reader.at;
            values.push(reader.value()?);
            texts.push(reader.text.get(start..reader.at)?);
            Some(())
        })?;
        Some((values, texts))
    }

    /// The value at the cursor (whitespace before it already stepped over).
    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'{' => {
                let mut fields = Vec::with_capacity(6);
                self.fields(|reader, key| {
                    fields.push((key, reader.value()?));
                    Some(())
                })?;
                Some(Value::Object(Object::from_fields(fields)))
            }
            b'[' => {
                let mut list = Vec::new();
                self.elements(|reader| {
                    list.push(reader.value()?);
                    Some(())
                })?;
                Some(Value::Array(list))
            }
            b'"' => self.string().map(Value::String),
            b't' => self.word(b"true", Value::Bool(true)),
            b'f' => self.word(b"false", Value::Bool(false)),
            b'n' => self.word(b"null", Value::Null),
            b'0'..=b'9' => self.integer(),
            _ => None,
        }
    }

    /// Calls `field` with each key of the object at the cursor, the cursor on its value, which
    /// `field` must read.
    fn fields(
        &mut self,
        mut field: impl FnMut(&mut Self, Cow<'a, str>) -> Option<()>,
    ) -> Option<()> {
        self.nest()?;
        self.at += 1;
        self.space();
        if self.peek()? == b'}' {
            self.at += 1;
        } else {
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                let key = self.string()?;
                self.space();
                self.expect(b':')?;
                self.space();
                field(self, key)?;
                self.space();
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        self.space();
                    }
                    b'}' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// Calls `element` with the cursor on each element of the array at the cursor, which
    /// `element` must read.
    fn elements(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.nest()?;
        self.at += 1;
        self.space();
        if self.peek()? == b']' {
            self.at += 1;
        } else {
            loop {
                element(self)?;
                self.space();
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        self.space();
                    }
                    b']' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    fn nest(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// The string at the cursor: borrowed from the text, or, when it has escapes, decoded by
    /// serde_json (so it is refused or read exactly as the general way would).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.at + 1;
        let rest = self.bytes.get(start..)?;
        let end = start + memchr::memchr2(b'"', b'\\', rest)?;
        let plain = self.bytes.get(start..end)?;
        // A control character must be escaped in JSON.
        if plain.iter().any(|&b| b < 0x20) {
            return None;
        }
        if self.bytes[end] == b'"' {
            self.at = end + 1;
            return Some(Cow::Borrowed(self.text.get(start..end)?));
        }
        let mut close = end;
        loop {
            match *self.bytes.get(close)? {
                // The escaped character, whatever it is, is not the string's end.
                b'\\' => close += 2,
                b'"' => break,
                _ => close += 1,
            }
        }
        let quoted = self.text.get(self.at..=close)?;
        let decoded = serde_json::from_str::<String>(quoted).ok()?;
        self.at = close + 1;
        Some(Cow::Owned(decoded))
    }

    fn word(&mut self, word: &[u8], value: Value<'a>) -> Option<Value<'a>> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| {
            self.at = end;
            value
        })
    }

    /// A non-negative integer that fits a `u64`, read as serde_json reads it.
    fn integer(&mut self) -> Option<Value<'a>> {
        let rest = self.bytes.get(self.at..)?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        // A leading zero is not JSON; a fraction or exponent makes a float.
        if (digits > 1 && rest[0] == b'0') || matches!(rest.get(digits), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        let n: u64 = self.text.get(self.at..self.at + digits)?.parse().ok()?;
        self.at += digits;
        Some(Value::Number(n.into()))
    }
}

/// Whether this reader and the general way read `text` alike: the same outline and items when
/// this reader answers, and a body the general way refuses never answered.
#[cfg(any(test, fuzzing))]
pub(super) fn agrees(text: &str) -> bool {
    let Some(quick) = read(text) else {
        return true;
    };
    match serde_json::from_str::<Outline>(text) {
        Ok(outline) => {
            format!("{quick:?}") == format!("{:?}", (outline, super::item_text::entries(text)))
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USUAL: &str = r#"{"object":"page","entry":[{"id":"1111","time":1764000000000,"messaging":[{"sender":{"id":"7000000000000001"},"recipient":{"id":"1111"},"timestamp":1764000000000,"message":{"mid":"m_abc","text":"Gr\u00f6\u00dfe L? \ud83d\ude0a"}}]},{"id":"1111","time":1764000000001,"messaging":[{"sender":{"id":"7000000000000002"},"recipient":{"id":"1111"},"timestamp":1764000000001,"message":{"mid":"m_def","text":"hi","attachments":[{"type":"image","payload":{"url":"https://x/y.png","sticker_id":369239263222822}}],"is_echo":false,"quick_reply":null}}],"standby":[{"sender":{"id":"7"},"recipient":{"id":"1111"},"read":{"watermark":1764000000000}}]}]}"#;

    #[test]
    fn meta_s_usual_bodies_are_read_here_as_the_general_way_reads_them() {
        let (outline, items) = read(USUAL).expect("the usual shape");
        assert_eq!(outline.object.as_deref(), Some("page"));
        let entries = outline.entries.as_ref().expect("entries");
        assert_eq!(entries[0].id.as_deref(), Some("1111"));
        assert_eq!(items.len(), 2);
        assert!(items[0].messaging[0].starts_with(r#"{"sender""#));
        assert!(items[0].messaging[0].ends_with(r#"\ud83d\ude0a"}}"#));
        assert_eq!(items[1].standby.len(), 1);
        assert!(agrees(USUAL));
    }

    #[test]
    fn odd_but_plain_bodies_are_read_alike() {
        for body in [
            r#" { "object" : "page" , "entry" : [ { "id" : 1111 , "messaging" : [ { "a" : [ ] , "b" : { } } , 7 , "s" , null ] } ] } "#,
            "{\n\t\"entry\":[{\"messaging\":[{\"n\":0}]}]\r}",
            r#"{"entry":[{"messaging":[{"n":1}]}],"entry":[{"messaging":[{"n":2}],"messaging":[]}]}"#,
            r#"{"entry":[{"messaging":[{"n":1}]}],"entry":5,"object":"page","object":7}"#,
            r#"{"entry":[7,[1,2],{"messaging":{"x":1}},{"standby":"none"},{"id":"","id":"9"}]}"#,
            r#"{"\u006fbject":"p\u0061ge","entry":[{"\u006dessaging":[{"k\"ey":"v\\"}]}]}"#,
            r#"{"entry":[{"id":"1","messaging":[{"a":"}]\"{[","t":true,"f":false,"z":18446744073709551615}]}]}"#,
            r#"{}"#,
            r#"{"object":"instagram"}"#,
        ] {
            assert!(read(body).is_some(), "read here: {body}");
            assert!(agrees(body), "{body}");
        }
    }

    #[test]
    fn what_it_does_not_read_is_left_to_the_general_way() {
        for body in [
            // JSON it leaves to serde_json.
            r#"{"entry":[{"messaging":[{"lat":37.48}]}]}"#,
            r#"{"entry":[{"messaging":[{"n":-1}]}]}"#,
            r#"{"entry":[{"messaging":[{"n":1e3}]}]}"#,
            r#"{"n":18446744073709551616}"#,
            r#"[{"object":"page"}]"#,
            // Text that is not JSON.
            r#"{"object":"page",}"#,
            r#"{"entry":[1,]}"#,
            r#"{"entry":[01]}"#,
            r#"{"a":tru}"#,
            r#"{"a":"b"} x"#,
            r#"{"a":"b""#,
            r#"{"a" "b"}"#,
            r#"{a:"b"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":"\x"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"unterminated\"}"#,
            "",
        ] {
            assert!(read(body).is_none(), "left to serde_json: {body:?}");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(read(&deep).is_none(), "nesting past the limit");
    }
}
