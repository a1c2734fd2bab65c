//! The Hooks actor: the node's one client of the application's backend.
//!
//! Every call is `POST {hook url}/{hook}` with a JSON body, an `x-switchboard-timestamp` and an
//! `x-switchboard-signature` (HMAC-SHA256 of `"<timestamp>.<body>"`). A 200 with a valid answer
//! is an answer; anything else — another status, no answer within the timeout, a body that is
//! not a valid answer — is a [`HookFailure`]. Each hook has a circuit breaker (five failures in
//! a row open it for ten seconds), so a failing backend costs the node nothing but the refusals
//! or admissions its failure policy says.
//!
//! `authorize` answers land in the node's [`DecisionCache`], which sessions read without asking
//! this actor; questions already in flight are not asked twice (concurrent identical questions
//! share one request).
//!
//! # Layout
//! - this file: the actor shell (HTTP, circuits, in-flight questions, metrics).
//! - [`wire`]: the signature and the checks of each answer (pure).
//! - [`circuit`]: the circuit breaker (pure).
//! - [`crate::decisions`]: the decision cache it fills.
//! - [`crate::ports::hooks`]: the messages it accepts.

pub mod circuit;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::{Instrument, Span, debug, warn};

pub use crate::decisions::DecisionCache;
use crate::metrics::{HookLabel, HookOutcomeLabel, MeteredActor, metrics};
pub use crate::ports::hooks::FailurePolicy;
use crate::ports::hooks::{
    Action, AskAuthorize, AskConnect, AskRpc, ConnectAnswer, Decision, Hook, HookFailure, RpcAnswer,
};
use crate::traces;
use circuit::Circuit;
use wire::AuthorizeAnswer;

/// Largest answer read from the backend; a longer one is a bad answer.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The backend hooks of a node.
#[derive(Debug, Clone)]
pub struct HooksConfig {
    /// Base URL; hooks are `{url}/connect`, `{url}/authorize`, `{url}/rpc`.
    pub url: String,
    /// The HMAC key.
    pub secret: Vec<u8>,
    /// How long a call may take.
    pub timeout: Duration,
    /// The actions `authorize` is asked about.
    pub authorize: HashSet<Action>,
    /// What a failure means.
    pub failure: FailurePolicy,
}

type Waiter = oneshot::Sender<Result<Decision, HookFailure>>;

/// The Hooks actor (see the module docs).
pub struct Hooks {
    config: Arc<HooksConfig>,
    /// Made in `started`: the HTTP client belongs to this actor's thread.
    client: Option<awc::Client>,
    circuits: HashMap<Hook, Circuit>,
    cache: Arc<DecisionCache>,
    /// Questions being asked, with everyone waiting for their answer.
    inflight: HashMap<String, Vec<Waiter>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hooks {
    /// Hooks for `config`, filling `cache` with `authorize` decisions.
    pub fn new(config: HooksConfig, cache: Arc<DecisionCache>) -> Self {
        Hooks {
            config: Arc::new(config),
            client: None,
            circuits: HashMap::new(),
            cache,
            inflight: HashMap::new(),
        }
    }

    /// The request for `hook` to `url`, or why none goes out (circuit open); traced in `span`,
    /// whose `traceparent` it sends.
    fn request(
        &mut self,
        hook: Hook,
        url: String,
        body: Vec<u8>,
        span: Span,
    ) -> impl Future<Output = Result<Bytes, HookFailure>> + 'static {
        let admitted = self.circuits.entry(hook).or_default().admit(Instant::now());
        self.circuit_gauge(hook);
        let client = self.client.get_or_insert_with(awc::Client::default).clone();
        let config = self.config.clone();
        let traceparent = traces::traceparent(&span).map(|t| t.to_string());
        let status_span = span.clone();
        async move {
            if !admitted {
                return Err(HookFailure::CircuitOpen);
            }
            let timestamp = unix_ms();
            let signature = wire::signature(&config.secret, timestamp, &body);
            let call = async {
                let mut request = client
                    .post(url)
                    .timeout(config.timeout)
                    .insert_header(("content-type", "application/json"))
                    .insert_header(("x-switchboard-timestamp", timestamp.to_string()))
                    .insert_header(("x-switchboard-signature", signature));
                if let Some(traceparent) = traceparent {
                    request = request.insert_header(("traceparent", traceparent));
                }
                let mut response = request.send_body(body).await.map_err(|err| match err {
                    awc::error::SendRequestError::Timeout => HookFailure::Timeout,
                    other => HookFailure::Unreachable(other.to_string()),
                })?;
                status_span.record("http.response.status_code", response.status().as_u16());
                if response.status().as_u16() != 200 {
                    return Err(HookFailure::Status(response.status().as_u16()));
                }
                response
                    .body()
                    .limit(MAX_ANSWER_BYTES)
                    .await
                    .map_err(|err| match err {
                        awc::error::PayloadError::Overflow => {
                            HookFailure::BadAnswer("the answer is too large".into())
                        }
                        other => HookFailure::Unreachable(other.to_string()),
                    })
            };
            // The whole exchange, body included, is bounded by the timeout.
            tokio::time::timeout(config.timeout, call)
                .await
                .unwrap_or(Err(HookFailure::Timeout))
        }
        .instrument(span)
    }

