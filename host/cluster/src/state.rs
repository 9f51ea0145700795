//! The desired-state model: a typed key/value space of objects grouped by
//! kind, each with a revision, plus a monotonic cluster-wide revision.
//!
//! [`DesiredState::apply`] is deterministic: the same sequence of commands
//! gives the same state and the same responses on every host.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{Command, JoinRefused, NodeId, Response, Revision};

/// Reserved kind of the cluster record (key [`KEY_CLUSTER_INFO`]). Kinds
/// starting with `@` are the cluster's own records: the public write API
/// refuses them and [`crate::ClusterStore::kinds`] hides them.
pub const KIND_CLUSTER: &str = "@cluster";
/// The key of the [`ClusterInfo`] record.
pub const KEY_CLUSTER_INFO: &str = "info";
/// Reserved kind of the host records ([`NodeRecord`], key: node id).
pub const KIND_NODE: &str = "@node";
/// Reserved kind of the join tokens ([`TokenRecord`], key: SHA-256 of the
/// token's secret).
pub const KIND_JOIN_TOKEN: &str = "@join-token";
/// The default and largest member limit.
pub const DEFAULT_MAX_MEMBERS: u32 = 7;

/// The cluster's identity and settings (replicated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The cluster id (16 hex digits).
    pub cluster_id: String,
    /// SHA-256 of the CA certificate (lower-case hex).
    pub ca_fingerprint: String,
    /// The largest number of hosts (joining or member).
    pub max_members: u32,
}

/// Where a host is in its life in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Admitted with a token, not yet a voter.
    Joining,
    /// A voter.
    Member,
    /// Removed; its node id is never used again.
    Removed,
}

/// One host of the cluster (replicated; kept after removal so that node
/// ids are never reused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The host's cluster address.
    pub addr: String,
    /// Its status.
    pub status: NodeStatus,
    /// The pin of the host's TLS key ([`crate::ca::key_pin`]): SHA-256 of
    /// its SubjectPublicKeyInfo, recorded when it joined. A peer claiming
    /// this node id is admitted only with a certificate carrying this key.
    /// `None` only for hosts that joined before keys were recorded, until
    /// the leader records the key it sees when it connects to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A join token: only the hash of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// The node that redeemed it.
    pub used_by: Option<NodeId>,
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// The object itself.
    pub value: serde_json::Value,
    /// The cluster revision of the object's last write.
    pub revision: Revision,
}

/// What one applied command changed, so that a persistent store can write
/// just that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing changed (conflict, not found, no-op).
    None,
    /// `kind`/`key` now holds this object.
    Put {
        /// The object kind.
        kind: String,
        /// The object key.
        key: String,
        /// The new object.
        object: Object,
    },
    /// `kind`/`key` was removed.
    Delete {
        /// The object kind.
        kind: String,
        /// The object key.
        key: String,
    },
    /// Several changes of one command.
    Batch(Vec<Change>),
}

/// The whole desired state. Its serialized form is the snapshot format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// The cluster-wide revision: the number of successful mutations so far.
    pub revision: Revision,
    /// Objects by kind, then by key.
    pub objects: BTreeMap<String, BTreeMap<String, Object>>,
}

impl DesiredState {
    /// Look up one object.
    pub fn get(&self, kind: &str, key: &str) -> Option<&Object> {
        self.objects.get(kind)?.get(key)
    }

    /// All objects of one kind, in key order.
    pub fn list(&self, kind: &str) -> impl Iterator<Item = (&String, &Object)> {
        self.objects.get(kind).into_iter().flat_map(|m| m.iter())
    }

    /// The number of objects of every kind.
    pub fn len(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }

    /// Whether there is no object at all.
    pub fn is_empty(&self) -> bool {
        self.objects.values().all(BTreeMap::is_empty)
    }

    fn record<T: serde::de::DeserializeOwned>(&self, kind: &str, key: &str) -> Option<T> {
        serde_json::from_value(self.get(kind, key)?.value.clone()).ok()
    }

    /// The cluster record, once the cluster has been created.
    pub fn cluster_info(&self) -> Option<ClusterInfo> {
        self.record(KIND_CLUSTER, KEY_CLUSTER_INFO)
    }

    /// The record of host `id`.
    pub fn node(&self, id: NodeId) -> Option<NodeRecord> {
        self.record(KIND_NODE, &id.to_string())
    }

    /// Every host record, by node id (removed hosts included).
    pub fn nodes(&self) -> BTreeMap<NodeId, NodeRecord> {
        self.list(KIND_NODE)
            .filter_map(|(k, o)| {
                Some((
                    k.parse().ok()?,
                    serde_json::from_value(o.value.clone()).ok()?,
                ))
            })
            .collect()
    }

    /// The node id `Admit` would assign: one more than any id ever used.
    pub fn next_node_id(&self) -> NodeId {
        self.nodes().keys().max().map_or(1, |m| m + 1)
    }

