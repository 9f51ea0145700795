//! What the cluster endpoint serves, without the HTTP: the network crate's
//! server terminates TLS, applies the limits and reads the body, then asks
//! the [`Endpoint`] who may talk ([`Served::admission`]) and what to
//! answer ([`Served::handle`]).
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

use crate::net::{BoxFuture, Reply, Served};
use crate::node::Shared;
use crate::trust::{Admission, Refusal};
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

fn json<T: Serialize>(v: &T) -> Reply {
    match serde_json::to_vec(v) {
        Ok(b) => Reply::Json(b),
        Err(e) => Reply::Failed(e.to_string()),
    }
}

impl Served for Endpoint {
    fn is_open(&self) -> bool {
        self.shared.strong_count() > 0
    }

    fn admission(&self, id: NodeId, key: &str) -> Admission {
        match self.shared.upgrade() {
            Some(s) => s.admission(id, key),
            None => Admission::Refused(Refusal::NotMember(id)),
        }
    }

    fn is_member_ip(&self, ip: IpAddr) -> bool {
        self.shared.upgrade().is_some_and(|s| s.is_member_ip(ip))
    }

    fn handle(
        &self,
        peer: Option<NodeId>,
        path: String,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Reply> {
        let this = self.clone();
        Box::pin(async move { this.answer(peer, &path, &body).await })
    }
}

impl Endpoint {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Arc::downgrade(shared),
        }
    }

    async fn answer(&self, peer: Option<NodeId>, path: &str, body: &[u8]) -> Reply {
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
