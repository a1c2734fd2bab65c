//! Binary data in JSON, for the HTTP sides of the server (the server API and the backend's
//! `rpc` hook): a Socket.IO attachment placeholder `{"_placeholder":true,"num":i}` becomes
//! `{"$binary":"<base64 of attachment i>"}` and back. Pure.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Map, Value};

/// The key of a binary value in JSON.
pub const BINARY_KEY: &str = "$binary";

/// Deepest nesting walked; deeper values are left as they are.
const MAX_DEPTH: usize = 64;

fn placeholder_num(map: &Map<String, Value>) -> Option<usize> {
    if map.get("_placeholder") != Some(&Value::Bool(true)) {
        return None;
    }
    map.get("num")?.as_u64().map(|n| n as usize)
}

/// `value` with every placeholder replaced by `{"$binary": base64}` of its attachment
/// (placeholders whose attachment is missing become `null`).
pub fn to_json(value: &Value, attachments: &[Bytes]) -> Value {
    fn walk(v: &Value, attachments: &[Bytes], depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return v.clone();
        }
        match v {
            Value::Object(map) => match placeholder_num(map) {
                Some(n) => match attachments.get(n) {
                    Some(bytes) => {
                        let mut out = Map::new();
                        out.insert(BINARY_KEY.into(), Value::String(STANDARD.encode(bytes)));
                        Value::Object(out)
                    }
                    None => Value::Null,
                },
                None => Value::Object(
                    map.iter()
                        .map(|(k, v)| (k.clone(), walk(v, attachments, depth + 1)))
                        .collect(),
                ),
            },
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| walk(v, attachments, depth + 1))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    walk(value, attachments, 0)
}

/// Why JSON could not be turned into a packet's data and attachments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    /// A `$binary` value is not valid base64.
    #[error("`$binary` must be standard base64")]
    Base64,
    /// More binary values than a packet may carry.
    #[error("at most {0} binary values")]
    TooMany(usize),
}

/// `value` with every `{"$binary": base64}` (an object with that one key) replaced by a
/// placeholder, and the decoded bytes in placeholder order; at most `max` of them.
pub fn from_json(value: Value, max: usize) -> Result<(Value, Vec<Bytes>), BinaryError> {
    fn walk(
        v: Value,
        out: &mut Vec<Bytes>,
        max: usize,
        depth: usize,
    ) -> Result<Value, BinaryError> {
        if depth > MAX_DEPTH {
            return Ok(v);
        }
        Ok(match v {
            Value::Object(mut map) => {
                if map.len() == 1
                    && let Some(Value::String(b64)) = map.get(BINARY_KEY)
                {
                    let bytes = STANDARD.decode(b64).map_err(|_| BinaryError::Base64)?;
                    if out.len() >= max {
                        return Err(BinaryError::TooMany(max));
                    }
                    out.push(Bytes::from(bytes));
                    map.clear();
                    map.insert("_placeholder".into(), Value::Bool(true));
                    map.insert("num".into(), Value::from(out.len() - 1));
                    Value::Object(map)
                } else {
                    let mut next = Map::new();
                    for (k, v) in map {
                        next.insert(k, walk(v, out, max, depth + 1)?);
                    }
                    Value::Object(next)
                }
            }
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|v| walk(v, out, max, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            other => other,
        })
    }
    let mut attachments = Vec::new();
    let value = walk(value, &mut attachments, max, 0)?;
    Ok((value, attachments))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn placeholders_and_base64_round_trip() {
        let data = json!({"a": [{"_placeholder": true, "num": 1}], "b": {"_placeholder": true, "num": 0}, "c": 3});
        let attachments = vec![Bytes::from_static(b"\x00\x01"), Bytes::from_static(b"hi")];
        let j = to_json(&data, &attachments);
        assert_eq!(
            j,
            json!({"a": [{"$binary": "aGk="}], "b": {"$binary": "AAE="}, "c": 3})
        );
        let (back, bytes) = from_json(j, 10).unwrap();
        // Renumbered in document order.
        assert_eq!(
            back,
            json!({"a": [{"_placeholder": true, "num": 0}], "b": {"_placeholder": true, "num": 1}, "c": 3})
        );
        assert_eq!(
            bytes,
            vec![Bytes::from_static(b"hi"), Bytes::from_static(b"\x00\x01")]
        );
    }

    #[test]
    fn bad_base64_and_too_many_values_are_refused_and_lookalikes_are_kept() {
        assert_eq!(
            from_json(json!({"$binary": "!!"}), 10),
            Err(BinaryError::Base64)
        );
        assert_eq!(
            from_json(json!([{"$binary": ""}, {"$binary": ""}]), 1),
            Err(BinaryError::TooMany(1))
        );
        let lookalike = json!({"$binary": "aGk=", "other": 1});
        assert_eq!(
            from_json(lookalike.clone(), 10).unwrap(),
            (lookalike, vec![])
        );
        assert_eq!(
            to_json(&json!({"_placeholder": true, "num": 5}), &[]),
            Value::Null
        );
    }
}
