//! The cluster side of [`ClusterStore`]: creating a cluster, serving its
//! endpoint, the members, removing one, the member limit.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::endpoint::Endpoint;
use crate::error::StoreError;
use crate::net::{call, ClusterNet, ServeError};
use crate::node::{FORWARD_TIMEOUT, PROMOTE_TIMEOUT};
use crate::state::{
    ClusterInfo, NodeRecord, NodeStatus, DEFAULT_MAX_MEMBERS, KEY_CLUSTER_INFO, KIND_CLUSTER,
    KIND_NODE,
};
use crate::store::{ClusterSettings, ClusterStore, Member};
use crate::types::NodeId;
use crate::wire::{Forward, ForwardError, ForwardReply, PATH_FORWARD};
use nasvisor_limits::ServerLimits;

impl ClusterStore {
    /// `nasvisor cluster create`: open (or create) the store in `data_dir`
    /// like [`Self::open`], then make it a new cluster with its own CA
    /// ([`Self::create_cluster`]). The desired state already there is kept.
    pub async fn create(
        data_dir: impl AsRef<Path>,
        node_id: NodeId,
        addr: impl Into<String>,
        settings: ClusterSettings,
        net: Arc<dyn ClusterNet>,
    ) -> Result<Self, StoreError> {
        let store = Self::open_with_network(data_dir, node_id, addr, net).await?;
        match store.create_cluster(settings).await {
            Ok(_) => Ok(store),
            Err(e) => {
                if let Err(close) = store.shutdown().await {
                    tracing::warn!(error = %close, "closing the store of a failed create failed");
                }
                Err(e)
            }
        }
    }

    /// Make this single-host store a new cluster: a cluster id, the
    /// cluster's CA (ECDSA P-256) and this host's certificate under
    /// `<data_dir>/pki/`, and the replicated cluster record. The host's
    /// address is its address in the membership (the `addr` it was opened
    /// with).
    ///
    /// Preconditions: this host is not part of a cluster yet, and is the
    /// sole voter and leader.
    pub async fn create_cluster(
        &self,
        settings: ClusterSettings,
    ) -> Result<ClusterInfo, StoreError> {
        let s = &self.shared;
        if let Some(p) = s.identity() {
            return Err(StoreError::AlreadyClustered {
                cluster_id: p.identity.cluster_id.clone(),
            });
        }
        let net = s.net("create a cluster")?;
        check_max_members(settings.max_members)?;
        let (voters, addr) = {
            let m = s.raft.metrics().borrow().membership_config.clone();
            let voters: Vec<NodeId> = m.membership().voter_ids().collect();
            let addr = m.membership().get_node(&s.node_id).map(|n| n.addr.clone());
            (voters, addr)
        };
        let Some(addr) = addr.filter(|_| voters == [s.node_id] && s.is_leader()) else {
            return Err(StoreError::Invalid {
                field: "cluster",
                reason: "only a single host that leads itself can create a cluster".into(),
            });
        };
        let pki = net.check_identity(net.create_identity(s.node_id, &addr)?)?;
        let info = ClusterInfo {
            cluster_id: pki.identity.cluster_id.clone(),
            ca_fingerprint: pki.ca_fingerprint.clone(),
            max_members: settings.max_members,
        };
        // The records first, the files last: a crash in between leaves a
        // host without a cluster identity, which can run create again.
        s.write_record(KIND_CLUSTER, KEY_CLUSTER_INFO, &info, None)
            .await?;
        let me = NodeRecord {
            addr,
            status: NodeStatus::Member,
            key: Some(pki.node_key_pin.clone()),
        };
        s.write_record(KIND_NODE, &s.node_id.to_string(), &me, None)
            .await?;
        pki.identity.save(&s.dir)?;
        s.install_identity(pki)?;
        tracing::info!(cluster_id = %info.cluster_id, ca = %info.ca_fingerprint, "created cluster");
        Ok(info)
    }

    /// The cluster record (id, CA fingerprint, member limit), once this
    /// host has created or joined a cluster.
    pub fn cluster_info(&self) -> Option<ClusterInfo> {
        self.shared.sm.read().state.cluster_info()
    }

    /// The CA certificate (PEM), once this host has created or joined a
    /// cluster.
    pub fn ca_cert_pem(&self) -> Option<String> {
        self.shared
            .identity()
            .map(|p| p.identity.ca_cert_pem.clone())
    }

    /// This host's TLS identity in the cluster, PEM: the CA certificate, its
    /// node certificate (name [`crate::identity::node_name`]) and its key — for
    /// other channels between hosts (QEMU's migration and NBD streams).
    pub fn node_tls_pem(&self) -> Option<(String, String, String)> {
        self.shared.identity().map(|p| {
            (
                p.identity.ca_cert_pem.clone(),
                p.identity.node_cert_pem.clone(),
                p.identity.node_key_pem.clone(),
            )
        })
    }

    /// Every host ever admitted (removed ones included, their ids are never
    /// reused), with its raft role.
    pub fn members(&self) -> Vec<Member> {
        let voters: BTreeSet<NodeId> = self
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        self.shared
            .sm
            .read()
            .state
            .nodes()
            .into_iter()
            .map(|(node_id, r)| Member {
                node_id,
                addr: r.addr,
                status: r.status,
                voter: voters.contains(&node_id),
                key: r.key,
            })
            .collect()
    }