    /// Count a call's outcome and move its circuit.
    fn record<T>(&mut self, hook: Hook, started: Instant, result: &Result<T, HookFailure>) {
        let m = metrics();
        let outcome = match result {
            Ok(_) => "ok",
            Err(failure) => failure.outcome(),
        };
        m.hook_requests
            .get_or_create(&HookOutcomeLabel {
                hook: hook.as_str(),
                outcome,
            })
            .inc();
        if matches!(result, Err(HookFailure::CircuitOpen)) {
            return;
        }
        m.hook_duration
            .get_or_create(&HookLabel {
                hook: hook.as_str(),
            })
            .observe(started.elapsed().as_secs_f64());
        let circuit = self.circuits.entry(hook).or_default();
        match result {
            Ok(_) => circuit.succeeded(),
            Err(failure) => {
                debug!(hook = hook.as_str(), %failure, "hook failed");
                let was_open = circuit.is_open();
                circuit.failed(Instant::now());
                if circuit.is_open() && !was_open {
                    warn!(hook = hook.as_str(), %failure, "hook circuit open: the backend keeps failing");
                }
            }
        }
        self.circuit_gauge(hook);
    }

    fn circuit_gauge(&self, hook: Hook) {
        let open = self.circuits.get(&hook).is_some_and(Circuit::is_open);
        metrics()
            .hook_circuit_open
            .get_or_create(&HookLabel {
                hook: hook.as_str(),
            })
            .set(i64::from(open));
    }

    /// Ask `hook` with `body`; `check` turns the answer's bytes into the typed answer.
    fn call<T: 'static>(
        &mut self,
        hook: Hook,
        body: Vec<u8>,
        parent: &Span,
        check: impl FnOnce(&[u8]) -> Result<T, HookFailure> + 'static,
    ) -> ResponseActFuture<Self, Result<T, HookFailure>> {
        let started = Instant::now();
        let url = format!(
            "{}/{}",
            self.config.url.trim_end_matches('/'),
            hook.as_str()
        );
        let span = traces::hook(parent, hook.as_str(), &url);
        let request = self.request(hook, url, body, span.clone());
        Box::pin(
            actix::fut::wrap_future::<_, Self>(
                async move { request.await.and_then(|b| check(&b)) },
            )
            .map(move |result, act, _ctx| {
                // A failure's log line names the call's trace.
                let _entered = span.enter();
                if result.is_err() {
                    traces::failed(&span);
                }
                act.record(hook, started, &result);
                result
            }),
        )
    }

    /// Answer everyone waiting for `key` and remember the decisions.
    fn decided(
        &mut self,
        key: &str,
        question: &AskAuthorize,
        answer: Result<AuthorizeAnswer, HookFailure>,
    ) {
        let result = answer.map(|answer| {
            let reason: Arc<str> = Arc::from(answer.reason.as_deref().unwrap_or("forbidden"));
            let until = Instant::now() + answer.cache_for;
            let mut decision = Decision::default();
            for target in &question.targets {
                let allowed = answer.allowed.contains(target);
                let cached = if allowed { Ok(()) } else { Err(reason.clone()) };
                if !answer.cache_for.is_zero() {
                    self.cache
                        .put(question.action, &question.user, target, cached, until);
                }
                if !allowed {
                    decision.denied.push((target.clone(), reason.to_string()));
                }
            }
            decision
        });
        for waiter in self.inflight.remove(key).unwrap_or_default() {
            let _ = waiter.send(result.clone());
        }
    }
}

