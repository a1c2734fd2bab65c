//! Custom events: any event name that is not built in goes to the backend's `rpc` hook, and
//! its answer is the ack (`{ok: true, result}` or `{ok: false, error: {code, message}}`).
//! Without a backend such events are `unknown_event`. The per-socket rate limit and the event
//! size cap have already been applied.

use serde_json::{Value, json};
use switchboard_protocol::events::EventName;

use super::errors::Refusal;
use super::{App, Conn, Done, User, ack, fail, work};
use crate::metrics::metrics;
use crate::ports::hooks::{AskRpc, HookFailure, RpcAnswer};

/// A custom event from the client.
pub(super) fn call(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    name: String,
    mut args: Vec<Value>,
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
    let asked = hooks.rpc.send(AskRpc {
        event: name,
        data,
        user: user.user.clone(),
        socket: user.socket.clone(),
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
        Ok(RpcAnswer::Result(result)) => ack(conn, id, json!({"ok": true, "result": result})),
        Ok(RpcAnswer::Error { code, message }) => {
            // The application's own code: counted under one label, sent as the backend said.
            metrics().error("rpc_error");
            let error = json!({"code": code, "message": message});
            match id {
                Some(_) => ack(conn, id, json!({"ok": false, "error": error})),
                None => super::event(conn, EventName::Error, error),
            }
        }
        // No failure policy makes up an answer: the client is told to try again.
        Err(_) => fail(conn, id, Refusal::backend_unavailable()),
    }
}
