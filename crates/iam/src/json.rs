//! A JSON tree that keeps object members in document order and rejects duplicate member names.
//!
//! `serde_json::Value` keeps the *last* of two members with the same name. In a policy that would let
//! `{"Effect": "Deny", ..., "Effect": "Allow"}` mean whatever the parser happened to pick, and two parsers
//! (ours and a reviewer's tool) could disagree about what a policy grants. Rejecting duplicates removes the
//! ambiguity.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A parsed JSON value. Numbers keep their text so they can be compared or re-parsed as needed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// A short description of the value's type, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Number(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members: Vec<(String, Json)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            // Policy objects are small; a linear scan beats hashing here.
            if members.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("duplicate member {key:?}")));
            }
            let value = map.next_value()?;
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_types() {
        let v: Json = serde_json::from_str(r#"{"b": [1, 2.5, true, null], "a": "x"}"#).expect("valid json");
        let Json::Object(members) = v else { panic!("object expected") };
        assert_eq!(members[0].0, "b");
        assert_eq!(
            members[0].1,
            Json::Array(vec![Json::Number("1".into()), Json::Number("2.5".into()), Json::Bool(true), Json::Null])
        );
        assert_eq!(members[1], ("a".to_owned(), Json::String("x".into())));
    }

    #[test]
    fn rejects_duplicate_members_at_any_depth() {
        let err = serde_json::from_str::<Json>(r#"{"Effect": "Deny", "Effect": "Allow"}"#).expect_err("duplicate");
        assert!(err.to_string().contains("duplicate member \"Effect\""), "{err}");
        let nested = r#"{"Statement": {"Condition": {"Bool": {"a:b": "true", "a:b": "false"}}}}"#;
        assert!(serde_json::from_str::<Json>(nested).is_err());
    }
}
