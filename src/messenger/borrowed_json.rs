//! JSON read in one pass into values that borrow from the text. A webhook body is read to route
//! and deduplicate its events, not to keep them as a tree: strings point into the body unless
//! they have escapes to decode, objects are short lists of fields, and nothing is read twice.
//! Reads are tolerant like the rest of the webhook code: a field of an unexpected type reads as
//! absent, and a key given twice keeps its last value (as `serde_json::Value` does).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use serde_json::value::RawValue;

/// A JSON value whose strings borrow from the text it was read from.
#[derive(Debug)]
pub(super) enum Value<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    Object(Object<'a>),
}

/// An object's fields, in order.
#[derive(Debug, Default)]
pub(super) struct Object<'a> {
    fields: Vec<(Cow<'a, str>, Value<'a>)>,
}

/// What [`Object::section`] answers for a present field that is not an object.
static EMPTY: Object<'static> = Object { fields: Vec::new() };

impl<'a> Value<'a> {
    pub fn into_object(self) -> Option<Object<'a>> {
        match self {
            Value::Object(object) => Some(object),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Value::Object(object) => Some(object),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Array(list) => Some(list),
            _ => None,
        }
    }

    /// An id: Meta sends them as strings, but numbers are tolerated. Empty strings are none.
    pub fn as_id(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::String(id) if !id.is_empty() => Some(Cow::Borrowed(id)),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        }
    }

    /// [`as_id`](Self::as_id), keeping a string borrowed from the text.
    pub fn into_id(self) -> Option<Cow<'a, str>> {
        match self {
            Value::String(id) if !id.is_empty() => Some(id),
            other => other.as_id().map(|id| Cow::Owned(id.into_owned())),
        }
    }

    /// A scalar's JSON text (a number as `2` or `37.48`, a string quoted); `None` for arrays and
    /// objects. The same as Meta's text for the numbers and plain strings it sends.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Null => Some("null".to_owned()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::String(text) => serde_json::to_string(text).ok(),
            Value::Array(_) | Value::Object(_) => None,
        }
    }
}

impl<'a> Object<'a> {
    pub fn from_fields(fields: Vec<(Cow<'a, str>, Value<'a>)>) -> Object<'a> {
        Object { fields }
    }

    /// Reads JSON text as an object; `None` when it is another kind of value (or not JSON).
    pub fn parse(text: &'a str) -> Option<Object<'a>> {
        // Only an object: serde would also read a struct from an array.
        if !text.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str(text).ok()
    }

    /// The value of `key`; with a key given twice, the last.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.fields
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    /// The object under `key` when the key is present: empty when its value is not an object,
    /// so that a present but odd field still says what kind of event this is.
    pub fn section(&self, key: &str) -> Option<&Object<'a>> {
        self.get(key)
            .map(|value| value.as_object().unwrap_or(&EMPTY))
    }

    /// The object under `key`; `None` when absent or not an object.
    pub fn object(&self, key: &str) -> Option<&Object<'a>> {
        self.get(key)?.as_object()
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// The elements of the array under `key`; `None` when absent or not an array.
    pub fn array(&self, key: &str) -> Option<&[Value<'a>]> {
        self.get(key)?.as_array()
    }

    /// An id ([`Value::as_id`]).
    pub fn id(&self, key: &str) -> Option<Cow<'_, str>> {
        self.get(key)?.as_id()
    }

    /// The fields, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Value<'a>)> {
        self.fields
            .iter()
            .map(|(name, value)| (name.as_ref(), value))
    }
}

/// An id ([`Value::as_id`]) from its JSON text.
pub(super) fn id(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<Value<'_>>(raw.get())
        .ok()?
        .as_id()
        .map(Cow::into_owned)
}

/// A string, borrowed from the text unless it has escapes to decode.
pub(super) fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    // Only a string is tried: a failed parse formats an error message, which costs more than
    // the read.
    if !raw.get().trim_start().starts_with('"') {
        return None;
    }
    serde_json::from_str::<Text>(raw.get())
        .ok()
        .map(|text| text.0)
}

impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value<'de>, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value<'de>, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value<'de>, E> {
        // JSON has no NaN or infinity; serde_json never hands one over.
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(text)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Value<'de>, S::Error> {
        let mut list = Vec::new();
        while let Some(element) = seq.next_element()? {
            list.push(element);
        }
        Ok(Value::Array(list))
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Value<'de>, M::Error> {
        ObjectVisitor.visit_map(map).map(Value::Object)
    }
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
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(6));
        while let Some(Text(name)) = map.next_key()? {
            fields.push((name, map.next_value()?));
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
    fn fields_are_read_in_one_pass() {
        let text = r#"{"id":"P1","n":42,"big":1517776481860111,"flag":true,"list":[1,{"a":2}],
            "obj":{"k":"v","deep":{"x":[true]}},"odd":"not an object","esc":"caf\u00e9",
            "\u006bey":"escaped key","empty":"","twice":1,"twice":2,"neg":-3,"lat":37.48,
            "none":null}"#;
        let object = Object::parse(text).expect("an object");
        assert_eq!(object.str("id"), Some("P1"));
        assert!(matches!(
            object.get("id"),
            Some(Value::String(Cow::Borrowed(_)))
        ));
        assert_eq!(object.str("esc"), Some("café"));
        assert_eq!(object.str("key"), Some("escaped key"));
        assert_eq!(object.u64("n"), Some(42));
        assert_eq!(object.u64("id"), None, "a string is not a number");
        assert_eq!(object.u64("neg"), None, "nor is a negative number a u64");
        assert_eq!(object.bool("flag"), Some(true));
        assert_eq!(object.id("big").as_deref(), Some("1517776481860111"));
        assert_eq!(object.id("id").as_deref(), Some("P1"));
        assert_eq!(object.id("empty"), None);
        assert_eq!(object.id("flag"), None);
        assert_eq!(object.array("list").map(<[Value]>::len), Some(2));
        assert_eq!(object.array("obj").map(<[Value]>::len), None);
        assert_eq!(object.object("obj").and_then(|o| o.str("k")), Some("v"));
        let deep = object.object("obj").and_then(|o| o.object("deep"));
        assert_eq!(
            deep.and_then(|d| d.array("x")).and_then(|x| x[0].as_bool()),
            Some(true)
        );
        assert!(object.object("odd").is_none());
        let odd = object.section("odd").expect("present");
        assert_eq!(odd.entries().count(), 0, "present but not an object: empty");
        assert!(object.section("missing").is_none());
        assert_eq!(object.u64("twice"), Some(2), "the last of a repeated key");
        let text_of = |key: &str| object.get(key).and_then(Value::scalar_text);
        assert_eq!(text_of("n").as_deref(), Some("42"));
        assert_eq!(text_of("lat").as_deref(), Some("37.48"));
        assert_eq!(text_of("id").as_deref(), Some(r#""P1""#));
        assert_eq!(text_of("none").as_deref(), Some("null"));
        assert_eq!(text_of("obj"), None);
    }

    #[test]
    fn only_objects_are_objects() {
        for text in ["[1,2]", "\"text\"", "7", "null", "[]"] {
            assert!(Object::parse(text).is_none(), "{text}");
        }
        assert!(Object::parse(" {} ").is_some());
    }

    #[test]
    fn ids_and_strings_from_text() {
        assert_eq!(id(raw(r#""1111""#)).as_deref(), Some("1111"));
        assert_eq!(id(raw("1111")).as_deref(), Some("1111"));
        assert_eq!(id(raw(r#""""#)), None);
        assert_eq!(id(raw("[1]")), None);
        assert_eq!(string(raw(r#""a\nb""#)).as_deref(), Some("a\nb"));
        assert_eq!(string(raw("12")), None);
    }
}
