//! A webhook body read in one pass: its `object`, and per entry the page id and the items of
//! `messaging[]` and `standby[]`, each item as JSON values borrowed from the body (their text is
//! found beside this pass, by `item_text`).
//!
//! Tolerant like the rest of the webhook code: an entry that is not an object, or a `messaging`
//! that is not an array, reads as empty. Only a body that is not an object, or whose `entry` is
//! not an array, is refused.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::super::borrowed_json::{self, Text, Value};

#[derive(Default)]
pub(super) struct Outline<'a> {
    /// `None` when absent or not a string.
    pub object: Option<Cow<'a, str>>,
    /// `None` when `entry` is present but not an array; absent reads as empty.
    pub entries: Option<Vec<Entry<'a>>>,
}

#[derive(Default)]
pub(super) struct Entry<'a> {
    /// The page (or Instagram account) id, read as [`Value::as_id`] reads it.
    pub id: Option<String>,
    pub messaging: Vec<Value<'a>>,
    pub standby: Vec<Value<'a>>,
}

/// Values of other kinds than the visitor reads: taken as "none of it".
macro_rules! others_are_none {
    ($value:ty) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$value, E> {
            Ok(Default::default())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<$value, E> {
            Ok(Default::default())
        }
    };
}

impl<'de> Deserialize<'de> for Outline<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OutlineVisitor;
        impl<'de> Visitor<'de> for OutlineVisitor {
            type Value = Outline<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a webhook body (a JSON object)")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Outline<'de>, M::Error> {
                let mut outline = Outline {
                    object: None,
                    entries: Some(Vec::new()),
                };
                // A repeated key: the last counts, as for `serde_json::Value`.
                while let Some(Text(key)) = map.next_key()? {
                    match key.as_ref() {
                        "object" => outline.object = map.next_value::<StringOrNone>()?.0,
                        "entry" => outline.entries = map.next_value::<ListOrNone<Entry>>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(outline)
            }
        }
        deserializer.deserialize_map(OutlineVisitor)
    }
}

impl<'de> Deserialize<'de> for Entry<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = Entry<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an entry")
            }

            others_are_none!(Entry<'de>);

            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Entry<'de>, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Entry::default())
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Entry<'de>, M::Error> {
                let mut entry = Entry::default();
                while let Some(Text(key)) = map.next_key()? {
                    match key.as_ref() {
                        "id" => entry.id = borrowed_json::id(map.next_value()?),
                        "messaging" => {
                            entry.messaging =
                                map.next_value::<ListOrNone<_>>()?.0.unwrap_or_default();
                        }
                        "standby" => {
                            entry.standby =
                                map.next_value::<ListOrNone<_>>()?.0.unwrap_or_default();
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(entry)
            }
        }
        deserializer.deserialize_any(EntryVisitor)
    }
}

/// An array's elements, or `None` when the value is not an array.
struct ListOrNone<T>(Option<Vec<T>>);

impl<T> Default for ListOrNone<T> {
    fn default() -> Self {
        ListOrNone(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ListOrNone<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = ListOrNone<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }

            others_are_none!(ListOrNone<T>);

            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<ListOrNone<T>, S::Error> {
                let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(4));
                while let Some(element) = seq.next_element()? {
                    list.push(element);
                }
                Ok(ListOrNone(Some(list)))
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<ListOrNone<T>, M::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ListOrNone(None))
            }
        }
        deserializer.deserialize_any(ListVisitor(PhantomData))
    }
}

/// A string, or `None` for any other value.
struct StringOrNone<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for StringOrNone<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(deserializer)?;
        Ok(StringOrNone(borrowed_json::string(raw)))
    }
}
