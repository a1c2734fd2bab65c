//! The pure core of the Journal: text sanitation, id checks, the bounded log queue, and the
//! planning of log batches and message transactions.
//!
//! Nothing here does I/O or reads the clock; the actor shell in `mod.rs` drives it.

use std::collections::{HashMap, VecDeque};

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::prelude::{DateTimeUtc, Uuid};
use switchboard_protocol::events::sanitize_text;

use super::entities::{message, presence_log, socket_connection, webhook_outbox};
use super::outbox::{self, OutboxRow};

/// Character limits of the `VARCHAR` columns (PostgreSQL refuses longer values, failing the
/// whole batch; SQLite would keep them).
pub(super) mod limits {
    /// `user_id`, `device_id`, `from_user`, `to_user`.
    pub const USER_ID: usize = 255;
    /// `socket_id`.
    pub const SOCKET_ID: usize = 100;
    /// `server_instance`.
    pub const SERVER_INSTANCE: usize = 50;
    /// `ip_address`.
    pub const IP_ADDRESS: usize = 45;
    /// `disconnect_reason`.
    pub const REASON: usize = 100;
    /// `presence_logs.status`.
    pub const STATUS: usize = 20;
    /// `TEXT` columns.
    pub const UNBOUNDED: usize = usize::MAX;
}

/// `text` without control characters (`\n` and `\t` stay), cut to `max_chars` characters.
///
/// PostgreSQL refuses `\u0000` in text, and one refused row fails its whole batch, so every
/// text column goes through here before it is queued.
pub(super) fn clean(text: &str, max_chars: usize) -> String {
    let mut clean = sanitize_text(text);
    if let Some((cut, _)) = clean.char_indices().nth(max_chars) {
        clean.truncate(cut);
    }
    clean
}

/// Why an id is refused: ids are checked, never cleaned (a cleaned id would name another room
/// or user); the rule is the protocol's, the same everywhere.
pub(super) use switchboard_protocol::events::check_id;

/// A socket authenticated (a new `socket_connections` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OpenedRow {
    pub id: Uuid,
    pub socket_id: String,
    pub user_id: String,
    pub device_id: String,
    pub server_instance: String,
    pub ip_address: String,
    pub user_agent: Option<String>,
    pub connected_at: DateTimeUtc,
    /// Its `socket.connected` event, when webhooks are on.
    pub event: Option<OutboxRow>,
}

/// A socket went away (closes its `socket_connections` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClosedRow {
    pub socket_id: String,
    pub reason: String,
    pub messages_sent: i32,
    pub messages_received: i32,
    pub disconnected_at: DateTimeUtc,
    /// Its `socket.disconnected` event, when webhooks are on; written only if a row is closed.
    pub event: Option<OutboxRow>,
}

/// A presence transition (a new `presence_logs` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PresenceRow {
    pub user_id: String,
    pub status: String,
    pub device_id: Option<String>,
    pub at: DateTimeUtc,
    /// Its `user.online` / `user.offline` event, when webhooks are on.
    pub event: Option<OutboxRow>,
}

/// One queued log write, already sanitised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LogRow {
    /// See [`OpenedRow`].
    Opened(OpenedRow),
    /// See [`ClosedRow`].
    Closed(ClosedRow),
    /// See [`PresenceRow`].
    Presence(PresenceRow),
    /// A webhook event with no row of its own.
    Webhook(OutboxRow),
}

/// Rows taken from the queue for one flush, oldest first, each with its sequence number.
#[derive(Debug)]
pub(super) struct Batch {
    pub rows: Vec<(u64, LogRow)>,
}

impl Batch {
    /// The last sequence number in the batch.
    fn last_seq(&self) -> Option<u64> {
        self.rows.last().map(|(seq, _)| *seq)
    }
}

