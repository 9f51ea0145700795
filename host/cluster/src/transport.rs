//! The cluster transport: HTTP/1.1 over mutual TLS between hosts (hyper 1
//! and tokio-rustls), JSON bodies.
//!
//! One listener per host serves two TLS configurations, chosen by the SNI
//! name of the client hello (see [`crate::tls`]):
//! - `node-<id>.nasvisor.cluster` (peers): mutual TLS with the cluster CA;
//!   the client's node id must be admitted (member of the raft membership,
//!   a host being added, or, on a host that is still joining, a member of
//!   the cluster it joins). Routes, all `POST`:
//!   - [`PATH_APPEND`], [`PATH_VOTE`], [`PATH_SNAPSHOT`]: raft RPCs, body the
//!     openraft request, answer `{"Ok": response}` or `{"Err": raft error}`;
//!   - [`PATH_FORWARD`]: a [`Forward`]ed request (write, linearizable read,
//!     join completion, member removal, ping) for the leader, answer
//!     `{"Ok": ForwardReply}` or `{"Err": ForwardError}`.
//!
//!   Admission is checked again on every request, so a long-lived
//!   connection of a host removed meanwhile gets `403`.
//!   - [`PATH_PEER`]: a request of the host service ([`crate::peer`]).
//! - `join.nasvisor.cluster` (joining hosts): no client certificate; only
//!   [`PATH_JOIN`] is served (see [`crate::join`]).
//!
//! Clients keep idle connections to each peer and reuse them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use nasvisor_limits::{ConnectionGate, ConnectionPermit, ReadError, ServerLimits};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};

use crate::ca::{node_name, JOIN_NAME};
use crate::store::Shared;
use crate::trust::Admission;
use crate::types::{Command, JoinRefused, NodeId, Response as RaftResponse, Revision};

/// Raft append-entries (and heartbeats).
pub const PATH_APPEND: &str = "/v1/raft/append";
/// Raft vote.
pub const PATH_VOTE: &str = "/v1/raft/vote";
/// Raft install-snapshot (one chunk per request).
pub const PATH_SNAPSHOT: &str = "/v1/raft/snapshot";
/// Requests a member forwards to the leader.
pub const PATH_FORWARD: &str = "/v1/cluster/forward";
/// Requests of the host service of another member ([`crate::peer`]).
pub const PATH_PEER: &str = "/v1/peer";
/// A joining host redeems its token (join SNI only).
pub const PATH_JOIN: &str = "/v1/cluster/join";

/// The largest request body between members (snapshot chunks are 3 MiB of
/// JSON numbers at most, about 12 MiB).
const MAX_PEER_BODY: usize = 64 << 20;
/// The largest join request body.
const MAX_JOIN_BODY: usize = 64 << 10;
/// Idle connections kept per peer.
const MAX_IDLE_PER_PEER: usize = 4;

/// A request a member sends to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forward {
    /// Commit this command.
    Write(Command),
    /// A linearizable read of one object.
    Read {
        /// The object kind.
        kind: String,
        /// The object key.
        key: String,
    },
    /// The sender (identified by its certificate) was admitted and now
    /// serves: add it as a learner and promote it to voter.
    JoinComplete,
    /// Remove a host from the cluster.
    Remove {
        /// The host to remove.
        node_id: NodeId,
    },
    /// Connectivity check; answered by any member, leader or not.
    Ping,
}

/// The leader's answer to a [`Forward`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardReply {
    /// The command was committed and applied with this response.
    Written(RaftResponse),
    /// The object and its revision, if it exists.
    Read(Option<(serde_json::Value, Revision)>),
    /// Done.
    Done,
}

/// Why a [`Forward`] failed.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ForwardError {
    /// The receiver is not the leader (any more).
    #[error("node is not the leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        /// The leader, if known.
        leader_id: Option<NodeId>,
        /// Its address, if known.
        leader_addr: Option<String>,
    },
    /// The leader failed to carry it out.
    #[error("{0}")]
    Failed(String),
}

