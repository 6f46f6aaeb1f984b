//! A webhook body read by hand in one pass: the outline and each item's text together, without
//! serde's machinery or a second walk to find the items. It reads the JSON Meta sends (objects,
//! arrays, strings, `true`/`false`/`null` and non-negative integers) and gives up, answering
//! `None`, on anything else: a fraction, an exponent, a negative number, an integer past
//! `u64`, deep nesting, or text that is not JSON. The caller then reads the body the general
//! way (`outline` and `item_text`), which also words the error for a body that is not JSON.
//!
//! An item that is a plain customer message (`PlainMessage`) is not even built as values: only
//! its ids, time and `mid` are kept, which is all ingest needs of it.
//!
//! What it answers is what the general way answers for the same text: the last of a repeated
//! key counts, escaped keys and strings are decoded (by serde_json itself), a field of another
//! kind than expected reads as the outline reads it. The tests compare both ways on odd bodies,
//! and the fuzz target on every input (`readings_agree`).

use std::borrow::Cow;

use super::super::borrowed_json::{Object, Value};
use super::{Body, BodyEntry, PlainMessage, ReadItem};

/// Nesting this deep is left to serde_json, whose own limit is 128.
const MAX_DEPTH: usize = 100;

/// The bytes that end a string's plain run: its closing quote, an escape, or a control
/// character (which JSON allows only escaped).
static STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        stops[byte] = true;
        byte += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
};

/// The body's outline and each entry's item texts; `None` when the body is not plain enough
/// for this reader (which says nothing about whether it is JSON).
pub(super) fn read(text: &str) -> Option<Body<'_>> {
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
    let mut body = Body {
        object: None,
        entries: Some(Vec::new()),
    };
    reader.fields(|reader, key| {
        match key.as_ref() {
            "object" => {
                body.object = match reader.value()? {
                    Value::String(object) => Some(object),
                    _ => None,
                };
            }
            "entry" if reader.peek()? == b'[' => {
                let mut entries = Vec::new();
                reader.elements(|reader| {
                    entries.push(reader.entry()?);
                    Some(())
                })?;
                body.entries = Some(entries);
            }
            "entry" => {
                reader.value()?;
                body.entries = None;
            }
            _ => {
                reader.value()?;
            }
        }
        Some(())
    })?;
    reader.space();
    (reader.at == text.len()).then_some(body)
}

/// How many bytes from the start of `bytes` are a string's plain run (see [`STOPS`]): eight
/// at a time, with the usual tricks for finding a byte in a word, then one at a time.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut run = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        // A byte's high bit is set where it is below 0x20, a quote or a backslash. A borrow can
        // also mark bytes after the first such byte, never one before it: the lowest mark is
        // the first stop.
        let stops = (x.wrapping_sub(ONES * 0x20) & !x
            | quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash)
            & HIGH;
        if stops != 0 {
            return run + (stops.trailing_zeros() / 8) as usize;
        }
        run += 8;
    }
    let rest = &bytes[run..];
    run + rest
        .iter()
        .position(|&b| STOPS[usize::from(b)])
        .unwrap_or(rest.len())
}

/// Where the escape whose letter is at `at` (after its backslash) ends, if serde_json would
/// decode it into a string: one of `"\\/bfnrt`, or `u` and four hex digits naming a character
/// that is not a surrogate, or a leading surrogate followed by an escaped trailing one.
fn escape_end(bytes: &[u8], at: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(at + 1),
        b'u' => match hex_unit(bytes, at + 1)? {
            0xDC00..=0xDFFF => None,
            0xD800..=0xDBFF => {
                if bytes.get(at + 5..at + 7)? != b"\\u" {
                    return None;
                }
                let trailing = hex_unit(bytes, at + 7)?;
                (0xDC00..=0xDFFF).contains(&trailing).then_some(at + 11)
            }
            _ => Some(at + 5),
        },
        _ => None,
    }
}

