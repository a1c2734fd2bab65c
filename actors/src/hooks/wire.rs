//! What travels to and from the backend: the signature, the request bodies, and the checks
//! that turn an answer into a typed one or a failure (a malformed answer is a failure, never a
//! panic). Pure: no I/O.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::ids::Room;
use crate::ports::hooks::{ConnectAnswer, HookFailure, RpcAnswer};
pub use crate::signing::signature;

/// Longest `cacheSecs` honoured.
pub const MAX_CACHE: Duration = Duration::from_secs(3600);
/// Most rooms a connect answer may add.
pub const MAX_ANSWER_ROOMS: usize = 256;
/// Longest reason or error text kept from an answer.
pub const MAX_TEXT: usize = 512;
/// Longest id (room name, error code) accepted in an answer.
const MAX_ID: usize = 255;

/// The body of an `authorize` call.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizeRequest<'a> {
    /// The action (`signal`, `room:join`, …).
    pub action: &'a str,
    /// Who acts.
    pub user_id: &'a str,
    /// From which socket.
    pub socket_id: &'a str,
    /// The users (or the one room) acted on.
    pub targets: &'a [String],
}

/// The body of an `rpc` call.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcRequest<'a> {
    /// The client event's name.
    pub event: &'a str,
    /// Its first argument (`null` without one; an array when it had several).
    pub data: &'a Value,
    /// Who sent it.
    pub user_id: &'a str,
    /// From which socket.
    pub socket_id: &'a str,
}

/// A checked `authorize` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeAnswer {
    /// The targets allowed (a subset of those asked about).
    pub allowed: Vec<String>,
    /// Why the others were not.
    pub reason: Option<String>,
    /// How long the decisions may be reused.
    pub cache_for: Duration,
}

fn bad(why: &str) -> HookFailure {
    HookFailure::BadAnswer(why.to_string())
}

fn object(body: &[u8]) -> Result<Map<String, Value>, HookFailure> {
    // serde_json stops at 128 levels of nesting, so a deep answer is an error, not a crash.
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("the answer is not a JSON object")),
        Err(err) => Err(HookFailure::BadAnswer(format!(
            "the answer is not JSON: {err}"
        ))),
    }
}

fn text(value: Option<&Value>, what: &str) -> Result<Option<String>, HookFailure> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.chars().take(MAX_TEXT).collect())),
        Some(_) => Err(HookFailure::BadAnswer(format!("`{what}` must be a string"))),
    }
}

fn id(value: &Value) -> Option<&str> {
    value
        .as_str()
        .filter(|s| !s.is_empty() && s.len() <= MAX_ID && !s.chars().any(char::is_control))
}

/// Check a `connect` answer.
pub fn connect_answer(body: &[u8]) -> Result<ConnectAnswer, HookFailure> {
    let answer = object(body)?;
    match answer.get("allow") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            let reason = text(answer.get("reason"), "reason")?.unwrap_or_else(|| "refused".into());
            return Ok(ConnectAnswer::Refuse { reason });
        }
        _ => return Err(bad("`allow` must be true or false")),
    }
    let rooms = match answer.get("rooms") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_ANSWER_ROOMS => items
            .iter()
            .map(|r| {
                id(r)
                    .map(Room::from)
                    .ok_or_else(|| bad("`rooms` must be room names"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("`rooms` must be an array of at most 256 room names")),
    };
    let data = match answer.get("data") {
        None | Some(Value::Null) => None,
        Some(data @ Value::Object(_)) => Some(data.clone()),
        Some(_) => return Err(bad("`data` must be an object")),
    };
    Ok(ConnectAnswer::Allow { rooms, data })
}

/// Check an `authorize` answer about `targets`.
pub fn authorize_answer(body: &[u8], targets: &[String]) -> Result<AuthorizeAnswer, HookFailure> {
    let answer = object(body)?;
    let Some(Value::Array(allowed)) = answer.get("allowed") else {
        return Err(bad("`allowed` must be an array"));
    };
    // Anything not asked about is ignored: an answer cannot widen the question.
    let allowed: Vec<String> = targets
        .iter()
        .filter(|t| allowed.iter().any(|a| a.as_str() == Some(t.as_str())))
        .cloned()
        .collect();
    let reason = text(answer.get("reason"), "reason")?;
    let cache_for = match answer.get("cacheSecs") {
        None | Some(Value::Null) => Duration::ZERO,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(secs) if secs.is_finite() && secs >= 0.0 => {
                Duration::from_secs_f64(secs.min(MAX_CACHE.as_secs_f64()))
            }
            _ => return Err(bad("`cacheSecs` must be 0 to 3600")),
        },
        Some(_) => return Err(bad("`cacheSecs` must be a number")),
    };
    Ok(AuthorizeAnswer {
        allowed,
        reason,
        cache_for,
    })
}