    /// Check a [`Command::Admit`]: the node id to assign, or why not.
    pub(crate) fn check_admit(
        &self,
        token_hash: &str,
        now_ms: u64,
        node_id: Option<NodeId>,
        key: Option<&String>,
    ) -> Result<(TokenRecord, NodeId), JoinRefused> {
        let token: TokenRecord =
            self.record(KIND_JOIN_TOKEN, token_hash)
                .ok_or_else(|| JoinRefused::InvalidToken {
                    reason: "unknown token (never issued by this cluster)".into(),
                })?;
        if let Some(node_id) = token.used_by {
            return Err(JoinRefused::TokenUsed { node_id });
        }
        if token.expires_at_ms <= now_ms {
            return Err(JoinRefused::TokenExpired {
                expired_s_ago: (now_ms - token.expires_at_ms) / 1000,
            });
        }
        let nodes = self.nodes();
        let members = nodes
            .values()
            .filter(|n| n.status != NodeStatus::Removed)
            .count() as u32;
        let limit = self
            .cluster_info()
            .map_or(DEFAULT_MAX_MEMBERS, |c| c.max_members);
        if members >= limit {
            return Err(JoinRefused::MemberLimit { limit, members });
        }
        let id = node_id.unwrap_or_else(|| self.next_node_id());
        if id == 0 || nodes.contains_key(&id) {
            return Err(JoinRefused::NodeIdTaken { node_id: id });
        }
        if let Some(key) = key {
            if let Some((&owner, _)) = nodes.iter().find(|(_, n)| n.key.as_ref() == Some(key)) {
                return Err(JoinRefused::KeyTaken { node_id: owner });
            }
        }
        Ok((token, id))
    }

    /// Apply the command of a log entry of term `entry_term`:
    /// [`Command::InTerm`] only if it is of that term.
    pub fn apply_entry(&mut self, cmd: &Command, entry_term: u64) -> (Response, Change) {
        match cmd {
            Command::InTerm { term, command } => {
                if *term != entry_term || matches!(**command, Command::InTerm { .. }) {
                    let refused = Response::WrongTerm {
                        term: *term,
                        entry_term,
                    };
                    return (refused, Change::None);
                }
                self.apply(command)
            }
            cmd => self.apply(cmd),
        }
    }