/// The bounded FIFO of log rows waiting for the database.
///
/// At most one batch is out (being written) at a time. A failed batch goes back to the front,
/// so rows are written in arrival order whatever happens; past `limit` rows (queued plus out)
/// new rows are dropped and counted.
#[derive(Debug)]
pub(super) struct LogQueue {
    rows: VecDeque<(u64, LogRow)>,
    out: usize,
    limit: usize,
    next_seq: u64,
    /// Every row with a sequence number at or below this one is written (or given up on).
    done_seq: u64,
    dropped: u64,
}

impl LogQueue {
    /// An empty queue holding at most `limit` rows.
    pub fn new(limit: usize) -> Self {
        LogQueue {
            rows: VecDeque::new(),
            out: 0,
            limit,
            next_seq: 1,
            done_seq: 0,
            dropped: 0,
        }
    }

    /// Queue a row; `false` (and counted) when the queue is full.
    pub fn push(&mut self, row: LogRow) -> bool {
        if self.depth() >= self.limit {
            self.dropped += 1;
            return false;
        }
        self.rows.push_back((self.next_seq, row));
        self.next_seq += 1;
        true
    }

    /// Rows queued, plus rows in the batch being written.
    pub fn depth(&self) -> usize {
        self.rows.len() + self.out
    }

    /// Rows waiting for a flush (not counting the batch being written).
    pub fn waiting(&self) -> usize {
        self.rows.len()
    }

    /// Whether a batch is being written.
    pub fn is_out(&self) -> bool {
        self.out > 0
    }

    /// Rows dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The sequence number of the newest queued row (0 when none ever was).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Whether every row up to `seq` is written (or given up on).
    pub fn is_done(&self, seq: u64) -> bool {
        self.done_seq >= seq
    }

    /// Take up to `max` of the oldest rows for writing; `None` when a batch is already out or
    /// nothing waits.
    pub fn take(&mut self, max: usize) -> Option<Batch> {
        if self.is_out() || self.rows.is_empty() {
            return None;
        }
        let n = max.max(1).min(self.rows.len());
        let rows: Vec<_> = self.rows.drain(..n).collect();
        self.out = rows.len();
        Some(Batch { rows })
    }

    /// The batch is committed.
    pub fn written(&mut self, batch: Batch) {
        self.out = 0;
        if let Some(seq) = batch.last_seq() {
            self.done_seq = self.done_seq.max(seq);
        }
    }

    /// The batch failed and will be retried: back to the front, order kept.
    pub fn retry(&mut self, batch: Batch) {
        self.out = 0;
        for row in batch.rows.into_iter().rev() {
            self.rows.push_front(row);
        }
    }

    /// The batch that was out is lost (the actor restarted): count it as dropped.
    pub fn abandon_out(&mut self) {
        if self.out == 0 {
            return;
        }
        self.dropped += self.out as u64;
        self.out = 0;
        // The lost batch ended just before the oldest queued row.
        let next = self.rows.front().map_or(self.next_seq, |(seq, _)| *seq);
        self.done_seq = self.done_seq.max(next - 1);
    }

    /// The batch can never be written (the database refuses it): drop it and count it.
    pub fn give_up(&mut self, batch: Batch) {
        self.dropped += batch.rows.len() as u64;
        self.written(batch);
    }
}

/// The statements one batch turns into, applied in this order in one transaction.
#[derive(Debug, Default)]
pub(super) struct LogPlan {
    /// New `socket_connections` rows; those closed within the same batch already carry their
    /// disconnect columns.
    pub opened: Vec<socket_connection::ActiveModel>,
    /// New `presence_logs` rows.
    pub presence: Vec<presence_log::ActiveModel>,
    /// Closes of rows written by earlier batches (one `UPDATE` each).
    pub closed: Vec<ClosedRow>,
    /// Outbox rows, in arrival order; written last, in the same transaction.
    pub events: Vec<PlannedEvent>,
}

/// An outbox row of a planned batch.
#[derive(Debug)]
pub(super) struct PlannedEvent {
    /// `Some(i)`: the event of `closed[i]`, written only if that `UPDATE` closed a row (no
    /// `socket.disconnected` for a row that is not there, or was closed already).
    pub if_closed: Option<usize>,
    pub row: webhook_outbox::ActiveModel,
}