/// Check an `rpc` answer.
pub fn rpc_answer(body: &[u8]) -> Result<RpcAnswer, HookFailure> {
    let mut answer = object(body)?;
    if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
        let code = error
            .get("code")
            .and_then(id)
            .ok_or_else(|| bad("`error.code` must be a short string"))?;
        let message = text(error.get("message"), "error.message")?.unwrap_or_default();
        return Ok(RpcAnswer::Error {
            code: code.to_string(),
            message,
        });
    }
    match answer.remove("result") {
        Some(result) => Ok(RpcAnswer::Result(result)),
        None => Err(bad("the answer has neither `result` nor `error`")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn bytes(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn connect_answers_allow_with_rooms_and_data_or_refuse_with_a_reason() {
        assert_eq!(
            connect_answer(&bytes(
                json!({"allow": true, "rooms": ["a"], "data": {"plan": 1}})
            ))
            .unwrap(),
            ConnectAnswer::Allow {
                rooms: vec![Room::from("a")],
                data: Some(json!({"plan": 1}))
            }
        );
        assert_eq!(
            connect_answer(&bytes(json!({"allow": false, "reason": "banned"}))).unwrap(),
            ConnectAnswer::Refuse {
                reason: "banned".into()
            }
        );
        for bad in [
            json!({}),
            json!({"allow": "yes"}),
            json!({"allow": true, "rooms": "a"}),
            json!({"allow": true, "rooms": [""]}),
            json!({"allow": true, "data": [1]}),
            json!([true]),
        ] {
            assert!(connect_answer(&bytes(bad.clone())).is_err(), "{bad}");
        }
        assert!(connect_answer(b"not json").is_err());
    }

    #[test]
    fn authorize_answers_cannot_widen_the_question() {
        let targets = vec!["a".to_string(), "b".to_string()];
        let answer = authorize_answer(
            &bytes(json!({"allowed": ["b", "zz"], "reason": "blocked", "cacheSecs": 99999})),
            &targets,
        )
        .unwrap();
        assert_eq!(answer.allowed, vec!["b"]);
        assert_eq!(answer.reason.as_deref(), Some("blocked"));
        assert_eq!(answer.cache_for, MAX_CACHE);
        assert!(authorize_answer(&bytes(json!({"allowed": "a"})), &targets).is_err());
        assert!(
            authorize_answer(&bytes(json!({"allowed": [], "cacheSecs": -1})), &targets).is_err()
        );
    }

    #[test]
    fn rpc_answers_carry_a_result_or_an_error() {
        assert_eq!(
            rpc_answer(&bytes(json!({"result": {"x": 1}}))).unwrap(),
            RpcAnswer::Result(json!({"x": 1}))
        );
        assert_eq!(
            rpc_answer(&bytes(json!({"result": null}))).unwrap(),
            RpcAnswer::Result(Value::Null)
        );
        assert_eq!(
            rpc_answer(&bytes(
                json!({"error": {"code": "not_found", "message": "no"}})
            ))
            .unwrap(),
            RpcAnswer::Error {
                code: "not_found".into(),
                message: "no".into()
            }
        );
        assert!(rpc_answer(&bytes(json!({}))).is_err());
        assert!(rpc_answer(&bytes(json!({"error": {"code": 5}}))).is_err());
    }

    #[test]
    fn deeply_nested_answers_are_refused_not_crashed_on() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let body = format!("{{\"result\": {deep}}}");
        assert!(matches!(
            rpc_answer(body.as_bytes()),
            Err(HookFailure::BadAnswer(_))
        ));
    }
}
