//! What the cluster endpoint serves, without the HTTP: the network crate's
//! server terminates TLS, applies the limits and reads the body, then asks
//! the [`Endpoint`] who may talk ([`Endpoint::admission`]) and what to
//! answer ([`Endpoint::handle`]).
//!
//! Routes, all `POST` with JSON bodies ([`crate::wire`]):
//! - [`PATH_APPEND`], [`PATH_VOTE`], [`PATH_SNAPSHOT`]: raft RPCs, body the
//!   openraft request, answer `{"Ok": response}` or `{"Err": raft error}`;
//! - [`PATH_FORWARD`]: a [`crate::wire::Forward`]ed request for the leader,
//!   answer `{"Ok": ForwardReply}` or `{"Err": ForwardError}`;
//! - [`PATH_PEER`]: a request of the host service ([`crate::peer`]);
//! - [`PATH_JOIN`]: a joining host redeems its token ([`crate::admit`]).

use std::net::IpAddr;
use std::sync::{Arc, Weak};

use serde::Serialize;

use crate::node::Shared;
use crate::trust::{Admission, KeyCheck, Refusal};
use crate::types::NodeId;
use crate::wire::{PATH_APPEND, PATH_FORWARD, PATH_JOIN, PATH_PEER, PATH_SNAPSHOT, PATH_VOTE};

/// The store's side of the cluster endpoint. Holds the store weakly: once
/// the store is shut down, every request is answered [`Reply::Closing`].
#[derive(Clone)]
pub struct Endpoint {
    shared: Weak<Shared>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("open", &self.is_open())
            .finish()
    }
}

/// The answer to one request.
#[derive(Debug)]
pub enum Reply {
    /// `200`, this JSON body.
    Json(Vec<u8>),
    /// `400`: the body is not the route's message.
    BadBody(String),
    /// `404`: no such route.
    NotFound(String),
    /// `503`: the store is closing.
    Closing,
    /// `500`: the answer could not be encoded.
    Failed(String),
}

fn json<T: Serialize>(v: &T) -> Reply {
    match serde_json::to_vec(v) {
        Ok(b) => Reply::Json(b),
        Err(e) => Reply::Failed(e.to_string()),
    }
}

impl Endpoint {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Arc::downgrade(shared),
        }
    }

    /// Whether the store still runs.
    pub fn is_open(&self) -> bool {
        self.shared.strong_count() > 0
    }

    /// Whether node `id` presenting a certificate with key pin `key` may
    /// talk to this host (see [`crate::trust`]). Checked in the TLS
    /// handshake and again on every request.
    pub fn admission(&self, id: NodeId, key: &str) -> Admission {
        match self.shared.upgrade() {
            Some(s) => s.admission(id, key),
            None => Admission::Refused(Refusal::NotMember(id)),
        }
    }

    /// [`Self::admission`] for the TLS layer.
    pub fn key_check(&self) -> KeyCheck {
        let this = self.clone();
        Arc::new(move |id, key| this.admission(id, key))
    }

    /// Whether `ip` is the address of a member or of a host joining: their
    /// connections are not counted against the endpoint's connection caps.
    pub fn is_member_ip(&self, ip: IpAddr) -> bool {
        self.shared.upgrade().is_some_and(|s| s.is_member_ip(ip))
    }

    /// Carry out the request `body` on route `path` of member `peer`
    /// (`None`: a joining host, which the server lets reach [`PATH_JOIN`]
    /// only).
    pub async fn handle(&self, peer: Option<NodeId>, path: &str, body: &[u8]) -> Reply {
        let Some(shared) = self.shared.upgrade() else {
            return Reply::Closing;
        };
        macro_rules! decode {
            () => {
                match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return Reply::BadBody(format!("bad body: {e}")),
                }
            };
        }
        let peer = peer.unwrap_or(0);
        match path {
            PATH_APPEND => json(&shared.raft.append_entries(decode!()).await),
            PATH_VOTE => json(&shared.raft.vote(decode!()).await),
            PATH_SNAPSHOT => json(&shared.raft.install_snapshot(decode!()).await),
            PATH_FORWARD => json(&shared.handle_forward(peer, decode!()).await),
            PATH_JOIN => json(&shared.handle_join(decode!()).await),
            PATH_PEER => json(&shared.handle_peer(peer, decode!()).await),
            _ => Reply::NotFound(format!("no route {path}")),
        }
    }
}