impl LogPlan {
    /// Plan a batch whose transaction starts at `now` (the outbox rows' `created_at`). A close
    /// whose open is in the same batch is folded into the insert, so a short-lived socket
    /// costs one row write; other closes follow the inserts, so a close always lands after
    /// its open. Events keep the order of their rows.
    pub fn new(rows: &[(u64, LogRow)], now: DateTimeUtc) -> Self {
        let mut opened: Vec<OpenedRow> = Vec::new();
        let mut closes_of_opened: Vec<Option<ClosedRow>> = Vec::new();
        let mut open_index: HashMap<&str, usize> = HashMap::new();
        let mut plan = LogPlan::default();
        let mut events = Vec::new();
        let mut event = |if_closed: Option<usize>, row: Option<&OutboxRow>| {
            if let Some(row) = row {
                events.push(PlannedEvent {
                    if_closed,
                    row: row.model(now),
                });
            }
        };
        for (_, row) in rows {
            match row {
                LogRow::Opened(open) => {
                    event(None, open.event.as_ref());
                    open_index.insert(&open.socket_id, opened.len());
                    opened.push(open.clone());
                    closes_of_opened.push(None);
                }
                LogRow::Closed(close) => match open_index.remove(close.socket_id.as_str()) {
                    Some(i) => {
                        event(None, close.event.as_ref());
                        closes_of_opened[i] = Some(close.clone());
                    }
                    None => {
                        event(Some(plan.closed.len()), close.event.as_ref());
                        plan.closed.push(close.clone());
                    }
                },
                LogRow::Presence(p) => {
                    event(None, p.event.as_ref());
                    plan.presence.push(presence_log::ActiveModel {
                        id: Default::default(),
                        user_id: Set(p.user_id.clone()),
                        status: Set(p.status.clone()),
                        device_id: Set(p.device_id.clone()),
                        timestamp: Set(p.at),
                    });
                }
                LogRow::Webhook(row) => event(None, Some(row)),
            }
        }
        plan.events = events;
        plan.opened = opened
            .into_iter()
            .zip(closes_of_opened)
            .map(|(open, close)| opened_model(open, close))
            .collect();
        plan
    }
}

/// A message waiting for its transaction, already sanitised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct NewMessage {
    pub from: String,
    pub to: String,
    pub text: String,
    pub client_msg_id: Option<String>,
}

/// What became of one message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Inserted with this id.
    New(i64),
    /// A retry: the sender stored this `clientMsgId` before (this row, or one earlier in the
    /// same batch).
    Earlier(message::Model),
}

impl MessageBatch {
    /// The indexes of the messages to insert: those whose `clientMsgId` is neither among the
    /// `stored` rows nor taken by an earlier message of the batch; for the others, the stored
    /// row or the index of the batch's first message with their id.
    pub fn plan(&self, stored: &[message::Model]) -> (Vec<usize>, Vec<Result<usize, usize>>) {
        let mut insert = Vec::new();
        let mut first: HashMap<(&str, &str), usize> = HashMap::new();
        // Ok(i): the batch's own message i; Err(j): `stored[j]`.
        let mut slots = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            let Some(cid) = m.client_msg_id.as_deref() else {
                insert.push(i);
                slots.push(Ok(i));
                continue;
            };
            if let Some(j) = stored.iter().position(|row| {
                row.from_user == m.from && row.client_msg_id.as_deref() == Some(cid)
            }) {
                slots.push(Err(j));
            } else if let Some(&k) = first.get(&(m.from.as_str(), cid)) {
                slots.push(Ok(k));
            } else {
                first.insert((m.from.as_str(), cid), i);
                insert.push(i);
                slots.push(Ok(i));
            }
        }
        (insert, slots)
    }
}

