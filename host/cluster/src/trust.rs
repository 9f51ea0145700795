//! Who may talk to this host on the cluster endpoint, and to whom this host
//! talks (invariant I5): a peer is admitted by the key recorded for it in
//! the replicated membership, not by the name in its certificate.
//!
//! - Every host's [`NodeRecord`] carries the pin of its TLS key
//!   ([`crate::identity::CheckedIdentity::node_key_pin`]: SHA-256 of its SubjectPublicKeyInfo). A
//!   joining host's pin comes from its certificate signing request and is
//!   committed with [`crate::Command::Admit`], before the host has a
//!   certificate; the founder's is written when it creates the cluster.
//! - [`decide`] decides for a peer `(node id, key pin)` from the facts the
//!   node internals gather (`node.rs`):
//!   - a removed host, or one that is neither in the raft membership nor
//!     admitted and joining, is refused whatever its certificate;
//!   - a host whose certificate carries another key than the recorded one
//!     is refused: a certificate minted with the CA key for a member's name
//!     (by a removed host, or by anyone holding a member's disk) is useless;
//!   - while this host is still joining (its state has not arrived yet), it
//!     trusts the members and pins the leader listed in its join answer.
//! - Both directions are checked: servers check their clients in the TLS
//!   handshake and on every request; clients check the server they dialled
//!   (the network crate's client configuration).
//! - **Hosts that joined before keys were recorded** have no pin. They are
//!   admitted by name, as before, until the leader records their key: the
//!   first time the leader dials one at its recorded address (raft
//!   heartbeats do so within a heartbeat of the leader's start), it records
//!   the key that host presented. The leader records its own key too.
//!   Only the leader records, and only keys it saw as a client of the
//!   recorded address: a client connecting with a minted certificate cannot
//!   get its key recorded.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::state::{NodeRecord, NodeStatus};
use crate::types::NodeId;

/// The decision on a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A member, or a host admitted and joining, with the key recorded for it.
    Admitted,
    /// A member that joined before keys were recorded: admitted by its name
    /// until the leader records its key.
    Unpinned,
    /// Refused.
    Refused(Refusal),
}

impl Admission {
    /// Whether the peer may talk to this host.
    pub fn admitted(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }
}

/// Why a peer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The node id is not (or no longer) in the cluster.
    #[error("node {0} is not a member of this cluster")]
    NotMember(NodeId),
    /// The node was removed; its id is never used again.
    #[error(
        "node {0} is not a member of this cluster: it was removed, and its id is never used again"
    )]
    Removed(NodeId),
    /// The certificate names a member but carries another key than the one
    /// recorded when that member joined.
    #[error(
        "the certificate for node {node_id} carries key {presented}, not the key recorded \
         for node {node_id} when it joined ({recorded}): refused"
    )]
    KeyMismatch {
        /// The node the certificate names.
        node_id: NodeId,
        /// The pin of the key it carries.
        presented: String,
        /// The pin recorded in the membership.
        recorded: String,
    },
}

/// Checks a peer's node id and key pin (see [`decide`]).
pub type KeyCheck = Arc<dyn Fn(NodeId, &str) -> Admission + Send + Sync>;

/// Told the node id and key pin of every server this host dialled whose
/// record has no pin yet.
pub type KeySeen = Arc<dyn Fn(NodeId, String) + Send + Sync>;

/// The hosts whose key the leader is recording right now.
#[derive(Debug, Default)]
pub(crate) struct Recording(Mutex<BTreeSet<NodeId>>);

impl Recording {
    /// Mark `id` as being recorded; `false` if it already is.
    pub(crate) fn start(&self, id: NodeId) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id)
    }

    /// `id` is recorded (or failed).
    pub(crate) fn end(&self, id: NodeId) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}

fn compare(id: NodeId, key: &str, recorded: Option<&String>) -> Admission {
    match recorded {
        Some(r) if r == key => Admission::Admitted,
        Some(r) => Admission::Refused(Refusal::KeyMismatch {
            node_id: id,
            presented: key.to_owned(),
            recorded: r.clone(),
        }),
        None => Admission::Unpinned,
    }
}

