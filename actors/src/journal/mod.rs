//! The Journal actor: owner of stored direct messages.
//!
//! Messages get their id here, in commit order, which is the order `message:sync` returns them
//! in. This is the in-memory store of the single-node product; it keeps the most recent
//! [`MAX_MESSAGES`] messages.

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde::Serialize;

use crate::presence::UserId;

/// How many messages the in-memory store keeps (oldest dropped first).
pub const MAX_MESSAGES: usize = 1_000_000;

/// A stored direct message, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    /// Increasing id: the order of commit.
    pub message_id: u64,
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Sanitised text.
    pub text: String,
    /// Commit time, ms since the Unix epoch.
    pub created_at: u64,
}

/// Store a message; answers once it is stored.
#[derive(Message)]
#[rtype(result = "StoredMessage")]
pub struct StoreMessage {
    /// Sender.
    pub from: UserId,
    /// Recipient.
    pub to: String,
    /// Sanitised text.
    pub text: String,
}

/// Messages to or from `user` with an id above `after`.
#[derive(Message)]
#[rtype(result = "SyncPage")]
pub struct SyncMessages {
    /// Whose messages.
    pub user: UserId,
    /// Exclusive lower bound on the id.
    pub after: u64,
    /// Page size.
    pub limit: usize,
}

/// One page of `message:sync`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncPage {
    /// Ascending by id.
    pub messages: Vec<StoredMessage>,
    /// More messages follow the last one.
    pub has_more: bool,
}

/// The Journal actor (see the module docs).
#[derive(Default)]
pub struct Journal {
    next_id: u64,
    messages: VecDeque<StoredMessage>,
    /// user → ids of messages to or from them, ascending.
    by_user: HashMap<String, VecDeque<u64>>,
}

impl Actor for Journal {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Journal {
    fn index(&mut self, user: &str, id: u64) {
        self.by_user
            .entry(user.to_string())
            .or_default()
            .push_back(id);
    }

    fn evict_oldest(&mut self) {
        let Some(old) = self.messages.pop_front() else {
            return;
        };
        for user in [&old.from, &old.to] {
            if let Some(ids) = self.by_user.get_mut(user.as_str()) {
                while ids.front().is_some_and(|&id| id <= old.message_id) {
                    ids.pop_front();
                }
                if ids.is_empty() {
                    self.by_user.remove(user.as_str());
                }
            }
        }
    }

    fn get(&self, id: u64) -> Option<&StoredMessage> {
        let first = self.messages.front()?.message_id;
        let idx = usize::try_from(id.checked_sub(first)?).ok()?;
        self.messages.get(idx)
    }
}

impl Handler<StoreMessage> for Journal {
    type Result = MessageResult<StoreMessage>;

    fn handle(&mut self, msg: StoreMessage, _ctx: &mut Context<Self>) -> Self::Result {
        self.next_id += 1;
        let stored = StoredMessage {
            message_id: self.next_id,
            from: msg.from.to_string(),
            to: msg.to,
            text: msg.text,
            created_at: now_ms(),
        };
        if self.messages.len() >= MAX_MESSAGES {
            self.evict_oldest();
        }
        self.index(&stored.from.clone(), stored.message_id);
        if stored.to != stored.from {
            self.index(&stored.to.clone(), stored.message_id);
        }
        self.messages.push_back(stored.clone());
        MessageResult(stored)
    }
}

impl Handler<SyncMessages> for Journal {
    type Result = MessageResult<SyncMessages>;

    fn handle(&mut self, msg: SyncMessages, _ctx: &mut Context<Self>) -> Self::Result {
        let empty = VecDeque::new();
        let ids = self.by_user.get(&*msg.user).unwrap_or(&empty);
        let start = ids.partition_point(|&id| id <= msg.after);
        let mut messages: Vec<StoredMessage> = ids
            .range(start..)
            .take(msg.limit + 1)
            .filter_map(|&id| self.get(id).cloned())
            .collect();
        let has_more = messages.len() > msg.limit;
        messages.truncate(msg.limit);
        MessageResult(SyncPage { messages, has_more })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[actix::test]
    async fn sync_returns_a_users_messages_in_order_with_paging() {
        let journal = Journal::default().start();
        let alice: UserId = Arc::from("alice");
        for i in 0..5 {
            let stored = journal
                .send(StoreMessage {
                    from: alice.clone(),
                    to: "bob".into(),
                    text: format!("m{i}"),
                })
                .await
                .unwrap();
            assert_eq!(stored.message_id, i + 1);
        }
        journal
            .send(StoreMessage {
                from: Arc::from("carol"),
                to: "dave".into(),
                text: "other".into(),
            })
            .await
            .unwrap();
        let bob: UserId = Arc::from("bob");
        let page = journal
            .send(SyncMessages {
                user: bob.clone(),
                after: 0,
                limit: 2,
            })
            .await
            .unwrap();
        assert_eq!(page.messages.len(), 2);
        assert!(page.has_more);
        let rest = journal
            .send(SyncMessages {
                user: bob,
                after: page.messages[1].message_id,
                limit: 10,
            })
            .await
            .unwrap();
        let texts: Vec<_> = rest.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, vec!["m2", "m3", "m4"]);
        assert!(!rest.has_more);
    }
}
