//! JSON syntax with one rule serde_json leaves out: a key appears at most
//! once in an object. serde_json keeps the last of duplicate keys, so
//! `{"text":"a","text":"b"}` would be read as `"b"` while a proxy or a log
//! reader in front of us may have seen `"a"`.
//!
//! [`parse_value`] builds the same [`Value`] as `serde_json::from_slice`,
//! in the same single pass: each key is looked up once, as the insert
//! needs anyway, so refusing duplicates costs nothing on valid bodies.
//! Where a duplicate is is learnt only on the way out of the error, so
//! valid bodies build no path either.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Why bytes are not a JSON value with unique keys.
#[derive(Debug)]
pub enum ParseError {
    /// Not JSON (syntax error, truncated body, nesting too deep).
    Syntax(serde_json::Error),
    /// A key appears twice in one object.
    DuplicateKey(Location),
}

/// Where a duplicate key is: the path of keys and indexes to it, the key
/// itself last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl Location {
    /// The duplicated key.
    pub fn key(&self) -> &str {
        match self.0.last() {
            Some(Segment::Key(key)) => key,
            _ => "",
        }
    }

    /// As an RFC 6901 JSON pointer: `/workflow/1/message/content/text`.
    pub fn pointer(&self) -> String {
        let mut out = String::new();
        for segment in &self.0 {
            out.push('/');
            match segment {
                Segment::Key(key) => out.push_str(&key.replace('~', "~0").replace('/', "~1")),
                Segment::Index(i) => out.push_str(&i.to_string()),
            }
        }
        out
    }

    /// As the field names of `invalid_parameters`:
    /// `workflow[1].message.content.text`.
    pub fn field(&self) -> String {
        let mut out = String::new();
        for segment in &self.0 {
            match segment {
                Segment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

/// Parses `bytes` as one JSON value, refusing duplicate keys at any depth.
pub fn parse_value(bytes: &[u8]) -> Result<Value, ParseError> {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Unique { found: &found }
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value));
    match (parsed, found.into_inner()) {
        (_, Some(mut reversed)) => {
            reversed.reverse();
            Err(ParseError::DuplicateKey(Location(reversed)))
        }
        (Ok(value), None) => Ok(value),
        (Err(e), None) => Err(ParseError::Syntax(e)),
    }
}

/// Builds a [`Value`]; on a duplicate key it records the key, and each
/// enclosing object or array adds its own segment as the error unwinds
/// (so the path comes out innermost first).
#[derive(Clone, Copy)]
struct Unique<'a> {
    found: &'a RefCell<Option<Vec<Segment>>>,
}

impl Unique<'_> {
    fn unwinding(self, segment: impl FnOnce() -> Segment) {
        if let Some(path) = self.found.borrow_mut().as_mut() {
            path.push(segment());
        }
    }
}

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity; serde_json makes them null.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(Value::Array(items)),
                Err(e) => {
                    let index = items.len();
                    self.unwinding(|| Segment::Index(index));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match object.entry(key) {
                Entry::Vacant(slot) => match map.next_value_seed(self) {
                    Ok(value) => {
                        slot.insert(value);
                    }
                    Err(e) => {
                        self.unwinding(|| Segment::Key(slot.key().clone()));
                        return Err(e);
                    }
                },
                Entry::Occupied(slot) => {
                    *self.found.borrow_mut() = Some(vec![Segment::Key(slot.key().clone())]);
                    return Err(A::Error::custom("duplicate key"));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate(body: &str) -> Option<(String, String, String)> {
        match parse_value(body.as_bytes()) {
            Err(ParseError::DuplicateKey(at)) => {
                Some((at.key().to_owned(), at.field(), at.pointer()))
            }
            Err(ParseError::Syntax(e)) => panic!("{body}: syntax error {e}"),
            Ok(_) => None,
        }
    }

    #[test]
    fn duplicates_are_found_at_any_depth() {
        let found = |key: &str, field: &str, pointer: &str| {
            Some((key.to_owned(), field.to_owned(), pointer.to_owned()))
        };
        assert_eq!(
            duplicate(r#"{"text":"a","text":"b"}"#),
            found("text", "text", "/text")
        );
        assert_eq!(
            duplicate(r#"{"a":{"b":[1,{"c":{}},{"x":null,"x":{}}]}}"#),
            found("x", "a.b[2].x", "/a/b/2/x")
        );
        assert_eq!(
            duplicate(r#"[{"k":1},[{"k":1,"k":1}]]"#),
            found("k", "[1][0].k", "/1/0/k")
        );
        assert_eq!(
            duplicate(r#"{"a/b~c":1,"a/b~c":1}"#),
            found("a/b~c", "a/b~c", "/a~1b~0c")
        );
        // The same key once escaped is the same key.
        assert_eq!(duplicate(r#"{"t":1,"\u0074":2}"#), found("t", "t", "/t"));
        // The first duplicate in reading order wins, even if deeper ones follow.
        assert_eq!(
            duplicate(r#"{"a":1,"a":{"b":1,"b":2}}"#),
            found("a", "a", "/a")
        );
    }

    #[test]
    fn the_same_key_in_different_objects_is_fine() {
        for body in [
            r#"{"a":{"k":1},"b":{"k":1},"k":[{"k":1},{"k":2}]}"#,
            r#"{"":1,"k":"k"}"#,
            "[]",
            "{}",
            "null",
            r#""text""#,
        ] {
            assert_eq!(duplicate(body), None, "{body}");
        }
    }

    #[test]
    fn values_are_those_serde_json_builds() {
        for body in [
            r#"{"a":[1,-2,3.5,1e300,18446744073709551615,-9223372036854775808],"b":{"c":null,"d":true,"e":"\u00e9\n"}}"#,
            r#"  [ {} , [] , "" , 0 , -0.0 ]  "#,
        ] {
            let ours = parse_value(body.as_bytes()).expect("parses");
            let theirs: Value = serde_json::from_str(body).expect("parses");
            assert_eq!(ours, theirs, "{body}");
        }
    }

    #[test]
    fn syntax_errors_stay_syntax_errors() {
        let deep = "[".repeat(10_000);
        for body in [
            "",
            "{",
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            "[1,]",
            &deep,
            "\u{feff}{}",
        ] {
            assert!(
                matches!(parse_value(body.as_bytes()), Err(ParseError::Syntax(_))),
                "{body:.20}"
            );
        }
    }
}
