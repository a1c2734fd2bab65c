//! Custom events: any event name that is not built in goes to the backend's `rpc` hook, and
//! its answer is the ack (`{ok: true, result}` or `{ok: false, error: {code, message}}`).
//! Without a backend such events are `unknown_event`. The per-socket rate limit and the event
//! size cap have already been applied.

use bytes::Bytes;
use serde_json::{Value, json};
use switchboard_protocol::binary;
use switchboard_protocol::events::EventName;
use switchboard_protocol::socketio::Packet;

use super::errors::Refusal;
use super::{App, Conn, Done, User, fail, work};
use crate::metrics::metrics;
use crate::ports::hooks::{AskRpc, HookFailure, RpcAnswer};

/// Most binary values an `rpc` result may carry back.
const MAX_ANSWER_BINARIES: usize = 64;

/// A custom event from the client.
pub(super) fn call(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    name: String,
    mut args: Vec<Value>,
    attachments: Vec<Bytes>,
    id: Option<u64>,
) {
    // Server → client names are not the application's to answer.
    let (Some(hooks), None) = (&app.hooks, EventName::from_name(&name)) else {
        return fail(conn, id, Refusal::unknown_event(&name));
    };
    let data = match args.len() {
        0 => Value::Null,
        1 => args.pop().unwrap_or(Value::Null),
        _ => Value::Array(args),
    };
    // Binary arguments travel to the backend as `{"$binary": base64}`.
    let data = if attachments.is_empty() {
        data
    } else {
        binary::to_json(&data, &attachments)
    };
    let asked = hooks.rpc.send(AskRpc {
        event: name,
        data,
        user: user.user.clone(),
        socket: user.socket.clone(),
        span: crate::traces::current(),
    });
    conn.spawn(work(async move {
        let result = match asked.await {
            Ok(result) => result,
            Err(_) => Err(HookFailure::Unreachable(
                "the hooks actor is restarting".into(),
            )),
        };
        Done::Rpc { id, result }
    }));
}

/// The backend answered (or failed to).
pub(super) fn answered(
    conn: &mut dyn Conn,
    id: Option<u64>,
    result: Result<RpcAnswer, HookFailure>,
) {
    match result {
        Ok(RpcAnswer::Result(result)) => match binary::from_json(result, MAX_ANSWER_BINARIES) {
            // `{"$binary": base64}` in the result goes back to the client as binary.
            Ok((result, attachments)) => {
                if let Some(id) = id {
                    let answer = json!({"ok": true, "result": result});
                    conn.emit(&Packet::ack("/", id, vec![answer], attachments));
                }
            }
            Err(_) => fail(conn, id, Refusal::backend_unavailable()),
        },
        Ok(RpcAnswer::Error { code, message }) => {
            // The application's own code: counted under one label, sent as the backend said.
            metrics().error("rpc_error");
            let error = json!({"code": code, "message": message});
            match id {
                Some(_) => super::ack(conn, id, json!({"ok": false, "error": error})),
                None => super::event(conn, EventName::Error, error),
            }
        }
        // No failure policy makes up an answer: the client is told to try again.
        Err(_) => fail(conn, id, Refusal::backend_unavailable()),
    }
}