/// One message transaction (group commit): the rows, in arrival order, and their events.
#[derive(Debug)]
pub(super) struct MessageBatch {
    pub messages: Vec<NewMessage>,
    /// The rows' `created_at` (and their events' `at`).
    pub created_at: DateTimeUtc,
    /// One `message.stored` event id per message when webhooks are on.
    pub event_ids: Option<Vec<Uuid>>,
}

impl MessageBatch {
    /// The `messages` rows to insert: the messages at `which`.
    pub fn models(&self, which: &[usize]) -> Vec<message::ActiveModel> {
        which
            .iter()
            .map(|&i| &self.messages[i])
            .map(|m| message::ActiveModel {
                id: NotSet,
                from_user: Set(m.from.clone()),
                to_user: Set(m.to.clone()),
                body: Set(m.text.clone()),
                created_at: Set(self.created_at),
                client_msg_id: Set(m.client_msg_id.clone()),
            })
            .collect()
    }

    /// The outbox rows of the messages at `which`, inserted with `ids` (none when webhooks
    /// are off).
    pub fn events(&self, which: &[usize], ids: &[i64]) -> Vec<webhook_outbox::ActiveModel> {
        let Some(event_ids) = &self.event_ids else {
            return Vec::new();
        };
        which
            .iter()
            .zip(ids)
            .map(|(&i, id)| {
                let m = &self.messages[i];
                outbox::message_stored(event_ids[i], *id, &m.from, &m.to, &m.text, self.created_at)
                    .model(self.created_at)
            })
            .collect()
    }
}

fn opened_model(open: OpenedRow, close: Option<ClosedRow>) -> socket_connection::ActiveModel {
    let duration = close
        .as_ref()
        .map(|c| whole_seconds_between(open.connected_at, c.disconnected_at));
    socket_connection::ActiveModel {
        id: Set(open.id),
        user_id: Set(open.user_id),
        socket_id: Set(open.socket_id),
        device_id: Set(open.device_id),
        server_instance: Set(Some(open.server_instance)),
        ip_address: Set(open.ip_address),
        user_agent: Set(open.user_agent),
        connected_at: Set(open.connected_at),
        disconnected_at: Set(close.as_ref().map(|c| c.disconnected_at)),
        disconnect_reason: Set(close.as_ref().map(|c| c.reason.clone())),
        messages_sent: Set(close.as_ref().map_or(0, |c| c.messages_sent)),
        messages_received: Set(close.as_ref().map_or(0, |c| c.messages_received)),
        duration_seconds: Set(duration),
    }
}