    /// Change the member limit (1 to 7, not below the current number of
    /// hosts). Any member may call it (the write goes to the leader).
    pub async fn set_max_members(&self, max_members: u32) -> Result<(), StoreError> {
        check_max_members(max_members)?;
        let (mut info, rev, members) = {
            let a = self.shared.sm.read();
            let rev = a
                .state
                .get(KIND_CLUSTER, KEY_CLUSTER_INFO)
                .map(|o| o.revision);
            let members = a
                .state
                .nodes()
                .values()
                .filter(|n| n.status != NodeStatus::Removed)
                .count() as u32;
            (a.state.cluster_info(), rev, members)
        };
        let Some(info) = info.as_mut() else {
            return Err(StoreError::NotClustered);
        };
        if max_members < members {
            return Err(StoreError::Invalid {
                field: "max_members",
                reason: format!("{max_members} is below the current {members} hosts"),
            });
        }
        info.max_members = max_members;
        self.shared
            .write_record(KIND_CLUSTER, KEY_CLUSTER_INFO, info, rev)
            .await
    }

    /// Serve the cluster endpoint (raft RPCs, forwarded writes, joins) on
    /// `listen` over mutual TLS, until [`Self::shutdown`]. Returns the bound
    /// address (`listen` may have port 0).
    ///
    /// Preconditions: this host has created or joined a cluster; the
    /// endpoint is not served yet.
    pub async fn serve(&self, listen: SocketAddr) -> Result<SocketAddr, StoreError> {
        let pki = self.shared.identity().ok_or(StoreError::NotClustered)?;
        let net = self.shared.net("serve the cluster endpoint")?;
        if let Some(addr) = self.listen_addr() {
            return Err(StoreError::Invalid {
                field: "listen",
                reason: format!("the cluster endpoint is already served on {addr}"),
            });
        }
        let bind = |source| StoreError::Bind {
            addr: listen.to_string(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(bind)?;
        let endpoint = Arc::new(Endpoint::new(&self.shared));
        let handle = match net.serve(listener, &pki, endpoint, self.server_limits()) {
            Ok(h) => h,
            Err(ServeError::Tls(e)) => return Err(e.into()),
            Err(ServeError::Io(e)) => return Err(bind(e)),
        };
        let addr = handle.addr();
        tracing::info!(node_id = self.node_id(), %addr, "serving the cluster endpoint");
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        // A cluster created before keys were recorded: the leader records
        // its own key (the others' when it dials them).
        let shared = self.shared.clone();
        tokio::spawn(async move { shared.record_key(shared.node_id, None).await });
        Ok(addr)
    }

    /// Set the limits of the cluster endpoint (connection caps, handshake,
    /// header, idle and body timeouts; [`ServerLimits::default`] until
    /// then; members' addresses are not counted against the connection
    /// caps). They apply when it is next served.
    pub fn set_server_limits(&self, limits: ServerLimits) -> Result<(), StoreError> {
        limits.check().map_err(|e| StoreError::Invalid {
            field: e.field,
            reason: e.reason,
        })?;
        *self
            .shared
            .limits
            .write()
            .unwrap_or_else(|e| e.into_inner()) = limits;
        Ok(())
    }

    /// The limits of the cluster endpoint.
    pub fn server_limits(&self) -> ServerLimits {
        self.shared
            .limits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The address the cluster endpoint is served on, if it is.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|h| h.addr())
    }

    /// `nasvisor cluster remove`: remove host `node_id` from the cluster.
    /// It stops being a voter, its record is marked removed, and every
    /// member refuses its connections from then on (its node id is never
    /// reused). Any member may call it (it is carried out by the leader).
    ///
    /// Preconditions: `node_id` is another host, currently a member or
    /// joining.
    pub async fn remove_member(&self, node_id: NodeId) -> Result<(), StoreError> {
        if node_id == self.node_id() {
            return Err(StoreError::Invalid {
                field: "node_id",
                reason: format!("node {node_id} is this host; remove it from another host"),
            });
        }
        self.shared
            .leader_call(Forward::Remove { node_id }, PROMOTE_TIMEOUT)
            .await
            .map(drop)
    }

    /// Check that node `node_id` at `addr` accepts this host over mutual
    /// TLS (a removed host is refused).
    pub async fn ping(&self, node_id: NodeId, addr: &str) -> Result<(), StoreError> {
        let t = self.shared.client().ok_or(StoreError::NotClustered)?;
        let r: Result<ForwardReply, ForwardError> = call(
            &*t,
            node_id,
            addr,
            PATH_FORWARD,
            &Forward::Ping,
            FORWARD_TIMEOUT,
        )
        .await?;
        r.map(drop).map_err(|e| StoreError::Remote {
            node_id,
            message: e.to_string(),
        })
    }
}

fn check_max_members(n: u32) -> Result<(), StoreError> {
    if !(1..=DEFAULT_MAX_MEMBERS).contains(&n) {
        return Err(StoreError::Invalid {
            field: "max_members",
            reason: format!("must be 1 to {DEFAULT_MAX_MEMBERS}, got {n}"),
        });
    }
    Ok(())
}