/// What a joining host sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The cluster id from the token.
    pub cluster_id: String,
    /// The token's secret (the server stores only its hash).
    pub secret: String,
    /// A certificate signing request for the host's own key (PEM).
    pub csr_pem: String,
    /// The host's cluster address (`host:port`).
    pub addr: String,
    /// The node id asked for; `None`: assigned by the cluster.
    pub node_id: Option<NodeId>,
}

/// What a joining host receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The cluster id.
    pub cluster_id: String,
    /// The node id assigned.
    pub node_id: NodeId,
    /// The host's certificate (PEM).
    pub node_cert_pem: String,
    /// The CA certificate (PEM).
    pub ca_cert_pem: String,
    /// The CA key (PEM): every voter keeps it, to sign later joins.
    pub ca_key_pem: Option<String>,
    /// The current members and their addresses.
    pub members: BTreeMap<NodeId, String>,
    /// The key pins recorded for the members (absent for members that
    /// joined before keys were recorded, and from older leaders).
    #[serde(default)]
    pub member_keys: BTreeMap<NodeId, String>,
    /// The leader that admitted the host.
    pub leader_id: NodeId,
}

/// Errors of one call to a peer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be made; nothing was sent.
    #[error("cannot connect to node {target} at {addr}: {reason}")]
    Connect {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The call did not complete in time (it may have been carried out).
    #[error("call to node {target} at {addr} timed out after {timeout:?}")]
    Timeout {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The connection failed during the call (it may have been carried
    /// out). A TLS refusal of this host's certificate shows up here too
    /// (TLS 1.3 reports it after the handshake).
    #[error("call to node {target} at {addr} failed: {reason}")]
    Io {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The peer refused this host (`403`: not a member).
    #[error("node {target} at {addr} refused this host: {reason}")]
    Refused {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// What it said.
        reason: String,
    },
    /// The peer answered with an HTTP error or an unreadable body.
    #[error("bad answer from node {target} at {addr}: {reason}")]
    BadAnswer {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
}

impl CallError {
    /// Whether the request certainly was not carried out.
    pub fn not_sent(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Refused { .. })
    }

    /// Whether trying again (maybe elsewhere) may help: nothing was sent
    /// because no connection could be made. A refusal is final.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}

/// An error and its causes, `a: b: c`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.ends_with(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}

type Sender = SendRequest<Full<Bytes>>;

/// The client side of the transport: this host's TLS client identity and
/// its idle connections.
pub struct PeerTransport {
    self_id: NodeId,
    config: Arc<ClientConfig>,
    idle: Mutex<HashMap<NodeId, Vec<(String, Sender)>>>,
}

impl std::fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTransport")
            .field("self_id", &self.self_id)
            .finish_non_exhaustive()
    }
}

impl PeerTransport {
    /// A transport for node `self_id` with this client configuration
    /// ([`crate::tls::peer_client_config`]).
    pub fn new(self_id: NodeId, config: Arc<ClientConfig>) -> Self {
        Self {
            self_id,
            config,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// This host's node id.
    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    /// `POST` `req` as JSON to `path` on node `target` at `addr` and decode
    /// the JSON answer, within `timeout`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: NodeId,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let body = serde_json::to_vec(req).map_err(|e| CallError::BadAnswer {
            target,
            addr: addr.to_owned(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        let bytes = tokio::time::timeout(timeout, self.post(target, addr, path, body.into()))
            .await
            .map_err(|_| CallError::Timeout {
                target,
                addr: addr.to_owned(),
                timeout,
            })??;
        serde_json::from_slice(&bytes).map_err(|e| CallError::BadAnswer {
            target,
            addr: addr.to_owned(),
            reason: format!("cannot decode the answer: {e}"),
        })
    }

    fn checkout(&self, target: NodeId, addr: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&target)?;
        while let Some((a, s)) = list.pop() {
            if a == addr && !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn checkin(&self, target: NodeId, addr: &str, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(target).or_default();
        if list.len() < MAX_IDLE_PER_PEER {
            list.push((addr.to_owned(), sender));
        }
    }

    async fn connect(&self, target: NodeId, addr: &str) -> Result<Sender, CallError> {
        let err = |reason: String| CallError::Connect {
            target,
            addr: addr.to_owned(),
            reason,
        };
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(node_name(target)).map_err(|e| err(e.to_string()))?;
        let tls = TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| err(format!("TLS: {}", chain(&e))))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| err(chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(target, error = %e, "cluster connection closed");
            }
        });
        Ok(sender)
    }

    async fn post(
        &self,
        target: NodeId,
        addr: &str,
        path: &str,
        body: Bytes,
    ) -> Result<Bytes, CallError> {
        loop {
            let (mut sender, reused) = match self.checkout(target, addr) {
                Some(s) => (s, true),
                None => (self.connect(target, addr).await?, false),
            };
            let req = Request::post(path)
                .header(header::HOST, node_name(target))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
                .map_err(|e| CallError::BadAnswer {
                    target,
                    addr: addr.to_owned(),
                    reason: e.to_string(),
                })?;
            let resp = match sender.try_send_request(req).await {
                Ok(r) => r,
                Err(mut e) => {
                    let unsent = e.take_message().is_some();
                    if unsent && reused {
                        continue; // a stale idle connection: try another
                    }
                    let reason = chain(&e.into_error());
                    return Err(if unsent {
                        CallError::Connect {
                            target,
                            addr: addr.to_owned(),
                            reason,
                        }
                    } else {
                        CallError::Io {
                            target,
                            addr: addr.to_owned(),
                            reason,
                        }
                    });
                }
            };
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Io {
                    target,
                    addr: addr.to_owned(),
                    reason: chain(&e),
                })?
                .to_bytes();
            self.checkin(target, addr, sender);
            if status == StatusCode::FORBIDDEN {
                return Err(CallError::Refused {
                    target,
                    addr: addr.to_owned(),
                    reason: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
            if !status.is_success() {
                return Err(CallError::BadAnswer {
                    target,
                    addr: addr.to_owned(),
                    reason: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
                });
            }
            return Ok(bytes);
        }
    }
}

/// One join call from a host that has no certificate yet: connect to
/// `addr` with `config` ([`crate::tls::join_client_config`]), send `req`.
pub async fn join_call(
    config: Arc<ClientConfig>,
    addr: &str,
    req: &JoinRequest,
    timeout: Duration,
) -> Result<Result<JoinResponse, JoinRefused>, CallError> {
    let err = |reason: String| CallError::Connect {
        target: 0,
        addr: addr.to_owned(),
        reason,
    };
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name = crate::tls::join_server_name();
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| err(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| err(e.to_string()))?;
        tokio::spawn(conn);
        let body = serde_json::to_vec(req).map_err(|e| err(e.to_string()))?;
        let req = Request::post(PATH_JOIN)
            .header(header::HOST, JOIN_NAME)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| err(e.to_string()))?;
        let io = |e: hyper::Error| CallError::Io {
            target: 0,
            addr: addr.to_owned(),
            reason: chain(&e),
        };
        let resp = sender.send_request(req).await.map_err(io)?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(io)?.to_bytes();
        if !status.is_success() {
            return Err(CallError::BadAnswer {
                target: 0,
                addr: addr.to_owned(),
                reason: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::BadAnswer {
            target: 0,
            addr: addr.to_owned(),
            reason: format!("cannot decode the answer: {e}"),
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| CallError::Timeout {
            target: 0,
            addr: addr.to_owned(),
            timeout,
        })?
}

/// A running listener; aborting it closes every connection.
#[derive(Debug)]
pub(crate) struct ServerHandle {
    pub(crate) addr: SocketAddr,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// Serve the cluster endpoint on `listener` until the task is aborted,
/// within `limits` (see [`nasvisor_limits`]): connections beyond the caps
/// are closed at once, except those from `gate`'s exempt (member)
/// addresses.
pub(crate) fn spawn_server(
    listener: TcpListener,
    shared: Weak<Shared>,
    peer_config: Arc<ServerConfig>,
    join_config: Arc<ServerConfig>,
    limits: ServerLimits,
    gate: Arc<ConnectionGate>,
) -> Result<ServerHandle, std::io::Error> {
    let addr = listener.local_addr()?;
    let limits = Arc::new(limits);
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let Ok(permit) = gate.admit(peer.ip()) else {
                            continue; // closed at once (logged by the gate)
                        };
                        let _ = tcp.set_nodelay(true);
                        conns.spawn(serve_conn(
                            tcp,
                            peer,
                            shared.clone(),
                            peer_config.clone(),
                            join_config.clone(),
                            limits.clone(),
                            permit,
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok(ServerHandle { addr, task })
}

async fn serve_conn(
    tcp: TcpStream,
    remote: SocketAddr,
    shared: Weak<Shared>,
    peer_config: Arc<ServerConfig>,
    join_config: Arc<ServerConfig>,
    limits: Arc<ServerLimits>,
    _permit: ConnectionPermit,
) {
    let tls = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let join = start.client_hello().server_name() == Some(JOIN_NAME);
        let config = if join { join_config } else { peer_config };
        let stream = start.into_stream(config).await?;
        Ok::<_, std::io::Error>((join, stream))
    };
    let (join, stream) = match nasvisor_limits::handshake(&limits, tls).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(%remote, error = %e, "cluster endpoint: TLS handshake refused");
            return;
        }
    };
    let peer = crate::tls::peer_of(stream.get_ref().1);
    if !join && peer.is_none() {
        // Unreachable with the member verifier; refuse rather than serve.
        return;
    }
    let body_timeout = limits.body_timeout;
    let svc = hyper::service::service_fn(move |req| {
        let (shared, peer) = (shared.clone(), peer.clone());
        async move {
            Ok::<_, std::convert::Infallible>(handle(shared, peer, join, body_timeout, req).await)
        }
    });
    let served =
        nasvisor_limits::serve_http1(stream, svc, &limits, std::future::pending::<()>()).await;
    match served {
        Err(e) if e.is_header_timeout() => {
            tracing::info!(%remote, error = %e, "cluster endpoint: request head too slow; closed")
        }
        Err(e) => tracing::debug!(%remote, error = %e, "cluster endpoint: connection closed"),
        Ok(()) => {}
    }
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json<T: Serialize>(v: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(v) {
        Ok(b) => {
            let mut r = Response::new(Full::new(Bytes::from(b)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn handle(
    shared: Weak<Shared>,
    peer: Option<(NodeId, String)>,
    join: bool,
    body_timeout: Duration,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let Some(shared) = shared.upgrade() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster store is closing",
        );
    };
    let path = req.uri().path().to_owned();
    if join {
        if path != PATH_JOIN {
            return plain(StatusCode::NOT_FOUND, "only the join route is served here");
        }
    } else {
        let (id, key) = peer.clone().unwrap_or_default();
        if let Admission::Refused(why) = shared.admission(id, &key) {
            tracing::warn!(peer = id, path, reason = %why, "refused a request of a cluster peer");
            return plain(StatusCode::FORBIDDEN, why.to_string());
        }
    }
    let peer = peer.map(|(id, _)| id);
    if req.method() != http::Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only POST is served");
    }
    // A joining host is not authenticated yet: its body must arrive whole
    // within the timeout, not a byte at a time.
    let limit = if join { MAX_JOIN_BODY } else { MAX_PEER_BODY };
    let body = match nasvisor_limits::read_body(req.into_body(), limit, body_timeout, join).await {
        Ok(b) => b,
        Err(e) => {
            let status = match e {
                ReadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ReadError::Stalled(_) | ReadError::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
                ReadError::Failed(_) => StatusCode::BAD_REQUEST,
            };
            tracing::info!(path, error = %e, "cluster endpoint: request body refused");
            return plain(status, format!("cannot read the body: {e}"));
        }
    };
    macro_rules! decode {
        () => {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return plain(StatusCode::BAD_REQUEST, format!("bad body: {e}")),
            }
        };
    }
    match path.as_str() {
        PATH_APPEND => json(&shared.raft.append_entries(decode!()).await),
        PATH_VOTE => json(&shared.raft.vote(decode!()).await),
        PATH_SNAPSHOT => json(&shared.raft.install_snapshot(decode!()).await),
        PATH_FORWARD => json(&shared.handle_forward(peer.unwrap_or(0), decode!()).await),
        PATH_JOIN => json(&shared.handle_join(decode!()).await),
        PATH_PEER => json(&shared.handle_peer(peer.unwrap_or(0), decode!()).await),
        _ => plain(StatusCode::NOT_FOUND, format!("no route {path}")),
    }
}