/// Whole seconds from `from` to `to`, never negative (clocks of different nodes may disagree).
pub(super) fn whole_seconds_between(from: DateTimeUtc, to: DateTimeUtc) -> i32 {
    let secs = (to - from).num_seconds().max(0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use sea_orm::ActiveValue;

    use super::*;

    fn at(secs: i64) -> DateTimeUtc {
        // unwrap: small constant timestamps are in range.
        DateTimeUtc::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn opened(socket: &str, secs: i64) -> LogRow {
        LogRow::Opened(OpenedRow {
            id: Uuid::new_v4(),
            socket_id: socket.into(),
            user_id: "u".into(),
            device_id: "d".into(),
            server_instance: "n1".into(),
            ip_address: "127.0.0.1".into(),
            user_agent: None,
            connected_at: at(secs),
            event: None,
        })
    }

    fn closed(socket: &str, secs: i64) -> LogRow {
        LogRow::Closed(ClosedRow {
            socket_id: socket.into(),
            reason: "client_disconnect".into(),
            messages_sent: 3,
            messages_received: 4,
            disconnected_at: at(secs),
            event: None,
        })
    }

    fn presence() -> LogRow {
        LogRow::Presence(PresenceRow {
            user_id: "u".into(),
            status: "online".into(),
            device_id: None,
            at: at(0),
            event: None,
        })
    }

    fn event(name: &str) -> OutboxRow {
        OutboxRow::new(Uuid::new_v4(), name, 0, serde_json::Value::Null)
    }

    fn with_event(mut row: LogRow, name: &str) -> LogRow {
        let slot = match &mut row {
            LogRow::Opened(r) => &mut r.event,
            LogRow::Closed(r) => &mut r.event,
            LogRow::Presence(r) => &mut r.event,
            LogRow::Webhook(_) => unreachable!("a webhook row is its event"),
        };
        *slot = Some(event(name));
        row
    }

    fn event_type(e: &PlannedEvent) -> String {
        match &e.row.event_type {
            ActiveValue::Set(t) => t.clone(),
            other => panic!("event_type {other:?}"),
        }
    }

    #[test]
    fn clean_strips_control_characters_and_cuts_by_characters() {
        assert_eq!(clean("a\u{0}b\u{7}c\nd\te\r", 100), "abc\nd\te");
        assert_eq!(clean("ééééé", 3), "ééé");
        assert_eq!(clean("short", limits::UNBOUNDED), "short");
    }

    #[test]
    fn queue_drops_and_counts_past_its_limit_including_rows_out() {
        let mut queue = LogQueue::new(3);
        assert!(queue.push(presence()));
        assert!(queue.push(presence()));
        let batch = queue.take(10).unwrap();
        assert_eq!(batch.rows.len(), 2);
        assert!(queue.push(presence()));
        assert!(!queue.push(presence()));
        assert_eq!((queue.depth(), queue.dropped()), (3, 1));
        queue.written(batch);
        assert_eq!(queue.depth(), 1);
        assert!(queue.push(presence()));
    }

    #[test]
    fn a_failed_batch_goes_back_to_the_front_in_order() {
        let mut queue = LogQueue::new(10);
        for s in ["a", "b", "c"] {
            queue.push(opened(s, 0));
        }
        let batch = queue.take(2).unwrap();
        assert!(queue.take(2).is_none(), "one batch out at a time");
        queue.push(opened("d", 0));
        queue.retry(batch);
        let batch = queue.take(10).unwrap();
        let seqs: Vec<u64> = batch.rows.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        assert!(!queue.is_done(4));
        queue.written(batch);
        assert!(queue.is_done(queue.last_seq()));
    }

    #[test]
    fn a_close_in_the_same_batch_is_folded_into_its_open() {
        let mut queue = LogQueue::new(10);
        queue.push(closed("old", 5));
        queue.push(opened("s1", 0));
        queue.push(presence());
        queue.push(closed("s1", 90));
        queue.push(opened("s2", 0));
        let batch = queue.take(10).unwrap();
        let plan = LogPlan::new(&batch.rows, at(0));
        assert_eq!(plan.opened.len(), 2);
        assert_eq!(plan.presence.len(), 1);
        assert_eq!(plan.closed.len(), 1);
        assert_eq!(plan.closed[0].socket_id, "old");
        let s1 = &plan.opened[0];
        assert_eq!(s1.disconnected_at, ActiveValue::Set(Some(at(90))));
        assert_eq!(s1.duration_seconds, ActiveValue::Set(Some(90)));
        assert_eq!(s1.messages_received, ActiveValue::Set(4));
        assert_eq!(
            s1.disconnect_reason,
            ActiveValue::Set(Some("client_disconnect".into()))
        );
        let s2 = &plan.opened[1];
        assert_eq!(s2.disconnected_at, ActiveValue::Set(None));
        assert_eq!(s2.duration_seconds, ActiveValue::Set(None));
    }

    #[test]
    fn events_follow_their_rows_in_order_and_closes_of_earlier_rows_are_conditional() {
        let rows: Vec<(u64, LogRow)> = [
            with_event(closed("old", 5), "closed-old"),
            with_event(opened("s1", 0), "opened-s1"),
            LogRow::Webhook(event("custom")),
            with_event(presence(), "presence"),
            with_event(closed("s1", 9), "closed-s1"),
            opened("quiet", 0),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, row)| (i as u64 + 1, row))
        .collect();
        let plan = LogPlan::new(&rows, at(100));
        let types: Vec<String> = plan.events.iter().map(event_type).collect();
        assert_eq!(
            types,
            ["closed-old", "opened-s1", "custom", "presence", "closed-s1"]
        );
        let conditions: Vec<Option<usize>> = plan.events.iter().map(|e| e.if_closed).collect();
        assert_eq!(conditions, [Some(0), None, None, None, None]);
        assert_eq!(plan.closed[0].socket_id, "old");
        assert!(
            plan.events
                .iter()
                .all(|e| e.row.created_at == ActiveValue::Set(at(100)))
        );
    }

    #[test]
    fn message_events_pair_each_message_with_its_id() {
        let mut batch = MessageBatch {
            messages: vec![
                new_message("a", "b", "one", None),
                new_message("b", "a", "two", None),
            ],
            created_at: at(0),
            event_ids: None,
        };
        assert_eq!(batch.models(&[0, 1]).len(), 2);
        assert!(batch.events(&[0, 1], &[10, 11]).is_empty(), "webhooks off");
        batch.event_ids = Some(vec![Uuid::new_v4(), Uuid::new_v4()]);
        let events = batch.events(&[0, 1], &[10, 11]);
        let payloads: Vec<serde_json::Value> = events
            .iter()
            .map(|e| match &e.payload {
                ActiveValue::Set(p) => serde_json::from_str(p).unwrap(),
                other => panic!("payload {other:?}"),
            })
            .collect();
        assert_eq!(
            (&payloads[0]["messageId"], &payloads[0]["text"]),
            (&serde_json::json!(10), &serde_json::json!("one"))
        );
        assert_eq!(
            (&payloads[1]["messageId"], &payloads[1]["from"]),
            (&serde_json::json!(11), &serde_json::json!("b"))
        );
    }

    fn new_message(from: &str, to: &str, text: &str, cid: Option<&str>) -> NewMessage {
        NewMessage {
            from: from.into(),
            to: to.into(),
            text: text.into(),
            client_msg_id: cid.map(str::to_string),
        }
    }

    #[test]
    fn a_client_msg_id_is_inserted_once_per_sender() {
        let batch = MessageBatch {
            messages: vec![
                new_message("a", "b", "no id", None),
                new_message("a", "b", "stored before", Some("c1")),
                new_message("a", "b", "first of two", Some("c2")),
                new_message("a", "b", "retry in the batch", Some("c2")),
                new_message("b", "a", "other sender, same id", Some("c1")),
                new_message("a", "b", "no id again", None),
            ],
            created_at: at(0),
            event_ids: None,
        };
        let stored = message::Model {
            id: 7,
            from_user: "a".into(),
            to_user: "b".into(),
            body: "stored before".into(),
            created_at: at(0),
            client_msg_id: Some("c1".into()),
        };
        let (insert, slots) = batch.plan(&[stored]);
        assert_eq!(insert, [0, 2, 4, 5]);
        assert_eq!(slots, [Ok(0), Err(0), Ok(2), Ok(2), Ok(4), Ok(5)]);
        let models = batch.models(&insert);
        assert_eq!(models[1].client_msg_id, ActiveValue::Set(Some("c2".into())));
    }

    #[test]
    fn ids_are_checked_not_cleaned() {
        assert_eq!(check_id("room:1/ü"), Ok(()));
        assert_eq!(check_id(&"x".repeat(255)), Ok(()));
        assert!(check_id("").is_err());
        assert!(check_id(&"x".repeat(256)).is_err());
        // 128 two-byte characters: 256 bytes.
        assert!(check_id(&"é".repeat(128)).is_err());
        for bad in ["a\u{0}", "a\nb", "a\tb", "\u{7f}"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_are_whole_and_never_negative() {
        assert_eq!(whole_seconds_between(at(0), at(61)), 61);
        assert_eq!(whole_seconds_between(at(10), at(0)), 0);
    }
}