/// What this host knows of a peer, gathered by the node internals.
#[derive(Debug)]
pub(crate) enum Facts<'a> {
    /// The peer is this host; its own key pin, if it has an identity.
    Myself(Option<&'a str>),
    /// Another host.
    Other {
        /// Whether it is in the raft membership.
        in_membership: bool,
        /// Its record in the replicated state.
        record: Option<NodeRecord>,
        /// While this host is still joining, the pin the join answer listed
        /// for it (`Some(None)`: listed without a pin; `None`: not listed).
        bootstrap: Option<Option<String>>,
    },
}

/// Whether node `id` presenting a certificate with key pin `key` may talk
/// to this host (see the module docs).
pub(crate) fn decide(id: NodeId, key: &str, facts: Facts<'_>) -> Admission {
    match facts {
        Facts::Myself(Some(own)) => compare(id, key, Some(&own.to_owned())),
        Facts::Myself(None) => Admission::Refused(Refusal::NotMember(id)),
        Facts::Other {
            in_membership,
            record,
            bootstrap,
        } => match record {
            Some(NodeRecord {
                status: NodeStatus::Removed,
                ..
            }) => Admission::Refused(Refusal::Removed(id)),
            Some(rec) if in_membership || rec.status == NodeStatus::Joining => {
                compare(id, key, rec.key.as_ref())
            }
            Some(_) => Admission::Refused(Refusal::NotMember(id)),
            // Still joining: the members the join answer listed.
            None => match bootstrap {
                Some(pin) => compare(id, key, pin.as_ref()),
                None => Admission::Refused(Refusal::NotMember(id)),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: NodeStatus, key: Option<&str>) -> Option<NodeRecord> {
        Some(NodeRecord {
            addr: "10.0.0.2:7444".into(),
            status,
            key: key.map(str::to_owned),
        })
    }

    fn other(in_membership: bool, record: Option<NodeRecord>) -> Facts<'static> {
        Facts::Other {
            in_membership,
            record,
            bootstrap: None,
        }
    }

    #[test]
    fn a_peer_is_admitted_only_with_the_key_recorded_for_it() {
        let member = rec(NodeStatus::Member, Some("k"));
        assert_eq!(
            decide(2, "k", other(true, member.clone())),
            Admission::Admitted
        );
        assert!(matches!(
            decide(2, "x", other(true, member.clone())),
            Admission::Refused(Refusal::KeyMismatch { node_id: 2, .. })
        ));
        // A recorded member that left the raft membership is no member.
        assert_eq!(
            decide(2, "k", other(false, member)),
            Admission::Refused(Refusal::NotMember(2))
        );
        // A joining host is admitted with its key before it is a voter.
        let joining = rec(NodeStatus::Joining, Some("k"));
        assert_eq!(decide(2, "k", other(false, joining)), Admission::Admitted);
        assert_eq!(
            decide(2, "k", other(true, rec(NodeStatus::Removed, Some("k")))),
            Admission::Refused(Refusal::Removed(2))
        );
        assert_eq!(
            decide(2, "k", other(true, rec(NodeStatus::Member, None))),
            Admission::Unpinned
        );
    }

    #[test]
    fn a_host_still_joining_trusts_only_the_members_its_join_answer_listed() {
        let listed = |bootstrap| Facts::Other {
            in_membership: false,
            record: None,
            bootstrap,
        };
        assert_eq!(
            decide(1, "k", listed(Some(Some("k".into())))),
            Admission::Admitted
        );
        assert_eq!(decide(1, "k", listed(Some(None))), Admission::Unpinned);
        assert_eq!(
            decide(1, "k", listed(None)),
            Admission::Refused(Refusal::NotMember(1))
        );
        assert_eq!(
            decide(1, "k", Facts::Myself(Some("k"))),
            Admission::Admitted
        );
        assert_eq!(
            decide(1, "k", Facts::Myself(None)),
            Admission::Refused(Refusal::NotMember(1))
        );
    }
}
