//! Who may talk to this host on the cluster endpoint, and to whom this host
//! talks (invariant I5): a peer is admitted by the key recorded for it in
//! the replicated membership, not by the name in its certificate.
//!
//! - Every host's [`NodeRecord`] carries the pin of its TLS key
//!   ([`crate::ca::key_pin`]: SHA-256 of its SubjectPublicKeyInfo). A
//!   joining host's pin comes from its certificate signing request and is
//!   committed with [`crate::Command::Admit`], before the host has a
//!   certificate; the founder's is written when it creates the cluster.
//! - [`Shared::admission`] decides for a peer `(node id, key pin)`:
//!   - a removed host, or one that is neither in the raft membership nor
//!     admitted and joining, is refused whatever its certificate;
//!   - a host whose certificate carries another key than the recorded one
//!     is refused: a certificate minted with the CA key for a member's name
//!     (by a removed host, or by anyone holding a member's disk) is useless;
//!   - while this host is still joining (its state has not arrived yet), it
//!     trusts the members and pins the leader listed in its join answer.
//! - Both directions are checked: servers check their clients in the TLS
//!   handshake and on every request; clients check the server they dialled
//!   ([`crate::tls::peer_client_config`]).
//! - **Hosts that joined before keys were recorded** have no pin. They are
//!   admitted by name, as before, until the leader records their key: the
//!   first time the leader dials one at its recorded address (raft
//!   heartbeats do so within a heartbeat of the leader's start), it records
//!   the key that host presented. The leader records its own key too.
//!   Only the leader records, and only keys it saw as a client of the
//!   recorded address: a client connecting with a minted certificate cannot
//!   get its key recorded.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::state::{NodeRecord, NodeStatus, KIND_NODE};
use crate::store::Shared;
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

/// Checks a peer's node id and key pin (see [`Shared::admission`]).
pub type KeyCheck = Arc<dyn Fn(NodeId, &str) -> Admission + Send + Sync>;

/// Told the node id and key pin of every server this host dialled whose
/// record has no pin yet.
pub type KeySeen = Arc<dyn Fn(NodeId, String) + Send + Sync>;

/// The hosts whose key the leader is recording right now.
#[derive(Debug, Default)]
pub(crate) struct Recording(Mutex<BTreeSet<NodeId>>);

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

impl Shared {
    /// Whether node `id` presenting a certificate with key pin `key` may
    /// talk to this host (see the module docs).
    pub(crate) fn admission(&self, id: NodeId, key: &str) -> Admission {
        if id == self.node_id {
            return match self.pki().and_then(|p| p.node_key_pin().ok()) {
                Some(own) => compare(id, key, Some(&own)),
                None => Admission::Refused(Refusal::NotMember(id)),
            };
        }
        let in_membership = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some();
        let record = self.sm.read().state.node(id);
        match record {
            Some(NodeRecord {
                status: NodeStatus::Removed,
                ..
            }) => Admission::Refused(Refusal::Removed(id)),
            Some(rec) if in_membership || rec.status == NodeStatus::Joining => {
                compare(id, key, rec.key.as_ref())
            }
            Some(_) => Admission::Refused(Refusal::NotMember(id)),
            None => {
                // Still joining: the members the join answer listed.
                let bootstrap = self.bootstrap.read().unwrap_or_else(|e| e.into_inner());
                match bootstrap.get(&id) {
                    Some(pin) => compare(id, key, pin.as_ref()),
                    None => Admission::Refused(Refusal::NotMember(id)),
                }
            }
        }
    }

    /// Whether `ip` is the address of a member or of a host joining (the
    /// address part of its recorded cluster address; host names are not
    /// resolved). Their connections are not counted against the cluster
    /// endpoint's connection caps.
    pub(crate) fn is_member_ip(&self, ip: IpAddr) -> bool {
        let is = |addr: &str| {
            crate::ca::addr_host(addr)
                .parse::<IpAddr>()
                .is_ok_and(|a| a.to_canonical() == ip)
        };
        let in_membership = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .any(|(_, n)| is(&n.addr));
        in_membership
            || self
                .sm
                .read()
                .state
                .nodes()
                .values()
                .any(|n| n.status != NodeStatus::Removed && is(&n.addr))
    }

    /// A check for the TLS layer that holds this host only weakly.
    pub(crate) fn key_check(self: &Arc<Self>) -> KeyCheck {
        let weak = Arc::downgrade(self);
        Arc::new(move |id, key| match weak.upgrade() {
            Some(s) => s.admission(id, key),
            None => Admission::Refused(Refusal::NotMember(id)),
        })
    }

    /// What the client side calls when a server it dialled has no pin: the
    /// leader records the key (in the background).
    pub(crate) fn key_seen(self: &Arc<Self>) -> KeySeen {
        let weak = Arc::downgrade(self);
        Arc::new(move |id, key| {
            let Some(s) = weak.upgrade() else { return };
            if !s.is_leader() {
                return;
            }
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    s.record_key(id, Some(key)).await;
                    s.record_key(s.node_id, None).await;
                });
            }
        })
    }

    /// On the leader: record `key` as node `id`'s pin if its record has none
    /// (`key` `None`: this host's own key). Logged, never fails the caller.
    pub(crate) async fn record_key(&self, id: NodeId, key: Option<String>) {
        let key = match key {
            Some(k) => k,
            None => match self.pki().map(|p| p.node_key_pin()) {
                Some(Ok(k)) => k,
                _ => return,
            },
        };
        let rec = {
            let a = self.sm.read();
            let rev = a.state.get(KIND_NODE, &id.to_string()).map(|o| o.revision);
            a.state.node(id).zip(rev)
        };
        let Some((rec, rev)) = rec else { return };
        if rec.key.is_some() || rec.status == NodeStatus::Removed || !self.is_leader() {
            return;
        }
        if !self
            .recording
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id)
        {
            return;
        }
        let pinned = NodeRecord {
            key: Some(key.clone()),
            ..rec
        };
        match self
            .write_record(KIND_NODE, &id.to_string(), &pinned, Some(rev))
            .await
        {
            Ok(()) => tracing::info!(
                node_id = id,
                key = %key,
                "recorded the key of a host that joined before keys were recorded"
            ),
            Err(e) => tracing::warn!(node_id = id, error = %e, "recording a host's key failed"),
        }
        self.recording
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}
