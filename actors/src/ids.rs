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
    /// lets whoever holds it read the session's polling responses). In cluster mode it ends in
    /// `.` and its node's [`NodeTag`], so any node can tell which node owns it.
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
    /// The name logs give this session: derived from the sid (a hash prefix), so a log reader
    /// can follow one session's lines but cannot take the session over with it.
    pub fn public(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(&Sha256::digest(self.as_bytes())[..6])
    }

    /// A fresh random id.
    pub fn random() -> Self {
        Sid::from(random_id())
    }

    /// A fresh random id owned by the node of `tag`: `<20 random alphanumerics>.<tag>`. The tag
    /// adds no guessable part to the random one; it only names the node.
    pub fn random_on(tag: &NodeTag) -> Self {
        let mut id = random_id();
        id.push(NodeTag::SEPARATOR);
        id.push_str(tag.as_str());
        Sid::from(id)
    }

    /// The tag of the node that owns this sid, when it carries a well-formed one.
    pub fn node_tag(sid: &str) -> Option<&str> {
        let (_, tag) = sid.rsplit_once(NodeTag::SEPARATOR)?;
        NodeTag::well_formed(tag).then_some(tag)
    }
}

/// A short, stable name of a node that sids carry: the first [`NodeTag::LEN`] hex digits of
/// SHA-256 of the node id. It does not reveal the node id (a pod name), and is the same on every
/// node, so no lookup is needed to compute it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeTag(String);

impl NodeTag {
    /// Hex digits in a tag (40 bits: no collision between the nodes of any real cluster).
    pub const LEN: usize = 10;
    /// Between a sid's random part and its tag.
    pub const SEPARATOR: char = '.';

    /// The tag of `node`.
    pub fn of(node: &NodeId) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(node.as_bytes());
        let mut tag = hex::encode(&digest[..NodeTag::LEN.div_ceil(2)]);
        tag.truncate(NodeTag::LEN);
        NodeTag(tag)
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn well_formed(tag: &str) -> bool {
        tag.len() == NodeTag::LEN && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

impl fmt::Display for NodeTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
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
        assert_eq!(Sid::node_tag(&a), None, "an untagged sid names no node");
    }

    #[test]
    fn tagged_sids_name_their_node() {
        let tag = NodeTag::of(&NodeId::from("switchboard-0"));
        assert_eq!(tag.as_str().len(), NodeTag::LEN);
        assert_eq!(tag, NodeTag::of(&NodeId::from("switchboard-0")), "stable");
        assert_ne!(tag, NodeTag::of(&NodeId::from("switchboard-1")));
        assert!(
            !tag.as_str().contains("switchboard"),
            "the node id is not revealed"
        );
        let sid = Sid::random_on(&tag);
        let public = sid.public();
        assert_eq!(public.len(), 12);
        assert!(!sid.contains(public.as_str()) && !public.contains(&sid[..8]));
        assert_eq!(public, Sid::from(sid.as_str()).public(), "stable");
        assert_ne!(public, Sid::random_on(&tag).public());
        assert_eq!(sid.len(), 20 + 1 + NodeTag::LEN);
        assert_eq!(Sid::node_tag(&sid), Some(tag.as_str()));
        assert_ne!(sid, Sid::random_on(&tag), "the random part differs");
        assert!(
            sid.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'),
            "URL-safe: {sid}"
        );
    }

    #[test]
    fn malformed_tags_name_no_node() {
        for sid in [
            "",
            ".",
            "abc.",
            "abc.0123456789a",
            "abc.012345678",
            "abc.012345678G",
            "abc.ABCDEF0123",
            "abc.0123456789.",
            "é.éééééééééé",
        ] {
            assert_eq!(Sid::node_tag(sid), None, "{sid:?}");
        }
        assert_eq!(Sid::node_tag("x.y.0123456789"), Some("0123456789"));
    }
}