/// The UTF-16 unit four hex digits at `at` name.
fn hex_unit(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4)?.iter().try_fold(0, |unit, &digit| {
        Some(unit << 4 | char::from(digit).to_digit(16)?)
    })
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
    fn entry(&mut self) -> Option<BodyEntry<'a>> {
        let mut entry = BodyEntry::default();
        if self.peek()? != b'{' {
            self.value()?;
            return Some(entry);
        }
        self.fields(|reader, key| {
            match key.as_ref() {
                "id" => entry.id = reader.value()?.into_id(),
                "messaging" => entry.messaging = reader.items()?,
                "standby" => entry.standby = reader.items()?,
                _ => {
                    reader.value()?;
                }
            }
            Some(())
        })?;
        Some(entry)
    }

    /// The elements of the array at the cursor, each with its text; none for another kind of
    /// value.
    fn items(&mut self) -> Option<Vec<(ReadItem<'a>, &'a str)>> {
        let mut items = Vec::new();
        if self.peek()? != b'[' {
            self.value()?;
            return Some(items);
        }
        self.elements(|reader| {
            let start = reader.at;
            let item = match reader.plain_message() {
                Some(message) => ReadItem::Message(message),
                None => ReadItem::Json(reader.value()?),
            };
            items.push((item, reader.text.get(start..reader.at)?));
            Some(())
        })?;
        Some(items)
    }

    /// The plain customer message at the cursor; `None`, the cursor where it was, for any other
    /// item (a key given twice, a key more, an id that is a number or empty, an escaped `mid`).
    fn plain_message(&mut self) -> Option<PlainMessage<'a>> {
        let (start, depth) = (self.at, self.depth);
        let read = self.plain_message_fields();
        if read.is_none() {
            (self.at, self.depth) = (start, depth);
        }
        read
    }

    fn plain_message_fields(&mut self) -> Option<PlainMessage<'a>> {
        if self.peek()? != b'{' {
            return None;
        }
        let (mut sender, mut recipient, mut timestamp, mut mid) = (None, None, None, None);
        self.fields(|reader, key| {
            // A key given twice, or another key, is left to the general way.
            let first = match key.as_ref() {
                "sender" => sender.replace(reader.party_id()?).is_none(),
                "recipient" => recipient.replace(reader.party_id()?).is_none(),
                "timestamp" => timestamp.replace(reader.u64()?).is_none(),
                "message" => mid.replace(reader.text_message()?).is_none(),
                _ => false,
            };
            first.then_some(())
        })?;
        Some(PlainMessage {
            sender: sender?,
            recipient: recipient?,
            timestamp_ms: timestamp?,
            mid: mid?,
        })
    }

    /// `{"id":"…"}` with a non-empty id that needs no decoding.
    fn party_id(&mut self) -> Option<&'a str> {
        let mut id = None;
        self.object_of(|reader, key| {
            if key != "id" || id.is_some() {
                return None;
            }
            id = Some(reader.plain_string().filter(|id| !id.is_empty())?);
            Some(())
        })?;
        id
    }

    /// `{"mid":"…","text":"…"}` (`text` may be absent) with a `mid` that needs no decoding: the
    /// `mid`.
    fn text_message(&mut self) -> Option<&'a str> {
        let (mut mid, mut text) = (None, false);
        self.object_of(|reader, key| {
            match key {
                "mid" if mid.is_none() => mid = Some(reader.plain_string()?),
                "text" if !text => {
                    // Checked, not decoded: ingest stores the text as sent.
                    reader.skip_string()?;
                    text = true;
                }
                _ => return None,
            }
            Some(())
        })?;
        mid
    }

    /// An object, `field` reading each value.
    fn object_of(&mut self, mut field: impl FnMut(&mut Self, &str) -> Option<()>) -> Option<()> {
        if self.peek()? != b'{' {
            return None;
        }
        self.fields(|reader, key| field(reader, &key))
    }

    /// A string at the cursor that needs no decoding.
    fn plain_string(&mut self) -> Option<&'a str> {
        if self.peek()? != b'"' {
            return None;
        }
        match self.string()? {
            Cow::Borrowed(text) => Some(text),
            Cow::Owned(_) => None,
        }
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
        self.sequence(b'}', |reader| {
            if reader.peek()? != b'"' {
                return None;
            }
            let key = reader.string()?;
            reader.space();
            reader.expect(b':')?;
            reader.space();
            field(reader, key)
        })
    }

    /// Calls `element` with the cursor on each element of the array at the cursor, which
    /// `element` must read.
    fn elements(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.sequence(b']', element)
    }

    /// Steps over the container at the cursor, calling `item` for each of its comma-separated
    /// items (none in an empty one) up to `close`.
    fn sequence(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.nest()?;
        self.at += 1;
        self.space();
        if self.peek()? == close {
            self.at += 1;
        } else {
            loop {
                item(self)?;
                self.space();
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        self.space();
                    }
                    byte if byte == close => {
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
        let end = start + plain_run(self.bytes.get(start..)?);
        match *self.bytes.get(end)? {
            b'"' => {
                self.at = end + 1;
                Some(Cow::Borrowed(self.text.get(start..end)?))
            }
            b'\\' => {
                // Stepped over (and so checked) as any string, then decoded by serde_json.
                let opening = self.at;
                self.skip_string()?;
                let quoted = self.text.get(opening..self.at)?;
                Some(Cow::Owned(serde_json::from_str::<String>(quoted).ok()?))
            }
            // A control character must be escaped in JSON.
            _ => None,
        }
    }

    /// Steps over the string at the cursor, checking it as serde_json checks a string it
    /// decodes (escapes, paired surrogates, no control character), without decoding it.
    fn skip_string(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        let mut at = self.at + 1;
        loop {
            at += plain_run(self.bytes.get(at..)?);
            match *self.bytes.get(at)? {
                b'"' => {
                    self.at = at + 1;
                    return Some(());
                }
                b'\\' => at = escape_end(self.bytes, at + 1)?,
                _ => return None,
            }
        }
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
        self.u64().map(|n| Value::Number(n.into()))
    }

    fn u64(&mut self) -> Option<u64> {
        let rest = self.bytes.get(self.at..)?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        // A leading zero is not JSON; a fraction or exponent makes a float.
        if digits == 0
            || (digits > 1 && rest[0] == b'0')
            || matches!(rest.get(digits), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        let text = self.bytes.get(self.at..self.at + digits)?;
        // Nineteen digits always fit a u64; longer ones may not.
        let n = if digits <= 19 {
            text.iter()
                .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0'))
        } else {
            self.text.get(self.at..self.at + digits)?.parse().ok()?
        };
        self.at += digits;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USUAL: &str = r#"{"object":"page","entry":[{"id":"1111","time":1764000000000,"messaging":[{"sender":{"id":"7000000000000001"},"recipient":{"id":"1111"},"timestamp":1764000000000,"message":{"mid":"m_abc","text":"Gr\u00f6\u00dfe L? \ud83d\ude0a"}}]},{"id":"1111","time":1764000000001,"messaging":[{"sender":{"id":"7000000000000002"},"recipient":{"id":"1111"},"timestamp":1764000000001,"message":{"mid":"m_def","text":"hi","attachments":[{"type":"image","payload":{"url":"https://x/y.png","sticker_id":369239263222822}}],"is_echo":false,"quick_reply":null}}],"standby":[{"sender":{"id":"7"},"recipient":{"id":"1111"},"read":{"watermark":1764000000000}}]}]}"#;

    use super::super::readings_agree;

    /// Per entry, whether each `messaging[]` item was read as a plain message.
    fn plain(body: &str) -> Vec<Vec<bool>> {
        let entries = read(body).expect("read here").entries.expect("entries");
        entries
            .iter()
            .map(|entry| {
                let items = entry.messaging.iter();
                items
                    .map(|(item, _)| matches!(item, ReadItem::Message(_)))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn meta_s_usual_bodies_are_read_here_as_the_general_way_reads_them() {
        let body = read(USUAL).expect("the usual shape");
        assert_eq!(body.object.as_deref(), Some("page"));
        let entries = body.entries.as_ref().expect("entries");
        assert_eq!(entries[0].id.as_deref(), Some("1111"));
        let (ReadItem::Message(message), text) = &entries[0].messaging[0] else {
            panic!("a plain message");
        };
        assert_eq!(
            (
                message.sender,
                message.recipient,
                message.timestamp_ms,
                message.mid
            ),
            ("7000000000000001", "1111", 1_764_000_000_000, "m_abc")
        );
        assert!(text.starts_with(r#"{"sender""#));
        assert!(text.ends_with(r#"\ud83d\ude0a"}}"#));
        assert_eq!(entries[1].standby.len(), 1);
        assert_eq!(plain(USUAL), vec![vec![true], vec![false]]);
        assert!(readings_agree(USUAL));
    }

    #[test]
    fn items_not_quite_plain_are_read_as_values() {
        for item in [
            r#"{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":3,"message":{"mid":"m","text":"a","is_echo":true,"app_id":9}}"#,
            r#"{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":3,"message":{"mid":"m","text":"a","text":"b"}}"#,
            r#"{"sender":{"id":"1"},"sender":{"id":"5"},"recipient":{"id":"2"},"timestamp":3,"message":{"mid":"m"}}"#,
            r#"{"sender":{"id":1},"recipient":{"id":"2"},"timestamp":3,"message":{"mid":"m"}}"#,
            r#"{"sender":{"id":""},"recipient":{"id":"2"},"timestamp":3,"message":{"mid":"m"}}"#,
            r#"{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":3,"message":{"mid":"m\u0031"}}"#,
            r#"{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":"3","message":{"mid":"m"}}"#,
            r#"{"sender":{"id":"1"},"recipient":{"id":"2"},"message":{"mid":"m"}}"#,
            r#"{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":3,"message":{"text":"no mid"}}"#,
            r#"{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":3,"message":"m"}"#,
            r#"{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":3,"message":{"mid":"m"},"read":{"watermark":1}}"#,
            r#"{"sender":{"id":"1","name":"x"},"recipient":{"id":"2"},"timestamp":3,"message":{"mid":"m"}}"#,
            r#"{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":3,"message":{"mid":"m","text":7}}"#,
        ] {
            let body = format!(r#"{{"entry":[{{"id":"2","messaging":[{item}]}}]}}"#);
            assert_eq!(plain(&body), vec![vec![false]], "{item}");
            assert!(readings_agree(&body), "{item}");
        }
        for body in [
            r#"{"entry":[{"messaging":[{"message":{"text":"caf\u00e9","mid":"m"},"timestamp":3,"recipient":{"id":"2"},"sender":{"id":"1"}}]}]}"#,
            r#"{"entry":[{"messaging":[{"\u0073ender":{"\u0069d":"1"},"recipient":{"id":"2"},"timestamp":3,"message":{"mid":"m"}}]}]}"#,
        ] {
            assert_eq!(plain(body), vec![vec![true]], "{body}");
            assert!(readings_agree(body), "{body}");
        }
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
            r#"{"entry":[{"id":"1","messaging":[{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":3,"message":{"mid":"m"}}]},{"id":"2","messaging":[{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":3,"message":{"mid":"m"}}]}]}"#,
            r#"{}"#,
            r#"{"object":"instagram"}"#,
        ] {
            assert!(read(body).is_some(), "read here: {body}");
            assert!(readings_agree(body), "{body}");
        }
    }

    #[test]
    fn a_message_text_is_checked_as_serde_json_checks_a_string() {
        for text in [
            r#""plain""#,
            r#""all \" \\ \/ \b \f \n \r \t escapes""#,
            r#""caf\u00e9 \u00E9 \uFFFF \u0000""#,
            r#""\ud83d\ude0a paired \uD83D\uDE0A""#,
            r#""\ud83d""#,
            r#""\ud83d\u0041""#,
            r#""\ud83d\n""#,
            r#""\ude0a trailing alone""#,
            r#""\u12""#,
            r#""\u12g4""#,
            r#""\x""#,
            r#""\"#,
            "\"tab\there\"",
            "\"\u{7f} and \u{e9} are plain\"",
        ] {
            let body = format!(
                r#"{{"entry":[{{"messaging":[{{"sender":{{"id":"1"}},"recipient":{{"id":"2"}},"timestamp":3,"message":{{"mid":"m","text":{text}}}}}]}}]}}"#
            );
            let serde_reads = serde_json::from_str::<String>(text).is_ok();
            assert_eq!(read(&body).is_some(), serde_reads, "{text}");
            if serde_reads {
                assert_eq!(plain(&body), vec![vec![true]], "{text}");
            }
            assert!(readings_agree(&body), "{text}");
        }
    }

    #[test]
    fn a_plain_run_ends_at_the_first_stop_wherever_it_is() {
        let plain = "abcdefghijklmnopq\u{e9}\u{3053}";
        for stop in ["\"", "\\", "\n", "\u{1}", "\u{1f}"] {
            for at in 0..plain.len() {
                if !plain.is_char_boundary(at) {
                    continue;
                }
                let text = format!("{}{stop}{}\"", &plain[..at], &plain[at..]);
                assert_eq!(plain_run(text.as_bytes()), at, "{text:?}");
            }
        }
        assert_eq!(plain_run(plain.as_bytes()), plain.len());
        let edges = b" !#[]~\x7f\xff/";
        assert_eq!(
            plain_run(edges),
            edges.len(),
            "0x20, 0x7f, 0xff and the rest are plain"
        );
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
            // A message's text is checked as serde_json checks a string, though not decoded.
            r#"{"entry":[{"messaging":[{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":3,"message":{"mid":"m","text":1"}}]}]}"#,
            "",
        ] {
            assert!(read(body).is_none(), "left to serde_json: {body:?}");
        }
        let deep = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert!(read(&deep).is_none(), "nesting past the limit");
    }
}