impl Actor for Hooks {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        self.client = Some(awc::Client::builder().timeout(self.config.timeout).finish());
        for hook in Hook::ALL {
            self.circuit_gauge(hook);
        }
    }
}

impl Supervised for Hooks {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::metrics::restarted("hooks");
        // Questions in flight died with the old context: their askers get a failure.
        self.inflight.clear();
    }
}

impl Handler<AskConnect> for Hooks {
    type Result = ResponseActFuture<Self, Result<ConnectAnswer, HookFailure>>;

    fn handle(&mut self, msg: AskConnect, _ctx: &mut Context<Self>) -> Self::Result {
        let body = serde_json::to_vec(&msg.request).unwrap_or_default();
        self.call(Hook::Connect, body, &msg.span, wire::connect_answer)
    }
}

impl Handler<AskRpc> for Hooks {
    type Result = ResponseActFuture<Self, Result<RpcAnswer, HookFailure>>;

    fn handle(&mut self, msg: AskRpc, _ctx: &mut Context<Self>) -> Self::Result {
        let body = serde_json::to_vec(&wire::RpcRequest {
            event: &msg.event,
            data: &msg.data,
            user_id: &msg.user,
            socket_id: &msg.socket,
        })
        .unwrap_or_default();
        self.call(Hook::Rpc, body, &msg.span, wire::rpc_answer)
    }
}

impl Handler<AskAuthorize> for Hooks {
    type Result = ResponseFuture<Result<Decision, HookFailure>>;

    fn handle(&mut self, msg: AskAuthorize, ctx: &mut Context<Self>) -> Self::Result {
        // The same question from any socket of the user: one request.
        let mut targets = msg.targets.clone();
        targets.sort();
        let key = format!(
            "{}\0{}:{}\0{}",
            msg.action.as_str(),
            msg.user.len(),
            msg.user,
            targets.join("\0")
        );
        let (tx, rx) = oneshot::channel();
        let waiting = self.inflight.entry(key.clone()).or_default();
        waiting.push(tx);
        if waiting.len() == 1 {
            let body = serde_json::to_vec(&wire::AuthorizeRequest {
                action: msg.action.as_str(),
                user_id: &msg.user,
                socket_id: &msg.socket,
                targets: &msg.targets,
            })
            .unwrap_or_default();
            let targets = msg.targets.clone();
            let asked = self.call(Hook::Authorize, body, &msg.span, move |b| {
                wire::authorize_answer(b, &targets)
            });
            ctx.spawn(asked.map(move |answer, act, _ctx| act.decided(&key, &msg, answer)));
        }
        Box::pin(async move {
            rx.await.unwrap_or(Err(HookFailure::Unreachable(
                "the hooks actor restarted".into(),
            )))
        })
    }
}

impl MeteredActor for Hooks {
    const NAME: &'static str = "hooks";
}

crate::metered!(Hooks: AskConnect, AskRpc, AskAuthorize);