    /// Apply one command. Deterministic; a failed precondition changes
    /// nothing and is reported in the response. [`Command::InTerm`] needs
    /// its entry's term: see [`Self::apply_entry`].
    pub fn apply(&mut self, cmd: &Command) -> (Response, Change) {
        match cmd {
            Command::InTerm { term, .. } => (
                Response::WrongTerm {
                    term: *term,
                    entry_term: 0,
                },
                Change::None,
            ),
            Command::Admit {
                token_hash,
                now_ms,
                node_id,
                addr,
                key,
            } => {
                let (mut token, id) =
                    match self.check_admit(token_hash, *now_ms, *node_id, key.as_ref()) {
                        Ok(t) => t,
                        Err(reason) => return (Response::Refused { reason }, Change::None),
                    };
                token.used_by = Some(id);
                let node = NodeRecord {
                    addr: addr.clone(),
                    status: NodeStatus::Joining,
                    key: key.clone(),
                };
                self.revision += 1;
                let mut changes = Vec::new();
                for (kind, key, value) in [
                    (KIND_JOIN_TOKEN, token_hash.clone(), to_value(&token)),
                    (KIND_NODE, id.to_string(), to_value(&node)),
                ] {
                    let object = Object {
                        value,
                        revision: self.revision,
                    };
                    self.objects
                        .entry(kind.to_owned())
                        .or_default()
                        .insert(key.clone(), object.clone());
                    changes.push(Change::Put {
                        kind: kind.to_owned(),
                        key,
                        object,
                    });
                }
                (Response::Admitted { node_id: id }, Change::Batch(changes))
            }
            Command::Put {
                kind,
                key,
                value,
                expected_revision,
            } => {
                let actual = self.get(kind, key).map(|o| o.revision);
                if let Some(conflict) = check(kind, key, *expected_revision, actual) {
                    return (conflict, Change::None);
                }
                self.revision += 1;
                let object = Object {
                    value: value.clone(),
                    revision: self.revision,
                };
                self.objects
                    .entry(kind.clone())
                    .or_default()
                    .insert(key.clone(), object.clone());
                (
                    Response::Applied {
                        revision: self.revision,
                    },
                    Change::Put {
                        kind: kind.clone(),
                        key: key.clone(),
                        object,
                    },
                )
            }
            Command::Delete {
                kind,
                key,
                expected_revision,
            } => {
                let actual = self.get(kind, key).map(|o| o.revision);
                if let Some(conflict) = check(kind, key, *expected_revision, actual) {
                    return (conflict, Change::None);
                }
                if actual.is_none() {
                    return (
                        Response::NotFound {
                            kind: kind.clone(),
                            key: key.clone(),
                        },
                        Change::None,
                    );
                }
                if let Some(objects) = self.objects.get_mut(kind) {
                    objects.remove(key);
                    if objects.is_empty() {
                        self.objects.remove(kind);
                    }
                }
                self.revision += 1;
                (
                    Response::Applied {
                        revision: self.revision,
                    },
                    Change::Delete {
                        kind: kind.clone(),
                        key: key.clone(),
                    },
                )
            }
        }
    }
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// The compare-and-swap check: `None` if the precondition holds.
fn check(
    kind: &str,
    key: &str,
    expected: Option<Revision>,
    actual: Option<Revision>,
) -> Option<Response> {
    let ok = match expected {
        None => true,
        Some(0) => actual.is_none(),
        Some(r) => actual == Some(r),
    };
    (!ok).then(|| Response::Conflict {
        kind: kind.to_owned(),
        key: key.to_owned(),
        expected,
        actual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(kind: &str, key: &str, v: serde_json::Value, exp: Option<u64>) -> Command {
        Command::Put {
            kind: kind.into(),
            key: key.into(),
            value: v,
            expected_revision: exp,
        }
    }

    fn del(kind: &str, key: &str, exp: Option<u64>) -> Command {
        Command::Delete {
            kind: kind.into(),
            key: key.into(),
            expected_revision: exp,
        }
    }

    #[test]
    fn put_get_list_delete() {
        let mut s = DesiredState::default();
        assert_eq!(
            s.apply(&put("vm", "a", json!(1), None)).0,
            Response::Applied { revision: 1 }
        );
        assert_eq!(
            s.apply(&put("vm", "b", json!(2), Some(0))).0,
            Response::Applied { revision: 2 }
        );
        assert_eq!(
            s.apply(&put("volume", "a", json!(3), None)).0,
            Response::Applied { revision: 3 }
        );
        assert_eq!(s.get("vm", "a").unwrap().revision, 1);
        let keys: Vec<_> = s.list("vm").map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.apply(&del("vm", "a", Some(1))).0,
            Response::Applied { revision: 4 }
        );
        assert!(s.get("vm", "a").is_none());
        assert_eq!(
            s.apply(&del("vm", "a", None)).0,
            Response::NotFound {
                kind: "vm".into(),
                key: "a".into()
            }
        );
        assert_eq!(s.revision, 4);
    }

    #[test]
    fn a_change_decided_in_a_term_is_made_only_in_an_entry_of_that_term() {
        let mut s = DesiredState::default();
        let in_term = |term, cmd| Command::InTerm {
            term,
            command: Box::new(cmd),
        };
        assert_eq!(
            s.apply_entry(&in_term(7, put("host", "a", json!(1), None)), 7)
                .0,
            Response::Applied { revision: 1 }
        );
        let before = s.clone();
        let refused = [
            // A deposed leader's entry, committed under a later term.
            (in_term(7, put("host", "a", json!(2), None)), 8),
            (in_term(7, del("host", "a", None)), 9),
            // Nested, or without its entry's term.
            (in_term(8, in_term(8, put("host", "a", json!(3), None))), 8),
            (in_term(8, put("host", "a", json!(4), None)), 0),
        ];
        for (cmd, entry_term) in refused {
            let (resp, change) = s.apply_entry(&cmd, entry_term);
            assert!(
                matches!(resp, Response::WrongTerm { .. }),
                "{cmd:?} in {entry_term}: {resp:?}"
            );
            assert!(matches!(change, Change::None));
        }
        let (resp, _) = s.apply(&in_term(8, put("host", "a", json!(5), None)));
        assert!(matches!(resp, Response::WrongTerm { .. }), "{resp:?}");
        assert_eq!(s, before);
        // Plain commands are applied whatever the entry's term.
        assert_eq!(
            s.apply_entry(&put("host", "a", json!(6), Some(1)), 9).0,
            Response::Applied { revision: 2 }
        );
    }

    #[test]
    fn conflicts_change_nothing() {
        let mut s = DesiredState::default();
        s.apply(&put("vm", "a", json!(1), None));
        let before = s.clone();
        let cases = [
            put("vm", "a", json!(2), Some(0)),
            put("vm", "a", json!(2), Some(7)),
            put("vm", "new", json!(2), Some(1)),
            del("vm", "a", Some(9)),
            del("vm", "new", Some(1)),
        ];
        for c in &cases {
            let (resp, change) = s.apply(c);
            assert!(matches!(resp, Response::Conflict { .. }), "{resp:?}");
            assert_eq!(change, Change::None);
        }
        assert_eq!(s, before);
    }

    #[test]
    fn apply_is_deterministic() {
        let cmds: Vec<Command> = (0..50)
            .map(|i| match i % 5 {
                0 => del("k", &format!("{}", i / 2), None),
                1 => put("k", &format!("{}", i / 3), json!(i), Some(i as u64 / 2)),
                _ => put("k", &format!("{}", i / 3), json!({ "i": i }), None),
            })
            .collect();
        let run = || {
            let mut s = DesiredState::default();
            let r: Vec<_> = cmds.iter().map(|c| s.apply(c).0).collect();
            (s, r)
        };
        assert_eq!(run(), run());
        let (s, _) = run();
        let bytes = serde_json::to_vec(&s).unwrap();
        assert_eq!(serde_json::from_slice::<DesiredState>(&bytes).unwrap(), s);
    }
}
