//! The ids that travel between actors, one newtype each, so a room name is never passed where
//! a user id belongs.
//!
//! Every id is an `Arc<str>`: indexes, messages and log rows share one allocation per id.
//! Ids borrow as `str`, so maps keyed by an id are looked up with a plain `&str`.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Serialize, Serializer};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(Arc::from(s))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(Arc::from(s))
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> Self {
                $name(Arc::from(s.as_str()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }
    };
}

id!(
    /// An Engine.IO session id: 20 random alphanumeric characters, private to the client (it
    /// lets whoever holds it read the session's polling responses).
    Sid
);
id!(
    /// A Socket.IO socket id: public (peers, logs and the database see it).
    SocketId
);
id!(
    /// A user id: the JWT subject.
    UserId
);
id!(
    /// A node id: the `server_instance` label and the node's Redis keys.
    NodeId
);
id!(
    /// A room name.
    Room
);

impl Sid {
    /// A fresh random id.
    pub fn random() -> Self {
        Sid::from(random_id())
    }
}

impl SocketId {
    /// A fresh random id.
    pub fn random() -> Self {
        SocketId::from(random_id())
    }
}

/// 20 random alphanumeric characters (about 119 bits), as used for sids and socket ids.
pub fn random_id() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn ids_look_up_by_str_and_print_plainly() {
        let mut users: HashMap<UserId, u32> = HashMap::new();
        users.insert(UserId::from("alice"), 1);
        assert_eq!(users.get("alice"), Some(&1));
        assert_eq!(UserId::from("bob").to_string(), "bob");
        assert_eq!(format!("{:?}", Room::from("r")), "\"r\"");
        assert_eq!(
            serde_json::to_string(&NodeId::from("n1")).unwrap(),
            "\"n1\""
        );
    }

    #[test]
    fn random_ids_are_twenty_alphanumerics() {
        let a = Sid::random();
        let b = Sid::random();
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
