//! A JSON object read one field at a time. A webhook body is read to route and deduplicate its
//! events, not to rebuild them: each object's values stay unparsed text (borrowed from the body)
//! until a field is asked for, so an event costs no JSON tree, and its text is stored as Meta
//! sent it. Reads are tolerant like the rest of the webhook code: a field of an unexpected type
//! reads as absent.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::value::RawValue;

/// An object's fields, in order, each value as its JSON text.
#[derive(Debug, Default)]
pub(super) struct Object<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Object<'a> {
    /// Reads `raw` as an object; `None` when it is another kind of value.
    pub fn parse(raw: &'a RawValue) -> Option<Object<'a>> {
        // Only an object: serde would also read a struct from an array.
        if !raw.get().trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str(raw.get()).ok()
    }

    /// The value of `key` as JSON text. With a key given twice, the last counts (as for
    /// `serde_json::Value`).
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| *value)
    }

    /// The object under `key` when the key is present: empty when its value is not an object,
    /// so that a present but odd field still says what kind of event this is.
    pub fn section(&self, key: &str) -> Option<Object<'a>> {
        self.get(key)
            .map(|raw| Object::parse(raw).unwrap_or_default())
    }

    /// The object under `key`; `None` when absent or not an object.
    pub fn object(&self, key: &str) -> Option<Object<'a>> {
        Object::parse(self.get(key)?)
    }

    pub fn str(&self, key: &str) -> Option<Cow<'a, str>> {
        string(self.get(key)?)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        read(self.get(key)?)
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        read(self.get(key)?)
    }

    /// The elements of the array under `key`; `None` when absent or not an array.
    pub fn array(&self, key: &str) -> Option<Vec<&'a RawValue>> {
        read(self.get(key)?)
    }

    /// An id ([`id`]).
    pub fn id(&self, key: &str) -> Option<String> {
        id(self.get(key)?)
    }

    /// The fields, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &'a RawValue)> {
        self.fields
            .iter()
            .map(|(name, value)| (name.as_ref(), *value))
    }
}

/// An id: Meta sends them as strings, but numbers are tolerated. Empty strings are none.
pub(super) fn id(raw: &RawValue) -> Option<String> {
    match string(raw) {
        Some(id) if !id.is_empty() => Some(id.into_owned()),
        Some(_) => None,
        None => read::<serde_json::Number>(raw).map(|n| n.to_string()),
    }
}

fn read<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    serde_json::from_str(raw.get()).ok()
}

/// A string, borrowed from the body unless it has escapes to decode.
pub(super) fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    // Only a string is tried: a failed parse formats an error message, which costs more than
    // the read.
    if !raw.get().trim_start().starts_with('"') {
        return None;
    }
    read::<Text>(raw).map(|text| text.0)
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Object<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Object<'de>, M::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(Text(name)) = map.next_key()? {
            fields.push((name, map.next_value::<&'de RawValue>()?));
        }
        Ok(Object { fields })
    }
}

/// A string (an object's key or a value), borrowed unless it has escapes.
pub(super) struct Text<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).expect("valid JSON")
    }

    #[test]
    fn fields_are_read_when_asked_for() {
        let text = r#"{"id":"P1","n":42,"big":1517776481860111,"flag":true,"list":[1,{"a":2}],
            "obj":{"k":"v"},"odd":"not an object","esc":"caf\u00e9","\u006bey":"escaped key",
            "empty":"","twice":1,"twice":2}"#;
        let object = Object::parse(raw(text)).expect("an object");
        assert_eq!(object.str("id").as_deref(), Some("P1"));
        assert!(matches!(object.str("id"), Some(Cow::Borrowed(_))));
        assert_eq!(object.str("esc").as_deref(), Some("café"));
        assert_eq!(object.str("key").as_deref(), Some("escaped key"));
        assert_eq!(object.u64("n"), Some(42));
        assert_eq!(object.u64("id"), None, "a string is not a number");
        assert_eq!(object.bool("flag"), Some(true));
        assert_eq!(object.id("big").as_deref(), Some("1517776481860111"));
        assert_eq!(object.id("id").as_deref(), Some("P1"));
        assert_eq!(object.id("empty"), None);
        assert_eq!(object.id("flag"), None);
        assert_eq!(object.array("list").map(|l| l.len()), Some(2));
        assert_eq!(object.array("obj").map(|l| l.len()), None);
        assert_eq!(
            object.object("obj").and_then(|o| o.str("k")).as_deref(),
            Some("v")
        );
        assert!(object.object("odd").is_none());
        let odd = object.section("odd").expect("present");
        assert_eq!(odd.entries().count(), 0, "present but not an object: empty");
        assert!(object.section("missing").is_none());
        assert_eq!(object.u64("twice"), Some(2), "the last of a repeated key");
    }

    #[test]
    fn only_objects_are_objects() {
        for text in ["[1,2]", "\"text\"", "7", "null", "[]"] {
            assert!(Object::parse(raw(text)).is_none(), "{text}");
        }
        assert!(Object::parse(raw(" {} ")).is_some());
    }
}
